//! pkttrace: how did my packet get there? Follows packets through network
//! namespaces, veth pairs, bridges, routing, netfilter and NAT with eBPF,
//! and explains each hop with the kernel's own evidence.

mod decode;
mod dns;
mod enrich;
mod explain;
mod facts;
mod follow;
mod intake;
mod journey;
mod probes;
mod render;
mod sender;
mod setns;
mod target;
#[cfg(test)]
mod test_support;
mod topology;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pkttrace",
    version,
    about = "How did my packet get there? eBPF-powered, hop-by-hop packet explanations for containers and namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Follow packets from SOURCE to DEST and explain every hop, and the reply
    Follow(follow::FollowArgs),
    /// Show a container's DNS queries: Docker's embedded DNS at 127.0.0.11, what it forwards upstream, the answers
    Dns(dns::DnsArgs),
    /// Show the host's wiring: namespaces, veth pairs, bridges, routes, NAT and filter rules, published ports
    Topology(topology::TopologyArgs),
}

/// Setup errors (bad input, missing privileges or kernel features) exit with 2.
const SETUP_ERROR: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Follow(args) => follow::run(args).await,
        Command::Topology(args) => topology::run(args).await,
        Command::Dns(args) => dns::run(args).await,
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pkttrace: error: {error:#}");
            ExitCode::from(SETUP_ERROR)
        }
    }
}
