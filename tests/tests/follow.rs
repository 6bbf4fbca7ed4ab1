//! `pkttrace follow` on a real lab: real containers on Docker's bridge, a
//! simulated upstream host in its own namespace, Docker's own NAT rules, the
//! kernel's eBPF. Each test asserts what pkttrace printed against the real
//! addresses, names and settings of the lab it built.

use std::{net::Ipv4Addr, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Container, Followed, IptablesRule, NetnsPair, Pkttrace, Sysctl, Upstream, follow_json,
    follow_unanswered, hop, hops, ip, kinds, netfilter_hooks, nothing_left_attached, pkttrace,
    pkttrace_bin, programs_loaded_at_least, trace_tables,
};
use serde_json::Value;

/// Runs `pkttrace follow ... --json` where the probe gets its answer (exit
/// 0) and returns its IP journeys (ARP exchanges, when a cache was cold,
/// are left out: see `follow_all`).
fn follow(args: &[&str]) -> Result<Vec<Value>> {
    let followed = follow_json(args)?;
    ensure!(followed.run.success(), "pkttrace failed: {}", followed.run);
    Ok(followed.journeys().into_iter().cloned().collect())
}

fn follow_all(args: &[&str]) -> Result<Vec<Value>> {
    let followed = follow_json(args)?;
    ensure!(followed.run.success(), "pkttrace failed: {}", followed.run);
    Ok(followed.all_journeys().into_iter().cloned().collect())
}

struct Lab {
    upstream: Upstream,
    container: Container,
}

fn lab() -> Result<Lab> {
    let upstream = Upstream::new()?;
    let container = Container::builder().dns(upstream.ip()).start()?;
    Ok(Lab {
        upstream,
        container,
    })
}

#[test]
fn icmp_from_a_container_through_masquerade_and_back() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    let journeys = follow(&[
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
    ])?;
    ensure!(
        journeys.len() == 2,
        "a request and its reply: {journeys:#?}"
    );
    let (request, reply) = (&journeys[0], &journeys[1]);

    assert_eq!(request["direction"], "request");
    assert_eq!(ip(&request["tuple"]["src"]), container.ip());
    assert_eq!(kinds(request)[..3], ["send", "veth", "bridge"]);
    let send = hop(request, "send");
    assert_eq!(send["namespace"], container.name());
    assert_eq!(send["device"], "eth0");
    assert_eq!(send["process"], "pkttrace", "the probe's own send: {send}");
    assert_eq!(
        ip(&send["route"]["gateway"]),
        Ipv4Addr::new(172, 17, 0, 1),
        "docker0 is the container's gateway"
    );
    let veth = hop(request, "veth");
    assert_eq!(
        (veth["namespace"].as_str(), veth["peer_namespace"].as_str()),
        (Some("host"), Some(container.name()))
    );
    assert_eq!(veth["device"], container.host_peer("eth0")?.as_str());
    let bridge = hop(request, "bridge");
    assert_eq!(
        (bridge["bridge"].as_str(), bridge["docker_network"].as_str()),
        (Some("docker0"), Some("bridge"))
    );
    assert_eq!(bridge["port"], container.host_peer("eth0")?.as_str());
    assert_eq!(bridge["decision"]["kind"], "handed_up", "{bridge}");
    assert_eq!(bridge["decision"]["bridge_mac"], true, "{bridge}");
    assert_eq!(hop(request, "route")["out_device"], upstream.host_veth());
    assert_eq!(hop(request, "forward")["ip_forward"], true);
    assert_eq!(
        netfilter_hooks(request),
        ["PREROUTING", "FORWARD", "POSTROUTING"]
    );
    let nat = hop(request, "nat");
    assert_eq!(nat["hook"], "POSTROUTING");
    assert_eq!(ip(&nat["before"]["src"]), container.ip());
    assert_eq!(
        ip(&nat["after"]["src"]),
        upstream.host_ip(),
        "MASQUERADE uses the host's address on the way out"
    );
    assert_eq!(ip(&nat["after"]["dst"]), upstream.ip());

    assert_eq!(reply["direction"], "reply");
    assert_eq!(reply["reply_to"], request["journey"]);
    assert_eq!(ip(&reply["tuple"]["dst"]), upstream.host_ip());
    // The upstream's kernel answers in a softirq, whatever task it interrupted.
    let reply_send = hop(reply, "send");
    ensure!(
        reply_send.get("process").is_none(),
        "no process sends the echo reply: {reply_send}"
    );
    let de_nat = hop(reply, "nat");
    assert_eq!(de_nat["hook"], "PREROUTING");
    assert_eq!(
        ip(&de_nat["after"]["dst"]),
        container.ip(),
        "conntrack undoes the NAT for the reply"
    );
    let decision = &hop(reply, "bridge")["decision"];
    assert_eq!(
        (decision["kind"].as_str(), decision["port"].as_str()),
        (
            Some("switched"),
            Some(container.host_peer("eth0")?.as_str())
        )
    );
    let deliver = hops(reply).last().unwrap();
    assert_eq!(deliver["kind"], "deliver");
    assert_eq!(deliver["namespace"], container.name());
    assert_eq!(
        deliver["process"], "pkttrace",
        "the probe's own socket read the reply"
    );
    Ok(())
}

#[test]
fn tcp_from_a_container_to_an_upstream_web_server() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    upstream.serve_http(80)?;
    let dest = format!("{}:80", upstream.ip());
    let journeys = follow(&[container.name(), &dest, "--probe", "tcp"])?;
    ensure!(journeys.len() == 2, "SYN and SYN+ACK: {journeys:#?}");
    let (syn, syn_ack) = (&journeys[0], &journeys[1]);
    assert_eq!(syn["what"], "TCP SYN");
    assert_eq!(syn["tuple"]["dport"], 80);
    let nat = hop(syn, "nat");
    assert_eq!(ip(&nat["before"]["src"]), container.ip());
    assert_eq!(ip(&nat["after"]["src"]), upstream.host_ip());
    assert_eq!(nat["after"]["dport"], 80);
    assert_eq!(syn_ack["what"], "TCP SYN+ACK");
    assert_eq!(syn_ack["reply_to"], syn["journey"]);
    assert_eq!(ip(&hop(syn_ack, "nat")["after"]["dst"]), container.ip());
    assert_eq!(
        syn_ack["outcome"]["namespace"],
        container.name(),
        "the SYN+ACK reaches the container: {}",
        syn_ack["outcome"]
    );
    assert_eq!(
        syn_ack["answer"]["kind"], "reply",
        "the answer a SYN asks for"
    );
    Ok(())
}

#[test]
fn forwarding_disabled_drops_with_the_kernels_reason_and_names_the_sysctl() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    let _forwarding = Sysctl::set("net.ipv4.conf.all.forwarding", "0")?;
    let followed = follow_unanswered(&[
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
    ])?;
    let journeys = followed.journeys();
    ensure!(journeys.len() == 1, "the request only: {journeys:#?}");
    let drop = hops(journeys[0]).last().unwrap();
    assert_eq!(drop["kind"], "drop");
    assert_eq!(drop["namespace"], "host");
    assert_eq!(
        drop["reason"], "IP_INADDRERRORS",
        "the name of enum skb_drop_reason in this kernel's BTF"
    );
    assert!(
        drop["location"]["name"]
            .as_str()
            .unwrap()
            .starts_with("ip_error"),
        "{drop}"
    );
    assert_eq!(drop["location"]["role"], "route_error", "{drop}");
    // Setting all.forwarding sets every device's; the kernel checks the one
    // the packet came in on: the bridge.
    let hint = drop["hint"].as_str().unwrap();
    assert!(
        hint.contains("net.ipv4.conf.docker0.forwarding = 0"),
        "{hint}"
    );
    assert!(!kinds(journeys[0]).contains(&"forward"));
    assert_eq!(journeys[0]["outcome"]["kind"], "dropped");
    let no_reply = followed.no_replies();
    ensure!(no_reply.len() == 1, "{:#?}", followed.records);
    assert_eq!(no_reply[0]["request"], journeys[0]["journey"]);
    assert_eq!(no_reply[0]["last_seen"]["reason"], "IP_INADDRERRORS");
    Ok(())
}

