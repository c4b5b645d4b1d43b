/* A plugin built against an older header whose table ended at decide: its
 * struct_size does not cover check_options, so the host must not call the
 * (here: refusing) function that happens to follow in memory. */
#include <stddef.h>
#include "fixture.h"
static int decide(const cx_policy_input* in, cx_policy_decision* out) {
  (void)in;
  return fixture_install(out);
}
static int refuse_all(const cx_option* options, size_t count, char* err, size_t err_cap,
                      size_t* err_len) {
  (void)options;
  (void)count;
  (void)err;
  (void)err_cap;
  *err_len = 0;
  return 1;
}
static const cx_policy_plugin table = {offsetof(cx_policy_plugin, check_options),
                                       CX_POLICY_ABI_MAJOR, 0, {"old_table", 9}, decide,
                                       refuse_all};
CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &table; }
