/* Backend conformance suite (STD-BACKEND): the same tests, run on every
 * backend. `test_conformance mock|sqlite|postgres` picks the backend; the
 * PostgreSQL run starts its own throwaway server and fails (never skips) when
 * it cannot.
 *
 * Each test gets two fresh connections (a, b) to the same database and an
 * empty table conf_kv (id BIGINT PRIMARY KEY, v TEXT).
 */
#include <fiu-control.h>
#include <fiu.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "noodle/backend.h"
#include "noodle/failpoint.h"
#include "noodle_mock.h"
#include "pg_server.h"
#include "test_util.h"

/* ---- the backend under test ------------------------------------------------ */

static const noodle_backend_ops *ops;
static char url[512];
static const char *bad_url; /* a URL that cannot connect on this backend */
static char tempdir[256];
static noodle_pg_server *pg;

typedef struct fixture {
    noodle_conn *a, *b;
} fixture;

#define DEADLINE() noodle_deadline_after(NULL, NOODLE_SEC(15))

static noodle_conn *open_conn(void) {
    noodle_connect_params p = {.url = url, .deadline = DEADLINE(), .application_name = "noodle-conformance"};
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_conn_open(ops, &p, &c, &err), &err);
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

/* Execute expecting failure with code want; returns the error. */
static noodle_error run_fails(noodle_conn *c, const char *sql, const noodle_value *p, size_t n,
                              int want) {
    noodle_rows *r = NULL;
    noodle_error err;
    int rc = noodle_conn_execute(c, sql, p, n, DEADLINE(), &r, &err);
    assert_code(rc, &err, want);
    assert_null(r);
    return err;
}

static int64_t count_kv(noodle_conn *c) {
    noodle_rows *r = run(c, "SELECT count(*) FROM conf_kv", NULL, 0);
    const noodle_value *v = noodle_rows_get(r, 0, 0);
    assert_int_equal(v->type, NOODLE_TYPE_INT64);
    int64_t n = v->v.i;
    noodle_rows_free(r);
    return n;
}

