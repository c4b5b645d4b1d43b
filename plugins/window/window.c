/*
 * window -- installs only inside maintenance windows of the local clock,
 * never during a freeze, never while paused.
 *
 * Options ([plugin.window]):
 *   hours = HH:MM-HH:MM[,...]   the windows (required); 22:00-02:00 crosses
 *                               midnight and belongs to the day it opens on;
 *                               24:00 is the end of the day
 *   days = DAY[,DAY...]         days a window opens on: mon..sun or ranges
 *                               such as mon-fri or sat-mon (default: every day)
 *   timezone = IANA name        e.g. Europe/Berlin (default UTC); must exist in
 *                               the tz database ($TZDIR or /usr/share/zoneinfo)
 *   freeze = DATE..DATE[,...]   no installs from the first date 00:00 to the
 *                               end of the last date, local time; repeatable
 *   pause_until = DATE"T"HH:MM  no installs before this local time; it
 *                               expires by itself
 *
 * The rules are about the local wall clock: a moment is inside a window if
 * the clock of `timezone` reads a time inside it on an enabled day. On the
 * day summer time starts a window over the skipped hour is shorter (or
 * absent); on the day it ends, the repeated hour is inside twice.
 *
 * A deferral's `until` is the first moment that is inside a window and
 * neither frozen nor paused, searched up to WIN_SEARCH_DAYS ahead.
 *
 * Time zones: decide() sets TZ with setenv() and calls tzset(), then restores
 * the previous TZ. That is safe because the host runs every decision in its
 * own short-lived child process; it is not thread-safe, so the plugin must
 * not be called from several threads of one process.
 *
 * Only installs are windowed: an active patch gets install (keep).
 */
#define _DEFAULT_SOURCE /* setenv, tzset, timegm, localtime_r */
#include <cryptex/policy_plugin.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cx_util.h"

#define WIN_MAX_HOURS 16
#define WIN_MAX_FREEZES 64
#define WIN_ZONE_MAX 128
#define WIN_SEARCH_DAYS 400
#define WIN_MINUTES_PER_DAY 1440

typedef struct win_hours {
  int start, end; /* minutes of the day; end 1..1440; end < start crosses midnight */
} win_hours;

typedef struct win_freeze {
  int64_t first, last; /* civil days since 1970-01-01, inclusive */
} win_freeze;

typedef struct win_cfg {
  unsigned days; /* bit per tm_wday (0 = Sunday) */
  win_hours hours[WIN_MAX_HOURS];
  int nhours;
  char zone[WIN_ZONE_MAX + 1];
  win_freeze freezes[WIN_MAX_FREEZES];
  int nfreezes;
  int has_pause;
  int64_t pause_wall; /* wall minutes: civil day * 1440 + minute */
} win_cfg;

static const char* const win_keys[] = {"hours", "days", "timezone", "freeze", "pause_until", 0};
static const char* const win_repeatable[] = {"freeze", 0};
static const char* const win_day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

/* ---- parsing ---------------------------------------------------------- */

static int win_digits(cx_str s, size_t at, size_t n, int* out) {
  int v = 0;
  size_t i;
  if (at + n > s.len) return -1;
  for (i = at; i < at + n; i++) {
    if (s.ptr[i] < '0' || s.ptr[i] > '9') return -1;
    v = v * 10 + (s.ptr[i] - '0');
  }
  *out = v;
  return 0;
}

/* Civil day number of a date, or -1 if it is not a real date. */
static int win_civil_day(int y, int m, int d, int64_t* day) {
  struct tm tm, back;
  time_t t;
  memset(&tm, 0, sizeof tm);
  tm.tm_year = y - 1900;
  tm.tm_mon = m - 1;
  tm.tm_mday = d;
  t = timegm(&tm);
  if (m < 1 || m > 12 || d < 1 || !gmtime_r(&t, &back)) return -1;
  if (back.tm_year != y - 1900 || back.tm_mon != m - 1 || back.tm_mday != d) return -1;
  *day = (int64_t)t / CXU_SECONDS_PER_DAY;
  return 0;
}

/* "YYYY-MM-DD" at s[at..at+10). */
static int win_date(cx_str s, size_t at, int64_t* day) {
  int y, m, d;
  if (win_digits(s, at, 4, &y) || at + 10 > s.len || s.ptr[at + 4] != '-' ||
      win_digits(s, at + 5, 2, &m) || s.ptr[at + 7] != '-' || win_digits(s, at + 8, 2, &d))
    return -1;
  return win_civil_day(y, m, d, day);
}

