//! The raw ZeroMQ floor, on the same transport and payload as our figures:
//! a REQ/REP round trip between two processes, a REQ → `zmq::proxy` → REP
//! hop, and pipelined DEALER traffic through a proxy hop to two echo
//! processes; and the relay floor (bench/relay.rs), which has no ZeroMQ.
//! The helper processes are this executable run with `--helper`.

use std::path::Path;
use std::time::{Duration, Instant};

use super::measure::{latency_loop, Lat};
use super::procs::{spawn, Guarded};
use crate::error::{Error, Result};

/// The floor figures of one run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Floor {
    /// REQ ↔ REP, two processes.
    pub reqrep: Lat,
    /// REQ → proxy (ROUTER/DEALER) → REP: the same hops as client → broker → worker.
    pub proxy: Lat,
    /// DEALER → proxy → 2 DEALER echo processes, `window` messages in flight.
    pub pipelined_msgs_per_s: f64,
    /// Client → epoll relay → worker over Unix `SOCK_SEQPACKET`, no ZeroMQ.
    pub relay: super::relay::RelayFloor,
}

/// Runs a helper role; never returns while the role serves.
pub fn helper(args: &[String]) -> Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let Some(served) = super::relay::helper(&args) {
        return served;
    }
    let ctx = zmq::Context::new();
    let z = |what: &'static str| Error::zmq(what);
    match args[..] {
        ["rep", endpoint] => {
            let rep = ctx.socket(zmq::REP).map_err(z("socket"))?;
            rep.bind(endpoint).map_err(z("bind"))?;
            loop {
                let msg = rep.recv_msg(0).map_err(z("recv"))?;
                rep.send(msg, 0).map_err(z("send"))?;
            }
        }
        ["proxy", front, back] => {
            let (f, b) = (ctx.socket(zmq::ROUTER).map_err(z("socket"))?, ctx.socket(zmq::DEALER).map_err(z("socket"))?);
            for s in [&f, &b] {
                s.set_sndhwm(0).map_err(z("hwm"))?;
                s.set_rcvhwm(0).map_err(z("hwm"))?;
            }
            f.bind(front).map_err(z("bind"))?;
            b.bind(back).map_err(z("bind"))?;
            zmq::proxy(&f, &b).map_err(z("proxy"))?;
            Ok(())
        }
        ["repc", back] => {
            let rep = ctx.socket(zmq::REP).map_err(z("socket"))?;
            rep.connect(back).map_err(z("connect"))?;
            loop {
                let msg = rep.recv_msg(0).map_err(z("recv"))?;
                rep.send(msg, 0).map_err(z("send"))?;
            }
        }
        ["echo", back] => {
            let d = ctx.socket(zmq::DEALER).map_err(z("socket"))?;
            d.set_sndhwm(0).map_err(z("hwm"))?;
            d.set_rcvhwm(0).map_err(z("hwm"))?;
            d.connect(back).map_err(z("connect"))?;
            loop {
                let frames = d.recv_multipart(0).map_err(z("recv"))?;
                d.send_multipart(frames, 0).map_err(z("send"))?;
            }
        }
        _ => Err(Error::UnknownHelperRole(format!("{args:?}"))),
    }
}

fn req(ctx: &zmq::Context, endpoint: &str) -> Result<zmq::Socket> {
    let s = ctx.socket(zmq::REQ).map_err(Error::zmq("socket"))?;
    s.set_rcvtimeo(10_000).map_err(Error::zmq("rcvtimeo"))?;
    s.set_linger(0).map_err(Error::zmq("linger"))?;
    s.connect(endpoint).map_err(Error::zmq("connect"))?;
    Ok(s)
}

fn round_trip(s: &zmq::Socket, payload: &[u8]) -> Result<()> {
    s.send(payload, 0).map_err(Error::zmq("send"))?;
    s.recv_msg(0).map(|_| ()).map_err(Error::zmq("floor round trip (helper not answering)"))
}

