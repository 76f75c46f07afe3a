//! Answers a synchronous invocation with a JSON reply body.
//!
//! Shows: the reply of a synchronous invocation (source `http`, op
//! `invoke`): what the handler returns is the body the caller receives, and
//! an error goes back to the caller instead of being retried. No trigger is
//! needed; call it directly:
//!
//! `picloud-host invoke shop greeter --payload '{"name":"Ada"}' --as alice`
//! prints `{"event":"<event id>","greeting":"hello, Ada"}`.

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
