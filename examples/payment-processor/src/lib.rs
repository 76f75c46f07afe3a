//! Charges payments written to `payments/<key>` and writes `receipts/<key>`.
//!
//! Shows: a handler that fails on some inputs, and what the host does about
//! it (retries with backoff, then a dead letter; see `dead-letter-triage`).
//! A card starting with `decline` fails with `payment declined: ...`; an
//! amount that is not positive fails with `invalid payment: amount must be
//! positive`.
//!
//! Register it for writes only:
//! `picloud-host trigger add-kv shop --script payment-processor --collection payments --ops set --as alice`
//!
//! A payment looks like `{"amount_cents":1250,"card":"4242"}`.

use picloud_sdk::{Event, Result, bail, handler, kv, log};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Payment {
    amount_cents: i64,
    card: String,
}

#[handler]
fn charge(event: Event) -> Result<()> {
    let Some(change) = event.kv() else {
        return Ok(());
    };
    let Some(payment) = change.value_as::<Payment>()? else {
        return Ok(()); // a deleted payment needs no charge
    };
    if payment.amount_cents <= 0 {
        bail!(
            "invalid payment: amount must be positive (got {})",
            payment.amount_cents
        );
    }
    if payment.card.starts_with("decline") {
        bail!(
            "payment declined: card {} refused {} cents",
            payment.card,
            payment.amount_cents
        );
    }
    if payment.card.starts_with("expired") {
        bail!("card expired: {} cannot be charged", payment.card);
    }
    // Keyed by the payment, so a re-delivered event writes the same receipt.
    kv::set(
        "receipts",
        &change.key,
        &json!({"amount_cents": payment.amount_cents, "event": event.id()}),
    )?;
    log::info!(
        "charged {} cents for payment {}",
        payment.amount_cents,
        change.key
    );
    Ok(())
}
