"""Run a Python handler natively, in `python -m unittest`, against an
in-memory host: the Python twin of the Rust SDK's `picloud_sdk::testing`.

    import picloud_testing as testing      # first: before picloud and your script
    from app import hello                   # the function under @handler

    host = testing.TestHost()
    host.run(hello, testing.kv_set("people", "ada", {"name": "Ada"}))
    assert host.kv("greeted", "ada") == {"message": "hello, Ada"}
    assert host.logs == ["info: greeted Ada under greeted/ada"]

    host.fail_next("kv.set", picloud.Unavailable("down"))
    with self.assertRaises(picloud.Unavailable):
        host.run(hello, testing.kv_set("people", "bo", {}))

Every `kv`, `dead_letters`, `queue`, `pubsub`, `config` and `log` call the
handler makes inside `TestHost.run` goes to that host: KV, variables and dead
letters you seeded; log lines, writes, sent and published messages and
retried batch messages it records for your assertions; host errors you inject
with `fail_next`. `sdk-python/picloud-py test FOLDER` runs a folder's tests
with this module and the SDK on the path.

What it is not: the sandbox. Limits, budgets, permissions, the events that
writes enqueue, and the rule that a failed attempt's sends and publishes are
dropped are the real host's (here every call is recorded as it is made); try a
built component there with `picloud-host run app.wasm --event event.json`.

Rule: this module stands in for the two modules componentize-py generates
(`componentize_py_types` and `wit_world.imports`) by installing look-alikes
in `sys.modules` when it is imported, so the SDK runs unchanged and
`picloud/_host.py` stays the only code that names the bindings. Import it
before `picloud`, and never from a script you build.
"""

import dataclasses
import enum
import json
import sys
import types as _modules
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = [
    "Published",
    "Retried",
    "Sent",
    "TestHost",
    "Write",
    "at_attempt",
    "batch_message",
    "cron_tick",
    "dead_letter",
    "invoke",
    "kv_delete",
    "kv_set",
    "pubsub_publish",
    "queue_batch",
    "queue_message",
]


# --- What the handler did, for assertions -----------------------------------


@dataclass
class Write:
    """One KV write a handler made, in order."""

    #: "set" or "delete".
    op: str
    collection: str
    key: str
    #: The value written, parsed; None for a delete.
    value: Any


@dataclass
class Sent:
    """One message a handler sent to a queue (`queue.send`), in order."""

    queue: str
    #: The body, parsed.
    body: Any
    #: The delay it asked for, in seconds (whole milliseconds); None for none.
    delay: Optional[float]


@dataclass
class Published:
    """One message a handler published (`pubsub.publish`), in order."""

    topic: str
    #: The body, parsed.
    body: Any


@dataclass
class Retried:
    """One batch message a handler retried alone (`queue.retry`), in order."""

    message_id: str
    #: The delay it asked for, in seconds (whole milliseconds); None for the
    #: trigger's backoff.
    delay: Optional[float]


# --- The look-alike bindings ------------------------------------------------


