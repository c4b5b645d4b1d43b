// Driver of tests/bench/stack_bench.py (not a product command): builds a base
// image and a chain of patches, and times lookups and directory reads
// through OpenStack with the first N of them.
//
//   stack_tool build DIR PATCHES   base.cx (DIRS directories of FILES files,
//                                  plus FILES files in the root) and
//                                  p1..pPATCHES.cxpatch in DIR; patch i adds
//                                  a file to the root and to directory i%DIRS
//                                  and removes one file of that directory
//   stack_tool time DIR N PASSES   opens base + p1..pN and prints one line:
//                                  open_ms=.. lookup_ns=.. root_lookup_ns=..
//                                  readdir_ns=..
//                                  (per path component / per entry, best of
//                                  PASSES passes over the same work)
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "builder.h"
#include "format.h"
#include "keys.h"
#include "view.h"

namespace {

using namespace cryptex;

constexpr int kDirs = 100;
constexpr int kFiles = 200;

std::string Name(const char* prefix, int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%04d", prefix, i);
  return buf;
}

SourceNode Node(const std::string& name, uint32_t parent, uint32_t mode) {
  SourceNode n;
  n.name = name;
  n.parent = parent;
  n.mode = mode;
  n.mtime_sec = 1700000000;
  if (S_ISREG(mode)) {
    n.content = std::make_shared<std::string>(name);
    n.size = name.size();
  }
  return n;
}

// A directory node's children (names sorted by the caller), contiguous.
void AddChildren(SourceTree& t, uint32_t dir, const std::vector<SourceNode>& kids) {
  for (const SourceNode& k : kids) {
    t.nodes[dir].children.push_back(static_cast<uint32_t>(t.nodes.size()));
    t.nodes.push_back(k);
    t.nodes.back().parent = dir;
  }
}

SourceTree BaseTree() {
  SourceTree t;
  t.nodes.push_back(Node("", 0, S_IFDIR | 0755));
  std::vector<SourceNode> root;
  for (int d = 0; d < kDirs; ++d) root.push_back(Node(Name("d", d), 0, S_IFDIR | 0755));
  for (int f = 0; f < kFiles; ++f) root.push_back(Node(Name("f", f), 0, S_IFREG | 0644));
  AddChildren(t, 0, root);
  for (int d = 0; d < kDirs; ++d) {
    std::vector<SourceNode> files;
    for (int f = 0; f < kFiles; ++f) files.push_back(Node(Name("f", f), 0, S_IFREG | 0644));
    AddChildren(t, static_cast<uint32_t>(1 + d), files);
  }
  return t;
}

// Patch i: root/p<i>, d<i%kDirs>/p<i>, and a whiteout of d<i%kDirs>/f<i>.
SourceTree PatchTree(int i) {
  SourceTree t;
  t.nodes.push_back(Node("", 0, S_IFDIR | 0755));
  std::vector<SourceNode> root = {Node(Name("d", i % kDirs), 0, S_IFDIR | 0755),
                                  Node(Name("p", i), 0, S_IFREG | 0644)};
  AddChildren(t, 0, root);
  SourceNode wh = Node(Name("f", i % kFiles), 0, S_IFCHR);
  wh.flags = format::kInodeWhiteout;
  AddChildren(t, 1, {wh, Node(Name("p", i), 0, S_IFREG | 0644)});
  return t;
}

int Fail(const Status& st) {
  std::fprintf(stderr, "stack_tool: %s\n", st.ToString().c_str());
  return 1;
}

int Build(const std::string& dir, int patches) {
  auto key = PrivateKey::Generate();
  if (!key.ok()) return Fail(key.status());
  if (Status st = key->SavePair(dir + "/key"); !st.ok()) return Fail(st);
  BuildOptions o;
  o.key = &*key;
  o.output_path = dir + "/base.cx";
  o.manifest.name = "bench";
  auto base = WriteImage(BaseTree(), o);
  if (!base.ok()) return Fail(base.status());
  std::vector<std::string> ids;
  for (int i = 1; i <= patches; ++i) {
    BuildOptions p = o;
    p.kind = format::kKindPatch;
    p.output_path = dir + "/p" + std::to_string(i) + ".cxpatch";
    // Appended: `"p" + std::to_string(i)` makes GCC 12 at -O3 report a
    // false -Wrestrict (GCC bug 105329).
    std::string id(1, 'p');
    id += std::to_string(i);
    p.manifest.patch_id = std::move(id);
    p.manifest.base_root_digest = base->root_hash;
    p.manifest.requires_patches = ids;
    auto r = WriteImage(PatchTree(i), p);
    if (!r.ok()) return Fail(r.status());
    ids.push_back(p.manifest.patch_id);
  }
  return 0;
}

double NowNs() {
  return std::chrono::duration<double, std::nano>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int Time(const std::string& dir, int n, int passes) {
  auto trust = TrustStore::LoadFile(dir + "/key.pub");
  if (!trust.ok()) return Fail(trust.status());
  ImageOptions opts;
  opts.trust = &*trust;
  std::vector<std::string> patches;
  for (int i = 1; i <= n; ++i) patches.push_back(dir + "/p" + std::to_string(i) + ".cxpatch");
  const double t0 = NowNs();
  auto view = OpenStack(dir + "/base.cx", patches, opts);
  if (!view.ok()) return Fail(view.status());
  const double open_ms = (NowNs() - t0) / 1e6;
  const View& v = **view;

  // Lookups: every root entry, and in each directory the same sample of
  // files (merged directories and untouched base ones alike).
  std::vector<std::pair<uint64_t, std::string>> dirs;
  for (int d = 0; d < kDirs; ++d) {
    auto e = v.Lookup(v.root(), Name("d", d));
    if (!e.ok()) return Fail(e.status());
    dirs.emplace_back(e->ino, Name("d", d));
  }
  double best_lookup = 1e300, best_readdir = 1e300, best_root = 1e300;
  for (int pass = 0; pass < passes; ++pass) {
    // The root is merged with 1 layer and with 50: the same structure, more
    // layers under it.
    const double q0 = NowNs();
    for (int f = 0; f < kFiles; ++f) {
      if (!v.Lookup(v.root(), Name("f", f)).ok()) return 1;
    }
    best_root = std::min(best_root, (NowNs() - q0) / kFiles);

    uint64_t lookups = 0;
    const double l0 = NowNs();
    for (int i = 0; i < kDirs; ++i) {
      if (!v.Lookup(v.root(), Name("d", i)).ok()) return 1;
      ++lookups;
    }
    for (const auto& [ino, name] : dirs) {
      for (int f = kFiles / 2; f < kFiles; f += 5) {
        if (!v.Lookup(ino, Name("f", f)).ok()) return 1;
        ++lookups;
      }
    }
    best_lookup = std::min(best_lookup, (NowNs() - l0) / static_cast<double>(lookups));

    uint64_t entries = 0;
    const double r0 = NowNs();
    for (const auto& [ino, name] : dirs) {
      Status st = v.ReadDir(ino, 0, [&](const DirEntry&, uint64_t) {
        ++entries;
        return true;
      });
      if (!st.ok()) return Fail(st);
    }
    Status st = v.ReadDir(v.root(), 0, [&](const DirEntry&, uint64_t) {
      ++entries;
      return true;
    });
    if (!st.ok()) return Fail(st);
    best_readdir = std::min(best_readdir, (NowNs() - r0) / static_cast<double>(entries));
  }
  std::printf("open_ms=%.3f lookup_ns=%.1f root_lookup_ns=%.1f readdir_ns=%.1f\n", open_ms,
              best_lookup, best_root, best_readdir);
  return 0;
}

int Usage() {
  std::fprintf(stderr,
               "usage: stack_tool build DIR PATCHES\n"
               "       stack_tool time DIR N PASSES\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "build") return Build(argv[2], std::stoi(argv[3]));
  if (argc == 5 && std::string(argv[1]) == "time") {
    return Time(argv[2], std::stoi(argv[3]), std::stoi(argv[4]));
  }
  return Usage();
}
