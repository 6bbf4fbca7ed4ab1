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
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::addrs::{Block, with_free_block};
use crate::cmd::{cmd, run};
use crate::names::{delete_link, unique};
use crate::netns::link_exists;

/// How long a device's reader waits for a frame before it looks at its stop flag.
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
    device: HeldDevice,
    block: Block,
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
            let tap = open_device(&name, libc::IFF_TAP)?;
            let frames = Arc::new(Mutex::new(Vec::new()));
            let keep = Arc::clone(&frames);
            let device = HeldDevice::spawn(name, tap, move |_, frame| {
                locked(&keep).push(frame.to_vec())
            })?;
            let nic = Self {
                device,
                block,
                frames,
            };
            bring_up(nic.name(), block)?;
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
                        nic.name(),
                        "nud",
                        "permanent",
                    ],
                ))?;
            }
            Ok(nic)
        })
    }

    pub fn name(&self) -> &str {
        self.device.name()
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
        locked(&self.frames).clone()
    }

    /// The first frame read (also before this call) that `wanted` accepts,
    /// waiting up to `timeout` for it.
    pub fn wait_for_frame(
        &self,
        timeout: Duration,
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        wait_for(&self.frames, timeout, |frame| wanted(frame))
    }
}

/// The first item in `items` (also one there before this call) that `wanted`
/// accepts, waiting up to `timeout` for a reader thread to add it.
pub(crate) fn wait_for<T: Clone>(
    items: &Mutex<Vec<T>>,
    timeout: Duration,
    wanted: impl Fn(&T) -> bool,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = locked(items).iter().find(|item| wanted(item)).cloned();
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        sleep(Duration::from_millis(20));
    }
}

/// Locks what a reader thread shares: a test that panicked while holding
/// it (a failed assertion) leaves it readable for the cleanup and the rest.
pub(crate) fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tap or tun device that lives as long as this process holds it open: a
/// reader thread hands every frame the kernel sends through it to a handler,
/// which may write answers back. Drop stops the reader and closes the
/// device, which deletes it with its addresses and routes. [`TapNic`] and
/// the far sides (`far.rs`) are built on it.
#[derive(Debug)]
pub(crate) struct HeldDevice {
    name: String,
    stop: Arc<AtomicBool>,
    /// Gives the device back when stopped: it stays open as long as the reader may run.
    reader: Option<JoinHandle<File>>,
}

impl HeldDevice {
    /// Starts reading `device` (from [`open_device`]), named `name`.
    pub(crate) fn spawn(
        name: String,
        device: File,
        handle: impl FnMut(&mut File, &[u8]) + Send + 'static,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = Arc::clone(&stop);
            let thread_name = format!("{name} reader");
            thread::Builder::new()
                .name(thread_name.clone())
                .spawn(move || read_until_stopped(device, &thread_name, &stop, handle))
                .context("cannot start the device reader")?
        };
        Ok(Self {
            name,
            stop,
            reader: Some(reader),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for HeldDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            // Closing the device's only descriptor deletes it (if non-persistent).
            drop(reader.join());
        }
        // Only there if something else made it persistent.
        if link_exists(&self.name) {
            delete_link(&self.name);
        }
    }
}

/// Creates the tap (`IFF_TAP`: Ethernet frames) or tun (`IFF_TUN`: bare IP
/// packets) device `name`, without a packet-info header, and returns its
/// descriptor, non-blocking for the reader's poll and close-on-exec so no
/// child process keeps the device alive.
pub(crate) fn open_device(name: &str, kind: libc::c_int) -> Result<File> {
    // SAFETY: ifreq is plain data, for which all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    ensure!(
        name.len() < request.ifr_name.len(),
        "device name {name} too long"
    );
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (kind | libc::IFF_NO_PI) as libc::c_short;
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
    let device = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `request` is.
    if unsafe { libc::ioctl(device.as_raw_fd(), libc::TUNSETIFF, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot create tun/tap device {name}"));
    }
    Ok(device)
}

