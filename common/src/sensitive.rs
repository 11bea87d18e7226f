//! Keep secrets and identifying values out of logs.
//!
//! Wrap addresses, infohashes, peer ids and circuit ids in [`Sensitive`]
//! before they reach a `tracing` field. Its `Display`/`Debug` print
//! `[scrubbed]` unless the process opted in to unsafe logging (for local
//! debugging only) with [`set_unsafe_logging`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static UNSAFE_LOGGING: AtomicBool = AtomicBool::new(false);

/// Allow [`Sensitive`] values to print themselves. Off by default; a binary
/// turns it on only from an explicit debugging flag.
pub fn set_unsafe_logging(on: bool) {
    UNSAFE_LOGGING.store(on, Ordering::Relaxed);
}

/// A value that must not appear in logs unless unsafe logging is on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sensitive<T>(pub T);

impl<T> Sensitive<T> {
    /// The wrapped value, for code (never for logs).
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if UNSAFE_LOGGING.load(Ordering::Relaxed) {
            self.0.fmt(f)
        } else {
            f.write_str("[scrubbed]")
        }
    }
}

impl<T: fmt::Display> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if UNSAFE_LOGGING.load(Ordering::Relaxed) {
            self.0.fmt(f)
        } else {
            f.write_str("[scrubbed]")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbed_by_default() {
        let s = Sensitive("127.0.0.1:9000");
        assert_eq!(format!("{s} {s:?}"), "[scrubbed] [scrubbed]");
    }
}
