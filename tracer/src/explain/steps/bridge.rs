//! A Linux bridge at work: a frame entered one of its ports (switched,
//! flooded, a broadcast, or passed up to the host), or the host handed it
//! one to send out of a port.

use crate::decode::{Event, EventKind, Mac, Transport};
use crate::enrich::Interface;

use super::{Decider, Details, StepKind};
use crate::explain::{BridgeDecision, FdbSaid};

#[derive(Clone, Debug, PartialEq)]
pub struct Bridging {
    pub bridge: String,
    /// The Docker network whose bridge it is.
    pub docker_network: Option<String>,
    /// How the frame reached the bridge.
    pub entered: Entered,
    /// The port it entered by, or the first it went out of when the host
    /// handed it over.
    pub port: String,
    pub decision: BridgeDecision,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Entered {
    /// Through one of its ports.
    Port,
    /// The host's IP stack handed it to the bridge.
    FromHost,
}

impl Decider<'_> {
    /// A frame entered a bridge port at `events[i]`: was it for the bridge
    /// itself (handed up to the host's IP stack) or switched to another port?
    pub(super) fn bridge_step(
        &mut self,
        i: usize,
        bridge: &Interface,
        mac_dst: Option<Mac>,
        told: &mut [bool],
    ) {
        let events = self.events;
        let port_event = &events[i];
        if matches!(
            port_event.packet.transport,
            Transport::Arp { operation: 1, .. }
        ) {
            self.broadcast_step(i, bridge, told);
            return;
        }
        let mut decision = None;
        for (j, e) in events.iter().enumerate().skip(i + 1) {
            let same_ns = e.netns == port_event.netns;
            if same_ns && matches!(e.kind, EventKind::Receive { .. }) && e.ifindex == bridge.ifindex
            {
                told[j] = true;
                let handed_up = BridgeDecision::HandedUp {
                    mac_dst,
                    bridge_mac: mac_dst.is_some() && mac_dst == bridge.mac(),
                };
                decision = Some((handed_up, Vec::new()));
                break;
            }
            if same_ns
                && matches!(e.kind, EventKind::Transmit { .. })
                && self.is_port_of(e, bridge.ifindex)
            {
                let copies = self.port_copies(j, bridge.ifindex, told);
                let last = copies.last().map_or(e.time_ns, |&c| events[c].time_ns);
                self.bridging = Some((e.netns, last));
                let fdb = self.fdb_evidence(bridge, mac_dst, e);
                decision = Some((switch_or_flood(events, &copies, mac_dst, fdb), copies));
                break;
            }
        }
        let (decision, copies) = decision.unwrap_or((BridgeDecision::Unseen, Vec::new()));
        let bridging = Bridging {
            bridge: bridge.name.clone(),
            docker_network: self.docker_network(&bridge.name),
            entered: Entered::Port,
            port: port_event.ifname.to_string(),
            decision,
        };
        self.push(
            port_event,
            Some(bridge.name.clone()),
            StepKind::Bridge(bridging),
        );
        for copy in copies {
            self.veth_or_xmit(copy, told, false);
        }
    }

    /// The host's IP stack hands the packet at `events[i]` to the bridge;
    /// the bridge picks the port from its forwarding database, or floods.
    /// False when no port of it was seen sending it.
    pub(super) fn bridge_from_host(&mut self, i: usize, told: &mut [bool]) -> bool {
        let events = self.events;
        let event = &events[i];
        let copies = self.port_copies(i + 1, event.ifindex, told);
        let Some(&first) = copies.first() else {
            return false;
        };
        let bridging = Bridging {
            bridge: event.ifname.to_string(),
            docker_network: self.docker_network(&event.ifname),
            entered: Entered::FromHost,
            port: events[first].ifname.to_string(),
            decision: switch_or_flood(events, &copies, None, FdbSaid::Unknown),
        };
        self.push(
            event,
            Some(event.ifname.to_string()),
            StepKind::Bridge(bridging),
        );
        for copy in copies {
            self.veth_or_xmit(copy, told, false);
        }
        true
    }

