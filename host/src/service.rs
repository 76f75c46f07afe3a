//! The embedding entry point: [`TriggerHost`].
//!
//! Rule: the manager builds the host from a store (or a pool), an authorizer
//! and the two configurations ([`TriggerHost::builder`]), then runs it until
//! a token is cancelled; the CLI does exactly the same. Everything a caller can do that crosses the
//! dispatcher (synchronous invocation, garbage collection) goes through here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::auth::{Authorizer, Capability, MemberAuthorizer};
use crate::config::{SandboxCeiling, TriggerConfig};
use crate::dispatch::{DispatchOptions, Dispatcher, RunMode, Shared};
use crate::inbox::{Delivery, Inbox, ReplyMsg};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::model::{AppId, EventId, NewEvent, Outcome, Timestamp, source};
use crate::runtime::Runtime;
use crate::store::{self, NewAbandoned, Store};

/// Why a synchronous invocation did not return a reply.
#[derive(Debug, thiserror::Error)]
pub enum InvokeCallError {
    /// The principal may not invoke scripts of the app.
    #[error("permission denied: {principal} may not invoke scripts of this app")]
    PermissionDenied {
        /// Who asked.
        principal: String,
    },
    /// No reply within the caller's timeout.
    #[error("no reply within {ms} ms")]
    Timeout {
        /// The timeout.
        ms: u128,
    },
    /// The script ran and failed.
    #[error("invocation failed: {0}")]
    Failed(String),
    /// The store failed (unknown script, database down...).
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The authorizer could not answer.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

/// Options beyond the two configurations.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Where compiled scripts are kept across restarts (`None`: memory only).
    pub cache_dir: Option<PathBuf>,
    /// Dispatch loop tuning.
    pub dispatch: DispatchOptions,
    /// How often `serve` runs garbage collection.
    pub gc_interval: Duration,
    /// `PICLOUD_SECRET_KEY`: seals and opens the apps' secrets
    /// ([`crate::secrets`]). Without it no secret is stored or read.
    pub secret_key: Option<crate::secrets::SecretKey>,
}

impl HostOptions {
    /// Defaults for a sandbox ceiling.
    pub fn new(ceiling: &SandboxCeiling) -> Self {
        HostOptions {
            cache_dir: default_cache_dir(),
            dispatch: DispatchOptions::for_timeout(ceiling.timeout),
            gc_interval: Duration::from_secs(3600),
            secret_key: None,
        }
    }

    /// Defaults for a sandbox ceiling, with the dispatch lease
    /// (`PICLOUD_DISPATCH_LEASE_MS`) and the secret key
    /// (`PICLOUD_SECRET_KEY`) from the process environment. A malformed key
    /// is an error that does not show it.
    pub fn from_env(ceiling: &SandboxCeiling) -> Result<Self, crate::config::ConfigError> {
        let secret_key =
            crate::secrets::SecretKey::from_env().map_err(|e| crate::config::ConfigError {
                var: crate::secrets::SECRET_KEY_VAR,
                value: "(not shown)".into(),
                expected: e.to_string(),
            })?;
        Ok(HostOptions {
            secret_key,
            dispatch: DispatchOptions::from_env(ceiling.timeout)?,
            ..Self::new(ceiling)
        })
    }
}

/// `$PICLOUD_CACHE_DIR`, else `$XDG_CACHE_HOME/picloud`, else `~/.cache/picloud`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PICLOUD_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("picloud"))
}

/// What a garbage collection removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Dead letters past their retention.
    pub dead_letters: u64,
    /// Abandoned executions past their retention.
    pub abandoned: u64,
    /// Parked replies nobody collected, turned into abandoned executions.
    pub stale_replies: u64,
    /// Run records past their retention (by age or by count per app).
    pub runs: u64,
}

