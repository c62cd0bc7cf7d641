//! The stable ABI between powerhose workers and job-handler plugins.
//!
//! A plugin is a `cdylib` that implements [`Plugin`] in ordinary safe Rust and
//! calls [`export_plugin!`] once. The worker loads it with abi_stable's checked
//! loading, so a plugin built against an incompatible version of this crate is
//! refused at load time with an error instead of being called into.
//!
//! ```no_run
//! use powerhose_plugin_api::{export_plugin, Job, Params, Plugin};
//!
//! struct Echo;
//! impl Plugin for Echo {
//!     fn init(_params: &Params) -> Result<Self, String> { Ok(Echo) }
//!     fn handle(&self, job: &Job<'_>) -> Result<Vec<u8>, String> { Ok(job.data().to_vec()) }
//! }
//! export_plugin!(Echo);
//! ```
//!
//! # Logging
//!
//! A plugin logs with `tracing::info!` (or `log::info!`), its crate depending
//! on `tracing` or `log` itself. [`export_plugin!`] wires the rest: when the
//! worker hands over its [`LogSink`], before `init`, this crate installs a
//! subscriber and a logger as the plugin's own (its static copies of
//! `tracing` and `log`, the ones the author's macros use) that pass each
//! record at or below the worker's level to the worker, message and fields
//! on one line; the worker logs it with the plugin's name, its pid and the
//! job's id. A subscriber or logger the author installed first stays.
//!
//! # Rules for evolving the interface
//!
//! The root module [`PluginMod`] and the handler [`RawHandler`] are
//! abi_stable *prefix types*:
//! - never change, reorder or remove an existing field or method, and never
//!   change the signature of an existing one or of [`RHeader`];
//! - new capabilities are fields **appended at the end** of [`PluginMod`] or
//!   methods appended to [`RawHandler`] with a default body (the host gets
//!   the default from a plugin that lacks the method); that is a minor
//!   release (0.1.0 → 0.1.1);
//! - abi_stable lets a library with *more* fields serve a host with fewer,
//!   never the reverse: so each release freezes the layout it replaces (as
//!   [`v0_1_0`]), and the worker loads a plugin with the newest layout that
//!   fits, falling back to the frozen ones. A plugin built against 0.1.0
//!   keeps loading; it is never told of a cancel, and its logs go to stderr;
//! - a worker may refuse plugins older than a version
//!   (`--require-plugin-api 0.1.1`), in one line, before their init runs;
//! - anything else is a breaking change: bump the minor version while 0.x
//!   (0.1 → 0.2), which abi_stable reports as "incompatible package versions".
//!
//! | version | adds |
//! |---|---|
//! | 0.1.0 | `name`, `version`, `init`; `RawHandler::handle` |
//! | 0.1.1 | `api_version`, `set_log_sink` ([`LogSink`]); `RawHandler::handle_job` ([`JobContext`]: job id, cancel flag) |
//!
//! abi_stable checks all of this at load time; the worker turns its (very long)
//! report into one line and shows the full text only with `--debug`.
//!
//! # Moving off abi_stable
//!
//! abi_stable has had no release since 0.11.3 (2023). Every abi_stable type
//! stays inside this crate (the worker names them only through it), so a
//! move touches this crate and the worker's loader (`src/plugin/`), never a
//! plugin's source: authors see [`Plugin`], [`Job`] and [`export_plugin!`].
//! What a move would take:
//! - a `#[repr(C)]` root module with an explicit size and version header in
//!   place of prefix types, read through one exported `extern "C"` symbol;
//! - our own layout check in place of abi_stable's (a hash of the field
//!   types per version, compared at load), and `#[repr(C)]` slices, strings
//!   and vectors with their own free functions in place of `RStr`, `RSlice`,
//!   `RVec`, `RString`;
//! - a handler vtable as a struct of function pointers with a size field, in
//!   place of `#[sabi_trait]`;
//! - the frozen layouts ([`v0_1_0`]) kept, so plugins built on abi_stable
//!   still load: the worker would try the new header's symbol first.

#![deny(missing_docs)]

mod abi;
mod author;
mod log;
pub mod v0_1_0;

pub use abi::{HandlerBox, JobContext, LogSink, PluginMod, PluginModRef, RHeader, RawHandler, RawHandler_TO};
pub use author::{Job, Params, Plugin};

/// The version of this crate a plugin is built against (what the worker
/// reads from its root module's `api_version`).
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Re-exported for the [`export_plugin!`] expansion; plugin authors never name it.
#[doc(hidden)]
pub use abi_stable;
/// Plugin parameters are JSON; re-exported so authors need no extra dependency.
pub use serde_json;

#[doc(hidden)]
pub mod __private {
    pub use crate::author::root_module;
}

/// Exports a [`Plugin`] implementation as this library's powerhose root module.
///
/// The plugin's name and version default to the crate's package name and
/// version; pass `name = "..."` to choose another service name.
///
/// The static below is what abi_stable's `#[export_root_module]` generates; it
/// is spelled out here so plugin crates need no direct abi_stable dependency.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        $crate::export_plugin!($ty, name = env!("CARGO_PKG_NAME"));
    };
    ($ty:ty, name = $name:expr) => {
        const _: () = {
            use $crate::abi_stable::library as __lib;

            fn __powerhose_root_module() -> $crate::PluginModRef {
                $crate::__private::root_module::<$ty>($name, env!("CARGO_PKG_VERSION"))
            }

            extern "C" fn __powerhose_erased_module() -> __lib::RootModuleResult {
                __lib::__call_root_module_loader(__powerhose_root_module)
            }

            // The symbol name is abi_stable's mangling of "_as.lib_header.root module loader".
            #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
            // SAFETY: from_constructor needs the loader's module to be an erased
            // `PluginModRef`, the type named here: `__call_root_module_loader`
            // erases exactly what `__powerhose_root_module` returns (as
            // abi_stable's own `#[export_root_module]` does).
            pub static __POWERHOSE_LIB_HEADER: __lib::LibHeader = unsafe {
                __lib::LibHeader::from_constructor::<$crate::PluginModRef>(
                    __powerhose_erased_module,
                    __lib::CheckTypeLayout::Yes,
                )
            };
        };
    };
}
