/* The performance monitor's exposition: Prometheus text format (0.0.4) and
 * JSON, each rendered whole under the monitor lock after draining every
 * thread's ring and refreshing the watched pools' and clusters' snapshots.
 *
 * Invariants
 *  1. Every metric family is written as one block: # HELP, # TYPE, then all
 *     its series. Counters end in _total; times are in seconds, sizes in
 *     bytes.
 *  2. Histograms: cumulative _bucket{le} series at bounds that are exact
 *     bucket edges of noodle_histogram (2^k - 1 units, so "<= le" is exact
 *     for integer values), then le="+Inf", _sum and _count; +Inf and _count
 *     are both the sum of the buckets, so they are always equal.
 *  3. Label values escape backslash, double quote and newline; JSON strings
 *     escape per RFC 8259 and replace bytes that are not UTF-8 with U+FFFD.
 *  4. An unknown measurement is NaN in Prometheus and null in JSON.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor_internal.h"
#include "text.h"

/* ---- a growing buffer ----------------------------------------------------------------------------- */

typedef noodle__text sbuf;

/* Prometheus label value (invariant 3). */
static void sb_label(sbuf *b, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\') noodle__text_put(b, "\\\\", 2);
        else if (s[i] == '"') noodle__text_put(b, "\\\"", 2);
        else if (s[i] == '\n') noodle__text_put(b, "\\n", 2);
        else noodle__text_put(b, s + i, 1);
    }
}

/* ---- Prometheus ---------------------------------------------------------------------------------------- */

static void family(sbuf *b, const char *name, const char *type, const char *help) {
    noodle__text_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void series_u(sbuf *b, const char *name, const char *labels, uint64_t v) {
    noodle__text_printf(b, "%s%s%s%s %" PRIu64 "\n", name, *labels ? "{" : "", labels, *labels ? "}" : "", v);
}

static void series_d(sbuf *b, const char *name, const char *labels, double v) {
    if (isnan(v)) noodle__text_printf(b, "%s%s%s%s NaN\n", name, *labels ? "{" : "", labels, *labels ? "}" : "");
    else noodle__text_printf(b, "%s%s%s%s %.17g\n", name, *labels ? "{" : "", labels, *labels ? "}" : "", v);
}

static void counter(sbuf *b, const char *name, const char *help, uint64_t v) {
    family(b, name, "counter", help);
    series_u(b, name, "", v);
}

static void gauge(sbuf *b, const char *name, const char *help, double v) {
    family(b, name, "gauge", help);
    series_d(b, name, "", v);
}

/* Invariant 2. unit: seconds per histogram unit; bounds 2^k - 1 for k in
 * [kmin, kmax] by step 2. */
static void hist_series(sbuf *b, const char *name, const char *labels, const noodle_histogram *h,
                        double unit, int kmin, int kmax) {
    const char *sep = *labels ? "," : "";
    uint64_t cum = 0;
    size_t j = 0;
    for (int k = kmin; k <= kmax; k += 2) {
        uint64_t bound = ((uint64_t)1 << k) - 1;
        while (j < NOODLE_HISTOGRAM_BUCKETS && j + 1 < NOODLE_HISTOGRAM_BUCKETS &&
               noodle_histogram_bucket_floor(j + 1) - 1 <= bound)
            cum += h->buckets[j++];
        noodle__text_printf(b, "%s_bucket{%s%sle=\"%.12g\"} %" PRIu64 "\n", name, labels, sep,
                  (double)bound * unit, cum);
    }
    for (; j < NOODLE_HISTOGRAM_BUCKETS; j++) cum += h->buckets[j];
    noodle__text_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, cum);
    const char *o = *labels ? "{" : "", *c = *labels ? "}" : "";
    noodle__text_printf(b, "%s_sum%s%s%s %.17g\n", name, o, labels, c, (double)h->sum_us * unit);
    noodle__text_printf(b, "%s_count%s%s%s %" PRIu64 "\n", name, o, labels, c, cum);
}

