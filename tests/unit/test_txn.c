/* The transaction manager (STD-TXN): the same tests on every backend.
 * `test_txn mock|sqlite|postgres` picks the backend; the PostgreSQL run
 * starts its own throwaway server and fails (never skips) when it cannot.
 *
 * Each test gets a fresh connection f->c and an empty table
 * txn_t (id BIGINT PRIMARY KEY, v TEXT). What a transaction left behind is
 * always read back through a connection of its own (committed_ids), never
 * through the connection the transaction ran on.
 *
 * Fail points (backend/<backend>/<op>) are enabled for exactly the calls a
 * test names, counted from the moment they are armed (fp_arm), with
 * fiu_enable_external and a counter; every armed point is disabled again
 * (libfiu crashes when a point that was never enabled is disabled, so only
 * armed ones are). Worker threads never call cmocka asserts: they record
 * failures with noodle_test_thread_fail.
 */
#include <fiu-control.h>
#include <fiu.h>
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
#include "noodle/cluster.h"
#include "noodle/config.h"
#include "noodle/failpoint.h"
#include "noodle/pool.h"
#include "noodle/txn.h"
#include "mock_nodes.h"
#include "noodle_mock.h"
#include "pg_server.h"
#include "test_util.h"

/* ---- the backend under test ------------------------------------------------------------------ */

typedef enum backend_kind { B_MOCK, B_SQLITE, B_POSTGRES } backend_kind;

static backend_kind kind;
static const char *backend_name;
static const noodle_backend_ops *ops;
static char url[512];
static char tempdir[256];
static noodle_pg_server *pg;

#define NODE "txn"        /* the mock node of url */
#define NODE_SB "txn_sb"  /* a mock standby for the cluster test */

#define DEADLINE() noodle_deadline_after(NULL, NOODLE_SEC(15))

typedef struct fixture {
    noodle_conn *c;
} fixture;

static noodle_conn *open_conn(void) {
    noodle_connect_params p = {.url = url, .deadline = DEADLINE(), .application_name = "noodle-test-txn"};
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_conn_open(ops, &p, &c, &err), &err);
    assert_non_null(c);
    return c;
}

/* A connection broken by a test (or still inside a transaction it must not
 * keep: a broken SQLite handle would keep its write lock) is replaced. */
static void renew_conn(fixture *f) {
    noodle_conn_close(f->c);
    f->c = open_conn();
}

static void exec_ok(noodle_conn *c, const char *sql) { noodle_test_exec_ok(c, sql); }

/* ---- what is committed -------------------------------------------------------------------------- */

/* The ids (0..62) of the committed rows of txn_t, read through a fresh
 * connection, as a bit set. */
static uint64_t committed_ids(void) {
    noodle_conn *c = open_conn();
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_conn_execute(c, "SELECT id FROM txn_t ORDER BY id", NULL, 0, DEADLINE(), &r, &err),
              &err);
    uint64_t set = 0;
    for (size_t i = 0; i < noodle_rows_count(r); i++) {
        const noodle_value *v = noodle_rows_get(r, i, 0);
        assert_int_equal(v->type, NOODLE_TYPE_INT64);
        if (v->v.i < 0 || v->v.i > 62) fail_msg("unexpected id %lld in txn_t", (long long)v->v.i);
        set |= 1ull << v->v.i;
    }
    noodle_rows_free(r);
    noodle_conn_close(c);
    return set;
}

static int64_t committed_count(void) {
    noodle_conn *c = open_conn();
    int64_t n = noodle_test_query_int(c, "SELECT count(*) FROM txn_t");
    noodle_conn_close(c);
    return n;
}

static const char *ids_text(uint64_t set, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, size, "{");
    for (int i = 0; i < 63 && used < size; i++)
        if (set & (1ull << i)) used += (size_t)snprintf(buf + used, size - used, "%s%d", used > 1 ? "," : "", i);
    if (used < size) snprintf(buf + used, size - used, "}");
    return buf;
}

#define BIT(i) (1ull << (i))

/* The committed ids must be exactly want. */
#define assert_committed(want, ...)                                                          \
    do {                                                                                     \
        uint64_t got_ = committed_ids(), want_ = (want);                                     \
        if (got_ != want_) {                                                                 \
            char g_[256], w_[256], ctx_[256];                                                \
            snprintf(ctx_, sizeof ctx_, __VA_ARGS__);                                        \
            fail_msg("%s: committed rows %s, expected %s", ctx_, ids_text(got_, g_, sizeof g_), \
                     ids_text(want_, w_, sizeof w_));                                        \
        }                                                                                    \
    } while (0)

/* ---- statements in a transaction ---------------------------------------------------------------- */

static int tx_insert_rc(noodle_txn *t, int64_t id, noodle_error *err) {
    noodle_value p[2] = {noodle_int64(id), noodle_text("txn")};
    noodle_rows *r = NULL;
    int rc = noodle_txn_execute(t, "INSERT INTO txn_t (id, v) VALUES (?, ?)", p, 2, &r, err);
    if (rc == 0) assert_int_equal(noodle_rows_affected(r), 1);
    else assert_null(r);
    noodle_rows_free(r);
    return rc;
}

static void tx_insert(noodle_txn *t, int64_t id) {
    noodle_error err;
    assert_ok(tx_insert_rc(t, id, &err), &err);
}

/* Rows of txn_t as the transaction sees them. */
static int64_t tx_count(noodle_txn *t) {
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_txn_execute(t, "SELECT count(*) FROM txn_t", NULL, 0, &r, &err), &err);
    const noodle_value *v = noodle_rows_get(r, 0, 0);
    assert_int_equal(v->type, NOODLE_TYPE_INT64);
    int64_t n = v->v.i;
    noodle_rows_free(r);
    return n;
}

/* The first cell of the one row sql returns in t, as text. */
static void tx_query_text(noodle_txn *t, const char *sql, char *buf, size_t size) {
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_txn_execute(t, sql, NULL, 0, &r, &err), &err);
    assert_int_equal(noodle_rows_count(r), 1);
    const noodle_value *v = noodle_rows_get(r, 0, 0);
    if (v->type == NOODLE_TYPE_INT64)
        snprintf(buf, size, "%lld", (long long)v->v.i);
    else if (v->type == NOODLE_TYPE_TEXT)
        snprintf(buf, size, "%.*s", (int)v->v.bytes.len, (const char *)v->v.bytes.ptr);
    else
        fail_msg("%s returned a %s", sql, noodle_type_name(v->type));
    noodle_rows_free(r);
}

/* Begin the root t on c at iso and insert row id in it. */
static void begin_with_row(noodle_conn *c, noodle_isolation iso, noodle_txn *t, int64_t id) {
    noodle_error err;
    assert_ok(noodle_txn_begin(c, iso, t, &err), &err);
    tx_insert(t, id);
}

/* Begin inner nested in outer and insert row id in it. */
static void nest_with_row(noodle_txn *outer, noodle_txn *inner, int64_t id) {
    noodle_error err;
    assert_ok(noodle_txn_begin_nested(outer, inner, &err), &err);
    tx_insert(inner, id);
}

/* Commit t, then end it. */
static void commit_end(noodle_txn *t) {
    noodle_error err;
    assert_ok(noodle_txn_commit(t, &err), &err);
    noodle_txn_end(t);
}

/* One transaction on c at iso that commits row id. */
static void commit_row(noodle_conn *c, noodle_isolation iso, int64_t id) {
    noodle_txn t;
    begin_with_row(c, iso, &t, id);
    commit_end(&t);
}

/* Every operation on a level that ended fails with 6032. */
static void assert_level_ended(noodle_txn *t) {
    noodle_error err;
    noodle_txn inner;
    assert_false(noodle_txn_is_active(t));
    assert_code(tx_insert_rc(t, 62, &err), &err, NOODLE_E_TXN_ENDED);
    assert_code(noodle_txn_commit(t, &err), &err, NOODLE_E_TXN_ENDED);
    assert_code(noodle_txn_rollback(t, &err), &err, NOODLE_E_TXN_ENDED);
    assert_code(noodle_txn_begin_nested(t, &inner, &err), &err, NOODLE_E_TXN_ENDED);
    noodle_txn_end(t); /* safe, and changes nothing */
}

static void assert_contains(const char *text, const char *part) {
    if (strstr(text, part) == NULL) fail_msg("\"%s\" does not contain \"%s\"", text, part);
}

/* ---- fail points -------------------------------------------------------------------------------- */

/* One armed point: it fires on its calls number first..last (1-based,
 * counted from arming), failing with code (0: the point's default). */
typedef struct fp_armed {
    char name[96];
    atomic_int calls;
    atomic_int fired;
    int first, last;
} fp_armed;

static fp_armed armed[4];
static atomic_int narmed;

static int fp_decide(const char *name, int *failnum, void **failinfo, unsigned int *flags) {
    (void)failnum;
    (void)failinfo;
    (void)flags;
    int n = atomic_load(&narmed);
    for (int i = 0; i < n; i++) {
        fp_armed *a = &armed[i];
        if (strcmp(a->name, name) != 0) continue;
        int call = atomic_fetch_add(&a->calls, 1) + 1;
        bool fire = call >= a->first && call <= a->last;
        if (fire) atomic_fetch_add(&a->fired, 1);
        return fire;
    }
    return 0;
}

/* Arm backend/<backend>/<op> for count calls starting at call first. */
static void fp_arm(const char *op, int code, int first, int count) {
    int i = atomic_load(&narmed);
    assert_true(i < (int)(sizeof armed / sizeof armed[0]));
    fp_armed *a = &armed[i];
    snprintf(a->name, sizeof a->name, "backend/%s/%s", backend_name, op);
    assert_non_null(noodle_fail_point_find(a->name));
    atomic_store(&a->calls, 0);
    atomic_store(&a->fired, 0);
    a->first = first;
    a->last = first + count - 1;
    atomic_store(&narmed, i + 1);
    assert_int_equal(fiu_enable_external(a->name, 1, code ? (void *)(intptr_t)code : NULL, 0, fp_decide), 0);
}

/* How many times the armed op fired. */
static int fp_fired(const char *op) {
    char name[96];
    snprintf(name, sizeof name, "backend/%s/%s", backend_name, op);
    for (int i = 0; i < atomic_load(&narmed); i++)
        if (strcmp(armed[i].name, name) == 0) return atomic_load(&armed[i].fired);
    fail_msg("%s is not armed", name);
    return 0;
}

static void fp_disarm_all(void) {
    int n = atomic_load(&narmed);
    for (int i = 0; i < n; i++) fiu_disable(armed[i].name);
    atomic_store(&narmed, 0);
}

/* The codes the fail point tests inject: the point's default (4003,
 * connection lost: connection-fatal) and a statement-level failure that
 * leaves the connection usable (5008). */
static const int fp_codes[] = {0, NOODLE_E_QUERY_FAILED};
#define FP_WANT(code) ((code) ? (code) : NOODLE_E_CONNECTION_LOST)

/* ---- pools ---------------------------------------------------------------------------------------- */

