/* The database manager (STD-PARAM), on every backend: `test_db` runs on the
 * mock, `test_db sqlite` on a fresh SQLite file per test, `test_db postgres`
 * on a throwaway PostgreSQL server of its own (it fails, never skips, when
 * the server cannot start).
 *
 * Each test gets a pool, a db over it, and the tables
 *   items  (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, data BYTEA, note TEXT)
 *   victim (id BIGINT PRIMARY KEY, v TEXT)   -- one row; injection payloads aim at it
 * The evidence that nothing ran is the pool's acquire counter (a refused call
 * acquires no connection) and the schema: every table and its columns, read
 * from sqlite_master, information_schema or the mock's catalogue, compared
 * before and after.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "noodle/db.h"
#include "noodle/pool.h"
#include "noodle/txn.h"
#include "mock_nodes.h"
#include "noodle_mock.h"
#include "pg_server.h"
#include "test_util.h"

/* ---- the backend under test ------------------------------------------------------------------ */

typedef enum which { MOCK, SQLITE, POSTGRES } which;
static which backend;
static const char *backend_name;
static const noodle_backend_ops *ops;
static char tempdir[256];
static noodle_pg_server *pg;
static int test_number;

/* this test's database */
static char url[512];
static noodle_pool *pool;
static noodle_db *db;

#define MOCK_NODE "db"

static noodle_pool *open_pool(int64_t max_connections, int64_t timeout_ms) {
    noodle_config_options o = NOODLE_CONFIG_OPTIONS_INIT;
    o.backend = backend_name;
    o.url = url;
    o.max_connections = max_connections;
    o.min_idle = 0;
    o.timeout_ms = timeout_ms;
    noodle_config cfg;
    noodle_test_config_load(&cfg, &o);
    noodle_pool_options po = NOODLE_POOL_OPTIONS_INIT;
    po.config = &cfg;
    po.backend = ops;
    po.application_name = "noodle-test-db";
    noodle_pool *p = NULL;
    noodle_error err;
    int rc = noodle_pool_open(&po, &p, &err);
    noodle_config_free(&cfg);
    assert_ok(rc, &err);
    return p;
}

static noodle_db *open_db(noodle_pool *p, int64_t call_timeout_ms) {
    noodle_db_options o = NOODLE_DB_OPTIONS_INIT;
    o.pool = p;
    o.call_timeout_ms = call_timeout_ms;
    noodle_db *d = NULL;
    noodle_error err;
    assert_ok(noodle_db_open(&o, &d, &err), &err);
    assert_non_null(d);
    return d;
}

static void exec_ok(const char *sql) {
    noodle_error err;
    assert_ok(noodle_db_exec(db, NULL, sql, NULL, 0, NULL, &err), &err);
}

static int setup(void **state) {
    (void)state;
    test_number++;
    switch (backend) {
    case MOCK:
        noodle_mock_reset();
        snprintf(url, sizeof url, "mock://%s", MOCK_NODE);
        break;
    case SQLITE: snprintf(url, sizeof url, "%s/db%d.db", tempdir, test_number); break;
    case POSTGRES: snprintf(url, sizeof url, "%s", noodle_pg_server_conninfo(pg)); break;
    }
    pool = open_pool(4, 10000);
    db = open_db(pool, 0);
    if (backend == POSTGRES) {
        exec_ok("DROP TABLE IF EXISTS items");
        exec_ok("DROP TABLE IF EXISTS victim");
        exec_ok("DROP TABLE IF EXISTS pairs");
    }
    exec_ok("CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, "
            "data BYTEA, note TEXT)");
    exec_ok("CREATE TABLE victim (id BIGINT PRIMARY KEY, v TEXT)");
    exec_ok("INSERT INTO victim (id, v) VALUES (1, 'still here')");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    noodle_db_close(db);
    noodle_pool_close(pool);
    db = NULL;
    pool = NULL;
    return 0;
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* Connections the pool has handed out so far (a refused call takes none). */
static uint64_t acquired(void) {
    noodle_pool_metrics m;
    noodle_pool_get_metrics(pool, &m);
    return m.acquired;
}

static noodle_rows *query_ok(const char *sql, const noodle_value *p, size_t n) {
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_db_query(db, NULL, sql, p, n, &r, &err), &err);
    assert_non_null(r);
    return r;
}

static int64_t query_int(const char *sql, const noodle_value *p, size_t n) {
    noodle_rows *r = query_ok(sql, p, n);
    assert_int_equal(noodle_rows_count(r), 1);
    int64_t v = 0;
    noodle_error err;
    assert_ok(noodle_rows_int64(r, 0, 0, &v, &err), &err);
    noodle_rows_free(r);
    return v;
}

static int64_t count_items(void) { return query_int("SELECT count(*) FROM items", NULL, 0); }

/* The column index of name in r (fails the test when there is none). */
static size_t col(const noodle_rows *r, const char *name) {
    size_t c = 0;
    noodle_error err;
    assert_ok(noodle_rows_column(r, name, &c, &err), &err);
    return c;
}

/* The text cell (row, column name) equals want[0..len) byte for byte. */
static void assert_text_cell(const noodle_rows *r, size_t row, const char *name, const char *want,
                             size_t len) {
    const char *s = NULL;
    size_t got = 0;
    noodle_error err;
    assert_ok(noodle_rows_text(r, row, col(r, name), &s, &got, &err), &err);
    assert_int_equal(got, len);
    assert_memory_equal(s, want, len);
    assert_int_equal(s[len], '\0'); /* usable as a C string */
}

static void insert_item(int64_t id, const char *name, double score) {
    static const char *const cols[] = {"id", "name", "score"};
    noodle_value v[] = {noodle_int64(id), noodle_text(name), noodle_double(score)};
    noodle_error err;
    assert_ok(noodle_db_insert(db, NULL, "items", cols, v, 3, &err), &err);
}

/* items 1..5: apple 1.5, apricot 2.5, banana 3.5, cherry 4.5 (note "n"),
 * 5 with a NULL name. */
static void insert_fruit(void) {
    insert_item(1, "apple", 1.5);
    insert_item(2, "apricot", 2.5);
    insert_item(3, "banana", 3.5);
    insert_item(4, "cherry", 4.5);
    static const char *const cols[] = {"id", "score", "note"};
    noodle_value v[] = {noodle_int64(5), noodle_double(5.5), noodle_text("n")};
    noodle_error err;
    assert_ok(noodle_db_insert(db, NULL, "items", cols, v, 3, &err), &err);
}

/* The ids of r's column "id", in order, as a string "1,2,3" (for messages). */
static void ids_of(const noodle_rows *r, char *buf, size_t size) {
    size_t used = 0, c = col(r, "id");
    buf[0] = '\0';
    for (size_t i = 0; i < noodle_rows_count(r) && used + 24 < size; i++) {
        int64_t id = -1;
        noodle_error err;
        assert_ok(noodle_rows_int64(r, i, c, &id, &err), &err);
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? "," : "", (long long)id);
    }
}

/* ---- CRUD end to end, typed reads ------------------------------------------------------------ */

static void insert_then_select_by_key_reads_every_type_back_by_index_and_by_name(void **state) {
    (void)state;
    unsigned char bytes[256];
    for (int i = 0; i < 256; i++)
        bytes[i] = (unsigned char)i;
    const char *utf8 = "caf\xc3\xa9 \xf0\x9f\x8d\x9c 'q' \"dq\" back\\slash";
    static const char *const cols[] = {"id", "name", "score", "data", "note"};
    noodle_value v[] = {noodle_int64(INT64_MAX), noodle_text(utf8), noodle_double(-0.25),
                        noodle_blob(bytes, sizeof bytes), noodle_null()};
    noodle_error err;
    assert_ok(noodle_db_insert(db, NULL, "items", cols, v, 5, &err), &err);

    noodle_rows *r = NULL;
    assert_ok(noodle_db_select_by_key(db, NULL, "items", "id", noodle_int64(INT64_MAX), &r, &err),
              &err);
    assert_int_equal(noodle_rows_count(r), 1);
    assert_int_equal(noodle_rows_columns(r), 5);
    /* by index: select * gives the table's column order */
    int64_t id = 0;
    double score = 0;
    const void *blob = NULL;
    size_t len = 0;
    assert_ok(noodle_rows_int64(r, 0, 0, &id, &err), &err);
    assert_true(id == INT64_MAX);
    assert_ok(noodle_rows_double(r, 0, 2, &score, &err), &err);
    assert_true(score == -0.25);
    assert_ok(noodle_rows_blob(r, 0, 3, &blob, &len, &err), &err);
    assert_int_equal(len, sizeof bytes);
    assert_memory_equal(blob, bytes, sizeof bytes);
    assert_true(noodle_rows_is_null(r, 0, 4));
    assert_false(noodle_rows_is_null(r, 0, 1));
    /* by name */
    assert_text_cell(r, 0, "name", utf8, strlen(utf8));
    assert_ok(noodle_rows_double(r, 0, col(r, "score"), &score, &err), &err);
    assert_true(score == -0.25);
    assert_true(noodle_rows_is_null(r, 0, col(r, "note")));
    noodle_rows_free(r);

    /* a key that matches nothing gives an empty result with the columns */
    assert_ok(noodle_db_select_by_key(db, NULL, "items", "id", noodle_int64(7), &r, &err), &err);
    assert_int_equal(noodle_rows_count(r), 0);
    assert_int_equal(noodle_rows_columns(r), 5);
    noodle_rows_free(r);
}

static void text_with_nul_bytes_round_trips_or_is_refused_with_a_code(void **state) {
    (void)state;
    static const char nul_text[] = "a\0b\0\0c";
    static const char *const cols[] = {"id", "name", "data"};
    noodle_value v[] = {noodle_int64(1), noodle_text_n(nul_text, sizeof nul_text - 1),
                        noodle_blob("\0x\0", 3)};
    noodle_error err;
    int rc = noodle_db_insert(db, NULL, "items", cols, v, 3, &err);
    if (rc != 0) {
        /* PostgreSQL text cannot hold a NUL byte: refused before sending */
        assert_int_equal(backend, POSTGRES);
        assert_code(rc, &err, NOODLE_E_QUERY_PARAM_INVALID);
        assert_int_equal(count_items(), 0);
        /* the blob alone goes through everywhere */
        v[1] = noodle_text("plain");
        assert_ok(noodle_db_insert(db, NULL, "items", cols, v, 3, &err), &err);
    }
    noodle_rows *r = NULL;
    assert_ok(noodle_db_select_by_key(db, NULL, "items", "id", noodle_int64(1), &r, &err), &err);
    if (rc == 0) assert_text_cell(r, 0, "name", nul_text, sizeof nul_text - 1);
    const void *p = NULL;
    size_t len = 0;
    assert_ok(noodle_rows_blob(r, 0, col(r, "data"), &p, &len, &err), &err);
    assert_int_equal(len, 3);
    assert_memory_equal(p, "\0x\0", 3);
    noodle_rows_free(r);
}

