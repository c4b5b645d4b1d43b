// The View interface over every way of producing one target tree: a single
// base image (ImageView), and a base with 1, 2 and 50 patches stacked on it
// (OpenStack). The typed suite asserts the same expectations on each; the
// non-typed tests cover what only a stack can get wrong (binding refusals,
// tampered deltas, node id stability, random-access cost).
#include "view.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "builder.h"
#include "delta.h"
#include "format.h"
#include "fsverity.h"
#include "layer_stack.h"
#include "patched_file.h"
#include "test_util.h"

namespace cryptex {
namespace {

// "p1", "p2", ...: the id of the I-th patch of a stack. Appends rather than
// writing `"p" + std::to_string(i)`: GCC 12 at -O3 reports a false
// -Wrestrict in that operator+ (GCC bug 105329), which fails the Release
// -Werror build (scripts/ci-release.sh).
std::string PatchId(size_t i) {
  std::string id = "p";
  id += std::to_string(i);
  return id;
}

using test::TempDir;

constexpr uint32_t kChunkLog2 = 14;    // 16 KiB image chunks: deltas span several
constexpr uint32_t kSegmentLog2 = 14;  // 16 KiB delta segments

// ---- an in-memory tree, and a patch maker (the test's own differ) ----------

struct TNode {
  uint32_t mode = S_IFDIR | 0755;
  uint32_t uid = 0, gid = 0;
  int64_t mtime = 1000;
  uint32_t nsec = 0;
  std::string data;                                         // regular: content; symlink: target
  std::vector<std::pair<std::string, std::string>> xattrs;  // sorted
  std::map<std::string, TNode> kids;                        // std::string order is memcmp order
  bool opaque_hint = false;  // target trees: the patch makes this dir opaque
  // Patch trees only.
  uint32_t flags = 0;
  std::string source;  // lower path of a sourced file
  Digest digest{};     // target digest of a sourced file
  uint64_t size = 0;   // target size of a sourced file
};

TNode Dir(uint32_t perm = 0755, int64_t mtime = 1000) {
  TNode n;
  n.mode = S_IFDIR | perm;
  n.mtime = mtime;
  return n;
}
TNode Reg(std::string data, uint32_t perm = 0644) {
  TNode n;
  n.mode = S_IFREG | perm;
  n.data = std::move(data);
  n.mtime = 2000;
  n.nsec = 5;
  return n;
}
TNode Sym(std::string target) {
  TNode n;
  n.mode = S_IFLNK | 0777;
  n.data = std::move(target);
  return n;
}
TNode Whiteout() {
  TNode n;
  n.mode = S_IFCHR;
  n.flags = format::kInodeWhiteout;
  return n;
}

bool IsDir(const TNode& n) { return S_ISDIR(n.mode); }
bool IsReg(const TNode& n) { return S_ISREG(n.mode); }

bool Same(const TNode& a, const TNode& b) {
  if (a.mode != b.mode || a.uid != b.uid || a.gid != b.gid || a.mtime != b.mtime ||
      a.nsec != b.nsec || a.data != b.data || a.xattrs != b.xattrs ||
      a.kids.size() != b.kids.size() || a.opaque_hint != b.opaque_hint) {
    return false;
  }
  for (const auto& [name, k] : a.kids) {
    auto it = b.kids.find(name);
    if (it == b.kids.end() || !Same(k, it->second)) return false;
  }
  return true;
}

// Path ("a/b") of a regular file of `root` holding `data`, or "".
std::string FindContent(const TNode& dir, const std::string& data, const std::string& prefix) {
  for (const auto& [name, k] : dir.kids) {
    const std::string p = prefix.empty() ? name : prefix + "/" + name;
    if (IsReg(k) && k.data == data) return p;
    if (IsDir(k)) {
      std::string found = FindContent(k, data, p);
      if (!found.empty()) return found;
    }
  }
  return "";
}

TNode PatchFile(const TNode* lower, const TNode& target, const TNode& lower_root,
                const std::string& path) {
  TNode p = target;
  const std::string moved = target.data.empty() ? "" : FindContent(lower_root, target.data, "");
  if (lower && IsReg(*lower) && lower->data == target.data) {
    p.flags = format::kInodeLowerContent;  // metadata-only change
    p.source = path;
  } else if (!moved.empty()) {
    p.flags = format::kInodeLowerContent;  // moved or copied
    p.source = moved;
  } else if (lower && IsReg(*lower) && target.data.size() >= 8192) {
    DeltaOptions o;
    o.segment_log2 = kSegmentLog2;
    o.zstd_level = 3;
    o.threads = 1;
    auto d =
        EncodeDelta(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(lower->data.data()),
                                             lower->data.size()),
                    std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(target.data.data()),
                                             target.data.size()),
                    o);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    p.flags = format::kInodeDelta;
    p.source = path;
    p.data.assign(d->begin(), d->end());  // the stored bytes: the delta
  } else {
    return p;  // stored whole
  }
  if (p.flags & format::kInodeLowerContent) p.data.clear();
  p.digest = FsVerityDigest(target.data.data(), target.data.size());
  p.size = target.data.size();
  return p;
}

// The patch directory that turns `lower` (a directory, or null for none)
// into `target`.
TNode PatchDir(const TNode* lower, const TNode& target, const TNode& lower_root,
               const std::string& path) {
  TNode p = target;
  p.kids.clear();
  p.opaque_hint = false;
  if (target.opaque_hint && lower) {
    p.flags = format::kInodeOpaque;
    lower = nullptr;
  }
  if (lower) {
    for (const auto& [name, k] : lower->kids) {
      if (!target.kids.count(name)) p.kids[name] = Whiteout();
    }
  }
  for (const auto& [name, t] : target.kids) {
    const std::string cp = path.empty() ? name : path + "/" + name;
    const TNode* l = nullptr;
    if (lower) {
      auto it = lower->kids.find(name);
      if (it != lower->kids.end()) l = &it->second;
    }
    if (l && Same(*l, t)) continue;
    if (IsDir(t)) {
      p.kids[name] = PatchDir(l && IsDir(*l) ? l : nullptr, t, lower_root, cp);
    } else if (IsReg(t)) {
      p.kids[name] = PatchFile(l, t, lower_root, cp);
    } else {
      p.kids[name] = t;
    }
  }
  return p;
}

