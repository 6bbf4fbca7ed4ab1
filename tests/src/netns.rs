//! Hosts made of `ip netns` namespaces joined to the host by a veth pair.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::addrs::with_free_block;
use crate::cmd::{cleanup, cmd, output, run, succeeds};
use crate::names::{delete_link, is_stale, stale_links, unique};

/// Servers get this long to show their listening socket.
const SERVER_START: Duration = Duration::from_secs(5);

/// A network namespace joined to the host by a veth pair, with addresses on
/// both ends. Drop kills every process inside, deletes the namespace and the
/// veth, and removes its scratch folder.
#[derive(Debug)]
pub struct Netns {
    name: String,
    host_veth: String,
    veth: String,
    host_ip: Ipv4Addr,
    ip: Ipv4Addr,
    /// Web roots, pid files and server logs.
    dir: PathBuf,
    servers: Mutex<Vec<Child>>,
}

impl Netns {
    /// Builds it step by step; the guard exists from the first step on, so a
    /// failing step still cleans up what the earlier ones made.
    fn create(
        name: String,
        host_veth: String,
        veth: String,
        host_cidr: &str,
        cidr: &str,
        default_route: bool,
    ) -> Result<Self> {
        let (host_ip, _) = parse_cidr(host_cidr)?;
        let (ip, _) = parse_cidr(cidr)?;
        run(&mut cmd("ip", ["netns", "add", &name]))?;
        let dir = std::env::temp_dir().join(&name);
        let netns = Self {
            name,
            host_veth,
            veth,
            host_ip,
            ip,
            dir,
            servers: Mutex::new(Vec::new()),
        };
        fs::create_dir_all(&netns.dir)
            .with_context(|| format!("cannot create {}", netns.dir.display()))?;
        // The peer is born inside the namespace, so its name cannot clash with a host interface.
        run(&mut cmd(
            "ip",
            [
                "link",
                "add",
                &netns.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                &netns.veth,
                "netns",
                &netns.name,
            ],
        ))?;
        run(&mut cmd(
            "ip",
            ["addr", "add", host_cidr, "dev", &netns.host_veth],
        ))?;
        run(&mut cmd("ip", ["link", "set", &netns.host_veth, "up"]))?;
        netns.exec_ok(["ip", "addr", "add", cidr, "dev", &netns.veth])?;
        netns.exec_ok(["ip", "link", "set", &netns.veth, "up"])?;
        netns.exec_ok(["ip", "link", "set", "lo", "up"])?;
        if default_route {
            netns.exec_ok(["ip", "route", "add", "default", "via", &host_ip.to_string()])?;
        }
        Ok(netns)
    }

    /// The `ip netns` name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's nsfs file, for `nsenter --net=` and
    /// [`IptablesRule::insert_in_netns`](crate::IptablesRule::insert_in_netns).
    pub fn ns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// The veth end in the host namespace.
    pub fn host_veth(&self) -> &str {
        &self.host_veth
    }

    /// The veth end inside the namespace.
    pub fn veth(&self) -> &str {
        &self.veth
    }

    /// The host end's address.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The namespace's own address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = cmd("ip", ["netns", "exec", &self.name]);
        command.args(args);
        command
    }

    /// Runs a command inside the namespace and returns its output, whatever its exit status.
    pub fn exec<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output(&mut self.command(args))
    }

    /// Runs a command inside the namespace; a non-zero exit is an error. Returns stdout.
    pub fn exec_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(&mut self.command(args))
    }

    /// Starts a long-running command inside the namespace (output to
    /// `<dir>/<label>.log`); it is killed when the guard drops.
    pub fn spawn<I, S>(&self, label: &str, args: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let log = File::create(self.log_path(label))?;
        let mut command = self.command(args);
        command.stdout(log.try_clone()?).stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {label} in {}", self.name))?;
        self.servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Ok(())
    }

    fn log_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.log"))
    }

    /// Waits until something inside listens on `port` ("tcp" or "udp"), or
    /// fails with the server's log when it exited or took too long.
    fn wait_listening(&self, label: &str, proto: &str, port: u16) -> Result<()> {
        let deadline = Instant::now() + SERVER_START;
        loop {
            let tables = self.exec_ok([
                "cat",
                &format!("/proc/net/{proto}"),
                &format!("/proc/net/{proto}6"),
            ])?;
            if listens(&tables, proto, port) {
                return Ok(());
            }
            let exited = self
                .servers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter_mut()
                .any(|child| child.try_wait().ok().flatten().is_some());
            if exited || Instant::now() >= deadline {
                let log = fs::read_to_string(self.log_path(label)).unwrap_or_default();
                bail!(
                    "{label} in {} does not listen on {proto} port {port}; its log:\n{log}",
                    self.name
                );
            }
            sleep(Duration::from_millis(50));
        }
    }
}

