//! `pkttrace follow SOURCE DEST`: wires the stages together. Probes stream
//! raw events, decoding types them, the assembler builds journeys, the
//! topology names what they touched, the explanation tells them, and a
//! renderer prints them.

use std::{io::Write, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::{
    decode::{EventKind, KernelNames},
    enrich::{self, Listener, Ruleset, Topology},
    explain::{self, Direction, Facts},
    intake::Intake,
    journey::{
        Assembler, Journey,
        exchanges::{Exchanges, Role, Target},
    },
    probes::{self, Filter, Probes},
    render, sender,
    target::{self, Destination, Published, Source},
};

/// A journey is complete once no event joined it for this long.
const QUIET: Duration = Duration::from_millis(150);

#[derive(clap::Args, Debug)]
pub struct FollowArgs {
    /// Where packets start: a container (name or id prefix), an `ip netns` name, or `host`
    pub source: String,
    /// Where they go: an IPv4 address, ADDRESS:PORT, or a container name
    pub dest: String,
    /// Send the packet yourself from inside SOURCE: icmp, udp:PORT or tcp:PORT
    #[arg(long, value_name = "KIND")]
    pub probe: Option<String>,
    /// Stop after N request/reply exchanges (default: 1 with --probe, otherwise until Ctrl-C)
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after SECS seconds (default: 10 with --probe, otherwise none)
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Print one JSON object per journey (JSON Lines) instead of text
    #[arg(long)]
    pub json: bool,
    /// Also write every decoded kernel event to FILE (JSON Lines), e.g. for a bug report
    #[arg(long, value_name = "FILE")]
    pub save_events: Option<std::path::PathBuf>,
}

struct Run {
    source: Source,
    destination: Destination,
    topology: Topology,
    json: bool,
    exchanges: Exchanges,
    last_refresh: Instant,
    /// Marked when rtnetlink or Docker report a change to the wiring.
    changes: Option<tokio::sync::watch::Receiver<()>>,
    /// The ruleset's counters as last read, to tell which rule dropped a packet.
    ruleset: Option<Ruleset>,
    /// DEST is a published port: where Docker sends it.
    published: Option<Published>,
    /// The process listening on the published port (docker-proxy), if any.
    proxy: Option<Listener>,
}

pub async fn run(args: FollowArgs) -> Result<ExitCode> {
    probes::require_privileges()?;
    let probes::offsets::KernelFacts {
        offsets,
        drop_reasons,
    } = probes::offsets::KernelFacts::read()?;
    let names = KernelNames::from_kernel(drop_reasons);
    let softirq_code = names.softirq_loop();
    let (topology, port_bindings) = Topology::discover_with_port_bindings()
        .await
        .context("cannot read this host's network namespaces")?;
    let source = target::resolve_source(&args.source, &topology)?;
    let destination = target::resolve_destination(&args.dest, &topology)?;
    let probe = args
        .probe
        .as_deref()
        .map(|p| target::parse_probe(p, &destination))
        .transpose()?;
    let count = args.count.or(probe.map(|_| 1));
    let timeout = args.timeout.or(probe.map(|_| 10)).map(Duration::from_secs);
    let transport = match probe {
        Some(target::Probe::Udp(_)) => "udp",
        _ => "tcp",
    };
    // A published port is DNATed (or proxied) to a container: watch that end too.
    let published = target::published_target(&destination, transport, &port_bindings, &topology);
    let mut filter = Filter {
        addresses: vec![destination.address],
        protocol: probe.map(target::Probe::protocol),
        ports: probe
            .and_then(target::Probe::port)
            .or(destination.port)
            .into_iter()
            .collect(),
        ..Filter::default()
    };
    if let Some(published) = &published {
        filter.addresses.push(published.address);
        filter.ports.push(published.port);
    }
    // The source's gateway too, so the ARP for it is seen (not for the host:
    // its gateway is this machine's real uplink).
    if let Some(gateway) = source.gateway(&topology)
        && !filter.addresses.contains(&gateway)
    {
        filter.addresses.push(gateway);
    }
    let mut intake = Intake::new(names, args.save_events.as_deref(), "journeys")?;
    let mut probes = Probes::attach(&filter, offsets, softirq_code, &[])?;
    if let Some(docker) = &topology.docker_error {
        eprintln!("pkttrace: note: {docker}; containers are shown by namespace only");
    }
    let port = destination
        .port
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let behind = published
        .as_ref()
        .map(|p| {
            format!(
                " (published port of {}: {}:{})",
                p.container, p.address, p.port
            )
        })
        .unwrap_or_default();
    eprintln!(
        "pkttrace: following {} → {}{port}{behind}{}",
        source.label,
        destination.address,
        if probe.is_some() {
            " (sending the probe now)"
        } else {
            "; waiting for traffic (Ctrl-C to stop)"
        }
    );
    let proxy = published.as_ref().and_then(|_| {
        enrich::host_listeners()
            .into_iter()
            .find(|l| l.protocol == transport && Some(l.address.port()) == destination.port)
    });
    // Counters before any traced packet, to tell later which rule dropped one.
    let ruleset = enrich::read_ruleset().ok();
    let sender = probe
        .map(|p| {
            sender::spawn(
                p,
                destination,
                source.netns_path.as_deref(),
                count.unwrap_or(1),
            )
        })
        .transpose()?;

    // docker-proxy serves a published port for the host itself (on loopback)
    // and for containers, whose bridges Docker's DNAT rule skips.
    let expect_second_leg = proxy.is_some()
        && (destination.address.is_loopback() || source.netns != topology.host_netns);
    let exchanges = Exchanges::new(Target {
        destination: destination.address,
        port: destination.port,
        source_netns: source.netns,
        host_netns: topology.host_netns,
        published: published.as_ref().map(|p| (p.address, p.port)),
        expect_second_leg,
        limit: count,
    });
    let mut run = Run {
        source,
        destination,
        topology,
        json: args.json,
        exchanges,
        last_refresh: Instant::now(),
        changes: enrich::changes().ok(),
        ruleset,
        published,
        proxy,
    };
    let mut assembler = Assembler::new(QUIET.as_nanos() as u64);
    let deadline = timeout.map(|t| Instant::now() + t);
    while intake.take_in(&mut probes, &mut assembler).await? {
        for journey in assembler.take_finished(monotonic_now_ns()) {
            run.place(journey, intake.lost_recently()).await?;
        }
        run.exchanges.stop_waiting_for_old_requests();
        if count.is_some_and(|n| run.exchanges.done() >= n)
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
    }
    for journey in assembler.take_all() {
        run.place(journey, intake.lost_recently()).await?;
    }
    drop(probes);
    intake.finish()?;
    if let Some(sender) = sender {
        match sender.join() {
            Ok(Err(error)) => {
                eprintln!("pkttrace: warning: the probe could not be sent: {error:#}")
            }
            Err(_) => eprintln!("pkttrace: warning: the probe sender failed"),
            Ok(Ok(())) => {}
        }
    }
    if run.exchanges.requests_told() == 0 {
        eprintln!(
            "pkttrace: saw no packet from {} to {}",
            run.source.label, run.destination.address
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

impl Run {
    /// Tells the journeys the exchanges take, in the order they come.
    async fn place(&mut self, journey: Journey, events_lost: bool) -> Result<()> {
        for (journey, role) in self.exchanges.place(journey) {
            self.tell(journey, role, events_lost).await?;
        }
        Ok(())
    }

    async fn tell(&mut self, journey: Journey, role: Role, events_lost: bool) -> Result<()> {
        self.refresh_topology(&journey).await;
        let (direction, reply_to) = match role {
            Role::Request | Role::SecondLeg { .. } | Role::ArpRequest => (Direction::Request, None),
            Role::Reply { to } | Role::ArpReply { to } => (Direction::Reply, Some(to)),
        };
        let arp = matches!(role, Role::ArpRequest | Role::ArpReply { .. });
        let facts = Facts {
            host_ip_forward: enrich::host_ip_forward(),
            events_lost,
            bridge_calls_iptables: enrich::bridge_calls_iptables(),
            fdb: if arp || self.crosses_a_bridge(&journey) {
                enrich::host_fdb().await.unwrap_or_default()
            } else {
                Vec::new()
            },
            dropping_rules: self.dropping_rules(&journey),
        };
        let mut story = explain::explain(&journey, direction, reply_to, &self.topology, &facts);
        match role {
            Role::SecondLeg { of } => {
                let sender = journey
                    .events
                    .iter()
                    .find_map(|e| e.process().map(|(_, pid)| pid));
                story.second_leg_of = Some(of);
                story.note = Some(explain::second_leg_note(of, self.proxy.as_ref(), sender));
            }
            Role::Request => {
                if let (Some(published), Some(port)) = (&self.published, self.destination.port) {
                    story.note = Some(explain::published_port_note(
                        published,
                        port,
                        self.proxy.as_ref(),
                    ));
                }
            }
            _ => {}
        }
        self.print(&story)
    }

    fn print(&self, story: &explain::Story) -> Result<()> {
        let text = if self.json {
            render::json::render(story) + "\n"
        } else {
            render::terminal::render(story) + "\n"
        };
        let mut out = anstream::stdout();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    }

    /// For a netfilter drop: the rules whose counters went up since the
    /// ruleset was last read (kept as the new baseline).
    fn dropping_rules(&mut self, journey: &Journey) -> Vec<String> {
        let netfilter_drop = journey.events.iter().any(
            |e| matches!(&e.kind, EventKind::Drop { reason, .. } if reason == "NETFILTER_DROP"),
        );
        let hook = journey.events.iter().rev().find_map(|e| match e.kind {
            EventKind::Netfilter { hook, .. } => Some(hook),
            _ => None,
        });
        let (true, Some(hook)) = (netfilter_drop, hook) else {
            return Vec::new();
        };
        let Ok(now) = enrich::read_ruleset() else {
            return Vec::new();
        };
        let rules = self
            .ruleset
            .as_ref()
            .map(|before| now.drops_since(before, hook.nft_name()))
            .unwrap_or_default();
        self.ruleset = Some(now);
        rules
    }

    fn crosses_a_bridge(&self, journey: &Journey) -> bool {
        journey.events.iter().any(|e| {
            self.topology
                .interface(e.netns, e.ifindex)
                .is_some_and(|i| i.master.is_some())
        })
    }

    /// Re-reads the model when rtnetlink or Docker said the wiring changed (a
    /// container started after pkttrace did). Without those notifications, a
    /// journey through a namespace the model does not know triggers it.
    async fn refresh_topology(&mut self, journey: &Journey) {
        let changed = match self.changes.as_mut() {
            Some(changes) => changes.has_changed().unwrap_or(false),
            None => {
                let unknown = journey
                    .events
                    .iter()
                    .any(|e| e.netns != 0 && self.topology.namespace(e.netns).is_none());
                unknown && self.last_refresh.elapsed() > Duration::from_secs(1)
            }
        };
        if changed {
            if let Some(changes) = self.changes.as_mut() {
                changes.mark_unchanged();
            }
            self.last_refresh = Instant::now();
            if let Ok(topology) = Topology::discover().await {
                self.topology = topology;
            }
        }
    }
}

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
