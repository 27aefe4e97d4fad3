/* The connection pool on the SQLite backend (label unit).
 *
 * Each test gets a fresh database file in a temporary directory. There is no
 * server to ask, so the evidence is (1) a counting wrapper around the sqlite
 * backend's operations table, which counts connections from the start of
 * their connect until their close returns, and (2) the database file itself,
 * read afterwards through a connection of its own, outside the pool, and
 * compared with the ledger of inserts the clients saw acknowledged.
 *
 * cmocka assertions run on the test's own thread only: worker threads record
 * what they saw and the test checks it after joining them.
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
#include "test_util.h"

static char dir[256];
static char path[320];

/* ---- helpers ------------------------------------------------------------------------ */

static int64_t deadline_ms(int ms) {
    return noodle_deadline_after(NULL, NOODLE_MS(ms));
}

/* A pool on the test's database through the counting backend, configured the
 * way an application would: noodle_config_load with an empty environment. */
static noodle_pool *open_pool(int64_t max_connections, int64_t min_idle) {
    char *const envp[] = {NULL};
    noodle_config_options co = NOODLE_CONFIG_OPTIONS_INIT;
    noodle_config cfg;
    noodle_error err;
    co.backend = "sqlite";
    co.url = path;
    co.max_connections = max_connections;
    co.min_idle = min_idle;
    assert_ok(noodle_config_load(&cfg, envp, &co, &err), &err);

    noodle_pool_options po;
    memset(&po, 0, sizeof po);
    po.struct_size = sizeof po;
    po.config = &cfg;
    po.backend = noodle_counting_backend(noodle_backend_sqlite());
    po.application_name = "noodle-pool-sqlite";
    noodle_pool *pool = NULL;
    int rc = noodle_pool_open(&po, &pool, &err);
    noodle_config_free(&cfg);
    assert_ok(rc, &err);
    assert_non_null(pool);
    return pool;
}

/* A connection of its own, outside any pool. */
static noodle_conn *open_direct(void) {
    noodle_connect_params p = {
        .url = path, .deadline = deadline_ms(10000), .clock = NULL, .application_name = NULL};
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_conn_open(noodle_backend_sqlite(), &p, &c, &err), &err);
    assert_non_null(c);
    return c;
}

/* Rows in t, counted through a fresh connection. */
static int64_t rows_in_t(void) {
    noodle_conn *c = open_direct();
    int64_t n = noodle_test_query_int(c, "SELECT count(*) FROM t");
    noodle_conn_close(c);
    return n;
}

static noodle_conn *acquire_ok(noodle_pool *pool) {
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_pool_acquire(pool, &c, &err), &err);
    assert_non_null(c);
    return c;
}

/* ---- fixtures --------------------------------------------------------------------------- */

static int setup(void **state) {
    (void)state;
    if (noodle_test_tempdir(dir, sizeof dir) != 0) return -1;
    snprintf(path, sizeof path, "%s/pool.db", dir);
    noodle_conn *c = open_direct();
    noodle_test_exec_ok(c, "CREATE TABLE t (id INTEGER PRIMARY KEY, th INTEGER NOT NULL, seq INTEGER NOT NULL)");
    noodle_conn_close(c);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return noodle_test_rm_rf(dir);
}

/* ---- STD-POOL-MAX: 100 clients, 20 connections ------------------------------------------- */

enum { CLIENTS = 100, RUN_MS = 2000 };

typedef struct shared {
    noodle_pool *pool;
    int64_t stop_at_ms;
    atomic_int have_first;
    char first[1024]; /* the first unexpected failure */
} shared;

typedef struct client {
    shared *s;
    int th;
    long acked, busy, reads, failures, stale_reads;
} client;

static void client_fail(client *cl, const char *what, const noodle_error *err) {
    cl->failures++;
    if (atomic_exchange(&cl->s->have_first, 1) == 0) {
        char buf[900];
        noodle_error_format(err, buf, sizeof buf);
        snprintf(cl->s->first, sizeof cl->s->first, "client %d %s: %s", cl->th, what, buf);
    }
}

/* Two short autocommit inserts, then a read, over and over. A read must see
 * at least the rows this client was told were inserted. */