/// True when /proc/net/{tcp,udp}{,6} text shows a socket bound to `port`
/// (for TCP: in LISTEN state).
fn listens(tables: &str, proto: &str, port: u16) -> bool {
    let wanted = format!("{port:04X}");
    tables.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bound = fields
            .get(1)
            .and_then(|local| local.rsplit_once(':'))
            .is_some_and(|(_, p)| p == wanted);
        // TCP state 0A is LISTEN.
        bound && (proto != "tcp" || fields.get(3) == Some(&"0A"))
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        for mut child in self
            .servers
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_all_inside(&self.name);
        cleanup(&mut cmd("ip", ["netns", "del", &self.name]));
        // The kernel frees a namespace lazily; deleting our end now removes both ends at once.
        if link_exists(&self.host_veth) {
            delete_link(&self.host_veth);
        }
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!("lab cleanup: cannot remove {}: {err}", self.dir.display());
        }
    }
}

/// Kills whatever a test started inside without the guard's knowledge
/// (say `sh -c 'x &'`), since those would keep the namespace alive.
fn kill_all_inside(netns: &str) {
    let Ok(pids) = run(&mut cmd("ip", ["netns", "pids", netns])) else {
        return;
    };
    let pids: Vec<&str> = pids.split_whitespace().collect();
    if !pids.is_empty() {
        // They may exit on their own meanwhile: kill's complaints do not matter.
        succeeds(cmd("kill", ["-KILL"]).args(&pids));
    }
}

/// Removes namespaces and host veths of runs that are gone.
pub(crate) fn sweep() {
    if let Ok(list) = run(&mut cmd("ip", ["netns", "list"])) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if is_stale(name) {
                kill_all_inside(name);
                cleanup(&mut cmd("ip", ["netns", "del", name]));
            }
        }
    }
    for link in stale_links() {
        // Deleting one end of a veth pair already took the other.
        if link_exists(&link) {
            delete_link(&link);
        }
    }
}

pub(crate) fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8)> {
    let (addr, len) = cidr
        .split_once('/')
        .with_context(|| format!("`{cidr}` is not address/prefix"))?;
    let addr = addr
        .parse()
        .with_context(|| format!("bad address in `{cidr}`"))?;
    let len: u8 = len
        .parse()
        .with_context(|| format!("bad prefix length in `{cidr}`"))?;
    if len > 32 {
        bail!("bad prefix length in `{cidr}`");
    }
    Ok((addr, len))
}

/// A simulated internet host: a namespace in 198.51.100.0/24 with its veth
/// named `eth0` and a default route back through the host, so containers
/// reach it through Docker's NAT. Derefs to [`Netns`] for `exec`, `ip`, ...
#[derive(Debug)]
pub struct Upstream {
    netns: Netns,
    /// The host end's and the upstream's IPv6 addresses, when it has them.
    ipv6: Option<(Ipv6Addr, Ipv6Addr)>,
}

impl Upstream {
    /// An upstream on a /30 of 198.51.100.0/24 that no one on this machine
    /// routes yet (host end `.4n+1`, upstream `.4n+2`), so that concurrent
    /// tests, the `cargo xtask lab` upstream (198.51.100.1 and .254) and
    /// other labs using more specific prefixes never collide.
    pub fn new() -> Result<Self> {
        with_free_block(|block| Self::with_addrs(&block.host_cidr(), &block.peer_cidr()))
    }

    /// An upstream with the given addresses, e.g. `("198.51.100.254/24",
    /// "198.51.100.1/24")`; the caller makes sure nothing else uses them.
    pub fn with_addrs(host_cidr: &str, cidr: &str) -> Result<Self> {
        Self::create(host_cidr, cidr, true)
    }

    /// An upstream on a free /30 with no route beyond its own link: it
    /// cannot answer a source it was not told the way back to (a container
    /// address a network that does not masquerade lets out).
    pub fn without_route_back() -> Result<Self> {
        with_free_block(|block| Self::create(&block.host_cidr(), &block.peer_cidr(), false))
    }

