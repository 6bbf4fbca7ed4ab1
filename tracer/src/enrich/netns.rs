//! Finding network namespaces and opening a netlink socket inside each.

use crate::setns::enter_network_namespace;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::future::try_join_all;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::netlink::{self, NsDump};
use super::{Interface, LinkKind, Namespace, Owner, peers};

/// Where `ip netns` keeps its named namespaces (bind mounts of nsfs files).
const NETNS_RUN_DIR: &str = "/run/netns";
const FORWARDING: &str = "/proc/sys/net/ipv4/conf/all/forwarding";

/// A namespace we hold open: the fd keeps it alive and lets us enter it.
struct Found {
    fd: Arc<OwnedFd>,
    /// Where it was opened, to enter it again later.
    path: PathBuf,
    owner: Owner,
    names: Vec<String>,
}

/// Returns the host namespace's inode and every namespace, owners being
/// `ip netns` names, processes, or the Docker engines whose `netns/`
/// folders (`docker_dirs`, each with its engine's index) hold namespaces no
/// process is in (the caller knows about containers and networks).
pub(super) async fn discover(
    docker_dirs: &[(PathBuf, usize)],
) -> anyhow::Result<(u32, Vec<Namespace>)> {
    let host = host_netns_inode()?;
    // The fds must stay open until every GETNSID query has been answered.
    let mut found = find_namespaces();
    find_docker_namespaces(docker_dirs, &mut found);
    if !found.contains_key(&host) {
        bail!("cannot open the host network namespace netns:[{host}]: pkttrace needs root");
    }
    let fds: Vec<(u32, RawFd)> = found
        .iter()
        .map(|(inode, f)| (*inode, f.fd.as_raw_fd()))
        .collect();
    let fds = &fds;
    let runtime = tokio::runtime::Handle::current();
    let reads = found.iter().map(|(&inode, f)| {
        let (fd, runtime) = (f.fd.clone(), runtime.clone());
        async move {
            let (conn, handle, ip_forward) = enter(fd, runtime)
                .await
                .with_context(|| format!("entering network namespace netns:[{inode}]"))?;
            let dump = netlink::dump(handle, inode, fds).await;
            conn.abort();
            let dump = dump.with_context(|| format!("reading netns:[{inode}] over netlink"))?;
            anyhow::Ok(((inode, dump), ip_forward))
        }
    });
    let (mut dumps, forwarding): (Vec<(u32, NsDump)>, Vec<Option<bool>>) =
        try_join_all(reads).await?.into_iter().unzip();
    peers::resolve(&mut dumps);
    let namespaces = dumps
        .into_iter()
        .zip(forwarding)
        .filter_map(|((inode, dump), ip_forward)| {
            let f = found.remove(&inode)?;
            let mut interfaces: Vec<Interface> = dump.links.into_iter().map(|l| l.iface).collect();
            if inode == host {
                // sysfs shows pkttrace's own namespace: the host's devices.
                for iface in interfaces
                    .iter_mut()
                    .filter(|i| i.kind == LinkKind::Hardware)
                {
                    iface.driver = device_driver(&iface.name);
                }
            }
            Some(Namespace {
                inode,
                owner: f.owner,
                netns_names: f.names,
                nsfs_path: Some(f.path),
                interfaces,
                routes: dump.routes,
                ip_forward,
            })
        })
        .collect();
    Ok((host, namespaces))
}

/// `ip netns` namespaces first (so they are owned by their name), then one
/// entry per namespace any process is in, owned by its lowest pid.
fn find_namespaces() -> BTreeMap<u32, Found> {
    let mut found = BTreeMap::new();
    let mut names: Vec<String> = fs::read_dir(NETNS_RUN_DIR)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        // A name left behind without its bind mount is a plain file: skip.
        let Ok((inode, fd)) = open_nsfs(&format!("{NETNS_RUN_DIR}/{name}")) else {
            continue;
        };
        found
            .entry(inode)
            .or_insert_with(|| Found {
                fd: Arc::new(fd),
                path: PathBuf::from(format!("{NETNS_RUN_DIR}/{name}")),
                owner: Owner::NetnsName(name.clone()),
                names: Vec::new(),
            })
            .names
            .push(name);
    }
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        // Processes come and go while we look: whatever fails is skipped.
        let Ok(inode) = proc_netns_inode(pid) else {
            continue;
        };
        if found.contains_key(&inode) {
            continue;
        }
        let Ok((opened, fd)) = open_nsfs(&format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if opened != inode {
            continue; // the pid was reused in between
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let owner = Owner::Process {
            pid,
            comm: comm.trim_end().to_string(),
        };
        found.insert(
            inode,
            Found {
                fd: Arc::new(fd),
                path: PathBuf::from(format!("/proc/{pid}/ns/net")),
                owner,
                names: Vec::new(),
            },
        );
    }
    found
}

