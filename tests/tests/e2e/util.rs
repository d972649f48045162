//! Shared helpers: locating binaries, weights and the repo; running commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// A binary of the workspace, in the target dir beside this test executable. The first
/// call runs `cargo build --bins` so that `cargo test -p linesight-e2e` alone never runs
/// stale binaries (the test crate cannot depend on binaries directly).
///
/// `LINESIGHT_E2E_FEATURES` (e.g. `linesight-edge/camera`) is passed on as `--features`:
/// the test run that builds the camera feature sets it, so this build does not replace its
/// binaries with ones built without the feature (which its own tests would then run).
///
/// `LINESIGHT_E2E_BIN_DIR=DIR` runs the binaries in `DIR` instead, without building:
/// e.g. the hostile-input suite against binaries of an older commit, to see each test fail
/// before its fix.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("LINESIGHT_E2E_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "linesight-trainer",
            "-p",
            "linesight-edge",
        ]);
        if let Ok(features) = std::env::var("LINESIGHT_E2E_FEATURES") {
            if !features.is_empty() {
                cmd.args(["--features", &features]);
            }
        }
        let status = cmd.current_dir(repo()).status().unwrap();
        assert!(status.success(), "cargo build --bins failed");
    });
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "`{}` is not built; run the tests with `cargo test --workspace` so both binaries are built",
        p.display()
    );
    p
}

pub fn weights_present(test: &str) -> bool {
    weights_file_present(test, "mobilenet_v2.safetensors")
}

