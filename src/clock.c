/* The real clock: CLOCK_MONOTONIC and pthreads (see include/noodle/clock.h). */
#include "noodle/clock.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* A deadline as a timespec; negative times (a deadline before the clock's
 * epoch) clamp to 0, which has passed. */
/* The readings sit on hot paths (the pool's acquire/release, every
 * statement's deadline), where glibc's clock_gettime wrapper costs a third
 * of the call: the vDSO's own entry point is looked up once at load time
 * and called directly (falling back to clock_gettime where there is none). */
typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
static clock_gettime_fn vdso_clock_gettime = clock_gettime;

__attribute__((constructor)) static void find_vdso_clock(void) {
    void *vdso = dlopen("linux-vdso.so.1", RTLD_LAZY | RTLD_NOLOAD);
    if (vdso == NULL) return;
    void *fn = dlsym(vdso, "__vdso_clock_gettime");
    struct timespec probe;
    if (fn != NULL && ((clock_gettime_fn)fn)(CLOCK_MONOTONIC_COARSE, &probe) == 0)
        vdso_clock_gettime = (clock_gettime_fn)fn;
    /* the vDSO stays mapped for the life of the process: the handle is kept */
}

int64_t noodle__coarse_now_real(void) {
    struct timespec ts;
    vdso_clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t real_now(const noodle_clock *c) {
    (void)c;
    struct timespec ts;
    vdso_clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t real_now_coarse(const noodle_clock *c) {
    (void)c;
    return noodle__coarse_now_real();
}

static struct timespec to_timespec(int64_t ns) {
    if (ns < 0) ns = 0;
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000LL), .tv_nsec = (long)(ns % 1000000000LL)};
    return ts;
}

