#!/usr/bin/env python3
"""Layer stack: lookup and readdir cost with 1 vs 50 patch layers, same run.

Builds (build/tests/stack_tool build) a base of 100 directories x 200 files
plus 200 files in the root, and 50 patches each touching the root and one
directory (adds a file to both, whites out one file). Then runs
`stack_tool time DIR N PASSES` for N = 1 and N = 50 (and 0, the base alone,
for reference), alternating, REPEAT times. Each run opens the stack and
reports the best of PASSES passes of: a lookup of every directory in the
root and of 40 files in each directory (ns per lookup), and a full readdir of
every directory and the root (ns per entry); and lookups of the 200 root
files alone (the root is merged in every stack: ns per lookup). Prints the medians over the
runs and the ratios 50 layers / 1 layer (target: about 1; merged
directories are served from memory, so more layers can even be cheaper).

usage: stack_bench.py [--tool PATH] [--repeat N] [--passes N] [--layers N]
"""
import argparse, os, re, statistics, subprocess, sys, tempfile


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return p.stdout


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tool", default=os.path.join(here, "..", "..", "build", "tests", "stack_tool"))
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--layers", type=int, default=50)
    args = ap.parse_args()
    if not os.access(args.tool, os.X_OK):
        sys.exit(f"{args.tool}: not built (cmake --build build --target stack_tool)")
    counts = [0, 1, args.layers]
    results = {n: {"open_ms": [], "lookup_ns": [], "root_lookup_ns": [], "readdir_ns": []}
               for n in counts}
    with tempfile.TemporaryDirectory(prefix="stack_bench.") as d:
        run([args.tool, "build", d, str(args.layers)])
        for _ in range(args.repeat):
            for n in counts:
                out = run([args.tool, "time", d, str(n), str(args.passes)])
                for k, v in re.findall(r"(\w+)=([0-9.]+)", out):
                    results[n][k].append(float(v))
    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
    print(f"{'layers':>8} {'open ms':>10} {'lookup ns':>10} {'root lookup ns':>15} "
          f"{'readdir ns/entry':>17}")
    for n in counts:
        m = med[n]
        label = "base" if n == 0 else str(n)
        print(f"{label:>8} {m['open_ms']:>10.2f} {m['lookup_ns']:>10.1f} "
              f"{m['root_lookup_ns']:>15.1f} {m['readdir_ns']:>17.1f}")
    one, many = med[1], med[args.layers]
    print(f"ratio {args.layers}/1 layers: lookup {many['lookup_ns'] / one['lookup_ns']:.2f}, "
          f"root lookup {many['root_lookup_ns'] / one['root_lookup_ns']:.2f}, "
          f"readdir {many['readdir_ns'] / one['readdir_ns']:.2f} "
          f"(medians of {args.repeat} alternating runs)")


if __name__ == "__main__":
    main()
