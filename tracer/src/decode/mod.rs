//! Event decoding: raw `PacketEvent`s from the kernel become typed events with
//! names for drop reasons and code locations. Pure data in, data out; the
//! kernel-specific tables are read once by `KernelNames`.

pub mod dns;
mod kernel_names;
pub mod nftrace;

use std::{net::Ipv4Addr, sync::Arc};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use tracer_common::{ETH_P_ARP, IN_TASK, NOT_IN_TASK, PacketEvent, Probe};

pub use dns::DnsMessage;
pub use kernel_names::KernelNames;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// which neighbour it goes to.
    Transmit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac_dst: Option<CompactString>,
    },
    /// Taken in by a device's receive path.
    Receive {
        mac_src: Option<CompactString>,
        mac_dst: Option<CompactString>,
    },
    Netfilter {
        hook: Hook,
        side: NatSide,
        out_ifindex: u32,
    },
    /// Names are shared (`KernelNames` keeps one of each): no allocation per event.
    Drop {
        reason: Arc<str>,
        location: Arc<str>,
    },
    /// Freed normally.
    Consume { location: Arc<str> },
    /// Read from a socket by a process.
    SocketRead,
    /// A TCP segment's payload, copied by the TC program of a traced
    /// namespace's device (it only carries the DNS message).
    TcpPayload,
    /// A routing table lookup (not tied to one packet pointer).
    Route {
        table: u32,
        error: i32,
        out_ifindex: u32,
        gateway: Option<Ipv4Addr>,
    },
}

impl EventKind {
    /// ARP freeing the copy of a waiting packet it made for one who-has.
    pub fn is_neighbour_solicit(&self) -> bool {
        matches!(self, Self::Consume { location } if frees_a_neighbour_solicit(location))
    }

