//! Exact nf_tables verdicts through the kernel's own rule tracing, the
//! mechanism behind `nft monitor trace`: a table of pkttrace's own marks the
//! matching packets (`meta nftrace set 1`) before anything else in PREROUTING
//! and OUTPUT, and the kernel then reports over netlink every nf_tables chain
//! such a packet passes, with the rule that decided. It never changes a verdict.
//!
//! The table belongs to the netlink socket that created it (NFT_TABLE_F_OWNER):
//! the kernel deletes it when the socket closes, also when pkttrace is killed.
//!
//! A namespace without nf_tables tables has no rule to name, and marking
//! chains there would cost every packet through it (an unrelated flood lost
//! ~5% of its rate to them): pkttrace installs its table there only once
//! the ruleset change notifications say another table appeared.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result, bail};
use futures::future::select_all;
use netlink_packet_core_09::{
    DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterProtoFamily,
    nftables::{
        ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions, Hook,
        Immediate, InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator,
        Payload, Register, RuleAttribute, RuleMessage, TableAttribute, TableFlags, TableMessage,
    },
    none::ControlMessage,
};
use netlink_sys::{Socket, SocketAddr};
use tokio::io::unix::AsyncFd;

use super::monotonic_now_ns;
use super::rulesets::{
    TABLE_PREFIX, each_datagram, netlink_messages, open_socket, read_answers, ruleset_appeared,
    to_bytes, watch_for_ruleset, watched,
};
use super::{in_namespace_or_here, namespace_place};

/// Before raw (-300), conntrack (-200) and NAT: the mark is set before any
/// other chain sees the packet.
const CHAIN_PRIORITY: i32 = -301;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_TRACE: u16 = 17;
const NFNLGRP_NFTRACE: u32 = 9;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NF_ACCEPT: u32 = 1;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// `meta nfproto` of the two families an `inet` table sees.
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
/// Offsets in the IPv6 header.
const IP6_SADDR: u32 = 8;
const IP6_DADDR: u32 = 24;
/// Offsets in the IPv4 header.
const IP_PROTOCOL: u32 = 9;
const IP_SADDR: u32 = 12;
const IP_DADDR: u32 = 16;
/// The kernel doubles it; 16 MiB held 13,107 trace messages here.
const RECEIVE_BUFFER: libc::c_int = 8 << 20;
/// Keeps the transaction (up to 12 rules an address) within the socket's send buffer.
const MAX_ADDRESSES: usize = 64;

/// Which packets the kernel is asked to trace.
#[derive(Clone, Debug, Default)]
pub struct TraceMatch {
    /// A packet is traced when its source or destination is one of these.
    /// (IPv6 ones are not traced yet: the table is an `ip` table.)
    pub addresses: Vec<IpAddr>,
    /// Only this IP protocol (ICMP errors about the flow are traced too).
    pub protocol: Option<u8>,
    /// UDP port of the VXLAN tunnels: their datagrams are traced when the
    /// packet they carry has one of the addresses.
    pub vxlan_port: Option<u16>,
}

/// One NFT_MSG_TRACE message, undecoded (see `decode::nftrace`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRuleTrace {
    /// Inode of the network namespace the trace comes from.
    pub netns: u32,
    /// CLOCK_MONOTONIC when pkttrace read it (the kernel sends no timestamp).
    pub received_ns: u64,
    /// The traced chain's family (NFPROTO_*: 2 ip, 1 inet, 10 ip6, ...).
    pub family: u8,
    /// The message's attributes (enum nft_trace_attributes), as sent.
    pub attributes: Vec<u8>,
}

/// One namespace's netlink socket: it owns the trace table there and
/// receives that namespace's trace messages.
struct Session {
    socket: AsyncFd<Socket>,
    netns: u32,
    /// While the namespace has no table but pkttrace's: a socket told of
    /// every ruleset change there, to install the trace table when one appears.
    watcher: Option<AsyncFd<Socket>>,
}

