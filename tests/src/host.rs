//! Guards for host-wide settings: sysctls, iptables rules and routes.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::cmd::{cleanup, cmd, run, succeeds};
use crate::names::{is_stale, unique};

/// A sysctl set for the guard's lifetime; Drop writes the old value back.
/// The old value is also kept in a file, so the sweep can restore it after
/// a run that was killed before its Drop ran.
#[derive(Debug)]
pub struct Sysctl {
    path: PathBuf,
    old: String,
    backup: PathBuf,
}

impl Sysctl {
    /// `key` as sysctl(8) takes it: `net.ipv4.conf.all.forwarding`, or with
    /// slashes when a part holds a dot (`net/ipv4/conf/eth0.5/forwarding`).
    pub fn set(key: &str, value: &str) -> Result<Self> {
        let path = sysctl_path(key);
        let old = fs::read_to_string(&path)
            .with_context(|| format!("cannot read sysctl {key}"))?
            .trim_end()
            .to_owned();
        let backup = std::env::temp_dir().join(format!("{}.sysctl", unique()));
        fs::write(&backup, format!("{}\n{old}\n", path.display()))?;
        let guard = Self { path, old, backup };
        fs::write(&guard.path, value)
            .with_context(|| format!("cannot set sysctl {key}={value}"))?;
        Ok(guard)
    }

    /// The value it had before and gets back on Drop.
    pub fn old_value(&self) -> &str {
        &self.old
    }
}

fn sysctl_path(key: &str) -> PathBuf {
    let relative = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    PathBuf::from("/proc/sys").join(relative)
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        match fs::write(&self.path, &self.old) {
            Ok(()) => {
                let _ = fs::remove_file(&self.backup);
            }
            Err(err) => eprintln!("lab cleanup: cannot restore {}: {err}", self.path.display()),
        }
    }
}

/// An iptables rule, inserted at the top of its chain for the guard's
/// lifetime; Drop deletes it. Each rule carries a comment with a harness
/// name, so the sweep can find rules of killed runs in the host namespace
/// (a killed run's rules in other namespaces go with its namespaces).
#[derive(Debug)]
pub struct IptablesRule {
    /// The network namespace's nsfs file; `None` for the host's.
    netns: Option<PathBuf>,
    table: String,
    chain: String,
    spec: Vec<String>,
    /// An ip6tables rule (nft family `ip6`) rather than an iptables one.
    ipv6: bool,
    /// iptables-nft made the table for this rule: Drop removes it again once
    /// it holds no rule, so its empty base chains do not stay hooked.
    made_the_table: bool,
}

impl IptablesRule {
    /// `iptables -I <chain> <args>` in the filter table.
    pub fn insert<I, S>(chain: &str, args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::insert_in("filter", chain, args)
    }

    /// `iptables -t <table> -I <chain> <args>`.
    pub fn insert_in<I, S>(table: &str, chain: &str, args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::tagged(None, false, table, chain, args)
    }

    /// `ip6tables -I <chain> <args>` in the filter table.
    pub fn insert_ipv6<I, S>(chain: &str, args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::tagged(None, true, "filter", chain, args)
    }

    /// `nsenter --net=<netns> iptables -t <table> -I <chain> <args>`, for a
    /// rule inside a container (`/proc/<pid>/ns/net`) or an `ip netns`
    /// ([`Netns::ns_path`](crate::Netns::ns_path)). Drop leaves it alone when
    /// the namespace is already gone, as its rules went with it.
    pub fn insert_in_netns<I, S>(netns: &Path, table: &str, chain: &str, args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::tagged(Some(netns.to_owned()), false, table, chain, args)
    }