/* "HH:MM" at s[at..at+5), 00:00..23:59, or 24:00 if allow_24. */
static int win_clock(cx_str s, size_t at, int allow_24, int* minute) {
  int h, m;
  if (win_digits(s, at, 2, &h) || at + 5 > s.len || s.ptr[at + 2] != ':' ||
      win_digits(s, at + 3, 2, &m))
    return -1;
  if (m > 59 || h > 24 || (h == 24 && (!allow_24 || m != 0))) return -1;
  *minute = h * 60 + m;
  return 0;
}

static int win_day_code(cx_str name) {
  int i;
  for (i = 0; i < 7; i++) {
    if (cxu_ieq(name, cxu_cstr(win_day_names[i]))) return i;
  }
  return -1;
}

static int win_bad(cxu_text* msg, const char* key, cx_str item, const char* form) {
  cxu_add(msg, "%s: \"", key);
  cxu_add_str(msg, item, 64);
  cxu_add(msg, "\" %s", form);
  return 1;
}

static int win_parse_days(cx_str value, unsigned* days, cxu_text* msg) {
  static const char form[] =
      "is not a day (days = DAY[,DAY...] of mon, tue, wed, thu, fri, sat, sun, or a range "
      "such as mon-fri)";
  cx_str rest = value, item;
  *days = 0;
  while (cxu_next_item(&rest, &item)) {
    size_t dash = 0;
    int a, b;
    while (dash < item.len && item.ptr[dash] != '-') dash++;
    if (dash == item.len) {
      a = b = win_day_code(item);
    } else {
      cx_str left = {item.ptr, dash}, right = {item.ptr + dash + 1, item.len - dash - 1};
      a = win_day_code(cxu_trim(left));
      b = win_day_code(cxu_trim(right));
    }
    if (a < 0 || b < 0) return win_bad(msg, "days", item, form);
    for (;;) { /* a range wraps: sat-mon is sat, sun, mon */
      *days |= 1u << a;
      if (a == b) break;
      a = (a + 1) % 7;
    }
  }
  return 0;
}

static int win_parse_hours(cx_str value, win_cfg* c, cxu_text* msg) {
  static const char form[] =
      "is not a window (hours = HH:MM-HH:MM[,...], e.g. 02:00-05:00, or 22:00-02:00 across "
      "midnight, 00:00-24:00 for the whole day)";
  cx_str rest = value, item;
  while (cxu_next_item(&rest, &item)) {
    win_hours h;
    if (item.len != 11 || win_clock(item, 0, 0, &h.start) || item.ptr[5] != '-' ||
        win_clock(item, 6, 1, &h.end))
      return win_bad(msg, "hours", item, form);
    if (h.start == h.end) return win_bad(msg, "hours", item, "is empty (start equals end)");
    if (c->nhours == WIN_MAX_HOURS) {
      cxu_add(msg, "hours: more than %d windows", WIN_MAX_HOURS);
      return 1;
    }
    c->hours[c->nhours++] = h;
  }
  return 0;
}

static int win_parse_freeze(cx_str value, win_cfg* c, cxu_text* msg) {
  static const char form[] =
      "is not a period (freeze = YYYY-MM-DD..YYYY-MM-DD[,...], dates in the configured "
      "timezone, both included)";
  cx_str rest = value, item;
  while (cxu_next_item(&rest, &item)) {
    win_freeze f;
    if (item.len == 10 && win_date(item, 0, &f.first) == 0) {
      f.last = f.first; /* one day */
    } else if (item.len != 22 || win_date(item, 0, &f.first) || item.ptr[10] != '.' ||
               item.ptr[11] != '.' || win_date(item, 12, &f.last)) {
      return win_bad(msg, "freeze", item, form);
    }
    if (f.last < f.first) return win_bad(msg, "freeze", item, "ends before it starts");
    if (c->nfreezes == WIN_MAX_FREEZES) {
      cxu_add(msg, "freeze: more than %d periods", WIN_MAX_FREEZES);
      return 1;
    }
    c->freezes[c->nfreezes++] = f;
  }
  return 0;
}

static int win_parse_pause(cx_str v, win_cfg* c, cxu_text* msg) {
  int64_t day;
  int minute;
  v = cxu_trim(v);
  if (v.len != 16 || win_date(v, 0, &day) || v.ptr[10] != 'T' || win_clock(v, 11, 0, &minute))
    return win_bad(msg, "pause_until", v,
                   "is not a local time (pause_until = YYYY-MM-DDTHH:MM in the configured "
                   "timezone, e.g. 2026-12-01T00:00)");
  c->has_pause = 1;
  c->pause_wall = day * WIN_MINUTES_PER_DAY + minute;
  return 0;
}

