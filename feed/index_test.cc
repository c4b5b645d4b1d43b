// The feed index: payload round trip, strict decoding, signatures and key
// rotation (index.h).
#include "index.h"

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace cryptex::feed {
namespace {

using Json = nlohmann::ordered_json;
using test::Contains;
using test::TempDir;

Digest D(uint8_t fill) {
  Digest d;
  d.fill(fill);
  return d;
}

Index SampleIndex() {
  Index ix;
  ix.version = 7;
  ix.published = 1700000000;
  ix.expires = 1700604800;
  FeedPatch p;
  p.id = "fix-1";
  p.line = "app";
  p.version = "1.0.1";
  p.file = "patches/app/fix-1.cxpatch";
  p.length = 12345;
  p.sha256 = D(0x11);
  p.root = D(0x22);
  p.base_root = D(0x33);
  p.requires_patches = {"fix-0"};
  p.release_counter = 4;
  p.severity = "critical";
  p.cves = {"CVE-2026-0001", "CVE-2026-0002"};
  p.activation = "relaunch";
  p.released_at = 1699999999;
  ix.patches.push_back(p);
  p.id = "fix-2";
  p.file = "fix-2.cxpatch";
  p.requires_patches = {};
  p.severity = "";
  p.cves = {};
  p.activation = "reboot";
  ix.patches.push_back(p);
  FeedBase b;
  b.line = "app";
  b.version = "1.0";
  b.file = "app.cryptex";
  b.length = 99999;
  b.sha256 = D(0x44);
  b.root = D(0x55);
  b.release_counter = 1;
  ix.bases.push_back(b);
  ix.revoked.push_back({"app", "fix-0", "breaks login", 1700000001});
  ix.revoked.push_back({"", "bad-everywhere", "withdrawn", 1700000002});
  return ix;
}

AnnouncedKey Announce(const PrivateKey& k) { return {k.id(), k.raw_public()}; }

// Fresh keys, and trust directories holding the public halves of some.
class Keys {
 public:
  PrivateKey Make() {
    auto k = PrivateKey::Generate();
    EXPECT_TRUE(k.ok());
    return std::move(k).value();
  }
  TrustStore TrustOf(const std::vector<const PrivateKey*>& keys) {
    auto dir = std::make_unique<TempDir>();
    int n = 0;
    for (const PrivateKey* k : keys) {
      std::string name = "k";  // an append: GCC 12 -O3 -Wrestrict on "k" + std::string
      name += std::to_string(n++);
      EXPECT_TRUE(k->SavePair(dir->Join(name)).ok());
    }
    auto t = TrustStore::LoadDir(dir->path());
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    dirs_.push_back(std::move(dir));
    return std::move(t).value();
  }

 private:
  std::vector<std::unique_ptr<TempDir>> dirs_;
};

TEST(FeedIndexTest, PayloadRoundTrips) {
  Index ix = SampleIndex();
  PrivateKey k = Keys().Make();
  ix.keys.push_back(Announce(k));
  const std::string payload = EncodePayload(ix);
  auto back = DecodePayload(payload, "index.cxfeed");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(EncodePayload(*back), payload);
  EXPECT_EQ(back->version, 7u);
  EXPECT_EQ(back->expires, 1700604800);
  ASSERT_EQ(back->patches.size(), 2u);
  const FeedPatch& p = back->patches[0];
  EXPECT_EQ(p.file, "patches/app/fix-1.cxpatch");
  EXPECT_EQ(p.sha256, D(0x11));
  EXPECT_EQ(p.base_root, D(0x33));
  EXPECT_EQ(p.cves, (std::vector<std::string>{"CVE-2026-0001", "CVE-2026-0002"}));
  EXPECT_EQ(p.requires_patches, std::vector<std::string>{"fix-0"});
  EXPECT_EQ(p.activation, "relaunch");
  EXPECT_EQ(p.released_at, 1699999999);
  ASSERT_EQ(back->bases.size(), 1u);
  EXPECT_EQ(back->bases[0].root, D(0x55));
  ASSERT_EQ(back->revoked.size(), 2u);
  EXPECT_EQ(back->revoked[0].reason, "breaks login");
  ASSERT_EQ(back->keys.size(), 1u);
  EXPECT_EQ(back->keys[0].id, k.id());
  EXPECT_EQ(back->keys[0].raw, k.raw_public());
}

TEST(FeedIndexTest, EmptyIndexRoundTrips) {
  Index ix;
  ix.version = 1;
  auto back = DecodePayload(EncodePayload(ix), "x");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->patches.empty());
}

TEST(FeedIndexTest, FindPatchAndRevocation) {
  Index ix = SampleIndex();
  ASSERT_NE(ix.FindPatch("app", "fix-2"), nullptr);
  EXPECT_EQ(ix.FindPatch("app", "fix-2")->file, "fix-2.cxpatch");
  EXPECT_EQ(ix.FindPatch("other", "fix-2"), nullptr);
  EXPECT_EQ(ix.FindPatch("app", "fix-9"), nullptr);
  ASSERT_NE(ix.FindRevocation("app", "fix-0"), nullptr);
  EXPECT_EQ(ix.FindRevocation("other", "fix-0"), nullptr);
  // A revocation without a line revokes the id on every line.
  ASSERT_NE(ix.FindRevocation("other", "bad-everywhere"), nullptr);
  EXPECT_EQ(ix.FindRevocation("app", "fix-1"), nullptr);
}

struct Malformed {
  const char* name;
  std::function<void(Json&)> edit;
  const char* message;  // expected in the error
  Code code = Code::kCorruption;
};

TEST(FeedIndexTest, MalformedPayloadsAreRefusedNamingTheField) {
  PrivateKey k = Keys().Make();
  Index base = SampleIndex();
  base.keys.push_back(Announce(k));
  const Json good = Json::parse(EncodePayload(base));
  const std::vector<Malformed> cases = {
      {"unknown format", [](Json& j) { j["format"] = "cryptex-feed-index 2"; },
       "unsupported payload format", Code::kUnsupported},
      {"format missing", [](Json& j) { j.erase("format"); }, "missing member \"format\""},
      {"version missing", [](Json& j) { j.erase("version"); }, "missing member \"version\""},
      {"version string", [](Json& j) { j["version"] = "7"; }, "F.version: not an unsigned"},
      {"version negative", [](Json& j) { j["version"] = -1; }, "F.version: negative"},
      {"version float", [](Json& j) { j["version"] = 1.5; }, "F.version: not an unsigned"},
      {"expires string", [](Json& j) { j["expires"] = "soon"; }, "F.expires: not an integer"},
      {"unknown top member", [](Json& j) { j["mirror"] = "x"; }, "unknown member \"mirror\""},
      {"patches not array", [](Json& j) { j["patches"] = Json::object(); },
       "F.patches: not an array"},
      {"patch not object", [](Json& j) { j["patches"][0] = 3; }, "patches[0]: not an object"},
      {"patch missing sha256", [](Json& j) { j["patches"][1].erase("sha256"); },
       "patches[1]: missing member \"sha256\""},
      {"patch unknown member", [](Json& j) { j["patches"][0]["url"] = "http://x"; },
       "patches[0]: unknown member \"url\""},
      {"sha256 short", [](Json& j) { j["patches"][0]["sha256"] = std::string(62, 'a'); },
       "patches[0].sha256: not 64 lower-case hex"},
      {"sha256 upper case", [](Json& j) { j["patches"][0]["sha256"] = std::string(64, 'A'); },
       "patches[0].sha256: not 64 lower-case hex"},
      {"root not hex", [](Json& j) { j["patches"][0]["root"] = std::string(64, 'g'); },
       "patches[0].root: not 64"},
      {"base_root number", [](Json& j) { j["patches"][0]["base_root"] = 5; },
       "patches[0].base_root: not a string"},
      {"absolute file", [](Json& j) { j["patches"][0]["file"] = "/etc/passwd"; },
       "patches[0].file: \"/etc/passwd\" is not a relative path"},
      {"dotdot file", [](Json& j) { j["patches"][0]["file"] = "../up.cxpatch"; },
       "patches[0].file"},
      {"inner dotdot file", [](Json& j) { j["patches"][0]["file"] = "a/../../b"; },
       "patches[0].file"},
      {"dot component", [](Json& j) { j["patches"][0]["file"] = "./a.cxpatch"; },
       "patches[0].file"},
      {"empty component", [](Json& j) { j["patches"][0]["file"] = "a//b.cxpatch"; },
       "patches[0].file"},
      {"trailing slash", [](Json& j) { j["patches"][0]["file"] = "a/"; }, "patches[0].file"},
      {"space in file", [](Json& j) { j["patches"][0]["file"] = "a b.cxpatch"; },
       "patches[0].file"},
      {"base file absolute", [](Json& j) { j["bases"][0]["file"] = "/x.cryptex"; },
       "bases[0].file"},
      {"empty id", [](Json& j) { j["patches"][0]["id"] = ""; }, "patches[0].id: empty"},
      {"control character", [](Json& j) { j["patches"][0]["id"] = "a\x1b[2Jb"; },
       "patches[0].id: holds a control character"},
      {"long string", [](Json& j) { j["revoked"][0]["reason"] = std::string(5000, 'r'); },
       "revoked[0].reason: longer than 4096 bytes"},
      {"zero length", [](Json& j) { j["patches"][0]["length"] = 0; }, "patches[0].length: zero"},
      {"negative length", [](Json& j) { j["patches"][0]["length"] = -5; },
       "patches[0].length: negative"},
      {"huge length", [](Json& j) { j["patches"][0]["length"] = 1e30; },
       "patches[0].length: not an unsigned"},
      {"bad severity", [](Json& j) { j["patches"][0]["severity"] = "urgent"; },
       "patches[0].severity: unknown value \"urgent\""},
      {"bad activation", [](Json& j) { j["patches"][0]["activation"] = "now"; },
       "patches[0].activation: unknown value"},
      {"cve not string", [](Json& j) { j["patches"][0]["cves"][1] = 7; },
       "patches[0].cves[1]: not a string"},
      {"requires not array", [](Json& j) { j["patches"][0]["requires"] = "fix-0"; },
       "patches[0].requires: not an array"},
      {"duplicate patch", [](Json& j) { j["patches"][1]["id"] = "fix-1"; },
       "patches[1]: a duplicate of an earlier entry"},
      {"duplicate revocation", [](Json& j) { j["revoked"].push_back(j["revoked"][0]); },
       "revoked[2]: a duplicate"},
      {"duplicate key", [](Json& j) { j["keys"].push_back(j["keys"][0]); }, "keys[1]: a duplicate"},
      {"revocation without reason", [](Json& j) { j["revoked"][0]["reason"] = ""; },
       "revoked[0].reason: empty"},
      {"key id not its hash", [](Json& j) { j["keys"][0]["id"] = std::string(64, '0'); },
       "keys[0].id: is not the SHA-256 of the key"},
  };
  for (const auto& c : cases) {
    Json j = good;
    c.edit(j);
    auto r = DecodePayload(j.dump(), "F");
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), c.code) << c.name << ": " << r.status().ToString();
    EXPECT_TRUE(Contains(r.status().message(), c.message))
        << c.name << ": " << r.status().message();
    EXPECT_EQ(r.status().message().rfind("F", 0), 0u) << c.name << ": " << r.status().message();
  }
}

