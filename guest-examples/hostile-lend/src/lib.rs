//! A test fixture: a plugin whose `lend` lies about the region it sets
//! aside, one lie per operator (all filters that keep every record), plus
//! `probe` (checks its data segment) and `wander` (an honest region that
//! moves from call to call). The
//! host must refuse each lie with a typed error and run the next call
//! right. Its component export is written by hand (not by `plugin!`), so
//! that `lend` can be replaced; everything else is the SDK's.

/// `lend` gives a region half as long as asked.
#[dstream::filter]
pub fn short(_line: &[u8]) -> bool {
    true
}

/// `lend` gives a region of the right length that is not 64 KiB-aligned.
#[dstream::filter]
pub fn unaligned(_line: &[u8]) -> bool {
    true
}

/// `lend` gives a region past the end of its memory.
#[dstream::filter]
pub fn outside(_line: &[u8]) -> bool {
    true
}

/// `lend` gives a region over its own data segment ([`MAGIC`]).
#[dstream::filter]
pub fn image(_line: &[u8]) -> bool {
    true
}

/// A page of sevens in the plugin's data segment.
#[repr(C, align(65536))]
#[derive(Debug)]
pub struct Page(pub [u8; 65536]);

/// Sevens, which `image` lends over and `probe` checks.
pub static MAGIC: Page = Page([7; 65536]);

/// Keeps a line if the data segment still holds its sevens.
#[dstream::filter]
pub fn probe(_line: &[u8]) -> bool {
    // SAFETY: a read of a static.
    unsafe { core::ptr::read_volatile(&MAGIC.0[100]) == 7 }
}

/// How many Wasm pages `wander` grows before its region.
#[derive(Debug)]
pub struct Pages;

impl dstream::Params for Pages {
    fn specs() -> Vec<dstream::ParamSpec> {
        vec![dstream::ParamSpec {
            name: "pages",
            description: "Wasm pages grown before the region",
            required: true,
        }]
    }
    fn from_params(_raw: &dstream::RawParams<'_>) -> Result<Self, String> {
        Ok(Pages)
    }
}

/// An honest `lend`, at a place the parameter moves from call to call.
#[dstream::filter]
pub fn wander(_line: &[u8], _p: &Pages) -> bool {
    true
}

/// This crate's dstream plugin (as `plugin!` would make it).
pub static PLUGIN: dstream::Plugin = dstream::Plugin {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    operators: &[
        &short::OPERATOR,
        &unaligned::OPERATOR,
        &outside::OPERATOR,
        &image::OPERATOR,
        &probe::OPERATOR,
        &wander::OPERATOR,
    ],
    fused: dstream::__fused_rows!(
        [short, unaligned, outside, image, probe, wander]
        [short, unaligned, outside, image, probe, wander]
    ),
};

#[cfg(target_arch = "wasm32")]
mod export {
    use dstream::__private as p;
    use p::{WitBatch as B, WitError as E, WitParams as P, WitRegion, WitStage as S};

    use super::PLUGIN;

    struct Component;
    struct Feed(p::FeedState);

    impl p::GuestFeed for Feed {
        fn new(stages: Vec<S>) -> Self {
            Feed(p::feed_new(&PLUGIN, stages))
        }
        fn push(&self, input: B) -> Result<(), E> {
            p::feed_push(&self.0, input)
        }
        fn finish(&self) -> Result<B, E> {
            p::feed_finish(&self.0)
        }
    }

    /// An empty list at `addr` (only its address is read).
    fn mark(addr: usize) -> Vec<u8> {
        // SAFETY: capacity 0: nothing is read, written or freed through it.
        unsafe { Vec::from_raw_parts(addr as *mut u8, 0, 0) }
    }

    impl p::Guest for Component {
        type Feed = Feed;
        fn describe() -> p::WitInfo {
            p::describe(&PLUGIN)
        }
        fn map(op: String, params: P, input: B) -> Result<B, E> {
            p::one(&PLUGIN, p::Kind::Map, op, params, input)
        }
        fn flat_map(op: String, params: P, input: B) -> Result<B, E> {
            p::one(&PLUGIN, p::Kind::FlatMap, op, params, input)
        }
        fn filter(op: String, params: P, input: B) -> Result<Vec<u32>, E> {
            p::filter(&PLUGIN, op, params, input)
        }
        fn lend(bytes: u32, op: String, params: P) -> WitRegion {
            if op == "wander" {
                let pages = params.first().and_then(|(_, v)| v.parse().ok());
                core::arch::wasm32::memory_grow(0, pages.unwrap_or(0));
                return p::lend(bytes, op, params);
            }
            let lie = op.clone();
            // A true region with room to lie in.
            let real = p::lend(bytes + (64 << 10), op, params);
            let at = real.start.as_ptr() as usize;
            let len = bytes as usize;
            let (start, end) = match lie.as_str() {
                "short" => (at, at + len / 2),
                "unaligned" => (at + 4096, at + 4096 + len),
                "image" => {
                    let m = super::MAGIC.0.as_ptr() as usize;
                    (m, m + len)
                }
                _ => (0xffff_0000, 0xffff_0000 + len.min(0xffff)),
            };
            WitRegion {
                start: mark(start),
                end: mark(end),
            }
        }
        fn lent_bounds(bounds: Vec<u32>) {
            p::lent_bounds(bounds)
        }
        fn filter_lent(at: u32) -> Result<Vec<u32>, E> {
            p::filter_lent(&PLUGIN, at)
        }
        fn reduce(op: String, params: P, input: B) -> Result<B, E> {
            p::one(&PLUGIN, p::Kind::Reduce, op, params, input)
        }
        fn inverse(op: String, params: P, current: B, leaving: B) -> Result<B, E> {
            p::two(&PLUGIN, p::Kind::Inverse, op, params, current, leaving)
        }
        fn update_state(op: String, params: P, input: B, state: B) -> Result<B, E> {
            p::two(&PLUGIN, p::Kind::UpdateState, op, params, input, state)
        }
        fn transform(op: String, params: P, input: B) -> Result<B, E> {
            p::one(&PLUGIN, p::Kind::Transform, op, params, input)
        }
        fn pipeline(stages: Vec<S>, input: B) -> Result<B, E> {
            p::pipeline(&PLUGIN, stages, input)
        }
    }

    p::export_plugin_world!(Component with_types_in dstream::__private::bindings);
}
