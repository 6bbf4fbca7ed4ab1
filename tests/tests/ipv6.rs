//! `pkttrace follow` over IPv6 on a real lab: a dual-stack Docker network
//! (`--ipv6`, a ULA /64 of its own), an upstream namespace with an address
//! in 2001:db8::/32 and a route back, the kernel's eBPF. Containers' IPv6
//! addresses are routed, not translated (Docker 20.10 without ip6tables).
//! Every test checks with `ip -6 route get` that its destination is a lab
//! device before anything is sent (this machine has a real IPv6 uplink),
//! and holds `net.ipv6.conf.all.forwarding` in a guard: Docker turns it on
//! when it makes an IPv6 network, and the machine gets its value back.

use std::net::Ipv6Addr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Container, DockerNetwork, IptablesRule, Pkttrace, SecondEngine, Sysctl, Upstream, follow_json,
    follow_unanswered, hop, hops, ip6, kinds, netfilter_hooks, pkttrace, route_get, tool,
    tool_json,
};
use serde_json::Value;

const FORWARDING: &str = "net.ipv6.conf.all.forwarding";

/// Declared in drop order: the container before its network, the
/// forwarding guard last.
struct Lab {
    container: Container,
    network: DockerNetwork,
    upstream: Upstream,
    _forwarding: Sysctl,
}

fn lab() -> Result<Lab> {
    // Before Docker makes the network: the guard keeps the machine's value.
    let forwarding = Sysctl::set(FORWARDING, "1")?;
    let upstream = Upstream::dual_stack()?;
    let network = DockerNetwork::dual_stack()?;
    let container = Container::builder()
        .network(network.name())
        .dns(upstream.ip())
        .start()?;
    let lab = Lab {
        container,
        network,
        upstream,
        _forwarding: forwarding,
    };
    lab.check_route()?;
    lab.wait_for_addresses()?;
    Ok(lab)
}

impl Lab {
    /// The upstream's IPv6 address is reached through the lab's own veth,
    /// never the machine's uplink.
    fn check_route(&self) -> Result<()> {
        let route = route_get(None, self.upstream.ipv6())?;
        ensure!(
            route["dev"] == self.upstream.host_veth(),
            "{} must be routed to the lab's veth {}: {route}",
            self.upstream.ipv6(),
            self.upstream.host_veth()
        );
        let inside = route_get(Some(&self.container.netns_path()), self.upstream.ipv6())?;
        ensure!(
            inside["gateway"] == self.gateway()?.to_string(),
            "the container's route goes to its network's gateway: {inside}"
        );
        Ok(())
    }

