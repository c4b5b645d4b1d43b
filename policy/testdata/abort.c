/* Fault: decide calls abort() (SIGABRT). */
#include <stdlib.h>
#include "fixture.h"
static int decide(const cx_policy_input* in, cx_policy_decision* out) {
  (void)in;
  (void)out;
  abort();
}
FIXTURE_TABLE("abort", decide)
