//! What a drop most likely means and how to check it, keyed by the kernel's
//! own drop reason name.

use super::Facts;

pub fn for_drop(reason: &str, location: &str, last_hook: Option<&str>, facts: &Facts) -> String {
    match reason {
        "IP_INADDRERRORS" | "IP_INNOROUTES" if location.starts_with("ip_error") && facts.host_ip_forward == Some(false) => {
            "forwarding is disabled on the host: net.ipv4.conf.all.forwarding = 0, so the kernel will not route \
             packets from one interface to another. Check: sysctl net.ipv4.conf.all.forwarding; \
             enable: sysctl -w net.ipv4.conf.all.forwarding=1"
                .into()
        }
        "IP_INADDRERRORS" | "IP_INNOROUTES" | "IP_OUTNOROUTES" => {
            "the kernel found no usable route for the destination (or may not forward it). \
             Check: ip route get <destination>; sysctl net.ipv4.conf.all.forwarding"
                .into()
        }
        "NETFILTER_DROP" if !facts.dropping_rules.is_empty() => {
            let hook = last_hook.unwrap_or("a netfilter hook");
            format!(
                "netfilter dropped it in {hook}: {} (its packet counter went up while the packet was traced). \
                 Check: nft -a list ruleset, or iptables -L -v -n --line-numbers",
                facts.dropping_rules.join("; ")
            )
        }
        "NETFILTER_DROP" => {
            let hook = last_hook.unwrap_or("a netfilter hook");
            let chains = match hook {
                "FORWARD" => " (Docker puts its own rules in DOCKER-USER and DOCKER-ISOLATION chains here)",
                _ => "",
            };
            format!(
                "a netfilter rule or chain policy in {hook} dropped it{chains}. \
                 Check: iptables -L {hook} -v -n --line-numbers (counters show the rule), or nft list ruleset"
            )
        }
        "NEIGH_FAILED" | "NEIGH_QUEUEFULL" | "NEIGH_DEAD" | "NEIGH_CREATEFAIL" => {
            "the next hop's MAC address could not be resolved (ARP failed). Check: ip neigh show; is the gateway up?"
                .into()
        }
        "NO_SOCKET" => "nothing listens for it: no socket is bound to that address and port. Check: ss -tulpn in that namespace".into(),
        "TCP_INVALID_SEQUENCE" | "TCP_OLD_DATA" => "TCP did not accept the segment's sequence numbers (stale or replayed).".into(),
        _ => format!("the kernel dropped it ({reason} at {location}); see include/net/dropreason-core.h for what {reason} means"),
    }
}
