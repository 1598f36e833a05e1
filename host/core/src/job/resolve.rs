//! Second step of reading a job: operators checked against the plugins'
//! descriptions, encodings followed along the DAG.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use super::spec::{JobFile, RawSource, RawStream, RawWindow, parse_duration};
use super::{
    Codec, GenFormat, Generator, Inverse, Job, JobError, Node, NodeId, NodeKind, Op, PluginOp,
    Reducer, Sink, SinkKind, Source, Window,
};
use crate::plugin::{Encoding, OperatorKind, PluginInfo};
use crate::reduce::{Native, NativeFn};

impl JobFile {
    /// Finishes the checks with the description of every plugin the file
    /// names (keyed by the job-local plugin name) and builds the [`Job`].
    pub fn resolve(&self, plugins: &BTreeMap<String, PluginInfo>) -> Result<Job, JobError> {
        let raw = &self.raw;
        let mut nodes: Vec<Node> = Vec::new();
        let mut ids: BTreeMap<String, NodeId> = BTreeMap::new();
        for (name, s) in &raw.sources {
            ids.insert(name.clone(), NodeId(nodes.len() as u32));
            nodes.push(Node {
                name: name.clone(),
                inputs: Vec::new(),
                kind: NodeKind::Source(source(s.get_ref())),
                key: Codec::Plain(Encoding::None),
                value: Codec::Plain(Encoding::Utf8),
                slide: 1,
            });
        }
        for name in &self.order {
            let s = &raw.streams[name];
            let inputs: Vec<NodeId> = s.get_ref().input_names().iter().map(|n| ids[n]).collect();
            let node = self.stream(name, s, &inputs, &nodes, plugins)?;
            ids.insert(name.clone(), NodeId(nodes.len() as u32));
            nodes.push(node);
        }
        let sinks = raw
            .sinks
            .iter()
            .map(|(name, s)| {
                let s = s.get_ref();
                Sink {
                    name: name.clone(),
                    from: ids[s.from.get_ref()],
                    kind: match s.kind.get_ref().as_str() {
                        "stdout" => SinkKind::Stdout {
                            limit: s.limit.as_ref().map_or(20, |l| *l.get_ref()),
                        },
                        "files" => SinkKind::Files {
                            dir: PathBuf::from(s.dir.as_ref().expect("checked").get_ref()),
                        },
                        _ => SinkKind::Http {
                            url: s.url.as_ref().expect("checked").get_ref().clone(),
                        },
                    },
                }
            })
            .collect();
        Ok(Job {
            name: raw.name.get_ref().clone(),
            interval: self.interval,
            checkpoint_every: self.checkpoint_every,
            partitions: raw.partitions.as_ref().map_or(4, |p| *p.get_ref()),
            nodes,
            sinks,
            plugins: self
                .plugins()
                .map(|(n, l)| (n.to_string(), l.to_string()))
                .collect(),
        })
    }

    fn stream(
        &self,
        name: &str,
        s: &Spanned<RawStream>,
        inputs: &[NodeId],
        nodes: &[Node],
        plugins: &BTreeMap<String, PluginInfo>,
    ) -> Result<Node, JobError> {
        let st = s.get_ref();
        let f = |k: &str| format!("streams.{name}.{k}");
        let err = |span: Range<usize>, field: String, m: String| self.loc.error(span, field, m);
        let parent = &nodes[inputs[0].index()];
        let params: Vec<(String, String)> = st
            .params
            .as_ref()
            .map(|p| {
                p.get_ref()
                    .iter()
                    .map(|(k, v)| {
                        let text = match v.get_ref() {
                            toml::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), text)
                    })
                    .collect()
            })
            .unwrap_or_default();

        // Every input must have a dataset at the same batches.
        let slide = parent.slide;
        for i in inputs {
            let n = &nodes[i.index()];
            if n.slide != slide {
                return Err(err(
                    st.from.as_ref().map_or(0..0, |f| f.span()),
                    f("from"),
                    format!(
                        "`{}` slides every {} batches but `{}` every {}: streams read together must slide alike",
                        parent.name, slide, n.name, n.slide
                    ),
                ));
            }
        }