#define NS 1e-9
#define US 1e-6

static void prom_monitor(sbuf *b, noodle_monitor *mon) {
    counter(b, "noodle_monitor_queries_total", "Statements recorded.", mon->queries);
    counter(b, "noodle_monitor_query_errors_total", "Statements that failed.", mon->query_errors);
    counter(b, "noodle_monitor_query_rows_total", "Rows returned or changed by statements.",
            (uint64_t)mon->rows);
    counter(b, "noodle_monitor_events_dropped_total",
            "Statements counted in the totals but not in their fingerprint (evicted first).",
            mon->dropped);
    counter(b, "noodle_monitor_fingerprint_evictions_total",
            "Fingerprints evicted to stay within max_fingerprints.", mon->evictions);
    gauge(b, "noodle_monitor_fingerprints", "Fingerprints kept now.", (double)mon->nused);
    gauge(b, "noodle_monitor_fingerprints_max", "Most fingerprints kept (configured).",
          (double)mon->max_fp);
    gauge(b, "noodle_monitor_memory_bytes", "Bytes held by the monitor.",
          (double)noodle__monitor_bytes_locked(mon));
    counter(b, "noodle_monitor_slow_queries_total", "Statements at least slow_query_ms slow.",
            mon->slow_total);
    counter(b, "noodle_monitor_samples_total", "System samples taken.", mon->samples);
    counter(b, "noodle_monitor_sample_failures_total",
            "System samples with a source that could not be read.", mon->sample_failures);
    gauge(b, "noodle_monitor_sample_cost_seconds", "CPU time the last system sample cost.",
          mon->sample_cost_ns >= 0 ? (double)mon->sample_cost_ns * NS : NAN);
    family(b, "noodle_monitor_query_duration_seconds", "histogram",
           "Duration of the statements timed precisely (one in timing_sample_every).");
    noodle_histogram latency;
    noodle__monitor_latency(mon, &latency);
    hist_series(b, "noodle_monitor_query_duration_seconds", "", &latency, NS, 10, 36);
}

/* queryid="...",query="..." of slot i into lab. */
static void fp_labels(sbuf *lab, noodle_monitor *mon, uint32_t i) {
    lab->len = 0;
    noodle__text_printf(lab, "queryid=\"%016" PRIx64 "\",query=\"", mon->slots[i].hash);
    sb_label(lab, noodle__monitor_slot_text(mon, i), mon->slots[i].text_len);
    noodle__text_put(lab, "\"", 1);
}

static void prom_fingerprints(sbuf *b, sbuf *lab, noodle_monitor *mon) {
    static const char *const names[] = {"noodle_query_calls_total", "noodle_query_errors_total",
                                        "noodle_query_rows_total", "noodle_query_max_seconds",
                                        "noodle_query_time_seconds_total"};
    static const char *const helps[] = {
        "Calls of the fingerprint (normalised statement text).",
        "Failed calls of the fingerprint.",
        "Rows returned or changed by the fingerprint's calls.",
        "Slowest call of the fingerprint.",
        "Time spent in the fingerprint's calls (estimated from the timed ones when sampling)."};
    enum { NSERIES = 5 };
    for (int m = 0; m <= NSERIES; m++) {
        if (m < NSERIES) family(b, names[m], m == 3 ? "gauge" : "counter", helps[m]);
        else family(b, "noodle_query_duration_seconds", "histogram",
                    "Duration of the fingerprint's calls that were timed precisely.");
        for (uint32_t i = 0; i < mon->max_fp; i++) {
            const mon_slot *s = &mon->slots[i];
            if (!s->used) continue;
            fp_labels(lab, mon, i);
            if (lab->failed) b->failed = true;
            if (lab->failed) return;
            if (m == 0) series_u(b, names[m], lab->p, s->calls);
            else if (m == 1) series_u(b, names[m], lab->p, s->errors);
            else if (m == 2) series_u(b, names[m], lab->p, (uint64_t)s->rows);
            else if (m == 3) series_d(b, names[m], lab->p, (double)s->max_ns * NS);
            else if (m == 4)
                series_d(b, names[m], lab->p, (double)noodle__monitor_total_ns(s) * NS);
            else hist_series(b, "noodle_query_duration_seconds", lab->p, &s->latency, NS, 10, 36);
        }
    }
}

