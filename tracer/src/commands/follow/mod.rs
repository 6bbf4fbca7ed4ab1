//! `pkttrace follow SOURCE DEST`: packets from SOURCE to DEST (a probe
//! pkttrace sends itself, or the traffic that comes), each journey paired
//! with its reply and told hop by hop. This command chooses what to trace
//! and where the stories go; the session engine traces, enriches and tells.

mod refused;
pub mod sender;

use std::{collections::BTreeMap, process::ExitCode, thread::JoinHandle, time::Duration};

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::{
    cli::FollowArgs,
    commands::target::{self, Probe, Source},
    enrich::{self, Topology},
    journey::{
        Journey,
        exchanges::{ArpResult, Exchanges, Role, Target},
    },
    probes::{Filter, nftrace::TraceMatch},
    render::{self, pcap::boot_time_ns},
    session::{
        Destination, Told,
        live::{self, Live, Plan},
        recording::{Header, Record, Recorder},
        sinks,
        teller::Teller,
    },
};

use refused::RefusedSends;
use sender::ProbeOutcome;

/// With `--probe`: how long the trace goes on once the sender is done, for
/// the last journeys (its answer's) to complete.
const AFTER_SENDER: Duration = Duration::from_millis(500);
/// Without `--probe`: how long a request waits for its reply before it is
/// told unanswered (a failed ARP takes three seconds to answer).
const PASSIVE_REPLY_WAIT: Duration = Duration::from_secs(5);

