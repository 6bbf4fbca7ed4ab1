//! nf_tables trace messages (NFT_MSG_TRACE, what `nft monitor trace` prints)
//! as typed values: which table, chain and rule met a traced packet, and with
//! what verdict. Pure bytes in, data out.

use std::{fmt, net::IpAddr};

use anyhow::{Context, Result, bail};
use netlink_packet_core_09::{NlasIterator, parse_string, parse_u32_be, parse_u64_be};
use serde::{Deserialize, Serialize};

use crate::probes::nftrace::RawRuleTrace;

// enum nft_trace_attributes (include/uapi/linux/netfilter/nf_tables.h).
const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_IIF: u16 = 10;
const NFTA_TRACE_OIF: u16 = 12;
const NFTA_TRACE_POLICY: u16 = 16;
// enum nft_verdict_attributes.
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// One step of a traced packet through nf_tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTrace {
    /// Inode of the network namespace the trace comes from.
    pub netns: u32,
    /// CLOCK_MONOTONIC when pkttrace read the message.
    pub received_ns: u64,
    /// The kernel's packet id: the same in every chain one packet passes in
    /// one namespace (it hashes the skb's address, hash and input device);
    /// the next namespace gives the packet another.
    pub id: u32,
    /// The table family as nft writes it: "ip", "inet", "ip6", ...
    pub family: String,
    pub table: String,
    pub chain: String,
    /// The rule's handle (`nft -a list ruleset`); None for a chain's policy
    /// and for the implicit return at a chain's end.
    pub handle: Option<u64>,
    pub kind: TraceKind,
    /// What the rule decided (kinds Rule and Return).
    pub verdict: Option<Verdict>,
    /// The base chain's policy, when it decided (kind Policy).
    pub policy: Option<Verdict>,
    /// Input and output device (ifindex) at the hook, sent along with `packet`.
    pub iif: Option<u32>,
    pub oif: Option<u32>,
    /// The packet's headers, sent with the first message of each base chain.
    pub packet: Option<TracedPacket>,
}

/// What a trace message reports (enum nft_trace_types). There is no message
/// for the packet itself: its headers come with the first message of each
/// base chain (`packet`), which is what `nft monitor trace` prints as "packet:".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceKind {
    /// A rule matched (the rule `handle`) and gave `verdict`.
    Rule,
    /// The base chain's policy decided (`policy`).
    Policy,
    /// The chain ended without a decision (no `handle`, verdict continue),
    /// or a `return` rule sent the packet back to the calling chain.
    Return,
}

/// An nf_tables verdict (enum nft_verdicts and the netfilter ones).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Break,
    Jump(String),
    Goto(String),
    Return,
    Queue,
    Stolen,
    Repeat,
    Other(i32),
}

impl fmt::Display for Verdict {
    /// As nft writes it.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Accept => write!(f, "accept"),
            Self::Drop => write!(f, "drop"),
            Self::Continue => write!(f, "continue"),
            Self::Break => write!(f, "break"),
            Self::Jump(chain) => write!(f, "jump {chain}"),
            Self::Goto(chain) => write!(f, "goto {chain}"),
            Self::Return => write!(f, "return"),
            Self::Queue => write!(f, "queue"),
            Self::Stolen => write!(f, "stolen"),
            Self::Repeat => write!(f, "repeat"),
            Self::Other(code) => write!(f, "verdict {code}"),
        }
    }
}

impl Verdict {
    fn from_code(code: i32, chain: Option<String>) -> Self {
        match code {
            -1 => Self::Continue,
            -2 => Self::Break,
            -3 => Self::Jump(chain.unwrap_or_default()),
            -4 => Self::Goto(chain.unwrap_or_default()),
            -5 => Self::Return,
            // Netfilter verdicts keep extra data (queue number, errno) in the upper bits.
            code if code >= 0 => match code & 0xff {
                0 => Self::Drop,
                1 => Self::Accept,
                2 => Self::Stolen,
                3 => Self::Queue,
                4 => Self::Repeat,
                _ => Self::Other(code),
            },
            code => Self::Other(code),
        }
    }
}

