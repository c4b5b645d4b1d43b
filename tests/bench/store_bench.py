#!/usr/bin/env python3
"""Device store and live activation: install, activate/revert, cold read, 50 layers.

Lines (each in its own store, mounted live with `cryptexfs NAME MNT -o
store=ST,trust=T` where a part needs a mount):
  small  a synthetic tree of 20 small files; the patch changes 2 of them
  libc6  libc6 2.36-9+deb12u7 -> 2.36-9+deb12u14 (the pair of patch_bench.py;
         .debs cached in BUILD/deb-cache, fetched with apt-get download)
  big    the first >= 90 MiB library (libLLVM-14/15, --big to choose), the
         patch flips 4 bytes of it

1. install: REPEAT runs per line, each into a fresh store (`cryptex add` of
   the base first, untimed), alternating with copying the patch's changed
   files (copy + fsync: what shipping whole files would cost). Wall time of
   `cryptex install`, store growth (du --apparent-size of the store before
   and after, and allocated bytes), vs the .cxpatch size and the bytes of
   the changed files.
2. activate / revert on a mounted line: CYCLES alternating pairs, wall time of
   each CLI command (it returns once the mount serves the new level). Target
   < 50 ms each, and the big line within 1.5x of the small one (independent
   of file size). Once, untimed: the mount serves the patched bytes after
   activate and the base bytes after revert.
3. cold read of the largest changed file (libc6, big): "live" (a mount of
   the store's line, patch active), "activated" (mounted at the base, the
   patch activated on the running mount) vs "plain" (a freshly built base
   image of the NEW tree mounted with cryptexfs). Each run mounts (untimed),
   reads another changed file through the mount (untimed: the driver's read
   path, and for a patch its delta decoder, is then mapped; otherwise the
   timed read pays for faulting the driver's own code in from disk, about a
   dozen major faults whose cost depends on the binary's layout), drops the
   caches (echo 3 > drop_caches, posix_fadvise DONTNEED on the images and
   the store's files) and times `cat FILE > /dev/null`; the bytes are
   checked once. The driver's major faults during the timed reads are
   counted and printed. Target live/plain <= 1.5.
4. a base of 100 x 50 small files; LAYERS chained patches (--on), patch i
   changes 3 files in 3 of the first 50 directories. Stores with the base
   alone, patch 1 active and all LAYERS active, all mounted; alternating,
   caches dropped before each: stat of every path (in-process, us per path,
   also split into the directories the patches touch and the others) and
   `ls -lR` (ms). Target LAYERS/1 about 1 (<= 1.5).

usage: store_bench.py [--build DIR] [--repeat N] [--quick] [--workdir DIR]
                      [--cycles N] [--layers N] [--parts 1234] [--big PATH]
                      [--no-big] [--deb-cache DIR]
--quick: 3 runs, 6 activate/revert pairs, 10 layers (default 7, 20, 50; a
full run takes about a minute on an idle 2-core machine).
Needs root (drop_caches, FUSE mounts), fusermount3, a built build/cli/cryptex
and build/fs/cryptexfs/cryptexfs, and the Debian archive (or the .deb cache).
"""
import argparse, hashlib, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import med, ratio, run, write  # noqa: E402
import patch_bench  # noqa: E402  (Cryptex, find_big, drop_cache, EPOCH)

LIBC = ("libc6", "2.36-9+deb12u7", "2.36-9+deb12u14")
TARGET_MS = 50.0
TARGET_RATIO = 1.5


def verdict(ok):
    return "met" if ok else "MISSED"


def timed(cmd):
    t0 = time.monotonic()
    run(cmd)
    return time.monotonic() - t0


def du(path):
    """(apparent bytes, allocated bytes) of a directory."""
    app = int(run(["du", "-s", "--apparent-size", "--block-size=1", path]).split()[0])
    alloc = int(run(["du", "-s", "--block-size=1", path]).split()[0])
    return app, alloc


