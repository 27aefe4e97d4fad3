/* The performance monitor (STD-MONITOR, STD-POOL-METRICS): fingerprints,
 * per-query statistics in fixed memory, the slow-query log, alerts with
 * hysteresis, Prometheus and JSON exposition, pool and db feeds (SQLite
 * :memory: pools), and exact totals from 8 recording threads.
 *
 * Every monitor here runs without its sampler thread (sample_interval_ms 0)
 * unless the test is about the sampler, so that alert windows belong to the
 * test's own noodle_monitor_evaluate calls.
 */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mock_nodes.h"
#include "noodle/cluster.h"
#include "noodle/db.h"
#include "noodle/monitor.h"
#include "noodle/pool.h"
#include "noodle/txn.h"
#include "test_util.h"

static noodle_monitor *open_monitor(noodle_monitor_options *o) {
    o->sample_interval_ms = 0;
    noodle_monitor *mon = NULL;
    noodle_error err;
    assert_ok(noodle_monitor_open(o, &mon, &err), &err);
    assert_non_null(mon);
    return mon;
}

static noodle_monitor *open_default(void) {
    noodle_monitor_options o = NOODLE_MONITOR_OPTIONS_INIT;
    o.no_log = true;
    return open_monitor(&o);
}

static void record(noodle_monitor *mon, const char *sql, int64_t ns, int code, int64_t rows) {
    noodle_monitor_record_query(mon, sql, strlen(sql), ns, code, rows);
}

static noodle_monitor_query_stat stats_of(noodle_monitor *mon, const char *sql) {
    noodle_monitor_query_stat st;
    noodle_error err;
    assert_ok(noodle_monitor_query_stats(mon, sql, strlen(sql), &st, &err), &err);
    return st;
}

/* ---- fingerprints ------------------------------------------------------------------------------ */

