//! Run records: what every invocation did.
//!
//! Rule: every invocation the dispatcher makes, and every event it decides
//! not to run (its trigger or script removed, the depth limit), leaves one
//! [`NewRun`]. The run rides with its event's outcome and is written in the
//! same transaction (the batched delete, the batched retry, the dead letter,
//! the recursion stop), so a run never disagrees with what happened to its
//! event: a run that says "failed, attempt 2" exists exactly when attempt 2
//! failed and was recorded. [`RunsMode`] trades history for speed; reading
//! runs needs `AppLogs` (see [`crate::auth`]). Old runs go by age and by
//! count per app ([`crate::config::TriggerConfig`]), in garbage collection.
//!
//! Order: a run's id is a UUIDv7 drawn when the run finishes, so one app's
//! runs in id order are the order they finished, and a time range is a
//! range of ids ([`finished_at`]). The store keys runs by (app, id) alone:
//! recording one is one b-tree insert, and every listing is a range read.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{AppId, EventId, RunId, ScriptId, Timestamp, TriggerId};
use crate::runtime::{InvokeError, LogLine};
use crate::store::{self, Store, Subscription};

/// How a run ended. Stored as its [`RunOutcome::as_str`] text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub enum RunOutcome {
    /// The handler returned `Ok`.
    Succeeded,
    /// The handler returned an error, trapped, or could not be loaded.
    Failed,
    /// A sandbox limit ended it; the run's `limit` names which.
    Limit,
    /// It failed after a host call was refused for lack of a capability
    /// (of the principal it runs as, or of its deployer).
    Denied,
    /// Not run: its trigger or script had been removed.
    Skipped,
    /// A dead-letter handler's last attempt failed, and the recursion stop
    /// resolved its dead letter `handler_failed` instead of making another.
    RecursionStopped,
    /// Not run: the event was deeper than `PICLOUD_MAX_TRIGGER_DEPTH`.
    DepthExceeded,
}

impl RunOutcome {
    /// Every outcome, in the order listings explain them.
    pub const ALL: [RunOutcome; 7] = [
        RunOutcome::Succeeded,
        RunOutcome::Failed,
        RunOutcome::Limit,
        RunOutcome::Denied,
        RunOutcome::Skipped,
        RunOutcome::RecursionStopped,
        RunOutcome::DepthExceeded,
    ];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Limit => "limit",
            RunOutcome::Denied => "denied",
            RunOutcome::Skipped => "skipped",
            RunOutcome::RecursionStopped => "recursion_stopped",
            RunOutcome::DepthExceeded => "depth_exceeded",
        }
    }

    /// Whether the run counts as a failure (`runs list --failed`,
    /// `PICLOUD_RUNS=failures`): anything but success.
    pub fn is_failure(self) -> bool {
        self != RunOutcome::Succeeded
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RunOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown run outcome {s:?}"))
    }
}

/// Which runs are recorded: `PICLOUD_RUNS` (default `all`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunsMode {
    /// Every run.
    #[default]
    All,
    /// Only runs that did not succeed.
    Failures,
    /// None: the last bit of throughput, and no history.
    Off,
}

impl RunsMode {
    /// The variable that sets it.
    pub const VAR: &'static str = "PICLOUD_RUNS";

    /// Whether a run with `outcome` is recorded.
    pub fn keeps(self, outcome: RunOutcome) -> bool {
        match self {
            RunsMode::All => true,
            RunsMode::Failures => outcome.is_failure(),
            RunsMode::Off => false,
        }
    }
}

impl FromStr for RunsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(RunsMode::All),
            "failures" => Ok(RunsMode::Failures),
            "off" => Ok(RunsMode::Off),
            _ => Err("one of all, failures, off".into()),
        }
    }
}

