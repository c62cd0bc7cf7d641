//! `powerhose-worker`: loads a job-handler plugin and serves jobs from a
//! broker (the program is [`powerhose::cli::worker_main`], shared with the
//! Python package's `powerhose-worker` script).

fn main() {
    std::process::exit(powerhose::cli::worker_main(std::env::args_os()));
}
