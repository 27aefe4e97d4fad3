/* The connection pool against a real PostgreSQL server (label pg).
 *
 * The evidence is the server's own view: every test gives its pool an
 * application_name of its own and counts that pool's backends in
 * pg_stat_activity through a separate superuser connection
 * (noodle_pg_server_query); rows are checked the same way. A counting
 * wrapper around the postgres backend's operations table gives a second,
 * client-side count of connections open or opening.
 *
 * One throwaway server is started in the group setup (a failure to start
 * fails the group: these tests are never skipped). cmocka assertions run on
 * the test's own thread only: worker threads record what they saw and the
 * test checks it after joining them.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "noodle/backend.h"
#include "noodle/clock.h"
#include "noodle/config.h"
#include "noodle/error.h"
#include "noodle/pool.h"
#include "counting_backend.h"
#include "pg_server.h"
#include "test_util.h"

static noodle_pg_server *server;

/* ---- helpers ------------------------------------------------------------------------ */

static int64_t deadline_ms(int ms) {
    return noodle_deadline_after(NULL, NOODLE_MS(ms));
}

/* Pool settings; NOODLE_UNSET leaves the configuration's default. */
typedef struct pool_params {
    int64_t max_connections, min_idle, timeout_ms, idle_timeout_ms, validation_bypass_ms;
    int64_t housekeeping_ms; /* 0: the pool's default */
    bool warm_up_blocking;
} pool_params;

static pool_params defaults(void) {
    pool_params p = {.max_connections = NOODLE_UNSET,
                     .min_idle = NOODLE_UNSET,
                     .timeout_ms = NOODLE_UNSET,
                     .idle_timeout_ms = NOODLE_UNSET,
                     .validation_bypass_ms = NOODLE_UNSET,
                     .housekeeping_ms = 0,
                     .warm_up_blocking = false};
    return p;
}

/* A pool on the test server through the counting backend, configured the
 * way an application would: noodle_config_load with an empty environment. */
static noodle_pool *open_pool(const char *app, const pool_params *pp) {
    char *const envp[] = {NULL};
    noodle_config_options co = NOODLE_CONFIG_OPTIONS_INIT;
    noodle_config cfg;
    noodle_error err;
    co.backend = "postgres";
    co.url = noodle_pg_server_conninfo(server);
    co.max_connections = pp->max_connections;
    co.min_idle = pp->min_idle;
    co.timeout_ms = pp->timeout_ms;
    co.idle_timeout_ms = pp->idle_timeout_ms;
    co.validation_bypass_ms = pp->validation_bypass_ms;
    assert_ok(noodle_config_load(&cfg, envp, &co, &err), &err);

    noodle_pool_options po;
    memset(&po, 0, sizeof po);
    po.struct_size = sizeof po;
    po.config = &cfg;
    po.backend = noodle_counting_backend(noodle_backend_postgres());
    po.application_name = app;
    po.housekeeping_interval_ms = pp->housekeeping_ms;
    po.warm_up_blocking = pp->warm_up_blocking;
    noodle_pool *pool = NULL;
    int rc = noodle_pool_open(&po, &pool, &err);
    noodle_config_free(&cfg);
    assert_ok(rc, &err);
    assert_non_null(pool);
    return pool;
}

/* Superuser SQL through a fresh connection; fails the test on error. */
static void admin(const char *sql, char *out, size_t outlen) {
    char local[512];
    if (out == NULL) {
        out = local;
        outlen = sizeof local;
    }
    if (noodle_pg_server_query(server, sql, out, outlen) != 0) fail_msg("%s: %s", sql, out);
}

/* Backends of the pool named app as pg_stat_activity shows them, or -1 with
 * the server's message in why (callable from any thread). */
static int try_server_count(const char *app, char *why, size_t whylen) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'", app);
    if (noodle_pg_server_query(server, sql, why, whylen) != 0) return -1;
    return atoi(why);
}

static int server_count(const char *app) {
    char out[512];
    int n = try_server_count(app, out, sizeof out);
    if (n < 0) fail_msg("counting backends of %s: %s", app, out);
    return n;
}

/* Poll (every 20 ms) until the server counts `want` backends of app or
 * timeout_ms passes; returns the last count. */
