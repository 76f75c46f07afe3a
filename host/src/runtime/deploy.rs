//! Deploy-time validation: only real trigger components are stored.
//!
//! Rule: a script is stored only after it has been compiled and linked
//! against the host's imports and found to export `handle`; every refusal is
//! one line that names the problem and the fix, and stores nothing.

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::Runtime;
use super::cache::LoadError;
use crate::config::vars;
use crate::model::{AppId, Script};
use crate::store;

/// Why a deploy was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Over `PICLOUD_SCRIPT_MAX_BYTES`.
    #[error("script is {size} bytes, over the limit of {limit} bytes (PICLOUD_SCRIPT_MAX_BYTES)")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: u64,
    },
    /// No wasm header.
    #[error("not a WebAssembly file: build the script with `cargo build --target wasm32-wasip2`")]
    NotWasm,
    /// A library archive (`.rlib`, `.a`): what cargo builds from a crate
    /// without `crate-type = ["cdylib"]`.
    #[error(
        "this is a Rust library archive (.rlib), not a component: add `[lib] crate-type = [\"cdylib\"]` to the script's Cargo.toml, build with `cargo build --target wasm32-wasip2` and deploy the .wasm file"
    )]
    LibraryArchive,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target (`cargo build --target wasm32-wasip2`)"
    )]
    CoreModule,
    /// It does not compile.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// It imports something the host does not provide.
    #[error(
        "component imports {0}, which the host does not provide: a trigger script may import only picloud:trigger/kv, dead-letters, log and WASI 0.2"
    )]
    UnknownImport(String),
    /// It imports an interface the host provides, but with other types.
    #[error(
        "component imports {what} with types the host does not match ({detail}): build it against this host's picloud-sdk"
    )]
    ImportMismatch {
        /// The import.
        what: String,
        /// How its types differ.
        detail: String,
    },
    /// It lacks the handler.
    #[error(
        "component does not export `handle`: it does not implement the picloud:trigger/trigger world (put #[picloud_sdk::handler] on your handler)"
    )]
    MissingExport,
    /// It exports `handle`, but not with the trigger world's type.
    #[error(
        "component exports `handle` with the wrong type ({0}): it does not implement the picloud:trigger/trigger world (build it against picloud-sdk's #[picloud_sdk::handler])"
    )]
    WrongExport(String),
    /// More core instances, memories or tables than a component may have:
    /// each invocation would take that many slots of the shared pool.
    #[error(
        "component contains {count} {what}, over the limit of {limit} per component ({var}): a trigger script built with picloud-sdk has far fewer; do not bundle other modules into it"
    )]
    OverCap {
        /// What there are too many of.
        what: &'static str,
        /// How many it has.
        count: u64,
        /// The cap.
        limit: u32,
        /// The variable that sets the cap.
        var: &'static str,
    },
    /// A bad script name.
    #[error("invalid script name '{0}': use 1 to 128 letters, digits, '-', '_' or '.'")]
    BadName(String),
    /// The store refused it.
    #[error(transparent)]
    Store(#[from] store::Error),
}

const COMPONENT_HEADER: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
const CORE_HEADER: [u8; 4] = [0x01, 0x00, 0x00, 0x00];

/// Check a script name.
pub fn validate_name(name: &str) -> Result<(), DeployError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(DeployError::BadName(name.to_owned()))
    }
}

/// The hex SHA-256 of a component: its identity in the compile cache.
pub fn sha256_hex(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))
}

impl Runtime {
    /// Compile and link `wasm` as a trigger script without storing it. Code
    /// compiled before (same content hash, in this process or the on-disk
    /// cache) is not compiled again.
    pub async fn validate(&self, wasm: &[u8]) -> Result<Component, DeployError> {
        self.validate_hashed(wasm, &sha256_hex(wasm)).await
    }

