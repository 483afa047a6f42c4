"""The engine: the ``Engine`` facade and the parts it hands its ``Services`` to.

Module map: ``facade`` (the ``Engine`` users hold), ``settings``, ``services`` (what the parts
share), ``inputs`` (starting, events, metadata), ``queries`` (reading back), ``control``
(pause, resume, cancel, retry, replay), ``runner`` with its mixins ``calls``, ``children`` and
``leases`` (one instance's run), ``drive`` (claim and run instances), ``worker`` (the worker
loop), ``loop`` (the event-loop thread), ``executor`` (handler calls), ``registry``,
``outage``, ``reports``.
"""

from statemachine.engine.facade import Engine
from statemachine.engine.settings import EngineSettings

__all__ = ["Engine", "EngineSettings"]
