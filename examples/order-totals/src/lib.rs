//! Keeps `order_totals/<key>` equal to the total of `orders/<key>`.
//!
//! Register it on the `orders` collection:
//! `picloud-host trigger add-kv shop --script order-totals --collection orders --as alice`
//!
//! An order looks like `{"customer":"ada","items":[{"sku":"tea","qty":2,"price_cents":450}]}`.
//! A malformed order fails the attempt (and, after the retries, becomes a
//! dead letter) instead of writing a wrong total.

use picloud_sdk::{Event, KvOp, Result, handler, kv, log};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Order {
    customer: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[allow(dead_code)]
    sku: String,
    qty: u64,
    price_cents: u64,
}

#[handler]
fn on_order(event: Event) -> Result<()> {
    let Some(change) = event.kv() else {
        return Ok(());
    };
    if change.op == KvOp::Delete {
        kv::delete("order_totals", &change.key)?;
        log::info(&format!("order {} deleted; total removed", change.key));
        return Ok(());
    }
    let Some(order) = change.value_as::<Order>()? else {
        return Ok(());
    };
    let total: u64 = order.items.iter().map(|i| i.qty * i.price_cents).sum();
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
    log::info(&format!("order {} totals {total} cents", change.key));
    Ok(())
}
