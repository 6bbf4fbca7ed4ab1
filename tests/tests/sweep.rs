//! Leftovers of a killed test run are removed when the next run first uses
//! the harness, and nothing else is touched. This file holds a single test
//! because the sweep runs once per process, before the first guard.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, ensure};
use integration_tests::{
    LAB_IMAGE, NetnsPair, container_exists, docker_network_exists, link_exists, netns_exists,
};

/// A pid above any this machine hands out, so its owner is surely gone.
const DEAD: &str = "pt-3fffff";
/// Not a harness name: it must survive the sweep.
const BYSTANDER: &str = "ptsweep-keep";

fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    ensure!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn forwarding_path() -> String {
    format!("/proc/sys/net/ipv4/conf/{BYSTANDER}/forwarding")
}

/// Removes the fake leftovers whatever the test's outcome.
struct Leftovers;

impl Drop for Leftovers {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new(args[0]).args(&args[1..]).output();
        };
        quiet(&["docker", "rm", "-f", &format!("{DEAD}-1")]);
        quiet(&["docker", "network", "rm", &format!("{DEAD}-2")]);
        quiet(&["ip", "netns", "del", &format!("{DEAD}-0")]);
        quiet(&["ip", "link", "del", &format!("{DEAD}-3h")]);
        quiet(&["ip", "link", "del", BYSTANDER]);
        quiet(&[
            "iptables",
            "-D",
            "FORWARD",
            "-i",
            &format!("{DEAD}-3h"),
            "-m",
            "comment",
            "--comment",
            &format!("{DEAD}-4"),
            "-j",
            "DROP",
        ]);
        let tmp = std::env::temp_dir();
        let _ = fs::remove_dir_all(tmp.join(format!("{DEAD}-0")));
        let _ = fs::remove_file(tmp.join(format!("{DEAD}-5.sysctl")));
    }
}

#[test]
fn first_guard_sweeps_what_a_killed_run_left() -> Result<()> {
    assert!(
        !Path::new("/proc/4194303").exists(),
        "the fake dead pid is alive"
    );
    let _leftovers = Leftovers;
    // What a run killed mid-test leaves: a namespace, a veth, a container, a
    // network, a tagged iptables rule, a scratch folder and a changed sysctl.
    sh(&["ip", "netns", "add", &format!("{DEAD}-0")])?;
    // This kernel has no dummy interfaces; a veth pair stands in.
    sh(&[
        "ip",
        "link",
        "add",
        &format!("{DEAD}-3h"),
        "type",
        "veth",
        "peer",
        "name",
        &format!("{DEAD}-3n"),
    ])?;
    sh(&[
        "docker",
        "run",
        "-d",
        "--name",
        &format!("{DEAD}-1"),
        LAB_IMAGE,
    ])?;
    sh(&["docker", "network", "create", &format!("{DEAD}-2")])?;
    sh(&[
        "iptables",
        "-I",
        "FORWARD",
        "-i",
        &format!("{DEAD}-3h"),
        "-j",
        "DROP",
        "-m",
        "comment",
        "--comment",
        &format!("{DEAD}-4"),
    ])?;
    let tmp = std::env::temp_dir();
    fs::create_dir_all(tmp.join(format!("{DEAD}-0")))?;
    sh(&[
        "ip",
        "link",
        "add",
        BYSTANDER,
        "type",
        "veth",
        "peer",
        "name",
        "ptsweep-peer",
    ])?;
    let before = fs::read_to_string(forwarding_path())?.trim().to_owned();
    let changed = if before == "0" { "1" } else { "0" };
    fs::write(
        tmp.join(format!("{DEAD}-5.sysctl")),
        format!("{}\n{before}\n", forwarding_path()),
    )?;
    fs::write(forwarding_path(), changed)?;

    // The first guard of this process runs the sweep.
    let pair = NetnsPair::new()?;

    assert!(!netns_exists(&format!("{DEAD}-0")));
    assert!(!link_exists(&format!("{DEAD}-3h")) && !link_exists(&format!("{DEAD}-3n")));
    assert!(!container_exists(&format!("{DEAD}-1")));
    assert!(!docker_network_exists(&format!("{DEAD}-2")));
    let rules = Command::new("iptables").args(["-S", "FORWARD"]).output()?;
    assert!(!String::from_utf8_lossy(&rules.stdout).contains(DEAD));
    assert!(!tmp.join(format!("{DEAD}-0")).exists());
    assert_eq!(
        fs::read_to_string(forwarding_path())?.trim(),
        before,
        "sysctl restored"
    );
    assert!(!tmp.join(format!("{DEAD}-5.sysctl")).exists());
    // Live resources are left alone: this process's own and other names.
    assert!(netns_exists(pair.name()));
    assert!(link_exists(BYSTANDER));
    Ok(())
}
