//! Kernel probes: loads pkttrace's eBPF programs, attaches them, and streams
//! the raw events they emit. Knows nothing of containers or journeys.

pub mod features;
mod kernel_btf;
mod netfilter;
pub mod nftrace;
pub mod offsets;
mod rulesets;

use std::{
    collections::HashMap,
    net::IpAddr,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use crate::setns::enter_network_namespace;
use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, Map, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, LinkOrder, SchedClassifier, TcAttachType, tc::TcAttachOptions},
};
use futures::future::select_all;
use tokio::io::unix::AsyncFd;
use tracer_common::{
    ADDRESSES_MAP, CONFIG_MAP, Config, EVENTS_MAP, HeadersEvent, KEPT_MAP, KernelOffsets, LOST_MAP,
    LOST_SLOTS, MAX_PORTS, MAX_WATCHED, OFFSETS_GLOBAL, PacketEvent, PayloadEvent, Probe,
    SCRATCH_MAP,
};

use features::{Feature, KernelSupport};
use netfilter::{NetfilterLink, NetfilterProgram};

static TRACEPOINT_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));
static NETFILTER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netfilter"));

/// tp_btf programs: the program name in the object is the tracepoint's name.
const TRACEPOINTS: [&str; 8] = [
    "net_dev_queue",
    "netif_receive_skb",
    "kfree_skb",
    "consume_skb",
    "skb_copy_datagram_iovec",
    "sock_recv_length",
    "fib_table_lookup",
    "fib6_table_lookup",
];

/// The tracepoints of `TRACEPOINTS` the kernel has.
fn tracepoints_of(support: &KernelSupport) -> Vec<&'static str> {
    TRACEPOINTS
        .into_iter()
        .filter(|name| *name != "sock_recv_length" || support.has(Feature::SocketReads))
        .collect()
}

/// Where the netfilter programs sit. `hook_entry` runs first in every IPv4
/// hook (enum nf_inet_hooks 0..=4), before raw, conntrack, mangle, NAT and
/// filter, so a drop anywhere in a hook is seen after its entry. `after_nat`
/// runs just after the NAT priority where addresses are rewritten: DNAT and
/// the reply's reverse NAT in PREROUTING and OUTPUT (-100), SNAT and
/// MASQUERADE in POSTROUTING (100); compared with the entry it shows the NAT.
/// Every program runs for every IPv4 packet of the namespace, so there are
/// no more of them than that.
const FIRST_PRIORITY: i32 = i32::MIN + 1;
const HOOKS: [u32; 5] = [0, 1, 2, 3, 4];
const AFTER_NAT: [(u32, i32); 3] = [(0, -99), (3, -99), (4, 101)];

/// What to capture; everything else is dropped in the kernel before it costs a copy.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// A packet is kept when its source or destination is one of these.
    pub addresses: Vec<IpAddr>,
    pub protocol: Option<u8>,
    /// At most four TCP/UDP ports, one of which the packet must use.
    pub ports: Vec<u16>,
    /// Every packet of this namespace (inode) is in scope too; the watched
    /// addresses then only add packets outside it.
    pub netns: Option<u32>,
    /// Device events of TCP/UDP packets carry the payload's start (DNS).
    pub capture_payload: bool,
    /// Every event of a packet carries its first bytes (`--pcap`).
    pub capture_headers: bool,
    /// Datagrams to this UDP port are looked into as VXLAN: a wanted packet
    /// is followed through the tunnel.
    pub vxlan_port: Option<u16>,
}

/// One record from the kernel: the event, and the payload or the packet's
/// first bytes when it has them.
pub struct RawEvent {
    pub packet: PacketEvent,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<Vec<u8>>,
}

/// Loading eBPF programs and netfilter hooks needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for setns).
pub fn require_privileges() -> Result<()> {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "pkttrace must run as root (it loads eBPF programs and enters network namespaces): run it with sudo"
        );
    }
    Ok(())
}

