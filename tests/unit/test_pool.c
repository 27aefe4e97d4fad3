/* The connection pool (include/noodle/pool.h, STD-POOL-*), over the mock
 * backend: one test per behaviour the contract promises, named after it.
 *
 * Every test uses its own mock node ("mock://t_<name>") and its own pool,
 * loaded from an explicit configuration (no process environment). Evidence
 * comes from three places that cannot agree by accident: the pool's metrics,
 * the events its observers see, and the mock node's own counters (the
 * server-side view: sessions open, peak, calls per operation).
 *
 * Timing bounds are generous: the machines running this have two shared
 * cores and may run the sanitizer builds. Assertions are on counts and
 * ordering; elapsed times are bounded loosely. Worker threads never call
 * cmocka asserts (they would longjmp across threads): they record what went
 * wrong and the test thread fails with it.
 */
#include <fiu-control.h>
#include <fiu.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "noodle/backend.h"
#include "noodle/config.h"
#include "noodle/failpoint.h"
#include "noodle/pool.h"
#include "mock_nodes.h"
#include "noodle_mock.h"
#include "test_util.h"

#define DEADLINE() noodle_deadline_after(NULL, NOODLE_SEC(15))

/* ---- small helpers ------------------------------------------------------------------- */

static int64_t now_ns(void) { return noodle_clock_now(NULL); }

static void thread_fail_err(const char *what, int rc, const noodle_error *err) {
    char buf[600];
    noodle_error_format(err, buf, sizeof buf);
    noodle_test_thread_fail("%s: rc %d: %s", what, rc, buf);
}

/* The whole number written just before `word` in msg (e.g. 7 in "7 waiting"),
 * or -1. */
static long number_before(const char *msg, const char *word) {
    const char *w = strstr(msg, word);
    if (w == NULL) return -1;
    const char *p = w;
    while (p > msg && p[-1] == ' ') p--;
    const char *end = p;
    while (p > msg && p[-1] >= '0' && p[-1] <= '9') p--;
    if (p == end) return -1;
    return strtol(p, NULL, 10);
}

/* True when msg contains the whole number n as a run of digits of its own. */
static bool mentions_number(const char *msg, long n) {
    for (const char *p = msg; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || (p > msg && p[-1] >= '0' && p[-1] <= '9')) continue;
        if (strtol(p, NULL, 10) == n) return true;
    }
    return false;
}

/* ---- pools over the mock --------------------------------------------------------------- */

/* What a test asks of its pool; spec() gives the defaults of this file. */
typedef struct pool_spec {
    char node[64];
    int64_t max_connections, min_idle, timeout_ms, idle_timeout_ms, max_lifetime_ms;
    int64_t validation_bypass_ms, validation_timeout_ms, connect_timeout_ms, leak_threshold_ms;
    int64_t capacity, housekeeping_ms, backoff_base_ms, backoff_max_ms;
    bool warm_up_blocking, precise_hold_times;
} pool_spec;

static pool_spec spec(const char *node) {
    pool_spec s;
    memset(&s, 0, sizeof s);
    snprintf(s.node, sizeof s.node, "%s", node);
    s.max_connections = 4;
    s.min_idle = 0;
    s.timeout_ms = 5000;
    s.idle_timeout_ms = 0;  /* never */
    s.max_lifetime_ms = 0;  /* never */
    s.validation_bypass_ms = 500;
    s.validation_timeout_ms = 1000;
    s.connect_timeout_ms = 2000;
    s.leak_threshold_ms = 0; /* off */
    s.capacity = 0;
    s.housekeeping_ms = 20;
    s.backoff_base_ms = 10;
    s.backoff_max_ms = 100;
    return s;
}

static int try_open_pool(const pool_spec *s, noodle_pool **out, noodle_error *err) {
    char url[96];
    snprintf(url, sizeof url, "mock://%s", s->node);
    noodle_config_options o = NOODLE_CONFIG_OPTIONS_INIT;
    o.max_connections = s->max_connections;
    o.timeout_ms = s->timeout_ms;
    o.min_idle = s->min_idle;
    o.idle_timeout_ms = s->idle_timeout_ms;
    o.max_lifetime_ms = s->max_lifetime_ms;
    o.validation_bypass_ms = s->validation_bypass_ms;
    o.validation_timeout_ms = s->validation_timeout_ms;
    o.connect_timeout_ms = s->connect_timeout_ms;
    o.leak_threshold_ms = s->leak_threshold_ms;
    o.backend = "mock";
    o.url = url;
    noodle_config cfg;
    noodle_test_config_load(&cfg, &o);

    noodle_pool_options po = {.struct_size = sizeof(noodle_pool_options)};
    po.config = &cfg;
    po.backend = noodle_mock_backend();
    po.application_name = "test_pool";
    po.seed = 20240601;
    po.capacity = s->capacity;
    po.warm_up_blocking = s->warm_up_blocking;
    po.housekeeping_interval_ms = s->housekeeping_ms;
    po.backoff_base_ms = s->backoff_base_ms;
    po.backoff_max_ms = s->backoff_max_ms;
    po.precise_hold_times = s->precise_hold_times;
    noodle_pool *sentinel = (noodle_pool *)&po; /* must be replaced (NULL on failure) */
    *out = sentinel;
    int rc = noodle_pool_open(&po, out, err);
    noodle_config_free(&cfg); /* borrowed during noodle_pool_open only */
    return rc;
}

static noodle_pool *open_pool(const pool_spec *s) {
    noodle_pool *pool = NULL;
    noodle_error err;
    assert_ok(try_open_pool(s, &pool, &err), &err);
    assert_non_null(pool);
    return pool;
}

static noodle_pool_metrics metrics_of(noodle_pool *pool) {
    noodle_pool_metrics m;
    noodle_pool_get_metrics(pool, &m);
    return m;
}

static noodle_conn *acquire_ok(noodle_pool *pool) {
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_pool_acquire(pool, &c, &err), &err);
    assert_non_null(c);
    return c;
}

static int run_sql(noodle_conn *c, const char *sql, const noodle_value *p, size_t n,
                   noodle_error *err) {
    noodle_rows *r = NULL;
    int rc = noodle_conn_execute(c, sql, p, n, DEADLINE(), &r, err);
    noodle_rows_free(r);
    return rc;
}

static void sql_ok(noodle_conn *c, const char *sql) {
    noodle_error err;
    assert_ok(run_sql(c, sql, NULL, 0, &err), &err);
}

static void insert_kv(noodle_conn *c, int64_t id) {
    noodle_value p[2] = {noodle_int64(id), noodle_text("x")};
    noodle_error err;
    assert_ok(run_sql(c, "INSERT INTO kv (id, v) VALUES (?, ?)", p, 2, &err), &err);
}

static void make_kv(noodle_pool *pool) {
    noodle_conn *c = acquire_ok(pool);
    sql_ok(c, "CREATE TABLE kv (id BIGINT PRIMARY KEY, v TEXT)");
    noodle_pool_release(pool, &c);
}

/* ---- an observer that records every event ------------------------------------------------ */

typedef struct rec_event {
    noodle_pool_event_type type;
    int64_t time;
    int slot;
    uint64_t generation;
    noodle_close_reason reason;
    int code;
    bool has_message;
    char message[300];
    char file[300];
    int line;
    int64_t wait_us, held_us;
} rec_event;

typedef struct recorder {
    pthread_mutex_t mu;
    rec_event *ev;
    size_t n, cap;
    size_t dropped;
} recorder;

static recorder *recorder_new(void) {
    recorder *r = calloc(1, sizeof *r);
    assert_non_null(r);
    pthread_mutex_init(&r->mu, NULL);
    r->cap = 20000;
    r->ev = calloc(r->cap, sizeof *r->ev);
    assert_non_null(r->ev);
    return r;
}

static void recorder_free(recorder *r) {
    if (r == NULL) return;
    pthread_mutex_destroy(&r->mu);
    free(r->ev);
    free(r);
}

static void record_event(const noodle_pool_event *ev, void *arg) {
    recorder *r = arg;
    pthread_mutex_lock(&r->mu);
    if (r->n == r->cap) {
        r->dropped++;
    } else {
        rec_event *e = &r->ev[r->n++];
        memset(e, 0, sizeof *e);
        e->type = ev->type;
        e->time = ev->time;
        e->slot = ev->slot;
        e->generation = ev->generation;
        e->reason = ev->close_reason;
        e->code = ev->code;
        e->has_message = ev->message != NULL;
        if (ev->message != NULL) snprintf(e->message, sizeof e->message, "%s", ev->message);
        if (ev->file != NULL) snprintf(e->file, sizeof e->file, "%s", ev->file);
        e->line = ev->line;
        e->wait_us = ev->wait_us;
        e->held_us = ev->held_us;
    }
    pthread_mutex_unlock(&r->mu);
}

static recorder *observe(noodle_pool *pool) {
    recorder *r = recorder_new();
    noodle_error err;
    assert_ok(noodle_pool_observe(pool, record_event, r, &err), &err);
    return r;
}

/* Events of a type (and, for CLOSED, of a reason; -1: any). */
static size_t count_events(recorder *r, noodle_pool_event_type type, int reason) {
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++)
        if (r->ev[i].type == type && (reason < 0 || (int)r->ev[i].reason == reason)) n++;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Copy of the k-th event (0-based) of a type/reason; false when there is none. */
static bool nth_event(recorder *r, noodle_pool_event_type type, int reason, size_t k,
                      rec_event *out) {
    bool found = false;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n && !found; i++)
        if (r->ev[i].type == type && (reason < 0 || (int)r->ev[i].reason == reason) && k-- == 0) {
            *out = r->ev[i];
            found = true;
        }
    pthread_mutex_unlock(&r->mu);
    return found;
}

/* A snapshot of everything recorded so far (caller frees). */
static rec_event *events_snapshot(recorder *r, size_t *n) {
    pthread_mutex_lock(&r->mu);
    *n = r->n;
    rec_event *copy = malloc((r->n + 1) * sizeof *copy);
    if (copy != NULL) memcpy(copy, r->ev, r->n * sizeof *copy);
    pthread_mutex_unlock(&r->mu);
    assert_non_null(copy);
    return copy;
}

/* Check that, in the order observers saw them, each connection's events
 * make sense: OPENED first, then ACQUIRED / RELEASED / VALIDATION_FAILED /
 * LEAK_SUSPECTED, and CLOSED last. Returns a description of the first
 * violation, or NULL. */
static const char *event_order_violation(recorder *r, char *buf, size_t size) {
    size_t n = 0;
    rec_event *evs = events_snapshot(r, &n);
    enum { SLOTS = 4096 };
    static bool open[SLOTS];
    memset(open, 0, sizeof open);
    const char *bad = NULL;
    for (size_t i = 0; i < n && bad == NULL; i++) {
        const rec_event *e = &evs[i];
        if (e->slot < 0 || e->slot >= SLOTS) continue;
        switch (e->type) {
        case NOODLE_POOL_EV_OPENED:
            if (open[e->slot]) bad = "opened twice without a close";
            open[e->slot] = true;
            break;
        case NOODLE_POOL_EV_CLOSED:
            if (!open[e->slot]) bad = "closed before observers were told it was opened";
            open[e->slot] = false;
            break;
        case NOODLE_POOL_EV_ACQUIRED:
        case NOODLE_POOL_EV_RELEASED:
        case NOODLE_POOL_EV_VALIDATION_FAILED:
        case NOODLE_POOL_EV_LEAK_SUSPECTED:
            if (!open[e->slot]) bad = "used before observers were told it was opened";
            break;
        default: break;
        }
        if (bad != NULL)
            snprintf(buf, size, "event %zu of %zu (%s, slot %d): %s", i, n,
                     noodle_pool_event_name(e->type), e->slot, bad);
    }
    free(evs);
    return bad != NULL ? buf : NULL;
}

/* ---- fixture ---------------------------------------------------------------------------- */

static int setup(void **state) {
    (void)state;
    noodle_mock_reset();
    noodle_test_reset_thread_failure();
    return 0;
}

/* ---- STD-POOL-MAX ----------------------------------------------------------------------------- */

typedef struct crowd {
    noodle_pool *pool;
    atomic_int go;
    atomic_int in_use, peak_in_use;
    atomic_int ok, failed;
    int iterations;
    int hold_us_max;
} crowd;

static void *crowd_client(void *arg) {
    crowd *c = arg;
    while (!atomic_load(&c->go)) sched_yield();
    unsigned seed = (unsigned)(uintptr_t)&seed;
    for (int i = 0; i < c->iterations; i++) {
        noodle_conn *conn = NULL;
        noodle_error err;
        int rc = noodle_pool_acquire(c->pool, &conn, &err);
        if (rc != 0) {
            atomic_fetch_add(&c->failed, 1);
            thread_fail_err("acquire", rc, &err);
            continue;
        }
        int now = atomic_fetch_add(&c->in_use, 1) + 1;
        int peak = atomic_load(&c->peak_in_use);
        while (now > peak && !atomic_compare_exchange_weak(&c->peak_in_use, &peak, now)) {
        }
        rc = run_sql(conn, "SELECT 1", NULL, 0, &err);
        if (rc != 0) thread_fail_err("SELECT 1 on an acquired connection", rc, &err);
        if (c->hold_us_max > 0) {
            struct timespec ts = {0, (long)(rand_r(&seed) % c->hold_us_max) * 1000L};
            nanosleep(&ts, NULL);
        }
        atomic_fetch_sub(&c->in_use, 1);
        noodle_pool_release(c->pool, &conn);
        atomic_fetch_add(&c->ok, 1);
    }
    return NULL;
}

