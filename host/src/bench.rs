//! The product's own benchmarks: `picloud-host bench runtime|dispatch`.
//!
//! Rule: a benchmark prints what it measured (counts, percentiles, rates)
//! and the conditions it ran under; it asserts nothing, so a noisy machine
//! gives a noisy figure, never a flaky test.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::auth::{MemberAuthorizer, Role};
use crate::config::{SandboxCeiling, TriggerConfig};
use crate::dispatch::DispatchOptions;
use crate::model::{KvOps, NewEvent, NewTrigger, Script, TriggerSpec, source};
use crate::runs::RunsMode;
use crate::runtime::{Invocation, Runtime};
use crate::service::{HostOptions, TriggerHost};
use crate::store::Store;

/// Percentiles of a set of durations.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Percentiles {
    /// How many samples.
    pub count: usize,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Largest, microseconds.
    pub max_us: f64,
}

impl Percentiles {
    /// Summarise samples.
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i].as_secs_f64() * 1e6
        };
        Percentiles {
            count: samples.len(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: at(1.0),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} p50={:.1} µs p99={:.1} µs max={:.1} µs",
            self.count, self.p50_us, self.p99_us, self.max_us
        )
    }
}

/// A progress line on stderr, redrawn in place.
pub struct Progress {
    label: &'static str,
    total: u64,
    started: Instant,
    last: Mutex<Instant>,
}

impl Progress {
    /// Start a progress line.
    pub fn new(label: &'static str, total: u64) -> Self {
        Progress {
            label,
            total,
            started: Instant::now(),
            last: Mutex::new(Instant::now() - Duration::from_secs(1)),
        }
    }

    /// Redraw (at most ten times a second).
    pub fn update(&self, done: u64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() < Duration::from_millis(100) && done < self.total {
            return;
        }
        *last = Instant::now();
        let width = 30u64;
        let filled = (done.min(self.total) * width)
            .checked_div(self.total)
            .unwrap_or(width);
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\r{:<10} [{}{}] {:>8}/{} {:>9.0}/s",
            self.label,
            "#".repeat(filled as usize),
            "-".repeat((width - filled) as usize),
            done,
            self.total,
            rate
        );
    }

    /// End the line.
    pub fn finish(&self, done: u64) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Instant::now() - Duration::from_secs(1);
        self.update(done);
        eprintln!();
    }
}

const BENCH_PRINCIPAL: &str = "bench";

async fn bench_app(
    store: &Arc<dyn Store>,
    runtime: &Runtime,
    wasm: &[u8],
) -> anyhow::Result<Script> {
    let name = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let app = store.create_app(&name).await?;
    store
        .set_member(app.id, BENCH_PRINCIPAL, Role::Admin)
        .await?;
    Ok(runtime.deploy(app.id, "noop", wasm).await?)
}

fn noop_invocation(script: &Script) -> Invocation {
    Invocation {
        event_id: crate::model::EventId::new(),
        app_id: script.app_id,
        source: "bench".into(),
        op: "noop".into(),
        payload: "{}".into(),
        depth: 0,
        attempt: 1,
        trigger_id: None,
        script_id: script.id,
        principal: BENCH_PRINCIPAL.into(),
        chain: Vec::new(),
    }
}

/// Per-invocation overhead of the component in `wasm` (instantiate, call,
/// drop): `iterations` calls on one task, then the same spread over
/// `parallel` tasks to keep every core busy.
pub async fn runtime_overhead(
    store: Arc<dyn Store>,
    wasm: &[u8],
    iterations: usize,
    parallel: usize,
) -> anyhow::Result<(Percentiles, Percentiles)> {
    let auth = Arc::new(MemberAuthorizer::new(store.clone()));
    let runtime = Arc::new(Runtime::new(
        SandboxCeiling::default(),
        store.clone(),
        auth,
        None,
    )?);
    let script = bench_app(&store, &runtime, wasm).await?;
    for _ in 0..200 {
        runtime.invoke(&script, noop_invocation(&script)).await?;
    }
    let progress = Progress::new("1 task", iterations as u64);
    let mut single = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let inv = noop_invocation(&script);
        let t = Instant::now();
        runtime.invoke(&script, inv).await?;
        single.push(t.elapsed());
        progress.update(i as u64 + 1);
    }
    progress.finish(iterations as u64);

    let progress = Arc::new(Progress::new(
        if parallel == 1 { "1 task" } else { "parallel" },
        iterations as u64,
    ));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let (runtime, script, progress, done) = (
            runtime.clone(),
            script.clone(),
            progress.clone(),
            done.clone(),
        );
        let n = iterations / parallel;
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let inv = noop_invocation(&script);
                let t = Instant::now();
                runtime.invoke(&script, inv).await?;
                samples.push(t.elapsed());
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                progress.update(d);
            }
            anyhow::Ok(samples)
        });
    }
    let mut busy = Vec::with_capacity(iterations);
    while let Some(r) = tasks.join_next().await {
        busy.extend(r??);
    }
    progress.finish(done.load(std::sync::atomic::Ordering::Relaxed));
    Ok((Percentiles::of(single), Percentiles::of(busy)))
}

