//! Tracepoint programs (tp_btf), loaded and attached by aya: the packet at
//! each device, its drop or its end, routing decisions and socket reads.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    helpers::generated::{bpf_skb_load_bytes, bpf_skb_load_bytes_relative},
    macros::{btf_tracepoint, classifier},
    programs::{BtfTracePointContext, TcContext},
};
use tracer_common::{
    ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IN_TASK, IN_TASK_UNKNOWN, MAX_PORTS, NOT_IN_TASK, PAYLOAD_MAX,
    PacketEvent, Probe, ROUTE_FOR_ANSWER, ROUTE_FOR_PACKET,
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
use tracer_ebpf::{
    HandledNow, HeaderAt, IpHeader, Ipv4Header, capture_skb, config, current_netns, current_task,
    device, emit, emit_packet, emit_payload_record, emit_with_payload, field, floor, fold,
    forget_skb, handled_now, in_scope, ipv6_fixed_header, look, mapped, maybe_kept, netns_inode,
    offset, plain, ports_match, read, read_macs, scratch_event, skb_netns,
};

#[btf_tracepoint(function = "net_dev_queue")]
pub fn net_dev_queue(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let skb: u64 = ctx.arg(0);
    // The frame is built: its MAC addresses say where it goes next.
    on_skb(
        Probe::DevQueue,
        skb,
        HeaderAt::NetworkHeader,
        true,
        |event| {
            event.in_task = sending_context(&ctx);
        },
    );
    0
}

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn netif_receive_skb(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let skb: u64 = ctx.arg(0);
    // The Ethernet header is already pulled: skb->data is the IP header.
    on_skb(Probe::Receive, skb, HeaderAt::Data, true, |_| {});
    0
}

/// `task_struct.flags` bit of kernel threads (ksoftirqd, kworkers): their
/// own context is still the kernel's work, never a process's.
const PF_KTHREAD: u32 = 0x0020_0000;
/// x86-64's kernel stack size (`THREAD_SIZE`, without KASAN).
const THREAD_SIZE: u64 = 16 * 1024;

/// Whether a transmit happens in the current task's own context (its system
/// call), so the task is the sender, or in a softirq or interrupt the CPU
/// serves while some task is current. On x86-64 those run on the CPU's own
/// IRQ stack, never on the task's. The tracepoint's arguments (`ctx`) are an
/// array on whatever kernel stack the tracepoint fired on: where it lies
/// tells. (Not a local of the program: since Linux 6.13 a program with a
/// larger frame runs on a private per-CPU stack, never the task's.) A kernel
/// thread is never the sender. The task may live in another namespace than
/// the packet: dockerd sends from sockets it opened inside containers.
#[inline(always)]
fn sending_context(ctx: &BtfTracePointContext) -> u8 {
    let task = current_task();
    if field::<u32>(task, offset!(task_flags)) & PF_KTHREAD != 0 {
        return NOT_IN_TASK;
    }
    let (Some(stack), Some(arguments)) = (
        plain(field::<u64>(task, offset!(task_stack))),
        plain(ctx.as_ptr() as u64),
    ) else {
        return IN_TASK_UNKNOWN;
    };
    if arguments.wrapping_sub(stack) < THREAD_SIZE {
        IN_TASK
    } else {
        NOT_IN_TASK
    }
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = if offset!(has_drop_reason) != 0 {
        ctx.arg(2)
    } else {
        0
    };
    on_free(Probe::Drop, skb, location, reason);
    0
}

#[btf_tracepoint(function = "consume_skb")]
pub fn consume_skb(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let skb: u64 = ctx.arg(0);
    let location: u64 = if offset!(has_free_location) != 0 {
        ctx.arg(1)
    } else {
        0
    };
    let Some(cfg) = config() else { return 0 };
    // A free a socket reader deferred: most skbs freed there were never told
    // of, and only the kept ones' addresses are worth a look.
    let deferred = location.wrapping_sub(cfg.deferred_free_at) < cfg.deferred_free_len;
    if deferred && !maybe_kept(skb) {
        return 0;
    }
    on_free(Probe::Consume, skb, location, 0);
    if deferred {
        forget_skb(skb);
    }
    0
}

#[btf_tracepoint(function = "skb_copy_datagram_iovec")]
pub fn skb_copy_datagram_iovec(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let skb: u64 = ctx.arg(0);
    let Some(cfg) = config() else { return 0 };
    // A queued skb has lost its device: the reader's own namespace is where it landed.
    let netns = current_netns;
    let Some(header) = look(cfg, skb, HeaderAt::NetworkHeader, false, netns) else {
        return 0;
    };
    let Some(event) = scratch_event(Probe::SocketRead) else {
        return 0;
    };
    if !capture_skb(cfg, Probe::SocketRead, skb, header, netns, event) {
        return 0;
    }
    // A socket read is a process's system call.
    event.in_task = IN_TASK;
    event.netns = current_netns();
    emit_packet(cfg, event, skb, HeaderAt::NetworkHeader);
    0
}

/// `MSG_PEEK`: the datagram stays queued, so this read is not its end.
const MSG_PEEK: i32 = 2;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// A process read from a socket. Only UDP is kept: UDP copies a
/// linear datagram itself, past `skb_copy_datagram_iovec`, so its reader is
/// known by the socket alone; user space gives the read to the oldest
/// datagram that reached this socket and was not read yet.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    let received: i32 = ctx.arg(1);
    let flags: i32 = ctx.arg(2);
    if received <= 0 || flags & MSG_PEEK != 0 {
        return 0;
    }
    let Some(cfg) = config() else { return 0 };
    // Every UDP read of the host comes here: addresses and ports first, so
    // a datagram nobody follows costs two loads.
    let family = field::<u16>(sk, offset!(sk_family));
    // An IPv6 socket's addresses are its own fields (an IPv4 peer of a
    // dual-stack socket is v4-mapped there, as in the events).
    let (remote, local) = if family == AF_INET6 {
        (
            field::<[u8; 16]>(sk, offset!(sk_v6_daddr)),
            field::<[u8; 16]>(sk, offset!(sk_v6_rcv_saddr)),
        )
    } else {
        let addresses = field::<u64>(sk, offset!(sk_addrpair)).to_ne_bytes();
        (
            mapped([addresses[0], addresses[1], addresses[2], addresses[3]]),
            mapped([addresses[4], addresses[5], addresses[6], addresses[7]]),
        )
    };
    let ports = field::<u32>(sk, offset!(sk_portpair)).to_ne_bytes();
    let remote_port = u16::from_be_bytes([ports[0], ports[1]]);
    let local_port = u16::from_ne_bytes([ports[2], ports[3]]);
    let netns = || read::<u64>(sk, offset!(sk_net)).map_or(0, netns_inode);
    // A socket bound to every address (0.0.0.0) names no address to match:
    // a watched port is then enough.
    let port_watched = cfg.ports.iter().any(|p| *p != 0 && *p == local_port);
    let addresses_in_scope = in_scope(cfg, &remote, &local, netns);
    if !(port_watched || addresses_in_scope && ports_match(cfg, remote_port, local_port)) {
        return 0;
    }
    if field::<u16>(sk, offset!(sk_protocol)) != IPPROTO_UDP as u16
        || (family != AF_INET && family != AF_INET6)
        || (cfg.protocol != 0 && cfg.protocol != IPPROTO_UDP)
    {
        return 0;
    }
    let Some(event) = scratch_event(Probe::DatagramRead) else {
        return 0;
    };
    event.probe = Probe::DatagramRead as u8;
    let v4_mapped = remote[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    event.ether_type = if family == AF_INET6 && !v4_mapped {
        ETH_P_IPV6
    } else {
        ETH_P_IP
    };
    event.protocol = IPPROTO_UDP;
    event.saddr = remote;
    event.daddr = local;
    event.sport = remote_port;
    event.dport = local_port;
    event.netns = netns();
    event.in_task = IN_TASK;
    emit(event);
    0
}

/// The input device of a sender's own lookup (`LOOPBACK_IFINDEX`).
const LOOPBACK_IFINDEX: u32 = 1;

#[btf_tracepoint(function = "fib_table_lookup")]
pub fn fib_table_lookup(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let table: u32 = ctx.arg(0);
    let flow: u64 = ctx.arg(1);
    let nexthop: u64 = ctx.arg(2);
    let error: i32 = ctx.arg(3);
    let Some(cfg) = config() else { return 0 };
    let saddr = mapped(field::<u32>(flow, offset!(flowi4_saddr)).to_ne_bytes());
    let daddr = mapped(field::<u32>(flow, offset!(flowi4_daddr)).to_ne_bytes());
    // No next hop when the lookup failed.
    let result_dev = read::<u64>(nexthop, offset!(nhc_dev)).unwrap_or(0);
    let result_netns = || {
        if result_dev != 0 {
            device(result_dev).netns
        } else {
            0
        }
    };
    let protocol = field::<u8>(flow, offset!(flowi4_proto));
    let input = field::<u32>(flow, offset!(flowi4_iif));
    // A sender's own lookup happens in its system call, before any queue.
    let in_task = sending_context(&ctx);
    // The kept packet this CPU handles is the lookup's, or its answer's (`tie`).
    let tied = tie(&saddr, &daddr, input, protocol, in_task);
    let packets_own = tied
        .as_ref()
        .is_some_and(|(_, tie)| *tie == ROUTE_FOR_PACKET);
    if !packets_own && !in_scope(cfg, &saddr, &daddr, result_netns) {
        return 0;
    }
    let Some(event) = scratch_event(Probe::FibLookup) else {
        return 0;
    };
    event.probe = Probe::FibLookup as u8;
    event.ether_type = ETH_P_IP;
    event.saddr = saddr;
    event.daddr = daddr;
    event.protocol = protocol;
    event.ifindex = input;
    event.reason_or_table = table;
    event.fib_error = error;
    event.in_task = in_task;
    if let Some((handled, tie)) = tied {
        event.skb = handled.skb;
        event.netns = handled.netns;
        event.route_for = tie;
    } else if in_task == IN_TASK {
        // A lookup that finds nothing names no device: the sender's namespace.
        event.netns = current_netns();
    }
    if result_dev != 0 {
        let result = device(result_dev);
        event.out_ifindex = result.ifindex;
        event.ifname = result.name;
        event.netns = result.netns;
        event.ifindex = field::<u32>(flow, offset!(flowi4_oif));
        // The IPv4 member of the gateway's union.
        event.gateway = mapped(field::<u32>(nexthop, offset!(nhc_gw)).to_ne_bytes());
        event.nexthop_scope = field::<u8>(nexthop, offset!(nhc_scope));
    }
    emit(event);
    0
}

/// What ties a route lookup to the kept packet this CPU handles now: the
/// flow is that packet's as it came in (its source and input device: a
/// sender's own lookups have loopback for input), also in a task's context
/// (a tun's writer hands its packets in directly). In a softirq, a lookup
/// back to its source in a protocol of its own is for an answer to it (an
/// echo reply, a reset, an ICMP error); the reverse path filter also looks
/// back to the source, with protocol 0: that is no answer. A packet kept
/// for what it quotes (an ICMP error) has no followed address: its route
/// counts all the same.
#[inline(always)]
fn tie(
    saddr: &[u8; 16],
    daddr: &[u8; 16],
    input: u32,
    protocol: u8,
    in_task: u8,
) -> Option<(HandledNow, u8)> {
    let own_input = in_task != IN_TASK || input != LOOPBACK_IFINDEX;
    handled_now().and_then(|handled| {
        if fold(saddr) == handled.source && input == handled.ifindex && own_input {
            Some((handled, ROUTE_FOR_PACKET))
        } else if in_task != IN_TASK && fold(daddr) == handled.source && protocol != 0 {
            Some((handled, ROUTE_FOR_ANSWER))
        } else {
            None
        }
    })
}

/// `fib6_type` values (`RTN_*`) of the routes a lookup can find.
const RTN_LOCAL: u8 = 2;
const RTN_BLACKHOLE: u8 = 6;
const RTN_UNREACHABLE: u8 = 7;
const RTN_PROHIBIT: u8 = 8;
/// Errors as IPv4's lookup returns them (see `fib_table_lookup`), so both
/// families' decisions decode alike.
const EAGAIN: i32 = 11;
const EINVAL: i32 = 22;
const EHOSTUNREACH: i32 = 113;
const EACCES: i32 = 13;
/// What a local route's next hop scope is in IPv4 (RT_SCOPE_NOWHERE): the
/// mark user space reads a local delivery by.
const LOCAL_NEXTHOP_SCOPE: u8 = 255;

/// An IPv6 routing table lookup, as `fib_table_lookup` is IPv4's: the same
/// event, its addresses IPv6.
#[btf_tracepoint(function = "fib6_table_lookup")]
pub fn fib6_table_lookup(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let net: u64 = ctx.arg(0);
    let result: u64 = ctx.arg(1);
    let table: u64 = ctx.arg(2);
    let flow: u64 = ctx.arg(3);
    let Some(cfg) = config() else { return 0 };
    let saddr = read::<[u8; 16]>(flow, offset!(flowi6_saddr)).unwrap_or([0; 16]);
    let daddr = read::<[u8; 16]>(flow, offset!(flowi6_daddr)).unwrap_or([0; 16]);
    let nexthop = read::<u64>(result, offset!(fib6_res_nh)).unwrap_or(0);
    let route = read::<u64>(result, offset!(fib6_res_f6i)).unwrap_or(0);
    let kind = read::<u8>(result, offset!(fib6_res_type)).unwrap_or(0);
    let null_entry = read::<u64>(net, offset!(net_fib6_null_entry)).unwrap_or(0);
    // The null entry is what a table without a match returns: the next
    // table is asked, as IPv4's lookup says with EAGAIN.
    let no_match = route == 0 || route == null_entry;
    let result_dev = if no_match || nexthop == 0 {
        0
    } else {
        read::<u64>(nexthop, offset!(nhc_dev)).unwrap_or(0)
    };
    let result_netns = || {
        if result_dev != 0 {
            device(result_dev).netns
        } else {
            0
        }
    };
    let protocol = read::<u8>(flow, offset!(flowi6_proto)).unwrap_or(0);
    let input = read::<u32>(flow, offset!(flowi6_iif)).unwrap_or(0);
    let in_task = sending_context(&ctx);
    let tied = tie(&saddr, &daddr, input, protocol, in_task);
    let packets_own = tied
        .as_ref()
        .is_some_and(|(_, tie)| *tie == ROUTE_FOR_PACKET);
    if !packets_own && !in_scope(cfg, &saddr, &daddr, result_netns) {
        return 0;
    }
    let Some(event) = scratch_event(Probe::Fib6Lookup) else {
        return 0;
    };
    event.probe = Probe::Fib6Lookup as u8;
    event.ether_type = ETH_P_IPV6;
    event.saddr = saddr;
    event.daddr = daddr;
    event.protocol = protocol;
    event.ifindex = input;
    event.reason_or_table = read::<u32>(table, offset!(fib6_table_id)).unwrap_or(0);
    event.fib_error = if no_match {
        -EAGAIN
    } else {
        match kind {
            RTN_UNREACHABLE => -EHOSTUNREACH,
            RTN_BLACKHOLE => -EINVAL,
            RTN_PROHIBIT => -EACCES,
            _ => 0,
        }
    };
    event.in_task = in_task;
    if let Some((handled, tie)) = tied {
        event.skb = handled.skb;
        event.netns = handled.netns;
        event.route_for = tie;
    } else {
        event.netns = netns_inode(net);
    }
    if result_dev != 0 {
        let result = device(result_dev);
        event.out_ifindex = result.ifindex;
        event.ifname = result.name;
        event.netns = result.netns;
        event.ifindex = read::<u32>(flow, offset!(flowi6_oif)).unwrap_or(0);
        // The IPv6 member of the gateway's union.
        event.gateway = read::<[u8; 16]>(nexthop, offset!(nhc_gw)).unwrap_or([0; 16]);
        event.nexthop_scope = if kind == RTN_LOCAL {
            LOCAL_NEXTHOP_SCOPE
        } else {
            read::<u8>(nexthop, offset!(nhc_scope)).unwrap_or(0)
        };
    }
    emit(event);
    0
}

/// A device's event about `skb`; `finish` adds what only this probe knows
/// (after the current task is stamped).
#[inline(always)]
fn on_skb(
    probe: Probe,
    skb: u64,
    at: HeaderAt,
    with_macs: bool,
    finish: impl FnOnce(&mut PacketEvent),
) {
    let Some(cfg) = config() else { return };
    let netns = || skb_netns(skb);
    let Some(header) = look(cfg, skb, at, true, netns) else {
        return;
    };
    let Some(event) = scratch_event(probe) else {
        return;
    };
    if !capture_skb(cfg, probe, skb, header, netns, event) {
        return;
    }
    // An ARP event carries the message's own addresses instead of the frame's.
    if with_macs && event.ether_type != ETH_P_ARP {
        read_macs(skb, event);
    }
    finish(event);
    // Inside a tunnel the payload read from the network header on would be
    // the outer datagram's: the inner payload is read where it travels bare.
    let transport_payload =
        (event.protocol == IPPROTO_TCP || event.protocol == IPPROTO_UDP) && event.tunnel.dport == 0;
    let ip = event.ether_type == ETH_P_IP || event.ether_type == ETH_P_IPV6;
    if cfg.capture_payload != 0 && ip && transport_payload {
        emit_with_payload(event, skb, at);
    } else {
        emit_packet(cfg, event, skb, at);
    }
}

#[inline(always)]
fn on_free(probe: Probe, skb: u64, location: u64, reason: u32) {
    let Some(cfg) = config() else { return };
    let netns = || skb_netns(skb);
    let Some(header) = look(cfg, skb, HeaderAt::NetworkHeader, true, netns) else {
        return;
    };
    let Some(event) = scratch_event(probe) else {
        return;
    };
    if !capture_skb(cfg, probe, skb, header, netns, event) {
        return;
    }
    event.location = location;
    event.reason_or_table = reason;
    emit_packet(cfg, event, skb, HeaderAt::NetworkHeader);
}

/// TCX `TC_NEXT`: the packet goes on as if no program were there.
const TC_NEXT: i32 = -1;
/// `bpf_skb_load_bytes_relative`'s offsets from the network header (which
/// reads linear data only: enough for the IP header).
const BPF_HDR_START_NET: u32 = 1;
/// Where a network header can start in the data a TC program sees: no link
/// header (a tun, WireGuard, ipip), Ethernet, Ethernet with a VLAN tag.
const LINK_HEADER_LENGTHS: [usize; 3] = [0, 14, 18];

/// TCX program on the devices of a traced namespace (`pkttrace dns`): a TCP
/// segment's payload lives in page fragments the tracepoints cannot read;
/// `bpf_skb_load_bytes` reads through them. Never changes the packet.
#[classifier]
pub fn tcp_payload(ctx: TcContext) -> i32 {
    if floor() {
        return TC_NEXT;
    }
    capture_tcp_payload(&ctx);
    TC_NEXT
}

/// How many bytes of link-layer header come before the IP header in the
/// data the program sees: where bytes read at that offset are the network
/// header's own (read relative to it). None when neither fits.
#[inline(always)]
fn link_header_length(ctx: &TcContext) -> Option<usize> {
    let mut header = [0u8; 20];
    // SAFETY: the helper writes at most 20 bytes into `header`.
    let read = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb.cast(),
            0,
            header.as_mut_ptr().cast(),
            header.len() as u32,
            BPF_HDR_START_NET,
        )
    };
    if read != 0 {
        return None;
    }
    let mut i = 0;
    while i < LINK_HEADER_LENGTHS.len() {
        let length = LINK_HEADER_LENGTHS[i];
        if ctx
            .load::<[u8; 20]>(length)
            .is_ok_and(|bytes| bytes == header)
        {
            return Some(length);
        }
        i += 1;
    }
    None
}

