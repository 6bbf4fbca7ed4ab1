//! Entering a network namespace, which moves only the calling thread: the
//! callers do it on a thread of their own that ends with the work.

use std::{io, os::fd::AsRawFd};

/// Moves the calling thread into the network namespace `netns` (an nsfs file).
pub fn enter_network_namespace(netns: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: a plain syscall on a valid descriptor; it affects this thread only.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
