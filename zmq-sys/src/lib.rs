//! The part of libzmq's C API that the `zmq` crate (0.10) calls, declared by
//! hand from libzmq 4.3's `zmq.h`, over a libzmq built with CURVE.
//!
//! The workspace puts this crate in place of crates.io's `zmq-sys` (see
//! `[patch.crates-io]` in the workspace's Cargo.toml), so the `zmq` crate
//! compiles against it unchanged. What is declared here is what `zmq` uses:
//! a name that it does not use is left out, not forgotten.
//!
//! Constants are `u32`, as the `zmq` crate expects (it matches on them as
//! `u32` and casts them to `c_int` where the C API wants an int); the error
//! numbers in [`errno`] are `c_int`.

#![allow(non_camel_case_types)]

#[cfg(not(unix))]
compile_error!("powerhose's zmq-sys declares libzmq's API for Unix only");

use libc::{c_char, c_int, c_long, c_short, c_void, size_t};

// libsodium-sys-stable is here for what its build script does (build
// libsodium, tell build.rs where it is) and for its `-l static=sodium`; no
// Rust item of it is used.
use libsodium_sys as _;

/// What libzmq calls a file descriptor (`zmq_fd_t`): an `int` on Unix.
pub type RawFd = c_int;

/// A message (`zmq_msg_t`): 64 opaque bytes, aligned like a pointer, that
/// only libzmq's `zmq_msg_*` functions read or write.
#[cfg_attr(target_pointer_width = "64", repr(C, align(8)))]
#[cfg_attr(target_pointer_width = "32", repr(C, align(4)))]
pub struct zmq_msg_t {
    pub opaque: [u8; 64],
}

impl Default for zmq_msg_t {
    /// All zeros: storage for `zmq_msg_init*` to fill in, not yet a message.
    fn default() -> Self {
        zmq_msg_t { opaque: [0; 64] }
    }
}

/// One entry of `zmq_poll`'s array: a ZeroMQ socket, or (when `socket` is
/// null) a plain file descriptor, and the events asked for and seen.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct zmq_pollitem_t {
    pub socket: *mut c_void,
    pub fd: RawFd,
    pub events: c_short,
    pub revents: c_short,
}

/// Frees the buffer of a message made by `zmq_msg_init_data`.
pub type zmq_free_fn = unsafe extern "C" fn(data: *mut c_void, hint: *mut c_void);

