//! The first pass of the explanation: what happened at each hop, decided
//! from the kernel's evidence and the topology, as typed steps. One module
//! per kind of hop decides its steps and, in the second pass, words them;
//! no sentence is written while deciding, and none is edited afterwards.

mod bridge;
mod deliver;
mod drop;
mod ending;
mod forward;
mod loops;
mod nat;
mod netfilter;
mod receive;
mod route;
mod send;
mod tunnel;
mod veth;
mod xmit;

use crate::{
    decode::{DropReason, Event, EventKind, Hook, RouteResult, SiteRole, Transport, Tunnel},
    enrich::{Interface, LinkKind, Topology, facts::Facts},
    journey::{Journey, is_a_copys_fate},
};

use super::{ArpWait, Details, Ending, Hop, HopCapture, Origin, RouteChoice, Telling};

/// A hop as the evidence decided it, before a word of it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Microseconds since the journey's first event.
    pub at_us: u64,
    pub netns: u32,
    /// Who owns the namespace: a container name, "netns NAME", "host".
    pub namespace: String,
    pub device: Option<String>,
    /// The packet's time to live here (0 when unknown: a route lookup).
    pub ttl: u8,
    pub capture: Option<HopCapture>,
    /// The packet waited for ARP just before this hop.
    pub arp: ArpWaited,
    /// The hop is on a tunnel's underlay: what the kernel handled there is
    /// the outer datagram carrying the packet.
    pub tunnel: Option<Tunnel>,
    pub kind: StepKind,
}

/// Whether a packet waited for ARP before a hop, and how long when known.
#[derive(Clone, Debug, PartialEq)]
pub enum ArpWaited {
    No,
    For(ArpWait),
    /// It waited, but the frame that finally left was not seen.
    Unmeasured,
}

/// What kind of hop, with what the evidence said of it.
#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    Send(send::Send),
    /// A sender's lookup that found no way: no packet was made.
    RefusedRoute(route::Refused),
    Route(route::Decision),
    Veth(veth::Crossing),
    Bridge(bridge::Bridging),
    Forward(forward::Forwarding),
    Netfilter(netfilter::Passage),
    Nat(nat::Rewrite),
    Xmit,
    Encapsulation(tunnel::Encapsulation),
    Decapsulation(tunnel::Decapsulation),
    Receive(receive::Arrival),
    Deliver(deliver::Reading),
    Drop(Box<drop::Dropped>),
    Loop(loops::Loop),
}

impl Step {
    /// The second pass: the hop in words, with its typed details.
    pub fn hop(&self) -> Hop {
        let ns = self.namespace.as_str();
        let device = self.device.as_deref().unwrap_or_default();
        let text = match &self.kind {
            StepKind::Send(send) => send.words(ns, &self.arp),
            StepKind::RefusedRoute(refused) => refused.words(ns),
            StepKind::Route(decision) => decision.words(ns),
            StepKind::Veth(crossing) => crossing.words(ns) + &xmit::after_arp(&self.arp),
            StepKind::Bridge(bridging) => bridging.words(ns),
            StepKind::Forward(forwarding) => forwarding.words(ns),
            StepKind::Netfilter(passage) => passage.words(ns, device),
            StepKind::Nat(rewrite) => rewrite.words(),
            StepKind::Xmit => xmit::words(ns, device) + &xmit::after_arp(&self.arp),
            StepKind::Encapsulation(wrapped) => wrapped.words(device),
            StepKind::Decapsulation(unwrapped) => unwrapped.words(device),
            StepKind::Receive(arrival) => arrival.words(ns, device),
            StepKind::Deliver(reading) => reading.words(ns),
            StepKind::Drop(dropped) => dropped.words(ns),
            StepKind::Loop(round) => round.words(),
        };
        let text = match &self.tunnel {
            Some(outer) => format!("{text} (inside VXLAN {} → {})", outer.src, outer.dst),
            None => text,
        };
        Hop {
            at_us: self.at_us,
            netns: self.netns,
            namespace: self.namespace.clone(),
            device: self.device.clone(),
            text,
            arp_wait: match &self.arp {
                ArpWaited::For(wait) => Some(wait.clone()),
                ArpWaited::No | ArpWaited::Unmeasured => None,
            },
            details: self.details(),
            tunnel: self.tunnel,
            ttl: self.ttl,
            capture: self.capture.clone(),
        }
    }

