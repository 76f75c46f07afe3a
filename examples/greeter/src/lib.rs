//! Answers a synchronous invocation with a reply body.
//!
//! `picloud-host invoke shop greeter --payload '{"name":"Ada"}' --as alice`
//! prints `{"event":"...","greeting":"hello, Ada"}`.

use picloud_sdk::{Event, Result, bail, handler};
use serde_json::{Value, json};

#[handler]
fn greet(event: Event) -> Result<Value> {
    let payload: Value = event.json()?;
    let Some(name) = payload.get("name").and_then(Value::as_str) else {
        bail!("missing field: name");
    };
    Ok(json!({"greeting": format!("hello, {name}"), "event": event.id()}))
}