static void prom_errors(sbuf *b, noodle_monitor *mon) {
    family(b, "noodle_errors_total", "counter", "Failures seen, by source and catalogue code.");
    for (size_t i = 0; i < mon->nerrs; i++) {
        const mon_err_count *e = &mon->errs[i];
        const char *name = noodle_code_name(e->code);
        noodle__text_printf(b, "noodle_errors_total{source=\"%s\",code=\"%d\",name=\"%s\"} %" PRIu64 "\n",
                  noodle__monitor_source_name(e->source), e->code, name ? name : "UNKNOWN",
                  e->count);
    }
    if (mon->errs_other > 0)
        noodle__text_printf(b, "noodle_errors_total{source=\"other\",code=\"other\",name=\"OTHER\"} %" PRIu64 "\n",
                  mon->errs_other);
}

static void prom_txn(sbuf *b, noodle_monitor *mon) {
    counter(b, "noodle_transactions_total", "Transactions run (noodle_txn_run).", mon->txns);
    counter(b, "noodle_transaction_failures_total", "Transactions that did not commit.",
            mon->txn_failures);
    counter(b, "noodle_transaction_retries_total", "Attempts retried after a conflict.",
            mon->txn_retries);
    counter(b, "noodle_transaction_outcome_unknown_total",
            "Transactions whose commit may or may not have been applied (4015).", mon->txn_unknown);
    family(b, "noodle_transaction_seconds_total", "counter", "Time spent in transactions.");
    series_d(b, "noodle_transaction_seconds_total", "", (double)mon->txn_total_ns * NS);
}

/* ---- pools and clusters ---------------------------------------------------------------------------------- */

typedef struct pool_ref {
    char label[96];
    const noodle_pool_metrics *m;
} pool_ref;

/* Every pool with a snapshot: watched pools and the pools of watched
 * clusters' nodes ("cluster1/node0"). */
static size_t pool_refs(noodle_monitor *mon, pool_ref *out, size_t cap) {
    size_t n = 0;
    for (size_t i = 0; i < mon->nsources; i++) {
        const mon_source *s = &mon->sources[i];
        if (!s->have_snapshot) continue;
        if (s->kind == SOURCE_POOL && n < cap) {
            snprintf(out[n].label, sizeof out[n].label, "%s", s->name);
            out[n++].m = &s->pool;
        }
        for (size_t j = 0; s->kind == SOURCE_CLUSTER && j < s->nnodes && n < cap; j++) {
            snprintf(out[n].label, sizeof out[n].label, "%s/node%zu", s->name, j);
            out[n++].m = &s->nodes[j].pool;
        }
    }
    return n;
}

typedef struct pool_field {
    const char *name, *type, *help;
    size_t off;
    bool is_signed;
} pool_field;

