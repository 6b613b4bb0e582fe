//! Pod CIDRs of nodes: an IPv4 range cut into equal subnets, each handed out at most once.
//! Pure: the node controller rebuilds it from the nodes' `spec.podCIDR` when it starts.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The most subnets one range may be cut into (a /8 into /24s is 65536).
const SUBNETS_MAX: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CidrError {
    #[error("{0:?} is not an IPv4 CIDR")]
    NotACidr(String),
    #[error("{cidr} has host bits set")]
    HostBits { cidr: String },
    #[error("node mask /{mask} does not fit in /{prefix}")]
    MaskTooShort { prefix: u8, mask: u8 },
    #[error("/{prefix} cut into /{mask} gives more than {SUBNETS_MAX} subnets")]
    TooManySubnets { prefix: u8, mask: u8 },
    #[error("{0} is not one of this range's subnets")]
    Foreign(String),
}

/// Parses `a.b.c.d/len` into the network address and prefix length.
pub(crate) fn parse_cidr(text: &str) -> Result<(u32, u8), CidrError> {
    let bad = || CidrError::NotACidr(text.to_string());
    let (addr, len) = text.trim().split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    let addr = u32::from(addr);
    if addr & !mask_bits(len) != 0 {
        return Err(CidrError::HostBits {
            cidr: text.to_string(),
        });
    }
    Ok((addr, len))
}

fn mask_bits(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// Hands out the subnets of one range, lowest free first.
#[derive(Debug, Clone)]
pub(crate) struct CidrAllocator {
    network: u32,
    prefix: u8,
    mask: u8,
    used: BTreeSet<u64>,
    /// Where the search for a free subnet starts.
    next: u64,
}

impl CidrAllocator {
    pub(crate) fn new(cluster_cidr: &str, mask: u8) -> Result<Self, CidrError> {
        let (network, prefix) = parse_cidr(cluster_cidr)?;
        if mask < prefix || mask > 32 {
            return Err(CidrError::MaskTooShort { prefix, mask });
        }
        if u32::from(mask - prefix) > 20 {
            return Err(CidrError::TooManySubnets { prefix, mask });
        }
        Ok(CidrAllocator {
            network,
            prefix,
            mask,
            used: BTreeSet::new(),
            next: 0,
        })
    }

    fn subnets(&self) -> u64 {
        (1u64 << (self.mask - self.prefix)).min(SUBNETS_MAX)
    }

    fn format(&self, index: u64) -> String {
        // index < subnets() <= 2^(32 - prefix - (32 - mask)), so the sum stays in u32.
        let step = 1u64 << (32 - u32::from(self.mask));
        let addr = u64::from(self.network) + index * step;
        format!("{}/{}", Ipv4Addr::from(addr as u32), self.mask)
    }

    fn index_of(&self, cidr: &str) -> Result<u64, CidrError> {
        let (addr, len) = parse_cidr(cidr)?;
        if len != self.mask || addr & mask_bits(self.prefix) != self.network {
            return Err(CidrError::Foreign(cidr.to_string()));
        }
        Ok(u64::from(addr - self.network) >> (32 - u32::from(self.mask)))
    }

    /// Marks an existing node's CIDR as taken; false if it already was (a duplicate).
    pub(crate) fn occupy(&mut self, cidr: &str) -> Result<bool, CidrError> {
        let index = self.index_of(cidr)?;
        Ok(self.used.insert(index))
    }

    /// Whether `cidr` is one of this range's subnets and taken.
    #[cfg(test)]
    pub(crate) fn is_used(&self, cidr: &str) -> bool {
        self.index_of(cidr)
            .map(|i| self.used.contains(&i))
            .unwrap_or(false)
    }

    /// The next free subnet, now taken; `None` when the range is full.
    pub(crate) fn allocate(&mut self) -> Option<String> {
        let total = self.subnets();
        for offset in 0..total {
            let index = (self.next + offset) % total;
            if self.used.insert(index) {
                self.next = (index + 1) % total;
                return Some(self.format(index));
            }
        }
        None
    }

    /// Gives a subnet back (a deleted node's, or one whose write failed).
    pub(crate) fn release(&mut self, cidr: &str) {
        if let Ok(index) = self.index_of(cidr) {
            self.used.remove(&index);
        }
    }

    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = Result<(u32, u8), CidrError>;

    #[test]
    fn parses_and_rejects() {
        let cases: &[(&str, Parsed)] = &[
            ("10.244.0.0/16", Ok((0x0af4_0000, 16))),
            ("0.0.0.0/0", Ok((0, 0))),
            ("10.0.0.1/32", Ok((0x0a00_0001, 32))),
            (
                "10.244.1.0/16",
                Err(CidrError::HostBits {
                    cidr: "10.244.1.0/16".into(),
                }),
            ),
            ("10.244.0.0", Err(CidrError::NotACidr("10.244.0.0".into()))),
            (
                "10.244.0.0/33",
                Err(CidrError::NotACidr("10.244.0.0/33".into())),
            ),
            ("fd00::/64", Err(CidrError::NotACidr("fd00::/64".into()))),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_cidr(text), want, "{text}");
        }
    }

    #[test]
    fn rejects_bad_masks() {
        assert_eq!(
            CidrAllocator::new("10.244.0.0/16", 8).unwrap_err(),
            CidrError::MaskTooShort {
                prefix: 16,
                mask: 8
            }
        );
        assert_eq!(
            CidrAllocator::new("10.0.0.0/8", 30).unwrap_err(),
            CidrError::TooManySubnets {
                prefix: 8,
                mask: 30
            }
        );
    }

    #[test]
    fn hands_out_each_subnet_once_until_full() {
        let mut a = CidrAllocator::new("10.244.0.0/22", 24).unwrap();
        let got: Vec<String> = (0..4).filter_map(|_| a.allocate()).collect();
        assert_eq!(
            got,
            [
                "10.244.0.0/24",
                "10.244.1.0/24",
                "10.244.2.0/24",
                "10.244.3.0/24"
            ]
        );
        assert_eq!(a.allocate(), None);
        a.release("10.244.2.0/24");
        assert_eq!(a.allocate().as_deref(), Some("10.244.2.0/24"));
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn rebuilds_from_existing_nodes() {
        let mut a = CidrAllocator::new("10.244.0.0/16", 24).unwrap();
        assert_eq!(a.occupy("10.244.0.0/24"), Ok(true));
        assert_eq!(a.occupy("10.244.2.0/24"), Ok(true));
        assert_eq!(a.occupy("10.244.2.0/24"), Ok(false));
        assert_eq!(
            a.occupy("10.245.0.0/24"),
            Err(CidrError::Foreign("10.245.0.0/24".into()))
        );
        assert_eq!(
            a.occupy("10.244.0.0/25"),
            Err(CidrError::Foreign("10.244.0.0/25".into()))
        );
        assert!(a.is_used("10.244.2.0/24"));
        assert_eq!(a.allocate().as_deref(), Some("10.244.1.0/24"));
        assert_eq!(a.allocate().as_deref(), Some("10.244.3.0/24"));
        assert_eq!(a.used(), 4);
    }

    #[test]
    fn never_repeats_across_many() {
        let mut a = CidrAllocator::new("10.0.0.0/8", 24).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5000 {
            assert!(seen.insert(a.allocate().unwrap()));
        }
    }
}
