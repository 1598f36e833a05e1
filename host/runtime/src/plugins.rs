//! Loading a job's plugins: a `.wasm` component, or a plugin crate built on
//! the spot with `dstream-build`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dstream_core::PluginInfo;
use dstream_core::job::Wasi;
use dstream_wasm::{Plugin, Runtime};

use crate::Error;

/// Where a plugin named in a job lives, resolved against the job's folder.
pub fn locate(location: &str, base_dir: &Path) -> PathBuf {
    let p = Path::new(location);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Loads plugin `name` from `location` (a `.wasm` file, or a crate directory
/// that is built first, into `target/dstream` of its workspace), under the
/// WASI policy `wasi`.
pub fn load(
    runtime: &Runtime,
    name: &str,
    location: &str,
    base_dir: &Path,
    wasi: Wasi,
) -> Result<Plugin, Error> {
    let (path, bytes) = component(name, location, base_dir, wasi)?;
    runtime
        .load_with(name, &bytes, wasi)
        .map_err(|e| Error::Plugin {
            name: name.to_string(),
            message: format!("{}: {e}", path.display()),
        })
}

/// The component of plugin `name` at `location` (building a crate
/// directory first: for wasm32-wasip2 when the plugin may use WASI, else
/// for wasm32-unknown-unknown): its path and bytes.
pub fn component(
    name: &str,
    location: &str,
    base_dir: &Path,
    wasi: Wasi,
) -> Result<(PathBuf, Vec<u8>), Error> {
    let err = |message: String| Error::Plugin {
        name: name.to_string(),
        message,
    };
    let path = locate(location, base_dir);
    let component = if path.extension().is_some_and(|e| e == "wasm") {
        path.clone()
    } else {
        let manifest = if path.is_dir() {
            path.join("Cargo.toml")
        } else {
            path.clone()
        };
        if !manifest.is_file() {
            return Err(err(format!(
                "{} is neither a .wasm component nor a plugin crate (no Cargo.toml)",
                path.display()
            )));
        }
        let target = match wasi {
            Wasi::Refuse => dstream_build::TARGET,
            Wasi::Deterministic => dstream_build::WASIP2,
        };
        dstream_build::check_target_for(target).map_err(|e| err(e.to_string()))?;
        let build_dir = dstream_build::target_dir(&manifest)
            .map_err(|e| err(e.to_string()))?
            .join("dstream");
        tracing::info!(plugin = name, crate_ = %manifest.display(), "building plugin");
        let built = dstream_build::build(&dstream_build::BuildOptions {
            manifest: manifest.clone(),
            packages: Vec::new(),
            target_dir: None,
            out_dir: build_dir,
            quiet: false,
            target: Some(target.to_string()),
        })
        .map_err(|e| err(format!("building {}: {e}", manifest.display())))?;
        match built.as_slice() {
            [one] => one.component.clone(),
            _ => {
                return Err(err(format!(
                    "{} builds {} components; point the job at one .wasm file",
                    manifest.display(),
                    built.len()
                )));
            }
        }
    };
    let bytes = std::fs::read(&component)
        .map_err(|e| err(format!("reading {}: {e}", component.display())))?;
    Ok((component, bytes))
}

/// The descriptions of loaded plugins, for resolving a job file.
pub fn infos(plugins: &BTreeMap<String, Plugin>) -> BTreeMap<String, PluginInfo> {
    plugins
        .iter()
        .map(|(n, p)| (n.clone(), p.info().clone()))
        .collect()
}
