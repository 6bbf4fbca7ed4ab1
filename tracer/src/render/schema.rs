//! The JSON Schema of every JSON pkttrace prints, generated from the very
//! types it serializes (schemars), so that it cannot drift from the output:
//! `pkttrace schema follow|dns|topology` prints it, docs/schema/ keeps it.

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Value, json};

use crate::explain::{NoReply, Story, dns::DnsStory};

use super::{json as lines, topology};

/// Whose JSON: each command that prints JSON has a schema of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// `follow --json` and `replay --json`.
    Follow,
    /// `dns --json`.
    Dns,
    /// `topology --json`.
    Topology,
    /// `diff --json`.
    Diff,
}

/// The schema of `output`, as pretty JSON.
pub fn schema(output: Output) -> String {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let root = match output {
        Output::Follow => lines_of(
            &mut generator,
            "pkttrace follow --json",
            lines::SCHEMA_VERSION,
            &[
                ("journey", generator_ref::<Story>),
                ("no_reply", generator_ref::<NoReply>),
                ("summary", generator_ref::<crate::explain::paths::Summary>),
                ("losses", generator_ref::<lines::Losses<'static>>),
            ],
        ),
        Output::Dns => lines_of(
            &mut generator,
            "pkttrace dns --json",
            lines::DNS_SCHEMA_VERSION,
            &[
                ("query", generator_ref::<DnsStory>),
                ("losses", generator_ref::<lines::Losses<'static>>),
            ],
        ),
        Output::Diff => {
            let compared = generator.subschema_for::<crate::explain::compare::Compared>();
            json!({
                "title": "pkttrace diff --json",
                "description": "One object: two recordings of the same flow compared.",
                "allOf": [compared.to_value()],
                "properties": {
                    "schema_version": { "const": lines::DIFF_SCHEMA_VERSION },
                    "record": { "const": "diff" },
                },
                "required": ["schema_version", "record"],
            })
        }
        Output::Topology => {
            let report = generator.subschema_for::<crate::enrich::report::Report>();
            json!({
                "title": "pkttrace topology --json",
                "description": "One document: the host's network wiring.",
                "allOf": [report.to_value()],
                "properties": { "schema_version": { "const": topology::SCHEMA_VERSION } },
                "required": ["schema_version"],
            })
        }
    };
    let mut document = json!({ "$schema": "https://json-schema.org/draft/2020-12/schema" });
    let object = document.as_object_mut().expect("an object");
    object.extend(root.as_object().expect("an object").clone());
    let definitions: serde_json::Map<String, Value> =
        generator.take_definitions(true).into_iter().collect();
    object.insert("$defs".into(), Value::Object(definitions));
    serde_json::to_string_pretty(&document).expect("a schema serializes") + "\n"
}

/// The reference to `T`'s schema, its definition kept by the generator.
fn generator_ref<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

type Body = fn(&mut SchemaGenerator) -> Schema;

/// JSON Lines: each line one of `records`, saying its kind in `record` and
/// the schema version.
fn lines_of(
    generator: &mut SchemaGenerator,
    title: &str,
    version: u32,
    records: &[(&str, Body)],
) -> Value {
    let one_of: Vec<Value> = records
        .iter()
        .map(|(record, body)| {
            json!({
                "allOf": [body(generator).to_value()],
                "properties": {
                    "schema_version": { "const": version },
                    "record": { "const": record },
                },
                "required": ["schema_version", "record"],
            })
        })
        .collect();
    json!({
        "title": title,
        "description": "JSON Lines: every line is one of these records.",
        "oneOf": one_of,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUTS: [(Output, &str); 4] = [
        (
            Output::Follow,
            include_str!("../../../docs/schema/follow.json"),
        ),
        (Output::Dns, include_str!("../../../docs/schema/dns.json")),
        (Output::Diff, include_str!("../../../docs/schema/diff.json")),
        (
            Output::Topology,
            include_str!("../../../docs/schema/topology.json"),
        ),
    ];

    /// docs/schema/ holds what `pkttrace schema` prints (write it again with
    /// `pkttrace schema follow > docs/schema/follow.json`, and so on).
    #[test]
    fn the_documented_schemas_are_the_generated_ones() {
        for (output, documented) in OUTPUTS {
            assert_eq!(schema(output), documented, "docs/schema for {output:?}");
        }
    }

    /// Every field, and every value a field takes from a fixed set, that
    /// the schema names is one docs/json.md names in code (`name`).
    #[test]
    fn docs_json_md_names_every_field_and_value_of_the_schemas() {
        let docs = include_str!("../../../docs/json.md");
        let named: std::collections::HashSet<&str> = docs
            .split('`')
            .skip(1)
            .step_by(2)
            .flat_map(|code| code.split(|c: char| !(c.is_alphanumeric() || c == '_')))
            .collect();
        for (output, _) in OUTPUTS {
            let schema: Value = serde_json::from_str(&schema(output)).unwrap();
            let mut words = Vec::new();
            collect_words(&schema, &mut words);
            let missing: Vec<&String> = words
                .iter()
                .filter(|w| !named.contains(w.as_str()))
                .collect();
            assert!(
                missing.is_empty(),
                "docs/json.md does not name {missing:?} ({output:?})"
            );
        }
        for version in [
            lines::SCHEMA_VERSION,
            lines::DNS_SCHEMA_VERSION,
            lines::DIFF_SCHEMA_VERSION,
        ] {
            assert!(docs.contains(&format!("(schema version {version})")));
        }
        assert!(docs.contains(&format!("(schema version {})", topology::SCHEMA_VERSION)));
    }

    /// Property names, and the string constants and enumerations of a schema.
    fn collect_words(schema: &Value, words: &mut Vec<String>) {
        match schema {
            Value::Object(object) => {
                for (key, value) in object {
                    match (key.as_str(), value) {
                        ("properties", Value::Object(properties)) => {
                            words.extend(properties.keys().cloned())
                        }
                        ("const", Value::String(text)) => words.push(text.clone()),
                        ("enum", Value::Array(values)) => words
                            .extend(values.iter().filter_map(|v| v.as_str()).map(str::to_string)),
                        _ => {}
                    }
                    collect_words(value, words);
                }
            }
            Value::Array(values) => values.iter().for_each(|v| collect_words(v, words)),
            _ => {}
        }
    }

    /// Output that breaks the schema is refused by it: it says something.
    #[test]
    fn the_follow_schema_refuses_a_journey_without_its_fields() {
        let schema: Value = serde_json::from_str(&schema(Output::Follow)).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let journey = json!({"schema_version": lines::SCHEMA_VERSION, "record": "journey"});
        assert!(!validator.is_valid(&journey));
        let no_version = json!({"record": "losses", "events_delivered": 1, "events_lost": 0,
            "lost_by_probe": {}, "runs_skipped": {}});
        assert!(!validator.is_valid(&no_version));
        let mut losses = no_version.clone();
        losses["schema_version"] = json!(lines::SCHEMA_VERSION);
        assert!(validator.is_valid(&losses));
    }
}