static void pool_config(noodle_config *cfg, int64_t max_connections) {
    noodle_config_options co = NOODLE_CONFIG_OPTIONS_INIT;
    co.backend = backend_name;
    co.url = url;
    co.max_connections = max_connections;
    co.min_idle = 0;
    co.timeout_ms = 10000;
    co.connect_timeout_ms = 10000;
    noodle_test_config_load(cfg, &co);
}

static noodle_pool *open_pool(int64_t max_connections) {
    noodle_config cfg;
    pool_config(&cfg, max_connections);
    noodle_pool_options po = NOODLE_POOL_OPTIONS_INIT;
    po.config = &cfg;
    po.backend = ops;
    po.application_name = "noodle-test-txn";
    noodle_pool *pool = NULL;
    noodle_error err;
    int rc = noodle_pool_open(&po, &pool, &err);
    noodle_config_free(&cfg);
    assert_ok(rc, &err);
    assert_non_null(pool);
    return pool;
}

/* ---- fixtures ------------------------------------------------------------------------------------- */

static int setup(void **state) {
    noodle_test_reset_thread_failure();
    if (kind == B_MOCK) {
        noodle_error err;
        (void)!noodle_mock_clear_faults(NODE, &err);
    }
    fixture *f = calloc(1, sizeof *f);
    f->c = open_conn();
    exec_ok(f->c, "DROP TABLE IF EXISTS txn_t");
    exec_ok(f->c, "CREATE TABLE txn_t (id BIGINT PRIMARY KEY, v TEXT)");
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    fp_disarm_all();
    if (kind == B_MOCK) {
        noodle_error err;
        (void)!noodle_mock_clear_faults(NODE, &err);
    }
    noodle_conn_close(f->c);
    free(f);
    return 0;
}

/* ---- isolation levels ------------------------------------------------------------------------------ */

static const noodle_isolation every_level[] = {
    NOODLE_ISOLATION_DEFAULT, NOODLE_ISOLATION_READ_UNCOMMITTED, NOODLE_ISOLATION_READ_COMMITTED,
    NOODLE_ISOLATION_REPEATABLE_READ, NOODLE_ISOLATION_SERIALIZABLE};
#define NLEVELS (sizeof every_level / sizeof every_level[0])

/* Begin other at the default level and insert id with a short deadline:
 * 0, or the code (SQLite: 5005 while a writer holds the lock). */
static int uncommitted_insert(noodle_conn *other, int64_t id, noodle_error *err) {
    int64_t soon = noodle_deadline_after(NULL, NOODLE_MS(300));
    int rc = noodle_conn_begin(other, NOODLE_ISOLATION_DEFAULT, soon, err);
    if (rc != 0) return rc;
    noodle_value p[2] = {noodle_int64(id), noodle_text("uncommitted")};
    noodle_rows *r = NULL;
    rc = noodle_conn_execute(other, "INSERT INTO txn_t (id, v) VALUES (?, ?)", p, 2, soon, &r, err);
    noodle_rows_free(r);
    return rc;
}

/* Every level begins, and what it gives is at least what was asked:
 * PostgreSQL reports the level asked for (SHOW transaction_isolation);
 * SQLite gives serializable transactions at every level (read_uncommitted
 * stays off), and SERIALIZABLE holds the write lock from BEGIN (BEGIN
 * IMMEDIATE); no level of any backend reads another connection's
 * uncommitted write. */
static void every_isolation_level_begins_and_is_never_weaker_than_asked(void **state) {
    fixture *f = *state;
    static const char *const pg_names[] = {"read committed", "read uncommitted", "read committed",
                                           "repeatable read", "serializable"};
    for (size_t i = 0; i < NLEVELS; i++) {
        noodle_isolation iso = every_level[i];
        noodle_txn t;
        noodle_error err;
        assert_ok(noodle_txn_begin(f->c, iso, &t, &err), &err);
        assert_true(noodle_txn_is_active(&t));
        assert_true(noodle_conn_in_transaction(f->c));
        assert_ptr_equal(noodle_txn_conn(&t), f->c);
        assert_int_equal(t.depth, 0);
        assert_int_equal(t.state, NOODLE_TXN_ACTIVE);

        /* another connection's uncommitted write is never seen */
        noodle_conn *other = open_conn();
        noodle_error oerr;
        int orc = uncommitted_insert(other, 50, &oerr);
        char seen[32];
        tx_query_text(&t, "SELECT count(*) FROM txn_t WHERE id = 50", seen, sizeof seen);
        assert_string_equal(seen, "0");
        if (noodle_conn_in_transaction(other)) {
            noodle_error rerr;
            assert_ok(noodle_conn_rollback(other, DEADLINE(), &rerr), &rerr);
        }
        noodle_conn_close(other);

        char text[64];
        switch (kind) {
        case B_POSTGRES:
            assert_ok(orc, &oerr);
            tx_query_text(&t, "SHOW transaction_isolation", text, sizeof text);
            if (strcmp(text, pg_names[i]) != 0)
                fail_msg("begun at %s, PostgreSQL runs it at %s", noodle_isolation_name(iso), text);
            break;
        case B_SQLITE:
            tx_query_text(&t, "PRAGMA read_uncommitted", text, sizeof text);
            assert_string_equal(text, "0");
            if (iso == NOODLE_ISOLATION_SERIALIZABLE) /* the write lock is taken at BEGIN */
                assert_code(orc, &oerr, NOODLE_E_QUERY_BUSY);
            else /* deferred: nothing is locked before the first statement */
                assert_ok(orc, &oerr);
            break;
        case B_MOCK: assert_ok(orc, &oerr); break;
        }
        tx_insert(&t, (int64_t)i);
        assert_ok(noodle_txn_commit(&t, &err), &err);
        assert_int_equal(t.state, NOODLE_TXN_COMMITTED);
        assert_false(noodle_txn_is_active(&t));
        assert_false(noodle_conn_in_transaction(f->c));
        noodle_txn_end(&t);
    }
    assert_committed(BIT(0) | BIT(1) | BIT(2) | BIT(3) | BIT(4), "one row per level");
}

/* REPEATABLE READ and SERIALIZABLE never commit a lost update: t reads a
 * row, another connection changes it, t writes it from what it read; either
 * the other write is refused (SQLite SERIALIZABLE holds the write lock) or t
 * fails with a retryable conflict (5003) and the other write stands. */
static void repeatable_read_and_serializable_never_commit_a_lost_update(void **state) {
    fixture *f = *state;
    static const noodle_isolation strong[] = {NOODLE_ISOLATION_REPEATABLE_READ,
                                              NOODLE_ISOLATION_SERIALIZABLE};
    for (size_t i = 0; i < 2; i++) {
        exec_ok(f->c, "DELETE FROM txn_t");
        exec_ok(f->c, "INSERT INTO txn_t (id, v) VALUES (1, 'base')");
        noodle_txn t;
        noodle_error err, oerr;
        assert_ok(noodle_txn_begin_until(f->c, strong[i], DEADLINE(), &t, &err), &err);
        char seen[32];
        tx_query_text(&t, "SELECT v FROM txn_t WHERE id = 1", seen, sizeof seen);
        assert_string_equal(seen, "base");

        noodle_conn *other = open_conn();
        noodle_rows *r = NULL;
        int orc = noodle_conn_execute(other, "UPDATE txn_t SET v = 'other' WHERE id = 1", NULL, 0,
                                      noodle_deadline_after(NULL, NOODLE_MS(300)), &r, &oerr);
        noodle_rows_free(r);
        noodle_conn_close(other);

        int rc = noodle_txn_execute(&t, "UPDATE txn_t SET v = 'txn' WHERE id = 1", NULL, 0, &r, &err);
        noodle_rows_free(r);
        if (rc == 0) rc = noodle_txn_commit(&t, &err);
        noodle_txn_end(&t);

        char final[32];
        noodle_conn *check = open_conn();
        noodle_txn ct;
        assert_ok(noodle_txn_begin(check, NOODLE_ISOLATION_DEFAULT, &ct, &err), &err);
        tx_query_text(&ct, "SELECT v FROM txn_t WHERE id = 1", final, sizeof final);
        noodle_txn_end(&ct);
        noodle_conn_close(check);
        if (orc == 0) {
            /* the other write committed: t must not have committed over it */
            if (rc != NOODLE_E_QUERY_SERIALIZATION) {
                char text[1024];
                noodle_error_format(&err, text, sizeof text);
                fail_msg("%s: a concurrent update committed, then the transaction got %d (%s), "
                         "expected 5003", noodle_isolation_name(strong[i]), rc, text);
            }
            assert_true(noodle_code_is_retryable(rc));
            assert_string_equal(final, "other");
        } else {
            assert_true(noodle_code_is_retryable(orc));
            assert_ok(rc, &err);
            assert_string_equal(final, "txn");
        }
        assert_false(noodle_conn_in_transaction(f->c));
    }
}

/* A level the backend cannot give is refused with 5013, nothing begun. */
static void an_isolation_level_the_backend_cannot_give_is_refused_with_5013(void **state) {
    fixture *f = *state;
    const noodle_isolation bad[] = {(noodle_isolation)(NOODLE_ISOLATION_SERIALIZABLE + 1),
                                    (noodle_isolation)42, (noodle_isolation)-1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        noodle_txn t;
        noodle_error err;
        int rc = noodle_txn_begin(f->c, bad[i], &t, &err);
        if (rc != NOODLE_E_QUERY_ISOLATION_UNSUPPORTED) {
            char text[1024];
            noodle_error_format(&err, text, sizeof text);
            fail_msg("isolation %d on %s: expected 5013, got %d: %s", (int)bad[i], backend_name, rc,
                     text);
        }
        assert_int_equal(err.code, NOODLE_E_QUERY_ISOLATION_UNSUPPORTED);
        assert_false(noodle_txn_is_active(&t));
        assert_false(noodle_conn_in_transaction(f->c));
        noodle_txn_end(&t);
    }
    /* the connection is as good as before */
    commit_row(f->c, NOODLE_ISOLATION_SERIALIZABLE, 1);
    assert_committed(BIT(1), "after the refusals");
}

/* ---- nesting ------------------------------------------------------------------------------------------ */

/* For every depth d (1..6 nested levels under the root) and every level k
 * (0: the root, .. d): each level inserts its own row, level k is rolled
 * back (ending every level inside it), the level above it goes on (one more
 * row), and the rest commit: exactly the rows of the levels above k (and the
 * row added after the rollback) are committed. */