static void insert_kv(noodle_conn *c, int64_t id, const char *v) {
    noodle_value p[2] = {noodle_int64(id), noodle_text(v)};
    noodle_rows *r = run(c, "INSERT INTO conf_kv (id, v) VALUES (?, ?)", p, 2);
    assert_int_equal(noodle_rows_affected(r), 1);
    noodle_rows_free(r);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->a = open_conn();
    f->b = open_conn();
    run_free(f->a, "DROP TABLE IF EXISTS conf_kv", NULL, 0);
    run_free(f->a, "CREATE TABLE conf_kv (id BIGINT PRIMARY KEY, v TEXT)", NULL, 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    noodle_conn_close(f->a);
    noodle_conn_close(f->b);
    free(f);
    return 0;
}

/* ---- connect and validate ---------------------------------------------------- */

static void connect_to_an_unreachable_database_fails_with_4001(void **state) {
    (void)state;
    noodle_connect_params p = {.url = bad_url, .deadline = DEADLINE()};
    noodle_conn *c = (noodle_conn *)&p; /* must be reset to NULL */
    noodle_error err;
    int rc = noodle_conn_open(ops, &p, &c, &err);
    assert_code(rc, &err, NOODLE_E_CONNECT_FAILED);
    assert_null(c);
    assert_true(strlen(err.message) > 10);
}

static void validate_succeeds_on_a_live_connection(void **state) {
    fixture *f = *state;
    noodle_error err;
    assert_ok(noodle_conn_validate(f->a, DEADLINE(), &err), &err);
    assert_true(noodle_conn_last_validated_at(f->a) >= noodle_conn_created_at(f->a));
    assert_int_equal(noodle_conn_get_state(f->a), NOODLE_CONN_OK);
}

static void endpoint_is_reported_with_secrets_masked(void **state) {
    (void)state;
    char masked[600];
    noodle_mask_secrets("host=h password=hunter2 dbname=x", masked, sizeof masked);
    assert_null(strstr(masked, "hunter2"));
    noodle_conn *c = open_conn();
    assert_string_equal(noodle_conn_endpoint(c), url); /* no secret in these URLs */
    assert_ptr_equal(noodle_conn_backend(c), ops);
    noodle_conn_close(c);
}

/* ---- values and results ---------------------------------------------------------- */

static void every_type_round_trips_exactly(void **state) {
    fixture *f = *state;
    run_free(f->a, "CREATE TABLE conf_types (id BIGINT PRIMARY KEY, i BIGINT, d DOUBLE PRECISION, "
                   "t TEXT, b BYTEA)", NULL, 0);
    unsigned char all_bytes[256];
    for (int i = 0; i < 256; i++) all_bytes[i] = (unsigned char)i;
    const char *utf8 = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8d\x9c 'quoted' \"double\" back\\slash";
    noodle_value rows[][5] = {
        {noodle_int64(1), noodle_int64(INT64_MIN), noodle_double(-0.25), noodle_text(utf8),
         noodle_blob(all_bytes, sizeof all_bytes)},
        {noodle_int64(2), noodle_int64(INT64_MAX), noodle_double(1.7976931348623157e308),
         noodle_text(""), noodle_blob(all_bytes, 0)},
        {noodle_int64(3), noodle_int64(0), noodle_double(4.9406564584124654e-324),
         noodle_text("x"), noodle_blob("\0\0", 2)},
        {noodle_int64(4), noodle_null(), noodle_null(), noodle_null(), noodle_null()},
    };
    const size_t nrows = sizeof rows / sizeof rows[0];
    for (size_t i = 0; i < nrows; i++)
        run_free(f->a, "INSERT INTO conf_types (id, i, d, t, b) VALUES (?, ?, ?, ?, ?)", rows[i], 5);
    noodle_rows *r = run(f->b, "SELECT id, i, d, t, b FROM conf_types ORDER BY id", NULL, 0);
    assert_int_equal(noodle_rows_count(r), nrows);
    assert_int_equal(noodle_rows_columns(r), 5);
    for (size_t i = 0; i < nrows; i++) {
        for (size_t col = 0; col < 5; col++) {
            const noodle_value *want = &rows[i][col], *got = noodle_rows_get(r, i, col);
            if (want->type != got->type)
                fail_msg("row %zu col %zu: sent %s, got %s", i, col, noodle_type_name(want->type),
                         noodle_type_name(got->type));
            switch (want->type) {
            case NOODLE_TYPE_INT64: assert_int_equal(got->v.i, want->v.i); break;
            case NOODLE_TYPE_DOUBLE: assert_true(got->v.d == want->v.d); break;
            case NOODLE_TYPE_TEXT:
            case NOODLE_TYPE_BLOB:
                assert_int_equal(got->v.bytes.len, want->v.bytes.len);
                assert_memory_equal(got->v.bytes.ptr, want->v.bytes.ptr, want->v.bytes.len);
                break;
            default: break;
            }
        }
    }
    noodle_rows_free(r);
    run_free(f->a, "DROP TABLE conf_types", NULL, 0);
}

static void a_one_megabyte_text_round_trips(void **state) {
    fixture *f = *state;
    size_t len = 1 << 20;
    char *big = malloc(len);
    for (size_t i = 0; i < len; i++) big[i] = (char)('a' + i % 26);
    noodle_value p[2] = {noodle_int64(1), noodle_text_n(big, len)};
    run_free(f->a, "INSERT INTO conf_kv (id, v) VALUES (?, ?)", p, 2);
    noodle_rows *r = run(f->b, "SELECT v FROM conf_kv WHERE id = ?", p, 1);
    const noodle_value *v = noodle_rows_get(r, 0, 0);
    assert_int_equal(v->type, NOODLE_TYPE_TEXT);
    assert_int_equal(v->v.bytes.len, len);
    assert_memory_equal(v->v.bytes.ptr, big, len);
    noodle_rows_free(r);
    free(big);
}

static void results_name_their_columns(void **state) {
    fixture *f = *state;
    insert_kv(f->a, 1, "one");
    noodle_rows *r = run(f->a, "SELECT id, v FROM conf_kv", NULL, 0);
    assert_int_equal(noodle_rows_columns(r), 2);
    assert_string_equal(noodle_rows_column_name(r, 0), "id");
    assert_string_equal(noodle_rows_column_name(r, 1), "v");
    assert_int_equal(noodle_rows_column_index(r, "v"), 1);
    assert_int_equal(noodle_rows_column_index(r, "missing"), -1);
    assert_null(noodle_rows_column_name(r, 2));
    assert_int_equal(noodle_rows_get(r, 5, 5)->type, NOODLE_TYPE_NULL); /* out of range */
    noodle_rows_free(r);
}

static void empty_results_have_columns_but_no_rows(void **state) {
    fixture *f = *state;
    noodle_value p[1] = {noodle_int64(-1)};
    noodle_rows *r = run(f->a, "SELECT id, v FROM conf_kv WHERE id = ?", p, 1);
    assert_int_equal(noodle_rows_count(r), 0);
    assert_int_equal(noodle_rows_columns(r), 2);
    noodle_rows_free(r);
}

static void affected_rows_count_inserts_updates_and_deletes(void **state) {
    fixture *f = *state;
    for (int i = 1; i <= 5; i++) insert_kv(f->a, i, "x");
    noodle_value p[2] = {noodle_text("y"), noodle_int64(3)};
    noodle_rows *r = run(f->a, "UPDATE conf_kv SET v = ? WHERE id = ?", p, 2);
    assert_int_equal(noodle_rows_affected(r), 1);
    noodle_rows_free(r);
    r = run(f->a, "UPDATE conf_kv SET v = ?", p, 1);
    assert_int_equal(noodle_rows_affected(r), 5);
    noodle_rows_free(r);
    r = run(f->a, "DELETE FROM conf_kv WHERE id = ?", p + 1, 1);
    assert_int_equal(noodle_rows_affected(r), 1);
    noodle_rows_free(r);
    r = run(f->a, "SELECT id FROM conf_kv", NULL, 0);
    assert_int_equal(noodle_rows_affected(r), 0);
    assert_int_equal(noodle_rows_count(r), 4);
    noodle_rows_free(r);
}

static void many_statements_on_one_connection_all_land(void **state) {
    fixture *f = *state;
    for (int i = 0; i < 500; i++) insert_kv(f->a, i, "bulk");
    assert_int_equal(count_kv(f->b), 500);
}

/* ---- parameters only ------------------------------------------------------------ */

static void injection_payloads_are_stored_verbatim_and_the_schema_is_unchanged(void **state) {
    fixture *f = *state;
    static const char *const corpus[] = {
        "'; DROP TABLE conf_kv; --",
        "x' OR '1'='1",
        "\"; DELETE FROM conf_kv; /*",
        "?) , (999, 'injected'",
        "$1 $$ $tag$ :: ?",
        "\\'; SELECT 1; --",
        "Robert'); DROP TABLE Students;--",
        "/* comment */ -- trailing",
    };
    const size_t n = sizeof corpus / sizeof corpus[0];
    for (size_t i = 0; i < n; i++) insert_kv(f->a, (int64_t)i, corpus[i]);
    for (size_t i = 0; i < n; i++) {
        noodle_value p[1] = {noodle_int64((int64_t)i)};
        noodle_rows *r = run(f->b, "SELECT v FROM conf_kv WHERE id = ?", p, 1);
        const noodle_value *v = noodle_rows_get(r, 0, 0);
        assert_int_equal(v->type, NOODLE_TYPE_TEXT);
        assert_int_equal(v->v.bytes.len, strlen(corpus[i]));
        assert_memory_equal(v->v.bytes.ptr, corpus[i], strlen(corpus[i]));
        noodle_rows_free(r);
    }
    assert_int_equal(count_kv(f->b), (int64_t)n);
}

static void placeholder_count_mismatch_fails_with_5006_and_writes_nothing(void **state) {
    fixture *f = *state;
    noodle_value p[3] = {noodle_int64(1), noodle_text("a"), noodle_text("extra")};
    run_fails(f->a, "INSERT INTO conf_kv (id, v) VALUES (?, ?)", p, 1, NOODLE_E_QUERY_PARAM_COUNT);
    run_fails(f->a, "INSERT INTO conf_kv (id, v) VALUES (?, ?)", p, 3, NOODLE_E_QUERY_PARAM_COUNT);
    assert_int_equal(count_kv(f->a), 0);
    assert_int_equal(noodle_conn_get_state(f->a), NOODLE_CONN_OK);
}

/* ---- coded errors ---------------------------------------------------------------------- */

static void syntax_errors_fail_with_5001_keeping_the_backend_detail(void **state) {
    fixture *f = *state;
    noodle_error err = run_fails(f->a, "SELEKT id FROM conf_kv", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_true(err.detail[0] != '\0');
    err = run_fails(f->a, "SELECT id FROM no_such_table", NULL, 0, NOODLE_E_QUERY_SYNTAX);
    assert_true(err.detail[0] != '\0');
    /* the connection is still good */
    assert_int_equal(count_kv(f->a), 0);
}

static void duplicate_keys_fail_with_5002_keeping_the_backend_detail(void **state) {
    fixture *f = *state;
    insert_kv(f->a, 1, "first");
    noodle_value p[2] = {noodle_int64(1), noodle_text("second")};
    noodle_error err =
        run_fails(f->a, "INSERT INTO conf_kv (id, v) VALUES (?, ?)", p, 2, NOODLE_E_QUERY_CONSTRAINT);
    assert_true(err.detail[0] != '\0');
    char text[1024];
    noodle_error_format(&err, text, sizeof text);
    assert_memory_equal(text, "[NOODLE-5002] ", 14);
    assert_int_equal(count_kv(f->b), 1);
}

/* ---- the statements of the database manager (include/noodle/db.h) ------------------------
 * Quoted identifiers, every WHERE operator, upserts: the shapes noodle_db_* generates. LIKE
 * patterns and ORDER BY columns are chosen where the backends agree (SQLite's LIKE ignores
 * ASCII case and sorts NULLs first; see docs/mock-backend.md). */

/* The int64 first column of every row, as "1,2,3" ("" for no rows). */
static void assert_ids(noodle_conn *c, const char *sql, const noodle_value *p, size_t n,
                       const char *want) {
    noodle_rows *r = run(c, sql, p, n);
    char got[256] = "";
    for (size_t i = 0; i < noodle_rows_count(r); i++) {
        const noodle_value *v = noodle_rows_get(r, i, 0);
        size_t used = strlen(got);
        if (v->type != NOODLE_TYPE_INT64) fail_msg("%s: row %zu is not an int64", sql, i);
        snprintf(got + used, sizeof got - used, "%s%lld", i ? "," : "", (long long)v->v.i);
    }
    noodle_rows_free(r);
    if (strcmp(got, want) != 0) fail_msg("%s: got [%s], expected [%s]", sql, got, want);
}

static int64_t affected_by(noodle_conn *c, const char *sql, const noodle_value *p, size_t n) {
    noodle_rows *r = run(c, sql, p, n);
    int64_t a = noodle_rows_affected(r);
    noodle_rows_free(r);
    return a;
}

static void make_items(noodle_conn *c) {
    run_free(c, "DROP TABLE IF EXISTS \"conf_items\"", NULL, 0);
    run_free(c,
             "CREATE TABLE \"conf_items\" (\"id\" BIGINT PRIMARY KEY, \"name\" TEXT, "
             "\"qty\" BIGINT, \"note\" TEXT)",
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
                {5, "elder", 5, NULL}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        noodle_value p[4] = {noodle_int64(rows[i].id), noodle_text(rows[i].name),
                             rows[i].qty < 0 ? noodle_null() : noodle_int64(rows[i].qty),
                             rows[i].note ? noodle_text(rows[i].note) : noodle_null()};
        noodle_rows *r = run(c,
                             "INSERT INTO \"conf_items\" (\"id\", \"name\", \"qty\", \"note\") "
                             "VALUES (?, ?, ?, ?)",
                             p, 4);
        assert_int_equal(noodle_rows_affected(r), 1);
        noodle_rows_free(r);
    }
}

static void quoted_identifiers_name_tables_and_columns_exactly(void **state) {
    fixture *f = *state;
    run_free(f->a, "DROP TABLE IF EXISTS \"conf_Quoted\"", NULL, 0);
    run_free(f->a,
             "CREATE TABLE \"conf_Quoted\" (\"Id\" BIGINT PRIMARY KEY, \"order\" TEXT, "
             "\"select\" BIGINT)",
             NULL, 0);
    noodle_value p[3] = {noodle_int64(1), noodle_text("first"), noodle_int64(2)};
    run_free(f->a, "INSERT INTO \"conf_Quoted\" (\"Id\", \"order\", \"select\") VALUES (?, ?, ?)",
             p, 3);
    noodle_rows *r = run(f->b,
                         "SELECT \"Id\", \"order\", \"select\" FROM \"conf_Quoted\" "
                         "WHERE \"order\" = ?",
                         p + 1, 1);
    assert_int_equal(noodle_rows_count(r), 1);
    assert_string_equal(noodle_rows_column_name(r, 0), "Id");
    assert_string_equal(noodle_rows_column_name(r, 1), "order");
    assert_string_equal(noodle_rows_column_name(r, 2), "select");
    assert_int_equal(noodle_rows_get(r, 0, 0)->v.i, 1);
    assert_int_equal(noodle_rows_get(r, 0, 2)->v.i, 2);
    noodle_rows_free(r);
    run_free(f->a, "DROP TABLE \"conf_Quoted\"", NULL, 0);
}

static void a_table_qualified_by_its_default_schema_is_the_plain_table(void **state) {
    fixture *f = *state;
    /* SQLite's default schema is main, PostgreSQL's public; the mock takes both */
    const char *schema = strcmp(ops->name, "postgres") == 0 ? "public" : "main";
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO \"%s\".\"conf_kv\" (\"id\", \"v\") VALUES (?, ?)",
             schema);
    noodle_value p[2] = {noodle_int64(1), noodle_text("one")};
    assert_int_equal(affected_by(f->a, sql, p, 2), 1);
    snprintf(sql, sizeof sql, "SELECT \"id\" FROM \"%s\".\"conf_kv\" WHERE \"v\" = ?", schema);
    assert_ids(f->b, sql, p + 1, 1, "1");
    snprintf(sql, sizeof sql, "DELETE FROM \"%s\".\"conf_kv\" WHERE \"id\" = ?", schema);
    assert_int_equal(affected_by(f->a, sql, p, 1), 1);
    /* another schema is an unknown table */
    run_fails(f->a, "SELECT * FROM \"conf_no_such_schema\".\"conf_kv\"", NULL, 0,
              NOODLE_E_QUERY_SYNTAX);
    assert_int_equal(count_kv(f->b), 0);
}

static void where_operators_order_and_limit_select_the_same_rows(void **state) {
    fixture *f = *state;
    make_items(f->a);
    noodle_conn *c = f->b;
    noodle_value five = noodle_int64(5), seven = noodle_int64(7), null = noodle_null();
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" = ? ORDER BY \"id\"", &five, 1,
               "1,5");
    /* a comparison with a NULL cell is not true: id 3 (qty NULL) never matches */
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" <> ? ORDER BY \"id\"", &five, 1,
               "2,4");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" < ? ORDER BY \"id\"", &seven, 1,
               "1,5");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" <= ? ORDER BY \"id\"", &seven, 1,
               "1,4,5");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" > ? ORDER BY \"id\"", &seven, 1,
               "2");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" >= ? ORDER BY \"id\"", &seven, 1,
               "2,4");
    /* a comparison with NULL is never true: = NULL matches nothing */
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" = ?", &null, 1, "");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" <> ?", &null, 1, "");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"name\" LIKE ?", &null, 1, "");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"note\" IS NULL ORDER BY \"id\"", NULL,
               0, "2,5");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"note\" IS NOT NULL ORDER BY \"id\"",
               NULL, 0, "1,3,4");
    /* numbers compare numerically */
    noodle_value half = noodle_double(5.5);
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" < ? ORDER BY \"id\"", &half, 1,
               "1,5");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" = ?", &half, 1, "");
    /* LIKE: % and _ */
    noodle_value pat = noodle_text("%an%");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"name\" LIKE ?", &pat, 1, "2");
    pat = noodle_text("_a%");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"name\" LIKE ? ORDER BY \"id\"", &pat,
               1, "2,4");
    pat = noodle_text("d__e");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"name\" LIKE ?", &pat, 1, "4");
    pat = noodle_text("%e%");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"name\" NOT LIKE ? ORDER BY \"id\"",
               &pat, 1, "2");
    /* every term must hold */
    noodle_value p[3] = {noodle_int64(5), noodle_text("%e%"), noodle_int64(10)};
    assert_ids(c,
               "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" >= ? AND \"note\" IS NOT NULL "
               "AND \"name\" LIKE ? AND \"qty\" < ? ORDER BY \"id\"",
               p, 3, "1,4");
    /* order, descending, a bound limit */
    noodle_value lim = noodle_int64(2);
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" ORDER BY \"name\" DESC LIMIT ?", &lim, 1,
               "5,4");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" > 5 ORDER BY \"qty\"", NULL, 0,
               "4,2");
    assert_ids(c, "SELECT \"id\" FROM \"conf_items\" WHERE \"qty\" > 5 ORDER BY \"qty\" DESC", NULL,
               0, "2,4");
    /* SELECT * by key */
    noodle_value key = noodle_int64(4);
    noodle_rows *r = run(c, "SELECT * FROM \"conf_items\" WHERE \"id\" = ?", &key, 1);
    assert_int_equal(noodle_rows_count(r), 1);
    assert_int_equal(noodle_rows_columns(r), 4);
    assert_string_equal(noodle_rows_column_name(r, 2), "qty");
    assert_int_equal(noodle_rows_get(r, 0, 2)->v.i, 7);
    noodle_rows_free(r);
    run_free(f->a, "DROP TABLE \"conf_items\"", NULL, 0);
}

