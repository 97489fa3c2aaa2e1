//! The one way tests run the built `postdesk` binary: [`Cli`] runs a command as an admin or an MTA would
//! (`--config CONFIG ARGS…`, stdin in, exit code and output back, never hanging a test), and starts
//! `postdesk run` as a [`DaemonProcess`] whose log the test can read.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command that has not finished within this long fails the test instead of hanging it.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// The real `postdesk` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_postdesk"))
}

/// How a test runs `postdesk --config CONFIG …`: where (the working directory; the test's own by default),
/// under which umask, with which environment and global options.
#[derive(Clone, Debug)]
pub struct Cli {
    config: PathBuf,
    cwd: Option<PathBuf>,
    umask_000: bool,
    global: Vec<String>,
    env: Vec<(String, String)>,
}

impl Cli {
    pub fn new(config: &Path) -> Cli {
        Cli {
            config: config.to_path_buf(),
            cwd: None,
            umask_000: false,
            global: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Run in `dir` (relative paths on the command line are the caller's, e.g. `backup DIR`).
    pub fn in_dir(mut self, dir: &Path) -> Cli {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Run under umask 000, so the file modes the binary creates are its own doing.
    pub fn umask_000(mut self) -> Cli {
        self.umask_000 = true;
        self
    }

    /// A global option before the command, e.g. `--log-format json`.
    pub fn global(mut self, args: &[&str]) -> Cli {
        self.global.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// An environment variable for the process, e.g. `NOTIFY_SOCKET`.
    pub fn env(mut self, key: &str, value: &str) -> Cli {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = if self.umask_000 {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("umask 000; exec \"$@\"")
                .arg("sh")
                .arg(bin());
            c
        } else {
            Command::new(bin())
        };
        cmd.arg("--config")
            .arg(&self.config)
            .args(&self.global)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Run `postdesk --config CONFIG ARGS…` with `stdin` as its input: (exit code, stdout, stderr). The exit
    /// code is -1 when a signal ended it. Fails the test if it has not finished within [`CLI_TIMEOUT`].
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn postdesk {args:?}: {e}"));
        // Feed stdin and drain stdout/stderr on threads, so a full pipe never blocks either side.
        let input = stdin.to_vec();
        let mut pipe_in = child.stdin.take().expect("stdin");
        let feeder = std::thread::spawn(move || {
            // A command that does not read its input closes the pipe early: not an error of the test.
            let _ = pipe_in.write_all(&input);
        });
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut b = Vec::new();
                let _ = r.read_to_end(&mut b);
                b
            })
        };
        let out = drain(Box::new(child.stdout.take().expect("stdout")));
        let err = drain(Box::new(child.stderr.take().expect("stderr")));
        let deadline = Instant::now() + CLI_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for postdesk") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("postdesk {args:?} did not answer within {CLI_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let _ = feeder.join();
        let (out, err) = (out.join().unwrap(), err.join().unwrap());
        (
            status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    /// Run `ARGS…` (no input), require exit 0, and parse its stdout as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let (code, out, err) = self.run(args, b"");
        assert_eq!(code, 0, "postdesk {args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Start `postdesk --config CONFIG [GLOBAL…] run`, its log (stderr) collected.
    pub fn daemon(&self) -> DaemonProcess {
        let mut child = self
            .command(&["run"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn postdesk run");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let echo = std::env::var_os("POSTDESK_TEST_LOG").is_some();
        let spawned = Instant::now();
        // The log must be drained, or a full pipe would block the daemon's logging.
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("[postdesk +{:?}] {line}", spawned.elapsed());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        DaemonProcess {
            child,
            log,
            reader: Some(reader),
        }
    }
}

/// `postdesk --config CONFIG ARGS…` (forwarded to a running daemon, or on the store), exit 0, its JSON.
pub fn cli_json(config: &Path, args: &[&str]) -> serde_json::Value {
    Cli::new(config).json(args)
}

/// `postdesk run` as a child process (see [`Cli::daemon`]), its log (stderr) collected line by line
/// (`POSTDESK_TEST_LOG=1` also echoes it). Killed when dropped, if still running.
pub struct DaemonProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl DaemonProcess {
    /// `postdesk --config CONFIG run`.
    pub fn spawn(config: &Path) -> DaemonProcess {
        Cli::new(config).daemon()
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the log has a line containing all of `parts`.
    pub fn logged(&self, parts: &[&str]) -> bool {
        self.log()
            .lines()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    }

    /// Still running (it has not exited on its own)?
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Send `sig` (`TERM`, `HUP`, …) with kill(1) (std has no kill with a signal).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// SIGKILL, and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_reader();
    }

    /// SIGTERM (a clean stop); returns whether it exited 0 within 20 s.
    pub fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.join_reader();
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// SIGTERM, then the exit status and how long the stop took. Fails the test (showing the log) if it has
    /// not stopped within 30 s.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let start = Instant::now();
        self.signal("TERM");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.join_reader();
                return (status, start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!(
                    "postdesk did not stop within 30 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the log reader, so [`DaemonProcess::log`] holds everything the process wrote.
    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}
