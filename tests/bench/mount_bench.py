#!/usr/bin/env python3
"""cryptexfs vs squashfuse_ll, same tree, same zstd level, same run.

Builds a cryptex image and a `mksquashfs -comp zstd` image of TREE, puts both
image files in the page cache, then alternates the two drivers REPEAT times,
each measurement on a fresh mount:

  cold read   find MNT -type f | xargs cat > /dev/null   (MiB/s, higher is better)
              and the CPU it used: busy core-seconds of the whole machine
              from /proc/stat, so both drivers' work (decoding, the kernel's
              FUSE page-cache fill, cat's copy) is counted the same way
  cold walk   ls -lR MNT > /dev/null                     (seconds, lower is better)
  warm read   the cold read again on the same mount, compared with the
              native TREE at the same point of its page-cache history:
              second pass vs the native second pass after its pages were
              dropped (POSIX_FADV_DONTNEED); third pass vs the native tree
              read many times (steady state) (MiB/s)
  mount time  from exec to mounted, for the big image and a ~10 MB one (ms)
  peak RSS    VmHWM of the driver process after the cold read (MiB)

Prints medians and the ratios the cryptexfs issue targets. Run as root.

usage: mount_bench.py [--tree DIR] [--level N] [--repeat N] [--build DIR]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

from benchlib import tree_bytes

def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)

def timed_sh(cmd):
    t0 = time.monotonic()
    sh(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0

def cpu_ticks():
    """(busy, idle) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]) - idle, idle

def timed_busy(cmd):
    """Wall seconds and busy core-seconds of the machine while cmd runs."""
    b0, _ = cpu_ticks()
    wall = timed_sh(cmd)
    b1, _ = cpu_ticks()
    return wall, (b1 - b0) / os.sysconf("SC_CLK_TCK")

def drop_pages(root):
    """Drops the page cache of every regular file under root."""
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            try:
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
            except OSError:
                pass

def is_mounted(mnt):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mnt for line in f)