static void update_and_delete_count_the_rows_their_conditions_match(void **state) {
    fixture *f = *state;
    make_items(f->a);
    noodle_value p[4] = {noodle_text("checked"), noodle_int64(1), noodle_int64(5),
                         noodle_text("%e%")};
    assert_int_equal(affected_by(f->a,
                                 "UPDATE \"conf_items\" SET \"note\" = ?, \"qty\" = \"qty\" + ? "
                                 "WHERE \"qty\" >= ? AND \"name\" LIKE ?",
                                 p, 4),
                     3); /* apple, date, elder */
    assert_ids(f->b,
               "SELECT \"qty\" FROM \"conf_items\" WHERE \"note\" = 'checked' ORDER BY \"id\"",
               NULL, 0, "6,8,6");
    /* a row matched but left as it was still counts */
    assert_int_equal(affected_by(f->a,
                                 "UPDATE \"conf_items\" SET \"note\" = 'checked' WHERE "
                                 "\"id\" = 1",
                                 NULL, 0),
                     1);
    assert_int_equal(
        affected_by(f->a, "UPDATE \"conf_items\" SET \"qty\" = 0 WHERE \"qty\" IS NULL", NULL, 0),
        1);
    assert_int_equal(affected_by(f->a, "UPDATE \"conf_items\" SET \"qty\" = 0 WHERE \"qty\" = ?",
                                 (noodle_value[]){noodle_null()}, 1),
                     0);
    noodle_value all[2] = {noodle_text("x"), noodle_int64(2)};
    assert_int_equal(
        affected_by(f->a, "UPDATE \"conf_items\" SET \"note\" = ?, \"qty\" = ?", all, 2), 5);
    assert_int_equal(affected_by(f->a,
                                 "DELETE FROM \"conf_items\" WHERE \"name\" LIKE 'b%' AND "
                                 "\"qty\" < 100",
                                 NULL, 0),
                     1);
    assert_int_equal(affected_by(f->a, "DELETE FROM \"conf_items\" WHERE \"qty\" > 1000", NULL, 0),
                     0);
    assert_int_equal(affected_by(f->a, "DELETE FROM \"conf_items\"", NULL, 0), 4);
    assert_ids(f->b, "SELECT \"id\" FROM \"conf_items\"", NULL, 0, "");
    run_free(f->a, "DROP TABLE \"conf_items\"", NULL, 0);
}

