/* The mock backend (mocks/noodle_mock.h): its SQL subset, transactions,
 * every fault control and its counters, all through the public noodle_conn_*
 * API. The cross-backend behaviour is in test_conformance (run with "mock").
 *
 * Timing bounds are generous: the machines running this have two shared
 * cores and may run the sanitizer builds.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "noodle/backend.h"
#include "noodle_mock.h"
#include "test_util.h"

#define DEADLINE() noodle_deadline_after(NULL, NOODLE_SEC(15))

/* ---- helpers ------------------------------------------------------------------------- */

static noodle_conn *open_node(const char *url) {
    noodle_connect_params p = {.url = url, .deadline = DEADLINE()};
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_conn_open(noodle_mock_backend(), &p, &c, &err), &err);
    return c;
}

/* Execute and return the result (caller frees); fail the test on error. */
static noodle_rows *run(noodle_conn *c, const char *sql, const noodle_value *p, size_t n) {
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_conn_execute(c, sql, p, n, DEADLINE(), &r, &err), &err);
    assert_non_null(r);
    return r;
}

static void run_free(noodle_conn *c, const char *sql, const noodle_value *p, size_t n) {
    noodle_rows_free(run(c, sql, p, n));
}

/* Execute expecting code want; returns the error. */
static noodle_error run_fails(noodle_conn *c, const char *sql, const noodle_value *p, size_t n,
                              int want) {
    noodle_rows *r = NULL;
    noodle_error err;
    int rc = noodle_conn_execute(c, sql, p, n, DEADLINE(), &r, &err);
    assert_code(rc, &err, want);
    assert_null(r);
    return err;
}

/* The int64 in the first cell of a one-row result. */
static int64_t scalar(noodle_conn *c, const char *sql, const noodle_value *p, size_t n) {
    noodle_rows *r = run(c, sql, p, n);
    assert_int_equal(noodle_rows_count(r), 1);
    const noodle_value *v = noodle_rows_get(r, 0, 0);
    assert_int_equal(v->type, NOODLE_TYPE_INT64);
    int64_t i = v->v.i;
    noodle_rows_free(r);
    return i;
}

static void assert_text(const noodle_value *v, const char *want) {
    assert_int_equal(v->type, NOODLE_TYPE_TEXT);
    assert_int_equal(v->v.bytes.len, strlen(want));
    assert_memory_equal(v->v.bytes.ptr, want, strlen(want));
}

static void make_kv(noodle_conn *c) {
    run_free(c, "CREATE TABLE kv (id BIGINT PRIMARY KEY, n INTEGER, v TEXT)", NULL, 0);
}

static void put(noodle_conn *c, int64_t id, int64_t n) {
    noodle_value p[2] = {noodle_int64(id), noodle_int64(n)};
    noodle_rows *r = run(c, "INSERT INTO kv (id, n) VALUES (?, ?)", p, 2);
    assert_int_equal(noodle_rows_affected(r), 1);
    noodle_rows_free(r);
}

static int64_t get_n(noodle_conn *c, int64_t id) {
    noodle_value p[1] = {noodle_int64(id)};
    return scalar(c, "SELECT n FROM kv WHERE id = ?", p, 1);
}

static int64_t count_kv(noodle_conn *c) { return scalar(c, "SELECT count(*) FROM kv", NULL, 0); }

static noodle_mock_stats stats_of(const char *node) {
    noodle_mock_stats st;
    noodle_error err;
    assert_ok(noodle_mock_node_stats(node, &st, &err), &err);
    return st;
}

static int setup(void **state) {
    (void)state;
    noodle_mock_reset();
    return 0;
}

/* ---- the SQL subset ------------------------------------------------------------------ */

static void rows_come_back_in_key_order_with_their_column_names(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://sql");
    run_free(c,
             "create table people (name varchar(20), id int primary key, score double precision, "
             "photo bytea)",
             NULL, 0);
    static const int64_t ids[] = {30, 10, 20};
    for (size_t i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "p%lld", (long long)ids[i]);
        noodle_value p[4] = {noodle_text(name), noodle_int64(ids[i]), noodle_double(ids[i] / 4.0),
                             noodle_blob("\0\1", 2)};
        run_free(c, "INSERT INTO people VALUES (?, ?, ?, ?)", p, 4);
    }
    noodle_rows *r = run(c, "SELECT * FROM people", NULL, 0);
    assert_int_equal(noodle_rows_columns(r), 4);
    assert_string_equal(noodle_rows_column_name(r, 0), "name");
    assert_string_equal(noodle_rows_column_name(r, 3), "photo");
    assert_int_equal(noodle_rows_count(r), 3);
    assert_text(noodle_rows_get(r, 0, 0), "p10");
    assert_text(noodle_rows_get(r, 2, 0), "p30");
    assert_true(noodle_rows_get(r, 1, 2)->v.d == 5.0);
    assert_int_equal(noodle_rows_get(r, 1, 3)->type, NOODLE_TYPE_BLOB);
    noodle_rows_free(r);
    assert_int_equal(noodle_mock_node_rows("sql", "people"), 3);
    assert_int_equal(noodle_mock_node_rows("sql", "PEOPLE"), 3); /* names fold to lower case */
    noodle_conn_close(c);
}

