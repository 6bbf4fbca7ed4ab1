//! The world beyond a NIC: a tap or tun device held open by the test, whose
//! reader answers as the router at the other end of its /30 and a host
//! behind that router would. It logs what it wrote, so a test can hold
//! pkttrace's story of a reply or an ICMP error against what was really sent.
//!
//! Both /30s come from the upstreams' allocator: the device's (host end on
//! the device, the router at the other end) and the far host's, routed via
//! the router. Nothing on the host holds the far host's address, so packets
//! to it leave through the device as through a real NIC.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use etherparse::{
    ArpEthIpv4Packet, ArpOperation, ArpPacketSlice, EtherType, Ethernet2Header,
    Ethernet2HeaderSlice, Icmpv4Header, Icmpv4Slice, Icmpv4Type, IpHeaders, IpNumber, Ipv4Header,
    Ipv4Slice, PacketBuilder, icmpv4::DestUnreachableHeader, icmpv4::TimeExceededCode,
};

use crate::addrs::{Block, with_free_block};
use crate::cmd::{cmd, run};
use crate::names::unique;
use crate::nic::{HeldDevice, configure, ensure_routed, locked, open_device, wait_for};

/// The TTL of everything the far side sends, as a fresh Linux host's.
const TTL: u8 = 64;

/// What the far side is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FarLink {
    /// Ethernet frames; the router answers ARP for itself.
    Tap,
    /// Bare IPv4 packets (`IFF_TUN | IFF_NO_PI`): no link layer, no ARP.
    Tun,
}

impl FarLink {
    fn device_kind(self) -> libc::c_int {
        match self {
            Self::Tap => libc::IFF_TAP,
            Self::Tun => libc::IFF_TUN,
        }
    }
}

/// How the far side answers a packet to [`FarSide::far_host`] (ICMP echo
/// requests, UDP and TCP alike unless said). Nothing else gets an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FarAnswer {
    /// The far host answers echo requests with echo replies; other packets
    /// get nothing.
    Echo,
    /// The router answers every IPv4 packet with ICMP destination
    /// unreachable, code 1 (host unreachable), quoting its IP header and
    /// first 8 bytes, as RFC 792 routers do.
    HostUnreachable,
    /// The router answers with ICMP time exceeded (type 11 code 0), quoting
    /// as above, as if the TTL ran out beyond it.
    TimeExceeded,
    /// Packets with DF set and an IP total length above `mtu` get ICMP
    /// fragmentation needed (type 3 code 4) from the router, with `mtu` as
    /// the next-hop MTU (RFC 1191); smaller echo requests get echo replies
    /// from the far host.
    FragmentationNeeded { mtu: u16 },
}

/// What the responder wrote to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub what: SentKind,
    /// As written: with an Ethernet header on a tap, bare IP on a tun.
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentKind {
    /// The router is at [`FarSide::ROUTER_MAC`], told to `to`.
    ArpReply { to: Ipv4Addr },
    EchoReply {
        from: Ipv4Addr,
        to: Ipv4Addr,
        id: u16,
        seq: u16,
    },
    IcmpError {
        from: Ipv4Addr,
        to: Ipv4Addr,
        icmp_type: u8,
        code: u8,
        /// Of the quoted packet.
        quoted_src: Ipv4Addr,
        quoted_dst: Ipv4Addr,
        quoted_protocol: u8,
        quoted_ip_id: u16,
        /// The 4 bytes after type, code and checksum, e.g. the next-hop MTU.
        rest_of_header: [u8; 4],
    },
}