/// Rule tracing in a set of network namespaces; dropping it closes the
/// sockets, and with them the kernel deletes the trace tables.
pub struct RuleTracer {
    table: String,
    matching: TraceMatch,
    sessions: Vec<Session>,
    /// Why a namespace's trace table could not be installed after the start.
    failures: Vec<String>,
}

/// Tracers of one process need tables of their own: a table belongs to one socket.
static TRACERS_STARTED: AtomicU32 = AtomicU32::new(0);

impl RuleTracer {
    /// Starts tracing in the host's namespace and in `namespaces` (nsfs
    /// paths), or says why it cannot (then drops are told without their rule).
    pub fn start_in_host_and(
        matching: &TraceMatch,
        namespaces: &[PathBuf],
    ) -> std::result::Result<RuleTracer, String> {
        let all: Vec<Option<PathBuf>> = std::iter::once(None)
            .chain(namespaces.iter().cloned().map(Some))
            .collect();
        Self::start(matching, &all).map_err(|error| format!("{error:#}"))
    }

    /// Installs the trace table in each of `namespaces` (None: the calling
    /// thread's; Some: an nsfs path such as /proc/PID/ns/net) and starts
    /// listening for traces. Call it inside a tokio runtime.
    pub fn start(matching: &TraceMatch, namespaces: &[Option<PathBuf>]) -> Result<RuleTracer> {
        if matching.addresses.is_empty() {
            bail!("rule tracing needs at least one address to match");
        }
        if matching.addresses.len() > MAX_ADDRESSES {
            bail!("rule tracing can match at most {MAX_ADDRESSES} addresses");
        }
        if namespaces.is_empty() {
            bail!("rule tracing needs at least one network namespace");
        }
        let table = format!(
            "{TABLE_PREFIX}{}_{}",
            std::process::id(),
            TRACERS_STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let mut sessions = Vec::new();
        for namespace in namespaces {
            // A netlink socket stays in the namespace it was created in.
            let (socket, netns, watcher) = in_namespace_or_here(namespace.as_deref(), || {
                open_session(&table, matching, &namespace_place(namespace.as_deref()))
            })?;
            sessions.push(Session {
                socket: watched(socket)?,
                netns,
                watcher: watcher.map(watched).transpose()?,
            });
        }
        Ok(RuleTracer {
            table,
            matching: matching.clone(),
            sessions,
            failures: Vec::new(),
        })
    }

    /// Why trace tables could not be installed in namespaces that gained a
    /// table during the trace (their drops are told without their rule);
    /// each reason is given once.
    pub fn take_failures(&mut self) -> Vec<String> {
        std::mem::take(&mut self.failures)
    }

    /// The name of pkttrace's own table: its traces show where the marking
    /// happened, not a decision of the ruleset.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Waits until trace messages arrive in any namespace, then returns all
    /// that can be read without waiting.
    pub async fn next_traces(&mut self) -> Result<Vec<RawRuleTrace>> {
        loop {
            let waits = self
                .sessions
                .iter()
                .flat_map(|session| std::iter::once(&session.socket).chain(&session.watcher))
                .map(|socket| Box::pin(socket.readable()));
            let (ready, ..) = select_all(waits).await;
            // Cleared before reading: a message arriving after the clear
            // wakes the next wait. Other sockets' stale readiness only costs
            // an empty round.
            ready
                .context("cannot wait for nf_tables trace messages")?
                .clear_ready();
            self.install_where_tables_appeared();
            let traces = self.drain()?;
            if !traces.is_empty() {
                return Ok(traces);
            }
        }
    }

    /// Installs the trace table in each watched namespace where the change
    /// notifications tell of a new table that is not pkttrace's.
    fn install_where_tables_appeared(&mut self) {
        for session in &mut self.sessions {
            let Some(watcher) = &session.watcher else {
                continue;
            };
            let appeared = match ruleset_appeared(watcher.get_ref()) {
                Ok(appeared) => appeared,
                Err(error) => {
                    self.failures.push(format!(
                        "cannot read nf_tables changes in network namespace {}: {error}",
                        session.netns
                    ));
                    session.watcher = None;
                    continue;
                }
            };
            if !appeared {
                continue;
            }
            session.watcher = None;
            if let Err(error) = install(session.socket.get_ref(), &self.table, &self.matching) {
                self.failures.push(format!(
                    "nf_tables refused pkttrace's trace table in network namespace {}: {error:#}",
                    session.netns
                ));
            }
        }
    }

    /// The trace messages that can be read now, without waiting.
    pub fn drain(&mut self) -> Result<Vec<RawRuleTrace>> {
        let mut traces = Vec::new();
        for session in &self.sessions {
            // Messages lost on the way are counted by lost().
            each_datagram(session.socket.get_ref(), |datagram| {
                traces.extend(trace_messages(datagram, session.netns))
            })
            .context("cannot read nf_tables trace messages")?;
        }
        Ok(traces)
    }

    /// Trace messages the kernel dropped because a socket's buffer was full.
    pub fn lost(&self) -> u64 {
        self.sessions
            .iter()
            .map(|session| u64::from(dropped_messages(session.socket.get_ref())))
            .sum()
    }
}

/// Opens the calling thread's namespace's socket and installs the trace
/// table through it; in a namespace without a ruleset, it returns a watcher
/// of ruleset changes instead. `place` names the namespace in errors.
fn open_session(
    table: &str,
    matching: &TraceMatch,
    place: &str,
) -> Result<(Socket, u32, Option<Socket>)> {
    let socket = open_socket(place)?;
    enlarge_receive_buffer(&socket);
    let watcher = watch_for_ruleset(place)?;
    if watcher.is_none() {
        install(&socket, table, matching)
            .with_context(|| format!("nf_tables refused pkttrace's trace table in {place}"))?;
    }
    let netns = std::fs::metadata("/proc/thread-self/ns/net")
        .with_context(|| format!("cannot read the inode of {place}"))?
        .ino();
    Ok((socket, u32::try_from(netns)?, watcher))
}

/// Installs the trace table through `socket` and subscribes it to the
/// namespace's trace messages.
fn install(socket: &Socket, table: &str, matching: &TraceMatch) -> Result<()> {
    send_batch(socket, &batch(table, matching))?;
    socket
        .add_membership(NFNLGRP_NFTRACE)
        .context("cannot subscribe to nf_tables traces")
}

/// SO_RCVBUFFORCE ignores net.core.rmem_max (root only); SO_RCVBUF is
/// silently capped by it. Lost messages are counted, not fatal.
fn enlarge_receive_buffer(socket: &Socket) {
    let size = RECEIVE_BUFFER;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads one c_int from the pointer we pass.
        let result = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result == 0 {
            return;
        }
    }
}