static void rolling_back_level_k_of_d_keeps_exactly_the_rows_of_the_levels_above_k(void **state) {
    fixture *f = *state;
    enum { MAX_DEPTH = 6 };
    for (int d = 1; d <= MAX_DEPTH; d++) {
        for (int k = 0; k <= d; k++) {
            exec_ok(f->c, "DELETE FROM txn_t");
            noodle_txn lv[MAX_DEPTH + 1];
            noodle_error err;
            assert_ok(noodle_txn_begin(f->c, NOODLE_ISOLATION_DEFAULT, &lv[0], &err), &err);
            tx_insert(&lv[0], 0);
            for (int i = 1; i <= d; i++) {
                assert_ok(noodle_txn_begin_nested(&lv[i - 1], &lv[i], &err), &err);
                assert_int_equal(lv[i].depth, i);
                assert_ptr_equal(lv[i].parent, &lv[i - 1]);
                tx_insert(&lv[i], i);
            }
            assert_int_equal(tx_count(&lv[d]), d + 1);
            assert_ok(noodle_txn_rollback(&lv[k], &err), &err);
            for (int i = k; i <= d; i++) assert_level_ended(&lv[i]);
            uint64_t want = 0;
            if (k > 0) {
                /* the level above continues as it was when level k began */
                assert_true(noodle_txn_is_active(&lv[k - 1]));
                assert_int_equal(tx_count(&lv[k - 1]), k);
                tx_insert(&lv[k - 1], 40 + k);
                for (int i = k - 1; i >= 0; i--) assert_ok(noodle_txn_commit(&lv[i], &err), &err);
                want = (BIT(k) - 1) | BIT(40 + k);
            }
            for (int i = 0; i <= d; i++) noodle_txn_end(&lv[i]);
            assert_false(noodle_conn_in_transaction(f->c));
            assert_committed(want, "depth %d, level %d rolled back", d, k);
        }
    }
}

/* Committing a level with a level open inside it: 6033, nothing changes. */
static void committing_a_level_with_an_inner_level_open_fails_with_6033_and_changes_nothing(void **state) {
    fixture *f = *state;
    noodle_txn root, l1, l2;
    noodle_error err;
    begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 1);
    nest_with_row(&root, &l1, 2);
    nest_with_row(&l1, &l2, 3);
    assert_code(noodle_txn_commit(&root, &err), &err, NOODLE_E_TXN_INNER_OPEN);
    assert_code(noodle_txn_commit(&l1, &err), &err, NOODLE_E_TXN_INNER_OPEN);
    assert_true(noodle_txn_is_active(&root));
    assert_true(noodle_txn_is_active(&l1));
    assert_true(noodle_txn_is_active(&l2));
    assert_int_equal(root.state, NOODLE_TXN_ACTIVE);
    assert_ptr_equal(root.innermost, &l2);
    assert_true(noodle_conn_in_transaction(f->c));
    assert_committed(0, "while open");
    /* the inner levels are still usable, and commit in order */
    tx_insert(&l2, 4);
    assert_int_equal(tx_count(&l2), 4);
    assert_ok(noodle_txn_commit(&l2, &err), &err);
    assert_code(noodle_txn_commit(&root, &err), &err, NOODLE_E_TXN_INNER_OPEN);
    tx_insert(&l1, 5);
    assert_ok(noodle_txn_commit(&l1, &err), &err);
    assert_ok(noodle_txn_commit(&root, &err), &err);
    noodle_txn_end(&l2);
    noodle_txn_end(&l1);
    noodle_txn_end(&root);
    assert_committed(BIT(1) | BIT(2) | BIT(3) | BIT(4) | BIT(5), "after committing in order");
}

/* A level that ended (committed, rolled back, or inside a level that
 * rolled back) cannot be used again: 6032. */
static void a_level_that_ended_fails_with_6032(void **state) {
    fixture *f = *state;
    noodle_txn root, l1, l2;
    noodle_error err;
    begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 1);
    nest_with_row(&root, &l1, 2);
    assert_ok(noodle_txn_commit(&l1, &err), &err);
    assert_int_equal(l1.state, NOODLE_TXN_COMMITTED);
    assert_level_ended(&l1); /* committed */
    assert_ok(noodle_txn_begin_nested(&root, &l1, &err), &err);
    nest_with_row(&l1, &l2, 3);
    assert_ok(noodle_txn_rollback(&l1, &err), &err);
    assert_level_ended(&l1); /* rolled back */
    assert_level_ended(&l2); /* inside a level that rolled back */
    tx_insert(&root, 4);
    assert_ok(noodle_txn_commit(&root, &err), &err);
    assert_level_ended(&root);
    noodle_txn_end(&root);
    assert_committed(BIT(1) | BIT(2) | BIT(4), "the levels that committed");

    /* a rolled back root */
    begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 5);
    assert_ok(noodle_txn_rollback(&root, &err), &err);
    assert_int_equal(root.state, NOODLE_TXN_ROLLED_BACK);
    assert_level_ended(&root);

    /* never begun (zeroed), NULL: 6031; end is safe on both */
    noodle_txn zero;
    memset(&zero, 0, sizeof zero);
    noodle_rows *r = NULL;
    assert_code(noodle_txn_execute(&zero, "SELECT 1", NULL, 0, &r, &err), &err,
                NOODLE_E_TXN_INVALID_ARGUMENT);
    assert_code(noodle_txn_commit(&zero, &err), &err, NOODLE_E_TXN_INVALID_ARGUMENT);
    assert_code(noodle_txn_rollback(NULL, &err), &err, NOODLE_E_TXN_INVALID_ARGUMENT);
    assert_code(noodle_txn_begin_nested(&zero, &l1, &err), &err, NOODLE_E_TXN_INVALID_ARGUMENT);
    assert_code(noodle_txn_begin(NULL, NOODLE_ISOLATION_DEFAULT, &root, &err), &err,
                NOODLE_E_TXN_INVALID_ARGUMENT);
    noodle_txn_end(&zero);
    noodle_txn_end(NULL);
    assert_false(noodle_txn_is_active(&zero));
    assert_false(noodle_txn_is_active(NULL));
    assert_null(noodle_txn_conn(NULL));

    /* a second root on a connection already inside a transaction: 6031,
     * and the first is untouched */
    begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 6);
    noodle_txn second;
    assert_code(noodle_txn_begin(f->c, NOODLE_ISOLATION_DEFAULT, &second, &err), &err,
                NOODLE_E_TXN_INVALID_ARGUMENT);
    assert_false(noodle_txn_is_active(&second));
    noodle_txn_end(&second);
    assert_true(noodle_txn_is_active(&root));
    commit_end(&root);
    assert_committed(BIT(1) | BIT(2) | BIT(4) | BIT(6), "at the end");
}

/* Statements and new levels only on the innermost open level: 6036. */
static void a_statement_on_a_level_that_is_not_the_innermost_fails_with_6036(void **state) {
    fixture *f = *state;
    noodle_txn root, l1, l2, x;
    noodle_error err;
    noodle_rows *r = NULL;
    begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 1);
    assert_ok(noodle_txn_begin_nested(&root, &l1, &err), &err);
    assert_ok(noodle_txn_begin_nested(&l1, &l2, &err), &err);
    assert_code(tx_insert_rc(&root, 2, &err), &err, NOODLE_E_TXN_NOT_INNERMOST);
    assert_code(tx_insert_rc(&l1, 3, &err), &err, NOODLE_E_TXN_NOT_INNERMOST);
    assert_code(noodle_txn_execute(&root, "SELECT 1", NULL, 0, &r, &err), &err,
                NOODLE_E_TXN_NOT_INNERMOST);
    assert_null(r);
    assert_code(noodle_txn_begin_nested(&root, &x, &err), &err, NOODLE_E_TXN_NOT_INNERMOST);
    assert_code(noodle_txn_begin_nested(&l1, &x, &err), &err, NOODLE_E_TXN_NOT_INNERMOST);
    /* nothing changed: every level still open, the refused rows nowhere */
    assert_true(noodle_txn_is_active(&root) && noodle_txn_is_active(&l1) &&
                noodle_txn_is_active(&l2));
    assert_ptr_equal(root.innermost, &l2);
    assert_int_equal(tx_count(&l2), 1);
    tx_insert(&l2, 4);
    assert_ok(noodle_txn_commit(&l2, &err), &err);
    tx_insert(&l1, 5); /* innermost again */
    assert_ok(noodle_txn_commit(&l1, &err), &err);
    tx_insert(&root, 6);
    commit_end(&root);
    assert_committed(BIT(1) | BIT(4) | BIT(5) | BIT(6), "after the refusals");
}

/* ---- the owning thread ------------------------------------------------------------------------------- */

typedef struct intruder {
    noodle_txn *root, *inner;
    int codes[6];
} intruder;

static void *intrude(void *arg) {
    intruder *in = arg;
    noodle_error err;
    noodle_txn x;
    in->codes[0] = tx_insert_rc(in->inner, 3, &err);
    in->codes[1] = noodle_txn_commit(in->inner, &err);
    in->codes[2] = noodle_txn_rollback(in->inner, &err);
    in->codes[3] = noodle_txn_rollback(in->root, &err);
    in->codes[4] = noodle_txn_begin_nested(in->inner, &x, &err);
    in->codes[5] = noodle_txn_commit(in->root, &err);
    noodle_txn_end(in->inner); /* silently nothing from another thread */
    noodle_txn_end(in->root);
    return NULL;
}

/* Every call from a thread other than the one that began the root fails
 * with 6034 and changes nothing: the owner goes on and commits. */
static void using_a_transaction_from_another_thread_fails_with_6034_and_changes_nothing(void **state) {
    fixture *f = *state;
    noodle_txn root, inner;
    noodle_error err;
    begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 1);
    nest_with_row(&root, &inner, 2);
    intruder in = {.root = &root, .inner = &inner};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, intrude, &in), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    for (size_t i = 0; i < sizeof in.codes / sizeof in.codes[0]; i++)
        if (in.codes[i] != NOODLE_E_TXN_WRONG_THREAD)
            fail_msg("call %zu from another thread returned %d, expected 6034", i, in.codes[i]);
    assert_true(noodle_txn_is_active(&root));
    assert_true(noodle_txn_is_active(&inner));
    assert_ptr_equal(root.innermost, &inner);
    assert_int_equal(tx_count(&inner), 2);
    tx_insert(&inner, 4);
    assert_ok(noodle_txn_commit(&inner, &err), &err);
    commit_end(&root);
    assert_committed(BIT(1) | BIT(2) | BIT(4), "the owner's rows only");
}

/* ---- automatic rollback --------------------------------------------------------------------------------- */

/* A statement that fails in a nested level rolls back that level only; its
 * parent is as it was when the level began, and can go on and commit. */
static void a_failing_statement_rolls_back_only_its_nested_level(void **state) {
    fixture *f = *state;
    noodle_txn root, l1, l2;
    noodle_error err;
    begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 1);
    nest_with_row(&root, &l1, 2);
    nest_with_row(&l1, &l2, 3);
    tx_insert(&l2, 4);
    assert_code(tx_insert_rc(&l2, 1, &err), &err, NOODLE_E_QUERY_CONSTRAINT); /* duplicate key */
    assert_contains(err.message, "rolled back");
    assert_level_ended(&l2);
    assert_true(noodle_txn_is_active(&l1));
    assert_ptr_equal(root.innermost, &l1);
    assert_int_equal(tx_count(&l1), 2);
    tx_insert(&l1, 5);
    /* a syntax error one level up: that level goes too */
    nest_with_row(&l1, &l2, 6);
    noodle_rows *r = NULL;
    assert_code(noodle_txn_execute(&l2, "SELEKT nothing", NULL, 0, &r, &err), &err,
                NOODLE_E_QUERY_SYNTAX);
    assert_null(r);
    assert_level_ended(&l2);
    assert_ok(noodle_txn_commit(&l1, &err), &err);
    tx_insert(&root, 7);
    commit_end(&root);
    assert_committed(BIT(1) | BIT(2) | BIT(5) | BIT(7), "after two failed nested levels");
}

