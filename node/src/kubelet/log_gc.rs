//! The node-wide bound on containers' logs (the kubelet's container log manager, plus a
//! total): each container's shim rotates its own CRI log by size (`--container-log-max-size`,
//! `--container-log-max-files`), and this loop keeps all logs of the node under
//! `--container-log-max-total-size`. Over the total, it removes the oldest rotated files of any
//! container first, then logs of exited containers and removed pods, oldest first; never the
//! current file of a container that may still write to it.
//!
//! Logs live at `PODS_DIR/<namespace>_<name>_<uid>/<container>/<attempt>.log`, rotated ones
//! beside it as `<attempt>.log.1`, `.2`, ...

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::pleg::Pleg;
use crate::runtime::ContainerState;

/// How often the node's logs are measured.
pub const LOG_GC_INTERVAL: Duration = Duration::from_secs(5);
/// Log files looked at in one pass at most (beyond, the rest waits for the next pass).
const FILES_PER_PASS_MAX: usize = 100_000;

/// Per-container rotation and the node's total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// A container's log is rotated past this size (kubelet: 10Mi).
    pub max_bytes: u64,
    /// Files kept per container run, the current one included (kubelet: 5).
    pub max_files: u32,
    /// All containers' logs of the node together, at most.
    pub max_total_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_bytes: 10 * 1024 * 1024,
            max_files: 5,
            max_total_bytes: 1024 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogGcError {
    #[error("invalid size {0:?}: use a quantity such as 10Mi, 512Ki or 1Gi")]
    Size(String),
}

/// A byte size as a Kubernetes quantity (`10Mi`, `64Ki`, `1G`, `1048576`), for the flags.
pub fn parse_size(text: &str) -> Result<u64, LogGcError> {
    let quantity = keelson_api::validation::Quantity::parse(text.trim())
        .map_err(|_| LogGcError::Size(text.to_string()))?;
    u64::try_from(quantity.value())
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| LogGcError::Size(text.to_string()))
}

/// One log file on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub modified: SystemTime,
    /// N of `<attempt>.log.N`, a rotated file no shim writes to (higher is older); 0 for the
    /// current `<attempt>.log`.
    pub rotation: u32,
    /// The file's inode: the shim's rotation renames files (`.1` to `.2`, ...), so by the time
    /// a pass removes what it measured, the file may be under another name.
    pub inode: u64,
}

/// The files to remove so that the logs fit in `max_total_bytes`: rotated files (oldest
/// first), then current files that are not `protected` (oldest first). Protected files (the
/// current logs of containers that are not known to have exited) are never chosen, even if the
/// total stays over.
pub fn plan(files: &[LogFile], protected: &HashSet<PathBuf>, max_total_bytes: u64) -> Vec<PathBuf> {
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    if total <= max_total_bytes {
        return Vec::new();
    }
    let mut candidates: Vec<&LogFile> = files
        .iter()
        .filter(|f| f.rotation > 0 || !protected.contains(&f.path))
        .collect();
    // Rotated before current, then oldest first. File times tick coarsely (a kernel tick, a
    // few ms) and a chatty container rotates faster than that, so within a tick the higher
    // rotation number is the older file; the path breaks the remaining ties (stable order).
    let age = |f: &LogFile| (f.rotation == 0, f.modified, std::cmp::Reverse(f.rotation));
    candidates.sort_by(|a, b| (age(a), &a.path).cmp(&(age(b), &b.path)));
    let mut remove = Vec::new();
    for file in candidates {
        if total <= max_total_bytes {
            break;
        }
        total = total.saturating_sub(file.bytes);
        remove.push(file.path.clone());
    }
    remove
}

/// Whether a file name is a container log: `<attempt>.log` (current, `Some(0)`) or
/// `<attempt>.log.N` (rotated, `Some(N)` with N > 0).
pub fn log_file_kind(name: &str) -> Option<u32> {
    let (attempt, rest) = name.split_once(".log")?;
    if attempt.is_empty() || !attempt.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match rest {
        "" => Some(0),
        _ => {
            let n = rest.strip_prefix('.')?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            n.parse::<u32>().ok().filter(|n| *n > 0)
        }
    }
}