SourceNode ToSourceNode(const std::string& name, const TNode& n, uint32_t parent) {
  SourceNode s;
  s.name = name;
  s.parent = parent;
  s.mode = n.mode;
  s.uid = n.uid;
  s.gid = n.gid;
  s.mtime_sec = n.mtime;
  s.mtime_nsec = n.nsec;
  s.flags = n.flags;
  s.xattrs = n.xattrs;
  if (S_ISLNK(n.mode)) s.symlink_target = n.data;
  if (IsReg(n)) {
    s.size = n.data.size();
    if (n.flags & (format::kInodeLowerContent | format::kInodeDelta)) {
      s.size = n.size;
      s.source_path = n.source;
      s.content_digest = n.digest;
    }
    if (!(n.flags & format::kInodeLowerContent)) s.content = std::make_shared<std::string>(n.data);
  }
  return s;
}

// Children contiguous, directories depth first (parent < child).
void AddKids(SourceTree& t, const TNode& n, uint32_t idx) {
  std::vector<std::pair<uint32_t, const TNode*>> dirs;
  for (const auto& [name, k] : n.kids) {
    const auto ci = static_cast<uint32_t>(t.nodes.size());
    t.nodes.push_back(ToSourceNode(name, k, idx));
    t.nodes[idx].children.push_back(ci);
    if (IsDir(k)) dirs.emplace_back(ci, &k);
  }
  for (const auto& [ci, k] : dirs) AddKids(t, *k, ci);
}

SourceTree ToSourceTree(const TNode& root) {
  SourceTree t;
  t.nodes.push_back(ToSourceNode("", root, 0));
  AddKids(t, root, 0);
  return t;
}

// Images of a chain of trees: chain[0] sealed as the base, chain[i] as
// patch "p<i>" turning chain[i-1] into chain[i].
struct Stack {
  std::string base;
  std::vector<std::string> patches;
  Digest base_root{};
};

class Builder {
 public:
  explicit Builder(const std::string& dir) : dir_(dir) {
    auto key = PrivateKey::Generate();
    EXPECT_TRUE(key.ok());
    key_ = std::make_unique<PrivateKey>(std::move(key).value());
    EXPECT_TRUE(key_->SavePair(dir + "/key").ok());
    auto trust = TrustStore::LoadFile(dir + "/key.pub");
    EXPECT_TRUE(trust.ok());
    trust_ = std::make_unique<TrustStore>(std::move(trust).value());
    opts_.trust = trust_.get();
  }

  // Seals `tree`; returns its root hash.
  Digest Seal(const TNode& tree, const std::string& out, uint32_t kind, const Manifest& m) {
    BuildOptions o;
    o.output_path = out;
    o.key = key_.get();
    o.manifest = m;
    o.kind = kind;
    o.zstd_level = 3;
    o.chunk_log2 = kChunkLog2;
    o.threads = 1;
    auto st = WriteImage(ToSourceTree(tree), o);
    EXPECT_TRUE(st.ok()) << out << ": " << st.status().ToString();
    return st.ok() ? st->root_hash : Digest{};
  }

  Digest SealBase(const TNode& tree, const std::string& name) {
    Manifest m;
    m.name = "base";
    return Seal(tree, dir_ + "/" + name, format::kKindBase, m);
  }

  // Patch `id` turning `lower` into `target`, for `base_root` and `required`.
  std::string SealPatch(const TNode& lower, const TNode& target, const std::string& name,
                        const std::string& id, const Digest& base_root,
                        const std::vector<std::string>& required) {
    Manifest m;
    m.name = "patch";
    m.patch_id = id;
    m.base_root_digest = base_root;
    m.requires_patches = required;
    const std::string out = dir_ + "/" + name;
    Seal(PatchDir(&lower, target, lower, ""), out, format::kKindPatch, m);
    return out;
  }

  Stack SealChain(const std::vector<TNode>& chain, const std::string& tag) {
    Stack s;
    s.base = dir_ + "/" + tag + "-base.cx";
    s.base_root = SealBase(chain[0], tag + "-base.cx");
    std::vector<std::string> ids;
    for (size_t i = 1; i < chain.size(); ++i) {
      const std::string id = PatchId(i);
      s.patches.push_back(
          SealPatch(chain[i - 1], chain[i], tag + "-" + id + ".cxpatch", id, s.base_root, ids));
      ids.push_back(id);
    }
    return s;
  }

  const ImageOptions& opts() const { return opts_; }
  Result<std::unique_ptr<View>> Open(const Stack& s) const {
    return OpenStack(s.base, s.patches, opts_);
  }

 private:
  std::string dir_;
  std::unique_ptr<PrivateKey> key_;
  std::unique_ptr<TrustStore> trust_;
  ImageOptions opts_;
};

// ---- the trees -----------------------------------------------------------------

std::string Bytes(size_t n, uint64_t seed) { return test::RandomBytes(n, seed); }

// A multi-segment file and its successive versions: the middle one changes
// a few bytes, the target also inserts a segment-aligned random run.
std::string ToolV0() { return Bytes(300 * 1024 + 123, 1); }
std::string ToolV1() {
  std::string s = ToolV0();
  s[5] ^= 1;
  s[100000] ^= 0x5a;
  return s;
}
std::string ToolV2() {
  std::string s = ToolV1();
  s.insert(128 * 1024, Bytes(32 * 1024, 2));
  s[250000] ^= 0x33;
  s += "tail";
  return s;
}

std::string Moved() {
  std::string s;
  for (int i = 0; i < 100; ++i) s += "moved content " + std::to_string(i) + "\n";
  return s;
}

TNode BaseTree() {
  TNode r = Dir(0755, 100);
  r.xattrs = {{"user.root", "old"}};
  TNode& bin = r.kids["bin"] = Dir();
  bin.kids["tool"] = Reg(ToolV0(), 0755);
  bin.kids["old-name"] = Reg(Moved());
  bin.kids["script"] = Reg("#!/bin/sh\necho hi\n", 0644);
  TNode& etc = r.kids["etc"] = Dir();
  etc.kids["conf"] = Reg("a=1\n");
  etc.kids["gone"] = Reg("bye\n");
  etc.kids["link"] = Sym("target-old");
  etc.kids["keep"] = Reg("keep\n");
  TNode& op = r.kids["opaque"] = Dir();
  op.kids["a"] = Reg("a");
  op.kids["b"] = Reg("b");
  op.kids["sub"] = Dir();
  op.kids["sub"].kids["c"] = Reg("c");
  r.kids["f2d"] = Reg("file, then a directory\n");
  TNode& d2f = r.kids["d2f"] = Dir();
  d2f.kids["x"] = Reg("x");
  d2f.kids["y"] = Dir();
  d2f.kids["y"].kids["z"] = Reg("z");
  TNode* deep = &r.kids["deep"];
  *deep = Dir(0700);
  for (const char* c : {"a", "b", "c"}) {
    deep = &deep->kids[c];
    *deep = Dir();
  }
  deep->kids["file"] = Reg("deep\n");
  TNode fifo;
  fifo.mode = S_IFIFO | 0640;
  r.kids["fifo"] = fifo;
  r.kids["names"] = Dir();
  r.kids["names"].kids["plain"] = Reg("plain");
  r.kids["empty"] = Dir(0555);
  return r;
}

