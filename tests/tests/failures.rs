//! `pkttrace follow` when something goes wrong, on a real lab: packets that
//! leave through a device nothing is traced beyond (an ifb and a tap stand
//! in for a NIC), a next hop that never answers ARP, REJECT rules, a closed
//! UDP port, drops in INPUT, raw, mangle and inside a container, the
//! reverse path filter, forwarding off on one device, lookalike resets, and
//! packets already on their way while pkttrace attached (left out, never
//! told in part).
//! Each story is checked against the ground truth read independently (`ip`,
//! nft handles, the tap's own reader), and so is the exit code.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Container, Followed, IptablesRule, Pkttrace, StandInNic, Sysctl, TapNic, Upstream,
    follow_unanswered, hop, hops, ip, kinds, netfilter_links, nft_tables, route_get, trace_tables,
};
use serde_json::Value;

/// pkttrace's netfilter links in a namespace it observes: five hooks' entries
/// and three after NAT, for IPv4 and for IPv6.
const HOST_NETFILTER_LINKS: usize = 16;

/// The device `ip route get` picks for `dst` (in the host namespace).
fn route_device(dst: Ipv4Addr) -> Result<String> {
    Ok(route_get(None, dst)?["dev"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// `iptables -I OUTPUT <spec>` in the filter table inside `container`.
fn rule_in_containers_output(container: &Container, spec: &[&str]) -> Result<IptablesRule> {
    IptablesRule::insert_in_netns(Path::new(&container.netns_path()), "filter", "OUTPUT", spec)
}

/// A container with a lab DNS server, so nothing it does asks the machine's resolver.
fn container() -> Result<(Upstream, Container)> {
    let upstream = Upstream::new()?;
    let container = Container::builder().dns(upstream.ip()).start()?;
    Ok((upstream, container))
}

#[test]
fn a_packet_leaving_through_a_nic_stand_in_left_it_and_got_no_reply() -> Result<()> {
    let (_upstream, container) = container()?;
    let nic = StandInNic::new()?;
    assert_eq!(route_device(nic.next_hop())?, nic.name(), "ground truth");
    let followed = follow_unanswered(&[
        container.name(),
        &nic.next_hop().to_string(),
        "--probe",
        "icmp",
        "--timeout",
        "2",
    ])?;
    let (request, last) = followed.only_request()?;
    assert_eq!(last["kind"], "xmit");
    let outcome = &request["outcome"];
    assert_eq!(
        outcome["kind"], "left",
        "a free after transmit is no receive: {outcome}"
    );
    assert_eq!(
        (outcome["namespace"].as_str(), outcome["device"].as_str()),
        (Some("host"), Some(nic.name()))
    );
    assert_eq!(ip(&outcome["next_hop"]), nic.next_hop());
    assert_eq!(outcome["freed_by"], "ifb_xmit", "the driver's free");
    assert!(
        !kinds(&request).contains(&"receive"),
        "nothing received it: {request:#}"
    );
    let no_reply = followed.no_reply_to(&request)?;
    assert_eq!(no_reply["last_seen"]["kind"], "left");
    assert!(
        no_reply["waited_ms"].as_u64().unwrap() >= 1500,
        "{no_reply}"
    );
    Ok(())
}

#[test]
fn a_packet_leaving_through_a_tap_is_read_by_the_program_behind_it() -> Result<()> {
    let (_upstream, container) = container()?;
    let tap = TapNic::with_static_neighbour()?;
    assert_eq!(route_device(tap.next_hop())?, tap.name(), "ground truth");
    let followed = follow_unanswered(&[
        container.name(),
        &tap.next_hop().to_string(),
        "--probe",
        "icmp",
        "--timeout",
        "2",
    ])?;
    let (request, _) = followed.only_request()?;
    let outcome = &request["outcome"];
    assert_eq!(outcome["kind"], "left", "{outcome}");
    assert_eq!(outcome["device"], tap.name());
    let mac = TapNic::NEIGHBOUR_MAC.map(|b| format!("{b:02x}")).join(":");
    assert_eq!(
        outcome["next_hop_mac"],
        mac.as_str(),
        "the static neighbour"
    );
    // The harness's own reader thread is the program behind the tap.
    let reader = outcome["read_by"].as_str().context("read by a program")?;
    assert!(
        reader.contains(&format!("(pid {})", std::process::id())),
        "this test process read it: {reader}"
    );
    let echo_request = tap.wait_for_frame(Duration::ZERO, |frame| {
        frame.len() > 34 && frame[12..14] == [0x08, 0x00] && frame[23] == 1 && frame[34] == 8
    });
    ensure!(echo_request.is_some(), "the reader got the echo request");
    followed.no_reply_to(&request)?;
    Ok(())
}

#[test]
fn a_next_hop_that_never_answers_arp_fails_the_neighbour_and_the_host_says_unreachable()
-> Result<()> {
    let (_upstream, container) = container()?;
    let tap = TapNic::new()?;
    let followed = follow_unanswered(&[
        container.name(),
        &tap.next_hop().to_string(),
        "--probe",
        "icmp",
        "--timeout",
        "6",
    ])?;
    let (request, drop) = followed.only_request()?;
    assert_eq!(
        (drop["kind"].as_str(), drop["reason"].as_str()),
        (Some("drop"), Some("NEIGH_FAILED"))
    );
    assert_eq!(drop["device"], tap.name());
    assert!(
        drop["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("next hop {} never answered ARP", tap.next_hop())),
        "{drop}"
    );
    // Ground truth: the who-has frames the tap's reader got.
    let who_has = tap
        .frames()
        .iter()
        .filter(|f| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[21] == 1)
        .count();
    let arp = followed
        .arp()
        .into_iter()
        .find(|j| {
            j["what"]
                .as_str()
                .unwrap()
                .contains(&format!("who has {}?", tap.next_hop()))
        })
        .context("the ARP request is told")?;
    assert_eq!(arp["outcome"]["kind"], "arp_unanswered", "{arp:#}");
    assert_eq!(arp["outcome"]["asked"].as_u64(), Some(who_has as u64));
    assert!(who_has >= 3, "the kernel asks three times: {who_has}");
    let reply = followed.reply_to(&request)?;
    assert_eq!(reply["what"], "ICMP host unreachable");
    let answer = &reply["answer"];
    assert_eq!(
        (answer["kind"].as_str(), answer["code"].as_u64()),
        (Some("error"), Some(1))
    );
    assert_eq!(
        ip(&answer["from"]),
        tap.host_ip(),
        "the host that gave up answers, from its address on that link"
    );
    assert_eq!(hops(reply).last().unwrap()["kind"], "deliver");
    Ok(())
}

/// REJECT in DOCKER-USER: the exact rule named, and what it sends back
/// told as the reply, made by the host's firewall.
fn rejected(reject_with: &[&str]) -> Result<(Followed, IptablesRule, Container, Upstream)> {
    let (upstream, container) = container()?;
    let from = container.ip().to_string();
    let mut spec = vec!["-s", &from, "-p", "tcp", "--dport", "81", "-j", "REJECT"];
    spec.extend_from_slice(reject_with);
    let rule = IptablesRule::insert("DOCKER-USER", spec)?;
    let dest = format!("{}:81", upstream.ip());
    let followed = follow_unanswered(&[container.name(), &dest, "--probe", "tcp"])?;
    Ok((followed, rule, container, upstream))
}

fn assert_rejected_by(request: &Value, drop: &Value, rule: &IptablesRule) -> Result<()> {
    assert_eq!(
        (drop["reason"].as_str(), drop["hook"].as_str()),
        (Some("NETFILTER_DROP"), Some("FORWARD"))
    );
    let traced = &drop["rule"];
    assert_eq!(traced["chain"], "DOCKER-USER");
    assert_eq!(traced["handle"].as_u64(), Some(rule.handle()?), "{traced}");
    assert_eq!(traced["action"], "reject");
    assert_eq!(request["outcome"]["rule"], *traced);
    Ok(())
}

#[test]
fn a_reject_rule_is_named_and_its_port_unreachable_is_the_reply() -> Result<()> {
    let (followed, rule, container, upstream) = rejected(&[])?;
    let (request, drop) = followed.only_request()?;
    assert_rejected_by(&request, &drop, &rule)?;
    let reply = followed.reply_to(&request)?;
    assert_eq!(reply["what"], "ICMP port unreachable");
    let answer = &reply["answer"];
    assert_eq!(answer["by_firewall"], true, "{answer}");
    assert_eq!(
        ip(&answer["from"]),
        Ipv4Addr::new(172, 17, 0, 1),
        "the host, on docker0, not {}",
        upstream.ip()
    );
    assert_eq!(hop(reply, "send")["namespace"], "host");
    assert_eq!(hops(reply).last().unwrap()["namespace"], container.name());
    Ok(())
}

#[test]
fn a_reject_with_tcp_reset_answers_in_the_destinations_name() -> Result<()> {
    let (followed, rule, container, upstream) = rejected(&["--reject-with", "tcp-reset"])?;
    let (request, drop) = followed.only_request()?;
    assert_rejected_by(&request, &drop, &rule)?;
    let reply = followed.reply_to(&request)?;
    assert_eq!(
        ip(&reply["tuple"]["src"]),
        upstream.ip(),
        "the RST claims to come from there"
    );
    assert_eq!(reply["answer"]["kind"], "reset", "{}", reply["answer"]);
    assert_eq!(reply["answer"]["by_firewall"], true);
    assert_eq!(
        hops(reply)[0]["namespace"],
        "host",
        "but the host made it: {reply:#}"
    );
    assert!(
        !hops(reply)
            .iter()
            .any(|h| h["namespace"] == format!("netns {}", upstream.name())),
        "the destination never saw the SYN"
    );
    assert_eq!(hops(reply).last().unwrap()["namespace"], container.name());
    Ok(())
}

/// A REJECT in the container's own OUTPUT: its reset goes to the
/// container's own address, which the kernel routes through lo by a local
/// route (reported as table main, where it keeps the local table merged).
#[test]
fn a_reset_from_the_containers_own_reject_rule_is_routed_to_its_own_address() -> Result<()> {
    let (upstream, container) = container()?;
    let to = upstream.ip().to_string();
    let _rule = rule_in_containers_output(
        &container,
        &[
            "-p",
            "tcp",
            "-d",
            &to,
            "--dport",
            "81",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    )?;
    let local = container.exec_ok(["ip", "route", "show", "table", "local"])?;
    ensure!(
        local.contains(&format!("local {} dev eth0", container.ip())),
        "ground truth: a local route to its own address: {local}"
    );
    let followed = follow_unanswered(&[container.name(), &format!("{to}:81"), "--probe", "tcp"])?;
    let (request, _) = followed.only_request()?;
    let reply = followed.reply_to(&request)?;
    assert_eq!(reply["answer"]["kind"], "reset", "{reply:#}");
    let text = reply.to_string();
    assert!(
        text.contains("an address of this namespace, on eth0: delivered through lo (table local)")
            && !text.contains("directly connected"),
        "{reply:#}"
    );
    Ok(())
}

#[test]
fn udp_to_a_closed_port_is_answered_port_unreachable() -> Result<()> {
    let (upstream, container) = container()?;
    let dest = format!("{}:5353", upstream.ip());
    let followed = follow_unanswered(&[container.name(), &dest, "--probe", "udp"])?;
    let (request, drop) = followed.only_request()?;
    assert_eq!(drop["reason"], "NO_SOCKET");
    assert_eq!(drop["namespace"], format!("netns {}", upstream.name()));
    let reply = followed.reply_to(&request)?;
    let answer = &reply["answer"];
    assert_eq!(
        (answer["kind"].as_str(), answer["meaning"].as_str()),
        (Some("error"), Some("port unreachable"))
    );
    assert_eq!(ip(&answer["from"]), upstream.ip(), "the destination itself");
    assert_eq!(answer["by_firewall"], false);
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("port 5353 (udp) unreachable")
            && answer["text"]
                .as_str()
                .unwrap()
                .contains("no process listens"),
        "{answer}"
    );
    assert!(followed.no_replies().is_empty(), "an answer came");
    Ok(())
}

/// A TCP probe from the upstream to the host's own address, dropped by
/// `rule_in(upstream)` at `hook` in `table`: the story names the hook and
/// the rule.
fn dropped_on_the_way_in(
    port: u16,
    rule_in: impl FnOnce(&Upstream) -> Result<IptablesRule>,
    hook: &str,
    table: &str,
) -> Result<()> {
    let upstream = Upstream::new()?;
    let rule = rule_in(&upstream)?;
    let dest = format!("{}:{port}", upstream.host_ip());
    let followed =
        follow_unanswered(&[upstream.name(), &dest, "--probe", "tcp", "--timeout", "2"])?;
    let (request, drop) = followed.only_request()?;
    assert_eq!(
        (
            drop["reason"].as_str(),
            drop["namespace"].as_str(),
            drop["hook"].as_str()
        ),
        (Some("NETFILTER_DROP"), Some("host"), Some(hook)),
        "{drop}"
    );
    let traced = &drop["rule"];
    assert_eq!(traced["table"], table);
    assert_eq!(traced["handle"].as_u64(), Some(rule.handle()?), "{traced}");
    let hooks: Vec<&str> = hops(&request)
        .iter()
        .filter(|h| h["kind"] == "netfilter" && h["namespace"] == "host")
        .map(|h| h["hook"].as_str().unwrap())
        .collect();
    assert_eq!(
        hooks.last(),
        Some(&hook),
        "the last hook entered: {hooks:?}"
    );
    assert_eq!(followed.no_reply_to(&request)?["last_seen"]["hook"], hook);
    Ok(())
}

#[test]
fn a_drop_in_the_hosts_input_chain_is_told_at_input() -> Result<()> {
    dropped_on_the_way_in(
        8081,
        |u| {
            IptablesRule::insert(
                "INPUT",
                [
                    "-i",
                    u.host_veth(),
                    "-p",
                    "tcp",
                    "--dport",
                    "8081",
                    "-j",
                    "DROP",
                ],
            )
        },
        "INPUT",
        "ip filter",
    )
}

#[test]
fn a_drop_in_raw_prerouting_is_told_at_prerouting() -> Result<()> {
    dropped_on_the_way_in(
        8082,
        |u| {
            IptablesRule::insert_in(
                "raw",
                "PREROUTING",
                [
                    "-i",
                    u.host_veth(),
                    "-p",
                    "tcp",
                    "--dport",
                    "8082",
                    "-j",
                    "DROP",
                ],
            )
        },
        "PREROUTING",
        "ip raw",
    )
}

#[test]
fn a_drop_in_mangle_prerouting_is_told_at_prerouting() -> Result<()> {
    dropped_on_the_way_in(
        8083,
        |u| {
            IptablesRule::insert_in(
                "mangle",
                "PREROUTING",
                [
                    "-i",
                    u.host_veth(),
                    "-p",
                    "tcp",
                    "--dport",
                    "8083",
                    "-j",
                    "DROP",
                ],
            )
        },
        "PREROUTING",
        "ip mangle",
    )
}

#[test]
fn a_drop_by_a_rule_inside_the_containers_own_namespace() -> Result<()> {
    let (upstream, container) = container()?;
    let to = upstream.ip().to_string();
    let rule = rule_in_containers_output(&container, &["-p", "icmp", "-d", &to, "-j", "DROP"])?;
    let followed =
        follow_unanswered(&[container.name(), &to, "--probe", "icmp", "--timeout", "2"])?;
    let (request, drop) = followed.only_request()?;
    assert_eq!(
        (drop["namespace"].as_str(), drop["hook"].as_str()),
        (Some(container.name()), Some("OUTPUT"))
    );
    let traced = &drop["rule"];
    assert_eq!(
        (traced["table"].as_str(), traced["chain"].as_str()),
        (Some("ip filter"), Some("OUTPUT"))
    );
    assert_eq!(
        traced["handle"].as_u64(),
        Some(rule.handle()?),
        "the container's own ruleset: {traced}"
    );
    assert!(
        hops(&request)
            .iter()
            .all(|h| h["namespace"] == container.name()),
        "it never left the container: {request:#}"
    );
    Ok(())
}

/// A container on the default bridge has no nf_tables table, so pkttrace
/// puts no trace table in it (marking there would only cost its packets);
/// a rule made there while pkttrace runs is named all the same.
#[test]
fn a_rule_made_inside_a_container_during_the_trace_is_named() -> Result<()> {
    let (upstream, container) = container()?;
    let netns = container.netns_path();
    let to = upstream.ip().to_string();
    ensure!(
        nft_tables(Some(&netns))?.is_empty(),
        "ground truth: a new container has no nf_tables table"
    );
    let tracer =
        Pkttrace::spawn_attached(["follow", container.name(), &to, "--timeout", "8", "--json"])?;
    ensure!(
        !trace_tables(None)?.is_empty(),
        "the host's rules are traced"
    );
    ensure!(
        nft_tables(Some(&netns))?.is_empty(),
        "no trace table where there is no rule to name"
    );
    // Five hooks and three after NAT, in the host only: nothing of
    // netfilter acts in a namespace without a ruleset.
    assert_eq!(
        netfilter_links()?,
        HOST_NETFILTER_LINKS,
        "only the host's hooks are observed"
    );
    let rule = rule_in_containers_output(&container, &["-p", "icmp", "-d", &to, "-j", "DROP"])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while trace_tables(Some(&netns))?.is_empty() || netfilter_links()? < 2 * HOST_NETFILTER_LINKS {
        ensure!(
            std::time::Instant::now() < deadline,
            "5 s after the container got a table: trace tables {:?}, netfilter links {}",
            nft_tables(Some(&netns))?,
            netfilter_links()?
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ping = container.exec(["ping", "-c", "1", "-W", "1", &to])?;
    ensure!(
        !ping.status.success(),
        "ground truth: the rule drops the ping"
    );
    let followed = Followed::read(tracer.wait(Duration::from_secs(30))?)?;
    let (_, drop) = followed.only_request()?;
    assert_eq!(
        (drop["namespace"].as_str(), drop["hook"].as_str()),
        (Some(container.name()), Some("OUTPUT"))
    );
    assert_eq!(
        drop["rule"]["handle"].as_u64(),
        Some(rule.handle()?),
        "the rule made during the trace: {drop}"
    );
    Ok(())
}

#[test]
fn the_reverse_path_filter_drop_names_its_sysctl() -> Result<()> {
    let upstream = Upstream::new()?;
    let nic = StandInNic::new()?;
    // A source the host routes back out of the ifb, not the upstream's veth.
    let spoofed = nic.next_hop();
    assert_eq!(route_device(spoofed)?, nic.name(), "ground truth");
    upstream.exec_ok(["ip", "addr", "add", &format!("{spoofed}/32"), "dev", "lo"])?;
    // The host answers no ARP from a source the filter refuses either: the
    // upstream knows its MAC address beforehand.
    let host_mac =
        std::fs::read_to_string(format!("/sys/class/net/{}/address", upstream.host_veth()))?;
    upstream.exec_ok([
        "ip",
        "neigh",
        "replace",
        &upstream.host_ip().to_string(),
        "lladdr",
        host_mac.trim(),
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    let strict = format!("net/ipv4/conf/{}/rp_filter", upstream.host_veth());
    let _strict = Sysctl::set(&strict, "1")?;
    let host = upstream.host_ip().to_string();
    let tracer = Pkttrace::spawn_attached([
        "follow",
        upstream.name(),
        &host,
        "--count",
        "1",
        "--timeout",
        "10",
        "--json",
    ])?;
    let _ = upstream.exec([
        "busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        "-I",
        &spoofed.to_string(),
        &host,
    ]);
    let run = tracer.wait(Duration::from_secs(20))?;
    ensure!(run.status.code() == Some(1), "no reply: {run}");
    let request: Value = run
        .stdout
        .lines()
        .map(serde_json::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|j| j["record"] == "journey" && j["direction"] == "request")
        .context("the ping")?;
    assert_eq!(ip(&request["tuple"]["src"]), spoofed);
    let drop = hops(&request).last().unwrap();
    assert_eq!(drop["reason"], "IP_RPFILTER");
    let hint = drop["hint"].as_str().unwrap();
    assert!(
        hint.contains(&format!(
            "net.ipv4.conf.{}.rp_filter = 1",
            upstream.host_veth()
        )),
        "{hint}"
    );
    Ok(())
}

#[test]
fn forwarding_off_on_one_device_is_the_one_named() -> Result<()> {
    let (upstream, container) = container()?;
    let _off = Sysctl::set("net.ipv4.conf.docker0.forwarding", "0")?;
    let all = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/forwarding")?;
    assert_eq!(all.trim(), "1", "ground truth: only docker0 is off");
    let followed = follow_unanswered(&[
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
        "--timeout",
        "2",
    ])?;
    let (_, drop) = followed.only_request()?;
    assert_eq!(drop["reason"], "IP_INADDRERRORS");
    let hint = drop["hint"].as_str().unwrap();
    assert!(
        hint.contains("net.ipv4.conf.docker0.forwarding = 0")
            && hint.contains("net.ipv4.conf.all.forwarding is 1"),
        "{hint}"
    );
    Ok(())
}

#[test]
fn two_connections_refused_at_once_are_two_exchanges() -> Result<()> {
    let (upstream, container) = container()?;
    let dest = format!("{}:7777", upstream.ip());
    let tracer = Pkttrace::spawn_attached([
        "follow",
        container.name(),
        &dest,
        "--count",
        "2",
        "--timeout",
        "15",
        "--json",
    ])?;
    let target = upstream.ip().to_string();
    let _ = container.exec([
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
    // The second connection may even reuse the first one's port.
    ensure!(requests.len() == 2, "two SYNs: {journeys:#?}");
    let replies: Vec<&Value> = journeys
        .iter()
        .filter(|j| j["direction"] == "reply")
        .collect();
    ensure!(replies.len() == 2, "two resets, not one: {journeys:#?}");
    for request in requests {
        // Whole stories: traced from attach on, each SYN meets the MASQUERADE.
        ensure!(
            request["hops"]
                .as_array()
                .is_some_and(|hops| hops.iter().any(|h| h["kind"] == "nat")),
            "the SYN's source NAT: {request:#}"
        );
        let reply = journeys
            .iter()
            .find(|j| j["reply_to"] == request["journey"])
            .with_context(|| format!("its own reset: {journeys:#?}"))?;
        assert_eq!(reply["what"], "TCP ACK+RST");
        assert_eq!(
            reply["tuple"]["dport"], request["tuple"]["sport"],
            "each reset answers its own connection"
        );
        assert_eq!(reply["answer"]["kind"], "reset");
        assert_eq!(reply["answer"]["by_firewall"], false);
        // Each SYN has the route its own nc chose and each reset the one its
        // kernel chose, though the two connections overlap.
        let send = &request["hops"][0];
        assert_eq!(
            (send["kind"].as_str(), send["process"].as_str()),
            (Some("send"), Some("nc")),
            "{send:#}"
        );
        assert_eq!(send["route"]["table"], 254, "{send:#}");
        let reply_send = &reply["hops"][0];
        assert_eq!(reply_send["route"]["table"], 254, "{reply_send:#}");
    }
    Ok(())
}

#[test]
fn packets_already_on_the_way_while_it_attaches_are_left_out_not_told_in_part() -> Result<()> {
    let (upstream, container) = container()?;
    let target = upstream.ip().to_string();
    // Connection attempts every 0.1 s from before pkttrace starts until after it is attached.
    let attempts =
        format!("for i in $(seq 1 50); do nc -w 1 {target} 7777 </dev/null; sleep 0.1; done");
    let run = std::thread::scope(|scope| -> Result<_> {
        let traffic = scope.spawn(|| container.exec(["sh", "-c", &attempts]));
        std::thread::sleep(Duration::from_millis(300));
        let dest = format!("{target}:7777");
        let run = Pkttrace::spawn([
            "follow",
            container.name(),
            &dest,
            "--timeout",
            "3",
            "--json",
        ])?
        .wait(Duration::from_secs(60))?;
        let _ = traffic.join();
        Ok(run)
    })?;
    let syns: Vec<Value> = run
        .stdout
        .lines()
        .map(serde_json::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|j| j["record"] == "journey" && j["what"] == "TCP SYN")
        .collect();
    ensure!(
        !syns.is_empty(),
        "SYNs sent after attaching are told: {run}"
    );
    for syn in &syns {
        let kinds = kinds(syn);
        ensure!(
            kinds.first() == Some(&"send")
                && kinds.iter().filter(|k| **k == "netfilter").count() >= 3
                && kinds.contains(&"nat"),
            "every SYN told is told whole, from its send through the host's hooks and the MASQUERADE: {kinds:?} in {syn:#}\n{}",
            run.stderr
        );
    }
    Ok(())
}