pub struct Probes {
    // Kept alive: dropping them detaches everything.
    _ebpf: Ebpf,
    netfilter: Option<NetfilterPrograms>,
    netfilter_links: Vec<NetfilterLink>,
    /// Namespaces whose hooks are observed once they have a ruleset.
    awaiting_ruleset: Vec<AwaitingRuleset>,
    /// Why a namespace's hooks could not be observed once it had a ruleset.
    failures: Vec<String>,
    events: AsyncFd<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, [u64; LOST_SLOTS as usize]>,
    /// Events read from the ring so far.
    delivered: u64,
    /// What the programs were told, and where.
    config: Config,
    config_map: Array<MapData, Config>,
}

/// The kernel's exact counts of what it did not hand over.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LossReport {
    /// Events the ring buffer handed over.
    pub delivered: u64,
    /// Events dropped for want of room in the ring buffer, by probe.
    pub lost: Vec<(String, u64)>,
    /// Program runs the kernel skipped (recursion), by program.
    pub skipped: Vec<(String, u64)>,
}

impl LossReport {
    pub fn is_empty(&self) -> bool {
        self.lost.is_empty() && self.skipped.is_empty()
    }

    /// "the kernel dropped 3120 events for want of room (netif_receive_skb 1800, …)".
    pub fn sentence(&self) -> String {
        let listed = |counts: &[(String, u64)]| {
            counts
                .iter()
                .map(|(name, count)| format!("{name} {count}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !self.lost.is_empty() {
            let total: u64 = self.lost.iter().map(|(_, n)| n).sum();
            parts.push(format!(
                "the kernel dropped {total} of {} events because the ring buffer was full ({})",
                total + self.delivered,
                listed(&self.lost)
            ));
        }
        if !self.skipped.is_empty() {
            let total: u64 = self.skipped.iter().map(|(_, n)| n).sum();
            parts.push(format!(
                "the kernel skipped {total} runs of programs already running on that CPU ({})",
                listed(&self.skipped)
            ));
        }
        parts.join("; ")
    }
}

/// Start-up's slow part, begun at once on a thread of its own: reading the
/// kernel's BTF (the struct offsets the programs are loaded with, drop
/// reason names) and the kernel verifying every program. A plain thread: a
/// command that fails on bad input meanwhile exits at once.
pub struct Startup<Names> {
    loading: std::thread::JoinHandle<Result<(Loaded, Names)>>,
    began: std::time::Instant,
}

/// How long start-up goes on before pkttrace says what it is waiting for.
const QUIET_STARTUP: std::time::Duration = std::time::Duration::from_millis(300);

impl<Names: Send + 'static> Startup<Names> {
    /// `capture_payload`: the TC program for TCP payloads is needed too
    /// (`dns`); `buffer_mb`: the ring buffer's size asked for, if any;
    /// `names`: made from the drop reasons' names in BTF as soon as they are
    /// read (the decoder's dictionary), on the same thread.
    pub fn begin(
        capture_payload: bool,
        buffer_mb: Option<u32>,
        names: impl FnOnce(Vec<(u32, String)>) -> Names + Send + 'static,
    ) -> Self {
        let ring_bytes = ring_buffer_bytes(buffer_mb);
        Self {
            loading: std::thread::spawn(move || {
                // aya parses the kernel's BTF its own way, pkttrace's reader
                // takes what the programs need from it: both at once.
                let aya_btf = std::thread::spawn(aya::Btf::from_sys_fs);
                let offsets::KernelFacts {
                    offsets,
                    types,
                    drop_reasons,
                    support,
                } = offsets::KernelFacts::read()?;
                let names = names(drop_reasons);
                let btf = aya_btf
                    .join()
                    .map_err(|_| anyhow::anyhow!("the thread reading the kernel's BTF failed"))?
                    .context("cannot read the kernel's BTF")?;
                let loaded =
                    Loaded::load(&btf, &offsets, types, support, capture_payload, ring_bytes)?;
                offsets::release_freed_memory();
                Ok((loaded, names))
            }),
            began: std::time::Instant::now(),
        }
    }

    /// Waits for it (off the event loop), saying so when it takes a while.
    pub async fn finish(self) -> Result<(Loaded, Names)> {
        let quiet_until = self.began + QUIET_STARTUP;
        let mut joining = tokio::task::spawn_blocking(move || self.loading.join());
        let joined = match tokio::time::timeout_at(quiet_until.into(), &mut joining).await {
            Ok(joined) => joined?,
            Err(_) => {
                eprintln!("pkttrace: loading the eBPF programs (the kernel verifies each one)…");
                joining.await?
            }
        };
        joined.map_err(|_| anyhow::anyhow!("pkttrace's start-up thread failed"))?
    }
}

/// The ring buffer's size in bytes: what was asked, or 4 MiB per CPU
/// between 8 and 64 MiB; a power of two, as the kernel wants it.
fn ring_buffer_bytes(asked_mb: Option<u32>) -> u32 {
    const MIB: u32 = 1 << 20;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let mb = asked_mb.unwrap_or((4 * cpus).clamp(8, 64));
    mb.next_power_of_two().min(1024) * MIB
}

/// Every program loaded, so verified, and none attached: nothing runs yet.
pub struct Loaded {
    ebpf: Ebpf,
    /// None: the kernel has no netfilter programs.
    netfilter: Option<NetfilterPrograms>,
    tcp_payload: bool,
    /// The tracepoints this kernel has, of `TRACEPOINTS`.
    tracepoints: Vec<&'static str>,
    support: KernelSupport,
}

impl Loaded {
    /// Loads every program, each on a thread of its own: the verifier's work
    /// is most of pkttrace's start-up, and the kernel does it in parallel.
    fn load(
        btf: &aya::Btf,
        offsets: &KernelOffsets,
        types: offsets::KernelTypes,
        support: KernelSupport,
        capture_payload: bool,
        ring_bytes: u32,
    ) -> Result<Self> {
        // TC programs only as TCX links: a netlink filter outlives a killed pkttrace.
        let tcp_payload = capture_payload && support.has(Feature::Tcx);
        let tracepoints = tracepoints_of(&support);
        let netfilter_programs = support.has(Feature::NetfilterPrograms);
        let mut ebpf = aya::EbpfLoader::new()
            .btf(Some(btf))
            .override_global(OFFSETS_GLOBAL, offsets, true)
            .map_max_entries(EVENTS_MAP, ring_bytes)
            .load(TRACEPOINT_OBJECT)
            .context("cannot load pkttrace's eBPF programs")?;
        // Own copies of the maps' fds: the netfilter loads use them while
        // the tracepoint programs are borrowed from `ebpf`.
        let maps = map_fds(&ebpf)?;
        let maps: HashMap<String, BorrowedFd<'_>> = maps
            .iter()
            .map(|(name, fd)| (name.clone(), fd.as_fd()))
            .collect();
        let netfilter = std::thread::scope(|scope| -> Result<Option<NetfilterPrograms>> {
            let maps = &maps;
            let load = move |name| netfilter::load(NETFILTER_OBJECT, name, maps, offsets, types);
            let netfilter = netfilter_programs.then(|| {
                (
                    scope.spawn(move || load("hook_entry")),
                    scope.spawn(move || load("after_nat")),
                )
            });
            let tracepoints: Vec<_> = ebpf
                .programs_mut()
                .filter(|(name, _)| tracepoints.contains(name))
                .map(|(name, program)| {
                    scope.spawn(move || -> Result<()> {
                        let program: &mut BtfTracePoint = program.try_into()?;
                        program.load(name, btf).with_context(|| {
                            format!("the kernel refused the tp_btf program for {name}")
                        })
                    })
                })
                .collect();
            for tracepoint in tracepoints {
                joined(tracepoint)?;
            }
            netfilter
                .map(|(hook_entry, after_nat)| {
                    Ok(NetfilterPrograms {
                        hook_entry: joined(hook_entry)?,
                        after_nat: joined(after_nat)?,
                    })
                })
                .transpose()
        })?;
        if tcp_payload {
            let program: &mut SchedClassifier = ebpf
                .program_mut(TCP_PAYLOAD)
                .context("program tcp_payload missing from the object")?
                .try_into()?;
            program
                .load()
                .context("the kernel refused the TC program for TCP payloads")?;
        }
        Ok(Self {
            ebpf,
            netfilter,
            tcp_payload,
            tracepoints,
            support,
        })
    }