// Half way: the bin/ changes and some names.
TNode MidTree() {
  TNode r = BaseTree();
  TNode& bin = r.kids["bin"];
  bin.kids["tool"].data = ToolV1();
  bin.kids["new-name"] = bin.kids["old-name"];
  bin.kids["new-name"].mtime = 3000;
  bin.kids.erase("old-name");
  bin.kids["script"].mode = S_IFREG | 0755;
  r.kids["names"].kids["sp ace"] = Reg("space");
  r.kids["names"].kids["nl\nx"] = Reg("newline");
  return r;
}

TNode TargetTree() {
  TNode r = MidTree();
  r.mode = S_IFDIR | 0750;
  r.uid = 1;
  r.gid = 2;
  r.mtime = 200;
  r.nsec = 7;
  r.xattrs = {{"user.root", "new"}, {"user.z", ""}};
  r.kids["bin"].kids["tool"].data = ToolV2();
  TNode& etc = r.kids["etc"];
  etc.kids["conf"] = Reg("a=2\n");
  etc.kids.erase("gone");
  etc.kids["link"] = Sym("target-new");
  etc.kids["xfile"] = Reg("x");
  etc.kids["xfile"].xattrs = {{"user.a", "1"}, {"user.b", ""}};
  etc.kids["xfile"].uid = 1234;
  etc.kids["xfile"].gid = 5678;
  TNode op = Dir(0711, 4000);
  op.opaque_hint = true;
  op.kids["b"] = Reg("new b");
  op.kids["d"] = Dir();
  op.kids["d"].kids["e"] = Reg("e");
  r.kids["opaque"] = op;
  r.kids["f2d"] = Dir();
  r.kids["f2d"].kids["child"] = Reg("child\n");
  r.kids["d2f"] = Reg("now a file\n");
  TNode& names = r.kids["names"];
  for (std::string n : {std::string("\xff\xfe"), std::string("\xc3\xbc"), std::string(255, 'n'),
                        std::string("\x01"
                                    "ctl"),
                        std::string("-dash")}) {
    names.kids[n] = Reg("name " + n);
  }
  return r;
}

// Layer i of the churn: a file under /churn and a byte of the tool changed.
TNode ChurnTree(int i) {
  TNode r = BaseTree();
  r.mtime = 100 + i;
  r.kids["churn"] = Dir();
  r.kids["churn"].kids["f" + std::to_string(i)] = Reg("churn " + std::to_string(i));
  std::string& tool = r.kids["bin"].kids["tool"].data;
  tool[static_cast<size_t>(i) * 4099 % tool.size()] ^= 0x11;
  return r;
}

// The chain whose last tree is TargetTree(), with `layers` patches (0: the
// target as a base).
std::vector<TNode> Chain(int layers) {
  if (layers == 0) return {TargetTree()};
  std::vector<TNode> c{BaseTree()};
  for (int i = 1; i <= layers - 2; ++i) c.push_back(ChurnTree(i));
  if (layers >= 2) c.push_back(MidTree());
  c.push_back(TargetTree());
  return c;
}

// ---- the typed suite -------------------------------------------------------------

template <int N>
struct Layers {
  static constexpr int kLayers = N;
};

template <typename T>
class ViewTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<TempDir>();
    builder_ = std::make_unique<Builder>(dir_->path());
    stack_ = std::make_unique<Stack>(builder_->SealChain(Chain(T::kLayers), "s"));
    auto v = builder_->Open(*stack_);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    view_ = std::move(v).value();
    target_ = std::make_unique<TNode>(TargetTree());
  }
  static void TearDownTestSuite() {
    view_.reset();
    stack_.reset();
    builder_.reset();
    dir_.reset();
  }
  void SetUp() override { ASSERT_NE(view_, nullptr); }

  static const View& view() { return *view_; }
  static const TNode& target() { return *target_; }

  static inline std::unique_ptr<TempDir> dir_;
  static inline std::unique_ptr<Builder> builder_;
  static inline std::unique_ptr<Stack> stack_;
  static inline std::unique_ptr<View> view_;
  static inline std::unique_ptr<TNode> target_;
};

using LayerCounts = ::testing::Types<Layers<0>, Layers<1>, Layers<2>, Layers<50>>;
class LayerCountNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return T::kLayers == 0 ? "SingleBase" : "BasePlus" + std::to_string(T::kLayers);
  }
};
TYPED_TEST_SUITE(ViewTest, LayerCounts, LayerCountNames);

std::string ReadAll(const View& v, uint64_t node, uint64_t size) {
  std::string out(size + 10, '\0');
  uint64_t off = 0;
  while (true) {
    auto n =
        v.Read(node, off,
               std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()) + off, out.size() - off));
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    if (!n.ok() || *n == 0) break;
    off += *n;
  }
  out.resize(off);
  return out;
}

