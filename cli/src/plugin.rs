//! `dstream plugin build` and `dstream plugin inspect`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use dstream_core::job::Wasi;
use dstream_wasm::{Limits, Plugin, Runtime};

use crate::args::{BuildArgs, InspectArgs};

pub(crate) fn build(a: BuildArgs) -> anyhow::Result<()> {
    let manifest = if a.path.is_dir() {
        a.path.join("Cargo.toml")
    } else {
        a.path.clone()
    };
    if !manifest.is_file() {
        bail!("{} is not a crate: no Cargo.toml there", a.path.display());
    }
    let target = if a.wasi {
        dstream_build::WASIP2
    } else {
        dstream_build::TARGET
    };
    dstream_build::check_target_for(target)?;
    let out_dir = match a.out {
        Some(o) => o,
        None => dstream_build::target_dir(&manifest)?.join("dstream"),
    };
    tracing::info!(manifest = %manifest.display(), "building plugin");
    let built = dstream_build::build(&dstream_build::BuildOptions {
        manifest: manifest.clone(),
        packages: Vec::new(),
        target_dir: None,
        out_dir,
        quiet: false,
        target: Some(target.to_string()),
    })
    .with_context(|| format!("building {}", manifest.display()))?;
    // Load what was built: a plugin that builds but does not validate is
    // better caught here than at upload.
    let runtime = Runtime::new(Limits::default())?;
    let mut out = std::io::stdout().lock();
    for b in built {
        let plugin = load(&runtime, &b.component, wasi(a.wasi))?;
        let n = plugin.info().operators.len();
        writeln!(
            out,
            "built {} ({n} operator{}): {}",
            b.package,
            if n == 1 { "" } else { "s" },
            b.component.display()
        )?;
    }
    Ok(())
}

/// The WASI policy a `--wasi-deterministic` flag asks for.
pub(crate) fn wasi(deterministic: bool) -> Wasi {
    if deterministic {
        Wasi::Deterministic
    } else {
        Wasi::Refuse
    }
}

/// Loads a component file, naming the plugin after the file.
pub(crate) fn load(runtime: &Runtime, path: &Path, wasi: Wasi) -> anyhow::Result<Plugin> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    Ok(runtime.load_with(&name, &bytes, wasi)?)
}

pub(crate) fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let runtime = Runtime::new(Limits::default())?;
    let plugin = load(&runtime, &a.file, wasi(a.wasi_deterministic))?;
    let info = plugin.info();
    let size = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} {} — {} ({size} bytes), a valid dstream:plugin@{} component",
        info.name,
        info.version,
        PathBuf::from(&a.file).display(),
        dstream_wasm::WIT_VERSION
    )?;
    writeln!(out)?;
    let width = info
        .operators
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(0);
    for op in &info.operators {
        writeln!(
            out,
            "  {:width$}  {:12}  ({}, {}) -> ({}, {})",
            op.name,
            op.kind.name(),
            op.input.0,
            op.input.1,
            op.output.0,
            op.output.1,
        )?;
        for line in op.description.lines() {
            writeln!(out, "  {:width$}    {line}", "")?;
        }
        for p in &op.params {
            writeln!(
                out,
                "  {:width$}    param {}{}: {}",
                "",
                p.name,
                if p.required { "" } else { " (optional)" },
                p.description
            )?;
        }
    }
    Ok(())
}
