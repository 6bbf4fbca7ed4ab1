//! Tells `follow`'s stories: what each is told from goes to the
//! storyteller, the story to every sink. The same for a live run and for a
//! replayed recording, so both print the very same text.

use anyhow::Result;

use crate::{
    enrich::{Listener, Published, Topology},
    explain::{Storyteller, compare},
    session::{
        Destination, Told,
        recording::{Header, Retold},
        sinks::Sink,
    },
};

/// A recording's stories told again and kept, not shown: what `diff`
/// compares.
pub fn collect(header: &Header, retold: &Retold) -> compare::Telling {
    let mut storyteller = Storyteller::new(
        header.destination.port,
        header.published.clone(),
        header.proxy.clone(),
    );
    let mut telling = compare::Telling {
        stories: Vec::new(),
        no_replies: Vec::new(),
    };
    for (told, topology) in &retold.told {
        match told {
            Told::Journey {
                journey,
                role,
                facts,
            } => telling
                .stories
                .push(storyteller.story(journey, *role, topology, facts)),
            Told::NoReply {
                request,
                waited_ms,
                events_lost,
            } => telling.no_replies.extend(storyteller.no_reply(
                *request,
                *waited_ms,
                *events_lost,
                topology,
            )),
        }
    }
    telling
}

pub struct Teller {
    destination: Destination,
    storyteller: Storyteller,
    sinks: Vec<Sink>,
}

impl Teller {
    /// Tells stories of packets to `destination` (a published port when
    /// `published`, served by `proxy`) into `sinks`.
    pub fn new(
        destination: Destination,
        published: Option<Published>,
        proxy: Option<Listener>,
        sinks: Vec<Sink>,
    ) -> Self {
        Self {
            destination,
            storyteller: Storyteller::new(destination.port, published, proxy),
            sinks,
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
            } => {
                let story = self.storyteller.story(journey, *role, topology, facts);
                for sink in &mut self.sinks {
                    sink.story(&story, *role, topology)?;
                }
            }
            Told::NoReply {
                request,
                waited_ms,
                events_lost,
            } => {
                // A request no longer remembered is not told again.
                let Some(no_reply) =
                    self.storyteller
                        .no_reply(*request, *waited_ms, *events_lost, topology)
                else {
                    return Ok(());
                };
                for sink in &mut self.sinks {
                    sink.no_reply(&no_reply)?;
                }
            }
        }
        Ok(())
    }

    /// Nothing was told: one line says so.
    pub fn saw_nothing(&self, source: &str) {
        eprintln!(
            "pkttrace: saw no packet from {source} to {}",
            self.destination.address
        );
    }

    /// Time passes (`follow --summary` tells an interval when it is over);
    /// `events_lost`: what the kernel dropped since tracing began.
    pub fn tick(&mut self, events_lost: u64) -> Result<()> {
        for sink in &mut self.sinks {
            sink.tick(events_lost)?;
        }
        Ok(())
    }

    /// Every sink completes its output.
    pub async fn finish(&mut self) -> Result<()> {
        for sink in self.sinks.drain(..) {
            sink.finish().await?;
        }
        Ok(())
    }
}
