"""Lesson events: what happened, to whom, when (pure; no I/O).

The mixer emits these on one :class:`EventBus`; the recorder publisher, analytics,
dashboard and webhooks subscribe. Callbacks run synchronously on the event loop and must
not block: hand slow work to a task or a queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

logger = logging.getLogger(__name__)

EventName = Literal[
    "lesson_started",
    "lesson_ended",
    "classroom_connected",
    "classroom_disconnected",
    "classroom_joined",
    "classroom_left",
    "hand_raised",
    "comment_added",
    "recording_ready",
    "report_ready",
    "alert",
]


@dataclass(frozen=True)
class Event:
    name: EventName
    ts_ms: int
    """Epoch ms when it happened."""
    lesson_id: str | None = None
    classroom_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventBus:
    """Synchronous fan-out of :class:`Event` to subscribers; a failing one is logged."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Event], None]] = []
        self.history: list[Event] = []
        """Recent events (bounded), for status pages and tests."""
        self.max_history = 1000

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.remove(callback)

    def emit(self, event: Event) -> None:
        self.history.append(event)
        if len(self.history) > self.max_history:
            del self.history[: len(self.history) - self.max_history]
        for cb in list(self._subscribers):
            try:
                cb(event)
            except Exception:
                logger.exception("event subscriber failed on %s", event.name)
