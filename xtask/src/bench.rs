//! `cargo xtask bench`: what tracing costs the traffic and the host.
//!
//! iperf3 runs between a namespace of ours and the host through a veth, in
//! four settings: without pkttrace; with pkttrace attached but watching an
//! address this traffic never uses (a busy host where the lecture's packets
//! are a trickle: every packet only meets the in-kernel filter); with
//! bpftrace doing the same on the same tracepoints (what a user would
//! otherwise reach for); and with pkttrace following this very traffic. It reports throughput, pkttrace's
//! CPU time and peak memory and the events the kernel could not hand over,
//! times the start-up of `follow` and `dns`, and fails when a goal is missed.

use std::{
    fs,
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    process::{Child, Command, ExitCode, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    cargo,
    cmd::{cmd, read, run},
    lab, setup, target_dir,
};

const NETNS: &str = "pt-bench";
const HOST_VETH: &str = "pt-bench-h";
/// A private /30 used only between our namespace and the host.
const HOST_ADDR: &str = "10.201.0.1";
const NETNS_ADDR: &str = "10.201.0.2";
/// In 198.51.100.0/24, never used by this traffic: the "busy host" setting.
const OTHER_ADDR: &str = "198.51.100.77";
const SECONDS: u32 = 5;
/// A container without a network, for timing `dns`'s start-up (it never
/// asks anything: its resolver is our own bench address).
const DNS_CONTAINER: &str = "pt-bench-dns";
/// The settings alternate this many times; each round's ratio is one
/// sample, and the median decides (the spread is shown), so a burst of
/// other load on the machine does not decide the verdict.
const ROUNDS: usize = 7;
/// `follow` and `dns` are started this many times to time their start-up (median counts).
const STARTUP_RUNS: usize = 5;
/// From exec to the "following" line: every program loaded, verified and attached.
const STARTUP_GOAL: Duration = Duration::from_millis(300);

/// Goals for traffic pkttrace is not following (it only meets the in-kernel
/// filter): bulk TCP keeps this share of its rate, and a flood of 64-byte
/// datagrams (the worst case: every packet pays the filter) this one.
const UNRELATED_TCP_MIN_SHARE: f64 = 0.97;
const UNRELATED_SMALL_PACKETS_MIN_SHARE: f64 = 0.92;
/// A TCP stream pkttrace follows (every packet an event) keeps this share.
const FOLLOWED_TCP_MIN_SHARE: f64 = 0.70;
/// pkttrace's peak resident memory, also while following a flood.
const MAX_RSS_MIB: f64 = 128.0;

struct Lab;

impl Lab {
    fn up() -> Result<Self> {
        Self::remove();
        let lab = Lab;
        lab::veth_namespace(
            NETNS,
            HOST_VETH,
            &format!("{HOST_ADDR}/30"),
            &format!("{NETNS_ADDR}/30"),
        )?;
        run(&mut cmd(
            "docker",
            [
                "run",
                "-d",
                "--name",
                DNS_CONTAINER,
                "--network",
                "none",
                "--dns",
                HOST_ADDR,
                setup::LAB_IMAGE,
                "sleep",
                "infinity",
            ],
        ))?;
        Ok(lab)
    }

    fn remove() {
        let _ = Command::new("docker")
            .args(["rm", "-f", DNS_CONTAINER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", NETNS])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", HOST_VETH])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        Self::remove();
    }
}

/// Kills the child when the bench ends, however it ends.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy)]
struct Traffic {
    tcp_gbits: f64,
    udp_kpps: f64,
}

/// iperf3's server on the host's end of the veth, for one measurement.
fn iperf_server() -> Result<Background> {
    let server = Background(
        Command::new("iperf3")
            .args(["-s", "-B", HOST_ADDR])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start iperf3 (run `cargo xtask setup`)")?,
    );
    thread::sleep(Duration::from_millis(500));
    Ok(server)
}

/// One iperf3 run from the namespace to the host, its JSON report.
fn iperf_client(extra: &[&str]) -> Result<Value> {
    let seconds = SECONDS.to_string();
    let mut args = vec![
        "netns", "exec", NETNS, "iperf3", "-c", HOST_ADDR, "-t", &seconds, "-J",
    ];
    args.extend_from_slice(extra);
    Ok(serde_json::from_str(&read(&mut cmd("ip", args))?)?)
}

const UDP_FLOOD: [&str; 5] = ["-u", "-b", "0", "-l", "64"];

fn number(report: &Value, path: &str) -> Result<f64> {
    report
        .pointer(path)
        .and_then(Value::as_f64)
        .with_context(|| format!("iperf3 report has no {path}"))
}

/// One TCP stream and one flood of small UDP datagrams, from the namespace to the host.
fn measure() -> Result<Traffic> {
    let _server = iperf_server()?;
    let tcp = iperf_client(&[])?;
    let udp = iperf_client(&UDP_FLOOD)?;
    Ok(Traffic {
        tcp_gbits: number(&tcp, "/end/sum_received/bits_per_second")? / 1e9,
        udp_kpps: number(&udp, "/end/sum/packets")? / f64::from(SECONDS) / 1e3,
    })
}

/// `kernel.bpf_stats_enabled` on while it lives (the kernel then counts each
/// program's runs and their time), as it was before afterwards.
struct BpfStats(String);

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn on() -> Result<Self> {
        let before =
            fs::read_to_string(BPF_STATS).with_context(|| format!("cannot read {BPF_STATS}"))?;
        fs::write(BPF_STATS, "1").with_context(|| format!("cannot write {BPF_STATS}"))?;
        Ok(Self(before.trim().to_string()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.0);
    }
}

/// The runs and run time (ns) the kernel counted for the BPF programs the
/// process `pid` holds: their ids are in its file descriptors' fdinfo (a
/// program's own, or a link's), their counts in bpftool's listing.
fn bpf_runs_of(pid: u32) -> Result<(u64, u64)> {
    let mut ids = Vec::new();
    let fdinfo = format!("/proc/{pid}/fdinfo");
    for entry in fs::read_dir(&fdinfo).with_context(|| format!("cannot list {fdinfo}"))? {
        let Ok(info) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        ids.extend(info.lines().filter_map(|line| {
            line.strip_prefix("prog_id:")
                .and_then(|id| id.trim().parse::<u64>().ok())
        }));
    }
    let shown: Value =
        serde_json::from_str(&read(&mut cmd("bpftool", ["prog", "show", "--json"]))?)?;
    let held = |program: &&Value| {
        program
            .get("id")
            .and_then(Value::as_u64)
            .is_some_and(|id| ids.contains(&id))
    };
    let sum = |field: &str| -> u64 {
        shown
            .as_array()
            .into_iter()
            .flatten()
            .filter(held)
            .filter_map(|program| program.get(field).and_then(Value::as_u64))
            .sum()
    };
    Ok((sum("run_cnt"), sum("run_time_ns")))
}

/// What the kernel itself counted for a tracer's programs during one 64-byte
/// UDP flood none of which they keep: program runs and BPF time (ns) per
/// datagram. The statistics cost a little time per run themselves, so this
/// flood's rate is not one of the ratios.
struct BpfCost {
    runs: f64,
    ns: f64,
}

fn bpf_cost_during_flood(tracer: &Running) -> Result<BpfCost> {
    let _stats = BpfStats::on()?;
    let _server = iperf_server()?;
    let (runs_before, ns_before) = bpf_runs_of(tracer.pid())?;
    let flood = iperf_client(&UDP_FLOOD)?;
    let (runs_after, ns_after) = bpf_runs_of(tracer.pid())?;
    let datagrams = number(&flood, "/end/sum/packets")?.max(1.0);
    Ok(BpfCost {
        runs: (runs_after - runs_before) as f64 / datagrams,
        ns: (ns_after - ns_before) as f64 / datagrams,
    })
}

/// The median of `samples` and their spread (lowest, highest).
fn median_spread(samples: &[f64]) -> (f64, f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    };
    (median, sorted[0], sorted[sorted.len() - 1])
}

