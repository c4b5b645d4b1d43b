// JSON output of the `cryptex` subcommands (--json): every document is built
// as a nlohmann::ordered_json value and serialised here, never by hand, so
// any string (paths, manifest text) is escaped by the writer.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace cryptex::cli {

// Keys keep the order in which they were added (readable, stable output).
using Json = nlohmann::ordered_json;

// `doc` serialised with a 2-space indent and a final newline. Strings must be
// UTF-8; a byte that is not part of valid UTF-8 is written as U+FFFD (JSON
// cannot carry raw bytes), so such strings do not round-trip.
std::string JsonText(const Json& doc);

// Writes JsonText(doc) to stdout. Returns kExitOk, or kExitError (with a
// message) if stdout cannot be written.
int PrintJson(const std::string& cmd, const Json& doc);

}  // namespace cryptex::cli