static void fingerprints_fold_literals_placeholders_lists_comments_space_and_case(void **state) {
    (void)state;
    static const struct {
        const char *sql, *want;
    } cases[] = {
        {"select * from T where id = 42", "SELECT * FROM t WHERE id = ?"},
        {"SELECT *\n\t FROM t  WHERE id=$1 -- trailing comment\n", "SELECT * FROM t WHERE id = ?"},
        {"SELECT /* a /* nested */ comment */ a FROM t WHERE b = ?", "SELECT a FROM t WHERE b = ?"},
        {"SELECT a FROM t WHERE x IN (1, 2, 3, 4) AND y = 'it''s'",
         "SELECT a FROM t WHERE x IN (?) AND y = ?"},
        {"select a from t where x in ($1,$2,$3)", "SELECT a FROM t WHERE x IN (?)"},
        {"SELECT a FROM t WHERE x IN (SELECT b FROM u)", "SELECT a FROM t WHERE x IN (SELECT b FROM u)"},
        {"insert into t (a,b) values (1,'x'),(2,'y'),(3, 'z')", "INSERT INTO t(a, b) VALUES (?, ?)"},
        {"INSERT INTO t(a) VALUES (?) ON CONFLICT DO NOTHING",
         "INSERT INTO t(a) VALUES (?) ON CONFLICT DO NOTHING"},
        {"SELECT a FROM t WHERE a = -5 AND b = x-5 AND c = 1.5e10 AND d = 0x1F",
         "SELECT a FROM t WHERE a = ? AND b = x - ? AND c = ? AND d = ?"},
        {"SELECT $$dollar$$, $tag$ x $tag$, E'a\\'b', x'ff', :name, @p, ?3 FROM t",
         "SELECT ?, ?, ?, ?, ?, ?, ? FROM t"},
        {"SELECT \"Mixed\"\"Case\" FROM \"T\"", "SELECT \"Mixed\"\"Case\" FROM \"T\""},
        {"select a::int from t", "SELECT a::int FROM t"},
        {"  ", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[256];
        size_t n = noodle_monitor_fingerprint(cases[i].sql, strlen(cases[i].sql), buf, sizeof buf);
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("fingerprint of [%s]\n  got  [%s]\n  want [%s]", cases[i].sql, buf, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
    }
    /* truncation reports the whole length, like snprintf */
    char small[8];
    const char *sql = "SELECT a FROM t WHERE b = 1";
    assert_int_equal(noodle_monitor_fingerprint(sql, strlen(sql), small, sizeof small),
                     strlen("SELECT a FROM t WHERE b = ?"));
    assert_string_equal(small, "SELECT ");
}

/* ---- statistics -------------------------------------------------------------------------------- */

static void records_give_calls_errors_rows_total_max_and_histogram(void **state) {
    (void)state;
    noodle_monitor *mon = open_default();
    record(mon, "SELECT v FROM t WHERE id = 1", 1000, 0, 1);
    record(mon, "select v from t where id = 2", 3000, 0, 1);
    record(mon, "SELECT v FROM t WHERE id = $1", 2000, NOODLE_E_QUERY_SYNTAX, -1);
    record(mon, "SELECT v FROM t WHERE id = 1", 1000000, 0, 0);
    record(mon, "DELETE FROM t", 500, 0, 7);
    noodle_monitor_query_stat st = stats_of(mon, "SELECT v FROM t WHERE id = ?");
    assert_string_equal(st.fingerprint, "SELECT v FROM t WHERE id = ?");
    assert_int_equal(st.calls, 4);
    assert_int_equal(st.errors, 1);
    assert_int_equal(st.rows, 2);
    assert_int_equal(st.total_ns, 1000 + 3000 + 2000 + 1000000);
    assert_int_equal(st.max_ns, 1000000);
    assert_int_equal(st.latency.count, 4);
    assert_int_equal(st.latency.buckets[noodle_histogram_bucket_of(1000)], 1);
    assert_int_equal(st.latency.buckets[noodle_histogram_bucket_of(1000000)], 1);
    assert_int_equal(stats_of(mon, "DELETE FROM t").rows, 7);
    noodle_monitor_metrics m;
    noodle_monitor_get_metrics(mon, &m);
    assert_int_equal(m.queries, 5);
    assert_int_equal(m.query_errors, 1);
    assert_int_equal(m.fingerprints, 2);
    noodle_monitor_query_stat none;
    noodle_error err;
    assert_code(noodle_monitor_query_stats(mon, "SELECT 1", 8, &none, &err), &err,
                NOODLE_E_MONITOR_INVALID_ARGUMENT);
    noodle_monitor_close(mon);
}

/* The thread's cache tells texts apart by comparing them: texts of every
 * length class (under 4, under 8, in the entry, in a heap copy) that differ
 * in one byte, wherever it is, land in their own fingerprints. */
static void texts_differing_in_any_one_byte_are_counted_apart(void **state) {
    (void)state;
    noodle_monitor_options o = NOODLE_MONITOR_OPTIONS_INIT;
    o.no_log = true;
    o.thread_cache_entries = 1; /* every text in the same entry: only the compare tells them apart */
    noodle_monitor *mon = open_monitor(&o);
    static const size_t lengths[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 47, 48, 49, 64};
    char base[80], variant[80];
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
        size_t n = lengths[li];
        for (size_t i = 0; i < n; i++) base[i] = (char)('a' + i % 26);
        base[n] = '\0';
        for (size_t k = 0; k < n; k++) {
            memcpy(variant, base, n + 1);
            variant[k] = (char)('a' + (k + 1) % 26); /* a different lowercase letter */
            for (int r = 0; r < 3; r++) {
                record(mon, base, 1000, 0, 1);
                record(mon, variant, 1000, 0, 1);
            }
            assert_int_equal(stats_of(mon, variant).calls, 3);
        }
        assert_int_equal(stats_of(mon, base).calls, 3 * n);
    }
    noodle_monitor_close(mon);
}

static void the_fingerprint_cap_evicts_the_least_used_and_memory_stays_bounded(void **state) {
    (void)state;
    noodle_monitor_options o = NOODLE_MONITOR_OPTIONS_INIT;
    o.max_fingerprints = 100;
    o.no_log = true;
    noodle_monitor *mon = open_monitor(&o);
    for (int i = 0; i < 50; i++) record(mon, "SELECT hot FROM t WHERE id = 1", 1000, 0, 1);
    char sql[128];
    size_t mem_early = 0;
    for (int i = 0; i < 100000; i++) {
        snprintf(sql, sizeof sql, "SELECT c FROM table_%06d WHERE id = %06d", i, i);
        record(mon, sql, 1000, 0, 1);
        if (i == 4999) mem_early = noodle_monitor_memory_bytes(mon);
    }
    noodle_monitor_metrics m;
    noodle_monitor_get_metrics(mon, &m);
    assert_int_equal(m.queries, 100050);
    assert_true(m.fingerprints <= 100);
    assert_true(m.evictions >= 100000 - 100);
    assert_int_equal(stats_of(mon, "SELECT hot FROM t WHERE id = 2").calls, 50);
    /* the same bytes after 5 000 and after 100 000 distinct texts */
    assert_int_equal(m.memory_bytes, mem_early);
    assert_true(m.memory_bytes < 2 * 1024 * 1024);
    noodle_monitor_close(mon);
}

static void the_slow_query_log_keeps_the_last_n_slow_calls_oldest_first(void **state) {
    (void)state;
    noodle_monitor_options o = NOODLE_MONITOR_OPTIONS_INIT;
    o.slow_query_ms = 5;
    o.slow_log_size = 4;
    o.no_log = true;
    noodle_monitor *mon = open_monitor(&o);
    for (int i = 1; i <= 10; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "SELECT slow FROM t WHERE n = %d", i);
        record(mon, sql, NOODLE_MS(i), i == 10 ? NOODLE_E_QUERY_CANCELED : 0, 1);
    }
    noodle_monitor_slow_query q[8];
    size_t n = 0;
    noodle_monitor_slow_queries(mon, q, 8, &n);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(q[i].duration_ns, NOODLE_MS(7 + (int64_t)i));
        assert_string_equal(q[i].fingerprint, "SELECT slow FROM t WHERE n = ?");
    }
    assert_int_equal(q[3].code, NOODLE_E_QUERY_CANCELED);
    noodle_monitor_slow_queries(mon, q, 2, &n); /* the newest when cap is short */
    assert_int_equal(n, 2);
    assert_int_equal(q[1].duration_ns, NOODLE_MS(10));
    noodle_monitor_metrics m;
    noodle_monitor_get_metrics(mon, &m);
    assert_int_equal(m.slow_queries, 6);
    assert_int_equal(stats_of(mon, "SELECT slow FROM t WHERE n = 0").calls, 10);
    noodle_monitor_close(mon);
}

/* ---- alerts ---------------------------------------------------------------------------------------- */

typedef struct alert_log {
    int raised[NOODLE_ALERTS], cleared[NOODLE_ALERTS];
    double last_value;
} alert_log;

