//! Class 8: the health endpoint answers a watchdog's probe promptly whatever other clients
//! do. Hundreds of connections that say nothing (or half a request) are held open against
//! a running `linesight-edge run --http`; `/healthz` must still answer within a bound, and
//! the decision loop must keep deciding meanwhile.

use crate::util::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A watchdog's bound for one probe; the server before the fix took 2 s per idle client.
const PROBE_BOUND: Duration = Duration::from_millis(1000);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One GET with the probe's own deadline: (status code, body) or what went wrong.
fn probe(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, PROBE_BOUND).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(PROBE_BOUND))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in `{text}`"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    Ok((code, body.unwrap_or_default()))
}

fn frames(addr: SocketAddr) -> u64 {
    let (_, text) = probe(addr, "/metrics").expect("/metrics answers");
    text.lines()
        .find_map(|l| l.strip_prefix("linesight_frames_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("linesight_frames_total in /metrics")
}

#[test]
fn healthz_answers_promptly_with_hundreds_of_idle_clients() {
    if !weights_present("healthz_answers_promptly_with_hundreds_of_idle_clients") {
        return;
    }
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(bin("linesight-edge"))
        .args(["run", "--bundle"])
        .arg(shared_demo_bundle())
        .args(["--source", "synthetic:20", "--no-store", "--sink", "none"])
        .arg("--http")
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while probe(addr, "/healthz").map(|r| r.0).unwrap_or(0) != 200 {
        assert!(t0.elapsed() < Duration::from_secs(60), "never healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    // 300 clients that connect and never finish a request: silent ones, half a request
    // line, a head that never ends.
    let mut held = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("idle client {i} cannot connect: {e}"));
        match i % 3 {
            0 => {}
            1 => s.write_all(b"GET /hea").unwrap(),
            _ => s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ").unwrap(),
        }
        held.push(s);
    }
    let before = frames(addr);
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        let r = probe(addr, "/healthz");
        let took = t.elapsed();
        worst = worst.max(took);
        assert_eq!(
            r,
            Ok((200, "ok\n".to_string())),
            "probe with 300 idle clients held (took {took:?})"
        );
        assert!(took < PROBE_BOUND, "a probe took {took:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The decision loop went on deciding meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let after = frames(addr);
    eprintln!("worst probe {worst:?}; frames {before} -> {after}");
    assert!(
        after > before,
        "the loop stopped deciding: {before} -> {after}"
    );
    drop(held);
    child.kill().unwrap();
    child.wait().unwrap();
}