/// Time from a fresh runtime to the end of its first call, with the compile
/// cache in `cache_dir` (cold when empty, warm when a previous run filled it).
pub async fn first_call(
    store: Arc<dyn Store>,
    wasm: &[u8],
    cache_dir: std::path::PathBuf,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let auth = Arc::new(MemberAuthorizer::new(store.clone()));
    let runtime = Runtime::new(
        SandboxCeiling::default(),
        store.clone(),
        auth,
        Some(cache_dir),
    )?;
    // Store the script without compiling it (deploy would compile).
    let name = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let app = store.create_app(&name).await?;
    store
        .set_member(app.id, BENCH_PRINCIPAL, Role::Admin)
        .await?;
    let sha = crate::runtime::sha256_hex(wasm);
    let script = store.put_script(app.id, "noop", wasm, &sha, None).await?;
    let setup = started.elapsed();
    runtime.invoke(&script, noop_invocation(&script)).await?;
    Ok(started.elapsed() - setup)
}

/// The outcome of a dispatch benchmark.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct DispatchReport {
    /// Events dispatched.
    pub events: u64,
    /// Seconds spent filling the outbox.
    pub fill_secs: f64,
    /// Seconds from the first claim to the empty outbox.
    pub drain_secs: f64,
    /// Events per second while draining.
    pub events_per_sec: f64,
    /// Insert-to-start latency while draining a full outbox (mostly queueing).
    pub backlog_latency: Percentiles,
    /// Insert-to-start latency of single events on an idle dispatcher.
    pub idle_latency: Percentiles,
}

/// Where a dispatch benchmark's events come from (`bench dispatch
/// --source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BenchSource {
    /// KV writes to collection `bench`, matched by a kv trigger.
    #[default]
    Kv,
    /// Messages to queue `bench`, consumed by a queue trigger taking
    /// batches of this many.
    Queue(u32),
    /// Messages published on topic `bench`, matched by a pubsub trigger.
    Pubsub,
}

impl BenchSource {
    /// The bench trigger's spec.
    fn spec(self, ordered: bool) -> TriggerSpec {
        match self {
            BenchSource::Kv => TriggerSpec::Kv {
                collection: "bench".into(),
                ops: KvOps::ALL,
                ordered,
            },
            BenchSource::Queue(batch) => TriggerSpec::Queue {
                queue: "bench".into(),
                batch,
            },
            BenchSource::Pubsub => TriggerSpec::Pubsub {
                topic: "bench".into(),
            },
        }
    }

    /// The `i`-th event for `app`, of key `key`.
    fn event(self, app: crate::model::AppId, i: u64, key: u64) -> anyhow::Result<NewEvent> {
        Ok(match self {
            BenchSource::Kv => NewEvent::raw(
                app,
                source::KV,
                "set",
                json!({"collection": "bench", "key": format!("k{key}"), "value": i, "version": 1}),
            ),
            BenchSource::Queue(_) => crate::messages::queue_message(app, "bench", json!(i), 0)?,
            BenchSource::Pubsub => crate::messages::publication(app, "bench", json!(i))?,
        })
    }
}

