//! The protocol's timing contract and limits, defined once (as the zguide's
//! `mdp.h` does for Majordomo): broker, workers, the cluster and every
//! binary's defaults take their values from here, so both ends of a
//! connection agree unless an operator changes a flag on purpose.

use std::time::Duration;

/// How often the broker and each worker heartbeat each other.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Heartbeat intervals without a word before a peer counts as lost (a
/// remote worker, or the broker as a worker sees it).
pub const LIVENESS: u32 = 3;

/// How often a local client reads the lanes directory again (see
/// PROTOCOL.md 7.1): a new worker's lane is used this late at most.
pub const LANE_RESCAN: Duration = Duration::from_secs(1);

/// Jobs with more data go through the broker, not a lane: a lane saves a
/// hop's wake-ups, which only short jobs notice, and the broker's answers
/// to messages over its limits are the ones to give.
pub const LANE_MAX_DATA: usize = 1 << 20;

/// How long a client leaves alone a lane whose worker's handler outlived
/// `--timeout` (it is replaced at `--hard-timeout`, or free again).
pub const LANE_STUCK_PAUSE: Duration = Duration::from_secs(5);

/// How long a job whose lane's worker died waits for that process to be
/// gone before it goes to the broker (its broker connection closes last).
pub const LANE_EXIT_WAIT: Duration = Duration::from_secs(1);

/// A local worker (connected over ipc) whose process still runs may stay
/// silent this many liveness windows (30 s with the defaults) before it is
/// dropped anyway: the backstop for a worker that runs but never talks.
pub const LOCAL_SILENCE_LIMIT: u32 = 10;

/// The timeout of a Powerhose 0.7 job, which carries none (that client gave
/// up after 7.5 s at most).
pub const LEGACY_TIMEOUT: Duration = Duration::from_millis(7500);

/// How long a job waits for a worker of its service to appear before it is
/// answered `NO_WORKER`.
pub const NO_WORKER_GRACE: Duration = Duration::from_secs(2);

/// A service with no worker and no job waiting is forgotten this long after
/// its last worker left, so services that come and go (or a stranger's
/// made-up names) cannot pile up in the broker's memory and `STATUS`.
pub const SERVICE_FORGET_GRACE: Duration = Duration::from_secs(30);

/// How much expected work may stand before a job given ahead to a busy
/// worker (prefetch).
pub const PREFETCH_BUDGET: Duration = Duration::from_millis(2);

/// The most jobs a worker is ever given ahead.
pub const MAX_PREFETCH: usize = 64;

/// How long a worker may hold a finished result under backlog, to send it
/// with the next ones (see the README's figures for how it was chosen).
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(15);

/// At most this many results wait at once in a worker: a quarter of what
/// the broker gives ahead, so a worker that holds answers still has work
/// while the broker refills it.
pub const MAX_HELD: usize = MAX_PREFETCH / 4;

/// A worker holds a finished answer, to send it with the next ones in one
/// write, while at least this many jobs given ahead wait at hand: its
/// callers' next jobs reach it before it runs out (README, "Why the defaults").
pub const HOLD_AHEAD_JOBS: usize = 4;

/// ... and for this long at most (from the oldest held answer): only short
/// jobs' answers wait, and never for more than a few of their run times
/// (answers of ~1 ms jobs go in pairs, after a wait of 4 jobs at hand).
pub const HOLD_AHEAD_MAX: Duration = Duration::from_millis(2);

/// The broker lets new local requests wait in their sockets, to read them
/// at its next wake-up, while every worker holds at least this many short
/// jobs (see `BrokerState::requests_may_wait`): one more than a worker
/// keeps at hand while it holds answers, so none runs dry meanwhile.
pub const REQUESTS_WAIT_AHEAD: usize = HOLD_AHEAD_JOBS + 1;

/// ... of at most this long each, and for this long at most: the broker
/// wakes by then to read them even if no answer came (a job far over its
/// usual time delays a cancel or a ping no longer). Jobs of ~1 ms qualify:
/// each of them would otherwise cost the broker a wake-up per request.
pub const REQUESTS_WAIT_MAX: Duration = Duration::from_millis(2);

/// Jobs that may wait per service before new ones are refused `BUSY`.
pub const MAX_QUEUE: usize = 10_000;

/// Replies waiting for one client that does not read them: past this many
/// the broker drops new ones for it (and counts them) instead of holding
/// them without bound.
pub const FRONT_SEND_HWM: i32 = 10_000;
/// Bytes of replies that may wait for a local (`unix://`) client that does
/// not read them; past it, further replies to it are dropped and counted
/// (the local transport's `FRONT_SEND_HWM`).
pub const LOCAL_SEND_MAX: usize = 64 << 20;
/// Bytes of replies waiting for a local client past which the broker stops
/// reading its requests until they drain: a client that writes faster than
/// it reads is slowed (its own writes wait), never sent past
/// [`LOCAL_SEND_MAX`] by its own requests.
pub const LOCAL_READ_PAUSE: usize = 4 << 20;
/// How often a worker dials a local (`unix://`) broker that is not there:
/// ZeroMQ's own reconnection interval, which the other transports get.
pub const LOCAL_REDIAL: Duration = Duration::from_millis(100);
/// How long a worker waits for its local broker to take a message before
/// it counts the connection as dead (the broker reads its workers at every
/// turn of its loop: only a hung broker makes this wait).
pub const LOCAL_SEND_WAIT: Duration = Duration::from_secs(5);

