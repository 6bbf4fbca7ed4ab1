//! The binary contract between pkttrace's eBPF programs and its user space:
//! the event each probe emits, the configuration user space hands to the
//! programs, and the names of the maps that carry them.
#![no_std]

/// Which kernel probe produced an event.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// tp_btf `net_dev_queue`: the packet is handed to a device for transmit.
    DevQueue = 1,
    /// tp_btf `netif_receive_skb`: a device's receive path takes the packet.
    Receive = 2,
    /// BPF netfilter program at the very first priority of its hook (before
    /// raw, conntrack, mangle and NAT): a drop after it happened in this hook.
    NetfilterEntry = 3,
    /// BPF netfilter program just after the NAT priority of its hook.
    NetfilterAfterNat = 4,
    /// tp_btf `kfree_skb`: the kernel dropped the packet (with a reason).
    Drop = 5,
    /// tp_btf `consume_skb`: the packet was freed normally, its journey is over.
    Consume = 6,
    /// tp_btf `skb_copy_datagram_iovec`: a process read the packet from a socket.
    SocketRead = 7,
    /// tp_btf `fib_table_lookup`: a routing decision (no packet pointer).
    FibLookup = 8,
    /// TCX program on a traced namespace's device: a TCP payload the
    /// tracepoints could not read (it sits in page fragments).
    TcpPayload = 9,
    /// tp_btf `sock_recv_length`: a process read a datagram from a UDP
    /// socket (no packet pointer: UDP copies a linear datagram without
    /// `skb_copy_datagram_iovec`). Addresses and ports are the socket's:
    /// remote in `saddr`/`sport` (zero when unconnected), local in
    /// `daddr`/`dport`.
    DatagramRead = 10,
    /// tp_btf `fib6_table_lookup`: an IPv6 routing decision, as `FibLookup`.
    Fib6Lookup = 11,
}

impl Probe {
    /// Every probe, in the order of their values.
    pub const ALL: [Probe; 11] = [
        Self::DevQueue,
        Self::Receive,
        Self::NetfilterEntry,
        Self::NetfilterAfterNat,
        Self::Drop,
        Self::Consume,
        Self::SocketRead,
        Self::FibLookup,
        Self::TcpPayload,
        Self::DatagramRead,
        Self::Fib6Lookup,
    ];

    /// What the probe is attached to, as a user reads it in a loss count.
    pub fn name(self) -> &'static str {
        match self {
            Self::DevQueue => "net_dev_queue",
            Self::Receive => "netif_receive_skb",
            Self::NetfilterEntry => "netfilter at hook entry",
            Self::NetfilterAfterNat => "netfilter after NAT",
            Self::Drop => "kfree_skb",
            Self::Consume => "consume_skb",
            Self::SocketRead => "skb_copy_datagram_iovec",
            Self::FibLookup => "fib_table_lookup",
            Self::TcpPayload => "TC TCP payload",
            Self::DatagramRead => "sock_recv_length",
            Self::Fib6Lookup => "fib6_table_lookup",
        }
    }

    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::DevQueue,
            2 => Self::Receive,
            3 => Self::NetfilterEntry,
            4 => Self::NetfilterAfterNat,
            5 => Self::Drop,
            6 => Self::Consume,
            7 => Self::SocketRead,
            8 => Self::FibLookup,
            9 => Self::TcpPayload,
            10 => Self::DatagramRead,
            11 => Self::Fib6Lookup,
            _ => return None,
        })
    }
}

pub const IFNAMSIZ: usize = 16;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
pub const TASK_COMM_LEN: usize = 16;

