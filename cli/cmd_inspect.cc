// cryptex inspect IMAGE [--json]
#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cli.h"
#include "format.h"
#include "json.h"
#include "sha256.h"
#include "terminal.h"

namespace cryptex::cli {

namespace {

// What the image holds, by kind of inode, and its sizes.
struct InodeCounts {
  uint64_t files = 0, dirs = 0, links = 0, other = 0;
  uint64_t content = 0;  // bytes of regular files
  uint64_t stored = 0;   // bytes of the data region
  // Content over stored bytes, to 4 decimals (1 for an empty data region).
  double ratio() const {
    if (stored == 0) return 1.0;
    return std::round(static_cast<double>(content) / static_cast<double>(stored) * 1e4) / 1e4;
  }
};

Result<InodeCounts> Count(const Image& img) {
  InodeCounts c;
  for (uint64_t ino = 1; ino <= img.inode_count(); ++ino) {
    CX_ASSIGN_OR_RETURN(InodeInfo in, img.GetInode(ino));
    if (in.is_reg()) {
      ++c.files;
      c.content += in.size;
    } else if (in.is_dir()) {
      ++c.dirs;
    } else if (in.is_symlink()) {
      ++c.links;
    } else {
      ++c.other;
    }
  }
  c.stored = img.superblock().regions[format::kRegionData].length;
  return c;
}

// One entry of a patch's tree and how the patch ships it (inspect works on
// the patch alone: the raw Image API, no lower state).
struct PatchEntry {
  std::string path;     // "/a/b"
  std::string how;      // delta, lower_content, data, whiteout, opaque_dir, symlink, ...
  std::string source;   // delta, lower_content: "/" + the lower file's path
  uint64_t size = 0;    // regular files: the target's size
  uint64_t stored = 0;  // regular files: bytes the patch stores
  std::string digest;   // regular files: the target's fs-verity digest (hex)
};

// Every entry of the patch but plain (merged) directories, depth first in
// name order. `depth` of `dir`: deeper than the format allows is refused.
Status ListPatch(const Image& img, uint64_t dir, const std::string& prefix, uint32_t depth,
                 std::vector<PatchEntry>* out) {
  if (depth > format::kMaxDirDepth) {
    return Status::Unsupported(img.path() + ": " + prefix.substr(0, 200) +
                               "...: directories nested deeper than " +
                               std::to_string(format::kMaxDirDepth) + " levels");
  }
  std::vector<DirEntry> entries;
  CX_RETURN_IF_ERROR(img.ReadDir(dir, 0, [&](const DirEntry& e, uint64_t) {
    entries.push_back(e);
    return true;
  }));
  for (const DirEntry& e : entries) {
    PatchEntry p;
    p.path = prefix + "/" + e.name;
    CX_ASSIGN_OR_RETURN(InodeInfo in, img.GetInode(e.ino));
    if (e.type == format::kTypeWhiteout) {
      p.how = "whiteout";
    } else if (in.is_dir()) {
      if (in.flags & format::kInodeOpaque) {
        p.how = "opaque_dir";
        out->push_back(p);
      }
      CX_RETURN_IF_ERROR(ListPatch(img, e.ino, p.path, depth + 1, out));
      continue;
    } else if (in.is_reg()) {
      p.size = in.size;
      p.stored = in.stored_bytes();
      p.digest = HexEncode(in.digest);
      if (in.is_sourced()) {
        CX_ASSIGN_OR_RETURN(std::string src, img.SourcePath(e.ino));
        p.source = "/" + src;
        p.how = (in.flags & format::kInodeDelta) ? "delta" : "lower_content";
      } else {
        p.how = "data";
      }
    } else if (in.is_symlink()) {
      p.how = "symlink";
    } else {
      p.how = "special";
    }
    out->push_back(std::move(p));
  }
  return Status::Ok();
}

// Manifest times: "-" for none, else ISO 8601 UTC.
std::string Time(uint64_t t) {
  if (t == 0) return "-";
  if (t > static_cast<uint64_t>(INT64_MAX)) return std::to_string(t);
  return UtcTime(static_cast<int64_t>(t), "%Y-%m-%dT%H:%M:%SZ");
}

Json JsonDocument(const std::string& path, const Image& img, const InodeCounts& c,
                  const std::string& verity, const std::vector<PatchEntry>& entries) {
  const auto& sb = img.superblock();
  const auto& m = img.manifest();
  Json j;
  j["image"] = path;
  j["format_version"] = sb.format_version;
  j["kind"] = sb.kind_name();
  j["name"] = m.name;
  j["version"] = m.version;
  j["description"] = m.description;
  j["release_counter"] = m.release_counter;
  j["created_at"] = m.created_at;
  if (sb.kind == format::kKindPatch) {
    j["patch_id"] = m.patch_id;
    j["base_root_digest"] = m.base_root_digest ? HexEncode(*m.base_root_digest) : "";
    j["requires"] = m.requires_patches;
    j["severity"] = m.severity;
    j["cves"] = m.cves;
    j["released_at"] = m.released_at;
    j["activation"] = m.activation;
  }
  j["signer_key_id"] = HexEncode(sb.key_id);
  j["files"] = c.files;
  j["directories"] = c.dirs;
  j["symlinks"] = c.links;
  j["other"] = c.other;
  j["content_bytes"] = c.content;
  j["stored_bytes"] = c.stored;
  j["image_bytes"] = sb.image_size;
  j["layout"] = sb.compact() ? "compact" : "classic";
  if (sb.compact()) {
    j["packed_metadata"] = Json{{"offset", sb.packed_meta_offset},
                                {"stored_bytes", sb.packed_meta_stored},
                                {"raw_bytes", sb.packed_meta_raw},
                                {"tables_by", sb.columns() ? "columns" : "rows"}};
  }
  j["compression_ratio"] = c.ratio();
  j["chunk_size"] = sb.chunk_size();
  j["root_hash"] = HexEncode(sb.root_hash);
  j["verity"] = Json{{"hash", "sha256"},
                     {"format", 1},
                     {"data_block_size", 4096},
                     {"hash_block_size", 4096},
                     {"data_blocks", sb.data_blocks},
                     {"hash_offset", sb.hash_offset},
                     {"salt", HexEncode(sb.salt)},
                     {"levels", sb.tree_levels}};
  j["veritysetup_command"] = verity;
  if (sb.kind == format::kKindPatch) {
    Json files = Json::array();
    for (const PatchEntry& e : entries) {
      Json f;
      f["path"] = e.path;
      f["how"] = e.how;
      if (!e.source.empty()) f["source"] = e.source;
      if (!e.digest.empty()) {
        f["size"] = e.size;
        f["stored_bytes"] = e.stored;
        f["digest"] = e.digest;
      }
      files.push_back(std::move(f));
    }
    j["patch_entries"] = std::move(files);
  }
  return j;
}
// Human-readable form. Text from the image (manifest strings) and the path
// are escaped on a terminal (terminal.h); piped, they are written as is.
void PrintText(const std::string& path, const Image& img, const InodeCounts& c,
               const std::string& verity, const std::vector<PatchEntry>& entries) {
  const bool tty = StdoutIsTerminal();
  const auto t = [tty](const std::string& s) { return ForTerminal(s, tty); };
  const auto& sb = img.superblock();
  const auto& m = img.manifest();
  std::printf("image:           %s\n", t(path).c_str());
  std::printf("kind:            %s (format %u)\n", sb.kind_name(), sb.format_version);
  std::printf("name:            %s\n", t(m.name).c_str());
  std::printf("version:         %s\n", t(m.version).c_str());
  if (!m.description.empty()) std::printf("description:     %s\n", t(m.description).c_str());
  std::printf("release counter: %llu\n", static_cast<unsigned long long>(m.release_counter));
  std::printf("created:         %s\n", Time(m.created_at).c_str());
  if (sb.kind == format::kKindPatch) {
    std::printf("patch id:        %s\n", t(m.patch_id).c_str());
    std::printf("applies to:      %s\n",
                m.base_root_digest ? HexEncode(*m.base_root_digest).c_str() : "-");
    for (const auto& r : m.requires_patches) std::printf("requires:        %s\n", t(r).c_str());
    std::printf("severity:        %s\n", m.severity.empty() ? "-" : t(m.severity).c_str());
    for (const auto& cve : m.cves) std::printf("fixes:           %s\n", t(cve).c_str());
    std::printf("released:        %s\n", Time(m.released_at).c_str());
    std::printf("activation:      %s\n", t(m.activation).c_str());
  }
  std::printf("signed by:       key %s\n", HexEncode(sb.key_id).c_str());
  std::printf("contents:        %llu files, %llu directories, %llu symlinks, %llu other\n",
              static_cast<unsigned long long>(c.files), static_cast<unsigned long long>(c.dirs),
              static_cast<unsigned long long>(c.links), static_cast<unsigned long long>(c.other));
  std::printf("content size:    %s (%llu bytes)\n", HumanBytes(c.content).c_str(),
              static_cast<unsigned long long>(c.content));
  std::printf("stored data:     %s (compression ratio %.2fx, chunk %s)\n",
              HumanBytes(c.stored).c_str(), c.ratio(), HumanBytes(sb.chunk_size()).c_str());
  std::printf("image size:      %s (%llu bytes)\n", HumanBytes(sb.image_size).c_str(),
              static_cast<unsigned long long>(sb.image_size));
  if (sb.compact()) {
    std::printf("layout:          compact (tables %s packed into %s, by %s)\n",
                HumanBytes(sb.packed_meta_raw).c_str(), HumanBytes(sb.packed_meta_stored).c_str(),
                sb.columns() ? "columns" : "rows");
  } else {
    std::printf("layout:          classic\n");
  }
  std::printf("root hash:       %s\n", HexEncode(sb.root_hash).c_str());
  std::printf(
      "verity:          sha256, format 1, 4096-byte blocks, %llu data blocks, hash "
      "offset %llu, %u levels\n",
      static_cast<unsigned long long>(sb.data_blocks),
      static_cast<unsigned long long>(sb.hash_offset), sb.tree_levels);
  std::printf("salt:            %s\n", HexEncode(sb.salt).c_str());
  std::printf("check the tree independently with:\n  %s\n", verity.c_str());
  if (sb.kind != format::kKindPatch) return;
  std::printf("patch entries:\n");
  for (const PatchEntry& e : entries) {
    std::string how;
    if (e.how == "delta") {
      how = "delta against " + t(e.source) + ": " + std::to_string(e.stored) + " bytes";
    } else if (e.how == "lower_content") {
      how = "lower content " + t(e.source);
    } else if (e.how == "data") {
      how = "data: " + std::to_string(e.stored) + " bytes";
    } else if (e.how == "opaque_dir") {
      how = "opaque dir";
    } else {
      how = e.how;
    }
    if (!e.digest.empty())
      how += " (" + std::to_string(e.size) + " bytes, digest " + e.digest + ")";
    std::printf("  %s: %s\n", t(e.path).c_str(), how.c_str());
  }
}

}  // namespace

int CmdInspect(int argc, char** argv) {
  Args args(argc, argv, {"--trust", "--pubkey"}, {"--json"});
  if (args.help()) {
    std::printf(
        "usage: cryptex inspect IMAGE [--json] [--trust DIR | --pubkey FILE]\n\n"
        "Shows the manifest, contents summary, sizes, compression ratio, root hash,\n"
        "verity parameters and the veritysetup command line that checks the tree.\n"
        "For a patch, also what it applies to and how it ships each entry (delta\n"
        "against a lower file, lower content, data, whiteout, opaque dir); no base\n"
        "is needed.\n"
        "The signature is checked first (default trust dir /etc/cryptex/keys).\n");
    return kExitOk;
  }
  if (!args.ok()) return Usage("inspect", args.error());
  if (args.positional().size() != 1) return Usage("inspect", "expected one IMAGE");
  const std::string& path = args.positional()[0];
  auto img = OpenImage(path, args);
  if (!img.ok()) return Fail("inspect", img.status());
  Result<InodeCounts> counts = Count(**img);
  if (!counts.ok()) return Fail("inspect", counts.status());
  const SuperblockInfo& sb = (*img)->superblock();
  std::vector<PatchEntry> entries;
  if (sb.kind == format::kKindPatch) {
    if (Status st = ListPatch(**img, (*img)->root_ino(), "", 0, &entries); !st.ok()) {
      return Fail("inspect", st);
    }
  }
  if (args.Has("--json")) {
    return PrintJson("inspect",
                     JsonDocument(path, **img, *counts, sb.VeritysetupCommand(path), entries));
  }
  // On a terminal the path is quoted for bash with escapes instead of raw
  // control bytes; otherwise for any POSIX sh, byte for byte.
  const std::string verity =
      StdoutIsTerminal() ? sb.VeritysetupCommand(path, ShellEscape) : sb.VeritysetupCommand(path);
  PrintText(path, **img, *counts, verity, entries);
  return kExitOk;
}

}  // namespace cryptex::cli
