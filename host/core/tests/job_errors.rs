//! Every kind of bad job file gives one clear error naming the line and the
//! field.

use std::collections::BTreeMap;

use dstream_core::job::{JobError, JobFile, Op};
use dstream_core::{Encoding, OperatorInfo, OperatorKind, ParamInfo, PluginInfo};

fn op(
    name: &str,
    kind: OperatorKind,
    input: Encoding,
    output: (Encoding, Encoding),
) -> OperatorInfo {
    OperatorInfo::new(name, kind, (Encoding::None, input), output)
}

fn plugins() -> BTreeMap<String, PluginInfo> {
    let u = Encoding::Utf8;
    let n = Encoding::U64;
    let mut grep = op("grep", OperatorKind::Filter, u, (Encoding::None, u));
    grep.params.push(ParamInfo {
        name: "pattern".into(),
        description: "text to find".into(),
        required: true,
    });
    BTreeMap::from([
        (
            "pv".to_string(),
            PluginInfo {
                name: "pageviews".into(),
                version: "0.1.0".into(),
                operators: vec![
                    op("url_one", OperatorKind::Map, u, (u, n)),
                    op("merge", OperatorKind::Reduce, n, (u, n)),
                    op("unmerge", OperatorKind::Inverse, n, (u, n)),
                ],
            },
        ),
        (
            "g".to_string(),
            PluginInfo {
                name: "grep".into(),
                version: "0.1.0".into(),
                operators: vec![grep],
            },
        ),
    ])
}

const HEAD: &str = r#"name = "t"
interval = "1s"
[plugins]
pv = "guest-examples/pageviews"
g = "guest-examples/grep"
[sources.views]
kind = "generator"
rate = 100
"#;

/// Parses and resolves `HEAD + body`; the error.
fn error(body: &str) -> JobError {
    let text = format!("{HEAD}{body}");
    match JobFile::parse(&text).and_then(|f| f.resolve(&plugins())) {
        Ok(job) => panic!("accepted:\n{text}\n{job:#?}"),
        Err(e) => e,
    }
}

/// Asserts the error's line, field and that its message holds `needle`.
#[track_caller]
fn check(body: &str, line: usize, field: &str, needle: &str) {
    let e = error(body);
    let head_lines = HEAD.lines().count();
    assert_eq!(
        (e.line, e.field.as_str()),
        (head_lines + line, field),
        "wrong place for: {e}"
    );
    assert!(
        e.message.contains(needle),
        "{e}\n does not contain {needle:?}"
    );
}

#[test]
fn a_good_job_resolves() {
    let text = format!(
        "{HEAD}{}",
        r#"[streams.ones]
from = "views"
map = "pv/url_one"
[streams.counts]
from = "ones"
running_reduce = "sum"
[streams.windowed]
from = "ones"
reduce_by_key_and_window = { reduce = "pv/merge", inverse = "pv/unmerge", length = "3s", slide = "1s" }
[sinks.out]
from = "counts"
kind = "stdout"
"#
    );
    let job = JobFile::parse(&text).unwrap().resolve(&plugins()).unwrap();
    let counts = job.node(job.node_by_name("counts").unwrap());
    assert!(matches!(counts.op(), Some(Op::RunningReduce(_))));
    assert_eq!(job.checkpoint_every, 10);
    assert_eq!(job.partitions, 4);
}

#[test]
fn unknown_operator() {
    check(
        "[streams.ones]\nfrom = \"views\"\nmap = \"pv/url_onw\"\n",
        3,
        "streams.ones.map",
        "unknown operator `url_onw`: plugin `pv` has url_one (map), merge (reduce), unmerge (inverse)",
    );
}

#[test]
fn missing_plugin() {
    check(
        "[streams.ones]\nfrom = \"views\"\nmap = \"pages/url_one\"\n",
        3,
        "streams.ones.map",
        "missing plugin `pages`: the job's [plugins] table has g, pv",
    );
}

#[test]
fn missing_operator_on_a_stream() {
    check(
        "[streams.ones]\nfrom = \"views\"\n",
        1,
        "streams.ones",
        "stream `ones` has no operator: give one of map, flat_map",
    );
}

#[test]
fn wrong_kind_of_operator() {
    check(
        "[streams.ones]\nfrom = \"views\"\nreduce_by_key = \"pv/url_one\"\n",
        3,
        "streams.ones.reduce_by_key",
        "`pv/url_one` is a map operator, but `reduce_by_key` needs a reduce",
    );
}

#[test]
fn a_window_that_is_not_a_multiple_of_the_interval() {
    check(
        "[streams.ones]\nfrom = \"views\"\nmap = \"pv/url_one\"\n[streams.w]\nfrom = \"ones\"\nreduce_by_key_and_window = { reduce = \"sum\", length = \"2500ms\" }\n",
        6,
        "streams.w.reduce_by_key_and_window.length",
        "\"2500ms\" is not a multiple of the batch interval (1s)",
    );
}

#[test]
fn a_cycle() {
    check(
        "[streams.a]\nfrom = \"b\"\nmap = \"pv/url_one\"\n[streams.b]\nfrom = \"a\"\nfilter = \"g/grep\"\n",
        2,
        "streams.a.from",
        "the streams form a cycle: a -> b -> a",
    );
}

#[test]
fn an_unknown_source_kind() {
    let text = "name = \"t\"\ninterval = \"1s\"\n[sources.s]\nkind = \"kafka\"\n";
    let e = JobFile::parse(text).unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (4, "sources.s.kind"));
    assert!(
        e.message
            .contains("unknown source kind `kafka`: use one of tcp, files, http, generator"),
        "{e}"
    );
}

