/* The performance monitor's state, shared by src/monitor.c (recording,
 * sources, sampler, alerts) and src/monitor_expose.c (Prometheus, JSON).
 * Internal: not installed. Locking rules are next to each field. */
#ifndef NOODLE_MONITOR_INTERNAL_H
#define NOODLE_MONITOR_INTERNAL_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "noodle/monitor.h"
#include "sysinfo.h"

#define MON_MAX_SOURCES 16
#define MON_MAX_NODES 8        /* cluster nodes whose pools are shown */
#define MON_MAX_ERROR_CODES 128 /* distinct (source, code) pairs counted; more go to "other" */
#define MON_SLOT_NONE UINT32_MAX
#define MON_SLOT_TXN (UINT32_MAX - 1) /* a ring event that is a transaction */

/* One call waiting in a thread's ring. */
typedef struct mon_event {
    uint32_t slot, gen;  /* fingerprint slot and its generation when recorded */
    int32_t code;
    int32_t aux;         /* transactions: attempts; statements: 1 when duration_ns
                            is precise, 0 when coarse (slow-call detection only),
                            -1 when not measured */
    int64_t duration_ns;
    int64_t rows;
} mon_event;

#define MON_INLINE_TEXT 48 /* texts this long or shorter are kept in the entry itself */

/* A thread's cache entry: a text seen before and its fingerprint slot, in
 * one cache line; a longer text is kept in a heap copy. */
typedef struct mon_cache_entry {
    uint32_t len;        /* 0: empty */
    uint32_t slot, gen;
    uint32_t cap;        /* bytes at text (longer texts) */
    union {
        char inline_text[MON_INLINE_TEXT];
        char *text;      /* len > MON_INLINE_TEXT */
    } u;
} mon_cache_entry;

static inline const char *noodle__mon_entry_text(const mon_cache_entry *e) {
    return e->len > MON_INLINE_TEXT ? e->u.text : e->u.inline_text;
}

/* One recording thread's cache and ring. The cache and `head` are written
 * only by the owner thread; `tail` only by drainers holding the monitor
 * lock. Ring slots [tail, head) are full. */
typedef struct mon_thread {
    /* what record()'s fast path reads, in the first cache line */
    mon_cache_entry *cache;
    size_t cache_mask;
    mon_event *ring;
    size_t ring_mask;
    uint64_t tail_seen;       /* owner's last reading of tail */
    _Atomic uint64_t head;
    pthread_t owner;
    struct mon_thread *next;  /* list of the monitor's threads (monitor lock) */
    _Atomic size_t text_bytes; /* bytes of cached texts (owner writes) */
    alignas(64) _Atomic uint64_t tail;
} mon_thread;

/* Statistics of one fingerprint. */
typedef struct mon_slot {
    bool used;
    uint64_t hash;
    uint32_t next;            /* hash chain */
    uint32_t text_len;        /* bytes kept in the text arena */
    uint64_t calls, errors;   /* every call */
    int64_t rows;
    int64_t max_ns;           /* slowest call: timed precisely, or slow on the coarse clock */
    noodle_histogram latency; /* ns, of the calls timed precisely (count, total, max) */
} mon_slot;

/* A fingerprint's total time: exact when every call was timed, else the
 * timed calls' mean times the calls. */
static inline int64_t noodle__monitor_total_ns(const mon_slot *s) {
    if (s->latency.count == 0) return 0;
    if (s->latency.count >= s->calls) return (int64_t)s->latency.sum_us;
    return (int64_t)((double)s->latency.sum_us / (double)s->latency.count * (double)s->calls);
}

typedef enum mon_err_source { SRC_QUERY = 0, SRC_TXN, SRC_POOL, SRC_CLUSTER, SRC_COUNT } mon_err_source;

typedef struct mon_err_count {
    int source, code;
    uint64_t count;
} mon_err_count;

typedef enum mon_source_kind { SOURCE_POOL = 1, SOURCE_CLUSTER } mon_source_kind;

