//! Lab harness for pkttrace's integration tests.
//!
//! Every type here is a guard for something a test creates on this machine:
//! network namespaces ([`Upstream`], [`NetnsPair`]), Docker containers and
//! networks ([`Container`], [`DockerNetwork`]), stand-ins for a real NIC
//! ([`StandInNic`], [`TapNic`]), the world beyond one ([`FarSide`]: a router
//! and a far host answering through a tap or tun) and settings ([`Sysctl`],
//! [`IptablesRule`], the latter also inside another namespace). Drop undoes
//! it, also while a failing test unwinds. Names are unique per process and
//! thread (`pt-<pid>-<n>`), and the first guard of a process sweeps what
//! killed runs left behind.
//!
//! Traffic stays on this machine: upstreams live in 198.51.100.0/24 inside
//! namespaces, stand-in NICs free what they are sent, far sides answer from
//! inside the test process, and containers should use a lab DNS server
//! ([`Upstream::serve_dns`] with [`ContainerBuilder::dns`]).
//!
//! Needs root, iproute2, iptables, busybox, dnsmasq, a running dockerd and
//! the `pkttrace-lab` image: `cargo xtask setup` provides all of them.

mod addrs;
mod cmd;
mod docker;
mod engine;
mod far;
mod follow;
mod host;
mod names;
mod netns;
mod nic;
mod pkttrace;
mod schema;

pub use cmd::{route_get, tool, tool_json};
pub use docker::{
    Container, ContainerBuilder, DockerNetwork, LAB_IMAGE, container_exists, docker_network_exists,
};
pub use engine::SecondEngine;
pub use far::{FarAnswer, FarLink, FarSide, Sent, SentKind};
pub use follow::{
    Followed, PRETEND_ABSENT, SCHEMA_VERSION, follow_engines, follow_json, follow_json_lacking,
    follow_unanswered, hop, hops, ip, ip6, kinds, netfilter_hooks,
};
pub use host::{HostRoute, IptablesRule, Sysctl};
pub use netns::{InnerNetns, Netns, NetnsPair, Upstream, link_exists, netns_exists};
pub use nic::{StandInNic, TapNic};
pub use pkttrace::{
    DEFAULT_TIMEOUT, Pkttrace, RunOutput, netfilter_links, netfilter_links_at_least, nft_tables,
    nothing_left_attached, pkttrace, pkttrace_bin, pkttrace_with_env, programs_loaded_at_least,
    trace_tables,
};
pub use schema::check_schema;

/// A DNS query for the A record of `name` with `id`, framed for TCP (two-byte
/// length first), as a `printf` format of octal escapes: busybox has no DNS
/// client over TCP, so `nc` carries it.
pub fn tcp_dns_query_printf(name: &str, id: u16) -> String {
    let mut message = id.to_be_bytes().to_vec();
    message.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.') {
        message.push(label.len() as u8);
        message.extend(label.bytes());
    }
    message.extend([0, 0, 1, 0, 1]); // root, type A, class IN
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend(message);
    framed.iter().map(|b| format!("\\{b:03o}")).collect()
}
