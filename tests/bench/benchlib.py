"""Helpers shared by the benchmarks in this directory."""
import os

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