/// Messages the kernel could not queue on the socket (sk_drops).
fn dropped_messages(socket: &Socket) -> u32 {
    let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut length = size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `info`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut length,
        )
    };
    if result == 0 {
        info[libc::SK_MEMINFO_DROPS as usize]
    } else {
        0
    }
}

/// A request and what it creates, for error messages.
struct Request {
    message: NetlinkMessage<NetfilterMessage>,
    what: String,
}

/// One transaction: the table, its two chains, and the marking rules.
fn batch(table: &str, matching: &TraceMatch) -> Vec<Request> {
    let mut requests = vec![Request {
        message: nf_tables(
            NfTablesMessage::NewTable(TableMessage {
                attributes: vec![
                    TableAttribute::Name(table.to_string()),
                    TableAttribute::Flags(TableFlags::Owner),
                ],
            }),
            NLM_F_CREATE | NLM_F_EXCL,
        ),
        what: format!("table inet {table}"),
    }];
    for (chain, hook) in [
        ("prerouting", InetHookNumber::PreRouting),
        ("output", InetHookNumber::LocalOut),
    ] {
        requests.push(Request {
            message: nf_tables(
                NfTablesMessage::NewChain(ChainMessage {
                    attributes: vec![
                        ChainAttribute::Table(table.to_string()),
                        ChainAttribute::Name(chain.to_string()),
                        ChainAttribute::Hook(vec![
                            Hook::Number(hook.into()),
                            Hook::Priority(CHAIN_PRIORITY as u32),
                        ]),
                        ChainAttribute::Policy(NF_ACCEPT),
                        ChainAttribute::Type("filter".to_string()),
                    ],
                }),
                NLM_F_CREATE,
            ),
            what: format!("chain {chain} (hook priority {CHAIN_PRIORITY})"),
        });
        for expressions in marking_rules(matching) {
            requests.push(Request {
                message: nf_tables(
                    NfTablesMessage::NewRule(RuleMessage {
                        attributes: vec![
                            RuleAttribute::Table(table.to_string()),
                            RuleAttribute::Chain(chain.to_string()),
                            RuleAttribute::Expressions(expressions),
                        ],
                    }),
                    NLM_F_CREATE | NLM_F_APPEND,
                ),
                what: format!("a rule in chain {chain}"),
            });
        }
    }
    requests
}

