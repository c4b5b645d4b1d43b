#include "decisions.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>
#include <span>
#include <utility>

#include "durable.h"

namespace cryptex::store {
namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kDecisionsFormat = "cryptex-agent-decisions/1";
constexpr const char* kHealthFormat = "cryptex-agent-health/1";

std::string Dump(const Json& j) { return j.dump(1, ' ', false, Json::error_handler_t::replace); }

Status Write(const std::string& path, const std::string& bytes) {
  return ReplaceFile(path, std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

// The file's bytes, or "" if it does not exist.
Result<std::string> ReadIfAny(const std::string& path) {
  auto b = ReadWholeFile(path);
  if (!b.ok() && b.status().code() == Code::kNotFound) return std::string();
  return b;
}

Status CheckFormat(const Json& j, const char* format, const std::string& what) {
  if (!j.is_object() || j.value("format", "") != format) {
    return Status::Corruption(what + ": not a " + format + " document");
  }
  return Status::Ok();
}

}  // namespace

std::string Decisions::Encode() const {
  Json j;
  j["format"] = kDecisionsFormat;
  Json ps = Json::object();
  for (const auto& [key, d] : by_patch) {
    ps[key] = {{"line", d.line},
               {"patch", d.patch},
               {"version", d.version},
               {"verdict", d.verdict},
               {"until", d.until},
               {"who", d.who},
               {"reason", d.reason},
               {"at", d.at},
               {"chain", d.chain},
               {"activation", d.activation},
               {"activated_at", d.activated_at},
               {"failed", d.failed}};
  }
  j["patches"] = ps;
  j["refused_files"] = refused_files;
  return Dump(j) + "\n";
}

Result<Decisions> Decisions::Decode(const std::string& bytes, const std::string& what) {
  Decisions out;
  if (bytes.empty()) return out;
  try {
    const Json j = Json::parse(bytes);
    CX_RETURN_IF_ERROR(CheckFormat(j, kDecisionsFormat, what));
    for (const auto& [key, v] : j.at("patches").items()) {
      Decision d;
      d.line = v.at("line").get<std::string>();
      d.patch = v.at("patch").get<std::string>();
      d.version = v.at("version").get<std::string>();
      d.verdict = v.at("verdict").get<std::string>();
      d.until = v.at("until").get<int64_t>();
      d.who = v.at("who").get<std::string>();
      d.reason = v.at("reason").get<std::string>();
      d.at = v.at("at").get<int64_t>();
      d.chain = v.at("chain").get<std::string>();
      d.activation = v.at("activation").get<std::string>();
      d.activated_at = v.at("activated_at").get<int64_t>();
      d.failed = v.value("failed", "");
      out.by_patch[key] = std::move(d);
    }
    out.refused_files = j.at("refused_files").get<std::map<std::string, std::string>>();
  } catch (const std::exception& e) {
    return Status::Corruption(what + ": " + e.what());
  }
  return out;
}

void HealthLog::Add(const std::string& name, HealthRecord r, size_t keep) {
  auto& v = by_check[name];
  v.push_back(std::move(r));
  if (v.size() > keep) v.erase(v.begin(), v.begin() + static_cast<ptrdiff_t>(v.size() - keep));
}

std::string HealthLog::Encode() const {
  Json j;
  j["format"] = kHealthFormat;
  Json cs = Json::object();
  for (const auto& [name, rs] : by_check) {
    Json a = Json::array();
    for (const auto& r : rs) a.push_back({{"at", r.at}, {"ok", r.ok}, {"detail", r.detail}});
    cs[name] = a;
  }
  j["checks"] = cs;
  return Dump(j) + "\n";
}

Result<HealthLog> HealthLog::Decode(const std::string& bytes, const std::string& what) {
  HealthLog out;
  if (bytes.empty()) return out;
  try {
    const Json j = Json::parse(bytes);
    CX_RETURN_IF_ERROR(CheckFormat(j, kHealthFormat, what));
    for (const auto& [name, a] : j.at("checks").items()) {
      auto& v = out.by_check[name];
      for (const Json& r : a) {
        v.push_back(HealthRecord{r.at("at").get<int64_t>(), r.at("ok").get<bool>(),
                                 r.at("detail").get<std::string>()});
      }
    }
  } catch (const std::exception& e) {
    return Status::Corruption(what + ": " + e.what());
  }
  return out;
}

Result<Decisions> ReadDecisions(const std::string& dir) {
  const std::string path = dir + "/decisions";
  CX_ASSIGN_OR_RETURN(std::string bytes, ReadIfAny(path));
  return Decisions::Decode(bytes, path);
}

Status WriteDecisions(const std::string& dir, const Decisions& d) {
  return Write(dir + "/decisions", d.Encode());
}

Result<HealthLog> ReadHealthLog(const std::string& dir) {
  const std::string path = dir + "/health";
  CX_ASSIGN_OR_RETURN(std::string bytes, ReadIfAny(path));
  return HealthLog::Decode(bytes, path);
}

Status WriteHealthLog(const std::string& dir, const HealthLog& h) {
  return Write(dir + "/health", h.Encode());
}

Result<AgentLock> AgentLock::Take(const std::string& dir) {
  CX_ASSIGN_OR_RETURN(FileLock held, FileLock::Take(dir + "/agent.lock"));
  return AgentLock(std::move(held));
}

}  // namespace cryptex::store