class Err(Exception):
    """componentize-py's `Err`: a host call's error variant, in `value`."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


@dataclass
class _Variant:
    value: str = ""


class HostError_PermissionDenied(_Variant):
    pass


class HostError_NotFound(_Variant):
    pass


class HostError_InvalidArgument(_Variant):
    pass


class HostError_Conflict(_Variant):
    pass


class HostError_Unavailable(_Variant):
    pass


@dataclass
class HandlerError:
    message: str
    permanent: bool
    retry_after_ms: Optional[int]


@dataclass
class _Entry:
    key: str
    #: JSON text, as the bindings give it.
    value: str
    version: int


class _Level(enum.Enum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


class _Resolution(enum.Enum):
    REPLAYED = 0
    IGNORED = 1
    HANDLED_BY_SCRIPT = 2
    HANDLER_FAILED = 3


@dataclass
class _DeadLetter:
    id: str
    original_event_id: str
    source: str
    op: str
    trigger_id: Optional[str]
    script_id: Optional[str]
    #: JSON text, as the bindings give it.
    payload: str
    attempt_count: int
    first_attempt_at: int
    last_attempt_at: int
    last_error: str
    created_at: int
    resolved_at: Optional[int]
    resolution: Optional[_Resolution]


# The host error classes of picloud.errors, by the variant that carries them.
_VARIANTS = {
    "PermissionDenied": HostError_PermissionDenied,
    "NotFound": HostError_NotFound,
    "InvalidArgument": HostError_InvalidArgument,
    "Conflict": HostError_Conflict,
    "Unavailable": HostError_Unavailable,
}


def _install() -> None:
    """Put the look-alikes where `picloud/_host.py` imports them from."""
    py_types = _modules.ModuleType("componentize_py_types")
    py_types.Err = Err
    world = _modules.ModuleType("wit_world")
    imports = _modules.ModuleType("wit_world.imports")
    world.imports = imports
    wit_types = _modules.ModuleType("wit_world.imports.types")
    for name, variant in _VARIANTS.items():
        setattr(wit_types, f"HostError_{name}", variant)
    wit_types.HandlerError = HandlerError
    interfaces = {
        "types": wit_types,
        "kv": _namespace(
            "kv",
            get=_kv_get,
            set=_kv_set,
            delete=_kv_delete,
            list_keys=_kv_list_keys,
            set_if_version=_kv_set_if_version,
            delete_if_version=_kv_delete_if_version,
            increment=_kv_increment,
        ),
        "dead_letters": _namespace(
            "dead_letters",
            Resolution=_Resolution,
            get=_dl_get,
            list_unresolved=_dl_list_unresolved,
            resolve=_dl_resolve,
        ),
        "queue": _namespace("queue", send=_queue_send, retry=_queue_retry),
        "pubsub": _namespace("pubsub", publish=_pubsub_publish),
        "log": _namespace("log", Level=_Level, log=_log),
        "store": _namespace("store", get=_config_get),
    }
    for name, module in interfaces.items():
        setattr(imports, name, module)
        sys.modules[f"wit_world.imports.{name}"] = module
    sys.modules["componentize_py_types"] = py_types
    sys.modules["wit_world"] = world
    sys.modules["wit_world.imports"] = imports


def _namespace(name: str, **members: Any) -> _modules.ModuleType:
    module = _modules.ModuleType(f"wit_world.imports.{name}")
    for key, value in members.items():
        setattr(module, key, value)
    return module


# --- The host ---------------------------------------------------------------

_current: Optional["TestHost"] = None


class TestHost:
    """An in-memory host for one test: KV, variables, dead letters, a log,
    what was sent, and injected failures. Cheap to make; one per test."""

    __test__ = False  # not a test case, whatever a runner guesses from the name

    def __init__(self) -> None:
        self._kv: Dict[Tuple[str, str], Tuple[str, int]] = {}
        self._vars: Dict[str, str] = {}
        self._dead_letters: List[_DeadLetter] = []
        self._failures: Dict[str, List[Exception]] = {}
        self.writes: List[Write] = []
        self.sent: List[Sent] = []
        self.published: List[Published] = []
        self.retried: List[Retried] = []
        #: Every log line so far, as `level: message`.
        self.logs: List[str] = []

    # Seeding.

    def seed_var(self, name: str, value: str) -> "TestHost":
        """Seed one of the app's variables or secrets, for `config.get`."""
        self._vars[name] = value
        return self

    def seed_kv(self, collection: str, key: str, value: Any) -> "TestHost":
        """Seed a KV entry at version 1 (not recorded as a write)."""
        self._kv[(collection, key)] = (json.dumps(value), 1)
        return self

    def seed_dead_letter(self, source: str, op: str, payload: Any, last_error: str) -> str:
        """Seed an unresolved dead letter of a `source`/`op` event with
        `payload` that failed with `last_error`; its id (`dl-1`, `dl-2`...)."""
        id = f"dl-{len(self._dead_letters) + 1}"
        self._dead_letters.append(
            _DeadLetter(
                id=id,
                original_event_id=f"event-of-{id}",
                source=source,
                op=op,
                trigger_id=None,
                script_id=None,
                payload=json.dumps(payload),
                attempt_count=5,
                first_attempt_at=0,
                last_attempt_at=0,
                last_error=last_error,
                created_at=0,
                resolved_at=None,
                resolution=None,
            )
        )
        return id

    def fail_next(self, call: str, error: Exception) -> "TestHost":
        """Make the next call named `call` raise `error` (a `picloud`
        `PermissionDenied`, `NotFound`, `InvalidArgument`, `Conflict` or
        `Unavailable`), once. Calls: `kv.get`, `kv.set`, `kv.delete`,
        `kv.list-keys`, `kv.set-if-version`, `kv.delete-if-version`,
        `kv.increment`, `dead-letters.get`, `dead-letters.list-unresolved`,
        `dead-letters.resolve`, `queue.send`, `queue.retry`,
        `pubsub.publish`, `config.get`. A refused call records nothing."""
        if call not in _CALLS:
            raise ValueError(f"no host call {call!r}: use one of {', '.join(sorted(_CALLS))}")
        _variant_of(error)  # refuse what no host call can raise, now
        self._failures.setdefault(call, []).append(error)
        return self

    # Running.

    def run(self, handler: Callable[[Any], Any], event: Any) -> Any:
        """Call `handler(event)` with this host answering every host call;
        its return value, or what it raises."""
        global _current
        previous, _current = _current, self
        try:
            return handler(event)
        finally:
            _current = previous

    # Reading.

    def kv(self, collection: str, key: str) -> Any:
        """A KV value now (None: absent)."""
        entry = self._kv.get((collection, key))
        return None if entry is None else json.loads(entry[0])

    def version(self, collection: str, key: str) -> int:
        """A KV entry's version now (0: absent)."""
        entry = self._kv.get((collection, key))
        return 0 if entry is None else entry[1]

    def resolution(self, id: str):
        """A dead letter's `picloud.Resolution` now (None: unresolved or
        unknown)."""
        from picloud import Resolution

        for dl in self._dead_letters:
            if dl.id == id and dl.resolution is not None:
                return Resolution[dl.resolution.name]
        return None