#[test]
fn a_drop_rule_in_docker_user_is_a_netfilter_drop_in_forward() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    let (from, to) = (container.ip().to_string(), upstream.ip().to_string());
    let _rule = IptablesRule::insert("DOCKER-USER", ["-s", &from, "-d", &to, "-j", "DROP"])?;
    let followed = follow_unanswered(&[container.name(), &to, "--probe", "icmp"])?;
    let journeys = followed.journeys();
    ensure!(journeys.len() == 1, "the request only: {journeys:#?}");
    let request = journeys[0];
    assert_eq!(
        netfilter_hooks(request),
        ["PREROUTING", "FORWARD"],
        "never reached POSTROUTING"
    );
    let drop = hops(request).last().unwrap();
    assert_eq!(
        (drop["kind"].as_str(), drop["reason"].as_str()),
        (Some("drop"), Some("NETFILTER_DROP"))
    );
    assert_eq!(drop["hook"], "FORWARD");
    // The kernel's own trace names the rule; its handle is the one nft lists.
    let rule = &drop["rule"];
    assert_eq!(
        (rule["table"].as_str(), rule["chain"].as_str()),
        (Some("ip filter"), Some("DOCKER-USER"))
    );
    assert_eq!(
        rule["handle"].as_u64(),
        Some(handle_of_rule_with(&from, "DOCKER-USER")?),
        "{rule}"
    );
    assert!(
        rule["text"].as_str().unwrap().contains(&from) && rule["action"] == "drop",
        "our own rule: {rule}"
    );
    assert_eq!(rule["through"][0], "FORWARD");
    assert!(
        !kinds(request).contains(&"nat"),
        "dropped before MASQUERADE"
    );
    Ok(())
}

/// The handle `nft -a` lists for the rule of `ip filter <chain>` whose text
/// holds `needle`.
fn handle_of_rule_with(needle: &str, chain: &str) -> Result<u64> {
    let listing = String::from_utf8(
        Command::new("nft")
            .args(["-a", "list", "chain", "ip", "filter", chain])
            .output()?
            .stdout,
    )?;
    listing
        .lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.rsplit_once("# handle "))
        .and_then(|(_, handle)| handle.trim().parse().ok())
        .with_context(|| format!("no rule with {needle} in chain {chain}:\n{listing}"))
}

#[test]
fn a_plain_network_namespace_joined_to_the_host_by_a_veth() -> Result<()> {
    let pair = NetnsPair::new()?;
    let journeys = follow(&[pair.name(), &pair.host_ip().to_string(), "--probe", "icmp"])?;
    ensure!(journeys.len() == 2, "{journeys:#?}");
    let (request, reply) = (&journeys[0], &journeys[1]);
    let label = format!("netns {}", pair.name());
    let send = hop(request, "send");
    assert_eq!(send["namespace"], label.as_str());
    // A fresh namespace asks ARP for the host first; the kernel's check of
    // that neighbour's address type (a lookup in table local) is not the
    // route the sender chose, which `ip route get` shows in table main.
    assert_eq!(send["waited_for_arp"], true, "{send:#}");
    assert_eq!(
        (
            send["route"]["table"].as_u64(),
            send["route"]["out_device"].as_str()
        ),
        (Some(254), Some(pair.veth())),
        "{send:#}"
    );
    let veth = hop(request, "veth");
    assert_eq!(
        (veth["device"].as_str(), veth["peer_device"].as_str()),
        (Some(pair.host_veth()), Some(pair.veth()))
    );
    let route = hop(request, "route");
    assert_eq!(
        (route["namespace"].as_str(), route["table"].as_u64()),
        (Some("host"), Some(255))
    );
    assert!(
        !kinds(request).contains(&"nat") && !kinds(request).contains(&"bridge"),
        "no bridge, no NAT: {request}"
    );
    assert_eq!(hop(reply, "veth")["namespace"], label.as_str());
    let deliver = hops(reply).last().unwrap();
    assert_eq!(
        (deliver["kind"].as_str(), deliver["namespace"].as_str()),
        (Some("deliver"), Some(label.as_str()))
    );
    Ok(())
}

/// A datagram read on another CPU than the one that sent it goes back to the
/// sender's CPU, which frees it when it next runs its network softirq
/// (`skb_defer_free_flush`), in whatever task it interrupted: often just
/// before the read is reported or with the next datagram. That free is no
/// hop, and every datagram is told delivered to its reader.
#[test]
fn datagrams_read_on_another_cpu_are_told_delivered_to_their_reader() -> Result<()> {
    let cpus = std::thread::available_parallelism()?.get();
    if cpus < 2 {
        eprintln!("skipped: the reader and the sender need a CPU each ({cpus} here)");
        return Ok(());
    }
    let pair = NetnsPair::new()?;
    let (address, port) = (pair.host_ip(), 5300);
    let reader = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{address}', {port}))\nwhile True: s.recv(2048)"
    );
    let _reader = serve_in_host(
        &["taskset", "-c", "1", "python3", "-c", &reader],
        "-Huln",
        address,
        port,
    )?;
    let dest = format!("{address}:{port}");
    let dir = tempfile::tempdir()?;
    let events = dir.path().join("events.jsonl");
    let tracer = Pkttrace::spawn_attached([
        "follow".as_ref(),
        pair.name().as_ref(),
        dest.as_ref(),
        "--timeout".as_ref(),
        "3".as_ref(),
        "--json".as_ref(),
        "--save-events".as_ref(),
        events.as_os_str(),
    ])?;
    // Once kallsyms is read the programs look only at the deferred frees of
    // skbs they told of: these datagrams' must still be seen.
    std::thread::sleep(Duration::from_millis(500));
    // One process, one source port: 20 datagrams, 20 ms apart, from CPU 0
    // (the other way round the kernel frees them without a trace).
    let sender = format!(
        "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for i in range(20):\n    s.sendto(b'datagram %d' % i, ('{address}', {port}))\n    time.sleep(0.02)"
    );
    pair.exec_ok(["taskset", "-c", "0", "python3", "-c", &sender])?;
    let followed = Followed::read(tracer.wait(Duration::from_secs(30))?)?;
    let datagrams = followed.journeys();
    ensure!(
        datagrams.len() == 20,
        "every datagram told once: {:#?}\n{}",
        datagrams,
        followed.run.stderr
    );
    // The test is only worth something if the kernel did defer the frees.
    let deferred = std::fs::read_to_string(&events)?
        .lines()
        .filter(|line| line.contains("\"location\":{\"name\":\"skb_defer_free_flush"))
        .count();
    // Linux 6.18 counts a deferral before checking `skb_defer_max` and
    // resets the count only when it frees a non-empty list: after a flood
    // the count can stay stuck above the maximum, and nothing is deferred
    // again. Raising the maximum for one cross-CPU datagram unsticks it.
    ensure!(
        deferred > 0,
        "the reader's CPU did not hand the skbs back to the sender's (a stuck per-CPU defer count? raise net.core.skb_defer_max for one cross-CPU datagram, then restore it)"
    );
    for datagram in datagrams {
        let outcome = &datagram["outcome"];
        ensure!(
            outcome["kind"] == "delivered" && outcome["process"] == "python3",
            "delivered to the reader: {datagram:#}"
        );
        ensure!(
            !datagram.to_string().contains("skb_defer_free_flush"),
            "the deferred free is no hop: {datagram:#}"
        );
    }
    Ok(())
}