/// The traced packet's IPv4 header and the start of its transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedPacket {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub ip_id: u16,
    pub length: u16,
    /// None for a fragment after the first, or when the kernel sent too little.
    pub transport: Option<TracedTransport>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum TracedTransport {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// `id` and `seq` are meaningful for echo request and reply only.
    Icmp {
        icmp_type: u8,
        code: u8,
        id: u16,
        seq: u16,
    },
}

/// Decodes one trace message; an error says what the kernel's message lacked.
pub fn decode(raw: &RawRuleTrace) -> Result<RuleTrace> {
    let mut table = None;
    let mut chain = None;
    let mut handle = None;
    let mut kind = None;
    let mut verdict = None;
    let mut id = None;
    let mut network_header = None;
    let mut transport_header = None;
    let mut iif = None;
    let mut oif = None;
    let mut policy = None;
    for attribute in NlasIterator::new(&raw.attributes) {
        let attribute = attribute.context("malformed nf_tables trace message")?;
        let value = attribute.value();
        let mut read = || -> Result<()> {
            match attribute.kind() {
                NFTA_TRACE_TABLE => table = Some(parse_string(value)?),
                NFTA_TRACE_CHAIN => chain = Some(parse_string(value)?),
                NFTA_TRACE_RULE_HANDLE => handle = Some(parse_u64_be(value)?),
                NFTA_TRACE_TYPE => kind = Some(trace_kind(parse_u32_be(value)?)?),
                NFTA_TRACE_VERDICT => verdict = Some(decode_verdict(value)?),
                NFTA_TRACE_ID => id = Some(parse_u32_be(value)?),
                NFTA_TRACE_NETWORK_HEADER => network_header = Some(value.to_vec()),
                NFTA_TRACE_TRANSPORT_HEADER => transport_header = Some(value.to_vec()),
                NFTA_TRACE_IIF => iif = Some(parse_u32_be(value)?),
                NFTA_TRACE_OIF => oif = Some(parse_u32_be(value)?),
                NFTA_TRACE_POLICY => {
                    policy = Some(Verdict::from_code(parse_u32_be(value)? as i32, None));
                }
                _ => {}
            }
            Ok(())
        };
        read()
            .with_context(|| format!("malformed nf_tables trace attribute {}", attribute.kind()))?;
    }
    let kind = match kind.context("nf_tables trace without a type")? {
        // Recent kernels (seen on 6.18) send the end of a chain as a "rule"
        // message without a rule: they mask NFT_CONTINUE's bits before
        // choosing the type. nft skips it; it is the chain's return.
        TraceKind::Rule if handle.is_none() && verdict == Some(Verdict::Continue) => {
            TraceKind::Return
        }
        kind => kind,
    };
    Ok(RuleTrace {
        netns: raw.netns,
        received_ns: raw.received_ns,
        id: id.context("nf_tables trace without an id")?,
        family: family_name(raw.family),
        table: table.context("nf_tables trace without a table")?,
        chain: chain.context("nf_tables trace without a chain")?,
        handle,
        kind,
        verdict,
        policy,
        iif,
        oif,
        packet: network_header
            .and_then(|header| traced_packet(&header, transport_header.as_deref())),
    })
}

fn trace_kind(number: u32) -> Result<TraceKind> {
    Ok(match number {
        1 => TraceKind::Policy,
        2 => TraceKind::Return,
        3 => TraceKind::Rule,
        _ => bail!("unknown nf_tables trace type {number}"),
    })
}

/// The nested NFTA_TRACE_VERDICT: a code and, for jump and goto, a chain.
fn decode_verdict(nested: &[u8]) -> Result<Verdict> {
    let mut code = None;
    let mut chain = None;
    for attribute in NlasIterator::new(nested) {
        let attribute = attribute.context("malformed nf_tables trace verdict")?;
        match attribute.kind() {
            NFTA_VERDICT_CODE => code = Some(parse_u32_be(attribute.value())? as i32),
            NFTA_VERDICT_CHAIN => chain = Some(parse_string(attribute.value())?),
            _ => {}
        }
    }
    let code = code.context("nf_tables trace verdict without a code")?;
    Ok(Verdict::from_code(code, chain))
}