/// `ip saddr A [ip protocol P] meta nftrace set 1`, the same with daddr, for
/// every address; with a protocol other than ICMP, ICMP too, so the errors
/// a router or host sends about the flow are traced.
fn marking_rules(matching: &TraceMatch) -> Vec<Vec<ListAttribute<ExpressionAttribute>>> {
    let mut protocols = vec![matching.protocol];
    if matching.protocol.is_some_and(|p| p != IPPROTO_ICMP) {
        protocols.push(Some(IPPROTO_ICMP));
    }
    let mut rules = Vec::new();
    for address in &matching.addresses {
        // The table is `inet`: each rule first says which family it is for.
        let (family, offsets, bytes) = match address {
            IpAddr::V4(v4) => (NFPROTO_IPV4, [IP_SADDR, IP_DADDR], v4.octets().to_vec()),
            IpAddr::V6(v6) => (NFPROTO_IPV6, [IP6_SADDR, IP6_DADDR], v6.octets().to_vec()),
        };
        for offset in offsets {
            for protocol in &protocols {
                let mut rule = meta_is(MetaKey::Nfproto, family);
                rule.extend(load_and_compare(offset, &bytes));
                if let Some(protocol) = protocol {
                    // IPv6's transport protocol may follow extension headers.
                    let protocol = match (address, *protocol) {
                        (IpAddr::V6(_), IPPROTO_ICMP) => IPPROTO_ICMPV6,
                        (_, protocol) => protocol,
                    };
                    rule.extend(meta_is(MetaKey::L4Proto, protocol));
                }
                rule.push(limit_rate(TRACED_PER_SECOND));
                rule.extend(set_nftrace());
                rules.push(rule);
            }
        }
        if let (Some(port), IpAddr::V4(v4)) = (matching.vxlan_port, address) {
            for offset in [IP_SADDR, IP_DADDR] {
                rules.push(vxlan_marking_rule(port, offset, v4));
            }
        }
    }
    rules
}

/// `meta KEY VALUE`: the one-byte meta value `key` (nfproto, l4proto)
/// into a register, and the rule stops unless it equals `value`.
fn meta_is(key: MetaKey, value: u8) -> Vec<ListAttribute<ExpressionAttribute>> {
    vec![
        Expressions::Meta(vec![
            Meta::DestinationRegister(Register::Reg1),
            Meta::Key(key),
        ])
        .into(),
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(vec![value])),
        ])
        .into(),
    ]
}

/// Where, from the start of a VXLAN datagram's UDP header, the IPv4 header
/// of the packet it carries begins: UDP 8, VXLAN 8, Ethernet 14 bytes.
const VXLAN_INNER_IP: u32 = 8 + 8 + 14;
const UDP_DPORT: u32 = 2;
const IPPROTO_UDP: u8 = 17;