#[inline(always)]
fn capture_tcp_payload(ctx: &TcContext) {
    let Some(cfg) = config() else { return };
    let protocol = u16::from_be(ctx.skb.protocol() as u16);
    if cfg.capture_payload == 0 || (protocol != ETH_P_IP && protocol != ETH_P_IPV6) {
        return;
    }
    let Some(link) = link_header_length(ctx) else {
        return;
    };
    let ip = if protocol == ETH_P_IP {
        let Ok(v4) = ctx.load::<Ipv4Header>(link) else {
            return;
        };
        if v4.version_ihl >> 4 != 4 {
            return;
        }
        IpHeader::from_v4(&v4)
    } else {
        // The fixed header only: DNS over TCP carries no extension header.
        let Some(v6) = ctx
            .load::<[u8; 40]>(link)
            .ok()
            .and_then(|b| ipv6_fixed_header(&b))
        else {
            return;
        };
        v6
    };
    if ip.protocol != IPPROTO_TCP {
        return;
    }
    let ip_header_len = ip.l4_offset as usize;
    let l4 = link + ip_header_len;
    let (Ok(ports), Ok(seq_and_ack), Ok(offset_and_flags)) = (
        ctx.load::<[u16; 2]>(l4),
        ctx.load::<[u32; 2]>(l4 + 4),
        ctx.load::<[u8; 2]>(l4 + 12),
    ) else {
        return;
    };
    let (sport, dport) = (u16::from_be(ports[0]), u16::from_be(ports[1]));
    let mut watched = false;
    let mut i = 0;
    while i < MAX_PORTS {
        let port = cfg.ports[i];
        watched |= port != 0 && (port == sport || port == dport);
        i += 1;
    }
    let tcp_header_len = ((offset_and_flags[0] >> 4) as usize) * 4;
    let total = ip.length as usize;
    let Some(length) = total.checked_sub(ip_header_len + tcp_header_len) else {
        return;
    };
    // Handshake and bare ACK segments carry nothing to decode.
    if !watched || length == 0 {
        return;
    }
    let Some(event) = scratch_event(Probe::TcpPayload) else {
        return;
    };
    ip.describe(event, Probe::TcpPayload, ctx.skb.skb as u64);
    event.sport = sport;
    event.dport = dport;
    event.tcp_flags = offset_and_flags[1];
    event.tcp_payload_len = length as u16;
    // Part of the packet's identity: the tracepoints' events of this segment carry them too.
    event.tcp_seq = u32::from_be(seq_and_ack[0]);
    event.tcp_ack = u32::from_be(seq_and_ack[1]);
    // Only attached inside the traced namespace.
    event.netns = cfg.netns;
    // SAFETY: reading a context field the verifier allows.
    event.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let payload_at = (l4 + tcp_header_len) as u32;
    emit_payload_record(event, |payload| {
        // `length` is at least 1 here. The verifier must see 1..=PAYLOAD_MAX in
        // the very register passed to the helper, and the compiler would drop a
        // repeated check it can prove: the mask after an opaque read keeps it.
        let clamped = if length > PAYLOAD_MAX {
            PAYLOAD_MAX
        } else {
            length
        } as u32;
        // SAFETY: reading a local.
        let opaque = unsafe { core::ptr::read_volatile(&clamped) };
        let size = (opaque.wrapping_sub(1) & (PAYLOAD_MAX as u32 - 1)) + 1;
        // SAFETY: `payload` has room for PAYLOAD_MAX bytes, `size` is 1..=PAYLOAD_MAX.
        let read =
            unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), payload_at, payload.cast(), size) };
        if read == 0 { size } else { 0 }
    });
}
