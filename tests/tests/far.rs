//! Proves the far side against what the kernel and independent tools see:
//! busybox ping gets its replies (or not), the kernel learns the router's
//! MAC and a path MTU from what the responder wrote, a raw ICMP socket and a
//! UDP socket's error queue show the errors from the router, byte-correct,
//! and the responder's log matches; nothing outlives the guard.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use etherparse::{Icmpv4Slice, Ipv4HeaderSlice, Ipv4Slice};
use integration_tests::{
    FarAnswer, FarLink, FarSide, Sent, SentKind, link_exists, tool, tool_json,
};
use serde_json::Value;

/// Replies come from a thread of this process: well within this.
const REPLY_WAIT: Duration = Duration::from_secs(3);

/// Any port: the far side answers UDP by its [`FarAnswer`], whatever the port.
const UDP_PORT: u16 = 9;

/// `busybox ping -c 1 -W 2 <dst>`, whatever its exit status.
fn ping(dst: Ipv4Addr) -> Result<Output> {
    Ok(Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "2", &dst.to_string()])
        .output()?)
}

fn ping_answered(dst: Ipv4Addr) -> Result<()> {
    let out = ping(dst)?;
    ensure!(
        out.status.success(),
        "no reply from {dst}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Pings `dst`, which must fail. Busybox prints nothing about the ICMP
/// error that made it fail (checked), hence the raw socket.
fn ping_unanswered(dst: Ipv4Addr) -> Result<()> {
    let out = ping(dst)?;
    ensure!(
        !out.status.success(),
        "{dst} answered: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// `ip -j route get <dst>`'s only entry.
fn route(dst: Ipv4Addr) -> Result<Value> {
    Ok(tool_json("ip", &["-j", "route", "get", &dst.to_string()])?[0].clone())
}

/// Whether any host interface still holds `ip`.
fn address_on_host(ip: Ipv4Addr) -> Result<bool> {
    let addrs = tool("ip", &["-4", "-o", "addr", "show"])?;
    Ok(addrs.contains(&format!("inet {ip}/")))
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// The one's complement sum RFC 1071 checks: 0xffff over a header (or an
/// ICMP message) whose checksum is right.
fn checksum_ok(bytes: &[u8]) -> bool {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// The IP packet of something the far side read or wrote (after the
/// Ethernet header on a tap).
fn ip_of(link: FarLink, frame: &[u8]) -> &[u8] {
    match link {
        FarLink::Tap => &frame[14..],
        FarLink::Tun => frame,
    }
}

/// The IP id of the first packet the far side read that `wanted` accepts.
fn received_ip_id(
    far: &FarSide,
    link: FarLink,
    wanted: impl Fn(&Ipv4Slice) -> bool,
) -> Result<u16> {
    far.received()
        .iter()
        .filter_map(|frame| Ipv4Slice::from_slice(ip_of(link, frame)).ok())
        .find(|ip| ip.header().destination_addr() == far.far_host() && wanted(ip))
        .map(|ip| ip.header().identification())
        .with_context(|| format!("not read: {:02x?}", far.received()))
}

fn is_echo_request(ip: &Ipv4Slice) -> bool {
    ip.payload().payload.first() == Some(&8)
}

fn is_udp(ip: &Ipv4Slice) -> bool {
    ip.header().protocol().0 == libc::IPPROTO_UDP as u8
}

fn errors(far: &FarSide) -> Vec<SentKind> {
    far.sent()
        .into_iter()
        .map(|sent| sent.what)
        .filter(|what| matches!(what, SentKind::IcmpError { .. }))
        .collect()
}

fn count(far: &FarSide, wanted: impl Fn(&SentKind) -> bool) -> usize {
    far.sent().iter().filter(|sent| wanted(&sent.what)).count()
}

/// A raw ICMP socket: every ICMP packet this host receives, with its IP
/// header, as the kernel delivered it (so the IP header checksum passed).
/// Opened before sending, so nothing is missed.
struct IcmpListener(OwnedFd);

impl IcmpListener {
    fn open() -> Result<Self> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("cannot open a raw ICMP socket");
        }
        // SAFETY: just opened, owned by nothing else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The first packet received from `from` that `wanted` accepts, within
    /// [`REPLY_WAIT`].
    fn wait_for(&self, from: Ipv4Addr, wanted: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>> {
        let deadline = Instant::now() + REPLY_WAIT;
        let mut buffer = vec![0u8; 65536];
        while Instant::now() < deadline {
            // SAFETY: the buffer is valid for its length.
            let len = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if len < 0 {
                let err = std::io::Error::last_os_error();
                ensure!(err.kind() == ErrorKind::WouldBlock, "raw socket: {err}");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let packet = &buffer[..len as usize];
            let from_wanted = Ipv4HeaderSlice::from_slice(packet)
                .is_ok_and(|header| header.source_addr() == from);
            if from_wanted && wanted(packet) {
                return Ok(packet.to_vec());
            }
        }
        bail!("no wanted ICMP packet from {from} within {REPLY_WAIT:?}")
    }
}

/// An ICMP error the kernel accepted (checksums, a quoted datagram of this
/// socket) and queued for a UDP socket with `IP_RECVERR`.
#[derive(Debug, PartialEq, Eq)]
struct QueuedError {
    errno: i32,
    icmp_type: u8,
    code: u8,
    /// The next-hop MTU of fragmentation needed.
    info: u32,
    offender: Ipv4Addr,
}

/// A UDP socket connected to `dst` that queues the ICMP errors about its
/// datagrams (`IP_RECVERR`), with the path MTU discovery mode `pmtu_discovery`
/// (`IP_PMTUDISC_DO`: DF set and never fragmented locally).
fn udp_probe(dst: Ipv4Addr, pmtu_discovery: libc::c_int) -> Result<UdpSocket> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    for (option, value) in [
        (libc::IP_RECVERR, 1),
        (libc::IP_MTU_DISCOVER, pmtu_discovery),
    ] {
        // SAFETY: an int option with a pointer to an int of that size.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                option,
                (&value as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set < 0 {
            return Err(std::io::Error::last_os_error()).context("setsockopt");
        }
    }
    socket.connect((dst, UDP_PORT))?;
    Ok(socket)
}

/// The first error `socket`'s error queue gets within [`REPLY_WAIT`].
fn queued_error(socket: &UdpSocket) -> Result<QueuedError> {
    let mut ready = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: 0, // POLLERR is always reported
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let polled = unsafe { libc::poll(&mut ready, 1, REPLY_WAIT.as_millis() as libc::c_int) };
    ensure!(polled == 1, "no error queued within {REPLY_WAIT:?}");

    let mut data = [0u8; 2048];
    let mut control = [0u8; 512];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; all zeroes is a valid value.
    let mut message: libc::msghdr = unsafe { zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = control.len();
    // SAFETY: `message` points at buffers that live through the call.
    if unsafe { libc::recvmsg(socket.as_raw_fd(), &mut message, libc::MSG_ERRQUEUE) } < 0 {
        return Err(std::io::Error::last_os_error()).context("recvmsg(MSG_ERRQUEUE)");
    }
    // SAFETY: the kernel filled `control` with `msg_controllen` bytes of
    // cmsgs; IP_RECVERR's data is a sock_extended_err, then the offender.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&message);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_RECVERR {
                let error = libc::CMSG_DATA(cmsg).cast::<libc::sock_extended_err>();
                let err = error.read_unaligned();
                ensure!(
                    err.ee_origin == libc::SO_EE_ORIGIN_ICMP,
                    "not from ICMP: {}",
                    err.ee_origin
                );
                let offender = libc::SO_EE_OFFENDER(error)
                    .cast::<libc::sockaddr_in>()
                    .read_unaligned();
                return Ok(QueuedError {
                    errno: err.ee_errno as i32,
                    icmp_type: err.ee_type,
                    code: err.ee_code,
                    info: err.ee_info,
                    offender: Ipv4Addr::from(u32::from_be(offender.sin_addr.s_addr)),
                });
            }
            cmsg = libc::CMSG_NXTHDR(&message, cmsg);
        }
    }
    bail!("no IP_RECVERR message in the error queue")
}

/// An ICMP packet the raw socket got from `from`, as the far side promises:
/// both checksums right, TTL 64, DF clear, a nonzero IP id. The ICMP
/// checksum is checked here because nothing else did: the kernel hands raw
/// sockets what passed the IP header's, and busybox ping took an echo reply
/// with a broken one.
fn assert_well_formed<'a>(packet: &'a [u8], from: Ipv4Addr, far: &FarSide) -> Icmpv4Slice<'a> {
    let ip = Ipv4Slice::from_slice(packet).unwrap();
    let header = ip.header();
    assert!(checksum_ok(header.slice()), "IP checksum: {packet:02x?}");
    assert_eq!(header.source_addr(), from);
    assert_eq!(header.destination_addr(), far.host_ip());
    assert_eq!(header.ttl(), 64);
    assert!(!header.dont_fragment());
    assert_ne!(header.identification(), 0);
    let icmp = ip.payload().payload;
    assert!(checksum_ok(icmp), "ICMP checksum: {packet:02x?}");
    Icmpv4Slice::from_slice(icmp).unwrap()
}

/// The far host's echo reply reached the host well formed, exactly as logged.
fn assert_echo_reply_arrived(
    listener: &IcmpListener,
    far: &FarSide,
    link: FarLink,
    sent: &Sent,
) -> Result<()> {
    let reply = listener.wait_for(far.far_host(), |raw| is_icmp(raw, 0))?;
    assert_well_formed(&reply, far.far_host(), far);
    assert_received_as_sent(sent, link, &reply);
    Ok(())
}

/// An ICMP error from the router as the raw socket got it: well formed, and
/// it quotes a packet of the host to the far host with `ip_id`.
fn assert_router_error(packet: &[u8], far: &FarSide, (icmp_type, code): (u8, u8), ip_id: u16) {
    let icmp = assert_well_formed(packet, far.router(), far);
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (icmp_type, code));
    let quoted = Ipv4HeaderSlice::from_slice(icmp.payload()).unwrap();
    assert_eq!(
        icmp.payload().len(),
        quoted.slice().len() + 8,
        "header + 8 bytes"
    );
    assert_eq!(quoted.source_addr(), far.host_ip());
    assert_eq!(quoted.destination_addr(), far.far_host());
    assert_eq!(quoted.identification(), ip_id);
}

/// The IcmpError the far side logged about the packet with `ip_id`.
fn logged_error(far: &FarSide, ip_id: u16) -> Result<SentKind> {
    far.wait_for_sent(REPLY_WAIT, |sent| {
        matches!(sent.what, SentKind::IcmpError { quoted_ip_id, .. } if quoted_ip_id == ip_id)
    })
    .map(|sent| sent.what)
    .with_context(|| format!("no error about IP id {ip_id} logged: {:?}", far.sent()))
}

fn is_icmp(raw: &[u8], icmp_type: u8) -> bool {
    Ipv4Slice::from_slice(raw).is_ok_and(|ip| ip.payload().payload.first() == Some(&icmp_type))
}

/// The reply logged as sent is the one the host received: the raw socket
/// sees the same IP packet.
fn assert_received_as_sent(sent: &Sent, link: FarLink, raw: &[u8]) {
    assert_eq!(ip_of(link, &sent.bytes), raw);
}

#[test]
fn tap_far_host_answers_pings_after_the_router_answers_arp() -> Result<()> {
    let far = FarSide::new(FarLink::Tap, FarAnswer::Echo)?;
    let listener = IcmpListener::open()?;
    ping_answered(far.far_host())?;

    let neighbours = tool_json("ip", &["-j", "neigh", "show", "dev", far.name()])?;
    let router = neighbours
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["dst"] == far.router().to_string())
        .with_context(|| format!("no neighbour entry for the router: {neighbours:#}"))?;
    assert_eq!(far.router_mac(), Some(FarSide::ROUTER_MAC));
    assert_eq!(
        router["lladdr"],
        mac_text(FarSide::ROUTER_MAC),
        "{router:#}"
    );
    let state = router["state"][0].as_str().unwrap_or_default();
    assert!(
        ["REACHABLE", "STALE", "DELAY"].contains(&state),
        "{router:#}"
    );

    let sent = far.sent();
    let arp: Vec<&Sent> = sent
        .iter()
        .filter(|s| matches!(s.what, SentKind::ArpReply { .. }))
        .collect();
    assert_eq!(arp.len(), 1, "{sent:#?}");
    assert_eq!(arp[0].what, SentKind::ArpReply { to: far.host_ip() });
    let echoes: Vec<&Sent> = sent
        .iter()
        .filter(|s| matches!(s.what, SentKind::EchoReply { .. }))
        .collect();
    assert_eq!(echoes.len(), 1, "{sent:#?}");
    let SentKind::EchoReply { from, to, .. } = echoes[0].what else {
        unreachable!()
    };
    assert_eq!((from, to), (far.far_host(), far.host_ip()));
    // Ethernet: to the tap's own MAC, from the router's.
    let tap = tool_json("ip", &["-j", "link", "show", "dev", far.name()])?;
    let tap_mac = tap[0]["address"].as_str().unwrap_or_default();
    assert_eq!(mac_text(echoes[0].bytes[..6].try_into()?), tap_mac);
    assert_eq!(echoes[0].bytes[6..12], FarSide::ROUTER_MAC);

    assert_echo_reply_arrived(&listener, &far, FarLink::Tap, echoes[0])
}

#[test]
fn tun_far_host_answers_pings_without_arp() -> Result<()> {
    let far = FarSide::new(FarLink::Tun, FarAnswer::Echo)?;
    let device = tool_json("ip", &["-d", "-j", "link", "show", "dev", far.name()])?;
    assert_eq!(device[0]["linkinfo"]["info_kind"], "tun", "{device:#}");
    assert_eq!(
        device[0]["linkinfo"]["info_data"]["type"], "tun",
        "{device:#}"
    );
    assert_eq!(device[0]["link_type"], "none", "{device:#}");
    assert_eq!(far.router_mac(), None);

    let listener = IcmpListener::open()?;
    ping_answered(far.far_host())?;
    assert_eq!(count(&far, |w| matches!(w, SentKind::ArpReply { .. })), 0);
    // The kernel keeps no neighbour for a device without link-layer addresses.
    let neighbours = tool_json("ip", &["-j", "neigh", "show", "dev", far.name()])?;
    assert_eq!(neighbours, Value::Array(Vec::new()));
    let sent = far.sent();
    let [echo] = sent.as_slice() else {
        bail!("one echo reply sent: {sent:#?}");
    };
    assert!(
        matches!(echo.what, SentKind::EchoReply { from, .. } if from == far.far_host()),
        "{echo:?}"
    );
    assert_echo_reply_arrived(&listener, &far, FarLink::Tun, echo)?;
    // Bare IPv4 both ways: no Ethernet header, no packet information.
    for packet in far
        .received()
        .iter()
        .chain(far.sent().iter().map(|s| &s.bytes))
    {
        assert_eq!(packet[0] >> 4, 4, "{packet:02x?}");
    }
    Ok(())
}

#[test]
fn tap_router_answers_host_unreachable() -> Result<()> {
    let far = FarSide::new(FarLink::Tap, FarAnswer::HostUnreachable)?;
    let listener = IcmpListener::open()?;
    ping_unanswered(far.far_host())?;

    let echo_id = received_ip_id(&far, FarLink::Tap, is_echo_request)?;
    let raw = listener.wait_for(far.router(), |raw| is_icmp(raw, 3))?;
    assert_router_error(&raw, &far, (3, 1), echo_id);
    let logged = logged_error(&far, echo_id)?;
    assert_eq!(
        logged,
        SentKind::IcmpError {
            from: far.router(),
            to: far.host_ip(),
            icmp_type: 3,
            code: 1,
            quoted_src: far.host_ip(),
            quoted_dst: far.far_host(),
            quoted_protocol: 1,
            quoted_ip_id: echo_id,
            rest_of_header: [0; 4],
        }
    );
    assert_eq!(errors(&far).len(), 1, "{:#?}", far.sent());

    // UDP too; the kernel takes it as the answer to its datagram.
    let socket = udp_probe(far.far_host(), libc::IP_PMTUDISC_WANT)?;
    socket.send(b"anyone?")?;
    let queued = queued_error(&socket)?;
    assert_eq!(
        queued,
        QueuedError {
            errno: libc::EHOSTUNREACH,
            icmp_type: 3,
            code: 1,
            info: 0,
            offender: far.router(),
        }
    );
    let udp_id = received_ip_id(&far, FarLink::Tap, is_udp)?;
    let SentKind::IcmpError {
        quoted_protocol, ..
    } = logged_error(&far, udp_id)?
    else {
        unreachable!()
    };
    assert_eq!(quoted_protocol, 17);
    Ok(())
}

#[test]
fn tun_router_tells_the_next_hop_mtu() -> Result<()> {
    let far = FarSide::new(FarLink::Tun, FarAnswer::FragmentationNeeded { mtu: 1280 })?;
    let socket = udp_probe(far.far_host(), libc::IP_PMTUDISC_DO)?;
    // 1428 bytes with the IP and UDP headers.
    socket.send(&[0; 1400])?;
    let queued = queued_error(&socket)?;
    assert_eq!(
        queued,
        QueuedError {
            errno: libc::EMSGSIZE,
            icmp_type: 3,
            code: 4,
            info: 1280,
            offender: far.router(),
        }
    );
    let udp_id = received_ip_id(&far, FarLink::Tun, is_udp)?;
    let logged = logged_error(&far, udp_id)?;
    assert_eq!(
        logged,
        SentKind::IcmpError {
            from: far.router(),
            to: far.host_ip(),
            icmp_type: 3,
            code: 4,
            quoted_src: far.host_ip(),
            quoted_dst: far.far_host(),
            quoted_protocol: 17,
            quoted_ip_id: udp_id,
            rest_of_header: [0, 0, 0x05, 0x00],
        }
    );

    // The kernel learned the path MTU: it is in the route's cache, and the
    // next datagram that large fails locally.
    let cached = route(far.far_host())?;
    assert_eq!(cached["metrics"][0]["mtu"], 1280, "{cached:#}");
    let err = socket.send(&[0; 1400]).expect_err("sent past the path MTU");
    assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE), "{err}");

    // Echo requests that fit get their replies.
    ping_answered(far.far_host())?;
    assert_eq!(
        count(
            &far,
            |w| matches!(w, SentKind::EchoReply { from, .. } if *from == far.far_host())
        ),
        1
    );
    assert_eq!(errors(&far).len(), 1, "{:#?}", far.sent());
    Ok(())
}

