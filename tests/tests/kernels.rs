//! What pkttrace tells on a kernel that lacks a feature it uses, checked on
//! this kernel (which has them all) by its documented switch
//! `PKTTRACE_PRETEND_ABSENT`: each fallback story against the lab's ground
//! truth (the route's source address for the masquerade, the rule
//! `iptables` lists, dnsmasq's socket), and a kernel that lacks an
//! essential feature refused with one line and exit code 2.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Container, DockerNetwork, Followed, IptablesRule, PRETEND_ABSENT, Pkttrace, Upstream,
    follow_json_lacking, hops, kinds, nothing_left_attached, pkttrace_with_env, tool,
};
use serde_json::Value;

/// The source address the host gives what it sends towards `to`: the
/// address MASQUERADE puts on a container's packet.
fn masquerade_address(to: &str) -> Result<String> {
    let route = tool("ip", &["-j", "route", "get", to])?;
    let route: Value = serde_json::from_str(&route)?;
    route[0]["prefsrc"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("a source address in {route}"))
}

fn the_hop<'a>(journey: &'a Value, kind: &str) -> Result<&'a Value> {
    hops(journey)
        .iter()
        .find(|h| h["kind"] == kind)
        .with_context(|| format!("a {kind} hop in {journey:#}"))
}

/// A container on Docker's default bridge and a lab upstream it reaches
/// through the masquerade (its address as text).
fn container_and_upstream() -> Result<(Upstream, Container, String)> {
    let upstream = Upstream::new()?;
    let container = Container::builder().dns(upstream.ip()).start()?;
    let to = upstream.ip().to_string();
    Ok((upstream, container, to))
}

/// A rule in DOCKER-USER dropping pings to `to`, removed on drop.
fn drop_pings_in_docker_user(to: &str) -> Result<IptablesRule> {
    IptablesRule::insert("DOCKER-USER", ["-p", "icmp", "-d", to, "-j", "DROP"])
}

/// `container`'s ping to `to`, as a kernel without `features` follows it,
/// unanswered (exit code 1).
fn ping_unanswered(container: &Container, to: &str, features: &str) -> Result<Followed> {
    let followed = follow_json_lacking(
        features,
        &[container.name(), to, "--probe", "icmp", "--timeout", "2"],
    )?;
    ensure!(followed.code() == Some(1), "no reply: {}", followed.run);
    Ok(followed)
}

/// The no-reply verdict names the administrator's rule in DOCKER-USER.
fn assert_administrator_rule(followed: &Followed, request: &Value) -> Result<()> {
    let no_reply = followed.no_reply_to(request)?;
    assert_eq!(
        no_reply["verdict"]["cause"]["kind"], "administrator_rule",
        "{no_reply:#}"
    );
    Ok(())
}

fn notes(followed: &Followed) -> Vec<&str> {
    followed
        .run
        .stderr
        .lines()
        .filter(|l| l.starts_with("pkttrace: note: this kernel has"))
        .collect()
}

/// Without netfilter programs no hook is a hop, but the masquerade shows as
/// the packet's source changing between the bridge and the uplink, the
/// reply's reverse NAT likewise, and the ping still gets its reply.
#[test]
fn without_netfilter_programs_nat_is_told_from_the_addresses_either_side() -> Result<()> {
    let (upstream, container, to) = container_and_upstream()?;
    let followed = follow_json_lacking(
        "netfilter-programs",
        &[container.name(), &to, "--probe", "icmp"],
    )?;
    ensure!(followed.code() == Some(0), "answered: {}", followed.run);
    assert_eq!(notes(&followed).len(), 1, "{}", followed.run.stderr);
    assert!(notes(&followed)[0].contains("no BPF netfilter programs"));

    let (request, _) = followed.only_request()?;
    assert!(
        !kinds(&request).contains(&"netfilter"),
        "no hook seen: {request:#}"
    );
    let snat = the_hop(&request, "nat")?;
    assert_eq!(snat["inferred"], true, "{snat:#}");
    assert_eq!(snat["nat"], "source");
    assert_eq!(snat["hook"], "POSTROUTING");
    assert_eq!(snat["before"]["src"], container.ip().to_string());
    assert_eq!(snat["after"]["src"], masquerade_address(&to)?);
    assert_eq!(snat["device"], upstream.host_veth(), "{snat:#}");

    let reply = followed.reply_to(&request)?;
    let reverse = the_hop(reply, "nat")?;
    assert_eq!(reverse["inferred"], true);
    assert_eq!(reverse["nat"], "reverse");
    assert_eq!(reverse["hook"], "PREROUTING");
    assert_eq!(reverse["after"]["dst"], container.ip().to_string());
    assert_eq!(
        hops(reply).last().map(|h| h["kind"].clone()),
        Some("deliver".into())
    );

    // A rule in DOCKER-USER: the drop is told from where the kernel freed
    // the packet, the rule from nf_tables' own trace.
    let _drop = drop_pings_in_docker_user(&to)?;
    let dropped = ping_unanswered(&container, &to, "netfilter-programs")?;
    let (request, last) = dropped.only_request()?;
    assert_eq!(last["kind"], "drop", "{request:#}");
    assert_eq!(last["reason"], "NETFILTER_DROP");
    let no_reply = dropped.no_reply_to(&request)?;
    let cause = &no_reply["verdict"]["cause"];
    assert_eq!(cause["kind"], "administrator_rule", "{no_reply:#}");
    assert_eq!(cause["position"], 1);
    ensure!(nothing_left_attached()?, "everything detached");
    Ok(())
}

