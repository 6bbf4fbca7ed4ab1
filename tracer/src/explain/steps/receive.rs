//! The packet arriving in a namespace: on a device, taken in by its kernel,
//! or a flooded copy discarded there.

use crate::decode::{CodeSite, DropReason, SiteRole};

#[derive(Clone, Debug, PartialEq)]
pub enum Arrival {
    /// It arrives on the step's device.
    Arrives,
    /// The namespace's kernel took it in; `location` freed it.
    TakenIn { location: CodeSite },
    /// A copy a bridge flooded, discarded: not addressed to this namespace.
    FloodedCopyDiscarded { reason: DropReason },
}

impl Arrival {
    pub fn words(&self, ns: &str, device: &str) -> String {
        match self {
            Self::Arrives => format!("arrives in {ns} on {device}"),
            Self::TakenIn { location } if location.role == SiteRole::Unlocated => {
                format!("taken in by the kernel of {ns} (this kernel does not say by which code)")
            }
            Self::TakenIn { location } => format!("taken in by the kernel of {ns} ({location})"),
            Self::FloodedCopyDiscarded { reason } => format!(
                "a flooded copy reached {ns}, whose kernel discarded it: not addressed to it ({reason})"
            ),
        }
    }
}