static int wait_server_count(const char *app, int want, int timeout_ms) {
    int64_t until = noodle_test_now_ms() + timeout_ms;
    int n = server_count(app);
    while (n != want && noodle_test_now_ms() < until) {
        usleep(20000);
        n = server_count(app);
    }
    return n;
}

/* Terminate every backend of app at the server and wait until none is left.
 * Returns how many were terminated. */
static int terminate_all(const char *app) {
    char sql[512], out[64];
    /* MATERIALIZED: the filter runs before any pg_terminate_backend call. */
    snprintf(sql, sizeof sql,
             "WITH victims AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE "
             "application_name = '%s') SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, "
             "5000)) FROM victims",
             app);
    admin(sql, out, sizeof out);
    assert_int_equal(wait_server_count(app, 0, 5000), 0);
    return atoi(out);
}

static noodle_conn *acquire_ok(noodle_pool *pool) {
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_pool_acquire(pool, &c, &err), &err);
    assert_non_null(c);
    return c;
}

/* Wait until the pool has no connect in progress and the server counts as
 * many backends as the pool holds, so that nothing opens behind the test's
 * back. */
static void wait_pool_settled(noodle_pool *pool, const char *app) {
    noodle_pool_metrics m;
    int64_t until = noodle_test_now_ms() + 5000;
    for (;;) {
        noodle_pool_get_metrics(pool, &m);
        int n = server_count(app);
        if (m.opening == 0 && n == m.total) return;
        if (noodle_test_now_ms() >= until)
            fail_msg("pool did not settle: opening %lld, total %lld, server %d",
                     (long long)m.opening, (long long)m.total, n);
        usleep(20000);
    }
}

/* ---- worker threads -------------------------------------------------------------------- */

/* What a group of clients saw; the first failure's text is kept. */
typedef struct ledger {
    atomic_long cycles, acquire_failures, query_failures;
    atomic_int have_first;
    char first[1024];
} ledger;

static void ledger_fail(ledger *l, atomic_long *counter, const char *what, const noodle_error *err) {
    atomic_fetch_add(counter, 1);
    if (atomic_exchange(&l->have_first, 1) == 0) {
        char buf[900];
        noodle_error_format(err, buf, sizeof buf);
        snprintf(l->first, sizeof l->first, "%s: %s", what, buf);
    }
}

/* One acquire / query / release cycle, recorded in l. */
static void client_cycle(noodle_pool *pool, const char *sql, ledger *l) {
    noodle_conn *c = NULL;
    noodle_rows *rows = NULL;
    noodle_error err;
    int rc = noodle_pool_acquire(pool, &c, &err);
    if (rc != 0) {
        ledger_fail(l, &l->acquire_failures, "acquire", &err);
        return;
    }
    rc = noodle_conn_execute(c, sql, NULL, 0, deadline_ms(10000), &rows, &err);
    if (rc != 0)
        ledger_fail(l, &l->query_failures, sql, &err);
    else
        atomic_fetch_add(&l->cycles, 1);
    noodle_rows_free(rows);
    noodle_pool_release(pool, &c);
}

static void assert_ledger_clean(const ledger *l) {
    if (atomic_load(&l->acquire_failures) != 0 || atomic_load(&l->query_failures) != 0)
        fail_msg("%ld failed acquires, %ld failed queries; first: %s",
                 atomic_load(&l->acquire_failures), atomic_load(&l->query_failures), l->first);
}

typedef struct timed_clients {
    noodle_pool *pool;
    const char *sql;
    int64_t stop_at_ms;
    ledger *ledger;
} timed_clients;

static void *timed_client_main(void *arg) {
    timed_clients *t = arg;
    while (noodle_test_now_ms() < t->stop_at_ms) client_cycle(t->pool, t->sql, t->ledger);
    return NULL;
}

typedef struct counted_clients {
    noodle_pool *pool;
    const char *sql;
    atomic_int remaining;
    ledger *ledger;
} counted_clients;

static void *counted_client_main(void *arg) {
    counted_clients *t = arg;
    while (atomic_fetch_sub(&t->remaining, 1) > 0) client_cycle(t->pool, t->sql, t->ledger);
    return NULL;
}

/* Polls the server's count of app's backends every 20 ms until stopped. */
typedef struct monitor {
    const char *app;
    atomic_int stop;
    int samples, errors, peak;
    char last_error[512];
} monitor;