static void on_alert(const noodle_alert_event *ev, void *arg) {
    alert_log *a = arg;
    if (ev->raised) a->raised[ev->kind]++;
    else a->cleared[ev->kind]++;
    a->last_value = ev->value;
}

static size_t count_lines_with(FILE *f, const char *needle) {
    char line[512];
    size_t n = 0;
    rewind(f);
    while (fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
    return n;
}

static void an_alert_is_raised_once_cleared_once_below_the_clear_level_and_never_flaps(void **state) {
    (void)state;
    alert_log a = {0};
    FILE *log = tmpfile();
    assert_non_null(log);
    noodle_monitor_options o = NOODLE_MONITOR_OPTIONS_INIT;
    o.replication_lag_ms = 100; /* clears below 80 */
    o.on_alert = on_alert;
    o.alert_arg = &a;
    o.log = log;
    noodle_monitor *mon = open_monitor(&o);
    const int lag = NOODLE_ALERT_REPLICATION_LAG;
    static const struct {
        double lag;
        int raised, cleared;
    } steps[] = {
        {50, 0, 0},  {120, 1, 0}, {150, 1, 0}, {95, 1, 0}, {101, 1, 0}, {85, 1, 0}, {99, 1, 0},
        {80, 1, 0},  {79, 1, 1},  {81, 1, 1},  {99, 1, 1}, {79, 1, 1},  {100, 2, 1},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        noodle_monitor_set_replication_lag(mon, steps[i].lag);
        noodle_monitor_evaluate(mon);
        noodle_monitor_evaluate(mon); /* evaluating again changes nothing */
        if (a.raised[lag] != steps[i].raised || a.cleared[lag] != steps[i].cleared)
            fail_msg("after lag %g: raised %d cleared %d, want %d %d", steps[i].lag,
                     a.raised[lag], a.cleared[lag], steps[i].raised, steps[i].cleared);
        assert_int_equal(noodle_monitor_alert_active(mon, NOODLE_ALERT_REPLICATION_LAG),
                         a.raised[lag] > a.cleared[lag]);
    }
    noodle_monitor_set_replication_lag(mon, -1); /* unknown: the alert keeps its state */
    noodle_monitor_evaluate(mon);
    assert_true(noodle_monitor_alert_active(mon, NOODLE_ALERT_REPLICATION_LAG));
    assert_int_equal(count_lines_with(log, "alert replication_lag raised"), 2);
    assert_int_equal(count_lines_with(log, "alert replication_lag cleared"), 1);
    fclose(log);
    noodle_monitor_close(mon);
}

static void latency_and_error_rate_alerts_follow_the_statements_since_the_last_evaluation(void **state) {
    (void)state;
    alert_log a = {0};
    noodle_monitor_options o = NOODLE_MONITOR_OPTIONS_INIT;
    o.p99_latency_ms = 1;  /* clears below 0.8 ms */
    o.error_rate = 0.5;    /* clears below 0.4 */
    o.on_alert = on_alert;
    o.alert_arg = &a;
    o.no_log = true;
    noodle_monitor *mon = open_monitor(&o);
    for (int i = 0; i < 100; i++) record(mon, "SELECT 1", NOODLE_MS(5), i < 60 ? 5001 : 0, 1);
    noodle_monitor_evaluate(mon);
    assert_int_equal(a.raised[NOODLE_ALERT_P99_LATENCY], 1);
    assert_int_equal(a.raised[NOODLE_ALERT_ERROR_RATE], 1);
    for (int i = 0; i < 100; i++) record(mon, "SELECT 1", 900000, i < 45 ? 5001 : 0, 1);
    noodle_monitor_evaluate(mon); /* 0.9 ms and 45 %: between the clear level and the threshold */
    assert_int_equal(a.cleared[NOODLE_ALERT_P99_LATENCY], 0);
    assert_int_equal(a.cleared[NOODLE_ALERT_ERROR_RATE], 0);
    noodle_monitor_evaluate(mon); /* no traffic: unknown, nothing changes */
    assert_true(noodle_monitor_alert_active(mon, NOODLE_ALERT_P99_LATENCY));
    for (int i = 0; i < 100; i++) record(mon, "SELECT 1", 300000, 0, 1);
    noodle_monitor_evaluate(mon);
    assert_int_equal(a.cleared[NOODLE_ALERT_P99_LATENCY], 1);
    assert_int_equal(a.cleared[NOODLE_ALERT_ERROR_RATE], 1);
    assert_int_equal(a.raised[NOODLE_ALERT_P99_LATENCY], 1);
    noodle_monitor_close(mon);
}

/* ---- exposition -------------------------------------------------------------------------------------- */

typedef struct prom_family {
    char name[128];
    bool histogram;
} prom_family;

/* The family a sample line belongs to, or NULL. */
static const prom_family *family_of(const prom_family *f, size_t n, const char *sample) {
    char name[128];
    size_t len = strcspn(sample, "{ ");
    if (len >= sizeof name) return NULL;
    memcpy(name, sample, len);
    name[len] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (strcmp(f[i].name, name) == 0) return &f[i];
        size_t fl = strlen(f[i].name);
        if (f[i].histogram && strncmp(name, f[i].name, fl) == 0 &&
            (!strcmp(name + fl, "_bucket") || !strcmp(name + fl, "_sum") || !strcmp(name + fl, "_count")))
            return &f[i];
    }
    return NULL;
}

/* Every sample has # HELP and # TYPE before it, each family once; every
 * histogram's buckets are cumulative and its _count equals its +Inf bucket.
 * Returns how many histogram series were checked. */
