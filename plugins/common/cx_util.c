#define _DEFAULT_SOURCE /* gmtime_r */
#include "cx_util.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

void cxu_init(cxu_text* t) {
  t->len = 0;
  t->buf[0] = '\0';
}

static size_t cxu_room(const cxu_text* t) { return sizeof(t->buf) - 1 - t->len; }

void cxu_add(cxu_text* t, const char* fmt, ...) {
  size_t room = cxu_room(t);
  va_list ap;
  int n;
  if (room == 0) return;
  va_start(ap, fmt);
  n = vsnprintf(t->buf + t->len, room + 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  t->len += (size_t)n < room ? (size_t)n : room;
}

static void cxu_put(cxu_text* t, const char* p, size_t n) {
  if (n > cxu_room(t)) n = cxu_room(t);
  memcpy(t->buf + t->len, p, n);
  t->len += n;
  t->buf[t->len] = '\0';
}

static int cxu_cont(const unsigned char* p, size_t avail, size_t i) {
  return i < avail && (p[i] & 0xC0) == 0x80;
}

/* Length of the valid, printable UTF-8 character at p (0 if it is not one). */
static size_t cxu_char_len(const unsigned char* p, size_t avail) {
  unsigned char b = p[0];
  if (b < 0x80) return (b >= 0x20 && b != 0x7F) ? 1 : 0;
  if (b >= 0xC2 && b <= 0xDF) {
    if (!cxu_cont(p, avail, 1)) return 0;
    return (b == 0xC2 && p[1] < 0xA0) ? 0 : 2; /* C1 controls */
  }
  if (b >= 0xE0 && b <= 0xEF) {
    if (!cxu_cont(p, avail, 1) || !cxu_cont(p, avail, 2)) return 0;
    if (b == 0xE0 && p[1] < 0xA0) return 0; /* overlong */
    if (b == 0xED && p[1] > 0x9F) return 0; /* surrogates */
    return 3;
  }
  if (b >= 0xF0 && b <= 0xF4) {
    if (!cxu_cont(p, avail, 1) || !cxu_cont(p, avail, 2) || !cxu_cont(p, avail, 3)) return 0;
    if (b == 0xF0 && p[1] < 0x90) return 0; /* overlong */
    if (b == 0xF4 && p[1] > 0x8F) return 0; /* > U+10FFFF */
    return 4;
  }
  return 0;
}

void cxu_add_str(cxu_text* t, cx_str s, size_t max) {
  const unsigned char* p = (const unsigned char*)s.ptr;
  size_t i = 0;
  while (i < s.len) {
    size_t n = cxu_char_len(p + i, s.len - i);
    if (i + (n ? n : 1) > max) {
      cxu_put(t, "...", 3);
      return;
    }
    if (n == 0) {
      cxu_put(t, "?", 1);
      i++;
    } else {
      if (n > cxu_room(t)) return; /* never a cut character */
      cxu_put(t, (const char*)p + i, n);
      i += n;
    }
  }
}

static int cxu_gm(int64_t when, struct tm* tm) {
  time_t tt = (time_t)when;
  if ((int64_t)tt != when) return -1;
  return gmtime_r(&tt, tm) ? 0 : -1;
}

void cxu_add_utc(cxu_text* t, int64_t when) {
  struct tm tm;
  if (cxu_gm(when, &tm) != 0) {
    cxu_add(t, "@%lld", (long long)when);
    return;
  }
  cxu_add(t, "%04lld-%02d-%02d %02d:%02d", (long long)tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
          tm.tm_hour, tm.tm_min);
  if (tm.tm_sec != 0) cxu_add(t, ":%02d", tm.tm_sec);
  cxu_add(t, " UTC");
}

void cxu_add_utc_date(cxu_text* t, int64_t when) {
  struct tm tm;
  if (cxu_gm(when, &tm) != 0) {
    cxu_add(t, "@%lld", (long long)when);
    return;
  }
  cxu_add(t, "%04lld-%02d-%02d", (long long)tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

/* Drops a UTF-8 sequence cut by clipping at the end of the text. */
static void cxu_trim_cut(cxu_text* t) {
  size_t i = t->len, start;
  unsigned char b;
  while (i > 0 && (((unsigned char)t->buf[i - 1]) & 0xC0) == 0x80) i--;
  if (i == 0) return;
  start = i - 1;
  b = (unsigned char)t->buf[start];
  if (b >= 0xC0) {
    size_t want = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
    if (t->len - start < want) t->len = start;
  }
  t->buf[t->len] = '\0';
}

int cxu_decide(cx_policy_decision* out, int verdict, int64_t until, cxu_text* reason) {
  cxu_trim_cut(reason);
  out->verdict = verdict;
  out->until = verdict == CX_VERDICT_DEFER ? until : 0;
  out->reason_len = cx_policy_set_reason(out, reason->buf, reason->len);
  return 0;
}

int cxu_fail(cx_policy_decision* out, cxu_text* reason) {
  cxu_decide(out, CX_VERDICT_DEFER, 0, reason);
  return 1;
}

int cxu_error(char* err, size_t err_cap, size_t* err_len, cxu_text* msg) {
  size_t n;
  cxu_trim_cut(msg);
  n = msg->len < err_cap ? msg->len : err_cap;
  if (n < msg->len) {
    while (n > 0 && (((unsigned char)msg->buf[n]) & 0xC0) == 0x80) n--;
  }
  if (err && n) memcpy(err, msg->buf, n);
  if (err_len) *err_len = n;
  return 1;
}

int64_t cxu_add_sat(int64_t a, int64_t b) {
  if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
  if (b < 0 && a < INT64_MIN - b) return INT64_MIN;
  return a + b;
}

int64_t cxu_days_between(int64_t from, int64_t to) {
  if (to <= from) return 0;
  /* to - from may overflow int64 only in the positive direction. */
  return (int64_t)(((uint64_t)to - (uint64_t)from) / CXU_SECONDS_PER_DAY);
}

cx_str cxu_cstr(const char* s) {
  cx_str r;
  r.ptr = s;
  r.len = strlen(s);
  return r;
}

static int cxu_space(char c) { return c == ' ' || c == '\t'; }

cx_str cxu_trim(cx_str s) {
  while (s.len > 0 && cxu_space(s.ptr[0])) {
    s.ptr++;
    s.len--;
  }
  while (s.len > 0 && cxu_space(s.ptr[s.len - 1])) s.len--;
  return s;
}

int cxu_eq(cx_str a, cx_str b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static char cxu_lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

int cxu_ieq(cx_str a, cx_str b) {
  size_t i;
  if (a.len != b.len) return 0;
  for (i = 0; i < a.len; i++) {
    if (cxu_lower(a.ptr[i]) != cxu_lower(b.ptr[i])) return 0;
  }
  return 1;
}

/* rest->ptr after the last item. Not NULL: a value {NULL, 0} is an empty
 * string, which yields one (empty) item like any other empty value. */
static const char cxu_list_end[1] = {0};

int cxu_next_item(cx_str* rest, cx_str* item) {
  size_t i = 0;
  if (rest->ptr == cxu_list_end) return 0;
  while (i < rest->len && rest->ptr[i] != ',') i++;
  item->ptr = rest->ptr;
  item->len = i;
  *item = cxu_trim(*item);
  if (i < rest->len) {
    rest->ptr += i + 1;
    rest->len -= i + 1;
  } else {
    rest->ptr = cxu_list_end; /* a trailing comma still yields an empty item */
    rest->len = 0;
  }
  return 1;
}

int cxu_parse_uint(cx_str s, uint64_t max, uint64_t* out) {
  uint64_t v = 0;
  size_t i;
  s = cxu_trim(s);
  if (s.len == 0) return -1;
  for (i = 0; i < s.len; i++) {
    unsigned d;
    if (s.ptr[i] < '0' || s.ptr[i] > '9') return -1;
    d = (unsigned)(s.ptr[i] - '0');
    if (v > (max - d) / 10) return -1; /* v * 10 + d > max */
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

int cxu_option_uint(cx_option o, uint64_t min, uint64_t max, const char* noun, uint64_t* out,
                    cxu_text* msg) {
  if (cxu_parse_uint(o.value, max, out) == 0 && *out >= min) return 0;
  cxu_add(msg, "%.*s: \"", (int)o.key.len, o.key.ptr);
  cxu_add_str(msg, o.value, 64);
  cxu_add(msg, "\" is not a %s (%.*s = N, N from %llu to %llu)", noun, (int)o.key.len, o.key.ptr,
          (unsigned long long)min, (unsigned long long)max);
  return 1;
}

static const char* const cxu_sev_names[] = {"unspecified", "low", "medium", "high", "critical"};

int cxu_severity_code(cx_str name) {
  int c;
  for (c = CX_SEVERITY_LOW; c <= CX_SEVERITY_CRITICAL; c++) {
    if (cxu_ieq(name, cxu_cstr(cxu_sev_names[c]))) return c;
  }
  return -1;
}

const char* cxu_severity_name(int32_t code) {
  if (code < CX_SEVERITY_LOW || code > CX_SEVERITY_CRITICAL) return cxu_sev_names[0];
  return cxu_sev_names[code];
}

int cxu_parse_severities(cx_str value, unsigned* mask, cx_str* bad) {
  cx_str rest = value, item;
  *mask = 0;
  while (cxu_next_item(&rest, &item)) {
    int c = cxu_severity_code(item);
    if (c < 0) {
      *bad = item;
      return -1;
    }
    *mask |= 1u << c;
  }
  return 0;
}

static int cxu_in(cx_str key, const char* const* list) {
  for (; list && *list; list++) {
    if (cxu_eq(key, cxu_cstr(*list))) return 1;
  }
  return 0;
}

int cxu_check_keys(const cx_option* options, size_t count, const char* const* accepted,
                   const char* const* repeatable, cxu_text* msg) {
  size_t i, j;
  for (i = 0; i < count; i++) {
    cx_str key = options[i].key;
    if (!cxu_in(key, accepted)) {
      const char* const* a;
      cxu_add(msg, "unknown key \"");
      cxu_add_str(msg, key, 64);
      cxu_add(msg, "\" (accepted:");
      for (a = accepted; *a; a++) cxu_add(msg, "%s %s", a == accepted ? "" : ",", *a);
      if (accepted[0] == NULL) cxu_add(msg, " none: this plugin takes no options");
      cxu_add(msg, ")");
      return 1;
    }
    if (cxu_in(key, repeatable)) continue;
    for (j = 0; j < i; j++) {
      if (cxu_eq(options[j].key, key)) {
        cxu_add(msg, "%.*s: given more than once", (int)key.len, key.ptr);
        return 1;
      }
    }
  }
  return 0;
}
