"""The README tutorial's greeter, in Python.

Greets whoever is written to the `greetings` collection, under
`greeted/<key>`, and answers synchronous invocations with a JSON reply.

    sdk-python/picloud-py build examples/python/greeter/app.py -o greeter.wasm
    picloud-host script deploy shop hello-py greeter.wasm
    picloud-host trigger add-kv shop --script hello-py --collection greetings --as alice
    picloud-host kv set shop greetings ada '{"name":"Ada"}' --as alice
    picloud-host invoke shop hello-py --payload '{"name":"Bo"}' --as alice
"""

from picloud import Event, handler, kv, log


@handler
def hello(event: Event):
    # A KV write: greet the name in the new value, under `greeted/<key>`.
    change = event.kv()
    if change:
        value = change.value if isinstance(change.value, dict) else {}
        name = value.get("name", "stranger")
        kv.set("greeted", change.key, {"message": f"hello, {name}"})
        log.info(f"greeted {name} under greeted/{change.key}")
        return None
    # A synchronous invocation: the returned value is the reply body.
    name = event.json().get("name", "stranger")
    log.info(f"answered {name}")
    return {"message": f"hello, {name}"}