static void upsert_updates_or_skips_the_conflicting_row_and_counts_what_it_changed(void **state) {
    fixture *f = *state;
    run_free(f->a, "DROP TABLE IF EXISTS \"conf_acct\"", NULL, 0);
    run_free(f->a,
             "CREATE TABLE \"conf_acct\" (\"k\" BIGINT PRIMARY KEY, \"code\" TEXT UNIQUE, "
             "\"a\" TEXT, \"n\" BIGINT)",
             NULL, 0);
    static const char update_sql[] =
        "INSERT INTO \"conf_acct\" (\"k\", \"a\", \"n\") VALUES (?, ?, ?) ON CONFLICT (\"k\") DO "
        "UPDATE SET \"a\" = excluded.\"a\", \"n\" = \"conf_acct\".\"n\" + excluded.\"n\"";
    noodle_value p[3] = {noodle_int64(1), noodle_text("one"), noodle_int64(10)};
    assert_int_equal(affected_by(f->a, update_sql, p, 3), 1); /* inserted */
    p[1] = noodle_text("uno");
    p[2] = noodle_int64(5);
    assert_int_equal(affected_by(f->a, update_sql, p, 3), 1); /* updated */
    noodle_rows *r = run(f->b, "SELECT \"a\", \"n\" FROM \"conf_acct\" WHERE \"k\" = 1", NULL, 0);
    assert_int_equal(noodle_rows_count(r), 1);
    assert_int_equal(noodle_rows_get(r, 0, 0)->v.bytes.len, 3);
    assert_memory_equal(noodle_rows_get(r, 0, 0)->v.bytes.ptr, "uno", 3);
    assert_int_equal(noodle_rows_get(r, 0, 1)->v.i, 15);
    noodle_rows_free(r);
    /* one statement, one row updated and one inserted */
    assert_int_equal(affected_by(f->a,
                                 "INSERT INTO \"conf_acct\" (\"k\", \"a\", \"n\") VALUES "
                                 "(1, 'x', 1), (2, 'two', 1) ON CONFLICT (\"k\") DO UPDATE SET "
                                 "\"a\" = excluded.\"a\"",
                                 NULL, 0),
                     2);
    assert_ids(f->b, "SELECT \"n\" FROM \"conf_acct\" WHERE \"a\" = 'x'", NULL, 0, "15");
    /* DO NOTHING: a conflicting row is skipped and not counted */
    static const char nothing_sql[] = "INSERT INTO \"conf_acct\" (\"k\", \"code\") VALUES (?, ?) "
                                      "ON CONFLICT (\"k\") DO NOTHING";
    noodle_value q[2] = {noodle_int64(1), noodle_text("c1")};
    assert_int_equal(affected_by(f->a, nothing_sql, q, 2), 0);
    q[0] = noodle_int64(3);
    assert_int_equal(affected_by(f->a, nothing_sql, q, 2), 1);
    /* a conflict on a constraint other than the target is still a duplicate */
    q[0] = noodle_int64(4);
    run_fails(f->a, nothing_sql, q, 2, NOODLE_E_QUERY_CONSTRAINT);
    assert_int_equal(affected_by(f->a,
                                 "INSERT INTO \"conf_acct\" (\"k\", \"code\") VALUES (?, ?) "
                                 "ON CONFLICT (\"code\") DO NOTHING",
                                 q, 2),
                     0);
    assert_int_equal(affected_by(f->a,
                                 "INSERT INTO \"conf_acct\" (\"k\", \"code\") VALUES (?, ?) "
                                 "ON CONFLICT DO NOTHING",
                                 q, 2),
                     0);
    assert_ids(f->b, "SELECT \"k\" FROM \"conf_acct\" ORDER BY \"k\"", NULL, 0, "1,2,3");
    run_free(f->a, "DROP TABLE \"conf_acct\"", NULL, 0);
}