static const char* win_tzdir(void) {
  const char* d = getenv("TZDIR");
  return (d && *d) ? d : "/usr/share/zoneinfo";
}

/* An IANA name whose file in the tz database is a TZif file. */
static int win_parse_zone(cx_str v, win_cfg* c, cxu_text* msg) {
  char path[512];
  char magic[4];
  size_t i;
  int fd, ok = 0;
  v = cxu_trim(v);
  for (i = 0; i < v.len; i++) {
    char ch = v.ptr[i];
    int seg_start = i == 0 || v.ptr[i - 1] == '/';
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
          ch == '/' || ch == '_' || ch == '-' || ch == '+' || ch == '.'))
      break;
    if (seg_start && (ch == '/' || ch == '.')) break; /* "/x", "a//b", ".", ".." */
  }
  if (v.len == 0 || v.len > WIN_ZONE_MAX || i < v.len || v.ptr[v.len - 1] == '/')
    return win_bad(msg, "timezone", v,
                   "is not a time zone name (timezone = an IANA name such as Europe/Berlin or "
                   "UTC)");
  memcpy(c->zone, v.ptr, v.len);
  c->zone[v.len] = '\0';
  if (strcmp(c->zone, "UTC") == 0) return 0; /* glibc's built-in default */
  snprintf(path, sizeof path, "%s/%s", win_tzdir(), c->zone);
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd >= 0) {
    ok = read(fd, magic, 4) == 4 && memcmp(magic, "TZif", 4) == 0;
    close(fd);
  }
  if (!ok) {
    cxu_add(msg, "timezone: \"%s\" is not in the tz database %s (timezone = an IANA name such as ",
            c->zone, win_tzdir());
    cxu_add(msg, "Europe/Berlin; is the tzdata package installed?)");
    return 1;
  }
  return 0;
}

static int win_parse(const cx_option* opts, size_t n, win_cfg* c, cxu_text* msg) {
  size_t i;
  memset(c, 0, sizeof *c);
  c->days = 0x7F;
  strcpy(c->zone, "UTC");
  if (cxu_check_keys(opts, n, win_keys, win_repeatable, msg)) return 1;
  for (i = 0; i < n; i++) {
    cx_option o = opts[i];
    int bad = 0;
    if (cx_str_eq(o.key, "hours")) bad = win_parse_hours(o.value, c, msg);
    if (cx_str_eq(o.key, "days")) bad = win_parse_days(o.value, &c->days, msg);
    if (cx_str_eq(o.key, "timezone")) bad = win_parse_zone(o.value, c, msg);
    if (cx_str_eq(o.key, "freeze")) bad = win_parse_freeze(o.value, c, msg);
    if (cx_str_eq(o.key, "pause_until")) bad = win_parse_pause(o.value, c, msg);
    if (bad) return 1;
  }
  if (c->nhours == 0) {
    cxu_add(msg, "hours: missing (hours = HH:MM-HH:MM[,...], e.g. 02:00-05:00)");
    return 1;
  }
  return 0;
}

CXU_DEFINE_CHECK_OPTIONS(win_check, win_cfg, win_parse)

/* ---- the local clock -------------------------------------------------- */

typedef struct win_wall {
  int64_t day;  /* civil day of the local date */
  int minute;   /* of the local day */
  int wday;     /* 0 = Sunday */
  struct tm tm; /* for printing */
} win_wall;

static int win_wall_at(int64_t t, win_wall* w) {
  time_t tt = (time_t)t;
  struct tm date;
  if ((int64_t)tt != t || !localtime_r(&tt, &w->tm)) return -1;
  date = w->tm;
  date.tm_hour = date.tm_min = date.tm_sec = 0;
  date.tm_isdst = 0;
  w->day = (int64_t)timegm(&date) / CXU_SECONDS_PER_DAY;
  w->minute = w->tm.tm_hour * 60 + w->tm.tm_min;
  w->wday = w->tm.tm_wday;
  return 0;
}

static int64_t win_wall_minutes(const win_wall* w) {
  return w->day * WIN_MINUTES_PER_DAY + w->minute;
}

static int64_t win_floor_minute(int64_t t) { return t >= 0 ? t - t % 60 : t - (60 + t % 60) % 60; }

