//! IP addresses of either family: subnet membership, and one word per
//! address for hashing.

use std::net::IpAddr;

/// `address` is in the subnet `network/prefix` (of its own family).
pub fn in_subnet(address: IpAddr, (network, prefix): (IpAddr, u8)) -> bool {
    match (address, network) {
        (IpAddr::V4(address), IpAddr::V4(network)) => {
            let mask = u32::MAX
                .checked_shl(32u32.saturating_sub(u32::from(prefix)))
                .unwrap_or(0);
            u32::from(address) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(address), IpAddr::V6(network)) => {
            let mask = u128::MAX
                .checked_shl(128u32.saturating_sub(u32::from(prefix)))
                .unwrap_or(0);
            u128::from(address) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

/// The address as one word, for hashing: equal addresses give equal words
/// (different ones may share one).
pub fn word(address: IpAddr) -> u64 {
    match address {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            (bits as u64) ^ ((bits >> 64) as u64) ^ (1 << 63)
        }
    }
}

/// What the header's life counter is called in `address`'s family, long and
/// short: IPv4's time to live (TTL), IPv6's hop limit.
pub fn lifetime_words(address: IpAddr) -> (&'static str, &'static str) {
    if address.is_ipv6() {
        ("hop limit", "hop limit")
    } else {
        ("time to live", "TTL")
    }
}

/// How a neighbour's MAC address is found in `address`'s family, and what
/// answers: ARP and its reply, or neighbour discovery and its advertisement.
pub fn neighbour_words(address: IpAddr) -> (&'static str, &'static str) {
    if address.is_ipv6() {
        ("neighbour discovery", "neighbour advertisement")
    } else {
        ("ARP", "ARP reply")
    }
}

/// An IPv6 link-local address (fe80::/10): it means something on one link only.
pub fn is_link_local(address: IpAddr) -> bool {
    matches!(address, IpAddr::V6(v6) if v6.is_unicast_link_local())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_of_both_families() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_subnet(v4("172.17.0.2"), (v4("172.17.0.0"), 16)));
        assert!(!in_subnet(v4("172.18.0.2"), (v4("172.17.0.0"), 16)));
        assert!(in_subnet(v4("fd00:acc:19::2"), (v4("fd00:acc:19::"), 64)));
        assert!(!in_subnet(v4("fd00:acc:20::2"), (v4("fd00:acc:19::"), 64)));
        assert!(
            in_subnet(v4("10.0.0.1"), (v4("0.0.0.0"), 0)),
            "the default route"
        );
        assert!(
            !in_subnet(v4("fd00::1"), (v4("0.0.0.0"), 0)),
            "not across families"
        );
    }
}