/// Following a TCP connection without a probe: a bare ACK asks for no
/// answer, and one acknowledgement answers every segment it covers, so
/// nothing the receiver acknowledged is told unanswered.
#[test]
fn a_followed_tcp_stream_has_no_unanswered_segments() -> Result<()> {
    let pair = NetnsPair::new()?;
    let (address, port) = (pair.host_ip(), 5400);
    let server = format!(
        "import socket\ns = socket.socket()\ns.bind(('{address}', {port}))\ns.listen()\n\
         c, _ = s.accept()\nwhile c.recv(65536): pass"
    );
    let _server = serve_in_host(&["python3", "-c", &server], "-Htln", address, port)?;
    let dest = format!("{address}:{port}");
    let tracer =
        Pkttrace::spawn_attached(["follow", pair.name(), &dest, "--timeout", "3", "--json"])?;
    // Back-to-back small segments: the receiver acknowledges several at once.
    let client = format!(
        "import socket, time\ns = socket.create_connection(('{address}', {port}))\n\
         s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n\
         for i in range(40): s.send(b'y' * 1000)\ntime.sleep(0.3)\ns.close()"
    );
    pair.exec_ok(["python3", "-c", &client])?;
    let followed = Followed::read(tracer.wait(Duration::from_secs(30))?)?;
    let told = followed.journeys();
    ensure!(
        told.iter().any(|j| j["what"] == "TCP SYN")
            && told.iter().filter(|j| j["direction"] == "reply").count() >= 2,
        "the handshake and the acknowledgements are told: {told:#?}"
    );
    ensure!(
        followed.no_replies().is_empty(),
        "nothing acknowledged is told unanswered: {:#?}",
        followed.no_replies()
    );
    Ok(())
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_code_2() -> Result<()> {
    let cases: [(&[&str], &str); 4] = [
        (
            &["follow", "no-such-container-xyz", "198.51.100.1"],
            "no container or network namespace named 'no-such-container-xyz'",
        ),
        (
            &["follow", "host", "not-an-address"],
            "cannot use 'not-an-address' as a destination",
        ),
        (
            &["follow", "host", "198.51.100.1:http"],
            "is not a port number",
        ),
        (
            &["follow", "host", "198.51.100.1", "--probe", "tcp"],
            "--probe tcp needs a port",
        ),
    ];
    for (args, message) in cases {
        let run = pkttrace(args)?;
        assert_eq!(run.status.code(), Some(2), "{run}");
        assert_eq!(run.stderr.lines().count(), 1, "one line: {run}");
        assert!(run.stderr.contains(message), "{run}");
    }
    let as_nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(integration_tests::pkttrace_bin())
        .args(["follow", "host", "198.51.100.1"])
        .output()?;
    assert_eq!(as_nobody.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&as_nobody.stderr).contains("must run as root"));
    assert!(nothing_left_attached()?, "nothing left attached");
    Ok(())
}

#[test]
fn even_sigkill_leaves_nothing_attached() -> Result<()> {
    let container = Container::new()?;
    let container_netns = container.netns_path();
    // A rule, so the container has a table and rule tracing reaches in.
    let _rule = IptablesRule::insert_in_netns(
        Path::new(&container_netns),
        "filter",
        "OUTPUT",
        ["-d", "198.51.100.1", "-j", "ACCEPT"],
    )?;
    let tracer = Pkttrace::spawn_attached(["follow", container.name(), "198.51.100.1"])?;
    let attached = programs_loaded_at_least(1)?;
    ensure!(attached, "pkttrace never attached its programs");
    // Its rule tracing tables, in the host and in the container.
    ensure!(
        !trace_tables(None)?.is_empty() && !trace_tables(Some(&container_netns))?.is_empty(),
        "pkttrace never set up rule tracing in both namespaces"
    );
    tracer.kill()?;
    ensure!(
        nothing_left_attached()?,
        "programs still loaded after SIGKILL"
    );
    // The kernel deletes a table owned by a socket when the socket closes.
    ensure!(
        trace_tables(None)?.is_empty() && trace_tables(Some(&container_netns))?.is_empty(),
        "trace tables left after SIGKILL"
    );
    Ok(())
}

/// The kernel wakes pkttrace only when a quarter of its ring waits, and
/// pkttrace reads the ring every 50 ms: a datagram answered just before
/// Ctrl-C is still in the ring then, and is read and told, not left there.
/// It stays inside one namespace without nf_tables tables, so no rule trace
/// message wakes pkttrace either.
#[test]
fn a_datagram_answered_just_before_ctrl_c_is_told() -> Result<()> {
    let pair = NetnsPair::new()?;
    let own = pair.ip().to_string();
    let tracer = Pkttrace::spawn_attached(["follow", pair.name(), &own, "--json"])?;
    // To a closed port of its own: port unreachable comes back at once.
    let send = format!(
        "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{own}', 9))"
    );
    pair.exec_ok(["python3", "-c", &send])?;
    let followed = Followed::read(tracer.stop()?)?;
    let directions: Vec<&str> = followed
        .journeys()
        .iter()
        .filter_map(|j| j["direction"].as_str())
        .collect();
    assert_eq!(directions, ["request", "reply"], "{}", followed.run);
    Ok(())
}

#[test]
fn ctrl_c_ends_a_trace_cleanly() -> Result<()> {
    let tracer = Pkttrace::spawn_attached(["follow", "host", "198.51.100.1"])?;
    let run = tracer.stop()?;
    assert!(
        run.stderr
            .contains("saw no packet from host to 198.51.100.1"),
        "{run}"
    );
    assert_eq!(
        run.status.code(),
        Some(1),
        "nothing seen is not success: {run}"
    );
    assert!(nothing_left_attached()?, "nothing left attached");
    Ok(())
}

