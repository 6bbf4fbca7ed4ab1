//! `cargo xtask setup`: brings a fresh machine to the point where the tracer
//! builds and the lab runs. Every step checks before it acts, so a second run
//! takes seconds.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{cmd, describe, read, run, succeeds};

const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "docker.io",
    "busybox-static",
    "dnsmasq-base",
    "bpftool",
    // The bench's side-by-side: what a user would otherwise reach for.
    "bpftrace",
    "iptables",
    "nftables",
    "iproute2",
    "bridge-utils",
    "graphviz",
    // cargo xtask bench: the traffic generator whose throughput pkttrace must not dent.
    "iperf3",
    // A UDP echo server in the tests (busybox nc speaks no UDP).
    "python3-minimal",
    // The tests read `follow --pcap` captures back as Wireshark would.
    "tshark",
    // The packages step checks the installed man pages with `man -w`.
    "man-db",
    // cargo-deb reads the binary's libc dependency with dpkg-shlibdeps.
    "dpkg-dev",
];

/// Built locally: no image registry is reachable from these machines.
pub const LAB_IMAGE: &str = "pkttrace-lab:latest";
const APPLETS: &[&str] = &[
    "sh", "ping", "wget", "nc", "httpd", "nslookup", "ip", "sleep", "cat", "ls", "ps", "ifconfig",
    "route", "netstat", "echo", "true",
];
const DOCKERD_LOG: &str = "/var/log/pkttrace-dockerd.log";
const DOCKER_WAIT: Duration = Duration::from_secs(30);

pub fn setup() -> Result<()> {
    let started = Instant::now();
    packages()?;
    rust_src()?;
    bpf_linker()?;
    cargo_deb()?;
    mount_if_missing("bpf", "/sys/fs/bpf")?;
    mount_if_missing("tracefs", "/sys/kernel/tracing")?;
    docker_daemon()?;
    lab_image()?;
    println!(
        "setup: machine ready ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn packages() -> Result<()> {
    // One query for all of them; unknown packages are reported on stderr only.
    let out = cmd("dpkg-query", ["-W", "-f=${Package} ${Status}\n"])
        .args(PACKAGES)
        .stdin(Stdio::null())
        .output()
        .context("cannot run dpkg-query: is this a Debian machine?")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let installed: HashSet<&str> = listing
        .lines()
        .filter_map(|line| line.strip_suffix(" install ok installed"))
        .collect();
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing {}", missing.join(" "));
    run(&mut cmd("apt-get", ["update"]))?;
    run(cmd("apt-get", ["install", "-y"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn rust_src() -> Result<()> {
    let installed = read(&mut cmd(
        "rustup",
        ["component", "list", "--toolchain", "nightly", "--installed"],
    ))
    .context("the nightly toolchain is needed to build the eBPF programs")?;
    if installed.lines().any(|c| c.starts_with("rust-src")) {
        return Ok(());
    }
    run(&mut cmd(
        "rustup",
        ["component", "add", "rust-src", "--toolchain", "nightly"],
    ))
}

fn bpf_linker() -> Result<()> {
    if succeeds(&mut cmd("bpf-linker", ["--version"])) {
        return Ok(());
    }
    println!("setup: building bpf-linker against LLVM 22 (about a minute)");
    // Without LLVM_PREFIX the link fails with `-lLLVM` not found. The version
    // is pinned (with its lock file) so a new release cannot break a fresh machine.
    run(cmd(
        "cargo",
        [
            "+nightly",
            "install",
            "bpf-linker@0.13.0",
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ],
    )
    .env("LLVM_PREFIX", "/usr/lib/llvm-22"))
}

/// `cargo xtask dist` makes the .deb with cargo-deb.
fn cargo_deb() -> Result<()> {
    if succeeds(&mut cmd("cargo", ["deb", "--version"])) {
        return Ok(());
    }
    println!("setup: installing cargo-deb");
    // Pinned with its lock file, as bpf-linker is.
    run(&mut cmd(
        "cargo",
        ["install", "cargo-deb@3.8.0", "--locked"],
    ))
}

fn mount_if_missing(fstype: &str, target: &str) -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
    let mounted = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(target) && fields.next() == Some(fstype)
    });
    if mounted {
        return Ok(());
    }
    run(&mut cmd("mount", ["-t", fstype, fstype, target]))
}

fn docker_daemon() -> Result<()> {
    if succeeds(&mut cmd("docker", ["info"])) {
        return Ok(());
    }
    // A daemon that is still starting answers soon; a second one would fight it for its pid file.
    if !process_running("dockerd")? {
        println!("setup: starting dockerd (log: {DOCKERD_LOG})");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(DOCKERD_LOG)
            .with_context(|| format!("cannot open {DOCKERD_LOG}"))?;
        // `setsid -f`: dockerd gets its own session, so it outlives xtask and its terminal.
        run(cmd("setsid", ["-f", "dockerd"])
            .stdout(log.try_clone()?)
            .stderr(log))?;
    }
    let deadline = Instant::now() + DOCKER_WAIT;
    loop {
        let mut probe = cmd("docker", ["info"]);
        let err = match read(&mut probe) {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        if Instant::now() >= deadline {
            return Err(err.context(format!(
                "dockerd did not answer within {} s (see {DOCKERD_LOG}); last try: `{}`",
                DOCKER_WAIT.as_secs(),
                describe(&probe)
            )));
        }
        sleep(Duration::from_millis(500));
    }
}

fn process_running(name: &str) -> Result<bool> {
    for entry in fs::read_dir("/proc").context("cannot list /proc")? {
        let comm = entry?.path().join("comm");
        // Processes may exit while we look, and non-pid entries have no comm.
        if fs::read_to_string(comm).is_ok_and(|c| c.trim_end() == name) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn lab_image() -> Result<()> {
    if succeeds(&mut cmd("docker", ["image", "inspect", LAB_IMAGE])) {
        return Ok(());
    }
    println!("setup: building {LAB_IMAGE} from busybox-static");
    let root = TempDir::create("pkttrace-lab-rootfs")?;
    let bin = root.path().join("bin");
    fs::create_dir_all(&bin)?;
    // Mount points and files Docker fills in; importing them empty keeps the rootfs tidy.
    for dir in ["etc", "tmp", "proc", "sys", "dev", "root"] {
        fs::create_dir(root.path().join(dir))?;
    }
    fs::copy("/bin/busybox", bin.join("busybox"))
        .context("cannot copy /bin/busybox (busybox-static)")?;
    for applet in APPLETS {
        symlink("busybox", bin.join(applet))?;
    }
    docker_import(root.path(), r#"CMD ["sleep","infinity"]"#, LAB_IMAGE)
}

/// Makes the folder `root` the filesystem of a new local image named
/// `image`; `change` is a Dockerfile instruction such as `CMD [...]`.
pub fn docker_import(root: &Path, change: &str, image: &str) -> Result<()> {
    let mut tar = cmd(
        "tar",
        [Path::new("-C"), root, Path::new("-c"), Path::new(".")],
    )
    .stdout(Stdio::piped())
    .spawn()
    .context("cannot start tar")?;
    let archive = tar.stdout.take().context("tar has no stdout")?;
    let imported = read(cmd("docker", ["import", "--change", change, "-", image]).stdin(archive));
    let tar_status = tar.wait()?;
    imported?;
    if !tar_status.success() {
        bail!("tar of the image rootfs failed ({tar_status})");
    }
    Ok(())
}

/// A scratch folder removed on drop, also when a step fails.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn create(prefix: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        // A crashed earlier run with our pid may have left it.
        if path.exists() {
            fs::remove_dir_all(&path)?;
        }
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
