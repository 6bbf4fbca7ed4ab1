//! `pkttrace topology` on a real lab: a container on Docker's default
//! bridge, also connected to a user-defined network with a bridge name of
//! our choosing, publishing a port to a busybox httpd inside, and an
//! `ip netns` joined to the host by a veth (demo #1). Every assertion
//! compares what pkttrace printed with what the kernel, Docker and /proc
//! say about the things this test created; other containers and
//! namespaces on the machine are ignored.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use integration_tests::{Container, DockerNetwork, NetnsPair, pkttrace, pkttrace_bin};
use serde_json::Value;

/// Runs `pkttrace topology ARGS --json` and returns the report.
fn topology_json(args: &[&str]) -> Result<Value> {
    let mut all = vec!["topology"];
    all.extend_from_slice(args);
    all.push("--json");
    let run = pkttrace(&all)?;
    ensure!(run.success(), "pkttrace failed: {run}");
    let report: Value =
        serde_json::from_str(&run.stdout).with_context(|| format!("not JSON: {}", run.stdout))?;
    ensure!(
        report["schema_version"] == 2,
        "its schema version: {report}"
    );
    integration_tests::check_schema("topology", &report)?;
    Ok(report)
}

fn array<'a>(value: &'a Value, key: &str) -> &'a Vec<Value> {
    value[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array in {value:#}"))
}

fn namespace<'a>(report: &'a Value, owner: &str) -> &'a Value {
    array(report, "namespaces")
        .iter()
        .find(|ns| ns["owner"] == owner)
        .unwrap_or_else(|| panic!("no namespace owned by {owner}"))
}

fn interface<'a>(namespace: &'a Value, name: &str) -> &'a Value {
    array(namespace, "interfaces")
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no interface {name} in {}", namespace["owner"]))
}

fn bridge<'a>(report: &'a Value, name: &str) -> &'a Value {
    array(report, "bridges")
        .iter()
        .find(|b| b["name"] == name && b["namespace"] == "host")
        .unwrap_or_else(|| panic!("no bridge {name}"))
}

fn end_of(end: &Value) -> (&str, &str) {
    (
        end["namespace"].as_str().unwrap_or(""),
        end["interface"].as_str().unwrap_or(""),
    )
}

fn has_pair(report: &Value, a: (&str, &str), b: (&str, &str)) -> bool {
    array(report, "veth_pairs").iter().any(|p| {
        let ends = (end_of(&p["a"]), end_of(&p["b"]));
        ends == (a, b) || ends == (b, a)
    })
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output()?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The host's: pid 1's, or where a sandbox hides pid 1 even from root,
/// this test's own (it runs in the host's namespaces, as pkttrace does).
fn host_ns_inode(kind: &str) -> Result<u64> {
    ns_inode(1, kind).or_else(|_| ns_inode(std::process::id(), kind))
}

/// The inode in /proc/PID/ns/KIND, as lsns shows it.
fn ns_inode(pid: u32, kind: &str) -> Result<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))?;
    let link = link.to_string_lossy();
    let inode = link
        .split_once(":[")
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .context("odd ns link")?;
    Ok(inode.parse()?)
}

/// Demo #1's pair, on a /30 of its own so concurrent labs never share a route.
fn netns_pair() -> Result<NetnsPair> {
    let block = std::process::id() % 60 * 4;
    NetnsPair::with_addrs(
        &format!("10.77.{}.{}/30", 100 + block / 256, block % 256 + 1),
        &format!("10.77.{}.{}/30", 100 + block / 256, block % 256 + 2),
    )
}

