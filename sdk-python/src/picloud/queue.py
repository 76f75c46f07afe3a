"""The app's queues: send work to another script, and settle the messages of
a batch one by one.

A queue has one consumer, the script of its queue trigger (`picloud-host
trigger add-queue APP --queue NAME --script S --as P`). Each message reaches
it as a `queue`/`message` event (`event.queue_message()`), or, for a consumer
registered with `--batch N`, up to N at a time as one `queue`/`batch` event
(`event.queue_batch()`).

Rule: a send is part of the invocation. A message is sent only if the handler
that sent it succeeds; a failed attempt's sends are dropped with it, and its
retry sends them again. It is an event one level deeper than the running one.
Sending needs write access.

    from picloud import queue
    queue.send("mail", {"to": "ada@example.com", "template": "welcome"})
    queue.send("mail", {"to": "ada@example.com", "template": "tips"}, delay=24 * 3600)

In a batch, raising retries every message; to retry only some, call
`retry(message.id)` for each and return normally: the others succeed.
"""

import json
from typing import Any, Optional

from . import _host
from .errors import millis


def _delay_ms(delay: Optional[float]) -> Optional[int]:
    if delay is None:
        return None
    if not delay >= 0:
        raise ValueError(f"a delay is 0 seconds or more, not {delay!r}")
    return millis(delay)


def send(name: str, value: Any, delay: Optional[float] = None) -> None:
    """Send `value` (anything `json.dumps` takes) to the queue `name`, delivered
    no sooner than `delay` seconds from now (None: at once). Sent only if this
    invocation succeeds."""
    _host.call(_host.queue.send, name, json.dumps(value), _delay_ms(delay))


def retry(message_id: str, delay: Optional[float] = None) -> None:
    """In a `queue`/`batch` event: retry the message `message_id` alone, after
    `delay` seconds (None: after the trigger's backoff), even though the
    handler succeeds. An id not in the batch raises `NotFound`."""
    _host.call(_host.queue.retry, message_id, _delay_ms(delay))
