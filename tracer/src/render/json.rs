//! One JSON object per line (JSON Lines); the schemas are in docs/json.md.
//! Every line says its schema version and what kind of record it is.

use serde::Serialize;

use crate::explain::{NoReply, Story, dns::DnsStory};

/// The version of the JSON lines `follow` prints; it changes when a field
/// changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 2;
/// The same for `dns`.
pub const DNS_SCHEMA_VERSION: u32 = 2;

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    schema_version: u32,
    record: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

fn line<T: Serialize>(schema_version: u32, record: &'static str, body: &T) -> String {
    serde_json::to_string(&Line {
        schema_version,
        record,
        body,
    })
    .expect("a record always serializes")
}

/// A journey's story.
pub fn render(story: &Story) -> String {
    line(SCHEMA_VERSION, "journey", story)
}

/// A request that got no reply.
pub fn no_reply(no_reply: &NoReply) -> String {
    line(SCHEMA_VERSION, "no_reply", no_reply)
}

/// A DNS query, its answer and what served it.
pub fn dns_query(story: &DnsStory) -> String {
    line(DNS_SCHEMA_VERSION, "query", story)
}
