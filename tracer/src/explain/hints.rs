//! What a drop most likely means and how to check it, decided by the
//! kernel's own (typed) drop reason, where it happened and the route the
//! namespace found, told with the facts read where it happened.

use std::net::IpAddr;

use crate::{
    decode::{CodeSite, DropReason, Hook, RouteResult, SiteRole},
    enrich::{
        Ipv4Settings,
        facts::{RuleAction, RuleVerdict},
    },
};

use super::{RouteChoice, table_name};

/// What is known about a drop when its hint is written.
#[derive(Clone, Debug, PartialEq)]
pub struct DropContext {
    pub reason: DropReason,
    pub location: CodeSite,
    /// The netfilter hook it was dropped in (a netfilter drop).
    pub hook: Option<Hook>,
    /// The rule that decided, from nf_tables tracing.
    pub rule: Option<RuleVerdict>,
    /// The settings of the device the packet came in on, in that namespace.
    pub input: Option<Ipv4Settings>,
    pub source: IpAddr,
    pub rule_tracing_unavailable: Option<String>,
    /// Where the namespace was sending it (gateway, or the destination on-link).
    pub next_hop: Option<IpAddr>,
    /// Who-has sent while the packet waited for its next hop's MAC address.
    pub arp_attempts: u32,
    /// The namespace's last routing decision for it, there.
    pub route: Option<RouteChoice>,
    pub destination: IpAddr,
    /// Its TTL as it arrived.
    pub ttl: u8,
    /// Its length, and the MTU of the device its route sends it through.
    pub length: u16,
    pub out_mtu: Option<u32>,
    /// How to run a command where it was dropped (`ip netns exec NAME `),
    /// empty on the host.
    pub run_in: String,
}

/// The likely cause of a drop and the commands that check it, to be run
/// in the namespace that dropped it.
pub fn for_drop(drop: &DropContext) -> String {
    let hint = cause_and_checks(drop);
    let run_in = drop.run_in.trim_end();
    if run_in.is_empty() || !hint.contains("Check:") {
        return hint;
    }
    format!("{hint} (in the namespace that dropped it: {run_in} …)")
}

fn cause_and_checks(drop: &DropContext) -> String {
    let reason = &drop.reason;
    let at_route_error = drop.location.role == SiteRole::RouteError;
    let forwarding_is_off = drop.input.as_ref().and_then(|i| i.forwards()) == Some(false);
    // IPv6 has no ip_error: ip6_forward itself drops when forwarding is off.
    let refused_onward = at_route_error
        || (drop.location.role == SiteRole::Forwarding
            && drop.input.as_ref().is_some_and(|i| i.ipv6));
    let failed_route = drop.route.as_ref().filter(|route| !route.result.found());
    match reason {
        DropReason::IpInAddrErrors | DropReason::IpInNoRoutes | DropReason::Unreported
            if refused_onward && forwarding_is_off =>
        {
            forwarding_off(drop.input.as_ref().expect("checked above"))
        }
        // ip_error drops what its route said no to (NOT_SPECIFIED for an
        // unreachable, blackhole or prohibit route while forwarding).
        _ if at_route_error && failed_route.is_some() => {
            route_refused(failed_route.expect("checked above"), drop.destination)
        }
        DropReason::IpInAddrErrors | DropReason::IpInNoRoutes | DropReason::IpOutNoRoutes => {
            "the kernel found no usable route for the destination (or may not forward it). \
             Check: ip route get <destination>; sysctl net.ipv4.conf.all.forwarding"
                .into()
        }
        DropReason::IpInHdr if drop.location.role == SiteRole::Forwarding => {
            let (life, ttl) = crate::addr::lifetime_words(drop.destination);
            let icmp = if drop.destination.is_ipv6() { "ICMPv6" } else { "ICMP" };
            format!(
                "its {life} ran out: it arrived with {ttl} {}, and a router does not pass on a packet whose {ttl} would reach 0; \
                 it answers with an {icmp} time exceeded instead. A routing loop, or a sender that set a small {ttl} (traceroute). \
                 Check: ip route get {}",
                drop.ttl, drop.destination
            )
        }
        DropReason::PktTooBig => {
            let mtu = drop
                .out_mtu
                .map(|mtu| format!(" (MTU {mtu})"))
                .unwrap_or_default();
            let device = drop
                .route
                .as_ref()
                .and_then(|route| route.out_device.as_deref())
                .map(|device| format!(" {device}"))
                .unwrap_or_default();
            if drop.destination.is_ipv6() {
                format!(
                    "it is {} bytes, larger than the next link{device}{mtu}: an IPv6 router never splits a packet, \
                     so it drops it and answers with an ICMPv6 packet too big that tells the sender the MTU (path MTU discovery). \
                     Check: ip link show{device}",
                    drop.length
                )
            } else {
                format!(
                    "it is {} bytes with don't fragment set, larger than the next link{device}{mtu}: the kernel may not split it, \
                     so it drops it and answers with an ICMP fragmentation needed that tells the sender the MTU (path MTU discovery). \
                     Check: ip link show{device}",
                    drop.length
                )
            }
        }
        DropReason::IpRpFilter => reverse_path_filter(drop),
        reason if reason.is_netfilter_drop_at(&drop.location) => netfilter(drop),
        reason if reason.is_neighbour_failure_at(&drop.location) && !matches!(
            reason,
            DropReason::NeighQueueFull | DropReason::NeighDead | DropReason::NeighCreateFail
        ) => {
            let asked = match drop.arp_attempts {
                0 => String::new(),
                1 => ", asked once".into(),
                n => format!(", asked {n} times"),
            };
            let (resolution, _) = crate::addr::neighbour_words(drop.destination);
            match drop.next_hop {
                Some(hop) => format!(
                    "the next hop {hop} never answered {resolution}{asked}: the kernel gave up on its MAC address and dropped what waited for it. \
                     Check: ip neigh show {hop} (FAILED); is {hop} up and on this link?"
                ),
                None => format!(
                    "the next hop never answered {resolution}{asked}. Check: ip neigh show; is the gateway up?"
                ),
            }
        }
        DropReason::NeighQueueFull | DropReason::NeighDead | DropReason::NeighCreateFail => {
            "the next hop's MAC address could not be resolved. Check: ip neigh show; is the gateway up?"
                .into()
        }
        DropReason::QueuePurge => "it waited in a socket's queue and was thrown away when the socket was closed: the process never read it (an ICMP error on a socket's error queue, say)".into(),
        DropReason::NoSocket => "nothing listens for it: no socket is bound to that address and port. Check: ss -tulpn".into(),
        DropReason::TcpInvalidSequence | DropReason::TcpOldData => "TCP did not accept the segment's sequence numbers (stale or replayed).".into(),
        DropReason::Unreported => format!(
            "this kernel gives no drop reasons: the code that dropped it, {}, says why (read it in the kernel's source)",
            drop.location.function()
        ),
        _ => format!(
            "the kernel dropped it ({reason} at {}); see include/net/dropreason-core.h for what {reason} means",
            drop.location
        ),
    }
}

