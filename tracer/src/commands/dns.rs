//! `pkttrace dns CONTAINER`: every DNS query the container makes, with the
//! answer (or its absence), Docker's embedded DNS at work in the container's
//! namespace, and what dockerd asked upstream. Probes capture DNS packets of
//! that namespace (and to/from its servers) with their payload; journeys are
//! paired into exchanges, explained and printed one entry per query.

use std::{collections::HashMap, io::Write, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::{
    cli::DnsArgs,
    commands::target,
    enrich::{Topology, dns::DnsSetup},
    explain::dns::{DnsContext, explain_dns},
    journey::{
        self,
        dns::{Correlator, DnsExchange, Scope},
    },
    probes::{Filter, monotonic_now_ns, nftrace::TraceMatch},
    render,
    session::live::{self, Live, Plan},
};

const DNS_PORT: u16 = 53;

pub async fn run(args: DnsArgs) -> Result<ExitCode> {
    let loading = live::begin(true, args.kernel.buffer_mb)?;
    let topology = Topology::discover()
        .await
        .context("cannot read this host's network namespaces")?;
    let container = target::resolve_container(&args.container, &topology)?.clone();
    let setup = DnsSetup::read(container.pid).map_err(|e| {
        target::InputError(format!(
            "cannot read the DNS set-up of {}: {e}",
            container.name
        ))
    })?;

    // The container's own servers and the ones dockerd forwards to, so their
    // path through the host is seen too; everything in the namespace anyway.
    let mut servers: Vec<std::net::IpAddr> = setup
        .nameservers
        .iter()
        .filter(|s| !s.is_loopback())
        .copied()
        .chain(container.dns.iter().copied())
        .collect();
    servers.sort_unstable();
    servers.dedup();
    if servers.len() > tracer_common::MAX_WATCHED {
        eprintln!(
            "pkttrace: note: only the first {} DNS servers' paths through the host are traced",
            tracer_common::MAX_WATCHED
        );
        servers.truncate(tracer_common::MAX_WATCHED);
    }
    let mut ports = vec![DNS_PORT];
    ports.extend(setup.embedded.iter().map(|l| l.port));
    ports.sort_unstable();
    ports.dedup();
    ports.truncate(tracer_common::MAX_PORTS);
    // Netfilter is observed in the container's namespace and in those of
    // servers on this machine (a lab's upstream), besides the host's.
    let container_netns = std::path::PathBuf::from(format!("/proc/{}/ns/net", container.pid));
    let traced_namespaces =
        live::traced_namespaces(container.netns, Some(&container_netns), &servers, &topology);
    // The embedded DNS's own address too: its DNAT rule is what is traced there.
    let mut traced_addresses = servers.clone();
    traced_addresses.extend(
        setup
            .uses_embedded_dns()
            .then_some(crate::enrich::dns::EMBEDDED_DNS),
    );
    let vxlan_port = topology.vxlan_port();
    let filter = Filter {
        addresses: servers,
        protocol: None,
        ports,
        netns: Some(container.netns),
        capture_payload: true,
        capture_headers: false,
        vxlan_port,
    };
    let mut live = loading
        .attach(
            topology,
            Plan {
                filter,
                traced_namespaces,
                trace: TraceMatch {
                    addresses: traced_addresses,
                    protocol: None,
                    vxlan_port,
                },
                save_events: args.save_events.as_deref(),
                told: "queries",
                seen_from: None,
            },
        )
        .await?;
    eprintln!(
        "pkttrace: watching DNS of {} ({}); Ctrl-C to stop",
        container.name,
        describe_setup(&setup)
    );
    if let Some(error) = &setup.ruleset_error {
        eprintln!("pkttrace: note: the container's NAT rules are not shown: {error}");
    }

    let mut correlator = Correlator::new(Scope {
        netns: container.netns,
        embedded: setup
            .uses_embedded_dns()
            .then_some(crate::enrich::dns::EMBEDDED_DNS),
        timeout_ns: Duration::from_secs(args.answer_timeout).as_nanos() as u64,
    });
    let mut teller = Teller {
        container: container.name.clone(),
        setup,
        json: args.json,
        told: 0,
    };
    let deadline = args
        .timeout
        .map(|t| Instant::now() + Duration::from_secs(t));
    let done = |teller: &Teller| args.count.is_some_and(|n| teller.told >= n);
    while !done(&teller) {
        let Some(journeys) = live.next().await? else {
            break;
        };
        for journey in journeys {
            correlator.push(journey);
        }
        for exchange in correlator.advance(live.taken_in_up_to_ns()) {
            if !done(&teller) {
                teller.tell(&exchange, &mut live).await?;
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    for journey in live.stop()? {
        correlator.push(journey);
    }
    for exchange in correlator.finish(monotonic_now_ns()) {
        if !done(&teller) {
            teller.tell(&exchange, &mut live).await?;
        }
    }
    live.end(args.json.then_some(render::json::DNS_SCHEMA_VERSION))?;
    if teller.told == 0 {
        eprintln!("pkttrace: saw no DNS query from {}", container.name);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The set-up in a few words for the start line.
fn describe_setup(setup: &DnsSetup) -> String {
    let servers: Vec<String> = setup.nameservers.iter().map(ToString::to_string).collect();
    let mut text = format!("resolv.conf: nameserver {}", servers.join(", "));
    if setup.uses_embedded_dns() {
        let sockets: Vec<String> = setup
            .embedded
            .iter()
            .map(|l| format!("{}/{}", l.port, l.protocol))
            .collect();
        let owner = setup
            .embedded
            .iter()
            .map(|l| format!("{} pid {}", l.owner.process, l.owner.pid))
            .next()
            .unwrap_or_else(|| "owner unknown".into());
        text += &format!(
            "; Docker's embedded DNS on 127.0.0.11 port {} ({owner})",
            sockets.join(", ")
        );
    }
    text
}

/// Tells each DNS exchange as one entry, with the facts read for its journeys.
struct Teller {
    container: String,
    setup: DnsSetup,
    json: bool,
    told: u64,
}

impl Teller {
    async fn tell(&mut self, exchange: &DnsExchange, live: &mut Live) -> Result<()> {
        let (start, end) = exchange.span_ns();
        let events_lost = live.losses().between(
            start.saturating_sub(journey::QUIET_NS),
            end + journey::QUIET_NS,
        );
        let mut facts = HashMap::new();
        for journey in exchange.journeys() {
            let found = live.facts_for(journey, false, events_lost).await;
            facts.insert(journey.id, found);
        }
        let story = explain_dns(
            exchange,
            &DnsContext {
                container: &self.container,
                setup: &self.setup,
                topology: live.topology(),
                facts: &facts,
                events_lost,
            },
        );
        let text = if self.json {
            render::json::dns_query(&story) + "\n"
        } else {
            render::dns::render(&story) + "\n"
        };
        let mut out = anstream::stdout();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        self.told += 1;
        Ok(())
    }
}
