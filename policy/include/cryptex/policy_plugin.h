/*
 * cryptex policy plugin ABI -- the one header a plugin author needs.
 *
 * A policy plugin is a shared object that decides, for one patch at a time,
 * whether the device installs (and activates) it now, defers it until a
 * given time, rejects it, or reverts it if it is active. The cryptex agent
 * loads plugins by name from its configured plugin directory and asks each
 * plugin of the configured chain; the most conservative answer wins
 * (revert > reject > defer > install) and every plugin's vote, with its
 * reason, goes into the store's history.
 *
 * Writing a plugin (plain C, nothing else needed):
 *
 *   #include <cryptex/policy_plugin.h>
 *   static int decide(const cx_policy_input* in, cx_policy_decision* out) {
 *     out->verdict = CX_VERDICT_INSTALL;
 *     out->reason_len = cx_policy_set_reason(out, "always", 6);
 *     return 0;
 *   }
 *   static const cx_policy_plugin plugin = {
 *     sizeof(cx_policy_plugin), CX_POLICY_ABI_MAJOR, CX_POLICY_ABI_MINOR,
 *     {"mine", 4}, decide, 0};
 *   CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) {
 *     return &plugin;
 *   }
 *
 *   cc -shared -fPIC -o mine.so mine.c
 *
 * Contract (the host enforces what it can; see the agent's documentation):
 *  - The entry symbol is CX_POLICY_ENTRY_SYMBOL ("cryptex_policy_plugin"). It
 *    returns a pointer to a table that stays valid while the plugin is loaded.
 *  - abi_major must equal the host's CX_POLICY_ABI_MAJOR or the plugin is
 *    refused. abi_minor and struct_size gate members added later: the host
 *    reads a member only if struct_size covers it.
 *  - Every string crossing the boundary is a cx_str: pointer + length, NOT
 *    NUL-terminated, UTF-8. Arrays are pointer + count.
 *  - Memory: the plugin never frees host memory and the host never frees
 *    plugin memory. Input is valid for the duration of the call only. The
 *    reason is copied into a buffer the host owns (reason, reason_cap).
 *  - decide() is called once per patch, in a separate short-lived process
 *    with a time limit: it must not rely on state kept between calls, and it
 *    should be pure: decide from the input and the current time given in it,
 *    never from the wall clock (that is what makes `cryptex policy simulate
 *    --at TIME` truthful). A crash, hang, non-zero return, out-of-range
 *    verdict, reason longer than reason_cap or not UTF-8 makes the host
 *    record a failure and treat the vote as a deferral. So do a reason
 *    holding a NUL byte, a deferral with `until` < 0, and a verdict left
 *    unset (the host fills it with an invalid value before the call).
 *  - Times are Unix seconds (UTC).
 */
#ifndef CRYPTEX_POLICY_PLUGIN_H
#define CRYPTEX_POLICY_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CX_POLICY_ABI_MAJOR 1
#define CX_POLICY_ABI_MINOR 0
#define CX_POLICY_ENTRY_SYMBOL "cryptex_policy_plugin"

#if defined(__GNUC__)
#define CX_POLICY_EXPORT __attribute__((visibility("default")))
#else
#define CX_POLICY_EXPORT
#endif

/* A string: `len` bytes at `ptr`, not NUL-terminated. ptr may be NULL when
 * len is 0. */
typedef struct cx_str {
  const char* ptr;
  size_t len;
} cx_str;

/* One key = value of the plugin's own INI section ([plugin.NAME]). */
typedef struct cx_option {
  cx_str key;
  cx_str value;
} cx_option;

typedef enum cx_severity {
  CX_SEVERITY_NONE = 0, /* not given */
  CX_SEVERITY_LOW = 1,
  CX_SEVERITY_MEDIUM = 2,
  CX_SEVERITY_HIGH = 3,
  CX_SEVERITY_CRITICAL = 4
} cx_severity;

typedef enum cx_class {
  CX_CLASS_RELAUNCH = 0, /* takes effect on the running mount */
  CX_CLASS_REBOOT = 1    /* takes effect at the next mount */
} cx_class;

typedef enum cx_patch_state {
  CX_PATCH_AVAILABLE = 0, /* offered (local patch directory or feed), not installed */
  CX_PATCH_INSTALLED = 1, /* in the store, not active */
  CX_PATCH_ACTIVE = 2     /* in the store and active */
} cx_patch_state;