static int check_prometheus(char *text) {
    static prom_family fam[256];
    size_t nfam = 0;
    char help[128] = "";
    uint64_t prev_bucket = 0, inf = 0;
    bool in_buckets = false;
    int histograms = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char name[128], type[32];
        if (sscanf(line, "# HELP %127s", name) == 1) {
            strcpy(help, name);
            continue;
        }
        if (sscanf(line, "# TYPE %127s %31s", name, type) == 2) {
            if (strcmp(name, help) != 0) fail_msg("# TYPE %s without # HELP just before", name);
            for (size_t i = 0; i < nfam; i++)
                if (strcmp(fam[i].name, name) == 0) fail_msg("family %s declared twice", name);
            assert_true(nfam < 256);
            strcpy(fam[nfam].name, name);
            fam[nfam++].histogram = strcmp(type, "histogram") == 0;
            continue;
        }
        if (family_of(fam, nfam, line) == NULL) fail_msg("sample without HELP/TYPE: %s", line);
        const char *value = strrchr(line, ' ') + 1;
        uint64_t v = strtoull(value, NULL, 10);
        if (strstr(line, "_bucket{") != NULL) {
            if (in_buckets && v < prev_bucket) fail_msg("bucket count goes down: %s", line);
            prev_bucket = v;
            in_buckets = true;
            if (strstr(line, "le=\"+Inf\"") != NULL) inf = v;
        } else {
            in_buckets = false;
        }
        if (strstr(line, "_count") != NULL && strcspn(line, "{ ") > 6 &&
            strncmp(line + strcspn(line, "{ ") - 6, "_count", 6) == 0) {
            if (v != inf) fail_msg("_count %" PRIu64 " != +Inf bucket %" PRIu64 ": %s", v, inf, line);
            histograms++;
        }
    }
    return histograms;
}

static void prometheus_output_declares_every_family_and_histograms_are_cumulative(void **state) {
    (void)state;
    noodle_monitor *mon = open_default();
    for (int i = 0; i < 1000; i++) record(mon, "SELECT a FROM t WHERE id = 1", 500 + i * 997, 0, 1);
    record(mon, "SELECT \"we\"\"ird\\\" FROM t", 1500, NOODLE_E_QUERY_CONSTRAINT, -1);
    char *out = NULL;
    size_t len = 0;
    noodle_error err;
    assert_ok(noodle_monitor_prometheus(mon, &out, &len, &err), &err);
    assert_int_equal(strlen(out), len);
    /* the label escapes the quotes and the backslash of the quoted identifier */
    assert_non_null(strstr(out, "query=\"SELECT \\\"we\\\"\\\"ird\\\\\\\" FROM t\""));
    assert_non_null(strstr(out, "noodle_monitor_queries_total 1001\n"));
    assert_non_null(strstr(out, "noodle_errors_total{source=\"query\",code=\"5002\","));
    assert_non_null(strstr(out, "noodle_query_duration_seconds_count{queryid="));
    assert_non_null(strstr(out, "# TYPE noodle_alert_active gauge"));
    int histograms = check_prometheus(out);
    assert_true(histograms >= 3); /* the global one and one per fingerprint */
    free(out);
    noodle_monitor_close(mon);
}

/* A small JSON validator (RFC 8259 grammar). */
static const char *json_value(const char *p);
static const char *json_ws(const char *p) {
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
    return p;
}
static const char *json_string(const char *p) {
    if (*p++ != '"') return NULL;
    for (; *p != '"'; p++) {
        if ((unsigned char)*p < 0x20) return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || p[i] == '\0') return NULL;
                p += 4;
            } else if (!strchr("\"\\/bfnrt", *p) || *p == '\0') {
                return NULL;
            }
        }
    }
    return p + 1;
}
static const char *json_number(const char *p) {
    char *end;
    strtod(p, &end);
    return end == p || strchr("-0123456789", *p) == NULL ? NULL : end;
}
static const char *json_members(const char *p, char close, bool keys) {
    p = json_ws(p + 1);
    if (*p == close) return p + 1;
    for (;;) {
        if (keys) {
            if ((p = json_string(json_ws(p))) == NULL) return NULL;
            p = json_ws(p);
            if (*p++ != ':') return NULL;
        }
        if ((p = json_value(p)) == NULL) return NULL;
        p = json_ws(p);
        if (*p == close) return p + 1;
        if (*p++ != ',') return NULL;
    }
}
static const char *json_value(const char *p) {
    p = json_ws(p);
    if (*p == '{') return json_members(p, '}', true);
    if (*p == '[') return json_members(p, ']', false);
    if (*p == '"') return json_string(p);
    if (!strncmp(p, "true", 4) || !strncmp(p, "null", 4)) return p + 4;
    if (!strncmp(p, "false", 5)) return p + 5;
    return json_number(p);
}

