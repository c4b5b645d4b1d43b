/*
 * health -- reverts an active patch whose health checks fail after its
 * activation.
 *
 * Options ([plugin.health]):
 *   failures = N            revert once N failed results count (1..1000,
 *                           default 3)
 *   checks = NAME[,NAME...] the checks (names of the agent's configured
 *                           health checks) that count, or `all` (default)
 *
 * Counted: failed results (ok = 0) of the chosen checks with
 * activated_at <= at <= now -- results from before the patch's latest
 * activation do not count, nor results after `now` (so a simulation at a past
 * time sees what the device saw then). If the activation time is unknown
 * (activated_at 0) every result up to now counts. Failures need not be
 * consecutive. A patch that is not active gets install: health is only about
 * active patches.
 */
#include <cryptex/policy_plugin.h>

#include "cx_util.h"

#define HL_MAX_FAILURES 1000u
#define HL_NAME_MAX 128
#define HL_LISTED 3 /* failed results named in the reason */

typedef struct hl_cfg {
  uint64_t failures;
  int all;
  cx_str checks; /* the comma list, if !all */
} hl_cfg;

static const char* const hl_keys[] = {"failures", "checks", 0};

static int hl_valid_name(cx_str s) {
  size_t i;
  if (s.len == 0 || s.len > HL_NAME_MAX) return 0;
  for (i = 0; i < s.len; i++) {
    unsigned char c = (unsigned char)s.ptr[i];
    if (c <= ' ' || c == 0x7F || c == ',') return 0;
  }
  return 1;
}

static int hl_parse(const cx_option* opts, size_t n, hl_cfg* c, cxu_text* msg) {
  size_t i;
  c->failures = 3;
  c->all = 1;
  c->checks.ptr = 0;
  c->checks.len = 0;
  if (cxu_check_keys(opts, n, hl_keys, 0, msg)) return 1;
  for (i = 0; i < n; i++) {
    cx_option o = opts[i];
    if (cx_str_eq(o.key, "failures")) {
      if (cxu_option_uint(o, 1, HL_MAX_FAILURES, "count", &c->failures, msg)) return 1;
    } else { /* checks */
      cx_str rest = o.value, item;
      if (cxu_ieq(cxu_trim(o.value), cxu_cstr("all"))) {
        c->all = 1;
        continue;
      }
      while (cxu_next_item(&rest, &item)) {
        if (!hl_valid_name(item) || cxu_ieq(item, cxu_cstr("all"))) {
          cxu_add(msg, "checks: \"");
          cxu_add_str(msg, item, 64);
          cxu_add(msg,
                  "\" is not a check name (checks = all, or NAME[,NAME...]: names of configured "
                  "health checks, 1..%d bytes, no spaces or commas)",
                  HL_NAME_MAX);
          return 1;
        }
      }
      c->all = 0;
      c->checks = o.value;
    }
  }
  return 0;
}

CXU_DEFINE_CHECK_OPTIONS(hl_check, hl_cfg, hl_parse)

static int hl_chosen(const hl_cfg* c, cx_str check) {
  cx_str rest = c->checks, item;
  if (c->all) return 1;
  while (cxu_next_item(&rest, &item)) {
    if (cxu_eq(item, check)) return 1;
  }
  return 0;
}

static void hl_add_rules(cxu_text* r, const hl_cfg* c) {
  cxu_add(r, "failures=%llu, checks=", (unsigned long long)c->failures);
  if (c->all)
    cxu_add(r, "all");
  else
    cxu_add_str(r, cxu_trim(c->checks), 256);
}

static int hl_decide(const cx_policy_input* in, cx_policy_decision* out) {
  const cx_patch* p = in->patch;
  const cx_device* d = in->device;
  hl_cfg c;
  cxu_text r, listed;
  uint64_t failed = 0;
  size_t i;
  cxu_init(&r);
  cxu_init(&listed);
  if (hl_parse(in->options, in->option_count, &c, &r) != 0) return cxu_fail(out, &r);
  if (p->state != CX_PATCH_ACTIVE) {
    cxu_add(&r, "install: not active (health judges active patches only)");
    return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
  }
  for (i = 0; i < d->health_count; i++) {
    const cx_health_result* h = &d->health[i];
    if (h->ok || h->at < p->activated_at || h->at > d->now || !hl_chosen(&c, h->check)) continue;
    if (failed < HL_LISTED) {
      cxu_add(&listed, "%s", failed ? ", " : "");
      cxu_add_str(&listed, h->check, 64);
      cxu_add(&listed, " at ");
      cxu_add_utc(&listed, h->at);
    }
    failed++;
  }
  cxu_add(&r, "%s: %llu failed health result%s since ", failed >= c.failures ? "revert" : "install",
          (unsigned long long)failed, failed == 1 ? "" : "s");
  if (p->activated_at != 0) {
    cxu_add(&r, "activation ");
    cxu_add_utc(&r, p->activated_at);
  } else {
    cxu_add(&r, "activation (time unknown: every result counts)");
  }
  cxu_add(&r, " (");
  hl_add_rules(&r, &c);
  cxu_add(&r, ")");
  if (failed > 0) cxu_add(&r, ": %s%s", listed.buf, failed > HL_LISTED ? ", ..." : "");
  return cxu_decide(out, failed >= c.failures ? CX_VERDICT_REVERT : CX_VERDICT_INSTALL, 0, &r);
}

static const cx_policy_plugin hl_plugin = {sizeof(cx_policy_plugin),
                                           CX_POLICY_ABI_MAJOR,
                                           CX_POLICY_ABI_MINOR,
                                           {"health", 6},
                                           hl_decide,
                                           hl_check};

CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &hl_plugin; }