_CALLS = {
    "kv.get",
    "kv.set",
    "kv.delete",
    "kv.list-keys",
    "kv.set-if-version",
    "kv.delete-if-version",
    "kv.increment",
    "dead-letters.get",
    "dead-letters.list-unresolved",
    "dead-letters.resolve",
    "queue.send",
    "queue.retry",
    "pubsub.publish",
    "config.get",
}


def _variant_of(error: Exception) -> _Variant:
    """The bindings' variant for a `picloud` host error, carrying its reason
    without the prefix the SDK adds back."""
    variant = _VARIANTS.get(type(error).__name__)
    if variant is None:
        raise TypeError(
            f"fail_next takes a picloud PermissionDenied, NotFound, InvalidArgument, "
            f"Conflict or Unavailable, not {type(error).__name__}"
        )
    text = str(error)
    return variant(text.split(": ", 1)[1] if ": " in text else "")


def _host(call: str) -> TestHost:
    """The running test host, after any failure injected for `call`."""
    if _current is None:
        raise RuntimeError(
            f"{call} called outside TestHost.run: call the handler with host.run(handler, event)"
        )
    queued = _current._failures.get(call)
    if queued:
        raise Err(_variant_of(queued.pop(0)))
    return _current


def _names(collection: str, key: str) -> Tuple[str, str]:
    for what, value in (("collection", collection), ("key", key)):
        if not value:
            raise Err(HostError_InvalidArgument(f"empty {what}: give a non-empty name"))
    return collection, key


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise Err(HostError_InvalidArgument(f"{what} is not valid JSON: {e}")) from None


def _write(host: TestHost, name: Tuple[str, str], value: Any) -> int:
    version = host.version(*name) + 1
    host._kv[name] = (json.dumps(value), version)
    host.writes.append(Write("set", name[0], name[1], value))
    return version


