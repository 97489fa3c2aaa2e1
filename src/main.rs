//! The `postdesk` binary: parse the command line, set up logging, hand over to the library.

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
