//! `pkttrace replay FILE`: a recording's stories told again by the same
//! teller as the live run, from the journeys and facts it kept; nothing is
//! read from the kernel or Docker.

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::{
    cli::ReplayArgs,
    session::recording::{Record, Recording},
    session::{Told, sinks, teller::Teller},
};

pub async fn run(args: ReplayArgs) -> Result<ExitCode> {
    let Recording { header, records } = Recording::read(&args.file)?;
    if header.command != "follow" {
        bail!(
            "cannot replay a recording of `{}`: only `follow` is recorded",
            header.command
        );
    }
    if args.pcap.is_some() && !header.packet_bytes {
        bail!(
            "{} holds no packet bytes for --pcap: record with `pkttrace follow … --pcap FILE --record FILE`",
            args.file.display()
        );
    }
    let sinks = sinks::chosen(
        args.json,
        args.step,
        args.pcap.as_deref(),
        args.svg.as_deref(),
        header.boot_ns,
    )?;
    let mut teller = Teller::new(header.destination, header.published, header.proxy, sinks);
    let mut topology = None;
    let mut told = 0;
    let mut exit_code = None;
    for record in records {
        let told = match record {
            Record::Header(_) => bail!("{}: a second header", args.file.display()),
            Record::Topology { topology: recorded } => {
                topology = Some(recorded);
                continue;
            }
            Record::End { exit_code: code } => {
                exit_code = Some(code);
                continue;
            }
            Record::Journey {
                journey,
                role,
                facts,
            } => {
                told += 1;
                Told::Journey {
                    journey,
                    role,
                    facts,
                }
            }
            Record::NoReply {
                request,
                waited_ms,
                events_lost,
            } => Told::NoReply {
                request,
                waited_ms,
                events_lost,
            },
        };
        let Some(topology) = &topology else {
            bail!("{}: a story before any topology", args.file.display());
        };
        teller.tell(&told, topology)?;
    }
    teller.finish().await?;
    if told == 0 {
        teller.saw_nothing(&header.source);
    }
    let Some(exit_code) = exit_code else {
        eprintln!(
            "pkttrace: note: the recording ends before its run did (pkttrace was killed?); what it holds was told"
        );
        return Ok(ExitCode::from(1));
    };
    Ok(ExitCode::from(exit_code))
}