static void never_more_than_max_connections_open_or_opening_with_100_threads_on_20(void **state) {
    (void)state;
    noodle_error err;
    pool_spec s = spec("t_max");
    s.max_connections = 20;
    s.min_idle = 2;
    s.timeout_ms = 30000;
    assert_ok(noodle_mock_set_latency("t_max", NOODLE_MOCK_OP_CONNECT, NOODLE_MS(3), &err), &err);
    assert_ok(noodle_mock_set_latency("t_max", NOODLE_MOCK_OP_EXECUTE, NOODLE_MS(1), &err), &err);
    noodle_pool *pool = open_pool(&s);
    enum { THREADS = 100 };
    static crowd c;
    memset(&c, 0, sizeof c);
    c.pool = pool;
    c.iterations = 20;
    c.hold_us_max = 2000;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&t[i], NULL, crowd_client, &c), 0);
    atomic_store(&c.go, 1);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    noodle_test_assert_no_thread_failure();
    assert_int_equal(atomic_load(&c.ok), THREADS * 20);
    assert_int_equal(atomic_load(&c.failed), 0);

    noodle_pool_metrics m = metrics_of(pool);
    noodle_mock_stats st = noodle_test_node_stats("t_max");
    /* the pool's own view (open or opening) and the server's */
    assert_in_range(m.peak_total, 2, 20);
    assert_in_range(st.peak_connections, 1, 20);
    assert_in_range(atomic_load(&c.peak_in_use), 2, 20);
    assert_int_equal(m.acquired, THREADS * 20);
    assert_true(m.total <= 20);
    noodle_pool_close(pool);
    assert_int_equal(noodle_test_node_sessions("t_max"), 0);
}

/* ---- STD-POOL-TIMEOUT ------------------------------------------------------------------------ */

typedef struct waiter {
    noodle_pool *pool;
    int id;
    int64_t deadline; /* 0: the pool's timeout */
    int64_t hold_ms;  /* keep the connection this long, then release */
    bool keep;        /* do not release: hand it to the test thread */
    atomic_int started, done;
    int rc;
    noodle_error err;
    noodle_conn *conn;
    int64_t elapsed_ms;
    atomic_int *order_next; /* FIFO test: where this waiter's turn is recorded */
    int *order;
} waiter;

static void *waiter_main(void *arg) {
    waiter *w = arg;
    atomic_store(&w->started, 1);
    int64_t t0 = noodle_test_now_ms();
    noodle_conn *c = NULL;
    w->rc = noodle_pool_acquire_until(w->pool, w->deadline, &c, &w->err);
    w->elapsed_ms = noodle_test_now_ms() - t0;
    if (w->rc == 0) {
        if (w->order != NULL) w->order[atomic_fetch_add(w->order_next, 1)] = w->id;
        noodle_error err;
        int rc = run_sql(c, "SELECT 1", NULL, 0, &err);
        if (rc != 0) thread_fail_err("SELECT 1 on an acquired connection", rc, &err);
        if (w->hold_ms > 0) noodle_test_sleep_ms(w->hold_ms);
        if (w->keep) w->conn = c;
        else noodle_pool_release(w->pool, &c);
    } else if (c != NULL) {
        noodle_test_thread_fail("a failed acquire (%d) left *out non-NULL", w->rc);
    }
    atomic_store(&w->done, 1);
    return NULL;
}

static void acquire_times_out_with_2002_naming_in_use_and_waiting(void **state) {
    (void)state;
    pool_spec s = spec("t_timeout");
    s.max_connections = 2;
    s.timeout_ms = 200;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    noodle_conn *a = acquire_ok(pool), *b = acquire_ok(pool);

    /* another client already waiting, with a long explicit deadline */
    static waiter w;
    memset(&w, 0, sizeof w);
    w.pool = pool;
    w.deadline = noodle_deadline_after(NULL, NOODLE_SEC(20));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, waiter_main, &w), 0);
    WAIT_FOR(metrics_of(pool).waiting == 1, 3000);
    assert_int_equal(metrics_of(pool).waiting, 1);

    noodle_error err;
    noodle_conn *c = (noodle_conn *)&err; /* must come back NULL */
    int64_t t0 = noodle_test_now_ms();
    int rc = noodle_pool_acquire(pool, &c, &err);
    int64_t waited = noodle_test_now_ms() - t0;
    assert_code(rc, &err, NOODLE_E_POOL_TIMEOUT);
    assert_null(c);
    assert_in_range(waited, 190, 2000);
    /* "how many were in use and waiting": 2 in use; the other waiter (and
     * possibly this caller) waiting */
    if (number_before(err.message, "in use") != 2)
        fail_msg("2002 message does not say 2 in use: %s", err.message);
    long waiting = number_before(err.message, "waiting");
    if (waiting != 1 && waiting != 2)
        fail_msg("2002 message does not say how many were waiting (1 or 2): %s", err.message);

    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.timeouts, 1);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_TIMED_OUT, -1), 1);
    rec_event ev;
    assert_true(nth_event(rec, NOODLE_POOL_EV_TIMED_OUT, -1, 0, &ev));
    assert_int_equal(ev.code, NOODLE_E_POOL_TIMEOUT);
    assert_true(ev.wait_us >= 190000);

    /* the other waiter is still served once a connection comes back */
    assert_false(atomic_load(&w.done));
    noodle_pool_release(pool, &a);
    pthread_join(t, NULL);
    assert_ok(w.rc, &w.err);
    noodle_test_assert_no_thread_failure();
    noodle_pool_release(pool, &b);
    noodle_pool_close(pool);
    recorder_free(rec);
}

static void acquire_until_waits_until_its_explicit_deadline(void **state) {
    (void)state;
    pool_spec s = spec("t_until");
    s.max_connections = 1;
    s.timeout_ms = 20000; /* far beyond the explicit deadlines below */
    noodle_pool *pool = open_pool(&s);
    noodle_conn *a = acquire_ok(pool);
    noodle_error err;
    noodle_conn *c = NULL;

    /* an explicit deadline, not the pool's 20 s */
    int64_t t0 = noodle_test_now_ms();
    int rc = noodle_pool_acquire_until(pool, noodle_deadline_after(NULL, NOODLE_MS(150)), &c, &err);
    int64_t waited = noodle_test_now_ms() - t0;
    assert_code(rc, &err, NOODLE_E_POOL_TIMEOUT);
    assert_null(c);
    assert_in_range(waited, 140, 2000);

    /* a deadline already passed fails at once */
    t0 = noodle_test_now_ms();
    rc = noodle_pool_acquire_until(pool, noodle_clock_now(NULL) - NOODLE_MS(1), &c, &err);
    assert_code(rc, &err, NOODLE_E_POOL_TIMEOUT);
    assert_null(c);
    assert_in_range(noodle_test_now_ms() - t0, 0, 1000);

    /* a connection released before the deadline is handed over */
    static waiter w;
    memset(&w, 0, sizeof w);
    w.pool = pool;
    w.deadline = noodle_deadline_after(NULL, NOODLE_SEC(5));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, waiter_main, &w), 0);
    WAIT_FOR(metrics_of(pool).waiting == 1, 3000);
    noodle_test_sleep_ms(100);
    noodle_pool_release(pool, &a);
    pthread_join(t, NULL);
    assert_ok(w.rc, &w.err);
    assert_in_range(w.elapsed_ms, 90, 3000);
    assert_int_equal(metrics_of(pool).timeouts, 2);
    noodle_test_assert_no_thread_failure();
    noodle_pool_close(pool);
}

/* noodle_pool_shutdown on its own thread. */
typedef struct shutdown_call {
    noodle_pool *pool;
    int64_t deadline;
    atomic_int done;
    int rc;
    noodle_error err;
    int64_t returned_ms;
} shutdown_call;

static void *shutdown_main(void *arg) {
    shutdown_call *sc = arg;
    sc->rc = noodle_pool_shutdown(sc->pool, sc->deadline, &sc->err);
    sc->returned_ms = noodle_test_now_ms();
    atomic_store(&sc->done, 1);
    return NULL;
}

static void after_shutdown_acquires_fail_with_2001_and_waiters_are_failed_with_2001(void **state) {
    (void)state;
    pool_spec s = spec("t_shutdown");
    s.max_connections = 1;
    s.timeout_ms = 20000;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    noodle_conn *a = acquire_ok(pool);

    enum { WAITERS = 3 };
    static waiter w[WAITERS];
    pthread_t t[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].pool = pool;
        assert_int_equal(pthread_create(&t[i], NULL, waiter_main, &w[i]), 0);
    }
    WAIT_FOR(metrics_of(pool).waiting == WAITERS, 3000);
    assert_int_equal(metrics_of(pool).waiting, WAITERS);

    /* shut down on another thread: it waits for `a` to come back */
    static shutdown_call sc;
    memset(&sc, 0, sizeof sc);
    sc.pool = pool;
    sc.deadline = noodle_deadline_after(NULL, NOODLE_SEC(20));
    pthread_t st;
    int64_t t0 = noodle_test_now_ms();
    assert_int_equal(pthread_create(&st, NULL, shutdown_main, &sc), 0);

    /* every waiter fails with 2001 long before its 20 s timeout */
    for (int i = 0; i < WAITERS; i++) {
        WAIT_FOR(atomic_load(&w[i].done), 3000);
        assert_true(atomic_load(&w[i].done));
        pthread_join(t[i], NULL);
        assert_code(w[i].rc, &w[i].err, NOODLE_E_POOL_CLOSED);
        assert_in_range(w[i].elapsed_ms, 0, 5000);
    }
    assert_in_range(noodle_test_now_ms() - t0, 0, 3000);

    /* a new acquire fails at once, and so does a scoped use */
    noodle_error err;
    noodle_conn *c = (noodle_conn *)&err;
    t0 = noodle_test_now_ms();
    int rc = noodle_pool_acquire(pool, &c, &err);
    assert_code(rc, &err, NOODLE_E_POOL_CLOSED);
    assert_null(c);
    assert_in_range(noodle_test_now_ms() - t0, 0, 1000);

    /* shutdown still waits for the connection in use, which keeps working */
    noodle_test_sleep_ms(50);
    assert_false(atomic_load(&sc.done));
    sql_ok(a, "SELECT 1");
    int64_t released_ms = noodle_test_now_ms();
    noodle_pool_release(pool, &a);
    WAIT_FOR(atomic_load(&sc.done), 3000);
    assert_true(atomic_load(&sc.done));
    pthread_join(st, NULL);
    assert_ok(sc.rc, &sc.err);
    assert_in_range(sc.returned_ms - released_ms, 0, 2000);

    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.total, 0);
    assert_int_equal(m.waiting, 0);
    assert_int_equal(m.opened, m.closed_total);
    assert_int_equal(m.closed[NOODLE_CLOSE_SHUTDOWN], 1);
    assert_int_equal(noodle_test_node_sessions("t_shutdown"), 0);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_SHUTDOWN, -1), 1);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_SHUTDOWN), 1);
    /* idempotent */
    assert_ok(noodle_pool_shutdown(pool, noodle_deadline_after(NULL, NOODLE_SEC(1)), &err), &err);
    noodle_test_assert_no_thread_failure();
    noodle_pool_close(pool);
    recorder_free(rec);
}

/* Clients that acquire and release in a tight loop until the pool refuses
 * them with 2001. */
static void *until_closed_client(void *arg) {
    noodle_pool *pool = arg;
    for (;;) {
        noodle_conn *c = NULL;
        noodle_error err;
        int rc = noodle_pool_acquire(pool, &c, &err);
        if (rc == NOODLE_E_POOL_CLOSED) break;
        if (rc != 0) {
            thread_fail_err("acquire (expected 0 or 2001)", rc, &err);
            break;
        }
        noodle_pool_release(pool, &c);
    }
    return NULL;
}

static void shutdown_under_load_returns_0_only_once_every_connection_is_closed(void **state) {
    (void)state;
    enum { ROUNDS = 60, CLIENTS = 4 };
    for (int round = 0; round < ROUNDS; round++) {
        char node[32];
        snprintf(node, sizeof node, "t_shutdown_load_%d", round);
        pool_spec s = spec(node);
        s.max_connections = CLIENTS;
        s.timeout_ms = 10000;
        noodle_pool *pool = open_pool(&s);
        pthread_t t[CLIENTS];
        for (int i = 0; i < CLIENTS; i++)
            assert_int_equal(pthread_create(&t[i], NULL, until_closed_client, pool), 0);
        noodle_test_sleep_ms(5);
        noodle_error err;
        assert_ok(noodle_pool_shutdown(pool, noodle_deadline_after(NULL, NOODLE_SEC(10)), &err), &err);
        /* "then close every connection. Returns 0": nothing is left open */
        noodle_pool_metrics m = metrics_of(pool);
        int64_t server = noodle_test_node_sessions(node);
        if (m.total != 0 || server != 0 || m.opened != m.closed_total)
            fail_msg("round %d: shutdown returned 0 with %" PRId64 " connections open (%" PRId64
                     " idle, %" PRId64 " in use, %" PRId64 " opening; opened %" PRIu64
                     ", closed %" PRIu64 "); the server has %" PRId64 " sessions",
                     round, m.total, m.idle, m.active, m.opening, m.opened, m.closed_total, server);
        for (int i = 0; i < CLIENTS; i++) pthread_join(t[i], NULL);
        noodle_test_assert_no_thread_failure();
        noodle_pool_close(pool);
    }
}

static void shutdown_with_a_connection_in_use_returns_2007_at_its_deadline(void **state) {
    (void)state;
    pool_spec s = spec("t_busy_shutdown");
    s.max_connections = 3;
    s.min_idle = 1;
    s.warm_up_blocking = true;
    noodle_pool *pool = open_pool(&s);
    noodle_conn *a = acquire_ok(pool);
    noodle_error err;
    int64_t t0 = noodle_test_now_ms();
    int rc = noodle_pool_shutdown(pool, noodle_deadline_after(NULL, NOODLE_MS(200)), &err);
    int64_t waited = noodle_test_now_ms() - t0;
    assert_code(rc, &err, NOODLE_E_POOL_BUSY_AT_SHUTDOWN);
    assert_in_range(waited, 190, 2000);
    if (!mentions_number(err.message, 1))
        fail_msg("2007 does not say how many are still in use (1): %s", err.message);
    noodle_conn *c = NULL;
    assert_code(noodle_pool_acquire(pool, &c, &err), &err, NOODLE_E_POOL_CLOSED);
    assert_null(c);
    /* once it is back, shutdown completes and closes everything */
    noodle_pool_release(pool, &a);
    assert_ok(noodle_pool_shutdown(pool, noodle_deadline_after(NULL, NOODLE_SEC(5)), &err), &err);
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.total, 0);
    assert_int_equal(m.opened, m.closed_total);
    assert_int_equal(noodle_test_node_sessions("t_busy_shutdown"), 0);
    noodle_pool_close(pool);
}

