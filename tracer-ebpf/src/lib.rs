//! Shared by both program objects: the maps, the in-kernel filter, and the
//! code that reads a packet's headers out of a `struct sk_buff`.
//!
//! Both objects declare the same maps; aya creates them for the tracepoint
//! object and the netfilter loader points the netfilter object at those same
//! maps (by name), so every event lands in one ring buffer.
#![no_std]
// Compare-and-exchange: the bpf target's atomics offer no `compare_exchange`.
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
        generated::{bpf_get_current_comm, bpf_probe_read_kernel as bpf_probe_read_kernel_raw},
    },
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_or};

use tracer_common::{
    Config, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, HEADERS_MAX, HeadersEvent, KEPT_SLOTS, KernelOffsets,
    LOST_SLOTS, MAX_PORTS, MAX_WATCHED, PAYLOAD_MAX, PacketEvent, PayloadEvent, Probe,
    QuotedHeader, TunnelHeader,
};

/// The running kernel's struct offsets, written by the loaders into this
/// object's read-only data before the programs are verified. The verifier
/// then knows each offset as a constant, which lets the programs read
/// kernel structs through the BTF-typed pointers they are handed with
/// plain loads (`field`), where a probe-read helper call costs ~35 ns.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };

/// The offset of `KernelOffsets::$name` (a volatile read: the compiler must
/// not fold the zero it was built with).
#[macro_export]
macro_rules! offset {
    ($name:ident) => {
        $crate::offset_of(|offsets| &offsets.$name)
    };
}

#[doc(hidden)]
#[inline(always)]
pub fn offset_of(member: impl FnOnce(&'static KernelOffsets) -> &'static u32) -> u32 {
    // SAFETY: reading a static.
    unsafe { core::ptr::read_volatile(member(&OFFSETS)) }
}

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Events the ring buffer had no room for; user space reports them.
#[map(name = "LOST")]
/// One entry: a count per probe, so user space reads them all at once.
pub static LOST: PerCpuArray<[u64; LOST_SLOTS as usize]> = PerCpuArray::with_max_entries(1, 0);

/// The addresses of skbs an event was sent about, one slot each, picked by
/// the address (`kept_slot`): 0 for none, its `SHARED` bit set once two skbs
/// wanted it. A deferred free (see `Config::deferred_free_at`) of an skb not
/// in its slot is of no packet pkttrace told of, and is left alone without
/// reading the skb: that free runs on the CPU that made the skb, long after
/// its data left that CPU's caches, and reading the packet's header there
/// cost more than any other probe of an unrelated packet.
#[map(name = "KEPT")]
pub static KEPT: Array<u64> = Array::with_max_entries(KEPT_SLOTS, 0);

/// The bit that marks a slot two skbs wanted: every skb that picks it is
/// looked at. Never cleared, since either may still be alive; an skb's
/// address is even.
const SHARED: u64 = 1;

/// `skb`'s address as a number, and its slot in `KEPT`. The programs of
/// every CPU share the slots: they change only by compare-and-exchange (an
/// aligned u64 is read whole).
#[inline(always)]
fn kept_slot(skb: u64) -> Option<(u64, *mut u64)> {
    // A typed pointer allows no arithmetic.
    let skb = plain(skb)?;
    // Fibonacci hashing: skbs lie at multiples of their slab's object size.
    let index = (skb.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32 & (KEPT_SLOTS - 1);
    Some((skb, KEPT.get_ptr_mut(index)?))
}

/// Notes that an event was sent about `skb`.
#[inline(always)]
pub fn keep_skb(skb: u64) {
    let Some((skb, slot)) = kept_slot(skb) else {
        return;
    };
    // A packet's every event keeps its skb: mostly it is there already.
    // SAFETY: a u64 of map memory.
    if unsafe { core::ptr::read_volatile(slot) } == skb {
        return;
    }
    let (held, stored) = exchange(slot, 0, skb);
    if !stored && held & !SHARED != skb {
        // SAFETY: an aligned u64 of map memory.
        unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(slot, SHARED) };
    }
}

/// Whether an event may have been sent about `skb` (its slot holds it, or
/// is shared).
#[inline(always)]
pub fn maybe_kept(skb: u64) -> bool {
    kept_slot(skb).is_none_or(|(skb, slot)| {
        // SAFETY: a u64 of map memory.
        let held = unsafe { core::ptr::read_volatile(slot) };
        held == skb || held & SHARED != 0
    })
}

/// `skb` is freed: its address is another packet's next.
#[inline(always)]
pub fn forget_skb(skb: u64) {
    if let Some((skb, slot)) = kept_slot(skb) {
        exchange(slot, skb, 0);
    }
}

/// Stores `new` in `slot` if it holds `old`: what it held, and whether it stored.
#[inline(always)]
fn exchange(slot: *mut u64, old: u64, new: u64) -> (u64, bool) {
    // SAFETY: an aligned u64 of map memory.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
            slot, old, new,
        )
    }
}

/// Where the tracepoint and TC programs build their events: per CPU, one
/// slot per probe, and a last slot that stays zero to clear the others
/// from. Map memory, not the stack: the verifier does not track what is
/// written there, so paths that filled different fields still prune as one.
/// A slot is never shared: the kernel runs one program at most once per
/// CPU at a time (a nested run is skipped and counted as a recursion miss)
/// and keeps it on its CPU (migration is disabled). Netfilter programs have
/// neither guarantee and build theirs in the ring buffer instead; they use
/// one more slot, `ENTRY_SLOT`, for what a hook's entry program saw.
/// `TASK_SLOT` remembers the current task's ids for every program, and
/// `SKB_SLOT` the last kept packet this CPU handled, for route lookups.
#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<PacketEvent> = PerCpuArray::with_max_entries(LOST_SLOTS + 4, 0);

const ENTRY_SLOT: u32 = LOST_SLOTS + 1;

/// What a netfilter hook's entry program leaves, on its CPU, for the same
/// hook's after-NAT program: the skb it just looked at, and for one it kept
/// its addresses and first transport bytes, so that the after-NAT program
/// can skip in a few instructions a packet turned away, or one no NAT
/// changed where the entry's event already says all (INPUT, POSTROUTING).
#[repr(C)]
pub struct EntrySeen {
    pub skb: u64,
    /// 0: turned away; else source and destination address.
    pub addresses: u64,
    /// The transport header's first 8 bytes (ports; ICMP type to sequence).
    pub transport: u64,
    /// `addresses ^ transport ^ ENTRY_CHECK`, written last: a record another
    /// run half overwrote (an interrupting packet) does not add up.
    pub check: u64,
}

const _: () = assert!(size_of::<EntrySeen>() <= size_of::<PacketEvent>());