pub async fn run(args: FollowArgs) -> Result<ExitCode> {
    let loading = live::begin(false, args.kernel.buffer_mb)?;
    let topology = Topology::discover()
        .await
        .context("cannot read this host's network namespaces")?;
    let source = target::resolve_source(&args.source, &topology)?;
    let destination = target::resolve_destination(&args.dest, args.ipv6, &topology)?;
    let probe = args
        .probe
        .as_deref()
        .map(|p| target::parse_probe(p, &destination))
        .transpose()?;
    let count = args.count.or(probe.map(|_| 1));
    let timeout = args.timeout.or(probe.map(|_| 5)).map(Duration::from_secs);
    let transport = match probe {
        Some(Probe::Udp(_)) => "udp",
        _ => "tcp",
    };
    // A published port is DNATed (or proxied) to a container: watch that end too.
    let published = enrich::published_target(
        destination.address,
        destination.port,
        transport,
        &topology.port_bindings(),
        &topology,
    );
    let filter = filter(&source, destination, probe, &published, &topology, &args);
    // `--on-host`: what that Docker host alone sees of itself is told.
    let topology = match &args.on_host {
        Some(engine) => seen_from(&topology, engine)?,
        None => topology,
    };
    // Netfilter is observed (and its rules traced) where the packets can
    // meet it: the host, the source, and the namespaces of the addresses
    // followed when they are this machine's own.
    let source_path = source
        .netns_path
        .as_deref()
        .filter(|_| topology.namespace(source.netns).is_some());
    let traced_namespaces =
        live::traced_namespaces(source.netns, source_path, &filter.addresses, &topology);
    let trace = TraceMatch {
        addresses: filter.addresses.clone(),
        protocol: filter.protocol,
        vxlan_port: filter.vxlan_port,
    };
    let host_netns = topology.host_netns;
    // Docker's host: where its proxy listens for a published port (with the
    // userland proxy off, dockerd only holds the port, proxying nothing).
    let engine_host = published.as_ref().and_then(|p| {
        let netns = if p.host_netns == 0 {
            host_netns
        } else {
            p.host_netns
        };
        topology.namespace(netns).cloned()
    });
    let live = loading
        .attach(
            topology,
            Plan {
                filter,
                traced_namespaces,
                trace,
                save_events: args.save_events.as_deref(),
                told: "journeys",
                seen_from: args.on_host.clone(),
            },
        )
        .await?;
    say_following(&source, destination, probe, published.as_ref());
    let proxy = published
        .as_ref()
        .zip(engine_host)
        .and_then(|(_, engine_host)| {
            enrich::listeners_in(&engine_host, host_netns)
                .into_iter()
                .find(|l| {
                    // docker-proxy listens once per family (0.0.0.0 and [::]).
                    l.protocol == transport
                        && Some(l.address.port()) == destination.port
                        && l.address.is_ipv6() == destination.address.is_ipv6()
                        && l.proxy_target().is_some()
                })
        });
    let answer_timeout = timeout.unwrap_or(PASSIVE_REPLY_WAIT);
    let shape = sender::Shape {
        size: args.size,
        ttl: args.ttl,
    };
    let (refusals_sent, refusals) = std::sync::mpsc::channel();
    let mut sender = probe
        .map(|p| {
            sender::spawn(
                p,
                shape,
                destination,
                source.netns_path.as_deref(),
                count.unwrap_or(1),
                answer_timeout,
                refusals_sent,
            )
        })
        .transpose()?;

    // docker-proxy serves a published port for the host itself (on loopback)
    // and for containers, whose bridges Docker's DNAT rule skips.
    let expect_second_leg =
        proxy.is_some() && (destination.address.is_loopback() || source.netns != host_netns);
    let exchanges = Exchanges::new(Target {
        destination: destination.address,
        port: destination.port,
        source_netns: source.netns,
        source_elsewhere: live.topology().namespace(source.netns).is_none(),
        host_netns,
        published: published.as_ref().map(|p| (p.address, p.port)),
        expect_second_leg,
        limit: count,
        reply_wait: answer_timeout,
        arp_journeys: args.arp,
        every_reply: args.summary.is_some(),
    });
    // One reading, so a replay stamps the capture exactly as this run did.
    let boot_ns = boot_time_ns();
    let sinks = sinks::chosen(
        args.json,
        args.step,
        args.summary.map(std::time::Duration::from_secs),
        args.pcap.as_deref(),
        args.svg.as_deref(),
        boot_ns,
    )?;
    let recorder = args
        .record
        .as_deref()
        .map(|path| {
            Recorder::create(
                path,
                Header::follow(
                    &source.label,
                    destination,
                    published.clone(),
                    proxy.clone(),
                    args.pcap.is_some(),
                    boot_ns,
                ),
            )
        })
        .transpose()?;
    let mut run = Run {
        live,
        teller: Teller::new(destination, published, proxy, sinks),
        refused: RefusedSends::new(
            probe.map_or(0, |p| sender::packet_length(p, shape, destination.address)),
        ),
        source,
        destination,
        exchanges,
        numbers: Numbering::default(),
        recorder,
    };
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t + AFTER_SENDER);
    let mut sender_done: Option<(Instant, Vec<ProbeOutcome>)> = None;
    while let Some(journeys) = run.live.next().await? {
        for journey in journeys {
            run.place(journey).await?;
        }
        for told in run.exchanges.tick() {
            run.tell(told).await?;
        }
        run.refused.take_in(&refusals);
        run.tell_refused_sends().await?;
        run.teller.tick(run.live.lost_events())?;
        if sender_done.is_none()
            && let Some(finished) = sender.take_if(|s| s.is_finished())
        {
            sender_done = Some((Instant::now(), join_sender(finished)));
        }
        let probe_over = sender_done
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() >= AFTER_SENDER);
        let passive_over = probe.is_none() && count.is_some_and(|n| run.exchanges.done() >= n);
        if probe_over || passive_over || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    for journey in run.live.stop()? {
        run.place(journey).await?;
    }
    for told in run.exchanges.finish() {
        run.tell(told).await?;
    }
    run.teller.tick(run.live.lost_events())?;
    run.teller.finish().await?;
    let Run {
        live,
        exchanges,
        teller,
        mut recorder,
        source,
        ..
    } = run;
    live.end(args.json.then_some(render::json::SCHEMA_VERSION))?;
    let probe_outcomes = match (sender_done, sender) {
        (Some((_, outcomes)), _) => Some(outcomes),
        // Still waiting for its answer when tracing stopped (Ctrl-C).
        (None, Some(_)) => Some(Vec::new()),
        (None, None) => None,
    };
    let seen = exchanges.requests_told() > 0;
    // A probe's own socket is the ground truth of whether it got its answer.
    let worked = match probe_outcomes {
        Some(outcomes) => outcomes.contains(&ProbeOutcome::Answered),
        None => teller.answered(),
    };
    let exit_code = if seen && worked { 0 } else { 1 };
    if let Some(recorder) = recorder.as_mut() {
        recorder.write(&Record::End { exit_code })?;
    }
    if !seen {
        teller.saw_nothing(&source.label);
    }
    Ok(ExitCode::from(exit_code))
}

