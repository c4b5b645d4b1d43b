#include "history.h"

#include <nlohmann/json.hpp>

#include "durable.h"

namespace cryptex::store {
namespace {

using Json = nlohmann::ordered_json;

const std::string kZeroHash(64, '0');

std::string Str(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) throw std::runtime_error(std::string("no string ") + key);
  return it->get<std::string>();
}

}  // namespace

std::string HistoryRecord::Encode() const {
  Json j;
  j["seq"] = seq;
  j["time"] = time;
  j["action"] = action;
  j["line"] = line;
  j["patch"] = patch;
  j["version"] = version;
  j["cves"] = cves;
  j["severity"] = severity;
  j["who"] = who;
  j["reason"] = reason;
  if (!verdict.empty()) j["verdict"] = verdict;
  if (until != 0) j["until"] = until;
  if (!votes.empty()) {
    Json vs = Json::array();
    for (const HistoryVote& v : votes) {
      Json vj;
      vj["plugin"] = v.plugin;
      vj["verdict"] = v.verdict;
      if (v.until != 0) vj["until"] = v.until;
      vj["reason"] = v.reason;
      if (v.failed) vj["failed"] = true;
      vs.push_back(vj);
    }
    j["votes"] = vs;
  }
  j["prev"] = prev;
  // One line: dump() without indent escapes control characters, so no
  // newline can appear inside a record. Invalid UTF-8 becomes U+FFFD.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Result<HistoryRecord> HistoryRecord::Decode(std::string_view line, const std::string& what) {
  try {
    const Json j = Json::parse(line);
    HistoryRecord r;
    r.seq = j.at("seq").get<uint64_t>();
    r.time = j.at("time").get<int64_t>();
    r.action = Str(j, "action");
    r.line = Str(j, "line");
    r.patch = Str(j, "patch");
    r.version = Str(j, "version");
    r.cves = j.at("cves").get<std::vector<std::string>>();
    r.severity = Str(j, "severity");
    r.who = Str(j, "who");
    r.reason = Str(j, "reason");
    if (j.contains("verdict")) r.verdict = Str(j, "verdict");
    if (j.contains("until")) r.until = j.at("until").get<int64_t>();
    if (j.contains("votes")) {
      for (const Json& vj : j.at("votes")) {
        HistoryVote v;
        v.plugin = Str(vj, "plugin");
        v.verdict = Str(vj, "verdict");
        if (vj.contains("until")) v.until = vj.at("until").get<int64_t>();
        v.reason = Str(vj, "reason");
        if (vj.contains("failed")) v.failed = vj.at("failed").get<bool>();
        r.votes.push_back(std::move(v));
      }
    }
    r.prev = Str(j, "prev");
    return r;
  } catch (const std::exception& e) {
    return Status::Corruption(what + ": not a history record (" + e.what() + ")");
  }
}

Digest RecordHash(std::string_view line) { return Sha256::Hash(line.data(), line.size()); }

Result<std::vector<HistoryRecord>> ReadHistory(const std::string& path, const HistoryHead& head,
                                               uint64_t* uncommitted_at) {
  std::string bytes;
  auto r = ReadWholeFile(path);
  if (r.ok()) {
    bytes = std::move(*r);
  } else if (r.status().code() != Code::kNotFound) {
    return r.status();
  }
  std::vector<HistoryRecord> out;
  std::string prev = kZeroHash;
  size_t pos = 0;
  while (out.size() < head.records) {
    const std::string what = path + ": record " + std::to_string(out.size() + 1) +
                             " (byte offset " + std::to_string(pos) + ")";
    const size_t nl = bytes.find('\n', pos);
    if (nl == std::string::npos) {
      return Status::Corruption(path + ": history is truncated: " + std::to_string(out.size()) +
                                " complete records, the state file says " +
                                std::to_string(head.records) + " are committed");
    }
    const std::string_view line(bytes.data() + pos, nl - pos);
    CX_ASSIGN_OR_RETURN(HistoryRecord rec, HistoryRecord::Decode(line, what));
    if (rec.seq != out.size() + 1) {
      return Status::Corruption(what + ": sequence number " + std::to_string(rec.seq) +
                                ", expected " + std::to_string(out.size() + 1) +
                                " (records removed, inserted or reordered)");
    }
    if (rec.prev != prev) {
      return Status::Corruption(what + ": previous-record hash " + rec.prev +
                                " does not match the record before it (" + prev +
                                "): a record was edited, removed or reordered");
    }
    prev = HexEncode(RecordHash(line));
    out.push_back(std::move(rec));
    pos = nl + 1;
  }
  const std::string head_hex = head.records == 0 ? kZeroHash : HexEncode(head.last);
  if (prev != head_hex) {
    return Status::Corruption(path + ": record " + std::to_string(head.records) + " hashes to " +
                              prev + ", the state file says " + head_hex +
                              ": the last committed record was edited");
  }
  if (uncommitted_at != nullptr) *uncommitted_at = pos;
  return out;
}

}  // namespace cryptex::store
