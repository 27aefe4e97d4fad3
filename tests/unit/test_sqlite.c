/* SQLite backend behaviour beyond the conformance suite: WAL, busy timeouts
 * bounded by the deadline, interrupted statements, stacked statements, corrupt
 * and read-only files, the prepared-statement cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/sqlite_internal.h"
#include "noodle/backend.h"
#include "test_util.h"

static char dir[256];
static char path[320];

#define DEADLINE() noodle_deadline_after(NULL, NOODLE_SEC(15))

static noodle_conn *open_url(const char *u) {
    noodle_connect_params p = {.url = u, .deadline = DEADLINE()};
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_conn_open(noodle_backend_sqlite(), &p, &c, &err), &err);
    return c;
}

static noodle_rows *run(noodle_conn *c, const char *sql, const noodle_value *p, size_t n) {
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_conn_execute(c, sql, p, n, DEADLINE(), &r, &err), &err);
    return r;
}

static int setup(void **state) {
    (void)state;
    if (noodle_test_tempdir(dir, sizeof dir) != 0) return -1;
    snprintf(path, sizeof path, "%s/t.db", dir);
    noodle_conn *c = open_url(path);
    noodle_rows_free(run(c, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", NULL, 0));
    noodle_conn_close(c);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return noodle_test_rm_rf(dir);
}

static void file_databases_run_in_wal_mode(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_rows *r = run(c, "PRAGMA journal_mode", NULL, 0);
    const noodle_value *v = noodle_rows_get(r, 0, 0);
    assert_int_equal(v->type, NOODLE_TYPE_TEXT);
    assert_string_equal((const char *)v->v.bytes.ptr, "wal");
    noodle_rows_free(r);
    noodle_conn_close(c);
}

static void a_blocked_writer_fails_with_5005_at_its_deadline_and_stays_usable(void **state) {
    (void)state;
    noodle_conn *a = open_url(path), *b = open_url(path);
    noodle_error err;
    assert_ok(noodle_conn_begin(a, NOODLE_ISOLATION_SERIALIZABLE, DEADLINE(), &err), &err);
    int64_t start = noodle_test_now_ms();
    int rc = noodle_conn_begin(b, NOODLE_ISOLATION_SERIALIZABLE,
                               noodle_deadline_after(NULL, NOODLE_MS(200)), &err);
    int64_t waited = noodle_test_now_ms() - start;
    assert_code(rc, &err, NOODLE_E_QUERY_BUSY);
    assert_non_null(strstr(err.detail, "SQLITE_BUSY"));
    assert_true(waited >= 150);  /* it did wait for the lock */
    assert_true(waited < 5000);  /* and gave up at the deadline (generous bound) */
    assert_int_equal(noodle_conn_get_state(b), NOODLE_CONN_OK);
    assert_ok(noodle_conn_commit(a, DEADLINE(), &err), &err);
    assert_ok(noodle_conn_begin(b, NOODLE_ISOLATION_SERIALIZABLE, DEADLINE(), &err), &err);
    assert_ok(noodle_conn_commit(b, DEADLINE(), &err), &err);
    noodle_conn_close(a);
    noodle_conn_close(b);
}

static void a_statement_running_past_its_deadline_is_interrupted_with_4004(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_rows *r = NULL;
    noodle_error err;
    int64_t start = noodle_test_now_ms();
    int rc = noodle_conn_execute(c,
                                 "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
                                 "WHERE x < 1000000000) SELECT count(*) FROM n",
                                 NULL, 0, noodle_deadline_after(NULL, NOODLE_MS(100)), &r, &err);
    assert_code(rc, &err, NOODLE_E_BACKEND_TIMEOUT);
    assert_true(noodle_test_now_ms() - start < 5000);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    noodle_conn_close(c);
}

static void stacked_statements_are_refused_and_nothing_runs(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_rows *r = NULL;
    noodle_error err;
    int rc = noodle_conn_execute(c, "INSERT INTO t (id, v) VALUES (1, 'a'); DROP TABLE t", NULL, 0,
                                 DEADLINE(), &r, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_UNSUPPORTED);
    r = run(c, "SELECT count(*) FROM t", NULL, 0);
    assert_int_equal(noodle_rows_get(r, 0, 0)->v.i, 0);
    noodle_rows_free(r);
    /* trailing semicolons and comments are not a second statement */
    noodle_rows_free(run(c, "SELECT 1; -- done\n /* really */ ;", NULL, 0));
    noodle_conn_close(c);
}

