"""The event a handler receives, and typed views of its payload.

Rule: the payload shapes here are the ones `wit/trigger.wit` documents on
`event.payload`; a view is None when the event is of another source, never a
guess.
"""

import json
from dataclasses import dataclass
from typing import Any, List, Optional


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

    def cron(self) -> Optional["CronTick"]:
        """The tick whose handling failed, when the original event was a
        `cron`/`tick` event."""
        return CronTick._from(self.source, self.op, self.payload)

    def queue_message(self) -> Optional["QueueMessage"]:
        """The queue message whose handling failed, when the original event
        was a queue message (a batch consumer's messages are dead-lettered
        one by one, so this is their view too)."""
        return QueueMessage._from(self.source, self.op, self.payload)

    def pubsub(self) -> Optional["PubsubMessage"]:
        """The publication whose handling failed (this subscriber's), when
        the original event was a `pubsub`/`publish` event."""
        return PubsubMessage._from(self.source, self.op, self.payload)


@dataclass
class CronTick:
    """The tick behind a `cron`/`tick` event. Delivered at least once: key
    what a tick does by `scheduled_at` to stay idempotent."""

    #: The trigger's schedule, as registered (e.g. `0 3 * * *`).
    schedule: str
    #: The time zone the schedule is read in (e.g. `UTC`).
    timezone: str
    #: When the tick was due, as RFC 3339 text; it may run later.
    scheduled_at: str
    #: How many earlier ticks were skipped while no dispatcher ran (after a
    #: gap the host runs the newest tick once, not one per missed time).
    missed: int

    @staticmethod
    def _from(source: str, op: str, payload: Any) -> Optional["CronTick"]:
        if (source, op) != ("cron", "tick") or not _has_text(payload, "schedule", "scheduled_at"):
            return None
        return CronTick(
            schedule=payload["schedule"],
            timezone=payload.get("timezone", ""),
            scheduled_at=payload["scheduled_at"],
            missed=payload.get("missed", 0),
        )


@dataclass
class QueueMessage:
    """One message of a queue (`queue`/`message`)."""

    queue: str
    #: The body it was sent with, parsed.
    body: Any

    @staticmethod
    def _from(source: str, op: str, payload: Any) -> Optional["QueueMessage"]:
        if (source, op) != ("queue", "message") or not _has_text(payload, "queue"):
            return None
        return QueueMessage(queue=payload["queue"], body=payload.get("body"))


@dataclass
class BatchMessage:
    """One message of a `QueueBatch`."""

    #: For `queue.retry`; the same across the message's retries.
    id: str
    #: The body it was sent with, parsed.
    body: Any
    #: 1 the first time the message is delivered, one more after each retry.
    attempt: int


@dataclass
class QueueBatch:
    """Messages of a queue, for a consumer registered with `--batch N`
    (`queue`/`batch`): at most N, oldest first. Raising retries them all;
    `queue.retry(message.id)` retries one alone."""

    queue: str
    messages: List[BatchMessage]


@dataclass
class PubsubMessage:
    """A message published on a topic (`pubsub`/`publish`)."""

    #: The topic it was published on (not the trigger's pattern).
    topic: str
    #: The body it was published with, parsed.
    body: Any

    @staticmethod
    def _from(source: str, op: str, payload: Any) -> Optional["PubsubMessage"]:
        if (source, op) != ("pubsub", "publish") or not _has_text(payload, "topic"):
            return None
        return PubsubMessage(topic=payload["topic"], body=payload.get("body"))


def _has_text(payload: Any, *fields: str) -> bool:
    """Whether `payload` is an object with text in each of `fields`."""
    return isinstance(payload, dict) and all(isinstance(payload.get(f), str) for f in fields)


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
        """`kv`, `cron`, `queue`, `pubsub`, `http`, `dead_letter`, ..."""
        return self._raw.source

    @property
    def op(self) -> str:
        """`set`, `delete`, `tick`, `message`, `batch`, `publish`, `invoke`,
        `created`, ..."""
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

    def _payload_of(self, source: str, op: str) -> Optional[dict]:
        """The payload, for an event of `source`/`op` whose payload is an
        object; None otherwise."""
        if self.source != source or self.op != op:
            return None
        payload = self.json()
        return payload if isinstance(payload, dict) else None

    def cron(self) -> Optional[CronTick]:
        """The tick, for a `cron`/`tick` event; None otherwise."""
        return CronTick._from(self.source, self.op, self._payload_of("cron", "tick"))

    def queue_message(self) -> Optional[QueueMessage]:
        """The message, for a `queue`/`message` event; None otherwise."""
        return QueueMessage._from(self.source, self.op, self._payload_of("queue", "message"))

    def queue_batch(self) -> Optional[QueueBatch]:
        """The messages, for a `queue`/`batch` event; None otherwise."""
        p = self._payload_of("queue", "batch")
        if p is None:
            return None
        messages = [
            BatchMessage(id=m["id"], body=m.get("body"), attempt=m.get("attempt", 1))
            for m in p.get("messages", [])
        ]
        return QueueBatch(queue=p["queue"], messages=messages)

    def pubsub(self) -> Optional[PubsubMessage]:
        """The message, for a `pubsub`/`publish` event; None otherwise."""
        return PubsubMessage._from(self.source, self.op, self._payload_of("pubsub", "publish"))

    def __repr__(self) -> str:
        return f"Event(id={self.id!r}, source={self.source!r}, op={self.op!r}, attempt={self.attempt})"
