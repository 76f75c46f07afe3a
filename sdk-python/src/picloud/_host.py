"""The one module that touches the bindings componentize-py generates.

Rule: every host call goes through `call`, which turns the bindings' `Err`
into the SDK's `HostError` subclasses, and a failed handler leaves through
`failure`, which builds the `handler-error` record; nothing else in the SDK
imports `wit_world` or `componentize_py_types`, so authors never see the
generated names.
"""

from typing import Optional

try:
    from componentize_py_types import Err
    from wit_world.imports import dead_letters, kv, log, pubsub, queue, store, types
except ModuleNotFoundError as e:
    raise ModuleNotFoundError(
        f"no module {e.name!r}: picloud runs inside a component built with `picloud-py build`; "
        "to run a handler natively, import picloud_testing before picloud (see `picloud-py test`)",
        name=e.name,
    ) from None

from .errors import Conflict, HostError, InvalidArgument, NotFound, PermissionDenied, Unavailable

__all__ = ["call", "failure", "dead_letters", "kv", "log", "pubsub", "queue", "store", "Err"]


def host_error(raw) -> HostError:
    """The SDK's exception for a `host-error` variant."""
    if isinstance(raw, types.HostError_PermissionDenied):
        return PermissionDenied()
    if isinstance(raw, types.HostError_NotFound):
        return NotFound(raw.value)
    if isinstance(raw, types.HostError_InvalidArgument):
        return InvalidArgument(raw.value)
    if isinstance(raw, types.HostError_Conflict):
        return Conflict(raw.value)
    if isinstance(raw, types.HostError_Unavailable):
        return Unavailable(raw.value)
    return HostError(str(raw))


def call(function, *args):
    """Call a host function, raising `HostError` for a refusal."""
    try:
        return function(*args)
    except Err as e:
        raise host_error(e.value) from None


def failure(message: str, permanent: bool = False, retry_after_ms: Optional[int] = None) -> Err:
    """The exception `handle` raises to fail the attempt: the bindings' `Err`
    around a `handler-error`."""
    return Err(types.HandlerError(message=message, permanent=permanent, retry_after_ms=retry_after_ms))