static void an_upsert_on_two_key_columns_names_them_in_any_order(void **state) {
    fixture *f = *state;
    run_free(f->a, "DROP TABLE IF EXISTS \"conf_pairs\"", NULL, 0);
    run_free(f->a,
             "CREATE TABLE \"conf_pairs\" (\"a\" BIGINT NOT NULL, \"b\" BIGINT NOT NULL, "
             "\"v\" TEXT, PRIMARY KEY (\"a\", \"b\"))",
             NULL, 0);
    run_free(f->a,
             "INSERT INTO \"conf_pairs\" (\"a\", \"b\", \"v\") VALUES (1, 1, 'x'), (1, 2, 'y')",
             NULL, 0);
    run_fails(f->a, "INSERT INTO \"conf_pairs\" (\"a\", \"b\") VALUES (1, 1)", NULL, 0,
              NOODLE_E_QUERY_CONSTRAINT);
    assert_int_equal(affected_by(f->a,
                                 "INSERT INTO \"conf_pairs\" (\"a\", \"b\", \"v\") VALUES "
                                 "(1, 2, 'z') ON CONFLICT (\"b\", \"a\") DO UPDATE SET "
                                 "\"v\" = excluded.\"v\"",
                                 NULL, 0),
                     1);
    assert_ids(f->b, "SELECT \"b\" FROM \"conf_pairs\" WHERE \"v\" = 'z'", NULL, 0, "2");
    assert_int_equal(affected_by(f->a,
                                 "INSERT INTO \"conf_pairs\" (\"a\", \"b\") VALUES (1, 1) "
                                 "ON CONFLICT (\"a\", \"b\") DO NOTHING",
                                 NULL, 0),
                     0);
    /* UNIQUE over two columns: NULLs never collide */
    run_free(f->a, "DROP TABLE IF EXISTS \"conf_u2\"", NULL, 0);
    run_free(f->a,
             "CREATE TABLE \"conf_u2\" (\"id\" BIGINT PRIMARY KEY, \"x\" BIGINT, \"y\" BIGINT, "
             "UNIQUE (\"x\", \"y\"))",
             NULL, 0);
    run_free(f->a,
             "INSERT INTO \"conf_u2\" VALUES (1, 1, 1), (2, 1, 2), (3, 1, NULL), (4, 1, NULL)",
             NULL, 0);
    run_fails(f->a, "INSERT INTO \"conf_u2\" VALUES (5, 1, 2)", NULL, 0, NOODLE_E_QUERY_CONSTRAINT);
    run_fails(f->a, "UPDATE \"conf_u2\" SET \"y\" = 1 WHERE \"id\" = 2", NULL, 0,
              NOODLE_E_QUERY_CONSTRAINT);
    assert_int_equal(affected_by(f->a,
                                 "INSERT INTO \"conf_u2\" VALUES (5, 1, 2) ON CONFLICT "
                                 "(\"y\", \"x\") DO UPDATE SET \"id\" = 20",
                                 NULL, 0),
                     1);
    assert_ids(f->b, "SELECT \"id\" FROM \"conf_u2\" ORDER BY \"id\"", NULL, 0, "1,3,4,20");
    run_free(f->a, "DROP TABLE \"conf_pairs\"", NULL, 0);
    run_free(f->a, "DROP TABLE \"conf_u2\"", NULL, 0);
}

static void a_table_without_a_primary_key_accepts_duplicate_rows(void **state) {
    fixture *f = *state;
    run_free(f->a, "DROP TABLE IF EXISTS \"conf_log\"", NULL, 0);
    run_free(f->a, "CREATE TABLE \"conf_log\" (\"n\" BIGINT, \"msg\" TEXT)", NULL, 0);
    assert_int_equal(affected_by(f->a,
                                 "INSERT INTO \"conf_log\" VALUES (1, 'x'), (1, 'x'), "
                                 "(NULL, 'y')",
                                 NULL, 0),
                     3);
    assert_int_equal(
        affected_by(f->a, "INSERT INTO \"conf_log\" (\"n\", \"msg\") VALUES (1, 'x')", NULL, 0), 1);
    noodle_rows *r = run(f->b, "SELECT * FROM \"conf_log\"", NULL, 0);
    assert_int_equal(noodle_rows_columns(r), 2);
    assert_int_equal(noodle_rows_count(r), 4);
    noodle_rows_free(r);
    assert_int_equal(
        affected_by(f->a, "UPDATE \"conf_log\" SET \"msg\" = 'z' WHERE \"n\" = 1", NULL, 0), 3);
    assert_int_equal(affected_by(f->a, "DELETE FROM \"conf_log\" WHERE \"msg\" = 'z'", NULL, 0), 3);
    assert_ids(f->b, "SELECT count(*) FROM \"conf_log\" WHERE \"n\" IS NULL", NULL, 0, "1");
    run_free(f->a, "DROP TABLE \"conf_log\"", NULL, 0);
}

