//! Image references: parsing and normalizing as docker does (`busybox` →
//! `docker.io/library/busybox:latest`), and Kubernetes' default pull policy.

use super::{ImageError, PullPolicy};

const DEFAULT_DOMAIN: &str = "docker.io";
const REFERENCE_CHARS_MAX: usize = 255;

/// A parsed reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedReference {
    pub(crate) domain: String,
    pub(crate) path: String,
    pub(crate) tag: Option<String>,
    pub(crate) digest: Option<String>,
}

impl ParsedReference {
    /// The normalized form; `:latest` when there is neither tag nor digest.
    pub(crate) fn normalized(&self) -> String {
        let mut out = format!("{}/{}", self.domain, self.path);
        match (&self.tag, &self.digest) {
            (Some(tag), _) => {
                out.push(':');
                out.push_str(tag);
            }
            (None, None) => out.push_str(":latest"),
            (None, Some(_)) => {}
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
        out
    }
}

fn invalid(r: &str, why: &str) -> ImageError {
    ImageError::InvalidReference(format!("{r:?}: {why}"))
}

fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let hex_ok = |len: usize| {
        hex.len() == len
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match algorithm {
        "sha256" => hex_ok(64),
        "sha512" => hex_ok(128),
        _ => false,
    }
}

/// A path component: lower-case alphanumerics joined by `.`, `_`, `__` or dashes.
fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut previous_separator = String::new();
    for &b in bytes {
        if alnum(b) {
            previous_separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            previous_separator.push(b as char);
            let ok = previous_separator == "."
                || previous_separator == "_"
                || previous_separator == "__"
                || previous_separator.bytes().all(|s| s == b'-');
            if !ok {
                return false;
            }
        } else {
            return false;
        }
    }
    true
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    port_ok && host_ok
}

/// Parses `r` with docker's rules: the first component is a registry when it has a `.` or a
/// `:` or is `localhost`; Docker Hub names without an organization get `library/`.
pub(crate) fn parse(r: &str) -> Result<ParsedReference, ImageError> {
    if r.is_empty() || r.len() > REFERENCE_CHARS_MAX + 80 {
        return Err(invalid(r, "empty or too long"));
    }
    let (name, digest) = match r.split_once('@') {
        Some((name, digest)) => {
            if !valid_digest(digest) {
                return Err(invalid(r, "malformed digest"));
            }
            (name, Some(digest.to_string()))
        }
        None => (r, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name[last_slash..].rfind(':') {
        Some(i) => {
            let tag = &name[last_slash + i + 1..];
            if !valid_tag(tag) {
                return Err(invalid(r, "malformed tag"));
            }
            (&name[..last_slash + i], Some(tag.to_string()))
        }
        None => (name, None),
    };
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            if !valid_domain(first) {
                return Err(invalid(r, "malformed registry host"));
            }
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        DEFAULT_DOMAIN.to_string()
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if path.len() > REFERENCE_CHARS_MAX || !path.split('/').all(valid_component) {
        return Err(invalid(
            r,
            "repository names must be lower-case alphanumerics separated by '.', '_', '__', '-' or '/'",
        ));
    }
    Ok(ParsedReference {
        domain,
        path,
        tag,
        digest,
    })
}

/// The normalized form of an image reference: `busybox` → `docker.io/library/busybox:latest`;
/// a registry with a port is kept; digests (`@sha256:...`) are kept.
pub fn normalize_reference(r: &str) -> Result<String, ImageError> {
    parse(r).map(|p| p.normalized())
}

/// Kubernetes' default: `Always` for `:latest` or no tag (without a digest), otherwise
/// `IfNotPresent` (also for a reference that does not parse: the pull reports it).
pub fn default_pull_policy(reference: &str) -> PullPolicy {
    match parse(reference) {
        Ok(p) if p.tag.as_deref() == Some("latest") || (p.tag.is_none() && p.digest.is_none()) => {
            PullPolicy::Always
        }
        _ => PullPolicy::IfNotPresent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalization() {
        let with_digest = format!("busybox@{D}");
        let expected_digest = format!("docker.io/library/busybox@{D}");
        let tag_and_digest = format!("quay.io/a/b:1@{D}");
        let cases: &[(&str, Option<&str>)] = &[
            ("busybox", Some("docker.io/library/busybox:latest")),
            ("busybox:1.35", Some("docker.io/library/busybox:1.35")),
            ("library/busybox", Some("docker.io/library/busybox:latest")),
            (
                "docker.io/busybox",
                Some("docker.io/library/busybox:latest"),
            ),
            (
                "index.docker.io/library/busybox:1",
                Some("docker.io/library/busybox:1"),
            ),
            ("user/app:v2", Some("docker.io/user/app:v2")),
            ("127.0.0.1:5000/x:1", Some("127.0.0.1:5000/x:1")),
            ("127.0.0.1:5000/x", Some("127.0.0.1:5000/x:latest")),
            ("localhost/x/y", Some("localhost/x/y:latest")),
            ("localhost:5000/x", Some("localhost:5000/x:latest")),
            (
                "registry.k8s.io/pause:3.9",
                Some("registry.k8s.io/pause:3.9"),
            ),
            (
                "ghcr.io/a_b/c-d/e__f.g:t_1.2-3",
                Some("ghcr.io/a_b/c-d/e__f.g:t_1.2-3"),
            ),
            (with_digest.as_str(), Some(expected_digest.as_str())),
            (tag_and_digest.as_str(), Some(tag_and_digest.as_str())),
            ("", None),
            ("Busybox", None),
            ("busybox:", None),
            ("busybox:-x", None),
            ("busybox@sha256:abc", None),
            ("busybox@md5:d41d8cd98f00b204e9800998ecf8427e", None),
            ("a//b", None),
            ("a/b/", None),
            ("-a", None),
            ("a..b", None),
            ("a___b", None),
            ("bad host:5000/x", None),
            ("host:port/x", None),
            ("busy box", None),
        ];
        for (input, expected) in cases {
            let got = normalize_reference(input).ok();
            assert_eq!(got.as_deref(), *expected, "normalize_reference({input:?})");
        }
    }

    #[test]
    fn pull_policy_defaults() {
        let digest_only = format!("busybox@{D}");
        let latest_and_digest = format!("busybox:latest@{D}");
        let cases = [
            ("busybox", PullPolicy::Always),
            ("busybox:latest", PullPolicy::Always),
            ("127.0.0.1:5000/x", PullPolicy::Always),
            ("busybox:1.35", PullPolicy::IfNotPresent),
            (digest_only.as_str(), PullPolicy::IfNotPresent),
            (latest_and_digest.as_str(), PullPolicy::Always),
            ("NOT VALID", PullPolicy::IfNotPresent),
        ];
        for (input, expected) in cases {
            assert_eq!(default_pull_policy(input), expected, "{input}");
        }
    }
}