/// Mixed into `EntrySeen::check`, so that a zeroed record does not add up.
pub const ENTRY_CHECK: u64 = 0x9e37_79b9_7f4a_7c15;

/// This CPU's `EntrySeen`.
#[inline(always)]
pub fn entry_seen() -> Option<*mut EntrySeen> {
    SCRATCH.get_ptr_mut(ENTRY_SLOT).map(|slot| slot.cast())
}

/// `probe`'s cleared event in this CPU's scratch slot.
#[inline(always)]
pub fn scratch_event(probe: Probe) -> Option<&'static mut PacketEvent> {
    let (Some(event), Some(zeros)) = (
        SCRATCH.get_ptr_mut(probe as u32 % LOST_SLOTS),
        SCRATCH.get_ptr(LOST_SLOTS),
    ) else {
        return None;
    };
    // SAFETY: both are PacketEvent-sized slots of this CPU; the slot is this
    // program's while it runs.
    unsafe {
        clear_event(event, zeros);
        Some(&mut *event)
    }
}

/// Clears `event` by copying a zeroed one over it: one helper call, where
/// zeroing field by field costs the verifier a loop.
///
/// # Safety
/// Both must point at a whole PacketEvent.
#[inline(always)]
pub unsafe fn clear_event(event: *mut PacketEvent, zeros: *const PacketEvent) {
    unsafe {
        bpf_probe_read_kernel_raw(event.cast(), size_of::<PacketEvent>() as u32, zeros.cast())
    };
}

/// The zeroed event to clear others from.
#[inline(always)]
pub fn zeroed_event() -> Option<*const PacketEvent> {
    SCRATCH.get_ptr(LOST_SLOTS)
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// Built for the bench's floor (feature `floor`): programs return at once.
/// Opaque to the compiler, so their code and maps stay in the object and
/// load as always; without the feature it is `false` and costs nothing.
#[inline(always)]
pub fn floor() -> bool {
    cfg!(feature = "floor") && core::hint::black_box(true)
}

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// Reads the member at `offset` of the kernel struct `base` points at with
/// a plain load. `base` must be a pointer the verifier knows the BTF type of
/// (a program's typed argument, the context's, the current task), and the
/// member no pointer to a struct: loading one of those from such a pointer
/// makes the verifier search the kernel's whole BTF for trust annotations,
/// each time it walks the instruction, which made loading several times
/// slower. Pointers to structs are read with `read`, as numbers.
#[inline(always)]
pub fn field<T: Copy>(base: u64, offset: u32) -> T {
    // SAFETY: see above; the verifier rejects the program otherwise.
    unsafe { core::ptr::read_volatile((base + offset as u64) as *const T) }
}

/// Where `plain` turns addresses into numbers, and the value it checks.
#[map(name = "ADDRESSES")]
pub static ADDRESSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The number a pointer to untyped memory (packet data, a stack) holds,
/// from a `field` load: the verifier allows such a pointer no arithmetic
/// but additions, and a plain number any. Through map memory it comes back
/// as a number; a run that interrupted this one on the CPU between the
/// write and the read may have left its own there, so the result is checked
/// (a pointer may be compared with a number) and the write tried once more.
/// Two such interruptions in a row would make the packet unreadable here.
#[inline(always)]
pub fn plain(pointer: u64) -> Option<u64> {
    let slot = ADDRESSES.get_ptr_mut(0)?;
    let attempt = || {
        // SAFETY: this CPU's slot, one u64.
        let number = unsafe {
            core::ptr::write_volatile(slot, pointer);
            core::ptr::read_volatile(slot)
        };
        // The compiler would take `number` for `pointer` after seeing them
        // equal; the verifier needs the number.
        (core::hint::black_box(number) == pointer).then_some(number)
    };
    attempt().or_else(attempt)
}

/// Reads a value of type `T` at `base + offset` in kernel memory with the
/// probe-read helper: packet data, and structs reached through a pointer
/// member (`base` a number, or a BTF-typed pointer for the first step).
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// The inode number of the network namespace a `struct net *` is.
#[inline(always)]
pub fn netns_inode(net: u64) -> u32 {
    read::<u32>(net, offset!(net_ns_inum)).unwrap_or(0)
}

/// What an event says about a device.
pub struct Device {
    pub ifindex: u32,
    pub name: [u8; 16],
    pub netns: u32,
}

/// Reads ifindex, name and namespace of a `struct net_device *`.
#[inline(always)]
pub fn device(dev: u64) -> Device {
    Device {
        ifindex: read::<u32>(dev, offset!(dev_ifindex)).unwrap_or(0),
        name: read::<[u8; 16]>(dev, offset!(dev_name)).unwrap_or([0; 16]),
        netns: read::<u64>(dev, offset!(dev_nd_net)).map_or(0, netns_inode),
    }
}

impl Device {
    #[inline(always)]
    pub fn describe(&self, event: &mut PacketEvent) {
        event.ifindex = self.ifindex;
        event.ifname = self.name;
        event.netns = self.netns;
    }
}

/// Where the IP header starts in the packet's buffer.
#[derive(Clone, Copy)]
pub enum HeaderAt {
    /// `skb->data` points at the IP header (after the L2 header was pulled).
    Data,
    /// `skb->head + skb->network_header`.
    NetworkHeader,
}

/// The v4-mapped form (`::ffff:a.b.c.d`) of an IPv4 address: how events,
/// the filter and the per-CPU records hold it.
#[inline(always)]
pub fn mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// An address folded into 32 bits, for the per-CPU records that compare
/// a packet's addresses with a route lookup's (an IPv4 one keeps its
/// value, xor-ed with the mapping's constant word).
#[inline(always)]
pub fn fold(address: &[u8; 16]) -> u32 {
    let word =
        |i: usize| u32::from_ne_bytes([address[i], address[i + 1], address[i + 2], address[i + 3]]);
    word(0) ^ word(4) ^ word(8) ^ word(12)
}

/// An IP packet's header as the programs use it, IPv4 or IPv6: addresses
/// as events hold them, where its transport header starts, and the fields
/// an event carries.
#[derive(Clone, Copy)]
pub struct IpHeader {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The whole packet's length (IPv6: its payload and the fixed header).
    pub length: u16,
    /// IPv4's identification; 0 for IPv6, which has none.
    pub id: u16,
    /// Bytes from the network header to the transport header (past IPv6's
    /// extension headers).
    pub l4_offset: u16,
    /// The transport protocol (IPv6: the last extension header's next).
    pub protocol: u8,
    /// TTL, or IPv6's hop limit.
    pub ttl: u8,
    pub dont_fragment: u8,
    pub ipv6: u8,
}

impl IpHeader {
    /// From an IPv4 header as it is in memory.
    #[inline(always)]
    pub fn from_v4(ip: &Ipv4Header) -> Self {
        Self {
            saddr: mapped(ip.saddr),
            daddr: mapped(ip.daddr),
            length: u16::from_be(ip.tot_len),
            id: u16::from_be(ip.id),
            l4_offset: ((ip.version_ihl & 0x0f) as u16) * 4,
            protocol: ip.protocol,
            ttl: ip.ttl,
            dont_fragment: u8::from(u16::from_be(ip.frag_off) & IP_DF != 0),
            ipv6: 0,
        }
    }

    /// Fills `event` (zeroed) as an event of `probe` about this packet at
    /// `skb`, with the header's fields. Events are built in place: the BPF
    /// stack has room for only one.
    #[inline(always)]
    pub fn describe(&self, event: &mut PacketEvent, probe: tracer_common::Probe, skb: u64) {
        event.probe = probe as u8;
        event.skb = skb;
        event.ether_type = if self.ipv6 != 0 { ETH_P_IPV6 } else { ETH_P_IP };
        event.saddr = self.saddr;
        event.daddr = self.daddr;
        event.protocol = self.protocol;
        event.ttl = self.ttl;
        event.dont_fragment = self.dont_fragment;
        event.ip_id = self.id;
        event.ip_len = self.length;
    }
}

/// The don't-fragment bit of `frag_off`.
const IP_DF: u16 = 0x4000;

/// The IPv4 header as it is in memory.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Header {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

/// The IPv6 header as it is in memory.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Header {
    version_class_label: [u8; 4],
    payload_length: u16,
    next_header: u8,
    hop_limit: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

const IPV6_HEADER_LEN: u16 = 40;
/// Extension headers walked past to find the transport header: hop-by-hop
/// options, routing, fragment, authentication, destination options.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTIONS: u8 = 60;
/// At most this many extension headers before the transport header.
const IPV6_MAX_EXTENSIONS: usize = 4;

/// The IP header at `at`, IPv4 or IPv6 (None for anything else: ARP).
#[inline(always)]
pub fn ip_header(at: u64) -> Option<IpHeader> {
    let v4 = read::<Ipv4Header>(at, 0)?;
    match v4.version_ihl >> 4 {
        4 => Some(IpHeader::from_v4(&v4)),
        6 => ipv6_header(at),
        _ => None,
    }
}

/// An IPv6 fixed header as read into `bytes` (a TC program's copy), with no
/// extension header walked: the transport header right after it.
#[inline(always)]
pub fn ipv6_fixed_header(bytes: &[u8; 40]) -> Option<IpHeader> {
    if bytes[0] >> 4 != 6 {
        return None;
    }
    let mut saddr = [0u8; 16];
    saddr.copy_from_slice(&bytes[8..24]);
    let mut daddr = [0u8; 16];
    daddr.copy_from_slice(&bytes[24..40]);
    Some(IpHeader {
        saddr,
        daddr,
        length: u16::from_be_bytes([bytes[4], bytes[5]]).saturating_add(IPV6_HEADER_LEN),
        id: 0,
        l4_offset: IPV6_HEADER_LEN,
        protocol: bytes[6],
        ttl: bytes[7],
        dont_fragment: 1,
        ipv6: 1,
    })
}

/// The IPv6 header at `at`, past its extension headers.
#[inline(always)]
fn ipv6_header(at: u64) -> Option<IpHeader> {
    let ip = read::<Ipv6Header>(at, 0)?;
    let mut next = ip.next_header;
    let mut offset = IPV6_HEADER_LEN;
    let mut i = 0;
    while i < IPV6_MAX_EXTENSIONS {
        // Each extension header starts with the next one's number and its length.
        let length = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTIONS | IPV6_FRAGMENT | IPV6_AUTH => {
                let [following, units] = read::<[u8; 2]>(at + offset as u64, 0)?;
                let length = match next {
                    IPV6_FRAGMENT => 8,
                    IPV6_AUTH => (units as u16 + 2) * 4,
                    _ => (units as u16 + 1) * 8,
                };
                next = following;
                length
            }
            _ => break,
        };
        offset += length;
        i += 1;
    }
    Some(IpHeader {
        saddr: ip.saddr,
        daddr: ip.daddr,
        length: u16::from_be(ip.payload_length).saturating_add(IPV6_HEADER_LEN),
        id: 0,
        l4_offset: offset,
        protocol: next,
        ttl: ip.hop_limit,
        // IPv6 routers never fragment: what does not fit is refused.
        dont_fragment: 1,
        ipv6: 1,
    })
}

