"""The app's topics: publish a message to every script that subscribes.

Every pubsub trigger whose topic pattern matches (`picloud-host trigger
add-pubsub APP --topic 'orders.*' --script S --as P`) gets each message
published on a topic, as a `pubsub`/`publish` event (`event.pubsub()`).
Unlike a queue, which has one consumer, a topic may have none or many.

Rule: a publish is part of the invocation: published only if the handler
succeeds, one level deeper than the running event. Publishing needs write
access.

    from picloud import pubsub
    pubsub.publish("orders.created", {"order": "o-1"})
"""

import json
from typing import Any

from . import _host


def publish(topic: str, value: Any) -> None:
    """Publish `value` (anything `json.dumps` takes) on `topic`, if this
    invocation succeeds."""
    _host.call(_host.pubsub.publish, topic, json.dumps(value))
