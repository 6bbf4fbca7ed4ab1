//! Kernel struct member offsets, read from the running kernel's BTF: the
//! programs cannot be compiled against one kernel's layout.

use super::features::{Feature, KernelSupport};
use super::kernel_btf::KernelBtf;
use anyhow::{Result, anyhow};
use tracer_common::KernelOffsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// What pkttrace needs from the kernel's BTF, read in one pass.
pub struct KernelFacts {
    pub offsets: KernelOffsets,
    pub types: KernelTypes,
    /// Empty when the kernel has none.
    pub drop_reasons: Vec<(u32, String)>,
    pub support: KernelSupport,
}

/// BTF ids the netfilter programs are linked with.
#[derive(Clone, Copy)]
pub struct KernelTypes {
    /// `struct iphdr`: what the programs cast a packet's header to.
    pub ip_header: u32,
    /// The kfunc `bpf_rdonly_cast`, which does that cast (None: the kernel
    /// has no netfilter programs to load).
    pub rdonly_cast: Option<u32>,
}

impl KernelFacts {
    pub fn read() -> Result<Self> {
        let btf = load_kernel_btf()?;
        let support = KernelSupport::probe(&btf)?;
        let mut offsets = kernel_offsets(
            |structure, path| btf.member_offset(structure, path),
            |structure| btf.struct_size(structure),
        )?;
        offsets.has_drop_reason = support.has(Feature::DropReasons).into();
        offsets.has_free_location = support.has(Feature::FreeLocations).into();
        Ok(Self {
            offsets,
            types: KernelTypes {
                ip_header: btf.struct_id("iphdr")?,
                rdonly_cast: support
                    .has(Feature::NetfilterPrograms)
                    .then(|| btf.function_id("bpf_rdonly_cast"))
                    .transpose()?,
            },
            drop_reasons: if support.has(Feature::DropReasons) {
                drop_reason_names(&btf)?
            } else {
                Vec::new()
            },
            support,
        })
    }
}

/// Returns memory freed after start-up (parsed BTF) to the system, so a
/// long trace does not keep it resident.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe { libc::malloc_trim(0) };
}

fn load_kernel_btf() -> Result<KernelBtf> {
    KernelBtf::read(VMLINUX_BTF).map_err(|error| {
        anyhow!("this kernel exposes no BTF at {VMLINUX_BTF} ({error:#}): pkttrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y; docs/kernels.md lists what it needs")
    })
}