#[test]
fn without_docker_netns_sources_still_work_and_containers_get_a_clear_error() -> Result<()> {
    let pair = NetnsPair::new()?;
    let without_docker = |args: &[&str]| {
        Command::new(integration_tests::pkttrace_bin())
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .args(args)
            .output()
    };
    let host_ip = pair.host_ip().to_string();
    let traced = without_docker(&["follow", pair.name(), &host_ip, "--probe", "icmp", "--json"])?;
    let stderr = String::from_utf8_lossy(&traced.stderr);
    assert!(traced.status.success(), "{stderr}");
    assert!(stderr.contains("Docker is not reachable"), "{stderr}");
    let ip_journeys = String::from_utf8_lossy(&traced.stdout)
        .lines()
        .filter(|l| !l.contains(r#""protocol":"arp""#))
        .count();
    assert_eq!(ip_journeys, 2, "request and reply");

    let refused = without_docker(&["follow", "server-1", "198.51.100.1"])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("Docker is not reachable") && stderr.contains("`host` still work"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn waits_for_traffic_and_names_the_real_sender() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    let dest = upstream.ip().to_string();
    let tracer =
        Pkttrace::spawn_attached(["follow", container.name(), &dest, "--count", "1", "--json"])?;
    container.exec_ok(["ping", "-c", "1", "-W", "3", &dest])?;
    let run = tracer.wait(Duration::from_secs(20))?;
    ensure!(run.success() && !run.timed_out, "{run}");
    let journeys: Vec<Value> = run
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let journeys: Vec<Value> = journeys
        .into_iter()
        .filter(|j| j["tuple"]["protocol"] != "arp")
        .collect();
    ensure!(journeys.len() == 2, "{run}");
    let send = hop(&journeys[0], "send");
    assert_eq!(
        send["process"], "ping",
        "the lecturer's ping sent it: {send}"
    );
    let ping_pid = send["pid"].as_u64().unwrap();
    let deliver = hops(&journeys[1]).last().unwrap();
    assert_eq!(
        (deliver["process"].as_str(), deliver["pid"].as_u64()),
        (Some("ping"), Some(ping_pid))
    );
    Ok(())
}

#[test]
fn container_to_container_on_one_network_is_switched_not_routed() -> Result<()> {
    let network = integration_tests::DockerNetwork::new()?;
    let server = Container::builder().network(network.name()).start()?;
    let client = Container::builder().network(network.name()).start()?;
    let journeys = follow(&[client.name(), server.name(), "--probe", "icmp"])?;
    ensure!(journeys.len() == 2, "{journeys:#?}");
    let (request, reply) = (&journeys[0], &journeys[1]);
    assert_eq!(
        ip(&request["tuple"]["dst"]),
        server.ip(),
        "DEST named by container"
    );
    for journey in [request, reply] {
        let kinds = kinds(journey);
        for absent in ["nat", "forward", "route"] {
            assert!(
                !kinds.contains(&absent),
                "no {absent} between two containers on one bridge: {kinds:?}"
            );
        }
        // The containers' own chains (Docker's embedded DNS) are theirs; the
        // host's hooks run only because the bridge calls them.
        for hook in hops(journey)
            .iter()
            .filter(|h| h["kind"] == "netfilter" && h["namespace"] == "host")
        {
            assert!(
                hook["text"].as_str().unwrap().contains("run by the bridge"),
                "{hook}"
            );
        }
    }
    let server_mac = server
        .exec_ok(["cat", "/sys/class/net/eth0/address"])?
        .trim()
        .to_string();
    let bridge = hop(request, "bridge");
    assert_eq!(
        (bridge["bridge"].as_str(), bridge["docker_network"].as_str()),
        (Some(network.bridge()), Some(network.name()))
    );
    assert_eq!(bridge["port"], client.host_peer("eth0")?.as_str());
    let decision = &bridge["decision"];
    assert_eq!(
        (
            decision["kind"].as_str(),
            decision["port"].as_str(),
            decision["mac_dst"].as_str(),
            decision["fdb"].as_str()
        ),
        (
            Some("switched"),
            Some(server.host_peer("eth0")?.as_str()),
            Some(server_mac.as_str()),
            Some("on_that_port")
        ),
        "{bridge}"
    );
    assert!(
        bridge["text"]
            .as_str()
            .unwrap()
            .contains("no routing and no NAT")
    );
    assert_eq!(request["outcome"]["namespace"], server.name());
    assert_eq!(hops(reply).last().unwrap()["kind"], "deliver");
    assert_eq!(hops(reply).last().unwrap()["namespace"], client.name());
    Ok(())
}

/// A frame whose destination MAC the bridge's forwarding database no
/// longer has is flooded out of every other port; the member it is not for
/// discards its copy, and the story follows the copy that arrived.
#[test]
fn a_frame_for_a_mac_the_bridge_forgot_is_flooded_and_the_other_copy_discarded() -> Result<()> {
    let network = integration_tests::DockerNetwork::new()?;
    let server = Container::builder().network(network.name()).start()?;
    let client = Container::builder().network(network.name()).start()?;
    let bystander = Container::builder().network(network.name()).start()?;
    // Warm the client's neighbour cache, then make the bridge forget the server.
    client.exec_ok(["ping", "-c", "1", "-W", "2", &server.ip().to_string()])?;
    let server_mac = server
        .exec_ok(["cat", "/sys/class/net/eth0/address"])?
        .trim()
        .to_string();
    let server_port = server.host_peer("eth0")?;
    let forget = Command::new("bridge")
        .args(["fdb", "del", &server_mac, "dev", &server_port, "master"])
        .status()?;
    ensure!(forget.success(), "bridge fdb del {server_mac}");
    let fdb = String::from_utf8(
        Command::new("bridge")
            .args(["fdb", "show", "br", network.bridge()])
            .output()?
            .stdout,
    )?;
    ensure!(!fdb.contains(&server_mac), "ground truth: forgotten: {fdb}");
    let journeys = follow(&[client.name(), server.name(), "--probe", "icmp"])?;
    let request = &journeys[0];
    let decision = &hop(request, "bridge")["decision"];
    assert_eq!(decision["kind"], "flooded", "{decision}");
    let mut ports: Vec<&str> = decision["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    ports.sort_unstable();
    let mut expected = vec![server_port.clone(), bystander.host_peer("eth0")?];
    expected.sort_unstable();
    assert_eq!(ports, expected);
    let discarded = hops(request)
        .iter()
        .find(|h| h["namespace"] == bystander.name() && h["kind"] == "receive")
        .context("the bystander's copy")?;
    assert!(
        discarded["text"].as_str().unwrap().contains("OTHERHOST"),
        "{discarded}"
    );
    assert_eq!(
        request["outcome"]["namespace"],
        server.name(),
        "the flood is not the packet's fate"
    );
    Ok(())
}

#[test]
fn containers_on_two_networks_are_kept_apart_by_a_rule_read_from_the_kernel() -> Result<()> {
    let (network_a, network_b) = (
        integration_tests::DockerNetwork::new()?,
        integration_tests::DockerNetwork::new()?,
    );
    let target = Container::builder().network(network_b.name()).start()?;
    let source = Container::builder().network(network_a.name()).start()?;
    let followed = follow_unanswered(&[source.name(), target.name(), "--probe", "icmp"])?;
    let journeys = followed.journeys();
    ensure!(journeys.len() == 1, "no reply: {journeys:#?}");
    let request = journeys[0];
    assert_eq!(
        hop(request, "bridge")["decision"]["kind"],
        "handed_up",
        "routed, not switched"
    );
    assert_eq!(hop(request, "route")["out_device"], network_b.bridge());
    let drop = hops(request).last().unwrap();
    assert_eq!(
        (drop["kind"].as_str(), drop["reason"].as_str()),
        (Some("drop"), Some("NETFILTER_DROP"))
    );
    let rule = &drop["rule"];
    let (table, chain) = (
        rule["table"].as_str().context("the rule's table")?,
        rule["chain"].as_str().context("the rule's chain")?,
    );
    let handle = rule["handle"].as_u64().context("a rule, not a policy")?;
    // The rule as the kernel lists it right now: chain and wording come
    // from the ruleset, not from pkttrace.
    let (family, table) = table.split_once(' ').context("family and table")?;
    let listing = String::from_utf8(
        Command::new("nft")
            .args(["-a", "list", "chain", family, table, chain])
            .output()?
            .stdout,
    )?;
    let line = listing
        .lines()
        .find(|l| l.ends_with(&format!("# handle {handle}")))
        .with_context(|| format!("handle {handle} in {chain}:\n{listing}"))?;
    assert!(
        line.contains(network_b.bridge()) && line.contains("drop"),
        "Docker's isolation rule for the target's bridge: {line}"
    );
    // nft prints the counter in the middle; pkttrace quotes the rule without it.
    let words: Vec<&str> = line.split_whitespace().collect();
    let without_counter = match words.iter().position(|w| *w == "counter") {
        Some(at) => [&words[..at], &words[at + 5..]].concat().join(" "),
        None => words.join(" "),
    };
    let text = rule["text"].as_str().unwrap();
    assert_eq!(
        without_counter,
        format!("{text} # handle {handle}"),
        "the rule nft lists"
    );
    Ok(())
}

#[test]
fn a_published_port_reached_from_another_namespace_is_dnat_to_the_container() -> Result<()> {
    let upstream = Upstream::new()?;
    let (web, port) = Container::published_web_server()?;
    let dest = format!("{}:{port}", upstream.host_ip());
    let journeys = follow(&[upstream.name(), &dest, "--probe", "tcp"])?;
    ensure!(journeys.len() == 2, "SYN and SYN+ACK: {journeys:#?}");
    let (syn, syn_ack) = (&journeys[0], &journeys[1]);
    assert_eq!(
        hop(syn, "send")["namespace"],
        format!("netns {}", upstream.name())
    );
    let dnat = hop(syn, "nat");
    assert_eq!(dnat["hook"], "PREROUTING");
    assert_eq!(
        (ip(&dnat["before"]["dst"]), dnat["before"]["dport"].as_u64()),
        (upstream.host_ip(), Some(u64::from(port)))
    );
    assert_eq!(
        (ip(&dnat["after"]["dst"]), dnat["after"]["dport"].as_u64()),
        (web.ip(), Some(80)),
        "DNAT to the container"
    );
    assert_eq!(hop(syn, "forward")["to_device"], "docker0");
    assert_eq!(
        syn["outcome"]["namespace"],
        web.name(),
        "the SYN reaches the container: {}",
        syn["outcome"]
    );
    assert_eq!(syn_ack["reply_to"], syn["journey"]);
    assert_eq!(
        ip(&syn_ack["tuple"]["src"]),
        web.ip(),
        "the container answers from its own address"
    );
    let un_dnat = hop(syn_ack, "nat");
    assert_eq!(un_dnat["hook"], "POSTROUTING");
    assert_eq!(
        (
            ip(&un_dnat["after"]["src"]),
            un_dnat["after"]["sport"].as_u64()
        ),
        (upstream.host_ip(), Some(u64::from(port)))
    );
    Ok(())
}

#[test]
fn a_published_port_on_localhost_is_carried_on_by_docker_proxy_in_a_second_leg() -> Result<()> {
    let (web, port) = Container::published_web_server()?;
    let proxy_pids = String::from_utf8(
        Command::new("pgrep")
            .args(["-f", &format!("docker-proxy.*-host-port {port} ")])
            .output()?
            .stdout,
    )?;
    let proxy_pid: u64 = proxy_pids
        .lines()
        .next()
        .context("docker-proxy runs for the port (userland proxy on)")?
        .parse()?;
    let journeys = follow(&["host", &format!("127.0.0.1:{port}"), "--probe", "tcp"])?;
    let first = journeys
        .iter()
        .find(|j| j["direction"] == "request" && j.get("second_leg_of").is_none())
        .context("first leg")?;
    let note = first["note"].as_str().context("how the port is served")?;
    assert!(
        note.contains(&format!("docker-proxy (pid {proxy_pid})"))
            && note.contains("userland proxy on"),
        "{note}"
    );
    let second = journeys
        .iter()
        .find(|j| j.get("second_leg_of").is_some())
        .context("the proxy's connection")?;
    assert_eq!(second["second_leg_of"], first["journey"]);
    let send = hop(second, "send");
    assert_eq!(
        (send["process"].as_str(), send["pid"].as_u64()),
        (Some("docker-proxy"), Some(proxy_pid))
    );
    assert_eq!(
        (
            ip(&second["tuple"]["dst"]),
            second["tuple"]["dport"].as_u64()
        ),
        (web.ip(), Some(80))
    );
    assert!(
        second["note"]
            .as_str()
            .unwrap()
            .contains(&format!("{}:80", web.ip())),
        "its -container-ip/-container-port"
    );
    let answer = journeys
        .iter()
        .find(|j| j["reply_to"] == second["journey"])
        .context("the container answers the proxy")?;
    let summary: Vec<String> = journeys
        .iter()
        .map(|j| {
            format!(
                "#{} {} reply_to={} leg_of={} {} {}",
                j["journey"],
                j["direction"],
                j["reply_to"],
                j["second_leg_of"],
                j["what"],
                j["tuple"]
            )
        })
        .collect();
    assert_eq!(answer["what"], "TCP SYN+ACK", "{summary:#?}");
    assert!(
        !kinds(first).contains(&"nat"),
        "the proxy, not DNAT, serves localhost"
    );
    Ok(())
}

/// Empties the container's neighbour cache and the host's entry for it.
fn cold_arp_caches(container: &Container) -> Result<()> {
    // Cold on both sides: an address Docker gave out before may still be in
    // the host's cache, and a who-has from the host would teach the
    // container the gateway's address first.
    container.exec_ok(["ip", "neigh", "flush", "dev", "eth0"])?;
    let ip = container.ip().to_string();
    let flushed = Command::new("ip")
        .args(["neigh", "flush", "to", &ip])
        .status()?;
    ensure!(flushed.success(), "ip neigh flush to {ip}");
    Ok(())
}

#[test]
fn a_cold_arp_cache_is_one_line_in_the_hop_that_waited() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    cold_arp_caches(&container)?;
    let journeys = follow_all(&[
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
    ])?;
    ensure!(
        journeys.iter().all(|j| j["tuple"]["protocol"] != "arp"),
        "answered ARP is no journey of its own: {journeys:#?}"
    );
    let ping = journeys
        .iter()
        .find(|j| j["direction"] == "request")
        .context("the ping")?;
    let send = hop(ping, "send");
    let docker0_mac = std::fs::read_to_string("/sys/class/net/docker0/address")?
        .trim()
        .to_string();
    assert_eq!(send["waited_for_arp"], true, "{send:#}");
    let wait = &send["arp_wait"];
    assert_eq!(wait["next_hop"], "172.17.0.1", "the container's gateway");
    assert_eq!(
        wait["mac"],
        docker0_mac.as_str(),
        "docker0's own, as sysfs says"
    );
    assert_eq!(wait["device"], "eth0");
    assert!(
        text_of(&send["text"])
            .contains(&format!("for ARP on eth0: 172.17.0.1 is at {docker0_mac}")),
        "{send:#}"
    );
    // The fresh upstream answered the host's who-has just before its echo
    // reply, between the same two addresses: the lookup is the reply's.
    let reply = journeys
        .iter()
        .find(|j| j["direction"] == "reply")
        .context("the echo reply")?;
    let reply_send = hop(reply, "send");
    assert_eq!(reply_send["route"]["table"], 254, "{reply_send:#}");
    Ok(())
}

#[test]
fn with_arp_a_cold_arp_cache_shows_the_arp_exchange_as_its_own_journey() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    cold_arp_caches(&container)?;
    let journeys = follow_all(&[
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
        "--arp",
    ])?;
    let gateway = "172.17.0.1";
    let request = journeys
        .iter()
        .find(|j| j["what"] == format!("ARP request: who has {gateway}? tell {}", container.ip()))
        .with_context(|| format!("the container asks for its gateway: {journeys:#?}"))?;
    assert_eq!(hop(request, "send")["namespace"], container.name());
    let bridge = hop(request, "bridge");
    assert_eq!(bridge["decision"]["kind"], "broadcast", "{bridge}");
    assert_eq!(bridge["decision"]["handed_up"], true, "{bridge}");
    let docker0_mac = std::fs::read_to_string("/sys/class/net/docker0/address")?
        .trim()
        .to_string();
    let reply = journeys
        .iter()
        .find(|j| j["reply_to"] == request["journey"])
        .context("the host answers")?;
    assert_eq!(
        reply["what"],
        format!("ARP reply: {gateway} is at {docker0_mac}")
    );
    let ping = journeys
        .iter()
        .find(|j| j["tuple"]["protocol"] == "icmp")
        .context("the ping itself")?;
    assert_eq!(hop(ping, "send")["waited_for_arp"], true);
    Ok(())
}

#[test]
fn a_container_reaching_a_published_port_through_the_host_goes_through_docker_proxy() -> Result<()>
{
    let Lab {
        upstream,
        container,
    } = lab()?;
    let (web, port) = Container::published_web_server()?;
    let dest = format!("{}:{port}", upstream.host_ip());
    let journeys = follow(&[container.name(), &dest, "--probe", "tcp"])?;
    let first = journeys
        .iter()
        .find(|j| j["direction"] == "request" && j.get("second_leg_of").is_none())
        .context("first leg")?;
    assert_eq!(ip(&first["tuple"]["src"]), container.ip());
    assert!(
        !kinds(first).contains(&"nat"),
        "Docker's DNAT rule skips its own bridges: {first:#}"
    );
    assert!(
        first["note"]
            .as_str()
            .unwrap()
            .contains("userland proxy on")
    );
    let second = journeys
        .iter()
        .find(|j| j["second_leg_of"] == first["journey"])
        .context("docker-proxy's own connection")?;
    assert_eq!(hop(second, "send")["process"], "docker-proxy");
    assert_eq!(
        (
            ip(&second["tuple"]["dst"]),
            second["tuple"]["dport"].as_u64()
        ),
        (web.ip(), Some(80))
    );
    Ok(())
}

#[test]
fn a_container_started_after_pkttrace_is_named_from_the_change_notifications() -> Result<()> {
    let block = std::process::id() % 200;
    let network = integration_tests::DockerNetwork::with_subnet(&format!("10.78.{block}.0/24"))?;
    let client = Container::builder().network(network.name()).start()?;
    let late_ip = format!("10.78.{block}.50");
    let tracer =
        Pkttrace::spawn_attached(["follow", client.name(), &late_ip, "--count", "1", "--json"])?;
    // Created while pkttrace runs: only rtnetlink and Docker events can tell it about this one.
    let late = Container::builder()
        .network(network.name())
        .arg("--ip")
        .arg(&late_ip)
        .start()?;
    client.exec_ok(["ping", "-c", "1", "-W", "3", &late_ip])?;
    let run = tracer.wait(Duration::from_secs(20))?;
    ensure!(run.success(), "{run}");
    let request: Value = run
        .stdout
        .lines()
        .map(serde_json::from_str::<Value>)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|j| j["direction"] == "request" && j["tuple"]["protocol"] == "icmp")
        .context("the ping")?;
    assert_eq!(
        request["outcome"]["namespace"],
        late.name(),
        "named, not netns:[…]: {}",
        request["outcome"]
    );
    assert!(
        hops(&request)
            .iter()
            .any(|h| h["kind"] == "veth" && h["namespace"] == late.name()),
        "its veth is known"
    );
    Ok(())
}

/// While pkttrace is stopped (SIGSTOP), a ping flood fills its ring buffer
/// and the kernel loses events. What was under way then is marked, the
/// request whose reply was lost says so, and a ping sent once pkttrace
/// reads again is told unmarked: losses are placed by kernel time.
#[test]
fn lost_events_mark_what_they_overlap_and_nothing_after() -> Result<()> {
    let upstream = Upstream::new()?;
    let host = upstream.host_ip().to_string();
    let tracer = Pkttrace::spawn_attached([
        "follow",
        upstream.name(),
        &host,
        "--timeout",
        "12",
        "--json",
    ])?;
    let signal = |name: &str| {
        Command::new("kill")
            .args([name, &tracer.pid().to_string()])
            .status()
    };
    signal("-STOP")?;
    let flooded = upstream.exec(["busybox", "ping", "-A", "-q", "-c", "3000", &host]);
    signal("-CONT")?;
    flooded?;
    // Once pkttrace has read the ring again (soon, and well within the
    // two seconds a wall-clock guess would mark).
    std::thread::sleep(Duration::from_secs(1));
    upstream.exec_ok(["busybox", "ping", "-c", "1", "-s", "200", &host])?;
    let run = tracer.wait(Duration::from_secs(60))?;
    ensure!(
        run.stderr.contains("ring buffer was full"),
        "the flood made the kernel lose events: {}",
        run.stderr
    );
    let records: Vec<Value> = run
        .stdout
        .lines()
        .map(serde_json::from_str::<Value>)
        .collect::<Result<_, _>>()?;
    let echo_requests: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["record"] == "journey"
                && r["direction"] == "request"
                && text_of(&r["what"]).starts_with("ICMP echo request")
        })
        .collect();
    let (last, flood) = echo_requests.split_last().context("echo requests told")?;
    ensure!(
        !flood.is_empty() && flood.iter().all(|r| r["events_lost"] == true),
        "every flood request told is marked: {} requests",
        flood.len()
    );
    for no_reply in records.iter().filter(|r| r["record"] == "no_reply") {
        ensure!(
            no_reply["events_lost"] == true,
            "a reply lost with the events is said to be maybe unseen: {no_reply}"
        );
    }
    ensure!(
        last["events_lost"].is_null(),
        "the ping sent after the losses is told unmarked: {last:#}"
    );
    let answered = records
        .iter()
        .any(|r| r["direction"] == "reply" && r["reply_to"] == last["journey"]);
    ensure!(answered, "and its reply is told: {last:#}");
    // The kernel's exact count comes last, by probe, and adds up: at least
    // what the warnings said while it ran (more may be lost after the last look).
    let losses = records.last().context("records")?;
    assert_eq!(losses["record"], "losses", "{losses}");
    let total = losses["events_lost"].as_u64().context("events_lost")?;
    let by_probe = losses["lost_by_probe"]
        .as_object()
        .context("lost_by_probe")?;
    assert_eq!(
        by_probe.values().filter_map(Value::as_u64).sum::<u64>(),
        total,
        "{losses}"
    );
    let known = [
        "net_dev_queue",
        "netif_receive_skb",
        "netfilter at hook entry",
        "netfilter after NAT",
        "kfree_skb",
        "consume_skb",
        "skb_copy_datagram_iovec",
        "fib_table_lookup",
        "sock_recv_length",
    ];
    ensure!(
        by_probe.keys().all(|k| known.contains(&k.as_str())),
        "{losses}"
    );
    let warned: u64 = run
        .stderr
        .lines()
        .filter(|l| l.contains("ring buffer was full"))
        .filter_map(|l| l.strip_prefix("pkttrace: warning: the kernel dropped "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum();
    ensure!(
        warned > 0 && total >= warned,
        "exact count {total}, warned {warned}: {}",
        run.stderr
    );
    let delivered = losses["events_delivered"]
        .as_u64()
        .context("events_delivered")?;
    ensure!(delivered > 0, "{losses}");
    ensure!(
        run.stderr.contains(&format!(
            "pkttrace: the kernel dropped {total} of {} events because the ring buffer was full (",
            total + delivered
        )),
        "{}",
        run.stderr
    );
    Ok(())
}

fn text_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// UDP copies a datagram to its reader without the skb tracepoint: the read
/// is seen by socket, and still names the process on each side.
#[test]
fn a_udp_answer_names_the_reader_on_each_side() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    let echo = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{}', 7777))\n\
         while True:\n    data, sender = s.recvfrom(2048)\n    s.sendto(data, sender)\n",
        upstream.ip()
    );
    upstream.spawn("udp-echo", ["python3", "-c", &echo])?;
    std::thread::sleep(Duration::from_millis(500));
    let dest = format!("{}:7777", upstream.ip());
    let journeys = follow(&[container.name(), &dest, "--probe", "udp", "--timeout", "3"])?;
    let request = journeys
        .iter()
        .find(|j| j["direction"] == "request")
        .context("the datagram")?;
    assert_eq!(request["outcome"]["kind"], "delivered", "{request:#}");
    assert_eq!(request["outcome"]["process"], "python3");
    assert_eq!(
        request["outcome"]["namespace"],
        format!("netns {}", upstream.name())
    );
    let reply = journeys
        .iter()
        .find(|j| j["reply_to"] == request["journey"])
        .context("the echo")?;
    assert_eq!(reply["outcome"]["kind"], "delivered", "{reply:#}");
    assert_eq!(reply["outcome"]["namespace"], container.name());
    assert_eq!(reply["answer"]["kind"], "reply");
    Ok(())
}

