//! CURVE on TCP with the libzmq this workspace builds (zmq-sys/, on
//! libsodium): it is there, a client that knows the server's public key gets
//! a message through and back, and a client with the wrong server key, or a
//! plaintext one, gets nothing through to a CURVE server within a second.

use std::time::{Duration, Instant};

use zmq::{Context, CurveKeyPair, Socket, SocketType};

/// How long a peer that must not get through is given.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);
/// How long a peer that must get through may take.
const ACCEPTED_WITHIN: Duration = Duration::from_secs(10);

/// A ROUTER that speaks only CURVE, with `keys` as its own, on a free
/// loopback port: (socket, endpoint).
fn curve_server(ctx: &Context, keys: &CurveKeyPair) -> (Socket, String) {
    let server = ctx.socket(SocketType::ROUTER).unwrap();
    server.set_linger(0).unwrap();
    server.set_curve_server(true).unwrap();
    server.set_curve_secretkey(&keys.secret_key).unwrap();
    server.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = server.get_last_endpoint().unwrap().unwrap();
    (server, endpoint)
}

/// A DEALER with its own fresh keypair that takes `server_key` for the
/// server's public key, connected to `endpoint`.
fn curve_client(ctx: &Context, endpoint: &str, server_key: &[u8]) -> Socket {
    let keys = CurveKeyPair::new().unwrap();
    let client = ctx.socket(SocketType::DEALER).unwrap();
    client.set_linger(0).unwrap();
    client.set_curve_serverkey(server_key).unwrap();
    client.set_curve_publickey(&keys.public_key).unwrap();
    client.set_curve_secretkey(&keys.secret_key).unwrap();
    client.connect(endpoint).unwrap();
    client
}

/// The next multipart message on `socket` if one comes within `within`.
fn recv_within(socket: &Socket, within: Duration) -> Option<Vec<Vec<u8>>> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ready = socket.poll(zmq::POLLIN, left.as_millis() as i64).unwrap();
        if ready > 0 {
            return Some(socket.recv_multipart(0).unwrap());
        }
        if left.is_zero() {
            return None;
        }
    }
}

/// Sends `body` from `client`, which must not block: a DEALER queues it
/// for its one connection, whether or not the handshake has happened.
fn send_from(client: &Socket, body: &[u8]) {
    client.send(body, zmq::DONTWAIT).unwrap();
}

/// `client`'s message `body` reaches `server` and the server's answer comes
/// back to the client: the round trip a CURVE peer must be able to make.
fn assert_round_trip(server: &Socket, client: &Socket, body: &[u8]) {
    send_from(client, body);
    let frames = recv_within(server, ACCEPTED_WITHIN).expect("the server got nothing");
    assert_eq!(frames.len(), 2, "routing id and body: {frames:?}");
    assert_eq!(frames[1], body);
    server.send_multipart([frames[0].as_slice(), b"answer".as_slice()], 0).unwrap();
    let answer = recv_within(client, ACCEPTED_WITHIN).expect("the client got no answer");
    assert_eq!(answer, vec![b"answer".to_vec()]);
}

#[test]
fn libzmq_has_curve() {
    assert_eq!(zmq::has("curve"), Some(true));
}

#[test]
fn curve_round_trip_over_tcp() {
    let ctx = Context::new();
    let server_keys = CurveKeyPair::new().unwrap();
    let (server, endpoint) = curve_server(&ctx, &server_keys);
    assert_eq!(server.get_mechanism().unwrap(), zmq::Mechanism::ZMQ_CURVE);
    let client = curve_client(&ctx, &endpoint, &server_keys.public_key);
    assert_eq!(client.get_mechanism().unwrap(), zmq::Mechanism::ZMQ_CURVE);
    assert_round_trip(&server, &client, b"over curve");
}

/// A CURVE server hears nothing from the peer `stranger` makes, yet was
/// listening all along: a client with the right key then gets through, and
/// only its message arrives.
fn refused(stranger: impl FnOnce(&Context, &str) -> zmq::Socket) {
    let ctx = Context::new();
    let server_keys = CurveKeyPair::new().unwrap();
    let (server, endpoint) = curve_server(&ctx, &server_keys);
    send_from(&stranger(&ctx, &endpoint), b"stranger");
    assert_eq!(recv_within(&server, REFUSED_WITHIN), None);
    let client = curve_client(&ctx, &endpoint, &server_keys.public_key);
    assert_round_trip(&server, &client, b"right key");
}

#[test]
fn a_client_with_the_wrong_server_key_gets_nothing_through() {
    refused(|ctx, endpoint| {
        let not_the_server = CurveKeyPair::new().unwrap();
        curve_client(ctx, endpoint, &not_the_server.public_key)
    });
}

#[test]
fn a_plaintext_client_gets_nothing_through_to_a_curve_server() {
    refused(|ctx, endpoint| {
        let plain = ctx.socket(SocketType::DEALER).unwrap();
        plain.set_linger(0).unwrap();
        assert_eq!(plain.get_mechanism().unwrap(), zmq::Mechanism::ZMQ_NULL);
        plain.connect(endpoint).unwrap();
        plain
    });
}