static void *monitor_main(void *arg) {
    monitor *m = arg;
    while (!atomic_load(&m->stop)) {
        char why[512];
        int n = try_server_count(m->app, why, sizeof why);
        if (n < 0) {
            m->errors++;
            snprintf(m->last_error, sizeof m->last_error, "%s", why);
        } else {
            m->samples++;
            if (n > m->peak) m->peak = n;
        }
        usleep(20000);
    }
    return NULL;
}

/* ---- fixtures --------------------------------------------------------------------------- */

static int group_setup(void **state) {
    char msg[4096];
    (void)state;
    if (noodle_pg_server_start(NULL, &server, msg, sizeof msg) != 0) {
        fprintf(stderr, "cannot start a PostgreSQL server: %s\n", msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    noodle_pg_server_stop(server);
    server = NULL;
    return 0;
}

/* ---- STD-POOL-MAX -------------------------------------------------------------------------- */

static void hundred_clients_never_see_more_than_20_backends_at_the_server(void **state) {
    static const char app[] = "noodle-pool-max";
    enum { CLIENTS = 100, RUN_MS = 3000 };
    (void)state;
    pool_params pp = defaults();
    pp.max_connections = 20;
    noodle_pool *pool = open_pool(app, &pp);

    static ledger l;
    memset(&l, 0, sizeof l);
    monitor mon = {.app = app};
    pthread_t mon_thread, threads[CLIENTS];
    assert_int_equal(pthread_create(&mon_thread, NULL, monitor_main, &mon), 0);
    timed_clients tc = {.pool = pool,
                        .sql = "SELECT pg_sleep(0.005)",
                        .stop_at_ms = noodle_test_now_ms() + RUN_MS,
                        .ledger = &l};
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, timed_client_main, &tc), 0);
    for (int i = 0; i < CLIENTS; i++) pthread_join(threads[i], NULL);
    atomic_store(&mon.stop, 1);
    pthread_join(mon_thread, NULL);

    noodle_pool_metrics m;
    noodle_pool_get_metrics(pool, &m);
    noodle_pool_close(pool);
    print_message("  %ld cycles; server peak %d over %d samples; pool peak_total %lld; backend "
                  "peak %ld; opened %llu closed %llu\n",
                  atomic_load(&l.cycles), mon.peak, mon.samples, (long long)m.peak_total,
                  noodle_counting_get().peak, (unsigned long long)m.opened,
                  (unsigned long long)m.closed_total);

    assert_ledger_clean(&l);
    assert_true(atomic_load(&l.cycles) > 0);
    if (mon.errors != 0) fail_msg("%d monitor queries failed: %s", mon.errors, mon.last_error);
    assert_true(mon.samples >= 20);
    assert_in_range(mon.peak, 2, 20);
    assert_in_range(m.peak_total, 1, 20);
    assert_in_range(noodle_counting_get().peak, 2, 20);
    /* Closing the pool closes every connection at the server too. */
    assert_int_equal(wait_server_count(app, 0, 5000), 0);
    assert_int_equal(noodle_counting_get().live, 0);
}

/* ---- STD-POOL-VALIDATE ------------------------------------------------------------------------ */

static void connections_killed_while_idle_fail_validation_and_no_query_fails(void **state) {
    static const char app[] = "noodle-pool-validate";
    enum { CLIENTS = 4, CYCLES = 200 };
    (void)state;
    pool_params pp = defaults();
    pp.max_connections = 10;
    pp.min_idle = 5;
    pp.validation_bypass_ms = 10;
    pp.warm_up_blocking = true;
    noodle_pool *pool = open_pool(app, &pp);

    /* Warm: five connections used at once, then all given back. */
    noodle_conn *held[5];
    for (int i = 0; i < 5; i++) {
        held[i] = acquire_ok(pool);
        noodle_test_exec_ok(held[i], "SELECT 1");
    }
    for (int i = 0; i < 5; i++) noodle_pool_release(pool, &held[i]);
    wait_pool_settled(pool, app);

    int killed = terminate_all(app);
    assert_true(killed >= 5);
    usleep(100 * 1000); /* well past the 10 ms bypass window */

    static ledger l;
    memset(&l, 0, sizeof l);
    counted_clients cc = {.pool = pool, .sql = "SELECT 1", .ledger = &l};
    atomic_store(&cc.remaining, CYCLES);
    pthread_t threads[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, counted_client_main, &cc), 0);
    for (int i = 0; i < CLIENTS; i++) pthread_join(threads[i], NULL);

    noodle_pool_metrics m;
    noodle_pool_get_metrics(pool, &m);
    print_message("  %d killed; %ld cycles; validation failures %llu, closed by validation %llu\n",
                  killed, atomic_load(&l.cycles), (unsigned long long)m.validation_failures,
                  (unsigned long long)m.closed[NOODLE_CLOSE_VALIDATION]);
    assert_ledger_clean(&l);
    assert_int_equal(atomic_load(&l.cycles), CYCLES);
    assert_true(m.validation_failures > 0);
    assert_true(m.closed[NOODLE_CLOSE_VALIDATION] > 0);
    assert_true(server_count(app) >= 1);
    noodle_pool_close(pool);
}

