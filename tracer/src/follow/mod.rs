//! `pkttrace follow SOURCE DEST`: wires the stages together. Probes stream
//! raw events (and nf_tables rule traces), decoding types them, the
//! assembler builds journeys and the exchanges pair them, the topology and
//! the settings read where they happened name what they touched, the
//! explanation tells them, and a renderer prints them.

use std::{collections::BTreeMap, process::ExitCode, thread::JoinHandle, time::Duration};

use anyhow::{Context, Result};
use tokio::time::Instant;

pub mod teller;

pub use teller::{Output, Teller};

use crate::{
    cli::FollowArgs,
    enrich::{self, Topology},
    facts::FactFinder,
    intake::{Intake, Losses},
    journey::{
        self, Assembler, Journey,
        exchanges::{ArpResult, Exchanges, Role, Target, Told},
    },
    probes::{
        self, Filter,
        nftrace::{RuleTracer, TraceMatch},
    },
    recording::{Header, Record, Recorder},
    render::{self, pcap::boot_time_ns},
    sender::{self, ProbeOutcome},
    target::{self, Source},
};

/// With `--probe`: how long the trace goes on once the sender is done, for
/// the last journeys (its answer's) to complete.
const AFTER_SENDER: Duration = Duration::from_millis(500);
/// Without `--probe`: how long a request waits for its reply before it is
/// told unanswered (a failed ARP takes three seconds to answer).
const PASSIVE_REPLY_WAIT: Duration = Duration::from_secs(5);

struct Run {
    source: Source,
    /// Sends the kernel refused with the route found (EMSGSIZE), to be told.
    refused: RefusedSends,
    exchanges: Exchanges,
    facts: FactFinder,
    numbers: Numbering,
    teller: Teller,
    /// `--record FILE`: what each story is told from.
    recorder: Option<Recorder>,
}

/// The probe's sends its kernel refused though its route lookup found a
/// way (too big for the learned path MTU): each becomes the journey of that
/// lookup once the events up to the refusal are in, and is told with what
/// the send returned. Refusals for want of a route need none of this: their
/// failed lookups are journeys of their own.
#[derive(Default)]
struct RefusedSends {
    /// Refusals heard of, with the kernel time they were heard at.
    waiting: Vec<(sender::Refusal, u64)>,
    /// Journey id to the errno of its send.
    by_journey: BTreeMap<u64, i32>,
    /// The IPv4 length the probe's packets have.
    length: u16,
}

impl RefusedSends {
    fn take_in(&mut self, refusals: &std::sync::mpsc::Receiver<sender::Refusal>) {
        let heard_ns = probes::monotonic_now_ns();
        self.waiting.extend(
            refusals
                .try_iter()
                .filter(|r| r.errno == libc::EMSGSIZE)
                .map(|r| (r, heard_ns)),
        );
    }