static void where_order_by_limit_and_offset_select_the_right_rows(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://sql");
    make_kv(c);
    for (int i = 1; i <= 6; i++) put(c, i, i % 2);
    noodle_value p[2] = {noodle_int64(1), noodle_int64(3)};
    noodle_rows *r = run(c, "SELECT id FROM kv WHERE n = ? AND id = ?", p, 2);
    assert_int_equal(noodle_rows_count(r), 1);
    noodle_rows_free(r);
    r = run(c, "SELECT id, n FROM kv WHERE n = ? ORDER BY id DESC", p, 1);
    assert_int_equal(noodle_rows_count(r), 3);
    assert_int_equal(noodle_rows_get(r, 0, 0)->v.i, 5);
    assert_int_equal(noodle_rows_get(r, 2, 0)->v.i, 1);
    noodle_rows_free(r);
    r = run(c, "SELECT id FROM kv ORDER BY n ASC LIMIT 2 OFFSET 1", NULL, 0);
    assert_int_equal(noodle_rows_count(r), 2); /* n = 0: ids 2, 4, 6 in key order */
    assert_int_equal(noodle_rows_get(r, 0, 0)->v.i, 4);
    assert_int_equal(noodle_rows_get(r, 1, 0)->v.i, 6);
    noodle_rows_free(r);
    noodle_value lim[1] = {noodle_int64(0)};
    r = run(c, "SELECT * FROM kv LIMIT ?", lim, 1);
    assert_int_equal(noodle_rows_count(r), 0);
    assert_int_equal(noodle_rows_columns(r), 3);
    noodle_rows_free(r);
    lim[0] = noodle_int64(-1);
    run_fails(c, "SELECT * FROM kv LIMIT ?", lim, 1, NOODLE_E_QUERY_DATA);
    r = run(c, "SELECT id FROM kv WHERE v = NULL", NULL, 0); /* = NULL is never true */
    assert_int_equal(noodle_rows_count(r), 0);
    noodle_rows_free(r);
    run_fails(c, "SELECT id FROM kv WHERE v = NULL AND nope = 1", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    /* comparisons are numeric: an int column never equals 1.5 */
    noodle_value half[1] = {noodle_double(1.5)};
    r = run(c, "SELECT id FROM kv WHERE id = ?", half, 1);
    assert_int_equal(noodle_rows_count(r), 0);
    noodle_rows_free(r);
    half[0] = noodle_double(2.0);
    r = run(c, "SELECT id FROM kv WHERE id = ?", half, 1);
    assert_int_equal(noodle_rows_count(r), 1);
    noodle_rows_free(r);
    noodle_conn_close(c);
}

static void aggregates_are_named_like_postgresql_and_typed(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://sql");
    make_kv(c);
    noodle_rows *r = run(c, "SELECT count(*), sum(n), max(n), min(n) FROM kv", NULL, 0);
    assert_string_equal(noodle_rows_column_name(r, 0), "count");
    assert_string_equal(noodle_rows_column_name(r, 1), "sum");
    assert_string_equal(noodle_rows_column_name(r, 2), "max");
    assert_string_equal(noodle_rows_column_name(r, 3), "min");
    assert_int_equal(noodle_rows_get(r, 0, 0)->v.i, 0);
    assert_int_equal(noodle_rows_get(r, 0, 1)->type, NOODLE_TYPE_NULL); /* sum of no rows */
    assert_int_equal(noodle_rows_get(r, 0, 2)->type, NOODLE_TYPE_NULL);
    noodle_rows_free(r);
    put(c, 1, 10);
    put(c, 2, -4);
    put(c, 3, 7);
    run_free(c, "INSERT INTO kv (id) VALUES (4)", NULL, 0); /* NULLs are skipped */
    r = run(c, "SELECT count(*), sum(n), max(n), min(n), count(n) AS with_n FROM kv", NULL, 0);
    assert_int_equal(noodle_rows_get(r, 0, 0)->type, NOODLE_TYPE_INT64);
    assert_int_equal(noodle_rows_get(r, 0, 0)->v.i, 4);
    assert_int_equal(noodle_rows_get(r, 0, 1)->type, NOODLE_TYPE_INT64);
    assert_int_equal(noodle_rows_get(r, 0, 1)->v.i, 13);
    assert_int_equal(noodle_rows_get(r, 0, 2)->v.i, 10);
    assert_int_equal(noodle_rows_get(r, 0, 3)->v.i, -4);
    assert_string_equal(noodle_rows_column_name(r, 4), "with_n");
    assert_int_equal(noodle_rows_get(r, 0, 4)->v.i, 3);
    noodle_rows_free(r);
    noodle_value p[1] = {noodle_int64(2)};
    assert_int_equal(scalar(c, "SELECT count(*) FROM kv WHERE id = ?", p, 1), 1);
    run_fails(c, "SELECT id, count(*) FROM kv", NULL, 0, NOODLE_E_QUERY_SYNTAX); /* no GROUP BY */
    run_fails(c, "SELECT sum(v) FROM kv", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    noodle_conn_close(c);
}

static void select_without_from_returns_bare_values_named_question_column(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://sql");
    noodle_value p[1] = {noodle_text("param")};
    noodle_rows *r = run(c, "SELECT 1, ?, 'it''s', -2.5, NULL", p, 1);
    assert_int_equal(noodle_rows_count(r), 1);
    assert_int_equal(noodle_rows_columns(r), 5);
    assert_string_equal(noodle_rows_column_name(r, 0), "?column?");
    assert_int_equal(noodle_rows_get(r, 0, 0)->v.i, 1);
    assert_text(noodle_rows_get(r, 0, 1), "param");
    assert_text(noodle_rows_get(r, 0, 2), "it's");
    assert_true(noodle_rows_get(r, 0, 3)->v.d == -2.5);
    assert_int_equal(noodle_rows_get(r, 0, 4)->type, NOODLE_TYPE_NULL);
    noodle_rows_free(r);
    r = run(c, "select -9223372036854775808 as lowest;", NULL, 0);
    assert_string_equal(noodle_rows_column_name(r, 0), "lowest");
    assert_int_equal(noodle_rows_get(r, 0, 0)->v.i, INT64_MIN);
    noodle_rows_free(r);
    run_fails(c, "SELECT *", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    noodle_conn_close(c);
}

static void values_are_converted_to_the_column_type(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://sql");
    run_free(c, "CREATE TABLE conv (id INT PRIMARY KEY, d REAL, t TEXT, i BIGINT)", NULL, 0);
    noodle_value p[4] = {noodle_int64(1), noodle_int64(3), noodle_int64(42), noodle_double(2.0)};
    run_free(c, "INSERT INTO conv (id, d, t, i) VALUES (?, ?, ?, ?)", p, 4);
    noodle_rows *r = run(c, "SELECT d, t, i FROM conv", NULL, 0);
    assert_int_equal(noodle_rows_get(r, 0, 0)->type, NOODLE_TYPE_DOUBLE);
    assert_true(noodle_rows_get(r, 0, 0)->v.d == 3.0);
    assert_text(noodle_rows_get(r, 0, 1), "42");
    assert_int_equal(noodle_rows_get(r, 0, 2)->type, NOODLE_TYPE_INT64);
    assert_int_equal(noodle_rows_get(r, 0, 2)->v.i, 2);
    noodle_rows_free(r);
    noodle_value bad[2] = {noodle_int64(2), noodle_text("not a number")};
    noodle_error err =
        run_fails(c, "INSERT INTO conv (id, i) VALUES (?, ?)", bad, 2, NOODLE_E_QUERY_DATA);
    assert_string_equal(err.detail, "SQLSTATE 22P02");
    bad[1] = noodle_double(1e300);
    run_fails(c, "INSERT INTO conv (id, i) VALUES (?, ?)", bad, 2, NOODLE_E_QUERY_DATA);
    run_fails(c, "SELECT * FROM conv WHERE i = 'x'", NULL, 0, NOODLE_E_QUERY_DATA);
    assert_int_equal(noodle_mock_node_rows("sql", "conv"), 1);
    /* an assignment rounds half to even, as PostgreSQL's float8 -> int8 */
    noodle_value half[2] = {noodle_int64(3), noodle_double(2.5)};
    run_free(c, "INSERT INTO conv (id, i) VALUES (?, ?)", half, 2);
    assert_int_equal(scalar(c, "SELECT i FROM conv WHERE id = 3", NULL, 0), 2);
    /* booleans are int64 0 / 1, as the PostgreSQL backend returns them */
    run_free(c, "CREATE TABLE flags (id INT PRIMARY KEY, on_off BOOLEAN)", NULL, 0);
    run_free(c, "INSERT INTO flags VALUES (1, TRUE), (2, false)", NULL, 0);
    assert_int_equal(scalar(c, "SELECT sum(on_off) FROM flags", NULL, 0), 1);
    noodle_conn_close(c);
}

static void omitted_columns_are_null_but_a_null_key_fails_with_23502(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://sql");
    run_free(c, "CREATE TABLE nn (id INT, must TEXT NOT NULL, maybe TEXT, PRIMARY KEY (id))", NULL,
             0);
    run_free(c, "INSERT INTO nn (must, id) VALUES ('x', 1)", NULL, 0);
    noodle_rows *r = run(c, "SELECT maybe FROM nn WHERE id = 1", NULL, 0);
    assert_int_equal(noodle_rows_get(r, 0, 0)->type, NOODLE_TYPE_NULL);
    noodle_rows_free(r);
    noodle_error err =
        run_fails(c, "INSERT INTO nn (must) VALUES ('x')", NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23502");
    err = run_fails(c, "INSERT INTO nn (id) VALUES (2)", NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23502");
    err = run_fails(c, "UPDATE nn SET must = NULL", NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    /* without a PRIMARY KEY the first column is an ordinary one: NULL is fine */
    run_free(c, "CREATE TABLE nokey (a INT, b INT NOT NULL)", NULL, 0);
    run_free(c, "INSERT INTO nokey (b) VALUES (1)", NULL, 0);
    err = run_fails(c, "INSERT INTO nokey (a) VALUES (1)", NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23502");
    noodle_conn_close(c);
}

static void update_and_delete_count_affected_rows_and_do_arithmetic(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://sql");
    make_kv(c);
    for (int i = 1; i <= 4; i++) put(c, i, 10 * i);
    noodle_rows *r = run(c, "UPDATE kv SET n = n + 1", NULL, 0);
    assert_int_equal(noodle_rows_affected(r), 4);
    noodle_rows_free(r);
    noodle_value p[3] = {noodle_int64(5), noodle_text("five less"), noodle_int64(2)};
    r = run(c, "UPDATE kv SET n = n - ?, v = ? WHERE id = ?", p, 3);
    assert_int_equal(noodle_rows_affected(r), 1);
    noodle_rows_free(r);
    assert_int_equal(get_n(c, 1), 11);
    assert_int_equal(get_n(c, 2), 16);
    r = run(c, "SELECT v FROM kv WHERE id = 2", NULL, 0);
    assert_text(noodle_rows_get(r, 0, 0), "five less");
    noodle_rows_free(r);
    /* the right-hand sides read the old row */
    run_free(c, "UPDATE kv SET n = id, id = n WHERE id = 3", NULL, 0);
    assert_int_equal(get_n(c, 31), 3);
    /* moving a key onto a taken one is a duplicate */
    noodle_error err =
        run_fails(c, "UPDATE kv SET id = 1 WHERE id = 4", NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23505");
    r = run(c, "UPDATE kv SET n = 0 WHERE id = 999", NULL, 0);
    assert_int_equal(noodle_rows_affected(r), 0);
    noodle_rows_free(r);
    noodle_value big[1] = {noodle_int64(INT64_MAX)};
    run_fails(c, "UPDATE kv SET n = n + ?", big, 1, NOODLE_E_QUERY_DATA); /* overflow: 22003 */
    r = run(c, "DELETE FROM kv WHERE n = 16", NULL, 0);
    assert_int_equal(noodle_rows_affected(r), 1);
    noodle_rows_free(r);
    r = run(c, "DELETE FROM kv", NULL, 0);
    assert_int_equal(noodle_rows_affected(r), 3);
    noodle_rows_free(r);
    assert_int_equal(count_kv(c), 0);
    noodle_conn_close(c);
}

static void errors_carry_the_postgresql_sqlstate(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://sql");
    make_kv(c);
    noodle_error err = run_fails(c, "SELECT id FROM kv WHERE", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42601");
    assert_non_null(strstr(err.message, "end of input"));
    err = run_fails(c, "INSERT INTO kv (id) VALUES (1))", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_non_null(strstr(err.message, "position 31"));
    err = run_fails(c, "SELECT 'unterminated", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    err = run_fails(c, "SELECT * FROM missing", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42P01");
    err = run_fails(c, "SELECT nope FROM kv", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42703");
    err = run_fails(c, "UPDATE kv SET nope = 1", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42703");
    err = run_fails(c, "CREATE TABLE kv (id INT)", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42P07");
    run_free(c, "CREATE TABLE IF NOT EXISTS kv (id INT)", NULL, 0);
    run_free(c, "DROP TABLE IF EXISTS never_made", NULL, 0);
    err = run_fails(c, "DROP TABLE never_made", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42P01");
    put(c, 1, 1);
    err = run_fails(c, "INSERT INTO kv (id, n) VALUES (1, 2)", NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23505");
    /* comments and a trailing semicolon are fine */
    assert_int_equal(scalar(c, "-- count\nSELECT /* all */ count(*) FROM kv;", NULL, 0), 1);
    noodle_conn_close(c);
}

static void well_formed_sql_outside_the_subset_fails_with_5015(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://sql");
    make_kv(c);
    static const char *const unsupported[] = {
        "SELECT * FROM kv JOIN kv AS other ON kv.id = other.id",
        "SELECT n, count(*) FROM kv GROUP BY n",
        "SELECT * FROM kv WHERE id IN (SELECT id FROM kv)",
        "SELECT * FROM kv WHERE id = 1 OR id = 2",
        "SELECT * FROM kv WHERE id BETWEEN 1 AND 2",
        "SELECT * FROM kv WHERE (id = 1)",
        "SELECT * FROM kv WHERE n = id",
        "SELECT * FROM kv WHERE v ILIKE 'a%'",
        "SELECT * FROM kv WHERE v LIKE 'a!%' ESCAPE '!'",
        "SELECT * FROM kv WHERE n IS TRUE",
        "SELECT kv.id FROM kv",
        "SELECT * FROM db.public.kv",
        "UPDATE kv SET n = excluded.n",
        "INSERT INTO kv (id) VALUES (1) ON CONFLICT ON CONSTRAINT kv_pkey DO NOTHING",
        "INSERT INTO kv (id) VALUES (1) ON CONFLICT (id) WHERE n > 0 DO NOTHING",
        "INSERT INTO kv (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET n = 1 WHERE n > 0",
        "CREATE TABLE ck (id INT PRIMARY KEY, n INT CHECK (n > 0))",
        "SELECT avg(n) FROM kv",
        "SELECT * FROM kv, kv",
        "ALTER TABLE kv ADD COLUMN x INT",
        "CREATE INDEX kv_n ON kv (n)",
        "CREATE TABLE ts (id INT PRIMARY KEY, at TIMESTAMP)",
        "CREATE TABLE ts (id INT PRIMARY KEY, at TIMESTAMP WITHOUT TIME ZONE "
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa "
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb cc dd)",
        "SELECT 1; DROP TABLE kv",
        "INSERT INTO kv (id) VALUES (1); DELETE FROM kv",
    };
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; i++) {
        noodle_rows *r = NULL;
        noodle_error err;
        int rc = noodle_conn_execute(c, unsupported[i], NULL, 0, DEADLINE(), &r, &err);
        if (rc != NOODLE_E_QUERY_UNSUPPORTED)
            fail_msg("\"%s\": got %d, expected 5015", unsupported[i], rc);
    }
    /* the stacked statements did not run */
    assert_int_equal(noodle_mock_node_rows("sql", "kv"), 0);
    run_fails(c, "SELEKT 1", NULL, 0, NOODLE_E_QUERY_SYNTAX); /* a typo is a syntax error */
    noodle_conn_close(c);
}

static void placeholder_count_mismatch_fails_with_5006_before_executing(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://sql");
    make_kv(c);
    noodle_value p[3] = {noodle_int64(1), noodle_int64(2), noodle_int64(3)};
    run_fails(c, "INSERT INTO kv (id, n) VALUES (?, ?)", p, 1, NOODLE_E_QUERY_PARAM_COUNT);
    run_fails(c, "INSERT INTO kv (id, n) VALUES (?, ?)", p, 3, NOODLE_E_QUERY_PARAM_COUNT);
    run_fails(c, "SELECT 1", p, 1, NOODLE_E_QUERY_PARAM_COUNT);
    /* a '?' inside a literal or a comment is not a placeholder */
    noodle_rows *r = run(c, "SELECT '?', ? -- ?", p, 1);
    assert_text(noodle_rows_get(r, 0, 0), "?");
    noodle_rows_free(r);
    assert_int_equal(count_kv(c), 0);
    noodle_conn_close(c);
}

/* ---- the statements of the database manager (include/noodle/db.h) --------------------------- */

/* The int64 first column of every row, as "1,2,3" ("" for no rows). */
static void assert_ids(noodle_conn *c, const char *sql, const noodle_value *p, size_t n,
                       const char *want) {
    noodle_rows *r = run(c, sql, p, n);
    char got[256] = "";
    for (size_t i = 0; i < noodle_rows_count(r); i++) {
        const noodle_value *v = noodle_rows_get(r, i, 0);
        size_t used = strlen(got);
        if (v->type == NOODLE_TYPE_NULL)
            snprintf(got + used, sizeof got - used, "%sNULL", i ? "," : "");
        else
            snprintf(got + used, sizeof got - used, "%s%lld", i ? "," : "", (long long)v->v.i);
    }
    noodle_rows_free(r);
    if (strcmp(got, want) != 0) fail_msg("%s: got [%s], expected [%s]", sql, got, want);
}

/* SELECT "col" FROM "table" WHERE "key" = id: an int64. */
static int64_t int_where(noodle_conn *c, const char *table, const char *col, const char *key,
                         int64_t id) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT \"%s\" FROM \"%s\" WHERE \"%s\" = ?", col, table, key);
    noodle_value p = noodle_int64(id);
    return scalar(c, sql, &p, 1);
}

static int64_t affected_by(noodle_conn *c, const char *sql, const noodle_value *p, size_t n) {
    noodle_rows *r = run(c, sql, p, n);
    int64_t a = noodle_rows_affected(r);
    noodle_rows_free(r);
    return a;
}

static void quoted_identifiers_keep_their_case_and_may_be_reserved_words(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://quoted");
    run_free(c,
             "CREATE TABLE \"Mixed Case\" (\"Id\" BIGINT PRIMARY KEY, \"order\" TEXT, "
             "\"say \"\"hi\"\"\" INTEGER)",
             NULL, 0);
    noodle_value p[3] = {noodle_int64(1), noodle_text("first"), noodle_int64(2)};
    run_free(c,
             "INSERT INTO \"Mixed Case\" (\"Id\", \"order\", \"say \"\"hi\"\"\") VALUES (?, ?, ?)",
             p, 3);
    noodle_rows *r = run(c,
                         "SELECT \"Id\", \"order\", \"say \"\"hi\"\"\" FROM \"Mixed Case\" "
                         "WHERE \"order\" = 'first' ORDER BY \"Id\"",
                         NULL, 0);
    assert_int_equal(noodle_rows_count(r), 1);
    assert_string_equal(noodle_rows_column_name(r, 0), "Id");
    assert_string_equal(noodle_rows_column_name(r, 1), "order");
    assert_string_equal(noodle_rows_column_name(r, 2), "say \"hi\"");
    assert_int_equal(noodle_rows_get(r, 0, 2)->v.i, 2);
    noodle_rows_free(r);
    /* a quoted name is exact; an unquoted one folds to lower case */
    noodle_error err =
        run_fails(c, "SELECT id FROM \"Mixed Case\"", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42703");
    err = run_fails(c, "SELECT * FROM \"mixed case\"", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42P01");
    run_free(c, "CREATE TABLE Plain (X INT PRIMARY KEY)", NULL, 0);
    run_free(c, "INSERT INTO \"plain\" (\"x\") VALUES (7)", NULL, 0);
    assert_int_equal(scalar(c, "SELECT \"x\" FROM plain", NULL, 0), 7);
    run_fails(c, "SELECT \"X\" FROM plain", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_int_equal(noodle_mock_node_rows("quoted", "Mixed Case"), 1);
    assert_int_equal(noodle_mock_node_rows("quoted", "PLAIN"), 1);
    /* malformed quoted names are syntax errors */
    err = run_fails(c, "SELECT \"\" FROM plain", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42601");
    run_fails(c, "SELECT \"x FROM plain", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    err = run_fails(c,
                    "SELECT \"a123456789012345678901234567890123456789012345678901234567890123\" "
                    "FROM plain",
                    NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42622");
    noodle_conn_close(c);
}

static void a_table_qualified_by_main_or_public_is_the_plain_table_and_other_schemas_fail_with_5001(
    void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://schema");
    run_free(c, "CREATE TABLE \"public\".\"t\" (\"k\" BIGINT PRIMARY KEY, \"v\" TEXT)", NULL, 0);
    run_free(c, "INSERT INTO main.t (k, v) VALUES (1, 'a')", NULL, 0);
    run_free(c, "INSERT INTO \"t\" (\"k\", \"v\") VALUES (2, 'b')", NULL, 0);
    assert_ids(c, "SELECT \"k\" FROM \"public\".\"t\" WHERE \"k\" >= 1 ORDER BY \"k\"", NULL, 0,
               "1,2");
    assert_int_equal(
        affected_by(c, "UPDATE \"main\".\"t\" SET \"v\" = 'x' WHERE \"k\" = 2", NULL, 0), 1);
    assert_int_equal(affected_by(c, "DELETE FROM public.t WHERE k = 1", NULL, 0), 1);
    static const char *const elsewhere[] = {
        "SELECT * FROM \"other\".\"t\"",
        "INSERT INTO other.t (k) VALUES (3)",
        "UPDATE \"other\".\"t\" SET \"v\" = 'y'",
        "DELETE FROM \"Public\".\"t\"", /* quoted names are exact: not public */
        "DROP TABLE \"other\".\"t\"",
    };
    for (size_t i = 0; i < sizeof elsewhere / sizeof *elsewhere; i++) {
        noodle_error err = run_fails(c, elsewhere[i], NULL, 0, NOODLE_E_QUERY_SYNTAX);
        assert_string_equal(err.detail, "SQLSTATE 42P01");
    }
    noodle_error err = run_fails(c, "CREATE TABLE other.u (k INT)", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 3F000");
    run_free(c, "DROP TABLE IF EXISTS other.t", NULL, 0); /* nothing to drop */
    assert_int_equal(noodle_mock_node_rows("schema", "t"), 1);
    run_free(c, "DROP TABLE main.t", NULL, 0);
    assert_int_equal(noodle_mock_node_rows("schema", "t"), -1);
    noodle_conn_close(c);
}

static void make_items(noodle_conn *c) {
    run_free(c,
             "CREATE TABLE \"items\" (\"id\" BIGINT PRIMARY KEY, \"name\" TEXT, \"qty\" INTEGER, "
             "\"note\" TEXT)",
             NULL, 0);
    static const struct {
        int64_t id;
        const char *name;
        int64_t qty; /* -1: NULL */
        const char *note;
    } rows[] = {{1, "apple", 5, "red"},
                {2, "banana", 12, NULL},
                {3, "cherry", -1, "red"},
                {4, "date", 7, "brown"},
                {5, "Apple", 5, NULL}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        noodle_value p[4] = {noodle_int64(rows[i].id), noodle_text(rows[i].name),
                             rows[i].qty < 0 ? noodle_null() : noodle_int64(rows[i].qty),
                             rows[i].note ? noodle_text(rows[i].note) : noodle_null()};
        run_free(c,
                 "INSERT INTO \"items\" (\"id\", \"name\", \"qty\", \"note\") VALUES (?, ?, ?, ?)",
                 p, 4);
    }
}

static void where_comparisons_like_and_is_null_follow_three_valued_logic(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://where");
    make_items(c);
    noodle_value five = noodle_int64(5), seven = noodle_int64(7), null = noodle_null();
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" = ?", &five, 1, "1,5");
    /* a comparison with a NULL cell is not true: id 3 (qty NULL) never matches */
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" <> ?", &five, 1, "2,4");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" != ?", &five, 1, "2,4");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" < ?", &seven, 1, "1,5");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" <= ?", &seven, 1, "1,4,5");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" > ?", &seven, 1, "2");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" >= ?", &seven, 1, "2,4");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"id\" > 3", NULL, 0, "4,5");
    /* a comparison with NULL is never true, whatever the operator */
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" = ?", &null, 1, "");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" <> ?", &null, 1, "");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"name\" LIKE ?", &null, 1, "");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"note\" IS NULL", NULL, 0, "2,5");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"note\" IS NOT NULL", NULL, 0, "1,3,4");
    /* numbers compare numerically: an integer column against 5.5 */
    noodle_value half = noodle_double(5.5);
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" < ?", &half, 1, "1,5");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" = ?", &half, 1, "");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" <> ?", &half, 1, "1,2,4,5");
    /* LIKE is case-sensitive */
    noodle_value pat = noodle_text("a%");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"name\" LIKE ?", &pat, 1, "1");
    pat = noodle_text("%a%");
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"name\" NOT LIKE ?", &pat, 1, "3,5");
    /* every term must hold */
    noodle_value p[2] = {noodle_int64(5), noodle_text("%e%")};
    assert_ids(c,
               "SELECT \"id\" FROM \"items\" WHERE \"qty\" >= ? AND \"note\" IS NOT NULL AND "
               "\"name\" LIKE ?",
               p, 2, "1,4");
    /* order (NULLs last ascending, first descending; text bytewise) and a bound limit */
    noodle_value lim = noodle_int64(2);
    assert_ids(c, "SELECT \"id\" FROM \"items\" ORDER BY \"name\" DESC LIMIT ?", &lim, 1, "4,3");
    assert_ids(c, "SELECT \"id\" FROM \"items\" ORDER BY \"name\"", NULL, 0, "5,1,2,3,4");
    assert_ids(c, "SELECT \"id\" FROM \"items\" ORDER BY \"qty\"", NULL, 0, "1,5,4,2,3");
    assert_ids(c, "SELECT \"id\" FROM \"items\" ORDER BY \"qty\" DESC", NULL, 0, "3,2,4,1,5");
    /* SELECT * by key */
    noodle_value key = noodle_int64(4);
    noodle_rows *r = run(c, "SELECT * FROM \"items\" WHERE \"id\" = ?", &key, 1);
    assert_int_equal(noodle_rows_count(r), 1);
    assert_int_equal(noodle_rows_columns(r), 4);
    assert_text(noodle_rows_get(r, 0, 1), "date");
    assert_text(noodle_rows_get(r, 0, 3), "brown");
    noodle_rows_free(r);
    /* LIKE wants text; a pattern cannot end with the escape character */
    noodle_error err = run_fails(c, "SELECT \"id\" FROM \"items\" WHERE \"qty\" LIKE '5%'", NULL, 0,
                                 NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42883");
    pat = noodle_text("ab\\");
    err = run_fails(c, "SELECT \"id\" FROM \"items\" WHERE \"name\" LIKE ?", &pat, 1,
                    NOODLE_E_QUERY_DATA);
    assert_string_equal(err.detail, "SQLSTATE 22025");
    run_fails(c, "SELECT \"id\" FROM \"items\" WHERE \"nope\" IS NULL", NULL, 0,
              NOODLE_E_QUERY_SYNTAX);
    noodle_conn_close(c);
}

static void like_matches_percent_underscore_and_backslash_escapes_case_sensitively(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://like");
    run_free(c, "CREATE TABLE lk (id INT PRIMARY KEY, s TEXT)", NULL, 0);
    static const struct {
        const char *s, *pattern;
        int64_t match;
    } cases[] = {
        {"apple", "a%", 1},
        {"Apple", "a%", 0},
        {"apple", "%PP%", 0},
        {"apple", "apple", 1},
        {"apple", "appl", 0},
        {"appl", "apple", 0},
        {"caf\xc3\xa9", "caf_", 1}, /* _ is one UTF-8 character, not one byte */
        {"caf\xc3\xa9", "caf__", 0},
        {"caf\xc3\xa9", "%\xc3\xa9", 1},
        {"100%", "100\\%", 1},
        {"1000", "100\\%", 0},
        {"a_b", "a\\_b", 1},
        {"axb", "a\\_b", 0},
        {"a\\b", "a\\\\b", 1},
        {"", "%", 1},
        {"", "_", 0},
        {"", "", 1},
        {"abcabd", "%ab_", 1},
        {"aXbXc", "a%b%c", 1},
        {"abc", "a%b", 0},
        {"mississippi", "m%iss%ppi", 1},
        {"mississippi", "%s_s%", 1},
        {"mississippi", "%x%", 0},
        {"ab", "%%b", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        noodle_value row[2] = {noodle_int64(1), noodle_text(cases[i].s)};
        run_free(c, "DELETE FROM lk", NULL, 0);
        run_free(c, "INSERT INTO lk (id, s) VALUES (?, ?)", row, 2);
        noodle_value pat = noodle_text(cases[i].pattern);
        int64_t got = scalar(c, "SELECT count(*) FROM lk WHERE s LIKE ?", &pat, 1);
        if (got != cases[i].match)
            fail_msg("'%s' LIKE '%s': got %lld", cases[i].s, cases[i].pattern, (long long)got);
        assert_int_equal(scalar(c, "SELECT count(*) FROM lk WHERE s NOT LIKE ?", &pat, 1),
                         1 - cases[i].match);
    }
    noodle_conn_close(c);
}

static void update_and_delete_with_conditions_count_the_rows_they_match(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://crud");
    make_items(c);
    noodle_value p[4] = {noodle_text("checked"), noodle_int64(1), noodle_int64(5),
                         noodle_text("%e%")};
    assert_int_equal(affected_by(c,
                                 "UPDATE \"items\" SET \"note\" = ?, \"qty\" = \"qty\" + ? "
                                 "WHERE \"qty\" >= ? AND \"name\" LIKE ?",
                                 p, 4),
                     3); /* apple, date, Apple */
    assert_ids(c, "SELECT \"id\" FROM \"items\" WHERE \"note\" = 'checked'", NULL, 0, "1,4,5");
    assert_int_equal(int_where(c, "items", "qty", "id", 4), 8);
    /* a row that would not change still counts, as in SQLite and PostgreSQL */
    assert_int_equal(
        affected_by(c, "UPDATE \"items\" SET \"note\" = 'checked' WHERE \"id\" = 1", NULL, 0), 1);
    assert_int_equal(
        affected_by(c, "UPDATE \"items\" SET \"qty\" = 0 WHERE \"qty\" IS NULL", NULL, 0), 1);
    assert_int_equal(affected_by(c, "UPDATE \"items\" SET \"name\" = \"name\"", NULL, 0), 5);
    assert_int_equal(affected_by(c,
                                 "DELETE FROM \"items\" WHERE \"name\" LIKE 'a%' AND "
                                 "\"qty\" < 100",
                                 NULL, 0),
                     1);
    assert_int_equal(affected_by(c, "DELETE FROM \"items\" WHERE \"qty\" > 1000", NULL, 0), 0);
    assert_int_equal(affected_by(c, "DELETE FROM \"items\"", NULL, 0), 4);
    assert_int_equal(noodle_mock_node_rows("crud", "items"), 0);
    noodle_conn_close(c);
}

static const char upsert_sql[] =
    "INSERT INTO \"acct\" (\"k\", \"a\", \"n\") VALUES (?, ?, ?) ON CONFLICT (\"k\") DO UPDATE SET "
    "\"a\" = excluded.\"a\", \"n\" = \"acct\".\"n\" + excluded.\"n\"";

static void upsert_do_update_changes_the_conflicting_row_and_counts_one(void **state) {
    (void)state;
    noodle_conn *a = open_node("mock://upsert"), *b = open_node("mock://upsert");
    noodle_error err;
    run_free(a,
             "CREATE TABLE \"acct\" (\"k\" BIGINT PRIMARY KEY, \"a\" TEXT, \"n\" INTEGER NOT NULL)",
             NULL, 0);
    noodle_value p[3] = {noodle_int64(1), noodle_text("one"), noodle_int64(10)};
    assert_int_equal(affected_by(a, upsert_sql, p, 3), 1); /* inserted */
    p[1] = noodle_text("uno");
    p[2] = noodle_int64(5);
    assert_int_equal(affected_by(a, upsert_sql, p, 3), 1); /* updated */
    noodle_rows *r = run(b, "SELECT \"a\", \"n\" FROM \"acct\" WHERE \"k\" = 1", NULL, 0);
    assert_int_equal(noodle_rows_count(r), 1);
    assert_text(noodle_rows_get(r, 0, 0), "uno");
    assert_int_equal(noodle_rows_get(r, 0, 1)->v.i, 15);
    noodle_rows_free(r);
    /* one statement proposing the same key twice: an error, as in PostgreSQL */
    err = run_fails(a,
                    "INSERT INTO acct (k, a, n) VALUES (3, 'c', 1), (3, 'c2', 2) "
                    "ON CONFLICT (k) DO UPDATE SET a = excluded.a",
                    NULL, 0, NOODLE_E_QUERY_FAILED);
    assert_string_equal(err.detail, "SQLSTATE 21000");
    assert_int_equal(noodle_mock_node_rows("upsert", "acct"), 1);
    /* the updated row is checked: NOT NULL, and a key moved onto a taken one */
    err = run_fails(a,
                    "INSERT INTO acct (k, n) VALUES (1, 0) ON CONFLICT (k) DO UPDATE SET "
                    "n = NULL",
                    NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23502");
    run_free(a, "INSERT INTO acct (k, n) VALUES (2, 0)", NULL, 0);
    err = run_fails(a,
                    "INSERT INTO acct (k, n) VALUES (1, 0) ON CONFLICT (k) DO UPDATE SET "
                    "k = excluded.k + 1",
                    NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23505");
    assert_int_equal(affected_by(a,
                                 "INSERT INTO acct (k, n) VALUES (2, 0) ON CONFLICT (k) DO "
                                 "UPDATE SET k = acct.k + 100",
                                 NULL, 0),
                     1);
    assert_ids(a, "SELECT k FROM acct", NULL, 0, "1,102");
    /* inside a transaction: it sees its own writes, others see nothing until COMMIT */
    assert_ok(noodle_conn_begin(a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    noodle_value q[3] = {noodle_int64(5), noodle_text("first"), noodle_int64(1)};
    assert_int_equal(affected_by(a, upsert_sql, q, 3), 1);
    q[1] = noodle_text("second");
    assert_int_equal(affected_by(a, upsert_sql, q, 3), 1);
    assert_int_equal(int_where(a, "acct", "n", "k", 5), 2);
    assert_ids(b, "SELECT k FROM acct", NULL, 0, "1,102");
    assert_ok(noodle_conn_commit(a, DEADLINE(), &err), &err);
    assert_int_equal(int_where(b, "acct", "n", "k", 5), 2);
    /* malformed conflict clauses */
    err = run_fails(a, "INSERT INTO acct (k, n) VALUES (1, 0) ON CONFLICT DO UPDATE SET n = 1",
                    NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42601");
    err = run_fails(a, "INSERT INTO acct (k, n) VALUES (1, 0) ON CONFLICT (a) DO NOTHING", NULL, 0,
                    NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42P10");
    err = run_fails(a, "INSERT INTO acct (k, n) VALUES (1, 0) ON CONFLICT (zz) DO NOTHING", NULL, 0,
                    NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42703");
    err = run_fails(a,
                    "INSERT INTO acct (k, n) VALUES (1, 0) ON CONFLICT (k) DO UPDATE SET "
                    "n = other.n",
                    NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42P01");
    err = run_fails(a,
                    "INSERT INTO acct (k, n) VALUES (1, 0) ON CONFLICT (k) DO UPDATE SET "
                    "n = excluded.zz",
                    NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42703");
    noodle_conn_close(a);
    noodle_conn_close(b);
}

static void upsert_do_nothing_skips_a_conflicting_row_and_counts_zero(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://upsert");
    run_free(c, "CREATE TABLE t (k BIGINT PRIMARY KEY, code TEXT UNIQUE, v TEXT)", NULL, 0);
    run_free(c, "INSERT INTO t (k, code, v) VALUES (1, 'x', 'old')", NULL, 0);
    static const char sql[] = "INSERT INTO \"t\" (\"k\", \"code\", \"v\") VALUES (?, ?, ?) ON "
                              "CONFLICT (\"k\") DO NOTHING";
    noodle_value p[3] = {noodle_int64(1), noodle_text("y"), noodle_text("new")};
    assert_int_equal(affected_by(c, sql, p, 3), 0);
    p[0] = noodle_int64(2);
    assert_int_equal(affected_by(c, sql, p, 3), 1);
    assert_ids(c, "SELECT k FROM t WHERE v = 'old'", NULL, 0, "1");
    /* a conflict on a constraint that is not the target is still an error */
    p[0] = noodle_int64(3);
    p[1] = noodle_text("x");
    noodle_error err = run_fails(c, sql, p, 3, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23505");
    assert_non_null(strstr(err.message, "t_code_key"));
    /* without a target, any constraint arbitrates */
    assert_int_equal(
        affected_by(c, "INSERT INTO t (k, code) VALUES (3, 'x') ON CONFLICT DO NOTHING", NULL, 0),
        0);
    assert_int_equal(affected_by(c,
                                 "INSERT INTO t (k, code) VALUES (3, 'z') ON CONFLICT (code) "
                                 "DO NOTHING",
                                 NULL, 0),
                     1);
    /* a row proposed twice by one statement: the second is skipped */
    assert_int_equal(affected_by(c,
                                 "INSERT INTO t (k, v) VALUES (4, 'a'), (4, 'b'), (5, 'c') "
                                 "ON CONFLICT (k) DO NOTHING",
                                 NULL, 0),
                     2);
    assert_ids(c, "SELECT k FROM t WHERE v = 'a'", NULL, 0, "4");
    assert_int_equal(noodle_mock_node_rows("upsert", "t"), 5);
    noodle_conn_close(c);
}

static void unique_and_composite_primary_keys_refuse_duplicates_with_23505(void **state) {
    (void)state;
    noodle_conn *a = open_node("mock://uniq"), *b = open_node("mock://uniq");
    noodle_error err;
    run_free(a,
             "CREATE TABLE \"pairs\" (\"a\" INT, \"b\" INT, \"code\" TEXT UNIQUE, "
             "PRIMARY KEY (\"a\", \"b\"))",
             NULL, 0);
    run_free(a, "INSERT INTO pairs (a, b, code) VALUES (1, 1, 'x'), (1, 2, NULL), (2, 1, NULL)",
             NULL, 0); /* NULLs never collide */
    err =
        run_fails(a, "INSERT INTO pairs (a, b) VALUES (1, 1)", NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23505");
    assert_non_null(strstr(err.message, "pairs_pkey"));
    err = run_fails(a, "INSERT INTO pairs (a, b, code) VALUES (3, 3, 'x')", NULL, 0,
                    NOODLE_E_QUERY_CONSTRAINT);
    assert_non_null(strstr(err.message, "pairs_code_key"));
    err = run_fails(a, "INSERT INTO pairs (b) VALUES (1)", NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23502"); /* primary key columns are NOT NULL */
    /* updates: onto another row's values fails, keeping one's own value is fine */
    run_fails(a, "UPDATE pairs SET code = 'x' WHERE a = 2", NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    run_fails(a, "UPDATE pairs SET b = 2 WHERE a = 1 AND b = 1", NULL, 0,
              NOODLE_E_QUERY_CONSTRAINT);
    assert_int_equal(affected_by(a, "UPDATE pairs SET code = 'x' WHERE a = 1 AND b = 1", NULL, 0),
                     1);
    /* a conflict target names a constraint's columns in any order */
    assert_int_equal(affected_by(a,
                                 "INSERT INTO pairs (a, b, code) VALUES (1, 2, 'w') ON CONFLICT "
                                 "(\"b\", \"a\") DO UPDATE SET code = excluded.code",
                                 NULL, 0),
                     1);
    assert_ids(a, "SELECT b FROM pairs WHERE code = 'w'", NULL, 0, "2");
    assert_int_equal(affected_by(a,
                                 "INSERT INTO pairs (a, b, code) VALUES (9, 9, 'x') ON CONFLICT "
                                 "(code) DO NOTHING",
                                 NULL, 0),
                     0);
    run_fails(a, "INSERT INTO pairs (a, b, code) VALUES (9, 9, 'x') ON CONFLICT (a, b) DO NOTHING",
              NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    err = run_fails(a, "INSERT INTO pairs (a, b) VALUES (9, 9) ON CONFLICT (a) DO NOTHING", NULL, 0,
                    NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42P10");
    /* a unique value committed first by another session fails the COMMIT */
    assert_ok(noodle_conn_begin(a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    run_free(a, "INSERT INTO pairs (a, b, code) VALUES (5, 5, 't')", NULL, 0);
    run_free(b, "INSERT INTO pairs (a, b, code) VALUES (6, 6, 't')", NULL, 0);
    assert_code(noodle_conn_commit(a, DEADLINE(), &err), &err, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23505");
    assert_ids(b, "SELECT a FROM pairs WHERE code = 't'", NULL, 0, "6");
    /* table-level UNIQUE on two columns */
    run_free(a, "CREATE TABLE u2 (id INT PRIMARY KEY, x INT, y INT, UNIQUE (x, y))", NULL, 0);
    run_free(a, "INSERT INTO u2 VALUES (1, 1, 1), (2, 1, 2), (3, 1, NULL), (4, 1, NULL)", NULL, 0);
    run_fails(a, "INSERT INTO u2 VALUES (5, 1, 2)", NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    /* malformed constraints */
    err = run_fails(a, "CREATE TABLE bad (a INT PRIMARY KEY, b INT, PRIMARY KEY (b))", NULL, 0,
                    NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42P16");
    err = run_fails(a, "CREATE TABLE bad (a INT, UNIQUE (nope))", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42703");
    err = run_fails(a, "CREATE TABLE bad (a INT, UNIQUE (a, a))", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42701");
    assert_int_equal(noodle_mock_node_rows("uniq", "bad"), -1);
    noodle_conn_close(a);
    noodle_conn_close(b);
}

static void a_table_without_a_primary_key_accepts_duplicate_rows(void **state) {
    (void)state;
    noodle_conn *a = open_node("mock://nokey"), *b = open_node("mock://nokey");
    noodle_error err;
    run_free(a, "CREATE TABLE \"log\" (\"n\" INT, \"msg\" TEXT)", NULL, 0);
    assert_int_equal(
        affected_by(a, "INSERT INTO log VALUES (1, 'x'), (1, 'x'), (NULL, 'y')", NULL, 0), 3);
    noodle_rows *r = run(a, "SELECT * FROM log", NULL, 0);
    assert_int_equal(noodle_rows_columns(r), 2); /* the rowid is hidden */
    assert_int_equal(noodle_rows_count(r), 3);   /* in insertion order */
    assert_int_equal(noodle_rows_get(r, 1, 0)->v.i, 1);
    assert_int_equal(noodle_rows_get(r, 2, 0)->type, NOODLE_TYPE_NULL);
    noodle_rows_free(r);
    assert_int_equal(affected_by(a, "UPDATE log SET msg = 'z' WHERE n = 1", NULL, 0), 2);
    assert_int_equal(affected_by(a, "DELETE FROM log WHERE msg = 'z'", NULL, 0), 2);
    assert_int_equal(noodle_mock_node_rows("nokey", "log"), 1);
    /* two transactions adding the same row both commit */
    assert_ok(noodle_conn_begin(a, NOODLE_ISOLATION_SERIALIZABLE, DEADLINE(), &err), &err);
    assert_ok(noodle_conn_begin(b, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    run_free(a, "INSERT INTO log VALUES (2, 'p')", NULL, 0);
    run_free(a, "INSERT INTO log VALUES (2, 'p')", NULL, 0);
    run_free(b, "INSERT INTO log VALUES (2, 'p')", NULL, 0);
    assert_int_equal(scalar(a, "SELECT count(*) FROM log WHERE n = 2", NULL, 0), 2);
    assert_int_equal(scalar(b, "SELECT count(*) FROM log WHERE n = 2", NULL, 0), 1);
    assert_ok(noodle_conn_commit(b, DEADLINE(), &err), &err);
    assert_ok(noodle_conn_commit(a, DEADLINE(), &err), &err);
    assert_int_equal(scalar(b, "SELECT count(*) FROM log WHERE n = 2", NULL, 0), 3);
    /* ON CONFLICT needs a constraint to arbitrate */
    run_fails(a, "INSERT INTO log VALUES (2, 'p') ON CONFLICT (n) DO NOTHING", NULL, 0,
              NOODLE_E_QUERY_SYNTAX);
    assert_int_equal(
        affected_by(a, "INSERT INTO log VALUES (2, 'p') ON CONFLICT DO NOTHING", NULL, 0), 1);
    noodle_conn_close(a);
    noodle_conn_close(b);
}

/* ---- transactions -------------------------------------------------------------------- */

static void a_transaction_sees_its_own_writes_and_others_do_not(void **state) {
    (void)state;
    noodle_conn *a = open_node("mock://txn"), *b = open_node("mock://txn");
    noodle_error err;
    make_kv(a);
    put(a, 1, 100);
    put(a, 2, 200);
    assert_ok(noodle_conn_begin(a, NOODLE_ISOLATION_READ_COMMITTED, DEADLINE(), &err), &err);
    put(a, 3, 300);
    run_free(a, "UPDATE kv SET n = n + 1 WHERE id = 1", NULL, 0);
    run_free(a, "DELETE FROM kv WHERE id = 2", NULL, 0);
    put(a, 2, 222); /* re-insert a key deleted in the same transaction */
    /* a sees its overlay, in key order */
    noodle_rows *r = run(a, "SELECT id, n FROM kv", NULL, 0);
    assert_int_equal(noodle_rows_count(r), 3);
    assert_int_equal(noodle_rows_get(r, 0, 1)->v.i, 101);
    assert_int_equal(noodle_rows_get(r, 1, 1)->v.i, 222);
    assert_int_equal(noodle_rows_get(r, 2, 0)->v.i, 3);
    noodle_rows_free(r);
    assert_int_equal(scalar(a, "SELECT sum(n) FROM kv", NULL, 0), 101 + 222 + 300);
    /* b sees only what is committed */
    assert_int_equal(count_kv(b), 2);
    assert_int_equal(get_n(b, 1), 100);
    assert_int_equal(get_n(b, 2), 200);
    assert_int_equal(noodle_mock_node_rows("txn", "kv"), 2);
    assert_ok(noodle_conn_commit(a, DEADLINE(), &err), &err);
    assert_int_equal(count_kv(b), 3);
    assert_int_equal(get_n(b, 1), 101);
    assert_int_equal(get_n(b, 2), 222);
    noodle_conn_close(a);
    noodle_conn_close(b);
}

static void savepoints_nest_three_deep_and_roll_back_to_any_level(void **state) {
    (void)state;
    noodle_conn *a = open_node("mock://txn");
    noodle_error err;
    make_kv(a);
    assert_ok(noodle_conn_begin(a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    put(a, 0, 0);
    static const char *const sp[] = {"sp_1", "sp_2", "sp_3"};
    for (int lvl = 0; lvl < 3; lvl++) {
        assert_ok(noodle_conn_savepoint(a, sp[lvl], DEADLINE(), &err), &err);
        put(a, lvl + 1, lvl + 1);
    }
    assert_int_equal(count_kv(a), 4);
    assert_ok(noodle_conn_rollback_to(a, "sp_3", DEADLINE(), &err), &err);
    assert_int_equal(count_kv(a), 3);
    assert_ok(noodle_conn_rollback_to(a, "sp_2", DEADLINE(), &err), &err);
    assert_int_equal(count_kv(a), 2);
    /* rolled back to: sp_2 stays (and can be used again); sp_3 is gone */
    put(a, 7, 7);
    assert_ok(noodle_conn_rollback_to(a, "sp_2", DEADLINE(), &err), &err);
    assert_int_equal(count_kv(a), 2);
    assert_code(noodle_conn_rollback_to(a, "sp_3", DEADLINE(), &err), &err,
                NOODLE_E_QUERY_INVALID_SAVEPOINT);
    assert_string_equal(err.detail, "SQLSTATE 3B001");
    /* release keeps the work and forgets the savepoint and those above */
    assert_ok(noodle_conn_savepoint(a, "sp_x", DEADLINE(), &err), &err);
    put(a, 8, 8);
    assert_ok(noodle_conn_release(a, "sp_1", DEADLINE(), &err), &err);
    assert_code(noodle_conn_rollback_to(a, "sp_x", DEADLINE(), &err), &err,
                NOODLE_E_QUERY_INVALID_SAVEPOINT);
    assert_code(noodle_conn_release(a, "sp_1", DEADLINE(), &err), &err,
                NOODLE_E_QUERY_INVALID_SAVEPOINT);
    assert_ok(noodle_conn_commit(a, DEADLINE(), &err), &err);
    noodle_rows *r = run(a, "SELECT id FROM kv", NULL, 0);
    assert_int_equal(noodle_rows_count(r), 3);
    assert_int_equal(noodle_rows_get(r, 0, 0)->v.i, 0);
    assert_int_equal(noodle_rows_get(r, 1, 0)->v.i, 1);
    assert_int_equal(noodle_rows_get(r, 2, 0)->v.i, 8);
    noodle_rows_free(r);
    noodle_conn_close(a);
}

static void transaction_control_outside_its_state_fails_with_5011(void **state) {
    (void)state;
    noodle_conn *a = open_node("mock://txn");
    noodle_error err;
    assert_code(noodle_conn_commit(a, DEADLINE(), &err), &err, NOODLE_E_QUERY_TXN_STATE);
    assert_code(noodle_conn_rollback(a, DEADLINE(), &err), &err, NOODLE_E_QUERY_TXN_STATE);
    assert_code(noodle_conn_savepoint(a, "s", DEADLINE(), &err), &err, NOODLE_E_QUERY_TXN_STATE);
    assert_code(noodle_conn_release(a, "s", DEADLINE(), &err), &err, NOODLE_E_QUERY_TXN_STATE);
    assert_code(noodle_conn_rollback_to(a, "s", DEADLINE(), &err), &err, NOODLE_E_QUERY_TXN_STATE);
    assert_ok(noodle_conn_begin(a, NOODLE_ISOLATION_SERIALIZABLE, DEADLINE(), &err), &err);
    assert_code(noodle_conn_begin(a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err,
                NOODLE_E_QUERY_TXN_STATE);
    /* DDL is autocommit only in the mock */
    run_fails(a, "CREATE TABLE t (id INT)", NULL, 0, NOODLE_E_QUERY_UNSUPPORTED);
    assert_ok(noodle_conn_rollback(a, DEADLINE(), &err), &err);
    assert_int_equal(noodle_conn_get_state(a), NOODLE_CONN_OK);
    noodle_conn_close(a);
}

static void a_key_committed_first_by_another_session_fails_the_commit_with_5002(void **state) {
    (void)state;
    noodle_conn *a = open_node("mock://txn"), *b = open_node("mock://txn");
    noodle_error err;
    make_kv(a);
    assert_ok(noodle_conn_begin(a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    assert_ok(noodle_conn_begin(b, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    put(b, 2, 2); /* would be applied before the conflicting key: must be undone */
    put(b, 1, 20);
    put(a, 1, 10);
    assert_ok(noodle_conn_commit(a, DEADLINE(), &err), &err);
    assert_code(noodle_conn_commit(b, DEADLINE(), &err), &err, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23505");
    /* nothing of b's was applied and its transaction is over */
    assert_int_equal(noodle_mock_node_rows("txn", "kv"), 1);
    assert_int_equal(get_n(b, 1), 10);
    assert_code(noodle_conn_commit(b, DEADLINE(), &err), &err, NOODLE_E_QUERY_TXN_STATE);
    assert_int_equal(stats_of("txn").commits, 2); /* CREATE TABLE and a's commit */
    noodle_conn_close(a);
    noodle_conn_close(b);
}

static void serializable_write_write_conflict_fails_the_second_commit_with_5003(void **state) {
    (void)state;
    noodle_conn *a = open_node("mock://txn"), *b = open_node("mock://txn");
    noodle_error err;
    make_kv(a);
    put(a, 1, 0);
    put(a, 2, 0);
    assert_ok(noodle_conn_begin(a, NOODLE_ISOLATION_SERIALIZABLE, DEADLINE(), &err), &err);
    assert_ok(noodle_conn_begin(b, NOODLE_ISOLATION_SERIALIZABLE, DEADLINE(), &err), &err);
    run_free(a, "UPDATE kv SET n = n + 1 WHERE id = 1", NULL, 0);
    run_free(b, "UPDATE kv SET n = n + 10 WHERE id = 1", NULL, 0);
    run_free(b, "UPDATE kv SET n = 5 WHERE id = 2", NULL, 0);
    assert_ok(noodle_conn_commit(a, DEADLINE(), &err), &err);
    assert_code(noodle_conn_commit(b, DEADLINE(), &err), &err, NOODLE_E_QUERY_SERIALIZATION);
    assert_string_equal(err.detail, "SQLSTATE 40001");
    assert_int_equal(get_n(b, 1), 1);
    assert_int_equal(get_n(b, 2), 0); /* nothing of b's applied */
    /* the retry succeeds */
    assert_ok(noodle_conn_begin(b, NOODLE_ISOLATION_SERIALIZABLE, DEADLINE(), &err), &err);
    run_free(b, "UPDATE kv SET n = n + 10 WHERE id = 1", NULL, 0);
    assert_ok(noodle_conn_commit(b, DEADLINE(), &err), &err);
    assert_int_equal(get_n(a, 1), 11);
    noodle_conn_close(a);
    noodle_conn_close(b);
}

static void
repeatable_read_fails_when_a_row_it_read_changed_but_read_committed_does_not(void **state) {
    (void)state;
    noodle_conn *a = open_node("mock://txn"), *b = open_node("mock://txn");
    noodle_error err;
    make_kv(a);
    put(a, 1, 0);
    put(a, 2, 0);
    static const noodle_isolation levels[] = {NOODLE_ISOLATION_READ_COMMITTED,
                                              NOODLE_ISOLATION_REPEATABLE_READ};
    for (size_t i = 0; i < 2; i++) {
        assert_ok(noodle_conn_begin(a, levels[i], DEADLINE(), &err), &err);
        int64_t seen = get_n(a, 1);
        run_free(b, "UPDATE kv SET n = n + 1 WHERE id = 1", NULL, 0); /* autocommit */
        noodle_value p[1] = {noodle_int64(seen)};
        run_free(a, "UPDATE kv SET n = ? WHERE id = 2", p, 1);
        int rc = noodle_conn_commit(a, DEADLINE(), &err);
        if (levels[i] == NOODLE_ISOLATION_READ_COMMITTED) assert_ok(rc, &err);
        else assert_code(rc, &err, NOODLE_E_QUERY_SERIALIZATION);
    }
    assert_int_equal(get_n(b, 2), 0);
    noodle_conn_close(a);
    noodle_conn_close(b);
}

/* ---- faults: latency, hangs, injected failures --------------------------------------- */

static void latency_delays_calls_by_at_least_the_setting_and_op_settings_beat_any(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://slow");
    noodle_error err;
    assert_ok(noodle_mock_set_latency("slow", NOODLE_MOCK_OP_EXECUTE, NOODLE_MS(120), &err), &err);
    int64_t t0 = noodle_test_now_ms();
    run_free(c, "SELECT 1", NULL, 0);
    assert_true(noodle_test_now_ms() - t0 >= 120);
    /* ANY applies to the operations without a setting of their own */
    assert_ok(noodle_mock_set_latency("slow", NOODLE_MOCK_OP_ANY, NOODLE_MS(60), &err), &err);
    t0 = noodle_test_now_ms();
    assert_ok(noodle_conn_validate(c, DEADLINE(), &err), &err);
    assert_true(noodle_test_now_ms() - t0 >= 60);
    t0 = noodle_test_now_ms();
    run_free(c, "SELECT 1", NULL, 0);
    assert_true(noodle_test_now_ms() - t0 >= 120);
    /* 0 clears */
    assert_ok(noodle_mock_set_latency("slow", NOODLE_MOCK_OP_ANY, 0, &err), &err);
    assert_ok(noodle_mock_set_latency("slow", NOODLE_MOCK_OP_EXECUTE, 0, &err), &err);
    t0 = noodle_test_now_ms();
    run_free(c, "SELECT 1", NULL, 0);
    assert_true(noodle_test_now_ms() - t0 < 5000);
    noodle_conn_close(c);
}

static void latency_past_the_deadline_fails_with_4004_at_the_deadline_and_breaks_the_connection(
    void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://slow");
    noodle_error err;
    noodle_rows *r = NULL;
    assert_ok(noodle_mock_set_latency("slow", NOODLE_MOCK_OP_ANY, NOODLE_SEC(10), &err), &err);
    int64_t t0 = noodle_test_now_ms();
    int rc = noodle_conn_execute(c, "SELECT 1", NULL, 0, noodle_deadline_after(NULL, NOODLE_MS(50)),
                                 &r, &err);
    int64_t elapsed = noodle_test_now_ms() - t0;
    assert_code(rc, &err, NOODLE_E_BACKEND_TIMEOUT);
    assert_null(r);
    assert_true(elapsed >= 50 && elapsed < 2000);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    assert_int_equal(stats_of("slow").failures[NOODLE_MOCK_OP_EXECUTE], 1);
    assert_int_equal(stats_of("slow").open_connections, 0); /* the session died */
    /* connect: 4002 */
    noodle_connect_params p = {.url = "mock://slow",
                               .deadline = noodle_deadline_after(NULL, NOODLE_MS(50))};
    noodle_conn *c2 = NULL;
    t0 = noodle_test_now_ms();
    assert_code(noodle_conn_open(noodle_mock_backend(), &p, &c2, &err), &err,
                NOODLE_E_CONNECT_TIMEOUT);
    assert_true(noodle_test_now_ms() - t0 < 2000);
    assert_null(c2);
    noodle_conn_close(c);
}

static void a_passed_deadline_fails_with_4004_without_any_fault(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://slow");
    noodle_error err;
    noodle_role role;
    int64_t passed = noodle_clock_now(NULL);
    assert_code(noodle_conn_role(c, passed, &role, &err), &err, NOODLE_E_BACKEND_TIMEOUT);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    assert_int_equal(stats_of("slow").failures_injected, 0); /* not a fault */
    noodle_connect_params p = {.url = "mock://slow", .deadline = passed};
    noodle_conn *c2 = NULL;
    assert_code(noodle_conn_open(noodle_mock_backend(), &p, &c2, &err), &err,
                NOODLE_E_CONNECT_TIMEOUT);
    noodle_conn_close(c);
}

typedef struct blocked_call {
    noodle_conn *c;
    int64_t deadline;
    int rc;
    noodle_error err;
    atomic_int done;
} blocked_call;

static void *validate_thread(void *arg) {
    blocked_call *b = arg;
    b->rc = noodle_conn_validate(b->c, b->deadline, &b->err);
    atomic_store(&b->done, 1);
    return NULL;
}

static void hung_call_is_released_by_its_deadline_with_4004(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://hang");
    noodle_error err;
    assert_ok(noodle_mock_set_hang("hang", NOODLE_MOCK_OP_VALIDATE, true, &err), &err);
    int64_t t0 = noodle_test_now_ms();
    int rc = noodle_conn_validate(c, noodle_deadline_after(NULL, NOODLE_MS(100)), &err);
    int64_t elapsed = noodle_test_now_ms() - t0;
    assert_code(rc, &err, NOODLE_E_BACKEND_TIMEOUT);
    assert_true(elapsed >= 100 && elapsed < 5000);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    noodle_conn_close(c);
}

static void hung_call_without_deadline_proceeds_once_the_hang_is_cleared(void **state) {
    (void)state;
    noodle_error err;
    for (int how = 0; how < 2; how++) { /* set_hang(false), then clear_faults */
        noodle_conn *c = open_node("mock://hang");
        assert_ok(noodle_mock_set_hang("hang", NOODLE_MOCK_OP_ANY, true, &err), &err);
        blocked_call b = {.c = c, .deadline = NOODLE_NO_DEADLINE};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, validate_thread, &b), 0);
        struct timespec pause = {0, 150 * 1000000L};
        nanosleep(&pause, NULL);
        assert_int_equal(atomic_load(&b.done), 0); /* still blocked */
        if (how == 0)
            assert_ok(noodle_mock_set_hang("hang", NOODLE_MOCK_OP_ANY, false, &err), &err);
        else assert_ok(noodle_mock_clear_faults("hang", &err), &err);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_ok(b.rc, &b.err);
        assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
        noodle_conn_close(c);
    }
}

static void hung_call_is_released_with_4003_when_the_node_crashes(void **state) {
    (void)state;
    noodle_error err;
    noodle_conn *c = open_node("mock://hang");
    assert_ok(noodle_mock_set_hang("hang", NOODLE_MOCK_OP_VALIDATE, true, &err), &err);
    blocked_call b = {.c = c, .deadline = NOODLE_NO_DEADLINE};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, validate_thread, &b), 0);
    struct timespec pause = {0, 100 * 1000000L};
    nanosleep(&pause, NULL);
    assert_ok(noodle_mock_node_crash("hang", &err), &err);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_code(b.rc, &b.err, NOODLE_E_CONNECTION_LOST);
    noodle_conn_close(c);
}

static void fail_next_with_a_fatal_code_breaks_the_connection(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://flaky");
    noodle_error err;
    assert_ok(
        noodle_mock_fail_next("flaky", NOODLE_MOCK_OP_EXECUTE, 1, NOODLE_E_CONNECTION_LOST, &err),
        &err);
    noodle_error e = run_fails(c, "SELECT 1", NULL, 0, NOODLE_E_CONNECTION_LOST);
    assert_string_equal(e.detail, "mock fault fail_next");
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    noodle_conn_close(c);
    c = open_node("mock://flaky"); /* consumed: the next connection works */
    run_free(c, "SELECT 1", NULL, 0);
    noodle_mock_stats st = stats_of("flaky");
    assert_int_equal(st.failures[NOODLE_MOCK_OP_EXECUTE], 1);
    assert_int_equal(st.calls[NOODLE_MOCK_OP_EXECUTE], 2);
    noodle_conn_close(c);
}

static void fail_next_with_a_non_fatal_code_leaves_the_connection_usable(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://flaky");
    noodle_error err;
    make_kv(c);
    assert_ok(noodle_mock_fail_next("flaky", NOODLE_MOCK_OP_EXECUTE, 2, NOODLE_E_QUERY_BUSY, &err),
              &err);
    run_fails(c, "INSERT INTO kv (id) VALUES (1)", NULL, 0, NOODLE_E_QUERY_BUSY);
    run_fails(c, "INSERT INTO kv (id) VALUES (1)", NULL, 0, NOODLE_E_QUERY_BUSY);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    assert_int_equal(noodle_mock_node_rows("flaky", "kv"), 0); /* failed before doing anything */
    run_free(c, "INSERT INTO kv (id) VALUES (1)", NULL, 0);
    /* a failed COMMIT ends the transaction, nothing applied */
    assert_ok(
        noodle_mock_fail_next("flaky", NOODLE_MOCK_OP_COMMIT, 1, NOODLE_E_QUERY_DEADLOCK, &err),
        &err);
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    put(c, 2, 2);
    assert_code(noodle_conn_commit(c, DEADLINE(), &err), &err, NOODLE_E_QUERY_DEADLOCK);
    assert_code(noodle_conn_commit(c, DEADLINE(), &err), &err, NOODLE_E_QUERY_TXN_STATE);
    assert_int_equal(count_kv(c), 1);
    /* a setting of its own beats ANY; ANY covers the rest */
    assert_ok(noodle_mock_fail_next("flaky", NOODLE_MOCK_OP_ANY, 1, NOODLE_E_QUERY_FAILED, &err),
              &err);
    assert_ok(noodle_mock_fail_next("flaky", NOODLE_MOCK_OP_VALIDATE, 1, NOODLE_E_QUERY_BUSY, &err),
              &err);
    assert_code(noodle_conn_validate(c, DEADLINE(), &err), &err, NOODLE_E_QUERY_BUSY);
    noodle_role role;
    assert_code(noodle_conn_role(c, DEADLINE(), &role, &err), &err, NOODLE_E_QUERY_FAILED);
    assert_ok(noodle_conn_role(c, DEADLINE(), &role, &err), &err);
    assert_int_equal(stats_of("flaky").failures_injected, 5);
    noodle_conn_close(c);
}

/* Outcomes of 1000 validates under fail_probability 0.3 after seeding. */
static void probability_outcomes(uint64_t seed, unsigned char out[1000]) {
    noodle_error err;
    noodle_conn *c = open_node("mock://dice");
    assert_ok(noodle_mock_node_seed("dice", seed, &err), &err);
    assert_ok(noodle_mock_fail_probability("dice", NOODLE_MOCK_OP_VALIDATE, 0.3,
                                           NOODLE_E_QUERY_BUSY, &err),
              &err);
    for (int i = 0; i < 1000; i++) {
        int rc = noodle_conn_validate(c, DEADLINE(), &err);
        if (rc != 0 && rc != NOODLE_E_QUERY_BUSY) fail_msg("unexpected code %d", rc);
        out[i] = rc != 0;
    }
    noodle_conn_close(c);
}

static void seeded_failure_probability_is_reproducible(void **state) {
    (void)state;
    unsigned char a[1000], b[1000], other[1000];
    probability_outcomes(42, a);
    probability_outcomes(42, b);
    probability_outcomes(43, other);
    assert_memory_equal(a, b, sizeof a);
    assert_true(memcmp(a, other, sizeof a) != 0);
    int failures = 0;
    for (int i = 0; i < 1000; i++) failures += a[i];
    assert_true(failures > 200 && failures < 400);
    /* fail_next is consumed first and draws nothing; p = 0 clears */
    noodle_error err;
    assert_ok(noodle_mock_fail_probability("dice", NOODLE_MOCK_OP_VALIDATE, 0, 0, &err), &err);
    noodle_conn *c = open_node("mock://dice");
    for (int i = 0; i < 50; i++) assert_ok(noodle_conn_validate(c, DEADLINE(), &err), &err);
    noodle_conn_close(c);
}

static void crashed_node_refuses_connects_until_restart_and_keeps_committed_data(void **state) {
    (void)state;
    noodle_conn *a = open_node("mock://crashy"), *b = open_node("mock://crashy");
    noodle_error err;
    make_kv(a);
    put(a, 1, 1);
    assert_ok(noodle_conn_begin(b, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    put(b, 2, 2); /* uncommitted: lost in the crash */
    assert_ok(noodle_mock_node_crash("crashy", &err), &err);
    assert_code(noodle_conn_validate(a, DEADLINE(), &err), &err, NOODLE_E_CONNECTION_LOST);
    /* the commit was sent on a dead connection: the caller cannot know */
    assert_code(noodle_conn_commit(b, DEADLINE(), &err), &err, NOODLE_E_OUTCOME_UNKNOWN);
    assert_non_null(strstr(err.message, "NOODLE-4003"));
    noodle_mock_stats st = stats_of("crashy");
    assert_true(st.crashed);
    assert_int_equal(st.open_connections, 0);
    noodle_connect_params p = {.url = "mock://crashy", .deadline = DEADLINE()};
    noodle_conn *c = NULL;
    assert_code(noodle_conn_open(noodle_mock_backend(), &p, &c, &err), &err,
                NOODLE_E_CONNECT_FAILED);
    assert_null(c);
    assert_int_equal(noodle_mock_node_rows("crashy", "kv"), 1); /* committed data survives */
    assert_ok(noodle_mock_node_restart("crashy", &err), &err);
    assert_false(stats_of("crashy").crashed);
    c = open_node("mock://crashy");
    assert_int_equal(count_kv(c), 1);
    assert_int_equal(get_n(c, 1), 1);
    noodle_conn_close(c);
    noodle_conn_close(a);
    noodle_conn_close(b);
}

static void lost_commit_acknowledgement_reports_outcome_unknown_yet_the_data_is_there(void **state) {
    (void)state;
    noodle_conn *a = open_node("mock://ack");
    noodle_error err;
    make_kv(a);
    assert_ok(noodle_mock_commit_ack_lost("ack", 2, &err), &err);
    assert_ok(noodle_conn_begin(a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    put(a, 1, 1);
    put(a, 2, 2);
    assert_code(noodle_conn_commit(a, DEADLINE(), &err), &err, NOODLE_E_OUTCOME_UNKNOWN);
    assert_non_null(strstr(err.message, "acknowledgement was lost"));
    assert_int_equal(noodle_conn_get_state(a), NOODLE_CONN_BROKEN);
    assert_int_equal(noodle_mock_node_rows("ack", "kv"), 2);
    noodle_conn_close(a);
    /* an autocommit write too */
    a = open_node("mock://ack");
    run_fails(a, "INSERT INTO kv (id, n) VALUES (3, 3)", NULL, 0, NOODLE_E_CONNECTION_LOST);
    assert_int_equal(noodle_mock_node_rows("ack", "kv"), 3);
    noodle_conn_close(a);
    /* used up: the next commit is acknowledged */
    a = open_node("mock://ack");
    put(a, 4, 4);
    noodle_mock_stats st = stats_of("ack");
    assert_int_equal(st.commits, 4); /* CREATE, the transaction, two inserts */
    assert_int_equal(st.failures[NOODLE_MOCK_OP_COMMIT], 1);
    assert_int_equal(st.failures[NOODLE_MOCK_OP_EXECUTE], 1);
    noodle_conn_close(a);
}

static void standby_and_read_only_nodes_refuse_writes_with_5009_and_allow_reads(void **state) {
    (void)state;
    noodle_error err;
    static const noodle_role roles[] = {NOODLE_ROLE_STANDBY, NOODLE_ROLE_READ_ONLY};
    static const char *const writes[] = {
        "INSERT INTO kv (id) VALUES (9)",
        "UPDATE kv SET n = 0",
        "UPDATE kv SET n = 0 WHERE id = 999", /* a write even when it matches nothing */
        "DELETE FROM kv",
        "CREATE TABLE other (id INT)",
        "DROP TABLE kv",
        "INSERT INTO kv (id) VALUES (1) ON CONFLICT (id) DO NOTHING",
        "INSERT INTO kv (id, n) VALUES (1, 5) ON CONFLICT (id) DO UPDATE SET n = excluded.n",
    };
    for (size_t i = 0; i < 2; i++) {
        noodle_mock_reset();
        noodle_conn *c = open_node("mock://replica");
        make_kv(c);
        put(c, 1, 1);
        assert_ok(noodle_mock_node_set_role("replica", roles[i], &err), &err);
        for (size_t w = 0; w < sizeof writes / sizeof *writes; w++) {
            noodle_error e = run_fails(c, writes[w], NULL, 0, NOODLE_E_QUERY_READ_ONLY);
            assert_string_equal(e.detail, "SQLSTATE 25006");
        }
        assert_int_equal(count_kv(c), 1);
        noodle_role role;
        assert_ok(noodle_conn_role(c, DEADLINE(), &role, &err), &err);
        assert_int_equal(role, roles[i]);
        noodle_server_metrics m;
        assert_ok(noodle_conn_metrics(c, DEADLINE(), &m, &err), &err);
        assert_int_equal(m.role, roles[i]);
        /* demoted with writes pending: the commit is refused */
        assert_ok(noodle_mock_node_set_role("replica", NOODLE_ROLE_PRIMARY, &err), &err);
        assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
        put(c, 2, 2);
        assert_ok(noodle_mock_node_set_role("replica", roles[i], &err), &err);
        assert_code(noodle_conn_commit(c, DEADLINE(), &err), &err, NOODLE_E_QUERY_READ_ONLY);
        assert_int_equal(noodle_mock_node_rows("replica", "kv"), 1);
        noodle_conn_close(c);
    }
    assert_code(noodle_mock_node_set_role("replica", NOODLE_ROLE_UNKNOWN, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
}

/* ---- connections, counters, nodes ---------------------------------------------------- */

static void stats_count_connections_calls_and_the_peak(void **state) {
    (void)state;
    noodle_error err;
    noodle_conn *c[3];
    for (int i = 0; i < 3; i++) c[i] = open_node("mock://count");
    noodle_conn_close(c[0]);
    noodle_conn_close(c[1]);
    c[0] = open_node("mock://count");
    assert_ok(noodle_conn_validate(c[0], DEADLINE(), &err), &err);
    noodle_mock_stats st = stats_of("count");
    assert_int_equal(st.open_connections, 2);
    assert_int_equal(st.peak_connections, 3);
    assert_int_equal(st.connects_total, 4);
    assert_int_equal(st.calls[NOODLE_MOCK_OP_CONNECT], 4);
    assert_int_equal(st.calls[NOODLE_MOCK_OP_VALIDATE], 1);
    assert_int_equal(st.role, NOODLE_ROLE_PRIMARY);
    assert_false(st.crashed);
    assert_ok(noodle_mock_node_reset_stats("count", &err), &err);
    st = stats_of("count");
    assert_int_equal(st.peak_connections, 2);
    assert_int_equal(st.connects_total, 0);
    assert_int_equal(st.calls[NOODLE_MOCK_OP_VALIDATE], 0);
    noodle_conn_close(c[0]);
    noodle_conn_close(c[2]);
    assert_int_equal(stats_of("count").open_connections, 0);
}

static void kill_connections_ends_every_session_but_new_ones_connect(void **state) {
    (void)state;
    noodle_error err;
    noodle_conn *a = open_node("mock://kill"), *b = open_node("mock://kill");
    assert_ok(noodle_mock_node_kill_connections("kill", &err), &err);
    assert_code(noodle_conn_validate(a, DEADLINE(), &err), &err, NOODLE_E_CONNECTION_LOST);
    assert_code(noodle_conn_validate(b, DEADLINE(), &err), &err, NOODLE_E_CONNECTION_LOST);
    assert_int_equal(stats_of("kill").open_connections, 0);
    noodle_conn *c = open_node("mock://kill");
    assert_ok(noodle_conn_validate(c, DEADLINE(), &err), &err);
    /* one session only */
    noodle_conn *d = open_node("mock://kill");
    noodle_mock_conn_kill(noodle_conn_handle(d));
    assert_code(noodle_conn_validate(d, DEADLINE(), &err), &err, NOODLE_E_CONNECTION_LOST);
    assert_ok(noodle_conn_validate(c, DEADLINE(), &err), &err);
    assert_int_equal(stats_of("kill").open_connections, 1);
    noodle_conn_close(a);
    noodle_conn_close(b);
    noodle_conn_close(c);
    noodle_conn_close(d);
}

static void reset_drops_every_node_and_kills_its_connections(void **state) {
    (void)state;
    noodle_error err;
    noodle_conn *c = open_node("mock://gone");
    make_kv(c);
    assert_true(noodle_mock_node_exists("gone"));
    noodle_mock_reset();
    assert_false(noodle_mock_node_exists("gone"));
    assert_int_equal(noodle_mock_node_rows("gone", "kv"), -1);
    assert_code(noodle_conn_validate(c, DEADLINE(), &err), &err, NOODLE_E_CONNECTION_LOST);
    noodle_conn *fresh = open_node("mock://gone"); /* a new, empty node */
    run_fails(fresh, "SELECT * FROM kv", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    noodle_conn_close(c); /* frees the dropped node */
    noodle_conn_close(fresh);
}

typedef struct incrementer {
    int ok;
} incrementer;

static void *increment_thread(void *arg) {
    incrementer *inc = arg;
    noodle_connect_params p = {.url = "mock://race", .deadline = DEADLINE()};
    noodle_conn *c = NULL;
    noodle_error err;
    if (noodle_conn_open(noodle_mock_backend(), &p, &c, &err) != 0) return NULL;
    for (int i = 0; i < 500; i++) {
        noodle_rows *r = NULL;
        if (noodle_conn_execute(c, "UPDATE t SET n = n + 1 WHERE id = 1", NULL, 0, DEADLINE(), &r,
                                &err) == 0 &&
            noodle_rows_affected(r) == 1)
            inc->ok++;
        noodle_rows_free(r);
    }
    noodle_conn_close(c);
    return NULL;
}

static void concurrent_autocommit_increments_are_never_lost(void **state) {
    (void)state;
    noodle_conn *c = open_node("mock://race");
    run_free(c, "CREATE TABLE t (id BIGINT PRIMARY KEY, n BIGINT)", NULL, 0);
    run_free(c, "INSERT INTO t (id, n) VALUES (1, 0)", NULL, 0);
    pthread_t threads[16];
    incrementer inc[16] = {{0}};
    for (int i = 0; i < 16; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, increment_thread, &inc[i]), 0);
    int total = 0;
    for (int i = 0; i < 16; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        total += inc[i].ok;
    }
    assert_int_equal(total, 8000);
    assert_int_equal(scalar(c, "SELECT n FROM t WHERE id = 1", NULL, 0), 8000);
    assert_int_equal(stats_of("race").peak_connections >= 2, 1);
    noodle_conn_close(c);
}

static void control_calls_refuse_bad_arguments_with_4011(void **state) {
    (void)state;
    noodle_error err;
    static const char *const bad_names[] = {
        "", "a/b", "mock://x", "caf\xc3\xa9",
        "a123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        assert_code(noodle_mock_node_create(bad_names[i], &err), &err,
                    NOODLE_E_BACKEND_INVALID_ARGUMENT);
        assert_false(noodle_mock_node_exists(bad_names[i]));
    }
    assert_code(noodle_mock_node_crash(NULL, &err), &err, NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_code(noodle_mock_set_latency("n", (noodle_mock_op)99, 1, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_code(noodle_mock_set_latency("n", NOODLE_MOCK_OP_ANY, -1, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_code(
        noodle_mock_fail_probability("n", NOODLE_MOCK_OP_ANY, 1.5, NOODLE_E_QUERY_BUSY, &err), &err,
        NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_code(noodle_mock_fail_next("n", NOODLE_MOCK_OP_ANY, 1, 12345, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_code(noodle_mock_commit_ack_lost("n", -1, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
    noodle_mock_stats st;
    assert_code(noodle_mock_node_stats("never_created", &st, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_false(noodle_mock_node_exists("never_created"));
    assert_int_equal(noodle_mock_node_rows("never_created", "kv"), -1);
    /* control calls create the node they name */
    assert_ok(noodle_mock_node_create("made", &err), &err);
    assert_ok(noodle_mock_node_seed("seeded", 7, &err), &err);
    assert_true(noodle_mock_node_exists("made") && noodle_mock_node_exists("seeded"));
    assert_string_equal(noodle_mock_op_name(NOODLE_MOCK_OP_CONNECT), "connect");
    assert_string_equal(noodle_mock_op_name(NOODLE_MOCK_OP_ROLLBACK_TO), "rollback_to");
    assert_string_equal(noodle_mock_op_name(NOODLE_MOCK_OP_ANY), "any");
    assert_null(noodle_mock_op_name((noodle_mock_op)(NOODLE_MOCK_OP_ANY + 1)));
}

static void urls_name_nodes_and_anything_else_fails_with_4001(void **state) {
    (void)state;
    noodle_error err;
    noodle_conn *c = open_node("mock://");
    noodle_conn_close(c);
    c = open_node("");
    noodle_conn_close(c);
    assert_int_equal(stats_of("default").connects_total, 2);
    c = open_node("mock://Node_1-b");
    noodle_conn_close(c);
    assert_true(noodle_mock_node_exists("Node_1-b"));
    static const char *const bad[] = {
        "mock:/x",      "mock://a/b",
        "mock://a?x=1", "postgres://h/db",
        "default",      "mock://a123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        noodle_connect_params p = {.url = bad[i], .deadline = DEADLINE()};
        assert_code(noodle_conn_open(noodle_mock_backend(), &p, &c, &err), &err,
                    NOODLE_E_CONNECT_FAILED);
        assert_null(c);
        assert_non_null(strstr(err.message, "mock://<node>"));
    }
}

static void register_makes_the_mock_findable_and_is_idempotent(void **state) {
    (void)state;
    noodle_error err;
    const noodle_backend_ops *ops = NULL;
    assert_ok(noodle_mock_register(&err), &err);
    assert_ok(noodle_mock_register(&err), &err);
    assert_ok(noodle_backend_find("mock", &ops, &err), &err);
    assert_ptr_equal(ops, noodle_mock_backend());
    assert_string_equal(ops->name, "mock");
}

static void metrics_report_the_stored_size_and_unknown_replication(void **state) {
    (void)state;
    noodle_error err;
    noodle_server_metrics m;
    noodle_conn *c = open_node("mock://metrics");
    assert_ok(noodle_conn_metrics(c, DEADLINE(), &m, &err), &err);
    assert_int_equal(m.database_size_bytes, 0);
    make_kv(c);
    put(c, 1, 1);
    assert_ok(noodle_conn_metrics(c, DEADLINE(), &m, &err), &err);
    assert_true(m.database_size_bytes > 0);
    assert_int_equal(m.role, NOODLE_ROLE_PRIMARY);
    assert_int_equal(m.standby_count, 0);
    assert_int_equal(m.replication_lag_bytes, -1);
    assert_int_equal(m.replication_delay_ms, -1);
    assert_string_equal(m.server_version, "mock 1");
    assert_string_equal(m.data_path, "");
    noodle_conn_close(c);
}

/* ---- simulated health state ------------------------------------------------------------ */

static noodle_integrity_result integrity(noodle_conn *c, noodle_integrity_level level) {
    noodle_integrity_result r;
    noodle_error err;
    assert_ok(noodle_conn_integrity(c, level, DEADLINE(), &r, &err), &err);
    return r;
}

static void simulated_corruption_is_reported_by_both_checks_until_cleared(void **state) {
    (void)state;
    noodle_error err;
    noodle_conn *c = open_node("mock://health");
    make_kv(c);
    put(c, 1, 1);
    assert_int_equal(integrity(c, NOODLE_INTEGRITY_QUICK).problems, 0);
    assert_ok(noodle_mock_set_corruption("health", 3, "page 7: bad checksum", &err), &err);
    assert_ok(noodle_mock_set_checksum_failures("health", 2, &err), &err);
    const noodle_integrity_level levels[] = {NOODLE_INTEGRITY_QUICK, NOODLE_INTEGRITY_FULL};
    for (size_t i = 0; i < 2; i++) {
        noodle_integrity_result r = integrity(c, levels[i]);
        assert_int_equal(r.problems, 3);
        assert_int_equal(r.checksum_failures, 2);
        assert_string_equal(r.first_problem, "page 7: bad checksum");
        assert_true(r.method[0] != '\0');
    }
    /* corruption is state, not a fault: clear_faults keeps it */
    assert_ok(noodle_mock_clear_faults("health", &err), &err);
    assert_int_equal(integrity(c, NOODLE_INTEGRITY_QUICK).problems, 3);
    assert_ok(noodle_mock_set_corruption("health", 0, "ignored", &err), &err);
    assert_ok(noodle_mock_set_checksum_failures("health", -1, &err), &err);
    noodle_integrity_result r = integrity(c, NOODLE_INTEGRITY_FULL);
    assert_int_equal(r.problems, 0);
    assert_int_equal(r.checksum_failures, -1);
    assert_string_equal(r.first_problem, "");
    noodle_conn_close(c);
}

static void integrity_faults_fail_the_check_with_their_code_and_leave_it_unknown(void **state) {
    (void)state;
    noodle_error err;
    noodle_conn *c = open_node("mock://health");
    assert_ok(noodle_mock_fail_next("health", NOODLE_MOCK_OP_INTEGRITY, 1,
                                    NOODLE_E_QUERY_CANCELED, &err), &err);
    noodle_integrity_result r;
    assert_code(noodle_conn_integrity(c, NOODLE_INTEGRITY_QUICK, DEADLINE(), &r, &err), &err,
                NOODLE_E_QUERY_CANCELED);
    assert_int_equal(r.problems, -1);
    assert_int_equal(integrity(c, NOODLE_INTEGRITY_QUICK).problems, 0);
    noodle_mock_stats st;
    assert_ok(noodle_mock_node_stats("health", &st, &err), &err);
    assert_int_equal(st.calls[NOODLE_MOCK_OP_INTEGRITY], 2);
    assert_int_equal(st.failures[NOODLE_MOCK_OP_INTEGRITY], 1);
    noodle_conn_close(c);
}

static void simulated_standbys_and_archiver_are_reported_by_metrics(void **state) {
    (void)state;
    noodle_error err;
    noodle_standby_status sb[10];
    for (int i = 0; i < 10; i++) {
        sb[i] = (noodle_standby_status){.lag_bytes = i * 100, .replay_lag_ms = i};
        snprintf(sb[i].name, sizeof sb[i].name, "standby%d", i);
        snprintf(sb[i].state, sizeof sb[i].state, "streaming");
    }
    sb[9].lag_bytes = -1; /* unknown: does not count for the largest lag */
    assert_ok(noodle_mock_set_standbys("health", sb, 10, &err), &err);
    assert_ok(noodle_mock_set_archiver("health", 42, 1, 1500, -1, &err), &err);
    noodle_conn *c = open_node("mock://health");
    noodle_server_metrics m;
    assert_ok(noodle_conn_metrics(c, DEADLINE(), &m, &err), &err);
    assert_int_equal(m.standby_count, 10);
    assert_int_equal(m.replication_lag_bytes, 800);
    assert_string_equal(m.standbys[0].name, "standby0");
    assert_string_equal(m.standbys[7].name, "standby7"); /* the first 8 of 10 */
    assert_string_equal(m.standbys[7].state, "streaming");
    assert_int_equal(m.standbys[7].lag_bytes, 700);
    assert_int_equal(m.standbys[7].replay_lag_ms, 7);
    assert_int_equal(m.archive_archived_count, 42);
    assert_int_equal(m.archive_failed_count, 1);
    assert_int_equal(m.archive_last_archived_age_ms, 1500);
    assert_int_equal(m.archive_last_failed_age_ms, -1);
    /* cleared: no standby, and the archiver unknown again */
    assert_ok(noodle_mock_set_standbys("health", NULL, 0, &err), &err);
    assert_ok(noodle_mock_set_archiver("health", -1, -1, -1, -1, &err), &err);
    assert_ok(noodle_conn_metrics(c, DEADLINE(), &m, &err), &err);
    assert_int_equal(m.standby_count, 0);
    assert_string_equal(m.standbys[0].name, "");
    assert_int_equal(m.standbys[0].lag_bytes, -1);
    assert_int_equal(m.archive_archived_count, -1);
    noodle_conn_close(c);
}

static void health_controls_refuse_bad_values_with_4011(void **state) {
    (void)state;
    noodle_error err;
    noodle_standby_status sb[NOODLE_MOCK_MAX_STANDBYS + 1] = {{.lag_bytes = -2}};
    assert_code(noodle_mock_set_corruption("health", -1, NULL, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_code(noodle_mock_set_checksum_failures("health", -2, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_code(noodle_mock_set_standbys("health", sb, 1, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_code(noodle_mock_set_standbys("health", sb, NOODLE_MOCK_MAX_STANDBYS + 1, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_code(noodle_mock_set_standbys("health", NULL, 1, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_code(noodle_mock_set_archiver("health", 0, -3, 0, 0, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_code(noodle_mock_set_corruption("bad name!", 1, "x", &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
}

/* A backend built before the integrity op (its table ends before it) is
 * still accepted; asking it for integrity fails with 4016 without calling
 * it. */
static void a_backend_built_before_integrity_fails_it_with_4016(void **state) {
    (void)state;
    static noodle_backend_ops old;
    old = *noodle_mock_backend();
    old.name = "mock_abi1";
    old.struct_size = (uint32_t)offsetof(noodle_backend_ops, integrity);
    old.integrity = NULL;
    noodle_error err;
    assert_ok(noodle_backend_register(&old, &err), &err);
    noodle_connect_params p = {.url = "mock://old", .deadline = DEADLINE()};
    noodle_conn *c = NULL;
    assert_ok(noodle_conn_open(&old, &p, &c, &err), &err);
    noodle_integrity_result r;
    assert_code(noodle_conn_integrity(c, NOODLE_INTEGRITY_QUICK, DEADLINE(), &r, &err), &err,
                NOODLE_E_BACKEND_UNSUPPORTED);
    assert_int_equal(r.problems, -1);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    noodle_mock_stats st;
    assert_ok(noodle_mock_node_stats("old", &st, &err), &err);
    assert_int_equal(st.calls[NOODLE_MOCK_OP_INTEGRITY], 0);
    noodle_conn_close(c);
    /* a table large enough to hold the op must implement it */
    noodle_backend_ops missing = *noodle_mock_backend();
    missing.name = "mock_missing";
    missing.integrity = NULL;
    assert_code(noodle_backend_register(&missing, &err), &err, NOODLE_E_BACKEND_ABI_MISMATCH);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup(fn, setup)
    const struct CMUnitTest tests[] = {
        T(rows_come_back_in_key_order_with_their_column_names),
        T(where_order_by_limit_and_offset_select_the_right_rows),
        T(aggregates_are_named_like_postgresql_and_typed),
        T(select_without_from_returns_bare_values_named_question_column),
        T(values_are_converted_to_the_column_type),
        T(omitted_columns_are_null_but_a_null_key_fails_with_23502),
        T(update_and_delete_count_affected_rows_and_do_arithmetic),
        T(errors_carry_the_postgresql_sqlstate),
        T(well_formed_sql_outside_the_subset_fails_with_5015),
        T(placeholder_count_mismatch_fails_with_5006_before_executing),
        T(quoted_identifiers_keep_their_case_and_may_be_reserved_words),
        T(a_table_qualified_by_main_or_public_is_the_plain_table_and_other_schemas_fail_with_5001),
        T(where_comparisons_like_and_is_null_follow_three_valued_logic),
        T(like_matches_percent_underscore_and_backslash_escapes_case_sensitively),
        T(update_and_delete_with_conditions_count_the_rows_they_match),
        T(upsert_do_update_changes_the_conflicting_row_and_counts_one),
        T(upsert_do_nothing_skips_a_conflicting_row_and_counts_zero),
        T(unique_and_composite_primary_keys_refuse_duplicates_with_23505),
        T(a_table_without_a_primary_key_accepts_duplicate_rows),
        T(a_transaction_sees_its_own_writes_and_others_do_not),
        T(savepoints_nest_three_deep_and_roll_back_to_any_level),
        T(transaction_control_outside_its_state_fails_with_5011),
        T(a_key_committed_first_by_another_session_fails_the_commit_with_5002),
        T(serializable_write_write_conflict_fails_the_second_commit_with_5003),
        T(repeatable_read_fails_when_a_row_it_read_changed_but_read_committed_does_not),
        T(latency_delays_calls_by_at_least_the_setting_and_op_settings_beat_any),
        T(latency_past_the_deadline_fails_with_4004_at_the_deadline_and_breaks_the_connection),
        T(a_passed_deadline_fails_with_4004_without_any_fault),
        T(hung_call_is_released_by_its_deadline_with_4004),
        T(hung_call_without_deadline_proceeds_once_the_hang_is_cleared),
        T(hung_call_is_released_with_4003_when_the_node_crashes),
        T(fail_next_with_a_fatal_code_breaks_the_connection),
        T(fail_next_with_a_non_fatal_code_leaves_the_connection_usable),
        T(seeded_failure_probability_is_reproducible),
        T(crashed_node_refuses_connects_until_restart_and_keeps_committed_data),
        T(lost_commit_acknowledgement_reports_outcome_unknown_yet_the_data_is_there),
        T(standby_and_read_only_nodes_refuse_writes_with_5009_and_allow_reads),
        T(stats_count_connections_calls_and_the_peak),
        T(kill_connections_ends_every_session_but_new_ones_connect),
        T(reset_drops_every_node_and_kills_its_connections),
        T(concurrent_autocommit_increments_are_never_lost),
        T(control_calls_refuse_bad_arguments_with_4011),
        T(urls_name_nodes_and_anything_else_fails_with_4001),
        T(register_makes_the_mock_findable_and_is_idempotent),
        T(metrics_report_the_stored_size_and_unknown_replication),
        T(simulated_corruption_is_reported_by_both_checks_until_cleared),
        T(integrity_faults_fail_the_check_with_their_code_and_leave_it_unknown),
        T(simulated_standbys_and_archiver_are_reported_by_metrics),
        T(health_controls_refuse_bad_values_with_4011),
        T(a_backend_built_before_integrity_fails_it_with_4016),
    };
#undef T
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    noodle_mock_reset(); /* free every node, for the leak checker */
    return failed;
}