#[test]
fn tap_router_answers_time_exceeded() -> Result<()> {
    let far = FarSide::new(FarLink::Tap, FarAnswer::TimeExceeded)?;
    let listener = IcmpListener::open()?;
    ping_unanswered(far.far_host())?;

    let echo_id = received_ip_id(&far, FarLink::Tap, is_echo_request)?;
    let raw = listener.wait_for(far.router(), |raw| is_icmp(raw, 11))?;
    assert_router_error(&raw, &far, (11, 0), echo_id);
    let logged = logged_error(&far, echo_id)?;
    assert!(
        matches!(
            logged,
            SentKind::IcmpError { from, icmp_type: 11, code: 0, quoted_protocol: 1, .. }
                if from == far.router()
        ),
        "{logged:?}"
    );
    let sent = far
        .sent()
        .into_iter()
        .find(|s| s.what == logged)
        .context("logged")?;
    assert_received_as_sent(&sent, FarLink::Tap, &raw);
    Ok(())
}

/// What must be gone once a far side is: the device, its address, the far
/// host's route.
struct Left {
    name: String,
    host_ip: Ipv4Addr,
    far_host: Ipv4Addr,
}

impl Left {
    fn of(far: &FarSide) -> Self {
        Self {
            name: far.name().to_owned(),
            host_ip: far.host_ip(),
            far_host: far.far_host(),
        }
    }

