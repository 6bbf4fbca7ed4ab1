//! The kernel's facts as typed values, decided once when an event is
//! decoded: why a packet was dropped, what a code location is, what
//! conntrack said, what a route lookup found, a MAC address. Everything
//! later decides on these types; the kernel's own names are kept for the
//! words.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares the drop reasons pkttrace decides on, each with the name the
/// kernel's BTF gives it (`enum skb_drop_reason` without its prefix).
macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Why the kernel dropped a packet (`enum skb_drop_reason`), read by
        /// its name in the running kernel's BTF: the numbers differ from one
        /// kernel to the next, the names do not.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $($(#[$doc])* $variant,)*
            /// A reason pkttrace has no special knowledge of, by its kernel
            /// name ("reason N" when the kernel's BTF does not name it).
            Other(Arc<str>),
        }

        impl DropReason {
            /// The reason the kernel calls `name`.
            pub fn from_kernel_name(name: &str) -> Self {
                match name {
                    $($name => Self::$variant,)*
                    other => Self::Other(other.into()),
                }
            }

            /// The kernel's name for it (`NETFILTER_DROP`).
            pub fn kernel_name(&self) -> &str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Other(name) => name,
                }
            }
        }
    };
}

drop_reasons! {
    NotSpecified = "NOT_SPECIFIED",
    /// No socket takes it: nothing listens on that address and port.
    NoSocket = "NO_SOCKET",
    /// A frame for another host's MAC address (a flooded copy).
    OtherHost = "OTHERHOST",
    /// A netfilter rule or chain policy.
    NetfilterDrop = "NETFILTER_DROP",
    /// An address the namespace may not route (forwarding off, no route).
    IpInAddrErrors = "IP_INADDRERRORS",
    /// No route for a received packet.
    IpInNoRoutes = "IP_INNOROUTES",
    /// No route for a packet this namespace sends.
    IpOutNoRoutes = "IP_OUTNOROUTES",
    /// The reverse path filter.
    IpRpFilter = "IP_RPFILTER",
    /// A bad IPv4 header, or a TTL that ran out while forwarding.
    IpInHdr = "IP_INHDR",
    /// Larger than the next link's MTU, and it may not be fragmented.
    PktTooBig = "PKT_TOO_BIG",
    /// The next hop never answered ARP.
    NeighFailed = "NEIGH_FAILED",
    NeighQueueFull = "NEIGH_QUEUEFULL",
    NeighDead = "NEIGH_DEAD",
    NeighCreateFail = "NEIGH_CREATEFAIL",
    /// Thrown away with a socket's queue when the socket was closed.
    QueuePurge = "QUEUE_PURGE",
    TcpInvalidSequence = "TCP_INVALID_SEQUENCE",
    TcpOldData = "TCP_OLD_DATA",
    /// Not the kernel's: a kernel without drop reasons gives none, so the
    /// drop is told by where it happened.
    Unreported = "UNREPORTED",
}

impl DropReason {
    /// The next hop's MAC address could not be resolved.
    pub fn is_neighbour_failure(&self) -> bool {
        matches!(
            self,
            Self::NeighFailed | Self::NeighQueueFull | Self::NeighDead | Self::NeighCreateFail
        )
    }

    /// Dropped by a netfilter rule or policy: by its reason or, on a kernel
    /// that gives none, by netfilter's verdict code having freed it.
    pub fn is_netfilter_drop_at(&self, site: &CodeSite) -> bool {
        // Netfilter frees what a rule dropped in nf_hook_slow; nf_tables and
        // x_tables do it themselves where they can name the reason (recent
        // kernels), or nf_hook_slow's free is inlined into them.
        const VERDICT_CODE: [&str; 4] = [
            "nf_hook_slow",
            "nft_do_chain",
            "ipt_do_table",
            "ip6t_do_table",
        ];
        *self == Self::NetfilterDrop
            || (*self == Self::Unreported && VERDICT_CODE.contains(&site.function()))
    }

    /// Dropped because a neighbour's MAC address could not be found, by
    /// its reason or, for IPv6 (no reason given), by the place it was freed.
    pub fn is_neighbour_failure_at(&self, site: &CodeSite) -> bool {
        self.is_neighbour_failure()
            || (matches!(self, Self::NotSpecified | Self::Unreported)
                && site.role == SiteRole::NeighbourFailed)
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kernel_name())
    }
}

impl schemars::JsonSchema for DropReason {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DropReason".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "The kernel's drop reason, as its BTF names it (enum skb_drop_reason without its prefix), or \"reason N\" for a value it does not name",
            "examples": ["NETFILTER_DROP", "NEIGH_FAILED", "IP_INHDR", "PKT_TOO_BIG"]
        })
    }
}

impl Serialize for DropReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.kernel_name())
    }
}

