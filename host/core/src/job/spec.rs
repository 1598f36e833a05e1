//! The job file as written: TOML with spans, and the checks the file alone
//! allows.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use super::error::{JobError, Locator};

/// The operator fields a stream may have (exactly one of them).
pub(crate) const OPERATORS: [&str; 13] = [
    "map",
    "flat_map",
    "filter",
    "transform",
    "union",
    "reduce_by_key",
    "count_by_key",
    "running_reduce",
    "update_state_by_key",
    "window",
    "reduce_by_key_and_window",
    "count_by_window",
    "join",
];

pub(crate) const SOURCE_KINDS: [&str; 4] = ["tcp", "files", "http", "generator"];
pub(crate) const SINK_KINDS: [&str; 3] = ["stdout", "files", "http"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJob {
    pub(crate) name: Spanned<String>,
    pub(crate) interval: Spanned<String>,
    pub(crate) checkpoint_interval: Option<Spanned<String>>,
    pub(crate) partitions: Option<Spanned<u32>>,
    /// A location, or a table `{ path = "...", wasi = "deterministic" }`.
    #[serde(default)]
    pub(crate) plugins: IndexMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub(crate) sources: IndexMap<String, Spanned<RawSource>>,
    #[serde(default)]
    pub(crate) streams: IndexMap<String, Spanned<RawStream>>,
    #[serde(default)]
    pub(crate) sinks: IndexMap<String, Spanned<RawSink>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    pub(crate) kind: Spanned<String>,
    // tcp
    pub(crate) addr: Option<Spanned<String>>,
    pub(crate) listen: Option<Spanned<toml::Value>>,
    // files
    pub(crate) dir: Option<Spanned<String>>,
    // generator
    pub(crate) rate: Option<Spanned<u64>>,
    pub(crate) seed: Option<Spanned<u64>>,
    pub(crate) format: Option<Spanned<String>>,
    pub(crate) record_bytes: Option<Spanned<u32>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSink {
    pub(crate) from: Spanned<String>,
    pub(crate) kind: Spanned<String>,
    pub(crate) limit: Option<Spanned<usize>>,
    pub(crate) dir: Option<Spanned<String>>,
    pub(crate) url: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWindow {
    pub(crate) length: Spanned<String>,
    pub(crate) slide: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWindowReduce {
    pub(crate) reduce: Spanned<String>,
    pub(crate) inverse: Option<Spanned<String>>,
    pub(crate) length: Spanned<String>,
    pub(crate) slide: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStream {
    pub(crate) from: Option<Spanned<OneOrMany>>,
    pub(crate) params: Option<Spanned<IndexMap<String, Spanned<toml::Value>>>>,
    pub(crate) map: Option<Spanned<String>>,
    pub(crate) flat_map: Option<Spanned<String>>,
    pub(crate) filter: Option<Spanned<String>>,
    pub(crate) transform: Option<Spanned<String>>,
    pub(crate) union: Option<Spanned<bool>>,
    pub(crate) reduce_by_key: Option<Spanned<String>>,
    pub(crate) count_by_key: Option<Spanned<bool>>,
    pub(crate) running_reduce: Option<Spanned<String>>,
    pub(crate) update_state_by_key: Option<Spanned<String>>,
    pub(crate) window: Option<Spanned<RawWindow>>,
    pub(crate) reduce_by_key_and_window: Option<Spanned<RawWindowReduce>>,
    pub(crate) count_by_window: Option<Spanned<RawWindow>>,
    pub(crate) join: Option<Spanned<bool>>,
}

impl RawStream {
    /// The operator fields given, with their spans.
    pub(crate) fn operators(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut v = Vec::new();
        macro_rules! field {
            ($($f:ident),*) => {$(
                if let Some(x) = &self.$f {
                    v.push((stringify!($f), x.span()));
                }
            )*};
        }
        field!(
            map,
            flat_map,
            filter,
            transform,
            union,
            reduce_by_key,
            count_by_key,
            running_reduce,
            update_state_by_key,
            window,
            reduce_by_key_and_window,
            count_by_window,
            join
        );
        v.sort_by_key(|(_, s)| s.start);
        v
    }

    /// The names it reads, with the span of `from`.
    pub(crate) fn input_names(&self) -> Vec<String> {
        match self.from.as_ref().map(|f| f.get_ref()) {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(v)) => v.clone(),
        }
    }
}

/// A job file that parsed and passed every check that needs no plugin.
/// [`resolve`](Self::resolve) finishes the checks with the plugins'
/// descriptions.
#[derive(Debug, Clone)]
pub struct JobFile {
    pub(crate) raw: RawJob,
    pub(crate) loc: Locator,
    /// The plugins as declared, in order.
    pub(crate) plugins: Vec<PluginDecl>,
    pub(crate) interval: Duration,
    pub(crate) checkpoint_every: u64,
    /// Streams in topological order (names).
    pub(crate) order: Vec<String>,
}

/// Parses `1s`, `100ms`, `2m` (humantime) into a duration.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration like \"1s\" or \"100ms\" ({e})"))?;
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{text:?}: durations are whole milliseconds"));
    }
    Ok(d)
}

impl JobFile {
    /// Parses a job file and checks what the file alone can tell.
    pub fn parse(text: &str) -> Result<Self, JobError> {
        let loc = Locator::new(text);
        let raw: RawJob = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().replace('\n', " ");
            let field = field_at(text, span.start);
            loc.error(span, field, message)
        })?;
        let err = |span: Range<usize>, field: &str, msg: String| loc.error(span, field, msg);

        if raw.name.get_ref().trim().is_empty() {
            return Err(err(raw.name.span(), "name", "a job needs a name".into()));
        }
        let interval = parse_duration(raw.interval.get_ref())
            .map_err(|m| err(raw.interval.span(), "interval", m))?;
        if interval < Duration::from_millis(10) {
            return Err(err(
                raw.interval.span(),
                "interval",
                format!(
                    "{:?} is too short: the batch interval is at least 10ms",
                    raw.interval.get_ref()
                ),
            ));
        }
        let multiple = |s: &Spanned<String>, field: &str| -> Result<u64, JobError> {
            let d = parse_duration(s.get_ref()).map_err(|m| err(s.span(), field, m))?;
            let (n, i) = (d.as_millis(), interval.as_millis());
            if n == 0 || n % i != 0 {
                return Err(err(
                    s.span(),
                    field,
                    format!(
                        "{:?} is not a multiple of the batch interval ({})",
                        s.get_ref(),
                        humantime::format_duration(interval)
                    ),
                ));
            }
            Ok((n / i) as u64)
        };
        let checkpoint_every = match &raw.checkpoint_interval {
            Some(c) => multiple(c, "checkpoint_interval")?,
            None => 10,
        };
        if let Some(p) = &raw.partitions
            && !(1..=4096).contains(p.get_ref())
        {
            return Err(err(
                p.span(),
                "partitions",
                format!("{} partitions: give 1 to 4096", p.get_ref()),
            ));
        }
        let plugins = raw
            .plugins
            .iter()
            .map(|(name, decl)| {
                plugin_decl(name, decl.get_ref())
                    .map_err(|m| err(decl.span(), &format!("plugins.{name}"), m))
            })
            .collect::<Result<Vec<_>, _>>()?;

        for (name, s) in &raw.sources {
            check_source(&loc, name, s)?;
        }
        if raw.sources.is_empty() && !raw.streams.is_empty() {
            return Err(err(
                0..0,
                "sources",
                "the job has streams but no source: add a [sources.NAME] table".into(),
            ));
        }

        for (name, s) in &raw.streams {
            let f = |k: &str| format!("streams.{name}.{k}");
            if raw.sources.contains_key(name) {
                return Err(err(
                    s.span(),
                    &format!("streams.{name}"),
                    format!("`{name}` is both a source and a stream: names must be unique"),
                ));
            }
            let ops = s.get_ref().operators();
            match ops.as_slice() {
                [] => {
                    return Err(err(
                        s.span(),
                        &format!("streams.{name}"),
                        format!(
                            "stream `{name}` has no operator: give one of {}",
                            OPERATORS.join(", ")
                        ),
                    ));
                }
                [_] => {}
                [(a, _), (b, span), ..] => {
                    return Err(err(
                        span.clone(),
                        &f(b),
                        format!(
                            "a stream has one operator, and `{name}` already has `{a}`: make a second stream that reads `{name}`"
                        ),
                    ));
                }
            }
            let (op, op_span) = ops[0].clone();
            let Some(from) = &s.get_ref().from else {
                return Err(err(
                    s.span(),
                    &format!("streams.{name}"),
                    format!(
                        "stream `{name}` reads from nothing: add `from = \"SOURCE_OR_STREAM\"`"
                    ),
                ));
            };
            let names = s.get_ref().input_names();
            for n in &names {
                if !raw.sources.contains_key(n) && !raw.streams.contains_key(n) {
                    return Err(err(
                        from.span(),
                        &f("from"),
                        format!(
                            "`{n}` is neither a source nor a stream (sources: {}; streams: {})",
                            list(raw.sources.keys()),
                            list(raw.streams.keys())
                        ),
                    ));
                }
            }
            let wanted = match op {
                "union" => 2..=usize::MAX,
                "join" => 2..=2,
                _ => 1..=1,
            };
            if !wanted.contains(&names.len()) {
                let what = match op {
                    "union" => "two or more streams, `from = [\"a\", \"b\"]`",
                    "join" => "two keyed streams, `from = [\"left\", \"right\"]`",
                    _ => "one source or stream, `from = \"NAME\"`",
                };
                return Err(err(from.span(), &f("from"), format!("`{op}` reads {what}")));
            }
            let is_true = |b: &Option<Spanned<bool>>| b.as_ref().map(|b| *b.get_ref());
            for (flag, v) in [
                ("union", is_true(&s.get_ref().union)),
                ("count_by_key", is_true(&s.get_ref().count_by_key)),
                ("join", is_true(&s.get_ref().join)),
            ] {
                if v == Some(false) {
                    return Err(err(
                        op_span.clone(),
                        &f(flag),
                        format!(
                            "`{flag} = false` means nothing: write `{flag} = true` or another operator"
                        ),
                    ));
                }
            }
            let st = s.get_ref();
            if let Some(w) = &st.window {
                check_window(
                    &multiple,
                    &w.get_ref().length,
                    &w.get_ref().slide,
                    &f("window"),
                )?;
            }
            if let Some(w) = &st.count_by_window {
                check_window(
                    &multiple,
                    &w.get_ref().length,
                    &w.get_ref().slide,
                    &f("count_by_window"),
                )?;
            }
            if let Some(w) = &st.reduce_by_key_and_window {
                check_window(
                    &multiple,
                    &w.get_ref().length,
                    &w.get_ref().slide,
                    &f("reduce_by_key_and_window"),
                )?;
            }
            if let Some(p) = &st.params {
                for (k, v) in p.get_ref() {
                    if matches!(v.get_ref(), toml::Value::Table(_) | toml::Value::Array(_)) {
                        return Err(err(
                            v.span(),
                            &f(&format!("params.{k}")),
                            "a parameter is a string, number or boolean".into(),
                        ));
                    }
                }
            }
        }

        for (name, s) in &raw.sinks {
            check_sink(&loc, name, s, &raw)?;
        }

        let order = topological_order(&raw, &loc)?;
        Ok(Self {
            raw,
            loc,
            plugins,
            interval,
            checkpoint_every,
            order,
        })
    }

    /// Job name.
    pub fn name(&self) -> &str {
        self.raw.name.get_ref()
    }

    /// Batch interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The plugins: job-local name and where it is (a crate directory or a
    /// `.wasm` file, as written, relative to the job file).
    pub fn plugins(&self) -> impl Iterator<Item = (&str, &str)> {
        self.plugins
            .iter()
            .map(|p| (p.name.as_str(), p.location.as_str()))
    }

    /// What plugin `name` may import from WASI ([`Wasi::Refuse`] for a
    /// plugin the job does not declare).
    pub fn plugin_wasi(&self, name: &str) -> Wasi {
        self.plugins
            .iter()
            .find(|p| p.name == name)
            .map_or(Wasi::Refuse, |p| p.wasi)
    }

    /// An error about plugin `name` (for example: it failed to load), placed
    /// at its line.
    pub fn plugin_error(&self, name: &str, message: impl Into<String>) -> JobError {
        let span = self.raw.plugins.get(name).map_or(0..0, |l| l.span());
        self.loc.error(span, format!("plugins.{name}"), message)
    }
}