        // A plugin operator of one of `kinds`, checked.
        let plugin_op = |field: &str,
                         text: &Spanned<String>,
                         kinds: &[OperatorKind]|
         -> Result<(PluginOp, &crate::plugin::OperatorInfo), JobError> {
            let span = text.span();
            let Some((plugin, op)) = text.get_ref().split_once('/') else {
                return Err(err(
                    span,
                    f(field),
                    format!(
                        "{:?} is not `PLUGIN/OPERATOR`{}",
                        text.get_ref(),
                        if kinds.contains(&OperatorKind::Reduce) {
                            " or a built-in reducer (sum, min, max, count)"
                        } else {
                            ""
                        }
                    ),
                ));
            };
            let Some(info) = plugins.get(plugin) else {
                return Err(err(
                    span,
                    f(field),
                    format!(
                        "missing plugin `{plugin}`: the job's [plugins] table has {}",
                        if plugins.is_empty() {
                            "none".to_string()
                        } else {
                            plugins.keys().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                ));
            };
            let Some(o) = info.operator(op) else {
                return Err(err(
                    span,
                    f(field),
                    format!(
                        "unknown operator `{op}`: plugin `{plugin}` has {}",
                        info.operators
                            .iter()
                            .map(|o| format!("{} ({})", o.name, o.kind))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            if !kinds.contains(&o.kind) {
                return Err(err(
                    span,
                    f(field),
                    format!(
                        "`{plugin}/{op}` is a {} operator, but `{field}` needs a {}",
                        o.kind,
                        kinds
                            .iter()
                            .map(|k| k.name())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ));
            }
            for p in &o.params {
                if p.required && !params.iter().any(|(k, _)| *k == p.name) {
                    return Err(err(
                        s.span(),
                        f("params"),
                        format!(
                            "`{plugin}/{op}` needs the parameter `{}` ({}): add `params = {{ {} = ... }}`",
                            p.name, p.description, p.name
                        ),
                    ));
                }
            }
            for (k, _) in &params {
                if !o.params.iter().any(|p| p.name == *k) {
                    let span = st
                        .params
                        .as_ref()
                        .and_then(|p| p.get_ref().get(k))
                        .map_or(0..0, |v| v.span());
                    return Err(err(
                        span,
                        f(&format!("params.{k}")),
                        format!(
                            "`{plugin}/{op}` takes no parameter `{k}` (it takes {})",
                            if o.params.is_empty() {
                                "none".to_string()
                            } else {
                                o.params
                                    .iter()
                                    .map(|p| p.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            }
                        ),
                    ));
                }
            }
            // Values must be what the operator reads, when both are typed.
            if let Codec::Plain(have) = &parent.value {
                let want = o.input.1;
                if typed(*have) && typed(want) && *have != want {
                    return Err(err(
                        span,
                        f(field),
                        format!(
                            "`{plugin}/{op}` reads {want} values but `{}` gives {have} values",
                            parent.name
                        ),
                    ));
                }
            }
            Ok((
                PluginOp {
                    plugin: plugin.to_string(),
                    op: op.to_string(),
                    params: params.clone(),
                },
                o,
            ))
        };

        let reducer = |field: &str, text: &Spanned<String>| -> Result<(Reducer, Codec), JobError> {
            let fun = match text.get_ref().as_str() {
                "sum" => Some(NativeFn::Sum),
                "min" => Some(NativeFn::Min),
                "max" => Some(NativeFn::Max),
                "count" => Some(NativeFn::Count),
                _ => None,
            };
            if let Some(fun) = fun {
                if fun == NativeFn::Count {
                    return Ok((
                        Reducer::Native(Native {
                            fun,
                            enc: Encoding::U64,
                        }),
                        Codec::Plain(Encoding::U64),
                    ));
                }
                return match parent.value.encoding() {
                    Some(e) if Native::supports(e) => {
                        Ok((Reducer::Native(Native { fun, enc: e }), Codec::Plain(e)))
                    }
                    _ => Err(err(
                        text.span(),
                        f(field),
                        format!(
                            "the built-in `{}` works on integer values, but `{}` gives {} values: use a plugin reducer",
                            text.get_ref(),
                            parent.name,
                            describe(&parent.value)
                        ),
                    )),
                };
            }
            let (p, o) = plugin_op(field, text, &[OperatorKind::Reduce])?;
            Ok((Reducer::Plugin(p), Codec::Plain(o.output.1)))
        };

        let window = |field: &str, w: &RawWindow| -> Result<Window, JobError> {
            window_of(self, &f(field), &w.length, &w.slide, slide)
        };

        let keyed_check = |op: &str| -> Result<(), JobError> {
            for i in inputs {
                let n = &nodes[i.index()];
                if n.key == Codec::Plain(Encoding::None) {
                    return Err(err(
                        st.operators()[0].1.clone(),
                        f(op),
                        format!(
                            "`{op}` groups records by key, but `{}` has no keys: map its records to (key, value) first",
                            n.name
                        ),
                    ));
                }
            }
            Ok(())
        };

        let (op, key, value, slide) = if let Some(t) = &st.map {
            let (p, o) = plugin_op("map", t, &[OperatorKind::Map])?;
            (
                Op::Map(p),
                Codec::Plain(o.output.0),
                Codec::Plain(o.output.1),
                slide,
            )
        } else if let Some(t) = &st.flat_map {
            let (p, o) = plugin_op("flat_map", t, &[OperatorKind::FlatMap])?;
            (
                Op::FlatMap(p),
                Codec::Plain(o.output.0),
                Codec::Plain(o.output.1),
                slide,
            )
        } else if let Some(t) = &st.filter {
            let (p, _) = plugin_op("filter", t, &[OperatorKind::Filter])?;
            (
                Op::Filter(p),
                parent.key.clone(),
                parent.value.clone(),
                slide,
            )
        } else if let Some(t) = &st.transform {
            let (p, o) = plugin_op("transform", t, &[OperatorKind::Transform])?;
            (
                Op::Transform(p),
                Codec::Plain(o.output.0),
                Codec::Plain(o.output.1),
                slide,
            )
        } else if st.union.is_some() {
            for i in &inputs[1..] {
                let n = &nodes[i.index()];
                if n.key != parent.key || n.value != parent.value {
                    return Err(err(
                        st.from.as_ref().map_or(0..0, |f| f.span()),
                        f("from"),
                        format!(
                            "union of streams of different types: `{}` has {} keys and {} values, `{}` has {} and {}",
                            parent.name,
                            describe(&parent.key),
                            describe(&parent.value),
                            n.name,
                            describe(&n.key),
                            describe(&n.value)
                        ),
                    ));
                }
            }
            (Op::Union, parent.key.clone(), parent.value.clone(), slide)
        } else if let Some(t) = &st.reduce_by_key {
            let (r, v) = reducer("reduce_by_key", t)?;
            keyed_check("reduce_by_key")?;
            (Op::ReduceByKey(r), parent.key.clone(), v, slide)
        } else if st.count_by_key.is_some() {
            (
                Op::CountByKey,
                parent.key.clone(),
                Codec::Plain(Encoding::U64),
                slide,
            )
        } else if let Some(t) = &st.running_reduce {
            let (r, v) = reducer("running_reduce", t)?;
            keyed_check("running_reduce")?;
            (Op::RunningReduce(r), parent.key.clone(), v, slide)
        } else if let Some(t) = &st.update_state_by_key {
            let (p, o) = plugin_op("update_state_by_key", t, &[OperatorKind::UpdateState])?;
            keyed_check("update_state_by_key")?;
            (
                Op::UpdateStateByKey(p),
                parent.key.clone(),
                Codec::Plain(o.output.1),
                slide,
            )
        } else if let Some(w) = &st.window {
            let w = window("window", w.get_ref())?;
            (
                Op::Window(w),
                parent.key.clone(),
                parent.value.clone(),
                w.slide,
            )
        } else if let Some(w) = &st.count_by_window {
            let w = window("count_by_window", w.get_ref())?;
            (
                Op::CountByWindow(w),
                Codec::Plain(Encoding::None),
                Codec::Plain(Encoding::U64),
                w.slide,
            )
        } else if let Some(rw) = &st.reduce_by_key_and_window {
            keyed_check("reduce_by_key_and_window")?;
            let r = rw.get_ref();
            let field = "reduce_by_key_and_window";
            let w = window_of(self, &f(field), &r.length, &r.slide, slide)?;
            let (reduce, v) = reducer(&format!("{field}.reduce"), &r.reduce)?;
            let inverse = match &r.inverse {
                None => None,
                Some(t) if t.get_ref() == "subtract" => match &reduce {
                    Reducer::Native(n) if matches!(n.fun, NativeFn::Sum | NativeFn::Count) => {
                        Some(Inverse::Subtract)
                    }
                    _ => {
                        return Err(err(
                            t.span(),
                            f(&format!("{field}.inverse")),
                            "the built-in `subtract` undoes only the built-in `sum` and `count`: give the plugin's inverse operator".into(),
                        ));
                    }
                },
                Some(t) => {
                    if matches!(reduce, Reducer::Native(_)) {
                        return Err(err(
                            t.span(),
                            f(&format!("{field}.inverse")),
                            "a built-in reducer takes the built-in inverse `subtract` (sum and count only)".into(),
                        ));
                    }
                    let (p, _) =
                        plugin_op(&format!("{field}.inverse"), t, &[OperatorKind::Inverse])?;
                    Some(Inverse::Plugin(p))
                }
            };
            (
                Op::ReduceByKeyAndWindow {
                    reduce,
                    inverse,
                    window: w,
                },
                parent.key.clone(),
                v,
                w.slide,
            )
        } else if st.join.is_some() {
            keyed_check("join")?;
            let right = &nodes[inputs[1].index()];
            if right.key != parent.key {
                return Err(err(
                    st.from.as_ref().map_or(0..0, |f| f.span()),
                    f("from"),
                    format!(
                        "join needs keys of one type: `{}` has {} keys, `{}` has {}",
                        parent.name,
                        describe(&parent.key),
                        right.name,
                        describe(&right.key)
                    ),
                ));
            }
            (
                Op::Join,
                parent.key.clone(),
                Codec::Pair(
                    Box::new(parent.value.clone()),
                    Box::new(right.value.clone()),
                ),
                slide,
            )
        } else {
            unreachable!("parse checked one operator")
        };
        if params.is_empty() || op_takes_params(&op) {
            Ok(Node {
                name: name.to_string(),
                inputs: inputs.to_vec(),
                kind: NodeKind::Stream(op),
                key,
                value,
                slide,
            })
        } else {
            Err(err(
                st.params.as_ref().map_or(0..0, |p| p.span()),
                f("params"),
                "parameters go to plugin operators; this stream's operator is built in".into(),
            ))
        }
    }
}

fn op_takes_params(op: &Op) -> bool {
    match op {
        Op::Map(_) | Op::FlatMap(_) | Op::Filter(_) | Op::Transform(_) => true,
        Op::UpdateStateByKey(_) => true,
        Op::ReduceByKey(r) | Op::RunningReduce(r) => matches!(r, Reducer::Plugin(_)),
        Op::ReduceByKeyAndWindow { reduce, .. } => matches!(reduce, Reducer::Plugin(_)),
        _ => false,
    }
}

fn window_of(
    file: &JobFile,
    field: &str,
    length: &Spanned<String>,
    slide_text: &Option<Spanned<String>>,
    parent_slide: u64,
) -> Result<Window, JobError> {
    let batches = |t: &Spanned<String>| {
        let d = parse_duration(t.get_ref()).expect("parse checked");
        (d.as_millis() / file.interval.as_millis()) as u64
    };
    let length_b = batches(length);
    let slide_b = slide_text.as_ref().map_or(parent_slide, batches);
    for (what, n, span) in [
        ("length", length_b, length.span()),
        (
            "slide",
            slide_b,
            slide_text.as_ref().map_or(length.span(), |s| s.span()),
        ),
    ] {
        if n % parent_slide != 0 {
            return Err(file.loc.error(
                span,
                format!("{field}.{what}"),
                format!("the window {what} must be a multiple of its input's slide ({parent_slide} batches)"),
            ));
        }
    }
    if slide_b > length_b {
        return Err(file.loc.error(
            slide_text.as_ref().map_or(length.span(), |s| s.span()),
            format!("{field}.slide"),
            "a window cannot slide further than its length (records would be skipped)".to_string(),
        ));
    }
    Ok(Window {
        length: length_b,
        slide: slide_b,
    })
}

/// True for encodings that say what the bytes are (type checks apply).
fn typed(e: Encoding) -> bool {
    !matches!(e, Encoding::Bytes | Encoding::None | Encoding::Postcard)
}

fn describe(c: &Codec) -> String {
    match c {
        Codec::Plain(Encoding::None) => "no".to_string(),
        Codec::Plain(e) => e.name().to_string(),
        Codec::Pair(a, b) => format!("({}, {}) pair", describe(a), describe(b)),
    }
}

fn source(r: &RawSource) -> Source {
    match r.kind.get_ref().as_str() {
        "tcp" => Source::Tcp {
            addr: r.addr.as_ref().expect("checked").get_ref().clone(),
            listen: matches!(
                r.listen.as_ref().map(|l| l.get_ref()),
                Some(toml::Value::Boolean(true))
            ),
        },
        "files" => Source::Files {
            dir: PathBuf::from(r.dir.as_ref().expect("checked").get_ref()),
        },
        "http" => Source::Http {
            listen: match r.listen.as_ref().map(|l| l.get_ref()) {
                Some(toml::Value::String(s)) => s.clone(),
                _ => unreachable!("checked"),
            },
        },
        _ => Source::Generator(Generator {
            rate: *r.rate.as_ref().expect("checked").get_ref(),
            seed: r.seed.as_ref().map_or(1, |s| *s.get_ref()),
            format: match r.format.as_ref().map(|f| f.get_ref().as_str()) {
                Some("words") => GenFormat::Words,
                Some("scores") => GenFormat::Scores,
                _ => GenFormat::Pageviews,
            },
            record_bytes: r.record_bytes.as_ref().map_or(100, |b| *b.get_ref()),
        }),
    }
}
