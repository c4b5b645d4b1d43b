/* Fault: a library constructor crashes while the plugin is loaded. */
#include <signal.h>
#include "fixture.h"
__attribute__((constructor)) static void crash_on_load(void) { raise(SIGSEGV); }
static int decide(const cx_policy_input* in, cx_policy_decision* out) {
  (void)in;
  return fixture_install(out);
}
FIXTURE_TABLE("ctor_crash", decide)
