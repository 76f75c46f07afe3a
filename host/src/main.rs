//! `picloud-host`: the operator's command line.
//!
//! Rule: this file only parses arguments, builds the library's types and
//! calls them; every subcommand is one library call, so an embedding
//! application can do exactly what the CLI does. Errors leave as one line,
//! `error: ...`, with a non-zero exit, and never show a password.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use picloud_host::store::{self, Backend, DatabaseUrl};
use tracing_subscriber::EnvFilter;

/// Runs WebAssembly trigger scripts for outbox events.
#[derive(Debug, Parser)]
#[command(name = "picloud-host", version, about)]
struct Cli {
    /// The database: `sqlite://FILE` (one machine) or `postgres://USER@HOST/DB`.
    #[arg(
        long,
        global = true,
        env = "PICLOUD_DATABASE_URL",
        default_value = "sqlite://picloud.db",
        hide_env_values = true
    )]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the embedded migrations (applying them twice is harmless).
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace(['\n', '\r'], " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate => migrate(&cli.database_url).await,
    }
}

/// `picloud-host migrate`.
async fn migrate(url: &str) -> anyhow::Result<()> {
    let parsed = DatabaseUrl::parse(url)?;
    let store = store::connect(url).await?;
    store.migrate().await?;
    store.close().await;
    let backend = match parsed.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    println!("migrated {} (backend {backend})", parsed.redacted());
    Ok(())
}
