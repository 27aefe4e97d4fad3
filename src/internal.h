/* Internal helpers shared across libnoodle's source files (noodle__ names).
 * Not installed; not part of the API. */
#ifndef NOODLE_INTERNAL_H
#define NOODLE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "noodle/backend.h"
#include "noodle/clock.h"
#include "noodle/error.h"
#include "noodle/pool.h"

/* noodle_pool_release that also returns how long the connection was held
 * (ns, on the pool's hold clock: coarse unless precise_hold_times), or -1
 * when conn was not the pool's. The db's free measure of a call. */
int64_t noodle__pool_release_held(noodle_pool *p, noodle_conn **conn);

/* Milliseconds until deadline for poll(2): 0 when passed, -1 for no
 * deadline, else rounded up and capped at INT32_MAX. */
int noodle__poll_timeout_ms(const noodle_clock *c, int64_t deadline);

/* Copy text into buf replacing every secret of url (passwords in keyword,
 * URI userinfo and query forms, and the values libpq parses out of url) with
 * "****"; returns the length needed, like snprintf. For messages that may
 * quote a connection string (libpq's parse errors do). See src/secrets.c. */
size_t noodle__scrub_secrets(const char *text, const char *url, char *buf, size_t size);

/* CLOCK_MONOTONIC_COARSE in ns, as the real clock's now_coarse, without the
 * indirection (the pool's fast path). */
int64_t noodle__coarse_now_real(void);

/* now + delta_ns from the cheap coarse reading, moved on by its resolution so
 * that the deadline is never earlier than noodle_deadline_after's (at most
 * one resolution later). For per-call deadlines on hot paths. */
int64_t noodle__deadline_after_coarse(const noodle_clock *c, int64_t delta_ns);

/* True when deadline has passed, exactly as noodle_clock_now(c) >= deadline,
 * but reading only the coarse clock while the deadline is further off than
 * the coarse clock can lag. */
bool noodle__deadline_passed(const noodle_clock *c, int64_t deadline);

/* Durations on hot paths: start = noodle__duration_start(c), then
 * noodle__duration_ns(c, start). On the real clock they read the TSC where
 * the kernel keeps time with it (a third of clock_gettime's cost), else
 * CLOCK_MONOTONIC; on any other clock, its now(). noodle__ticks_init must
 * have run (once per process; it takes 2 ms) before anything is timed:
 * whoever turns timing on calls it first. */
void noodle__ticks_init(void);
/* True when durations read the TSC (two reads: a few ns), after
 * noodle__ticks_init; false when they fall back to clock_gettime. */
bool noodle__ticks_cheap(void);
int64_t noodle__duration_start(const noodle_clock *c);
int64_t noodle__duration_ns(const noodle_clock *c, int64_t start);

/* The tick source behind them (inline: two reads per timed statement). */
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define NOODLE_HAVE_TSC 1
#endif
#include <stdatomic.h>
extern double noodle__ns_per_tick;   /* set by noodle__ticks_init */
extern _Atomic bool noodle__ticks_tsc; /* the TSC is in use (after noodle__ticks_init) */
int64_t noodle__monotonic_ns(void);

/* The TSC itself, for a caller that knows it is in use (noodle__ticks_tsc, or
 * noodle__tsc_ns_per_tick > 0). */
static inline int64_t noodle__tsc(void) {
#ifdef NOODLE_HAVE_TSC
    return (int64_t)__rdtsc();
#else
    return 0;
#endif
}

static inline int64_t noodle__ticks(void) {
#ifdef NOODLE_HAVE_TSC
    if (atomic_load_explicit(&noodle__ticks_tsc, memory_order_relaxed)) return noodle__tsc();
#endif
    return noodle__monotonic_ns();
}

/* ns per TSC tick when durations on clock c can be read from the TSC inline
 * (c is the real clock and the TSC is in use), else 0. After ticks_init. */
double noodle__tsc_ns_per_tick(const noodle_clock *c);

static inline int64_t noodle__ticks_to_ns(int64_t ticks) {
    return atomic_load_explicit(&noodle__ticks_tsc, memory_order_relaxed)
               ? (int64_t)((double)ticks * noodle__ns_per_tick)
               : ticks;
}

/* The histogram bucket of v (the body of noodle_histogram_bucket_of, inline
 * for the monitor's per-statement path). */
static inline size_t noodle__bucket_of(uint64_t v) {
    if (v < 4) return (size_t)v;
    unsigned p = 63u - (unsigned)__builtin_clzll(v);
    if (p > 39) return NOODLE_HISTOGRAM_BUCKETS - 1;
    return 4 + (size_t)(p - 2) * 4 + (size_t)((v >> (p - 2)) & 3);
}


/* Copy at most size-1 bytes of src into dst and terminate (size > 0). */
void noodle__strlcpy(char *dst, const char *src, size_t size);

/* Reset *m to "nothing measured": every number -1 (each standby's lags
 * too), role unknown, strings "". Backends start their metrics from it. */
void noodle__metrics_unknown(noodle_server_metrics *m);

/* Count one more problem in r (r->problems >= 0), keeping the first one's
 * text (len bytes of text, cut to fit) in r->first_problem. */
void noodle__integrity_problem(noodle_integrity_result *r, const char *text, size_t len);

/* One xorshift64* step of the generator *state (seeded non-zero). */
uint64_t noodle__random_next(uint64_t *state);

/* Backoff after the n-th consecutive failure (n >= 1): base * 2^(n-1),
 * capped at max, jittered down by up to 50 % from *rng. */
int64_t noodle__backoff_delay(uint64_t *rng, int64_t base, int64_t max, int64_t n);

#endif