/* ---- transactions ---------------------------------------------------------------------- */

static void committed_writes_are_visible_to_another_connection(void **state) {
    fixture *f = *state;
    noodle_error err;
    assert_ok(noodle_conn_begin(f->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    insert_kv(f->a, 1, "a");
    insert_kv(f->a, 2, "b");
    assert_ok(noodle_conn_commit(f->a, DEADLINE(), &err), &err);
    assert_int_equal(count_kv(f->b), 2);
}

static void uncommitted_writes_are_invisible_to_another_connection(void **state) {
    fixture *f = *state;
    noodle_error err;
    assert_ok(noodle_conn_begin(f->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    insert_kv(f->a, 1, "pending");
    assert_int_equal(count_kv(f->a), 1); /* the writer sees its own write */
    assert_int_equal(count_kv(f->b), 0);
    assert_ok(noodle_conn_rollback(f->a, DEADLINE(), &err), &err);
}

static void the_connection_knows_when_it_is_inside_a_transaction(void **state) {
    fixture *f = *state;
    noodle_error err;
    assert_false(noodle_conn_in_transaction(f->a));
    assert_ok(noodle_conn_begin(f->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    assert_true(noodle_conn_in_transaction(f->a));
    insert_kv(f->a, 1, "x");
    assert_true(noodle_conn_in_transaction(f->a));
    assert_ok(noodle_conn_commit(f->a, DEADLINE(), &err), &err);
    assert_false(noodle_conn_in_transaction(f->a));
    assert_ok(noodle_conn_begin(f->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    assert_ok(noodle_conn_rollback(f->a, DEADLINE(), &err), &err);
    assert_false(noodle_conn_in_transaction(f->a));
}

static void rollback_discards_every_write(void **state) {
    fixture *f = *state;
    noodle_error err;
    insert_kv(f->a, 1, "kept");
    assert_ok(noodle_conn_begin(f->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    insert_kv(f->a, 2, "gone");
    noodle_value p[1] = {noodle_int64(1)};
    run_free(f->a, "DELETE FROM conf_kv WHERE id = ?", p, 1);
    assert_ok(noodle_conn_rollback(f->a, DEADLINE(), &err), &err);
    noodle_rows *r = run(f->b, "SELECT id, v FROM conf_kv", NULL, 0);
    assert_int_equal(noodle_rows_count(r), 1);
    assert_int_equal(noodle_rows_get(r, 0, 0)->v.i, 1);
    noodle_rows_free(r);
}

static void rolling_back_an_inner_savepoint_keeps_the_outer_levels(void **state) {
    fixture *f = *state;
    noodle_error err;
    static const char *const names[] = {"sp_1", "sp_2", "sp_3"};
    /* for each depth d: write at levels 0..3, roll back to level d, commit:
     * exactly the writes made before savepoint d survive */
    for (int d = 0; d < 3; d++) {
        run_free(f->a, "DELETE FROM conf_kv", NULL, 0);
        assert_ok(noodle_conn_begin(f->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
        insert_kv(f->a, 0, "level 0");
        for (int lvl = 0; lvl < 3; lvl++) {
            assert_ok(noodle_conn_savepoint(f->a, names[lvl], DEADLINE(), &err), &err);
            insert_kv(f->a, lvl + 1, "inner");
        }
        assert_ok(noodle_conn_rollback_to(f->a, names[d], DEADLINE(), &err), &err);
        assert_int_equal(count_kv(f->a), d + 1);
        assert_ok(noodle_conn_commit(f->a, DEADLINE(), &err), &err);
        assert_int_equal(count_kv(f->b), d + 1);
    }
}

static void releasing_a_savepoint_keeps_its_work(void **state) {
    fixture *f = *state;
    noodle_error err;
    assert_ok(noodle_conn_begin(f->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    assert_ok(noodle_conn_savepoint(f->a, "outer", DEADLINE(), &err), &err);
    insert_kv(f->a, 1, "x");
    assert_ok(noodle_conn_release(f->a, "outer", DEADLINE(), &err), &err);
    assert_ok(noodle_conn_commit(f->a, DEADLINE(), &err), &err);
    assert_int_equal(count_kv(f->b), 1);
}

static void invalid_savepoint_names_are_refused_with_5014(void **state) {
    fixture *f = *state;
    noodle_error err;
    assert_ok(noodle_conn_begin(f->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    static const char *const bad[] = {"", "1abc", "a b", "x\"; DROP TABLE conf_kv; --", "caf\xc3\xa9",
                                      "a123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_code(noodle_conn_savepoint(f->a, bad[i], DEADLINE(), &err), &err,
                    NOODLE_E_QUERY_INVALID_SAVEPOINT);
    }
    assert_code(noodle_conn_savepoint(f->a, NULL, DEADLINE(), &err), &err,
                NOODLE_E_QUERY_INVALID_SAVEPOINT);
    assert_ok(noodle_conn_rollback(f->a, DEADLINE(), &err), &err);
    assert_int_equal(count_kv(f->b), 0);
}

static void transaction_state_misuse_fails_with_5011(void **state) {
    fixture *f = *state;
    noodle_error err;
    assert_code(noodle_conn_commit(f->a, DEADLINE(), &err), &err, NOODLE_E_QUERY_TXN_STATE);
    assert_code(noodle_conn_savepoint(f->a, "sp", DEADLINE(), &err), &err, NOODLE_E_QUERY_TXN_STATE);
    assert_ok(noodle_conn_begin(f->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    assert_code(noodle_conn_begin(f->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err,
                NOODLE_E_QUERY_TXN_STATE);
    insert_kv(f->a, 1, "still in the first transaction");
    assert_ok(noodle_conn_commit(f->a, DEADLINE(), &err), &err);
    assert_int_equal(count_kv(f->b), 1);
}

static void every_isolation_level_begins_and_commits(void **state) {
    fixture *f = *state;
    noodle_error err;
    for (int iso = NOODLE_ISOLATION_DEFAULT; iso <= NOODLE_ISOLATION_SERIALIZABLE; iso++) {
        assert_ok(noodle_conn_begin(f->a, (noodle_isolation)iso, DEADLINE(), &err), &err);
        insert_kv(f->a, iso, noodle_isolation_name((noodle_isolation)iso));
        assert_ok(noodle_conn_commit(f->a, DEADLINE(), &err), &err);
    }
    assert_int_equal(count_kv(f->b), NOODLE_ISOLATION_SERIALIZABLE + 1);
}

/* ---- role, metrics, deadlines ------------------------------------------------------------- */

static void a_writable_database_reports_the_primary_role(void **state) {
    fixture *f = *state;
    noodle_role role;
    noodle_error err;
    assert_ok(noodle_conn_role(f->a, DEADLINE(), &role, &err), &err);
    assert_int_equal(role, NOODLE_ROLE_PRIMARY);
}

static void metrics_report_the_server_version_and_a_measured_size(void **state) {
    fixture *f = *state;
    noodle_server_metrics m;
    noodle_error err;
    for (int i = 0; i < 50; i++) insert_kv(f->a, i, "some data to measure");
    assert_ok(noodle_conn_metrics(f->a, DEADLINE(), &m, &err), &err);
    assert_true(m.server_version[0] != '\0');
    assert_true(m.database_size_bytes > 0);
    assert_int_equal(m.role, NOODLE_ROLE_PRIMARY);
}

/* Standbys past standby_count, and every one when it is unknown, are empty
 * with unknown lags; archiver fields are counts or -1, never garbage. */
static void metrics_leave_unreported_standbys_and_archiver_fields_unknown(void **state) {
    fixture *f = *state;
    noodle_server_metrics m;
    noodle_error err;
    assert_ok(noodle_conn_metrics(f->a, DEADLINE(), &m, &err), &err);
    assert_true(m.standby_count >= -1);
    for (int64_t i = m.standby_count < 0 ? 0 : m.standby_count; i < NOODLE_STANDBYS_REPORTED; i++) {
        assert_string_equal(m.standbys[i].name, "");
        assert_int_equal(m.standbys[i].lag_bytes, -1);
        assert_int_equal(m.standbys[i].replay_lag_ms, -1);
    }
    assert_true(m.archive_archived_count >= -1 && m.archive_failed_count >= -1);
    assert_true(m.archive_last_archived_age_ms >= -1 && m.archive_last_failed_age_ms >= -1);
}

static void integrity_of_a_healthy_database_finds_no_problem_at_either_level(void **state) {
    fixture *f = *state;
    for (int i = 0; i < 50; i++) insert_kv(f->a, i, "rows for the check to walk");
    const noodle_integrity_level levels[] = {NOODLE_INTEGRITY_QUICK, NOODLE_INTEGRITY_FULL};
    for (size_t i = 0; i < 2; i++) {
        noodle_integrity_result r;
        noodle_error err;
        assert_ok(noodle_conn_integrity(f->a, levels[i], DEADLINE(), &r, &err), &err);
        assert_int_equal(r.problems, 0);
        assert_true(r.method[0] != '\0');
        assert_string_equal(r.first_problem, "");
        assert_true(r.checksum_failures == -1 || r.checksum_failures == 0);
    }
    assert_int_equal(noodle_conn_get_state(f->a), NOODLE_CONN_OK);
    assert_int_equal(count_kv(f->b), 50);
}

static void an_unknown_integrity_level_is_refused_with_4011(void **state) {
    fixture *f = *state;
    noodle_integrity_result r;
    noodle_error err;
    assert_code(noodle_conn_integrity(f->a, (noodle_integrity_level)7, DEADLINE(), &r, &err), &err,
                NOODLE_E_BACKEND_INVALID_ARGUMENT);
    assert_int_equal(r.problems, -1);
    assert_int_equal(noodle_conn_get_state(f->a), NOODLE_CONN_OK);
}

static void a_passed_deadline_fails_with_4004_and_breaks_the_connection(void **state) {
    fixture *f = *state;
    noodle_rows *r = NULL;
    noodle_error err;
    int64_t passed = noodle_clock_now(NULL) - NOODLE_MS(1);
    int rc = noodle_conn_execute(f->a, "SELECT count(*) FROM conf_kv", NULL, 0, passed, &r, &err);
    assert_code(rc, &err, NOODLE_E_BACKEND_TIMEOUT);
    assert_null(r);
    assert_int_equal(noodle_conn_get_state(f->a), NOODLE_CONN_BROKEN);
    /* a broken connection stays broken, naming what broke it */
    assert_code(noodle_conn_validate(f->a, DEADLINE(), &err), &err, NOODLE_E_CONNECTION_BROKEN);
    assert_non_null(strstr(err.message, "NOODLE-4004"));
    assert_int_equal(count_kv(f->b), 0);
}

/* ---- fail points ----------------------------------------------------------------------------- */

static char armed[96];

/* Enable backend/<name>/<op>, optionally with a code to fail with, until
 * disarm(). (Not FIU_ONETIME: libfiu leaks the name of a one-time point.) */
static void arm(const char *op, int code) {
    snprintf(armed, sizeof armed, "backend/%s/%s", ops->name, op);
    assert_non_null(noodle_fail_point_find(armed));
    assert_int_equal(fiu_enable(armed, 1, code ? (void *)(intptr_t)code : NULL, 0), 0);
}

static void disarm(void) { assert_int_equal(fiu_disable(armed), 0); }

static void every_operation_fails_through_its_fail_point_with_a_coded_error(void **state) {
    fixture *f = *state;
    assert_true(noodle_fail_points_compiled_in());
    noodle_error err;
    noodle_rows *r = NULL;
    noodle_role role;
    noodle_server_metrics m;
    noodle_integrity_result ir;
    int rc;
    /* non-fatal injected codes leave the connection usable */
    arm("execute", NOODLE_E_QUERY_SERIALIZATION);
    rc = noodle_conn_execute(f->a, "SELECT 1", NULL, 0, DEADLINE(), &r, &err);
    disarm();
    assert_code(rc, &err, NOODLE_E_QUERY_SERIALIZATION);
    assert_non_null(strstr(err.detail, "fail point"));
    assert_int_equal(noodle_conn_get_state(f->a), NOODLE_CONN_OK);
    /* default codes: connection lost, which breaks the connection */
    struct {
        const char *op;
    } each[] = {{"validate"}, {"execute"}, {"begin"}, {"commit"}, {"rollback"}, {"savepoint"},
                {"release"}, {"rollback_to"}, {"role"}, {"metrics"}, {"integrity"}};
    for (size_t i = 0; i < sizeof each / sizeof each[0]; i++) {
        noodle_conn *c = open_conn();
        arm(each[i].op, 0);
        const char *op = each[i].op;
        if (strcmp(op, "validate") == 0) rc = noodle_conn_validate(c, DEADLINE(), &err);
        else if (strcmp(op, "execute") == 0) rc = noodle_conn_execute(c, "SELECT 1", NULL, 0, DEADLINE(), &r, &err);
        else if (strcmp(op, "begin") == 0) rc = noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err);
        else if (strcmp(op, "commit") == 0) rc = noodle_conn_commit(c, DEADLINE(), &err);
        else if (strcmp(op, "rollback") == 0) rc = noodle_conn_rollback(c, DEADLINE(), &err);
        else if (strcmp(op, "savepoint") == 0) rc = noodle_conn_savepoint(c, "sp", DEADLINE(), &err);
        else if (strcmp(op, "release") == 0) rc = noodle_conn_release(c, "sp", DEADLINE(), &err);
        else if (strcmp(op, "rollback_to") == 0) rc = noodle_conn_rollback_to(c, "sp", DEADLINE(), &err);
        else if (strcmp(op, "role") == 0) rc = noodle_conn_role(c, DEADLINE(), &role, &err);
        else if (strcmp(op, "metrics") == 0) rc = noodle_conn_metrics(c, DEADLINE(), &m, &err);
        else rc = noodle_conn_integrity(c, NOODLE_INTEGRITY_QUICK, DEADLINE(), &ir, &err);
        disarm();
        if (rc != NOODLE_E_CONNECTION_LOST) fail_msg("fail point on %s: got %d", op, rc);
        assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
        assert_code(noodle_conn_validate(c, DEADLINE(), &err), &err, NOODLE_E_CONNECTION_BROKEN);
        noodle_conn_close(c);
    }
    /* an integrity check stopped by its fail point found nothing: unknown */
    arm("integrity", NOODLE_E_QUERY_FAILED);
    rc = noodle_conn_integrity(f->a, NOODLE_INTEGRITY_FULL, DEADLINE(), &ir, &err);
    disarm();
    assert_code(rc, &err, NOODLE_E_QUERY_FAILED);
    assert_non_null(strstr(err.detail, "backend/"));
    assert_int_equal(ir.problems, -1);
    assert_int_equal(ir.checksum_failures, -1);
    assert_string_equal(ir.method, "");
    assert_int_equal(noodle_conn_get_state(f->a), NOODLE_CONN_OK);
    /* connect */
    arm("connect", 0);
    noodle_connect_params p = {.url = url, .deadline = DEADLINE()};
    noodle_conn *c = NULL;
    rc = noodle_conn_open(ops, &p, &c, &err);
    disarm();
    assert_code(rc, &err, NOODLE_E_CONNECT_FAILED);
    assert_null(c);
    /* a fail point armed with a code outside the catalogue still yields a coded error */
    arm("connect", 1234);
    rc = noodle_conn_open(ops, &p, &c, &err);
    disarm();
    assert_code(rc, &err, NOODLE_E_BACKEND_INTERNAL);
    assert_null(c);
    /* and once the fault is gone, everything works again */
    c = open_conn();
    assert_ok(noodle_conn_validate(c, DEADLINE(), &err), &err);
    noodle_conn_close(c);
}

/* ---- the runner ---------------------------------------------------------------------------------- */

static int start_backend(const char *name) {
    noodle_error err;
    if (strcmp(name, "mock") == 0) {
        if (noodle_mock_register(&err) != 0) return -1;
        ops = noodle_mock_backend();
        snprintf(url, sizeof url, "mock://conformance");
        bad_url = "mock:/not-a-mock-url";
    } else if (strcmp(name, "sqlite") == 0) {
        ops = noodle_backend_sqlite();
        if (noodle_test_tempdir(tempdir, sizeof tempdir) != 0) return -1;
        snprintf(url, sizeof url, "%s/conformance.db", tempdir);
        bad_url = "/nonexistent-noodle-dir/sub/x.db";
    } else if (strcmp(name, "postgres") == 0) {
        char msg[2048];
        ops = noodle_backend_postgres();
        if (noodle_pg_server_start(NULL, &pg, msg, sizeof msg) != 0) {
            fprintf(stderr, "cannot start PostgreSQL: %s\n", msg);
            return -1;
        }
        snprintf(url, sizeof url, "%s", noodle_pg_server_conninfo(pg));
        bad_url = "host=127.0.0.1 port=1 dbname=postgres connect_timeout=2";
    } else {
        fprintf(stderr, "usage: test_conformance mock|sqlite|postgres\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2 || start_backend(argv[1]) != 0) return 2;
    fiu_init(0);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connect_to_an_unreachable_database_fails_with_4001),
        T(validate_succeeds_on_a_live_connection),
        cmocka_unit_test(endpoint_is_reported_with_secrets_masked),
        T(every_type_round_trips_exactly),
        T(a_one_megabyte_text_round_trips),
        T(results_name_their_columns),
        T(empty_results_have_columns_but_no_rows),
        T(affected_rows_count_inserts_updates_and_deletes),
        T(many_statements_on_one_connection_all_land),
        T(injection_payloads_are_stored_verbatim_and_the_schema_is_unchanged),
        T(placeholder_count_mismatch_fails_with_5006_and_writes_nothing),
        T(syntax_errors_fail_with_5001_keeping_the_backend_detail),
        T(duplicate_keys_fail_with_5002_keeping_the_backend_detail),
        T(quoted_identifiers_name_tables_and_columns_exactly),
        T(a_table_qualified_by_its_default_schema_is_the_plain_table),
        T(where_operators_order_and_limit_select_the_same_rows),
        T(update_and_delete_count_the_rows_their_conditions_match),
        T(upsert_updates_or_skips_the_conflicting_row_and_counts_what_it_changed),
        T(an_upsert_on_two_key_columns_names_them_in_any_order),
        T(a_table_without_a_primary_key_accepts_duplicate_rows),
        T(committed_writes_are_visible_to_another_connection),
        T(uncommitted_writes_are_invisible_to_another_connection),
        T(the_connection_knows_when_it_is_inside_a_transaction),
        T(rollback_discards_every_write),
        T(rolling_back_an_inner_savepoint_keeps_the_outer_levels),
        T(releasing_a_savepoint_keeps_its_work),
        T(invalid_savepoint_names_are_refused_with_5014),
        T(transaction_state_misuse_fails_with_5011),
        T(every_isolation_level_begins_and_commits),
        T(a_writable_database_reports_the_primary_role),
        T(metrics_report_the_server_version_and_a_measured_size),
        T(metrics_leave_unreported_standbys_and_archiver_fields_unknown),
        T(integrity_of_a_healthy_database_finds_no_problem_at_either_level),
        T(an_unknown_integrity_level_is_refused_with_4011),
        T(a_passed_deadline_fails_with_4004_and_breaks_the_connection),
        T(every_operation_fails_through_its_fail_point_with_a_coded_error),
    };
#undef T
    char group[64];
    snprintf(group, sizeof group, "conformance_%s", argv[1]);
    int failed = _cmocka_run_group_tests(group, tests, sizeof tests / sizeof tests[0], NULL, NULL);
    noodle_pg_server_stop(pg);
    if (tempdir[0]) noodle_test_rm_rf(tempdir);
    return failed;
}