    fn assert_gone(&self) -> Result<()> {
        assert!(!link_exists(&self.name), "{} is still there", self.name);
        assert!(
            !address_on_host(self.host_ip)?,
            "{} is still on the host",
            self.host_ip
        );
        // A lookup only: nothing is sent.
        let route = route(self.far_host)?;
        assert_ne!(route["dev"], self.name.as_str(), "{route:#}");
        let routes = tool("ip", &["-4", "route", "show"])?;
        let far_block = Ipv4Addr::from(u32::from(self.far_host) & !3);
        assert!(!routes.contains(&format!("{far_block}/30")), "{routes}");
        Ok(())
    }
}

#[test]
fn far_sides_are_removed_after_use() -> Result<()> {
    for link in [FarLink::Tap, FarLink::Tun] {
        let left = {
            let far = FarSide::new(link, FarAnswer::Echo)?;
            let route = route(far.far_host())?;
            assert_eq!(route["dev"], far.name(), "{route:#}");
            assert_eq!(route["gateway"], far.router().to_string(), "{route:#}");
            ping_answered(far.far_host())?;
            Left::of(&far)
        };
        left.assert_gone()?;
    }
    Ok(())
}

#[test]
fn far_sides_are_removed_when_a_test_panics() -> Result<()> {
    let mut left = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let tap = FarSide::new(FarLink::Tap, FarAnswer::HostUnreachable).unwrap();
        let tun = FarSide::new(FarLink::Tun, FarAnswer::TimeExceeded).unwrap();
        // Four /30s at once: each device's and each far host's.
        let blocks: HashSet<u32> = [tap.host_ip(), tap.far_host(), tun.host_ip(), tun.far_host()]
            .into_iter()
            .map(|ip| u32::from(ip) / 4)
            .collect();
        assert_eq!(blocks.len(), 4, "{tap:?} {tun:?}");
        left.extend([Left::of(&tap), Left::of(&tun)]);
        panic!("a failing test");
    }));
    assert!(result.is_err());
    for left in left {
        left.assert_gone()?;
    }
    Ok(())
}
