/* Backend layer overhead: a point select on SQLite in memory through
 * noodle_conn_execute (release build, no fail points) against the same work
 * done with sqlite3 directly in the same run.
 *
 * The backend keeps a prepared-statement cache per connection (issue 5), so
 * the fair peer of noodle_conn_execute is sqlite3 with one statement prepared
 * once, bound, stepped and reset each time. Measured:
 *   - raw sqlite3, statement prepared once (the peer);
 *   - noodle_conn_execute with the same SQL text each time (cache hits);
 *   - raw sqlite3 preparing the statement each time, and noodle_conn_execute
 *     cycling through more SQL texts than the cache holds, so every lookup
 *     misses: the path without the cache's help, against its own peer;
 *   - raw sqlite3 prepared once that also builds a noodle_rows result (the
 *     share of the overhead that is the result object, not the backend).
 *
 * Usage: bench_backend [operations]   (default 200000)
 * Ends with: summary conn_overhead_sqlite_pct=... noodle_ns=... raw_ns=... raw_prepared_ns=...
 *            noodle_cached_ns=... raw_prepared_rows_ns=...
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BENCH_NAME "bench_backend"
#include "bench_util.h"

#include "noodle/noodle.h"

#define ROWS 1000
/* SQL texts the miss runs cycle through: more than any statement cache
 * holds (64 by default), so that with LRU eviction every lookup misses. */
#define TEXTS 1000
#define TARGET_PCT 15.0

/* The monotonic clock, in seconds. */
static double now_s(void) { return (double)now_ns() / 1e9; }

static const char *const select_sql = "SELECT id, v FROM kv WHERE id = ?";
/* select_sql behind a distinct comment each, for the miss runs */
static char texts[TEXTS][64];

static void make_texts(void) {
    for (int i = 0; i < TEXTS; i++) snprintf(texts[i], sizeof texts[i], "/* %d */ %s", i, select_sql);
}

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
        if (sqlite3_prepare_v2(db, texts[i % TEXTS], -1, &st, 0) != SQLITE_OK) die("prepare");
        sqlite3_bind_int64(st, 1, i % ROWS);
        while (sqlite3_step(st) == SQLITE_ROW) checksum += sqlite3_column_bytes(st, 1);
        sqlite3_finalize(st);
    }
    t = now_s() - t;
    sqlite3_close(db);
    return t * 1e9 / (double)n;
}

/* with_rows: also build the noodle_rows result the backend builds. */
static double raw_prepared_once(long n, int with_rows) {
    sqlite3 *db;
    sqlite3_open(":memory:", &db);
    fill(db);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, select_sql, -1, &st, 0) != SQLITE_OK) die("prepare");
    double t = now_s();
    for (long i = 0; i < n; i++) {
        sqlite3_bind_int64(st, 1, i % ROWS);
        if (!with_rows) {
            while (sqlite3_step(st) == SQLITE_ROW) checksum += sqlite3_column_bytes(st, 1);
        } else {
            noodle_rows *r;
            if (noodle_rows_new(2, &r, NULL) != 0 ||
                noodle_rows_set_column_name(r, 0, sqlite3_column_name(st, 0), NULL) != 0 ||
                noodle_rows_set_column_name(r, 1, sqlite3_column_name(st, 1), NULL) != 0)
                die("rows");
            while (sqlite3_step(st) == SQLITE_ROW) {
                noodle_value cells[2] = {
                    noodle_int64(sqlite3_column_int64(st, 0)),
                    noodle_text_n((const char *)sqlite3_column_text(st, 1),
                                  (size_t)sqlite3_column_bytes(st, 1))};
                if (noodle_rows_append(r, cells, NULL) != 0) die("append");
            }
            checksum += (long)noodle_rows_get(r, 0, 1)->v.bytes.len;
            noodle_rows_free(r);
        }
        sqlite3_reset(st);
    }
    t = now_s() - t;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return t * 1e9 / (double)n;
}

/* cached: the same SQL text each time; otherwise cycle through texts[]. */
static double through_noodle(long n, int cached) {
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
        const char *sql = cached ? select_sql : texts[i % TEXTS];
        if (noodle_conn_execute(c, sql, &key, 1, NOODLE_NO_DEADLINE, &r, &err) != 0)
            die("execute");
        checksum += (long)noodle_rows_get(r, 0, 1)->v.bytes.len;
        noodle_rows_free(r);
    }
    t = now_s() - t;
    noodle_conn_close(c);
    return t * 1e9 / (double)n;
}

static void keep_min(double *best, double v) {
    if (v < *best) *best = v;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 200000;
    if (n <= 0) die("operations must be positive");
    make_texts();
    printf("point select by primary key, SQLite :memory:, %d rows, %ld operations each\n", ROWS, n);
    /* warm up caches and the allocator, then measure each three times
     * (interleaved), keep the best */
    through_noodle(n / 10, 1);
    double raw = 1e18, prep = 1e18, prep_rows = 1e18, miss = 1e18, hit = 1e18;
    for (int round = 0; round < 3; round++) {
        keep_min(&raw, raw_prepare_each(n));
        keep_min(&miss, through_noodle(n, 0));
        keep_min(&prep, raw_prepared_once(n, 0));
        keep_min(&prep_rows, raw_prepared_once(n, 1));
        keep_min(&hit, through_noodle(n, 1));
    }
    double overhead = (hit - prep) / prep * 100.0;
    double miss_overhead = (miss - raw) / raw * 100.0;
    printf("%-52s %8.0f ns/op\n", "sqlite3 direct, prepared once (peer)", prep);
    printf("%-52s %8.0f ns/op  (%.2fx the peer, %+.1f%%: %s, target <= %.0f%%)\n",
           "noodle_conn_execute, statement cache hit", hit, hit / prep, overhead,
           overhead <= TARGET_PCT ? "PASS" : "MISS", TARGET_PCT);
    printf("%-52s %8.0f ns/op  (%+.1f%% over the peer: the result object)\n",
           "sqlite3 direct, prepared once + noodle_rows result", prep_rows,
           (prep_rows - prep) / prep * 100.0);
    printf("%-52s %8.0f ns/op\n", "sqlite3 direct, prepare each time", raw);
    printf("%-52s %8.0f ns/op  (%.2fx, %+.1f%% over prepare each time)\n",
           "noodle_conn_execute, every lookup a miss", miss, miss / raw, miss_overhead);
    printf("(checksum %ld)\n", checksum);
    printf("summary conn_overhead_sqlite_pct=%.1f noodle_ns=%.0f raw_ns=%.0f raw_prepared_ns=%.0f "
           "noodle_cached_ns=%.0f raw_prepared_rows_ns=%.0f\n",
           overhead, miss, raw, prep, hit, prep_rows);
    return 0;
}
