/* Fault: a plugin for another ABI major. */
#include "fixture.h"
static int decide(const cx_policy_input* in, cx_policy_decision* out) {
  (void)in;
  return fixture_install(out);
}
static const cx_policy_plugin table = {sizeof(cx_policy_plugin), CX_POLICY_ABI_MAJOR + 1, 0,
                                       {"wrong_abi", 9}, decide, 0};
CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &table; }