    /// Until duplicate address detection has passed on the bridge's gateway
    /// address and the container's own: a tentative address answers no
    /// neighbour solicitation, and the first packets would wait seconds.
    fn wait_for_addresses(&self) -> Result<()> {
        let tentative = || -> Result<bool> {
            let bridge = tool(
                "ip",
                &[
                    "-6",
                    "addr",
                    "show",
                    "dev",
                    self.network.bridge(),
                    "tentative",
                ],
            )?;
            let container = tool(
                "nsenter",
                &[
                    &format!("--net={}", self.container.netns_path()),
                    "ip",
                    "-6",
                    "addr",
                    "show",
                    "dev",
                    "eth0",
                    "tentative",
                ],
            )?;
            Ok(!bridge.trim().is_empty() || !container.trim().is_empty())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tentative()? {
            ensure!(
                std::time::Instant::now() < deadline,
                "addresses still tentative after 10 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The network's IPv6 gateway, as Docker says.
    fn gateway(&self) -> Result<Ipv6Addr> {
        let inspect = tool_json("docker", &["inspect", self.container.name()])?;
        inspect[0]["NetworkSettings"]["Networks"][self.network.name()]["IPv6Gateway"]
            .as_str()
            .context("an IPv6 gateway")?
            .parse()
            .context("an IPv6 address")
    }

    fn dest(&self, port: u16) -> String {
        format!("[{}]:{port}", self.upstream.ipv6())
    }
}

/// The hooks where the namespace (the host's when None) has IPv6 base
/// chains, as `nft` lists them, pkttrace's own trace tables left out.
fn ipv6_hooks(netns: Option<&str>) -> Result<Vec<String>> {
    let net = netns.map(|path| format!("--net={path}"));
    let mut args: Vec<&str> = Vec::new();
    if let Some(net) = &net {
        args.extend(["nsenter", net.as_str()]);
    }
    args.extend(["nft", "-j", "list", "chains"]);
    let listing = tool_json(args[0], &args[1..])?;
    Ok(listing["nftables"]
        .as_array()
        .context("nft's list")?
        .iter()
        .filter_map(|item| item.get("chain"))
        .filter(|chain| matches!(chain["family"].as_str(), Some("ip6" | "inet")))
        .filter(|chain| {
            !chain["table"]
                .as_str()
                .is_some_and(|t| t.starts_with("pkttrace_"))
        })
        .filter_map(|chain| chain["hook"].as_str().map(str::to_string))
        .collect())
}

#[test]
fn icmpv6_echo_is_routed_through_the_bridge_without_nat_and_answered() -> Result<()> {
    let lab = lab()?;
    let (container, upstream) = (&lab.container, &lab.upstream);
    let _accept = IptablesRule::insert_ipv6(
        "FORWARD",
        ["-d", &upstream.ipv6().to_string(), "-j", "ACCEPT"],
    )?;
    let followed = follow_json(&[
        container.name(),
        &upstream.ipv6().to_string(),
        "--probe",
        "icmp",
    ])?;
    ensure!(
        followed.run.success(),
        "the echo is answered: {}",
        followed.run
    );
    let (request, _) = followed.only_request()?;
    assert!(
        request["what"]
            .as_str()
            .is_some_and(|what| what.starts_with("ICMPv6 echo request")),
        "{request:#}"
    );
    assert_eq!(ip6(&request["tuple"]["src"]), container.ipv6()?);
    assert_eq!(ip6(&request["tuple"]["dst"]), upstream.ipv6());
    let path: Vec<&str> = kinds(&request)
        .into_iter()
        .filter(|kind| *kind != "netfilter")
        .collect();
    assert_eq!(path[..3], ["send", "veth", "bridge"], "{request:#}");
    let send = hop(&request, "send");
    assert_eq!(send["process"], "pkttrace");
    assert_eq!(ip6(&send["route"]["gateway"]), lab.gateway()?);
    let bridge = hop(&request, "bridge");
    assert_eq!(bridge["bridge"], lab.network.bridge());
    assert_eq!(bridge["decision"]["kind"], "handed_up", "{bridge}");
    let route = hop(&request, "route");
    assert_eq!(route["out_device"], upstream.host_veth(), "{route}");
    let forward = hop(&request, "forward");
    assert_eq!(forward["ip_forward"], true, "{forward}");
    assert!(
        forward["text"]
            .as_str()
            .unwrap_or_default()
            .contains(FORWARDING),
        "IPv6 forwarding is all's setting: {forward}"
    );
    // Only hooks where IPv6 has chains (ip6 and inet tables) are hops.
    let in_container = ipv6_hooks(Some(&container.netns_path()))?;
    let on_host = ipv6_hooks(None)?;
    let expected: Vec<String> = [("OUTPUT", &in_container), ("POSTROUTING", &in_container)]
        .into_iter()
        .chain([
            ("PREROUTING", &on_host),
            ("FORWARD", &on_host),
            ("POSTROUTING", &on_host),
        ])
        .filter(|(hook, hooks)| hooks.contains(&hook.to_lowercase()))
        .map(|(hook, _)| hook.to_string())
        .collect();
    assert!(
        expected.contains(&"FORWARD".to_string()),
        "the test's ip6tables rule: {on_host:?}"
    );
    assert_eq!(netfilter_hooks(&request), expected, "{request:#}");
    assert!(
        !kinds(&request).contains(&"nat"),
        "no NAT66 without ip6tables in Docker: {request:#}"
    );
    assert_eq!(
        request["outcome"]["namespace"],
        format!("netns {}", upstream.name())
    );

    let reply = followed.reply_to(&request)?;
    assert!(
        reply["what"]
            .as_str()
            .is_some_and(|what| what.starts_with("ICMPv6 echo reply")),
        "{reply:#}"
    );
    assert_eq!(ip6(&reply["tuple"]["dst"]), container.ipv6()?);
    assert_eq!(reply["answer"]["kind"], "reply");
    let deliver = hops(reply).last().context("a hop")?;
    assert_eq!(deliver["kind"], "deliver");
    assert_eq!(deliver["namespace"], container.name());
    assert_eq!(deliver["process"], "pkttrace");
    Ok(())
}

#[test]
fn a_closed_port_is_refused_by_a_reset_and_a_port_unreachable() -> Result<()> {
    let lab = lab()?;
    let followed = follow_unanswered(&[lab.container.name(), &lab.dest(81), "--probe", "tcp"])?;
    let (request, _) = followed.only_request()?;
    assert_eq!(request["what"], "TCP SYN");
    let reply = followed.reply_to(&request)?;
    assert_eq!(reply["what"], "TCP ACK+RST");
    assert_eq!(reply["answer"]["kind"], "reset");
    assert_eq!(reply["answer"]["by_firewall"], false);
    let verdict = &reply["verdict"];
    assert_eq!(
        verdict["what"],
        format!("the connection to {} was refused", lab.dest(81)),
        "{verdict:#}"
    );

    let followed = follow_unanswered(&[lab.container.name(), &lab.dest(9), "--probe", "udp"])?;
    let (request, drop) = followed.only_request()?;
    assert_eq!(drop["reason"], "NO_SOCKET", "{drop}");
    assert_eq!(drop["namespace"], format!("netns {}", lab.upstream.name()));
    let answer = &followed.reply_to(&request)?["answer"];
    assert_eq!(
        (answer["kind"].as_str(), answer["meaning"].as_str()),
        (Some("error"), Some("port unreachable")),
        "{answer:#}"
    );
    assert_eq!(ip6(&answer["from"]), lab.upstream.ipv6());
    Ok(())
}

#[test]
fn ip6tables_drop_and_reject_are_named_by_their_rule() -> Result<()> {
    let lab = lab()?;
    let upstream = lab.upstream.ipv6().to_string();
    let drop_rule = IptablesRule::insert_ipv6(
        "FORWARD",
        ["-d", &upstream, "-p", "udp", "--dport", "7", "-j", "DROP"],
    )?;
    let followed = follow_unanswered(&[lab.container.name(), &lab.dest(7), "--probe", "udp"])?;
    let (_, drop) = followed.only_request()?;
    assert_eq!(drop["reason"], "NETFILTER_DROP", "{drop}");
    assert_eq!(drop["hook"], "FORWARD");
    assert_eq!(drop["rule"]["table"], "ip6 filter", "{drop}");
    assert_eq!(drop["rule"]["handle"], drop_rule.handle()?, "{drop}");
    let listed = tool("ip6tables", &["-S", "FORWARD"])?;
    ensure!(listed.contains(&format!("-d {upstream}/128")), "{listed}");

    let _reject = IptablesRule::insert_ipv6(
        "FORWARD",
        [
            "-d",
            &upstream,
            "-p",
            "tcp",
            "--dport",
            "8",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    )?;
    let followed = follow_unanswered(&[lab.container.name(), &lab.dest(8), "--probe", "tcp"])?;
    let (request, _) = followed.only_request()?;
    let reply = followed.reply_to(&request)?;
    assert_eq!(reply["answer"]["kind"], "reset");
    assert_eq!(
        reply["answer"]["by_firewall"], true,
        "the host's REJECT answered: {reply:#}"
    );
    let cause = &reply["verdict"]["cause"];
    assert_eq!(cause["kind"], "firewall_rule", "{cause:#}");
    assert!(
        cause["rule"]
            .as_str()
            .unwrap_or_default()
            .contains("reject with tcp reset"),
        "{cause:#}"
    );
    Ok(())
}

#[test]
fn forwarding_off_drops_in_ip6_forward_and_the_fix_is_alls_setting() -> Result<()> {
    let lab = lab()?;
    let _off = Sysctl::set(FORWARDING, "0")?;
    let followed = follow_unanswered(&[
        lab.container.name(),
        &lab.upstream.ipv6().to_string(),
        "--probe",
        "icmp",
    ])?;
    let (request, drop) = followed.only_request()?;
    assert_eq!(drop["kind"], "drop");
    assert_eq!(drop["namespace"], "host");
    assert_eq!(drop["reason"], "IP_INADDRERRORS", "{drop}");
    assert!(
        drop["location"]["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("ip6_forward"),
        "{drop}"
    );
    assert_eq!(drop["location"]["role"], "forwarding", "{drop}");
    assert!(
        drop["hint"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("{FORWARDING} = 0")),
        "{drop}"
    );
    let verdict = followed.no_reply_to(&request)?["verdict"].clone();
    assert_eq!(verdict["cause"]["kind"], "forwarding_off", "{verdict:#}");
    let fix = verdict["action"]["command"].as_str().context("a fix")?;
    assert_eq!(fix, format!("sysctl -w {FORWARDING}=1"));
    // The fix, run as given, lets the echo through.
    tool("sh", &["-c", fix])?;
    let after = follow_json(&[
        lab.container.name(),
        &lab.upstream.ipv6().to_string(),
        "--probe",
        "icmp",
    ])?;
    ensure!(after.run.success(), "answered once fixed: {}", after.run);
    Ok(())
}

#[test]
fn a_link_of_1280_bytes_answers_packet_too_big_and_a_hop_limit_of_1_runs_out() -> Result<()> {
    let lab = lab()?;
    lab.upstream.set_link_mtu(1280)?;
    let route = route_get(None, lab.upstream.ipv6())?;
    ensure!(route["dev"] == lab.upstream.host_veth(), "{route}");
    let followed = follow_unanswered(&[
        lab.container.name(),
        &lab.upstream.ipv6().to_string(),
        "--probe",
        "icmp",
        "--size",
        "1400",
    ])?;
    let (request, drop) = followed.only_request()?;
    assert_eq!(drop["reason"], "PKT_TOO_BIG", "{drop}");
    assert_eq!(drop["namespace"], "host");
    let answer = &followed.reply_to(&request)?["answer"];
    assert_eq!(answer["meaning"], "packet too big", "{answer:#}");
    assert_eq!(answer["next_hop_mtu"], 1280, "{answer:#}");
    assert_eq!(ip6(&answer["from"]), lab.gateway()?, "{answer:#}");
    assert!(
        answer["text"]
            .as_str()
            .unwrap_or_default()
            .contains("an IPv6 router never splits a packet"),
        "{answer:#}"
    );

    let followed = follow_unanswered(&[
        lab.container.name(),
        &lab.upstream.ipv6().to_string(),
        "--probe",
        "icmp",
        "--ttl",
        "1",
    ])?;
    let (request, drop) = followed.only_request()?;
    assert_eq!(drop["reason"], "IP_INHDR", "{drop}");
    let answer = &followed.reply_to(&request)?["answer"];
    assert_eq!(answer["meaning"], "hop limit exceeded in transit");
    let text = answer["text"].as_str().unwrap_or_default();
    assert!(text.contains("arrived with hop limit 1"), "{text}");
    assert!(!text.contains("TTL"), "IPv6's own words: {text}");
    Ok(())
}

#[test]
fn a_container_destination_with_dash_6_is_its_ipv6_address_switched_on_the_bridge() -> Result<()> {
    let lab = lab()?;
    let other = Container::builder()
        .network(lab.network.name())
        .dns(lab.upstream.ip())
        .start()?;
    let followed = follow_json(&[lab.container.name(), other.name(), "-6", "--probe", "icmp"])?;
    ensure!(followed.run.success(), "{}", followed.run);
    let (request, _) = followed.only_request()?;
    assert_eq!(ip6(&request["tuple"]["dst"]), other.ipv6()?);
    let decision = &hop(&request, "bridge")["decision"];
    assert_eq!(decision["kind"], "switched", "{decision}");
    assert_eq!(decision["port"], other.host_peer("eth0")?);
    // The receiver's own lookup (local delivery) may be told; the host's not.
    assert!(
        !hops(&request)
            .iter()
            .any(|h| h["kind"] == "route" && h["namespace"] == "host"),
        "switched, not routed by the host: {request:#}"
    );

    // A container without IPv6 has no address to give.
    let plain = Container::builder().dns(lab.upstream.ip()).start()?;
    let run = pkttrace(["follow", lab.container.name(), plain.name(), "-6"])?;
    assert_eq!(run.status.code(), Some(2), "{run}");
    assert!(run.stderr.contains("has no IPv6 address"), "{run}");
    Ok(())
}

#[test]
fn two_connections_refused_at_once_are_two_exchanges() -> Result<()> {
    let lab = lab()?;
    let tracer = Pkttrace::spawn_attached([
        "follow",
        lab.container.name(),
        &lab.dest(7777),
        "--count",
        "2",
        "--timeout",
        "15",
        "--json",
    ])?;
    let target = lab.upstream.ipv6().to_string();
    let _ = lab.container.exec([
        "sh",
        "-c",
        &format!("nc -w 1 {target} 7777 </dev/null & nc -w 1 {target} 7777 </dev/null & wait"),
    ]);
    let run = tracer.wait(Duration::from_secs(30))?;
    ensure!(run.status.code() == Some(1), "refused is no success: {run}");
    let journeys: Vec<Value> = run
        .stdout
        .lines()
        .map(serde_json::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|j| j["record"] == "journey" && j["tuple"]["protocol"] == "tcp")
        .collect();
    let requests: Vec<&Value> = journeys
        .iter()
        .filter(|j| j["direction"] == "request")
        .collect();
    ensure!(requests.len() == 2, "two SYNs: {journeys:#?}");
    ensure!(
        requests[0]["tuple"]["sport"] != requests[1]["tuple"]["sport"],
        "two connections: {journeys:#?}"
    );
    for request in requests {
        let reply = journeys
            .iter()
            .find(|j| j["reply_to"] == request["journey"])
            .with_context(|| format!("its own reset: {journeys:#?}"))?;
        assert_eq!(reply["answer"]["kind"], "reset");
        assert_eq!(
            reply["tuple"]["dport"], request["tuple"]["sport"],
            "each reset answers its own connection"
        );
        assert_eq!(hop(request, "send")["process"], "nc");
    }
    Ok(())
}

#[test]
fn topology_shows_the_containers_ipv6_address_and_its_gateway_on_the_bridge() -> Result<()> {
    let lab = lab()?;
    let run = pkttrace(["topology", "--json"])?;
    ensure!(run.success(), "{run}");
    let report: Value = serde_json::from_str(&run.stdout)?;
    let container = report["containers"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == lab.container.name()))
        .with_context(|| format!("{} in {report:#}", lab.container.name()))?;
    let network = &container["networks"][0];
    assert_eq!(ip6(&network["ipv6"]), lab.container.ipv6()?, "{network}");
    assert_eq!(ip6(&network["ipv6_gateway"]), lab.gateway()?, "{network}");
    // The bridge holds the network's gateway, on the network's /64.
    let subnet = lab.network.ipv6_subnet().context("a v6 subnet")?;
    let prefix = subnet.split_once("::/").context("a /64")?.0;
    let bridge = report["bridges"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["name"] == lab.network.bridge()))
        .with_context(|| format!("{} in {report:#}", lab.network.bridge()))?;
    assert_eq!(bridge["docker_network"], lab.network.name());
    let gateway = format!("{}/64", lab.gateway()?);
    ensure!(gateway.starts_with(prefix), "{gateway} in {subnet}");
    ensure!(
        bridge["addresses"]
            .as_array()
            .is_some_and(|all| all.iter().any(|a| *a == gateway.as_str())),
        "{bridge}"
    );
    Ok(())
}

#[test]
fn an_unanswered_neighbour_solicitation_is_told_like_unanswered_arp() -> Result<()> {
    let lab = lab()?;
    // On the upstream's link, held by no one.
    let nobody: Ipv6Addr = format!(
        "{}99",
        lab.upstream.ipv6().to_string().trim_end_matches('1')
    )
    .parse()?;
    let route = route_get(None, nobody)?;
    ensure!(route["dev"] == lab.upstream.host_veth(), "{route}");
    let followed = follow_unanswered(&[
        lab.container.name(),
        &nobody.to_string(),
        "--probe",
        "icmp",
        "--timeout",
        "8",
    ])?;
    let (request, drop) = followed.only_request()?;
    assert_eq!(drop["namespace"], "host");
    assert_eq!(drop["device"], lab.upstream.host_veth());
    assert_eq!(
        drop["location"]["role"], "neighbour_failed",
        "IPv6 gives no reason; the place says it: {drop}"
    );
    let hint = drop["hint"].as_str().unwrap_or_default();
    assert!(
        hint.contains(&format!("{nobody} never answered neighbour discovery")),
        "{hint}"
    );
    let neigh = tool("ip", &["-6", "neigh", "show", &nobody.to_string()])?;
    ensure!(neigh.contains("FAILED"), "ground truth: {neigh}");
    // The solicitations themselves, told as an unanswered ARP request is.
    let asked = followed
        .neighbour_discovery()
        .into_iter()
        .find(|j| {
            j["what"].as_str().is_some_and(|w| {
                w.starts_with(&format!("neighbour solicitation: who has {nobody}?"))
            })
        })
        .with_context(|| format!("the solicitation is told: {:#?}", followed.records))?;
    assert_eq!(asked["outcome"]["kind"], "arp_unanswered", "{asked:#}");
    assert!(
        asked["outcome"]["asked"].as_u64().is_some_and(|n| n >= 3),
        "the kernel asks three times: {asked:#}"
    );
    let reply = followed.reply_to(&request)?;
    let answer = &reply["answer"];
    assert_eq!(answer["meaning"], "address unreachable", "{answer:#}");
    assert!(
        answer["text"]
            .as_str()
            .unwrap_or_default()
            .contains("got no neighbour advertisement"),
        "{answer:#}"
    );
    assert_eq!(
        reply["verdict"]["cause"]["kind"], "next_hop_silent",
        "{reply:#}"
    );
    Ok(())
}

/// A container whose resolver is an IPv6 server asks it over IPv6 (on a
/// second engine's default bridge with IPv6: no embedded DNS there, and its
/// NAT66 takes the query out; Docker 20.10's embedded DNS cannot forward to
/// an IPv6 server at all).
#[test]
fn a_query_to_an_ipv6_resolver_goes_over_ipv6_through_nat66() -> Result<()> {
    const LAB_NAME: &str = "only-upstream.lab";
    let _forwarding = Sysctl::set(FORWARDING, "1")?;
    let resolver = Upstream::dual_stack()?;
    resolver.serve_dns(&[(LAB_NAME, resolver.ip())])?;
    let route = route_get(None, resolver.ipv6())?;
    ensure!(route["dev"] == resolver.host_veth(), "{route}");
    let engine = SecondEngine::with_ipv6_nat(67)?;
    let netns = engine.host().name();
    let client = format!("pt-c{}", netns.trim_start_matches("pt-"));
    engine.run(
        &client,
        &["--dns", &resolver.ipv6().to_string()],
        &["sleep", "infinity"],
    )?;
    let client_ipv6 = engine.ipv6_of(&client)?;
    let pid = tool(
        "docker",
        &[
            "-H",
            &format!("unix:///run/{netns}.sock"),
            "inspect",
            "-f",
            "{{.State.Pid}}",
            &client,
        ],
    )?;
    wait_until_not_tentative(&[
        vec!["ip", "netns", "exec", netns],
        vec!["nsenter", "-t", pid.trim(), "-n"],
    ])?;
    let tracer =
        Pkttrace::spawn_attached(["dns", &client, "--json", "--count", "3", "--timeout", "30"])?;
    // nslookup asks A and AAAA.
    let _ = engine
        .docker(["exec", &client, "nslookup", LAB_NAME])
        .output();
    // And over TCP: busybox has no DNS client for it, nc carries a hand-framed query.
    let query = integration_tests::tcp_dns_query_printf(LAB_NAME, 0x7c06);
    let _ = engine
        .docker([
            "exec",
            &client,
            "sh",
            "-c",
            &format!(
                "printf '{query}' | nc -w 2 {} 53 > /dev/null",
                resolver.ipv6()
            ),
        ])
        .output();
    let run = tracer.wait(Duration::from_secs(40))?;
    ensure!(run.success(), "pkttrace dns failed: {run}");
    let entries: Vec<Value> = run
        .stdout
        .lines()
        .map(serde_json::from_str::<Value>)
        .collect::<Result<_, _>>()?;
    let over_tcp = entries
        .iter()
        .find(|e| e["transport"] == "tcp")
        .with_context(|| format!("the query over TCP: {entries:#?}"))?;
    assert_eq!(over_tcp["rcode"], "NOERROR", "{over_tcp:#}");
    assert_eq!(over_tcp["question"]["name"], LAB_NAME);
    assert_eq!(over_tcp["asked"], format!("[{}]:53", resolver.ipv6()));
    let asked = entries
        .iter()
        .find(|e| {
            e["question"]["type"] == "A"
                && e["question"]["name"] == LAB_NAME
                && e["transport"] == "udp"
        })
        .with_context(|| format!("the A query: {entries:#?}"))?;
    assert_eq!(asked["rcode"], "NOERROR", "{asked:#}");
    assert_eq!(
        asked["asked"],
        format!("[{}]:53", resolver.ipv6()),
        "{asked:#}"
    );
    assert_eq!(asked["resolv_conf"][0], resolver.ipv6().to_string());
    assert_eq!(asked["answers"][0]["data"], resolver.ip().to_string());
    let masquerade = asked["query_hops"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["kind"] == "nat" && h["nat"] == "source")
        .with_context(|| format!("NAT66 on the way: {asked:#}"))?;
    assert_eq!(ip6(&masquerade["before"]["src"]), client_ipv6);
    assert_eq!(ip6(&masquerade["after"]["src"]), engine.host().ipv6());
    assert_eq!(asked["answer_outcome"]["kind"], "delivered", "{asked:#}");
    assert_eq!(asked["answer_outcome"]["process"], "nslookup");
    Ok(())
}

/// With Docker's ip6tables on (a second engine, `--experimental
/// --ip6tables`), a container's IPv6 packets leave through NAT66
/// (MASQUERADE to its host's address) and a published port is DNAT to the
/// container's IPv6 address: both followed there and back, against
/// `ip6tables -t nat -S`.
#[test]
fn with_docker_ip6tables_nat66_masquerades_and_a_published_port_is_dnat() -> Result<()> {
    let engine = SecondEngine::with_ipv6_nat(66)?;
    let host = engine.host();
    let netns = host.name();
    let web_name = format!("pt-w{}", netns.trim_start_matches("pt-"));
    engine.run(&web_name, &["-p", "8080:80"], &["httpd", "-f", "-p", "80"])?;
    let web = engine.ipv6_of(&web_name)?;
    let pid = tool(
        "docker",
        &[
            "-H",
            &format!("unix:///run/{netns}.sock"),
            "inspect",
            "-f",
            "{{.State.Pid}}",
            &web_name,
        ],
    )?;
    wait_until_not_tentative(&[
        vec!["ip", "netns", "exec", netns],
        vec!["nsenter", "-t", pid.trim(), "-n"],
    ])?;
    let nat = tool(
        "ip",
        &["netns", "exec", netns, "ip6tables", "-t", "nat", "-S"],
    )?;
    ensure!(
        nat.contains("-j MASQUERADE") && nat.contains(&format!("--to-destination [{web}]:80")),
        "ground truth: NAT66 and the DNAT rule: {nat}"
    );
    // The machine's end of the engine's link: local here, nothing leaves.
    let route = route_get(None, host.host_ipv6())?;
    ensure!(route["dev"] == "lo" || route["type"] == "local", "{route}");

    let (code, records) = integration_tests::follow_engines(&[
        &web_name,
        &host.host_ipv6().to_string(),
        "--probe",
        "icmp",
    ])?;
    assert_eq!(code, Some(0), "{records:#?}");
    let request = only(&records, "request")?;
    let masquerade = nat_hop(request, "source")?;
    assert_eq!(masquerade["hook"], "POSTROUTING", "{masquerade:#}");
    assert_eq!(ip6(&masquerade["before"]["src"]), web);
    assert_eq!(
        ip6(&masquerade["after"]["src"]),
        host.ipv6(),
        "MASQUERADE to the engine's host address: {masquerade:#}"
    );
    let reply = only(&records, "reply")?;
    assert_eq!(ip6(&nat_hop(reply, "reverse")?["after"]["dst"]), web);
    assert_eq!(
        hops(reply).last().context("a hop")?["namespace"],
        web_name.as_str()
    );

    let published = format!("[{}]:8080", host.ipv6());
    let (code, records) =
        integration_tests::follow_engines(&["host", &published, "--probe", "tcp"])?;
    assert_eq!(code, Some(0), "{records:#?}");
    let request = only(&records, "request")?;
    let dnat = nat_hop(request, "destination").with_context(|| format!("rules: {nat}"))?;
    assert_eq!(ip6(&dnat["after"]["dst"]), web, "{dnat:#}");
    assert_eq!(dnat["after"]["dport"], 80);
    assert_eq!(
        request["outcome"]["accepted_by"]["process"], "httpd",
        "{request:#}"
    );
    Ok(())
}

/// The one journey of `direction` (retransmissions aside).
fn only<'a>(records: &'a [Value], direction: &str) -> Result<&'a Value> {
    let found: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["record"] == "journey"
                && r["direction"] == direction
                && r.get("retransmission_of").is_none()
        })
        .collect();
    ensure!(found.len() == 1, "one {direction}: {records:#?}");
    Ok(found[0])
}