static void json_output_is_well_formed_and_has_every_section(void **state) {
    (void)state;
    noodle_monitor_options o = NOODLE_MONITOR_OPTIONS_INIT;
    o.slow_query_ms = 1;
    o.no_log = true;
    noodle_monitor *mon = open_monitor(&o);
    record(mon, "SELECT 'tab\there' FROM \"q\"\"uote\\\"", NOODLE_MS(2), 0, 1);
    record(mon, "SELECT \"\xff\xfe bad utf8\" FROM t", 100, 0, 1);
    noodle_monitor_set_replication_lag(mon, 12.5);
    noodle_error err;
    assert_ok(noodle_monitor_sample_now(mon, &err), &err);
    char *out = NULL;
    size_t len = 0;
    assert_ok(noodle_monitor_json(mon, &out, &len, &err), &err);
    const char *end = json_value(out);
    if (end == NULL || *json_ws(end) != '\0') fail_msg("not well-formed JSON:\n%s", out);
    static const char *const keys[] = {"\"monitor\":", "\"queries\":", "\"errors\":",
                                       "\"transactions\":", "\"pools\":", "\"clusters\":",
                                       "\"system\":", "\"alerts\":", "\"slow_queries\":",
                                       "\"replication_lag_ms\":12.5", "\"rss_bytes\":"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strstr(out, keys[i]) == NULL) fail_msg("JSON lacks %s:\n%s", keys[i], out);
    assert_null(strstr(out, "\"rss_bytes\":null")); /* measured on Linux */
    free(out);
    noodle_monitor_close(mon);
}

/* ---- pools, db and transactions ------------------------------------------------------------------- */

static noodle_pool *open_sqlite_pool(int64_t max_connections, int64_t timeout_ms) {
    noodle_config_options o = NOODLE_CONFIG_OPTIONS_INIT;
    o.backend = "sqlite";
    o.url = ":memory:";
    o.max_connections = max_connections;
    o.min_idle = 0;
    o.timeout_ms = timeout_ms;
    noodle_config cfg;
    noodle_test_config_load(&cfg, &o);
    noodle_pool_options po = NOODLE_POOL_OPTIONS_INIT;
    po.config = &cfg;
    noodle_pool *p = NULL;
    noodle_error err;
    int rc = noodle_pool_open(&po, &p, &err);
    noodle_config_free(&cfg);
    assert_ok(rc, &err);
    return p;
}