/// A route of type unreachable, blackhole or prohibit, or none at all,
/// refused a packet the namespace was to route onward.
fn route_refused(route: &RouteChoice, destination: IpAddr) -> String {
    let table = table_name(route.table);
    match route.result {
        RouteResult::Unreachable => format!(
            "the route it found for {destination} in table {table} is of type unreachable: the kernel drops what it matches and answers ICMP host unreachable. \
             Check: ip route show table {table} | grep unreachable; ip route get {destination}"
        ),
        RouteResult::Blackhole => format!(
            "the route it found for {destination} in table {table} is a blackhole: the kernel drops what it matches without a word to the sender. \
             Check: ip route show table {table} | grep blackhole"
        ),
        RouteResult::Prohibit => format!(
            "the route it found for {destination} in table {table} is of type prohibit: the kernel drops what it matches and answers ICMP communication administratively prohibited. \
             Check: ip route show table {table} | grep prohibit"
        ),
        _ => format!(
            "there is no route to {destination} (table {table} has none, and no default route): the kernel drops it and answers ICMP network unreachable. \
             Check: ip route get {destination}; ip route show table {table}"
        ),
    }
}

fn forwarding_off(input: &Ipv4Settings) -> String {
    let device = &input.device;
    if input.ipv6 {
        let setting = input.forwarding_setting();
        return format!(
            "IPv6 forwarding is off: {setting} = 0 (the only IPv6 forwarding setting the kernel checks), so the packet that came in on {device} is not routed onward. \
             Check: sysctl {setting}; enable: sysctl -w {setting}=1"
        );
    }
    let (setting, all_setting) = (
        input.name(device, "forwarding"),
        input.name("all", "forwarding"),
    );
    // Writing `all` sets every device, but only when its value changes: with
    // it already 1, writing 1 again leaves the device off.
    let (all, every_device) = match input.all_forwarding {
        Some(true) => (
            format!(
                " ({all_setting} is 1, but the kernel checks the device the packet came in on)"
            ),
            String::new(),
        ),
        _ => (
            String::new(),
            format!(" (or {all_setting}=1 for every device)"),
        ),
    };
    format!(
        "forwarding is off on {device}, where it came in: {setting} = 0{all}, so the kernel will not route it onward. \
         Check: sysctl {setting}; enable: sysctl -w {setting}=1{every_device}"
    )
}

