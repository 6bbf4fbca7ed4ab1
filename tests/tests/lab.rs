//! Proves the lab harness itself: the hosts it builds reach each other the
//! way pkttrace's tests rely on, and nothing outlives the guards, not even
//! when a test panics.

use std::panic::{AssertUnwindSafe, catch_unwind};

use anyhow::Result;
use integration_tests::{
    Container, DockerNetwork, IptablesRule, NetnsPair, Sysctl, Upstream, container_exists,
    docker_network_exists, link_exists, netns_exists,
};

/// What a guard leaves on the host, to check that it is gone afterwards.
#[derive(Debug, Default)]
struct Traces {
    netns: Vec<String>,
    links: Vec<String>,
    containers: Vec<String>,
    networks: Vec<String>,
}

impl Traces {
    fn add_netns(&mut self, netns: &integration_tests::Netns) {
        self.netns.push(netns.name().to_owned());
        self.links.push(netns.host_veth().to_owned());
    }

    fn assert_gone(&self) {
        for name in &self.netns {
            assert!(!netns_exists(name), "netns {name} is still there");
        }
        for name in &self.links {
            assert!(!link_exists(name), "interface {name} is still there");
        }
        for name in &self.containers {
            assert!(!container_exists(name), "container {name} is still there");
        }
        for name in &self.networks {
            assert!(
                !docker_network_exists(name),
                "docker network {name} is still there"
            );
        }
    }
}

#[test]
fn container_reaches_upstream_through_docker_nat() -> Result<()> {
    let mut traces = Traces::default();
    {
        let upstream = Upstream::new()?;
        upstream.serve_http(80)?;
        upstream.serve_dns(&[("upstream.lab", upstream.ip())])?;
        let container = Container::builder().dns(upstream.ip()).start()?;
        traces.add_netns(&upstream);
        traces.containers.push(container.name().to_owned());
        assert!(!container.ip().is_unspecified() && container.pid() > 1);

        let ip = upstream.ip().to_string();
        container.exec_ok(["ping", "-c", "1", "-W", "3", &ip])?;
        // busybox wget's own -T option crashes (busybox 1.35); `timeout` bounds it instead.
        let page = container.exec_ok([
            "busybox",
            "timeout",
            "10",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{ip}/"),
        ])?;
        assert_eq!(page, format!("pkttrace upstream {}\n", upstream.name()));
        let answer = container.exec_ok(["nslookup", "upstream.lab"])?;
        assert!(answer.contains(&format!("Address: {ip}")), "{answer}");

        // The upstream has no route to Docker's subnet of its own: the
        // replies only arrive because Docker masqueraded the requests.
        let routes = upstream.exec_ok(["ip", "route"])?;
        assert!(!routes.contains("172.17."), "{routes}");
    }
    traces.assert_gone();
    Ok(())
}

#[test]
fn netns_pair_and_host_reach_each_other() -> Result<()> {
    let mut traces = Traces::default();
    {
        let pair = NetnsPair::new()?;
        traces.add_netns(&pair);
        assert_eq!(
            (pair.host_ip().to_string(), pair.ip().to_string()),
            ("10.11.12.13".into(), "10.11.12.14".into())
        );
        assert!(
            pair.veth().starts_with(pair.name()),
            "unique names on both ends"
        );
        pair.exec_ok(["busybox", "ping", "-c", "1", "-W", "3", "10.11.12.13"])?;
    }
    traces.assert_gone();
    Ok(())
}

#[test]
fn container_on_a_user_network_with_a_named_bridge() -> Result<()> {
    let mut traces = Traces::default();
    {
        // Unique per process; not a harness name, as the network's own name is.
        let bridge = format!("ptbr-{:x}", std::process::id());
        let network = DockerNetwork::with_bridge(&bridge)?;
        let container = Container::builder().network(network.name()).start()?;
        traces.networks.push(network.name().to_owned());
        traces.containers.push(container.name().to_owned());
        traces.links.push(network.bridge().to_owned());
        assert!(link_exists(&bridge));
        let gateway = container.exec_ok(["ip", "route", "show", "default"])?;
        assert!(gateway.contains("default via"), "{gateway}");
    }
    traces.assert_gone();
    Ok(())
}

#[test]
fn guards_clean_up_when_a_test_panics() {
    let mut traces = Traces::default();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let upstream = Upstream::new().unwrap();
        let container = Container::new().unwrap();
        traces.add_netns(&upstream);
        traces.containers.push(container.name().to_owned());
        panic!("a failing test");
    }));
    assert!(result.is_err());
    traces.assert_gone();
}

#[test]
fn host_setting_guards_restore_the_host() -> Result<()> {
    let pair = NetnsPair::new()?;
    // Per-interface settings on our own veth: the rest of the machine is not touched.
    let key = format!("net/ipv4/conf/{}/forwarding", pair.host_veth());
    let read = || std::fs::read_to_string(format!("/proc/sys/{key}")).map(|v| v.trim().to_owned());
    let before = read()?;
    let flipped = if before == "0" { "1" } else { "0" };
    {
        let sysctl = Sysctl::set(&key, flipped)?;
        assert_eq!(sysctl.old_value(), before);
        assert_eq!(read()?, flipped);
    }
    assert_eq!(read()?, before);

    let rules = || {
        std::process::Command::new("iptables")
            .args(["-S", "FORWARD"])
            .output()
    };
    let count = |text: &str| {
        text.lines()
            .filter(|l| l.contains(pair.host_veth()))
            .count()
    };
    {
        let _drop = IptablesRule::insert("FORWARD", ["-i", pair.host_veth(), "-j", "DROP"])?;
        assert_eq!(count(&String::from_utf8_lossy(&rules()?.stdout)), 1);
    }
    assert_eq!(count(&String::from_utf8_lossy(&rules()?.stdout)), 0);
    Ok(())
}