/// `--step` on a terminal (a pseudo-terminal made by `script`): a prompt
/// after each piece until `q`, then the rest at once; the same story told.
#[test]
fn step_waits_for_enter_on_a_terminal_and_q_shows_the_rest() -> Result<()> {
    use std::io::Write;

    let Lab {
        upstream,
        container,
    } = lab()?;
    let command = format!(
        "{} follow {} {} --probe icmp --step",
        pkttrace_bin().display(),
        container.name(),
        upstream.ip()
    );
    let mut script = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Typed ahead: two Enters, then q.
    script
        .stdin
        .take()
        .context("stdin")?
        .write_all(b"\n\nq\n")?;
    let output = script.wait_with_output()?;
    let shown = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert_eq!(
        shown.matches("Enter: next step").count(),
        3,
        "a prompt for each Enter and for the q: {shown}"
    );
    for told in ["#1 request", "#2 reply to #1", "delivered to pkttrace"] {
        assert!(shown.contains(told), "{told}: {shown}");
    }
    Ok(())
}

/// Not on a terminal, `--step` prints as if it was not asked for.
#[test]
fn step_without_a_terminal_prints_the_story_at_once() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    let run = pkttrace([
        "follow",
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
        "--step",
    ])?;
    ensure!(run.success(), "{run}");
    ensure!(
        !run.stdout.contains("Enter") && run.stdout.contains("#2 reply to #1"),
        "{run}"
    );
    Ok(())
}

