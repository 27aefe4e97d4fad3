/* Time and waiting (DESIGN §4).
 *
 * Every read of the time and every blocking wait in libnoodle goes through a
 * noodle_clock, so that the harness can substitute a virtual clock with a
 * deterministic scheduler. The default clock is CLOCK_MONOTONIC with pthreads.
 *
 * Times are nanoseconds on the clock's own time line (for the real clock:
 * CLOCK_MONOTONIC). A deadline is an absolute time; NOODLE_NO_DEADLINE means
 * "wait for ever".
 */
#ifndef NOODLE_CLOCK_H
#define NOODLE_CLOCK_H

#include <pthread.h>
#include <stdint.h>

#include "noodle/export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NOODLE_NO_DEADLINE INT64_MAX
#define NOODLE_MS(n) ((int64_t)(n) * 1000000LL)
#define NOODLE_SEC(n) ((int64_t)(n) * 1000000000LL)

typedef struct noodle_clock noodle_clock;

typedef void *(*noodle_thread_fn)(void *arg);

/* The operations table a clock implements. A virtual clock implements all of
 * them; the real clock is noodle_clock_real(). */
typedef struct noodle_clock_ops {
    int64_t (*now)(const noodle_clock *c);
    /* A cheap reading that may lag now() by a few milliseconds (real clock:
     * CLOCK_MONOTONIC_COARSE, ~5 ns instead of ~20 ns). For bookkeeping on
     * hot paths (last use, hold times), never for deadlines. A virtual clock
     * returns now(). */
    int64_t (*now_coarse)(const noodle_clock *c);
    void (*sleep_until)(const noodle_clock *c, int64_t deadline);
    /* Wait on cond (mutex held by the caller) until signalled or deadline.
     * Returns 0 when woken (possibly spuriously), ETIMEDOUT at the deadline. */
    int (*cond_wait_until)(const noodle_clock *c, pthread_cond_t *cond, pthread_mutex_t *mutex,
                           int64_t deadline);
    void (*cond_signal)(const noodle_clock *c, pthread_cond_t *cond);
    void (*cond_broadcast)(const noodle_clock *c, pthread_cond_t *cond);
    /* Start a library thread; returns 0 or an errno value. */
    int (*thread_start)(const noodle_clock *c, pthread_t *t, noodle_thread_fn fn, void *arg);
    int (*thread_join)(const noodle_clock *c, pthread_t t);
} noodle_clock_ops;

struct noodle_clock {
    const noodle_clock_ops *ops;
    void *impl; /* the implementation's own state */
};

/* The process-wide real clock (static; never freed). */
NOODLE_API const noodle_clock *noodle_clock_real(void);

/* Convenience wrappers; a NULL clock means the real clock. */
NOODLE_API int64_t noodle_clock_now(const noodle_clock *c);
NOODLE_API int64_t noodle_clock_now_coarse(const noodle_clock *c);
/* Resolution of now_coarse in ns (real clock: clock_getres; virtual: 1). */
NOODLE_API int64_t noodle_clock_coarse_resolution(const noodle_clock *c);
NOODLE_API void noodle_clock_sleep_until(const noodle_clock *c, int64_t deadline);
NOODLE_API int noodle_clock_cond_wait_until(const noodle_clock *c, pthread_cond_t *cond,
                                            pthread_mutex_t *mutex, int64_t deadline);
NOODLE_API void noodle_clock_cond_signal(const noodle_clock *c, pthread_cond_t *cond);
NOODLE_API void noodle_clock_cond_broadcast(const noodle_clock *c, pthread_cond_t *cond);
NOODLE_API int noodle_clock_thread_start(const noodle_clock *c, pthread_t *t, noodle_thread_fn fn,
                                         void *arg);
NOODLE_API int noodle_clock_thread_join(const noodle_clock *c, pthread_t t);

/* now + delta, saturating at NOODLE_NO_DEADLINE (delta < 0 counts as 0). */
NOODLE_API int64_t noodle_deadline_after(const noodle_clock *c, int64_t delta_ns);
/* Time left until deadline, 0 when passed; INT64_MAX for NOODLE_NO_DEADLINE. */
NOODLE_API int64_t noodle_deadline_remaining(const noodle_clock *c, int64_t deadline);

/* Condition variables used with noodle_clock_cond_wait_until on the real
 * clock must be initialised with this (it selects CLOCK_MONOTONIC). */
NOODLE_API int noodle_cond_init(pthread_cond_t *cond);

#ifdef __cplusplus
}
#endif
#endif