/* The patch the decision is about. */
typedef struct cx_patch {
  cx_str id;
  cx_str line; /* image line (base image name) it patches */
  cx_str version;
  int32_t severity;         /* cx_severity */
  int32_t activation_class; /* cx_class */
  const cx_str* cves;
  size_t cve_count;
  int64_t released_at; /* 0 if unknown */
  uint64_t size;       /* bytes of the patch file */
  uint64_t release_counter;
  int32_t state;   /* cx_patch_state */
  int32_t revoked; /* 1 if the vendor revoked it (feed or local flag) */
  cx_str revoked_reason;
  int32_t approved; /* 1 if an administrator ran `cryptex approve ID` */
  int64_t approved_at;
  int64_t installed_at; /* 0 if not installed */
  int64_t activated_at; /* 0 if not active: when it last became active */
  uint32_t level;       /* 1-based position it has or would have in the line's
                           active stack (its patch level) */
} cx_patch;

/* Another patch the device holds (for context: levels, dependencies). */
typedef struct cx_installed_patch {
  cx_str id;
  cx_str line;
  int32_t active; /* 1 if active */
  int64_t installed_at;
  int64_t activated_at; /* 0 if not active */
} cx_installed_patch;

/* One result of a configured health check, newest last. */
typedef struct cx_health_result {
  cx_str check; /* the check's name in the config */
  int64_t at;   /* when it ran */
  int32_t ok;   /* 1 passed, 0 failed or timed out */
} cx_health_result;

typedef struct cx_device {
  int64_t now;     /* the decision time (the agent's clock, or --at) */
  uint32_t bucket; /* 0..99, stable per machine (from its machine id) */
  const cx_installed_patch* patches;
  size_t patch_count;
  const cx_health_result* health;
  size_t health_count;
} cx_device;

typedef struct cx_policy_input {
  uint32_t struct_size; /* sizeof(cx_policy_input) of the host */
  const cx_patch* patch;
  const cx_device* device;
  const cx_option* options; /* the plugin's INI section, in file order */
  size_t option_count;
} cx_policy_input;

typedef enum cx_verdict {
  CX_VERDICT_INSTALL = 0, /* install (and activate) now */
  CX_VERDICT_DEFER = 1,   /* ask again at `until` */
  CX_VERDICT_REJECT = 2,  /* never install this patch */
  CX_VERDICT_REVERT = 3   /* revert it if active (else: as reject) */
} cx_verdict;

typedef struct cx_policy_decision {
  uint32_t struct_size; /* sizeof(cx_policy_decision) of the host */
  int32_t verdict;      /* cx_verdict; set by the plugin */
  int64_t until;        /* for CX_VERDICT_DEFER: when to ask again (0: next run) */
  char* reason;         /* host-owned buffer of reason_cap bytes */
  size_t reason_cap;
  size_t reason_len; /* set by the plugin: bytes written to reason */
} cx_policy_decision;

typedef struct cx_policy_plugin {
  uint32_t struct_size; /* sizeof(cx_policy_plugin) of the plugin */
  uint16_t abi_major;   /* must be CX_POLICY_ABI_MAJOR */
  uint16_t abi_minor;
  cx_str name;
  /* Decides for in->patch. Returns 0 on success; any other value is a
   * failure (the host defers and records it). */
  int (*decide)(const cx_policy_input* in, cx_policy_decision* out);
  /* Optional (NULL if absent): checks the plugin's options when the agent
   * loads its config. Returns 0 if they are valid; otherwise writes a message
   * naming the bad key into err (at most err_cap bytes, length in *err_len)
   * and returns non-zero: the config is refused. */
  int (*check_options)(const cx_option* options, size_t option_count, char* err, size_t err_cap,
                       size_t* err_len);
} cx_policy_plugin;

typedef const cx_policy_plugin* (*cx_policy_entry_fn)(void);

/* Helper: copies up to out->reason_cap bytes of text into out->reason and
 * returns the number of bytes copied (truncating at a UTF-8 character
 * boundary). Header-only, so a plugin needs nothing but this file. */
static inline size_t cx_policy_set_reason(cx_policy_decision* out, const char* text, size_t len) {
  size_t n = len < out->reason_cap ? len : out->reason_cap;
  size_t i;
  if (n < len) {
    while (n > 0 && (((unsigned char)text[n]) & 0xC0) == 0x80) n--;
  }
  for (i = 0; i < n; i++) out->reason[i] = text[i];
  return n;
}

/* Helper: 1 if `s` equals the NUL-terminated `lit`. */
static inline int cx_str_eq(cx_str s, const char* lit) {
  size_t i = 0;
  for (; i < s.len; i++) {
    if (lit[i] == '\0' || lit[i] != s.ptr[i]) return 0;
  }
  return lit[i] == '\0';
}

#ifdef __cplusplus
}
#endif

#endif /* CRYPTEX_POLICY_PLUGIN_H */