TEST(FeedIndexTest, NonJsonAndDuplicateMembersAreRefused) {
  const std::string good = EncodePayload(SampleIndex());
  for (std::string bad : {std::string(""), std::string("[]"), std::string("{\"format\":"),
                          good.substr(0, good.size() / 2), std::string("\xff\xfe")}) {
    auto r = DecodePayload(bad, "F");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kCorruption) << r.status().ToString();
  }
  // Two "version" members: nlohmann would keep the last; a signed document
  // must have one reading.
  std::string dup = good;
  dup.insert(1, "\"version\": 999999,");
  auto r = DecodePayload(dup, "F");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(Contains(r.status().message(), "member \"version\" given twice"))
      << r.status().message();
}

TEST(FeedIndexTest, SignedIndexVerifies) {
  Keys keys;
  PrivateKey k = keys.Make();
  TrustStore trust = keys.TrustOf({&k});
  auto file = SignIndex(SampleIndex(), {&k});
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->rfind("cryptex-feed 1\nsig ed25519 " + HexEncode(k.id()) + " ", 0), 0u);
  auto v = VerifyIndex(*file, trust, {}, "index.cxfeed");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->signed_by, std::vector<KeyId>{k.id()});
  EXPECT_EQ(v->payload, EncodePayload(SampleIndex()));
  EXPECT_EQ(v->index.version, 7u);
}

