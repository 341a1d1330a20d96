//! Network address ranges (`10.0.0.0/8`, `::1/128`, or a bare address) for
//! `server.trusted_proxies`: parsing and membership, nothing else.

use std::net::IpAddr;
use std::str::FromStr;

/// Why a range could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    #[error("not an IP address or CIDR range like \"10.0.0.0/8\"")]
    Address,
    /// The prefix length is not a number within the address size.
    #[error("prefix length must be 0-32 for IPv4 and 0-128 for IPv6")]
    PrefixLength,
    /// Bits are set beyond the prefix, which usually means a typo.
    #[error("host bits are set beyond the prefix length; did you mean the network address?")]
    HostBits,
}

/// One address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// Whether `ip` lies in the range. IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`)
    /// count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_u32(self.prefix_len);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_u128(self.prefix_len);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

/// Whether any range in `ranges` holds `ip`.
pub fn is_trusted(ranges: &[Cidr], ip: IpAddr) -> bool {
    ranges.iter().any(|r| r.contains(ip))
}

fn mask_u32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_u128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let (addr, len) = match text.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| CidrError::Address)?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
                l.parse::<u8>().map_err(|_| CidrError::PrefixLength)?
            }
            Some(_) => return Err(CidrError::PrefixLength),
        };
        if prefix_len > max {
            return Err(CidrError::PrefixLength);
        }
        let host_bits_set = match network {
            IpAddr::V4(v4) => u32::from(v4) & !mask_u32(prefix_len) != 0,
            IpAddr::V6(v6) => u128::from(v6) & !mask_u128(prefix_len) != 0,
        };
        if host_bits_set {
            return Err(CidrError::HostBits);
        }
        Ok(Cidr {
            network,
            prefix_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn membership() {
        assert!(cidr("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!cidr("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(cidr("::1").contains(ip("::1")));
        assert!(cidr("fd00::/8").contains(ip("fd12::1")));
        assert!(!cidr("fd00::/8").contains(ip("10.0.0.1")));
        assert!(cidr("192.168.0.0/16").contains(ip("::ffff:192.168.3.4")));
    }

    #[test]
    fn refusals() {
        assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::PrefixLength));
        assert_eq!("10.0.0.0/".parse::<Cidr>(), Err(CidrError::PrefixLength));
        assert_eq!("10.0.0.0/+8".parse::<Cidr>(), Err(CidrError::PrefixLength));
        assert_eq!("10.0.0.1/8".parse::<Cidr>(), Err(CidrError::HostBits));
        assert_eq!("example.com".parse::<Cidr>(), Err(CidrError::Address));
        assert_eq!("::/129".parse::<Cidr>(), Err(CidrError::PrefixLength));
    }
}
