//! Where both tracing commands take the kernel's events in: decoded, saved
//! for a bug report when the user asked, handed to the journey assembler
//! (and nf_tables' rule traces to their store), losses noticed and said, and
//! Ctrl-C or SIGTERM heard.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::sleep,
};

use crate::{
    decode::{self, Event, KernelNames},
    journey::{Assembler, Journey, rules::RuleTraces},
    probes::{Probes, RawEvent, monotonic_now_ns, nftrace::RuleTracer},
};

/// How often the caller gets control back when no event comes.
const TICK: Duration = Duration::from_millis(50);

/// What finishes this soon after the kernel reported lost events is flagged:
/// its missing steps may be among the lost.
const LOSS_SHADOW: Duration = Duration::from_secs(2);

pub struct Intake {
    names: KernelNames,
    /// `--save-events FILE`: every decoded event, one JSON object a line.
    saved: Option<BufWriter<File>>,
    lost_reported: u64,
    last_loss: Option<Instant>,
    /// What the loss warning says may be incomplete: "journeys", "queries".
    told: &'static str,
    /// When every program was attached (kernel clock); a packet seen
    /// earlier met some of the hooks before they were there.
    attached_ns: u64,
    interrupt: Signal,
    terminate: Signal,
}

impl Intake {
    pub fn new(names: KernelNames, save_events: Option<&Path>, told: &'static str) -> Result<Self> {
        let saved = save_events
            .map(|path| {
                File::create(path)
                    .map(BufWriter::new)
                    .with_context(|| format!("cannot write {}", path.display()))
            })
            .transpose()?;
        Ok(Self {
            names,
            saved,
            lost_reported: 0,
            last_loss: None,
            told,
            attached_ns: u64::MAX,
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for events (at most a tick), hands them to `assembler` (rule
    /// traces to `rules`, when a tracer runs) and checks for losses; false
    /// once the user asked pkttrace to stop.
    pub async fn take_in(
        &mut self,
        probes: &mut Probes,
        assembler: &mut Assembler,
        rules: Option<(&mut RuleTracer, &mut RuleTraces)>,
    ) -> Result<bool> {
        let (tracer, store) = rules.unzip();
        let traces = async {
            match tracer {
                Some(tracer) => tracer.next_traces().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            events = probes.next_events() => {
                for event in self.decode(events?)? {
                    assembler.push(event);
                }
            }
            traces = traces => {
                if let Some(store) = store {
                    for raw in &traces? {
                        // A message this version cannot read is only a missing detail.
                        if let Ok(trace) = decode::nftrace::decode(raw) {
                            store.push(trace);
                        }
                    }
                }
            }
            _ = sleep(TICK) => {}
            _ = self.interrupt.recv() => return Ok(false),
            _ = self.terminate.recv() => return Ok(false),
        }
        // Checked before the caller tells anything, so what the losses touch is flagged.
        self.note_losses(probes.lost_events());
        Ok(true)
    }

    /// The events this version knows, decoded (and saved when asked).
    fn decode(&mut self, raw: Vec<RawEvent>) -> Result<Vec<Event>> {
        let mut events = Vec::with_capacity(raw.len());
        for raw in raw {
            let Some(event) = decode::decode(&raw.packet, raw.payload.as_deref(), &self.names)
            else {
                continue;
            };
            if let Some(file) = self.saved.as_mut() {
                serde_json::to_writer(&mut *file, &event)?;
                file.write_all(b"\n")?;
            }
            events.push(event);
        }
        Ok(events)
    }

    /// Says when the kernel's count of lost events went up.
    fn note_losses(&mut self, lost_so_far: u64) {
        if lost_so_far <= self.lost_reported {
            return;
        }
        eprintln!(
            "pkttrace: warning: the kernel dropped {} events because pkttrace's ring buffer was full; {} seen around now may be missing steps",
            lost_so_far - self.lost_reported,
            self.told
        );
        self.lost_reported = lost_so_far;
        self.last_loss = Some(Instant::now());
    }

    /// Every program is attached now: packets seen from here on are seen whole.
    pub fn all_attached(&mut self) {
        self.attached_ns = monotonic_now_ns();
    }

    /// The journeys whose packets were seen whole. One already on its way
    /// while the programs attached is left out, and said so with its number
    /// (the numbers told skip it): its story would lack hops, with nothing
    /// to show where.
    pub fn seen_whole(&mut self, journeys: Vec<Journey>) -> Vec<Journey> {
        let (whole, partial): (Vec<Journey>, Vec<Journey>) = journeys
            .into_iter()
            .partition(|journey| journey.first_seen_ns() >= self.attached_ns);
        if !partial.is_empty() {
            eprintln!(
                "pkttrace: note: left out {}: already on the way while pkttrace attached its programs, their first hops were not traced",
                numbered(partial.iter().map(|j| j.id))
            );
        }
        whole
    }

    /// Events were lost a moment ago: what is told now may miss steps.
    pub fn lost_recently(&self) -> bool {
        self.last_loss.is_some_and(|at| at.elapsed() < LOSS_SHADOW)
    }

    pub fn finish(self) -> Result<()> {
        if let Some(mut file) = self.saved {
            file.flush()?;
        }
        Ok(())
    }
}

/// "#1, #2 and #5"; past five numbers, how many more.
fn numbered(ids: impl Iterator<Item = u64>) -> String {
    const SHOWN: usize = 5;
    let ids: Vec<String> = ids.map(|id| format!("#{id}")).collect();
    match ids.len() {
        0 => String::new(),
        1 => ids[0].clone(),
        n if n <= SHOWN => format!("{} and {}", ids[..n - 1].join(", "), ids[n - 1]),
        n => format!("{} and {} more", ids[..SHOWN].join(", "), n - SHOWN),
    }
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn numbers_are_listed_then_counted() {
        assert_eq!(numbered([3].into_iter()), "#3");
        assert_eq!(numbered([1, 2, 5].into_iter()), "#1, #2 and #5");
        assert_eq!(numbered(1..=8), "#1, #2, #3, #4, #5 and 3 more");
    }
}
