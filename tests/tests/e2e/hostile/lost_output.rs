//! Class 3, lost output reported as success (issue 16). A sink on a full disk
//! (`jsonl:/dev/full`) lost every decision and `run` exited 0 with a summary that did not
//! mention it; a station region outside the frame gave 0 decisions and exit 0; writing to
//! a closed pipe (`classify ... | head -1`) panicked (exit 101). Decisions not written are
//! now an error (counted, in the summary and the report, exit 1), a region outside the
//! first frame stops the run naming the station and both sizes (exit 2), and a closed
//! pipe is a quiet exit 0 in both binaries.

use crate::util::*;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn run_tiny(args: &[&str]) -> Command {
    let mut c = edge(&["run", "--no-store", "--bundle"]);
    c.arg(tiny_bundle()).args(args);
    c
}

#[test]
fn decisions_a_full_disk_did_not_take_are_an_error() {
    let m = run_bounded(
        &mut run_tiny(&[
            "--source",
            "synthetic",
            "--max-frames",
            "5",
            "--sink",
            "jsonl:/dev/full",
            "--json",
        ]),
        TIMEOUT,
    );
    assert_eq!(m.code, Some(1), "lost decisions must not exit 0");
    let report: serde_json::Value = serde_json::from_str(m.stdout_text().trim()).unwrap();
    assert_eq!(report["decisions"], 0, "nothing was written");
    assert_eq!(report["decisions_lost"], 5);
    assert!(report["sink_errors"].as_u64().unwrap() >= 5);
    m.assert_stderr_has("5 decisions NOT written");
    m.assert_stderr_has("No space left on device");

    // The plain summary says it too.
    let m = run_bounded(
        &mut run_tiny(&[
            "--source",
            "synthetic",
            "--max-frames",
            "3",
            "--sink",
            "jsonl:/dev/full",
        ]),
        TIMEOUT,
    );
    assert_eq!(m.code, Some(1));
    m.assert_stderr_has("0 decisions written, 3 NOT written");

    // And /metrics, while it runs.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = spawn(
        &mut run_tiny(&[
            "--source",
            "synthetic:20",
            "--sink",
            "jsonl:/dev/full",
            "--http",
            &addr,
        ]),
        None,
    );
    let mut lost = None;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(n) = metric(&addr, "linesight_decisions_lost_total").filter(|n| *n > 0) {
            lost = Some(n);
            break;
        }
    }
    child.signal(libc::SIGTERM);
    let m = child.wait(TIMEOUT);
    assert!(lost.is_some(), "/metrics never showed a lost decision");
    assert_eq!(m.code, Some(1));
}

/// One counter's value from `GET /metrics` (None while the endpoint is not up).
fn metric(addr: &str, name: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{name} ")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_station_outside_the_frame_stops_the_run_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("imgs");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("a.png"), black_png(320, 240)).unwrap();
    let cfg = tmp.path().join("edge.toml");
    std::fs::write(
        &cfg,
        "[[station]]\nname = \"left\"\nrect = [0, 0, 100, 100]\n[[station]]\nname = \"far\"\nrect = [600, 0, 100, 100]\n",
    )
    .unwrap();
    let m = run_bounded(
        &mut run_tiny(&[
            "--config",
            cfg.to_str().unwrap(),
            &format!("--source=dir:{}", d.display()),
            "--sink",
            "none",
        ]),
        TIMEOUT,
    );
    assert!(!m.timed_out);
    assert_eq!(
        m.code,
        Some(2),
        "a run that can never decide for a station is refused"
    );
    m.assert_stderr_has(&format!(
            "station `far`: region 600,0 100x100 does not fit a 320x240 frame (the first frame from `dir:{}`)",
            d.display()
        ));
    // With the synthetic source the frame size is known: refused before anything runs.
    let m = run_bounded(
        &mut run_tiny(&[
            "--config",
            cfg.to_str().unwrap(),
            "--source",
            "synthetic",
            "--show-settings",
        ]),
        TIMEOUT,
    );
    assert_eq!(m.code, Some(2));
    m.assert_stderr_has("station `far`: region 600,0 100x100 does not fit a 640x480 frame (source.synthetic_size = [640, 480])");
}

/// `cmd`'s stdout is a pipe whose reader is gone (what `| head -1` leaves behind).
fn into_closed_pipe(cmd: &mut Command) -> Measured {
    spawn(cmd, Some(closed_pipe())).wait(TIMEOUT)
}

#[test]
fn a_closed_pipe_is_a_quiet_clean_exit_in_both_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("imgs");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..3 {
        std::fs::copy(demo_photo(), d.join(format!("{i}.jpg"))).unwrap();
    }
    let t = tiny_bundle();
    let d_s = d.to_str().unwrap();
    let t_s = t.to_str().unwrap();
    let cases: Vec<Command> = vec![
        edge(&["classify", "--json", "--bundle", t_s, d_s]),
        edge(&["classify", "--bundle", t_s, d_s]),
        edge(&["inspect", "--bundle", t_s]),
        edge(&["inspect", "--json", "--bundle", t_s]),
        edge(&[
            "bench",
            "--bundle",
            t_s,
            "--iterations",
            "2",
            "--warmup",
            "0",
        ]),
        edge(&[
            "run",
            "--no-store",
            "--bundle",
            t_s,
            "--source",
            "synthetic",
            "--max-frames",
            "50",
            "--sink",
            "jsonl:-",
        ]),
        edge(&[
            "run",
            "--no-store",
            "--bundle",
            t_s,
            "--source",
            "synthetic",
            "--max-frames",
            "2",
            "--sink",
            "none",
            "--json",
        ]),
        {
            let mut c = Command::new(bin("linesight-train"));
            c.args(["--json", "keygen", "--out"])
                .arg(tmp.path().join("k1"));
            c
        },
        {
            let mut c = Command::new(bin("linesight-train"));
            c.args(["keygen", "--out"]).arg(tmp.path().join("k2"));
            c
        },
    ];
    for mut cmd in cases {
        let m = into_closed_pipe(&mut cmd);
        assert!(!m.timed_out);
        assert_eq!(
            m.code,
            Some(0),
            "{cmd:?}: a closed pipe ends quietly with 0"
        );
        assert!(!m.stderr.contains("panicked"), "{cmd:?}");
        assert!(!m.stderr.contains("error:"), "{cmd:?}: quiet");
    }
    // stderr closed as well (`2>&1 | head -1`): the summary line must not panic either.
    let m = spawn_io(
        &mut edge(&["classify", "--bundle", t_s, d_s]),
        Some(closed_pipe()),
        Some(closed_pipe()),
    )
    .wait(TIMEOUT);
    assert_eq!(m.code, Some(0));
}
