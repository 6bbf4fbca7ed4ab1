//! Where both tracing commands take the kernel's events in: decoded, saved
//! for a bug report when the user asked, handed to the journey assembler
//! (and nf_tables' rule traces to their store), losses noticed and said, and
//! Ctrl-C or SIGTERM heard.

use std::{
    collections::VecDeque,
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::sleep,
};

use crate::{
    decode::{self, KernelNames, SiteRole},
    journey::{Assembler, Journey, QUIET_NS, rules::RuleTraces},
    probes::{Probes, RawEvent, monotonic_now_ns, nftrace::RuleTracer},
};

/// How often the caller gets control back when no event comes, and the
/// ring is read: the kernel wakes pkttrace for its events only once a
/// quarter of the ring waits (`wake_flags` in tracer-ebpf).
const TICK: Duration = Duration::from_millis(50);

/// An event is stamped a moment before the ring buffer refuses it: a loss
/// counted after one look may be stamped this much before that look.
const STAMP_LEAD_NS: u64 = 1_000_000;
/// Batches read from the ring in one look before the caller tells what finished.
const MAX_BATCHES_PER_LOOK: usize = 16;
/// Loss windows kept (one per look that found new losses).
const MAX_LOSS_WINDOWS: usize = 4096;

pub struct Intake {
    names: KernelNames,
    /// Whether the programs know where deferred frees happen.
    deferred_frees_told: bool,
    /// `--save-events FILE`: every decoded event, one JSON object a line.
    saved: Option<BufWriter<File>>,
    lost_reported: u64,
    /// When the loss counter was last looked at (kernel clock).
    looked_ns: u64,
    losses: Losses,
    /// What the loss warning says may be incomplete: "journeys", "queries".
    told: &'static str,
    /// Every event stamped before this (kernel clock) has been taken in:
    /// what is quiet up to then is quiet, however long decoding took.
    taken_in_up_to_ns: u64,
    /// When every program was attached (kernel clock); a packet seen
    /// earlier met some of the hooks before they were there.
    attached_ns: u64,
    interrupt: Signal,
    terminate: Signal,
    /// Records read from the ring, waiting to be decoded: one buffer for
    /// every batch (a new one grown per read copied every record again).
    raw: Vec<RawEvent>,
    /// `follow --on-host`: the namespaces of the one Docker host whose
    /// view is told; events elsewhere are not taken in, as that host's own
    /// kernel would never have reported them.
    seen_only_in: Option<Vec<u32>>,
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
            deferred_frees_told: false,
            saved,
            lost_reported: 0,
            looked_ns: monotonic_now_ns(),
            losses: Losses::default(),
            told,
            attached_ns: u64::MAX,
            taken_in_up_to_ns: monotonic_now_ns(),
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            raw: Vec::with_capacity(crate::probes::BATCH),
            seen_only_in: None,
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
        let (mut tracer, store) = rules.unzip();
        let traces = async {
            match tracer.as_deref_mut() {
                Some(tracer) => tracer.next_traces().await,
                None => std::future::pending().await,
            }
        };
        let traces = tokio::select! {
            read = probes.next_events(&mut self.raw) => { read?; None }
            traces = traces => Some(traces?),
            _ = sleep(TICK) => None,
            _ = self.interrupt.recv() => return Ok(false),
            _ = self.terminate.recv() => return Ok(false),
        };
        // Whichever woke us, everything stamped before `looked_at` is in
        // the ring now, and the loss count covers it: what went quiet up to
        // then is quiet, however long decoding takes, and a loss is placed
        // no later than then.
        let looked_at = monotonic_now_ns();
        let lost_so_far = probes.lost_events();
        self.tell_where_deferred_frees_are(probes)?;
        for failure in probes.take_failures() {
            eprintln!("pkttrace: note: {failure}");
        }
        // One batch decoded before the next is read, until the ring is
        // empty: only a batch at a time is held raw.
        // Under a flood the ring may never empty: after a bounded number of
        // batches the caller gets control back to tell what finished (else
        // journeys cut off by the assembler's bounds would pile up).
        let first = self.decode_raw(assembler)?;
        let (emptied, rest) = self.take_batches(probes, assembler)?;
        let newest = first.max(rest);
        // With events left in the ring, only what went quiet before the
        // newest event read is known to be quiet (the quiet time dwarfs the
        // moment between an event's stamp and its place in the ring).
        self.taken_in_up_to_ns = if emptied {
            looked_at
        } else {
            self.taken_in_up_to_ns.max(newest.min(looked_at))
        };
        if let (Some(tracer), Some(store)) = (tracer, store) {
            // Also the traces queued already: their journeys may be told next.
            let queued = tracer.drain()?;
            for failure in tracer.take_failures() {
                eprintln!("pkttrace: note: {failure}; drops there are told without their rule");
            }
            for raw in traces.iter().flatten().chain(&queued) {
                // A message this version cannot read is only a missing detail.
                if let Ok(trace) = decode::nftrace::decode(raw) {
                    store.push(trace);
                }
            }
        }
        // Noted before the caller tells anything, so what the losses touch is flagged.
        self.note_losses(lost_so_far, looked_at);
        Ok(true)
    }

    /// Takes in what waits in the ring when tracing stops (the kernel wakes
    /// pkttrace only for a full quarter of it), so packets seen before the
    /// stop are told whole.
    pub fn take_rest(&mut self, probes: &mut Probes, assembler: &mut Assembler) -> Result<()> {
        self.take_batches(probes, assembler).map(|_| ())
    }

    /// Reads what the ring holds now into `assembler`, at most
    /// MAX_BATCHES_PER_LOOK batches; whether it was emptied, and the newest
    /// event's time (0: none).
    fn take_batches(
        &mut self,
        probes: &mut Probes,
        assembler: &mut Assembler,
    ) -> Result<(bool, u64)> {
        let (mut emptied, mut newest) = (false, 0);
        for _ in 0..MAX_BATCHES_PER_LOOK {
            emptied = probes.events_now(&mut self.raw) < crate::probes::BATCH;
            newest = newest.max(self.decode_raw(assembler)?);
            if emptied {
                break;
            }
        }
        Ok((emptied, newest))
    }

    /// Decodes the records read so far (the events this version knows,
    /// saved when asked) into `assembler`; returns the newest one's time
    /// (0: none).
    fn decode_raw(&mut self, assembler: &mut Assembler) -> Result<u64> {
        let mut newest = 0;
        for raw in self.raw.drain(..) {
            let Some(mut event) = decode::decode(&raw.packet, raw.payload.as_deref(), &self.names)
            else {
                continue;
            };
            // An event without a device's namespace (a socket's read, a
            // deferred free) happened where its task was.
            let happened_in = match event.netns {
                0 => event.task_netns,
                netns => netns,
            };
            if let Some(seen) = &self.seen_only_in
                && !seen.contains(&happened_in)
            {
                continue;
            }
            event.headers = raw.headers.map(decode::PacketBytes);
            if let Some(file) = self.saved.as_mut() {
                serde_json::to_writer(&mut *file, &event)?;
                file.write_all(b"\n")?;
            }
            newest = newest.max(event.time_ns);
            assembler.push(event);
        }
        Ok(newest)
    }

    /// Takes in only the events of these namespaces (None: all).
    pub fn see_only_in(&mut self, namespaces: Option<Vec<u32>>) {
        self.seen_only_in = namespaces;
    }

    /// Says when the kernel's count of lost events went up, and keeps the
    /// kernel-time window since the last look, in which they were lost.
    fn note_losses(&mut self, lost_so_far: u64, now: u64) {
        if lost_so_far > self.lost_reported {
            eprintln!(
                "pkttrace: warning: the kernel dropped {} events because pkttrace's ring buffer was full; {} told around now may be missing steps",
                lost_so_far - self.lost_reported,
                self.told
            );
            self.losses
                .push(self.looked_ns.saturating_sub(STAMP_LEAD_NS), now);
            self.lost_reported = lost_so_far;
        }
        self.looked_ns = now;
    }

    /// Once kallsyms is read (on a thread, since start-up), the programs
    /// learn where deferred frees happen: until then they look at each.
    fn tell_where_deferred_frees_are(&mut self, probes: &mut Probes) -> Result<()> {
        if self.deferred_frees_told || !self.names.symbols_ready() {
            return Ok(());
        }
        self.deferred_frees_told = true;
        match self.names.role_extent(SiteRole::DeferredFree) {
            Some(extent) => probes.know_deferred_frees(extent),
            None => Ok(()),
        }
    }

    /// The kernel time up to which every event has been taken in: the
    /// "now" for deciding what went quiet.
    pub fn taken_in_up_to_ns(&self) -> u64 {
        self.taken_in_up_to_ns
    }

    /// Every program is attached now: packets seen from here on are seen whole.
    pub fn all_attached(&mut self) {
        self.attached_ns = monotonic_now_ns();
    }

    /// The journeys whose packets were seen whole. One already on its way
    /// while the programs attached is left out, and said so: its story
    /// would lack hops, with nothing to show where.
    pub fn seen_whole(&mut self, journeys: Vec<Journey>) -> Vec<Journey> {
        let (whole, partial): (Vec<Journey>, Vec<Journey>) = journeys
            .into_iter()
            .partition(|journey| journey.first_seen_ns() >= self.attached_ns);
        match partial.len() {
            0 => {}
            1 => eprintln!(
                "pkttrace: note: left out a packet already on its way while pkttrace attached its programs: its first hops were not traced"
            ),
            n => eprintln!(
                "pkttrace: note: left out {n} packets already on their way while pkttrace attached its programs: their first hops were not traced"
            ),
        }
        whole
    }

    /// When the kernel lost events, to mark what they may have touched.
    pub fn losses(&self) -> &Losses {
        &self.losses
    }

    pub fn finish(self) -> Result<()> {
        if let Some(mut file) = self.saved {
            file.flush()?;
        }
        Ok(())
    }
}