/// One observation of one packet at one point in the kernel.
///
/// Addresses are kept in network byte order as the packet carries them, as
/// 16 bytes: an IPv6 address, or an IPv4 one v4-mapped (`::ffff:a.b.c.d`),
/// so one comparison serves both families; `ether_type` says which the
/// packet is. Ports, IP id and length are converted to host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketEvent {
    pub timestamp_ns: u64,
    /// Address of the `struct sk_buff`: the same packet keeps it across devices
    /// and namespaces until it is freed or cloned.
    pub skb: u64,
    /// Address of the conntrack entry (`struct nf_conn`), 0 if untracked.
    pub conntrack: u64,
    /// `kfree_skb`/`consume_skb`: kernel address of the function that freed it.
    pub location: u64,
    /// Inode number of the network namespace the event happened in.
    pub netns: u32,
    /// Inode of the current task's network namespace: a process is only the
    /// sender or reader when it lives where the packet is.
    pub task_netns: u32,
    /// 0x0800 for IPv4, 0x86DD for IPv6; 0x0806 for ARP, whose operation is in
    /// `sport`, sender and target addresses in `saddr`/`daddr` and
    /// `mac_src`/`mac_dst`.
    pub ether_type: u16,
    /// TCP: bytes of data the segment carries (IP total length less both
    /// headers): a bare ACK carries none and asks for no answer.
    pub tcp_payload_len: u16,
    /// Device the packet is on (receive: arrived on; transmit: leaving by;
    /// netfilter: input device, or output device on output hooks).
    pub ifindex: u32,
    /// Netfilter: output device (0 on input hooks). Routing: result device.
    pub out_ifindex: u32,
    /// Process (tgid) current when the event fired; only meaningful in
    /// process context (a socket send or read).
    pub pid: u32,
    /// The current process's id in its own pid namespace (what `ps` shows
    /// inside a container); equal to `pid` for the host's own processes.
    pub ns_pid: u32,
    /// Routing: the scope of the chosen next hop (`nhc_scope`); a local
    /// route's is RT_SCOPE_NOWHERE (255).
    pub nexthop_scope: u8,
    /// Routing: whose lookup it was, when the kernel's evidence ties it to
    /// the packet at `skb` (`ROUTE_FOR_*`; 0 = not tied, a sender's own).
    pub route_for: u8,
    /// 1 when the IPv4 header has the don't-fragment bit set.
    pub dont_fragment: u8,
    pub _pad2: u8,
    /// `kfree_skb`: `enum skb_drop_reason` value. Routing: table id.
    pub reason_or_table: u32,
    /// Routing: the error the lookup returned (0 = found a route).
    pub fib_error: i32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Routing: the gateway chosen (all zero when the destination is on-link).
    pub gateway: [u8; 16],
    /// TCP/UDP source port; ICMP echo identifier.
    pub sport: u16,
    /// TCP/UDP destination port; ICMP echo sequence number.
    pub dport: u16,
    pub ip_id: u16,
    pub ip_len: u16,
    /// TCP sequence and acknowledgement numbers: what no NAT changes and
    /// tells apart lookalike segments (resets of one port, IP id 0).
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    pub probe: u8,
    pub protocol: u8,
    pub icmp_type: u8,
    pub tcp_flags: u8,
    /// `enum ip_conntrack_info` (the low bits of `skb->_nfct`).
    pub ctinfo: u8,
    /// Netfilter hook number (`enum nf_inet_hooks`).
    pub nf_hook: u8,
    pub ttl: u8,
    /// 1 when `mac_src`/`mac_dst` were read from the frame: only a device
    /// with an Ethernet header has them (not a tun, WireGuard, ipip).
    pub has_mac: u8,
    pub icmp_code: u8,
    /// `IN_TASK` when the event fired in the context of the current task (a
    /// system call), `NOT_IN_TASK` while the CPU served a softirq or an
    /// interrupt (the current task is then whatever ran), `IN_TASK_UNKNOWN`.
    pub in_task: u8,
    /// An ICMP error's quoted packet (`quoted.protocol` 0 when none): how
    /// an error names the packet it is about.
    pub quoted: QuotedHeader,
    /// The outer headers when the event is about a packet seen inside a
    /// VXLAN tunnel (`tunnel.dport` 0 when not): on the underlay, between
    /// encapsulation and decapsulation, the packet described above travels
    /// as the payload of this UDP datagram.
    pub tunnel: TunnelHeader,
    pub mac_src: [u8; 6],
    pub mac_dst: [u8; 6],
    pub comm: [u8; TASK_COMM_LEN],
    /// Name of the device `ifindex` names, read in the kernel so an event stays
    /// readable even when the device is gone by the time user space looks.
    pub ifname: [u8; IFNAMSIZ],
}

/// The start of the packet an ICMP error quotes: its IP header and the first
/// eight bytes of its transport header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct QuotedHeader {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// TCP/UDP ports; ICMP echo identifier and sequence number.
    pub sport: u16,
    pub dport: u16,
    pub ip_id: u16,
    pub protocol: u8,
    pub _pad: u8,
}