#define PF(n, t, h, f, sg) {n, t, h, offsetof(noodle_pool_metrics, f), sg}
static const pool_field pool_fields[] = {
    PF("noodle_pool_connections", "gauge", "Open connections (active + idle).", total, true),
    PF("noodle_pool_active_connections", "gauge", "Connections in use.", active, true),
    PF("noodle_pool_idle_connections", "gauge", "Idle connections.", idle, true),
    PF("noodle_pool_opening_connections", "gauge", "Connects in progress.", opening, true),
    PF("noodle_pool_waiting_acquires", "gauge", "Acquires waiting for a connection.", waiting, true),
    PF("noodle_pool_max_connections", "gauge", "Configured maximum.", max_connections, true),
    PF("noodle_pool_acquired_total", "counter", "Successful acquires.", acquired, false),
    PF("noodle_pool_opened_total", "counter", "Connections opened.", opened, false),
    PF("noodle_pool_closed_total", "counter", "Connections closed.", closed_total, false),
    PF("noodle_pool_timeouts_total", "counter", "Acquires that timed out (2002).", timeouts, false),
    PF("noodle_pool_validation_failures_total", "counter",
       "Connections that failed validation before reuse.", validation_failures, false),
    PF("noodle_pool_connect_failures_total", "counter", "Failed connects.", connect_failures, false),
    PF("noodle_pool_leaks_suspected_total", "counter", "Connections held past the leak threshold.",
       leaks_suspected, false),
};
#undef PF

static int64_t field_value(const noodle_pool_metrics *m, const pool_field *f) {
    int64_t v;
    memcpy(&v, (const char *)m + f->off, sizeof v);
    return v;
}

static void prom_pools(sbuf *b, noodle_monitor *mon) {
    pool_ref refs[MON_MAX_SOURCES * MON_MAX_NODES];
    size_t n = pool_refs(mon, refs, sizeof refs / sizeof refs[0]);
    char lab[160];
    for (size_t f = 0; f < sizeof pool_fields / sizeof pool_fields[0]; f++) {
        family(b, pool_fields[f].name, pool_fields[f].type, pool_fields[f].help);
        for (size_t i = 0; i < n; i++) {
            snprintf(lab, sizeof lab, "pool=\"%.95s\"", refs[i].label);
            series_u(b, pool_fields[f].name, lab, (uint64_t)field_value(refs[i].m, &pool_fields[f]));
        }
    }
    family(b, "noodle_pool_acquire_wait_seconds", "histogram",
           "Time acquires waited (served without waiting: 0).");
    for (size_t i = 0; i < n; i++) {
        snprintf(lab, sizeof lab, "pool=\"%.95s\"", refs[i].label);
        hist_series(b, "noodle_pool_acquire_wait_seconds", lab, &refs[i].m->acquire_wait, US, 0, 26);
    }
}

static void prom_clusters(sbuf *b, noodle_monitor *mon) {
    static const char *const names[] = {
        "noodle_cluster_failovers_total", "noodle_cluster_demotions_total",
        "noodle_cluster_nodes_down_total", "noodle_cluster_breaker_opens_total",
        "noodle_cluster_primary_lost_total", "noodle_cluster_seconds_since_failover"};
    static const char *const helps[] = {
        "Failovers: another node became the primary (cluster events).", "Writes refused as read-only on the primary.",
        "Nodes that stopped answering.", "Circuit breakers that opened.",
        "Times the cluster had no usable primary.",
        "Seconds since the last failover (NaN: none seen)."};
    int64_t now = noodle_clock_now(mon->clock);
    char lab[96];
    for (int m = 0; m < 6; m++) {
        family(b, names[m], m == 5 ? "gauge" : "counter", helps[m]);
        for (size_t i = 0; i < mon->nsources; i++) {
            const mon_source *s = &mon->sources[i];
            if (s->kind != SOURCE_CLUSTER) continue;
            const uint64_t v[5] = {s->failovers, s->demotions, s->nodes_down, s->breaker_opens,
                                   s->primary_lost};
            snprintf(lab, sizeof lab, "cluster=\"%s\"", s->name);
            if (m < 5) series_u(b, names[m], lab, v[m]);
            else series_d(b, names[m], lab,
                          s->last_failover_at ? (double)(now - s->last_failover_at) * NS : NAN);
        }
    }
}

/* ---- system and alerts -------------------------------------------------------------------------------------- */

typedef struct sys_field {
    const char *name, *type, *help, *labels;
    double v; /* < 0: unknown */
} sys_field;

