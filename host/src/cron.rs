//! Cron schedules, and the ticks they become.
//!
//! Rule: a schedule is parsed by `croner` (five fields, or six with
//! seconds first) and read in its trigger's IANA time zone (`chrono-tz`);
//! nothing here parses cron text by hand. Every dispatcher looks for due
//! ticks each round; a tick becomes one `cron`/`tick` invocation row of its
//! trigger only if the tick's (trigger, scheduled time) row could be
//! inserted, in the same transaction, so however many dispatchers race,
//! each tick runs once, with no leader to elect.
//!
//! A tick is *on time* while it is due no longer than the grace period
//! ([`GRACE`]) ago; older due ticks were *missed* (no dispatcher ran). On-time
//! ticks always run. Missed ones follow the trigger's [`CatchUp`]: `last`
//! (the default) runs the newest missed tick once, its payload counting the
//! others as `missed`; `skip` runs none of them.
//!
//! Daylight saving time follows croner: a wall-clock time that falls in a
//! spring-forward gap (02:30 on the night clocks jump from 02:00 to 03:00)
//! runs at the first valid time after it (03:00); a time repeated by a
//! fall-back overlap runs once, at its first occurrence. Schedules that
//! step through every hour or minute (`0 * * * * *`) keep stepping in real
//! time across both changes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{InvalidValue, Timestamp};

/// How long after its time a tick still counts as on time.
pub const GRACE: Duration = Duration::from_secs(2);

/// Most missed ticks looked at once (a per-second schedule left alone for
/// a day): older ones count as missed without being enumerated.
const MAX_SCAN: usize = 10_000;

/// What to do about ticks missed while no dispatcher ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub enum CatchUp {
    /// Run the newest missed tick once.
    #[default]
    Last,
    /// Run none of them.
    Skip,
}

impl CatchUp {
    /// Its name in the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Last => "last",
            CatchUp::Skip => "skip",
        }
    }
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CatchUp {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "last" => Ok(CatchUp::Last),
            "skip" => Ok(CatchUp::Skip),
            other => Err(InvalidValue::new("catch-up policy", other, "last, skip")),
        }
    }
}

/// A parsed schedule in its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parse `expression` read in `timezone`; the error is one line naming
    /// the fix.
    pub fn parse(expression: &str, timezone: &str) -> Result<Schedule, String> {
        let cron = Cron::from_str(expression.trim()).map_err(|e| {
            format!(
                "invalid cron schedule '{expression}': {e}; give five fields \
                 (minute hour day month weekday) or six with seconds first, \
                 e.g. \"0 */5 * * * *\""
            )
        })?;
        let tz: Tz = timezone.trim().parse().map_err(|_| {
            format!(
                "unknown time zone '{timezone}': give an IANA name such as Europe/Berlin or UTC"
            )
        })?;
        let schedule = Schedule { cron, tz };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(format!(
                "cron schedule '{expression}' never fires: give one with a future time"
            ));
        }
        Ok(schedule)
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The ticks due from `from` (inclusive, the trigger's next fire time)
    /// up to `now`, as the trigger's `catch_up` runs them, and the next
    /// fire time after `now`.
    pub fn due(&self, from: DateTime<Utc>, now: DateTime<Utc>, catch_up: CatchUp) -> Due {
        let mut ticks = Vec::new();
        let mut at = Some(from);
        while let Some(t) = at.filter(|t| *t <= now) {
            ticks.push(t);
            // Far behind: jump to the ticks just before the grace period;
            // the ones jumped over are not counted.
            let after = match ticks.len() == MAX_SCAN {
                true => t.max(now - grace() - chrono::TimeDelta::seconds(1)),
                false => t,
            };
            at = self.next_after(after);
        }
        let next = at.or_else(|| self.next_after(now));
        let on_time_from = now - grace();
        let (missed, on_time): (Vec<_>, Vec<_>) =
            ticks.into_iter().partition(|t| *t < on_time_from);
        let mut run: Vec<Tick> = Vec::new();
        if let (CatchUp::Last, Some(last)) = (catch_up, missed.last()) {
            run.push(Tick {
                scheduled_at: Timestamp::from_datetime(*last),
                missed: missed.len() as u64 - 1,
            });
        }
        run.extend(on_time.into_iter().map(|t| Tick {
            scheduled_at: Timestamp::from_datetime(t),
            missed: 0,
        }));
        Due {
            ticks: run,
            next: next.map(Timestamp::from_datetime),
        }
    }
}

fn grace() -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(GRACE).expect("a small duration")
}