static void text_with_embedded_nul_bytes_is_stored_verbatim(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_value p[2] = {noodle_int64(1), noodle_text_n("a\0b\0c", 5)};
    noodle_rows_free(run(c, "INSERT INTO t (id, v) VALUES (?, ?)", p, 2));
    noodle_rows *r = run(c, "SELECT v FROM t WHERE id = ?", p, 1);
    const noodle_value *v = noodle_rows_get(r, 0, 0);
    assert_int_equal(v->type, NOODLE_TYPE_TEXT);
    assert_int_equal(v->v.bytes.len, 5);
    assert_memory_equal(v->v.bytes.ptr, "a\0b\0c", 5);
    noodle_rows_free(r);
    noodle_conn_close(c);
}

static void a_stale_snapshot_write_is_a_serialization_failure(void **state) {
    (void)state;
    noodle_conn *a = open_url(path), *b = open_url(path);
    noodle_error err;
    assert_ok(noodle_conn_begin(a, NOODLE_ISOLATION_REPEATABLE_READ, DEADLINE(), &err), &err);
    noodle_rows_free(run(a, "SELECT count(*) FROM t", NULL, 0)); /* snapshot taken */
    noodle_value p[2] = {noodle_int64(1), noodle_text("b wins")};
    noodle_rows_free(run(b, "INSERT INTO t (id, v) VALUES (?, ?)", p, 2));
    noodle_value q[2] = {noodle_int64(2), noodle_text("a is stale")};
    noodle_rows *r = NULL;
    int rc = noodle_conn_execute(a, "INSERT INTO t (id, v) VALUES (?, ?)", q, 2,
                                 noodle_deadline_after(NULL, NOODLE_MS(500)), &r, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_SERIALIZATION);
    assert_ok(noodle_conn_rollback(a, DEADLINE(), &err), &err);
    noodle_conn_close(a);
    noodle_conn_close(b);
}

static void a_file_that_is_not_a_database_fails_with_4014(void **state) {
    (void)state;
    char junk[340];
    snprintf(junk, sizeof junk, "%s/junk.db", dir);
    FILE *f = fopen(junk, "wb");
    for (int i = 0; i < 4096; i++) fputc('J', f);
    fclose(f);
    noodle_connect_params p = {.url = junk, .deadline = DEADLINE()};
    noodle_conn *c = NULL;
    noodle_error err;
    assert_code(noodle_conn_open(noodle_backend_sqlite(), &p, &c, &err), &err,
                NOODLE_E_INVALID_DATABASE);
    assert_non_null(strstr(err.detail, "SQLITE_NOTADB"));
    assert_null(c);
}

/* ---- integrity ---------------------------------------------------------------------- */

static noodle_integrity_result check(noodle_conn *c, noodle_integrity_level level) {
    noodle_integrity_result r;
    noodle_error err;
    assert_ok(noodle_conn_integrity(c, level, DEADLINE(), &r, &err), &err);
    return r;
}

/* Fill t and an index on it over several pages; returns the index's root
 * page and the page size. */
static void make_indexed_table(int64_t *index_root, int64_t *page_size) {
    noodle_conn *c = open_url(path);
    noodle_test_exec_ok(c, "CREATE INDEX t_v ON t (v)");
    for (int i = 0; i < 400; i++) {
        char v[64];
        snprintf(v, sizeof v, "value %d with some padding to fill pages", i);
        noodle_value p[2] = {noodle_int64(i), noodle_text(v)};
        noodle_rows_free(run(c, "INSERT INTO t (id, v) VALUES (?, ?)", p, 2));
    }
    *index_root = noodle_test_query_int(c, "SELECT rootpage FROM sqlite_schema WHERE name = 't_v'");
    *page_size = noodle_test_query_int(c, "PRAGMA page_size");
    noodle_conn_close(c); /* the last connection checkpoints the WAL into the file */
}

