//! Compiled scripts, cached by content hash in memory and on disk.
//!
//! Rule: a component is compiled at most once per content hash per process
//! (concurrent first calls share one compilation), and at most once per
//! machine while its on-disk artifact is valid: a restarted process loads the
//! precompiled artifact instead of compiling again. The key is the SHA-256 of
//! the component bytes plus the engine's compatibility hash, so a redeploy
//! or an engine upgrade can never run stale code.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::compat::{Ready, ReadyError};
use super::host::State;

/// How a script's compiled form was obtained, for the benchmark and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Compiled from wasm bytes.
    pub compiled: AtomicU64,
    /// Loaded from the on-disk cache.
    pub disk_hits: AtomicU64,
    /// Served from memory.
    pub memory_hits: AtomicU64,
}

type Slot = Arc<OnceCell<Ready>>;

/// The cache of ready-to-instantiate scripts.
pub struct ScriptCache {
    engine: Engine,
    dir: Option<PathBuf>,
    engine_tag: String,
    slots: Mutex<HashMap<String, Slot>>,
    /// Counters.
    pub stats: CacheStats,
}

impl ScriptCache {
    /// A cache keeping artifacts under `dir` (in memory only when `None`).
    pub fn new(engine: Engine, dir: Option<PathBuf>) -> Self {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        ScriptCache {
            engine,
            dir,
            engine_tag: format!("{:016x}", h.finish()),
            slots: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
        }
    }

    fn slot(&self, sha256: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(sha256.to_owned()).or_default().clone()
    }

    fn artifact_path(&self, sha256: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}-{}.cwasm", self.engine_tag)))
    }

    /// The ready script for `sha256`, built by `load_code` (which returns the
    /// component bytes) only if neither memory nor disk has it.
    pub async fn get_or_load<F, Fut>(
        &self,
        linker: &Linker<State>,
        sha256: &str,
        load_code: F,
    ) -> Result<Ready, LoadError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, LoadError>>,
    {
        let slot = self.slot(sha256);
        if let Some(pre) = slot.get() {
            self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(pre.clone());
        }
        let pre = slot
            .get_or_try_init(|| async {
                let component = match self.load_artifact(sha256).await {
                    Some(c) => c,
                    None => {
                        let code = load_code().await?;
                        self.compile_and_store(sha256, code).await?
                    }
                };
                prepare(linker, &component)
            })
            .await?;
        Ok(pre.clone())
    }

    /// The compiled component for `sha256` if this process or the on-disk
    /// cache has it: a deploy of code compiled before (a redeploy, the same
    /// script in another app, another dispatcher's deploy) does not compile
    /// again.
    pub async fn compiled(&self, sha256: &str) -> Option<Component> {
        if let Some(pre) = self.slot(sha256).get() {
            self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Some(pre.component().clone());
        }
        self.load_artifact(sha256).await
    }

    /// Put an already compiled component in the cache (after a deploy).
    pub async fn insert(
        &self,
        linker: &Linker<State>,
        sha256: &str,
        component: &Component,
    ) -> Result<(), LoadError> {
        self.store_artifact(sha256, component).await;
        let pre = prepare(linker, component)?;
        let _ = self.slot(sha256).set(pre);
        Ok(())
    }

    async fn load_artifact(&self, sha256: &str) -> Option<Component> {
        let path = self.artifact_path(sha256)?;
        if !path.exists() {
            return None;
        }
        let engine = self.engine.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            // SAFETY: the artifact was written by `store_artifact` of this
            // cache, under a name that carries the engine's compatibility
            // hash; wasmtime re-checks compatibility and errors otherwise.
            unsafe { Component::deserialize_file(&engine, &path) }
        })
        .await
        .ok()?;
        match loaded {
            Ok(c) => {
                self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                Some(c)
            }
            Err(e) => {
                tracing::warn!(sha256, error = %e, "ignoring unusable cached artifact");
                None
            }
        }
    }

    async fn compile_and_store(&self, sha256: &str, code: Vec<u8>) -> Result<Component, LoadError> {
        let engine = self.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &code))
            .await
            .map_err(|e| LoadError::Compile(e.to_string()))?
            .map_err(|e| LoadError::Compile(e.to_string()))?;
        self.stats.compiled.fetch_add(1, Ordering::Relaxed);
        self.store_artifact(sha256, &component).await;
        Ok(component)
    }

    async fn store_artifact(&self, sha256: &str, component: &Component) {
        let Some(path) = self.artifact_path(sha256) else {
            return;
        };
        if path.exists() {
            return;
        }
        let bytes = match component.serialize() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(sha256, error = %e, "cannot serialize compiled script");
                return;
            }
        };
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await;
        if let Ok(Err(e)) = result {
            tracing::warn!(sha256, error = %e, "cannot write the compile cache");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn prepare(linker: &Linker<State>, component: &Component) -> Result<Ready, LoadError> {
    Ready::new(linker, component).map_err(|e| match e {
        ReadyError::Link(e) => LoadError::Link(e.to_string()),
        ReadyError::Export(e) => LoadError::Export(e.to_string()),
    })
}

/// Why a script could not be made ready to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Its code could not be fetched.
    #[error("cannot load script code: {0}")]
    Code(String),
    /// Storage did not answer while fetching its code (the host's failure,
    /// not the script's).
    #[error("cannot load script code: {0}")]
    Unavailable(String),
    /// It does not compile.
    #[error("cannot compile script: {0}")]
    Compile(String),
    /// It imports something the host does not provide.
    #[error("{0}")]
    Link(String),
    /// It lacks the handler export.
    #[error("component does not implement the trigger world: {0}")]
    Export(String),
}
