//! The Wasm side: bindings to the WIT contract and the glue that the
//! [`plugin!`](crate::plugin) macro exports. Compiled for `wasm32` only.

use std::cell::RefCell;
use std::sync::Once;

use crate::batch::{Batch, Records};
use crate::codec::Encoding;
use crate::operator::{Kind, OpError, PipelineFeed, Plugin};
use crate::params::RawParams;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "export_plugin_world",
        default_bindings_module: "dstream_sdk::__private::bindings",
    });
}

use bindings::dstream::plugin::host;
use bindings::exports::dstream::plugin::operators as wit;

pub use bindings::export_plugin_world;
pub use wit::{Guest, GuestFeed};
/// Parameters as the WIT contract passes them.
pub type WitParams = wit::Params;
/// A pipeline stage as the WIT contract passes it.
pub type WitStage = wit::Stage;

/// The batch type of the WIT contract.
pub type WitBatch = wit::Batch;
/// The error type of the WIT contract.
pub type WitError = wit::OpError;
/// What `describe` returns.
pub type WitInfo = wit::PluginInfo;
/// What `lend` returns.
pub type WitRegion = wit::Region;

static PANIC_HOOK: Once = Once::new();

/// Sends panics to the host log before the module traps, so the host can say
/// why (a wasm32-unknown-unknown panic otherwise aborts silently).
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            host::log(host::Level::Error, &info.to_string());
        }))
    });
}

/// Logs through the host (routed to its `tracing`).
pub fn log(level: crate::Level, message: &str) {
    let level = match level {
        crate::Level::Trace => host::Level::Trace,
        crate::Level::Debug => host::Level::Debug,
        crate::Level::Info => host::Level::Info,
        crate::Level::Warn => host::Level::Warn,
        crate::Level::Error => host::Level::Error,
    };
    host::log(level, message)
}

fn records(b: &WitBatch) -> Records<'_> {
    Records::new(&b.data, &b.bounds)
}

fn lift(b: Batch) -> WitBatch {
    WitBatch {
        data: b.data,
        bounds: b.bounds,
    }
}

fn lower(e: OpError) -> WitError {
    WitError {
        message: e.message,
        record: e.record,
    }
}

fn kind(k: Kind) -> wit::Kind {
    match k {
        Kind::Map => wit::Kind::Map,
        Kind::FlatMap => wit::Kind::FlatMap,
        Kind::Filter => wit::Kind::Filter,
        Kind::Reduce => wit::Kind::Reduce,
        Kind::Inverse => wit::Kind::Inverse,
        Kind::UpdateState => wit::Kind::UpdateState,
        Kind::Transform => wit::Kind::Transform,
    }
}

fn encoding(e: Encoding) -> wit::Encoding {
    match e {
        Encoding::None => wit::Encoding::None,
        Encoding::Bytes => wit::Encoding::Bytes,
        Encoding::Utf8 => wit::Encoding::Utf8,
        Encoding::U8 => wit::Encoding::U8,
        Encoding::U16 => wit::Encoding::U16,
        Encoding::U32 => wit::Encoding::U32,
        Encoding::U64 => wit::Encoding::U64,
        Encoding::I8 => wit::Encoding::S8,
        Encoding::I16 => wit::Encoding::S16,
        Encoding::I32 => wit::Encoding::S32,
        Encoding::I64 => wit::Encoding::S64,
        Encoding::F32 => wit::Encoding::F32,
        Encoding::F64 => wit::Encoding::F64,
        Encoding::Boolean => wit::Encoding::Boolean,
        Encoding::Postcard => wit::Encoding::Postcard,
    }
}

/// `describe`.
pub fn describe(p: &Plugin) -> WitInfo {
    install_panic_hook();
    WitInfo {
        name: p.name.to_string(),
        version: p.version.to_string(),
        operators: p
            .operators
            .iter()
            .map(|o| wit::OperatorInfo {
                name: o.name.to_string(),
                kind: kind(o.kind),
                description: o.description.to_string(),
                params: (o.params)()
                    .into_iter()
                    .map(|s| wit::ParamInfo {
                        name: s.name.to_string(),
                        description: s.description.to_string(),
                        required: s.required,
                    })
                    .collect(),
                input_key: encoding(o.input.0),
                input_value: encoding(o.input.1),
                output_key: encoding(o.output.0),
                output_value: encoding(o.output.1),
            })
            .collect(),
    }
}

/// `map`, `flat-map`, `reduce`, `transform`.
pub fn one(
    p: &Plugin,
    k: Kind,
    op: String,
    params: WitParams,
    input: WitBatch,
) -> Result<WitBatch, WitError> {
    install_panic_hook();
    p.run(k, &op, &RawParams::new(&params), records(&input))
        .map(lift)
        .map_err(lower)
}

