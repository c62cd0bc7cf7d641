"""A powerhose worker written only from PROTOCOL.md (section 1 and 3).

It proves the document is enough to write a worker in another language.
Jobs: the data is echoed back; header `upper` upper-cases it, `fail` fails
with the header's value as the message, `sleep_ms` sleeps first.
"""
import argparse
import collections
import json
import os
import queue
import random
import signal
import socket
import struct
import sys
import threading
import time

import zmq
import zmq.auth

# Command frame: magic, version, command, id (u64), arg (u32), then the tail.
HEAD = struct.Struct("<2sBBQI")
READY, RESULT, HEARTBEAT, DISCONNECT, JOB = 0x11, 0x12, 0x13, 0x14, 0x21
OK, HANDLER_ERROR, BAD_REQUEST = 0, 1, 7


def frame(command, id_=0, arg=0, tail=b""):
    return HEAD.pack(b"PH", 1, command, id_, arg) + tail


def parse_headers(raw):
    """Decode a headers frame into a dict; ValueError if malformed."""
    headers, pos = {}, 0
    while pos < len(raw):
        if pos + 2 > len(raw):
            raise ValueError("truncated header name length")
        (n,) = struct.unpack_from("<H", raw, pos)
        name, pos = raw[pos + 2:pos + 2 + n], pos + 2 + n
        if len(name) != n or pos + 4 > len(raw):
            raise ValueError("truncated header name or value length")
        (v,) = struct.unpack_from("<I", raw, pos)
        value, pos = raw[pos + 4:pos + 4 + v], pos + 4 + v
        if len(value) != v:
            raise ValueError("truncated header value")
        headers[name.decode()] = value.decode()  # UnicodeDecodeError is a ValueError
    return headers


def handle(headers_frame, data):
    """Run one job; returns (status, body)."""
    try:
        headers = parse_headers(headers_frame)
    except ValueError as e:
        return BAD_REQUEST, f"bad headers frame: {e}".encode()
    try:
        if "sleep_ms" in headers:
            time.sleep(int(headers["sleep_ms"]) / 1000)
        if "fail" in headers:
            return HANDLER_ERROR, headers["fail"].encode()
        return OK, data.upper() if "upper" in headers else data
    except Exception as e:  # a handler failure is reported, never fatal
        return HANDLER_ERROR, f"{type(e).__name__}: {e}".encode()


class Worker:
    def __init__(self, args):
        self.args, self.hb = args, args.heartbeat_ms / 1000
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{random.randrange(16**8):08x}"
        self.ctx, self.sock = zmq.Context(), None
        self.results = queue.Queue()  # (job id, status, body) from handler threads
        self.queue = collections.deque()  # jobs given ahead, run in order
        self.wake_r, self.wake_w = socket.socketpair()  # wakes the poll: signals, results
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(self, "stop_requested", True))
        self.stop_requested = self.stopping = False
        self.job = None          # id of the job in progress
        self.need_ready = False  # broker forgot us while busy: READY once idle
        self.backoff, self.reconnect_at = 1.0, None

    def send(self, *frames):
        self.sock.send_multipart(frames)
        self.last_sent = time.monotonic()

    def connect(self):
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.setsockopt_string(zmq.IDENTITY, self.identity)
        if self.args.curve_secret:
            # Certificates as powerhose-keygen (and zmq.auth) write them.
            public, secret = zmq.auth.load_certificate(self.args.curve_secret)
            server, _ = zmq.auth.load_certificate(self.args.curve_server)
            self.sock.curve_publickey, self.sock.curve_secretkey = public, secret
            self.sock.curve_serverkey = server
        self.sock.connect(self.args.backend)
        self.last_heard = time.monotonic()
        self.register()

    def register(self):
        if self.job is not None:  # one job at a time: register once it is done
            self.need_ready = True
            return
        a = self.args
        info = {"service": a.service, "pid": os.getpid(), "host": socket.gethostname(),
                "plugin": "python-worker", "plugin_version": "1"}
        self.send(frame(READY, tail=json.dumps(info).encode()))
        self.need_ready = False

    def run_job(self, job_id, headers_frame, data):
        self.results.put((job_id, *handle(headers_frame, data)))
        self.wake_w.send(b"r")

    def on_message(self, frames):
        if len(frames[0]) < HEAD.size:
            return
        magic, version, command, id_, _arg = HEAD.unpack_from(frames[0])
        if magic != b"PH" or version != 1:
            return
        if command == DISCONNECT and not self.stopping:
            self.register()
        elif command == JOB:
            if len(frames) != 2:
                self.send(frame(RESULT, id_, BAD_REQUEST), b"JOB must have 1 frame after the command frame")
            else:
                # Headers ride in the command frame's tail. Jobs given while
                # busy (prefetch) wait their turn, in order.
                self.queue.append((id_, frames[0][HEAD.size:], frames[1]))
                self.start_next()
        # HEARTBEAT needs nothing: receiving it already counted as a sign of life.

    def start_next(self):
        if self.job is None and self.queue:
            id_, headers, data = self.queue.popleft()
            self.job = id_
            threading.Thread(target=self.run_job, args=(id_, headers, data), daemon=True).start()

    def on_result(self):
        job_id, status, body = self.results.get()
        self.job = None
        if self.need_ready:  # the broker no longer knows this job: its result is lost
            self.register()
        elif self.sock is not None:
            self.send(frame(RESULT, job_id, status), body)
        self.start_next()

    def serve(self):
        self.connect()
        print(f"pyworker ready {self.identity}", flush=True)
        while not (self.stopping and self.job is None):
            if self.stop_requested and not self.stopping:
                self.stopping = True
                if self.sock is not None:
                    self.send(frame(DISCONNECT))
                continue
            poller = zmq.Poller()
            poller.register(self.wake_r, zmq.POLLIN)
            if self.sock is not None:
                poller.register(self.sock, zmq.POLLIN)
            events = dict(poller.poll(self.hb * 1000 / 4))
            if self.wake_r.fileno() in events:
                self.wake_r.recv(4096)
            while not self.results.empty():
                self.on_result()
            now = time.monotonic()
            if self.sock is not None and self.sock in events:
                while self.sock.poll(0):
                    self.on_message(self.sock.recv_multipart())
                self.last_heard, self.backoff = now, 1.0
            if self.sock is None:
                if now >= self.reconnect_at and not self.stopping:
                    self.connect()
                continue
            if not self.stopping and now - self.last_heard >= self.args.liveness * self.hb:
                print(f"pyworker: broker silent, reconnecting in {self.backoff:g} s", file=sys.stderr)
                self.sock.close(linger=0)
                self.sock, self.reconnect_at = None, now + self.backoff
                self.backoff = min(self.backoff * 2, 32.0)
            elif now - self.last_sent >= self.hb:
                self.send(frame(HEARTBEAT))
        if self.sock is not None:
            self.sock.close()  # linger lets DISCONNECT / the last RESULT go out
        self.ctx.term()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", required=True, help="the broker's worker endpoint")
    p.add_argument("--service", default="pyecho")
    p.add_argument("--heartbeat-ms", type=int, default=1000)
    p.add_argument("--liveness", type=int, default=3)
    p.add_argument("--curve-secret", help="this worker's NAME.key_secret (CURVE)")
    p.add_argument("--curve-server", help="the broker's NAME.key")
    Worker(p.parse_args()).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
