/* Fault: decide dereferences NULL (SIGSEGV). */
#include "fixture.h"
static int decide(const cx_policy_input* in, cx_policy_decision* out) {
  volatile int* volatile p = 0;
  (void)in;
  (void)out;
  *p = 1;
  return 0;
}
FIXTURE_TABLE("segv", decide)
