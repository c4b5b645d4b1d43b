/*
 * rollout -- staged rollout by device bucket over the days since release.
 *
 * Options ([plugin.rollout]):
 *   stages = DAY:PERCENT[,DAY:PERCENT...]   (required) from DAY days after
 *            released_at on, devices whose bucket (0..99, stable per machine)
 *            is below PERCENT install. Days and percents strictly increase;
 *            the last stage must reach 100 (every device). Example:
 *            0:1,1:10,3:100 = day 0 buckets < 1, day 1 < 10, day 3 everyone.
 *
 * A device's patch is deferred until the start of the first stage whose
 * percent is above its bucket: released_at + DAY days. A patch whose release
 * time is unknown (released_at 0) is treated as released now: only devices of
 * a day-0 stage install it, the others are deferred (until 0: ask again next
 * run). An active patch gets install (keep).
 */
#include <cryptex/policy_plugin.h>

#include "cx_util.h"

#define RO_MAX_STAGES 32

typedef struct ro_stage {
  uint64_t day, percent;
} ro_stage;

typedef struct ro_cfg {
  ro_stage stages[RO_MAX_STAGES];
  int n;
} ro_cfg;

static const char* const ro_keys[] = {"stages", 0};
static const char ro_form[] =
    "(stages = DAY:PERCENT[,DAY:PERCENT...], e.g. 0:1,1:10,3:100: days and percents strictly "
    "increasing, the last percent 100)";

static int ro_bad(cxu_text* msg, cx_str item, const char* what) {
  cxu_add(msg, "stages: \"");
  cxu_add_str(msg, item, 64);
  cxu_add(msg, "\" %s %s", what, ro_form);
  return 1;
}

static int ro_parse(const cx_option* opts, size_t count, ro_cfg* c, cxu_text* msg) {
  size_t i;
  c->n = 0;
  if (cxu_check_keys(opts, count, ro_keys, 0, msg)) return 1;
  for (i = 0; i < count; i++) {
    cx_str rest = opts[i].value, item;
    while (cxu_next_item(&rest, &item)) {
      size_t colon = 0;
      ro_stage s;
      cx_str day, pct;
      while (colon < item.len && item.ptr[colon] != ':') colon++;
      day.ptr = item.ptr;
      day.len = colon;
      pct.ptr = item.ptr + colon + (colon < item.len);
      pct.len = colon < item.len ? item.len - colon - 1 : 0;
      if (colon == item.len || cxu_parse_uint(day, CXU_MAX_DAYS, &s.day) != 0 ||
          cxu_parse_uint(pct, 100, &s.percent) != 0)
        return ro_bad(msg, item, "is not a stage DAY:PERCENT (DAY 0..3650, PERCENT 0..100)");
      if (c->n > 0 &&
          (s.day <= c->stages[c->n - 1].day || s.percent <= c->stages[c->n - 1].percent))
        return ro_bad(msg, item, "does not increase both day and percent over the stage before");
      if (c->n == RO_MAX_STAGES) {
        cxu_add(msg, "stages: more than %d stages", RO_MAX_STAGES);
        return 1;
      }
      c->stages[c->n++] = s;
    }
  }
  if (c->n == 0) {
    cxu_add(msg, "stages: missing %s", ro_form);
    return 1;
  }
  if (c->stages[c->n - 1].percent != 100) {
    cxu_add(msg, "stages: the last stage reaches %llu%%, not 100 %s",
            (unsigned long long)c->stages[c->n - 1].percent, ro_form);
    return 1;
  }
  return 0;
}

CXU_DEFINE_CHECK_OPTIONS(ro_check, ro_cfg, ro_parse)

static void ro_add_stage(cxu_text* r, const ro_stage* s) {
  cxu_add(r, "stage %llu:%llu, buckets < %llu", (unsigned long long)s->day,
          (unsigned long long)s->percent, (unsigned long long)s->percent);
}

static int ro_decide(const cx_policy_input* in, cx_policy_decision* out) {
  const cx_patch* p = in->patch;
  int64_t now = in->device->now, due;
  uint32_t bucket = in->device->bucket;
  ro_cfg c;
  cxu_text r;
  const ro_stage* mine;
  int i, current = -1;
  cxu_init(&r);
  if (ro_parse(in->options, in->option_count, &c, &r) != 0) return cxu_fail(out, &r);
  if (p->state == CX_PATCH_ACTIVE) {
    cxu_add(&r, "install: already active (rollout holds new installs only)");
    return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
  }
  if (bucket > 99) {
    cxu_add(&r, "rollout: device bucket %u is out of range 0..99", bucket);
    return cxu_fail(out, &r);
  }
  for (i = 0; i < c.n && c.stages[i].percent <= bucket; i++) {
  }
  mine = &c.stages[i]; /* exists: the last stage is 100 > bucket */
  if (p->released_at == 0) {
    if (mine->day == 0) {
      cxu_add(&r, "install: release time unknown; bucket %u is in the day-0 stage (", bucket);
      ro_add_stage(&r, mine);
      cxu_add(&r, ")");
      return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
    }
    cxu_add(&r, "defer: release time unknown, treated as day 0; bucket %u enters at day %llu (",
            bucket, (unsigned long long)mine->day);
    ro_add_stage(&r, mine);
    cxu_add(&r, "): ask again next run");
    return cxu_decide(out, CX_VERDICT_DEFER, 0, &r);
  }
  due = cxu_add_sat(p->released_at, (int64_t)mine->day * CXU_SECONDS_PER_DAY);
  if (now >= due) {
    cxu_add(&r, "install: bucket %u is in the rollout since day %llu (", bucket,
            (unsigned long long)mine->day);
    ro_add_stage(&r, mine);
    cxu_add(&r, "), ");
    cxu_add_utc(&r, due);
    return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
  }
  for (i = 0; i < c.n; i++) {
    if (cxu_add_sat(p->released_at, (int64_t)c.stages[i].day * CXU_SECONDS_PER_DAY) <= now)
      current = i;
  }
  cxu_add(&r, "defer: bucket %u enters at day %llu (", bucket, (unsigned long long)mine->day);
  ro_add_stage(&r, mine);
  cxu_add(&r, "); released ");
  cxu_add_utc(&r, p->released_at);
  cxu_add(&r, ", now day %lld (", (long long)cxu_days_between(p->released_at, now));
  if (current >= 0)
    ro_add_stage(&r, &c.stages[current]);
  else
    cxu_add(&r, "no stage yet");
  cxu_add(&r, "); due ");
  cxu_add_utc(&r, due);
  return cxu_decide(out, CX_VERDICT_DEFER, due, &r);
}

static const cx_policy_plugin ro_plugin = {
    sizeof(cx_policy_plugin), CX_POLICY_ABI_MAJOR, CX_POLICY_ABI_MINOR,
    {"rollout", 7},           ro_decide,           ro_check};

CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &ro_plugin; }