/* Overwrite page (1-based) of the database file with garbage. */
static void overwrite_page(int64_t page, int64_t page_size) {
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, (long)((page - 1) * page_size), SEEK_SET), 0);
    for (int64_t i = 0; i < page_size; i++) fputc((int)(0xA5 ^ (i * 7)) & 0xff, f);
    assert_int_equal(fclose(f), 0);
}

static void an_intact_file_passes_quick_and_full_checks_naming_the_pragma(void **state) {
    (void)state;
    int64_t root, page_size;
    make_indexed_table(&root, &page_size);
    noodle_conn *c = open_url(path);
    noodle_integrity_result q = check(c, NOODLE_INTEGRITY_QUICK);
    noodle_integrity_result full = check(c, NOODLE_INTEGRITY_FULL);
    assert_int_equal(q.problems, 0);
    assert_int_equal(full.problems, 0);
    assert_string_equal(q.method, "PRAGMA quick_check");
    assert_string_equal(full.method, "PRAGMA integrity_check");
    assert_int_equal(q.checksum_failures, -1); /* SQLite pages carry no checksums */
    noodle_conn_close(c);
}

static void a_garbage_index_page_is_found_by_quick_and_full_checks(void **state) {
    (void)state;
    int64_t root, page_size;
    make_indexed_table(&root, &page_size);
    assert_true(root > 1);
    overwrite_page(root, page_size);
    noodle_conn *c = open_url(path);
    noodle_integrity_result q = check(c, NOODLE_INTEGRITY_QUICK);
    noodle_integrity_result full = check(c, NOODLE_INTEGRITY_FULL);
    assert_true(q.problems > 0);
    assert_true(full.problems > 0);
    /* each reported line is a problem; the first is named (not SQLite's heading) */
    assert_true(q.first_problem[0] != '\0');
    assert_null(strchr(q.first_problem, '\n'));
    assert_null(strstr(full.first_problem, "*** in database"));
    /* finding damage is a result, not a failure: the connection stays usable */
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    noodle_conn_close(c);
}

static void a_garbage_table_page_is_found_by_quick_and_full_checks(void **state) {
    (void)state;
    int64_t root, page_size;
    make_indexed_table(&root, &page_size);
    noodle_conn *c = open_url(path);
    int64_t table_root =
        noodle_test_query_int(c, "SELECT rootpage FROM sqlite_schema WHERE name = 't'");
    noodle_conn_close(c);
    overwrite_page(table_root, page_size);
    c = open_url(path);
    assert_true(check(c, NOODLE_INTEGRITY_QUICK).problems > 0);
    assert_true(check(c, NOODLE_INTEGRITY_FULL).problems > 0);
    noodle_conn_close(c);
}

/* A file that is not a database cannot be checked at all: connect fails
 * with 4014 (as for a_file_that_is_not_a_database_fails_with_4014), and
 * a check that meets SQLITE_NOTADB fails with 4014 too. */
static void a_database_whose_header_page_is_garbage_cannot_be_opened_for_a_check(void **state) {
    (void)state;
    int64_t root, page_size;
    make_indexed_table(&root, &page_size);
    overwrite_page(1, page_size);
    noodle_connect_params p = {.url = path, .deadline = DEADLINE()};
    noodle_conn *c = NULL;
    noodle_error err;
    assert_code(noodle_conn_open(noodle_backend_sqlite(), &p, &c, &err), &err,
                NOODLE_E_INVALID_DATABASE);
    assert_null(c);
}

static void a_read_only_database_reports_its_role_and_refuses_writes(void **state) {
    (void)state;
    char uri[400];
    snprintf(uri, sizeof uri, "file:%s?mode=ro", path);
    noodle_conn *c = open_url(uri);
    noodle_role role;
    noodle_error err;
    assert_ok(noodle_conn_role(c, DEADLINE(), &role, &err), &err);
    assert_int_equal(role, NOODLE_ROLE_READ_ONLY);
    noodle_value p[2] = {noodle_int64(1), noodle_text("x")};
    noodle_rows *r = NULL;
    assert_code(noodle_conn_execute(c, "INSERT INTO t (id, v) VALUES (?, ?)", p, 2, DEADLINE(), &r,
                                    &err),
                &err, NOODLE_E_QUERY_READ_ONLY);
    noodle_conn_close(c);
}

