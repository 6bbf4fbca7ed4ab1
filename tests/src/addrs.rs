//! /30 blocks of 198.51.100.0/24 for links from the host to things a test
//! made (upstream namespaces, stand-in NICs, far sides and the hosts behind
//! them), handed out under a file lock that every test process shares.

use std::fs::File;
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};

use crate::cmd::{cmd, run};
use crate::netns::parse_cidr;

/// Blocks 0 and 63 stay free for the xtask lab's 198.51.100.1 and .254.
const RESERVED: [usize; 2] = [0, 63];

/// A /30: the host's end `.4n+1` and the other end `.4n+2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) host: Ipv4Addr,
    pub(crate) peer: Ipv4Addr,
}

impl Block {
    fn nth(n: u32) -> Self {
        let base = u32::from(Ipv4Addr::new(198, 51, 100, 0)) + 4 * n;
        Self {
            host: Ipv4Addr::from(base + 1),
            peer: Ipv4Addr::from(base + 2),
        }
    }

    pub(crate) fn host_cidr(&self) -> String {
        format!("{}/30", self.host)
    }

    pub(crate) fn peer_cidr(&self) -> String {
        format!("{}/30", self.peer)
    }

    /// The whole block, as a route's destination.
    pub(crate) fn network_cidr(&self) -> String {
        format!("{}/30", Ipv4Addr::from(u32::from(self.host) & !3))
    }
}

/// Runs `create` with a /30 that touches no address or route more specific
/// than /24 on the host, so that concurrent tests, the `cargo xtask lab`
/// upstream and labs using more specific prefixes never collide. The lock is
/// held until `create` returns: by then the block's host address must be on
/// a host interface, or a route to the block on the host, where the next
/// allocation sees it.
pub(crate) fn with_free_block<T>(create: impl FnOnce(Block) -> Result<T>) -> Result<T> {
    // Named for its first user; runs from older checkouts still take this lock.
    let lock = File::create(std::env::temp_dir().join("pkttrace-upstream.lock"))?;
    lock.lock()
        .context("cannot lock the lab address allocator")?;
    let addrs = run(&mut cmd("ip", ["-4", "-o", "addr", "show"]))?;
    let routes = run(&mut cmd("ip", ["-4", "route", "show"]))?;
    let Some(free) = used_blocks(&addrs, &routes).iter().position(|used| !used) else {
        bail!("no free /30 left in 198.51.100.0/24");
    };
    create(Block::nth(free as u32))
}

/// Which of the 64 blocks `ip -4 -o addr show` and `ip -4 route show` touch,
/// whatever the kind of interface they are on.
fn used_blocks(addrs: &str, routes: &str) -> [bool; 64] {
    let mut used = [false; 64];
    for block in RESERVED {
        used[block] = true;
    }
    let addresses = addrs
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .map(|cidr| cidr.split('/').next().unwrap_or(cidr).to_owned() + "/32");
    let destinations = routes
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|dst| {
            if dst.contains('/') {
                dst.to_owned()
            } else {
                format!("{dst}/32")
            }
        });
    for prefix in addresses.chain(destinations) {
        let Ok((addr, len)) = parse_cidr(&prefix) else {
            continue; // `default`
        };
        let octets = addr.octets();
        if octets[..3] != [198, 51, 100] || len <= 24 {
            continue;
        }
        let first = u32::from(octets[3]) / 4;
        let count = (1u32 << (32 - len)).div_ceil(4);
        for block in first..(first + count).min(64) {
            used[block as usize] = true;
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use super::{Block, used_blocks};

    const ADDRS: &str = "\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
103: pt-up-host    inet 198.51.100.254/24 scope global pt-up-host\\       valid_lft forever preferred_lft forever
112: pt-1f3a-0h    inet 198.51.100.5/30 scope global pt-1f3a-0h\\       valid_lft forever preferred_lft forever
113: pt-1f3a-1    inet 198.51.100.9/30 scope global pt-1f3a-1\\       valid_lft forever preferred_lft forever
";
    const ROUTES: &str = "\
default via 192.0.2.1 dev eth0
198.51.100.0/24 dev pt-up-host proto kernel scope link src 198.51.100.254
198.51.100.16/29 dev pt-1f3a-2 proto kernel scope link src 198.51.100.17 linkdown
198.51.100.33 dev pt-1f3a-3 scope link
198.51.100.40/30 via 198.51.100.6 dev pt-1f3a-4
";

    fn used(addrs: &str, routes: &str) -> Vec<usize> {
        let blocks = used_blocks(addrs, routes);
        (0..64).filter(|&b| blocks[b]).collect()
    }

    #[test]
    fn reserves_the_xtask_lab_blocks() {
        assert_eq!(used("", ""), [0, 63]);
    }

    #[test]
    fn addresses_on_any_interface_and_specific_routes_take_blocks() {
        // A veth (1), an ifb or tap (2), a /29 (4 and 5), a host route (8)
        // and a far side's block behind a router (10); the lab's /24 and .254
        // take no more than the reserved blocks.
        assert_eq!(used(ADDRS, ROUTES), [0, 1, 2, 4, 5, 8, 10, 63]);
    }

    #[test]
    fn a_block_has_its_host_end_first() {
        let block = Block::nth(3);
        assert_eq!(block.host_cidr(), "198.51.100.13/30");
        assert_eq!(block.peer_cidr(), "198.51.100.14/30");
        assert_eq!(block.network_cidr(), "198.51.100.12/30");
    }
}
