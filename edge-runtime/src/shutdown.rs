//! Graceful shutdown on SIGTERM / SIGINT: the handler only sets a flag; the run loop sees
//! it between frames, finishes the frame in hand, flushes its sinks and returns. A second
//! signal while shutting down exits at once (status 130), for a loop stuck in a driver.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    if REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Whether SIGTERM or SIGINT has arrived (for work outside the run loop that must stop
/// early too, such as listing a huge folder when the source opens).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// Installs the handlers for SIGTERM and SIGINT; returns the flag they set.
/// Fails when the handlers cannot be installed.
pub fn install() -> std::io::Result<&'static AtomicBool> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction with a handler that only touches an atomic (and calls
        // the async-signal-safe _exit) is a valid argument to sigaction.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(&REQUESTED)
}
