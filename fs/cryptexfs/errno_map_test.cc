#include "errno_map.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace cryptex::cxfs {
namespace {

TEST(ErrnoMapTest, DocumentedCodes) {
  EXPECT_EQ(ErrnoFromCode(Code::kOk), 0);
  EXPECT_EQ(ErrnoFromCode(Code::kCorruption), EIO);
  EXPECT_EQ(ErrnoFromCode(Code::kNotFound), ENOENT);
  EXPECT_EQ(ErrnoFromCode(Code::kIOError), EIO);
  EXPECT_EQ(ErrnoFromCode(Code::kNotDirectory), ENOTDIR);
  EXPECT_EQ(ErrnoFromCode(Code::kIsDirectory), EISDIR);
  EXPECT_EQ(ErrnoFromCode(Code::kPermission), EACCES);
}

TEST(ErrnoMapTest, EveryOtherCodeIsEio) {
  for (Code c : {Code::kInvalidArgument, Code::kSignature, Code::kUnsupported, Code::kExists,
                 Code::kInternal}) {
    EXPECT_EQ(ErrnoFromCode(c), EIO) << CodeName(c);
  }
}

TEST(ErrnoMapTest, EveryErrorCodeIsNonZero) {
  for (int i = static_cast<int>(Code::kNotFound); i <= static_cast<int>(Code::kInternal); ++i) {
    EXPECT_GT(ErrnoFromCode(static_cast<Code>(i)), 0) << i;
  }
}

TEST(ErrnoMapTest, FromStatus) {
  EXPECT_EQ(ErrnoFromStatus(Status::Ok()), 0);
  EXPECT_EQ(ErrnoFromStatus(Status::Corruption("block 7")), EIO);
  EXPECT_EQ(ErrnoFromStatus(Status::NotFound("x")), ENOENT);
  EXPECT_EQ(ErrnoFromStatus(Status::FromErrno(ENOTDIR, "open")), ENOTDIR);
}

TEST(ErrnoMapTest, XattrAbsentIsEnodata) {
  EXPECT_EQ(XattrErrnoFromStatus(Status::NotFound("user.x")), ENODATA);
  EXPECT_EQ(XattrErrnoFromStatus(Status::Corruption("xattr block")), EIO);
  EXPECT_EQ(XattrErrnoFromStatus(Status::Ok()), 0);
}

}  // namespace
}  // namespace cryptex::cxfs
