//! Operations an operator or the manager's dashboard performs on an app:
//! acting as a principal, registering triggers, bulk dead-letter work.
//!
//! Rule: every operation that acts *for* a principal checks that
//! principal's capability first, through the same [`Authorizer`] the
//! sandbox uses, and a refusal changes nothing. Bulk operations settle each
//! item in its own transaction and report per item, so one failure never
//! hides the others.

use std::sync::Arc;

use serde_json::Value;

use crate::auth::Role;
use crate::auth::{Authorizer, Capability};
use crate::cron::CatchUp;
use crate::model::{
    App, AppId, DeadLetter, DeadLetterFilter, DeadLetterId, EventId, KvEntry, KvOps, NewTrigger,
    Resolution, RunId, Script, ScriptId, Trigger, TriggerId, TriggerSpec,
};
use crate::outbound::HostPattern;
use crate::retry::RetryPolicy;
use crate::runs::{Follower, Run, RunFilter};
use crate::secrets::{AppVar, SecretKey};
use crate::store::Member;
use crate::store::{self, Store};

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The principal lacks the capability. The message names the least
    /// role that grants it and the command that gives it.
    #[error("permission denied: {principal} lacks {scope:?} on this app{}", grant_hint(principal, *scope))]
    PermissionDenied {
        /// Who.
        principal: String,
        /// The scope that was needed.
        scope: crate::auth::Scope,
    },
    /// A JSON argument did not parse.
    #[error("invalid JSON {what}: {reason}")]
    InvalidJson {
        /// Which argument.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A deploy was refused (see [`crate::runtime::DeployError`]).
    #[error(transparent)]
    Deploy(#[from] crate::runtime::DeployError),
    /// The authorizer could not answer.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A secret cannot be stored: the host has no key.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
}

/// How `principal` could get `scope`: the least role with it and the
/// command, for the end of a refusal.
fn grant_hint(principal: &str, scope: crate::auth::Scope) -> String {
    match crate::auth::least_role_for(scope) {
        Some(role) => format!(
            " (not a member, or a member whose role does not grant it): the {role} role grants it; \
             an app admin or the operator runs `picloud-host member add APP {principal} {role}`"
        ),
        None => " (only the operator has it)".to_owned(),
    }
}

/// `found` when it belongs to `app`; otherwise not found, as if it did not
/// exist (another app's things are not told).
fn of_app<T>(
    app: AppId,
    owner: AppId,
    what: &'static str,
    id: impl ToString,
    found: T,
) -> Result<T> {
    if owner == app {
        return Ok(found);
    }
    Err(store::Error::NotFound {
        what,
        id: id.to_string(),
    }
    .into())
}

/// `pattern` in canonical form, or why it is not one.
fn host_pattern(pattern: &str) -> Result<String> {
    let parsed: HostPattern = pattern
        .parse()
        .map_err(|e: crate::outbound::PatternError| store::Error::Invalid(e.to_string()))?;
    Ok(parsed.to_string())
}

/// Result with [`AdminError`].
pub type Result<T, E = AdminError> = std::result::Result<T, E>;

/// Fail unless `principal` holds `capability` now.
pub async fn require(
    authorizer: &dyn Authorizer,
    principal: &str,
    capability: Capability,
) -> Result<()> {
    if authorizer.allowed(principal, capability).await? {
        Ok(())
    } else {
        Err(AdminError::PermissionDenied {
            principal: principal.to_owned(),
            scope: capability.scope(),
        })
    }
}

/// Parse a JSON argument, naming it in the error.
pub fn parse_json(what: &'static str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| AdminError::InvalidJson {
        what,
        reason: e.to_string(),
    })
}

/// What trigger to register ([`Admin::add_trigger`]): its script (name or
/// id), what it fires on, and its name (default `<script>-on-<collection>`
/// or `<script>-on-dead-letters`).
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerOptions {
    /// The script it runs (name or id).
    pub script: String,
    /// What it fires on.
    pub spec: TriggerSpec,
    /// Its name; `None` for the default.
    pub name: Option<String>,
    /// Its retry policy; the default leaves every choice to the host.
    pub retry: RetryPolicy,
    /// Its own depth limit, below the host's; `None`: the host's.
    pub max_depth: Option<u32>,
}