    /// The kernel returning the memory of a skb a socket reader finished
    /// with (see `is_deferred_free`): not a hop of the packet.
    pub fn is_deferred_free(&self) -> bool {
        matches!(self, Self::Consume { location } if is_deferred_free(location))
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
    /// Not IP: neighbour resolution (1 = who-has request, 2 = is-at reply).
    Arp {
        operation: u16,
        sender_mac: [u8; 6],
        target_mac: [u8; 6],
    },
    Other {
        number: u8,
    },
}

impl Transport {
    pub fn protocol_number(self) -> u8 {
        match self {
            Self::Icmp { .. } => 1,
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
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// TCP/UDP ports; ICMP echo identifier and sequence number.
    pub sport: u16,
    pub dport: u16,
    pub ip_id: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub transport: Transport,
    pub ip_id: u16,
    pub length: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conntrack {
    /// The kernel address of the conntrack entry: one connection, both directions.
    pub id: u64,
    /// `enum ip_conntrack_info`: 0 established, 1 related, 2 new, 3+ reply direction.
    pub info: u8,
}

impl Conntrack {
    pub fn state(self) -> &'static str {
        match self.info {
            0 => "ESTABLISHED",
            1 => "RELATED",
            2 => "NEW",
            3 => "ESTABLISHED, reply direction",
            4 => "RELATED, reply direction",
            _ => "UNKNOWN",
        }
    }
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

/// Where ARP frees the copy of a waiting packet it made for one who-has: the
/// first request, and each retry from the neighbour's timer.
pub fn frees_a_neighbour_solicit(location: &str) -> bool {
    let function = location.split('+').next().unwrap_or(location);
    ["__neigh_event_send", "neigh_probe", "neigh_timer_handler"].contains(&function)
}

/// A socket reader on another CPU than the one that allocated the skb hands
/// it back to that CPU (`skb_attempt_defer_free`), which frees it whenever it
/// next runs its network softirq: maybe before the read is reported, maybe
/// seconds later, in whatever task it interrupted. The free says that a
/// reader consumed the packet, and nothing about where the packet was.
pub fn is_deferred_free(location: &str) -> bool {
    location.split('+').next() == Some(DEFERRED_FREES)
}

/// The kernel function that makes the deferred frees.
pub const DEFERRED_FREES: &str = "skb_defer_free_flush";

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
/// `nhc_scope` of a local route's next hop (`RT_SCOPE_NOWHERE`).
const LOCAL_NEXTHOP_SCOPE: u8 = 255;

/// The table the route found lives in. While a namespace has no policy
/// rules the kernel keeps the local table merged into main and reports a
/// hit on a local route (an address of the namespace) as main's; the next
/// hop's scope still tells it: only routes of scope host, which the kernel
/// makes for local addresses, get RT_SCOPE_NOWHERE.
fn route_table(raw: &PacketEvent) -> u32 {
    let local = raw.fib_error == 0 && raw.nexthop_scope == LOCAL_NEXTHOP_SCOPE;
    if local && raw.reason_or_table == MAIN_TABLE {
        LOCAL_TABLE
    } else {
        raw.reason_or_table
    }
}

/// `aa:bb:cc:dd:ee:ff`, 17 bytes: CompactString keeps it inline. Written
/// digit by digit: through `format!` this was 3% of a followed stream.
pub fn mac(bytes: [u8; 6]) -> CompactString {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b':'; 17];
    for (i, byte) in bytes.into_iter().enumerate() {
        text[3 * i] = DIGITS[usize::from(byte >> 4)];
        text[3 * i + 1] = DIGITS[usize::from(byte & 0x0f)];
    }
    CompactString::from_utf8_lossy(&text)
}

/// Turns one raw event (and the payload it carried, if any) into a typed
/// one; `None` for an event this version does not know (a newer object, say).
pub fn decode(raw: &PacketEvent, payload: Option<&[u8]>, names: &KernelNames) -> Option<Event> {
    let probe = Probe::from_u8(raw.probe)?;
    let kind = match probe {
        Probe::DevQueue => EventKind::Transmit {
            mac_dst: (raw.has_mac == 1 && raw.ether_type != ETH_P_ARP).then(|| mac(raw.mac_dst)),
        },
        Probe::Receive => {
            // An ARP event's addresses are the message's, not the frame's.
            let frame_macs = raw.has_mac == 1 && raw.ether_type != ETH_P_ARP;
            let (mac_src, mac_dst) = if frame_macs {
                (Some(mac(raw.mac_src)), Some(mac(raw.mac_dst)))
            } else {
                (None, None)
            };
            EventKind::Receive { mac_src, mac_dst }
        }
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
            location: names.symbol(raw.location),
        },
        Probe::Consume => EventKind::Consume {
            location: names.symbol(raw.location),
        },
        // A datagram read is a socket read whose packet the assembler finds.
        Probe::SocketRead | Probe::DatagramRead => EventKind::SocketRead,
        Probe::TcpPayload => EventKind::TcpPayload,
        Probe::FibLookup => EventKind::Route {
            table: route_table(raw),
            error: raw.fib_error,
            out_ifindex: raw.out_ifindex,
            gateway: Some(Ipv4Addr::from(raw.gateway)).filter(|g| !g.is_unspecified()),
        },
    };
    let transport = match raw.protocol {
        _ if raw.ether_type == ETH_P_ARP => Transport::Arp {
            operation: raw.sport,
            sender_mac: raw.mac_src,
            target_mac: raw.mac_dst,
        },
        1 => Transport::Icmp {
            icmp_type: raw.icmp_type,
            code: raw.icmp_code,
            id: raw.sport,
            seq: raw.dport,
            quoted: (raw.quoted.protocol != 0).then(|| Quoted {
                src: Ipv4Addr::from(raw.quoted.saddr),
                dst: Ipv4Addr::from(raw.quoted.daddr),
                protocol: raw.quoted.protocol,
                sport: raw.quoted.sport,
                dport: raw.quoted.dport,
                ip_id: raw.quoted.ip_id,
            }),
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
            src: Ipv4Addr::from(raw.saddr),
            dst: Ipv4Addr::from(raw.daddr),
            transport,
            ip_id: raw.ip_id,
            length: raw.ip_len,
        },
        conntrack: (raw.conntrack != 0).then_some(Conntrack {
            id: raw.conntrack,
            info: raw.ctinfo,
        }),
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
        assert_eq!(names.function_extent("ip_forward"), None);
        assert_eq!(names.function_extent(DEFERRED_FREES), None);
    }

    /// A netfilter observation as the kernel sent it (values from a real run).
    fn raw_netfilter_event() -> PacketEvent {
        let mut raw = PacketEvent {
            probe: Probe::NetfilterAfterNat as u8,
            skb: 0xffff888109e34d00,
            netns: 4026531833,
            ifindex: 6,
            saddr: [198, 51, 100, 130],
            daddr: [198, 51, 100, 129],
            protocol: 1,
            icmp_type: 8,
            sport: 18,
            dport: 3,
            ip_id: 6501,
            ip_len: 84,
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
    fn a_mac_address_is_lowercase_hex_pairs() {
        assert_eq!(
            mac([0x02, 0x42, 0xac, 0x11, 0x00, 0xff]),
            "02:42:ac:11:00:ff"
        );
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
        assert_eq!(event.packet.src, Ipv4Addr::new(198, 51, 100, 130));
        assert_eq!(
            event.packet.transport,
            Transport::Icmp {
                icmp_type: 8,
                code: 0,
                id: 18,
                seq: 3,
                quoted: None
            }
        );
        assert_eq!(event.conntrack.unwrap().state(), "NEW");
    }

    #[test]
    fn a_code_address_is_named_once_and_shared() {
        let names = names();
        let first = names.symbol(0xffff_ffff_8100_0412);
        assert_eq!(&*first, "ip_forward+0x12");
        assert!(Arc::ptr_eq(&first, &names.symbol(0xffff_ffff_8100_0412)));
        assert_eq!(&*names.symbol(0xffff_ffff_8100_0000), "nf_hook_slow");
        assert_eq!(&*names.symbol(0x10), "0x10");
    }

    #[test]
    fn names_drop_reasons_and_locations() {
        let mut raw = raw_netfilter_event();
        raw.probe = Probe::Drop as u8;
        raw.reason_or_table = 12;
        raw.location = 0xffff_ffff_8100_0012;
        let event = decode(&raw, None, &names()).unwrap();
        assert_eq!(
            event.kind,
            EventKind::Drop {
                reason: "NETFILTER_DROP".into(),
                location: "nf_hook_slow+0x12".into()
            }
        );
        raw.reason_or_table = 999;
        let EventKind::Drop { reason, .. } = decode(&raw, None, &names()).unwrap().kind else {
            panic!()
        };
        assert_eq!(&*reason, "reason 999");
    }

    #[test]
    fn arp_messages_keep_their_own_addresses() {
        let raw = PacketEvent {
            probe: Probe::Receive as u8,
            ether_type: ETH_P_ARP,
            saddr: [172, 17, 0, 3],
            daddr: [172, 17, 0, 1],
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
                sender_mac: [0x02, 0x42, 0xac, 0x11, 0x00, 0x03],
                target_mac: [0; 6]
            }
        );
        assert_eq!(event.packet.dst, Ipv4Addr::new(172, 17, 0, 1), "who has");
    }

    #[test]
    fn unknown_probe_or_hook_is_skipped() {
        let mut raw = raw_netfilter_event();
        raw.nf_hook = 9;
        assert!(decode(&raw, None, &names()).is_none());
        raw.probe = 42;
        assert!(decode(&raw, None, &names()).is_none());
    }

    #[test]
    fn a_local_route_found_in_the_merged_main_table_is_the_local_tables() {
        // With the local table merged into main, next hop scopes as the
        // kernel sets them: nowhere (255) for a local address, host (254)
        // for a directly connected route, link (253) for a gateway.
        let lookup = |table, nexthop_scope| PacketEvent {
            probe: Probe::FibLookup as u8,
            daddr: [198, 51, 100, 1],
            reason_or_table: table,
            nexthop_scope,
            ..PacketEvent::default()
        };
        let table = |raw: PacketEvent| match decode(&raw, None, &names()).unwrap().kind {
            EventKind::Route { table, .. } => table,
            kind => panic!("{kind:?}"),
        };
        assert_eq!(table(lookup(MAIN_TABLE, 255)), LOCAL_TABLE);
        assert_eq!(
            table(lookup(MAIN_TABLE, 254)),
            MAIN_TABLE,
            "directly connected"
        );
        assert_eq!(table(lookup(MAIN_TABLE, 253)), MAIN_TABLE, "via a gateway");
        assert_eq!(table(lookup(LOCAL_TABLE, 255)), LOCAL_TABLE, "tables apart");
        assert_eq!(table(lookup(100, 255)), 100, "a policy table keeps its id");
    }
}
