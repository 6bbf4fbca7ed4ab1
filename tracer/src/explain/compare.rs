//! Two tellings of the same flow (before and after an experiment, working
//! and failing) lined up hop by hop: where they part first, both sides of
//! it, and why, from the stories' typed hops. Pure: it compares stories.

use serde::Serialize;

use super::{
    Details, Direction, Ending, Hop, NoReply, Outcome, Story, Verdict, describe_route,
    verdict::Action,
};

/// One recording's stories, as `diff` compares them.
pub struct Telling {
    pub stories: Vec<Story>,
    pub no_replies: Vec<NoReply>,
}

/// What two tellings say apart.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Compared {
    /// Every exchange (a request and its reply), in the order told.
    pub exchanges: Vec<ExchangeCompared>,
    /// Both tell the same hops and endings throughout.
    pub same: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ExchangeCompared {
    /// The request's number in A and in B (absent: that one has fewer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<u64>,
    /// Where they part first; absent when they tell it alike.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parting: Option<Parting>,
}

/// Where two tellings of one exchange part.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Parting {
    /// In the request's journey or in its reply's.
    pub journey: Direction,
    /// Hops told alike before they part.
    pub same_hops: usize,
    /// The first hop that differs, in A and in B (absent: that one has no
    /// more hops there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<Hop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<Hop>,
    /// How each ended, when the hops alone do not part them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a_outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b_outcome: Option<String>,
    /// Why they part, from the hops' evidence.
    pub why: String,
    /// What to do, from the verdict of the side that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

/// One exchange of a telling: its request, its reply or the lack of one.
struct Exchange<'a> {
    request: &'a Story,
    reply: Option<&'a Story>,
    no_reply: Option<&'a NoReply>,
}

impl Exchange<'_> {
    /// What failed and why, when it did.
    fn verdict(&self) -> Option<&Verdict> {
        self.request
            .verdict
            .as_ref()
            .or_else(|| self.reply.and_then(|r| r.verdict.as_ref()))
            .or_else(|| self.no_reply.map(|n| &n.verdict))
    }
}

fn exchanges(telling: &Telling) -> Vec<Exchange<'_>> {
    telling
        .stories
        .iter()
        .filter(|s| {
            s.direction == Direction::Request
                && s.retransmission_of.is_none()
                && s.same_flow_as.is_none()
                && !matches!(
                    s.outcome.ending,
                    Ending::ArpAnswered { .. } | Ending::ArpUnanswered { .. }
                )
        })
        .map(|request| Exchange {
            request,
            reply: telling
                .stories
                .iter()
                .find(|s| s.reply_to == Some(request.journey)),
            no_reply: telling
                .no_replies
                .iter()
                .find(|n| n.request == request.journey),
        })
        .collect()
}

/// Lines up the exchanges of `a` and `b` in order and compares each.
pub fn compare(a: &Telling, b: &Telling) -> Compared {
    let (a, b) = (exchanges(a), exchanges(b));
    let exchanges: Vec<ExchangeCompared> = (0..a.len().max(b.len()))
        .map(|i| {
            let (x, y) = (a.get(i), b.get(i));
            ExchangeCompared {
                a: x.map(|e| e.request.journey),
                b: y.map(|e| e.request.journey),
                parting: match (x, y) {
                    (Some(x), Some(y)) => exchange_parting(x, y),
                    _ => Some(Parting {
                        journey: Direction::Request,
                        same_hops: 0,
                        a: None,
                        b: None,
                        a_outcome: x.map(|e| e.request.outcome.text.clone()),
                        b_outcome: y.map(|e| e.request.outcome.text.clone()),
                        why: format!(
                            "only {} holds this exchange",
                            if x.is_some() { "A" } else { "B" }
                        ),
                        action: None,
                    }),
                },
            }
        })
        .collect();
    Compared {
        same: exchanges.iter().all(|e| e.parting.is_none()),
        exchanges,
    }
}

fn exchange_parting(a: &Exchange<'_>, b: &Exchange<'_>) -> Option<Parting> {
    let verdicts = (a.verdict(), b.verdict());
    if let Some(parting) = story_parting(a.request, b.request, Direction::Request, verdicts) {
        return Some(parting);
    }
    match (a.reply, b.reply) {
        (Some(x), Some(y)) => story_parting(x, y, Direction::Reply, verdicts),
        (None, None) => None,
        (x, y) => {
            let verdict = a.no_reply.or(b.no_reply).map(|n| &n.verdict);
            Some(Parting {
                journey: Direction::Reply,
                same_hops: 0,
                a: None,
                b: None,
                a_outcome: Some(reply_said(x, a.no_reply)),
                b_outcome: Some(reply_said(y, b.no_reply)),
                why: format!(
                    "{} got a reply and {} none{}",
                    if x.is_some() { "A" } else { "B" },
                    if x.is_some() { "B" } else { "A" },
                    verdict.map(because).unwrap_or_default()
                ),
                action: verdict.and_then(|v| v.action.clone()),
            })
        }
    }
}

/// What came back for a request: its reply's meaning, or that none came.
fn reply_said(reply: Option<&Story>, no_reply: Option<&NoReply>) -> String {
    match (reply, no_reply) {
        (Some(reply), _) => reply
            .answer
            .as_ref()
            .map_or_else(|| reply.outcome.text.clone(), |a| a.text.clone()),
        (None, Some(no_reply)) => no_reply.text.clone(),
        (None, None) => "no reply was told".into(),
    }
}

fn because(verdict: &Verdict) -> String {
    format!(": {}", verdict.why)
}