impl TriggerOptions {
    /// Fire `script` on writes to collections matching `collection`
    /// (exact, `prefix*` or `*`) with one of `ops`.
    pub fn kv(script: &str, collection: &str, ops: KvOps) -> Self {
        TriggerOptions {
            script: script.to_owned(),
            spec: TriggerSpec::Kv {
                collection: collection.to_owned(),
                ops,
                ordered: false,
            },
            name: None,
            retry: RetryPolicy::default(),
            max_depth: None,
        }
    }

    /// The same kv trigger, run in order per key (see
    /// [`TriggerSpec::Kv::ordered`]). A dead_letter trigger is unchanged.
    pub fn ordered(mut self) -> Self {
        if let TriggerSpec::Kv { ordered, .. } = &mut self.spec {
            *ordered = true;
        }
        self
    }

    /// Fire `script` on new dead letters whose original source matches
    /// `source`.
    pub fn dead_letter(script: &str, source: &str) -> Self {
        TriggerOptions {
            script: script.to_owned(),
            spec: TriggerSpec::DeadLetter {
                source: source.to_owned(),
            },
            name: None,
            retry: RetryPolicy::default(),
            max_depth: None,
        }
    }

    /// Run `script` on `schedule` (five cron fields, or six with seconds
    /// first) in `timezone` (IANA, e.g. `UTC`), catching up as `catch_up`
    /// says (see [`crate::cron`]).
    pub fn cron(script: &str, schedule: &str, timezone: &str, catch_up: CatchUp) -> Self {
        TriggerOptions {
            script: script.to_owned(),
            spec: TriggerSpec::Cron {
                schedule: schedule.to_owned(),
                timezone: timezone.to_owned(),
                catch_up,
            },
            name: None,
            retry: RetryPolicy::default(),
            max_depth: None,
        }
    }

    /// Consume the app's queue `queue` with `script`, up to `batch`
    /// messages per invocation (1: one `queue`/`message` event each).
    pub fn queue(script: &str, queue: &str, batch: u32) -> Self {
        TriggerOptions {
            script: script.to_owned(),
            spec: TriggerSpec::Queue {
                queue: queue.to_owned(),
                batch,
            },
            name: None,
            retry: RetryPolicy::default(),
            max_depth: None,
        }
    }

    /// Run `script` on messages published to topics matching `topic`
    /// (exact, `prefix*` or `*`).
    pub fn pubsub(script: &str, topic: &str) -> Self {
        TriggerOptions {
            script: script.to_owned(),
            spec: TriggerSpec::Pubsub {
                topic: topic.to_owned(),
            },
            name: None,
            retry: RetryPolicy::default(),
            max_depth: None,
        }
    }

    /// The same, with its own name.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// The same, with its own retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same, with its own depth limit (below the host's).
    pub fn max_depth(mut self, depth: u32) -> Self {
        self.max_depth = Some(depth);
        self
    }
}

/// The operations, over one store and authorizer.
pub struct Admin {
    store: Arc<dyn Store>,
    authorizer: Arc<dyn Authorizer>,
    secret_key: Option<SecretKey>,
}

impl Admin {
    /// Operations over `store`, checked by `authorizer`.
    pub fn new(store: Arc<dyn Store>, authorizer: Arc<dyn Authorizer>) -> Self {
        Admin {
            store,
            authorizer,
            secret_key: None,
        }
    }

    /// Seal secrets with `key` (`PICLOUD_SECRET_KEY`); without one,
    /// [`Admin::set_var`] refuses secrets and says why.
    pub fn with_secret_key(mut self, key: Option<SecretKey>) -> Self {
        self.secret_key = key;
        self
    }

    /// `Ok` when `principal` holds `capability`; `None` is the operator
    /// (the CLI on the database), who may do anything.
    async fn acting(&self, principal: Option<&str>, capability: Capability) -> Result<()> {
        match principal {
            Some(p) => require(&*self.authorizer, p, capability).await,
            None => Ok(()),
        }
    }