/// Without drop reasons a drop is told by the kernel function that freed
/// the packet: a netfilter drop still finds its rule, a delivered reply
/// is not mistaken for a drop.
#[test]
fn without_drop_reasons_a_drop_is_told_by_the_code_that_dropped_it() -> Result<()> {
    let (_upstream, container, to) = container_and_upstream()?;
    let worked = follow_json_lacking("drop-reasons", &[container.name(), &to, "--probe", "icmp"])?;
    ensure!(worked.code() == Some(0), "answered: {}", worked.run);
    let (request, _) = worked.only_request()?;
    let reply = worked.reply_to(&request)?;
    assert!(
        !kinds(reply).contains(&"drop"),
        "the clone ping_rcv frees after the socket read is no drop: {reply:#}"
    );

    let _drop = drop_pings_in_docker_user(&to)?;
    let dropped = ping_unanswered(&container, &to, "drop-reasons")?;
    assert!(notes(&dropped)[0].contains("no drop reasons"));
    let (request, last) = dropped.only_request()?;
    assert_eq!(last["kind"], "drop", "{request:#}");
    assert_eq!(last["reason"], "UNREPORTED");
    let function = last["location"]["name"].as_str().unwrap_or_default();
    assert!(
        ["nf_hook_slow", "nft_do_chain"]
            .iter()
            .any(|f| function.starts_with(f)),
        "netfilter's code freed it: {last:#}"
    );
    assert!(
        last["text"]
            .as_str()
            .is_some_and(|t| t.contains("this kernel gives no drop reasons")),
        "{last:#}"
    );
    assert_administrator_rule(&dropped, &request)?;
    Ok(())
}

/// Without nf_tables' trace the drop is still netfilter's, in FORWARD,
/// told without its rule, and pkttrace adds no trace table.
#[test]
fn without_nftables_trace_a_netfilter_drop_is_told_without_its_rule() -> Result<()> {
    let (_upstream, container, to) = container_and_upstream()?;
    let _drop = drop_pings_in_docker_user(&to)?;
    let tracer = Pkttrace::spawn_with_env(
        (PRETEND_ABSENT, "nftables-trace"),
        [
            "follow",
            container.name(),
            &to,
            "--probe",
            "icmp",
            "--timeout",
            "2",
            "--json",
        ],
    )?;
    let tables_meanwhile = integration_tests::trace_tables(None)?;
    let dropped = Followed::read(tracer.wait(Duration::from_secs(30))?)?;
    assert!(
        tables_meanwhile.is_empty(),
        "no trace table: {tables_meanwhile:?}"
    );
    ensure!(dropped.code() == Some(1), "no reply: {}", dropped.run);
    assert!(notes(&dropped)[0].contains("no nf_tables trace"));
    let (request, last) = dropped.only_request()?;
    assert_eq!(last["kind"], "drop", "{request:#}");
    assert_eq!(last["reason"], "NETFILTER_DROP");
    assert!(last.get("rule").is_none(), "{last:#}");
    let forward = hops(&request)
        .iter()
        .rfind(|h| h["kind"] == "netfilter")
        .context("the hook it was dropped in")?;
    assert_eq!(forward["hook"], "FORWARD", "{request:#}");
    Ok(())
}

/// Without the sock_recv_length tracepoint a datagram a process reads is
/// told as far as the kernel taking it in; dnsmasq listens there (ss).
#[test]
fn without_socket_reads_a_datagram_ends_where_the_kernel_took_it_in() -> Result<()> {
    let upstream = Upstream::new()?;
    upstream.serve_dns(&[("only-upstream.lab", upstream.ip())])?;
    let listening = upstream.exec_ok(["ss", "-ulnpH"])?;
    ensure!(listening.contains("dnsmasq"), "ground truth: {listening}");
    let container = Container::builder().dns(upstream.ip()).start()?;
    let to = format!("{}:53", upstream.ip());
    let args = [container.name(), to.as_str(), "--probe", "udp:53"];
    let full = integration_tests::follow_json(&args)?;
    let (_, last) = full.only_request()?;
    assert_eq!(last["kind"], "deliver", "dnsmasq read it: {last:#}");
    let lacking = follow_json_lacking("socket-reads", &args)?;
    let (request, last) = lacking.only_request()?;
    assert_ne!(last["kind"], "deliver", "{request:#}");
    assert!(notes(&lacking)[0].contains("no sock_recv_length"));
    Ok(())
}