/// `filter`.
pub fn filter(
    p: &Plugin,
    op: String,
    params: WitParams,
    input: WitBatch,
) -> Result<Vec<u32>, WitError> {
    install_panic_hook();
    p.select(&op, &RawParams::new(&params), records(&input))
        .map_err(lower)
}

/// Alignment and granule of a region set aside by `lend` (a Wasm page).
const LEND_ALIGN: usize = 64 << 10;

/// What `lend` set aside and took, for the `filter-lent` calls after it.
struct Lending {
    /// The region: address and length. Never freed: the instance goes
    /// after the call it serves.
    region: (usize, usize),
    op: String,
    params: WitParams,
    /// The bounds of the next lent records (from `lent-bounds`).
    bounds: Vec<u32>,
}

thread_local! {
    static LENDING: RefCell<Option<Lending>> = const { RefCell::new(None) };
}

/// `lend`: sets aside (or reuses) a region of at least `bytes` bytes, keeps
/// the operator and parameters, and says where the region is. The region
/// is grown for it (`memory.grow`), outside the allocator's heap: 64
/// KiB-aligned, zero, and never written, so the host finds no page of it
/// in use (zeroing it through the allocator would fault every page in,
/// only for the host to replace them).
pub fn lend(bytes: u32, op: String, params: WitParams) -> WitRegion {
    install_panic_hook();
    let want = (bytes as usize)
        .next_multiple_of(LEND_ALIGN)
        .max(LEND_ALIGN);
    LENDING.with_borrow_mut(|lending| {
        let region = match lending.as_ref().map(|l| l.region) {
            Some((at, len)) if len >= want => (at, len),
            _ => {
                let prev = core::arch::wasm32::memory_grow(0, want / LEND_ALIGN);
                if prev == usize::MAX {
                    let layout = std::alloc::Layout::from_size_align(want, LEND_ALIGN)
                        .expect("a region within the 32-bit address space");
                    std::alloc::handle_alloc_error(layout);
                }
                (prev * LEND_ALIGN, want)
            }
        };
        *lending = Some(Lending {
            region,
            op,
            params,
            bounds: Vec::new(),
        });
        // Two empty lists marking the region's ends: wit-bindgen lowers a
        // Vec as its pointer and length, and frees nothing of capacity 0.
        // SAFETY: capacity 0 (nothing is ever read, written or freed
        // through these), pointers non-null and aligned for u8.
        let mark = |p: usize| unsafe { Vec::from_raw_parts(p as *mut u8, 0, 0) };
        WitRegion {
            start: mark(region.0),
            end: mark(region.0 + region.1),
        }
    })
}

/// `lent-bounds`: the bounds of the next lent records.
pub fn lent_bounds(bounds: Vec<u32>) {
    LENDING.with_borrow_mut(|lending| {
        if let Some(l) = lending.as_mut() {
            l.bounds = bounds;
        }
    });
}

/// `filter-lent`: `filter` over the records lent into the region from
/// offset `at`.
pub fn filter_lent(p: &Plugin, at: u32) -> Result<Vec<u32>, WitError> {
    install_panic_hook();
    LENDING.with_borrow(|lending| {
        let Some(l) = lending.as_ref() else {
            return Err(lower(OpError::new("`filter-lent` before `lend`")));
        };
        let (base, len) = l.region;
        let start = at as usize;
        let end = start + l.bounds.last().copied().unwrap_or(0) as usize;
        if end > len {
            return Err(lower(OpError::new(format!(
                "lent input {start}..{end} is not inside the region set aside by `lend` ({len} bytes)"
            ))));
        }
        // SAFETY: `base..base + len` is the memory grown by `lend`, owned
        // by nothing else, into which the host has lent the input for this
        // call; it is only read.
        let data = unsafe { std::slice::from_raw_parts((base + start) as *const u8, end - start) };
        p.select(&l.op, &RawParams::new(&l.params), Records::new(data, &l.bounds))
            .map_err(lower)
    })
}

/// `inverse`, `update-state`.
pub fn two(
    p: &Plugin,
    k: Kind,
    op: String,
    params: WitParams,
    first: WitBatch,
    second: WitBatch,
) -> Result<WitBatch, WitError> {
    install_panic_hook();
    p.run2(
        k,
        &op,
        &RawParams::new(&params),
        records(&first),
        records(&second),
    )
    .map(lift)
    .map_err(lower)
}

