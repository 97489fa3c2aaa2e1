//! The test mail stack itself (issue 21, item 10): a test process that starts the shared stack leaves
//! nothing running once it is gone, however it ends — killed, interrupted with Ctrl-C, or failing. The
//! servers (Dovecot, Postfix, Cyrus) used to stay up as root after every `scripts/test.sh`, because the
//! shared stack lives in a static that is never dropped; `mailstack.sh hold` now stops them (see
//! tests/support/stack.rs).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Run by [`a_test_process_that_ends_any_way_leaves_no_server_running`] as a child: start the shared stack
/// in `POSTDESK_TEST_STACK_DIR` (with Cyrus beside it when `POSTDESK_TEST_STACK_CYRUS` is set), say so in
/// the file `POSTDESK_TEST_STACK_CHILD` names, then fail (`POSTDESK_TEST_STACK_END=panic`) or wait to be
/// killed.
#[test]
#[ignore = "a helper: run by a_test_process_that_ends_any_way_leaves_no_server_running"]
fn stack_holding_child() {
    let Some(ready) = std::env::var_os("POSTDESK_TEST_STACK_CHILD") else {
        return;
    };
    // Ctrl-C must end this process as it ends a `cargo test` in a terminal. A shell that runs a job in the
    // background without job control (a CI runner's, `cmd &` in a script) starts it with SIGINT ignored,
    // and an ignored signal stays ignored across exec: without this the "ctrl-c" case waited forever.
    // SAFETY: restoring a signal's default disposition, before any other thread of this test runs.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
    let _ = support::stack();
    if std::env::var_os("POSTDESK_TEST_STACK_CYRUS").is_some() {
        let _ = support::Server::Cyrus.stack();
    }
    std::fs::write(ready, "up").unwrap();
    if std::env::var("POSTDESK_TEST_STACK_END").as_deref() == Ok("panic") {
        panic!("a failing test, with the stack up");
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The master processes a stack in `dir` runs (from their pid files).
fn masters(dir: &Path) -> Vec<i32> {
    [
        "run/dovecot/master.pid",
        "postfix-queue/pid/master.pid",
        "cyrus/run/master.pid",
    ]
    .iter()
    .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
    .filter_map(|s| s.trim().parse().ok())
    .collect()
}

/// Whether `pid` runs (a zombie does not: in a container nobody may reap an exited daemon).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|st| !st.trim_start().starts_with(['Z', 'X']))
    })
}

fn stack_status(dir: &Path) -> i32 {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mailstack.sh"))
        .arg("status")
        .arg(dir)
        .output()
        .map(|o| o.status.code().unwrap_or(-1))
        .unwrap_or(-1)
}

#[test]
fn a_test_process_that_ends_any_way_leaves_no_server_running() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let cyrus = support::require_cyrus();
    for end in ["sigkill", "ctrl-c", "panic"] {
        let dir = std::env::temp_dir().join(support::unique("postdesk-ms-held"));
        let ready = std::env::temp_dir().join(support::unique("postdesk-held-ready"));
        let mut child = {
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args(["--ignored", "--exact", "stack_holding_child", "--nocapture"])
                .env("POSTDESK_TEST_STACK_DIR", &dir)
                .env("POSTDESK_TEST_STACK_CHILD", &ready)
                .env("POSTDESK_TEST_STACK_END", end)
                // Its own process group, as a `cargo test` in a terminal is: Ctrl-C goes to all of it.
                .process_group(0)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            if cyrus && end == "sigkill" {
                cmd.env("POSTDESK_TEST_STACK_CYRUS", "1");
            }
            cmd.spawn().expect("run the helper test")
        };
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{end}: the helper never started the stack"
            );
            if let Ok(Some(status)) = child.try_wait() {
                assert!(end == "panic", "{end}: the helper ended early: {status}");
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let pids = masters(&dir);
        assert!(pids.len() >= 2, "{end}: masters {pids:?}");
        if end == "sigkill" && cyrus {
            assert_eq!(pids.len(), 3, "Dovecot, Postfix and Cyrus: {pids:?}");
        }
        let pid = child.id() as i32;
        match end {
            // SAFETY: signalling our own child (and its process group), whose pid we hold.
            "sigkill" => unsafe {
                libc::kill(pid, libc::SIGKILL);
            },
            "ctrl-c" => unsafe {
                libc::kill(-pid, libc::SIGINT);
            },
            _ => {}
        }
        // Bounded: a helper that survives its signal fails the test instead of hanging the suite.
        let ended = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if ended.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{end}: the helper test process was still running 30 s after its signal");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "{end}: {status}");
        let gone = Instant::now();
        while pids.iter().any(|p| alive(*p)) || stack_status(&dir) != 3 {
            assert!(
                gone.elapsed() < Duration::from_secs(30),
                "{end}: the stack in {} still runs 30 s after its test process ended (masters {pids:?})",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "{end}: every server stopped {:?} after the test process ended",
            gone.elapsed()
        );
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&ready);
    }
}
