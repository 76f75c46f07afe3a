//! Each command: resolve names to ids, call the library, print the result.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use picloud_host::TriggerHost;
use picloud_host::admin::{Admin, TriggerOptions, require};
use picloud_host::auth::{Authorizer, Capability, MemberAuthorizer, Role};
use picloud_host::bench::Progress;
use picloud_host::cron::CatchUp;
use picloud_host::messages;
use picloud_host::model::{
    App, DeadLetterFilter, DeadLetterId, KvOps, Resolution, Timestamp, TriggerId, TriggerSpec,
};
use picloud_host::retry::RetryPolicy;
use picloud_host::store::{self, Store};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::args::{
    AppCmd, DeadLetterCmd, Format, InvokeArgs, KvCmd, MemberCmd, NewTriggerArgs, PubsubCmd,
    QueueCmd, RetryArgs, ScriptCmd, SecretCmd, TokenCmd, TriggerCmd, VarCmd,
};
use crate::table::Table;

/// The store and the built-in authorizer, as the CLI uses them.
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub authorizer: Arc<dyn Authorizer>,
}

impl Ctx {
    pub fn new(store: Arc<dyn Store>) -> Self {
        let authorizer = Arc::new(MemberAuthorizer::new(store.clone()));
        Ctx { store, authorizer }
    }

    pub fn admin(&self) -> Admin {
        Admin::new(self.store.clone(), self.authorizer.clone())
    }

    pub async fn app(&self, name_or_id: &str) -> Result<App> {
        Ok(self.store.find_app(name_or_id).await?)
    }
}

pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn trigger_id(text: &str) -> Result<TriggerId> {
    text.parse().map_err(|_| {
        anyhow::anyhow!("unknown trigger '{text}': give a trigger id (see `trigger list APP`)")
    })
}

pub fn dead_letter_id(text: &str) -> Result<DeadLetterId> {
    text.parse().map_err(|_| {
        anyhow::anyhow!(
            "unknown dead letter '{text}': give a dead letter id (see `dead-letters list`)"
        )
    })
}

pub fn timestamp(what: &str, text: &str) -> Result<Timestamp> {
    Timestamp::parse_rfc3339(what, text).map_err(anyhow::Error::msg)
}

pub async fn app(ctx: &Ctx, cmd: AppCmd) -> Result<()> {
    match cmd {
        AppCmd::Create { name, admin } => {
            if name.trim().is_empty() || name.len() > 128 {
                bail!("invalid app name '{name}': use 1 to 128 characters");
            }
            let app = ctx.store.create_app(&name).await?;
            if let Some(admin) = admin {
                ctx.store.set_member(app.id, &admin, Role::Admin).await?;
                println!("created app {} ({}) with admin {admin}", app.name, app.id);
            } else {
                println!("created app {} ({})", app.name, app.id);
            }
        }
        AppCmd::List(Format { json }) => {
            let apps = ctx.store.list_apps().await?;
            if json {
                return print_json(&apps);
            }
            let mut t = Table::new(["NAME", "ID", "CREATED"]);
            for a in &apps {
                t.row([a.name.clone(), a.id.to_string(), a.created_at.to_string()]);
            }
            t.print();
        }
        AppCmd::AllowHost { app, pattern } => {
            let app = ctx.app(&app).await?;
            let (pattern, added) = ctx.admin().allow_host(app.id, &pattern, None).await?;
            match added {
                true => println!("{} may reach {pattern}", app.name),
                false => println!("{} already may reach {pattern}", app.name),
            }
        }
        AppCmd::DenyHost { app, pattern } => {
            let app = ctx.app(&app).await?;
            let pattern = ctx.admin().deny_host(app.id, &pattern, None).await?;
            println!("{} may no longer reach {pattern}", app.name);
        }
        AppCmd::Hosts { app, format } => {
            let app = ctx.app(&app).await?;
            let hosts = ctx.admin().hosts(app.id, None).await?;
            if format.json {
                return print_json(&hosts);
            }
            let mut t = Table::new(["ALLOWED HOST"]);
            for h in hosts {
                t.row([h]);
            }
            t.print();
        }
        AppCmd::Var(cmd) => var(ctx, cmd).await?,
        AppCmd::Secret(cmd) => secret(ctx, cmd).await?,
    }
    Ok(())
}