/// Every container log file under `pods_dir` (at most [`FILES_PER_PASS_MAX`]).
pub fn scan(pods_dir: &Path) -> Vec<LogFile> {
    let mut files = Vec::new();
    let dirs = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    for pod in dirs(pods_dir) {
        for container in dirs(&pod) {
            let Ok(entries) = std::fs::read_dir(&container) else {
                continue;
            };
            for entry in entries.flatten() {
                if files.len() >= FILES_PER_PASS_MAX {
                    return files;
                }
                let name = entry.file_name();
                let Some(rotation) = name.to_str().and_then(log_file_kind) else {
                    continue;
                };
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                files.push(LogFile {
                    path: entry.path(),
                    bytes: meta.len(),
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    rotation,
                    inode: meta.ino(),
                });
            }
        }
    }
    files
}

/// The total size of the container logs under `pods_dir`.
pub fn total_bytes(pods_dir: &Path) -> u64 {
    scan(pods_dir).iter().map(|f| f.bytes).sum()
}

/// One pass: measure, then remove what `plan` picks.
async fn pass(pods_dir: &Path, pleg: &Pleg, max_total_bytes: u64) {
    let dir = pods_dir.to_path_buf();
    let files = match tokio::task::spawn_blocking(move || scan(&dir)).await {
        Ok(files) => files,
        Err(_) => return,
    };
    if files.iter().map(|f| f.bytes).sum::<u64>() <= max_total_bytes {
        return;
    }
    // Listed after the scan: a container created before a file was seen is in this list, so
    // the current file of a container that has just started is protected.
    if !pleg.relist().await {
        return;
    }
    let protected: HashSet<PathBuf> = pleg
        .current()
        .containers
        .iter()
        .filter(|c| !matches!(c.state, ContainerState::Exited { .. }))
        .map(|c| c.log_path.clone())
        .collect();
    let remove = plan(&files, &protected, max_total_bytes);
    let mut freed = 0u64;
    for path in &remove {
        let Some(file) = files.iter().find(|f| &f.path == path) else {
            continue;
        };
        match remove_scanned(file) {
            Ok(true) => freed += file.bytes,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a log file")
            }
        }
    }
    if !remove.is_empty() {
        tracing::info!(
            files = remove.len(),
            freed_bytes = freed,
            max_total_bytes,
            "removed container logs over the node's total"
        );
    }
}

/// Removes the file `file` was scanned from, under whatever name it has now: if the shim
/// rotated since the scan, its path names a newer file and the scanned one is beside it under
/// the next number. Returns whether a file was removed (false: it is gone already).
fn remove_scanned(file: &LogFile) -> std::io::Result<bool> {
    let unlink = |path: &Path| match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    };
    match std::fs::symlink_metadata(&file.path) {
        Ok(meta) if meta.ino() == file.inode => return unlink(&file.path),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let Some(dir) = file.path.parent() else {
        return Ok(false);
    };
    for entry in std::fs::read_dir(dir)?.flatten() {
        let is_log = entry.file_name().to_str().and_then(log_file_kind).is_some();
        if is_log && entry.metadata().is_ok_and(|m| m.ino() == file.inode) {
            return unlink(&entry.path());
        }
    }
    Ok(false)
}