static void a_one_megabyte_text_and_blob_round_trip(void **state) {
    (void)state;
    size_t n = 1u << 20;
    char *big = malloc(n);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    static const char *const cols[] = {"id", "name", "data"};
    noodle_value v[] = {noodle_int64(1), noodle_text_n(big, n), noodle_blob(big, n)};
    noodle_error err;
    assert_ok(noodle_db_insert(db, NULL, "items", cols, v, 3, &err), &err);
    noodle_rows *r = NULL;
    assert_ok(noodle_db_select_by_key(db, NULL, "items", "id", noodle_int64(1), &r, &err), &err);
    assert_text_cell(r, 0, "name", big, n);
    const void *p = NULL;
    size_t len = 0;
    assert_ok(noodle_rows_blob(r, 0, col(r, "data"), &p, &len, &err), &err);
    assert_int_equal(len, n);
    assert_memory_equal(p, big, n);
    noodle_rows_free(r);
    free(big);
}

static void reading_a_cell_as_another_type_or_out_of_range_fails_with_5016(void **state) {
    (void)state;
    insert_fruit();
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_db_select_by_key(db, NULL, "items", "id", noodle_int64(5), &r, &err), &err);
    int64_t i = 0;
    double d = 0;
    const char *s = NULL;
    const void *p = NULL;
    size_t c_id = col(r, "id"), c_name = col(r, "name"), c_note = col(r, "note");
    assert_code(noodle_rows_text(r, 0, c_id, &s, NULL, &err), &err, NOODLE_E_QUERY_RESULT_ACCESS);
    assert_non_null(strstr(err.message, "\"id\") is int64, not text"));
    assert_code(noodle_rows_double(r, 0, c_id, &d, &err), &err, NOODLE_E_QUERY_RESULT_ACCESS);
    assert_code(noodle_rows_int64(r, 0, c_note, &i, &err), &err, NOODLE_E_QUERY_RESULT_ACCESS);
    assert_code(noodle_rows_blob(r, 0, c_note, &p, NULL, &err), &err, NOODLE_E_QUERY_RESULT_ACCESS);
    /* NULL is a type of its own */
    assert_true(noodle_rows_is_null(r, 0, c_name));
    assert_code(noodle_rows_text(r, 0, c_name, &s, NULL, &err), &err, NOODLE_E_QUERY_RESULT_ACCESS);
    assert_non_null(strstr(err.message, "is null, not text"));
    /* out of range: rows, columns, names */
    assert_false(noodle_rows_is_null(r, 1, c_name));
    assert_code(noodle_rows_int64(r, 1, c_id, &i, &err), &err, NOODLE_E_QUERY_RESULT_ACCESS);
    assert_non_null(strstr(err.message, "row 1 out of range"));
    assert_code(noodle_rows_int64(r, 0, 5, &i, &err), &err, NOODLE_E_QUERY_RESULT_ACCESS);
    size_t c = 99;
    assert_code(noodle_rows_column(r, "ID", &c, &err), &err, NOODLE_E_QUERY_RESULT_ACCESS);
    assert_int_equal(c, 99);
    assert_code(noodle_rows_int64(NULL, 0, 0, &i, &err), &err, NOODLE_E_QUERY_RESULT_ACCESS);
    assert_code(noodle_rows_int64(r, 0, c_id, NULL, &err), &err, NOODLE_E_QUERY_RESULT_ACCESS);
    /* and the right type still reads */
    assert_ok(noodle_rows_int64(r, 0, c_id, &i, &err), &err);
    assert_int_equal(i, 5);
    noodle_rows_free(r);
}

/* select with the spec; the ids it returns as "1,2,3". */
static void select_ids(const noodle_db_select_spec *spec, char *buf, size_t size) {
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_db_select(db, NULL, "items", spec, &r, &err), &err);
    ids_of(r, buf, size);
    noodle_rows_free(r);
}

/* The ids matched by one condition, in id order. */
static void ids_where(const char *column, noodle_db_op op, noodle_value v, char *buf, size_t size) {
    noodle_db_cond c = {.column = column, .op = op, .value = v};
    noodle_db_select_spec spec = {.conds = &c, .nconds = 1, .order_by = "id"};
    select_ids(&spec, buf, size);
}

static void select_filters_with_every_operator(void **state) {
    (void)state;
    insert_fruit();
    char ids[128];
    ids_where("id", NOODLE_DB_EQ, noodle_int64(3), ids, sizeof ids);
    assert_string_equal(ids, "3");
    ids_where("score", NOODLE_DB_NE, noodle_double(3.5), ids, sizeof ids);
    assert_string_equal(ids, "1,2,4,5");
    ids_where("score", NOODLE_DB_LT, noodle_double(3.5), ids, sizeof ids);
    assert_string_equal(ids, "1,2");
    ids_where("score", NOODLE_DB_LE, noodle_double(3.5), ids, sizeof ids);
    assert_string_equal(ids, "1,2,3");
    ids_where("id", NOODLE_DB_GT, noodle_int64(3), ids, sizeof ids);
    assert_string_equal(ids, "4,5");
    ids_where("id", NOODLE_DB_GE, noodle_int64(3), ids, sizeof ids);
    assert_string_equal(ids, "3,4,5");
    ids_where("name", NOODLE_DB_LIKE, noodle_text("ap%"), ids, sizeof ids);
    assert_string_equal(ids, "1,2");
    ids_where("name", NOODLE_DB_LIKE, noodle_text("_a_ana"), ids, sizeof ids);
    assert_string_equal(ids, "3");
    /* the value of IS NULL / IS NOT NULL is ignored: not even bound */
    ids_where("name", NOODLE_DB_IS_NULL, noodle_text("ignored"), ids, sizeof ids);
    assert_string_equal(ids, "5");
    ids_where("name", NOODLE_DB_IS_NOT_NULL, noodle_int64(42), ids, sizeof ids);
    assert_string_equal(ids, "1,2,3,4");
    /* = NULL matches nothing, as in SQL */
    ids_where("name", NOODLE_DB_EQ, noodle_null(), ids, sizeof ids);
    assert_string_equal(ids, "");
    /* conditions are joined with AND */
    noodle_db_cond both[] = {
        {.column = "score", .op = NOODLE_DB_GT, .value = noodle_double(2)},
        {.column = "note", .op = NOODLE_DB_IS_NULL},
        {.column = "name", .op = NOODLE_DB_NE, .value = noodle_text("banana")}};
    noodle_db_select_spec spec = {.conds = both, .nconds = 3, .order_by = "id"};
    select_ids(&spec, ids, sizeof ids);
    assert_string_equal(ids, "2,4");
}

static void select_orders_limits_and_projects_the_named_columns(void **state) {
    (void)state;
    insert_fruit();
    char ids[128];
    noodle_db_select_spec spec = {.order_by = "score", .descending = true, .limit = 2};
    select_ids(&spec, ids, sizeof ids);
    assert_string_equal(ids, "5,4");
    spec = (noodle_db_select_spec){.order_by = "id", .limit = 3};
    select_ids(&spec, ids, sizeof ids);
    assert_string_equal(ids, "1,2,3");
    /* no spec: every row, every column */
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_db_select(db, NULL, "items", NULL, &r, &err), &err);
    assert_int_equal(noodle_rows_count(r), 5);
    assert_int_equal(noodle_rows_columns(r), 5);
    noodle_rows_free(r);
    /* projection: the named columns, in the order asked */
    static const char *const cols[] = {"score", "name"};
    noodle_db_cond c = {.column = "id", .op = NOODLE_DB_EQ, .value = noodle_int64(2)};
    spec = (noodle_db_select_spec){.columns = cols, .ncolumns = 2, .conds = &c, .nconds = 1};
    assert_ok(noodle_db_select(db, NULL, "items", &spec, &r, &err), &err);
    assert_int_equal(noodle_rows_columns(r), 2);
    assert_string_equal(noodle_rows_column_name(r, 0), "score");
    assert_string_equal(noodle_rows_column_name(r, 1), "name");
    double score = 0;
    assert_ok(noodle_rows_double(r, 0, 0, &score, &err), &err);
    assert_true(score == 2.5);
    assert_text_cell(r, 0, "name", "apricot", 7);
    noodle_rows_free(r);
}

static void update_changes_only_the_matching_rows_and_counts_them(void **state) {
    (void)state;
    insert_fruit();
    static const char *const cols[] = {"note", "score"};
    noodle_value v[] = {noodle_text("cheap"), noodle_double(0.5)};
    noodle_db_cond c = {.column = "score", .op = NOODLE_DB_LT, .value = noodle_double(3)};
    int64_t affected = -1;
    noodle_error err;
    assert_ok(noodle_db_update(db, NULL, "items", cols, v, 2, &c, 1, &affected, &err), &err);
    assert_int_equal(affected, 2);
    char ids[64];
    ids_where("note", NOODLE_DB_EQ, noodle_text("cheap"), ids, sizeof ids);
    assert_string_equal(ids, "1,2");
    ids_where("score", NOODLE_DB_EQ, noodle_double(0.5), ids, sizeof ids);
    assert_string_equal(ids, "1,2");
    /* setting NULL is a value like any other */
    noodle_value nul[] = {noodle_null()};
    c = (noodle_db_cond){.column = "id", .op = NOODLE_DB_EQ, .value = noodle_int64(5)};
    assert_ok(noodle_db_update(db, NULL, "items", cols, nul, 1, &c, 1, &affected, &err), &err);
    assert_int_equal(affected, 1);
    ids_where("note", NOODLE_DB_IS_NULL, noodle_null(), ids, sizeof ids);
    assert_string_equal(ids, "3,4,5");
    /* no match: 0 rows, not an error */
    c.value = noodle_int64(99);
    assert_ok(noodle_db_update(db, NULL, "items", cols, v, 2, &c, 1, &affected, &err), &err);
    assert_int_equal(affected, 0);
}

