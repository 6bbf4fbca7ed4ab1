//! Every Docker engine running on this machine, found by its process: the
//! sockets it answers on (its `-H` flags, its daemon.json `hosts`, or the
//! default), the folder it keeps its namespaces in (`--exec-root`), and the
//! network namespace it runs in (its host). An engine in another mount
//! namespace (docker-in-docker, a test's second engine) is reached through
//! `/proc/PID/root`.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The socket an engine answers on when nothing says otherwise.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Where an engine keeps its runtime state when nothing says otherwise.
const DEFAULT_EXEC_ROOT: &str = "/var/run/docker";
const DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// A running dockerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineProcess {
    pub pid: u32,
    /// Its unix sockets, as paths reachable from pkttrace's mount namespace.
    pub sockets: Vec<PathBuf>,
    /// Its exec root (where `netns/` holds its namespaces), reachable from here.
    pub exec_root: PathBuf,
}

/// Every dockerd process on this machine, by pid.
pub fn running() -> Vec<EngineProcess> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "dockerd")
        })
        .filter_map(engine)
        .collect()
}

fn engine(pid: u32) -> Option<EngineProcess> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let flags = Flags::of(&args);
    let root = reachable_root(pid);
    let config = flags
        .config_file
        .clone()
        .unwrap_or_else(|| DAEMON_JSON.to_string());
    let daemon_json: DaemonJson = fs::read_to_string(within(&root, &config))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let hosts = if flags.hosts.is_empty() {
        daemon_json.hosts
    } else {
        flags.hosts
    };
    let mut sockets: Vec<PathBuf> = hosts
        .iter()
        .filter_map(|host| socket_path(host))
        .map(|path| within(&root, &path))
        .collect();
    if sockets.is_empty() {
        sockets.push(within(&root, DEFAULT_SOCKET));
    }
    let exec_root = flags
        .exec_root
        .or(daemon_json.exec_root)
        .unwrap_or_else(|| DEFAULT_EXEC_ROOT.to_string());
    Some(EngineProcess {
        pid,
        sockets,
        exec_root: within(&root, &exec_root),
    })
}

/// The flags of dockerd's command line pkttrace needs.
#[derive(Debug, Default, PartialEq)]
struct Flags {
    hosts: Vec<String>,
    exec_root: Option<String>,
    config_file: Option<String>,
}

impl Flags {
    /// `-H X`, `-H=X`, `--host X`, `--host=X`, and the same for
    /// `--exec-root` and `--config-file`.
    fn of(args: &[String]) -> Self {
        let mut flags = Self::default();
        let mut args = args.iter().skip(1);
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (arg.as_str(), None),
            };
            let mut value = || inline.clone().or_else(|| args.next().cloned());
            match name {
                "-H" | "--host" => flags.hosts.extend(value()),
                "--exec-root" => flags.exec_root = value(),
                "--config-file" => flags.config_file = value(),
                _ => {}
            }
        }
        flags
    }
}

#[derive(Debug, Default, Deserialize)]
struct DaemonJson {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(rename = "exec-root")]
    exec_root: Option<String>,
}

/// The unix socket a `-H` value names; `fd://` (systemd's socket
/// activation) is the default socket. TCP hosts are not this machine's
/// to trace through a path.
fn socket_path(host: &str) -> Option<String> {
    if let Some(path) = host.strip_prefix("unix://") {
        return Some(path.to_string());
    }
    host.starts_with("fd://")
        .then(|| DEFAULT_SOCKET.to_string())
}

/// `/proc/PID/root` when the engine sees another filesystem than pkttrace
/// (another mount namespace); None when it sees the same.
fn reachable_root(pid: u32) -> Option<PathBuf> {
    let mine = fs::read_link("/proc/self/ns/mnt").ok()?;
    let its = fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
    (mine != its).then(|| PathBuf::from(format!("/proc/{pid}/root")))
}

/// `path` as seen through `root` (an engine's filesystem), or as is.
fn within(root: &Option<PathBuf>, path: &str) -> PathBuf {
    match root {
        Some(root) => root.join(Path::new(path).strip_prefix("/").unwrap_or(Path::new(path))),
        None => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn flags_are_read_in_every_spelling() {
        let flags = Flags::of(&args(
            "dockerd -H unix:///run/a.sock --host=fd:// --exec-root /run/a --config-file=/etc/a.json --bip 172.31.2.1/24",
        ));
        assert_eq!(flags.hosts, ["unix:///run/a.sock", "fd://"]);
        assert_eq!(flags.exec_root.as_deref(), Some("/run/a"));
        assert_eq!(flags.config_file.as_deref(), Some("/etc/a.json"));
        assert_eq!(Flags::of(&args("dockerd")), Flags::default());
    }

    #[test]
    fn sockets_are_unix_paths_or_the_default_for_socket_activation() {
        assert_eq!(
            socket_path("unix:///run/b.sock").as_deref(),
            Some("/run/b.sock")
        );
        assert_eq!(socket_path("fd://").as_deref(), Some(DEFAULT_SOCKET));
        assert_eq!(socket_path("tcp://0.0.0.0:2375"), None);
    }

    #[test]
    fn another_mount_namespace_is_reached_through_the_processs_root() {
        let root = Some(PathBuf::from("/proc/7/root"));
        assert_eq!(
            within(&root, "/run/docker.sock"),
            PathBuf::from("/proc/7/root/run/docker.sock")
        );
        assert_eq!(
            within(&None, "/run/docker.sock"),
            PathBuf::from("/run/docker.sock")
        );
    }
}