std::vector<DirEntry> List(const View& v, uint64_t dir, uint64_t start = 0) {
  std::vector<DirEntry> out;
  Status st = v.ReadDir(dir, start, [&](const DirEntry& e, uint64_t i) {
    EXPECT_EQ(i, start + out.size());
    out.push_back(e);
    return true;
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out;
}

// Everything a user can observe of `node` equals `want`, recursively.
void ExpectSame(const View& v, uint64_t node, const TNode& want, const std::string& path) {
  SCOPED_TRACE(path);
  auto in = v.GetAttr(node);
  ASSERT_TRUE(in.ok()) << in.status().ToString();
  EXPECT_EQ(in->ino, node);
  EXPECT_EQ(in->mode, want.mode);
  EXPECT_EQ(in->uid, want.uid);
  EXPECT_EQ(in->gid, want.gid);
  EXPECT_EQ(in->mtime_sec, want.mtime);
  EXPECT_EQ(in->mtime_nsec, want.nsec);
  auto xs = v.ListXattrs(node);
  ASSERT_TRUE(xs.ok());
  std::vector<std::pair<std::string, std::string>> got;
  for (const Xattr& x : *xs) got.emplace_back(x.name, x.value);
  EXPECT_EQ(got, want.xattrs);
  for (const auto& [name, value] : want.xattrs) {
    auto g = v.GetXattr(node, name);
    ASSERT_TRUE(g.ok());
    EXPECT_EQ(*g, value);
  }
  EXPECT_EQ(v.GetXattr(node, "user.absent").status().code(), Code::kNotFound);
  if (IsDir(want)) {
    EXPECT_EQ(in->size, want.kids.size());
    const auto subdirs = std::count_if(want.kids.begin(), want.kids.end(),
                                       [](const auto& kv) { return IsDir(kv.second); });
    EXPECT_EQ(in->nlink, 2 + subdirs);
    const std::vector<DirEntry> entries = List(v, node);
    ASSERT_EQ(entries.size(), want.kids.size());
    size_t i = 0;
    for (const auto& [name, k] : want.kids) {
      const DirEntry& e = entries[i++];
      EXPECT_EQ(e.name, name);
      EXPECT_EQ(e.type, format::EntryTypeFor(k.mode, 0));
      auto l = v.Lookup(node, name);
      ASSERT_TRUE(l.ok()) << name;
      EXPECT_EQ(l->ino, e.ino);
      EXPECT_EQ(l->type, e.type);
      ExpectSame(v, e.ino, k, path + "/" + name);
    }
  } else if (IsReg(want)) {
    EXPECT_EQ(in->size, want.data.size());
    EXPECT_EQ(in->nlink, 1u);
    EXPECT_TRUE(ReadAll(v, node, want.data.size()) == want.data);
    auto d = v.FileDigest(node);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(*d, FsVerityDigest(want.data.data(), want.data.size()));
  } else if (S_ISLNK(want.mode)) {
    auto t = v.ReadLink(node);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(*t, want.data);
  }
}

TYPED_TEST(ViewTest, WholeTreeEqualsTarget) {
  ExpectSame(this->view(), this->view().root(), this->target(), "");
}

TYPED_TEST(ViewTest, LookupOfRemovedOrReplacedNamesFails) {
  const View& v = this->view();
  for (const char* p : {"etc/gone", "bin/old-name", "opaque/a", "opaque/sub", "opaque/sub/c",
                        "churn", "f2d/nothing"}) {
    auto r = v.Resolve(p);
    EXPECT_EQ(r.status().code(), Code::kNotFound) << p;
    EXPECT_TRUE(test::Contains(r.status().message(), p)) << r.status().message();
  }
  auto root = v.Lookup(v.root(), "gone");
  EXPECT_EQ(root.status().code(), Code::kNotFound);
  // Through a file (d2f was a directory below).
  EXPECT_EQ(v.Resolve("d2f/x").status().code(), Code::kNotDirectory);
  auto conf = v.Resolve("etc/conf");
  ASSERT_TRUE(conf.ok());
  EXPECT_EQ(v.Lookup(conf->ino, "x").status().code(), Code::kNotDirectory);
}

TYPED_TEST(ViewTest, ResolveFindsPathsWithAnyBytes) {
  const View& v = this->view();
  auto root = v.Resolve("/");
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root->ino, v.root());
  ASSERT_TRUE(v.Resolve("").ok());
  EXPECT_EQ(v.Resolve("")->ino, v.root());
  for (const auto& [name, k] : this->target().kids.at("names").kids) {
    auto r = v.Resolve("/names/" + name);
    ASSERT_TRUE(r.ok()) << name;
    EXPECT_EQ(ReadAll(v, r->ino, r->size), k.data);
  }
  auto deep = v.Resolve("deep/a/b/c/file");
  ASSERT_TRUE(deep.ok());
  EXPECT_EQ(ReadAll(v, deep->ino, deep->size), "deep\n");
  auto moved = v.Resolve("./bin//new-name");
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(moved->mtime_sec, 3000);
  EXPECT_EQ(ReadAll(v, moved->ino, moved->size), Moved());
}

TYPED_TEST(ViewTest, ReadDirResumesFromAnyIndex) {
  const View& v = this->view();
  for (const char* dir : {"", "names", "bin", "etc", "opaque"}) {
    auto d = v.Resolve(dir);
    ASSERT_TRUE(d.ok());
    const std::vector<DirEntry> all = List(v, d->ino);
    for (uint64_t start = 0; start <= all.size() + 1; ++start) {
      const std::vector<DirEntry> tail = List(v, d->ino, start);
      ASSERT_EQ(tail.size(), start < all.size() ? all.size() - start : 0) << dir << start;
      for (size_t i = 0; i < tail.size(); ++i) EXPECT_EQ(tail[i].name, all[start + i].name);
    }
    // Stopping early.
    int calls = 0;
    ASSERT_TRUE(v.ReadDir(d->ino, 0, [&](const DirEntry&, uint64_t) { return ++calls < 2; }).ok());
    EXPECT_EQ(calls, std::min<int>(2, static_cast<int>(all.size())));
  }
}

TYPED_TEST(ViewTest, RandomReadsOfAPatchedFile) {
  const View& v = this->view();
  const std::string want = ToolV2();
  auto tool = v.Resolve("bin/tool");
  ASSERT_TRUE(tool.ok());
  ASSERT_EQ(tool->size, want.size());
  if (TypeParam::kLayers > 0) {  // a delta of several image chunks in the top patch
    auto raw = v.layers().back()->Resolve("bin/tool");
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ(raw->flags, format::kInodeDelta);
    EXPECT_GT(raw->stored_size, uint64_t{2} << kChunkLog2);
  }
  std::mt19937_64 rng(42);
  std::vector<uint64_t> offsets = {0,
                                   1,
                                   4095,
                                   4096,
                                   16383,
                                   16384,
                                   128 * 1024 - 7,
                                   want.size() - 4096,
                                   want.size() - 100,
                                   want.size() - 1};
  for (int i = 0; i < 40; ++i) offsets.push_back(rng() % want.size());
  for (uint64_t off : offsets) {
    for (size_t len : {size_t{1}, size_t{4096}, size_t{70000}}) {
      std::string buf(len, '\xee');
      auto n = v.Read(tool->ino, off,
                      std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), buf.size()));
      ASSERT_TRUE(n.ok()) << off << ": " << n.status().ToString();
      ASSERT_EQ(*n, std::min<uint64_t>(len, want.size() - off));
      EXPECT_TRUE(buf.compare(0, *n, want, off, *n) == 0) << "offset " << off << " len " << len;
    }
  }
  std::string buf(10, '\0');
  auto eof = v.Read(tool->ino, want.size(),
                    std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), buf.size()));
  ASSERT_TRUE(eof.ok());
  EXPECT_EQ(*eof, 0u);
}

