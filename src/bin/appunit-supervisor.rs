//! appunit-supervisor: the main process of an app's unit (`src/supervisor`). A binary of
//! its own, apart from appunitd: every running app runs one, and each pays for the
//! relocated pages of the binary it runs, so it holds none of the daemon's code.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Runs an installed app's containers: its unit's main process"
)]
struct Cli {
    /// Configuration file (every key optional).
    #[arg(long, default_value = appunit::config::DEFAULT_PATH)]
    config: PathBuf,
    app_id: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    appunit::logging::init();
    match appunit::supervisor::main(&cli.config, &cli.app_id) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("appunit-supervisor: {message}");
            ExitCode::FAILURE
        }
    }
}