static void update_all_changes_every_row(void **state) {
    (void)state;
    insert_fruit();
    static const char *const cols[] = {"note"};
    noodle_value v[] = {noodle_text("all")};
    int64_t affected = -1;
    noodle_error err;
    assert_ok(noodle_db_update_all(db, NULL, "items", cols, v, 1, &affected, &err), &err);
    assert_int_equal(affected, 5);
    char ids[64];
    ids_where("note", NOODLE_DB_EQ, noodle_text("all"), ids, sizeof ids);
    assert_string_equal(ids, "1,2,3,4,5");
}

static void delete_removes_only_the_matching_rows_and_delete_all_empties_the_table(void **state) {
    (void)state;
    insert_fruit();
    noodle_db_cond c[] = {{.column = "name", .op = NOODLE_DB_LIKE, .value = noodle_text("ap%")}};
    int64_t affected = -1;
    noodle_error err;
    assert_ok(noodle_db_delete(db, NULL, "items", c, 1, &affected, &err), &err);
    assert_int_equal(affected, 2);
    char ids[64];
    noodle_db_select_spec spec = {.order_by = "id"};
    select_ids(&spec, ids, sizeof ids);
    assert_string_equal(ids, "3,4,5");
    assert_ok(noodle_db_delete_all(db, NULL, "items", &affected, &err), &err);
    assert_int_equal(affected, 3);
    assert_int_equal(count_items(), 0);
    assert_int_equal(query_int("SELECT count(*) FROM victim", NULL, 0), 1);
}

static void upsert_inserts_then_updates_only_the_non_key_columns(void **state) {
    (void)state;
    static const char *const cols[] = {"id", "name", "score"};
    static const char *const key[] = {"id"};
    noodle_value v[] = {noodle_int64(1), noodle_text("first"), noodle_double(1)};
    noodle_error err;
    assert_ok(noodle_db_upsert(db, NULL, "items", cols, v, 3, key, 1, &err), &err);
    assert_int_equal(count_items(), 1);
    /* a note set outside the upsert survives it: only the listed columns change */
    static const char *const note[] = {"note"};
    noodle_value nv[] = {noodle_text("kept")};
    assert_ok(noodle_db_update_all(db, NULL, "items", note, nv, 1, NULL, &err), &err);
    v[1] = noodle_text("second");
    v[2] = noodle_double(2);
    assert_ok(noodle_db_upsert(db, NULL, "items", cols, v, 3, key, 1, &err), &err);
    assert_int_equal(count_items(), 1);
    noodle_rows *r = NULL;
    assert_ok(noodle_db_select_by_key(db, NULL, "items", "id", noodle_int64(1), &r, &err), &err);
    assert_text_cell(r, 0, "name", "second", 6);
    assert_text_cell(r, 0, "note", "kept", 4);
    double score = 0;
    assert_ok(noodle_rows_double(r, 0, col(r, "score"), &score, &err), &err);
    assert_true(score == 2);
    noodle_rows_free(r);
}

static void upsert_of_key_columns_only_does_nothing_on_conflict(void **state) {
    (void)state;
    insert_item(1, "one", 1);
    static const char *const cols[] = {"id"};
    noodle_value v[] = {noodle_int64(1)};
    noodle_error err;
    assert_ok(noodle_db_upsert(db, NULL, "items", cols, v, 1, cols, 1, &err), &err);
    v[0] = noodle_int64(2);
    assert_ok(noodle_db_upsert(db, NULL, "items", cols, v, 1, cols, 1, &err), &err);
    char ids[64];
    noodle_db_select_spec spec = {.order_by = "id"};
    select_ids(&spec, ids, sizeof ids);
    assert_string_equal(ids, "1,2");
    noodle_rows *r = NULL;
    assert_ok(noodle_db_select_by_key(db, NULL, "items", "id", noodle_int64(1), &r, &err), &err);
    assert_text_cell(r, 0, "name", "one", 3);
    noodle_rows_free(r);
}

static void upsert_on_a_composite_key_updates_the_row_with_both_keys_equal(void **state) {
    (void)state;
    exec_ok("CREATE TABLE pairs (a BIGINT NOT NULL, b BIGINT NOT NULL, v TEXT, n BIGINT, "
            "PRIMARY KEY (a, b))");
    static const char *const cols[] = {"a", "b", "v", "n"};
    static const char *const key[] = {"b", "a"}; /* any order */
    noodle_error err;
    const int64_t rows[][2] = {{1, 1}, {1, 2}, {2, 1}, {1, 2}};
    for (size_t i = 0; i < 4; i++) {
        noodle_value v[] = {noodle_int64(rows[i][0]), noodle_int64(rows[i][1]),
                            noodle_text(i == 3 ? "updated" : "new"), noodle_int64((int64_t)i)};
        assert_ok(noodle_db_upsert(db, NULL, "pairs", cols, v, 4, key, 2, &err), &err);
    }
    assert_int_equal(query_int("SELECT count(*) FROM pairs", NULL, 0), 3);
    noodle_value k[] = {noodle_int64(1), noodle_int64(2)};
    noodle_rows *r = query_ok("SELECT v, n FROM pairs WHERE a = ? AND b = ?", k, 2);
    assert_text_cell(r, 0, "v", "updated", 7);
    int64_t n = 0;
    assert_ok(noodle_rows_int64(r, 0, col(r, "n"), &n, &err), &err);
    assert_int_equal(n, 3);
    noodle_rows_free(r);
    r = query_ok("SELECT v FROM pairs WHERE a = 2 AND b = 1", NULL, 0);
    assert_text_cell(r, 0, "v", "new", 3);
    noodle_rows_free(r);
}

static void exec_reports_affected_rows_and_query_binds_every_parameter(void **state) {
    (void)state;
    insert_fruit();
    noodle_value p[] = {noodle_text("x'); DROP TABLE items; --"), noodle_int64(2)};
    int64_t affected = -1;
    noodle_error err;
    assert_ok(
        noodle_db_exec(db, NULL, "UPDATE items SET note = ? WHERE id > ?", p, 2, &affected, &err),
        &err);
    assert_int_equal(affected, 3);
    noodle_rows *r = NULL;
    assert_ok(
        noodle_db_query(db, NULL, "SELECT id, note FROM items WHERE id = ?", &p[1], 1, &r, &err),
        &err);
    assert_int_equal(noodle_rows_count(r), 1);
    noodle_rows_free(r);
    assert_ok(
        noodle_db_query_read(db, NULL, "SELECT note FROM items WHERE id = 3", NULL, 0, &r, &err),
        &err);
    assert_text_cell(r, 0, "note", "x'); DROP TABLE items; --", 25);
    noodle_rows_free(r);
    assert_int_equal(count_items(), 5);
}

static void a_backend_failure_keeps_its_code_and_detail_and_names_the_table(void **state) {
    (void)state;
    insert_item(1, "one", 1);
    static const char *const cols[] = {"id", "name"};
    noodle_value v[] = {noodle_int64(1), noodle_text("again")};
    noodle_error err;
    assert_code(noodle_db_insert(db, NULL, "items", cols, v, 2, &err), &err,
                NOODLE_E_QUERY_CONSTRAINT);
    assert_true(err.detail[0] != '\0');
    assert_memory_equal(err.message, "insert into \"items\": ", 21);
    assert_true(strlen(err.message) > 21);

    noodle_rows *r = (noodle_rows *)&err; /* must be reset to NULL */
    assert_code(noodle_db_select(db, NULL, "no_such_table", NULL, &r, &err), &err,
                NOODLE_E_QUERY_SYNTAX);
    assert_null(r);
    assert_true(err.detail[0] != '\0');
    assert_memory_equal(err.message, "select from \"no_such_table\": ", 29);

    static const char *const bad[] = {"no_such_column"};
    noodle_db_cond c = {.column = "id", .op = NOODLE_DB_EQ, .value = noodle_int64(1)};
    int64_t affected = -1;
    assert_code(noodle_db_update(db, NULL, "items", bad, v, 1, &c, 1, &affected, &err), &err,
                NOODLE_E_QUERY_SYNTAX);
    assert_int_equal(affected, 0);
    assert_memory_equal(err.message, "update \"items\": ", 16);
    /* raw SQL errors come through untouched */
    assert_code(noodle_db_exec(db, NULL, "SELEKT 1", NULL, 0, NULL, &err), &err,
                NOODLE_E_QUERY_SYNTAX);
    assert_true(err.detail[0] != '\0');
}

/* The schema every backend can address a table through: SQLite's database
 * "main", PostgreSQL's "public", the mock's "public". */
static const char *schema_name(void) { return backend == SQLITE ? "main" : "public"; }

static void qualified_table_names_address_the_same_table(void **state) {
    (void)state;
    char table[64];
    snprintf(table, sizeof table, "%s.items", schema_name());
    static const char *const cols[] = {"id", "name"};
    noodle_value v[] = {noodle_int64(1), noodle_text("qualified")};
    noodle_error err;
    assert_ok(noodle_db_insert(db, NULL, table, cols, v, 2, &err), &err);
    noodle_rows *r = NULL;
    assert_ok(noodle_db_select_by_key(db, NULL, "items", "id", noodle_int64(1), &r, &err), &err);
    assert_text_cell(r, 0, "name", "qualified", 9);
    noodle_rows_free(r);
    assert_ok(noodle_db_select_by_key(db, NULL, table, "id", noodle_int64(1), &r, &err), &err);
    assert_int_equal(noodle_rows_count(r), 1);
    noodle_rows_free(r);
    int64_t affected = 0;
    assert_ok(noodle_db_delete_all(db, NULL, table, &affected, &err), &err);
    assert_int_equal(affected, 1);
    /* an unknown schema is the database's refusal, not an identifier error */
    int rc = noodle_db_insert(db, NULL, "nosuchschema.items", cols, v, 2, &err);
    assert_int_not_equal(rc, 0);
    assert_int_equal(err.code, rc);
    assert_true(rc >= 4000 && rc < 6000);
}

/* ---- identifiers ----------------------------------------------------------------------------- */

static const char long63[] = "a23456789012345678901234567890123456789012345678901234567890123";
static const char long64[] = "a234567890123456789012345678901234567890123456789012345678901234";

