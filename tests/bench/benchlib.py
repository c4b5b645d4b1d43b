"""Helpers shared by the benchmarks in this directory."""
import os
import statistics
import subprocess

def tree_bytes(root, count_links_once):
    """Bytes of the regular files under root. count_links_once: a hard-linked
    file counts once (the content a builder stores); otherwise once per path
    (what `find -type f | xargs cat` reads)."""
    seen, total = set(), 0
    for d, _, files in os.walk(root):
        for f in files:
            st = os.lstat(os.path.join(d, f))
            if (st.st_mode & 0o170000) != 0o100000:
                continue
            if count_links_once:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def med(xs):
    """Median of xs; nan for none."""
    return statistics.median(xs) if xs else float("nan")


def ratio(a, b):
    """a / b; nan when b is 0."""
    return a / b if b else float("nan")


def run(cmd, **kw):
    """stdout of cmd; exits naming the command and its output tails on failure."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}"
                         f"{p.stderr[-2000:]}")
    return p.stdout


def write(path, data):
    """Writes bytes to path (parents made) with a fixed mtime, for reproducible trees."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (1700000000, 1700000000))
