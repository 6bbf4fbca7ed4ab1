//! The host's netfilter ruleset as the kernel holds it, read with `nft`.
//!
//! The JSON listing gives the structure: chains, where the kernel calls
//! them, each rule's matches, action and counter. Rules that iptables-nft
//! made carry "xt" targets whose arguments (DNAT's destination, say) the
//! JSON leaves out, so each rule's wording comes from nft's text listing,
//! joined by rule handle. Nothing here knows Docker's chain names: they
//! differ between releases.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

use super::{Chain, ChainHook, Rule, RuleMatch, Ruleset};

/// Reads the ruleset, or says in one line why it could not.
pub(super) fn read() -> Result<Ruleset, String> {
    read_with(&[])
}

/// Reads the ruleset of the network namespace at `netns` (an nsfs path):
/// nft runs under `nsenter`, as rulesets belong to namespaces.
pub(super) fn read_in(netns: &Path) -> Result<Ruleset, String> {
    read_with(&["nsenter", &format!("--net={}", netns.display())])
}

/// The hooks (`prerouting`, `input`, ...) at which the namespace at `netns`
/// (None: the host) has base chains, for IPv4 (`ip` and `inet` tables) and
/// for IPv6 (`ip6` and `inet`), leaving out tables named `skip_tables*`
/// (pkttrace's own trace tables).
pub(super) fn hooks_with_chains(
    netns: Option<&Path>,
    skip_tables: &str,
) -> Result<(Vec<String>, Vec<String>), String> {
    let prefix_arg = netns.map(|p| format!("--net={}", p.display()));
    let prefix: Vec<&str> = match &prefix_arg {
        Some(arg) => vec!["nsenter", arg.as_str()],
        None => Vec::new(),
    };
    let json = nft(&prefix, &["-j", "list", "chains"])?;
    let listing: Listing =
        serde_json::from_str(&json).map_err(|e| format!("cannot read nft's chain listing: {e}"))?;
    let chains: Vec<_> = listing
        .nftables
        .into_iter()
        .filter_map(|item| item.chain)
        .filter(|c| !c.table.starts_with(skip_tables))
        .collect();
    let of_family = |families: [&str; 2]| {
        let mut hooks: Vec<String> = chains
            .iter()
            .filter(|c| families.contains(&c.family.as_str()))
            .filter_map(|c| c.hook.clone())
            .collect();
        hooks.sort();
        hooks.dedup();
        hooks
    };
    Ok((of_family(["ip", "inet"]), of_family(["ip6", "inet"])))
}

fn read_with(prefix: &[&str]) -> Result<Ruleset, String> {
    let json = nft(prefix, &["-j", "list", "ruleset"])?;
    // Only wording: a failure here still leaves the structure.
    let text = nft(prefix, &["-a", "list", "ruleset"]).unwrap_or_default();
    parse(&json, &text).map_err(|e| format!("cannot read nft's ruleset listing: {e:#}"))
}

/// Runs nft with `args`, after the `prefix` command (nsenter) when given.
fn nft(prefix: &[&str], args: &[&str]) -> Result<String, String> {
    let mut command = match prefix.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg("nft");
            command
        }
        None => Command::new("nft"),
    };
    let out = command.args(args).output().map_err(|e| {
        format!("cannot run nft ({e}); the nftables package has it: apt-get install nftables")
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("nft {} failed: {}", args.join(" "), stderr.trim()));
    }
    String::from_utf8(out.stdout).map_err(|_| "nft printed something that is not UTF-8".to_string())
}

#[derive(Deserialize)]
struct Listing {
    nftables: Vec<Item>,
}

/// One entry of the listing; tables, sets, maps and the like are skipped.
#[derive(Deserialize)]
struct Item {
    chain: Option<JsonChain>,
    rule: Option<JsonRule>,
}

#[derive(Deserialize)]
struct JsonChain {
    family: String,
    table: String,
    name: String,
    hook: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    prio: Option<i64>,
    policy: Option<String>,
}

#[derive(Deserialize)]
struct JsonRule {
    family: String,
    table: String,
    chain: String,
    handle: u64,
    expr: Vec<Value>,
}

