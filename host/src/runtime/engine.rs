//! The one wasmtime `Engine` of a process, and the clock that bounds guests.
//!
//! Rule: the engine is built once, with the pooling allocator sized from the
//! [`SandboxCeiling`] (its per-component caps times its instances, so a full
//! pool of the largest deployable components fits) and epoch interruption on; a ticker thread that holds
//! only a weak reference to the engine advances the epoch every
//! [`EPOCH_TICK`], so a guest's deadline is its timeout rounded up to a tick,
//! and the thread ends by itself when the engine is dropped.

use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::SandboxCeiling;

/// How often the epoch advances.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of each memory and table slot reset with memset and kept resident.
const KEEP_RESIDENT: usize = 64 * 1024;

/// Guest stack limit: deep recursion traps with a stack overflow well before
/// the host's own stack is at risk.
pub const MAX_WASM_STACK: usize = 512 * 1024;

/// Build the engine for `ceiling` and start its epoch ticker.
pub fn build(ceiling: &SandboxCeiling) -> wasmtime::Result<Engine> {
    let instances = ceiling.max_instances;
    let mut pool = PoolingAllocationConfig::default();
    // Every component is capped at deploy (the engine refuses to compile
    // one over a cap), and the pool holds `instances` components at the
    // caps: a full pool of maximal components fits, so no component can
    // take the slots another app's invocation needs.
    pool.total_component_instances(instances)
        .max_core_instances_per_component(ceiling.component_core_instances)
        .max_memories_per_component(ceiling.component_memories)
        .max_tables_per_component(ceiling.component_tables)
        .total_core_instances(instances.saturating_mul(ceiling.component_core_instances))
        .total_memories(instances.saturating_mul(ceiling.component_memories))
        .total_tables(instances.saturating_mul(ceiling.component_tables))
        .total_stacks(instances)
        .max_memory_size(ceiling.memory_bytes as usize)
        // Reset small dirty regions with memset instead of madvise, so a
        // reused slot does not page-fault its first pages back in; and on
        // kernels that have PAGEMAP_SCAN, reset only the pages a guest dirtied.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)?;
    start_ticker(&engine);
    Ok(engine)
}

fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("picloud-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// The number of epoch ticks that covers `timeout`, plus one for the tick
/// already in progress.
pub fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (timeout.as_nanos().div_ceil(tick) as u64).saturating_add(1)
}
