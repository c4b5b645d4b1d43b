/*
 * defer -- holds a patch for a number of days after its release.
 *
 * Options ([plugin.defer]):
 *   days = N              hold every patch N days after released_at (required,
 *                         0..3650)
 *   days_low|days_medium|days_high|days_critical = N
 *                         the hold for that severity instead of `days`
 *   immediate = SEV[,SEV] these severities install at once (no hold)
 *   deadline_days = M     the most any patch is held: after M days it installs
 *                         even if days_SEVERITY says longer. M >= days
 *                         (a deadline below the default hold is refused).
 *   unknown_release = hold|install
 *                         a patch with released_at 0 (unknown) is held
 *                         (default: defer, until 0 = ask again next run) or
 *                         installed; immediate severities install either way.
 * An active patch gets install (keep): the hold is for new installs only.
 */
#include <cryptex/policy_plugin.h>
#include <stdio.h>

#include "cx_util.h"

typedef struct defer_cfg {
  uint64_t days;
  uint64_t sev_days[CX_SEVERITY_CRITICAL + 1]; /* per severity; valid if sev_set bit */
  unsigned sev_set;
  unsigned immediate; /* bit per severity */
  int has_deadline;
  uint64_t deadline_days;
  int unknown_install;
} defer_cfg;

static const char* const defer_keys[] = {"days",          "days_low",        "days_medium",
                                         "days_high",     "days_critical",   "immediate",
                                         "deadline_days", "unknown_release", 0};

static int defer_days_value(cx_option o, uint64_t* out, cxu_text* msg) {
  return cxu_option_uint(o, 0, CXU_MAX_DAYS, "number of days", out, msg);
}

static void defer_add_severities(cxu_text* t, unsigned mask) {
  int c, first = 1;
  for (c = CX_SEVERITY_LOW; c <= CX_SEVERITY_CRITICAL; c++) {
    if (!(mask & (1u << c))) continue;
    cxu_add(t, "%s%s", first ? "" : ",", cxu_severity_name(c));
    first = 0;
  }
}

static int defer_parse(const cx_option* opts, size_t n, defer_cfg* c, cxu_text* msg) {
  size_t i;
  int have_days = 0, sev;
  c->days = 0;
  c->sev_set = 0;
  c->immediate = 0;
  c->has_deadline = 0;
  c->deadline_days = 0;
  c->unknown_install = 0;
  if (cxu_check_keys(opts, n, defer_keys, 0, msg)) return 1;
  for (i = 0; i < n; i++) {
    cx_option o = opts[i];
    if (cx_str_eq(o.key, "days")) {
      if (defer_days_value(o, &c->days, msg)) return 1;
      have_days = 1;
    } else if (cx_str_eq(o.key, "deadline_days")) {
      if (defer_days_value(o, &c->deadline_days, msg)) return 1;
      c->has_deadline = 1;
    } else if (cx_str_eq(o.key, "immediate")) {
      cx_str bad;
      if (cxu_parse_severities(o.value, &c->immediate, &bad) != 0) {
        cxu_add(msg, "immediate: unknown severity \"");
        cxu_add_str(msg, bad, 64);
        cxu_add(msg, "\" (immediate = SEVERITY[,SEVERITY...] of %s)", CXU_SEVERITY_NAMES);
        return 1;
      }
    } else if (cx_str_eq(o.key, "unknown_release")) {
      cx_str v = cxu_trim(o.value);
      if (cx_str_eq(v, "install")) {
        c->unknown_install = 1;
      } else if (!cx_str_eq(v, "hold")) {
        cxu_add(msg, "unknown_release: \"");
        cxu_add_str(msg, o.value, 64);
        cxu_add(msg, "\" is neither hold nor install (unknown_release = hold|install)");
        return 1;
      }
    } else { /* days_SEVERITY */
      cx_str name = {o.key.ptr + 5, o.key.len - 5};
      sev = cxu_severity_code(name);
      if (defer_days_value(o, &c->sev_days[sev], msg)) return 1;
      c->sev_set |= 1u << sev;
    }
  }
  if (!have_days) {
    cxu_add(msg, "days: missing (days = N: hold patches N days after their release)");
    return 1;
  }
  if (c->has_deadline && c->deadline_days < c->days) {
    cxu_add(msg,
            "deadline_days: %llu is below days = %llu (deadline_days = M is the most any patch is "
            "held, M >= days)",
            (unsigned long long)c->deadline_days, (unsigned long long)c->days);
    return 1;
  }
  for (sev = CX_SEVERITY_LOW; sev <= CX_SEVERITY_CRITICAL; sev++) {
    if ((c->immediate & c->sev_set) & (1u << sev)) {
      cxu_add(msg, "days_%s: severity %s is also immediate (give one of the two)",
              cxu_severity_name(sev), cxu_severity_name(sev));
      return 1;
    }
  }
  return 0;
}

