/* noodle-harness metrics: run a workload on the whole stack (pool, db,
 * transactions) with the performance monitor watching it, then print the
 * monitor's exposition (Prometheus text or JSON).
 *
 * The workload is the statements of --sql FILE (one per line; blank lines
 * and lines starting with "--" skipped) or of --query SQL (repeatable), each
 * run --repeat times by each of --threads threads; every --txn-every-th
 * round runs as one transaction through noodle_txn_run. A failing statement
 * is counted by the monitor, not fatal. With no statement the workload is
 * "SELECT 1".
 */
#include "metrics_cmd.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "noodle/monitor.h"
#include "noodle/noodle.h"

#define MAX_STATEMENTS 64

typedef struct workload {
    const char *sql[MAX_STATEMENTS];
    size_t n;
    long repeat, threads, txn_every;
    bool json;
    noodle_pool *pool;
    noodle_db *db;
    noodle_monitor *mon;
} workload;

static int usage(noodle_error *err, const char *what, const char *arg) {
    return NOODLE_ERR(err, NOODLE_E_HARNESS_USAGE, "metrics: %s%s%s%s", what, arg ? " '" : "",
                      arg ? arg : "", arg ? "'" : "");
}

/* Add the statements of path; its lines are kept for the whole run. */
static int read_sql_file(workload *w, const char *path, noodle_error *err) {
    FILE *f = fopen(path, "r");
    if (f == NULL) return usage(err, "cannot read the --sql file", path);
    char line[4096];
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
        size_t len = strcspn(line, "\r\n");
        line[len] = '\0';
        if (len == 0 || strncmp(line, "--", 2) == 0) continue;
        if (w->n == MAX_STATEMENTS) rc = usage(err, "more than 64 statements in", path);
        else if ((w->sql[w->n] = strdup(line)) == NULL) rc = usage(err, "out of memory", NULL);
        else w->n++;
    }
    fclose(f);
    return rc;
}

static int parse_count(const char *flag, const char *v, long lo, long *out, noodle_error *err) {
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n < lo)
        return NOODLE_ERR(err, NOODLE_E_HARNESS_USAGE,
                          "metrics: %s needs a whole number >= %ld, got '%s'", flag, lo, v);
    *out = n;
    return 0;
}

static int parse_args(int argc, char **argv, noodle_config_options *co, workload *w,
                      noodle_error *err) {
    int rc = 0;
    for (int i = 0; i < argc && rc == 0; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) w->json = true;
        else if (strcmp(a, "--prometheus") == 0) w->json = false;
        else if (v == NULL) rc = usage(err, "unexpected argument", a);
        else if (strcmp(a, "--url") == 0) co->url = argv[++i];
        else if (strcmp(a, "--backend") == 0) co->backend = argv[++i];
        else if (strcmp(a, "--sql") == 0) rc = read_sql_file(w, argv[++i], err);
        else if (strcmp(a, "--query") == 0) {
            if (w->n == MAX_STATEMENTS) rc = usage(err, "more than 64 statements", NULL);
            else w->sql[w->n++] = strdup(argv[++i]);
            if (rc == 0 && w->sql[w->n - 1] == NULL) rc = usage(err, "out of memory", NULL);
        } else if (strcmp(a, "--repeat") == 0) rc = parse_count(a, argv[++i], 1, &w->repeat, err);
        else if (strcmp(a, "--threads") == 0) {
            rc = parse_count(a, argv[++i], 1, &w->threads, err);
            if (rc == 0 && w->threads > 64) rc = usage(err, "--threads is at most 64, got", argv[i]);
        } else if (strcmp(a, "--txn-every") == 0) rc = parse_count(a, argv[++i], 0, &w->txn_every, err);
        else rc = usage(err, "unexpected argument", a);
    }
    if (rc == 0 && co->url == NULL) rc = usage(err, "--url URL is required", NULL);
    if (rc == 0 && w->n == 0 && (w->sql[w->n++] = strdup("SELECT 1")) == NULL)
        rc = usage(err, "out of memory", NULL);
    return rc;
}