TEST(FeedIndexTest, SignIndexNeedsAKey) {
  auto file = SignIndex(SampleIndex(), {});
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), Code::kInvalidArgument);
}

TEST(FeedIndexTest, SignIndexRefusesAnIndexDevicesWouldRefuse) {
  PrivateKey k = Keys().Make();
  Index ix = SampleIndex();
  ix.patches[0].cves.assign(kMaxIndexBytes / 4000 + 1, std::string(4000, 'C'));
  auto file = SignIndex(ix, {&k});
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), Code::kInvalidArgument);
  EXPECT_TRUE(Contains(file.status().message(), "a device accepts")) << file.status().message();
  ix.patches[0].id = "bad\xff";  // not UTF-8: refused, not thrown
  ix.patches[0].cves.clear();
  file = SignIndex(ix, {&k});
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), Code::kInvalidArgument);
}

TEST(FeedIndexTest, EveryTamperedPayloadByteIsASignatureError) {
  Keys keys;
  PrivateKey k = keys.Make();
  TrustStore trust = keys.TrustOf({&k});
  auto file = SignIndex(SampleIndex(), {&k});
  ASSERT_TRUE(file.ok());
  const size_t payload_at = file->find("\n\n") + 2;
  // Every byte of the payload, one at a time (a cheap sweep: the payload is
  // small).
  for (size_t i = payload_at; i < file->size(); ++i) {
    std::string bad = *file;
    bad[i] ^= 0x01;
    auto v = VerifyIndex(bad, trust, {}, "index.cxfeed");
    ASSERT_FALSE(v.ok()) << "byte " << i;
    ASSERT_EQ(v.status().code(), Code::kSignature) << "byte " << i << ": " << v.status().ToString();
    ASSERT_TRUE(Contains(v.status().message(),
                         "index.cxfeed: bad signature by key " + HexEncode(k.id()).substr(0, 16)))
        << v.status().message();
  }
  // A byte appended or removed.
  EXPECT_EQ(VerifyIndex(*file + " ", trust, {}, "f").status().code(), Code::kSignature);
  EXPECT_EQ(VerifyIndex(file->substr(0, file->size() - 1), trust, {}, "f").status().code(),
            Code::kSignature);
  // A flipped bit of the signature itself.
  std::string bad = *file;
  bad[payload_at - 3] = bad[payload_at - 3] == '0' ? '1' : '0';
  EXPECT_EQ(VerifyIndex(bad, trust, {}, "f").status().code(), Code::kSignature);
}

