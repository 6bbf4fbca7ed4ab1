//! `cargo xtask lab up|down`: the demo lab. A network namespace `pt-upstream`
//! plays an internet host (web server and DNS) behind a veth from the host,
//! and a container `server-1` on Docker's default bridge reaches it through
//! Docker's NAT; `client-1` and `web-1` share a user-defined network, where
//! Docker's embedded DNS answers. With `--ipv6`, the upstream also has an
//! IPv6 address and `v6-1` sits on a dual-stack network, its IPv6 address
//! routed (no NAT). Both directions are idempotent: each piece is checked
//! first.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{cmd, describe, read, run, succeeds};
use crate::setup::LAB_IMAGE;

const NETNS: &str = "pt-upstream";
const HOST_VETH: &str = "pt-up-host";
const HOST_CIDR: &str = "198.51.100.254/24";
const HOST_IP: &str = "198.51.100.254";
const UPSTREAM_CIDR: &str = "198.51.100.1/24";
pub const UPSTREAM_IP: &str = "198.51.100.1";
pub const CONTAINER: &str = "server-1";
/// Demo #3: a user-defined network, so Docker's embedded DNS serves its containers.
const DEMO_NETWORK: &str = "pt-demo-net";
pub const DNS_CLIENT: &str = "client-1";
pub const DNS_SERVER: &str = "web-1";
/// Web root and server logs; /run is tmpfs, so a reboot cannot leave stale state.
const STATE_DIR: &str = "/run/pkttrace-lab";
/// The IPv6 part: documentation addresses for the upstream, a ULA /64 of
/// its own for the network (not the machine's fd00::/64).
const HOST_CIDR6: &str = "2001:db8:100::fe/64";
const HOST_IP6: &str = "2001:db8:100::fe";
const UPSTREAM_CIDR6: &str = "2001:db8:100::1/64";
const UPSTREAM_IP6: &str = "2001:db8:100::1";
const V6_NETWORK: &str = "pt-v6-net";
const V6_SUBNET: &str = "fd00:ac:100::/64";
pub const V6_CONTAINER: &str = "v6-1";
/// Docker turns IPv6 forwarding on when it makes an IPv6 network: the
/// machine's own value is kept here for `lab down`.
const FORWARDING6: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

pub fn up(ipv6: bool) -> Result<()> {
    veth_namespace(NETNS, HOST_VETH, HOST_CIDR, UPSTREAM_CIDR)?;
    run(&mut in_netns([
        "ip", "route", "replace", "default", "via", HOST_IP,
    ]))?;

    let www = Path::new(STATE_DIR).join("www");
    fs::create_dir_all(&www).with_context(|| format!("cannot create {}", www.display()))?;
    fs::write(www.join("index.html"), "pkttrace lab upstream\n")?;
    let running = netns_processes()?;
    if !running.iter().any(|(_, cmdline)| cmdline.contains("httpd")) {
        let www = www.to_string_lossy();
        start_daemon("httpd", &["busybox", "httpd", "-p", "80", "-h", &www])?;
    }
    // The container's resolver: DNS queries must never leave for the machine's own resolver.
    if !running
        .iter()
        .any(|(_, cmdline)| cmdline.contains("dnsmasq"))
    {
        start_daemon(
            "dnsmasq",
            &[
                "dnsmasq",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={UPSTREAM_IP}"),
                // A host record answers AAAA with "no data" instead of REFUSED.
                &format!("--host-record=upstream.lab,{UPSTREAM_IP}"),
                "--local=/lab/",
                &format!("--pid-file={STATE_DIR}/dnsmasq.pid"),
                &format!("--log-facility={STATE_DIR}/dnsmasq.log"),
            ],
        )?;
    }

    start_container(CONTAINER, None)?;
    let ip = read(&mut cmd(
        "docker",
        ["inspect", "-f", "{{.NetworkSettings.IPAddress}}", CONTAINER],
    ))?;
    println!(
        "lab up: {CONTAINER} ({}) -> docker0 -> NAT -> {HOST_VETH} -> {NETNS} {UPSTREAM_IP} (httpd :80, DNS upstream.lab)",
        ip.trim()
    );
    if !succeeds(&mut cmd("docker", ["network", "inspect", DEMO_NETWORK])) {
        read(&mut cmd("docker", ["network", "create", DEMO_NETWORK]))?;
    }
    start_container(DNS_SERVER, Some(DEMO_NETWORK))?;
    start_container(DNS_CLIENT, Some(DEMO_NETWORK))?;
    println!(
        "lab up: {DNS_CLIENT} and {DNS_SERVER} on network {DEMO_NETWORK} (Docker's embedded DNS, forwarding to {UPSTREAM_IP})"
    );
    if ipv6 {
        up_ipv6()?;
    }
    Ok(())
}

