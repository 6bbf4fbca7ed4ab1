//! The live source: the kernel's events from pkttrace's programs, taken in,
//! decoded and assembled into journeys, with the facts read for each where
//! it happened. `follow` and `dns` trace through it, so both start, take
//! events in, enrich and stop the same way.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Result;

use crate::{
    decode::KernelNames,
    enrich::{
        Topology,
        facts::{FactFinder, Facts, RefusedSend},
    },
    explain,
    journey::{self, Assembler, Journey},
    probes::{
        self, Filter, LossReport, Probes, Startup,
        features::{self, Feature},
        nftrace::{RuleTracer, TraceMatch},
    },
    render,
};

use super::intake::{Intake, Losses};

/// Start-up under way: the programs load and verify on a thread while the
/// command reads the topology and resolves what it was asked.
pub struct Loading {
    startup: Startup<KernelNames>,
    capture_payload: bool,
}

/// Checks pkttrace may trace, and begins loading its programs.
/// `capture_payload`: the TCP payload program is needed too (`dns`).
pub fn begin(capture_payload: bool, buffer_mb: Option<u32>) -> Result<Loading> {
    probes::require_privileges()?;
    Ok(Loading {
        startup: Startup::begin(capture_payload, buffer_mb, KernelNames::from_kernel),
        capture_payload,
    })
}

/// What a command traces.
pub struct Plan<'a> {
    /// What the programs keep.
    pub filter: Filter,
    /// Namespaces besides the host's where netfilter is observed (nsfs paths).
    pub traced_namespaces: Vec<PathBuf>,
    /// What nf_tables' trace marks, to name the rule that dropped a packet.
    pub trace: TraceMatch,
    /// `--save-events FILE`.
    pub save_events: Option<&'a Path>,
    /// What a loss warning says may miss steps: "journeys", "queries".
    pub told: &'static str,
    /// `follow --on-host`: only this Docker host's view is told (the
    /// topology given to `attach` is narrowed to it already).
    pub seen_from: Option<String>,
}

impl Loading {
    /// Attaches everything `plan` asks for once loading is done; from then
    /// on packets are followed. `topology`: the wiring read meanwhile.
    pub async fn attach(self, topology: Topology, plan: Plan<'_>) -> Result<Live> {
        let (programs, names) = self.startup.finish().await?;
        let mut intake = Intake::new(names, plan.save_events, plan.told)?;
        if plan.seen_from.is_some() {
            intake.see_only_in(Some(namespaces_of(&topology)));
        }
        let support = programs.support().clone();
        let probes = programs.attach(&plan.filter, &plan.traced_namespaces)?;
        let rule_tracer = if support.has(Feature::NftablesTrace) {
            RuleTracer::start_in_host_and(&plan.trace, &plan.traced_namespaces)
        } else {
            Err(format!(
                "nf_tables' trace is taken as absent ({})",
                features::PRETEND_ABSENT_VAR
            ))
        };
        intake.all_attached();
        for note in support.notes(self.capture_payload) {
            eprintln!("pkttrace: note: {note}");
        }
        if let Some(docker) = &topology.docker_error {
            eprintln!("pkttrace: note: {docker}; containers are shown by namespace only");
        }
        for unreachable in topology.engine_errors() {
            eprintln!("pkttrace: note: {unreachable}; its containers are shown by namespace only");
        }
        // A trace taken as absent was told of with the kernel's other gaps.
        if let Err(why) = &rule_tracer
            && support.has(Feature::NftablesTrace)
        {
            eprintln!("pkttrace: note: {why}; netfilter drops are told without their rule");
        }
        crate::allocator::fast_for_events();
        Ok(Live {
            seen_from: plan.seen_from.is_some(),
            facts: FactFinder::new(
                topology,
                &rule_tracer,
                !support.has(Feature::NetfilterPrograms),
            )
            .seen_from(plan.seen_from),
            probes,
            intake,
            rule_tracer,
            assembler: Assembler::new(journey::QUIET_NS),
        })
    }
}

/// Tracing: journeys come out as they finish, facts are read for them.
pub struct Live {
    probes: Probes,
    intake: Intake,
    assembler: Assembler,
    rule_tracer: Result<RuleTracer, String>,
    facts: FactFinder,
    /// Only one Docker host's view is told (`follow --on-host`).
    seen_from: bool,
}

/// The inodes of `topology`'s namespaces.
fn namespaces_of(topology: &Topology) -> Vec<u32> {
    topology.namespaces.iter().map(|ns| ns.inode).collect()
}

impl Live {
    /// The journeys seen whole that finished by now (waiting at most a
    /// tick); None once the user asked pkttrace to stop.
    pub async fn next(&mut self) -> Result<Option<Vec<Journey>>> {
        let rules = match (self.rule_tracer.as_mut(), self.facts.rule_traces_mut()) {
            (Ok(tracer), Some(store)) => Some((tracer, store)),
            _ => None,
        };
        if !self
            .intake
            .take_in(&mut self.probes, &mut self.assembler, rules)
            .await?
        {
            return Ok(None);
        }
        let finished = self
            .assembler
            .take_finished(self.intake.taken_in_up_to_ns());
        Ok(Some(self.intake.seen_whole(finished)))
    }

