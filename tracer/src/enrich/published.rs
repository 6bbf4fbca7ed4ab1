//! Ports Docker published: which container a host address and port lead to.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{PortBinding, Topology};

/// Where Docker sends a published port: DNAT (or docker-proxy) to a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub container: String,
    pub address: IpAddr,
    pub port: u16,
    /// The namespace its engine runs in, where the port is published (0:
    /// the host's, as recordings made before several engines have it).
    #[serde(default)]
    pub host_netns: u32,
}

/// The container behind `destination` when it is a port Docker published on
/// one of the addresses of its engine's host (or on all of them): the
/// machine's, or the namespace another engine runs in. Loopback is the
/// machine's own engine's first.
pub fn published_target(
    destination: IpAddr,
    port: Option<u16>,
    protocol: &str,
    bindings: &[PortBinding],
    topology: &Topology,
) -> Option<Published> {
    let port = port?;
    let addresses_of = |netns: u32| -> Vec<IpAddr> {
        topology
            .namespace(netns)
            .map(|host| {
                host.interfaces
                    .iter()
                    .flat_map(|i| i.addresses.iter().map(|(a, _)| *a))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut candidates: Vec<(u32, &PortBinding, &super::Container)> = bindings
        .iter()
        .filter(|b| {
            let any_address = matches!(b.host_ip.as_str(), "" | "0.0.0.0" | "::");
            b.host_port == port
                && b.protocol == protocol
                && (any_address || b.host_ip == destination.to_string())
        })
        .filter_map(|b| {
            let container = topology
                .containers
                .iter()
                .find(|c| c.id == b.container_id)?;
            let host = topology.engine_host(&container.engine);
            let on_host = destination.is_loopback() || addresses_of(host).contains(&destination);
            on_host.then_some((host, b, container))
        })
        .collect();
    candidates.sort_by_key(|(host, _, _)| *host != topology.host_netns);
    let (host_netns, binding, container) = candidates.into_iter().next()?;
    // Over IPv6, Docker's DNAT (with its ip6tables) goes to the container's
    // IPv6 address; one without takes IPv4's, as docker-proxy does.
    let address = container
        .networks
        .iter()
        .find_map(|n| n.ipv6.filter(|_| destination.is_ipv6()))
        .or_else(|| container.networks.iter().find_map(|n| n.ip))?;
    Some(Published {
        container: container.name.clone(),
        address,
        port: binding.container_port,
        host_netns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_port_on_a_host_address_leads_to_its_container() {
        use crate::enrich::{Container, ContainerNetwork, Interface, Namespace, Owner};
        let mut topology = Topology {
            namespaces: Vec::new(),
            containers: Vec::new(),
            docker_error: None,
            docker_networks: Vec::new(),
            host_netns: 1,
            inactive_containers: Vec::new(),
            engines: Vec::new(),
        };
        topology.namespaces.push(Namespace {
            inode: 1,
            owner: Owner::Host,
            netns_names: Vec::new(),
            interfaces: vec![Interface {
                ifindex: 9,
                name: "pt-up-host".into(),
                kind: crate::enrich::LinkKind::Veth,
                mtu: None,
                mac: None,
                addresses: vec![(IpAddr::from([198, 51, 100, 254]), 24)],
                up: true,
                lower_up: true,
                master: None,
                peer: None,
                driver: None,
                vxlan: None,
            }],
            routes: Vec::new(),
            ip_forward: Some(true),
            nsfs_path: None,
        });
        topology.containers.push(Container {
            id: "abc123".into(),
            name: "server-1".into(),
            pid: 7,
            netns: 2,
            sandbox_key: String::new(),
            networks: vec![ContainerNetwork {
                network: "bridge".into(),
                ip: Some(IpAddr::from([172, 17, 0, 2])),
                gateway: None,
                mac: None,
                ipv6: None,
                ipv6_gateway: None,
            }],
            dns: Vec::new(),
            network_mode: Default::default(),
            paused: false,
            image: String::new(),
            command: Vec::new(),
            published: Vec::new(),
            engine: String::new(),
        });
        let bindings = [PortBinding {
            container_id: "abc123".into(),
            protocol: "tcp".into(),
            container_port: 80,
            host_ip: "0.0.0.0".into(),
            host_port: 4000,
        }];
        let expected = Published {
            container: "server-1".into(),
            address: IpAddr::from([172, 17, 0, 2]),
            port: 80,
            host_netns: 1,
        };
        assert_eq!(
            published_target(
                [198, 51, 100, 254].into(),
                Some(4000),
                "tcp",
                &bindings,
                &topology
            ),
            Some(expected.clone())
        );
        assert_eq!(
            published_target(
                [127, 0, 0, 1].into(),
                Some(4000),
                "tcp",
                &bindings,
                &topology
            ),
            Some(expected)
        );
        assert_eq!(
            published_target(
                [198, 51, 100, 1].into(),
                Some(4000),
                "tcp",
                &bindings,
                &topology
            ),
            None,
            "not the host"
        );
        assert_eq!(
            published_target(
                [198, 51, 100, 254].into(),
                Some(4001),
                "tcp",
                &bindings,
                &topology
            ),
            None
        );
        assert_eq!(
            published_target(
                [198, 51, 100, 254].into(),
                Some(4000),
                "udp",
                &bindings,
                &topology
            ),
            None
        );
    }
}
