//! Grep: keep the lines that contain a pattern given by the job.

use dstream::text::Finder;
use dstream::{ParamSpec, Params, RawParams, Records};

/// The parameters of `grep`: the pattern, prepared once per call (a
/// partition, or a 256 KiB piece of one).
#[derive(Debug)]
pub struct Pattern {
    finder: Finder,
}

impl Params for Pattern {
    fn specs() -> Vec<ParamSpec> {
        vec![ParamSpec {
            name: "pattern",
            description: "the bytes a line must contain to be kept",
            required: true,
        }]
    }

    fn from_params(raw: &RawParams<'_>) -> Result<Self, String> {
        raw.check_known(&Self::specs())?;
        let pattern = raw.require("pattern")?;
        Ok(Self {
            finder: Finder::new(pattern.as_bytes()),
        })
    }
}

// The partition's bytes are searched in one pass rather than line by line
// (as grep tools do): over 100-byte lines, most of a search's time in the
// sandbox went into starting and ending it.
/// Keeps the lines that contain `pattern`.
#[dstream::filter]
pub fn grep<'a>(lines: Records<'a>, p: &'a Pattern) -> impl Iterator<Item = u32> + 'a {
    dstream::text::values_containing(lines, &p.finder)
}

dstream::plugin!(grep);
