//! Principals, scopes and capabilities: who may do what to which app.
//!
//! Rule: every action on an app's data is checked against the acting
//! principal *at the moment of the action* through an [`Authorizer`]; nothing
//! caches a grant, so removing a member takes effect on their next call.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{AppId, InvalidValue};
use crate::store::Store;

/// The seven scopes of the permission model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Operates the whole instance; satisfies every scope of every app.
    InstanceAdmin,
    /// Manages an app: members, triggers, dead letters.
    AppAdmin,
    /// Deploys scripts.
    AppDeploy,
    /// Writes app data (KV).
    AppWrite,
    /// Reads app data (KV, dead letters).
    AppRead,
    /// Invokes scripts synchronously.
    AppInvoke,
    /// Reads logs.
    AppLogs,
}

/// A principal's role in one app (the `app_members.role` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub enum Role {
    /// Every app scope.
    Admin,
    /// Deploy, write, read, invoke, logs.
    Developer,
    /// Read and logs.
    Viewer,
}

impl Role {
    /// The database form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "developer" => Ok(Role::Developer),
            "viewer" => Ok(Role::Viewer),
            other => Err(InvalidValue::new("role", other, "admin, developer, viewer")),
        }
    }
}

/// Whether a per-app role satisfies a scope. No app role satisfies
/// [`Scope::InstanceAdmin`].
pub fn role_satisfies(role: Role, scope: Scope) -> bool {
    use Scope::*;
    match role {
        Role::Admin => scope != InstanceAdmin,
        Role::Developer => matches!(scope, AppDeploy | AppWrite | AppRead | AppInvoke | AppLogs),
        Role::Viewer => matches!(scope, AppRead | AppLogs),
    }
}

/// The least role that satisfies `scope`, to name in a refusal; `None` for
/// [`Scope::InstanceAdmin`], which no app role grants.
pub fn least_role_for(scope: Scope) -> Option<Role> {
    [Role::Viewer, Role::Developer, Role::Admin]
        .into_iter()
        .find(|role| role_satisfies(*role, scope))
}

/// Something a principal wants to do to an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Capability {
    /// Register, enable, disable or remove triggers.
    AppManageTriggers(AppId),
    /// Resolve, replay or ignore dead letters.
    AppDeadLetterManage(AppId),
    /// Read KV entries and dead letters.
    KvRead(AppId),
    /// Write or delete KV entries.
    KvWrite(AppId),
    /// Deploy or remove scripts.
    ScriptDeploy(AppId),
    /// Invoke a script synchronously.
    ScriptInvoke(AppId),
    /// Read run records and their log lines.
    LogsRead(AppId),
    /// Add, change or remove the app's members.
    AppManageMembers(AppId),
    /// Set or remove the app's variables and secrets, and its allowed
    /// outbound hosts.
    AppManageConfig(AppId),
    /// Read the app's variables (a secret's name, not its value) and its
    /// allowed outbound hosts.
    ConfigRead(AppId),
    /// Read a secret's value: only a script does, through `wasi:config`.
    SecretRead(AppId),
    /// Make outbound HTTP requests (to the app's allowed hosts).
    HttpOutbound(AppId),
}

impl Capability {
    /// The scope this capability needs.
    pub fn scope(self) -> Scope {
        match self {
            Capability::AppManageTriggers(_)
            | Capability::AppDeadLetterManage(_)
            | Capability::AppManageMembers(_)
            | Capability::AppManageConfig(_) => Scope::AppAdmin,
            Capability::KvRead(_) | Capability::ConfigRead(_) => Scope::AppRead,
            Capability::KvWrite(_) | Capability::SecretRead(_) | Capability::HttpOutbound(_) => {
                Scope::AppWrite
            }
            Capability::ScriptDeploy(_) => Scope::AppDeploy,
            Capability::ScriptInvoke(_) => Scope::AppInvoke,
            Capability::LogsRead(_) => Scope::AppLogs,
        }
    }

    /// The app it concerns.
    pub fn app(self) -> AppId {
        match self {
            Capability::AppManageTriggers(a)
            | Capability::AppDeadLetterManage(a)
            | Capability::KvRead(a)
            | Capability::KvWrite(a)
            | Capability::ScriptDeploy(a)
            | Capability::ScriptInvoke(a)
            | Capability::LogsRead(a)
            | Capability::AppManageMembers(a)
            | Capability::AppManageConfig(a)
            | Capability::ConfigRead(a)
            | Capability::SecretRead(a)
            | Capability::HttpOutbound(a) => a,
        }
    }
}

