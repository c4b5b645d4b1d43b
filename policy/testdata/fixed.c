/* A well-behaved plugin whose answer is set by its options, for tests of
 * the chain and of the host's checks of an answer:
 *   verdict=install|defer|reject|revert|N   (N: a raw, maybe invalid, number)
 *   until=N          the `until` it returns
 *   reason=TEXT      the reason (default: the verdict's name)
 *   reason_hex=HEX   the reason as hex bytes (any bytes, NUL included)
 *   reason_len=N     the reason_len it reports, whatever it wrote
 *   rc=N             decide's return value
 *   echo=now|fds|stdin|bucket   the reason reports in->device->now, the
 *                    descriptors open in the process, what stdin reads, or
 *                    the device's bucket
 *   alloc_mib=N      malloc N MiB first; decide returns 7 if that fails
 * check_options refuses any other key ("unknown option KEY") and a verdict
 * it cannot parse. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "fixture.h"

/* `v` as a NUL-terminated string in buf (truncated to cap - 1). */
static const char* cstr(cx_str v, char* buf, size_t cap) {
  size_t n = v.len < cap - 1 ? v.len : cap - 1;
  memcpy(buf, v.ptr, n);
  buf[n] = '\0';
  return buf;
}

static long long num(cx_str v) {
  char buf[64];
  return strtoll(cstr(v, buf, sizeof(buf)), NULL, 10);
}

static int parse_verdict(cx_str v, int* verdict) {
  if (cx_str_eq(v, "install")) *verdict = CX_VERDICT_INSTALL;
  else if (cx_str_eq(v, "defer")) *verdict = CX_VERDICT_DEFER;
  else if (cx_str_eq(v, "reject")) *verdict = CX_VERDICT_REJECT;
  else if (cx_str_eq(v, "revert")) *verdict = CX_VERDICT_REVERT;
  else if (v.len > 0 && (v.ptr[0] == '-' || (v.ptr[0] >= '0' && v.ptr[0] <= '9')))
    *verdict = (int)num(v);
  else
    return 0;
  return 1;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return 0;
}

static void append(cx_policy_decision* out, const char* s, size_t n) {
  size_t i;
  for (i = 0; i < n && out->reason_len < out->reason_cap; i++) out->reason[out->reason_len++] = s[i];
}

static void echo(cx_str what, const cx_policy_input* in, cx_policy_decision* out) {
  char buf[128];
  out->reason_len = 0;
  if (cx_str_eq(what, "now")) {
    snprintf(buf, sizeof(buf), "now=%lld", (long long)in->device->now);
    append(out, buf, strlen(buf));
  } else if (cx_str_eq(what, "bucket")) {
    snprintf(buf, sizeof(buf), "bucket=%u", (unsigned)in->device->bucket);
    append(out, buf, strlen(buf));
  } else if (cx_str_eq(what, "stdin")) {
    char c;
    ssize_t n = read(0, &c, 1);
    snprintf(buf, sizeof(buf), "stdin=%s", n == 0 ? "eof" : "data");
    append(out, buf, strlen(buf));
  } else if (cx_str_eq(what, "fds")) {
    DIR* d = opendir("/proc/self/fd");
    struct dirent* e;
    int self = d != NULL ? dirfd(d) : -1;
    append(out, "fds=", 4);
    while (d != NULL && (e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.' || atoi(e->d_name) == self) continue;
      append(out, e->d_name, strlen(e->d_name));
      append(out, ",", 1);
    }
    if (d != NULL) closedir(d);
  }
}

static int decide(const cx_policy_input* in, cx_policy_decision* out) {
  size_t i;
  int rc = 0;
  int have_reason = 0;
  out->verdict = CX_VERDICT_INSTALL;
  for (i = 0; i < in->option_count; i++) {
    cx_str k = in->options[i].key, v = in->options[i].value;
    if (cx_str_eq(k, "verdict")) {
      parse_verdict(v, &out->verdict);
    } else if (cx_str_eq(k, "until")) {
      out->until = num(v);
    } else if (cx_str_eq(k, "reason")) {
      out->reason_len = cx_policy_set_reason(out, v.ptr, v.len);
      have_reason = 1;
    } else if (cx_str_eq(k, "reason_hex")) {
      size_t j;
      out->reason_len = 0;
      for (j = 0; j + 1 < v.len && out->reason_len < out->reason_cap; j += 2) {
        out->reason[out->reason_len++] = (char)(hexval(v.ptr[j]) * 16 + hexval(v.ptr[j + 1]));
      }
      have_reason = 1;
    } else if (cx_str_eq(k, "reason_len")) {
      out->reason_len = (size_t)num(v);
      have_reason = 1;
    } else if (cx_str_eq(k, "rc")) {
      rc = (int)num(v);
    } else if (cx_str_eq(k, "echo")) {
      echo(v, in, out);
      have_reason = 1;
    } else if (cx_str_eq(k, "alloc_mib")) {
      void* p = malloc((size_t)num(v) << 20);
      if (p == NULL) return 7;
      free(p);
    }
  }
  if (!have_reason) {
    static const char* const names[] = {"install", "defer", "reject", "revert"};
    const char* n = out->verdict >= 0 && out->verdict <= 3 ? names[out->verdict] : "other";
    out->reason_len = cx_policy_set_reason(out, n, strlen(n));
  }
  return rc;
}

static int check_options(const cx_option* options, size_t count, char* err, size_t err_cap,
                         size_t* err_len) {
  static const char* const known[] = {"verdict", "until", "reason", "reason_hex", "reason_len",
                                      "rc", "echo", "alloc_mib"};
  size_t i, j;
  char key[128];
  for (i = 0; i < count; i++) {
    int ok = 0, verdict;
    for (j = 0; j < sizeof(known) / sizeof(known[0]); j++) {
      if (cx_str_eq(options[i].key, known[j])) ok = 1;
    }
    if (ok && cx_str_eq(options[i].key, "verdict") && !parse_verdict(options[i].value, &verdict)) {
      *err_len = (size_t)snprintf(err, err_cap, "verdict: cannot parse \"%s\"",
                                  cstr(options[i].value, key, sizeof(key)));
      if (*err_len >= err_cap) *err_len = err_cap - 1;
      return 1;
    }
    if (!ok) {
      *err_len = (size_t)snprintf(err, err_cap, "unknown option %s",
                                  cstr(options[i].key, key, sizeof(key)));
      if (*err_len >= err_cap) *err_len = err_cap - 1;
      return 1;
    }
  }
  return 0;
}

static const cx_policy_plugin table = {sizeof(cx_policy_plugin), CX_POLICY_ABI_MAJOR,
                                       CX_POLICY_ABI_MINOR, {"fixed", 5}, decide, check_options};
CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &table; }
