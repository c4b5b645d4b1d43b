// The history record's later fields (verdict, until, votes of the policy
// agent's "decide" records) are additive: a record without them encodes to
// the bytes it always had (so old histories keep their hash chain), old
// lines decode with them empty, and new records round-trip. Also the agent's
// state files (decisions.h).
#include "history.h"

#include <gtest/gtest.h>

#include <string>

#include "decisions.h"
#include "test_util.h"

namespace cryptex::store {
namespace {

// A record as the store wrote it before the new fields existed.
constexpr char kOldLine[] =
    R"({"seq":3,"time":1795937320,"action":"install","line":"app","patch":"p1",)"
    R"("version":"1.0+p1","cves":["CVE-2026-1006"],"severity":"high","who":"command",)"
    R"("reason":"","prev":"0000000000000000000000000000000000000000000000000000000000000000"})";

TEST(HistoryRecordTest, OldRecordsKeepTheirBytesAndDecode) {
  auto r = HistoryRecord::Decode(kOldLine, "old");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->action, "install");
  EXPECT_EQ(r->verdict, "");
  EXPECT_EQ(r->until, 0);
  EXPECT_TRUE(r->votes.empty());
  EXPECT_EQ(r->Encode(), kOldLine);  // same bytes: same hash, the chain holds
}

TEST(HistoryRecordTest, DecideRecordsRoundTrip) {
  HistoryRecord r;
  r.seq = 9;
  r.time = 1800000000;
  r.action = "decide";
  r.line = "app";
  r.patch = "p2";
  r.who = "policy:auto,defer";
  r.reason = "auto: install; defer: defer until ...";
  r.verdict = "defer";
  r.until = 1800600000;
  r.votes = {HistoryVote{"auto", "install", 0, "install at once", false},
             HistoryVote{"defer", "defer", 1800600000, "held 7 days", false},
             HistoryVote{"segv", "defer", 0, "killed by signal 11", true}};
  r.prev = std::string(64, 'a');
  const std::string line = r.Encode();
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto d = HistoryRecord::Decode(line, "new");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->verdict, "defer");
  EXPECT_EQ(d->until, 1800600000);
  EXPECT_EQ(d->votes, r.votes);
  EXPECT_EQ(d->Encode(), line);
  // A malformed vote is a corrupt record, not a crash.
  std::string bad = line;
  bad.replace(bad.find(R"("plugin":"auto")"), 15, R"("plugin":17)");
  EXPECT_EQ(HistoryRecord::Decode(bad, "bad").status().code(), Code::kCorruption);
}

TEST(AgentStateTest, DecisionsAndHealthRoundTripAndMissingIsEmpty) {
  test::TempDir dir;
  auto none = ReadDecisions(dir.path());
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->by_patch.empty());
  Decisions d;
  Decision x;
  x.line = "app";
  x.patch = "p1";
  x.verdict = "defer";
  x.until = 5;
  x.who = "policy:defer";
  x.reason = "held";
  x.at = 4;
  x.chain = "abc";
  x.activation = "reboot";
  d.by_patch[Decisions::Key("app", "p1")] = x;
  d.refused_files["/x.cxpatch"] = "1 2: bad";
  ASSERT_TRUE(WriteDecisions(dir.path(), d).ok());
  auto back = ReadDecisions(dir.path());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->by_patch.size(), 1u);
  EXPECT_TRUE(back->by_patch.begin()->second.SameAs(x));
  EXPECT_EQ(back->by_patch.begin()->second.activation, "reboot");
  EXPECT_EQ(back->refused_files, d.refused_files);
  test::WriteFile(dir.Join("decisions"), "{\"format\":\"other\"}");
  EXPECT_EQ(ReadDecisions(dir.path()).status().code(), Code::kCorruption);

  HealthLog h;
  for (int i = 0; i < 10; ++i) h.Add("web", HealthRecord{i, i % 2 == 0, "exit 0"}, 3);
  ASSERT_EQ(h.by_check["web"].size(), 3u);  // the newest 3
  EXPECT_EQ(h.by_check["web"].front().at, 7);
  ASSERT_TRUE(WriteHealthLog(dir.path(), h).ok());
  auto hb = ReadHealthLog(dir.path());
  ASSERT_TRUE(hb.ok()) << hb.status().ToString();
  ASSERT_EQ(hb->by_check["web"].size(), 3u);
  EXPECT_EQ(hb->by_check["web"].back().at, 9);
  EXPECT_FALSE(hb->by_check["web"].back().ok);
}

}  // namespace
}  // namespace cryptex::store
