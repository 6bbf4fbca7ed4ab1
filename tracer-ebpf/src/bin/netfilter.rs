//! BPF netfilter programs (BPF_PROG_TYPE_NETFILTER). aya 0.14 cannot load this
//! program type, so these live in their own object, loaded by pkttrace's
//! netfilter loader. `hook_entry` sits at the very first priority of every
//! IPv4 hook, so a packet dropped anywhere in a hook (raw, mangle, nat,
//! filter) was last seen entering that hook; `after_nat` sits just after the
//! NAT priority of the hooks that rewrite addresses, so the difference
//! between the two is the NAT the kernel applied. Both always accept:
//! pkttrace never changes a verdict.
#![no_std]
#![no_main]

use tracer_common::{Config, HeadersEvent, PacketEvent, Probe};
use tracer_ebpf::{
    EVENTS, Header, HeaderAt, capture_skb, clear_event, config, copy_headers, count_lost, device,
    look, netns_inode, read, scratch_event, stamp, turned_away_at_entry, zeroed_event,
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
    // SAFETY: the verifier allows reading the context's two pointers.
    let (state, skb) = unsafe { ((*ctx).state, (*ctx).skb) };
    let Some(turned_away) = turned_away_at_entry() else {
        return;
    };
    // SAFETY: this CPU's slot. Whatever ran on this CPU since this hook's
    // entry (an interrupting packet, another task after a preemption) left
    // another address or 0 there: then the packet is looked at again.
    unsafe {
        if probe == Probe::NetfilterAfterNat {
            // Turned away before NAT: a NAT that made it one of ours is seen
            // from the next hook on.
            if *turned_away == skb {
                return;
            }
        } else {
            *turned_away = skb;
        }
    }
    // Kept: the after-NAT program looks at it too.
    let kept = || {
        // SAFETY: as above.
        unsafe { *turned_away = 0 }
    };
    let Some(cfg) = config() else { return };
    // At netfilter hooks skb->data is the IP header on input and output alike.
    let o = &cfg.offsets;
    // Locally sent packets have no device yet at OUTPUT: the hook's own namespace.
    let hook_netns = || read::<u64>(state, o.nf_state_net).map_or(0, |net| netns_inode(cfg, net));
    let Some(header) = look(cfg, skb, HeaderAt::Data, false, hook_netns) else {
        return;
    };
    let Some(zeros) = zeroed_event() else { return };
    // The event is built in its ring buffer record: a netfilter program may
    // be interrupted, or preempted in a task's context, by another run of
    // itself on the same CPU, so no per-CPU slot would be its own.
    if cfg.capture_headers != 0 {
        let Some(mut entry) = EVENTS.reserve::<HeadersEvent>(0) else {
            kept();
            count_if_ours(cfg, probe, skb, header, hook_netns);
            return;
        };
        let out = entry.as_mut_ptr();
        // SAFETY: `out` is a reserved HeadersEvent, whose packet is cleared first.
        let event = unsafe {
            clear_event(core::ptr::addr_of_mut!((*out).packet), zeros);
            &mut (*out).packet
        };
        if !capture_skb(cfg, probe, skb, header, hook_netns, event) {
            entry.discard(0);
            return;
        }
        kept();
        describe_hook(cfg, state, event);
        stamp(cfg, event);
        // SAFETY: the record's headers have room for HEADERS_MAX bytes.
        unsafe {
            (*out).headers_len =
                copy_headers(cfg, skb, HeaderAt::Data, (*out).headers.as_mut_ptr()) as u16;
        }
        entry.submit(0);
    } else {
        let Some(mut entry) = EVENTS.reserve::<PacketEvent>(0) else {
            kept();
            count_if_ours(cfg, probe, skb, header, hook_netns);
            return;
        };
        let out = entry.as_mut_ptr();
        // SAFETY: `out` is a reserved PacketEvent, cleared first.
        let event = unsafe {
            clear_event(out, zeros);
            &mut *out
        };
        if !capture_skb(cfg, probe, skb, header, hook_netns, event) {
            entry.discard(0);
            return;
        }
        kept();
        describe_hook(cfg, state, event);
        stamp(cfg, event);
        entry.submit(0);
    }
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
fn describe_hook(cfg: &Config, state: u64, event: &mut PacketEvent) {
    let o = &cfg.offsets;
    event.nf_hook = read::<u8>(state, o.nf_state_hook).unwrap_or(0xff);
    let input = read::<u64>(state, o.nf_state_in).unwrap_or(0);
    let output = read::<u64>(state, o.nf_state_out).unwrap_or(0);
    // Name the device the hook is about: the output one on output hooks.
    let is_output_hook =
        event.nf_hook == NF_INET_LOCAL_OUT || event.nf_hook == NF_INET_POST_ROUTING;
    if output != 0 {
        let out = device(cfg, output);
        event.out_ifindex = out.ifindex;
        if is_output_hook {
            out.describe(event);
        }
    }
    if !is_output_hook && input != 0 {
        device(cfg, input).describe(event);
    }
}
