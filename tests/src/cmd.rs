//! Running system tools: errors name the command and quote its stderr, and
//! cleanup code gets a variant that only warns (Drop cannot fail).

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use anyhow::{Result, anyhow, bail};

pub(crate) fn cmd<P, I, S>(program: P, args: I) -> Command
where
    P: AsRef<OsStr>,
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    command
}

pub(crate) fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs to completion whatever the exit status; fails only if it cannot start.
pub(crate) fn output(command: &mut Command) -> Result<Output> {
    command
        .output()
        .map_err(|e| anyhow!(e).context(format!("cannot start `{}`", describe(command))))
}

/// Runs and returns stdout; a non-zero exit is an error quoting stderr.
pub(crate) fn run(command: &mut Command) -> Result<String> {
    let out = output(command)?;
    if !out.status.success() {
        let mut message = format!("`{}` failed ({})", describe(command), out.status);
        for (label, text) in [("stderr", &out.stderr), ("stdout", &out.stdout)] {
            let text = String::from_utf8_lossy(text);
            if !text.trim().is_empty() {
                message.push_str(&format!("\n{label}: {}", text.trim()));
            }
        }
        bail!(message);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// For Drop and sweeps: a failure is printed (the test's output shows it),
/// never raised, so one failed step does not stop the rest of the cleanup.
pub(crate) fn cleanup(command: &mut Command) {
    if let Err(err) = run(command) {
        eprintln!("lab cleanup: {err:#}");
    }
}

/// For probes: true when it runs and exits 0.
pub(crate) fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The kernel's own answer to `ip -j route get <dst>`, inside the namespace
/// at `netns` (a path for `nsenter --net=`) or in the host's: the route, or
/// the error text when there is none ("RTNETLINK answers: Network is unreachable").
pub fn route_get(
    netns: Option<&str>,
    dst: impl Into<std::net::IpAddr>,
) -> Result<serde_json::Value> {
    let dst = dst.into().to_string();
    let net = netns.map(|path| format!("--net={path}"));
    let mut command = match &net {
        Some(net) => cmd("nsenter", [net.as_str(), "ip", "-j", "route", "get", &dst]),
        None => cmd("ip", ["-j", "route", "get", &dst]),
    };
    let out = output(&mut command)?;
    if !out.status.success() {
        let error = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Ok(serde_json::Value::String(error));
    }
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(routes[0].clone())
}

/// For a test's ground truth: runs `program args`, fails with its stderr on
/// a non-zero exit, and returns stdout.
pub fn tool(program: &str, args: &[&str]) -> Result<String> {
    run(&mut cmd(program, args))
}

/// `tool`'s output read as JSON (`ip -j …`, `bpftool -j …`).
pub fn tool_json(program: &str, args: &[&str]) -> Result<serde_json::Value> {
    let text = tool(program, args)?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow!("not JSON from {program} {args:?}: {e}: {text}"))
}