TYPED_TEST(ViewTest, NonFilesAndUnknownNodes) {
  const View& v = this->view();
  auto etc = v.Resolve("etc");
  ASSERT_TRUE(etc.ok());
  EXPECT_FALSE(v.FileDigest(etc->ino).ok());
  // Directories a patch adds or replaces, and one it merges.
  for (const char* dir : {"etc", "f2d", "opaque", "opaque/d"}) {
    auto d = v.Resolve(dir);
    ASSERT_TRUE(d.ok()) << dir;
    std::vector<uint8_t> buf(10);
    EXPECT_EQ(v.Read(d->ino, 0, buf).status().code(), Code::kIsDirectory) << dir;
    EXPECT_EQ(v.ReadLink(d->ino).status().code(), Code::kInvalidArgument) << dir;
  }
  auto file = v.Resolve("f2d/child");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(v.Lookup(file->ino, "x").status().code(), Code::kNotDirectory);
  EXPECT_EQ(v.ReadDir(file->ino, 0, [](const DirEntry&, uint64_t) { return true; }).code(),
            Code::kNotDirectory);
  EXPECT_EQ(v.GetAttr(NodeId(60, 1)).status().code(), Code::kNotFound);
  auto fifo = v.Resolve("fifo");
  ASSERT_TRUE(fifo.ok());
  EXPECT_EQ(fifo->mode, S_IFIFO | 0640u);
}

TYPED_TEST(ViewTest, VerifyAllPassesAndLayersAreBaseFirst) {
  const View& v = this->view();
  uint64_t calls = 0;
  Status st = v.VerifyAll([&](uint64_t, uint64_t) { ++calls; });
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_GT(calls, 0u);
  const auto layers = v.layers();
  ASSERT_EQ(layers.size(), static_cast<size_t>(TypeParam::kLayers) + 1);
  EXPECT_EQ(layers[0]->superblock().kind, format::kKindBase);
  for (size_t i = 1; i < layers.size(); ++i) {
    EXPECT_EQ(layers[i]->manifest().patch_id, PatchId(i));
  }
}

// ---- stacks only ------------------------------------------------------------------

class StackTest : public ::testing::Test {
 protected:
  StackTest() : builder_(dir_.path()) {}
  std::string P(const std::string& name) const { return dir_.path() + "/" + name; }
  TempDir dir_;
  Builder builder_;
};