    /// What the kernel has of what pkttrace uses.
    pub fn support(&self) -> &KernelSupport {
        &self.support
    }

    /// Hands the programs their configuration, then attaches them: the
    /// tracepoints, netfilter in the host's namespace and in each of
    /// `traced_namespaces` (nsfs paths), where the TCP payload program also
    /// goes when it was loaded. On error, whatever was attached is detached
    /// again as the partial state is dropped.
    pub fn attach(self, filter: &Filter, traced_namespaces: &[PathBuf]) -> Result<Probes> {
        let Self {
            mut ebpf,
            netfilter,
            tcp_payload,
            tracepoints,
            support: _,
        } = self;
        let config = config_for(filter)?;
        // Before anything is attached: a program without its configuration
        // would take every packet for one of ours.
        let mut config_map: Array<_, Config> =
            Array::try_from(ebpf.take_map(CONFIG_MAP).context("CONFIG map")?)?;
        config_map.set(0, config, 0)?;

        for name in tracepoints {
            let program: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the object"))?
                .try_into()?;
            program
                .attach()
                .with_context(|| format!("cannot attach to tracepoint {name}"))?;
        }

        let mut netfilter_links = Vec::new();
        let mut awaiting_ruleset = Vec::new();
        let namespaces =
            std::iter::once(None).chain(traced_namespaces.iter().map(|p| Some(p.clone())));
        // Without netfilter programs nothing waits for a namespace's ruleset.
        for (namespace, netfilter) in namespaces.filter_map(|ns| Some((ns, netfilter.as_ref()?))) {
            let place = namespace_place(namespace.as_deref());
            let linked = in_namespace_or_here(namespace.as_deref(), || {
                Ok(match rulesets::watch_for_ruleset(&place)? {
                    Some(watcher) => Linked::OnceARulesetAppears(watcher),
                    None => Linked::Now(netfilter.attach_here()?),
                })
            })?;
            match linked {
                Linked::Now(links) => netfilter_links.extend(links),
                Linked::OnceARulesetAppears(watcher) => awaiting_ruleset.push(AwaitingRuleset {
                    namespace,
                    watcher: rulesets::watched(watcher)?,
                }),
            }
        }
        if tcp_payload {
            let program: &mut SchedClassifier = ebpf
                .program_mut(TCP_PAYLOAD)
                .context("program tcp_payload missing from the object")?
                .try_into()?;
            for namespace in traced_namespaces {
                in_namespace(namespace, || attach_to_every_device(program))?;
            }
        }
        let events = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).context("EVENTS map")?)?;
        let lost = PerCpuArray::try_from(ebpf.take_map(LOST_MAP).context("LOST map")?)?;
        // SAFETY: the AsyncFd owns the ring buffer, so its fd outlives the registration.
        let events = unsafe { AsyncFd::register(events) }.map_err(|e| e.into_parts().1)?;
        Ok(Probes {
            _ebpf: ebpf,
            netfilter,
            netfilter_links,
            awaiting_ruleset,
            failures: Vec::new(),
            events,
            lost,
            delivered: 0,
            config,
            config_map,
        })
    }
}

