//! Retry policy per trigger: how many attempts, how long between them, and
//! how old an event may grow before it stops being retried.
//!
//! Rule: a trigger's [`RetryPolicy`] holds only what its registration set;
//! every field it leaves out is the host's default
//! (`PICLOUD_TRIGGER_RETRY_*`), resolved at each failure by
//! [`RetryPolicy::resolve`], so changing the defaults changes every trigger
//! that did not choose. A script's own `retry-after` wins over the backoff;
//! a permanent error is never retried whatever the policy says.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::TriggerConfig;
use crate::model::InvalidValue;

/// The shape of the delays between attempts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub enum Backoff {
    /// `base * 2^(n-1)` after the n-th failed attempt (the default).
    #[default]
    Exponential,
    /// `base` every time.
    Constant,
    /// `base * n` after the n-th failed attempt.
    Linear,
}

impl Backoff {
    /// Its name in the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Backoff::Exponential => "exponential",
            Backoff::Constant => "constant",
            Backoff::Linear => "linear",
        }
    }
}

impl fmt::Display for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backoff {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "exponential" => Ok(Backoff::Exponential),
            "constant" => Ok(Backoff::Constant),
            "linear" => Ok(Backoff::Linear),
            other => Err(InvalidValue::new(
                "backoff",
                other,
                "exponential, constant, linear",
            )),
        }
    }
}

/// What a trigger's registration chose about retries; `None` is the host's
/// default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct RetryPolicy {
    /// Attempts before the event is dead-lettered (1: never retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The shape of the delays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// The first delay, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ms: Option<u64>,
    /// The largest delay, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_ms: Option<u64>,
    /// How far a delay may be moved at random, as a fraction of it (0.1:
    /// ±10%, the default; 0: exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// An event older than this (milliseconds since it was written) is not
    /// tried again after a failure: it is dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
}

/// Largest `max_attempts`.
pub const MAX_ATTEMPTS: u32 = 1000;
/// Largest base, cap and age: a week.
pub const MAX_MS: u64 = 7 * 24 * 60 * 60 * 1000;

impl RetryPolicy {
    /// Whether it chose nothing.
    pub fn is_default(&self) -> bool {
        *self == RetryPolicy::default()
    }

    /// Refuse values outside their ranges, naming the flag to fix.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(n) = self.max_attempts
            && !(1..=MAX_ATTEMPTS).contains(&n)
        {
            return Err(format!(
                "--max-attempts {n} is out of range: give 1 to {MAX_ATTEMPTS}"
            ));
        }
        for (flag, v) in [
            ("--base-ms", self.base_ms),
            ("--cap-ms", self.cap_ms),
            ("--max-age-ms", self.max_age_ms),
        ] {
            if let Some(ms) = v
                && !(1..=MAX_MS).contains(&ms)
            {
                return Err(format!(
                    "{flag} {ms} is out of range: give 1 to {MAX_MS} (a week)"
                ));
            }
        }
        if let (Some(base), Some(cap)) = (self.base_ms, self.cap_ms)
            && cap < base
        {
            return Err(format!(
                "--cap-ms {cap} is below --base-ms {base}: the cap must be at least the base"
            ));
        }
        if let Some(j) = self.jitter
            && !(0.0..=1.0).contains(&j)
        {
            return Err(format!(
                "--jitter {j} is out of range: give a fraction from 0 to 1 (0.1 is ±10%)"
            ));
        }
        Ok(())
    }

    /// The policy in force: this one's choices over `defaults`.
    pub fn resolve(&self, defaults: &TriggerConfig) -> Resolved {
        let base = self
            .base_ms
            .map_or(defaults.retry_base, Duration::from_millis);
        Resolved {
            max_attempts: self
                .max_attempts
                .map_or(defaults.retry_max_attempts, |n| n as i32),
            backoff: self.backoff.unwrap_or_default(),
            base,
            cap: self
                .cap_ms
                .map_or(defaults.retry_max.max(base), Duration::from_millis),
            jitter: self.jitter.unwrap_or(0.1),
            max_age: self.max_age_ms.map(Duration::from_millis),
        }
    }
}

