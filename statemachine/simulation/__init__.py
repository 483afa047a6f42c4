"""Simulation with coverage: run a workflow's cases on scripted actions, see which parts of its
graph they reach.

``cases`` reads and checks cases files, ``mocks`` answers action calls from them, ``clock`` is
the ``ManualClock`` time moves on, ``coverage`` reads a run's history against the graph,
``report`` holds the results and ``runner`` (``simulate``) ties them together. The public names
are exported from ``statemachine.testing``.
"""
