//! Tracepoint programs (tp_btf), loaded and attached by aya: the packet at
//! each device, its drop or its end, routing decisions and socket reads.
#![no_std]
#![no_main]

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::{ETH_P_ARP, ETH_P_IP, PacketEvent, Probe};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
use tracer_ebpf::{
    HeaderAt, capture_skb, config, current_netns, device, emit, emit_with_payload, in_scope, read,
    read_macs, skb_netns,
};

#[btf_tracepoint(function = "net_dev_queue")]
pub fn net_dev_queue(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    on_skb(Probe::DevQueue, skb, HeaderAt::NetworkHeader, false);
    0
}

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn netif_receive_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    // The Ethernet header is already pulled: skb->data is the IP header.
    on_skb(Probe::Receive, skb, HeaderAt::Data, true);
    0
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    on_free(Probe::Drop, skb, location, reason);
    0
}

#[btf_tracepoint(function = "consume_skb")]
pub fn consume_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    on_free(Probe::Consume, skb, location, 0);
    0
}

#[btf_tracepoint(function = "skb_copy_datagram_iovec")]
pub fn skb_copy_datagram_iovec(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let Some(cfg) = config() else { return 0 };
    // A queued skb has lost its device: the reader's own namespace is where it landed.
    let Some(mut event) = capture_skb(
        cfg,
        Probe::SocketRead,
        skb,
        HeaderAt::NetworkHeader,
        false,
        || current_netns(cfg),
    ) else {
        return 0;
    };
    event.netns = current_netns(cfg);
    emit(cfg, &mut event);
    0
}

#[btf_tracepoint(function = "fib_table_lookup")]
pub fn fib_table_lookup(ctx: BtfTracePointContext) -> i32 {
    let table: u32 = ctx.arg(0);
    let flow: u64 = ctx.arg(1);
    let nexthop: u64 = ctx.arg(2);
    let error: i32 = ctx.arg(3);
    let Some(cfg) = config() else { return 0 };
    let o = &cfg.offsets;
    let (Some(saddr), Some(daddr)) = (
        read::<[u8; 4]>(flow, o.flowi4_saddr),
        read::<[u8; 4]>(flow, o.flowi4_daddr),
    ) else {
        return 0;
    };
    let result_dev = read::<u64>(nexthop, o.nhc_dev).filter(|dev| *dev != 0);
    let result_netns = || result_dev.map(|dev| device(cfg, dev).netns).unwrap_or(0);
    if !in_scope(cfg, saddr, daddr, result_netns) {
        return 0;
    }
    let mut event = PacketEvent {
        probe: Probe::FibLookup as u8,
        saddr,
        daddr,
        protocol: read::<u8>(flow, o.flowi4_proto).unwrap_or(0),
        ifindex: read::<u32>(flow, o.flowi4_iif).unwrap_or(0),
        reason_or_table: table,
        fib_error: error,
        ..PacketEvent::default()
    };
    if let Some(dev) = result_dev {
        let result = device(cfg, dev);
        event.out_ifindex = result.ifindex;
        event.ifname = result.name;
        event.netns = result.netns;
        event.ifindex = read::<u32>(flow, o.flowi4_oif).unwrap_or(0);
        event.gateway = read::<[u8; 4]>(nexthop, o.nhc_gw).unwrap_or([0; 4]);
    }
    emit(cfg, &mut event);
    0
}

#[inline(always)]
fn on_skb(probe: Probe, skb: u64, at: HeaderAt, with_macs: bool) {
    let Some(cfg) = config() else { return };
    let Some(mut event) = capture_skb(cfg, probe, skb, at, true, || skb_netns(cfg, skb)) else {
        return;
    };
    // An ARP event carries the message's own addresses instead of the frame's.
    if with_macs && event.ether_type != ETH_P_ARP {
        read_macs(cfg, skb, &mut event);
    }
    let transport_payload = event.protocol == IPPROTO_TCP || event.protocol == IPPROTO_UDP;
    if cfg.capture_payload != 0 && event.ether_type == ETH_P_IP && transport_payload {
        emit_with_payload(cfg, &mut event, skb, at);
    } else {
        emit(cfg, &mut event);
    }
}

#[inline(always)]
fn on_free(probe: Probe, skb: u64, location: u64, reason: u32) {
    let Some(cfg) = config() else { return };
    let Some(mut event) = capture_skb(cfg, probe, skb, HeaderAt::NetworkHeader, true, || {
        skb_netns(cfg, skb)
    }) else {
        return;
    };
    event.location = location;
    event.reason_or_table = reason;
    emit(cfg, &mut event);
}
