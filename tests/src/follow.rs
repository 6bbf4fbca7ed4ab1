//! Running `pkttrace follow ... --json` and reading what it printed: one
//! JSON record a line (a journey's story, or a request's "no reply"), each
//! with its schema version.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::{RunOutput, pkttrace};

/// The schema version the tests are written against.
pub const SCHEMA_VERSION: u64 = 4;
/// Set to a folder, every `follow_json` run also records what it told
/// there (`--record <folder>/<test name>.jsonl`): how the explanation
/// tests' recordings (tracer/src/session/recordings) are made.
const RECORD_INTO: &str = "PKTTRACE_RECORD_INTO";

/// A finished `pkttrace follow --json` run.
#[derive(Debug)]
pub struct Followed {
    pub run: RunOutput,
    pub records: Vec<Value>,
}

/// A run whose probe got no answer it asked for: exit code 1.
pub fn follow_unanswered(args: &[&str]) -> Result<Followed> {
    let followed = follow_json(args)?;
    ensure!(
        followed.code() == Some(1),
        "exit code 1 when the probe gets no answer: {}",
        followed.run
    );
    Ok(followed)
}

/// Runs `pkttrace follow <args> --json` to its end, whatever its exit code.
pub fn follow_json(args: &[&str]) -> Result<Followed> {
    let mut all: Vec<String> = vec!["follow".into()];
    all.extend(args.iter().map(|arg| arg.to_string()));
    all.push("--json".into());
    let records_itself = args.contains(&"--record");
    if let Some(folder) = std::env::var_os(RECORD_INTO).filter(|_| !records_itself) {
        let test = std::thread::current()
            .name()
            .unwrap_or("follow")
            .rsplit("::")
            .next()
            .unwrap_or("follow")
            .to_owned();
        let path = std::path::Path::new(&folder).join(format!("{test}.jsonl"));
        all.extend(["--record".into(), path.to_string_lossy().into_owned()]);
    }
    Followed::read(pkttrace(&all)?)
}

/// pkttrace's documented switch that takes kernel features as absent.
pub const PRETEND_ABSENT: &str = "PKTTRACE_PRETEND_ABSENT";

/// `follow ARGS --json` as on a kernel without `features` (comma-separated).
pub fn follow_json_lacking(features: &str, args: &[&str]) -> Result<Followed> {
    let mut all = vec!["follow"];
    all.extend(args);
    all.push("--json");
    Followed::read(crate::pkttrace_with_env((PRETEND_ABSENT, features), &all)?)
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
            crate::check_schema("follow", record)?;
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

    /// The IP journeys (ARP and neighbour discovery exchanges, when a
    /// cache was cold, left out).
    pub fn journeys(&self) -> Vec<&Value> {
        self.all_journeys()
            .into_iter()
            .filter(|j| j["tuple"]["protocol"] != "arp" && j["tuple"]["protocol"] != "nd")
            .collect()
    }

    /// The ARP requests and replies told.
    pub fn arp(&self) -> Vec<&Value> {
        self.all_journeys()
            .into_iter()
            .filter(|j| j["tuple"]["protocol"] == "arp")
            .collect()
    }

    /// The neighbour solicitations and advertisements told (IPv6's ARP).
    pub fn neighbour_discovery(&self) -> Vec<&Value> {
        self.all_journeys()
            .into_iter()
            .filter(|j| j["tuple"]["protocol"] == "nd")
            .collect()
    }

    /// The only request of a run (retransmissions and later datagrams of
    /// its flow aside), and its story's last hop.
    pub fn only_request(&self) -> Result<(Value, Value)> {
        let requests: Vec<&Value> = self
            .journeys()
            .into_iter()
            .filter(|j| {
                j["direction"] == "request"
                    && j.get("retransmission_of").is_none()
                    && j.get("same_flow_as").is_none()
            })
            .collect();
        ensure!(requests.len() == 1, "one request: {:#?}", self.records);
        let last = hops(requests[0]).last().context("a hop")?.clone();
        Ok((requests[0].clone(), last))
    }

    /// The reply to `request`.
    pub fn reply_to(&self, request: &Value) -> Result<&Value> {
        self.journeys()
            .into_iter()
            .find(|j| j["reply_to"] == request["journey"])
            .with_context(|| format!("a reply to #{}: {:#?}", request["journey"], self.records))
    }

    /// The no-reply line for `request`.
    pub fn no_reply_to(&self, request: &Value) -> Result<&Value> {
        self.no_replies()
            .into_iter()
            .find(|n| n["request"] == request["journey"])
            .with_context(|| {
                format!(
                    "no reply said for #{}: {:#?}",
                    request["journey"], self.records
                )
            })
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

pub fn ip6(text: &Value) -> std::net::Ipv6Addr {
    text.as_str()
        .expect("an address")
        .parse()
        .expect("an IPv6 address")
}

/// `pkttrace follow <args> --json` with no DOCKER_HOST, so pkttrace finds
/// every Docker engine itself: its exit code and its records.
pub fn follow_engines(args: &[&str]) -> Result<(Option<i32>, Vec<Value>)> {
    let out = std::process::Command::new(crate::pkttrace_bin())
        .env_remove("DOCKER_HOST")
        .arg("follow")
        .args(args)
        .arg("--json")
        .output()?;
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Value>, _>>()
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    Ok((out.status.code(), records))
}
