//! `pkttrace follow` at the edges of what it sees, on a real lab: answers
//! from beyond a tap or tun device (a far host's echo reply, a router's ICMP
//! errors), routing failures (no route at the source, no route back from
//! the far side, unreachable and blackhole routes on the host), the MTU of
//! a smaller link and the path MTU learned from it, a TTL that runs out
//! (set small, or in a routing loop between two namespaces). Each story is
//! checked in its typed JSON against the ground truth read independently:
//! `ip route get` and `ip route show` in the namespace concerned, and the
//! far side's own log of what it sent.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Container, DockerNetwork, FarAnswer, FarLink, FarSide, Followed, HostRoute, InnerNetns,
    NetnsPair, SentKind, Upstream, follow_json, follow_unanswered, hop, hops, ip, kinds, route_get,
};
use serde_json::Value;

/// A container on Docker's default bridge with a lab DNS server.
fn container() -> Result<(Upstream, Container)> {
    let upstream = Upstream::new()?;
    let container = Container::builder().dns(upstream.ip()).start()?;
    Ok((upstream, container))
}

/// The far side's reply the story is about, by what it sent.
fn far_sent(far: &FarSide, wanted: impl Fn(&SentKind) -> bool) -> Result<SentKind> {
    far.wait_for_sent(Duration::ZERO, |sent| wanted(&sent.what))
        .map(|sent| sent.what)
        .with_context(|| format!("the far side sent it: {:?}", far.sent()))
}

fn probe_far_host(container: &Container, far: &FarSide) -> Result<Followed> {
    follow_json(&[
        container.name(),
        &far.far_host().to_string(),
        "--probe",
        "icmp",
        "--timeout",
        "3",
    ])
}

/// What a reply says of its origin beyond `device`.
fn assert_from_beyond(answer: &Value, device: &str, kind: &str, from: Ipv4Addr) {
    let origin = &answer["origin"];
    assert_eq!(origin["kind"], "beyond", "{answer:#}");
    assert_eq!(origin["device"], device, "{answer:#}");
    assert_eq!(origin["device_kind"], kind, "{answer:#}");
    assert_eq!(origin["namespace"], "host", "{answer:#}");
    assert_eq!(ip(&answer["from"]), from, "{answer:#}");
}

#[test]
fn an_echo_reply_from_beyond_a_tap_is_the_far_hosts() -> Result<()> {
    let (_upstream, container) = container()?;
    let far = FarSide::new(FarLink::Tap, FarAnswer::Echo)?;
    let route = route_get(None, far.far_host())?;
    assert_eq!(
        (route["dev"].as_str(), route["gateway"].as_str()),
        (Some(far.name()), Some(far.router().to_string().as_str())),
        "ground truth: {route}"
    );
    let followed = probe_far_host(&container, &far)?;
    ensure!(followed.code() == Some(0), "answered: {}", followed.run);
    let (request, _) = followed.only_request()?;
    assert_eq!(request["outcome"]["kind"], "left");
    assert_eq!(request["outcome"]["device_kind"], "tap");
    let router_mac = far.router_mac().context("a tap's router has a MAC")?;
    let mac = router_mac.map(|b| format!("{b:02x}")).join(":");
    assert_eq!(request["outcome"]["next_hop_mac"], mac.as_str());
    let reply = followed.reply_to(&request)?;
    let SentKind::EchoReply { from, .. } =
        far_sent(&far, |s| matches!(s, SentKind::EchoReply { .. }))?
    else {
        unreachable!()
    };
    assert_from_beyond(&reply["answer"], far.name(), "tap", from);
    assert_eq!(from, far.far_host());
    assert_eq!(reply["answer"]["kind"], "reply");
    assert_eq!(
        hops(reply)[0]["kind"],
        "receive",
        "first seen arriving on the tap"
    );
    let text = reply["answer"]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("{}, beyond {}", far.far_host(), far.name())),
        "{text}"
    );
    Ok(())
}

