/* Fault: decide forks a grandchild that keeps the answer pipe open and
 * sleeps, writing its pid to the file named by the option pidfile=PATH. The
 * host must time out and kill it with the child's process group. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "fixture.h"
static int decide(const cx_policy_input* in, cx_policy_decision* out) {
  char path[512];
  size_t i;
  pid_t pid;
  path[0] = '\0';
  for (i = 0; i < in->option_count; i++) {
    if (cx_str_eq(in->options[i].key, "pidfile") && in->options[i].value.len < sizeof(path)) {
      memcpy(path, in->options[i].value.ptr, in->options[i].value.len);
      path[in->options[i].value.len] = '\0';
    }
  }
  pid = fork();
  if (pid == 0) {
    FILE* f = fopen(path, "w");
    if (f != NULL) {
      fprintf(f, "%d\n", (int)getpid());
      fclose(f);
    }
    for (;;) pause();
  }
  return fixture_install(out);
}
FIXTURE_TABLE("daemon", decide)
