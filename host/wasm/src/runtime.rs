//! The engine: configuration, the epoch ticker, loading and validation.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, ComponentExportIndex, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use dstream_core::job::Wasi;

use crate::host::{HostState, Plugin as World, PluginPre as WorldPre, Stop, Wasi as WasiCtx};
use crate::plugin::Plugin;
use crate::{Error, WIT_VERSION};

/// How often the epoch ticks: the resolution of deadlines.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// The limits every call runs under. One set per runtime; a multi-tenant
/// host keeps one runtime per quota class.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Linear memory one instance may grow to (bytes).
    pub memory: usize,
    /// Wall-clock time one call may take before it is stopped.
    pub deadline: Duration,
    /// Largest component accepted (bytes).
    pub component_size: usize,
    /// Instances that may run at once (pooling allocator slots); further
    /// calls wait for a free slot.
    pub instances: u32,
    /// Bytes of each instance's memory kept mapped between calls (reset
    /// with memset instead of being returned to the kernel): size it to a
    /// typical partition and its output.
    pub keep_resident: usize,
    /// Let [`Plugin::filter_lent`](crate::Plugin::filter_lent) lend a
    /// partition's pages to plugins instead of copying them (Linux; on by
    /// default). The pages are copy-on-write: a plugin that writes into its
    /// input changes only its own view, as with a copy (see
    /// [`PagedBatch`](crate::PagedBatch)). Off, `filter_lent` copies, as
    /// `filter` does.
    pub lend_input: bool,
}