/// `value`, or standard input when it is `-` (without its trailing newline).
fn value_or_stdin(value: String) -> Result<String> {
    if value != "-" {
        return Ok(value);
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .context("reading the value from standard input")?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

async fn var(ctx: &Ctx, cmd: VarCmd) -> Result<()> {
    match cmd {
        VarCmd::Set { app, name, value } => {
            let app = ctx.app(&app).await?;
            let value = value_or_stdin(value)?;
            ctx.admin()
                .set_var(app.id, &name, &value, false, None)
                .await?;
            println!("set variable {name} of {}", app.name);
        }
        VarCmd::List { app, format } => {
            let app = ctx.app(&app).await?;
            let vars = ctx.admin().vars(app.id, None).await?;
            if format.json {
                return print_json(&vars);
            }
            let mut t = Table::new(["NAME", "KIND", "VALUE", "UPDATED"]);
            for v in vars {
                let (kind, value) = match v.value {
                    Some(value) => ("variable", value),
                    None => ("secret", "(hidden)".to_owned()),
                };
                t.row([v.name, kind.to_owned(), value, v.updated_at.to_string()]);
            }
            t.print();
        }
        VarCmd::Unset { app, name } => unset(ctx, &app, &name).await?,
    }
    Ok(())
}

async fn secret(ctx: &Ctx, cmd: SecretCmd) -> Result<()> {
    match cmd {
        SecretCmd::Set { app, name, value } => {
            // Checked first: without a key nothing is read or stored.
            let key = picloud_host::secrets::SecretKey::from_env()?
                .ok_or(picloud_host::secrets::SecretError::NoKey)?;
            let app = ctx.app(&app).await?;
            let value = value_or_stdin(value)?;
            ctx.admin()
                .with_secret_key(Some(key))
                .set_var(app.id, &name, &value, true, None)
                .await?;
            println!("set secret {name} of {}", app.name);
        }
        SecretCmd::Unset { app, name } => unset(ctx, &app, &name).await?,
    }
    Ok(())
}

async fn unset(ctx: &Ctx, app: &str, name: &str) -> Result<()> {
    let app = ctx.app(app).await?;
    ctx.admin().unset_var(app.id, name, None).await?;
    println!("removed {name} from {}", app.name);
    Ok(())
}

pub async fn member(ctx: &Ctx, cmd: MemberCmd) -> Result<()> {
    match cmd {
        MemberCmd::Add {
            app,
            principal,
            role,
        } => {
            let role: Role = role.parse()?;
            let app = ctx.app(&app).await?;
            ctx.store.set_member(app.id, &principal, role).await?;
            println!("{principal} is {role} of {}", app.name);
        }
        MemberCmd::Remove { app, principal } => {
            let app = ctx.app(&app).await?;
            if !ctx.store.remove_member(app.id, &principal).await? {
                bail!("{principal} is not a member of {}", app.name);
            }
            println!("removed {principal} from {}", app.name);
        }
        MemberCmd::List { app, format } => {
            let app = ctx.app(&app).await?;
            let members = ctx.store.list_members(app.id).await?;
            if format.json {
                return print_json(&members);
            }
            let mut t = Table::new(["PRINCIPAL", "ROLE"]);
            for m in &members {
                t.row([m.principal.clone(), m.role.to_string()]);
            }
            t.print();
        }
    }
    Ok(())
}

pub async fn script(
    ctx: &Ctx,
    host: impl AsyncFnOnce() -> Result<TriggerHost>,
    cmd: ScriptCmd,
) -> Result<()> {
    match cmd {
        ScriptCmd::Deploy {
            app,
            name,
            file,
            principal,
        } => {
            let app = ctx.app(&app).await?;
            if let Some(p) = &principal {
                // Before reading the file: a refusal needs no file.
                require(&*ctx.authorizer, p, Capability::ScriptDeploy(app.id)).await?;
            }
            let wasm =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let host = host().await?;
            let script = host
                .deploy(app.id, &name, &wasm, principal.as_deref())
                .await?;
            println!(
                "deployed {} to {} ({} bytes, sha256 {}, id {})",
                script.name,
                app.name,
                script.size,
                &script.sha256[..12],
                script.id
            );
        }
        ScriptCmd::List { app, format } => {
            let app = ctx.app(&app).await?;
            let scripts = ctx.store.list_scripts(app.id).await?;
            if format.json {
                return print_json(&scripts);
            }
            let mut t = Table::new(["NAME", "ID", "SIZE", "SHA256", "UPDATED"]);
            for s in &scripts {
                t.row([
                    s.name.clone(),
                    s.id.to_string(),
                    s.size.to_string(),
                    s.sha256[..12].to_owned(),
                    s.updated_at.to_string(),
                ]);
            }
            t.print();
        }
        ScriptCmd::Remove { app, name } => {
            let app = ctx.app(&app).await?;
            let script = ctx.store.find_script(app.id, &name).await?;
            ctx.store.remove_script(app.id, script.id).await?;
            println!("removed script {} and its triggers", script.name);
        }
    }
    Ok(())
}

impl RetryArgs {
    /// The policy these flags choose (checked when the trigger is stored).
    fn policy(&self) -> Result<RetryPolicy> {
        Ok(RetryPolicy {
            max_attempts: self.max_attempts,
            backoff: self.backoff.as_deref().map(str::parse).transpose()?,
            base_ms: self.base_ms,
            cap_ms: self.cap_ms,
            jitter: self.jitter,
            max_age_ms: self.max_age_ms,
        })
    }
}

/// Register the trigger `options` describe, with what every `add-*`
/// takes (`new`); the script is `new.script`.
async fn add_trigger(
    ctx: &Ctx,
    new: &NewTriggerArgs,
    options: impl FnOnce(&str) -> TriggerOptions,
) -> Result<picloud_host::model::Trigger> {
    let app = ctx.app(&new.app).await?;
    let mut options = TriggerOptions {
        name: new.name.clone(),
        ..options(&new.script).retry(new.retry.policy()?)
    };
    options.max_depth = new.retry.max_depth;
    Ok(ctx
        .admin()
        .add_trigger(app.id, options, &new.principal)
        .await?)
}

pub async fn trigger(ctx: &Ctx, cmd: TriggerCmd) -> Result<()> {
    match cmd {
        TriggerCmd::AddKv {
            collection,
            ops,
            ordered,
            new,
        } => {
            let ops = KvOps::parse(&ops)?;
            let t = add_trigger(ctx, &new, |script| {
                let options = TriggerOptions::kv(script, &collection, ops);
                if ordered { options.ordered() } else { options }
            })
            .await?;
            println!(
                "registered kv trigger {} ({}) on '{collection}' [{}{}] as {}",
                t.name,
                t.id,
                ops.as_db_str(),
                if ordered { ", ordered per key" } else { "" },
                t.registered_by_principal
            );
        }
        TriggerCmd::AddDeadLetter { source, new } => {
            let t = add_trigger(ctx, &new, |script| {
                TriggerOptions::dead_letter(script, &source)
            })
            .await?;
            println!(
                "registered dead_letter trigger {} ({}) on source '{source}' as {}",
                t.name, t.id, t.registered_by_principal
            );
        }
        TriggerCmd::AddCron {
            schedule,
            timezone,
            catch_up,
            new,
        } => {
            let catch_up: CatchUp = catch_up.parse()?;
            let t = add_trigger(ctx, &new, |script| {
                TriggerOptions::cron(script, &schedule, &timezone, catch_up)
            })
            .await?;
            println!(
                "registered cron trigger {} ({}) on '{schedule}' ({timezone}, catch-up {catch_up}) as {}; next tick {}",
                t.name,
                t.id,
                t.registered_by_principal,
                t.next_fire_at
                    .map_or_else(|| "never".to_owned(), |at| at.to_string())
            );
        }
        TriggerCmd::AddQueue { queue, batch, new } => {
            let t = add_trigger(ctx, &new, |script| {
                TriggerOptions::queue(script, &queue, batch)
            })
            .await?;
            println!(
                "registered queue trigger {} ({}) consuming '{queue}' (batches of up to {batch}) as {}",
                t.name, t.id, t.registered_by_principal
            );
        }
        TriggerCmd::AddPubsub { topic, new } => {
            let t = add_trigger(ctx, &new, |script| TriggerOptions::pubsub(script, &topic)).await?;
            println!(
                "registered pubsub trigger {} ({}) on topic '{topic}' as {}",
                t.name, t.id, t.registered_by_principal
            );
        }
        TriggerCmd::List { app, format } => {
            let app = ctx.app(&app).await?;
            let triggers = ctx.store.list_triggers(app.id).await?;
            if format.json {
                return print_json(&triggers);
            }
            let scripts = ctx.store.list_scripts(app.id).await?;
            let script_name = |id| {
                scripts
                    .iter()
                    .find(|s| s.id == id)
                    .map(|s| s.name.clone())
                    .unwrap_or_default()
            };
            let mut t = Table::new([
                "ID", "NAME", "KIND", "PATTERN", "OPS", "SCRIPT", "AS", "ENABLED", "RETRY", "NEXT",
            ]);
            for tr in &triggers {
                let (pattern, ops) = match &tr.spec {
                    TriggerSpec::Kv {
                        collection,
                        ops,
                        ordered,
                    } => (
                        collection.clone(),
                        format!(
                            "{}{}",
                            ops.as_db_str(),
                            if *ordered { " ordered" } else { "" }
                        ),
                    ),
                    TriggerSpec::DeadLetter { source } => (source.clone(), String::new()),
                    TriggerSpec::Cron {
                        schedule,
                        timezone,
                        catch_up,
                    } => (schedule.clone(), format!("{timezone} catch-up={catch_up}")),
                    TriggerSpec::Queue { queue, batch } => {
                        (queue.clone(), format!("batch={batch}"))
                    }
                    TriggerSpec::Pubsub { topic } => (topic.clone(), String::new()),
                };
                t.row([
                    tr.id.to_string(),
                    tr.name.clone(),
                    tr.spec.kind().to_owned(),
                    pattern,
                    ops,
                    script_name(tr.script_id),
                    tr.registered_by_principal.clone(),
                    tr.enabled.to_string(),
                    match tr.max_depth {
                        Some(d) => format!("{} max-depth={d}", tr.retry),
                        None => tr.retry.to_string(),
                    },
                    tr.next_fire_at.map(|at| at.to_string()).unwrap_or_default(),
                ]);
            }
            t.print();
        }
        TriggerCmd::Enable { id } => set_enabled(ctx, &id, true).await?,
        TriggerCmd::Disable { id } => set_enabled(ctx, &id, false).await?,
        TriggerCmd::Remove { id } => {
            let id = trigger_id(&id)?;
            if !ctx.store.delete_trigger(id).await? {
                bail!("unknown trigger '{id}'");
            }
            println!("removed trigger {id}");
        }
    }
    Ok(())
}

async fn set_enabled(ctx: &Ctx, id: &str, enabled: bool) -> Result<()> {
    let t = ctx
        .store
        .set_trigger_enabled(trigger_id(id)?, enabled)
        .await?;
    println!(
        "{} trigger {}",
        if enabled { "enabled" } else { "disabled" },
        t.id
    );
    Ok(())
}

pub async fn queue(ctx: &Ctx, cmd: QueueCmd) -> Result<()> {
    match cmd {
        QueueCmd::Send {
            app,
            queue,
            body,
            delay_ms,
        } => {
            let app = ctx.app(&app).await?;
            let body = picloud_host::admin::parse_json("body", &body)?;
            let id = ctx
                .store
                .enqueue(&messages::queue_message(app.id, &queue, body, delay_ms)?)
                .await?;
            match delay_ms {
                0 => println!("sent message {id} to queue '{queue}'"),
                ms => println!("sent message {id} to queue '{queue}', due in {ms} ms"),
            }
        }
    }
    Ok(())
}

pub async fn pubsub(ctx: &Ctx, cmd: PubsubCmd) -> Result<()> {
    match cmd {
        PubsubCmd::Publish { app, topic, body } => {
            let app = ctx.app(&app).await?;
            let body = picloud_host::admin::parse_json("body", &body)?;
            let id = ctx
                .store
                .enqueue(&messages::publication(app.id, &topic, body)?)
                .await?;
            println!("published message {id} on topic '{topic}'");
        }
    }
    Ok(())
}

pub async fn kv(ctx: &Ctx, cmd: KvCmd) -> Result<()> {
    match cmd {
        KvCmd::Set {
            app,
            collection,
            key,
            json,
            principal,
        } => {
            let app = ctx.app(&app).await?;
            // A value too large for one command-line argument comes on stdin.
            let json = if json == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .context("cannot read the value from standard input")?;
                text
            } else {
                json
            };
            store::validate_kv_value_len(json.len())?;
            let value = picloud_host::admin::parse_json("value", &json)?;
            let e = ctx
                .admin()
                .kv_set(app.id, &collection, &key, &value, &principal)
                .await?;
            println!("set {collection}/{key} (version {})", e.version);
        }
        KvCmd::Get {
            app,
            collection,
            key,
            principal,
        } => {
            let app = ctx.app(&app).await?;
            if let Some(p) = &principal {
                require(&*ctx.authorizer, p, Capability::KvRead(app.id)).await?;
            }
            match ctx.store.kv_get(app.id, &collection, &key).await? {
                Some(e) => println!("{}", serde_json::to_string_pretty(&e.value)?),
                None => bail!(
                    "no key '{key}' in collection '{collection}' of {}",
                    app.name
                ),
            }
        }
        KvCmd::Delete {
            app,
            collection,
            key,
            principal,
        } => {
            let app = ctx.app(&app).await?;
            if ctx
                .admin()
                .kv_delete(app.id, &collection, &key, &principal)
                .await?
            {
                println!("deleted {collection}/{key}");
            } else {
                bail!(
                    "no key '{key}' in collection '{collection}' of {}",
                    app.name
                );
            }
        }
        KvCmd::List {
            app,
            collection,
            principal,
            format,
        } => {
            let app = ctx.app(&app).await?;
            if let Some(p) = &principal {
                require(&*ctx.authorizer, p, Capability::KvRead(app.id)).await?;
            }
            let mut keys = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = ctx
                    .store
                    .kv_list_keys(app.id, &collection, after.as_deref(), 1000)
                    .await?;
                let done = page.len() < 1000;
                after = page.last().cloned();
                keys.extend(page);
                if done {
                    break;
                }
            }
            if format.json {
                return print_json(&keys);
            }
            for k in keys {
                println!("{k}");
            }
        }
    }
    Ok(())
}