/* One round's statements inside a transaction (noodle_txn_run's fn). */
static int round_in_txn(noodle_txn *txn, void *arg, noodle_error *err) {
    workload *w = arg;
    for (size_t i = 0; i < w->n; i++) {
        noodle_rows *r = NULL;
        int rc = noodle_db_query(w->db, txn, w->sql[i], NULL, 0, &r, err);
        noodle_rows_free(r);
        if (rc != 0) return rc;
    }
    return 0;
}

static void *run_thread(void *arg) {
    workload *w = arg;
    noodle_txn_options to = NOODLE_TXN_OPTIONS_INIT;
    to.observer = noodle_monitor_txn_observer;
    to.observer_arg = w->mon;
    for (long round = 1; round <= w->repeat; round++) {
        noodle_error err;
        if (w->txn_every > 0 && round % w->txn_every == 0) {
            int failed = noodle_txn_run(w->pool, &to, round_in_txn, w, &err);
            (void)failed; /* the monitor counts it */
            continue;
        }
        for (size_t i = 0; i < w->n; i++) {
            noodle_rows *r = NULL;
            int failed = noodle_db_query(w->db, NULL, w->sql[i], NULL, 0, &r, &err);
            (void)failed; /* the monitor counts it */
            noodle_rows_free(r);
        }
    }
    return NULL;
}

/* Open the stack with the monitor watching it, run the workload, print. */
static int run_workload(workload *w, const noodle_config *cfg, noodle_error *err) {
    noodle_pool_options po = NOODLE_POOL_OPTIONS_INIT;
    po.config = cfg;
    po.application_name = "noodle-harness metrics";
    noodle_monitor_options mo = NOODLE_MONITOR_OPTIONS_INIT;
    mo.no_log = true;
    noodle_db_options dbo = NOODLE_DB_OPTIONS_INIT;
    int rc = noodle_monitor_open(&mo, &w->mon, err);
    if (rc == 0) rc = noodle_pool_open(&po, &w->pool, err);
    if (rc == 0) rc = noodle_monitor_watch_pool(w->mon, w->pool, "main", err);
    dbo.pool = w->pool;
    if (rc == 0) rc = noodle_db_open(&dbo, &w->db, err);
    if (rc == 0) rc = noodle_monitor_watch_db(w->mon, w->db, err);
    pthread_t t[64];
    long started = 0;
    for (; rc == 0 && started < w->threads; started++)
        if (pthread_create(&t[started], NULL, run_thread, w) != 0)
            rc = usage(err, "could not start a workload thread", NULL);
    for (long i = 0; i < started; i++) pthread_join(t[i], NULL);
    noodle_error sample_err; /* an unreadable source shows as unknown */
    int unreadable = rc == 0 ? noodle_monitor_sample_now(w->mon, &sample_err) : 0;
    (void)unreadable;
    char *text = NULL;
    size_t len = 0;
    if (rc == 0)
        rc = w->json ? noodle_monitor_json(w->mon, &text, &len, err)
                     : noodle_monitor_prometheus(w->mon, &text, &len, err);
    if (rc == 0) fwrite(text, 1, len, stdout);
    if (rc == 0 && w->json) fputc('\n', stdout);
    free(text);
    noodle_db_close(w->db);
    noodle_pool_close(w->pool);
    noodle_monitor_close(w->mon);
    return rc;
}

int noodle_harness_metrics(int argc, char **argv, noodle_error *err) {
    noodle_config_options co = NOODLE_CONFIG_OPTIONS_INIT;
    workload w = {.repeat = 100, .threads = 1};
    int rc = parse_args(argc, argv, &co, &w, err);
    noodle_config cfg;
    if (rc == 0) rc = noodle_config_load(&cfg, NULL, &co, err);
    if (rc == 0) {
        rc = run_workload(&w, &cfg, err);
        noodle_config_free(&cfg);
    }
    for (size_t i = 0; i < w.n; i++) free((char *)w.sql[i]);
    return rc;
}
