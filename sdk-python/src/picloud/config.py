"""The app's variables and secrets.

An operator sets them (`picloud-host app var set shop WEBHOOK_URL https://...`,
`picloud-host app secret set shop WEBHOOK_TOKEN -`), and every script of the
app reads them by name. A variable needs read access; a secret's value needs
write access, of the principal the script runs as and of its deployer. Never
log a secret or return it in a reply.

    from picloud import config
    url = config.require("WEBHOOK_URL")
    token = config.get("WEBHOOK_TOKEN")   # None when unset
"""

from typing import Optional

from . import _host
from .errors import Fail, HostError


def get(name: str) -> Optional[str]:
    """The value of variable or secret `name`, or None when the app has none
    by that name."""
    try:
        return _host.store.get(name)
    except _host.Err as e:
        raise HostError(f"config: {getattr(e.value, 'value', e.value)}") from None


def require(name: str) -> str:
    """The value of `name`; fails the attempt, naming the command that sets it,
    when the app has none."""
    value = get(name)
    if value is None:
        raise Fail(
            f"the app has no variable {name}: set it with `picloud-host app var set APP {name} VALUE`"
        )
    return value