TEST_F(StackTest, RefusesPatchesThatDoNotBindToTheStateBelow) {
  const Stack s = builder_.SealChain({BaseTree(), MidTree(), TargetTree()}, "a");
  const Stack other = builder_.SealChain({MidTree(), TargetTree()}, "b");
  const ImageOptions& o = builder_.opts();
  // A patch for another base: both digests named.
  auto wrong = OpenStack(s.base, {other.patches[0]}, o);
  ASSERT_EQ(wrong.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(test::Contains(wrong.status().message(), other.patches[0]));
  EXPECT_TRUE(test::Contains(wrong.status().message(), HexEncode(s.base_root)));
  EXPECT_TRUE(test::Contains(wrong.status().message(), HexEncode(other.base_root)));
  // Missing required patch.
  auto missing = OpenStack(s.base, {s.patches[1]}, o);
  ASSERT_EQ(missing.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(test::Contains(missing.status().message(), s.patches[1]));
  EXPECT_TRUE(test::Contains(missing.status().message(), "missing: p1"));
  // Extra patch below one that does not require it.
  const std::string extra =
      builder_.SealPatch(MidTree(), TargetTree(), "extra.cxpatch", "x", s.base_root, {});
  auto ex = OpenStack(s.base, {s.patches[0], extra}, o);
  ASSERT_EQ(ex.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(test::Contains(ex.status().message(), "not required: p1"));
  // Reordered.
  const std::string p3 =
      builder_.SealPatch(TargetTree(), TargetTree(), "p3.cxpatch", "p3", s.base_root, {"p2", "p1"});
  auto reordered = OpenStack(s.base, {s.patches[0], s.patches[1], p3}, o);
  ASSERT_EQ(reordered.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(test::Contains(reordered.status().message(), "wrong order"));
  // A base given as a patch, a patch given as the base.
  auto base_as_patch = OpenStack(s.base, {other.base}, o);
  ASSERT_EQ(base_as_patch.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(test::Contains(base_as_patch.status().message(), other.base));
  auto patch_as_base = OpenStack(s.patches[0], {}, o);
  EXPECT_EQ(patch_as_base.status().code(), Code::kInvalidArgument);
  // The good stack opens.
  EXPECT_TRUE(OpenStack(s.base, s.patches, o).ok());
}

TEST_F(StackTest, NodeIdsOfDirectoriesAreStableAndChangedFilesAreNew) {
  const Stack s = builder_.SealChain({BaseTree(), MidTree(), TargetTree()}, "a");
  auto one = OpenStack(s.base, {s.patches[0]}, builder_.opts());
  auto two = OpenStack(s.base, s.patches, builder_.opts());
  ASSERT_TRUE(one.ok() && two.ok());
  auto id = [](const View& v, const char* p) {
    auto r = v.Resolve(p);
    EXPECT_TRUE(r.ok()) << p;
    return r.ok() ? r->ino : 0;
  };
  for (const char* dir : {"/", "bin", "etc", "names", "deep", "deep/a/b"}) {
    EXPECT_EQ(id(**one, dir), id(**two, dir)) << dir;
  }
  EXPECT_EQ(id(**two, "bin"), NodeId(0, id(**one, "bin")));  // the base's
  EXPECT_NE(id(**one, "etc/conf"), id(**two, "etc/conf"));   // changed by p2
  EXPECT_EQ(NodeLayer(id(**two, "etc/conf")), 2u);
  EXPECT_EQ(id(**one, "etc/keep"), id(**two, "etc/keep"));  // untouched
  EXPECT_EQ(NodeLayer(id(**two, "opaque")), 2u);            // opaque: replaced
  // A patch directory's own id is not served (only its merged id).
  const auto layers = (*two)->layers();
  auto raw_bin = layers[2]->Resolve("bin");
  ASSERT_TRUE(raw_bin.ok());
  EXPECT_EQ((*two)->GetAttr(NodeId(2, raw_bin->ino)).status().code(), Code::kNotFound);
}

// An opaque root replaces the whole lower tree; the root keeps its id.
TEST_F(StackTest, OpaqueRootReplacesEverything) {
  TNode target = Dir(0700, 9);
  target.opaque_hint = true;
  target.kids["only"] = Reg("only\n");
  target.kids["bin"] = Dir();
  target.kids["bin"].kids["x"] = Reg("x");
  const Stack s = builder_.SealChain({BaseTree(), target}, "o");
  auto v = builder_.Open(s);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ((*v)->root(), NodeId(0, 1));
  target.opaque_hint = false;
  ExpectSame(**v, (*v)->root(), target, "");
  EXPECT_NE((*v)->Resolve("bin")->ino, NodeId(0, (*v)->layers()[0]->Resolve("bin")->ino));
}

// A delta whose signed digest does not match what it decodes to: every read
// of it fails (never wrong bytes), and so does VerifyAll.
TEST_F(StackTest, DeltaNotMatchingItsSignedDigestIsCorruption) {
  const TNode base = BaseTree();
  TNode target = base;
  target.kids["bin"].kids["tool"].data = ToolV1();
  TNode patch = PatchDir(&base, target, base, "");
  TNode& tool = patch.kids.at("bin").kids.at("tool");
  ASSERT_EQ(tool.flags, format::kInodeDelta);
  tool.digest = FsVerityDigest(ToolV2().data(), ToolV2().size());  // signs other bytes
  const Digest root = builder_.SealBase(base, "base.cx");
  Manifest m;
  m.name = "patch";
  m.patch_id = "bad";
  m.base_root_digest = root;
  builder_.Seal(patch, P("bad.cxpatch"), format::kKindPatch, m);
  auto v = OpenStack(P("base.cx"), {P("bad.cxpatch")}, builder_.opts());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  auto in = (*v)->Resolve("bin/tool");
  ASSERT_TRUE(in.ok());
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::vector<uint8_t> buf(4096);
    auto n = (*v)->Read(in->ino, 8192 + 5, buf);
    ASSERT_EQ(n.status().code(), Code::kCorruption);
    EXPECT_TRUE(test::Contains(n.status().message(), P("bad.cxpatch"))) << n.status().message();
    EXPECT_TRUE(test::Contains(n.status().message(), "bin/tool")) << n.status().message();
  }
  const PatchedFileStats* stats = DeltaStatsOf(**v);
  ASSERT_NE(stats, nullptr);
  EXPECT_EQ(stats->trees_built.load(), 1u);  // the failed pass is not repeated
  Status st = (*v)->VerifyAll();
  EXPECT_EQ(st.code(), Code::kCorruption) << st.ToString();
  EXPECT_TRUE(test::Contains(st.message(), "bin/tool")) << st.message();
}

// The patch below a delta replaced by another with the same id (re-signed):
// the lower file has the same size but other bytes, so the delta decodes to
// wrong bytes, which the signed digest catches.
TEST_F(StackTest, DeltaOverASwappedLowerFileIsCorruption) {
  const Stack s = builder_.SealChain({BaseTree(), MidTree(), TargetTree()}, "a");
  TNode evil_mid = MidTree();
  evil_mid.kids["bin"].kids["tool"].data[200000] ^= 0x77;  // same size
  const std::string evil =
      builder_.SealPatch(BaseTree(), evil_mid, "evil-p1.cxpatch", "p1", s.base_root, {});
  auto v = OpenStack(s.base, {evil, s.patches[1]}, builder_.opts());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  auto in = (*v)->Resolve("bin/tool");
  ASSERT_TRUE(in.ok());
  std::vector<uint8_t> buf(4096);
  auto n = (*v)->Read(in->ino, 0, buf);
  EXPECT_EQ(n.status().code(), Code::kCorruption) << n.status().ToString();
  EXPECT_TRUE(test::Contains(n.status().message(), s.patches[1])) << n.status().message();
  EXPECT_EQ((*v)->VerifyAll().code(), Code::kCorruption);
  // The rest of the stack still reads.
  auto conf = (*v)->Resolve("etc/conf");
  ASSERT_TRUE(conf.ok());
  EXPECT_EQ(ReadAll(**v, conf->ino, conf->size), "a=2\n");
}

// A lower-content file whose lower file has another digest: refused at open,
// naming the patch, the path and both digests.
TEST_F(StackTest, LowerContentWithAnotherDigestIsRefusedAtOpen) {
  const TNode base = BaseTree();
  TNode target = base;
  target.kids["bin"].kids["script"].mode = S_IFREG | 0700;
  TNode patch = PatchDir(&base, target, base, "");
  TNode& script = patch.kids.at("bin").kids.at("script");
  ASSERT_EQ(script.flags, format::kInodeLowerContent);
  script.source = "etc/conf";  // another file
  const Digest root = builder_.SealBase(base, "base.cx");
  Manifest m;
  m.name = "patch";
  m.patch_id = "lc";
  m.base_root_digest = root;
  builder_.Seal(patch, P("lc.cxpatch"), format::kKindPatch, m);
  auto v = OpenStack(P("base.cx"), {P("lc.cxpatch")}, builder_.opts());
  ASSERT_EQ(v.status().code(), Code::kCorruption);
  const std::string& msg = v.status().message();
  EXPECT_TRUE(test::Contains(msg, P("lc.cxpatch"))) << msg;
  EXPECT_TRUE(test::Contains(msg, "bin/script")) << msg;
  EXPECT_TRUE(test::Contains(msg, "etc/conf")) << msg;
  const std::string conf = "a=1\n", sh = "#!/bin/sh\necho hi\n";
  EXPECT_TRUE(test::Contains(msg, HexEncode(FsVerityDigest(conf.data(), conf.size())))) << msg;
  EXPECT_TRUE(test::Contains(msg, HexEncode(FsVerityDigest(sh.data(), sh.size())))) << msg;
  // A source that does not exist below.
  script.source = "bin/nothing";
  m.patch_id = "lc2";
  builder_.Seal(patch, P("lc2.cxpatch"), format::kKindPatch, m);
  auto v2 = OpenStack(P("base.cx"), {P("lc2.cxpatch")}, builder_.opts());
  EXPECT_EQ(v2.status().code(), Code::kCorruption);
  EXPECT_TRUE(test::Contains(v2.status().message(), "bin/nothing"));
}

// Random access: once a delta file's tree is built, a 4 KiB read in the
// middle decodes one or two segments (PatchedFileStats::segments_decoded,
// summed from DeltaReader::Stats); with leaves supplied (a store), even the
// first read does.
TEST_F(StackTest, FourKiBReadOfALargeDeltaDecodesOnlyAFewSegments) {
  const std::string lower = Bytes(8 << 20, 7);
  std::string target = lower;
  for (size_t off = 1000; off < target.size(); off += 300000) target[off] ^= 0x42;
  DeltaOptions o;
  o.segment_log2 = 16;
  o.zstd_level = 3;
  auto delta = EncodeDelta(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(lower.data()), lower.size()),
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(target.data()), target.size()), o);
  ASSERT_TRUE(delta.ok());
  const Digest digest = FsVerityDigest(target.data(), target.size());
  auto source = [&] {
    PatchedFileSource s;
    s.context = "test: big";
    s.size = target.size();
    s.digest = digest;
    s.delta_size = delta->size();
    s.read_delta = [&](uint64_t off, std::span<uint8_t> out) {
      std::copy_n(delta->begin() + static_cast<ptrdiff_t>(off), out.size(), out.begin());
      return Status::Ok();
    };
    s.lower_size = lower.size();
    s.read_lower = [&](uint64_t off, std::span<uint8_t> out) {
      std::copy_n(lower.begin() + static_cast<ptrdiff_t>(off), out.size(), out.begin());
      return Status::Ok();
    };
    return s;
  };
  const uint64_t segments = target.size() >> 16;
  std::vector<uint8_t> buf(4096);
  const uint64_t mid = target.size() / 2 + 1234;

  PatchedFileStats stats;
  PatchedFile f(source(), {&stats});
  ASSERT_TRUE(f.Read(0, buf).ok());  // first access: one pass over the file
  EXPECT_EQ(stats.trees_built.load(), 1u);
  EXPECT_GE(stats.segments_decoded.load(), segments);
  const uint64_t before = stats.segments_decoded.load();
  auto n = f.Read(mid, buf);
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, 4096u);
  EXPECT_EQ(std::memcmp(buf.data(), target.data() + mid, buf.size()), 0);
  EXPECT_LE(stats.segments_decoded.load() - before, 2u);
  EXPECT_EQ(stats.trees_built.load(), 1u);

  // Leaves persisted and handed back (issue 12's store): no pass at all.
  auto leaves = f.Leaves();
  ASSERT_TRUE(leaves.ok());
  const std::vector<uint8_t> stored = (*leaves)->Serialize();
  EXPECT_EQ(stored.size(), (target.size() + 4095) / 4096 * 32);
  auto parsed = VerityLeaves::Parse(stored, target.size(), digest, "test");
  ASSERT_TRUE(parsed.ok());
  PatchedFileStats cold;
  PatchedFile g(source(), {&cold}, std::move(parsed).value());
  ASSERT_TRUE(g.Read(mid, buf).ok());
  EXPECT_EQ(std::memcmp(buf.data(), target.data() + mid, buf.size()), 0);
  EXPECT_EQ(cold.trees_built.load(), 0u);
  EXPECT_LE(cold.segments_decoded.load(), 2u);
  // Tampered stored leaves are refused: one leaf changed, or truncated.
  std::vector<uint8_t> bad = stored;
  bad[32 * 100] ^= 1;
  EXPECT_EQ(VerityLeaves::Parse(bad, target.size(), digest, "test").status().code(),
            Code::kCorruption);
  bad.resize(bad.size() - 32);
  EXPECT_EQ(VerityLeaves::Parse(bad, target.size(), digest, "test").status().code(),
            Code::kCorruption);
}

// A cold sequential read of a delta file: the first-access pass decodes
// and hashes every segment to build the leaves; once they check out, those
// verified segments serve the read from the cache (each segment decoded
// once, not twice), up to 1/kKeepFraction of the cache; past that budget
// segments are decoded on demand. With a wrong signed digest nothing of
// the pass is cached or served.
TEST(PatchedFileTest, ColdReadDecodesEachSegmentOnce) {
  const std::string lower = Bytes(1 << 20, 9);
  std::string target = lower;
  for (size_t off = 500; off < target.size(); off += 7000) target[off] ^= 0x5A;
  target += "tail";  // a last segment ending mid-block
  DeltaOptions o;
  o.segment_log2 = 14;
  o.zstd_level = 1;
  auto u8 = [](const std::string& s) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  auto delta = EncodeDelta(u8(lower), u8(target), o);
  ASSERT_TRUE(delta.ok());
  auto source = [&](const Digest& digest) {
    PatchedFileSource s;
    s.context = "test: cold";
    s.size = target.size();
    s.digest = digest;
    s.delta_size = delta->size();
    s.read_delta = [&](uint64_t off, std::span<uint8_t> out) {
      std::copy_n(delta->begin() + static_cast<ptrdiff_t>(off), out.size(), out.begin());
      return Status::Ok();
    };
    s.lower_size = lower.size();
    s.read_lower = [&](uint64_t off, std::span<uint8_t> out) {
      std::copy_n(lower.begin() + static_cast<ptrdiff_t>(off), out.size(), out.begin());
      return Status::Ok();
    };
    return s;
  };
  const Digest digest = FsVerityDigest(target.data(), target.size());
  const uint64_t segments = (target.size() + (1u << 14) - 1) >> 14;
  auto read_all = [&](const PatchedFile& f) {
    std::string got(target.size(), '\0');
    for (uint64_t off = 0; off < got.size(); off += 5000) {
      auto n = f.Read(off, {reinterpret_cast<uint8_t*>(got.data()) + off,
                            std::min<size_t>(5000, got.size() - off)});
      if (!n.ok()) return n.status().ToString();
    }
    return got;
  };

  {  // the whole file fits the budget
    PatchedFileStats stats;
    SegmentCache cache(64 << 20);
    PatchedFile f(source(digest), {&stats, &cache, 1});
    EXPECT_TRUE(read_all(f) == target);
    EXPECT_EQ(stats.trees_built.load(), 1u);
    EXPECT_EQ(stats.segments_decoded.load(), segments);
    EXPECT_EQ(stats.verify_failures.load(), 0u);
  }
  {  // a quarter of the file fits: the rest is decoded (and verified) again
    PatchedFileStats stats;
    SegmentCache cache(target.size());
    PatchedFile f(source(digest), {&stats, &cache, 1});
    EXPECT_TRUE(read_all(f) == target);
    EXPECT_GT(stats.segments_decoded.load(), segments);
    EXPECT_LT(stats.segments_decoded.load(), 2 * segments);
    EXPECT_GT(stats.blocks_verified.load(), 0u);
  }
  {  // wrong digest: the pass fails and leaves nothing in the cache
    Digest wrong = digest;
    wrong[0] ^= 1;
    PatchedFileStats stats;
    SegmentCache cache(64 << 20);
    PatchedFile f(source(wrong), {&stats, &cache, 1});
    std::vector<uint8_t> buf(4096);
    EXPECT_EQ(f.Read(0, buf).status().code(), Code::kCorruption);
    for (uint64_t seg = 0; seg < segments; ++seg) EXPECT_FALSE(cache.Contains((1u << 20) | seg));
    EXPECT_EQ(f.Read(0, buf).status().code(), Code::kCorruption);
  }
}

// A delta over a delta: the upper decoder makes many small reads of the
// lower file (one per control entry); each lower segment is decoded and
// verified once and then served from the cache, so the work stays linear in
// the file instead of multiplying per layer.
TEST_F(StackTest, DeltaOverADeltaDecodesEachLowerSegmentAFewTimes) {
  auto sprinkle = [](std::string s, uint64_t seed) {
    std::string out;
    for (size_t i = 0; i < s.size(); i += 300) out += s.substr(i, 300) + Bytes(1, seed + i);
    return out;
  };
  TNode base = Dir();
  base.kids["f"] = Reg(Bytes(256 * 1024, 3));
  TNode mid = base;
  mid.kids["f"].data = sprinkle(base.kids["f"].data, 10);
  TNode top = mid;
  top.kids["f"].data = sprinkle(mid.kids["f"].data, 20);
  const Stack s = builder_.SealChain({base, mid, top}, "dd");
  auto v = builder_.Open(s);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  auto f = (*v)->Resolve("f");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(ReadAll(**v, f->ino, f->size), top.kids["f"].data);
  const uint64_t seg = uint64_t{1} << kSegmentLog2;
  const uint64_t segments = (mid.kids["f"].data.size() + seg - 1) / seg +  //
                            (top.kids["f"].data.size() + seg - 1) / seg;
  const PatchedFileStats* stats = DeltaStatsOf(**v);
  ASSERT_NE(stats, nullptr);
  EXPECT_EQ(stats->trees_built.load(), 2u);
  EXPECT_LE(stats->segments_decoded.load(), 3 * segments);
  // Each block hashed about twice (tree pass aside): without the cache every
  // small lower read would re-verify its whole segment.
  const uint64_t blocks = (mid.kids["f"].data.size() + top.kids["f"].data.size()) / 4096 + 2;
  EXPECT_LE(stats->blocks_verified.load(), 2 * blocks);
  EXPECT_GT(stats->segment_cache_hits.load(), 0u);
}

// View methods run concurrently, including the first access of a delta
// file (one tree pass, the others wait for it) and reads sharing decoders.
TEST_F(StackTest, ConcurrentReadsOfAColdStack) {
  const Stack s = builder_.SealChain(Chain(2), "c");
  auto v = builder_.Open(s);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  const View& view = **v;
  const std::string want = ToolV2();
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t));
      for (int i = 0; i < 60; ++i) {
        auto tool = view.Resolve("bin/tool");
        if (!tool.ok()) {
          ++bad;
          continue;
        }
        const uint64_t off = rng() % want.size();
        std::string buf(5000, '\0');
        auto n = view.Read(tool->ino, off,
                           std::span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), buf.size()));
        if (!n.ok() || buf.compare(0, *n, want, off, *n) != 0 ||
            *n != std::min<uint64_t>(buf.size(), want.size() - off)) {
          ++bad;
        }
        if (List(view, view.root()).size() != TargetTree().kids.size()) ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(DeltaStatsOf(view)->trees_built.load(), 2u);  // the tool at p1 and at p2
}