/* A statement that fails in the root rolls back the whole transaction: on
 * SQLite, which would go on, as on PostgreSQL, which aborts. */
static void a_failing_statement_in_the_root_rolls_back_the_whole_transaction(void **state) {
    fixture *f = *state;
    noodle_txn root;
    noodle_error err;
    begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 1);
    tx_insert(&root, 2);
    assert_code(tx_insert_rc(&root, 1, &err), &err, NOODLE_E_QUERY_CONSTRAINT);
    assert_contains(err.message, "the transaction was rolled back");
    assert_int_equal(root.state, NOODLE_TXN_ROLLED_BACK);
    assert_level_ended(&root);
    assert_false(noodle_conn_in_transaction(f->c));
    assert_committed(0, "after a failed statement in the root");

    noodle_rows *r = NULL;
    begin_with_row(f->c, NOODLE_ISOLATION_SERIALIZABLE, &root, 3);
    assert_code(noodle_txn_execute(&root, "SELECT nope FROM no_such_table", NULL, 0, &r, &err), &err,
                NOODLE_E_QUERY_SYNTAX);
    assert_level_ended(&root);
    assert_false(noodle_conn_in_transaction(f->c));
    /* the connection is usable */
    commit_row(f->c, NOODLE_ISOLATION_DEFAULT, 9);
    assert_committed(BIT(9), "only the last transaction");
}

/* noodle_txn_end rolls back what is still open. */
static void ending_a_level_without_committing_rolls_it_back(void **state) {
    fixture *f = *state;
    noodle_txn root, l1, l2;
    begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 1);
    nest_with_row(&root, &l1, 2);
    nest_with_row(&l1, &l2, 3);
    noodle_txn_end(&l2); /* end of l2's scope */
    assert_level_ended(&l2);
    assert_int_equal(tx_count(&l1), 2);
    commit_end(&l1); /* its end after the commit: nothing to do */
    tx_insert(&root, 4);
    commit_end(&root);
    assert_committed(BIT(1) | BIT(2) | BIT(4), "after ending l2");

    /* ending the root ends everything inside it */
    begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 5);
    nest_with_row(&root, &l1, 6);
    noodle_txn_end(&root);
    assert_level_ended(&root);
    assert_level_ended(&l1);
    noodle_txn_end(&root); /* twice: harmless */
    assert_false(noodle_conn_in_transaction(f->c));
    assert_committed(BIT(1) | BIT(2) | BIT(4), "after ending the root");
}

/* A connection released to its pool inside a transaction is rolled back. */
static void releasing_a_connection_inside_a_transaction_rolls_it_back(void **state) {
    (void)state;
    noodle_pool *pool = open_pool(1);
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_pool_acquire(pool, &c, &err), &err);
    noodle_txn root, l1;
    begin_with_row(c, NOODLE_ISOLATION_SERIALIZABLE, &root, 1);
    nest_with_row(&root, &l1, 2);
    noodle_pool_release(pool, &c); /* the levels are abandoned, not ended */
    assert_null(c);
    assert_committed(0, "after the release");
    /* the one connection of the pool is clean for its next user */
    assert_ok(noodle_pool_acquire(pool, &c, &err), &err);
    assert_false(noodle_conn_in_transaction(c));
    assert_ok(noodle_txn_begin(c, NOODLE_ISOLATION_DEFAULT, &root, &err), &err);
    assert_int_equal(tx_count(&root), 0);
    tx_insert(&root, 3);
    commit_end(&root);
    noodle_pool_release(pool, &c);
    noodle_pool_close(pool);
    assert_committed(BIT(3), "the next user's row");
}

/* ---- the server ends the transaction ---------------------------------------------------------------- */

/* COMMIT or ROLLBACK sent as SQL ends the transaction on the server: the
 * statement returns 6037 and every level has ended; the connection is
 * usable afterwards. (The mock does not take transaction statements as SQL:
 * docs/mock-backend.md.) */
static void a_commit_sent_as_sql_ends_every_level_with_6037(void **state) {
    fixture *f = *state;
    if (kind == B_MOCK) skip();
    static const char *const stmts[] = {"COMMIT", "ROLLBACK"};
    for (size_t i = 0; i < 2; i++) {
        exec_ok(f->c, "DELETE FROM txn_t");
        noodle_txn root, l1, l2;
        noodle_error err;
        begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 1);
        nest_with_row(&root, &l1, 2);
        nest_with_row(&l1, &l2, 3);
        noodle_rows *r = NULL;
        assert_code(noodle_txn_execute(&l2, stmts[i], NULL, 0, &r, &err), &err,
                    NOODLE_E_TXN_ENDED_BY_SERVER);
        assert_null(r);
        assert_false(noodle_conn_in_transaction(f->c));
        assert_level_ended(&l2);
        assert_level_ended(&l1);
        assert_level_ended(&root);
        /* what the server did stands */
        assert_committed(i == 0 ? BIT(1) | BIT(2) | BIT(3) : 0, "after %s sent as SQL", stmts[i]);
        /* and the connection goes on: a transaction, and a plain statement */
        commit_row(f->c, NOODLE_ISOLATION_DEFAULT, 10);
        exec_ok(f->c, "INSERT INTO txn_t (id, v) VALUES (11, 'autocommit')");
        assert_committed((i == 0 ? BIT(1) | BIT(2) | BIT(3) : 0) | BIT(10) | BIT(11),
                         "after a new transaction following %s", stmts[i]);
    }
}

/* noodle_txn_begin_until: the deadline bounds BEGIN and every later call. */
static void the_deadline_of_begin_until_bounds_every_statement(void **state) {
    fixture *f = *state;
    noodle_txn root;
    noodle_error err;
    int rc = noodle_txn_begin_until(f->c, NOODLE_ISOLATION_DEFAULT,
                                    noodle_clock_now(NULL) - NOODLE_MS(1), &root, &err);
    assert_code(rc, &err, NOODLE_E_BACKEND_TIMEOUT);
    assert_false(noodle_txn_is_active(&root));
    noodle_txn_end(&root);
    renew_conn(f); /* a deadline cut breaks the connection */

    assert_ok(noodle_txn_begin_until(f->c, NOODLE_ISOLATION_DEFAULT,
                                     noodle_deadline_after(NULL, NOODLE_MS(300)), &root, &err),
              &err);
    assert_int_equal(root.deadline != NOODLE_NO_DEADLINE, 1);
    tx_insert(&root, 1);
    noodle_test_sleep_ms(400);
    assert_code(tx_insert_rc(&root, 2, &err), &err, NOODLE_E_BACKEND_TIMEOUT);
    assert_level_ended(&root);
    assert_int_equal(noodle_conn_get_state(f->c), NOODLE_CONN_BROKEN);
    renew_conn(f);
    assert_committed(0, "after the deadline passed");
}

/* ---- fail points ------------------------------------------------------------------------------------- */

/* After a fail point fired with code: the code surfaced (with the point in
 * the error), and a connection-fatal code broke the connection. */
static void assert_fail_point_error(int rc, const noodle_error *err, int code, const char *op) {
    int want = FP_WANT(code);
    if (rc != want || err->code != want) {
        char text[1024];
        noodle_error_format(err, text, sizeof text);
        fail_msg("fail point %s (code %d): expected %d, got %d: %s", op, code, want, rc, text);
    }
}

static bool conn_broken(const fixture *f) { return noodle_conn_get_state(f->c) == NOODLE_CONN_BROKEN; }

/* The armed op fired exactly once and its failure surfaced as rc/err (see
 * assert_fail_point_error); every point is disarmed. */
static void fp_expect_failure(int rc, const noodle_error *err, int code, const char *op) {
    assert_int_equal(fp_fired(op), 1);
    fp_disarm_all();
    assert_fail_point_error(rc, err, code, op);
}

/* A connection-fatal code (0: the point's default) broke the connection,
 * which is then replaced; a statement-level one left it usable. */
static void renew_if_broken_by(fixture *f, int code) {
    assert_int_equal(conn_broken(f), code == 0);
    if (conn_broken(f)) renew_conn(f);
}

/* BEGIN fails: nothing begins, the connection is left outside any
 * transaction (and usable, unless the code broke it). */
static void a_failing_begin_begins_nothing(void **state) {
    fixture *f = *state;
    for (size_t ci = 0; ci < sizeof fp_codes / sizeof fp_codes[0]; ci++) {
        int code = fp_codes[ci];
        noodle_txn t;
        noodle_error err;
        fp_arm("begin", code, 1, 1);
        int rc = noodle_txn_begin(f->c, NOODLE_ISOLATION_SERIALIZABLE, &t, &err);
        fp_expect_failure(rc, &err, code, "begin");
        assert_contains(err.detail, "fail point");
        assert_false(noodle_txn_is_active(&t));
        noodle_txn_end(&t);
        assert_false(noodle_conn_in_transaction(f->c));
        renew_if_broken_by(f, code);
        assert_ok(noodle_txn_begin(f->c, NOODLE_ISOLATION_SERIALIZABLE, &t, &err), &err);
        tx_insert(&t, (int64_t)ci);
        commit_end(&t);
    }
    assert_committed(BIT(0) | BIT(1), "one transaction after each failed begin");
}

/* The n-th statement of a level fails: none of the level's statements
 * survive; a nested level's parent goes on, a root commits nothing. */
static void a_failing_statement_leaves_no_partial_writes_of_its_level(void **state) {
    fixture *f = *state;
    for (size_t ci = 0; ci < sizeof fp_codes / sizeof fp_codes[0]; ci++) {
        int code = fp_codes[ci];
        for (int depth = 0; depth <= 1; depth++) {
            for (int nth = 1; nth <= 3; nth++) {
                exec_ok(f->c, "DELETE FROM txn_t");
                noodle_txn root, inner;
                noodle_error err;
                assert_ok(noodle_txn_begin(f->c, NOODLE_ISOLATION_DEFAULT, &root, &err), &err);
                noodle_txn *level = &root;
                if (depth == 1) {
                    tx_insert(&root, 1);
                    assert_ok(noodle_txn_begin_nested(&root, &inner, &err), &err);
                    level = &inner;
                }
                fp_arm("execute", code, nth, 1);
                int rc = 0;
                for (int s = 1; s <= 3 && rc == 0; s++) {
                    rc = tx_insert_rc(level, 10 + s, &err);
                    if (s < nth) assert_ok(rc, &err);
                }
                assert_int_equal(fp_fired("execute"), 1);
                fp_disarm_all();
                assert_fail_point_error(rc, &err, code, "execute");
                assert_level_ended(level);
                uint64_t want = 0;
                if (code != 0 && depth == 1) {
                    /* the parent is as it was when the level began */
                    assert_true(noodle_txn_is_active(&root));
                    assert_int_equal(tx_count(&root), 1);
                    assert_ok(noodle_txn_commit(&root, &err), &err);
                    want = BIT(1);
                } else {
                    assert_level_ended(&root);
                    assert_false(noodle_conn_in_transaction(f->c));
                }
                noodle_txn_end(&root);
                renew_if_broken_by(f, code);
                assert_committed(want, "code %d, depth %d, statement %d failed", code, depth, nth);
            }
        }
    }
}

