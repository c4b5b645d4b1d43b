/*
 * revocation -- follows the vendor's revocations (from the feed or a local
 * flag): a revoked patch is rejected, or reverted if it is active. The reason
 * carries the vendor's reason. Takes no options.
 */
#include <cryptex/policy_plugin.h>

#include "cx_util.h"

static const char* const rv_keys[] = {0};

static int rv_check(const cx_option* opts, size_t n, char* err, size_t cap, size_t* len) {
  cxu_text msg;
  cxu_init(&msg);
  if (cxu_check_keys(opts, n, rv_keys, 0, &msg) == 0) return 0;
  return cxu_error(err, cap, len, &msg);
}

static int rv_decide(const cx_policy_input* in, cx_policy_decision* out) {
  const cx_patch* p = in->patch;
  int active = p->state == CX_PATCH_ACTIVE;
  cxu_text r;
  cxu_init(&r);
  if (cxu_check_keys(in->options, in->option_count, rv_keys, 0, &r)) return cxu_fail(out, &r);
  if (!p->revoked) {
    cxu_add(&r, "install: not revoked");
    return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
  }
  cxu_add(&r, "%s: revoked by the vendor: ", active ? "revert" : "reject");
  if (cxu_trim(p->revoked_reason).len == 0)
    cxu_add(&r, "(no reason given)");
  else
    cxu_add_str(&r, p->revoked_reason, 768);
  return cxu_decide(out, active ? CX_VERDICT_REVERT : CX_VERDICT_REJECT, 0, &r);
}

static const cx_policy_plugin rv_plugin = {
    sizeof(cx_policy_plugin), CX_POLICY_ABI_MAJOR, CX_POLICY_ABI_MINOR,
    {"revocation", 10},       rv_decide,           rv_check};

CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &rv_plugin; }
