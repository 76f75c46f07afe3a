//! The guest components the tests run, built from this repository by
//! `tests/build.rs` for wasm32-wasip2, and the WAT fixtures for the cases
//! Rust cannot express (a core module, an empty component, a foreign import).

use std::path::Path;

/// examples/order-totals
pub const ORDER_TOTALS: &str = env!("PICLOUD_GUEST_ORDER_TOTALS");
/// examples/audit-log
pub const AUDIT_LOG: &str = env!("PICLOUD_GUEST_AUDIT_LOG");
/// examples/payment-processor
pub const PAYMENT_PROCESSOR: &str = env!("PICLOUD_GUEST_PAYMENT_PROCESSOR");
/// examples/dead-letter-triage
pub const DEAD_LETTER_TRIAGE: &str = env!("PICLOUD_GUEST_DEAD_LETTER_TRIAGE");
/// examples/greeter
pub const GREETER: &str = env!("PICLOUD_GUEST_GREETER");
/// tests/fixtures/noop
pub const NOOP: &str = env!("PICLOUD_GUEST_NOOP");
/// tests/fixtures/hostile
pub const HOSTILE: &str = env!("PICLOUD_GUEST_HOSTILE");
/// tests/fixtures/kv-probe
pub const KV_PROBE: &str = env!("PICLOUD_GUEST_KV_PROBE");
/// tests/fixtures/depth-bomb
pub const DEPTH_BOMB: &str = env!("PICLOUD_GUEST_DEPTH_BOMB");
/// tests/fixtures/recorder
pub const RECORDER: &str = env!("PICLOUD_GUEST_RECORDER");
/// tests/fixtures/always-fails
pub const ALWAYS_FAILS: &str = env!("PICLOUD_GUEST_ALWAYS_FAILS");

/// Every example, by package name.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("order-totals", ORDER_TOTALS),
    ("audit-log", AUDIT_LOG),
    ("payment-processor", PAYMENT_PROCESSOR),
    ("dead-letter-triage", DEAD_LETTER_TRIAGE),
    ("greeter", GREETER),
];

/// The bytes of a built component.
pub fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// `tests/wat/<name>.wat`, assembled.
pub fn wat(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("wat")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("assembling {}: {e}", path.display()))
}