/// How long pkttrace with `args` takes from exec to saying it is ready
/// (its stderr line starting with `ready`).
fn startup_time(pkttrace: &std::path::Path, args: &[&str], ready_line: &str) -> Result<Duration> {
    let started = Instant::now();
    let mut tracer = Command::new(pkttrace)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start pkttrace")?;
    let stderr = tracer.stderr.take().context("pkttrace's stderr")?;
    let mut ready = None;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.starts_with(ready_line) {
            ready = Some(started.elapsed());
            break;
        }
    }
    interrupt(tracer.id());
    tracer.wait()?;
    ready.with_context(|| format!("pkttrace {} never said it was ready", args.join(" ")))
}

struct TracerUsage {
    cpu_seconds: f64,
    peak_rss_mib: f64,
    /// Events the ring buffer handed over per second while traffic ran
    /// (pkttrace says how many only when it lost some).
    events_per_second: Option<f64>,
    /// Events the kernel dropped (pkttrace's own exact count at the end).
    events_lost: u64,
}

/// The counts in pkttrace's last words, "… dropped LOST of ALL events …".
fn dropped_of(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("pkttrace: the kernel dropped ")?;
    let mut words = rest.split(' ');
    let lost = words.next()?.parse().ok()?;
    (words.next()? == "of").then_some(())?;
    Some((lost, words.next()?.parse().ok()?))
}

