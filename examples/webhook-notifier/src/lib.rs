//! Tells someone about every dead letter: posts a JSON summary of it to a
//! webhook (Slack, a ticket system, your own service), then resolves it
//! `handled_by_script`.
//!
//! Shows: outbound HTTP with `wstd` over `wasi:http`, app variables and
//! secrets with `config`, and the recursion stop.
//!
//! - the webhook's URL is the app variable `WEBHOOK_URL`; an optional
//!   secret `WEBHOOK_TOKEN` is sent as `Authorization: Bearer ...`;
//! - a 2xx answer resolves the dead letter `handled_by_script`;
//! - any other answer, or no answer, fails the attempt: the host retries
//!   it and, after the last attempt, resolves the dead letter
//!   `handler_failed` (a failing dead-letter handler never makes another
//!   dead letter).
//!
//! Set it up (the host must be allowed to reach the webhook):
//!
//! ```text
//! picloud-host app var set shop WEBHOOK_URL https://hooks.example.com/services/T0/B0
//! printf '%s' "$TOKEN" | picloud-host app secret set shop WEBHOOK_TOKEN -
//! picloud-host app allow-host shop https://hooks.example.com
//! picloud-host script deploy shop webhook-notifier webhook_notifier.wasm --as alice
//! picloud-host trigger add-dead-letter shop --script webhook-notifier --source kv --as alice
//! ```

use picloud_sdk::dead_letters::{self, Resolution};
use picloud_sdk::{Event, HostError, Result, bail, config, handler, log};
use serde_json::json;
use wstd::http::{Client, Request};

#[handler]
fn notify(event: Event) -> Result<()> {
    let Some(dead) = event.dead_letter() else {
        return Ok(());
    };
    let url = config::require("WEBHOOK_URL")?;
    let token = config::get("WEBHOOK_TOKEN")?;
    let summary = json!({
        "text": format!(
            "dead letter {}: {} {} failed {} times: {}",
            dead.dead_letter_id, dead.source, dead.op, dead.attempt_count, dead.last_error
        ),
        "dead_letter_id": dead.dead_letter_id,
        "source": dead.source,
        "op": dead.op,
        "trigger_id": dead.trigger_id,
        "attempt_count": dead.attempt_count,
        "last_error": dead.last_error,
        "payload": dead.payload,
    });
    let status = wstd::runtime::block_on(post(&url, token.as_deref(), &summary.to_string()))?;
    if !(200..300).contains(&status) {
        bail!("the webhook answered {status}: the dead letter stays unresolved");
    }
    match dead_letters::resolve(&dead.dead_letter_id, Resolution::HandledByScript) {
        Ok(()) => log::info!("dead letter {} sent to the webhook", dead.dead_letter_id),
        // An earlier delivery got this far (delivery is at-least-once).
        Err(HostError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// POST `body` as JSON to `url`; the answer's status.
async fn post(url: &str, token: Option<&str>, body: &str) -> Result<u16> {
    let mut request = Request::post(url).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(body.to_owned())
        .map_err(|e| picloud_sdk::Error::msg(format!("bad webhook request: {e}")))?;
    let response = Client::new()
        .send(request)
        .await
        .map_err(|e| picloud_sdk::Error::msg(format!("the webhook did not answer: {e:?}")))?;
    Ok(response.status().as_u16())
}
