//! What the kernel's numbers in events are: drop reasons (from the BTF enum
//! `skb_drop_reason`) and code addresses (from /proc/kallsyms), each typed
//! once: a drop reason by its kernel name, a code address by the extent of
//! the function it lies in.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    thread::JoinHandle,
};

use super::{CodeSite, DropReason, SiteRole};

const KALLSYMS: &str = "/proc/kallsyms";

/// Text symbols: address and name.
type Symbols = Vec<(u64, String)>;

pub struct KernelNames {
    drop_reasons: HashMap<u32, DropReason>,
    /// Text symbols sorted by address; read on a thread of their own (some
    /// 100 ms of kallsyms) while start-up goes on.
    symbols: OnceLock<Symbols>,
    reading_symbols: Mutex<Option<JoinHandle<Symbols>>>,
    /// The code ranges of the functions pkttrace knows the meaning of
    /// (`SiteRole::FUNCTIONS`), found once the symbols are read.
    role_ranges: OnceLock<Vec<(u64, u64, SiteRole)>>,
    /// Each code address's site, made once: a followed stream frees its
    /// packets at the same few places, and looking up and formatting the
    /// name for every event was an allocation each.
    sites: Mutex<foldhash::HashMap<u64, CodeSite>>,
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
            drop_reasons: typed(drop_reasons),
            symbols: OnceLock::new(),
            reading_symbols: Mutex::new(Some(reading)),
            role_ranges: OnceLock::new(),
            sites: Mutex::default(),
        }
    }

    /// Names from recorded tables, as a test has them.
    #[cfg(test)]
    pub fn from_parts(drop_reasons: Vec<(u32, String)>, symbols: Symbols) -> Self {
        Self {
            drop_reasons: typed(drop_reasons),
            symbols: OnceLock::from(sorted(symbols)),
            reading_symbols: Mutex::new(None),
            role_ranges: OnceLock::new(),
            sites: Mutex::default(),
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

    pub fn drop_reason(&self, value: u32) -> DropReason {
        if self.drop_reasons.is_empty() {
            return DropReason::Unreported;
        }
        self.drop_reasons
            .get(&value)
            .cloned()
            .unwrap_or_else(|| DropReason::Other(format!("reason {value}").into()))
    }

    /// The code address as a site: its name (`function+0xoffset`, or the
    /// bare address when kallsyms hides addresses or does not know it) and
    /// its role, by the function extent it lies in.
    pub fn site(&self, address: u64) -> CodeSite {
        if address == 0 {
            return CodeSite {
                name: "unknown".into(),
                role: SiteRole::Unlocated,
            };
        }
        let Ok(mut sites) = self.sites.lock() else {
            return self.site_of(address);
        };
        if let Some(site) = sites.get(&address) {
            return site.clone();
        }
        if sites.len() == MAX_NAMED_LOCATIONS {
            sites.clear();
        }
        let site = self.site_of(address);
        sites.insert(address, site.clone());
        site
    }

    fn site_of(&self, address: u64) -> CodeSite {
        let role = self
            .role_ranges()
            .iter()
            .find(|(start, end, _)| (*start..*end).contains(&address))
            .map_or(SiteRole::Other, |(_, _, role)| *role);
        CodeSite {
            name: self.name_of(address).into(),
            role,
        }
    }

    /// Where the (first) function of `role` starts and how long it is.
    pub fn role_extent(&self, role: SiteRole) -> Option<(u64, u64)> {
        self.role_ranges()
            .iter()
            .find(|(_, _, r)| *r == role)
            .map(|(start, end, _)| (*start, end - start))
    }

    fn role_ranges(&self) -> &[(u64, u64, SiteRole)] {
        self.role_ranges.get_or_init(|| {
            SiteRole::FUNCTIONS
                .iter()
                .flat_map(|(role, functions)| {
                    functions.iter().filter_map(move |function| {
                        let (start, length) = self.function_extent(function)?;
                        Some((start, start + length, *role))
                    })
                })
                .collect()
        })
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

fn typed(drop_reasons: Vec<(u32, String)>) -> HashMap<u32, DropReason> {
    drop_reasons
        .into_iter()
        .map(|(value, name)| (value, DropReason::from_kernel_name(&name)))
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