// An empty target is checked against its digest too (reading nothing is no
// excuse to serve a file the signature does not describe).
TEST_F(StackTest, EmptyDeltaTargetIsCheckedAgainstItsDigest) {
  const std::string lower = "lower bytes";
  auto delta = EncodeDelta(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(lower.data()), lower.size()), {});
  ASSERT_TRUE(delta.ok());
  for (const std::string signed_content : {"", "x"}) {
    PatchedFileSource s;
    s.context = "test: empty";
    s.digest = FsVerityDigest(signed_content.data(), signed_content.size());
    s.delta_size = delta->size();
    s.read_delta = [&](uint64_t off, std::span<uint8_t> out) {
      std::copy_n(delta->begin() + static_cast<ptrdiff_t>(off), out.size(), out.begin());
      return Status::Ok();
    };
    s.lower_size = lower.size();
    s.read_lower = [&](uint64_t off, std::span<uint8_t> out) {
      std::copy_n(lower.begin() + static_cast<ptrdiff_t>(off), out.size(), out.begin());
      return Status::Ok();
    };
    PatchedFile f(std::move(s), {});
    std::vector<uint8_t> buf(16);
    auto n = f.Read(0, buf);
    if (signed_content.empty()) {
      ASSERT_TRUE(n.ok()) << n.status().ToString();
      EXPECT_EQ(*n, 0u);
    } else {
      EXPECT_EQ(n.status().code(), Code::kCorruption);
    }
  }
}

