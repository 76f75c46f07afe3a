//! Configuration from the environment: retry policy and sandbox ceilings.
//!
//! Rule: every variable has a documented default; a value that is present but
//! malformed (not a number, zero where zero makes no sense, out of range)
//! stops start-up with an error naming the variable and the value. Nothing
//! silently falls back to a default.

use std::time::Duration;

use crate::runs::RunsMode;

/// A malformed configuration value. The message is one line: control
/// characters in the value are shown escaped (`\n`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}='{}': {expected}", .value.escape_debug())]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// The value it had.
    pub value: String,
    /// What was expected.
    pub expected: String,
}

/// Where configuration is read from: the process environment, or a map in
/// tests.
pub trait Source {
    /// The value of `var`, if set.
    fn get(&self, var: &str) -> Option<String>;
}

/// The process environment.
pub struct Env;

impl Source for Env {
    fn get(&self, var: &str) -> Option<String> {
        std::env::var(var).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Source for F {
    fn get(&self, var: &str) -> Option<String> {
        self(var)
    }
}

/// Read an integer in `[min, max]`, or the default when the variable is unset.
pub(crate) fn int(
    src: &dyn Source,
    var: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = src.get(var) else {
        return Ok(default);
    };
    let err = || ConfigError {
        var,
        value: raw.clone(),
        expected: format!("expected a whole number from {min} to {max}"),
    };
    let n: u64 = raw.trim().parse().map_err(|_| err())?;
    if n < min || n > max {
        return Err(err());
    }
    Ok(n)
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// `PICLOUD_RUNS`, one of `all`, `failures`, `off`.
fn runs_mode(src: &dyn Source) -> Result<RunsMode, ConfigError> {
    let Some(value) = src.get(RunsMode::VAR) else {
        return Ok(RunsMode::default());
    };
    value
        .trim()
        .parse()
        .map_err(|expected: String| ConfigError {
            var: RunsMode::VAR,
            expected: format!("expected {expected}"),
            value,
        })
}

/// The variable that sets [`TriggerConfig::max_event_age`].
pub const MAX_EVENT_AGE_VAR: &str = "PICLOUD_TRIGGER_MAX_EVENT_AGE_SECS";

/// The dispatcher's policy: depth limit, retries, retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerConfig {
    /// `PICLOUD_MAX_TRIGGER_DEPTH` (default 8): deeper events are never executed.
    pub max_trigger_depth: i32,
    /// `PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS` (default 5): attempts before dead-lettering.
    pub retry_max_attempts: i32,
    /// `PICLOUD_TRIGGER_RETRY_BASE_MS` (default 1000): the first retry delay.
    pub retry_base: Duration,
    /// `PICLOUD_TRIGGER_RETRY_MAX_MS` (default 300000): the largest retry delay.
    pub retry_max: Duration,
    /// `PICLOUD_DEAD_LETTER_RETENTION_DAYS` (default 30).
    pub dead_letter_retention: Duration,
    /// `PICLOUD_ABANDONED_EXECUTIONS_RETENTION_DAYS` (default 7).
    pub abandoned_retention: Duration,
    /// `PICLOUD_TRIGGER_MAX_EVENT_AGE_SECS` (default 86400): how long an event may
    /// keep failing for reasons that are not its script's (the store was
    /// unavailable) before it is dead-lettered anyway. Such failures cost no
    /// attempt, so this is what bounds an event's life through an outage.
    pub max_event_age: Duration,
    /// `PICLOUD_RUNS` (default all): which run records are kept (`all`, `failures`
    /// or `off`; see [`crate::runs`]).
    pub runs: RunsMode,
    /// `PICLOUD_RUN_RETENTION_DAYS` (default 7): runs older than this are collected.
    pub run_retention: Duration,
    /// `PICLOUD_RUN_RETENTION_PER_APP` (default 100000): each app keeps at most this
    /// many runs, the newest.
    pub run_retention_per_app: u64,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig {
            max_trigger_depth: 8,
            retry_max_attempts: 5,
            retry_base: Duration::from_millis(1000),
            retry_max: Duration::from_millis(300_000),
            dead_letter_retention: Duration::from_millis(30 * DAY_MS),
            abandoned_retention: Duration::from_millis(7 * DAY_MS),
            max_event_age: Duration::from_secs(86_400),
            runs: RunsMode::All,
            run_retention: Duration::from_millis(7 * DAY_MS),
            run_retention_per_app: 100_000,
        }
    }
}

impl TriggerConfig {
    /// Read from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Env)
    }