impl<'de> Deserialize<'de> for DropReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self::from_kernel_name(&String::deserialize(deserializer)?))
    }
}

/// What a place in the kernel's code is to pkttrace: decided from the
/// address ranges (kallsyms extents) of the functions it knows, never from
/// the name an event carries.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SiteRole {
    /// Neighbour resolution freeing its copy of a waiting packet for one
    /// who-has (`__neigh_event_send`, `neigh_probe`, `neigh_timer_handler`).
    NeighbourSolicit,
    /// A socket reader on another CPU handed the skb back to the CPU that
    /// made it, which frees it whenever it next runs its network softirq
    /// (`skb_defer_free_flush`): no hop, and nothing about where it was.
    DeferredFree,
    /// The input route's error handler (`ip_error`): no usable route for a
    /// received packet, or forwarding is off.
    RouteError,
    /// Forwarding (`ip_forward`, `ip6_forward`): a TTL that ran out, a
    /// packet too big, IPv6 forwarding off.
    Forwarding,
    /// Neighbour resolution giving up on an address (`neigh_invalidate`,
    /// `ndisc_error_report`): IPv6 frees what waited without a reason.
    NeighbourFailed,
    /// No code location at all: a kernel whose `consume_skb` gives none.
    Unlocated,
    #[default]
    Other,
}

impl SiteRole {
    /// The kernel functions each role stands for.
    pub const FUNCTIONS: [(SiteRole, &'static [&'static str]); 5] = [
        (
            SiteRole::NeighbourSolicit,
            &["__neigh_event_send", "neigh_probe", "neigh_timer_handler"],
        ),
        (SiteRole::DeferredFree, &["skb_defer_free_flush"]),
        (SiteRole::RouteError, &["ip_error"]),
        (SiteRole::Forwarding, &["ip_forward", "ip6_forward"]),
        (
            SiteRole::NeighbourFailed,
            &["neigh_invalidate", "ndisc_error_report"],
        ),
    ];

    fn is_other(&self) -> bool {
        *self == SiteRole::Other
    }
}

/// A place in the kernel's code where a packet was freed or dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct CodeSite {
    /// `function+0xoffset` as kallsyms names it, or the bare address.
    pub name: Arc<str>,
    #[serde(default, skip_serializing_if = "SiteRole::is_other")]
    pub role: SiteRole,
}

impl CodeSite {
    /// The function alone (`icmp_rcv+0x259` -> `icmp_rcv`), for the words.
    pub fn function(&self) -> &str {
        self.name.split('+').next().unwrap_or(&self.name)
    }
}

impl fmt::Display for CodeSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// What conntrack made of a packet (`enum ip_conntrack_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    New,
    Established,
    /// Belongs to another connection (an ICMP error about it, an FTP data channel).
    Related,
}

/// Which way a packet goes on its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CtDirection {
    /// As the connection's first packet went.
    Original,
    Reply,
}

/// A packet's conntrack entry and what conntrack said of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema, Deserialize)]
pub struct Conntrack {
    /// The kernel address of the entry (`struct nf_conn`): one connection,
    /// both directions.
    pub id: u64,
    pub state: CtState,
    pub direction: CtDirection,
}

impl Conntrack {
    /// From `skb->_nfct`'s low bits (`enum ip_conntrack_info`); None for a
    /// value that is no state of a tracked packet.
    pub fn from_kernel(id: u64, info: u8) -> Option<Self> {
        use {CtDirection::*, CtState::*};
        let (state, direction) = match info {
            0 => (Established, Original),
            1 => (Related, Original),
            2 => (New, Original),
            3 => (Established, Reply),
            4 => (Related, Reply),
            _ => return None,
        };
        Some(Self {
            id,
            state,
            direction,
        })
    }

    /// As `conntrack -L` would say it: "NEW", "ESTABLISHED, reply direction".
    pub fn words(self) -> &'static str {
        use {CtDirection::*, CtState::*};
        match (self.state, self.direction) {
            (New, _) => "NEW",
            (Established, Original) => "ESTABLISHED",
            (Related, Original) => "RELATED",
            (Established, Reply) => "ESTABLISHED, reply direction",
            (Related, Reply) => "RELATED, reply direction",
        }
    }
}

/// What one routing table lookup (`fib_table_lookup`) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteResult {
    /// A route to send it on (via a gateway or on-link).
    Unicast,
    /// One of the namespace's own addresses (the local table).
    Local,
    /// Nothing in this table matches: the next table is asked, and when
    /// none is left the lookup fails with "network unreachable".
    NoMatch,
    /// An `unreachable` route: the kernel answers "host unreachable".
    Unreachable,
    /// A `blackhole` route: dropped without a word.
    Blackhole,
    /// A `prohibit` route: the kernel answers "communication administratively prohibited".
    Prohibit,
    /// Another error (the kernel's negative errno).
    Failed(i32),
}

