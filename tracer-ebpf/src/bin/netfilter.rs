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

use tracer_common::{Config, PacketEvent, Probe};
use tracer_ebpf::{HeaderAt, capture_skb, config, device, emit_packet, look, netns_inode, read};

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
    let Some(cfg) = config() else { return };
    // SAFETY: the verifier allows reading the context's two pointers.
    let (state, skb) = unsafe { ((*ctx).state, (*ctx).skb) };
    // At netfilter hooks skb->data is the IP header on input and output alike.
    let o = &cfg.offsets;
    // Locally sent packets have no device yet at OUTPUT: the hook's own namespace.
    let hook_netns = || read::<u64>(state, o.nf_state_net).map_or(0, |net| netns_inode(cfg, net));
    let Some(header) = look(cfg, skb, HeaderAt::Data, false, hook_netns) else {
        return;
    };
    let mut event = PacketEvent::default();
    if capture_skb(cfg, probe, skb, header, hook_netns, &mut event) {
        describe_hook(cfg, state, &mut event);
        emit_packet(cfg, &mut event, skb, HeaderAt::Data);
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
