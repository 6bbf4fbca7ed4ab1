//! Thin wrappers around `std::process::Command` whose errors name the command
//! that failed, so a broken step says what it ran and why.

use std::ffi::OsStr;
use std::io;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

pub fn cmd<P, I, S>(program: P, args: I) -> Command
where
    P: AsRef<OsStr>,
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    command
}

/// The command line as a user would type it, for messages.
pub fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

fn spawn_error(command: &Command, err: io::Error) -> anyhow::Error {
    let hint = if err.kind() == io::ErrorKind::NotFound {
        " (not installed? run `cargo xtask setup`)"
    } else {
        ""
    };
    anyhow::Error::new(err).context(format!("cannot start `{}`{hint}", describe(command)))
}

/// Runs with the terminal's stdout/stderr; fails on a non-zero exit.
pub fn run(command: &mut Command) -> Result<()> {
    let status = command
        .stdin(Stdio::null())
        .status()
        .map_err(|e| spawn_error(command, e))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(command));
    }
    Ok(())
}

/// Runs and returns stdout; a failure quotes the command's stderr. Stdin is
/// left to the caller (`docker import` reads a pipe).
pub fn read(command: &mut Command) -> Result<String> {
    let out = command.output().map_err(|e| spawn_error(command, e))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(command),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout)
        .with_context(|| format!("`{}` printed non-UTF-8", describe(command)))
}

/// For probes such as `docker info`: true when it runs and exits 0.
pub fn succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
