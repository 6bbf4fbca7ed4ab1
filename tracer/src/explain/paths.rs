//! Stories grouped by the path they took, for a busy flow (`follow
//! --summary`): a path is the sequence of hops as typed facts (namespace,
//! device, what happened there: hook, NAT, drop reason and rule) and how
//! the journey ended. Every interval, each path's count, share and latency
//! (first hop to last); a path or a drop not seen before stands out. Pure:
//! it takes stories and gives summaries. Memory is bounded: at most
//! `MAX_PATHS` paths are told apart, the rest are counted together.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{Details, Direction, Ending, Hook, NatKind, Story};

/// Distinct paths told apart; packets of any further path are counted as
/// "other paths" (a flow that takes thousands of paths is no busy flow).
pub const MAX_PATHS: usize = 64;

/// The longest latency a path's histogram tells apart.
const MAX_LATENCY_US: u64 = 60_000_000;

/// One hop of a path: where, and what happened there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
pub struct PathHop {
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(flatten)]
    pub step: PathStep,
}

/// What happened at a hop, as the path's identity needs it (no times, no
/// conntrack states, no addresses beyond the NAT's kind).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PathStep {
    Send,
    Veth,
    Bridge,
    Route,
    Forward,
    Netfilter {
        hook: Hook,
    },
    Nat {
        hook: Hook,
        nat: NatKind,
    },
    Xmit,
    Encap,
    Decap,
    Receive,
    Deliver {
        process: String,
    },
    Loop,
    Drop {
        reason: String,
        /// The rule (or chain policy) nf_tables' trace named for one of
        /// the path's packets (it traces a limited rate): not part of the
        /// path's identity.
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
    },
}

impl PathStep {
    fn of(details: &Details) -> Self {
        match details {
            Details::Send { .. } => Self::Send,
            Details::Veth { .. } => Self::Veth,
            Details::Bridge { .. } => Self::Bridge,
            Details::Route(_) => Self::Route,
            Details::Forward { .. } => Self::Forward,
            Details::Netfilter { hook, .. } => Self::Netfilter { hook: *hook },
            Details::Nat { hook, nat, .. } => Self::Nat {
                hook: *hook,
                nat: *nat,
            },
            Details::Xmit => Self::Xmit,
            Details::Encap { .. } => Self::Encap,
            Details::Decap { .. } => Self::Decap,
            Details::Receive => Self::Receive,
            Details::Deliver { process, .. } => Self::Deliver {
                process: process.clone(),
            },
            Details::Loop { .. } => Self::Loop,
            Details::Drop { reason, rule, .. } => Self::Drop {
                reason: reason.to_string(),
                rule: rule
                    .as_ref()
                    .map(|r| format!("{} {}: {}", r.table, r.chain, r.text)),
            },
        }
    }
}

/// The identity of a path: its direction, hops and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema)]
pub struct Path {
    pub direction: Direction,
    pub hops: Vec<PathHop>,
    /// How journeys on it ended: `delivered`, `taken_in`, `left`,
    /// `dropped`, `in_flight`, `not_sent`.
    pub ending: &'static str,
}

impl Path {
    pub fn of(story: &Story) -> Self {
        Self {
            direction: story.direction,
            hops: story
                .hops
                .iter()
                .map(|hop| PathHop {
                    namespace: hop.namespace.clone(),
                    device: hop.device.clone(),
                    step: PathStep::of(&hop.details),
                })
                .collect(),
            ending: ending_kind(&story.outcome.ending),
        }
    }

    pub fn dropped(&self) -> bool {
        self.ending == "dropped"
    }

    /// The path without its drop's rule (its identity), and that rule.
    fn without_rule(mut self) -> (Self, Option<String>) {
        let rule = self.hops.iter_mut().find_map(|hop| match &mut hop.step {
            PathStep::Drop { rule, .. } => rule.take(),
            _ => None,
        });
        (self, rule)
    }

    fn with_rule(mut self, rule: Option<&String>) -> Self {
        for hop in &mut self.hops {
            if let PathStep::Drop { rule: none, .. } = &mut hop.step {
                *none = rule.cloned();
            }
        }
        self
    }
}

fn ending_kind(ending: &Ending) -> &'static str {
    match ending {
        Ending::Delivered { .. } => "delivered",
        Ending::TakenIn { .. } => "taken_in",
        Ending::Left { .. } => "left",
        Ending::Dropped { .. } => "dropped",
        Ending::InFlight { .. } => "in_flight",
        Ending::NotSent { .. } => "not_sent",
        Ending::ArpAnswered { .. } => "arp_answered",
        Ending::ArpUnanswered { .. } => "arp_unanswered",
    }
}

/// A path's packets in one interval (or the whole run).
struct Tally {
    packets: u64,
    /// Microseconds from the first hop to the last.
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            packets: 0,
            // Two significant figures up to a minute (a longer journey counts
            // as a minute): some 20 KiB a path, where three figures up to an
            // hour took 180 KiB, twice per path (interval and run).
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid bounds"),
        }
    }

    fn add(&mut self, latency_us: u64) {
        self.packets += 1;
        self.latency_us.saturating_record(latency_us.max(1));
    }
}

/// One path in a summary.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct PathCount {
    #[serde(flatten)]
    pub path: Path,
    pub packets: u64,
    /// Of the interval's packets in this direction.
    pub share: f64,
    /// Latency from the first hop to the last, in microseconds.
    pub p50_us: u64,
    pub p99_us: u64,
    /// First seen in this interval.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new: bool,
}

