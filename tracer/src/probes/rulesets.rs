//! Whether a network namespace has a netfilter ruleset, and news of one
//! appearing there: where none is, netfilter does nothing to a packet, so
//! pkttrace neither observes its hooks (a program there would cost every
//! packet through the namespace) nor traces rules there, until the
//! namespace's nf_tables change notifications tell of a table.
//!
//! Also the netlink plumbing the rule tracer shares.

use std::{
    io,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use netlink_packet_core_09::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    nftables::{NfTablesMessage, TableAttribute, TableMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use tokio::io::unix::AsyncFd;

/// pkttrace's trace tables are named `pkttrace_<pid>_<n>`.
pub(super) const TABLE_PREFIX: &str = "pkttrace_";
const NFNLGRP_NFTABLES: u32 = 7;
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Far more than a trace message or an acknowledgement takes.
const DATAGRAM_BUFFER: usize = 64 << 10;
/// The legacy (xtables) IPv4 tables of the reading thread's namespace; the
/// file is missing while the kernel has no legacy table anywhere.
const LEGACY_TABLES: &str = "/proc/thread-self/net/ip_tables_names";

/// For the calling thread's namespace: None when it has a ruleset (an
/// nf_tables table that is not pkttrace's, or a legacy iptables table);
/// else a socket told of every nf_tables change there, for
/// `ruleset_appeared`. `place` names the namespace in errors.
pub(super) fn watch_for_ruleset(place: &str) -> Result<Option<Socket>> {
    let watcher = open_socket(place)?;
    // Subscribed before the tables are listed: a table made in between is
    // either listed or announced.
    watcher
        .add_membership(NFNLGRP_NFTABLES)
        .with_context(|| format!("cannot subscribe to nf_tables changes in {place}"))?;
    let tables = list_tables(&watcher)
        .with_context(|| format!("cannot list the nf_tables tables of {place}"))?;
    let legacy = std::fs::read_to_string(LEGACY_TABLES).unwrap_or_default();
    Ok((tables.is_empty() && legacy.trim().is_empty()).then_some(watcher))
}

/// Whether the notifications `watcher` holds tell of a table that is not
/// pkttrace's (or some were lost, which may have been one); reads them all,
/// without waiting.
pub(super) fn ruleset_appeared(watcher: &Socket) -> io::Result<bool> {
    let mut appeared = false;
    let lost = each_datagram(watcher, |datagram| {
        appeared |= !ruleset_tables(datagram).is_empty()
    })?;
    Ok(appeared || lost)
}

/// Hands `take` every datagram `socket` holds now, without waiting; true
/// when the kernel dropped some for want of room (ENOBUFS).
pub(super) fn each_datagram(socket: &Socket, mut take: impl FnMut(&[u8])) -> io::Result<bool> {
    let mut datagram = Vec::with_capacity(DATAGRAM_BUFFER);
    let mut lost = false;
    loop {
        datagram.clear();
        match socket.recv(&mut datagram, 0) {
            Ok(_) => take(&datagram),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(lost),
            Err(error) if error.raw_os_error() == Some(libc::ENOBUFS) => lost = true,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// A netlink message as the kernel reads it.
pub(super) fn to_bytes(mut message: NetlinkMessage<NetfilterMessage>) -> Vec<u8> {
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// A non-blocking NETLINK_NETFILTER socket in the calling thread's namespace.
pub(super) fn open_socket(place: &str) -> Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER).with_context(|| {
        format!("cannot open a netfilter netlink socket in {place}: the kernel needs nfnetlink for rule tracing")
    })?;
    socket
        .bind_auto()
        .and_then(|_| socket.set_non_blocking(true))
        .context("cannot set up the netfilter netlink socket")?;
    Ok(socket)
}

/// The names of the namespace's nf_tables tables, of every family, except
/// pkttrace's own (of this or another run).
fn list_tables(socket: &Socket) -> Result<Vec<String>> {
    let mut request = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
        NfTablesMessage::GetTable(TableMessage { attributes: vec![] }),
    ));
    request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    socket
        .send_to(&to_bytes(request), &SocketAddr::new(0, 0), 0)
        .context("cannot send the request to the kernel")?;
    let mut tables = Vec::new();
    read_answers(socket, |datagram| {
        tables.extend(ruleset_tables(datagram));
        for message in netlink_messages(datagram) {
            match NetlinkMessage::<NetfilterMessage>::deserialize(message).map(|m| m.payload) {
                Ok(NetlinkPayload::Done(_)) => return Ok(true),
                Ok(NetlinkPayload::Error(answer)) => {
                    if let Some(code) = answer.code {
                        return Err(io::Error::from_raw_os_error(-code.get()).into());
                    }
                }
                _ => {}
            }
        }
        Ok(false)
    })?;
    Ok(tables)
}

/// Hands `take` each datagram the kernel sends on `socket` in answer to a
/// request, until `take` says the answer is complete (true) or fails;
/// gives up after ACK_TIMEOUT.
pub(super) fn read_answers(
    socket: &Socket,
    mut take: impl FnMut(&[u8]) -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + ACK_TIMEOUT;
    let mut datagram = Vec::with_capacity(DATAGRAM_BUFFER);
    loop {
        wait_readable(socket, deadline)?;
        datagram.clear();
        match socket.recv(&mut datagram, 0) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error).context("cannot read the kernel's answer"),
        }
        if take(&datagram)? {
            return Ok(());
        }
    }
}

/// The tables a datagram of NFT_MSG_NEWTABLE messages (a listing or change
/// notifications) names, except pkttrace's own.
pub(super) fn ruleset_tables(datagram: &[u8]) -> Vec<String> {
    netlink_messages(datagram)
        .filter_map(|message| NetlinkMessage::<NetfilterMessage>::deserialize(message).ok())
        .filter_map(|message| match message.payload {
            NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewTable(table)),
                ..
            }) => table
                .attributes
                .into_iter()
                .find_map(|attribute| match attribute {
                    TableAttribute::Name(name) => Some(name),
                    _ => None,
                }),
            _ => None,
        })
        .filter(|name| !name.starts_with(TABLE_PREFIX))
        .collect()
}

fn wait_readable(socket: &Socket, deadline: Instant) -> Result<()> {
    let mut poll = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    // SAFETY: poll reads and writes the one pollfd we pass.
    let ready = unsafe { libc::poll(&mut poll, 1, remaining.as_millis() as libc::c_int) };
    if ready == 0 {
        bail!(
            "the kernel did not answer within {} s",
            ACK_TIMEOUT.as_secs()
        );
    }
    let error = io::Error::last_os_error();
    if ready < 0 && error.kind() != io::ErrorKind::Interrupted {
        return Err(error).context("cannot wait for the kernel's answer");
    }
    Ok(())
}

/// The netlink messages packed in one datagram.
pub(super) fn netlink_messages(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let buffer = NetlinkBuffer::new_checked(rest).ok()?;
        let length = buffer.length() as usize;
        let message = &rest[..length];
        rest = rest.get(length.next_multiple_of(4)..).unwrap_or_default();
        Some(message)
    })
}

/// Registers `socket` with tokio.
pub(super) fn watched(socket: Socket) -> Result<AsyncFd<Socket>> {
    // SAFETY: the AsyncFd owns the socket, so its fd outlives the registration.
    unsafe { AsyncFd::register(socket) }
        .map_err(|e| e.into_parts().1)
        .context("cannot watch a netfilter netlink socket")
}
