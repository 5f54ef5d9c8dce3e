//! Client-IP allow and deny lists per route (SPEC §6.7): checked right
//! after the route match, before authentication, on the client IP as SPEC §3
//! defines it (after `trusted_proxies`). 403 with reason `ip`.
//!
//! Each list is compiled once into sorted, merged, disjoint address ranges
//! (one table for IPv4, one for IPv6), so a check is a binary search, never
//! a scan of the configured CIDRs.

use std::net::IpAddr;

use ipnet::IpNet;

/// A set of addresses: the union of some CIDRs, as disjoint ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    /// Compiles `nets` (IPv4 and IPv6 CIDRs; a bare address is a /32 or
    /// /128) into ranges.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self {
            v4: merged(v4),
            v6: merged(v6),
        }
    }

    /// Whether `ip` is in the set. An IPv4-mapped IPv6 address counts as
    /// the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
            IpAddr::V6(a) => in_ranges(&self.v6, u128::from(a)),
        }
    }

    /// Whether no address is in the set.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// Sorts ranges by start and merges those that overlap or touch.
fn merged<T: Ord + Copy + num::Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if last.1.successor().is_none_or(|next| start <= next) => {
                last.1 = last.1.max(end);
            }
            _ => out.push((start, end)),
        }
    }
    out
}

/// Binary search: the last range starting at or before `x` holds it or
/// none does.
fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let after = ranges.partition_point(|(start, _)| *start <= x);
    after > 0 && ranges[after - 1].1 >= x
}

mod num {
    /// `x + 1`, or `None` at the top of the type.
    pub trait Successor: Sized {
        fn successor(self) -> Option<Self>;
    }
    impl Successor for u32 {
        fn successor(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
    impl Successor for u128 {
        fn successor(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

/// A route's `allow_ips` and `deny_ips`, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRule {
    /// `allow_ips`: when set, the client IP must be in it.
    pub allow: Option<IpSet>,
    /// `deny_ips`: refused even when allowed.
    pub deny: Option<IpSet>,
}

/// 403: the client IP is not allowed on the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRefused;

/// The IP-list stage: deny wins over allow; a route without lists admits
/// every address.
pub fn check(rule: &IpRule, client_ip: IpAddr) -> Result<(), IpRefused> {
    if rule
        .deny
        .as_ref()
        .is_some_and(|deny| deny.contains(client_ip))
    {
        return Err(IpRefused);
    }
    match &rule.allow {
        Some(allow) if !allow.contains(client_ip) => Err(IpRefused),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> IpSet {
        IpSet::new(nets.iter().map(|n| n.parse::<IpNet>().unwrap()))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_merge_and_search() {
        let s = set(&["10.0.0.0/8", "10.1.0.0/16", "11.0.0.0/8", "192.168.1.5/32"]);
        assert_eq!(s.v4.len(), 2, "10/8 and 11/8 touch, 10.1/16 is inside");
        for inside in ["10.0.0.0", "10.255.255.255", "11.3.4.5", "192.168.1.5"] {
            assert!(s.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "9.255.255.255",
            "12.0.0.0",
            "192.168.1.4",
            "192.168.1.6",
            "::1",
        ] {
            assert!(!s.contains(ip(outside)), "{outside}");
        }
        assert!(
            s.contains(ip("::ffff:10.2.3.4")),
            "IPv4-mapped counts as IPv4"
        );
    }

    #[test]
    fn ipv6_and_the_edges_of_the_space() {
        let s = set(&["2001:db8::/32", "0.0.0.0/0", "ffff::/16"]);
        assert!(s.contains(ip("2001:db8:1::5")));
        assert!(!s.contains(ip("2001:db9::1")));
        assert!(s.contains(ip("255.255.255.255")));
        assert!(s.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(IpSet::default().is_empty());
    }

    #[test]
    fn deny_wins_over_allow() {
        let rule = IpRule {
            allow: Some(set(&["10.0.0.0/8"])),
            deny: Some(set(&["10.9.0.0/16"])),
        };
        assert_eq!(check(&rule, ip("10.1.1.1")), Ok(()));
        assert_eq!(check(&rule, ip("10.9.1.1")), Err(IpRefused));
        assert_eq!(check(&rule, ip("8.8.8.8")), Err(IpRefused));
        assert_eq!(check(&IpRule::default(), ip("8.8.8.8")), Ok(()));
    }
}
