//! The command line, as clap reads it: only definitions, no behaviour, so
//! that xtask can build the man pages and completions from the very same source (it includes
//! this file; the tracer package's build script builds eBPF programs, which
//! xtask must not depend on).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pkttrace",
    // The build script adds the commit; xtask, which includes this file for
    // the man pages, builds without it.
    version = option_env!("PKTTRACE_VERSION").unwrap_or(env!("CARGO_PKG_VERSION")),
    about = "How did my packet get there? eBPF-powered, hop-by-hop packet explanations for containers and namespaces"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Follow packets from SOURCE to DEST and explain every hop, and the reply
    Follow(FollowArgs),
    /// Show a container's DNS queries: Docker's embedded DNS at 127.0.0.11, what it forwards upstream, the answers
    Dns(DnsArgs),
    /// Show the host's wiring: namespaces, veth pairs, bridges, routes, NAT and filter rules, published ports
    Topology(TopologyArgs),
    /// Tell the stories of a recording (`follow --record FILE`) again: no root, no kernel, no Docker needed
    Replay(ReplayArgs),
    /// Compare two recordings of the same flow (`follow --record`) hop by hop: where they part and why; no root needed
    Diff(DiffArgs),
    /// Print the JSON Schema of what `follow --json`, `dns --json` or `topology --json` print
    Schema(SchemaArgs),
    /// Print a shell completion script (e.g. `pkttrace completions bash > /etc/bash_completion.d/pkttrace`)
    Completions(CompletionsArgs),
}

#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    /// Whose JSON: follow (also replay), dns, topology or diff
    #[arg(value_enum)]
    pub of: SchemaOf,
}

/// The commands that print JSON, each with a schema of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaOf {
    /// `follow --json` and `replay --json`: journey, no_reply and losses lines
    Follow,
    /// `dns --json`: query and losses lines
    Dns,
    /// `topology --json`: one document
    Topology,
    /// `diff --json`: one document
    Diff,
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The first recording (say, the one that worked)
    pub a: PathBuf,
    /// The second recording of the same flow (say, after a change)
    pub b: PathBuf,
    /// Print the comparison as one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// A recording made by `pkttrace follow … --record FILE`; several, one per host (`follow --on-host`), are joined into the journeys they share
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Print one JSON object per journey (JSON Lines) instead of text
    #[arg(long)]
    pub json: bool,
    /// On a terminal, print one hop at a time: Enter shows the next, q and Enter the rest at once
    #[arg(long)]
    pub step: bool,
    /// Also draw the first request and its reply on the topology picture as SVG in FILE
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Also write the journeys to FILE as pcapng (when the recording was made with --pcap)
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct FollowArgs {
    /// Where packets start: a container (name or id prefix), an `ip netns` name, or `host`
    pub source: String,
    /// Where they go: an address (10.0.0.5, 2001:db8::5), ADDRESS:PORT ([2001:db8::5]:80), or a container name
    pub dest: String,
    /// With a container as DEST: go to its IPv6 address instead of its IPv4 one
    #[arg(short = '6', long)]
    pub ipv6: bool,
    /// Send the packet yourself from inside SOURCE: icmp, udp:PORT or tcp:PORT
    #[arg(long, value_name = "KIND")]
    pub probe: Option<String>,
    /// With --probe: BYTES of payload, with don't fragment set (as `ping -M do -s BYTES`), to see what a smaller link does to it
    #[arg(long, value_name = "BYTES", requires = "probe", value_parser = clap::value_parser!(u16).range(0..=65000))]
    pub size: Option<u16>,
    /// With --probe: the probe's time to live (IPv4 TTL, IPv6 hop limit), to see the router where it runs out
    #[arg(long, value_name = "N", requires = "probe", value_parser = clap::value_parser!(u8).range(1..))]
    pub ttl: Option<u8>,
    /// Stop after N request/reply exchanges (default: 1 with --probe, otherwise until Ctrl-C)
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after SECS seconds; with --probe also how long a probe waits for its answer (default: 5 with --probe, otherwise none)
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Print one JSON object per journey (JSON Lines) instead of text
    #[arg(long)]
    pub json: bool,
    /// Tell answered ARP exchanges as journeys of their own (by default the hop that waited for one says it in a line)
    #[arg(long)]
    pub arp: bool,
    /// On a terminal, print one hop at a time: Enter shows the next, q and Enter the rest at once (ignored with --json or when the output is not a terminal)
    #[arg(long)]
    pub step: bool,
    /// For a busy flow: instead of a story per packet, every SECS seconds (default 5) and at the end one block per distinct path (its hops, packet count, share, latency p50/p99, drops with their rule); a new path is marked NEW
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "5", conflicts_with_all = ["step", "svg"], value_parser = clap::value_parser!(u64).range(1..))]
    pub summary: Option<u64>,
    /// Also draw the first request and its reply on the topology picture, hop by hop, as SVG in FILE (needs Graphviz)
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Also write the journeys to FILE as pcapng: one packet per hop, as it was there (NAT visible), each commented with its hop
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Record what the stories are told from (events, facts, topology) to FILE, for `pkttrace replay FILE`
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Also write every decoded kernel event to FILE (JSON Lines), e.g. for a bug report
    #[arg(long, value_name = "FILE")]
    pub save_events: Option<PathBuf>,
    /// See only what the Docker host ENGINE sees of itself (its own namespace, its containers', Docker's own there), as pkttrace on that node alone would: for a machine with several engines (a Swarm lab, docker-in-docker)
    #[arg(long, value_name = "ENGINE")]
    pub on_host: Option<String>,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

#[derive(clap::Args, Debug)]
pub struct DnsArgs {
    /// The container whose queries to show (name or id prefix)
    pub container: String,
    /// Print one JSON object per query (JSON Lines) instead of text
    #[arg(long)]
    pub json: bool,
    /// Stop after N queries were told
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after SECS seconds
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Report a query as timed out when no answer came within SECS seconds
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub answer_timeout: u64,
    /// Also write every decoded kernel event to FILE (JSON Lines)
    #[arg(long, value_name = "FILE")]
    pub save_events: Option<PathBuf>,
    #[command(flatten)]
    pub kernel: KernelArgs,
}

/// How the tracing commands take the kernel's events in.
#[derive(clap::Args, Debug)]
pub struct KernelArgs {
    /// Size of the ring buffer the kernel hands events over in, in MiB (rounded up to a power of two; default: 4 per CPU, 8 to 64)
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub buffer_mb: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct TopologyArgs {
    /// Show only this container (name or id prefix): its namespaces, wiring, resolver and published ports
    pub container: Option<String>,
    /// Print the model as one JSON document instead of tables (schema in the README)
    #[arg(long, conflicts_with = "dot")]
    pub json: bool,
    /// Print the picture as Graphviz DOT instead of tables
    #[arg(long)]
    pub dot: bool,
    /// Draw the picture into FILE as SVG (with Graphviz's `dot`); prints no tables
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete in
    pub shell: clap_complete::Shell,
}
