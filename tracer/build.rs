//! Builds the eBPF objects (crate tracer-ebpf, for the bpf target, with the
//! nightly toolchain and bpf-linker) so `cargo build` embeds them in pkttrace,
//! and names the commit `pkttrace --version` reports.
use std::path::Path;
use std::process::Command;

fn main() -> anyhow::Result<()> {
    version_with_commit();
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer-ebpf");
    // The bench's floor build (feature bench-floor): programs that return at once.
    let floor = std::env::var_os("CARGO_FEATURE_BENCH_FLOOR").is_some();
    let package = aya_build::Package {
        name: "tracer-ebpf",
        root_dir: ebpf_dir,
        features: if floor { &["floor"] } else { &[] },
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}

/// `PKTTRACE_VERSION`, e.g. `0.1.0 (1fd7110 2026-12-08)`: the short hash and
/// date of the commit built, or `unknown commit` without git (a source tarball).
fn version_with_commit() {
    let commit = git(&["log", "-1", "--format=%h %cs"])
        .filter(|line| !line.is_empty())
        .unwrap_or_else(|| "unknown commit".to_string());
    println!(
        "cargo:rustc-env=PKTTRACE_VERSION={} ({commit})",
        env!("CARGO_PKG_VERSION")
    );
    // Rebuilt when HEAD moves: HEAD itself (a checkout), the branch's ref (a
    // commit) and packed-refs. `--git-path` finds them also in a worktree,
    // where .git is a file. A path that does not exist would make cargo rerun
    // this script on every build, so only existing ones are named.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name]) else {
            continue;
        };
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// git's trimmed output, run in this package's folder; None when git is
/// missing or fails (not a checkout).
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}
