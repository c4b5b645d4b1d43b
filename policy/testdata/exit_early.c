/* Fault: decide exits the process with status 0 before answering. */
#include <unistd.h>
#include "fixture.h"
static int decide(const cx_policy_input* in, cx_policy_decision* out) {
  (void)in;
  (void)out;
  _exit(0);
}
FIXTURE_TABLE("exit_early", decide)
