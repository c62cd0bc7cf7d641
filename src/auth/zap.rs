//! The ZAP handler (ZeroMQ RFC 27): for each CURVE handshake on the broker's
//! sockets libzmq asks, over an inproc REP socket in the broker's context,
//! whether the client's key may connect, and gives the connection the
//! `User-Id` we answer. It is bound before any socket binds: a CURVE socket
//! with a domain but no handler would admit anyone who knows the broker's
//! public key. The broker's loop polls it; the decision is [`decide`].

use super::allow::{AllowLists, Domain};
use super::{user_id, BACK_DOMAIN, FRONT_DOMAIN};
use crate::error::{Error, Result};

/// Where libzmq sends ZAP requests, in each context.
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// The ZAP version this handler speaks.
const ZAP_VERSION: &[u8] = b"1.0";

/// Requests answered per call of [`Zap::serve`] before the loop moves on.
const REQUESTS_PER_TURN: usize = 64;

/// A handshake refused: what the broker counts and logs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The socket it was for (`None`: a domain that is not ours).
    pub domain: Option<Domain>,
    /// The key's first characters (Z85), enough to find its certificate.
    pub key_start: String,
    /// The peer's address as libzmq gives it (its IP).
    pub address: String,
    /// Why, in a few words.
    pub why: &'static str,
}

/// The answer to one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// `Ok(user id)` or the refusal.
    pub outcome: std::result::Result<String, Refusal>,
    /// The request id to echo.
    pub request_id: Vec<u8>,
}

/// Decides one request (its frames, envelope removed): admitted with a
/// `User-Id` of `ROLE:KEY`, or refused.
pub(crate) fn decide(frames: &[&[u8]], lists: &AllowLists) -> Answer {
    let field = |i: usize| frames.get(i).copied().unwrap_or_default();
    let request_id = field(1).to_vec();
    let address = String::from_utf8_lossy(field(3)).into_owned();
    let refuse = |domain, key_start: String, why| Answer {
        outcome: Err(Refusal { domain, key_start, address: address.clone(), why }),
        request_id: request_id.clone(),
    };
    let domain = match field(2) {
        d if d == FRONT_DOMAIN.as_bytes() => Some(Domain::Front),
        d if d == BACK_DOMAIN.as_bytes() => Some(Domain::Back),
        _ => None,
    };
    if frames.len() < 7 || field(0) != ZAP_VERSION {
        return refuse(domain, String::new(), "malformed ZAP request");
    }
    let Some(domain) = domain else { return refuse(None, String::new(), "unknown ZAP domain") };
    if field(5) != b"CURVE" {
        return refuse(Some(domain), String::new(), "not a CURVE handshake");
    }
    let Ok(key) = <[u8; 32]>::try_from(field(6)) else {
        return refuse(Some(domain), String::new(), "malformed CURVE key");
    };
    let key = crate::keys::z85(&key);
    match lists.admit(domain, &key) {
        Some(role) => Answer { outcome: Ok(user_id(role, &key)), request_id },
        None => refuse(Some(domain), key[..8].to_string(), "key not in the allow-list"),
    }
}

/// The bound handler socket.
pub(crate) struct Zap {
    socket: zmq::Socket,
}

impl Zap {
    /// Binds the handler in `ctx` (before the sockets it guards bind).
    pub fn bind(ctx: &zmq::Context) -> Result<Zap> {
        let socket = ctx.socket(zmq::REP).map_err(Error::zmq("creating the ZAP socket"))?;
        socket.set_linger(0).map_err(Error::zmq("linger"))?;
        socket.bind(ZAP_ENDPOINT).map_err(Error::zmq("binding the ZAP handler"))?;
        Ok(Zap { socket })
    }

    /// The socket, to poll.
    pub fn socket(&self) -> &zmq::Socket {
        &self.socket
    }

    /// One request's frames, or `None` when none waits; a signal never
    /// splits a request (see `crate::sys::zmq_recv`).
    fn recv(&self) -> Result<Option<Vec<Vec<u8>>>> {
        let mut frames = Vec::new();
        loop {
            let mut msg = zmq::Message::new();
            match crate::sys::zmq_recv(&self.socket, &mut msg, zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) if frames.is_empty() => return Ok(None),
                Err(e) => return Err(Error::zmq("reading a ZAP request")(e)),
            }
            let more = msg.get_more();
            frames.push(msg.to_vec());
            if !more {
                return Ok(Some(frames));
            }
        }
    }

    /// Answers the requests waiting (up to a bound); `refused` is told of
    /// each refusal.
    pub fn serve(&self, lists: &AllowLists, mut refused: impl FnMut(Refusal)) -> Result<()> {
        for _ in 0..REQUESTS_PER_TURN {
            let Some(frames) = self.recv()? else { return Ok(()) };
            let views: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let answer = decide(&views, lists);
            let (code, text, user): (&[u8], &[u8], String) = match answer.outcome {
                Ok(user) => (b"200", b"OK", user),
                Err(refusal) => {
                    refused(refusal);
                    (b"400", b"not allowed", String::new())
                }
            };
            let reply: [&[u8]; 6] = [ZAP_VERSION, &answer.request_id, code, text, user.as_bytes(), b""];
            // libzmq waits for this reply: a REP in its state always accepts it.
            self.socket.send_multipart(reply, 0).map_err(Error::zmq("answering a ZAP request"))?;
        }
        Ok(())
    }
}