/// Replays `recording` as the unprivileged user nobody, with `args`.
fn replay_as_nobody(recording: &std::path::Path, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(pkttrace_bin())
        .arg("replay")
        .arg(recording)
        .args(args)
        .output()?)
}

/// A directory nobody can read a recording from and write a capture to.
fn shared_dir() -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    Ok(dir)
}

fn path_str(path: &std::path::Path) -> Result<&str> {
    path.to_str().context("a temporary path is UTF-8")
}

/// A recording told again without root, the kernel or Docker: the very
/// same text, the same exit code, the same capture and picture; the ARP a
/// hop waited for included.
#[test]
fn a_recording_replays_the_same_story_without_root() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    cold_arp_caches(&container)?;
    let dir = shared_dir()?;
    let (recording, capture) = (
        dir.path().join("ping.jsonl"),
        dir.path().join("live.pcapng"),
    );
    let live = pkttrace([
        "follow",
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
        "--record",
        path_str(&recording)?,
        "--pcap",
        path_str(&capture)?,
        "--svg",
        path_str(&dir.path().join("live.svg"))?,
    ])?;
    ensure!(live.success(), "{live}");
    ensure!(live.stdout.contains("for ARP on eth0"), "{live}");
    let replayed_capture = dir.path().join("replayed.pcapng");
    let replayed = replay_as_nobody(
        &recording,
        &[
            "--pcap",
            path_str(&replayed_capture)?,
            "--svg",
            path_str(&dir.path().join("replayed.svg"))?,
        ],
    )?;
    assert_eq!(
        String::from_utf8_lossy(&replayed.stdout),
        live.stdout,
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(replayed.status.code(), Some(0));
    assert!(
        std::fs::read(&capture)? == std::fs::read(&replayed_capture)?,
        "the replayed capture differs from the live one"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("live.svg"))?,
        std::fs::read_to_string(dir.path().join("replayed.svg"))?,
        "the replayed picture differs from the live one"
    );
    Ok(())
}