static void *client_main(void *arg) {
    client *cl = arg;
    for (long i = 0; noodle_test_now_ms() < cl->s->stop_at_ms; i++) {
        noodle_conn *c = NULL;
        noodle_rows *rows = NULL;
        noodle_error err;
        int rc = noodle_pool_acquire(cl->s->pool, &c, &err);
        if (rc != 0) {
            client_fail(cl, "acquire", &err);
            continue;
        }
        if (i % 3 == 2) {
            rc = noodle_conn_execute(c, "SELECT count(*) FROM t WHERE th = ?",
                                     (noodle_value[]){noodle_int64(cl->th)}, 1, deadline_ms(5000),
                                     &rows, &err);
            if (rc != 0) {
                client_fail(cl, "read", &err);
            } else {
                cl->reads++;
                if (noodle_rows_get(rows, 0, 0)->v.i < cl->acked) cl->stale_reads++;
            }
        } else {
            noodle_value v[2] = {noodle_int64(cl->th), noodle_int64(i)};
            rc = noodle_conn_execute(c, "INSERT INTO t (th, seq) VALUES (?, ?)", v, 2,
                                     deadline_ms(5000), &rows, &err);
            if (rc == 0)
                cl->acked++;
            else if (rc == NOODLE_E_QUERY_BUSY)
                cl->busy++;
            else
                client_fail(cl, "insert", &err);
        }
        noodle_rows_free(rows);
        noodle_pool_release(cl->s->pool, &c);
    }
    return NULL;
}

static void hundred_clients_on_20_connections_never_exceed_20_and_lose_no_insert(void **state) {
    (void)state;
    noodle_pool *pool = open_pool(20, NOODLE_UNSET);
    static shared s;
    static client clients[CLIENTS];
    pthread_t threads[CLIENTS];
    memset(&s, 0, sizeof s);
    s.pool = pool;
    s.stop_at_ms = noodle_test_now_ms() + RUN_MS;
    for (int i = 0; i < CLIENTS; i++) {
        memset(&clients[i], 0, sizeof clients[i]);
        clients[i].s = &s;
        clients[i].th = i;
        assert_int_equal(pthread_create(&threads[i], NULL, client_main, &clients[i]), 0);
    }
    for (int i = 0; i < CLIENTS; i++) pthread_join(threads[i], NULL);

    noodle_pool_metrics m;
    noodle_pool_get_metrics(pool, &m);
    noodle_pool_close(pool);

    long acked = 0, busy = 0, reads = 0, failures = 0, stale = 0;
    for (int i = 0; i < CLIENTS; i++) {
        acked += clients[i].acked;
        busy += clients[i].busy;
        reads += clients[i].reads;
        failures += clients[i].failures;
        stale += clients[i].stale_reads;
    }
    print_message("  %ld inserts acknowledged, %ld busy (5005), %ld reads; pool peak_total %lld, "
                  "backend peak %ld, opened %llu\n",
                  acked, busy, reads, (long long)m.peak_total, noodle_counting_get().peak,
                  (unsigned long long)m.opened);
    if (failures != 0) fail_msg("%ld unexpected failures; first: %s", failures, s.first);
    assert_int_equal(stale, 0);
    assert_true(acked > 0);
    assert_in_range(m.peak_total, 1, 20);
    assert_in_range(noodle_counting_get().peak, 2, 20);
    assert_int_equal(noodle_counting_get().live, 0); /* close closed every connection */

    /* The database holds exactly the acknowledged inserts, client by client. */
    noodle_conn *c = open_direct();
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM t"), acked);
    for (int i = 0; i < CLIENTS; i++) {
        noodle_rows *rows = NULL;
        noodle_error err;
        noodle_value th = noodle_int64(i);
        assert_ok(noodle_conn_execute(c, "SELECT count(*), count(DISTINCT seq) FROM t WHERE th = ?",
                                      &th, 1, deadline_ms(5000), &rows, &err),
                  &err);
        assert_int_equal(noodle_rows_get(rows, 0, 0)->v.i, clients[i].acked);
        assert_int_equal(noodle_rows_get(rows, 0, 1)->v.i, clients[i].acked);
        noodle_rows_free(rows);
    }
    noodle_conn_close(c);
}

/* ---- release rolls back ------------------------------------------------------------------------ */