/// The journey's NAT hop of that kind (`source`, `destination`, `reverse`).
fn nat_hop<'a>(journey: &'a Value, kind: &str) -> Result<&'a Value> {
    hops(journey)
        .iter()
        .find(|h| h["kind"] == "nat" && h["nat"] == kind)
        .with_context(|| format!("a {kind} NAT hop: {journey:#}"))
}

/// Until no address is tentative in any of the namespaces the command
/// prefixes enter (duplicate address detection has passed).
fn wait_until_not_tentative(prefixes: &[Vec<&str>]) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut tentative = false;
        for prefix in prefixes {
            let mut args = prefix.clone();
            args.extend(["ip", "-6", "addr", "show", "tentative"]);
            tentative |= !tool(args[0], &args[1..])?.trim().is_empty();
        }
        if !tentative {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "addresses still tentative after 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn with_arp_a_neighbour_solicitation_and_its_advertisement_are_told() -> Result<()> {
    let lab = lab()?;
    // Cold caches: the container forgets its gateway.
    tool(
        "nsenter",
        &[
            &format!("--net={}", lab.container.netns_path()),
            "ip",
            "-6",
            "neigh",
            "flush",
            "all",
        ],
    )?;
    let gateway = lab.gateway()?;
    let followed = follow_json(&[
        lab.container.name(),
        &lab.upstream.ipv6().to_string(),
        "--probe",
        "icmp",
        "--arp",
    ])?;
    ensure!(followed.run.success(), "{}", followed.run);
    let told = followed.neighbour_discovery();
    let solicitation = told
        .iter()
        .find(|j| {
            j["what"]
                == format!(
                    "neighbour solicitation: who has {gateway}? tell {}",
                    lab.container.ipv6().unwrap()
                )
        })
        .with_context(|| format!("the container's solicitation: {told:#?}"))?;
    assert_eq!(
        solicitation["outcome"]["kind"], "arp_answered",
        "{solicitation:#}"
    );
    let bridge_mac =
        tool_json("ip", &["-j", "link", "show", "dev", lab.network.bridge()])?[0]["address"]
            .clone();
    assert_eq!(
        solicitation["outcome"]["mac"], bridge_mac,
        "{solicitation:#}"
    );
    let advertisement = told
        .iter()
        .find(|j| j["journey"] == solicitation["outcome"]["reply"])
        .with_context(|| format!("its advertisement: {told:#?}"))?;
    assert_eq!(
        advertisement["what"],
        format!(
            "neighbour advertisement: {gateway} is at {}",
            bridge_mac.as_str().unwrap_or_default()
        )
    );
    // The echo itself is told apart from them.
    let (request, _) = followed.only_request()?;
    assert_eq!(ip6(&request["tuple"]["dst"]), lab.upstream.ipv6());
    Ok(())
}