    /// An ARP request is a broadcast: the bridge sends it out of every other
    /// port and hands a copy up to the host too.
    fn broadcast_step(&mut self, i: usize, bridge: &Interface, told: &mut [bool]) {
        let events = self.events;
        let port_event = &events[i];
        let copies = self.port_copies(i + 1, bridge.ifindex, told);
        let handed_up = (i + 1..events.len()).find(|&j| {
            let e = &events[j];
            !told[j]
                && e.netns == port_event.netns
                && e.ifindex == bridge.ifindex
                && matches!(e.kind, EventKind::Receive { .. })
        });
        if let Some(j) = handed_up {
            told[j] = true;
        }
        let bridging = Bridging {
            bridge: bridge.name.clone(),
            docker_network: self.docker_network(&bridge.name),
            entered: Entered::Port,
            port: port_event.ifname.to_string(),
            decision: BridgeDecision::Broadcast {
                ports: copies
                    .iter()
                    .map(|&c| events[c].ifname.to_string())
                    .collect(),
                handed_up: handed_up.is_some(),
            },
        };
        self.push(
            port_event,
            Some(bridge.name.clone()),
            StepKind::Bridge(bridging),
        );
        for copy in copies {
            self.veth_or_xmit(copy, told, false);
        }
    }

    fn docker_network(&self, bridge: &str) -> Option<String> {
        self.topology.bridge_network(bridge).map(|n| n.name.clone())
    }

    /// The copies a bridge sent out of its ports from `start` on (one when it
    /// switched, several when it flooded); marked as told.
    fn port_copies(&self, start: usize, bridge: u32, told: &mut [bool]) -> Vec<usize> {
        let events = self.events;
        let Some(first) = events.get(start..).and_then(|rest| {
            rest.iter().position(|e| {
                matches!(e.kind, EventKind::Transmit { .. }) && self.is_port_of(e, bridge)
            })
        }) else {
            return Vec::new();
        };
        let first = start + first;
        let copies: Vec<usize> = (first..events.len())
            .filter(|&j| {
                let e = &events[j];
                !told[j]
                    && e.netns == events[first].netns
                    && matches!(e.kind, EventKind::Transmit { .. })
                    && self.is_port_of(e, bridge)
            })
            .collect();
        for &j in &copies {
            told[j] = true;
        }
        copies
    }

    fn is_port_of(&self, event: &Event, bridge: u32) -> bool {
        self.interface(event.netns, event.ifindex)
            .and_then(|p| p.master)
            == Some(bridge)
    }

    /// Why the bridge chose `out`: the forwarding database entry for the destination MAC.
    fn fdb_evidence(&self, bridge: &Interface, mac_dst: Option<Mac>, out: &Event) -> FdbSaid {
        let Some(mac_dst) = mac_dst else {
            return FdbSaid::Unknown;
        };
        let entry = self.facts.fdb.iter().find(|f| {
            f.netns == out.netns && f.bridge == Some(bridge.ifindex) && Mac(f.mac) == mac_dst
        });
        match entry {
            Some(entry) if entry.port == out.ifindex => FdbSaid::OnThatPort,
            Some(entry) => FdbSaid::OnPort(
                self.interface(out.netns, entry.port)
                    .map_or(entry.port.to_string(), |p| p.name.clone()),
            ),
            None => FdbSaid::AgedOut,
        }
    }
}

/// Flooded to the ports of `copies`, or switched to its one port (with what
/// the forwarding database says, `fdb`).
fn switch_or_flood(
    events: &[Event],
    copies: &[usize],
    mac_dst: Option<Mac>,
    fdb: FdbSaid,
) -> BridgeDecision {
    match copies {
        [one] => BridgeDecision::Switched {
            port: events[*one].ifname.to_string(),
            mac_dst,
            fdb,
        },
        _ => BridgeDecision::Flooded {
            ports: copies
                .iter()
                .map(|&c| events[c].ifname.to_string())
                .collect(),
        },
    }
}