    /// Every event stamped before this (kernel clock) has been taken in.
    pub fn taken_in_up_to_ns(&self) -> u64 {
        self.intake.taken_in_up_to_ns()
    }

    /// Events the kernel dropped since tracing began.
    pub fn lost_events(&self) -> u64 {
        self.probes.lost_events()
    }

    /// When the kernel lost events, to mark the stories they may touch.
    pub fn losses(&self) -> &Losses {
        self.intake.losses()
    }

    pub fn topology(&self) -> &Topology {
        self.facts.topology()
    }

    /// The journeys under way, for a source that takes one out itself (a
    /// send the kernel refused).
    pub fn assembler(&mut self) -> &mut Assembler {
        &mut self.assembler
    }

    /// The facts for telling `journey` (an ARP exchange when `arp`), read
    /// where it happened: the wiring again first if it changed, then what
    /// its explanation wants. `events_lost`: the kernel lost events while
    /// it could have been traced.
    pub async fn facts_for(&mut self, journey: &Journey, arp: bool, events_lost: bool) -> Facts {
        self.facts.refresh_for(journey).await;
        if self.seen_from {
            // The host may have a namespace more now (a container started).
            self.intake
                .see_only_in(Some(namespaces_of(self.facts.topology())));
        }
        let wanted = explain::facts_wanted(journey, arp, self.facts.topology());
        self.facts.gather(&wanted, events_lost).await
    }

    /// What a send the kernel refused returned, with the path MTU its
    /// namespace holds now.
    pub async fn refused_send(&self, journey: &Journey, errno: i32, length: u16) -> RefusedSend {
        self.facts.refused_send(journey, errno, length).await
    }

    /// Tracing stops: what waits in the ring is taken in (so packets seen
    /// before the stop are told whole) and every journey still open ends.
    pub fn stop(&mut self) -> Result<Vec<Journey>> {
        self.intake
            .take_rest(&mut self.probes, &mut self.assembler)?;
        let rest = self.assembler.take_all();
        Ok(self.intake.seen_whole(rest))
    }

    /// Detaches everything, then says what the kernel lost or skipped: a
    /// line on stderr and, with `json` (its schema version), the last JSON
    /// record.
    pub fn end(self, json: Option<u32>) -> Result<()> {
        let losses = self.probes.loss_report();
        drop(self.probes);
        tell_losses(&losses, json);
        if let Ok(tracer) = &self.rule_tracer
            && tracer.lost() > 0
        {
            eprintln!(
                "pkttrace: warning: the kernel dropped {} nf_tables trace messages; a netfilter drop may be told without its rule",
                tracer.lost()
            );
        }
        drop(self.rule_tracer);
        self.intake.finish()
    }
}

/// The kernel's exact counts of what it lost or skipped, at the end.
fn tell_losses(losses: &LossReport, json: Option<u32>) {
    if losses.is_empty() {
        return;
    }
    eprintln!("pkttrace: {}", losses.sentence());
    if let Some(schema_version) = json {
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

/// The namespaces besides the host's where netfilter is observed: the
/// source's (`source_path` of namespace `source_netns`, none for the host),
/// those owning one of `addresses` (a container, an `ip netns` host on
/// this machine) and the underlays of VXLAN tunnels (where an overlay's
/// packets travel encapsulated), as nsfs paths.
pub fn traced_namespaces(
    source_netns: u32,
    source_path: Option<&Path>,
    addresses: &[IpAddr],
    topology: &Topology,
) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = source_path.map(Path::to_path_buf).into_iter().collect();
    for address in addresses {
        let owner = topology.namespaces.iter().find(|ns| {
            ns.inode != topology.host_netns
                && ns
                    .interfaces
                    .iter()
                    .any(|i| i.addresses.iter().any(|(a, _)| a == address))
        });
        if let Some(path) = owner.and_then(|ns| ns.nsfs_path.clone())
            && !paths.contains(&path)
            && owner.map(|ns| ns.inode) != Some(source_netns)
        {
            paths.push(path);
        }
    }
    // Tunnels' underlays, and the namespaces other Docker engines run in:
    // their NAT (MASQUERADE, published ports) happens there.
    let underlays = topology
        .vxlan_devices()
        .filter_map(|(_, _, vxlan)| vxlan.underlay_netns)
        .chain(topology.engines.iter().filter_map(|engine| engine.netns))
        .filter(|netns| *netns != topology.host_netns && *netns != source_netns)
        .filter_map(|netns| topology.namespace(netns)?.nsfs_path.clone());
    for path in underlays {
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    paths
}