/* ---- FIFO ------------------------------------------------------------------------------------ */

static void waiters_are_served_in_arrival_order(void **state) {
    (void)state;
    pool_spec s = spec("t_fifo");
    s.max_connections = 1;
    s.timeout_ms = 20000;
    noodle_pool *pool = open_pool(&s);
    noodle_conn *a = acquire_ok(pool);
    enum { WAITERS = 8 };
    static waiter w[WAITERS];
    static int order[WAITERS];
    static atomic_int next;
    atomic_store(&next, 0);
    pthread_t t[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        order[i] = -1;
        w[i].pool = pool;
        w[i].id = i;
        w[i].hold_ms = 3;
        w[i].order = order;
        w[i].order_next = &next;
        assert_int_equal(pthread_create(&t[i], NULL, waiter_main, &w[i]), 0);
        /* the next one arrives only once this one is queued */
        WAIT_FOR(metrics_of(pool).waiting == i + 1, 3000);
        assert_int_equal(metrics_of(pool).waiting, i + 1);
        noodle_test_sleep_ms(2);
    }
    noodle_pool_release(pool, &a);
    for (int i = 0; i < WAITERS; i++) {
        pthread_join(t[i], NULL);
        assert_ok(w[i].rc, &w[i].err);
    }
    noodle_test_assert_no_thread_failure();
    for (int i = 0; i < WAITERS; i++)
        if (order[i] != i) {
            char got[128] = "";
            for (int j = 0; j < WAITERS; j++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", order[j]);
            fail_msg("waiters served out of arrival order: %s(expected 0 1 2 ... 7)", got);
        }
    noodle_pool_close(pool);
}

/* A client arriving while a connection is being released must queue behind
 * the clients already waiting, not take the connection from them. The pool
 * lock is kept busy by a thread reading metrics (as a monitor would), which
 * widens the moment between a release publishing the connection and handing
 * it to the head of the queue. */
typedef struct spammer {
    noodle_pool *pool;
    atomic_int stop;
} spammer;

static void *metrics_spammer(void *arg) {
    spammer *sp = arg;
    noodle_pool_metrics *m = malloc(sizeof *m);
    while (m != NULL && !atomic_load(&sp->stop)) {
        noodle_pool_get_metrics(sp->pool, m);
        struct timespec ts = {0, 100000}; /* a monitor, not a lock hog */
        nanosleep(&ts, NULL);
    }
    free(m);
    return NULL;
}

static void a_newcomer_never_overtakes_a_queued_waiter(void **state) {
    (void)state;
    pool_spec s = spec("t_fifo_race");
    s.max_connections = 1;
    s.capacity = 256;
    s.timeout_ms = 20000;
    noodle_pool *pool = open_pool(&s);
    static spammer sp;
    memset(&sp, 0, sizeof sp);
    sp.pool = pool;
    pthread_t spt;
    assert_int_equal(pthread_create(&spt, NULL, metrics_spammer, &sp), 0);
    enum { TRIALS = 150 };
    int overtaken = 0, trials = 0;
    for (int trial = 0; trial < TRIALS && overtaken == 0; trial++) {
        trials++;
        noodle_conn *c = acquire_ok(pool);
        static waiter w[2];
        static int order[2];
        static atomic_int next;
        atomic_store(&next, 0);
        pthread_t t[2];
        for (int i = 0; i < 2; i++) {
            memset(&w[i], 0, sizeof w[i]);
            order[i] = -1;
            w[i].pool = pool;
            w[i].id = i;
            w[i].hold_ms = 1;
            w[i].order = order;
            w[i].order_next = &next;
        }
        /* A queues first */
        assert_int_equal(pthread_create(&t[0], NULL, waiter_main, &w[0]), 0);
        WAIT_FOR(metrics_of(pool).waiting == 1, 3000);
        assert_int_equal(metrics_of(pool).waiting, 1);
        /* B arrives while c is being released */
        assert_int_equal(pthread_create(&t[1], NULL, waiter_main, &w[1]), 0);
        while (!atomic_load(&w[1].started)) sched_yield();
        noodle_pool_release(pool, &c);
        for (int i = 0; i < 2; i++) {
            pthread_join(t[i], NULL);
            assert_ok(w[i].rc, &w[i].err);
        }
        if (order[0] != 0) overtaken++;
    }
    atomic_store(&sp.stop, 1);
    pthread_join(spt, NULL);
    noodle_test_assert_no_thread_failure();
    if (overtaken > 0)
        fail_msg("in trial %d a client that arrived later was served before the one already "
                 "waiting (FIFO)",
                 trials);
    noodle_pool_close(pool);
}

/* ---- release ----------------------------------------------------------------------------------- */

static void releasing_a_connection_inside_a_transaction_rolls_it_back(void **state) {
    (void)state;
    pool_spec s = spec("t_txn_release");
    s.max_connections = 1;
    noodle_pool *pool = open_pool(&s);
    make_kv(pool);
    noodle_error err;
    noodle_conn *c = acquire_ok(pool);
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    insert_kv(c, 1);
    insert_kv(c, 2);
    assert_true(noodle_conn_in_transaction(c));
    noodle_pool_release(pool, &c);
    assert_null(c);
    assert_int_equal(noodle_mock_node_rows("t_txn_release", "kv"), 0);

    c = acquire_ok(pool);
    assert_false(noodle_conn_in_transaction(c));
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM kv"), 0);
    insert_kv(c, 1); /* the key is free: nothing of the transaction survived */
    noodle_pool_release(pool, &c);
    assert_int_equal(noodle_mock_node_rows("t_txn_release", "kv"), 1);
    /* the rolled-back connection was reused, not closed */
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.opened, 1);
    assert_int_equal(m.closed_total, 0);
    noodle_pool_close(pool);
}

static void a_connection_whose_rollback_fails_on_release_is_closed(void **state) {
    (void)state;
    pool_spec s = spec("t_rollback_fails");
    s.max_connections = 1;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    make_kv(pool);
    noodle_error err;
    noodle_conn *c = acquire_ok(pool);
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    insert_kv(c, 1);
    /* a non-fatal failure: the connection itself looks fine, but its
     * transaction could not be ended */
    assert_ok(noodle_mock_fail_next("t_rollback_fails", NOODLE_MOCK_OP_ROLLBACK, 1,
                                    NOODLE_E_QUERY_FAILED, &err),
              &err);
    noodle_pool_release(pool, &c);
    assert_null(c);
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.closed[NOODLE_CLOSE_ROLLBACK], 1);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_ROLLBACK), 1);
    assert_int_equal(noodle_mock_node_rows("t_rollback_fails", "kv"), 0);
    c = acquire_ok(pool);
    assert_false(noodle_conn_in_transaction(c));
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM kv"), 0);
    noodle_pool_release(pool, &c);
    assert_int_equal(metrics_of(pool).opened, 2);
    noodle_pool_close(pool);
    recorder_free(rec);
}

static void releasing_a_broken_connection_closes_it_and_the_next_acquire_gets_a_working_one(
    void **state) {
    (void)state;
    pool_spec s = spec("t_broken");
    s.max_connections = 2;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    noodle_error err;

    /* a connection-fatal error on a call */
    noodle_conn *c = acquire_ok(pool);
    assert_ok(noodle_mock_fail_next("t_broken", NOODLE_MOCK_OP_EXECUTE, 1, NOODLE_E_CONNECTION_LOST,
                                    &err),
              &err);
    assert_code(run_sql(c, "SELECT 1", NULL, 0, &err), &err, NOODLE_E_CONNECTION_LOST);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    noodle_pool_release(pool, &c);
    assert_null(c);
    assert_int_equal(metrics_of(pool).closed[NOODLE_CLOSE_BROKEN], 1);
    c = acquire_ok(pool);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    sql_ok(c, "SELECT 1");

    /* the session terminated server-side while in use */
    assert_ok(noodle_mock_node_kill_connections("t_broken", &err), &err);
    assert_code(run_sql(c, "SELECT 1", NULL, 0, &err), &err, NOODLE_E_CONNECTION_LOST);
    noodle_pool_release(pool, &c);
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.closed[NOODLE_CLOSE_BROKEN], 2);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_BROKEN), 2);
    c = acquire_ok(pool);
    sql_ok(c, "SELECT 1");
    noodle_pool_release(pool, &c);
    m = metrics_of(pool);
    assert_int_equal(m.opened, 3);
    assert_int_equal(m.total, 1);
    assert_int_equal(noodle_test_node_sessions("t_broken"), 1);
    noodle_pool_close(pool);
    recorder_free(rec);
}

static void releasing_twice_through_the_same_variable_is_harmless(void **state) {
    (void)state;
    pool_spec s = spec("t_release_twice");
    s.max_connections = 2;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    noodle_conn *c = acquire_ok(pool);
    noodle_pool_release(pool, &c);
    assert_null(c);
    noodle_pool_release(pool, &c);
    noodle_pool_release(pool, &c);
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.active, 0);
    assert_int_equal(m.idle, 1);
    assert_int_equal(m.total, 1);
    assert_int_equal(m.acquired, 1);
    assert_int_equal(m.hold_time.count, 1);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_RELEASED, -1), 1);
    /* and the pool still works: two distinct connections at once */
    noodle_conn *a = acquire_ok(pool), *b = acquire_ok(pool);
    assert_ptr_not_equal(a, b);
    noodle_pool_release(pool, &a);
    noodle_pool_release(pool, &b);
    assert_int_equal(metrics_of(pool).idle, 2);
    noodle_pool_close(pool);
    recorder_free(rec);
}

/* ---- scoped use --------------------------------------------------------------------------------- */

typedef struct with_arg {
    int calls;
    int code; /* what fn returns (0 or a code it raises) */
    bool open_transaction;
} with_arg;

static int with_fn(noodle_conn *c, void *arg, noodle_error *err) {
    with_arg *a = arg;
    a->calls++;
    int rc = run_sql(c, "SELECT 1", NULL, 0, err);
    if (rc != 0) return rc;
    if (a->open_transaction) {
        rc = noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, DEADLINE(), err);
        if (rc != 0) return rc;
        noodle_value p[2] = {noodle_int64(7), noodle_text("x")};
        rc = run_sql(c, "INSERT INTO kv (id, v) VALUES (?, ?)", p, 2, err);
        if (rc != 0) return rc;
    }
    if (a->code != 0) return NOODLE_ERR(err, a->code, "fn failed on purpose");
    return 0;
}

static void pool_with_runs_fn_releases_and_returns_its_code(void **state) {
    (void)state;
    pool_spec s = spec("t_with");
    s.max_connections = 1;
    s.timeout_ms = 150;
    noodle_pool *pool = open_pool(&s);
    make_kv(pool);
    noodle_error err;

    with_arg a = {0};
    assert_ok(noodle_pool_with(pool, with_fn, &a, &err), &err);
    assert_int_equal(a.calls, 1);
    assert_int_equal(metrics_of(pool).active, 0);

    /* fn's own code comes back, with its error */
    a = (with_arg){.code = NOODLE_E_QUERY_FAILED};
    int rc = noodle_pool_with(pool, with_fn, &a, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_FAILED);
    assert_non_null(strstr(err.message, "fn failed on purpose"));
    assert_int_equal(a.calls, 1);
    assert_int_equal(metrics_of(pool).active, 0);

    /* a transaction fn left open is rolled back */
    a = (with_arg){.open_transaction = true};
    assert_ok(noodle_pool_with(pool, with_fn, &a, &err), &err);
    assert_int_equal(metrics_of(pool).active, 0);
    assert_int_equal(noodle_mock_node_rows("t_with", "kv"), 0);
    noodle_conn *c = acquire_ok(pool);
    assert_false(noodle_conn_in_transaction(c));
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM kv"), 0);

    /* the acquire's failure code, and fn is not called */
    a = (with_arg){0};
    rc = noodle_pool_with(pool, with_fn, &a, &err);
    assert_code(rc, &err, NOODLE_E_POOL_TIMEOUT);
    assert_int_equal(a.calls, 0);
    noodle_pool_release(pool, &c);
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.acquired, 5); /* make_kv, three withs, one acquire */
    assert_int_equal(m.hold_time.count, 5);
    noodle_pool_close(pool);
}

/* ---- STD-POOL-VALIDATE ------------------------------------------------------------------------ */

static void idle_connections_killed_server_side_are_never_handed_out(void **state) {
    (void)state;
    enum { N = 5 };
    pool_spec s = spec("t_stale");
    s.max_connections = N;
    s.validation_bypass_ms = 10;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    noodle_error err;
    noodle_conn *c[N];
    for (int round = 1; round <= 2; round++) {
        for (int i = 0; i < N; i++) {
            c[i] = acquire_ok(pool);
            sql_ok(c[i], "SELECT 1");
        }
        for (int i = 0; i < N; i++) noodle_pool_release(pool, &c[i]);
        assert_int_equal(metrics_of(pool).idle, N);
        noodle_test_sleep_ms(60); /* past the bypass window */
        int64_t validations = noodle_test_node_stats("t_stale").calls[NOODLE_MOCK_OP_VALIDATE];
        assert_ok(noodle_mock_node_kill_connections("t_stale", &err), &err);
        assert_int_equal(noodle_test_node_sessions("t_stale"), 0);
        /* every connection handed out works: none of the killed ones */
        for (int i = 0; i < N; i++) {
            c[i] = acquire_ok(pool);
            int rc = run_sql(c[i], "SELECT 1", NULL, 0, &err);
            if (rc != 0) fail_msg("round %d: a stale connection was handed out: %d %s", round, rc, err.message);
        }
        assert_true(
            noodle_test_node_stats("t_stale").calls[NOODLE_MOCK_OP_VALIDATE] - validations >= N);
        for (int i = 0; i < N; i++) noodle_pool_release(pool, &c[i]);
        noodle_pool_metrics m = metrics_of(pool);
        assert_int_equal(m.validation_failures, (uint64_t)(N * round));
        assert_int_equal(m.closed[NOODLE_CLOSE_VALIDATION], (uint64_t)(N * round));
        assert_int_equal(count_events(rec, NOODLE_POOL_EV_VALIDATION_FAILED, -1), (size_t)(N * round));
        assert_int_equal(count_events(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_VALIDATION),
                         (size_t)(N * round));
        assert_int_equal(m.opened, (uint64_t)(N * (round + 1)));
    }
    rec_event ev;
    assert_true(nth_event(rec, NOODLE_POOL_EV_VALIDATION_FAILED, -1, 0, &ev));
    assert_int_equal(ev.code, NOODLE_E_CONNECTION_LOST);
    noodle_pool_close(pool);
    recorder_free(rec);
}