/// `ip protocol udp udp dport PORT @th,INNER,32 ADDRESS meta nftrace set 1`:
/// a VXLAN datagram whose inner packet has `address` at `offset` of its
/// IPv4 header (source or destination).
fn vxlan_marking_rule(
    port: u16,
    offset: u32,
    address: &Ipv4Addr,
) -> Vec<ListAttribute<ExpressionAttribute>> {
    let mut rule = meta_is(MetaKey::Nfproto, NFPROTO_IPV4);
    rule.extend(load_and_compare(IP_PROTOCOL, &[IPPROTO_UDP]));
    rule.extend(load_and_compare_at(
        NFT_PAYLOAD_TRANSPORT_HEADER,
        UDP_DPORT,
        &port.to_be_bytes(),
    ));
    rule.extend(load_and_compare_at(
        NFT_PAYLOAD_TRANSPORT_HEADER,
        VXLAN_INNER_IP + offset,
        &address.octets(),
    ));
    rule.push(limit_rate(TRACED_PER_SECOND));
    rule.extend(set_nftrace());
    rule
}

/// Loads `value.len()` bytes of the IPv4 header at `offset` and stops the
/// rule unless they equal `value`.
fn load_and_compare(offset: u32, value: &[u8]) -> Vec<ListAttribute<ExpressionAttribute>> {
    load_and_compare_at(NFT_PAYLOAD_NETWORK_HEADER, offset, value)
}

/// The same from the header `base` (`NFT_PAYLOAD_*_HEADER`) on.
fn load_and_compare_at(
    base: u32,
    offset: u32,
    value: &[u8],
) -> Vec<ListAttribute<ExpressionAttribute>> {
    vec![
        Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(base),
            Payload::Offset(offset),
            Payload::Len(value.len() as u32),
        ])
        .into(),
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(value.to_vec())),
        ])
        .into(),
    ]
}

/// Packets per second (and direction and address) marked for tracing. A
/// lecture's packets are a trickle and all traced; a flood would make the
/// kernel build a netlink message per chain and rule for every packet (and
/// drop most of them): beyond this, a drop is told by its hook and reason
/// without its rule.
const TRACED_PER_SECOND: u64 = 200;

/// `limit rate N/second`: the rule goes on only while under the rate.
fn limit_rate(per_second: u64) -> ListAttribute<ExpressionAttribute> {
    // enum nft_limit_attributes; nf_tables takes its numbers big-endian.
    const NFTA_LIMIT_RATE: u16 = 1;
    const NFTA_LIMIT_UNIT: u16 = 2;
    const NFTA_LIMIT_BURST: u16 = 3;
    const NFTA_LIMIT_TYPE: u16 = 4;
    const NFT_LIMIT_PKTS: u32 = 0;
    const BURST: u32 = 5;
    Expressions::Other {
        expression_type: "limit".to_string(),
        attributes: vec![
            DefaultNla::new(NFTA_LIMIT_RATE, per_second.to_be_bytes().to_vec()),
            DefaultNla::new(NFTA_LIMIT_UNIT, 1u64.to_be_bytes().to_vec()),
            DefaultNla::new(NFTA_LIMIT_BURST, BURST.to_be_bytes().to_vec()),
            DefaultNla::new(NFTA_LIMIT_TYPE, NFT_LIMIT_PKTS.to_be_bytes().to_vec()),
        ],
    }
    .into()
}

/// `meta nftrace set 1`: 1 into a register, then the meta statement reads it.
fn set_nftrace() -> [ListAttribute<ExpressionAttribute>; 2] {
    [
        Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Reg1),
            Immediate::Data(DataAttribute::Value(vec![1])),
        ])
        .into(),
        Expressions::Meta(vec![
            Meta::Key(MetaKey::NftraceBit),
            Meta::SourceRegister(Register::Reg1),
        ])
        .into(),
    ]
}

fn nf_tables(inner: NfTablesMessage, flags: u16) -> NetlinkMessage<NetfilterMessage> {
    let mut message = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
        inner,
    ));
    // NLM_F_ACK: the kernel acknowledges each request, so success is known too.
    message.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    message
}

fn batch_control(control: ControlMessage) -> NetlinkMessage<NetfilterMessage> {
    let mut message = NetlinkMessage::from(NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
        control,
    ));
    message.header.flags = NLM_F_REQUEST;
    message
}

