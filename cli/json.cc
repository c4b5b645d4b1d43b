#include "json.h"

#include <cerrno>
#include <cstdio>

#include "cli.h"

namespace cryptex::cli {

std::string JsonText(const Json& doc) {
  return doc.dump(2, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace) + "\n";
}

int PrintJson(const std::string& cmd, const Json& doc) {
  const std::string text = JsonText(doc);
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0) {
    return Fail(cmd, Status::FromErrno(errno, "standard output"));
  }
  return kExitOk;
}

}  // namespace cryptex::cli
