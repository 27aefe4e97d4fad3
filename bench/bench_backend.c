/* Backend layer overhead: a point select on SQLite in memory through
 * noodle_conn_execute (release build, no fail points) against the same work
 * done with sqlite3 directly in the same run.
 *
 * Peers: (a) raw sqlite3 preparing the statement each time -- the same work
 * the backend does today; (b) raw sqlite3 with one statement prepared once --
 * the floor a prepared-statement cache (issue 5) can approach.
 *
 * Usage: bench_backend [operations]   (default 200000)
 * Ends with: summary conn_overhead_sqlite_pct=... noodle_ns=... raw_ns=... raw_prepared_ns=...
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "noodle/noodle.h"

#define ROWS 1000

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "bench_backend: %s\n", what);
    exit(1);
}

static const char *const select_sql = "SELECT id, v FROM kv WHERE id = ?";

static void fill(sqlite3 *db) {
    if (sqlite3_exec(db, "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT)", 0, 0, 0) != SQLITE_OK)
        die("create");
    sqlite3_exec(db, "BEGIN", 0, 0, 0);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "INSERT INTO kv VALUES (?, 'value of the row')", -1, &st, 0);
    for (int i = 0; i < ROWS; i++) {
        sqlite3_bind_int(st, 1, i);
        if (sqlite3_step(st) != SQLITE_DONE) die("insert");
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_exec(db, "COMMIT", 0, 0, 0);
}

static long checksum; /* keeps the reads from being optimised away */

static double raw_prepare_each(long n) {
    sqlite3 *db;
    sqlite3_open(":memory:", &db);
    fill(db);
    double t = now_s();
    for (long i = 0; i < n; i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, select_sql, -1, &st, 0) != SQLITE_OK) die("prepare");
        sqlite3_bind_int64(st, 1, i % ROWS);
        while (sqlite3_step(st) == SQLITE_ROW) checksum += sqlite3_column_bytes(st, 1);
        sqlite3_finalize(st);
    }
    t = now_s() - t;
    sqlite3_close(db);
    return t * 1e9 / (double)n;
}

static double raw_prepared_once(long n) {
    sqlite3 *db;
    sqlite3_open(":memory:", &db);
    fill(db);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, select_sql, -1, &st, 0) != SQLITE_OK) die("prepare");
    double t = now_s();
    for (long i = 0; i < n; i++) {
        sqlite3_bind_int64(st, 1, i % ROWS);
        while (sqlite3_step(st) == SQLITE_ROW) checksum += sqlite3_column_bytes(st, 1);
        sqlite3_reset(st);
    }
    t = now_s() - t;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return t * 1e9 / (double)n;
}

static double through_noodle(long n) {
    noodle_connect_params p = {.url = ":memory:", .deadline = NOODLE_NO_DEADLINE};
    noodle_conn *c;
    noodle_error err;
    if (noodle_conn_open(noodle_backend_sqlite(), &p, &c, &err) != 0) die("open");
    noodle_rows *r;
    if (noodle_conn_execute(c, "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT)", NULL, 0,
                            NOODLE_NO_DEADLINE, &r, &err) != 0)
        die("create");
    noodle_rows_free(r);
    if (noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, NOODLE_NO_DEADLINE, &err) != 0) die("begin");
    for (int i = 0; i < ROWS; i++) {
        noodle_value row[2] = {noodle_int64(i), noodle_text("value of the row")};
        if (noodle_conn_execute(c, "INSERT INTO kv VALUES (?, ?)", row, 2, NOODLE_NO_DEADLINE, &r,
                                &err) != 0)
            die("insert");
        noodle_rows_free(r);
    }
    if (noodle_conn_commit(c, NOODLE_NO_DEADLINE, &err) != 0) die("commit");
    double t = now_s();
    for (long i = 0; i < n; i++) {
        noodle_value key = noodle_int64(i % ROWS);
        if (noodle_conn_execute(c, select_sql, &key, 1, NOODLE_NO_DEADLINE, &r, &err) != 0)
            die("execute");
        checksum += (long)noodle_rows_get(r, 0, 1)->v.bytes.len;
        noodle_rows_free(r);
    }
    t = now_s() - t;
    noodle_conn_close(c);
    return t * 1e9 / (double)n;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 200000;
    if (n <= 0) die("operations must be positive");
    printf("point select by primary key, SQLite :memory:, %d rows, %ld operations each\n", ROWS, n);
    /* warm up caches and the allocator, then measure each three times, keep the best */
    through_noodle(n / 10);
    double best_noodle = 1e18, best_raw = 1e18, best_prep = 1e18;
    for (int round = 0; round < 3; round++) {
        double a = raw_prepare_each(n), b = raw_prepared_once(n), c = through_noodle(n);
        if (a < best_raw) best_raw = a;
        if (b < best_prep) best_prep = b;
        if (c < best_noodle) best_noodle = c;
    }
    double overhead = (best_noodle - best_raw) / best_raw * 100.0;
    printf("%-44s %10.0f ns/op\n", "sqlite3 direct, prepare each time (peer)", best_raw);
    printf("%-44s %10.0f ns/op\n", "sqlite3 direct, prepared once (floor)", best_prep);
    printf("%-44s %10.0f ns/op  (%.2fx the peer, %+.1f%%)\n", "noodle_conn_execute", best_noodle,
           best_noodle / best_raw, overhead);
    printf("(checksum %ld)\n", checksum);
    printf("summary conn_overhead_sqlite_pct=%.1f noodle_ns=%.0f raw_ns=%.0f raw_prepared_ns=%.0f\n",
           overhead, best_noodle, best_raw, best_prep);
    return 0;
}