impl Limits {
    /// The largest input (bytes of records) the engine should hand one call:
    /// an eighth of the memory limit (room for the input, its output and
    /// the operator's own data), and no more than a quarter of what stays
    /// resident (bigger calls fault their pages in anew every time).
    pub fn call_input(&self) -> usize {
        (self.memory / 8).min(self.keep_resident / 4).max(64 << 10)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: 512 << 20,
            deadline: Duration::from_secs(10),
            component_size: 32 << 20,
            instances: 64,
            keep_resident: 64 << 20,
            lend_input: true,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    /// One permit per pooled instance: a call waits for a free slot instead
    /// of failing when every slot is busy.
    pub(crate) slots: Slots,
    pub(crate) linker: Linker<HostState>,
    pub(crate) limits: Limits,
    /// Dropping the sender stops the ticker.
    _ticker: Ticker,
}

struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A Wasm engine for dstream plugins. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

fn engine_error(e: impl std::fmt::Display) -> Error {
    Error::Engine(e.to_string())
}

impl Runtime {
    /// A runtime whose calls run under `limits`.
    pub fn new(limits: Limits) -> Result<Self, Error> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // Deadlines: a ticker thread bumps the epoch every TICK.
            .epoch_interruption(true)
            // Determinism: the same input gives the same bytes anywhere.
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            // A lent region's address must hold for the call (see lend.rs):
            // pool memories never move, and this makes it a guarantee.
            .memory_may_move(false)
            // Out-of-bounds accesses trap by signal (the default, stated).
            .signals_based_traps(true);
        // `perf record` can name the JIT-compiled functions of plugins when
        // DSTREAM_WASM_PERFMAP is set (wasmtime writes /tmp/perf-PID.map).
        // With the `profiling` feature, DSTREAM_WASM_PERFMAP=jitdump writes
        // a jitdump file instead, for `perf record -k 1` then
        // `perf inject --jit`: instruction-level `perf annotate`.
        match std::env::var("DSTREAM_WASM_PERFMAP").as_deref() {
            #[cfg(feature = "profiling")]
            Ok("jitdump") => config.profiler(wasmtime::ProfilingStrategy::JitDump),
            Ok(_) => config.profiler(wasmtime::ProfilingStrategy::PerfMap),
            Err(_) => &mut config,
        };
        #[cfg(feature = "component-model-async")]
        config.wasm_component_model_async(true);
        let page = 64 << 10;
        let memory = limits.memory.div_ceil(page) * page;
        let mut pool = PoolingAllocationConfig::default();
        // A component built by wit-component holds a few core instances (the
        // module and its shims); size the pool for `instances` of them.
        let (cores, memories, tables) = (8, 2, 4);
        pool.total_component_instances(limits.instances)
            .total_core_instances(limits.instances * cores)
            .total_memories(limits.instances * memories)
            .total_tables(limits.instances * tables)
            .max_memory_size(memory)
            .max_memories_per_component(memories)
            .max_tables_per_component(tables)
            .max_core_instances_per_component(cores)
            // Every call gets a fresh instance, so slots are reused all the
            // time. Resetting the first `keep_resident` bytes of a memory with
            // memset keeps those pages mapped; the default (madvise) makes
            // the next call fault every page of its partition in again, which
            // measured as half the time of a grep call.
            .linear_memory_keep_resident(limits.keep_resident.min(memory))
            .table_keep_resident(1 << 20)
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(engine_error)?;
        let mut linker = Linker::new(&engine);
        World::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(engine_error)?;
        // WASI, for plugins allowed its deterministic stand-ins (checked at
        // load; the others cannot import it).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_error)?;
        crate::host::frozen_sleep(&mut linker).map_err(engine_error)?;
        let (stop, ticks) = mpsc::channel::<()>();
        let ticking = engine.clone();
        let thread = std::thread::Builder::new()
            .name("dstream-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = ticks.recv_timeout(TICK) {
                    ticking.increment_epoch();
                }
            })
            .map_err(engine_error)?;
        Ok(Self {
            inner: Arc::new(Inner {
                slots: Slots::new(limits.instances),
                engine,
                linker,
                limits,
                _ticker: Ticker {
                    stop: Some(stop),
                    thread: Some(thread),
                },
            }),
        })
    }

    /// The limits calls run under.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Validates and compiles a component, and asks it to describe itself.
    /// A component importing WASI is refused (see [`Runtime::load_with`]).
    ///
    /// `name` is how errors and logs refer to the plugin.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Plugin, Error> {
        self.load_with(name, bytes, Wasi::Refuse)
    }

    /// [`Runtime::load`] under a WASI policy: with [`Wasi::Deterministic`],
    /// a component may import `wasi:cli`, `wasi:clocks`, `wasi:random`,
    /// `wasi:io` and `wasi:filesystem`, and gets deterministic stand-ins for
    /// them (no files, environment or arguments, stdout discarded, frozen
    /// clocks, randomness seeded by plugin and operator name); `wasi:sockets`
    /// and `wasi:http` stay refused.
    pub fn load_with(&self, name: &str, bytes: &[u8], wasi: Wasi) -> Result<Plugin, Error> {
        let plugin = name.to_string();
        let limit = self.inner.limits.component_size;
        if bytes.len() > limit {
            return Err(Error::TooLarge {
                plugin,
                size: bytes.len(),
                limit,
            });
        }
        // The preamble: magic, then version 1 for core modules, or version
        // 0xd with layer 1 for components.
        let (is_component, is_core) = match bytes.get(..8) {
            Some([0, b'a', b's', b'm', v0, v1, l0, l1]) => (
                [*v0, *v1, *l0, *l1] == [0x0d, 0, 1, 0],
                [*v0, *v1, *l0, *l1] == [1, 0, 0, 0],
            ),
            _ => (false, false),
        };
        if !is_component {
            return Err(if is_core {
                Error::CoreModule { plugin }
            } else {
                Error::NotWasm { plugin }
            });
        }
        let component = Component::new(&self.inner.engine, bytes).map_err(|e| Error::Invalid {
            plugin: plugin.clone(),
            message: format!("{e:#}"),
        })?;
        let exports = check_world(&self.inner.engine, &component, &plugin, wasi)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Error::Invalid {
                plugin: plugin.clone(),
                message: format!("{e:#}"),
            })?;
        let pre = WorldPre::new(pre).map_err(|e| Error::Invalid {
            plugin: plugin.clone(),
            message: format!("{e:#}"),
        })?;
        Plugin::new(self.clone(), plugin, pre, exports, wasi)
    }

    /// A store for one call. Every epoch tick the store checks the call's
    /// deadline and the [`Cancel`] token in scope, and stops the call when
    /// either says so.
    pub(crate) fn store(&self, plugin: &str, operator: &str, wasi: Wasi) -> Store<HostState> {
        let limits = &self.inner.limits;
        let mut state = HostState::new(plugin, operator, limits.memory);
        if wasi == Wasi::Deterministic {
            state.wasi = Some(Box::new(WasiCtx::new(seed(plugin, operator))));
        }
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| s);
        let cancel = Cancel::current();
        // One tick of slack: the first tick may come at once.
        let deadline = Instant::now() + limits.deadline + TICK;
        store.epoch_deadline_callback(move |mut ctx| {
            let stop = if cancel.as_ref().is_some_and(Cancel::is_cancelled) {
                Stop::Cancelled
            } else if Instant::now() >= deadline {
                Stop::Deadline
            } else {
                return Ok(UpdateDeadline::Continue(1));
            };
            ctx.data_mut().stopped = Some(stop);
            Ok(UpdateDeadline::Interrupt)
        });
        store.set_epoch_deadline(1);
        store
    }
}

