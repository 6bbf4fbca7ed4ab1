//! pkttrace: how did my packet get there? Follows packets through network
//! namespaces, veth pairs, bridges, routing, netfilter and NAT with eBPF,
//! and explains each hop with the kernel's own evidence.

mod addr;
mod allocator;
mod cli;
mod commands;
mod decode;
mod enrich;
mod explain;
mod journey;
mod probes;
mod render;
mod session;
mod setns;
#[cfg(test)]
mod test_support;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};

/// Following a stream, every event and story allocates: glibc's malloc
/// and free took a quarter of pkttrace's CPU time (perf), mimalloc a
/// fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Setup errors (bad input, missing privileges or kernel features) exit with 2.
const SETUP_ERROR: u8 = 2;

/// One thread drives the event loop: with a worker thread polling the ring
/// and the timers, every batch of events was a wake-up across threads.
/// Blocking work still goes to tokio's blocking pool.
fn main() -> ExitCode {
    allocator::lean_for_startup();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("pkttrace: error: cannot start: {error}");
            ExitCode::from(SETUP_ERROR)
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Follow(args) => commands::follow::run(args).await,
        Command::Topology(args) => commands::topology::run(args).await,
        Command::Dns(args) => commands::dns::run(args).await,
        Command::Replay(args) => commands::replay::run(args).await,
        Command::Diff(args) => commands::diff::run(args),
        Command::Schema(args) => {
            let of = match args.of {
                cli::SchemaOf::Follow => render::schema::Output::Follow,
                cli::SchemaOf::Dns => render::schema::Output::Dns,
                cli::SchemaOf::Topology => render::schema::Output::Topology,
                cli::SchemaOf::Diff => render::schema::Output::Diff,
            };
            print!("{}", render::schema::schema(of));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions(args) => {
            let mut command = Cli::command();
            clap_complete::generate(args.shell, &mut command, "pkttrace", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        // The reader of the output went away (`| head`): nothing to say to
        // anyone, and everything attached goes with the process.
        Err(error) if reader_gone(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pkttrace: error: {error:#}");
            ExitCode::from(SETUP_ERROR)
        }
    }
}

/// The error is a write to a pipe whose reader closed it.
fn reader_gone(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_version_names_the_commit_built() {
        let version = Cli::command().get_version().unwrap().to_string();
        let commit = version
            .strip_prefix(concat!(env!("CARGO_PKG_VERSION"), " ("))
            .and_then(|rest| rest.strip_suffix(')'));
        assert!(commit.is_some_and(|c| !c.is_empty()), "{version}");
    }

    #[test]
    fn completions_know_the_subcommands_and_their_options() {
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "pkttrace",
            &mut script,
        );
        let script = String::from_utf8(script).unwrap();
        for word in [
            "follow",
            "dns",
            "topology",
            "--probe",
            "--answer-timeout",
            "--svg",
        ] {
            assert!(script.contains(word), "{word} in the bash completions");
        }
    }
}