static size_t sys_fields(const noodle_monitor *mon, sys_field out[10]) {
    const noodle_sys_sample *s = &mon->sys;
    bool h = mon->have_sys;
    sys_field f[10] = {
        {"noodle_process_cpu_seconds_total", "counter", "Process CPU time (/proc/self/stat).",
         "mode=\"user\"", h ? s->cpu_user_s : -1},
        {"noodle_process_cpu_seconds_total", "counter", NULL, "mode=\"system\"", h ? s->cpu_system_s : -1},
        {"noodle_process_resident_memory_bytes", "gauge", "Resident set size.", "", h ? (double)s->rss_bytes : -1},
        {"noodle_system_memory_total_bytes", "gauge", "System memory (MemTotal).", "",
         h ? (double)s->mem_total_bytes : -1},
        {"noodle_system_memory_available_bytes", "gauge", "System memory available (MemAvailable).",
         "", h ? (double)s->mem_available_bytes : -1},
        {"noodle_process_disk_read_bytes_total", "counter", "Bytes the process read from storage.",
         "", h ? (double)s->io_read_bytes : -1},
        {"noodle_process_disk_written_bytes_total", "counter",
         "Bytes the process wrote to storage.", "", h ? (double)s->io_write_bytes : -1},
        {"noodle_disk_total_bytes", "gauge", "Size of disk_path's filesystem.", "",
         h ? (double)s->disk_total_bytes : -1},
        {"noodle_disk_free_bytes", "gauge", "Free bytes of disk_path's filesystem.", "",
         h ? (double)s->disk_free_bytes : -1},
        {"noodle_disk_available_bytes", "gauge",
         "Bytes of disk_path's filesystem available to unprivileged users.", "",
         h ? (double)s->disk_available_bytes : -1},
    };
    memcpy(out, f, sizeof f);
    return 10;
}

static void prom_system(sbuf *b, noodle_monitor *mon) {
    sys_field f[10];
    size_t n = sys_fields(mon, f);
    for (size_t i = 0; i < n; i++) {
        if (f[i].help != NULL) family(b, f[i].name, f[i].type, f[i].help);
        series_d(b, f[i].name, f[i].labels, f[i].v >= 0 ? f[i].v : NAN);
    }
}

static void prom_alerts(sbuf *b, noodle_monitor *mon) {
    static const char *const names[] = {"noodle_alert_active", "noodle_alert_value",
                                        "noodle_alert_threshold"};
    static const char *const helps[] = {
        "1 while the alert is raised.",
        "The alert's value at the last evaluation (ms or ratio; NaN: unknown).",
        "The alert's threshold (0: off)."};
    char lab[64];
    for (int m = 0; m < 3; m++) {
        family(b, names[m], "gauge", helps[m]);
        for (int k = 0; k < NOODLE_ALERTS; k++) {
            snprintf(lab, sizeof lab, "alert=\"%s\"", noodle_alert_name((noodle_alert_kind)k));
            double v = m == 0 ? (mon->alert_active[k] ? 1 : 0)
                       : m == 1 ? mon->alert_value[k] : mon->threshold[k];
            series_d(b, names[m], lab, v);
        }
    }
    gauge(b, "noodle_replication_lag_seconds", "Replication lag as last reported (NaN: unknown).",
          mon->replication_lag_ms >= 0 ? mon->replication_lag_ms / 1000.0 : NAN);
}

static int finish(sbuf *b, char **out, size_t *len, noodle_error *err) {
    return noodle__text_finish(b, out, len, NOODLE_E_MONITOR_NO_MEMORY, "the monitor's output", err);
}

int noodle_monitor_prometheus(noodle_monitor *mon, char **out, size_t *len, noodle_error *err) {
    if (mon == NULL || out == NULL)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT, "prometheus needs a monitor and out");
    *out = NULL;
    sbuf b = {0}, lab = {0};
    pthread_mutex_lock(&mon->lock);
    noodle__monitor_catch_up(mon);
    prom_monitor(&b, mon);
    prom_fingerprints(&b, &lab, mon);
    prom_errors(&b, mon);
    prom_txn(&b, mon);
    prom_pools(&b, mon);
    prom_clusters(&b, mon);
    prom_system(&b, mon);
    prom_alerts(&b, mon);
    pthread_mutex_unlock(&mon->lock);
    free(lab.p);
    return finish(&b, out, len, err);
}