/// A file removed when the test ends, however it ends.
struct ScratchFile(PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_lab_shows_every_namespace_pair_bridge_rule_route_and_published_port() -> Result<()> {
    // Declared in creation order, so the guards undo it in reverse.
    let network = DockerNetwork::with_bridge(&format!("ptb{:x}", std::process::id()))?;
    let pair = netns_pair()?;
    let (web, port) = Container::published_web_server()?;
    run(
        "docker",
        &["network", "connect", network.name(), web.name()],
    )?;

    let report = topology_json(&[])?;
    ensure!(
        report["docker_error"].is_null(),
        "{}",
        report["docker_error"]
    );

    // Namespaces, named by their owners.
    let host = namespace(&report, "host");
    let container = namespace(&report, web.name());
    assert_eq!(container["kind"], "container");
    assert_eq!(container["netns"], ns_inode(web.pid(), "net")?);
    let pair_label = format!("netns {}", pair.name());
    let demo = namespace(&report, &pair_label);
    assert_eq!(demo["netns_names"][0], pair.name());

    // veth pairs across namespaces.
    let (eth0_peer, eth1_peer) = (web.host_peer("eth0")?, web.host_peer("eth1")?);
    assert!(
        has_pair(&report, ("host", &eth0_peer), (web.name(), "eth0")),
        "{eth0_peer} <-> eth0"
    );
    assert!(
        has_pair(&report, ("host", &eth1_peer), (web.name(), "eth1")),
        "{eth1_peer} <-> eth1"
    );
    assert!(has_pair(
        &report,
        ("host", pair.host_veth()),
        (&pair_label, pair.veth())
    ));
    assert_eq!(
        interface(container, "eth0")["peer"]["interface"],
        eth0_peer.as_str()
    );

    // Bridges, their ports and their Docker networks.
    let docker0 = bridge(&report, "docker0");
    assert_eq!(docker0["docker_network"], "bridge");
    let ports: Vec<&str> = array(docker0, "ports")
        .iter()
        .filter_map(|p| p["interface"].as_str())
        .collect();
    assert!(ports.contains(&eth0_peer.as_str()), "{ports:?}");
    let custom = bridge(&report, network.bridge());
    assert_eq!(custom["docker_network"], network.name());
    let port_on_custom = array(custom, "ports")
        .iter()
        .find(|p| p["interface"] == eth1_peer.as_str())
        .context("eth1's peer is a port")?;
    assert_eq!(port_on_custom["peer"]["namespace"], web.name());
    assert_eq!(interface(host, &eth1_peer)["bridge"], network.bridge());

    // The kernel's rules that name each bridge: every line of `nft list
    // ruleset` that names the custom bridge is in the report.
    let rules: BTreeSet<String> = array(custom, "rules")
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect();
    let quoted = format!("\"{}\"", network.bridge());
    let listed: BTreeSet<String> = run("nft", &["list", "ruleset"])?
        .lines()
        .filter(|l| l.contains(&quoted))
        .map(|l| without_counter(l.trim()))
        .collect();
    ensure!(
        !listed.is_empty(),
        "Docker made no rule for {}",
        network.bridge()
    );
    assert!(
        listed.is_subset(&rules),
        "missing: {:?}",
        listed.difference(&rules).collect::<Vec<_>>()
    );
    assert!(
        array(docker0, "rules")
            .iter()
            .any(|r| r["action"] == "masquerade" && r["hook"] == "postrouting"),
        "docker0's MASQUERADE rule"
    );

    // Routes and forwarding.
    let gateway = run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.bridge.Gateway}}",
            web.name(),
        ],
    )?;
    let routes = array(container, "routes");
    assert!(
        routes.iter().any(|r| r["destination"] == "default"
            && r["gateway"] == gateway.trim()
            && r["device"] == "eth0"),
        "{routes:#?}"
    );
    assert!(
        array(host, "routes")
            .iter()
            .any(|r| r["device"] == network.bridge() && r["table"] == "main")
    );
    assert!(
        array(demo, "routes")
            .iter()
            .any(|r| r["device"] == pair.veth())
    );
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/forwarding")?;
    assert_eq!(host["ip_forward"], forwarding.trim() == "1");

    // The published port, with the docker-proxy processes that serve it.
    let published: Vec<&Value> = array(&report, "published_ports")
        .iter()
        .filter(|p| p["host_port"] == port)
        .collect();
    ensure!(
        !published.is_empty(),
        "port {port} is not in {:#?}",
        report["published_ports"]
    );
    let proxies: BTreeSet<u64> = run(
        "pgrep",
        &["-f", &format!("docker-proxy .*-host-port {port} ")],
    )?
    .split_whitespace()
    .map(|pid| pid.parse().unwrap())
    .collect();
    let serving: BTreeSet<u64> = published
        .iter()
        .flat_map(|p| array(p, "served_by"))
        .filter_map(|s| s["pid"].as_u64())
        .collect();
    assert_eq!(serving, proxies, "docker-proxy pids");
    for entry in &published {
        assert_eq!(entry["container"], web.name());
        assert_eq!(entry["container_port"], 80);
        for server in array(entry, "served_by") {
            assert_eq!(server["process"], "docker-proxy");
            assert_eq!(server["forwards_to"], format!("{}:80", web.ip()));
            let args: Vec<&str> = array(server, "args")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                args.windows(2)
                    .any(|w| w == ["-container-ip", &web.ip().to_string()]),
                "{args:?}"
            );
        }
    }
    let v4 = published
        .iter()
        .find(|p| p["host_ip"] == "0.0.0.0")
        .context("an IPv4 binding")?;
    let dnat = array(v4, "dnat_rules");
    assert!(
        dnat.iter().any(|r| r["rule"]
            .as_str()
            .unwrap()
            .contains(&format!("dnat to {}:80", web.ip()))),
        "{dnat:#?}"
    );
    Ok(())
}

