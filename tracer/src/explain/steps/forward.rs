//! A namespace routing a packet onward from one device to another, as the
//! forwarding setting of the device it came in on allows.

use crate::{decode::Event, enrich::sysctl_name};

use super::{Decider, Details, StepKind};

#[derive(Clone, Debug, PartialEq)]
pub struct Forwarding {
    pub from_device: String,
    pub to_device: String,
    /// The forwarding setting the kernel checks there, when read:
    /// `net.ipv4.conf.<from_device>.forwarding`, `net.ipv6.conf.all.forwarding`.
    pub ip_forward: Option<bool>,
    /// IPv6's setting (`net.ipv6.conf.…`).
    pub ipv6: bool,
}

impl Decider<'_> {
    /// The packet at FORWARD (`event`), bound for device `out_ifindex`.
    pub(super) fn forward_step(&mut self, event: &Event, out_ifindex: u32) {
        let to_device = self
            .interface(event.netns, out_ifindex)
            .map(|d| d.name.clone())
            .unwrap_or_else(|| format!("if{out_ifindex}"));
        let ipv6 = event.packet.dst.is_ipv6();
        let ip_forward = self
            .facts
            .ip_settings_of(event.netns, &event.ifname, ipv6)
            .and_then(|s| s.forwards());
        let forwarding = Forwarding {
            from_device: event.ifname.to_string(),
            to_device,
            ip_forward,
            ipv6,
        };
        self.push(
            event,
            Some(event.ifname.to_string()),
            StepKind::Forward(forwarding),
        );
    }
}

impl Forwarding {
    pub fn words(&self, ns: &str) -> String {
        let from = &self.from_device;
        // IPv6 forwards by `all` alone (ip6_forward), IPv4 by the input device.
        let name = sysctl_name(
            self.ipv6,
            if self.ipv6 { "all" } else { from },
            "forwarding",
        );
        let setting = match self.ip_forward {
            Some(true) => format!("as {name} = 1 allows"),
            Some(false) => format!("although {name} is 0 now"),
            None => "forwarding setting unknown".to_string(),
        };
        format!(
            "{ns} routes it onward from {from} to {}, {setting}",
            self.to_device
        )
    }

    pub fn details(&self) -> Details {
        Details::Forward {
            from_device: self.from_device.clone(),
            to_device: self.to_device.clone(),
            ip_forward: self.ip_forward,
            ipv6: self.ipv6,
        }
    }
}