    /// The app's allowed outbound hosts, canonical (needs
    /// [`Capability::ConfigRead`]).
    pub async fn hosts(&self, app: AppId, principal: Option<&str>) -> Result<Vec<String>> {
        self.acting(principal, Capability::ConfigRead(app)).await?;
        Ok(self.store.list_hosts(app).await?)
    }

    /// Allow the app's scripts to reach `pattern` (`scheme://host[:port]`,
    /// host an exact name or `*.domain`; needs
    /// [`Capability::AppManageConfig`]). Returns the canonical pattern and
    /// whether it was new. A malformed pattern is refused before anything.
    pub async fn allow_host(
        &self,
        app: AppId,
        pattern: &str,
        principal: Option<&str>,
    ) -> Result<(String, bool)> {
        let pattern = host_pattern(pattern)?;
        self.acting(principal, Capability::AppManageConfig(app))
            .await?;
        let added = self.store.allow_host(app, &pattern).await?;
        Ok((pattern, added))
    }

    /// Stop allowing `pattern` (needs [`Capability::AppManageConfig`]);
    /// not found if it was not allowed. Returns the canonical pattern.
    pub async fn deny_host(
        &self,
        app: AppId,
        pattern: &str,
        principal: Option<&str>,
    ) -> Result<String> {
        let pattern = host_pattern(pattern)?;
        self.acting(principal, Capability::AppManageConfig(app))
            .await?;
        if !self.store.deny_host(app, &pattern).await? {
            return Err(store::Error::NotFound {
                what: "allowed host",
                id: pattern,
            }
            .into());
        }
        Ok(pattern)
    }

    /// The app's variables, a secret without its value (needs
    /// [`Capability::ConfigRead`]).
    pub async fn vars(&self, app: AppId, principal: Option<&str>) -> Result<Vec<AppVar>> {
        self.acting(principal, Capability::ConfigRead(app)).await?;
        let vars = self.store.list_vars(app).await?;
        Ok(vars.into_iter().map(AppVar::from).collect())
    }

    /// Set a variable, or with `secret` a secret, sealed with the host's
    /// key (needs [`Capability::AppManageConfig`]). A secret without a key
    /// is refused and nothing is stored.
    pub async fn set_var(
        &self,
        app: AppId,
        name: &str,
        value: &str,
        secret: bool,
        principal: Option<&str>,
    ) -> Result<()> {
        store::validate_var_name(name)?;
        store::validate_var_value(value.len())?;
        let stored = match (secret, &self.secret_key) {
            (false, _) => value.as_bytes().to_vec(),
            (true, Some(key)) => key.seal(app, name, value),
            (true, None) => return Err(crate::secrets::SecretError::NoKey.into()),
        };
        self.acting(principal, Capability::AppManageConfig(app))
            .await?;
        Ok(self.store.put_var(app, name, secret, &stored).await?)
    }

    /// Remove a variable or secret (needs [`Capability::AppManageConfig`]);
    /// not found if there was none.
    pub async fn unset_var(&self, app: AppId, name: &str, principal: Option<&str>) -> Result<()> {
        self.acting(principal, Capability::AppManageConfig(app))
            .await?;
        if !self.store.remove_var(app, name).await? {
            return Err(store::Error::NotFound {
                what: "variable",
                id: name.to_owned(),
            }
            .into());
        }
        Ok(())
    }

