//! What a drop most likely means and how to check it, keyed by the kernel's
//! own drop reason name and told with the facts read where it happened.

use std::net::Ipv4Addr;

use crate::enrich::Ipv4Settings;

use super::RuleVerdict;

/// What is known about a drop when its hint is written.
pub struct DropContext<'a> {
    pub reason: &'a str,
    pub location: &'a str,
    /// The netfilter hook it was dropped in (a netfilter drop).
    pub hook: Option<&'static str>,
    /// The rule that decided, from nf_tables tracing.
    pub rule: Option<&'a RuleVerdict>,
    /// The settings of the device the packet came in on, in that namespace.
    pub input: Option<&'a Ipv4Settings>,
    pub source: Ipv4Addr,
    pub rule_tracing_unavailable: Option<&'a str>,
    /// Where the namespace was sending it (gateway, or the destination on-link).
    pub next_hop: Option<Ipv4Addr>,
    /// Who-has sent while the packet waited for its next hop's MAC address.
    pub arp_attempts: u32,
}

pub fn for_drop(drop: &DropContext<'_>) -> String {
    let reason = drop.reason;
    match reason {
        "IP_INADDRERRORS" | "IP_INNOROUTES"
            if drop.location.starts_with("ip_error")
                && drop.input.and_then(|i| i.forwarding) == Some(false) =>
        {
            forwarding_off(drop.input.expect("checked above"))
        }
        "IP_INADDRERRORS" | "IP_INNOROUTES" | "IP_OUTNOROUTES" => {
            "the kernel found no usable route for the destination (or may not forward it). \
             Check: ip route get <destination>; sysctl net.ipv4.conf.all.forwarding"
                .into()
        }
        "IP_RPFILTER" => reverse_path_filter(drop),
        "NETFILTER_DROP" => netfilter(drop),
        "NEIGH_FAILED" => {
            let asked = match drop.arp_attempts {
                0 => String::new(),
                1 => ", asked once".into(),
                n => format!(", asked {n} times"),
            };
            match drop.next_hop {
                Some(hop) => format!(
                    "the next hop {hop} never answered ARP{asked}: the kernel gave up on its MAC address and dropped what waited for it. \
                     Check: ip neigh show {hop} (FAILED); is {hop} up and on this link?"
                ),
                None => format!(
                    "the next hop never answered ARP{asked}. Check: ip neigh show; is the gateway up?"
                ),
            }
        }
        "NEIGH_QUEUEFULL" | "NEIGH_DEAD" | "NEIGH_CREATEFAIL" => {
            "the next hop's MAC address could not be resolved. Check: ip neigh show; is the gateway up?"
                .into()
        }
        "QUEUE_PURGE" => "it waited in a socket's queue and was thrown away when the socket was closed: the process never read it (an ICMP error on a socket's error queue, say)".into(),
        "NO_SOCKET" => "nothing listens for it: no socket is bound to that address and port. Check: ss -tulpn in that namespace".into(),
        "TCP_INVALID_SEQUENCE" | "TCP_OLD_DATA" => "TCP did not accept the segment's sequence numbers (stale or replayed).".into(),
        _ => format!(
            "the kernel dropped it ({reason} at {}); see include/net/dropreason-core.h for what {reason} means",
            drop.location
        ),
    }
}

fn forwarding_off(input: &Ipv4Settings) -> String {
    let device = &input.device;
    let all = match input.all_forwarding {
        Some(true) => {
            " (net.ipv4.conf.all.forwarding is 1, but the kernel checks the device the packet came in on)"
        }
        _ => "",
    };
    format!(
        "forwarding is off on {device}, where it came in: net.ipv4.conf.{device}.forwarding = 0{all}, so the kernel will not route it onward. \
         Check: sysctl net.ipv4.conf.{device}.forwarding; enable: sysctl -w net.ipv4.conf.{device}.forwarding=1 \
         (or net.ipv4.conf.all.forwarding=1 for every device)"
    )
}

fn reverse_path_filter(drop: &DropContext<'_>) -> String {
    let source = drop.source;
    match drop.input {
        Some(input) => {
            let device = &input.device;
            let mode = match input.effective_rp_filter() {
                Some(1) => "strict",
                Some(2) => "loose",
                _ => "on",
            };
            format!(
                "the reverse path filter dropped it: the kernel would not send a reply to {source} back out of {device}, where it came in \
                 (net.ipv4.conf.{device}.rp_filter = {}, net.ipv4.conf.all.rp_filter = {}; the higher one, {mode}, applies). \
                 Check: ip route get {source}; relax: sysctl -w net.ipv4.conf.{device}.rp_filter=2 (and all.rp_filter)",
                input.rp_filter.map_or("?".into(), |v| v.to_string()),
                input.all_rp_filter.map_or("?".into(), |v| v.to_string()),
            )
        }
        None => format!(
            "the reverse path filter dropped it: the route back to {source} does not leave by the device it came in on. \
             Check: ip route get {source}; sysctl net.ipv4.conf.all.rp_filter"
        ),
    }
}

fn netfilter(drop: &DropContext<'_>) -> String {
    let hook = drop.hook.unwrap_or("its hook");
    match drop.rule {
        Some(rule) if rule.handle.is_some() => {
            let verb = if rule.action == "reject" {
                "rejected it (dropped it and answered the sender)"
            } else {
                "dropped it"
            };
            format!(
                "a rule in {hook} {verb}: {} (nf_tables' own trace of this packet). Check: nft -a list chain {} {}",
                rule.describe(),
                rule.table,
                rule.chain
            )
        }
        Some(rule) => format!(
            "no rule in {hook} accepted it and the chain's policy dropped it: {} (nf_tables' own trace of this packet). \
             Check: nft list chain {} {}",
            rule.describe(),
            rule.table,
            rule.chain
        ),
        None => {
            let Some(hook) = drop.hook else {
                return "a netfilter rule or chain policy dropped it. Check: iptables -L -v -n --line-numbers in each table (counters show the rule), or nft -a list ruleset".into();
            };
            let chains = match hook {
                "FORWARD" => {
                    " (Docker puts its own rules in DOCKER-USER and DOCKER-ISOLATION chains here)"
                }
                "PREROUTING" => {
                    " (raw, mangle or nat table: Docker drops direct access to container addresses in raw PREROUTING)"
                }
                _ => "",
            };
            let unavailable = drop
                .rule_tracing_unavailable
                .map(|why| format!(" pkttrace could not trace the rules: {why}."))
                .unwrap_or_default();
            format!(
                "a netfilter rule or chain policy in {hook} dropped it{chains}.{unavailable} \
                 Check: iptables -L {hook} -v -n --line-numbers for each table (counters show the rule), or nft -a list ruleset"
            )
        }
    }
}
