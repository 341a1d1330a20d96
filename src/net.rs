//! Client addresses: CIDR ranges for `server.trusted_proxies` and the rule
//! that decides which IP a request is attributed to (for throttling and
//! `X-Forwarded-For`). Networks are `ipnet`'s; this module adds only our
//! accepted spellings and the IPv4-mapped rule.

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderMap;
use ipnet::{IpNet, Ipv6Net};

/// Parses `addr/len` or a bare address (a single host: /32 or /128).
/// The network keeps the address as written (`10.1.2.3/16` matches
/// `10.1.0.0/16`'s addresses).
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .ok()
}

/// Whether `network` holds `ip`; an IPv4-mapped IPv6 address is matched
/// as the IPv4 address it carries.
pub fn contains(network: &IpNet, ip: IpAddr) -> bool {
    network.contains(&canonical_ip(ip))
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are treated as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The address a request is attributed to: the socket peer, unless the peer
/// is a trusted proxy, in which case `X-Forwarded-For` is walked from the
/// right past further trusted hops. Malformed entries stop the walk at the
/// last address that is known good, so a client cannot pick its own identity.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical_ip(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical_ip(ip);
                if !is_trusted(client, trusted) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// Whether `ip` is one of the trusted proxies.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|network| contains(network, ip))
}

/// The /64 an IPv6 address belongs to (`2001:db8:1:2::/64`).
pub fn network_64(v6: Ipv6Addr) -> Ipv6Net {
    Ipv6Net::new_assert(v6, 64).trunc()
}

/// The key an address is throttled under: IPv4 as is, IPv6 by its /64,
/// since one client usually holds a whole /64.
pub fn throttle_key(ip: IpAddr) -> String {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => network_64(v6).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> IpNet {
        parse_cidr(s).unwrap_or_else(|| panic!("{s} refused"))
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c = cidr("10.1.0.0/16");
        assert!(contains(&c, ip("10.1.200.3")));
        assert!(!contains(&c, ip("10.2.0.1")));
        assert!(contains(&c, ip("::ffff:10.1.0.9")));
        assert!(contains(&cidr("0.0.0.0/0"), ip("8.8.8.8")));
        assert!(contains(&cidr("::1"), ip("::1")));
        assert!(!contains(&cidr("fd00::/8"), ip("10.0.0.1")));
        for bad in [
            "10.0.0.0/33",
            "nope",
            "10.0.0.0/x",
            "::/129",
            "",
            "10.0.0.0/",
            "/8",
        ] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
    }

    #[test]
    fn cidr_accepts_the_forms_operators_write() {
        // A bare address is one host.
        assert_eq!(cidr("127.0.0.1"), cidr("127.0.0.1/32"));
        assert_eq!(cidr(" ::1 "), cidr("::1/128"));
        assert!(!contains(&cidr("127.0.0.1"), ip("127.0.0.2")));
        // Host bits set: the network still matches its own range.
        let loose = cidr("10.1.2.3/16");
        assert!(contains(&loose, ip("10.1.0.1")));
        assert!(!contains(&loose, ip("10.2.0.1")));
        // IPv6 ranges, and the IPv4-mapped form of a trusted IPv4 host.
        assert!(contains(&cidr("fd00::/8"), ip("fd12::1")));
        assert!(!contains(&cidr("fd00::/8"), ip("fe80::1")));
        assert!(contains(&cidr("192.0.2.7"), ip("::ffff:192.0.2.7")));
        // An IPv4-mapped network is an IPv6 network: it matches no IPv4 peer
        // (the peer is made IPv4 first), as before ipnet.
        assert!(!contains(&cidr("::ffff:10.0.0.0/104"), ip("10.0.0.1")));
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let trusted = [cidr("127.0.0.1")];
        assert_eq!(
            client_ip(ip("9.9.9.9"), &xff("1.2.3.4"), &trusted),
            ip("9.9.9.9")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &xff("1.2.3.4"), &[]),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_through_trusted_hops() {
        let trusted = [cidr("10.0.0.0/8")];
        let peer = ip("10.0.0.1");
        assert_eq!(
            client_ip(peer, &xff("6.6.6.6, 1.2.3.4, 10.0.0.7"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(peer, &xff("garbage, 1.2.3.4"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(client_ip(peer, &xff("1.2.3.4, garbage"), &trusted), peer);
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
    }

    #[test]
    fn ipv6_clients_are_throttled_per_64() {
        assert_eq!(
            throttle_key(ip("2001:db8:1:2:3:4:5:6")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(throttle_key(ip("::ffff:1.2.3.4")), "1.2.3.4");
    }
}