/* SAVEPOINT fails: it is a failed step of the level it was taken in, which
 * is rolled back (the root: the whole transaction). */
static void a_failing_savepoint_rolls_back_the_level_it_was_taken_in(void **state) {
    fixture *f = *state;
    for (size_t ci = 0; ci < sizeof fp_codes / sizeof fp_codes[0]; ci++) {
        int code = fp_codes[ci];
        for (int depth = 0; depth <= 1; depth++) {
            exec_ok(f->c, "DELETE FROM txn_t");
            noodle_txn root, l1, x;
            noodle_error err;
            begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 1);
            noodle_txn *parent = &root;
            if (depth == 1) {
                nest_with_row(&root, &l1, 2);
                parent = &l1;
            }
            fp_arm("savepoint", code, 1, 1);
            int rc = noodle_txn_begin_nested(parent, &x, &err);
            fp_expect_failure(rc, &err, code, "savepoint");
            assert_false(noodle_txn_is_active(&x));
            noodle_txn_end(&x);
            assert_level_ended(parent);
            uint64_t want = 0;
            if (code != 0 && depth == 1) {
                assert_true(noodle_txn_is_active(&root));
                assert_int_equal(tx_count(&root), 1);
                tx_insert(&root, 3);
                assert_ok(noodle_txn_commit(&root, &err), &err);
                want = BIT(1) | BIT(3);
            } else {
                assert_level_ended(&root);
                assert_false(noodle_conn_in_transaction(f->c));
            }
            noodle_txn_end(&root);
            renew_if_broken_by(f, code);
            assert_committed(want, "code %d, savepoint at depth %d failed", code, depth);
        }
    }
}

/* RELEASE (a nested commit) fails: the nested level is rolled back, its
 * parent goes on. */
static void a_failing_release_rolls_back_the_nested_level(void **state) {
    fixture *f = *state;
    for (size_t ci = 0; ci < sizeof fp_codes / sizeof fp_codes[0]; ci++) {
        int code = fp_codes[ci];
        exec_ok(f->c, "DELETE FROM txn_t");
        noodle_txn root, l1, l2;
        noodle_error err;
        begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 1);
        nest_with_row(&root, &l1, 2);
        nest_with_row(&l1, &l2, 3);
        tx_insert(&l2, 4);
        fp_arm("release", code, 1, 1);
        int rc = noodle_txn_commit(&l2, &err);
        fp_expect_failure(rc, &err, code, "release");
        assert_level_ended(&l2);
        uint64_t want = 0;
        if (code != 0) {
            assert_true(noodle_txn_is_active(&l1));
            assert_int_equal(tx_count(&l1), 2);
            assert_ok(noodle_txn_commit(&l1, &err), &err);
            assert_ok(noodle_txn_commit(&root, &err), &err);
            want = BIT(1) | BIT(2);
        } else {
            assert_level_ended(&l1);
            assert_level_ended(&root);
        }
        noodle_txn_end(&root);
        assert_false(noodle_conn_in_transaction(f->c));
        renew_if_broken_by(f, code);
        assert_committed(want, "code %d, release failed", code);
    }
}

/* COMMIT fails before it is sent: nothing is committed, the connection is
 * left outside any transaction, and the failure is definite (not 4015). */
static void a_failing_commit_commits_nothing(void **state) {
    fixture *f = *state;
    for (size_t ci = 0; ci < sizeof fp_codes / sizeof fp_codes[0]; ci++) {
        int code = fp_codes[ci];
        noodle_txn root, l1;
        noodle_error err;
        begin_with_row(f->c, NOODLE_ISOLATION_SERIALIZABLE, &root, 1);
        nest_with_row(&root, &l1, 2);
        assert_ok(noodle_txn_commit(&l1, &err), &err);
        fp_arm("commit", code, 1, 1);
        int rc = noodle_txn_commit(&root, &err);
        fp_expect_failure(rc, &err, code, "commit");
        assert_int_equal(root.state, NOODLE_TXN_ROLLED_BACK);
        assert_level_ended(&root);
        noodle_txn_end(&root);
        assert_false(noodle_conn_in_transaction(f->c));
        renew_if_broken_by(f, code);
        assert_committed(0, "code %d, commit failed", code);
    }
}

/* ROLLBACK TO SAVEPOINT fails (the level's own rollback, or the automatic
 * one after a failed statement) with a code that leaves the connection
 * usable: the level's work was not undone, so it must never be committed
 * with its parent (invariant 3: no partial work of a level survives). */
static void a_nested_level_whose_rollback_failed_is_never_committed(void **state) {
    fixture *f = *state;
    char failures[1024] = "";
    for (int via_statement = 0; via_statement <= 1; via_statement++) {
        exec_ok(f->c, "DELETE FROM txn_t");
        noodle_txn root, l1;
        noodle_error err;
        begin_with_row(f->c, NOODLE_ISOLATION_DEFAULT, &root, 1);
        nest_with_row(&root, &l1, 2);
        fp_arm("rollback_to", NOODLE_E_QUERY_FAILED, 1, 1);
        int rc;
        if (via_statement) {
            fp_arm("execute", NOODLE_E_QUERY_FAILED, 1, 1);
            rc = tx_insert_rc(&l1, 3, &err);
        } else {
            rc = noodle_txn_rollback(&l1, &err);
        }
        assert_int_equal(fp_fired("rollback_to"), 1);
        fp_disarm_all();
        assert_code(rc, &err, NOODLE_E_QUERY_FAILED);
        assert_level_ended(&l1);
        /* whatever the manager did, committing what is left must not
         * commit row 2 */
        if (noodle_txn_is_active(&root)) (void)!noodle_txn_commit(&root, &err);
        noodle_txn_end(&root);
        uint64_t got = committed_ids();
        if (got & BIT(2)) {
            char text[256];
            size_t used = strlen(failures);
            snprintf(failures + used, sizeof failures - used,
                     "%s%s: the rolled back level's row 2 was committed with its parent (rows %s)",
                     used ? "; " : "",
                     via_statement ? "failed statement, then failed ROLLBACK TO"
                                   : "noodle_txn_rollback with a failed ROLLBACK TO",
                     ids_text(got, text, sizeof text));
        }
        if (noodle_conn_in_transaction(f->c) || conn_broken(f)) renew_conn(f);
    }
    if (failures[0] != '\0') fail_msg("%s", failures);
}

/* ---- noodle_txn_run -------------------------------------------------------------------------------------- */

/* The work of one attempt: insert row id; then fail with fail_with (0:
 * commit), on every call or on the first fail_calls calls only. */
typedef struct work {
    int64_t id;
    int calls;
    int fail_with;
    int fail_calls;     /* 0: every call */
    bool set_error;     /* fill err when failing */
    bool leave_nested;  /* return 0 with a nested level still open */
    noodle_txn nested;
} work;

static int work_fn(noodle_txn *t, void *arg, noodle_error *err) {
    work *w = arg;
    w->calls++;
    int rc = tx_insert_rc(t, w->id, err);
    if (rc != 0) return rc;
    if (w->leave_nested) {
        rc = noodle_txn_begin_nested(t, &w->nested, err);
        if (rc == 0) rc = tx_insert_rc(&w->nested, w->id + 1, err);
        return rc;
    }
    if (w->fail_with != 0 && (w->fail_calls == 0 || w->calls <= w->fail_calls)) {
        if (w->set_error) return NOODLE_ERR(err, w->fail_with, "the work refused (call %d)", w->calls);
        return w->fail_with;
    }
    return 0;
}

static noodle_txn_options run_options(int max_attempts) {
    noodle_txn_options o = NOODLE_TXN_OPTIONS_INIT;
    o.isolation = NOODLE_ISOLATION_SERIALIZABLE;
    o.max_attempts = max_attempts;
    o.backoff_base_ms = 1;
    o.backoff_max_ms = 5;
    o.seed = 42;
    return o;
}

/* noodle_txn_run of w with op's fail point armed (code) on its first count
 * calls; disarmed again before it returns. */
static int run_armed(noodle_pool *pool, noodle_txn_options *o, work *w, const char *op, int code,
                     int count, noodle_error *err) {
    fp_arm(op, code, 1, count);
    int rc = noodle_txn_run(pool, o, work_fn, w, err);
    fp_disarm_all();
    return rc;
}

/* The run took attempts attempts and called the work calls times. */
static void assert_attempts(const noodle_txn_options *o, int attempts, const work *w, int calls) {
    assert_int_equal(o->attempts, attempts);
    assert_int_equal(w->calls, calls);
}

static void run_commits_the_work_of_its_function(void **state) {
    (void)state;
    noodle_pool *pool = open_pool(2);
    noodle_error err;
    work w = {.id = 1};
    noodle_txn_options o = run_options(0);
    o.attempts = -7; /* out only */
    assert_ok(noodle_txn_run(pool, &o, work_fn, &w, &err), &err);
    assert_attempts(&o, 1, &w, 1);
    /* without options: the defaults */
    work w2 = {.id = 2};
    assert_ok(noodle_txn_run(pool, NULL, work_fn, &w2, &err), &err);
    assert_int_equal(w2.calls, 1);
    noodle_pool_close(pool);
    assert_committed(BIT(1) | BIT(2), "two runs");
}

/* fn returning a code rolls the attempt back; a code that is not a
 * conflict is returned at once. */
static void run_rolls_back_when_the_function_returns_a_code(void **state) {
    (void)state;
    noodle_pool *pool = open_pool(2);
    noodle_error err;
    work w = {.id = 1, .fail_with = NOODLE_E_QUERY_DATA};
    noodle_txn_options o = run_options(5);
    assert_code(noodle_txn_run(pool, &o, work_fn, &w, &err), &err, NOODLE_E_QUERY_DATA);
    assert_contains(err.message, "returned 5010");
    assert_attempts(&o, 1, &w, 1);
    /* its own error is kept */
    work w2 = {.id = 2, .fail_with = NOODLE_E_QUERY_CONSTRAINT, .set_error = true};
    assert_code(noodle_txn_run(pool, &o, work_fn, &w2, &err), &err, NOODLE_E_QUERY_CONSTRAINT);
    assert_contains(err.message, "the work refused (call 1)");
    assert_int_equal(o.attempts, 1);
    /* returning 0 with a level still open inside the root: 6033, rolled back */
    work w3 = {.id = 3, .leave_nested = true};
    assert_code(noodle_txn_run(pool, &o, work_fn, &w3, &err), &err, NOODLE_E_TXN_INNER_OPEN);
    assert_int_equal(w3.calls, 1);
    noodle_pool_close(pool);
    assert_committed(0, "nothing from refused work");
}

