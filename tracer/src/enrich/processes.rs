//! What /proc tells beyond netlink: which process holds each listening
//! socket of the host namespace, and a container's namespaces and resolver.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use procfs::FromReadSI;
use procfs::net::{TcpNetEntries, TcpNetEntry, TcpState, UdpNetEntries, UdpNetEntry};
use procfs::process::{FDTarget, Process};

use super::{Listener, NamespaceIds};

/// Every TCP socket in LISTEN state and every bound UDP socket of the
/// namespace pkttrace runs in (the host's), with the processes holding it.
pub(super) fn host_listeners() -> Vec<Listener> {
    let tcp = procfs::net::tcp().into_iter().chain(procfs::net::tcp6());
    let udp = procfs::net::udp().into_iter().chain(procfs::net::udp6());
    listeners(tcp.flatten(), udp.flatten())
}

/// The same for the network namespace process `pid` lives in (a
/// container's), as its /proc/PID/net tables show it.
pub(super) fn listeners_in_namespace_of(pid: u32) -> Vec<Listener> {
    let Ok(process) = Process::new(pid as i32) else {
        return Vec::new();
    };
    let tcp = process.tcp().into_iter().chain(process.tcp6());
    let udp = process.udp().into_iter().chain(process.udp6());
    listeners(tcp.flatten(), udp.flatten())
}

/// The listening sockets among `tcp` and `udp` entries, each with the
/// processes holding it: the kernel only knows a socket's inode (whatever
/// namespace it is in), each process's fd table maps it to that process.
fn listeners(
    tcp: impl Iterator<Item = TcpNetEntry>,
    udp: impl Iterator<Item = UdpNetEntry>,
) -> Vec<Listener> {
    let mut sockets: HashMap<u64, (&'static str, SocketAddr)> = HashMap::new();
    for entry in tcp.filter(|e| e.state == TcpState::Listen) {
        sockets.insert(entry.inode, ("tcp", entry.local_address));
    }
    for entry in udp {
        sockets.insert(entry.inode, ("udp", entry.local_address));
    }
    let mut listeners = Vec::new();
    if sockets.is_empty() {
        return listeners;
    }
    // Processes come and go while we look: whatever fails is skipped.
    for process in procfs::process::all_processes()
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(fds) = process.fd() else { continue };
        let held: Vec<u64> = fds
            .flatten()
            .filter_map(|fd| match fd.target {
                FDTarget::Socket(inode) if sockets.contains_key(&inode) => Some(inode),
                _ => None,
            })
            .collect();
        if held.is_empty() {
            continue;
        }
        let Ok(pid) = u32::try_from(process.pid) else {
            continue;
        };
        let args = process.cmdline().unwrap_or_default();
        let name = process.stat().map(|s| s.comm).unwrap_or_default();
        for inode in held {
            let (protocol, address) = sockets[&inode];
            listeners.push(Listener {
                protocol: protocol.to_string(),
                address,
                socket_inode: inode,
                pid,
                process: name.clone(),
                args: args.clone(),
            });
        }
    }
    listeners.sort_by_key(|l| (l.address.port(), l.protocol.clone(), l.pid, l.socket_inode));
    listeners.dedup();
    listeners
}

/// The same for any namespace (an `ip netns` one has no process to read
/// it through): read by a thread that enters it, from its own view of
/// /proc. Empty when it cannot be entered.
pub fn listeners_in(namespace: &super::Namespace, host_netns: u32) -> Vec<Listener> {
    if namespace.inode == host_netns {
        return host_listeners();
    }
    let Some(netns) = namespace
        .nsfs_path
        .as_deref()
        .and_then(|path| std::fs::File::open(path).ok())
    else {
        return Vec::new();
    };
    let tables = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                crate::setns::enter_network_namespace(&netns).ok()?;
                let info = procfs::current_system_info();
                let tcp = |file: &str| {
                    TcpNetEntries::from_file(format!("/proc/thread-self/net/{file}"), info)
                        .map(|e| e.0)
                        .unwrap_or_default()
                };
                let udp = |file: &str| {
                    UdpNetEntries::from_file(format!("/proc/thread-self/net/{file}"), info)
                        .map(|e| e.0)
                        .unwrap_or_default()
                };
                Some((
                    [tcp("tcp"), tcp("tcp6")].concat(),
                    [udp("udp"), udp("udp6")].concat(),
                ))
            })
            .join()
            .ok()
            .flatten()
    });
    let Some((tcp, udp)) = tables else {
        return Vec::new();
    };
    listeners(tcp.into_iter(), udp.into_iter())
}

/// The namespaces a process is in, as `lsns` shows them; the host's are
/// those of pid 1, or pkttrace's own where pid 1 cannot be inspected.
pub(super) fn namespace_ids(pid: Option<u32>) -> NamespaceIds {
    let process = match pid {
        Some(pid) => i32::try_from(pid)
            .ok()
            .and_then(|pid| Process::new(pid).ok()),
        None => Process::new(1)
            .ok()
            .filter(|p| p.namespaces().is_ok())
            .or_else(|| Process::myself().ok()),
    };
    let found = process.and_then(|p| p.namespaces().ok());
    let id = |kind: &str| {
        let namespaces = &found.as_ref()?.0;
        namespaces
            .get(std::ffi::OsStr::new(kind))
            .map(|ns| ns.identifier)
    };
    NamespaceIds {
        net: id("net"),
        pid: id("pid"),
        mnt: id("mnt"),
        uts: id("uts"),
        ipc: id("ipc"),
        user: id("user"),
        cgroup: id("cgroup"),
    }
}

/// The nameservers in the container's own /etc/resolv.conf, read through
/// its root as the kernel shows it to the container.
pub(super) fn nameservers(pid: u32) -> Result<Vec<IpAddr>, String> {
    let path = format!("/proc/{pid}/root/etc/resolv.conf");
    std::fs::read_to_string(&path)
        .map(|text| parse_nameservers(&text))
        .map_err(|e| format!("cannot read {path}: {e}"))
}

pub(super) fn parse_nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()?.parse().ok())?
        })
        .collect()
}
