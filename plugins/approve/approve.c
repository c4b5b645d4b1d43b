/*
 * approve -- installs only patches an administrator approved with
 * `cryptex approve ID`.
 *
 * Options ([plugin.approve]):
 *   auto_severity = SEV[,SEV...]  patches of these severities (low, medium,
 *                                 high, critical) need no approval
 *
 * Unapproved: defer with until 0 (ask again at the next run), the reason
 * names the command that approves it. An active patch gets install (keep):
 * approval gates installs, it never reverts.
 */
#include <cryptex/policy_plugin.h>

#include "cx_util.h"

static const char* const ap_keys[] = {"auto_severity", 0};

static int ap_parse(const cx_option* opts, size_t n, unsigned* autos, cxu_text* msg) {
  size_t i;
  *autos = 0;
  if (cxu_check_keys(opts, n, ap_keys, 0, msg)) return 1;
  for (i = 0; i < n; i++) {
    cx_str bad;
    if (cxu_parse_severities(opts[i].value, autos, &bad) != 0) {
      cxu_add(msg, "auto_severity: unknown severity \"");
      cxu_add_str(msg, bad, 64);
      cxu_add(msg, "\" (auto_severity = SEVERITY[,SEVERITY...] of %s)", CXU_SEVERITY_NAMES);
      return 1;
    }
  }
  return 0;
}

CXU_DEFINE_CHECK_OPTIONS(ap_check, unsigned, ap_parse)

static int ap_decide(const cx_policy_input* in, cx_policy_decision* out) {
  const cx_patch* p = in->patch;
  unsigned autos;
  int sev = p->severity;
  cxu_text r;
  cxu_init(&r);
  if (ap_parse(in->options, in->option_count, &autos, &r) != 0) return cxu_fail(out, &r);
  if (p->state == CX_PATCH_ACTIVE) {
    cxu_add(&r, "install: already active (approval gates new installs only)");
    return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
  }
  if (p->approved) {
    cxu_add(&r, "install: approved");
    if (p->approved_at != 0) {
      cxu_add(&r, " at ");
      cxu_add_utc(&r, p->approved_at);
    }
    return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
  }
  if (sev >= CX_SEVERITY_LOW && sev <= CX_SEVERITY_CRITICAL && (autos & (1u << sev))) {
    cxu_add(&r, "install: severity %s needs no approval (auto_severity)", cxu_severity_name(sev));
    return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
  }
  cxu_add(&r, "defer: waiting for approval: cryptex approve ");
  cxu_add_str(&r, p->id, 128);
  return cxu_decide(out, CX_VERDICT_DEFER, 0, &r);
}

static const cx_policy_plugin ap_plugin = {
    sizeof(cx_policy_plugin), CX_POLICY_ABI_MAJOR, CX_POLICY_ABI_MINOR,
    {"approve", 7},           ap_decide,           ap_check};

CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &ap_plugin; }
