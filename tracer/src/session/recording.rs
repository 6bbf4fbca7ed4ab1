//! `follow --record FILE`: what a story was told from, so `pkttrace replay`
//! can tell it again without root, the kernel or Docker. A recording is
//! JSON Lines: a header with the format's version, then the topology (again
//! whenever it changed), each journey told with its role and the facts read
//! for it, each missing reply, and how the run ended. The explanation and
//! the renderers run again on replay; the kernel's part is what is kept.

use std::{
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write},
    path::Path,
    rc::Rc,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    enrich::{Listener, Published, Topology, facts::Facts},
    journey::{Journey, exchanges::Role},
    session::{Destination, Told},
};

/// What `format` says in every recording's first line.
pub const FORMAT: &str = "pkttrace-recording";
/// Bumped whenever a record changes meaning; replay reads only its own.
pub const VERSION: u32 = 2;

/// One line of a recording.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    Header(Box<Header>),
    /// The host's wiring as the following journeys were told with it.
    Topology {
        topology: Box<Topology>,
    },
    Journey {
        journey: Journey,
        role: Role,
        facts: Box<Facts>,
    },
    NoReply {
        request: u64,
        waited_ms: u64,
        events_lost: bool,
    },
    /// How the run ended; a recording without it was cut short.
    End {
        exit_code: u8,
    },
}

/// What the run was asked, as its stories need it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The pkttrace that recorded it.
    pub pkttrace: String,
    pub command: String,
    /// How SOURCE was named ("server-1", "netns pt-upstream", "host").
    pub source: String,
    pub destination: Destination,
    pub published: Option<Published>,
    pub proxy: Option<Listener>,
    /// The events carry the packets' first bytes (it ran with `--pcap`).
    pub packet_bytes: bool,
    /// Wall-clock time of the kernel clock's zero, in ns: the events' times
    /// are on the kernel's clock.
    pub boot_ns: u64,
}

impl Header {
    pub fn follow(
        source: &str,
        destination: Destination,
        published: Option<Published>,
        proxy: Option<Listener>,
        packet_bytes: bool,
        boot_ns: u64,
    ) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            pkttrace: env!("CARGO_PKG_VERSION").into(),
            command: "follow".into(),
            source: source.into(),
            destination,
            published,
            proxy,
            packet_bytes,
            boot_ns,
        }
    }
}

/// Writes a recording as the run goes, a line at a time, so a run that is
/// killed leaves what it told.
pub struct Recorder {
    out: BufWriter<File>,
    /// The topology last written, so it is written again only when it changed.
    topology: Option<Topology>,
}

impl Recorder {
    pub fn create(path: &Path, header: Header) -> Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot write the recording {}", path.display()))?;
        let mut recorder = Self {
            out: BufWriter::new(file),
            topology: None,
        };
        recorder.write(&Record::Header(Box::new(header)))?;
        Ok(recorder)
    }

    /// Keeps what a story is told from, with the wiring when it changed.
    pub fn told(&mut self, told: &Told, topology: &Topology) -> Result<()> {
        let record = match told {
            Told::Journey {
                journey,
                role,
                facts,
            } => {
                if self.topology.as_ref() != Some(topology) {
                    self.write(&Record::Topology {
                        topology: Box::new(topology.clone()),
                    })?;
                    self.topology = Some(topology.clone());
                }
                Record::Journey {
                    journey: journey.clone(),
                    role: *role,
                    facts: facts.clone(),
                }
            }
            Told::NoReply {
                request,
                waited_ms,
                events_lost,
            } => Record::NoReply {
                request: *request,
                waited_ms: *waited_ms,
                events_lost: *events_lost,
            },
        };
        self.write(&record)
    }

    pub fn write(&mut self, record: &Record) -> Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        self.out.flush().context("cannot write the recording")
    }
}

/// A recording read back: its header and the records after it.
pub struct Recording {
    pub header: Header,
    pub records: Vec<Record>,
}

/// What a recording holds, in the order it was told: each story's
/// inputs with the wiring it happened on, and how the run ended (None: it
/// was cut short).
pub struct Retold {
    pub told: Vec<(Told, Rc<Topology>)>,
    pub exit_code: Option<u8>,
}

