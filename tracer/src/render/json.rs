//! One JSON object per journey (JSON Lines); the schema is in the README.

use crate::explain::Story;

pub fn render(story: &Story) -> String {
    serde_json::to_string(story).expect("a story always serializes")
}