def _remove(host: TestHost, name: Tuple[str, str]) -> bool:
    existed = host._kv.pop(name, None) is not None
    if existed:
        host.writes.append(Write("delete", name[0], name[1], None))
    return existed


def _conflict(collection: str, key: str, expected: int, found: int) -> Err:
    def at(version: int) -> str:
        return "absent" if version == 0 else f"at version {version}"

    return Err(
        HostError_Conflict(
            f"{collection}/{key} is {at(found)}, not {at(expected)}: "
            "read it again and retry, or fail the attempt"
        )
    )


def _kv_get(collection: str, key: str) -> Optional[_Entry]:
    host = _host("kv.get")
    name = _names(collection, key)
    entry = host._kv.get(name)
    return None if entry is None else _Entry(key, entry[0], entry[1])


def _kv_set(collection: str, key: str, value: str) -> int:
    host = _host("kv.set")
    name = _names(collection, key)
    return _write(host, name, _json(value, "value"))


def _kv_delete(collection: str, key: str) -> bool:
    host = _host("kv.delete")
    return _remove(host, _names(collection, key))


def _kv_list_keys(collection: str, after: Optional[str], limit: int) -> List[str]:
    host = _host("kv.list-keys")
    _names(collection, after or "-")
    keys = sorted(k for c, k in host._kv if c == collection and (after is None or k > after))
    return keys[: min(limit, 1000)]


def _kv_set_if_version(collection: str, key: str, value: str, expected: int) -> int:
    host = _host("kv.set-if-version")
    name = _names(collection, key)
    parsed = _json(value, "value")
    found = host.version(*name)
    if found != expected:
        raise _conflict(collection, key, expected, found)
    return _write(host, name, parsed)


def _kv_delete_if_version(collection: str, key: str, expected: int) -> None:
    host = _host("kv.delete-if-version")
    name = _names(collection, key)
    found = host.version(*name)
    if found != expected:
        raise _conflict(collection, key, expected, found)
    _remove(host, name)


def _kv_increment(collection: str, key: str, delta: int) -> int:
    host = _host("kv.increment")
    name = _names(collection, key)
    base = host.kv(*name) if name in host._kv else 0
    if not isinstance(base, int) or isinstance(base, bool):
        raise Err(
            HostError_InvalidArgument(
                f"{collection}/{key} holds {json.dumps(base)}, not an integer: "
                "increment only integers, or set the key first"
            )
        )
    total = base + delta
    if not -(2**63) <= total < 2**63:
        raise Err(
            HostError_InvalidArgument(
                f"{collection}/{key}: {base} + {delta} is outside the signed 64-bit range"
            )
        )
    _write(host, name, total)
    return total


def _dl_get(id: str) -> Optional[_DeadLetter]:
    host = _host("dead-letters.get")
    return next((dl for dl in host._dead_letters if dl.id == id), None)


def _dl_list_unresolved(limit: int) -> List[_DeadLetter]:
    host = _host("dead-letters.list-unresolved")
    return [dl for dl in host._dead_letters if dl.resolution is None][:limit]


def _dl_resolve(id: str, resolution: _Resolution) -> None:
    host = _host("dead-letters.resolve")
    dl = next((dl for dl in host._dead_letters if dl.id == id), None)
    if dl is None:
        raise Err(HostError_NotFound(f"dead letter '{id}'"))
    if dl.resolution is not None:
        raise Err(HostError_Conflict(f"dead letter {id} is already resolved"))
    dl.resolution = resolution
    dl.resolved_at = 1


def _seconds(delay_ms: Optional[int]) -> Optional[float]:
    return None if delay_ms is None else delay_ms / 1000


def _queue_send(name: str, body: str, delay_ms: Optional[int]) -> None:
    host = _host("queue.send")
    if not name:
        raise Err(HostError_InvalidArgument("empty queue: give a non-empty name"))
    host.sent.append(Sent(name, _json(body, "message body"), _seconds(delay_ms)))