/// Parses `nft -j list ruleset` output, with the wording of each rule taken
/// from `nft -a list ruleset` output where it has the rule's handle.
pub(super) fn parse(json: &str, text: &str) -> anyhow::Result<Ruleset> {
    let listing: Listing = serde_json::from_str(json).context("not nft's JSON")?;
    let wording = rule_texts(text);
    let mut chains: Vec<Chain> = Vec::new();
    let mut rules: Vec<(JsonRule, Rule)> = Vec::new();
    for item in listing.nftables {
        if let Some(c) = item.chain {
            let hook = c.hook.map(|hook| ChainHook {
                hook,
                kind: c.kind.unwrap_or_default(),
                priority: c.prio.unwrap_or_default(),
                policy: c.policy,
            });
            chains.push(Chain {
                family: c.family,
                table: c.table,
                name: c.name,
                hook,
                entered_from: Vec::new(),
                rules: Vec::new(),
            });
        }
        if let Some(r) = item.rule {
            let key = (r.family.clone(), r.table.clone(), r.chain.clone(), r.handle);
            let rule = rule(&r, wording.get(&key).cloned());
            rules.push((r, rule));
        }
    }
    for (at, rule) in rules {
        let same_table = |c: &&mut Chain| c.family == at.family && c.table == at.table;
        if let Some(target) = rule.action.as_deref().and_then(jump_target)
            && let Some(callee) = chains
                .iter_mut()
                .filter(same_table)
                .find(|c| c.name == target)
            && !callee.entered_from.contains(&at.chain)
        {
            callee.entered_from.push(at.chain.clone());
        }
        if let Some(chain) = chains
            .iter_mut()
            .filter(same_table)
            .find(|c| c.name == at.chain)
        {
            chain.rules.push(rule);
        }
    }
    Ok(Ruleset { chains })
}

fn jump_target(action: &str) -> Option<&str> {
    action
        .strip_prefix("jump ")
        .or_else(|| action.strip_prefix("goto "))
}

fn rule(json: &JsonRule, text: Option<String>) -> Rule {
    let mut matches = Vec::new();
    let mut action = None;
    let mut packets = None;
    for expr in &json.expr {
        let Some((key, body)) = expr.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        match key.as_str() {
            "match" => matches.push(RuleMatch {
                field: operand(&body["left"]),
                op: body["op"].as_str().unwrap_or("==").to_string(),
                value: operand(&body["right"]),
            }),
            "counter" => packets = body["packets"].as_u64(),
            "accept" | "drop" | "return" | "continue" | "reject" | "masquerade" | "snat"
            | "dnat" | "redirect" => action = Some(key.clone()),
            "jump" | "goto" => {
                action = Some(format!("{key} {}", body["target"].as_str().unwrap_or("?")));
            }
            // An iptables target kept as is: the name is all the JSON says.
            "xt" if body["type"] == "target" => {
                action = body["name"].as_str().map(str::to_lowercase);
            }
            _ => {}
        }
    }
    let text = text.unwrap_or_else(|| describe(&matches, action.as_deref()));
    Rule {
        handle: json.handle,
        text,
        matches,
        action,
        packets,
    }
}

/// Wording for a rule the text listing lacked (it changed in between).
fn describe(matches: &[RuleMatch], action: Option<&str>) -> String {
    let mut words: Vec<String> = matches
        .iter()
        .map(|m| match m.op.as_str() {
            "==" | "in" => format!("{} {}", m.field, m.value),
            op => format!("{} {op} {}", m.field, m.value),
        })
        .collect();
    words.extend(action.map(str::to_string));
    words.join(" ")
}

/// nft's JSON operand as nft writes it in text: `iifname`, `tcp dport`,
/// `172.17.0.0/16`, `{ a, b }`.
fn operand(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(meta) = o.get("meta") {
                return meta["key"].as_str().unwrap_or("meta").to_string();
            }
            if let Some(p) = o.get("payload") {
                let (proto, field) = (p["protocol"].as_str(), p["field"].as_str());
                return format!("{} {}", proto.unwrap_or("payload"), field.unwrap_or("?"));
            }
            if let Some(ct) = o.get("ct") {
                return format!("ct {}", ct["key"].as_str().unwrap_or("?"));
            }
            if let Some(prefix) = o.get("prefix") {
                return format!("{}/{}", operand(&prefix["addr"]), operand(&prefix["len"]));
            }
            if let Some(range) = o.get("range").and_then(Value::as_array) {
                let ends: Vec<String> = range.iter().map(operand).collect();
                return ends.join("-");
            }
            if let Some(set) = o.get("set").and_then(Value::as_array) {
                let items: Vec<String> = set.iter().map(operand).collect();
                return format!("{{ {} }}", items.join(", "));
            }
            value.to_string()
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(operand).collect();
            format!("{{ {} }}", items.join(", "))
        }
        other => other.to_string(),
    }
}

type RuleKey = (String, String, String, u64);

/// Each rule's line of `nft -a list ruleset`, without its counter and
/// handle comment, keyed by family, table, chain and handle.
fn rule_texts(listing: &str) -> HashMap<RuleKey, String> {
    let mut texts = HashMap::new();
    let mut table: Option<(String, String)> = None;
    let mut chain: Option<String> = None;
    for line in listing.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["table", family, name, ..] => {
                table = Some((family.to_string(), unquote(name)));
                chain = None;
            }
            ["chain", name, ..] => chain = Some(unquote(name)),
            _ => {
                let (Some((family, table)), Some(chain)) = (&table, &chain) else {
                    continue;
                };
                let Some((rule, handle)) = line.rsplit_once(" # handle ") else {
                    continue;
                };
                let Ok(handle) = handle.trim().parse() else {
                    continue;
                };
                let key = (family.clone(), table.clone(), chain.clone(), handle);
                texts.insert(key, without_counter(rule));
            }
        }
    }
    texts
}