#[test]
fn a_stream_reading_from_nothing() {
    check(
        "[streams.ones]\nmap = \"pv/url_one\"\n",
        1,
        "streams.ones",
        "stream `ones` reads from nothing: add `from = ",
    );
    check(
        "[streams.ones]\nfrom = \"veiws\"\nmap = \"pv/url_one\"\n",
        2,
        "streams.ones.from",
        "`veiws` is neither a source nor a stream (sources: views; streams: ones)",
    );
}

#[test]
fn two_operators_on_one_stream() {
    check(
        "[streams.ones]\nfrom = \"views\"\nmap = \"pv/url_one\"\nfilter = \"g/grep\"\n",
        4,
        "streams.ones.filter",
        "a stream has one operator, and `ones` already has `map`",
    );
}

#[test]
fn parameters_checked_against_the_plugin() {
    check(
        "[streams.hits]\nfrom = \"views\"\nfilter = \"g/grep\"\n",
        1,
        "streams.hits.params",
        "`g/grep` needs the parameter `pattern` (text to find)",
    );
    check(
        "[streams.hits]\nfrom = \"views\"\nfilter = \"g/grep\"\nparams = { pattern = \"x\", patern = \"y\" }\n",
        4,
        "streams.hits.params.patern",
        "`g/grep` takes no parameter `patern` (it takes pattern)",
    );
}

#[test]
fn built_in_reducers_need_integers_and_keys() {
    check(
        "[streams.c]\nfrom = \"views\"\nreduce_by_key = \"sum\"\n",
        3,
        "streams.c.reduce_by_key",
        "the built-in `sum` works on integer values, but `views` gives utf8 values",
    );
    check(
        "[streams.c]\nfrom = \"views\"\nrunning_reduce = \"count\"\n",
        3,
        "streams.c.running_reduce",
        "`running_reduce` groups records by key, but `views` has no keys",
    );
    check(
        "[streams.ones]\nfrom = \"views\"\nmap = \"pv/url_one\"\n[streams.c]\nfrom = \"ones\"\nreduce_by_key_and_window = { reduce = \"max\", inverse = \"subtract\", length = \"2s\" }\n",
        6,
        "streams.c.reduce_by_key_and_window.inverse",
        "the built-in `subtract` undoes only the built-in `sum` and `count`",
    );
}

#[test]
fn syntax_and_field_errors_from_toml_keep_their_place() {
    // An unknown field.
    check(
        "[streams.ones]\nfrom = \"views\"\nmapp = \"pv/url_one\"\n",
        3,
        "streams.ones.mapp",
        "unknown field `mapp`",
    );
    // Broken TOML.
    let e = JobFile::parse("name = \"t\"\ninterval = 1s\n").unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (2, "interval"), "{e}");
    // A bad duration.
    let e = JobFile::parse("name = \"t\"\ninterval = \"fast\"\n").unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (2, "interval"), "{e}");
    assert!(e.message.contains("is not a duration"), "{e}");
    // Display puts it together.
    assert!(
        e.to_string()
            .starts_with("2:12: interval: \"fast\" is not a duration"),
        "{e}"
    );
}

#[test]
fn sinks_and_sources_are_checked() {
    check(
        "[sinks.out]\nfrom = \"nothing\"\nkind = \"stdout\"\n",
        2,
        "sinks.out.from",
        "`nothing` is neither a stream nor a source",
    );
    check(
        "[sinks.out]\nfrom = \"views\"\nkind = \"files\"\n",
        1,
        "sinks.out",
        "a files sink needs `dir`",
    );
    let e = JobFile::parse("name = \"t\"\ninterval = \"1s\"\n[sources.s]\nkind = \"tcp\"\ndir = \"x\"\naddr = \"a:1\"\n").unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (5, "sources.s.dir"), "{e}");
    assert!(
        e.message
            .contains("a tcp source has no `dir` (its fields: addr, listen)"),
        "{e}"
    );
}

#[test]
fn a_plugin_is_a_location_or_a_table_with_a_wasi_policy() {
    use dstream_core::job::Wasi;
    let job = |plugins: &str| {
        format!(
            "name = \"t\"\ninterval = \"1s\"\n[plugins]\n{plugins}\n[sources.s]\nkind = \"generator\"\nrate = 1\n"
        )
    };
    let f = JobFile::parse(&job(
        "a = \"a.wasm\"\nb = { path = \"b.wasm\", wasi = \"deterministic\" }\nc = { path = \"c\", wasi = \"none\" }",
    ))
    .unwrap();
    let listed: Vec<(&str, &str)> = f.plugins().collect();
    assert_eq!(listed, [("a", "a.wasm"), ("b", "b.wasm"), ("c", "c")]);
    assert_eq!(
        ["a", "b", "c", "undeclared"].map(|n| f.plugin_wasi(n)),
        [
            Wasi::Refuse,
            Wasi::Deterministic,
            Wasi::Refuse,
            Wasi::Refuse
        ]
    );
    for (plugins, needle) in [
        (
            "b = { path = \"b.wasm\", wasi = \"yes\" }",
            "`wasi` is \"none\" (the default) or \"deterministic\"",
        ),
        (
            "b = { wasi = \"deterministic\" }",
            "a plugin table needs `path`",
        ),
        ("b = { path = \"b.wasm\", fuel = 3 }", "unknown key `fuel`"),
        (
            "b = { path = \"\" }",
            "give a plugin crate directory or a .wasm file",
        ),
        ("b = 3", "a plugin is a location string or a table"),
    ] {
        let e = JobFile::parse(&job(plugins)).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "plugins.b"), "{e}");
        assert!(e.message.contains(needle), "{plugins}: {e}");
    }
}
