//! BPF netfilter programs (BPF_PROG_TYPE_NETFILTER). aya 0.14 cannot load this
//! program type, so these live in their own object, loaded by pkttrace's
//! netfilter loader. `hook_entry` sits at the very first priority of every
//! IPv4 hook, so a packet dropped anywhere in a hook (raw, mangle, nat,
//! filter) was last seen entering that hook; `after_nat` sits just after the
//! NAT priority of the hooks that rewrite addresses, so the difference
//! between the two is the NAT the kernel applied (where there is none, the
//! after-NAT program says nothing unless it cannot tell: see `observe`).
//! Both always accept: pkttrace never changes a verdict.
#![no_std]
#![no_main]

use core::ffi::c_void;

use tracer_common::{Config, HeadersEvent, PacketEvent, Probe};
use tracer_ebpf::{
    ENTRY_CHECK, EVENTS, EntrySeen, Header, HeaderAt, capture_skb, clear_event, config,
    copy_headers, count_lost, device, entry_seen, field, floor, fold, ip_scope, look, mapped,
    netns_inode, offset, read, scratch_event, stamp, wake_flags, zeroed_event,
};

const NF_ACCEPT: i32 = 1;
const NF_INET_LOCAL_OUT: u8 = 3;
const NF_INET_POST_ROUTING: u8 = 4;

/// `struct bpf_nf_ctx`, the program's context.
#[repr(C)]
pub struct NfContext {
    state: u64,
    skb: u64,
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "netfilter/hook_entry")]
pub extern "C" fn hook_entry(ctx: *const NfContext) -> i32 {
    observe(ctx, Probe::NetfilterEntry);
    NF_ACCEPT
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "netfilter/after_nat")]
pub extern "C" fn after_nat(ctx: *const NfContext) -> i32 {
    observe(ctx, Probe::NetfilterAfterNat);
    NF_ACCEPT
}

#[inline(always)]
fn observe(ctx: *const NfContext, probe: Probe) {
    if floor() {
        return;
    }
    // SAFETY: the verifier allows reading the context's two pointers.
    let (state, skb) = unsafe { ((*ctx).state, (*ctx).skb) };
    let Some(seen) = entry_seen() else { return };
    // SAFETY (every use of `seen`): this CPU's record. Whatever ran on this
    // CPU since this hook's entry (an interrupting packet, another task
    // after a preemption) left another skb there, or a record that does not
    // add up: then the packet is looked at again.
    let recorded = unsafe {
        let s = &*seen;
        (s.skb == skb && s.check == s.addresses ^ s.transport ^ ENTRY_CHECK)
            .then_some((s.addresses, s.transport))
    };
    if probe == Probe::NetfilterAfterNat {
        // Turned away before NAT: a NAT that made it one of ours is seen
        // from the next hook on.
        if recorded.is_some_and(|(addresses, _)| addresses == 0) {
            return;
        }
    } else {
        remember(seen, skb, 0, 0);
    }
    let Some(cfg) = config() else { return };
    // At netfilter hooks skb->data is the IP header on input and output alike.
    // Locally sent packets have no device yet at OUTPUT: the hook's own namespace.
    let hook_netns = || read::<u64>(state, offset!(nf_state_net)).map_or(0, netns_inode);
    if clearly_theirs(cfg, skb, hook_netns) {
        return;
    }
    let Some(header) = look(cfg, skb, HeaderAt::Data, false, hook_netns) else {
        return;
    };
    let print = fingerprint(&header);
    if probe == Probe::NetfilterAfterNat
        && let (Some(before), Some(now)) = (recorded, print)
        && before == now
    {
        // An unchanged packet adds nothing to its entry's event. Conntrack's
        // word on it (which PREROUTING's and OUTPUT's entries come too early
        // for) stays on the skb, and the next hook's entry event carries it.
        return;
    }
    // Kept: the after-NAT program compares what it sees with this.
    let kept = || match (probe, print) {
        (Probe::NetfilterEntry, Some((addresses, transport))) => {
            remember(seen, skb, addresses, transport)
        }
        // Looked at again by the after-NAT program.
        _ => remember(seen, 0, 0, 0),
    };
    let Some(zeros) = zeroed_event() else { return };
    let event = Reported {
        probe,
        state,
        skb,
        header,
        zeros,
    };
    if cfg.capture_headers != 0 {
        report::<HeadersEvent>(cfg, event, hook_netns, kept);
    } else {
        report::<PacketEvent>(cfg, event, hook_netns, kept);
    }
}