static void in_memory_databases_work_without_a_file(void **state) {
    (void)state;
    noodle_conn *c = open_url(":memory:");
    noodle_rows_free(run(c, "CREATE TABLE m (x INTEGER)", NULL, 0));
    noodle_server_metrics m;
    noodle_error err;
    assert_ok(noodle_conn_metrics(c, DEADLINE(), &m, &err), &err);
    assert_string_equal(m.data_path, "");
    assert_true(m.database_size_bytes > 0);
    noodle_conn_close(c);
}

static void metrics_name_the_database_file_and_measure_its_size(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_server_metrics m;
    noodle_error err;
    assert_ok(noodle_conn_metrics(c, DEADLINE(), &m, &err), &err);
    assert_non_null(strstr(m.data_path, "/t.db"));
    assert_true(m.database_size_bytes >= 4096);
    assert_memory_equal(m.server_version, "SQLite 3.", 9);
    assert_int_equal(m.replication_lag_bytes, -1); /* unknown, never guessed */
    /* no replication and no archiver in SQLite */
    assert_int_equal(m.standby_count, -1);
    assert_string_equal(m.standbys[0].name, "");
    assert_int_equal(m.standbys[0].lag_bytes, -1);
    assert_int_equal(m.archive_archived_count, -1);
    assert_int_equal(m.archive_failed_count, -1);
    assert_int_equal(m.archive_last_archived_age_ms, -1);
    assert_int_equal(m.archive_last_failed_age_ms, -1);
    noodle_conn_close(c);
}

static void work_after_an_engine_rollback_is_refused_not_autocommitted(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_error err;
    noodle_rows_free(run(c, "CREATE TABLE r (id INTEGER PRIMARY KEY ON CONFLICT ROLLBACK)", NULL, 0));
    noodle_value one = noodle_int64(1), two = noodle_int64(2), three = noodle_int64(3);
    noodle_rows_free(run(c, "INSERT INTO r (id) VALUES (?)", &one, 1));
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    noodle_rows_free(run(c, "INSERT INTO r (id) VALUES (?)", &two, 1));
    noodle_rows *r = NULL;
    /* the duplicate makes SQLite roll the whole transaction back */
    assert_code(noodle_conn_execute(c, "INSERT INTO r (id) VALUES (?)", &one, 1, DEADLINE(), &r, &err),
                &err, NOODLE_E_QUERY_CONSTRAINT);
    /* later work is refused instead of committing statement by statement */
    assert_code(noodle_conn_execute(c, "INSERT INTO r (id) VALUES (?)", &three, 1, DEADLINE(), &r, &err),
                &err, NOODLE_E_QUERY_TXN_STATE);
    assert_non_null(strstr(err.message, "rolled back"));
    assert_code(noodle_conn_commit(c, DEADLINE(), &err), &err, NOODLE_E_QUERY_TXN_STATE);
    /* the transaction is over: the connection works in autocommit again */
    noodle_rows_free(run(c, "INSERT INTO r (id) VALUES (?)", &three, 1));
    r = run(c, "SELECT id FROM r ORDER BY id", NULL, 0);
    assert_int_equal(noodle_rows_count(r), 2); /* 1 and 3: row 2 was rolled back */
    assert_int_equal(noodle_rows_get(r, 1, 0)->v.i, 3);
    noodle_rows_free(r);
    /* rollback after an engine rollback succeeds */
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
    assert_code(noodle_conn_execute(c, "INSERT INTO r (id) VALUES (?)", &one, 1, DEADLINE(), &r, &err),
                &err, NOODLE_E_QUERY_CONSTRAINT);
    assert_ok(noodle_conn_rollback(c, DEADLINE(), &err), &err);
    noodle_conn_close(c);
}

