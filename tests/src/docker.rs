//! Docker containers and networks as guards. Containers run the local
//! `pkttrace-lab` image that `cargo xtask setup` builds.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Output;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cmd::{cleanup, cmd, output, run, succeeds};
use crate::names::{is_stale, unique};

/// The busybox image built by `cargo xtask setup`.
pub const LAB_IMAGE: &str = "pkttrace-lab:latest";

/// Options for [`Container`]; start with [`Container::builder`].
#[derive(Debug, Default)]
pub struct ContainerBuilder {
    network: Option<String>,
    dns: Option<std::net::IpAddr>,
    args: Vec<String>,
    command: Vec<String>,
}

impl ContainerBuilder {
    /// A network to join instead of Docker's default bridge.
    pub fn network(mut self, name: &str) -> Self {
        self.network = Some(name.to_owned());
        self
    }

    /// The container's resolver; use a lab DNS server so no query leaves the machine.
    pub fn dns(mut self, server: impl Into<std::net::IpAddr>) -> Self {
        self.dns = Some(server.into());
        self
    }

    /// Any other `docker run` option, e.g. `--cap-add=NET_ADMIN`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// What the container runs instead of `sleep infinity` (a server:
    /// `httpd -f -p 80`).
    pub fn command(mut self, command: &[&str]) -> Self {
        self.command = command.iter().map(|a| a.to_string()).collect();
        self
    }

    /// `docker run -d --name <unique> ... pkttrace-lab sleep infinity` (or its command).
    pub fn start(self) -> Result<Container> {
        let name = unique();
        let mut docker = cmd(
            "docker",
            ["run", "-d", "--name", &name, "--hostname", &name],
        );
        if let Some(network) = &self.network {
            docker.args(["--network", network]);
        }
        if let Some(dns) = self.dns {
            docker.args(["--dns", &dns.to_string()]);
        }
        docker.args(&self.args).arg(LAB_IMAGE);
        if self.command.is_empty() {
            docker.args(["sleep", "infinity"]);
        } else {
            docker.args(&self.command);
        }
        // The guard exists before the run: a container that was created but
        // failed to start must go too.
        let mut container = Container {
            name,
            id: String::new(),
            ip: Ipv4Addr::UNSPECIFIED,
            ipv6: None,
            pid: 0,
        };
        container.id = run(&mut docker)
            .context("cannot start a lab container (has `cargo xtask setup` run?)")?
            .trim()
            .to_owned();
        let inspect = run(&mut cmd("docker", ["inspect", &container.id]))?;
        let inspect: Value =
            serde_json::from_str(&inspect).context("unreadable `docker inspect` output")?;
        let network = self.network.as_deref().unwrap_or("bridge");
        (container.ip, container.pid) = address_and_pid(&inspect, network)?;
        container.ipv6 = inspect[0]["NetworkSettings"]["Networks"][network]["GlobalIPv6Address"]
            .as_str()
            .and_then(|ip| ip.parse().ok());
        Ok(container)
    }
}