/// Where two tellings of one journey part, if they do.
fn story_parting(
    a: &Story,
    b: &Story,
    journey: Direction,
    verdicts: (Option<&Verdict>, Option<&Verdict>),
) -> Option<Parting> {
    let same_hops = a
        .hops
        .iter()
        .zip(&b.hops)
        .take_while(|(x, y)| same_step(x, y))
        .count();
    let (x, y) = (a.hops.get(same_hops), b.hops.get(same_hops));
    if x.is_none() && y.is_none() {
        if same_ending(&a.outcome, &b.outcome) {
            return None;
        }
        return Some(Parting {
            journey,
            same_hops,
            a: None,
            b: None,
            a_outcome: Some(a.outcome.text.clone()),
            b_outcome: Some(b.outcome.text.clone()),
            why: "the same hops, but they ended apart".into(),
            action: None,
        });
    }
    Some(Parting {
        journey,
        same_hops,
        a: x.cloned(),
        b: y.cloned(),
        a_outcome: x.is_none().then(|| a.outcome.text.clone()),
        b_outcome: y.is_none().then(|| b.outcome.text.clone()),
        why: why_apart(x, y, a, b, verdicts),
        // The failing side's: the one that was dropped, or else B's.
        action: match (x, y) {
            (Some(hop), _) if matches!(hop.details, Details::Drop { .. }) => verdicts.0,
            _ => verdicts.1.or(verdicts.0),
        }
        .and_then(|v| v.action.clone()),
    })
}

/// Whether two hops are the same step of the path: the same kind, place and
/// decision (ports, ids and times may differ between two runs).
fn same_step(a: &Hop, b: &Hop) -> bool {
    if a.namespace != b.namespace || a.device != b.device {
        return false;
    }
    match (&a.details, &b.details) {
        (Details::Send { route: x, .. }, Details::Send { route: y, .. }) => {
            x.as_ref().map(describe_route) == y.as_ref().map(describe_route)
        }
        (
            Details::Veth {
                peer_namespace: x, ..
            },
            Details::Veth {
                peer_namespace: y, ..
            },
        ) => x == y,
        (Details::Bridge { decision: x, .. }, Details::Bridge { decision: y, .. }) => {
            std::mem::discriminant(x) == std::mem::discriminant(y)
        }
        (Details::Route(x), Details::Route(y)) => describe_route(x) == describe_route(y),
        (
            Details::Forward {
                to_device: x,
                ip_forward: i,
                ..
            },
            Details::Forward {
                to_device: y,
                ip_forward: j,
                ..
            },
        ) => x == y && i == j,
        (Details::Netfilter { hook: x, .. }, Details::Netfilter { hook: y, .. }) => x == y,
        (
            Details::Nat {
                hook: h,
                nat: n,
                before: x,
                after: x2,
                ..
            },
            Details::Nat {
                hook: k,
                nat: m,
                before: y,
                after: y2,
                ..
            },
        ) => h == k && n == m && (x.src, x.dst, x2.src, x2.dst) == (y.src, y.dst, y2.src, y2.dst),
        (
            Details::Drop {
                reason: x, rule: r, ..
            },
            Details::Drop {
                reason: y, rule: s, ..
            },
        ) => x == y && r == s,
        (x, y) => x.kind() == y.kind(),
    }
}

fn same_ending(a: &Outcome, b: &Outcome) -> bool {
    std::mem::discriminant(&a.ending) == std::mem::discriminant(&b.ending)
}

/// Why the first differing hops differ, from their typed evidence.
fn why_apart(
    a: Option<&Hop>,
    b: Option<&Hop>,
    story_a: &Story,
    story_b: &Story,
    (verdict_a, verdict_b): (Option<&Verdict>, Option<&Verdict>),
) -> String {
    let dropped = |hop: &Hop| matches!(hop.details, Details::Drop { .. });
    // A drop says why in its verdict, in the user's terms; else its hint.
    let told = |hop: &Hop, verdict: Option<&Verdict>| match (verdict, &hop.details) {
        (Some(verdict), _) => verdict.why.clone(),
        (None, Details::Drop { hint, .. }) => hint.clone(),
        (None, _) => hop.text.clone(),
    };
    match (a, b) {
        (_, Some(y)) if dropped(y) => format!("B was dropped here: {}", told(y, verdict_b)),
        (Some(x), _) if dropped(x) => format!("A was dropped here: {}", told(x, verdict_a)),
        (Some(x), Some(y)) => match (&x.details, &y.details) {
            (Details::Route(r), Details::Route(s)) => format!(
                "the routing decision differs: A {}, B {}",
                describe_route(r),
                describe_route(s)
            ),
            (
                Details::Forward {
                    from_device,
                    ip_forward: i,
                    ipv6,
                    ..
                },
                Details::Forward { ip_forward: j, .. },
            ) if i != j => {
                format!(
                    "{} was {} in A and {} in B",
                    crate::enrich::sysctl_name(*ipv6, from_device, "forwarding"),
                    setting(*i),
                    setting(*j)
                )
            }
            (Details::Nat { .. }, _) => "a NAT rule rewrote it in A and not in B".into(),
            (_, Details::Nat { .. }) => "a NAT rule rewrote it in B and not in A".into(),
            (Details::Netfilter { hook, .. }, _) => {
                format!("A met netfilter {hook} here, B did not")
            }
            (_, Details::Netfilter { hook, .. }) => {
                format!("B met netfilter {hook} here, A did not")
            }
            _ => format!("A: {}; B: {}", x.text, y.text),
        },
        (Some(x), None) => format!(
            "B ended before this hop of A ({}): {}",
            x.details.kind(),
            story_b.outcome.text
        ),
        (None, Some(y)) => format!(
            "A ended before this hop of B ({}): {}",
            y.details.kind(),
            story_a.outcome.text
        ),
        (None, None) => "the same hops".into(),
    }
}

fn setting(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "1",
        Some(false) => "0",
        None => "unknown",
    }
}