    pub fn details(&self) -> Details {
        match &self.kind {
            StepKind::Send(send) => send.details(&self.arp),
            StepKind::RefusedRoute(refused) => Details::Route(refused.route.clone()),
            StepKind::Route(decision) => Details::Route(decision.route.clone()),
            StepKind::Veth(crossing) => crossing.details(),
            StepKind::Bridge(bridging) => bridging.details(),
            StepKind::Forward(forwarding) => forwarding.details(),
            StepKind::Netfilter(passage) => passage.details(),
            StepKind::Nat(rewrite) => rewrite.details(),
            StepKind::Xmit => Details::Xmit,
            StepKind::Encapsulation(wrapped) => wrapped.details(),
            StepKind::Decapsulation(unwrapped) => unwrapped.details(),
            StepKind::Receive(_) => Details::Receive,
            StepKind::Deliver(reading) => reading.details(),
            StepKind::Drop(dropped) => dropped.details(),
            StepKind::Loop(round) => round.details(),
        }
    }

    /// The routing decision this step tells, if it tells one.
    fn route(&self) -> Option<&RouteChoice> {
        match &self.kind {
            StepKind::Route(decision) => Some(&decision.route),
            StepKind::RefusedRoute(refused) => Some(&refused.route),
            StepKind::Send(send) => send.route.as_ref(),
            _ => None,
        }
    }

    fn hook(&self) -> Option<Hook> {
        match &self.kind {
            StepKind::Netfilter(passage) => Some(passage.hook),
            StepKind::Nat(rewrite) => Some(rewrite.hook),
            _ => None,
        }
    }
}

/// The decided story of one journey: its steps in kernel time, how it
/// ended, and where its packet came from.
pub struct Decided {
    pub steps: Vec<Step>,
    pub ending: Ending,
    pub origin: Origin,
    /// The namespace that sent it, when a packet was made.
    pub sender_netns: Option<u32>,
}

/// Walks a journey's events, deciding each hop.
struct Decider<'a> {
    topology: &'a Topology,
    /// The journey's events in order (each with the namespace it happened in).
    events: &'a [Event],
    /// The kernel copied packet bytes (`--pcap`): steps carry them.
    captured: bool,
    facts: &'a Facts,
    start_ns: u64,
    steps: Vec<Step>,
    /// The packet sat in this namespace's neighbour queue while ARP resolved
    /// its next hop; said on the hop that follows.
    waited_for_arp_in: Option<u32>,
    /// Each namespace's wait for ARP, measured over the whole journey.
    arp_waits: Vec<(u32, ArpWait)>,
    /// The sender's own wait for ARP, said on the send hop (which can come
    /// before the wait: at OUTPUT).
    sender_waits_for_arp: bool,
    /// While a bridge switches a frame (namespace, until when), netfilter hooks
    /// are the bridge's doing, not the host routing it.
    bridging: Option<(u32, u64)>,
    /// Namespaces that discarded a flooded copy: nothing there is this packet's.
    discarded_in: Vec<u32>,
    /// The journey is an ARP message: its lookups are address checks, not routes.
    arp: bool,
    /// A namespace's failed lookup for an answer to the packet, told last.
    unanswerable: Option<(Event, route::Decision)>,
}