/// The IPv6 part of the lab; refuses to finish when the upstream's address
/// would not be routed to the lab's veth (this machine has an IPv6 uplink).
fn up_ipv6() -> Result<()> {
    let saved = Path::new(STATE_DIR).join("ipv6-forwarding");
    if !saved.exists() {
        fs::write(&saved, fs::read_to_string(FORWARDING6)?)?;
    }
    // nodad: usable at once, without duplicate address detection's wait.
    run(&mut cmd(
        "ip",
        [
            "-6", "addr", "replace", HOST_CIDR6, "dev", HOST_VETH, "nodad",
        ],
    ))?;
    run(&mut cmd(
        "ip",
        [
            "-n",
            NETNS,
            "-6",
            "addr",
            "replace",
            UPSTREAM_CIDR6,
            "dev",
            "eth0",
            "nodad",
        ],
    ))?;
    run(&mut in_netns([
        "ip", "-6", "route", "replace", "default", "via", HOST_IP6,
    ]))?;
    let route = read(&mut cmd("ip", ["-6", "route", "get", UPSTREAM_IP6]))?;
    if !route.contains(&format!(" dev {HOST_VETH} ")) {
        bail!("{UPSTREAM_IP6} is not routed to {HOST_VETH}, refusing to go on: {route}");
    }
    if !succeeds(&mut cmd("docker", ["network", "inspect", V6_NETWORK])) {
        read(&mut cmd(
            "docker",
            [
                "network", "create", "--ipv6", "--subnet", V6_SUBNET, V6_NETWORK,
            ],
        ))?;
    }
    start_container(V6_CONTAINER, Some(V6_NETWORK))?;
    let ip = read(&mut cmd(
        "docker",
        [
            "inspect",
            "-f",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{V6_NETWORK}\").GlobalIPv6Address}}}}"
            ),
            V6_CONTAINER,
        ],
    ))?;
    wait_until_not_tentative()?;
    println!(
        "lab up: {V6_CONTAINER} ({}) on network {V6_NETWORK} -> routed, no NAT -> {HOST_VETH} -> {NETNS} {UPSTREAM_IP6}",
        ip.trim()
    );
    Ok(())
}

/// Duplicate address detection on the network's gateway and the
/// container's address: until it passes, neighbour discovery for them gets
/// no answer and the first packets wait seconds.
fn wait_until_not_tentative() -> Result<()> {
    let pid = read(&mut cmd(
        "docker",
        ["inspect", "-f", "{{.State.Pid}}", V6_CONTAINER],
    ))?;
    let started = Instant::now();
    loop {
        let host = read(&mut cmd("ip", ["-6", "addr", "show", "tentative"]))?;
        let container = read(&mut cmd(
            "nsenter",
            [
                "-t",
                pid.trim(),
                "-n",
                "ip",
                "-6",
                "addr",
                "show",
                "tentative",
            ],
        ))?;
        if host.trim().is_empty() && container.trim().is_empty() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("IPv6 addresses still tentative after 10 s: {host}{container}");
        }
        sleep(Duration::from_millis(100));
    }
}

/// Starts (or restarts) a lab container resolving through the upstream's
/// dnsmasq, on Docker's default bridge or on `network`.
fn start_container(name: &str, network: Option<&str>) -> Result<()> {
    match container_running(name)? {
        Some(true) => Ok(()),
        Some(false) => run(&mut cmd("docker", ["start", name])),
        None => {
            let mut docker = cmd(
                "docker",
                [
                    "run",
                    "-d",
                    "--name",
                    name,
                    "--hostname",
                    name,
                    "--dns",
                    UPSTREAM_IP,
                ],
            );
            if let Some(network) = network {
                docker.args(["--network", network]);
            }
            read(docker.arg(LAB_IMAGE)).map(drop).with_context(|| {
                format!("cannot start lab container {name} (has `cargo xtask setup` run?)")
            })
        }
    }
}

pub fn down() -> Result<()> {
    for name in [CONTAINER, DNS_CLIENT, DNS_SERVER, V6_CONTAINER] {
        if container_running(name)?.is_some() {
            read(&mut cmd("docker", ["rm", "-f", name]))?;
        }
    }
    for network in [DEMO_NETWORK, V6_NETWORK] {
        if succeeds(&mut cmd("docker", ["network", "inspect", network])) {
            read(&mut cmd("docker", ["network", "rm", network]))?;
        }
    }
    let saved = Path::new(STATE_DIR).join("ipv6-forwarding");
    if let Ok(value) = fs::read_to_string(&saved) {
        fs::write(FORWARDING6, value).with_context(|| format!("cannot restore {FORWARDING6}"))?;
    }
    if netns_exists()? {
        stop_netns_processes()?;
        run(&mut cmd("ip", ["netns", "del", NETNS]))?;
    }
    // The namespace is freed asynchronously; deleting the veth now avoids a lingering host end.
    if link_exists(HOST_VETH) {
        run(&mut cmd("ip", ["link", "del", HOST_VETH]))?;
    }
    if Path::new(STATE_DIR).exists() {
        fs::remove_dir_all(STATE_DIR).with_context(|| format!("cannot remove {STATE_DIR}"))?;
    }
    println!("lab down: nothing of the lab is left");
    Ok(())
}

