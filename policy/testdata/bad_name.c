/* Fault: the table's name is not UTF-8. */
#include "fixture.h"
static int decide(const cx_policy_input* in, cx_policy_decision* out) {
  (void)in;
  return fixture_install(out);
}
FIXTURE_TABLE("bad\xff", decide)