/// The answer could not be had: the store behind the built-in authorizer
/// failed, or a custom authorizer's own source (a directory, a token
/// service) did. Not a refusal: that is `Ok(false)`.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The host's store failed.
    #[error("authorization check failed: {0}")]
    Store(#[from] crate::store::Error),
    /// A custom authorizer's own failure ([`AuthError::other`]).
    #[error("authorization check failed: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl AuthError {
    /// A custom authorizer's failure, with its cause.
    pub fn other(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        AuthError::Other(cause.into())
    }
}

/// The attribute an [`Authorizer`] implementation is written with,
/// re-exported so that implementing the trait needs no dependency of your
/// own: `#[picloud_host::auth::async_trait] impl Authorizer for Mine {...}`.
pub use async_trait::async_trait;

/// Answers "may `principal` use `capability` now?". The manager plugs in its
/// own; [`MemberAuthorizer`] is the built-in one.
///
/// ```
/// use picloud_host::auth::{async_trait, AuthError, Authorizer, Capability, Scope};
///
/// /// Everyone may read; only "ops" may do anything else.
/// struct ReadOnlyExceptOps;
///
/// #[async_trait]
/// impl Authorizer for ReadOnlyExceptOps {
///     async fn allowed(&self, principal: &str, capability: Capability) -> Result<bool, AuthError> {
///         if principal.is_empty() {
///             return Err(AuthError::other("no principal"));
///         }
///         Ok(principal == "ops" || capability.scope() == Scope::AppRead)
///     }
/// }
/// ```
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// Whether the principal holds the capability at this moment.
    async fn allowed(&self, principal: &str, capability: Capability) -> Result<bool, AuthError>;
}

/// The built-in authorizer: reads `app_members`, plus an optional set of
/// instance administrators who may do anything.
pub struct MemberAuthorizer {
    store: Arc<dyn Store>,
    instance_admins: HashSet<String>,
}

impl MemberAuthorizer {
    /// An authorizer over the store's `app_members` table.
    pub fn new(store: Arc<dyn Store>) -> Self {
        MemberAuthorizer {
            store,
            instance_admins: HashSet::new(),
        }
    }

    /// Also treat these principals as instance administrators.
    pub fn with_instance_admins(mut self, admins: impl IntoIterator<Item = String>) -> Self {
        self.instance_admins.extend(admins);
        self
    }
}

#[async_trait]
impl Authorizer for MemberAuthorizer {
    async fn allowed(&self, principal: &str, capability: Capability) -> Result<bool, AuthError> {
        if self.instance_admins.contains(principal) {
            return Ok(true);
        }
        let role = self.store.member_role(capability.app(), principal).await?;
        Ok(role.is_some_and(|role| role_satisfies(role, capability.scope())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_scopes() {
        use Scope::*;
        let all = [
            InstanceAdmin,
            AppAdmin,
            AppDeploy,
            AppWrite,
            AppRead,
            AppInvoke,
            AppLogs,
        ];
        for s in all {
            assert_eq!(role_satisfies(Role::Admin, s), s != InstanceAdmin, "{s:?}");
        }
        let dev: Vec<_> = all
            .into_iter()
            .filter(|s| role_satisfies(Role::Developer, *s))
            .collect();
        assert_eq!(dev, [AppDeploy, AppWrite, AppRead, AppInvoke, AppLogs]);
        let viewer: Vec<_> = all
            .into_iter()
            .filter(|s| role_satisfies(Role::Viewer, *s))
            .collect();
        assert_eq!(viewer, [AppRead, AppLogs]);
    }

    #[test]
    fn capabilities_map_onto_scopes() {
        let a = AppId::new();
        assert_eq!(Capability::AppManageTriggers(a).scope(), Scope::AppAdmin);
        assert_eq!(Capability::AppDeadLetterManage(a).scope(), Scope::AppAdmin);
        assert_eq!(Capability::KvRead(a).scope(), Scope::AppRead);
        assert_eq!(Capability::KvWrite(a).scope(), Scope::AppWrite);
        assert_eq!(Capability::ScriptDeploy(a).scope(), Scope::AppDeploy);
        assert_eq!(Capability::ScriptInvoke(a).scope(), Scope::AppInvoke);
        assert_eq!(Capability::KvWrite(a).app(), a);
    }

    #[test]
    fn role_parsing() {
        assert_eq!("viewer".parse::<Role>().unwrap(), Role::Viewer);
        assert!("owner".parse::<Role>().is_err());
    }
}
