"""The event a handler receives, and typed views of its payload.

Rule: the payload shapes here are the ones `wit/trigger.wit` documents on
`event.payload`; a view is None when the event is of another source, never a
guess.
"""

import json
from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class KvEvent:
    """The change behind a `kv` event."""

    #: "set" or "delete".
    op: str
    collection: str
    key: str
    #: The new value (None on delete).
    value: Any
    #: The key's version after the change.
    version: int

    @staticmethod
    def _from(source: str, op: str, payload: Any) -> Optional["KvEvent"]:
        if source != "kv" or op not in ("set", "delete") or not isinstance(payload, dict):
            return None
        if not isinstance(payload.get("collection"), str) or not isinstance(payload.get("key"), str):
            return None
        return KvEvent(
            op=op,
            collection=payload["collection"],
            key=payload["key"],
            value=payload.get("value"),
            version=payload.get("version") or 0,
        )


@dataclass
class DeadLetterEvent:
    """The dead letter behind a `dead_letter` event.

    The recursion stop: if the handler fails on every attempt, the host
    resolves this dead letter `handler_failed` and makes no new one.
    """

    #: The id to pass to `dead_letters.resolve`.
    dead_letter_id: str
    #: The original event's source and op.
    source: str
    op: str
    trigger_id: Optional[str]
    script_id: Optional[str]
    attempt_count: int
    #: The last attempt's error, e.g. `payment declined: ...`.
    last_error: str
    #: The original event's payload, parsed.
    payload: Any

    def kv(self) -> Optional[KvEvent]:
        """The KV change whose handling failed, when the original event was a
        `kv` event."""
        return KvEvent._from(self.source, self.op, self.payload)


class Event:
    """One event. The same `id` across retries: use it to stay idempotent
    under at-least-once delivery."""

    __slots__ = ("_raw", "_json")

    def __init__(self, raw) -> None:
        self._raw = raw
        self._json = None

    @property
    def id(self) -> str:
        return self._raw.id

    @property
    def app_id(self) -> str:
        return self._raw.app_id

    @property
    def source(self) -> str:
        """`kv`, `http`, `dead_letter`, ..."""
        return self._raw.source

    @property
    def op(self) -> str:
        """`set`, `delete`, `invoke`, `created`, ..."""
        return self._raw.op

    @property
    def payload(self) -> str:
        """The payload as JSON text."""
        return self._raw.payload

    @property
    def depth(self) -> int:
        """How many events deep this one is (0 for an event from outside)."""
        return self._raw.depth

    @property
    def attempt(self) -> int:
        """1 on the first attempt, 2 on the first retry, and so on."""
        return self._raw.attempt

    @property
    def trigger_id(self) -> Optional[str]:
        return self._raw.trigger_id

    @property
    def script_id(self) -> str:
        return self._raw.script_id

    @property
    def principal(self) -> str:
        """The principal the script runs as."""
        return self._raw.principal

    def json(self) -> Any:
        """The payload, parsed (once)."""
        if self._json is None:
            self._json = json.loads(self._raw.payload)
        return self._json

    def kv(self) -> Optional[KvEvent]:
        """The KV change, for a `kv` event; None otherwise."""
        if self.source != "kv":
            return None
        return KvEvent._from(self.source, self.op, self.json())

    def dead_letter(self) -> Optional[DeadLetterEvent]:
        """The dead letter, for a `dead_letter` event; None otherwise."""
        if self.source != "dead_letter":
            return None
        p = self.json()
        return DeadLetterEvent(
            dead_letter_id=p["dead_letter_id"],
            source=p["source"],
            op=p["op"],
            trigger_id=p.get("trigger_id"),
            script_id=p.get("script_id"),
            attempt_count=p.get("attempt_count", 0),
            last_error=p.get("last_error", ""),
            payload=p.get("payload"),
        )

    def __repr__(self) -> str:
        return f"Event(id={self.id!r}, source={self.source!r}, op={self.op!r}, attempt={self.attempt})"
