#!/usr/bin/env python3
"""Cost of a large trust store: `cryptex verify` with 1 trusted key vs 10,000.

Builds a one-file image signed by a fresh key, then three trust directories:
only that key's .pub; that key among KEYS-1 other Ed25519 public keys (real
keys, made with python3-cryptography) with arbitrary names ("vendorNNNNN.pub");
and the same keys each named after its key id ("<64 hex>.pub", the layout
keys.h makes a one-file lookup). Runs `cryptex verify -q` against each
directory in rotation REPEAT times (page cache warm: the first round is
discarded) and prints the medians and their ratios to the 1-key case. The
signer's .pub sorts last among the arbitrary names.

usage: trust_bench.py [--keys N] [--repeat N] [--cryptex PATH]
"""
import argparse, hashlib, os, shutil, statistics, subprocess, tempfile, time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def timed(cmd):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def key_id(pub):
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def write_pub(pub, path):
    with open(path, "wb") as f:
        f.write(pub.public_bytes(serialization.Encoding.PEM,
                                 serialization.PublicFormat.SubjectPublicKeyInfo))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--cryptex", default=os.path.join(here, "../../build/cli/cryptex"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="cx-trust-bench.")
    try:
        key = os.path.join(work, "signer")
        subprocess.run([a.cryptex, "keygen", "-o", key], check=True, stdout=subprocess.DEVNULL)
        src = os.path.join(work, "src")
        os.mkdir(src)
        with open(os.path.join(src, "f"), "w") as f:
            f.write("hello\n")
        image = os.path.join(work, "img.cryptex")
        subprocess.run([a.cryptex, "build", src, "-o", image, "--key", key, "--name", "bench",
                        "--version", "1", "-q"], check=True)
        one, named, by_id = (os.path.join(work, n) for n in ("one", "named", "by_id"))
        with open(key + ".pub", "rb") as f:
            signer = serialization.load_pem_public_key(f.read())
        for d in (one, named, by_id):
            os.mkdir(d, 0o755)
        shutil.copy(key + ".pub", os.path.join(one, "signer.pub"))
        shutil.copy(key + ".pub", os.path.join(named, "zz-signer.pub"))
        shutil.copy(key + ".pub", os.path.join(by_id, key_id(signer) + ".pub"))
        for i in range(a.keys - 1):
            pub = Ed25519PrivateKey.generate().public_key()
            write_pub(pub, os.path.join(named, f"vendor{i:05d}.pub"))
            write_pub(pub, os.path.join(by_id, key_id(pub) + ".pub"))

        dirs = [one, named, by_id]
        times = {d: [] for d in dirs}
        for i in range(a.repeat + 1):
            for d in dirs[i % 3:] + dirs[:i % 3]:  # rotate the order
                t = timed([a.cryptex, "verify", "-q", image, "--trust", d])
                if i > 0:  # the first round warms the page cache
                    times[d].append(t)
        med = {d: statistics.median(times[d]) * 1000 for d in dirs}
        print(f"cryptex verify -q, {a.repeat} runs each in rotation (medians, warm cache)")
        print(f"{'1 trusted key':36} {med[one]:9.1f} ms")
        print(f"{f'{a.keys} keys, arbitrary names':36} {med[named]:9.1f} ms"
              f"  ({med[named] / med[one]:.2f}x)")
        print(f"{f'{a.keys} keys, named by key id':36} {med[by_id]:9.1f} ms"
              f"  ({med[by_id] / med[one]:.2f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
