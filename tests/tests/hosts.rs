//! Containers on two Docker hosts: the two-host lab (`cargo xtask lab up
//! --hosts 2`: two engines, each in a namespace of its own with its own
//! hostname, one Swarm over a veth underlay, an attachable overlay network
//! and a container on each). pkttrace finds both engines by their
//! processes, names every container and Docker's own namespaces, and
//! follows a packet through the overlay's VXLAN tunnel: encapsulation, the
//! outer datagram over the underlay, decapsulation. Checked against what
//! each engine and each kernel say (`docker network inspect`, `bridge fdb`,
//! `ip -d link`, `ip addr`).

use std::{net::Ipv4Addr, path::PathBuf, process::Command};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Followed, IptablesRule, Pkttrace, follow_json, follow_unanswered, hops, ip, pkttrace,
    pkttrace_bin, tool, tool_json,
};
use serde_json::Value;

/// The lab, up for the guard's lifetime; Drop takes it down (the Swarm
/// left, the engines stopped, their namespaces and folders removed).
struct TwoHostLab {
    /// ovB's address on the overlay.
    ov_b: Ipv4Addr,
}

/// What the kernels and engines say of one host's side of the overlay.
struct HostTruth {
    /// Its address on the underlay.
    underlay: Ipv4Addr,
    /// The overlay network's namespace file (`1-<first ten of its id>`).
    overlay_netns: PathBuf,
    /// The VNI its engine gave the overlay network.
    vni: u64,
    /// The UDP port of its VXLAN device.
    port: u64,
}

/// `xtask lab <action> --hosts 2`, with the xtask binary built beside the
/// tracer (`cargo xtask test` builds both into the same folder).
fn lab(action: &str) -> Result<String> {
    let xtask = pkttrace_bin()
        .parent()
        .context("the tracer's folder")?
        .join("xtask");
    let out = Command::new(&xtask)
        .args(["lab", action, "--hosts", "2"])
        .output()
        .with_context(|| format!("cannot run {}", xtask.display()))?;
    ensure!(
        out.status.success(),
        "xtask lab {action} --hosts 2: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl TwoHostLab {
    fn up() -> Result<Self> {
        // A lab a killed run left is taken down first.
        lab("down")?;
        let mut lab_guard = Self {
            ov_b: Ipv4Addr::UNSPECIFIED,
        };
        lab("up")?;
        lab_guard.ov_b = lab_guard
            .docker(
                "host-b",
                &[
                    "inspect",
                    "-f",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                    "ovB",
                ],
            )?
            .trim()
            .parse()
            .context("ovB's address on the overlay")?;
        Ok(lab_guard)
    }

    /// `docker -H <host's engine> <args>`.
    fn docker(&self, host: &str, args: &[&str]) -> Result<String> {
        let socket = format!("unix:///run/pt-{host}.sock");
        let mut all = vec!["-H", &socket];
        all.extend(args);
        tool("docker", &all)
    }

    /// The ground truth of `host`'s side of the overlay network ovl.
    fn truth(&self, host: &str) -> Result<HostTruth> {
        let id = self.docker(host, &["network", "inspect", "-f", "{{.Id}}", "ovl"])?;
        let overlay_netns = PathBuf::from(format!("/run/pt-{host}/netns/1-{}", &id.trim()[..10]));
        ensure!(overlay_netns.exists(), "{}", overlay_netns.display());
        let vni = self
            .docker(
                host,
                &[
                    "network",
                    "inspect",
                    "-f",
                    r#"{{index .Options "com.docker.network.driver.overlay.vxlanid_list"}}"#,
                    "ovl",
                ],
            )?
            .trim()
            .parse()
            .context("the overlay network's VNI")?;
        let link = in_netns_json(
            &overlay_netns,
            &["ip", "-d", "-j", "link", "show", "vxlan0"],
        )?;
        let port = link[0]["linkinfo"]["info_data"]["port"]
            .as_u64()
            .context("vxlan0's port")?;
        let device = if host == "host-a" { "ul-a" } else { "ul-b" };
        let addresses = tool_json(
            "ip",
            &[
                "-n",
                &format!("pt-{host}"),
                "-j",
                "-4",
                "addr",
                "show",
                device,
            ],
        )?;
        let underlay = addresses[0]["addr_info"][0]["local"]
            .as_str()
            .context("the underlay address")?
            .parse()?;
        Ok(HostTruth {
            underlay,
            overlay_netns,
            vni,
            port,
        })
    }
}

impl Drop for TwoHostLab {
    fn drop(&mut self) {
        if let Err(err) = lab("down") {
            eprintln!("lab cleanup: {err:#}");
        }
    }
}

/// A command's JSON output, run inside the namespace file `netns`.
fn in_netns_json(netns: &std::path::Path, command: &[&str]) -> Result<Value> {
    let entered = format!("--net={}", netns.display());
    let mut args = vec![entered.as_str()];
    args.extend(command);
    tool_json("nsenter", &args)
}

/// The VTEP `netns`'s vxlan0 sends frames for `mac` to (`bridge fdb show
/// dev vxlan0`: Docker writes one entry per remote container).
fn vtep_for(netns: &std::path::Path, mac: &str) -> Result<Ipv4Addr> {
    let fdb = in_netns_json(netns, &["bridge", "-j", "fdb", "show", "dev", "vxlan0"])?;
    let entry = fdb
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["mac"] == mac && e.get("dst").is_some())
        .with_context(|| format!("no VTEP for {mac}: {fdb}"))?;
    Ok(ip(&entry["dst"]))
}