    fn create(host_cidr: &str, cidr: &str, default_route: bool) -> Result<Self> {
        let name = unique();
        let host_veth = format!("{name}h");
        let netns = Netns::create(
            name,
            host_veth,
            "eth0".into(),
            host_cidr,
            cidr,
            default_route,
        )?;
        Ok(Self { netns, ipv6: None })
    }

    /// An upstream with IPv6 too: on `2001:db8:100:<n>::/64`, `n` its IPv4
    /// block's number (so as unique as that), host end `::fe`, upstream `::1`
    /// with a default route back through the host (containers' IPv6
    /// addresses are routed, not translated).
    pub fn dual_stack() -> Result<Self> {
        let mut upstream = Self::new()?;
        let block = upstream.host_ip().octets()[3] / 4;
        let (host, far): (Ipv6Addr, Ipv6Addr) = (
            format!("2001:db8:100:{block:x}::fe").parse()?,
            format!("2001:db8:100:{block:x}::1").parse()?,
        );
        // nodad: usable at once, without duplicate address detection's wait.
        run(&mut cmd(
            "ip",
            [
                "-6",
                "addr",
                "add",
                &format!("{host}/64"),
                "dev",
                upstream.host_veth(),
                "nodad",
            ],
        ))?;
        upstream.exec_ok([
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{far}/64"),
            "dev",
            upstream.veth(),
            "nodad",
        ])?;
        upstream.exec_ok([
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            &host.to_string(),
        ])?;
        upstream.ipv6 = Some((host, far));
        Ok(upstream)
    }

    /// The upstream's IPv6 address (of a [`Upstream::dual_stack`] one).
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6.expect("a dual-stack upstream").1
    }

    /// The host end's IPv6 address (of a [`Upstream::dual_stack`] one).
    pub fn host_ipv6(&self) -> Ipv6Addr {
        self.ipv6.expect("a dual-stack upstream").0
    }

    /// Sets the MTU of the link to it, both ends (a smaller link on the path).
    pub fn set_link_mtu(&self, mtu: u32) -> Result<()> {
        let mtu = mtu.to_string();
        run(&mut cmd(
            "ip",
            ["link", "set", &self.host_veth, "mtu", &mtu],
        ))?;
        self.exec_ok(["ip", "link", "set", &self.veth, "mtu", &mtu])?;
        Ok(())
    }

    /// Serves a small page with busybox httpd on `port`; the page reads
    /// `pkttrace upstream <name>`. Returns once the server listens.
    pub fn serve_http(&self, port: u16) -> Result<()> {
        let root = self.dir.join(format!("www-{port}"));
        fs::create_dir_all(&root)?;
        fs::write(
            root.join("index.html"),
            format!("pkttrace upstream {}\n", self.name),
        )?;
        let label = format!("httpd-{port}");
        let root = root.to_string_lossy();
        self.spawn(
            &label,
            [
                "busybox",
                "httpd",
                "-f",
                "-p",
                &port.to_string(),
                "-h",
                &root,
            ],
        )?;
        self.wait_listening(&label, "tcp", port)
    }

    /// Serves DNS on the upstream's address (both, for a dual-stack one)
    /// with the given A records (AAAA gets "no data", other `.lab` names
    /// NXDOMAIN, anything else REFUSED: no query is ever forwarded).
    /// Returns once the server listens.
    pub fn serve_dns(&self, records: &[(&str, Ipv4Addr)]) -> Result<()> {
        let mut args = vec![
            "dnsmasq".to_owned(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--bind-interfaces".into(),
            format!("--listen-address={}", self.ip),
            "--local=/lab/".into(),
            format!("--pid-file={}", self.dir.join("dnsmasq.pid").display()),
            "--log-facility=-".into(),
        ];
        if let Some((_, ipv6)) = self.ipv6 {
            args.push(format!("--listen-address={ipv6}"));
        }
        args.extend(
            records
                .iter()
                .map(|(name, ip)| format!("--host-record={name},{ip}")),
        );
        self.spawn("dnsmasq", &args)?;
        self.wait_listening("dnsmasq", "udp", 53)
    }
}

impl Deref for Upstream {
    type Target = Netns;

    fn deref(&self) -> &Netns {
        &self.netns
    }
}

/// Demo #1's pair: a namespace joined to the host namespace by a veth with
/// unique names on both ends, host end 10.11.12.13/24, namespace end
/// 10.11.12.14/24. Derefs to [`Netns`].
#[derive(Debug)]
pub struct NetnsPair {
    netns: Netns,
}

