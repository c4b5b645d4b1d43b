// cryptex_fuzz_make_corpus OUTDIR: writes the seed corpora of the fuzz
// targets (OUTDIR/<target>/<seed>), derived from a small image built by the
// library's builder and from the adversarial cases (gen.h) applied to it.
// Deterministic apart from the signing key, which the fuzz harnesses replace
// with their fixed key anyway. Run by tests/fuzz/make_corpus.sh.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <set>
#include <string>

#include "builder.h"
#include "delta.h"
#include "format.h"
#include "gen.h"
#include "manifest.h"
#include "surgery.h"

using namespace cryptex;
using surgery::Bytes;

namespace {

int Die(const Status& st) {
  std::fprintf(stderr, "make_corpus: %s\n", st.ToString().c_str());
  return 1;
}

Status Put(const std::string& dir, const std::string& name, std::span<const uint8_t> bytes) {
  mkdir(dir.c_str(), 0755);
  return surgery::WriteAll(dir + "/" + name, bytes);
}

// `src` sealed in the compact layout (docs/FORMAT.md section 13).
Result<Bytes> CompactLayoutImage(const std::string& src, const std::string& out) {
  CX_ASSIGN_OR_RETURN(PrivateKey key, PrivateKey::Generate());
  CX_ASSIGN_OR_RETURN(SourceTree tree, ScanDirectory(src));
  BuildOptions opts;
  opts.output_path = out;
  opts.key = &key;
  opts.manifest.name = "org.example.compact";
  opts.chunk_log2 = 12;
  opts.compact = true;
  CX_RETURN_IF_ERROR(WriteImage(tree, opts).status());
  return surgery::ReadAll(out);
}

// The resealed target's compact input: the superblock's 512 signed bytes,
// then the image from offset 4096 to the end of its last region.
Result<Bytes> Compact(const Bytes& image) {
  CX_ASSIGN_OR_RETURN(SuperblockInfo sb, surgery::Peek(image));
  uint64_t end = format::kBlockSize;
  for (const auto& r : sb.regions) end = std::max(end, r.offset + r.length);
  const auto super = surgery::SuperblockOf(image);
  Bytes out(super.begin(), super.end());
  out.insert(out.end(), image.begin() + format::kBlockSize,
             image.begin() + static_cast<ptrdiff_t>(end));
  return out;
}

// fuzz_delta's input: [u32 LE lower size][lower][delta of target vs lower].
Status PutDelta(const std::string& dir, const std::string& name, const Bytes& lower,
                const Bytes& target, uint32_t segment_log2) {
  DeltaOptions o;
  o.segment_log2 = segment_log2;
  CX_ASSIGN_OR_RETURN(Bytes d, EncodeDelta(lower, target, o));
  Bytes seed(4);
  const uint32_t n = static_cast<uint32_t>(lower.size());
  std::memcpy(seed.data(), &n, 4);
  seed.insert(seed.end(), lower.begin(), lower.end());
  seed.insert(seed.end(), d.begin(), d.end());
  return Put(dir, name, seed);
}

// Small deltas reaching each segment kind, plain data and the ELF model.
Status WriteDeltaSeeds(const std::string& dir) {
  uint32_t x = 1;
  auto rnd = [&x] { return x = x * 1103515245u + 12345u, static_cast<uint8_t>(x >> 16); };
  Bytes lower(12000);
  for (size_t i = 0; i < lower.size(); ++i) lower[i] = i % 7 == 0 ? rnd() : uint8_t('a' + i % 13);
  Bytes edited = lower;
  edited.insert(edited.begin() + 5000, {'n', 'e', 'w'});
  edited[9000] ^= 0xff;
  Bytes shifted(lower.begin() + 100, lower.end());
  Bytes flipped = lower;  // diff bytes only: the extra streams are empty
  flipped[700] ^= 1;
  flipped[7000] ^= 0x80;
  // A minimal x86-64 ELF: one PT_LOAD over the file, call rel32s into it;
  // the edited copy moves the callees by 16 bytes.
  auto elf = [&](int pad) {
    Bytes f(120, 0);
    std::memcpy(f.data(),
                "\x7f"
                "ELF",
                4);
    f[4] = 2, f[5] = 1, f[18] = 62, f[32] = 64, f[54] = 56, f[56] = 1, f[64] = 1;
    f[64 + 18] = 0x40;  // vaddr 0x400000
    Bytes code(6000);
    for (size_t i = 0; i < code.size(); ++i) code[i] = static_cast<uint8_t>(0x40 + i % 50);
    for (size_t i = 0; i + 5 < 3000; i += 37) {
      const int32_t rel = static_cast<int32_t>(3000 + pad + (i * 7) % 2000 - (i + 5));
      code[i] = 0xE8;
      std::memcpy(&code[i + 1], &rel, 4);
    }
    code.insert(code.begin() + 3000, static_cast<size_t>(pad), 0x90);
    f.insert(f.end(), code.begin(), code.end());
    const uint64_t total = f.size();
    std::memcpy(&f[64 + 32], &total, 8);
    std::memcpy(&f[64 + 40], &total, 8);
    return f;
  };
  CX_RETURN_IF_ERROR(PutDelta(dir, "identical", lower, lower, 12));
  CX_RETURN_IF_ERROR(PutDelta(dir, "edited", lower, edited, 12));
  CX_RETURN_IF_ERROR(PutDelta(dir, "shifted", lower, shifted, 12));
  // Regression (UBSan): a zero-length extra run at the end of an empty stream.
  CX_RETURN_IF_ERROR(PutDelta(dir, "regress_empty_extra_stream", lower, flipped, 12));
  CX_RETURN_IF_ERROR(PutDelta(dir, "plain", {}, edited, 13));
  CX_RETURN_IF_ERROR(PutDelta(dir, "empty_target", lower, {}, 12));
  CX_RETURN_IF_ERROR(PutDelta(dir, "elf_moved_calls", elf(0), elf(16), 12));
  return Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  mkdir(out.c_str(), 0755);
  char tmpl[] = "/tmp/cryptex-corpus-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return Die(Status::FromErrno(errno, "mkdtemp"));
  const std::string work = tmpl;
  if (Status st = adversarial::MakeSourceTree(work + "/src", 7, /*small=*/true); !st.ok()) {
    return Die(st);
  }
  auto base = adversarial::BuildBase(work + "/w", 12, work + "/src");
  if (!base.ok()) return Die(base.status());

  const std::string sb_dir = out + "/superblock", man_dir = out + "/manifest",
                    img_dir = out + "/image", res_dir = out + "/image_resealed";
  auto last_block = [](const Bytes& img) {
    return Bytes(img.end() - format::kBlockSize, img.end());
  };
  Status st;
  auto check = [&](Status s) {
    if (!s.ok() && st.ok()) st = s;
  };
  check(Put(sb_dir, "base", last_block(base->bytes)));
  check(Put(img_dir, "base", base->bytes));
  auto compact = Compact(base->bytes);
  if (!compact.ok()) return Die(compact.status());
  check(Put(res_dir, "base", *compact));
  // The compact layout (what mkpatch writes) of the same tree.
  auto packed = CompactLayoutImage(work + "/src", work + "/packed.cryptex");
  if (!packed.ok()) return Die(packed.status());
  check(Put(sb_dir, "compact_layout", last_block(*packed)));
  check(Put(img_dir, "compact_layout", *packed));
  // A tree of many alike files, whose tables the builder stores by columns
  // (incompat bit 4): the reader's transposition is fuzzed too.
  const std::string many = work + "/many";
  mkdir(many.c_str(), 0755);
  for (int i = 0; i < 96; ++i) {
    const std::string body(static_cast<size_t>(40 + i), static_cast<char>('a' + i % 26));
    check(surgery::WriteAll(many + "/lib" + std::to_string(i) + ".so",
                            std::span(reinterpret_cast<const uint8_t*>(body.data()), body.size())));
  }
  auto columns = CompactLayoutImage(many, work + "/columns.cryptex");
  if (!columns.ok()) return Die(columns.status());
  auto columns_sb = surgery::Peek(*columns);
  if (!columns_sb.ok()) return Die(columns_sb.status());
  if (!columns_sb->columns()) return Die(Status::Internal("the many-file seed is not by columns"));
  check(Put(img_dir, "compact_columns", *columns));

  auto tables = surgery::ReadTables(base->bytes);
  if (!tables.ok()) return Die(tables.status());
  check(Put(man_dir, "base", tables->manifest));
  Manifest patch;
  patch.name = "org.example.engine";
  patch.version = "2.0.1";
  patch.description = "security fix";
  patch.release_counter = 42;
  patch.created_at = 1700000000;
  patch.patch_id = "engine-2.0.1-p1";
  patch.base_root_digest = Digest{};
  patch.base_root_digest->fill(0xab);
  patch.requires_patches = {"engine-2.0.0-p3", "engine-2.0.0-p4"};
  patch.severity = "critical";
  patch.cves = {"CVE-2024-0001", "CVE-2024-0002"};
  patch.released_at = 1700000100;
  patch.activation = "relaunch";
  check(Put(man_dir, "patch", patch.Encode()));

  // Some adversarial cases as seeds: they sit right next to the checks. Kept
  // to a few per area so that the committed corpus stays small.
  const std::set<std::string> resealed = {
      "dir_cycle_to_ancestor",  "dir_hard_linked_same_parent",
      "dirents_duplicate",      "name_slash",
      "file_size_2_64_minus_1", "extent_outside_frame",
      "frames_overlap",         "frame_raw_size_lie",
      "xattr_unsorted",         "symlink_target_outside_strings",
      "whiteout_in_base_image", "content_digest_mismatch"};
  const std::set<std::string> whole = {"sb_regions_overlap", "sb_tree_levels_disagree"};
  int n = 0;
  for (const auto& c : adversarial::AllCases()) {
    auto bytes = c.make(*base);
    if (!bytes.ok()) continue;
    if (c.name.rfind("sb_", 0) == 0 || c.name == "sig_tail_nonzero") {
      check(Put(sb_dir, c.name, last_block(*bytes)));
      if (whole.count(c.name)) check(Put(img_dir, c.name, *bytes));
    } else if (c.name == "manifest_record_overrun") {
      auto t = surgery::ReadTables(*bytes);
      if (t.ok()) check(Put(man_dir, c.name, t->manifest));
    } else if (resealed.count(c.name)) {
      auto cb = Compact(*bytes);
      if (cb.ok()) check(Put(res_dir, c.name, *cb));
    } else {
      continue;
    }
    ++n;
  }
  check(WriteDeltaSeeds(out + "/delta"));
  if (!st.ok()) return Die(st);
  std::printf("wrote seeds for %d cases into %s\n", n, out.c_str());
  std::string rm = "rm -rf '" + work + "'";
  return std::system(rm.c_str()) == 0 ? 0 : 1;
}
