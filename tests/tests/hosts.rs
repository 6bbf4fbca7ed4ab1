//! Containers on two Docker hosts: the two-host lab (`cargo xtask lab up
//! --hosts 2`: two engines, each in a namespace of its own with its own
//! hostname, one Swarm over a veth underlay, an attachable overlay network
//! and a container on each). pkttrace finds both engines by their
//! processes, names every container and Docker's own namespaces (the
//! overlay network's on each host), checked against what each engine says.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use integration_tests::{pkttrace, pkttrace_bin, tool};
use serde_json::Value;

/// The lab, up for the guard's lifetime; Drop takes it down (the Swarm
/// left, the engines stopped, their namespaces and folders removed).
struct TwoHostLab;

/// `xtask lab <action> --hosts 2`, with the xtask binary built beside the
/// tracer (`cargo xtask test` builds both into the same folder).
fn lab(action: &str) -> Result<String> {
    let xtask = pkttrace_bin()
        .parent()
        .context("the tracer's folder")?
        .join("xtask");
    let out = Command::new(&xtask)
        .args(["lab", action, "--hosts", "2"])
        .output()
        .with_context(|| format!("cannot run {}", xtask.display()))?;
    ensure!(
        out.status.success(),
        "xtask lab {action} --hosts 2: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl TwoHostLab {
    fn up() -> Result<Self> {
        // A lab a killed run left is taken down first.
        lab("down")?;
        let lab_guard = Self;
        lab("up")?;
        Ok(lab_guard)
    }

    /// `docker -H <host's engine> <args>`.
    fn docker(&self, host: &str, args: &[&str]) -> Result<String> {
        let socket = format!("unix:///run/pt-{host}.sock");
        let mut all = vec!["-H", &socket];
        all.extend(args);
        tool("docker", &all)
    }
}

impl Drop for TwoHostLab {
    fn drop(&mut self) {
        if let Err(err) = lab("down") {
            eprintln!("lab cleanup: {err:#}");
        }
    }
}

#[test]
fn a_ping_across_two_hosts_names_every_hop() -> Result<()> {
    let lab = TwoHostLab::up()?;
    let ov_b: std::net::Ipv4Addr = lab
        .docker(
            "host-b",
            &[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                "ovB",
            ],
        )?
        .trim()
        .parse()
        .context("ovB's address on the overlay")?;
    // Ground truth: each engine's overlay network, and the namespace file it
    // keeps for it (`1-<first ten of its id>`).
    for host in ["host-a", "host-b"] {
        let id = lab.docker(host, &["network", "inspect", "-f", "{{.Id}}", "ovl"])?;
        let file = format!("/run/pt-{host}/netns/1-{}", &id.trim()[..10]);
        ensure!(std::path::Path::new(&file).exists(), "ground truth: {file}");
    }
    let run = pkttrace([
        "follow",
        "ovA",
        &ov_b.to_string(),
        "--probe",
        "icmp",
        "--json",
    ])?;
    assert_eq!(run.status.code(), Some(0), "{run}");
    let journeys: Vec<Value> = run
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let namespaces: Vec<&str> = journeys
        .iter()
        .filter(|j| j["record"] == "journey")
        .flat_map(|j| j["hops"].as_array().into_iter().flatten())
        .filter_map(|h| h["namespace"].as_str())
        .collect();
    ensure!(!namespaces.is_empty(), "{run}");
    for namespace in &namespaces {
        assert!(
            !namespace.starts_with("netns:[") && !namespace.starts_with("pid "),
            "every hop named: {namespaces:?}"
        );
    }
    for host in ["host-a", "host-b"] {
        let overlay = format!("overlay network ovl's namespace on {host}");
        assert!(
            namespaces.contains(&overlay.as_str()),
            "{overlay}: {namespaces:?}"
        );
    }
    assert!(
        namespaces.contains(&"ovA") && namespaces.contains(&"ovB"),
        "{namespaces:?}"
    );
    drop(lab);
    let left = tool("ip", &["netns", "list"])?;
    assert!(!left.contains("pt-host-"), "the lab is gone: {left}");
    Ok(())
}
