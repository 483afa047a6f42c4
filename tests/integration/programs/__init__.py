"""Programs the integration tests run in real subprocesses (and import for recovery)."""