impl Recording {
    /// Its header, and the stories' inputs in order, each with its wiring.
    pub fn retold(self) -> Result<(Header, Retold)> {
        let mut topology: Option<Rc<Topology>> = None;
        let mut told = Vec::new();
        let mut exit_code = None;
        for record in self.records {
            let item = match record {
                Record::Header(_) => bail!("a second header"),
                Record::Topology { topology: recorded } => {
                    topology = Some(Rc::new(*recorded));
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
                } => Told::Journey {
                    journey,
                    role,
                    facts,
                },
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
                bail!("a story before any topology");
            };
            told.push((item, Rc::clone(topology)));
        }
        Ok((self.header, Retold { told, exit_code }))
    }

    pub fn read(path: &Path) -> Result<Self> {
        let file = File::open(path)
            .with_context(|| format!("cannot open the recording {}", path.display()))?;
        Self::parse(BufReader::new(file))
            .with_context(|| format!("cannot replay {}", path.display()))
    }

    pub fn parse(input: impl BufRead) -> Result<Self> {
        let mut lines = input.lines();
        let first = lines.next().transpose()?.unwrap_or_default();
        // Only the format and version first: a recording of another version
        // may not parse as this one's header.
        #[derive(Deserialize)]
        struct Version {
            format: Option<String>,
            version: Option<u32>,
        }
        let version: Version = serde_json::from_str(&first)
            .ok()
            .filter(|v: &Version| v.format.as_deref() == Some(FORMAT))
            .context(
                "not a pkttrace recording (make one with `pkttrace follow … --record FILE`)",
            )?;
        let version = version.version.unwrap_or_default();
        if version != VERSION {
            bail!(
                "it is a recording of format version {version}, this pkttrace {} replays version {VERSION}; replay it with the pkttrace that recorded it",
                env!("CARGO_PKG_VERSION")
            );
        }
        let Record::Header(header) = serde_json::from_str(&first)? else {
            bail!("its first line is not a header");
        };
        let header = *header;
        let records = lines
            .enumerate()
            .map(|(n, line)| {
                let line = line?;
                serde_json::from_str(&line).with_context(|| format!("line {} is damaged", n + 2))
            })
            .collect::<Result<Vec<Record>>>()?;
        let mut recording = Self { header, records };
        recording.place_host_fdb_entries();
        Ok(recording)
    }

    /// Recordings made before pkttrace read other namespaces' forwarding
    /// databases hold the host's entries without a namespace.
    fn place_host_fdb_entries(&mut self) {
        let mut host_netns = 0;
        for record in &mut self.records {
            match record {
                Record::Topology { topology } => host_netns = topology.host_netns,
                Record::Journey { facts, .. } => {
                    for entry in facts.fdb.iter_mut().filter(|e| e.netns == 0) {
                        entry.netns = host_netns;
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_version_or_another_file_is_one_clear_error() {
        let other = r#"{"record":"header","format":"pkttrace-recording","version":99}"#;
        let error = Recording::parse(other.as_bytes()).err().unwrap();
        assert!(
            format!("{error:#}").contains("format version 99, this pkttrace"),
            "{error:#}"
        );
        let error = Recording::parse("{\"kind\":\"send\"}\n".as_bytes())
            .err()
            .unwrap();
        assert!(
            format!("{error:#}").starts_with("not a pkttrace recording"),
            "{error:#}"
        );
    }

    #[test]
    fn a_header_reads_back() {
        let header = Header::follow(
            "server-1",
            Destination {
                address: [198, 51, 100, 1].into(),
                port: Some(80),
            },
            None,
            None,
            false,
            0,
        );
        let line = serde_json::to_string(&Record::Header(Box::new(header))).unwrap();
        let read = Recording::parse(
            format!("{line}\n{{\"record\":\"end\",\"exit_code\":1}}\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(read.header.source, "server-1");
        assert_eq!(read.header.destination.port, Some(80));
        assert!(matches!(read.records[..], [Record::End { exit_code: 1 }]));
    }
}
