//! `pkttrace dns` on a real lab: containers on a user-defined network (so
//! Docker's embedded DNS answers at 127.0.0.11) and on the default bridge,
//! a lab DNS server (dnsmasq) in a simulated upstream namespace given to
//! them with --dns, the real dockerd and the NAT rules it put inside the
//! containers' namespaces. No query ever goes to the machine's resolver.

use std::{process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Container, DockerNetwork, Pkttrace, Upstream, netfilter_links, netfilter_links_at_least,
    nothing_left_attached, pkttrace,
};
use serde_json::Value;

/// The one name the lab server knows (besides its own).
const LAB_NAME: &str = "only-upstream.lab";

/// Starts `pkttrace dns CONTAINER --json` with `options`, runs `queries`
/// once it is attached, and returns one JSON object per query it told.
fn watch_dns(
    container: &Container,
    options: &[&str],
    queries: impl FnOnce(),
) -> Result<Vec<Value>> {
    let mut args = vec!["dns", container.name(), "--json"];
    args.extend_from_slice(options);
    let tracer = Pkttrace::spawn_attached(args)?;
    queries();
    let run = tracer.wait(Duration::from_secs(40))?;
    ensure!(run.success(), "pkttrace dns failed: {run}");
    let entries: Vec<Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not JSON: {line}")))
        .collect::<Result<_>>()?;
    for entry in &entries {
        ensure!(
            entry["schema_version"] == 4 && entry["record"] == "query",
            "every line says its schema version and record: {entry}"
        );
        integration_tests::check_schema("dns", entry)?;
    }
    Ok(entries)
}

fn entry<'a>(entries: &'a [Value], record_type: &str, name: &str) -> Result<&'a Value> {
    entries
        .iter()
        .find(|e| e["question"]["type"] == record_type && e["question"]["name"] == name)
        .with_context(|| format!("no entry for {record_type} {name} in {entries:#?}"))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// The port Docker's DNAT rule inside the container's namespace sends
/// `protocol` ("udp", "tcp") port 53 of 127.0.0.11 to, read with nft
/// independently of pkttrace.
fn embedded_dns_port(container: &Container, protocol: &str) -> Result<u64> {
    let out = Command::new("nsenter")
        .args([
            &format!("--net={}", container.netns_path()),
            "nft",
            "list",
            "ruleset",
        ])
        .output()?;
    let ruleset = String::from_utf8(out.stdout)?;
    let rule = ruleset
        .lines()
        .find(|l| l.contains(&format!("{protocol} dport 53")) && l.contains("dnat to 127.0.0.11:"))
        .with_context(|| format!("no {protocol} DNAT rule for 127.0.0.11 in\n{ruleset}"))?;
    Ok(rule.rsplit(':').next().unwrap_or_default().trim().parse()?)
}

fn hops_of(hops: &Value) -> Vec<&Value> {
    hops.as_array()
        .map(|h| h.iter().collect())
        .unwrap_or_default()
}

/// `iptables -t nat -S` inside the container's namespace.
fn iptables_nat_rules(container: &Container) -> Result<String> {
    let out = Command::new("nsenter")
        .args([
            &format!("--net={}", container.netns_path()),
            "iptables",
            "-t",
            "nat",
            "-S",
        ])
        .output()?;
    ensure!(out.status.success(), "iptables -S in {}", container.name());
    Ok(String::from_utf8(out.stdout)?)
}

/// An upstream whose firewall drops DNS in INPUT, and the handle of that rule.
fn silent_upstream() -> Result<(Upstream, u64)> {
    let silent = Upstream::new()?;
    silent.exec_ok([
        "nft",
        "add table ip quiet; add chain ip quiet input { type filter hook input priority 0; }; add rule ip quiet input udp dport 53 drop",
    ])?;
    let listed = silent.exec_ok(["nft", "-a", "list", "chain", "ip", "quiet", "input"])?;
    let handle = listed
        .lines()
        .find(|l| l.contains("udp dport 53 drop"))
        .and_then(|l| l.rsplit("# handle ").next())
        .and_then(|h| h.trim().parse().ok())
        .with_context(|| format!("the drop rule's handle in\n{listed}"))?;
    Ok((silent, handle))
}

