//! Unique names for everything the harness creates, and the sweep that
//! removes what a killed run left behind.
//!
//! Names are `pt-<pid in hex>-<counter>`: the pid keeps concurrent test
//! processes apart, the counter the threads of one process. At most 13
//! characters, so `<name>h` / `<name>n` still fit a 15-character interface name.

use std::fs;
use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cmd::{cleanup, cmd, run};
use crate::{docker, engine, host, netns};

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// A fresh name; the first call per process sweeps leftovers first.
pub(crate) fn unique() -> String {
    SWEEP.call_once(sweep);
    let name = format!(
        "pt-{:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    assert!(
        name.len() <= 14,
        "name {name} too long for derived interface names"
    );
    name
}

/// The pid in a harness name (`pt-1f3a-2`, also with an `h`/`n` interface
/// suffix or a file extension); `None` for any other name, such as the
/// xtask lab's `pt-upstream`.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("pt-")?;
    let (pid, tail) = rest.split_once('-')?;
    let counter = tail.split('.').next()?.trim_end_matches(['h', 'n']);
    if pid.is_empty() || counter.is_empty() || !counter.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    u32::from_str_radix(pid, 16).ok()
}

/// Left by a run that is gone. Our own pid counts too: the sweep runs before
/// this process creates anything, so such names are from an earlier process
/// that had the same pid.
pub(crate) fn is_stale(name: &str) -> bool {
    owner(name).is_some_and(|pid| {
        pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists()
    })
}

/// Removes what killed runs left: containers and networks first (they may use
/// the namespaces' addresses), then namespaces and host veths, iptables rules,
/// sysctls and scratch files.
fn sweep() {
    docker::sweep();
    engine::sweep();
    netns::sweep();
    host::sweep();
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_stale(&name) {
            let path = entry.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(err) = removed {
                eprintln!("lab cleanup: cannot remove {}: {err}", path.display());
            }
        }
    }
}

/// Names of host interfaces, of any kind, that belong to stale runs.
pub(crate) fn stale_links() -> Vec<String> {
    let Ok(list) = run(&mut cmd("ip", ["-o", "link", "show"])) else {
        return Vec::new();
    };
    link_names(&list)
        .into_iter()
        .filter(|name| is_stale(name))
        .collect()
}

/// The interface names in `ip -o link show` output.
fn link_names(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|line| line.split(": ").nth(1))
        // `ip -o link` prints a veth as `name@peer`.
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect()
}

pub(crate) fn delete_link(name: &str) {
    cleanup(&mut cmd("ip", ["link", "del", name]));
}

#[cfg(test)]
mod tests {
    use super::{link_names, owner};

    #[test]
    fn lists_links_of_every_kind() {
        let list = "\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
112: pt-1f3a-0: <BROADCAST,NOARP,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UNKNOWN mode DEFAULT group default qlen 32\\    link/ether f6:c0:f3:5d:5c:5a brd ff:ff:ff:ff:ff:ff
113: pt-1f3a-1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UNKNOWN mode DEFAULT group default qlen 1000\\    link/ether f2:61:7d:ab:7c:66 brd ff:ff:ff:ff:ff:ff
114: pt-1f3a-2h@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 1a:2b:3c:4d:5e:6f brd ff:ff:ff:ff:ff:ff link-netns pt-1f3a-2
";
        // The loopback, an ifb, a tap and a veth.
        assert_eq!(
            link_names(list),
            ["lo", "pt-1f3a-0", "pt-1f3a-1", "pt-1f3a-2h"]
        );
    }

    #[test]
    fn owner_reads_harness_names_only() {
        assert_eq!(owner("pt-1f3a-2"), Some(0x1f3a));
        assert_eq!(owner("pt-1f3a-12h"), Some(0x1f3a));
        assert_eq!(owner("pt-1f3a-3n"), Some(0x1f3a));
        assert_eq!(owner("pt-1f3a-4.sysctl"), Some(0x1f3a));
        assert_eq!(owner("pt-upstream"), None);
        assert_eq!(owner("pt-up-host"), None);
        assert_eq!(owner("dev-up"), None);
        assert_eq!(owner("pt-1f3a-"), None);
    }
}
