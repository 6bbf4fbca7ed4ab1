//! `--pcap FILE`: the journeys as a pcapng capture, one packet per hop, so
//! Wireshark shows the packet as it was at each point of its way (a NAT's
//! rewrite included). Each namespace/device pair is an interface of its own,
//! named `<namespace>/<device>`; each packet's comment is its hop's sentence.
//!
//! The kernel copied the packet's first bytes from the network header on,
//! so the link layer is Linux's "cooked" SLL2 header (what `tcpdump -i any`
//! writes), made from the hop's device and direction.

use std::{borrow::Cow, collections::HashMap, fs::File, io::BufWriter, path::Path, time::Duration};

use anyhow::{Context, Result};
use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};
use tracer_common::{ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, HEADERS_MAX};

use crate::explain::{Details, Hop, HopCapture, Story};

/// `if_tsresol` 9: timestamps in nanoseconds, as the kernel keeps them.
const NANOSECONDS: u8 = 9;
const SLL2_HEADER_LEN: usize = 20;
/// `ARPHRD_ETHER`, `ARPHRD_LOOPBACK`.
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
/// `PACKET_HOST`, `PACKET_OUTGOING`.
const PACKET_HOST: u8 = 0;
const PACKET_OUTGOING: u8 = 4;
/// An ARP message for IPv4 over Ethernet.
const ARP_LEN: u32 = 28;
const IPV6_HEADER_LEN: u32 = 40;

pub struct PcapFile {
    writer: PcapNgWriter<BufWriter<File>>,
    /// Interface ids by name, in the order they were described.
    interfaces: HashMap<String, u32>,
    /// Wall-clock time of the kernel's monotonic zero (boot), in ns.
    boot_ns: u64,
    packets: u64,
}

impl PcapFile {
    pub fn create(path: &Path, boot_ns: u64) -> Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot write the capture {}", path.display()))?;
        let writer = PcapNgWriter::new(BufWriter::new(file))
            .with_context(|| format!("cannot write the capture {}", path.display()))?;
        Ok(Self {
            writer,
            interfaces: HashMap::new(),
            boot_ns,
            packets: 0,
        })
    }

    /// One packet for each hop of `story` whose packet the kernel copied.
    pub fn story(&mut self, story: &Story) -> Result<()> {
        for (number, hop) in story.hops.iter().enumerate() {
            let Some(capture) = &hop.capture else {
                continue;
            };
            let interface = self.interface(&interface_name(hop))?;
            let comment = format!(
                "#{} hop {} {}: {}",
                story.journey,
                number + 1,
                hop.details.kind(),
                hop.text
            );
            let (data, original_len) = cooked(hop, capture);
            self.writer.write_pcapng_block(EnhancedPacketBlock {
                interface_id: interface,
                timestamp: Duration::from_nanos(self.boot_ns + capture.time_ns),
                original_len,
                data: Cow::Owned(data),
                options: vec![EnhancedPacketOption::Comment(Cow::Owned(comment))],
            })?;
            self.packets += 1;
        }
        Ok(())
    }

    /// Writes what is buffered; the number of packets written.
    pub fn finish(mut self) -> Result<u64> {
        use std::io::Write;
        self.writer
            .get_mut()
            .flush()
            .context("cannot write the capture")?;
        Ok(self.packets)
    }

    fn interface(&mut self, name: &str) -> Result<u32> {
        if let Some(id) = self.interfaces.get(name) {
            return Ok(*id);
        }
        let id = self.interfaces.len() as u32;
        self.writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::LINUX_SLL2,
                snaplen: (SLL2_HEADER_LEN + HEADERS_MAX) as u32,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string())),
                    InterfaceDescriptionOption::IfTsResol(NANOSECONDS),
                ],
            })
            .context("cannot write the capture")?;
        self.interfaces.insert(name.to_string(), id);
        Ok(id)
    }
}

/// `server-1/eth0`, `host/docker0`; a hop on no device is its namespace.
fn interface_name(hop: &Hop) -> String {
    match &hop.device {
        Some(device) => format!("{}/{device}", hop.namespace),
        None => hop.namespace.clone(),
    }
}

