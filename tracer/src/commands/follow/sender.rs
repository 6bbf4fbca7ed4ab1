//! `--probe`: pkttrace sends the packet itself, from inside the source's
//! network namespace, and reads the answer there (so the delivery is seen).

use std::{
    fs::File,
    io::{ErrorKind, Read, Write},
    mem::MaybeUninit,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use etherparse::{IcmpEchoHeader, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{commands::target::Probe, session::Destination, setns::enter_network_namespace};

const INTERVAL: Duration = Duration::from_secs(1);
/// What a probe carries when `--size` does not say.
const DEFAULT_PAYLOAD: &[u8] = b"pkttrace probe";

/// What became of one probe, as its socket saw it: the ground truth for
/// the exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The answer asked for: an echo reply, an accepted connection, a datagram.
    Answered,
    /// An answer that says no: a reset, an ICMP error.
    Refused(String),
    /// The kernel refused to send it (no route, too big for the learned
    /// path MTU, the sender's own firewall): the errno its send returned.
    NotSent(i32),
    /// Nothing came back in time.
    NoAnswer,
}

/// `--size` and `--ttl`: how the probe's packets are made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Payload bytes; the don't-fragment bit is then set, as `ping -M do` does.
    pub size: Option<u16>,
    pub ttl: Option<u8>,
}

/// A send the kernel refused, as the sender saw it: when (the kernel's
/// monotonic clock, as the events are stamped) and the errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub at_ns: u64,
    pub errno: i32,
}

/// Sends `count` probes, one a second, on a thread that has entered the
/// namespace at `netns_path` (setns only moves the calling thread); each
/// waits up to `answer_timeout` for its answer. A send the kernel refuses
/// is also reported on `refusals` at once, so its story is told in turn.
pub fn spawn(
    probe: Probe,
    shape: Shape,
    destination: Destination,
    netns_path: Option<&Path>,
    count: u64,
    answer_timeout: Duration,
    refusals: std::sync::mpsc::Sender<Refusal>,
) -> Result<thread::JoinHandle<Result<Vec<ProbeOutcome>>>> {
    let netns = netns_path
        .map(File::open)
        .transpose()
        .context("cannot open the source's network namespace")?;
    Ok(thread::spawn(move || {
        if let Some(netns) = netns {
            enter_network_namespace(&netns)
                .context("cannot enter the source's network namespace")?;
        }
        let mut outcomes = Vec::new();
        for sequence in 0..count {
            if sequence > 0 {
                thread::sleep(INTERVAL);
            }
            let at_ns = monotonic_ns();
            let outcome = send_one(
                probe,
                shape,
                destination.address,
                sequence as u16,
                answer_timeout,
            )?;
            if let ProbeOutcome::NotSent(errno) = outcome {
                let _ = refusals.send(Refusal { at_ns, errno });
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }))
}

/// CLOCK_MONOTONIC in ns: the clock the kernel's events are stamped with.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The IP length of a probe's packet to `destination` (headers and payload).
pub fn packet_length(probe: Probe, shape: Shape, destination: IpAddr) -> u16 {
    let ip_header = if destination.is_ipv6() { 40 } else { 20 };
    let transport_header = match probe {
        Probe::Icmp | Probe::Udp(_) => 8,
        Probe::Tcp(_) => 20,
    };
    ip_header + transport_header + payload(shape).len() as u16
}

/// The probe's payload: `--size` bytes, or a short default.
fn payload(shape: Shape) -> Vec<u8> {
    match shape.size {
        Some(size) => DEFAULT_PAYLOAD
            .iter()
            .copied()
            .cycle()
            .take(usize::from(size))
            .collect(),
        None => DEFAULT_PAYLOAD.to_vec(),
    }
}

/// Applies `--ttl` (IPv6's hop limit), and with `--size` sets don't
/// fragment (IP_PMTUDISC_DO; an IPv6 sender does not fragment either with
/// IPV6_PMTUDISC_DO), so a packet too big for a link is refused there.
fn shape_socket(socket: &Socket, shape: Shape, ipv6: bool) -> Result<()> {
    if let Some(ttl) = shape.ttl {
        let set = if ipv6 {
            socket.set_unicast_hops_v6(u32::from(ttl))
        } else {
            socket.set_ttl_v4(u32::from(ttl))
        };
        set.context("cannot set the probe's TTL")?;
    }
    if shape.size.is_some() {
        let (level, option, value) = if ipv6 {
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_DO,
            )
        } else {
            (
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_DO,
            )
        };
        // SAFETY: the option takes one int, passed with its size.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                option,
                (&value as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot set don't fragment on the probe's socket");
        }
    }
    Ok(())
}

fn send_one(
    probe: Probe,
    shape: Shape,
    address: IpAddr,
    sequence: u16,
    timeout: Duration,
) -> Result<ProbeOutcome> {
    let ipv6 = address.is_ipv6();
    match probe {
        Probe::Icmp => match address {
            IpAddr::V4(v4) => ping(v4, shape, sequence, timeout),
            IpAddr::V6(v6) => ping6(v6, shape, sequence, timeout),
        },
        Probe::Udp(port) => {
            // Connected, so an ICMP error about it comes back as an error.
            let target = SocketAddr::new(address, port);
            let socket = Socket::new(
                Domain::for_address(target),
                Type::DGRAM,
                Some(Protocol::UDP),
            )?;
            shape_socket(&socket, shape, ipv6)?;
            let any: IpAddr = if ipv6 {
                Ipv6Addr::UNSPECIFIED.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            };
            socket.bind(&SocketAddr::new(any, 0).into())?;
            if let Err(error) = socket.connect(&target.into()) {
                return refused_at_send(error).context("cannot address the UDP probe");
            }
            let socket = UdpSocket::from(socket);
            socket.set_read_timeout(Some(timeout))?;
            if let Err(error) = socket.send(&payload(shape)) {
                return refused_at_send(error).context("cannot send the UDP probe");
            }
            let mut answer = [0u8; 1500];
            Ok(match socket.recv(&mut answer) {
                Ok(_) => ProbeOutcome::Answered,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    ProbeOutcome::NoAnswer
                }
                Err(e) => ProbeOutcome::Refused(e.to_string()),
            })
        }
        Probe::Tcp(port) => {
            let target = SocketAddr::new(address, port);
            let socket = Socket::new(
                Domain::for_address(target),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            shape_socket(&socket, shape, ipv6)?;
            match socket.connect_timeout(&target.into(), timeout) {
                Ok(()) => {
                    let mut stream = TcpStream::from(socket);
                    // Speak a little HTTP so a web server answers; the trace
                    // shows the handshake. `--size` sends that many bytes.
                    let request = match shape.size {
                        Some(_) => payload(shape),
                        None => b"HEAD / HTTP/1.0\r\n\r\n".to_vec(),
                    };
                    let _ = stream.write_all(&request);
                    stream.set_read_timeout(Some(timeout))?;
                    let _ = stream.read(&mut [0u8; 512]);
                    Ok(ProbeOutcome::Answered)
                }
                Err(e) if e.kind() == ErrorKind::TimedOut => Ok(ProbeOutcome::NoAnswer),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    Ok(ProbeOutcome::Refused(e.to_string()))
                }
                // A route the kernel lacks, or an unreachable answer to the SYN.
                Err(e) if e.kind() == ErrorKind::HostUnreachable => {
                    Ok(ProbeOutcome::Refused(e.to_string()))
                }
                Err(e) => refused_at_send(e).context("TCP probe"),
            }
        }
    }
}