/// `pipeline`.
pub fn pipeline(p: &Plugin, stages: Vec<WitStage>, input: WitBatch) -> Result<WitBatch, WitError> {
    install_panic_hook();
    let stages: Vec<_> = stages.into_iter().map(|s| (s.op, s.params)).collect();
    p.pipeline(&stages, records(&input))
        .map(lift)
        .map_err(lower)
}

/// The state of a `feed` resource: the pipeline being fed, or why it could
/// not start (reported by the next call), or nothing once finished.
#[derive(Debug)]
pub struct FeedState(RefCell<Option<Result<PipelineFeed<'static>, OpError>>>);

/// `[constructor]feed`.
pub fn feed_new(p: &'static Plugin, stages: Vec<WitStage>) -> FeedState {
    install_panic_hook();
    let stages: Vec<_> = stages.into_iter().map(|s| (s.op, s.params)).collect();
    FeedState(RefCell::new(Some(p.feed(&stages))))
}

fn finished() -> WitError {
    lower(OpError::new("this feed was finished already"))
}

/// `[method]feed.push`.
pub fn feed_push(f: &FeedState, input: WitBatch) -> Result<(), WitError> {
    match f.0.borrow_mut().as_mut() {
        Some(Ok(feed)) => feed.push(records(&input)).map_err(lower),
        Some(Err(e)) => Err(lower(e.clone())),
        None => Err(finished()),
    }
}

/// `[method]feed.finish`.
pub fn feed_finish(f: &FeedState) -> Result<WitBatch, WitError> {
    match f.0.borrow_mut().take() {
        Some(Ok(feed)) => feed.finish().map(lift).map_err(lower),
        Some(Err(e)) => Err(lower(e)),
        None => Err(finished()),
    }
}

/// Exports `$plugin` (a `static` [`Plugin`]) as the component's `operators`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_guest {
    ($plugin:ident) => {
        struct __DstreamComponent;
        struct __DstreamFeed($crate::__private::FeedState);
        impl $crate::__private::GuestFeed for __DstreamFeed {
            fn new(stages: Vec<__S>) -> Self {
                __DstreamFeed($crate::__private::feed_new(&$plugin, stages))
            }
            fn push(&self, input: __B) -> Result<(), __E> {
                $crate::__private::feed_push(&self.0, input)
            }
            fn finish(&self) -> Result<__B, __E> {
                $crate::__private::feed_finish(&self.0)
            }
        }
        use $crate::__private::{WitParams as __P, WitStage as __S, WitBatch as __B, WitError as __E};
        use $crate::__private::Kind as __K;
        impl $crate::__private::Guest for __DstreamComponent {
            type Feed = __DstreamFeed;
            fn describe() -> $crate::__private::WitInfo {
                $crate::__private::describe(&$plugin)
            }
            fn map(op: String, params: __P, input: __B) -> Result<__B, __E> {
                $crate::__private::one(&$plugin, __K::Map, op, params, input)
            }
            fn flat_map(op: String, params: __P, input: __B) -> Result<__B, __E> {
                $crate::__private::one(&$plugin, __K::FlatMap, op, params, input)
            }
            fn filter(op: String, params: __P, input: __B) -> Result<Vec<u32>, __E> {
                $crate::__private::filter(&$plugin, op, params, input)
            }
            fn lend(bytes: u32, op: String, params: __P) -> $crate::__private::WitRegion {
                $crate::__private::lend(bytes, op, params)
            }
            fn lent_bounds(bounds: Vec<u32>) {
                $crate::__private::lent_bounds(bounds)
            }
            fn filter_lent(at: u32) -> Result<Vec<u32>, __E> {
                $crate::__private::filter_lent(&$plugin, at)
            }
            fn reduce(op: String, params: __P, input: __B) -> Result<__B, __E> {
                $crate::__private::one(&$plugin, __K::Reduce, op, params, input)
            }
            fn inverse(op: String, params: __P, current: __B, leaving: __B) -> Result<__B, __E> {
                $crate::__private::two(&$plugin, __K::Inverse, op, params, current, leaving)
            }
            fn update_state(op: String, params: __P, input: __B, state: __B) -> Result<__B, __E> {
                $crate::__private::two(&$plugin, __K::UpdateState, op, params, input, state)
            }
            fn transform(op: String, params: __P, input: __B) -> Result<__B, __E> {
                $crate::__private::one(&$plugin, __K::Transform, op, params, input)
            }
            fn pipeline(stages: Vec<__S>, input: __B) -> Result<__B, __E> {
                $crate::__private::pipeline(&$plugin, stages, input)
            }
        }
        $crate::__private::export_plugin_world!(__DstreamComponent with_types_in $crate::__private::bindings);
    };
}
