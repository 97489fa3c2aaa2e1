//! The `postdesk` binary: parse the command line, set up logging, hand over to the library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = postdesk::cli::Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("postdesk: cannot start the async runtime: {e:#}");
            return std::process::ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        let mut out = std::io::stdout();
        let mut err = std::io::stderr();
        postdesk::cli::execute(cli, &mut out, &mut err).await
    });
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Logs go to stderr; `RUST_LOG` filters (default `info`). Without a terminal (systemd, an MTA) lines carry
/// no timestamp or colours: the journal adds its own.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.without_time().with_ansi(false).init();
    }
}
