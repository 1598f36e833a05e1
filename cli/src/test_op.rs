//! `dstream test-op`: one operator (or a chain) over the lines of a file.

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use dstream_core::{Batch, Encoding, OperatorInfo, OperatorKind};
use dstream_wasm::{Limits, Runtime, Stage};

use crate::args::TestOpArgs;
use crate::plugin::{load, wasi};

fn read_text(path: &Path) -> anyhow::Result<String> {
    let mut s = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
    } else {
        s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(s)
}

/// Parses lines into records of the given encodings: `KEY<TAB>VALUE` when the
/// key is read, the whole line as the value otherwise.
fn parse_records(
    path: &Path,
    (key, value): (Encoding, Encoding),
    op: &str,
) -> anyhow::Result<Batch> {
    let text = read_text(path)?;
    let mut batch = Batch::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), n + 1);
        let (k, v) = if key == Encoding::None {
            (Vec::new(), line)
        } else {
            let Some((k, v)) = line.split_once('\t') else {
                bail!(
                    "{}: expected KEY<TAB>VALUE, because `{op}` reads keys ({key})",
                    at()
                );
            };
            (
                key.parse(k)
                    .map_err(|e| anyhow::anyhow!("{}: key: {e}", at()))?,
                v,
            )
        };
        let v = value
            .parse(v)
            .map_err(|e| anyhow::anyhow!("{}: value: {e}", at()))?;
        batch.push(&k, &v);
    }
    Ok(batch)
}

/// Gives each stage the parameters meant for it: `STAGE.NAME=VALUE` to that
/// stage, plain `NAME=VALUE` to every stage that declares NAME (or to the only
/// stage).
fn stage_params(
    ops: &[&OperatorInfo],
    params: &[(String, String)],
) -> anyhow::Result<Vec<Vec<(String, String)>>> {
    let mut per: Vec<Vec<(String, String)>> = vec![Vec::new(); ops.len()];
    for (name, value) in params {
        if ops.len() == 1 {
            per[0].push((name.clone(), value.clone()));
            continue;
        }
        if let Some((stage, pname)) = name.split_once('.') {
            let Some(i) = ops.iter().position(|o| o.name == stage) else {
                bail!("parameter {name}: no stage is called `{stage}`");
            };
            per[i].push((pname.to_string(), value.clone()));
            continue;
        }
        let mut given = false;
        for (i, op) in ops.iter().enumerate() {
            if op.params.iter().any(|p| p.name == *name) {
                per[i].push((name.clone(), value.clone()));
                given = true;
            }
        }
        if !given {
            bail!("no stage of the chain takes a parameter `{name}`");
        }
    }
    Ok(per)
}

pub(crate) fn run(a: TestOpArgs) -> anyhow::Result<()> {
    let runtime = Runtime::new(Limits {
        memory: a.memory_mib << 20,
        deadline: a.deadline,
        ..Limits::default()
    })?;
    let plugin = load(&runtime, &a.file, wasi(a.wasi_deterministic))?;
    let names: Vec<&str> = a.operator.split('+').collect();
    let mut ops = Vec::new();
    for n in &names {
        let op = plugin.info().operator(n).ok_or_else(|| {
            let have: Vec<_> = plugin
                .info()
                .operators
                .iter()
                .map(|o| o.name.as_str())
                .collect();
            anyhow::anyhow!(
                "plugin `{}` has no operator `{n}` (it has: {})",
                plugin.name(),
                have.join(", ")
            )
        })?;
        ops.push(op);
    }
    let params = stage_params(&ops, &a.params)?;
    let first = ops[0];
    if ops.len() == 1 && first.kind == OperatorKind::Inverse && a.leaving.is_none() {
        bail!(
            "`{}` is an inverse: give the leaving records with --leaving FILE",
            first.name
        );
    }
    if ops.len() > 1 && (a.leaving.is_some() || a.state.is_some()) {
        bail!(
            "--state and --leaving are for a single update-state or inverse operator, not a chain"
        );
    }
    let last = ops[ops.len() - 1];
    let input = parse_records(&a.input, first.input, &first.name)?;
    let started = std::time::Instant::now();
    let output = if ops.len() > 1 {
        let stages: Vec<Stage> = ops
            .iter()
            .zip(params)
            .map(|(o, p)| Stage {
                op: o.name.clone(),
                params: p,
            })
            .collect();
        plugin.pipeline(&stages, &input)?
    } else {
        let p = &params[0];
        match first.kind {
            OperatorKind::UpdateState => {
                let state = match &a.state {
                    Some(path) => parse_records(path, first.output, &first.name)?,
                    None => Batch::new(),
                };
                plugin.update_state(&first.name, p, &input, &state)?
            }
            OperatorKind::Inverse => {
                let Some(path) = &a.leaving else {
                    bail!(
                        "`{}` is an inverse: give the leaving records with --leaving FILE",
                        first.name
                    );
                };
                let leaving = parse_records(path, first.input, &first.name)?;
                plugin.inverse(&first.name, p, &input, &leaving)?
            }
            _ => plugin.apply(&first.name, p, &input)?,
        }
    };
    tracing::info!(
        records_in = input.len(),
        records_out = output.len(),
        elapsed = ?started.elapsed(),
        "ran {}",
        a.operator
    );
    let mut out = BufWriter::new(std::io::stdout().lock());
    let (ke, ve) = last.output;
    for (k, v) in output.iter() {
        if ke == Encoding::None && k.is_empty() {
            writeln!(out, "{}", ve.render(v))?;
        } else {
            writeln!(out, "{}\t{}", ke.render(k), ve.render(v))?;
        }
    }
    out.flush()?;
    Ok(())
}
