// cryptex_adversarial_gen OUTDIR: writes the base image, its source tree and
// trust directory, and one re-sealed hostile image per case (gen.h) into
// OUTDIR, plus OUTDIR/cases.tsv (name, stage, expected error, description).
// For pointing other readers (cryptexfs, cryptex verify/extract) at them.
#include <cstdio>
#include <string>

#include "gen.h"

int main(int argc, char** argv) {
  using namespace cryptex;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTDIR (must not exist)\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  auto base = adversarial::BuildBase(out);
  if (!base.ok()) {
    std::fprintf(stderr, "%s\n", base.status().ToString().c_str());
    return 1;
  }
  std::string tsv = "name\tstage\texpect\twhat\n";
  int failures = 0;
  for (const auto& c : adversarial::AllCases()) {
    auto bytes = c.make(*base);
    if (!bytes.ok()) {
      std::fprintf(stderr, "%s: %s\n", c.name.c_str(), bytes.status().ToString().c_str());
      ++failures;
      continue;
    }
    const std::string path = out + "/" + c.name + ".cryptex";
    if (Status st = surgery::WriteAll(path, *bytes); !st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return 1;
    }
    tsv += c.name + "\t" + adversarial::StageName(c.stage) + "\t" + c.expect + "\t" + c.what + "\n";
    std::printf("%s\n", path.c_str());
  }
  const std::string tsv_path = out + "/cases.tsv";
  if (Status st = surgery::WriteAll(
          tsv_path,
          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(tsv.data()), tsv.size()));
      !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  std::printf("trust directory: %s\n", base->key.trust_dir.c_str());
  return failures == 0 ? 0 : 1;
}