/// A tap or tun device whose reader plays the router and the far host
/// beyond it. Drop stops the reader and closes the device, which deletes it
/// with its address and the far host's route, also while a test unwinds.
#[derive(Debug)]
pub struct FarSide {
    device: HeldDevice,
    link: FarLink,
    block: Block,
    far_block: Block,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl FarSide {
    /// The router's link-layer address on a tap (locally administered).
    pub const ROUTER_MAC: [u8; 6] = [0x02, 0x70, 0x74, 0x00, 0x00, 0x02];

    /// A device on a fresh /30, up, with a second /30 routed through it to
    /// the router; proven with `ip route get` before it returns.
    pub fn new(link: FarLink, answer: FarAnswer) -> Result<Self> {
        // Named first: the first name of a process sweeps killed runs, whose
        // devices may still hold blocks.
        let name = unique();
        // Until the reader takes it, closing `device` is what deletes the device.
        let (device, block) = with_free_block(|block| {
            let device = open_device(&name, link.device_kind())?;
            configure(&name, block)?;
            Ok((device, block))
        })?;
        // The device's address holds its block; the route holds the far one.
        let router = block.peer;
        let far_block = with_free_block(|far_block| {
            run(&mut cmd(
                "ip",
                [
                    "route",
                    "add",
                    &far_block.network_cidr(),
                    "via",
                    &router.to_string(),
                    "dev",
                    &name,
                ],
            ))?;
            Ok(far_block)
        })?;
        ensure_routed(far_block.host, &name, Some(router))?;

        let received = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let mut responder = Responder {
            link,
            answer,
            router,
            far_host: far_block.host,
            ip_id: 0,
        };
        let (keep_received, keep_sent) = (Arc::clone(&received), Arc::clone(&sent));
        let reader_name = name.clone();
        let device = HeldDevice::spawn(name, device, move |device, frame| {
            locked(&keep_received).push(frame.to_vec());
            let Some(reply) = responder.reply_to(frame) else {
                return;
            };
            match device.write_all(&reply.bytes) {
                Ok(()) => locked(&keep_sent).push(reply),
                Err(err) => eprintln!("lab {reader_name} responder: cannot send {reply:?}: {err}"),
            }
        })?;
        Ok(Self {
            device,
            link,
            block,
            far_block,
            received,
            sent,
        })
    }

    /// The device.
    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// The host's address on the device.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.block.host
    }

    /// The other address of the device's /30: the router beyond the device.
    pub fn router(&self) -> Ipv4Addr {
        self.block.peer
    }

    /// [`Self::ROUTER_MAC`] on a tap; a tun has no link-layer addresses.
    pub fn router_mac(&self) -> Option<[u8; 6]> {
        (self.link == FarLink::Tap).then_some(Self::ROUTER_MAC)
    }

    /// A host behind the router, in a /30 of its own routed via
    /// [`Self::router`]; nothing on this machine holds the address.
    pub fn far_host(&self) -> Ipv4Addr {
        self.far_block.host
    }

    /// What the responder wrote, oldest first.
    pub fn sent(&self) -> Vec<Sent> {
        locked(&self.sent).clone()
    }

    /// Every frame (tap: Ethernet) or packet (tun: IP) read, oldest first,
    /// answered or not.
    pub fn received(&self) -> Vec<Vec<u8>> {
        locked(&self.received).clone()
    }

    /// The first reply sent (also before this call) that `wanted` accepts,
    /// waiting up to `timeout` for it.
    pub fn wait_for_sent(&self, timeout: Duration, wanted: impl Fn(&Sent) -> bool) -> Option<Sent> {
        wait_for(&self.sent, timeout, wanted)
    }
}

/// The router and the far host: what they answer to what the kernel sends
/// through the device.
struct Responder {
    link: FarLink,
    answer: FarAnswer,
    router: Ipv4Addr,
    far_host: Ipv4Addr,
    /// The IP id of the last packet sent.
    ip_id: u16,
}