/* The nearest thing to a server restart that pg_server.h offers: every
 * backend is terminated while the pool is idle (default validation bypass,
 * 500 ms), then every connection is handed out at once. */
static void every_connection_handed_out_after_all_backends_died_runs_a_query(void **state) {
    static const char app[] = "noodle-pool-restart";
    enum { N = 5 };
    (void)state;
    pool_params pp = defaults();
    pp.max_connections = N;
    pp.min_idle = N;
    pp.warm_up_blocking = true;
    noodle_pool *pool = open_pool(app, &pp);

    noodle_conn *held[N];
    int64_t old_pids[N];
    for (int i = 0; i < N; i++) {
        held[i] = acquire_ok(pool);
        old_pids[i] = noodle_test_query_int(held[i], "SELECT pg_backend_pid()");
    }
    for (int i = 0; i < N; i++) noodle_pool_release(pool, &held[i]);
    assert_int_equal(wait_server_count(app, N, 5000), N);

    assert_int_equal(terminate_all(app), N);
    usleep(600 * 1000); /* past the default 500 ms bypass window */

    int64_t new_pids[N];
    for (int i = 0; i < N; i++) {
        held[i] = acquire_ok(pool);
        new_pids[i] = noodle_test_query_int(held[i], "SELECT pg_backend_pid()");
        for (int j = 0; j < N; j++) assert_int_not_equal(new_pids[i], old_pids[j]);
        for (int j = 0; j < i; j++) assert_int_not_equal(new_pids[i], new_pids[j]);
    }
    assert_int_equal(server_count(app), N);
    for (int i = 0; i < N; i++) noodle_pool_release(pool, &held[i]);

    noodle_pool_metrics m;
    noodle_pool_get_metrics(pool, &m);
    /* Each of the N stale connections was caught by validation, none by a query. */
    assert_int_equal(m.validation_failures, N);
    assert_int_equal(m.closed[NOODLE_CLOSE_VALIDATION], N);
    assert_int_equal(m.closed[NOODLE_CLOSE_BROKEN], 0);
    noodle_pool_close(pool);
}

/* ---- STD-POOL-TIMEOUT ------------------------------------------------------------------------- */

static void assert_timeout_message(const noodle_error *err) {
    if (strstr(err->message, "in use") == NULL || strstr(err->message, "waiting") == NULL)
        fail_msg("2002 message names neither in-use nor waiting counts: %s", err->message);
}

