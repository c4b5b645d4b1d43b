// libcurl is loaded, not linked (curl_api.h): a missing or wrong library is
// a clear error naming it and the package to install, never a crash.
#include "curl_api.h"

#include <gtest/gtest.h>

namespace cryptex::feed {
namespace {

TEST(CurlApiTest, LoadsLibcurlOnceWithEveryFunction) {
  auto a = LoadCurl();
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  const CurlApi& api = **a;
  EXPECT_NE(api.easy_setopt, nullptr);
  EXPECT_NE(api.url_strerror, nullptr);
  EXPECT_NE(api.free, nullptr);
  EXPECT_STREQ(api.easy_strerror(CURLE_OK), "No error");
  auto b = LoadCurl();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, *a);  // loaded once
}

TEST(CurlApiTest, AMissingLibraryNamesItAndThePackage) {
  auto r = LoadCurlFrom("libcurl-cryptex-test-missing.so.9");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnsupported);
  const std::string m = r.status().message();
  EXPECT_NE(m.find("libcurl-cryptex-test-missing.so.9"), std::string::npos) << m;
  EXPECT_NE(m.find("install the libcurl4 package"), std::string::npos) << m;
}

TEST(CurlApiTest, ALibraryWithoutTheFunctionsIsRefusedNamingOne) {
  auto r = LoadCurlFrom("libzstd.so.1");  // loads, but is not libcurl
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnsupported);
  const std::string m = r.status().message();
  EXPECT_NE(m.find("libzstd.so.1"), std::string::npos) << m;
  EXPECT_NE(m.find("has no curl_global_init"), std::string::npos) << m;
}

}  // namespace
}  // namespace cryptex::feed
