#include "curl_api.h"

#include <dlfcn.h>

#include <memory>

namespace cryptex::feed {
namespace {

Status CannotLoad(const std::string& library, const std::string& why) {
  return Status::Unsupported("the https feed transport needs " + library + " (" + why +
                             "); install the libcurl4 package");
}

}  // namespace

Result<const CurlApi*> LoadCurlFrom(const std::string& library) {
  // Never closed: the functions are used until the process exits.
  void* lib = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* err = ::dlerror();
    return CannotLoad(library, err ? err : "dlopen failed");
  }
  auto api = std::make_unique<CurlApi>();
  std::string missing;
  auto resolve = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(lib, name));
    if (fn == nullptr && missing.empty()) missing = name;
  };
  resolve(api->global_init, "curl_global_init");
  resolve(api->easy_init, "curl_easy_init");
  resolve(api->easy_cleanup, "curl_easy_cleanup");
  resolve(api->easy_reset, "curl_easy_reset");
  resolve(api->easy_setopt, "curl_easy_setopt");
  resolve(api->easy_getinfo, "curl_easy_getinfo");
  resolve(api->easy_strerror, "curl_easy_strerror");
  resolve(api->multi_init, "curl_multi_init");
  resolve(api->multi_cleanup, "curl_multi_cleanup");
  resolve(api->multi_add_handle, "curl_multi_add_handle");
  resolve(api->multi_remove_handle, "curl_multi_remove_handle");
  resolve(api->multi_perform, "curl_multi_perform");
  resolve(api->multi_poll, "curl_multi_poll");
  resolve(api->multi_info_read, "curl_multi_info_read");
  resolve(api->multi_strerror, "curl_multi_strerror");
  resolve(api->slist_append, "curl_slist_append");
  resolve(api->slist_free_all, "curl_slist_free_all");
  resolve(api->url, "curl_url");
  resolve(api->url_cleanup, "curl_url_cleanup");
  resolve(api->url_set, "curl_url_set");
  resolve(api->url_get, "curl_url_get");
  resolve(api->url_strerror, "curl_url_strerror");
  resolve(api->free, "curl_free");
  if (!missing.empty()) {
    ::dlclose(lib);
    return CannotLoad(library, "it has no " + missing + ": libcurl 7.80 or later is needed");
  }
  if (const CURLcode rc = api->global_init(CURL_GLOBAL_DEFAULT); rc != CURLE_OK) {
    return Status::Internal(std::string("libcurl initialisation failed: ") +
                            api->easy_strerror(rc));
  }
  return api.release();  // lives as long as the library
}

const Result<const CurlApi*>& LoadCurl() {
  static const Result<const CurlApi*> loaded = LoadCurlFrom(kCurlLibrary);
  return loaded;
}

}  // namespace cryptex::feed
