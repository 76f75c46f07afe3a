//! `runs`, `logs` and `dead-letters show`: what scripts did, printed.
//!
//! Rule: reading goes through [`picloud_host::admin::Admin`], which checks
//! `AppLogs` for `--as`; this file only resolves names and prints.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use picloud_host::model::{AppId, DeadLetter, EventId, RunId, ScriptId};
use picloud_host::runs::{Run, RunFilter};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::args::{LogsArgs, RunsCmd};
use crate::commands::{Ctx, dead_letter_id, print_json, timestamp, trigger_id};
use crate::table::Table;

fn run_id(text: &str) -> Result<RunId> {
    text.parse()
        .map_err(|_| anyhow!("unknown run '{text}': give a run id (see `runs list APP`)"))
}

fn event_id(text: &str) -> Result<EventId> {
    text.parse()
        .map_err(|_| anyhow!("unknown event '{text}': give an event id (see `runs list APP`)"))
}

/// Script names of an app, to print runs with.
struct Names(HashMap<ScriptId, String>);

impl Names {
    async fn of(ctx: &Ctx, app: AppId) -> Result<Names> {
        let scripts = ctx.store.list_scripts(app).await?;
        Ok(Names(scripts.into_iter().map(|s| (s.id, s.name)).collect()))
    }

    fn script(&self, run: &Run) -> String {
        match run.script_id {
            Some(id) => self.0.get(&id).cloned().unwrap_or_else(|| id.to_string()),
            None => "-".into(),
        }
    }
}

/// The base filter for an app and optional script and trigger names.
async fn filter(
    ctx: &Ctx,
    app: &str,
    script: Option<&str>,
    trigger: Option<&str>,
) -> Result<RunFilter> {
    let app = ctx.app(app).await?;
    let script_id = match script {
        Some(s) => Some(ctx.store.find_script(app.id, s).await?.id),
        None => None,
    };
    Ok(RunFilter {
        script_id,
        trigger_id: trigger.map(trigger_id).transpose()?,
        ..RunFilter::app(app.id)
    })
}

