//! A container's DNS set-up as the kernel and its files hold it: the servers
//! its resolv.conf names and, for Docker's embedded DNS at 127.0.0.11, the
//! NAT rules in the container's own namespace and the process whose sockets
//! answer there (dockerd, although the sockets live in the container).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use serde::Serialize;

use super::{firewall, processes};

/// The address Docker's embedded DNS answers on inside containers.
pub const EMBEDDED_DNS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));

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
    pub owner: SocketOwner,
    /// The rule rewriting 127.0.0.11:53 to this port (`family table chain: rule`).
    pub dnat_rule: Option<String>,
    /// The rule giving answers from this port source port 53.
    pub snat_rule: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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
        let mut embedded: Vec<EmbeddedListener> = processes::listeners_in_namespace_of(pid)
            .into_iter()
            .filter(|l| l.address.ip() == EMBEDDED_DNS)
            .map(|listener| {
                let protocol = listener.protocol.as_str();
                let port = listener.address.port();
                EmbeddedListener {
                    dnat_rule: ruleset
                        .as_ref()
                        .and_then(|r| r.nat_rule_moving(protocol, "dport", 53, port)),
                    snat_rule: ruleset
                        .as_ref()
                        .and_then(|r| r.nat_rule_moving(protocol, "sport", port, 53)),
                    owner: SocketOwner {
                        process: listener.process.clone(),
                        pid: listener.pid,
                    },
                    protocol: listener.protocol,
                    port,
                }
            })
            .collect();
        // A socket held by several processes (a fork shares its fds) is one listener.
        embedded.dedup_by(|a, b| a.protocol == b.protocol && a.port == b.port);
        Ok(Self {
            nameservers,
            embedded,
            ruleset_error,
        })
    }

    pub fn uses_embedded_dns(&self) -> bool {
        self.nameservers.contains(&EMBEDDED_DNS)
    }

    pub fn embedded_listener(&self, protocol: &str) -> Option<&EmbeddedListener> {
        self.embedded.iter().find(|l| l.protocol == protocol)
    }
}
