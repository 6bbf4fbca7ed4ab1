//! Just enough of the kernel's BTF for pkttrace's start-up: struct member
//! offsets, a struct's size and an enum's names. A general BTF crate
//! (btf-rs) indexes every name and type of the ~5 MB vmlinux first, some
//! 200 ms of a 300 ms start-up budget; these dozen lookups need one pass
//! over the type records (a few milliseconds). The tests check every
//! answer against btf-rs.

use anyhow::{Context, Result, bail};

/// `enum btf_kind` values pkttrace looks at or must step over.
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

const BTF_MAGIC: u16 = 0xeb9f;
/// `struct btf_type`: name offset, info, size or type.
const TYPE_RECORD: usize = 12;

/// The raw BTF and where each type's record starts (index = type id).
pub struct KernelBtf {
    data: Vec<u8>,
    strings: usize,
    strings_end: usize,
    types: Vec<usize>,
}

/// One `struct btf_type` header.
#[derive(Clone, Copy)]
struct TypeRecord {
    at: usize,
    name: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
}

impl KernelBtf {
    pub fn read(path: &str) -> Result<Self> {
        let data = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        Self::parse(data).with_context(|| format!("{path} is not BTF pkttrace can read"))
    }

    fn parse(data: Vec<u8>) -> Result<Self> {
        let u32_at = |at: usize| -> Result<u32> { read_u32(&data, at) };
        let magic = data.get(..2).context("too short")?;
        if u16::from_ne_bytes([magic[0], magic[1]]) != BTF_MAGIC {
            bail!("no BTF magic in this byte order");
        }
        let header_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let first_type = header_len + type_off;
        let types_end = first_type + type_len;
        let strings = header_len + str_off;
        if types_end > data.len() || strings + str_len > data.len() {
            bail!("sections run past the end");
        }
        // Type id 0 is void and has no record.
        let mut types = vec![0];
        let mut at = first_type;
        while at < types_end {
            types.push(at);
            let record = record_at(&data, at)?;
            at += TYPE_RECORD + trailing_bytes(&record);
        }
        Ok(Self {
            data,
            strings,
            strings_end: strings + str_len,
            types,
        })
    }

    fn record(&self, id: u32) -> Result<TypeRecord> {
        let at = *self
            .types
            .get(id as usize)
            .filter(|_| id != 0)
            .with_context(|| format!("kernel BTF has no type {id}"))?;
        record_at(&self.data, at)
    }

    fn name(&self, offset: u32) -> &str {
        let start = self.strings + offset as usize;
        let bytes = self.data.get(start..self.strings_end).unwrap_or_default();
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap_or_default()
    }

