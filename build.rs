//! Link arguments for the `keelson` binary (every process, masters, nodes and container shims,
//! runs it). Measured in docs/benchmarks.md ("The node agent's code in memory").
use std::path::Path;

fn main() {
    // A position-dependent executable: the 63,000 relocations a PIE needs at start would
    // write ~1 MB of pointers into private pages of every process (50 shims, 50 MB).
    println!("cargo:rustc-link-arg-bins=-no-pie");
    // C++ static initializers (RocksDB has ~180) in a section of their own rather than one in
    // each of RocksDB's objects' code: each touched page maps 64 KiB of code around it.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,keep-text-section-prefix");
    // The functions the node agent and the shims run, together at the start of the code
    // (scripts/text-order.sh writes the list). Release only: symbol names differ in debug builds.
    let order = Path::new("src/text.order");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("PROFILE").as_deref() == Ok("release") && order.exists() {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            Path::new(&dir).join(order).display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