#[inline(always)]
fn watched(cfg: &Config, addr: &[u8; 16]) -> bool {
    let count = cfg.watched_count as usize;
    let mut i = 0;
    while i < MAX_WATCHED {
        if i < count && cfg.watched[i] == *addr {
            return true;
        }
        i += 1;
    }
    false
}

/// True when the address pair is one the user asked about. With a namespace
/// in scope, the pair only counts when an address is watched; otherwise the
/// packet must be in that namespace (`netns` is only asked then).
#[inline(always)]
pub fn in_scope(cfg: &Config, saddr: &[u8; 16], daddr: &[u8; 16], netns: impl Fn() -> u32) -> bool {
    let watched_pair = watched(cfg, saddr) || watched(cfg, daddr);
    if cfg.netns == 0 {
        cfg.watched_count == 0 || watched_pair
    } else {
        watched_pair || netns() == cfg.netns
    }
}

/// The namespace of the packet's device, or of the current task when the
/// packet has none (yet, or any more).
#[inline(always)]
pub fn skb_netns(skb: u64) -> u32 {
    match read::<u64>(skb, offset!(skb_dev)) {
        Some(dev) if dev != 0 => device(dev).netns,
        _ => current_netns(),
    }
}

/// Where the network header (IPv4, IPv6 or ARP) starts.
#[inline(always)]
fn network_header(skb: u64, at: HeaderAt) -> Option<u64> {
    match at {
        HeaderAt::Data => plain(field::<u64>(skb, offset!(skb_data))),
        HeaderAt::NetworkHeader => {
            let network = field::<u16>(skb, offset!(skb_network_header));
            if network == 0xffff {
                return None;
            }
            Some(skb_head(skb)? + network as u64)
        }
    }
}

/// Where the skb's buffer starts, as a number.
#[inline(always)]
fn skb_head(skb: u64) -> Option<u64> {
    plain(field::<u64>(skb, offset!(skb_head)))
}

/// The skb's `protocol` (an EtherType).
#[inline(always)]
fn skb_protocol(skb: u64) -> u16 {
    u16::from_be(field::<u16>(skb, offset!(skb_protocol)))
}