fn unquote(name: &str) -> String {
    name.trim_matches('"').to_string()
}

/// Drops `counter packets N bytes M`: the counter is reported on its own.
fn without_counter(rule: &str) -> String {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let mut kept = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if words[i] == "counter"
            && words.get(i + 1) == Some(&"packets")
            && words.get(i + 3) == Some(&"bytes")
        {
            i += 5;
        } else {
            kept.push(words[i]);
            i += 1;
        }
    }
    kept.join(" ")
}

impl Ruleset {
    /// The rule with `handle` in chain `chain` of table `family table`.
    /// The rule with `handle` and its place in its chain, from 1.
    pub fn rule_placed(
        &self,
        family: &str,
        table: &str,
        chain: &str,
        handle: u64,
    ) -> Option<(u32, &Rule)> {
        let rules = &self
            .chains
            .iter()
            .find(|c| c.family == family && c.table == table && c.name == chain)?
            .rules;
        let at = rules.iter().position(|r| r.handle == handle)?;
        Some((at as u32 + 1, &rules[at]))
    }

    /// The rules that name `interface` (as iifname/oifname, also through a
    /// `br-*` style wildcard) or an IPv4 address inside one of `subnets`,
    /// with the chain each is in.
    pub fn rules_touching(
        &self,
        interface: &str,
        subnets: &[(IpAddr, u8)],
    ) -> Vec<(&Chain, &Rule)> {
        self.chains
            .iter()
            .flat_map(|c| c.rules.iter().map(move |r| (c, r)))
            .filter(|(_, r)| r.names_interface(interface) || r.names_address_in(subnets))
            .collect()
    }

    /// DNAT rules for traffic to `port` of `protocol` ("tcp", "udp").
    pub fn dnat_rules_for(&self, protocol: &str, port: u16) -> Vec<(&Chain, &Rule)> {
        self.nat_rules("dnat", protocol, "dport", port).collect()
    }

    /// The rule that rewrites `protocol`'s `field` ("dport" or "sport")
    /// `from` to port `to` (DNAT for a destination, SNAT for a source), as
    /// `family table chain: rule`.
    pub fn nat_rule_moving(
        &self,
        protocol: &str,
        field: &str,
        from: u16,
        to: u16,
    ) -> Option<String> {
        let action = if field == "dport" { "dnat" } else { "snat" };
        self.nat_rules(action, protocol, field, from)
            .find(|(_, r)| r.text.ends_with(&format!(":{to}")))
            .map(|(c, r)| c.describe(r))
    }

    /// The `action` rules matching `protocol`'s `field` == `port`.
    fn nat_rules<'a>(
        &'a self,
        action: &'a str,
        protocol: &str,
        field: &str,
        port: u16,
    ) -> impl Iterator<Item = (&'a Chain, &'a Rule)> {
        let field = format!("{protocol} {field}");
        let port = port.to_string();
        self.chains
            .iter()
            .flat_map(|c| c.rules.iter().map(move |r| (c, r)))
            .filter(move |(_, r)| {
                r.action.as_deref() == Some(action)
                    && r.matches
                        .iter()
                        .any(|m| m.field == field && m.op == "==" && m.value == port)
            })
    }
}

impl Chain {
    /// `rule` named with where it is: `ip filter DOCKER-USER: ... drop`.
    pub fn describe(&self, rule: &Rule) -> String {
        format!(
            "{} {} {}: {}",
            self.family, self.table, self.name, rule.text
        )
    }
}

impl Rule {
    fn names_interface(&self, interface: &str) -> bool {
        self.matches.iter().any(|m| {
            matches!(m.field.as_str(), "iifname" | "oifname")
                && match m.value.strip_suffix('*') {
                    Some(prefix) => interface.starts_with(prefix),
                    None => m.value == interface,
                }
        })
    }

    fn names_address_in(&self, subnets: &[(IpAddr, u8)]) -> bool {
        self.matches
            .iter()
            .filter(|m| matches!(m.field.as_str(), "ip saddr" | "ip daddr"))
            .filter_map(|m| parse_prefix(&m.value))
            .any(|(addr, len)| {
                subnets
                    .iter()
                    .any(|&net| len >= net.1 && in_subnet(addr, net))
            })
    }
}

fn parse_prefix(value: &str) -> Option<(IpAddr, u8)> {
    match value.split_once('/') {
        Some((addr, len)) => Some((addr.parse().ok()?, len.parse().ok().filter(|l| *l <= 32)?)),
        None => Some((value.parse().ok()?, 32)),
    }
}

pub(super) use crate::addr::in_subnet;
