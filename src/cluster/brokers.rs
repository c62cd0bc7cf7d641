//! Where a pool's workers register: a broker on a thread of this process
//! (bound here, told of deaths and asked who registered), or brokers that
//! run elsewhere (`--connect`), in which case the workers themselves say
//! when they have registered ([`Registry::Notify`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::registry::Registry;
use super::ClusterOptions;
use crate::broker::{Broker, BrokerOptions, ControlSink, Inbox};
use crate::error::{Error, Result};
use crate::sys::notify::Listener;
use crate::wakeup::Wakeup;

/// Binds this pool's broker and runs it on a thread until `stop`.
pub(super) fn local_broker(
    options: &ClusterOptions,
    control: &ControlSink,
    stop: &Wakeup,
) -> Result<(Registry, JoinHandle<Result<()>>)> {
    let mut broker_options = BrokerOptions::new(&options.frontend, &options.backend);
    broker_options.more_frontends = options.more_frontends.clone();
    broker_options.config = options.broker.clone();
    // Unnamed jobs go to this pool's service (else to the first to
    // register, which is this pool's own workers anyway).
    if broker_options.config.default_service.is_none() {
        broker_options.config.default_service = options.worker.service.clone();
    }
    broker_options.control = Some(control.clone());
    broker_options.max_message_bytes = options.max_message_bytes;
    broker_options.io_cpu = options.worker.io_cpu;
    broker_options.curve = options.curve.clone();
    broker_options.insecure = options.insecure;
    // Bound first: a busy --metrics port fails before the broker binds.
    #[cfg(feature = "tools")]
    let metrics = options.metrics.map(crate::metrics::MetricsServer::bind).transpose()?;
    // The broker's loop is what serves: it feeds systemd's watchdog.
    let broker = Broker::bind(broker_options)?.with_watchdog(options.watchdog.clone());
    let (notices, notices_rx) = mpsc::channel();
    let inbox = Inbox { rx: notices_rx, wake: Wakeup::new()? };
    // Scrapes ask the loop through the same inbox as the supervisor.
    #[cfg(feature = "tools")]
    let serving = match metrics {
        Some(m) => Some(m.serve(crate::broker::Probe::new(notices.clone(), inbox.wake.clone()))?),
        None => None,
    };
    let registry = Registry::Broker { notices, wake: inbox.wake.clone() };
    let stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            crate::sys::block_process_signals();
            // Scrapes are served as long as the broker runs.
            #[cfg(feature = "tools")]
            let _serving = serving;
            broker.run(&stop, Some(&inbox))
        })
        .map_err(Error::io("starting the broker thread"))?;
    Ok((registry, thread))
}

/// The socket remote brokers' workers notify once registered, in the
/// private runtime directory.
pub(super) fn remote_brokers() -> Result<Registry> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = crate::endpoint::runtime_dir()?.join(format!("pool-{}-{n}.notify", std::process::id()));
    let listener = Listener::bind(&path).map_err(Error::io(format!("binding {}", path.display())))?;
    Ok(Registry::Notify { listener, ready: HashSet::new() })
}
