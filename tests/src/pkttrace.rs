//! Running the pkttrace binary under test, always with a time limit.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::cmd::{cmd, describe, succeeds};

/// What [`pkttrace`] allows before it interrupts the tracer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// After SIGINT the tracer gets this long to detach and print before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long loading and attaching may take (a debug build on a busy machine).
const ATTACH_LIMIT: Duration = Duration::from_secs(60);
/// The lines pkttrace prints once every program is attached: traffic sent
/// after one of them is seen whole.
const ATTACHED_LINES: [&str; 2] = ["pkttrace: following ", "pkttrace: watching "];

/// Names of the programs pkttrace loads, as `bpftool prog show` lists them.
fn pkttrace_programs_loaded() -> Result<usize> {
    let out = String::from_utf8(
        cmd("bpftool", ["prog", "show"])
            .output()
            .context("cannot run bpftool")?
            .stdout,
    )?;
    Ok(out
        .lines()
        .filter(|l| l.contains("name pkttrace_") || l.contains("name net_dev_queue"))
        .count())
}

/// Netfilter links attached now, in every namespace (pkttrace's are the
/// only ones on these machines). Older bpftool names the type by number.
pub fn netfilter_links() -> Result<usize> {
    let out = cmd("bpftool", ["-j", "link", "show"])
        .output()
        .context("cannot run bpftool")?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("bpftool: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|link| link["type"] == "netfilter" || link["type"] == 10)
        .count())
}

/// True once at least `count` netfilter links are attached (within 10 s).
pub fn netfilter_links_at_least(count: usize) -> Result<bool> {
    for _ in 0..100 {
        if netfilter_links()? >= count {
            return Ok(true);
        }
        sleep(Duration::from_millis(100));
    }
    Ok(false)
}

/// True once at least `count` pkttrace programs are loaded (within 10 s).
pub fn programs_loaded_at_least(count: usize) -> Result<bool> {
    for _ in 0..100 {
        if pkttrace_programs_loaded()? >= count {
            return Ok(true);
        }
        sleep(Duration::from_millis(100));
    }
    Ok(false)
}

/// True once no pkttrace program is loaded. The kernel frees a program after
/// its last file descriptor closes, a moment after the process is gone.
pub fn nothing_left_attached() -> Result<bool> {
    for _ in 0..50 {
        if pkttrace_programs_loaded()? == 0 {
            return Ok(true);
        }
        sleep(Duration::from_millis(100));
    }
    Ok(false)
}

/// The names of pkttrace's nf_tables trace tables in the namespace at
/// `netns` (an nsfs path; None: the host's), as `nft list tables` lists them.
pub fn trace_tables(netns: Option<&str>) -> Result<Vec<String>> {
    Ok(nft_tables(netns)?
        .into_iter()
        .filter(|table| table.contains("pkttrace_"))
        .collect())
}

/// Every nf_tables table in the namespace at `netns` (None: the host's).
pub fn nft_tables(netns: Option<&str>) -> Result<Vec<String>> {
    let mut nft = match netns {
        Some(path) => cmd("nsenter", [format!("--net={path}"), "nft".into()]),
        None => cmd("nft", [] as [&str; 0]),
    };
    let out = nft
        .args(["list", "tables"])
        .output()
        .context("cannot run nft")?;
    ensure!(
        out.status.success(),
        "nft list tables: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_string)
        .collect())
}

/// The binary under test: `$PKTTRACE_BIN`, else `pkttrace` in the profile
/// folder this test binary was built into (`<target>/debug/deps/..` →
/// `<target>/debug/pkttrace`, which honours CARGO_TARGET_DIR).
pub fn pkttrace_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PKTTRACE_BIN") {
        return bin.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("pkttrace")))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pkttrace"))
}

/// Runs pkttrace with `args` to its end, interrupting it after [`DEFAULT_TIMEOUT`].
pub fn pkttrace<I, S>(args: I) -> Result<RunOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Pkttrace::spawn(args)?.wait(DEFAULT_TIMEOUT)
}