CXU_DEFINE_CHECK_OPTIONS(defer_check, defer_cfg, defer_parse)

static int defer_decide(const cx_policy_input* in, cx_policy_decision* out) {
  const cx_patch* p = in->patch;
  int64_t now = in->device->now;
  defer_cfg c;
  cxu_text r;
  int sev = p->severity;
  uint64_t hold;
  char rule[32];
  int64_t due, deadline = 0;
  cxu_init(&r);
  if (defer_parse(in->options, in->option_count, &c, &r) != 0) return cxu_fail(out, &r);
  if (p->state == CX_PATCH_ACTIVE) {
    cxu_add(&r, "install: already active (defer holds new installs only)");
    return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
  }
  if (sev < CX_SEVERITY_LOW || sev > CX_SEVERITY_CRITICAL) sev = CX_SEVERITY_NONE;
  if (sev != CX_SEVERITY_NONE && (c.immediate & (1u << sev))) {
    cxu_add(&r, "install: severity %s installs at once (immediate=", cxu_severity_name(sev));
    defer_add_severities(&r, c.immediate);
    cxu_add(&r, ")");
    return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
  }
  if (sev != CX_SEVERITY_NONE && (c.sev_set & (1u << sev))) {
    hold = c.sev_days[sev];
    snprintf(rule, sizeof rule, "days_%s=%llu", cxu_severity_name(sev), (unsigned long long)hold);
  } else {
    hold = c.days;
    snprintf(rule, sizeof rule, "days=%llu", (unsigned long long)hold);
  }
  if (p->released_at == 0) {
    if (c.unknown_install) {
      cxu_add(&r, "install: release time unknown (unknown_release=install)");
      return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
    }
    cxu_add(&r, "defer: release time unknown, held (%s; unknown_release=hold): ask again next run",
            rule);
    return cxu_decide(out, CX_VERDICT_DEFER, 0, &r);
  }
  due = cxu_add_sat(p->released_at, (int64_t)hold * CXU_SECONDS_PER_DAY);
  if (c.has_deadline)
    deadline = cxu_add_sat(p->released_at, (int64_t)c.deadline_days * CXU_SECONDS_PER_DAY);
  if (c.has_deadline && deadline < due) {
    if (now >= deadline) {
      cxu_add(&r, "install: deadline: released ");
      cxu_add_utc(&r, p->released_at);
      cxu_add(&r, ", deadline_days=%llu reached ", (unsigned long long)c.deadline_days);
      cxu_add_utc(&r, deadline);
      cxu_add(&r, " (%s would hold until ", rule);
      cxu_add_utc(&r, due);
      cxu_add(&r, ")");
      return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
    }
    cxu_add(&r, "defer: released ");
    cxu_add_utc(&r, p->released_at);
    cxu_add(&r, " (%lld of %llu days, %s capped by deadline_days=%llu); due ",
            (long long)cxu_days_between(p->released_at, now), (unsigned long long)c.deadline_days,
            rule, (unsigned long long)c.deadline_days);
    cxu_add_utc(&r, deadline);
    return cxu_decide(out, CX_VERDICT_DEFER, deadline, &r);
  }
  if (now >= due) {
    cxu_add(&r, "install: released ");
    cxu_add_utc(&r, p->released_at);
    cxu_add(&r, ", %llu-day hold (%s) ended ", (unsigned long long)hold, rule);
    cxu_add_utc(&r, due);
    return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
  }
  cxu_add(&r, "defer: released ");
  cxu_add_utc(&r, p->released_at);
  cxu_add(&r, " (%lld of %llu days, %s); due ", (long long)cxu_days_between(p->released_at, now),
          (unsigned long long)hold, rule);
  cxu_add_utc(&r, due);
  return cxu_decide(out, CX_VERDICT_DEFER, due, &r);
}

static const cx_policy_plugin defer_plugin = {sizeof(cx_policy_plugin),
                                              CX_POLICY_ABI_MAJOR,
                                              CX_POLICY_ABI_MINOR,
                                              {"defer", 5},
                                              defer_decide,
                                              defer_check};

CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &defer_plugin; }