/// Decides every step of `journey`, told as `telling` says, on `topology`
/// with `facts`.
pub fn decide(
    journey: &Journey,
    telling: &Telling<'_>,
    topology: &Topology,
    facts: &Facts,
) -> Decided {
    let events = &journey.located_events();
    let sender_netns = events
        .iter()
        .find(|e| !matches!(e.kind, EventKind::Route { .. }))
        .map(|e| e.netns);
    let start_ns = events.first().map(|e| e.time_ns).unwrap_or(0);
    let mut x = Decider {
        topology,
        events,
        captured: events.iter().any(|e| e.headers.is_some()),
        facts,
        start_ns,
        steps: Vec::new(),
        waited_for_arp_in: None,
        arp_waits: xmit::arp_waits(events),
        sender_waits_for_arp: events
            .iter()
            .take_while(|e| {
                !(matches!(e.kind, EventKind::Transmit { .. }) && Some(e.netns) == sender_netns)
            })
            .any(|e| Some(e.netns) == sender_netns && e.kind.is_neighbour_solicit()),
        bridging: None,
        discarded_in: Vec::new(),
        arp: matches!(journey.first_packet().transport, Transport::Arp { .. }),
        unanswerable: None,
    };
    let delivered_to_socket = events.iter().any(|e| e.kind == EventKind::SocketRead);
    // No netfilter program can see it: NAT shows only as changed addresses.
    let hooks_unseen = facts.hooks_unseen;
    // Indices already told as part of an earlier hop.
    let mut told = vec![false; events.len()];
    let mut pending_route: Option<&Event> = None;
    let mut sent = false;
    let mut ending = None;
    // The skb the packet arrived as (taken in or read by a process).
    let mut arrived_skb: Option<u64> = None;
    // Each skb's last transmit not yet followed by its receive elsewhere: a
    // free after it is the device done sending, not a receive.
    let mut transmitted: Vec<(u64, usize)> = Vec::new();

    for (i, event) in events.iter().enumerate() {
        match &event.kind {
            EventKind::Transmit { .. } => {
                transmitted.retain(|(skb, _)| *skb != event.skb);
                transmitted.push((event.skb, i));
            }
            EventKind::Receive { .. } => transmitted.retain(|(skb, _)| *skb != event.skb),
            _ => {}
        }
        if told[i] {
            continue;
        }
        let device = (!event.ifname.is_empty()).then(|| event.ifname.to_string());
        if hooks_unseen
            && matches!(
                event.kind,
                EventKind::Transmit { .. } | EventKind::Receive { .. }
            )
        {
            x.nat_seen_between_devices(i);
        }
        match &event.kind {
            // A copy of the payload for DNS decoding: no step of the journey.
            EventKind::TcpPayload => {}
            EventKind::Route { .. } => {
                // Lookups come in runs (local table, then main); the last one
                // decided. A lookup for an answer is another flow's.
                let next_is_route = events.get(i + 1).is_some_and(|e| {
                    e.netns == event.netns
                        && e.packet.dst == event.packet.dst
                        && matches!(
                            (&e.kind, &event.kind),
                            (
                                EventKind::Route { route_for: next, .. },
                                EventKind::Route { route_for: this, .. },
                            ) if next == this
                        )
                });
                // Lookups elsewhere (ARP processing ahead of the packet) are not its route.
                let here = x.steps.last().is_some_and(|s| s.netns == event.netns)
                    && !x.discarded_in.contains(&event.netns);
                if sender_netns.is_none() {
                    // No packet was made: the lookups are the whole story.
                    if !next_is_route {
                        x.refused_route_step(event);
                    }
                } else if !sent {
                    // Only the sender's own lookup is the route it sent by.
                    if Some(event.netns) == sender_netns {
                        pending_route = Some(event);
                    }
                } else if !next_is_route && here {
                    x.route_step(event);
                }
            }
            EventKind::Transmit { .. } if !sent => {
                sent = true;
                x.send_step(event, pending_route, None);
                x.veth_or_xmit(i, &mut told, true);
            }
            EventKind::Transmit { .. } => x.veth_or_xmit(i, &mut told, false),
            EventKind::Receive { mac_dst, .. } => {
                sent = true;
                let unwrapped = x.link_kind(event) == Some(&LinkKind::Vxlan);
                if unwrapped {
                    x.decapsulation_step(i);
                }
                if let Some(bridge) = x.bridge_of(event).cloned() {
                    x.bridge_step(i, &bridge, *mac_dst, &mut told);
                } else if !x.is_bridge(event) && !unwrapped {
                    x.push(event, device, StepKind::Receive(receive::Arrival::Arrives));
                }
            }
            EventKind::Netfilter {
                hook,
                side,
                out_ifindex,
            } => {
                // A packet the host itself sends meets OUTPUT before any device.
                if !sent && *hook == Hook::Output {
                    // OUTPUT's NAT can send it elsewhere: where it leaves is
                    // the device it meets next.
                    let leaves_by = events[i + 1..]
                        .iter()
                        .filter(|e| e.netns == event.netns)
                        .find(|e| {
                            matches!(
                                e.kind,
                                EventKind::Transmit { .. }
                                    | EventKind::Netfilter {
                                        hook: Hook::Postrouting,
                                        ..
                                    }
                            )
                        })
                        .map(|e| e.ifname.as_str())
                        .filter(|device| !device.is_empty() && *device != event.ifname);
                    x.send_step(event, pending_route, leaves_by);
                }
                sent = true;
                x.netfilter_step(i, *hook, *side, *out_ifindex, &mut told);
            }
            EventKind::Drop { reason, .. } if is_a_copys_fate(reason, delivered_to_socket) => {
                if *reason == DropReason::OtherHost {
                    x.discarded_in.push(event.netns);
                    let arrival = receive::Arrival::FloodedCopyDiscarded {
                        reason: reason.clone(),
                    };
                    x.push(event, device, StepKind::Receive(arrival));
                }
            }
            // The packet itself already arrived: this is a copy's end (one a
            // socket's error queue held, say), not the packet's.
            EventKind::Drop { reason, location }
                if arrived_skb.is_some_and(|skb| skb != event.skb) =>
            {
                let dropped = x.copy_dropped(event, reason, location);
                x.push(event, device, StepKind::Drop(Box::new(dropped)));
            }
            EventKind::Drop { reason, location } => {
                let (dropped, end) = x.dropped(i, reason, location);
                ending = Some(end);
                x.push(event, device, StepKind::Drop(Box::new(dropped)));
            }
            EventKind::Consume { .. } if event.kind.is_neighbour_solicit() => {
                // The copy ARP used for its request; the packet itself waits in
                // the queue. The sender's wait is told on its send hop.
                if !(x.sender_waits_for_arp && Some(event.netns) == sender_netns) {
                    x.waited_for_arp_in = Some(event.netns);
                }
            }
            // Without a location a free cannot be told apart from the copy
            // ARP makes while the packet waits: the packet's end only when
            // nothing more happens to it, and where its namespace routed it
            // to itself (a packet waiting for its next hop was not).
            EventKind::Consume { location }
                if location.role == SiteRole::Unlocated
                    && (events[i + 1..]
                        .iter()
                        .any(|e| !matches!(e.kind, EventKind::Route { .. }))
                        || x.last_route_in(event.netns)
                            .is_some_and(|route| route.result != RouteResult::Local)) => {}
            EventKind::Consume { location } => {
                let after_transmit = transmitted
                    .iter()
                    .find(|(skb, _)| *skb == event.skb)
                    .map(|(_, at)| &events[*at]);
                if let Some(sent_out) = after_transmit {
                    // Sent and freed by the device: nothing received it.
                    if ending.is_none() {
                        ending = Some(x.left(sent_out, Some(location.function())));
                    }
                } else if ending.is_none() && !delivered_to_socket {
                    arrived_skb = Some(event.skb);
                    ending = Some(Ending::TakenIn {
                        namespace: x.namespace(event.netns),
                        netns: event.netns,
                        handler: (location.role != SiteRole::Unlocated)
                            .then(|| location.function().to_string()),
                        no_route_back: None,
                        accepted_by: None,
                    });
                    let arrival = receive::Arrival::TakenIn {
                        location: location.clone(),
                    };
                    x.push(event, device, StepKind::Receive(arrival));
                }
            }
            EventKind::SocketRead => {
                let (comm, pid) = event.process().unwrap_or((event.comm.as_str(), event.pid));
                // A tun/tap device hands what it sends to the program reading
                // it: that program is the wire (a VM, a VPN), not the receiver.
                let through_tap = transmitted
                    .iter()
                    .find(|(skb, _)| *skb == event.skb)
                    .map(|(_, at)| &events[*at])
                    .filter(|sent| x.link_kind(sent).is_some_and(LinkKind::read_by_a_program));
                let reading = match through_tap {
                    Some(sent) => {
                        if ending.is_none() {
                            let mut left = x.left(sent, None);
                            if let Ending::Left { read_by, .. } = &mut left {
                                *read_by = Some(format!("{comm} (pid {pid})"));
                            }
                            ending = Some(left);
                        }
                        deliver::Reading {
                            process: comm.to_string(),
                            pid,
                            from_device: Some(sent.ifname.to_string()),
                        }
                    }
                    None => {
                        arrived_skb = Some(event.skb);
                        ending = Some(Ending::Delivered {
                            namespace: x.namespace(event.netns),
                            netns: event.netns,
                            process: comm.to_string(),
                            pid,
                        });
                        deliver::Reading {
                            process: comm.to_string(),
                            pid,
                            from_device: None,
                        }
                    }
                };
                x.push(event, None, StepKind::Deliver(reading));
            }
        }
    }

    // Hops are told as their evidence is found; the story reads in kernel time.
    x.steps.sort_by_key(|s| s.at_us);
    loops::fold(&mut x.steps);
    if let Some((event, decision)) = x.unanswerable.take() {
        // Told after the packet is taken in, which the kernel finishes
        // only once it gave up answering.
        let last_us = x.steps.last().map_or(0, |s| s.at_us);
        x.push(&event, None, StepKind::Route(decision));
        if let Some(step) = x.steps.last_mut() {
            step.at_us = step.at_us.max(last_us);
        }
    }
    let mut ending = telling
        .arp_result
        .clone()
        .or(ending)
        .unwrap_or_else(|| x.unfinished());
    if let Ending::TakenIn {
        netns,
        no_route_back,
        accepted_by,
        ..
    } = &mut ending
    {
        *no_route_back = ending::failed_route_back(events, *netns, topology);
        *accepted_by = ending::accepted_by(journey, *netns, facts);
    }
    let origin = x.origin();
    Decided {
        steps: x.steps,
        ending,
        origin,
        sender_netns,
    }
}