/// A run to record, made by the dispatcher.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    /// Its id (time-ordered).
    pub id: RunId,
    /// The app.
    pub app_id: AppId,
    /// The trigger that matched, if any (none for a synchronous invoke).
    pub trigger_id: Option<TriggerId>,
    /// The script that ran, or would have.
    pub script_id: Option<ScriptId>,
    /// The event's stable id (what the script saw as `event.id`).
    pub event_id: EventId,
    /// The event's source.
    pub source: String,
    /// The event's op.
    pub op: String,
    /// Which attempt this was, from 1.
    pub attempt: i32,
    /// Who it ran as.
    pub principal: String,
    /// When it started.
    pub started_at: Timestamp,
    /// How long it ran, in microseconds (0 when it did not run).
    pub duration_us: i64,
    /// How it ended.
    pub outcome: RunOutcome,
    /// The limit that ended it ([`limit_name`]), if one did.
    pub limit: Option<String>,
    /// Its error text, when it did not succeed.
    pub error: Option<String>,
    /// The reply's size in bytes, for a synchronous call that replied.
    pub reply_bytes: Option<i64>,
    /// What it logged (the `log` import, stdout and stderr), already bounded
    /// by the sandbox's log budget.
    pub logs: Vec<LogLine>,
}

/// A recorded run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct Run {
    /// Its id.
    pub id: RunId,
    /// The app.
    pub app_id: AppId,
    /// The trigger that matched, if any.
    pub trigger_id: Option<TriggerId>,
    /// The script.
    pub script_id: Option<ScriptId>,
    /// The event's stable id.
    pub event_id: EventId,
    /// The event's source.
    pub source: String,
    /// The event's op.
    pub op: String,
    /// Which attempt, from 1.
    pub attempt: i32,
    /// Who it ran as.
    pub principal: String,
    /// When it started.
    pub started_at: Timestamp,
    /// How long it ran, in microseconds.
    pub duration_us: i64,
    /// How it ended.
    pub outcome: RunOutcome,
    /// The limit that ended it, if one did.
    pub limit: Option<String>,
    /// Its error text.
    pub error: Option<String>,
    /// The reply's size, for a synchronous call.
    pub reply_bytes: Option<i64>,
    /// What it logged.
    pub logs: Vec<LogLine>,
    /// When its outcome was committed (the store's clock).
    pub recorded_at: Timestamp,
}

impl Run {
    /// When it finished, to the millisecond: read from its id (see
    /// [`finished_at`]). Listings are in this order.
    pub fn finished_at(&self) -> Timestamp {
        finished_at(self.id)
    }
}