/* STD-POOL-VALIDATE: validation is "skipped only inside a short bypass
 * window after its last successful use". A connection held but unused for
 * longer than the window was not used successfully within it, however
 * recently it was released. */
static void a_connection_held_unused_past_the_bypass_window_is_validated_before_reuse(
    void **state) {
    (void)state;
    pool_spec s = spec("t_held_unused");
    s.max_connections = 1;
    s.validation_bypass_ms = 100;
    noodle_pool *pool = open_pool(&s);
    noodle_error err;
    noodle_conn *c = acquire_ok(pool);
    sql_ok(c, "SELECT 1");
    noodle_test_sleep_ms(300); /* held, not used */
    assert_ok(noodle_mock_node_kill_connections("t_held_unused", &err), &err);
    noodle_pool_release(pool, &c);
    c = acquire_ok(pool);
    int rc = run_sql(c, "SELECT 1", NULL, 0, &err);
    if (rc != 0)
        fail_msg("a connection last used 300 ms ago (bypass 100 ms) was handed out without "
                 "validation and was stale: %s",
                 err.message);
    noodle_pool_release(pool, &c);
    assert_int_equal(metrics_of(pool).validation_failures, 1);
    noodle_pool_close(pool);
}

static void connections_used_within_the_bypass_window_are_not_validated(void **state) {
    (void)state;
    pool_spec s = spec("t_bypass");
    s.max_connections = 2;
    s.validation_bypass_ms = 300;
    noodle_pool *pool = open_pool(&s);
    noodle_conn *c = acquire_ok(pool);
    sql_ok(c, "SELECT 1");
    noodle_pool_release(pool, &c);
    int64_t base = noodle_test_node_stats("t_bypass").calls[NOODLE_MOCK_OP_VALIDATE];
    /* reuse well inside the window: no validation */
    int64_t t0 = noodle_test_now_ms();
    int cycles = 0;
    while (cycles < 30 && noodle_test_now_ms() - t0 < 100) {
        c = acquire_ok(pool);
        sql_ok(c, "SELECT 1");
        noodle_pool_release(pool, &c);
        cycles++;
    }
    assert_true(cycles >= 1);
    assert_int_equal(noodle_test_node_stats("t_bypass").calls[NOODLE_MOCK_OP_VALIDATE], base);
    assert_int_equal(metrics_of(pool).opened, 1);
    /* idle past the window: the next reuse validates, once */
    noodle_test_sleep_ms(450);
    c = acquire_ok(pool);
    assert_int_equal(noodle_test_node_stats("t_bypass").calls[NOODLE_MOCK_OP_VALIDATE], base + 1);
    sql_ok(c, "SELECT 1");
    noodle_pool_release(pool, &c);
    noodle_pool_close(pool);
}

static void with_no_bypass_window_every_reuse_is_validated(void **state) {
    (void)state;
    pool_spec s = spec("t_no_bypass");
    s.max_connections = 2;
    s.validation_bypass_ms = 0;
    noodle_pool *pool = open_pool(&s);
    noodle_conn *c = acquire_ok(pool);
    sql_ok(c, "SELECT 1");
    noodle_pool_release(pool, &c);
    int64_t base = noodle_test_node_stats("t_no_bypass").calls[NOODLE_MOCK_OP_VALIDATE];
    for (int i = 0; i < 10; i++) {
        c = acquire_ok(pool);
        sql_ok(c, "SELECT 1");
        noodle_pool_release(pool, &c);
    }
    assert_int_equal(noodle_test_node_stats("t_no_bypass").calls[NOODLE_MOCK_OP_VALIDATE],
                     base + 10);
    noodle_pool_close(pool);
}

/* ---- STD-POOL-CREATE ------------------------------------------------------------------------------ */

static void no_connection_is_opened_while_an_idle_one_can_serve(void **state) {
    (void)state;
    /* a cold pool: the first acquire opens one, and that one serves the rest */
    pool_spec s = spec("t_no_extra");
    s.max_connections = 10;
    noodle_pool *pool = open_pool(&s);
    for (int i = 0; i < 200; i++) {
        noodle_conn *c = acquire_ok(pool);
        sql_ok(c, "SELECT 1");
        noodle_pool_release(pool, &c);
    }
    noodle_test_sleep_ms(100);
    assert_int_equal(metrics_of(pool).opened, 1);
    assert_int_equal(noodle_test_node_stats("t_no_extra").connects_total, 1);
    noodle_pool_close(pool);

    /* a warm pool: what min_idle opened serves sequential use, and nothing
     * more is opened once it has settled */
    s = spec("t_no_extra_warm");
    s.max_connections = 10;
    s.min_idle = 2;
    s.warm_up_blocking = true;
    pool = open_pool(&s);
    for (int i = 0; i < 10; i++) {
        noodle_conn *c = acquire_ok(pool);
        noodle_pool_release(pool, &c);
    }
    noodle_test_sleep_ms(100);
    uint64_t opened = metrics_of(pool).opened;
    assert_in_range(opened, 2, 3);
    for (int i = 0; i < 200; i++) {
        noodle_conn *c = acquire_ok(pool);
        sql_ok(c, "SELECT 1");
        noodle_pool_release(pool, &c);
    }
    noodle_test_sleep_ms(100);
    assert_int_equal(metrics_of(pool).opened, opened);
    assert_int_equal(noodle_test_node_stats("t_no_extra_warm").connects_total, (int64_t)opened);
    noodle_pool_close(pool);
}

static void a_burst_of_50_clients_against_150ms_connects_with_min_idle_5_holds_at_most_7(
    void **state) {
    (void)state;
    noodle_error err;
    pool_spec s = spec("t_spike");
    s.max_connections = 20;
    s.min_idle = 5;
    s.timeout_ms = 20000;
    s.warm_up_blocking = true;
    assert_ok(noodle_mock_set_latency("t_spike", NOODLE_MOCK_OP_CONNECT, NOODLE_MS(150), &err), &err);
    assert_ok(noodle_mock_set_latency("t_spike", NOODLE_MOCK_OP_EXECUTE, NOODLE_MS(2), &err), &err);
    noodle_pool *pool = open_pool(&s);
    assert_int_equal(metrics_of(pool).total, 5);
    enum { THREADS = 50 };
    static crowd c;
    memset(&c, 0, sizeof c);
    c.pool = pool;
    c.iterations = 1;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&t[i], NULL, crowd_client, &c), 0);
    atomic_store(&c.go, 1);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    noodle_test_assert_no_thread_failure();
    assert_int_equal(atomic_load(&c.ok), THREADS);
    noodle_test_sleep_ms(400); /* let any connect started during the burst finish */
    noodle_pool_metrics m = metrics_of(pool);
    noodle_mock_stats st = noodle_test_node_stats("t_spike");
    if (m.peak_total > 7 || st.peak_connections > 7)
        fail_msg("spike opened more than demand needs: pool peak %" PRId64 ", server peak %" PRId64
                 " (max 7)",
                 m.peak_total, st.peak_connections);
    noodle_pool_close(pool);
}

/* Clients that keep acquiring, using and releasing until told to stop,
 * counting outcomes; any acquire code other than 0 / 2002 is a failure. */
typedef struct churn {
    noodle_pool *pool;
    atomic_int stop;
    atomic_int ok, timeouts, query_failures;
    int64_t hold_ms;
} churn;

static void *churn_client(void *arg) {
    churn *ch = arg;
    while (!atomic_load(&ch->stop)) {
        noodle_conn *c = NULL;
        noodle_error err;
        int rc = noodle_pool_acquire(ch->pool, &c, &err);
        if (rc == NOODLE_E_POOL_TIMEOUT) {
            atomic_fetch_add(&ch->timeouts, 1);
            continue;
        }
        if (rc != 0) {
            thread_fail_err("acquire (expected 0 or 2002)", rc, &err);
            noodle_test_sleep_ms(5);
            continue;
        }
        atomic_fetch_add(&ch->ok, 1);
        rc = run_sql(c, "SELECT 1", NULL, 0, &err);
        if (rc != 0) {
            /* a session killed while in use: coded, connection-fatal */
            if (rc != NOODLE_E_CONNECTION_LOST && rc != NOODLE_E_CONNECTION_BROKEN)
                thread_fail_err("SELECT 1", rc, &err);
            atomic_fetch_add(&ch->query_failures, 1);
        }
        if (ch->hold_ms > 0) noodle_test_sleep_ms(ch->hold_ms);
        noodle_pool_release(ch->pool, &c);
    }
    return NULL;
}

static void after_connect_faults_stop_the_pool_serves_at_full_capacity_within_one_backoff(
    void **state) {
    (void)state;
    enum { N = 4 };
    noodle_error err;
    pool_spec s = spec("t_recover");
    s.max_connections = N;
    s.timeout_ms = 200;
    s.validation_bypass_ms = 0;
    s.backoff_base_ms = 20;
    s.backoff_max_ms = 200;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    static churn ch;
    memset(&ch, 0, sizeof ch);
    ch.pool = pool;
    ch.hold_ms = 1;
    pthread_t t[N];
    for (int i = 0; i < N; i++) assert_int_equal(pthread_create(&t[i], NULL, churn_client, &ch), 0);
    static const double ps[] = {0.1, 0.5, 1.0};
    for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
        assert_ok(noodle_mock_fail_probability("t_recover", NOODLE_MOCK_OP_CONNECT, ps[k],
                                               NOODLE_E_CONNECT_FAILED, &err),
                  &err);
        for (int i = 0; i < 8; i++) { /* force reconnects */
            noodle_test_sleep_ms(50);
            assert_ok(noodle_mock_node_kill_connections("t_recover", &err), &err);
        }
    }
    noodle_test_sleep_ms(300); /* a full outage: backoff grows to its maximum */
    atomic_store(&ch.stop, 1);
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    noodle_test_assert_no_thread_failure();
    assert_true(atomic_load(&ch.timeouts) > 0); /* the outage was felt */

    /* faults stop: full capacity within one (maximum) backoff period plus
     * connect time, with generous slack for a loaded machine */
    assert_ok(noodle_mock_fail_probability("t_recover", NOODLE_MOCK_OP_CONNECT, 0,
                                           NOODLE_E_CONNECT_FAILED, &err),
              &err);
    int64_t t_clear = noodle_test_now_ms();
    noodle_conn *c[N];
    for (int i = 0; i < N; i++) {
        int rc = noodle_pool_acquire_until(pool, noodle_deadline_after(NULL, NOODLE_SEC(5)), &c[i], &err);
        assert_ok(rc, &err);
        sql_ok(c[i], "SELECT 1");
    }
    int64_t recovered = noodle_test_now_ms() - t_clear;
    if (recovered > 200 + 800)
        fail_msg("full capacity only %" PRId64 " ms after faults stopped (backoff max 200 ms)",
                 recovered);
    for (int i = 0; i < N; i++) noodle_pool_release(pool, &c[i]);

    noodle_pool_metrics m = metrics_of(pool);
    noodle_mock_stats st = noodle_test_node_stats("t_recover");
    assert_true(m.connect_failures > 0);
    assert_int_equal(m.connect_failures, (uint64_t)st.failures[NOODLE_MOCK_OP_CONNECT]);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_CONNECT_FAILED, -1), m.connect_failures);
    rec_event ev;
    assert_true(nth_event(rec, NOODLE_POOL_EV_CONNECT_FAILED, -1, 0, &ev));
    assert_int_equal(ev.code, NOODLE_E_CONNECT_FAILED);
    assert_true(ev.has_message && strstr(ev.message, "injected") != NULL);
    assert_true(m.peak_total <= N && st.peak_connections <= N);
    noodle_pool_close(pool);
    recorder_free(rec);
}

static void failed_connects_back_off_exponentially_instead_of_retrying_at_once(void **state) {
    (void)state;
    noodle_error err;
    assert_ok(noodle_mock_fail_probability("t_backoff", NOODLE_MOCK_OP_CONNECT, 1.0,
                                           NOODLE_E_CONNECT_FAILED, &err),
              &err);
    pool_spec s = spec("t_backoff");
    s.max_connections = 2;
    s.timeout_ms = 1000;
    s.backoff_base_ms = 20;
    s.backoff_max_ms = 200;
    noodle_pool *pool = open_pool(&s);
    noodle_conn *c = NULL;
    /* one client waiting through a 1 s outage: delays of 20, 40, 80, 160,
     * 200, ... ms, each jittered down by up to 50 %, allow about 6 to 14
     * attempts (a retry loop without backoff would make thousands) */
    assert_code(noodle_pool_acquire(pool, &c, &err), &err, NOODLE_E_POOL_TIMEOUT);
    int64_t attempts = noodle_test_node_stats("t_backoff").calls[NOODLE_MOCK_OP_CONNECT];
    if (attempts < 4 || attempts > 30)
        fail_msg("%" PRId64 " connect attempts during a 1 s outage (backoff 20..200 ms)", attempts);
    assert_int_equal(metrics_of(pool).connect_failures, (uint64_t)attempts);
    noodle_pool_close(pool);
}