impl Decider<'_> {
    fn namespace(&self, netns: u32) -> String {
        self.topology.owner_label(netns)
    }

    fn interface(&self, netns: u32, ifindex: u32) -> Option<&Interface> {
        self.topology.interface(netns, ifindex)
    }

    fn bridge_of(&self, event: &Event) -> Option<&Interface> {
        let master = self.interface(event.netns, event.ifindex)?.master?;
        self.interface(event.netns, master)
    }

    fn is_bridge(&self, event: &Event) -> bool {
        self.link_kind(event) == Some(&LinkKind::Bridge)
    }

    /// What the device of `event` sends is taken in again where pkttrace
    /// sees it: a veth's peer in a namespace it knows (not one of another
    /// host, with `follow --on-host`), a bridge's ports, loopback.
    fn passes_on_here(&self, event: &Event) -> bool {
        let Some(iface) = self.interface(event.netns, event.ifindex) else {
            return false;
        };
        match iface.kind {
            LinkKind::Veth => iface
                .peer
                .is_some_and(|peer| self.topology.namespace(peer.netns).is_some()),
            ref kind => kind.passes_on(),
        }
    }

    /// The link kind of `event`'s device, when the topology knows it.
    fn link_kind(&self, event: &Event) -> Option<&LinkKind> {
        self.interface(event.netns, event.ifindex).map(|i| &i.kind)
    }

    /// Adds the step `kind` decided at `event`; a veth crossing or a
    /// transmit right after a wait in a neighbour queue carries that wait.
    fn push(&mut self, event: &Event, device: Option<String>, kind: StepKind) {
        let mut arp = ArpWaited::No;
        if matches!(kind, StepKind::Veth(_) | StepKind::Xmit)
            && let Some(netns) = self.waited_for_arp_in.take()
        {
            arp = match self.arp_wait_in(netns) {
                Some(wait) => ArpWaited::For(wait),
                None => ArpWaited::Unmeasured,
            };
        }
        self.push_waited(event, device, kind, arp);
    }

    fn push_waited(
        &mut self,
        event: &Event,
        device: Option<String>,
        kind: StepKind,
        arp: ArpWaited,
    ) {
        self.steps.push(Step {
            at_us: event.time_ns.saturating_sub(self.start_ns) / 1_000,
            netns: event.netns,
            namespace: self.namespace(event.netns),
            device,
            ttl: event.packet.ttl,
            capture: self.capture_at(event),
            arp,
            tunnel: event.packet.tunnel,
            kind,
        });
    }

    /// The packet as captured at `event` (`--pcap`); a routing decision
    /// has no packet at hand, and shows it as last captured before.
    fn capture_at(&self, event: &Event) -> Option<HopCapture> {
        if !self.captured {
            return None;
        }
        let bytes = event.headers.clone().or_else(|| {
            self.events
                .iter()
                .rev()
                .filter(|e| e.time_ns <= event.time_ns)
                .find_map(|e| e.headers.clone())
        })?;
        Some(HopCapture {
            time_ns: event.time_ns,
            ifindex: event.ifindex,
            outgoing: matches!(event.kind, EventKind::Transmit { .. }),
            bytes: bytes.0,
        })
    }

    fn arp_wait_in(&self, netns: u32) -> Option<ArpWait> {
        self.arp_waits
            .iter()
            .find(|(ns, _)| *ns == netns)
            .map(|(_, wait)| wait.clone())
    }

    fn route_choice(&self, event: &Event) -> Option<RouteChoice> {
        let EventKind::Route {
            table,
            result,
            gateway,
            ..
        } = event.kind
        else {
            return None;
        };
        Some(RouteChoice {
            table,
            result,
            out_device: (!event.ifname.is_empty() && result.found())
                .then(|| event.ifname.to_string()),
            gateway,
        })
    }

    /// The last netfilter hook told.
    fn last_netfilter_hook(&self) -> Option<Hook> {
        self.steps.iter().rev().find_map(|s| match &s.kind {
            StepKind::Netfilter(passage) => Some(passage.hook),
            _ => None,
        })
    }

    /// The last routing decision told for the packet in `netns`.
    fn last_route_in(&self, netns: u32) -> Option<&RouteChoice> {
        self.steps
            .iter()
            .rev()
            .filter(|s| s.netns == netns)
            .find_map(Step::route)
    }

    /// The MTU of the device `name` in `netns`, when the topology knows it.
    fn mtu_of(&self, netns: u32, name: &str) -> Option<u32> {
        self.topology
            .namespace(netns)?
            .interfaces
            .iter()
            .find(|i| i.name == name)?
            .mtu
    }

    /// Where the namespace of `event` sends the packet next: the gateway its
    /// routing decision chose, or the destination itself when on-link.
    fn next_hop(&self, event: &Event) -> Option<std::net::IpAddr> {
        let route = self.last_route_in(event.netns)?;
        Some(route.gateway.unwrap_or(event.packet.dst)).filter(|_| route.result.found())
    }
}
