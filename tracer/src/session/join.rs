//! Recordings of several hosts joined into the journeys they share. On
//! separate machines each pkttrace sees its own kernel only (`follow
//! --on-host` shows the same on one machine): a packet that leaves one host
//! inside a VXLAN datagram is a journey ending at the underlay there, and
//! one starting at the underlay on the host that takes the datagram in.
//! The two parts are one journey when the datagram is the same (outer
//! addresses, ports, VNI and IP id) and so is the packet inside it.
//!
//! Two machines' clocks are not assumed to agree: recordings of one machine
//! (the same boot time) keep their times; otherwise the later part is
//! placed right after the earlier one, its times since then its own.

use std::{collections::HashMap, rc::Rc};

use anyhow::{Result, bail};

use crate::{
    decode::{Event, EventKind},
    enrich::Topology,
    journey::{
        Journey,
        exchanges::{ArpResult, Role},
    },
};

use super::{
    Told,
    recording::{Header, Retold},
};

/// Two recordings' kernel clocks are one machine's when their zeros are
/// this close (each run computes it from two clock readings).
const SAME_BOOT_NS: u64 = 1_000_000;
/// How far after the earlier part a later part of another machine is placed.
const PLACED_AFTER_NS: u64 = 1_000;

/// One story's input, with the recording it comes from.
struct Item {
    recording: usize,
    told: Told,
    topology: Rc<Topology>,
}

/// The recordings as one: the first one's header, the journeys of all with
/// those seen on several hosts joined, told on the wiring of all.
pub fn join(recordings: Vec<(Header, Retold)>) -> Result<(Header, Retold)> {
    let Some((first, _)) = recordings.first() else {
        bail!("nothing to replay");
    };
    let header = first.clone();
    for (other, _) in &recordings[1..] {
        if other.destination != header.destination {
            bail!(
                "the recordings follow different destinations ({} and {}): only recordings of one run on several hosts join",
                header.destination.address,
                other.destination.address
            );
        }
    }
    let one_machine = recordings
        .iter()
        .all(|(h, _)| h.boot_ns.abs_diff(header.boot_ns) < SAME_BOOT_NS);
    let exit_code = recordings
        .iter()
        .filter_map(|(_, retold)| retold.exit_code)
        .min();
    let complete = recordings.iter().all(|(_, r)| r.exit_code.is_some());
    let mut items: Vec<Item> = Vec::new();
    for (recording, (_, retold)) in recordings.into_iter().enumerate() {
        items.extend(retold.told.into_iter().map(|(told, topology)| Item {
            recording,
            told,
            topology,
        }));
    }
    // Each recording's wirings (one per change), once each.
    let mut wirings: Vec<&Rc<Topology>> = Vec::new();
    for item in &items {
        if !wirings
            .iter()
            .any(|known| Rc::ptr_eq(known, &item.topology))
        {
            wirings.push(&item.topology);
        }
    }
    let Some((first_wiring, others)) = wirings.split_first() else {
        return Ok((
            header,
            Retold {
                told: Vec::new(),
                exit_code,
            },
        ));
    };
    let wiring = Rc::new(
        others
            .iter()
            .fold(first_wiring.as_ref().clone(), |all, other| {
                all.merged(other)
            }),
    );
    let items = join_parts(items, one_machine);
    let told = renumbered(items)
        .into_iter()
        .map(|told| (told, Rc::clone(&wiring)))
        .collect();
    Ok((
        header,
        Retold {
            told,
            exit_code: exit_code.filter(|_| complete),
        },
    ))
}

/// Joins every journey that left a host inside a tunnel to the one that
/// arrived on another host inside the same datagram, until none is left.
fn join_parts(mut items: Vec<Item>, one_machine: bool) -> Vec<Item> {
    while let Some((earlier, later)) = find_pair(&items) {
        let tail = items.remove(later);
        let earlier = if later < earlier {
            earlier - 1
        } else {
            earlier
        };
        let Told::Journey {
            journey: tail,
            facts: tail_facts,
            ..
        } = tail.told
        else {
            unreachable!("only journeys are paired");
        };
        if let Told::Journey { journey, facts, .. } = &mut items[earlier].told {
            let shift = if one_machine {
                0
            } else {
                (journey.last_seen_ns() + PLACED_AFTER_NS).wrapping_sub(tail.first_seen_ns())
            };
            journey.events.extend(tail.events.into_iter().map(|mut e| {
                e.time_ns = e.time_ns.wrapping_add(shift);
                e
            }));
            **facts = std::mem::take(&mut **facts).merged(*tail_facts);
        }
    }
    items
}