    /// Read from any [`Source`].
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let base = int(src, "PICLOUD_TRIGGER_RETRY_BASE_MS", 1000, 1, DAY_MS)?;
        let max_var = "PICLOUD_TRIGGER_RETRY_MAX_MS";
        let max = int(src, max_var, 300_000, 1, 7 * DAY_MS)?;
        if max < base {
            return Err(ConfigError {
                var: max_var,
                value: max.to_string(),
                expected: format!("must be at least PICLOUD_TRIGGER_RETRY_BASE_MS ({base})"),
            });
        }
        Ok(TriggerConfig {
            max_trigger_depth: int(src, "PICLOUD_MAX_TRIGGER_DEPTH", 8, 1, 1000)? as i32,
            retry_max_attempts: int(src, "PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS", 5, 1, 1000)? as i32,
            retry_base: Duration::from_millis(base),
            retry_max: Duration::from_millis(max),
            dead_letter_retention: Duration::from_millis(
                int(src, "PICLOUD_DEAD_LETTER_RETENTION_DAYS", 30, 1, 36_500)? * DAY_MS,
            ),
            abandoned_retention: Duration::from_millis(
                int(
                    src,
                    "PICLOUD_ABANDONED_EXECUTIONS_RETENTION_DAYS",
                    7,
                    1,
                    36_500,
                )? * DAY_MS,
            ),
            max_event_age: Duration::from_secs(int(
                src,
                MAX_EVENT_AGE_VAR,
                86_400,
                1,
                365 * 86_400,
            )?),
            runs: runs_mode(src)?,
            run_retention: Duration::from_millis(
                int(src, "PICLOUD_RUN_RETENTION_DAYS", 7, 1, 36_500)? * DAY_MS,
            ),
            run_retention_per_app: int(
                src,
                "PICLOUD_RUN_RETENTION_PER_APP",
                100_000,
                1,
                1_000_000_000,
            )?,
        })
    }

    /// The delay before attempt `n + 1` after `n` failed attempts:
    /// `min(max, base * 2^(n-1))`, then jittered by up to ±10%.
    pub fn backoff(&self, failed_attempts: i32) -> Duration {
        let exact = self.backoff_exact(failed_attempts);
        let jitter = 0.9 + 0.2 * random_unit();
        exact.mul_f64(jitter)
    }

    /// The delay before an event whose last attempt failed for the host's
    /// reasons (storage unavailable) is tried again. Such failures are not
    /// counted, so the delay grows with the event's `age` instead: half of
    /// it, between the retry base and the retry maximum, jittered by ±10%.
    /// Over an outage the attempts thin out geometrically.
    pub fn infrastructure_backoff(&self, age: Duration) -> Duration {
        let exact = (age / 2).clamp(self.retry_base, self.retry_max);
        exact.mul_f64(0.9 + 0.2 * random_unit())
    }

    /// The delay without jitter.
    pub fn backoff_exact(&self, failed_attempts: i32) -> Duration {
        let exp = failed_attempts.saturating_sub(1).clamp(0, 40) as u32;
        let base_ms = self.retry_base.as_millis() as u64;
        let ms = base_ms.saturating_mul(1u64 << exp);
        Duration::from_millis(ms).min(self.retry_max)
    }
}

