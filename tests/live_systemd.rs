//! Operations as installed (issue 16): the Debian package under a real systemd, and what can be checked of
//! it without one.
//!
//! - [`the_readme_install_runs_under_a_real_systemd`] runs `scripts/live-systemd.sh`: the package built by
//!   `scripts/build-deb.sh` from the binary under test, README's install steps run as written in a Debian
//!   12 container with systemd as PID 1 (systemd-nspawn), against the project's mail stack, and every
//!   check of issue 16 that needs systemd (the script's header lists them). It needs root, systemd-nspawn,
//!   debootstrap and the mail servers (`scripts/install-test-deps.sh`); without them it is skipped, or
//!   fails under `POSTDESK_TEST_REQUIRE_SERVERS=1` (`scripts/test.sh`, CI).
//! - The rest run on the host: `build-deb.sh` with `CARGO_TARGET_DIR` set, what the package holds, the
//!   package's starting config, and `check-config`'s word on a relative `password_file`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `cargo deb` runs here (scripts/install-test-deps.sh installs it).
fn cargo_deb() -> bool {
    Command::new("cargo")
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn require_live_tools() -> bool {
    if !support::require_servers(support::MAIL_SERVERS) {
        return false;
    }
    for (path, what) in [
        (
            "/usr/bin/systemd-nspawn",
            "systemd-nspawn (systemd-container)",
        ),
        ("/usr/sbin/debootstrap", "debootstrap"),
        ("/usr/bin/nsenter", "nsenter (util-linux)"),
        ("/usr/bin/script", "script (bsdutils)"),
    ] {
        if !support::require_tool(path, what) {
            return false;
        }
    }
    true
}

#[test]
fn the_readme_install_runs_under_a_real_systemd() {
    if !require_live_tools() {
        return;
    }
    let began = Instant::now();
    // The script's progress goes straight to the terminal (it takes a few minutes).
    let status = Command::new(repo().join("scripts/live-systemd.sh"))
        .env("POSTDESK_BIN", env!("CARGO_BIN_EXE_postdesk"))
        .stdin(Stdio::null())
        .status()
        .expect("run scripts/live-systemd.sh");
    assert!(
        status.success(),
        "scripts/live-systemd.sh failed ({status:?}) after {:?}: its output above says which check",
        began.elapsed()
    );
}

/// Issue 16: with `CARGO_TARGET_DIR` set, build-deb.sh looked for the package under `target/debian/`
/// (`ls: cannot access 'target/debian/postdesk_*.deb'`); it now takes the path `cargo deb` prints.
#[test]
fn build_deb_finds_the_package_under_cargo_target_dir() {
    let required = std::env::var(support::REQUIRE_SERVERS).is_ok_and(|v| !v.is_empty() && v != "0");
    if !cargo_deb() {
        assert!(
            !required,
            "cargo-deb is missing: run scripts/install-test-deps.sh (it installs it)"
        );
        support::skipped("needs cargo-deb (scripts/install-test-deps.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    // The binary under test where cargo-deb expects a release build (a link: no copy of 100+ MB).
    std::fs::create_dir_all(target.join("release")).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_postdesk"));
    if std::fs::hard_link(&bin, target.join("release/postdesk")).is_err() {
        std::fs::copy(&bin, target.join("release/postdesk")).unwrap();
    }
    let out = Command::new(repo().join("scripts/build-deb.sh"))
        .args(["--no-build", "--fast"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run scripts/build-deb.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build-deb.sh failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default());
    assert!(
        deb.starts_with(target.join("debian")) && deb.extension().is_some_and(|e| e == "deb"),
        "build-deb.sh printed {deb:?}, not a package under $CARGO_TARGET_DIR/debian"
    );
    assert!(deb.is_file(), "{deb:?} does not exist");

    // What the package holds: the unit, its tmpfiles.d entry, the runnable starting config as the
    // conffile, the complete example as documentation, the maintainer scripts.
    let contents = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .unwrap();
    let contents = String::from_utf8_lossy(&contents.stdout);
    for path in [
        "./usr/bin/postdesk",
        "./usr/lib/systemd/system/postdesk.service",
        "./usr/lib/tmpfiles.d/postdesk.conf",
        "./etc/postdesk/config.toml",
        "./usr/share/doc/postdesk/config.example.toml",
        "./usr/share/doc/postdesk/README.md",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} missing from the package:\n{contents}"
        );
    }
    let unpacked = dir.path().join("unpacked");
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(unpacked.join("etc/postdesk/config.toml")).unwrap(),
        std::fs::read_to_string(repo().join("debian/config.toml")).unwrap(),
        "the conffile is debian/config.toml"
    );
    let control = dir.path().join("control");
    let st = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&control)
        .status()
        .unwrap();
    assert!(st.success());
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("systemd-tmpfiles --create postdesk.conf"),
        "{postinst}"
    );
    let postrm = std::fs::read_to_string(control.join("postrm")).unwrap();
    assert!(
        postrm.contains("rm -rf /etc/postdesk/credentials /var/spool/postdesk /var/lib/postdesk"),
        "{postrm}"
    );
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/postdesk/config.toml"
    );
}

/// Issue 16: the package's config (then the example) failed as installed. The starting config passes
/// `check-config` as it is, with no password to read.
#[test]
fn the_packages_starting_config_is_valid_as_shipped() {
    let (code, out, err) =
        support::Cli::new(&repo().join("debian/config.toml")).run(&["check-config"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 region(s): HQ <support@localhost>"), "{out}");
    let text = std::fs::read_to_string(repo().join("debian/config.toml")).unwrap();
    // What the unit lets it write: the store and the package's spool, nothing else.
    for line in text
        .lines()
        .filter(|l| l.starts_with("path =") || l.starts_with("file_dir ="))
    {
        assert!(
            line.contains("\"/var/lib/postdesk\"") || line.contains("\"/var/spool/postdesk/"),
            "{line}: outside what the unit makes writable"
        );
    }
}

/// Issue 16: `check-config` without `$CREDENTIALS_DIRECTORY` said only "cannot read smtp.pass: No such
/// file", not where a relative `password_file` is looked for.
#[test]
fn check_config_without_credentials_directory_says_how_a_relative_password_file_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = \"{}\"\n[outbound]\ntransport = \"smtp\"\n[outbound.smtp]\nhost = \"smtp.example.com\"\nusername = \"postdesk@example.com\"\npassword_file = \"smtp.pass\"\n[[region]]\ncode = \"JP\"\naddress = \"support-jp@example.com\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = Command::new(support::cli::bin())
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .env_remove("CREDENTIALS_DIRECTORY")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("outbound.smtp.password_file")
            && err.contains("looked up in $CREDENTIALS_DIRECTORY")
            && err.contains("LoadCredential")
            && err.contains("CREDENTIALS_DIRECTORY set to /etc/postdesk/credentials"),
        "{err}"
    );
    // The text is whole: the config error's redaction of secret-looking `name=value` pairs left it alone.
    assert!(!err.contains("<redacted>"), "{err}");
}
