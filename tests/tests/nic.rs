//! Proves the stand-in NICs and namespaced iptables rules against what the
//! kernel says about them: the devices exist with their address and route,
//! a ping to the next hop leaves through them, the tap's reader really gets
//! the frames, and nothing outlives the guards.

use std::net::Ipv4Addr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use integration_tests::{IptablesRule, StandInNic, TapNic, Upstream, link_exists, tool, tool_json};
use serde_json::Value;

/// Covers the kernel's three ARP tries, one second apart.
const FRAME_WAIT: Duration = Duration::from_secs(5);

/// `ip -d -s -j link show dev <name>`'s only entry: kind, flags, counters.
fn link(name: &str) -> Result<Value> {
    Ok(tool_json("ip", &["-d", "-s", "-j", "link", "show", "dev", name])?[0].clone())
}

/// The device's IPv4 addresses as `address/prefix`.
fn ipv4_addrs(device: &str) -> Result<Vec<String>> {
    let addrs = tool_json("ip", &["-4", "-j", "addr", "show", "dev", device])?;
    Ok(addrs[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect())
}

/// The device `ip route get` picks for `dst`.
fn route_device(dst: Ipv4Addr) -> Result<String> {
    let route = tool_json("ip", &["-j", "route", "get", &dst.to_string()])?;
    Ok(route[0]["dev"].as_str().unwrap_or("").to_owned())
}

/// The routes through `device` (their destinations).
fn routes_through(device: &str) -> Result<Vec<String>> {
    let routes = tool_json("ip", &["-4", "-j", "route", "show", "dev", device])?;
    Ok(routes
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["dst"].as_str().unwrap_or("").to_owned())
        .collect())
}

/// Whether any host interface still holds `ip`.
fn address_on_host(ip: Ipv4Addr) -> Result<bool> {
    let addrs = tool("ip", &["-4", "-o", "addr", "show"])?;
    Ok(addrs.contains(&format!("inet {ip}/")))
}

fn counter(link: &Value, direction: &str, name: &str) -> u64 {
    link["stats64"][direction][name]
        .as_u64()
        .unwrap_or_else(|| {
            panic!("no {direction} {name} counter in {link:#}");
        })
}

/// One echo request from the host to `dst`, which nothing answers.
fn ping_unanswered(dst: Ipv4Addr) -> Result<()> {
    let out = Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "1", &dst.to_string()])
        .output()?;
    ensure!(
        !out.status.success(),
        "{dst} answered: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

fn mac(link: &Value) -> [u8; 6] {
    let text = link["address"].as_str().unwrap_or("");
    let mut mac = [0; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap_or_else(|_| panic!("odd MAC {text}"));
    }
    mac
}

fn ipv4_at(frame: &[u8], offset: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        frame[offset],
        frame[offset + 1],
        frame[offset + 2],
        frame[offset + 3],
    )
}

/// The Ethernet header's fields: destination, source, EtherType.
fn ethernet(frame: &[u8]) -> ([u8; 6], [u8; 6], u16) {
    let mac = |at: usize| -> [u8; 6] { frame[at..at + 6].try_into().unwrap() };
    (mac(0), mac(6), u16::from_be_bytes([frame[12], frame[13]]))
}

