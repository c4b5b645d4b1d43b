/*
 * Helpers shared by the shipped policy plugins (compiled into each .so; plain
 * C, libc only, nothing exported). They hold the one definition of what every
 * plugin does alike: option checking (unknown, repeated and empty keys; numbers;
 * comma lists; severity names), time formatting for reasons, and building a
 * reason or error message that is valid UTF-8 whatever bytes the input holds.
 */
#ifndef CRYPTEX_PLUGINS_CX_UTIL_H
#define CRYPTEX_PLUGINS_CX_UTIL_H

#include <cryptex/policy_plugin.h>
#include <stddef.h>
#include <stdint.h>

#define CXU_SECONDS_PER_DAY 86400
/* Upper bound of every "days" option (ten years). */
#define CXU_MAX_DAYS 3650u

/* A text being built: appends are clipped at the buffer's end, never
 * overflow; cxu_finish() trims a cut UTF-8 sequence. */
typedef struct cxu_text {
  char buf[2048];
  size_t len;
} cxu_text;

void cxu_init(cxu_text* t);
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void cxu_add(cxu_text* t, const char* fmt, ...);
/* Appends input bytes: valid printable UTF-8 is copied, anything else (invalid
 * sequences, control characters) becomes '?'; more than `max` bytes are cut
 * with "...". */
void cxu_add_str(cxu_text* t, cx_str s, size_t max);
/* "2026-11-27 00:00 UTC" (":SS" added when the seconds are not 0). */
void cxu_add_utc(cxu_text* t, int64_t when);
/* "2026-11-27" (UTC). */
void cxu_add_utc_date(cxu_text* t, int64_t when);

/* Sets the decision (verdict, until, reason copied to the host's buffer).
 * Returns 0, for `return cxu_decide(...)`. */
int cxu_decide(cx_policy_decision* out, int verdict, int64_t until, cxu_text* reason);
/* A failed decision (options that check_options would refuse, a time out of
 * range): verdict defer, the reason says why. Returns 1 (decide's failure). */
int cxu_fail(cx_policy_decision* out, cxu_text* reason);
/* Copies the message to check_options' err buffer. Returns 1. */
int cxu_error(char* err, size_t err_cap, size_t* err_len, cxu_text* msg);

/* Saturating a + b for times. */
int64_t cxu_add_sat(int64_t a, int64_t b);
/* Whole days from `from` to `to` (floor; 0 if to < from). */
int64_t cxu_days_between(int64_t from, int64_t to);

/* Strings. */
cx_str cxu_cstr(const char* s);
cx_str cxu_trim(cx_str s);
int cxu_eq(cx_str a, cx_str b);  /* byte-equal */
int cxu_ieq(cx_str a, cx_str b); /* ASCII case-insensitive */
/* Next item of a comma-separated list, trimmed. Returns 0 when `rest` is
 * exhausted. Items may be empty (callers refuse them): an empty value is one
 * empty item, never an empty list. */
int cxu_next_item(cx_str* rest, cx_str* item);

/* A decimal number without sign, <= max. Returns 0 if valid. */
int cxu_parse_uint(cx_str s, uint64_t max, uint64_t* out);
/* The value of option `o` as such a number from `min` to `max`, into *out.
 * Returns 0 if valid; else writes `KEY: "VALUE" is not a NOUN (KEY = N, N from
 * MIN to MAX)` to msg and returns 1. */
int cxu_option_uint(cx_option o, uint64_t min, uint64_t max, const char* noun, uint64_t* out,
                    cxu_text* msg);

/* Severities: names low, medium, high, critical. */
int cxu_severity_code(cx_str name);          /* CX_SEVERITY_*, or -1 if unknown */
const char* cxu_severity_name(int32_t code); /* "unspecified" for NONE/out of range */
/* A comma list of severity names -> bit (1 << code) set. Returns 0 if valid;
 * else *bad is the first unknown or empty item. */
int cxu_parse_severities(cx_str value, unsigned* mask, cx_str* bad);
#define CXU_SEVERITY_NAMES "low, medium, high, critical"

/* Checks the generic rules of an option list against the accepted keys (a
 * NULL-terminated array): every key is known, and only keys listed in
 * `repeatable` (NULL-terminated, may be NULL) appear more than once. On a
 * violation writes a message naming the key into msg and returns non-zero.
 * Values (empty ones included) are each plugin's to check: it knows the form. */
int cxu_check_keys(const cx_option* options, size_t count, const char* const* accepted,
                   const char* const* repeatable, cxu_text* msg);

/* Defines `static int NAME(options, count, err, err_cap, err_len)`, a
 * plugin's check_options: parses the options into a CFG_TYPE (on the stack)
 * with PARSE -- int PARSE(const cx_option*, size_t, CFG_TYPE*, cxu_text* msg),
 * 0 if valid, else non-zero with msg saying why -- the same parse decide()
 * uses, so both refuse the same options. Returns 0 if valid; else copies the
 * message to err (cxu_error) and returns 1. */
#define CXU_DEFINE_CHECK_OPTIONS(NAME, CFG_TYPE, PARSE)                                  \
  static int NAME(const cx_option* opts, size_t n, char* err, size_t cap, size_t* len) { \
    CFG_TYPE cfg;                                                                        \
    cxu_text msg;                                                                        \
    cxu_init(&msg);                                                                      \
    if (PARSE(opts, n, &cfg, &msg) == 0) return 0;                                       \
    return cxu_error(err, cap, len, &msg);                                               \
  }

#endif /* CRYPTEX_PLUGINS_CX_UTIL_H */