def drop_all(paths):
    """Drops the page, dentry and inode caches (and paths' pages by fadvise),
    then loads ls and cat again, so a timed command pays for the file system
    under test only."""
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += [os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs]
        elif os.path.isfile(p):
            files.append(p)
    patch_bench.drop_cache(files)
    subprocess.run(["ls", "-ld", "/"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sh", "-c", "cat /dev/null > /dev/null"], check=True)


# ---------------------------------------------------------------- trees


def fetch_deb_tree(pkg, ver, cache, work):
    """The unpacked tree of pkg=ver; the .deb comes from cache (downloaded
    there once with apt-get download)."""
    d = os.path.join(work, f"{pkg}_{ver}")
    if os.path.isdir(d):
        return d
    os.makedirs(cache, exist_ok=True)
    debs = [f for f in os.listdir(cache) if f.startswith(f"{pkg}_{ver}_") and f.endswith(".deb")]
    if not debs:
        subprocess.run(["apt-get", "download", f"{pkg}={ver}"], cwd=cache, check=True,
                       stdout=subprocess.DEVNULL)
        debs = [f for f in os.listdir(cache)
                if f.startswith(f"{pkg}_{ver}_") and f.endswith(".deb")]
    subprocess.run(["dpkg-deb", "-x", os.path.join(cache, debs[0]), d + ".part"], check=True)
    os.rename(d + ".part", d)
    return d


def changed_files(old, new):
    """Relative paths of regular files of NEW that are absent from OLD or differ."""
    out = []
    for d, _, files in os.walk(new):
        for f in files:
            b = os.path.join(d, f)
            rel = os.path.relpath(b, new)
            a = os.path.join(old, rel)
            if os.path.islink(b) or not os.path.isfile(b):
                continue
            if (not os.path.isfile(a) or os.path.islink(a)
                    or os.path.getsize(a) != os.path.getsize(b)
                    or open(a, "rb").read() != open(b, "rb").read()):
                out.append(rel)
    return sorted(out)


def small_trees(work):
    old, new = os.path.join(work, "small.old"), os.path.join(work, "small.new")
    for d in (old, new):
        shutil.rmtree(d, ignore_errors=True)
    for i in range(20):
        data = (f"file {i}\n" * (50 + 40 * i)).encode()
        write(os.path.join(old, f"d{i % 4}", f"f{i}.txt"), data)
        if i in (3, 11):
            data = data.replace(b"file", b"FILE", 7)
        write(os.path.join(new, f"d{i % 4}", f"f{i}.txt"), data)
    return old, new


def big_trees(work, src):
    old, new = os.path.join(work, "big.old"), os.path.join(work, "big.new")
    name = os.path.basename(src)
    if os.path.isfile(os.path.join(new, name)):
        return old, new
    for d in (old, new):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    shutil.copy2(src, os.path.join(old, name))
    data = bytearray(open(src, "rb").read())
    for off in (4097, len(data) // 3, len(data) // 2 + 12345, len(data) - 2):
        data[off] ^= 0x5A
    with open(os.path.join(new, name), "wb") as f:
        f.write(data)
    shutil.copystat(os.path.join(old, name), os.path.join(new, name))
    return old, new


# ---------------------------------------------------------------- cryptex


class Bench(patch_bench.Cryptex):
    def __init__(self, build, work):
        super().__init__(build, work)
        self.fs = os.path.join(build, "fs", "cryptexfs", "cryptexfs")
        self.mounts = []

    def build_image(self, src, out, name):
        if not os.path.exists(out):
            run([self.bin, "build", src, "-o", out + ".part", "--key", self.key, "--name",
                 name, "--version", "1", "--epoch", patch_bench.EPOCH, "-q"])
            os.rename(out + ".part", out)
        return out

    def mkpatch(self, base, new, out, pid, counter, on=()):
        if not os.path.exists(out):
            cmd = [self.bin, "mkpatch", "--from", base]
            for p in on:
                cmd += ["--on", p]
            cmd += ["--to", new, "-o", out + ".part", "--key", self.key, "--id", pid,
                    "--class", "relaunch", "--release-counter", str(counter),
                    "--trust", self.trust, "--epoch", patch_bench.EPOCH]
            run(cmd)
            os.rename(out + ".part", out)
        return out

    def store(self, st, *args):
        return [self.bin, args[0]] + list(args[1:]) + ["--store", st]

    def add(self, base, st):
        run([self.bin, "add", base, "--store", st, "--trust", self.trust])

    def install_cmd(self, patch, st, activate=False):
        return ([self.bin, "install", patch, "--store", st, "--trust", self.trust]
                + (["--activate"] if activate else []))

    def mount(self, what, mnt, opts):
        os.makedirs(mnt, exist_ok=True)
        run([self.fs, what, mnt, "-o", opts])
        for _ in range(200):
            if os.path.ismount(mnt):
                break
            time.sleep(0.01)
        else:
            raise SystemExit(f"{mnt}: not mounted")
        self.mounts.append(mnt)
        return mnt

    def mount_line(self, name, st, mnt):
        return self.mount(name, mnt, f"store={st},trust={self.trust}")

    def umount(self, mnt):
        run(["fusermount3", "-u", mnt])
        self.mounts.remove(mnt)

    def umount_all(self):
        for m in list(self.mounts):
            subprocess.run(["fusermount3", "-u", m])
            self.mounts.remove(m)


class Line:
    """A line: OLD and NEW trees, the base image of OLD, one patch to NEW."""

    def __init__(self, cx, work, tag, old, new):
        self.tag, self.old, self.new = tag, old, new
        self.name = f"org.bench.{tag}"
        self.pid = f"{tag}-p1"
        self.base = cx.build_image(old, os.path.join(work, f"{tag}.base.cryptex"), self.name)
        self.patch = cx.mkpatch(self.base, new, os.path.join(work, f"{tag}.cxpatch"),
                                self.pid, 2)
        self.changed = changed_files(old, new)
        self.changed_bytes = sum(os.path.getsize(os.path.join(new, r)) for r in self.changed)
        self.largest = max(self.changed, key=lambda r: os.path.getsize(os.path.join(new, r)))
        # Read before each timed cold read (part 3): another changed file, or
        # none if the largest is the only one.
        others = [r for r in self.changed if r != self.largest]
        self.warm = max(others, key=lambda r: os.path.getsize(os.path.join(new, r)), default=None)


def fresh_store(cx, line, st, install=False, activate=False):
    shutil.rmtree(st, ignore_errors=True)
    cx.add(line.base, st)
    if install:
        run(cx.install_cmd(line.patch, st, activate))
    return st


# ---------------------------------------------------------------- parts


def part1_install(cx, lines, work, repeat):
    print(f"\n== 1. install: {repeat} runs per line, alternating with copying the changed "
          f"files (+ fsync); medians")
    print(f"{'line':7} {'files':>5} {'changed B':>11} {'patch B':>10} {'growth B':>10} "
          f"{'alloc B':>10} {'g/patch':>8} {'g/copy':>7} {'install ms':>11} {'copy ms':>8} "
          f"{'inst/copy':>9}")
    st = os.path.join(work, "store.install")
    for line in lines:
        inst, copy, growth, alloc = [], [], [], []

        def do_install():
            fresh_store(cx, line, st)
            a0, b0 = du(st)
            inst.append(timed(cx.install_cmd(line.patch, st)))
            a1, b1 = du(st)
            growth.append(a1 - a0)
            alloc.append(b1 - b0)

        def do_copy():
            dst = os.path.join(work, "copy.dst")
            shutil.rmtree(dst, ignore_errors=True)
            t0 = time.monotonic()
            for rel in line.changed:
                out = os.path.join(dst, rel)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                shutil.copyfile(os.path.join(line.new, rel), out)
                fd = os.open(out, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            copy.append(time.monotonic() - t0)
            shutil.rmtree(dst)

        for i in range(repeat):
            for f in ((do_install, do_copy) if i % 2 == 0 else (do_copy, do_install)):
                f()
        psize = os.path.getsize(line.patch)
        g = med(growth)
        print(f"{line.tag:7} {len(line.changed):5} {line.changed_bytes:11} {psize:10} "
              f"{g:10.0f} {med(alloc):10.0f} {ratio(g, psize):8.2f} "
              f"{ratio(g, line.changed_bytes):7.3f} {med(inst)*1000:11.1f} "
              f"{med(copy)*1000:8.1f} {ratio(med(inst), med(copy)):9.2f}")
    shutil.rmtree(st, ignore_errors=True)
    print("growth = du --apparent-size of the store after - before; alloc = allocated "
          "blocks; g/copy = growth / bytes of the changed files")


def check_serves(mnt, line, patched):
    """The live mount serves the NEW (patched) or OLD bytes of line.largest."""
    rel = line.largest
    want = open(os.path.join(line.new if patched else line.old, rel), "rb").read()
    got = open(os.path.join(mnt, rel), "rb").read()
    if got != want:
        raise SystemExit(f"DEFECT: {mnt}/{rel} after {'activate' if patched else 'revert'} "
                         f"does not serve the {'patched' if patched else 'base'} bytes "
                         f"(sha256 {hashlib.sha256(got).hexdigest()[:16]} vs "
                         f"{hashlib.sha256(want).hexdigest()[:16]})")


def part2_activate(cx, lines, work, cycles):
    print(f"\n== 2. activate / revert on a mounted line: {cycles} alternating pairs, wall "
          f"time of the CLI (includes the mount's reload); target < {TARGET_MS:.0f} ms")
    print("(unmounted: the same commands on a store of the line that nothing mounts, "
          "alternating with the mounted one: the CLI's own cost)")
    print(f"{'line':7} {'largest changed file':>22} {'activate ms':>12} {'revert ms':>10} "
          f"{'act max':>8} {'rev max':>8} {'unmounted act':>14} {'rev':>6}  target")
    res = {}
    for line in lines:
        st = fresh_store(cx, line, os.path.join(work, f"store.{line.tag}"), install=True)
        ref = fresh_store(cx, line, os.path.join(work, f"store.{line.tag}.ref"), install=True)
        mnt = cx.mount_line(line.name, st, os.path.join(work, f"mnt.{line.tag}"))
        try:
            check_serves(mnt, line, False)
            run(cx.store(st, "activate", line.pid))
            check_serves(mnt, line, True)
            run(cx.store(st, "revert", line.pid))
            check_serves(mnt, line, False)
            act, rev, ract, rrev = [], [], [], []

            def mounted():
                act.append(timed(cx.store(st, "activate", line.pid)))
                os.stat(os.path.join(mnt, line.largest))
                rev.append(timed(cx.store(st, "revert", line.pid)))
                os.stat(os.path.join(mnt, line.largest))

            def unmounted():
                ract.append(timed(cx.store(ref, "activate", line.pid)))
                rrev.append(timed(cx.store(ref, "revert", line.pid)))

            for i in range(cycles):
                for f in ((mounted, unmounted) if i % 2 == 0 else (unmounted, mounted)):
                    f()
        finally:
            cx.umount(mnt)
            shutil.rmtree(ref, ignore_errors=True)
        a, r = med(act) * 1000, med(rev) * 1000
        res[line.tag] = (a, r)
        size = os.path.getsize(os.path.join(line.new, line.largest))
        print(f"{line.tag:7} {size:22} {a:12.1f} {r:10.1f} {max(act)*1000:8.1f} "
              f"{max(rev)*1000:8.1f} {med(ract)*1000:14.1f} {med(rrev)*1000:6.1f}  "
              f"{verdict(a < TARGET_MS and r < TARGET_MS)}")
    if "big" in res and "small" in res:
        ra = ratio(res["big"][0], res["small"][0])
        rr = ratio(res["big"][1], res["small"][1])
        print(f"big/small: activate {ra:.2f}, revert {rr:.2f} (independent of file size: "
              f"target <= {TARGET_RATIO}) {verdict(ra <= TARGET_RATIO and rr <= TARGET_RATIO)}")


def driver_major_faults(mnt):
    """Major page faults so far of the cryptexfs process serving `mnt` (its
    pid from /proc/self/mountinfo is not recorded, so: the newest cryptexfs
    whose command line names the mount point)."""
    best = None
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if not argv or not argv[0].endswith(b"cryptexfs") or mnt.encode() not in argv:
                continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if best is None or int(pid) > best[0]:
                best = (int(pid), int(fields[9]))  # majflt: field 12 of stat
        except OSError:
            continue
    return best[1] if best else 0


def part3_cold(cx, lines, work, repeat):
    print(f"\n== 3. cold read of the largest changed file: live mount (base + patch from the "
          f"store) vs a base image of NEW mounted; {repeat} alternating runs, each remounted, "
          f"caches dropped; medians; target live/plain <= {TARGET_RATIO}")
    print("(live: a mount of the store's line with the patch active; activated: mounted "
          "at the base, the patch activated on the running mount, then read; plain: NEW built "
          "as a base image)")
    print(f"{'line':7} {'file':40} {'bytes':>10} {'live ms':>9} {'plain ms':>9} "
          f"{'ratio':>6} {'activ. ms':>10} {'ratio':>6}  target")
    for line in lines:
        st = fresh_store(cx, line, os.path.join(work, f"store.{line.tag}"), install=True,
                         activate=True)
        plain = cx.build_image(line.new, os.path.join(work, f"{line.tag}.new.cryptex"),
                               line.name)
        rel = line.largest
        want = hashlib.sha256(open(os.path.join(line.new, rel), "rb").read()).hexdigest()
        st2 = fresh_store(cx, line, os.path.join(work, f"store.{line.tag}.act"), install=True)
        mnt = os.path.join(work, f"mnt.{line.tag}")

        def activated():
            cx.mount_line(line.name, st2, mnt)
            os.stat(os.path.join(mnt, rel))  # the base's file is known to the kernel
            run(cx.store(st2, "activate", line.pid))

        def unmount_activated():
            run(cx.store(st2, "revert", line.pid))

        sides = {"live": lambda: cx.mount_line(line.name, st, mnt),
                 "plain": lambda: cx.mount(plain, mnt, f"trust={cx.trust}"),
                 "activated": activated}
        walls = {k: [] for k in sides}
        faults = {k: [] for k in sides}
        for i in range(repeat):
            for k in (list(sides) if i % 2 == 0 else list(reversed(list(sides)))):
                sides[k]()
                try:
                    if line.warm is not None:
                        with open(os.path.join(mnt, line.warm), "rb") as f:
                            while f.read(1 << 20):
                                pass
                    drop_all([st, st2, plain])
                    before = driver_major_faults(mnt)
                    t0 = time.monotonic()
                    subprocess.run(["sh", "-c", 'cat "$1" > /dev/null', "sh",
                                    os.path.join(mnt, rel)], check=True)
                    walls[k].append(time.monotonic() - t0)
                    faults[k].append(driver_major_faults(mnt) - before)
                    if i == 0:
                        got = hashlib.sha256(open(os.path.join(mnt, rel), "rb").read())
                        if got.hexdigest() != want:
                            raise SystemExit(f"DEFECT: {k} mount serves wrong bytes for {rel}")
                finally:
                    if k == "activated":
                        unmount_activated()
                    cx.umount(mnt)
        a, b, c = med(walls["live"]), med(walls["plain"]), med(walls["activated"])
        size = os.path.getsize(os.path.join(line.new, rel))
        print(f"{line.tag:7} {rel[-40:]:40} {size:10} {a*1000:9.1f} {b*1000:9.1f} "
              f"{ratio(a, b):6.2f} {c*1000:10.1f} {ratio(c, b):6.2f}  "
              f"{verdict(max(ratio(a, b), ratio(c, b)) <= TARGET_RATIO)}")
        print(f"        warm-up read: {line.warm or '(none: one changed file)'}; the driver's "
              f"major faults per timed read (median): live {med(faults['live']):.0f}, plain "
              f"{med(faults['plain']):.0f}, activated {med(faults['activated']):.0f}")


def part4_layers(cx, work, layers, repeat, dirs=100, files=50):
    print(f"\n== 4. lookup and ls -lR: {dirs} dirs x {files} files, {layers} chained "
          f"patches (3 files in 3 of the first half of the dirs each) active vs 1 (and the base alone); {repeat} alternating runs, "
          f"caches dropped before each; medians; target {layers}/1 <= {TARGET_RATIO}")
    tree = os.path.join(work, "layers.tree")
    shutil.rmtree(tree, ignore_errors=True)
    paths = []
    for d in range(dirs):
        for f in range(files):
            rel = f"dir{d:03}/file{f:03}"
            write(os.path.join(tree, rel), f"{rel}\n".encode() * 8)
            paths.append(rel)
    name = "org.bench.layers"
    base = os.path.join(work, f"layers{layers}.base.cryptex")
    if os.path.exists(base):
        os.unlink(base)
    cx.build_image(tree, base, name)
    patches = []
    t0 = time.monotonic()
    for i in range(1, layers + 1):
        for k in range(3):
            rel = f"dir{(i * 7 + k * 31) % (dirs // 2):03}/file{(i + k) % files:03}"
            write(os.path.join(tree, rel), f"{rel} patched by {i}\n".encode() * 8)
        out = os.path.join(work, f"layers{layers}.p{i}.cxpatch")
        if os.path.exists(out):
            os.unlink(out)
        patches.append(cx.mkpatch(base, tree, out, f"lp{i}", i + 1, on=list(patches)))
    mk = time.monotonic() - t0
    stores = {}
    for n in (0, 1, layers):
        st = os.path.join(work, f"store.layers{n}")
        shutil.rmtree(st, ignore_errors=True)
        cx.add(base, st)
        for p in patches[:n]:
            run(cx.install_cmd(p, st, activate=True))
        stores[n] = st
    print(f"({layers} mkpatch runs: {mk:.1f} s)")
    mnts = {n: cx.mount_line(name, st, os.path.join(work, f"mnt.layers{n}"))
            for n, st in stores.items()}
    try:
        # The top level serves the last patch's bytes.
        last = f"dir{(layers * 7) % (dirs // 2):03}/file{layers % files:03}"
        if open(os.path.join(mnts[layers], last), "rb").read() != \
                open(os.path.join(tree, last), "rb").read():
            raise SystemExit(f"DEFECT: {mnts[layers]}/{last} is not patch {layers}'s content")
        res = {n: {"stat": [], "hot": [], "cold": [], "ls": []} for n in mnts}
        touched = [p for p in paths if int(p[3:6]) < dirs // 2]
        untouched = [p for p in paths if int(p[3:6]) >= dirs // 2]
        for i in range(repeat):
            order = list(mnts) if i % 2 == 0 else list(reversed(list(mnts)))
            for n in order:
                m = mnts[n]
                drop_all(list(stores.values()))
                t0 = time.monotonic()
                for rel in touched:
                    os.stat(os.path.join(m, rel))
                t1 = time.monotonic()
                for rel in untouched:
                    os.stat(os.path.join(m, rel))
                t2 = time.monotonic()
                res[n]["stat"].append((t2 - t0) / len(paths))
                res[n]["hot"].append((t1 - t0) / len(touched))
                res[n]["cold"].append((t2 - t1) / len(untouched))
                drop_all(list(stores.values()))
                t0 = time.monotonic()
                subprocess.run(["ls", "-lR", m], check=True, stdout=subprocess.DEVNULL)
                res[n]["ls"].append(time.monotonic() - t0)
    finally:
        for m in mnts.values():
            cx.umount(m)
    print("(touched: the paths in the directories the patches change, dirs 0 to "
          f"{dirs // 2 - 1}; untouched: the others)")
    print(f"{'active':>7} {'stat us/path':>13} {'touched':>8} {'untouched':>10} {'ls -lR ms':>10}")
    for n in mnts:
        r = res[n]
        print(f"{n if n else 'base':>7} {med(r['stat'])*1e6:13.1f} {med(r['hot'])*1e6:8.1f} "
              f"{med(r['cold'])*1e6:10.1f} {med(r['ls'])*1000:10.1f}")
    rs = ratio(med(res[layers]["stat"]), med(res[1]["stat"]))
    rl = ratio(med(res[layers]["ls"]), med(res[1]["ls"]))
    print(f"{layers}/1: stat {rs:.2f}, ls -lR {rl:.2f} (target <= {TARGET_RATIO}) "
          f"{verdict(rs <= TARGET_RATIO and rl <= TARGET_RATIO)}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(here, "../../build"))
    ap.add_argument("--repeat", type=int, help="runs per measurement (default 7; quick 3)")
    ap.add_argument("--cycles", type=int, help="activate/revert pairs (default 20; quick 6)")
    ap.add_argument("--layers", type=int, help="patches for part 4 (default 50; quick 10)")
    ap.add_argument("--quick", action="store_true", help="fewer runs and layers")
    ap.add_argument("--workdir", help="kept afterwards (caches trees and images)")
    ap.add_argument("--deb-cache", help="where the .debs are kept (default BUILD/deb-cache)")
    ap.add_argument("--big", help="a file of 90 MiB or more")
    ap.add_argument("--no-big", action="store_true")
    ap.add_argument("--parts", default="1234")
    a = ap.parse_args()
    repeat = a.repeat or (3 if a.quick else 7)
    cycles = a.cycles or (6 if a.quick else 20)
    layers = a.layers or (10 if a.quick else 50)
    build = os.path.abspath(a.build)
    if os.geteuid() != 0:
        sys.exit("needs root (drop_caches, FUSE mounts)")
    for need in (os.path.join(build, "cli", "cryptex"),
                 os.path.join(build, "fs", "cryptexfs", "cryptexfs")):
        if not os.access(need, os.X_OK):
            sys.exit(f"{need} is missing: build the cryptex and cryptexfs targets")
    work = os.path.abspath(a.workdir or tempfile.mkdtemp(prefix="cx-store-bench."))
    os.makedirs(work, exist_ok=True)
    cx = Bench(build, work)
    started = time.monotonic()
    try:
        lines = [Line(cx, work, "small", *small_trees(work))]
        old = fetch_deb_tree(LIBC[0], LIBC[1], a.deb_cache or os.path.join(build, "deb-cache"),
                             work)
        new = fetch_deb_tree(LIBC[0], LIBC[2], a.deb_cache or os.path.join(build, "deb-cache"),
                             work)
        lines.append(Line(cx, work, "libc6", old, new))
        big = None if a.no_big else patch_bench.find_big(a.big)
        if big:
            lines.append(Line(cx, work, "big", *big_trees(work, big)))
        print(f"small: 20 files, patch changes 2; libc6: {LIBC[1]} -> {LIBC[2]}; "
              f"big: {big or '(none)'} with 4 bytes flipped")
        print(f"repeat {repeat}, cycles {cycles}, layers {layers}; setup "
              f"{time.monotonic() - started:.0f} s")
        if "1" in a.parts:
            part1_install(cx, lines, work, repeat)
        if "2" in a.parts:
            part2_activate(cx, lines, work, cycles)
        if "3" in a.parts:
            part3_cold(cx, [ln for ln in lines if ln.tag != "small"], work, repeat)
        if "4" in a.parts:
            part4_layers(cx, work, layers, repeat)
        print(f"\ntotal {time.monotonic() - started:.0f} s")
    finally:
        cx.umount_all()
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