/// Errno values `fib_table_lookup` returns (`fib_props[].error`).
const EAGAIN: i32 = 11;
const EINVAL: i32 = 22;
const EACCES: i32 = 13;
const EHOSTUNREACH: i32 = 113;
/// `nhc_scope` of a local route's next hop (`RT_SCOPE_NOWHERE`): only the
/// routes the kernel makes for the namespace's own addresses have it.
const LOCAL_NEXTHOP_SCOPE: u8 = 255;

impl RouteResult {
    /// From the lookup's error and, for a route found, its next hop's scope.
    pub fn from_lookup(error: i32, nexthop_scope: u8) -> Self {
        match -error {
            0 if nexthop_scope == LOCAL_NEXTHOP_SCOPE => Self::Local,
            0 => Self::Unicast,
            EAGAIN => Self::NoMatch,
            EHOSTUNREACH => Self::Unreachable,
            EINVAL => Self::Blackhole,
            EACCES => Self::Prohibit,
            _ => Self::Failed(error),
        }
    }

    /// A route was found (the packet can go on).
    pub fn found(self) -> bool {
        matches!(self, Self::Unicast | Self::Local)
    }
}

/// Whose route a lookup was, by the kernel's evidence (`PacketEvent::route_for`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, schemars::JsonSchema, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RouteFor {
    /// Not tied to a packet: a sender choosing its route before the packet exists.
    #[default]
    Sender,
    /// The packet at the event's `skb`, routed as it arrived (same CPU, its
    /// input device and source address).
    Packet,
    /// An answer to the packet at the event's `skb` (an echo reply, a reset,
    /// an ICMP error), routed back to its source while it was handled.
    AnswerTo,
}

impl RouteFor {
    pub fn is_sender(&self) -> bool {
        *self == Self::Sender
    }
}

/// An Ethernet address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl schemars::JsonSchema for Mac {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Mac".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An Ethernet address",
            "pattern": "^([0-9a-f]{2}:){5}[0-9a-f]{2}$"
        })
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|()| serde::de::Error::custom(format!("not a MAC address: {text}")))
    }
}

impl std::str::FromStr for Mac {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            *byte = u8::from_str_radix(parts.next().ok_or(())?, 16).map_err(|_| ())?;
        }
        parts.next().is_none().then_some(Mac(bytes)).ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_reason_is_known_by_its_kernel_name() {
        assert_eq!(
            DropReason::from_kernel_name("NETFILTER_DROP"),
            DropReason::NetfilterDrop
        );
        let other = DropReason::from_kernel_name("SOCKET_FILTER");
        assert_eq!(other, DropReason::Other("SOCKET_FILTER".into()));
        assert_eq!(other.kernel_name(), "SOCKET_FILTER");
        assert_eq!(
            serde_json::to_string(&DropReason::NeighFailed).unwrap(),
            "\"NEIGH_FAILED\""
        );
    }

    #[test]
    fn conntrack_info_is_a_state_and_a_direction() {
        let reply = Conntrack::from_kernel(1, 3).unwrap();
        assert_eq!(
            (reply.state, reply.direction),
            (CtState::Established, CtDirection::Reply)
        );
        assert_eq!(reply.words(), "ESTABLISHED, reply direction");
        assert_eq!(Conntrack::from_kernel(1, 2).unwrap().words(), "NEW");
        assert!(Conntrack::from_kernel(1, 7).is_none(), "untracked");
    }

    #[test]
    fn a_lookup_error_is_the_route_type_that_caused_it() {
        assert_eq!(RouteResult::from_lookup(0, 255), RouteResult::Local);
        assert_eq!(RouteResult::from_lookup(0, 253), RouteResult::Unicast);
        assert_eq!(RouteResult::from_lookup(-11, 0), RouteResult::NoMatch);
        assert_eq!(RouteResult::from_lookup(-113, 0), RouteResult::Unreachable);
        assert_eq!(RouteResult::from_lookup(-22, 0), RouteResult::Blackhole);
        assert_eq!(RouteResult::from_lookup(-13, 0), RouteResult::Prohibit);
        assert_eq!(RouteResult::from_lookup(-5, 0), RouteResult::Failed(-5));
    }

    #[test]
    fn a_mac_address_reads_back_from_its_text() {
        let mac = Mac([0x02, 0x42, 0xac, 0x11, 0x00, 0xff]);
        assert_eq!(mac.to_string(), "02:42:ac:11:00:ff");
        assert_eq!("02:42:ac:11:00:ff".parse(), Ok(mac));
        assert_eq!("02:42:ac".parse::<Mac>(), Err(()));
        assert_eq!("02:42:ac:11:00:ff:00".parse::<Mac>(), Err(()));
    }
}