/// Sends the requests as one nf_tables transaction (all or nothing) and
/// waits for the kernel's answer to each.
fn send_batch(socket: &Socket, requests: &[Request]) -> Result<()> {
    // Sequence numbers count from the batch's begin message (0).
    let mut messages = vec![batch_control(ControlMessage::BatchBegin)];
    messages.extend(requests.iter().map(|request| request.message.clone()));
    messages.push(batch_control(ControlMessage::BatchEnd));
    let mut bytes = Vec::new();
    for (sequence, mut message) in messages.into_iter().enumerate() {
        message.header.sequence_number = sequence as u32;
        bytes.extend(to_bytes(message));
    }
    socket
        .send_to(&bytes, &SocketAddr::new(0, 0), 0)
        .context("cannot send the request to the kernel")?;

    // An error names the request it is about; the batch's begin message
    // stands for the whole transaction (nf_tables missing, commit failed).
    let mut pending: HashMap<u32, &str> = requests
        .iter()
        .enumerate()
        .map(|(index, request)| (index as u32 + 1, request.what.as_str()))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    read_answers(socket, |datagram| {
        for message in netlink_messages(datagram) {
            let Ok(message) = NetlinkMessage::<NetfilterMessage>::deserialize(message) else {
                continue;
            };
            let NetlinkPayload::Error(answer) = message.payload else {
                continue;
            };
            let sequence = message.header.sequence_number;
            let Some(code) = answer.code else {
                pending.remove(&sequence);
                continue;
            };
            let error = io::Error::from_raw_os_error(-code.get());
            let unsupported = error.raw_os_error() == Some(libc::EOPNOTSUPP);
            return Err(match pending.get(&sequence) {
                // The only flag pkttrace sets; older kernels refuse it.
                Some(what) if sequence == 1 && unsupported => {
                    anyhow::anyhow!("{what}: {error}: owner tables need Linux 5.12 or later")
                }
                Some(what) => anyhow::anyhow!("{what}: {error}"),
                None if unsupported => anyhow::anyhow!(
                    "{error}: the kernel has no nf_tables (CONFIG_NF_TABLES), so exact rule verdicts cannot be traced"
                ),
                None => anyhow::anyhow!("{error}"),
            });
        }
        Ok(pending.is_empty())
    })
}