/// A uniform number in [0, 1), good enough for jitter.
pub(crate) fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// The limits every script runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxCeiling {
    /// `PICLOUD_SANDBOX_TIMEOUT_MS` (default 5000): wall-clock deadline per invocation.
    pub timeout: Duration,
    /// `PICLOUD_SANDBOX_MEMORY_MB` (default 64): linear memory per instance.
    pub memory_bytes: u64,
    /// `PICLOUD_SANDBOX_LOG_BYTES` (default 65536): log and stdout/stderr per invocation.
    pub log_bytes: u64,
    /// `PICLOUD_SANDBOX_MAX_INSTANCES` (default 64): concurrent instances (the pool size,
    /// and so the dispatcher's concurrency bound).
    pub max_instances: u32,
    /// `PICLOUD_SCRIPT_MAX_BYTES` (default 32 MiB): largest deployable component.
    pub script_max_bytes: u64,
    /// `PICLOUD_SANDBOX_REPLY_BYTES` (default 1 MiB): largest reply body.
    pub reply_max_bytes: u64,
    /// `PICLOUD_SANDBOX_HOST_CALLS` (default 1000): `kv` and `dead-letters` calls
    /// per invocation.
    pub max_host_calls: u32,
    /// `PICLOUD_SANDBOX_ENQUEUED_EVENTS` (default 100): events one invocation may
    /// cause (each `kv.set`, `kv.delete` and replay enqueues one).
    pub max_enqueued: u32,
    /// `PICLOUD_SANDBOX_HOST_BYTES` (default 16 MiB): bytes of host-call answers
    /// (values, keys, dead letters) per invocation, counted as the host
    /// reads them, before they reach the guest's memory.
    pub host_bytes: u64,
    /// `PICLOUD_COMPONENT_MAX_CORE_INSTANCES` (default 16): core module instances a
    /// deployable component may contain (a Rust trigger script has 3).
    pub component_core_instances: u32,
    /// `PICLOUD_COMPONENT_MAX_MEMORIES` (default 2): linear memories a deployable
    /// component may define. The memory limit covers all of them together.
    pub component_memories: u32,
    /// `PICLOUD_COMPONENT_MAX_TABLES` (default 16): tables a deployable component
    /// may define (a Rust trigger script has 2; a core module has one at
    /// most, so this cap binds only when set below the core instances').
    pub component_tables: u32,
    /// `PICLOUD_OUTBOUND_MAX_REQUESTS` (default 16): outbound HTTP requests
    /// per invocation.
    pub outbound_max_requests: u32,
    /// `PICLOUD_OUTBOUND_TIMEOUT_MS` (default 3000): one outbound request,
    /// from connecting to its last body byte; never past the invocation's
    /// deadline.
    pub outbound_timeout: Duration,
    /// `PICLOUD_OUTBOUND_MAX_RESPONSE_BYTES` (default 1 MiB): the largest
    /// response body a script may read.
    pub outbound_response_bytes: u64,
    /// `PICLOUD_OUTBOUND_ALLOW_NETS` (default none): address ranges outbound
    /// requests may reach although they are not public (loopback, private,
    /// link-local), as CIDRs separated by commas. The operator's switch for
    /// services on the host's own network; apps still need an allowed host.
    pub outbound_allow_nets: Vec<crate::outbound::IpNet>,
}

/// The variables of the per-invocation budgets and per-component caps, as
/// named in the errors that report them.
pub mod vars {
    /// [`super::SandboxCeiling::max_host_calls`].
    pub const HOST_CALLS: &str = "PICLOUD_SANDBOX_HOST_CALLS";
    /// [`super::SandboxCeiling::max_enqueued`].
    pub const ENQUEUED_EVENTS: &str = "PICLOUD_SANDBOX_ENQUEUED_EVENTS";
    /// [`super::SandboxCeiling::host_bytes`].
    pub const HOST_BYTES: &str = "PICLOUD_SANDBOX_HOST_BYTES";
    /// [`super::SandboxCeiling::component_core_instances`].
    pub const CORE_INSTANCES: &str = "PICLOUD_COMPONENT_MAX_CORE_INSTANCES";
    /// [`super::SandboxCeiling::component_memories`].
    pub const MEMORIES: &str = "PICLOUD_COMPONENT_MAX_MEMORIES";
    /// [`super::SandboxCeiling::component_tables`].
    pub const TABLES: &str = "PICLOUD_COMPONENT_MAX_TABLES";
    /// [`super::SandboxCeiling::outbound_max_requests`].
    pub const OUTBOUND_REQUESTS: &str = "PICLOUD_OUTBOUND_MAX_REQUESTS";
    /// [`super::SandboxCeiling::outbound_timeout`].
    pub const OUTBOUND_TIMEOUT: &str = "PICLOUD_OUTBOUND_TIMEOUT_MS";
    /// [`super::SandboxCeiling::outbound_response_bytes`].
    pub const OUTBOUND_RESPONSE_BYTES: &str = "PICLOUD_OUTBOUND_MAX_RESPONSE_BYTES";
    /// [`super::SandboxCeiling::outbound_allow_nets`].
    pub const OUTBOUND_ALLOW_NETS: &str = "PICLOUD_OUTBOUND_ALLOW_NETS";
}

