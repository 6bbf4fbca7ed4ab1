//! The path MTU a namespace learned for a destination: what `ip route get`
//! shows as `cache ... mtu N` after an ICMP fragmentation needed. Read with
//! one RTM_GETROUTE over a netlink socket opened inside the namespace.

use std::{fs, net::IpAddr};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::setns::enter_network_namespace;

use super::Namespace;

/// The learned path MTU to `destination` in `namespace`; None when the
/// route carries none (nothing learned, or it expired) or it cannot be read.
pub fn path_mtu(namespace: &Namespace, destination: IpAddr, host_netns: u32) -> Option<u32> {
    if namespace.inode == host_netns {
        return ask(destination);
    }
    let netns = fs::File::open(namespace.nsfs_path.as_deref()?).ok()?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_network_namespace(&netns).ok()?;
                ask(destination)
            })
            .join()
            .ok()?
    })
}

/// RTM_GETROUTE for `destination` on a socket of this thread's namespace.
fn ask(destination: IpAddr) -> Option<u32> {
    let mut socket = Socket::new(NETLINK_ROUTE).ok()?;
    socket.bind_auto().ok()?;
    socket.connect(&SocketAddr::new(0, 0)).ok()?;
    let mut route = RouteMessage::default();
    let (family, length, address) = match destination {
        IpAddr::V4(v4) => (AddressFamily::Inet, 32, RouteAddress::Inet(v4)),
        IpAddr::V6(v6) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(v6)),
    };
    route.header.address_family = family;
    route.header.destination_prefix_length = length;
    route.attributes.push(RouteAttribute::Destination(address));
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut request = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetRoute(route)),
    );
    request.finalize();
    let mut bytes = vec![0; request.header.length as usize];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0).ok()?;
    let mut answer = vec![0; 8192];
    let length = socket.recv(&mut &mut answer[..], 0).ok()?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer[..length]).ok()?;
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(found)) = reply.payload else {
        return None;
    };
    found
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Metrics(metrics) => metrics.iter().find_map(|metric| match metric {
                RouteMetric::Mtu(mtu) => Some(*mtu),
                _ => None,
            }),
            _ => None,
        })
}
