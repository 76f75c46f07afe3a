"""PiCloud trigger scripts in Python.

Write one function, mark it `@handler`, and build the file with
`sdk-python/picloud-py build app.py -o app.wasm`:

    from picloud import Event, handler, kv, log

    @handler
    def hello(event: Event):
        change = event.kv()
        if change:                                   # a KV write
            name = (change.value or {}).get("name", "stranger")
            kv.set("greeted", change.key, {"message": f"hello, {name}"})
            log.info(f"greeted {name} under greeted/{change.key}")
            return None
        name = event.json().get("name", "stranger")  # a synchronous invocation
        return {"message": f"hello, {name}"}

The handler's return value is the reply body of a synchronous invocation:
None for none, `bytes` and `str` as they are, anything else as JSON. Raising
fails the attempt: `Fail("why")` with its message, any other exception with
its type and message (and its traceback in the run's log). A failed attempt
is retried and finally dead-lettered; `Permanent("why")` dead-letters it at
once, `RetryAfter("why", seconds)` retries it no sooner than that. A
synchronous invocation returns the error to its caller instead.

Rule: this module holds the decorator and the bridge to the generated
`handle` export; everything a handler calls lives in `kv`, `queue`,
`pubsub`, `dead_letters`, `log` and `config`.
"""

import json
import sys
import traceback

from . import config, dead_letters, kv, log, pubsub, queue
from .dead_letters import Resolution
from .errors import (
    Conflict,
    Fail,
    HostError,
    InvalidArgument,
    NotFound,
    Permanent,
    PermissionDenied,
    RetryAfter,
    Unavailable,
)
from .event import (
    BatchMessage,
    CronTick,
    DeadLetterEvent,
    Event,
    KvEvent,
    PubsubMessage,
    QueueBatch,
    QueueMessage,
)

__all__ = [
    "BatchMessage",
    "Conflict",
    "CronTick",
    "DeadLetterEvent",
    "Event",
    "Fail",
    "HostError",
    "InvalidArgument",
    "KvEvent",
    "NotFound",
    "Permanent",
    "PermissionDenied",
    "PubsubMessage",
    "QueueBatch",
    "QueueMessage",
    "Resolution",
    "RetryAfter",
    "Unavailable",
    "config",
    "dead_letters",
    "handler",
    "kv",
    "log",
    "pubsub",
    "queue",
]


def _reply(value):
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


def _world(function):
    from . import _host

    class WitWorld:
        def handle(self, raw):
            try:
                return _reply(function(Event(raw)))
            except Fail as e:
                raise _host.failure(str(e), e.permanent, e.retry_after_ms) from None
            except HostError as e:
                raise _host.failure(str(e)) from None
            except Exception as e:
                # The handler's frames only, not this bridge's.
                frames = traceback.format_exception(type(e), e, e.__traceback__.tb_next)
                log.error("".join(frames).rstrip())
                raise _host.failure(f"{type(e).__name__}: {e}") from None

    return WitWorld


def handler(function):
    """Make `function(event) -> reply` the script's handler. One per script."""
    module = sys.modules[function.__module__]
    if hasattr(module, "WitWorld"):
        raise TypeError(f"{function.__module__} already has a handler: a script has exactly one")
    module.WitWorld = _world(function)
    return function
