//! The `netsentinel` binary: parse settings, then serve, run the demo, or print the OpenAPI document.

use clap::Parser;
use netsentinel::config::{Cli, Command};
use netsentinel::startup::Application;
use netsentinel::{demo, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netsentinel: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().into_command() {
        Command::Serve(settings) => {
            telemetry::init(settings.log_format, &settings.log);
            let app = Application::build(settings).await?;
            app.run_until_stopped().await?;
            tracing::info!("stopped");
        }
        Command::Demo(args) => demo::run(&args.data_dir)?,
        Command::Openapi => println!("{}", netsentinel::api::openapi().to_pretty_json()?),
    }
    Ok(())
}
