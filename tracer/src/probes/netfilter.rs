//! A small loader for BPF netfilter programs, which aya 0.14 cannot load.
//!
//! The programs come in their own ELF object. Their references to maps are
//! resolved to the file descriptors of the maps aya already created for the
//! tracepoint object (same names), their read-only data (the kernel's struct
//! offsets, a BTF type id) goes into a frozen map of its own, so the verifier
//! sees constants, calls into `.text` (compiler builtins such as `memset`)
//! are linked by appending the called functions, calls of kernel functions
//! (kfuncs) by their BTF ids, and the program is loaded with
//! BPF_PROG_LOAD and attached with BPF_LINK_CREATE. The link is a file
//! descriptor: when pkttrace exits for any reason, even SIGKILL, the kernel
//! closes it and unhooks the program.

use std::{
    collections::HashMap,
    ffi::CString,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

use anyhow::{Context, Result, anyhow, bail};
use aya_obj::generated::{
    BPF_F_RDONLY_PROG, BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE, bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_map_type,
    bpf_prog_info, bpf_prog_type,
};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
use tracer_common::{IP_HEADER_TYPE_GLOBAL, KernelOffsets, OFFSETS_GLOBAL};

use super::offsets::KernelTypes;

/// The families the programs are linked for: IPv4 and IPv6 (whose hooks
/// and NAT priorities are numbered alike).
pub const NFPROTO_IPV4: u32 = 2;
pub const NFPROTO_IPV6: u32 = 10;
const INSN_SIZE: usize = size_of::<bpf_insn>();
const BPF_JMP_CALL: u8 = 0x85;
const BPF_LD_IMM64: u8 = 0x18;

/// A loaded netfilter program, ready to be attached at hooks.
pub struct NetfilterProgram {
    name: String,
    fd: OwnedFd,
}

/// An attached program; dropping it detaches.
pub struct NetfilterLink {
    _fd: OwnedFd,
}

/// Loads the program in section `netfilter/<name>` of `elf`, pointing its map
/// references at `maps` (name -> fd of a map aya created), its globals at
/// `offsets` and the BTF id of `struct iphdr`, its kfunc calls at the
/// kernel's functions.
pub fn load(
    elf: &[u8],
    name: &str,
    maps: &HashMap<String, BorrowedFd<'_>>,
    offsets: &KernelOffsets,
    types: KernelTypes,
) -> Result<NetfilterProgram> {
    let object = object::File::parse(elf).context("netfilter object: not an ELF file")?;
    let section_name = format!("netfilter/{name}");
    let section = object
        .section_by_name(&section_name)
        .with_context(|| format!("netfilter object has no section {section_name}"))?;
    let mut insns = to_insns(section.data()?)?;
    let text = object.section_by_name(".text");
    let rodata = object.section_by_name(".rodata");
    // Held until the program is loaded; the program then keeps the map.
    let rodata_map = rodata
        .as_ref()
        .map(|rodata| {
            let globals = [
                (OFFSETS_GLOBAL, plain_bytes(offsets)),
                (IP_HEADER_TYPE_GLOBAL, plain_bytes(&types.ip_header)),
            ];
            read_only_data(&object, rodata, &globals)
        })
        .transpose()?;

    // (instruction index, relocation) still to apply; functions of .text are
    // appended only when called, since the verifier rejects unreachable code.
    let mut pending: Vec<(usize, object::Relocation)> = section
        .relocations()
        .map(|(offset, r)| (offset as usize / INSN_SIZE, r))
        .collect();
    let mut appended: HashMap<u64, usize> = HashMap::new();
    while let Some((index, relocation)) = pending.pop() {
        let RelocationTarget::Symbol(symbol_index) = relocation.target() else {
            bail!("netfilter object: unsupported relocation in {section_name}");
        };
        let symbol = object.symbol_by_index(symbol_index)?;
        let symbol_name = symbol.name()?;
        let code = insns
            .get(index)
            .context("netfilter object: relocation outside the program")?
            .code;
        match code {
            BPF_LD_IMM64
                if let (Some(rodata), Some(fd)) = (&rodata, &rodata_map)
                    && symbol.section_index() == Some(rodata.index()) =>
            {
                // The address of read-only data: the map's value, at the
                // symbol's place plus the instruction's addend.
                let at = symbol.address() as i64 + i64::from(insns[index].imm);
                insns
                    .get_mut(index + 1)
                    .context("netfilter object: truncated 64-bit load")?
                    .imm = i32::try_from(at)?;
                insns[index].set_src_reg(BPF_PSEUDO_MAP_VALUE as u8);
                insns[index].imm = fd.as_raw_fd();
            }
            BPF_LD_IMM64 => {
                let fd = maps.get(symbol_name).with_context(|| {
                    format!("netfilter program refers to unknown map {symbol_name}")
                })?;
                insns[index].set_src_reg(BPF_PSEUDO_MAP_FD as u8);
                insns[index].imm = fd.as_raw_fd();
            }
            BPF_JMP_CALL if symbol.is_undefined() => {
                let id = match symbol_name {
                    "bpf_rdonly_cast" => types
                        .rdonly_cast
                        .context("this kernel has no kfunc bpf_rdonly_cast")?,
                    _ => bail!("netfilter program calls unknown kernel function {symbol_name}"),
                };
                insns[index].set_src_reg(BPF_PSEUDO_KFUNC_CALL as u8);
                insns[index].imm = i32::try_from(id)?;
            }
            BPF_JMP_CALL => {
                let text = text
                    .as_ref()
                    .filter(|t| symbol.section_index() == Some(t.index()))
                    .with_context(|| {
                        format!("netfilter program calls {symbol_name}, which is not in .text")
                    })?;
                let (address, size) = (symbol.address(), symbol.size());
                let target = match appended.get(&address) {
                    Some(&start) => start,
                    None => {
                        let start = insns.len();
                        let bytes = text.data()?;
                        let body = bytes
                            .get(address as usize..(address + size) as usize)
                            .context("netfilter object: function outside .text")?;
                        insns.extend(to_insns(body)?);
                        appended.insert(address, start);
                        pending.extend(
                            text.relocations()
                                .filter(|(offset, _)| (address..address + size).contains(offset))
                                .map(|(offset, r)| {
                                    (start + (offset - address) as usize / INSN_SIZE, r)
                                }),
                        );
                        start
                    }
                };
                insns[index].set_src_reg(BPF_PSEUDO_CALL as u8);
                insns[index].imm = (target as i64 - index as i64 - 1) as i32;
            }
            code => bail!("netfilter object: relocation on unexpected instruction {code:#x}"),
        }
    }

    // Without a log the verifier is much faster; the log is only asked for
    // to explain a refusal. A signal arriving while it works (Ctrl-C during
    // start-up) makes it give up with EAGAIN: the load is tried again, and
    // the signal is heard once pkttrace is running.
    let mut first_try = prog_load(name, &insns, None);
    for _ in 0..2 {
        if !matches!(&first_try, Err(e) if e.raw_os_error() == Some(libc::EAGAIN)) {
            break;
        }
        first_try = prog_load(name, &insns, None);
    }
    let fd = first_try.or_else(|error| {
        let mut log = vec![0u8; 1 << 20];
        match prog_load(name, &insns, Some(&mut log)) {
            Ok(fd) => Ok(fd),
            Err(_) => {
                let verifier = String::from_utf8_lossy(&log);
                let tail: Vec<&str> = verifier.trim_end_matches('\0').lines().rev().take(8).collect();
                Err(anyhow!(
                    "the kernel refused pkttrace's netfilter program ({error}); BPF netfilter programs need Linux 6.4 or later. Verifier: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ))
            }
        }
    })?;
    Ok(NetfilterProgram {
        name: name.to_string(),
        fd,
    })
}

/// The bytes of a plain-old-data value.
fn plain_bytes<T: aya::Pod>(value: &T) -> &[u8] {
    // SAFETY: Pod types are plain bytes without padding.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// A frozen, program-read-only map holding the object's `.rodata`, with
/// each of `globals` (name, value) written over: the verifier reads values
/// from such a map as constants.
fn read_only_data(
    object: &object::File<'_>,
    rodata: &object::Section<'_, '_>,
    globals: &[(&str, &[u8])],
) -> Result<OwnedFd> {
    let mut data = rodata.data()?.to_vec();
    for (name, bytes) in globals {
        let global = object
            .symbols()
            .find(|symbol| symbol.name() == Ok(name))
            .with_context(|| format!("netfilter object has no global {name}"))?;
        let at = global.address() as usize;
        data.get_mut(at..at + bytes.len())
            .with_context(|| format!("netfilter object: {name} outside .rodata"))?
            .copy_from_slice(bytes);
    }

    // SAFETY: zeroed, then the BPF_MAP_CREATE member is filled.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    let create = unsafe { &mut attr.__bindgen_anon_1 };
    create.map_type = bpf_map_type::BPF_MAP_TYPE_ARRAY as u32;
    create.key_size = 4;
    create.value_size = u32::try_from(data.len())?;
    create.max_entries = 1;
    create.map_flags = BPF_F_RDONLY_PROG;
    for (dst, src) in create.map_name.iter_mut().zip(b"pkttrace.rodata") {
        *dst = *src as _;
    }
    let map = bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr).context("cannot create a BPF map")?;

    let key = 0u32;
    // SAFETY: zeroed, then the element member is filled; key and value
    // outlive the call.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    let element = unsafe { &mut attr.__bindgen_anon_2 };
    element.map_fd = map.as_raw_fd() as u32;
    element.key = &key as *const u32 as u64;
    element.__bindgen_anon_1.value = data.as_ptr() as u64;
    bpf_call(bpf_cmd::BPF_MAP_UPDATE_ELEM, &mut attr).context("cannot fill a BPF map")?;

    // SAFETY: zeroed; the map's fd is set below (a plain write to a union).
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.__bindgen_anon_2.map_fd = map.as_raw_fd() as u32;
    bpf_call(bpf_cmd::BPF_MAP_FREEZE, &mut attr).context("cannot freeze a BPF map")?;
    Ok(map)
}

/// BPF_PROG_LOAD of a netfilter program, with the verifier's log in `log` when given.
fn prog_load(
    name: &str,
    insns: &[bpf_insn],
    log: Option<&mut Vec<u8>>,
) -> std::io::Result<OwnedFd> {
    let license = CString::new("GPL").expect("no NUL in a literal");
    // SAFETY: bpf_attr is a plain C union; all-zero is its documented default.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the BPF_PROG_LOAD member of the union.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = bpf_prog_type::BPF_PROG_TYPE_NETFILTER as u32;
    load.expected_attach_type = bpf_attach_type::BPF_NETFILTER as u32;
    load.insns = insns.as_ptr() as u64;
    load.insn_cnt = insns.len() as u32;
    load.license = license.as_ptr() as u64;
    for (dst, src) in load
        .prog_name
        .iter_mut()
        .zip(format!("pkttrace_{name}").bytes().take(15))
    {
        *dst = src as _;
    }
    if let Some(log) = log {
        load.log_level = 1;
        load.log_buf = log.as_mut_ptr() as u64;
        load.log_size = log.len() as u32;
    }
    bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
}

impl NetfilterProgram {
    /// Hooks the program into `family`'s `hook` at `priority` in the
    /// calling thread's network namespace.
    pub fn attach(&self, family: u32, hook: u32, priority: i32) -> Result<NetfilterLink> {
        // SAFETY: as above, zeroed then the BPF_LINK_CREATE member is filled.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        let link = unsafe { &mut attr.link_create };
        link.__bindgen_anon_1.prog_fd = self.fd.as_raw_fd() as u32;
        link.attach_type = bpf_attach_type::BPF_NETFILTER as u32;
        // SAFETY: the netfilter member of the attach-specific union.
        let netfilter = unsafe { &mut link.__bindgen_anon_3.netfilter };
        netfilter.pf = family;
        netfilter.hooknum = hook;
        netfilter.priority = priority;
        let fd = bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).with_context(|| {
            format!(
                "cannot attach netfilter program {} at hook {hook} priority {priority} (family {family})",
                self.name
            )
        })?;
        Ok(NetfilterLink { _fd: fd })
    }
}

fn to_insns(bytes: &[u8]) -> Result<Vec<bpf_insn>> {
    if !bytes.len().is_multiple_of(INSN_SIZE) {
        bail!("netfilter object: section size is not a whole number of instructions");
    }
    Ok(bytes
        .chunks_exact(INSN_SIZE)
        // SAFETY: bpf_insn is 8 bytes of plain integers; read_unaligned copes with any alignment.
        .map(|chunk| unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<bpf_insn>()) })
        .collect())
}

/// How many times the kernel skipped the program `fd` rather than run it
/// nested in itself (`recursion_misses` of its `bpf_prog_info`).
pub fn recursion_misses(fd: BorrowedFd<'_>) -> Option<u64> {
    // SAFETY: plain C structs; all-zero is their documented default.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing the BPF_OBJ_GET_INFO_BY_FD member of the union.
    let query = unsafe { &mut attr.info };
    query.bpf_fd = fd.as_raw_fd() as u32;
    query.info_len = size_of::<bpf_prog_info>() as u32;
    query.info = &mut info as *mut bpf_prog_info as u64;
    bpf_call(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr).ok()?;
    Some(info.recursion_misses)
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<OwnedFd> {
    let fd = bpf_call(cmd, attr)?;
    // SAFETY: a successful call returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The bpf system call; its non-negative result.
fn bpf_call(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<i64> {
    // SAFETY: attr is a valid, fully initialised bpf_attr of the size we pass.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret)
}
