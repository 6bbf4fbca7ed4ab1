//! `cargo xtask test`: the whole check CI runs. Every step runs even after an
//! earlier one failed (except the integration tests, which need a fresh
//! tracer binary), and the run closes with one summed-up result line.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail, ensure};

use crate::cmd::{cmd, describe, read, run, succeeds};
use crate::{cargo, dist, lab, setup, target_dir, workspace_root};

pub fn test() -> Result<ExitCode> {
    setup::setup()?;
    let mut totals = Totals::default();
    let mut failed = Vec::new();

    // tracer-ebpf builds only for the bpf target, and integration tests come later.
    // --no-fail-fast: one failing test binary must not hide the others' results.
    let mut unit = cargo([
        "test",
        "--workspace",
        "--no-fail-fast",
        "--exclude",
        "integration-tests",
        "--exclude",
        "tracer-ebpf",
    ]);
    if !run_counting(&mut unit, &mut totals)? {
        failed.push("unit tests");
    }

    // Clippy is part of the gate: the host crates, then the eBPF crate for its target.
    let lints = [
        cargo([
            "clippy",
            "--workspace",
            "--exclude",
            "tracer-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        cargo([
            "+nightly",
            "clippy",
            "-p",
            "tracer-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]),
    ];
    for mut lint in lints {
        println!("xtask test: {}", describe(&lint));
        if let Err(err) = crate::cmd::run(&mut lint) {
            eprintln!("xtask test: {err:#}");
            failed.push("clippy");
        }
    }

    // The tracer's own tests that need root and a real lab are marked #[ignore].
    let mut privileged = cargo([
        "test",
        "-p",
        "tracer",
        "--no-fail-fast",
        "--",
        "--ignored",
        "--test-threads=1",
    ]);
    if !run_counting(&mut privileged, &mut totals)? {
        failed.push("privileged tracer tests");
    }

    let mut build = cargo(["build", "-p", "tracer"]);
    println!("xtask test: {}", describe(&build));
    let built = crate::cmd::run(&mut build);
    if let Err(err) = &built {
        eprintln!("xtask test: {err:#}");
        // Testing an older binary left in target/ would prove nothing.
        failed.push("tracer build (integration tests skipped)");
    } else {
        let bin = target_dir()?.join("debug/pkttrace");
        let mut integration = cargo([
            "test",
            "-p",
            "integration-tests",
            "--no-fail-fast",
            "--",
            "--test-threads=1",
        ]);
        integration.env("PKTTRACE_BIN", &bin);
        if !run_counting(&mut integration, &mut totals)? {
            failed.push("integration tests");
        }
    }

    println!("xtask test: packages (the .deb installed and removed, the image run)");
    if let Err(err) = packages() {
        eprintln!("xtask test: packages: {err:#}");
        failed.push("packages");
    }

    if failed.is_empty() {
        println!("xtask test: all steps passed");
    } else {
        println!("xtask test: FAILED: {}", failed.join(", "));
    }
    // One line in the form CI reads, summing every test binary's result.
    println!(
        "total: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Builds the .deb and the image as users get them, installs the package and
/// runs it as a user would, removes it and checks nothing is left, then runs
/// the image with the documented flags. Package and image are removed also
/// when a check fails.
pub fn packages() -> Result<()> {
    let packages = dist::dist()?;
    let expected_version = format!("pkttrace {} ({})", dist::VERSION, head_commit()?);
    let status = read(&mut cmd("dpkg-query", ["-W", "-f=${Status}", "pkttrace"]));
    ensure!(
        !status.is_ok_and(|s| s.ends_with("ok installed")),
        "pkttrace is installed already: remove it first (dpkg -r pkttrace)"
    );
    let _lab = Lab::up()?;
    let installed_hops = {
        let _installed = Installed;
        run(&mut cmd("dpkg", [Path::new("-i"), &packages.deb]))?;
        check_installed(&packages.deb, &expected_version)?;
        let mut follow = plain("/usr/bin/pkttrace", &[]);
        follow.args(FOLLOW_ON_THE_LAB);
        hops_followed(&read(&mut follow)?)?
    };
    let listing = read(&mut cmd("dpkg-deb", [Path::new("-c"), &packages.deb]))?;
    // symlink_metadata: a link left behind counts, even one to nothing.
    let left: Vec<PathBuf> = packaged_paths(&listing)
        .into_iter()
        .filter(|path| path.symlink_metadata().is_ok())
        .collect();
    ensure!(left.is_empty(), "`dpkg -r pkttrace` left {left:?}");

    let _image = Image;
    let image = dist::image()?;
    let docker_run = |args: &[&str]| {
        read(
            cmd("docker", ["run"])
                .args(dist::DOCKER_RUN_FLAGS)
                .arg(&image)
                .args(args),
        )
    };
    let version = docker_run(&["--version"])?;
    ensure!(
        version.trim() == expected_version,
        "the image says `{}`, expected `{expected_version}`",
        version.trim()
    );
    let topology = docker_run(&["topology", "--json"])?;
    let topology: serde_json::Value = serde_json::from_str(&topology)
        .context("`topology --json` in the image printed no JSON")?;
    // Docker reached from inside: the flags give it the host's engine.
    ensure!(
        topology["docker_error"].is_null(),
        "`topology --json` in the image: {}",
        topology["docker_error"]
    );
    let names = container_names(&topology);
    for lab_container in [lab::CONTAINER, lab::DNS_CLIENT, lab::DNS_SERVER] {
        ensure!(
            names.contains(&lab_container),
            "`topology` in the image names {names:?}, not {lab_container}"
        );
    }
    let image_hops = hops_followed(&docker_run(&FOLLOW_ON_THE_LAB)?)?;
    ensure!(
        image_hops == installed_hops,
        "follow in the image told {image_hops:?}, the installed binary {installed_hops:?}"
    );
    dns_in_the_image(&image)
}

/// `follow` on the lab's upstream: the same story from the package and the image.
const FOLLOW_ON_THE_LAB: [&str; 6] = [
    "follow",
    lab::CONTAINER,
    lab::UPSTREAM_IP,
    "--probe",
    "icmp",
    "--json",
];

/// `command` run from `/` with a plain PATH (no cargo).
fn plain(program: &str, args: &[&str]) -> Command {
    let mut command = cmd("env", ["-i", "PATH=/usr/bin:/bin:/usr/sbin:/sbin", program]);
    command.args(args).current_dir("/");
    command
}

/// Every hop of the IP journeys `follow --json` printed, as (namespace,
/// kind): what must not depend on where pkttrace runs.
fn hops_followed(json_lines: &str) -> Result<Vec<(String, String)>> {
    let mut hops = Vec::new();
    for line in json_lines.lines() {
        let record: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        if record["record"] != "journey" || record["tuple"]["protocol"] == "arp" {
            continue;
        }
        for hop in record["hops"].as_array().into_iter().flatten() {
            hops.push((hop["namespace"].to_string(), hop["kind"].to_string()));
        }
    }
    ensure!(!hops.is_empty(), "follow told no journey: {json_lines}");
    Ok(hops)
}

fn container_names(topology: &serde_json::Value) -> Vec<&str> {
    topology["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// `dns` in the image tells a query of the lab's client, answered with
/// the address Docker gave the server.
fn dns_in_the_image(image: &str) -> Result<()> {
    let server_ip = read(&mut cmd(
        "docker",
        [
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            lab::DNS_SERVER,
        ],
    ))?;
    let mut tracer = cmd("docker", ["run"])
        .args(dist::DOCKER_RUN_FLAGS)
        .arg(image)
        .args([
            "dns",
            lab::DNS_CLIENT,
            "--json",
            "--count",
            "1",
            "--timeout",
            "30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the image's dns")?;
    // Asked again until it is told: the tracer attaches at its own pace.
    for _ in 0..30 {
        if tracer.try_wait()?.is_some() {
            break;
        }
        let _ = succeeds(&mut cmd(
            "docker",
            [
                "exec",
                lab::DNS_CLIENT,
                "nslookup",
                "-type=a",
                lab::DNS_SERVER,
            ],
        ));
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let out = tracer.wait_with_output()?;
    ensure!(
        out.status.success(),
        "dns in the image: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    let query: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or_default())
        .with_context(|| format!("dns in the image printed no JSON: {stdout}"))?;
    ensure!(
        query["answers"][0]["data"] == server_ip.trim(),
        "dns in the image: {query}"
    );
    Ok(())
}

/// The lab for the packages' checks, taken down on drop (also when its
/// start failed half-way). A lab already up is someone's: left alone.
struct Lab;

impl Lab {
    fn up() -> Result<Self> {
        ensure!(
            !succeeds(&mut cmd("docker", ["inspect", lab::CONTAINER])),
            "the lab is up: take it down first (cargo xtask lab down)"
        );
        let lab = Self;
        lab::up(false)?;
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(error) = lab::down() {
            eprintln!("xtask test: cannot take the lab down: {error:#}");
        }
    }
}

/// The installed package from `/` with a plain PATH (no cargo): the
/// version names this commit, the man page and the bash completion are
/// where man and bash look, and every packaged file is there.
fn check_installed(deb: &Path, expected_version: &str) -> Result<()> {
    let version = read(&mut plain("/usr/bin/pkttrace", &["--version"]))?;
    ensure!(
        version.trim() == expected_version,
        "/usr/bin/pkttrace --version says `{}`, expected `{expected_version}`",
        version.trim()
    );
    let page = read(&mut plain("man", &["-w", "pkttrace-follow"]))?;
    ensure!(
        page.trim() == "/usr/share/man/man1/pkttrace-follow.1.gz",
        "man -w pkttrace-follow found `{}`",
        page.trim()
    );
    let completion = Path::new("/usr/share/bash-completion/completions/pkttrace");
    ensure!(completion.is_file(), "{} is missing", completion.display());
    let listing = read(&mut cmd("dpkg-deb", [Path::new("-c"), deb]))?;
    let missing: Vec<PathBuf> = packaged_paths(&listing)
        .into_iter()
        .filter(|path| !path.exists())
        .collect();
    ensure!(missing.is_empty(), "installed, yet missing: {missing:?}");
    Ok(())
}

/// `git log`'s short hash and date of HEAD, as the build script writes them.
fn head_commit() -> Result<String> {
    let commit = read(cmd("git", ["log", "-1", "--format=%h %cs"]).current_dir(workspace_root()))?;
    if commit.trim().is_empty() {
        bail!("git log names no commit");
    }
    Ok(commit.trim().to_string())
}

/// The files and links `dpkg-deb -c` lists (folders such as /usr/bin are
/// shared with other packages and stay).
fn packaged_paths(listing: &str) -> Vec<PathBuf> {
    listing
        .lines()
        .filter(|line| !line.starts_with('d'))
        .filter_map(|line| {
            // A link's line ends with `-> target`: the path comes before.
            let line = line.split(" -> ").next()?;
            let path = line.split_whitespace().last()?;
            Some(Path::new("/").join(path.trim_start_matches("./")))
        })
        .collect()
}

/// Removes the pkttrace package on drop, also when a check failed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        // -r as the docs tell users: nothing of it may be left after.
        if !succeeds(&mut cmd("dpkg", ["-r", "pkttrace"])) {
            eprintln!("xtask test: `dpkg -r pkttrace` failed: remove it by hand");
        }
    }
}

/// Removes the image's names on drop: rebuilding it takes seconds.
struct Image;

impl Drop for Image {
    fn drop(&mut self) {
        let versioned = format!("{}:{}", dist::IMAGE, dist::VERSION);
        let latest = format!("{}:latest", dist::IMAGE);
        dist::remove_images(&[&versioned, &latest]);
    }
}

/// Passes the command's stdout through as it comes and adds up the
/// `test result:` lines of cargo test; true when the command succeeded.
fn run_counting(command: &mut Command, totals: &mut Totals) -> Result<bool> {
    println!("xtask test: {}", describe(command));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", describe(command)))?;
    let mut pipe = child.stdout.take().context("no stdout pipe")?;
    let mut stdout = io::stdout();
    let mut chunk = [0u8; 8192];
    let mut line = Vec::new();
    loop {
        let n = pipe.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        // Forward raw chunks: "test x ... " shows before its verdict arrives.
        stdout.write_all(&chunk[..n])?;
        stdout.flush()?;
        for &byte in &chunk[..n] {
            if byte == b'\n' {
                totals.add(&String::from_utf8_lossy(&line));
                line.clear();
            } else {
                line.push(byte);
            }
        }
    }
    Ok(child.wait()?.success())
}

#[derive(Default, Debug, PartialEq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Reads `test result: ok. 3 passed; 1 failed; 2 ignored; 0 measured; ...`.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        let counts = rest.split_once(". ").map_or(rest, |(_, counts)| counts);
        for part in counts.split("; ") {
            let Some((number, word)) = part.split_once(' ') else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match word {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::{Totals, packaged_paths};

    #[test]
    fn the_package_listing_gives_files_and_links_not_folders() {
        let listing = "\
drwxr-xr-x 0/0               0 2026-12-08 04:20 ./usr/bin/
-rwxr-xr-x 0/0        12345678 2026-12-08 04:20 ./usr/bin/pkttrace
-rw-r--r-- 0/0            1234 2026-12-08 04:20 ./usr/share/man/man1/pkttrace.1.gz
lrwxrwxrwx 0/0               0 2026-12-08 04:20 ./usr/bin/pt -> pkttrace
";
        assert_eq!(
            packaged_paths(listing),
            [
                "/usr/bin/pkttrace",
                "/usr/share/man/man1/pkttrace.1.gz",
                "/usr/bin/pt"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn sums_cargo_test_result_lines() {
        let mut totals = Totals::default();
        totals.add("test result: ok. 3 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        totals.add("test result: FAILED. 1 passed; 4 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.50s");
        totals.add("test lab::pings ... ok");
        assert_eq!(
            totals,
            Totals {
                passed: 4,
                failed: 4,
                ignored: 2
            }
        );
    }
}