/// Hands every frame the kernel sends through `device` to `handle` until
/// `stop` is set, then hands the device back so that closing it is the
/// caller's.
fn read_until_stopped(
    mut device: File,
    reader: &str,
    stop: &AtomicBool,
    mut handle: impl FnMut(&mut File, &[u8]),
) -> File {
    let mut buffer = vec![0; 65536];
    let timeout = READER_POLL.as_millis() as libc::c_int;
    while !stop.load(Ordering::Relaxed) {
        let mut ready = libc::pollfd {
            fd: device.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut ready, 1, timeout) } <= 0 {
            continue;
        }
        loop {
            match device.read(&mut buffer) {
                Ok(len) => handle(&mut device, &buffer[..len]),
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    eprintln!("lab {reader}: {err}");
                    return device;
                }
            }
        }
    }
    device
}

/// IPv6 off, the host address on, the link up; then proves that packets to
/// the other end of the block leave through `device`, before anyone sends.
fn bring_up(device: &str, block: Block) -> Result<()> {
    configure(device, block)?;
    ensure_routed(block.peer, device, None)
}

/// IPv6 off, so that only the test's own packets leave through `device` (no
/// router solicitations, no MLD), the host address of `block` on, the link up.
pub(crate) fn configure(device: &str, block: Block) -> Result<()> {
    let ipv6 = format!("/proc/sys/net/ipv6/conf/{device}/disable_ipv6");
    fs::write(&ipv6, "1").with_context(|| format!("cannot write {ipv6}"))?;
    run(&mut cmd(
        "ip",
        ["addr", "add", &block.host_cidr(), "dev", device],
    ))?;
    run(&mut cmd("ip", ["link", "set", device, "up"]))?;
    Ok(())
}

/// Proves with `ip route get` that packets to `dst` leave through `device`,
/// to `gateway` if given (else on-link), before anyone sends.
pub(crate) fn ensure_routed(dst: Ipv4Addr, device: &str, gateway: Option<Ipv4Addr>) -> Result<()> {
    let json = run(&mut cmd("ip", ["-j", "route", "get", &dst.to_string()]))?;
    let route = route_lookup(&json)
        .with_context(|| format!("unreadable `ip -j route get` output: {json}"))?;
    let wanted = RouteLookup {
        dev: device.to_owned(),
        gateway,
    };
    if route != wanted {
        bail!("{dst} is routed {route:?}, not {wanted:?}");
    }
    Ok(())
}

/// Where `ip route get` sends a packet.
#[derive(Debug, PartialEq, Eq)]
struct RouteLookup {
    dev: String,
    /// `None` on-link.
    gateway: Option<Ipv4Addr>,
}

/// The device and gateway in `ip -j route get` output.
fn route_lookup(json: &str) -> Option<RouteLookup> {
    let routes: Value = serde_json::from_str(json).ok()?;
    let route = routes.get(0)?;
    let gateway = match route.get("gateway") {
        Some(gateway) => Some(gateway.as_str()?.parse().ok()?),
        None => None,
    };
    Some(RouteLookup {
        dev: route.get("dev")?.as_str()?.to_owned(),
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::{RouteLookup, route_lookup};

    #[test]
    fn reads_the_device_and_gateway_of_a_route_lookup() {
        let on_link = r#"[{"dst":"198.51.100.6","dev":"pt-1f3a-0","prefsrc":"198.51.100.5","flags":[],"uid":0,"cache":[]}]"#;
        assert_eq!(
            route_lookup(on_link),
            Some(RouteLookup {
                dev: "pt-1f3a-0".into(),
                gateway: None
            })
        );
        let via = r#"[{"dst":"198.51.100.9","gateway":"198.51.100.6","dev":"pt-1f3a-0","prefsrc":"198.51.100.5","flags":[],"uid":0,"cache":[]}]"#;
        assert_eq!(
            route_lookup(via),
            Some(RouteLookup {
                dev: "pt-1f3a-0".into(),
                gateway: Some("198.51.100.6".parse().unwrap())
            })
        );
        assert_eq!(route_lookup("[]"), None);
        assert_eq!(route_lookup("not json"), None);
    }
}
