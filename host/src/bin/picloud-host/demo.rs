//! `picloud-host demo`: the whole lifecycle on a fresh SQLite database, told
//! step by step, ending with a summary a person can check against the
//! database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use picloud_host::admin::{Admin, TriggerOptions};
use picloud_host::auth::{MemberAuthorizer, Role};
use picloud_host::config::{SandboxCeiling, TriggerConfig};
use picloud_host::cron::CatchUp;
use picloud_host::model::{DeadLetterFilter, KvOps, Resolution};
use picloud_host::runs::RunFilter;
use picloud_host::store;
use picloud_host::{HostOptions, TriggerHost};
use serde_json::json;

use crate::args::DemoArgs;

const EXAMPLES: [&str; 7] = [
    "order-totals",
    "audit-log",
    "payment-processor",
    "dead-letter-triage",
    "greeter",
    "scheduled-cleanup",
    "queue-consumer",
];

fn say(step: &mut u32, text: &str) {
    *step += 1;
    println!("\n{step}. {text}");
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let wasm: Vec<(String, Vec<u8>)> = match &args.examples {
        Some(dir) => EXAMPLES
            .iter()
            .map(|p| {
                let path = dir.join(format!("{}.wasm", p.replace('-', "_")));
                std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))
                    .map(|w| (p.to_string(), w))
            })
            .collect::<Result<_>>()?,
        None => crate::guests::find(&EXAMPLES)?
            .into_iter()
            .zip(EXAMPLES)
            .map(|(path, p)| std::fs::read(&path).map(|w| (p.to_string(), w)))
            .collect::<std::io::Result<_>>()?,
    };

    let tmp = crate::bench::TempDir::new()?;
    let db_path = args.keep.clone().unwrap_or_else(|| tmp.0.join("demo.db"));
    if args.keep.is_some() && db_path.exists() {
        anyhow::bail!(
            "{} already exists: give --keep a new file",
            db_path.display()
        );
    }
    let url = format!("sqlite://{}", db_path.display());
    let store = store::connect(&url).await?;
    store.migrate().await?;
    let authorizer = Arc::new(MemberAuthorizer::new(store.clone()));
    let config = TriggerConfig {
        retry_max_attempts: 3,
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ..TriggerConfig::default()
    };
    let ceiling = SandboxCeiling::default();
    let mut options = HostOptions::new(&ceiling);
    options.dispatch.poll_interval = Duration::from_millis(50);
    let host = Arc::new(TriggerHost::new(
        store.clone(),
        authorizer.clone(),
        config.clone(),
        ceiling,
        options,
    )?);
    let admin = Admin::new(store.clone(), authorizer);
    let mut step = 0;

    println!(
        "PiCloud trigger host demo on a fresh SQLite database: {}",
        db_path.display()
    );
    println!(
        "(retries shortened for the demo: {} attempts, {} ms base backoff)",
        config.retry_max_attempts,
        config.retry_base.as_millis()
    );

    say(&mut step, "An app 'shop' with alice as admin.");
    let app = store.create_app("shop").await?;
    store.set_member(app.id, "alice", Role::Admin).await?;

    say(
        &mut step,
        "Deploying seven example scripts built from examples/ for wasm32-wasip2:",
    );
    for (name, code) in &wasm {
        let s = host.runtime().deploy(app.id, name, code).await?;
        println!(
            "   {name:<20} {:>7} bytes  sha256 {}",
            s.size,
            &s.sha256[..12]
        );
    }

    say(&mut step, "Registering triggers as alice:");
    let t1 = admin
        .add_trigger(
            app.id,
            TriggerOptions::kv("order-totals", "orders", KvOps::ALL),
            "alice",
        )
        .await?;
    let t2 = admin
        .add_trigger(
            app.id,
            TriggerOptions::kv(
                "audit-log",
                "orders",
                KvOps {
                    set: true,
                    delete: false,
                },
            ),
            "alice",
        )
        .await?;
    let t3 = admin
        .add_trigger(
            app.id,
            TriggerOptions::kv("payment-processor", "payments", KvOps::ALL),
            "alice",
        )
        .await?;
    let t4 = admin
        .add_trigger(
            app.id,
            TriggerOptions::dead_letter("dead-letter-triage", "kv"),
            "alice",
        )
        .await?;
    let cron = admin
        .add_trigger(
            app.id,
            TriggerOptions::cron("scheduled-cleanup", "* * * * * *", "UTC", CatchUp::Last),
            "alice",
        )
        .await?;
    let mail = admin
        .add_trigger(
            app.id,
            TriggerOptions::queue("queue-consumer", "mail", 10),
            "alice",
        )
        .await?;
    for t in [&t1, &t2, &t3, &t4] {
        println!("   {}", t.name);
    }
    println!(
        "   {} (every second; next tick {})",
        cron.name,
        cron.next_fire_at.map(|t| t.to_string()).unwrap_or_default()
    );
    println!("   {} (batches of up to 10)", mail.name);

    say(
        &mut step,
        "Writing 3 orders and 5 payments; each write enqueues its event in the same transaction:",
    );
    let orders = [
        (
            "o-1",
            json!({"customer": "ada", "items": [{"sku": "tea", "qty": 2, "price_cents": 450}]}),
        ),
        (
            "o-2",
            json!({"customer": "bo", "items": [{"sku": "mug", "qty": 1, "price_cents": 1200}, {"sku": "tea", "qty": 1, "price_cents": 450}]}),
        ),
        (
            "o-3",
            json!({"customer": "cy", "items": [{"sku": "pot", "qty": 1, "price_cents": 3000}]}),
        ),
    ];
    for (key, order) in &orders {
        admin.kv_set(app.id, "orders", key, order, "alice").await?;
    }
    let payments = [
        (
            "p-1",
            json!({"amount_cents": 900, "card": "4242"}),
            "succeeds",
        ),
        (
            "p-2",
            json!({"amount_cents": 1650, "card": "decline-0002"}),
            "is declined: retried, dead-lettered, then handled by the triage script",
        ),
        (
            "p-3",
            json!({"amount_cents": 0, "card": "4242"}),
            "is invalid: dead-lettered, then ignored by the triage script",
        ),
        (
            "p-4",
            json!({"amount_cents": 5, "card": "decline-0004", "poison": true}),
            "is poison: the triage script gives up on it at once (handler_failed)",
        ),
        (
            "p-5",
            json!({"amount_cents": 700, "card": "expired-0005"}),
            "has an expired card: triage has no rule and fails; the host's recursion stop resolves it handler_failed",
        ),
    ];
    for (key, p, fate) in &payments {
        admin.kv_set(app.id, "payments", key, p, "alice").await?;
        println!("   payments/{key} {fate}");
    }
    say(
        &mut step,
        "Three sessions (two expired) for the cron script, and two mails queued for the consumer:",
    );
    let now_ms = chrono::Utc::now().timestamp_millis();
    for (key, expires) in [("s-1", -3_600_000), ("s-2", -60_000), ("s-3", 3_600_000)] {
        let session = json!({"user": key, "expires_at": now_ms + expires});
        admin
            .kv_set(app.id, "sessions", key, &session, "alice")
            .await?;
    }
    let template = json!({"subject": "Welcome, {name}", "body": "Hello {name}!"});
    admin
        .kv_set(app.id, "mail-templates", "welcome", &template, "alice")
        .await?;
    for name in ["Ada", "Bo"] {
        let message = json!({"to": format!("{}@example.com", name.to_lowercase()), "template": "welcome", "vars": {"name": name}});
        admin
            .send_to_queue(app.id, "mail", message, 0, "alice")
            .await?;
    }
    println!(
        "   outbox now holds {} events",
        store.count_events(Some(app.id)).await?
    );

    say(&mut step, "Dispatching until the outbox is empty...");
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(60), host.run_until_empty())
        .await
        .context("the demo's events did not drain within a minute")??;
    let m = host.metrics();
    println!(
        "   done in {} ms: {} invocations succeeded, {} failed attempts retried, {} dead-lettered, {} recursion stopped",
        t.elapsed().as_millis(),
        m.succeeded,
        m.retried,
        m.dead_lettered,
        m.recursion_stopped
    );

    say(
        &mut step,
        "The cron trigger runs 'scheduled-cleanup' every second; waiting for a tick to remove the expired sessions...",
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let runner = {
        let (host, cancel) = (host.clone(), cancel.clone());
        tokio::spawn(async move { host.run(cancel).await })
    };
    let swept = tokio::time::timeout(Duration::from_secs(10), async {
        while store
            .kv_list_keys(app.id, "sessions", None, 10)
            .await?
            .len()
            > 1
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    })
    .await;
    cancel.cancel();
    runner.await??;
    swept.context("no cron tick removed the expired sessions within 10 s")??;
    // The demo stops its clock here: ticks left in the outbox are dropped
    // with their trigger.
    store.delete_trigger(cron.id).await?;
    tokio::time::timeout(Duration::from_secs(60), host.run_until_empty())
        .await
        .context("the outbox did not drain within a minute")??;
    println!(
        "   sessions left: {:?} (then the cron trigger was removed)",
        store.kv_list_keys(app.id, "sessions", None, 10).await?
    );

    say(&mut step, "What the scripts wrote:");
    for (key, _) in &orders {
        let total = store
            .kv_get(app.id, "order_totals", key)
            .await?
            .map(|e| e.value["total_cents"].clone());
        println!(
            "   order_totals/{key} = {} cents",
            total.unwrap_or_default()
        );
    }
    println!(
        "   receipts: {:?}",
        store.kv_list_keys(app.id, "receipts", None, 100).await?
    );
    println!(
        "   audit entries: {}",
        store.kv_list_keys(app.id, "audit", None, 100).await?.len()
    );
    println!(
        "   mails rendered by the queue consumer: {}",
        store
            .kv_list_keys(app.id, "outbox-mail", None, 100)
            .await?
            .len()
    );

    say(&mut step, "Dead letters and how they were resolved:");
    let dls = store
        .list_dead_letters(&DeadLetterFilter {
            app_id: Some(app.id),
            ..Default::default()
        })
        .await?;
    for d in &dls {
        println!(
            "   {} {}/{} after {} attempts: {:<18} last error: {}",
            &d.id.to_string()[..8],
            d.source,
            d.op,
            d.attempt_count,
            d.resolution
                .map(|r| r.to_string())
                .unwrap_or_else(|| "unresolved".into()),
            d.last_error
        );
    }

    if let Some(declined) = dls.iter().find(|d| d.payload["key"] == json!("p-2")) {
        say(
            &mut step,
            "The declined payment's history, one run per attempt (`dead-letters show ID` prints it in full):",
        );
        let (_, runs) = admin
            .dead_letter_history(declined.id, Some("alice"))
            .await?;
        for run in runs {
            println!(
                "   attempt {} {} after {:.2} ms: {}",
                run.attempt,
                run.outcome,
                run.duration_us as f64 / 1000.0,
                run.error.unwrap_or_default()
            );
        }
    }

    say(&mut step, "A synchronous invocation of 'greeter' as alice:");
    let cancel = tokio_util::sync::CancellationToken::new();
    let runner = {
        let (host, cancel) = (host.clone(), cancel.clone());
        tokio::spawn(async move { host.run(cancel).await })
    };
    let reply = host
        .invoke(
            app.id,
            "greeter",
            json!({"name": "newcomer"}),
            "alice",
            Duration::from_secs(10),
        )
        .await?;
    cancel.cancel();
    runner.await??;
    println!(
        "   reply: {}",
        String::from_utf8_lossy(&reply.unwrap_or_default())
    );

    let by = |r: Resolution| dls.iter().filter(|d| d.resolution == Some(r)).count();
    let m = host.metrics();
    match &args.keep {
        Some(path) => println!("\nSummary (check it against {}):", path.display()),
        None => {
            println!("\nSummary (pass --keep FILE to keep the database and check this against it):")
        }
    }
    println!("   events handled        {}", m.succeeded);
    println!("   retries               {}", m.retried);
    println!("   dead letters          {}", dls.len());
    println!(
        "     handled_by_script   {}",
        by(Resolution::HandledByScript)
    );
    println!("     ignored             {}", by(Resolution::Ignored));
    println!("     handler_failed      {}", by(Resolution::HandlerFailed));
    println!(
        "     unresolved          {}",
        dls.iter().filter(|d| d.resolution.is_none()).count()
    );
    println!("   recursion stops       {}", m.recursion_stopped);
    let runs = store
        .list_runs(&RunFilter {
            limit: 100_000,
            ..RunFilter::app(app.id)
        })
        .await?;
    println!("   runs recorded         {}", runs.len());
    println!(
        "   outbox left           {}",
        store.count_events(None).await?
    );
    println!(
        "   took                  {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store.close().await;
    Ok(())
}