TEST(FeedIndexTest, UnknownKeyIsRefusedNamingIt) {
  Keys keys;
  PrivateKey trusted = keys.Make();
  PrivateKey stranger = keys.Make();
  TrustStore trust = keys.TrustOf({&trusted});
  auto file = SignIndex(SampleIndex(), {&stranger});
  ASSERT_TRUE(file.ok());
  auto v = VerifyIndex(*file, trust, {}, "https://feed/index.cxfeed");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kSignature);
  EXPECT_TRUE(Contains(v.status().message(),
                       "https://feed/index.cxfeed: signed only by unknown "
                       "key(s) " +
                           HexEncode(stranger.id()).substr(0, 16)))
      << v.status().message();
}

TEST(FeedIndexTest, TwoSignaturesVerifyUnderEitherKey) {
  Keys keys;
  PrivateKey old_key = keys.Make();
  PrivateKey new_key = keys.Make();
  Index ix = SampleIndex();
  ix.keys.push_back(Announce(new_key));
  auto file = SignIndex(ix, {&old_key, &new_key});
  ASSERT_TRUE(file.ok());
  TrustStore old_trust = keys.TrustOf({&old_key});
  TrustStore new_trust = keys.TrustOf({&new_key});
  TrustStore both = keys.TrustOf({&old_key, &new_key});
  auto v = VerifyIndex(*file, old_trust, {}, "f");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->signed_by, std::vector<KeyId>{old_key.id()});
  ASSERT_EQ(v->index.keys.size(), 1u);
  EXPECT_EQ(v->index.keys[0].id, new_key.id());
  ASSERT_TRUE(VerifyIndex(*file, new_trust, {}, "f").ok());
  auto vb = VerifyIndex(*file, both, {}, "f");
  ASSERT_TRUE(vb.ok());
  EXPECT_EQ(vb->signed_by, (std::vector<KeyId>{old_key.id(), new_key.id()}));
}

