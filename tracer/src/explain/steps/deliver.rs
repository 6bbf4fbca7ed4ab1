//! A process reading the packet: from its socket (delivered), or from a
//! tun or tap device it holds open (the device's other end, the wire).

use super::Details;

#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub process: String,
    pub pid: u32,
    /// The tun or tap device it read the packet from; None: its socket.
    pub from_device: Option<String>,
}

impl Reading {
    pub fn words(&self, ns: &str) -> String {
        let (comm, pid) = (&self.process, self.pid);
        match &self.from_device {
            Some(device) => {
                format!("{comm} (pid {pid}) read it from {device}, the device's other end")
            }
            None => format!("delivered: {comm} (pid {pid}) in {ns} read it from its socket"),
        }
    }

    pub fn details(&self) -> Details {
        Details::Deliver {
            process: self.process.clone(),
            pid: self.pid,
        }
    }
}