impl NetnsPair {
    pub const HOST_CIDR: &str = "10.11.12.13/24";
    pub const CIDR: &str = "10.11.12.14/24";

    pub fn new() -> Result<Self> {
        Self::with_addrs(Self::HOST_CIDR, Self::CIDR)
    }

    pub fn with_addrs(host_cidr: &str, cidr: &str) -> Result<Self> {
        let name = unique();
        let (host_veth, veth) = (format!("{name}h"), format!("{name}n"));
        let netns = Netns::create(name, host_veth, veth, host_cidr, cidr, false)?;
        Ok(Self { netns })
    }
}

impl Deref for NetnsPair {
    type Target = Netns;

    fn deref(&self) -> &Netns {
        &self.netns
    }
}

/// A namespace reached only through another one: joined to `outer` by a
/// veth whose near end (`near`) lives in `outer`, with forwarding on in
/// both, so that the two can route to each other (or round in a loop).
/// Drop deletes it, and the veth with it.
#[derive(Debug)]
pub struct InnerNetns {
    name: String,
    near: String,
    ip: Ipv4Addr,
    near_ip: Ipv4Addr,
}

impl InnerNetns {
    /// Behind `outer`: `near_cidr` on the veth end in `outer`, `cidr` inside.
    /// Addresses inside namespaces never touch the host's routing table.
    pub fn behind(outer: &Netns, near_cidr: &str, cidr: &str) -> Result<Self> {
        let name = unique();
        let (near, far) = (format!("{name}a"), format!("{name}b"));
        run(&mut cmd("ip", ["netns", "add", &name]))?;
        let inner = Self {
            near: near.clone(),
            ip: parse_cidr(cidr)?.0,
            near_ip: parse_cidr(near_cidr)?.0,
            name,
        };
        outer.exec_ok([
            "ip",
            "link",
            "add",
            &near,
            "type",
            "veth",
            "peer",
            "name",
            &far,
            "netns",
            &inner.name,
        ])?;
        outer.exec_ok(["ip", "addr", "add", near_cidr, "dev", &near])?;
        outer.exec_ok(["ip", "link", "set", &near, "up"])?;
        outer.exec_ok(["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        inner.exec_ok(["ip", "addr", "add", cidr, "dev", &far])?;
        inner.exec_ok(["ip", "link", "set", &far, "up"])?;
        inner.exec_ok(["ip", "link", "set", "lo", "up"])?;
        inner.exec_ok(["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        Ok(inner)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The veth end in the outer namespace.
    pub fn near_veth(&self) -> &str {
        &self.near
    }

    /// Its own address, and the outer namespace's on the veth between them.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn near_ip(&self) -> Ipv4Addr {
        self.near_ip
    }

    /// Runs a command inside; a non-zero exit is an error. Returns stdout.
    pub fn exec_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = cmd("ip", ["netns", "exec", &self.name]);
        command.args(args);
        run(&mut command)
    }
}

impl Drop for InnerNetns {
    fn drop(&mut self) {
        kill_all_inside(&self.name);
        cleanup(&mut cmd("ip", ["netns", "del", &self.name]));
    }
}

/// True when `ip netns list` shows `name`.
pub fn netns_exists(name: &str) -> bool {
    run(&mut cmd("ip", ["netns", "list"])).is_ok_and(|list| {
        list.lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    })
}

/// True when the host namespace has an interface called `name`.
pub fn link_exists(name: &str) -> bool {
    succeeds(&mut cmd("ip", ["link", "show", "dev", name]))
}

#[cfg(test)]
mod tests {
    use super::{listens, parse_cidr};

    #[test]
    fn finds_listening_sockets_in_proc_net() {
        let tcp = "  sl  local_address rem_address   st\n   0: 00000000:0050 00000000:0000 0A 0\n   1: 0100007F:1F90 0100007F:9C40 01 0\n";
        assert!(listens(tcp, "tcp", 80));
        // Port 8080 only has an established connection here.
        assert!(!listens(tcp, "tcp", 8080));
        let udp = "  sl  local_address rem_address   st\n  10: 0164336C:0035 00000000:0000 07 0\n";
        assert!(listens(udp, "udp", 53));
    }

    #[test]
    fn parses_cidrs() {
        assert_eq!(
            parse_cidr("198.51.100.1/24").unwrap(),
            ("198.51.100.1".parse().unwrap(), 24)
        );
        assert!(parse_cidr("198.51.100.1").is_err());
        assert!(parse_cidr("198.51.100.1/33").is_err());
    }
}
