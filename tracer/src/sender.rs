//! `--probe`: pkttrace sends the packet itself, from inside the source's
//! network namespace, and reads the answer there (so the delivery is seen).

use std::{
    fs::File,
    io::{ErrorKind, Read, Write},
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    path::Path,
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use etherparse::{IcmpEchoHeader, Icmpv4Header, Icmpv4Type};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    setns::enter_network_namespace,
    target::{Destination, Probe},
};

const INTERVAL: Duration = Duration::from_secs(1);

/// What became of one probe, as its socket saw it: the ground truth for
/// the exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The answer asked for: an echo reply, an accepted connection, a datagram.
    Answered,
    /// An answer that says no: a reset, an ICMP error.
    Refused(String),
    /// Nothing came back in time.
    NoAnswer,
}

/// Sends `count` probes, one a second, on a thread that has entered the
/// namespace at `netns_path` (setns only moves the calling thread); each
/// waits up to `answer_timeout` for its answer.
pub fn spawn(
    probe: Probe,
    destination: Destination,
    netns_path: Option<&Path>,
    count: u64,
    answer_timeout: Duration,
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
            outcomes.push(send_one(
                probe,
                destination.address,
                sequence as u16,
                answer_timeout,
            )?);
        }
        Ok(outcomes)
    }))
}

fn send_one(
    probe: Probe,
    address: Ipv4Addr,
    sequence: u16,
    timeout: Duration,
) -> Result<ProbeOutcome> {
    match probe {
        Probe::Icmp => ping(address, sequence, timeout),
        Probe::Udp(port) => {
            // Connected, so an ICMP error about it comes back as an error.
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.connect((address, port))?;
            socket.set_read_timeout(Some(timeout))?;
            if let Err(error) = socket.send(b"pkttrace probe") {
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
            let target = SocketAddr::V4(SocketAddrV4::new(address, port));
            match TcpStream::connect_timeout(&target, timeout) {
                Ok(mut stream) => {
                    // Speak a little HTTP so a web server answers; the trace shows the handshake.
                    let _ = stream.write_all(b"HEAD / HTTP/1.0\r\n\r\n");
                    stream.set_read_timeout(Some(timeout))?;
                    let _ = stream.read(&mut [0u8; 512]);
                    Ok(ProbeOutcome::Answered)
                }
                Err(e) if e.kind() == ErrorKind::TimedOut => Ok(ProbeOutcome::NoAnswer),
                Err(e) if e.kind() == ErrorKind::PermissionDenied => refused_at_send(e),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionRefused
                            | ErrorKind::HostUnreachable
                            | ErrorKind::NetworkUnreachable
                    ) =>
                {
                    Ok(ProbeOutcome::Refused(e.to_string()))
                }
                Err(e) => Err(e).context("TCP probe"),
            }
        }
    }
}

/// A send the kernel refused: EPERM is the sender's own netfilter OUTPUT
/// dropping it (the trace says which rule); anything else is an error.
fn refused_at_send(error: std::io::Error) -> Result<ProbeOutcome> {
    if error.kind() == ErrorKind::PermissionDenied {
        Ok(ProbeOutcome::Refused(error.to_string()))
    } else {
        Err(error.into())
    }
}

/// One ICMP echo request on a raw socket, then waits for the reply or an
/// ICMP error about it.
fn ping(address: Ipv4Addr, sequence: u16, timeout: Duration) -> Result<ProbeOutcome> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .context("cannot open a raw ICMP socket")?;
    let id = std::process::id() as u16;
    let payload = b"pkttrace";
    let header = Icmpv4Header::with_checksum(
        Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq: sequence }),
        payload,
    );
    let mut message = header.to_bytes().to_vec();
    message.extend_from_slice(payload);
    if let Err(error) = socket.send_to(&message, &SocketAddrV4::new(address, 0).into()) {
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
        let Ok(length) = socket.recv(&mut buffer) else {
            return Ok(ProbeOutcome::NoAnswer);
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