extern "C" {
    // Errors and version.
    pub fn zmq_errno() -> c_int;
    pub fn zmq_strerror(errnum: c_int) -> *const c_char;
    pub fn zmq_version(major: *mut c_int, minor: *mut c_int, patch: *mut c_int);
    pub fn zmq_has(capability: *const c_char) -> c_int;

    // Contexts.
    pub fn zmq_ctx_new() -> *mut c_void;
    pub fn zmq_ctx_term(context: *mut c_void) -> c_int;
    pub fn zmq_ctx_set(context: *mut c_void, option: c_int, optval: c_int) -> c_int;
    pub fn zmq_ctx_get(context: *mut c_void, option: c_int) -> c_int;

    // Messages.
    pub fn zmq_msg_init(msg: *mut zmq_msg_t) -> c_int;
    pub fn zmq_msg_init_size(msg: *mut zmq_msg_t, size: size_t) -> c_int;
    pub fn zmq_msg_init_data(
        msg: *mut zmq_msg_t,
        data: *mut c_void,
        size: size_t,
        ffn: Option<zmq_free_fn>,
        hint: *mut c_void,
    ) -> c_int;
    pub fn zmq_msg_send(msg: *mut zmq_msg_t, socket: *mut c_void, flags: c_int) -> c_int;
    pub fn zmq_msg_recv(msg: *mut zmq_msg_t, socket: *mut c_void, flags: c_int) -> c_int;
    pub fn zmq_msg_close(msg: *mut zmq_msg_t) -> c_int;
    pub fn zmq_msg_data(msg: *mut zmq_msg_t) -> *mut c_void;
    pub fn zmq_msg_size(msg: *const zmq_msg_t) -> size_t;
    pub fn zmq_msg_more(msg: *const zmq_msg_t) -> c_int;
    pub fn zmq_msg_gets(msg: *const zmq_msg_t, property: *const c_char) -> *const c_char;

    // Sockets.
    pub fn zmq_socket(context: *mut c_void, kind: c_int) -> *mut c_void;
    pub fn zmq_close(socket: *mut c_void) -> c_int;
    pub fn zmq_setsockopt(socket: *mut c_void, option: c_int, optval: *const c_void, optvallen: size_t) -> c_int;
    pub fn zmq_getsockopt(socket: *mut c_void, option: c_int, optval: *mut c_void, optvallen: *mut size_t) -> c_int;
    pub fn zmq_bind(socket: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_unbind(socket: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_connect(socket: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_disconnect(socket: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_recv(socket: *mut c_void, buf: *mut c_void, len: size_t, flags: c_int) -> c_int;
    pub fn zmq_socket_monitor(socket: *mut c_void, addr: *const c_char, events: c_int) -> c_int;

    // Polling and proxies.
    pub fn zmq_poll(items: *mut zmq_pollitem_t, nitems: c_int, timeout: c_long) -> c_int;
    pub fn zmq_proxy(frontend: *mut c_void, backend: *mut c_void, capture: *mut c_void) -> c_int;
    pub fn zmq_proxy_steerable(
        frontend: *mut c_void,
        backend: *mut c_void,
        capture: *mut c_void,
        control: *mut c_void,
    ) -> c_int;

    // Z85 text and CURVE keys.
    pub fn zmq_z85_encode(dest: *mut c_char, data: *const u8, size: size_t) -> *mut c_char;
    pub fn zmq_z85_decode(dest: *mut u8, string: *const c_char) -> *mut u8;
    pub fn zmq_curve_keypair(z85_public_key: *mut c_char, z85_secret_key: *mut c_char) -> c_int;
}

// Context options.
pub const ZMQ_IO_THREADS: u32 = 1;

// Socket types.
pub const ZMQ_PAIR: u32 = 0;
pub const ZMQ_PUB: u32 = 1;
pub const ZMQ_SUB: u32 = 2;
pub const ZMQ_REQ: u32 = 3;
pub const ZMQ_REP: u32 = 4;
pub const ZMQ_DEALER: u32 = 5;
pub const ZMQ_ROUTER: u32 = 6;
pub const ZMQ_PULL: u32 = 7;
pub const ZMQ_PUSH: u32 = 8;
pub const ZMQ_XPUB: u32 = 9;
pub const ZMQ_XSUB: u32 = 10;
pub const ZMQ_STREAM: u32 = 11;

// Socket options.
pub const ZMQ_AFFINITY: u32 = 4;
pub const ZMQ_ROUTING_ID: u32 = 5;
pub const ZMQ_SUBSCRIBE: u32 = 6;
pub const ZMQ_UNSUBSCRIBE: u32 = 7;
pub const ZMQ_RATE: u32 = 8;
pub const ZMQ_RECOVERY_IVL: u32 = 9;
pub const ZMQ_SNDBUF: u32 = 11;
pub const ZMQ_RCVBUF: u32 = 12;
pub const ZMQ_RCVMORE: u32 = 13;
pub const ZMQ_FD: u32 = 14;
pub const ZMQ_EVENTS: u32 = 15;
pub const ZMQ_TYPE: u32 = 16;
pub const ZMQ_LINGER: u32 = 17;
pub const ZMQ_RECONNECT_IVL: u32 = 18;
pub const ZMQ_BACKLOG: u32 = 19;
pub const ZMQ_RECONNECT_IVL_MAX: u32 = 21;
pub const ZMQ_MAXMSGSIZE: u32 = 22;
pub const ZMQ_SNDHWM: u32 = 23;
pub const ZMQ_RCVHWM: u32 = 24;
pub const ZMQ_MULTICAST_HOPS: u32 = 25;
pub const ZMQ_RCVTIMEO: u32 = 27;
pub const ZMQ_SNDTIMEO: u32 = 28;
pub const ZMQ_LAST_ENDPOINT: u32 = 32;
pub const ZMQ_ROUTER_MANDATORY: u32 = 33;
pub const ZMQ_TCP_KEEPALIVE: u32 = 34;
pub const ZMQ_TCP_KEEPALIVE_CNT: u32 = 35;
pub const ZMQ_TCP_KEEPALIVE_IDLE: u32 = 36;
pub const ZMQ_TCP_KEEPALIVE_INTVL: u32 = 37;
pub const ZMQ_IMMEDIATE: u32 = 39;
pub const ZMQ_XPUB_VERBOSE: u32 = 40;
pub const ZMQ_IPV6: u32 = 42;
pub const ZMQ_MECHANISM: u32 = 43;
pub const ZMQ_PLAIN_SERVER: u32 = 44;
pub const ZMQ_PLAIN_USERNAME: u32 = 45;
pub const ZMQ_PLAIN_PASSWORD: u32 = 46;
pub const ZMQ_CURVE_SERVER: u32 = 47;
pub const ZMQ_CURVE_PUBLICKEY: u32 = 48;
pub const ZMQ_CURVE_SECRETKEY: u32 = 49;
pub const ZMQ_CURVE_SERVERKEY: u32 = 50;
pub const ZMQ_PROBE_ROUTER: u32 = 51;
pub const ZMQ_REQ_CORRELATE: u32 = 52;
pub const ZMQ_REQ_RELAXED: u32 = 53;
pub const ZMQ_CONFLATE: u32 = 54;
pub const ZMQ_ZAP_DOMAIN: u32 = 55;
pub const ZMQ_ROUTER_HANDOVER: u32 = 56;
pub const ZMQ_TOS: u32 = 57;
pub const ZMQ_GSSAPI_SERVER: u32 = 62;
pub const ZMQ_GSSAPI_PRINCIPAL: u32 = 63;
pub const ZMQ_GSSAPI_SERVICE_PRINCIPAL: u32 = 64;
pub const ZMQ_GSSAPI_PLAINTEXT: u32 = 65;
pub const ZMQ_HANDSHAKE_IVL: u32 = 66;
pub const ZMQ_SOCKS_PROXY: u32 = 68;
pub const ZMQ_XPUB_WELCOME_MSG: u32 = 72;
pub const ZMQ_HEARTBEAT_IVL: u32 = 75;
pub const ZMQ_HEARTBEAT_TTL: u32 = 76;
pub const ZMQ_HEARTBEAT_TIMEOUT: u32 = 77;
pub const ZMQ_CONNECT_TIMEOUT: u32 = 79;

// Send and receive flags.
pub const ZMQ_DONTWAIT: u32 = 1;
pub const ZMQ_SNDMORE: u32 = 2;

// Security mechanisms (the values of ZMQ_MECHANISM).
pub const ZMQ_NULL: u32 = 0;
pub const ZMQ_PLAIN: u32 = 1;
pub const ZMQ_CURVE: u32 = 2;
pub const ZMQ_GSSAPI: u32 = 3;

// Socket monitor events.
pub const ZMQ_EVENT_CONNECTED: u32 = 0x0001;
pub const ZMQ_EVENT_CONNECT_DELAYED: u32 = 0x0002;
pub const ZMQ_EVENT_CONNECT_RETRIED: u32 = 0x0004;
pub const ZMQ_EVENT_LISTENING: u32 = 0x0008;
pub const ZMQ_EVENT_BIND_FAILED: u32 = 0x0010;
pub const ZMQ_EVENT_ACCEPTED: u32 = 0x0020;
pub const ZMQ_EVENT_ACCEPT_FAILED: u32 = 0x0040;
pub const ZMQ_EVENT_CLOSED: u32 = 0x0080;
pub const ZMQ_EVENT_CLOSE_FAILED: u32 = 0x0100;
pub const ZMQ_EVENT_DISCONNECTED: u32 = 0x0200;
pub const ZMQ_EVENT_MONITOR_STOPPED: u32 = 0x0400;
pub const ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: u32 = 0x0800;
pub const ZMQ_EVENT_HANDSHAKE_SUCCEEDED: u32 = 0x1000;
pub const ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: u32 = 0x2000;
pub const ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: u32 = 0x4000;
pub const ZMQ_EVENT_ALL: u32 = 0xFFFF;

// zmq_poll events.
pub const ZMQ_POLLIN: u32 = 1;
pub const ZMQ_POLLOUT: u32 = 2;
pub const ZMQ_POLLERR: u32 = 4;

/// The error numbers `zmq_errno()` can give back.
///
/// The system's own where it has them (all of these on Unix); then the
/// numbers libzmq gives its own errors, and the `_ALT` numbers that `zmq.h`
/// would use in place of system ones that a platform lacks, all counted
/// from [`ZMQ_HAUSNUMERO`](errno::ZMQ_HAUSNUMERO).
pub mod errno {
    use libc::c_int;

    pub const EACCES: c_int = libc::EACCES;
    pub const EADDRINUSE: c_int = libc::EADDRINUSE;
    pub const EADDRNOTAVAIL: c_int = libc::EADDRNOTAVAIL;
    pub const EAGAIN: c_int = libc::EAGAIN;
    pub const EBUSY: c_int = libc::EBUSY;
    pub const ECONNREFUSED: c_int = libc::ECONNREFUSED;
    pub const EFAULT: c_int = libc::EFAULT;
    pub const EHOSTUNREACH: c_int = libc::EHOSTUNREACH;
    pub const EINPROGRESS: c_int = libc::EINPROGRESS;
    pub const EINTR: c_int = libc::EINTR;
    pub const EINVAL: c_int = libc::EINVAL;
    pub const EMFILE: c_int = libc::EMFILE;
    pub const EMSGSIZE: c_int = libc::EMSGSIZE;
    pub const ENAMETOOLONG: c_int = libc::ENAMETOOLONG;
    pub const ENETDOWN: c_int = libc::ENETDOWN;
    pub const ENOBUFS: c_int = libc::ENOBUFS;
    pub const ENODEV: c_int = libc::ENODEV;
    pub const ENOENT: c_int = libc::ENOENT;
    pub const ENOMEM: c_int = libc::ENOMEM;
    pub const ENOTCONN: c_int = libc::ENOTCONN;
    pub const ENOTSOCK: c_int = libc::ENOTSOCK;
    pub const ENOTSUP: c_int = libc::ENOTSUP;
    pub const EPROTO: c_int = libc::EPROTO;
    pub const EPROTONOSUPPORT: c_int = libc::EPROTONOSUPPORT;

    /// The base of libzmq's own error numbers, far above any system's.
    pub const ZMQ_HAUSNUMERO: c_int = 156_384_712;

    pub const ENOTSUP_ALT: c_int = ZMQ_HAUSNUMERO + 1;
    pub const EPROTONOSUPPORT_ALT: c_int = ZMQ_HAUSNUMERO + 2;
    pub const ENOBUFS_ALT: c_int = ZMQ_HAUSNUMERO + 3;
    pub const ENETDOWN_ALT: c_int = ZMQ_HAUSNUMERO + 4;
    pub const EADDRINUSE_ALT: c_int = ZMQ_HAUSNUMERO + 5;
    pub const EADDRNOTAVAIL_ALT: c_int = ZMQ_HAUSNUMERO + 6;
    pub const ECONNREFUSED_ALT: c_int = ZMQ_HAUSNUMERO + 7;
    pub const EINPROGRESS_ALT: c_int = ZMQ_HAUSNUMERO + 8;
    pub const ENOTSOCK_ALT: c_int = ZMQ_HAUSNUMERO + 9;
    pub const EMSGSIZE_ALT: c_int = ZMQ_HAUSNUMERO + 10;

    /// A socket in the wrong state for the operation (REQ sending twice).
    pub const EFSM: c_int = ZMQ_HAUSNUMERO + 51;
    /// A socket type the peer's does not pair with.
    pub const ENOCOMPATPROTO: c_int = ZMQ_HAUSNUMERO + 52;
    /// The socket's context was terminated.
    pub const ETERM: c_int = ZMQ_HAUSNUMERO + 53;
    /// No I/O thread left.
    pub const EMTHREAD: c_int = ZMQ_HAUSNUMERO + 54;
}