    /// Register a trigger of `app` as `principal`, who needs
    /// [`Capability::AppManageTriggers`]; the trigger's script then runs as
    /// that principal. A bad pattern is refused before anything is looked
    /// up; an unknown script is [`store::Error::NotFound`].
    ///
    /// ```no_run
    /// # async fn example(admin: picloud_host::admin::Admin, app: picloud_host::model::AppId) -> picloud_host::admin::Result<()> {
    /// use picloud_host::admin::TriggerOptions;
    /// use picloud_host::model::KvOps;
    ///
    /// admin.add_trigger(app, TriggerOptions::kv("order-totals", "orders", KvOps::ALL), "alice").await?;
    /// admin
    ///     .add_trigger(app, TriggerOptions::dead_letter("triage", "kv").named("triage"), "alice")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_trigger(
        &self,
        app: AppId,
        options: TriggerOptions,
        principal: &str,
    ) -> Result<Trigger> {
        let TriggerOptions {
            script,
            spec,
            name,
            retry,
            max_depth,
        } = options;
        let suffix = match &spec {
            TriggerSpec::Kv { collection, .. } => format!("on-{collection}"),
            TriggerSpec::DeadLetter { .. } => "on-dead-letters".to_owned(),
            TriggerSpec::Cron { .. } => "cron".to_owned(),
            TriggerSpec::Queue { queue, .. } => format!("on-queue-{queue}"),
            TriggerSpec::Pubsub { topic, .. } => format!("on-topic-{topic}"),
        };
        let policy = (retry, max_depth);
        self.register(
            app,
            &script,
            spec,
            policy,
            principal,
            name.as_deref(),
            &suffix,
        )
        .await
    }

    /// Validate the pattern, check the principal, resolve the script, store.
    async fn register(
        &self,
        app: AppId,
        script: &str,
        spec: TriggerSpec,
        (retry, max_depth): (RetryPolicy, Option<u32>),
        principal: &str,
        name: Option<&str>,
        default_suffix: &str,
    ) -> Result<Trigger> {
        let trigger_for = |script_id, script_name: &str| NewTrigger {
            app_id: app,
            script_id,
            name: name
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{script_name}-{default_suffix}")),
            registered_by_principal: principal.to_owned(),
            spec: spec.clone(),
            retry,
            max_depth,
        };
        // Refuse a bad pattern before anything else (nothing is looked up).
        store::validate_trigger(&trigger_for(ScriptId(uuid::Uuid::nil()), ""))?;
        require(
            &*self.authorizer,
            principal,
            Capability::AppManageTriggers(app),
        )
        .await?;
        let script = self.store.find_script(app, script).await?;
        Ok(self
            .store
            .create_trigger(&trigger_for(script.id, &script.name))
            .await?)
    }

    /// The apps `principal` may read (data or logs), by name.
    pub async fn visible_apps(&self, principal: &str) -> Result<Vec<App>> {
        let mut visible = Vec::new();
        for app in self.store.list_apps().await? {
            let a = &*self.authorizer;
            if a.allowed(principal, Capability::KvRead(app.id)).await?
                || a.allowed(principal, Capability::LogsRead(app.id)).await?
            {
                visible.push(app);
            }
        }
        Ok(visible)
    }

    /// An app by name or id, once `principal` is found to hold `capability`
    /// in it (given the app's id).
    pub async fn app_for(
        &self,
        name_or_id: &str,
        principal: &str,
        capability: fn(AppId) -> Capability,
    ) -> Result<App> {
        let app = self.store.find_app(name_or_id).await?;
        require(&*self.authorizer, principal, capability(app.id)).await?;
        Ok(app)
    }

    /// The members of `app` (`principal` needs [`Capability::KvRead`]).
    pub async fn members(&self, app: AppId, principal: &str) -> Result<Vec<Member>> {
        require(&*self.authorizer, principal, Capability::KvRead(app)).await?;
        Ok(self.store.list_members(app).await?)
    }

    /// Add a member or change their role (`principal` needs
    /// [`Capability::AppManageMembers`]).
    pub async fn set_member(
        &self,
        app: AppId,
        member: &str,
        role: Role,
        principal: &str,
    ) -> Result<()> {
        store::validate_printable("principal", member)?;
        require(
            &*self.authorizer,
            principal,
            Capability::AppManageMembers(app),
        )
        .await?;
        Ok(self.store.set_member(app, member, role).await?)
    }

    /// Remove a member (`principal` needs [`Capability::AppManageMembers`]);
    /// [`store::Error::NotFound`] if they were not one.
    pub async fn remove_member(&self, app: AppId, member: &str, principal: &str) -> Result<()> {
        require(
            &*self.authorizer,
            principal,
            Capability::AppManageMembers(app),
        )
        .await?;
        match self.store.remove_member(app, member).await? {
            true => Ok(()),
            false => Err(store::Error::NotFound {
                what: "member",
                id: member.to_owned(),
            }
            .into()),
        }
    }

    /// The scripts of `app` (`principal` needs [`Capability::KvRead`]).
    pub async fn scripts(&self, app: AppId, principal: &str) -> Result<Vec<Script>> {
        require(&*self.authorizer, principal, Capability::KvRead(app)).await?;
        Ok(self.store.list_scripts(app).await?)
    }

    /// Remove a script (name or id) and its triggers (`principal` needs
    /// [`Capability::ScriptDeploy`]).
    pub async fn remove_script(&self, app: AppId, script: &str, principal: &str) -> Result<Script> {
        require(&*self.authorizer, principal, Capability::ScriptDeploy(app)).await?;
        let script = self.store.find_script(app, script).await?;
        self.store.remove_script(app, script.id).await?;
        Ok(script)
    }

    /// The triggers of `app` (`principal` needs [`Capability::KvRead`]).
    pub async fn triggers(&self, app: AppId, principal: &str) -> Result<Vec<Trigger>> {
        require(&*self.authorizer, principal, Capability::KvRead(app)).await?;
        Ok(self.store.list_triggers(app).await?)
    }

    /// A trigger of `app`: [`store::Error::NotFound`] for another app's.
    async fn trigger_of(&self, app: AppId, id: TriggerId) -> Result<Trigger> {
        let t = self.store.get_trigger(id).await?;
        of_app(app, t.app_id, "trigger", id, t)
    }

    /// Enable or disable a trigger of `app` (`principal` needs
    /// [`Capability::AppManageTriggers`]).
    pub async fn set_trigger_enabled(
        &self,
        app: AppId,
        id: TriggerId,
        enabled: bool,
        principal: &str,
    ) -> Result<Trigger> {
        require(
            &*self.authorizer,
            principal,
            Capability::AppManageTriggers(app),
        )
        .await?;
        self.trigger_of(app, id).await?;
        Ok(self.store.set_trigger_enabled(id, enabled).await?)
    }

    /// Remove a trigger of `app` (`principal` needs
    /// [`Capability::AppManageTriggers`]).
    pub async fn remove_trigger(&self, app: AppId, id: TriggerId, principal: &str) -> Result<()> {
        require(
            &*self.authorizer,
            principal,
            Capability::AppManageTriggers(app),
        )
        .await?;
        self.trigger_of(app, id).await?;
        self.store.delete_trigger(id).await?;
        Ok(())
    }

    /// Read a KV entry (`principal` needs [`Capability::KvRead`]).
    pub async fn kv_get(
        &self,
        app: AppId,
        collection: &str,
        key: &str,
        principal: &str,
    ) -> Result<Option<KvEntry>> {
        store::validate_kv_names(collection, key)?;
        require(&*self.authorizer, principal, Capability::KvRead(app)).await?;
        Ok(self.store.kv_get(app, collection, key).await?)
    }

    /// Up to `limit` keys of a collection after `after`, in key order
    /// (`principal` needs [`Capability::KvRead`]).
    pub async fn kv_keys(
        &self,
        app: AppId,
        collection: &str,
        after: Option<&str>,
        limit: u32,
        principal: &str,
    ) -> Result<Vec<String>> {
        require(&*self.authorizer, principal, Capability::KvRead(app)).await?;
        Ok(self
            .store
            .kv_list_keys(app, collection, after, limit)
            .await?)
    }

    /// Dead letters of `filter.app_id`, which must be set (`principal`
    /// needs [`Capability::KvRead`] there).
    pub async fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
        principal: &str,
    ) -> Result<Vec<DeadLetter>> {
        let Some(app) = filter.app_id else {
            return Err(store::Error::Invalid("a listing must name its app".into()).into());
        };
        require(&*self.authorizer, principal, Capability::KvRead(app)).await?;
        Ok(self.store.list_dead_letters(filter).await?)
    }

    /// The number of unresolved dead letters of `app`: the dashboard badge
    /// (`principal` needs [`Capability::KvRead`]).
    pub async fn unresolved_count(&self, app: AppId, principal: &str) -> Result<i64> {
        require(&*self.authorizer, principal, Capability::KvRead(app)).await?;
        Ok(self.store.unresolved_count(app).await?)
    }

    /// A dead letter of `app`: [`store::Error::NotFound`] for another
    /// app's, so that its existence is not told.
    pub async fn dead_letter_of(&self, app: AppId, id: DeadLetterId) -> Result<DeadLetter> {
        let d = self.store.get_dead_letter(id).await?;
        of_app(app, d.app_id, "dead letter", id, d)
    }

    /// Resolve a dead letter of `app` (a replay re-enqueues it); `principal`
    /// needs [`Capability::AppDeadLetterManage`].
    pub async fn resolve_in(
        &self,
        app: AppId,
        id: DeadLetterId,
        resolution: Resolution,
        principal: &str,
    ) -> Result<DeadLetter> {
        require(
            &*self.authorizer,
            principal,
            Capability::AppDeadLetterManage(app),
        )
        .await?;
        self.dead_letter_of(app, id).await?;
        Ok(self.store.resolve(id, resolution).await?)
    }

    /// Write a KV entry as `principal` (needs KvWrite); enqueues its event.
    pub async fn kv_set(
        &self,
        app: AppId,
        collection: &str,
        key: &str,
        value: &(impl serde::Serialize + ?Sized),
        principal: &str,
    ) -> Result<KvEntry> {
        let value = serde_json::to_value(value).map_err(|e| AdminError::InvalidJson {
            what: "value",
            reason: e.to_string(),
        })?;
        store::validate_json_depth("value", &value)?;
        store::validate_kv_value_len(value.to_string().len())?;
        store::validate_kv_names(collection, key)?;
        require(&*self.authorizer, principal, Capability::KvWrite(app)).await?;
        Ok(self.store.kv_set(app, collection, key, &value, 0).await?)
    }

    /// Send `body` to the app's queue `queue` as `principal` (needs
    /// KvWrite), due after `delay_ms`. From the manager's own transaction,
    /// build it with [`crate::messages::queue_message`] and enqueue it on
    /// that transaction ([`store::Conn::enqueue`]).
    pub async fn send_to_queue(
        &self,
        app: AppId,
        queue: &str,
        body: Value,
        delay_ms: u64,
        principal: &str,
    ) -> Result<EventId> {
        let message = crate::messages::queue_message(app, queue, body, delay_ms)?;
        require(&*self.authorizer, principal, Capability::KvWrite(app)).await?;
        Ok(self.store.enqueue(&message).await?)
    }

    /// Publish `body` on the app's topic `topic` as `principal` (needs
    /// KvWrite): every matching `pubsub` trigger gets it. From the
    /// manager's own transaction, see [`crate::messages::publication`].
    pub async fn publish(
        &self,
        app: AppId,
        topic: &str,
        body: Value,
        principal: &str,
    ) -> Result<EventId> {
        let message = crate::messages::publication(app, topic, body)?;
        require(&*self.authorizer, principal, Capability::KvWrite(app)).await?;
        Ok(self.store.enqueue(&message).await?)
    }

    /// Delete a KV entry as `principal` (needs KvWrite); enqueues its event.
    pub async fn kv_delete(
        &self,
        app: AppId,
        collection: &str,
        key: &str,
        principal: &str,
    ) -> Result<bool> {
        store::validate_kv_names(collection, key)?;
        require(&*self.authorizer, principal, Capability::KvWrite(app)).await?;
        Ok(self.store.kv_delete(app, collection, key, 0).await?)
    }

    /// Resolve each of `ids` with `resolution` (a replay re-enqueues it), in
    /// order, calling `progress` with the number done so far; one result per
    /// id. `principal` needs [`Capability::AppDeadLetterManage`] in each dead
    /// letter's app, or that item is refused; `None` is the operator or the
    /// embedding application itself, unchecked.
    pub async fn resolve_many(
        &self,
        ids: &[DeadLetterId],
        resolution: Resolution,
        principal: Option<&str>,
        mut progress: impl FnMut(u64),
    ) -> Vec<Result<DeadLetter>> {
        let mut allowed: Vec<AppId> = Vec::new();
        let mut out = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let result = async {
                if let Some(p) = principal {
                    let app = self.store.get_dead_letter(*id).await?.app_id;
                    if !allowed.contains(&app) {
                        require(&*self.authorizer, p, Capability::AppDeadLetterManage(app)).await?;
                        allowed.push(app);
                    }
                }
                Ok(self.store.resolve(*id, resolution).await?)
            }
            .await;
            out.push(result);
            progress(i as u64 + 1);
        }
        out
    }

    /// Runs of `filter.app_id`, newest first (oldest first when asked).
    /// `principal` needs `AppLogs`; `None` is the operator or the
    /// embedding application itself, unchecked.
    pub async fn list_runs(&self, filter: &RunFilter, principal: Option<&str>) -> Result<Vec<Run>> {
        self.acting(principal, Capability::LogsRead(filter.app_id))
            .await?;
        Ok(self.store.list_runs(filter).await?)
    }

    /// One run, with its log lines (`principal`: as [`Admin::list_runs`]).
    pub async fn get_run(&self, id: RunId, principal: Option<&str>) -> Result<Run> {
        let run = self.store.get_run(id).await?;
        self.acting(principal, Capability::LogsRead(run.app_id))
            .await?;
        Ok(run)
    }

    /// A dead letter and its history: every run of its original event,
    /// oldest first, each with its error and log lines (`principal`: as
    /// [`Admin::list_runs`]).
    pub async fn dead_letter_history(
        &self,
        id: DeadLetterId,
        principal: Option<&str>,
    ) -> Result<(DeadLetter, Vec<Run>)> {
        let dead = self.store.get_dead_letter(id).await?;
        self.acting(principal, Capability::LogsRead(dead.app_id))
            .await?;
        Ok((dead, self.store.dead_letter_runs(id).await?))
    }

    /// Follow the runs matching `filter` as they are recorded, from now on
    /// (`principal`: as [`Admin::list_runs`]).
    pub async fn follow_runs(
        &self,
        filter: RunFilter,
        principal: Option<&str>,
    ) -> Result<Follower> {
        self.acting(principal, Capability::LogsRead(filter.app_id))
            .await?;
        Ok(Follower::start(self.store.clone(), filter).await?)
    }

    /// Replay every unresolved dead letter matching `filter` (its limit,
    /// cursor and order aside), however many there are: a page of
    /// [`REPLAY_PAGE`] at a time, oldest first, each in its own transaction.
    /// `progress` is called with (done, total) after each one. `principal`
    /// needs [`Capability::AppDeadLetterManage`] in `filter.app_id`, which
    /// it must then name; `None` is the operator or the embedding
    /// application itself, unchecked. One failure does not stop the rest:
    /// the report counts them and keeps the first error.
    pub async fn replay_matching(
        &self,
        filter: &DeadLetterFilter,
        principal: Option<&str>,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<BulkReport> {
        if let Some(p) = principal {
            let Some(app) = filter.app_id else {
                return Err(store::Error::Invalid(
                    "a principal's bulk replay must name its app: set the filter's app_id".into(),
                )
                .into());
            };
            require(&*self.authorizer, p, Capability::AppDeadLetterManage(app)).await?;
        }
        let mut page = DeadLetterFilter {
            unresolved_only: true,
            newest_first: false,
            after: None,
            limit: None,
            ..filter.clone()
        };
        let total = self.store.count_dead_letters(&page).await?;
        page.limit = Some(REPLAY_PAGE);
        let mut report = BulkReport::default();
        loop {
            let ids: Vec<DeadLetterId> = self
                .store
                .list_dead_letters(&page)
                .await?
                .iter()
                .map(|d| d.id)
                .collect();
            let Some(last) = ids.last() else { break };
            page.after = Some(*last);
            for id in &ids {
                match self.store.resolve(*id, Resolution::Replayed).await {
                    Ok(_) => report.replayed += 1,
                    Err(e) => {
                        report.failed += 1;
                        report.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                // Dead letters made while this runs may add to the total.
                let done = report.replayed + report.failed;
                progress(done, total.max(done));
            }
        }
        Ok(report)
    }
}

/// How many dead letters a bulk replay reads at a time.
pub const REPLAY_PAGE: u32 = 500;

/// What a bulk replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct BulkReport {
    /// Dead letters replayed.
    pub replayed: u64,
    /// Dead letters that could not be (resolved meanwhile, store errors).
    pub failed: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
}
