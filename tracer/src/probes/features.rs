//! The kernel features pkttrace uses, each probed at start-up from what the
//! running kernel itself says (its BTF, a map it agrees to create), never
//! from its version number: distribution kernels carry backports. Without
//! an optional feature pkttrace traces with less and says once what it
//! does not see; without a required one it cannot trace at all.

use std::fmt;

use anyhow::{Result, bail};

use super::kernel_btf::KernelBtf;

/// The environment variable that makes pkttrace take features as absent
/// (comma-separated names, e.g. `netfilter-programs,drop-reasons`): how the
/// degraded modes are tested on a kernel that has everything.
pub const PRETEND_ABSENT_VAR: &str = "PKTTRACE_PRETEND_ABSENT";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    /// The kernel's own type information at /sys/kernel/btf/vmlinux.
    Btf,
    /// BTF-typed raw tracepoints (`tp_btf` programs) and the helper
    /// `bpf_get_current_task_btf` they use.
    TpBtf,
    /// The BPF ring buffer map.
    RingBuffer,
    /// `enum skb_drop_reason` and the `reason` argument of `kfree_skb`.
    DropReasons,
    /// The `location` argument of the `consume_skb` tracepoint.
    FreeLocations,
    /// The `sock_recv_length` tracepoint: a process reading a socket.
    SocketReads,
    /// BPF programs at netfilter hooks (`BPF_PROG_TYPE_NETFILTER`, links)
    /// with the `bpf_rdonly_cast` kfunc they read packets through.
    NetfilterPrograms,
    /// nf_tables' trace (`meta nftrace`, NFT_MSG_TRACE over netlink).
    NftablesTrace,
    /// TCX links for TC programs (gone when pkttrace is).
    Tcx,
}

impl Feature {
    pub const ALL: [Feature; 9] = [
        Feature::Btf,
        Feature::TpBtf,
        Feature::RingBuffer,
        Feature::DropReasons,
        Feature::FreeLocations,
        Feature::SocketReads,
        Feature::NetfilterPrograms,
        Feature::NftablesTrace,
        Feature::Tcx,
    ];