impl Probes {
    /// Tells the programs where the kernel's deferred frees happen (start
    /// and length of `skb_defer_free_flush`), once kallsyms is read: from
    /// then on they look only at those of skbs they sent an event about.
    /// A program may read the configuration while it is written: half of
    /// the new extent is an empty one or one no code lies in.
    pub fn know_deferred_frees(&mut self, (start, length): (u64, u64)) -> Result<()> {
        self.config.deferred_free_at = start;
        self.config.deferred_free_len = length;
        self.config_map.set(0, self.config, 0)?;
        Ok(())
    }

    /// Waits until events are ready, then appends up to `BATCH` of them to
    /// `events` (`events_now` takes the rest).
    ///
    /// Returns early, with no events, when a namespace that had no ruleset
    /// got one: its hooks are observed from then on.
    pub async fn next_events(&mut self, events: &mut Vec<RawEvent>) -> Result<()> {
        let awaiting = &self.awaiting_ruleset;
        let ruleset_news = async {
            if awaiting.is_empty() {
                std::future::pending().await
            } else {
                select_all(awaiting.iter().map(|a| Box::pin(a.watcher.readable())))
                    .await
                    .0
            }
        };
        tokio::select! {
            guard = self.events.readable_mut() => {
                let mut guard = guard?;
                self.delivered += read_ring(guard.get_inner_mut(), events) as u64;
                guard.clear_ready();
            }
            ready = ruleset_news => {
                // Cleared before reading: news arriving after it wakes the next wait.
                ready?.clear_ready();
                self.observe_where_rulesets_appeared();
            }
        }
        Ok(())
    }

