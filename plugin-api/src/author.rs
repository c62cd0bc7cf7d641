//! What a plugin author sees: the [`Plugin`] trait, [`Job`], and the adapter
//! that turns them into the ABI types while keeping panics inside the plugin.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use abi_stable::{
    prefix_type::{PrefixRefTrait, WithMetadata},
    sabi_trait::TD_Opaque,
    std_types::{RBox, RErr, ROk, RResult, RSlice, RStr, RString, RVec},
};

use crate::abi::{HandlerBox, JobContext, PluginMod, PluginModRef, RHeader, RawHandler, RawHandler_TO};

/// Plugin parameters: the JSON value given to the worker with `--params`
/// (`null` when none was given).
pub type Params = serde_json::Value;

/// A job handler. One value is built per worker process by [`Plugin::init`]
/// and then called once per job.
pub trait Plugin: Send + Sync + Sized + 'static {
    /// Builds the handler; an `Err` stops the worker with that message.
    fn init(params: &Params) -> Result<Self, String>;
    /// Handles one job. An `Err` (or a panic) is sent to the client as an error.
    fn handle(&self, job: &Job<'_>) -> Result<Vec<u8>, String>;
}

/// One job as a handler sees it: string headers and opaque data.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    headers: &'a [RHeader<'a>],
    data: &'a [u8],
    id: u64,
    cancelled: Option<&'a AtomicBool>,
}

impl<'a> Job<'a> {
    /// Builds a job from its parts (for hosts and for plugin unit tests):
    /// id 0, never cancelled.
    pub fn new(headers: &'a [RHeader<'a>], data: &'a [u8]) -> Self {
        Job { headers, data, id: 0, cancelled: None }
    }

    /// A job that can be cancelled through `cancelled` (a plugin's unit
    /// test sets the flag as the worker would).
    pub fn cancellable(headers: &'a [RHeader<'a>], data: &'a [u8], id: u64, cancelled: &'a AtomicBool) -> Self {
        Job { headers, data, id, cancelled: Some(cancelled) }
    }

    /// The broker's id of the job (0 in [`Job::new`]'s jobs), for logs.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the client cancelled the job while it runs. Cooperative: a
    /// long handler checks it now and then and returns early; whatever it
    /// returns after a cancel is dropped by the worker.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// The job's payload.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The value of the first header with this name.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|h| h.name.as_str() == name).map(|h| h.value.as_str())
    }

    /// All headers in the order the client gave them.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.headers.iter().map(|h| (h.name.as_str(), h.value.as_str()))
    }
}

struct Adapter<P>(P);

impl<P: Plugin> RawHandler for Adapter<P> {
    fn handle(&self, headers: RSlice<'_, RHeader<'_>>, data: RSlice<'_, u8>) -> RResult<RVec<u8>, RString> {
        self.run(&Job::new(headers.as_slice(), data.as_slice()))
    }

    fn handle_job(
        &self,
        headers: RSlice<'_, RHeader<'_>>,
        data: RSlice<'_, u8>,
        context: JobContext<'_>,
    ) -> RResult<RVec<u8>, RString> {
        self.run(&Job::cancellable(headers.as_slice(), data.as_slice(), context.id, context.cancelled))
    }
}

