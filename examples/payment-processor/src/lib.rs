//! Charges payments written to `payments/<key>` and writes `receipts/<key>`.
//!
//! It fails on some inputs, to show retries and dead letters: a card starting
//! with `decline` fails with `payment declined: ...`, and an amount that is
//! not positive fails with `invalid payment: ...`. After the host's retries
//! those events become dead letters (see the `dead-letter-triage` example).
//! Register it with
//! `picloud-host trigger add-kv shop --script payment-processor --collection payments --ops set --as alice`.

use picloud_sdk::{Event, Result, bail, handler, kv};
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
    kv::set(
        "receipts",
        &change.key,
        &json!({"amount_cents": payment.amount_cents, "event": event.id()}),
    )?;
    Ok(())
}