    /// The first type of `kind` named `name` that has members
    /// (a forward declaration has none).
    fn named(&self, name: &str, kind: u32) -> Option<TypeRecord> {
        self.id_of(name, kind, true)
            .and_then(|id| self.record(id).ok())
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn strip_modifiers(&self, mut id: u32) -> Result<TypeRecord> {
        loop {
            let record = self.record(id)?;
            match record.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = record.size_or_type
                }
                _ => return Ok(record),
            }
        }
    }

    /// `(name offset, type id, offset in bits)` of each member.
    fn members(&self, record: &TypeRecord) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        let (at, kind_flag) = (record.at + TYPE_RECORD, record.kind_flag);
        (0..record.vlen).filter_map(move |i| {
            let member = at + i * 12;
            let offset = read_u32(&self.data, member + 8).ok()?;
            // With kind_flag the top byte is a bitfield's size.
            let bits = if kind_flag {
                offset & 0x00ff_ffff
            } else {
                offset
            };
            Some((
                read_u32(&self.data, member).ok()?,
                read_u32(&self.data, member + 4).ok()?,
                bits,
            ))
        })
    }

    /// `(offset in bits, type id)` of member `name`, looking through
    /// anonymous structs and unions the way C does.
    fn find_member(&self, record: &TypeRecord, name: &str) -> Result<Option<(u32, u32)>> {
        for (member_name, member_type, bits) in self.members(record) {
            let member_name = self.name(member_name);
            if member_name == name {
                return Ok(Some((bits, member_type)));
            }
            if member_name.is_empty() {
                let inner = self.strip_modifiers(member_type)?;
                if matches!(inner.kind, kind::STRUCT | kind::UNION)
                    && let Some((inner_bits, found)) = self.find_member(&inner, name)?
                {
                    return Ok(Some((bits + inner_bits, found)));
                }
            }
        }
        Ok(None)
    }

    /// Byte offset of `path` (dot-separated members) inside `struct structure`.
    pub fn member_offset(&self, structure: &str, path: &str) -> Result<u32> {
        let mut current = self
            .named(structure, kind::STRUCT)
            .with_context(|| format!("kernel BTF has no struct {structure}"))?;
        let mut offset_bits = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (bits, member_type) = self
                .find_member(&current, part)?
                .with_context(|| format!("kernel BTF: struct {structure} has no member {path}"))?;
            offset_bits += bits;
            if parts.peek().is_some() {
                current = self.strip_modifiers(member_type)?;
                if !matches!(current.kind, kind::STRUCT | kind::UNION) {
                    bail!("kernel BTF: {structure}.{part} is not a struct");
                }
            }
        }
        if !offset_bits.is_multiple_of(8) {
            bail!("kernel BTF: {structure}.{path} is a bitfield");
        }
        Ok(offset_bits / 8)
    }

    /// The type id of `struct name`, as BPF programs name kernel types.
    pub fn struct_id(&self, name: &str) -> Result<u32> {
        self.id_of(name, kind::STRUCT, true)
            .with_context(|| format!("kernel BTF has no struct {name}"))
    }

    /// The type id of the kernel function `name` (a kfunc's, for a call).
    pub fn function_id(&self, name: &str) -> Result<u32> {
        self.id_of(name, kind::FUNC, false)
            .with_context(|| format!("kernel BTF has no function {name}"))
    }

    /// The first type of kind `wanted` named `name`; `with_members`: one
    /// that has members (a forward declaration has none).
    fn id_of(&self, name: &str, wanted: u32, with_members: bool) -> Option<u32> {
        (1..self.types.len() as u32).find(|id| {
            self.record(*id).is_ok_and(|r| {
                r.kind == wanted && (!with_members || r.vlen > 0) && self.name(r.name) == name
            })
        })
    }

    /// `sizeof(struct name)`.
    pub fn struct_size(&self, name: &str) -> Result<u32> {
        self.named(name, kind::STRUCT)
            .map(|r| r.size_or_type)
            .with_context(|| format!("kernel BTF has no struct {name}"))
    }

    /// How many arguments tracepoint `name` hands a tp_btf program: its
    /// `btf_trace_<name>` typedef is a pointer to a function whose first
    /// parameter is the probe's own data. None: no such tracepoint.
    pub fn tracepoint_arguments(&self, name: &str) -> Option<usize> {
        let typedef = self.id_of(&format!("btf_trace_{name}"), kind::TYPEDEF, false)?;
        let pointer = self.record(self.record(typedef).ok()?.size_or_type).ok()?;
        let function = self.record(pointer.size_or_type).ok()?;
        (pointer.kind == kind::PTR && function.kind == kind::FUNC_PROTO)
            .then(|| function.vlen.saturating_sub(1))
    }

    /// The kernel defines `enum name`.
    pub fn has_enum(&self, name: &str) -> bool {
        self.named(name, kind::ENUM).is_some()
    }

    /// `enum name` has a member called `member`.
    pub fn enum_has(&self, name: &str, member: &str) -> bool {
        self.enum_values(name)
            .is_ok_and(|values| values.iter().any(|(_, m)| m == member))
    }

    /// `(value, name)` of each member of `enum name`.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(u32, String)>> {
        let record = self
            .named(name, kind::ENUM)
            .with_context(|| format!("kernel BTF has no enum {name}"))?;
        (0..record.vlen)
            .map(|i| {
                let at = record.at + TYPE_RECORD + i * 8;
                let name = self.name(read_u32(&self.data, at)?).to_string();
                Ok((read_u32(&self.data, at + 4)?, name))
            })
            .collect()
    }
}

fn read_u32(data: &[u8], at: usize) -> Result<u32> {
    let bytes = data.get(at..at + 4).context("truncated")?;
    Ok(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn record_at(data: &[u8], at: usize) -> Result<TypeRecord> {
    let info = read_u32(data, at + 4)?;
    Ok(TypeRecord {
        at,
        name: read_u32(data, at)?,
        kind: (info >> 24) & 0x1f,
        vlen: (info & 0xffff) as usize,
        kind_flag: info >> 31 == 1,
        size_or_type: read_u32(data, at + 8)?,
    })
}

/// Bytes that follow a type's record, by kind (the kernel's btf_type_size).
fn trailing_bytes(record: &TypeRecord) -> usize {
    match record.kind {
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::ARRAY => 12,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * record.vlen,
        kind::ENUM | kind::FUNC_PROTO => 8 * record.vlen,
        _ => 0,
    }
}
