/* Fault: decide never returns. */
#include "fixture.h"
static int decide(const cx_policy_input* in, cx_policy_decision* out) {
  volatile unsigned long n = 0;
  (void)in;
  (void)out;
  for (;;) n++;
  return 0;
}
FIXTURE_TABLE("loop", decide)