    /// The name the switch and the docs use.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Btf => "btf",
            Feature::TpBtf => "tp-btf",
            Feature::RingBuffer => "ring-buffer",
            Feature::DropReasons => "drop-reasons",
            Feature::FreeLocations => "free-locations",
            Feature::SocketReads => "socket-reads",
            Feature::NetfilterPrograms => "netfilter-programs",
            Feature::NftablesTrace => "nftables-trace",
            Feature::Tcx => "tcx",
        }
    }

    /// What the kernel lacks, in words.
    fn lacking(self) -> &'static str {
        match self {
            Feature::Btf => "no BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF)",
            Feature::TpBtf => "no BTF-typed tracepoints (tp_btf) with bpf_get_current_task_btf",
            Feature::RingBuffer => "no BPF ring buffer",
            Feature::DropReasons => "no drop reasons (enum skb_drop_reason)",
            Feature::FreeLocations => "no code location on consume_skb",
            Feature::SocketReads => "no sock_recv_length tracepoint",
            Feature::NetfilterPrograms => "no BPF netfilter programs",
            Feature::NftablesTrace => "no nf_tables trace",
            Feature::Tcx => "no TCX links",
        }
    }

    /// What pkttrace does without it; None: it cannot trace at all.
    fn without(self) -> Option<&'static str> {
        match self {
            Feature::Btf | Feature::TpBtf | Feature::RingBuffer => None,
            Feature::DropReasons => Some(
                "drops are told by the kernel function that dropped the packet, not by a reason",
            ),
            Feature::FreeLocations => Some(
                "a packet's end after delivery or transmission is told without the code that freed it",
            ),
            Feature::SocketReads => Some(
                "a process reading a small UDP datagram is not seen: such a story ends where the kernel took the datagram in",
            ),
            Feature::NetfilterPrograms => Some(
                "netfilter hooks and NAT are not seen as hops; a netfilter drop is told from where the kernel freed the packet and nf_tables' trace",
            ),
            Feature::NftablesTrace => {
                Some("netfilter drops are told without the rule that dropped them")
            }
            Feature::Tcx => Some("DNS over TCP is not decoded (UDP is)"),
        }
    }

    /// What the running kernel (its BTF read) says of this feature.
    fn present_in(self, btf: &KernelBtf) -> bool {
        match self {
            // Reading this very BTF proved it there.
            Feature::Btf => true,
            // A tp_btf program attaches to the tracepoint's BTF typedef and
            // asks for the task it runs in by its BTF type.
            Feature::TpBtf => {
                btf.tracepoint_arguments("net_dev_queue").is_some()
                    && btf.function_id("bpf_get_current_task_btf").is_ok()
            }
            Feature::RingBuffer => {
                aya::sys::is_map_supported(aya::maps::MapType::RingBuf).unwrap_or(false)
            }
            // The enum, and the tracepoint handing the reason (its third
            // argument; a fourth, the receiving socket, came in 6.11).
            Feature::DropReasons => {
                btf.has_enum("skb_drop_reason")
                    && btf
                        .tracepoint_arguments("kfree_skb")
                        .is_some_and(|n| n >= 3)
            }
            Feature::FreeLocations => btf
                .tracepoint_arguments("consume_skb")
                .is_some_and(|n| n >= 2),
            Feature::SocketReads => btf.tracepoint_arguments("sock_recv_length").is_some(),
            Feature::NetfilterPrograms => {
                btf.enum_has("bpf_link_type", "BPF_LINK_TYPE_NETFILTER")
                    && btf.function_id("bpf_rdonly_cast").is_ok()
            }
            // Not asked here: the rule tracer finds out by making its table,
            // and a kernel without the trace refuses it; the tracer says so.
            Feature::NftablesTrace => true,
            Feature::Tcx => btf.enum_has("bpf_attach_type", "BPF_TCX_INGRESS"),
        }
    }

    fn named(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the running kernel has of what pkttrace uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelSupport {
    absent: Vec<Feature>,
    /// Of `absent`, those taken as absent by the test switch.
    pretended: Vec<Feature>,
}

impl KernelSupport {
    /// Probes the running kernel (its BTF already read) and applies the
    /// test switch. Fails when a feature pkttrace cannot trace without is
    /// missing.
    pub fn probe(btf: &KernelBtf) -> Result<Self> {
        let mut support = Self {
            absent: Feature::ALL
                .into_iter()
                .filter(|f| !f.present_in(btf))
                .collect(),
            pretended: Vec::new(),
        };
        support.pretend_absent(std::env::var(PRETEND_ABSENT_VAR).ok().as_deref())?;
        support.require_essentials()?;
        Ok(support)
    }

    /// Takes the features named in `names` (the switch's value) as absent.
    fn pretend_absent(&mut self, names: Option<&str>) -> Result<()> {
        for name in names.unwrap_or_default().split(',').map(str::trim) {
            if name.is_empty() {
                continue;
            }
            let Some(feature) = Feature::named(name) else {
                let known: Vec<_> = Feature::ALL.iter().map(|f| f.name()).collect();
                bail!(
                    "{PRETEND_ABSENT_VAR} names no kernel feature called {name:?}: use some of {}",
                    known.join(", ")
                );
            };
            self.pretended.push(feature);
            if !self.absent.contains(&feature) {
                self.absent.push(feature);
            }
        }
        self.absent.sort();
        Ok(())
    }

    fn require_essentials(&self) -> Result<()> {
        if let Some(missing) = self.absent.iter().find(|f| f.without().is_none()) {
            let pretended = if self.pretended.contains(missing) {
                format!(" (taken as absent: {PRETEND_ABSENT_VAR})")
            } else {
                String::new()
            };
            bail!(
                "this kernel has {}{pretended}: pkttrace cannot trace here; docs/kernels.md lists what it needs",
                missing.lacking()
            );
        }
        Ok(())
    }

    pub fn has(&self, feature: Feature) -> bool {
        !self.absent.contains(&feature)
    }

    /// One line per missing feature that matters for this run: what the
    /// kernel lacks and what is not seen for it. `capture_payload`: the run
    /// decodes payloads (`dns`), so TCX matters.
    pub fn notes(&self, capture_payload: bool) -> Vec<String> {
        self.absent
            .iter()
            .filter(|f| capture_payload || **f != Feature::Tcx)
            .filter_map(|feature| {
                let without = feature.without()?;
                let pretended = if self.pretended.contains(feature) {
                    format!(" (taken as absent: {PRETEND_ABSENT_VAR})")
                } else {
                    String::new()
                };
                Some(format!(
                    "this kernel has {}{pretended}: {without}",
                    feature.lacking()
                ))
            })
            .collect()
    }

    /// A kernel lacking `features` and nothing else, for tests of pure logic.
    #[cfg(test)]
    pub fn with_absent(features: &[Feature]) -> Self {
        Self {
            absent: features.to_vec(),
            pretended: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_takes_named_features_as_absent_and_refuses_unknown_names() {
        let mut support = KernelSupport::default();
        support
            .pretend_absent(Some("drop-reasons, netfilter-programs"))
            .unwrap();
        assert!(!support.has(Feature::DropReasons));
        assert!(!support.has(Feature::NetfilterPrograms));
        assert!(support.has(Feature::Tcx));
        support.require_essentials().unwrap();
        let notes = support.notes(false);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with(
            "this kernel has no drop reasons (enum skb_drop_reason) (taken as absent: PKTTRACE_PRETEND_ABSENT): drops are told"
        ));

        let unknown = KernelSupport::default()
            .pretend_absent(Some("kprobes"))
            .unwrap_err();
        assert!(unknown.to_string().contains("\"kprobes\""), "{unknown}");
    }

    #[test]
    fn without_an_essential_feature_pkttrace_refuses_to_trace() {
        let mut support = KernelSupport::default();
        support.pretend_absent(Some("ring-buffer")).unwrap();
        let error = support.require_essentials().unwrap_err().to_string();
        assert_eq!(
            error,
            "this kernel has no BPF ring buffer (taken as absent: PKTTRACE_PRETEND_ABSENT): pkttrace cannot trace here; docs/kernels.md lists what it needs"
        );
    }

    #[test]
    fn tcx_matters_only_when_payloads_are_decoded() {
        let support = KernelSupport::with_absent(&[Feature::Tcx]);
        assert!(support.notes(false).is_empty());
        assert_eq!(
            support.notes(true),
            ["this kernel has no TCX links: DNS over TCP is not decoded (UDP is)"]
        );
    }

    /// This machine's kernel has every feature (PLATFORM.md), with the
    /// argument counts of 6.11 and later.
    #[test]
    fn this_kernel_has_every_feature() {
        let btf = KernelBtf::read(super::super::offsets::VMLINUX_BTF).unwrap();
        for feature in Feature::ALL {
            assert!(feature.present_in(&btf), "{feature}");
        }
        assert_eq!(btf.tracepoint_arguments("kfree_skb"), Some(4));
        assert_eq!(btf.tracepoint_arguments("consume_skb"), Some(2));
        assert_eq!(btf.tracepoint_arguments("sock_recv_length"), Some(3));
        assert!(!btf.enum_has("bpf_attach_type", "BPF_NO_SUCH_ATTACH"));
        assert_eq!(btf.tracepoint_arguments("no_such_tracepoint"), None);
    }
}