/// `--pcap` over IPv6: tshark reads back a well-formed packet per hop, the
/// request from the container's address to the upstream's and the reply.
#[test]
fn a_pcap_of_an_ipv6_ping_holds_ipv6_packets() -> Result<()> {
    let lab = lab()?;
    let capture = std::env::temp_dir().join(format!("{}.pcapng", lab.container.name()));
    let followed = follow_json(&[
        lab.container.name(),
        &lab.upstream.ipv6().to_string(),
        "--probe",
        "icmp",
        "--pcap",
        capture.to_str().context("a UTF-8 path")?,
    ])?;
    let read = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&capture)
        .args(["-T", "fields", "-E", "separator=|"])
        .args(["-e", "ipv6.src", "-e", "ipv6.dst", "-e", "_ws.malformed"])
        .output();
    let _ = std::fs::remove_file(&capture);
    let read = read?;
    ensure!(followed.run.success(), "{}", followed.run);
    ensure!(read.status.success(), "tshark: {read:?}");
    let packets: Vec<Vec<String>> = String::from_utf8(read.stdout)?
        .lines()
        .map(|line| line.split('|').map(str::to_string).collect())
        .collect();
    let hops: usize = followed.journeys().iter().map(|j| hops(j).len()).sum();
    ensure!(packets.len() >= hops, "a packet per hop: {packets:#?}");
    let (container, upstream) = (
        lab.container.ipv6()?.to_string(),
        lab.upstream.ipv6().to_string(),
    );
    for packet in &packets {
        ensure!(
            packet.len() == 3 && packet[2].is_empty(),
            "well formed: {packets:#?}"
        );
    }
    ensure!(
        packets
            .iter()
            .any(|p| p[0] == container && p[1] == upstream),
        "the request: {packets:#?}"
    );
    ensure!(
        packets
            .iter()
            .any(|p| p[0] == upstream && p[1] == container),
        "the reply: {packets:#?}"
    );
    Ok(())
}