/// Bytes (headers and data) that waiting jobs may hold in all before new
/// ones are refused `BUSY`: the broker's memory bound, sized for a small
/// machine. One client may hold half of it (and half of `MAX_QUEUE`).
pub const MAX_QUEUE_BYTES: usize = 256 << 20;

/// The longest a job may ask to wait: a longer timeout is cut to this, so
/// a job cannot hold the broker's memory for weeks.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Larger messages (all their frames together) are refused: the broker
/// reads one, counts it and answers an error to the client that sent it (or
/// drops a worker's); a worker answers an error instead of a larger result.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// libzmq itself drops the connection of a peer that sends a frame over
/// this many times `--max-message-bytes`, before reading it and without
/// telling the broker (no distinct monitor event): the broker only counts
/// and answers what lies between the two limits, and this bounds what one
/// frame may make it allocate.
pub const MAX_MESSAGE_HARD_FACTOR: usize = 2;

/// When accepting a connection fails for want of file descriptors, the
/// broker stops listening on that endpoint for this long (ZeroMQ closes the
/// connections accepted there; peers reconnect), doubling while it keeps
/// failing...
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);

/// ... up to this; back to the minimum once a connection is accepted again.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How often the broker looks at its allow-list directories: a removed
/// certificate's holder is dropped within this (and one loop turn).
pub const ALLOW_LIST_SCAN: Duration = Duration::from_secs(1);

/// Every allow-list directory is read again this often even if it looks
/// unchanged (a certificate rewritten in place changes no directory).
pub const ALLOW_LIST_RESCAN: Duration = Duration::from_secs(10);

/// A client or worker socket unconnected this long is dialled again (libzmq
/// gives up on an endpoint whose handshake was refused); the wait doubles up
/// to [`REDIAL_MAX`].
pub const REDIAL_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between two dials of an unconnected socket.
pub const REDIAL_MAX: Duration = Duration::from_secs(8);

/// A client of several brokers pings a broker it has not heard from for
/// this long (any answer counts), to learn whether it still answers...
pub const BROKER_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// ... and counts it as down if that ping is not answered within this (a
/// broker answers pings itself, whatever its workers do): new requests
/// skip a silent broker within `BROKER_PROBE_INTERVAL + BROKER_SILENCE`.
pub const BROKER_SILENCE: Duration = Duration::from_secs(1);

/// A request that a client of several brokers could not send to the one
/// it picked (no connection) within this goes to another one instead.
pub const BROKER_SEND_WAIT: Duration = Duration::from_millis(200);

/// A broker counted as down is pinged again after this, the wait doubling
/// while it stays down, up to [`BROKER_RETRY_MAX`]; its socket connecting
/// again has it pinged at once.
pub const BROKER_RETRY_FIRST: Duration = Duration::from_millis(250);

/// The longest wait between two pings of a broker that is down.
pub const BROKER_RETRY_MAX: Duration = Duration::from_secs(2);

// The contract holds together, checked when it compiles.
const _: () = {
    assert!(MAX_HELD >= 1 && MAX_HELD < MAX_PREFETCH, "a worker holding answers still has work ahead");
    assert!(DEFAULT_COALESCE.as_millis() < HEARTBEAT_INTERVAL.as_millis(), "held answers never delay a heartbeat");
    assert!(
        LEGACY_TIMEOUT.as_millis() > HEARTBEAT_INTERVAL.as_millis() * LIVENESS as u128,
        "a lost worker is noticed within a legacy job's time"
    );
    assert!(MAX_MESSAGE_BYTES * MAX_MESSAGE_HARD_FACTOR <= u32::MAX as usize, "inline lengths are u32");
    assert!(ACCEPT_BACKOFF_MIN.as_millis() < ACCEPT_BACKOFF_MAX.as_millis(), "the backoff grows");
    assert!(MAX_MESSAGE_HARD_FACTOR >= 2, "a message just over the limit is read, so it can be answered");
    assert!(ALLOW_LIST_SCAN.as_millis() < 2000, "a revoked key is dropped within 2 s");
    assert!(
        BROKER_PROBE_INTERVAL.as_millis() + BROKER_SILENCE.as_millis() <= 2000,
        "a silent broker is skipped within 2 s"
    );
    assert!(BROKER_RETRY_FIRST.as_millis() <= BROKER_RETRY_MAX.as_millis(), "the backoff grows");
    assert!(BROKER_RETRY_MAX.as_millis() < 5000, "a broker back is used again within 5 s");
};

/// Job priorities run from 0 (lowest) to `PRIORITY_MAX`; a job that names
/// none gets `PRIORITY_DEFAULT`, the middle.
pub const PRIORITY_MAX: u8 = 9;
/// See [`PRIORITY_MAX`].
pub const PRIORITY_DEFAULT: u8 = 5;

/// A waiting job counts one level higher for each of these it has waited
/// (up to [`PRIORITY_MAX`]): under a steady stream of higher-priority jobs
/// a priority-0 job is dispatched within `PRIORITY_MAX` × this of arriving,
/// plus the wait of the top-level jobs that came before it.
pub const PRIORITY_AGE_STEP: Duration = Duration::from_millis(100);