/// The common alternative a user would reach for, side by side: bpftrace on
/// the tracepoints pkttrace uses (bpftrace cannot attach at netfilter hooks),
/// with the same address filter, printing the packets that pass it.
fn bpftrace_script(address: Ipv4Addr) -> String {
    // The IPv4 header's address fields as a little-endian load sees them.
    let ip = format!("{:#010x}", u32::from_le_bytes(address.octets()));
    format!(
        "tracepoint:net:net_dev_queue, tracepoint:net:netif_receive_skb, tracepoint:skb:kfree_skb, \
         tracepoint:skb:consume_skb, tracepoint:skb:skb_copy_datagram_iovec {{
  $skb = (struct sk_buff *)args->skbaddr;
  $ip = (struct iphdr *)($skb->head + $skb->network_header);
  if ($ip->saddr == {ip} || $ip->daddr == {ip}) {{ printf(\"%s %llx\\n\", probe, $skb); }}
}}
tracepoint:sock:sock_recv_length {{
  $sk = (struct sock *)args->sk;
  if ($sk->__sk_common.skc_daddr == {ip} || $sk->__sk_common.skc_rcv_saddr == {ip}) {{
    printf(\"%s %llx\\n\", probe, $sk);
  }}
}}"
    )
}

/// A tracer running in the background, its output read for the line that
/// says it is attached and for pkttrace's last words on losses.
struct Running {
    child: Child,
    reader: thread::JoinHandle<Option<(u64, u64)>>,
}

impl Running {
    /// Starts `command` with its stderr (pkttrace) or stdout (bpftrace)
    /// piped, and returns once a line of it starts with `ready`.
    fn start(
        mut command: Command,
        name: &str,
        from_stderr: bool,
        ready: &'static str,
    ) -> Result<Self> {
        let (stdout, stderr) = if from_stderr {
            (Stdio::null(), Stdio::piped())
        } else {
            (Stdio::piped(), Stdio::null())
        };
        let mut child = command
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {name} (run `cargo xtask setup`)"))?;
        let output: Box<dyn std::io::Read + Send> = match (child.stdout.take(), child.stderr.take())
        {
            (Some(out), _) => Box::new(out),
            (_, Some(err)) => Box::new(err),
            _ => bail!("{name}'s output"),
        };
        let (attached, attached_seen) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut dropped = None;
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                if line.starts_with(ready) {
                    let _ = attached.send(());
                }
                dropped = dropped.or(dropped_of(&line));
            }
            dropped
        });
        let running = Running { child, reader };
        if attached_seen.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = running.stop();
            bail!("{name} did not attach within 60 s");
        }
        Ok(running)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ctrl-C, then what pkttrace said about losses: (lost, all events).
    fn stop(mut self) -> Result<Option<(u64, u64)>> {
        interrupt(self.pid());
        self.child.wait()?;
        Ok(self.reader.join().expect("output reader"))
    }
}

/// Runs `measure` while bpftrace watches `address` with `bpftrace_script`.
fn measure_bpftrace(address: Ipv4Addr) -> Result<Traffic> {
    let tracer = start_bpftrace(address)?;
    let traffic = measure();
    tracer.stop()?;
    traffic
}