/// What `report` sends an event about.
struct Reported {
    probe: Probe,
    state: u64,
    skb: u64,
    header: Header,
    zeros: *const PacketEvent,
}

/// A ring buffer record a netfilter program sends: a `PacketEvent`, with
/// the packet's first bytes after it for `--pcap`.
trait Record {
    /// The record's `PacketEvent`.
    ///
    /// # Safety
    /// `record` must point at a reserved record.
    unsafe fn packet(record: *mut Self) -> *mut PacketEvent;
    /// Fills what follows the `PacketEvent`.
    ///
    /// # Safety
    /// `record` must point at a reserved record.
    #[inline(always)]
    unsafe fn finish(_record: *mut Self, _skb: u64) {}
}

impl Record for PacketEvent {
    #[inline(always)]
    unsafe fn packet(record: *mut Self) -> *mut PacketEvent {
        record
    }
}

impl Record for HeadersEvent {
    #[inline(always)]
    unsafe fn packet(record: *mut Self) -> *mut PacketEvent {
        // SAFETY: a field of the reserved record.
        unsafe { core::ptr::addr_of_mut!((*record).packet) }
    }

    #[inline(always)]
    unsafe fn finish(record: *mut Self, skb: u64) {
        // SAFETY: the record's headers have room for HEADERS_MAX bytes.
        unsafe {
            (*record).headers_len =
                copy_headers(skb, HeaderAt::Data, (*record).headers.as_mut_ptr()) as u16;
        }
    }
}

/// Builds the event in its ring buffer record and sends it, or discards
/// the record when the rest of the filter turns the packet away; `kept`
/// runs for a packet kept, sent or lost. The record, not a per-CPU slot: a
/// netfilter program may be interrupted, or preempted in a task's context,
/// by another run of itself on the same CPU.
#[inline(always)]
fn report<R: Record + 'static>(
    cfg: &Config,
    event: Reported,
    netns: impl Fn() -> u32,
    kept: impl Fn(),
) {
    let Reported {
        probe,
        state,
        skb,
        header,
        zeros,
    } = event;
    let flags = wake_flags(size_of::<R>() as u64);
    let Some(mut entry) = EVENTS.reserve::<R>(0) else {
        kept();
        count_if_ours(cfg, probe, skb, header, netns);
        return;
    };
    let out = entry.as_mut_ptr();
    // SAFETY: `out` is a reserved record, whose event is cleared first.
    let event = unsafe {
        let event = R::packet(out);
        clear_event(event, zeros);
        &mut *event
    };
    if !capture_skb(cfg, probe, skb, header, netns, event) {
        entry.discard(0);
        return;
    }
    kept();
    describe_hook(state, event);
    stamp(event);
    // SAFETY: `out` is the reserved record.
    unsafe { R::finish(out, skb) };
    entry.submit(flags);
}

/// The kernel's BTF id of `struct iphdr`, written by the loader.
#[unsafe(no_mangle)]
static IP_HEADER_TYPE: u32 = 0;

unsafe extern "C" {
    /// A kfunc the verifier replaces by a plain move: `object` becomes an
    /// untrusted pointer of the BTF type `btf_id`, whose members are read
    /// with plain loads that read zero instead of faulting.
    fn bpf_rdonly_cast(object: *const c_void, btf_id: u32) -> *const c_void;
}