    fn tagged<I, S>(
        netns: Option<PathBuf>,
        ipv6: bool,
        table: &str,
        chain: &str,
        args: I,
    ) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut spec: Vec<String> = args
            .into_iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        spec.extend(["-m".into(), "comment".into(), "--comment".into(), unique()]);
        let made_the_table = !succeeds(&mut nft_table(netns.as_deref(), ipv6, "list", table));
        run(iptables_in(netns.as_deref(), ipv6)
            .args(["-t", table, "-I", chain])
            .args(&spec))?;
        Ok(Self {
            netns,
            ipv6,
            table: table.to_owned(),
            chain: chain.to_owned(),
            spec,
            made_the_table,
        })
    }

    /// The handle nf_tables gave the rule (iptables rules are nft rules here).
    /// nft lists no iptables comments, so the rule is found by its place:
    /// inserted first, it is the first of its chain while `iptables -S`
    /// says the first rule there carries this rule's comment.
    pub fn handle(&self) -> Result<u64> {
        let tag = self.spec.last().expect("tagged with a comment");
        let listed = run(iptables_in(self.netns.as_deref(), self.ipv6).args([
            "-t",
            &self.table,
            "-S",
            &self.chain,
        ]))?;
        let first = listed
            .lines()
            .find(|l| l.starts_with("-A "))
            .with_context(|| format!("chain {} is empty", self.chain))?;
        ensure!(
            first.contains(tag.as_str()),
            "the first rule of {} is not ours: {first}",
            self.chain
        );
        let listing = run(in_netns(self.netns.as_deref(), "nft").args([
            "-a",
            "list",
            "chain",
            nft_family(self.ipv6),
            &self.table,
            &self.chain,
        ]))?;
        listing
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with("type ") && !line.starts_with("chain "))
            .find_map(|line| line.rsplit_once("# handle "))
            .and_then(|(_, handle)| handle.trim().parse().ok())
            .with_context(|| format!("no rule in {}:\n{listing}", self.chain))
    }
}

/// `nft <verb> table ip <table>` (`ip6` for an IPv6 rule) in `netns` (the
/// host's when `None`).
fn nft_table(netns: Option<&Path>, ipv6: bool, verb: &str, table: &str) -> Command {
    let mut nft = in_netns(netns, "nft");
    nft.args([verb, "table", nft_family(ipv6), table]);
    nft
}

fn nft_family(ipv6: bool) -> &'static str {
    if ipv6 { "ip6" } else { "ip" }
}

/// `iptables` (`ip6tables`), run inside the network namespace of the nsfs
/// file `netns` when there is one.
fn iptables_in(netns: Option<&Path>, ipv6: bool) -> Command {
    in_netns(netns, if ipv6 { "ip6tables" } else { "iptables" })
}

/// `program`, run inside the network namespace of the nsfs file `netns`
/// when there is one.
fn in_netns(netns: Option<&Path>, program: &str) -> Command {
    match netns {
        Some(netns) => {
            let mut flag = OsString::from("--net=");
            flag.push(netns);
            let mut nsenter = cmd("nsenter", [flag]);
            nsenter.arg(program);
            nsenter
        }
        None => cmd(program, [] as [&str; 0]),
    }
}

impl Drop for IptablesRule {
    fn drop(&mut self) {
        if self.netns.as_ref().is_some_and(|netns| !netns.exists()) {
            return;
        }
        cleanup(
            iptables_in(self.netns.as_deref(), self.ipv6)
                .args(["-t", &self.table, "-D", &self.chain])
                .args(&self.spec),
        );
        if self.made_the_table {
            let listing = run(&mut nft_table(
                self.netns.as_deref(),
                self.ipv6,
                "list",
                &self.table,
            ));
            // A rule someone else added since keeps the table.
            let emptied = listing.is_ok_and(|l| l.lines().all(|line| is_chain_frame(line.trim())));
            if emptied {
                cleanup(&mut nft_table(
                    self.netns.as_deref(),
                    self.ipv6,
                    "delete",
                    &self.table,
                ));
            }
        }
    }
}

/// A line of `nft list table` that is no rule: the table's and chains'
/// frames and the base chains' hook lines.
fn is_chain_frame(line: &str) -> bool {
    line.is_empty()
        || line == "}"
        || line.starts_with("table ")
        || line.starts_with("chain ")
        || line.starts_with("type ")
}

/// Deletes tagged iptables rules and restores sysctls of runs that are gone.
/// A route of the host's own for the guard's lifetime, to a free /30 of
/// 198.51.100.0/24: of a type that refuses (unreachable, blackhole,
/// prohibit), or via a gateway. Drop deletes it. Like a sysctl it is noted in
/// a file, so the sweep deletes the route of a run that was killed.
#[derive(Debug)]
pub struct HostRoute {
    spec: Vec<String>,
    block: String,
    destination: std::net::Ipv4Addr,
    note: PathBuf,
}

