//! `powerhose-client`: sends one job, a ping or a worker-count query to a broker from a shell.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use clap::{Parser, Subcommand};
use powerhose::{cli, endpoint, Client, Error, JobRequest};

#[derive(Parser, Debug)]
#[command(version, about = "Send a job or a ping to a powerhose broker")]
struct Args {
    /// The broker's client endpoint [default: unix://<runtime dir>/front.sock];
    /// repeated, the job goes to one broker that answers, and to another if
    /// that one is down (see the README's "Several brokers").
    #[arg(long, global = true)]
    frontend: Vec<String>,
    /// Seconds to wait for the answer.
    #[arg(long, global = true, default_value_t = 5.0)]
    timeout: f64,
    /// This client's secret certificate (`NAME.key_secret`), for a broker
    /// started with --curve-secret.
    #[arg(long, global = true, value_name = "FILE", requires = "curve_server")]
    curve_secret: Option<std::path::PathBuf>,
    /// The broker's public certificate (its `NAME.key`).
    #[arg(long, global = true, value_name = "FILE", requires = "curve_secret")]
    curve_server: Option<std::path::PathBuf>,
    #[command(flatten)]
    log: cli::LogArgs,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one job and print its result on stdout.
    Run {
        /// The job's data; `-` reads stdin.
        data: String,
        /// A header, NAME:VALUE (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// The service to run it [default: the broker's only service]
        #[arg(long)]
        service: Option<String>,
        /// Print the result (the output, not the data sent) as hex digits.
        // `--hex` was the first name; hidden so help shows one, kept for old scripts.
        #[arg(long, alias = "hex")]
        print_hex: bool,
    },
    /// Print the broker's pid.
    Ping,
    /// Print how many workers serve a service (all when omitted); exit 1 if none.
    Workers { service: Option<String> },
    /// Replace every worker of a `powerhose` cluster, one at a time (picks up a rebuilt plugin).
    Reload,
    /// Set the number of workers of a `powerhose` cluster: N, +N or -N.
    Scale {
        #[arg(allow_hyphen_values = true)]
        workers: String,
    },
}

fn run(args: &Args) -> anyhow::Result<()> {
    let frontend = match args.frontend.is_empty() {
        true => vec![endpoint::default_frontend()?],
        false => args.frontend.clone(),
    };
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .map_err(|_| Error::BadFlag("--timeout must be a non-negative number of seconds".into()))?;
    let curve =
        cli::CurveClientArgs { curve_secret: args.curve_secret.clone(), curve_server: args.curve_server.clone() };
    let client = Client::connect_many(&frontend, curve.credentials()?.as_ref())?;
    match &args.command {
        Cmd::Run { data, headers, service, print_hex } => {
            let data = if data == "-" {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf)?;
                buf
            } else {
                data.as_bytes().to_vec()
            };
            let mut job = JobRequest::new(data).service(service.as_deref().unwrap_or(""));
            for h in headers {
                let (name, value) =
                    h.split_once(':').ok_or_else(|| Error::BadFlag(format!("header {h:?} is not NAME:VALUE")))?;
                job = job.header(name, value);
            }
            let result = client.execute(job, timeout)?;
            let mut out = std::io::stdout().lock();
            let (bytes, warning) = cli::render_result(&result, *print_hex, out.is_terminal());
            out.write_all(&bytes)?;
            if let Some(warning) = warning {
                cli::warn("powerhose-client", &warning);
            }
        }
        Cmd::Ping => println!("{}", client.ping(timeout)?),
        Cmd::Reload => {
            client.reload(timeout)?;
            println!("reload started: workers are replaced one at a time (see powerhose-broker --status)");
        }
        Cmd::Scale { workers } => {
            let bad = || Error::BadFlag(format!("scale takes N, +N or -N, not {workers:?}"));
            if let Some(rest) = workers.strip_prefix(['+', '-']) {
                let n: i64 = rest.parse().map_err(|_| bad())?;
                client.scale(None, Some(if workers.starts_with('-') { -n } else { n }), timeout)?;
            } else {
                client.scale(Some(workers.parse().map_err(|_| bad())?), None, timeout)?;
            }
            println!("scaling to {workers} workers");
        }
        Cmd::Workers { service } => {
            let n = client.workers(service.as_deref().unwrap_or(""), timeout)?;
            println!("{n}");
            if n == 0 {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = args.log.init(false) {
        std::process::exit(cli::report("powerhose-client", &e, false));
    }
    if let Err(e) = run(&args) {
        std::process::exit(cli::report("powerhose-client", e.as_ref(), false));
    }
}
