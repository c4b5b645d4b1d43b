#!/usr/bin/env python3
"""cryptexfs vs squashfuse_ll, same tree, same zstd level, same run.

Builds a cryptex image and a `mksquashfs -comp zstd` image of TREE, puts both
image files in the page cache, then alternates the two drivers REPEAT times,
each measurement on a fresh mount:

  cold read   find MNT -type f | xargs cat > /dev/null   (MiB/s, higher is better)
  cold walk   ls -lR MNT > /dev/null                     (seconds, lower is better)
  warm read   the cold read again on the same mount, vs the native TREE with
              its files in the page cache                (MiB/s)
  mount time  from exec to mounted, for the big image and a ~10 MB one (ms)
  peak RSS    VmHWM of the driver process after the cold read (MiB)

Prints medians and the ratios the cryptexfs issue targets. Run as root.

usage: mount_bench.py [--tree DIR] [--level N] [--repeat N] [--build DIR]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)

def timed_sh(cmd):
    t0 = time.monotonic()
    sh(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0

def is_mounted(mnt):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mnt for line in f)

def tree_bytes(root):
    seen, total = set(), 0
    for d, _, files in os.walk(root):
        for f in files:
            st = os.lstat(os.path.join(d, f))
            if (st.st_mode & 0o170000) == 0o100000:
                total += st.st_size
    return total

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
        content = tree_bytes(a.tree) / 2**20
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
        res = {s: {"cold": [], "walk": [], "warm": [], "mount_big": [], "mount_small": [],
                   "rss": []} for s in ("cryptexfs", "squashfuse_ll")}
        native = []
        sh(f"cd {a.tree} && find . -type f -print0 | xargs -0 cat > /dev/null")
        for i in range(a.repeat):
            order = ("cryptexfs", "squashfuse_ll") if i % 2 == 0 else ("squashfuse_ll", "cryptexfs")
            for side in order:
                m = mount(side, "small"); res[side]["mount_small"].append(m.mount_ms); m.close()
                m = mount(side, "big"); res[side]["mount_big"].append(m.mount_ms)
                res[side]["walk"].append(timed_sh(f"ls -lR {mnt} > /dev/null"))
                m.close()
                m = mount(side, "big")
                res[side]["cold"].append(content / timed_sh(read_cmd))
                res[side]["rss"].append(m.peak_rss_mib())
                res[side]["warm"].append(content / timed_sh(read_cmd))
                m.close()
            native.append(content / timed_sh(f"cd {a.tree} && find . -type f -print0 | "
                                             f"xargs -0 cat > /dev/null"))
        med = {s: {k: statistics.median(v) for k, v in r.items()} for s, r in res.items()}
        c, q = med["cryptexfs"], med["squashfuse_ll"]
        nat = statistics.median(native)
        print(f"tree {a.tree}: {content:.0f} MiB, zstd level {a.level}, {a.repeat} alternating "
              f"rounds (medians), fresh mount per measurement, images in page cache")
        print(f"{'':26} {'cryptexfs':>12} {'squashfuse_ll':>14} {'ratio':>8}  target")
        print(f"{'cold read MiB/s':26} {c['cold']:12.1f} {q['cold']:14.1f} "
              f"{c['cold']/q['cold']:8.2f}  >= 2.0")
        print(f"{'cold ls -lR s':26} {c['walk']:12.3f} {q['walk']:14.3f} "
              f"{c['walk']/q['walk']:8.2f}  <= 1.0")
        print(f"{'warm read MiB/s':26} {c['warm']:12.1f} {q['warm']:14.1f} "
              f"{c['warm']/nat:8.2f}  >= 0.9 of native ({nat:.0f} MiB/s)")
        print(f"{'mount ms, big image':26} {c['mount_big']:12.1f} {q['mount_big']:14.1f} "
              f"{'':8}  < 50")
        print(f"{'mount ms, 10 MB image':26} {c['mount_small']:12.1f} {q['mount_small']:14.1f} "
              f"{'':8}  < 50")
        print(f"{'peak RSS MiB (cold read)':26} {c['rss']:12.1f} {q['rss']:14.1f}")
        print("raw:", {s: {k: [round(x, 2) for x in v] for k, v in r.items()}
                       for s, r in res.items()}, "native:", [round(x, 1) for x in native])
    finally:
        for m in mounts:
            if is_mounted(m.mnt):
                m.close()
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
