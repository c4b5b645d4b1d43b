#!/usr/bin/env python3
"""The signed feed end to end: publish to live on a mounted line, and the
cost of an idle poll.

A small line (20 small files; the patch changes 2 of them) in a store whose
line is mounted live with cryptexfs. nginx (tests/bench/feed_server_tool,
feed/testing/loopback.h) serves a feed directory over HTTPS on 127.0.0.1
with a test CA.

1. publish to live: REPEAT runs of each, alternating, each into a fresh store
   (`cryptex add` and the mount untimed):
     feed       copy the .cxpatch into the feed directory, `cryptex feed
                publish`, `cryptex agent --once` (fetches and checks the
                index, downloads the patch, checks it, installs, activates),
                until the mount serves the patched bytes;
     patch_dir  (the peer) copy the .cxpatch into the agent's patch_dir,
                `cryptex agent --once`, until the mount serves them.
   Median wall time of each, and feed/patch_dir: what the feed costs over a
   local offer (publishing, TLS, the index, a download and its checks).
2. idle poll: POLLS runs of `cryptex agent --once` with nothing new. From
   nginx's access log: requests per poll, body bytes per poll, and the
   answers' status. Target: one conditional request answered 304, no body.
   The peer: the same poll without validators (the first fetch of a fresh
   state: one 200 with the whole index), to show what the 304 saves.

usage: feed_bench.py [--build DIR] [--repeat N] [--polls N] [--workdir DIR]
                     [--quick]
--quick: 3 runs, 5 polls (default 9, 20). Needs root (mounts), fusermount3,
nginx and openssl, and a build with cryptex, cryptexfs, the auto plugin and
feed_server_tool.
"""
import argparse, os, shutil, subprocess, sys, tempfile, time
from benchlib import med, run, write

EPOCH = "1700000000"
TARGET_REQUESTS = 1


class Server:
    """feed_server_tool: nginx serving `root` over HTTPS on 127.0.0.1."""

    def __init__(self, tool, root, work):
        os.makedirs(work, exist_ok=True)
        self.p = subprocess.Popen([tool, root, work], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        first = self.p.stdout.readline().split()
        if len(first) != 2:
            raise SystemExit("feed_server_tool did not start")
        self.url, self.ca = first

    def log(self):
        """nginx's access log, once it stops growing (nginx writes a line
        after the response is sent: a client may finish first)."""
        lines = self._log()
        while True:
            time.sleep(0.02)
            again = self._log()
            if len(again) == len(lines):
                return again
            lines = again

    def _log(self):
        self.p.stdin.write("log\n")
        self.p.stdin.flush()
        lines = []
        for line in self.p.stdout:
            if line.strip() == "END":
                return lines
            lines.append(line.rstrip("\n"))
        raise SystemExit("feed_server_tool stopped")

    def stop(self):
        self.p.stdin.close()
        self.p.wait(timeout=10)


class Bench:
    def __init__(self, build, work):
        self.bin = os.path.join(build, "cli", "cryptex")
        self.fs = os.path.join(build, "fs", "cryptexfs", "cryptexfs")
        self.tool = os.path.join(build, "tests", "feed_server_tool")
        self.plugins = os.path.join(work, "plugins")
        self.work = work
        self.key = os.path.join(work, "vendor.key")
        self.index_key = os.path.join(work, "index.key")
        self.trust = os.path.join(work, "trust")
        self.feed_trust = os.path.join(work, "feed-trust")
        for k, d in ((self.key, self.trust), (self.index_key, self.feed_trust)):
            if not os.path.exists(k):
                run([self.bin, "keygen", "-o", k])
            os.makedirs(d, exist_ok=True)
            shutil.copy(k + ".pub", os.path.join(d, "key.pub"))
        os.makedirs(self.plugins, exist_ok=True)
        os.chmod(self.plugins, 0o755)
        shutil.copy(os.path.join(build, "plugins", "lib", "auto.so"), self.plugins)
        os.chmod(os.path.join(self.plugins, "auto.so"), 0o644)
        self.mounts = []

    def images(self):
        old, new = os.path.join(self.work, "old"), os.path.join(self.work, "new")
        for d in (old, new):
            shutil.rmtree(d, ignore_errors=True)
        for i in range(20):
            data = (f"file {i}\n" * (50 + 40 * i)).encode()
            write(os.path.join(old, f"d{i % 4}", f"f{i}.txt"), data)
            if i in (3, 11):
                data = data.replace(b"file", b"FILE", 7)
            write(os.path.join(new, f"d{i % 4}", f"f{i}.txt"), data)
        self.base = os.path.join(self.work, "base.cryptex")
        self.patch = os.path.join(self.work, "p1.cxpatch")
        for f in (self.base, self.patch):
            if os.path.exists(f):
                os.unlink(f)
        run([self.bin, "build", old, "-o", self.base, "--key", self.key, "--name", "small",
             "--version", "1", "--epoch", EPOCH, "-q"])
        run([self.bin, "mkpatch", "--from", self.base, "--to", new, "-o", self.patch, "--key",
             self.key, "--id", "p1", "--epoch", EPOCH, "--release-counter", "2", "--class",
             "relaunch",
             "--trust", self.trust])
        self.want = open(os.path.join(new, "d3", "f3.txt"), "rb").read()

    def device(self, name, feed_url=None, ca=None):
        """A fresh store with the base, its line mounted, and its config."""
        d = os.path.join(self.work, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "offered"))
        store, mnt = os.path.join(d, "store"), os.path.join(d, "mnt")
        run([self.bin, "add", self.base, "--store", store, "--trust", self.trust])
        os.makedirs(mnt)
        run([self.fs, "small", mnt, "-o", f"store={store},trust={self.trust}"])
        self.mounts.append(mnt)
        conf = os.path.join(d, "cryptex.conf")
        text = (f"[cryptex]\nstore = {store}\ntrust = {self.trust}\nplugin_dir = {self.plugins}\n"
                f"plugins = auto\ndevice_bucket = 1\npatch_dir = {os.path.join(d, 'offered')}\n")
        if feed_url:
            text += f"feed = {feed_url}\nfeed_trust = {self.feed_trust}\nfeed_ca = {ca}\n"
        with open(conf, "w") as f:
            f.write(text)
        return d, conf, mnt

    def live(self, mnt):
        return open(os.path.join(mnt, "d3", "f3.txt"), "rb").read() == self.want

    def unmount_all(self):
        for m in self.mounts:
            subprocess.run(["fusermount3", "-u", "-z", "-q", m])
        self.mounts = []


