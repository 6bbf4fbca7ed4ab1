//! What the explanation is told besides a journey, gathered for it where
//! it happened: the namespaces' IPv4 settings, the netfilter hooks with
//! chains, the rule nf_tables' trace says dropped it, the bridges'
//! forwarding databases. Shared by `follow` and `dns`, so that both tell a
//! journey the same way.

use std::{collections::HashMap, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{
    decode::{Event, Hook},
    enrich::{self, FdbEntry, Ipv4Settings, Listener, Topology},
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
    /// The kernel has no netfilter programs (`Facts::hooks_unseen`).
    hooks_unseen: bool,
    /// Per namespace: the netfilter hooks with chains, and when they were read.
    netfilter_hooks: HashMap<u32, (Instant, enrich::FamilyHooks)>,
    /// Per namespace: its listening sockets, and when they were read.
    listeners: HashMap<u32, (Instant, Vec<Listener>)>,
    /// The Docker host whose view alone is told (`follow --on-host`): the
    /// wiring read again is narrowed to it too.
    seen_from: Option<String>,
}

/// A fact the explanation asks for, by kind: enrichment reads it without
/// knowing why it is wanted.
#[derive(Clone, Debug, PartialEq)]
pub enum Wanted {
    /// `net.ipv4.conf.DEVICE.*` in namespace `netns`.
    Ipv4Settings {
        netns: u32,
        device: String,
        /// The IPv6 settings (`net.ipv6.conf.DEVICE.*`).
        ipv6: bool,
    },
    /// The forwarding databases of namespace `netns` (its bridges' and
    /// VXLAN devices').
    BridgeFdb { netns: u32 },
    /// `net.bridge.bridge-nf-call-iptables`.
    BridgeCallsIptables,
    /// The IPv4 hooks where namespace `netns` has base chains.
    NetfilterHooks { netns: u32 },
    /// The rule or chain policy nf_tables' trace says dropped the packet of
    /// `drop` (an event with the namespace it happened in).
    DropRule { drop: Box<Event> },
    /// Every socket of any namespace listening on (TCP) or bound to (UDP)
    /// `port` of `protocol` (`tcp` or `udp`).
    Listeners { protocol: &'static str, port: u16 },
}

impl FactFinder {
    /// With the traces of `rule_tracer` when it runs; otherwise with why
    /// it could not start.
    /// `hooks_unseen`: the kernel has no netfilter programs.
    pub fn new(
        topology: Topology,
        rule_tracer: &Result<RuleTracer, String>,
        hooks_unseen: bool,
    ) -> Self {
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
            hooks_unseen,
            netfilter_hooks: HashMap::new(),
            listeners: HashMap::new(),
            seen_from: None,
        }
    }

    /// Tells only what the Docker host `engine` sees (the topology given
    /// to `new` is already narrowed to it).
    pub fn seen_from(mut self, engine: Option<String>) -> Self {
        self.seen_from = engine;
        self
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Where the rule tracer's messages go.
    pub fn rule_traces_mut(&mut self) -> Option<&mut RuleTraces> {
        self.rule_traces.as_mut()
    }

    /// Reads the wiring again when it changed before `journey` is told (a
    /// container started after pkttrace did): what is wanted for it is
    /// decided on the topology it happened on.
    pub async fn refresh_for(&mut self, journey: &Journey) {
        self.refresh_topology(journey).await;
    }

    /// The facts `wanted`, read now. `events_lost`: the kernel lost events
    /// while the journey could have been traced.
    pub async fn gather(&mut self, wanted: &[Wanted], events_lost: bool) -> Facts {
        let mut facts = Facts {
            events_lost,
            rule_tracing_unavailable: self.rule_tracing_unavailable.clone(),
            hooks_unseen: self.hooks_unseen,
            ..Facts::default()
        };
        for want in wanted {
            match want {
                Wanted::Ipv4Settings {
                    netns,
                    device,
                    ipv6,
                } => {
                    let settings = self.topology.namespace(*netns).and_then(|namespace| {
                        enrich::ipv4_settings(namespace, device, *ipv6, self.topology.host_netns)
                    });
                    facts.ipv4.extend(settings.map(|s| (*netns, s)));
                }
                Wanted::BridgeFdb { netns } => {
                    if let Some(namespace) = self.topology.namespace(*netns).cloned() {
                        let host = self.topology.host_netns;
                        // Netlink on a thread of its own: not on the event loop's.
                        let read =
                            tokio::task::spawn_blocking(move || enrich::fdb_of(&namespace, host))
                                .await;
                        facts
                            .fdb
                            .extend(read.ok().and_then(Result::ok).unwrap_or_default());
                    }
                }
                Wanted::BridgeCallsIptables => {
                    facts.bridge_calls_iptables = enrich::bridge_calls_iptables();
                }
                Wanted::NetfilterHooks { netns } => {
                    if let Some(hooks) = self.netfilter_hooks_of(*netns).await {
                        facts.netfilter_hooks.push((*netns, hooks.ipv4));
                        facts.netfilter_hooks_ipv6.push((*netns, hooks.ipv6));
                    }
                }
                Wanted::DropRule { drop } => {
                    if facts.rule_verdict.is_none() {
                        facts.rule_verdict = self.rule_verdict(drop).await;
                    }
                }
                Wanted::Listeners { protocol, port } => {
                    facts
                        .listeners
                        .extend(self.listeners_on(protocol, *port).await);
                }
            }
        }
        facts
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

    /// For a netfilter drop (an event located in its namespace): the rule
    /// (or policy) nf_tables' trace says decided, worded as the ruleset of
    /// the namespace it is in has it.
    async fn rule_verdict(&self, drop: &Event) -> Option<RuleVerdict> {
        let traced = self.rule_traces.as_ref()?.drop_of(drop)?;
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

    /// The sockets of every namespace listening on `port` of `protocol`,
    /// each namespace's read again when older than HOOKS_FRESH (they come
    /// and go with the processes).
    async fn listeners_on(&mut self, protocol: &str, port: u16) -> Vec<ListenerAt> {
        let mut found = Vec::new();
        for namespace in self.topology.namespaces.clone() {
            let netns = namespace.inode;
            let fresh = self
                .listeners
                .get(&netns)
                .filter(|(at, _)| at.elapsed() < HOOKS_FRESH)
                .map(|(_, listeners)| listeners.clone());
            let listeners = match fresh {
                Some(listeners) => listeners,
                None => {
                    let host = self.topology.host_netns;
                    // /proc is read from a thread inside the namespace.
                    let read =
                        tokio::task::spawn_blocking(move || enrich::listeners_in(&namespace, host))
                            .await
                            .unwrap_or_default();
                    self.listeners.insert(netns, (Instant::now(), read.clone()));
                    read
                }
            };
            found.extend(
                listeners
                    .into_iter()
                    .filter(|l| l.protocol == protocol && l.address.port() == port)
                    .map(|listener| ListenerAt { netns, listener }),
            );
        }
        found
    }

    /// The hooks with chains of `netfilter`'s ruleset, read again when
    /// older than HOOKS_FRESH.
    async fn netfilter_hooks_of(&mut self, netns: u32) -> Option<enrich::FamilyHooks> {
        if let Some((at, hooks)) = self.netfilter_hooks.get(&netns)
            && at.elapsed() < HOOKS_FRESH
        {
            return Some(hooks.clone());
        }
        let namespace = self.topology.namespace(netns).cloned()?;
        let host = self.topology.host_netns;
        // nft runs as a subprocess: not on the event loop's thread.
        let read = tokio::task::spawn_blocking(move || {
            enrich::netfilter_hooks_of(&namespace, host, OWN_TABLES)
        })
        .await;
        let hooks = read.ok().and_then(Result::ok)?;
        self.netfilter_hooks
            .insert(netns, (Instant::now(), hooks.clone()));
        Some(hooks)
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
                let seen = match &self.seen_from {
                    Some(engine) => topology.seen_from(engine),
                    None => Some(topology),
                };
                if let Some(seen) = seen {
                    self.topology = seen;
                }
            }
        }
    }
}

/// A traced drop worded with its rule as the ruleset lists it; a rule the
/// listing no longer has is named by its handle.
fn rule_verdict(traced: TracedDrop, ruleset: Option<&enrich::Ruleset>) -> RuleVerdict {
    let placed = traced.handle.and_then(|handle| {
        ruleset?.rule_placed(&traced.family, &traced.table, &traced.chain, handle)
    });
    let rule = placed.map(|(_, rule)| rule);
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
        position: placed.map(|(position, _)| position),
        chain: traced.chain,
        through: traced.through,
        handle: traced.handle,
        text,
        action,
    }
}

/// Facts read elsewhere that the explanation needs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Facts {
    /// The kernel reported lost events while this journey could have been traced.
    pub events_lost: bool,
    /// `net.bridge.bridge-nf-call-iptables`: bridged frames also cross the IPv4
    /// hooks (read only for a journey that crosses a bridge).
    pub bridge_calls_iptables: Option<bool>,
    /// The forwarding databases of the namespaces where the journey was
    /// switched, when it was told.
    pub fdb: Vec<FdbEntry>,
    /// IPv4 settings (`net.ipv4.conf.<dev>.*`) of the devices the journey
    /// came in on where a namespace forwarded it or filtered its source,
    /// by namespace inode.
    pub ipv4: Vec<(u32, Ipv4Settings)>,
    /// For a netfilter drop: the rule or policy that decided, from
    /// nf_tables tracing.
    pub rule_verdict: Option<RuleVerdict>,
    /// Why rules could not be traced, when they could not.
    pub rule_tracing_unavailable: Option<String>,
    /// The IPv4 hooks where a namespace has base chains of its own, for the
    /// namespaces whose ruleset was read.
    pub netfilter_hooks: Vec<(u32, Vec<Hook>)>,
    /// The same for IPv6 (`ip6` and `inet` tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub netfilter_hooks_ipv6: Vec<(u32, Vec<Hook>)>,
    /// For a send the kernel refused (its route lookups alone): what the
    /// send returned and what the route said then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_send: Option<RefusedSend>,
    /// Sockets listening on the port a refused or unanswered packet asked
    /// for, in every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerAt>,
    /// The kernel has no BPF netfilter programs: no hook is seen, and NAT
    /// shows only as the packet's addresses changing between devices.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hooks_unseen: bool,
}