/* Retryable conflicts (at COMMIT, or in a statement, or returned by fn) are
 * retried, and opts.attempts counts the attempts. */
static void run_retries_conflicts_until_an_attempt_commits(void **state) {
    (void)state;
    noodle_pool *pool = open_pool(2);
    noodle_error err;
    static const char *const where[] = {"commit", "execute"};
    for (int i = 0; i < 2; i++) {
        work w = {.id = 1 + i};
        noodle_txn_options o = run_options(5);
        int rc = run_armed(pool, &o, &w, where[i], NOODLE_E_QUERY_SERIALIZATION, 2, &err);
        assert_ok(rc, &err);
        assert_attempts(&o, 3, &w, 3);
    }
    /* the work itself reports a deadlock, then a busy database */
    work w = {.id = 3, .fail_with = NOODLE_E_QUERY_DEADLOCK, .fail_calls = 1, .set_error = true};
    noodle_txn_options o = run_options(5);
    assert_ok(noodle_txn_run(pool, &o, work_fn, &w, &err), &err);
    assert_int_equal(o.attempts, 2);
    work wb = {.id = 4, .fail_with = NOODLE_E_QUERY_BUSY, .fail_calls = 2};
    assert_ok(noodle_txn_run(pool, &o, work_fn, &wb, &err), &err);
    assert_int_equal(o.attempts, 3);
    noodle_pool_close(pool);
    /* each row exactly once: the failed attempts left nothing */
    assert_committed(BIT(1) | BIT(2) | BIT(3) | BIT(4), "after the retries");
    assert_int_equal(committed_count(), 4);
}

/* The observer hears of each run once, with its outcome and attempts. */
typedef struct txn_seen {
    int n, code, attempts;
    int64_t duration_ns;
} txn_seen;

static void txn_seen_fn(const noodle_txn_event *ev, void *arg) {
    txn_seen *s = arg;
    s->n++;
    s->code = ev->code;
    s->attempts = ev->attempts;
    s->duration_ns = ev->duration_ns;
}

static void run_tells_its_observer_the_outcome_and_attempts_once(void **state) {
    (void)state;
    noodle_pool *pool = open_pool(2);
    noodle_error err;
    txn_seen seen = {0};
    work w = {.id = 1};
    noodle_txn_options o = run_options(5);
    o.observer = txn_seen_fn;
    o.observer_arg = &seen;
    assert_ok(run_armed(pool, &o, &w, "commit", NOODLE_E_QUERY_SERIALIZATION, 2, &err), &err);
    assert_int_equal(seen.n, 1);
    assert_int_equal(seen.code, 0);
    assert_int_equal(seen.attempts, 3);
    assert_true(seen.duration_ns > 0);
    work w2 = {.id = 2, .fail_with = NOODLE_E_QUERY_DATA};
    assert_code(noodle_txn_run(pool, &o, work_fn, &w2, &err), &err, NOODLE_E_QUERY_DATA);
    assert_int_equal(seen.n, 2);
    assert_int_equal(seen.code, NOODLE_E_QUERY_DATA);
    assert_int_equal(seen.attempts, 1);
    noodle_pool_close(pool);
    assert_committed(BIT(1), "the first run only");
}

/* The mock's own injected conflicts (fail_next) are retried the same way. */
static void run_retries_conflicts_injected_by_the_mock_node(void **state) {
    (void)state;
    if (kind != B_MOCK) skip();
    noodle_pool *pool = open_pool(2);
    noodle_error err;
    struct {
        noodle_mock_op op;
        int code;
    } each[] = {{NOODLE_MOCK_OP_COMMIT, NOODLE_E_QUERY_SERIALIZATION},
                {NOODLE_MOCK_OP_EXECUTE, NOODLE_E_QUERY_SERIALIZATION},
                {NOODLE_MOCK_OP_COMMIT, NOODLE_E_QUERY_DEADLOCK},
                {NOODLE_MOCK_OP_BEGIN, NOODLE_E_QUERY_BUSY}};
    for (int i = 0; i < 4; i++) {
        work w = {.id = 1 + i};
        noodle_txn_options o = run_options(5);
        assert_ok(noodle_mock_fail_next(NODE, each[i].op, 2, each[i].code, &err), &err);
        assert_ok(noodle_txn_run(pool, &o, work_fn, &w, &err), &err);
        assert_attempts(&o, 3, &w, each[i].op == NOODLE_MOCK_OP_BEGIN ? 1 : 3);
    }
    noodle_pool_close(pool);
    assert_committed(BIT(1) | BIT(2) | BIT(3) | BIT(4), "after the retries");
    assert_int_equal(noodle_mock_node_rows(NODE, "txn_t"), 4);
}

/* Conflicting on every attempt: 6035 after max_attempts, the last conflict
 * in the message, nothing committed. */
static void run_gives_up_after_max_attempts_with_6035_naming_the_last_conflict(void **state) {
    (void)state;
    noodle_pool *pool = open_pool(2);
    noodle_error err;
    work w = {.id = 1};
    noodle_txn_options o = run_options(3);
    int rc = run_armed(pool, &o, &w, "commit", NOODLE_E_QUERY_SERIALIZATION, 1000, &err);
    assert_code(rc, &err, NOODLE_E_TXN_RETRIES_EXHAUSTED);
    assert_attempts(&o, 3, &w, 3);
    assert_contains(err.message, "3 attempts");
    assert_contains(err.message, "NOODLE-5003");
    /* the default is 5 attempts */
    work w5 = {.id = 2, .fail_with = NOODLE_E_QUERY_BUSY};
    noodle_txn_options d = NOODLE_TXN_OPTIONS_INIT;
    d.backoff_base_ms = 1;
    d.backoff_max_ms = 2;
    assert_code(noodle_txn_run(pool, &d, work_fn, &w5, &err), &err, NOODLE_E_TXN_RETRIES_EXHAUSTED);
    assert_int_equal(d.attempts, 5);
    assert_int_equal(w5.calls, 5);
    assert_contains(err.message, "NOODLE-5005");
    if (kind == B_MOCK) {
        work wm = {.id = 3};
        assert_ok(noodle_mock_fail_next(NODE, NOODLE_MOCK_OP_COMMIT, 10, NOODLE_E_QUERY_SERIALIZATION,
                                        &err),
                  &err);
        assert_code(noodle_txn_run(pool, &o, work_fn, &wm, &err), &err,
                    NOODLE_E_TXN_RETRIES_EXHAUSTED);
        assert_int_equal(o.attempts, 3);
        assert_contains(err.message, "fail_next"); /* the node's own fault, named */
    }
    noodle_pool_close(pool);
    assert_committed(0, "nothing after giving up");
}

/* Codes that are not conflicts are returned after one attempt. */
static void run_does_not_retry_a_code_that_is_not_a_conflict(void **state) {
    (void)state;
    noodle_pool *pool = open_pool(2);
    noodle_error err;
    struct {
        const char *op;
        int code, want, calls;
    } each[] = {{"commit", NOODLE_E_QUERY_CONSTRAINT, NOODLE_E_QUERY_CONSTRAINT, 1},
                {"execute", 0, NOODLE_E_CONNECTION_LOST, 1},
                {"begin", NOODLE_E_QUERY_FAILED, NOODLE_E_QUERY_FAILED, 0},
                {"commit", NOODLE_E_QUERY_READ_ONLY, NOODLE_E_QUERY_READ_ONLY, 1}};
    for (int i = 0; i < 4; i++) {
        work w = {.id = 1 + i};
        noodle_txn_options o = run_options(5);
        int rc = run_armed(pool, &o, &w, each[i].op, each[i].code, 1000, &err);
        assert_code(rc, &err, each[i].want);
        assert_attempts(&o, 1, &w, each[i].calls);
    }
    noodle_pool_close(pool);
    assert_committed(0, "nothing after non-retryable failures");
}

/* A COMMIT whose outcome is unknown is returned at once as 4015, after
 * exactly one attempt: retrying could apply it twice. The mock loses the
 * acknowledgement of a COMMIT it applied; on the other backends the commit
 * fail point reports 4015. */
static void run_returns_4015_at_once_when_the_commit_outcome_is_unknown(void **state) {
    (void)state;
    noodle_pool *pool = open_pool(2);
    noodle_error err;
    work w = {.id = 1};
    noodle_txn_options o = run_options(5);
    if (kind == B_MOCK) {
        assert_ok(noodle_mock_commit_ack_lost(NODE, 1, &err), &err);
    } else {
        fp_arm("commit", NOODLE_E_OUTCOME_UNKNOWN, 1, 1000);
    }
    int rc = noodle_txn_run(pool, &o, work_fn, &w, &err);
    fp_disarm_all();
    assert_code(rc, &err, NOODLE_E_OUTCOME_UNKNOWN);
    assert_attempts(&o, 1, &w, 1);
    noodle_pool_close(pool);
    if (kind == B_MOCK) {
        /* it was applied, once */
        assert_committed(BIT(1), "the commit whose acknowledgement was lost");
        assert_int_equal(noodle_mock_node_rows(NODE, "txn_t"), 1);
    } else {
        assert_committed(0, "the fail point fired before COMMIT was sent");
    }
}

/* PostgreSQL: the server process dies while it runs COMMIT (a deferred
 * trigger terminates its own backend), so the client cannot know the
 * outcome: 4015 after exactly one attempt, never a retry. (Here the
 * transaction died before it committed.) */
static void run_returns_4015_when_postgres_loses_the_connection_during_commit(void **state) {
    fixture *f = *state;
    if (kind != B_POSTGRES) skip();
    exec_ok(f->c, "CREATE OR REPLACE FUNCTION txn_die() RETURNS trigger LANGUAGE plpgsql AS $$ "
                  "BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); "
                  "RETURN NULL; END $$");
    exec_ok(f->c, "CREATE CONSTRAINT TRIGGER txn_die AFTER INSERT ON txn_t DEFERRABLE INITIALLY "
                  "DEFERRED FOR EACH ROW EXECUTE FUNCTION txn_die()");
    noodle_pool *pool = open_pool(2);
    noodle_error err;
    work w = {.id = 1};
    noodle_txn_options o = run_options(5);
    assert_code(noodle_txn_run(pool, &o, work_fn, &w, &err), &err, NOODLE_E_OUTCOME_UNKNOWN);
    assert_contains(err.message, "may or may not");
    assert_attempts(&o, 1, &w, 1);
    noodle_pool_close(pool);
    assert_committed(0, "the session died before its commit");
}