/// What a plugin may import from WASI, as its job declares
/// (`wasi = "deterministic"` in the plugin's table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Wasi {
    /// Nothing: a plugin importing WASI is refused at load. Plugins built
    /// with the Rust SDK for wasm32-unknown-unknown import none.
    #[default]
    Refuse,
    /// Deterministic stand-ins, so that the plugin still gives the same
    /// bytes anywhere: no files (no preopened directory), no environment
    /// or arguments, stdin empty and stdout/stderr discarded, a wall clock
    /// frozen at 0 (1970-01-01) and a monotonic one that never advances (a
    /// sleep returns at once), randomness from a generator seeded by the
    /// plugin and operator names, started again at every call. Sockets and
    /// HTTP stay refused.
    Deterministic,
}

/// A plugin as declared: its job-local name, where it is, and its WASI
/// policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PluginDecl {
    pub(crate) name: String,
    pub(crate) location: String,
    pub(crate) wasi: Wasi,
}

/// Reads `plugins.NAME`: a location string, or a table with `path` and
/// optionally `wasi`.
fn plugin_decl(name: &str, v: &toml::Value) -> Result<PluginDecl, String> {
    let location = |path: &str| {
        if path.trim().is_empty() {
            Err("give a plugin crate directory or a .wasm file".to_string())
        } else {
            Ok(path.to_string())
        }
    };
    let (location, wasi) = match v {
        toml::Value::String(path) => (location(path)?, Wasi::Refuse),
        toml::Value::Table(t) => {
            if let Some(k) = t.keys().find(|k| !["path", "wasi"].contains(&k.as_str())) {
                return Err(format!(
                    "unknown key `{k}`: a plugin table takes `path` and `wasi`"
                ));
            }
            let path = match t.get("path") {
                Some(toml::Value::String(p)) => location(p)?,
                Some(_) => return Err("`path` must be a string".into()),
                None => {
                    return Err(
                        "a plugin table needs `path` (a crate directory or a .wasm file)".into(),
                    );
                }
            };
            let wasi = match t.get("wasi") {
                None => Wasi::Refuse,
                Some(toml::Value::String(w)) if w == "none" => Wasi::Refuse,
                Some(toml::Value::String(w)) if w == "deterministic" => Wasi::Deterministic,
                Some(other) => {
                    return Err(format!(
                        "`wasi` is \"none\" (the default) or \"deterministic\", not {other}"
                    ));
                }
            };
            (path, wasi)
        }
        other => {
            return Err(format!(
                "a plugin is a location string or a table {{ path = \"...\", wasi = \"deterministic\" }}, not {}",
                other.type_str()
            ));
        }
    };
    Ok(PluginDecl {
        name: name.to_string(),
        location,
        wasi,
    })
}

