"""A Python script that does what its payload says, for the tests: fail, or
misbehave the ways a hostile script does.

`{"do": ...}` in the KV value (kv events) or the invoke payload:
- "fail": raise Fail("payment declined: ...") (retried, then dead-lettered);
- "raise": an uncaught ZeroDivisionError (its traceback goes to the log);
- "loop": loop forever (stopped by the timeout);
- "bomb": allocate until the memory limit stops it;
- "deny": write KV (refused for a viewer: PermissionDenied propagates);
- anything else: succeed, echoing the payload.
"""

from picloud import Event, Fail, handler, kv, log


@handler
def hostile(event: Event):
    change = event.kv()
    order = change.value if change else event.json()
    what = order.get("do") if isinstance(order, dict) else None
    if what == "fail":
        raise Fail(f"payment declined: {order.get('id', '?')}")
    if what == "raise":
        return 1 // 0
    if what == "loop":
        while True:
            pass
    if what == "bomb":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
    if what == "deny":
        kv.set("audit", "x", {"written": True})
    log.info(f"ok: {what}")
    return {"echo": order}