def _queue_retry(message_id: str, delay_ms: Optional[int]) -> None:
    host = _host("queue.retry")
    host.retried.append(Retried(message_id, _seconds(delay_ms)))


def _pubsub_publish(topic: str, body: str) -> None:
    host = _host("pubsub.publish")
    if not topic:
        raise Err(HostError_InvalidArgument("empty topic: give a non-empty name"))
    host.published.append(Published(topic, _json(body, "message body")))


def _log(level: _Level, message: str) -> None:
    line = f"{level.name.lower()}: {message}"
    if _current is None:
        # Outside `run` a log line has nowhere to go: print it.
        print(line, file=sys.stderr)
    else:
        _current.logs.append(line)


def _config_get(name: str) -> Optional[str]:
    return _host("config.get")._vars.get(name)


_install()

from picloud import BatchMessage, Event  # noqa: E402  (after the look-alikes)


# --- Events -----------------------------------------------------------------


@dataclass
class _RawEvent:
    id: str
    app_id: str
    source: str
    op: str
    payload: str
    depth: int = 0
    attempt: int = 1
    trigger_id: Optional[str] = "test-trigger"
    script_id: str = "test-script"
    principal: str = "test-principal"


def _event(source: str, op: str, payload: Any) -> Event:
    return Event(_RawEvent("test-event", "test-app", source, op, json.dumps(payload)))


def kv_set(collection: str, key: str, value: Any) -> Event:
    """A `kv`/`set` event: `key` of `collection` was written with `value`."""
    return _event("kv", "set", {"collection": collection, "key": key, "value": value, "version": 1})


def kv_delete(collection: str, key: str) -> Event:
    """A `kv`/`delete` event: `key` of `collection` was deleted."""
    return _event("kv", "delete", {"collection": collection, "key": key, "value": None, "version": 2})


def cron_tick(schedule: str, scheduled_at: str, missed: int = 0) -> Event:
    """A `cron`/`tick` event of `schedule` (in UTC) due at `scheduled_at`
    (RFC 3339 text), after `missed` skipped ticks."""
    payload = {"schedule": schedule, "timezone": "UTC", "scheduled_at": scheduled_at, "missed": missed}
    return _event("cron", "tick", payload)


def queue_message(queue: str, body: Any) -> Event:
    """A `queue`/`message` event: one message of `queue` with `body`."""
    return _event("queue", "message", {"queue": queue, "body": body})


def batch_message(id: str, body: Any, attempt: int = 1) -> BatchMessage:
    """A message of a batch, for `queue_batch`."""
    return BatchMessage(id=id, body=body, attempt=attempt)


def queue_batch(queue: str, messages: List[BatchMessage]) -> Event:
    """A `queue`/`batch` event: `messages` of `queue` (build them with
    `batch_message`)."""
    listed = [{"id": m.id, "body": m.body, "attempt": m.attempt} for m in messages]
    return _event("queue", "batch", {"queue": queue, "messages": listed})


def pubsub_publish(topic: str, body: Any) -> Event:
    """A `pubsub`/`publish` event: `body` published on `topic`."""
    return _event("pubsub", "publish", {"topic": topic, "body": body})


def invoke(payload: Any) -> Event:
    """A synchronous invocation with `payload`."""
    return _event("http", "invoke", payload)


def dead_letter(id: str, source: str, op: str, payload: Any, last_error: str) -> Event:
    """A `dead_letter` event for the dead letter `id` (seed it with
    `TestHost.seed_dead_letter`) of a `source`/`op` event with `payload`."""
    return _event(
        "dead_letter",
        "created",
        {
            "dead_letter_id": id,
            "source": source,
            "op": op,
            "attempt_count": 5,
            "last_error": last_error,
            "payload": payload,
        },
    )


def at_attempt(event: Event, attempt: int) -> Event:
    """`event` as its `attempt`th delivery (1 is the first), for a handler
    that behaves differently on a retry."""
    return Event(dataclasses.replace(event._raw, attempt=attempt))
