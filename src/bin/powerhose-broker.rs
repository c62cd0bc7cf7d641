//! `powerhose-broker`: binds the front (clients) and back (workers) endpoints and routes jobs.

use clap::Parser;
use powerhose::{broker, cli, endpoint, shutdown::Shutdown};

#[derive(Parser, Debug)]
#[command(version, about = "Route jobs from clients to powerhose workers")]
struct Args {
    /// Endpoint for clients [default: ipc://<runtime dir>/front.ipc]
    #[arg(long)]
    frontend: Option<String>,
    /// Endpoint for workers [default: ipc://<runtime dir>/back.ipc]
    #[arg(long)]
    backend: Option<String>,
    /// Timeout for Powerhose-format jobs (they carry none), in milliseconds.
    #[arg(long, default_value_t = 7500)]
    legacy_timeout_ms: u64,
    #[command(flatten)]
    broker: cli::BrokerArgs,
    /// Verbose logs.
    #[arg(long)]
    debug: bool,
}

fn run(args: &Args) -> anyhow::Result<()> {
    let frontend = args.frontend.clone().map_or_else(endpoint::default_frontend, Ok)?;
    let backend = args.backend.clone().map_or_else(endpoint::default_backend, Ok)?;
    let mut options = broker::BrokerOptions::new(frontend, backend);
    options.config = args.broker.config();
    options.legacy_timeout = std::time::Duration::from_millis(args.legacy_timeout_ms);
    broker::run_broker(options, &Shutdown::new()?.on_terminate()?)?;
    Ok(())
}

fn main() {
    let args = Args::parse();
    cli::init_tracing(args.debug);
    if let Err(e) = run(&args) {
        std::process::exit(cli::report("powerhose-broker", e.as_ref(), args.debug));
    }
}