thread_local! {
    /// The token governing plugin calls made on this thread.
    static SCOPE: RefCell<Option<Cancel>> = const { RefCell::new(None) };
}

/// A token that stops plugin calls made under it.
///
/// Calls made on a thread inside [`Cancel::scope`] watch the token: once
/// [`Cancel::cancel`] is called (from any thread), a running call stops within
/// an epoch tick (a few milliseconds) with [`Error::Cancelled`](crate::Error),
/// and later calls under it stop as soon as they start. The instance is
/// thrown away as after any other stopped call.
///
/// ```
/// use dstream_wasm::Cancel;
///
/// let token = Cancel::new();
/// let stopper = token.clone();
/// let seen = token.scope(|| {
///     stopper.cancel();
///     // A plugin call made here would stop with Error::Cancelled.
///     Cancel::current().is_some_and(|t| t.is_cancelled())
/// });
/// assert!(seen);
/// assert!(Cancel::current().is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the calls running under this token, and every later one.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Runs `f` with this token watching every plugin call made on this
    /// thread inside it; the token in scope before is restored afterwards.
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Cancel>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let before = self.0.take();
                SCOPE.with(|s| *s.borrow_mut() = before);
            }
        }
        let before = SCOPE.with(|s| s.borrow_mut().replace(self.clone()));
        let _restore = Restore(before);
        f()
    }

    /// The token in scope on this thread, if any.
    pub fn current() -> Option<Cancel> {
        SCOPE.with(|s| s.borrow().clone())
    }
}

/// The seed of a call's WASI randomness: FNV-1a of plugin and operator
/// names, the same on every host.
fn seed(plugin: &str, operator: &str) -> u64 {
    dstream_core::fnv1a(format!("{plugin}/{operator}").as_bytes())
}

/// A counting semaphore over the pooled instance slots.
pub(crate) struct Slots {
    free: Mutex<u32>,
    freed: Condvar,
}

