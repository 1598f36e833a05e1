//! Grep: keep the lines that contain a pattern given by the job.

use dstream::{ParamSpec, Params, RawParams};
use memchr::memmem::Finder;

/// The parameters of `grep`: the pattern, prepared once per call (a
/// partition, or a 256 KiB piece of one).
#[derive(Debug)]
pub struct Pattern {
    finder: Finder<'static>,
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
            finder: Finder::new(pattern.as_bytes()).into_owned(),
        })
    }
}

/// Keeps the lines that contain `pattern`.
#[dstream::filter]
pub fn grep(line: &[u8], p: &Pattern) -> bool {
    p.finder.find(line).is_some()
}

dstream::plugin!(grep);
