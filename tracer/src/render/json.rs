//! One JSON object per line (JSON Lines), described in docs/json.md and
//! by the JSON Schema `pkttrace schema` prints (`schema.rs`). Every line
//! says its schema version and what kind of record it is.

use serde::Serialize;

use crate::explain::{NoReply, Story, compare::Compared, dns::DnsStory, paths::Summary};

/// The version of the JSON lines `follow` prints; it changes when a field
/// changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 4;
/// The same for `dns`.
pub const DNS_SCHEMA_VERSION: u32 = 4;

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    schema_version: u32,
    record: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

/// Room for a whole line up front: a journey's story is 1–3 KB, and growing
/// the buffer from serde_json's 128 bytes copied it four or five times.
const LINE_CAPACITY: usize = 4096;

fn line<T: Serialize>(schema_version: u32, record: &'static str, body: &T) -> String {
    let mut out = Vec::with_capacity(LINE_CAPACITY);
    serde_json::to_writer(
        &mut out,
        &Line {
            schema_version,
            record,
            body,
        },
    )
    .expect("a record always serializes");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// A journey's story.
pub fn render(story: &Story) -> String {
    line(SCHEMA_VERSION, "journey", story)
}

/// A request that got no reply.
pub fn no_reply(no_reply: &NoReply) -> String {
    line(SCHEMA_VERSION, "no_reply", no_reply)
}

/// `follow --summary`: an interval's paths, or the whole run's.
pub fn summary(summary: &Summary) -> String {
    line(SCHEMA_VERSION, "summary", summary)
}

/// What the kernel lost or skipped while tracing, counted exactly, by probe
/// (`follow` and `dns` alike; the record comes last, and only when there
/// is something to count).
pub fn losses<'a>(
    schema_version: u32,
    delivered: u64,
    lost: &'a [(String, u64)],
    skipped: &'a [(String, u64)],
) -> String {
    let by_name = |counts: &'a [(String, u64)]| -> std::collections::BTreeMap<&'a str, u64> {
        counts.iter().map(|(name, n)| (name.as_str(), *n)).collect()
    };
    line(
        schema_version,
        "losses",
        &Losses {
            events_delivered: delivered,
            events_lost: lost.iter().map(|(_, n)| n).sum(),
            lost_by_probe: by_name(lost),
            runs_skipped: by_name(skipped),
        },
    )
}

/// What the kernel lost or skipped, by probe.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Losses<'a> {
    pub events_delivered: u64,
    pub events_lost: u64,
    /// Events the ring buffer had no room for, by the probe that made them.
    pub lost_by_probe: std::collections::BTreeMap<&'a str, u64>,
    /// Program runs the kernel skipped (recursion, another program running), by probe.
    pub runs_skipped: std::collections::BTreeMap<&'a str, u64>,
}

/// The version of what `diff --json` prints.
pub const DIFF_SCHEMA_VERSION: u32 = 2;

/// Two recordings compared: one object.
pub fn compared(compared: &Compared) -> String {
    line(DIFF_SCHEMA_VERSION, "diff", compared)
}

/// A DNS query, its answer and what served it.
pub fn dns_query(story: &DnsStory) -> String {
    line(DNS_SCHEMA_VERSION, "query", story)
}