/// Where the skb's linear data ends, as a number.
#[inline(always)]
fn linear_end(skb: u64) -> Option<u64> {
    Some(skb_head(skb)? + field::<u32>(skb, offset!(skb_tail)) as u64)
}

/// What the first look at a packet found.
#[derive(Clone, Copy)]
pub enum Header {
    /// IP and wanted; `quoting` when only as an ICMP error that may be
    /// about a wanted packet (its quoted header decides).
    Ours(u64, IpHeader, Scope),
    /// A VXLAN datagram carrying a wanted packet: the inner packet as for
    /// `Ours`; the outer headers are at the skb's network header. (A
    /// variant shaped otherwise makes code the verifier refuses.)
    Tunneled(u64, IpHeader, Scope),
    /// IP, somebody else's: nothing more is read.
    Theirs,
    /// Neither IPv4 nor IPv6 (maybe ARP).
    NotIp(u64),
}

/// Why an IP packet passed the first look.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Its own addresses and protocol are wanted.
    Itself,
    /// An ICMP or ICMPv6 message that is wanted only if it is an error
    /// quoting a wanted packet (the answer REJECT, a closed port or a
    /// failed neighbour sends back).
    Quoting,
}

/// Why an IP packet with these protocol and addresses passes the first
/// look, None when it is somebody else's.
#[inline(always)]
pub fn ip_scope(
    cfg: &Config,
    protocol: u8,
    saddr: &[u8; 16],
    daddr: &[u8; 16],
    netns: impl Fn() -> u32,
) -> Option<Scope> {
    if (cfg.protocol == 0 || cfg.protocol == protocol) && in_scope(cfg, saddr, daddr, netns) {
        Some(Scope::Itself)
    } else if protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6 {
        Some(Scope::Quoting)
    } else {
        None
    }
}

/// Finds the packet's IP header and applies the address and protocol
/// filter. This runs for every packet the kernel handles, so it reads as
/// little as it can and builds nothing.
#[inline(always)]
fn first_look(cfg: &Config, skb: u64, at: HeaderAt, netns: impl Fn() -> u32) -> Option<Header> {
    let ip_addr = network_header(skb, at)?;
    let Some(ip) = ip_header(ip_addr) else {
        return Some(Header::NotIp(ip_addr));
    };
    // Neighbour discovery is IPv6's ARP: told like ARP (`capture_arp`), by
    // the address it asks about, never as a packet of the flow.
    if ip.protocol == IPPROTO_ICMPV6
        && read::<u8>(ip_addr, ip.l4_offset as u32).is_some_and(|t| (133..=137).contains(&t))
    {
        return Some(Header::NotIp(ip_addr));
    }
    let found = match ip_scope(cfg, ip.protocol, &ip.saddr, &ip.daddr, &netns) {
        Some(scope) => Header::Ours(ip_addr, ip, scope),
        None if ip.protocol == IPPROTO_UDP && cfg.vxlan_port != 0 && ip.ipv6 == 0 => {
            match inside_vxlan(cfg, ip_addr, &ip, &netns) {
                Some(inner) => inner,
                None => return Some(Header::Theirs),
            }
        }
        None => return Some(Header::Theirs),
    };
    // Only for a packet about to be kept: a unix or netlink buffer read by a
    // process has no IP header, whatever its bytes look like.
    let protocol = skb_protocol(skb);
    if protocol != ETH_P_IP && protocol != ETH_P_IPV6 {
        return Some(Header::Theirs);
    }
    Some(found)
}

/// What follows the outer IPv4 header of a VXLAN datagram: the UDP header,
/// the VXLAN header and the inner frame's Ethernet header.
#[repr(C)]
#[derive(Clone, Copy)]
struct VxlanEncapsulation {
    udp_ports: [u16; 2],
    udp_length_and_checksum: [u16; 2],
    /// The I flag (0x08) says the VNI is valid.
    vxlan_flags: u8,
    _reserved: [u8; 3],
    /// The VNI in the high 24 bits, network order.
    vni_and_reserved: [u8; 4],
    inner_mac: [u8; 12],
    inner_ether_type: u16,
}

const VXLAN_VNI_VALID: u8 = 0x08;

/// The inner packet of a UDP datagram to the VXLAN port when that packet
/// is wanted (None otherwise): the same skb carries the packet from its
/// encapsulation to its decapsulation, so on the underlay the packet is
/// told by its inner headers, the outer ones alongside (`read_tunnel`).
#[inline(always)]
fn inside_vxlan(
    cfg: &Config,
    outer_addr: u64,
    outer: &IpHeader,
    netns: impl Fn() -> u32,
) -> Option<Header> {
    let udp = outer_addr + outer.l4_offset as u64;
    let frame = read::<VxlanEncapsulation>(udp, 0)?;
    let inner_ether_type = u16::from_be(frame.inner_ether_type);
    if u16::from_be(frame.udp_ports[1]) != cfg.vxlan_port
        || frame.vxlan_flags & VXLAN_VNI_VALID == 0
        || (inner_ether_type != ETH_P_IP && inner_ether_type != ETH_P_IPV6)
    {
        return None;
    }
    let inner_addr = udp + size_of::<VxlanEncapsulation>() as u64;
    let inner = ip_header(inner_addr)?;
    let scope = ip_scope(cfg, inner.protocol, &inner.saddr, &inner.daddr, netns)?;
    Some(Header::Tunneled(inner_addr, inner, scope))
}

/// The outer headers of a packet kept inside a tunnel, read again for its
/// event from the skb's network header (see `Header::Tunneled`).
#[inline(always)]
fn read_tunnel(skb: u64, tunnel: &mut TunnelHeader) {
    let Some(outer_addr) = network_header(skb, HeaderAt::NetworkHeader) else {
        return;
    };
    let Some(outer) = read::<Ipv4Header>(outer_addr, 0) else {
        return;
    };
    let udp = outer_addr + ((outer.version_ihl & 0x0f) as u64) * 4;
    let Some(frame) = read::<VxlanEncapsulation>(udp, 0) else {
        return;
    };
    let [a, b, c, _] = frame.vni_and_reserved;
    tunnel.saddr = outer.saddr;
    tunnel.daddr = outer.daddr;
    tunnel.vni = u32::from_be_bytes([0, a, b, c]);
    tunnel.sport = u16::from_be(frame.udp_ports[0]);
    tunnel.dport = u16::from_be(frame.udp_ports[1]);
    tunnel.ip_id = u16::from_be(outer.id);
}

/// An ARP message as it is on the wire for IPv4 over Ethernet.
#[repr(C)]
#[derive(Clone, Copy)]
struct ArpHeader {
    hardware: u16,
    protocol: u16,
    hardware_len: u8,
    protocol_len: u8,
    operation: u16,
    sender_mac: [u8; 6],
    sender_ip: [u8; 4],
    target_mac: [u8; 6],
    target_ip: [u8; 4],
}

