//! Settles dead letters by looking at their error.
//!
//! Shows: a `dead_letter` trigger, `dead_letters::resolve`, and the
//! recursion stop.
//!
//! - an event whose value carries `"poison": true` is given up on at once:
//!   the handler resolves it `handler_failed` itself and fails;
//! - a declined payment goes to `manual_review/<dead letter id>` and is
//!   resolved `handled_by_script`;
//! - an invalid payment is resolved `ignored`;
//! - anything else fails, so the host retries and, after the last attempt,
//!   resolves it `handler_failed`. A failing dead-letter handler never
//!   creates another dead letter: that is the recursion stop.
//!
//! Delivery is at-least-once: if the dead letter is already resolved (an
//! earlier attempt got that far), there is nothing left to do.
//!
//! Register it for dead letters of kv events:
//! `picloud-host trigger add-dead-letter shop --script dead-letter-triage --source kv --as alice`

use picloud_sdk::dead_letters::{self, Resolution};
use picloud_sdk::{Event, HostError, Result, bail, handler, kv, log};
use serde_json::{Value, json};

#[handler]
fn triage(event: Event) -> Result<()> {
    let Some(dead) = event.dead_letter() else {
        return Ok(());
    };
    let id = &dead.dead_letter_id;
    // For kv events the interesting part is the written value.
    let value = dead.payload.get("value").unwrap_or(&dead.payload);
    if value.get("poison") == Some(&Value::Bool(true)) {
        if !settle(id, Resolution::HandlerFailed)? {
            return Ok(());
        }
        bail!("poison event in dead letter {id}: giving up");
    }
    if dead.last_error.contains("declined") {
        kv::set(
            "manual_review",
            id,
            &json!({"error": dead.last_error, "source": dead.source, "payload": dead.payload}),
        )?;
        settle(id, Resolution::HandledByScript)?;
        log::info!("dead letter {id} queued for manual review");
        return Ok(());
    }
    if dead.last_error.contains("invalid") {
        settle(id, Resolution::Ignored)?;
        log::info!("dead letter {id} ignored: {}", dead.last_error);
        return Ok(());
    }
    bail!("no rule for dead letter {id}: {}", dead.last_error)
}

/// Resolve the dead letter; `false` if an earlier delivery (or a person)
/// already did.
fn settle(id: &str, resolution: Resolution) -> Result<bool> {
    match dead_letters::resolve(id, resolution) {
        Ok(()) => Ok(true),
        Err(HostError::Conflict(why)) => {
            log::info!("dead letter {id} already settled: {why}");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