    /// Attaches the netfilter programs in each awaiting namespace whose
    /// ruleset change notifications tell of a table.
    fn observe_where_rulesets_appeared(&mut self) {
        let Some(netfilter) = &self.netfilter else {
            return;
        };
        for awaiting in std::mem::take(&mut self.awaiting_ruleset) {
            let place = namespace_place(awaiting.namespace.as_deref());
            let attached = rulesets::ruleset_appeared(awaiting.watcher.get_ref())
                .context("cannot read its nf_tables changes")
                .and_then(|appeared| {
                    appeared
                        .then(|| {
                            in_namespace_or_here(awaiting.namespace.as_deref(), || {
                                netfilter.attach_here()
                            })
                        })
                        .transpose()
                });
            match attached {
                Ok(Some(links)) => self.netfilter_links.extend(links),
                Ok(None) => self.awaiting_ruleset.push(awaiting),
                Err(error) => self.failures.push(format!(
                    "cannot observe netfilter's hooks in {place} ({error:#}); what its rules do there is not seen"
                )),
            }
        }
    }

    /// Why namespaces that got a ruleset during the trace could not be
    /// observed; each reason is given once.
    pub fn take_failures(&mut self) -> Vec<String> {
        std::mem::take(&mut self.failures)
    }

    /// Appends up to `BATCH` of the events ready now to `events`, without
    /// waiting, and says how many; fewer than `BATCH` means the ring is empty.
    pub fn events_now(&mut self, events: &mut Vec<RawEvent>) -> usize {
        let read = read_ring(self.events.get_mut(), events);
        self.delivered += read as u64;
        read
    }

    /// Events the kernel could not hand over because the ring buffer was full.
    pub fn lost_events(&self) -> u64 {
        self.lost_by_probe().iter().map(|(_, lost)| lost).sum()
    }

    /// The events lost, counted by the probe that made them (every CPU's
    /// count added up); probes that lost none are left out.
    fn lost_by_probe(&self) -> Vec<(Probe, u64)> {
        // One lookup: every CPU's counts of every probe.
        let Ok(per_cpu) = self.lost.get(&0, 0) else {
            return Vec::new();
        };
        Probe::ALL
            .into_iter()
            .filter_map(|probe| {
                let slot = usize::from(probe as u8) % LOST_SLOTS as usize;
                let lost: u64 = per_cpu.iter().map(|counts| counts[slot]).sum();
                (lost > 0).then_some((probe, lost))
            })
            .collect()
    }

    /// What the kernel lost or skipped while pkttrace ran: events the ring
    /// buffer had no room for, and runs of a tracepoint program the kernel
    /// skipped because the program was already running on that CPU.
    pub fn loss_report(&self) -> LossReport {
        let skipped = TRACEPOINTS
            .iter()
            .filter_map(|name| {
                let program = self._ebpf.program(name)?;
                let misses = netfilter::recursion_misses(program.fd().ok()?.as_fd())?;
                (misses > 0).then(|| (name.to_string(), misses))
            })
            .collect();
        LossReport {
            delivered: self.delivered,
            lost: self
                .lost_by_probe()
                .into_iter()
                .map(|(probe, lost)| (probe.name().to_string(), lost))
                .collect(),
            skipped,
        }
    }
}