/// The event for an ARP message about a watched address (the neighbour
/// resolution a packet of ours waits for).
#[inline(always)]
fn capture_arp(
    cfg: &Config,
    probe: tracer_common::Probe,
    skb: u64,
    header: u64,
    netns: impl Fn() -> u32,
    event: &mut PacketEvent,
) -> bool {
    let protocol = skb_protocol(skb);
    if protocol == ETH_P_IPV6 {
        return capture_neighbour_discovery(cfg, probe, skb, header, netns, event);
    }
    if protocol != ETH_P_ARP {
        return false;
    }
    let Some(arp) = read::<ArpHeader>(header, 0) else {
        return false;
    };
    let ipv4_over_ethernet =
        u16::from_be(arp.protocol) == ETH_P_IP && arp.hardware_len == 6 && arp.protocol_len == 4;
    let (sender, target) = (mapped(arp.sender_ip), mapped(arp.target_ip));
    if !ipv4_over_ethernet || !in_scope(cfg, &sender, &target, netns) {
        return false;
    }
    event.probe = probe as u8;
    event.skb = skb;
    event.ether_type = ETH_P_ARP;
    event.saddr = sender;
    event.daddr = target;
    event.sport = u16::from_be(arp.operation);
    event.mac_src = arp.sender_mac;
    event.mac_dst = arp.target_mac;
    event.has_mac = 1;
    event.ip_len = size_of::<ArpHeader>() as u16;
    true
}

/// A neighbour solicitation or advertisement as it is on the wire after the
/// IPv6 header: type, code, checksum, flags (reserved in a solicitation),
/// the address asked about, then (usually) the link-layer address option.
#[repr(C)]
#[derive(Clone, Copy)]
struct NeighbourMessage {
    icmp_type: u8,
    code: u8,
    checksum: u16,
    flags: u32,
    target: [u8; 16],
    option_type: u8,
    option_len: u8,
    option_mac: [u8; 6],
}

const NEIGHBOUR_SOLICITATION: u8 = 135;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// Source and target link-layer address options (RFC 4861 4.6.1).
const SOURCE_LINK_ADDRESS: u8 = 1;
const TARGET_LINK_ADDRESS: u8 = 2;

/// The ARP-shaped event for a neighbour solicitation or advertisement
/// about a watched address: operation 1 (who has `target`? tell `sender`)
/// or 2 (`sender` is at `mac_src`), as `capture_arp` writes ARP. Duplicate
/// address detection (from ::) and router messages are left out.
#[inline(always)]
fn capture_neighbour_discovery(
    cfg: &Config,
    probe: tracer_common::Probe,
    skb: u64,
    header: u64,
    netns: impl Fn() -> u32,
    event: &mut PacketEvent,
) -> bool {
    let Some(ip) = read::<[u8; 40]>(header, 0) else {
        return false;
    };
    // Next header ICMPv6 right after the fixed header: what neighbour
    // discovery sends (hop limit 255, no extension header).
    if ip[6] != IPPROTO_ICMPV6 {
        return false;
    }
    let Some(message) = read::<NeighbourMessage>(header, u32::from(IPV6_HEADER_LEN)) else {
        return false;
    };
    let mut source = [0u8; 16];
    source.copy_from_slice(&ip[8..24]);
    let mut destination = [0u8; 16];
    destination.copy_from_slice(&ip[24..40]);
    let (operation, sender, target, option) = match message.icmp_type {
        NEIGHBOUR_SOLICITATION => (1u16, source, message.target, SOURCE_LINK_ADDRESS),
        NEIGHBOUR_ADVERTISEMENT => (2u16, message.target, destination, TARGET_LINK_ADDRESS),
        _ => return false,
    };
    if sender == [0u8; 16] || !in_scope(cfg, &sender, &target, netns) {
        return false;
    }
    event.probe = probe as u8;
    event.skb = skb;
    event.ether_type = ETH_P_ARP;
    event.saddr = sender;
    event.daddr = target;
    event.sport = operation;
    if message.option_type == option && message.option_len == 1 {
        event.mac_src = message.option_mac;
    }
    event.has_mac = 1;
    event.ip_len = size_of::<NeighbourMessage>() as u16;
    true
}

/// True when one of the watched ports (if any are set) is `sport` or `dport`.
#[inline(always)]
pub fn ports_match(cfg: &Config, sport: u16, dport: u16) -> bool {
    let mut any_port = true;
    let mut i = 0;
    while i < MAX_PORTS {
        let port = cfg.ports[i];
        if port != 0 {
            if sport == port || dport == port {
                return true;
            }
            any_port = false;
        }
        i += 1;
    }
    any_port
}

/// ICMP types that quote the packet they are about: destination
/// unreachable, source quench, redirect, time exceeded, parameter problem;
/// ICMPv6's destination unreachable, packet too big, time exceeded and
/// parameter problem.
#[inline(always)]
fn is_icmp_error(protocol: u8, icmp_type: u8) -> bool {
    if protocol == IPPROTO_ICMPV6 {
        matches!(icmp_type, 1..=4)
    } else {
        matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
    }
}

/// Reads the L4 header of a packet into `event`; false when the port filter
/// rejects it, or when it is an ICMP message wanted only for what it quotes
/// and that is not a wanted packet.
#[inline(always)]
fn read_transport(
    cfg: &Config,
    ip_addr: u64,
    ip: &IpHeader,
    scope: Scope,
    event: &mut PacketEvent,
    netns: impl Fn() -> u32,
) -> bool {
    let l4 = ip_addr + ip.l4_offset as u64;
    match ip.protocol {
        IPPROTO_TCP | IPPROTO_UDP => {
            if let Some(ports) = read::<[u16; 2]>(l4, 0) {
                event.sport = u16::from_be(ports[0]);
                event.dport = u16::from_be(ports[1]);
            }
            if ip.protocol == IPPROTO_TCP {
                // Data offset (high 4 bits, in words), then the flags.
                let [offset, flags] = read::<[u8; 2]>(l4, 12).unwrap_or([0; 2]);
                event.tcp_flags = flags;
                let headers = ip.l4_offset + (offset >> 4) as u16 * 4;
                event.tcp_payload_len = ip.length.saturating_sub(headers);
                if let Some([seq, ack]) = read::<[u32; 2]>(l4, 4) {
                    event.tcp_seq = u32::from_be(seq);
                    event.tcp_ack = u32::from_be(ack);
                }
            }
            ports_match(cfg, event.sport, event.dport)
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            // type, code, checksum, then identifier and sequence of echo messages.
            let Some(icmp) = read::<[u8; 8]>(l4, 0) else {
                return scope == Scope::Itself;
            };
            event.icmp_type = icmp[0];
            event.icmp_code = icmp[1];
            event.sport = u16::from_be_bytes([icmp[4], icmp[5]]);
            event.dport = u16::from_be_bytes([icmp[6], icmp[7]]);
            if !is_icmp_error(ip.protocol, icmp[0]) {
                return scope == Scope::Itself;
            }
            let wanted = read_quoted(cfg, l4 + 8, &mut event.quoted, netns);
            scope == Scope::Itself || wanted
        }
        _ => true,
    }
}

