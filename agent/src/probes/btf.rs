//! Just enough of a BTF reader to find struct member offsets and enum values
//! in the running kernel's type information at load time, so no kernel
//! struct offset is baked into the binary (Rust eBPF has no CO-RE).

use std::{collections::HashMap, path::Path};

/// Errors reading BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("BTF has no {kind} named `{name}`")]
    NotFound { kind: &'static str, name: String },
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Copy, Debug)]
struct TypeRec {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// Byte offset of the trailing data (members, enum values) in `types`.
    extra: usize,
}

/// Parsed BTF: the type records and the string table.
pub struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// Index 0 is the void type; ids start at 1.
    recs: Vec<TypeRec>,
    by_name: HashMap<(u32, String), u32>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Btf::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic (or big-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?
            .to_vec();
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        let mut recs = vec![TypeRec {
            name_off: 0,
            kind: 0,
            vlen: 0,
            kind_flag: false,
            extra: 0,
        }];
        let mut off = 0;
        while off < types.len() {
            let name_off = u32_at(&types, off)?;
            let info = u32_at(&types, off + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let extra = off + 12;
            let extra_len = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                _ => 0,
            };
            recs.push(TypeRec {
                name_off,
                kind,
                vlen,
                kind_flag: info >> 31 == 1,
                extra,
            });
            off = extra + extra_len;
        }
        let mut btf = Btf {
            types,
            strings,
            recs,
            by_name: HashMap::new(),
        };
        for id in 1..btf.recs.len() {
            let r = btf.recs[id];
            if r.name_off != 0
                && matches!(
                    r.kind,
                    KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_TYPEDEF
                )
            {
                let name = btf.str_at(r.name_off).to_string();
                btf.by_name.entry((r.kind, name)).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous
    /// structs and unions (layout randomization and grouping put members there).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .by_name
            .get(&(KIND_STRUCT, name.to_string()))
            .ok_or_else(|| BtfError::NotFound {
                kind: "struct",
                name: name.into(),
            })?;
        self.find_member(id, member, 0)?
            .ok_or_else(|| BtfError::NotFound {
                kind: "member",
                name: format!("{name}.{member}"),
            })
    }

    fn find_member(&self, id: u32, member: &str, base_bits: u32) -> Result<Option<u32>, BtfError> {
        let r = self.recs[id as usize];
        for i in 0..r.vlen as usize {
            let m = r.extra + 12 * i;
            let m_name = u32_at(&self.types, m)?;
            let m_type = u32_at(&self.types, m + 4)?;
            let mut m_off = u32_at(&self.types, m + 8)?;
            if r.kind_flag {
                m_off &= 0x00ff_ffff; // high byte is a bitfield size
            }
            if m_name == 0 {
                let t = self.skip_modifiers(m_type);
                if matches!(
                    self.recs.get(t as usize).map(|r| r.kind),
                    Some(KIND_STRUCT | KIND_UNION)
                ) {
                    if let Some(o) = self.find_member(t, member, base_bits + m_off)? {
                        return Ok(Some(o));
                    }
                }
            } else if self.str_at(m_name) == member {
                return Ok(Some((base_bits + m_off) / 8));
            }
        }
        Ok(None)
    }

    fn skip_modifiers(&self, mut id: u32) -> u32 {
        // typedef, volatile, const, restrict, type_tag: follow `type`.
        for _ in 0..16 {
            let Some(r) = self.recs.get(id as usize) else {
                return id;
            };
            if !matches!(r.kind, 8..=11 | 18) {
                return id;
            }
            id = u32_at(&self.types, r.extra - 4).unwrap_or(0);
        }
        id
    }

    /// Arguments of BTF tracepoint `name` (what `tp_btf/<name>` passes), or
    /// `None` when this kernel has no such tracepoint. The kernel describes
    /// each as `typedef void (*btf_trace_<name>)(void *ctx, args...)`.
    pub fn tracepoint_args(&self, name: &str) -> Option<usize> {
        let id = *self
            .by_name
            .get(&(KIND_TYPEDEF, format!("btf_trace_{name}")))?;
        let ptr = self.type_of(id)?;
        if self.recs.get(ptr as usize)?.kind != KIND_PTR {
            return None;
        }
        let proto = self.recs.get(self.type_of(ptr)? as usize)?;
        (proto.kind == KIND_FUNC_PROTO).then(|| (proto.vlen as usize).saturating_sub(1))
    }

    /// The `type` field of a typedef, pointer or modifier record.
    fn type_of(&self, id: u32) -> Option<u32> {
        let r = self.recs.get(id as usize)?;
        u32_at(&self.types, r.extra - 4).ok()
    }

    /// Value of enumerator `value` in `enum name`.
    pub fn enum_value(&self, name: &str, value: &str) -> Result<i64, BtfError> {
        let not_found = || BtfError::NotFound {
            kind: "enum",
            name: format!("{name}::{value}"),
        };
        let id = self
            .by_name
            .get(&(KIND_ENUM, name.to_string()))
            .or_else(|| self.by_name.get(&(KIND_ENUM64, name.to_string())))
            .ok_or_else(not_found)?;
        let r = self.recs[*id as usize];
        let width = if r.kind == KIND_ENUM { 8 } else { 12 };
        for i in 0..r.vlen as usize {
            let e = r.extra + width * i;
            if self.str_at(u32_at(&self.types, e)?) == value {
                let lo = u32_at(&self.types, e + 4)?;
                return Ok(if r.kind == KIND_ENUM {
                    lo as i32 as i64
                } else {
                    ((u32_at(&self.types, e + 8)? as u64) << 32 | lo as u64) as i64
                });
            }
        }
        Err(not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, clearly not").is_err());
    }

    /// Cross-checks against the running kernel, where there is one. The
    /// numbers themselves differ between kernels; their relations do not.
    #[test]
    fn reads_task_struct_from_running_kernel() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("skipped: {VMLINUX} absent (kernel without BTF)");
            return;
        }
        let btf = Btf::from_file(Path::new(VMLINUX)).unwrap();
        let comm = btf.member_offset("task_struct", "comm").unwrap();
        let leader = btf.member_offset("task_struct", "group_leader").unwrap();
        assert!(comm > 0 && leader > 0 && comm != leader);
        assert_eq!(leader % 8, 0, "a pointer is 8-byte aligned");
        // sk_buff drop reasons: the first is fixed by the kernel ABI.
        assert_eq!(
            btf.enum_value("skb_drop_reason", "SKB_NOT_DROPPED_YET")
                .unwrap(),
            0
        );
        assert!(btf.member_offset("task_struct", "no_such_member").is_err());
        // sys_enter(regs, id) exists on every kernel syscope supports.
        assert_eq!(btf.tracepoint_args("sys_enter"), Some(2));
        assert_eq!(btf.tracepoint_args("no_such_tracepoint"), None);
    }
}
