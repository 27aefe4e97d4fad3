/* The performance monitor (STD-MONITOR, STD-POOL-METRICS).
 *
 * Fed only by events and public snapshots: the db's statement observer
 * (noodle_monitor_watch_db), noodle_txn_run's observer
 * (noodle_monitor_txn_observer), pool and cluster observers and their
 * noodle_*_get_metrics snapshots. It keeps, in memory bounded by its
 * options whatever arrives:
 *   - per-query statistics keyed by a normalised fingerprint (literals and
 *     parameter lists folded, like pg_stat_statements): calls, errors, rows,
 *     total and max time and a latency histogram, for at most
 *     max_fingerprints fingerprints (the least used are evicted and counted);
 *   - pool, cluster and transaction metrics, error counts by code;
 *   - system resources (process CPU, RSS, system memory, disk I/O, free
 *     space of disk_path's filesystem) sampled every sample_interval_ms by a
 *     sampler thread whose own cost is measured;
 *   - a slow-query log (a ring of the last slow_log_size slow calls);
 *   - alerts with hysteresis on p99 latency, error rate, pool utilisation,
 *     acquire wait and replication lag.
 * Exposition: Prometheus text format and JSON. See docs/monitor.md.
 *
 * Recording a statement whose text was seen before costs a few ns and takes
 * no lock: each thread keeps a cache from the text to its fingerprint and a
 * ring of pending events, drained in batches under the monitor's lock. Every
 * reader drains first, so what it reads includes every call recorded before.
 *
 * Thread-safe: every function may be called from any thread.
 *
 * Lifetime: observers cannot be removed, so the monitor must outlive every
 * pool, cluster and db it watches (close them first). A pool stops being
 * read at its SHUTDOWN event and a cluster at its CLOSING event, both sent
 * before they are freed, so closing a watched pool or cluster is safe even
 * while the sampler runs.
 */
#ifndef NOODLE_MONITOR_H
#define NOODLE_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "noodle/clock.h"
#include "noodle/cluster.h"
#include "noodle/db.h"
#include "noodle/error.h"
#include "noodle/export.h"
#include "noodle/pool.h"
#include "noodle/txn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct noodle_monitor noodle_monitor;

/* ---- alerts ---------------------------------------------------------------------------------- */

typedef enum noodle_alert_kind {
    NOODLE_ALERT_P99_LATENCY = 0, /* ms: p99 of the statements since the last evaluation */
    NOODLE_ALERT_ERROR_RATE,      /* fraction of those statements that failed, 0..1 */
    NOODLE_ALERT_POOL_UTILISATION,/* fraction: max over watched pools of active / max_connections */
    NOODLE_ALERT_ACQUIRE_WAIT,    /* ms: p99 acquire wait of watched pools since the last evaluation */
    NOODLE_ALERT_REPLICATION_LAG, /* ms: as set by noodle_monitor_set_replication_lag */
    NOODLE_ALERTS                 /* the number of kinds */
} noodle_alert_kind;
/* "p99_latency", "error_rate", "pool_utilisation", "acquire_wait", "replication_lag". */
NOODLE_API const char *noodle_alert_name(noodle_alert_kind k);

typedef struct noodle_alert_event {
    noodle_alert_kind kind;
    const char *name;     /* noodle_alert_name(kind) */
    bool raised;          /* true: raised; false: cleared */
    double value;         /* the value that crossed */
    double threshold;     /* raised at value >= threshold */
    double clear_level;   /* cleared at value < clear_level */
    int64_t time;         /* on the monitor's clock */
} noodle_alert_event;

/* Called once per transition, on the thread that evaluated (the sampler or
 * a caller of noodle_monitor_evaluate), with no monitor lock held. */
typedef void (*noodle_alert_fn)(const noodle_alert_event *ev, void *arg);

/* ---- creation ---------------------------------------------------------------------------------- */