/// Reads the packet an ICMP error quotes into `quoted`; true when that
/// packet is one the filter wants (protocol, addresses, ports).
#[inline(always)]
fn read_quoted(cfg: &Config, at: u64, quoted: &mut QuotedHeader, netns: impl Fn() -> u32) -> bool {
    let Some(first) = read::<Ipv4Header>(at, 0) else {
        return false;
    };
    // The quoted header's extension headers are not walked: an error quotes
    // what the packet began with, and its ports are right after the fixed header.
    let (saddr, daddr, protocol, id, l4) = match first.version_ihl >> 4 {
        4 => (
            mapped(first.saddr),
            mapped(first.daddr),
            first.protocol,
            u16::from_be(first.id),
            at + ((first.version_ihl & 0x0f) as u64) * 4,
        ),
        6 => {
            let Some(v6) = read::<Ipv6Header>(at, 0) else {
                return false;
            };
            (
                v6.saddr,
                v6.daddr,
                v6.next_header,
                0,
                at + IPV6_HEADER_LEN as u64,
            )
        }
        _ => return false,
    };
    // TCP/UDP ports; an ICMP echo's identifier and sequence follow its
    // type, code and checksum.
    let at_ports = if protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6 {
        4
    } else {
        0
    };
    let ports = read::<[u16; 2]>(l4 + at_ports, 0).unwrap_or([0; 2]);
    *quoted = QuotedHeader {
        saddr,
        daddr,
        sport: u16::from_be(ports[0]),
        dport: u16::from_be(ports[1]),
        ip_id: id,
        protocol,
        _pad: 0,
    };
    let inner = &*quoted;
    let transport_ports = inner.protocol == IPPROTO_TCP || inner.protocol == IPPROTO_UDP;
    (cfg.protocol == 0 || cfg.protocol == inner.protocol)
        && in_scope(cfg, &inner.saddr, &inner.daddr, netns)
        && (!transport_ports || ports_match(cfg, quoted.sport, quoted.dport))
}

/// `net_device.type` of devices whose frames start with an Ethernet header.
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const ETH_HLEN: u16 = 14;

/// Reads the Ethernet addresses of a frame (`skb->head + mac_header`), when
/// it has them: the device speaks Ethernet (a tun, WireGuard or ipip device
/// has no link-layer header, and its "MAC header" is the IP header) and an
/// Ethernet header's worth lies before the network header.
#[inline(always)]
pub fn read_macs(skb: u64, event: &mut PacketEvent) {
    let mac = field::<u16>(skb, offset!(skb_mac_header));
    let network = field::<u16>(skb, offset!(skb_network_header));
    if mac == 0xffff || network.wrapping_sub(mac) < ETH_HLEN || network < mac {
        return;
    }
    let link_type = read::<u64>(skb, offset!(skb_dev))
        .and_then(|dev| read::<u16>(dev, offset!(dev_type)))
        .unwrap_or(0);
    if link_type != ARPHRD_ETHER && link_type != ARPHRD_LOOPBACK {
        return;
    }
    let Some(head) = skb_head(skb) else {
        return;
    };
    if let Some(eth) = read::<[u8; 12]>(head + mac as u64, 0) {
        event.mac_dst.copy_from_slice(&eth[0..6]);
        event.mac_src.copy_from_slice(&eth[6..12]);
        event.has_mac = 1;
    }
}

/// Copies the conntrack entry and its ctinfo from `skb->_nfct`.
#[inline(always)]
pub fn read_conntrack(skb: u64, event: &mut PacketEvent) {
    let nfct = field::<u64>(skb, offset!(skb_nfct));
    // The low 3 bits carry enum ip_conntrack_info; the rest is the nf_conn pointer.
    event.conntrack = nfct & !7;
    event.ctinfo = (nfct & 7) as u8;
}

/// The current task, as a BTF-typed pointer `field` can read through.
#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: a plain helper call.
    unsafe { bpf_get_current_task_btf() as u64 }
}

/// The network namespace of the task the program runs on behalf of.
#[inline(always)]
pub fn current_netns() -> u32 {
    current_task_ids().netns
}

/// The current task's network namespace, and its process's id as its own
/// pid namespace numbers it.
pub struct TaskIds {
    pub netns: u32,
    pub ns_pid: u32,
    /// `bpf_get_current_pid_tgid()`: the process id in the high half.
    pub pid_tgid: u64,
}

/// What `current_task_ids` last found, per CPU: the events of a followed
/// stream name the same few tasks again and again, and finding out costs
/// seven probe reads where checking the record costs one. A task that
/// changes namespaces (dockerd's `setns`) gets a new nsproxy.
#[repr(C)]
struct TaskRecord {
    task: u64,
    nsproxy: u64,
    pid_tgid: u64,
    /// `TaskIds`: netns in the low half, ns_pid in the high half.
    ids: u64,
    /// `task ^ nsproxy ^ pid_tgid ^ ids ^ TASK_CHECK`, written last: a record
    /// another run half overwrote (an interrupting program) does not add up.
    check: u64,
}

const TASK_SLOT: u32 = LOST_SLOTS + 2;
const TASK_CHECK: u64 = 0x6a09_e667_f3bc_c908;
const _: () = assert!(size_of::<TaskRecord>() <= size_of::<PacketEvent>());