/// Events read from the ring at a time: under a flood the ring holds tens
/// of thousands, and user space holds a batch raw before decoding it.
pub const BATCH: usize = 2048;

/// Appends up to `BATCH` records of the ring buffer to `events`, told
/// apart by their size; returns how many.
fn read_ring(ring: &mut RingBuf<MapData>, events: &mut Vec<RawEvent>) -> usize {
    let before = events.len();
    while events.len() - before < BATCH
        && let Some(item) = ring.next()
    {
        if item.len() >= size_of::<PayloadEvent>() {
            // SAFETY: a record this long is one PayloadEvent.
            let record = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<PayloadEvent>()) };
            let length = usize::from(record.payload_len).min(record.payload.len());
            events.push(RawEvent {
                packet: record.packet,
                payload: Some(record.payload[..length].to_vec()),
                headers: None,
            });
        } else if item.len() >= size_of::<HeadersEvent>() {
            // SAFETY: a record this long (and shorter than a PayloadEvent) is one HeadersEvent.
            let record = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<HeadersEvent>()) };
            let length = usize::from(record.headers_len).min(record.headers.len());
            events.push(RawEvent {
                packet: record.packet,
                payload: None,
                headers: Some(record.headers[..length].to_vec()),
            });
        } else if item.len() >= size_of::<PacketEvent>() {
            // SAFETY: every other record is one PacketEvent.
            let packet = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<PacketEvent>()) };
            events.push(RawEvent {
                packet,
                payload: None,
                headers: None,
            });
        }
    }
    events.len() - before
}

fn config_for(filter: &Filter) -> Result<Config> {
    if filter.addresses.len() > MAX_WATCHED {
        bail!("pkttrace can watch at most {MAX_WATCHED} addresses at once");
    }
    if filter.ports.len() > MAX_PORTS {
        bail!("pkttrace can filter on at most {MAX_PORTS} ports at once");
    }
    let mut config = Config {
        watched_count: filter.addresses.len() as u32,
        protocol: filter.protocol.unwrap_or(0),
        netns: filter.netns.unwrap_or(0),
        capture_payload: u8::from(filter.capture_payload),
        capture_headers: u8::from(filter.capture_headers),
        vxlan_port: filter.vxlan_port.unwrap_or(0),
        ..Config::default()
    };
    for (slot, port) in config.ports.iter_mut().zip(&filter.ports) {
        *slot = *port;
    }
    for (slot, address) in config.watched.iter_mut().zip(&filter.addresses) {
        *slot = match address {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
    }
    Ok(config)
}

/// The TCX program copying TCP payloads (DNS over TCP) in traced namespaces.
const TCP_PAYLOAD: &str = "tcp_payload";

/// Where linking the netfilter programs in a namespace got.
enum Linked {
    /// The namespace has a ruleset: its hooks are observed.
    Now(Vec<NetfilterLink>),
    /// It has none yet: news of one comes on this socket.
    OnceARulesetAppears(netlink_sys::Socket),
}

/// A namespace that had no netfilter ruleset when tracing began.
struct AwaitingRuleset {
    /// nsfs path; None: pkttrace's own.
    namespace: Option<PathBuf>,
    /// Told of every nf_tables change there.
    watcher: AsyncFd<netlink_sys::Socket>,
}

/// How errors name the namespace at `namespace` (None: pkttrace's own).
fn namespace_place(namespace: Option<&Path>) -> String {
    namespace.map_or("pkttrace's own network namespace".to_string(), |path| {
        format!("network namespace {}", path.display())
    })
}

/// Runs `work` in the network namespace at `namespace`, or right here for None.
fn in_namespace_or_here<T: Send>(
    namespace: Option<&Path>,
    work: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    match namespace {
        Some(path) => in_namespace(path, work),
        None => work(),
    }
}

/// Runs `work` on a thread that entered the network namespace at `namespace`
/// (setns moves only the calling thread; that one ends right after).
fn in_namespace<T: Send>(namespace: &Path, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let netns = std::fs::File::open(namespace)
        .with_context(|| format!("cannot open network namespace {}", namespace.display()))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_network_namespace(&netns).with_context(|| {
                    format!("cannot enter network namespace {}", namespace.display())
                })?;
                work()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("a thread working in {} panicked", namespace.display()))?
    })
}