/// A network namespace `netns` joined to the host by a veth: `host_veth`
/// (`host_cidr`) on the host, `eth0` (`inside_cidr`) inside, both up.
/// Idempotent: each piece is made only if missing.
pub fn veth_namespace(
    netns: &str,
    host_veth: &str,
    host_cidr: &str,
    inside_cidr: &str,
) -> Result<()> {
    let list = read(&mut cmd("ip", ["netns", "list"]))?;
    if !list
        .lines()
        .any(|l| l.split_whitespace().next() == Some(netns))
    {
        run(&mut cmd("ip", ["netns", "add", netns]))?;
    }
    if !link_exists(host_veth) {
        // The peer is created inside the netns, so its name cannot clash with the host's eth0.
        run(&mut cmd(
            "ip",
            [
                "link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", netns,
            ],
        ))?;
    }
    run(&mut cmd(
        "ip",
        ["addr", "replace", host_cidr, "dev", host_veth],
    ))?;
    run(&mut cmd("ip", ["link", "set", host_veth, "up"]))?;
    run(&mut cmd(
        "ip",
        ["-n", netns, "addr", "replace", inside_cidr, "dev", "eth0"],
    ))?;
    run(&mut cmd("ip", ["-n", netns, "link", "set", "eth0", "up"]))?;
    run(&mut cmd("ip", ["-n", netns, "link", "set", "lo", "up"]))
}

fn in_netns<const N: usize>(args: [&str; N]) -> Command {
    let mut command = cmd("ip", ["netns", "exec", NETNS]);
    command.args(args);
    command
}

fn netns_exists() -> Result<bool> {
    let list = read(&mut cmd("ip", ["netns", "list"]))?;
    Ok(list
        .lines()
        .any(|l| l.split_whitespace().next() == Some(NETNS)))
}

fn link_exists(name: &str) -> bool {
    succeeds(&mut cmd("ip", ["link", "show", "dev", name]))
}

/// `Some(running?)` for an existing container, `None` when there is none.
fn container_running(name: &str) -> Result<Option<bool>> {
    let mut inspect = cmd("docker", ["inspect", "-f", "{{.State.Running}}", name]);
    let out = inspect
        .output()
        .with_context(|| format!("cannot run `{}`", describe(&inspect)))?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).trim() == "true"));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such") {
        return Ok(None);
    }
    bail!("`{}` failed: {}", describe(&inspect), err.trim())
}

/// Starts a self-daemonizing server in the netns. Its stdio goes to a log
/// file: a daemon holding our pipes open would hang the caller.
fn start_daemon(name: &str, args: &[&str]) -> Result<()> {
    let log_path = Path::new(STATE_DIR).join(format!("{name}.log"));
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut command = cmd("ip", ["netns", "exec", NETNS]);
    command.args(args).stdout(log.try_clone()?).stderr(log);
    run(&mut command).with_context(|| format!("{name} did not start (see {})", log_path.display()))
}

/// Pid and command line of every process inside the netns.
fn netns_processes() -> Result<Vec<(String, String)>> {
    let pids = read(&mut cmd("ip", ["netns", "pids", NETNS]))?;
    Ok(pids
        .split_whitespace()
        .map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            (
                pid.to_owned(),
                String::from_utf8_lossy(&cmdline).replace('\0', " "),
            )
        })
        .collect())
}

/// TERM first so the servers exit cleanly, KILL what is still there after 3 s.
fn stop_netns_processes() -> Result<()> {
    let started = Instant::now();
    loop {
        let pids: Vec<String> = netns_processes()?.into_iter().map(|(pid, _)| pid).collect();
        if pids.is_empty() {
            return Ok(());
        }
        let waited = started.elapsed();
        if waited > Duration::from_secs(6) {
            bail!("processes {} in {NETNS} do not exit", pids.join(" "));
        }
        let signal = if waited < Duration::from_secs(3) {
            "-TERM"
        } else {
            "-KILL"
        };
        // A process may exit between listing and signalling: ignore kill's verdict.
        succeeds(cmd("kill", [signal]).args(&pids));
        sleep(Duration::from_millis(100));
    }
}
