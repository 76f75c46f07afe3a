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

use crate::auth::{Authorizer, Capability};
use crate::model::{
    AppId, DeadLetter, DeadLetterFilter, DeadLetterId, KvEntry, KvOps, NewTrigger, Resolution,
    RunId, ScriptId, Trigger, TriggerSpec,
};
use crate::runs::{Follower, Run, RunFilter};
use crate::store::{self, Store};

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The principal lacks the capability.
    #[error("permission denied: {principal} lacks {scope:?} on this app")]
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
    /// The authorizer could not answer.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
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

/// The operations, over one store and authorizer.
pub struct Admin {
    store: Arc<dyn Store>,
    authorizer: Arc<dyn Authorizer>,
}

impl Admin {
    /// Operations over `store`, checked by `authorizer`.
    pub fn new(store: Arc<dyn Store>, authorizer: Arc<dyn Authorizer>) -> Self {
        Admin { store, authorizer }
    }

    /// Register a kv trigger as `principal` (needs AppManageTriggers).
    pub async fn add_kv_trigger(
        &self,
        app: AppId,
        script: &str,
        collection: &str,
        ops: KvOps,
        principal: &str,
        name: Option<&str>,
    ) -> Result<Trigger> {
        let spec = TriggerSpec::Kv {
            collection: collection.to_owned(),
            ops,
        };
        self.add_trigger(
            app,
            script,
            spec,
            principal,
            name,
            &format!("on-{collection}"),
        )
        .await
    }

    /// Register a dead_letter trigger as `principal` (needs AppManageTriggers).
    pub async fn add_dead_letter_trigger(
        &self,
        app: AppId,
        script: &str,
        source: &str,
        principal: &str,
        name: Option<&str>,
    ) -> Result<Trigger> {
        let spec = TriggerSpec::DeadLetter {
            source: source.to_owned(),
        };
        self.add_trigger(app, script, spec, principal, name, "on-dead-letters")
            .await
    }

    /// Validate the pattern, check the principal, resolve the script, store.
    async fn add_trigger(
        &self,
        app: AppId,
        script: &str,
        spec: TriggerSpec,
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
        };
        // Refuse a bad pattern before anything else (nothing is looked up).
        store::validate_trigger(&trigger_for(ScriptId(uuid::Uuid::nil()), ""))
            .map_err(store::Error::from)?;
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

    /// Write a KV entry as `principal` (needs KvWrite); enqueues its event.
    pub async fn kv_set(
        &self,
        app: AppId,
        collection: &str,
        key: &str,
        json: &str,
        principal: &str,
    ) -> Result<KvEntry> {
        store::validate_kv_value_len(json.len())?;
        let value = parse_json("value", json)?;
        store::validate_kv_names(collection, key)?;
        require(&*self.authorizer, principal, Capability::KvWrite(app)).await?;
        Ok(self.store.kv_set(app, collection, key, &value, 0).await?)
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

    /// Resolve each dead letter; per-item results, in order.
    pub async fn resolve_many(
        &self,
        ids: &[DeadLetterId],
        resolution: Resolution,
        mut progress: impl FnMut(u64),
    ) -> Vec<store::Result<DeadLetter>> {
        let mut out = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            out.push(self.store.resolve(*id, resolution).await);
            progress(i as u64 + 1);
        }
        out
    }

    /// Runs of `filter.app_id`, newest first (oldest first when asked).
    /// `principal` needs `AppLogs`; `None` is the operator or the
    /// embedding application itself, unchecked.
    pub async fn list_runs(&self, filter: &RunFilter, principal: Option<&str>) -> Result<Vec<Run>> {
        self.may_read_logs(filter.app_id, principal).await?;
        Ok(self.store.list_runs(filter).await?)
    }

    /// One run, with its log lines (`principal`: as [`Admin::list_runs`]).
    pub async fn get_run(&self, id: RunId, principal: Option<&str>) -> Result<Run> {
        let run = self.store.get_run(id).await?;
        self.may_read_logs(run.app_id, principal).await?;
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
        self.may_read_logs(dead.app_id, principal).await?;
        Ok((dead, self.store.dead_letter_runs(id).await?))
    }

    /// Follow the runs matching `filter` as they are recorded, from now on
    /// (`principal`: as [`Admin::list_runs`]).
    pub async fn follow_runs(
        &self,
        filter: RunFilter,
        principal: Option<&str>,
    ) -> Result<Follower> {
        self.may_read_logs(filter.app_id, principal).await?;
        Ok(Follower::start(self.store.clone(), filter).await?)
    }

    async fn may_read_logs(&self, app: AppId, principal: Option<&str>) -> Result<()> {
        match principal {
            Some(p) => require(&*self.authorizer, p, Capability::LogsRead(app)).await,
            None => Ok(()),
        }
    }

    /// Replay every unresolved dead letter matching `filter`.
    pub async fn replay_matching(
        &self,
        filter: &DeadLetterFilter,
        progress: impl FnMut(u64, u64),
    ) -> store::Result<Vec<store::Result<DeadLetter>>> {
        let filter = DeadLetterFilter {
            unresolved_only: true,
            ..filter.clone()
        };
        let ids: Vec<DeadLetterId> = self
            .store
            .list_dead_letters(&filter)
            .await?
            .iter()
            .map(|d| d.id)
            .collect();
        let total = ids.len() as u64;
        let mut progress = progress;
        Ok(self
            .resolve_many(&ids, Resolution::Replayed, |done| progress(done, total))
            .await)
    }
}
