//! Names the kernel uses for numbers in events: drop reasons (from the BTF
//! enum `skb_drop_reason`) and code addresses (from /proc/kallsyms).

use std::collections::HashMap;

pub struct KernelNames {
    drop_reasons: HashMap<u32, String>,
    /// Text symbols sorted by address.
    symbols: Vec<(u64, String)>,
}

impl KernelNames {
    /// `drop_reasons` come from BTF; code addresses from /proc/kallsyms.
    pub fn from_kernel(drop_reasons: Vec<(u32, String)>) -> Self {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let symbols = kallsyms
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let address = u64::from_str_radix(fields.next()?, 16).ok()?;
                let kind = fields.next()?;
                let name = fields.next()?;
                (address != 0 && matches!(kind, "t" | "T")).then(|| (address, name.to_string()))
            })
            .collect();
        Self::from_parts(drop_reasons, symbols)
    }

    pub fn from_parts(drop_reasons: Vec<(u32, String)>, mut symbols: Vec<(u64, String)>) -> Self {
        symbols.sort_unstable();
        Self {
            drop_reasons: drop_reasons.into_iter().collect(),
            symbols,
        }
    }

    pub fn drop_reason(&self, value: u32) -> String {
        self.drop_reasons
            .get(&value)
            .cloned()
            .unwrap_or_else(|| format!("reason {value}"))
    }

    /// Where the kernel's softirq loop lies: `handle_softirqs` since Linux
    /// 6.10, `__do_softirq` before.
    pub fn softirq_loop(&self) -> Option<(u64, u64)> {
        self.function_range("handle_softirqs")
            .or_else(|| self.function_range("__do_softirq"))
    }

    /// Where the code of kernel function `name` lies: [start, end), the end
    /// being the next symbol's start.
    fn function_range(&self, name: &str) -> Option<(u64, u64)> {
        let index = self.symbols.iter().position(|(_, n)| n == name)?;
        let start = self.symbols[index].0;
        let end = self.symbols[index + 1..]
            .iter()
            .map(|(address, _)| *address)
            .find(|address| *address > start)?;
        Some((start, end))
    }

    /// `function+0xoffset` for a kernel code address, or the bare address when
    /// kallsyms hides addresses (kptr_restrict) or does not know it.
    pub fn symbol(&self, address: u64) -> String {
        let index = self.symbols.partition_point(|(start, _)| *start <= address);
        match index.checked_sub(1).map(|i| &self.symbols[i]) {
            Some((start, name)) if address - start < 0x10_0000 => match address - start {
                0 => name.clone(),
                offset => format!("{name}+{offset:#x}"),
            },
            _ => format!("{address:#x}"),
        }
    }
}
