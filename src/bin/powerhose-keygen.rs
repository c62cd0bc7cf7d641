//! `powerhose-keygen`: writes a CURVE key pair as czmq/pyzmq certificates,
//! `NAME.key` (public) and `NAME.key_secret` (secret, mode 0600).

use std::path::PathBuf;

use clap::Parser;
use powerhose::{cli, keys, Error};

#[derive(Parser, Debug)]
#[command(version, about = "Make a CURVE key pair: NAME.key (public) and NAME.key_secret (secret)")]
struct Args {
    /// The certificates' name: NAME.key and NAME.key_secret.
    name: String,
    /// The directory to write them in (it must exist).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    #[command(flatten)]
    log: cli::LogArgs,
}

/// Prints the public certificate's path, the secret one's, and the public
/// key, one a line.
fn run(args: &Args) -> Result<(), Error> {
    let (public, secret) = keys::write_certificates(&args.dir, &args.name).map_err(|e| match e {
        // A bad NAME is a bad argument: exit 2.
        Error::BadKeyName { .. } => Error::BadFlag(e.to_string()),
        e => e,
    })?;
    // Read back what was written: the key printed is the file's.
    let pair = keys::load_certificate(&secret)?;
    println!("{}\n{}\n{}", public.display(), secret.display(), pair.public_z85());
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = args.log.init(false) {
        std::process::exit(cli::report("powerhose-keygen", &e, false));
    }
    if let Err(e) = run(&args) {
        std::process::exit(cli::report("powerhose-keygen", &e, false));
    }
}
