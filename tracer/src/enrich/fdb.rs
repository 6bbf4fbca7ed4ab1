//! The bridges' forwarding databases: which MAC address a bridge has learned
//! behind which port. Read when a journey is told, since entries are learned
//! and age out all the time.

use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::{
    AddressFamily,
    neighbour::{NeighbourAttribute, NeighbourState},
};
use serde::{Deserialize, Serialize};

/// One entry of a bridge's forwarding database (`bridge fdb show`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    /// The port (ifindex) the address was learned on.
    pub port: u32,
    /// The bridge (ifindex) the port belongs to.
    pub bridge: u32,
    /// A permanent entry: one of the bridge's own ports' addresses, not learned.
    pub permanent: bool,
}

/// The forwarding databases of the bridges in pkttrace's own (the host's) namespace.
pub async fn host_fdb() -> Result<Vec<FdbEntry>> {
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
            for attribute in &message.attributes {
                match attribute {
                    NeighbourAttribute::LinkLocalAddress(bytes) => {
                        mac = <[u8; 6]>::try_from(bytes.as_slice()).ok()
                    }
                    NeighbourAttribute::Controller(master) => bridge = Some(*master),
                    _ => {}
                }
            }
            Some(FdbEntry {
                mac: mac?,
                port: message.header.ifindex,
                bridge: bridge?,
                permanent: message.header.state == NeighbourState::Permanent,
            })
        })
        .collect())
}
