//! What the explanation is told besides a journey, gathered for it where
//! it happened: the namespaces' IPv4 settings, the netfilter hooks with
//! chains, the rule nf_tables' trace says dropped it, the bridges'
//! forwarding databases. Shared by `follow` and `dns`, so that both tell a
//! journey the same way.

use std::{collections::HashMap, time::Duration};

use tokio::time::Instant;

use crate::{
    decode::{Event, EventKind, Hook},
    enrich::{self, Topology},
    explain::{Facts, RefusedSend, RuleAction, RuleVerdict},
    journey::{
        Journey,
        rules::{RuleTraces, TracedDrop},
    },
    probes::nftrace::RuleTracer,
};

/// How long a namespace's list of netfilter hooks with chains is trusted
/// before it is read again (rules come and go during a demo).
const HOOKS_FRESH: Duration = Duration::from_secs(2);
/// pkttrace's own trace tables, which are no chains of the ruleset.
const OWN_TABLES: &str = "pkttrace_";

pub struct FactFinder {
    topology: Topology,
    last_refresh: Instant,
    /// Marked when rtnetlink or Docker report a change to the wiring.
    changes: Option<tokio::sync::watch::Receiver<()>>,
    /// nf_tables' traces of the followed packets, to name the rule that dropped one.
    rule_traces: Option<RuleTraces>,
    /// Why rules cannot be traced, when they cannot.
    rule_tracing_unavailable: Option<String>,
    /// Per namespace: the netfilter hooks with chains, and when they were read.
    netfilter_hooks: HashMap<u32, (Instant, Vec<Hook>)>,
}

