//! Takes each order's quantity from `stock/<item>`, or records it in
//! `backorders/<item>` when the stock is short: correctly while many
//! handlers run at once.
//!
//! Shows: the lost-update trap and its two cures (see the SDK's `kv` docs,
//! "Concurrent handlers").
//!
//! Handlers run concurrently and in no order. The obvious handler,
//! `let n = kv::get(..)?; kv::set(.., n - qty)?`, loses updates: two orders
//! read the same stock and both write `n - 1`. Thirty orders against a
//! stock of 10 end with the stock at 8 or 9 and no backorders. This
//! script uses, per order:
//!
//! - `"method": "update"` (the default): [`kv::update`] reads the stock and
//!   writes it back only if nobody wrote it in between, reading again when
//!   somebody did (set-if-version);
//! - `"method": "increment"`: [`kv::increment`] takes the quantity
//!   atomically, and gives it back when that took the stock below zero;
//! - `"method": "plain"`: the obvious get and set, made correct by the
//!   trigger instead of the script: register it with `--ordered` and write
//!   every order of an item to one key (`orders/<item>`, each write an
//!   event). An ordered trigger runs one key's events one at a time, in
//!   write order, so no two handlers read the same stock. Ordering is per
//!   key: orders under different keys still run at once, and would lose
//!   updates of the shared stock.
//!
//! Register it on the `orders` collection:
//! `picloud-host trigger add-kv shop --script inventory --collection orders --as alice`
//!
//! An order looks like `{"item":"widget","qty":1}`. Either way the stock ends
//! at exactly 0 and every unit that did not fit is a backorder.

use picloud_sdk::{Event, Result, bail, handler, kv, log};
use serde::Deserialize;

#[derive(Deserialize)]
struct Order {
    item: String,
    qty: i64,
    #[serde(default)]
    method: Method,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Method {
    #[default]
    Update,
    Increment,
    Plain,
}

#[handler]
fn on_order(event: Event) -> Result<()> {
    let Some(change) = event.kv() else {
        return Ok(());
    };
    let Some(order) = change.value_as::<Order>()? else {
        return Ok(()); // a deleted order: another script's business
    };
    if order.qty <= 0 {
        bail!(
            "order {}: qty must be positive, got {}",
            change.key,
            order.qty
        );
    }
    let short = match order.method {
        Method::Update => take_with_update(&order)?,
        Method::Increment => take_with_increment(&order)?,
        Method::Plain => take_plainly(&order)?,
    };
    if short > 0 {
        kv::increment("backorders", &order.item, short)?;
        log::info!(
            "order {}: {short} of {} backordered",
            change.key,
            order.item
        );
    }
    Ok(())
}

/// Take what the stock has, by a conditional write retried on conflict.
/// How many units were short.
fn take_with_update(order: &Order) -> Result<i64> {
    let mut short = 0;
    kv::update("stock", &order.item, |left: Option<i64>| {
        let left = left.unwrap_or(0);
        let taken = order.qty.min(left.max(0));
        short = order.qty - taken; // the last run of the closure is the one written
        left - taken
    })?;
    Ok(short)
}

/// Take what the stock has with a plain read and write: right only when
/// no other handler touches the stock meanwhile (an ordered trigger, one
/// key per item). How many units were short.
fn take_plainly(order: &Order) -> Result<i64> {
    let left: i64 = kv::get_json("stock", &order.item)?.unwrap_or(0);
    let taken = order.qty.min(left.max(0));
    kv::set("stock", &order.item, &(left - taken))?;
    Ok(order.qty - taken)
}

/// Take the whole quantity atomically and give back what went below zero.
/// How many units were short.
fn take_with_increment(order: &Order) -> Result<i64> {
    let left = kv::increment("stock", &order.item, -order.qty)?;
    if left >= 0 {
        return Ok(0);
    }
    let short = order.qty.min(-left);
    kv::increment("stock", &order.item, short)?;
    Ok(short)
}

#[cfg(test)]
mod tests {
    use picloud_sdk::HostError;
    use picloud_sdk::testing::{TestHost, kv_delete, kv_set};
    use serde_json::{Value, json};

    use super::on_order;

    fn order(method: &str, qty: i64) -> picloud_sdk::Event {
        kv_set(
            "orders",
            "o-1",
            json!({"item": "widget", "qty": qty, "method": method}),
        )
    }

    #[test]
    fn takes_what_the_stock_has_and_backorders_the_rest() {
        for method in ["update", "increment", "plain"] {
            let host = TestHost::new();
            host.seed_kv("stock", "widget", &2);
            host.run(|| on_order(order(method, 3))).unwrap();
            assert_eq!(host.kv("stock", "widget"), Some(json!(0)), "{method}");
            assert_eq!(host.kv("backorders", "widget"), Some(json!(1)), "{method}");
            assert_eq!(
                host.logs(),
                ["info: order o-1: 1 of widget backordered"],
                "{method}"
            );
        }
    }

    #[test]
    fn an_order_that_fits_backorders_nothing() {
        let host = TestHost::new();
        host.seed_kv("stock", "widget", &5);
        host.run(|| on_order(order("update", 3))).unwrap();
        assert_eq!(host.kv("stock", "widget"), Some(json!(2)));
        assert_eq!(host.kv("backorders", "widget"), None);
        assert_eq!(host.writes().len(), 1, "one conditional write");
    }

    #[test]
    fn a_lost_race_is_read_again_and_retried() {
        let host = TestHost::new();
        host.seed_kv("stock", "widget", &1);
        // Another handler wrote the stock between this one's read and write.
        host.fail_next(
            "kv.set-if-version",
            HostError::Conflict("stock/widget moved".into()),
        );
        host.run(|| on_order(order("update", 1))).unwrap();
        assert_eq!(host.kv("stock", "widget"), Some(json!(0)));
        assert_eq!(
            host.version("stock", "widget"),
            2,
            "written once, on the second try"
        );
    }

    #[test]
    fn storage_trouble_fails_the_attempt_for_the_host_to_retry() {
        let host = TestHost::new();
        host.seed_kv("stock", "widget", &1);
        host.fail_next("kv.increment", HostError::Unavailable("down".into()));
        let e = host.run(|| on_order(order("increment", 1))).unwrap_err();
        assert_eq!(e.host_error(), Some(&HostError::Unavailable("down".into())));
        assert_eq!(host.kv("stock", "widget"), Some(json!(1)), "nothing taken");
    }

    #[test]
    fn bad_orders_fail_and_deleted_ones_are_ignored() {
        let host = TestHost::new();
        let e = host.run(|| on_order(order("update", 0))).unwrap_err();
        assert_eq!(e.message(), "order o-1: qty must be positive, got 0");
        let e = host
            .run(|| on_order(kv_set("orders", "o-2", json!({"item": "widget"}))))
            .unwrap_err();
        assert!(
            e.message()
                .starts_with("invalid orders/o-2: missing field `qty`"),
            "{e}"
        );
        host.run(|| on_order(kv_delete("orders", "o-1"))).unwrap();
        assert_eq!(host.writes(), []);
        assert_eq!(host.kv("stock", "widget"), None::<Value>);
    }
}