#[inline(always)]
pub fn current_task_ids() -> TaskIds {
    let task = current_task();
    let nsproxy = read::<u64>(task, offset!(task_nsproxy)).unwrap_or(0);
    // SAFETY: plain helper calls; the task's address is only compared.
    let (task_address, pid_tgid) = unsafe { (bpf_get_current_task(), bpf_get_current_pid_tgid()) };
    let record = SCRATCH
        .get_ptr_mut(TASK_SLOT)
        .map(|slot| slot.cast::<TaskRecord>());
    if let Some(record) = record {
        // SAFETY: this CPU's record, read at once.
        let seen = unsafe { core::ptr::read_volatile(record) };
        let adds_up =
            seen.check == seen.task ^ seen.nsproxy ^ seen.pid_tgid ^ seen.ids ^ TASK_CHECK;
        if adds_up
            && seen.task == task_address
            && seen.nsproxy == nsproxy
            && seen.pid_tgid == pid_tgid
        {
            return TaskIds {
                netns: seen.ids as u32,
                ns_pid: (seen.ids >> 32) as u32,
                pid_tgid,
            };
        }
    }
    let netns = read::<u64>(nsproxy, offset!(nsproxy_net_ns)).map_or(0, netns_inode);
    let ns_pid = ns_pid_of(task);
    if let Some(record) = record {
        let ids = u64::from(netns) | u64::from(ns_pid) << 32;
        // SAFETY: this CPU's record; `check` last.
        unsafe {
            (*record).task = task_address;
            (*record).nsproxy = nsproxy;
            (*record).pid_tgid = pid_tgid;
            (*record).ids = ids;
            core::ptr::write_volatile(
                &mut (*record).check,
                task_address ^ nsproxy ^ pid_tgid ^ ids ^ TASK_CHECK,
            );
        }
    }
    TaskIds {
        netns,
        ns_pid,
        pid_tgid,
    }
}

/// A task's process id as its own pid namespace numbers it:
/// `task->group_leader->thread_pid->numbers[level].nr`.
#[inline(always)]
fn ns_pid_of(task: u64) -> u32 {
    let Some(pid) = read::<u64>(task, offset!(task_group_leader))
        .and_then(|leader| read::<u64>(leader, offset!(task_thread_pid)))
    else {
        return 0;
    };
    let level = read::<u32>(pid, offset!(pid_level)).unwrap_or(0);
    let upid = pid + offset!(pid_numbers) as u64 + level as u64 * offset!(upid_size) as u64;
    read::<u32>(upid, 0).unwrap_or(0)
}

/// Stamps time and the current task.
#[inline(always)]
pub fn stamp(event: &mut PacketEvent) {
    event.timestamp_ns = unsafe { bpf_ktime_get_ns() };
    let ids = current_task_ids();
    if event.task_netns == 0 {
        event.task_netns = ids.netns;
    }
    event.ns_pid = ids.ns_pid;
    event.pid = (ids.pid_tgid >> 32) as u32;
    // SAFETY: `comm` has room for the 16 bytes asked.
    unsafe { bpf_get_current_comm(event.comm.as_mut_ptr().cast(), event.comm.len() as u32) };
}

/// Counts an event the ring buffer had no room for, under its probe.
#[inline(always)]
pub fn count_lost(probe: u8) {
    if let Some(lost) = LOST.get_ptr_mut(0) {
        // SAFETY: this CPU's counts; the index is below LOST_SLOTS.
        unsafe { (*lost)[(u32::from(probe) % LOST_SLOTS) as usize] += 1 };
    }
}

/// `bpf_ringbuf_*` flags (uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;