static void the_identifier_validator_accepts_good_names_and_refuses_bad_ones(void **state) {
    (void)state;
    static const char *const good[] = {
        "t",  "_",    "_t",           "T",   "items", "Items_2",    "a_b_c",
        "x9", long63, "public.items", "s.t", "_s._t", "main.Items",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!noodle_db_identifier_valid(good[i])) fail_msg("refused the good name \"%s\"", good[i]);
    char long_qualified[160];
    snprintf(long_qualified, sizeof long_qualified, "%s.%s", long63, long63);
    assert_true(noodle_db_identifier_valid(long_qualified));

    static const char *const bad[] = {
        "",      long64,   "1t",   "9",  "t\"",  "\"t\"",       "a b",          " t",  "t ",
        "t;",    "t;DROP", "a--b", "--", "a/*b", "/*",          "*/",           "t'",  "a-b",
        "a.b.c", ".t",     "t.",   ".",  "..",   "caf\xc3\xa9", "\xe2\x82\xac", "t\n", "t\t",
        "a\\b",  "t)",     "t,u",  "t(", "$1",   "?",           "@t",           "t#",  "[t]",
        "`t`",   "a%b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (noodle_db_identifier_valid(bad[i])) fail_msg("accepted the bad name #%zu", i);
    char long_schema[160];
    snprintf(long_schema, sizeof long_schema, "%s.t", long64);
    assert_false(noodle_db_identifier_valid(long_schema));
    snprintf(long_schema, sizeof long_schema, "t.%s", long64);
    assert_false(noodle_db_identifier_valid(long_schema));
    assert_false(noodle_db_identifier_valid(NULL));
}

/* rc is 3001 and the message names the argument arg; line and name say
 * which call failed. */
static void assert_refused_naming_at(int rc, const noodle_error *err, const char *arg,
                                     const char *name, int line) {
    char want[64];
    snprintf(want, sizeof want, "invalid identifier for %s: ", arg);
    if (rc != NOODLE_E_DB_INVALID_IDENTIFIER || err->code != rc)
        fail_msg("line %d, name #%zu bytes \"%.40s\" as %s: expected 3001, got %d: %s", line,
                 name ? strlen(name) : 0, name ? name : "(NULL)", arg, rc, err->message);
    if (strstr(err->message, want) == NULL)
        fail_msg("line %d: the message does not name %s: %s", line, arg, err->message);
}
#define assert_refused_naming(rc, err, arg)                                                        \
    assert_refused_naming_at((rc), (err), (arg), name, __LINE__)

/* Every CRUD helper, with name in every place a name goes (a table's place
 * too unless as_table is false): each call is refused with 3001 naming that
 * place, and acquires no connection. */
static void every_helper_refuses_the_name(const char *name, bool as_table) {
    const uint64_t before = acquired();
    noodle_error err;
    noodle_rows *r = NULL;
    int64_t affected = 7;
    const char *const cols2[] = {"id", name};
    const char *const cols1[] = {name};
    const char *const ok_cols[] = {"id", "name"};
    noodle_value v[] = {noodle_int64(1), noodle_text("v")};
    noodle_db_cond ok_cond = {.column = "id", .op = NOODLE_DB_EQ, .value = noodle_int64(1)};
    noodle_db_cond bad_cond = {.column = name, .op = NOODLE_DB_EQ, .value = noodle_int64(1)};

    if (as_table)
        assert_refused_naming(noodle_db_insert(db, NULL, name, ok_cols, v, 2, &err), &err, "table");
    assert_refused_naming(noodle_db_insert(db, NULL, "items", cols2, v, 2, &err), &err, "column 1");

    noodle_db_select_spec spec = {0};
    if (as_table)
        assert_refused_naming(noodle_db_select(db, NULL, name, &spec, &r, &err), &err, "table");
    assert_null(r);
    spec = (noodle_db_select_spec){.columns = cols2, .ncolumns = 2};
    assert_refused_naming(noodle_db_select(db, NULL, "items", &spec, &r, &err), &err, "column 1");
    spec = (noodle_db_select_spec){.order_by = name};
    if (name != NULL) /* a NULL order_by means no order */
        assert_refused_naming(noodle_db_select(db, NULL, "items", &spec, &r, &err), &err,
                              "order_by");
    noodle_db_cond conds[] = {ok_cond, bad_cond};
    spec = (noodle_db_select_spec){.conds = conds, .nconds = 2};
    assert_refused_naming(noodle_db_select(db, NULL, "items", &spec, &r, &err), &err,
                          "condition 1");
    assert_null(r);

    if (as_table)
        assert_refused_naming(noodle_db_select_by_key(db, NULL, name, "id", v[0], &r, &err), &err,
                              "table");
    assert_refused_naming(noodle_db_select_by_key(db, NULL, "items", name, v[0], &r, &err), &err,
                          "key column");
    assert_null(r);

    if (as_table)
        assert_refused_naming(
            noodle_db_update(db, NULL, name, ok_cols, v, 2, &ok_cond, 1, NULL, &err), &err,
            "table");
    assert_refused_naming(
        noodle_db_update(db, NULL, "items", cols1, v, 1, &ok_cond, 1, &affected, &err), &err,
        "column 0");
    assert_int_equal(affected, 0); /* reset even when refused */
    assert_refused_naming(
        noodle_db_update(db, NULL, "items", ok_cols, v, 2, &bad_cond, 1, NULL, &err), &err,
        "condition 0");
    if (as_table)
        assert_refused_naming(noodle_db_update_all(db, NULL, name, ok_cols, v, 2, NULL, &err), &err,
                              "table");
    assert_refused_naming(noodle_db_update_all(db, NULL, "items", cols1, v, 1, NULL, &err), &err,
                          "column 0");

    if (as_table)
        assert_refused_naming(noodle_db_delete(db, NULL, name, &ok_cond, 1, NULL, &err), &err,
                              "table");
    assert_refused_naming(noodle_db_delete(db, NULL, "items", &bad_cond, 1, NULL, &err), &err,
                          "condition 0");
    if (as_table)
        assert_refused_naming(noodle_db_delete_all(db, NULL, name, NULL, &err), &err, "table");

    if (as_table)
        assert_refused_naming(noodle_db_upsert(db, NULL, name, ok_cols, v, 2, ok_cols, 1, &err),
                              &err, "table");
    assert_refused_naming(noodle_db_upsert(db, NULL, "items", cols2, v, 2, ok_cols, 1, &err), &err,
                          "column 1");
    assert_refused_naming(noodle_db_upsert(db, NULL, "items", ok_cols, v, 2, cols1, 1, &err), &err,
                          "key column 0");

    /* refused before any connection was taken, so nothing ran */
    assert_int_equal(acquired(), before);
}

static void
invalid_identifiers_are_refused_with_3001_naming_the_argument_before_anything_runs(void **state) {
    (void)state;
    insert_fruit();
    static const char *const bad[] = {"",     "1t",  "a b",         "t;",    "a--b",
                                      "a/*b", "t\"", "caf\xc3\xa9", "a.b.c", ".t"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        every_helper_refuses_the_name(bad[i], true);
    every_helper_refuses_the_name(long64, true);
    every_helper_refuses_the_name(NULL, true);
    /* a qualified name is a table's privilege: columns are plain names */
    every_helper_refuses_the_name("items.id", false);
    assert_int_equal(count_items(), 5);
}

static void a_refused_name_is_shown_escaped_and_truncated(void **state) {
    (void)state;
    static const char *const cols[] = {"id"};
    noodle_value v[] = {noodle_int64(1)};
    noodle_error err;
    assert_code(noodle_db_insert(db, NULL, "a\nb\xff\"c\\", cols, v, 1, &err), &err,
                NOODLE_E_DB_INVALID_IDENTIFIER);
    assert_non_null(strstr(err.message, "\"a\\x0ab\\xff\\\"c\\\\\""));
    assert_non_null(strstr(err.message, "\" contains a character other than letters, digits "
                                        "and '_' (byte 1)"));
    for (const char *p = err.message; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            fail_msg("unescaped byte 0x%02x in the message", (unsigned char)*p);

    char huge[400];
    memset(huge, 'x', sizeof huge - 2);
    huge[sizeof huge - 2] = ';';
    huge[sizeof huge - 1] = '\0';
    assert_code(noodle_db_insert(db, NULL, huge, cols, v, 1, &err), &err,
                NOODLE_E_DB_INVALID_IDENTIFIER);
    assert_non_null(strstr(err.message, "...\""));
    assert_non_null(strstr(err.message, "...\" is longer than 63 bytes (byte 63)"));
    assert_null(strstr(err.message, "x;"));
    assert_null(strstr(err.message, huge + 300)); /* not the whole name */
}

/* ---- guards ---------------------------------------------------------------------------------- */

static void
update_and_delete_without_conditions_are_refused_with_3005_and_change_nothing(void **state) {
    (void)state;
    insert_fruit();
    const uint64_t before = acquired();
    static const char *const cols[] = {"note"};
    noodle_value v[] = {noodle_text("everything")};
    int64_t affected = 7;
    noodle_error err;
    assert_code(noodle_db_update(db, NULL, "items", cols, v, 1, NULL, 0, &affected, &err), &err,
                NOODLE_E_DB_UNBOUNDED_WRITE);
    assert_int_equal(affected, 0);
    assert_non_null(strstr(err.message, "noodle_db_update_all"));
    noodle_db_cond c = {.column = "id", .op = NOODLE_DB_EQ, .value = noodle_int64(1)};
    assert_code(noodle_db_update(db, NULL, "items", cols, v, 1, &c, 0, &affected, &err), &err,
                NOODLE_E_DB_UNBOUNDED_WRITE);
    assert_code(noodle_db_delete(db, NULL, "items", NULL, 0, &affected, &err), &err,
                NOODLE_E_DB_UNBOUNDED_WRITE);
    assert_non_null(strstr(err.message, "noodle_db_delete_all"));
    assert_code(noodle_db_delete(db, NULL, "items", &c, 0, &affected, &err), &err,
                NOODLE_E_DB_UNBOUNDED_WRITE);
    assert_int_equal(acquired(), before);
    assert_int_equal(count_items(), 5);
    char ids[32];
    ids_where("note", NOODLE_DB_IS_NULL, noodle_null(), ids, sizeof ids);
    assert_string_equal(ids, "1,2,3,4");
}

static void an_unknown_condition_operator_is_refused_with_3004(void **state) {
    (void)state;
    insert_fruit();
    const uint64_t before = acquired();
    noodle_db_cond c[] = {{.column = "id", .op = NOODLE_DB_EQ, .value = noodle_int64(1)},
                          {.column = "id", .op = (noodle_db_op)(NOODLE_DB_IS_NOT_NULL + 1)}};
    noodle_error err;
    noodle_rows *r = NULL;
    noodle_db_select_spec spec = {.conds = c, .nconds = 2};
    assert_code(noodle_db_select(db, NULL, "items", &spec, &r, &err), &err,
                NOODLE_E_DB_INVALID_CONDITION);
    assert_null(r);
    assert_non_null(strstr(err.message, "condition 1"));
    c[1].op = (noodle_db_op)-1;
    assert_code(noodle_db_delete(db, NULL, "items", c, 2, NULL, &err), &err,
                NOODLE_E_DB_INVALID_CONDITION);
    static const char *const cols[] = {"note"};
    noodle_value v[] = {noodle_text("x")};
    c[1].op = (noodle_db_op)1000;
    assert_code(noodle_db_update(db, NULL, "items", cols, v, 1, c, 2, NULL, &err), &err,
                NOODLE_E_DB_INVALID_CONDITION);
    assert_int_equal(acquired(), before);
    assert_int_equal(count_items(), 5);
}

static void missing_columns_values_or_arrays_are_refused_with_3002(void **state) {
    (void)state;
    const uint64_t before = acquired();
    static const char *const cols[] = {"id", "name"};
    static const char *const key[] = {"id"};
    static const char *const not_a_column[] = {"score"};
    noodle_value v[] = {noodle_int64(1), noodle_text("x")};
    noodle_db_cond c = {.column = "id", .op = NOODLE_DB_EQ, .value = noodle_int64(1)};
    noodle_rows *r = NULL;
    noodle_error err;
    const int E = NOODLE_E_DB_INVALID_ARGUMENT;
    assert_code(noodle_db_insert(db, NULL, "items", cols, v, 0, &err), &err, E);
    assert_code(noodle_db_insert(db, NULL, "items", NULL, v, 2, &err), &err, E);
    assert_code(noodle_db_insert(db, NULL, "items", cols, NULL, 2, &err), &err, E);
    assert_code(noodle_db_insert(NULL, NULL, "items", cols, v, 2, &err), &err, E);
    assert_code(noodle_db_update(db, NULL, "items", cols, v, 0, &c, 1, NULL, &err), &err, E);
    assert_code(noodle_db_update(db, NULL, "items", cols, v, 2, NULL, 1, NULL, &err), &err, E);
    assert_code(noodle_db_update_all(db, NULL, "items", NULL, v, 2, NULL, &err), &err, E);
    assert_code(noodle_db_delete(db, NULL, "items", NULL, 2, NULL, &err), &err, E);
    assert_code(noodle_db_delete_all(NULL, NULL, "items", NULL, &err), &err, E);
    assert_code(noodle_db_upsert(db, NULL, "items", cols, v, 2, NULL, 1, &err), &err, E);
    assert_code(noodle_db_upsert(db, NULL, "items", cols, v, 2, key, 0, &err), &err, E);
    assert_code(noodle_db_upsert(db, NULL, "items", cols, v, 2, not_a_column, 1, &err), &err, E);
    assert_non_null(strstr(err.message, "(\"score\") is not one of the upserted columns"));
    /* select: no place for rows, arrays announced but missing, a negative
     * limit, a direction without a column */
    assert_code(noodle_db_select(db, NULL, "items", NULL, NULL, &err), &err, E);
    noodle_db_select_spec spec = {.ncolumns = 1};
    assert_code(noodle_db_select(db, NULL, "items", &spec, &r, &err), &err, E);
    spec = (noodle_db_select_spec){.nconds = 1};
    assert_code(noodle_db_select(db, NULL, "items", &spec, &r, &err), &err, E);
    spec = (noodle_db_select_spec){.limit = -1};
    assert_code(noodle_db_select(db, NULL, "items", &spec, &r, &err), &err, E);
    spec = (noodle_db_select_spec){.descending = true};
    assert_code(noodle_db_select(db, NULL, "items", &spec, &r, &err), &err, E);
    assert_null(r);
    assert_code(noodle_db_select_by_key(db, NULL, "items", "id", v[0], NULL, &err), &err, E);
    /* values must be one of the five types, with their bytes */
    noodle_value bad[] = {noodle_int64(1), {.type = (noodle_type)42}};
    assert_code(noodle_db_insert(db, NULL, "items", cols, bad, 2, &err), &err, E);
    bad[1] = (noodle_value){.type = NOODLE_TYPE_TEXT, .v.bytes = {NULL, 3}};
    assert_code(noodle_db_insert(db, NULL, "items", cols, bad, 2, &err), &err, E);
    c.value = bad[1];
    assert_code(noodle_db_delete(db, NULL, "items", &c, 1, NULL, &err), &err, E);
    /* raw SQL: a db and text; parameters when announced */
    assert_code(noodle_db_exec(db, NULL, NULL, NULL, 0, NULL, &err), &err, E);
    assert_code(noodle_db_exec(db, NULL, "SELECT 1", NULL, 1, NULL, &err), &err, E);
    assert_code(noodle_db_query(db, NULL, "SELECT 1", NULL, 0, NULL, &err), &err, E);
    assert_code(noodle_db_query_read(NULL, NULL, "SELECT 1", NULL, 0, &r, &err), &err, E);
    assert_int_equal(acquired(), before);
    assert_int_equal(count_items(), 0);
}

static void a_db_needs_exactly_one_of_pool_and_cluster(void **state) {
    (void)state;
    noodle_db *d = (noodle_db *)&d;
    noodle_error err;
    noodle_db_options o = NOODLE_DB_OPTIONS_INIT;
    assert_code(noodle_db_open(&o, &d, &err), &err, NOODLE_E_DB_INVALID_ARGUMENT);
    assert_null(d);
    o.pool = pool;
    o.cluster = (noodle_cluster *)pool; /* never dereferenced */
    assert_code(noodle_db_open(&o, &d, &err), &err, NOODLE_E_DB_INVALID_ARGUMENT);
    o.cluster = NULL;
    o.call_timeout_ms = -1;
    assert_code(noodle_db_open(&o, &d, &err), &err, NOODLE_E_DB_INVALID_ARGUMENT);
    o.call_timeout_ms = 0;
    o.struct_size = 0;
    assert_code(noodle_db_open(&o, &d, &err), &err, NOODLE_E_DB_INVALID_ARGUMENT);
    assert_code(noodle_db_open(NULL, &d, &err), &err, NOODLE_E_DB_INVALID_ARGUMENT);
    noodle_db_close(NULL);
}

/* ---- injection corpus (STD-PARAM) ------------------------------------------------------------ */

typedef struct payload {
    const char *bytes;
    size_t len;
} payload;

#define P(s)                                                                                       \
    { s, sizeof(s) - 1 }
static const payload corpus[] = {
    P("'"),
    P("\""),
    P("''"),
    P("'; DROP TABLE victim; --"),
    P("\"; DROP TABLE victim; --"),
    P("x'); DELETE FROM victim; --"),
    P("' OR '1'='1"),
    P("1; DELETE FROM victim"),
    P("SELECT 1; DROP TABLE victim"),
    P("/* */"),
    P("*/ DROP TABLE victim; /*"),
    P("-- comment"),
    P("\\"),
    P("\\'; DROP TABLE victim; --"),
    P("\\\"; DROP TABLE victim; --"),
    P("Robert'); DROP TABLE Students;--"),
    P("? $1 $$ $tag$ :: %s %n"),
    P("%_"),
    P("a\0b'; DROP TABLE victim; --"),
    P("\0"),
    P("\xff\xfe\xc3\x28 invalid UTF-8"),
    P("caf\xc3\xa9 \xf0\x9f\x8d\x9c"),
    P("\r\n\t\x1b[0m"),
};
#undef P
#define NCORPUS (sizeof corpus / sizeof corpus[0])

/* A growing string (tests only). */
typedef struct text {
    char *p;
    size_t len;
} text;

static void text_put(text *t, const void *s, size_t n) {
    t->p = realloc(t->p, t->len + n + 1);
    assert_non_null(t->p);
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

/* Every cell of r, rows on lines, cells separated by '|'. */
static void put_rows(text *t, const noodle_rows *r) {
    for (size_t i = 0; i < noodle_rows_count(r); i++) {
        for (size_t c = 0; c < noodle_rows_columns(r); c++) {
            const noodle_value *v = noodle_rows_get(r, i, c);
            char num[32];
            if (v->type == NOODLE_TYPE_TEXT || v->type == NOODLE_TYPE_BLOB) {
                text_put(t, v->v.bytes.ptr, v->v.bytes.len);
            } else if (v->type == NOODLE_TYPE_INT64) {
                text_put(t, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)v->v.i));
            } else {
                text_put(t, noodle_type_name(v->type), strlen(noodle_type_name(v->type)));
            }
            text_put(t, "|", 1);
        }
        text_put(t, "\n", 1);
    }
}

/* Tables a payload could create or drop, for the mock, whose catalogue is
 * read table by table. */
static const char *const mock_tables[] = {"items", "victim", "students", "Students", "t"};

/* The schema (every table and its columns) and the victim's rows. */
static char *schema_snapshot(void) {
    text t = {0};
    noodle_rows *r;
    if (backend == SQLITE) {
        r = query_ok("SELECT m.name, p.name, p.type FROM sqlite_master AS m "
                     "JOIN pragma_table_info(m.name) AS p WHERE m.type = 'table' "
                     "ORDER BY m.name, p.cid",
                     NULL, 0);
        put_rows(&t, r);
        noodle_rows_free(r);
    } else if (backend == POSTGRES) {
        r = query_ok("SELECT table_schema, table_name, column_name, data_type "
                     "FROM information_schema.columns "
                     "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
                     "ORDER BY table_schema, table_name, ordinal_position",
                     NULL, 0);
        put_rows(&t, r);
        noodle_rows_free(r);
    } else {
        for (size_t i = 0; i < sizeof mock_tables / sizeof mock_tables[0]; i++) {
            bool exists = noodle_mock_node_rows(MOCK_NODE, mock_tables[i]) >= 0;
            text_put(&t, mock_tables[i], strlen(mock_tables[i]));
            text_put(&t, exists ? ": " : ": absent\n", exists ? 2 : 9);
            if (!exists) continue;
            noodle_rows *cols = NULL;
            noodle_error err;
            noodle_db_select_spec spec = {.limit = 1};
            assert_ok(noodle_db_select(db, NULL, mock_tables[i], &spec, &cols, &err), &err);
            for (size_t c = 0; c < noodle_rows_columns(cols); c++) {
                const char *name = noodle_rows_column_name(cols, c);
                text_put(&t, name, strlen(name));
                text_put(&t, ",", 1);
            }
            text_put(&t, "\n", 1);
            noodle_rows_free(cols);
        }
    }
    r = query_ok("SELECT id, v FROM victim ORDER BY id", NULL, 0);
    put_rows(&t, r);
    noodle_rows_free(r);
    return t.p;
}

static void assert_schema_unchanged(const char *before) {
    char *after = schema_snapshot();
    if (strcmp(before, after) != 0)
        fail_msg("schema changed:\n%s\n---- now ----\n%s", before, after);
    free(after);
}

/* The one-megabyte payload: the corpus's drop repeated. */
static char *megabyte_payload(size_t *len) {
    static const char piece[] = "'; DROP TABLE victim; -- \" /* ";
    *len = 1u << 20;
    char *p = malloc(*len);
    assert_non_null(p);
    for (size_t i = 0; i < *len; i++)
        p[i] = piece[i % (sizeof piece - 1)];
    return p;
}

/* PostgreSQL text holds neither NUL bytes nor invalid UTF-8. */
static bool pg_text_refuses(const payload *pl) {
    if (memchr(pl->bytes, '\0', pl->len) != NULL) return true;
    const unsigned char *p = (const unsigned char *)pl->bytes, *end = p + pl->len;
    while (p < end) {
        size_t n = *p < 0x80         ? 1
                   : (*p >> 5) == 6  ? 2
                   : (*p >> 4) == 14 ? 3
                   : (*p >> 3) == 30 ? 4
                                     : 0;
        if (n == 0 || (size_t)(end - p) < n) return true;
        for (size_t i = 1; i < n; i++)
            if ((p[i] & 0xc0) != 0x80) return true;
        p += n;
    }
    return false;
}

/* The row id holds payload in name (text) and data (blob), byte for byte,
 * when its insert was accepted; else it holds the blob only. */
static void assert_stored(int64_t id, const payload *pl, bool text_accepted) {
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_db_select_by_key(db, NULL, "items", "id", noodle_int64(id), &r, &err), &err);
    assert_int_equal(noodle_rows_count(r), 1);
    if (text_accepted)
        assert_text_cell(r, 0, "name", pl->bytes, pl->len);
    else
        assert_true(noodle_rows_is_null(r, 0, col(r, "name")));
    const void *p = NULL;
    size_t len = 0;
    assert_ok(noodle_rows_blob(r, 0, col(r, "data"), &p, &len, &err), &err);
    assert_int_equal(len, pl->len);
    if (len > 0) assert_memory_equal(p, pl->bytes, len);
    noodle_rows_free(r);
}

static void
the_injection_corpus_as_values_is_stored_verbatim_or_refused_and_the_schema_is_unchanged(
    void **state) {
    (void)state;
    char *before = schema_snapshot();
    payload all[NCORPUS + 1];
    memcpy(all, corpus, sizeof corpus);
    char *big = megabyte_payload(&all[NCORPUS].len);
    all[NCORPUS].bytes = big;
    static const char *const cols[] = {"id", "name", "data"};
    static const char *const key[] = {"id"};
    static const char *const note[] = {"note"};
    for (size_t i = 0; i < NCORPUS + 1; i++) {
        const payload *pl = &all[i];
        const int64_t id = (int64_t)i + 1;
        noodle_value v[] = {noodle_int64(id), noodle_text_n(pl->bytes, pl->len),
                            noodle_blob(pl->bytes, pl->len)};
        noodle_error err;
        int rc = noodle_db_insert(db, NULL, "items", cols, v, 3, &err);
        const bool text_ok = rc == 0;
        const bool may_refuse = backend == POSTGRES && pg_text_refuses(pl);
        if (text_ok && may_refuse) fail_msg("PostgreSQL accepted payload %zu as text", i);
        if (!text_ok) {
            /* refused with a query code -- only PostgreSQL refuses text
             * (NUL bytes, invalid UTF-8) -- and nothing stored */
            if (!may_refuse || err.code != rc || rc < 5001 || rc > 5999)
                fail_msg("payload %zu refused with %d: %s", i, rc, err.message);
            v[1] = noodle_null();
            assert_ok(noodle_db_insert(db, NULL, "items", cols, v, 3, &err), &err);
        }
        assert_stored(id, pl, text_ok);

        /* as a condition value it matches exactly its own row */
        char ids[32], want[32];
        snprintf(want, sizeof want, "%lld", (long long)id);
        ids_where("data", NOODLE_DB_EQ, v[2], ids, sizeof ids);
        assert_string_equal(ids, want);
        if (text_ok) {
            ids_where("name", NOODLE_DB_EQ, v[1], ids, sizeof ids);
            assert_string_equal(ids, want);
            /* as a LIKE pattern it is data too: it matches, or the database
             * refuses the pattern with a code (PostgreSQL: a trailing \) */
            noodle_db_cond like = {.column = "name", .op = NOODLE_DB_LIKE, .value = v[1]};
            noodle_db_select_spec spec = {.conds = &like, .nconds = 1};
            noodle_rows *r = NULL;
            rc = noodle_db_select(db, NULL, "items", &spec, &r, &err);
            if (rc != 0 && (err.code != rc || rc < 5001 || rc > 5999))
                fail_msg("LIKE payload %zu failed with %d: %s", i, rc, err.message);
            noodle_rows_free(r);
            /* as an UPDATE value */
            noodle_db_cond c = {.column = "data", .op = NOODLE_DB_EQ, .value = v[2]};
            int64_t affected = 0;
            assert_ok(noodle_db_update(db, NULL, "items", note, &v[1], 1, &c, 1, &affected, &err),
                      &err);
            assert_int_equal(affected, 1);
            assert_ok(noodle_db_select_by_key(db, NULL, "items", "id", v[0], &r, &err), &err);
            assert_text_cell(r, 0, "note", pl->bytes, pl->len);
            noodle_rows_free(r);
        }
        /* as an upsert's values, over its own row */
        assert_ok(noodle_db_upsert(db, NULL, "items", cols, v, 3, key, 1, &err), &err);
        assert_stored(id, pl, text_ok);
    }
    assert_int_equal(count_items(), (int64_t)NCORPUS + 1);
    assert_schema_unchanged(before);
    free(before);
    free(big);
}

static void
the_injection_corpus_as_identifiers_is_refused_with_3001_and_nothing_runs(void **state) {
    (void)state;
    char *before = schema_snapshot();
    for (size_t i = 0; i < NCORPUS; i++) {
        /* a C string ends at its first NUL: "a\0b..." would be the name "a" */
        if (memchr(corpus[i].bytes, '\0', corpus[i].len) != NULL) continue;
        every_helper_refuses_the_name(corpus[i].bytes, true);
    }
    static const char *const aimed[] = {
        "items; DROP TABLE victim",
        "items\"; DROP TABLE victim; --",
        "victim--",
        "items/**/",
        "public.items; --",
        "items.\"x\"",
        "items\" (id) VALUES (1); --",
        "\"items\"",
        "items'",
    };
    for (size_t i = 0; i < sizeof aimed / sizeof aimed[0]; i++)
        every_helper_refuses_the_name(aimed[i], true);
    size_t len;
    char *big = megabyte_payload(&len);
    big = realloc(big, len + 1);
    assert_non_null(big);
    big[len] = '\0';
    every_helper_refuses_the_name(big, true);
    free(big);
    assert_schema_unchanged(before);
    free(before);
}

/* ---- transactions ---------------------------------------------------------------------------- */

static noodle_conn *acquire_ok(void) {
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_pool_acquire(pool, &c, &err), &err);
    return c;
}