/* A watched pool or cluster. Everything here is guarded by the monitor lock. */
typedef struct mon_source {
    struct noodle_monitor *mon;
    mon_source_kind kind;
    const void *ptr;           /* the pool or cluster; not read once detached */
    bool detached;             /* shut down or unwatched: the last snapshot stays */
    bool have_snapshot;
    char name[64];
    noodle_pool_metrics pool;  /* pool: the last snapshot */
    noodle_histogram wait_prev[1 + MON_MAX_NODES]; /* acquire wait at the last evaluation */
    uint64_t ev_opened, ev_closed, ev_timeouts, ev_validation_failed, ev_connect_failed, ev_leaks;
    /* cluster */
    noodle_cluster_metrics cluster;
    noodle_cluster_node_info *nodes; /* MON_MAX_NODES entries, snapshot */
    size_t nnodes;
    uint64_t failovers, demotions, nodes_down, breaker_opens, primary_lost;
    int64_t last_failover_at;  /* monitor clock; 0: never */
    int last_primary;          /* node of the last FAILOVER event; -1: none yet */
} mon_source;

struct noodle_monitor {
    /* What record()'s fast path reads, in one cache line. */
    uint64_t id;                       /* never reused: thread-local references name it */
    size_t cache_text_max;
    int64_t slow_ns;
    _Atomic uint32_t *gens;            /* generation of each slot, bumped on eviction (lock);
                                          read without it by recorders */
    const noodle_clock *clock;
    /* options (read-only after open) */
    size_t max_fp, text_max, cache_entries, ring_events, max_threads, slow_log_size;
    int64_t sample_interval_ns;
    unsigned time_every;               /* precise timing of one db statement in this many */
    char *disk_path;
    double threshold[NOODLE_ALERTS], clear_ratio;
    noodle_alert_fn on_alert;
    void *alert_arg;
    FILE *log;
    bool no_log;

    /* Lock order: eval_lock, then lock. No callback, observer or log write
     * runs under `lock`; pool and cluster snapshots are read under it (the
     * pool and cluster emit events with no lock of theirs held). */
    pthread_mutex_t eval_lock;         /* one alert evaluation (and its deliveries) at a time */
    pthread_mutex_t lock;

    /* fingerprints (lock) */
    mon_slot *slots;
    char *texts;                       /* max_fp * text_max bytes */
    uint32_t *buckets;                 /* hash heads */
    size_t bucket_mask;
    uint32_t *free_stack, *order;
    size_t nfree, nused;

    /* threads (lock) */
    mon_thread *threads;
    size_t nthreads;

    /* totals (lock) */
    uint64_t queries, query_errors, dropped, evictions;
    int64_t rows;
    noodle_histogram latency_retired;  /* ns, timed calls no slot holds now (evicted, or
                                          dropped); the rest are in the slots */
    noodle_histogram window_start;     /* latency at the last evaluation */
    uint64_t window_start_errors;      /* query_errors then */
    uint64_t window_start_queries;     /* queries then */
    mon_err_count errs[MON_MAX_ERROR_CODES];
    size_t nerrs;
    uint64_t errs_other;
    uint64_t txns, txn_failures, txn_retries, txn_unknown;
    int64_t txn_total_ns;

    mon_source sources[MON_MAX_SOURCES];
    size_t nsources;

    /* slow log (lock) */
    noodle_monitor_slow_query *slow;
    size_t slow_next, slow_count;
    uint64_t slow_total;

    /* system (lock) */
    noodle_sys_sample sys;
    bool have_sys;
    uint64_t samples, sample_failures;
    int64_t sample_cost_ns;
    double replication_lag_ms;         /* < 0: unknown */

    /* alerts (lock) */
    bool alert_active[NOODLE_ALERTS];
    double alert_value[NOODLE_ALERTS]; /* last evaluated value; NaN: unknown */

    /* sampler (lock) */
    pthread_t sampler;
    bool sampler_running, stopping;
    pthread_cond_t cond;
    size_t fixed_bytes;                /* allocated at open */
};

/* Under mon->lock: drain every thread's ring, then refresh the snapshots of
 * the sources still attached. */
void noodle__monitor_catch_up(noodle_monitor *mon);
/* Under mon->lock (after catch-up): the latency of every query timed
 * precisely (ns), the slots' histograms and those retired summed. */
void noodle__monitor_latency(const noodle_monitor *mon, noodle_histogram *out);
/* Under mon->lock: every byte held. */
size_t noodle__monitor_bytes_locked(noodle_monitor *mon);
/* The text of slot i (not NUL-terminated; mon->slots[i].text_len bytes). */
const char *noodle__monitor_slot_text(const noodle_monitor *mon, uint32_t i);
const char *noodle__monitor_source_name(int source); /* "query", "transaction", ... */

#endif
