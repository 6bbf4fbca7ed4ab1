//! Names the kernel uses for numbers in events: drop reasons (from the BTF
//! enum `skb_drop_reason`) and code addresses (from /proc/kallsyms).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    thread::JoinHandle,
};

const KALLSYMS: &str = "/proc/kallsyms";

/// Text symbols: address and name.
type Symbols = Vec<(u64, String)>;

pub struct KernelNames {
    drop_reasons: HashMap<u32, Arc<str>>,
    /// Text symbols sorted by address; read on a thread of their own (some
    /// 100 ms of kallsyms) while start-up goes on.
    symbols: OnceLock<Symbols>,
    reading_symbols: Mutex<Option<JoinHandle<Symbols>>>,
    /// Each code address's name, made once: a followed stream frees its
    /// packets at the same few places, and looking up and formatting the
    /// name for every event was an allocation each.
    named_locations: Mutex<foldhash::HashMap<u64, Arc<str>>>,
}

/// Most code addresses whose names are kept (a few dozen are usual).
const MAX_NAMED_LOCATIONS: usize = 4096;

impl KernelNames {
    /// `drop_reasons` come from BTF; code addresses from /proc/kallsyms.
    pub fn from_kernel(drop_reasons: Vec<(u32, String)>) -> Self {
        let reading = std::thread::spawn(|| {
            let kallsyms = std::fs::read_to_string(KALLSYMS).unwrap_or_default();
            sorted(kallsyms.lines().filter_map(text_symbol).collect())
        });
        Self {
            drop_reasons: shared(drop_reasons),
            symbols: OnceLock::new(),
            reading_symbols: Mutex::new(Some(reading)),
            named_locations: Mutex::default(),
        }
    }

    /// Names from recorded tables, as a test has them.
    #[cfg(test)]
    pub fn from_parts(drop_reasons: Vec<(u32, String)>, symbols: Symbols) -> Self {
        Self {
            drop_reasons: shared(drop_reasons),
            symbols: OnceLock::from(sorted(symbols)),
            reading_symbols: Mutex::new(None),
            named_locations: Mutex::default(),
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

    /// Whether kallsyms is read: asking for a symbol would not wait.
    pub fn symbols_ready(&self) -> bool {
        self.symbols.get().is_some()
            || self
                .reading_symbols
                .lock()
                .is_ok_and(|r| r.as_ref().is_none_or(JoinHandle::is_finished))
    }

    /// Where the kernel function `name` starts and how many bytes it spans
    /// (up to the next text symbol); None when kallsyms hides or lacks it.
    pub fn function_extent(&self, name: &str) -> Option<(u64, u64)> {
        let symbols = self.symbols();
        let at = symbols.iter().position(|(_, symbol)| symbol == name)?;
        let (start, _) = symbols[at];
        let (end, _) = symbols.get(at + 1)?;
        Some((start, end - start))
    }

    pub fn drop_reason(&self, value: u32) -> Arc<str> {
        self.drop_reasons
            .get(&value)
            .cloned()
            .unwrap_or_else(|| format!("reason {value}").into())
    }

    /// `function+0xoffset` for a kernel code address, or the bare address when
    /// kallsyms hides addresses (kptr_restrict) or does not know it.
    pub fn symbol(&self, address: u64) -> Arc<str> {
        let Ok(mut named) = self.named_locations.lock() else {
            return self.name_of(address).into();
        };
        if let Some(name) = named.get(&address) {
            return name.clone();
        }
        if named.len() == MAX_NAMED_LOCATIONS {
            named.clear();
        }
        let name: Arc<str> = self.name_of(address).into();
        named.insert(address, name.clone());
        name
    }

    fn name_of(&self, address: u64) -> String {
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

fn shared(drop_reasons: Vec<(u32, String)>) -> HashMap<u32, Arc<str>> {
    drop_reasons
        .into_iter()
        .map(|(value, name)| (value, name.into()))
        .collect()
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
