//! Embeds a powerhose pool in an application: start it in the background, use
//! it, stop it. Run from the directory holding the plugin and
//! `powerhose-worker` (e.g. `cd target/debug && ./examples/embed`).

use std::time::Duration;

use powerhose::cluster::Cluster;
use powerhose::JobRequest;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Workers are `powerhose-worker` processes, found next to this program
    // (or its parent directory) or on PATH; `.worker_exe(path)` names one.
    let cluster = Cluster::builder("libcrypto_job.so").workers(2).start()?;
    let client = cluster.client()?;
    let job = JobRequest::new("hello").header("op", "sign");
    let signature = client.execute(job, Duration::from_secs(5))?;
    println!("signed by the pool: {} bytes", signature.len());
    cluster.stop()?;
    Ok(())
}