class Mount:
    """Mounts with a driver command (daemonizing), finds the driver pid."""
    def __init__(self, argv, mnt, name):
        self.mnt, self.name = mnt, name
        t0 = time.monotonic()
        subprocess.run(argv, check=True)
        deadline = time.monotonic() + 10
        while not is_mounted(mnt):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: mount did not appear")
            time.sleep(0.001)
        self.mount_ms = (time.monotonic() - t0) * 1000
        out = subprocess.run(["pgrep", "-n", "-f", f"{name}.* {mnt}"], capture_output=True,
                             text=True).stdout.split()
        self.pid = int(out[0]) if out else None

    def peak_rss_mib(self):
        if not self.pid:
            return float("nan")
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def close(self):
        subprocess.run(["fusermount3", "-u", self.mnt], check=False)
        deadline = time.monotonic() + 10
        while is_mounted(self.mnt) and time.monotonic() < deadline:
            time.sleep(0.01)

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", default="/usr/lib/x86_64-linux-gnu")
    ap.add_argument("--level", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(here, "../../build"))
    a = ap.parse_args()
    cryptex = os.path.join(a.build, "cli/cryptex")
    cryptexfs = os.path.join(a.build, "fs/cryptexfs/cryptexfs")
    work = tempfile.mkdtemp(prefix="cx-mount-bench.")
    mounts = []
    try:
        sh(f"{cryptex} keygen -o {work}/k >/dev/null")
        os.mkdir(f"{work}/trust")
        shutil.copy(f"{work}/k.pub", f"{work}/trust/")
        # The small tree for the 10 MB mount-time measurement.
        small = f"{work}/small"
        os.mkdir(small)
        sh(f"head -c 10000000 /dev/urandom > {small}/blob")
        images = {}
        for tag, tree in (("big", a.tree), ("small", small)):
            sh(f"{cryptex} build {tree} -o {work}/{tag}.cryptex --key {work}/k --name b "
               f"--version 1 --level {a.level} -q")
            sh(f"mksquashfs {tree} {work}/{tag}.sqfs -comp zstd -Xcompression-level {a.level} "
               f"-noappend -quiet -no-progress >/dev/null")
            images[tag] = (f"{work}/{tag}.cryptex", f"{work}/{tag}.sqfs")
        sh(f"cat {work}/*.cryptex {work}/*.sqfs > /dev/null")
        content = tree_bytes(a.tree, count_links_once=False) / 2**20
        os.makedirs(f"{work}/mnt", exist_ok=True)
        mnt = f"{work}/mnt"

        def mount(side, tag):
            cx, sq = images[tag]
            if side == "cryptexfs":
                m = Mount([cryptexfs, cx, mnt, "-o", f"trust={work}/trust"], mnt, "cryptexfs")
            else:
                m = Mount(["squashfuse_ll", sq, mnt], mnt, "squashfuse_ll")
            mounts.append(m)
            return m

        read_cmd = f"cd {mnt} && find . -type f -print0 | xargs -0 cat > /dev/null"
        res = {s: {"cold": [], "cpu": [], "walk": [], "warm": [], "warm3": [], "mount_big": [],
                   "mount_small": [], "rss": []} for s in ("cryptexfs", "squashfuse_ll")}
        native, native2 = [], []
        native_cmd = f"cd {a.tree} && find . -type f -print0 | xargs -0 cat > /dev/null"
        sh(f"cd {a.tree} && find . -type f -print0 | xargs -0 cat > /dev/null")
        for i in range(a.repeat):
            order = ("cryptexfs", "squashfuse_ll") if i % 2 == 0 else ("squashfuse_ll", "cryptexfs")
            for side in order:
                m = mount(side, "small"); res[side]["mount_small"].append(m.mount_ms); m.close()
                m = mount(side, "big"); res[side]["mount_big"].append(m.mount_ms)
                res[side]["walk"].append(timed_sh(f"ls -lR {mnt} > /dev/null"))
                m.close()
                m = mount(side, "big")
                wall, busy = timed_busy(read_cmd)
                res[side]["cold"].append(content / wall)
                res[side]["cpu"].append(busy)
                res[side]["rss"].append(m.peak_rss_mib())
                res[side]["warm"].append(content / timed_sh(read_cmd))
                res[side]["warm3"].append(content / timed_sh(read_cmd))
                m.close()
            native.append(content / timed_sh(native_cmd))
        # The native second pass after dropping its pages: the same history
        # as the mount's warm pass (first read fills the cache, second reads
        # it). Last, so that the steady-state runs above are not disturbed.
        for i in range(a.repeat):
            drop_pages(a.tree)
            timed_sh(native_cmd)
            native2.append(content / timed_sh(native_cmd))
        med = {s: {k: statistics.median(v) for k, v in r.items()} for s, r in res.items()}
        c, q = med["cryptexfs"], med["squashfuse_ll"]
        nat = statistics.median(native)
        nat2 = statistics.median(native2)
        cores = os.cpu_count()
        print(f"tree {a.tree}: {content:.0f} MiB, zstd level {a.level}, {a.repeat} alternating "
              f"rounds (medians), fresh mount per measurement, images in page cache")
        print(f"{'':26} {'cryptexfs':>12} {'squashfuse_ll':>14} {'ratio':>8}  target")
        print(f"{'cold read MiB/s':26} {c['cold']:12.1f} {q['cold']:14.1f} "
              f"{c['cold']/q['cold']:8.2f}  >= 2.0")
        print(f"{'cold read busy core-s':26} {c['cpu']:12.2f} {q['cpu']:14.2f} "
              f"{c['cpu']/q['cpu']:8.2f}  (whole machine, {cores} cores)")
        print(f"{'cold read utilization':26} "
              f"{c['cpu'] / (cores * content / c['cold']):12.0%} "
              f"{q['cpu'] / (cores * content / q['cold']):14.0%}")
        # With cryptexfs' CPU use, perfect use of every core bounds its time
        # from below, and so the ratio from above.
        ceiling = (content / q['cold']) / (c['cpu'] / cores)
        print(f"{'cold read ratio ceiling':26} {'':12} {'':14} {ceiling:8.2f}  "
              f"(squashfuse_ll's time / cryptexfs' busy core-s spread over {cores} cores)")
        print(f"{'cold ls -lR s':26} {c['walk']:12.3f} {q['walk']:14.3f} "
              f"{c['walk']/q['walk']:8.2f}  <= 1.0")
        print(f"{'warm read, 2nd pass MiB/s':26} {c['warm']:12.1f} {q['warm']:14.1f} "
              f"{c['warm']/nat2:8.2f}  >= 0.9 of native 2nd pass ({nat2:.0f} MiB/s)")
        print(f"{'warm read, 3rd pass MiB/s':26} {c['warm3']:12.1f} {q['warm3']:14.1f} "
              f"{c['warm3']/nat:8.2f}  >= 0.9 of native steady state ({nat:.0f} MiB/s)")
        print(f"{'mount ms, big image':26} {c['mount_big']:12.1f} {q['mount_big']:14.1f} "
              f"{'':8}  < 50")
        print(f"{'mount ms, 10 MB image':26} {c['mount_small']:12.1f} {q['mount_small']:14.1f} "
              f"{'':8}  < 50")
        print(f"{'peak RSS MiB (cold read)':26} {c['rss']:12.1f} {q['rss']:14.1f}")
        print("raw:", {s: {k: [round(x, 2) for x in v] for k, v in r.items()}
                       for s, r in res.items()}, "native:", [round(x, 1) for x in native],
              "native second pass:", [round(x, 1) for x in native2])
    finally:
        for m in mounts:
            if is_mounted(m.mnt):
                m.close()
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
