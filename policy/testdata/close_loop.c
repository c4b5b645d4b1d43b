/* Fault: decide closes every descriptor it did not open (the host's answer
 * pipe with them), then never returns: the host sees EOF but no exit. */
#include <unistd.h>
#include "fixture.h"
static int decide(const cx_policy_input* in, cx_policy_decision* out) {
  volatile unsigned long n = 0;
  int fd;
  (void)in;
  (void)out;
  for (fd = 3; fd < 1024; fd++) close(fd);
  for (;;) n++;
  return 0;
}
FIXTURE_TABLE("close_loop", decide)
