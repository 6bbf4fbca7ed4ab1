//! `pkttrace follow SOURCE DEST`: wires the stages together. Probes stream
//! raw events, decoding types them, the assembler builds journeys, the
//! topology names what they touched, the explanation tells them, and a
//! renderer prints them.

use std::{collections::VecDeque, io::Write, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, sleep},
};

use crate::{
    decode::{self, EventKind, KernelNames, Packet, Transport},
    enrich::{self, Listener, Ruleset, Topology},
    explain::{self, Direction, Facts},
    journey::{Assembler, Journey},
    probes::{self, Filter, Probes},
    render, sender,
    target::{self, Destination, Published, Source},
};

/// A journey is complete once no event joined it for this long.
const QUIET: Duration = Duration::from_millis(150);
/// Journeys finishing this soon after the kernel reported lost events are
/// flagged: their missing hops may be among the lost.
const LOSS_SHADOW: Duration = Duration::from_secs(2);
/// How long a request waits for its reply before the exchange counts as done.
const REPLY_WAIT: Duration = Duration::from_secs(2);

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

/// A request told and still waiting for its reply.
struct WaitingRequest {
    journey: Journey,
    printed_at: Instant,
    /// For docker-proxy's connection: the request it carries on.
    leg_of: Option<u64>,
}

/// Most requests waiting for a reply at once; under a flood the oldest stop waiting.
const MAX_WAITING: usize = 1024;

struct Run {
    source: Source,
    destination: Destination,
    topology: Topology,
    names: KernelNames,
    json: bool,
    /// `--count`: how many requests to tell at most.
    limit: Option<u64>,
    requests_told: u64,
    /// Exchanges over: answered, dropped, or done waiting.
    exchanges_done: u64,
    waiting: VecDeque<WaitingRequest>,
    last_refresh: Instant,
    /// Marked when rtnetlink or Docker report a change to the wiring.
    changes: Option<tokio::sync::watch::Receiver<()>>,
    last_loss: Option<Instant>,
    /// The ruleset's counters as last read, to tell which rule dropped a packet.
    ruleset: Option<Ruleset>,
    /// DEST is a published port: where Docker sends it.
    published: Option<Published>,
    /// DEST is a published port docker-proxy serves for this source (from the
    /// host to loopback, or from a container, which Docker's DNAT rule skips):
    /// the exchange is over when the proxy's own connection is answered.
    expect_second_leg: bool,
    last_request: Option<u64>,
    /// The process listening on the published port (docker-proxy), if any.
    proxy: Option<Listener>,
    /// Requests whose second leg has been told: one each.
    legs_told: Vec<u64>,
    /// Journeys that may answer a request not told yet (a request can finish
    /// after its reply when later lookups keep it open); tried again after
    /// each request.
    unplaced: VecDeque<(Journey, Instant)>,
    /// ARP requests told, for their replies.
    arp_requests: VecDeque<Journey>,
    arp_requests_told: u64,
}

