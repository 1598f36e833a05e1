//! What a plugin instance sees of the host: a log function, and limits.

use wasmtime::ResourceLimiter;

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
