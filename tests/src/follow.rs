//! Running `pkttrace follow ... --json` and reading what it printed: one
//! JSON record a line (a journey's story, or a request's "no reply"), each
//! with its schema version.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::{RunOutput, pkttrace};

/// The schema version the tests are written against.
pub const SCHEMA_VERSION: u64 = 2;

/// A finished `pkttrace follow --json` run.
#[derive(Debug)]
pub struct Followed {
    pub run: RunOutput,
    pub records: Vec<Value>,
}

/// Runs `pkttrace follow <args> --json` to its end, whatever its exit code.
pub fn follow_json(args: &[&str]) -> Result<Followed> {
    let mut all = vec!["follow"];
    all.extend_from_slice(args);
    all.push("--json");
    Followed::read(pkttrace(&all)?)
}

impl Followed {
    /// Reads what a finished `pkttrace follow --json` run printed.
    pub fn read(run: RunOutput) -> Result<Self> {
        ensure!(!run.timed_out, "pkttrace did not finish: {run}");
        let records = run
            .stdout
            .lines()
            .map(|line| {
                serde_json::from_str::<Value>(line).with_context(|| format!("not JSON: {line}"))
            })
            .collect::<Result<Vec<_>>>()?;
        for record in &records {
            ensure!(
                record["schema_version"] == SCHEMA_VERSION,
                "every line says its schema version: {record}"
            );
        }
        Ok(Followed { run, records })
    }

    pub fn code(&self) -> Option<i32> {
        self.run.status.code()
    }

    /// Every journey told, ARP included.
    pub fn all_journeys(&self) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["record"] == "journey")
            .collect()
    }

    /// The IP journeys (ARP exchanges, when a cache was cold, left out).
    pub fn journeys(&self) -> Vec<&Value> {
        self.all_journeys()
            .into_iter()
            .filter(|j| j["tuple"]["protocol"] != "arp")
            .collect()
    }

    /// The ARP requests and replies told.
    pub fn arp(&self) -> Vec<&Value> {
        self.all_journeys()
            .into_iter()
            .filter(|j| j["tuple"]["protocol"] == "arp")
            .collect()
    }

    /// The requests that got no reply.
    pub fn no_replies(&self) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["record"] == "no_reply")
            .collect()
    }
}

pub fn hops(journey: &Value) -> &Vec<Value> {
    journey["hops"].as_array().expect("hops is an array")
}

pub fn kinds(journey: &Value) -> Vec<&str> {
    hops(journey)
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect()
}

pub fn hop<'a>(journey: &'a Value, kind: &str) -> &'a Value {
    hops(journey)
        .iter()
        .find(|h| h["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} hop in {journey:#}"))
}

pub fn netfilter_hooks(journey: &Value) -> Vec<&str> {
    hops(journey)
        .iter()
        .filter(|h| h["kind"] == "netfilter")
        .map(|h| h["hook"].as_str().unwrap())
        .collect()
}

pub fn ip(text: &Value) -> Ipv4Addr {
    text.as_str()
        .expect("an address")
        .parse()
        .expect("an IPv4 address")
}
