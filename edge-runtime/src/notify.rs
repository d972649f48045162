//! systemd's notify protocol, on std: `READY=1` once the loop runs, `WATCHDOG=1` at half
//! the `WatchdogSec` interval while the loop turns, `STOPPING=1` at shutdown. Datagrams go
//! to the unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace). Without `$NOTIFY_SOCKET` (not started by systemd) every call does nothing.
//!
//! The socket address is resolved once; a ping is one `sendto` and allocates nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `$WATCHDOG_USEC` when the watchdog is on for this process.
    interval: Option<Duration>,
    last_ping: Option<Instant>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`. A malformed value is
    /// logged and the notifier stays silent (the process must run without systemd too).
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|p| match connect(&p) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(socket = ?p, error = %e, "NOTIFY_SOCKET unusable; no sd_notify");
                None
            }
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let interval = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        Notifier {
            socket,
            interval,
            last_ping: None,
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier {
            socket: None,
            interval: None,
            last_ping: None,
        }
    }

    /// The watchdog ping interval, when systemd asked for one.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.interval
    }

    fn send(&self, msg: &[u8]) {
        if let Some((sock, addr)) = &self.socket {
            if let Err(e) = sock.send_to_addr(msg, addr) {
                tracing::debug!(error = %e, "sd_notify send failed");
            }
        }
    }

    pub fn ready(&self) {
        self.send(b"READY=1");
    }

    pub fn stopping(&self) {
        self.send(b"STOPPING=1");
    }

    /// Sends `WATCHDOG=1` when half the watchdog interval has passed since the last one.
    pub fn tick(&mut self, now: Instant) {
        let Some(interval) = self.interval else {
            return;
        };
        if self
            .last_ping
            .is_none_or(|t| now.saturating_duration_since(t) >= interval)
        {
            self.send(b"WATCHDOG=1");
            self.last_ping = Some(now);
        }
    }
}

fn connect(path: &std::ffi::OsStr) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let addr = if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::Error::other("abstract sockets need Linux"));
        }
    } else {
        SocketAddr::from_pathname(path)?
    };
    Ok((UnixDatagram::unbound()?, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_watchdog_stopping_to_a_socket() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut n = Notifier {
            socket: Some(connect(path.as_os_str()).unwrap()),
            interval: Some(Duration::from_millis(50)),
            last_ping: None,
        };
        let mut buf = [0u8; 64];
        let mut recv = || {
            let k = listener.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..k]).into_owned()
        };
        n.ready();
        assert_eq!(recv(), "READY=1");
        let t0 = Instant::now();
        n.tick(t0);
        n.tick(t0 + Duration::from_millis(10)); // too early: nothing sent
        n.tick(t0 + Duration::from_millis(60));
        n.stopping();
        assert_eq!(recv(), "WATCHDOG=1");
        assert_eq!(recv(), "WATCHDOG=1");
        assert_eq!(recv(), "STOPPING=1");
        let mut off = Notifier::disabled();
        off.ready();
        off.tick(Instant::now());
    }
}