/// What one look at a schedule found.
#[derive(Clone, Debug, PartialEq)]
pub struct Due {
    /// The ticks to run now.
    pub ticks: Vec<Tick>,
    /// The next fire time after now (`None`: the schedule never fires again).
    pub next: Option<Timestamp>,
}

/// One tick to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    /// When it was scheduled.
    pub scheduled_at: Timestamp,
    /// How many missed ticks before it were not run (at least: past
    /// 10,000 of them the count stops).
    pub missed: u64,
}

impl Tick {
    /// The payload of its `cron`/`tick` event.
    pub fn payload(&self, schedule: &str, timezone: &str) -> Value {
        json!({
            "schedule": schedule,
            "timezone": timezone,
            "scheduled_at": self.scheduled_at.0.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "missed": self.missed,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn utc(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, h, m, s).unwrap()
    }

    #[test]
    fn bad_schedules_and_zones_are_named() {
        let e = Schedule::parse("every minute", "UTC").unwrap_err();
        assert!(e.starts_with("invalid cron schedule 'every minute'"), "{e}");
        let e = Schedule::parse("0 * * * * *", "Mars/Olympus").unwrap_err();
        assert!(e.starts_with("unknown time zone 'Mars/Olympus'"), "{e}");
        assert!(Schedule::parse("*/5 * * * *", "Europe/Berlin").is_ok());
    }

    #[test]
    fn on_time_ticks_all_run() {
        let s = Schedule::parse("* * * * * *", "UTC").unwrap();
        let due = s.due(utc(10, 0, 0), utc(10, 0, 1), CatchUp::Skip);
        let at: Vec<_> = due.ticks.iter().map(|t| t.scheduled_at.0).collect();
        assert_eq!(at, [utc(10, 0, 0), utc(10, 0, 1)]);
        assert_eq!(due.next.unwrap().0, utc(10, 0, 2));
    }

    #[test]
    fn missed_ticks_follow_the_catch_up_policy() {
        let s = Schedule::parse("* * * * * *", "UTC").unwrap();
        // Due since 10:00:00; now 10:00:10: 10:00:00..07 are missed.
        let last = s.due(utc(10, 0, 0), utc(10, 0, 10), CatchUp::Last);
        assert_eq!(last.ticks[0].scheduled_at.0, utc(10, 0, 7));
        assert_eq!(last.ticks[0].missed, 7);
        assert_eq!(last.ticks.len(), 4, "the newest missed and three on time");
        let skip = s.due(utc(10, 0, 0), utc(10, 0, 10), CatchUp::Skip);
        let at: Vec<_> = skip.ticks.iter().map(|t| t.scheduled_at.0).collect();
        assert_eq!(at, [utc(10, 0, 8), utc(10, 0, 9), utc(10, 0, 10)]);
    }

    #[test]
    fn a_day_behind_is_not_enumerated_tick_by_tick() {
        let s = Schedule::parse("* * * * * *", "UTC").unwrap();
        let due = s.due(utc(0, 0, 0), utc(23, 0, 0), CatchUp::Last);
        assert!(due.ticks[0].missed >= MAX_SCAN as u64 - 1);
        assert_eq!(due.next.unwrap().0, utc(23, 0, 1));
    }

    #[test]
    fn daylight_saving_changes_are_handled_as_documented() {
        let s = Schedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let before = Utc.with_ymd_and_hms(2026, 3, 28, 23, 0, 0).unwrap();
        let gap = s.next_after(before).unwrap();
        assert_eq!(
            gap,
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap(),
            "03:00 CEST"
        );
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let before = Utc.with_ymd_and_hms(2026, 10, 24, 23, 0, 0).unwrap();
        let first = s.next_after(before).unwrap();
        assert_eq!(
            first,
            Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap(),
            "02:30 CEST"
        );
        let then = s.next_after(first).unwrap();
        assert_eq!(
            then,
            Utc.with_ymd_and_hms(2026, 10, 26, 1, 30, 0).unwrap(),
            "the next day, not 02:30 CET"
        );
        // An hourly schedule keeps real-time steps across the fall-back.
        let hourly = Schedule::parse("0 0 * * * *", "Europe/Berlin").unwrap();
        let a = hourly
            .next_after(Utc.with_ymd_and_hms(2026, 10, 24, 23, 30, 0).unwrap())
            .unwrap();
        let b = hourly.next_after(a).unwrap();
        let c = hourly.next_after(b).unwrap();
        assert_eq!(
            (b - a, c - b),
            (chrono::TimeDelta::hours(1), chrono::TimeDelta::hours(1))
        );
    }
}