/// The first look's verdict "somebody else's", taken with plain loads
/// through the packet's IPv4 header cast to its BTF type: every packet
/// through every hook meets this, where a probe read would cost it a
/// helper call. A packet not clearly someone else's is looked at again.
#[inline(always)]
fn clearly_theirs(cfg: &Config, skb: u64, netns: impl Fn() -> u32) -> bool {
    // SAFETY: reading a static; the cast is a move the verifier checks.
    let ip = unsafe {
        let btf_id = core::ptr::read_volatile(&IP_HEADER_TYPE);
        bpf_rdonly_cast(
            field::<u64>(skb, offset!(skb_data)) as *const c_void,
            btf_id,
        )
    } as u64;
    // The IPv4 header's own layout: version in the first byte's high half.
    let version = field::<u8>(ip, 0) >> 4;
    if version == 6 {
        // IPv6 hooks: the first look reads the header and its extensions.
        return false;
    }
    if version != 4 {
        // Netfilter programs look at no ARP.
        return true;
    }
    let protocol = field::<u8>(ip, 9);
    let saddr = mapped(field::<u32>(ip, 12).to_ne_bytes());
    let daddr = mapped(field::<u32>(ip, 16).to_ne_bytes());
    // A datagram that may be a VXLAN tunnel's is looked into by `look`.
    let maybe_tunnel = protocol == IPPROTO_UDP && cfg.vxlan_port != 0;
    ip_scope(cfg, protocol, &saddr, &daddr, netns).is_none() && !maybe_tunnel
}

const IPPROTO_UDP: u8 = 17;

/// Leaves what this hook's entry saw for its after-NAT program; `check`
/// last, so that a record half overwritten does not add up.
#[inline(always)]
fn remember(seen: *mut EntrySeen, skb: u64, addresses: u64, transport: u64) {
    // SAFETY: this CPU's record.
    unsafe {
        (*seen).addresses = addresses;
        (*seen).transport = transport;
        (*seen).skb = skb;
        (*seen).check = addresses ^ transport ^ ENTRY_CHECK;
    }
}

/// A kept packet's addresses and the transport header's first 8 bytes
/// (ports, or ICMP type to sequence): what a NAT would change. Inside a
/// tunnel, the inner packet's.
#[inline(always)]
fn fingerprint(header: &Header) -> Option<(u64, u64)> {
    let (Header::Ours(ip_addr, ip, _) | Header::Tunneled(ip_addr, ip, _)) = header else {
        return None;
    };
    let addresses = u64::from(fold(&ip.saddr)) | (u64::from(fold(&ip.daddr)) << 32);
    let transport = read::<u64>(*ip_addr + u64::from(ip.l4_offset), 0)?;
    // A kept packet never records 0: that marks one turned away.
    (addresses != 0).then_some((addresses, transport))
}

/// The ring buffer had no room: counts the event as lost when it would
/// have been one (the filter's last word needs an event to fill; a
/// shared slot serves, as nothing of it is sent).
#[inline(always)]
fn count_if_ours(cfg: &Config, probe: Probe, skb: u64, header: Header, netns: impl Fn() -> u32) {
    if let Some(event) = scratch_event(probe)
        && capture_skb(cfg, probe, skb, header, netns, event)
    {
        count_lost(probe as u8);
    }
}

/// The hook and the device it is about: the output one on output hooks.
#[inline(always)]
fn describe_hook(state: u64, event: &mut PacketEvent) {
    event.nf_hook = field::<u8>(state, offset!(nf_state_hook));
    let input = read::<u64>(state, offset!(nf_state_in)).unwrap_or(0);
    let output = read::<u64>(state, offset!(nf_state_out)).unwrap_or(0);
    // Name the device the hook is about: the output one on output hooks.
    let is_output_hook =
        event.nf_hook == NF_INET_LOCAL_OUT || event.nf_hook == NF_INET_POST_ROUTING;
    if output != 0 {
        let out = device(output);
        event.out_ifindex = out.ifindex;
        if is_output_hook {
            out.describe(event);
        }
    }
    if !is_output_hook && input != 0 {
        device(input).describe(event);
    }
}
