//! Pod IPs from the node's pod CIDR, like CNI's host-local plugin: one file per IP in use,
//! named by the address and holding the sandbox id, created exclusively — so an address is
//! never handed out twice while in use, also across node restarts and concurrent attaches.
//! Addresses are handed out round-robin after the last one reserved, so a freed address is
//! not reused at once.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use super::NetworkError;

/// The file naming the last address reserved.
const LAST_RESERVED: &str = "last_reserved_ip";

/// The pod addresses of `cidr`: all hosts but the gateway (the first).
pub fn pod_range(cidr: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let gateway = gateway(cidr);
    cidr.hosts().filter(move |ip| *ip != gateway)
}

/// The bridge's address: the first host of the CIDR.
pub fn gateway(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).saturating_add(1))
}

/// Pure: the next free address after `last` (wrapping), or `None` when all are taken.
pub fn next_free(
    cidr: Ipv4Net,
    last: Option<Ipv4Addr>,
    taken: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let all: Vec<Ipv4Addr> = pod_range(cidr).collect();
    let start = last
        .and_then(|l| all.iter().position(|ip| *ip == l))
        .map_or(0, |i| i + 1);
    (0..all.len())
        .map(|offset| all[(start + offset) % all.len()])
        .find(|ip| !taken.contains(ip))
}

/// The reservations of one pod CIDR, kept in a directory.
#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Net,
}

fn io(path: &Path, e: std::io::Error) -> NetworkError {
    NetworkError::Io(format!("{}: {e}", path.display()))
}

impl Ipam {
    pub fn open(dir: &Path, cidr: Ipv4Net) -> Result<Ipam, NetworkError> {
        let dir = dir.join(cidr.to_string().replace('/', "_"));
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(Ipam { dir, cidr })
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// Every reservation: (address, sandbox id). Unreadable or foreign files are skipped.
    pub fn reservations(&self) -> Result<Vec<(Ipv4Addr, String)>, NetworkError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))? {
            let entry = entry.map_err(|e| io(&self.dir, e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            if let Ok(owner) = fs::read_to_string(entry.path()) {
                out.push((ip, owner.trim().to_string()));
            }
        }
        Ok(out)
    }

    /// The address reserved for `id`, reserving one when it has none.
    pub fn reserve(&self, id: &str) -> Result<Ipv4Addr, NetworkError> {
        let reservations = self.reservations()?;
        if let Some((ip, _)) = reservations.iter().find(|(_, owner)| owner == id) {
            return Ok(*ip);
        }
        let mut taken: BTreeSet<Ipv4Addr> = reservations.into_iter().map(|(ip, _)| ip).collect();
        let mut last = fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        // Another reserver may take a candidate first: try the next one, a bounded number of
        // times (each failure marks one more address taken).
        loop {
            let Some(ip) = next_free(self.cidr, last, &taken) else {
                return Err(NetworkError::Exhausted(self.cidr.to_string()));
            };
            let path = self.dir.join(ip.to_string());
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    file.write_all(id.as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(|e| io(&path, e))?;
                    let last_path = self.dir.join(LAST_RESERVED);
                    fs::write(&last_path, ip.to_string()).map_err(|e| io(&last_path, e))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    taken.insert(ip);
                    last = Some(ip);
                }
                Err(e) => return Err(io(&path, e)),
            }
        }
    }

    /// Releases `id`'s address (no-op when it has none).
    pub fn release(&self, id: &str) -> Result<(), NetworkError> {
        for (ip, owner) in self.reservations()? {
            if owner == id {
                let path = self.dir.join(ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path, e)),
                }
            }
        }
        Ok(())
    }

    /// Releases every address whose sandbox is not in `live`; returns how many.
    pub fn release_all_but(&self, live: &BTreeSet<String>) -> Result<usize, NetworkError> {
        let mut released = 0;
        for (ip, owner) in self.reservations()? {
            if !live.contains(&owner) {
                let path = self.dir.join(ip.to_string());
                fs::remove_file(&path).map_err(|e| io(&path, e))?;
                released += 1;
            }
        }
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_next_free_address_follows_the_last_and_wraps() {
        let cidr = net("10.244.1.0/29"); // hosts .1-.6, .1 the gateway
        let taken = |ips: &[&str]| ips.iter().map(|s| ip(s)).collect::<BTreeSet<_>>();
        let cases: &[(Option<&str>, &[&str], Option<&str>)] = &[
            (None, &[], Some("10.244.1.2")),
            (Some("10.244.1.2"), &[], Some("10.244.1.3")),
            (Some("10.244.1.2"), &["10.244.1.3"], Some("10.244.1.4")),
            (Some("10.244.1.6"), &[], Some("10.244.1.2")),
            (
                Some("10.244.1.4"),
                &["10.244.1.5", "10.244.1.6"],
                Some("10.244.1.2"),
            ),
            (Some("10.9.9.9"), &[], Some("10.244.1.2")),
            (
                None,
                &[
                    "10.244.1.2",
                    "10.244.1.3",
                    "10.244.1.4",
                    "10.244.1.5",
                    "10.244.1.6",
                ],
                None,
            ),
        ];
        for (last, used, want) in cases {
            assert_eq!(
                next_free(cidr, last.map(ip), &taken(used)),
                want.map(ip),
                "last {last:?} taken {used:?}"
            );
        }
        assert_eq!(gateway(cidr), ip("10.244.1.1"));
    }

    #[test]
    fn reservations_persist_are_exclusive_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), net("10.244.1.0/29")).unwrap();
        let a = ipam.reserve("a").unwrap();
        let b = ipam.reserve("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(ipam.reserve("a").unwrap(), a, "a sandbox keeps its address");

        // A second handle (a restarted node) sees the same reservations.
        let again = Ipam::open(dir.path(), net("10.244.1.0/29")).unwrap();
        let c = again.reserve("c").unwrap();
        assert!(c != a && c != b);

        ipam.release("a").unwrap();
        let d = ipam.reserve("d").unwrap();
        assert_ne!(d, a, "a freed address is not reused at once");

        let live: BTreeSet<String> = ["b".to_string()].into();
        assert_eq!(ipam.release_all_but(&live).unwrap(), 2);
        let left: Vec<String> = ipam
            .reservations()
            .unwrap()
            .into_iter()
            .map(|r| r.1)
            .collect();
        assert_eq!(left, vec!["b".to_string()]);
    }

    #[test]
    fn a_full_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), net("10.244.1.0/30")).unwrap(); // one pod address
        ipam.reserve("a").unwrap();
        assert!(matches!(ipam.reserve("b"), Err(NetworkError::Exhausted(_))));
    }
}
