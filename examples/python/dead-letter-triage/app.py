"""Settles dead letters by looking at their error: the Rust
`dead-letter-triage` example, in Python.

- an event whose value carries `"poison": true` is given up on at once: the
  handler resolves it `HANDLER_FAILED` itself and fails;
- a declined payment goes to `manual_review/<dead letter id>` and is
  resolved `HANDLED_BY_SCRIPT`;
- an invalid payment is resolved `IGNORED`;
- anything else fails, so the host retries and, after the last attempt,
  resolves it `handler_failed`. A failing dead-letter handler never creates
  another dead letter: that is the recursion stop.

Delivery is at-least-once: if the dead letter is already resolved (an
earlier attempt got that far), there is nothing left to do.

    sdk-python/picloud-py build examples/python/dead-letter-triage/app.py -o triage.wasm
    picloud-host script deploy shop triage-py triage.wasm
    picloud-host trigger add-dead-letter shop --script triage-py --source kv --as alice
"""

from picloud import Conflict, Event, Fail, Resolution, dead_letters, handler, kv, log


@handler
def triage(event: Event):
    dead = event.dead_letter()
    if dead is None:
        return None
    dl_id = dead.dead_letter_id
    # For kv events the interesting part is the written value.
    change = dead.kv()
    value = change.value if change else dead.payload
    if isinstance(value, dict) and value.get("poison") is True:
        if settle(dl_id, Resolution.HANDLER_FAILED):
            raise Fail(f"poison event in dead letter {dl_id}: giving up")
        return None
    if "declined" in dead.last_error:
        kv.set("manual_review", dl_id, {"error": dead.last_error, "source": dead.source, "payload": dead.payload})
        settle(dl_id, Resolution.HANDLED_BY_SCRIPT)
        log.info(f"dead letter {dl_id} queued for manual review")
        return None
    if "invalid" in dead.last_error:
        settle(dl_id, Resolution.IGNORED)
        log.info(f"dead letter {dl_id} ignored: {dead.last_error}")
        return None
    raise Fail(f"no rule for dead letter {dl_id}: {dead.last_error}")


def settle(dl_id: str, resolution: Resolution) -> bool:
    """Resolve the dead letter; False if an earlier delivery (or a person)
    already did."""
    try:
        dead_letters.resolve(dl_id, resolution)
        return True
    except Conflict as e:
        log.info(f"dead letter {dl_id} already settled: {e}")
        return False