impl<P: Plugin> Adapter<P> {
    fn run(&self, job: &Job<'_>) -> RResult<RVec<u8>, RString> {
        match catch_unwind(AssertUnwindSafe(|| self.0.handle(job))) {
            Ok(Ok(out)) => ROk(RVec::from(out)),
            Ok(Err(msg)) => RErr(RString::from(msg)),
            Err(payload) => RErr(RString::from(format!("handler panicked: {}", panic_message(&*payload)))),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

extern "C" fn init_adapter<P: Plugin>(params_json: RStr<'_>) -> RResult<HandlerBox, RString> {
    let run = || -> Result<HandlerBox, String> {
        let text = params_json.as_str().trim();
        let params: Params = if text.is_empty() {
            Params::Null
        } else {
            serde_json::from_str(text).map_err(|e| format!("parameters are not valid JSON: {e}"))?
        };
        let plugin = P::init(&params)?;
        Ok(RawHandler_TO::from_ptr(RBox::new(Adapter(plugin)), TD_Opaque))
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(handler)) => ROk(handler),
        Ok(Err(msg)) => RErr(RString::from(msg)),
        Err(payload) => RErr(RString::from(format!("init panicked: {}", panic_message(&*payload)))),
    }
}

/// Builds the root module for plugin type `P`; called by [`crate::export_plugin!`].
pub fn root_module<P: Plugin>(name: &'static str, version: &'static str) -> PluginModRef {
    let module = PluginMod {
        name: RStr::from_str(name),
        version: RStr::from_str(version),
        init: init_adapter::<P>,
        api_version: RStr::from_str(crate::API_VERSION),
        set_log_sink: crate::log::set_sink,
    };
    // One leaked module per process: the root module function runs once per load.
    let leaked: &'static WithMetadata<PluginMod> = Box::leak(Box::new(WithMetadata::new(module)));
    PluginModRef::from_prefix_ref(leaked.static_as_prefix())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Moody;

    impl Plugin for Moody {
        fn init(params: &Params) -> Result<Self, String> {
            match params.get("mood").and_then(|m| m.as_str()) {
                Some("grumpy") => Err("not today".into()),
                Some("explosive") => panic!("boom at init"),
                _ => Ok(Moody),
            }
        }

        fn handle(&self, job: &Job<'_>) -> Result<Vec<u8>, String> {
            match job.header("do") {
                Some("panic") => panic!("boom in handle"),
                Some("fail") => Err("failed on purpose".into()),
                _ => Ok([job.header("prefix").unwrap_or("").as_bytes(), job.data()].concat()),
            }
        }
    }

    fn call(handler: &HandlerBox, headers: &[(&str, &str)], data: &[u8]) -> Result<Vec<u8>, String> {
        let headers: Vec<RHeader<'_>> =
            headers.iter().map(|(n, v)| RHeader { name: RStr::from_str(n), value: RStr::from_str(v) }).collect();
        handler
            .handle(RSlice::from_slice(&headers), RSlice::from_slice(data))
            .into_result()
            .map(RVec::into_vec)
            .map_err(RString::into)
    }

    #[test]
    fn the_adapter_runs_jobs_and_turns_panics_into_errors() {
        let module = root_module::<Moody>("moody", "1.2.3");
        assert_eq!((module.name().as_str(), module.version().as_str()), ("moody", "1.2.3"));
        let Ok(handler) = (module.init())(RStr::from_str("")).into_result() else { panic!("init failed") };
        assert_eq!(call(&handler, &[("prefix", "> "), ("prefix", "ignored")], b"data").unwrap(), b"> data");
        assert_eq!(call(&handler, &[("do", "fail")], b"").unwrap_err(), "failed on purpose");
        assert_eq!(call(&handler, &[("do", "panic")], b"").unwrap_err(), "handler panicked: boom in handle");
        // Still usable after a panic.
        assert_eq!(call(&handler, &[], b"again").unwrap(), b"again");
    }

    #[test]
    fn init_errors_bad_json_and_panics_are_errors() {
        let init = root_module::<Moody>("moody", "1").init();
        let error = |params: &str| match init(RStr::from_str(params)).into_result() {
            Ok(_) => panic!("init should fail for {params}"),
            Err(e) => e.into_string(),
        };
        assert_eq!(error(r#"{"mood":"grumpy"}"#), "not today");
        assert_eq!(error(r#"{"mood":"explosive"}"#), "init panicked: boom at init");
        assert!(error("{nope").starts_with("parameters are not valid JSON"));
    }

    #[test]
    fn job_exposes_headers_in_order() {
        let headers = [RHeader { name: RStr::from_str("a"), value: RStr::from_str("1") }];
        let job = Job::new(&headers, b"x");
        assert_eq!(job.headers().collect::<Vec<_>>(), [("a", "1")]);
        assert_eq!((job.header("a"), job.header("b"), job.data()), (Some("1"), None, &b"x"[..]));
    }
}
