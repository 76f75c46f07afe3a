"""Log lines kept in the invocation's run record.

Each line is stored with its level in the run (`picloud-host runs show`,
`picloud-host logs APP`), beside whatever the script prints to stdout and
stderr. The log of one invocation is bounded (`PICLOUD_SANDBOX_LOG_BYTES`,
64 KiB by default); past it, lines are dropped and the invocation fails with
`log limit exceeded`.

    from picloud import log
    log.info(f"greeted {name}")
"""

from . import _host


def _line(level, message: str) -> None:
    _host.log.log(level, str(message))


def trace(message: str) -> None:
    """A `trace` line."""
    _line(_host.log.Level.TRACE, message)


def debug(message: str) -> None:
    """A `debug` line."""
    _line(_host.log.Level.DEBUG, message)


def info(message: str) -> None:
    """An `info` line."""
    _line(_host.log.Level.INFO, message)


def warn(message: str) -> None:
    """A `warn` line."""
    _line(_host.log.Level.WARN, message)


def error(message: str) -> None:
    """An `error` line."""
    _line(_host.log.Level.ERROR, message)