/// When the run with this id finished, to the millisecond: a run id is a
/// UUIDv7 drawn as the run finishes, its first 48 bits the Unix time in
/// milliseconds.
pub fn finished_at(id: RunId) -> Timestamp {
    let b = id.0.as_bytes();
    let ms = b[..6]
        .iter()
        .fold(0i64, |ms, byte| (ms << 8) | i64::from(*byte));
    Timestamp(DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

/// The least id a run that finished in `t`'s millisecond or later has: the
/// lower bound of a time range as a range of ids.
pub(crate) fn first_id_at(t: Timestamp) -> RunId {
    id_at(t, 0x00)
}

/// The greatest id a run that finished in `t`'s millisecond or earlier has.
pub(crate) fn last_id_at(t: Timestamp) -> RunId {
    id_at(t, 0xff)
}

fn id_at(t: Timestamp, fill: u8) -> RunId {
    let ms = t.0.timestamp_millis().clamp(0, (1 << 48) - 1);
    let mut bytes = [fill; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    RunId(Uuid::from_bytes(bytes))
}

/// Which runs a listing returns: always one app's, newest first (in the
/// order they finished, [`Run::finished_at`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RunFilter {
    /// The app.
    pub app_id: AppId,
    /// Only this script's.
    pub script_id: Option<ScriptId>,
    /// Only this trigger's.
    pub trigger_id: Option<TriggerId>,
    /// Only this event's (every attempt, every trigger).
    pub event_id: Option<EventId>,
    /// Only runs that did not succeed.
    pub failed_only: bool,
    /// Only runs that finished at or after this time (to the millisecond).
    pub since: Option<Timestamp>,
    /// Only runs that finished at or before this time (to the millisecond).
    pub until: Option<Timestamp>,
    /// Only runs after this one in the listing's order (newer ones when
    /// `oldest_first`, else older ones): the cursor of a listing read page
    /// by page.
    pub after: Option<RunId>,
    /// At most this many.
    pub limit: u32,
    /// Oldest first instead of newest first (how `logs --follow` reads).
    pub oldest_first: bool,
}

impl RunFilter {
    /// The newest 50 runs of `app`.
    pub fn app(app_id: AppId) -> Self {
        RunFilter {
            app_id,
            script_id: None,
            trigger_id: None,
            event_id: None,
            failed_only: false,
            since: None,
            until: None,
            after: None,
            limit: 50,
            oldest_first: false,
        }
    }
}

/// How far behind its cursor a [`Follower`] looks again, for runs that
/// committed after runs that finished later: a run is recorded with its
/// dispatcher's next completion, and several dispatchers (or one's
/// concurrent completions on PostgreSQL) commit in their own time.
const LATE: Duration = Duration::from_secs(5);
/// How often a [`Follower`] looks without a signal: always on SQLite (a
/// dispatcher in another process cannot signal this one), and as a
/// safety net beside PostgreSQL's notifications.
const POLL: Duration = Duration::from_millis(250);
/// How often it looks while a notification channel is live.
const SLOW_POLL: Duration = Duration::from_secs(2);
/// Runs read per query.
const PAGE: u32 = 500;

/// New runs of one app as they are recorded, also by dispatchers in other
/// processes: the engine of `logs --follow`, for the manager too. Wakes on
/// PostgreSQL's `picloud_runs` notifications; polls on SQLite.
///
/// It checks nothing: get one through
/// [`crate::admin::Admin::follow_runs`], which checks `AppLogs` first.
pub struct Follower {
    store: Arc<dyn Store>,
    filter: RunFilter,
    /// The last run handed out, in the order runs finished.
    cursor: Option<RunId>,
    /// Runs handed out that finished within [`LATE`] of the cursor.
    recent: HashSet<RunId>,
    signals: Option<Box<dyn Subscription>>,
}

impl Follower {
    /// Follow the runs matching `filter` (its `app_id`, `script_id`,
    /// `trigger_id`, `event_id` and `failed_only`) recorded from now on.
    pub async fn start(store: Arc<dyn Store>, filter: RunFilter) -> store::Result<Self> {
        let newest = store
            .list_runs(&RunFilter {
                limit: 1,
                oldest_first: false,
                since: None,
                until: None,
                after: None,
                ..filter.clone()
            })
            .await?;
        let signals = match store.subscribe_runs().await {
            Ok(signals) => signals,
            Err(e) => {
                tracing::debug!(error = %e, "cannot listen for new runs; polling");
                None
            }
        };
        Ok(Follower {
            cursor: newest.first().map(|r| r.id),
            recent: newest.iter().map(|r| r.id).collect(),
            store,
            filter,
            signals,
        })
    }

    /// The next new runs, oldest first; waits until there is at least one.
    pub async fn next(&mut self) -> store::Result<Vec<Run>> {
        loop {
            let found = self.fetch().await?;
            if !found.is_empty() {
                return Ok(found);
            }
            self.wait().await;
        }
    }

    /// What was recorded since the last call.
    async fn fetch(&mut self) -> store::Result<Vec<Run>> {
        let base = RunFilter {
            since: None,
            until: None,
            after: None,
            limit: PAGE,
            ..self.filter.clone()
        };
        let mut found = Vec::new();
        if let Some(cursor) = self.cursor {
            // Late commits behind the cursor: the newest of them.
            let at = finished_at(cursor);
            let late = self
                .store
                .list_runs(&RunFilter {
                    since: Some(at.minus(LATE)),
                    until: Some(at),
                    oldest_first: false,
                    ..base.clone()
                })
                .await?;
            found.extend(
                late.into_iter()
                    .filter(|r| r.id < cursor && !self.recent.contains(&r.id)),
            );
        }
        loop {
            let page = self
                .store
                .list_runs(&RunFilter {
                    after: self.cursor,
                    oldest_first: true,
                    ..base.clone()
                })
                .await?;
            let full = page.len() == PAGE as usize;
            if let Some(last) = page.last() {
                self.cursor = Some(last.id);
            }
            found.extend(page);
            if !full {
                break;
            }
        }
        self.recent.extend(found.iter().map(|r| r.id));
        if let Some(cursor) = self.cursor {
            let floor = first_id_at(finished_at(cursor).minus(LATE));
            self.recent.retain(|id| *id >= floor);
        }
        found.sort_by_key(|r| r.id);
        Ok(found)
    }

    async fn wait(&mut self) {
        let Some(signals) = &mut self.signals else {
            tokio::time::sleep(POLL).await;
            return;
        };
        tokio::select! {
            signal = signals.recv() => {
                if let Err(e) = signal {
                    tracing::debug!(error = %e, "run notifications broke; polling");
                    self.signals = None;
                }
            }
            _ = tokio::time::sleep(SLOW_POLL) => {}
        }
    }
}

/// The name a run records for the limit behind `error`, if a limit ended
/// it: `timeout`, `memory`, `log`, `host_calls`, `enqueued_events`,
/// `host_bytes`, `table`, `stack`, `reply`, `outbound_requests`,
/// `outbound_timeout` or `outbound_body`.
pub fn limit_name(error: &InvokeError) -> Option<&'static str> {
    use crate::runtime::LimitExceeded as L;
    Some(match error {
        InvokeError::Timeout { .. } => "timeout",
        InvokeError::StackOverflow => "stack",
        InvokeError::ReplyTooLarge { .. } => "reply",
        InvokeError::Limit(l) => match l {
            L::Memory { .. } => "memory",
            L::Log { .. } => "log",
            L::HostCalls { .. } => "host_calls",
            L::Enqueued { .. } => "enqueued_events",
            L::HostBytes { .. } => "host_bytes",
            L::Table { .. } => "table",
            L::OutboundRequests { .. } => "outbound_requests",
            L::OutboundTimeout { .. } => "outbound_timeout",
            L::OutboundBody { .. } => "outbound_body",
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_their_text() {
        for o in RunOutcome::ALL {
            assert_eq!(o.as_str().parse::<RunOutcome>(), Ok(o));
        }
        assert!("done".parse::<RunOutcome>().is_err());
    }

    #[test]
    fn failures_mode_keeps_everything_but_success() {
        for o in RunOutcome::ALL {
            assert!(RunsMode::All.keeps(o));
            assert!(!RunsMode::Off.keeps(o));
            assert_eq!(RunsMode::Failures.keeps(o), o != RunOutcome::Succeeded);
        }
    }

    #[test]
    fn a_run_id_carries_the_millisecond_it_finished_in() {
        let before = Timestamp::now();
        let id = RunId::new();
        let after = Timestamp::now();
        let at = finished_at(id);
        assert!(at.0.timestamp_millis() >= before.0.timestamp_millis());
        assert!(at.0.timestamp_millis() <= after.0.timestamp_millis());
        // The bounds of its millisecond hold it; those of the next do not.
        assert!(first_id_at(at) <= id && id <= last_id_at(at));
        let next = at.plus(Duration::from_millis(1));
        assert!(id < first_id_at(next) && last_id_at(at) < first_id_at(next));
        assert_eq!(finished_at(first_id_at(at)), at);
        assert_eq!(finished_at(last_id_at(at)), at);
    }

    #[test]
    fn each_limit_has_a_name() {
        use crate::runtime::LimitExceeded as L;
        assert_eq!(limit_name(&InvokeError::Timeout { ms: 5 }), Some("timeout"));
        assert_eq!(
            limit_name(&InvokeError::Limit(L::Memory { mib: 1 })),
            Some("memory")
        );
        assert_eq!(limit_name(&InvokeError::Handler("no".into())), None);
    }
}