def publish_to_live(b, server, feed_dir, kind, i):
    if kind == "feed":
        for f in os.listdir(feed_dir):
            if f.endswith(".cxpatch"):
                os.unlink(os.path.join(feed_dir, f))
        d, conf, mnt = b.device(f"{kind}{i}", server.url, server.ca)
    else:
        d, conf, mnt = b.device(f"{kind}{i}")
    assert not b.live(mnt)
    t0 = time.monotonic()
    if kind == "feed":
        shutil.copy(b.patch, os.path.join(feed_dir, "p1.cxpatch"))
        run([b.bin, "feed", "publish", feed_dir, "--key", b.index_key, "--trust", b.trust])
    else:
        shutil.copy(b.patch, os.path.join(d, "offered", "p1.cxpatch"))
    run([b.bin, "agent", "--once", "--config", conf])
    ok = b.live(mnt)
    dt = time.monotonic() - t0
    if not ok:
        raise SystemExit(f"{kind}: the mount does not serve the patch after the agent")
    return dt


def idle_polls(b, server, conf, polls, only=""):
    """(requests, body bytes, statuses) per poll of `polls` agent runs, of
    the requests whose URI starts with `only`."""
    out = []
    for _ in range(polls):
        before = len(server.log())
        run([b.bin, "agent", "--once", "--config", conf])
        new = [l for l in server.log()[before:] if l.split()[1].startswith(only)]
        out.append((len(new), sum(int(l.split()[3]) for l in new),
                    [l.split()[2] for l in new]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--build", default=os.path.join(here, "..", "..", "build"))
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--polls", type=int, default=20)
    ap.add_argument("--workdir")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.repeat, a.polls = 3, 5
    if os.geteuid() != 0:
        raise SystemExit("needs root (FUSE mounts)")
    work = a.workdir or tempfile.mkdtemp(prefix="feed-bench-")
    os.chmod(work, 0o755)
    b = Bench(os.path.abspath(a.build), work)
    b.images()
    feed_dir = os.path.join(work, "feed")
    os.makedirs(feed_dir, exist_ok=True)
    server = Server(b.tool, feed_dir, os.path.join(work, "nginx"))
    try:
        times = {"feed": [], "patch_dir": []}
        for i in range(a.repeat):
            order = ("feed", "patch_dir") if i % 2 == 0 else ("patch_dir", "feed")
            for kind in order:
                times[kind].append(publish_to_live(b, server, feed_dir, kind, i))
            b.unmount_all()
        print(f"1. publish to live on a mounted line, small patch "
              f"({os.path.getsize(b.patch)} bytes), {a.repeat} runs each, alternating:")
        for kind in ("feed", "patch_dir"):
            print(f"   {kind:10s} median {med(times[kind]) * 1000:7.1f} ms "
                  f"(min {min(times[kind]) * 1000:.1f}, max {max(times[kind]) * 1000:.1f})")
        print(f"   feed/patch_dir {med(times['feed']) / med(times['patch_dir']):.2f}")

        _, conf, _ = b.device("idle", server.url, server.ca)
        # The peer: the first fetch, without validators (that run also
        # downloads and installs p1; only the index's request is counted).
        first = idle_polls(b, server, conf, 1, only="/index.cxfeed")[0]
        polls = idle_polls(b, server, conf, a.polls)
        b.unmount_all()
        reqs = [p[0] for p in polls]
        body = [p[1] for p in polls]
        statuses = sorted({s for p in polls for s in p[2]})
        print(f"2. idle poll ({a.polls} agent runs with nothing new):")
        print(f"   conditional  median {med(reqs)} requests, {med(body)} body bytes per poll, "
              f"status {','.join(statuses)}")
        print(f"   first fetch  {first[0]} request, {first[1]} body bytes "
              f"(status {','.join(first[2])}: the index, without validators)")
        ok = max(reqs) == TARGET_REQUESTS and max(body) == 0 and statuses == ["304"]
        print(f"   target one conditional request, 304, no body: {'met' if ok else 'MISSED'}")
    finally:
        b.unmount_all()
        server.stop()
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
