#!/usr/bin/env python3
"""cryptex patches vs bsdiff and zstd --patch-from on real Debian updates.

The whole-patch sibling of delta_bench.py. The update pairs (pinned, the
same as tests/oracle/debian_patch_test.cc) are fetched with `apt-get download
PKG=VERSION` and unpacked with dpkg-deb -x into an OLD and a NEW tree:
  curl + libcurl4  7.88.1-10+deb12u5 -> 7.88.1-10+deb12u15
  libc6            2.36-9+deb12u7    -> 2.36-9+deb12u14

1. Per changed ELF file, REPEAT runs each, sides alternating, under
   /usr/bin/time -v (medians):
     codec   build/tests/delta_tool encode OLD NEW OUT (the codec mkpatch uses)
     bsdiff  bsdiff OLD NEW OUT
     zstd    zstd --patch-from=OLD -19 --long=27 NEW -o OUT
   delta bytes, cpu s, wall s, peak RSS; totals and ratios.
2. When `cryptex mkpatch` exists in the build directory (switched on
   automatically): base = cryptex build OLD, then `cryptex mkpatch --from base
   --to NEW` REPEAT times alternating with bsdiff over all changed ELF files
   (their summed time, their largest RSS). Per-file bytes come from `cryptex
   inspect --json PATCH`. The .cxpatch must be <= its deltas + 16 KiB: its
   data region (every delta and plain file as stored, compressed: inspect's
   stored_bytes) plus at most 16 KiB of container, which is split into the
   per-file tables (the packed metadata of the compact layout) and the
   framing (header, manifest, padding, tree, superblock and signature).
3. Large file: the first >= 90 MiB library found (libLLVM-14.so.1 from
   clang-14, else libLLVM-15; --big to choose) copied with 4 bytes flipped:
   delta_tool (and, with mkpatch, a one-file tree patched) -> delta bytes,
   wall, peak RSS; then bsdiff on the same pair once (--no-big-bsdiff to
   skip: about a minute), for mkpatch/bsdiff time and RSS on a large file.
4. When `cryptex cat` takes --patch: cold read (page cache of the images
   dropped with posix_fadvise before each run) of the largest changed file
   through `cryptex cat BASE --patch PATCH PATH` vs `cryptex cat NEWBASE PATH`
   (NEWBASE = cryptex build NEW). Target <= 1.5x.

usage: patch_bench.py [--build DIR] [--repeat N] [--workdir DIR] [--big PATH]
                      [--no-big] [--no-big-bsdiff] [--parts 1234]
--parts: the parts to run (default all; 2 needs 1), e.g. --parts 4 for the
cold read alone.
Needs: bsdiff, zstd, time (Debian), network access to the
Debian archive for apt-get download, a built build/cli/cryptex and
build/tests/delta_tool.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import med, ratio  # noqa: E402
import delta_bench  # noqa: E402  (fetch, changed_elf_pairs, run_timed, bench_pair, big_case)

PAIRS = [("curl+libcurl4",
          [("curl", "7.88.1-10+deb12u5", "7.88.1-10+deb12u15"),
           ("libcurl4", "7.88.1-10+deb12u5", "7.88.1-10+deb12u15")]),
         ("libc6", [("libc6", "2.36-9+deb12u7", "2.36-9+deb12u14")])]
SLACK = 16 << 10  # a .cxpatch may exceed its data region by this much (the container)
EPOCH = "1700000000"
SHOWN = 12  # per-file rows printed (the largest files); the rest are summed


def unpack_pair(pkgs, work, tag):
    """OLD and NEW trees holding every package of the pair, unpacked once."""
    trees = []
    for side in (1, 2):
        d = os.path.join(work, f"{tag}.{'old' if side == 1 else 'new'}")
        if not os.path.isdir(d):
            os.makedirs(d + ".part", exist_ok=True)
            for pkg in pkgs:
                src = delta_bench.fetch(pkg[0], pkg[side], work)
                subprocess.run(["cp", "-a", src + "/.", d + ".part"], check=True)
            os.rename(d + ".part", d)
        trees.append(d)
    return trees


class Cryptex:
    """The cryptex binary of a build directory, a key and a trust directory."""

    def __init__(self, build, work):
        self.bin = os.path.join(build, "cli", "cryptex")
        self.key = os.path.join(work, "bench.key")
        self.trust = os.path.join(work, "trust")
        if not os.path.exists(self.key):
            subprocess.run([self.bin, "keygen", "-o", self.key], check=True,
                           stdout=subprocess.DEVNULL)
            os.makedirs(self.trust, exist_ok=True)
            shutil.copy(self.key + ".pub", os.path.join(self.trust, "bench.pub"))

    def help(self, sub):
        p = subprocess.run([self.bin, sub, "--help"], capture_output=True, text=True)
        return p.returncode, p.stdout + p.stderr

    def has_mkpatch(self):
        return self.help("mkpatch")[0] == 0

    def cat_takes_patch(self):
        code, text = self.help("cat")
        return code == 0 and "--patch" in text

    def build_cmd(self, src, out):
        return [self.bin, "build", src, "-o", out, "--key", self.key, "--name",
                "org.debian.bench", "--version", "1", "--epoch", EPOCH, "-q"]

    def mkpatch_cmd(self, base, new, out, pid, on=()):
        cmd = [self.bin, "mkpatch", "--from", base]
        for p in on:
            cmd += ["--on", p]
        cmd += ["--to", new, "-o", out, "--key", self.key, "--id", pid, "--epoch", EPOCH]
        if "--trust" in self.help("mkpatch")[1]:
            cmd += ["--trust", self.trust]
        return cmd

    def build(self, src, out):
        if os.path.exists(out):
            os.unlink(out)
        subprocess.run(self.build_cmd(src, out), check=True)

    def inspect(self, image):
        p = subprocess.run([self.bin, "inspect", "--json", image, "--trust", self.trust],
                           capture_output=True, text=True, check=True)
        return json.loads(p.stdout)


BYTES_KEYS = ("stored_bytes", "stored_size", "delta_bytes", "bytes")
SHIPS_KEYS = ("ships", "shipped_as", "how", "content", "kind", "source_kind")


def per_file(doc):
    """{path: (ships, bytes)} from any object of an inspect --json document that
    has a string "path" and one of BYTES_KEYS (layout beyond that not assumed)."""
    out = {}

    def walk(v):
        if isinstance(v, list):
            for e in v:
                walk(e)
        elif isinstance(v, dict):
            path = v.get("path")
            if isinstance(path, str):
                b = next((v[k] for k in BYTES_KEYS if isinstance(v.get(k), int)), None)
                if b is not None:
                    ships = next((str(v[k]) for k in SHIPS_KEYS if k in v), "?")
                    out[path.lstrip("/")] = (ships, b)
            for e in v.values():
                walk(e)
    walk(doc)
    return out


def part1_codec(pairs, tool, work, repeat):
    """delta_tool vs bsdiff vs zstd per changed ELF file. Returns the rows."""
    rows = []
    for tag, old, new in pairs:
        for rel, fa, fb in delta_bench.changed_elf_pairs(old, new):
            r = delta_bench.bench_pair(tool, fa, fb, work, repeat)
            rows.append((tag, rel, os.path.getsize(fb), r))
    print(f"\n== 1. per changed ELF file: codec (delta_tool) vs bsdiff vs zstd --patch-from "
          f"-19 --long=27\n{repeat} alternating runs per tool and file; medians; cpu = user+sys s")
    print(f"{'file':40} {'new KiB':>8} {'codec':>8} {'bsdiff':>8} {'zstd':>8} "
          f"{'c/bsd':>6} {'c/zstd':>6} {'cpu c/b':>8} {'rss c/b':>8}")
    totals = {k: [0, 0.0, 0.0, 0] for k in ("ours", "bsdiff", "zstd")}
    shown = {id(x) for x in sorted(rows, key=lambda x: -x[2])[:SHOWN]}
    rest = {k: 0 for k in ("n", "size", "ours", "bsdiff", "zstd")}
    for row in rows:
        tag, rel, size, r = row
        o, b, z = r["ours"], r["bsdiff"], r["zstd"]
        if id(row) in shown:
            label = f"{tag.split('+')[0]} {os.path.basename(rel)}"
            print(f"{label[:40]:40} {size/1024:8.0f} {o.size:8} {b.size:8} {z.size:8} "
                  f"{ratio(o.size, b.size):6.2f} {ratio(o.size, z.size):6.2f} "
                  f"{ratio(o.med()[0], b.med()[0]):8.2f} {ratio(o.med()[2], b.med()[2]):8.2f}")
        else:
            rest["n"] += 1
            rest["size"] += size
            for k in ("ours", "bsdiff", "zstd"):
                rest[k] += r[k].size
        for k, s in r.items():
            cpu, wall, rss = s.med()
            t = totals[k]
            t[0] += s.size
            t[1] += cpu
            t[2] += wall
            t[3] = max(t[3], rss)
    if rest["n"]:
        label = f"(the {rest['n']} smaller files, summed)"
        print(f"{label:40} {rest['size']/1024:8.0f} {rest['ours']:8} {rest['bsdiff']:8} "
              f"{rest['zstd']:8} {ratio(rest['ours'], rest['bsdiff']):6.2f} "
              f"{ratio(rest['ours'], rest['zstd']):6.2f}")
    print(f"\ntotal over {len(rows)} changed ELF files:")
    print(f"{'':8} {'bytes':>10} {'cpu s':>8} {'wall s':>8} {'peak RSS MiB':>13}")
    for k, name in (("ours", "codec"), ("bsdiff", "bsdiff"), ("zstd", "zstd")):
        t = totals[k]
        print(f"{name:8} {t[0]:10} {t[1]:8.2f} {t[2]:8.2f} {t[3]/1024:13.1f}")
    o, b, z = totals["ours"], totals["bsdiff"], totals["zstd"]
    print(f"codec/bsdiff: bytes {ratio(o[0], b[0]):.2f} (target <= 0.80), "
          f"cpu {ratio(o[1], b[1]):.2f}, wall {ratio(o[2], b[2]):.2f}, "
          f"peak RSS {ratio(o[3], b[3]):.2f}")
    print(f"codec/zstd:   bytes {ratio(o[0], z[0]):.2f}, cpu {ratio(o[1], z[1]):.2f}, "
          f"peak RSS {ratio(o[3], z[3]):.2f}")
    return rows


def part2_mkpatch(cx, pairs, rows, work, repeat):
    """cryptex mkpatch on the trees vs bsdiff over the same changed ELF files."""
    print(f"\n== 2. cryptex mkpatch (whole tree) vs bsdiff (every changed ELF file), "
          f"{repeat} alternating runs, medians")
    print(f"{'pair':14} {'patch B':>9} {'data B':>9} {'contnr':>7} {'tables':>7} "
          f"{'framing':>7} {'bsdiff B':>9} {'mk wall':>8} {'bsd wall':>8} {'mk RSS':>7} "
          f"{'bsd RSS':>8}")
    grand = {"patch": 0, "deltas": 0, "elf": 0, "bsdiff": 0, "mk_wall": 0.0, "bsd_wall": 0.0,
             "mk_rss": 0, "bsd_rss": 0}
    for tag, old, new in pairs:
        base = os.path.join(work, f"{tag}.base.cryptex")
        cx.build(old, base)
        patch = os.path.join(work, f"{tag}.cxpatch")
        elf = [(rel, os.path.join(old, rel), os.path.join(new, rel))
               for t, rel, _, _ in rows if t == tag]
        mk = {"wall": [], "rss": []}
        bsd = {"wall": [], "rss": []}
        bsd_bytes = 0

        def run_mkpatch():
            if os.path.exists(patch):
                os.unlink(patch)
            _, wall, rss = delta_bench.run_timed(cx.mkpatch_cmd(base, new, patch, f"bench-{tag}"))
            mk["wall"].append(wall)
            mk["rss"].append(rss)

        def run_bsdiff():
            nonlocal bsd_bytes
            wall_sum, rss_max, total = 0.0, 0, 0
            out = os.path.join(work, "bench.bsdiff")
            for _, fa, fb in elf:
                _, wall, rss = delta_bench.run_timed(["bsdiff", fa, fb, out])
                wall_sum += wall
                rss_max = max(rss_max, rss)
                total += os.path.getsize(out)
            bsd["wall"].append(wall_sum)
            bsd["rss"].append(rss_max)
            bsd_bytes = total

        for i in range(repeat):
            for f in ((run_mkpatch, run_bsdiff) if i % 2 == 0 else (run_bsdiff, run_mkpatch)):
                f()
        doc = cx.inspect(patch)
        files = per_file(doc)
        # What ships content: the data region, as stored (deltas, and plain
        # files compressed in their frames), not the per-file sum (which
        # counts a plain file at its raw size).
        deltas = doc["stored_bytes"]
        tables = (doc.get("packed_metadata") or {}).get("stored_bytes", 0)
        elf_bytes = sum(files.get(rel, ("", 0))[1] for rel, _, _ in elf)
        size = os.path.getsize(patch)
        container = size - deltas
        print(f"{tag:14} {size:9} {deltas:9} {container:7} {tables:7} {container - tables:7} "
              f"{bsd_bytes:9} {med(mk['wall']):8.2f} {med(bsd['wall']):8.2f} "
              f"{med(mk['rss'])/1024:7.1f} {med(bsd['rss'])/1024:8.1f}"
              f"{'' if container <= SLACK else '  OVER data + 16 KiB'}")
        if container > SLACK:
            n = max(1, doc.get("files", 0))
            print(f"   (framing alone {container - tables} B; the tables hold {len(files)} "
                  f"entries, {tables / n:.0f} B per file, most of it each file's "
                  "32-byte signed target digest)")
        if not files:
            print("   (inspect --json lists no object with 'path' and one of "
                  f"{BYTES_KEYS}: per-file bytes unknown)")
        codec = {rel: r["ours"].size for t, rel, _, r in rows if t == tag}
        bsdf = {rel: r["bsdiff"].size for t, rel, _, r in rows if t == tag}
        print(f"   {'changed ELF file (largest ' + str(SHOWN) + ')':52} {'ships':>10} "
              f"{'mkpatch':>9} {'codec':>8} {'bsdiff':>8}")
        for rel, _, fb in sorted(elf, key=lambda e: -os.path.getsize(e[2]))[:SHOWN]:
            ships, b = files.get(rel, ("(not in inspect --json)", -1))
            print(f"   {rel[-52:]:52} {ships[:10]:>10} {b:9} {codec[rel]:8} {bsdf[rel]:8}")
        print(f"   {'all ' + str(len(elf)) + ' changed ELF files':52} {'':>10} {elf_bytes:9} "
              f"{sum(codec.values()):8} {sum(bsdf.values()):8}")
        grand["patch"] += size
        grand["deltas"] += deltas
        grand["elf"] += elf_bytes
        grand["bsdiff"] += bsd_bytes
        grand["mk_wall"] += med(mk["wall"])
        grand["bsd_wall"] += med(bsd["wall"])
        grand["mk_rss"] = max(grand["mk_rss"], med(mk["rss"]))
        grand["bsd_rss"] = max(grand["bsd_rss"], med(bsd["rss"]))
    g = grand
    print(f"total: .cxpatch {g['patch']} B, data regions {g['deltas']} B, "
          f"the changed ELF files {g['elf']} B, bsdiff of those {g['bsdiff']} B")
    print(f"mkpatch/bsdiff: ELF delta bytes {ratio(g['elf'], g['bsdiff']):.2f} (target <= 0.80), "
          f"whole .cxpatch {ratio(g['patch'], g['bsdiff']):.2f}, "
          f"wall {ratio(g['mk_wall'], g['bsd_wall']):.3f} (target <= 0.25; {g['mk_wall']:.3f} s against {g['bsd_wall']:.3f} s), "
          f"peak RSS {ratio(g['mk_rss'], g['bsd_rss']):.2f} (target <= 0.25)")


def find_big(big):
    if big:
        return big
    return next((p for p in delta_bench.BIG_CANDIDATES
                 if os.path.isfile(p) and os.path.getsize(p) >= 90 << 20), None)


def part3_big(cx, tool, work, big, repeat, mkpatch, big_bsdiff):
    src = find_big(big)
    size = os.path.getsize(src) if src else 90 << 20
    print("\n== 3. large file, 4 bytes flipped (targets: delta < 1 KiB, < 2 s, < 200 MiB RSS)")
    delta_bench.big_case(tool, work, src, size, repeat)
    if not mkpatch:
        return
    old, new = os.path.join(work, "big.old"), os.path.join(work, "big.new")
    for d in (old, new):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    shutil.copy(src, os.path.join(old, "big.so"))
    data = bytearray(open(src, "rb").read())
    for off in (4097, len(data) // 3, len(data) // 2 + 12345, len(data) - 2):
        data[off] ^= 0x5A
    with open(os.path.join(new, "big.so"), "wb") as f:
        f.write(data)
    shutil.copystat(os.path.join(old, "big.so"), os.path.join(new, "big.so"))
    base, patch = os.path.join(work, "big.cryptex"), os.path.join(work, "big.cxpatch")
    cx.build(old, base)
    walls, rsss = [], []
    for _ in range(repeat):
        if os.path.exists(patch):
            os.unlink(patch)
        _, wall, rss = delta_bench.run_timed(cx.mkpatch_cmd(base, new, patch, "bench-big"))
        walls.append(wall)
        rsss.append(rss)
    files = per_file(cx.inspect(patch))
    ships, b = files.get("big.so", ("?", -1))
    print(f"  mkpatch: .cxpatch {os.path.getsize(patch)} B, big.so {ships} {b} B "
          f"(target < 1024), wall {med(walls):.2f} s (target < 2), "
          f"peak RSS {med(rsss)/1024:.1f} MiB (target < 200)")
    if big_bsdiff:
        # The same file through bsdiff, once (about a minute and 1 GB here):
        # the 1/4-of-bsdiff time and memory targets on a large input.
        out = os.path.join(work, "big.bsdiff")
        _, bwall, brss = delta_bench.run_timed(
            ["bsdiff", os.path.join(old, "big.so"), os.path.join(new, "big.so"), out])
        bbytes = os.path.getsize(out)
        os.unlink(out)
        print(f"  bsdiff:  patch {bbytes} B, wall {bwall:.2f} s, peak RSS {brss/1024:.1f} MiB")
        print(f"  mkpatch/bsdiff on this file: wall {ratio(med(walls), bwall):.3f}, "
              f"peak RSS {ratio(med(rsss), brss):.3f} (targets <= 0.25)")
    for d in (old, new):
        shutil.rmtree(d)
    for p in (base, patch):
        os.unlink(p)


def drop_cache(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def part4_cold_read(cx, pairs, rows, work, repeat):
    """Cold `cryptex cat` of the largest changed file: patched vs plain base."""
    print(f"\n== 4. cold read via cryptex cat, {repeat} alternating runs, medians "
          f"(target patched/plain <= 1.5)")
    for tag, old, new in pairs:
        cand = [(size, rel) for t, rel, size, _ in rows if t == tag]
        if not cand:
            continue
        _, rel = max(cand)
        base = os.path.join(work, f"{tag}.base.cryptex")
        patch = os.path.join(work, f"{tag}.cxpatch")
        plain = os.path.join(work, f"{tag}.new.cryptex")
        if not os.path.exists(base):  # part 2 skipped
            cx.build(old, base)
        if not os.path.exists(patch):
            subprocess.run(cx.mkpatch_cmd(base, new, patch, f"bench-{tag}"), check=True)
        cx.build(new, plain)
        want = open(os.path.join(new, rel), "rb").read()
        sides = {"patched": [cx.bin, "cat", base, "--patch", patch, rel, "--trust", cx.trust],
                 "plain": [cx.bin, "cat", plain, rel, "--trust", cx.trust]}
        walls = {k: [] for k in sides}
        for i in range(repeat):
            order = list(sides) if i % 2 == 0 else list(reversed(list(sides)))
            for k in order:
                drop_cache([base, patch, plain])
                t0 = time.monotonic()
                p = subprocess.run(sides[k], capture_output=True)
                walls[k].append(time.monotonic() - t0)
                if p.returncode != 0 or p.stdout != want:
                    sys.exit(f"cryptex cat ({k}) of {rel}: exit {p.returncode}, "
                             f"{'same' if p.stdout == want else 'different'} bytes\n"
                             f"{p.stderr.decode(errors='replace')[-2000:]}")
        a, b = med(walls["patched"]), med(walls["plain"])
        print(f"  {tag:14} {rel} ({len(want)/1024:.0f} KiB): patched {a*1000:.1f} ms, "
              f"plain {b*1000:.1f} ms, ratio {ratio(a, b):.2f}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(here, "../../build"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", help="kept afterwards (caches the .debs and trees)")
    ap.add_argument("--big", help="a file of 90 MiB or more for part 3")
    ap.add_argument("--no-big", action="store_true")
    ap.add_argument("--no-big-bsdiff", action="store_true",
                    help="skip bsdiff on the large file (about a minute)")
    ap.add_argument("--parts", default="1234", help="parts to run (2 needs 1)")
    a = ap.parse_args()
    if "2" in a.parts and "1" not in a.parts:
        sys.exit("--parts: part 2 compares with part 1's codec sizes: add 1")
    build = os.path.abspath(a.build)
    tool = os.path.join(build, "tests", "delta_tool")
    for need in (tool, os.path.join(build, "cli", "cryptex")):
        if not os.access(need, os.X_OK):
            sys.exit(f"{need} is missing: build the cryptex and delta_tool targets")
    work = os.path.abspath(a.workdir or tempfile.mkdtemp(prefix="cx-patch-bench."))
    os.makedirs(work, exist_ok=True)
    try:
        cx = Cryptex(build, work)
        mkpatch = cx.has_mkpatch()
        pairs = []
        for tag, pkgs in PAIRS:
            old, new = unpack_pair(pkgs, work, tag)
            pairs.append((tag, old, new))
            print(f"{tag}: " + ", ".join(f"{p} {o} -> {n}" for p, o, n in pkgs))
        print(f"cryptex mkpatch in {build}: {'yes' if mkpatch else 'no (parts 2-4 skipped)'}")
        if "1" in a.parts:
            rows = part1_codec(pairs, tool, work, a.repeat)
        else:  # the changed files only (part 4 reads the largest)
            rows = [(tag, rel, os.path.getsize(fb), None) for tag, old, new in pairs
                    for rel, _, fb in delta_bench.changed_elf_pairs(old, new)]
        if mkpatch and "2" in a.parts:
            part2_mkpatch(cx, pairs, rows, work, a.repeat)
        if not a.no_big and "3" in a.parts:
            part3_big(cx, tool, work, a.big, a.repeat, mkpatch, not a.no_big_bsdiff)
        if "4" not in a.parts:
            pass
        elif mkpatch and cx.cat_takes_patch():
            part4_cold_read(cx, pairs, rows, work, max(a.repeat, 5))
        elif mkpatch:
            print("\n== 4. skipped: `cryptex cat --help` offers no --patch")
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
