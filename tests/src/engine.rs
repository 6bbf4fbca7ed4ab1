//! A second Docker engine on this machine, in a network namespace of its
//! own (a host of its own, as ../shared/PLATFORM.md describes), so that a
//! test can run Docker with another configuration (the userland proxy off)
//! without touching the machine's own engine. Drop removes its containers,
//! stops it (and the containerd it started), unmounts and removes its
//! roots; the namespace goes with its guard.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cmd::{cleanup, cmd, run, succeeds};
use crate::docker::LAB_IMAGE;
use crate::names::is_stale;
use crate::netns::Upstream;

/// How long a fresh engine gets to answer on its socket.
const ENGINE_START: Duration = Duration::from_secs(30);

/// A dockerd in its own namespace (reachable from the host through the
/// namespace's veth), with the lab image loaded.
#[derive(Debug)]
pub struct SecondEngine {
    /// Drops last: the namespace outlives the engine in it.
    name: String,
    socket: PathBuf,
    data_root: PathBuf,
    exec_root: PathBuf,
    pidfile: PathBuf,
    host: Upstream,
}

impl SecondEngine {
    /// Starts it with `--userland-proxy=false`: published ports are served
    /// by DNAT alone, also for the engine's own host and its containers
    /// (hairpin NAT). `subnet_octet`: its default bridge is
    /// 172.31.`subnet_octet`.0/24.
    pub fn without_userland_proxy(subnet_octet: u8) -> Result<Self> {
        Self::start(Upstream::new()?, subnet_octet, &["--userland-proxy=false"])
    }

    /// Starts it with IPv6 on its default bridge (`fd00:ac:e<subnet_octet>::/64`)
    /// and Docker's ip6tables on (`--experimental --ip6tables`, as Docker
    /// 20.10 needs): containers leave through NAT66 (MASQUERADE) and
    /// published ports are DNAT over IPv6 too. Its host is dual-stack
    /// ([`Upstream::dual_stack`]); the forwarding it turns on is its own
    /// namespace's.
    pub fn with_ipv6_nat(subnet_octet: u8) -> Result<Self> {
        let subnet = format!("fd00:ac:e{subnet_octet:x}::/64");
        Self::start(
            Upstream::dual_stack()?,
            subnet_octet,
            &[
                "--experimental",
                "--ip6tables",
                "--ipv6",
                "--fixed-cidr-v6",
                &subnet,
            ],
        )
    }

    fn start(host: Upstream, subnet_octet: u8, options: &[&str]) -> Result<Self> {
        let name = host.name().to_owned();
        let engine = Self {
            socket: PathBuf::from(format!("/run/{name}.sock")),
            data_root: PathBuf::from(format!("/var/lib/{name}")),
            exec_root: PathBuf::from(format!("/run/{name}")),
            pidfile: PathBuf::from(format!("/run/{name}.pid")),
            name,
            host,
        };
        let log = fs::File::create(engine.log())?;
        // nsenter, not `ip netns exec`: that remounts /sys, and dockerd then
        // finds no devices cgroup (PLATFORM.md).
        let mut dockerd = cmd(
            "setsid",
            [
                "-f".into(),
                "nsenter".into(),
                format!("--net={}", engine.host.ns_path().display()),
                "dockerd".into(),
                "--data-root".into(),
                engine.data_root.display().to_string(),
                "--exec-root".into(),
                engine.exec_root.display().to_string(),
                "-H".into(),
                format!("unix://{}", engine.socket.display()),
                "--pidfile".into(),
                engine.pidfile.display().to_string(),
                "--bip".into(),
                format!("172.31.{subnet_octet}.1/24"),
            ],
        );
        dockerd
            .args(options)
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("cannot start a second dockerd")?;
        let began = Instant::now();
        while !succeeds(&mut engine.docker(["info"])) {
            if began.elapsed() > ENGINE_START {
                bail!(
                    "the second dockerd did not answer within {} s (see {})",
                    ENGINE_START.as_secs(),
                    engine.log().display()
                );
            }
            sleep(Duration::from_millis(200));
        }
        // No registry: the lab image goes over from the machine's engine.
        let saved = cmd("docker", ["save", LAB_IMAGE])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot run docker save")?;
        let loaded = engine
            .docker(["load"])
            .stdin(saved.stdout.context("docker save's output")?)
            .output()?;
        if !loaded.status.success() {
            bail!(
                "cannot load {LAB_IMAGE} into the second engine: {}",
                String::from_utf8_lossy(&loaded.stderr)
            );
        }
        Ok(engine)
    }

