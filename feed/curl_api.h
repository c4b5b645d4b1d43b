// libcurl, loaded when the https transport is first opened (dlopen), not
// linked: every other command of the CLI (status, install, activate,
// mkpatch...) would otherwise load libcurl and the ~30 libraries it needs
// (GnuTLS, Kerberos, LDAP, ...) at each start, about 6.5 MiB of resident
// memory and a millisecond of relocations for nothing. The Debian package
// depends on libcurl4, whose libcurl.so.4 this loads.
#pragma once

#include <curl/curl.h>

#include <string>

#include "status.h"

namespace cryptex::feed {

// The libcurl functions the https transport calls, resolved from the
// library (the names are curl_ + the member's name).
struct CurlApi {
  decltype(&::curl_global_init) global_init;
  decltype(&::curl_easy_init) easy_init;
  decltype(&::curl_easy_cleanup) easy_cleanup;
  decltype(&::curl_easy_reset) easy_reset;
  decltype(&::curl_easy_setopt) easy_setopt;
  decltype(&::curl_easy_getinfo) easy_getinfo;
  decltype(&::curl_easy_strerror) easy_strerror;
  decltype(&::curl_multi_init) multi_init;
  decltype(&::curl_multi_cleanup) multi_cleanup;
  decltype(&::curl_multi_add_handle) multi_add_handle;
  decltype(&::curl_multi_remove_handle) multi_remove_handle;
  decltype(&::curl_multi_perform) multi_perform;
  decltype(&::curl_multi_poll) multi_poll;
  decltype(&::curl_multi_info_read) multi_info_read;
  decltype(&::curl_multi_strerror) multi_strerror;
  decltype(&::curl_slist_append) slist_append;
  decltype(&::curl_slist_free_all) slist_free_all;
  decltype(&::curl_url) url;
  decltype(&::curl_url_cleanup) url_cleanup;
  decltype(&::curl_url_set) url_set;
  decltype(&::curl_url_get) url_get;
  decltype(&::curl_url_strerror) url_strerror;
  decltype(&::curl_free) free;
};

// The library the transport loads.
inline constexpr const char* kCurlLibrary = "libcurl.so.4";

// Loads kCurlLibrary and runs curl_global_init, once per process (later
// calls return the first outcome, without copying it). kUnsupported naming the library, the
// loader's reason and the package to install if it cannot be loaded or
// lacks a function; kInternal if curl_global_init fails.
const Result<const CurlApi*>& LoadCurl();

// As LoadCurl, from `library`, every call (for tests): the library stays
// loaded.
Result<const CurlApi*> LoadCurlFrom(const std::string& library);

}  // namespace cryptex::feed