/// The hop of `kind` in `journey`.
fn hop_of<'a>(journey: &'a Value, kind: &str) -> Result<&'a Value> {
    hops(journey)
        .iter()
        .find(|h| h["kind"] == kind)
        .with_context(|| format!("no {kind} hop: {journey:#}"))
}

/// Checks a journey from `from` to `to` through the tunnel: wrapped on
/// `from`'s overlay namespace for `to`'s VTEP, carried over the underlay
/// by both Docker hosts in a datagram between the underlay addresses,
/// unwrapped on `to`'s side, with the VNI both engines gave the network.
fn assert_tunnelled(
    journey: &Value,
    from: (&str, &HostTruth),
    to: (&str, &HostTruth),
) -> Result<()> {
    let ((from_host, from_truth), (to_host, to_truth)) = (from, to);
    let encap = hop_of(journey, "encap")?;
    assert_eq!(
        encap["namespace"],
        format!("overlay network ovl's namespace on {from_host}"),
        "{encap:#}"
    );
    assert_eq!(encap["device"], "vxlan0");
    assert_eq!(encap["vni"], from_truth.vni, "{encap:#}");
    let outer = &encap["outer"];
    assert_eq!(ip(&outer["src"]), from_truth.underlay, "{encap:#}");
    assert_eq!(ip(&outer["dst"]), to_truth.underlay, "{encap:#}");
    assert_eq!(outer["dport"], from_truth.port, "{encap:#}");
    assert_eq!(outer["vni"], to_truth.vni, "one VNI on both hosts");
    // The frame's destination MAC is the far container's; the VXLAN FDB
    // names the far VTEP for it.
    let mac_dst = hops(journey)
        .iter()
        .map(|h| &h["decision"])
        .find(|decision| decision["kind"] == "switched" && decision["port"] == "vxlan0")
        .and_then(|decision| decision["mac_dst"].as_str())
        .context("the bridge switching the frame to vxlan0")?;
    assert_eq!(
        ip(&encap["endpoint"]),
        vtep_for(&from_truth.overlay_netns, mac_dst)?,
        "{encap:#}"
    );
    assert_eq!(ip(&encap["endpoint"]), to_truth.underlay);

    // Between the two, every hop is the outer datagram's, on the underlay.
    let all = hops(journey);
    let at = |kind: &str| all.iter().position(|h| h["kind"] == kind).unwrap();
    let underlay = &all[at("encap") + 1..at("decap")];
    ensure!(!underlay.is_empty(), "underlay hops: {journey:#}");
    for hop in underlay {
        assert_eq!(&hop["tunnel"], outer, "{hop:#}");
        let namespace = hop["namespace"].as_str().unwrap_or_default();
        assert!(
            namespace == format!("Docker host {from_host}")
                || namespace == format!("Docker host {to_host}"),
            "{hop:#}"
        );
    }
    for host in [from_host, to_host] {
        let named = format!("Docker host {host}");
        assert!(
            underlay.iter().any(|h| h["namespace"] == named.as_str()),
            "{named} carries it: {journey:#}"
        );
    }
    let decap = hop_of(journey, "decap")?;
    assert_eq!(
        decap["namespace"],
        format!("overlay network ovl's namespace on {to_host}")
    );
    assert_eq!(decap["vni"], to_truth.vni);
    assert_eq!(&decap["outer"], outer, "{decap:#}");
    Ok(())
}

