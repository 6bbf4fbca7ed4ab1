//! Tells journeys: from a journey, the part it plays and the facts read for
//! it, to the story printed. The same for a live run and for a replayed
//! recording, so both print the very same text.

use std::{
    collections::VecDeque,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Result;

use crate::{
    enrich::{Listener, Published, Topology, Wiring, facts::Facts},
    explain::{self, Answer, NoReply, Outcome, RequestSummary, Story, Telling},
    journey::{Journey, exchanges::Role},
    render::{self, pcap::PcapFile, step::Stepper, terminal::Palette, topology},
    session::{Destination, Told},
};

/// Most requests remembered for the replies and "no reply" lines still to come.
const MAX_REMEMBERED: usize = 1024;

pub struct Teller {
    destination: Destination,
    /// DEST is a published port: where Docker sends it.
    published: Option<Published>,
    /// The process listening on the published port (docker-proxy), if any.
    proxy: Option<Listener>,
    output: Output,
    /// Requests told, for their replies' stories and "no reply" lines.
    requests: VecDeque<RequestSummary>,
    /// A reply that was the answer asked for (an echo reply, a SYN+ACK) came.
    answered: bool,
    drawing: Drawing,
}

/// Where the stories go besides the terminal.
pub struct Output {
    pub json: bool,
    /// `--step` on a terminal: everything printed goes through it.
    pub stepper: Option<Stepper>,
    /// `--pcap FILE`: a packet per hop, and the file's name.
    pub pcap: Option<(PcapFile, PathBuf)>,
    /// How stories are drawn on stdout (`--step` draws on a terminal).
    pub palette: Palette,
    /// `--svg FILE`: the first exchange drawn on the topology picture.
    pub svg: Option<PathBuf>,
}

impl Output {
    /// The outputs asked for; the capture file is created now, so a path
    /// that cannot be written is said before anything is traced.
    pub fn new(
        json: bool,
        step: bool,
        pcap: Option<&Path>,
        svg: Option<&Path>,
        boot_ns: u64,
    ) -> Result<Self> {
        let pcap = pcap
            .map(|path| anyhow::Ok((PcapFile::create(path, boot_ns)?, path.to_owned())))
            .transpose()?;
        let stepper = Stepper::on_a_terminal(step, json);
        Ok(Self {
            json,
            palette: if stepper.is_some() {
                Palette::COLOR
            } else {
                Palette::for_stdout()
            },
            stepper,
            pcap,
            svg: svg.map(Path::to_owned),
        })
    }
}

/// The stories of the first exchange, kept for `--svg`, and the wiring
/// they happened on.
#[derive(Default)]
struct Drawing {
    stories: Vec<Story>,
    topology: Option<Topology>,
}

impl Teller {
    pub fn new(
        destination: Destination,
        published: Option<Published>,
        proxy: Option<Listener>,
        output: Output,
    ) -> Self {
        Self {
            destination,
            published,
            proxy,
            output,
            requests: VecDeque::new(),
            answered: false,
            drawing: Drawing::default(),
        }
    }

    /// An answer that was the one asked for was told.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// The request told with number `id`, while it is remembered.
    pub fn request(&self, id: u64) -> Option<&RequestSummary> {
        self.requests.iter().find(|r| r.id == id)
    }

    /// Tells what `told` is told from, on the wiring `topology`.
    pub fn tell(&mut self, told: &Told, topology: &Topology) -> Result<()> {
        match told {
            Told::Journey {
                journey,
                role,
                facts,
            } => self.journey(journey, *role, topology, facts),
            Told::NoReply {
                request,
                waited_ms,
                events_lost,
            } => self.no_reply(*request, *waited_ms, *events_lost),
        }
    }

    fn journey(
        &mut self,
        journey: &Journey,
        role: Role,
        topology: &Topology,
        facts: &Facts,
    ) -> Result<()> {
        let story = self.story(journey, role, topology, facts);
        if let Some((pcap, _)) = self.output.pcap.as_mut() {
            pcap.story(&story)?;
        }
        if self.output.svg.is_some() {
            self.drawing.keep(&story, role, topology);
        }
        if self.output.json {
            return self.print(&(render::json::render(&story) + "\n"));
        }
        match &self.output.stepper {
            Some(stepper) => {
                let mut steps = render::terminal::render_steps(&story, Palette::COLOR);
                if let Some(ending) = steps.last_mut() {
                    ending.push('\n');
                }
                stepper.tell(steps);
                Ok(())
            }
            None => self.print(&(render::terminal::render(&story, self.output.palette) + "\n")),
        }
    }

    /// The story of `journey` in `role`, told with the requests told before
    /// it (its answer's meaning, a proxy's note), which it joins when it is
    /// one; nothing is printed.
    pub fn story(
        &mut self,
        journey: &Journey,
        role: Role,
        topology: &Topology,
        facts: &Facts,
    ) -> Story {
        let telling = Telling::of(journey, role, &self.requests);
        let arp = matches!(role, Role::ArpRequest { .. } | Role::ArpReply { .. });
        let mut story = explain::explain(journey, &telling, topology, facts);
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
                story.note = Some(explain::second_leg_note(of, self.proxy.as_ref(), sender));
                self.remember(journey, &story, topology);
            }
            Role::Request => {
                if let (Some(published), Some(port)) = (&self.published, self.destination.port) {
                    story.note = Some(explain::published_port_note(
                        published,
                        port,
                        self.proxy.as_ref(),
                    ));
                }
                self.remember(journey, &story, topology);
            }
            Role::Retransmission { of } => story.retransmission_of = Some(of),
            Role::SameFlow { of } => story.same_flow_as = Some(of),
            Role::ArpRequest { .. } => self.remember(journey, &story, topology),
            Role::Reply { .. } | Role::ArpReply { .. } => {}
        }
        story
    }

    /// Request `request` got no reply within `waited_ms`.
    fn no_reply(&mut self, request: u64, waited_ms: u64, events_lost: bool) -> Result<()> {
        let Some(no_reply) = self.no_reply_of(request, waited_ms, events_lost) else {
            return Ok(());
        };
        let text = if self.output.json {
            render::json::no_reply(&no_reply) + "\n"
        } else {
            render::terminal::no_reply(&no_reply, self.output.palette) + "\n"
        };
        self.print(&text)
    }

    /// What says that `request` got no reply within `waited_ms`, while the
    /// request is remembered.
    pub fn no_reply_of(&self, request: u64, waited_ms: u64, events_lost: bool) -> Option<NoReply> {
        let request_told = self.request(request)?;
        let last_seen = Outcome::new(request_told.ending.clone());
        Some(NoReply::new(request, waited_ms, last_seen, events_lost))
    }

    /// Nothing was told: one line says so.
    pub fn saw_nothing(&self, source: &str) {
        eprintln!(
            "pkttrace: saw no packet from {source} to {}",
            self.destination.address
        );
    }

    /// Waits until everything told was shown (`--step`), and completes the
    /// capture.
    pub async fn finish(&mut self) -> Result<()> {
        if let Some(stepper) = self.output.stepper.take() {
            stepper.finish().await;
        }
        if let Some(path) = self.output.svg.take() {
            self.drawing.write(&path)?;
        }
        if let Some((pcap, path)) = self.output.pcap.take() {
            let packets = pcap.finish()?;
            eprintln!(
                "pkttrace: wrote {packets} packets, one per hop, to {} (open it with wireshark or `tshark -r`)",
                path.display()
            );
        }
        Ok(())
    }

    fn remember(&mut self, journey: &Journey, story: &Story, topology: &Topology) {
        if self.requests.len() == MAX_REMEMBERED {
            self.requests.pop_front();
        }
        self.requests
            .push_back(explain::request_summary(journey, story, topology));
    }

    fn print(&self, text: &str) -> Result<()> {
        if let Some(stepper) = &self.output.stepper {
            stepper.print(text.to_owned());
            return Ok(());
        }
        // Drawn in the palette stdout takes: nothing to strip.
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    }
}