/// A container without its IPv6 default route sends nothing; the fix names
/// the network's IPv6 gateway (never the host veth's link-local address)
/// and, run as given, makes the ping work.
#[test]
fn no_ipv6_route_at_the_source_is_fixed_by_the_networks_gateway() -> Result<()> {
    let lab = lab()?;
    let gateway = lab.gateway()?;
    let netns = format!("--net={}", lab.container.netns_path());
    tool("nsenter", &[&netns, "ip", "-6", "route", "del", "default"])?;
    let truth = route_get(Some(&lab.container.netns_path()), lab.upstream.ipv6())?;
    ensure!(truth.is_string(), "ground truth: no route: {truth}");
    let destination = lab.upstream.ipv6().to_string();
    let followed = follow_unanswered(&[lab.container.name(), &destination, "--probe", "icmp"])?;
    let (request, _) = followed.only_request()?;
    assert_eq!(request["outcome"]["kind"], "not_sent", "{request:#}");
    let verdict = &request["verdict"];
    let fix = verdict["action"]["command"].as_str().context("a fix")?;
    assert!(
        fix.ends_with(&format!("ip route add default via {gateway}")),
        "{verdict:#}"
    );
    tool("sh", &["-c", fix])?;
    let after = follow_json(&[lab.container.name(), &destination, "--probe", "icmp"])?;
    ensure!(after.run.success(), "answered once fixed: {}", after.run);
    Ok(())
}