/// Whether handing over a record of `size` bytes wakes the reader. By
/// default the kernel wakes it for every record that finds the ring read to
/// the end, with an inter-processor interrupt each time: under a followed
/// stream that was 8% of the whole machine. The reader drains the ring on a
/// timer anyway (intake's tick), so it is woken only when the records
/// waiting cross a quarter of the ring, and for every record once half of
/// it waits (two producers may both miss the crossing).
#[inline(always)]
pub fn wake_flags(size: u64) -> u64 {
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA);
    let quarter = EVENTS.query(BPF_RB_RING_SIZE) / 4;
    let crosses = waiting < quarter && waiting + size >= quarter;
    if crosses || waiting >= 2 * quarter {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Stamps time and the current task, then sends the event to user space.
#[inline(always)]
pub fn emit(event: &mut PacketEvent) {
    stamp(event);
    let flags = wake_flags(size_of::<PacketEvent>() as u64);
    if EVENTS.output::<PacketEvent>(&*event, flags).is_err() {
        count_lost(event.probe);
    }
}

/// Sends the event of a packet at hand; with `capture_headers` (`--pcap`)
/// its first bytes from the network header on go with it, as they are here.
#[inline(always)]
pub fn emit_packet(cfg: &Config, event: &mut PacketEvent, skb: u64, at: HeaderAt) {
    if cfg.capture_headers == 0 {
        emit(event);
        return;
    }
    stamp(event);
    let flags = wake_flags(size_of::<HeadersEvent>() as u64);
    let Some(mut entry) = EVENTS.reserve::<HeadersEvent>(0) else {
        count_lost(event.probe);
        return;
    };
    let out = entry.as_mut_ptr();
    // SAFETY: `out` is a reserved HeadersEvent; both pointers are valid for
    // one PacketEvent, copied by a helper (see emit_payload_record).
    unsafe {
        (*out).headers_len = copy_headers(skb, at, (*out).headers.as_mut_ptr()) as u16;
        bpf_probe_read_kernel_raw(
            core::ptr::addr_of_mut!((*out).packet).cast(),
            size_of::<PacketEvent>() as u32,
            (event as *const PacketEvent).cast(),
        );
    }
    entry.submit(flags);
}

/// Copies the packet's first bytes from its network header on into
/// `headers` (HEADERS_MAX bytes of room); returns how many.
#[inline(always)]
pub fn copy_headers(skb: u64, at: HeaderAt, headers: *mut u8) -> u32 {
    copy_at_most::<HEADERS_MAX>(headers, headers_location(skb, at))
}

/// Copies up to `MAX` bytes of kernel memory at `location` (start, length)
/// into `room` (`MAX` bytes); returns how many, 0 when nothing could be read.
#[inline(always)]
fn copy_at_most<const MAX: usize>(room: *mut u8, location: Option<(u64, u64)>) -> u32 {
    let Some((source, length)) = location else {
        return 0;
    };
    let length = if length > MAX as u64 {
        MAX as u32
    } else {
        length as u32
    };
    // SAFETY: `room` has MAX bytes and `length` is at most that; the helper
    // checks the source.
    let read = unsafe {
        bpf_probe_read_kernel_raw(room.cast(), length, source as *const core::ffi::c_void)
    };
    if length > 0 && read == 0 { length } else { 0 }
}

/// Where the network header starts and how many bytes of the linear data
/// follow it.
#[inline(always)]
fn headers_location(skb: u64, at: HeaderAt) -> Option<(u64, u64)> {
    let start = network_header(skb, at)?;
    Some((start, linear_end(skb)?.checked_sub(start)?))
}

/// Where a TCP/UDP packet's payload starts and how many of its bytes are in
/// the linear data (beyond it they are in page fragments, not readable here).
#[inline(always)]
fn payload_location(skb: u64, at: HeaderAt) -> Option<(u64, u64)> {
    let ip_addr = network_header(skb, at)?;
    let ip = ip_header(ip_addr)?;
    let ip_header_len = ip.l4_offset as u64;
    let l4 = ip_addr + ip_header_len;
    let l4_header_len = match ip.protocol {
        IPPROTO_UDP => 8,
        IPPROTO_TCP => ((read::<u8>(l4, 12)? >> 4) as u64) * 4,
        _ => return None,
    };
    let payload = l4 + l4_header_len;
    let total = ip.length as u64;
    let length = total.checked_sub(ip_header_len + l4_header_len)?;
    let linear = linear_end(skb)?.checked_sub(payload)?;
    Some((payload, if length < linear { length } else { linear }))
}

/// Like `emit`, with the start of the packet's TCP/UDP payload appended,
/// read from its linear data.
#[inline(always)]
pub fn emit_with_payload(event: &mut PacketEvent, skb: u64, at: HeaderAt) {
    let location = payload_location(skb, at);
    emit_payload_record(event, |payload| {
        copy_at_most::<PAYLOAD_MAX>(payload, location)
    });
}

/// Sends `event` followed by a payload that `copy` writes into the record
/// (PAYLOAD_MAX bytes of room) and whose length it returns.
#[inline(always)]
pub fn emit_payload_record(event: &mut PacketEvent, copy: impl FnOnce(*mut u8) -> u32) {
    stamp(event);
    let flags = wake_flags(size_of::<PayloadEvent>() as u64);
    let Some(mut entry) = EVENTS.reserve::<PayloadEvent>(0) else {
        count_lost(event.probe);
        return;
    };
    let out = entry.as_mut_ptr();
    // SAFETY: `out` is a reserved PayloadEvent; its payload array is in it.
    let copied = copy(unsafe { (*out).payload.as_mut_ptr() });
    // SAFETY: both pointers are valid for one PacketEvent. A helper copies it:
    // a plain assignment compiles to byte loads the verifier rejects on a
    // stack holding wider values.
    unsafe {
        bpf_probe_read_kernel_raw(
            core::ptr::addr_of_mut!((*out).packet).cast(),
            size_of::<PacketEvent>() as u32,
            (event as *const PacketEvent).cast(),
        );
        (*out).payload_len = copied as u16;
    }
    entry.submit(flags);
}

/// The first look at a packet the user may have asked about (IPv4, or ARP
/// about its addresses when `with_arp`); None, cheaply, for every other
/// packet. Only then is an event zeroed and filled (`capture_skb`): that is
/// all the cost unrelated traffic pays.
#[inline(always)]
pub fn look(
    cfg: &Config,
    skb: u64,
    at: HeaderAt,
    with_arp: bool,
    netns: impl Fn() -> u32,
) -> Option<Header> {
    match first_look(cfg, skb, at, netns)? {
        Header::Theirs => None,
        Header::NotIp(_) if !with_arp => None,
        header => Some(header),
    }
}

/// Fills `event` (zeroed) from what the first look found; false when the
/// rest of the filter (ports, an ICMP error's quoted packet, ARP's
/// addresses) turns it away.
#[inline(always)]
pub fn capture_skb(
    cfg: &Config,
    probe: tracer_common::Probe,
    skb: u64,
    header: Header,
    netns: impl Fn() -> u32,
    event: &mut PacketEvent,
) -> bool {
    let wanted = match header {
        Header::Theirs => false,
        Header::NotIp(header) => capture_arp(cfg, probe, skb, header, &netns, event),
        Header::Ours(ip_addr, ip, scope) | Header::Tunneled(ip_addr, ip, scope) => {
            ip.describe(event, probe, skb);
            if matches!(header, Header::Tunneled(..)) {
                read_tunnel(skb, &mut event.tunnel);
            }
            let wanted = read_transport(cfg, ip_addr, &ip, scope, event, &netns);
            if wanted {
                read_conntrack(skb, event);
            }
            wanted
        }
    };
    if wanted {
        if let Some(dev) = read::<u64>(skb, offset!(skb_dev)) {
            device(dev).describe(event);
        }
        if probe != Probe::Drop && probe != Probe::Consume {
            keep_skb(skb);
            if event.ether_type == ETH_P_IP {
                note_handled(skb, event);
            }
        }
    }
    wanted
}

/// The last kept IPv4 packet a CPU handled: a route lookup that runs while
/// the kernel handles it (in the same softirq, on the same CPU, before any
/// other kept packet) is that packet's, or its answer's.
#[repr(C)]
pub struct Handled {
    pub skb: u64,
    /// Source address in the low half, destination in the high half.
    pub addresses: u64,
    /// Namespace inode in the low half, device ifindex in the high half.
    pub place: u64,
    /// `skb ^ addresses ^ place ^ HANDLED_CHECK`, written last: a record
    /// another run half overwrote (an interrupting program) does not add up.
    pub check: u64,
}

const SKB_SLOT: u32 = LOST_SLOTS + 3;
const HANDLED_CHECK: u64 = 0xbb67_ae85_84ca_a73b;
const _: () = assert!(size_of::<Handled>() <= size_of::<PacketEvent>());

#[inline(always)]
fn note_handled(skb: u64, event: &PacketEvent) {
    let Some(record) = SCRATCH
        .get_ptr_mut(SKB_SLOT)
        .map(|slot| slot.cast::<Handled>())
    else {
        return;
    };
    let Some(skb) = plain(skb) else { return };
    let addresses = u64::from(fold(&event.saddr)) | u64::from(fold(&event.daddr)) << 32;
    let place = u64::from(event.netns) | u64::from(event.ifindex) << 32;
    // SAFETY: this CPU's record; `check` last.
    unsafe {
        (*record).skb = skb;
        (*record).addresses = addresses;
        (*record).place = place;
        core::ptr::write_volatile(
            &mut (*record).check,
            skb ^ addresses ^ place ^ HANDLED_CHECK,
        );
    }
}

/// The packet a CPU handles now, as `note_handled` left it.
pub struct HandledNow {
    pub skb: u64,
    /// Its addresses, folded (`fold`).
    pub source: u32,
    pub destination: u32,
    pub netns: u32,
    pub ifindex: u32,
}

/// This CPU's `HandledNow`; None when the record does not add up.
#[inline(always)]
pub fn handled_now() -> Option<HandledNow> {
    let record = SCRATCH.get_ptr(SKB_SLOT)?.cast::<Handled>();
    // SAFETY: this CPU's record, read at once.
    let seen = unsafe { core::ptr::read_volatile(record) };
    if seen.check != seen.skb ^ seen.addresses ^ seen.place ^ HANDLED_CHECK || seen.skb == 0 {
        return None;
    }
    Some(HandledNow {
        skb: seen.skb,
        source: seen.addresses as u32,
        destination: (seen.addresses >> 32) as u32,
        netns: seen.place as u32,
        ifindex: (seen.place >> 32) as u32,
    })
}

/// Shared by both objects: the verifier requires a panic handler, never reached.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
