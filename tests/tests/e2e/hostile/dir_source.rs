//! Class 10 (the `dir:` source part; issue 16): `run --source dir:D --loop` without an fps
//! over a folder of only corrupt images decoded them back to back for ever, burning a
//! core. A whole pass without a usable image now pauses the replay (1 s, doubling to 60 s)
//! and says so; the test measures the child's CPU time against its wall time.

use crate::util::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn looping_over_only_corrupt_images_does_not_burn_a_core() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("corrupt");
    std::fs::create_dir_all(&d).unwrap();
    let photo = std::fs::read(demo_photo()).unwrap();
    std::fs::write(d.join("cut.jpg"), &photo[..photo.len() / 2]).unwrap();
    std::fs::write(d.join("empty.png"), b"").unwrap();
    std::fs::write(d.join("text.jpg"), b"not an image at all").unwrap();
    let child = spawn(
        Command::new(bin("linesight-edge"))
            .args([
                "run",
                "--no-store",
                "--json",
                "--loop",
                "--sink",
                "none",
                "--bundle",
            ])
            .arg(tiny_bundle())
            .arg(format!("--source=dir:{}", d.display())),
        None,
    );
    std::thread::sleep(Duration::from_secs(4));
    child.signal(libc::SIGTERM);
    let m = child.wait(Duration::from_secs(30));
    assert!(!m.timed_out, "run ignored SIGTERM");
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    // Spinning, it used all of its ~4 s of wall time on a core.
    assert!(
        m.cpu_s < 0.2 * m.wall_s,
        "{:.2} s of CPU in {:.2} s: the source spins over the corrupt images",
        m.cpu_s,
        m.wall_s
    );
    let report: serde_json::Value = serde_json::from_str(m.stdout_text().trim()).unwrap();
    assert_eq!(report["decisions"], 0);
    // One pass, a 1 s pause, a pass, a 2 s pause, perhaps a third pass: a handful of bad
    // frames, not millions.
    let bad = report["bad_frames"].as_u64().unwrap();
    assert!((3..=12).contains(&bad), "{bad} bad frames");
    assert!(
        m.stderr
            .contains("none of the images in the folder could be used in a whole pass"),
        "{}",
        m.stderr
    );
}
