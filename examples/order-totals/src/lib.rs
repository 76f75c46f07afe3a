//! Keeps `order_totals/<key>` equal to the total of `orders/<key>`.
//!
//! Shows: a kv trigger, typed values (`KvEvent::value_as`), set and delete,
//! and rejecting bad input with an error (retried, then dead-lettered).
//!
//! Register it on the `orders` collection:
//! `picloud-host trigger add-kv shop --script order-totals --collection orders --as alice`
//!
//! An order looks like
//! `{"customer":"ada","items":[{"sku":"tea","qty":2,"price_cents":450}]}` and
//! its total like
//! `{"customer":"ada","total_cents":900,"items":1,"order_version":1}`.
//! Writing the total is idempotent, so a re-delivered event does no harm.

use picloud_sdk::{Event, KvOp, Result, bail, handler, kv, log};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Order {
    customer: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[allow(dead_code)] // part of a well-formed order, not of its total
    sku: String,
    qty: u64,
    price_cents: u64,
}

#[handler]
fn on_order(event: Event) -> Result<()> {
    let Some(change) = event.kv() else {
        return Ok(()); // not a kv event: nothing to total
    };
    if change.op == KvOp::Delete {
        kv::delete("order_totals", &change.key)?;
        log::info!("order {} deleted; total removed", change.key);
        return Ok(());
    }
    let Some(order) = change.value_as::<Order>()? else {
        bail!("invalid order {}: no value", change.key);
    };
    let total = order.items.iter().try_fold(0u64, |sum, i| {
        sum.checked_add(i.qty.checked_mul(i.price_cents)?)
    });
    let Some(total) = total else {
        bail!("invalid order {}: total overflows", change.key);
    };
    kv::set(
        "order_totals",
        &change.key,
        &json!({
            "customer": order.customer,
            "total_cents": total,
            "items": order.items.len(),
            "order_version": change.version,
        }),
    )?;
    log::info!("order {} totals {total} cents", change.key);
    Ok(())
}
