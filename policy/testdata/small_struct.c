/* Fault: struct_size does not cover decide. */
#include <stddef.h>
#include "fixture.h"
static int decide(const cx_policy_input* in, cx_policy_decision* out) {
  (void)in;
  return fixture_install(out);
}
static const cx_policy_plugin table = {offsetof(cx_policy_plugin, decide), CX_POLICY_ABI_MAJOR,
                                       0, {"small_struct", 12}, decide, 0};
CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &table; }