static void crud_in_a_transaction_is_seen_by_it_alone_until_commit(void **state) {
    (void)state;
    insert_fruit();
    noodle_conn *c = acquire_ok();
    noodle_txn t;
    noodle_error err;
    assert_ok(noodle_txn_begin(c, NOODLE_ISOLATION_DEFAULT, &t, &err), &err);
    static const char *const cols[] = {"id", "name"};
    noodle_value v[] = {noodle_int64(10), noodle_text("in txn")};
    assert_ok(noodle_db_insert(db, &t, "items", cols, v, 2, &err), &err);
    static const char *const note[] = {"note"};
    noodle_value nv[] = {noodle_text("txn")};
    int64_t affected = 0;
    assert_ok(noodle_db_update_all(db, &t, "items", note, nv, 1, &affected, &err), &err);
    assert_int_equal(affected, 6);
    noodle_db_cond gone = {.column = "id", .op = NOODLE_DB_EQ, .value = noodle_int64(1)};
    assert_ok(noodle_db_delete(db, &t, "items", &gone, 1, &affected, &err), &err);
    assert_int_equal(affected, 1);
    noodle_rows *r = NULL;
    assert_ok(noodle_db_select_by_key(db, &t, "items", "id", noodle_int64(10), &r, &err), &err);
    assert_int_equal(noodle_rows_count(r), 1);
    noodle_rows_free(r);
    /* autocommit calls run on other connections: they do not see it yet */
    assert_int_equal(count_items(), 5);
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE note IS NOT NULL", NULL, 0), 1);
    assert_ok(noodle_txn_commit(&t, &err), &err);
    noodle_txn_end(&t);
    noodle_pool_release(pool, &c);
    assert_int_equal(count_items(), 5);
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE note = 'txn'", NULL, 0), 5);
}

