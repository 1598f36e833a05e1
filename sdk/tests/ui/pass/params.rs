// Params: derived (required, optional, defaults of every kind, doc comments,
// no fields) and implemented by hand.
use dstream::{Batch, Kind, ParamSpec, Params, RawParams};
use dstream_sdk as dstream;

/// Every kind of field.
#[derive(Debug, dstream::Params)]
pub struct All {
    /// Required text.
    pub name: String,
    /// Optional number.
    pub limit: Option<u32>,
    /// A number with a default.
    #[param(default = 3)]
    pub k: usize,
    /// A string with a default.
    #[param(default = "x")]
    pub mark: String,
    /// A flag with a default.
    #[param(default = false)]
    pub strict: bool,
    /// A computed default.
    #[param(default = 1.0 / 3.0)]
    pub ratio: f64,
}

/// No parameters at all.
#[derive(dstream::Params)]
struct Nothing {}

/// Prepared once per partition.
struct Needle(Vec<u8>);

impl Params for Needle {
    fn specs() -> Vec<ParamSpec> {
        vec![ParamSpec {
            name: "needle",
            description: "What to find.",
            required: true,
        }]
    }
    fn from_params(raw: &RawParams<'_>) -> Result<Self, String> {
        raw.check_known(&Self::specs())?;
        Ok(Needle(raw.require("needle")?.as_bytes().to_vec()))
    }
}

/// Lines holding the needle.
#[dstream::filter]
fn find(line: &[u8], p: &Needle) -> bool {
    line.windows(p.0.len()).any(|w| w == p.0)
}

/// Uses every parameter.
#[dstream::map]
fn all(line: &str, p: &All) -> String {
    format!(
        "{line}{}{}{:?}{}{}{:.2}",
        p.name, p.mark, p.limit, p.k, p.strict, p.ratio
    )
}

/// Takes no parameters.
#[dstream::map]
fn none(line: &str, _: &Nothing) -> u64 {
    line.len() as u64
}

dstream::plugin!(find, all, none);

fn main() {
    let specs = All::specs();
    assert_eq!(
        specs[0],
        ParamSpec {
            name: "name",
            description: "Required text.",
            required: true
        }
    );
    assert!(!specs[1].required && !specs[2].required);
    let lines = Batch::from_values(["a needle", "hay"]);
    assert_eq!(
        PLUGIN
            .call(Kind::Filter, "find", &[("needle", "needle")], &lines)
            .unwrap()
            .len(),
        1
    );
    let out = PLUGIN
        .call(Kind::Map, "all", &[("name", "n"), ("limit", "4")], &lines)
        .unwrap();
    assert_eq!(
        out.decode::<(), &str>().unwrap()[1].1,
        "haynxSome(4)3false0.33"
    );
    let e = PLUGIN
        .call(Kind::Map, "none", &[("x", "1")], &lines)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown parameter `x`: this operator takes none"
    );
}