/// What one interval (or, `whole_run`, the run) saw.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Summary {
    /// Seconds since tracing began: from, to.
    pub from_s: f64,
    pub to_s: f64,
    /// The whole run's totals, told at the end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whole_run: bool,
    /// The most frequent path first, requests before replies.
    pub paths: Vec<PathCount>,
    /// Packets of paths beyond the `MAX_PATHS` told apart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other_paths: u64,
    /// Requests that got no reply in time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unanswered: u64,
    /// Events the kernel dropped in this interval: counts may be short.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub events_lost: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Paths counted as stories come, summed up per interval and for the run.
pub struct PathCounter {
    /// Every path told apart so far, by its index in `paths`.
    index: HashMap<Path, usize>,
    paths: Vec<Path>,
    /// The rule named for a path's drop, by its index, once one was.
    rules: HashMap<usize, String>,
    interval: HashMap<usize, Tally>,
    run: HashMap<usize, Tally>,
    /// Paths first seen in the current interval.
    new_now: Vec<usize>,
    other_now: u64,
    other_run: u64,
    unanswered_now: u64,
    unanswered_run: u64,
    lost_run: u64,
    interval_began_s: f64,
}

impl Default for PathCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl PathCounter {
    pub fn new() -> Self {
        Self {
            index: HashMap::new(),
            paths: Vec::new(),
            rules: HashMap::new(),
            interval: HashMap::new(),
            run: HashMap::new(),
            new_now: Vec::new(),
            other_now: 0,
            other_run: 0,
            unanswered_now: 0,
            unanswered_run: 0,
            lost_run: 0,
            interval_began_s: 0.0,
        }
    }

    /// Counts `story` on its path.
    pub fn count(&mut self, story: &Story) {
        let (path, rule) = Path::of(story).without_rule();
        let latency_us = match (story.hops.first(), story.hops.last()) {
            (Some(first), Some(last)) => last.at_us.saturating_sub(first.at_us),
            _ => 0,
        };
        let at = match self.index.get(&path) {
            Some(at) => *at,
            None if self.paths.len() < MAX_PATHS => {
                let at = self.paths.len();
                self.index.insert(path.clone(), at);
                self.paths.push(path);
                self.new_now.push(at);
                at
            }
            None => {
                self.other_now += 1;
                self.other_run += 1;
                return;
            }
        };
        if let Some(rule) = rule {
            self.rules.entry(at).or_insert(rule);
        }
        self.interval
            .entry(at)
            .or_insert_with(Tally::new)
            .add(latency_us);
        self.run
            .entry(at)
            .or_insert_with(Tally::new)
            .add(latency_us);
    }

    /// A request got no reply in time.
    pub fn unanswered(&mut self) {
        self.unanswered_now += 1;
        self.unanswered_run += 1;
    }

    /// The interval ending at `now_s` (seconds since tracing began), in
    /// which the kernel lost `events_lost` events; the next begins.
    pub fn interval(&mut self, now_s: f64, events_lost: u64) -> Summary {
        self.lost_run += events_lost;
        let interval = std::mem::take(&mut self.interval);
        let summary = Summary {
            from_s: self.interval_began_s,
            to_s: now_s,
            whole_run: false,
            paths: self.counts(&interval, &self.new_now),
            other_paths: self.other_now,
            unanswered: self.unanswered_now,
            events_lost,
        };
        self.new_now.clear();
        self.other_now = 0;
        self.unanswered_now = 0;
        self.interval_began_s = now_s;
        summary
    }

    /// The whole run, at its end (`now_s`).
    pub fn whole_run(&self, now_s: f64) -> Summary {
        Summary {
            from_s: 0.0,
            to_s: now_s,
            whole_run: true,
            paths: self.counts(&self.run, &[]),
            other_paths: self.other_run,
            unanswered: self.unanswered_run,
            events_lost: self.lost_run,
        }
    }

    fn counts(&self, tallies: &HashMap<usize, Tally>, new: &[usize]) -> Vec<PathCount> {
        let total_of = |direction| {
            tallies
                .iter()
                .filter(|(at, _)| self.paths[**at].direction == direction)
                .map(|(_, t)| t.packets)
                .sum::<u64>()
        };
        let (requests, replies) = (total_of(Direction::Request), total_of(Direction::Reply));
        let mut counts: Vec<(usize, PathCount)> = tallies
            .iter()
            .map(|(at, tally)| {
                let path = self.paths[*at].clone().with_rule(self.rules.get(at));
                let of = match path.direction {
                    Direction::Request => requests,
                    Direction::Reply => replies,
                };
                let count = PathCount {
                    packets: tally.packets,
                    share: tally.packets as f64 / of.max(1) as f64,
                    p50_us: tally.latency_us.value_at_quantile(0.50),
                    p99_us: tally.latency_us.value_at_quantile(0.99),
                    new: new.contains(at),
                    path,
                };
                (*at, count)
            })
            .collect();
        // Requests first, then the most frequent, then the first seen.
        counts.sort_by_key(|(at, count)| {
            (
                count.path.direction == Direction::Reply,
                std::cmp::Reverse(count.packets),
                *at,
            )
        });
        counts.into_iter().map(|(_, count)| count).collect()
    }
}