/// Where and how the floors run: the helper executable, a directory for
/// the endpoints, the payload, messages in flight when pipelined, how long
/// each measurement lasts and an optional CPU for every helper.
pub struct Setup<'a> {
    /// The executable that serves the helper roles (`powerhose-bench` itself).
    pub exe: &'a Path,
    /// Where the helpers' ipc endpoints go.
    pub dir: &'a Path,
    /// The message sent back and forth.
    pub payload: &'a [u8],
    /// Messages in flight in the pipelined measurement.
    pub window: usize,
    /// How long each measurement lasts.
    pub duration: Duration,
    /// Pin every helper process to this CPU.
    pub pin: Option<usize>,
}

impl Setup<'_> {
    fn endpoint(&self, name: &str) -> String {
        format!("ipc://{}/{name}.ipc", self.dir.display())
    }

    fn helper(&self, args: &[&str]) -> Result<Guarded> {
        let mut all = vec!["--helper"];
        all.extend_from_slice(args);
        spawn(self.exe, &all, self.pin, &[])
    }
}

/// Measures the floors: the three ZeroMQ ones, then the relay.
pub fn measure(setup: &Setup<'_>) -> Result<Floor> {
    let (ep, payload, duration) = (|name: &str| setup.endpoint(name), setup.payload, setup.duration);
    let ctx = zmq::Context::new();

    let _rep = setup.helper(&["rep", &ep("floor-rep")])?;
    let s = req(&ctx, &ep("floor-rep"))?;
    for _ in 0..200 {
        round_trip(&s, payload)?;
    }
    let (reqrep, _) = latency_loop(duration, || round_trip(&s, payload))?;

    let proxy_helpers =
        [setup.helper(&["proxy", &ep("floor-front"), &ep("floor-back")])?, setup.helper(&["repc", &ep("floor-back")])?];
    let s = req(&ctx, &ep("floor-front"))?;
    for _ in 0..200 {
        round_trip(&s, payload)?;
    }
    let (proxy, _) = latency_loop(duration, || round_trip(&s, payload))?;
    drop(proxy_helpers);

    let pipelined_msgs_per_s = pipelined(setup)?;
    Ok(Floor { reqrep, proxy, pipelined_msgs_per_s, relay: super::relay::measure(setup)? })
}

/// Pipelined DEALER traffic through a `zmq::proxy` hop to two echo
/// processes, `window` messages in flight: messages per second.
pub fn pipelined(setup: &Setup<'_>) -> Result<f64> {
    let (ep, payload, duration, window) =
        (|name: &str| setup.endpoint(name), setup.payload, setup.duration, setup.window);
    let ctx = zmq::Context::new();
    let _proxy = setup.helper(&["proxy", &ep("pipe-front"), &ep("pipe-back")])?;
    let _echo: Vec<Guarded> = (0..2).map(|_| setup.helper(&["echo", &ep("pipe-back")])).collect::<Result<_>>()?;
    let d = ctx.socket(zmq::DEALER).map_err(Error::zmq("socket"))?;
    d.set_sndhwm(0).map_err(Error::zmq("hwm"))?;
    d.set_rcvhwm(0).map_err(Error::zmq("hwm"))?;
    d.set_rcvtimeo(10_000).map_err(Error::zmq("rcvtimeo"))?;
    d.set_linger(0).map_err(Error::zmq("linger"))?;
    d.connect(&ep("pipe-front")).map_err(Error::zmq("connect"))?;
    // Warm up (and wait for both echo processes to connect).
    for _ in 0..1000 {
        d.send(payload, 0).map_err(Error::zmq("send"))?;
        d.recv_msg(0).map_err(Error::zmq("pipelined floor (helpers not answering)"))?;
    }
    for _ in 0..window {
        d.send(payload, 0).map_err(Error::zmq("send"))?;
    }
    let (start, mut received) = (Instant::now(), 0u64);
    while start.elapsed() < duration {
        d.recv_msg(0).map_err(Error::zmq("pipelined floor"))?;
        received += 1;
        d.send(payload, 0).map_err(Error::zmq("send"))?;
    }
    let rate = received as f64 / start.elapsed().as_secs_f64();
    for _ in 0..window {
        let _ = d.recv_msg(0);
    }
    Ok(rate)
}