/// bpftrace with `bpftrace_script`, attached.
fn start_bpftrace(address: Ipv4Addr) -> Result<Running> {
    let mut command = Command::new("bpftrace");
    command.args(["-e", &bpftrace_script(address)]);
    let tracer = Running::start(command, "bpftrace", false, "Attaching")?;
    // "Attaching" comes just before the attach itself.
    thread::sleep(Duration::from_secs(1));
    Ok(tracer)
}

/// pkttrace following `dest` from the namespace, attached.
fn start_pkttrace(pkttrace: &std::path::Path, dest: &str) -> Result<Running> {
    let mut command = Command::new(pkttrace);
    command.args([
        "follow",
        NETNS,
        dest,
        "--json",
        "--timeout",
        &(SECONDS * 2 + 70).to_string(),
    ]);
    Running::start(command, "pkttrace", true, "pkttrace: following")
}

/// Runs `measure` while pkttrace follows `dest` from the host, once it has
/// attached (start-up, with the verifier's work, is not what is measured).
fn measure_traced(pkttrace: &std::path::Path, dest: &str) -> Result<(Traffic, TracerUsage)> {
    let tracer = start_pkttrace(pkttrace, dest)?;
    let pid = tracer.pid();
    thread::sleep(Duration::from_secs(1));
    let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
    let started = Instant::now();
    let sampler = thread::spawn(move || {
        let mut peak_kib = 0u64;
        while started.elapsed() < Duration::from_secs(u64::from(SECONDS) * 2 + 2) {
            peak_kib = peak_kib.max(status_kib(pid, "VmRSS:").unwrap_or(0));
            thread::sleep(Duration::from_millis(100));
        }
        peak_kib
    });
    let traffic = measure();
    let peak_kib = sampler.join().expect("sampler");
    let cpu_seconds = cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    let traced_for = started.elapsed().as_secs_f64();
    let dropped = tracer.stop()?;
    Ok((
        traffic?,
        TracerUsage {
            cpu_seconds,
            peak_rss_mib: peak_kib as f64 / 1024.0,
            events_per_second: dropped.map(|(lost, all)| (all - lost) as f64 / traced_for),
            events_lost: dropped.map_or(0, |(lost, _)| lost),
        },
    ))
}