/// A held slot, given back on drop.
pub(crate) struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(n: u32) -> Self {
        Self {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free slot.
    pub(crate) fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// Export indices of the operator functions, looked up once at load.
#[derive(Clone, Debug)]
pub(crate) struct Exports {
    pub(crate) describe: ComponentExportIndex,
    pub(crate) map: ComponentExportIndex,
    pub(crate) flat_map: ComponentExportIndex,
    pub(crate) filter: ComponentExportIndex,
    pub(crate) reduce: ComponentExportIndex,
    pub(crate) inverse: ComponentExportIndex,
    pub(crate) update_state: ComponentExportIndex,
    pub(crate) transform: ComponentExportIndex,
    pub(crate) pipeline: ComponentExportIndex,
    pub(crate) feed_new: ComponentExportIndex,
    pub(crate) feed_push: ComponentExportIndex,
    pub(crate) feed_finish: ComponentExportIndex,
    /// `lend`, `lent-bounds` and `filter-lent`, when the plugin has them
    /// (contract 0.2.1).
    pub(crate) lending: Option<Lending>,
}

/// The exports through which a host lends input pages (contract 0.2.1).
#[derive(Clone, Debug)]
pub(crate) struct Lending {
    pub(crate) lend: ComponentExportIndex,
    pub(crate) lent_bounds: ComponentExportIndex,
    pub(crate) filter_lent: ComponentExportIndex,
}

/// `(major, minor, patch)` of `name@x.y.z`.
fn version_of(name: &str) -> Option<(u64, u64, u64)> {
    let v = name.rsplit_once('@')?.1;
    let mut parts = v.split(['.', '-', '+']).map(|p| p.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Semver compatibility as cargo sees it: same major, or for 0.x the same minor.
fn compatible(a: (u64, u64, u64), b: (u64, u64, u64)) -> bool {
    a.0 == b.0 && (a.0 != 0 || a.1 == b.1)
}

/// WASI interfaces a plugin under [`Wasi::Deterministic`] may import.
const WASI_STAND_INS: [&str; 5] = [
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:io/",
    "wasi:filesystem/",
];

fn check_world(
    engine: &Engine,
    component: &Component,
    plugin: &str,
    wasi: Wasi,
) -> Result<Exports, Error> {
    let ours = version_of(&format!("x@{WIT_VERSION}")).expect("our version parses");
    let ty = component.component_type();
    for (import, _) in ty.imports(engine) {
        let ok = import.starts_with("dstream:plugin/host@")
            && version_of(import).is_some_and(|v| compatible(v, ours));
        let stand_in =
            wasi == Wasi::Deterministic && WASI_STAND_INS.iter().any(|p| import.starts_with(p));
        if ok || stand_in {
            continue;
        }
        let reason = if import.starts_with("wasi:sockets/") || import.starts_with("wasi:http/") {
            "plugins get no network".to_string()
        } else if import.starts_with("wasi:") && wasi == Wasi::Refuse {
            "plugins get no WASI: files, sockets, clocks and randomness would break isolation and determinism; \
             to run it with deterministic stand-ins (no files, a frozen clock, seeded randomness), \
             allow it: `{ path = \"...\", wasi = \"deterministic\" }` in the job's [plugins], \
             or --wasi-deterministic for `dstream test-op` and `dstream plugin inspect`"
                .to_string()
        } else if import.starts_with("wasi:") {
            "the deterministic WASI stand-ins cover wasi:cli, wasi:clocks, wasi:random, wasi:io and wasi:filesystem only"
                .to_string()
        } else if import.starts_with("dstream:plugin/host@") {
            format!("this host provides dstream:plugin/host@{WIT_VERSION}")
        } else {
            "a plugin may import only dstream:plugin/host".to_string()
        };
        return Err(Error::ForbiddenImport {
            plugin: plugin.to_string(),
            import: import.to_string(),
            reason,
        });
    }
    let names: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let Some(iface) = names
        .iter()
        .find(|n| n.starts_with("dstream:plugin/operators@"))
    else {
        return Err(Error::WrongWorld {
            plugin: plugin.to_string(),
            exports: if names.is_empty() {
                "nothing".into()
            } else {
                names.join(", ")
            },
        });
    };
    match version_of(iface) {
        Some(v) if compatible(v, ours) => {}
        _ => {
            return Err(Error::IncompatibleVersion {
                plugin: plugin.to_string(),
                found: iface.rsplit_once('@').map_or("?", |x| x.1).to_string(),
                expected: WIT_VERSION.to_string(),
            });
        }
    }
    let (_, iface_idx) = component
        .get_export(None, iface.as_str())
        .expect("listed export exists");
    let func = |name: &str| {
        component
            .get_export_index(Some(&iface_idx), name)
            .ok_or_else(|| Error::WrongWorld {
                plugin: plugin.to_string(),
                exports: format!("{iface} without `{name}`"),
            })
    };
    Ok(Exports {
        describe: func("describe")?,
        map: func("map")?,
        flat_map: func("flat-map")?,
        filter: func("filter")?,
        reduce: func("reduce")?,
        inverse: func("inverse")?,
        update_state: func("update-state")?,
        transform: func("transform")?,
        pipeline: func("pipeline")?,
        feed_new: func("[constructor]feed")?,
        feed_push: func("[method]feed.push")?,
        feed_finish: func("[method]feed.finish")?,
        lending: (|| {
            let get = |name| component.get_export_index(Some(&iface_idx), name);
            Some(Lending {
                lend: get("lend")?,
                lent_bounds: get("lent-bounds")?,
                filter_lent: get("filter-lent")?,
            })
        })(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_compatibility() {
        let v = |s: &str| version_of(s).unwrap();
        assert!(compatible(v("a@0.1.0"), v("a@0.1.7")));
        assert!(!compatible(v("a@0.2.0"), v("a@0.1.0")));
        assert!(compatible(v("a@1.2.0"), v("a@1.0.0")));
        assert!(!compatible(v("a@2.0.0"), v("a@1.0.0")));
        assert_eq!(version_of("a"), None);
    }
}
