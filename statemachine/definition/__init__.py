"""Workflow definitions: models, the YAML reader and loader, validation."""