/// The NFT_MSG_TRACE messages of one datagram.
fn trace_messages(datagram: &[u8], netns: u32) -> Vec<RawRuleTrace> {
    let received_ns = monotonic_now_ns();
    netlink_messages(datagram)
        .filter_map(|message| {
            let buffer = NetlinkBuffer::new(message);
            if buffer.message_type() != (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE) {
                return None;
            }
            // struct nfgenmsg: family, version, resource id; then the attributes.
            let payload = buffer.payload();
            Some(RawRuleTrace {
                netns,
                received_ns,
                family: *payload.first()?,
                attributes: payload.get(4..)?.to_vec(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::rulesets::ruleset_tables;
    use super::*;

    const NEAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 201);
    const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 202);

    #[test]
    fn marks_icmp_errors_too_when_tracing_another_protocol() {
        let count = |protocol| {
            let matching = TraceMatch {
                addresses: vec![NEAR.into(), FAR.into()],
                protocol,
                vxlan_port: None,
            };
            marking_rules(&matching).len()
        };
        // Two addresses, as source and as destination.
        assert_eq!(count(None), 4);
        assert_eq!(count(Some(IPPROTO_ICMP)), 4);
        assert_eq!(count(Some(6)), 8, "TCP and ICMP");
        let tcp = marking_rules(&TraceMatch {
            addresses: vec![FAR.into()],
            protocol: Some(6),
            vxlan_port: None,
        });
        // The family (the table is inet), address match, protocol match,
        // the rate limit, then immediate and meta.
        assert_eq!(tcp[0].len(), 9);
        assert_eq!(tcp[0][..2], meta_is(MetaKey::Nfproto, NFPROTO_IPV4)[..]);
        assert_eq!(tcp[0][6], limit_rate(TRACED_PER_SECOND));
        assert_eq!(
            tcp.iter()
                .filter(|rule| rule[4..6] == meta_is(MetaKey::L4Proto, 1)[..])
                .count(),
            2
        );
        // An IPv6 address by its own offsets, and ICMP as ICMPv6.
        let v6: std::net::Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        let rules = marking_rules(&TraceMatch {
            addresses: vec![v6.into()],
            protocol: Some(IPPROTO_ICMP),
            vxlan_port: None,
        });
        assert_eq!(rules[0][..2], meta_is(MetaKey::Nfproto, NFPROTO_IPV6)[..]);
        assert_eq!(
            rules[1][2..4],
            load_and_compare(IP6_DADDR, &v6.octets())[..]
        );
        assert_eq!(
            rules[0][4..6],
            meta_is(MetaKey::L4Proto, IPPROTO_ICMPV6)[..]
        );
    }

    #[test]
    fn marks_vxlan_datagrams_by_the_addresses_of_the_packet_inside() {
        let rules = marking_rules(&TraceMatch {
            addresses: vec![FAR.into()],
            protocol: Some(IPPROTO_ICMP),
            vxlan_port: Some(4789),
        });
        // The packet itself as source and destination, then inside a tunnel.
        assert_eq!(rules.len(), 4);
        let inner_source = &rules[2];
        assert_eq!(
            inner_source[..2],
            meta_is(MetaKey::Nfproto, NFPROTO_IPV4)[..]
        );
        assert_eq!(inner_source[2..4], load_and_compare(IP_PROTOCOL, &[17])[..]);
        assert_eq!(
            inner_source[4..6],
            load_and_compare_at(NFT_PAYLOAD_TRANSPORT_HEADER, 2, &4789u16.to_be_bytes())[..]
        );
        // UDP 8, VXLAN 8, Ethernet 14, then the inner source address at 12.
        assert_eq!(
            inner_source[6..8],
            load_and_compare_at(NFT_PAYLOAD_TRANSPORT_HEADER, 42, &FAR.octets())[..]
        );
        assert_eq!(inner_source[8], limit_rate(TRACED_PER_SECOND));
    }

    #[test]
    fn keeps_only_trace_messages_of_a_datagram() {
        let message = |kind: u16, payload: &[u8]| {
            let mut bytes = (16 + payload.len() as u32).to_ne_bytes().to_vec();
            bytes.extend(kind.to_ne_bytes());
            bytes.extend([0; 10]);
            bytes.extend(payload);
            bytes.resize(bytes.len().next_multiple_of(4), 0);
            bytes
        };
        let trace = [2, 0, 0, 0, 8, 0, 6, 0, 1, 2, 3, 4, 9];
        let datagram = [
            message(NFNL_SUBSYS_NFTABLES << 8 | 16, &[2, 0, 0, 0]),
            message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE, &trace),
        ]
        .concat();
        let traces = trace_messages(&datagram, 7);
        assert_eq!(traces.len(), 1);
        assert_eq!((traces[0].netns, traces[0].family), (7, 2));
        assert_eq!(traces[0].attributes, trace[4..]);
    }

    #[test]
    fn a_table_of_the_ruleset_is_any_table_but_pkttraces() {
        let table = |name: &str| {
            to_bytes(nf_tables(
                NfTablesMessage::NewTable(TableMessage {
                    attributes: vec![TableAttribute::Name(name.to_string())],
                }),
                0,
            ))
        };
        let chain_bytes = to_bytes(nf_tables(
            NfTablesMessage::NewChain(ChainMessage {
                attributes: vec![ChainAttribute::Name("input".to_string())],
            }),
            0,
        ));
        let datagram = [table("pkttrace_7_0"), chain_bytes, table("filter")].concat();
        assert_eq!(ruleset_tables(&datagram), ["filter"]);
        assert!(ruleset_tables(&table("pkttrace_8_1")).is_empty());
    }
}