static void affected_rows_exclude_trigger_writes(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_rows_free(run(c, "CREATE TABLE log (msg TEXT)", NULL, 0));
    noodle_rows_free(run(c, "CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN "
                            "INSERT INTO log VALUES ('a'); INSERT INTO log VALUES ('b'); END", NULL, 0));
    noodle_value p[2] = {noodle_int64(10), noodle_text("x")};
    noodle_rows *r = run(c, "INSERT INTO t (id, v) VALUES (?, ?)", p, 2);
    assert_int_equal(noodle_rows_affected(r), 1);
    noodle_rows_free(r);
    r = run(c, "CREATE TABLE other (x INTEGER)", NULL, 0); /* DDL changes no rows */
    assert_int_equal(noodle_rows_affected(r), 0);
    noodle_rows_free(r);
    noodle_conn_close(c);
}

static void generic_sqlite_errors_are_told_apart_by_cause(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_rows *r = NULL;
    noodle_error err;
    noodle_rows_free(run(c, "BEGIN", NULL, 0));
    assert_code(noodle_conn_execute(c, "BEGIN", NULL, 0, DEADLINE(), &r, &err), &err,
                NOODLE_E_QUERY_TXN_STATE);
    noodle_rows_free(run(c, "ROLLBACK", NULL, 0));
    assert_code(noodle_conn_execute(c, "SELECT abs(-9223372036854775807 - 1)", NULL, 0, DEADLINE(), &r,
                                    &err),
                &err, NOODLE_E_QUERY_DATA);
    assert_code(noodle_conn_execute(c, "SELECT nope FROM t", NULL, 0, DEADLINE(), &r, &err), &err,
                NOODLE_E_QUERY_SYNTAX);
    noodle_conn_close(c);
}

static void a_transaction_begun_as_sql_is_seen_by_the_connection(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    assert_false(noodle_conn_in_transaction(c));
    noodle_rows_free(run(c, "BEGIN", NULL, 0));
    assert_true(noodle_conn_in_transaction(c)); /* so a pool's release rolls it back */
    noodle_rows_free(run(c, "COMMIT", NULL, 0));
    assert_false(noodle_conn_in_transaction(c));
    noodle_conn_close(c);
}

static void a_commit_or_rollback_sent_as_sql_ends_a_transaction_opened_with_begin(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_error err;
    static const char *const ends[] = {"COMMIT", "ROLLBACK"};
    for (size_t i = 0; i < 2; i++) {
        assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
        noodle_rows_free(run(c, ends[i], NULL, 0));
        assert_false(noodle_conn_in_transaction(c));
        /* not taken for a rollback by the engine: the next transaction opens */
        assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
        assert_ok(noodle_conn_commit(c, DEADLINE(), &err), &err);
    }
    noodle_conn_close(c);
}

/* ---- the prepared-statement cache ------------------------------------------------ */

/* Fail unless c's statement cache counted hits and misses and holds size. */
#define assert_cache(c, hits, misses, size) \
    noodle_test_assert_cache((c), noodle__sqlite_stmt_cache_stats, (hits), (misses), (size))

static void repeated_execution_prepares_once_then_hits_the_cache(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    assert_cache(c, 0, 0, 0); /* connect's own pragmas are not cached */
    noodle_value p[2] = {noodle_int64(1), noodle_text("a")};
    noodle_rows_free(run(c, "INSERT INTO t (id, v) VALUES (?, ?)", p, 2));
    for (int i = 0; i < 3; i++) {
        noodle_rows *r = run(c, "SELECT v FROM t WHERE id = ?", p, 1);
        assert_string_equal(noodle_rows_get(r, 0, 0)->v.bytes.ptr, "a");
        noodle_rows_free(r);
    }
    assert_cache(c, 2, 2, 2);
    noodle_conn_close(c);
}

static void the_cache_keeps_64_statements_and_evicts_the_least_recently_used(void **state) {
    (void)state;
    noodle_conn *c = open_url(":memory:");
    noodle_test_cache_evicts_the_least_recently_used(c, NOODLE_SQLITE_STMT_CACHE_SIZE, noodle__sqlite_stmt_cache_stats);
    noodle_conn_close(c);
}