pub fn millis(us: i64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn one_line(text: &str, max: usize) -> String {
    let mut line = text.replace('\n', " ");
    if line.len() > max {
        let mut cut = max;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

pub async fn runs(ctx: &Ctx, cmd: RunsCmd) -> Result<()> {
    match cmd {
        RunsCmd::List {
            app,
            script,
            trigger,
            event,
            failed,
            since,
            limit,
            principal,
            format,
        } => {
            let filter = RunFilter {
                event_id: event.as_deref().map(event_id).transpose()?,
                failed_only: failed,
                since: since
                    .as_deref()
                    .map(|t| timestamp("--since", t))
                    .transpose()?,
                limit,
                ..filter(ctx, &app, script.as_deref(), trigger.as_deref()).await?
            };
            let runs = ctx.admin().list_runs(&filter, principal.as_deref()).await?;
            if format.json {
                return print_json(&runs);
            }
            let names = Names::of(ctx, filter.app_id).await?;
            let mut t = Table::new([
                "ID", "STARTED", "SCRIPT", "EVENT", "ATTEMPT", "OUTCOME", "MS", "LOGS", "ERROR",
            ]);
            for r in &runs {
                t.row([
                    r.id.to_string(),
                    r.started_at.to_string(),
                    names.script(r),
                    format!("{}/{} {}", r.source, r.op, r.event_id),
                    r.attempt.to_string(),
                    outcome(r),
                    millis(r.duration_us),
                    r.logs.len().to_string(),
                    one_line(r.error.as_deref().unwrap_or("-"), 60),
                ]);
            }
            t.print();
        }
        RunsCmd::Show {
            id,
            principal,
            format,
        } => {
            let run = ctx
                .admin()
                .get_run(run_id(&id)?, principal.as_deref())
                .await?;
            if format.json {
                return print_json(&run);
            }
            let names = Names::of(ctx, run.app_id).await?;
            print_run(&run, &names, "");
        }
    }
    Ok(())
}

/// The outcome, with the limit that ended the run.
fn outcome(run: &Run) -> String {
    match &run.limit {
        Some(limit) => format!("{} ({limit})", run.outcome),
        None => run.outcome.to_string(),
    }
}

/// A run in full, each line indented by `indent`.
fn print_run(run: &Run, names: &Names, indent: &str) {
    let field = |name: &str, value: String| println!("{indent}{name:<9}{value}");
    field("run", run.id.to_string());
    field(
        "script",
        format!(
            "{} ({})",
            names.script(run),
            run.script_id.map_or("-".into(), |s| s.to_string())
        ),
    );
    field(
        "trigger",
        run.trigger_id.map_or("-".into(), |t| t.to_string()),
    );
    field(
        "event",
        format!(
            "{} {}/{}, attempt {}",
            run.event_id, run.source, run.op, run.attempt
        ),
    );
    field("as", run.principal.clone());
    field(
        "started",
        format!("{}, ran {} ms", run.started_at, millis(run.duration_us)),
    );
    field("outcome", outcome(run));
    if let Some(error) = &run.error {
        field("error", error.clone());
    }
    if let Some(bytes) = run.reply_bytes {
        field("reply", format!("{bytes} bytes"));
    }
    if run.logs.is_empty() {
        field("logs", "(none)".into());
    } else {
        field("logs", format!("{} lines", run.logs.len()));
        for line in &run.logs {
            println!(
                "{indent}  {:<7}{}",
                level(line.level),
                line.message.trim_end()
            );
        }
    }
}

pub fn level(level: picloud_host::runtime::LogLevel) -> String {
    serde_json::to_value(level)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A dead letter and its history (`dead-letters show`).
pub async fn dead_letter(
    ctx: &Ctx,
    id: &str,
    principal: Option<&str>,
    json_out: bool,
) -> Result<()> {
    let (dead, runs) = ctx
        .admin()
        .dead_letter_history(dead_letter_id(id)?, principal)
        .await?;
    if json_out {
        return print_json(&json!({"dead_letter": dead, "runs": runs}));
    }
    print_dead_letter(&dead);
    let names = Names::of(ctx, dead.app_id).await?;
    println!();
    match runs.len() {
        0 => println!("history: no runs recorded (PICLOUD_RUNS, or past their retention)"),
        n => println!("history: {n} runs, oldest first"),
    }
    for run in &runs {
        println!();
        print_run(run, &names, "  ");
    }
    Ok(())
}

fn print_dead_letter(d: &DeadLetter) {
    let field = |name: &str, value: String| println!("{name:<12}{value}");
    field("dead letter", d.id.to_string());
    field("source", format!("{}/{}", d.source, d.op));
    field("event", d.original_event_id.to_string());
    field(
        "trigger",
        d.trigger_id.map_or("-".into(), |t| t.to_string()),
    );
    field("script", d.script_id.map_or("-".into(), |s| s.to_string()));
    field(
        "attempts",
        format!(
            "{}, from {} to {}",
            d.attempt_count, d.first_attempt_at, d.last_attempt_at
        ),
    );
    field("last error", d.last_error.clone());
    field("created", d.created_at.to_string());
    field(
        "resolution",
        match (d.resolution, d.resolved_at) {
            (Some(r), Some(at)) => format!("{r} at {at}"),
            _ => "unresolved".into(),
        },
    );
    field("payload", d.payload.to_string());
}

/// `logs APP [--follow]`: each log line with its run's time, run id,
/// script and level; a run that did not succeed adds a line with its
/// outcome and error.
pub async fn logs(ctx: &Ctx, args: LogsArgs) -> Result<()> {
    let base = filter(
        ctx,
        &args.app,
        args.script.as_deref(),
        args.trigger.as_deref(),
    )
    .await?;
    let names = Names::of(ctx, base.app_id).await?;
    let admin = ctx.admin();
    let principal = args.principal.as_deref();
    if !args.follow {
        let mut runs = admin
            .list_runs(
                &RunFilter {
                    limit: args.runs,
                    ..base
                },
                principal,
            )
            .await?;
        runs.reverse();
        for run in &runs {
            print_lines(run, &names);
        }
        return Ok(());
    }
    let mut follower = admin.follow_runs(base, principal).await?;
    eprintln!("following the runs of {} (Ctrl-C to stop)", args.app);
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        }
    });
    loop {
        let runs = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            runs = follower.next() => runs?,
        };
        for run in &runs {
            print_lines(run, &names);
        }
    }
}

fn print_lines(run: &Run, names: &Names) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let script = names.script(run);
    let mut line = |level: &str, text: &str| {
        let _ = writeln!(
            out,
            "{} {} {script} {level:<7}{}",
            run.started_at,
            run.id,
            text.trim_end()
        );
    };
    for l in &run.logs {
        line(&level(l.level), &l.message);
    }
    if run.outcome.is_failure() {
        line(run.outcome.as_str(), run.error.as_deref().unwrap_or("-"));
    }
    let _ = out.flush();
}