/// The offsets the programs read at, from `at(struct, member path)` and
/// `size_of(struct)`.
fn kernel_offsets(
    at: impl Fn(&str, &str) -> Result<u32>,
    size_of: impl Fn(&str) -> Result<u32>,
) -> Result<KernelOffsets> {
    Ok(KernelOffsets {
        skb_dev: at("sk_buff", "dev")?,
        skb_head: at("sk_buff", "head")?,
        skb_data: at("sk_buff", "data")?,
        skb_network_header: at("sk_buff", "network_header")?,
        skb_mac_header: at("sk_buff", "mac_header")?,
        skb_nfct: at("sk_buff", "_nfct")?,
        skb_protocol: at("sk_buff", "protocol")?,
        skb_tail: at("sk_buff", "tail")?,
        dev_ifindex: at("net_device", "ifindex")?,
        dev_name: at("net_device", "name")?,
        dev_type: at("net_device", "type")?,
        dev_nd_net: at("net_device", "nd_net.net")?,
        net_ns_inum: at("net", "ns.inum")?,
        nf_state_hook: at("nf_hook_state", "hook")?,
        nf_state_in: at("nf_hook_state", "in")?,
        nf_state_out: at("nf_hook_state", "out")?,
        nf_state_net: at("nf_hook_state", "net")?,
        flowi4_oif: at("flowi4", "__fl_common.flowic_oif")?,
        flowi4_iif: at("flowi4", "__fl_common.flowic_iif")?,
        flowi4_proto: at("flowi4", "__fl_common.flowic_proto")?,
        flowi4_saddr: at("flowi4", "saddr")?,
        flowi4_daddr: at("flowi4", "daddr")?,
        flowi6_oif: at("flowi6", "__fl_common.flowic_oif")?,
        flowi6_iif: at("flowi6", "__fl_common.flowic_iif")?,
        flowi6_proto: at("flowi6", "__fl_common.flowic_proto")?,
        flowi6_saddr: at("flowi6", "saddr")?,
        flowi6_daddr: at("flowi6", "daddr")?,
        fib6_res_nh: at("fib6_result", "nh")?,
        fib6_res_f6i: at("fib6_result", "f6i")?,
        fib6_res_type: at("fib6_result", "fib6_type")?,
        fib6_table_id: at("fib6_table", "tb6_id")?,
        net_fib6_null_entry: at("net", "ipv6.fib6_null_entry")?,
        nhc_dev: at("fib_nh_common", "nhc_dev")?,
        nhc_gw: at("fib_nh_common", "nhc_gw")?,
        nhc_scope: at("fib_nh_common", "nhc_scope")?,
        task_nsproxy: at("task_struct", "nsproxy")?,
        nsproxy_net_ns: at("nsproxy", "net_ns")?,
        task_group_leader: at("task_struct", "group_leader")?,
        task_thread_pid: at("task_struct", "thread_pid")?,
        pid_level: at("pid", "level")?,
        pid_numbers: at("pid", "numbers")?,
        upid_size: size_of("upid")?,
        task_flags: at("task_struct", "flags")?,
        task_stack: at("task_struct", "stack")?,
        sk_addrpair: at("sock", "__sk_common.skc_addrpair")?,
        sk_portpair: at("sock", "__sk_common.skc_portpair")?,
        sk_family: at("sock", "__sk_common.skc_family")?,
        sk_net: at("sock", "__sk_common.skc_net.net")?,
        sk_protocol: at("sock", "sk_protocol")?,
        sk_v6_daddr: at("sock", "__sk_common.skc_v6_daddr")?,
        sk_v6_rcv_saddr: at("sock", "__sk_common.skc_v6_rcv_saddr")?,
        // Set from the feature probe.
        has_drop_reason: 0,
        has_free_location: 0,
    })
}