/// What the programs keep: the destination, the container behind a
/// published port, the source's gateway (so the ARP for it is seen), the
/// probe's protocol and port.
fn filter(
    source: &Source,
    destination: Destination,
    probe: Option<Probe>,
    published: &Option<enrich::Published>,
    topology: &Topology,
    args: &FollowArgs,
) -> Filter {
    let mut filter = Filter {
        addresses: vec![destination.address],
        protocol: probe.map(|p| p.protocol(destination.address)),
        ports: probe
            .and_then(Probe::port)
            .or(destination.port)
            .into_iter()
            .collect(),
        capture_headers: args.pcap.is_some(),
        vxlan_port: topology.vxlan_port(),
        ..Filter::default()
    };
    if let Some(published) = published {
        filter.addresses.push(published.address);
        filter.ports.push(published.port);
    }
    // Not the host's gateway: that is this machine's real uplink.
    if let Some(gateway) = source.gateway(topology, destination.address.is_ipv6())
        && !filter.addresses.contains(&gateway)
    {
        filter.addresses.push(gateway);
    }
    filter
}

/// The machine as the Docker host `engine` sees itself; a clear error
/// when there is no such engine.
fn seen_from(topology: &Topology, engine: &str) -> Result<Topology> {
    topology.seen_from(engine).ok_or_else(|| {
        let known = topology.engine_names();
        let known = if known.is_empty() {
            "no Docker engine runs here".to_string()
        } else {
            format!("the engines here are {}", known.join(", "))
        };
        target::InputError(format!(
            "--on-host {engine}: no Docker engine here names its host {engine} ({known}); give one of those names"
        ))
        .into()
    })
}

/// The line that says tracing began.
fn say_following(
    source: &Source,
    destination: Destination,
    probe: Option<Probe>,
    published: Option<&enrich::Published>,
) {
    let to = match destination.port {
        Some(port) => std::net::SocketAddr::new(destination.address, port).to_string(),
        None => destination.address.to_string(),
    };
    let behind = published
        .map(|p| {
            format!(
                " (published port of {}: {})",
                p.container,
                std::net::SocketAddr::new(p.address, p.port)
            )
        })
        .unwrap_or_default();
    eprintln!(
        "pkttrace: following {} → {to}{behind}{}",
        source.label,
        if probe.is_some() {
            " (sending the probe now)"
        } else {
            "; waiting for traffic (Ctrl-C to stop)"
        }
    );
}

/// The sender's report on its probes; a failure to send is said, and counts
/// as no answer.
fn join_sender(sender: JoinHandle<Result<Vec<ProbeOutcome>>>) -> Vec<ProbeOutcome> {
    match sender.join() {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(error)) => {
            eprintln!("pkttrace: warning: the probe could not be sent: {error:#}");
            Vec::new()
        }
        Err(_) => {
            eprintln!("pkttrace: warning: the probe sender failed");
            Vec::new()
        }
    }
}

struct Run {
    live: Live,
    source: Source,
    destination: Destination,
    /// Sends the kernel refused with the route found (EMSGSIZE), to be told.
    refused: RefusedSends,
    exchanges: Exchanges,
    numbers: Numbering,
    teller: Teller,
    /// `--record FILE`: what each story is told from.
    recorder: Option<Recorder>,
}

impl Run {
    /// Tells the journeys the exchanges take, in the order they come.
    async fn place(&mut self, journey: Journey) -> Result<()> {
        for told in self.exchanges.place(journey) {
            self.tell(told).await?;
        }
        Ok(())
    }

    /// The lookups of refused sends whose events are all in by now.
    async fn tell_refused_sends(&mut self) -> Result<()> {
        let taken_in = self.live.taken_in_up_to_ns();
        let journeys = self.refused.journeys(
            self.live.assembler(),
            taken_in,
            self.source.netns,
            self.destination.address,
        );
        for journey in journeys {
            self.place(journey).await?;
        }
        Ok(())
    }

