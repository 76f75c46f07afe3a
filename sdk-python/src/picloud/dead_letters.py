"""The app's dead letters: events that exhausted their retries.

A dead-letter trigger (`picloud-host trigger add-dead-letter APP --script S
--source kv --as P`) runs a script for each new dead letter; `event.dead_letter()`
gives its fields. Settle it with `resolve`:

    from picloud import dead_letters, Resolution
    dead_letters.resolve(dl.dead_letter_id, Resolution.HANDLED_BY_SCRIPT)

**The recursion stop:** a dead-letter handler that fails on every attempt
does not make another dead letter; the host resolves the one it was handling
`handler_failed`. To give up at once, resolve it `HANDLER_FAILED` yourself.
Resolving one that is already resolved raises `Conflict` (delivery is
at-least-once: an earlier attempt may have got that far).
"""

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, List, Optional

from . import _host


class Resolution(Enum):
    """How a dead letter was settled."""

    #: The original event was enqueued again for its trigger.
    REPLAYED = "replayed"
    #: Nothing more will be done about it.
    IGNORED = "ignored"
    #: A script dealt with it.
    HANDLED_BY_SCRIPT = "handled_by_script"
    #: The dead-letter handler gave up (the recursion stop).
    HANDLER_FAILED = "handler_failed"


@dataclass
class DeadLetter:
    """One dead letter, as stored. Times are milliseconds since the Unix epoch."""

    id: str
    original_event_id: str
    source: str
    op: str
    trigger_id: Optional[str]
    script_id: Optional[str]
    #: The original event's payload, parsed from JSON.
    payload: Any
    attempt_count: int
    first_attempt_at: int
    last_attempt_at: int
    last_error: str
    created_at: int
    resolved_at: Optional[int]
    resolution: Optional[Resolution]


def _from_raw(raw) -> DeadLetter:
    resolution = None if raw.resolution is None else Resolution[raw.resolution.name]
    return DeadLetter(
        id=raw.id,
        original_event_id=raw.original_event_id,
        source=raw.source,
        op=raw.op,
        trigger_id=raw.trigger_id,
        script_id=raw.script_id,
        payload=json.loads(raw.payload),
        attempt_count=raw.attempt_count,
        first_attempt_at=raw.first_attempt_at,
        last_attempt_at=raw.last_attempt_at,
        last_error=raw.last_error,
        created_at=raw.created_at,
        resolved_at=raw.resolved_at,
        resolution=resolution,
    )


def get(id: str) -> Optional[DeadLetter]:
    """A dead letter of the script's app, or None. Needs read access."""
    raw = _host.call(_host.dead_letters.get, id)
    return None if raw is None else _from_raw(raw)


def list_unresolved(limit: int = 100) -> List[DeadLetter]:
    """The oldest unresolved dead letters of the app, at most `limit`."""
    return [_from_raw(r) for r in _host.call(_host.dead_letters.list_unresolved, limit)]


def resolve(id: str, resolution: Resolution) -> None:
    """Settle a dead letter. `REPLAYED` enqueues the original event again.
    Needs dead-letter management (app admin); raises `Conflict` if it is
    already resolved."""
    # The generated enum has the same member names.
    raw = _host.dead_letters.Resolution[resolution.name]
    _host.call(_host.dead_letters.resolve, id, raw)