impl Responder {
    /// The answer to a frame (tap) or packet (tun), if it gets one.
    fn reply_to(&mut self, frame: &[u8]) -> Option<Sent> {
        if self.link == FarLink::Tun {
            let (what, bytes) = self.reply_to_ip(frame)?;
            return Some(Sent { what, bytes });
        }
        let ethernet = Ethernet2HeaderSlice::from_slice(frame).ok()?;
        let payload = &frame[Ethernet2Header::LEN..];
        let (ether_type, (what, packet)) = match ethernet.ether_type() {
            EtherType::ARP => (EtherType::ARP, self.arp_reply(payload)?),
            EtherType::IPV4 => (EtherType::IPV4, self.reply_to_ip(payload)?),
            _ => return None,
        };
        let header = Ethernet2Header {
            source: FarSide::ROUTER_MAC,
            destination: ethernet.source(),
            ether_type,
        };
        let bytes = [header.to_bytes().as_slice(), &packet].concat();
        Some(Sent { what, bytes })
    }

    /// The router is-at [`FarSide::ROUTER_MAC`], to whoever asks for it.
    fn arp_reply(&self, arp: &[u8]) -> Option<(SentKind, Vec<u8>)> {
        let request = ArpPacketSlice::from_slice(arp)
            .ok()?
            .to_packet()
            .try_eth_ipv4()
            .ok()?;
        if request.operation != ArpOperation::REQUEST || request.target_ipv4_addr() != self.router {
            return None;
        }
        let reply = ArpEthIpv4Packet {
            operation: ArpOperation::REPLY,
            sender_mac: FarSide::ROUTER_MAC,
            sender_ipv4: self.router.octets(),
            target_mac: request.sender_mac,
            target_ipv4: request.sender_ipv4,
        };
        let to = request.sender_ipv4_addr();
        Some((SentKind::ArpReply { to }, reply.to_bytes().to_vec()))
    }