static void run_rejects_bad_arguments_with_6031(void **state) {
    (void)state;
    noodle_pool *pool = open_pool(1);
    noodle_error err;
    work w = {.id = 1};
    assert_code(noodle_txn_run(NULL, NULL, work_fn, &w, &err), &err, NOODLE_E_TXN_INVALID_ARGUMENT);
    assert_code(noodle_txn_run(pool, NULL, NULL, &w, &err), &err, NOODLE_E_TXN_INVALID_ARGUMENT);
    noodle_txn_options o = NOODLE_TXN_OPTIONS_INIT;
    o.struct_size = sizeof o - 1;
    assert_code(noodle_txn_run(pool, &o, work_fn, &w, &err), &err, NOODLE_E_TXN_INVALID_ARGUMENT);
    assert_code(noodle_txn_run_cluster(NULL, NULL, work_fn, &w, &err), &err,
                NOODLE_E_TXN_INVALID_ARGUMENT);
    assert_int_equal(w.calls, 0);
    noodle_pool_close(pool);
}

static void only_conflicts_are_retryable(void **state) {
    (void)state;
    assert_true(noodle_code_is_retryable(NOODLE_E_QUERY_SERIALIZATION));
    assert_true(noodle_code_is_retryable(NOODLE_E_QUERY_DEADLOCK));
    assert_true(noodle_code_is_retryable(NOODLE_E_QUERY_BUSY));
    const int not_retryable[] = {0, NOODLE_E_OUTCOME_UNKNOWN, NOODLE_E_CONNECTION_LOST,
                                 NOODLE_E_QUERY_CONSTRAINT, NOODLE_E_QUERY_SYNTAX,
                                 NOODLE_E_TXN_RETRIES_EXHAUSTED, NOODLE_E_POOL_TIMEOUT,
                                 NOODLE_E_BACKEND_TIMEOUT, NOODLE_E_TXN_ENDED_BY_SERVER};
    for (size_t i = 0; i < sizeof not_retryable / sizeof not_retryable[0]; i++)
        if (noodle_code_is_retryable(not_retryable[i]))
            fail_msg("%d is not a conflict but counts as retryable", not_retryable[i]);
}

/* ---- real conflicts ------------------------------------------------------------------------------------------ */

static int64_t query_n(noodle_conn *c) { return noodle_test_query_int(c, "SELECT n FROM txn_n WHERE id = 1"); }

/* Read n, let another connection add 100 to it (first call only), write
 * n + 1 from what was read. */
typedef struct read_write {
    noodle_conn *other;
    int calls;
    int other_rc;
    bool read_first; /* SELECT before the write (SQLite: then a locked database is not waited for) */
} read_write;

static int read_then_write_fn(noodle_txn *t, void *arg, noodle_error *err) {
    read_write *x = arg;
    x->calls++;
    noodle_rows *r = NULL;
    int rc = noodle_txn_execute(t, "SELECT n FROM txn_n WHERE id = 1", NULL, 0, &r, err);
    if (rc != 0) return rc;
    int64_t n = noodle_rows_get(r, 0, 0)->v.i;
    noodle_rows_free(r);
    if (x->calls == 1 && x->other != NULL) {
        noodle_error oerr;
        x->other_rc = noodle_conn_execute(x->other, "UPDATE txn_n SET n = n + 100 WHERE id = 1", NULL,
                                          0, noodle_deadline_after(NULL, NOODLE_SEC(5)), &r, &oerr);
        noodle_rows_free(r);
    }
    noodle_value p[1] = {noodle_int64(n + 1)};
    rc = noodle_txn_execute(t, "UPDATE txn_n SET n = ? WHERE id = 1", p, 1, &r, err);
    noodle_rows_free(r);
    return rc;
}

static void create_counter(noodle_conn *c) {
    exec_ok(c, "DROP TABLE IF EXISTS txn_n");
    exec_ok(c, "CREATE TABLE txn_n (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)");
    exec_ok(c, "INSERT INTO txn_n (id, n) VALUES (1, 0)");
}

/* A real write conflict between two connections is retried and no update
 * is lost: PostgreSQL and the mock at SERIALIZABLE (40001 at the UPDATE /
 * at COMMIT); SQLite with a deferred transaction, whose write after another
 * connection's commit fails with SQLITE_BUSY_SNAPSHOT (5003). */
static void run_retries_a_real_conflict_between_two_connections(void **state) {
    fixture *f = *state;
    create_counter(f->c);
    noodle_pool *pool = open_pool(2);
    noodle_error err;
    read_write x = {.other = f->c};
    noodle_txn_options o = run_options(5);
    o.isolation = kind == B_SQLITE ? NOODLE_ISOLATION_DEFAULT : NOODLE_ISOLATION_SERIALIZABLE;
    assert_ok(noodle_txn_run(pool, &o, read_then_write_fn, &x, &err), &err);
    assert_int_equal(x.other_rc, 0);
    assert_int_equal(o.attempts, 2);
    assert_int_equal(x.calls, 2);
    noodle_pool_close(pool);
    assert_int_equal(query_n(f->c), 101); /* the other's +100 and the run's +1 */
}

typedef struct releaser {
    noodle_conn *holder;
    int delay_ms;
    int rc;
} releaser;

static void *release_later(void *arg) {
    releaser *r = arg;
    noodle_test_sleep_ms(r->delay_ms);
    noodle_error err;
    r->rc = noodle_conn_rollback(r->holder, DEADLINE(), &err);
    return NULL;
}

/* SQLite: a database locked by another connection (SQLITE_BUSY, 5005) is a
 * conflict like any other. A transaction that has read and then must write
 * gets it at once and is retried until the lock is gone; a BEGIN that waits
 * for the lock until the run's deadline ends the run with 6035 naming 5005. */
static void run_retries_a_real_sqlite_busy_between_two_connections(void **state) {
    fixture *f = *state;
    if (kind != B_SQLITE) skip();
    create_counter(f->c);
    noodle_pool *pool = open_pool(2);
    noodle_error err;
    noodle_conn *holder = open_conn();
    assert_ok(noodle_conn_begin(holder, NOODLE_ISOLATION_SERIALIZABLE, DEADLINE(), &err), &err);
    releaser rel = {.holder = holder, .delay_ms = 200};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, release_later, &rel), 0);
    read_write x = {0};
    noodle_txn_options o = run_options(200);
    o.isolation = NOODLE_ISOLATION_DEFAULT;
    o.backoff_base_ms = 5;
    o.backoff_max_ms = 20;
    int64_t start = noodle_test_now_ms();
    int rc = noodle_txn_run(pool, &o, read_then_write_fn, &x, &err);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_ok(rc, &err);
    assert_int_equal(rel.rc, 0);
    if (o.attempts < 2)
        fail_msg("the write waited for the lock (%lld ms) instead of failing busy and being retried",
                 (long long)(noodle_test_now_ms() - start));
    print_message("sqlite busy: committed on attempt %d after %lld ms\n", o.attempts,
                  (long long)(noodle_test_now_ms() - start));
    assert_int_equal(query_n(f->c), 1);

    /* BEGIN IMMEDIATE waits for the lock until the run's deadline */
    assert_ok(noodle_conn_begin(holder, NOODLE_ISOLATION_SERIALIZABLE, DEADLINE(), &err), &err);
    noodle_txn_options d = run_options(5);
    d.deadline = noodle_deadline_after(NULL, NOODLE_MS(300));
    read_write y = {0};
    assert_code(noodle_txn_run(pool, &d, read_then_write_fn, &y, &err), &err,
                NOODLE_E_TXN_RETRIES_EXHAUSTED);
    assert_contains(err.message, "before its deadline");
    assert_contains(err.message, "NOODLE-5005");
    assert_int_equal(y.calls, 0);
    assert_ok(noodle_conn_rollback(holder, DEADLINE(), &err), &err);
    noodle_conn_close(holder);
    noodle_pool_close(pool);
    assert_int_equal(query_n(f->c), 1);
}

/* ---- clusters ---------------------------------------------------------------------------------------------- */

/* noodle_txn_run_cluster runs on the primary (the mock: a standby listed
 * first, then the primary; the other backends: one node), with retries. */
static void run_on_a_cluster_commits_on_the_primary(void **state) {
    (void)state;
    noodle_error err;
    char sb_url[64];
    const char *endpoints[2];
    size_t n = 0;
    if (kind == B_MOCK) {
        snprintf(sb_url, sizeof sb_url, "mock://%s", NODE_SB);
        noodle_connect_params p = {.url = sb_url, .deadline = DEADLINE()};
        noodle_conn *c = NULL;
        assert_ok(noodle_conn_open(ops, &p, &c, &err), &err);
        exec_ok(c, "DROP TABLE IF EXISTS txn_t");
        exec_ok(c, "CREATE TABLE txn_t (id BIGINT PRIMARY KEY, v TEXT)");
        noodle_conn_close(c);
        assert_ok(noodle_mock_node_set_role(NODE_SB, NOODLE_ROLE_STANDBY, &err), &err);
        endpoints[n++] = sb_url;
    }
    endpoints[n++] = url;
    noodle_config cfg;
    pool_config(&cfg, 4);
    noodle_cluster_options co = NOODLE_CLUSTER_OPTIONS_INIT;
    co.config = &cfg;
    co.endpoints = endpoints;
    co.nendpoints = n;
    co.backend = ops;
    co.application_name = "noodle-test-txn";
    co.seed = 7;
    co.probe_interval_ms = 100;
    co.fast_probe_interval_ms = 20;
    co.probe_timeout_ms = 2000;
    co.slow_start_ms = -1;
    co.wait_for_primary = true;
    noodle_cluster *cl = NULL;
    int rc = noodle_cluster_open(&co, &cl, &err);
    noodle_config_free(&cfg);
    assert_ok(rc, &err);

    work w = {.id = 1};
    noodle_txn_options o = run_options(5);
    assert_ok(noodle_txn_run_cluster(cl, &o, work_fn, &w, &err), &err);
    assert_int_equal(o.attempts, 1);
    work w2 = {.id = 2};
    fp_arm("commit", NOODLE_E_QUERY_SERIALIZATION, 1, 1);
    rc = noodle_txn_run_cluster(cl, &o, work_fn, &w2, &err);
    fp_disarm_all();
    assert_ok(rc, &err);
    assert_int_equal(o.attempts, 2);
    work w3 = {.id = 3};
    assert_ok(noodle_txn_run_cluster(cl, NULL, work_fn, &w3, &err), &err);
    noodle_cluster_close(cl);
    assert_committed(BIT(1) | BIT(2) | BIT(3), "three runs on the cluster");
    if (kind == B_MOCK) {
        assert_int_equal(noodle_mock_node_rows(NODE, "txn_t"), 3);
        assert_int_equal(noodle_mock_node_rows(NODE_SB, "txn_t"), 0);
    }
}

/* ---- the bank (STD-TXN) ------------------------------------------------------------------------------------ */

enum { ACCOUNTS = 10, BANK_THREADS = 16, INITIAL_BALANCE = 1000, BANK_MS = 2000 };