static void a_failing_insert_in_a_nested_level_rolls_back_only_that_level(void **state) {
    (void)state;
    noodle_conn *c = acquire_ok();
    noodle_txn outer, inner;
    noodle_error err;
    static const char *const cols[] = {"id", "name"};
    noodle_value v[] = {noodle_int64(1), noodle_text("outer")};
    assert_ok(noodle_txn_begin(c, NOODLE_ISOLATION_DEFAULT, &outer, &err), &err);
    assert_ok(noodle_db_insert(db, &outer, "items", cols, v, 2, &err), &err);
    assert_ok(noodle_txn_begin_nested(&outer, &inner, &err), &err);
    v[0] = noodle_int64(2);
    v[1] = noodle_text("inner");
    assert_ok(noodle_db_insert(db, &inner, "items", cols, v, 2, &err), &err);
    v[0] = noodle_int64(1); /* a duplicate key: the statement fails */
    assert_code(noodle_db_insert(db, &inner, "items", cols, v, 2, &err), &err,
                NOODLE_E_QUERY_CONSTRAINT);
    assert_memory_equal(err.message, "insert into \"items\": ", 21);
    assert_non_null(strstr(err.message, "savepoint"));
    assert_true(err.detail[0] != '\0');
    assert_false(noodle_txn_is_active(&inner));
    assert_true(noodle_txn_is_active(&outer));
    /* the ended level refuses more work; the outer one goes on */
    assert_code(noodle_db_insert(db, &inner, "items", cols, v, 2, &err), &err, NOODLE_E_TXN_ENDED);
    v[0] = noodle_int64(3);
    v[1] = noodle_text("after");
    assert_ok(noodle_db_insert(db, &outer, "items", cols, v, 2, &err), &err);
    assert_ok(noodle_txn_commit(&outer, &err), &err);
    noodle_txn_end(&inner);
    noodle_txn_end(&outer);
    noodle_pool_release(pool, &c);
    char ids[32];
    noodle_db_select_spec spec = {.order_by = "id"};
    select_ids(&spec, ids, sizeof ids);
    assert_string_equal(ids, "1,3");
}

