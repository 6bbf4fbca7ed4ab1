//! Tells journeys: from a journey, the part it plays and the facts read for
//! it, to the story printed. The same for a live run and for a replayed
//! recording, so both print the very same text.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Result;

use crate::{
    enrich::{Listener, Published, Topology, Wiring, facts::Facts, report::Report},
    explain::{Story, Storyteller},
    journey::{Journey, exchanges::Role},
    render::{self, pcap::PcapFile, step::Stepper, terminal::Palette, topology},
    session::{Destination, Told},
};

/// Tells `follow`'s stories (live or replayed) and shows them: explained
/// by the storyteller, then printed, captured, drawn.
pub struct Teller {
    destination: Destination,
    storyteller: Storyteller,
    output: Output,
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
            storyteller: Storyteller::new(destination.port, published, proxy),
            output,
            drawing: Drawing::default(),
        }
    }

    /// An answer that was the one asked for was told.
    pub fn answered(&self) -> bool {
        self.storyteller.answered()
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
        let story = self.storyteller.story(journey, role, topology, facts);
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

    /// Request `request` got no reply within `waited_ms`.
    fn no_reply(&mut self, request: u64, waited_ms: u64, events_lost: bool) -> Result<()> {
        let Some(no_reply) = self.storyteller.no_reply(request, waited_ms, events_lost) else {
            return Ok(());
        };
        let text = if self.output.json {
            render::json::no_reply(&no_reply) + "\n"
        } else {
            render::terminal::no_reply(&no_reply, self.output.palette) + "\n"
        };
        self.print(&text)
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
        let report = Report::build(&Wiring::of_topology(topology.clone()), None);
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