impl Bridging {
    /// The bridge's doing, in namespace `ns` (the host's is "the host").
    pub fn words(&self, ns: &str) -> String {
        let who = if ns == "host" {
            "the host".to_string()
        } else {
            ns.to_string()
        };
        let network = self
            .docker_network
            .as_ref()
            .map(|n| format!(" (Docker network \"{n}\")"))
            .unwrap_or_default();
        let bridge = &self.bridge;
        match self.entered {
            Entered::FromHost => format!(
                "bridge {bridge}{network}: {who} hands the frame to the bridge, which {}",
                self.decision.done_for_the_host()
            ),
            Entered::Port => {
                let mut text = format!(
                    "bridge {bridge}{network}: the frame entered port {}; {}",
                    self.port,
                    self.decision.words(bridge)
                );
                // Switched between ports, the packet never met the namespace's routing.
                let between_ports = match &self.decision {
                    BridgeDecision::Switched { .. } => true,
                    BridgeDecision::Flooded { ports } => !ports.is_empty(),
                    _ => false,
                };
                if between_ports {
                    text += &format!(
                        ". Like a hardware switch: {who} does no routing and no NAT for this packet"
                    );
                }
                text
            }
        }
    }

    pub fn details(&self) -> Details {
        Details::Bridge {
            bridge: self.bridge.clone(),
            docker_network: self.docker_network.clone(),
            port: self.port.clone(),
            decision: self.decision.clone(),
        }
    }
}

impl BridgeDecision {
    /// The decision in words; `bridge` is the bridge's name.
    pub fn words(&self, bridge: &str) -> String {
        match self {
            Self::HandedUp {
                mac_dst: Some(mac),
                bridge_mac: true,
            } => format!(
                "passed up to the host's IP stack (destination MAC {mac} is {bridge}'s own)"
            ),
            Self::HandedUp {
                mac_dst: Some(mac), ..
            } => format!("passed up to the host's IP stack (destination MAC {mac})"),
            Self::HandedUp { mac_dst: None, .. } => {
                "passed up to the host's IP stack (addressed to the bridge)".into()
            }
            Self::Switched { port, mac_dst, fdb } => {
                format!("switched to port {port}{}", fdb_words(*mac_dst, fdb))
            }
            Self::Flooded { ports } => format!(
                "flooded to ports {} (destination MAC not in its forwarding database)",
                ports.join(", ")
            ),
            Self::Broadcast { ports, handed_up } => match (ports.as_slice(), handed_up) {
                ([], true) => {
                    "broadcast: not flooded (no other port) and handed up to the host".into()
                }
                ([], false) => "broadcast: no other port to flood it to".into(),
                (_, true) => format!(
                    "broadcast: flooded to ports {} and handed up to the host",
                    ports.join(", ")
                ),
                (_, false) => format!("broadcast: flooded to ports {}", ports.join(", ")),
            },
            Self::Unseen => "no further bridge action seen".into(),
        }
    }

    /// What the bridge does with a frame the host handed it.
    fn done_for_the_host(&self) -> String {
        match self {
            Self::Switched { port, mac_dst, fdb } => {
                format!("switches it to port {port}{}", fdb_words(*mac_dst, fdb))
            }
            Self::Flooded { ports } => format!(
                "floods it to ports {} (destination MAC not in its forwarding database)",
                ports.join(", ")
            ),
            other => other.words(""),
        }
    }
}

/// What the forwarding database says of the destination MAC, as evidence.
fn fdb_words(mac_dst: Option<Mac>, fdb: &FdbSaid) -> String {
    match (mac_dst, fdb) {
        (Some(mac), FdbSaid::OnThatPort) => {
            format!(" (its forwarding database has {mac} on that port)")
        }
        (Some(mac), FdbSaid::OnPort(now)) => {
            format!(" (its forwarding database now has {mac} on port {now})")
        }
        (Some(mac), FdbSaid::AgedOut) => {
            format!(" ({mac} is no longer in its forwarding database: learned entries age out)")
        }
        _ => String::new(),
    }
}
