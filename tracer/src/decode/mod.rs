//! Event decoding: raw `PacketEvent`s from the kernel become typed events:
//! drop reasons, code locations, conntrack, route results and MAC addresses
//! are typed values (`values`), decided once here. Pure data in, data out;
//! the kernel-specific tables are read once by `KernelNames`.

pub mod dns;
mod kernel_names;
pub mod nftrace;
mod values;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use tracer_common::{
    ETH_P_ARP, ETH_P_IPV6, IN_TASK, NOT_IN_TASK, PacketEvent, Probe, ROUTE_FOR_ANSWER,
    ROUTE_FOR_PACKET,
};

pub use dns::DnsMessage;
pub use kernel_names::KernelNames;
pub use values::{
    CodeSite, Conntrack, CtDirection, CtState, DropReason, Mac, RouteFor, RouteResult, SiteRole,
};

/// A netfilter hook, named as iptables names its chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    fn from_kernel(number: u8) -> Option<Self> {
        Some(match number {
            0 => Self::Prerouting,
            1 => Self::Input,
            2 => Self::Forward,
            3 => Self::Output,
            4 => Self::Postrouting,
            _ => return None,
        })
    }

    /// The hook nftables names in a base chain (`prerouting`, ...).
    pub fn from_nft_name(name: &str) -> Option<Self> {
        Some(match name {
            "prerouting" => Self::Prerouting,
            "input" => Self::Input,
            "forward" => Self::Forward,
            "output" => Self::Output,
            "postrouting" => Self::Postrouting,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Prerouting => "PREROUTING",
            Self::Input => "INPUT",
            Self::Forward => "FORWARD",
            Self::Output => "OUTPUT",
            Self::Postrouting => "POSTROUTING",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which side of the hook's NAT priority the observation was made on:
/// `Before` is at the hook's very entry (before raw, conntrack, mangle and
/// NAT), `After` just after its NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatSide {
    Before,
    After,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "probe", rename_all = "snake_case")]
pub enum EventKind {
    /// Handed to a device for transmit; the frame's destination MAC says
    /// which neighbour it goes to (None on a device without Ethernet).
    Transmit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac_dst: Option<Mac>,
    },
    /// Taken in by a device's receive path.
    Receive {
        mac_src: Option<Mac>,
        mac_dst: Option<Mac>,
    },
    Netfilter {
        hook: Hook,
        side: NatSide,
        out_ifindex: u32,
    },
    Drop {
        reason: DropReason,
        location: CodeSite,
    },
    /// Freed normally.
    Consume { location: CodeSite },
    /// Read from a socket by a process.
    SocketRead,
    /// A TCP segment's payload, copied by the TC program of a traced
    /// namespace's device (it only carries the DNS message).
    TcpPayload,
    /// A routing table lookup: the flow asked about is the event's packet,
    /// and `route_for` says whose packet it was when the kernel's evidence
    /// ties it to one (the event's `skb`).
    Route {
        table: u32,
        result: RouteResult,
        out_ifindex: u32,
        gateway: Option<IpAddr>,
        #[serde(default, skip_serializing_if = "RouteFor::is_sender")]
        route_for: RouteFor,
    },
}

impl EventKind {
    /// ARP freeing the copy of a waiting packet it made for one who-has.
    pub fn is_neighbour_solicit(&self) -> bool {
        matches!(self, Self::Consume { location } if location.role == SiteRole::NeighbourSolicit)
    }

    /// The kernel returning the memory of a skb a socket reader finished
    /// with (`SiteRole::DeferredFree`): not a hop of the packet.
    pub fn is_deferred_free(&self) -> bool {
        matches!(self, Self::Consume { location } if location.role == SiteRole::DeferredFree)
    }

    /// The packet enters the local stack of its namespace (INPUT's entry).
    pub fn enters_local_stack(&self) -> bool {
        matches!(
            self,
            Self::Netfilter {
                hook: Hook::Input,
                side: NatSide::Before,
                ..
            }
        )
    }

    /// The skb is gone after this: freed (dropped or consumed), or handed to
    /// a process, whose read frees it without a trace of its own.
    pub fn ends_skb(&self) -> bool {
        matches!(
            self,
            Self::Drop { .. } | Self::Consume { .. } | Self::SocketRead
        )
    }