    /// The lookups of refused sends whose events are all in by now.
    fn journeys(
        &mut self,
        assembler: &mut Assembler,
        taken_in_up_to_ns: u64,
        source_netns: u32,
        destination: std::net::Ipv4Addr,
    ) -> Vec<Journey> {
        let (ready, waiting) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(_, heard)| taken_in_up_to_ns >= *heard);
        self.waiting = waiting;
        let mut journeys = Vec::new();
        for (refusal, _) in ready {
            let lookup = assembler.take_sender_lookup(
                std::process::id(),
                source_netns,
                destination,
                refusal.at_ns,
            );
            if let Some(journey) = lookup {
                self.by_journey.insert(journey.id, refusal.errno);
                journeys.push(journey);
            }
        }
        journeys
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

pub async fn run(args: FollowArgs) -> Result<ExitCode> {
    probes::require_privileges()?;
    let startup = probes::Startup::begin(false, args.kernel.buffer_mb);
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
    let timeout = args.timeout.or(probe.map(|_| 5)).map(Duration::from_secs);
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
        capture_headers: args.pcap.is_some(),
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
    // Netfilter is observed (and its rules traced) where the packets can
    // meet it: the host, the source, and the namespaces of the addresses
    // followed when they are this machine's own.
    let traced_namespaces = target::traced_namespaces(
        source.netns,
        source.netns_path.as_deref(),
        &filter.addresses,
        &topology,
    );
    let (programs, names) = startup.finish().await?;
    let mut intake = Intake::new(names, args.save_events.as_deref(), "journeys")?;
    let mut probes = programs.attach(&filter, &traced_namespaces)?;
    let mut rule_tracer = RuleTracer::start_in_host_and(
        &TraceMatch {
            addresses: filter.addresses.clone(),
            protocol: filter.protocol,
        },
        &traced_namespaces,
    );
    intake.all_attached();
    if let Some(docker) = &topology.docker_error {
        eprintln!("pkttrace: note: {docker}; containers are shown by namespace only");
    }
    if let Err(why) = &rule_tracer {
        eprintln!("pkttrace: note: {why}; netfilter drops are told without their rule");
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
    crate::allocator::fast_for_events();
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
        reply_wait: answer_timeout,
        arp_journeys: args.arp,
    });
    // One reading, so a replay stamps the capture exactly as this run did.
    let boot_ns = boot_time_ns();
    let output = Output::new(
        args.json,
        args.step,
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
        teller: Teller::new(destination, published, proxy, output),
        refused: RefusedSends {
            length: probe.map_or(0, |p| sender::packet_length(p, shape)),
            ..RefusedSends::default()
        },
        source,
        exchanges,
        facts: FactFinder::new(topology, &rule_tracer),
        numbers: Numbering::default(),
        recorder,
    };
    let mut assembler = Assembler::new(journey::QUIET_NS);
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t + AFTER_SENDER);
    let mut sender_done: Option<(Instant, Vec<ProbeOutcome>)> = None;
    loop {
        let rules = match (rule_tracer.as_mut(), run.facts.rule_traces_mut()) {
            (Ok(tracer), Some(store)) => Some((tracer, store)),
            _ => None,
        };
        if !intake.take_in(&mut probes, &mut assembler, rules).await? {
            break;
        }
        for journey in intake.seen_whole(assembler.take_finished(intake.taken_in_up_to_ns())) {
            run.place(journey, intake.losses()).await?;
        }
        for told in run.exchanges.tick() {
            run.tell(told, intake.losses()).await?;
        }
        run.refused.take_in(&refusals);
        for journey in run.refused.journeys(
            &mut assembler,
            intake.taken_in_up_to_ns(),
            run.source.netns,
            destination.address,
        ) {
            run.place(journey, intake.losses()).await?;
        }
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
    intake.take_rest(&mut probes, &mut assembler)?;
    for journey in intake.seen_whole(assembler.take_all()) {
        run.place(journey, intake.losses()).await?;
    }
    for told in run.exchanges.finish() {
        run.tell(told, intake.losses()).await?;
    }
    run.teller.finish().await?;
    let losses = probes.loss_report();
    drop(probes);
    tell_losses(&losses, args.json, render::json::SCHEMA_VERSION);
    if let Ok(tracer) = &rule_tracer
        && tracer.lost() > 0
    {
        eprintln!(
            "pkttrace: warning: the kernel dropped {} nf_tables trace messages; a netfilter drop may be told without its rule",
            tracer.lost()
        );
    }
    drop(rule_tracer);
    intake.finish()?;
    let probe_outcomes = match (sender_done, sender) {
        (Some((_, outcomes)), _) => Some(outcomes),
        // Still waiting for its answer when tracing stopped (Ctrl-C).
        (None, Some(_)) => Some(Vec::new()),
        (None, None) => None,
    };
    let seen = run.exchanges.requests_told() > 0;
    // A probe's own socket is the ground truth of whether it got its answer.
    let worked = match probe_outcomes {
        Some(outcomes) => outcomes.contains(&ProbeOutcome::Answered),
        None => run.teller.answered(),
    };
    let exit_code = if seen && worked { 0 } else { 1 };
    if let Some(recorder) = run.recorder.as_mut() {
        recorder.write(&Record::End { exit_code })?;
    }
    if !seen {
        run.teller.saw_nothing(&run.source.label);
    }
    Ok(ExitCode::from(exit_code))
}