/* Invariant of the header: connections are opened "never while holding the
 * pool lock", by one opener, one at a time. */
static void a_slow_connect_blocks_neither_releases_nor_metrics_and_opens_one_at_a_time(
    void **state) {
    (void)state;
    noodle_error err;
    pool_spec s = spec("t_slow_connect");
    s.max_connections = 4;
    s.timeout_ms = 10000;
    noodle_pool *pool = open_pool(&s);
    noodle_conn *a = acquire_ok(pool), *b = acquire_ok(pool);
    assert_ok(noodle_mock_set_latency("t_slow_connect", NOODLE_MOCK_OP_CONNECT, NOODLE_MS(800), &err),
              &err);
    /* two clients need new connections: the opener starts one connect */
    static waiter w[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) { /* w[0] queues first */
        memset(&w[i], 0, sizeof w[i]);
        w[i].pool = pool;
        w[i].keep = true;
        assert_int_equal(pthread_create(&t[i], NULL, waiter_main, &w[i]), 0);
        WAIT_FOR(metrics_of(pool).waiting == i + 1, 3000);
        assert_int_equal(metrics_of(pool).waiting, i + 1);
    }
    WAIT_FOR(metrics_of(pool).opening == 1, 3000);
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.waiting, 2);
    assert_int_equal(m.opening, 1); /* one at a time */
    /* while it connects: metrics, and a release handed to the first waiter */
    int64_t t0 = noodle_test_now_ms();
    for (int i = 0; i < 10; i++) m = metrics_of(pool);
    assert_in_range(noodle_test_now_ms() - t0, 0, 300);
    t0 = noodle_test_now_ms();
    noodle_pool_release(pool, &b);
    WAIT_FOR(atomic_load(&w[0].done), 3000);
    assert_true(atomic_load(&w[0].done));
    assert_ok(w[0].rc, &w[0].err);
    assert_in_range(noodle_test_now_ms() - t0, 0, 400); /* not after the 800 ms connect */
    assert_true(metrics_of(pool).opening <= 1);
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    assert_ok(w[1].rc, &w[1].err);
    noodle_test_assert_no_thread_failure();
    noodle_pool_release(pool, &a);
    noodle_pool_release(pool, &w[0].conn);
    noodle_pool_release(pool, &w[1].conn);
    noodle_pool_close(pool);
}

static void a_timeout_during_an_outage_mentions_the_last_connect_error(void **state) {
    (void)state;
    noodle_error err;
    assert_ok(noodle_mock_node_create("t_outage", &err), &err);
    assert_ok(noodle_mock_node_crash("t_outage", &err), &err);
    pool_spec s = spec("t_outage");
    s.max_connections = 2;
    s.timeout_ms = 300;
    noodle_pool *pool = open_pool(&s);
    noodle_conn *c = NULL;
    int64_t t0 = noodle_test_now_ms();
    int rc = noodle_pool_acquire(pool, &c, &err);
    assert_code(rc, &err, NOODLE_E_POOL_TIMEOUT);
    assert_in_range(noodle_test_now_ms() - t0, 290, 3000);
    if (strstr(err.message, "4001") == NULL && strstr(err.message, "does not accept connections") == NULL)
        fail_msg("2002 during an outage does not mention the last connect error: %s", err.message);
    assert_true(metrics_of(pool).connect_failures > 0);
    /* the node comes back: the pool serves again */
    assert_ok(noodle_mock_node_restart("t_outage", &err), &err);
    assert_ok(noodle_pool_acquire_until(pool, noodle_deadline_after(NULL, NOODLE_SEC(5)), &c, &err), &err);
    sql_ok(c, "SELECT 1");
    noodle_pool_release(pool, &c);
    noodle_pool_close(pool);
}

/* ---- creation options ------------------------------------------------------------------------- */

static void a_pool_finds_its_backend_by_name_and_refuses_options_without_a_configuration(
    void **state) {
    (void)state;
    noodle_error err;
    noodle_config_options o = NOODLE_CONFIG_OPTIONS_INIT;
    o.backend = "mock";
    o.url = "mock://t_by_name";
    o.min_idle = 1;
    noodle_config cfg;
    noodle_test_config_load(&cfg, &o);
    noodle_pool_options po = {.struct_size = sizeof(noodle_pool_options)};
    po.config = &cfg; /* no backend: found by the configuration's name */
    po.warm_up_blocking = true;
    noodle_pool *pool = NULL;
    assert_ok(noodle_pool_open(&po, &pool, &err), &err);
    noodle_config_free(&cfg);
    assert_int_equal(noodle_test_node_sessions("t_by_name"), 1);
    noodle_conn *c = acquire_ok(pool);
    assert_ptr_equal(noodle_conn_backend(c), noodle_mock_backend());
    assert_string_equal(noodle_conn_endpoint(c), "mock://t_by_name");
    noodle_pool_release(pool, &c);
    noodle_pool_close(pool);
    noodle_pool_close(NULL); /* accepted */

    /* without a configuration */
    noodle_pool_options bad = {.struct_size = sizeof(noodle_pool_options)};
    pool = (noodle_pool *)&bad;
    int rc = noodle_pool_open(&bad, &pool, &err);
    if (rc < 2001 || rc > 2099 || err.code != rc) fail_msg("open without a configuration: %d", rc);
    assert_null(pool);
}

/* ---- STD-POOL-WARMUP ---------------------------------------------------------------------------- */

static void blocking_warm_up_opens_min_idle_before_open_returns(void **state) {
    (void)state;
    noodle_error err;
    assert_ok(noodle_mock_set_latency("t_warm", NOODLE_MOCK_OP_CONNECT, NOODLE_MS(20), &err), &err);
    pool_spec s = spec("t_warm");
    s.max_connections = 8;
    s.min_idle = 5;
    s.warm_up_blocking = true;
    noodle_pool *pool = open_pool(&s);
    noodle_pool_metrics m = metrics_of(pool);
    noodle_mock_stats st = noodle_test_node_stats("t_warm");
    assert_int_equal(m.total, 5);
    assert_int_equal(m.idle, 5);
    assert_int_equal(m.opened, 5);
    assert_int_equal(st.open_connections, 5);
    assert_int_equal(st.connects_total, 5);
    /* and kept: nothing more is opened without demand */
    noodle_test_sleep_ms(150);
    assert_int_equal(metrics_of(pool).total, 5);
    assert_int_equal(noodle_test_node_stats("t_warm").connects_total, 5);
    noodle_pool_close(pool);
    assert_int_equal(noodle_test_node_sessions("t_warm"), 0);
}

static void warm_up_without_blocking_opens_min_idle_soon(void **state) {
    (void)state;
    pool_spec s = spec("t_warm_async");
    s.max_connections = 8;
    s.min_idle = 4;
    noodle_pool *pool = open_pool(&s);
    WAIT_FOR(metrics_of(pool).idle == 4 && noodle_test_node_sessions("t_warm_async") == 4, 3000);
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.idle, 4);
    assert_int_equal(m.total, 4);
    assert_int_equal(noodle_test_node_sessions("t_warm_async"), 4);
    noodle_test_sleep_ms(100);
    assert_int_equal(metrics_of(pool).total, 4);
    noodle_pool_close(pool);
}

static void blocking_warm_up_against_a_node_refusing_connects_fails_with_2008(void **state) {
    (void)state;
    noodle_error err;
    assert_ok(noodle_mock_node_create("t_warm_refused", &err), &err);
    assert_ok(noodle_mock_node_crash("t_warm_refused", &err), &err);
    pool_spec s = spec("t_warm_refused");
    s.min_idle = 2;
    s.connect_timeout_ms = 300;
    s.warm_up_blocking = true;
    int threads = noodle_test_thread_count();
    noodle_pool *pool = NULL;
    int64_t t0 = noodle_test_now_ms();
    int rc = try_open_pool(&s, &pool, &err);
    assert_code(rc, &err, NOODLE_E_POOL_WARMUP_FAILED);
    assert_null(pool);
    assert_in_range(noodle_test_now_ms() - t0, 0, 3000);
    assert_int_equal(noodle_test_node_sessions("t_warm_refused"), 0);
    WAIT_FOR(noodle_test_thread_count() == threads, 2000);
    assert_int_equal(noodle_test_thread_count(), threads);
}

static void min_idle_is_restored_after_idle_connections_are_closed(void **state) {
    (void)state;
    pool_spec s = spec("t_keep_min");
    s.max_connections = 6;
    s.min_idle = 3;
    s.warm_up_blocking = true;
    noodle_pool *pool = open_pool(&s);
    assert_int_equal(metrics_of(pool).idle, 3);
    uint64_t gen = noodle_pool_bump_generation(pool); /* closes the idle ones */
    WAIT_FOR(metrics_of(pool).closed[NOODLE_CLOSE_GENERATION] == 3 && metrics_of(pool).idle == 3, 3000);
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.closed[NOODLE_CLOSE_GENERATION], 3);
    assert_int_equal(m.idle, 3);
    assert_int_equal(m.opened, 6);
    assert_int_equal(noodle_test_node_sessions("t_keep_min"), 3);
    noodle_conn *c = acquire_ok(pool);
    assert_int_equal(noodle_conn_generation(c), gen);
    noodle_pool_release(pool, &c);
    noodle_pool_close(pool);
}

/* ---- STD-POOL-IDLE ------------------------------------------------------------------------------- */

static void idle_connections_above_min_idle_are_reaped_after_the_idle_timeout(void **state) {
    (void)state;
    enum { N = 10 };
    pool_spec s = spec("t_reap");
    s.max_connections = N;
    s.min_idle = 2;
    s.idle_timeout_ms = 200;
    s.housekeeping_ms = 20;
    s.warm_up_blocking = true;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    noodle_conn *c[N];
    for (int i = 0; i < N; i++) c[i] = acquire_ok(pool);
    assert_int_equal(metrics_of(pool).total, N);
    int64_t released_at = now_ns();
    int64_t t0 = noodle_test_now_ms();
    for (int i = 0; i < N; i++) noodle_pool_release(pool, &c[i]);
    WAIT_FOR(metrics_of(pool).total == 2, 5000);
    int64_t shrunk_after = noodle_test_now_ms() - t0;
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.total, 2);
    assert_int_equal(m.idle, 2);
    assert_int_equal(m.closed[NOODLE_CLOSE_IDLE], N - 2);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_IDLE), N - 2);
    /* within idle_timeout + one housekeeping interval (+ slack) ... */
    if (shrunk_after > 200 + 20 + 800) fail_msg("shrank to min_idle only after %" PRId64 " ms", shrunk_after);
    /* ... and not before the idle timeout (coarse clock: a few ms early at most) */
    for (size_t k = 0; k < N - 2; k++) {
        rec_event ev;
        assert_true(nth_event(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_IDLE, k, &ev));
        if (ev.time - released_at < NOODLE_MS(200 - 25))
            fail_msg("an idle connection was closed %" PRId64 " ms after release (idle timeout 200 ms)",
                     (ev.time - released_at) / 1000000);
    }
    /* never below min_idle */
    noodle_test_sleep_ms(300);
    m = metrics_of(pool);
    assert_int_equal(m.total, 2);
    assert_int_equal(noodle_test_node_sessions("t_reap"), 2);
    noodle_pool_close(pool);
    recorder_free(rec);
}