static void release_inside_a_transaction_rolls_back_the_insert(void **state) {
    noodle_error err;
    noodle_rows *rows = NULL;
    (void)state;
    noodle_pool *pool = open_pool(2, 0);
    noodle_conn *c = acquire_ok(pool);
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, deadline_ms(5000), &err), &err);
    noodle_test_exec_ok(c, "INSERT INTO t (th, seq) VALUES (1, 1)");
    assert_true(noodle_conn_in_transaction(c));
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM t"), 1);
    noodle_pool_release(pool, &c); /* no commit */
    assert_null(c);

    assert_int_equal(rows_in_t(), 0);
    /* No write lock left behind: another connection writes at once. */
    noodle_conn *other = open_direct();
    assert_ok(noodle_conn_execute(other, "INSERT INTO t (th, seq) VALUES (2, 2)", NULL, 0,
                                  deadline_ms(500), &rows, &err),
              &err);
    noodle_rows_free(rows);
    noodle_conn_close(other);

    /* The rolled-back connection was kept and works. */
    c = acquire_ok(pool);
    assert_false(noodle_conn_in_transaction(c));
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM t"), 1);
    noodle_test_exec_ok(c, "INSERT INTO t (th, seq) VALUES (3, 3)");
    noodle_pool_release(pool, &c);
    assert_int_equal(rows_in_t(), 2);

    noodle_pool_metrics m;
    noodle_pool_get_metrics(pool, &m);
    assert_int_equal(m.closed_total, 0);
    assert_int_equal(noodle_counting_get().closes, 0);
    noodle_pool_close(pool);
}

/* ---- broken connections are destroyed on release ---------------------------------------------- */

/* c is broken; release it into a one-connection pool and check that it was
 * closed (not pooled) and that the next acquire hands out a working one. */
static void release_broken_then_acquire_a_working_one(noodle_pool *pool, noodle_conn **c) {
    noodle_error err;
    noodle_rows *rows = NULL;
    assert_int_equal(noodle_conn_get_state(*c), NOODLE_CONN_BROKEN);
    assert_code(noodle_conn_execute(*c, "SELECT 1", NULL, 0, deadline_ms(1000), &rows, &err), &err,
                NOODLE_E_CONNECTION_BROKEN);
    noodle_pool_release(pool, c);
    assert_null(*c);

    noodle_pool_metrics m;
    noodle_pool_get_metrics(pool, &m);
    assert_int_equal(m.closed[NOODLE_CLOSE_BROKEN], 1);
    assert_int_equal(noodle_counting_get().closes, 1);

    noodle_conn *next = acquire_ok(pool);
    assert_int_equal(noodle_conn_get_state(next), NOODLE_CONN_OK);
    assert_int_equal(noodle_test_query_int(next, "SELECT 41 + 1"), 42);
    noodle_test_exec_ok(next, "INSERT INTO t (th, seq) VALUES (9, 9)");
    noodle_pool_release(pool, &next);
    assert_int_equal(rows_in_t(), 1);

    noodle_pool_get_metrics(pool, &m);
    assert_int_equal(m.opened, 2); /* max 1: the second is a new connection */
    assert_int_equal(m.closed_total, 1);
    assert_int_equal(noodle_counting_get().connects, 2);
}

static void connection_broken_by_a_passed_deadline_is_destroyed_on_release(void **state) {
    noodle_error err;
    noodle_rows *rows = NULL;
    (void)state;
    noodle_pool *pool = open_pool(1, 0);
    noodle_conn *c = acquire_ok(pool);
    noodle_test_exec_ok(c, "SELECT 1");
    int rc = noodle_conn_execute(c, "SELECT 1", NULL, 0, noodle_clock_now(NULL) - 1, &rows, &err);
    assert_code(rc, &err, NOODLE_E_BACKEND_TIMEOUT);
    assert_null(rows);
    release_broken_then_acquire_a_working_one(pool, &c);
    noodle_pool_close(pool);
}

static void statement_cut_at_its_deadline_breaks_the_connection_which_is_not_reused(void **state) {
    noodle_error err;
    noodle_rows *rows = NULL;
    (void)state;
    noodle_pool *pool = open_pool(1, 0);
    noodle_conn *c = acquire_ok(pool);
    int64_t t0 = noodle_test_now_ms();
    int rc = noodle_conn_execute(c,
                                 "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
                                 "SELECT count(*) FROM r",
                                 NULL, 0, deadline_ms(100), &rows, &err);
    assert_code(rc, &err, NOODLE_E_BACKEND_TIMEOUT);
    assert_true(noodle_test_now_ms() - t0 < 2000);
    release_broken_then_acquire_a_working_one(pool, &c);
    noodle_pool_close(pool);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            hundred_clients_on_20_connections_never_exceed_20_and_lose_no_insert, setup, teardown),
        cmocka_unit_test_setup_teardown(release_inside_a_transaction_rolls_back_the_insert, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            connection_broken_by_a_passed_deadline_is_destroyed_on_release, setup, teardown),
        cmocka_unit_test_setup_teardown(
            statement_cut_at_its_deadline_breaks_the_connection_which_is_not_reused, setup,
            teardown),
    };
    return cmocka_run_group_tests_name("pool_sqlite", tests, NULL, NULL);
}
