//! Stand-ins for a real NIC: devices through which packets leave the host
//! and are freed, with nothing traced beyond them. This kernel has no dummy
//! driver; an ifb frees what it is asked to send, a tap hands it to a reader.
//!
//! Both get a /30 of 198.51.100.0/24 from the upstreams' allocator. Only the
//! host end is on the device: the other address (`next_hop`) is reached
//! through it and never answers. IPv6 is off on them, so that only the
//! test's own packets leave through them (no router solicitations, no MLD).

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::addrs::{Block, with_free_block};
use crate::cmd::{cmd, run};
use crate::names::{delete_link, unique};
use crate::netns::link_exists;

/// How long the tap reader waits for a frame before it looks at its stop flag.
const READER_POLL: Duration = Duration::from_millis(50);

/// An ifb device with the host end of a /30: it frees every packet it is
/// asked to transmit (nothing redirected them to it with tc), as a NIC's
/// driver does after sending. It has no ARP, so packets to [`next_hop`]
/// leave at once. Drop deletes it, and its address and route with it.
///
/// [`next_hop`]: StandInNic::next_hop
#[derive(Debug)]
pub struct StandInNic {
    name: String,
    block: Block,
}

impl StandInNic {
    /// An ifb on a fresh /30, up.
    pub fn new() -> Result<Self> {
        // Named first: the first name of a process sweeps killed runs, whose
        // devices may still hold blocks.
        let name = unique();
        with_free_block(|block| {
            run(&mut cmd("ip", ["link", "add", &name, "type", "ifb"]))?;
            let nic = Self { name, block };
            bring_up(&nic.name, block)?;
            Ok(nic)
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the device.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.block.host
    }

    /// The other address of the /30: packets to it leave through the device
    /// and are freed there.
    pub fn next_hop(&self) -> Ipv4Addr {
        self.block.peer
    }
}

impl Drop for StandInNic {
    fn drop(&mut self) {
        delete_link(&self.name);
    }
}

/// A tap device held open by this process, with the host end of a /30. A
/// reader thread takes every frame the kernel sends through it (that frees
/// the packet) and keeps it for [`frames`]. Without a static neighbour the
/// kernel asks for [`next_hop`] by ARP, nothing answers, and the queued
/// packets are dropped after the retries, as behind a real NIC whose next
/// hop is dead. Drop stops the reader and closes the tap, which deletes it.
///
/// [`frames`]: TapNic::frames
/// [`next_hop`]: TapNic::next_hop
#[derive(Debug)]
pub struct TapNic {
    name: String,
    block: Block,
    stop: Arc<AtomicBool>,
    /// Gives the tap back when stopped: it stays open as long as the reader may run.
    reader: Option<JoinHandle<File>>,
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl TapNic {
    /// The link-layer address [`TapNic::with_static_neighbour`] gives the
    /// next hop (locally administered).
    pub const NEIGHBOUR_MAC: [u8; 6] = [0x02, 0x70, 0x74, 0x00, 0x00, 0x01];

    /// A tap whose next hop never answers ARP.
    pub fn new() -> Result<Self> {
        Self::create(false)
    }

    /// A tap whose next hop is a permanent neighbour at [`Self::NEIGHBOUR_MAC`],
    /// so packets leave without ARP.
    pub fn with_static_neighbour() -> Result<Self> {
        Self::create(true)
    }

    fn create(static_neighbour: bool) -> Result<Self> {
        // Named first, as for StandInNic: the sweep may free blocks.
        let name = unique();
        with_free_block(|block| {
            let tap = open_tap(&name)?;
            let stop = Arc::new(AtomicBool::new(false));
            let frames = Arc::new(Mutex::new(Vec::new()));
            let reader = {
                let (stop, frames) = (Arc::clone(&stop), Arc::clone(&frames));
                thread::Builder::new()
                    .name(format!("{name} reader"))
                    .spawn(move || read_frames(tap, &stop, &frames))?
            };
            let nic = Self {
                name,
                block,
                stop,
                reader: Some(reader),
                frames,
            };
            bring_up(&nic.name, block)?;
            if static_neighbour {
                let mac = Self::NEIGHBOUR_MAC.map(|b| format!("{b:02x}")).join(":");
                run(&mut cmd(
                    "ip",
                    [
                        "neigh",
                        "replace",
                        &block.peer.to_string(),
                        "lladdr",
                        &mac,
                        "dev",
                        &nic.name,
                        "nud",
                        "permanent",
                    ],
                ))?;
            }
            Ok(nic)
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the device.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.block.host
    }

    /// The other address of the /30: packets to it go to the reader.
    pub fn next_hop(&self) -> Ipv4Addr {
        self.block.peer
    }

    /// Every frame read so far, oldest first, as raw Ethernet bytes.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The first frame read (also before this call) that `wanted` accepts,
    /// waiting up to `timeout` for it.
    pub fn wait_for_frame(
        &self,
        timeout: Duration,
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .frames
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|frame| wanted(frame))
                .cloned();
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TapNic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            // Closing the tap's only descriptor deletes the (non-persistent) device.
            drop(reader.join());
        }
        // Only there if something else made it persistent.
        if link_exists(&self.name) {
            delete_link(&self.name);
        }
    }
}

/// Creates the tap `name` (Ethernet frames, no packet-info header) and
/// returns its descriptor, non-blocking for the reader's poll and
/// close-on-exec so no child process keeps the device alive.
fn open_tap(name: &str) -> Result<File> {
    // SAFETY: ifreq is plain data, for which all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    ensure!(
        name.len() < request.ifr_name.len(),
        "tap name {name} too long"
    );
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: a plain open(2) of a constant path; the result is checked.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot open /dev/net/tun");
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let tap = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `request` is.
    if unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETIFF, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot create tap {name}"));
    }
    Ok(tap)
}

/// Keeps every frame the kernel sends through `tap` until `stop` is set,
/// then hands the tap back so that closing it is the caller's.
fn read_frames(mut tap: File, stop: &AtomicBool, frames: &Mutex<Vec<Vec<u8>>>) -> File {
    let mut buffer = vec![0; 65536];
    let timeout = READER_POLL.as_millis() as libc::c_int;
    while !stop.load(Ordering::Relaxed) {
        let mut ready = libc::pollfd {
            fd: tap.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut ready, 1, timeout) } <= 0 {
            continue;
        }
        loop {
            match tap.read(&mut buffer) {
                Ok(len) => frames
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(buffer[..len].to_vec()),
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    eprintln!("lab tap reader: {err}");
                    return tap;
                }
            }
        }
    }
    tap
}