static void expect_line(const char *text, const char *fmt, ...) NOODLE_PRINTF(2, 3);
static void expect_line(const char *text, const char *fmt, ...) {
    char want[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    if (strstr(text, want) == NULL) fail_msg("output lacks \"%s\":\n%s", want, text);
}

static void pool_metrics_match_the_pools_own_counters_after_acquires_and_a_timeout(void **state) {
    (void)state;
    noodle_pool *pool = open_sqlite_pool(2, 50);
    noodle_monitor *mon = open_default();
    noodle_error err;
    assert_ok(noodle_monitor_watch_pool(mon, pool, "main", &err), &err);
    assert_code(noodle_monitor_watch_pool(mon, pool, "again", &err), &err,
                NOODLE_E_MONITOR_INVALID_ARGUMENT);
    noodle_conn *a = NULL, *b = NULL, *c = NULL;
    assert_ok(noodle_pool_acquire(pool, &a, &err), &err);
    assert_ok(noodle_pool_acquire(pool, &b, &err), &err);
    assert_code(noodle_pool_acquire(pool, &c, &err), &err, NOODLE_E_POOL_TIMEOUT);
    char *out = NULL;
    assert_ok(noodle_monitor_prometheus(mon, &out, NULL, &err), &err);
    expect_line(out, "noodle_pool_active_connections{pool=\"main\"} 2\n");
    expect_line(out, "noodle_pool_connections{pool=\"main\"} 2\n");
    free(out);
    noodle_pool_release(pool, &a);
    noodle_pool_release(pool, &b);
    for (int i = 0; i < 5; i++) {
        assert_ok(noodle_pool_acquire(pool, &a, &err), &err);
        noodle_pool_release(pool, &a);
    }
    noodle_pool_metrics pm;
    noodle_pool_get_metrics(pool, &pm);
    assert_int_equal(pm.acquired, 7);
    assert_int_equal(pm.timeouts, 1);
    assert_ok(noodle_monitor_prometheus(mon, &out, NULL, &err), &err);
    expect_line(out, "noodle_pool_acquired_total{pool=\"main\"} %" PRIu64 "\n", pm.acquired);
    expect_line(out, "noodle_pool_timeouts_total{pool=\"main\"} %" PRIu64 "\n", pm.timeouts);
    expect_line(out, "noodle_pool_opened_total{pool=\"main\"} %" PRIu64 "\n", pm.opened);
    expect_line(out, "noodle_pool_active_connections{pool=\"main\"} 0\n");
    expect_line(out, "noodle_pool_idle_connections{pool=\"main\"} %" PRId64 "\n", pm.idle);
    expect_line(out, "noodle_pool_waiting_acquires{pool=\"main\"} 0\n");
    expect_line(out, "noodle_pool_validation_failures_total{pool=\"main\"} 0\n");
    expect_line(out, "noodle_pool_acquire_wait_seconds_count{pool=\"main\"} %" PRIu64 "\n",
                pm.acquire_wait.count);
    /* the timeout also arrived as an event: counted by code */
    expect_line(out, "noodle_errors_total{source=\"pool\",code=\"2002\",name=\"POOL_TIMEOUT\"} 1\n");
    free(out);
    noodle_pool_close(pool); /* its SHUTDOWN event detaches it; the monitor outlives it */
    assert_ok(noodle_monitor_prometheus(mon, &out, NULL, &err), &err);
    expect_line(out, "noodle_pool_acquired_total{pool=\"main\"} 7\n");
    free(out);
    noodle_monitor_close(mon);
}

static int insert_one(noodle_txn *txn, void *arg, noodle_error *err) {
    (void)arg;
    noodle_value v = noodle_int64(1);
    noodle_rows *rows = NULL;
    int rc = noodle_txn_execute(txn, "INSERT INTO kv (k) VALUES (?)", &v, 1, &rows, err);
    noodle_rows_free(rows);
    return rc;
}

/* A monitor watching a db over a pool of one SQLite :memory: connection
 * (acquire timeout 60 s), timing one statement in time_every, logging
 * statements of slow_ms or more. */
static noodle_monitor *watched_db(unsigned time_every, int64_t slow_ms, noodle_pool **pool,
                                  noodle_db **db) {
    *pool = open_sqlite_pool(1, 60000);
    noodle_db_options dbo = NOODLE_DB_OPTIONS_INIT;
    dbo.pool = *pool;
    noodle_error err;
    assert_ok(noodle_db_open(&dbo, db, &err), &err);
    noodle_monitor_options o = NOODLE_MONITOR_OPTIONS_INIT;
    o.no_log = true;
    o.timing_sample_every = time_every;
    o.slow_query_ms = slow_ms;
    noodle_monitor *mon = open_monitor(&o);
    assert_ok(noodle_monitor_watch_db(mon, *db, &err), &err);
    return mon;
}

static void statements_and_transactions_of_a_watched_db_are_recorded(void **state) {
    (void)state;
    noodle_pool *pool;
    noodle_db *db;
    noodle_error err;
    noodle_monitor *mon = watched_db(1, 0, &pool, &db); /* every statement timed: exact totals */
    assert_ok(noodle_db_exec(db, NULL, "CREATE TABLE kv (k INTEGER)", NULL, 0, NULL, &err), &err);
    for (int i = 0; i < 3; i++) {
        noodle_value v = noodle_int64(i);
        assert_ok(noodle_db_exec(db, NULL, "INSERT INTO kv (k) VALUES (?)", &v, 1, NULL, &err), &err);
    }
    assert_code(noodle_db_exec(db, NULL, "INSERT INTO nowhere VALUES (1)", NULL, 0, NULL, &err),
                &err, NOODLE_E_QUERY_SYNTAX);
    noodle_txn_options to = NOODLE_TXN_OPTIONS_INIT;
    to.observer = noodle_monitor_txn_observer;
    to.observer_arg = mon;
    assert_ok(noodle_txn_run(pool, &to, insert_one, NULL, &err), &err);
    noodle_monitor_query_stat st = stats_of(mon, "insert into kv (k) values ($1)");
    assert_int_equal(st.calls, 3);
    assert_int_equal(st.timed_calls, 3);
    assert_int_equal(st.errors, 0);
    assert_int_equal(st.rows, 3);
    assert_true(st.total_ns > 0);
    assert_int_equal(st.total_ns, (int64_t)st.latency.sum_us);
    assert_int_equal(stats_of(mon, "INSERT INTO nowhere VALUES (?)").errors, 1);
    noodle_monitor_metrics m;
    noodle_monitor_get_metrics(mon, &m);
    assert_int_equal(m.queries, 5); /* the statement inside the transaction is not run by db */
    assert_int_equal(m.query_errors, 1);
    assert_int_equal(m.transactions, 1);
    assert_int_equal(m.txn_failures, 0);
    noodle_db_close(db);
    noodle_pool_close(pool);
    noodle_monitor_close(mon);
}

/* With timing_sample_every = 4, one statement in four is timed: every call
 * is still counted, the total is estimated from the timed ones, and a slow
 * call that was not timed precisely still reaches the slow log. */
static void sampled_timing_counts_every_call_and_still_logs_slow_ones(void **state) {
    (void)state;
    noodle_pool *pool;
    noodle_db *db;
    noodle_error err;
    noodle_monitor *mon = watched_db(4, 50, &pool, &db);
    for (int i = 0; i < 40; i++) {
        noodle_rows *r = NULL;
        noodle_value v = noodle_int64(i);
        assert_ok(noodle_db_query(db, NULL, "SELECT ? + 1", &v, 1, &r, &err), &err);
        noodle_rows_free(r);
    }
    noodle_monitor_query_stat st = stats_of(mon, "SELECT ? + 1");
    assert_int_equal(st.calls, 40);
    assert_int_equal(st.timed_calls, 10); /* 40 calls: 10 timed whatever the phase */
    assert_int_equal(st.latency.count, 10);
    assert_true(st.total_ns >= (int64_t)st.latency.sum_us * 3); /* estimated for all 40 */
    /* four runs of a statement slower than 50 ms: at most one of them is
     * timed precisely, and all four are logged from their coarse duration */
    const char *slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                       "WHERE x < 1000000) SELECT count(*) FROM c";
    for (int i = 0; i < 4; i++) {
        noodle_rows *r = NULL;
        assert_ok(noodle_db_query(db, NULL, slow, NULL, 0, &r, &err), &err);
        noodle_rows_free(r);
    }
    noodle_monitor_slow_query q[8];
    size_t n = 0;
    noodle_monitor_slow_queries(mon, q, 8, &n);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) assert_true(q[i].duration_ns >= NOODLE_MS(40));
    st = stats_of(mon, slow);
    assert_int_equal(st.calls, 4);
    assert_true(st.max_ns >= NOODLE_MS(40));
    noodle_db_close(db);
    noodle_pool_close(pool);
    noodle_monitor_close(mon);
}

/* ---- clusters ---------------------------------------------------------------------------------------- */

static noodle_cluster_metrics cluster_metrics(noodle_cluster *cl) {
    noodle_cluster_metrics m;
    noodle_cluster_get_metrics(cl, &m);
    return m;
}