fn reverse_path_filter(drop: &DropContext) -> String {
    let source = drop.source;
    match &drop.input {
        Some(input) => {
            let device = &input.device;
            let mode = match input.effective_rp_filter() {
                Some(1) => "strict",
                Some(2) => "loose",
                _ => "on",
            };
            let and_all = relax_all_rp_filter(input.all_rp_filter);
            format!(
                "the reverse path filter dropped it: the kernel would not send a reply to {source} back out of {device}, where it came in \
                 (net.ipv4.conf.{device}.rp_filter = {}, net.ipv4.conf.all.rp_filter = {}; the higher one, {mode}, applies). \
                 Check: ip route get {source}; relax: sysctl -w net.ipv4.conf.{device}.rp_filter=2{and_all}",
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

/// The higher of a device's and `all`'s rp_filter applies: `all` needs
/// relaxing too only when it is strict.
fn relax_all_rp_filter(all: Option<u8>) -> &'static str {
    match all {
        Some(0 | 2) => "",
        Some(_) => " and net.ipv4.conf.all.rp_filter=2",
        None => " (and net.ipv4.conf.all.rp_filter=2 if it is 1)",
    }
}

fn netfilter(drop: &DropContext) -> String {
    // Without a hook seen (no netfilter programs), the base chain the
    // trace went through names it.
    let hook = drop
        .hook
        .map(Hook::name)
        .or_else(|| Some(drop.rule.as_ref()?.through.first()?.as_str()))
        .unwrap_or("its hook");
    match &drop.rule {
        Some(rule) if rule.handle.is_some() => {
            let verb = if rule.action == RuleAction::Reject {
                "rejected it (dropped it and answered the sender)"
            } else {
                "dropped it"
            };
            format!(
                "a rule in {hook} {verb}: {} (nf_tables' own trace of this packet). Check: nft -a list chain {} {}",
                rule_words(rule),
                rule.table,
                rule.chain
            )
        }
        Some(rule) => format!(
            "no rule in {hook} accepted it and the chain's policy dropped it: {} (nf_tables' own trace of this packet). \
             Check: nft list chain {} {}",
            rule_words(rule),
            rule.table,
            rule.chain
        ),
        None => {
            let Some(hook) = drop.hook else {
                return "a netfilter rule or chain policy dropped it. Check: iptables -L -v -n --line-numbers in each table (counters show the rule), or nft -a list ruleset".into();
            };
            let chains = match hook {
                Hook::Forward => {
                    " (Docker puts its own rules in DOCKER-USER and DOCKER-ISOLATION chains here)"
                }
                Hook::Prerouting => {
                    " (raw, mangle or nat table: Docker drops direct access to container addresses in raw PREROUTING)"
                }
                _ => "",
            };
            let unavailable = drop
                .rule_tracing_unavailable
                .as_ref()
                .map(|why| format!(" pkttrace could not trace the rules: {why}."))
                .unwrap_or_default();
            format!(
                "a netfilter rule or chain policy in {hook} dropped it{chains}.{unavailable} \
                 Check: iptables -L {hook} -v -n --line-numbers for each table (counters show the rule), or nft -a list ruleset"
            )
        }
    }
}

/// The rule as the story names it: table, chain, nft's words, and the
/// chains that led there.
fn rule_words(rule: &RuleVerdict) -> String {
    let through = if rule.through.is_empty() {
        String::new()
    } else {
        format!(" (reached through {})", rule.through.join(" → "))
    };
    match rule.handle {
        Some(_) => format!("{} {}: {}{through}", rule.table, rule.chain, rule.text),
        None => format!(
            "{} {}: the chain's policy is drop, no rule accepted it first{through}",
            rule.table, rule.chain
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker0(all_forwarding: bool) -> Ipv4Settings {
        Ipv4Settings {
            device: "docker0".into(),
            forwarding: Some(false),
            all_forwarding: Some(all_forwarding),
            rp_filter: Some(0),
            all_rp_filter: Some(0),
            ipv6: false,
        }
    }

    #[test]
    fn ipv6_forwarding_off_names_only_the_setting_the_kernel_checks() {
        let words = forwarding_off(&Ipv4Settings {
            ipv6: true,
            all_forwarding: Some(false),
            forwarding: Some(true),
            ..docker0(false)
        });
        assert!(
            words.contains("sysctl -w net.ipv6.conf.all.forwarding=1"),
            "{words}"
        );
        assert!(!words.contains("docker0.forwarding"), "{words}");
    }

    #[test]
    fn all_forwarding_is_offered_only_when_writing_it_would_change_it() {
        assert!(
            forwarding_off(&docker0(false))
                .contains("net.ipv4.conf.all.forwarding=1 for every device")
        );
        let all_on = forwarding_off(&docker0(true));
        assert!(all_on.contains("net.ipv4.conf.all.forwarding is 1, but the kernel checks"));
        assert!(!all_on.contains("all.forwarding=1"), "{all_on}");
    }

    #[test]
    fn all_rp_filter_is_relaxed_only_when_it_is_strict() {
        assert_eq!(relax_all_rp_filter(Some(0)), "");
        assert_eq!(relax_all_rp_filter(Some(2)), "");
        assert!(relax_all_rp_filter(Some(1)).contains("all.rp_filter=2"));
    }
}
