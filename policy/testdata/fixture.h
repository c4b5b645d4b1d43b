/* Shared by the fault fixtures of plugin_host_test: a valid plugin table
 * around a decide function, so each fixture differs from a good plugin in
 * exactly one way. FIXTURE_TABLE(name_literal, decide_fn) defines the table
 * and the entry symbol. */
#ifndef CRYPTEX_POLICY_TESTDATA_FIXTURE_H
#define CRYPTEX_POLICY_TESTDATA_FIXTURE_H

#include <cryptex/policy_plugin.h>

#define FIXTURE_TABLE(name_lit, decide_fn)                                        \
  static const cx_policy_plugin fixture_table = {                                 \
      sizeof(cx_policy_plugin),         CX_POLICY_ABI_MAJOR, CX_POLICY_ABI_MINOR, \
      {name_lit, sizeof(name_lit) - 1}, decide_fn,           0};                  \
  CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &fixture_table; }

static inline int fixture_install(cx_policy_decision* out) {
  out->verdict = CX_VERDICT_INSTALL;
  out->reason_len = cx_policy_set_reason(out, "ok", 2);
  return 0;
}

#endif