/// The SLL2 header and the copied bytes; and how long the packet really
/// was (its IPv4 total length, IPv6's payload length and fixed header), of
/// which the copy may be the start.
fn cooked(hop: &Hop, capture: &HopCapture) -> (Vec<u8>, u32) {
    let bytes = &capture.bytes;
    let field = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let (protocol, length) = match bytes.first().map(|b| b >> 4) {
        Some(4) => (ETH_P_IP, field(2).unwrap_or(bytes.len() as u32)),
        Some(6) => (
            ETH_P_IPV6,
            field(4).map_or(bytes.len() as u32, |payload| payload + IPV6_HEADER_LEN),
        ),
        _ => (ETH_P_ARP, ARP_LEN),
    };
    // Linear data past the packet's end (padding) is not the packet's.
    let captured = &bytes[..bytes.len().min(length as usize)];
    let hatype = if hop.device.as_deref() == Some("lo") {
        ARPHRD_LOOPBACK
    } else {
        ARPHRD_ETHER
    };
    let mut data = Vec::with_capacity(SLL2_HEADER_LEN + captured.len());
    data.extend_from_slice(&protocol.to_be_bytes());
    data.extend_from_slice(&[0, 0]);
    data.extend_from_slice(&capture.ifindex.to_be_bytes());
    data.extend_from_slice(&hatype.to_be_bytes());
    let sent = matches!(
        hop.details,
        Details::Send { .. } | Details::Xmit | Details::Encap { .. }
    );
    data.push(if capture.outgoing || sent {
        PACKET_OUTGOING
    } else {
        PACKET_HOST
    });
    // No link-layer address: the copy starts at the network header.
    data.extend_from_slice(&[0; 9]);
    data.extend_from_slice(captured);
    (
        data,
        SLL2_HEADER_LEN as u32 + length.max(captured.len() as u32),
    )
}

/// Wall-clock time of the kernel's monotonic clock's zero, to stamp packets
/// the kernel timed with `bpf_ktime_get_ns`.
pub fn boot_time_ns() -> u64 {
    let clock = |id| {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec for the call to fill.
        unsafe { libc::clock_gettime(id, &mut now) };
        now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
    };
    clock(libc::CLOCK_REALTIME).saturating_sub(clock(libc::CLOCK_MONOTONIC))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(device: &str, details: Details, capture: HopCapture) -> Hop {
        Hop {
            at_us: 0,
            netns: 1,
            namespace: "server-1".into(),
            device: Some(device.into()),
            text: "sent".into(),
            ttl: 64,
            arp_wait: None,
            details,
            tunnel: None,
            capture: Some(capture),
        }
    }

    #[test]
    fn a_cooked_header_names_protocol_device_and_direction_and_the_true_length() {
        // An IPv4 header saying 84 bytes, of which 24 were copied.
        let mut ip = vec![0x45, 0, 0, 84];
        ip.resize(24, 0);
        let capture = HopCapture {
            time_ns: 5,
            ifindex: 7,
            outgoing: true,
            bytes: ip.clone(),
        };
        let (data, original_len) = cooked(&hop("eth0", Details::Xmit, capture.clone()), &capture);
        assert_eq!(&data[..2], &[0x08, 0x00]);
        assert_eq!(&data[4..8], &7u32.to_be_bytes());
        assert_eq!(&data[8..10], &ARPHRD_ETHER.to_be_bytes());
        assert_eq!(data[10], PACKET_OUTGOING);
        assert_eq!(&data[SLL2_HEADER_LEN..], &ip[..]);
        assert_eq!(original_len, 20 + 84);
    }

    #[test]
    fn an_ipv6_packet_is_cooked_as_ipv6_with_its_true_length() {
        // An IPv6 header saying 64 bytes of payload, of which 8 were copied.
        let mut ipv6 = vec![0x60, 0, 0, 0, 0, 64, 58, 64];
        ipv6.resize(48, 0);
        let capture = HopCapture {
            time_ns: 0,
            ifindex: 3,
            outgoing: true,
            bytes: ipv6,
        };
        let (data, original_len) =
            cooked(&hop("eth0", Details::Receive, capture.clone()), &capture);
        assert_eq!(&data[..2], &[0x86, 0xdd]);
        assert_eq!(data.len(), SLL2_HEADER_LEN + 48);
        assert_eq!(original_len, 20 + 40 + 64);
    }

    #[test]
    fn padding_after_the_packet_is_left_out() {
        // A 28-byte ARP message in a 46-byte minimum frame's linear data.
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
        arp.resize(46, 0xaa);
        let capture = HopCapture {
            time_ns: 0,
            ifindex: 1,
            outgoing: false,
            bytes: arp,
        };
        let (data, original_len) =
            cooked(&hop("eth0", Details::Receive, capture.clone()), &capture);
        assert_eq!(&data[..2], &[0x08, 0x06]);
        assert_eq!(data.len(), SLL2_HEADER_LEN + 28);
        assert_eq!(original_len, 20 + 28);
        assert_eq!(data[10], PACKET_HOST);
    }
}