    /// A route lookup that found no way on.
    pub fn is_failed_route(&self) -> bool {
        matches!(self, Self::Route { result, .. } if !result.found())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum Transport {
    Icmp {
        icmp_type: u8,
        #[serde(default)]
        code: u8,
        id: u16,
        seq: u16,
        /// An error's quoted packet: which packet it is about.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quoted: Option<Quoted>,
        /// ICMPv6 (its types are numbered otherwise).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        v6: bool,
    },
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        /// Sequence and acknowledgement numbers (0 in recordings made
        /// before pkttrace read them).
        #[serde(default)]
        seq: u32,
        #[serde(default)]
        ack: u32,
        /// Bytes of data (unknown in recordings made before pkttrace read it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<u16>,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// Neighbour resolution (1 = who-has request, 2 = is-at reply): ARP,
    /// or for IPv6 addresses neighbour discovery's solicitation and
    /// advertisement (ICMPv6 135 and 136), which the programs capture alike.
    Arp {
        operation: u16,
        sender_mac: Mac,
        target_mac: Mac,
    },
    Other {
        number: u8,
    },
}

impl Transport {
    /// An ICMP or ICMPv6 message as type and code in ICMP's (IPv4's)
    /// numbering: ICMPv6's echo and error messages have IPv4 twins, so one
    /// reading serves both families. None for other transports, and for
    /// ICMPv6 messages without a twin (neighbour discovery, routers').
    pub fn icmp(self) -> Option<(u8, u8)> {
        let Self::Icmp {
            icmp_type,
            code,
            v6,
            ..
        } = self
        else {
            return None;
        };
        if !v6 {
            return Some((icmp_type, code));
        }
        Some(match (icmp_type, code) {
            (128, _) => (8, 0),
            (129, _) => (0, 0),
            // Destination unreachable: no route, administratively
            // prohibited, beyond the source's scope, address unreachable,
            // port unreachable, failed policy, a reject route.
            (1, 0) => (3, 0),
            (1, 1 | 5 | 6) => (3, 13),
            (1, 2 | 3) => (3, 1),
            (1, 4) => (3, 3),
            (1, code) => (3, code),
            // Packet too big: fragmentation needed, the MTU alongside.
            (2, _) => (3, 4),
            (3, code) => (11, code),
            (4, _) => (12, 0),
            _ => return None,
        })
    }

    pub fn protocol_number(self) -> u8 {
        match self {
            Self::Icmp { v6: false, .. } => IPPROTO_ICMP,
            Self::Icmp { v6: true, .. } => IPPROTO_ICMPV6,
            Self::Tcp { .. } => 6,
            Self::Udp { .. } => 17,
            // Not an IP protocol; 0 keeps it apart from the others.
            Self::Arp { .. } => 0,
            Self::Other { number } => number,
        }
    }

    /// A TCP segment with no data, SYN or FIN (a bare ACK, a RST): nothing
    /// answers it.
    pub fn asks_for_no_answer(self) -> bool {
        matches!(self, Self::Tcp { flags, payload: Some(0), .. } if flags & (TCP_SYN | TCP_FIN) == 0)
    }

    /// TCP: the sequence number an acknowledgement of this whole segment
    /// carries (SYN and FIN count one each); None when its length is unknown.
    pub fn tcp_end(self) -> Option<u32> {
        let Self::Tcp {
            flags,
            seq,
            payload: Some(payload),
            ..
        } = self
        else {
            return None;
        };
        let flagged = u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
        Some(seq.wrapping_add(u32::from(payload)).wrapping_add(flagged))
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The packet an ICMP error quotes, as the error carries it (after any NAT
/// the kernel applied to the error on its way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quoted {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// TCP/UDP ports; ICMP echo identifier and sequence number.
    pub sport: u16,
    pub dport: u16,
    pub ip_id: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport,
    pub ip_id: u16,
    pub length: u16,
    /// Time to live as it was where it was seen (0 when unknown: a route
    /// lookup, or a recording made before pkttrace read it).
    #[serde(default)]
    pub ttl: u8,
    /// The don't-fragment bit: a router may not split it to fit a smaller link.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dont_fragment: bool,
    /// Where it was seen inside a VXLAN tunnel: the outer datagram that
    /// carried it there (the fields above are the inner packet's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
}

/// The outer IPv4 and UDP headers and the VXLAN network identifier of a
/// packet that travels encapsulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Tunnel {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The outer IPv4 header's id.
    #[serde(default)]
    pub ip_id: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time_ns: u64,
    pub skb: u64,
    pub kind: EventKind,
    pub netns: u32,
    /// The current task's namespace (see `process`).
    pub task_netns: u32,
    pub ifindex: u32,
    /// The device name as the kernel had it (routing: the result device).
    pub ifname: CompactString,
    pub packet: Packet,
    pub conntrack: Option<Conntrack>,
    /// The current task; meaningful for sends and socket reads only.
    pub pid: u32,
    /// The current thread's id inside its own pid namespace (0 when unknown).
    #[serde(default)]
    pub ns_pid: u32,
    /// The event fired in the current task's own context (its system call),
    /// not while the CPU served a softirq or interrupt; None in recordings
    /// made before pkttrace knew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_task: Option<bool>,
    pub comm: CompactString,
    /// The DNS message the packet carries, when its payload was captured
    /// (boxed: most events carry none, and events are moved often).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Box<DnsMessage>>,
    /// The packet's first bytes from its network header on, as they were
    /// here (`--pcap`): hex in JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<PacketBytes>,
}

/// Bytes of a packet, written as hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketBytes(#[serde(with = "hex::serde")] pub Vec<u8>);

impl Event {
    /// The process behind the event, when there is one: the current task only
    /// counts when the event happened in its own context (a softirq runs on
    /// whatever task the CPU was on).
    pub fn process(&self) -> Option<(&str, u32)> {
        // Seen in the task's own context, the task is the one, wherever it
        // lives (dockerd uses sockets it opened in containers); unknown, it is
        // only when it lives where the packet is.
        let the_task = match self.in_task {
            Some(in_task) => in_task,
            None => self.task_netns == self.netns,
        };
        (the_task && self.pid != 0 && !self.comm.is_empty())
            .then_some((self.comm.as_str(), self.pid))
    }
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// An address as the programs hold it: 16 bytes, an IPv4 one v4-mapped
/// (`ipv6` false: an IPv4 packet's, whose all-zero address is 0.0.0.0).
fn address(bytes: [u8; 16], ipv6: bool) -> IpAddr {
    let address = Ipv6Addr::from(bytes);
    match address.to_ipv4_mapped() {
        Some(v4) if !ipv6 => IpAddr::V4(v4),
        _ if !ipv6 && address.is_unspecified() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        _ => IpAddr::V6(address),
    }
}

/// A kernel name (device, task) up to its NUL; names this short live
/// inline in a `CompactString`, so decoding allocates nothing for them.
fn c_string(bytes: &[u8]) -> CompactString {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    CompactString::from_utf8_lossy(&bytes[..end])
}

/// The routing tables `main` and `local` (a hit in local is one of the
/// namespace's own addresses).
pub const MAIN_TABLE: u32 = 254;
pub const LOCAL_TABLE: u32 = 255;

/// The table the route found lives in. While a namespace has no policy
/// rules the kernel keeps the local table merged into main and reports a
/// hit on a local route (an address of the namespace) as main's; the next
/// hop's scope still tells it (`RouteResult::Local`).
fn route_table(raw: &PacketEvent, result: RouteResult) -> u32 {
    if result == RouteResult::Local && raw.reason_or_table == MAIN_TABLE {
        LOCAL_TABLE
    } else {
        raw.reason_or_table
    }
}

/// Turns one raw event (and the payload it carried, if any) into a typed
/// one; `None` for an event this version does not know (a newer object, say).
pub fn decode(raw: &PacketEvent, payload: Option<&[u8]>, names: &KernelNames) -> Option<Event> {
    let probe = Probe::from_u8(raw.probe)?;
    // An ARP event's addresses are the message's, not the frame's; a
    // device without Ethernet has none.
    let frame_macs = raw.has_mac == 1 && raw.ether_type != ETH_P_ARP;
    let ipv6 = raw.ether_type == ETH_P_IPV6;
    let kind = match probe {
        Probe::DevQueue => EventKind::Transmit {
            mac_dst: frame_macs.then_some(Mac(raw.mac_dst)),
        },
        Probe::Receive => EventKind::Receive {
            mac_src: frame_macs.then_some(Mac(raw.mac_src)),
            mac_dst: frame_macs.then_some(Mac(raw.mac_dst)),
        },
        Probe::NetfilterEntry | Probe::NetfilterAfterNat => EventKind::Netfilter {
            hook: Hook::from_kernel(raw.nf_hook)?,
            side: if probe == Probe::NetfilterEntry {
                NatSide::Before
            } else {
                NatSide::After
            },
            out_ifindex: raw.out_ifindex,
        },
        Probe::Drop => EventKind::Drop {
            reason: names.drop_reason(raw.reason_or_table),
            location: names.site(raw.location),
        },
        Probe::Consume => EventKind::Consume {
            location: names.site(raw.location),
        },
        // A datagram read is a socket read whose packet the assembler finds.
        Probe::SocketRead | Probe::DatagramRead => EventKind::SocketRead,
        Probe::TcpPayload => EventKind::TcpPayload,
        Probe::FibLookup | Probe::Fib6Lookup => {
            let result = RouteResult::from_lookup(raw.fib_error, raw.nexthop_scope);
            EventKind::Route {
                table: route_table(raw, result),
                result,
                out_ifindex: raw.out_ifindex,
                gateway: Some(address(raw.gateway, ipv6)).filter(|g| !g.is_unspecified()),
                route_for: match raw.route_for {
                    ROUTE_FOR_PACKET => RouteFor::Packet,
                    ROUTE_FOR_ANSWER => RouteFor::AnswerTo,
                    _ => RouteFor::Sender,
                },
            }
        }
    };
    let transport = match raw.protocol {
        _ if raw.ether_type == ETH_P_ARP => Transport::Arp {
            operation: raw.sport,
            sender_mac: Mac(raw.mac_src),
            target_mac: Mac(raw.mac_dst),
        },
        IPPROTO_ICMP | IPPROTO_ICMPV6 => Transport::Icmp {
            icmp_type: raw.icmp_type,
            code: raw.icmp_code,
            id: raw.sport,
            seq: raw.dport,
            quoted: (raw.quoted.protocol != 0).then(|| Quoted {
                src: address(raw.quoted.saddr, ipv6),
                dst: address(raw.quoted.daddr, ipv6),
                protocol: raw.quoted.protocol,
                sport: raw.quoted.sport,
                dport: raw.quoted.dport,
                ip_id: raw.quoted.ip_id,
            }),
            v6: raw.protocol == IPPROTO_ICMPV6,
        },
        6 => Transport::Tcp {
            sport: raw.sport,
            dport: raw.dport,
            flags: raw.tcp_flags,
            seq: raw.tcp_seq,
            ack: raw.tcp_ack,
            payload: Some(raw.tcp_payload_len),
        },
        17 => Transport::Udp {
            sport: raw.sport,
            dport: raw.dport,
        },
        number => Transport::Other { number },
    };
    // A deferred free's device and namespace are whatever its CPU was doing.
    let (netns, ifindex, ifname) = if kind.is_deferred_free() {
        (0, 0, CompactString::default())
    } else {
        (raw.netns, raw.ifindex, c_string(&raw.ifname))
    };
    Some(Event {
        time_ns: raw.timestamp_ns,
        skb: raw.skb,
        kind,
        netns,
        task_netns: raw.task_netns,
        ifindex,
        ifname,
        packet: Packet {
            src: address(raw.saddr, ipv6),
            dst: address(raw.daddr, ipv6),
            transport,
            ip_id: raw.ip_id,
            length: raw.ip_len,
            ttl: raw.ttl,
            dont_fragment: raw.dont_fragment != 0,
            tunnel: (raw.tunnel.dport != 0).then(|| Tunnel {
                src: Ipv4Addr::from(raw.tunnel.saddr),
                dst: Ipv4Addr::from(raw.tunnel.daddr),
                sport: raw.tunnel.sport,
                dport: raw.tunnel.dport,
                vni: raw.tunnel.vni,
                ip_id: raw.tunnel.ip_id,
            }),
        },
        conntrack: (raw.conntrack != 0)
            .then(|| Conntrack::from_kernel(raw.conntrack, raw.ctinfo))
            .flatten(),
        pid: raw.pid,
        ns_pid: raw.ns_pid,
        in_task: match raw.in_task {
            IN_TASK => Some(true),
            NOT_IN_TASK => Some(false),
            _ => None,
        },
        comm: c_string(&raw.comm),
        dns: payload.and_then(|bytes| {
            DnsMessage::decode(bytes, matches!(transport, Transport::Tcp { .. })).map(Box::new)
        }),
        headers: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> KernelNames {
        KernelNames::from_parts(
            vec![(2, "NOT_SPECIFIED".into()), (12, "NETFILTER_DROP".into())],
            vec![
                (0xffff_ffff_8100_0000, "nf_hook_slow".into()),
                (0xffff_ffff_8100_0400, "ip_forward".into()),
                (0xffff_ffff_8100_0800, "neigh_probe".into()),
                (0xffff_ffff_8100_0900, "neigh_update".into()),
            ],
        )
    }

    #[test]
    fn a_functions_extent_ends_where_the_next_one_starts() {
        let names = names();
        assert!(names.symbols_ready());
        assert_eq!(
            names.function_extent("nf_hook_slow"),
            Some((0xffff_ffff_8100_0000, 0x400))
        );
        // The last one's end is unknown, an unknown one has none.
        assert_eq!(names.function_extent("neigh_update"), None);
        assert_eq!(names.function_extent("skb_defer_free_flush"), None);
    }

    /// A netfilter observation as the kernel sent it (values from a real run).
    fn raw_netfilter_event() -> PacketEvent {
        let mut raw = PacketEvent {
            probe: Probe::NetfilterAfterNat as u8,
            skb: 0xffff888109e34d00,
            netns: 4026531833,
            ifindex: 6,
            saddr: Ipv4Addr::new(198, 51, 100, 130).to_ipv6_mapped().octets(),
            daddr: Ipv4Addr::new(198, 51, 100, 129).to_ipv6_mapped().octets(),
            protocol: 1,
            icmp_type: 8,
            sport: 18,
            dport: 3,
            ip_id: 6501,
            ip_len: 84,
            ttl: 63,
            dont_fragment: 1,
            nf_hook: 4,
            conntrack: 0xffff88812981cd00,
            ctinfo: 2,
            ..PacketEvent::default()
        };
        raw.ifname[..11].copy_from_slice(b"dev-up-host");
        raw.ifname[11..14].copy_from_slice(b"\0xy"); // bytes after the NUL are stale kernel memory
        raw
    }

    #[test]
    fn decodes_a_netfilter_observation() {
        let event = decode(&raw_netfilter_event(), None, &names()).unwrap();
        assert_eq!(event.ifname, "dev-up-host");
        assert_eq!(
            event.kind,
            EventKind::Netfilter {
                hook: Hook::Postrouting,
                side: NatSide::After,
                out_ifindex: 0
            }
        );
        assert_eq!(event.packet.src, IpAddr::from([198, 51, 100, 130]));
        assert_eq!(
            event.packet.transport,
            Transport::Icmp {
                icmp_type: 8,
                code: 0,
                id: 18,
                seq: 3,
                quoted: None,
                v6: false,
            }
        );
        assert_eq!((event.packet.ttl, event.packet.dont_fragment), (63, true));
        let conntrack = event.conntrack.unwrap();
        assert_eq!(
            (conntrack.state, conntrack.direction),
            (CtState::New, CtDirection::Original)
        );
    }

    #[test]
    fn a_code_address_is_named_once_and_typed_by_the_extent_it_lies_in() {
        let names = names();
        let forwarding = names.site(0xffff_ffff_8100_0412);
        assert_eq!(&*forwarding.name, "ip_forward+0x12");
        assert_eq!(forwarding.role, SiteRole::Forwarding);
        assert_eq!(forwarding.function(), "ip_forward");
        assert_eq!(
            names.site(0xffff_ffff_8100_0812).role,
            SiteRole::NeighbourSolicit
        );
        let elsewhere = names.site(0xffff_ffff_8100_0000);
        assert_eq!(
            (&*elsewhere.name, elsewhere.role),
            ("nf_hook_slow", SiteRole::Other)
        );
        assert_eq!(&*names.site(0x10).name, "0x10");
    }

    #[test]
    fn a_drop_is_typed_by_the_name_the_kernel_gives_its_reason() {
        let mut raw = raw_netfilter_event();
        raw.probe = Probe::Drop as u8;
        raw.reason_or_table = 12;
        raw.location = 0xffff_ffff_8100_0012;
        let event = decode(&raw, None, &names()).unwrap();
        let EventKind::Drop { reason, location } = event.kind else {
            panic!("{:?}", event.kind)
        };
        assert_eq!(reason, DropReason::NetfilterDrop);
        assert_eq!(&*location.name, "nf_hook_slow+0x12");
        raw.reason_or_table = 999;
        let EventKind::Drop { reason, .. } = decode(&raw, None, &names()).unwrap().kind else {
            panic!()
        };
        assert_eq!(reason.kernel_name(), "reason 999");
    }

    #[test]
    fn arp_messages_keep_their_own_addresses() {
        let raw = PacketEvent {
            probe: Probe::Receive as u8,
            ether_type: ETH_P_ARP,
            saddr: Ipv4Addr::new(172, 17, 0, 3).to_ipv6_mapped().octets(),
            daddr: Ipv4Addr::new(172, 17, 0, 1).to_ipv6_mapped().octets(),
            sport: 1,
            mac_src: [0x02, 0x42, 0xac, 0x11, 0x00, 0x03],
            has_mac: 1,
            ..PacketEvent::default()
        };
        let event = decode(&raw, None, &names()).unwrap();
        assert_eq!(
            event.kind,
            EventKind::Receive {
                mac_src: None,
                mac_dst: None
            },
            "not the frame's addresses"
        );
        assert_eq!(
            event.packet.transport,
            Transport::Arp {
                operation: 1,
                sender_mac: Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0x03]),
                target_mac: Mac::default()
            }
        );
        assert_eq!(event.packet.dst, IpAddr::from([172, 17, 0, 1]), "who has");
    }

    #[test]
    fn a_frame_without_ethernet_addresses_has_none() {
        let mut raw = raw_netfilter_event();
        raw.probe = Probe::DevQueue as u8;
        raw.mac_dst = [0x45, 0, 0, 0x24, 1, 0x18];
        raw.has_mac = 0;
        let event = decode(&raw, None, &names()).unwrap();
        assert_eq!(event.kind, EventKind::Transmit { mac_dst: None });
    }

    #[test]
    fn unknown_probe_or_hook_is_skipped() {
        let mut raw = raw_netfilter_event();
        raw.nf_hook = 9;
        assert!(decode(&raw, None, &names()).is_none());
        raw.probe = 42;
        assert!(decode(&raw, None, &names()).is_none());
    }

    fn lookup(table: u32, nexthop_scope: u8, fib_error: i32) -> PacketEvent {
        PacketEvent {
            probe: Probe::FibLookup as u8,
            daddr: Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped().octets(),
            reason_or_table: table,
            nexthop_scope,
            fib_error,
            ..PacketEvent::default()
        }
    }

    fn route(raw: PacketEvent) -> (u32, RouteResult, RouteFor) {
        match decode(&raw, None, &names()).unwrap().kind {
            EventKind::Route {
                table,
                result,
                route_for,
                ..
            } => (table, result, route_for),
            kind => panic!("{kind:?}"),
        }
    }

    #[test]
    fn a_local_route_found_in_the_merged_main_table_is_the_local_tables() {
        // With the local table merged into main, next hop scopes as the
        // kernel sets them: nowhere (255) for a local address, host (254)
        // for a directly connected route, link (253) for a gateway.
        let table = |table, scope| route(lookup(table, scope, 0)).0;
        assert_eq!(table(MAIN_TABLE, 255), LOCAL_TABLE);
        assert_eq!(table(MAIN_TABLE, 254), MAIN_TABLE, "directly connected");
        assert_eq!(table(MAIN_TABLE, 253), MAIN_TABLE, "via a gateway");
        assert_eq!(table(LOCAL_TABLE, 255), LOCAL_TABLE, "tables apart");
        assert_eq!(table(100, 255), 100, "a policy table keeps its id");
    }

    #[test]
    fn a_failed_lookup_keeps_its_table_and_says_whose_packet_it_was() {
        let mut raw = lookup(MAIN_TABLE, 0, -11);
        raw.route_for = ROUTE_FOR_ANSWER;
        assert_eq!(
            route(raw),
            (MAIN_TABLE, RouteResult::NoMatch, RouteFor::AnswerTo)
        );
        raw.route_for = ROUTE_FOR_PACKET;
        raw.fib_error = -113;
        assert_eq!(
            route(raw),
            (MAIN_TABLE, RouteResult::Unreachable, RouteFor::Packet)
        );
    }
}