/// Whether `models/weights/FILE` exists; a failure when it does not and
/// `LINESIGHT_REQUIRE_WEIGHTS=1`, else a loud skip.
pub fn weights_file_present(test: &str, file: &str) -> bool {
    let p = repo().join("models/weights").join(file);
    if p.exists() {
        return true;
    }
    if std::env::var("LINESIGHT_REQUIRE_WEIGHTS").as_deref() == Ok("1") {
        panic!(
            "{test}: `{}` missing and LINESIGHT_REQUIRE_WEIGHTS=1; run scripts/fetch-weights.sh",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: `{}` not found; run scripts/fetch-weights.sh",
        p.display()
    );
    false
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.env("LINESIGHT_NO_PROGRESS", "1");
    let out = cmd.output().unwrap();
    eprintln!(
        "$ {:?}\nexit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        cmd,
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds the demo prototype bundle from `models/demo` into `dir`; returns its path.
pub fn demo_bundle(dir: &Path) -> PathBuf {
    let out = dir.join("demo.lsb");
    let o = run(Command::new(bin("linesight-train"))
        .args(["--json", "prototypes", "--manifest"])
        .arg(repo().join("models/demo/manifest.csv"))
        .args(["--split", "train", "--model-id", "demo-birds", "--out"])
        .arg(&out));
    assert!(o.status.success());
    out
}

pub fn stdout_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// A `linesight-train simulate-mllm` process on a free loopback port; killed when dropped,
/// or stopped with SIGTERM by [`Simulator::stop`], which returns what it served.
pub struct Simulator {
    child: std::process::Child,
    /// The base URL to give `label --endpoint`.
    pub url: String,
}

impl Simulator {
    /// Starts the simulator on `truth` with extra `args` (`--seed`, `--latency-ms`, ...).
    pub fn start(truth: &Path, args: &[&str]) -> Simulator {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(bin("linesight-train"))
            .args([
                "--json",
                "--log",
                "warn",
                "simulate-mllm",
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--truth")
            .arg(truth)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut url = String::new();
        let mut seen = String::new();
        for _ in 0..50 {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                break;
            }
            seen.push_str(&line);
            if let Some(pos) = line.find("http://") {
                url = line[pos..].split_whitespace().next().unwrap().to_string();
                break;
            }
        }
        assert!(
            url.ends_with("/v1"),
            "the simulator printed no address:\n{seen}"
        );
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Simulator { child, url }
    }

    /// Stops the simulator (SIGTERM, as a technician's Ctrl-C) and returns its `stats`.
    pub fn stop(mut self) -> serde_json::Value {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let mut out = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut out).unwrap();
        let _ = self.child.wait();
        let report: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("simulator report is not JSON: {e}: {out}"));
        report["stats"].clone()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `linesight-train BASE FLAG BAD` and `BASE FLAG=BAD` and asserts that each was
/// refused at parse time (exit 2, before any work) with a message naming `flag` and the
/// allowed range. (`-inf` only in the `=` form: after a space clap takes it for a flag.)
pub fn assert_train_flag_refused(base: &[&str], flag: &str, bad: &str) {
    let joined = format!("{flag}={bad}");
    let mut forms = vec![[base, &[joined.as_str()]].concat()];
    if !bad.starts_with("-i") && !bad.starts_with("-n") {
        forms.push([base, &[flag, bad]].concat());
    }
    for args in forms {
        let o = run(Command::new(bin("linesight-train")).args(&args));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?} must be refused");
        assert!(
            err.contains(flag) && err.contains("expected"),
            "{args:?}: the message must name {flag} and the range:\n{err}"
        );
    }
}

/// The tiny bundle committed for tests that need a runnable model without weights or a
/// trainer: `tests/fixtures/tiny.lsb` (3 classes, 8x8 input; made and checked by
/// `edge-runtime/tests/it/tiny.rs`).
pub fn tiny_bundle() -> PathBuf {
    repo().join("tests/fixtures/tiny.lsb")
}

/// A committed demo photo (no weights needed).
pub fn demo_photo() -> PathBuf {
    repo().join("models/demo/images/Cedar_Waxwing/0000.jpg")
}

/// Makes a FIFO (named pipe) at `path`.
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// A pipe whose reading end is already closed: the child's first write to it fails with
/// `EPIPE` (what `| head -1` does once `head` has its line).
pub fn closed_pipe() -> std::process::Stdio {
    let mut fds = [0; 2];
    // SAFETY: two valid out slots.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned here.
    unsafe {
        libc::close(fds[0]);
        std::process::Stdio::from(
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
        )
    }
}

/// What a child process did, measured by `wait4` (its own rusage, not the test's).
pub struct Measured {
    /// Exit code; None when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// Peak resident memory, KiB: the largest `VmHWM` of `/proc/PID/status` seen while it
    /// ran (sampled every 5 ms). Not `wait4`'s `ru_maxrss`: Linux carries the spawning
    /// process's high-water mark across `exec` into it, so it would measure this test.
    pub peak_rss_kib: u64,
    /// User + system CPU time, seconds.
    pub cpu_s: f64,
    pub wall_s: f64,
    /// It ran past its timeout and was killed (the test must fail, not hang CI).
    pub timed_out: bool,
}

impl Measured {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts that stderr says `needle`.
    #[track_caller]
    pub fn assert_stderr_has(&self, needle: &str) {
        assert!(
            self.stderr.contains(needle),
            "stderr should say `{needle}`:\n{}",
            self.stderr
        );
    }

    /// Asserts that the peak RSS stayed below `kib` KiB.
    #[track_caller]
    pub fn assert_peak_below(&self, kib: u64) {
        assert!(
            self.peak_rss_kib < kib,
            "peak RSS {} KiB, bound {kib} KiB",
            self.peak_rss_kib
        );
    }
}

/// `linesight-edge ARGS`.
pub fn edge(args: &[&str]) -> Command {
    let mut c = Command::new(bin("linesight-edge"));
    c.args(args);
    c
}

/// `linesight-edge classify --json --bundle tiny.lsb PATHS...` to its end (killed after
/// `timeout`).
pub fn classify_tiny(paths: &[&Path], timeout: std::time::Duration) -> Measured {
    run_bounded(
        edge(&["classify", "--json", "--bundle"])
            .arg(tiny_bundle())
            .args(paths),
        timeout,
    )
}

/// A running child whose output is being collected.
pub struct Running {
    pid: libc::pid_t,
    shown: String,
    start: std::time::Instant,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
}

/// Starts `cmd` with stdout collected, unless `stdout` is given.
pub fn spawn(cmd: &mut Command, stdout: Option<std::process::Stdio>) -> Running {
    spawn_io(cmd, stdout, None)
}

/// Starts `cmd` with stdout and stderr collected, unless given.
pub fn spawn_io(
    cmd: &mut Command,
    stdout: Option<std::process::Stdio>,
    stderr: Option<std::process::Stdio>,
) -> Running {
    use std::io::Read;
    use std::process::Stdio;
    cmd.env("LINESIGHT_NO_PROGRESS", "1").stdin(Stdio::null());
    let (out_piped, err_piped) = (stdout.is_none(), stderr.is_none());
    cmd.stdout(stdout.unwrap_or_else(Stdio::piped))
        .stderr(stderr.unwrap_or_else(Stdio::piped));
    // Reaped by pid in `Running::wait` (wait4, for its rusage), not through the `Child`.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let collect = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = out_piped.then(|| collect(Box::new(child.stdout.take().unwrap())));
    let err = err_piped.then(|| collect(Box::new(child.stderr.take().unwrap())));
    Running {
        pid: child.id() as libc::pid_t,
        shown: format!("{cmd:?}"),
        start: std::time::Instant::now(),
        out,
        err,
    }
}

impl Running {
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: a child of this process that has not been reaped yet.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Waits at most `timeout`, then kills it (SIGKILL) and says so in `timed_out`.
    pub fn wait(self, timeout: std::time::Duration) -> Measured {
        let deadline = self.start + timeout;
        let mut status = 0;
        // SAFETY: plain old data, filled by wait4.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let mut timed_out = false;
        let mut peak = 0;
        loop {
            let flags = if timed_out { 0 } else { libc::WNOHANG };
            // SAFETY: valid out pointers; our own child.
            let r = unsafe { libc::wait4(self.pid, &mut status, flags, &mut ru) };
            if r == self.pid {
                break;
            }
            assert_eq!(r, 0, "wait4: {}", std::io::Error::last_os_error());
            peak = peak.max(vm_hwm_kib(self.pid).unwrap_or(0));
            if std::time::Instant::now() >= deadline {
                timed_out = true;
                self.signal(libc::SIGKILL);
            } else {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        let wall_s = self.start.elapsed().as_secs_f64();
        let stdout = self.out.map(|h| h.join().unwrap()).unwrap_or_default();
        let stderr = self
            .err
            .map(|h| String::from_utf8_lossy(&h.join().unwrap()).into_owned())
            .unwrap_or_default();
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let m = Measured {
            code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
            stdout,
            stderr,
            peak_rss_kib: peak,
            cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
            wall_s,
            timed_out,
        };
        let head: String = m.stdout_text().chars().take(4000).collect();
        eprintln!(
            "$ {}\nexit {:?} signal {:?} timed out {} | peak RSS {} KiB | cpu {:.2} s | wall {:.2} s\n--- stdout (start)\n{head}\n--- stderr\n{}",
            self.shown, m.code, m.signal, m.timed_out, m.peak_rss_kib, m.cpu_s, m.wall_s, m.stderr
        );
        m
    }
}

/// `VmHWM` of a live process, KiB (None once it has exited).
fn vm_hwm_kib(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `cmd` to its end, killed after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: std::time::Duration) -> Measured {
    spawn(cmd, None).wait(timeout)
}

/// A PNG of `width` x `height` black RGB pixels, written without an encoder library: its
/// pixel data is all zeros, so the deflate stream is one literal and back-references of
/// 258 bytes (fixed Huffman codes), about 13 bits per 258 bytes. A 12000x12000 image
/// (432 MB decoded) is a 2.7 MB file, made in milliseconds.
pub fn black_png(width: u32, height: u32) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        /// `n` bits of `v`, least significant first (header fields, extra bits).
        fn lsb(&mut self, v: u64, n: u32) {
            self.acc |= v << self.n;
            self.n += n;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// A Huffman code of `n` bits, most significant first.
        fn code(&mut self, c: u32, n: u32) {
            let rev = c.reverse_bits() >> (32 - n);
            self.lsb(rev as u64, n);
        }
    }
    let raw = height as u64 * (1 + 3 * width as u64);
    let mut b = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        n: 0,
    };
    b.lsb(1, 1); // BFINAL
    b.lsb(1, 2); // BTYPE = fixed Huffman
    b.code(0x30, 8); // literal 0
    let mut left = raw - 1;
    while left >= 258 {
        b.code(0b1100_0101, 8); // length code 285 = 258 bytes
        b.code(0, 5); // distance code 0 = 1 byte back
        left -= 258;
    }
    for _ in 0..left {
        b.code(0x30, 8);
    }
    b.code(0, 7); // end of block (256)
    if b.n > 0 {
        b.out.push(b.acc as u8);
    }
    // adler32 of zeros: a = 1, b = n mod 65521.
    let adler = (((raw % 65521) as u32) << 16) | 1;
    b.out.extend_from_slice(&adler.to_be_bytes());

    fn crc32(parts: &[&[u8]]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for p in parts {
            for &byte in *p {
                c ^= byte as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        (c >> 1) ^ 0xEDB8_8320
                    } else {
                        c >> 1
                    };
                }
            }
        }
        !c
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        png.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &b.out);
    chunk(b"IEND", &[]);
    png
}

/// The demo prototype bundle, built once per test run (the trainer takes a while) in a
/// folder that lives as long as the test process; copy it before changing it.
pub fn shared_demo_bundle() -> &'static Path {
    static BUILT: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, p) = BUILT.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let p = demo_bundle(d.path());
        (d, p)
    });
    p
}