typedef struct noodle_monitor_options {
    size_t struct_size;         /* sizeof(noodle_monitor_options) */
    const noodle_clock *clock;  /* NULL: the real clock */
    /* Distinct fingerprints kept (0: 1000); bytes of each fingerprint's
     * text kept (0: 512; longer texts are truncated, not confused: they are
     * told apart by a 64-bit hash of the whole text). */
    size_t max_fingerprints, fingerprint_text_max;
    /* Per recording thread: cached texts (0: 128, rounded up to a power of
     * two), longest text cached (0: 2048 bytes; longer texts take the locked
     * path on every call), pending events (0: 512, a power of two). At most
     * max_threads threads get a cache and a ring (0: 256); others record
     * under the lock. */
    size_t thread_cache_entries, thread_cache_text_max, thread_ring_events, max_threads;
    /* Statements at least this slow are logged (0: 1000 ms; negative: none);
     * the log keeps the last slow_log_size (0: 64) entries. */
    int64_t slow_query_ms;
    size_t slow_log_size;
    /* Sampler period; 0 or negative: no sampler thread (INIT: 10 s). */
    int64_t sample_interval_ms;
    /* The filesystem whose space is sampled (the SQLite file's directory or
     * the data directory); NULL: no disk figures. Copied. */
    const char *disk_path;
    /* Alert thresholds; 0: that alert is off. */
    double p99_latency_ms, error_rate, pool_utilisation, acquire_wait_ms, replication_lag_ms;
    /* An alert clears when its value drops below threshold * clear_ratio
     * (0: 0.8; must be in (0, 1]). */
    double clear_ratio;
    noodle_alert_fn on_alert;   /* may be NULL */
    void *alert_arg;
    /* Where alert transitions are logged (one line each); NULL: stderr. */
    FILE *log;
    bool no_log;                /* log nothing */
    /* Statements of watched dbs timed precisely: one in this many per
     * thread (1: every one). Every statement is counted (calls, errors,
     * rows); the latency histogram, total and p99 come from the timed ones;
     * every statement's coarse duration (a few ms of resolution) still
     * finds slow calls for the slow log and max. 0: every one where
     * durations read the TSC (the kernel's clocksource is "tsc": two reads
     * cost a few ns), else one in NOODLE_MONITOR_TIME_EVERY_SLOW_CLOCK (two
     * clock_gettime calls cost ~50 ns, 6 % of a SQLite point select). */
    unsigned timing_sample_every;
} noodle_monitor_options;

#define NOODLE_MONITOR_TIME_EVERY_SLOW_CLOCK 8

#define NOODLE_MONITOR_OPTIONS_INIT \
    {.struct_size = sizeof(noodle_monitor_options), .sample_interval_ms = 10000}

/* Create a monitor (and its sampler thread when sample_interval_ms > 0).
 * *out is NULL on failure: 6061 (bad option), 6062, 6063. */
NOODLE_API NOODLE_MUSTCHECK int noodle_monitor_open(const noodle_monitor_options *opts,
                                                    noodle_monitor **out, noodle_error *err);
/* Stop the sampler and free. Accepts NULL. See "Lifetime" above. */
NOODLE_API void noodle_monitor_close(noodle_monitor *mon);

/* ---- sources ------------------------------------------------------------------------------------ */

/* Watch a pool (its events, and its noodle_pool_get_metrics snapshot),
 * labelled name (copied; NULL: "pool<n>"). At most 16 pools and clusters
 * together (6065); 6061 when already watched. */
NOODLE_API NOODLE_MUSTCHECK int noodle_monitor_watch_pool(noodle_monitor *mon, noodle_pool *pool,
                                                          const char *name, noodle_error *err);
/* Watch a cluster: failovers (count, last time), demotions, nodes down,
 * breaker openings, and its nodes' pools through noodle_cluster_node. */
NOODLE_API NOODLE_MUSTCHECK int noodle_monitor_watch_cluster(noodle_monitor *mon,
                                                             noodle_cluster *cluster,
                                                             noodle_error *err);
/* Stop reading a watched pool's or cluster's snapshot (the last one read is
 * kept for exposition). Closing them does this by itself. Idempotent. */
NOODLE_API void noodle_monitor_unwatch(noodle_monitor *mon, const void *pool_or_cluster);
/* Record every statement of db (registers a db observer). */
NOODLE_API NOODLE_MUSTCHECK int noodle_monitor_watch_db(noodle_monitor *mon, noodle_db *db,
                                                        noodle_error *err);
/* A noodle_txn_options observer: set opts.observer to this and
 * opts.observer_arg to the monitor. */
NOODLE_API void noodle_monitor_txn_observer(const noodle_txn_event *ev, void *mon);

/* Record one statement: its text (borrowed for the call), how long it took,
 * 0 or its failure code, rows returned or changed (-1: unknown). What the db
 * observer calls; other feeders may call it too. */
NOODLE_API void noodle_monitor_record_query(noodle_monitor *mon, const char *sql, size_t sql_len,
                                            int64_t duration_ns, int code, int64_t rows);

/* Replication lag in ms as measured by the caller (e.g. from
 * pg_stat_replication); negative: unknown. */
NOODLE_API void noodle_monitor_set_replication_lag(noodle_monitor *mon, double lag_ms);

/* ---- fingerprints ---------------------------------------------------------------------------------- */