impl fmt::Display for RetryPolicy {
    /// What `trigger list` shows: the choices made, `default` for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default() {
            return f.write_str("default");
        }
        let mut parts = Vec::new();
        if let Some(n) = self.max_attempts {
            parts.push(format!("attempts={n}"));
        }
        if let Some(b) = self.backoff {
            parts.push(b.to_string());
        }
        if let Some(ms) = self.base_ms {
            parts.push(format!("base={ms}ms"));
        }
        if let Some(ms) = self.cap_ms {
            parts.push(format!("cap={ms}ms"));
        }
        if let Some(j) = self.jitter {
            parts.push(format!("jitter={j}"));
        }
        if let Some(ms) = self.max_age_ms {
            parts.push(format!("max-age={ms}ms"));
        }
        f.write_str(&parts.join(" "))
    }
}

/// A policy with every default filled in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resolved {
    /// Attempts before dead-lettering.
    pub max_attempts: i32,
    /// The shape of the delays.
    pub backoff: Backoff,
    /// The first delay.
    pub base: Duration,
    /// The largest delay.
    pub cap: Duration,
    /// Fraction of a delay it may move at random.
    pub jitter: f64,
    /// Age past which a failed event is not retried.
    pub max_age: Option<Duration>,
}

impl Resolved {
    /// The delay after `failed_attempts` failures, without jitter.
    pub fn exact(&self, failed_attempts: i32) -> Duration {
        let n = failed_attempts.max(1) as u32;
        let delay = match self.backoff {
            Backoff::Constant => self.base,
            Backoff::Linear => self.base.saturating_mul(n),
            Backoff::Exponential => self.base.saturating_mul(1u32 << (n - 1).min(31)),
        };
        delay.min(self.cap)
    }

    /// The delay after `failed_attempts` failures, jittered.
    pub fn delay(&self, failed_attempts: i32) -> Duration {
        let unit = crate::config::random_unit();
        self.exact(failed_attempts)
            .mul_f64(1.0 - self.jitter + 2.0 * self.jitter * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TriggerConfig {
        TriggerConfig::default()
    }

    #[test]
    fn shapes_of_the_delays() {
        let p = |backoff| RetryPolicy {
            backoff: Some(backoff),
            base_ms: Some(100),
            cap_ms: Some(1000),
            jitter: Some(0.0),
            ..Default::default()
        };
        let ms = |b, n| p(b).resolve(&defaults()).delay(n).as_millis();
        assert_eq!(
            (1..=5)
                .map(|n| ms(Backoff::Constant, n))
                .collect::<Vec<_>>(),
            [100; 5]
        );
        assert_eq!(
            (1..=5).map(|n| ms(Backoff::Linear, n)).collect::<Vec<_>>(),
            [100, 200, 300, 400, 500]
        );
        assert_eq!(
            (1..=6)
                .map(|n| ms(Backoff::Exponential, n))
                .collect::<Vec<_>>(),
            [100, 200, 400, 800, 1000, 1000]
        );
    }

    #[test]
    fn unset_fields_are_the_hosts_defaults() {
        let d = defaults();
        let r = RetryPolicy::default().resolve(&d);
        assert_eq!(r.max_attempts, d.retry_max_attempts);
        assert_eq!(r.base, d.retry_base);
        assert_eq!(r.cap, d.retry_max);
        assert_eq!(r.backoff, Backoff::Exponential);
        assert_eq!(RetryPolicy::default().to_string(), "default");
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let r = RetryPolicy {
            backoff: Some(Backoff::Constant),
            base_ms: Some(1000),
            jitter: Some(0.2),
            ..Default::default()
        }
        .resolve(&defaults());
        for _ in 0..1000 {
            let ms = r.delay(1).as_millis();
            assert!((800..=1200).contains(&ms), "{ms}");
        }
    }

    #[test]
    fn out_of_range_choices_name_their_flag() {
        let bad = [
            RetryPolicy {
                max_attempts: Some(0),
                ..Default::default()
            },
            RetryPolicy {
                base_ms: Some(500),
                cap_ms: Some(100),
                ..Default::default()
            },
            RetryPolicy {
                jitter: Some(1.5),
                ..Default::default()
            },
        ];
        for (p, flag) in bad.iter().zip(["--max-attempts", "--cap-ms", "--jitter"]) {
            let e = p.validate().unwrap_err();
            assert!(e.starts_with(flag), "{e}");
        }
    }
}
