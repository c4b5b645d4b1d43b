/* Fault: no entry symbol (cryptex_policy_plugin is missing). */
#include <cryptex/policy_plugin.h>
CX_POLICY_EXPORT int not_the_entry(void) { return 1; }