/// Keeps the node's container logs under `max_total_bytes` until `stop`.
pub async fn run(
    pods_dir: PathBuf,
    pleg: Pleg,
    max_total_bytes: u64,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        pass(&pods_dir, &pleg, max_total_bytes).await;
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(LOG_GC_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, bytes: u64, age_secs: u64, rotation: u32) -> LogFile {
        LogFile {
            path: PathBuf::from(path),
            bytes,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_secs),
            rotation,
            inode: 0,
        }
    }

    #[test]
    fn rotated_files_go_first_then_exited_logs_never_running_ones() {
        let files = vec![
            file("/p/a/c/0.log", 50, 1, 0), // running: protected
            file("/p/a/c/0.log.1", 100, 10, 1),
            file("/p/a/c/0.log.2", 100, 20, 2),
            file("/p/b/c/0.log", 80, 100, 0), // exited
            file("/p/b/c/0.log.1", 100, 5, 1),
        ];
        let protected: HashSet<PathBuf> = [PathBuf::from("/p/a/c/0.log")].into();
        // (max total, removed in order)
        let cases: [(u64, &[&str]); 5] = [
            (1000, &[]),
            (430, &[]),
            (400, &["/p/a/c/0.log.2"]),
            (200, &["/p/a/c/0.log.2", "/p/a/c/0.log.1", "/p/b/c/0.log.1"]),
            (
                0,
                &[
                    "/p/a/c/0.log.2",
                    "/p/a/c/0.log.1",
                    "/p/b/c/0.log.1",
                    "/p/b/c/0.log",
                ],
            ),
        ];
        for (max, want) in cases {
            let got = plan(&files, &protected, max);
            let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
            assert_eq!(got, want, "max {max}");
        }
    }

    #[test]
    fn within_one_file_time_tick_the_higher_rotation_number_goes_first() {
        // A chatty container rotated `.3`, `.2` and `.1` within one tick of the file clock.
        let files = vec![
            file("/p/a/c/0.log", 50, 0, 0),
            file("/p/a/c/0.log.1", 100, 7, 1),
            file("/p/a/c/0.log.10", 100, 7, 10),
            file("/p/a/c/0.log.2", 100, 7, 2),
        ];
        let protected: HashSet<PathBuf> = [PathBuf::from("/p/a/c/0.log")].into();
        let got = plan(&files, &protected, 200);
        let want: Vec<PathBuf> = ["/p/a/c/0.log.10", "/p/a/c/0.log.2"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn log_file_names() {
        let cases = [
            ("0.log", Some(0)),
            ("12.log", Some(0)),
            ("0.log.1", Some(1)),
            ("3.log.10", Some(10)),
            ("0.log.0", None),
            ("0.log.99999999999", None),
            ("0.log.", None),
            ("0.log.x", None),
            ("x.log", None),
            (".log", None),
            ("0.log.tmp", None),
            ("config.json", None),
        ];
        for (name, want) in cases {
            assert_eq!(log_file_kind(name), want, "{name}");
        }
    }

    #[test]
    fn sizes_are_quantities() {
        assert_eq!(parse_size("10Mi"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("64Ki"), Ok(65536));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("ten").is_err());
        assert!(parse_size("-1Mi").is_err());
    }

    #[test]
    fn a_file_rotated_since_the_scan_is_removed_under_its_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("ns_p_uid").join("main");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log.1"), b"older").unwrap();
        let scanned = scan(dir.path());
        assert_eq!(scanned.len(), 1);
        // The shim rotates: .1 becomes .2, and a newer .1 appears.
        std::fs::rename(c.join("0.log.1"), c.join("0.log.2")).unwrap();
        std::fs::write(c.join("0.log.1"), b"newer").unwrap();
        assert!(remove_scanned(&scanned[0]).unwrap());
        assert!(!c.join("0.log.2").exists());
        assert_eq!(std::fs::read(c.join("0.log.1")).unwrap(), b"newer");
        // Gone already: nothing else is removed.
        assert!(!remove_scanned(&scanned[0]).unwrap());
        assert!(c.join("0.log.1").exists());
    }

    #[test]
    fn scan_finds_log_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("ns_p_uid").join("main");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log"), b"abc").unwrap();
        std::fs::write(c.join("0.log.1"), b"abcdef").unwrap();
        std::fs::write(c.join("notes.txt"), b"xxxxxxxxxx").unwrap();
        std::fs::write(dir.path().join("ns_p_uid").join("1.log"), b"x").unwrap();
        let mut files = scan(dir.path());
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let got: Vec<(u64, u32)> = files.iter().map(|f| (f.bytes, f.rotation)).collect();
        assert_eq!(got, vec![(3, 0), (6, 1)]);
        assert_eq!(total_bytes(dir.path()), 9);
    }
}