static void exhausted_pool_fails_acquire_with_2002_after_200_ms(void **state) {
    static const char app[] = "noodle-pool-timeout";
    (void)state;
    pool_params pp = defaults();
    pp.max_connections = 2;
    pp.min_idle = 0;
    pp.timeout_ms = 200;
    noodle_pool *pool = open_pool(app, &pp);
    noodle_conn *a = acquire_ok(pool), *b = acquire_ok(pool), *c = NULL;
    noodle_error err;
    noodle_test_exec_ok(a, "SELECT 1");
    noodle_test_exec_ok(b, "SELECT 1");

    /* The pool's own timeout (NOODLE_DB_TIMEOUT = 200 ms). */
    int64_t t0 = noodle_clock_now(NULL);
    int rc = noodle_pool_acquire(pool, &c, &err);
    int64_t waited_default = noodle_clock_now(NULL) - t0;
    assert_code(rc, &err, NOODLE_E_POOL_TIMEOUT);
    assert_null(c);
    assert_timeout_message(&err);
    print_message("  default-timeout acquire failed after %.1f ms: %s\n", waited_default / 1e6,
                  err.message);

    /* An explicit deadline 200 ms away. */
    t0 = noodle_clock_now(NULL);
    rc = noodle_pool_acquire_until(pool, t0 + NOODLE_MS(200), &c, &err);
    int64_t waited_deadline = noodle_clock_now(NULL) - t0;
    assert_code(rc, &err, NOODLE_E_POOL_TIMEOUT);
    assert_null(c);
    assert_timeout_message(&err);
    print_message("  explicit-deadline acquire failed after %.1f ms\n", waited_deadline / 1e6);

    assert_in_range(waited_default, NOODLE_MS(200), NOODLE_MS(1200));
    assert_in_range(waited_deadline, NOODLE_MS(200), NOODLE_MS(1200));

    noodle_pool_metrics m;
    noodle_pool_get_metrics(pool, &m);
    assert_int_equal(m.timeouts, 2);
    assert_true(m.peak_total <= 2);
    assert_int_equal(server_count(app), 2); /* waiting opened nothing beyond the maximum */

    /* Once one is given back, the next acquire is served at once. */
    noodle_pool_release(pool, &a);
    t0 = noodle_clock_now(NULL);
    c = acquire_ok(pool);
    assert_true(noodle_clock_now(NULL) - t0 < NOODLE_MS(200));
    noodle_test_exec_ok(c, "SELECT 1");
    noodle_pool_release(pool, &c);
    noodle_pool_release(pool, &b);
    noodle_pool_close(pool);
}

/* ---- release rolls back ------------------------------------------------------------------------ */

static void release_inside_a_transaction_rolls_back_and_reuses_the_connection(void **state) {
    static const char app[] = "noodle-pool-txn";
    char out[512], sql[256];
    noodle_error err;
    noodle_rows *rows = NULL;
    (void)state;
    admin("DROP TABLE IF EXISTS pool_txn_probe", NULL, 0);
    admin("CREATE TABLE pool_txn_probe (x int)", NULL, 0);
    pool_params pp = defaults();
    pp.max_connections = 1;
    pp.min_idle = 1;
    pp.warm_up_blocking = true;
    noodle_pool *pool = open_pool(app, &pp);
    assert_int_equal(wait_server_count(app, 1, 5000), 1);

    noodle_conn *c = acquire_ok(pool);
    int64_t pid = noodle_test_query_int(c, "SELECT pg_backend_pid()");
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, deadline_ms(5000), &err), &err);
    noodle_value v = noodle_int64(42);
    assert_ok(noodle_conn_execute(c, "INSERT INTO pool_txn_probe VALUES (?)", &v, 1,
                                  deadline_ms(5000), &rows, &err),
              &err);
    noodle_rows_free(rows);
    assert_true(noodle_conn_in_transaction(c));
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM pool_txn_probe"), 1);
    snprintf(sql, sizeof sql, "SELECT state FROM pg_stat_activity WHERE pid = %lld",
             (long long)pid);
    admin(sql, out, sizeof out);
    assert_string_equal(out, "idle in transaction");

    noodle_pool_release(pool, &c); /* no commit */
    assert_null(c);

    admin("SELECT count(*) FROM pool_txn_probe", out, sizeof out);
    assert_string_equal(out, "0");
    admin(sql, out, sizeof out);
    assert_string_equal(out, "idle"); /* the same backend, out of its transaction */
    assert_int_equal(server_count(app), 1);

    c = acquire_ok(pool);
    assert_int_equal(noodle_test_query_int(c, "SELECT pg_backend_pid()"), pid);
    assert_false(noodle_conn_in_transaction(c));
    noodle_test_exec_ok(c, "INSERT INTO pool_txn_probe VALUES (7)"); /* autocommit works on it */
    noodle_pool_release(pool, &c);
    admin("SELECT count(*) FROM pool_txn_probe WHERE x = 7", out, sizeof out);
    assert_string_equal(out, "1");
    admin("SELECT count(*) FROM pool_txn_probe WHERE x = 42", out, sizeof out);
    assert_string_equal(out, "0");
    assert_int_equal(server_count(app), 1);

    noodle_pool_metrics m;
    noodle_pool_get_metrics(pool, &m);
    assert_int_equal(m.opened, 1);
    assert_int_equal(m.closed_total, 0);
    noodle_pool_close(pool);
    admin("DROP TABLE pool_txn_probe", NULL, 0);
}