    /// Tells a journey with the facts read for it, or a missing reply,
    /// marked when the kernel lost events while it was under way.
    async fn tell(&mut self, told: crate::journey::exchanges::Told) -> Result<()> {
        let told = match told {
            crate::journey::exchanges::Told::Journey(mut journey, role) => {
                let refused_errno = self.refused.by_journey.remove(&journey.id);
                let role = self.numbered_role(role);
                journey.id = self.numbers.of(journey.id);
                let arp = matches!(role, Role::ArpRequest { .. } | Role::ArpReply { .. });
                let events_lost = self.live.losses().around(&journey);
                let mut facts = self.live.facts_for(&journey, arp, events_lost).await;
                if let Some(errno) = refused_errno {
                    facts.refused_send = Some(
                        self.live
                            .refused_send(&journey, errno, self.refused.length)
                            .await,
                    );
                }
                Told::Journey {
                    journey,
                    role,
                    facts: Box::new(facts),
                }
            }
            crate::journey::exchanges::Told::NoReply {
                request,
                sent_ns,
                waited,
            } => Told::NoReply {
                request: self.numbers.of(request),
                waited_ms: waited.as_millis() as u64,
                events_lost: self.live.losses().between(
                    sent_ns.saturating_sub(crate::journey::QUIET_NS),
                    sent_ns + waited.as_nanos() as u64,
                ),
            },
        };
        let topology = self.live.topology();
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.told(&told, topology)?;
        }
        self.teller.tell(&told, topology)
    }

    fn numbered_role(&mut self, role: Role) -> Role {
        let mut number = |id| self.numbers.of(id);
        match role {
            Role::Request => Role::Request,
            Role::Retransmission { of } => Role::Retransmission { of: number(of) },
            Role::SameFlow { of } => Role::SameFlow { of: number(of) },
            Role::SecondLeg { of } => Role::SecondLeg { of: number(of) },
            Role::Reply { to } => Role::Reply { to: number(to) },
            Role::ArpReply { to } => Role::ArpReply { to: number(to) },
            Role::ArpRequest {
                result: ArpResult::Answered { asked, reply, mac },
            } => Role::ArpRequest {
                result: ArpResult::Answered {
                    asked,
                    reply: number(reply),
                    mac,
                },
            },
            Role::ArpRequest { result } => Role::ArpRequest { result },
        }
    }
}

/// The number each journey is told with: 1, 2, 3 … in the order they are
/// told (the assembler's ids skip journeys nobody is told about).
#[derive(Default)]
struct Numbering {
    by_id: BTreeMap<u64, u64>,
    given: u64,
}

/// Journeys whose number is remembered: far more than can still be
/// mentioned again (a reply names a request still waiting, and at most
/// 1024 wait), so a long run does not grow without bound.
const MAX_NUMBERED: usize = 1 << 16;

impl Numbering {
    /// The number `id` is told with, given on its first mention.
    fn of(&mut self, id: u64) -> u64 {
        if let Some(&number) = self.by_id.get(&id) {
            return number;
        }
        if self.by_id.len() == MAX_NUMBERED {
            // The assembler's ids grow: the smallest is the oldest journey.
            self.by_id.pop_first();
        }
        self.given += 1;
        self.by_id.insert(id, self.given);
        self.given
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journeys_are_numbered_in_the_order_told_and_the_memory_is_bounded() {
        let mut numbers = Numbering::default();
        assert_eq!(numbers.of(40), 1);
        assert_eq!(numbers.of(7), 2, "told second, whatever its id");
        assert_eq!(numbers.of(40), 1, "the same journey keeps its number");
        for id in 100..100 + MAX_NUMBERED as u64 {
            numbers.of(id);
        }
        assert_eq!(numbers.by_id.len(), MAX_NUMBERED);
        assert_eq!(
            numbers.of(100 + MAX_NUMBERED as u64 - 1),
            MAX_NUMBERED as u64 + 2,
            "recent ones are remembered"
        );
        assert_eq!(
            numbers.of(7),
            MAX_NUMBERED as u64 + 3,
            "the oldest were forgotten"
        );
    }
}