/// An IPv4 ICMP echo request from `src` to `dst`.
fn is_echo_request(frame: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> bool {
    if frame.len() < 14 + 20 + 8 || ethernet(frame).2 != 0x0800 || frame[14] >> 4 != 4 {
        return false;
    }
    let icmp = 14 + usize::from(frame[14] & 0x0f) * 4;
    frame[14 + 9] == 1
        && ipv4_at(frame, 14 + 12) == src
        && ipv4_at(frame, 14 + 16) == dst
        && frame.get(icmp) == Some(&8)
}

/// An ARP request (Ethernet, IPv4) from `sender` asking who has `target`.
fn is_arp_who_has(frame: &[u8], sender: Ipv4Addr, target: Ipv4Addr) -> bool {
    frame.len() >= 14 + 28
        && ethernet(frame).2 == 0x0806
        && frame[14..22] == [0, 1, 8, 0, 6, 4, 0, 1]
        && ipv4_at(frame, 14 + 14) == sender
        && ipv4_at(frame, 14 + 24) == target
}

#[test]
fn stand_in_nic_frees_what_the_host_sends_it() -> Result<()> {
    let (name, host_ip, next_hop);
    {
        let nic = StandInNic::new()?;
        (name, host_ip, next_hop) = (nic.name().to_owned(), nic.host_ip(), nic.next_hop());
        let before = link(&name)?;
        assert_eq!(before["linkinfo"]["info_kind"], "ifb", "{before:#}");
        assert!(
            before["flags"].as_array().unwrap().contains(&"UP".into()),
            "{before:#}"
        );
        assert_eq!(ipv4_addrs(&name)?, [format!("{host_ip}/30")]);
        let network = Ipv4Addr::from(u32::from(host_ip) & !3);
        assert_eq!(routes_through(&name)?, [format!("{network}/30")]);
        assert_eq!(route_device(next_hop)?, name);

        ping_unanswered(next_hop)?;
        let after = link(&name)?;
        // An ifb counts a packet nothing redirected to it as received and
        // dropped, not as sent: its TX counters are for re-injected packets.
        assert_eq!(
            counter(&after, "rx", "packets") - counter(&before, "rx", "packets"),
            1,
            "{after:#}"
        );
        assert_eq!(
            counter(&after, "rx", "dropped") - counter(&before, "rx", "dropped"),
            1
        );
        assert_eq!(
            counter(&after, "tx", "packets"),
            counter(&before, "tx", "packets")
        );
    }
    assert!(!link_exists(&name), "{name} is still there");
    assert!(!address_on_host(host_ip)?, "{host_ip} is still on the host");
    assert_ne!(route_device(next_hop)?, name);
    Ok(())
}

#[test]
fn tap_reader_gets_the_echo_request_to_a_static_neighbour() -> Result<()> {
    let (name, host_ip, next_hop);
    {
        let tap = TapNic::with_static_neighbour()?;
        (name, host_ip, next_hop) = (tap.name().to_owned(), tap.host_ip(), tap.next_hop());
        let device = link(&name)?;
        assert_eq!(device["linkinfo"]["info_kind"], "tun", "{device:#}");
        assert_eq!(device["linkinfo"]["info_data"]["type"], "tap", "{device:#}");
        assert_eq!(ipv4_addrs(&name)?, [format!("{host_ip}/30")]);
        let neighbours = tool_json("ip", &["-j", "neigh", "show", "dev", &name])?;
        let neighbour = &neighbours[0];
        assert_eq!(neighbour["dst"], next_hop.to_string(), "{neighbours:#}");
        assert_eq!(neighbour["lladdr"], "02:70:74:00:00:01", "{neighbours:#}");
        assert_eq!(neighbour["state"][0], "PERMANENT", "{neighbours:#}");
        assert_eq!(route_device(next_hop)?, name);

        ping_unanswered(next_hop)?;
        let frame = tap
            .wait_for_frame(FRAME_WAIT, |f| is_echo_request(f, host_ip, next_hop))
            .with_context(|| format!("no echo request read; frames: {:02x?}", tap.frames()))?;
        let (dst, src, _) = ethernet(&frame);
        assert_eq!(dst, TapNic::NEIGHBOUR_MAC);
        assert_eq!(src, mac(&device));
        assert!(tap.frames().contains(&frame));
        // No ARP was needed, and no IPv6 chatter left through it.
        assert!(
            tap.frames().iter().all(|f| ethernet(f).2 == 0x0800),
            "{:02x?}",
            tap.frames()
        );
    }
    assert!(!link_exists(&name), "{name} is still there");
    assert!(!address_on_host(host_ip)?, "{host_ip} is still on the host");
    Ok(())
}

#[test]
fn tap_reader_gets_unanswered_arp_without_a_neighbour() -> Result<()> {
    let name;
    {
        let tap = TapNic::new()?;
        name = tap.name().to_owned();
        let (host_ip, next_hop) = (tap.host_ip(), tap.next_hop());
        assert_eq!(route_device(next_hop)?, name);

        ping_unanswered(next_hop)?;
        let frame = tap
            .wait_for_frame(FRAME_WAIT, |f| is_arp_who_has(f, host_ip, next_hop))
            .with_context(|| format!("no ARP request read; frames: {:02x?}", tap.frames()))?;
        assert_eq!(ethernet(&frame).0, [0xff; 6], "broadcast");
        // The kernel asks again while nothing answers.
        let asked = || {
            tap.frames()
                .iter()
                .filter(|f| is_arp_who_has(f, host_ip, next_hop))
                .count()
        };
        let deadline = Instant::now() + FRAME_WAIT;
        while asked() < 2 {
            ensure!(Instant::now() < deadline, "the kernel asked only once");
            sleep(Duration::from_millis(100));
        }
        // The echo request waits for an answer that never comes.
        assert!(
            !tap.frames()
                .iter()
                .any(|f| is_echo_request(f, host_ip, next_hop)),
            "the echo request left without a neighbour"
        );
        let neighbours = tool_json("ip", &["-j", "neigh", "show", "dev", &name])?;
        assert_eq!(neighbours[0]["dst"], next_hop.to_string(), "{neighbours:#}");
        assert!(neighbours[0]["lladdr"].is_null(), "{neighbours:#}");
    }
    assert!(!link_exists(&name), "{name} is still there");
    Ok(())
}

#[test]
fn iptables_rule_inside_a_namespace_comes_and_goes() -> Result<()> {
    let upstream = Upstream::new()?;
    let rules_inside = || tool("ip", &["netns", "exec", upstream.name(), "iptables", "-S"]);
    let tag = {
        let _rule = IptablesRule::insert_in_netns(
            &upstream.ns_path(),
            "filter",
            "INPUT",
            ["-p", "icmp", "-j", "DROP"],
        )?;
        let inside = rules_inside()?;
        let rule = inside
            .lines()
            .find(|l| l.starts_with("-A INPUT -p icmp") && l.ends_with("-j DROP"))
            .with_context(|| format!("no rule in the namespace:\n{inside}"))?;
        let tag = rule
            .split_whitespace()
            .skip_while(|w| *w != "--comment")
            .nth(1)
            .context("untagged rule")?
            .to_owned();
        assert!(tag.starts_with("pt-"), "{rule}");
        let host = tool("iptables", &["-S"])?;
        assert!(!host.contains(&tag), "the rule is on the host:\n{host}");
        tag
    };
    let inside = rules_inside()?;
    assert!(!inside.contains(&tag), "still there:\n{inside}");

    // A rule whose namespace went first is dropped quietly.
    let rule =
        IptablesRule::insert_in_netns(&upstream.ns_path(), "filter", "INPUT", ["-j", "ACCEPT"])?;
    drop(upstream);
    drop(rule);
    Ok(())
}

#[test]
fn nics_are_removed_when_a_test_panics() {
    let mut names = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let nic = StandInNic::new().unwrap();
        let tap = TapNic::new().unwrap();
        names.extend([nic.name().to_owned(), tap.name().to_owned()]);
        panic!("a failing test");
    }));
    assert!(result.is_err());
    for name in names {
        assert!(!link_exists(&name), "{name} is still there");
    }
}