/// Reads the IPv4 address on `network` and the init pid from `docker inspect`
/// output; a container with `--network none` has no address (0.0.0.0).
fn address_and_pid(inspect: &Value, network: &str) -> Result<(Ipv4Addr, u32)> {
    let info = &inspect[0];
    let ip = if network == "none" {
        Ipv4Addr::UNSPECIFIED
    } else {
        info["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .filter(|ip| !ip.is_empty())
            .with_context(|| format!("container has no IPv4 address on network {network}"))?
            .parse()?
    };
    let pid = info["State"]["Pid"]
        .as_u64()
        .context("container has no pid")?;
    Ok((ip, u32::try_from(pid)?))
}

/// A running `pkttrace-lab` container; Drop removes it (`docker rm -f`).
#[derive(Debug)]
pub struct Container {
    name: String,
    id: String,
    ip: Ipv4Addr,
    /// Its address on a network made with `--ipv6`.
    ipv6: Option<Ipv6Addr>,
    pid: u32,
}

impl Container {
    /// A container on Docker's default bridge.
    pub fn new() -> Result<Self> {
        Self::builder().start()
    }

    pub fn builder() -> ContainerBuilder {
        ContainerBuilder::default()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its address on the network it was started on.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Its IPv6 address on the network it was started on (one made with
    /// [`DockerNetwork::dual_stack`]).
    pub fn ipv6(&self) -> Result<Ipv6Addr> {
        self.ipv6
            .with_context(|| format!("container {} has no IPv6 address", self.name))
    }

    /// Host pid of its init process (its namespaces are /proc/<pid>/ns/*).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its network namespace's nsfs file, `/proc/<pid>/ns/net`.
    pub fn netns_path(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    /// `docker stop`: it stays, stopped, until the guard removes it.
    pub fn stop(&self) -> Result<()> {
        run(&mut cmd("docker", ["stop", "-t", "1", &self.name])).map(|_| ())
    }

    /// `docker exec`, returning the output whatever the exit status.
    pub fn exec<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut docker = cmd("docker", ["exec", &self.name]);
        docker.args(args);
        output(&mut docker)
    }

    /// `docker exec`; a non-zero exit is an error. Returns stdout.
    pub fn exec_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut docker = cmd("docker", ["exec", &self.name]);
        docker.args(args);
        run(&mut docker)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        cleanup(&mut cmd("docker", ["rm", "-f", &self.name]));
    }
}

/// A user-defined Docker bridge network; Drop removes it. Drop the
/// containers on it first (declare the network before them).
#[derive(Debug)]
pub struct DockerNetwork {
    name: String,
    bridge: String,
    ipv6_subnet: Option<String>,
}

impl DockerNetwork {
    /// A network whose bridge Docker names `br-<id prefix>`.
    pub fn new() -> Result<Self> {
        Self::create(None)
    }

    /// A network whose bridge interface is called `bridge` (at most 15 characters).
    pub fn with_bridge(bridge: &str) -> Result<Self> {
        Self::create(Some(bridge))
    }

    /// A network on `subnet` (e.g. `10.78.3.0/24`), so containers can be given
    /// addresses with `--ip` before they exist.
    pub fn with_subnet(subnet: &str) -> Result<Self> {
        Self::create_with(None, Some(subnet))
    }

    /// A network on `subnet` whose containers leave with their own private
    /// addresses: masquerading off
    /// (`-o com.docker.network.bridge.enable_ip_masquerade=false`).
    pub fn without_masquerade(subnet: &str) -> Result<Self> {
        Self::create_with_options(
            None,
            Some(subnet),
            &["com.docker.network.bridge.enable_ip_masquerade=false"],
        )
    }

    /// A dual-stack network (`--ipv6`): Docker picks the IPv4 subnet, the
    /// IPv6 one is a /64 of ULA space that is this network's alone
    /// (`fd00:ac:<pid>:<n>::/64`, never the machine's own `fd00::/64`).
    /// Docker turns `net.ipv6.conf.all.forwarding` on as it makes it: hold
    /// a [`Sysctl`](crate::Sysctl) guard on it from before, to get the
    /// machine's value back.
    pub fn dual_stack() -> Result<Self> {
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
        let subnet = format!(
            "fd00:ac:{:x}:{:x}::/64",
            std::process::id() & 0xffff,
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut network = Self::create_with_options(None, Some(&subnet), &[])?;
        network.ipv6_subnet = Some(subnet);
        Ok(network)
    }

    /// The IPv6 subnet of a [`DockerNetwork::dual_stack`] network.
    pub fn ipv6_subnet(&self) -> Option<&str> {
        self.ipv6_subnet.as_deref()
    }

    fn create(bridge: Option<&str>) -> Result<Self> {
        Self::create_with(bridge, None)
    }

    fn create_with(bridge: Option<&str>, subnet: Option<&str>) -> Result<Self> {
        Self::create_with_options(bridge, subnet, &[])
    }

    fn create_with_options(
        bridge: Option<&str>,
        subnet: Option<&str>,
        options: &[&str],
    ) -> Result<Self> {
        let name = unique();
        let mut docker = cmd("docker", ["network", "create", "--driver", "bridge"]);
        for option in options {
            docker.args(["--opt", option]);
        }
        if let Some(bridge) = bridge {
            docker.args(["--opt", &format!("com.docker.network.bridge.name={bridge}")]);
        }
        if let Some(subnet) = subnet {
            if subnet.contains(':') {
                docker.arg("--ipv6");
            }
            docker.args(["--subnet", subnet]);
        }
        docker.arg(&name);
        let id = run(&mut docker)?.trim().to_owned();
        let bridge = match bridge {
            Some(bridge) => bridge.to_owned(),
            None => format!("br-{}", id.get(..12).unwrap_or(&id)),
        };
        Ok(Self {
            name,
            bridge,
            ipv6_subnet: None,
        })
    }

    /// The network's name, for [`ContainerBuilder::network`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's bridge interface for this network.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }
}

impl Container {
    /// The host-side end of the veth behind `interface` (e.g. `eth0`): the
    /// host interface whose ifindex is the container interface's iflink.
    pub fn host_peer(&self, interface: &str) -> Result<String> {
        let iflink = self
            .exec_ok(["cat", &format!("/sys/class/net/{interface}/iflink")])?
            .trim()
            .to_string();
        let links = run(&mut cmd("ip", ["-o", "link", "show"]))?;
        links
            .lines()
            .find(|l| l.starts_with(&format!("{iflink}: ")))
            .and_then(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .with_context(|| {
                format!(
                    "no host interface has {}'s {interface} iflink {iflink}",
                    self.name
                )
            })
    }

    /// A container publishing its port 80 on a free host port (`-p PORT:80`),
    /// with busybox httpd serving there; returns it and the host port.
    pub fn published_web_server() -> Result<(Self, u16)> {
        let port = std::net::TcpListener::bind("0.0.0.0:0")?
            .local_addr()?
            .port();
        let web = Self::builder()
            .arg("-p")
            .arg(&format!("{port}:80"))
            .start()?;
        web.exec_ok(["httpd", "-p", "80", "-h", "/"])?;
        Ok((web, port))
    }
}

impl Drop for DockerNetwork {
    fn drop(&mut self) {
        cleanup(&mut cmd("docker", ["network", "rm", &self.name]));
    }
}

/// True when a container of that name exists, running or not.
pub fn container_exists(name: &str) -> bool {
    succeeds(&mut cmd("docker", ["container", "inspect", name]))
}

/// True when a Docker network of that name exists.
pub fn docker_network_exists(name: &str) -> bool {
    succeeds(&mut cmd("docker", ["network", "inspect", name]))
}

/// Removes containers, then networks, of runs that are gone. Tests that do
/// not use Docker must not fail for want of it, so a dead daemon is skipped.
pub(crate) fn sweep() {
    let stale = |args: &[&str]| -> Vec<String> {
        run(&mut cmd("docker", args))
            .map(|list| {
                list.lines()
                    .filter(|n| is_stale(n))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = stale(&["ps", "-a", "--filter", "name=pt-", "--format", "{{.Names}}"]);
    if !containers.is_empty() {
        cleanup(cmd("docker", ["rm", "-f"]).args(&containers));
    }
    for network in stale(&[
        "network",
        "ls",
        "--filter",
        "name=pt-",
        "--format",
        "{{.Name}}",
    ]) {
        cleanup(&mut cmd("docker", ["network", "rm", &network]));
    }
}

#[cfg(test)]
mod tests {
    use super::address_and_pid;

    #[test]
    fn reads_address_and_pid_from_inspect() {
        let inspect = serde_json::json!([{
            "State": {"Pid": 4242},
            "NetworkSettings": {"Networks": {
                "bridge": {"IPAddress": "172.17.0.5"},
                "pt-1-2": {"IPAddress": ""}
            }}
        }]);
        assert_eq!(
            address_and_pid(&inspect, "bridge").unwrap(),
            ("172.17.0.5".parse().unwrap(), 4242)
        );
        assert!(address_and_pid(&inspect, "pt-1-2").is_err());
    }
}