static void connections_past_max_lifetime_are_retired_and_replaced_but_never_while_in_use(
    void **state) {
    (void)state;
    pool_spec s = spec("t_lifetime");
    s.max_connections = 5;
    s.min_idle = 3;
    s.max_lifetime_ms = 300;
    s.housekeeping_ms = 10;
    s.warm_up_blocking = true;
    int64_t opening = now_ns();
    noodle_pool *pool = open_pool(&s);
    int64_t opened_at = now_ns();
    recorder *rec = observe(pool);
    WAIT_FOR(count_events(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_LIFETIME) >= 3, 5000);
    assert_true(count_events(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_LIFETIME) >= 3);
    /* the first three are the warm-up connections: retired after 97.5 %..100 %
     * of the lifetime (+ housekeeping and slack) */
    for (size_t k = 0; k < 3; k++) {
        rec_event ev;
        assert_true(nth_event(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_LIFETIME, k, &ev));
        if (ev.time - opening < NOODLE_MS(300) * 975 / 1000 - NOODLE_MS(5))
            fail_msg("retired %" PRId64 " ms after it was opened (lifetime 300 ms)",
                     (ev.time - opening) / 1000000);
        if (ev.time - opened_at > NOODLE_MS(300 + 10 + 700))
            fail_msg("retired only %" PRId64 " ms after open (lifetime 300 ms)",
                     (ev.time - opened_at) / 1000000);
    }
    /* replaced: min_idle is kept */
    WAIT_FOR(metrics_of(pool).idle >= 3, 3000);
    assert_true(metrics_of(pool).idle >= 3);

    /* a connection in use past its lifetime is not closed under its user;
     * it is retired when released */
    noodle_conn *c = acquire_ok(pool);
    rec_event acq;
    size_t nacq = count_events(rec, NOODLE_POOL_EV_ACQUIRED, -1);
    assert_true(nth_event(rec, NOODLE_POOL_EV_ACQUIRED, -1, nacq - 1, &acq));
    int64_t acquired_at = now_ns();
    noodle_test_sleep_ms(450);
    sql_ok(c, "SELECT 1");
    size_t n = 0;
    rec_event *evs = events_snapshot(rec, &n);
    for (size_t i = 0; i < n; i++)
        if (evs[i].type == NOODLE_POOL_EV_CLOSED && evs[i].slot == acq.slot && evs[i].time > acquired_at)
            fail_msg("the connection in use (slot %d) was closed while in use (%s)", acq.slot,
                     noodle_close_reason_name(evs[i].reason));
    free(evs);
    int64_t released_at = now_ns();
    noodle_pool_release(pool, &c);
    bool retired = false;
    evs = events_snapshot(rec, &n);
    for (size_t i = 0; i < n; i++)
        if (evs[i].type == NOODLE_POOL_EV_CLOSED && evs[i].slot == acq.slot && evs[i].time >= released_at - NOODLE_MS(5) &&
            evs[i].reason == NOODLE_CLOSE_LIFETIME)
            retired = true;
    free(evs);
    if (!retired) fail_msg("a connection released past its lifetime was not retired on release");
    assert_true(metrics_of(pool).peak_total <= 5);
    noodle_pool_close(pool);
    recorder_free(rec);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void lifetime_retirement_is_jittered_so_connections_created_together_close_apart(
    void **state) {
    (void)state;
    /* 20 connections created within a few ms; lifetime 4 s, so the jitter
     * (up to 2.5 %) spreads their retirement over up to 100 ms; the
     * housekeeper looks every 5 ms. Without jitter they would all go within a
     * few ms of each other. */
    enum { N = 20 };
    const int64_t lifetime = 4000;
    pool_spec s = spec("t_jitter");
    s.max_connections = N;
    s.min_idle = N;
    s.max_lifetime_ms = lifetime;
    s.housekeeping_ms = 5;
    s.warm_up_blocking = true;
    int64_t t_start = now_ns();
    noodle_pool *pool = open_pool(&s);
    int64_t t_warm = now_ns();
    recorder *rec = observe(pool);
    assert_int_equal(metrics_of(pool).total, N);
    WAIT_FOR(count_events(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_LIFETIME) >= N, 10000);
    assert_true(count_events(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_LIFETIME) >= N);
    int64_t t[N];
    for (size_t k = 0; k < N; k++) {
        rec_event ev;
        assert_true(nth_event(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_LIFETIME, k, &ev));
        t[k] = ev.time;
    }
    qsort(t, N, sizeof t[0], cmp_i64);
    int64_t spread_ms = (t[N - 1] - t[0]) / 1000000;
    if ((t[0] - t_start) < NOODLE_MS(lifetime) * 975 / 1000 - NOODLE_MS(10))
        fail_msg("retired %" PRId64 " ms after creation, before 97.5 %% of the lifetime",
                 (t[0] - t_start) / 1000000);
    if ((t[N - 1] - t_warm) > NOODLE_MS(lifetime + 1000))
        fail_msg("retired %" PRId64 " ms after creation (lifetime %" PRId64 " ms)",
                 (t[N - 1] - t_warm) / 1000000, lifetime);
    if (spread_ms < 20)
        fail_msg("20 connections created together were retired within %" PRId64
                 " ms of each other (created within %" PRId64 " ms; jitter up to 100 ms expected)",
                 spread_ms, (t_warm - t_start) / 1000000);
    /* replaced */
    WAIT_FOR(metrics_of(pool).total == N, 3000);
    assert_int_equal(metrics_of(pool).total, N);
    assert_true(metrics_of(pool).peak_total <= N);
    assert_true(noodle_test_node_stats("t_jitter").peak_connections <= N);
    noodle_pool_close(pool);
    recorder_free(rec);
}

/* ---- STD-POOL-RESIZE --------------------------------------------------------------------------- */

static void resizing_under_load_fails_no_acquire_and_the_size_converges(void **state) {
    (void)state;
    enum { CLIENTS = 8 };
    pool_spec s = spec("t_resize");
    s.capacity = 20;
    s.max_connections = 10;
    s.min_idle = 2;
    s.timeout_ms = 10000;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    noodle_error err;
    assert_ok(noodle_mock_set_latency("t_resize", NOODLE_MOCK_OP_EXECUTE, NOODLE_MS(1), &err), &err);
    static churn ch;
    memset(&ch, 0, sizeof ch);
    ch.pool = pool;
    ch.hold_ms = 1;
    pthread_t t[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) assert_int_equal(pthread_create(&t[i], NULL, churn_client, &ch), 0);
    static const int64_t sizes[][2] = {{0, 20}, {1, 3}, {4, 16}, {0, 1}, {2, 12}, {3, 4}, {2, 5}};
    size_t nsizes = sizeof sizes / sizeof sizes[0];
    for (size_t i = 0; i < nsizes; i++) {
        noodle_test_sleep_ms(150);
        assert_ok(noodle_pool_resize(pool, sizes[i][0], sizes[i][1], &err), &err);
        noodle_pool_metrics m = metrics_of(pool);
        assert_int_equal(m.min_idle, sizes[i][0]);
        assert_int_equal(m.max_connections, sizes[i][1]);
    }
    noodle_test_sleep_ms(150);
    atomic_store(&ch.stop, 1);
    for (int i = 0; i < CLIENTS; i++) pthread_join(t[i], NULL);
    noodle_test_assert_no_thread_failure();
    assert_int_equal(atomic_load(&ch.timeouts), 0);
    assert_int_equal(atomic_load(&ch.query_failures), 0);
    assert_true(atomic_load(&ch.ok) > 50);
    /* converges to the last size */
    WAIT_FOR(metrics_of(pool).total <= 5 && metrics_of(pool).total >= 2 &&
                 noodle_test_node_sessions("t_resize") == metrics_of(pool).total,
             3000);
    noodle_pool_metrics m = metrics_of(pool);
    assert_in_range(m.total, 2, 5);
    assert_int_equal(m.active, 0);
    assert_int_equal(noodle_test_node_sessions("t_resize"), m.total);
    assert_true(m.peak_total <= 20);
    assert_true(noodle_test_node_stats("t_resize").peak_connections <= 20);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_RESIZED, -1), nsizes);
    noodle_pool_close(pool);
    recorder_free(rec);
}

static void shrinking_closes_idle_connections_above_the_new_maximum_at_once_and_busy_ones_on_release(
    void **state) {
    (void)state;
    enum { N = 10 };
    pool_spec s = spec("t_shrink");
    s.max_connections = N;
    s.housekeeping_ms = 1000; /* "at once" cannot be the housekeeper's doing */
    noodle_pool *pool = open_pool(&s);
    noodle_conn *c[N];
    for (int i = 0; i < N; i++) c[i] = acquire_ok(pool);
    for (int i = 4; i < N; i++) noodle_pool_release(pool, &c[i]); /* 6 idle, 4 in use */
    noodle_error err;
    assert_ok(noodle_pool_resize(pool, 0, 3, &err), &err);
    WAIT_FOR(metrics_of(pool).total == 4, 500);
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.total, 4);
    assert_int_equal(m.idle, 0);
    assert_int_equal(m.closed[NOODLE_CLOSE_RESIZE], 6);
    /* busy ones keep working; the first release brings the pool to its size */
    sql_ok(c[0], "SELECT 1");
    noodle_pool_release(pool, &c[0]);
    m = metrics_of(pool);
    assert_int_equal(m.total, 3);
    assert_int_equal(m.closed[NOODLE_CLOSE_RESIZE], 7);
    for (int i = 1; i < 4; i++) noodle_pool_release(pool, &c[i]);
    m = metrics_of(pool);
    assert_int_equal(m.total, 3);
    assert_int_equal(m.idle, 3);
    assert_int_equal(m.closed[NOODLE_CLOSE_RESIZE], 7);
    assert_int_equal(noodle_test_node_sessions("t_shrink"), 3);
    /* and it never opens more than the new maximum */
    for (int i = 0; i < 3; i++) c[i] = acquire_ok(pool);
    noodle_conn *x = NULL;
    assert_code(noodle_pool_acquire_until(pool, noodle_deadline_after(NULL, NOODLE_MS(100)), &x, &err), &err,
                NOODLE_E_POOL_TIMEOUT);
    for (int i = 0; i < 3; i++) noodle_pool_release(pool, &c[i]);
    noodle_pool_close(pool);
}

static void invalid_sizes_are_refused_with_2004(void **state) {
    (void)state;
    pool_spec s = spec("t_bad_size");
    s.capacity = 10;
    s.max_connections = 5;
    s.min_idle = 1;
    noodle_pool *pool = open_pool(&s);
    noodle_error err;
    static const int64_t bad[][2] = {{-1, 5}, {6, 5}, {0, 11}, {0, -1}, {11, 11}, {INT64_MIN, 3}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = noodle_pool_resize(pool, bad[i][0], bad[i][1], &err);
        if (rc != NOODLE_E_POOL_INVALID_SIZE || err.code != rc)
            fail_msg("resize(%" PRId64 ", %" PRId64 ") returned %d, expected 2004", bad[i][0],
                     bad[i][1], rc);
        noodle_pool_metrics m = metrics_of(pool);
        assert_int_equal(m.min_idle, 1);
        assert_int_equal(m.max_connections, 5);
        assert_int_equal(m.capacity, 10);
    }
    /* the bounds themselves are fine */
    assert_ok(noodle_pool_resize(pool, 10, 10, &err), &err);
    assert_ok(noodle_pool_resize(pool, 0, 10, &err), &err);
    assert_ok(noodle_pool_resize(pool, 3, 3, &err), &err);
    noodle_pool_close(pool);
}

/* ---- STD-POOL-LEAK ----------------------------------------------------------------------------- */

static void a_connection_held_past_the_leak_threshold_is_reported_with_its_acquire_site(
    void **state) {
    (void)state;
    pool_spec s = spec("t_leak");
    s.max_connections = 3;
    s.leak_threshold_ms = 100;
    s.housekeeping_ms = 20;
    s.timeout_ms = 2000;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    noodle_error err;
    noodle_conn *leaked = NULL;
    const int line = __LINE__; int rc = noodle_pool_acquire(pool, &leaked, &err);
    assert_ok(rc, &err);
    /* others keep being served meanwhile */
    static churn ch;
    memset(&ch, 0, sizeof ch);
    ch.pool = pool;
    ch.hold_ms = 2;
    pthread_t t[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, churn_client, &ch), 0);
    WAIT_FOR(count_events(rec, NOODLE_POOL_EV_LEAK_SUSPECTED, -1) >= 1, 3000);
    noodle_test_sleep_ms(50);
    atomic_store(&ch.stop, 1);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    noodle_test_assert_no_thread_failure();
    assert_int_equal(atomic_load(&ch.timeouts), 0);
    assert_true(atomic_load(&ch.ok) > 5);

    assert_true(count_events(rec, NOODLE_POOL_EV_LEAK_SUSPECTED, -1) >= 1);
    size_t n = 0;
    rec_event *evs = events_snapshot(rec, &n);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        if (evs[i].type != NOODLE_POOL_EV_LEAK_SUSPECTED) continue;
        /* only the leaked one is held that long (the others hold 2 ms) */
        if (strstr(evs[i].file, "test_pool.c") == NULL || evs[i].line != line)
            fail_msg("leak reported at %s:%d, expected test_pool.c:%d", evs[i].file, evs[i].line, line);
        if (evs[i].held_us < 100000) fail_msg("leak reported after %" PRId64 " us", evs[i].held_us);
        found = true;
    }
    free(evs);
    assert_true(found);
    assert_true(metrics_of(pool).leaks_suspected >= 1);
    sql_ok(leaked, "SELECT 1"); /* a suspected leak is reported, not taken away */
    noodle_pool_release(pool, &leaked);
    noodle_pool_close(pool);
    recorder_free(rec);
}

/* ---- STD-POOL-METRICS ---------------------------------------------------------------------------- */

static void metrics_are_consistent_at_quiescence(void **state) {
    (void)state;
    enum { CLIENTS = 6 };
    noodle_error err;
    pool_spec s = spec("t_metrics");
    s.max_connections = 4;
    s.min_idle = 1;
    s.timeout_ms = 10000;
    s.validation_bypass_ms = 5;
    s.idle_timeout_ms = 100;
    noodle_pool *pool = open_pool(&s);
    static churn ch;
    memset(&ch, 0, sizeof ch);
    ch.pool = pool;
    ch.hold_ms = 1;
    pthread_t t[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) assert_int_equal(pthread_create(&t[i], NULL, churn_client, &ch), 0);
    for (int i = 0; i < 5; i++) {
        noodle_test_sleep_ms(80);
        assert_ok(noodle_mock_node_kill_connections("t_metrics", &err), &err);
    }
    noodle_test_sleep_ms(50);
    atomic_store(&ch.stop, 1);
    for (int i = 0; i < CLIENTS; i++) pthread_join(t[i], NULL);
    noodle_test_assert_no_thread_failure();
    assert_int_equal(atomic_load(&ch.timeouts), 0);
    /* quiescent: nothing in use, waiting or opening; wait out the reaper's
     * work on the connections above min_idle */
    WAIT_FOR(metrics_of(pool).opening == 0 && metrics_of(pool).total == 1, 3000);
    noodle_test_sleep_ms(50);
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.active, 0);
    assert_int_equal(m.waiting, 0);
    assert_int_equal(m.opening, 0);
    assert_int_equal(m.total, m.active + m.idle);
    uint64_t sum = 0;
    for (int r = 0; r < NOODLE_CLOSE_REASONS; r++) sum += m.closed[r];
    assert_int_equal(m.closed_total, sum);
    assert_int_equal(m.opened, m.closed_total + (uint64_t)m.total);
    assert_int_equal(m.acquired, (uint64_t)atomic_load(&ch.ok));
    assert_int_equal(m.acquire_wait.count, m.acquired);
    assert_int_equal(m.hold_time.count, m.acquired);
    uint64_t bw = 0, bh = 0;
    for (size_t i = 0; i < NOODLE_HISTOGRAM_BUCKETS; i++) {
        bw += m.acquire_wait.buckets[i];
        bh += m.hold_time.buckets[i];
    }
    assert_int_equal(bw, m.acquire_wait.count);
    assert_int_equal(bh, m.hold_time.count);
    assert_true(m.hold_time.max_us >= 1000); /* each held >= 1 ms (coarse clock: allow equality) */
    assert_int_equal(m.max_connections, 4);
    assert_int_equal(m.min_idle, 1);
    assert_int_equal(m.capacity, 4);
    assert_true(m.coarse_resolution_ns > 0);
    assert_int_equal(m.timeouts, 0);
    /* the server agrees */
    noodle_mock_stats st = noodle_test_node_stats("t_metrics");
    assert_int_equal(st.open_connections, m.total);
    assert_int_equal((uint64_t)st.connects_total, m.opened);
    assert_true(m.closed[NOODLE_CLOSE_VALIDATION] + m.closed[NOODLE_CLOSE_BROKEN] > 0);
    assert_int_equal(m.validation_failures, m.closed[NOODLE_CLOSE_VALIDATION]);
    noodle_pool_close(pool);
    assert_int_equal(noodle_test_node_sessions("t_metrics"), 0);
}

