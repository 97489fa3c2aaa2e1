//! The `postdesk` binary: parse the command line, set up logging, hand over to the library.
//!
//! What a command prints as a problem goes through [`postdesk::logging::Stderr`], so that under systemd a
//! fatal "postdesk: cannot start: …" is one journal entry at priority 3, as the log lines are.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Before any thread starts: see the function's comment (peak RSS of the daemon, BENCHMARKS.md).
    postdesk::daemon::one_malloc_arena();
    let cli = postdesk::cli::Cli::parse();
    postdesk::logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            use std::io::Write;
            let mut err = postdesk::logging::Stderr::new(cli.log_format);
            let _ = writeln!(err, "postdesk: cannot start the async runtime: {e:#}");
            return std::process::ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        let mut out = std::io::stdout();
        let mut err = postdesk::logging::Stderr::new(cli.log_format);
        postdesk::cli::execute(cli, &mut out, &mut err).await
    });
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
