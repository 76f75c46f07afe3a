//! `picloud-host`: parse arguments, build the library's types, call them.
//!
//! Rule: no logic lives here that the manager could not run through the
//! library; this binary only resolves names, prints, and turns every error
//! into one line on stderr with a non-zero exit.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use picloud_host::TriggerHost;
use picloud_host::store::{self, Store};
use tokio_util::sync::CancellationToken;

mod args;
mod bench;
mod commands;
mod demo;
mod guests;
mod runs;
mod table;
mod trial;
mod wasm_target;

use args::{Cli, Command};

/// mimalloc instead of glibc's allocator: the dispatcher allocates rows on
/// the database driver's thread and frees them on a runtime thread, and
/// glibc's arena locks then showed up in profiles as futex waits. Worth
/// about 10% on `bench dispatch` (SQLite). An embedder picks its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {text}");
            ExitCode::FAILURE
        }
    }
}

/// Open the store and apply migrations (idempotent), so every command works
/// on a fresh database.
async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let store = store::connect(url).await?;
    store.migrate().await?;
    Ok(store)
}

fn host(store: &Arc<dyn Store>) -> Result<TriggerHost> {
    TriggerHost::from_env(store.clone())
}

async fn until_ctrl_c(cancel: CancellationToken) {
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("stopping: finishing running invocations");
    cancel.cancel();
}

async fn run(cli: Cli) -> Result<()> {
    let url = cli.database_url;
    match cli.command {
        Command::Migrate => {
            let store = open(&url).await?;
            store.close().await;
            let backend = match store.backend() {
                store::Backend::Sqlite => "sqlite",
                store::Backend::Postgres => "postgres",
            };
            println!("migrated {} (backend {backend})", store::redact(&url));
        }
        Command::Demo(args) => demo::run(args).await?,
        Command::SecretKey => println!("{}", picloud_host::secrets::SecretKey::generate()),
        Command::Bench(cmd) => bench::run(&url, cmd).await?,
        // Its own throwaway database, whatever --database-url says.
        Command::Run(args) => trial::run(args).await?,
        Command::Invoke(args) => {
            // The caller's timeout bounds the whole command: a database that
            // accepts connections but never answers must not hold it longer.
            let ms = args.timeout_ms;
            let call = async {
                let store = open(&url).await?;
                let ctx = commands::Ctx::new(store.clone());
                commands::invoke(&ctx, host(&store)?, args).await
            };
            match tokio::time::timeout(std::time::Duration::from_millis(ms), call).await {
                Ok(result) => result?,
                Err(_) => anyhow::bail!(
                    "no reply within {ms} ms: the database {} did not answer in time",
                    store::redact(&url)
                ),
            }
        }
        command => {
            let store = open(&url).await?;
            let ctx = commands::Ctx::new(store.clone());
            match command {
                Command::App(cmd) => commands::app(&ctx, cmd).await?,
                Command::Member(cmd) => commands::member(&ctx, cmd).await?,
                Command::Script(cmd) => commands::script(&ctx, async || host(&store), cmd).await?,
                Command::Trigger(cmd) => commands::trigger(&ctx, cmd).await?,
                Command::Kv(cmd) => commands::kv(&ctx, cmd).await?,
                Command::Queue(cmd) => commands::queue(&ctx, cmd).await?,
                Command::Pubsub(cmd) => commands::pubsub(&ctx, cmd).await?,
                Command::DeadLetters(cmd) => commands::dead_letters(&ctx, cmd).await?,
                Command::Dispatch {
                    until_idle,
                    until_settled,
                } => {
                    let host = host(&store)?;
                    if until_idle {
                        host.run_until_idle().await?;
                    } else if until_settled {
                        host.run_until_empty().await?;
                    } else {
                        let cancel = CancellationToken::new();
                        tokio::spawn(until_ctrl_c(cancel.clone()));
                        host.run(cancel).await?;
                    }
                    let m = host.metrics();
                    println!(
                        "dispatched: {} succeeded, {} retried, {} dead-lettered, {} recursion-stopped",
                        m.succeeded, m.retried, m.dead_lettered, m.recursion_stopped
                    );
                    if m.store_outages > 0 || m.postponed > 0 {
                        println!(
                            "store trouble: {} attempts postponed (not counted), {} outages, claims paused {} ms",
                            m.postponed, m.store_outages, m.store_paused_ms
                        );
                    }
                }
                Command::Serve(args) => {
                    let host = host(&store)?;
                    let cancel = CancellationToken::new();
                    tokio::spawn(until_ctrl_c(cancel.clone()));
                    eprintln!("serving {} (Ctrl-C to stop)", store::redact(&url));
                    match args.http {
                        None => host.serve(cancel).await?,
                        Some(addr) => {
                            let http = picloud_host::http::serve(
                                host.clone(),
                                addr,
                                cancel.clone(),
                                |bound| println!("http: listening on http://{bound}/"),
                            );
                            let (dispatched, served) =
                                tokio::join!(host.serve(cancel.clone()), async {
                                    let served = http.await;
                                    // The API cannot start (or stopped): stop the rest too.
                                    cancel.cancel();
                                    served
                                });
                            served
                                .map_err(|e| anyhow::anyhow!("cannot serve HTTP on {addr}: {e}"))?;
                            dispatched?;
                        }
                    }
                }
                Command::Token(cmd) => commands::token(&ctx, cmd).await?,
                Command::Runs(cmd) => runs::runs(&ctx, cmd).await?,
                Command::Logs(args) => runs::logs(&ctx, args).await?,
                Command::Gc => {
                    let report = host(&store)?.gc().await?;
                    println!(
                        "gc: {} dead letters, {} abandoned executions, {} runs removed; {} unclaimed replies recorded as abandoned",
                        report.dead_letters, report.abandoned, report.runs, report.stale_replies
                    );
                }
                Command::Migrate
                | Command::Demo(_)
                | Command::SecretKey
                | Command::Bench(_)
                | Command::Invoke(_)
                | Command::Run(_) => {
                    unreachable!("handled above")
                }
            }
        }
    }
    Ok(())
}