/// The outer IPv4 and UDP headers and the VXLAN network identifier of a
/// packet that travels encapsulated.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TunnelHeader {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    pub sport: u16,
    pub dport: u16,
    /// The outer IPv4 header's id: what ties the datagram to the kernel's
    /// nf_tables trace of it.
    pub ip_id: u16,
    pub _pad: u16,
}

/// `PacketEvent::route_for`: the lookup routed the packet at `skb` as it
/// arrived (same CPU, its input device and source address).
pub const ROUTE_FOR_PACKET: u8 = 1;
/// `PacketEvent::route_for`: the lookup routed an answer to the packet at
/// `skb` back to its source while the kernel handled it (an echo reply, a
/// reset, an ICMP error).
pub const ROUTE_FOR_ANSWER: u8 = 2;

pub const IN_TASK_UNKNOWN: u8 = 0;
pub const IN_TASK: u8 = 1;
pub const NOT_IN_TASK: u8 = 2;

/// How many addresses the in-kernel filter can watch.
pub const MAX_WATCHED: usize = 4;

/// Byte offsets of the kernel struct members the programs read, computed in
/// user space from `/sys/kernel/btf/vmlinux` (aya has no CO-RE for Rust) and
/// written into the programs' read-only global `OFFSETS_GLOBAL` before they
/// are loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub skb_dev: u32,
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_network_header: u32,
    pub skb_mac_header: u32,
    pub skb_nfct: u32,
    pub skb_protocol: u32,
    pub skb_tail: u32,
    pub dev_ifindex: u32,
    pub dev_name: u32,
    /// `net_device.type`: the link layer's ARPHRD_* number.
    pub dev_type: u32,
    pub dev_nd_net: u32,
    pub net_ns_inum: u32,
    pub nf_state_hook: u32,
    pub nf_state_in: u32,
    pub nf_state_out: u32,
    pub nf_state_net: u32,
    pub flowi4_oif: u32,
    pub flowi4_iif: u32,
    pub flowi4_saddr: u32,
    pub flowi4_daddr: u32,
    pub flowi4_proto: u32,
    pub flowi6_oif: u32,
    pub flowi6_iif: u32,
    pub flowi6_proto: u32,
    pub flowi6_saddr: u32,
    pub flowi6_daddr: u32,
    /// `fib6_result`: its next hop (`struct fib6_nh`, whose first member is
    /// the `fib_nh_common` the `nhc_*` offsets are in), route entry and type.
    pub fib6_res_nh: u32,
    pub fib6_res_f6i: u32,
    pub fib6_res_type: u32,
    pub fib6_table_id: u32,
    /// `net.ipv6.fib6_null_entry`: what a lookup finding nothing returns.
    pub net_fib6_null_entry: u32,
    pub nhc_dev: u32,
    pub nhc_gw: u32,
    pub nhc_scope: u32,
    pub task_nsproxy: u32,
    pub nsproxy_net_ns: u32,
    pub task_group_leader: u32,
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    /// `sizeof(struct upid)`, the stride of `pid->numbers[]`.
    pub upid_size: u32,
    pub task_flags: u32,
    /// `task_struct.stack`: the bottom of the task's kernel stack.
    pub task_stack: u32,
    /// `skc_addrpair`: the remote address, then the local one (8 bytes).
    pub sk_addrpair: u32,
    /// `skc_portpair`: the remote port (network order), then the local
    /// port (host order).
    pub sk_portpair: u32,
    pub sk_family: u32,
    pub sk_net: u32,
    pub sk_protocol: u32,
    /// `skc_v6_daddr`, `skc_v6_rcv_saddr`: an IPv6 socket's remote and
    /// local addresses (16 bytes each).
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    /// 1 when `kfree_skb` hands a drop reason, 1 when `consume_skb` hands a
    /// code location: a kernel without them refuses a program that reads
    /// them, and the verifier skips code behind a constant that is 0.
    pub has_drop_reason: u32,
    pub has_free_location: u32,
}

/// How many TCP/UDP ports the in-kernel filter can watch.
pub const MAX_PORTS: usize = 4;

