"""Helpers for testing workflows: a clock you move by hand, and a simulator with coverage.

``simulate(definition, cases)`` runs a workflow against scripted actions on an in-memory
database, moving a ``ManualClock`` instead of sleeping, and reports each case's outcome and the
coverage of the graph (steps, edges, choice branches, trigger rules); see
``statemachine.simulation``.
"""

from __future__ import annotations

from statemachine.simulation.cases import SimulationError, load_cases
from statemachine.simulation.clock import ManualClock
from statemachine.simulation.report import SimulationReport
from statemachine.simulation.runner import simulate

__all__ = ["ManualClock", "SimulationError", "SimulationReport", "load_cases", "simulate"]
