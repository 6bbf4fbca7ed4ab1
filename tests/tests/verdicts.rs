//! What failed, why in Docker's terms, and what to do, on a real lab: an
//! unpublished port (the lecture's demo 0), a port published elsewhere and
//! the connection docker-proxy accepts (demo 4), two isolated networks, a
//! rule in DOCKER-USER, a network that does not masquerade, containers that
//! do not run or have no network, and `diff` of two recordings. Each is
//! checked against what Docker, iptables, ss and ip say; where a verdict
//! offers a fix, the fix is run and the flow works after it.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use integration_tests::{
    Container, DockerNetwork, IptablesRule, Sysctl, Upstream, follow_json, follow_unanswered, ip,
    pkttrace, pkttrace_bin, route_get, tool,
};
use serde_json::Value;

/// A port nothing on the host listens on (so a refusal there is Docker's
/// doing, not another server's).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port())
}

/// The listening TCP sockets `ss -tlnpH` shows, in the namespace of
/// `pid` (the host's when None): (local address, users column).
fn listening(pid: Option<u32>) -> Result<Vec<(String, String)>> {
    let out = match pid {
        Some(pid) => tool("nsenter", &["-t", &pid.to_string(), "-n", "ss", "-tlnpH"])?,
        None => tool("ss", &["-tlnpH"])?,
    };
    Ok(out
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((
                fields.get(3)?.to_string(),
                fields.get(5).unwrap_or(&"").to_string(),
            ))
        })
        .collect())
}