static void real_sleep_until(const noodle_clock *c, int64_t deadline) {
    (void)c;
    if (deadline == NOODLE_NO_DEADLINE) deadline = INT64_MAX / 2; /* effectively for ever */
    struct timespec ts = to_timespec(deadline);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static int real_cond_wait_until(const noodle_clock *c, pthread_cond_t *cond, pthread_mutex_t *mutex,
                                int64_t deadline) {
    (void)c;
    if (deadline == NOODLE_NO_DEADLINE) return pthread_cond_wait(cond, mutex);
    struct timespec ts = to_timespec(deadline);
    return pthread_cond_timedwait(cond, mutex, &ts);
}

static void real_cond_signal(const noodle_clock *c, pthread_cond_t *cond) {
    (void)c;
    pthread_cond_signal(cond);
}

static void real_cond_broadcast(const noodle_clock *c, pthread_cond_t *cond) {
    (void)c;
    pthread_cond_broadcast(cond);
}

static int real_thread_start(const noodle_clock *c, pthread_t *t, noodle_thread_fn fn, void *arg) {
    (void)c;
    return pthread_create(t, NULL, fn, arg);
}

static int real_thread_join(const noodle_clock *c, pthread_t t) {
    (void)c;
    return pthread_join(t, NULL);
}

static const noodle_clock_ops real_ops = {
    .now = real_now,
    .now_coarse = real_now_coarse,
    .sleep_until = real_sleep_until,
    .cond_wait_until = real_cond_wait_until,
    .cond_signal = real_cond_signal,
    .cond_broadcast = real_cond_broadcast,
    .thread_start = real_thread_start,
    .thread_join = real_thread_join,
};
static const noodle_clock real_clock = {&real_ops, NULL};

const noodle_clock *noodle_clock_real(void) { return &real_clock; }

#define CLOCK_OR_REAL(c) ((c) != NULL ? (c) : &real_clock)

int64_t noodle_clock_now(const noodle_clock *c) {
    c = CLOCK_OR_REAL(c);
    return c->ops->now(c);
}

int64_t noodle_clock_now_coarse(const noodle_clock *c) {
    c = CLOCK_OR_REAL(c);
    return c->ops->now_coarse ? c->ops->now_coarse(c) : c->ops->now(c);
}

/* The coarse clock's resolution, read once (it is fixed at boot). */
static int64_t coarse_res_ns;
__attribute__((constructor)) static void find_coarse_resolution(void) {
    struct timespec r;
    coarse_res_ns = clock_getres(CLOCK_MONOTONIC_COARSE, &r) == 0
                        ? (int64_t)r.tv_sec * 1000000000LL + r.tv_nsec
                        : 4000000;
}
static int64_t coarse_resolution_real(void) { return coarse_res_ns; }

int64_t noodle_clock_coarse_resolution(const noodle_clock *c) {
    c = CLOCK_OR_REAL(c);
    if (c->ops != &real_ops) return 1;
    return coarse_resolution_real();
}

void noodle_clock_sleep_until(const noodle_clock *c, int64_t deadline) {
    c = CLOCK_OR_REAL(c);
    c->ops->sleep_until(c, deadline);
}

int noodle_clock_cond_wait_until(const noodle_clock *c, pthread_cond_t *cond, pthread_mutex_t *mutex,
                                 int64_t deadline) {
    c = CLOCK_OR_REAL(c);
    return c->ops->cond_wait_until(c, cond, mutex, deadline);
}

void noodle_clock_cond_signal(const noodle_clock *c, pthread_cond_t *cond) {
    c = CLOCK_OR_REAL(c);
    c->ops->cond_signal(c, cond);
}

void noodle_clock_cond_broadcast(const noodle_clock *c, pthread_cond_t *cond) {
    c = CLOCK_OR_REAL(c);
    c->ops->cond_broadcast(c, cond);
}

int noodle_clock_thread_start(const noodle_clock *c, pthread_t *t, noodle_thread_fn fn, void *arg) {
    c = CLOCK_OR_REAL(c);
    return c->ops->thread_start(c, t, fn, arg);
}

int noodle_clock_thread_join(const noodle_clock *c, pthread_t t) {
    c = CLOCK_OR_REAL(c);
    return c->ops->thread_join(c, t);
}

int64_t noodle_deadline_after(const noodle_clock *c, int64_t delta_ns) {
    int64_t now = noodle_clock_now(c);
    if (delta_ns <= 0) return now;
    if (now >= 0 ? delta_ns >= NOODLE_NO_DEADLINE - now : false) return NOODLE_NO_DEADLINE;
    return now + delta_ns; /* a negative now cannot overflow upwards */
}

int64_t noodle__deadline_after_coarse(const noodle_clock *c, int64_t delta_ns) {
    c = CLOCK_OR_REAL(c);
    if (c->ops != &real_ops) return noodle_deadline_after(c, delta_ns);
    int64_t now = noodle__coarse_now_real() + coarse_resolution_real();
    if (delta_ns <= 0) delta_ns = 0;
    if (delta_ns >= NOODLE_NO_DEADLINE - now) return NOODLE_NO_DEADLINE;
    return now + delta_ns;
}

bool noodle__deadline_passed(const noodle_clock *c, int64_t deadline) {
    if (deadline == NOODLE_NO_DEADLINE) return false;
    c = CLOCK_OR_REAL(c);
    /* the coarse reading lags by at most its resolution: when even that
     * plus one more tick is short of the deadline, it has not passed */
    if (c->ops == &real_ops &&
        noodle__coarse_now_real() + 2 * coarse_resolution_real() < deadline)
        return false;
    return c->ops->now(c) >= deadline;
}

int64_t noodle_deadline_remaining(const noodle_clock *c, int64_t deadline) {
    if (deadline == NOODLE_NO_DEADLINE) return INT64_MAX;
    int64_t now = noodle_clock_now(c);
    if (deadline <= now) return 0;
    return now < 0 && deadline > INT64_MAX + now ? INT64_MAX : deadline - now;
}

int noodle__poll_timeout_ms(const noodle_clock *c, int64_t deadline) {
    if (deadline == NOODLE_NO_DEADLINE) return -1;
    int64_t left = noodle_deadline_remaining(c, deadline);
    int64_t ms = left / 1000000 + (left % 1000000 != 0); /* round up without overflow */
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

int noodle_cond_init(pthread_cond_t *cond) {
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc != 0) return rc;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

uint64_t noodle__random_next(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

int64_t noodle__backoff_delay(uint64_t *rng, int64_t base, int64_t max, int64_t n) {
    int64_t d = base;
    for (int64_t i = 1; i < n && d < max; i++) d *= 2;
    if (d > max) d = max;
    return d / 2 + (int64_t)(noodle__random_next(rng) % (uint64_t)(d / 2 + 1));
}

/* ---- durations on hot paths ------------------------------------------------------ */

/* Timing every statement for the monitor costs two clock reads per call; a
 * TSC read is under half of clock_gettime's cost. The TSC is used only when
 * the kernel itself keeps time with it (its clocksource is "tsc": constant
 * rate, synchronised across CPUs); its rate is measured once against
 * CLOCK_MONOTONIC, by noodle__ticks_init, before anything is timed. */
static pthread_once_t ticks_once = PTHREAD_ONCE_INIT;
double noodle__ns_per_tick;
_Atomic bool noodle__ticks_tsc;

#ifdef NOODLE_HAVE_TSC
static bool kernel_uses_tsc(void) {
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (f == NULL) return false;
    char name[32] = "";
    bool tsc = fgets(name, sizeof name, f) != NULL && strncmp(name, "tsc", 3) == 0 &&
               (name[3] == '\n' || name[3] == '\0');
    fclose(f);
    return tsc;
}
#endif

static void calibrate_ticks(void) {
#ifdef NOODLE_HAVE_TSC
    if (!kernel_uses_tsc()) return;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    uint64_t t0 = __rdtsc();
    do { /* 2 ms: the rate to about 1e-5 */
        clock_gettime(CLOCK_MONOTONIC, &b);
    } while ((b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec) < 2000000);
    uint64_t t1 = __rdtsc();
    int64_t ns = (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
    if (t1 <= t0) return;
    noodle__ns_per_tick = (double)ns / (double)(t1 - t0);
    atomic_store_explicit(&noodle__ticks_tsc, true, memory_order_release);
#endif
}

void noodle__ticks_init(void) { pthread_once(&ticks_once, calibrate_ticks); }

int64_t noodle__monotonic_ns(void) { return real_now(NULL); }

bool noodle__ticks_cheap(void) {
    noodle__ticks_init();
    return atomic_load_explicit(&noodle__ticks_tsc, memory_order_acquire);
}

double noodle__tsc_ns_per_tick(const noodle_clock *c) {
    c = CLOCK_OR_REAL(c);
    return c->ops == &real_ops && atomic_load_explicit(&noodle__ticks_tsc, memory_order_relaxed)
               ? noodle__ns_per_tick
               : 0;
}

int64_t noodle__duration_start(const noodle_clock *c) {
    c = CLOCK_OR_REAL(c);
    return c->ops == &real_ops ? noodle__ticks() : c->ops->now(c);
}

int64_t noodle__duration_ns(const noodle_clock *c, int64_t start) {
    c = CLOCK_OR_REAL(c);
    if (c->ops != &real_ops) return c->ops->now(c) - start;
    int64_t d = noodle__ticks_to_ns(noodle__ticks() - start);
    return d > 0 ? d : 0;
}