/// nft's text rule without its counter, as the report words it.
fn without_counter(rule: &str) -> String {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let mut kept = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "counter" && words.get(i + 1) == Some(&"packets") {
            i += 5;
        } else {
            kept.push(words[i]);
            i += 1;
        }
    }
    kept.join(" ")
}

#[test]
fn one_container_with_its_namespaces_resolver_and_port_and_the_picture() -> Result<()> {
    let network = DockerNetwork::with_bridge(&format!("ptc{:x}", std::process::id()))?;
    let (web, port) = Container::published_web_server()?;
    run(
        "docker",
        &["network", "connect", network.name(), web.name()],
    )?;

    let report = topology_json(&[web.name()])?;
    assert_eq!(report["container"], web.name());
    let containers = array(&report, "containers");
    assert_eq!(containers.len(), 1);
    let own = &containers[0]["namespaces"];
    for kind in ["net", "pid", "mnt", "uts", "ipc", "user", "cgroup"] {
        assert_eq!(
            own[kind],
            ns_inode(web.pid(), kind)?,
            "{kind} namespace of the container"
        );
        assert_eq!(
            report["host_namespaces"][kind],
            host_ns_inode(kind)?,
            "{kind} namespace of the host"
        );
    }
    let resolv = web.exec_ok(["cat", "/etc/resolv.conf"])?;
    let expected: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .map(str::trim)
        .collect();
    assert_eq!(
        containers[0]["nameservers"],
        serde_json::json!(expected),
        "{resolv}"
    );
    let owners: Vec<&str> = array(&report, "namespaces")
        .iter()
        .filter_map(|n| n["owner"].as_str())
        .collect();
    assert_eq!(
        owners,
        ["host", web.name()],
        "only the host and the container"
    );
    let bridges: BTreeSet<&str> = array(&report, "bridges")
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!(bridges, BTreeSet::from(["docker0", network.bridge()]));
    assert!(
        array(&report, "published_ports")
            .iter()
            .all(|p| p["container"] == web.name())
    );
    assert!(
        array(&report, "published_ports")
            .iter()
            .any(|p| p["host_port"] == port)
    );

    let tables = pkttrace(["topology", web.name()])?;
    ensure!(tables.success(), "{tables}");
    assert!(
        tables
            .stdout
            .contains(&format!("{}: its namespaces and the host's", web.name())),
        "{tables}"
    );
    assert!(
        !tables.stdout.contains('\x1b'),
        "no colour when the output is not a terminal"
    );

    let svg = ScratchFile(
        std::env::temp_dir().join(format!("pkttrace-topology-{}.svg", std::process::id())),
    );
    let drawn = pkttrace(["topology", web.name(), "--svg", svg.0.to_str().unwrap()])?;
    ensure!(drawn.success(), "{drawn}");
    // Graphviz writes '-' in SVG text as "&#45;".
    let picture = std::fs::read_to_string(&svg.0)?.replace("&#45;", "-");
    assert!(
        picture.contains("<svg")
            && picture.contains(web.name())
            && picture.contains(network.bridge())
    );
    Ok(())
}

fn without_docker(args: &[&str]) -> Result<Output> {
    Ok(Command::new(pkttrace_bin())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(args)
        .output()?)
}

#[test]
fn without_docker_namespaces_still_show_and_one_line_says_why() -> Result<()> {
    let pair = netns_pair()?;
    let shown = without_docker(&["topology"])?;
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(shown.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("Docker is not reachable at /nonexistent/docker.sock"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        stdout.contains(&format!("netns {}", pair.name())) && stdout.contains(pair.host_veth()),
        "{stdout}"
    );

    let json = without_docker(&["topology", "--json"])?;
    let report: Value = serde_json::from_slice(&json.stdout)?;
    assert!(
        report["docker_error"]
            .as_str()
            .unwrap()
            .contains("not reachable")
    );
    assert!(has_pair(
        &report,
        ("host", pair.host_veth()),
        (&format!("netns {}", pair.name()), pair.veth())
    ));

    let refused = without_docker(&["topology", "server-1"])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "pkttrace: error: cannot show container 'server-1': Docker is not reachable"
        ),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_code_2() -> Result<()> {
    let run = pkttrace(["topology", "no-such-container-xyz"])?;
    assert_eq!(run.status.code(), Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr
            .contains("no running container named 'no-such-container-xyz'"),
        "{run}"
    );
    let as_nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(pkttrace_bin())
        .arg("topology")
        .output()?;
    let stderr = String::from_utf8_lossy(&as_nobody.stderr);
    assert_eq!(as_nobody.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("must run as root"), "{stderr}");
    Ok(())
}
