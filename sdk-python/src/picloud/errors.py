"""Errors a handler meets or raises.

Rule: every refusal of the host is a `HostError` subclass whose text is the
text the Rust SDK gives the same refusal, so a run's error reads the same
whatever language the script is in. Raising anything from a handler fails the
attempt, to be retried; `Fail` is the one to raise on purpose, and its two
subclasses say more: `Permanent` (never retry) and `RetryAfter` (not before a
delay).
"""

import math


class Fail(Exception):
    """Fail the attempt with this message.

    The event is retried (with backoff) and, after the last attempt, becomes a
    dead letter whose `last_error` is the message. A synchronous invocation
    returns the message to its caller instead of being retried.

        raise Fail(f"payment declined: {order['id']}")
    """

    #: Whether the event must not be retried (`Permanent`).
    permanent = False
    #: The least delay before the retry, in milliseconds (`RetryAfter`).
    retry_after_ms = None


class Permanent(Fail):
    """Fail the attempt, and never retry it: the event becomes a dead letter
    now, whatever attempts it has left (a dead-letter handler's event goes to
    the recursion stop, resolved `handler_failed`). For input no retry can
    fix.

        raise Permanent(f"order {key} has no items")
    """

    permanent = True


class RetryAfter(Fail):
    """Fail the attempt, and retry it no sooner than `seconds` from now
    (rounded up to whole milliseconds) instead of after the trigger's backoff:
    a rate-limited downstream's `Retry-After`. The attempt still counts.

        raise RetryAfter("mail api: rate limited", 30)
    """

    def __init__(self, message: str, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError(f"RetryAfter needs a delay of 0 seconds or more, not {seconds!r}")
        super().__init__(message)
        self.seconds = seconds
        self.retry_after_ms = millis(seconds)


def millis(seconds: float) -> int:
    """Whole milliseconds, rounded up: a delay never shrinks below what was
    asked."""
    return math.ceil(seconds * 1000)


class HostError(Exception):
    """The host refused a call. Catch a subclass to handle it, or let it
    propagate to fail the attempt."""


class PermissionDenied(HostError):
    """The principal the script runs as lacks the capability (a viewer
    writing KV, or a member who has since been removed)."""

    def __init__(self) -> None:
        super().__init__("permission denied")


class NotFound(HostError):
    """The named thing does not exist in the script's app."""

    def __init__(self, what: str) -> None:
        super().__init__(f"not found: {what}")


class InvalidArgument(HostError):
    """The arguments were malformed (bad JSON, empty key, oversize value...)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"invalid argument: {why}")


class Conflict(HostError):
    """The call conflicts with current state: a conditional write saw another
    version, or a dead letter is already resolved."""

    def __init__(self, why: str) -> None:
        super().__init__(f"conflict: {why}")


class Unavailable(HostError):
    """The host could not complete the call now (storage unavailable). Let it
    propagate: the attempt fails and is retried later."""

    def __init__(self, why: str) -> None:
        super().__init__(f"unavailable: {why}")
