//! `cargo xtask lab up --hosts 2`: two Docker hosts on this machine, each a
//! network namespace with its own dockerd (own data and exec roots, own
//! hostname), joined by a veth underlay (10.99.0.1 ↔ 10.99.0.2), in one
//! Swarm, with an attachable overlay network `ovl` (VXLAN) and a container
//! on each: `ovA` on host-a, `ovB` on host-b. The machine's own engine stays
//! out of the Swarm. `lab down` leaves the Swarm, stops both engines and
//! removes their namespaces, mounts and folders; it also cleans up after a
//! run that failed half-way.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{cmd, read, run, succeeds};
use crate::setup::LAB_IMAGE;

/// Each host: its namespace (and hostname), its underlay address, the
/// default bridge's address, and its container on the overlay.
const HOSTS: [Host; 2] = [
    Host {
        name: "host-a",
        underlay: "10.99.0.1",
        bip: "172.31.10.1/24",
        container: "ovA",
    },
    Host {
        name: "host-b",
        underlay: "10.99.0.2",
        bip: "172.31.11.1/24",
        container: "ovB",
    },
];
const UNDERLAY_PREFIX: &str = "24";
/// The underlay's veth ends, one in each host.
const UNDERLAY_LINK: [&str; 2] = ["ul-a", "ul-b"];
const OVERLAY: &str = "ovl";
const OVERLAY_SUBNET: &str = "10.250.0.0/24";
/// A fresh engine answers on its socket within this.
const ENGINE_START: Duration = Duration::from_secs(30);

struct Host {
    name: &'static str,
    underlay: &'static str,
    bip: &'static str,
    container: &'static str,
}

impl Host {
    fn netns(&self) -> String {
        format!("pt-{}", self.name)
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/{}.sock", self.netns()))
    }

    fn exec_root(&self) -> PathBuf {
        PathBuf::from(format!("/run/{}", self.netns()))
    }

    fn data_root(&self) -> PathBuf {
        PathBuf::from(format!("/var/lib/{}", self.netns()))
    }

    fn pidfile(&self) -> PathBuf {
        PathBuf::from(format!("/run/{}.pid", self.netns()))
    }

    fn log(&self) -> PathBuf {
        PathBuf::from(format!("/run/{}.log", self.netns()))
    }

    /// `docker -H <its socket> <args>`.
    fn docker<const N: usize>(&self, args: [&str; N]) -> Command {
        let mut docker = cmd(
            "docker",
            ["-H", &format!("unix://{}", self.socket().display())],
        );
        docker.args(args);
        docker
    }
}

pub fn up() -> Result<()> {
    let [a, b] = &HOSTS;
    for host in &HOSTS {
        if !netns_exists(&host.netns())? {
            run(&mut cmd("ip", ["netns", "add", &host.netns()]))?;
        }
        run(&mut cmd(
            "ip",
            ["-n", &host.netns(), "link", "set", "lo", "up"],
        ))?;
    }
    if !succeeds(&mut cmd(
        "ip",
        ["-n", &a.netns(), "link", "show", UNDERLAY_LINK[0]],
    )) {
        run(&mut cmd(
            "ip",
            [
                "-n",
                &a.netns(),
                "link",
                "add",
                UNDERLAY_LINK[0],
                "type",
                "veth",
                "peer",
                "name",
                UNDERLAY_LINK[1],
                "netns",
                &b.netns(),
            ],
        ))?;
    }
    for (host, link) in HOSTS.iter().zip(UNDERLAY_LINK) {
        let cidr = format!("{}/{UNDERLAY_PREFIX}", host.underlay);
        run(&mut cmd(
            "ip",
            ["-n", &host.netns(), "addr", "replace", &cidr, "dev", link],
        ))?;
        run(&mut cmd(
            "ip",
            ["-n", &host.netns(), "link", "set", link, "up"],
        ))?;
        start_engine(host)?;
    }
    if !in_swarm(a)? {
        run(&mut a.docker([
            "swarm",
            "init",
            "--advertise-addr",
            a.underlay,
            "--listen-addr",
            &format!("{}:2377", a.underlay),
        ]))?;
    }
    if !in_swarm(b)? {
        let token = read(&mut a.docker(["swarm", "join-token", "-q", "worker"]))?;
        run(&mut b.docker([
            "swarm",
            "join",
            "--token",
            token.trim(),
            "--advertise-addr",
            b.underlay,
            "--listen-addr",
            &format!("{}:2377", b.underlay),
            &format!("{}:2377", a.underlay),
        ]))?;
    }
    if !succeeds(&mut a.docker(["network", "inspect", OVERLAY])) {
        run(&mut a.docker([
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "--subnet",
            OVERLAY_SUBNET,
            OVERLAY,
        ]))?;
    }
    for host in &HOSTS {
        if !succeeds(&mut host.docker(["inspect", host.container])) {
            run(&mut host.docker([
                "run",
                "-d",
                "--name",
                host.container,
                "--hostname",
                host.container,
                "--network",
                OVERLAY,
                LAB_IMAGE,
                "sleep",
                "infinity",
            ]))
            .with_context(|| format!("cannot start {} on {}", host.container, host.name))?;
        }
    }
    println!(
        "lab up: {} on {} ({}) and {} on {} ({}), one Swarm over the underlay {} ↔ {}, overlay network {OVERLAY} ({OVERLAY_SUBNET}, VXLAN)",
        a.container,
        a.name,
        socket_text(a),
        b.container,
        b.name,
        socket_text(b),
        a.underlay,
        b.underlay
    );
    println!(
        "lab up: pkttrace sees both engines; e.g. sudo pkttrace follow {} {} --probe icmp",
        a.container, b.container
    );
    Ok(())
}