    /// The answer to an IPv4 packet to the far host, as [`FarAnswer`] says.
    fn reply_to_ip(&mut self, packet: &[u8]) -> Option<(SentKind, Vec<u8>)> {
        let ip = Ipv4Slice::from_slice(packet).ok()?;
        let header = ip.header();
        if header.destination_addr() != self.far_host {
            return None;
        }
        let error = match self.answer {
            FarAnswer::Echo => return self.echo_reply(&ip),
            FarAnswer::HostUnreachable => {
                Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Host)
            }
            FarAnswer::TimeExceeded => {
                Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)
            }
            FarAnswer::FragmentationNeeded { mtu }
                if header.dont_fragment() && header.total_len() > mtu =>
            {
                Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: mtu,
                })
            }
            FarAnswer::FragmentationNeeded { .. } => return self.echo_reply(&ip),
        };
        self.icmp_error(&ip, error)
    }

    /// The far host's echo reply to an (unfragmented) echo request.
    fn echo_reply(&mut self, ip: &Ipv4Slice) -> Option<(SentKind, Vec<u8>)> {
        if ip.payload_ip_number() != IpNumber::ICMP || ip.is_payload_fragmented() {
            return None;
        }
        let icmp = Icmpv4Slice::from_slice(ip.payload().payload).ok()?;
        let Icmpv4Type::EchoRequest(echo) = icmp.icmp_type() else {
            return None;
        };
        let (from, to) = (self.far_host, ip.header().source_addr());
        let bytes = self.ipv4_icmp(from, to, Icmpv4Type::EchoReply(echo), icmp.payload())?;
        let what = SentKind::EchoReply {
            from,
            to,
            id: echo.id,
            seq: echo.seq,
        };
        Some((what, bytes))
    }

    /// The router's ICMP error about `ip`, quoting its header and the first
    /// 8 bytes of its payload.
    fn icmp_error(&mut self, ip: &Ipv4Slice, error: Icmpv4Type) -> Option<(SentKind, Vec<u8>)> {
        let header = ip.header();
        let payload = ip.payload().payload;
        let quoted = [header.slice(), &payload[..payload.len().min(8)]].concat();
        let fields = Icmpv4Header::new(error.clone()).to_bytes();
        let (from, to) = (self.router, header.source_addr());
        let bytes = self.ipv4_icmp(from, to, error, &quoted)?;
        let what = SentKind::IcmpError {
            from,
            to,
            icmp_type: fields[0],
            code: fields[1],
            quoted_src: header.source_addr(),
            quoted_dst: header.destination_addr(),
            quoted_protocol: header.protocol().0,
            quoted_ip_id: header.identification(),
            rest_of_header: fields[4..8].try_into().ok()?,
        };
        Some((what, bytes))
    }

    /// An IPv4 packet carrying ICMP, with both checksums, TTL 64, DF clear
    /// and a fresh nonzero IP id.
    fn ipv4_icmp(
        &mut self,
        from: Ipv4Addr,
        to: Ipv4Addr,
        icmp: Icmpv4Type,
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        self.ip_id = self.ip_id.checked_add(1).unwrap_or(1);
        let header = Ipv4Header {
            source: from.octets(),
            destination: to.octets(),
            time_to_live: TTL,
            identification: self.ip_id,
            dont_fragment: false,
            ..Default::default()
        };
        let builder = PacketBuilder::ip(IpHeaders::Ipv4(header, Default::default())).icmpv4(icmp);
        let mut bytes = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut bytes, payload).ok()?;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use etherparse::{
        EtherType, Icmpv4Header, Icmpv4Type, IpNumber, Ipv4Header, LinkSlice, NetSlice,
        PacketBuilder, SlicedPacket, TransportSlice,
    };

    use super::{FarAnswer, FarLink, FarSide, Responder, SentKind};

    const HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 5);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 6);
    const FAR_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
    const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];

    fn responder(link: FarLink, answer: FarAnswer) -> Responder {
        Responder {
            link,
            answer,
            router: ROUTER,
            far_host: FAR_HOST,
            ip_id: 0,
        }
    }

    fn echo_request(to: Ipv4Addr, data: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2(HOST_MAC, [0xff; 6])
            .ipv4(HOST.octets(), to.octets(), 64)
            .icmpv4_echo_request(0x1234, 7);
        let mut frame = Vec::new();
        builder.write(&mut frame, data).unwrap();
        frame
    }

    /// What the kernel checks and the brief promises: both checksums right,
    /// TTL 64, DF clear, a nonzero IP id.
    fn assert_well_formed(ip: &etherparse::Ipv4Slice) {
        let header = ip.header().to_header();
        assert_eq!(header.header_checksum, header.calc_header_checksum());
        assert_eq!((header.time_to_live, header.dont_fragment), (64, false));
        assert_ne!(header.identification, 0);
        assert_eq!(header.protocol, IpNumber::ICMP);
        let (icmp, payload) = Icmpv4Header::from_slice(ip.payload().payload).unwrap();
        let expected = Icmpv4Header::with_checksum(icmp.icmp_type.clone(), payload).checksum;
        assert_eq!(icmp.checksum, expected);
    }

    #[test]
    fn the_far_host_echoes_on_a_tap_and_nothing_else_is_answered() {
        let mut tap = responder(FarLink::Tap, FarAnswer::Echo);
        let request = echo_request(FAR_HOST, b"ping data");
        let sent = tap.reply_to(&request).expect("an echo reply");
        assert_eq!(
            sent.what,
            SentKind::EchoReply {
                from: FAR_HOST,
                to: HOST,
                id: 0x1234,
                seq: 7
            }
        );
        let reply = SlicedPacket::from_ethernet(&sent.bytes).unwrap();
        let Some(LinkSlice::Ethernet2(ethernet)) = &reply.link else {
            panic!("no Ethernet header: {reply:?}");
        };
        assert_eq!(ethernet.destination(), HOST_MAC);
        assert_eq!(ethernet.source(), FarSide::ROUTER_MAC);
        assert_eq!(ethernet.ether_type(), EtherType::IPV4);
        let Some(NetSlice::Ipv4(ip)) = &reply.net else {
            panic!("no IPv4: {reply:?}");
        };
        assert_well_formed(ip);
        let Some(TransportSlice::Icmpv4(icmp)) = &reply.transport else {
            panic!("no ICMP: {reply:?}");
        };
        assert!(matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(_)));
        assert_eq!(icmp.payload(), b"ping data");

        // Each packet gets its own id; other destinations get nothing.
        let again = tap.reply_to(&request).unwrap();
        assert_ne!(again.bytes[14 + 4..14 + 6], sent.bytes[14 + 4..14 + 6]);
        assert_eq!(tap.reply_to(&echo_request(ROUTER, b"")), None);
    }

    #[test]
    fn the_router_answers_arp_for_itself_only() {
        let mut tap = responder(FarLink::Tap, FarAnswer::Echo);
        let who_has = |target: Ipv4Addr| {
            let mut frame = Vec::new();
            PacketBuilder::ethernet2(HOST_MAC, [0xff; 6])
                .arp(
                    etherparse::ArpEthIpv4Packet {
                        operation: etherparse::ArpOperation::REQUEST,
                        sender_mac: HOST_MAC,
                        sender_ipv4: HOST.octets(),
                        target_mac: [0; 6],
                        target_ipv4: target.octets(),
                    }
                    .into(),
                )
                .write(&mut frame)
                .unwrap();
            frame
        };
        let sent = tap.reply_to(&who_has(ROUTER)).expect("an ARP reply");
        assert_eq!(sent.what, SentKind::ArpReply { to: HOST });
        let reply = SlicedPacket::from_ethernet(&sent.bytes).unwrap();
        let Some(NetSlice::Arp(arp)) = &reply.net else {
            panic!("no ARP: {reply:?}");
        };
        let arp = arp.to_packet().try_eth_ipv4().unwrap();
        assert_eq!(arp.operation, etherparse::ArpOperation::REPLY);
        assert_eq!(
            (arp.sender_mac, arp.sender_ipv4_addr()),
            (FarSide::ROUTER_MAC, ROUTER)
        );
        assert_eq!((arp.target_mac, arp.target_ipv4_addr()), (HOST_MAC, HOST));
        assert_eq!(sent.bytes[..6], HOST_MAC);
        assert_eq!(tap.reply_to(&who_has(FAR_HOST)), None);
    }

    #[test]
    fn the_router_quotes_what_is_too_big_for_its_next_hop() {
        let mut tun = responder(FarLink::Tun, FarAnswer::FragmentationNeeded { mtu: 1280 });
        let mut big = Vec::new();
        let builder = PacketBuilder::ip(etherparse::IpHeaders::Ipv4(
            Ipv4Header {
                source: HOST.octets(),
                destination: FAR_HOST.octets(),
                time_to_live: 64,
                identification: 0xbeef,
                dont_fragment: true,
                ..Default::default()
            },
            Default::default(),
        ))
        .udp(40000, 9);
        builder.write(&mut big, &[0; 1400]).unwrap();
        let sent = tun.reply_to(&big).expect("fragmentation needed");
        assert_eq!(
            sent.what,
            SentKind::IcmpError {
                from: ROUTER,
                to: HOST,
                icmp_type: 3,
                code: 4,
                quoted_src: HOST,
                quoted_dst: FAR_HOST,
                quoted_protocol: 17,
                quoted_ip_id: 0xbeef,
                rest_of_header: [0, 0, 0x05, 0x00],
            }
        );
        let reply = SlicedPacket::from_ip(&sent.bytes).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &reply.net else {
            panic!("no IPv4: {reply:?}");
        };
        assert_well_formed(ip);
        // The quoted IP header and the UDP header.
        assert_eq!(ip.payload().payload[8..], big[..28]);

        // A small echo request still gets its reply.
        let small = &echo_request(FAR_HOST, b"small")[14..];
        let echoed = tun.reply_to(small).expect("an echo reply");
        assert!(matches!(
            echoed.what,
            SentKind::EchoReply { from: FAR_HOST, .. }
        ));
    }
}