/// NFPROTO_* as nft names table families.
fn family_name(family: u8) -> String {
    match family {
        1 => "inet".into(),
        2 => "ip".into(),
        3 => "arp".into(),
        5 => "netdev".into(),
        7 => "bridge".into(),
        10 => "ip6".into(),
        other => format!("family {other}"),
    }
}

/// IPv4 or IPv6; None for anything else or a header cut short.
fn traced_packet(network: &[u8], transport: Option<&[u8]>) -> Option<TracedPacket> {
    if network.first()? >> 4 == 6 {
        return traced_packet_v6(network, transport);
    }
    let header = network.get(..20)?;
    if header[0] >> 4 != 4 {
        return None;
    }
    let word = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let address =
        |at: usize| IpAddr::from([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let protocol = header[9];
    let later_fragment = word(6) & 0x1fff != 0;
    Some(TracedPacket {
        src: address(12),
        dst: address(16),
        protocol,
        ip_id: word(4),
        length: word(2),
        transport: transport
            .filter(|_| !later_fragment)
            .and_then(|bytes| traced_transport(protocol, bytes)),
    })
}

/// An IPv6 header: no IP id; the protocol is the fixed header's next
/// header (the kernel hands over the transport header past any extension).
fn traced_packet_v6(network: &[u8], transport: Option<&[u8]>) -> Option<TracedPacket> {
    let header = network.get(..40)?;
    let address = |at: usize| -> Option<IpAddr> {
        Some(IpAddr::from(
            <[u8; 16]>::try_from(header.get(at..at + 16)?).ok()?,
        ))
    };
    let protocol = header[6];
    Some(TracedPacket {
        src: address(8)?,
        dst: address(24)?,
        protocol,
        ip_id: 0,
        length: u16::from_be_bytes([header[4], header[5]]).saturating_add(40),
        transport: transport.and_then(|bytes| traced_transport(protocol, bytes)),
    })
}

fn traced_transport(protocol: u8, bytes: &[u8]) -> Option<TracedTransport> {
    let word = |at: usize| Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
    Some(match protocol {
        1 | 58 => TracedTransport::Icmp {
            icmp_type: *bytes.first()?,
            code: *bytes.get(1)?,
            id: word(4)?,
            seq: word(6)?,
        },
        6 => TracedTransport::Tcp {
            sport: word(0)?,
            dport: word(2)?,
            flags: *bytes.get(13)?,
        },
        17 => TracedTransport::Udp {
            sport: word(0)?,
            dport: word(2)?,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NLA_F_NESTED: u16 = 0x8000;
    const NFTA_TRACE_LL_HEADER: u16 = 7;
    const NFTA_TRACE_IIFTYPE: u16 = 11;
    const NFTA_TRACE_NFPROTO: u16 = 15;

    /// One netlink attribute: length, type, value, padding to 4 bytes.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = (4 + value.len() as u16).to_ne_bytes().to_vec();
        bytes.extend(kind.to_ne_bytes());
        bytes.extend(value);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    fn be32(value: i32) -> [u8; 4] {
        value.to_be_bytes()
    }

    fn verdict(code: i32, chain: Option<&str>) -> Vec<u8> {
        let mut nested = nla(NFTA_VERDICT_CODE, &be32(code));
        if let Some(chain) = chain {
            nested.extend(nla(NFTA_VERDICT_CHAIN, format!("{chain}\0").as_bytes()));
        }
        nla(NFTA_TRACE_VERDICT | NLA_F_NESTED, &nested)
    }

    fn raw(attributes: &[Vec<u8>]) -> RawRuleTrace {
        RawRuleTrace {
            netns: 4026532546,
            received_ns: 1168584816812,
            family: 2,
            attributes: attributes.concat(),
        }
    }

    /// IPv4 header of the lab test's ping: 198.51.100.201 -> .202, id 40805, DF.
    fn ping_ip_header() -> Vec<u8> {
        let mut header = vec![0x45, 0, 0, 36, 0x9f, 0x65, 0x40, 0, 64, 1, 0, 0];
        header.extend([198, 51, 100, 201, 198, 51, 100, 202]);
        header
    }

    /// Echo request id 2288 seq 0, and the first bytes of its payload.
    fn ping_icmp_header() -> Vec<u8> {
        let mut header = vec![8, 0, 0x3c, 0x1e, 0x08, 0xf0, 0, 0];
        header.extend(b"pkttrace");
        header
    }

    /// The first message of chain `lab input` in the lab test (a real run's
    /// values, the kernel's attribute order): the rule that dropped the ping.
    fn drop_message() -> Vec<Vec<u8>> {
        vec![
            nla(NFTA_TRACE_NFPROTO, &be32(2)),
            nla(NFTA_TRACE_TYPE, &be32(3)),
            nla(NFTA_TRACE_ID, &1567626545u32.to_be_bytes()),
            nla(NFTA_TRACE_CHAIN, b"input\0"),
            nla(NFTA_TRACE_TABLE, b"lab\0"),
            nla(NFTA_TRACE_RULE_HANDLE, &2u64.to_be_bytes()),
            verdict(0, None),
            nla(NFTA_TRACE_IIF, &be32(2)),
            nla(NFTA_TRACE_IIFTYPE, &1u16.to_be_bytes()),
            nla(NFTA_TRACE_NETWORK_HEADER, &ping_ip_header()),
            nla(NFTA_TRACE_TRANSPORT_HEADER, &ping_icmp_header()),
            nla(NFTA_TRACE_LL_HEADER, &[0x02; 14]),
        ]
    }

    #[test]
    fn decodes_the_rule_that_dropped_a_packet() {
        let trace = decode(&raw(&drop_message())).unwrap();
        assert_eq!(
            trace,
            RuleTrace {
                netns: 4026532546,
                received_ns: 1168584816812,
                id: 1567626545,
                family: "ip".into(),
                table: "lab".into(),
                chain: "input".into(),
                handle: Some(2),
                kind: TraceKind::Rule,
                verdict: Some(Verdict::Drop),
                policy: None,
                iif: Some(2),
                oif: None,
                packet: Some(TracedPacket {
                    src: IpAddr::from([198, 51, 100, 201]),
                    dst: IpAddr::from([198, 51, 100, 202]),
                    protocol: 1,
                    ip_id: 40805,
                    length: 36,
                    transport: Some(TracedTransport::Icmp {
                        icmp_type: 8,
                        code: 0,
                        id: 2288,
                        seq: 0
                    }),
                }),
            }
        );
    }

    #[test]
    fn a_base_chain_policy_decides() {
        let trace = decode(&raw(&[
            nla(NFTA_TRACE_TYPE, &be32(1)),
            nla(NFTA_TRACE_ID, &be32(7)),
            nla(NFTA_TRACE_CHAIN, b"FORWARD\0"),
            nla(NFTA_TRACE_TABLE, b"filter\0"),
            nla(NFTA_TRACE_POLICY, &be32(0)),
        ]))
        .unwrap();
        assert_eq!(trace.kind, TraceKind::Policy);
        assert_eq!(trace.policy, Some(Verdict::Drop));
        assert_eq!(
            (trace.handle, trace.verdict, trace.packet),
            (None, None, None)
        );
    }

    #[test]
    fn jumps_and_returns() {
        let mut message = drop_message();
        message[6] = verdict(-3, Some("DOCKER-USER"));
        let jump = decode(&raw(&message)).unwrap();
        assert_eq!(jump.verdict, Some(Verdict::Jump("DOCKER-USER".into())));
        assert_eq!(jump.verdict.unwrap().to_string(), "jump DOCKER-USER");

        // A `return` rule.
        message[1] = nla(NFTA_TRACE_TYPE, &be32(2));
        message[6] = verdict(-5, None);
        let returned = decode(&raw(&message)).unwrap();
        assert_eq!(
            (returned.kind, returned.handle, returned.verdict),
            (TraceKind::Return, Some(2), Some(Verdict::Return))
        );
    }

    #[test]
    fn the_end_of_a_chain_is_a_return() {
        // As this kernel sends it: type "rule", no rule handle, continue.
        let end = decode(&raw(&[
            nla(NFTA_TRACE_TYPE, &be32(3)),
            nla(NFTA_TRACE_ID, &be32(7)),
            nla(NFTA_TRACE_CHAIN, b"DOCKER-USER\0"),
            nla(NFTA_TRACE_TABLE, b"filter\0"),
            verdict(-1, None),
        ]))
        .unwrap();
        assert_eq!(
            (end.kind, end.handle, end.verdict),
            (TraceKind::Return, None, Some(Verdict::Continue))
        );
    }

    #[test]
    fn reads_tcp_and_skips_later_fragments() {
        let mut ip = ping_ip_header();
        ip[9] = 6;
        let mut tcp = vec![0x9c, 0x40, 0, 81, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02];
        tcp.resize(20, 0);
        let mut message = drop_message();
        message[9] = nla(NFTA_TRACE_NETWORK_HEADER, &ip);
        message[10] = nla(NFTA_TRACE_TRANSPORT_HEADER, &tcp);
        let packet = decode(&raw(&message)).unwrap().packet.unwrap();
        assert_eq!(
            packet.transport,
            Some(TracedTransport::Tcp {
                sport: 40000,
                dport: 81,
                flags: 0x02
            })
        );

        ip[6..8].copy_from_slice(&[0x00, 0xb9]); // fragment offset 185
        message[9] = nla(NFTA_TRACE_NETWORK_HEADER, &ip);
        let fragment = decode(&raw(&message)).unwrap().packet.unwrap();
        assert_eq!((fragment.protocol, fragment.transport), (6, None));

        let mut ipv6 = [0u8; 40];
        ipv6[0] = 0x60;
        ipv6[4..6].copy_from_slice(&20u16.to_be_bytes());
        ipv6[6] = 6;
        ipv6[8..24].copy_from_slice(
            &"fd00:acc:19::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        message[9] = nla(NFTA_TRACE_NETWORK_HEADER, &ipv6);
        let v6 = decode(&raw(&message)).unwrap().packet.unwrap();
        assert_eq!(
            (v6.src, v6.protocol, v6.length, v6.ip_id),
            ("fd00:acc:19::2".parse().unwrap(), 6, 60, 0),
            "IPv6: no IP id"
        );
        assert!(v6.transport.is_some());
        message[9] = nla(NFTA_TRACE_NETWORK_HEADER, &[0x00; 40]);
        assert_eq!(
            decode(&raw(&message)).unwrap().packet,
            None,
            "neither family"
        );
    }

    #[test]
    fn netfilter_verdicts_keep_extra_data_out() {
        assert_eq!(Verdict::from_code(0x0003_0003, None), Verdict::Queue);
        assert_eq!(Verdict::from_code(0x0071_0000, None), Verdict::Drop);
        assert_eq!(Verdict::from_code(-9, None), Verdict::Other(-9));
        let names: Vec<String> = [
            Verdict::Accept,
            Verdict::Goto("x".into()),
            Verdict::Stolen,
            Verdict::Other(-9),
        ]
        .iter()
        .map(Verdict::to_string)
        .collect();
        assert_eq!(names, ["accept", "goto x", "stolen", "verdict -9"]);
    }

    #[test]
    fn names_families_as_nft_does() {
        let mut inet = raw(&drop_message());
        inet.family = 1;
        assert_eq!(decode(&inet).unwrap().family, "inet");
    }

    #[test]
    fn says_what_a_broken_message_lacks() {
        let mut message = drop_message();
        message.remove(4);
        let error = decode(&raw(&message)).unwrap_err().to_string();
        assert_eq!(error, "nf_tables trace without a table");

        let mut message = drop_message();
        message[1] = nla(NFTA_TRACE_TYPE, &be32(9));
        let error = format!("{:#}", decode(&raw(&message)).unwrap_err());
        assert!(error.contains("unknown nf_tables trace type 9"), "{error}");

        let mut truncated = raw(&drop_message());
        truncated.attributes.truncate(30);
        assert!(decode(&truncated).is_err());
    }
}

/// The rule tracer on a real kernel: what it reports, decoded.
#[cfg(test)]
mod live {
    use std::{
        net::Ipv4Addr,
        os::unix::fs::MetadataExt,
        path::{Path, PathBuf},
        process::Command,
        thread::JoinHandle,
        time::{Duration, Instant},
    };

    use socket2::{Domain, Protocol, Socket, Type};

    use super::{RuleTrace, TraceKind, Verdict, decode};
    use crate::{
        probes::nftrace::{RuleTracer, TraceMatch},
        test_support::run,
    };

    const NEAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 201);
    const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 202);
    const IPPROTO_ICMP: u8 = 1;

    /// Runs a command when dropped, whether the test passed or panicked.
    struct Undo(Vec<String>);

    impl Drop for Undo {
        fn drop(&mut self) {
            let _ = Command::new(&self.0[0]).args(&self.0[1..]).output();
        }
    }

    fn undo(args: &[&str]) -> Undo {
        Undo(args.iter().map(|a| a.to_string()).collect())
    }

    /// The handle nft gives the only rule of `chain` that ends in `verdict`.
    fn rule_handle(netns: &str, chain: &str, verdict: &str) -> u64 {
        let listing = run(&["ip", "netns", "exec", netns, "nft", "-a", "list", "ruleset"]);
        let mut in_chain = false;
        for line in listing.lines().map(str::trim) {
            if line.starts_with("chain ") {
                in_chain = line.starts_with(&format!("chain {chain} "));
            } else if in_chain && line.contains(&format!(" {verdict} # handle ")) {
                return line.rsplit(' ').next().unwrap().parse().unwrap();
            }
        }
        panic!("no {verdict} rule in chain {chain}: {listing}")
    }

    /// One ICMP echo request to `to`, sent from inside the namespace at
    /// `netns` (on a thread of its own: setns moves only the calling thread).
    fn echo_request(netns: &Path, to: Ipv4Addr) -> JoinHandle<()> {
        let netns = std::fs::File::open(netns).unwrap();
        std::thread::spawn(move || {
            crate::setns::enter_network_namespace(&netns).unwrap();
            let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
            let header = etherparse::Icmpv4Header::with_checksum(
                etherparse::Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 7, seq: 0 }),
                b"pkttrace test",
            );
            let mut message = header.to_bytes().to_vec();
            message.extend_from_slice(b"pkttrace test");
            socket
                .send_to(&message, &std::net::SocketAddrV4::new(to, 0).into())
                .unwrap();
        })
    }

    /// Needs root and nft: `cargo test -p tracer nftrace -- --ignored`.
    /// Builds two namespaces joined by a veth pair; guards remove them, also
    /// when the test fails.
    #[tokio::test]
    #[ignore = "needs root and nft; creates two network namespaces"]
    async fn reports_the_rule_that_dropped_a_ping_and_leaves_nothing_behind() {
        let tag = std::process::id() % 100_000;
        let (near, far) = (format!("pt-nft-{tag}-near"), format!("pt-nft-{tag}-far"));
        let (near_end, far_end) = (format!("ptn{tag}n"), format!("ptn{tag}f"));
        let _near = undo(&["ip", "netns", "del", &near]);
        let _far = undo(&["ip", "netns", "del", &far]);
        run(&["ip", "netns", "add", &near]);
        run(&["ip", "netns", "add", &far]);
        let _veth = undo(&["ip", "-n", &near, "link", "del", &near_end]);
        run(&[
            "ip", "link", "add", &near_end, "netns", &near, "type", "veth", "peer", "name",
            &far_end, "netns", &far,
        ]);
        for (netns, device, address) in [(&near, &near_end, NEAR), (&far, &far_end, FAR)] {
            run(&[
                "ip",
                "-n",
                netns,
                "addr",
                "add",
                &format!("{address}/30"),
                "dev",
                device,
            ]);
            run(&["ip", "-n", netns, "link", "set", device, "up"]);
        }
        // The ping goes through a jump into an empty chain before it is dropped.
        let ruleset = format!(
            "add table ip lab; add chain ip lab checks; \
             add chain ip lab input {{ type filter hook input priority 0; policy accept; }}; \
             add rule ip lab input jump checks; \
             add rule ip lab input ip saddr {NEAR} icmp type echo-request drop"
        );
        run(&["ip", "netns", "exec", &far, "nft", &ruleset]);
        let handle = rule_handle(&far, "input", "drop");

        let paths = [near.as_str(), far.as_str()].map(|n| PathBuf::from(format!("/run/netns/{n}")));
        let [near_inode, far_inode] = paths
            .each_ref()
            .map(|path| std::fs::metadata(path).unwrap().ino() as u32);
        let matching = TraceMatch {
            addresses: vec![FAR.into()],
            protocol: Some(IPPROTO_ICMP),
            vxlan_port: None,
        };
        let mut tracer = RuleTracer::start(&matching, &paths.clone().map(Some)).unwrap();
        let table = tracer.table().to_string();
        let tables = |netns: &str| run(&["ip", "netns", "exec", netns, "nft", "list", "tables"]);
        assert!(tables(&far).contains(&table), "trace table installed");
        assert_eq!(tables(&near), "", "no table, no rule to name, no marking");

        // One ping from the near namespace to the far one.
        let ping = || echo_request(&paths[0], FAR);
        let sent_ping = ping();
        let mut traces: Vec<RuleTrace> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !traces.iter().any(|t| t.verdict == Some(Verdict::Drop)) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Ok(raw) = tokio::time::timeout(remaining, tracer.next_traces()).await else {
                break;
            };
            traces.extend(raw.unwrap().iter().map(|raw| decode(raw).unwrap()));
        }
        sent_ping.join().unwrap();
        traces.extend(
            tracer
                .drain()
                .unwrap()
                .iter()
                .map(|raw| decode(raw).unwrap()),
        );
        for trace in &traces {
            eprintln!("{trace:?}");
        }

        // In the far namespace, in the kernel's order: the jump, the end of
        // the empty chain, the drop by the rule nft lists.
        let far_steps: Vec<_> = traces
            .iter()
            .filter(|t| t.netns == far_inode && t.table == "lab")
            .map(|t| (t.chain.as_str(), t.kind, t.handle, t.verdict.clone()))
            .collect();
        assert_eq!(
            far_steps[1..],
            [
                ("checks", TraceKind::Return, None, Some(Verdict::Continue)),
                ("input", TraceKind::Rule, Some(handle), Some(Verdict::Drop)),
            ]
        );
        assert_eq!(far_steps[0].3, Some(Verdict::Jump("checks".into())));
        let dropped = traces
            .iter()
            .find(|t| t.verdict == Some(Verdict::Drop))
            .unwrap();
        assert_eq!(dropped.family, "ip");
        let packet = traces
            .iter()
            .filter(|t| t.netns == far_inode && t.id == dropped.id && t.table == "lab")
            .find_map(|t| t.packet)
            .expect("the packet's headers with the chain's first message");
        assert_eq!((packet.src, packet.dst), (NEAR.into(), FAR.into()));

        assert!(!traces.iter().any(|t| t.netns == near_inode));
        assert_eq!(tracer.lost(), 0);

        // A table made in the near namespace during the trace: the trace
        // table follows, and the next ping is seen leaving there.
        run(&["ip", "netns", "exec", &near, "nft", "add table ip late"]);
        // The notification is read, and the trace table installed, while
        // the tracer waits for traces; a packet sent before that is not marked.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !tables(&near).contains(&table) && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(100), tracer.next_traces()).await;
        }
        assert!(
            tables(&near).contains(&table),
            "installed once a table appeared"
        );
        let sent_ping = ping();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut sent = None;
        while sent.is_none() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Ok(raw) = tokio::time::timeout(remaining, tracer.next_traces()).await else {
                break;
            };
            sent = raw
                .unwrap()
                .iter()
                .map(|raw| decode(raw).unwrap())
                .filter(|t| t.netns == near_inode && t.table == table && t.chain == "output")
                .find_map(|t| t.packet);
        }
        sent_ping.join().unwrap();
        let sent = sent.expect("the second ping leaving the near namespace");
        assert_eq!((sent.src, sent.dst), (NEAR.into(), FAR.into()));
        assert!(tracer.take_failures().is_empty());

        drop(tracer);
        for netns in [&near, &far] {
            assert!(
                !tables(netns).contains(&table),
                "trace table left behind in {netns}"
            );
        }
    }
}
