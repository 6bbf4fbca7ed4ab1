//! Pairing veth ends across namespaces.
//!
//! A veth reports its peer as IFLA_LINK (an ifindex in the peer's
//! namespace) plus IFLA_LINK_NETNSID, an id that only means something in
//! the reporting namespace; the dump already mapped those ids to inodes
//! with RTM_GETNSID. When that failed, the two ends are matched by pointing
//! at each other, which is only trusted when exactly one pair fits: ifindex
//! numbers repeat across namespaces (every container's eth0 can be 2 or 5).

use super::netlink::{LinkDump, NsDump};
use super::{InterfaceRef, LinkKind};

/// Fills in `peer` of every veth whose other end is in a known namespace.
pub(super) fn resolve(namespaces: &mut [(u32, NsDump)]) {
    let mut resolved = Vec::new();
    for (ns_pos, (inode, dump)) in namespaces.iter().enumerate() {
        for (link_pos, link) in dump.links.iter().enumerate() {
            if let Some(peer) = peer_of(namespaces, *inode, dump, link) {
                resolved.push((ns_pos, link_pos, peer));
            }
        }
    }
    for (ns_pos, link_pos, peer) in resolved {
        namespaces[ns_pos].1.links[link_pos].iface.peer = Some(peer);
    }
}

fn peer_of(all: &[(u32, NsDump)], me: u32, dump: &NsDump, link: &LinkDump) -> Option<InterfaceRef> {
    if !is_veth(link) {
        return None;
    }
    let ifindex = link.link?;
    let netns = match link.link_netnsid {
        None => me,
        Some(id) => match dump.nsids.get(&id) {
            Some(&netns) => netns,
            None => mutual_match(all, me, link)?,
        },
    };
    let (_, peer_dump) = all.iter().find(|(inode, _)| *inode == netns)?;
    peer_dump
        .links
        .iter()
        .any(|l| l.iface.ifindex == ifindex)
        .then_some(InterfaceRef { netns, ifindex })
}

/// The one other namespace holding a veth that points back at `link`.
fn mutual_match(all: &[(u32, NsDump)], me: u32, link: &LinkDump) -> Option<u32> {
    let mut candidates = all.iter().filter(|(inode, dump)| {
        *inode != me
            && dump.links.iter().any(|other| {
                is_veth(other)
                    && other.link_netnsid.is_some()
                    && Some(other.iface.ifindex) == link.link
                    && other.link == Some(link.iface.ifindex)
            })
    });
    let (first, _) = candidates.next()?;
    candidates.next().is_none().then_some(*first)
}

fn is_veth(link: &LinkDump) -> bool {
    link.iface.kind == LinkKind::Veth
}
