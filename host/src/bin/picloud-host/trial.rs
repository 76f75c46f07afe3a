//! `run FILE.wasm --event EVENT.json [--kv SEED.json]`: read the files, call
//! `picloud_host::trial::run_once`, print the report.

use anyhow::{Context, Result, bail};
use picloud_host::config::SandboxCeiling;
use picloud_host::trial::{self, KvSeed, TrialEvent};

use crate::args::RunArgs;
use crate::runs::{level, millis};

/// A JSON file, parsed, with the file and the fix named on failure.
fn json_file<T: serde::de::DeserializeOwned>(path: &std::path::Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{what} file {} is not valid: {}",
            path.display(),
            match what {
                "--event" => "expected {\"source\": ..., \"op\": ..., \"payload\": ...}",
                _ => "expected {\"collection\": {\"key\": value}}",
            }
        )
    })
}

pub async fn run(args: RunArgs) -> Result<()> {
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let event: TrialEvent = match &args.event {
        Some(path) => json_file(path, "--event")?,
        None => serde_json::from_str("{}").expect("every event field has a default"),
    };
    let seed: KvSeed = match &args.kv {
        Some(path) => json_file(path, "--kv")?,
        None => KvSeed::new(),
    };
    let report = trial::run_once(&wasm, &event, &seed, SandboxCeiling::from_env()?).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let took = millis(report.elapsed_us as i64);
        match &report.error {
            None => println!("succeeded in {took} ms"),
            Some(error) => println!("failed in {took} ms: {error}"),
        }
        if let Some(limit) = report.limit {
            println!("limit: {limit}");
        }
        match &report.reply {
            Some(reply) => println!("reply: {reply}"),
            None if report.succeeded => println!("reply: (none)"),
            None => {}
        }
        for line in &report.logs {
            println!("log {:<7}{}", level(line.level), line.message.trim_end());
        }
        for w in &report.writes {
            match &w.value {
                Some(value) => println!(
                    "kv set {}/{} = {value} (version {})",
                    w.collection, w.key, w.version
                ),
                None => println!("kv delete {}/{}", w.collection, w.key),
            }
        }
        if report.writes.is_empty() {
            println!("kv: no writes");
        }
    }
    if let Some(error) = report.error {
        bail!("the handler failed: {error}");
    }
    Ok(())
}