/// A send refused by the sender's kernel, as its socket saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedSend {
    /// The errno the send returned (EMSGSIZE: too big for the path MTU).
    pub errno: i32,
    /// The IPv4 length the packet would have had.
    pub length: u16,
    /// The path MTU the sender's namespace had learned for the destination
    /// (`ip route get`'s cached `mtu`), read right after.
    pub path_mtu: Option<u32>,
}

impl Facts {
    /// The facts of two parts of one journey (read on two hosts) as one.
    pub fn merged(mut self, other: Facts) -> Facts {
        self.events_lost |= other.events_lost;
        self.bridge_calls_iptables = self.bridge_calls_iptables.or(other.bridge_calls_iptables);
        self.fdb.extend(other.fdb);
        self.ipv4.extend(other.ipv4);
        self.rule_verdict = self.rule_verdict.or(other.rule_verdict);
        self.rule_tracing_unavailable = self
            .rule_tracing_unavailable
            .or(other.rule_tracing_unavailable);
        self.netfilter_hooks.extend(other.netfilter_hooks);
        self.netfilter_hooks_ipv6.extend(other.netfilter_hooks_ipv6);
        self.refused_send = self.refused_send.or(other.refused_send);
        self.listeners.extend(other.listeners);
        self
    }

    /// The hooks where `netns` has chains, when known.
    pub fn netfilter_hooks_of(&self, netns: u32, ipv6: bool) -> Option<&[Hook]> {
        let hooks = if ipv6 {
            &self.netfilter_hooks_ipv6
        } else {
            &self.netfilter_hooks
        };
        hooks
            .iter()
            .find(|(ns, _)| *ns == netns)
            .map(|(_, hooks)| hooks.as_slice())
    }