static void a_cached_statement_follows_schema_changes_from_any_connection(void **state) {
    (void)state;
    noodle_conn *a = open_url(path), *b = open_url(path);
    noodle_value p[2] = {noodle_int64(1), noodle_text("a")};
    noodle_rows_free(run(a, "INSERT INTO t (id, v) VALUES (?, ?)", p, 2));
    noodle_rows *r = run(a, "SELECT * FROM t", NULL, 0);
    assert_int_equal(noodle_rows_columns(r), 2);
    noodle_rows_free(r);
    /* another connection adds a column: SQLite re-prepares the cached statement */
    noodle_rows_free(run(b, "ALTER TABLE t ADD COLUMN w TEXT DEFAULT 'from b'", NULL, 0));
    r = run(a, "SELECT * FROM t", NULL, 0);
    assert_int_equal(noodle_rows_columns(r), 3);
    assert_string_equal(noodle_rows_column_name(r, 2), "w");
    assert_string_equal(noodle_rows_get(r, 0, 2)->v.bytes.ptr, "from b");
    noodle_rows_free(r);
    /* and the same connection adding one */
    noodle_rows_free(run(a, "ALTER TABLE t ADD COLUMN x INTEGER DEFAULT 7", NULL, 0));
    r = run(a, "SELECT * FROM t", NULL, 0);
    assert_int_equal(noodle_rows_columns(r), 4);
    assert_string_equal(noodle_rows_column_name(r, 3), "x");
    assert_int_equal(noodle_rows_get(r, 0, 3)->v.i, 7);
    noodle_rows_free(r);
    assert_cache(a, 2, 3, 3); /* both re-reads were hits */
    noodle_conn_close(a);
    noodle_conn_close(b);
}

static void parameters_of_every_type_reuse_one_cached_statement(void **state) {
    (void)state;
    noodle_conn *c = open_url(":memory:");
    const noodle_value in[] = {noodle_int64(7), noodle_double(2.5), noodle_text("x"),
                               noodle_blob("b", 1), noodle_null()};
    const char *const want[] = {"integer", "real", "text", "blob", "null"};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        noodle_rows *r = run(c, "SELECT typeof(?)", &in[i], 1);
        assert_string_equal(noodle_rows_get(r, 0, 0)->v.bytes.ptr, want[i]);
        noodle_rows_free(r);
    }
    assert_cache(c, 4, 1, 1);
    noodle_conn_close(c);
}

static void failed_prepares_and_stacked_statements_are_not_cached(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_rows *r = NULL;
    noodle_error err;
    for (int i = 0; i < 2; i++) {
        assert_code(noodle_conn_execute(c, "SELEC 1", NULL, 0, DEADLINE(), &r, &err), &err,
                    NOODLE_E_QUERY_SYNTAX);
        assert_code(noodle_conn_execute(c, "SELECT 1; SELECT 2", NULL, 0, DEADLINE(), &r, &err),
                    &err, NOODLE_E_QUERY_UNSUPPORTED);
    }
    noodle_rows_free(run(c, " -- no statement at all", NULL, 0));
    assert_cache(c, 0, 5, 0); /* every call prepared, none kept */
    noodle_conn_close(c);
}

static void a_cached_statement_that_failed_runs_again(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_rows *r = NULL;
    noodle_error err;
    noodle_value first[2] = {noodle_int64(1), noodle_text("a")};
    noodle_value dup[2] = {noodle_int64(1), noodle_text("b")};
    noodle_value second[2] = {noodle_int64(2), noodle_text("c")};
    const char *insert = "INSERT INTO t (id, v) VALUES (?, ?)";
    noodle_rows_free(run(c, insert, first, 2));
    assert_code(noodle_conn_execute(c, insert, dup, 2, DEADLINE(), &r, &err), &err,
                NOODLE_E_QUERY_CONSTRAINT);
    r = run(c, insert, second, 2);
    assert_int_equal(noodle_rows_affected(r), 1);
    noodle_rows_free(r);
    assert_cache(c, 2, 1, 1);
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM t"), 2);
    noodle_conn_close(c);
}