/// Without TCX `dns` still tells a query over UDP, and says what it cannot.
#[test]
fn without_tcx_dns_over_udp_is_still_told() -> Result<()> {
    let upstream = Upstream::new()?;
    upstream.serve_dns(&[("only-upstream.lab", upstream.ip())])?;
    let network = DockerNetwork::new()?;
    let client = Container::builder()
        .network(network.name())
        .dns(upstream.ip())
        .start()?;
    let tracer = Pkttrace::spawn_attached_with_env(
        (PRETEND_ABSENT, "tcx"),
        [
            "dns",
            client.name(),
            "--json",
            "--count",
            "1",
            "--timeout",
            "20",
        ],
    )?;
    let _ = client.exec(["nslookup", "-type=a", "only-upstream.lab"]);
    let run = tracer.wait(Duration::from_secs(30))?;
    ensure!(run.success(), "{run}");
    assert!(
        run.stderr.contains("no TCX links") && run.stderr.contains("DNS over TCP is not decoded"),
        "{}",
        run.stderr
    );
    let query: Value = serde_json::from_str(run.stdout.lines().next().unwrap_or_default())?;
    assert_eq!(query["outcome"], "answered", "{query:#}");
    assert_eq!(query["question"]["name"], "only-upstream.lab", "{query:#}");
    assert_eq!(
        query["answers"][0]["data"].as_str(),
        Some(upstream.ip().to_string().as_str()),
        "{query:#}"
    );
    Ok(())
}

/// A kernel without BTF, tp_btf or the ring buffer cannot be traced: one
/// line says so, exit code 2, nothing attached.
#[test]
fn without_an_essential_feature_pkttrace_refuses_with_one_line() -> Result<()> {
    let (_upstream, container, to) = container_and_upstream()?;
    for (feature, lacking) in [
        ("btf", "no BTF at /sys/kernel/btf/vmlinux"),
        ("tp-btf", "no BTF-typed tracepoints"),
        ("ring-buffer", "no BPF ring buffer"),
    ] {
        let run = pkttrace_with_env(
            (PRETEND_ABSENT, feature),
            ["follow", container.name(), &to, "--probe", "icmp"],
        )?;
        assert_eq!(run.status.code(), Some(2), "{run}");
        let errors: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("pkttrace: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{run}");
        assert!(
            errors[0].contains(lacking) && errors[0].contains("docs/kernels.md"),
            "{run}"
        );
        ensure!(nothing_left_attached()?, "nothing attached after {feature}");
    }
    Ok(())
}

/// Without consume_skb's location the copy ARP frees while the packet
/// waits for its next hop's MAC address is not the packet arriving: with
/// a cold neighbour cache the ping is still told from its send to the
/// upstream that took it in.
#[test]
fn without_free_locations_a_packet_waiting_for_arp_is_not_taken_for_arrived() -> Result<()> {
    let (upstream, container, to) = container_and_upstream()?;
    let netns = format!("--net={}", container.netns_path());
    tool("nsenter", &[&netns, "ip", "neigh", "flush", "all"])?;
    let cached = tool("nsenter", &[&netns, "ip", "neigh", "show"])?;
    ensure!(
        !cached.contains("REACHABLE"),
        "ground truth: a cold cache: {cached}"
    );
    let followed = follow_json_lacking(
        "free-locations",
        &[container.name(), &to, "--probe", "icmp"],
    )?;
    ensure!(followed.code() == Some(0), "answered: {}", followed.run);
    let (request, last) = followed.only_request()?;
    assert_eq!(hops(&request)[0]["kind"], "send", "{request:#}");
    assert_eq!(last["kind"], "receive", "{request:#}");
    assert_eq!(last["namespace"], format!("netns {}", upstream.name()));
    Ok(())
}

