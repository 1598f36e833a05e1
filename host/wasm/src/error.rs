use std::time::Duration;

/// Everything that can go wrong loading or running a plugin.
///
/// Errors about a call name the plugin and the operator; none of them leaves
/// the [`Runtime`](crate::Runtime) or the [`Plugin`](crate::Plugin) unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine could not be set up.
    #[error("cannot set up the Wasm engine: {0}")]
    Engine(String),

    /// The host could not get memory of its own for a partition (a
    /// [`PagedBatch`](crate::PagedBatch)), or a kernel call on it failed.
    #[error("cannot set up pages for a partition: {0}")]
    Pages(String),

    /// The file is larger than the limit.
    #[error("plugin `{plugin}` is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Plugin name.
        plugin: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// The bytes are not WebAssembly at all.
    #[error("plugin `{plugin}` is not a WebAssembly binary")]
    NotWasm {
        /// Plugin name.
        plugin: String,
    },

    /// A core module was given where a component is needed.
    #[error(
        "plugin `{plugin}` is a core WebAssembly module, not a component: build it with `dstream plugin build`"
    )]
    CoreModule {
        /// Plugin name.
        plugin: String,
    },

    /// wasmtime rejected the component.
    #[error("plugin `{plugin}` is not a valid component: {message}")]
    Invalid {
        /// Plugin name.
        plugin: String,
        /// Why.
        message: String,
    },

    /// The component imports something the host does not give.
    #[error("plugin `{plugin}` imports `{import}`, which dstream does not allow: {reason}")]
    ForbiddenImport {
        /// Plugin name.
        plugin: String,
        /// The import.
        import: String,
        /// Why not.
        reason: String,
    },

    /// The component does not export the operator interface.
    #[error(
        "plugin `{plugin}` does not export dstream:plugin/operators (it exports: {exports}); is it built with dstream-sdk?"
    )]
    WrongWorld {
        /// Plugin name.
        plugin: String,
        /// What it exports instead.
        exports: String,
    },

    /// The component was built for another version of the contract.
    #[error(
        "plugin `{plugin}` was built for dstream:plugin@{found}, but this host speaks @{expected}"
    )]
    IncompatibleVersion {
        /// Plugin name.
        plugin: String,
        /// The version it exports.
        found: String,
        /// The version we speak.
        expected: String,
    },

    /// `describe` returned something unusable.
    #[error("plugin `{plugin}` describes itself wrongly: {message}")]
    BadDescription {
        /// Plugin name.
        plugin: String,
        /// What is wrong.
        message: String,
    },

    /// The plugin has no operator of that name.
    #[error("plugin `{plugin}` has no operator `{operator}` (it has: {available})")]
    UnknownOperator {
        /// Plugin name.
        plugin: String,
        /// The name asked for.
        operator: String,
        /// Its operators.
        available: String,
    },

    /// The operator is of another kind than the call needs.
    #[error("operator `{plugin}/{operator}` is a {actual}, not a {expected}")]
    WrongKind {
        /// Plugin name.
        plugin: String,
        /// Operator name.
        operator: String,
        /// Its kind.
        actual: dstream_core::OperatorKind,
        /// The kind the call needs.
        expected: String,
    },

    /// A required parameter is missing (checked before any Wasm runs).
    #[error("operator `{plugin}/{operator}` needs parameter `{param}`")]
    MissingParam {
        /// Plugin name.
        plugin: String,
        /// Operator name.
        operator: String,
        /// The parameter.
        param: String,
    },

    /// The call ran past its deadline and was stopped.
    #[error("operator `{plugin}/{operator}` ran past its deadline of {limit:?} and was stopped")]
    Deadline {
        /// Plugin name.
        plugin: String,
        /// Operator name.
        operator: String,
        /// The deadline.
        limit: Duration,
    },

    /// The call was stopped by its [`Cancel`](crate::Cancel) token (another
    /// copy of the task won, or the job stopped).
    #[error("operator `{plugin}/{operator}` was cancelled")]
    Cancelled {
        /// Plugin name.
        plugin: String,
        /// Operator name.
        operator: String,
    },

    /// The call tried to use more memory than allowed and was stopped.
    #[error(
        "operator `{plugin}/{operator}` tried to grow its memory to {wanted} bytes, over the limit of {limit} bytes, and was stopped"
    )]
    MemoryLimit {
        /// Plugin name.
        plugin: String,
        /// Operator name.
        operator: String,
        /// The size it asked for.
        wanted: usize,
        /// The limit.
        limit: usize,
    },

    /// The guest trapped (a Rust panic traps too).
    #[error("operator `{plugin}/{operator}` trapped: {trap}{}", guest_message.as_deref().map(|m| format!(" (the plugin said: {m})")).unwrap_or_default())]
    Trap {
        /// Plugin name.
        plugin: String,
        /// Operator name.
        operator: String,
        /// The trap.
        trap: String,
        /// The last error the guest logged before trapping (a panic message).
        guest_message: Option<String>,
    },

    /// The operator returned an error.
    #[error("operator `{plugin}/{operator}` failed{}: {message}", record.map(|r| format!(" at record {r}")).unwrap_or_default())]
    Operator {
        /// Plugin name.
        plugin: String,
        /// Operator name.
        operator: String,
        /// The input record it failed on, if known.
        record: Option<u32>,
        /// Its message.
        message: String,
    },

    /// The operator returned a malformed batch.
    #[error("operator `{plugin}/{operator}` returned a malformed result: {message}")]
    BadOutput {
        /// Plugin name.
        plugin: String,
        /// Operator name.
        operator: String,
        /// What is wrong.
        message: String,
    },

    /// A record-wise call's output, gathered piece by piece, grew past the
    /// memory limit (what one call's output could reach inside the guest).
    #[error(
        "operator `{plugin}/{operator}` produced over {limit} bytes of output for one partition (the memory limit) and was stopped"
    )]
    OutputLimit {
        /// Plugin name.
        plugin: String,
        /// Operator name.
        operator: String,
        /// The limit.
        limit: usize,
    },

    /// A batch too large for a 32-bit guest.
    #[error("a batch of {bytes} bytes cannot be passed to a 32-bit guest")]
    BatchTooLarge {
        /// Its size.
        bytes: usize,
    },

    /// The host could not create an instance (for example, every pooled
    /// instance slot is in use).
    #[error("cannot instantiate plugin `{plugin}`: {message}")]
    Instantiate {
        /// Plugin name.
        plugin: String,
        /// Why.
        message: String,
    },
}