/// IPv6 off, the host address on, the link up; then proves that packets to
/// the other end of the block leave through `device`, before anyone sends.
fn bring_up(device: &str, block: Block) -> Result<()> {
    let ipv6 = format!("/proc/sys/net/ipv6/conf/{device}/disable_ipv6");
    fs::write(&ipv6, "1").with_context(|| format!("cannot write {ipv6}"))?;
    run(&mut cmd(
        "ip",
        ["addr", "add", &block.host_cidr(), "dev", device],
    ))?;
    run(&mut cmd("ip", ["link", "set", device, "up"]))?;
    let route = run(&mut cmd(
        "ip",
        ["-j", "route", "get", &block.peer.to_string()],
    ))?;
    let leaves_through = route_device(&route)
        .with_context(|| format!("unreadable `ip -j route get` output: {route}"))?;
    if leaves_through != device {
        bail!(
            "{} is routed through {leaves_through}, not {device}",
            block.peer
        );
    }
    Ok(())
}

/// The device in `ip -j route get` output.
fn route_device(json: &str) -> Option<String> {
    let routes: Value = serde_json::from_str(json).ok()?;
    Some(routes.get(0)?.get("dev")?.as_str()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::route_device;

    #[test]
    fn reads_the_device_of_a_route_lookup() {
        let json = r#"[{"dst":"198.51.100.6","dev":"pt-1f3a-0","prefsrc":"198.51.100.5","flags":[],"uid":0,"cache":[]}]"#;
        assert_eq!(route_device(json).as_deref(), Some("pt-1f3a-0"));
        assert_eq!(route_device("[]"), None);
        assert_eq!(route_device("not json"), None);
    }
}