    /// The settings of `device` in namespace `netns` for one family, when
    /// they were read.
    pub fn ip_settings_of(&self, netns: u32, device: &str, ipv6: bool) -> Option<&Ipv4Settings> {
        self.ipv4
            .iter()
            .find(|(ns, settings)| {
                *ns == netns && settings.device == device && settings.ipv6 == ipv6
            })
            .map(|(_, settings)| settings)
    }
}

/// What a rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    Drop,
    /// REJECT: dropped, and the sender told (an ICMP error or a reset).
    Reject,
    /// No rule decided: the base chain's policy dropped it.
    PolicyDrop,
}

/// The rule that decided a packet's fate in nf_tables, as the kernel's trace
/// reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct RuleVerdict {
    /// "ip filter".
    pub table: String,
    pub chain: String,
    /// The chains that jumped there, from the hook's base chain on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub through: Vec<String>,
    /// nft's handle of the rule; None when the chain's policy decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    /// The rule as `nft -a list ruleset` shows it; for a policy, "policy drop".
    pub text: String,
    pub action: RuleAction,
    /// Its place in its chain, from 1, as `iptables -L --line-numbers` counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
}

impl RuleVerdict {
    /// Whose chain it is, as Docker names its chains.
    pub fn chain_role(&self) -> ChainRole {
        ChainRole::of(&self.chain)
    }
}

/// Whose chain a rule is in, by the names Docker gives its chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainRole {
    /// `DOCKER-USER`: Docker leaves it to the administrator, and calls it
    /// before its own rules.
    Administrator,
    /// `DOCKER-ISOLATION-STAGE-1` and `-2`: Docker keeping its networks apart.
    DockerIsolation,
    /// `DOCKER` and Docker's other chains.
    Docker,
    /// Not Docker's.
    Other,
}

impl ChainRole {
    pub fn of(chain: &str) -> Self {
        match chain {
            "DOCKER-USER" => Self::Administrator,
            _ if chain.starts_with("DOCKER-ISOLATION") => Self::DockerIsolation,
            _ if chain == "DOCKER" || chain.starts_with("DOCKER-") => Self::Docker,
            _ => Self::Other,
        }
    }
}

/// A socket listening in the namespace `netns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerAt {
    pub netns: u32,
    pub listener: Listener,
}