/// A send the kernel refused before any packet left the sender: no route
/// (ENETUNREACH, EHOSTUNREACH for an unreachable route, EINVAL for a
/// blackhole, EACCES for a prohibit route), too big for the path MTU it
/// learned (EMSGSIZE), or the sender's own netfilter OUTPUT (EPERM). The
/// trace tells why; anything else is an error.
fn refused_at_send(error: std::io::Error) -> Result<ProbeOutcome> {
    match error.raw_os_error() {
        Some(
            errno @ (libc::ENETUNREACH
            | libc::EHOSTUNREACH
            | libc::EINVAL
            | libc::EACCES
            | libc::EMSGSIZE
            | libc::EPERM),
        ) => Ok(ProbeOutcome::NotSent(errno)),
        _ => Err(error.into()),
    }
}

/// One ICMP echo request on a raw socket, then waits for the reply or an
/// ICMP error about it.
fn ping(address: Ipv4Addr, shape: Shape, sequence: u16, timeout: Duration) -> Result<ProbeOutcome> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .context("cannot open a raw ICMP socket")?;
    shape_socket(&socket, shape, false)?;
    let id = std::process::id() as u16;
    let payload = payload(shape);
    let header = Icmpv4Header::with_checksum(
        Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq: sequence }),
        &payload,
    );
    let mut message = header.to_bytes().to_vec();
    message.extend_from_slice(&payload);
    if let Err(error) = socket.send_to(&message, &SocketAddr::new(address.into(), 0).into()) {
        return refused_at_send(error).context("cannot send the ICMP probe");
    }
    let mut buffer = [MaybeUninit::<u8>::uninit(); 1500];
    let deadline = std::time::Instant::now() + timeout;
    // A raw socket sees every ICMP message of the namespace: wait for ours.
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(ProbeOutcome::NoAnswer);
        }
        socket.set_read_timeout(Some(left))?;
        let length = match socket.recv(&mut buffer) {
            Ok(length) => length,
            // An ICMP fragmentation needed about it sets the socket's error.
            Err(error) if error.raw_os_error() == Some(libc::EMSGSIZE) => {
                return Ok(ProbeOutcome::Refused(error.to_string()));
            }
            Err(_) => return Ok(ProbeOutcome::NoAnswer),
        };
        // SAFETY: recv initialised the first `length` bytes.
        let bytes: Vec<u8> = buffer[..length]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        let Ok(packet) = etherparse::SlicedPacket::from_ip(&bytes) else {
            continue;
        };
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = packet.transport else {
            continue;
        };
        let echo = IcmpEchoHeader { id, seq: sequence };
        match icmp.icmp_type() {
            Icmpv4Type::EchoReply(reply) if reply == echo => return Ok(ProbeOutcome::Answered),
            Icmpv4Type::DestinationUnreachable(_) | Icmpv4Type::TimeExceeded(_)
                if quotes_echo(icmp.payload(), address, echo) =>
            {
                return Ok(ProbeOutcome::Refused(format!("{:?}", icmp.icmp_type())));
            }
            _ => {}
        }
    }
}