/* ---- JSON ----------------------------------------------------------------------------------------------------- */

/* ,"key": (no comma before the first member of an object) */
static void jkey(sbuf *b, bool *first, const char *key) {
    noodle__text_printf(b, "%s\"%s\":", *first ? "" : ",", key);
    *first = false;
}

static void ju(sbuf *b, bool *first, const char *key, uint64_t v) {
    jkey(b, first, key);
    noodle__text_printf(b, "%" PRIu64, v);
}

static void ji(sbuf *b, bool *first, const char *key, int64_t v) {
    jkey(b, first, key);
    noodle__text_printf(b, "%" PRId64, v);
}

/* Invariant 4: unknown (negative where only >= 0 is meaningful, or NaN) is null. */
static void jd(sbuf *b, bool *first, const char *key, double v, bool negative_unknown) {
    jkey(b, first, key);
    if (isnan(v) || isinf(v) || (negative_unknown && v < 0)) noodle__text_put(b, "null", 4);
    else noodle__text_printf(b, "%.17g", v);
}

static void js(sbuf *b, bool *first, const char *key, const char *s, size_t n) {
    jkey(b, first, key);
    noodle__text_json(b, s, n);
}

static void jhist(sbuf *b, bool *first, const char *key, const noodle_histogram *h, const char *unit) {
    jkey(b, first, key);
    char k[5][16];
    snprintf(k[0], sizeof k[0], "sum_%s", unit);
    snprintf(k[1], sizeof k[1], "max_%s", unit);
    snprintf(k[2], sizeof k[2], "p50_%s", unit);
    snprintf(k[3], sizeof k[3], "p99_%s", unit);
    snprintf(k[4], sizeof k[4], "p999_%s", unit);
    bool f = true;
    noodle__text_put(b, "{", 1);
    ju(b, &f, "count", h->count);
    ju(b, &f, k[0], h->sum_us);
    ju(b, &f, k[1], h->max_us);
    ju(b, &f, k[2], noodle_histogram_quantile(h, 0.5));
    ju(b, &f, k[3], noodle_histogram_quantile(h, 0.99));
    ju(b, &f, k[4], noodle_histogram_quantile(h, 0.999));
    noodle__text_put(b, "}", 1);
}

static void json_monitor(sbuf *b, noodle_monitor *mon) {
    bool f = true;
    noodle__text_put(b, "\"monitor\":{", 11);
    ju(b, &f, "queries", mon->queries);
    ju(b, &f, "query_errors", mon->query_errors);
    ji(b, &f, "rows", mon->rows);
    ju(b, &f, "dropped", mon->dropped);
    ju(b, &f, "evictions", mon->evictions);
    ju(b, &f, "fingerprints", mon->nused);
    ju(b, &f, "max_fingerprints", mon->max_fp);
    ju(b, &f, "memory_bytes", noodle__monitor_bytes_locked(mon));
    ju(b, &f, "slow_queries", mon->slow_total);
    ju(b, &f, "samples", mon->samples);
    ju(b, &f, "sample_failures", mon->sample_failures);
    jd(b, &f, "sample_cost_ns", (double)mon->sample_cost_ns, true);
    noodle_histogram latency;
    noodle__monitor_latency(mon, &latency);
    jhist(b, &f, "latency", &latency, "ns");
    noodle__text_put(b, "}", 1);
}

