//! Deletes the sessions of `sessions/<id>` that expired more than a
//! retention ago, on a cron schedule.
//!
//! Shows: a `cron` trigger ([`Event::cron`]), paging through a collection
//! with [`kv::list_keys`], a variable read with [`config`], and staying
//! inside the invocation's budgets on a collection of any size.
//!
//! A session looks like `{"user":"ada","expires_at":1767225600000}`
//! (milliseconds since the Unix epoch). One that expired more than
//! `SESSION_RETENTION_SECS` seconds ago (an app variable; 0 when unset) is
//! deleted with [`kv::delete_if_version`], so a session refreshed between
//! the read and the delete survives. A value without `expires_at` is left
//! alone and logged.
//!
//! A tick looks at no more than [`SCAN_PER_TICK`] keys and deletes no more
//! than [`DELETE_PER_TICK`] (each delete is an event, and an invocation may
//! cause 100). Where it stopped is kept in `cleanup/sessions-cursor`, so
//! the next tick goes on from there and a sweep of a large collection spans
//! several ticks; at the end of the collection the cursor goes back to the
//! start. Ticks missed while no dispatcher ran need no catching up: the
//! next tick deletes whatever expired meanwhile.
//!
//! Register it to run every ten minutes:
//! `picloud-host trigger add-cron shop --script scheduled-cleanup --schedule "*/10 * * * *" --as alice`

use std::time::{SystemTime, UNIX_EPOCH};

use picloud_sdk::{Event, HostError, Result, bail, config, handler, kv, log};

/// Keys looked at per tick, at most.
pub const SCAN_PER_TICK: usize = 300;
/// Sessions deleted per tick, at most.
pub const DELETE_PER_TICK: usize = 90;
/// Keys asked for per page.
const PAGE: u32 = 100;
const COLLECTION: &str = "sessions";
const CURSOR: (&str, &str) = ("cleanup", "sessions-cursor");

#[handler]
fn cleanup(event: Event) -> Result<()> {
    let Some(tick) = event.cron() else {
        return Ok(()); // only a cron trigger's ticks are for us
    };
    let retention_ms = match config::get("SESSION_RETENTION_SECS")? {
        None => 0,
        Some(text) => match text.trim().parse::<u64>() {
            Ok(secs) => secs.saturating_mul(1000),
            // Retried: the variable may be fixed before the next attempt.
            Err(_) => bail!("SESSION_RETENTION_SECS is {text:?}, not a number of seconds"),
        },
    };
    let now_ms = now_ms();

    let mut after: Option<String> = kv::get_json(CURSOR.0, CURSOR.1)?;
    let (mut scanned, mut deleted) = (0, 0);
    let finished = loop {
        let page = kv::list_keys(COLLECTION, after.as_deref(), PAGE)?;
        let mut stopped = false;
        for key in &page {
            if scanned == SCAN_PER_TICK || deleted == DELETE_PER_TICK {
                stopped = true;
                break;
            }
            scanned += 1;
            after = Some(key.clone());
            let Some(entry) = kv::get(COLLECTION, key)? else {
                continue; // deleted since the listing
            };
            let Some(expires_at) = entry.value.get("expires_at").and_then(|v| v.as_u64()) else {
                log::warn!("{COLLECTION}/{key} has no expires_at: left alone");
                continue;
            };
            if expires_at.saturating_add(retention_ms) > now_ms {
                continue;
            }
            match kv::delete_if_version(COLLECTION, key, entry.version) {
                Ok(()) => {
                    deleted += 1;
                    log::info!("deleted {COLLECTION}/{key}, expired at {expires_at}");
                }
                // Refreshed (or deleted) since we read it: not ours to delete.
                Err(HostError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if stopped {
            break false;
        }
        if page.len() < PAGE as usize {
            break true; // the last page, read to its end
        }
    };

    if finished {
        kv::delete(CURSOR.0, CURSOR.1)?;
    } else {
        kv::set(CURSOR.0, CURSOR.1, &after)?;
    }
    log::info!(
        "tick {}: looked at {scanned} sessions, deleted {deleted}{}",
        tick.scheduled_at,
        if finished {
            "; sweep complete"
        } else {
            "; going on next tick"
        },
    );
    Ok(())
}

fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use picloud_sdk::testing::{TestHost, cron_tick, kv_set};
    use serde_json::json;

    use super::*;

    fn tick() -> Event {
        cron_tick("*/10 * * * *", "2025-01-31T03:00:00Z", 0)
    }

    #[test]
    fn deletes_only_what_expired_past_the_retention() {
        let host = TestHost::new();
        let now = now_ms();
        host.seed_kv(COLLECTION, "old", &json!({"user": "ada", "expires_at": 1}))
            .seed_kv(COLLECTION, "recent", &json!({"expires_at": now - 60_000}))
            .seed_kv(COLLECTION, "live", &json!({"expires_at": now + 3_600_000}))
            .seed_kv(COLLECTION, "odd", &json!({"user": "bo"}))
            .seed_var("SESSION_RETENTION_SECS", "3600");
        host.run(|| cleanup(tick())).unwrap();
        assert_eq!(host.kv(COLLECTION, "old"), None);
        for kept in ["recent", "live", "odd"] {
            assert!(host.kv(COLLECTION, kept).is_some(), "{kept}");
        }
        assert_eq!(
            host.kv(CURSOR.0, CURSOR.1),
            None,
            "a complete sweep keeps no cursor"
        );
        assert!(
            host.logs()
                .contains(&"warn: sessions/odd has no expires_at: left alone".to_owned())
        );
        assert!(
            host.logs()
                .last()
                .unwrap()
                .ends_with("looked at 4 sessions, deleted 1; sweep complete")
        );
    }

    #[test]
    fn a_large_collection_is_swept_over_several_ticks() {
        let host = TestHost::new();
        for i in 0..250 {
            host.seed_kv(COLLECTION, &format!("s-{i:03}"), &json!({"expires_at": 1}));
        }
        host.run(|| cleanup(tick())).unwrap();
        assert_eq!(
            host.writes().len(),
            DELETE_PER_TICK + 1,
            "90 deletes and the cursor"
        );
        assert_eq!(host.kv(CURSOR.0, CURSOR.1), Some(json!("s-089")));
        host.run(|| cleanup(tick())).unwrap();
        host.run(|| cleanup(tick())).unwrap();
        assert_eq!(host.kv(COLLECTION, "s-249"), None);
        assert_eq!(host.kv(CURSOR.0, CURSOR.1), None);
    }

    #[test]
    fn a_bad_retention_fails_the_tick_and_other_events_are_ignored() {
        let host = TestHost::new();
        host.seed_var("SESSION_RETENTION_SECS", "an hour");
        let e = host.run(|| cleanup(tick())).unwrap_err();
        assert!(e.message().contains("not a number of seconds"), "{e}");
        assert!(!e.is_permanent());
        host.run(|| cleanup(kv_set(COLLECTION, "x", json!({}))))
            .unwrap();
        assert!(host.writes().is_empty());
    }
}
