#!/usr/bin/env python3
"""A loopback HTTPS file server that misbehaves on purpose.

Started by cryptex_feed_testing (feed/testing/loopback.h, HostileServer),
which documents the modes. Standard library only. Listens on 127.0.0.1 only,
on a port the kernel picks, and prints that port on stdout once it listens.
Each request is appended to --log as "METHOD PATH range=RANGE inm=INM".
"""
import argparse
import email.utils
import hashlib
import http.server
import os
import socket
import ssl
import sys
import threading
import time

MODES = ("normal", "endless", "longer", "truncate", "slow", "stall-headers",
         "ignore-range", "wrong-body", "stall-tls", "redirect", "redirect-http",
         "redirect-loop", "trickle", "wrong-range")
EXTRA_BYTES = 4096   # "longer": bytes past the file
SLOW_BYTES = 16      # "slow": bytes sent before the silence
TRICKLE_GAP = 0.1    # "trickle": seconds between two bytes
FOREVER = 3600.0     # how long "forever" is (the test kills us long before)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--root", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--path-mode", action="append", default=[],
                   help="REL=MODE: another mode for one path")
    a = p.parse_args()
    a.per_path = {}
    for item in a.path_mode:
        rel, _, mode = item.partition("=")
        if mode not in MODES:
            p.error("unknown mode in --path-mode " + item)
        a.per_path[rel] = mode
    return a


ARGS = None
LOG_LOCK = threading.Lock()


def parse_range(header, size):
    """(first, last) of a "bytes=FIRST-[LAST]" header, or None."""
    if not header or not header.startswith("bytes="):
        return None
    spec = header[len("bytes="):]
    if "," in spec:
        return None
    first, _, last = spec.partition("-")
    if not first.isdigit():
        return None
    first = int(first)
    last = int(last) if last.isdigit() else size - 1
    return first, min(last, size - 1)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hostile/1"

    def log_message(self, fmt, *args):  # quiet: requests go to --log
        pass

    def record(self):
        line = "%s %s range=%s inm=%s\n" % (
            self.command, self.path, self.headers.get("Range", "-"),
            self.headers.get("If-None-Match", "-"))
        with LOG_LOCK, open(ARGS.log, "a") as f:
            f.write(line)

    def send(self, status, headers, body=b""):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self):
        self.record()
        rel = self.path.split("?", 1)[0].lstrip("/")
        mode = ARGS.per_path.get(rel, ARGS.mode)
        if mode == "stall-headers":
            time.sleep(FOREVER)
            return
        if mode.startswith("redirect") and not self.path.endswith("?redirected"):
            port = self.server.server_address[1]
            to = {"redirect": "https://127.0.0.1:%d%s?redirected" % (port, self.path),
                  "redirect-http": "http://127.0.0.1:%d%s?redirected" % (port, self.path),
                  "redirect-loop": "https://127.0.0.1:%d%s" % (port, self.path)}[mode]
            self.send(302, [("Location", to), ("Content-Length", "0")])
            return
        path = os.path.join(ARGS.root, rel)
        if ".." in rel.split("/") or not os.path.isfile(path):
            self.send(404, [("Content-Length", "0")])
            return
        with open(path, "rb") as f:
            data = f.read()
        etag = '"%s"' % hashlib.sha256(data).hexdigest()[:32]
        modified = email.utils.formatdate(os.stat(path).st_mtime, usegmt=True)
        validators = [("ETag", etag), ("Last-Modified", modified)]
        if self.headers.get("If-None-Match") == etag:
            self.send(304, validators)
            return
        status, body, extra = 200, data, []
        rng = parse_range(self.headers.get("Range"), len(data))
        if rng is not None and mode == "wrong-range":
            status, body = 206, data
            extra = [("Content-Range", "bytes 0-%d/%d" % (len(data) - 1, len(data)))]
        elif rng is not None and mode != "ignore-range":
            first, last = rng
            if first >= len(data):
                self.send(416, [("Content-Range", "bytes */%d" % len(data)),
                                ("Content-Length", "0")])
                return
            status, body = 206, data[first:last + 1]
            extra = [("Content-Range", "bytes %d-%d/%d" % (first, last, len(data)))]
        if mode == "wrong-body":
            body = bytes(b ^ 0xff for b in body)
        headers = validators + extra
        if mode == "endless":
            self.close_connection = True
            self.send(status, headers + [("Connection", "close")], body)
            chunk = b"\xa5" * 65536
            while True:
                self.wfile.write(chunk)
        elif mode == "longer":
            body += b"\x5a" * EXTRA_BYTES
            self.send(status, headers + [("Content-Length", str(len(body)))], body)
        elif mode == "truncate":
            self.close_connection = True
            self.send(status, headers + [("Content-Length", str(len(body))),
                                         ("Connection", "close")], body[:len(body) // 2])
            self.wfile.flush()
        elif mode == "slow":
            self.send(status, headers + [("Content-Length", str(len(body)))], body[:SLOW_BYTES])
            self.wfile.flush()
            time.sleep(FOREVER)
        elif mode == "trickle":
            self.send(status, headers + [("Content-Length", str(len(body)))])
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(TRICKLE_GAP)
        else:  # normal, ignore-range, wrong-body
            self.send(status, headers + [("Content-Length", str(len(body)))], body)

    def handle(self):
        if ARGS.mode == "stall-tls":
            time.sleep(FOREVER)  # accepted; the TLS handshake never happens
            return
        try:
            super().handle()
        except (ConnectionError, ssl.SSLError, socket.timeout, OSError):
            pass  # the client gave up on us, as it should


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


def main():
    global ARGS
    ARGS = parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ARGS.cert, ARGS.key)
    server = Server(("127.0.0.1", 0), Handler)
    # The handshake happens in the handler's thread, not in accept().
    server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                    do_handshake_on_connect=False)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