/* Normalise sql (len bytes) into buf (at most cap bytes, NUL-terminated when
 * cap > 0): comments removed, whitespace collapsed, keywords upper-case and
 * other unquoted words lower-case, numeric and string literals and
 * placeholders ($1, ?, ?1, :name, @name) replaced by ?, IN (?, ?, ...) folded
 * to IN (?) and VALUES (...), (...) to its first row. Returns the length of
 * the whole normalised text, like snprintf. */
NOODLE_API size_t noodle_monitor_fingerprint(const char *sql, size_t len, char *buf, size_t cap);

/* ---- reading ---------------------------------------------------------------------------------------- */

#define NOODLE_MONITOR_TEXT_MAX 256 /* bytes of a fingerprint in a stat or slow-log entry */

typedef struct noodle_monitor_query_stat {
    char fingerprint[NOODLE_MONITOR_TEXT_MAX]; /* truncated */
    uint64_t id;                /* 64-bit hash of the whole fingerprint */
    uint64_t calls, errors;     /* every call */
    uint64_t timed_calls;       /* calls timed precisely (see timing_sample_every) */
    int64_t rows;               /* sum of the calls' known row counts */
    /* Total time: exact when every call was timed, else the timed calls'
     * mean times calls. Max: the slowest timed call, or a slower call the
     * coarse clock saw (slow_query_ms or more). */
    int64_t total_ns, max_ns;
    noodle_histogram latency;   /* of the timed calls, in ns (the buckets of pool.h, unit ns) */
} noodle_monitor_query_stat;

/* The statistics of sql's fingerprint (sql is normalised first). 6061 when
 * that fingerprint is not (or no longer) kept. */
NOODLE_API NOODLE_MUSTCHECK int noodle_monitor_query_stats(noodle_monitor *mon, const char *sql,
                                                           size_t sql_len,
                                                           noodle_monitor_query_stat *out,
                                                           noodle_error *err);

typedef struct noodle_monitor_metrics {
    uint64_t queries, query_errors;
    uint64_t dropped;           /* events of a fingerprint evicted before they were counted */
    uint64_t evictions;         /* fingerprints evicted */
    size_t fingerprints;        /* kept now */
    uint64_t transactions, txn_failures, txn_retries, txn_outcome_unknown;
    uint64_t failovers;         /* from cluster events */
    int64_t last_failover_at;   /* monitor clock; 0: never */
    uint64_t slow_queries;      /* logged since open (the ring keeps the last ones) */
    uint64_t samples;           /* system samples taken */
    int64_t sample_cost_ns;     /* the last sample's cost; -1: none yet */
    size_t memory_bytes;        /* as noodle_monitor_memory_bytes */
    bool alert_active[NOODLE_ALERTS];
} noodle_monitor_metrics;

NOODLE_API void noodle_monitor_get_metrics(noodle_monitor *mon, noodle_monitor_metrics *out);

/* Every byte the monitor holds: its tables, per-thread caches and rings,
 * cached texts, the slow log. */
NOODLE_API size_t noodle_monitor_memory_bytes(noodle_monitor *mon);

typedef struct noodle_monitor_slow_query {
    char fingerprint[NOODLE_MONITOR_TEXT_MAX]; /* truncated */
    int64_t duration_ns;
    int code;
    int64_t rows;
    int64_t time;               /* monitor clock, when recorded */
} noodle_monitor_slow_query;

/* Copy the slow-query log, oldest first, into out[0..cap); *count receives
 * how many were copied (the newest ones when cap is short). */
NOODLE_API void noodle_monitor_slow_queries(noodle_monitor *mon, noodle_monitor_slow_query *out,
                                            size_t cap, size_t *count);

/* Take one system sample now (as the sampler does). 6064 when a source
 * could not be read (the others are still recorded; unreadable ones are
 * reported as unknown). */
NOODLE_API NOODLE_MUSTCHECK int noodle_monitor_sample_now(noodle_monitor *mon, noodle_error *err);

/* Evaluate the alerts now (as the sampler does after each sample): calls
 * on_alert and logs for each transition. */
NOODLE_API void noodle_monitor_evaluate(noodle_monitor *mon);
NOODLE_API bool noodle_monitor_alert_active(noodle_monitor *mon, noodle_alert_kind k);

/* Render every metric, malloc'd into *out (free with free), *len its length
 * without the terminating NUL. 6061, 6062. */
NOODLE_API NOODLE_MUSTCHECK int noodle_monitor_prometheus(noodle_monitor *mon, char **out,
                                                          size_t *len, noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_monitor_json(noodle_monitor *mon, char **out, size_t *len,
                                                    noodle_error *err);

#ifdef __cplusplus
}
#endif
#endif
