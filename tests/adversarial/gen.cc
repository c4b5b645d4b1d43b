#include "gen.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>

#include "builder.h"
#include "format.h"

namespace cryptex::adversarial {

using namespace format;
using surgery::Bytes;
using surgery::Tables;

namespace {

Status Write(const std::string& path, const std::string& bytes) {
  return surgery::WriteAll(
      path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

std::string Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

Status Mkdir(const std::string& p) {
  if (mkdir(p.c_str(), 0755) != 0) return Status::FromErrno(errno, p);
  return Status::Ok();
}

}  // namespace

Status MakeSourceTree(const std::string& root, uint64_t seed, bool small) {
  CX_RETURN_IF_ERROR(Mkdir(root));
  CX_RETURN_IF_ERROR(Mkdir(root + "/sub"));
  CX_RETURN_IF_ERROR(Mkdir(root + "/sub/deeper"));
  CX_RETURN_IF_ERROR(Mkdir(root + "/z"));
  CX_RETURN_IF_ERROR(Write(root + "/a.txt", "hello, adversary\n"));
  std::string text;
  const size_t text_len = small ? 300 : 3000;
  while (text.size() < text_len)
    text += "the quick brown fox jumps over the lazy dog " + std::to_string(text.size()) + "\n";
  CX_RETURN_IF_ERROR(Write(root + "/b.txt", text));
  // Several chunks of 4 KiB: compressible text mixed with noise.
  const size_t big_len = small ? 2 * 4096 + 17 : 5 * 4096 + 123;
  std::string big;
  for (int i = 0; big.size() < big_len; ++i) {
    big += (i % 3 == 0) ? Random(small ? 50 : 700, seed + i) : text;
  }
  big.resize(big_len);
  CX_RETURN_IF_ERROR(Write(root + "/big.bin", big));
  CX_RETURN_IF_ERROR(Write(root + "/rand.bin", Random(small ? 300 : 9000, seed ^ 0x5eed)));
  std::string sparse((small ? 2 : 3) * 4096, '\0');
  sparse += "tail after three zero chunks\n";
  CX_RETURN_IF_ERROR(Write(root + "/sparse.bin", sparse));
  CX_RETURN_IF_ERROR(Write(root + "/empty", ""));
  CX_RETURN_IF_ERROR(Write(root + "/hard1", "linked twice\n"));
  if (link((root + "/hard1").c_str(), (root + "/sub/hard2").c_str()) != 0) {
    return Status::FromErrno(errno, root + "/sub/hard2");
  }
  CX_RETURN_IF_ERROR(Write(root + "/sub/c.txt", "in sub\n"));
  CX_RETURN_IF_ERROR(Write(root + "/sub/deeper/file.txt", Random(small ? 100 : 5000, seed + 99)));
  if (symlink("a.txt", (root + "/link").c_str()) != 0) return Status::FromErrno(errno, "symlink");
  if (symlink("/nonexistent/outside", (root + "/abs").c_str()) != 0) {
    return Status::FromErrno(errno, "symlink");
  }
  if (mkfifo((root + "/fifo").c_str(), 0644) != 0) return Status::FromErrno(errno, "mkfifo");
  // Best effort: tmpfs and overlayfs may refuse user xattrs.
  (void)setxattr((root + "/a.txt").c_str(), "user.color", "blue", 4, 0);
  (void)setxattr((root + "/sub").c_str(), "user.dir", "yes", 3, 0);
  return Status::Ok();
}

cryptex::Result<Base> BuildBase(const std::string& dir, uint32_t chunk_log2,
                                const std::string& source) {
  const std::string src = source.empty() ? dir + "/src" : source;
  const std::string image = dir + "/base.cryptex";
  CX_RETURN_IF_ERROR(Mkdir(dir));
  if (source.empty()) CX_RETURN_IF_ERROR(MakeSourceTree(src, 7));
  CX_RETURN_IF_ERROR(Mkdir(dir + "/keys"));
  CX_ASSIGN_OR_RETURN(surgery::TestKey key, surgery::MakeTestKey(dir + "/keys"));
  CX_ASSIGN_OR_RETURN(SourceTree tree, ScanDirectory(src));
  BuildOptions opts;
  opts.output_path = image;
  opts.key = &key.key;
  opts.manifest.name = "adversarial";
  opts.manifest.version = "1.0";
  opts.manifest.release_counter = 1;
  opts.manifest.created_at = 1700000000;
  opts.chunk_log2 = chunk_log2;
  opts.threads = 1;
  CX_ASSIGN_OR_RETURN(BuildStats st, WriteImage(tree, opts));
  (void)st;
  CX_ASSIGN_OR_RETURN(surgery::Bytes bytes, surgery::ReadAll(image));
  return Base{dir, src, image, std::move(bytes), std::move(key)};
}

const char* StageName(Stage s) {
  switch (s) {
    case Stage::kOpen:
      return "open";
    case Stage::kAccess:
      return "access";
    case Stage::kVerify:
      return "verify";
  }
  return "?";
}

namespace {

using Make = std::function<cryptex::Result<Bytes>(const Base&)>;
using TableEdit = std::function<Status(Tables&)>;
using SbEdit = std::function<void(SuperblockInfo*)>;

// Decodes the base's tables, applies `edit`, re-lays and re-seals.
Make Edit(TableEdit edit, SbEdit sb = {}) {
  return [edit, sb](const Base& b) -> cryptex::Result<Bytes> {
    CX_ASSIGN_OR_RETURN(Tables t, surgery::ReadTables(b.bytes));
    CX_RETURN_IF_ERROR(edit(t));
    return surgery::Rebuild(b.bytes, t, b.key.key, sb);
  };
}

// Re-signs the base's superblock after `edit`, tree and geometry untouched.
Make Resign(SbEdit edit) {
  return [edit](const Base& b) { return surgery::ResignSuperblock(b.bytes, b.key.key, edit); };
}

Status Missing(const std::string& what) {
  return Status::Internal("the base image has no " + what);
}

// Edits the directory entry for `path`.
Make EditDirent(const std::string& path, std::function<Status(Tables&, DiskDirent&)> fn) {
  return Edit([path, fn](Tables& t) -> Status {
    auto k = t.FindDirent(path);
    if (!k) return Missing(path);
    return fn(t, t.dirents[*k]);
  });
}

// Edits the inode of `path`.
Make EditInode(const std::string& path, std::function<Status(Tables&, DiskInode&)> fn) {
  return Edit([path, fn](Tables& t) -> Status {
    auto ino = t.FindInode(path);
    if (!ino) return Missing(path);
    return fn(t, t.Inode(*ino));
  });
}

// Points the entry for `path` at the directory `target` (as a directory).
Make PointAtDir(const std::string& path, const std::string& target) {
  return EditDirent(path, [target](Tables& t, DiskDirent& d) -> Status {
    auto ino = t.FindInode(target);
    if (!ino) return Missing(target);
    d.inode.set(*ino);
    d.type = kTypeDirectory;
    return Status::Ok();
  });
}

Make Rename(const std::string& path, const std::string& name) {
  return EditDirent(path, [name](Tables& t, DiskDirent& d) -> Status {
    d.name_offset.set(t.AddString(name));
    d.name_len.set(static_cast<uint16_t>(name.size()));
    return Status::Ok();
  });
}

Make EditFrame(size_t index, std::function<void(DiskFrame&)> fn) {
  return Edit([index, fn](Tables& t) -> Status {
    if (t.frames.size() <= index) return Missing("frame " + std::to_string(index));
    fn(t.frames[index]);
    return Status::Ok();
  });
}

// The first compressed frame (stored < raw).
Make EditCompressedFrame(std::function<void(DiskFrame&)> fn) {
  return Edit([fn](Tables& t) -> Status {
    for (auto& f : t.frames) {
      if (f.stored_size.get() < f.raw_size.get()) {
        fn(f);
        return Status::Ok();
      }
    }
    return Missing("compressed frame");
  });
}

// Raw edit of the last block's first 512 bytes, then re-signed.
Make EditSuperblockBytes(std::function<void(uint8_t*)> fn) {
  return [fn](const Base& b) -> cryptex::Result<Bytes> {
    Bytes out = b.bytes;
    fn(out.data() + out.size() - kBlockSize);
    CX_RETURN_IF_ERROR(surgery::SignLastBlock(&out, b.key.key));
    return out;
  };
}

// Block `block` of the data area with one byte changed, re-sealed: the
// result is a valid image of a different tree with the same geometry.
cryptex::Result<Bytes> ResealedVariant(const Base& b, uint64_t offset) {
  CX_ASSIGN_OR_RETURN(SuperblockInfo sb, surgery::Peek(b.bytes));
  Bytes data(b.bytes.begin(), b.bytes.begin() + static_cast<ptrdiff_t>(sb.hash_offset));
  data.at(offset) ^= 0x5a;
  return surgery::SealRaw(std::move(data), surgery::SuperblockOf(b.bytes), b.key.key);
}

// File offset of the first byte of `path`'s first frame.
cryptex::Result<uint64_t> FrameOffsetOf(const Base& b, const std::string& path) {
  CX_ASSIGN_OR_RETURN(Tables t, surgery::ReadTables(b.bytes));
  auto ino = t.FindInode(path);
  if (!ino) return Missing(path);
  const DiskInode& in = t.Inode(*ino);
  if (in.payload_count.get() == 0) return Missing("extents of " + path);
  const DiskExtent& e = t.extents.at(in.payload.get());
  return t.frames.at(e.frame.get()).offset.get();
}

// Points directory `path`'s entry range at [first, first + count), keeping
// its size and link count consistent with the range (so that only the
// sharing is wrong).
Status SetDirRange(Tables& t, const std::string& path, uint64_t first, uint64_t count) {
  auto ino = t.FindInode(path);
  if (!ino) return Missing(path);
  uint32_t subdirs = 0;
  for (uint64_t k = first; k < first + count && k < t.dirents.size(); ++k) {
    subdirs += t.dirents[k].type == kTypeDirectory;
  }
  DiskInode& in = t.Inode(*ino);
  in.payload.set(first);
  in.payload_count.set(static_cast<uint32_t>(count));
  in.size.set(count);
  in.nlink.set(2 + subdirs);
  return Status::Ok();
}

// The metadata amplification (500 directories sharing one
// 20,000-entry range), scaled down: `dirs` new directories listed by z, all
// sharing one range of `entries` new entries that name a.txt's inode
// (link count 1). Each name costs nothing: the image holds `entries`
// entries, a reader that accepts it serves dirs * entries.
Status ShareOneRange(Tables& t, uint32_t dirs, uint32_t entries) {
  auto target = t.FindInode("a.txt");
  auto z = t.FindInode("z");
  if (!target || !z) return Missing("a.txt or z");
  const uint64_t shared = t.dirents.size();
  for (uint32_t i = 0; i < entries; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "f%06u", i);
    DiskDirent d{};
    d.name_offset.set(t.AddString(name));
    d.name_len.set(static_cast<uint16_t>(std::strlen(name)));
    d.inode.set(*target);
    d.type = kTypeRegular;
    t.dirents.push_back(d);
  }
  const DiskInode dir_template = t.Inode(*z);  // an empty directory
  const uint64_t listing = t.dirents.size();
  for (uint32_t i = 0; i < dirs; ++i) {
    DiskInode in = dir_template;
    in.payload.set(shared);
    in.payload_count.set(entries);
    in.size.set(entries);
    in.nlink.set(2);
    t.inodes.push_back(in);
    char name[16];
    std::snprintf(name, sizeof name, "d%04u", i);
    DiskDirent d{};
    d.name_offset.set(t.AddString(name));
    d.name_len.set(static_cast<uint16_t>(std::strlen(name)));
    d.inode.set(static_cast<uint32_t>(t.inodes.size()));
    d.type = kTypeDirectory;
    t.dirents.push_back(d);
  }
  DiskInode& zi = t.Inode(*z);
  zi.payload.set(listing);
  zi.payload_count.set(dirs);
  zi.size.set(dirs);
  zi.nlink.set(2 + dirs);
  return Status::Ok();
}

}  // namespace

std::vector<Case> AllCases() {
  std::vector<Case> c;
  auto add = [&c](std::string name, std::string what, Stage stage, std::string expect, Make make) {
    c.push_back(Case{std::move(name), std::move(what), stage, std::move(expect), std::move(make)});
  };
  const std::string kTwice = "is reachable from two places";

  // ---- directory graph ----
  add("dir_cycle_to_root", "sub/deeper/file.txt becomes a directory entry for the root",
      Stage::kAccess, kTwice, PointAtDir("sub/deeper/file.txt", ""));
  add("dir_cycle_to_ancestor", "sub/deeper/file.txt becomes a directory entry for sub",
      Stage::kAccess, kTwice, PointAtDir("sub/deeper/file.txt", "sub"));
  add("dir_self_loop", "sub/c.txt becomes a directory entry for sub itself", Stage::kAccess, kTwice,
      PointAtDir("sub/c.txt", "sub"));
  add("dir_hard_linked_same_parent", "a.txt becomes a second entry for directory z", Stage::kAccess,
      kTwice, PointAtDir("a.txt", "z"));
  add("dir_hard_linked_other_parent", "sub/c.txt becomes a second entry for directory z",
      Stage::kAccess, kTwice, PointAtDir("sub/c.txt", "z"));

  // ---- references (FORMAT.md section 9: who lists which entries, who names
  //      which inode) ----
  const std::string kShared = "overlap the entries of directory inode";
  add("ref_dir_ranges_shared", "z lists exactly sub/deeper's entries (one range, two directories)",
      Stage::kAccess, kShared, Edit([](Tables& t) -> Status {
        auto deeper = t.FindInode("sub/deeper");
        if (!deeper) return Missing("sub/deeper");
        const DiskInode& d = t.Inode(*deeper);
        return SetDirRange(t, "z", d.payload.get(), d.payload_count.get());
      }));
  add("ref_dir_ranges_overlap", "z lists the last entry of sub's range (ranges overlap)",
      Stage::kAccess, kShared, Edit([](Tables& t) -> Status {
        auto sub = t.FindInode("sub");
        if (!sub) return Missing("sub");
        const DiskInode& d = t.Inode(*sub);
        if (d.payload_count.get() < 2) return Missing("two entries in sub");
        return SetDirRange(t, "z", d.payload.get() + d.payload_count.get() - 1, 1);
      }));
  add("ref_dirent_range_amplification",
      "200 directories under z share one 1,000-entry range naming a.txt (nlink 1)", Stage::kAccess,
      kShared, Edit([](Tables& t) { return ShareOneRange(t, 200, 1000); }));
  add("ref_dirent_in_no_directory", "an extra entry at the end of the table no directory lists",
      Stage::kVerify, "belongs to no directory", Edit([](Tables& t) -> Status {
        auto k = t.FindDirent("a.txt");
        if (!k) return Missing("a.txt");
        t.dirents.push_back(t.dirents[*k]);
        return Status::Ok();
      }));
  add("ref_dir_nlink_wrong", "sub (one subdirectory) has link count 7", Stage::kAccess,
      "link count 7, expected 3", EditInode("sub", [](Tables&, DiskInode& in) {
        in.nlink.set(7);
        return Status::Ok();
      }));
  add("ref_file_nlink_zero", "a.txt has link count 0", Stage::kAccess, "whose link count is 0",
      EditInode("a.txt", [](Tables&, DiskInode& in) {
        in.nlink.set(0);
        return Status::Ok();
      }));
  add("ref_file_nlink_1_named_twice", "hard1 (named /hard1 and /sub/hard2) has link count 1",
      Stage::kVerify, "has link count 1, but directory entry",
      EditInode("hard1", [](Tables&, DiskInode& in) {
        in.nlink.set(1);
        return Status::Ok();
      }));
  add("ref_file_nlink_3_named_twice", "hard1 (named /hard1 and /sub/hard2) has link count 3",
      Stage::kVerify, "has link count 3, but 2 directory entries name it",
      EditInode("hard1", [](Tables&, DiskInode& in) {
        in.nlink.set(3);
        return Status::Ok();
      }));
  add("ref_orphan_inode", "an extra inode (a copy of a.txt's) that no entry names", Stage::kVerify,
      "is named by no directory entry (orphan)", Edit([](Tables& t) -> Status {
        auto ino = t.FindInode("a.txt");
        if (!ino) return Missing("a.txt");
        t.inodes.push_back(t.Inode(*ino));
        return Status::Ok();
      }));

  // ---- directory entries ----
  add("dirent_inode_out_of_range", "sub/c.txt names inode count + 7", Stage::kAccess,
      "is malformed", EditDirent("sub/c.txt", [](Tables& t, DiskDirent& d) {
        d.inode.set(static_cast<uint32_t>(t.inodes.size() + 7));
        return Status::Ok();
      }));
  add("dirent_inode_zero", "sub/c.txt names inode 0", Stage::kAccess, "is malformed",
      EditDirent("sub/c.txt", [](Tables&, DiskDirent& d) {
        d.inode.set(0);
        return Status::Ok();
      }));
  add("dirent_type_mismatch", "a.txt is typed as a symlink", Stage::kAccess,
      "entry type disagrees with inode", EditDirent("a.txt", [](Tables&, DiskDirent& d) {
        d.type = kTypeSymlink;
        return Status::Ok();
      }));
  add("dirent_name_outside_strings", "a.txt's name lies past the strings region", Stage::kAccess,
      "outside the strings region", EditDirent("a.txt", [](Tables& t, DiskDirent& d) {
        d.name_offset.set(t.strings.size() + 100);
        return Status::Ok();
      }));
  add("name_dot", "sub/c.txt renamed \".\"", Stage::kAccess, "has an invalid name",
      Rename("sub/c.txt", "."));
  add("name_dotdot", "sub/c.txt renamed \"..\"", Stage::kAccess, "has an invalid name",
      Rename("sub/c.txt", ".."));
  add("name_slash", "sub/c.txt renamed \"../../etc/passwd\"", Stage::kAccess, "has an invalid name",
      Rename("sub/c.txt", "../../etc/passwd"));
  add("name_nul", "sub/c.txt renamed \"c\\0x\"", Stage::kAccess, "has an invalid name",
      Rename("sub/c.txt", std::string("c\0x", 3)));
  add("name_empty", "sub/c.txt has a zero-length name", Stage::kAccess,
      "has an invalid name (length 0)", Rename("sub/c.txt", ""));
  add("name_too_long", "sub/c.txt has a 300-byte name", Stage::kAccess,
      "has an invalid name (length 300)", Rename("sub/c.txt", std::string(300, 'n')));
  add("dirents_unsorted", "the root's first two entries swapped", Stage::kAccess,
      "entries not sorted or duplicated", Edit([](Tables& t) {
        const uint64_t first = t.Inode(1).payload.get();
        std::swap(t.dirents.at(first), t.dirents.at(first + 1));
        return Status::Ok();
      }));
  add("dirents_duplicate", "b.txt renamed a.txt (two entries \"a.txt\")", Stage::kAccess,
      "entries not sorted or duplicated", Rename("b.txt", "a.txt"));
  add("dir_million_entries", "sub claims 1,000,000 entries", Stage::kAccess,
      "directory entry range out of bounds", EditInode("sub", [](Tables&, DiskInode& in) {
        in.payload_count.set(1000000);
        in.size.set(1000000);
        return Status::Ok();
      }));
  add("dir_ffffffff_entries", "sub claims 0xFFFFFFFF entries", Stage::kAccess,
      "directory entry range out of bounds", EditInode("sub", [](Tables&, DiskInode& in) {
        in.payload_count.set(0xFFFFFFFFu);
        in.size.set(0xFFFFFFFFu);
        return Status::Ok();
      }));
  add("root_million_entries", "the root claims 1,000,000 entries", Stage::kOpen,
      "directory entry range out of bounds", EditInode("", [](Tables&, DiskInode& in) {
        in.payload_count.set(1000000);
        in.size.set(1000000);
        return Status::Ok();
      }));
  add("root_not_a_directory", "inode 1 is an empty regular file", Stage::kOpen,
      "root is not a directory", EditInode("", [](Tables&, DiskInode& in) {
        in.mode.set(S_IFREG | 0644);
        in.size.set(0);
        in.payload_count.set(0);
        return Status::Ok();
      }));

  // ---- inodes ----
  add("file_size_2_63", "big.bin claims 2^63 bytes", Stage::kAccess,
      "extent range does not match the file size", EditInode("big.bin", [](Tables&, DiskInode& in) {
        in.size.set(1ull << 63);
        return Status::Ok();
      }));
  add("file_size_2_64_minus_1", "empty claims 2^64-1 bytes with no extents (count overflow)",
      Stage::kAccess, "extent range does not match the file size",
      EditInode("empty", [](Tables&, DiskInode& in) {
        in.size.set(~0ull);
        return Status::Ok();
      }));
  add("mtime_nsec_out_of_range", "a.txt has mtime_nsec 10^9", Stage::kAccess,
      "nanoseconds out of range", EditInode("a.txt", [](Tables&, DiskInode& in) {
        in.mtime_nsec.set(1000000000u);
        return Status::Ok();
      }));
  add("symlink_length_zero", "link has a zero-length target", Stage::kAccess,
      "symlink length out of range", EditInode("link", [](Tables&, DiskInode& in) {
        in.size.set(0);
        return Status::Ok();
      }));
  add("symlink_target_outside_strings", "link's target lies past the strings region",
      Stage::kAccess, "outside the strings region", EditInode("link", [](Tables& t, DiskInode& in) {
        in.payload.set(t.strings.size() - 2);
        return Status::Ok();
      }));
  add("whiteout_in_base_image", "a.txt becomes a whiteout in a base image", Stage::kAccess,
      "without the whiteouts feature", Edit([](Tables& t) -> Status {
        auto k = t.FindDirent("a.txt");
        auto ino = t.FindInode("a.txt");
        if (!k || !ino) return Missing("a.txt");
        t.dirents[*k].type = kTypeWhiteout;
        t.Inode(*ino).flags.set(kInodeWhiteout);
        return Status::Ok();
      }));

  // ---- extents and frames ----
  add("extent_outside_frame", "big.bin's first extent starts 100 bytes into its frame",
      Stage::kAccess, "overruns frame", EditInode("big.bin", [](Tables& t, DiskInode& in) {
        t.extents.at(in.payload.get()).offset.set(100);
        return Status::Ok();
      }));
  add("extent_offset_ffffffff", "b.txt's extent offset is 0xFFFFFFFF", Stage::kAccess,
      "overruns frame", EditInode("b.txt", [](Tables& t, DiskInode& in) {
        t.extents.at(in.payload.get()).offset.set(0xFFFFFFFFu);
        return Status::Ok();
      }));
  add("extent_frame_out_of_range", "big.bin's first extent names frame count + 5", Stage::kAccess,
      "out of range", EditInode("big.bin", [](Tables& t, DiskInode& in) {
        t.extents.at(in.payload.get()).frame.set(static_cast<uint32_t>(t.frames.size() + 5));
        return Status::Ok();
      }));
  add("frames_overlap", "frame 1 starts one byte after frame 0", Stage::kAccess, "overlaps frame",
      Edit([](Tables& t) -> Status {
        if (t.frames.size() < 2) return Missing("second frame");
        t.frames[1].offset.set(t.frames[0].offset.get() + 1);
        return Status::Ok();
      }));
  add("frame_raw_size_ffffffff", "frame 0 decompresses to 0xFFFFFFFF bytes", Stage::kAccess,
      "descriptor is out of bounds",
      EditFrame(0, [](DiskFrame& f) { f.raw_size.set(0xFFFFFFFFu); }));
  add("frame_stored_size_ffffffff", "frame 0 stores 0xFFFFFFFF bytes", Stage::kAccess,
      "descriptor is out of bounds",
      EditFrame(0, [](DiskFrame& f) { f.stored_size.set(0xFFFFFFFFu); }));
  add("frame_offset_2_63", "frame 0 lies at offset 2^63", Stage::kAccess,
      "descriptor is out of bounds", EditFrame(0, [](DiskFrame& f) { f.offset.set(1ull << 63); }));
  add("frame_zero_length", "frame 0 stores and decompresses to 0 bytes", Stage::kAccess,
      "descriptor is out of bounds", EditFrame(0, [](DiskFrame& f) {
        f.stored_size.set(0);
        f.raw_size.set(0);
      }));
  add("frame_raw_size_lie", "a compressed frame claims one byte less than it decompresses to",
      Stage::kAccess, "does not decompress",
      EditCompressedFrame([](DiskFrame& f) { f.raw_size.set(f.raw_size.get() - 1); }));
  add("zstd_feature_cleared", "compressed frames in an image without the zstd feature",
      Stage::kAccess, "lacks the zstd feature",
      Edit([](Tables&) { return Status::Ok(); },
           [](SuperblockInfo* sb) { sb->incompat &= ~kIncompatZstd; }));

  // ---- xattrs ----
  add("xattr_amplification", "a.txt has 200 xattrs sharing one 64 KiB value", Stage::kAccess,
      "exceed the reader limits", EditInode("a.txt", [](Tables& t, DiskInode& in) {
        const uint64_t value = t.AddString(std::string(kMaxXattrValueLen, 'v'));
        in.xattr_index.set(t.xattrs.size());
        in.xattr_count.set(200);
        for (int i = 0; i < 200; ++i) {
          char name[32];
          std::snprintf(name, sizeof name, "user.x%03d", i);
          DiskXattr x;
          x.name_offset.set(t.AddString(name));
          x.name_len.set(static_cast<uint32_t>(std::strlen(name)));
          x.value_offset.set(value);
          x.value_len.set(kMaxXattrValueLen);
          t.xattrs.push_back(x);
        }
        return Status::Ok();
      }));
  add("xattr_unsorted", "a.txt's xattrs are user.b then user.a", Stage::kAccess,
      "xattrs not sorted by name or duplicated", EditInode("a.txt", [](Tables& t, DiskInode& in) {
        in.xattr_index.set(t.xattrs.size());
        in.xattr_count.set(2);
        for (const char* name : {"user.b", "user.a"}) {
          DiskXattr x;
          x.name_offset.set(t.AddString(name));
          x.name_len.set(6);
          x.value_offset.set(t.AddString("v"));
          x.value_len.set(1);
          t.xattrs.push_back(x);
        }
        return Status::Ok();
      }));
  add("xattr_range_out_of_bounds", "a.txt claims xattrs past the table", Stage::kAccess,
      "xattr range out of bounds", EditInode("a.txt", [](Tables& t, DiskInode& in) {
        in.xattr_index.set(t.xattrs.size());
        in.xattr_count.set(3);
        return Status::Ok();
      }));

  // ---- superblock (re-signed) ----
  add("sb_tree_levels_disagree", "tree_levels + 1, re-signed", Stage::kOpen,
      "tree geometry disagrees with data size",
      Resign([](SuperblockInfo* sb) { sb->tree_levels += 1; }));
  add("sb_hash_blocks_disagree", "hash_blocks + 1, re-signed", Stage::kOpen,
      "tree geometry disagrees with data size",
      Resign([](SuperblockInfo* sb) { sb->hash_blocks += 1; }));
  add("sb_data_blocks_disagree", "data_blocks - 1, re-signed", Stage::kOpen,
      "hash_offset != data_blocks*4096", Resign([](SuperblockInfo* sb) { sb->data_blocks -= 1; }));
  add("sb_region_2_63", "the inode region is 2^63 bytes long, re-signed", Stage::kOpen,
      "lies outside the verified area",
      Resign([](SuperblockInfo* sb) { sb->regions[kRegionInodes].length = 1ull << 63; }));
  add("sb_regions_overlap", "the xattr region is the inode region, re-signed", Stage::kOpen,
      "overlap",
      Resign([](SuperblockInfo* sb) { sb->regions[kRegionXattrs] = sb->regions[kRegionInodes]; }));
  add("sb_chunk_2_63", "chunk_size_log2 = 63, re-signed", Stage::kOpen, "out of range",
      Resign([](SuperblockInfo* sb) { sb->chunk_log2 = 63; }));
  add("sb_unknown_incompat", "incompat bit 40 set, re-signed", Stage::kOpen,
      "unknown incompatible feature bits",
      Resign([](SuperblockInfo* sb) { sb->incompat |= 1ull << 40; }));
  add("sb_reserved_nonzero", "a reserved superblock byte set, re-signed", Stage::kOpen,
      "reserved bytes are not zero",
      EditSuperblockBytes([](uint8_t* sb) { sb[offsetof(DiskSuperblock, reserved) + 7] = 1; }));
  add("sig_tail_nonzero", "a byte after the signature block set (not covered by it)", Stage::kOpen,
      "bytes after the signature block are not zero", [](const Base& b) {
        Bytes out = b.bytes;
        out[out.size() - 100] = 0xEE;
        return cryptex::Result<Bytes>(std::move(out));
      });
  add("manifest_record_overrun", "the first manifest record claims 0x7FFFFFFF bytes", Stage::kOpen,
      "record value past end of manifest", Edit([](Tables& t) -> Status {
        if (t.manifest.size() < sizeof(DiskManifestHeader) + sizeof(DiskTlv)) {
          return Missing("manifest record");
        }
        Le32 len;
        len.set(0x7FFFFFFFu);
        std::memcpy(t.manifest.data() + sizeof(DiskManifestHeader) + 4, &len, 4);
        return Status::Ok();
      }));

  // ---- the tree itself ----
  add("swapped_hash_area",
      "validly signed superblock over image A paired with the hash tree of image B", Stage::kOpen,
      "does not match its parent", [](const Base& b) -> cryptex::Result<Bytes> {
        CX_ASSIGN_OR_RETURN(uint64_t off, FrameOffsetOf(b, "big.bin"));
        CX_ASSIGN_OR_RETURN(Bytes other, ResealedVariant(b, off));
        CX_ASSIGN_OR_RETURN(SuperblockInfo sb, surgery::Peek(b.bytes));
        if (other.size() != b.bytes.size()) return Status::Internal("geometry changed");
        Bytes out = b.bytes;
        std::copy(other.begin() + static_cast<ptrdiff_t>(sb.hash_offset), other.end() - kBlockSize,
                  out.begin() + static_cast<ptrdiff_t>(sb.hash_offset));
        return out;
      });
  add("swapped_data_area", "signed superblock and hash tree of A over the data blocks of B",
      Stage::kAccess, "does not match the hash tree", [](const Base& b) -> cryptex::Result<Bytes> {
        CX_ASSIGN_OR_RETURN(uint64_t off, FrameOffsetOf(b, "big.bin"));
        CX_ASSIGN_OR_RETURN(Bytes other, ResealedVariant(b, off));
        CX_ASSIGN_OR_RETURN(SuperblockInfo sb, surgery::Peek(b.bytes));
        Bytes out = b.bytes;
        std::copy(other.begin(), other.begin() + static_cast<ptrdiff_t>(sb.hash_offset),
                  out.begin());
        return out;
      });
  add("header_block_garbage", "the header block's magic changed, re-sealed", Stage::kVerify,
      "header block at offset 0 is malformed",
      [](const Base& b) -> cryptex::Result<Bytes> { return ResealedVariant(b, 0); });
  add("content_digest_mismatch", "a.txt's recorded fs-verity digest changed", Stage::kVerify,
      "fs-verity digest", EditInode("a.txt", [](Tables&, DiskInode& in) {
        in.digest[0] ^= 1;
        return Status::Ok();
      }));
  return c;
}

}  // namespace cryptex::adversarial