/// The kernel-time windows in which the kernel lost events, oldest first.
#[derive(Default)]
pub struct Losses {
    windows: VecDeque<(u64, u64)>,
}

impl Losses {
    fn push(&mut self, from_ns: u64, to_ns: u64) {
        if self.windows.len() == MAX_LOSS_WINDOWS {
            self.windows.pop_front();
        }
        self.windows.push_back((from_ns, to_ns));
    }

    /// Events were lost between `from_ns` and `to_ns` (kernel clock).
    pub fn between(&self, from_ns: u64, to_ns: u64) -> bool {
        self.windows
            .iter()
            .any(|&(start, end)| start <= to_ns && from_ns <= end)
    }

    /// Events were lost while `journey`'s packet could have made some: from
    /// a quiet period before its first event to one after its last.
    pub fn around(&self, journey: &Journey) -> bool {
        self.between(
            journey.first_seen_ns().saturating_sub(QUIET_NS),
            journey.last_seen_ns() + QUIET_NS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Losses;

    #[test]
    fn a_loss_marks_what_overlaps_its_window_only() {
        let mut losses = Losses::default();
        assert!(!losses.between(0, u64::MAX));
        losses.push(1_000, 2_000);
        assert!(losses.between(1_500, 1_600), "inside");
        assert!(losses.between(500, 1_000), "touching its start");
        assert!(losses.between(2_000, 9_000), "touching its end");
        assert!(!losses.between(2_001, 9_000), "after it");
        assert!(!losses.between(0, 999), "before it");
    }
}
