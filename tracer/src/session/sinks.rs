//! Where `follow`'s stories go: the terminal (text, JSON Lines, or a hop at
//! a time), a pcapng capture with a packet per hop, the first exchange
//! drawn on the topology picture. A command picks its sinks; every story
//! goes to each, and each completes its output when the run ends.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    enrich::{Topology, Wiring, report::Report},
    explain::{
        NoReply, Story,
        paths::{PathCounter, Summary},
    },
    journey::exchanges::Role,
    render::{self, pcap::PcapFile, step::Stepper, terminal::Palette, topology},
};

pub enum Sink {
    Printer(Printer),
    /// `follow --summary SECS`: paths counted, told every SECS seconds.
    Summary(Box<SummaryPrinter>),
    /// `--svg FILE`.
    Drawing(Drawing),
    /// `--pcap FILE`.
    Capture(Capture),
}

/// The sinks asked for: the terminal always (JSON with `json`, a hop at a
/// time with `step`), a capture with `pcap` (created now, so a path that
/// cannot be written is said before anything is traced), a drawing with
/// `svg`. `boot_ns`: the kernel clock's zero in wall-clock time.
/// `summary`: every so often a summary of paths instead of the stories.
pub fn chosen(
    json: bool,
    step: bool,
    summary: Option<Duration>,
    pcap: Option<&Path>,
    svg: Option<&Path>,
    boot_ns: u64,
) -> Result<Vec<Sink>> {
    let mut sinks = match summary {
        Some(every) => vec![Sink::Summary(Box::new(SummaryPrinter::new(json, every)))],
        None => {
            let stepper = Stepper::on_a_terminal(step, json);
            vec![Sink::Printer(Printer {
                json,
                palette: if stepper.is_some() {
                    Palette::COLOR
                } else {
                    Palette::for_stdout()
                },
                stepper,
            })]
        }
    };
    if let Some(path) = svg {
        sinks.push(Sink::Drawing(Drawing {
            path: path.to_owned(),
            stories: Vec::new(),
            topology: None,
        }));
    }
    if let Some(path) = pcap {
        sinks.push(Sink::Capture(Capture {
            file: PcapFile::create(path, boot_ns)?,
            path: path.to_owned(),
        }));
    }
    Ok(sinks)
}

impl Sink {
    /// A journey's story, told in `role` on the wiring `topology`.
    pub fn story(&mut self, story: &Story, role: Role, topology: &Topology) -> Result<()> {
        match self {
            Self::Printer(printer) => printer.story(story),
            Self::Summary(summary) => {
                summary.paths.count(story);
                Ok(())
            }
            Self::Drawing(drawing) => {
                drawing.keep(story, role, topology);
                Ok(())
            }
            Self::Capture(capture) => capture.file.story(story),
        }
    }

    /// A request that got no reply.
    pub fn no_reply(&mut self, no_reply: &NoReply) -> Result<()> {
        match self {
            Self::Printer(printer) => {
                let text = if printer.json {
                    render::json::no_reply(no_reply) + "\n"
                } else {
                    render::terminal::no_reply(no_reply, printer.palette) + "\n"
                };
                printer.print(&text)
            }
            Self::Summary(summary) => {
                summary.paths.unanswered();
                Ok(())
            }
            Self::Drawing(_) | Self::Capture(_) => Ok(()),
        }
    }

    /// Time passes: a summary is told when its interval is over.
    /// `events_lost`: what the kernel dropped since tracing began.
    pub fn tick(&mut self, events_lost: u64) -> Result<()> {
        match self {
            Self::Summary(summary) => summary.tick(events_lost),
            Self::Printer(_) | Self::Drawing(_) | Self::Capture(_) => Ok(()),
        }
    }

    /// Everything was told: waits until it was all shown (`--step`), and
    /// writes the files.
    pub async fn finish(self) -> Result<()> {
        match self {
            Self::Summary(mut summary) => summary.finish(),
            Self::Printer(printer) => {
                if let Some(stepper) = printer.stepper {
                    stepper.finish().await;
                }
                Ok(())
            }
            Self::Drawing(drawing) => drawing.write(),
            Self::Capture(capture) => {
                let packets = capture.file.finish()?;
                eprintln!(
                    "pkttrace: wrote {packets} packets, one per hop, to {} (open it with wireshark or `tshark -r`)",
                    capture.path.display()
                );
                Ok(())
            }
        }
    }
}

/// Stories on stdout.
pub struct Printer {
    json: bool,
    /// `--step` on a terminal: everything printed goes through it.
    stepper: Option<Stepper>,
    /// How stories are drawn on stdout (`--step` draws on a terminal).
    palette: Palette,
}

impl Printer {
    fn story(&self, story: &Story) -> Result<()> {
        if self.json {
            return self.print(&(render::json::render(story) + "\n"));
        }
        match &self.stepper {
            Some(stepper) => {
                let mut steps = render::terminal::render_steps(story, Palette::COLOR);
                if let Some(ending) = steps.last_mut() {
                    ending.push('\n');
                }
                stepper.tell(steps);
                Ok(())
            }
            None => self.print(&(render::terminal::render(story, self.palette) + "\n")),
        }
    }

    fn print(&self, text: &str) -> Result<()> {
        if let Some(stepper) = &self.stepper {
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

/// Paths counted and told every interval, and for the whole run at the end.
pub struct SummaryPrinter {
    json: bool,
    palette: Palette,
    paths: PathCounter,
    every: Duration,
    began: Instant,
    next: Instant,
    /// The kernel's loss count when the interval began, and the latest.
    lost_before: u64,
    lost_now: u64,
}

impl SummaryPrinter {
    fn new(json: bool, every: Duration) -> Self {
        let began = Instant::now();
        Self {
            json,
            palette: Palette::for_stdout(),
            paths: PathCounter::new(),
            every,
            began,
            next: began + every,
            lost_before: 0,
            lost_now: 0,
        }
    }

    fn tick(&mut self, events_lost: u64) -> Result<()> {
        self.lost_now = events_lost;
        if Instant::now() < self.next {
            return Ok(());
        }
        // Intervals keep their length however late the tick came.
        while self.next <= Instant::now() {
            self.next += self.every;
        }
        self.tell_interval()
    }

    fn tell_interval(&mut self) -> Result<()> {
        let lost = self.lost_now - self.lost_before;
        self.lost_before = self.lost_now;
        let summary = self
            .paths
            .interval(self.began.elapsed().as_secs_f64(), lost);
        self.print(&summary)
    }

    fn finish(&mut self) -> Result<()> {
        self.tell_interval()?;
        let whole = self.paths.whole_run(self.began.elapsed().as_secs_f64());
        self.print(&whole)
    }

    fn print(&self, summary: &Summary) -> Result<()> {
        let text = if self.json {
            render::json::summary(summary) + "\n"
        } else {
            render::terminal::summary(summary, self.palette) + "\n"
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    }
}

/// A packet per hop, as it was there.
pub struct Capture {
    file: PcapFile,
    path: PathBuf,
}

/// The stories of the first exchange, kept for the picture, and the wiring
/// they happened on.
pub struct Drawing {
    path: PathBuf,
    stories: Vec<Story>,
    topology: Option<Topology>,
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

    fn write(&self) -> Result<()> {
        let path = &self.path;
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