/// True when an ICMP error's payload quotes our echo request to `address`.
fn quotes_echo(quoted: &[u8], address: Ipv4Addr, echo: IcmpEchoHeader) -> bool {
    let Ok(inner) = etherparse::Ipv4HeaderSlice::from_slice(quoted) else {
        return false;
    };
    let Ok((icmp, _)) = Icmpv4Header::from_slice(&quoted[inner.slice().len()..]) else {
        return false;
    };
    inner.destination() == address.octets() && icmp.icmp_type == Icmpv4Type::EchoRequest(echo)
}

/// One ICMPv6 echo request on a raw ICMPv6 socket (the kernel fills in the
/// checksum), then waits for the reply or an ICMPv6 error about it. The
/// socket reads ICMPv6 messages without their IPv6 header.
fn ping6(
    address: Ipv6Addr,
    shape: Shape,
    sequence: u16,
    timeout: Duration,
) -> Result<ProbeOutcome> {
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        .context("cannot open a raw ICMPv6 socket")?;
    shape_socket(&socket, shape, true)?;
    let id = std::process::id() as u16;
    let echo = IcmpEchoHeader { id, seq: sequence };
    let payload = payload(shape);
    let mut message = Icmpv6Header::new(Icmpv6Type::EchoRequest(echo))
        .to_bytes()
        .to_vec();
    message.extend_from_slice(&payload);
    if let Err(error) = socket.send_to(&message, &SocketAddr::new(address.into(), 0).into()) {
        return refused_at_send(error).context("cannot send the ICMPv6 probe");
    }
    let mut buffer = [MaybeUninit::<u8>::uninit(); 1500];
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(ProbeOutcome::NoAnswer);
        }
        socket.set_read_timeout(Some(left))?;
        let length = match socket.recv(&mut buffer) {
            Ok(length) => length,
            Err(error) if error.raw_os_error() == Some(libc::EMSGSIZE) => {
                return Ok(ProbeOutcome::Refused(error.to_string()));
            }
            Err(_) => return Ok(ProbeOutcome::NoAnswer),
        };
        // SAFETY: recv initialised the first `length` bytes.
        let bytes: Vec<u8> = buffer[..length]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        let Ok(icmp) = etherparse::Icmpv6Slice::from_slice(&bytes) else {
            continue;
        };
        match icmp.icmp_type() {
            Icmpv6Type::EchoReply(reply) if reply == echo => return Ok(ProbeOutcome::Answered),
            Icmpv6Type::DestinationUnreachable(_)
            | Icmpv6Type::PacketTooBig { .. }
            | Icmpv6Type::TimeExceeded(_)
            | Icmpv6Type::ParameterProblem(_)
                if quotes_echo6(icmp.payload(), address, echo) =>
            {
                return Ok(ProbeOutcome::Refused(format!("{:?}", icmp.icmp_type())));
            }
            _ => {}
        }
    }
}

/// True when an ICMPv6 error's payload quotes our echo request to `address`.
fn quotes_echo6(quoted: &[u8], address: Ipv6Addr, echo: IcmpEchoHeader) -> bool {
    let Ok(inner) = etherparse::Ipv6HeaderSlice::from_slice(quoted) else {
        return false;
    };
    let Ok(icmp) = etherparse::Icmpv6Slice::from_slice(&quoted[inner.slice().len()..]) else {
        return false;
    };
    inner.destination_addr() == address && icmp.icmp_type() == Icmpv6Type::EchoRequest(echo)
}
