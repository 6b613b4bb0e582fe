//! Shared harness of the end-to-end tests.
#![allow(unreachable_pub, dead_code)]

pub mod cluster;
pub mod hosts;
pub mod kctl;
pub mod nodes;
#[path = "../../raft/tests/common/ports.rs"]
pub mod ports;
pub mod real_node;

use std::path::{Path, PathBuf};

/// `kctl` is another package's binary: it sits beside the test's `deps/` folder.
pub fn kctl_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("kctl"))
        .unwrap();
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (`cargo build --all-targets`)",
        bin.display()
    );
    bin
}