fn dockerd_pid() -> Result<u64> {
    let out = Command::new("pidof").arg("dockerd").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

#[test]
fn embedded_dns_answers_names_forwards_the_rest_and_says_nxdomain() -> Result<()> {
    let upstream = Upstream::new()?;
    upstream.serve_dns(&[(LAB_NAME, upstream.ip())])?;
    let network = DockerNetwork::new()?;
    let server = Container::builder()
        .network(network.name())
        .dns(upstream.ip())
        .start()?;
    let client = Container::builder()
        .network(network.name())
        .dns(upstream.ip())
        .start()?;
    let entries = watch_dns(&client, &["--count", "6", "--timeout", "30"], || {
        // nslookup asks A and AAAA for each; NXDOMAIN makes it exit 1.
        let _ = client.exec(["nslookup", server.name()]);
        let _ = client.exec(["nslookup", LAB_NAME]);
        let _ = client.exec(["nslookup", "nosuch.lab"]);
    })?;
    let port = embedded_dns_port(&client, "udp")?;

    // A container's name: dockerd answers it from inside the container's namespace.
    let by_name = entry(&entries, "A", server.name())?;
    assert_eq!(by_name["outcome"], "answered", "{by_name:#}");
    assert_eq!(by_name["rcode"], "NOERROR");
    assert_eq!(
        text(&by_name["answers"][0]["data"]),
        server.ip().to_string()
    );
    assert_eq!(by_name["asked"], "127.0.0.11:53", "what the process asked");
    assert_eq!(
        text(&by_name["served_at"]),
        format!("127.0.0.11:{port}"),
        "where Docker's DNAT took it"
    );
    assert_eq!(by_name["resolv_conf"][0], "127.0.0.11");
    let asker = &by_name["asked_by"];
    assert_eq!(asker["process"], "nslookup");
    assert!(
        asker["pid_in_container"]
            .as_u64()
            .is_some_and(|inner| Some(inner) != asker["pid"].as_u64()),
        "the container's own pid namespace numbers it differently: {asker:#}"
    );
    let embedded = &by_name["embedded"];
    let dnat = &embedded["dnat"];
    assert_eq!(dnat["hook"], "OUTPUT");
    assert_eq!(dnat["namespace"], client.name());
    assert_eq!(dnat["before"]["dport"], 53);
    assert_eq!(dnat["after"]["dport"], port, "the real rule's port");
    assert!(
        text(&dnat["rule"]).ends_with(&format!("dnat to 127.0.0.11:{port}")),
        "{dnat:#}"
    );
    assert_eq!(embedded["port"], port);
    assert_eq!(embedded["socket_owner"]["process"], "dockerd");
    assert_eq!(embedded["socket_owner"]["pid"], dockerd_pid()?);
    let reply_nat = &embedded["reply_nat"];
    assert_eq!(reply_nat["before"]["sport"], port);
    assert_eq!(
        reply_nat["after"]["sport"], 53,
        "the answer comes from port 53"
    );
    assert!(
        by_name["forwarded"].as_array().is_none_or(Vec::is_empty),
        "dockerd knows its containers without asking upstream: {by_name:#}"
    );
    // The DNAT is a hop of the query, with the rule `iptables -t nat -S` lists in the container.
    let nat_hop = hops_of(&by_name["query_hops"])
        .into_iter()
        .find(|h| h["kind"] == "nat")
        .with_context(|| format!("a nat hop: {by_name:#}"))?;
    assert_eq!(nat_hop["hook"], "OUTPUT");
    assert_eq!(nat_hop["namespace"], client.name());
    let listed = iptables_nat_rules(&client)?;
    let rule = listed
        .lines()
        .find(|l| l.contains("-p udp") && l.contains("--dport 53") && l.contains("DNAT"))
        .with_context(|| format!("Docker's DNAT rule in\n{listed}"))?;
    let chain = rule.split_whitespace().nth(1).unwrap_or_default();
    assert!(
        rule.ends_with(&format!("--to-destination 127.0.0.11:{port}")),
        "{rule}"
    );
    assert!(
        text(&dnat["rule"]).starts_with(&format!("ip nat {chain}: ")),
        "the rule's own chain ({rule}): {dnat:#}"
    );
    // dockerd read the query from its socket; nslookup read the answer.
    let served = &by_name["query_outcome"];
    assert_eq!(served["kind"], "delivered", "{by_name:#}");
    assert_eq!(served["process"], "dockerd");
    assert_eq!(served["pid"], dockerd_pid()?);
    assert_eq!(by_name["answer_outcome"]["kind"], "delivered");
    assert_eq!(by_name["answer_outcome"]["process"], "nslookup");

    // A name only the lab server knows: dockerd asks it from the container's namespace.
    let lab_name = entry(&entries, "A", LAB_NAME)?;
    assert_eq!(lab_name["rcode"], "NOERROR", "{lab_name:#}");
    assert_eq!(
        text(&lab_name["answers"][0]["data"]),
        upstream.ip().to_string()
    );
    let leg = &lab_name["forwarded"][0];
    assert_eq!(
        text(&leg["server"]),
        format!("{}:53", upstream.ip()),
        "{lab_name:#}"
    );
    assert!(
        text(&leg["source"]).starts_with(&format!("{}:", client.ip())),
        "it leaves with the container's own address: {leg:#}"
    );
    assert_eq!(leg["namespace"], client.name());
    assert_eq!(leg["rcode"], "NOERROR");
    assert_eq!(text(&leg["answers"][0]["data"]), upstream.ip().to_string());
    // Its way, hop by hop, against `ip` and Docker: out of the container's
    // veth into the network's bridge, MASQUERADE, into the upstream.
    let hops = hops_of(&leg["hops"]);
    let host_veth = client.host_peer("eth0")?;
    assert!(
        hops.iter()
            .any(|h| h["kind"] == "veth" && h["device"] == host_veth.as_str()),
        "crosses to {host_veth}: {leg:#}"
    );
    assert!(
        hops.iter()
            .any(|h| h["kind"] == "bridge" && h["bridge"] == network.bridge()),
        "through {}: {leg:#}",
        network.bridge()
    );
    let masquerade = hops
        .iter()
        .find(|h| h["kind"] == "nat" && h["hook"] == "POSTROUTING")
        .with_context(|| format!("MASQUERADE: {leg:#}"))?;
    assert_eq!(text(&masquerade["before"]["src"]), client.ip().to_string());
    assert_eq!(
        text(&masquerade["after"]["src"]),
        upstream.host_ip().to_string()
    );
    let upstream_label = format!("netns {}", upstream.name());
    assert!(
        hops.iter()
            .any(|h| h["namespace"] == upstream_label.as_str()),
        "into {upstream_label}: {leg:#}"
    );
    assert_eq!(leg["outcome"]["kind"], "delivered", "{leg:#}");
    assert_eq!(leg["outcome"]["process"], "dnsmasq");
    assert_eq!(leg["answer_outcome"]["kind"], "delivered", "{leg:#}");
    assert_eq!(leg["answer_outcome"]["process"], "dockerd");
    assert!(
        hops_of(&leg["answer_hops"])
            .iter()
            .any(|h| h["kind"] == "nat" && h["hook"] == "PREROUTING"),
        "conntrack undoes the MASQUERADE on the way back: {leg:#}"
    );

    // An unknown name: the lab server says NXDOMAIN and dockerd passes it on.
    let unknown = entry(&entries, "A", "nosuch.lab")?;
    assert_eq!(unknown["rcode"], "NXDOMAIN", "{unknown:#}");
    assert_eq!(unknown["forwarded"][0]["rcode"], "NXDOMAIN");
    assert!(unknown["answers"].as_array().is_some_and(Vec::is_empty));
    Ok(())
}

#[test]
fn on_the_default_bridge_the_container_asks_its_server_directly_and_silence_times_out() -> Result<()>
{
    let upstream = Upstream::new()?;
    upstream.serve_dns(&[(LAB_NAME, upstream.ip())])?;
    // A second upstream whose firewall swallows DNS: a server that never answers.
    let (silent, _) = silent_upstream()?;
    let container = Container::builder().dns(upstream.ip()).start()?;
    let silent_server = silent.ip().to_string();
    let entries = watch_dns(
        &container,
        &["--timeout", "12", "--answer-timeout", "2"],
        || {
            let _ = container.exec(["nslookup", LAB_NAME]);
            let _ = container.exec([
                "nslookup",
                "-timeout=1",
                "-retry=1",
                LAB_NAME,
                &silent_server,
            ]);
        },
    )?;

    let direct = entries
        .iter()
        .find(|e| e["question"]["type"] == "A" && e["outcome"] == "answered")
        .with_context(|| format!("no answered A query in {entries:#?}"))?;
    assert_eq!(text(&direct["asked"]), format!("{}:53", upstream.ip()));
    assert_eq!(direct["served_at"], direct["asked"], "no DNAT on the way");
    assert!(direct["embedded"].is_null(), "{direct:#}");
    assert!(
        text(&direct["note"]).contains("no embedded DNS"),
        "{direct:#}"
    );
    assert_eq!(
        text(&direct["answers"][0]["data"]),
        upstream.ip().to_string()
    );
    let hops = direct["query_hops"].as_array().context("query hops")?;
    assert!(
        hops.iter()
            .any(|h| h["kind"] == "bridge" && h["bridge"] == "docker0"),
        "through Docker's default bridge: {direct:#}"
    );
    let masquerade = hops
        .iter()
        .find(|h| h["kind"] == "nat" && h["hook"] == "POSTROUTING")
        .with_context(|| format!("no source NAT in {direct:#}"))?;
    assert_eq!(
        text(&masquerade["before"]["src"]),
        container.ip().to_string()
    );
    assert_eq!(
        text(&masquerade["after"]["src"]),
        upstream.host_ip().to_string()
    );
    assert_eq!(direct["query_outcome"]["process"], "dnsmasq", "{direct:#}");
    assert_eq!(direct["answer_outcome"]["process"], "nslookup");

    let unanswered = entries
        .iter()
        .find(|e| text(&e["asked"]) == format!("{silent_server}:53"))
        .with_context(|| format!("no query to the silent server in {entries:#?}"))?;
    assert_eq!(unanswered["outcome"], "timeout", "{unanswered:#}");
    assert!(unanswered["rcode"].is_null());
    assert!(unanswered["waited_ms"].as_f64().unwrap_or_default() >= 2000.0);
    Ok(())
}

#[test]
fn an_unknown_container_is_one_clear_line() -> Result<()> {
    let run = pkttrace(["dns", "no-such-container-here"])?;
    assert_eq!(run.status.code(), Some(2), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr
            .contains("no container named 'no-such-container-here'"),
        "{run}"
    );
    Ok(())
}

#[test]
fn sigkill_leaves_nothing_attached_in_the_container_namespace_either() -> Result<()> {
    let network = DockerNetwork::new()?;
    let container = Container::builder().network(network.name()).start()?;
    let tracer = Pkttrace::spawn(["dns", container.name()])?;
    // The two netfilter programs are loaded once and linked at the five
    // hooks (and three after NAT) of both families, in the host's namespace
    // and the container's.
    let attached = netfilter_links_at_least(32)?;
    ensure!(
        attached,
        "pkttrace dns never attached its programs in both namespaces: {} links",
        netfilter_links()?
    );
    tracer.kill()?;
    ensure!(
        nothing_left_attached()?,
        "programs still loaded after SIGKILL"
    );
    ensure!(netfilter_links()? == 0, "links left after SIGKILL");
    Ok(())
}

#[test]
fn a_query_over_tcp_is_told_too() -> Result<()> {
    let network = DockerNetwork::new()?;
    let server = Container::builder().network(network.name()).start()?;
    let client = Container::builder().network(network.name()).start()?;
    let query = integration_tests::tcp_dns_query_printf(server.name(), 0x7c01);
    let entries = watch_dns(&client, &["--count", "1", "--timeout", "20"], || {
        // busybox has no DNS client over TCP: nc carries a hand-framed query.
        let _ = client.exec([
            "sh",
            "-c",
            &format!("printf '{query}' | nc -w 2 127.0.0.11 53 > /dev/null"),
        ]);
    })?;
    let over_tcp = entry(&entries, "A", server.name())?;
    assert_eq!(over_tcp["transport"], "tcp", "{over_tcp:#}");
    assert_eq!(over_tcp["rcode"], "NOERROR");
    assert_eq!(
        text(&over_tcp["answers"][0]["data"]),
        server.ip().to_string()
    );
    let embedded = &over_tcp["embedded"];
    let port = embedded_dns_port(&client, "tcp")?;
    assert_eq!(embedded["dnat"]["after"]["dport"], port, "{over_tcp:#}");
    assert_eq!(embedded["socket_owner"]["process"], "dockerd");
    Ok(())
}

#[test]
fn an_upstream_that_never_answers_is_where_the_forwarded_query_was_dropped() -> Result<()> {
    let (silent, handle) = silent_upstream()?;
    let network = DockerNetwork::new()?;
    let client = Container::builder()
        .network(network.name())
        .dns(silent.ip())
        .start()?;
    let entries = watch_dns(
        &client,
        &["--count", "1", "--timeout", "30", "--answer-timeout", "8"],
        || {
            let _ = client.exec(["nslookup", "-type=a", LAB_NAME]);
        },
    )?;
    let query = entry(&entries, "A", LAB_NAME)?;
    assert_ne!(query["rcode"], "NOERROR", "nothing could answer: {query:#}");
    let leg = &query["forwarded"][0];
    assert_eq!(
        text(&leg["server"]),
        format!("{}:53", silent.ip()),
        "{query:#}"
    );
    assert!(leg["answer_outcome"].is_null(), "no answer came: {leg:#}");
    // Where it was last seen: dropped in the upstream's INPUT by the rule nft lists.
    let outcome = &leg["outcome"];
    assert_eq!(outcome["kind"], "dropped", "{leg:#}");
    assert_eq!(outcome["namespace"], format!("netns {}", silent.name()));
    assert_eq!(outcome["hook"], "INPUT");
    assert_eq!(outcome["rule"]["table"], "ip quiet");
    assert_eq!(outcome["rule"]["chain"], "input");
    assert_eq!(outcome["rule"]["handle"], handle);
    Ok(())
}