    async fn validate_hashed(&self, wasm: &[u8], sha: &str) -> Result<Component, DeployError> {
        let limit = self.ceiling().script_max_bytes;
        if wasm.len() as u64 > limit {
            return Err(DeployError::TooLarge {
                size: wasm.len(),
                limit,
            });
        }
        if wasm.starts_with(b"!<arch>\n") {
            return Err(DeployError::LibraryArchive);
        }
        if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
            return Err(DeployError::NotWasm);
        }
        if wasm[4..8] == CORE_HEADER {
            return Err(DeployError::CoreModule);
        }
        if wasm[4..8] != COMPONENT_HEADER {
            return Err(DeployError::Invalid(
                "unknown WebAssembly version or layer".into(),
            ));
        }
        if let Some(component) = self.cache().compiled(sha).await {
            self.check_links(&component)?;
            return Ok(component);
        }
        let engine = self.engine().clone();
        let bytes = wasm.to_vec();
        let component =
            tokio::task::spawn_blocking(move || Component::from_binary(&engine, &bytes))
                .await
                .map_err(|e| DeployError::Invalid(e.to_string()))?
                .map_err(|e| self.compile_error(&e))?;
        self.check_links(&component)?;
        Ok(component)
    }

    /// The engine's refusal of a component over a per-component cap (it
    /// counts them when compiling), named with our variable; any other
    /// compile error as it is.
    fn compile_error(&self, e: &wasmtime::Error) -> DeployError {
        let text = format!("{e:#}");
        let c = self.ceiling();
        let caps = [
            (
                "core module instances",
                "core module instances",
                c.component_core_instances,
                vars::CORE_INSTANCES,
            ),
            (
                "Wasm linear memories",
                "linear memories",
                c.component_memories,
                vars::MEMORIES,
            ),
            (
                "tables, which exceeds",
                "tables",
                c.component_tables,
                vars::TABLES,
            ),
        ];
        let count = text
            .split_once("transitively contains ")
            .and_then(|(_, rest)| rest.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(count) = count {
            for (marker, what, limit, var) in caps {
                if text.contains(marker) {
                    return DeployError::OverCap {
                        what,
                        count,
                        limit,
                        var,
                    };
                }
            }
        }
        DeployError::Invalid(first_line(e))
    }

    fn check_links(&self, component: &Component) -> Result<(), DeployError> {
        match super::compat::Ready::new(self.linker(), component) {
            Ok(_) => Ok(()),
            Err(super::compat::ReadyError::Link(e)) => Err(import_error(&e)),
            Err(super::compat::ReadyError::Export(e)) => Err(export_error(&e)),
        }
    }

    /// Validate `wasm` and store it as script `name` of `app` (replacing the
    /// code of an existing script of that name), as deployed by the operator
    /// or the embedding application itself. Unchecked: for a principal, use
    /// [`crate::TriggerHost::deploy`]. The compiled form goes into the
    /// cache, so the first invocation does not compile again.
    pub async fn deploy(&self, app: AppId, name: &str, wasm: &[u8]) -> Result<Script, DeployError> {
        self.deploy_as(app, name, wasm, None).await
    }

    /// [`Runtime::deploy`] for `principal` (check its `ScriptDeploy` first):
    /// the script's host calls then need `principal`'s rights as well as
    /// those of whoever it runs as, so redeploying the script behind
    /// someone else's trigger never lends the deployer their rights.
    pub async fn deploy_as(
        &self,
        app: AppId,
        name: &str,
        wasm: &[u8],
        principal: Option<&str>,
    ) -> Result<Script, DeployError> {
        validate_name(name)?;
        let sha = sha256_hex(wasm);
        let component = self.validate_hashed(wasm, &sha).await?;
        let script = self
            .services()
            .store
            .put_script(app, name, wasm, &sha, principal)
            .await?;
        if let Err(e) = self.cache().insert(self.linker(), &sha, &component).await {
            // Validation linked it a moment ago; this would be a host bug.
            tracing::warn!(error = %e, "deployed script could not be cached");
        }
        Ok(script)
    }
}

/// An import the host does not provide at all, or provides with other types
/// (a script built against another version of the interface).
fn import_error(e: &wasmtime::Error) -> DeployError {
    // wasmtime: "component imports instance `x`, but a matching
    // implementation was not found in the linker: <why>"
    let text = format!("{e:#}").replace('\n', " ");
    let what = text
        .strip_prefix("component imports ")
        .and_then(|rest| rest.split(", but").next())
        .unwrap_or(&text)
        .to_owned();
    let why = text
        .split_once("not found in the linker: ")
        .map(|(_, why)| why)
        .unwrap_or("");
    if why.contains("type mismatch") {
        DeployError::ImportMismatch {
            what,
            detail: why.to_owned(),
        }
    } else {
        DeployError::UnknownImport(what)
    }
}

/// A missing `handle`, or one whose type is not the trigger world's.
fn export_error(e: &wasmtime::Error) -> DeployError {
    let text = first_line(e);
    if text.starts_with("no export") {
        DeployError::MissingExport
    } else {
        DeployError::WrongExport(text)
    }
}

fn first_line(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    text.lines().next().unwrap_or("").to_owned()
}

impl From<LoadError> for DeployError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Link(m) => DeployError::UnknownImport(m),
            LoadError::Export(_) => DeployError::MissingExport,
            other => DeployError::Invalid(other.to_string()),
        }
    }
}
