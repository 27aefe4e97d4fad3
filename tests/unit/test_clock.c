/* The real clock: monotonic time, deadlines, timed waits, library threads. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "internal.h"
#include "noodle/clock.h"

static void now_never_goes_backwards(void **state) {
    (void)state;
    int64_t prev = noodle_clock_now(NULL);
    for (int i = 0; i < 100000; i++) {
        int64_t t = noodle_clock_now(noodle_clock_real());
        assert_true(t >= prev);
        prev = t;
    }
}

static void deadline_after_saturates_instead_of_overflowing(void **state) {
    (void)state;
    assert_int_equal(noodle_deadline_after(NULL, INT64_MAX), NOODLE_NO_DEADLINE);
    assert_int_equal(noodle_deadline_after(NULL, INT64_MAX - 5), NOODLE_NO_DEADLINE);
    int64_t now = noodle_clock_now(NULL);
    assert_true(noodle_deadline_after(NULL, -5) >= now);
    assert_int_equal(noodle_deadline_remaining(NULL, NOODLE_NO_DEADLINE), INT64_MAX);
    assert_int_equal(noodle_deadline_remaining(NULL, now - 1), 0);
}

static void poll_timeout_rounds_up_and_maps_no_deadline_to_infinite(void **state) {
    (void)state;
    assert_int_equal(noodle__poll_timeout_ms(NULL, NOODLE_NO_DEADLINE), -1);
    assert_int_equal(noodle__poll_timeout_ms(NULL, noodle_clock_now(NULL) - 1), 0);
    int ms = noodle__poll_timeout_ms(NULL, noodle_deadline_after(NULL, NOODLE_MS(1) / 2));
    assert_true(ms == 1 || ms == 0); /* half a millisecond rounds up (0 if it already passed) */
    ms = noodle__poll_timeout_ms(NULL, noodle_deadline_after(NULL, NOODLE_SEC(5)));
    assert_true(ms > 4000 && ms <= 5000);
}

static void cond_wait_returns_timedout_at_its_deadline(void **state) {
    (void)state;
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c;
    assert_int_equal(noodle_cond_init(&c), 0);
    int64_t start = noodle_clock_now(NULL);
    int64_t deadline = start + NOODLE_MS(50);
    pthread_mutex_lock(&m);
    int rc = 0;
    while (rc == 0) rc = noodle_clock_cond_wait_until(NULL, &c, &m, deadline);
    pthread_mutex_unlock(&m);
    assert_int_equal(rc, ETIMEDOUT);
    int64_t waited = noodle_clock_now(NULL) - start;
    assert_true(waited >= NOODLE_MS(50));
    assert_true(waited < NOODLE_SEC(5)); /* generous: shared 2-core machines */
    pthread_cond_destroy(&c);
}

typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    int flag;
} handoff;

static void *signaller(void *arg) {
    handoff *h = arg;
    pthread_mutex_lock(&h->m);
    h->flag = 1;
    noodle_clock_cond_broadcast(NULL, &h->c);
    pthread_mutex_unlock(&h->m);
    return NULL;
}

static void library_threads_start_join_and_signal_waiters(void **state) {
    (void)state;
    handoff h = {.m = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(noodle_cond_init(&h.c), 0);
    pthread_t t;
    assert_int_equal(noodle_clock_thread_start(NULL, &t, signaller, &h), 0);
    pthread_mutex_lock(&h.m);
    int rc = 0;
    int64_t deadline = noodle_deadline_after(NULL, NOODLE_SEC(30));
    while (!h.flag && rc == 0) rc = noodle_clock_cond_wait_until(NULL, &h.c, &h.m, deadline);
    pthread_mutex_unlock(&h.m);
    assert_int_equal(h.flag, 1);
    assert_int_equal(noodle_clock_thread_join(NULL, t), 0);
    pthread_cond_destroy(&h.c);
}

static void sleep_until_sleeps_at_least_until_the_deadline(void **state) {
    (void)state;
    int64_t deadline = noodle_deadline_after(NULL, NOODLE_MS(20));
    noodle_clock_sleep_until(NULL, deadline);
    assert_true(noodle_clock_now(NULL) >= deadline);
    noodle_clock_sleep_until(NULL, noodle_clock_now(NULL) - NOODLE_SEC(1)); /* past: returns */
}

/* A virtual clock whose time is set by the test. */
static int64_t fake_now;
static int64_t fake_clock_now(const noodle_clock *c) {
    (void)c;
    return fake_now;
}

static void time_arithmetic_never_overflows_at_the_extremes(void **state) {
    (void)state;
    noodle_clock_ops ops = *noodle_clock_real()->ops;
    ops.now = fake_clock_now;
    noodle_clock fake = {&ops, NULL};
    fake_now = 1000;
    int64_t far = noodle_deadline_after(&fake, INT64_MAX - 2000);
    assert_true(far > fake_now);
    int ms = noodle__poll_timeout_ms(&fake, far);
    assert_true(ms == INT32_MAX); /* capped, never negative (poll would wait for ever) */
    fake_now = -5000; /* a virtual clock may start before zero */
    assert_int_equal(noodle_deadline_after(&fake, INT64_MAX), INT64_MAX - 5000);
    assert_int_equal(noodle_deadline_remaining(&fake, INT64_MAX - 1), INT64_MAX);
    assert_int_equal(noodle_deadline_remaining(&fake, -6000), 0);
}

static void waiting_on_a_deadline_before_the_epoch_times_out_at_once(void **state) {
    (void)state;
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c;
    assert_int_equal(noodle_cond_init(&c), 0);
    pthread_mutex_lock(&m);
    assert_int_equal(noodle_clock_cond_wait_until(NULL, &c, &m, -NOODLE_SEC(1)), ETIMEDOUT);
    pthread_mutex_unlock(&m);
    pthread_cond_destroy(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(now_never_goes_backwards),
        cmocka_unit_test(deadline_after_saturates_instead_of_overflowing),
        cmocka_unit_test(poll_timeout_rounds_up_and_maps_no_deadline_to_infinite),
        cmocka_unit_test(cond_wait_returns_timedout_at_its_deadline),
        cmocka_unit_test(library_threads_start_join_and_signal_waiters),
        cmocka_unit_test(sleep_until_sleeps_at_least_until_the_deadline),
        cmocka_unit_test(time_arithmetic_never_overflows_at_the_extremes),
        cmocka_unit_test(waiting_on_a_deadline_before_the_epoch_times_out_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