pub async fn run(args: FollowArgs) -> Result<ExitCode> {
    probes::require_privileges()?;
    let probes::offsets::KernelFacts {
        offsets,
        drop_reasons,
    } = probes::offsets::KernelFacts::read()?;
    let names = KernelNames::from_kernel(drop_reasons);
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
    };
    if let Some(published) = &published {
        filter.addresses.push(published.address);
        filter.ports.push(published.port);
    }
    // The source's gateway too, so the ARP for it is seen (not for the host:
    // its gateway is this machine's real uplink).
    if let Some(gateway) = source_gateway(&source, &topology)
        && !filter.addresses.contains(&gateway)
    {
        filter.addresses.push(gateway);
    }
    let mut saved_events = args
        .save_events
        .as_ref()
        .map(|path| {
            std::fs::File::create(path)
                .map(std::io::BufWriter::new)
                .with_context(|| format!("cannot write {}", path.display()))
        })
        .transpose()?;
    let mut probes = Probes::attach(&filter, offsets)?;
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

    let expect_second_leg = proxy.is_some()
        && (destination.address.is_loopback() || source.netns != topology.host_netns);
    let mut run = Run {
        source,
        destination,
        topology,
        names,
        json: args.json,
        limit: count,
        requests_told: 0,
        exchanges_done: 0,
        waiting: VecDeque::new(),
        last_refresh: Instant::now(),
        changes: enrich::changes().ok(),
        last_loss: None,
        ruleset,
        expect_second_leg,
        proxy,
        published,
        last_request: None,
        legs_told: Vec::new(),
        unplaced: VecDeque::new(),
        arp_requests: VecDeque::new(),
        arp_requests_told: 0,
    };
    let mut assembler = Assembler::new(QUIET.as_nanos() as u64);
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut lost_reported = 0;
    loop {
        tokio::select! {
            events = probes.next_events() => {
                for raw in events? {
                    if let Some(event) = decode::decode(&raw, &run.names) {
                        if let Some(file) = saved_events.as_mut() {
                            serde_json::to_writer(&mut *file, &event)?;
                            file.write_all(b"\n")?;
                        }
                        assembler.push(event);
                    }
                }
            }
            _ = sleep(Duration::from_millis(50)) => {}
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
        // Losses are checked before telling, so the journeys they touch are flagged.
        let lost = probes.lost_events();
        if lost > lost_reported {
            eprintln!(
                "pkttrace: warning: the kernel dropped {} events because pkttrace's ring buffer was full; journeys seen around now may be missing hops",
                lost - lost_reported
            );
            lost_reported = lost;
            run.last_loss = Some(Instant::now());
        }
        for journey in assembler.take_finished(monotonic_now_ns()) {
            run.tell(journey).await?;
        }
        run.stop_waiting_for_old_requests();
        if count.is_some_and(|n| run.exchanges_done >= n)
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
    }
    for journey in assembler.take_all() {
        run.tell(journey).await?;
    }
    drop(probes);
    if let Some(mut file) = saved_events {
        file.flush()?;
    }
    if let Some(sender) = sender {
        match sender.join() {
            Ok(Err(error)) => {
                eprintln!("pkttrace: warning: the probe could not be sent: {error:#}")
            }
            Err(_) => eprintln!("pkttrace: warning: the probe sender failed"),
            Ok(Ok(())) => {}
        }
    }
    if run.requests_told == 0 {
        eprintln!(
            "pkttrace: saw no packet from {} to {}",
            run.source.label, run.destination.address
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

impl Run {
    fn stop_waiting_for_old_requests(&mut self) {
        while self
            .waiting
            .front()
            .is_some_and(|r| r.printed_at.elapsed() >= REPLY_WAIT)
        {
            self.waiting.pop_front();
            self.exchanges_done += 1;
        }
    }

    fn park(&mut self, journey: Journey) {
        if self.unplaced.len() == MAX_WAITING {
            self.unplaced.pop_front();
        }
        self.unplaced.push_back((journey, Instant::now()));
    }

    /// Every request told so far, of any kind.
    fn requests_so_far(&self) -> u64 {
        self.requests_told + self.legs_told.len() as u64 + self.arp_requests_told
    }

    /// Tells a journey, then any parked one that now answers a told request.
    async fn tell(&mut self, journey: Journey) -> Result<()> {
        let was_told = self.requests_so_far();
        self.tell_one(journey).await?;
        if self.requests_so_far() > was_told {
            self.unplaced.retain(|(_, at)| at.elapsed() < REPLY_WAIT);
            // The first answer is the one that came first.
            self.unplaced
                .make_contiguous()
                .sort_by_key(|(journey, _)| journey.id);
            for (journey, _) in std::mem::take(&mut self.unplaced) {
                Box::pin(self.tell(journey)).await?;
            }
        }
        Ok(())
    }

    async fn tell_one(&mut self, journey: Journey) -> Result<()> {
        let first = journey.first_packet();
        if let Transport::Arp { operation, .. } = first.transport {
            return self.tell_arp(journey, operation).await;
        }
        let starts_in_source = journey
            .events
            .iter()
            .find(|e| !matches!(e.kind, EventKind::Route { .. }))
            .is_some_and(|e| e.netns == self.source.netns);
        // A reply is whatever answers a request we told (same conntrack entry, or
        // the swapped tuple); after DNAT it comes from another address than DEST.
        // Conntrack knows the direction (on loopback both ways look alike);
        // without it, a request goes to DEST's port.
        let reply_direction = journey
            .events
            .iter()
            .any(|e| e.conntrack.is_some_and(|c| c.info >= IP_CT_IS_REPLY));
        let to_port =
            |port: Option<u16>| port.is_none_or(|port| destination_port(&first) == Some(port));
        let outgoing = first.dst == self.destination.address
            && starts_in_source
            && !reply_direction
            && to_port(self.destination.port);
        // docker-proxy serving a published port opens its own connection to the
        // container, from the host's namespace whoever the source is.
        let starts_in_host = journey
            .events
            .iter()
            .find(|e| !matches!(e.kind, EventKind::Route { .. }))
            .is_some_and(|e| e.netns == self.topology.host_netns);
        let second_leg = self.published.as_ref().is_some_and(|p| {
            first.dst == p.address && destination_port(&first) == Some(p.port) && !reply_direction
        }) && starts_in_host
            && !outgoing;
        let answered = self
            .waiting
            .iter()
            .rposition(|r| journey.answers(&r.journey));
        let (direction, reply_to, leg_of) = if let Some(index) = answered
            && !outgoing
            && !second_leg
        {
            // An exchange is a request and its first answer; behind a proxy, the
            // answer on the second leg.
            let request = self.waiting.remove(index).expect("found above");
            if !self.expect_second_leg || request.leg_of.is_some() {
                self.exchanges_done += 1;
            }
            (Direction::Reply, Some(request.journey.id), None)
        } else if outgoing || second_leg {
            if outgoing && self.limit.is_some_and(|n| self.requests_told >= n) {
                return Ok(());
            }
            let leg_of = second_leg.then_some(self.last_request).flatten();
            if second_leg && leg_of.is_none_or(|first| self.legs_told.contains(&first)) {
                // The proxy's later segments, or a connection of somebody else's.
                return Ok(());
            }
            (Direction::Request, None, leg_of)
        } else {
            // Somebody else's packet, or an answer to a request not told yet.
            self.park(journey);
            return Ok(());
        };
        self.refresh_topology(&journey).await;
        let facts = Facts {
            host_ip_forward: enrich::host_ip_forward(),
            events_lost: self.last_loss.is_some_and(|at| at.elapsed() < LOSS_SHADOW),
            bridge_calls_iptables: enrich::bridge_calls_iptables(),
            fdb: if self.crosses_a_bridge(&journey) {
                enrich::host_fdb().await.unwrap_or_default()
            } else {
                Vec::new()
            },
            dropping_rules: self.dropping_rules(&journey),
        };
        let mut story = explain::explain(&journey, direction, reply_to, &self.topology, &facts);
        story.second_leg_of = leg_of;
        if let Some(first_leg) = leg_of {
            self.legs_told.push(first_leg);
            let sender = journey
                .events
                .iter()
                .find_map(|e| e.process().map(|(_, pid)| pid));
            story.note = Some(explain::second_leg_note(
                first_leg,
                self.proxy.as_ref(),
                sender,
            ));
        } else if direction == Direction::Request
            && let (Some(published), Some(port)) = (&self.published, self.destination.port)
        {
            story.note = Some(explain::published_port_note(
                published,
                port,
                self.proxy.as_ref(),
            ));
        }
        if direction == Direction::Request {
            if leg_of.is_none() {
                self.requests_told += 1;
                self.last_request = Some(journey.id);
            }
            if journey.ended_in_drop() {
                self.exchanges_done += 1;
            } else {
                if self.waiting.len() == MAX_WAITING {
                    self.waiting.pop_front();
                    self.exchanges_done += 1;
                }
                self.waiting.push_back(WaitingRequest {
                    journey,
                    printed_at: Instant::now(),
                    leg_of,
                });
            }
        }
        self.print(&story)
    }

    /// Neighbour resolution on the path is its own short exchange, outside
    /// the request/reply count: a who-has request, and the is-at reply to it.
    async fn tell_arp(&mut self, journey: Journey, operation: u16) -> Result<()> {
        let (direction, reply_to) = if operation == 1 {
            (Direction::Request, None)
        } else {
            match self.arp_requests.iter().rposition(|r| journey.answers(r)) {
                Some(index) => (
                    Direction::Reply,
                    self.arp_requests.remove(index).map(|r| r.id),
                ),
                None => {
                    self.park(journey);
                    return Ok(());
                }
            }
        };
        let facts = Facts {
            fdb: enrich::host_fdb().await.unwrap_or_default(),
            ..Facts::default()
        };
        let story = explain::explain(&journey, direction, reply_to, &self.topology, &facts);
        if direction == Direction::Request {
            self.arp_requests_told += 1;
            if self.arp_requests.len() == MAX_WAITING {
                self.arp_requests.pop_front();
            }
            self.arp_requests.push_back(journey);
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

/// The default gateway of a container's or netns's main table.
fn source_gateway(source: &Source, topology: &Topology) -> Option<std::net::Ipv4Addr> {
    source.netns_path.as_ref()?;
    const MAIN_TABLE: u32 = 254;
    topology
        .namespace(source.netns)?
        .routes
        .iter()
        .find(|r| r.table == MAIN_TABLE && r.destination.is_none())?
        .gateway
}

/// `enum ip_conntrack_info` values from here on are the reply direction.
const IP_CT_IS_REPLY: u8 = 3;

fn destination_port(packet: &Packet) -> Option<u16> {
    match packet.transport {
        Transport::Tcp { dport, .. } | Transport::Udp { dport, .. } => Some(dport),
        _ => None,
    }
}

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