/// A host over `store` with one app whose trigger (see [`BenchSource`])
/// runs the component in `wasm`, recording when each run starts.
async fn bench_host(
    store: &Arc<dyn Store>,
    wasm: &[u8],
    runs: Option<RunsMode>,
    spec: TriggerSpec,
) -> anyhow::Result<(
    Arc<TriggerHost>,
    Script,
    Arc<crate::dispatch::StartLatencies>,
)> {
    let ceiling = SandboxCeiling::from_env()?;
    let config = TriggerConfig::from_env()?;
    let auth = Arc::new(MemberAuthorizer::new(store.clone()));
    let latencies = Arc::new(crate::dispatch::StartLatencies::default());
    let mut options = HostOptions::new(&ceiling);
    options.cache_dir = None;
    options.dispatch = DispatchOptions {
        start_latencies: Some(latencies.clone()),
        ..DispatchOptions::for_timeout(ceiling.timeout)
    };
    let host = Arc::new(TriggerHost::new(
        store.clone(),
        auth,
        TriggerConfig {
            runs: runs.unwrap_or(config.runs),
            ..config
        },
        ceiling,
        options,
    )?);
    let script = bench_app(store, host.runtime(), wasm).await?;
    store
        .create_trigger(&NewTrigger {
            app_id: script.app_id,
            script_id: script.id,
            name: "bench".into(),
            registered_by_principal: BENCH_PRINCIPAL.into(),
            spec,
            retry: Default::default(),
            max_depth: None,
        })
        .await?;
    Ok((host, script, latencies))
}

/// The shape of a dispatch benchmark ([`dispatch`]).
#[derive(Clone, Debug)]
pub struct DispatchBench {
    /// How many events to fill the outbox with and drain.
    pub events: u64,
    /// Single events timed on the idle dispatcher afterwards.
    pub idle_samples: usize,
    /// Overrides `PICLOUD_RUNS`.
    pub runs: Option<RunsMode>,
    /// The bench trigger runs in order per key (`trigger add-kv --ordered`).
    pub ordered: bool,
    /// The events go to this many keys in turn (`None`: a key each).
    pub keys: Option<u64>,
    /// Beside the bench app, another app whose ordered trigger has this many
    /// events waiting on one key behind a first one that waits a day for
    /// its retry: a tenant's long backlog on one key, which must not slow
    /// the bench app.
    pub backlog: u64,
    /// Where the events come from.
    pub source: BenchSource,
}

impl DispatchBench {
    /// `events` events, 200 idle samples, nothing else.
    pub fn new(events: u64) -> Self {
        DispatchBench {
            events,
            idle_samples: 200,
            runs: None,
            ordered: false,
            keys: None,
            backlog: 0,
            source: BenchSource::Kv,
        }
    }
}