static void cached_statements_hold_no_snapshot_between_calls(void **state) {
    (void)state;
    noodle_conn *a = open_url(path), *b = open_url(path);
    noodle_value p[2] = {noodle_int64(1), noodle_text("x")};
    noodle_rows_free(run(b, "INSERT INTO t (id, v) VALUES (?, ?)", p, 2)); /* the WAL has frames */
    assert_int_equal(noodle_test_query_int(a, "SELECT count(*) FROM t"), 1);
    assert_false(noodle_conn_in_transaction(a));
    p[0] = noodle_int64(2);
    noodle_rows_free(run(b, "INSERT INTO t (id, v) VALUES (?, ?)", p, 2));
    /* a reader still on its snapshot would keep TRUNCATE from finishing */
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_conn_execute(b, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, 0,
                                  noodle_deadline_after(NULL, NOODLE_MS(500)), &r, &err),
              &err);
    assert_int_equal(noodle_rows_get(r, 0, 0)->v.i, 0); /* not busy */
    noodle_rows_free(r);
    assert_int_equal(noodle_test_query_int(a, "SELECT count(*) FROM t"), 2); /* a hit, fresh data */
    assert_cache(a, 1, 1, 1);
    noodle_conn_close(a);
    noodle_conn_close(b);
}

static void transaction_control_is_cached_but_savepoint_names_are_not(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_error err;
    char name[16];
    for (int i = 0; i < 3; i++) {
        assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, DEADLINE(), &err), &err);
        snprintf(name, sizeof name, "sp%d", i);
        assert_ok(noodle_conn_savepoint(c, name, DEADLINE(), &err), &err);
        assert_ok(noodle_conn_release(c, name, DEADLINE(), &err), &err);
        assert_ok(noodle_conn_commit(c, DEADLINE(), &err), &err);
    }
    assert_cache(c, 4, 2, 2); /* BEGIN DEFERRED and COMMIT */
    noodle_conn_close(c);
}

static void a_reopened_connection_starts_with_an_empty_cache(void **state) {
    (void)state;
    noodle_conn *c = open_url(path);
    noodle_test_exec_ok(c, "SELECT count(*) FROM t");
    noodle_test_exec_ok(c, "SELECT count(*) FROM t");
    assert_cache(c, 1, 1, 1);
    noodle_conn_close(c);
    c = open_url(path);
    assert_cache(c, 0, 0, 0);
    noodle_test_exec_ok(c, "SELECT count(*) FROM t");
    assert_cache(c, 0, 1, 1);
    noodle_conn_close(c);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(file_databases_run_in_wal_mode),
        T(a_blocked_writer_fails_with_5005_at_its_deadline_and_stays_usable),
        T(a_statement_running_past_its_deadline_is_interrupted_with_4004),
        T(stacked_statements_are_refused_and_nothing_runs),
        T(text_with_embedded_nul_bytes_is_stored_verbatim),
        T(a_stale_snapshot_write_is_a_serialization_failure),
        T(a_file_that_is_not_a_database_fails_with_4014),
        T(an_intact_file_passes_quick_and_full_checks_naming_the_pragma),
        T(a_garbage_index_page_is_found_by_quick_and_full_checks),
        T(a_garbage_table_page_is_found_by_quick_and_full_checks),
        T(a_database_whose_header_page_is_garbage_cannot_be_opened_for_a_check),
        T(a_read_only_database_reports_its_role_and_refuses_writes),
        T(in_memory_databases_work_without_a_file),
        T(metrics_name_the_database_file_and_measure_its_size),
        T(work_after_an_engine_rollback_is_refused_not_autocommitted),
        T(affected_rows_exclude_trigger_writes),
        T(generic_sqlite_errors_are_told_apart_by_cause),
        T(a_transaction_begun_as_sql_is_seen_by_the_connection),
        T(a_commit_or_rollback_sent_as_sql_ends_a_transaction_opened_with_begin),
        T(repeated_execution_prepares_once_then_hits_the_cache),
        T(the_cache_keeps_64_statements_and_evicts_the_least_recently_used),
        T(a_cached_statement_follows_schema_changes_from_any_connection),
        T(parameters_of_every_type_reuse_one_cached_statement),
        T(failed_prepares_and_stacked_statements_are_not_cached),
        T(a_cached_statement_that_failed_runs_again),
        T(cached_statements_hold_no_snapshot_between_calls),
        T(transaction_control_is_cached_but_savepoint_names_are_not),
        T(a_reopened_connection_starts_with_an_empty_cache),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
