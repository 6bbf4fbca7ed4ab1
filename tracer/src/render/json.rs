//! One JSON object per line (JSON Lines); the schema is in docs/json.md.
//! Every line says its schema version and what kind of record it is.

use serde::Serialize;

use crate::explain::{NoReply, Story};

/// The version of the JSON lines `follow` prints; it changes when a field
/// changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    schema_version: u32,
    record: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

fn line<T: Serialize>(record: &'static str, body: &T) -> String {
    serde_json::to_string(&Line {
        schema_version: SCHEMA_VERSION,
        record,
        body,
    })
    .expect("a record always serializes")
}

/// A journey's story.
pub fn render(story: &Story) -> String {
    line("journey", story)
}

/// A request that got no reply.
pub fn no_reply(no_reply: &NoReply) -> String {
    line("no_reply", no_reply)
}