impl HostRoute {
    /// `ip route add <kind> <block>`: kind is `unreachable`, `blackhole` or `prohibit`.
    pub fn refusing(kind: &str) -> Result<Self> {
        Self::add(|block| vec![kind.to_owned(), block])
    }

    /// `ip route add <block> via <gateway>`.
    pub fn via(gateway: std::net::Ipv4Addr) -> Result<Self> {
        Self::add(|block| vec![block, "via".into(), gateway.to_string()])
    }

    fn add(spec: impl FnOnce(String) -> Vec<String>) -> Result<Self> {
        let note = std::env::temp_dir().join(format!("{}.route", unique()));
        crate::addrs::with_free_block(|block| {
            let spec = spec(block.network_cidr());
            fs::write(&note, spec.join(" "))?;
            let route = Self {
                spec,
                block: block.network_cidr(),
                destination: block.host,
                note,
            };
            run(cmd("ip", ["route", "add"]).args(&route.spec))?;
            Ok(route)
        })
    }

    /// The /30 it routes, `198.51.100.N/30`.
    pub fn block(&self) -> &str {
        &self.block
    }

    /// An address the route covers.
    pub fn destination(&self) -> std::net::Ipv4Addr {
        self.destination
    }
}

impl Drop for HostRoute {
    fn drop(&mut self) {
        cleanup(cmd("ip", ["route", "del"]).args(&self.spec));
        let _ = fs::remove_file(&self.note);
    }
}

pub(crate) fn sweep() {
    for (program, table) in ["iptables", "ip6tables"]
        .into_iter()
        .flat_map(|p| ["filter", "nat", "mangle", "raw"].map(|t| (p, t)))
    {
        let Ok(rules) = run(&mut cmd(program, ["-t", table, "-S"])) else {
            continue;
        };
        for rule in rules.lines().map(split_rule) {
            let tag = rule.iter().skip_while(|w| *w != "--comment").nth(1);
            if rule.first().map(String::as_str) == Some("-A") && tag.is_some_and(|t| is_stale(t)) {
                cleanup(cmd(program, ["-t", table, "-D"]).args(&rule[1..]));
            }
        }
    }
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".route") && is_stale(&name) {
            if let Ok(spec) = fs::read_to_string(entry.path()) {
                cleanup(cmd("ip", ["route", "del"]).args(spec.split_whitespace()));
            }
            let _ = fs::remove_file(entry.path());
            continue;
        }
        if !name.ends_with(".sysctl") || !is_stale(&name) {
            continue;
        }
        let Ok(backup) = fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Some((path, old)) = backup.split_once('\n')
            && let Err(err) = fs::write(path, old.trim_end())
        {
            eprintln!("lab cleanup: cannot restore {path}: {err}");
        }
        let _ = fs::remove_file(entry.path());
    }
}

/// Splits an `iptables -S` line into arguments; it double-quotes those with spaces.
fn split_rule(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => current.extend(chars.next()),
            ' ' if !quoted => {
                if !current.is_empty() {
                    args.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        args.push(current);
    }
    args
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{iptables_in, split_rule, sysctl_path};
    use crate::cmd::describe;

    #[test]
    fn runs_iptables_inside_the_given_namespace() {
        let mut host = iptables_in(None, false);
        assert_eq!(describe(host.args(["-S"])), "iptables -S");
        let mut inside = iptables_in(Some(Path::new("/proc/42/ns/net")), false);
        assert_eq!(
            describe(inside.args(["-S"])),
            "nsenter --net=/proc/42/ns/net iptables -S"
        );
    }

    #[test]
    fn splits_iptables_save_lines() {
        assert_eq!(
            split_rule(r#"-A FORWARD -i pt-1-2h -m comment --comment "two \"words\"" -j DROP"#),
            [
                "-A",
                "FORWARD",
                "-i",
                "pt-1-2h",
                "-m",
                "comment",
                "--comment",
                "two \"words\"",
                "-j",
                "DROP"
            ]
        );
    }

    #[test]
    fn maps_sysctl_keys_to_proc_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.all.forwarding").to_str(),
            Some("/proc/sys/net/ipv4/conf/all/forwarding")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.5/forwarding").to_str(),
            Some("/proc/sys/net/ipv4/conf/eth0.5/forwarding")
        );
    }
}
