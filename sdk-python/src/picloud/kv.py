"""The app's key-value store: JSON values under (collection, key).

Every write also enqueues a `kv` event in the same transaction, so triggers
on the collection see it. Reads need read access to the app, writes write
access, as the principal the script runs as.

    from picloud import kv
    kv.set("greeted", "ada", {"message": "hello, Ada"})
    entry = kv.get("greeted", "ada")        # Entry(key, value, version) or None
    kv.update("counters", "visits", lambda n: (n or 0) + 1)

Under concurrency, prefer `increment`, `set_if_version` or `update` to a
read followed by `set`: two handlers that read the same version and both
`set` lose one write.
"""

import json
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

from . import _host
from .errors import Conflict

#: How many times `update` re-reads and retries after a conflict.
UPDATE_TRIES = 16


@dataclass
class Entry:
    """A stored value."""

    key: str
    #: The value, parsed from JSON.
    value: Any
    #: Increases by one on every write of the key.
    version: int


def get(collection: str, key: str) -> Optional[Entry]:
    """The entry under `collection`/`key`, or None."""
    raw = _host.call(_host.kv.get, collection, key)
    if raw is None:
        return None
    return Entry(key=raw.key, value=json.loads(raw.value), version=raw.version)


def get_value(collection: str, key: str, default: Any = None) -> Any:
    """Just the value under `collection`/`key`, or `default`."""
    entry = get(collection, key)
    return default if entry is None else entry.value


def set(collection: str, key: str, value: Any) -> int:
    """Write `value` (anything `json.dumps` takes); returns the new version."""
    return _host.call(_host.kv.set, collection, key, json.dumps(value))


def delete(collection: str, key: str) -> bool:
    """Delete a key; returns whether it existed."""
    return _host.call(_host.kv.delete, collection, key)


def set_if_version(collection: str, key: str, value: Any, expected: int) -> int:
    """Write only if the key's version is still `expected` (0: only if the key
    does not exist); otherwise raise `Conflict` and write nothing."""
    return _host.call(_host.kv.set_if_version, collection, key, json.dumps(value), expected)


def delete_if_version(collection: str, key: str, expected: int) -> None:
    """Delete only if the key's version is still `expected`; otherwise raise
    `Conflict`."""
    _host.call(_host.kv.delete_if_version, collection, key, expected)


def increment(collection: str, key: str, delta: int = 1) -> int:
    """Add `delta` to an integer value atomically (from 0 if absent); returns
    the new value."""
    return _host.call(_host.kv.increment, collection, key, delta)


def update(collection: str, key: str, change: Callable[[Any], Any]) -> int:
    """Read, `change(current)` (None when absent), and write back only if
    nobody wrote in between, retrying on conflict. Returns the new version.
    `change` may run more than once, so it must not have side effects."""
    last = None
    for _ in range(UPDATE_TRIES):
        entry = get(collection, key)
        current, version = (None, 0) if entry is None else (entry.value, entry.version)
        try:
            return set_if_version(collection, key, change(current), version)
        except Conflict as e:
            last = e
    raise last or Conflict(f"{collection}/{key} kept changing")


def list_keys(collection: str, after: Optional[str] = None, limit: int = 100) -> List[str]:
    """Keys of a collection in ascending order, after `after` (for paging), at
    most `limit` (the host caps it at 1000)."""
    return list(_host.call(_host.kv.list_keys, collection, after, limit))
