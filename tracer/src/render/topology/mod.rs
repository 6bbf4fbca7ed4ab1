//! `pkttrace topology`: the host's wiring as grouped tables, as JSON and
//! as a Graphviz picture, all three from one [`Report`].

pub mod dot;
mod report;
pub mod table;

pub use report::Report;

/// The report as one pretty-printed JSON document; the schema is in the README.
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("a report always serializes")
}

#[cfg(test)]
mod tests;