fn socket_text(host: &Host) -> String {
    format!("DOCKER_HOST=unix://{}", host.socket().display())
}

/// Starts the engine of `host` in its namespace, with its own hostname, and
/// loads the lab image into it; a running one is left as it is.
fn start_engine(host: &Host) -> Result<()> {
    if !answers(host) {
        let log = fs::File::create(host.log())?;
        // nsenter, not `ip netns exec` (which remounts /sys: no devices
        // cgroup for dockerd); a UTS namespace of its own for its hostname.
        let script = format!(
            "hostname {} && exec dockerd --data-root {} --exec-root {} -H unix://{} --pidfile {} --bip {}",
            host.name,
            host.data_root().display(),
            host.exec_root().display(),
            host.socket().display(),
            host.pidfile().display(),
            host.bip
        );
        let status = cmd(
            "setsid",
            [
                "-f",
                "nsenter",
                &format!("--net=/run/netns/{}", host.netns()),
                "unshare",
                "--uts",
                "sh",
                "-c",
                &script,
            ],
        )
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()?;
        if !status.success() {
            bail!("cannot start dockerd for {}", host.name);
        }
        let began = Instant::now();
        while !answers(host) {
            if began.elapsed() > ENGINE_START {
                bail!(
                    "dockerd of {} did not answer within {} s (see {})",
                    host.name,
                    ENGINE_START.as_secs(),
                    host.log().display()
                );
            }
            sleep(Duration::from_millis(200));
        }
    }
    if !succeeds(&mut host.docker(["image", "inspect", LAB_IMAGE])) {
        // No registry: the image goes over from the machine's own engine.
        let saved = cmd("docker", ["save", LAB_IMAGE])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot run docker save")?;
        let loaded = host
            .docker(["load"])
            .stdin(saved.stdout.context("docker save's output")?)
            .output()?;
        if !loaded.status.success() {
            bail!(
                "cannot load {LAB_IMAGE} into {}: {}",
                host.name,
                String::from_utf8_lossy(&loaded.stderr)
            );
        }
    }
    Ok(())
}

fn answers(host: &Host) -> bool {
    host.socket().exists() && succeeds(&mut host.docker(["info"]))
}

fn in_swarm(host: &Host) -> Result<bool> {
    let state = read(&mut host.docker(["info", "-f", "{{.Swarm.LocalNodeState}}"]))?;
    Ok(state.trim() == "active")
}

pub fn down() -> Result<()> {
    for host in &HOSTS {
        if answers(host) {
            let ids = read(&mut host.docker(["ps", "-aq"])).unwrap_or_default();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                run(host.docker(["rm", "-f"]).args(&ids))?;
            }
            // Leaving is what keeps a failed run from a half-made Swarm next time.
            let _ = run(&mut host.docker(["swarm", "leave", "--force"]));
        }
        stop_engine(host);
    }
    for host in &HOSTS {
        if netns_exists(&host.netns())? {
            run(&mut cmd("ip", ["netns", "del", &host.netns()]))?;
        }
    }
    println!("lab down: both hosts, their engines and the Swarm are gone");
    Ok(())
}

/// Stops the engine (it stops the containerd it started), then unmounts
/// and removes its roots, socket, pid file and log.
fn stop_engine(host: &Host) {
    if let Some(pid) = fs::read_to_string(host.pidfile())
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    {
        let _ = cmd("kill", ["-TERM", &pid.to_string()]).status();
        let began = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && began.elapsed() < ENGINE_START {
            sleep(Duration::from_millis(100));
        }
    }
    for root in [host.exec_root(), host.data_root()] {
        // Its namespaces and overlays are mounted under its roots: lazily
        // unmounted, deepest first, before the folders go.
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter(|point| Path::new(point).starts_with(&root))
            .collect();
        under.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in under {
            let _ = cmd("umount", ["-l", point]).status();
        }
        let _ = fs::remove_dir_all(&root);
    }
    for file in [host.socket(), host.pidfile(), host.log()] {
        let _ = fs::remove_file(file);
    }
}

fn netns_exists(name: &str) -> Result<bool> {
    let list = read(&mut cmd("ip", ["netns", "list"]))?;
    Ok(list
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name)))
}