/* The window (index) the wall clock is in, or -1. */
static int win_in_window(const win_cfg* c, const win_wall* w) {
  int i;
  unsigned today = c->days & (1u << w->wday), yesterday = c->days & (1u << ((w->wday + 6) % 7));
  for (i = 0; i < c->nhours; i++) {
    const win_hours* h = &c->hours[i];
    if (h->start < h->end) {
      if (today && w->minute >= h->start && w->minute < h->end) return i;
    } else if ((today && w->minute >= h->start) || (yesterday && w->minute < h->end)) {
      return i;
    }
  }
  return -1;
}

static const win_freeze* win_frozen(const win_cfg* c, int64_t day) {
  int i;
  for (i = 0; i < c->nfreezes; i++) {
    if (day >= c->freezes[i].first && day <= c->freezes[i].last) return &c->freezes[i];
  }
  return 0;
}

static int win_open(const win_cfg* c, const win_wall* w) {
  return win_in_window(c, w) >= 0 && !win_frozen(c, w->day);
}

/* Wall minutes from w to the next minute at which the rules can change: a
 * window's start or end, or midnight (a new day: weekday, freeze). */
static int win_next_event(const win_cfg* c, const win_wall* w) {
  int best = WIN_MINUTES_PER_DAY - w->minute, i;
  for (i = 0; i < c->nhours; i++) {
    int s = c->hours[i].start - w->minute, e = c->hours[i].end - w->minute;
    if (s > 0 && s < best) best = s;
    if (e > 0 && e < best) best = e;
  }
  return best;
}

/* The first moment (on a minute) at which the local clock reads `wall`
 * minutes or later. Offsets are within -15 h .. +15 h of UTC. */
static int win_first_at_or_after(int64_t wall, int64_t* out) {
  int64_t t = wall * 60 - 15 * 3600, end = wall * 60 + 15 * 3600;
  win_wall w;
  for (; t <= end; t += 60) {
    if (win_wall_at(t, &w) != 0) return -1;
    if (win_wall_minutes(&w) >= wall) {
      *out = t;
      return 0;
    }
  }
  return -1;
}

/* The first open moment >= from and <= limit; 1 if none, -1 on error. */
static int win_search(const win_cfg* c, int64_t from, int64_t limit, int64_t* found) {
  win_wall w, w2;
  int64_t t = from;
  if (win_wall_at(t, &w) != 0) return -1;
  if (win_open(c, &w)) {
    *found = t;
    return 0;
  }
  t = win_floor_minute(t) + 60;
  while (t <= limit) {
    int step;
    if (win_wall_at(t, &w) != 0) return -1;
    if (win_open(c, &w)) {
      *found = t;
      return 0;
    }
    /* Jump to the next event if the clock runs evenly until then (no
     * offset change in between); else step one minute. */
    step = win_next_event(c, &w);
    if (win_wall_at(t + step * 60, &w2) == 0 &&
        win_wall_minutes(&w2) - win_wall_minutes(&w) == step)
      t += (int64_t)step * 60;
    else
      t += 60;
  }
  return 1;
}

/* ---- reasons ---------------------------------------------------------- */

static void win_add_local(cxu_text* r, const win_wall* w) {
  char buf[64];
  if (strftime(buf, sizeof buf, "%Y-%m-%d %H:%M %Z", &w->tm) == 0) buf[0] = '\0';
  cxu_add(r, "%s", buf);
}

static void win_add_day(cxu_text* r, int64_t day) {
  cxu_add_utc_date(r, day * CXU_SECONDS_PER_DAY);
}

static void win_add_rules(cxu_text* r, const win_cfg* c) {
  int i, first = 1;
  cxu_add(r, "hours=");
  for (i = 0; i < c->nhours; i++) {
    const win_hours* h = &c->hours[i];
    cxu_add(r, "%s%02d:%02d-%02d:%02d", i ? "," : "", h->start / 60, h->start % 60, h->end / 60,
            h->end % 60);
  }
  if (c->days != 0x7F) {
    cxu_add(r, " days=");
    for (i = 1; i <= 7; i++) { /* Monday first */
      if (!(c->days & (1u << (i % 7)))) continue;
      cxu_add(r, "%s%s", first ? "" : ",", win_day_names[i % 7]);
      first = 0;
    }
  }
  cxu_add(r, " %s", c->zone);
}

static void win_add_pause(cxu_text* r, const win_cfg* c) {
  int64_t day = c->pause_wall / WIN_MINUTES_PER_DAY;
  int minute = (int)(c->pause_wall % WIN_MINUTES_PER_DAY);
  cxu_add(r, "paused until ");
  win_add_day(r, day);
  cxu_add(r, "T%02d:%02d %s", minute / 60, minute % 60, c->zone);
}