// A leaf that does not match the decoded block (leaves from a store built for
// other content of the same digest cannot exist; here the lower bytes change
// after the tree was built): the block is refused, not served.
TEST_F(StackTest, BlockNotMatchingItsLeafIsRefused) {
  std::string lower = Bytes(200000, 9);
  std::string target = lower;
  target[50] ^= 1;
  DeltaOptions o;
  o.segment_log2 = 12;
  auto delta = EncodeDelta(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(lower.data()), lower.size()),
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(target.data()), target.size()), o);
  ASSERT_TRUE(delta.ok());
  PatchedFileSource s;
  s.context = "test: f";
  s.size = target.size();
  s.digest = FsVerityDigest(target.data(), target.size());
  s.delta_size = delta->size();
  s.read_delta = [&](uint64_t off, std::span<uint8_t> out) {
    std::copy_n(delta->begin() + static_cast<ptrdiff_t>(off), out.size(), out.begin());
    return Status::Ok();
  };
  s.lower_size = lower.size();
  s.read_lower = [&](uint64_t off, std::span<uint8_t> out) {
    std::copy_n(lower.begin() + static_cast<ptrdiff_t>(off), out.size(), out.begin());
    return Status::Ok();
  };
  PatchedFileStats stats;
  PatchedFile f(std::move(s), {&stats});
  std::vector<uint8_t> buf(4096);
  ASSERT_TRUE(f.Read(0, buf).ok());
  lower[150000] ^= 0xff;  // the lower file changes under the reader
  std::vector<uint8_t> out(4096, 0xee);
  auto n = f.Read(148000, out);
  ASSERT_EQ(n.status().code(), Code::kCorruption);
  EXPECT_TRUE(test::Contains(n.status().message(), "test: f")) << n.status().message();
  EXPECT_TRUE(test::Contains(n.status().message(), "offset 147456")) << n.status().message();
  EXPECT_EQ(stats.verify_failures.load(), 1u);
  EXPECT_TRUE(f.Read(0, buf).ok());  // other blocks still read
}

}  // namespace
}  // namespace cryptex
