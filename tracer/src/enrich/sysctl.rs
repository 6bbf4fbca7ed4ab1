//! Per-device IPv4 settings of a namespace: what the kernel checks when it
//! forwards a packet or filters its source (`net.ipv4.conf.<dev>.*`).

use serde::{Deserialize, Serialize};
use std::{fs, path::Path};

use crate::setns::enter_network_namespace;

use super::Namespace;

/// The settings of one device, with the namespace-wide `all` values the
/// kernel combines them with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Settings {
    pub device: String,
    /// `net.ipv4.conf.<dev>.forwarding`: the kernel routes a packet that came
    /// in on this device onward only when it is 1.
    pub forwarding: Option<bool>,
    pub all_forwarding: Option<bool>,
    /// `net.ipv4.conf.<dev>.rp_filter`: 0 off, 1 strict, 2 loose; the kernel
    /// uses the higher of it and `all`.
    pub rp_filter: Option<u8>,
    pub all_rp_filter: Option<u8>,
    /// The IPv6 settings (`net.ipv6.conf.<dev>.*`), which have no
    /// reverse path filter.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
}

impl Ipv4Settings {
    /// The sysctl `key` of `device` ("all" for every device) in this
    /// family: `net.ipv4.conf.docker0.forwarding`.
    pub fn name(&self, device: &str, key: &str) -> String {
        sysctl_name(self.ipv6, device, key)
    }

    /// Whether the kernel forwards what comes in on this device: IPv4 checks
    /// the device's own setting, IPv6 (`ip6_forward`) only `all`'s.
    pub fn forwards(&self) -> Option<bool> {
        if self.ipv6 {
            self.all_forwarding
        } else {
            self.forwarding
        }
    }

    /// The name of the forwarding setting the kernel checks (see `forwards`).
    pub fn forwarding_setting(&self) -> String {
        let device = if self.ipv6 { "all" } else { &self.device };
        self.name(device, "forwarding")
    }

    /// The reverse path filter mode the kernel applies on this device.
    pub fn effective_rp_filter(&self) -> Option<u8> {
        match (self.rp_filter, self.all_rp_filter) {
            (Some(device), Some(all)) => Some(device.max(all)),
            (device, all) => device.or(all),
        }
    }
}

/// Reads `device`'s settings inside `namespace` (from a thread that enters
/// it: /proc/sys/net shows the reading thread's namespace); None when the
/// namespace cannot be entered.
pub fn ipv4_settings(
    namespace: &Namespace,
    device: &str,
    ipv6: bool,
    host_netns: u32,
) -> Option<Ipv4Settings> {
    let read = || read_here(device, ipv6);
    if namespace.inode == host_netns {
        return Some(read());
    }
    let netns = fs::File::open(namespace.nsfs_path.as_deref()?).ok()?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_network_namespace(&netns).ok()?;
                Some(read())
            })
            .join()
            .ok()?
    })
}

fn read_here(device: &str, ipv6: bool) -> Ipv4Settings {
    let family = if ipv6 { "ipv6" } else { "ipv4" };
    let value = |dev: &str, key: &str| -> Option<u8> {
        let path = Path::new("/proc/sys/net")
            .join(family)
            .join("conf")
            .join(dev)
            .join(key);
        fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    Ipv4Settings {
        device: device.to_string(),
        forwarding: value(device, "forwarding").map(|v| v != 0),
        all_forwarding: value("all", "forwarding").map(|v| v != 0),
        rp_filter: value(device, "rp_filter"),
        all_rp_filter: value("all", "rp_filter"),
        ipv6,
    }
}

/// `net.ipv4.conf.DEVICE.KEY`, or `net.ipv6.…` for IPv6.
pub fn sysctl_name(ipv6: bool, device: &str, key: &str) -> String {
    let family = if ipv6 { "ipv6" } else { "ipv4" };
    format!("net.{family}.conf.{device}.{key}")
}
