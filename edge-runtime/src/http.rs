//! The loopback health endpoint: `GET /healthz` and `GET /metrics`, served by one thread
//! on `std::net` (HTTP/1.0-style: one request per connection, then close). No HTTP crate:
//! the runtime's only network surface is this, and only on a loopback address.
//!
//! A watchdog's probe is answered promptly whatever other clients do: the thread polls
//! every connection without blocking on any, answers a request as soon as its head is in,
//! and holds a bounded table of connections (the oldest closed for a new one, each closed
//! after [`DEADLINE`]). Hundreds of idle connections cost nothing but table churn. The
//! decision loop shares only the atomic [`Metrics`] with it.
//!
//! - `/healthz`: `200 ok` when the model is loaded and a frame was processed within the
//!   stall timeout, `503` with the reason otherwise.
//! - `/metrics`: Prometheus text (see [`crate::metrics::Metrics::render_prometheus`]).

use crate::metrics::Metrics;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("--http `{0}`: only a loopback address (127.0.0.1, ::1) is allowed; the box exposes nothing to the network")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The running server; dropping it stops the thread.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` (loopback only; port 0 picks a free port) and serves from a thread.
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Self, HttpError> {
        if !addr.ip().is_loopback() {
            return Err(HttpError::NotLoopback(addr));
        }
        let bind = |source| HttpError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("linesight-http".into())
            .spawn(move || serve(listener, &metrics, &thread_stop))
            .map_err(bind)?;
        tracing::info!(%addr, "health endpoint listening (/healthz, /metrics)");
        Ok(HttpServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (with the port picked when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Most connections held at once. When a new one arrives beyond this, the oldest is
/// closed: a client that connects and says nothing cannot keep a probe out.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection must have sent its request and taken its answer within this long of being
/// accepted; it is closed then.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// The request head is read up to this many bytes (only the request line matters).
const HEAD_MAX: usize = 8192;
/// Longest wait in `poll` (how soon a stop is noticed).
const TICK: Duration = Duration::from_millis(100);

/// One accepted connection: reading its request head, then writing its answer.
struct Conn {
    stream: TcpStream,
    accepted: Instant,
    head: Vec<u8>,
    /// The answer once the head is in; `written` bytes of it are sent.
    answer: Option<Vec<u8>>,
    written: usize,
}

/// What [`Conn::progress`] left.
#[derive(PartialEq)]
enum Progress {
    /// Waiting for more of the request, or for room to write the answer.
    Pending,
    /// Answered, or the peer went away: close it.
    Done,
}

impl Conn {
    /// Reads what has arrived; once the head is complete, writes what the socket takes.
    /// Never blocks (the socket is non-blocking).
    fn progress(&mut self, metrics: &Metrics) -> Progress {
        if self.answer.is_none() {
            let mut chunk = [0u8; 2048];
            loop {
                match self.stream.read(&mut chunk) {
                    Ok(0) => {
                        if self.head.is_empty() {
                            return Progress::Done;
                        }
                        break;
                    }
                    Ok(n) => {
                        let room = HEAD_MAX - self.head.len();
                        self.head.extend_from_slice(&chunk[..n.min(room)]);
                        if head_complete(&self.head) || self.head.len() >= HEAD_MAX {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        return Progress::Pending
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "health endpoint: read failed");
                        return Progress::Done;
                    }
                }
            }
            self.answer = Some(answer(&self.head, metrics));
        }
        let Some(answer) = &self.answer else {
            return Progress::Pending;
        };
        while self.written < answer.len() {
            match self.stream.write(&answer[self.written..]) {
                Ok(0) => return Progress::Done,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "health endpoint: write failed");
                    return Progress::Done;
                }
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        Progress::Done
    }
}

fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// One thread serves every connection with `poll(2)` over non-blocking sockets, so an idle
/// or slow client costs a table entry, never the probe's time. Bounded: at most
/// [`MAX_CONNECTIONS`] connections (the oldest is closed for a new one), each for at most
/// [`DEADLINE`], with at most [`HEAD_MAX`] bytes of request. Written on `libc::poll` rather
/// than a crate: the runtime takes no network crate (ARCHITECTURE.md), and the loop is
/// this one function.
fn serve(listener: TcpListener, metrics: &Metrics, stop: &AtomicBool) {
    use std::os::fd::AsRawFd;
    let mut conns: Vec<Conn> = Vec::with_capacity(MAX_CONNECTIONS);
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(MAX_CONNECTIONS + 1);
    while !stop.load(Ordering::Relaxed) {
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for c in &conns {
            fds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: if c.answer.is_none() {
                    libc::POLLIN
                } else {
                    libc::POLLOUT
                },
                revents: 0,
            });
        }
        let now = Instant::now();
        let wait = conns
            .iter()
            .map(|c| (c.accepted + DEADLINE).saturating_duration_since(now))
            .fold(TICK, Duration::min);
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd structs that
        // outlives the call; every fd in it is open (owned by `listener` and `conns`).
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                wait.as_millis().min(i32::MAX as u128) as i32 + 1,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::warn!(error = %e, "health endpoint: poll failed");
                std::thread::sleep(TICK);
            }
            continue;
        }
        // Connections first: `fds[i + 1]` is `conns[i]` until the table changes.
        let now = Instant::now();
        let mut i = 0;
        conns.retain_mut(|c| {
            let ready = fds[i + 1].revents != 0;
            i += 1;
            if ready && c.progress(metrics) == Progress::Done {
                return false;
            }
            now.duration_since(c.accepted) < DEADLINE
        });
        if fds[0].revents != 0 {
            accept_all(&listener, &mut conns, metrics);
        }
    }
}

/// Accepts every waiting connection. Each is answered at once when its request is already
/// in (a probe's usually is); otherwise it joins the table, closing the oldest when full.
fn accept_all(listener: &TcpListener, conns: &mut Vec<Conn>, metrics: &Metrics) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = stream.set_nonblocking(true) {
                    tracing::debug!(error = %e, "health endpoint: cannot set non-blocking");
                    continue;
                }
                let mut c = Conn {
                    stream,
                    accepted: Instant::now(),
                    head: Vec::new(),
                    answer: None,
                    written: 0,
                };
                if c.progress(metrics) == Progress::Done {
                    continue;
                }
                if conns.len() >= MAX_CONNECTIONS {
                    // The oldest is first: connections are pushed in accept order.
                    conns.remove(0);
                    tracing::debug!("health endpoint: connection table full; closed the oldest");
                }
                conns.push(c);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // E.g. out of file descriptors: the waiting connection stays in the
                // backlog. Closing the oldest held connection frees one for the next try;
                // with none held, wait a tick rather than spin on a readable listener.
                tracing::warn!(error = %e, "health endpoint: accept failed");
                if conns.is_empty() {
                    std::thread::sleep(TICK);
                } else {
                    conns.remove(0);
                }
                return;
            }
        }
    }
}

/// The full HTTP answer to a request head.
fn answer(head: &[u8], metrics: &Metrics) -> Vec<u8> {
    let head = String::from_utf8_lossy(head);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/healthz") => {
            if metrics.healthy() {
                ("200 OK", "text/plain", "ok\n".to_string())
            } else {
                let reason = if metrics.model_id().is_none() {
                    "model not loaded".to_string()
                } else {
                    match metrics.last_frame_age() {
                        None => "no frame yet".to_string(),
                        Some(age) => format!(
                            "no frame for {:.1} s (source {})",
                            age.as_secs_f64(),
                            metrics.source_state().as_str()
                        ),
                    }
                };
                (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("{reason}\n"),
                )
            }
        }
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            metrics.render_prometheus(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /healthz or /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A tiny GET for tests and `--http` checks: returns (status code, body).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::SourceState;
    use std::time::Instant;

    #[test]
    fn healthz_follows_the_frames_and_metrics_render() {
        let m = Arc::new(Metrics::new(Duration::from_millis(300)));
        let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
        let addr = server.addr();
        let (code, body) = get(addr, "/healthz").unwrap();
        assert_eq!((code, body.as_str()), (503, "model not loaded\n"));
        m.set_model("tiny");
        assert_eq!(get(addr, "/healthz").unwrap().1, "no frame yet\n");
        m.set_source_state(SourceState::Streaming);
        m.frame_done(Instant::now());
        assert_eq!(get(addr, "/healthz").unwrap(), (200, "ok\n".into()));
        // An unplugged camera: 503 at once, not a health window later.
        m.set_source_state(SourceState::Gone);
        let (code, body) = get(addr, "/healthz").unwrap();
        assert_eq!(code, 503);
        assert!(body.contains("(source gone)"), "{body}");
        m.set_source_state(SourceState::Streaming);
        assert_eq!(get(addr, "/healthz").unwrap().0, 200);
        std::thread::sleep(Duration::from_millis(400));
        let (code, body) = get(addr, "/healthz").unwrap();
        assert_eq!(code, 503);
        assert!(body.starts_with("no frame for"), "{body}");
        let (code, body) = get(addr, "/metrics").unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("linesight_frames_total 1\n"), "{body}");
        assert_eq!(get(addr, "/nope").unwrap().0, 404);
        drop(server);
        assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err());
    }

    #[test]
    fn idle_and_slow_clients_do_not_delay_a_probe() {
        let m = Arc::new(Metrics::new(Duration::from_secs(5)));
        m.set_model("tiny");
        m.set_source_state(SourceState::Streaming);
        m.frame_done(Instant::now());
        let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), m).unwrap();
        let addr = server.addr();
        // Four times the table: idle (connect, say nothing), half a request line, and a
        // head that never ends.
        let mut held = Vec::new();
        for i in 0..4 * MAX_CONNECTIONS {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
            match i % 3 {
                0 => {}
                1 => s.write_all(b"GET /heal").unwrap(),
                _ => s.write_all(b"GET /healthz HTTP/1.1\r\nX: ").unwrap(),
            }
            held.push(s);
        }
        for _ in 0..5 {
            let t0 = Instant::now();
            assert_eq!(get(addr, "/healthz").unwrap(), (200, "ok\n".into()));
            let took = t0.elapsed();
            assert!(took < Duration::from_millis(500), "probe took {took:?}");
        }
        // Held connections are closed after the deadline, not kept for ever.
        std::thread::sleep(DEADLINE + Duration::from_millis(300));
        let mut last = held.pop().unwrap();
        last.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 16];
        match last.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("an idle connection outlived the deadline: {other:?}"),
        }
    }

    #[test]
    fn refuses_non_loopback() {
        let m = Arc::new(Metrics::new(Duration::from_secs(1)));
        let e = HttpServer::start("0.0.0.0:0".parse().unwrap(), m)
            .err()
            .unwrap();
        assert!(e.to_string().contains("only a loopback address"), "{e}");
    }
}
