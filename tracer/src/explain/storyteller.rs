//! Tells journeys one after another, as a run or a recording hands them
//! over: a reply's story needs the request it answers, a request to a
//! published port says how Docker serves it, a proxy's own connection says
//! whose it is. Pure: it keeps the requests told, nothing else.

use std::collections::VecDeque;

use crate::{
    enrich::{Listener, Published, Topology, facts::Facts},
    journey::{Journey, exchanges::Role},
};

use super::{
    Answer, NoReply, Outcome, RequestSummary, Story, Telling, explain, published_port_note,
    request_summary, second_leg_note, verdict,
};

/// Most requests remembered for the replies and "no reply" lines still to come.
const MAX_REMEMBERED: usize = 1024;

pub struct Storyteller {
    /// The port DEST named, if any.
    port: Option<u16>,
    /// DEST is a published port: where Docker sends it.
    published: Option<Published>,
    /// The process listening on the published port (docker-proxy), if any.
    proxy: Option<Listener>,
    /// Requests told, for their replies' stories and "no reply" lines.
    requests: VecDeque<RequestSummary>,
    /// A reply that was the answer asked for (an echo reply, a SYN+ACK) came.
    answered: bool,
}

impl Storyteller {
    pub fn new(port: Option<u16>, published: Option<Published>, proxy: Option<Listener>) -> Self {
        Self {
            port,
            published,
            proxy,
            requests: VecDeque::new(),
            answered: false,
        }
    }

    /// An answer that was the one asked for was told.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// The story of `journey` in `role`, told with the requests told before
    /// it (its answer's meaning, a proxy's note), which it joins when it is
    /// one.
    pub fn story(
        &mut self,
        journey: &Journey,
        role: Role,
        topology: &Topology,
        facts: &Facts,
    ) -> Story {
        let telling = Telling::of(journey, role, &self.requests);
        let arp = matches!(role, Role::ArpRequest { .. } | Role::ArpReply { .. });
        let mut story = explain(journey, &telling, topology, facts);
        // A reply that refused its request says why, in the user's terms.
        if let (Some(request), Some(answer)) = (telling.request, &story.answer)
            && !arp
        {
            story.verdict = verdict::on_reply(request, answer, &facts.listeners, topology);
        }
        if story.answer.as_ref().is_some_and(Answer::succeeded) && !arp {
            self.answered = true;
        }
        match role {
            Role::SecondLeg { of } => {
                let sender = journey
                    .events
                    .iter()
                    .find_map(|e| e.process().map(|(_, pid)| pid));
                story.second_leg_of = Some(of);
                story.note = Some(second_leg_note(of, self.proxy.as_ref(), sender));
                self.remember(request_summary(journey, &story, topology, facts));
            }
            Role::Request => {
                if let (Some(published), Some(port)) = (&self.published, self.port) {
                    story.note = Some(published_port_note(published, port, self.proxy.as_ref()));
                }
                let summary = request_summary(journey, &story, topology, facts);
                story.verdict = verdict::on_not_sent(&summary, topology);
                self.remember(summary);
            }
            Role::Retransmission { of } => story.retransmission_of = Some(of),
            Role::SameFlow { of } => story.same_flow_as = Some(of),
            Role::ArpRequest { .. } => {
                self.remember(request_summary(journey, &story, topology, facts))
            }
            Role::Reply { .. } | Role::ArpReply { .. } => {}
        }
        story
    }

    /// What says that `request` got no reply within `waited_ms`, and why,
    /// on the wiring `topology`, while the request is remembered.
    pub fn no_reply(
        &self,
        request: u64,
        waited_ms: u64,
        events_lost: bool,
        topology: &Topology,
    ) -> Option<NoReply> {
        let request_told = self.requests.iter().find(|r| r.id == request)?;
        let last_seen = Outcome::new(request_told.ending.clone());
        let verdict = verdict::on_no_reply(request_told, topology);
        Some(NoReply::new(
            request,
            waited_ms,
            last_seen,
            events_lost,
            verdict,
        ))
    }

    fn remember(&mut self, summary: RequestSummary) {
        if self.requests.len() == MAX_REMEMBERED {
            self.requests.pop_front();
        }
        self.requests.push_back(summary);
    }
}