/// A trigger host: the dispatcher, the sandbox and the operations around
/// them, over one store. Clones are cheap and share everything (metrics,
/// the reply inbox, the compiled scripts). A process may hold several hosts
/// (over different databases, say); each has its own wasmtime engine.
///
/// Embedding it in an application that already has a PostgreSQL pool:
///
/// ```no_run
/// use std::sync::Arc;
/// use picloud_host::model::AppId;
/// use picloud_host::store::{Store, postgres::{self, PgStore}};
/// use picloud_host::TriggerHost;
/// use tokio_util::sync::CancellationToken;
///
/// # async fn embed(pool: sqlx::PgPool, app: AppId) -> anyhow::Result<()> {
/// let store: Arc<dyn Store> = Arc::new(PgStore::from_pool(pool.clone()));
/// store.migrate().await?; // its own bookkeeping and schema: yours are untouched
/// let host = TriggerHost::builder(store).build()?;
///
/// // Dispatch in the background until shutdown.
/// let shutdown = CancellationToken::new();
/// let runner = host.spawn(shutdown.clone());
///
/// // A change and its event commit together, in the application's own transaction.
/// let mut tx = pool.begin().await?;
/// postgres::kv_set_in(&mut tx, app, "orders", "o-1", &serde_json::json!({"items": []}), 0).await?;
/// // And one run of a script, as a principal allowed to invoke it.
/// host.enqueue_invocation_in(&mut *tx, app, "mailer", &serde_json::json!({"to": "a@b"}), "alice")
///     .await?;
/// tx.commit().await?;
/// host.notify(); // needed on SQLite only: PostgreSQL notifies on commit
///
/// shutdown.cancel();
/// runner.await??;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TriggerHost {
    shared: Arc<Shared>,
    authorizer: Arc<dyn Authorizer>,
    options: HostOptions,
}

/// Builds a [`TriggerHost`]: see [`TriggerHost::builder`].
#[must_use = "a builder does nothing until build() is called"]
pub struct TriggerHostBuilder {
    store: Arc<dyn Store>,
    authorizer: Option<Arc<dyn Authorizer>>,
    config: TriggerConfig,
    ceiling: SandboxCeiling,
    options: Option<HostOptions>,
}

impl TriggerHostBuilder {
    /// Who may do what (default: the built-in [`MemberAuthorizer`] over the
    /// store's `app_members`).
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// The dispatcher's policy: depth limit, retries, retention, runs.
    pub fn config(mut self, config: TriggerConfig) -> Self {
        self.config = config;
        self
    }

    /// The sandbox's limits for every invocation.
    pub fn ceiling(mut self, ceiling: SandboxCeiling) -> Self {
        self.ceiling = ceiling;
        self
    }