/* ---- STD-POOL-IDLE ------------------------------------------------------------------------------ */

typedef struct burst {
    noodle_pool *pool;
    pthread_barrier_t all_hold;
    ledger *ledger;
} burst;

/* Acquire, wait until every client holds one, query, release. */
static void *burst_client_main(void *arg) {
    burst *b = arg;
    noodle_conn *c = NULL;
    noodle_rows *rows = NULL;
    noodle_error err;
    int rc = noodle_pool_acquire(b->pool, &c, &err);
    if (rc != 0) ledger_fail(b->ledger, &b->ledger->acquire_failures, "acquire", &err);
    pthread_barrier_wait(&b->all_hold);
    if (rc != 0) return NULL;
    rc = noodle_conn_execute(c, "SELECT 1", NULL, 0, deadline_ms(10000), &rows, &err);
    if (rc != 0)
        ledger_fail(b->ledger, &b->ledger->query_failures, "SELECT 1", &err);
    else
        atomic_fetch_add(&b->ledger->cycles, 1);
    noodle_rows_free(rows);
    noodle_pool_release(b->pool, &c);
    return NULL;
}

static void idle_connections_above_min_idle_are_closed_at_the_server(void **state) {
    static const char app[] = "noodle-pool-idle";
    enum { BURST = 10, MIN_IDLE = 2 };
    (void)state;
    pool_params pp = defaults();
    pp.max_connections = BURST;
    pp.min_idle = MIN_IDLE;
    pp.idle_timeout_ms = 300;
    pp.housekeeping_ms = 50;
    noodle_pool *pool = open_pool(app, &pp);

    static ledger l;
    memset(&l, 0, sizeof l);
    burst b = {.pool = pool, .ledger = &l};
    assert_int_equal(pthread_barrier_init(&b.all_hold, NULL, BURST), 0);
    pthread_t threads[BURST];
    for (int i = 0; i < BURST; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, burst_client_main, &b), 0);
    for (int i = 0; i < BURST; i++) pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&b.all_hold);
    int64_t released_at = noodle_test_now_ms();
    assert_ledger_clean(&l);
    assert_int_equal(atomic_load(&l.cycles), BURST);

    /* Watch the server: down to min_idle within 2 s, never below it, and
     * staying there for two idle timeouts more. */
    int first = server_count(app), n = first, lowest = first;
    int64_t reached_at = -1;
    while (noodle_test_now_ms() - released_at < 2000) {
        n = server_count(app);
        if (n < lowest) lowest = n;
        if (n == MIN_IDLE) {
            reached_at = noodle_test_now_ms();
            break;
        }
        usleep(20000);
    }
    print_message("  server count %d after the burst; %d after %lld ms\n", first, n,
                  (long long)(reached_at < 0 ? -1 : reached_at - released_at));
    assert_int_equal(first, BURST);
    assert_true(reached_at >= 0);
    int highest = n;
    while (noodle_test_now_ms() - reached_at < 600) {
        usleep(20000);
        n = server_count(app);
        if (n < lowest) lowest = n;
        if (n > highest) highest = n;
    }
    assert_int_equal(lowest, MIN_IDLE);
    assert_int_equal(highest, MIN_IDLE);

    noodle_pool_metrics m;
    noodle_pool_get_metrics(pool, &m);
    assert_int_equal(m.total, MIN_IDLE);
    assert_int_equal(m.idle, MIN_IDLE);
    assert_int_equal(m.closed[NOODLE_CLOSE_IDLE], BURST - MIN_IDLE);
    noodle_pool_close(pool);
    assert_int_equal(wait_server_count(app, 0, 5000), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hundred_clients_never_see_more_than_20_backends_at_the_server),
        cmocka_unit_test(connections_killed_while_idle_fail_validation_and_no_query_fails),
        cmocka_unit_test(every_connection_handed_out_after_all_backends_died_runs_a_query),
        cmocka_unit_test(exhausted_pool_fails_acquire_with_2002_after_200_ms),
        cmocka_unit_test(release_inside_a_transaction_rolls_back_and_reuses_the_connection),
        cmocka_unit_test(idle_connections_above_min_idle_are_closed_at_the_server),
    };
    return cmocka_run_group_tests_name("pool_postgres", tests, group_setup, group_teardown);
}