typedef struct timed_waiter_arg {
    noodle_pool *pool;
    int64_t elapsed_us;
    int rc;
} timed_waiter_arg;

static void *timed_waiter(void *arg) {
    timed_waiter_arg *a = arg;
    noodle_conn *c = NULL;
    noodle_error err;
    int64_t t0 = now_ns();
    a->rc = noodle_pool_acquire(a->pool, &c, &err);
    a->elapsed_us = (now_ns() - t0) / 1000;
    if (a->rc == 0) noodle_pool_release(a->pool, &c);
    return NULL;
}

static void hold_times_and_acquire_waits_are_measured(void **state) {
    (void)state;
    pool_spec s = spec("t_measure");
    s.max_connections = 1;
    s.precise_hold_times = true;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    noodle_conn *c = acquire_ok(pool);
    noodle_test_sleep_ms(60);
    noodle_pool_release(pool, &c);
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.hold_time.count, 1);
    assert_true(m.hold_time.max_us >= 60000 && m.hold_time.max_us < 2000000);
    assert_true(m.hold_time.sum_us >= 60000);
    assert_int_equal(m.acquire_wait.count, 1);

    /* a waiter that waited ~100 ms */
    c = acquire_ok(pool);
    static timed_waiter_arg w;
    memset(&w, 0, sizeof w);
    w.pool = pool;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, timed_waiter, &w), 0);
    WAIT_FOR(metrics_of(pool).waiting == 1, 3000);
    noodle_test_sleep_ms(100);
    noodle_pool_release(pool, &c);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, 0);
    m = metrics_of(pool);
    assert_int_equal(m.acquire_wait.count, 3);
    assert_true(m.acquire_wait.max_us >= 95000);
    /* (the max also covers the first acquire, which may wait for the first
     * connect on a loaded machine: the waiter's own wait is checked exactly
     * through its ACQUIRED event below) */
    assert_true(noodle_histogram_quantile(&m.acquire_wait, 1.0) >= 95000);
    rec_event ev;
    size_t nacq = count_events(rec, NOODLE_POOL_EV_ACQUIRED, -1);
    assert_true(nth_event(rec, NOODLE_POOL_EV_ACQUIRED, -1, nacq - 1, &ev));
    assert_true(ev.wait_us >= 95000 && ev.wait_us <= w.elapsed_us + 10000);
    assert_true(nth_event(rec, NOODLE_POOL_EV_RELEASED, -1, 0, &ev));
    assert_true(ev.held_us >= 60000);
    noodle_pool_close(pool);
    recorder_free(rec);
}

static void histogram_buckets_have_monotone_floors_and_each_value_falls_in_its_bucket(
    void **state) {
    (void)state;
    const size_t N = NOODLE_HISTOGRAM_BUCKETS;
    /* buckets 0-3 hold exactly 0, 1, 2 and 3 us */
    for (uint64_t v = 0; v < 4; v++) {
        assert_int_equal(noodle_histogram_bucket_floor(v), v);
        assert_int_equal(noodle_histogram_bucket_of(v), v);
    }
    for (size_t i = 1; i < N; i++) {
        uint64_t a = noodle_histogram_bucket_floor(i - 1), b = noodle_histogram_bucket_floor(i);
        if (b < a) fail_msg("floor(%zu) = %" PRIu64 " < floor(%zu) = %" PRIu64, i, b, i - 1, a);
        /* past the smallest powers, sub-buckets are whole microseconds apart */
        if (a >= 4 && b <= a) fail_msg("floor(%zu) = floor(%zu) = %" PRIu64, i, i - 1, a);
    }
    /* each power of two starts a bucket; the last one starts at 2^39 * 1.75 */
    assert_int_equal(noodle_histogram_bucket_floor(N - 4), (uint64_t)1 << 39);
    assert_int_equal(noodle_histogram_bucket_floor(N - 1), ((uint64_t)1 << 39) + ((uint64_t)3 << 37));

    /* a value falls in the bucket whose floor <= value < next floor */
    uint64_t values[4000];
    size_t nv = 0;
    for (uint64_t v = 0; v < 2000; v++) values[nv++] = v;
    for (int p = 1; p < 64; p++) {
        uint64_t x = (uint64_t)1 << p;
        values[nv++] = x - 1;
        values[nv++] = x;
        values[nv++] = x + 1;
        values[nv++] = x + x / 3;
    }
    values[nv++] = UINT64_MAX;
    size_t prev = 0;
    for (size_t k = 0; k < nv; k++) {
        uint64_t v = values[k];
        size_t b = noodle_histogram_bucket_of(v);
        if (b >= N) fail_msg("bucket_of(%" PRIu64 ") = %zu, out of range", v, b);
        uint64_t lo = noodle_histogram_bucket_floor(b);
        if (lo > v) fail_msg("bucket_of(%" PRIu64 ") = %zu whose floor is %" PRIu64, v, b, lo);
        if (b + 1 < N) {
            uint64_t hi = noodle_histogram_bucket_floor(b + 1);
            if (v >= hi && hi != lo)
                fail_msg("bucket_of(%" PRIu64 ") = %zu but the next floor is %" PRIu64, v, b, hi);
        }
        if (k > 0 && v > values[k - 1] && b < prev)
            fail_msg("bucket_of is not monotone at %" PRIu64, v);
        prev = b;
    }
    assert_int_equal(noodle_histogram_bucket_of(0), 0);
    assert_int_equal(noodle_histogram_bucket_of(UINT64_MAX), N - 1);
    assert_int_equal(noodle_histogram_bucket_of((uint64_t)1 << 40), N - 1);
}

static void histogram_quantiles_of_a_known_distribution(void **state) {
    (void)state;
    static noodle_histogram h;
    memset(&h, 0, sizeof h);
    assert_int_equal(noodle_histogram_quantile(&h, 0.5), 0); /* empty */
    /* 1..10000 us, each once */
    for (uint64_t v = 1; v <= 10000; v++) {
        h.buckets[noodle_histogram_bucket_of(v)]++;
        h.count++;
        h.sum_us += v;
        if (v > h.max_us) h.max_us = v;
    }
    static const double qs[] = {0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99};
    uint64_t last = 0;
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        uint64_t exact = (uint64_t)(qs[i] * 10000);
        uint64_t got = noodle_histogram_quantile(&h, qs[i]);
        /* the upper bound of the bucket holding the exact value: at least
         * the value, at most a quarter of a power of two above it */
        if (got < exact || got > exact + exact / 2 + 1)
            fail_msg("quantile(%.2f) = %" PRIu64 ", exact %" PRIu64, qs[i], got, exact);
        if (got < last) fail_msg("quantile is not monotone in q at %.2f", qs[i]);
        last = got;
    }
    assert_int_equal(noodle_histogram_quantile(&h, 1.0), 10000); /* at most max */
    assert_true(noodle_histogram_quantile(&h, 0.0) <= 2);
    /* all zero */
    memset(&h, 0, sizeof h);
    h.buckets[0] = 5;
    h.count = 5;
    assert_int_equal(noodle_histogram_quantile(&h, 0.5), 0);
    assert_int_equal(noodle_histogram_quantile(&h, 1.0), 0);
}

/* ---- events -------------------------------------------------------------------------------------- */

static void observers_see_every_kind_of_event(void **state) {
    (void)state;
    noodle_error err;
    pool_spec s = spec("t_events");
    s.max_connections = 1;
    s.capacity = 2;
    s.validation_bypass_ms = 10;
    s.backoff_base_ms = 10;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    recorder *rec2 = observe(pool); /* several observers see the same events */
    /* at most 8 observers */
    recorder *more[6];
    for (int i = 0; i < 6; i++) more[i] = observe(pool);
    int rc = noodle_pool_observe(pool, record_event, rec, &err);
    if (rc < 2001 || rc > 2099 || err.code != rc) fail_msg("a 9th observer: rc %d (expected a 2xxx code)", rc);

    /* opened, acquired, released */
    const int line = __LINE__; noodle_conn *c = NULL; rc = noodle_pool_acquire(pool, &c, &err);
    assert_ok(rc, &err);
    sql_ok(c, "SELECT 1");
    noodle_pool_release(pool, &c);
    /* timed_out */
    c = acquire_ok(pool);
    noodle_conn *x = NULL;
    assert_code(noodle_pool_acquire_until(pool, noodle_deadline_after(NULL, NOODLE_MS(50)), &x, &err), &err,
                NOODLE_E_POOL_TIMEOUT);
    noodle_pool_release(pool, &c);
    /* validation_failed + closed(validation), then connect_failed */
    noodle_test_sleep_ms(40);
    assert_ok(noodle_mock_node_kill_connections("t_events", &err), &err);
    assert_ok(noodle_mock_fail_next("t_events", NOODLE_MOCK_OP_CONNECT, 1, NOODLE_E_CONNECT_FAILED, &err), &err);
    assert_ok(noodle_pool_acquire_until(pool, noodle_deadline_after(NULL, NOODLE_SEC(5)), &c, &err), &err);
    sql_ok(c, "SELECT 1");
    noodle_pool_release(pool, &c);
    /* resized */
    assert_ok(noodle_pool_resize(pool, 0, 2, &err), &err);
    /* generation: the idle connection is closed */
    uint64_t gen = noodle_pool_bump_generation(pool);
    WAIT_FOR(count_events(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_GENERATION) == 1, 2000);
    /* shutdown */
    c = acquire_ok(pool);
    noodle_pool_release(pool, &c);
    assert_ok(noodle_pool_shutdown(pool, noodle_deadline_after(NULL, NOODLE_SEC(5)), &err), &err);

    /* once the pool is closed (its threads joined) every connection opened,
     * closed and acquired has been announced */
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.total, 0);
    noodle_pool_close(pool);
    pool = NULL;
    struct {
        noodle_pool_event_type type;
        int reason;
        size_t at_least;
    } want[] = {
        {NOODLE_POOL_EV_OPENED, -1, 3},
        {NOODLE_POOL_EV_ACQUIRED, -1, 4},
        {NOODLE_POOL_EV_RELEASED, -1, 4},
        {NOODLE_POOL_EV_TIMED_OUT, -1, 1},
        {NOODLE_POOL_EV_VALIDATION_FAILED, -1, 1},
        {NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_VALIDATION, 1},
        {NOODLE_POOL_EV_CONNECT_FAILED, -1, 1},
        {NOODLE_POOL_EV_RESIZED, -1, 1},
        {NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_GENERATION, 1},
        {NOODLE_POOL_EV_SHUTDOWN, -1, 1},
        {NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_SHUTDOWN, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        size_t n = count_events(rec, want[i].type, want[i].reason);
        if (n < want[i].at_least)
            fail_msg("%zu %s events (reason %d), expected at least %zu", n,
                     noodle_pool_event_name(want[i].type), want[i].reason, want[i].at_least);
        assert_int_equal(count_events(rec2, want[i].type, want[i].reason), n);
    }
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_OPENED, -1), m.opened);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_CLOSED, -1), m.closed_total);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_ACQUIRED, -1), m.acquired);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_TIMED_OUT, -1), m.timeouts);
    /* not promised by pool.h, but worth knowing */
    char why[256];
    if (event_order_violation(rec, why, sizeof why) != NULL)
        fprintf(stderr, "note: a connection's events reached observers out of order: %s\n", why);
    rec_event ev;
    assert_true(nth_event(rec, NOODLE_POOL_EV_ACQUIRED, -1, 0, &ev));
    assert_non_null(strstr(ev.file, "test_pool.c"));
    assert_int_equal(ev.line, line);
    assert_true(ev.slot >= 0);
    assert_true(ev.wait_us >= 0);
    assert_true(nth_event(rec, NOODLE_POOL_EV_TIMED_OUT, -1, 0, &ev));
    assert_int_equal(ev.code, NOODLE_E_POOL_TIMEOUT);
    assert_true(nth_event(rec, NOODLE_POOL_EV_VALIDATION_FAILED, -1, 0, &ev));
    assert_true(ev.code >= 4001 && ev.code <= 4999);
    assert_true(nth_event(rec, NOODLE_POOL_EV_CONNECT_FAILED, -1, 0, &ev));
    assert_int_equal(ev.code, NOODLE_E_CONNECT_FAILED);
    assert_true(ev.has_message);
    assert_true(nth_event(rec, NOODLE_POOL_EV_CLOSED, NOODLE_CLOSE_GENERATION, 0, &ev));
    assert_true(ev.generation < gen);
    assert_true(nth_event(rec, NOODLE_POOL_EV_SHUTDOWN, -1, 0, &ev));
    assert_int_equal(ev.slot, -1);
    /* events carry the pool's clock, in order on one thread */
    size_t n = 0;
    rec_event *evs = events_snapshot(rec, &n);
    for (size_t i = 0; i < n; i++) assert_true(evs[i].time > 0);
    free(evs);

    /* names */
    assert_string_equal(noodle_pool_event_name(NOODLE_POOL_EV_OPENED), "opened");
    assert_string_equal(noodle_close_reason_name(NOODLE_CLOSE_IDLE), "idle");
    for (int a = NOODLE_POOL_EV_OPENED; a <= NOODLE_POOL_EV_SHUTDOWN; a++) {
        const char *na = noodle_pool_event_name((noodle_pool_event_type)a);
        assert_non_null(na);
        assert_true(na[0] != '\0');
        for (int b = a + 1; b <= NOODLE_POOL_EV_SHUTDOWN; b++)
            assert_string_not_equal(na, noodle_pool_event_name((noodle_pool_event_type)b));
    }
    for (int a = 0; a < NOODLE_CLOSE_REASONS; a++) {
        const char *na = noodle_close_reason_name((noodle_close_reason)a);
        assert_non_null(na);
        assert_true(na[0] != '\0');
        for (int b = a + 1; b < NOODLE_CLOSE_REASONS; b++)
            assert_string_not_equal(na, noodle_close_reason_name((noodle_close_reason)b));
    }
    recorder_free(rec);
    recorder_free(rec2);
    for (int i = 0; i < 6; i++) recorder_free(more[i]);
}