TEST(FeedIndexTest, AnnouncedKeyIsHonouredThroughExtra) {
  Keys keys;
  PrivateKey old_key = keys.Make();
  PrivateKey new_key = keys.Make();
  TrustStore old_trust = keys.TrustOf({&old_key});
  // The rotation index, signed by both and announcing the new key.
  Index rot = SampleIndex();
  rot.keys.push_back(Announce(new_key));
  auto rot_file = SignIndex(rot, {&old_key, &new_key});
  ASSERT_TRUE(rot_file.ok());
  auto seen = VerifyIndex(*rot_file, old_trust, {}, "f");
  ASSERT_TRUE(seen.ok());
  // The next index, by the new key only: refused on the old trust alone,
  // accepted with the keys the rotation index announced.
  Index next = SampleIndex();
  next.version = 8;
  auto next_file = SignIndex(next, {&new_key});
  ASSERT_TRUE(next_file.ok());
  auto without = VerifyIndex(*next_file, old_trust, {}, "f");
  ASSERT_FALSE(without.ok());
  EXPECT_EQ(without.status().code(), Code::kSignature);
  auto with = VerifyIndex(*next_file, old_trust, seen->index.keys, "f");
  ASSERT_TRUE(with.ok()) << with.status().ToString();
  EXPECT_EQ(with->signed_by, std::vector<KeyId>{new_key.id()});
  EXPECT_EQ(with->index.version, 8u);
  // A tampered index is not saved by the announced key either.
  std::string bad = *next_file;
  bad.back() = ' ';
  auto tampered = VerifyIndex(bad, old_trust, seen->index.keys, "f");
  EXPECT_EQ(tampered.status().code(), Code::kSignature);
  EXPECT_TRUE(Contains(tampered.status().message(), "announced by an earlier index"))
      << tampered.status().message();
}

TEST(FeedIndexTest, BadSignatureByATrustedKeyFailsEvenIfAnotherVerifies) {
  Keys keys;
  PrivateKey a = keys.Make();
  PrivateKey b = keys.Make();
  TrustStore trust = keys.TrustOf({&a, &b});
  auto file = SignIndex(SampleIndex(), {&a, &b});
  ASSERT_TRUE(file.ok());
  // Corrupt b's signature (the second sig line) only.
  size_t second = file->find("\nsig ed25519 ", 15) + 1;
  size_t sig_at = second + std::string("sig ed25519 ").size() + 65;
  std::string bad = *file;
  bad[sig_at] = bad[sig_at] == 'a' ? 'b' : 'a';
  auto v = VerifyIndex(bad, trust, {}, "f");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kSignature);
  EXPECT_TRUE(Contains(v.status().message(), HexEncode(b.id()).substr(0, 16)))
      << v.status().message();
}