typedef struct bank {
    noodle_pool *pool;
    atomic_bool stop;
    atomic_long transfers, skipped, retries, exhausted;
} bank;

typedef struct bank_worker {
    bank *b;
    uint64_t rng;
} bank_worker;

typedef struct transfer {
    int64_t from, to, amount;
    bool skipped;
} transfer;

/* Move amount from one account to another, unless the balance is short. */
static int transfer_fn(noodle_txn *t, void *arg, noodle_error *err) {
    transfer *x = arg;
    noodle_value p[2] = {noodle_int64(x->from)};
    noodle_rows *r = NULL;
    int rc = noodle_txn_execute(t, "SELECT balance FROM txn_acct WHERE id = ?", p, 1, &r, err);
    if (rc != 0) return rc;
    const noodle_value *v = noodle_rows_get(r, 0, 0);
    int64_t balance = noodle_rows_count(r) == 1 && v->type == NOODLE_TYPE_INT64 ? v->v.i : -1;
    noodle_rows_free(r);
    if (balance < 0)
        return NOODLE_ERR(err, NOODLE_E_QUERY_DATA, "account %lld has no balance", (long long)x->from);
    x->skipped = balance < x->amount;
    if (x->skipped) return 0;
    /* the accounts in id order, so that two transfers never wait for each
     * other's row locks in a cycle (PostgreSQL would find the deadlock only
     * after deadlock_timeout, 1 s) */
    for (int step = 0; step < 2 && rc == 0; step++) {
        bool debit = (step == 0) == (x->from < x->to);
        p[0] = noodle_int64(x->amount);
        p[1] = noodle_int64(debit ? x->from : x->to);
        rc = noodle_txn_execute(t,
                                debit ? "UPDATE txn_acct SET balance = balance - ? WHERE id = ?"
                                      : "UPDATE txn_acct SET balance = balance + ? WHERE id = ?",
                                p, 2, &r, err);
        noodle_rows_free(r);
    }
    return rc;
}

static uint64_t next_random(uint64_t *s) { /* xorshift64 */
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *bank_run(void *arg) {
    bank_worker *w = arg;
    bank *b = w->b;
    while (!atomic_load(&b->stop)) {
        transfer x = {.from = (int64_t)(next_random(&w->rng) % ACCOUNTS)};
        x.to = (x.from + 1 + (int64_t)(next_random(&w->rng) % (ACCOUNTS - 1))) % ACCOUNTS;
        x.amount = 1 + (int64_t)(next_random(&w->rng) % 300);
        noodle_txn_options o = NOODLE_TXN_OPTIONS_INIT;
        o.isolation = NOODLE_ISOLATION_SERIALIZABLE;
        o.max_attempts = 100;
        o.backoff_base_ms = 1;
        o.backoff_max_ms = 20;
        o.seed = next_random(&w->rng) | 1;
        noodle_error err;
        int rc = noodle_txn_run(b->pool, &o, transfer_fn, &x, &err);
        if (o.attempts > 1) atomic_fetch_add(&b->retries, o.attempts - 1);
        if (rc == 0) {
            atomic_fetch_add(x.skipped ? &b->skipped : &b->transfers, 1);
        } else if (rc == NOODLE_E_TXN_RETRIES_EXHAUSTED) {
            atomic_fetch_add(&b->exhausted, 1);
        } else {
            char text[1024];
            noodle_error_format(&err, text, sizeof text);
            noodle_test_thread_fail("transfer %lld -> %lld: %s", (long long)x.from, (long long)x.to,
                                    text);
            break;
        }
    }
    return NULL;
}

/* 16 threads move money between 10 accounts at SERIALIZABLE through
 * noodle_txn_run for 2 s: the total is conserved exactly, no balance goes
 * negative, and conflicts were retried (the mock's are real read-set
 * conflicts plus 5 % injected at COMMIT; PostgreSQL's are real 40001 /
 * 40P01; SQLite serializes writers at BEGIN IMMEDIATE, so it waits for the
 * lock instead and may retry nothing). */
static void concurrent_transfers_conserve_the_total(void **state) {
    fixture *f = *state;
    noodle_error err;
    exec_ok(f->c, "DROP TABLE IF EXISTS txn_acct");
    exec_ok(f->c, "CREATE TABLE txn_acct (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)");
    for (int i = 0; i < ACCOUNTS; i++) {
        noodle_value p[2] = {noodle_int64(i), noodle_int64(INITIAL_BALANCE)};
        noodle_rows *r = NULL;
        assert_ok(noodle_conn_execute(f->c, "INSERT INTO txn_acct (id, balance) VALUES (?, ?)", p, 2,
                                      DEADLINE(), &r, &err),
                  &err);
        noodle_rows_free(r);
    }
    if (kind == B_MOCK) {
        assert_ok(noodle_mock_node_seed(NODE, 1234, &err), &err);
        assert_ok(noodle_mock_fail_probability(NODE, NOODLE_MOCK_OP_COMMIT, 0.05,
                                               NOODLE_E_QUERY_SERIALIZATION, &err),
                  &err);
    }
    bank b = {.pool = open_pool(BANK_THREADS)};
    bank_worker workers[BANK_THREADS];
    pthread_t th[BANK_THREADS];
    for (int i = 0; i < BANK_THREADS; i++) {
        workers[i] = (bank_worker){.b = &b, .rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)};
        assert_int_equal(pthread_create(&th[i], NULL, bank_run, &workers[i]), 0);
    }
    noodle_test_sleep_ms(BANK_MS);
    atomic_store(&b.stop, true);
    for (int i = 0; i < BANK_THREADS; i++) assert_int_equal(pthread_join(th[i], NULL), 0);
    noodle_pool_close(b.pool);
    if (kind == B_MOCK) assert_ok(noodle_mock_clear_faults(NODE, &err), &err);
    noodle_test_assert_no_thread_failure();

    noodle_conn *c = open_conn();
    noodle_rows *r = NULL;
    assert_ok(noodle_conn_execute(c, "SELECT id, balance FROM txn_acct ORDER BY id", NULL, 0, DEADLINE(),
                                  &r, &err),
              &err);
    assert_int_equal(noodle_rows_count(r), ACCOUNTS);
    int64_t total = 0;
    for (size_t i = 0; i < ACCOUNTS; i++) {
        int64_t balance = noodle_rows_get(r, i, 1)->v.i;
        if (balance < 0) fail_msg("account %zu went negative: %lld", i, (long long)balance);
        total += balance;
    }
    noodle_rows_free(r);
    noodle_conn_close(c);
    print_message("bank on %s: %ld transfers, %ld skipped (short balance), %ld retries, %ld gave up\n",
                  backend_name, atomic_load(&b.transfers), atomic_load(&b.skipped),
                  atomic_load(&b.retries), atomic_load(&b.exhausted));
    assert_int_equal(total, (int64_t)ACCOUNTS * INITIAL_BALANCE);
    assert_true(atomic_load(&b.transfers) > 0);
    if (kind != B_SQLITE) assert_true(atomic_load(&b.retries) > 0);
}

/* ---- the runner ------------------------------------------------------------------------------------------ */

static int start_backend(const char *name) {
    if (strcmp(name, "mock") == 0) {
        kind = B_MOCK;
        ops = noodle_mock_backend();
        snprintf(url, sizeof url, "mock://%s", NODE);
    } else if (strcmp(name, "sqlite") == 0) {
        kind = B_SQLITE;
        ops = noodle_backend_sqlite();
        if (noodle_test_tempdir(tempdir, sizeof tempdir) != 0) return -1;
        snprintf(url, sizeof url, "%s/txn.db", tempdir);
    } else if (strcmp(name, "postgres") == 0) {
        kind = B_POSTGRES;
        char msg[2048];
        ops = noodle_backend_postgres();
        if (noodle_pg_server_start(NULL, &pg, msg, sizeof msg) != 0) {
            fprintf(stderr, "cannot start PostgreSQL: %s\n", msg);
            return -1;
        }
        snprintf(url, sizeof url, "%s", noodle_pg_server_conninfo(pg));
    } else {
        fprintf(stderr, "usage: test_txn mock|sqlite|postgres\n");
        return -1;
    }
    backend_name = ops->name;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2 || noodle_test_mock_init() != 0 || start_backend(argv[1]) != 0) return 2;
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(every_isolation_level_begins_and_is_never_weaker_than_asked),
        T(repeatable_read_and_serializable_never_commit_a_lost_update),
        T(an_isolation_level_the_backend_cannot_give_is_refused_with_5013),
        T(rolling_back_level_k_of_d_keeps_exactly_the_rows_of_the_levels_above_k),
        T(committing_a_level_with_an_inner_level_open_fails_with_6033_and_changes_nothing),
        T(a_level_that_ended_fails_with_6032),
        T(a_statement_on_a_level_that_is_not_the_innermost_fails_with_6036),
        T(using_a_transaction_from_another_thread_fails_with_6034_and_changes_nothing),
        T(a_failing_statement_rolls_back_only_its_nested_level),
        T(a_failing_statement_in_the_root_rolls_back_the_whole_transaction),
        T(ending_a_level_without_committing_rolls_it_back),
        T(releasing_a_connection_inside_a_transaction_rolls_it_back),
        T(a_commit_sent_as_sql_ends_every_level_with_6037),
        T(the_deadline_of_begin_until_bounds_every_statement),
        T(a_failing_begin_begins_nothing),
        T(a_failing_statement_leaves_no_partial_writes_of_its_level),
        T(a_failing_savepoint_rolls_back_the_level_it_was_taken_in),
        T(a_failing_release_rolls_back_the_nested_level),
        T(a_failing_commit_commits_nothing),
        T(a_nested_level_whose_rollback_failed_is_never_committed),
        T(run_commits_the_work_of_its_function),
        T(run_rolls_back_when_the_function_returns_a_code),
        T(run_retries_conflicts_until_an_attempt_commits),
        T(run_tells_its_observer_the_outcome_and_attempts_once),
        T(run_retries_conflicts_injected_by_the_mock_node),
        T(run_gives_up_after_max_attempts_with_6035_naming_the_last_conflict),
        T(run_does_not_retry_a_code_that_is_not_a_conflict),
        T(run_returns_4015_at_once_when_the_commit_outcome_is_unknown),
        T(run_returns_4015_when_postgres_loses_the_connection_during_commit),
        T(run_rejects_bad_arguments_with_6031),
        cmocka_unit_test(only_conflicts_are_retryable),
        T(run_retries_a_real_conflict_between_two_connections),
        T(run_retries_a_real_sqlite_busy_between_two_connections),
        T(run_on_a_cluster_commits_on_the_primary),
        T(concurrent_transfers_conserve_the_total),
    };
#undef T
    char group[64];
    snprintf(group, sizeof group, "txn_%s", argv[1]);
    int failed = _cmocka_run_group_tests(group, tests, sizeof tests / sizeof tests[0], NULL, NULL);
    noodle_pg_server_stop(pg);
    if (tempdir[0]) noodle_test_rm_rf(tempdir);
    return failed;
}
