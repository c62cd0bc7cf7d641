//! The `echo` plugin: answers every job with its own data. The smallest possible
//! handler, used by the quickstart, the tests and the benchmarks.

use powerhose_plugin_api::{export_plugin, Job, Params, Plugin};

pub struct Echo;

impl Plugin for Echo {
    fn init(_params: &Params) -> Result<Self, String> {
        Ok(Echo)
    }

    fn handle(&self, job: &Job<'_>) -> Result<Vec<u8>, String> {
        Ok(job.data().to_vec())
    }
}

export_plugin!(Echo);