/// Names of `enum skb_drop_reason`, indexed by value, without the common prefix.
fn drop_reason_names(btf: &KernelBtf) -> Result<Vec<(u32, String)>> {
    Ok(btf
        .enum_values("skb_drop_reason")?
        .into_iter()
        .map(|(value, name)| {
            let name = name.trim_start_matches("SKB_DROP_REASON_").to_string();
            (value, name)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{Context, bail};
    use btf_rs::{Btf, Type};

    /// The running kernel's BTF, read by pkttrace's own reader and by
    /// btf-rs: every offset, size and drop reason must agree.
    #[test]
    fn offsets_and_drop_reasons_agree_with_btf_rs() {
        let btf = load_kernel_btf().expect("this machine's kernel has BTF");
        let ours = kernel_offsets(
            |structure, path| btf.member_offset(structure, path),
            |structure| btf.struct_size(structure),
        )
        .expect("every member pkttrace reads exists");
        let reference = Btf::from_file(VMLINUX_BTF).unwrap();
        let theirs = kernel_offsets(
            |structure, path| member_offset(&reference, structure, path),
            |structure| Ok(named_struct(&reference, structure)?.size() as u32),
        )
        .unwrap();
        assert_eq!(ours, theirs);
        assert!(ours.skb_head > ours.skb_dev && ours.skb_nfct > ours.skb_dev);

        let reasons = drop_reason_names(&btf).unwrap();
        assert!(reasons.contains(&(12, "NETFILTER_DROP".to_string())));
        let Some(Type::Enum(enumeration)) = reference
            .resolve_types_by_name("skb_drop_reason")
            .unwrap()
            .into_iter()
            .find(|t| matches!(t, Type::Enum(_)))
        else {
            panic!("btf-rs finds no enum skb_drop_reason");
        };
        let expected: Vec<(u32, String)> = enumeration
            .members
            .iter()
            .map(|m| {
                let name = reference.resolve_name(m).unwrap();
                (
                    m.val(),
                    name.trim_start_matches("SKB_DROP_REASON_").to_string(),
                )
            })
            .collect();
        assert_eq!(reasons, expected);
    }

    /// The ids the netfilter programs are linked with name what btf-rs
    /// finds under those names.
    #[test]
    fn type_ids_agree_with_btf_rs() {
        let btf = load_kernel_btf().expect("this machine's kernel has BTF");
        let reference = Btf::from_file(VMLINUX_BTF).unwrap();
        for (name, ours) in [
            ("iphdr", btf.struct_id("iphdr").unwrap()),
            (
                "bpf_rdonly_cast",
                btf.function_id("bpf_rdonly_cast").unwrap(),
            ),
        ] {
            let theirs = reference.resolve_ids_by_name(name).unwrap();
            assert!(theirs.contains(&ours), "{name}: {ours} not in {theirs:?}");
        }
    }

    #[test]
    fn a_missing_member_or_bitfield_is_an_error() {
        let btf = load_kernel_btf().unwrap();
        let missing = btf.member_offset("sk_buff", "no_such_member").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "kernel BTF: struct sk_buff has no member no_such_member"
        );
        assert!(btf.member_offset("no_such_struct", "x").is_err());
        // sk_buff.nohdr is the second bit of a byte.
        let bitfield = btf.member_offset("sk_buff", "nohdr").unwrap_err();
        assert!(bitfield.to_string().contains("bitfield"), "{bitfield}");
    }

    /// btf-rs's answer: the member's offset through anonymous members.
    fn member_offset(btf: &Btf, structure: &str, path: &str) -> Result<u32> {
        let mut current = named_struct(btf, structure)?;
        let mut offset_bits = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (bits, member_type) = find_member(btf, &current, part)?
                .with_context(|| format!("btf-rs: no member {structure}.{path}"))?;
            offset_bits += bits;
            if parts.peek().is_some() {
                current = match strip_modifiers(btf, member_type)? {
                    Type::Struct(s) | Type::Union(s) => s,
                    _ => bail!("btf-rs: {structure}.{part} is not a struct"),
                };
            }
        }
        Ok(offset_bits / 8)
    }

    fn named_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct> {
        btf.resolve_types_by_name(name)?
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .with_context(|| format!("btf-rs: no struct {name}"))
    }

    fn find_member(
        btf: &Btf,
        structure: &btf_rs::Struct,
        name: &str,
    ) -> Result<Option<(u32, Type)>> {
        for member in &structure.members {
            let member_name = btf.resolve_name(member).unwrap_or_default();
            let member_type = btf.resolve_chained_type(member)?;
            if member_name == name {
                return Ok(Some((member.bit_offset(), member_type)));
            }
            if member_name.is_empty()
                && let Type::Struct(inner) | Type::Union(inner) = strip_modifiers(btf, member_type)?
                && let Some((bits, found)) = find_member(btf, &inner, name)?
            {
                return Ok(Some((member.bit_offset() + bits, found)));
            }
        }
        Ok(None)
    }

    fn strip_modifiers(btf: &Btf, mut t: Type) -> Result<Type> {
        loop {
            t = match &t {
                Type::Typedef(x) => btf.resolve_chained_type(x)?,
                Type::Const(x) => btf.resolve_chained_type(x)?,
                Type::Volatile(x) => btf.resolve_chained_type(x)?,
                Type::Restrict(x) => btf.resolve_chained_type(x)?,
                Type::TypeTag(x) => btf.resolve_chained_type(x)?,
                _ => return Ok(t),
            };
        }
    }
}