/// Checks a duration is a multiple of the interval; gives it in batches.
type Multiple<'a> = dyn Fn(&Spanned<String>, &str) -> Result<u64, JobError> + 'a;

fn check_window(
    multiple: &Multiple<'_>,
    length: &Spanned<String>,
    slide: &Option<Spanned<String>>,
    field: &str,
) -> Result<(), JobError> {
    multiple(length, &format!("{field}.length"))?;
    if let Some(s) = slide {
        multiple(s, &format!("{field}.slide"))?;
    }
    Ok(())
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<_> = names.map(|s| s.as_str()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn check_source(loc: &Locator, name: &str, s: &Spanned<RawSource>) -> Result<(), JobError> {
    let r = s.get_ref();
    let f = |k: &str| format!("sources.{name}.{k}");
    let kind = r.kind.get_ref().as_str();
    let allowed: &[&str] = match kind {
        "tcp" => &["addr", "listen"],
        "files" => &["dir"],
        "http" => &["listen"],
        "generator" => &["rate", "seed", "format", "record_bytes"],
        other => {
            return Err(loc.error(
                r.kind.span(),
                f("kind"),
                format!(
                    "unknown source kind `{other}`: use one of {}",
                    SOURCE_KINDS.join(", ")
                ),
            ));
        }
    };
    let given = [
        ("addr", r.addr.as_ref().map(|x| x.span())),
        ("listen", r.listen.as_ref().map(|x| x.span())),
        ("dir", r.dir.as_ref().map(|x| x.span())),
        ("rate", r.rate.as_ref().map(|x| x.span())),
        ("seed", r.seed.as_ref().map(|x| x.span())),
        ("format", r.format.as_ref().map(|x| x.span())),
        ("record_bytes", r.record_bytes.as_ref().map(|x| x.span())),
    ];
    for (field, span) in given {
        if let Some(span) = span
            && !allowed.contains(&field)
        {
            return Err(loc.error(
                span,
                f(field),
                format!(
                    "a {kind} source has no `{field}` (its fields: {})",
                    allowed.join(", ")
                ),
            ));
        }
    }
    let need = |present: bool, field: &str, example: &str| {
        if present {
            Ok(())
        } else {
            Err(loc.error(
                s.span(),
                format!("sources.{name}"),
                format!("a {kind} source needs `{field}` (for example `{field} = {example}`)"),
            ))
        }
    };
    match kind {
        "tcp" => {
            need(r.addr.is_some(), "addr", "\"127.0.0.1:9999\"")?;
            if let Some(l) = &r.listen
                && !matches!(l.get_ref(), toml::Value::Boolean(_))
            {
                return Err(loc.error(l.span(), f("listen"), "for tcp, `listen` is true or false"));
            }
        }
        "files" => need(r.dir.is_some(), "dir", "\"incoming\"")?,
        "http" => {
            need(r.listen.is_some(), "listen", "\"127.0.0.1:8080\"")?;
            if let Some(l) = &r.listen
                && !matches!(l.get_ref(), toml::Value::String(_))
            {
                return Err(loc.error(
                    l.span(),
                    f("listen"),
                    "for http, `listen` is an address like \"127.0.0.1:8080\"",
                ));
            }
        }
        "generator" => {
            need(r.rate.is_some(), "rate", "10000")?;
            if let Some(fm) = &r.format
                && !["pageviews", "words", "scores"].contains(&fm.get_ref().as_str())
            {
                return Err(loc.error(
                    fm.span(),
                    f("format"),
                    format!(
                        "unknown generator format {:?}: use pageviews, words or scores",
                        fm.get_ref()
                    ),
                ));
            }
            if let Some(b) = &r.record_bytes
                && !(16..=65536).contains(b.get_ref())
            {
                return Err(loc.error(b.span(), f("record_bytes"), "give 16 to 65536 bytes"));
            }
        }
        _ => unreachable!(),
    }
    Ok(())
}

fn check_sink(
    loc: &Locator,
    name: &str,
    s: &Spanned<RawSink>,
    raw: &RawJob,
) -> Result<(), JobError> {
    let r = s.get_ref();
    let f = |k: &str| format!("sinks.{name}.{k}");
    let from = r.from.get_ref();
    if !raw.streams.contains_key(from) && !raw.sources.contains_key(from) {
        return Err(loc.error(
            r.from.span(),
            f("from"),
            format!(
                "`{from}` is neither a stream nor a source (streams: {})",
                list(raw.streams.keys())
            ),
        ));
    }
    let kind = r.kind.get_ref().as_str();
    let allowed: &[&str] = match kind {
        "stdout" => &["limit"],
        "files" => &["dir"],
        "http" => &["url"],
        other => {
            return Err(loc.error(
                r.kind.span(),
                f("kind"),
                format!(
                    "unknown sink kind `{other}`: use one of {}",
                    SINK_KINDS.join(", ")
                ),
            ));
        }
    };
    for (field, span) in [
        ("limit", r.limit.as_ref().map(|x| x.span())),
        ("dir", r.dir.as_ref().map(|x| x.span())),
        ("url", r.url.as_ref().map(|x| x.span())),
    ] {
        if let Some(span) = span
            && !allowed.contains(&field)
        {
            return Err(loc.error(span, f(field), format!("a {kind} sink has no `{field}`")));
        }
    }
    let missing = |field: &str, example: &str| {
        loc.error(
            s.span(),
            format!("sinks.{name}"),
            format!("a {kind} sink needs `{field}` (for example `{field} = {example}`)"),
        )
    };
    match kind {
        "files" if r.dir.is_none() => Err(missing("dir", "\"out\"")),
        "http" if r.url.is_none() => Err(missing("url", "\"http://127.0.0.1:8081/batches\"")),
        "http" => {
            let u = r.url.as_ref().expect("checked");
            if !u.get_ref().starts_with("http://") {
                return Err(loc.error(u.span(), f("url"), "the http sink posts to http:// URLs"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Streams in an order where each comes after what it reads; a cycle is an
/// error at the `from` of one of its streams.
fn topological_order(raw: &RawJob, loc: &Locator) -> Result<Vec<String>, JobError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = raw
        .streams
        .keys()
        .map(|k| (k.as_str(), Mark::New))
        .collect();
    let mut order = Vec::new();
    // Iterative DFS keeping the path, to name the cycle.
    for start in raw.streams.keys() {
        if marks[start.as_str()] != Mark::New {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        marks.insert(start, Mark::Open);
        while let Some((node, next)) = stack.last().cloned() {
            let inputs = raw.streams[node].get_ref().input_names();
            let streams_in: Vec<&String> = inputs
                .iter()
                .filter_map(|n| raw.streams.get_key_value(n).map(|(k, _)| k))
                .collect();
            if next < streams_in.len() {
                stack.last_mut().expect("non-empty").1 += 1;
                let child = streams_in[next].as_str();
                match marks[child] {
                    Mark::New => {
                        marks.insert(child, Mark::Open);
                        stack.push((child, 0));
                    }
                    Mark::Open => {
                        let at = stack.iter().position(|(n, _)| *n == child).expect("open");
                        // Each stream on the path reads the next: data flows backwards.
                        let mut cycle: Vec<&str> = vec![stack[at].0];
                        cycle.extend(stack[at + 1..].iter().rev().map(|(n, _)| *n));
                        cycle.push(cycle[0]);
                        let first = cycle[0];
                        let span = raw.streams[first]
                            .get_ref()
                            .from
                            .as_ref()
                            .map_or(0..0, |f| f.span());
                        return Err(loc.error(
                            span,
                            format!("streams.{first}.from"),
                            format!(
                                "the streams form a cycle: {} (a stream cannot read its own output; use running_reduce or update_state_by_key for state)",
                                cycle.join(" -> ")
                            ),
                        ));
                    }
                    Mark::Done => {}
                }
            } else {
                marks.insert(node, Mark::Done);
                order.push(node.to_string());
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// Best-effort dotted path of the table or key at `offset`, for syntax errors
/// that toml reports without one.
fn field_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let mut table = String::new();
    let mut key = String::new();
    for line in before.lines() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            table = h.trim_end_matches(']').trim().to_string();
            key.clear();
        } else if let Some((k, _)) = t.split_once('=') {
            key = k.trim().to_string();
        }
    }
    // The key on the error's own line, if any.
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    if let Some((k, _)) = text[line_start..line_end].split_once('=')
        && !text[line_start..line_end].trim_start().starts_with('[')
    {
        key = k.trim().to_string();
    } else if before[line_start..].trim_start().starts_with('[') {
        key.clear();
    }
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}
