//! Labelling across several MLLM servers (issue 18), over real HTTP on loopback: two
//! in-process simulators and one `simulate-mllm` process that is killed with SIGKILL
//! mid-run. Every image must be answered exactly once, the killed endpoint set aside and
//! its requests answered by the others, the accounting per endpoint must match what the
//! log says answered, and a rerun against another endpoint set must find every answer in
//! the cache (the endpoint is not part of the key).

use crate::mllm::{assert_each_image_once, given_context, naming_lines, Fixture};
use linesight_trainer::commands::label;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `linesight-train simulate-mllm` on a free port; returns the process and its base URL.
fn simulator_process(fx: &Fixture, latency_ms: u64) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_linesight-train"))
        .args(["simulate-mllm", "--listen", "127.0.0.1:0", "--truth"])
        .arg(&fx.truth)
        .args(["--latency-ms", &latency_ms.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in `{line}`"))
        .to_string();
    (child, url)
}

#[test]
fn several_endpoints_answer_every_image_once_when_one_is_killed_mid_run() {
    const N: usize = 60;
    let fx = Fixture::new(N);
    let a = fx.sim(|c| c.latency = Duration::from_millis(40));
    let b = fx.sim(|c| c.latency = Duration::from_millis(40));
    let (mut killed, killed_url) = simulator_process(&fx, 40);
    let mut s = fx.settings(&a, "labels.jsonl");
    s.endpoints = vec![
        a.base_url(),
        b.base_url(),
        format!("{killed_url},concurrency=3"),
    ];
    s.concurrency = 2;
    s.context = given_context();
    let out = s.out.clone();

    let run = std::thread::spawn(move || label::run(&s));
    let t0 = Instant::now();
    let lines_written = || {
        std::fs::read(&out)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
    };
    while lines_written() < N / 4 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no answers");
        std::thread::sleep(Duration::from_millis(5));
    }
    killed.kill().unwrap(); // SIGKILL, requests in flight and all
    killed.wait().unwrap();
    let r = run
        .join()
        .unwrap()
        .expect("the other two endpoints finish the run");

    assert_each_image_once(&out, N);
    assert_eq!((r.naming.answered, r.naming.failed), (N, 0));
    let mut answered_by: BTreeMap<String, u64> = BTreeMap::new();
    for rec in naming_lines(&out) {
        *answered_by.entry(rec.endpoint).or_default() += 1;
    }
    for e in &r.endpoints {
        eprintln!(
            "{}: concurrency {}, calls {}, answers {}, errors {:?}, set aside {}, p50 {:.0} ms",
            e.url, e.concurrency, e.calls, e.answers, e.error_kinds, e.set_aside, e.latency_ms.p50
        );
        assert_eq!(
            answered_by.get(&e.url).copied().unwrap_or(0),
            e.answers,
            "the log names the endpoint that answered"
        );
        assert_eq!(e.calls, e.answers + e.errors);
        assert_eq!(e.latency_ms.n as u64, e.answers);
    }
    let [ea, eb, ek] = &r.endpoints[..] else {
        panic!("three endpoints");
    };
    assert_eq!(
        (ea.concurrency, eb.concurrency, ek.concurrency),
        (2, 2, 3),
        "each endpoint has its own limit"
    );
    assert!(
        ek.answers > 0,
        "the killed endpoint answered before the kill"
    );
    assert!(
        ek.errors > 0 && ek.set_aside > 0,
        "then it failed and was set aside"
    );
    assert!(
        ea.answers > 0 && eb.answers > 0 && ea.errors == 0 && eb.errors == 0,
        "the live endpoints answered the rest without an error"
    );
    assert_eq!(ea.answers + eb.answers + ek.answers, N as u64);
    assert_eq!(r.calls, ea.calls + eb.calls + ek.calls);

    // The cache key has no endpoint: another set of servers finds every answer.
    let mut again = fx.settings(&b, "labels.jsonl");
    again.context = given_context();
    let r2 = label::run(&again).unwrap();
    assert_eq!((r2.calls, r2.naming.cache_hits), (0, N));
}

#[test]
fn all_endpoints_unreachable_stops_the_run_naming_each() {
    let fx = Fixture::new(6);
    let free = || {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("http://127.0.0.1:{port}/v1")
    };
    let (u1, u2) = (free(), free());
    let a = fx.sim(|_| {});
    let mut s = fx.settings(&a, "l.jsonl");
    s.endpoints = vec![u1.clone(), u2.clone()];
    s.max_retries = 3;
    s.context = given_context();
    let msg = format!("{:#}", label::run(&s).expect_err("nothing listens"));
    assert!(
        msg.contains(&u1) && msg.contains(&u2) && msg.to_lowercase().contains("connection refused"),
        "{msg}"
    );
    assert!(naming_lines(&s.out).is_empty());
}

#[test]
fn a_bad_endpoint_list_is_refused_before_any_request() {
    let fx = Fixture::new(2);
    let a = fx.sim(|_| {});
    for (endpoints, needle) in [
        (
            vec![a.base_url(), format!("{}/", a.base_url())],
            "given twice",
        ),
        (
            vec![format!("{},concurrency=0", a.base_url())],
            "at least 1",
        ),
        (vec!["ftp://x/v1".to_string()], "not an http(s) URL"),
    ] {
        let mut s = fx.settings(&a, "l.jsonl");
        s.endpoints = endpoints;
        let msg = format!("{:#}", label::run(&s).expect_err("refused"));
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    assert_eq!(a.stats().requests, 0);
}