impl FactFinder {
    /// With the traces of `rule_tracer` when it runs; otherwise with why
    /// it could not start.
    pub fn new(topology: Topology, rule_tracer: &Result<RuleTracer, String>) -> Self {
        let rule_traces = rule_tracer
            .as_ref()
            .ok()
            .map(|tracer| RuleTraces::new(tracer.table()));
        let rule_tracing_unavailable = rule_tracer.as_ref().err().cloned();
        Self {
            topology,
            last_refresh: Instant::now(),
            changes: enrich::changes().ok(),
            rule_traces,
            rule_tracing_unavailable,
            netfilter_hooks: HashMap::new(),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Where the rule tracer's messages go.
    pub fn rule_traces_mut(&mut self) -> Option<&mut RuleTraces> {
        self.rule_traces.as_mut()
    }

    /// The facts for telling `journey`; `arp` when it is an ARP exchange (the
    /// bridges' forwarding databases then always matter). The topology is
    /// read again first when the wiring changed.
    pub async fn for_journey(&mut self, journey: &Journey, arp: bool, events_lost: bool) -> Facts {
        self.refresh_topology(journey).await;
        let bridged = self.crosses_a_bridge(journey);
        Facts {
            events_lost,
            // Only what a bridge does needs it: a file read per journey is
            // too much for a stream.
            bridge_calls_iptables: bridged.then(enrich::bridge_calls_iptables).flatten(),
            fdb: if arp || bridged {
                enrich::host_fdb().await.unwrap_or_default()
            } else {
                Vec::new()
            },
            ipv4: enrich::journey_ipv4_settings(journey, &self.topology),
            rule_verdict: self.rule_verdict(journey).await,
            rule_tracing_unavailable: self.rule_tracing_unavailable.clone(),
            netfilter_hooks: self.netfilter_hooks_for(journey).await,
            refused_send: None,
        }
    }

    /// What a refused send returned, with the path MTU the sender's
    /// namespace holds for the destination now (read for EMSGSIZE only).
    pub async fn refused_send(&self, journey: &Journey, errno: i32, length: u16) -> RefusedSend {
        let lookup = journey.events.first();
        let namespace = lookup
            .and_then(|e| self.topology.namespace(e.netns))
            .cloned();
        let destination = journey.first_packet().dst;
        let host = self.topology.host_netns;
        let path_mtu = match namespace {
            Some(namespace) if errno == libc::EMSGSIZE => {
                tokio::task::spawn_blocking(move || enrich::path_mtu(&namespace, destination, host))
                    .await
                    .ok()
                    .flatten()
            }
            _ => None,
        };
        RefusedSend {
            errno,
            length,
            path_mtu,
        }
    }

    /// For a netfilter drop: the rule (or policy) nf_tables' trace says
    /// decided, worded as the ruleset of the namespace it is in has it.
    async fn rule_verdict(&self, journey: &Journey) -> Option<RuleVerdict> {
        let traces = self.rule_traces.as_ref()?;
        let (drop, traced) = journey
            .located()
            .filter(|(_, e)| matches!(e.kind, EventKind::Drop { .. }))
            .map(|(netns, e)| Event { netns, ..e.clone() })
            .find_map(|e| traces.drop_of(&e).map(|traced| (e, traced)))?;
        let namespace = self.topology.namespace(drop.netns)?.clone();
        let host = self.topology.host_netns;
        // nft runs as a subprocess: not on the event loop's thread.
        let ruleset =
            tokio::task::spawn_blocking(move || enrich::read_ruleset_of(&namespace, host))
                .await
                .ok()?
                .ok();
        Some(rule_verdict(traced, ruleset.as_ref()))
    }

    /// The hooks with chains of every namespace the journey met netfilter
    /// in, read again when older than HOOKS_FRESH.
    async fn netfilter_hooks_for(&mut self, journey: &Journey) -> Vec<(u32, Vec<Hook>)> {
        let mut namespaces: Vec<u32> = journey
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Netfilter { .. }))
            .map(|e| e.netns)
            .collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        let mut known = Vec::new();
        for netns in namespaces {
            let fresh = self
                .netfilter_hooks
                .get(&netns)
                .filter(|(at, _)| at.elapsed() < HOOKS_FRESH);
            let hooks = match fresh {
                Some((_, hooks)) => Some(hooks.clone()),
                None => {
                    let Some(namespace) = self.topology.namespace(netns).cloned() else {
                        continue;
                    };
                    let host = self.topology.host_netns;
                    // nft runs as a subprocess: not on the event loop's thread.
                    let read = tokio::task::spawn_blocking(move || {
                        enrich::netfilter_hooks_of(&namespace, host, OWN_TABLES)
                    })
                    .await;
                    let hooks = read.ok().and_then(Result::ok);
                    if let Some(hooks) = &hooks {
                        self.netfilter_hooks
                            .insert(netns, (Instant::now(), hooks.clone()));
                    }
                    hooks
                }
            };
            known.extend(hooks.map(|hooks| (netns, hooks)));
        }
        known
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
            // Boxed: a rare call whose large future would otherwise be
            // moved with every journey's facts.
            if let Ok(topology) = Box::pin(Topology::discover()).await {
                self.topology = topology;
            }
        }
    }
}

/// A traced drop worded with its rule as the ruleset lists it; a rule the
/// listing no longer has is named by its handle.
fn rule_verdict(traced: TracedDrop, ruleset: Option<&enrich::Ruleset>) -> RuleVerdict {
    let rule = traced
        .handle
        .and_then(|handle| ruleset?.rule(&traced.family, &traced.table, &traced.chain, handle));
    let (text, action) = match (traced.handle, rule) {
        (None, _) => ("policy drop".to_string(), RuleAction::PolicyDrop),
        (Some(_), Some(rule)) => {
            let reject = rule.action.as_deref() == Some("reject");
            (
                rule.text.clone(),
                if reject {
                    RuleAction::Reject
                } else {
                    RuleAction::Drop
                },
            )
        }
        (Some(handle), None) => (format!("rule handle {handle}"), RuleAction::Drop),
    };
    RuleVerdict {
        table: format!("{} {}", traced.family, traced.table),
        chain: traced.chain,
        through: traced.through,
        handle: traced.handle,
        text,
        action,
    }
}