/// A failure replays as it happened: a refused connection (exit 1) in JSON.
#[test]
fn a_refused_connection_replays_in_json_with_its_exit_code() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    let dir = shared_dir()?;
    let recording = dir.path().join("refused.jsonl");
    let live = follow_json(&[
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "tcp:9",
        "--record",
        path_str(&recording)?,
    ])?;
    ensure!(live.code() == Some(1), "refused is exit 1: {}", live.run);
    let replayed = replay_as_nobody(&recording, &["--json"])?;
    assert_eq!(
        String::from_utf8_lossy(&replayed.stdout),
        live.run.stdout,
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(replayed.status.code(), Some(1));
    ensure!(
        live.run.stdout.contains("\"kind\":\"reset\""),
        "{}",
        live.run
    );
    Ok(())
}

/// What is not a recording, or is missing, is one line and exit code 2.
#[test]
fn replaying_what_is_no_recording_is_one_clear_line() -> Result<()> {
    let dir = shared_dir()?;
    let other = dir.path().join("events.jsonl");
    std::fs::write(&other, "{\"kind\":\"send\"}\n")?;
    for (file, says) in [
        (other.as_path(), "not a pkttrace recording"),
        (
            std::path::Path::new("/nonexistent.jsonl"),
            "cannot open the recording",
        ),
    ] {
        let run = replay_as_nobody(file, &[])?;
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
    Ok(())
}

/// `--pcap`: read back with tshark, one packet per hop in the order told,
/// on an interface named `<namespace>/<device>`, commented with its hop;
/// the NAT's rewrite shows in the addresses (the container's before the
/// MASQUERADE, the host's uplink address after; and back for the reply).
#[test]
fn a_pcap_has_one_packet_per_hop_and_shows_the_nat() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    let dir = shared_dir()?;
    let capture = dir.path().join("ping.pcapng");
    let followed = follow_json(&[
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
        "--pcap",
        path_str(&capture)?,
    ])?;
    ensure!(followed.run.success(), "{}", followed.run);
    let read = Command::new("tshark")
        .arg("-r")
        .arg(&capture)
        .args(["-T", "fields", "-E", "separator=|"])
        .args(["-e", "frame.interface_name", "-e", "ip.src", "-e", "ip.dst"])
        .args(["-e", "frame.comment"])
        .output()?;
    ensure!(read.status.success(), "tshark: {read:?}");
    let packets: Vec<Vec<String>> = String::from_utf8(read.stdout)?
        .lines()
        .map(|line| line.split('|').map(str::to_string).collect())
        .collect();
    let journeys = followed.all_journeys();
    let hops: Vec<(&Value, usize, &Value)> = journeys
        .iter()
        .flat_map(|journey| {
            hops(journey)
                .iter()
                .enumerate()
                .map(move |(n, hop)| (*journey, n + 1, hop))
        })
        .collect();
    assert_eq!(
        packets.len(),
        hops.len(),
        "one packet per hop: {packets:#?}"
    );
    for (packet, (journey, number, hop)) in packets.iter().zip(&hops) {
        let interface = match hop["device"].as_str() {
            Some(device) => format!("{}/{device}", text_of(&hop["namespace"])),
            None => text_of(&hop["namespace"]).to_string(),
        };
        assert_eq!(packet[0], interface);
        let comment = format!(
            "#{} hop {number} {}: {}",
            journey["journey"],
            text_of(&hop["kind"]),
            text_of(&hop["text"])
        );
        assert_eq!(packet[3], comment);
    }
    let addresses = |journey: &Value, kind: &str| -> Vec<(String, String)> {
        packets
            .iter()
            .zip(&hops)
            .filter(|(_, (j, _, hop))| *j == journey && hop["kind"] == kind)
            .map(|(packet, _)| (packet[1].clone(), packet[2].clone()))
            .collect()
    };
    let (container_ip, uplink_ip, upstream_ip) = (
        container.ip().to_string(),
        upstream.host_ip().to_string(),
        upstream.ip().to_string(),
    );
    let request = journeys
        .iter()
        .find(|j| j["direction"] == "request")
        .context("request")?;
    let reply = journeys
        .iter()
        .find(|j| j["direction"] == "reply")
        .context("reply")?;
    assert_eq!(
        addresses(request, "send"),
        [(container_ip.clone(), upstream_ip.clone())]
    );
    assert_eq!(
        addresses(request, "nat"),
        [(uplink_ip.clone(), upstream_ip.clone())],
        "after MASQUERADE, from the uplink's address"
    );
    assert_eq!(
        addresses(reply, "nat"),
        [(upstream_ip.clone(), container_ip.clone())],
        "the reverse NAT gives the reply back to the container"
    );
    assert_eq!(
        addresses(reply, "send"),
        [(upstream_ip, uplink_ip)],
        "the upstream answers the address it saw"
    );
    Ok(())
}

