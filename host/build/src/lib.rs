//! Builds dstream plugin crates into WebAssembly components.
//!
//! A Rust plugin is a `cdylib` built for `wasm32-unknown-unknown`. Such a core
//! module imports nothing but our WIT interface (a `wasm32-wasip2` build would
//! drag in `wasi:io` and `wasi:cli` through std), and wit-bindgen has embedded
//! the component type in it, so [`componentize`] turns it into a component
//! with `wit-component`. Used by `dstream plugin build` and by the build
//! script that hands the tests their guest components.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target Rust plugins are built for.
pub const TARGET: &str = "wasm32-unknown-unknown";
/// The target of plugins that use WASI (through Rust's std, as components
/// from other toolchains do): rustc makes the component itself. The host
/// runs them only with deterministic WASI stand-ins, when the job asks.
pub const WASIP2: &str = "wasm32-wasip2";

/// Errors of building a plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `cargo` could not be started.
    #[error("cannot run cargo: {0}")]
    Spawn(#[source] std::io::Error),
    /// `cargo build` failed; its diagnostics went to stderr.
    #[error("cargo build failed ({status}); see the compiler output above")]
    Cargo {
        /// Exit status of cargo.
        status: std::process::ExitStatus,
    },
    /// The build made no `.wasm` file for a package.
    #[error("cargo built no .wasm for `{0}`: is it a library with crate-type = [\"cdylib\"]?")]
    NoWasm(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The Rust standard library for the Wasm target is missing.
    #[error(
        "the Rust target {0} is not installed: run `rustup target add {0}` (or ./scripts/setup.sh)"
    )]
    MissingTarget(String),
    /// `cargo metadata` said something unexpected.
    #[error("cannot read cargo metadata: {0}")]
    Metadata(String),
    /// The core module could not be made into a component.
    #[error("cannot make {path} into a component: {message}")]
    Componentize {
        /// The core module.
        path: PathBuf,
        /// What wit-component said.
        message: String,
    },
}

/// One plugin built: the package and its component.
#[derive(Debug, Clone)]
pub struct Built {
    /// Cargo package name.
    pub package: String,
    /// Path of the component written.
    pub component: PathBuf,
}

/// Options of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `Cargo.toml` of the crate or workspace to build.
    pub manifest: PathBuf,
    /// Packages to build (empty: the manifest's own package).
    pub packages: Vec<String>,
    /// Cargo target directory (default: cargo's choice).
    pub target_dir: Option<PathBuf>,
    /// Where to write the components.
    pub out_dir: PathBuf,
    /// Pass `--quiet` to cargo.
    pub quiet: bool,
    /// The target (default: [`TARGET`]).
    pub target: Option<String>,
}

/// Builds plugin crates for [`TARGET`] in release mode (LTO, one codegen
/// unit, no debug info) and writes one component per package to `out_dir`
/// as `<package>.wasm`.
pub fn build(opts: &BuildOptions) -> Result<Vec<Built>, Error> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(opts.target.as_deref().unwrap_or(TARGET))
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(&opts.manifest);
    for p in &opts.packages {
        cmd.arg("-p").arg(p);
    }
    if let Some(dir) = &opts.target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    if opts.quiet {
        cmd.arg("--quiet");
    }
    // Plugins are small and hot: optimise them fully whatever the caller's
    // release profile says.
    cmd.env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort");
    // When called from a build script or under clippy, do not inherit flags
    // meant for the host build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "__CARGO_FIX_PLZ",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let out = cmd.output().map_err(Error::Spawn)?;
    if !out.status.success() {
        return Err(Error::Cargo { status: out.status });
    }
    // Cargo reports every artifact; keep the .wasm files of cdylibs.
    let mut wasm: Vec<(String, PathBuf)> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(files) = msg["filenames"].as_array() else {
            continue;
        };
        let name = msg["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for f in files.iter().filter_map(|f| f.as_str()) {
            if f.ends_with(".wasm") {
                wasm.push((name.clone(), PathBuf::from(f)));
            }
        }
    }
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| Error::Io {
        path: opts.out_dir.clone(),
        source,
    })?;
    let wanted: Vec<String> = if opts.packages.is_empty() {
        wasm.iter().map(|(n, _)| n.clone()).collect()
    } else {
        opts.packages.clone()
    };
    let mut built = Vec::new();
    for package in wanted {
        let lib = package.replace('-', "_");
        let (_, module) = wasm
            .iter()
            .find(|(n, _)| *n == lib || *n == package)
            .ok_or_else(|| Error::NoWasm(package.clone()))?;
        let component = opts.out_dir.join(format!("{package}.wasm"));
        componentize_file(module, &component)?;
        built.push(Built { package, component });
    }
    Ok(built)
}

/// Whether `bytes` start like a component (rather than a core module).
fn is_component(bytes: &[u8]) -> bool {
    bytes.get(..8) == Some(&[0, b'a', b's', b'm', 0x0d, 0, 1, 0][..])
}

/// Makes a core module built with wit-bindgen into a component.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)
        .and_then(|mut e| e.encode())
        .map_err(|e| format!("{e:#}"))
}

/// [`componentize`] from file to file (a file that already is a
/// component, as rustc makes for [`WASIP2`], is copied).
pub fn componentize_file(module: &Path, component: &Path) -> Result<(), Error> {
    let bytes = std::fs::read(module).map_err(|source| Error::Io {
        path: module.to_path_buf(),
        source,
    })?;
    let out = if is_component(&bytes) {
        bytes
    } else {
        componentize(&bytes).map_err(|message| Error::Componentize {
            path: module.to_path_buf(),
            message,
        })?
    };
    std::fs::write(component, out).map_err(|source| Error::Io {
        path: component.to_path_buf(),
        source,
    })
}

/// Fails with a hint when the Rust standard library for [`TARGET`] is not
/// installed (asks `rustc --print sysroot`; works with or without rustup).
pub fn check_target() -> Result<(), Error> {
    check_target_for(TARGET)
}

/// [`check_target`] for `target`.
pub fn check_target_for(target: &str) -> Result<(), Error> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(Error::Spawn)?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if sysroot.join("lib/rustlib").join(target).is_dir() {
        Ok(())
    } else {
        Err(Error::MissingTarget(target.to_string()))
    }
}

/// Cargo's target directory for a manifest (`cargo metadata`).
pub fn target_dir(manifest: &Path) -> Result<PathBuf, Error> {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(manifest)
        .stderr(Stdio::inherit())
        .output()
        .map_err(Error::Spawn)?;
    if !out.status.success() {
        return Err(Error::Cargo { status: out.status });
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| Error::Metadata(e.to_string()))?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| Error::Metadata("no target_directory".into()))
}