#[test]
fn a_ping_across_two_hosts_is_told_through_the_vxlan_tunnel() -> Result<()> {
    let lab = TwoHostLab::up()?;
    let (a, b) = (lab.truth("host-a")?, lab.truth("host-b")?);
    let followed = follow_json(&["ovA", &lab.ov_b.to_string(), "--probe", "icmp"])?;
    assert_eq!(followed.code(), Some(0), "{}", followed.run);
    let (request, _) = followed.only_request()?;
    assert_eq!(request["outcome"]["namespace"], "ovB", "{request:#}");
    assert_tunnelled(&request, ("host-a", &a), ("host-b", &b))?;
    let reply = followed.reply_to(&request)?;
    assert_tunnelled(reply, ("host-b", &b), ("host-a", &a))?;
    // Every hop is named: no bare namespace number, no stray process.
    for hop in followed.journeys().into_iter().flat_map(hops) {
        let namespace = hop["namespace"].as_str().unwrap_or_default();
        assert!(
            !namespace.starts_with("netns:[") && !namespace.starts_with("pid "),
            "every hop named: {hop:#}"
        );
    }
    drop(lab);
    let left = tool("ip", &["netns", "list"])?;
    assert!(!left.contains("pt-host-"), "the lab is gone: {left}");
    Ok(())
}

#[test]
fn a_tcp_connection_across_two_hosts_is_accepted_through_the_tunnel() -> Result<()> {
    let lab = TwoHostLab::up()?;
    let (a, b) = (lab.truth("host-a")?, lab.truth("host-b")?);
    lab.docker("host-b", &["exec", "ovB", "httpd", "-p", "8080", "-h", "/"])?;
    let target = format!("{}:8080", lab.ov_b);
    let followed = follow_json(&["ovA", &target, "--probe", "tcp:8080"])?;
    assert_eq!(followed.code(), Some(0), "{}", followed.run);
    let (request, _) = followed.only_request()?;
    assert_eq!(
        request["outcome"]["accepted_by"]["process"], "httpd",
        "{request:#}"
    );
    assert_tunnelled(&request, ("host-a", &a), ("host-b", &b))?;
    let reply = followed.reply_to(&request)?;
    assert!(
        reply["what"]
            .as_str()
            .unwrap_or_default()
            .contains("SYN+ACK")
    );
    assert_tunnelled(reply, ("host-b", &b), ("host-a", &a))?;
    Ok(())
}

#[test]
fn a_drop_on_the_underlay_is_the_tunnels_datagram_dropped_by_its_rule() -> Result<()> {
    let lab = TwoHostLab::up()?;
    let b = lab.truth("host-b")?;
    let _rule = IptablesRule::insert_in_netns(
        std::path::Path::new("/run/netns/pt-host-b"),
        "filter",
        "INPUT",
        ["-p", "udp", "--dport", &b.port.to_string(), "-j", "DROP"],
    )?;
    let followed = follow_unanswered(&[
        "ovA",
        &lab.ov_b.to_string(),
        "--probe",
        "icmp",
        "--timeout",
        "2",
    ])?;
    let (request, last) = followed.only_request()?;
    assert_eq!(last["kind"], "drop", "{request:#}");
    assert_eq!(last["namespace"], "Docker host host-b");
    assert_eq!(last["reason"], "NETFILTER_DROP");
    assert_eq!(ip(&last["tunnel"]["dst"]), b.underlay, "{last:#}");
    let rule = &request["outcome"]["rule"];
    assert_eq!(rule["chain"], "INPUT", "{request:#}");
    assert!(
        rule["text"].as_str().unwrap_or_default().contains("4789"),
        "{rule:#}"
    );
    let no_reply = followed.no_reply_to(&request)?;
    let cause = &no_reply["verdict"]["cause"];
    assert_eq!(cause["kind"], "in_tunnel", "{no_reply:#}");
    assert_eq!(cause["tunnel"]["vni"], b.vni);
    assert_eq!(cause["cause"]["kind"], "firewall_rule", "{no_reply:#}");
    let why = no_reply["verdict"]["why"].as_str().unwrap_or_default();
    assert!(why.contains("VXLAN datagram"), "{why}");
    let fix = no_reply["verdict"]["action"]["command"]
        .as_str()
        .unwrap_or_default();
    assert!(
        fix.starts_with("ip netns exec pt-host-b nft delete rule ip filter INPUT handle"),
        "{fix}"
    );
    Ok(())
}

