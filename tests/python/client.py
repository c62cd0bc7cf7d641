"""A native powerhose client written from PROTOCOL.md (sections 1 and 2).

Sends --count jobs "py 0", "py 1", ... to the default service over a DEALER
socket, with CURVE keys when given, and checks every REPLY: status OK and
the data echoed. Prints "ok N" and exits 0, or names what went wrong and
exits 1 (2 when no answer came in time).
"""
import argparse
import struct
import sys

import zmq
import zmq.auth

HEAD = struct.Struct("<2sBBQI")
REQUEST, REPLY = 0x01, 0x81
OK = 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frontend", required=True)
    p.add_argument("--curve-secret", help="this client's NAME.key_secret")
    p.add_argument("--curve-server", help="the broker's NAME.key")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--timeout-ms", type=int, default=5000)
    args = p.parse_args()

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if args.curve_secret:
        public, secret = zmq.auth.load_certificate(args.curve_secret)
        server, _ = zmq.auth.load_certificate(args.curve_server)
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server
    sock.connect(args.frontend)
    # Empty service name (u16 length 0): the broker's default service; no headers.
    tail = struct.pack("<H", 0)
    for i in range(args.count):
        head = HEAD.pack(b"PH", 1, REQUEST, i + 1, args.timeout_ms) + tail
        sock.send_multipart([head, f"py {i}".encode()])
    pending = set(range(1, args.count + 1))
    while pending:
        if not sock.poll(args.timeout_ms):
            print(f"no answer to {len(pending)} requests in {args.timeout_ms} ms")
            return 2
        frames = sock.recv_multipart()
        magic, version, command, req_id, status = HEAD.unpack_from(frames[0])
        if (magic, version, command) != (b"PH", 1, REPLY) or len(frames) != 2:
            print(f"not a REPLY: {frames!r}")
            return 1
        expected = f"py {req_id - 1}".encode()
        if status != OK or frames[1] != expected:
            print(f"request {req_id}: status {status}, body {frames[1]!r}")
            return 1
        pending.discard(req_id)
    print(f"ok {args.count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
