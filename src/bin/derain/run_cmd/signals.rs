//! Ctrl-C (SIGINT) and SIGTERM for `derain run`: the first asks for a clean stop (end of stream,
//! the muxer finalises the file), the second for an abort; after the second the default action is
//! back, so a third kills the process even if the main thread is stuck.
//!
//! The handler only bumps an atomic counter (async-signal-safe); the main loop polls it.

use std::ffi::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};

static RECEIVED: AtomicUsize = AtomicUsize::new(0);

// POSIX numbers, the same on every Linux architecture.
const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
/// `SIG_DFL`: the default action.
const SIG_DFL: usize = 0;

unsafe extern "C" {
    /// libc's `signal(2)` (glibc gives it BSD semantics: the handler stays installed and
    /// interrupted system calls restart). The crate links libc through std already.
    fn signal(signum: c_int, handler: usize) -> usize;
}

extern "C" fn on_signal(_signum: c_int) {
    let n = RECEIVED.fetch_add(1, Ordering::SeqCst) + 1;
    if n >= 2 {
        // SAFETY: signal() is async-signal-safe; restoring the default action is always valid.
        unsafe {
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
        }
    }
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() {
    let handler = on_signal as extern "C" fn(c_int) as usize;
    // SAFETY: the handler only touches an atomic and calls signal(), both async-signal-safe.
    unsafe {
        signal(SIGINT, handler);
        signal(SIGTERM, handler);
    }
}

/// How many stop signals have arrived since [`install`].
pub fn received() -> usize {
    RECEIVED.load(Ordering::SeqCst)
}
