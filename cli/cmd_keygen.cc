// cryptex keygen -o NAME
#include <cstdio>

#include "cli.h"

namespace cryptex::cli {

int CmdKeygen(int argc, char** argv) {
  Args args(argc, argv, {"-o", "--output"}, {});
  if (args.help()) {
    std::printf(
        "usage: cryptex keygen -o NAME\n\n"
        "Creates an Ed25519 key pair: NAME (private, mode 0600) and NAME.pub (public).\n"
        "Refuses to overwrite either file. Copy NAME.pub into the devices' trust\n"
        "directory (/etc/cryptex/keys).\n");
    return kExitOk;
  }
  if (!args.ok()) return Usage("keygen", args.error());
  auto out = args.Get("-o") ? args.Get("-o") : args.Get("--output");
  if (!out || !args.positional().empty()) return Usage("keygen", "expected -o NAME");
  auto key = PrivateKey::Generate();
  if (!key.ok()) return Fail("keygen", key.status());
  if (Status st = key->SavePair(*out); !st.ok()) return Fail("keygen", st);
  std::printf("wrote %s and %s.pub (key id %s)\n", out->c_str(), out->c_str(),
              HexEncode(key->id()).substr(0, 16).c_str());
  return kExitOk;
}

}  // namespace cryptex::cli
