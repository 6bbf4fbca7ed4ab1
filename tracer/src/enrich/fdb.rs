//! The forwarding databases of one namespace (`bridge fdb show`): which MAC
//! address a bridge has learned behind which port, and which remote tunnel
//! endpoint a VXLAN device sends a MAC address's frames to. Read when a
//! journey is told, since entries are learned and age out all the time.

use std::{fs::File, net::IpAddr};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::{
    AddressFamily,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
};
use serde::{Deserialize, Serialize};

use crate::setns::enter_network_namespace;

use super::Namespace;

/// One entry of a forwarding database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    /// The namespace of the bridge or device that holds it (0 in
    /// recordings made before pkttrace read other namespaces' databases:
    /// the host's).
    #[serde(default)]
    pub netns: u32,
    pub mac: [u8; 6],
    /// The port (ifindex) the address was learned on; for a VXLAN device's
    /// own entry, that device.
    pub port: u32,
    /// The bridge (ifindex) the port belongs to; None for a device's own
    /// entry (a VXLAN device's).
    pub bridge: Option<u32>,
    /// A permanent entry: one of the bridge's own ports' addresses, or one
    /// an engine wrote (Docker's overlay writes its peers' MACs).
    pub permanent: bool,
    /// A VXLAN device's entry: the remote tunnel endpoint (VTEP) that
    /// frames to `mac` are sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<IpAddr>,
}

/// The forwarding databases of `namespace`'s bridges and VXLAN devices,
/// read over a netlink socket opened inside it (on a thread of its own:
/// entering a namespace moves only the calling thread).
pub fn fdb_of(namespace: &Namespace, host_netns: u32) -> Result<Vec<FdbEntry>> {
    let netns = if namespace.inode == host_netns {
        None
    } else {
        let path = namespace
            .nsfs_path
            .as_deref()
            .with_context(|| format!("cannot enter netns:[{}]", namespace.inode))?;
        Some(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
    };
    let inode = namespace.inode;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Some(netns) = &netns {
                    enter_network_namespace(netns).context("cannot enter the namespace")?;
                }
                tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()?
                    .block_on(read(inode))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread reading the forwarding database died"))?
    })
}

/// Dumps this thread's namespace's forwarding databases.
async fn read(netns: u32) -> Result<Vec<FdbEntry>> {
    let (connection, handle, _) =
        rtnetlink::new_connection().context("cannot open a netlink socket")?;
    let connection = tokio::spawn(connection);
    let mut request = handle.neighbours().get();
    request.message_mut().header.family = AddressFamily::Bridge;
    let messages: Vec<_> = request
        .execute()
        .try_collect()
        .await
        .context("cannot read the bridge forwarding database")?;
    connection.abort();
    Ok(messages
        .into_iter()
        .filter_map(|message| {
            let mut mac = None;
            let mut bridge = None;
            let mut remote = None;
            for attribute in &message.attributes {
                match attribute {
                    NeighbourAttribute::LinkLocalAddress(bytes) => {
                        mac = <[u8; 6]>::try_from(bytes.as_slice()).ok()
                    }
                    NeighbourAttribute::Controller(master) => bridge = Some(*master),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(address)) => {
                        remote = Some(IpAddr::V4(*address))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(address)) => {
                        remote = Some(IpAddr::V6(*address))
                    }
                    // In a bridge family message the crate leaves it as bytes.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                        remote = match bytes.len() {
                            4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(bytes.as_slice())
                                .ok()
                                .map(IpAddr::from),
                            _ => None,
                        }
                    }
                    _ => {}
                }
            }
            // Other devices' own entries (multicast MACs) explain nothing.
            (bridge.is_some() || remote.is_some()).then_some(FdbEntry {
                netns,
                mac: mac?,
                port: message.header.ifindex,
                bridge,
                permanent: message.header.state == NeighbourState::Permanent,
                remote,
            })
        })
        .collect())
}