    /// The compile cache, dispatch tuning and GC interval (default:
    /// [`HostOptions::new`] for the ceiling).
    pub fn options(mut self, options: HostOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// The host. Fails when the sandbox cannot be set up (an engine the
    /// ceiling's limits cannot configure, an unusable cache directory).
    pub fn build(self) -> Result<TriggerHost, crate::runtime::SetupError> {
        let authorizer = self
            .authorizer
            .unwrap_or_else(|| Arc::new(MemberAuthorizer::new(self.store.clone())));
        let options = self
            .options
            .unwrap_or_else(|| HostOptions::new(&self.ceiling));
        TriggerHost::new(self.store, authorizer, self.config, self.ceiling, options)
    }
}

/// Wakes a host's dispatchers after the embedding application committed
/// outbox rows on its own connection: see [`TriggerHost::notify`].
#[derive(Clone)]
pub struct Notifier {
    store: Arc<dyn Store>,
}

impl Notifier {
    /// See [`TriggerHost::notify`].
    pub fn notify(&self) {
        self.store.wake();
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

/// How long a parked reply waits for its owner before GC calls it abandoned.
const STALE_REPLY_AFTER: Duration = Duration::from_secs(600);
/// How often a waiting caller checks the store for a parked reply, in case
/// its signal was lost (PostgreSQL only).
const REPLY_POLL: Duration = Duration::from_millis(200);

impl TriggerHost {
    /// Build the host over an open store.
    pub fn new(
        store: Arc<dyn Store>,
        authorizer: Arc<dyn Authorizer>,
        config: TriggerConfig,
        ceiling: SandboxCeiling,
        options: HostOptions,
    ) -> Result<Self, crate::runtime::SetupError> {
        let runtime = Runtime::new(
            ceiling,
            store.clone(),
            authorizer.clone(),
            options.cache_dir.clone(),
        )?
        .with_secret_key(options.secret_key.clone());
        Ok(TriggerHost {
            shared: Arc::new(Shared {
                store,
                runtime: Arc::new(runtime),
                config,
                inbox: Arc::new(Inbox::default()),
                metrics: Arc::new(Metrics::default()),
            }),
            authorizer,
            options,
        })
    }

    /// Start building a host over `store`: every part not given has its
    /// default (the built-in [`MemberAuthorizer`], the documented defaults of
    /// [`TriggerConfig`] and [`SandboxCeiling`], [`HostOptions::new`]).
    ///
    /// ```no_run
    /// # async fn example(store: std::sync::Arc<dyn picloud_host::store::Store>) -> anyhow::Result<()> {
    /// use picloud_host::TriggerHost;
    /// use picloud_host::config::TriggerConfig;
    ///
    /// let host = TriggerHost::builder(store)
    ///     .config(TriggerConfig { retry_max_attempts: 3, ..TriggerConfig::default() })
    ///     .build()?;
    /// let stop = tokio_util::sync::CancellationToken::new();
    /// let running = host.spawn(stop.clone());
    /// // ... serve, then on shutdown:
    /// stop.cancel();
    /// running.await??;
    /// # Ok(()) }
    /// ```
    pub fn builder(store: Arc<dyn Store>) -> TriggerHostBuilder {
        TriggerHostBuilder {
            store,
            authorizer: None,
            config: TriggerConfig::default(),
            ceiling: SandboxCeiling::default(),
            options: None,
        }
    }

    /// Dispatch on a task of its own until `cancel` fires (see
    /// [`TriggerHost::run`]); the handle ends when in-flight invocations
    /// have finished.
    pub fn spawn(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<store::Result<()>> {
        let host = self.clone();
        tokio::spawn(async move { host.run(cancel).await })
    }

    /// Build the host over a store with the built-in [`MemberAuthorizer`] and
    /// configuration from the environment.
    pub fn from_env(store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let ceiling = SandboxCeiling::from_env()?;
        let config = TriggerConfig::from_env()?;
        let options = HostOptions::from_env(&ceiling)?;
        let authorizer = Arc::new(MemberAuthorizer::new(store.clone()));
        Ok(Self::new(store, authorizer, config, ceiling, options)?)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The runtime (deploy, validate, invoke directly).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.shared.runtime
    }

    /// The authorizer.
    pub fn authorizer(&self) -> &Arc<dyn Authorizer> {
        &self.authorizer
    }

    /// The operations done for a principal over this host's store and
    /// authorizer: triggers, KV, dead letters, and reading runs and logs
    /// ([`Admin::list_runs`], [`Admin::get_run`],
    /// [`Admin::dead_letter_history`], [`Admin::follow_runs`]).
    pub fn admin(&self) -> Admin {
        Admin::new(self.shared.store.clone(), self.authorizer.clone())
            .with_secret_key(self.options.secret_key.clone())
    }

    /// The dispatcher's policy.
    pub fn config(&self) -> &TriggerConfig {
        &self.shared.config
    }

    /// The counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The counters of one app (zero until this process sees its events).
    pub fn app_metrics(&self, app: AppId) -> crate::metrics::AppSnapshot {
        self.shared.metrics.app(app).snapshot()
    }

    /// A Prometheus collector of this host's metrics, with the gauges read
    /// from the store now: the series of the apps `principal` may read (of
    /// every app for `None`, the operator or the embedding application).
    /// Register it in your own `prometheus_client` registry, or use
    /// [`TriggerHost::prometheus`] for the text.
    pub async fn metrics_collector(
        &self,
        principal: Option<&str>,
    ) -> crate::admin::Result<crate::metrics::Collector> {
        let store = &self.shared.store;
        let apps = match principal {
            Some(p) => self.admin().visible_apps(p).await?,
            None => store.list_apps().await?,
        };
        let mut gauges = crate::metrics::Gauges {
            outbox_depth: store.count_events(None).await?,
            ..Default::default()
        };
        for app in &apps {
            gauges
                .outbox_depth_by_app
                .push((app.id, store.count_events(Some(app.id)).await?));
            gauges
                .unresolved_dead_letters
                .push((app.id, store.unresolved_count(app.id).await?));
            gauges.app_names.push((app.id, app.name.clone()));
        }
        let now = Timestamp::now();
        if let Some(due) = store.next_due_at().await?.filter(|d| *d < now) {
            gauges.oldest_due_age_seconds = (now.0 - due.0).num_milliseconds() as f64 / 1000.0;
        }
        let max = i64::from(self.runtime().ceiling().max_instances);
        gauges.instances_max = max;
        gauges.instances_in_use = max - self.runtime().available_instances() as i64;
        Ok(crate::metrics::Collector {
            metrics: self.shared.metrics.clone(),
            apps: principal.map(|_| apps.iter().map(|a| a.id).collect()),
            gauges,
        })
    }

    /// This host's metrics in the Prometheus text format, every series
    /// named `picloud_*` (see [`TriggerHost::metrics_collector`]).
    pub async fn prometheus(&self, principal: Option<&str>) -> crate::admin::Result<String> {
        let mut registry = prometheus_client::registry::Registry::with_prefix("picloud");
        registry.register_collector(Box::new(self.metrics_collector(principal).await?));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .map_err(|e| store::Error::Invalid(format!("cannot write the metrics: {e}")))?;
        Ok(text)
    }

    fn dispatcher(&self) -> Dispatcher {
        Dispatcher::with_shared(self.shared.clone(), self.options.dispatch.clone())
    }

    /// Dispatch until `cancel` fires. In-flight invocations finish first.
    pub async fn run(&self, cancel: CancellationToken) -> store::Result<()> {
        self.dispatcher().run(cancel, RunMode::Forever).await
    }

    /// Dispatch until nothing is due now and nothing is running
    /// (`dispatch --until-idle`): events waiting for a retry stay in the
    /// outbox.
    pub async fn run_until_idle(&self) -> store::Result<()> {
        self.dispatcher()
            .run(CancellationToken::new(), RunMode::UntilIdle)
            .await
    }

    /// Dispatch until every event is settled (succeeded, dead-lettered or
    /// stopped) and the outbox is empty, waiting through retry delays
    /// (`dispatch --until-settled`). Rows held for a disabled trigger do
    /// not keep it waiting.
    pub async fn run_until_empty(&self) -> store::Result<()> {
        self.dispatcher()
            .run(CancellationToken::new(), RunMode::UntilEmpty)
            .await
    }

    /// Dispatch in a mode, until `cancel` or the mode says stop.
    pub async fn run_mode(&self, cancel: CancellationToken, mode: RunMode) -> store::Result<()> {
        self.dispatcher().run(cancel, mode).await
    }

    /// Dispatch and collect garbage every `gc_interval` until `cancel` fires.
    pub async fn serve(&self, cancel: CancellationToken) -> store::Result<()> {
        let gc = async {
            let mut tick = tokio::time::interval(self.options.gc_interval);
            loop {
                tick.tick().await;
                match self.gc().await {
                    Ok(report) => tracing::info!(?report, "garbage collection"),
                    Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
                }
            }
        };
        tokio::select! {
            r = self.run(cancel.clone()) => r,
            _ = gc => Ok(()),
        }
    }

    /// Delete dead letters, abandoned executions and run records past their
    /// retention, record parked replies nobody collected as abandoned, and
    /// reclaim the outbox's dead rows ([`Store::vacuum_outbox`]: PostgreSQL's
    /// `VACUUM`, for servers whose autovacuum is off or behind).
    pub async fn gc(&self) -> store::Result<GcReport> {
        let s = &self.shared;
        let now = Timestamp::now();
        let dead_letters = s
            .store
            .gc_dead_letters(now.minus(s.config.dead_letter_retention))
            .await?;
        let abandoned = s
            .store
            .gc_abandoned(now.minus(s.config.abandoned_retention))
            .await?;
        let stale = s
            .store
            .take_stale_replies(now.minus(STALE_REPLY_AFTER))
            .await?;
        for reply in &stale {
            record_parked_abandoned(s, reply).await?;
        }
        let runs = s
            .store
            .gc_runs(
                now.minus(s.config.run_retention),
                s.config.run_retention_per_app,
            )
            .await?;
        s.store.vacuum_outbox().await?;
        Ok(GcReport {
            dead_letters,
            abandoned,
            stale_replies: stale.len() as u64,
            runs,
        })
    }

    /// Validate `wasm` and deploy it as script `name` of `app` (replacing
    /// the code of a script of that name). `principal` needs
    /// [`Capability::ScriptDeploy`], and the script's host calls then need
    /// its rights too (see [`crate::runtime::Runtime::deploy_as`]); `None`
    /// is the operator or the embedding application itself, unchecked.
    pub async fn deploy(
        &self,
        app: AppId,
        name: &str,
        wasm: &[u8],
        principal: Option<&str>,
    ) -> crate::admin::Result<crate::model::Script> {
        if let Some(p) = principal {
            crate::admin::require(&*self.authorizer, p, Capability::ScriptDeploy(app)).await?;
        }
        Ok(self.runtime().deploy_as(app, name, wasm, principal).await?)
    }

    /// `script` (name or id) of `app`, once `principal` is found to hold
    /// [`Capability::ScriptInvoke`]: the check both ways of invoking share.
    async fn invocable_script(
        &self,
        app: AppId,
        script: &str,
        principal: &str,
    ) -> Result<crate::model::Script, InvokeCallError> {
        if !self
            .authorizer
            .allowed(principal, Capability::ScriptInvoke(app))
            .await?
        {
            return Err(InvokeCallError::PermissionDenied {
                principal: principal.to_owned(),
            });
        }
        Ok(self.shared.store.find_script(app, script).await?)
    }

    /// Tell the dispatchers of this process that the embedding application
    /// committed outbox rows on its own connection (`*_in` calls). Call it
    /// after the commit. On SQLite it starts them at once (p50 under 2 ms,
    /// `bench wake`) instead of at their next poll; on PostgreSQL it is not
    /// needed and does nothing (every commit notifies). Cheap: a broadcast
    /// to in-process subscribers.
    pub fn notify(&self) {
        self.shared.store.wake();
    }

    /// A cheap, cloneable handle that does [`TriggerHost::notify`], for
    /// producers that do not hold the host.
    pub fn notifier(&self) -> Notifier {
        Notifier {
            store: self.shared.store.clone(),
        }
    }

    /// Run `script` (name or id) of `app` as `principal` with `payload`,
    /// asynchronously: the row is written on `conn`, the application's own
    /// connection or open transaction, and commits with it or not at all.
    /// The run is retried and dead-lettered like a trigger's; the script
    /// sees source `http` and op `invoke`, as for [`TriggerHost::invoke`].
    /// Refused unless `principal` may invoke scripts of `app`
    /// ([`Capability::ScriptInvoke`]), and when the script does not exist.
    ///
    /// On SQLite the dispatcher learns of the row when it next looks:
    /// call [`TriggerHost::notify`] after the commit to start it at once.
    pub async fn enqueue_invocation_in<'c>(
        &self,
        conn: impl Into<store::Conn<'c>>,
        app: AppId,
        script: &str,
        payload: &impl serde::Serialize,
        principal: &str,
    ) -> Result<EventId, InvokeCallError> {
        store::validate_printable("principal", principal)?;
        let script = self.invocable_script(app, script, principal).await?;
        let payload = serde_json::to_value(payload)
            .map_err(|e| store::Error::Invalid(format!("the payload is not JSON: {e}")))?;
        let event = NewEvent::invocation(app, script.id, principal, payload);
        Ok(conn.into().enqueue(&event).await?)
    }

    /// Invoke `script` (name or id) of `app` synchronously as `principal` and
    /// wait up to `timeout` for its reply. Failures come back to the caller
    /// and are never retried or dead-lettered.
    pub async fn invoke(
        &self,
        app: AppId,
        script: &str,
        payload: Value,
        principal: &str,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, InvokeCallError> {
        let s = &self.shared;
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || InvokeCallError::Timeout {
            ms: timeout.as_millis(),
        };
        let prepare = self.invocable_script(app, script, principal);
        let script = tokio::time::timeout_at(deadline, prepare)
            .await
            .map_err(|_| timed_out())??;

        let (inbox, mut rx) = s.inbox.open();
        let event = NewEvent {
            script_id: Some(script.id),
            principal: Some(principal.to_owned()),
            reply_to: Some(inbox.clone()),
            ..NewEvent::raw(app, source::HTTP, "invoke", payload)
        };
        let wait = async {
            // On its own task: the caller's timeout may drop this future, and
            // an insert dropped mid-transaction could leave its connection
            // holding the write lock (see runtime::host::to_completion).
            let store = s.store.clone();
            tokio::spawn(async move { store.enqueue(&event).await })
                .await
                .map_err(|e| store::Error::Invalid(format!("enqueue task failed: {e}")))??;
            loop {
                tokio::select! {
                    reply = &mut rx => return Ok(reply.ok()),
                    _ = tokio::time::sleep(REPLY_POLL), if s.store.backend() == store::Backend::Postgres => {
                        collect_reply(s, &inbox).await;
                    }
                }
            }
        };
        let result: Result<Option<ReplyMsg>, InvokeCallError> =
            match tokio::time::timeout_at(deadline, wait).await {
                Ok(r) => r,
                Err(_) => {
                    s.inbox.close(&inbox);
                    // The reply may have landed between the timeout and the close.
                    match rx.try_recv() {
                        Ok(reply) => Ok(Some(reply)),
                        Err(_) => return Err(timed_out()),
                    }
                }
            };
        match result? {
            Some(ReplyMsg::Ok(body)) => Ok(body),
            Some(ReplyMsg::Err(e)) => Err(InvokeCallError::Failed(e)),
            None => Err(timed_out()),
        }
    }
}

/// Take a parked reply for one of this process's inboxes and deliver it, or
/// record it abandoned if its caller has gone.
pub(crate) async fn collect_reply(s: &Shared, inbox: &str) {
    let reply = match s.store.take_reply(inbox).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, inbox, "cannot read a parked reply");
            return;
        }
    };
    let msg = match reply.outcome {
        Outcome::Ok => ReplyMsg::Ok(Some(reply.body.clone()).filter(|b| !b.is_empty())),
        Outcome::Error => ReplyMsg::Err(String::from_utf8_lossy(&reply.body).into_owned()),
    };
    match s.inbox.deliver(inbox, msg) {
        Delivery::Delivered => s.count_reply(),
        Delivery::Gone | Delivery::NotOurs => {
            if let Err(e) = record_parked_abandoned(s, &reply).await {
                tracing::warn!(error = %e, inbox, "cannot record an abandoned execution");
            }
        }
    }
}

async fn record_parked_abandoned(s: &Shared, reply: &store::StoredReply) -> store::Result<()> {
    let detail = match reply.outcome {
        Outcome::Ok => format!("reply of {} bytes, caller gone", reply.body.len()),
        Outcome::Error => String::from_utf8_lossy(&reply.body).into_owned(),
    };
    s.store
        .record_abandoned(&NewAbandoned {
            app_id: reply.app_id,
            outbox_event_id: reply.outbox_event_id,
            script_id: reply.script_id,
            trigger_id: None,
            reply_to: reply.inbox.clone(),
            outcome: reply.outcome,
            detail,
        })
        .await?;
    s.count_abandoned();
    Ok(())
}