static void json_queries(sbuf *b, noodle_monitor *mon) {
    noodle__text_put(b, ",\"queries\":[", 12);
    bool any = false;
    for (uint32_t i = 0; i < mon->max_fp; i++) {
        const mon_slot *s = &mon->slots[i];
        if (!s->used) continue;
        noodle__text_put(b, any ? ",{" : "{", any ? 2 : 1);
        any = true;
        bool f = true;
        char id[20];
        snprintf(id, sizeof id, "%016" PRIx64, s->hash);
        js(b, &f, "id", id, strlen(id));
        js(b, &f, "fingerprint", noodle__monitor_slot_text(mon, i), s->text_len);
        ju(b, &f, "calls", s->calls);
        ju(b, &f, "timed_calls", s->latency.count);
        ju(b, &f, "errors", s->errors);
        ji(b, &f, "rows", s->rows);
        ji(b, &f, "total_ns", noodle__monitor_total_ns(s));
        ji(b, &f, "max_ns", s->max_ns);
        jhist(b, &f, "latency", &s->latency, "ns");
        noodle__text_put(b, "}", 1);
    }
    noodle__text_put(b, "]", 1);
}

static void json_errors_txn(sbuf *b, noodle_monitor *mon) {
    noodle__text_put(b, ",\"errors\":[", 11);
    for (size_t i = 0; i < mon->nerrs; i++) {
        const char *name = noodle_code_name(mon->errs[i].code);
        noodle__text_printf(b, "%s{\"source\":\"%s\",\"code\":%d,\"name\":\"%s\",\"count\":%" PRIu64 "}",
                  i ? "," : "", noodle__monitor_source_name(mon->errs[i].source), mon->errs[i].code,
                  name ? name : "UNKNOWN", mon->errs[i].count);
    }
    noodle__text_printf(b, "],\"errors_uncounted\":%" PRIu64, mon->errs_other);
    bool f = true;
    noodle__text_put(b, ",\"transactions\":{", 17);
    ju(b, &f, "count", mon->txns);
    ju(b, &f, "failures", mon->txn_failures);
    ju(b, &f, "retries", mon->txn_retries);
    ju(b, &f, "outcome_unknown", mon->txn_unknown);
    ji(b, &f, "total_ns", mon->txn_total_ns);
    noodle__text_put(b, "}", 1);
}

static void json_pools(sbuf *b, noodle_monitor *mon) {
    pool_ref refs[MON_MAX_SOURCES * MON_MAX_NODES];
    size_t n = pool_refs(mon, refs, sizeof refs / sizeof refs[0]);
    noodle__text_put(b, ",\"pools\":[", 10);
    for (size_t i = 0; i < n; i++) {
        bool f = true;
        noodle__text_put(b, i ? ",{" : "{", i ? 2 : 1);
        js(b, &f, "name", refs[i].label, strlen(refs[i].label));
        for (size_t k = 0; k < sizeof pool_fields / sizeof pool_fields[0]; k++) {
            const char *key = pool_fields[k].name + strlen("noodle_pool_");
            int64_t v = field_value(refs[i].m, &pool_fields[k]);
            if (pool_fields[k].is_signed) ji(b, &f, key, v);
            else ju(b, &f, key, (uint64_t)v);
        }
        jhist(b, &f, "acquire_wait", &refs[i].m->acquire_wait, "us");
        jhist(b, &f, "hold_time", &refs[i].m->hold_time, "us");
        noodle__text_put(b, "}", 1);
    }
    noodle__text_put(b, "]", 1);
}

static void json_clusters(sbuf *b, noodle_monitor *mon) {
    noodle__text_put(b, ",\"clusters\":[", 13);
    bool any = false;
    for (size_t i = 0; i < mon->nsources; i++) {
        const mon_source *s = &mon->sources[i];
        if (s->kind != SOURCE_CLUSTER) continue;
        bool f = true;
        noodle__text_put(b, any ? ",{" : "{", any ? 2 : 1);
        any = true;
        js(b, &f, "name", s->name, strlen(s->name));
        ju(b, &f, "failovers", s->failovers);
        jd(b, &f, "last_failover_at_ns", s->last_failover_at ? (double)s->last_failover_at : NAN, false);
        ju(b, &f, "demotions", s->demotions);
        ju(b, &f, "nodes_down", s->nodes_down);
        ju(b, &f, "breaker_opens", s->breaker_opens);
        ju(b, &f, "primary_lost", s->primary_lost);
        ji(b, &f, "primary", s->cluster.primary);
        ju(b, &f, "generation", s->cluster.generation);
        noodle__text_put(b, "}", 1);
    }
    noodle__text_put(b, "]", 1);
}