/// The journey picture read back as the SVG it is: per colour, the hop
/// numbers on the arrows, and every text drawn in that colour.
struct Picture {
    svg: String,
}

/// As `journey.rs` draws them.
const REQUEST_COLOUR: &str = "#1f5fbf";
const REPLY_COLOUR: &str = "#e07b00";
const DROP_COLOUR: &str = "#d62728";

impl Picture {
    fn read(path: &std::path::Path) -> Result<Self> {
        Ok(Self {
            svg: std::fs::read_to_string(path)?,
        })
    }

    /// Graphviz writes SVG's DOCTYPE; it declares nothing the picture uses.
    fn document(&self) -> Result<roxmltree::Document<'_>> {
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        };
        Ok(roxmltree::Document::parse_with_options(&self.svg, options)?)
    }

    /// The numbers on the arrows drawn in `colour`, in any order.
    fn hop_numbers(&self, colour: &str) -> Result<Vec<usize>> {
        let document = self.document()?;
        let mut numbers = Vec::new();
        for edge in document
            .descendants()
            .filter(|n| n.attribute("class") == Some("edge"))
        {
            let in_colour = edge
                .children()
                .any(|c| c.has_tag_name("path") && c.attribute("stroke") == Some(colour));
            if !in_colour {
                continue;
            }
            for text in edge.children().filter(|c| c.has_tag_name("text")) {
                for number in text.text().unwrap_or_default().trim().split('·') {
                    if let Ok(number) = number.parse() {
                        numbers.push(number);
                    }
                }
            }
        }
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Every text drawn in `colour`.
    fn texts(&self, colour: &str) -> Result<Vec<String>> {
        let document = self.document()?;
        Ok(document
            .descendants()
            .filter(|n| n.has_tag_name("text") && n.attribute("fill") == Some(colour))
            .map(|n| n.text().unwrap_or_default().to_string())
            .collect())
    }
}

/// Demo #2 drawn: every hop of the request and of the reply has its number
/// on an arrow in the journey's colour, the NAT's note says the tuple
/// before and after, and the legend names both journeys.
#[test]
fn an_svg_draws_every_hop_of_request_and_reply_on_the_topology() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    let dir = shared_dir()?;
    let svg = dir.path().join("ping.svg");
    let followed = follow_json(&[
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
        "--svg",
        path_str(&svg)?,
    ])?;
    ensure!(followed.run.success(), "{}", followed.run);
    let journeys = followed.journeys();
    let request = journeys
        .iter()
        .find(|j| j["direction"] == "request")
        .context("request")?;
    let reply = journeys
        .iter()
        .find(|j| j["direction"] == "reply")
        .context("reply")?;
    let picture = Picture::read(&svg)?;
    for (journey, colour) in [(request, REQUEST_COLOUR), (reply, REPLY_COLOUR)] {
        let every_hop: Vec<usize> = (1..=hops(journey).len()).collect();
        assert_eq!(
            picture.hop_numbers(colour)?,
            every_hop,
            "journey {} in {colour}",
            journey["journey"]
        );
    }
    let request_texts = picture.texts(REQUEST_COLOUR)?.join("\n");
    let (from, uplink) = (container.ip(), upstream.host_ip());
    ensure!(
        request_texts.contains(&format!("{from} → {}", upstream.ip()))
            && request_texts.contains(&format!("⇒ {uplink} → {}", upstream.ip())),
        "the MASQUERADE note: {request_texts}"
    );
    ensure!(
        request_texts.contains("#1 request")
            && picture
                .texts(REPLY_COLOUR)?
                .join("\n")
                .contains("#2 reply to #1"),
        "the legend names both journeys"
    );
    Ok(())
}

/// A drop drawn: the request's last arrow ends at a red ✗ that names the
/// hook, the kernel's reason and the rule.
#[test]
fn an_svg_draws_a_drop_as_a_red_cross_with_its_rule() -> Result<()> {
    let Lab {
        upstream,
        container,
    } = lab()?;
    let (from, to) = (container.ip().to_string(), upstream.ip().to_string());
    let _rule = IptablesRule::insert("DOCKER-USER", ["-s", &from, "-d", &to, "-j", "DROP"])?;
    let dir = shared_dir()?;
    let svg = dir.path().join("drop.svg");
    let followed = follow_unanswered(&[
        container.name(),
        &to,
        "--probe",
        "icmp",
        "--svg",
        path_str(&svg)?,
    ])?;
    let request = followed.journeys()[0];
    let picture = Picture::read(&svg)?;
    let every_hop: Vec<usize> = (1..=hops(request).len()).collect();
    assert_eq!(picture.hop_numbers(REQUEST_COLOUR)?, every_hop);
    let cross = picture.texts(DROP_COLOUR)?;
    assert_eq!(
        cross.first().map(String::as_str),
        Some("✗ dropped in FORWARD: NETFILTER_DROP"),
        "{cross:?}"
    );
    ensure!(
        cross
            .iter()
            .any(|t| t.starts_with("ip filter DOCKER-USER: ") && t.contains(&from)),
        "the rule under the cross: {cross:?}"
    );
    ensure!(
        picture.hop_numbers(REPLY_COLOUR)?.is_empty(),
        "no reply drawn"
    );
    Ok(())
}

/// `--buffer-mb`: the kernel's own listing of pkttrace's ring buffer has the
/// size asked for, rounded up to a power of two.
#[test]
fn the_ring_buffer_has_the_size_asked_for() -> Result<()> {
    let upstream = Upstream::new()?;
    let tracer = Pkttrace::spawn_attached([
        "follow",
        upstream.name(),
        &upstream.host_ip().to_string(),
        "--buffer-mb",
        "12",
        "--timeout",
        "20",
    ])?;
    let listing = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()?;
    tracer.kill()?;
    let maps: Value = serde_json::from_slice(&listing.stdout)?;
    let sizes: Vec<u64> = maps
        .as_array()
        .context("bpftool lists maps")?
        .iter()
        .filter(|m| m["type"] == "ringbuf" && m["name"] == "EVENTS")
        .filter_map(|m| m["max_entries"].as_u64())
        .collect();
    assert_eq!(sizes, [16 << 20], "one EVENTS ring buffer of 16 MiB");
    Ok(())
}

/// Starts a server in the host's namespace and returns once `ss ss_flags`
/// shows it listening on `address:port`.
fn serve_in_host(
    command: &[&str],
    ss_flags: &str,
    address: Ipv4Addr,
    port: u16,
) -> Result<KilledOnDrop> {
    let server = KilledOnDrop(Command::new(command[0]).args(&command[1..]).spawn()?);
    let bound = format!("sport = :{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&Command::new("ss").args([ss_flags, &bound]).output()?.stdout)
        .contains(&format!("{address}:{port}"))
    {
        ensure!(
            std::time::Instant::now() < deadline,
            "{} never bound port {port}",
            command.join(" ")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// A helper process of a test, killed and reaped when the test ends.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