/// Fill the outbox with `shape.events` kv events matched by one trigger
/// running the component in `wasm`, drain them, then measure single events
/// on the idle dispatcher (see [`DispatchBench`] for the rest of the shape).
pub async fn dispatch(
    store: Arc<dyn Store>,
    wasm: &[u8],
    shape: &DispatchBench,
) -> anyhow::Result<DispatchReport> {
    let DispatchBench {
        events,
        idle_samples,
        runs,
        ordered,
        keys,
        backlog,
        source: from,
    } = shape.clone();
    // Every pass starts from an outbox without dead rows, as autovacuum
    // leaves it: passes in one database are then comparable even on a
    // server that runs with autovacuum off (this project's CI machines).
    store.vacuum_outbox().await?;
    let (host, script, latencies) = bench_host(&store, wasm, runs, from.spec(ordered)).await?;
    if backlog > 0 {
        waiting_backlog(&store, host.runtime(), wasm, backlog).await?;
    }
    let key = |i: u64| keys.map_or(i, |k| i % k.max(1));
    let event = |i: u64| from.event(script.app_id, i, key(i));

    let fill = Progress::new("fill", events);
    let fill_started = Instant::now();
    let chunk = 1000u64;
    let mut written = 0u64;
    while written < events {
        let n = chunk.min(events - written);
        let batch = (written..written + n)
            .map(event)
            .collect::<anyhow::Result<Vec<NewEvent>>>()?;
        store.enqueue_many(&batch).await?;
        written += n;
        fill.update(written);
    }
    fill.finish(written);
    let fill_secs = fill_started.elapsed().as_secs_f64();

    let before = store.count_events(Some(script.app_id)).await? as u64;
    let drain = Arc::new(Progress::new("drain", before));
    let cancel = tokio_util::sync::CancellationToken::new();
    let runner = {
        let (host, cancel) = (host.clone(), cancel.clone());
        tokio::spawn(async move { host.run(cancel).await })
    };
    let drain_started = Instant::now();
    loop {
        let done = host.metrics().succeeded;
        drain.update(done);
        if done >= before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    drain.finish(host.metrics().succeeded);
    let backlog_latency = Percentiles::of(latencies.take());

    // Single events on the idle dispatcher.
    let idle = Progress::new("idle", idle_samples as u64);
    for i in 0..idle_samples {
        let target = host.metrics().succeeded + 1;
        store.enqueue(&event(events + i as u64)?).await?;
        while host.metrics().succeeded < target {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        idle.update(i as u64 + 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    idle.finish(idle_samples as u64);
    let idle_latency = Percentiles::of(latencies.take());
    cancel.cancel();
    runner.await??;
    Ok(DispatchReport {
        events: before,
        fill_secs,
        drain_secs,
        events_per_sec: before as f64 / drain_secs,
        backlog_latency,
        idle_latency,
    })
}

/// Another app with an ordered trigger and `n` rows of one key in its
/// outbox, as its fan-outs leave them: the first waiting a day for its
/// retry, the others behind it (parked).
async fn waiting_backlog(
    store: &Arc<dyn Store>,
    runtime: &Runtime,
    wasm: &[u8],
    n: u64,
) -> anyhow::Result<()> {
    let script = bench_app(store, runtime, wasm).await?;
    let trigger = store
        .create_trigger(&NewTrigger {
            app_id: script.app_id,
            script_id: script.id,
            name: "backlog".into(),
            registered_by_principal: BENCH_PRINCIPAL.into(),
            spec: TriggerSpec::Kv {
                collection: "backlog".into(),
                ops: KvOps::ALL,
                ordered: true,
            },
            retry: Default::default(),
            max_depth: None,
        })
        .await?;
    let key = crate::model::order_key("backlog", "hot");
    let retry_at = crate::model::Timestamp::now().plus(Duration::from_secs(86_400));
    for first in (0..n).step_by(1000) {
        let rows: Vec<NewEvent> = (first..(first + 1000).min(n))
            .map(|i| {
                let mut row = NewEvent::raw(
                    script.app_id,
                    source::KV,
                    "set",
                    json!({"collection": "backlog", "key": "hot", "value": i, "version": i + 1}),
                );
                row.trigger_id = Some(trigger.id);
                row.script_id = Some(script.id);
                row.event_id = Some(crate::model::EventId::new());
                row.order = crate::model::Order::Fixed(key.clone(), i as i64 + 1);
                if i == 0 {
                    row.attempt_count = 1;
                    row.due_at = Some(retry_at);
                }
                row
            })
            .collect();
        store.enqueue_many(&rows).await?;
    }
    Ok(())
}

/// The embedding application's own pool, which the host does not watch.
pub enum ManagerPool {
    /// On SQLite.
    Sqlite(sqlx::SqlitePool),
    /// On PostgreSQL.
    Postgres(sqlx::PgPool),
}

/// Commit-to-start latency of events committed by the embedding
/// application (`bench wake`).
#[derive(Clone, Debug)]
pub struct WakeReport {
    /// Without telling the host: found by its next poll (or, on PostgreSQL,
    /// by the notification every commit sends).
    pub unannounced: Percentiles,
    /// With [`TriggerHost::notify`] after each commit.
    pub notified: Percentiles,
}

/// Write `samples` single kv events, each in its own transaction on
/// `manager` (the application's pool, not the store's), to an idle
/// dispatcher: first without telling it, then calling
/// [`TriggerHost::notify`] after each commit. Measures from the event's
/// insert to its script's start.
pub async fn wake(
    store: Arc<dyn Store>,
    manager: ManagerPool,
    wasm: &[u8],
    samples: usize,
) -> anyhow::Result<WakeReport> {
    let (host, script, latencies) =
        bench_host(&store, wasm, None, BenchSource::Kv.spec(false)).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let runner = {
        let (host, cancel) = (host.clone(), cancel.clone());
        tokio::spawn(async move { host.run(cancel).await })
    };
    let mut report = Vec::new();
    for (label, notify) in [("unannounced", false), ("notified", true)] {
        let progress = Progress::new(label, samples as u64);
        for i in 0..samples {
            let event = NewEvent::raw(
                script.app_id,
                source::KV,
                "set",
                json!({"collection": "bench", "key": format!("w{i}"), "value": i, "version": 1}),
            );
            let target = host.metrics().succeeded + 1;
            match &manager {
                ManagerPool::Sqlite(pool) => {
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                    crate::store::Conn::from(&mut *tx).enqueue(&event).await?;
                    tx.commit().await?;
                }
                ManagerPool::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
                    crate::store::Conn::from(&mut *tx).enqueue(&event).await?;
                    tx.commit().await?;
                }
            }
            if notify {
                host.notify();
            }
            while host.metrics().succeeded < target {
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
            progress.update(i as u64 + 1);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        progress.finish(samples as u64);
        report.push(Percentiles::of(latencies.take()));
    }
    cancel.cancel();
    runner.await??;
    let notified = report.pop().expect("two passes");
    let unannounced = report.pop().expect("two passes");
    Ok(WakeReport {
        unannounced,
        notified,
    })
}

/// What `bench api` measured.
#[cfg(feature = "http")]
#[derive(Clone, Debug, serde::Serialize)]
pub struct ApiReport {
    /// Dead letters of the measured app, all unresolved.
    pub dead_letters: u64,
    /// `GET .../dead-letters/count` (the badge).
    pub badge: Percentiles,
    /// `GET .../dead-letters?unresolved=true`: the dashboard's first page
    /// (50, newest first).
    pub first_page: Percentiles,
    /// `GET .../dead-letters?unresolved=true&after=...`: a page deep in
    /// the list (after the 50,000th, or the middle).
    pub deep_page: Percentiles,
    /// `GET /api/v1/apps`: every app with its badge.
    pub apps: Percentiles,
}

/// A new app with `dead_letters` unresolved dead letters (8 writers at
/// once), readable by the principal `bench`.
pub async fn seed_dead_letters(
    store: Arc<dyn Store>,
    dead_letters: u64,
) -> anyhow::Result<crate::model::AppId> {
    use crate::model::{EventId, NewDeadLetter, Timestamp};
    let app = store
        .create_app(&format!("bench-api-{}", uuid::Uuid::new_v4().simple()))
        .await?;
    store
        .set_member(app.id, "bench", crate::auth::Role::Viewer)
        .await?;
    let progress = Arc::new(Progress::new("seed", dead_letters));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let (store, progress, done) = (store.clone(), progress.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = w;
                while i < dead_letters {
                    let now = Timestamp::now();
                    let dead = NewDeadLetter {
                        original_event_id: EventId::new(),
                        app_id: app.id,
                        source: "kv".into(),
                        op: "set".into(),
                        trigger_id: None,
                        script_id: None,
                        payload: serde_json::json!({"collection": "orders", "key": format!("o-{i}"), "value": {"n": i}, "version": 1}),
                        depth: 0,
                        attempt_count: 5,
                        first_attempt_at: now,
                        last_attempt_at: now,
                        last_error: format!("order o-{i}: the payment service answered 503"),
                    };
                    store.dead_letter(&dead, false, &[]).await?;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n % 1000 == 0 {
                        progress.update(n);
                    }
                    i += 8;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in writers {
        w.await??;
    }
    progress.finish(dead_letters);
    Ok(app.id)
}

/// Serve the API on 127.0.0.1 and time `requests` sequential calls of each
/// measured route on `app` (seeded by [`seed_dead_letters`]) from one
/// keep-alive client, after a warm-up.
#[cfg(feature = "http")]
pub async fn api(
    store: Arc<dyn Store>,
    app: crate::model::AppId,
    requests: usize,
) -> anyhow::Result<ApiReport> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let dead_letters = store.unresolved_count(app).await?.max(0) as u64;
    let host = crate::TriggerHost::builder(store.clone()).build()?;
    let (_, secret) = crate::tokens::create(&*store, "bench", "bench").await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(crate::http::serve(
        host,
        "127.0.0.1:0".parse()?,
        stop.clone(),
        move |a| {
            let _ = tx.send(a);
        },
    ));
    let base = format!("http://{}/api/v1", rx.await?);
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let get = async |path: &str| -> anyhow::Result<(Duration, bytes::Bytes)> {
        let request = axum::http::Request::get(format!("{base}{path}"))
            .header("authorization", format!("Bearer {secret}"))
            .body(Empty::new())?;
        let started = Instant::now();
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let took = started.elapsed();
        anyhow::ensure!(
            status.is_success(),
            "{path}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok((took, body))
    };
    let time = async |path: &str| -> anyhow::Result<Percentiles> {
        for _ in 0..requests.min(50) {
            get(path).await?;
        }
        let mut samples = Vec::with_capacity(requests);
        for _ in 0..requests {
            samples.push(get(path).await?.0);
        }
        Ok(Percentiles::of(samples))
    };
    let dl = format!("/apps/{app}/dead-letters");
    // A cursor deep in the list: the id at the middle, newest first.
    let middle = dead_letters / 2;
    let mut cursor: Option<String> = None;
    let mut walked = 0;
    while walked + 500 <= middle {
        let path = match &cursor {
            Some(c) => format!("{dl}?unresolved=true&limit=500&after={c}"),
            None => format!("{dl}?unresolved=true&limit=500"),
        };
        let page: serde_json::Value = serde_json::from_slice(&get(&path).await?.1)?;
        cursor = page["next"].as_str().map(str::to_owned);
        walked += 500;
        if cursor.is_none() {
            break;
        }
    }
    let deep = match &cursor {
        Some(c) => format!("{dl}?unresolved=true&after={c}"),
        None => format!("{dl}?unresolved=true"),
    };
    let report = ApiReport {
        dead_letters,
        badge: time(&format!("{dl}/count")).await?,
        first_page: time(&format!("{dl}?unresolved=true")).await?,
        deep_page: time(&deep).await?,
        apps: time("/apps").await?,
    };
    stop.cancel();
    server.await??;
    Ok(report)
}

/// What outbound HTTP costs a script (`bench outbound`).
#[cfg(feature = "http")]
#[derive(Clone, Copy, Debug)]
pub struct OutboundReport {
    /// One GET to a server on 127.0.0.1 from the host itself (hyper's
    /// client, a fresh connection each time): the floor.
    pub direct: Percentiles,
    /// An invocation of the probe making that GET: sandbox, checks, request.
    pub script: Percentiles,
    /// An invocation of the probe whose GET is refused (host not allowed).
    pub refused: Percentiles,
}

/// Time `requests` invocations of `wasm` (the http-probe fixture) making
/// one GET each to a server this function starts on 127.0.0.1, those
/// refused by the allow-list, and the same GET from the host directly.
#[cfg(feature = "http")]
pub async fn outbound(
    store: Arc<dyn Store>,
    wasm: &[u8],
    requests: usize,
) -> anyhow::Result<OutboundReport> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
    let served = tokio::spawn(async move { axum::serve(listener, server).await });

    let ceiling = SandboxCeiling {
        outbound_allow_nets: crate::outbound::parse_nets("127.0.0.0/8")
            .map_err(anyhow::Error::msg)?,
        ..SandboxCeiling::default()
    };
    let auth = Arc::new(MemberAuthorizer::new(store.clone()));
    let runtime = Runtime::new(ceiling, store.clone(), auth, None)?;
    let script = bench_app(&store, &runtime, wasm).await?;
    store
        .allow_host(script.app_id, &format!("http://127.0.0.1:{port}"))
        .await?;
    let url = format!("http://127.0.0.1:{port}/hello");

    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Empty<bytes::Bytes>>();
    let mut direct = Vec::with_capacity(requests);
    for i in 0..requests + requests.min(50) {
        let started = Instant::now();
        let response = client.get(url.parse()?).await?;
        response.into_body().collect().await?;
        if i >= requests.min(50) {
            direct.push(started.elapsed());
        }
    }

    let invoke = async |target: &str| -> anyhow::Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(requests);
        for i in 0..requests + requests.min(50) {
            let inv = Invocation {
                payload: serde_json::json!({ "url": target }).to_string(),
                ..noop_invocation(&script)
            };
            let started = Instant::now();
            let done = runtime.invoke(&script, inv).await?;
            let took = started.elapsed();
            let reply: serde_json::Value =
                serde_json::from_slice(done.reply.as_deref().unwrap_or(b"null"))?;
            anyhow::ensure!(
                reply["status"] == 200 || target != url,
                "the probe's request failed: {reply}"
            );
            if i >= requests.min(50) {
                samples.push(took);
            }
        }
        Ok(samples)
    };
    let script_samples = invoke(&url).await?;
    let refused = invoke(&format!("http://127.0.0.1:{}/hello", port ^ 1)).await?;
    served.abort();
    Ok(OutboundReport {
        direct: Percentiles::of(direct),
        script: Percentiles::of(script_samples),
        refused: Percentiles::of(refused),
    })
}