pub async fn invoke(ctx: &Ctx, host: TriggerHost, args: InvokeArgs) -> Result<()> {
    let app = ctx.app(&args.app).await?;
    let payload = picloud_host::admin::parse_json("payload", &args.payload)?;
    let host = Arc::new(host);
    // The inbox is in-process on SQLite, so this process also dispatches
    // while it waits; on PostgreSQL any running dispatcher may answer.
    let cancel = CancellationToken::new();
    let runner = {
        let (host, cancel) = (host.clone(), cancel.clone());
        tokio::spawn(async move { host.run(cancel).await })
    };
    let result = host
        .invoke(
            app.id,
            &args.script,
            payload,
            &args.principal,
            Duration::from_millis(args.timeout_ms),
        )
        .await;
    cancel.cancel();
    let _ = runner.await;
    match result? {
        Some(body) => match std::str::from_utf8(&body) {
            Ok(text) => println!("{text}"),
            Err(_) => println!("({} bytes of binary reply)", body.len()),
        },
        None => println!("(no reply body)"),
    }
    Ok(())
}

pub async fn dead_letters(ctx: &Ctx, cmd: DeadLetterCmd) -> Result<()> {
    match cmd {
        DeadLetterCmd::List {
            app,
            unresolved,
            source,
            trigger,
            format,
        } => {
            let app_id = match app {
                Some(a) => Some(ctx.app(&a).await?.id),
                None => None,
            };
            let filter = DeadLetterFilter {
                app_id,
                unresolved_only: unresolved,
                source,
                trigger_id: trigger.as_deref().map(trigger_id).transpose()?,
                ..DeadLetterFilter::default()
            };
            let list = ctx.store.list_dead_letters(&filter).await?;
            if format.json {
                return print_json(&list);
            }
            let mut t = Table::new([
                "ID",
                "SOURCE/OP",
                "ATTEMPTS",
                "RESOLUTION",
                "CREATED",
                "LAST ERROR",
            ]);
            for d in &list {
                let mut err = d.last_error.replace('\n', " ");
                if err.len() > 60 {
                    let mut cut = 60;
                    while !err.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    err.truncate(cut);
                    err.push('…');
                }
                t.row([
                    d.id.to_string(),
                    format!("{}/{}", d.source, d.op),
                    d.attempt_count.to_string(),
                    d.resolution
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "-".into()),
                    d.created_at.to_string(),
                    err,
                ]);
            }
            t.print();
        }
        DeadLetterCmd::Show {
            id,
            principal,
            format,
        } => crate::runs::dead_letter(ctx, &id, principal.as_deref(), format.json).await?,
        DeadLetterCmd::Count { app } => {
            let app = ctx.app(&app).await?;
            println!("{}", ctx.store.unresolved_count(app.id).await?);
        }
        DeadLetterCmd::Replay { ids } => settle(ctx, &ids, Resolution::Replayed).await?,
        DeadLetterCmd::Ignore { ids } => settle(ctx, &ids, Resolution::Ignored).await?,
        DeadLetterCmd::Resolve { id, resolution } => {
            let resolution: Resolution = resolution.parse()?;
            settle(ctx, &[id], resolution).await?
        }
        DeadLetterCmd::ReplayAll {
            app,
            source,
            trigger,
            since,
            until,
        } => {
            let app = ctx.app(&app).await?;
            let filter = DeadLetterFilter {
                app_id: Some(app.id),
                unresolved_only: true,
                source,
                trigger_id: trigger.as_deref().map(trigger_id).transpose()?,
                created_after: since
                    .as_deref()
                    .map(|t| timestamp("--since", t))
                    .transpose()?,
                created_before: until
                    .as_deref()
                    .map(|t| timestamp("--until", t))
                    .transpose()?,
                ..DeadLetterFilter::default()
            };
            let mut bar: Option<Progress> = None;
            let report = ctx
                .admin()
                .replay_matching(&filter, None, |done, total| {
                    bar.get_or_insert_with(|| Progress::new("replay", total))
                        .update(done)
                })
                .await?;
            if let Some(bar) = &bar {
                bar.finish(report.replayed + report.failed);
            }
            println!("replayed {} dead letters of {}", report.replayed, app.name);
            if let Some(first) = report.first_error {
                bail!("{} could not be replayed; first: {first}", report.failed);
            }
        }
    }
    Ok(())
}