/// Runs pkttrace to its end with one more environment variable.
pub fn pkttrace_with_env<I, S>(env: (&str, &str), args: I) -> Result<RunOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Pkttrace::spawn_with_env(env, args)?.wait(DEFAULT_TIMEOUT)
}

/// How a run ended, with everything it printed.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// It was still running at the time limit and had to be interrupted.
    pub timed_out: bool,
}

impl RunOutput {
    /// Exited 0 on its own, within the time limit.
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.success()
    }
}

/// Readable in assertion messages.
impl fmt::Display for RunOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let timed_out = if self.timed_out { ", timed out" } else { "" };
        write!(
            f,
            "{}{timed_out}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A pkttrace process running in the background, e.g. while a test makes
/// traffic. End it with [`wait`](Self::wait) or [`stop`](Self::stop);
/// dropping it kills it.
#[derive(Debug)]
pub struct Pkttrace {
    child: Child,
    reaped: bool,
    stdout: Option<JoinHandle<Vec<u8>>>,
    /// Filled as the tracer writes, so a test can wait for a line.
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Pkttrace {
    pub fn spawn<I, S>(args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_program(pkttrace_bin(), args)
    }

    /// Starts it and returns once it says it is attached, so that traffic
    /// made next is traced from its first packet on (a fixed sleep races
    /// with a slow load).
    pub fn spawn_attached<I, S>(args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn(args)?.attached(ATTACH_LIMIT)
    }

    /// Returns once stderr has one of the [`ATTACHED_LINES`].
    fn attached(mut self, limit: Duration) -> Result<Self> {
        let deadline = Instant::now() + limit;
        loop {
            let stderr = self.stderr_so_far();
            if stderr
                .lines()
                .any(|line| ATTACHED_LINES.iter().any(|start| line.starts_with(start)))
            {
                return Ok(self);
            }
            if let Some(status) = self.child.try_wait()? {
                self.reaped = true;
                // Its last words may still be in the pipe: read them to the end.
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                let stderr = self.stderr_so_far();
                bail!("pkttrace ended before it attached ({status}): {stderr}");
            }
            if Instant::now() >= deadline {
                bail!("pkttrace did not attach within {limit:?}: {stderr}");
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn stderr_so_far(&self) -> String {
        let bytes = self.stderr.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn spawn_program<P, I, S>(program: P, args: I) -> Result<Self>
    where
        P: AsRef<OsStr>,
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_command(cmd(program, args))
    }

    /// Starts it with one more environment variable (`name=value`).
    pub fn spawn_with_env<I, S>((name, value): (&str, &str), args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = cmd(pkttrace_bin(), args);
        command.env(name, value);
        Self::spawn_command(command)
    }

    /// As [`spawn_attached`](Self::spawn_attached), with one more environment variable.
    pub fn spawn_attached_with_env<I, S>(env: (&str, &str), args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_with_env(env, args)?.attached(ATTACH_LIMIT)
    }

    fn spawn_command(mut command: Command) -> Result<Self> {
        // A test run started in the background inherits SIGINT ignored, and a
        // shell cannot trap a signal ignored on entry: give the child the
        // default, as Ctrl-C in a terminal would find it.
        // SAFETY: between fork and exec only the async-signal-safe signal() is called.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start `{}` (built? see PKTTRACE_BIN)",
                    describe(&command)
                )
            })?;
        // Both pipes drain on their own threads, so a chatty tracer never blocks on a full pipe.
        let stdout = child.stdout.take().map(drain);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child
            .stderr
            .take()
            .map(|pipe| drain_into(pipe, Arc::clone(&stderr)));
        Ok(Self {
            child,
            reaped: false,
            stdout,
            stderr,
            stderr_reader,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the end; at `timeout` it interrupts as [`stop`](Self::stop) does
    /// and marks the output `timed_out`.
    pub fn wait(mut self, timeout: Duration) -> Result<RunOutput> {
        let exited = self.wait_until(Instant::now() + timeout)?;
        let timed_out = exited.is_none();
        let status = match exited {
            Some(status) => status,
            None => self.interrupt()?,
        };
        self.collect(status, timed_out)
    }

    /// Kills it with SIGKILL, the signal no program can handle, and reaps it.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        self.reaped = true;
        Ok(())
    }

    /// Ends it as Ctrl-C would (SIGINT, SIGKILL if it lingers) and returns what it printed.
    pub fn stop(mut self) -> Result<RunOutput> {
        let status = match self.child.try_wait()? {
            Some(status) => status,
            None => self.interrupt()?,
        };
        self.collect(status, false)
    }

    fn wait_until(&mut self, deadline: Instant) -> Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.reaped = true;
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn interrupt(&mut self) -> Result<ExitStatus> {
        // It may exit by itself meanwhile; wait_until tells either way.
        succeeds(&mut cmd("kill", ["-INT", &self.child.id().to_string()]));
        if let Some(status) = self.wait_until(Instant::now() + STOP_GRACE)? {
            return Ok(status);
        }
        self.child.kill()?;
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(status)
    }

    fn collect(&mut self, status: ExitStatus, timed_out: bool) -> Result<RunOutput> {
        let text = |reader: Option<JoinHandle<Vec<u8>>>| -> String {
            let bytes = reader.and_then(|r| r.join().ok()).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Ok(RunOutput {
            status,
            stdout: text(self.stdout.take()),
            stderr: {
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                self.stderr_so_far()
            },
            timed_out,
        })
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Reads `pipe` to its end, appending to `sink` as bytes arrive.
fn drain_into(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(read @ 1..) = pipe.read(&mut chunk) {
            if let Ok(mut bytes) = sink.lock() {
                bytes.extend_from_slice(&chunk[..read]);
            }
        }
    })
}

impl Drop for Pkttrace {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Pkttrace;

    #[test]
    fn captures_output_and_exit_code() {
        let run = Pkttrace::spawn_program("sh", ["-c", "echo out; echo err >&2; exit 3"])
            .unwrap()
            .wait(Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            (run.stdout.as_str(), run.stderr.as_str()),
            ("out\n", "err\n")
        );
        assert_eq!(run.status.code(), Some(3));
        assert!(!run.timed_out);
    }

    #[test]
    fn attached_waits_for_the_line_said_after_attaching() {
        let script = "echo 'pkttrace: loading' >&2; sleep 0.3; echo 'pkttrace: following a → b' >&2; sleep 30";
        let started = std::time::Instant::now();
        let tracer = Pkttrace::spawn_program("sh", ["-c", script])
            .unwrap()
            .attached(Duration::from_secs(10))
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        tracer.kill().unwrap();
    }

    #[test]
    fn attached_fails_when_the_tracer_ends_first_or_never_says_it() {
        let ended =
            Pkttrace::spawn_program("sh", ["-c", "echo 'pkttrace: error: no root' >&2; exit 2"])
                .unwrap()
                .attached(Duration::from_secs(10))
                .unwrap_err();
        assert!(format!("{ended}").contains("no root"), "{ended}");
        let silent = Pkttrace::spawn_program("sleep", ["30"])
            .unwrap()
            .attached(Duration::from_millis(200))
            .unwrap_err();
        assert!(format!("{silent}").contains("did not attach"), "{silent}");
    }

    #[test]
    fn interrupts_at_the_time_limit() {
        let run = Pkttrace::spawn_program("sleep", ["30"])
            .unwrap()
            .wait(Duration::from_millis(200))
            .unwrap();
        assert!(run.timed_out && !run.success(), "{run}");
    }

    #[test]
    fn stop_lets_a_sigint_handler_finish() {
        // `wait` returns as soon as a trapped signal arrives; a foreground
        // `sleep` would make the shell's reaction depend on timing.
        let script =
            r#"trap 'echo stopped; exit 0' INT; echo ready; while :; do sleep 0.2 & wait $!; done"#;
        let tracer = Pkttrace::spawn_program("sh", ["-c", script]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let run = tracer.stop().unwrap();
        assert!(run.success(), "{run}");
        assert_eq!(run.stdout, "ready\nstopped\n");
    }
}