impl Default for SandboxCeiling {
    fn default() -> Self {
        SandboxCeiling {
            timeout: Duration::from_millis(5000),
            memory_bytes: 64 << 20,
            log_bytes: 65536,
            max_instances: 64,
            script_max_bytes: 32 << 20,
            reply_max_bytes: 1 << 20,
            max_host_calls: 1000,
            max_enqueued: 100,
            host_bytes: 16 << 20,
            component_core_instances: 16,
            component_memories: 2,
            component_tables: 16,
            outbound_max_requests: 16,
            outbound_timeout: Duration::from_millis(3000),
            outbound_response_bytes: 1 << 20,
            outbound_allow_nets: Vec::new(),
        }
    }
}

impl SandboxCeiling {
    /// Read from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Env)
    }

    /// Read from any [`Source`].
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(SandboxCeiling {
            timeout: Duration::from_millis(int(
                src,
                "PICLOUD_SANDBOX_TIMEOUT_MS",
                5000,
                1,
                3_600_000,
            )?),
            memory_bytes: int(src, "PICLOUD_SANDBOX_MEMORY_MB", 64, 1, 4095)? << 20,
            log_bytes: int(src, "PICLOUD_SANDBOX_LOG_BYTES", 65536, 1, 1 << 30)?,
            max_instances: int(src, "PICLOUD_SANDBOX_MAX_INSTANCES", 64, 1, 10_000)? as u32,
            script_max_bytes: int(src, "PICLOUD_SCRIPT_MAX_BYTES", 32 << 20, 1, 1 << 30)?,
            reply_max_bytes: int(src, "PICLOUD_SANDBOX_REPLY_BYTES", 1 << 20, 1, 1 << 30)?,
            max_host_calls: int(src, vars::HOST_CALLS, 1000, 1, 1 << 24)? as u32,
            max_enqueued: int(src, vars::ENQUEUED_EVENTS, 100, 1, 1 << 24)? as u32,
            host_bytes: int(src, vars::HOST_BYTES, 16 << 20, 1, 1 << 32)?,
            component_core_instances: int(src, vars::CORE_INSTANCES, 16, 1, 1000)? as u32,
            component_memories: int(src, vars::MEMORIES, 2, 1, 100)? as u32,
            component_tables: int(src, vars::TABLES, 16, 1, 1000)? as u32,
            outbound_max_requests: int(src, vars::OUTBOUND_REQUESTS, 16, 0, 1 << 20)? as u32,
            outbound_timeout: Duration::from_millis(int(
                src,
                vars::OUTBOUND_TIMEOUT,
                3000,
                1,
                3_600_000,
            )?),
            outbound_response_bytes: int(src, vars::OUTBOUND_RESPONSE_BYTES, 1 << 20, 0, 1 << 32)?,
            outbound_allow_nets: match src.get(vars::OUTBOUND_ALLOW_NETS) {
                None => Vec::new(),
                Some(text) => {
                    crate::outbound::parse_nets(&text).map_err(|expected| ConfigError {
                        var: vars::OUTBOUND_ALLOW_NETS,
                        value: text.clone(),
                        expected,
                    })?
                }
            },
        })
    }

    /// The memory limit in MiB, as named in errors.
    pub fn memory_mib(&self) -> u64 {
        self.memory_bytes >> 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn src(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn defaults() {
        assert_eq!(
            TriggerConfig::from_source(&src(&[])).unwrap(),
            TriggerConfig::default()
        );
        assert_eq!(
            SandboxCeiling::from_source(&src(&[])).unwrap(),
            SandboxCeiling::default()
        );
        let d = SandboxCeiling::default();
        assert_eq!(d.timeout, Duration::from_millis(5000));
        assert_eq!(d.memory_mib(), 64);
        assert_eq!(d.script_max_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn reads_values() {
        let c = TriggerConfig::from_source(&src(&[
            ("PICLOUD_MAX_TRIGGER_DEPTH", "3"),
            ("PICLOUD_TRIGGER_RETRY_MAX_ATTEMPTS", "2"),
            ("PICLOUD_TRIGGER_RETRY_BASE_MS", "10"),
            ("PICLOUD_TRIGGER_RETRY_MAX_MS", "40"),
        ]))
        .unwrap();
        assert_eq!(c.max_trigger_depth, 3);
        assert_eq!(c.retry_max_attempts, 2);
        assert_eq!(c.backoff_exact(1), Duration::from_millis(10));
        assert_eq!(c.backoff_exact(2), Duration::from_millis(20));
        assert_eq!(c.backoff_exact(3), Duration::from_millis(40));
        assert_eq!(c.backoff_exact(30), Duration::from_millis(40));
        let s = SandboxCeiling::from_source(&src(&[("PICLOUD_SANDBOX_MEMORY_MB", "16")])).unwrap();
        assert_eq!(s.memory_bytes, 16 << 20);
    }

    #[test]
    fn malformed_values_name_variable_and_value() {
        let e = TriggerConfig::from_source(&src(&[("PICLOUD_MAX_TRIGGER_DEPTH", "eight")]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid PICLOUD_MAX_TRIGGER_DEPTH='eight': expected a whole number from 1 to 1000"
        );
        let e =
            SandboxCeiling::from_source(&src(&[("PICLOUD_SANDBOX_TIMEOUT_MS", "0")])).unwrap_err();
        assert_eq!(e.var, "PICLOUD_SANDBOX_TIMEOUT_MS");
        assert_eq!(e.value, "0");
        let e =
            SandboxCeiling::from_source(&src(&[("PICLOUD_SANDBOX_MEMORY_MB", "-1")])).unwrap_err();
        assert_eq!(e.var, "PICLOUD_SANDBOX_MEMORY_MB");
        let e = TriggerConfig::from_source(&src(&[
            ("PICLOUD_TRIGGER_RETRY_BASE_MS", "500"),
            ("PICLOUD_TRIGGER_RETRY_MAX_MS", "100"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "PICLOUD_TRIGGER_RETRY_MAX_MS");
        assert!(
            TriggerConfig::from_source(&src(&[("PICLOUD_DEAD_LETTER_RETENTION_DAYS", "")]))
                .is_err()
        );
        let e = SandboxCeiling::from_source(&src(&[("PICLOUD_SANDBOX_LOG_BYTES", "1\n2")]))
            .unwrap_err();
        assert_eq!(e.value, "1\n2");
        assert_eq!(
            e.to_string(),
            "invalid PICLOUD_SANDBOX_LOG_BYTES='1\\n2': expected a whole number from 1 to 1073741824"
        );
    }

    #[test]
    fn backoff_jitter_stays_within_ten_percent() {
        let c = TriggerConfig::default();
        for n in 1..8 {
            let exact = c.backoff_exact(n).as_secs_f64();
            for _ in 0..50 {
                let d = c.backoff(n).as_secs_f64();
                assert!(
                    d >= exact * 0.9 - 1e-9 && d <= exact * 1.1 + 1e-9,
                    "{n}: {d} vs {exact}"
                );
            }
        }
    }
}
