/*
 * lists -- allow and deny lists by patch id or CVE, pinned image lines, and
 * a maximum patch level.
 *
 * Options ([plugin.lists]; the list keys may be given several times, their
 * items add up):
 *   deny_ids = ID[,ID...]      these patches are never installed
 *   deny_cves = CVE[,CVE...]   nor patches fixing any of these CVEs
 *   allow_ids = ID[,ID...]     if any allow list is given, only patches in
 *   allow_cves = CVE[,CVE...]  allow_ids or fixing a CVE in allow_cves install
 *   pin_lines = LINE[,LINE...] these image lines stay at their current level
 *   max_level = N              no line goes above patch level N (N >= 1)
 * Ids and lines follow the store's name rule (1..128 bytes of
 * [A-Za-z0-9._+-], not starting with '.'); CVEs are CVE-YYYY-NNNN (4 or more
 * digits), matched case-insensitively.
 *
 * The first rule that applies decides, in this order:
 *   1. denied (id or a CVE): reject; an active patch: revert
 *   2. level above max_level: reject; an active patch: revert (a level of 0,
 *      unknown, is deferred: the rule cannot be checked)
 *   3. pinned line: defer (until 0: ask again next run; unpinning releases
 *      it); an active patch: install (keep -- a pin does not revert)
 *   4. allow lists given and the patch matches none: defer (until 0), so that
 *      adding it to a list releases it; an active patch: install (keep)
 *   5. otherwise install.
 * Deferring (not rejecting) pinned and unlisted patches keeps those decisions
 * reversible by editing the config; deny and max_level are the hard rules.
 */
#include <cryptex/policy_plugin.h>

#include "cx_util.h"

#define LS_NAME_MAX 128

typedef struct ls_cfg {
  /* Lists stay as the option values; decide walks them (no copies, no limit
   * on their length). */
  const cx_option* opts;
  size_t count;
  int has_allow;
  int has_max;
  uint64_t max_level;
} ls_cfg;

static const char* const ls_keys[] = {
    "deny_ids", "deny_cves", "allow_ids", "allow_cves", "pin_lines", "max_level", 0};
static const char* const ls_repeatable[] = {"deny_ids",   "deny_cves", "allow_ids",
                                            "allow_cves", "pin_lines", 0};

/* The store's rule for line names and patch ids. */
static int ls_valid_name(cx_str s) {
  size_t i;
  if (s.len == 0 || s.len > LS_NAME_MAX || s.ptr[0] == '.') return 0;
  for (i = 0; i < s.len; i++) {
    char c = s.ptr[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '+' || c == '-'))
      return 0;
  }
  return 1;
}

static int ls_digits(cx_str s, size_t from, size_t to) {
  size_t i;
  for (i = from; i < to; i++) {
    if (s.ptr[i] < '0' || s.ptr[i] > '9') return 0;
  }
  return 1;
}

/* CVE-YYYY-NNNN... (any case). */
static int ls_valid_cve(cx_str s) {
  cx_str prefix = {s.ptr, 4};
  return s.len >= 13 && s.len <= 32 && cxu_ieq(prefix, cxu_cstr("CVE-")) && ls_digits(s, 4, 8) &&
         s.ptr[8] == '-' && ls_digits(s, 9, s.len);
}

static int ls_check_list(cx_option o, int cves, cxu_text* msg) {
  cx_str rest = o.value, item;
  while (cxu_next_item(&rest, &item)) {
    if (cves ? ls_valid_cve(item) : ls_valid_name(item)) continue;
    cxu_add(msg, "%.*s: \"", (int)o.key.len, o.key.ptr);
    cxu_add_str(msg, item, 64);
    if (cves)
      cxu_add(msg, "\" is not a CVE id (%.*s = CVE-YYYY-NNNN[,...])", (int)o.key.len, o.key.ptr);
    else
      cxu_add(msg,
              "\" is not a %s (%.*s = NAME[,NAME...], names of 1..128 of A-Z a-z 0-9 . _ + -,"
              " not starting with '.')",
              cx_str_eq(o.key, "pin_lines") ? "line name" : "patch id", (int)o.key.len, o.key.ptr);
    return 1;
  }
  return 0;
}

static int ls_parse(const cx_option* opts, size_t n, ls_cfg* c, cxu_text* msg) {
  size_t i;
  c->opts = opts;
  c->count = n;
  c->has_allow = 0;
  c->has_max = 0;
  c->max_level = 0;
  if (cxu_check_keys(opts, n, ls_keys, ls_repeatable, msg)) return 1;
  for (i = 0; i < n; i++) {
    cx_option o = opts[i];
    if (cx_str_eq(o.key, "max_level")) {
      if (cxu_option_uint(o, 1, UINT32_MAX, "patch level", &c->max_level, msg)) return 1;
      c->has_max = 1;
      continue;
    }
    if (ls_check_list(o, cx_str_eq(o.key, "deny_cves") || cx_str_eq(o.key, "allow_cves"), msg))
      return 1;
    if (cx_str_eq(o.key, "allow_ids") || cx_str_eq(o.key, "allow_cves")) c->has_allow = 1;
  }
  return 0;
}