static void a_call_the_db_refuses_leaves_the_transaction_as_it_was(void **state) {
    (void)state;
    noodle_conn *c = acquire_ok();
    noodle_txn t;
    noodle_error err;
    insert_item(1, "outside", 1);
    assert_ok(noodle_txn_begin(c, NOODLE_ISOLATION_DEFAULT, &t, &err), &err);
    static const char *const cols[] = {"id", "name"};
    noodle_value v[] = {noodle_int64(2), noodle_text("inside")};
    assert_ok(noodle_db_insert(db, &t, "items", cols, v, 2, &err), &err);
    assert_code(noodle_db_insert(db, &t, "items;", cols, v, 2, &err), &err,
                NOODLE_E_DB_INVALID_IDENTIFIER);
    assert_code(noodle_db_delete(db, &t, "items", NULL, 0, NULL, &err), &err,
                NOODLE_E_DB_UNBOUNDED_WRITE);
    assert_true(noodle_txn_is_active(&t));
    assert_ok(noodle_txn_commit(&t, &err), &err);
    noodle_txn_end(&t);
    noodle_pool_release(pool, &c);
    assert_int_equal(count_items(), 2);
}

static void a_rolled_back_transaction_leaves_no_crud_write_behind(void **state) {
    (void)state;
    insert_fruit();
    char *before = schema_snapshot();
    noodle_conn *c = acquire_ok();
    noodle_txn t;
    noodle_error err;
    assert_ok(noodle_txn_begin(c, NOODLE_ISOLATION_DEFAULT, &t, &err), &err);
    static const char *const cols[] = {"id", "name"};
    static const char *const key[] = {"id"};
    noodle_value v[] = {noodle_int64(3), noodle_text("changed")};
    assert_ok(noodle_db_upsert(db, &t, "items", cols, v, 2, key, 1, &err), &err);
    assert_ok(noodle_db_delete_all(db, &t, "items", NULL, &err), &err);
    assert_ok(noodle_txn_rollback(&t, &err), &err);
    noodle_txn_end(&t);
    noodle_pool_release(pool, &c);
    char ids[32];
    ids_where("name", NOODLE_DB_EQ, noodle_text("banana"), ids, sizeof ids);
    assert_string_equal(ids, "3");
    assert_int_equal(count_items(), 5);
    assert_schema_unchanged(before);
    free(before);
}

/* ---- deadlines ------------------------------------------------------------------------------- */

static void call_timeout_bounds_the_wait_for_a_connection_with_2002(void **state) {
    (void)state;
    noodle_pool *one = open_pool(1, 30000);
    noodle_db *quick = open_db(one, 200);
    noodle_conn *held = NULL;
    noodle_error err;
    assert_ok(noodle_pool_acquire(one, &held, &err), &err);
    static const char *const cols[] = {"id"};
    noodle_value v[] = {noodle_int64(1)};
    int64_t t0 = noodle_test_now_ms();
    assert_code(noodle_db_insert(quick, NULL, "items", cols, v, 1, &err), &err,
                NOODLE_E_POOL_TIMEOUT);
    int64_t waited = noodle_test_now_ms() - t0;
    assert_true(waited >= 150 && waited < 3000);
    assert_memory_equal(err.message, "insert into \"items\": ", 21);
    noodle_pool_release(one, &held);
    assert_ok(noodle_db_insert(quick, NULL, "items", cols, v, 1, &err), &err);
    noodle_db_close(quick);
    noodle_pool_close(one);
    assert_int_equal(count_items(), 1);
}

/* ---- threads --------------------------------------------------------------------------------- */

enum { THREADS = 4, OPS_PER_THREAD = 40 };

/* One worker: insert its own rows, read each back by key, update it. No
 * cmocka asserts off the test's thread: failures are recorded. */
static void *crud_worker(void *arg) {
    const int64_t base = (int64_t)(intptr_t)arg * 1000;
    static const char *const cols[] = {"id", "name", "score"};
    static const char *const score[] = {"score"};
    for (int64_t i = 0; i < OPS_PER_THREAD; i++) {
        noodle_error err;
        noodle_value v[] = {noodle_int64(base + i), noodle_text("worker"), noodle_double(0)};
        if (noodle_db_insert(db, NULL, "items", cols, v, 3, &err) != 0) {
            noodle_test_thread_fail("insert %lld: %s", (long long)(base + i), err.message);
            return NULL;
        }
        noodle_rows *r = NULL;
        if (noodle_db_select_by_key(db, NULL, "items", "id", v[0], &r, &err) != 0 ||
            noodle_rows_count(r) != 1) {
            noodle_test_thread_fail("select %lld: %s", (long long)(base + i), err.message);
            noodle_rows_free(r);
            return NULL;
        }
        noodle_rows_free(r);
        noodle_db_cond c = {.column = "id", .op = NOODLE_DB_EQ, .value = v[0]};
        noodle_value nv[] = {noodle_double(1)};
        int64_t affected = 0;
        if (noodle_db_update(db, NULL, "items", score, nv, 1, &c, 1, &affected, &err) != 0 ||
            affected != 1) {
            noodle_test_thread_fail("update %lld: %s", (long long)(base + i), err.message);
            return NULL;
        }
    }
    return NULL;
}

static void one_db_serves_many_threads_at_once(void **state) {
    (void)state;
    noodle_test_reset_thread_failure();
    pthread_t t[THREADS];
    for (intptr_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, crud_worker, (void *)(i + 1)), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    noodle_test_assert_no_thread_failure();
    assert_int_equal(count_items(), THREADS * OPS_PER_THREAD);
    assert_int_equal(query_int("SELECT count(*) FROM items WHERE score = 1", NULL, 0),
                     THREADS * OPS_PER_THREAD);
}


/* Node i of the cluster answered a probe as a standby. */
static bool standby_known(noodle_cluster *cl, size_t i) {
    noodle_cluster_node_info info;
    noodle_error err;
    return noodle_cluster_node(cl, i, &info, &err) == 0 && info.up &&
           info.role == NOODLE_ROLE_STANDBY;
}

/* ---- the mock only: faults and routing ------------------------------------------------------- */

static void a_slow_statement_is_cut_by_call_timeout_with_4004(void **state) {
    (void)state;
    noodle_db *quick = open_db(pool, 200);
    noodle_error err;
    assert_ok(noodle_mock_set_latency(MOCK_NODE, NOODLE_MOCK_OP_EXECUTE, NOODLE_SEC(5), &err),
              &err);
    noodle_rows *r = NULL;
    int64_t t0 = noodle_test_now_ms();
    assert_code(noodle_db_select(quick, NULL, "items", NULL, &r, &err), &err,
                NOODLE_E_BACKEND_TIMEOUT);
    assert_true(noodle_test_now_ms() - t0 < 3000);
    assert_null(r);
    assert_memory_equal(err.message, "select from \"items\": ", 21);
    assert_ok(noodle_mock_clear_faults(MOCK_NODE, &err), &err);
    noodle_db_close(quick);
}

static void an_autocommit_write_whose_connection_dies_after_sending_reports_4015(void **state) {
    (void)state;
    noodle_error err;
    assert_ok(noodle_mock_commit_ack_lost(MOCK_NODE, 1, &err), &err);
    static const char *const cols[] = {"id", "name"};
    noodle_value v[] = {noodle_int64(1), noodle_text("maybe")};
    assert_code(noodle_db_insert(db, NULL, "items", cols, v, 2, &err), &err,
                NOODLE_E_OUTCOME_UNKNOWN);
    assert_memory_equal(err.message, "insert into \"items\": ", 21);
    assert_non_null(strstr(err.message, "may or may not"));
    assert_int_equal(noodle_mock_node_rows(MOCK_NODE, "items"), 1); /* it was applied */
    /* a read that loses its connection is just that */
    assert_ok(
        noodle_mock_fail_next(MOCK_NODE, NOODLE_MOCK_OP_EXECUTE, 1, NOODLE_E_CONNECTION_LOST, &err),
        &err);
    noodle_rows *r = NULL;
    assert_code(noodle_db_select(db, NULL, "items", NULL, &r, &err), &err,
                NOODLE_E_CONNECTION_LOST);
    assert_int_equal(count_items(), 1);
}

static int64_t executes(const char *node) {
    return noodle_test_node_stats(node).calls[NOODLE_MOCK_OP_EXECUTE];
}

