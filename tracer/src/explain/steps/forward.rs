//! A namespace routing a packet onward from one device to another, as the
//! forwarding setting of the device it came in on allows.

use crate::{decode::Event, enrich::sysctl_name};

use super::{Decider, Details, StepKind};

#[derive(Clone, Debug, PartialEq)]
pub struct Forwarding {
    pub from_device: String,
    pub to_device: String,
    /// `net.ipv4.conf.<from_device>.forwarding` there, when read.
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
        // The kernel checks the input device's own setting, in this namespace.
        let ip_forward = self
            .facts
            .ipv4_of(event.netns, &event.ifname)
            .and_then(|s| s.forwarding);
        let forwarding = Forwarding {
            from_device: event.ifname.to_string(),
            to_device,
            ip_forward,
            ipv6: event.packet.dst.is_ipv6(),
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
        let name = sysctl_name(self.ipv6, from, "forwarding");
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