    fn log(&self) -> PathBuf {
        std::env::temp_dir().join(format!("{}.dockerd.log", self.name))
    }

    /// `docker -H <its socket> <args>`.
    pub fn docker<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut docker = cmd("docker", ["-H", &self.host_uri()]);
        docker.args(args);
        docker
    }

    /// Its socket as `-H` takes it.
    fn host_uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The namespace it runs in: its host.
    pub fn host(&self) -> &Upstream {
        &self.host
    }

    /// Runs a lab container there (`docker run -d --name <name> <args>
    /// pkttrace-lab <command>`); returns its address on the default bridge.
    pub fn run(&self, name: &str, args: &[&str], command: &[&str]) -> Result<Ipv4Addr> {
        run(self
            .docker(["run", "-d", "--name", name])
            .args(args)
            .arg(LAB_IMAGE)
            .args(command))?;
        let inspect: Value = serde_json::from_str(&run(&mut self.docker(["inspect", name]))?)?;
        inspect[0]["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
            .as_str()
            .context("no address on the bridge")?
            .parse()
            .context("an IPv4 address")
    }

    /// A container's IPv6 address on the default bridge (an engine
    /// [`SecondEngine::with_ipv6_nat`] started).
    pub fn ipv6_of(&self, name: &str) -> Result<std::net::Ipv6Addr> {
        let inspect: Value = serde_json::from_str(&run(&mut self.docker(["inspect", name]))?)?;
        inspect[0]["NetworkSettings"]["Networks"]["bridge"]["GlobalIPv6Address"]
            .as_str()
            .filter(|ip| !ip.is_empty())
            .context("no IPv6 address on the bridge")?
            .parse()
            .context("an IPv6 address")
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        if let Ok(ids) = run(&mut self.docker(["ps", "-aq"])) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                cleanup(self.docker(["rm", "-f"]).args(&ids));
            }
        }
        stop(&self.pidfile, &self.exec_root, &self.data_root);
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_file(self.log());
    }
}

/// Stops the dockerd of `pidfile` (it stops the containerd it started),
/// then unmounts and removes its roots.
fn stop(pidfile: &Path, exec_root: &Path, data_root: &Path) {
    if let Some(pid) = fs::read_to_string(pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        // SAFETY: a signal to a pid this harness started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let began = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && began.elapsed() < ENGINE_START {
            sleep(Duration::from_millis(100));
        }
    }
    for root in [exec_root, data_root] {
        // The engine mounts namespaces and overlays under its roots: lazily
        // unmounted, deepest first, before the folders go.
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter(|point| Path::new(point).starts_with(root))
            .collect();
        under.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in under {
            cleanup(&mut cmd("umount", ["-l", point]));
        }
        let _ = fs::remove_dir_all(root);
    }
    let _ = fs::remove_file(pidfile);
}

/// Engines of killed runs: stopped, their roots removed.
pub(crate) fn sweep() {
    let Ok(entries) = fs::read_dir("/run") else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".pid") else {
            continue;
        };
        if is_stale(name) {
            stop(
                &entry.path(),
                &PathBuf::from(format!("/run/{name}")),
                &PathBuf::from(format!("/var/lib/{name}")),
            );
            let _ = fs::remove_file(format!("/run/{name}.sock"));
        }
    }
}
