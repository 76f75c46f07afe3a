//! `picloud-host bench ...`: run the library's benchmarks and print figures.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use picloud_host::bench;
use picloud_host::runs::RunsMode;
use picloud_host::store;

use crate::args::BenchCmd;

fn wasm(path: Option<PathBuf>) -> Result<Vec<u8>> {
    let path = match path {
        Some(p) => p,
        None => crate::guests::find(&["noop"])?.remove(0),
    };
    std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
}

pub async fn run(url: &str, cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Outbound {
            wasm: path,
            requests,
        } => {
            let path = match path {
                Some(p) => p,
                None => crate::guests::find(&["http-probe"])?.remove(0),
            };
            let code = std::fs::read(&path)?;
            let (store, _dir) = scratch_store(url).await?;
            println!("outbound HTTP, one GET to 127.0.0.1 per call, {requests} calls each:");
            let report = bench::outbound(store, &code, requests).await?;
            println!("  host, directly (hyper)         {}", report.direct);
            println!("  script, one GET                {}", report.script);
            println!("  script, refused (not allowed)  {}", report.refused);
            println!(
                "  what the sandbox and checks add to a request: p50 {:.0} µs",
                report.script.p50_us - report.direct.p50_us
            );
        }
        BenchCmd::Runtime {
            wasm: path,
            iterations,
        } => {
            let path = match path {
                Some(p) => p,
                None => crate::guests::find(&["noop"])?.remove(0),
            };
            let code = std::fs::read(&path)?;
            let (store, _dir) = scratch_store(url).await?;
            println!(
                "runtime overhead of a no-op component (instantiate + call + drop), {iterations} calls each:"
            );
            let (single, busy) = bench::runtime_overhead(store, &code, iterations, 2).await?;
            println!("  1 task          {single}");
            println!("  2 tasks (busy)  {busy}");

            let cache =
                std::env::temp_dir().join(format!("picloud-bench-cache-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&cache);
            let cold = first_call_process(&path, &cache)?;
            let warm = first_call_process(&path, &cache)?;
            let _ = std::fs::remove_dir_all(&cache);
            println!("time to first call of a fresh process (compile cache on disk):");
            println!(
                "  cold (empty cache)  first call {:>8.1} ms, whole process {:>8.1} ms",
                cold.0, cold.1
            );
            println!(
                "  warm (cached)       first call {:>8.1} ms, whole process {:>8.1} ms",
                warm.0, warm.1
            );
        }
        BenchCmd::Api {
            dead_letters,
            requests,
        } => {
            let (store, dir) = scratch_store(url).await?;
            let url = match &dir {
                Some(d) => format!("sqlite://{}", d.0.join("bench.db").display()),
                None => url.to_owned(),
            };
            let url = url.as_str();
            println!(
                "HTTP API on {} with {dead_letters} unresolved dead letters in one app, {requests} sequential requests per route:",
                store::redact(url)
            );
            let app = bench::seed_dead_letters(store.clone(), dead_letters).await?;
            // What autovacuum does on a server that runs it (this one may not).
            settle_statistics(url).await?;
            let r = bench::api(store.clone(), app, requests).await?;
            println!("  badge count          {}", r.badge);
            println!("  first page (50)      {}", r.first_page);
            println!("  page in the middle   {}", r.deep_page);
            println!("  apps with badges     {}", r.apps);
            println!("  plan of the badge query:");
            for line in badge_plan(url).await? {
                println!("    {line}");
            }
        }
        BenchCmd::Dispatch {
            wasm: path,
            events,
            idle_samples,
            runs,
            ordered,
            keys,
            backlog,
            source,
            batch,
        } => {
            let from = match source.as_str() {
                "kv" => bench::BenchSource::Kv,
                "queue" if (1..=1000).contains(&batch) => bench::BenchSource::Queue(batch),
                "queue" => anyhow::bail!("--batch {batch} is out of range: give 1 to 1000"),
                "pubsub" => bench::BenchSource::Pubsub,
                other => anyhow::bail!("unknown --source '{other}': use kv, queue or pubsub"),
            };
            if from != bench::BenchSource::Kv && (ordered || keys.is_some()) {
                anyhow::bail!("--ordered and --keys are for --source kv: leave them out");
            }
            if keys == Some(0) {
                anyhow::bail!("--keys 0: give at least 1 key, or leave it out for a key per event");
            }
            let code = wasm(path)?;
            let modes: Vec<Option<RunsMode>> = if runs.is_empty() {
                vec![None]
            } else {
                runs.iter()
                    .map(|m| {
                        m.trim()
                            .parse()
                            .map(Some)
                            .map_err(|e| anyhow::anyhow!("invalid --runs mode '{m}': expected {e}"))
                    })
                    .collect::<Result<_>>()?
            };
            let mut throughput: Vec<(String, f64)> = Vec::new();
            for mode in &modes {
                let (store, dir) = scratch_store(url).await?;
                let backend = store.backend();
                let shape = bench::DispatchBench {
                    idle_samples,
                    runs: *mode,
                    ordered,
                    keys,
                    backlog,
                    source: from,
                    ..bench::DispatchBench::new(events)
                };
                let r = bench::dispatch(store, &code, &shape).await?;
                let place = match &dir {
                    Some(d) => format!("a temporary file in {}", d.0.display()),
                    None => store::redact(url),
                };
                let label = mode.map_or_else(
                    || std::env::var(RunsMode::VAR).unwrap_or_else(|_| "all".into()),
                    |m| format!("{m:?}").to_lowercase(),
                );
                let shape = match (ordered, keys) {
                    (false, None) => String::new(),
                    (true, None) => ", ordered trigger, a key per event".into(),
                    (o, Some(k)) => format!(
                        ",{} trigger, {k} keys",
                        if o { " ordered" } else { " unordered" }
                    ),
                };
                let shape = match from {
                    bench::BenchSource::Kv => shape,
                    bench::BenchSource::Queue(1) => format!("{shape}, queue messages"),
                    bench::BenchSource::Queue(n) => {
                        format!("{shape}, queue messages in batches of up to {n}")
                    }
                    bench::BenchSource::Pubsub => format!("{shape}, pub/sub messages"),
                };
                let shape = if backlog > 0 {
                    format!(
                        "{shape}, beside another app's {backlog} events waiting on one ordered key"
                    )
                } else {
                    shape
                };
                println!("dispatch on {backend:?} ({place}), PICLOUD_RUNS={label}{shape}:");
                println!("  events               {}", r.events);
                println!(
                    "  fill                 {:.2} s ({:.0} inserts/s)",
                    r.fill_secs,
                    r.events as f64 / r.fill_secs
                );
                println!("  drain                {:.2} s", r.drain_secs);
                println!("  throughput           {:.0} events/s", r.events_per_sec);
                println!("  insert-to-start, backlog  {}", r.backlog_latency);
                println!("  insert-to-start, idle     {}", r.idle_latency);
                throughput.push((label, r.events_per_sec));
            }
            let mean = |label: &str| {
                let xs: Vec<f64> = throughput
                    .iter()
                    .filter(|(l, _)| l == label)
                    .map(|(_, x)| *x)
                    .collect();
                (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
            };
            if let (Some(off), Some(all)) = (mean("off"), mean("all")) {
                println!(
                    "run records: PICLOUD_RUNS=all {all:.0} events/s against off {off:.0} events/s: {:.1}% kept (means of the passes)",
                    100.0 * all / off
                );
            }
        }
        BenchCmd::Wake {
            wasm: path,
            samples,
        } => {
            let code = wasm(path)?;
            let (store, dir) = scratch_store(url).await?;
            let backend = store.backend();
            let place = match &dir {
                Some(d) => format!("sqlite://{}", d.0.join("bench.db").display()),
                None => url.to_owned(),
            };
            // The application's own pool: the host does not watch it.
            let manager = match backend {
                store::Backend::Sqlite => bench::ManagerPool::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(
                            place
                                .parse::<sqlx::sqlite::SqliteConnectOptions>()?
                                .busy_timeout(std::time::Duration::from_secs(5)),
                        )
                        .await?,
                ),
                store::Backend::Postgres => {
                    bench::ManagerPool::Postgres(sqlx::PgPool::connect(&place).await?)
                }
            };
            let r = bench::wake(store, manager, &code, samples).await?;
            println!(
                "commit-to-start of the application's own commits on {backend:?} ({}):",
                store::redact(&place)
            );
            println!("  without notify()   {}", r.unannounced);
            println!("  with notify()      {}", r.notified);
        }
        BenchCmd::FirstCall { wasm, cache_dir } => {
            let code = std::fs::read(&wasm)?;
            let (store, _dir) = scratch_store("sqlite::memory:").await?;
            let took = bench::first_call(store, &code, cache_dir).await?;
            println!("{}", took.as_secs_f64() * 1000.0);
        }
    }
    Ok(())
}

/// A store for a benchmark: a fresh temporary SQLite file when the URL is the
/// default `sqlite://picloud.db` (so a benchmark never fills a real database),
/// otherwise the given database, migrated.
async fn scratch_store(url: &str) -> Result<(std::sync::Arc<dyn store::Store>, Option<TempDir>)> {
    let (url, dir) = if url == "sqlite://picloud.db" || url == "sqlite::memory:" {
        let dir = TempDir::new()?;
        (
            format!("sqlite://{}", dir.0.join("bench.db").display()),
            Some(dir),
        )
    } else {
        (url.to_owned(), None)
    };
    let store = store::connect(&url).await?;
    store.migrate().await?;
    Ok((store, dir))
}

/// The database's plan of the badge query (an app's unresolved count),
/// which should read the partial index `idx_dead_letters_app_unresolved`.
async fn badge_plan(url: &str) -> Result<Vec<String>> {
    use sqlx::Connection;
    const BADGE: &str = "select count(*) from dead_letters where app_id = (select id from apps order by created_at desc limit 1) and resolved_at is null";
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("explain query plan {BADGE}"))
                .fetch_all(&mut conn)
                .await?;
        Ok(rows.into_iter().map(|r| r.3).collect())
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let schema = store::schema::schema();
        sqlx::query(&format!("set search_path to \"{schema}\""))
            .execute(&mut conn)
            .await?;
        let rows: Vec<(String,)> = sqlx::query_as(&format!("explain {BADGE}"))
            .fetch_all(&mut conn)
            .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}

/// On PostgreSQL, `VACUUM (ANALYZE)` the dead letters just written, as
/// autovacuum would soon after: planner statistics, and a visibility map
/// that lets the badge count read the index alone.
async fn settle_statistics(url: &str) -> Result<()> {
    use sqlx::Connection;
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let schema = store::schema::schema();
        sqlx::query(&format!("vacuum (analyze) \"{schema}\".dead_letters"))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("picloud-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `picloud-host bench first-call` in a fresh process: (first call ms as
/// the child measured it, whole process ms as seen from here).
fn first_call_process(wasm: &PathBuf, cache: &PathBuf) -> Result<(f64, f64)> {
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let out = Command::new(exe)
        .args(["bench", "first-call", "--wasm"])
        .arg(wasm)
        .arg("--cache-dir")
        .arg(cache)
        .output()?;
    let whole = started.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "first-call child failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let ms: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    Ok((ms, whole))
}