#[test]
fn a_routers_host_unreachable_from_beyond_a_tap_is_no_drop_on_this_host() -> Result<()> {
    let (_upstream, container) = container()?;
    let far = FarSide::new(FarLink::Tap, FarAnswer::HostUnreachable)?;
    let followed = probe_far_host(&container, &far)?;
    ensure!(followed.code() == Some(1), "an error: {}", followed.run);
    let (request, _) = followed.only_request()?;
    assert_eq!(request["outcome"]["kind"], "left", "never dropped here");
    assert!(!kinds(&request).contains(&"drop"), "{request:#}");
    let reply = followed.reply_to(&request)?;
    let SentKind::IcmpError {
        from,
        icmp_type,
        code,
        quoted_dst,
        ..
    } = far_sent(&far, |s| matches!(s, SentKind::IcmpError { .. }))?
    else {
        unreachable!()
    };
    assert_eq!((from, icmp_type, code), (far.router(), 3, 1));
    assert_eq!(quoted_dst, far.far_host());
    let answer = &reply["answer"];
    assert_from_beyond(answer, far.name(), "tap", far.router());
    assert_eq!(
        (answer["kind"].as_str(), answer["code"].as_u64()),
        (Some("error"), Some(1))
    );
    let text = answer["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("a router beyond {}", far.name())),
        "{text}"
    );
    assert!(!text.contains("ARP"), "no invented ARP failure: {text}");
    Ok(())
}

#[test]
fn an_echo_reply_from_beyond_a_tun_is_read_without_an_ethernet_header() -> Result<()> {
    let (_upstream, container) = container()?;
    let far = FarSide::new(FarLink::Tun, FarAnswer::Echo)?;
    let followed = probe_far_host(&container, &far)?;
    ensure!(followed.code() == Some(0), "answered: {}", followed.run);
    let (request, _) = followed.only_request()?;
    let xmit = hop(&request, "xmit");
    let outcome = &request["outcome"];
    assert_eq!(outcome["device_kind"], "tun", "{outcome}");
    assert!(
        outcome.get("next_hop_mac").is_none(),
        "a tun has no MAC addresses: {outcome}"
    );
    assert_eq!(xmit["device"], far.name());
    assert_eq!(ip(&outcome["next_hop"]), far.router());
    let reply = followed.reply_to(&request)?;
    assert_from_beyond(&reply["answer"], far.name(), "tun", far.far_host());
    Ok(())
}

#[test]
fn time_exceeded_from_beyond_is_that_routers() -> Result<()> {
    let (_upstream, container) = container()?;
    let far = FarSide::new(FarLink::Tap, FarAnswer::TimeExceeded)?;
    let followed = probe_far_host(&container, &far)?;
    let (request, _) = followed.only_request()?;
    let reply = followed.reply_to(&request)?;
    far_sent(&far, |s| {
        matches!(s, SentKind::IcmpError { icmp_type: 11, .. })
    })?;
    let answer = &reply["answer"];
    assert_from_beyond(answer, far.name(), "tap", far.router());
    let text = answer["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("ran out at {}", far.router())),
        "{text}"
    );
    Ok(())
}

#[test]
fn no_route_at_the_source_is_the_kernels_refusal_with_its_routes() -> Result<()> {
    // Lecture demo 1: a namespace with only its /24 on a veth, no default route.
    let ns = NetnsPair::new()?;
    let upstream = Upstream::new()?;
    let truth = route_get(Some(&ns.ns_path().to_string_lossy()), upstream.ip())?;
    assert_eq!(
        truth.as_str(),
        Some("RTNETLINK answers: Network is unreachable"),
        "ground truth"
    );
    let followed = follow_unanswered(&[ns.name(), &upstream.ip().to_string(), "--probe", "icmp"])?;
    let (request, route) = followed.only_request()?;
    let outcome = &request["outcome"];
    assert_eq!(outcome["kind"], "not_sent", "{outcome:#}");
    assert_eq!(outcome["namespace"], format!("netns {}", ns.name()));
    let why = &outcome["why"];
    assert_eq!(
        (why["cause"].as_str(), why["result"].as_str()),
        (Some("no_route"), Some("no_match"))
    );
    assert_eq!(why["table"], 254);
    assert_eq!(why["default_route"], false);
    let shown = ns.exec_ok(["ip", "-4", "route", "show", "table", "main"])?;
    let routes: Vec<String> = shown
        .lines()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            format!("{} dev {}", words[0], words[2])
        })
        .collect();
    assert_eq!(
        why["routes"],
        serde_json::json!(routes),
        "as `ip route show` has them"
    );
    assert_eq!(route["kind"], "route");
    assert!(
        !followed.run.stderr.contains("warning"),
        "the story says it: {}",
        followed.run
    );
    Ok(())
}

