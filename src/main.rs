//! Entry point: parse flags, load the config, dispatch to a command. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;

use cloudlet_maintd::cli::{Cli, Command};
use cloudlet_maintd::commands::{self, EXIT_USAGE, LogFormat};
use cloudlet_maintd::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config_path, missing_ok) = cli.config_path();
    let config = match Config::load(&config_path, missing_ok) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit(EXIT_USAGE);
        }
    };
    let (filter, format) = match &cli.command {
        Command::Run(args) => match args.log_format.parse::<LogFormat>() {
            Ok(f) => (config.log.filter.clone(), f),
            Err(e) => {
                eprintln!("{e}");
                return exit(EXIT_USAGE);
            }
        },
        // The demo shows the daemon's decisions, not the simulator's request log.
        #[cfg(feature = "demo")]
        Command::Demo(_) => ("warn,cloudlet_maintd=info".to_string(), LogFormat::Text),
        _ => (config.log.filter.clone(), LogFormat::Text),
    };
    commands::init_logging(&filter, format);
    let code = match &cli.command {
        Command::Check(args) => commands::check::run(&config, args),
        Command::Plan(args) => commands::plan::run(&config, args),
        Command::Run(args) => commands::run::run(&config, args),
        Command::Status(args) => commands::status::run(&config, args),
        Command::Man => commands::man(),
        #[cfg(feature = "demo")]
        Command::Demo(args) => commands::demo::run(&config, args),
        Command::Cloudlet(args) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(commands::cloudlet::run(&config, &args.action)),
            Err(e) => {
                eprintln!("cannot start the async runtime: {e}");
                EXIT_USAGE
            }
        },
    };
    exit(code)
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