/// The pid `ss` names for the socket listening on `:port`.
fn listener_pid(sockets: &[(String, String)], port: u16) -> Option<u32> {
    let users = &sockets
        .iter()
        .find(|(local, _)| local.ends_with(&format!(":{port}")))?
        .1;
    users
        .split("pid=")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The verdict of the exchange of the run's only request: on its reply,
/// or on its "no reply".
fn verdict_of(followed: &integration_tests::Followed) -> Result<Value> {
    let (request, _) = followed.only_request()?;
    if let Some(verdict) = request.get("verdict") {
        return Ok(verdict.clone());
    }
    match followed.reply_to(&request) {
        Ok(reply) => reply.get("verdict").cloned(),
        Err(_) => followed.no_reply_to(&request)?.get("verdict").cloned(),
    }
    .with_context(|| format!("a verdict: {}", followed.run))
}

/// Demo 0: a server listening on a port in its container, not published;
/// the host's port refuses, and the verdict names the container and where
/// it listens, and how to publish it.
#[test]
fn an_unpublished_port_is_refused_and_the_container_that_listens_is_named() -> Result<()> {
    let port = free_port()?;
    let port_text = port.to_string();
    let server = Container::builder()
        .command(&["httpd", "-f", "-p", &port_text])
        .start()?;
    // Ground truth: it listens in its own namespace, nothing on the host's.
    let inside = listening(Some(server.pid()))?;
    ensure!(
        listener_pid(&inside, port).is_some(),
        "httpd listens inside: {inside:?}"
    );
    let host = listening(None)?;
    ensure!(
        listener_pid(&host, port).is_none(),
        "nothing on the host: {host:?}"
    );
    let followed = follow_unanswered(&["host", &format!("127.0.0.1:{port}"), "--probe", "tcp"])?;
    let verdict = verdict_of(&followed)?;
    let cause = &verdict["cause"];
    assert_eq!(cause["kind"], "not_published", "{verdict:#}");
    assert_eq!(cause["container"], server.name());
    assert_eq!(cause["listening_on"], format!("{}:{port}", server.ip()));
    assert_eq!(
        verdict["action"]["command"],
        format!("docker run -d -p {port}:{port}/tcp pkttrace-lab:latest httpd -f -p {port}"),
        "{verdict:#}"
    );
    let text = &followed.run.stderr;
    assert!(!text.contains("error"), "{text}");
    Ok(())
}

/// Demo 4: a published port from the host itself is accepted by
/// docker-proxy, which opens its own connection to the container; a probe
/// to the container's port on the host is told where Docker published it.
#[test]
fn a_published_port_is_accepted_by_docker_proxy_and_its_container_port_is_elsewhere() -> Result<()>
{
    let (web, port) = Container::published_web_server()?;
    let proxy = listener_pid(&listening(None)?, port).context("ground truth: docker-proxy")?;
    let comm = std::fs::read_to_string(format!("/proc/{proxy}/comm"))?;
    ensure!(comm.trim() == "docker-proxy", "ground truth: {comm}");
    let httpd = listener_pid(&listening(Some(web.pid()))?, 80).context("httpd inside")?;
    let followed = follow_json(&["host", &format!("127.0.0.1:{port}"), "--probe", "tcp"])?;
    ensure!(followed.code() == Some(0), "{}", followed.run);
    let journeys = followed.journeys();
    let accepted: Vec<&Value> = journeys
        .iter()
        .filter(|j| j["direction"] == "request")
        .map(|j| &j["outcome"]["accepted_by"])
        .collect();
    assert_eq!(
        accepted.len(),
        2,
        "the proxy's leg and the container's: {journeys:#?}"
    );
    assert_eq!(accepted[0]["process"], "docker-proxy");
    assert_eq!(accepted[0]["pid"], proxy);
    assert_eq!(accepted[0]["listening_on"], format!("0.0.0.0:{port}"));
    assert_eq!(
        accepted[1]["pid"],
        httpd,
        "the second leg's, in {}",
        web.name()
    );
    // Port 80 of the host is not where Docker published the container's 80,
    // unless something else happens to use it.
    if listener_pid(&listening(None)?, 80).is_none() {
        let refused = follow_unanswered(&["host", "127.0.0.1:80", "--probe", "tcp"])?;
        let verdict = verdict_of(&refused)?;
        assert_eq!(
            verdict["cause"]["kind"], "published_elsewhere",
            "{verdict:#}"
        );
        assert_eq!(verdict["cause"]["host_port"], port);
    }
    Ok(())
}

/// Two Docker networks: Docker's isolation rule drops what goes between
/// them; the verdict says so in Docker's terms, and its command joins them.
#[test]
fn docker_networks_are_isolated_and_the_connect_command_joins_them() -> Result<()> {
    let (a, b) = (DockerNetwork::new()?, DockerNetwork::new()?);
    let upstream = Upstream::new()?;
    let target = Container::builder()
        .network(a.name())
        .dns(upstream.ip())
        .start()?;
    let other = Container::builder()
        .network(b.name())
        .dns(upstream.ip())
        .start()?;
    let rules = tool("iptables", &["-S", "DOCKER-ISOLATION-STAGE-2"])?;
    ensure!(
        rules.contains(&format!("-o {} -j DROP", a.bridge())),
        "ground truth: {rules}"
    );
    let args = [
        other.name(),
        &target.ip().to_string(),
        "--probe",
        "icmp",
        "--timeout",
        "2",
    ];
    let followed = follow_unanswered(&args)?;
    let verdict = verdict_of(&followed)?;
    let cause = &verdict["cause"];
    assert_eq!(cause["kind"], "networks_isolated", "{verdict:#}");
    assert_eq!(
        (cause["from_network"].as_str(), cause["to_network"].as_str()),
        (Some(b.name()), Some(a.name()))
    );
    let command = verdict["action"]["command"].as_str().context("a fix")?;
    assert_eq!(
        command,
        format!("docker network connect {} {}", a.name(), other.name())
    );
    // The fix, run: the ping goes through.
    let words: Vec<&str> = command.split_whitespace().collect();
    tool(words[0], &words[1..])?;
    let joined = follow_json(&args)?;
    assert_eq!(joined.code(), Some(0), "{}", joined.run);
    Ok(())
}

/// A rule in DOCKER-USER, the administrator's chain: dropped or rejected,
/// named as such with the line number `iptables -D` takes.
#[test]
fn a_rule_in_docker_user_is_the_administrators_with_its_line_number() -> Result<()> {
    let upstream = Upstream::new()?;
    let container = Container::builder().dns(upstream.ip()).start()?;
    let to = upstream.ip().to_string();
    {
        let _drop = IptablesRule::insert("DOCKER-USER", ["-p", "icmp", "-d", &to, "-j", "DROP"])?;
        let numbered = tool("iptables", &["-L", "DOCKER-USER", "--line-numbers", "-n"])?;
        let first = numbered.lines().nth(2).unwrap_or_default();
        ensure!(
            first.starts_with("1 ") && first.contains("DROP"),
            "ground truth: {numbered}"
        );
        let followed =
            follow_unanswered(&[container.name(), &to, "--probe", "icmp", "--timeout", "2"])?;
        let verdict = verdict_of(&followed)?;
        assert_eq!(
            verdict["cause"]["kind"], "administrator_rule",
            "{verdict:#}"
        );
        assert_eq!(verdict["cause"]["position"], 1);
        assert_eq!(verdict["cause"]["reject"], false);
        assert_eq!(verdict["action"]["command"], "iptables -D DOCKER-USER 1");
    }
    let _reject = IptablesRule::insert(
        "DOCKER-USER",
        ["-p", "tcp", "-d", &to, "--dport", "81", "-j", "REJECT"],
    )?;
    let followed = follow_unanswered(&[container.name(), &format!("{to}:81"), "--probe", "tcp"])?;
    let verdict = verdict_of(&followed)?;
    assert_eq!(
        verdict["cause"]["kind"], "administrator_rule",
        "{verdict:#}"
    );
    assert_eq!(verdict["cause"]["reject"], true);
    Ok(())
}

/// A network that does not masquerade, and an upstream with no route back:
/// the verdict names the network and gives the route; added, the ping works.
#[test]
fn a_network_without_masquerading_is_named_and_the_route_back_mends_it() -> Result<()> {
    let network = DockerNetwork::without_masquerade("10.67.9.0/24")?;
    let upstream = Upstream::without_route_back()?;
    let container = Container::builder()
        .network(network.name())
        .dns(upstream.ip())
        .start()?;
    let netns = upstream.ns_path().to_string_lossy().into_owned();
    ensure!(
        route_get(Some(&netns), container.ip())?.as_str()
            == Some("RTNETLINK answers: Network is unreachable"),
        "ground truth: no route back"
    );
    let args = [
        container.name(),
        &upstream.ip().to_string(),
        "--probe",
        "icmp",
        "--timeout",
        "2",
    ];
    let followed = follow_unanswered(&args)?;
    let verdict = verdict_of(&followed)?;
    let cause = &verdict["cause"];
    assert_eq!(cause["kind"], "no_route_back", "{verdict:#}");
    assert_eq!(cause["not_masqueraded_by"], network.name());
    assert_eq!(ip(&cause["to"]), container.ip());
    let command = verdict["action"]["command"].as_str().context("a fix")?;
    assert_eq!(
        command,
        format!(
            "ip netns exec {} ip route add 10.67.9.0/24 via {}",
            upstream.name(),
            upstream.host_ip()
        )
    );
    let words: Vec<&str> = command.split_whitespace().collect();
    tool(words[0], &words[1..])?;
    let mended = follow_json(&args)?;
    assert_eq!(mended.code(), Some(0), "{}", mended.run);
    Ok(())
}

/// A stopped container is an input error saying how to start it; one with
/// `--network none` sends nothing, and the verdict says how to connect it.
#[test]
fn a_stopped_container_and_one_without_a_network_say_what_to_do() -> Result<()> {
    let upstream = Upstream::new()?;
    let stopped = Container::builder().dns(upstream.ip()).start()?;
    stopped.stop()?;
    let state = tool(
        "docker",
        &["inspect", "-f", "{{.State.Status}}", stopped.name()],
    )?;
    ensure!(state.trim() == "exited", "ground truth: {state}");
    let to = upstream.ip().to_string();
    let run = pkttrace(["follow", stopped.name(), &to, "--probe", "icmp"])?;
    assert_eq!(run.status.code(), Some(2), "{run}");
    assert!(
        run.stderr
            .contains(&format!("docker start {}", stopped.name()))
            && run.stderr.contains("is not running"),
        "{run}"
    );
    let alone = Container::builder().network("none").start()?;
    let links = alone.exec_ok(["ip", "-o", "link"])?;
    ensure!(links.lines().count() == 1, "ground truth: only lo: {links}");
    let followed = follow_unanswered(&[alone.name(), &to, "--probe", "icmp"])?;
    let verdict = verdict_of(&followed)?;
    assert_eq!(verdict["cause"]["kind"], "network_none", "{verdict:#}");
    assert_eq!(
        verdict["action"]["command"],
        format!("docker network connect bridge {}", alone.name())
    );
    assert!(
        followed.run.stderr.contains("--network none"),
        "{}",
        followed.run
    );
    Ok(())
}

/// `pkttrace diff` as the unprivileged user nobody.
fn diff_as_nobody(a: &std::path::Path, b: &std::path::Path) -> Result<(Option<i32>, Value)> {
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(pkttrace_bin())
        .arg("diff")
        .args([a, b])
        .arg("--json")
        .output()?;
    let json = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    Ok((out.status.code(), json))
}

/// The lecture's experiment (forwarding off) and a rule added in between,
/// each recorded before and after: `diff` parts them where they part, with
/// the reason and the fix; a recording compared with itself is the same.
#[test]
fn diff_tells_where_two_recordings_of_a_flow_part() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let upstream = Upstream::new()?;
    let container = Container::builder().dns(upstream.ip()).start()?;
    let to = upstream.ip().to_string();
    let record = |name: &str, expect: i32| -> Result<std::path::PathBuf> {
        let path = dir.path().join(name);
        let run = pkttrace([
            "follow",
            container.name(),
            &to,
            "--probe",
            "icmp",
            "--timeout",
            "2",
            "--record",
            path.to_str().context("utf-8")?,
        ])?;
        ensure!(run.status.code() == Some(expect), "{run}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(path)
    };
    let worked = record("worked.rec", 0)?;
    let bridge = "docker0";
    let forwarding_off = {
        let _off = Sysctl::set(&format!("net.ipv4.conf.{bridge}.forwarding"), "0")?;
        record("forwarding-off.rec", 1)?
    };
    let (code, same) = diff_as_nobody(&worked, &worked)?;
    assert_eq!(
        (code, same["same"].as_bool()),
        (Some(0), Some(true)),
        "{same:#}"
    );
    let (code, diff) = diff_as_nobody(&worked, &forwarding_off)?;
    assert_eq!(code, Some(1), "{diff:#}");
    let parting = &diff["exchanges"][0]["parting"];
    assert_eq!(parting["journey"], "request", "{diff:#}");
    assert_eq!(
        (parting["a"]["kind"].as_str(), parting["b"]["kind"].as_str()),
        (Some("forward"), Some("drop")),
        "{diff:#}"
    );
    assert_eq!(
        parting["action"]["command"],
        format!("sysctl -w net.ipv4.conf.{bridge}.forwarding=1")
    );
    let ruled = {
        let _rule = IptablesRule::insert("DOCKER-USER", ["-p", "icmp", "-d", &to, "-j", "DROP"])?;
        record("ruled.rec", 1)?
    };
    let (code, diff) = diff_as_nobody(&worked, &ruled)?;
    assert_eq!(code, Some(1), "{diff:#}");
    let parting = &diff["exchanges"][0]["parting"];
    let dropped = &parting["b"];
    assert_eq!(dropped["kind"], "drop", "{diff:#}");
    assert_eq!(dropped["rule"]["chain"], "DOCKER-USER");
    assert_eq!(parting["action"]["command"], "iptables -D DOCKER-USER 1");
    Ok(())
}

/// With the userland proxy off (a second engine, `--userland-proxy=false`)
/// no docker-proxy serves a published port: DNAT alone does, in OUTPUT for
/// the engine's own host and in PREROUTING for a container on the same
/// bridge (hairpin NAT); both are followed to the server and back.
#[test]
fn with_the_userland_proxy_off_published_ports_are_served_by_hairpin_nat() -> Result<()> {
    let engine = integration_tests::SecondEngine::without_userland_proxy(77)?;
    let host = engine.host();
    let suffix = host.name().trim_start_matches("pt-");
    let (web_name, client_name) = (format!("pt-w{suffix}"), format!("pt-c{suffix}"));
    let web = engine.run(&web_name, &["-p", "8080:80"], &["httpd", "-f", "-p", "80"])?;
    engine.run(&client_name, &[], &["sleep", "infinity"])?;
    let netns = host.name();
    let nat = tool(
        "ip",
        &[
            "netns", "exec", netns, "iptables", "-t", "nat", "-S", "DOCKER",
        ],
    )?;
    ensure!(
        nat.contains(&format!("--to-destination {web}:80")),
        "ground truth: the DNAT rule: {nat}"
    );
    // dockerd holds the port, so nothing else takes it; no proxy serves it.
    let listeners = tool("ip", &["netns", "exec", netns, "ss", "-tlnpH"])?;
    ensure!(
        !listeners.contains("docker-proxy"),
        "ground truth: no docker-proxy: {listeners}"
    );
    let address = format!("{}:8080", host.ip());
    // pkttrace finds the second engine by its process: no DOCKER_HOST.
    for (source, hook) in [(netns, "OUTPUT"), (client_name.as_str(), "PREROUTING")] {
        let (code, records) =
            integration_tests::follow_engines(&[source, &address, "--probe", "tcp"])?;
        assert_eq!(code, Some(0), "{source}: {records:#?}");
        let requests: Vec<&Value> = records
            .iter()
            .filter(|r| r["record"] == "journey" && r["direction"] == "request")
            .collect();
        assert_eq!(requests.len(), 1, "no second leg: {records:#?}");
        let request = requests[0];
        let dnat = request["hops"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["kind"] == "nat" && h["nat"] == "destination")
            .with_context(|| format!("{source}: a DNAT hop: {request:#}"))?;
        assert_eq!(dnat["hook"], hook, "{source}: {dnat:#}");
        assert_eq!(ip(&dnat["after"]["dst"]), web);
        assert_eq!(
            request["outcome"]["accepted_by"]["process"], "httpd",
            "{request:#}"
        );
        assert_eq!(request["outcome"]["namespace"], web_name);
        let note = request["note"].as_str().unwrap_or_default();
        assert!(note.contains("userland proxy off"), "{source}: {note}");
    }
    Ok(())
}