/// The first journey that left inside a tunnel (its index) and the journey
/// of another recording that arrived inside the same datagram.
fn find_pair(items: &[Item]) -> Option<(usize, usize)> {
    items.iter().enumerate().find_map(|(i, item)| {
        let Told::Journey { journey, .. } = &item.told else {
            return None;
        };
        let left = left_in_tunnel(journey)?;
        let j = items.iter().position(|other| {
            other.recording != item.recording
                && matches!(&other.told, Told::Journey { journey: next, .. }
                    if arrived_in_tunnel(next).is_some_and(|arrived| same_datagram(left, arrived)))
        })?;
        Some((i, j))
    })
}

/// The journey's last event, when it is its packet handed to a device
/// inside a tunnel's datagram and nothing after it was seen here.
fn left_in_tunnel(journey: &Journey) -> Option<&Event> {
    let last = journey.packet_events().last()?;
    (matches!(last.kind, EventKind::Transmit { .. }) && last.packet.tunnel.is_some())
        .then_some(last)
}

/// The journey's first event, when it is its packet taken in by a device
/// inside a tunnel's datagram.
fn arrived_in_tunnel(journey: &Journey) -> Option<&Event> {
    let first = journey.packet_events().next()?;
    (matches!(first.kind, EventKind::Receive { .. }) && first.packet.tunnel.is_some())
        .then_some(first)
}

/// The same datagram (outer headers and IP id) carrying the same packet.
fn same_datagram(left: &Event, arrived: &Event) -> bool {
    let (sent, taken) = (&left.packet, &arrived.packet);
    sent.tunnel == taken.tunnel
        && (sent.src, sent.dst, sent.ip_id, sent.length)
            == (taken.src, taken.dst, taken.ip_id, taken.length)
        && sent.transport.protocol_number() == taken.transport.protocol_number()
}

/// The stories' inputs with journeys numbered anew (several recordings
/// number theirs from 1 each), the parts they play pointing at the new
/// numbers; a request's "no reply" is dropped when a joined part of
/// another host holds its reply.
fn renumbered(items: Vec<Item>) -> Vec<Told> {
    let mut numbers: HashMap<(usize, u64), u64> = HashMap::new();
    let mut next = 1;
    for item in &items {
        if let Told::Journey { journey, .. } = &item.told {
            numbers.insert((item.recording, journey.id), next);
            next += 1;
        }
    }
    let mut answered: Vec<u64> = Vec::new();
    let mut told = Vec::new();
    for item in items {
        let number = |id: u64| numbers.get(&(item.recording, id)).copied();
        match item.told {
            Told::Journey {
                mut journey,
                role,
                facts,
            } => {
                journey.id = number(journey.id).unwrap_or(journey.id);
                let role = renumbered_role(role, &number);
                if let Role::Reply { to } = role {
                    answered.push(to);
                }
                told.push(Told::Journey {
                    journey,
                    role,
                    facts,
                });
            }
            Told::NoReply {
                request,
                waited_ms,
                events_lost,
            } => {
                let Some(request) = number(request) else {
                    continue;
                };
                told.push(Told::NoReply {
                    request,
                    waited_ms,
                    events_lost,
                });
            }
        }
    }
    told.retain(|t| !matches!(t, Told::NoReply { request, .. } if answered.contains(request)));
    told
}

