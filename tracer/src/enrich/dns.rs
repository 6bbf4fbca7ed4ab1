//! A container's DNS set-up as the kernel and its files hold it: the servers
//! its resolv.conf names and, for Docker's embedded DNS at 127.0.0.11, the
//! NAT rules in the container's own namespace and the process whose sockets
//! answer there (dockerd, although the sockets live in the container).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use procfs::net::TcpState;
use procfs::process::{FDTarget, Process};
use serde::Serialize;

use super::{Ruleset, firewall, processes};

/// The address Docker's embedded DNS answers on inside containers.
pub const EMBEDDED_DNS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsSetup {
    /// `nameserver` lines of the container's /etc/resolv.conf.
    pub nameservers: Vec<IpAddr>,
    /// Sockets on 127.0.0.11 inside the container: Docker's embedded DNS.
    pub embedded: Vec<EmbeddedListener>,
    /// Why the rules of the container's namespace could not be read.
    pub ruleset_error: Option<String>,
}

/// One of the embedded DNS's sockets (one for UDP, one for TCP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedListener {
    /// `udp` or `tcp`.
    pub protocol: String,
    /// The real port; the container's NAT rules move port 53 here.
    pub port: u16,
    /// The process holding the socket (found through socket inodes).
    pub owner: Option<SocketOwner>,
    /// The rule rewriting 127.0.0.11:53 to this port (`family table chain: rule`).
    pub dnat_rule: Option<String>,
    /// The rule giving answers from this port source port 53.
    pub snat_rule: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SocketOwner {
    pub process: String,
    pub pid: u32,
}

impl DnsSetup {
    /// Reads the set-up of the container whose main process is `pid`.
    pub fn read(pid: u32) -> Result<Self, String> {
        let nameservers = processes::nameservers(pid)?;
        let netns = format!("/proc/{pid}/ns/net");
        let (ruleset, ruleset_error) = match firewall::read_in(Path::new(&netns)) {
            Ok(ruleset) => (Some(ruleset), None),
            Err(error) => (None, Some(error)),
        };
        let mut embedded = embedded_sockets(pid);
        let owners = socket_owners(embedded.iter().map(|(inode, _)| *inode).collect());
        let embedded = embedded
            .drain(..)
            .map(|(inode, (protocol, port))| EmbeddedListener {
                dnat_rule: ruleset
                    .as_ref()
                    .and_then(|r| rule_moving(r, "dnat", protocol, "dport", 53, port)),
                snat_rule: ruleset
                    .as_ref()
                    .and_then(|r| rule_moving(r, "snat", protocol, "sport", port, 53)),
                protocol: protocol.to_string(),
                port,
                owner: owners.get(&inode).cloned(),
            })
            .collect();
        Ok(Self {
            nameservers,
            embedded,
            ruleset_error,
        })
    }

    pub fn uses_embedded_dns(&self) -> bool {
        self.nameservers.contains(&IpAddr::V4(EMBEDDED_DNS))
    }

    pub fn embedded_listener(&self, protocol: &str) -> Option<&EmbeddedListener> {
        self.embedded.iter().find(|l| l.protocol == protocol)
    }
}

/// Sockets bound to 127.0.0.11 in the namespace of `pid` (UDP, and TCP in
/// LISTEN), by inode, with protocol and port.
fn embedded_sockets(pid: u32) -> Vec<(u64, (&'static str, u16))> {
    let Ok(process) = Process::new(pid as i32) else {
        return Vec::new();
    };
    let on_embedded = |address: std::net::SocketAddr| address.ip() == IpAddr::V4(EMBEDDED_DNS);
    let mut found = Vec::new();
    for entry in process.udp().into_iter().flatten() {
        if on_embedded(entry.local_address) {
            found.push((entry.inode, ("udp", entry.local_address.port())));
        }
    }
    for entry in process.tcp().into_iter().flatten() {
        if entry.state == TcpState::Listen && on_embedded(entry.local_address) {
            found.push((entry.inode, ("tcp", entry.local_address.port())));
        }
    }
    found.sort_by_key(|(_, (protocol, _))| *protocol == "tcp");
    found
}

/// Which process holds each socket inode: a socket belongs to no namespace's
/// process list, only the fd tables of all processes tell.
fn socket_owners(inodes: Vec<u64>) -> HashMap<u64, SocketOwner> {
    let mut owners = HashMap::new();
    if inodes.is_empty() {
        return owners;
    }
    for process in procfs::process::all_processes()
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(fds) = process.fd() else { continue };
        for fd in fds.flatten() {
            if let FDTarget::Socket(inode) = fd.target
                && inodes.contains(&inode)
            {
                owners.insert(
                    inode,
                    SocketOwner {
                        process: process.stat().map(|s| s.comm).unwrap_or_default(),
                        pid: process.pid as u32,
                    },
                );
            }
        }
        if owners.len() == inodes.len() {
            break;
        }
    }
    owners
}

/// The NAT rule (`action` dnat or snat) for `protocol` matching `field`
/// (dport/sport) == `from` whose target names port `to`.
fn rule_moving(
    ruleset: &Ruleset,
    action: &str,
    protocol: &str,
    field: &str,
    from: u16,
    to: u16,
) -> Option<String> {
    let field = format!("{protocol} {field}");
    ruleset
        .chains
        .iter()
        .flat_map(|c| c.rules.iter().map(move |r| (c, r)))
        .find(|(_, r)| {
            r.action.as_deref() == Some(action)
                && r.matches
                    .iter()
                    .any(|m| m.field == field && m.op == "==" && m.value == from.to_string())
                && r.text.ends_with(&format!(":{to}"))
        })
        .map(|(c, r)| format!("{} {} {}: {}", c.family, c.table, c.name, r.text))
}
