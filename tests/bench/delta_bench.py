#!/usr/bin/env python3
"""cryptex delta codec vs bsdiff and zstd --patch-from, same run.

For real Debian package version pairs (fetched with `apt-get download
PKG=VERSION`, the oldest and newest version `apt-cache madison` lists, or the
versions given) every ELF file that differs between the two is diffed by
  ours    build/tests/delta_tool encode OLD NEW OUT   (default options)
  bsdiff  bsdiff OLD NEW OUT
  zstd    zstd --patch-from=OLD -19 --long=27 NEW -o OUT
REPEAT times each, sides alternating, under /usr/bin/time -v. Prints per
file and in total: delta bytes, CPU seconds (user+sys), wall seconds and peak
RSS (medians), and the ratios ours/bsdiff and ours/zstd. Every delta of ours
is decoded and compared with NEW.

Then the large-file case: a copy of a file of 90 MiB or more (--big, else
the first big library found, else /usr/lib files concatenated) with a few
bytes flipped: delta bytes, encode time, peak RSS.

usage: delta_bench.py [--tool PATH] [--repeat N] [--pkg NAME[=OLD,NEW]]...
                      [--big PATH] [--big-size BYTES] [--workdir DIR]
Needs: bsdiff, zstd, time (Debian packages), network access to the Debian
archive for apt-get download.
"""
import argparse, functools, os, re, shutil, statistics, subprocess, sys, tempfile
from benchlib import ratio

DEFAULT_PKGS = ["libcurl4", "libc6"]
BIG_CANDIDATES = ["/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1",
                  "/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1"]


def run_timed(cmd):
    """Runs cmd under /usr/bin/time -v; returns (cpu s, wall s, peak RSS KiB)."""
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    def field(name):
        m = re.search(rf"{re.escape(name)}: ([^\n]+)", p.stderr)
        return m.group(1).strip()
    wall = 0.0
    for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
        wall = wall * 60 + float(part)
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    return cpu, wall, int(field("Maximum resident set size (kbytes)"))


def versions(pkg):
    out = subprocess.run(["apt-cache", "madison", pkg], capture_output=True, text=True).stdout
    vs = []
    for line in out.splitlines():
        parts = [x.strip() for x in line.split("|")]
        if len(parts) >= 3 and parts[1] not in vs:
            vs.append(parts[1])
    if len(vs) < 2:
        return None
    def cmp(a, b):
        if a == b:
            return 0
        lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
        return -1 if lt else 1
    ordered = sorted(vs, key=functools.cmp_to_key(cmp))
    return ordered[0], ordered[-1]