/// Without netfilter programs Docker's DNAT of 127.0.0.11:53 inside the
/// container happens before any device pkttrace sees: `dns` tells what
/// the process asked (port 53) and the rewrite by Docker's rule, marked as
/// not seen, with the port the rule in the container names.
#[test]
fn without_netfilter_programs_dns_tells_the_embedded_dnat_by_dockers_rule() -> Result<()> {
    let upstream = Upstream::new()?;
    upstream.serve_dns(&[("only-upstream.lab", upstream.ip())])?;
    let network = DockerNetwork::new()?;
    let client = Container::builder()
        .network(network.name())
        .dns(upstream.ip())
        .start()?;
    let ruleset = tool(
        "nsenter",
        &[
            &format!("--net={}", client.netns_path()),
            "nft",
            "list",
            "ruleset",
        ],
    )?;
    let port: u64 = ruleset
        .lines()
        .find(|l| l.contains("udp dport 53") && l.contains("dnat to 127.0.0.11:"))
        .and_then(|rule| rule.rsplit(':').next()?.trim().parse().ok())
        .with_context(|| format!("Docker's DNAT rule in\n{ruleset}"))?;
    let tracer = Pkttrace::spawn_attached_with_env(
        (PRETEND_ABSENT, "netfilter-programs"),
        [
            "dns",
            client.name(),
            "--json",
            "--count",
            "1",
            "--timeout",
            "20",
        ],
    )?;
    let _ = client.exec(["nslookup", "-type=a", "only-upstream.lab"]);
    let run = tracer.wait(Duration::from_secs(30))?;
    ensure!(run.success(), "{run}");
    let query: Value = serde_json::from_str(run.stdout.lines().next().unwrap_or_default())?;
    integration_tests::check_schema("dns", &query)?;
    assert_eq!(query["asked"], "127.0.0.11:53", "{query:#}");
    let dnat = &query["embedded"]["dnat"];
    assert_eq!(dnat["inferred"], true, "{query:#}");
    assert_eq!(dnat["hook"], "OUTPUT");
    assert_eq!(dnat["before"]["dport"], 53);
    assert_eq!(dnat["after"]["dport"], port, "the rule's port");
    assert_eq!(query["embedded"]["reply_nat"]["after"]["sport"], 53);
    assert_eq!(query["outcome"], "answered");
    Ok(())
}

/// What Debian 12's 6.1 lacks (kernels.md), with every neighbour cache on
/// the way cold: the ping and its reply, both masquerades told from the
/// addresses, and no free of ARP's copies taken for a journey of its own.
const DEBIAN_12: &str = "free-locations,socket-reads,netfilter-programs,tcx";
/// What Ubuntu 22.04's 5.15 lacks.
const UBUNTU_22_04: &str = "drop-reasons,free-locations,socket-reads,netfilter-programs,tcx";

#[test]
fn as_debian_12_tells_a_ping_through_the_masquerade_with_cold_caches() -> Result<()> {
    let (upstream, container, to) = container_and_upstream()?;
    tool("ip", &["neigh", "flush", "dev", upstream.host_veth()])?;
    tool(
        "nsenter",
        &[
            &format!("--net={}", container.netns_path()),
            "ip",
            "neigh",
            "flush",
            "all",
        ],
    )?;
    let followed = follow_json_lacking(DEBIAN_12, &[container.name(), &to, "--probe", "icmp"])?;
    ensure!(followed.code() == Some(0), "answered: {}", followed.run);
    // TCX matters to `dns` only: three notes.
    assert_eq!(notes(&followed).len(), 3, "{}", followed.run.stderr);
    let (request, last) = followed.only_request()?;
    assert_eq!(hops(&request)[0]["kind"], "send", "{request:#}");
    assert_eq!(last["namespace"], format!("netns {}", upstream.name()));
    let reply = followed.reply_to(&request)?;
    assert_eq!(
        reply["tuple"]["src"], to,
        "the upstream's answer: {reply:#}"
    );
    assert_eq!(
        hops(reply).last().map(|h| h["kind"].clone()),
        Some("deliver".into()),
        "{reply:#}"
    );
    assert_eq!(the_hop(&request, "nat")?["inferred"], true);
    assert_eq!(the_hop(reply, "nat")?["inferred"], true);
    assert_eq!(
        followed.journeys().len(),
        2,
        "the request and its reply, nothing else: {:#?}",
        followed.journeys()
    );
    Ok(())
}

#[test]
fn as_ubuntu_22_04_tells_a_drop_in_docker_user_by_its_rule() -> Result<()> {
    let (_upstream, container, to) = container_and_upstream()?;
    let _drop = drop_pings_in_docker_user(&to)?;
    let dropped = ping_unanswered(&container, &to, UBUNTU_22_04)?;
    let (request, last) = dropped.only_request()?;
    assert_eq!(last["reason"], "UNREPORTED", "{request:#}");
    let outcome = &request["outcome"];
    assert_eq!(outcome["kind"], "dropped", "{outcome:#}");
    assert_eq!(outcome["rule"]["chain"], "DOCKER-USER");
    assert_eq!(outcome["rule"]["through"][0], "FORWARD");
    assert!(
        outcome["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("dropped in host by ip filter DOCKER-USER")),
        "{outcome:#}"
    );
    assert!(
        last["hint"]
            .as_str()
            .is_some_and(|h| h.starts_with("a rule in FORWARD dropped it")),
        "{last:#}"
    );
    assert_administrator_rule(&dropped, &request)?;
    Ok(())
}