/* A failover of a watched cluster (mock nodes: the primary crashes, the
 * standby is promoted) is counted once, with its time, in the metrics and
 * in both expositions; the node pools are shown per node. */
static void a_watched_clusters_failover_is_counted_with_its_time(void **state) {
    (void)state;
    noodle_error err;
    const char *a = "mon_primary", *b = "mon_standby";
    assert_ok(noodle_mock_node_create(a, &err), &err);
    assert_ok(noodle_mock_node_create(b, &err), &err);
    assert_ok(noodle_mock_node_set_role(b, NOODLE_ROLE_STANDBY, &err), &err);
    const char *const nodes[] = {a, b};
    noodle_cluster *cl = noodle_test_mock_cluster(nodes, 2, false);
    noodle_monitor *mon = open_default();
    assert_ok(noodle_monitor_watch_cluster(mon, cl, &err), &err);
    WAIT_FOR(cluster_metrics(cl).primary == 0, 3000);
    assert_int_equal(cluster_metrics(cl).primary, 0);
    noodle_monitor_metrics m;
    noodle_monitor_get_metrics(mon, &m);
    assert_int_equal(m.failovers, 0);
    assert_int_equal(m.last_failover_at, 0);

    assert_ok(noodle_mock_node_crash(a, &err), &err);
    WAIT_FOR(cluster_metrics(cl).primary == -1, 3000);
    assert_ok(noodle_mock_node_set_role(b, NOODLE_ROLE_PRIMARY, &err), &err);
    WAIT_FOR(cluster_metrics(cl).primary == 1, 3000);
    assert_int_equal(cluster_metrics(cl).primary, 1);
    WAIT_FOR((noodle_monitor_get_metrics(mon, &m), m.failovers == 1), 3000);
    assert_int_equal(m.failovers, 1);
    assert_true(m.last_failover_at > 0);
    assert_int_equal(cluster_metrics(cl).failovers, 1); /* the cluster's own count agrees */

    char *text = NULL;
    size_t len = 0;
    assert_ok(noodle_monitor_prometheus(mon, &text, &len, &err), &err);
    assert_non_null(strstr(text, "noodle_cluster_failovers_total{cluster=\"cluster0\"} 1\n"));
    assert_non_null(strstr(text, "pool=\"cluster0/node1\""));
    free(text);
    assert_ok(noodle_monitor_json(mon, &text, &len, &err), &err);
    assert_non_null(strstr(text, "\"failovers\":1"));
    free(text);
    /* closed while watched (no unwatch): the monitor stops reading it at its
     * CLOSING event and keeps the last snapshot (asan would catch a read of
     * the freed cluster) */
    noodle_cluster_close(cl);
    int sampled = noodle_monitor_sample_now(mon, &err); /* 6064: a /proc file unreadable here */
    assert_true(sampled == 0 || sampled == NOODLE_E_MONITOR_SAMPLE_FAILED);
    noodle_monitor_evaluate(mon);
    assert_ok(noodle_monitor_prometheus(mon, &text, &len, &err), &err);
    assert_non_null(strstr(text, "noodle_cluster_failovers_total{cluster=\"cluster0\"} 1\n"));
    free(text);
    noodle_monitor_close(mon);
}

/* ---- threads ------------------------------------------------------------------------------------------ */

#define THREADS 8
#define PER_THREAD 40000

static noodle_monitor *shared_mon;

static void *recorder(void *arg) {
    int id = (int)(intptr_t)arg;
    static const char *const texts[] = {"SELECT a FROM t WHERE id = ?", "UPDATE t SET a = ? WHERE id = ?",
                                        "INSERT INTO t (a) VALUES (?)", "DELETE FROM t WHERE id = ?"};
    char distinct[96];
    for (int i = 0; i < PER_THREAD; i++) {
        if (i % 1000 == 999) { /* new fingerprints now and then: the locked path and evictions */
            snprintf(distinct, sizeof distinct, "SELECT x FROM thread%d_table%d", id, i);
            record(shared_mon, distinct, 1000, 0, 1);
        } else {
            record(shared_mon, texts[i % 4], 100 + i % 50, i % 10 == 0 ? NOODLE_E_QUERY_CONSTRAINT : 0, 1);
        }
        if (i % 5000 == 0) noodle_monitor_memory_bytes(shared_mon); /* readers meanwhile */
    }
    noodle_txn_event ev = {.code = id == 0 ? NOODLE_E_OUTCOME_UNKNOWN : 0, .attempts = 2, .duration_ns = 5};
    noodle_monitor_txn_observer(&ev, shared_mon);
    return NULL;
}

