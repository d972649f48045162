//! The loopback health endpoint: `GET /healthz` and `GET /metrics`, served by one thread
//! on `std::net` (HTTP/1.0-style: one request per connection, then close). No HTTP crate:
//! the runtime's only network surface is this, and only on a loopback address.
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
use std::time::Duration;

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

fn serve(listener: TcpListener, metrics: &Metrics, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = handle(stream, metrics) {
                    tracing::debug!(error = %e, "health endpoint: request failed");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!(error = %e, "health endpoint: accept failed");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    // Read until the end of the request head (or 8 KiB): only the request line matters.
    let mut buf = [0u8; 8192];
    let mut n = 0;
    while n < buf.len() {
        let got = stream.read(&mut buf[n..])?;
        if got == 0 {
            break;
        }
        n += got;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
            || buf[..n].windows(2).any(|w| w == b"\n\n")
        {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
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
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
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
    fn refuses_non_loopback() {
        let m = Arc::new(Metrics::new(Duration::from_secs(1)));
        let e = HttpServer::start("0.0.0.0:0".parse().unwrap(), m)
            .err()
            .unwrap();
        assert!(e.to_string().contains("only a loopback address"), "{e}");
    }
}
