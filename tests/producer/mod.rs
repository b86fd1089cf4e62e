//! The one block producer of a test binary's network: a key made once with `peerlink keygen`,
//! copied into the data directory of every node that produces, and named with `--producer` on
//! every node so that they all share one genesis (it commits to the producer set).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where the key was made, and its public key (hex).
fn made() -> &'static (PathBuf, String) {
    static MADE: OnceLock<(PathBuf, String)> = OnceLock::new();
    MADE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let out = Command::new(env!("CARGO_BIN_EXE_peerlink"))
            .args(["keygen", "--data-dir"])
            .arg(&dir)
            .output()
            .expect("run peerlink keygen");
        assert!(out.status.success(), "peerlink keygen failed");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let hex = text
            .lines()
            .find_map(|l| l.strip_prefix("public key "))
            .unwrap_or_else(|| panic!("no public key in: {text}"))
            .trim()
            .to_string();
        (dir, hex)
    })
}

/// The producer's public key, for `--producer`.
pub fn key_hex() -> &'static str {
    &made().1
}

/// Copies the producer key into `data_dir` (created if missing), unless one is there.
pub fn install(data_dir: &Path) {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let to = data_dir.join("producer.key");
    if !to.exists() {
        std::fs::copy(made().0.join("producer.key"), &to).expect("copy producer key");
    }
}