/// What the programs capture: a packet is interesting when its source or
/// destination is one of `watched` (or, with `netns` set, when it is in that
/// namespace) and it matches protocol and ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// As `PacketEvent` holds addresses: 16 bytes, IPv4 ones v4-mapped.
    pub watched: [[u8; 16]; MAX_WATCHED],
    pub watched_count: u32,
    /// Inode of a network namespace whose packets are all in scope, 0 = none:
    /// then only the watched addresses are (all of them when none is watched).
    pub netns: u32,
    /// TCP/UDP ports of which one must be the source or destination; unused
    /// slots are 0, all 0 = any port. A published port and the container port
    /// it is DNATed to; DNS port 53 and the ports Docker's DNAT moves it to.
    pub ports: [u16; MAX_PORTS],
    /// IP protocol number, 0 = any.
    pub protocol: u8,
    /// 1: devices' transmit and receive events of TCP/UDP packets also carry
    /// the payload (a `PayloadEvent`), for DNS.
    pub capture_payload: u8,
    /// 1: every event of a packet also carries the packet's first bytes from
    /// its network header on (a `HeadersEvent`), for `--pcap`.
    pub capture_headers: u8,
    pub _pad: u8,
    /// UDP port of the VXLAN tunnels to look into (0 = none): a datagram
    /// to it carries an Ethernet frame whose packet may be a wanted one.
    pub vxlan_port: u16,
    pub _pad2: [u8; 2],
    /// Where the kernel's `skb_defer_free_flush` starts and how long it is
    /// (0 until user space knows): the frees made there are of skbs a socket
    /// reader handed back to the CPU that made them, and only those of skbs
    /// an event was sent about (`KEPT_MAP`) are looked at.
    pub deferred_free_at: u64,
    pub deferred_free_len: u64,
}

/// How much of a packet's payload a `PayloadEvent` carries: a classic DNS message.
pub const PAYLOAD_MAX: usize = 512;

/// A `PacketEvent` followed by the start of the TCP/UDP payload, read from
/// the packet's linear data. The ring buffer record's size tells it apart.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PayloadEvent {
    pub packet: PacketEvent,
    /// Bytes of `payload` that are the packet's; 0 when the payload was not
    /// in the linear data (e.g. in page fragments).
    pub payload_len: u16,
    pub _pad: [u8; 6],
    pub payload: [u8; PAYLOAD_MAX],
}

/// How many bytes of a packet, from its network header on, a `HeadersEvent`
/// carries: the IPv4 header with options and a TCP header with options fit.
pub const HEADERS_MAX: usize = 128;

/// A `PacketEvent` followed by the packet's first bytes as they were at that
/// point (after a NAT, rewritten), from the IPv4 or ARP header on. Its
/// ring buffer record's size tells it apart from the other two.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HeadersEvent {
    pub packet: PacketEvent,
    /// Bytes of `headers` that are the packet's (its linear data may be shorter).
    pub headers_len: u16,
    pub _pad: [u8; 6],
    pub headers: [u8; HEADERS_MAX],
}

/// Map names, shared so the netfilter loader can find aya's maps by name.
pub const EVENTS_MAP: &str = "EVENTS";
pub const CONFIG_MAP: &str = "CONFIG";
pub const LOST_MAP: &str = "LOST";
/// Counts in the per-CPU LOST map's one entry, one per `Probe` value (an
/// event the ring buffer had no room for is counted under the probe that
/// made it); also the scratch slots, one per probe.
pub const LOST_SLOTS: u32 = 16;
pub const SCRATCH_MAP: &str = "SCRATCH";
pub const ADDRESSES_MAP: &str = "ADDRESSES";
/// The addresses of skbs an event was sent about (see `Config::deferred_free_at`).
pub const KEPT_MAP: &str = "KEPT";
/// Slots of `KEPT_MAP`, a power of two: an skb's address picks its slot.
pub const KEPT_SLOTS: u32 = 1 << 16;
/// The programs' global holding the `KernelOffsets`.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// The netfilter programs' global holding the BTF id of `struct iphdr`.
pub const IP_HEADER_TYPE_GLOBAL: &str = "IP_HEADER_TYPE";

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are plain-old-data `repr(C)` structs of integers and byte arrays.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::PacketEvent {}
    unsafe impl aya::Pod for super::PayloadEvent {}
    unsafe impl aya::Pod for super::HeadersEvent {}
}
