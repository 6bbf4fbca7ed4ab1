//! `pkttrace topology [CONTAINER]`: reads the host's wiring once, narrows
//! it to one container if asked, and prints it as tables, JSON or a
//! Graphviz picture.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::cli::TopologyArgs;
use crate::commands::target::InputError;
use crate::enrich::{Container, Topology, Wiring};
use crate::{enrich::report::Report, render::topology};

pub async fn run(args: TopologyArgs) -> Result<ExitCode> {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "pkttrace topology must run as root (it enters every network namespace and reads other processes' sockets): run it with sudo"
        );
    }
    let wiring = Wiring::discover()
        .await
        .context("cannot read this host's network namespaces")?;
    let focus = args
        .container
        .as_deref()
        .map(|name| resolve(name, &wiring.topology))
        .transpose()?;
    let report = Report::build(&wiring, focus);
    if let Some(docker) = &report.docker_error {
        eprintln!("pkttrace: note: {docker}; containers are shown as namespaces only");
    }
    for unreachable in wiring.topology.engine_errors() {
        eprintln!("pkttrace: note: {unreachable}; its containers are shown as namespaces only");
    }
    if let Some(firewall) = &report.firewall_error {
        eprintln!("pkttrace: note: {firewall}; netfilter rules are not shown");
    }
    if let Some(path) = &args.svg {
        topology::write_svg(&topology::dot::render(&report), path)?;
        eprintln!("pkttrace: wrote the picture to {}", path.display());
    }
    let text = if args.json {
        topology::json(&report) + "\n"
    } else if args.dot {
        topology::dot::render(&report)
    } else if args.svg.is_some() {
        return Ok(ExitCode::SUCCESS);
    } else {
        topology::table::render(&report)
    };
    let mut out = anstream::stdout();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `pkttrace topology | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        written => {
            written?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn resolve<'t>(name: &str, topology: &'t Topology) -> Result<&'t Container> {
    if let Some(container) = topology.container(name) {
        return Ok(container);
    }
    let message = match &topology.docker_error {
        Some(docker) => format!("cannot show container '{name}': {docker}"),
        None if topology.containers.is_empty() => {
            format!("no running container named '{name}'; no container is running")
        }
        None => {
            let running: Vec<&str> = topology
                .containers
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            format!(
                "no running container named '{name}'; running containers: {}",
                running.join(", ")
            )
        }
    };
    Err(InputError(message).into())
}