/// Attaches `program` (TCX links: gone when pkttrace is) to the transmit side
/// of every device of the calling thread's namespace and the receive side of
/// all but loopback, whose receive is its own transmit.
fn attach_to_every_device(program: &mut SchedClassifier) -> Result<()> {
    // Asked for by name: aya's plain attach picks TCX by kernel version.
    let tcx = || TcAttachOptions::TcxOrder(LinkOrder::default());
    for device in device_names()? {
        program
            .attach_with_options(&device, TcAttachType::Egress, tcx())
            .with_context(|| format!("cannot attach the TC program to {device}"))?;
        if device != "lo" {
            program
                .attach_with_options(&device, TcAttachType::Ingress, tcx())
                .with_context(|| format!("cannot attach the TC program to {device}"))?;
        }
    }
    Ok(())
}

/// Names of the devices in the calling thread's network namespace.
fn device_names() -> Result<Vec<String>> {
    // SAFETY: if_nameindex returns a list ended by a zero entry, freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        bail!(
            "cannot list network devices: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut names = Vec::new();
    let mut entry = list;
    // SAFETY: walking the list up to its terminating entry.
    unsafe {
        while (*entry).if_index != 0 {
            names.push(
                std::ffi::CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(names)
}

/// The two netfilter programs, loaded once and attached in every namespace
/// that needs them (a link belongs to the namespace of the thread that
/// creates it).
struct NetfilterPrograms {
    hook_entry: NetfilterProgram,
    after_nat: NetfilterProgram,
}

impl NetfilterPrograms {
    /// Attaches both at their hooks of both families in the calling
    /// thread's namespace.
    fn attach_here(&self) -> Result<Vec<NetfilterLink>> {
        let mut links = Vec::new();
        for family in [netfilter::NFPROTO_IPV4, netfilter::NFPROTO_IPV6] {
            for hook in HOOKS {
                links.push(attach_near(
                    &self.hook_entry,
                    family,
                    hook,
                    FIRST_PRIORITY,
                    1,
                )?);
            }
            for (hook, priority) in AFTER_NAT {
                links.push(attach_near(&self.after_nat, family, hook, priority, 1)?);
            }
        }
        Ok(links)
    }
}

fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("a program's loading thread failed"))?
}

/// Duplicates of the fds of the maps aya created, by name, for the netfilter
/// programs' map references.
fn map_fds(ebpf: &Ebpf) -> Result<HashMap<String, OwnedFd>> {
    let mut maps = HashMap::new();
    for name in [
        EVENTS_MAP,
        CONFIG_MAP,
        LOST_MAP,
        SCRATCH_MAP,
        ADDRESSES_MAP,
        KEPT_MAP,
    ] {
        let fd = match ebpf.map(name).with_context(|| format!("{name} map"))? {
            Map::RingBuf(data) | Map::Array(data) | Map::PerCpuArray(data) => data.fd().as_fd(),
            _ => bail!("map {name} has an unexpected type"),
        };
        maps.insert(name.to_string(), fd.try_clone_to_owned()?);
    }
    Ok(maps)
}

/// Attaches at `priority`, or the next free one further from the NAT priority:
/// the kernel refuses a priority another BPF hook already holds.
fn attach_near(
    program: &NetfilterProgram,
    family: u32,
    hook: u32,
    priority: i32,
    step: i32,
) -> Result<NetfilterLink> {
    let mut last_error = None;
    for attempt in 0..8 {
        match program.attach(family, hook, priority + attempt * step) {
            Ok(link) => return Ok(link),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.expect("at least one attempt"))
}

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
