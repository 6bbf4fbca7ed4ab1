//! Keeps the model current without polling: the kernel's rtnetlink
//! notifications (links, addresses, routes of the host's namespace, where
//! every container's veth appears) and Docker's event stream say when
//! something changed; a long-running command re-reads the model then.

use anyhow::{Context, Result};
use futures::StreamExt;
use netlink_sys::{AsyncSocket, SocketAddr};
use tokio::sync::watch;

use super::{docker, engines};

/// rtnetlink multicast groups (`RTMGRP_*` of linux/rtnetlink.h).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;

/// A receiver that is marked changed whenever the wiring may have changed.
pub fn changes() -> Result<watch::Receiver<()>> {
    let (sender, receiver) = watch::channel(());
    let (mut connection, _handle, mut messages) =
        rtnetlink::new_connection().context("cannot open a netlink socket")?;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(
            0,
            RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE,
        ))
        .context("cannot subscribe to rtnetlink notifications")?;
    tokio::spawn(connection);
    let kernel = sender.clone();
    tokio::spawn(async move {
        while messages.next().await.is_some() {
            kernel.send_replace(());
        }
    });
    for socket in docker::sockets(&engines::running()) {
        let sender = sender.clone();
        tokio::spawn(docker::watch_events(socket, move || {
            sender.send_replace(());
        }));
    }
    Ok(receiver)
}
