//! Reading one namespace's links, IPv4 addresses and routes over a netlink
//! socket that was opened inside it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;

use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkExtentMask, LinkFlag, LinkInfo, LinkMessage,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlag, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, IpVersion};

use super::{Interface, LinkKind, Route, RouteKind, Vxlan};

/// A link as the kernel reports it, before its veth peer is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LinkDump {
    pub iface: Interface,
    /// IFLA_LINK: for a veth, the peer's ifindex in the peer's namespace.
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: the peer's namespace as an id local to this
    /// namespace; absent when the peer is in this namespace.
    pub link_netnsid: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct NsDump {
    pub links: Vec<LinkDump>,
    pub routes: Vec<Route>,
    /// This namespace's ids for the other namespaces (netnsid -> inode),
    /// for the ids its links mention.
    pub nsids: HashMap<i32, u32>,
}

/// Dumps everything through `handle`, a connection inside namespace `me`;
/// `all` lists every known namespace with an open fd, to resolve netnsids.
pub(super) async fn dump(handle: Handle, me: u32, all: &[(u32, RawFd)]) -> anyhow::Result<NsDump> {
    // One dump at a time: a netlink socket refuses a second dump (EBUSY)
    // while the first is still being read.
    // Per-link statistics are most of a link dump and never looked at.
    let mut links: Vec<LinkDump> = (handle.link().get())
        .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats])
        .execute()
        .map_ok(link_dump)
        .try_collect()
        .await?;
    // Both families' addresses in one dump.
    let addrs: Vec<AddressMessage> = handle.address().get().execute().try_collect().await?;
    // Table "unspec" in a dump means every table.
    let mut routes: Vec<Route> = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let family: Vec<Route> = handle
            .route()
            .get(version)
            .execute()
            .try_filter_map(|m| async { Ok(route(m)) })
            .try_collect()
            .await?;
        routes.extend(family);
    }

    links.sort_by_key(|l| l.iface.ifindex);
    for msg in addrs {
        if let (Some(addr), Some(link)) = (
            address(&msg),
            links
                .iter_mut()
                .find(|l| l.iface.ifindex == msg.header.index),
        ) {
            link.iface.addresses.push(addr);
        }
    }

    let mut wanted: Vec<i32> = links.iter().filter_map(|l| l.link_netnsid).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut nsids = HashMap::new();
    for &(inode, fd) in all.iter().filter(|(inode, _)| *inode != me) {
        if nsids.len() == wanted.len() {
            break;
        }
        // A failed query only costs the precise answer: peers::resolve
        // falls back to matching veth ends that point at each other.
        if let Ok(Some(id)) = nsid_of(&handle, fd).await
            && wanted.contains(&id)
        {
            nsids.insert(id, inode);
        }
    }
    // A VXLAN device names the namespace of its socket as its link's.
    for link in &mut links {
        if let (Some(vxlan), Some(id)) = (link.iface.vxlan.as_mut(), link.link_netnsid) {
            vxlan.underlay_netns = nsids.get(&id).copied();
        }
    }
    Ok(NsDump {
        links,
        routes,
        nsids,
    })
}

/// Asks which id this namespace gives to the namespace open at `fd`
/// (RTM_GETNSID with NETNSA_FD). The kernel resolves the fd in our own fd
/// table and never assigns a new id for this query.
async fn nsid_of(handle: &Handle, fd: RawFd) -> anyhow::Result<Option<i32>> {
    let mut msg = NsidMessage::default();
    msg.attributes.push(NsidAttribute::Fd(u32::try_from(fd)?));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
    req.header.flags = NLM_F_REQUEST;
    let mut responses = handle.clone().request(req)?;
    let mut id = None;
    while let Some(resp) = responses.next().await {
        match resp.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                id = m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                    _ => None,
                });
            }
            NetlinkPayload::Error(e) => return Err(rtnetlink::Error::NetlinkError(e).into()),
            _ => {}
        }
    }
    Ok(id)
}

fn link_dump(msg: LinkMessage) -> LinkDump {
    let flags = &msg.header.flags;
    let link_layer_type = u16::from(msg.header.link_layer_type);
    let mut info_kind = None;
    let mut dump = LinkDump {
        iface: Interface {
            ifindex: msg.header.index,
            name: String::new(),
            kind: LinkKind::Hardware,
            mac: None,
            mtu: None,
            addresses: Vec::new(),
            up: flags.contains(&LinkFlag::Up),
            lower_up: flags.contains(&LinkFlag::LowerUp),
            master: None,
            peer: None,
            driver: None,
            vxlan: None,
        },
        link: None,
        link_netnsid: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => dump.iface.name = name,
            LinkAttribute::Address(mac) => dump.iface.mac = mac.try_into().ok(),
            LinkAttribute::Controller(master) => dump.iface.master = Some(master),
            LinkAttribute::Link(peer) => dump.link = Some(peer),
            LinkAttribute::NetnsId(id) => dump.link_netnsid = Some(id),
            LinkAttribute::Mtu(mtu) => dump.iface.mtu = Some(mtu),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(InfoKind::Other(kind)) => info_kind = Some(kind),
                        LinkInfo::Kind(kind) => info_kind = Some(kind.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(vxlan)) => {
                            dump.iface.vxlan = Some(vxlan_of(&vxlan));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    dump.iface.kind = LinkKind::from_netlink(info_kind.as_deref(), link_layer_type);
    dump
}

/// A VXLAN device's VNI and port; its underlay is resolved with the
/// namespace ids (`underlay_netns`).
fn vxlan_of(infos: &[InfoVxlan]) -> Vxlan {
    let mut vxlan = Vxlan {
        vni: 0,
        // The IANA port, which the kernel uses when none is given.
        port: 4789,
        underlay_netns: None,
    };
    for info in infos {
        match info {
            InfoVxlan::Id(vni) => vxlan.vni = *vni,
            InfoVxlan::Port(port) => vxlan.port = *port,
            _ => {}
        }
    }
    vxlan
}

fn address(msg: &AddressMessage) -> Option<(IpAddr, u8)> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
    // on point-to-point links, so it only counts when there is no LOCAL
    // (IPv6 addresses have only IFA_ADDRESS).
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let ip = local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    Some((ip, msg.header.prefix_len))
}

fn route(msg: RouteMessage) -> Option<Route> {
    if !matches!(
        msg.header.address_family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) {
        return None;
    }
    // IPv6 dumps cached exceptions too (a learned path MTU): no route of the table.
    if msg.header.flags.contains(&RouteFlag::Cloned) {
        return None;
    }
    let kind = match msg.header.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::Local => RouteKind::Local,
        RouteType::Broadcast => RouteKind::Broadcast,
        RouteType::Multicast => RouteKind::Multicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::Prohibit => RouteKind::Prohibit,
        _ => RouteKind::Other,
    };
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    };
    // RTA_TABLE holds ids above 255 that the header's u8 cannot.
    let mut route = Route {
        table: u32::from(msg.header.table),
        kind,
        destination: None,
        gateway: None,
        device: None,
        source: None,
        ipv6: msg.header.address_family == AddressFamily::Inet6,
    };
    let prefix = msg.header.destination_prefix_length;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => route.table = *t,
            RouteAttribute::Destination(a) if prefix > 0 => {
                route.destination = ip(a).map(|ip| (ip, prefix))
            }
            RouteAttribute::Gateway(a) => route.gateway = ip(a),
            RouteAttribute::Oif(dev) => route.device = Some(*dev),
            RouteAttribute::PrefSource(a) => route.source = ip(a),
            _ => {}
        }
    }
    Some(route)
}