#[test]
fn a_network_without_masquerading_leaves_privately_and_gets_no_route_back() -> Result<()> {
    let network = DockerNetwork::without_masquerade("10.67.3.0/24")?;
    let upstream = Upstream::without_route_back()?;
    let container = Container::builder()
        .network(network.name())
        .dns(upstream.ip())
        .start()?;
    let truth = route_get(Some(&upstream.ns_path().to_string_lossy()), container.ip())?;
    assert_eq!(
        truth.as_str(),
        Some("RTNETLINK answers: Network is unreachable"),
        "ground truth: the upstream has no route back"
    );
    let followed = follow_unanswered(&[
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
        "--timeout",
        "2",
    ])?;
    let (request, _) = followed.only_request()?;
    assert!(!kinds(&request).contains(&"nat"), "no source NAT");
    let postrouting = hops(&request)
        .iter()
        .find(|h| h["hook"] == "POSTROUTING" && h["namespace"] == "host")
        .context("the host's POSTROUTING")?;
    assert_eq!(
        postrouting["not_masqueraded_by"],
        network.name(),
        "{postrouting:#}"
    );
    let outcome = &request["outcome"];
    assert_eq!(outcome["kind"], "taken_in", "{outcome:#}");
    assert_eq!(outcome["namespace"], format!("netns {}", upstream.name()));
    assert_eq!(ip(&outcome["no_route_back"]["to"]), container.ip());
    assert_eq!(outcome["no_route_back"]["result"], "no_match");
    let no_reply = followed.no_reply_to(&request)?;
    assert!(
        no_reply["text"]
            .as_str()
            .unwrap()
            .contains(&format!("no route back to {}", container.ip())),
        "{no_reply}"
    );
    Ok(())
}