/// The namespaces Docker keeps with no process in them (an overlay
/// network's, Swarm's ingress sandbox), from each engine's `netns/` folder;
/// owned by their file name until the caller knows what they are.
fn find_docker_namespaces(docker_dirs: &[(PathBuf, usize)], found: &mut BTreeMap<u32, Found>) {
    for (dir, engine) in docker_dirs {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| Some(e.ok()?.path()))
            .collect();
        files.sort();
        for path in files {
            let Some(file) = path.to_str() else { continue };
            let Ok((inode, fd)) = open_nsfs(file) else {
                continue;
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            found.entry(inode).or_insert_with(|| Found {
                fd: Arc::new(fd),
                path: path.clone(),
                owner: Owner::Docker {
                    engine: engine.to_string(),
                    kind: super::DockerNamespace::Other { name },
                },
                names: Vec::new(),
            });
        }
    }
}

/// Pid 1's namespace. Some sandboxes hide pid 1 even from root (EACCES);
/// pkttrace then runs in the host namespace itself, so its own is used.
fn host_netns_inode() -> anyhow::Result<u32> {
    proc_netns_inode(1)
        .or_else(|_| {
            let link = fs::read_link("/proc/self/ns/net")?;
            parse_netns_link(&link)
        })
        .context("reading /proc/1/ns/net and /proc/self/ns/net")
}

/// Inode of a process's network namespace, from the "net:[N]" link text
/// (cheaper than opening it, which we only do once per namespace).
pub(crate) fn proc_netns_inode(pid: u32) -> io::Result<u32> {
    parse_netns_link(&fs::read_link(format!("/proc/{pid}/ns/net"))?)
}

fn parse_netns_link(link: &std::path::Path) -> io::Result<u32> {
    link.to_str()
        .and_then(|s| s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unexpected namespace link {link:?}")))
}

/// Opens a namespace file and returns its nsfs inode; fails for anything
/// that is not an nsfs file.
pub(super) fn open_nsfs(path: &str) -> io::Result<(u32, OwnedFd)> {
    let file = File::open(path)?;
    // SAFETY: fstatfs only writes into the zeroed struct we own.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if fs.f_type != libc::NSFS_MAGIC {
        return Err(io::Error::other(format!("{path} is not a namespace file")));
    }
    let inode = u32::try_from(file.metadata()?.ino()).map_err(io::Error::other)?;
    Ok((inode, file.into()))
}

/// The netlink connection's task, its handle, and the forwarding sysctl.
type Entered = (JoinHandle<()>, rtnetlink::Handle, Option<bool>);

/// Opens a netlink socket inside the namespace `fd` and reads its
/// forwarding sysctl. setns only moves the calling thread, and a socket
/// stays in the namespace it was created in, so a throwaway thread enters
/// the namespace, creates the socket (registered with our runtime) and
/// ends; the socket is then driven by the runtime like any other.
async fn enter(fd: Arc<OwnedFd>, runtime: tokio::runtime::Handle) -> io::Result<Entered> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("pkttrace-netns".into())
        .spawn(move || {
            let result = (|| {
                // This thread is never reused.
                enter_network_namespace(&*fd)?;
                // /proc/sys/net resolves against the reading thread's network
                // namespace, so this is the entered namespace's value.
                let ip_forward = read_ip_forward();
                let _guard = runtime.enter();
                let (conn, handle, _) = rtnetlink::new_connection()?;
                Ok((runtime.spawn(conn), handle, ip_forward))
            })();
            // The receiver only goes away if discovery was cancelled.
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| io::Error::other("namespace thread died"))?
}

/// The kernel driver of a host device with hardware behind it (a NIC's
/// `virtio_net`, `e1000e`, ...), from sysfs; None for virtual devices.
fn device_driver(name: &str) -> Option<String> {
    let link = fs::read_link(format!("/sys/class/net/{name}/device/driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// `net.ipv4.conf.all.forwarding` of the calling thread's namespace.
fn read_ip_forward() -> Option<bool> {
    fs::read_to_string(FORWARDING).ok().map(|v| v.trim() != "0")
}