/// A copy of bundle `src` at `dst` with model version `version`, signed with `key` (or
/// unsigned): a different, valid bundle of the same model.
pub fn bundle_variant(
    src: &Path,
    dst: &Path,
    version: &str,
    key: Option<&linesight_shared::signature::SecretKey>,
) -> PathBuf {
    use linesight_shared::bundle::Bundle;
    let b = Bundle::read(src).unwrap();
    let mut m = b.manifest.clone();
    m.model_version = version.to_string();
    let mut v = Bundle::new(m, b.model.clone());
    if let Some(k) = key {
        k.sign_bundle(&mut v);
    }
    v.write(dst).unwrap();
    dst.to_path_buf()
}

/// A signing key from `seed` with its `signing.pub` written under `dir`.
pub fn key_pair(dir: &Path, seed: u8) -> (linesight_shared::signature::SecretKey, PathBuf) {
    let k = linesight_shared::signature::SecretKey::from_seed([seed; 32]);
    let (_, public) = k.write_pair(dir).unwrap();
    (k, public)
}

/// sha256 of a file, in hex.
pub fn sha256_file(p: &Path) -> String {
    hex_of(&linesight_shared::bundle::sha256(
        &std::fs::read(p).unwrap(),
    ))
}

pub fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// stdout and stderr of a finished command, as one text.
pub fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The demo's training photos as an unlabeled folder `t/images` (links under neutral
/// names, no class in the path), and the held-out photos with their labels.
pub fn demo_unlabeled(t: &Path) -> (PathBuf, Vec<(PathBuf, String)>) {
    let manifest = repo().join("models/demo/manifest.csv");
    let images = t.join("images");
    std::fs::create_dir(&images).unwrap();
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut held_out = Vec::new();
    for (i, line) in text.lines().skip(1).enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let src = repo().join("models/demo").join(f[0]);
        if f[2] == "train" {
            std::os::unix::fs::symlink(&src, images.join(format!("{i:03}.jpg"))).unwrap();
        } else {
            held_out.push((src, f[1].to_string()));
        }
    }
    (images, held_out)
}