CXU_DEFINE_CHECK_OPTIONS(ls_check, ls_cfg, ls_parse)

/* Whether `want` is in the list options named `key`; cves: match
 * case-insensitively. */
static int ls_listed(const ls_cfg* c, const char* key, cx_str want, int cves) {
  size_t i;
  for (i = 0; i < c->count; i++) {
    cx_str rest, item;
    if (!cx_str_eq(c->opts[i].key, key)) continue;
    rest = c->opts[i].value;
    while (cxu_next_item(&rest, &item)) {
      if (cves ? cxu_ieq(item, cxu_trim(want)) : cxu_eq(item, want)) return 1;
    }
  }
  return 0;
}

/* The first CVE of the patch in the list `key`, or -1. */
static long ls_cve_listed(const ls_cfg* c, const cx_patch* p, const char* key) {
  size_t i;
  for (i = 0; i < p->cve_count; i++) {
    if (ls_listed(c, key, p->cves[i], 1)) return (long)i;
  }
  return -1;
}

static int ls_decide(const cx_policy_input* in, cx_policy_decision* out) {
  const cx_patch* p = in->patch;
  int active = p->state == CX_PATCH_ACTIVE;
  ls_cfg c;
  cxu_text r;
  long cve;
  cxu_init(&r);
  if (ls_parse(in->options, in->option_count, &c, &r) != 0) return cxu_fail(out, &r);
  /* 1. deny */
  cve = ls_cve_listed(&c, p, "deny_cves");
  if (ls_listed(&c, "deny_ids", p->id, 0) || cve >= 0) {
    cxu_add(&r, "%s: ", active ? "revert" : "reject");
    if (cve < 0) {
      cxu_add(&r, "patch ");
      cxu_add_str(&r, p->id, 128);
      cxu_add(&r, " is in deny_ids");
    } else {
      cxu_add(&r, "it fixes ");
      cxu_add_str(&r, p->cves[cve], 64);
      cxu_add(&r, ", which is in deny_cves");
    }
    return cxu_decide(out, active ? CX_VERDICT_REVERT : CX_VERDICT_REJECT, 0, &r);
  }
  /* 2. max_level */
  if (c.has_max && p->level == 0) {
    cxu_add(&r, "defer: patch level unknown (0), max_level=%llu cannot be checked",
            (unsigned long long)c.max_level);
    return cxu_decide(out, CX_VERDICT_DEFER, 0, &r);
  }
  if (c.has_max && p->level > c.max_level) {
    cxu_add(&r, "%s: level %u of line ", active ? "revert" : "reject", p->level);
    cxu_add_str(&r, p->line, 128);
    cxu_add(&r, " exceeds max_level=%llu", (unsigned long long)c.max_level);
    return cxu_decide(out, active ? CX_VERDICT_REVERT : CX_VERDICT_REJECT, 0, &r);
  }
  /* 3. pin */
  if (ls_listed(&c, "pin_lines", p->line, 0)) {
    cxu_add(&r, "%s: line ", active ? "install" : "defer");
    cxu_add_str(&r, p->line, 128);
    cxu_add(&r, active ? " is pinned (pin_lines); an active patch stays"
                       : " is pinned (pin_lines): held at its current level until unpinned");
    return cxu_decide(out, active ? CX_VERDICT_INSTALL : CX_VERDICT_DEFER, 0, &r);
  }
  /* 4. allow */
  if (c.has_allow) {
    if (ls_listed(&c, "allow_ids", p->id, 0)) {
      cxu_add(&r, "install: patch ");
      cxu_add_str(&r, p->id, 128);
      cxu_add(&r, " is in allow_ids");
      return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
    }
    cve = ls_cve_listed(&c, p, "allow_cves");
    if (cve >= 0) {
      cxu_add(&r, "install: it fixes ");
      cxu_add_str(&r, p->cves[cve], 64);
      cxu_add(&r, ", which is in allow_cves");
      return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
    }
    cxu_add(&r, "%s: patch ", active ? "install" : "defer");
    cxu_add_str(&r, p->id, 128);
    cxu_add(&r, active ? " is in no allow list; an active patch stays"
                       : " is in no allow list (allow_ids, allow_cves): held until listed");
    return cxu_decide(out, active ? CX_VERDICT_INSTALL : CX_VERDICT_DEFER, 0, &r);
  }
  cxu_add(&r, "install: not denied, not pinned");
  if (c.has_max)
    cxu_add(&r, ", level %u within max_level=%llu", p->level, (unsigned long long)c.max_level);
  return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
}

static const cx_policy_plugin ls_plugin = {sizeof(cx_policy_plugin),
                                           CX_POLICY_ABI_MAJOR,
                                           CX_POLICY_ABI_MINOR,
                                           {"lists", 5},
                                           ls_decide,
                                           ls_check};

CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &ls_plugin; }