/// SIGINT, as Ctrl-C would.
fn interrupt(pid: u32) {
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

pub fn bench() -> Result<ExitCode> {
    setup::setup()?;
    run(&mut cargo(["build", "--release", "-p", "tracer"]))?;
    let pkttrace = target_dir()?.join("release/pkttrace");
    // The floor: the same programs at the same places, each returning at
    // once, so what is left is the cost of being attached at all. In a
    // folder of its own: the two builds would otherwise undo each other.
    let floor_dir = target_dir()?.join("bench-floor");
    run(cargo([
        "build",
        "--release",
        "-p",
        "tracer",
        "--features",
        "bench-floor",
    ])
    .env("CARGO_TARGET_DIR", &floor_dir))?;
    let floor_pkttrace = floor_dir.join("release/pkttrace");
    let _lab = Lab::up()?;

    let startups = |args: &[&str], ready_line: &str| -> Result<Vec<f64>> {
        (0..STARTUP_RUNS)
            .map(|_| startup_time(&pkttrace, args, ready_line).map(|t| t.as_secs_f64() * 1e3))
            .collect()
    };
    let startup_of = [
        (
            "follow",
            startups(
                &["follow", NETNS, OTHER_ADDR, "--timeout", "60"],
                "pkttrace: following",
            )?,
        ),
        (
            "dns",
            startups(
                &["dns", DNS_CONTAINER, "--timeout", "60"],
                "pkttrace: watching",
            )?,
        ),
    ];
    let mut baselines = Vec::new();
    let mut unrelated_runs = Vec::new();
    let mut bpftrace_runs = Vec::new();
    let mut followed_runs = Vec::new();
    let mut floor_runs = Vec::new();
    let other: Ipv4Addr = OTHER_ADDR.parse()?;
    for round in 0..ROUNDS {
        baselines.push(measure()?);
        // The traced settings take turns at each place of a round: one always
        // run at the same place would carry whatever that place costs (in
        // alternating A/B runs the first after a baseline measured higher).
        for setting in (0..4).map(|place| (place + round) % 4) {
            match setting {
                0 => unrelated_runs.push(measure_traced(&pkttrace, OTHER_ADDR)?),
                1 => bpftrace_runs.push(measure_bpftrace(other)?),
                2 => floor_runs.push(measure_traced(&floor_pkttrace, OTHER_ADDR)?.0),
                _ => followed_runs.push(measure_traced(&pkttrace, HOST_ADDR)?),
            }
        }
    }
    // The last round's runs are bracketed by a baseline after them too.
    baselines.push(measure()?);
    // What the kernel itself counts, steadier than rates on a noisy machine.
    let cost_of = |tracer: Running| -> Result<BpfCost> {
        let cost = bpf_cost_during_flood(&tracer);
        tracer.stop()?;
        cost
    };
    let pkttrace_cost = cost_of(start_pkttrace(&pkttrace, OTHER_ADDR)?)?;
    let bpftrace_cost = cost_of(start_bpftrace(other)?)?;
    // The most memory, CPU time and loss of any round; the median event rate.
    let worst = |runs: &[(Traffic, TracerUsage)]| -> TracerUsage {
        let rates: Vec<f64> = runs
            .iter()
            .filter_map(|(_, u)| u.events_per_second)
            .collect();
        TracerUsage {
            cpu_seconds: runs.iter().map(|(_, u)| u.cpu_seconds).fold(0.0, f64::max),
            peak_rss_mib: runs.iter().map(|(_, u)| u.peak_rss_mib).fold(0.0, f64::max),
            events_per_second: (!rates.is_empty()).then(|| median_spread(&rates).0),
            events_lost: runs.iter().map(|(_, u)| u.events_lost).max().unwrap_or(0),
        }
    };
    let (unrelated_usage, followed_usage) = (worst(&unrelated_runs), worst(&followed_runs));
    let median_of = |runs: &mut dyn Iterator<Item = Traffic>| {
        let runs: Vec<Traffic> = runs.collect();
        let tcp: Vec<f64> = runs.iter().map(|t| t.tcp_gbits).collect();
        let udp: Vec<f64> = runs.iter().map(|t| t.udp_kpps).collect();
        Traffic {
            tcp_gbits: median_spread(&tcp).0,
            udp_kpps: median_spread(&udp).0,
        }
    };
    let baseline = median_of(&mut baselines.iter().copied());
    let unrelated = median_of(&mut unrelated_runs.iter().map(|(t, _)| *t));
    let bpftrace = median_of(&mut bpftrace_runs.iter().copied());
    let floor = median_of(&mut floor_runs.iter().copied());
    let followed = median_of(&mut followed_runs.iter().map(|(t, _)| *t));

    println!(
        "\ncargo xtask bench: {SECONDS} s of iperf3 per run (median of {ROUNDS} alternating rounds), namespace {NETNS} -> host over a veth"
    );
    println!(
        "{:<38} {:>10} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "setting", "TCP Gbit/s", "UDP-64 kpps", "tracer CPU s", "peak MiB", "events/s", "lost"
    );
    let row = |name: &str, t: Traffic, usage: Option<&TracerUsage>| {
        let dash = || "-".to_string();
        let (cpu, rss, rate, lost) = usage.map_or((dash(), dash(), dash(), dash()), |u| {
            (
                format!("{:.2}", u.cpu_seconds),
                format!("{:.1}", u.peak_rss_mib),
                u.events_per_second
                    .map_or(dash(), |rate| format!("{rate:.0}")),
                u.events_lost.to_string(),
            )
        });
        println!(
            "{name:<38} {:>10.2} {:>12.1} {cpu:>12} {rss:>10} {rate:>10} {lost:>10}",
            t.tcp_gbits, t.udp_kpps
        );
    };
    row("no pkttrace", baseline, None);
    row(
        "pkttrace watching another address",
        unrelated,
        Some(&unrelated_usage),
    );
    row("bpftrace watching another address", bpftrace, None);
    row("pkttrace's programs returning at once", floor, None);
    row(
        "pkttrace following this traffic",
        followed,
        Some(&followed_usage),
    );

    let mut missed = Vec::new();
    // Each round's own ratio, against the mean of the baselines just before
    // and just after the round: they saw the same machine, whichever way its
    // speed drifted meanwhile.
    let shares = |traced: &[Traffic], rate: fn(&Traffic) -> f64| -> Vec<f64> {
        baselines
            .windows(2)
            .zip(traced)
            .map(|(around, traced)| rate(traced) / ((rate(&around[0]) + rate(&around[1])) / 2.0))
            .collect()
    };
    let unrelated_traffic: Vec<Traffic> = unrelated_runs.iter().map(|(t, _)| *t).collect();
    let tcp = |t: &Traffic| t.tcp_gbits;
    let udp = |t: &Traffic| t.udp_kpps;
    for (what, rate, goal) in [
        ("TCP", tcp as fn(&Traffic) -> f64, UNRELATED_TCP_MIN_SHARE),
        ("64-byte UDP", udp, UNRELATED_SMALL_PACKETS_MIN_SHARE),
    ] {
        let (median, low, high) = median_spread(&shares(&unrelated_traffic, rate));
        let (with_bpftrace, ..) = median_spread(&shares(&bpftrace_runs, rate));
        let (attached_only, ..) = median_spread(&shares(&floor_runs, rate));
        println!(
            "bench: unrelated {what} traffic kept {:.0}% of its rate (median; {:.0}–{:.0}% over {ROUNDS} rounds; goal: {:.0}%; with bpftrace instead: {:.0}%; with pkttrace's programs returning at once: {:.0}%)",
            median * 100.0,
            low * 100.0,
            high * 100.0,
            goal * 100.0,
            with_bpftrace * 100.0,
            attached_only * 100.0
        );
        if median < goal {
            // Whether anything pkttrace's programs do could meet it.
            let floor = if attached_only < goal {
                format!(
                    " (its programs returning at once kept {:.0}%)",
                    attached_only * 100.0
                )
            } else {
                String::new()
            };
            missed.push(format!(
                "unrelated {what} traffic kept only {:.0}% of its rate{floor}",
                median * 100.0
            ));
        }
    }
    println!(
        "bench: BPF time per unrelated 64-byte datagram (kernel.bpf_stats_enabled, one flood): pkttrace {:.0} ns in {:.1} program runs; bpftrace {:.0} ns in {:.1} runs",
        pkttrace_cost.ns, pkttrace_cost.runs, bpftrace_cost.ns, bpftrace_cost.runs
    );
    let followed_traffic: Vec<Traffic> = followed_runs.iter().map(|(t, _)| *t).collect();
    let (followed_share, low, high) = median_spread(&shares(&followed_traffic, tcp));
    println!(
        "bench: the TCP stream pkttrace followed kept {:.0}% of its rate (median; {:.0}–{:.0}% over {ROUNDS} rounds; goal: {:.0}%)",
        followed_share * 100.0,
        low * 100.0,
        high * 100.0,
        FOLLOWED_TCP_MIN_SHARE * 100.0
    );
    if followed_share < FOLLOWED_TCP_MIN_SHARE {
        missed.push(format!(
            "the followed TCP stream kept only {:.0}% of its rate",
            followed_share * 100.0
        ));
    }
    for (command, samples) in &startup_of {
        let (startup, fastest, slowest) = median_spread(samples);
        println!(
            "bench: {command} was ready in {startup:.0} ms (median; {fastest:.0}–{slowest:.0} ms over {STARTUP_RUNS} starts; goal: {} ms)",
            STARTUP_GOAL.as_millis()
        );
        if startup > STARTUP_GOAL.as_secs_f64() * 1e3 {
            missed.push(format!("{command} took {startup:.0} ms to be ready"));
        }
    }
    for usage in [&unrelated_usage, &followed_usage] {
        if usage.peak_rss_mib > MAX_RSS_MIB {
            missed.push(format!(
                "pkttrace peaked at {:.0} MiB (goal: {MAX_RSS_MIB:.0} MiB)",
                usage.peak_rss_mib
            ));
        }
    }
    if missed.is_empty() {
        println!("bench: all goals met (pkttrace stayed under {MAX_RSS_MIB:.0} MiB)");
        Ok(ExitCode::SUCCESS)
    } else {
        for line in &missed {
            println!("bench: goal missed: {line}");
        }
        bail!("{} benchmark goal(s) missed", missed.len())
    }
}
