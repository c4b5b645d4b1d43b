/*
 * weekend -- an example cryptex policy plugin: a weekend change freeze.
 *
 * On Saturdays and Sundays (UTC) nobody is on call, so patches wait until
 * Monday 00:00 UTC -- unless they are severe enough to be worth the risk.
 * On weekdays the plugin has no objection (it votes "install"): in a chain,
 * other plugins add their own conditions and the most conservative vote wins.
 *
 * Options (the [plugin.weekend] section of the agent's configuration):
 *   allow = low | medium | high | critical   (default: critical)
 *       patches of at least this severity install even on a weekend.
 *
 * Build it against the one public header (nothing to link):
 *   cc -shared -fPIC -O2 -Wall -I/usr/include -o weekend.so weekend.c
 * and install it, owned by root and not group/world-writable, into the
 * agent's plugin directory (see README.md next to this file).
 */
#include <cryptex/policy_plugin.h>

#include <stdio.h>

#define SECONDS_PER_DAY 86400

/* Parses a severity name; 0 if it is not one. */
static int parse_severity(cx_str s) {
  if (cx_str_eq(s, "low")) return CX_SEVERITY_LOW;
  if (cx_str_eq(s, "medium")) return CX_SEVERITY_MEDIUM;
  if (cx_str_eq(s, "high")) return CX_SEVERITY_HIGH;
  if (cx_str_eq(s, "critical")) return CX_SEVERITY_CRITICAL;
  return 0;
}

/* The `allow` option (check_options has already refused a bad value). */
static int allowed_severity(const cx_option* options, size_t count) {
  size_t i;
  int allow = CX_SEVERITY_CRITICAL;
  for (i = 0; i < count; i++) {
    if (cx_str_eq(options[i].key, "allow")) allow = parse_severity(options[i].value);
  }
  return allow;
}

/* Days since 1970-01-01 (a Thursday), rounding towards minus infinity. */
static int64_t day_of(int64_t t) {
  return t >= 0 ? t / SECONDS_PER_DAY : -((-t + SECONDS_PER_DAY - 1) / SECONDS_PER_DAY);
}

/* 0 = Sunday .. 6 = Saturday. */
static int weekday_of(int64_t day) {
  int64_t w = (day + 4) % 7;
  return (int)(w < 0 ? w + 7 : w);
}

/* Writes a formatted reason (truncated to the host's buffer). */
static void set_reason(cx_policy_decision* out, const char* text) {
  size_t n = 0;
  while (text[n] != '\0') n++;
  out->reason_len = cx_policy_set_reason(out, text, n);
}

static int weekend_decide(const cx_policy_input* in, cx_policy_decision* out) {
  /* Decide from the decision time the host gives, never from the wall clock:
   * that is what makes `cryptex policy simulate --at TIME` truthful. */
  const int64_t now = in->device->now;
  const int64_t day = day_of(now);
  const int weekday = weekday_of(day);
  const int allow = allowed_severity(in->options, in->option_count);
  char text[128];

  if (weekday != 0 && weekday != 6) {
    out->verdict = CX_VERDICT_INSTALL;
    set_reason(out, "not a weekend");
    return 0;
  }
  if (in->patch->severity >= allow) {
    out->verdict = CX_VERDICT_INSTALL;
    set_reason(out, "weekend, but severe enough to install");
    return 0;
  }
  /* Saturday: Monday is 2 days later; Sunday: 1 day later. */
  out->verdict = CX_VERDICT_DEFER;
  out->until = (day + (weekday == 6 ? 2 : 1)) * SECONDS_PER_DAY;
  snprintf(text, sizeof(text), "weekend freeze until %lld (Monday 00:00 UTC)",
           (long long)out->until);
  set_reason(out, text);
  return 0;
}

/* Called when the agent loads its configuration: a non-zero return refuses
 * the configuration, with a message naming the bad key. */
static int weekend_check_options(const cx_option* options, size_t count, char* err,
                                 size_t err_cap, size_t* err_len) {
  size_t i;
  int n = 0;
  for (i = 0; i < count; i++) {
    const cx_option* o = &options[i];
    if (!cx_str_eq(o->key, "allow")) {
      n = snprintf(err, err_cap, "unknown option \"%.*s\"", (int)o->key.len, o->key.ptr);
    } else if (parse_severity(o->value) == 0) {
      n = snprintf(err, err_cap, "allow: \"%.*s\" is not low, medium, high or critical",
                   (int)o->value.len, o->value.ptr);
    } else {
      continue;
    }
    *err_len = n < 0 ? 0 : ((size_t)n < err_cap ? (size_t)n : err_cap - 1);
    return 1;
  }
  return 0;
}

static const cx_policy_plugin weekend_plugin = {
    sizeof(cx_policy_plugin), /* struct_size: lets the host know which members exist */
    CX_POLICY_ABI_MAJOR,      /* must match the host's */
    CX_POLICY_ABI_MINOR,
    {"weekend", 7}, /* name: pointer + length, no NUL needed */
    weekend_decide,
    weekend_check_options, /* optional: 0 if the plugin takes any options */
};

/* The one exported symbol: the host looks up CX_POLICY_ENTRY_SYMBOL. */
CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &weekend_plugin; }
