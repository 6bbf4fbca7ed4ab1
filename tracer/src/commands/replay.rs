//! `pkttrace replay FILE…`: a recording's stories told again by the same
//! teller as the live run, from the journeys and facts it kept; nothing is
//! read from the kernel or Docker. Several recordings (one per host) are
//! joined into the journeys they share first.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::{
    cli::ReplayArgs,
    session::recording::Recording,
    session::{Told, join, sinks, teller::Teller},
};

pub async fn run(args: ReplayArgs) -> Result<ExitCode> {
    let mut recordings = Vec::new();
    for file in &args.files {
        let (header, retold) = Recording::read(file)?
            .retold()
            .with_context(|| format!("cannot replay {}", file.display()))?;
        if header.command != "follow" {
            bail!(
                "cannot replay a recording of `{}`: only `follow` is recorded",
                header.command
            );
        }
        if args.pcap.is_some() && !header.packet_bytes {
            bail!(
                "{} holds no packet bytes for --pcap: record with `pkttrace follow … --pcap FILE --record FILE`",
                file.display()
            );
        }
        recordings.push((header, retold));
    }
    if args.pcap.is_some() && recordings.len() > 1 {
        bail!(
            "--pcap takes one recording: the packets of several hosts are stamped by different clocks"
        );
    }
    let (header, retold) = join::join(recordings)?;
    let sinks = sinks::chosen(
        args.json,
        args.step,
        None,
        args.pcap.as_deref(),
        args.svg.as_deref(),
        header.boot_ns,
    )?;
    let mut teller = Teller::new(header.destination, header.published, header.proxy, sinks);
    let mut journeys = 0;
    for (told, topology) in &retold.told {
        journeys += usize::from(matches!(told, Told::Journey { .. }));
        teller.tell(told, topology)?;
    }
    teller.finish().await?;
    if journeys == 0 {
        teller.saw_nothing(&header.source);
    }
    let exit_code = retold.exit_code;
    let Some(exit_code) = exit_code else {
        eprintln!(
            "pkttrace: note: the recording ends before its run did (pkttrace was killed?); what it holds was told"
        );
        return Ok(ExitCode::from(1));
    };
    Ok(ExitCode::from(exit_code))
}
