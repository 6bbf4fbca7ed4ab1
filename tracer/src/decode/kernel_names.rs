//! Names the kernel uses for numbers in events: drop reasons (from the BTF
//! enum `skb_drop_reason`) and code addresses (from /proc/kallsyms).

use std::{
    collections::HashMap,
    io::BufRead,
    sync::{Mutex, OnceLock},
    thread::JoinHandle,
};

const KALLSYMS: &str = "/proc/kallsyms";

/// Text symbols: address and name.
type Symbols = Vec<(u64, String)>;

pub struct KernelNames {
    drop_reasons: HashMap<u32, String>,
    /// Where the kernel's softirq loop lies, found before attaching.
    softirq_loop: Option<(u64, u64)>,
    /// Text symbols sorted by address; read on a thread of their own (some
    /// 100 ms of kallsyms) while start-up goes on.
    symbols: OnceLock<Symbols>,
    reading_symbols: Mutex<Option<JoinHandle<Symbols>>>,
}

impl KernelNames {
    /// `drop_reasons` come from BTF; code addresses from /proc/kallsyms.
    pub fn from_kernel(drop_reasons: Vec<(u32, String)>) -> Self {
        let softirq_loop = std::fs::File::open(KALLSYMS)
            .ok()
            .and_then(|file| find_softirq_loop(std::io::BufReader::new(file)));
        let reading = std::thread::spawn(|| {
            let kallsyms = std::fs::read_to_string(KALLSYMS).unwrap_or_default();
            sorted(kallsyms.lines().filter_map(text_symbol).collect())
        });
        Self {
            drop_reasons: drop_reasons.into_iter().collect(),
            softirq_loop,
            symbols: OnceLock::new(),
            reading_symbols: Mutex::new(Some(reading)),
        }
    }

    /// Names from recorded tables, as a test has them.
    #[cfg(test)]
    pub fn from_parts(drop_reasons: Vec<(u32, String)>, symbols: Symbols) -> Self {
        let symbols = sorted(symbols);
        let softirq_loop = function_range(&symbols, "handle_softirqs")
            .or_else(|| function_range(&symbols, "__do_softirq"));
        Self {
            drop_reasons: drop_reasons.into_iter().collect(),
            softirq_loop,
            symbols: OnceLock::from(symbols),
            reading_symbols: Mutex::new(None),
        }
    }

    fn symbols(&self) -> &[(u64, String)] {
        self.symbols.get_or_init(|| {
            let reading = self.reading_symbols.lock().map(|mut r| r.take());
            match reading {
                Ok(Some(handle)) => handle.join().unwrap_or_default(),
                _ => Vec::new(),
            }
        })
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
        self.softirq_loop
    }

    /// `function+0xoffset` for a kernel code address, or the bare address when
    /// kallsyms hides addresses (kptr_restrict) or does not know it.
    pub fn symbol(&self, address: u64) -> String {
        let symbols = self.symbols();
        let index = symbols.partition_point(|(start, _)| *start <= address);
        match index.checked_sub(1).map(|i| &symbols[i]) {
            Some((start, name)) if address - start < 0x10_0000 => match address - start {
                0 => name.clone(),
                offset => format!("{name}+{offset:#x}"),
            },
            _ => format!("{address:#x}"),
        }
    }
}

/// A text (code) symbol of a kallsyms line: address and name.
fn text_symbol(line: &str) -> Option<(u64, String)> {
    let mut fields = line.split_whitespace();
    let address = u64::from_str_radix(fields.next()?, 16).ok()?;
    let kind = fields.next()?;
    let name = fields.next()?;
    (address != 0 && matches!(kind, "t" | "T")).then(|| (address, name.to_string()))
}

fn sorted(mut symbols: Symbols) -> Symbols {
    symbols.sort_unstable();
    symbols
}

/// Where the code of kernel function `name` lies: [start, end), the end
/// being the next symbol's start.
#[cfg(test)]
fn function_range(symbols: &[(u64, String)], name: &str) -> Option<(u64, u64)> {
    let index = symbols.iter().position(|(_, n)| n == name)?;
    let start = symbols[index].0;
    let end = symbols[index + 1..]
        .iter()
        .map(|(address, _)| *address)
        .find(|address| *address > start)?;
    Some((start, end))
}

/// The softirq loop's code range from kallsyms, read only as far as needed:
/// `handle_softirqs` (Linux 6.10 on) comes early and ends at the next
/// symbol listed at a higher address; `__do_softirq` is the loop of older
/// kernels (and a mere wrapper on newer ones, so only a fallback).
fn find_softirq_loop(kallsyms: impl BufRead) -> Option<(u64, u64)> {
    let mut handle_softirqs = None;
    let mut do_softirq = None;
    let mut do_softirq_range = None;
    for line in kallsyms.lines() {
        let Some((address, name)) = line.ok().as_deref().and_then(text_symbol) else {
            continue;
        };
        if let Some(start) = handle_softirqs
            && address > start
        {
            return Some((start, address));
        }
        if let Some(start) = do_softirq
            && address > start
            && do_softirq_range.is_none()
        {
            do_softirq_range = Some((start, address));
        }
        match name.as_str() {
            "handle_softirqs" => handle_softirqs = Some(address),
            "__do_softirq" => do_softirq = Some(address),
            _ => {}
        }
    }
    do_softirq_range
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_softirq_loop_ends_at_the_next_higher_symbol() {
        let kallsyms = "\
ffffffff82270310 T __do_softirq
ffffffff81369560 t __pfx_handle_softirqs
ffffffff81369570 t handle_softirqs
ffffffff81369570 t handle_softirqs_alias
0000000000000000 t hidden
ffffffff81369800 t __pfx___irq_exit_rcu
ffffffff82270330 T next
";
        assert_eq!(
            find_softirq_loop(kallsyms.as_bytes()),
            Some((0xffffffff81369570, 0xffffffff81369800))
        );
        let older = "ffffffff82270310 T __do_softirq\nffffffff82270330 T next\n";
        assert_eq!(
            find_softirq_loop(older.as_bytes()),
            Some((0xffffffff82270310, 0xffffffff82270330))
        );
    }

    /// The early, partial read of kallsyms finds what the whole sorted
    /// table says.
    #[test]
    fn the_partial_read_agrees_with_the_whole_table_on_this_kernel() {
        let kernel = KernelNames::from_kernel(Vec::new());
        let kallsyms = std::fs::read_to_string(KALLSYMS).unwrap();
        let whole = KernelNames::from_parts(
            Vec::new(),
            kallsyms.lines().filter_map(text_symbol).collect(),
        );
        assert!(kernel.softirq_loop().is_some());
        assert_eq!(kernel.softirq_loop(), whole.softirq_loop());
        let (start, _) = whole.softirq_loop().unwrap();
        assert_eq!(kernel.symbol(start + 4), whole.symbol(start + 4));
    }
}
