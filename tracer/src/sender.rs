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

const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
const INTERVAL: Duration = Duration::from_secs(1);

/// Sends `count` probes, one a second, on a thread that has entered the
/// namespace at `netns_path` (setns only moves the calling thread).
pub fn spawn(
    probe: Probe,
    destination: Destination,
    netns_path: Option<&Path>,
    count: u64,
) -> Result<thread::JoinHandle<Result<()>>> {
    let netns = netns_path
        .map(File::open)
        .transpose()
        .context("cannot open the source's network namespace")?;
    Ok(thread::spawn(move || {
        if let Some(netns) = netns {
            enter_network_namespace(&netns)
                .context("cannot enter the source's network namespace")?;
        }
        for sequence in 0..count {
            if sequence > 0 {
                thread::sleep(INTERVAL);
            }
            send_one(probe, destination.address, sequence as u16)?;
        }
        Ok(())
    }))
}

fn send_one(probe: Probe, address: Ipv4Addr, sequence: u16) -> Result<()> {
    match probe {
        Probe::Icmp => ping(address, sequence),
        Probe::Udp(port) => {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            socket.set_read_timeout(Some(ANSWER_TIMEOUT))?;
            socket.send_to(b"pkttrace probe", (address, port))?;
            let mut answer = [0u8; 1500];
            // No answer (or a port unreachable) is part of what the trace shows.
            let _ = socket.recv_from(&mut answer);
            Ok(())
        }
        Probe::Tcp(port) => {
            let target = SocketAddr::V4(SocketAddrV4::new(address, port));
            match TcpStream::connect_timeout(&target, ANSWER_TIMEOUT) {
                Ok(mut stream) => {
                    // Speak a little HTTP so a web server answers; the trace shows the handshake.
                    let _ = stream.write_all(b"HEAD / HTTP/1.0\r\n\r\n");
                    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
                    let _ = stream.read(&mut [0u8; 512]);
                    Ok(())
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionRefused
                            | ErrorKind::TimedOut
                            | ErrorKind::HostUnreachable
                            | ErrorKind::NetworkUnreachable
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(e).context("TCP probe"),
            }
        }
    }
}

/// One ICMP echo request on a raw socket, then waits for the reply.
fn ping(address: Ipv4Addr, sequence: u16) -> Result<()> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .context("cannot open a raw ICMP socket")?;
    socket.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let id = std::process::id() as u16;
    let payload = b"pkttrace";
    let header = Icmpv4Header::with_checksum(
        Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq: sequence }),
        payload,
    );
    let mut message = header.to_bytes().to_vec();
    message.extend_from_slice(payload);
    socket
        .send_to(&message, &SocketAddrV4::new(address, 0).into())
        .context("cannot send the ICMP probe")?;
    let mut buffer = [MaybeUninit::<u8>::uninit(); 1500];
    let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
    // A raw socket sees every ICMP message of the namespace: wait for ours.
    while std::time::Instant::now() < deadline {
        let Ok(length) = socket.recv(&mut buffer) else {
            break;
        };
        // SAFETY: recv initialised the first `length` bytes.
        let bytes: Vec<u8> = buffer[..length]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        if let Ok((ip, rest)) = etherparse::Ipv4HeaderSlice::from_slice(&bytes)
            .map(|h| (h.to_header(), &bytes[h.slice().len()..]))
            && ip.source == address.octets()
            && let Ok((icmp, _)) = Icmpv4Header::from_slice(rest)
            && icmp.icmp_type == Icmpv4Type::EchoReply(IcmpEchoHeader { id, seq: sequence })
        {
            break;
        }
    }
    Ok(())
}