impl Drawing {
    /// Keeps the first request and what belongs to it: its replies, its
    /// retransmissions, a proxy's second leg and that one's replies.
    fn keep(&mut self, story: &Story, role: Role, topology: &Topology) {
        let kept = |id: u64| self.stories.iter().any(|s| s.journey == id);
        let belongs = match role {
            Role::Request => self.stories.is_empty(),
            Role::Reply { to } => kept(to),
            Role::Retransmission { of } | Role::SameFlow { of } | Role::SecondLeg { of } => {
                kept(of)
            }
            Role::ArpRequest { .. } | Role::ArpReply { .. } => false,
        };
        if belongs {
            self.stories.push(story.clone());
            self.topology = Some(topology.clone());
        }
    }

    fn write(&self, path: &Path) -> Result<()> {
        let Some(topology) = &self.topology else {
            eprintln!(
                "pkttrace: note: no journey to draw; {} was not written",
                path.display()
            );
            return Ok(());
        };
        let report = topology::Report::build(&Wiring::of_topology(topology.clone()), None);
        topology::write_svg(&topology::journey::render(&report, &self.stories), path)?;
        eprintln!(
            "pkttrace: drew journey {} on the topology picture in {}",
            self.stories
                .iter()
                .map(|s| format!("#{}", s.journey))
                .collect::<Vec<_>>()
                .join(", "),
            path.display()
        );
        Ok(())
    }
}