fn renumbered_role(role: Role, number: &impl Fn(u64) -> Option<u64>) -> Role {
    let renumber = |id: u64| number(id).unwrap_or(id);
    match role {
        Role::Request => Role::Request,
        Role::Retransmission { of } => Role::Retransmission { of: renumber(of) },
        Role::SameFlow { of } => Role::SameFlow { of: renumber(of) },
        Role::SecondLeg { of } => Role::SecondLeg { of: renumber(of) },
        Role::Reply { to } => Role::Reply { to: renumber(to) },
        Role::ArpRequest {
            result: ArpResult::Answered { asked, reply, mac },
        } => Role::ArpRequest {
            result: ArpResult::Answered {
                asked,
                reply: renumber(reply),
                mac,
            },
        },
        Role::ArpRequest { result } => Role::ArpRequest { result },
        Role::ArpReply { to } => Role::ArpReply { to: renumber(to) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::recording::Recording;

    const OVERLAY_PING: &str = include_str!("recordings/overlay_ping.jsonl");

    /// The recording as the Docker host `engine` alone would have made it:
    /// only the events of its namespaces (by its task's for an event with
    /// none), on its own view of the wiring.
    fn seen_on(engine: &str, boot_ns: u64, clock_ns: u64) -> (Header, Retold) {
        let recording = Recording::parse(OVERLAY_PING.as_bytes()).unwrap();
        let (mut header, retold) = recording.retold().unwrap();
        header.boot_ns = boot_ns;
        let told = retold
            .told
            .into_iter()
            .filter_map(|(told, topology)| {
                let seen = Rc::new(topology.seen_from(engine).unwrap());
                let told = match told {
                    Told::Journey {
                        mut journey,
                        role,
                        facts,
                    } => {
                        journey.events.retain(|e| {
                            let netns = if e.netns == 0 { e.task_netns } else { e.netns };
                            seen.namespace(netns).is_some()
                        });
                        for event in &mut journey.events {
                            event.time_ns += clock_ns;
                        }
                        if journey.events.is_empty() {
                            return None;
                        }
                        Told::Journey {
                            journey,
                            role,
                            facts,
                        }
                    }
                    other => other,
                };
                Some((told, seen))
            })
            .collect();
        (
            header,
            Retold {
                told,
                exit_code: Some(0),
            },
        )
    }

    fn journeys(retold: &Retold) -> Vec<(&Journey, Role)> {
        retold
            .told
            .iter()
            .filter_map(|(told, _)| match told {
                Told::Journey { journey, role, .. } => Some((journey, *role)),
                Told::NoReply { .. } => None,
            })
            .collect()
    }

    #[test]
    fn two_hosts_recordings_join_into_the_journeys_one_machine_saw() {
        let whole = Recording::parse(OVERLAY_PING.as_bytes())
            .unwrap()
            .retold()
            .unwrap()
            .1;
        let (_, joined) = join(vec![seen_on("host-a", 7, 0), seen_on("host-b", 7, 0)]).unwrap();
        let (whole, joined) = (journeys(&whole), journeys(&joined));
        assert_eq!(joined.len(), whole.len(), "{joined:#?}");
        for ((whole, whole_role), (joined, joined_role)) in whole.iter().zip(&joined) {
            assert_eq!(joined.events, whole.events);
            assert_eq!(joined_role, whole_role);
        }
    }

    #[test]
    fn another_machines_part_comes_after_with_its_own_times() {
        // host-b's kernel clock is an hour behind, and it booted elsewhere.
        const BEHIND_NS: u64 = 3_600_000_000_000;
        let (_, joined) = join(vec![
            seen_on("host-a", 7, BEHIND_NS),
            seen_on("host-b", 9_000_000_000, 0),
        ])
        .unwrap();
        let (request, role) = journeys(&joined)[0];
        assert_eq!(role, Role::Request);
        let wrapped = request
            .events
            .iter()
            .position(|e| e.packet.tunnel.is_some())
            .unwrap();
        // Causality: every event of host-b's part after host-a's last one.
        let times: Vec<u64> = request.events.iter().map(|e| e.time_ns).collect();
        let arrived = request
            .events
            .iter()
            .position(|e| matches!(e.kind, EventKind::Receive { .. }) && e.packet.tunnel.is_some())
            .unwrap();
        assert!(wrapped < arrived);
        assert!(times[arrived] > times[arrived - 1], "{times:?}");
        let (reply, role) = journeys(&joined)[1];
        assert_eq!(role, Role::Reply { to: request.id });
        assert!(
            reply
                .events
                .windows(2)
                .all(|w| w[0].time_ns <= w[1].time_ns)
        );
    }
}
