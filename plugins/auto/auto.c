/* auto: installs (and activates) every patch at once. The simplest policy,
 * and the one for a device that should always run the newest fixes; chain it
 * after a stricter plugin (e.g. a maintenance window) to add conditions:
 * the most conservative vote of the chain wins. It takes no options. */
#include <cryptex/policy_plugin.h>

static int auto_decide(const cx_policy_input* in, cx_policy_decision* out) {
  static const char kReason[] = "install at once";
  (void)in;
  out->verdict = CX_VERDICT_INSTALL;
  out->until = 0;
  out->reason_len = cx_policy_set_reason(out, kReason, sizeof(kReason) - 1);
  return 0;
}

/* Refuses every option: auto has none, so any key is a typo. */
static int auto_check_options(const cx_option* options, size_t option_count, char* err,
                              size_t err_cap, size_t* err_len) {
  static const char kPrefix[] = "auto takes no options; unknown key: ";
  size_t n = 0;
  size_t i;
  if (option_count == 0) return 0;
  for (i = 0; i < sizeof(kPrefix) - 1 && n < err_cap; i++) err[n++] = kPrefix[i];
  for (i = 0; i < options[0].key.len && n < err_cap; i++) err[n++] = options[0].key.ptr[i];
  *err_len = n;
  return 1;
}

static const cx_policy_plugin kAutoPlugin = {
    sizeof(cx_policy_plugin), CX_POLICY_ABI_MAJOR, CX_POLICY_ABI_MINOR, {"auto", 4},
    auto_decide,              auto_check_options};

CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &kAutoPlugin; }
