#include "state.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace cryptex::store {
namespace {

using Json = nlohmann::ordered_json;
constexpr const char* kFormat = "cryptex-store-state/1";
constexpr size_t kMaxNameLen = 128;

std::string Hex(const Digest& d) { return HexEncode(d); }

Digest Unhex(const std::string& s) {
  std::string raw;
  if (s.size() != 64 || !HexDecode(s, &raw)) throw std::runtime_error("bad digest " + s);
  Digest d;
  std::copy(raw.begin(), raw.end(), d.begin());
  return d;
}

Json PatchToJson(const PatchEntry& p) {
  Json j;
  j["id"] = p.id;
  j["version"] = p.version;
  j["release_counter"] = p.release_counter;
  j["activation"] = p.activation;
  j["severity"] = p.severity;
  j["cves"] = p.cves;
  j["requires"] = p.requires_patches;
  j["installed_at"] = p.installed_at;
  j["size"] = p.size;
  j["root"] = Hex(p.root);
  j["tree_files"] = p.tree_files;
  j["tree_bytes"] = p.tree_bytes;
  if (p.sha256) j["sha256"] = Hex(*p.sha256);
  if (p.tree_sha256) j["tree_sha256"] = Hex(*p.tree_sha256);
  return j;
}

PatchEntry PatchFromJson(const Json& j) {
  PatchEntry p;
  p.id = j.at("id").get<std::string>();
  p.version = j.at("version").get<std::string>();
  p.release_counter = j.at("release_counter").get<uint64_t>();
  p.activation = j.at("activation").get<std::string>();
  p.severity = j.at("severity").get<std::string>();
  p.cves = j.at("cves").get<std::vector<std::string>>();
  p.requires_patches = j.at("requires").get<std::vector<std::string>>();
  p.installed_at = j.at("installed_at").get<int64_t>();
  p.size = j.at("size").get<uint64_t>();
  p.root = Unhex(j.at("root").get<std::string>());
  p.tree_files = j.at("tree_files").get<uint64_t>();
  p.tree_bytes = j.at("tree_bytes").get<uint64_t>();
  if (j.contains("sha256")) p.sha256 = Unhex(j.at("sha256").get<std::string>());
  if (j.contains("tree_sha256")) p.tree_sha256 = Unhex(j.at("tree_sha256").get<std::string>());
  return p;
}

}  // namespace

const PatchEntry* LineState::Find(const std::string& id) const {
  for (const auto& p : patches) {
    if (p.id == id) return &p;
  }
  return nullptr;
}

bool LineState::IsActive(const std::string& id) const {
  return std::find(active.begin(), active.end(), id) != active.end();
}

std::string StoreState::Encode() const {
  Json j;
  j["format"] = kFormat;
  j["history"] = {{"records", history.records}, {"last", Hex(history.last)}};
  Json lines_j = Json::object();
  for (const auto& [name, l] : lines) {
    Json lj;
    lj["base_version"] = l.base_version;
    lj["base_root"] = Hex(l.base_root);
    lj["base_size"] = l.base_size;
    lj["added_at"] = l.added_at;
    lj["highest_counter"] = l.highest_counter;
    Json ps = Json::array();
    for (const auto& p : l.patches) ps.push_back(PatchToJson(p));
    lj["patches"] = ps;
    lj["active"] = l.active;
    lines_j[name] = lj;
  }
  j["lines"] = lines_j;
  return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

Result<StoreState> StoreState::Decode(const std::string& bytes, const std::string& what) {
  try {
    const Json j = Json::parse(bytes);
    if (j.at("format").get<std::string>() != kFormat) {
      return Status::Unsupported(what + ": unknown state format " + j.at("format").dump());
    }
    StoreState s;
    s.history.records = j.at("history").at("records").get<uint64_t>();
    s.history.last = Unhex(j.at("history").at("last").get<std::string>());
    for (const auto& [name, lj] : j.at("lines").items()) {
      LineState l;
      l.name = name;
      l.base_version = lj.at("base_version").get<std::string>();
      l.base_root = Unhex(lj.at("base_root").get<std::string>());
      l.base_size = lj.at("base_size").get<uint64_t>();
      l.added_at = lj.at("added_at").get<int64_t>();
      l.highest_counter = lj.at("highest_counter").get<uint64_t>();
      for (const auto& pj : lj.at("patches")) l.patches.push_back(PatchFromJson(pj));
      l.active = lj.at("active").get<std::vector<std::string>>();
      CX_RETURN_IF_ERROR(CheckStoreName(name, what + ": line name"));
      for (const auto& p : l.patches) CX_RETURN_IF_ERROR(CheckStoreName(p.id, what + ": patch id"));
      for (const auto& a : l.active) {
        if (l.Find(a) == nullptr) {
          return Status::Corruption(what + ": line " + name + ": active patch " + a +
                                    " is not installed");
        }
      }
      s.lines.emplace(name, std::move(l));
    }
    return s;
  } catch (const std::exception& e) {
    return Status::Corruption(what + ": not a valid store state (" + e.what() + ")");
  }
}

Status CheckStoreName(const std::string& name, const std::string& what) {
  const bool ok_len = !name.empty() && name.size() <= kMaxNameLen && name[0] != '.';
  const bool ok_chars = std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == '+';
  });
  if (ok_len && ok_chars) return Status::Ok();
  return Status::InvalidArgument(what + " '" + name +
                                 "' cannot name a file in the store: use 1 to 128 of "
                                 "[A-Za-z0-9._+-], not starting with '.'");
}

}  // namespace cryptex::store
