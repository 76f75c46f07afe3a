//! Settles dead letters by looking at their error.
//!
//! - a declined payment goes to `manual_review/<dead letter id>` and is
//!   resolved `handled_by_script`;
//! - an invalid payment is resolved `ignored`;
//! - an event whose value carries `"poison": true` is given up on at once:
//!   the handler resolves it `handler_failed` itself and fails;
//! - anything else fails, so the host retries and, after the last attempt,
//!   resolves it `handler_failed` (the recursion stop: a failing dead-letter
//!   handler never creates another dead letter).
//!
//! Register it with
//! `picloud-host trigger add-dead-letter shop --script dead-letter-triage --source kv --as alice`.

use picloud_sdk::dead_letters::{self, Resolution};
use picloud_sdk::{Event, Result, bail, handler, kv, log};
use serde_json::{Value, json};

#[handler]
fn triage(event: Event) -> Result<()> {
    let Some(dead) = event.dead_letter() else {
        return Ok(());
    };
    // For kv events the interesting part is the written value.
    let value = dead.payload.get("value").unwrap_or(&dead.payload);
    if value.get("poison") == Some(&Value::Bool(true)) {
        dead_letters::resolve(&dead.dead_letter_id, Resolution::HandlerFailed)?;
        bail!("poison event {}: giving up", dead.dead_letter_id);
    }
    if dead.last_error.contains("declined") {
        kv::set(
            "manual_review",
            &dead.dead_letter_id,
            &json!({"error": dead.last_error, "payload": dead.payload}),
        )?;
        dead_letters::resolve(&dead.dead_letter_id, Resolution::HandledByScript)?;
        log::info(&format!("queued {} for manual review", dead.dead_letter_id));
        return Ok(());
    }
    if dead.last_error.contains("invalid") {
        dead_letters::resolve(&dead.dead_letter_id, Resolution::Ignored)?;
        return Ok(());
    }
    bail!(
        "no rule for dead letter {}: {}",
        dead.dead_letter_id,
        dead.last_error
    )
}