/* ---- decide ----------------------------------------------------------- */

static int win_decide_in_zone(const win_cfg* c, const cx_policy_input* in, cx_policy_decision* out,
                              cxu_text* r) {
  int64_t now = in->device->now, from = now, pause_end = 0, found, limit;
  win_wall w, at;
  const win_freeze* f;
  int paused = 0, rc;
  if (win_wall_at(now, &w) != 0) {
    cxu_add(r, "window: time %lld is out of range", (long long)now);
    return cxu_fail(out, r);
  }
  if (c->has_pause) {
    if (win_first_at_or_after(c->pause_wall, &pause_end) != 0) {
      cxu_add(r, "window: pause_until is out of range");
      return cxu_fail(out, r);
    }
    paused = now < pause_end;
  }
  f = win_frozen(c, w.day);
  if (!paused && !f && win_in_window(c, &w) >= 0) {
    const win_hours* h = &c->hours[win_in_window(c, &w)];
    cxu_add(r, "install: inside window %02d:%02d-%02d:%02d (", h->start / 60, h->start % 60,
            h->end / 60, h->end % 60);
    win_add_rules(r, c);
    cxu_add(r, "); now ");
    win_add_local(r, &w);
    return cxu_decide(out, CX_VERDICT_INSTALL, 0, r);
  }
  cxu_add(r, "defer: ");
  if (paused) {
    win_add_pause(r, c);
    from = pause_end;
  } else if (f) {
    cxu_add(r, "frozen ");
    win_add_day(r, f->first);
    if (f->last != f->first) {
      cxu_add(r, "..");
      win_add_day(r, f->last);
    }
    cxu_add(r, " (%s)", c->zone);
  } else {
    cxu_add(r, "outside the windows (");
    win_add_rules(r, c);
    cxu_add(r, ")");
  }
  cxu_add(r, "; now ");
  win_add_local(r, &w);
  limit = cxu_add_sat(from, (int64_t)WIN_SEARCH_DAYS * CXU_SECONDS_PER_DAY);
  rc = win_search(c, from, limit, &found);
  if (rc < 0) {
    cxu_add(r, "; time out of range");
    return cxu_fail(out, r);
  }
  if (rc > 0) {
    cxu_add(r, "; no open window in the %d days from ", WIN_SEARCH_DAYS);
    cxu_add_utc(r, from);
    cxu_add(r, " (frozen or no enabled day); ask again ");
    cxu_add_utc(r, limit);
    return cxu_decide(out, CX_VERDICT_DEFER, limit, r);
  }
  win_wall_at(found, &at);
  cxu_add(r, "; next window opens ");
  win_add_local(r, &at);
  if (strcmp(c->zone, "UTC") != 0) {
    cxu_add(r, " (");
    cxu_add_utc(r, found);
    cxu_add(r, ")");
  }
  return cxu_decide(out, CX_VERDICT_DEFER, found, r);
}

static int win_decide(const cx_policy_input* in, cx_policy_decision* out) {
  win_cfg c;
  cxu_text r;
  const char* old;
  char* saved = 0;
  int rc;
  cxu_init(&r);
  if (win_parse(in->options, in->option_count, &c, &r) != 0) return cxu_fail(out, &r);
  if (in->patch->state == CX_PATCH_ACTIVE) {
    cxu_add(&r, "install: already active (windows apply to installs only)");
    return cxu_decide(out, CX_VERDICT_INSTALL, 0, &r);
  }
  old = getenv("TZ");
  if (old != 0 && (saved = strdup(old)) == 0) {
    cxu_add(&r, "window: out of memory");
    return cxu_fail(out, &r);
  }
  if (setenv("TZ", c.zone, 1) != 0) {
    free(saved);
    cxu_add(&r, "window: cannot set TZ");
    return cxu_fail(out, &r);
  }
  tzset();
  rc = win_decide_in_zone(&c, in, out, &r);
  if (saved != 0)
    setenv("TZ", saved, 1);
  else
    unsetenv("TZ");
  free(saved);
  tzset();
  return rc;
}

static const cx_policy_plugin win_plugin = {sizeof(cx_policy_plugin),
                                            CX_POLICY_ABI_MAJOR,
                                            CX_POLICY_ABI_MINOR,
                                            {"window", 6},
                                            win_decide,
                                            win_check};

CX_POLICY_EXPORT const cx_policy_plugin* cryptex_policy_plugin(void) { return &win_plugin; }