/* ---- generations ---------------------------------------------------------------------------------- */

static void bump_generation_closes_idle_connections_at_once_and_busy_ones_on_release(
    void **state) {
    (void)state;
    pool_spec s = spec("t_generation");
    s.max_connections = 5;
    s.housekeeping_ms = 1000;
    noodle_pool *pool = open_pool(&s);
    noodle_conn *c[4];
    for (int i = 0; i < 4; i++) c[i] = acquire_ok(pool);
    uint64_t old_gen = metrics_of(pool).generation;
    assert_int_equal(noodle_conn_generation(c[0]), old_gen);
    noodle_pool_release(pool, &c[2]);
    noodle_pool_release(pool, &c[3]); /* 2 idle, 2 in use */
    uint64_t gen = noodle_pool_bump_generation(pool);
    assert_true(gen > old_gen);
    assert_int_equal(metrics_of(pool).generation, gen);
    WAIT_FOR(metrics_of(pool).closed[NOODLE_CLOSE_GENERATION] == 2, 500);
    noodle_pool_metrics m = metrics_of(pool);
    assert_int_equal(m.closed[NOODLE_CLOSE_GENERATION], 2);
    assert_int_equal(m.total, 2);
    /* in use: untouched until released, then closed */
    sql_ok(c[0], "SELECT 1");
    noodle_pool_release(pool, &c[0]);
    assert_int_equal(metrics_of(pool).closed[NOODLE_CLOSE_GENERATION], 3);
    noodle_pool_release(pool, &c[1]);
    m = metrics_of(pool);
    assert_int_equal(m.closed[NOODLE_CLOSE_GENERATION], 4);
    assert_int_equal(m.total, 0);
    assert_int_equal(noodle_test_node_sessions("t_generation"), 0);
    /* new connections belong to the new generation */
    noodle_conn *d = acquire_ok(pool);
    assert_int_equal(noodle_conn_generation(d), gen);
    sql_ok(d, "SELECT 1");
    noodle_pool_release(pool, &d);
    assert_int_equal(metrics_of(pool).total, 1);
    assert_int_equal(metrics_of(pool).closed[NOODLE_CLOSE_GENERATION], 4);
    noodle_pool_close(pool);
}

/* ---- fail points ----------------------------------------------------------------------------------- */

static atomic_int thread_starts, thread_start_fail_at;

static int fail_nth_thread_start(const char *name, int *failnum, void **failinfo, unsigned int *flags) {
    (void)name;
    (void)failnum;
    (void)failinfo;
    (void)flags;
    return atomic_fetch_add(&thread_starts, 1) + 1 == atomic_load(&thread_start_fail_at);
}

static void a_failing_thread_start_fails_open_with_2006_and_leaks_nothing(void **state) {
    (void)state;
    assert_true(noodle_fail_points_compiled_in());
    assert_non_null(noodle_fail_point_find("pool/thread_start"));
    int threads = noodle_test_thread_count();
    assert_true(threads > 0);
    int failures = 0;
    /* fail the 1st, 2nd, ... thread start, until opening no longer starts
     * that many threads */
    for (int nth = 1; nth <= 4; nth++) {
        char node[32];
        snprintf(node, sizeof node, "t_thread_start_%d", nth);
        pool_spec s = spec(node);
        s.min_idle = 2;
        atomic_store(&thread_starts, 0);
        atomic_store(&thread_start_fail_at, nth);
        assert_int_equal(fiu_enable_external("pool/thread_start", 1, NULL, 0, fail_nth_thread_start), 0);
        noodle_pool *pool = NULL;
        noodle_error err;
        int rc = try_open_pool(&s, &pool, &err);
        assert_int_equal(fiu_disable("pool/thread_start"), 0);
        if (atomic_load(&thread_starts) < nth) { /* fewer threads than nth: it opened */
            assert_ok(rc, &err);
            noodle_pool_close(pool);
            break;
        }
        failures++;
        assert_code(rc, &err, NOODLE_E_POOL_THREAD_START);
        assert_null(pool);
        /* no thread and no connection left behind (ASan checks the memory) */
        WAIT_FOR(noodle_test_thread_count() == threads && noodle_test_node_sessions(node) == 0,
                 2000);
        assert_int_equal(noodle_test_thread_count(), threads);
        assert_int_equal(noodle_test_node_sessions(node), 0);
    }
    assert_true(failures >= 1);
    /* the plain point, with its default code */
    assert_int_equal(fiu_enable("pool/thread_start", 1, NULL, 0), 0);
    pool_spec s = spec("t_thread_start");
    noodle_pool *pool = NULL;
    noodle_error err;
    int rc = try_open_pool(&s, &pool, &err);
    assert_int_equal(fiu_disable("pool/thread_start"), 0);
    assert_code(rc, &err, NOODLE_E_POOL_THREAD_START);
    assert_null(pool);
    WAIT_FOR(noodle_test_thread_count() == threads, 2000);
    assert_int_equal(noodle_test_thread_count(), threads);
    /* and without the fault, it opens */
    pool = open_pool(&s);
    noodle_conn *c = acquire_ok(pool);
    noodle_pool_release(pool, &c);
    noodle_pool_close(pool);
}

static void a_failing_connect_fail_point_gives_coded_errors_and_the_pool_recovers(void **state) {
    (void)state;
    pool_spec s = spec("t_fp_connect");
    s.max_connections = 2;
    s.timeout_ms = 300;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    noodle_error err;
    noodle_conn *c = NULL;
    assert_int_equal(fiu_enable("backend/mock/connect", 1, NULL, 0), 0);
    int rc = noodle_pool_acquire(pool, &c, &err);
    assert_int_equal(fiu_disable("backend/mock/connect"), 0);
    assert_code(rc, &err, NOODLE_E_POOL_TIMEOUT);
    assert_null(c);
    assert_true(metrics_of(pool).connect_failures >= 1);
    rec_event ev;
    assert_true(nth_event(rec, NOODLE_POOL_EV_CONNECT_FAILED, -1, 0, &ev));
    assert_int_equal(ev.code, NOODLE_E_CONNECT_FAILED);
    /* with a code of its own */
    assert_int_equal(fiu_enable("backend/mock/connect", 1, (void *)(intptr_t)NOODLE_E_AUTH_FAILED, 0), 0);
    rc = noodle_pool_acquire(pool, &c, &err);
    assert_int_equal(fiu_disable("backend/mock/connect"), 0);
    assert_code(rc, &err, NOODLE_E_POOL_TIMEOUT);
    assert_true(count_events(rec, NOODLE_POOL_EV_CONNECT_FAILED, -1) >= 2);
    assert_int_equal(count_events(rec, NOODLE_POOL_EV_OPENED, -1), 0);
    /* fault gone: served */
    assert_ok(noodle_pool_acquire_until(pool, noodle_deadline_after(NULL, NOODLE_SEC(5)), &c, &err), &err);
    sql_ok(c, "SELECT 1");
    noodle_pool_release(pool, &c);
    assert_int_equal(noodle_test_node_sessions("t_fp_connect"), 1);
    noodle_pool_close(pool);
    recorder_free(rec);
}

static void a_failing_validate_fail_point_never_hands_out_the_connection_it_failed(void **state) {
    (void)state;
    enum { N = 3 };
    pool_spec s = spec("t_fp_validate");
    s.max_connections = N;
    s.min_idle = N;
    s.warm_up_blocking = true;
    s.validation_bypass_ms = 0; /* validate on every reuse */
    s.timeout_ms = 500;
    noodle_pool *pool = open_pool(&s);
    recorder *rec = observe(pool);
    noodle_error err;
    static const intptr_t codes[] = {0 /* default: 4003 */, NOODLE_E_QUERY_FAILED /* non-fatal */};
    uint64_t failures = 0;
    for (size_t k = 0; k < 2; k++) {
        /* idle for a while first, so that validation is due whatever the
         * clock's granularity (bypass 0 is tested on its own above) */
        noodle_test_sleep_ms(20);
        assert_int_equal(fiu_enable("backend/mock/validate", 1, codes[k] ? (void *)codes[k] : NULL, 0), 0);
        noodle_conn *c[N];
        int got = 0;
        for (int i = 0; i < N; i++) {
            c[i] = NULL;
            int rc = noodle_pool_acquire(pool, &c[i], &err);
            if (rc == 0) {
                /* only a freshly opened connection can come out: it works */
                got++;
                int qrc = run_sql(c[i], "SELECT 1", NULL, 0, &err);
                if (qrc != 0) fail_msg("a connection that failed validation was handed out: %s", err.message);
            } else if (rc != NOODLE_E_POOL_TIMEOUT) {
                fail_msg("acquire with validation failing: %d (expected 0 or 2002)", rc);
            }
        }
        for (int i = 0; i < N; i++) noodle_pool_release(pool, &c[i]);
        assert_int_equal(fiu_disable("backend/mock/validate"), 0);
        noodle_pool_metrics m = metrics_of(pool);
        assert_true(m.validation_failures > failures);
        failures = m.validation_failures;
        assert_int_equal(m.closed[NOODLE_CLOSE_VALIDATION], m.validation_failures);
        (void)got;
    }
    rec_event ev;
    assert_true(nth_event(rec, NOODLE_POOL_EV_VALIDATION_FAILED, -1, 0, &ev));
    assert_int_equal(ev.code, NOODLE_E_CONNECTION_LOST);
    /* fault gone: all N served and working */
    noodle_conn *c[N];
    for (int i = 0; i < N; i++) {
        assert_ok(noodle_pool_acquire_until(pool, noodle_deadline_after(NULL, NOODLE_SEC(5)), &c[i], &err), &err);
        sql_ok(c[i], "SELECT 1");
    }
    for (int i = 0; i < N; i++) noodle_pool_release(pool, &c[i]);
    noodle_pool_close(pool);
    recorder_free(rec);
}

/* ---- the runner ------------------------------------------------------------------------------------ */

int main(void) {
    if (noodle_test_mock_init() != 0) return 2;
#define T(fn) cmocka_unit_test_setup(fn, setup)
    const struct CMUnitTest tests[] = {
        T(never_more_than_max_connections_open_or_opening_with_100_threads_on_20),
        T(acquire_times_out_with_2002_naming_in_use_and_waiting),
        T(acquire_until_waits_until_its_explicit_deadline),
        T(after_shutdown_acquires_fail_with_2001_and_waiters_are_failed_with_2001),
        T(shutdown_under_load_returns_0_only_once_every_connection_is_closed),
        T(shutdown_with_a_connection_in_use_returns_2007_at_its_deadline),
        T(waiters_are_served_in_arrival_order),
        T(a_newcomer_never_overtakes_a_queued_waiter),
        T(releasing_a_connection_inside_a_transaction_rolls_it_back),
        T(a_connection_whose_rollback_fails_on_release_is_closed),
        T(releasing_a_broken_connection_closes_it_and_the_next_acquire_gets_a_working_one),
        T(releasing_twice_through_the_same_variable_is_harmless),
        T(pool_with_runs_fn_releases_and_returns_its_code),
        T(idle_connections_killed_server_side_are_never_handed_out),
        T(a_connection_held_unused_past_the_bypass_window_is_validated_before_reuse),
        T(connections_used_within_the_bypass_window_are_not_validated),
        T(with_no_bypass_window_every_reuse_is_validated),
        T(no_connection_is_opened_while_an_idle_one_can_serve),
        T(a_burst_of_50_clients_against_150ms_connects_with_min_idle_5_holds_at_most_7),
        T(after_connect_faults_stop_the_pool_serves_at_full_capacity_within_one_backoff),
        T(failed_connects_back_off_exponentially_instead_of_retrying_at_once),
        T(a_slow_connect_blocks_neither_releases_nor_metrics_and_opens_one_at_a_time),
        T(a_timeout_during_an_outage_mentions_the_last_connect_error),
        T(a_pool_finds_its_backend_by_name_and_refuses_options_without_a_configuration),
        T(blocking_warm_up_opens_min_idle_before_open_returns),
        T(warm_up_without_blocking_opens_min_idle_soon),
        T(blocking_warm_up_against_a_node_refusing_connects_fails_with_2008),
        T(min_idle_is_restored_after_idle_connections_are_closed),
        T(idle_connections_above_min_idle_are_reaped_after_the_idle_timeout),
        T(connections_past_max_lifetime_are_retired_and_replaced_but_never_while_in_use),
        T(lifetime_retirement_is_jittered_so_connections_created_together_close_apart),
        T(resizing_under_load_fails_no_acquire_and_the_size_converges),
        T(shrinking_closes_idle_connections_above_the_new_maximum_at_once_and_busy_ones_on_release),
        T(invalid_sizes_are_refused_with_2004),
        T(a_connection_held_past_the_leak_threshold_is_reported_with_its_acquire_site),
        T(metrics_are_consistent_at_quiescence),
        T(hold_times_and_acquire_waits_are_measured),
        T(histogram_buckets_have_monotone_floors_and_each_value_falls_in_its_bucket),
        T(histogram_quantiles_of_a_known_distribution),
        T(observers_see_every_kind_of_event),
        T(bump_generation_closes_idle_connections_at_once_and_busy_ones_on_release),
        T(a_failing_thread_start_fails_open_with_2006_and_leaks_nothing),
        T(a_failing_connect_fail_point_gives_coded_errors_and_the_pool_recovers),
        T(a_failing_validate_fail_point_never_hands_out_the_connection_it_failed),
    };
#undef T
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    noodle_mock_reset(); /* free every node, for the leak checker */
    return failed;
}
