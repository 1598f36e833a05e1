#![doc = include_str!("../README.md")]

// Lets the attributes name this crate `::dstream_sdk` inside it and its doctests.
extern crate self as dstream_sdk;

mod batch;
mod codec;
mod group;
mod operator;
pub mod params;
pub mod text;

#[cfg(target_arch = "wasm32")]
mod guest;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use batch::{Batch, Records};
pub use codec::{Decode, DecodeError, Emit, Encode, Encoding, Postcard};
pub use operator::{
    Combine, Combiner, Feed, Fused, FusedError, Kind, OneInput, OpError, Operator, PIPELINE_CHUNK,
    Pieces, PipelineFeed, Plugin, Refused, RunFused, Runner, Select, Sink, StartFused, TwoInput,
};
pub use params::{ParamSpec, Params, RawParams};

/// The `__Stage` of an operator module written by hand rather than by an
/// attribute: it never runs fused with its neighbours (see [`plugin!`]).
#[derive(Debug)]
pub struct Unfused;

impl __private::Stage for Unfused {}

/// A map operator: one record in, one record out.
///
/// Takes the value (`fn(value: V)`) or the key and value (`fn(key: K, value: V)`),
/// plus optionally `&P` where `P:` [`Params`]; returns a value, a `(key, value)`
/// pair, or a `Result` of either whose error message reaches the host.
pub use dstream_macros::map;

/// A flat-map operator: one record in, any number out.
///
/// Arguments as for [`map`]; returns `Vec<R>`, `Option<R>`,
/// `impl Iterator<Item = R>` or `impl IntoIterator<Item = R>` (optionally in a
/// `Result`), where `R` is a value or a `(key, value)` pair.
pub use dstream_macros::flat_map;

/// A filter operator: keeps the records for which it returns `true`.
///
/// Arguments as for [`map`]; returns `bool` or `Result<bool, E>`.
///
/// Or over the whole partition: `fn(records: Records<'_>)` (plus
/// optionally `&P`) returning the indices of the records it keeps,
/// ascending, as `Vec<u32>`, `impl Iterator<Item = u32>` or
/// `impl IntoIterator<Item = u32>` (optionally in a `Result`). For filters
/// that search the partition's bytes in one pass, such as
/// [`text::values_containing`]. Whether a record is kept must still depend
/// on that record alone: the host may hand a partition over in pieces (of
/// 256 KiB), one call each, so this form is for speed, not for decisions
/// across records (a [`transform`] sees its whole input).
///
/// ```
/// use dstream_sdk as dstream;
/// use dstream::{Batch, Kind, Records, text::{Finder, values_containing}};
///
/// /// Keeps the lines that contain "ERROR".
/// #[dstream::filter]
/// fn errors(lines: Records<'_>) -> Vec<u32> {
///     values_containing(lines, &Finder::new(b"ERROR")).collect()
/// }
///
/// dstream::plugin!(errors);
/// # fn main() {
/// let lines = Batch::from_values(["ok", "ERROR: disk", "ERR"]);
/// let kept = PLUGIN.call(Kind::Filter, "errors", &[], &lines).unwrap();
/// assert_eq!(kept.len(), 1);
/// # }
/// ```
pub use dstream_macros::filter;

/// A reduce operator: `fn(a: V, b: V) -> V`, associative and commutative,
/// combining two values of one key (optionally with `&P` params, optionally
/// returning `Result`).
pub use dstream_macros::reduce;

/// An inverse operator for windowed reduce: `fn(current: V, leaving: V) -> V`
/// undoes a [`reduce`] (for a sum, a subtraction).
pub use dstream_macros::inverse;

/// An update-state operator:
/// `fn(key: K, values: Vec<V>, state: Option<S>) -> Option<S>` gives the new
/// state of a key from this interval's values and its old state; `None`
/// drops the key. Called for every key with state or new values.
pub use dstream_macros::update_state;

/// A transform operator: the whole partition in, a partition out.
/// `fn(records: Vec<(K, V)>) -> Vec<R>` (or any return form of [`flat_map`]).
pub use dstream_macros::transform;

/// Derives [`Params`] for a struct of named fields: `String`, numbers and
/// `bool` are required unless they are an `Option` or carry
/// `#[param(default = ...)]`; doc comments become descriptions.
pub use dstream_macros::Params;

/// Log levels of [`log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

/// Logs a message through the host, which tags it with tenant, job and
/// operator. Outside Wasm (native tests) it does nothing.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    guest::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// Declares this crate's plugin: a `pub static PLUGIN:` [`Plugin`] with the
/// listed operators, exported as the component's operators when built for
/// Wasm, and callable natively in tests.
///
/// Each name is a module holding `OPERATOR` and `__Stage`, as the attributes
/// make them; a pipeline of a map or flat-map then a reduce of two of them
/// runs as one loop ([`Plugin::fused`]). An operator module written by hand
/// declares `pub use dstream::Unfused as __Stage;` (it never runs fused).
///
/// ```
/// use dstream_sdk as dstream;
///
/// /// Keeps non-empty lines.
/// #[dstream::filter]
/// fn non_empty(line: &[u8]) -> bool {
///     !line.is_empty()
/// }
///
/// dstream::plugin!(non_empty);
/// # fn main() {
/// assert_eq!(PLUGIN.operators[0].name, "non_empty");
/// # }
/// ```
#[macro_export]
macro_rules! plugin {
    ($($op:ident),+ $(,)?) => {
        /// This crate's dstream plugin.
        pub static PLUGIN: $crate::Plugin = $crate::Plugin {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            operators: &[$(&$op::OPERATOR),+],
            fused: $crate::__fused_rows!([$($op),+] [$($op),+]),
        };
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::__export_guest!(PLUGIN);
        };
    };
}

/// The table of [`Plugin::fused`]: one row per operator of the first list.
#[doc(hidden)]
#[macro_export]
macro_rules! __fused_rows {
    ([$($first:ident),+] $all:tt) => {
        &[$($crate::__fused_row!($first $all)),+]
    };
}

/// One row of [`Plugin::fused`]: `$first` then each operator.
#[doc(hidden)]
#[macro_export]
macro_rules! __fused_row {
    ($first:ident [$($second:ident),+]) => {
        &[$($crate::__private::fused::<$first::__Stage, $second::__Stage>()),+]
    };
}