static void totals_from_eight_recording_threads_are_exact(void **state) {
    (void)state;
    noodle_monitor_options o = NOODLE_MONITOR_OPTIONS_INIT;
    o.max_fingerprints = 64;
    o.thread_ring_events = 64; /* drains often */
    o.no_log = true;
    shared_mon = open_monitor(&o);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, recorder, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 50; i++) { /* a reader while they run */
        char *out = NULL;
        noodle_error err;
        assert_ok(noodle_monitor_prometheus(shared_mon, &out, NULL, &err), &err);
        free(out);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    noodle_monitor_metrics m;
    noodle_monitor_get_metrics(shared_mon, &m);
    uint64_t distinct = PER_THREAD / 1000; /* per thread */
    assert_int_equal(m.queries, (uint64_t)THREADS * PER_THREAD);
    assert_int_equal(m.query_errors, (uint64_t)THREADS * (PER_THREAD / 10));
    /* the four common fingerprints are the most used: never evicted, so
     * every one of their calls is in their own statistics */
    noodle_monitor_query_stat sel = stats_of(shared_mon, "SELECT a FROM t WHERE id = 1");
    assert_int_equal(sel.calls, (uint64_t)THREADS * PER_THREAD / 4);
    assert_int_equal(sel.errors, (uint64_t)THREADS * PER_THREAD / 20);
    uint64_t common = sel.calls + stats_of(shared_mon, "UPDATE t SET a = 1 WHERE id = 2").calls +
                      stats_of(shared_mon, "INSERT INTO t (a) VALUES (3)").calls +
                      stats_of(shared_mon, "DELETE FROM t WHERE id = 4").calls;
    assert_int_equal(common, (uint64_t)THREADS * (PER_THREAD - distinct));
    assert_int_equal(m.transactions, THREADS);
    assert_int_equal(m.txn_retries, THREADS);
    assert_int_equal(m.txn_failures, 1);
    assert_int_equal(m.txn_outcome_unknown, 1);
    assert_true(m.fingerprints <= 64);
    noodle_monitor_close(shared_mon);
}

/* ---- sampler and options ---------------------------------------------------------------------------------- */

static void the_sampler_thread_measures_the_system_and_its_own_cost(void **state) {
    (void)state;
    noodle_monitor_options o = NOODLE_MONITOR_OPTIONS_INIT;
    o.sample_interval_ms = 20;
    o.disk_path = "/";
    o.no_log = true;
    noodle_monitor *mon = NULL;
    noodle_error err;
    assert_ok(noodle_monitor_open(&o, &mon, &err), &err);
    noodle_monitor_metrics m;
    int64_t end = noodle_test_now_ms() + 10000;
    do {
        noodle_test_sleep_ms(5);
        noodle_monitor_get_metrics(mon, &m);
    } while (m.samples < 3 && noodle_test_now_ms() < end);
    assert_true(m.samples >= 3);
    assert_true(m.sample_cost_ns > 0);
    char *out = NULL;
    assert_ok(noodle_monitor_prometheus(mon, &out, NULL, &err), &err);
    assert_null(strstr(out, "noodle_process_resident_memory_bytes NaN"));
    assert_null(strstr(out, "noodle_disk_total_bytes NaN"));
    assert_null(strstr(out, "noodle_monitor_sample_cost_seconds NaN"));
    free(out);
    noodle_monitor_close(mon);
}

static void bad_options_and_arguments_fail_with_monitor_codes(void **state) {
    (void)state;
    noodle_monitor *mon = (noodle_monitor *)&mon;
    noodle_error err;
    noodle_monitor_options o = NOODLE_MONITOR_OPTIONS_INIT;
    o.struct_size = 8;
    assert_code(noodle_monitor_open(&o, &mon, &err), &err, NOODLE_E_MONITOR_INVALID_ARGUMENT);
    assert_null(mon);
    o = (noodle_monitor_options)NOODLE_MONITOR_OPTIONS_INIT;
    o.clear_ratio = 1.5;
    assert_code(noodle_monitor_open(&o, &mon, &err), &err, NOODLE_E_MONITOR_INVALID_ARGUMENT);
    o = (noodle_monitor_options)NOODLE_MONITOR_OPTIONS_INIT;
    o.error_rate = -1;
    assert_code(noodle_monitor_open(&o, &mon, &err), &err, NOODLE_E_MONITOR_INVALID_ARGUMENT);
    mon = open_default();
    assert_code(noodle_monitor_watch_pool(mon, NULL, "x", &err), &err, NOODLE_E_MONITOR_INVALID_ARGUMENT);
    assert_code(noodle_monitor_prometheus(mon, NULL, NULL, &err), &err, NOODLE_E_MONITOR_INVALID_ARGUMENT);
    noodle_monitor_record_query(NULL, "SELECT 1", 8, 1, 0, 0); /* ignored */
    noodle_monitor_close(mon);
    noodle_monitor_close(NULL);
}

int main(void) {
    if (noodle_test_mock_init() != 0) return 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fingerprints_fold_literals_placeholders_lists_comments_space_and_case),
        cmocka_unit_test(records_give_calls_errors_rows_total_max_and_histogram),
        cmocka_unit_test(texts_differing_in_any_one_byte_are_counted_apart),
        cmocka_unit_test(the_fingerprint_cap_evicts_the_least_used_and_memory_stays_bounded),
        cmocka_unit_test(the_slow_query_log_keeps_the_last_n_slow_calls_oldest_first),
        cmocka_unit_test(an_alert_is_raised_once_cleared_once_below_the_clear_level_and_never_flaps),
        cmocka_unit_test(latency_and_error_rate_alerts_follow_the_statements_since_the_last_evaluation),
        cmocka_unit_test(prometheus_output_declares_every_family_and_histograms_are_cumulative),
        cmocka_unit_test(json_output_is_well_formed_and_has_every_section),
        cmocka_unit_test(pool_metrics_match_the_pools_own_counters_after_acquires_and_a_timeout),
        cmocka_unit_test(statements_and_transactions_of_a_watched_db_are_recorded),
        cmocka_unit_test(sampled_timing_counts_every_call_and_still_logs_slow_ones),
        cmocka_unit_test(a_watched_clusters_failover_is_counted_with_its_time),
        cmocka_unit_test(totals_from_eight_recording_threads_are_exact),
        cmocka_unit_test(the_sampler_thread_measures_the_system_and_its_own_cost),
        cmocka_unit_test(bad_options_and_arguments_fail_with_monitor_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
