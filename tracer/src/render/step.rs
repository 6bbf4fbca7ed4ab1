//! `--step`: a story shown one step at a time, the next after Enter, for
//! live demos. The steps queue up in a task of their own, so tracing goes
//! on (and loses nothing) while the audience reads.

use std::io::{BufRead, Write};

use anstyle::Style;
use tokio::{
    sync::mpsc::{self, UnboundedReceiver, UnboundedSender},
    task::JoinHandle,
};

const PROMPT: Style = Style::new().dimmed();

/// Text to print, and whether to wait for Enter after it.
struct Chunk {
    text: String,
    then_wait: bool,
}

pub struct Stepper {
    chunks: UnboundedSender<Chunk>,
    shower: JoinHandle<()>,
}

impl Stepper {
    /// Only where someone can press Enter and sees the story: a terminal on
    /// both ends.
    pub fn on_a_terminal(asked: bool, json: bool) -> Option<Self> {
        use std::io::IsTerminal;
        if !(asked && !json && std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
            return None;
        }
        let (chunks, queued) = mpsc::unbounded_channel();
        let (keys, presses) = mpsc::unbounded_channel();
        // A plain thread: a read of stdin cannot be cancelled, and a runtime
        // would wait for its blocking tasks at exit; a thread does not hold
        // the process.
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if keys.send(line).is_err() {
                    break;
                }
            }
        });
        Some(Self {
            chunks,
            shower: tokio::spawn(show(queued, presses)),
        })
    }

    /// Shows `steps` one at a time: a wait between two of them, none after
    /// the last (the next story starts at once, its first step waits).
    pub fn tell(&self, steps: Vec<String>) {
        let last = steps.len().saturating_sub(1);
        for (i, text) in steps.into_iter().enumerate() {
            let _ = self.chunks.send(Chunk {
                text,
                then_wait: i < last,
            });
        }
    }

    /// Text shown in its turn, with no wait after it.
    pub fn print(&self, text: String) {
        let _ = self.chunks.send(Chunk {
            text,
            then_wait: false,
        });
    }

    /// Waits until everything queued was shown.
    pub async fn finish(self) {
        drop(self.chunks);
        let _ = self.shower.await;
    }
}

async fn show(mut queued: UnboundedReceiver<Chunk>, mut presses: UnboundedReceiver<String>) {
    let mut stepping = true;
    while let Some(chunk) = queued.recv().await {
        print(&chunk.text);
        if !(stepping && chunk.then_wait) {
            continue;
        }
        print(&format!(
            "{PROMPT}Enter: next step · q Enter: the rest at once{PROMPT:#} "
        ));
        stepping = tokio::select! {
            line = presses.recv() => line.is_some_and(|l| l.trim() != "q"),
            // Ctrl-C ends the trace; what is left is shown at once.
            _ = tokio::signal::ctrl_c() => false,
        };
        // The prompt's line goes, so the story reads as if printed at once.
        print("\x1b[1A\x1b[2K");
    }
}

fn print(text: &str) {
    let mut out = anstream::stdout();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
