#!/usr/bin/env python3
"""cryptex build vs mksquashfs -comp zstd at the same level, same run.

Runs both builders alternately REPEAT times on the same tree (page cache warm
after a discarded warm-up read), then prints medians: throughput (content
bytes / wall second), compression ratio (content bytes / image bytes) and the
ratios cryptex/mksquashfs. cryptex also hashes the whole tree (dm-verity tree,
fs-verity digests, dedup keys) and signs; mksquashfs does neither.

With --deep N[,N...] it instead times `cryptex build` of a chain of N nested
one-letter directories (a file in each) on a tmpfs, for each N: the walk must
be linear in depth, also past PATH_MAX (4096 bytes of path, depth ~2048).

usage: build_bench.py [--tree DIR] [--level N] [--repeat N] [--cryptex PATH]
                      [--deep N[,N...]]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

from benchlib import tree_bytes

def timed(cmd):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0

def warm_cache(tree):
    """Reads every file's content once so that the first timed build is not the
    only one that runs cold. (`tar cf /dev/null` would not do: GNU tar does not
    read file contents when the archive is /dev/null.)"""
    tar = subprocess.Popen(["tar", "cf", "-", tree], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
    while tar.stdout.read(1 << 20):
        pass
    tar.wait()

def make_chain(root, depth):
    """depth nested directories "d" under root, a 1-byte file in each, made
    through directory descriptors (the path exceeds PATH_MAX)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        f = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=nxt)
        os.write(f, b"x")
        os.close(f)
        os.close(fd)
        fd = nxt
    os.close(fd)

def deep_bench(a, depths, work):
    key = os.path.join(work, "k")
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else work
    print(f"{'depth':>6} {'build s':>8}   (median of {a.repeat}; chain of 'd' dirs on {shm})")
    for depth in depths:
        src = tempfile.mkdtemp(prefix="cx-deep-bench.", dir=shm)
        try:
            make_chain(src, depth)
            img, times = os.path.join(work, "deep.cryptex"), []
            for _ in range(a.repeat):
                if os.path.exists(img): os.unlink(img)
                times.append(timed([a.cryptex, "build", src, "-o", img, "--key", key,
                                    "--name", "bench", "--version", "1", "--threads", "1",
                                    "-q"]))
            print(f"{depth:6d} {statistics.median(times):8.2f}")
        finally:
            subprocess.run(["rm", "-rf", src])

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", default="/usr/lib/x86_64-linux-gnu")
    ap.add_argument("--level", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cryptex", default=os.path.join(here, "../../build/cli/cryptex"))
    ap.add_argument("--deep", help="comma-separated chain depths: time deep-tree builds instead")
    a = ap.parse_args()
    threads = os.cpu_count() or 1
    work = tempfile.mkdtemp(prefix="cx-build-bench.")
    try:
        subprocess.run([a.cryptex, "keygen", "-o", os.path.join(work, "k")], check=True,
                       stdout=subprocess.DEVNULL)
        if a.deep:
            deep_bench(a, [int(d) for d in a.deep.split(",")], work)
            return
        content = tree_bytes(a.tree, count_links_once=True)
        warm_cache(a.tree)
        cx_img, sq_img = os.path.join(work, "t.cryptex"), os.path.join(work, "t.sqfs")
        cx_t, sq_t, cx_size, sq_size = [], [], 0, 0
        for i in range(a.repeat):
            for side in (("cx", "sq") if i % 2 == 0 else ("sq", "cx")):
                if side == "cx":
                    if os.path.exists(cx_img): os.unlink(cx_img)
                    cx_t.append(timed([a.cryptex, "build", a.tree, "-o", cx_img, "--key",
                                       os.path.join(work, "k"), "--name", "bench", "--version", "1",
                                       "--level", str(a.level), "--threads", str(threads), "-q"]))
                    cx_size = os.path.getsize(cx_img)
                else:
                    if os.path.exists(sq_img): os.unlink(sq_img)
                    sq_t.append(timed(["mksquashfs", a.tree, sq_img, "-comp", "zstd",
                                       "-Xcompression-level", str(a.level), "-noappend",
                                       "-processors", str(threads), "-quiet", "-no-progress"]))
                    sq_size = os.path.getsize(sq_img)
        cx_med, sq_med = statistics.median(cx_t), statistics.median(sq_t)
        cx_tp, sq_tp = content / cx_med / 2**20, content / sq_med / 2**20
        cx_cr, sq_cr = content / cx_size, content / sq_size
        print(f"tree {a.tree}: {content/2**20:.1f} MiB content, zstd level {a.level}, "
              f"{threads} threads, {a.repeat} alternating runs each (medians)")
        print(f"{'':12} {'time s':>8} {'MiB/s':>8} {'image MiB':>10} {'ratio':>7}")
        print(f"{'cryptex':12} {cx_med:8.2f} {cx_tp:8.1f} {cx_size/2**20:10.1f} {cx_cr:7.3f}")
        print(f"{'mksquashfs':12} {sq_med:8.2f} {sq_tp:8.1f} {sq_size/2**20:10.1f} {sq_cr:7.3f}")
        print(f"throughput ratio cryptex/mksquashfs: {cx_tp/sq_tp:.2f}x (target >= 1.00)")
        print(f"compression ratio cryptex/mksquashfs: {cx_cr/sq_cr:.3f} (target >= 0.97)")
        print(f"raw times cryptex {['%.2f' % t for t in cx_t]} mksquashfs {['%.2f' % t for t in sq_t]}")
    finally:
        shutil.rmtree(work)

if __name__ == "__main__":
    main()
