//! What a plugin instance sees of the host: a log function, and limits.

use std::convert::Infallible;

use dstream_core::generate::SplitMix64;
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
});

pub(crate) use dstream::plugin::host::Level;
pub(crate) use exports::dstream::plugin::operators as wit;

/// At most this many log messages per call are forwarded; the rest are
/// counted and dropped, so a chatty plugin cannot flood the host's logs.
pub(crate) const MAX_LOGS_PER_CALL: u32 = 1000;
/// The `tracing` target of what plugins log.
pub const GUEST_LOG_TARGET: &str = "dstream::guest";
/// Longer messages are cut to this many bytes.
pub(crate) const MAX_LOG_BYTES: usize = 4096;

/// The state of one instance (one call).
pub(crate) struct HostState {
    pub(crate) plugin: String,
    pub(crate) operator: String,
    pub(crate) memory_limit: usize,
    pub(crate) table_limit: usize,
    /// Set when the guest asked for more memory than allowed.
    pub(crate) memory_wanted: Option<usize>,
    pub(crate) logs: u32,
    pub(crate) dropped_logs: u32,
    /// The last error-level message (a panic message, typically).
    pub(crate) last_error: Option<String>,
    /// Set when the epoch callback stopped the call, and why.
    pub(crate) stopped: Option<Stop>,
    /// The deterministic WASI stand-ins, for a plugin allowed them.
    pub(crate) wasi: Option<Box<Wasi>>,
}

/// What a plugin under the deterministic WASI policy sees: a context
/// without files, environment, arguments or network; stdio empty or
/// discarded; clocks that do not move; seeded randomness.
pub(crate) struct Wasi {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl Wasi {
    /// The context of one call; `seed` seeds its randomness.
    pub(crate) fn new(seed: u64) -> Self {
        let ctx = WasiCtx::builder()
            .wall_clock(Frozen)
            .monotonic_clock(Frozen)
            .secure_random(SplitMix(SplitMix64::new(seed)))
            .insecure_random(SplitMix(SplitMix64::new(seed ^ 0x5bd1_e995)))
            .insecure_random_seed(u128::from(seed) << 64 | u128::from(!seed))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            ctx,
            table: ResourceTable::new(),
        }
    }
}

/// A clock frozen at its origin (wall: 1970-01-01T00:00:00Z).
struct Frozen;

impl HostWallClock for Frozen {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for Frozen {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The core's SplitMix64 as WASI's generator: the same bytes on every host.
struct SplitMix(SplitMix64);

impl rand_core::TryRng for SplitMix {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.0.next_u64() >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let v = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

/// The monotonic clock's `subscribe-duration` and `subscribe-instant`
/// replaced by pollables that are ready at once: under a frozen clock a
/// sleep returns at once, and a host thread never blocks in a plugin's
/// sleep (where neither the deadline nor a cancel token could stop it: they
/// are checked only while Wasm code runs). Every other WASI pollable of the
/// stand-ins (empty stdin, discarded stdout) is ready at once too.
pub(crate) fn frozen_sleep(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    clock.func_wrap(
        "subscribe-duration",
        |mut cx: StoreContextMut<'_, HostState>, (_,): (u64,)| ready(cx.data_mut()),
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut cx: StoreContextMut<'_, HostState>, (_,): (u64,)| ready(cx.data_mut()),
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable that is always ready.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

fn ready(state: &mut HostState) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let table = state.ctx().table;
    let r = table.push(Ready)?;
    Ok((subscribe(table, r)?,))
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let w = self
            .wasi
            .as_mut()
            .expect("only plugins allowed WASI import it, and their calls get a context");
        WasiCtxView {
            ctx: &mut w.ctx,
            table: &mut w.table,
        }
    }
}

/// Why the host stopped a running call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    Deadline,
    Cancelled,
}

impl HostState {
    pub(crate) fn new(plugin: &str, operator: &str, memory_limit: usize) -> Self {
        Self {
            plugin: plugin.to_string(),
            operator: operator.to_string(),
            memory_limit,
            table_limit: 100_000,
            memory_wanted: None,
            logs: 0,
            dropped_logs: 0,
            last_error: None,
            stopped: None,
            wasi: None,
        }
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_LOG_BYTES {
        let mut end = MAX_LOG_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl dstream::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let message = cut(message);
        if level == Level::Error {
            self.last_error = Some(message.clone());
        }
        if self.logs >= MAX_LOGS_PER_CALL {
            self.dropped_logs += 1;
            return;
        }
        self.logs += 1;
        let (plugin, operator) = (&self.plugin, &self.operator);
        match level {
            Level::Trace => {
                tracing::trace!(target: GUEST_LOG_TARGET, plugin, operator, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: GUEST_LOG_TARGET, plugin, operator, "{message}")
            }
            Level::Info => tracing::info!(target: GUEST_LOG_TARGET, plugin, operator, "{message}"),
            Level::Warn => tracing::warn!(target: GUEST_LOG_TARGET, plugin, operator, "{message}"),
            Level::Error => {
                tracing::error!(target: GUEST_LOG_TARGET, plugin, operator, "{message}")
            }
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_wanted = Some(desired);
            // Trap at once rather than let the guest see a failed grow: its
            // allocator would abort anyway, with a less useful message.
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes exceeded",
                self.memory_limit
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_limit)
    }
}