/// The kernel's exact counts of what it lost or skipped, at the end: a
/// line on stderr, and the last JSON record.
pub fn tell_losses(losses: &probes::LossReport, json: bool, schema_version: u32) {
    if losses.is_empty() {
        return;
    }
    eprintln!("pkttrace: {}", losses.sentence());
    if json {
        println!(
            "{}",
            render::json::losses(
                schema_version,
                losses.delivered,
                &losses.lost,
                &losses.skipped
            )
        );
    }
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

impl Run {
    /// Tells the journeys the exchanges take, in the order they come.
    async fn place(&mut self, journey: Journey, losses: &Losses) -> Result<()> {
        for told in self.exchanges.place(journey) {
            self.tell(told, losses).await?;
        }
        Ok(())
    }

    /// Tells a journey with the facts read for it, or a missing reply,
    /// marked when the kernel lost events while it was under way.
    async fn tell(&mut self, told: Told, losses: &Losses) -> Result<()> {
        match told {
            Told::Journey(mut journey, role) => {
                let refused_errno = self.refused.by_journey.remove(&journey.id);
                let role = self.numbered_role(role);
                journey.id = self.number(journey.id);
                let arp = matches!(role, Role::ArpRequest { .. } | Role::ArpReply { .. });
                let events_lost = losses.around(&journey);
                let mut facts = self.facts.for_journey(&journey, arp, events_lost).await;
                if let Some(errno) = refused_errno {
                    facts.refused_send = Some(
                        self.facts
                            .refused_send(&journey, errno, self.refused.length)
                            .await,
                    );
                }
                let topology = self.facts.topology();
                if let Some(recorder) = self.recorder.as_mut() {
                    recorder.journey(topology, &journey, role, &facts)?;
                }
                self.teller.journey(&journey, role, topology, &facts)
            }
            Told::NoReply { request, waited } => {
                let request = self.number(request);
                let Some(sent_ns) = self.teller.request(request).map(|r| r.sent_ns) else {
                    return Ok(());
                };
                let events_lost = losses.between(
                    sent_ns.saturating_sub(journey::QUIET_NS),
                    sent_ns + waited.as_nanos() as u64,
                );
                let waited_ms = waited.as_millis() as u64;
                if let Some(recorder) = self.recorder.as_mut() {
                    recorder.write(&Record::NoReply {
                        request,
                        waited_ms,
                        events_lost,
                    })?;
                }
                self.teller.no_reply(request, waited_ms, events_lost)
            }
        }
    }

    fn number(&mut self, id: u64) -> u64 {
        self.numbers.of(id)
    }

    fn numbered_role(&mut self, role: Role) -> Role {
        match role {
            Role::Request => Role::Request,
            Role::Retransmission { of } => Role::Retransmission {
                of: self.number(of),
            },
            Role::SameFlow { of } => Role::SameFlow {
                of: self.number(of),
            },
            Role::SecondLeg { of } => Role::SecondLeg {
                of: self.number(of),
            },
            Role::Reply { to } => Role::Reply {
                to: self.number(to),
            },
            Role::ArpReply { to } => Role::ArpReply {
                to: self.number(to),
            },
            Role::ArpRequest {
                result: ArpResult::Answered { asked, reply, mac },
            } => Role::ArpRequest {
                result: ArpResult::Answered {
                    asked,
                    reply: self.number(reply),
                    mac,
                },
            },
            Role::ArpRequest { result } => Role::ArpRequest { result },
        }
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
