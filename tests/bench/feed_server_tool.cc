// Driver of the feed benchmark (tests/bench/feed_bench.py); not a product
// command. Serves DIR with nginx over HTTPS on 127.0.0.1 (feed/testing/
// loopback.h: a test CA written into WORKDIR), prints "URL CA_FILE", then
// answers each line read on stdin: "log" prints nginx's access log lines
// followed by "END"; end of input stops nginx.
#include <cstdio>
#include <iostream>
#include <string>

#include "loopback.h"

int main(int argc, char** argv) {
  using cryptex::feed::testing::Nginx;
  using cryptex::feed::testing::TestCa;
  if (argc != 3) {
    std::fprintf(stderr, "usage: feed_server_tool DIR WORKDIR\n");
    return 2;
  }
  auto ca = TestCa::Create(argv[2]);
  if (!ca.ok()) {
    std::fprintf(stderr, "feed_server_tool: %s\n", ca.status().ToString().c_str());
    return 1;
  }
  auto nginx = Nginx::Start(argv[1], *ca);
  if (!nginx.ok()) {
    std::fprintf(stderr, "feed_server_tool: %s\n", nginx.status().ToString().c_str());
    return 1;
  }
  std::printf("%s %s\n", nginx->url().c_str(), ca->ca_file().c_str());
  std::fflush(stdout);
  for (std::string line; std::getline(std::cin, line);) {
    if (line == "log") {
      for (const std::string& l : nginx->log_lines()) std::printf("%s\n", l.c_str());
    }
    std::printf("END\n");
    std::fflush(stdout);
  }
  return 0;
}