/// The MLLM simulator (at `accuracy`, `seed`, over HTTP) names the photos of `images`
/// (`label`), then `refine` votes (`--min-images 2 --k 5`, for 30 photos). Returns
/// refined.json's path and refine's output.
pub fn label_and_refine(t: &Path, images: &Path, accuracy: &str, seed: &str) -> (PathBuf, Output) {
    label_and_refine_with(t, images, accuracy, seed, &[])
}

/// [`label_and_refine`] with more `refine` flags (`--backbone ...`).
pub fn label_and_refine_with(
    t: &Path,
    images: &Path,
    accuracy: &str,
    seed: &str,
    refine_args: &[&str],
) -> (PathBuf, Output) {
    let train = bin("linesight-train");
    let manifest = repo().join("models/demo/manifest.csv");
    let sim = Simulator::start(&manifest, &["--accuracy", accuracy, "--seed", seed]);
    let labels = t.join("labels.jsonl");
    let o = run(Command::new(&train)
        .args([
            "--json",
            "label",
            "--model",
            "simulated",
            "--endpoint",
            &sim.url,
            "--images",
        ])
        .arg(images)
        .arg("--out")
        .arg(&labels));
    assert!(o.status.success());
    drop(sim);
    let refined = t.join("refined.json");
    let o = refine_with(images, &labels, refine_args, &refined);
    (refined, o)
}

/// `refine` of `labels` (an answer log of `images`) into `out`, with the settings the
/// end-to-end tests use for the 30 demo photos (`--min-images 2 --k 5`) and `refine_args`.
pub fn refine_with(images: &Path, labels: &Path, refine_args: &[&str], out: &Path) -> Output {
    run(Command::new(bin("linesight-train"))
        .args([
            "--json",
            "refine",
            "--min-images",
            "2",
            "--k",
            "5",
            "--images",
        ])
        .arg(images)
        .arg("--labels")
        .arg(labels)
        .args(refine_args)
        .arg("--out")
        .arg(out))
}