def fetch(pkg, ver, work):
    d = os.path.join(work, f"{pkg}_{ver}".replace(":", "_"))
    if os.path.isdir(d):
        return d
    dl = tempfile.mkdtemp(dir=work)
    subprocess.run(["apt-get", "download", f"{pkg}={ver}"], cwd=dl, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deb = [f for f in os.listdir(dl) if f.endswith(".deb")][0]
    os.makedirs(d)
    subprocess.run(["dpkg-deb", "-x", os.path.join(dl, deb), d], check=True)
    shutil.rmtree(dl)
    return d


def changed_elf_pairs(old, new):
    pairs = []
    for root, _, files in os.walk(old):
        for f in files:
            a = os.path.join(root, f)
            b = os.path.join(new, os.path.relpath(a, old))
            if os.path.islink(a) or not os.path.isfile(a) or os.path.islink(b) \
                    or not os.path.isfile(b):
                continue
            with open(a, "rb") as fa, open(b, "rb") as fb:
                ca, cb = fa.read(), fb.read()
            if ca != cb and ca[:4] == b"\x7fELF" and cb[:4] == b"\x7fELF":
                pairs.append((os.path.relpath(a, old), a, b))
    return sorted(pairs)


class Side:
    def __init__(self, name, make_cmd):
        self.name, self.make_cmd = name, make_cmd
        self.size, self.cpu, self.wall, self.rss = 0, [], [], []

    def run(self, old, new, out):
        if os.path.exists(out):
            os.unlink(out)
        cpu, wall, rss = run_timed(self.make_cmd(old, new, out))
        self.cpu.append(cpu)
        self.wall.append(wall)
        self.rss.append(rss)
        self.size = os.path.getsize(out)

    def med(self):
        return (statistics.median(self.cpu), statistics.median(self.wall),
                statistics.median(self.rss))


def bench_pair(tool, old, new, work, repeat):
    sides = [Side("ours", lambda o, n, out: [tool, "encode", o, n, out]),
             Side("bsdiff", lambda o, n, out: ["bsdiff", o, n, out]),
             Side("zstd", lambda o, n, out: ["zstd", "-q", "-f", f"--patch-from={o}", "-19",
                                             "--long=27", n, "-o", out])]
    outs = {s.name: os.path.join(work, "delta." + s.name) for s in sides}
    for i in range(repeat):
        order = sides if i % 2 == 0 else list(reversed(sides))
        for s in order:
            s.run(old, new, outs[s.name])
    dec = os.path.join(work, "decoded")
    subprocess.run([tool, "decode", old, outs["ours"], dec], check=True)
    with open(dec, "rb") as a, open(new, "rb") as b:
        if a.read() != b.read():
            sys.exit(f"ours: decoded {new} differs")
    return {s.name: s for s in sides}


def big_case(tool, work, big, size, repeat):
    src = big or next((p for p in BIG_CANDIDATES if os.path.isfile(p)
                       and os.path.getsize(p) >= size), None)
    lower, target = os.path.join(work, "big.lower"), os.path.join(work, "big.target")
    with open(lower, "wb") as out:
        if src:
            with open(src, "rb") as f:
                out.write(f.read(size))
        else:  # concatenate library files until large enough
            left = size
            for root, _, files in os.walk("/usr/lib"):
                for fn in sorted(files):
                    p = os.path.join(root, fn)
                    if left <= 0 or os.path.islink(p) or not os.path.isfile(p):
                        continue
                    with open(p, "rb") as f:
                        chunk = f.read(left)
                    out.write(chunk)
                    left -= len(chunk)
    data = bytearray(open(lower, "rb").read())
    for off in (4097, len(data) // 3, len(data) // 2 + 12345, len(data) - 2):
        data[off] ^= 0x5A
    with open(target, "wb") as f:
        f.write(data)
    s = Side("ours", lambda o, n, out: [tool, "encode", o, n, out])
    out = os.path.join(work, "big.delta")
    for _ in range(repeat):
        s.run(lower, target, out)
    cpu, wall, rss = s.med()
    print(f"\nlarge file: {len(data)/2**20:.1f} MiB ({src or 'concatenated /usr/lib files'}), "
          f"4 bytes flipped, {repeat} runs (medians)")
    print(f"  delta {s.size} bytes (target < 1024), wall {wall:.2f} s (target < 2), "
          f"cpu {cpu:.2f} s, peak RSS {rss/1024:.1f} MiB (target < 200)")
    dec = os.path.join(work, "big.decoded")
    subprocess.run([tool, "decode", lower, out, dec], check=True)
    if open(dec, "rb").read() != bytes(data):
        sys.exit("ours: large file decodes wrong")
    for p in (lower, target, dec):
        os.unlink(p)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", default=os.path.join(here, "../../build/tests/delta_tool"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pkg", action="append", help="NAME or NAME=OLD,NEW")
    ap.add_argument("--big")
    ap.add_argument("--big-size", type=int, default=90 << 20)
    ap.add_argument("--workdir")
    a = ap.parse_args()
    tool = os.path.abspath(a.tool)
    work = a.workdir or tempfile.mkdtemp(prefix="cx-delta-bench.")
    os.makedirs(work, exist_ok=True)
    rows, totals = [], {"ours": [0, 0.0, 0.0, 0], "bsdiff": [0, 0.0, 0.0, 0],
                        "zstd": [0, 0.0, 0.0, 0]}
    try:
        for spec in a.pkg or DEFAULT_PKGS:
            name, _, vers = spec.partition("=")
            vs = tuple(vers.split(",")) if vers else versions(name)
            if not vs:
                print(f"{name}: fewer than two versions reachable, skipped")
                continue
            old, new = fetch(name, vs[0], work), fetch(name, vs[1], work)
            for rel, fa, fb in changed_elf_pairs(old, new):
                r = bench_pair(tool, fa, fb, work, a.repeat)
                rows.append((f"{name} {os.path.basename(rel)}", os.path.getsize(fb), r))
                for k, s in r.items():
                    cpu, wall, rss = s.med()
                    t = totals[k]
                    t[0] += s.size
                    t[1] += cpu
                    t[2] += wall
                    t[3] = max(t[3], rss)
            print(f"{name}: {vs[0]} -> {vs[1]}")
        print(f"\n{a.repeat} alternating runs per tool and file; medians; "
              f"cpu = user+sys s; RSS in MiB")
        print(f"{'file':34} {'new KiB':>8} {'ours':>8} {'bsdiff':>8} {'zstd':>8} "
              f"{'o/bsd':>6} {'o/zstd':>6} {'cpu o/b':>8} {'rss o/b':>8}")
        for label, size, r in rows:
            o, b, z = r["ours"], r["bsdiff"], r["zstd"]
            print(f"{label[:34]:34} {size/1024:8.0f} {o.size:8} {b.size:8} {z.size:8} "
                  f"{ratio(o.size, b.size):6.2f} {ratio(o.size, z.size):6.2f} "
                  f"{ratio(o.med()[0], b.med()[0]):8.2f} {ratio(o.med()[2], b.med()[2]):8.2f}")
        o, b, z = totals["ours"], totals["bsdiff"], totals["zstd"]
        print(f"\ntotal over {len(rows)} changed ELF files:")
        print(f"{'':8} {'bytes':>10} {'cpu s':>8} {'wall s':>8} {'peak RSS':>9}")
        for k in ("ours", "bsdiff", "zstd"):
            t = totals[k]
            print(f"{k:8} {t[0]:10} {t[1]:8.2f} {t[2]:8.2f} {t[3]/1024:9.1f}")
        print(f"ours/bsdiff: bytes {ratio(o[0], b[0]):.2f} (target <= 0.80), "
              f"cpu {ratio(o[1], b[1]):.2f}, wall {ratio(o[2], b[2]):.2f} (target <= 0.25), "
              f"peak RSS {ratio(o[3], b[3]):.2f} (target <= 0.25)")
        print(f"ours/zstd --patch-from: bytes {ratio(o[0], z[0]):.2f}, "
              f"cpu {ratio(o[1], z[1]):.2f}, peak RSS {ratio(o[3], z[3]):.2f}")
        big_case(tool, work, a.big, a.big_size, a.repeat)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
