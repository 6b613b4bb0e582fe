//! Applies nftables rulesets by piping them to `nft -f -` (inside `ip netns exec NS` when a
//! network namespace is given); an identical ruleset is not applied twice.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft: {0}")]
    Spawn(std::io::Error),
    #[error("nft rejected the ruleset: {0}")]
    Rejected(String),
}

/// Programs one network namespace's nftables (the proxy's own namespace when `netns` is
/// `None`).
#[derive(Debug)]
pub struct Nft {
    netns: Option<String>,
    applied: Option<String>,
}

impl Nft {
    pub fn new(netns: Option<String>) -> Nft {
        Nft {
            netns,
            applied: None,
        }
    }

    /// Applies `ruleset` in one transaction; `Ok(false)` when it was the last one applied.
    pub async fn apply(&mut self, ruleset: &str) -> Result<bool, NftError> {
        if self.applied.as_deref() == Some(ruleset) {
            return Ok(false);
        }
        self.applied = None;
        run(self.netns.as_deref(), &["-f", "-"], ruleset).await?;
        self.applied = Some(ruleset.to_string());
        Ok(true)
    }

    /// Forgets the last ruleset, so that the next `apply` runs even if it is the same.
    pub fn forget(&mut self) {
        self.applied = None;
    }

    /// Whether nft runs and may change rules here (`nft list tables` succeeds).
    pub async fn available(&self) -> bool {
        run(self.netns.as_deref(), &["list", "tables"], "")
            .await
            .is_ok()
    }

    /// The text of `nft list table ip TABLE`, or the error (no such table).
    pub async fn list_table(&self, table: &str) -> Result<String, NftError> {
        run(self.netns.as_deref(), &["list", "table", "ip", table], "").await
    }
}

/// Runs `nft ARGS` with `input` on stdin; its stdout, or its stderr as the error.
async fn run(netns: Option<&str>, args: &[&str], input: &str) -> Result<String, NftError> {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft"]);
            c
        }
        None => Command::new("nft"),
    };
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(NftError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(NftError::Spawn)?;
    }
    let output = child.wait_with_output().await.map_err(NftError::Spawn)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(NftError::Rejected(if stderr.is_empty() {
            format!("nft exited with {}", output.status)
        } else {
            stderr
        }));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `nft -c -f -`: checks a ruleset's syntax and semantics without applying it (tests).
#[cfg(test)]
pub(crate) fn check_blocking(ruleset: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (install nftables and run as root): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