async fn settle(ctx: &Ctx, ids: &[String], resolution: Resolution) -> Result<()> {
    let ids = ids
        .iter()
        .map(|i| dead_letter_id(i))
        .collect::<Result<Vec<_>>>()?;
    let results = ctx
        .admin()
        .resolve_many(&ids, resolution, None, |_| {})
        .await;
    let mut failures = Vec::new();
    for (id, r) in ids.iter().zip(results) {
        match r {
            Ok(_) => println!("{id}: {resolution}"),
            Err(e) => failures.push(e),
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 if ids.len() == 1 => Err(failures.remove(0).into()),
        n => bail!(
            "{n} of {} dead letters were not {resolution}; first: {}",
            ids.len(),
            failures[0]
        ),
    }
}

pub async fn token(ctx: &Ctx, cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create { principal, name } => {
            let (token, secret) =
                picloud_host::tokens::create(&*ctx.store, &principal, &name).await?;
            eprintln!(
                "created token {} ({}) for {principal}; it is shown once, store it now:",
                token.name, token.id
            );
            println!("{secret}");
        }
        TokenCmd::List { principal, format } => {
            let tokens = ctx.store.list_tokens(principal.as_deref()).await?;
            if format.json {
                return print_json(&tokens);
            }
            let mut t = Table::new(["ID", "PRINCIPAL", "NAME", "CREATED", "REVOKED"]);
            for tk in &tokens {
                t.row([
                    tk.id.to_string(),
                    tk.principal.clone(),
                    tk.name.clone(),
                    tk.created_at.to_string(),
                    tk.revoked_at
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            t.print();
        }
        TokenCmd::Revoke { id } => {
            let id = id.parse().map_err(|_| {
                anyhow::anyhow!("unknown token '{id}': give a token id (see `token list`)")
            })?;
            let token = ctx.store.revoke_token(id).await?;
            println!("revoked token {} of {}", token.id, token.principal);
        }
    }
    Ok(())
}