#[test]
fn topology_shows_each_tunnel_with_its_endpoints_and_the_device_there() -> Result<()> {
    let lab = TwoHostLab::up()?;
    let (a, b) = (lab.truth("host-a")?, lab.truth("host-b")?);
    let run = pkttrace(["topology", "--json"])?;
    assert_eq!(run.status.code(), Some(0), "{run}");
    let report: Value = serde_json::from_str(&run.stdout)?;
    let ov_b_mac = lab.docker(
        "host-b",
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}",
            "ovB",
        ],
    )?;
    let tunnel = report["tunnels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["device"]["namespace"] == "overlay network ovl's namespace on host-a")
        .with_context(|| format!("host-a's tunnel: {report:#}"))?;
    assert_eq!(tunnel["vni"], a.vni, "{tunnel:#}");
    assert_eq!(tunnel["port"], a.port);
    assert_eq!(tunnel["underlay"], "Docker host host-a");
    let remote = &tunnel["remotes"][0];
    assert_eq!(ip(&remote["vtep"]), b.underlay, "{tunnel:#}");
    assert_eq!(
        ip(&remote["vtep"]),
        vtep_for(&a.overlay_netns, ov_b_mac.trim())?,
        "the kernel's own entry"
    );
    assert!(
        remote["macs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m == ov_b_mac.trim()),
        "{remote:#}"
    );
    assert_eq!(
        remote["far_end"]["namespace"], "overlay network ovl's namespace on host-b",
        "{remote:#}"
    );
    Ok(())
}

/// Each hop as (namespace, kind): what the whole machine's story, a
/// host's own and the joined recordings are compared by.
fn places(journey: &Value) -> Vec<(String, String)> {
    hops(journey)
        .iter()
        .map(|h| {
            (
                h["namespace"].as_str().unwrap_or_default().to_owned(),
                h["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn each_host_sees_its_part_and_the_joined_recordings_are_the_whole_journey() -> Result<()> {
    let lab = TwoHostLab::up()?;
    let b = lab.truth("host-b")?;
    let folder = tempfile::tempdir()?;
    let recorded = |host: &str| folder.path().join(format!("{host}.rec"));
    let dest = lab.ov_b.to_string();
    let passive = |extra: &[&str]| -> Result<Pkttrace> {
        let mut args = vec![
            "follow",
            "ovA",
            &dest,
            "--count",
            "1",
            "--timeout",
            "15",
            "--json",
        ];
        args.extend(extra);
        Pkttrace::spawn_attached(args)
    };
    // The whole machine and host-b watch; host-a sends the probe.
    let whole = passive(&[])?;
    let b_record = recorded("host-b");
    let host_b = passive(&[
        "--on-host",
        "host-b",
        "--record",
        b_record.to_str().context("a path")?,
    ])?;
    let a_record = recorded("host-a");
    let host_a = follow_json(&[
        "ovA",
        &dest,
        "--probe",
        "icmp",
        "--on-host",
        "host-a",
        "--record",
        a_record.to_str().context("a path")?,
    ])?;
    assert_eq!(host_a.code(), Some(0), "{}", host_a.run);
    let host_b = Followed::read(host_b.wait(std::time::Duration::from_secs(20))?)?;
    let whole = Followed::read(whole.wait(std::time::Duration::from_secs(20))?)?;
    assert_eq!(host_b.code(), Some(0), "{}", host_b.run);
    assert_eq!(whole.code(), Some(0), "{}", whole.run);

    // host-a's own view: the request ends at its underlay device, inside
    // the datagram for host-b's endpoint; the reply comes from beyond it.
    let (request, _) = host_a.only_request()?;
    let outcome = &request["outcome"];
    assert_eq!(outcome["kind"], "left", "{request:#}");
    assert_eq!(outcome["namespace"], "Docker host host-a");
    assert_eq!(ip(&outcome["in_tunnel"]["dst"]), b.underlay, "{outcome:#}");
    for hop in hops(&request) {
        let namespace = hop["namespace"].as_str().unwrap_or_default();
        assert!(
            !namespace.contains("host-b") && namespace != "ovB",
            "{hop:#}"
        );
    }
    let reply = host_a.reply_to(&request)?;
    assert_eq!(reply["answer"]["origin"]["kind"], "beyond", "{reply:#}");
    assert!(
        reply["answer"]["origin"]["in_tunnel"].is_object(),
        "{reply:#}"
    );

    // host-b's own view: the request is first seen arriving in the tunnel.
    let (request_b, _) = host_b.only_request()?;
    assert_eq!(hops(&request_b)[0]["namespace"], "Docker host host-b");
    assert!(hops(&request_b)[0]["tunnel"].is_object(), "{request_b:#}");
    assert_eq!(request_b["outcome"]["namespace"], "ovB");

    // Joined, the two recordings tell the hops the whole machine saw.
    let joined = Followed::read(pkttrace([
        "replay",
        a_record.to_str().context("a path")?,
        b_record.to_str().context("a path")?,
        "--json",
    ])?)?;
    assert_eq!(joined.code(), Some(0), "{}", joined.run);
    let (joined_request, _) = joined.only_request()?;
    let (whole_request, _) = whole.only_request()?;
    assert_eq!(places(&joined_request), places(&whole_request));
    assert_eq!(
        places(joined.reply_to(&joined_request)?),
        places(whole.reply_to(&whole_request)?)
    );
    Ok(())
}
