/* Fault: the entry symbol returns NULL. */
#include <cryptex/policy_plugin.h>
CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return 0; }
