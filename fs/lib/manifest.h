// The manifest: who/what/which version an image is, and for patches what they
// apply to and fix. Encoded as TLV records (format.h, docs/FORMAT.md) inside
// the verified region.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "sha256.h"
#include "status.h"

namespace cryptex {

struct Manifest {
  std::string name;
  std::string version;
  std::string description;
  uint64_t release_counter = 0;
  uint64_t created_at = 0;
  // Patch images only.
  std::string patch_id;
  std::optional<Digest> base_root_digest;
  std::vector<std::string> requires_patches;
  std::string severity;  // low|medium|high|critical
  std::vector<std::string> cves;
  uint64_t released_at = 0;
  std::string activation;  // relaunch|reboot

  std::vector<uint8_t> Encode() const;
  // kOk iff Decode would accept Encode()'s bytes unchanged, with the same
  // limits (format.h): a non-empty name; every string at most
  // format::kMaxManifestStringLen bytes and NUL-free; no empty entry in
  // requires_patches or cves (Encode would drop it); at most
  // format::kMaxManifestRecords records and format::kMaxManifestBytes
  // encoded. kInvalidArgument naming the field and the limit otherwise.
  Status Validate() const;
  // Validates everything: magic, record bounds, lengths, unknown critical tags,
  // UTF-8-free but NUL-free strings, bounded counts. `what` names the source in
  // errors (e.g. "app.cryptex: manifest region at offset 4096").
  static Result<Manifest> Decode(std::span<const uint8_t> bytes, const std::string& what);
};

}  // namespace cryptex
