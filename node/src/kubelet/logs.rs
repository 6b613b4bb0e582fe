//! Container logs as `kubectl logs` shows them, read back from the CRI-format files the
//! runtime writes (`<RFC 3339 time> <stream> <F|P> <text>` per line, rotated to `.1`, `.2`…):
//! tail, since, timestamps, byte limits, and following a file as it grows.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How much of a log to show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub tail_lines: Option<usize>,
    pub since: Option<SystemTime>,
    pub timestamps: bool,
    pub limit_bytes: Option<usize>,
    pub follow: bool,
}

/// One record of a CRI log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    /// `P`: the line continues in the next record.
    pub partial: bool,
    pub text: &'a str,
}

pub fn parse(line: &str) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("");
    if !matches!(stream, "stdout" | "stderr") {
        return None;
    }
    Some(Record {
        time,
        stream,
        partial: tag.starts_with('P'),
        text,
    })
}

fn time_of(text: &str) -> Option<SystemTime> {
    let ts: jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(ts))
}

/// Renders the whole lines of `content` (CRI records) as the user sees them.
pub fn render(content: &str, options: &LogOptions) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut pending = String::new();
    let mut pending_time: Option<String> = None;
    for raw in content.lines() {
        let Some(record) = parse(raw) else {
            continue;
        };
        if let Some(since) = options.since {
            if time_of(record.time).is_some_and(|t| t < since) {
                continue;
            }
        }
        if pending_time.is_none() {
            pending_time = Some(record.time.to_string());
        }
        pending.push_str(record.text);
        if record.partial {
            continue;
        }
        let time = pending_time.take().unwrap_or_default();
        let line = std::mem::take(&mut pending);
        lines.push(if options.timestamps {
            format!("{time} {line}\n")
        } else {
            format!("{line}\n")
        });
    }
    let skip = options
        .tail_lines
        .map_or(0, |tail| lines.len().saturating_sub(tail));
    let mut out: String = lines[skip..].concat();
    if let Some(limit) = options.limit_bytes {
        if out.len() > limit {
            let mut cut = limit;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
        }
    }
    out
}

/// The files of one log, oldest first: rotated ones (`.N` … `.1`) then the current.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if let (Some(dir), false) = (path.parent(), name.is_empty()) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().to_string();
                if let Some(n) = file
                    .strip_prefix(&name)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    rotated.push((n, entry.path()));
                }
            }
        }
    }
    rotated.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    out.push(path.to_path_buf());
    out
}

/// How much of a log is read at most when not following (older content is dropped).
const READ_BYTES_MAX: u64 = 64 << 20;

/// The log as text, per `options` (without following).
pub fn read(path: &Path, options: &LogOptions) -> std::io::Result<String> {
    let mut content = String::new();
    for file in files(path) {
        match std::fs::read(&file) {
            Ok(bytes) => content.push_str(&String::from_utf8_lossy(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if content.len() as u64 > READ_BYTES_MAX {
            let cut = content.len() - READ_BYTES_MAX as usize;
            let cut = content[cut..].find('\n').map_or(cut, |i| cut + i + 1);
            content.drain(..cut);
        }
    }
    Ok(render(&content, options))
}

/// The offset where `path` ends now (to follow from).
pub fn end_of(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Reads what was appended to `path` after `offset`, whole lines only; returns the new
/// offset. A file shorter than `offset` was rotated: read it from the start.
pub fn read_from(path: &Path, offset: u64, options: &LogOptions) -> std::io::Result<(String, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((String::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(4 << 20).read_to_end(&mut bytes)?;
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&bytes[..whole]).to_string();
    let options = LogOptions {
        tail_lines: None,
        limit_bytes: None,
        ..options.clone()
    };
    Ok((render(&text, &options), start + whole as u64))
}

/// How often a followed log is polled.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:01.000000000Z stdout F one\n\
2026-01-01T00:00:02.000000000Z stderr F two\n\
2026-01-01T00:00:03.000000000Z stdout P thr\n\
2026-01-01T00:00:03.100000000Z stdout F ee\n\
garbage line\n";

    fn check(options: LogOptions, want: &str) {
        assert_eq!(render(LOG, &options), want, "{options:?}");
    }

    #[test]
    fn renders_lines_tails_and_timestamps() {
        check(LogOptions::default(), "one\ntwo\nthree\n");
        check(
            LogOptions {
                tail_lines: Some(1),
                ..LogOptions::default()
            },
            "three\n",
        );
        check(
            LogOptions {
                timestamps: true,
                tail_lines: Some(2),
                ..LogOptions::default()
            },
            "2026-01-01T00:00:02.000000000Z two\n2026-01-01T00:00:03.000000000Z three\n",
        );
        let since = time_of("2026-01-01T00:00:02Z").unwrap();
        check(
            LogOptions {
                since: Some(since),
                ..LogOptions::default()
            },
            "two\nthree\n",
        );
        check(
            LogOptions {
                limit_bytes: Some(5),
                ..LogOptions::default()
            },
            "one\nt",
        );
    }

    #[test]
    fn rotated_files_come_first_and_appends_are_read_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        std::fs::write(
            dir.path().join("0.log.2"),
            "2026-01-01T00:00:00Z stdout F a\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("0.log.1"),
            "2026-01-01T00:00:01Z stdout F b\n",
        )
        .unwrap();
        std::fs::write(&log, "2026-01-01T00:00:02Z stdout F c\n").unwrap();
        assert_eq!(read(&log, &LogOptions::default()).unwrap(), "a\nb\nc\n");
        let offset = end_of(&log);
        std::fs::write(&log, "2026-01-01T00:00:02Z stdout F c\n2026-01-01T00:00:03Z stdout F d\n2026-01-01T00:00:04Z stdout F e").unwrap();
        let (text, next) = read_from(&log, offset, &LogOptions::default()).unwrap();
        assert_eq!(text, "d\n", "the unfinished last line waits");
        assert!(next > offset);
    }
}
