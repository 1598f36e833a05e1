//! Builds every guest plugin into a component, once, for tests and benches
//! (like wasmtime's test-programs artifacts): a nested `cargo build` for
//! wasm32-unknown-unknown into `<target>/guests`, then wit-component.

use std::path::{Path, PathBuf};

/// The plugin crates, by package name.
const GUESTS: &[&str] = &[
    "pageviews",
    "wordcount",
    "grep",
    "topk",
    "hostile",
    "hostile-lend",
    // Bench-only: flat buffers vs per-record lists.
    "layout-probe",
];

/// Plugin crates built for wasm32-wasip2 (they import WASI through std).
const WASI_GUESTS: &[&str] = &["wasi-probe"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    // The guests get a target directory of their own inside the workspace
    // target directory: a nested cargo on the same one would wait for the
    // lock held by the outer build.
    let guests_dir = target_dir(&out_dir).join("guests");
    for dir in [
        "sdk",
        "wit",
        "guest-examples",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let mut built = Vec::new();
    for (guests, target) in [
        (GUESTS, dstream_build::TARGET),
        (WASI_GUESTS, dstream_build::WASIP2),
    ] {
        built.extend(
            dstream_build::build(&dstream_build::BuildOptions {
                manifest: root.join("Cargo.toml"),
                packages: guests.iter().map(|s| s.to_string()).collect(),
                target_dir: Some(guests_dir.clone()),
                out_dir: guests_dir.join("components"),
                quiet: true,
                target: Some(target.to_string()),
            })
            .unwrap_or_else(|e| panic!("building the guest plugins for {target}: {e}")),
        );
    }
    let mut code = String::new();
    for b in built {
        let name = b.package.to_uppercase().replace('-', "_");
        code.push_str(&format!(
            "/// The `{}` plugin component.\npub const {name}: &str = {:?};\n",
            b.package,
            b.component.display().to_string()
        ));
    }
    std::fs::write(out_dir.join("components.rs"), code).unwrap();
}

/// The workspace target directory: the nearest ancestor of OUT_DIR holding
/// cargo's CACHEDIR.TAG.
fn target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").exists())
        .unwrap_or_else(|| out_dir.ancestors().nth(3).unwrap())
        .to_path_buf()
}