static void
on_a_cluster_writes_and_crud_reads_go_to_the_primary_and_query_read_to_a_standby(void **state) {
    (void)state;
    noodle_error err;
    static const char *const nodes[] = {"dbp", "dbs"};
    const char *endpoints[] = {"mock://dbp", "mock://dbs"};
    for (size_t i = 0; i < 2; i++) {
        noodle_connect_params p = {.url = endpoints[i], .deadline = NOODLE_NO_DEADLINE};
        noodle_conn *c = NULL;
        assert_ok(noodle_conn_open(noodle_mock_backend(), &p, &c, &err), &err);
        noodle_test_exec_ok(c, "CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT, "
                               "score DOUBLE PRECISION, data BYTEA, note TEXT)");
        noodle_conn_close(c);
    }
    assert_ok(noodle_mock_node_set_role("dbs", NOODLE_ROLE_STANDBY, &err), &err);

    noodle_cluster *cl = noodle_test_mock_cluster(nodes, 2, true);
    /* wait_for_primary returns once the primary is known; the standby may
     * not have answered its first probe yet */
    WAIT_FOR(standby_known(cl, 1), 5000);
    assert_true(standby_known(cl, 1));
    noodle_db_options dopts = NOODLE_DB_OPTIONS_INIT;
    dopts.cluster = cl;
    noodle_db *cdb = NULL;
    assert_ok(noodle_db_open(&dopts, &cdb, &err), &err);

    int64_t p0 = executes(nodes[0]), s0 = executes(nodes[1]);
    static const char *const cols[] = {"id", "name"};
    noodle_value v[] = {noodle_int64(1), noodle_text("on the primary")};
    assert_ok(noodle_db_insert(cdb, NULL, "items", cols, v, 2, &err), &err);
    noodle_rows *r = NULL;
    assert_ok(noodle_db_select_by_key(cdb, NULL, "items", "id", v[0], &r, &err), &err);
    assert_int_equal(noodle_rows_count(r), 1); /* reads its own write */
    noodle_rows_free(r);
    assert_ok(noodle_db_select(cdb, NULL, "items", NULL, &r, &err), &err);
    noodle_rows_free(r);
    assert_ok(noodle_db_query(cdb, NULL, "SELECT id FROM items", NULL, 0, &r, &err), &err);
    noodle_rows_free(r);
    assert_int_equal(executes(nodes[0]) - p0, 4);
    assert_int_equal(executes(nodes[1]) - s0, 0);
    /* the standby has no rows: this read was served there */
    assert_ok(noodle_db_query_read(cdb, NULL, "SELECT id FROM items", NULL, 0, &r, &err), &err);
    assert_int_equal(noodle_rows_count(r), 0);
    noodle_rows_free(r);
    assert_int_equal(executes(nodes[1]) - s0, 1);
    assert_int_equal(executes(nodes[0]) - p0, 4);

    noodle_db_close(cdb);
    noodle_cluster_close(cl);
}

/* ---- main ------------------------------------------------------------------------------------ */

static int start_backend(const char *name) {
    if (noodle_test_mock_init() != 0) return -1; /* fiu, and the mock registered */
    if (strcmp(name, "mock") == 0) {
        backend = MOCK;
        ops = noodle_mock_backend();
    } else if (strcmp(name, "sqlite") == 0) {
        backend = SQLITE;
        ops = noodle_backend_sqlite();
        if (noodle_test_tempdir(tempdir, sizeof tempdir) != 0) return -1;
    } else if (strcmp(name, "postgres") == 0) {
        char msg[2048];
        backend = POSTGRES;
        ops = noodle_backend_postgres();
        if (noodle_pg_server_start(NULL, &pg, msg, sizeof msg) != 0) {
            fprintf(stderr, "cannot start PostgreSQL: %s\n", msg);
            return -1;
        }
    } else {
        fprintf(stderr, "usage: test_db [mock|sqlite|postgres]\n");
        return -1;
    }
    backend_name = name;
    return 0;
}

/* ---- observers ------------------------------------------------------------------------------- */

typedef struct seen_events {
    int n;
    char sql[4][128];
    int code[4];
    int64_t rows[4], duration_ns[4];
    bool in_txn[4];
} seen_events;

static void record_event(const noodle_db_event *ev, void *arg) {
    seen_events *s = arg;
    assert_int_equal(ev->sql_len, strlen(ev->sql));
    if (s->n < 4) {
        snprintf(s->sql[s->n], sizeof s->sql[0], "%s", ev->sql);
        s->code[s->n] = ev->code;
        s->rows[s->n] = ev->rows;
        s->duration_ns[s->n] = ev->duration_ns;
        s->in_txn[s->n] = ev->in_transaction;
    }
    s->n++;
}

static void observers_see_each_statement_with_its_text_outcome_rows_and_time(void **state) {
    (void)state;
    seen_events a = {0}, b = {0};
    noodle_error err;
    assert_ok(noodle_db_observe(db, record_event, &a, &err), &err);
    assert_ok(noodle_db_observe(db, record_event, &b, &err), &err);
    insert_item(1, "one", 1.0);
    insert_item(2, "two", 2.0);
    noodle_rows *r = query_ok("SELECT id FROM items ORDER BY id", NULL, 0);
    noodle_rows_free(r);
    noodle_rows *bad = NULL;
    assert_int_equal(noodle_db_query(db, NULL, "SELECT nope FROM items", NULL, 0, &bad, &err),
                     NOODLE_E_QUERY_SYNTAX);
    assert_int_equal(a.n, 4);
    assert_int_equal(b.n, 4);
    /* the CRUD insert reports the SQL it built, and the rows it changed */
    assert_non_null(strstr(a.sql[0], "INSERT INTO \"items\""));
    assert_int_equal(a.rows[0], 1);
    assert_string_equal(a.sql[2], "SELECT id FROM items ORDER BY id");
    assert_int_equal(a.rows[2], 2);
    assert_int_equal(a.code[2], 0);
    assert_int_equal(a.code[3], NOODLE_E_QUERY_SYNTAX);
    assert_int_equal(a.rows[3], -1);
    for (int i = 0; i < 4; i++) {
        assert_false(a.in_txn[i]);
        assert_true(a.duration_ns[i] > 0);
        assert_true(a.duration_ns[i] < NOODLE_SEC(10));
    }
}

static void statements_in_a_transaction_are_reported_as_such(void **state) {
    (void)state;
    seen_events a = {0};
    noodle_error err;
    assert_ok(noodle_db_observe(db, record_event, &a, &err), &err);
    noodle_conn *c = NULL;
    assert_ok(noodle_pool_acquire(pool, &c, &err), &err);
    noodle_txn t;
    assert_ok(noodle_txn_begin(c, NOODLE_ISOLATION_DEFAULT, &t, &err), &err);
    assert_ok(noodle_db_exec(db, &t, "UPDATE victim SET v = 'x'", NULL, 0, NULL, &err), &err);
    assert_ok(noodle_txn_commit(&t, &err), &err);
    noodle_pool_release(pool, &c);
    assert_int_equal(a.n, 1);
    assert_true(a.in_txn[0]);
    assert_int_equal(a.rows[0], 1);
}

static void a_ninth_observer_is_refused_with_3002(void **state) {
    (void)state;
    seen_events a = {0};
    noodle_error err;
    for (int i = 0; i < 8; i++) assert_ok(noodle_db_observe(db, record_event, &a, &err), &err);
    assert_int_equal(noodle_db_observe(db, record_event, &a, &err), NOODLE_E_DB_INVALID_ARGUMENT);
    assert_int_equal(noodle_db_observe(db, NULL, &a, &err), NOODLE_E_DB_INVALID_ARGUMENT);
    exec_ok("DELETE FROM victim WHERE id = 1");
    assert_int_equal(a.n, 8); /* the eight registered ones each saw it once */
}

int main(int argc, char **argv) {
    const char *name = argc >= 2 ? argv[1] : "mock";
    if (argc > 2 || start_backend(name) != 0) return 2;
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(insert_then_select_by_key_reads_every_type_back_by_index_and_by_name),
        T(text_with_nul_bytes_round_trips_or_is_refused_with_a_code),
        T(a_one_megabyte_text_and_blob_round_trip),
        T(reading_a_cell_as_another_type_or_out_of_range_fails_with_5016),
        T(select_filters_with_every_operator),
        T(select_orders_limits_and_projects_the_named_columns),
        T(update_changes_only_the_matching_rows_and_counts_them),
        T(update_all_changes_every_row),
        T(delete_removes_only_the_matching_rows_and_delete_all_empties_the_table),
        T(upsert_inserts_then_updates_only_the_non_key_columns),
        T(upsert_of_key_columns_only_does_nothing_on_conflict),
        T(upsert_on_a_composite_key_updates_the_row_with_both_keys_equal),
        T(exec_reports_affected_rows_and_query_binds_every_parameter),
        T(a_backend_failure_keeps_its_code_and_detail_and_names_the_table),
        T(qualified_table_names_address_the_same_table),
        T(the_identifier_validator_accepts_good_names_and_refuses_bad_ones),
        T(invalid_identifiers_are_refused_with_3001_naming_the_argument_before_anything_runs),
        T(a_refused_name_is_shown_escaped_and_truncated),
        T(update_and_delete_without_conditions_are_refused_with_3005_and_change_nothing),
        T(an_unknown_condition_operator_is_refused_with_3004),
        T(missing_columns_values_or_arrays_are_refused_with_3002),
        T(a_db_needs_exactly_one_of_pool_and_cluster),
        T(the_injection_corpus_as_values_is_stored_verbatim_or_refused_and_the_schema_is_unchanged),
        T(the_injection_corpus_as_identifiers_is_refused_with_3001_and_nothing_runs),
        T(crud_in_a_transaction_is_seen_by_it_alone_until_commit),
        T(a_failing_insert_in_a_nested_level_rolls_back_only_that_level),
        T(a_call_the_db_refuses_leaves_the_transaction_as_it_was),
        T(a_rolled_back_transaction_leaves_no_crud_write_behind),
        T(call_timeout_bounds_the_wait_for_a_connection_with_2002),
        T(one_db_serves_many_threads_at_once),
        T(observers_see_each_statement_with_its_text_outcome_rows_and_time),
        T(statements_in_a_transaction_are_reported_as_such),
        T(a_ninth_observer_is_refused_with_3002),
    };
    const struct CMUnitTest mock_tests[] = {
        T(a_slow_statement_is_cut_by_call_timeout_with_4004),
        T(an_autocommit_write_whose_connection_dies_after_sending_reports_4015),
        T(on_a_cluster_writes_and_crud_reads_go_to_the_primary_and_query_read_to_a_standby),
    };
#undef T
    char group[64];
    snprintf(group, sizeof group, "db_%s", name);
    int failed = _cmocka_run_group_tests(group, tests, sizeof tests / sizeof tests[0], NULL, NULL);
    if (backend == MOCK)
        failed += _cmocka_run_group_tests("db_mock_faults_and_routing", mock_tests,
                                          sizeof mock_tests / sizeof mock_tests[0], NULL, NULL);
    noodle_pg_server_stop(pg);
    if (tempdir[0]) noodle_test_rm_rf(tempdir);
    return failed;
}
