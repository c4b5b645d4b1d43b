// cryptex inspect IMAGE [--json]
#include <sys/stat.h>

#include <cstdio>
#include <ctime>

#include "cli.h"
#include "format.h"

namespace cryptex::cli {

namespace {

std::string Time(uint64_t t) {
  if (t == 0) return "-";
  time_t tt = static_cast<time_t>(t);
  char buf[64];
  struct tm tm;
  gmtime_r(&tt, &tm);
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

int CmdInspect(int argc, char** argv) {
  Args args(argc, argv, {"--trust", "--pubkey"}, {"--json"});
  if (args.help()) {
    std::printf(
        "usage: cryptex inspect IMAGE [--json] [--trust DIR | --pubkey FILE]\n\n"
        "Shows the manifest, contents summary, sizes, compression ratio, root hash,\n"
        "verity parameters and the veritysetup command line that checks the tree.\n"
        "The signature is checked first (default trust dir /etc/cryptex/keys).\n");
    return kExitOk;
  }
  if (!args.ok()) return Usage("inspect", args.error());
  if (args.positional().size() != 1) return Usage("inspect", "expected one IMAGE");
  const std::string& path = args.positional()[0];
  auto imgr = OpenImage(path, args);
  if (!imgr.ok()) return Fail("inspect", imgr.status());
  const Image& img = **imgr;
  const auto& sb = img.superblock();
  const auto& m = img.manifest();
  uint64_t files = 0, dirs = 0, links = 0, other = 0, content = 0;
  for (uint64_t ino = 1; ino <= img.inode_count(); ++ino) {
    auto in = img.GetInode(ino);
    if (!in.ok()) return Fail("inspect", in.status());
    if (in->is_reg()) {
      ++files;
      content += in->size;
    } else if (in->is_dir()) {
      ++dirs;
    } else if (in->is_symlink()) {
      ++links;
    } else {
      ++other;
    }
  }
  const uint64_t stored = sb.regions[format::kRegionData].length;
  const double ratio = stored ? static_cast<double>(content) / static_cast<double>(stored) : 1.0;
  const std::string verity = sb.VeritysetupCommand(path);
  if (args.Has("--json")) {
    auto list = [](const std::vector<std::string>& v) {
      std::string o = "[";
      for (size_t i = 0; i < v.size(); ++i) o += (i ? "," : "") + JsonString(v[i]);
      return o + "]";
    };
    std::printf("{\n");
    std::printf("  \"image\": %s,\n", JsonString(path).c_str());
    std::printf("  \"format_version\": %u,\n  \"kind\": \"%s\",\n", sb.format_version,
                sb.kind_name());
    std::printf("  \"name\": %s,\n  \"version\": %s,\n  \"description\": %s,\n",
                JsonString(m.name).c_str(), JsonString(m.version).c_str(),
                JsonString(m.description).c_str());
    std::printf("  \"release_counter\": %llu,\n  \"created_at\": %llu,\n",
                static_cast<unsigned long long>(m.release_counter),
                static_cast<unsigned long long>(m.created_at));
    if (sb.kind == format::kKindPatch) {
      std::printf("  \"patch_id\": %s,\n  \"base_root_digest\": \"%s\",\n  \"requires\": %s,\n",
                  JsonString(m.patch_id).c_str(),
                  m.base_root_digest ? HexEncode(*m.base_root_digest).c_str() : "",
                  list(m.requires_patches).c_str());
      std::printf(
          "  \"severity\": %s,\n  \"cves\": %s,\n  \"released_at\": %llu,\n"
          "  \"activation\": %s,\n",
          JsonString(m.severity).c_str(), list(m.cves).c_str(),
          static_cast<unsigned long long>(m.released_at), JsonString(m.activation).c_str());
    }
    std::printf("  \"signer_key_id\": \"%s\",\n", HexEncode(sb.key_id).c_str());
    std::printf(
        "  \"files\": %llu,\n  \"directories\": %llu,\n  \"symlinks\": %llu,\n"
        "  \"other\": %llu,\n",
        static_cast<unsigned long long>(files), static_cast<unsigned long long>(dirs),
        static_cast<unsigned long long>(links), static_cast<unsigned long long>(other));
    std::printf(
        "  \"content_bytes\": %llu,\n  \"stored_bytes\": %llu,\n  \"image_bytes\": %llu,\n"
        "  \"compression_ratio\": %.4f,\n  \"chunk_size\": %llu,\n",
        static_cast<unsigned long long>(content), static_cast<unsigned long long>(stored),
        static_cast<unsigned long long>(sb.image_size), ratio,
        static_cast<unsigned long long>(sb.chunk_size()));
    std::printf("  \"root_hash\": \"%s\",\n", HexEncode(sb.root_hash).c_str());
    std::printf(
        "  \"verity\": {\"hash\": \"sha256\", \"format\": 1, \"data_block_size\": 4096, "
        "\"hash_block_size\": 4096, \"data_blocks\": %llu, \"hash_offset\": %llu, "
        "\"salt\": \"%s\", \"levels\": %u},\n",
        static_cast<unsigned long long>(sb.data_blocks),
        static_cast<unsigned long long>(sb.hash_offset), HexEncode(sb.salt).c_str(),
        sb.tree_levels);
    std::printf("  \"veritysetup_command\": %s\n}\n", JsonString(verity).c_str());
    return kExitOk;
  }
  std::printf("image:           %s\n", path.c_str());
  std::printf("kind:            %s (format %u)\n", sb.kind_name(), sb.format_version);
  std::printf("name:            %s\n", m.name.c_str());
  std::printf("version:         %s\n", m.version.c_str());
  if (!m.description.empty()) std::printf("description:     %s\n", m.description.c_str());
  std::printf("release counter: %llu\n", static_cast<unsigned long long>(m.release_counter));
  std::printf("created:         %s\n", Time(m.created_at).c_str());
  if (sb.kind == format::kKindPatch) {
    std::printf("patch id:        %s\n", m.patch_id.c_str());
    std::printf("applies to:      %s\n",
                m.base_root_digest ? HexEncode(*m.base_root_digest).c_str() : "-");
    for (const auto& r : m.requires_patches) std::printf("requires:        %s\n", r.c_str());
    std::printf("severity:        %s\n", m.severity.c_str());
    for (const auto& c : m.cves) std::printf("fixes:           %s\n", c.c_str());
    std::printf("released:        %s\n", Time(m.released_at).c_str());
    std::printf("activation:      %s\n", m.activation.c_str());
  }
  std::printf("signed by:       key %s\n", HexEncode(sb.key_id).c_str());
  std::printf("contents:        %llu files, %llu directories, %llu symlinks, %llu other\n",
              static_cast<unsigned long long>(files), static_cast<unsigned long long>(dirs),
              static_cast<unsigned long long>(links), static_cast<unsigned long long>(other));
  std::printf("content size:    %s (%llu bytes)\n", HumanBytes(content).c_str(),
              static_cast<unsigned long long>(content));
  std::printf("stored data:     %s (compression ratio %.2fx, chunk %s)\n",
              HumanBytes(stored).c_str(), ratio, HumanBytes(sb.chunk_size()).c_str());
  std::printf("image size:      %s (%llu bytes)\n", HumanBytes(sb.image_size).c_str(),
              static_cast<unsigned long long>(sb.image_size));
  std::printf("root hash:       %s\n", HexEncode(sb.root_hash).c_str());
  std::printf(
      "verity:          sha256, format 1, 4096-byte blocks, %llu data blocks, hash "
      "offset %llu, %u levels\n",
      static_cast<unsigned long long>(sb.data_blocks),
      static_cast<unsigned long long>(sb.hash_offset), sb.tree_levels);
  std::printf("salt:            %s\n", HexEncode(sb.salt).c_str());
  std::printf("check the tree independently with:\n  %s\n", verity.c_str());
  return kExitOk;
}

}  // namespace cryptex::cli