TEST(FeedIndexTest, MalformedFilesAreCorruption) {
  Keys keys;
  PrivateKey k = keys.Make();
  TrustStore trust = keys.TrustOf({&k});
  auto file = SignIndex(SampleIndex(), {&k});
  ASSERT_TRUE(file.ok());
  const std::string sig_line = file->substr(15, file->find('\n', 15) + 1 - 15);
  const std::string payload = file->substr(file->find("\n\n") + 2);
  struct Case {
    std::string name, file, message;
    Code code = Code::kCorruption;
  };
  const std::vector<Case> cases = {
      {"empty", "", "f: not a cryptex feed index"},
      {"other header", "garbage\n", "f: not a cryptex feed index"},
      {"version 2", "cryptex-feed 2\n" + sig_line + "\n" + payload, "unsupported feed index format",
       Code::kUnsupported},
      {"no signature", "cryptex-feed 1\n\n" + payload, "f: no signature line"},
      {"no blank line", "cryptex-feed 1\n" + sig_line, "f: line 3: truncated"},
      {"bad algorithm",
       "cryptex-feed 1\n" + std::string("sig rsa ") + sig_line.substr(12) + "\n" + payload,
       "f: line 2: not \"sig ed25519"},
      {"short signature",
       "cryptex-feed 1\n" + sig_line.substr(0, sig_line.size() - 3) + "\n\n" + payload,
       "f: line 2: not"},
      {"upper-case hex",
       "cryptex-feed 1\nsig ed25519 " + std::string(64, 'A') + " " + std::string(128, '0') +
           "\n\n" + payload,
       "f: line 2: not"},
      {"CRLF", "cryptex-feed 1\r\n" + sig_line + "\n" + payload, "f: not a cryptex feed index"},
  };
  for (const auto& c : cases) {
    auto v = VerifyIndex(c.file, trust, {}, "f");
    ASSERT_FALSE(v.ok()) << c.name;
    EXPECT_EQ(v.status().code(), c.code) << c.name << ": " << v.status().ToString();
    EXPECT_TRUE(Contains(v.status().message(), c.message))
        << c.name << ": " << v.status().message();
  }
  // Too many signature lines.
  std::string many = "cryptex-feed 1\n";
  for (size_t i = 0; i <= kMaxIndexSignatures; ++i) many += sig_line;
  many += "\n" + payload;
  auto v = VerifyIndex(many, trust, {}, "f");
  EXPECT_TRUE(Contains(v.status().message(), "more than 16 signatures")) << v.status().message();
  // Larger than the limit: refused before anything else.
  std::string huge = *file + std::string(kMaxIndexBytes, ' ');
  v = VerifyIndex(huge, trust, {}, "f");
  EXPECT_EQ(v.status().code(), Code::kCorruption);
  EXPECT_TRUE(Contains(v.status().message(), "more than the limit")) << v.status().message();
}

TEST(FeedIndexTest, ValidlySignedMalformedPayloadIsCorruption) {
  Keys keys;
  PrivateKey k = keys.Make();
  TrustStore trust = keys.TrustOf({&k});
  Index ix = SampleIndex();
  ix.patches[0].file = "../../etc/shadow";  // EncodePayload does not check
  auto file = SignIndex(ix, {&k});
  ASSERT_TRUE(file.ok());
  auto v = VerifyIndex(*file, trust, {}, "index.cxfeed");
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), Code::kCorruption);
  EXPECT_TRUE(Contains(v.status().message(), "index.cxfeed: patches[0].file"))
      << v.status().message();
}

}  // namespace
}  // namespace cryptex::feed