#[test]
fn an_unreachable_route_on_the_host_drops_and_answers_host_unreachable() -> Result<()> {
    let (_upstream, container) = container()?;
    let route = HostRoute::refusing("unreachable")?;
    let truth = route_get(None, route.destination())?;
    assert!(
        truth
            .as_str()
            .is_some_and(|e| e.contains("No route to host")),
        "ground truth: {truth}"
    );
    let followed = follow_unanswered(&[
        container.name(),
        &route.destination().to_string(),
        "--probe",
        "icmp",
    ])?;
    let (request, drop) = followed.only_request()?;
    assert_eq!(drop["kind"], "drop");
    assert_eq!(drop["namespace"], "host");
    let decision = hop(&request, "route");
    assert_eq!(
        (decision["namespace"].as_str(), decision["result"].as_str()),
        (Some("host"), Some("unreachable")),
        "{request:#}"
    );
    assert!(
        drop["hint"].as_str().unwrap().contains("type unreachable"),
        "{drop}"
    );
    let reply = followed.reply_to(&request)?;
    let answer = &reply["answer"];
    assert_eq!(
        (answer["icmp_type"].as_u64(), answer["code"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(answer["origin"]["kind"], "kernel");
    assert_eq!(answer["origin"]["namespace"], "host");
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("an unreachable route for it"),
        "{answer}"
    );
    Ok(())
}

#[test]
fn a_blackhole_route_on_the_host_drops_without_a_word() -> Result<()> {
    let (_upstream, container) = container()?;
    let route = HostRoute::refusing("blackhole")?;
    let followed = follow_unanswered(&[
        container.name(),
        &route.destination().to_string(),
        "--probe",
        "icmp",
        "--timeout",
        "2",
    ])?;
    let (request, drop) = followed.only_request()?;
    assert_eq!(drop["kind"], "drop");
    assert_eq!(hop(&request, "route")["result"], "blackhole");
    assert!(
        drop["hint"].as_str().unwrap().contains("blackhole"),
        "{drop}"
    );
    assert!(followed.reply_to(&request).is_err(), "nothing answers");
    followed.no_reply_to(&request)?;
    Ok(())
}

#[test]
fn a_smaller_link_asks_for_fragmentation_and_the_learned_path_mtu_refuses_the_next_send()
-> Result<()> {
    let (upstream, container) = container()?;
    upstream.set_link_mtu(1280)?;
    let followed = follow_unanswered(&[
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
        "--size",
        "1400",
        "--count",
        "2",
        "--timeout",
        "2",
    ])?;
    let requests: Vec<&Value> = followed
        .journeys()
        .into_iter()
        .filter(|j| j["direction"] == "request")
        .collect();
    ensure!(requests.len() == 2, "two probes: {:#?}", followed.records);
    let (first, second) = (requests[0], requests[1]);
    assert_eq!(first["outcome"]["reason"], "PKT_TOO_BIG", "{first:#}");
    assert_eq!(first["outcome"]["namespace"], "host");
    let reply = followed.reply_to(first)?;
    let answer = &reply["answer"];
    assert_eq!(
        (answer["icmp_type"].as_u64(), answer["code"].as_u64()),
        (Some(3), Some(4))
    );
    assert_eq!(answer["next_hop_mtu"], 1280);
    assert_eq!(answer["origin"]["namespace"], "host");
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains(&format!("through {} (MTU 1280)", upstream.host_veth())),
        "{answer}"
    );
    // The container learned the path MTU: the kernel's own route cache says so.
    let truth = route_get(Some(&container.netns_path()), upstream.ip())?;
    assert_eq!(truth["metrics"][0]["mtu"], 1280, "ground truth: {truth}");
    let outcome = &second["outcome"];
    assert_eq!(outcome["kind"], "not_sent", "{second:#}");
    assert_eq!(outcome["why"]["cause"], "too_big");
    assert_eq!(outcome["why"]["path_mtu"], 1280);
    assert_eq!(outcome["why"]["length"], 1428, "20 + 8 + 1400 bytes");
    Ok(())
}

#[test]
fn a_ttl_of_one_runs_out_at_the_first_router() -> Result<()> {
    let (upstream, container) = container()?;
    let followed = follow_unanswered(&[
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
        "--ttl",
        "1",
    ])?;
    let (request, drop) = followed.only_request()?;
    assert_eq!(
        (drop["reason"].as_str(), drop["namespace"].as_str()),
        (Some("IP_INHDR"), Some("host"))
    );
    assert_eq!(request["outcome"]["location"]["role"], "forwarding");
    let reply = followed.reply_to(&request)?;
    let answer = &reply["answer"];
    assert_eq!(
        (answer["icmp_type"].as_u64(), answer["code"].as_u64()),
        (Some(11), Some(0))
    );
    let gateway = container.exec_ok(["ip", "route"])?;
    let gateway: Ipv4Addr = gateway
        .split_whitespace()
        .skip_while(|w| *w != "via")
        .nth(1)
        .context("the container's default gateway")?
        .parse()?;
    assert_eq!(
        ip(&answer["from"]),
        gateway,
        "the host, on the container's link"
    );
    let text = answer["text"].as_str().unwrap();
    assert!(text.contains("the 1st router"), "{text}");
    assert!(text.contains("sent with TTL 1"), "{text}");
    Ok(())
}

#[test]
fn a_routing_loop_between_two_namespaces_is_folded_and_ends_in_time_exceeded() -> Result<()> {
    let (upstream, container) = container()?;
    let inner = InnerNetns::behind(&upstream, "10.98.7.1/30", "10.98.7.2/30")?;
    // The host sends the far block to the upstream, which sends it on to the
    // inner namespace, which sends it back: a loop.
    let route = HostRoute::via(upstream.ip())?;
    let far = route.destination();
    let far_block = route.block();
    upstream.exec_ok([
        "ip",
        "route",
        "add",
        far_block,
        "via",
        &inner.ip().to_string(),
    ])?;
    inner.exec_ok([
        "ip",
        "route",
        "add",
        "default",
        "via",
        &inner.near_ip().to_string(),
    ])?;
    let a = route_get(Some(&upstream.ns_path().to_string_lossy()), far)?;
    let b = route_get(Some(&format!("/run/netns/{}", inner.name())), far)?;
    assert_eq!(ip(&a["gateway"]), inner.ip(), "ground truth: {a}");
    assert_eq!(ip(&b["gateway"]), inner.near_ip(), "ground truth: {b}");
    let followed = follow_unanswered(&[container.name(), &far.to_string(), "--probe", "icmp"])?;
    let (request, drop) = followed.only_request()?;
    let folded = hop(&request, "loop");
    let between: Vec<&str> = folded["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(
        between,
        [
            format!("netns {}", upstream.name()),
            format!("netns {}", inner.name())
        ],
        "{folded:#}"
    );
    assert!(folded["rounds"].as_u64().unwrap() > 20, "{folded}");
    assert!(
        hops(&request).len() < 40,
        "the rounds are one hop, not {} hops",
        hops(&request).len()
    );
    assert_eq!(drop["reason"], "IP_INHDR");
    let reply = followed.reply_to(&request)?;
    let answer = &reply["answer"];
    assert_eq!(answer["icmp_type"], 11);
    let text = answer["text"].as_str().unwrap();
    assert!(text.contains("routing loop between"), "{text}");
    assert!(text.contains("the 64th router"), "{text}");
    Ok(())
}