static void json_system_alerts(sbuf *b, noodle_monitor *mon) {
    sys_field sf[10];
    size_t n = sys_fields(mon, sf);
    static const char *const keys[10] = {
        "cpu_user_seconds", "cpu_system_seconds", "rss_bytes", "memory_total_bytes",
        "memory_available_bytes", "disk_read_bytes", "disk_written_bytes", "disk_total_bytes",
        "disk_free_bytes", "disk_available_bytes"};
    bool f = true;
    noodle__text_put(b, ",\"system\":{", 11);
    for (size_t i = 0; i < n; i++) jd(b, &f, keys[i], sf[i].v, true);
    jd(b, &f, "sample_wall_ns", mon->have_sys ? (double)mon->sys.sample_ns : -1, true);
    noodle__text_put(b, "},\"alerts\":[", 12);
    for (int k = 0; k < NOODLE_ALERTS; k++) {
        bool g = true;
        noodle__text_put(b, k ? ",{" : "{", k ? 2 : 1);
        const char *name = noodle_alert_name((noodle_alert_kind)k);
        js(b, &g, "name", name, strlen(name));
        jkey(b, &g, "active");
        noodle__text_printf(b, "%s", mon->alert_active[k] ? "true" : "false");
        jd(b, &g, "value", mon->alert_value[k], false);
        jd(b, &g, "threshold", mon->threshold[k], false);
        jd(b, &g, "clear_level", mon->threshold[k] * mon->clear_ratio, false);
        noodle__text_put(b, "}", 1);
    }
    noodle__text_put(b, "]", 1);
    f = false;
    jd(b, &f, "replication_lag_ms", mon->replication_lag_ms, true);
}

static void json_slow(sbuf *b, noodle_monitor *mon) {
    noodle__text_put(b, ",\"slow_queries\":[", 17);
    for (size_t i = 0; i < mon->slow_count; i++) {
        size_t first = (mon->slow_next + mon->slow_log_size - mon->slow_count) % mon->slow_log_size;
        const noodle_monitor_slow_query *q = &mon->slow[(first + i) % mon->slow_log_size];
        bool f = true;
        noodle__text_put(b, i ? ",{" : "{", i ? 2 : 1);
        js(b, &f, "fingerprint", q->fingerprint, strlen(q->fingerprint));
        ji(b, &f, "duration_ns", q->duration_ns);
        ji(b, &f, "code", q->code);
        ji(b, &f, "rows", q->rows);
        ji(b, &f, "time_ns", q->time);
        noodle__text_put(b, "}", 1);
    }
    noodle__text_put(b, "]", 1);
}

int noodle_monitor_json(noodle_monitor *mon, char **out, size_t *len, noodle_error *err) {
    if (mon == NULL || out == NULL)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT, "json needs a monitor and out");
    *out = NULL;
    sbuf b = {0};
    noodle__text_put(&b, "{", 1);
    pthread_mutex_lock(&mon->lock);
    noodle__monitor_catch_up(mon);
    json_monitor(&b, mon);
    json_queries(&b, mon);
    json_errors_txn(&b, mon);
    json_pools(&b, mon);
    json_clusters(&b, mon);
    json_system_alerts(&b, mon);
    json_slow(&b, mon);
    pthread_mutex_unlock(&mon->lock);
    noodle__text_put(&b, "}\n", 2);
    return finish(&b, out, len, err);
}
