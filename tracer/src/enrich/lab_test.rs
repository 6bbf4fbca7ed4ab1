//! End-to-end check against this machine's kernel and Docker. Needs root,
//! a running dockerd and busybox-static (for a throwaway image when
//! `pkttrace-lab:latest` is absent):
//! `cargo test -p tracer -- --ignored enrich`.
//! Everything it creates is removed by guards, also when it fails.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Instant;

use super::{LinkKind, Owner, RouteKind, Topology};
use crate::test_support::run;

const LAB_IMAGE: &str = "pkttrace-lab:latest";
const THROWAWAY_IMAGE: &str = "pt-enrich-test";
/// Configured only, never sent to: the test sends no traffic at all.
const LAB_DNS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
const NS_ADDR: Ipv4Addr = Ipv4Addr::new(100, 64, 77, 2);

fn succeeds(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Undoes one thing on drop, whether the test passed or panicked.
struct Undo(Vec<String>);

impl Undo {
    fn new(args: &[&str]) -> Undo {
        Undo(args.iter().map(|a| a.to_string()).collect())
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        let _ = Command::new(&self.0[0]).args(&self.0[1..]).output();
    }
}

/// busybox-static plus a few applet links, imported as an image.
fn build_throwaway_image(tag: u32) {
    let dir = std::env::temp_dir().join(format!("pt-enrich-image-{tag}"));
    let _dir = Undo::new(&["rm", "-rf", dir.to_str().unwrap()]);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    assert!(
        std::fs::copy("/bin/busybox", dir.join("bin/busybox")).is_ok(),
        "needs /bin/busybox from busybox-static (apt-get install -y busybox-static)"
    );
    for applet in ["sh", "sleep", "ip"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    let import = format!(
        "tar -C {} -c . | docker import - {THROWAWAY_IMAGE}",
        dir.display()
    );
    run(&["sh", "-c", &import]);
}

fn unused_ifindex() -> u32 {
    let used = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| {
            std::fs::read_to_string(e.ok()?.path().join("ifindex"))
                .ok()?
                .trim()
                .parse::<u32>()
                .ok()
        });
    used.max().unwrap_or(1) + 1000
}

fn subnet_of(ip: IpAddr, len: u8) -> (IpAddr, u8) {
    let IpAddr::V4(ip) = ip else {
        panic!("an IPv4 subnet")
    };
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    (Ipv4Addr::from(u32::from(ip) & mask).into(), len)
}

#[tokio::test]
#[ignore = "needs root and dockerd; creates a netns, a veth pair and a container"]
async fn discovers_real_netns_veth_and_container() {
    let tag = std::process::id() % 100_000;
    let netns = format!("pt-enrich-{tag}");
    let (host_end, ns_end) = (format!("pte{tag}h"), format!("pte{tag}n"));
    let name = format!("pt-enrich-{tag}");

    // Declared in creation order, so they are undone in reverse.
    let mut _image = None;
    let image = if succeeds(&["docker", "image", "inspect", LAB_IMAGE]) {
        LAB_IMAGE
    } else {
        _image = Some(Undo::new(&["docker", "rmi", "-f", THROWAWAY_IMAGE]));
        build_throwaway_image(tag);
        THROWAWAY_IMAGE
    };
    let _container = Undo::new(&["docker", "rm", "-f", &name]);
    let dns = LAB_DNS.to_string();
    run(&[
        "docker",
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "bridge",
        "--dns",
        &dns,
        image,
        "sleep",
        "600",
    ]);
    let _netns = Undo::new(&["ip", "netns", "del", &netns]);
    run(&["ip", "netns", "add", &netns]);
    // Deleting the host end removes the pair at once; namespace teardown
    // would only remove it later, asynchronously.
    let _veth = Undo::new(&["ip", "link", "del", &host_end]);
    // Both ends get the same ifindex, which only namespaces tell apart.
    let index = unused_ifindex().to_string();
    run(&[
        "ip", "link", "add", &host_end, "index", &index, "type", "veth", "peer", "name", &ns_end,
        "index", &index, "netns", &netns,
    ]);
    run(&["ip", "link", "set", &host_end, "up"]);
    run(&["ip", "-n", &netns, "link", "set", &ns_end, "up"]);
    run(&[
        "ip",
        "-n",
        &netns,
        "addr",
        "add",
        &format!("{NS_ADDR}/30"),
        "dev",
        &ns_end,
    ]);
    // The namespace gets the opposite forwarding setting from the host, so
    // reading the wrong namespace's sysctl cannot pass.
    let host_forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/forwarding")
        .unwrap()
        .trim()
        != "0";
    let ns_forwarding = if host_forwarding { "0" } else { "1" };
    let set_forwarding = format!("echo {ns_forwarding} > /proc/sys/net/ipv4/conf/all/forwarding");
    run(&["ip", "netns", "exec", &netns, "sh", "-c", &set_forwarding]);

    let started = Instant::now();
    let topo = Topology::discover().await.expect("discovery");
    let took = started.elapsed();
    eprintln!(
        "discovered {} namespaces, {} containers in {took:?}; docker_error: {:?}",
        topo.namespaces.len(),
        topo.containers.len(),
        topo.docker_error
    );

    // Host.
    let host = topo.namespace(topo.host_netns).expect("host namespace");
    assert_eq!(host.owner, Owner::Host);
    assert_eq!(
        topo.namespaces[0].inode, topo.host_netns,
        "host comes first"
    );
    assert_eq!(host.ip_forward, Some(host_forwarding));
    assert!(
        host.routes
            .iter()
            .any(|r| r.table == 255 && r.kind == RouteKind::Local),
        "local table is read"
    );

    // The `ip netns` namespace and the veth pair across it.
    let ns = topo.netns_by_name(&netns).expect("ip netns namespace");
    assert_eq!(ns.owner, Owner::NetnsName(netns.clone()));
    assert_eq!(topo.owner_label(ns.inode), format!("netns {netns}"));
    assert_eq!(
        ns.ip_forward,
        Some(!host_forwarding),
        "sysctl read inside the namespace"
    );
    let inner = ns.interface_by_name(&ns_end).expect("namespace end");
    let outer = host.interface_by_name(&host_end).expect("host end");
    assert_eq!(inner.ifindex, outer.ifindex);
    assert_eq!(inner.kind, LinkKind::Veth);
    let outer_peer = outer.peer.expect("host end's peer");
    assert_eq!(
        (outer_peer.netns, outer_peer.ifindex),
        (ns.inode, inner.ifindex)
    );
    assert_eq!(
        topo.interface(outer_peer.netns, outer_peer.ifindex)
            .unwrap()
            .name,
        ns_end
    );
    let inner_peer = inner.peer.expect("namespace end's peer");
    assert_eq!(
        (inner_peer.netns, inner_peer.ifindex),
        (topo.host_netns, outer.ifindex)
    );
    assert!(inner.up && outer.up && inner.lower_up);
    let inner_v4: Vec<_> = inner
        .addresses
        .iter()
        .filter(|(a, _)| a.is_ipv4())
        .collect();
    assert_eq!(inner_v4, vec![&(NS_ADDR.into(), 30)]);
    assert!(ns.routes.iter().any(|r| r.table == 254
        && r.destination == Some((IpAddr::from([100, 64, 77, 0]), 30))
        && r.device == Some(inner.ifindex)
        && r.source == Some(NS_ADDR.into())));
    assert!(ns.routes.iter().any(|r| r.table == 255
        && r.kind == RouteKind::Local
        && r.destination == Some((NS_ADDR.into(), 32))));

    // Docker: the container, its veth into docker0, and the network.
    assert_eq!(topo.docker_error, None);
    let c = topo.container(&name).expect("container");
    assert_eq!(topo.container(&c.id[..12]).map(|c| &c.name), Some(&name));
    assert_eq!(c.dns, vec![LAB_DNS]);
    assert!(
        c.sandbox_key.starts_with("/var/run/docker/netns/"),
        "{}",
        c.sandbox_key
    );
    let cns = topo.namespace(c.netns).expect("container namespace");
    assert_eq!(
        cns.owner,
        Owner::Container {
            name: name.clone(),
            id: c.id.clone()
        }
    );
    assert_eq!(topo.owner_label(c.netns), name);
    let net = c
        .networks
        .iter()
        .find(|n| n.network == "bridge")
        .expect("on network bridge");
    let eth0 = cns.interface_by_name("eth0").expect("container eth0");
    assert_eq!(
        eth0.addresses.iter().map(|a| a.0).collect::<Vec<_>>(),
        vec![net.ip.unwrap()]
    );
    assert_eq!(eth0.mac, net.mac);
    let docker0 = host.interface_by_name("docker0").expect("docker0");
    assert_eq!(docker0.kind, LinkKind::Bridge);
    assert_eq!(net.gateway, docker0.addresses.first().map(|a| a.0));
    let eth0_peer = eth0.peer.expect("container eth0's peer");
    assert_eq!(eth0_peer.netns, topo.host_netns);
    let port = topo
        .interface(eth0_peer.netns, eth0_peer.ifindex)
        .expect("host end of eth0");
    assert_eq!(port.kind, LinkKind::Veth);
    assert_eq!(port.master, Some(docker0.ifindex));
    assert_eq!(
        port.peer.map(|p| (p.netns, p.ifindex)),
        Some((c.netns, eth0.ifindex))
    );
    assert!(
        host.bridge_ports(docker0.ifindex)
            .any(|p| p.ifindex == port.ifindex)
    );
    let network = topo.bridge_network("docker0").expect("network of docker0");
    assert_eq!(network.name, "bridge");
    let docker0_subnet = docker0
        .addresses
        .first()
        .map(|&(ip, len)| subnet_of(ip, len));
    assert!(
        network.subnets.iter().any(|&s| Some(s) == docker0_subnet),
        "{:?}",
        network.subnets
    );
    assert!(cns.routes.iter().any(|r| r.table == 254
        && r.destination.is_none()
        && r.gateway == net.gateway
        && r.device == Some(eth0.ifindex)));

    // Clean up now, in order, and check nothing is left.
    drop(_veth);
    drop(_netns);
    drop(_container);
    drop(_image);
    assert!(
        !succeeds(&["ip", "link", "show", &host_end]),
        "host veth left behind"
    );
    assert!(
        !run(&["ip", "netns", "list"])
            .lines()
            .any(|l| l.split_whitespace().next() == Some(netns.as_str()))
    );
    assert!(
        run(&["docker", "ps", "-aq", "--filter", &format!("name=^{name}$")])
            .trim()
            .is_empty()
    );
    if image == THROWAWAY_IMAGE {
        assert!(
            !succeeds(&["docker", "image", "inspect", THROWAWAY_IMAGE]),
            "throwaway image left behind"
        );
    }
}
