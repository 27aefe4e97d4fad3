/* The performance monitor: recording, sources, sampler, alerts.
 * Exposition is in src/monitor_expose.c, fingerprints in src/fingerprint.c.
 *
 * Recording a statement (the hot path, STD-MONITOR's 97 % budget):
 *
 *   caller thread                          monitor lock (any thread)
 *   -------------                          -------------------------
 *   thread-local ref -> mon_thread
 *   cache[hash(text)]: len + memcmp
 *     and slot generation unchanged? --no--> fingerprint, find or insert
 *   push (slot, gen, ns, code, rows)         the slot, fill the entry
 *     into the thread's ring
 *   ring full? --------------------------->  drain that ring
 *
 * Readers (exposition, stats, evaluation, the sampler) drain every ring
 * under the lock before reading, so they see every call recorded before.
 *
 * Invariants
 *  1. Memory is fixed at open except per-thread state: at most max_threads
 *     threads get a cache (cache_entries texts of at most cache_text_max
 *     bytes) and a ring; others record under the lock. Nothing grows with
 *     the number of distinct texts.
 *  2. A ring is single-producer (its owner thread) and single-consumer (a
 *     holder of the monitor lock). The owner writes a slot only after seeing
 *     tail (acquire) past it; drainers publish tail with release.
 *  3. A slot's generation changes exactly when it is evicted (under the
 *     lock). An event whose generation no longer matches counts in the
 *     totals but not in any fingerprint: it is counted as dropped.
 *  4. When the table is full, the least-used twentieth of the fingerprints
 *     (at least one) is evicted at once, after draining every ring so that
 *     usage counts are current.
 *  5. Alerts: raised when value >= threshold, cleared only when value <
 *     threshold * clear_ratio; an unknown value (no traffic, nothing
 *     watched) changes nothing. Each transition is delivered once, in order
 *     (eval_lock), outside the monitor lock.
 */
#include "noodle/monitor.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fingerprint.h"
#include "internal.h"
#include "monitor_internal.h"

typedef struct tls_ref {
    uint64_t mon_id;
    mon_thread *t; /* NULL: this thread records under the lock */
} tls_ref;

/* initial-exec: a plain %fs-relative load instead of a __tls_get_addr call
 * in the shared library (64 bytes of static TLS). */
static _Thread_local tls_ref tls_refs[4] __attribute__((tls_model("initial-exec")));
static _Atomic uint64_t next_monitor_id = 1;

static const char *const alert_names[NOODLE_ALERTS] = {
    "p99_latency", "error_rate", "pool_utilisation", "acquire_wait", "replication_lag"};

const char *noodle_alert_name(noodle_alert_kind k) {
    return (unsigned)k < NOODLE_ALERTS ? alert_names[k] : "unknown";
}

const char *noodle__monitor_source_name(int source) {
    static const char *const names[SRC_COUNT] = {"query", "transaction", "pool", "cluster"};
    return source >= 0 && source < SRC_COUNT ? names[source] : "unknown";
}

const char *noodle__monitor_slot_text(const noodle_monitor *mon, uint32_t i) {
    return mon->texts + (size_t)i * mon->text_max;
}

/* ---- histograms and counts (lock held) ------------------------------------------------------------ */

/* Add u, which falls in bucket b, to h (the unit is h's: ns here). */
static inline void hist_add(noodle_histogram *h, uint64_t u, size_t b) {
    h->count++;
    h->sum_us += u;
    if (u > h->max_us) h->max_us = u;
    h->buckets[b]++;
}

static void count_error(noodle_monitor *mon, int source, int code) {
    for (size_t i = 0; i < mon->nerrs; i++)
        if (mon->errs[i].source == source && mon->errs[i].code == code) {
            mon->errs[i].count++;
            return;
        }
    if (mon->nerrs == MON_MAX_ERROR_CODES) {
        mon->errs_other++;
        return;
    }
    mon->errs[mon->nerrs++] = (mon_err_count){source, code, 1};
}

static void apply_txn(noodle_monitor *mon, const mon_event *ev) {
    mon->txns++;
    mon->txn_total_ns += ev->duration_ns;
    if (ev->aux > 1) mon->txn_retries += (uint64_t)(ev->aux - 1);
    if (ev->code == 0) return;
    mon->txn_failures++;
    if (ev->code == NOODLE_E_OUTCOME_UNKNOWN) mon->txn_unknown++;
    count_error(mon, SRC_TXN, ev->code);
}

static void apply(noodle_monitor *mon, const mon_event *ev) {
    if (ev->slot == MON_SLOT_TXN) {
        apply_txn(mon, ev);
        return;
    }
    mon->queries++;
    bool precise = ev->aux == 1;
    uint64_t ns = ev->duration_ns > 0 ? (uint64_t)ev->duration_ns : 0;
    if (ev->rows > 0) mon->rows += ev->rows;
    if (ev->code != 0) {
        mon->query_errors++;
        count_error(mon, SRC_QUERY, ev->code);
    }
    if (ev->slot == MON_SLOT_NONE ||
        atomic_load_explicit(&mon->gens[ev->slot], memory_order_relaxed) != ev->gen) {
        mon->dropped++;
        if (precise) hist_add(&mon->latency_retired, ns, noodle__bucket_of(ns));
        return;
    }
    mon_slot *s = &mon->slots[ev->slot];
    s->calls++;
    if (ev->code != 0) s->errors++;
    if (ev->rows > 0) s->rows += ev->rows;
    /* the overall latency is the slots' summed by readers (invariant 6) */
    if (precise) hist_add(&s->latency, ns, noodle__bucket_of(ns));
    /* a coarse duration counts only once it is slow: then its few ms of
     * resolution do not matter */
    if ((precise || ev->duration_ns >= mon->slow_ns) && ev->duration_ns > s->max_ns)
        s->max_ns = ev->duration_ns;
}

static void hist_merge(noodle_histogram *into, const noodle_histogram *h) {
    into->count += h->count;
    into->sum_us += h->sum_us;
    if (h->max_us > into->max_us) into->max_us = h->max_us;
    for (size_t i = 0; i < NOODLE_HISTOGRAM_BUCKETS; i++) into->buckets[i] += h->buckets[i];
}

void noodle__monitor_latency(const noodle_monitor *mon, noodle_histogram *out) {
    *out = mon->latency_retired;
    for (uint32_t i = 0; i < mon->max_fp; i++)
        if (mon->slots[i].used) hist_merge(out, &mon->slots[i].latency);
}

/* Successful statements of one live slot in a row of a ring, summed before
 * they are added: what apply() does per statement, done per run. */
typedef struct mon_run {
    mon_slot *s; /* NULL: no run */
    uint32_t slot, gen;
    uint64_t calls, timed, sum_ns, max_ns;
    int64_t rows;
} mon_run;

static void end_run(noodle_monitor *mon, mon_run *r) {
    mon_slot *s = r->s;
    if (s == NULL) return;
    mon->queries += r->calls;
    mon->rows += r->rows;
    s->calls += r->calls;
    s->rows += r->rows;
    s->latency.count += r->timed;
    s->latency.sum_us += r->sum_ns;
    if (r->max_ns > s->latency.max_us) s->latency.max_us = r->max_ns;
    if ((int64_t)r->max_ns > s->max_ns) s->max_ns = (int64_t)r->max_ns;
    r->s = NULL;
}

static void drain_thread(noodle_monitor *mon, mon_thread *t) {
    uint64_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&t->head, memory_order_acquire);
    mon_run r = {NULL};
    for (; tail != head; tail++) {
        const mon_event *ev = &t->ring[tail & t->ring_mask];
        /* only successful statements in the ring have durations below
         * slow_ns (slower ones are applied whole, for the slow log) */
        if (ev->code != 0 || ev->slot >= MON_SLOT_TXN) {
            end_run(mon, &r);
            apply(mon, ev);
            continue;
        }
        if (r.s == NULL || ev->slot != r.slot || ev->gen != r.gen) {
            end_run(mon, &r);
            if (atomic_load_explicit(&mon->gens[ev->slot], memory_order_relaxed) != ev->gen) {
                apply(mon, ev); /* evicted since: counted as dropped */
                continue;
            }
            r = (mon_run){&mon->slots[ev->slot], ev->slot, ev->gen, 0, 0, 0, 0, 0};
        }
        r.calls++;
        if (ev->rows > 0) r.rows += ev->rows;
        if (ev->aux == 1) {
            uint64_t ns = ev->duration_ns > 0 ? (uint64_t)ev->duration_ns : 0;
            r.s->latency.buckets[noodle__bucket_of(ns)]++;
            r.timed++;
            r.sum_ns += ns;
            if (ns > r.max_ns) r.max_ns = ns;
        }
    }
    end_run(mon, &r);
    atomic_store_explicit(&t->tail, tail, memory_order_release);
}

static void drain_all(noodle_monitor *mon) {
    for (mon_thread *t = mon->threads; t != NULL; t = t->next) drain_thread(mon, t);
}

/* ---- the fingerprint table (lock held) ------------------------------------------------------------- */

static void unlink_slot(noodle_monitor *mon, uint32_t i) {
    uint32_t *p = &mon->buckets[mon->slots[i].hash & mon->bucket_mask];
    while (*p != i) p = &mon->slots[*p].next;
    *p = mon->slots[i].next;
}

static int by_calls(const void *a, const void *b, void *arg) {
    const mon_slot *s = arg;
    uint64_t x = s[*(const uint32_t *)a].calls, y = s[*(const uint32_t *)b].calls;
    return x < y ? -1 : x > y;
}

/* Invariant 4. */
static void evict_least_used(noodle_monitor *mon) {
    drain_all(mon);
    size_t n = 0;
    for (uint32_t i = 0; i < mon->max_fp; i++)
        if (mon->slots[i].used) mon->order[n++] = i;
    qsort_r(mon->order, n, sizeof *mon->order, by_calls, mon->slots);
    size_t k = n / 20 ? n / 20 : 1;
    for (size_t j = 0; j < k && j < n; j++) {
        uint32_t i = mon->order[j];
        unlink_slot(mon, i);
        hist_merge(&mon->latency_retired, &mon->slots[i].latency);
        memset(&mon->slots[i], 0, sizeof mon->slots[i]);
        atomic_fetch_add_explicit(&mon->gens[i], 1, memory_order_relaxed);
        mon->free_stack[mon->nfree++] = i;
        mon->nused--;
        mon->evictions++;
    }
}

static uint32_t lookup(noodle_monitor *mon, uint64_t hash, const char *fp, size_t kept) {
    for (uint32_t i = mon->buckets[hash & mon->bucket_mask]; i != MON_SLOT_NONE;
         i = mon->slots[i].next)
        if (mon->slots[i].hash == hash && mon->slots[i].text_len == kept &&
            memcmp(noodle__monitor_slot_text(mon, i), fp, kept) == 0)
            return i;
    return MON_SLOT_NONE;
}

/* The slot of sql's fingerprint, inserted (evicting when full) if new. */
static uint32_t find_or_insert(noodle_monitor *mon, const char *sql, size_t len) {
    char *fp = mon->texts + (size_t)mon->max_fp * mon->text_max; /* scratch row */
    uint64_t hash;
    size_t full = noodle__fingerprint(sql, len, fp, mon->text_max, &hash);
    size_t kept = full < mon->text_max ? full : mon->text_max - 1;
    uint32_t i = lookup(mon, hash, fp, kept);
    if (i != MON_SLOT_NONE) return i;
    if (mon->nfree == 0) evict_least_used(mon);
    i = mon->free_stack[--mon->nfree];
    mon_slot *s = &mon->slots[i];
    s->used = true;
    s->hash = hash;
    s->text_len = (uint32_t)kept;
    memcpy(mon->texts + (size_t)i * mon->text_max, fp, kept);
    uint32_t *head = &mon->buckets[hash & mon->bucket_mask];
    s->next = *head;
    *head = i;
    mon->nused++;
    return i;
}

/* ---- recording --------------------------------------------------------------------------------------- */

static void slow_log(noodle_monitor *mon, uint32_t slot, int64_t ns, int code, int64_t rows) {
    mon->slow_total++;
    if (mon->slow_log_size == 0) return;
    noodle_monitor_slow_query *q = &mon->slow[mon->slow_next];
    size_t n = mon->slots[slot].text_len;
    if (n >= sizeof q->fingerprint) n = sizeof q->fingerprint - 1;
    memcpy(q->fingerprint, noodle__monitor_slot_text(mon, slot), n);
    q->fingerprint[n] = '\0';
    q->duration_ns = ns;
    q->code = code;
    q->rows = rows;
    q->time = noodle_clock_now(mon->clock);
    mon->slow_next = (mon->slow_next + 1) % mon->slow_log_size;
    if (mon->slow_count < mon->slow_log_size) mon->slow_count++;
}

/* Texts too long to cache, slow calls, threads without a ring. */
static void record_locked(noodle_monitor *mon, const char *sql, size_t len, int64_t ns,
                          int precision, int code, int64_t rows) {
    pthread_mutex_lock(&mon->lock);
    drain_all(mon);
    uint32_t slot = find_or_insert(mon, sql, len);
    mon_event ev = {slot, atomic_load_explicit(&mon->gens[slot], memory_order_relaxed), code,
                    precision, ns, rows};
    apply(mon, &ev);
    if (ns >= mon->slow_ns) slow_log(mon, slot, ns, code, rows);
    pthread_mutex_unlock(&mon->lock);
}

/* n zeroed bytes on a cache-line boundary (an entry or event never
 * straddles two lines; the owner's fields of mon_thread share one). */
static void *zalloc_lines(size_t n) {
    n = (n + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, n);
    if (p != NULL) memset(p, 0, n);
    return p;
}

static mon_thread *new_thread(noodle_monitor *mon) {
    mon_thread *t = zalloc_lines(sizeof *t);
    if (t == NULL) return NULL;
    t->cache = zalloc_lines(mon->cache_entries * sizeof *t->cache);
    t->ring = zalloc_lines(mon->ring_events * sizeof *t->ring);
    if (t->cache == NULL || t->ring == NULL) {
        free(t->cache);
        free(t->ring);
        free(t);
        return NULL;
    }
    t->owner = pthread_self();
    t->cache_mask = mon->cache_entries - 1;
    t->ring_mask = mon->ring_events - 1;
    return t;
}

/* This thread's ring, found (a thread id reused after its thread ended
 * inherits the ring: still one producer) or made; NULL past max_threads. */
static mon_thread *attach_thread(noodle_monitor *mon) {
    pthread_t self = pthread_self();
    pthread_mutex_lock(&mon->lock);
    mon_thread *t = mon->threads;
    while (t != NULL && !pthread_equal(t->owner, self)) t = t->next;
    if (t == NULL && mon->nthreads < mon->max_threads && (t = new_thread(mon)) != NULL) {
        t->next = mon->threads;
        mon->threads = t;
        mon->nthreads++;
    }
    pthread_mutex_unlock(&mon->lock);
    tls_refs[mon->id & 3] = (tls_ref){mon->id, t};
    return t;
}

static inline mon_thread *this_thread(noodle_monitor *mon) {
    tls_ref *r = &tls_refs[mon->id & 3];
    return r->mon_id == mon->id ? r->t : attach_thread(mon);
}

static inline uint64_t load64(const char *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t load32(const char *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* memcmp(a, b, n) == 0 for n >= 1, inline and without a call (a call in
 * record_fast would make it save registers): overlapping loads cover every
 * byte. */
static inline bool same_text(const char *a, const char *b, size_t n) {
    if (n < 4) return a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1];
    if (n < 8) return load32(a) == load32(b) && load32(a + n - 4) == load32(b + n - 4);
    for (size_t i = 0; i + 8 <= n; i += 8)
        if (load64(a + i) != load64(b + i)) return false;
    return load64(a + n - 8) == load64(b + n - 8);
}

/* Cache index of a text: its length and three 8-byte windows. */
static inline size_t text_key(const char *s, size_t n) {
    uint64_t h = n * 0x9e3779b97f4a7c15ULL;
    if (n >= 8) {
        h ^= load64(s) ^ (load64(s + n - 8) * 31) ^ (load64(s + n / 2 - 4) * 0xff51afd7ed558ccdULL);
    } else {
        for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    return (size_t)(h ^ (h >> 32));
}

/* Fill e for sql (the slow path of a cache miss). False when out of memory. */
static bool resolve(noodle_monitor *mon, mon_thread *t, mon_cache_entry *e, const char *sql,
                    size_t len) {
    if (len > MON_INLINE_TEXT && e->cap < len) {
        char *p = realloc(e->cap > 0 ? e->u.text : NULL, len);
        if (p == NULL) return false;
        atomic_fetch_add_explicit(&t->text_bytes, len - e->cap, memory_order_relaxed);
        e->u.text = p;
        e->cap = (uint32_t)len;
    }
    if (len <= MON_INLINE_TEXT && e->cap > 0) { /* the heap copy goes: the text fits inline */
        atomic_fetch_sub_explicit(&t->text_bytes, e->cap, memory_order_relaxed);
        free(e->u.text);
        e->cap = 0;
    }
    memcpy(len > MON_INLINE_TEXT ? e->u.text : e->u.inline_text, sql, len);
    e->len = (uint32_t)len; /* <= cache_text_max <= 2^24 */
    pthread_mutex_lock(&mon->lock);
    drain_all(mon);
    e->slot = find_or_insert(mon, sql, len);
    e->gen = atomic_load_explicit(&mon->gens[e->slot], memory_order_relaxed);
    pthread_mutex_unlock(&mon->lock);
    return true;
}

static inline void push(noodle_monitor *mon, mon_thread *t, const mon_event *ev) {
    uint64_t h = atomic_load_explicit(&t->head, memory_order_relaxed);
    if (h - t->tail_seen > t->ring_mask) {
        t->tail_seen = atomic_load_explicit(&t->tail, memory_order_acquire);
        if (h - t->tail_seen > t->ring_mask) { /* full: drain it (only it: no cross-core traffic) */
            pthread_mutex_lock(&mon->lock);
            drain_thread(mon, t);
            pthread_mutex_unlock(&mon->lock);
            t->tail_seen = atomic_load_explicit(&t->tail, memory_order_acquire);
        }
    }
    t->ring[h & t->ring_mask] = *ev;
    atomic_store_explicit(&t->head, h + 1, memory_order_release);
}

/* A statement the thread caches can take: not slow (those go whole, for
 * the slow log), and a text of 1 to cache_text_max bytes. */
static inline bool cacheable(const noodle_monitor *mon, size_t len, int64_t duration_ns) {
    return duration_ns < mon->slow_ns && len - 1 < mon->cache_text_max; /* len 0 wraps */
}

/* The cache entry sql would be in. */
static inline mon_cache_entry *entry_for(const mon_thread *t, const char *sql, size_t len) {
    return &t->cache[text_key(sql, len) & t->cache_mask];
}

/* Whether e holds sql, with its fingerprint slot not evicted since. */
static inline bool entry_holds(const noodle_monitor *mon, const mon_cache_entry *e,
                               const char *sql, size_t len) {
    return e->len == len && same_text(noodle__mon_entry_text(e), sql, len) &&
           atomic_load_explicit(&mon->gens[e->slot], memory_order_relaxed) == e->gen;
}

/* Everything the fast path of record() leaves: a thread's first call, a
 * cache miss, an evicted slot, a full ring, a slow call, a text too long to
 * cache. Cold: kept away from the fast path's cache lines. */
__attribute__((cold, noinline)) static void record_slow(noodle_monitor *mon, const char *sql,
                                                        size_t len, int64_t duration_ns,
                                                        int precision, int code, int64_t rows) {
    mon_thread *t = this_thread(mon);
    if (t == NULL || !cacheable(mon, len, duration_ns)) {
        record_locked(mon, sql, len, duration_ns, precision, code, rows);
        return;
    }
    mon_cache_entry *e = entry_for(t, sql, len);
    if (!entry_holds(mon, e, sql, len) && !resolve(mon, t, e, sql, len)) {
        record_locked(mon, sql, len, duration_ns, precision, code, rows);
        return;
    }
    mon_event ev = {e->slot, e->gen, code, precision, duration_ns, rows};
    push(mon, t, &ev);
}

/* Record one statement into this thread's ring when its text is cached
 * (and its slot not evicted) and the ring has room; false otherwise, with
 * nothing recorded. Straight-line and small on purpose: it runs once per
 * statement between stretches of the database's own code, with its
 * instructions and data mostly out of the L1 caches, so its cost is the
 * cache lines it touches more than its instructions. No call: the caller
 * keeps its arguments in scratch registers and the slow path is a tail
 * call. */
static inline __attribute__((always_inline)) bool record_fast(noodle_monitor *mon, const char *sql,
                                                              size_t len, int64_t duration_ns,
                                                              int precision, int code,
                                                              int64_t rows) {
    tls_ref *r = &tls_refs[mon->id & 3];
    mon_thread *t = r->t;
    if (r->mon_id != mon->id || t == NULL || !cacheable(mon, len, duration_ns)) return false;
    mon_cache_entry *e = entry_for(t, sql, len);
    uint64_t h = atomic_load_explicit(&t->head, memory_order_relaxed);
    if (e->len != len || h - t->tail_seen > t->ring_mask || !entry_holds(mon, e, sql, len))
        return false;
    t->ring[h & t->ring_mask] = (mon_event){e->slot, e->gen, code, precision, duration_ns, rows};
    atomic_store_explicit(&t->head, h + 1, memory_order_release);
    return true;
}

/* Record one statement; precision as mon_event.aux. */
static void record(noodle_monitor *mon, const char *sql, size_t len, int64_t duration_ns,
                   int precision, int code, int64_t rows) {
    if (mon == NULL || sql == NULL) return;
    if (!record_fast(mon, sql, len, duration_ns, precision, code, rows))
        record_slow(mon, sql, len, duration_ns, precision, code, rows);
}

void noodle_monitor_record_query(noodle_monitor *mon, const char *sql, size_t len,
                                 int64_t duration_ns, int code, int64_t rows) {
    record(mon, sql, len, duration_ns, duration_ns >= 0 ? 1 : -1, code, rows);
}

static inline int precision_of(const noodle_db_event *ev) {
    return ev->duration_ns < 0 ? -1 : ev->duration_precise ? 1 : 0;
}

/* on_db_event's way out of the fast path (a tail call: the fast path saves
 * no registers). */
__attribute__((cold, noinline)) static void on_db_event_slow(const noodle_db_event *ev, void *arg) {
    record(arg, ev->sql, ev->sql_len, ev->duration_ns, precision_of(ev), ev->code, ev->rows);
}

void noodle_monitor_txn_observer(const noodle_txn_event *ev, void *arg) {
    noodle_monitor *mon = arg;
    if (mon == NULL || ev == NULL) return;
    mon_event me = {MON_SLOT_TXN, 0, ev->code, ev->attempts, ev->duration_ns, -1};
    mon_thread *t = this_thread(mon);
    if (t != NULL) {
        push(mon, t, &me);
        return;
    }
    pthread_mutex_lock(&mon->lock);
    apply(mon, &me);
    pthread_mutex_unlock(&mon->lock);
}

__attribute__((hot)) static void on_db_event(const noodle_db_event *ev, void *arg) {
    if (arg == NULL || ev->sql == NULL ||
        !record_fast(arg, ev->sql, ev->sql_len, ev->duration_ns, precision_of(ev), ev->code,
                     ev->rows))
        on_db_event_slow(ev, arg);
}

void noodle_monitor_set_replication_lag(noodle_monitor *mon, double lag_ms) {
    if (mon == NULL) return;
    pthread_mutex_lock(&mon->lock);
    mon->replication_lag_ms = lag_ms;
    pthread_mutex_unlock(&mon->lock);
}

/* ---- sources ----------------------------------------------------------------------------------------- */

/* Every pool event but the fast path's ACQUIRED / RELEASED, which the pool's
 * own snapshot counts (not observing them keeps the fast path free). */
#define POOL_EVENTS (NOODLE_POOL_EVENTS_ALL & ~(NOODLE_POOL_EVENT_BIT(NOODLE_POOL_EV_ACQUIRED) | \
                                                NOODLE_POOL_EVENT_BIT(NOODLE_POOL_EV_RELEASED)))

static void on_pool_event(const noodle_pool_event *ev, void *arg) {
    mon_source *s = arg;
    noodle_monitor *mon = s->mon;
    pthread_mutex_lock(&mon->lock);
    switch (ev->type) {
    case NOODLE_POOL_EV_OPENED: s->ev_opened++; break;
    case NOODLE_POOL_EV_CLOSED: s->ev_closed++; break;
    case NOODLE_POOL_EV_TIMED_OUT:
        s->ev_timeouts++;
        count_error(mon, SRC_POOL, ev->code ? ev->code : NOODLE_E_POOL_TIMEOUT);
        break;
    case NOODLE_POOL_EV_VALIDATION_FAILED:
        s->ev_validation_failed++;
        count_error(mon, SRC_POOL, ev->code);
        break;
    case NOODLE_POOL_EV_CONNECT_FAILED:
        s->ev_connect_failed++;
        count_error(mon, SRC_POOL, ev->code);
        break;
    case NOODLE_POOL_EV_LEAK_SUSPECTED: s->ev_leaks++; break;
    case NOODLE_POOL_EV_SHUTDOWN: s->detached = true; break; /* it may be freed soon */
    default: break;
    }
    pthread_mutex_unlock(&mon->lock);
}

static void on_cluster_event(const noodle_cluster_event *ev, void *arg) {
    mon_source *s = arg;
    noodle_monitor *mon = s->mon;
    int64_t now = noodle_clock_now(mon->clock);
    pthread_mutex_lock(&mon->lock);
    switch (ev->type) {
    case NOODLE_CLUSTER_EV_FAILOVER:
        /* "a primary is in use": the first one, or the same one back after
         * an outage, is no failover (the cluster counts the same way) */
        if (s->last_primary >= 0 && s->last_primary != ev->node) {
            s->failovers++;
            s->last_failover_at = now;
        }
        s->last_primary = ev->node;
        break;
    case NOODLE_CLUSTER_EV_DEMOTED: s->demotions++; break;
    case NOODLE_CLUSTER_EV_PRIMARY_LOST: s->primary_lost++; break;
    case NOODLE_CLUSTER_EV_NODE_DOWN:
        s->nodes_down++;
        if (ev->code != 0) count_error(mon, SRC_CLUSTER, ev->code);
        break;
    case NOODLE_CLUSTER_EV_BREAKER:
        if (ev->breaker == NOODLE_BREAKER_OPEN) s->breaker_opens++;
        break;
    case NOODLE_CLUSTER_EV_CLOSING: s->detached = true; break; /* freed next */
    default: break;
    }
    pthread_mutex_unlock(&mon->lock);
}

static void refresh_source(mon_source *s) {
    if (s->detached) return;
    if (s->kind == SOURCE_POOL) {
        noodle_pool_get_metrics((noodle_pool *)s->ptr, &s->pool);
    } else {
        noodle_cluster *c = (noodle_cluster *)s->ptr;
        noodle_cluster_get_metrics(c, &s->cluster);
        s->nnodes = s->cluster.nodes < MON_MAX_NODES ? s->cluster.nodes : MON_MAX_NODES;
        for (size_t i = 0; i < s->nnodes; i++)
            if (noodle_cluster_node(c, i, &s->nodes[i], NULL) != 0) s->nnodes = i;
    }
    s->have_snapshot = true;
}

void noodle__monitor_catch_up(noodle_monitor *mon) {
    drain_all(mon);
    for (size_t i = 0; i < mon->nsources; i++) refresh_source(&mon->sources[i]);
}

/* A new source entry (lock held), or NULL with *rc and err filled. */
static mon_source *add_source(noodle_monitor *mon, mon_source_kind kind, const void *ptr, int *rc,
                              noodle_error *err) {
    for (size_t i = 0; i < mon->nsources; i++)
        if (mon->sources[i].ptr == ptr) {
            *rc = NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT, "this %s is already watched",
                             kind == SOURCE_POOL ? "pool" : "cluster");
            return NULL;
        }
    if (mon->nsources == MON_MAX_SOURCES) {
        *rc = NOODLE_ERR(err, NOODLE_E_MONITOR_TOO_MANY_SOURCES,
                         "the monitor already watches %d pools and clusters", MON_MAX_SOURCES);
        return NULL;
    }
    mon_source *s = &mon->sources[mon->nsources];
    memset(s, 0, sizeof *s);
    s->mon = mon;
    s->kind = kind;
    s->ptr = ptr;
    s->last_primary = -1;
    return s;
}

/* Register the observer (no monitor lock held: the registry takes its own). */
static int observe_source(noodle_monitor *mon, mon_source *s, noodle_error *err) {
    noodle_error inner;
    int rc = s->kind == SOURCE_POOL
                 ? noodle_pool_observe_events((noodle_pool *)s->ptr, on_pool_event, s, POOL_EVENTS,
                                              &inner)
                 : noodle_cluster_observe((noodle_cluster *)s->ptr, on_cluster_event, s, &inner);
    if (rc != 0)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_TOO_MANY_SOURCES,
                          "could not observe the %s: [NOODLE-%d] %s",
                          s->kind == SOURCE_POOL ? "pool" : "cluster", inner.code, inner.message);
    pthread_mutex_lock(&mon->lock);
    mon->nsources++; /* published only once its observer is in place */
    refresh_source(s);
    /* the primary in use when watching began: a change from it is a failover */
    if (s->kind == SOURCE_CLUSTER && s->last_primary < 0) s->last_primary = s->cluster.primary;
    s->wait_prev[0] = s->pool.acquire_wait; /* alert windows start now */
    for (size_t i = 0; i < s->nnodes; i++) s->wait_prev[1 + i] = s->nodes[i].pool.acquire_wait;
    pthread_mutex_unlock(&mon->lock);
    return 0;
}

int noodle_monitor_watch_pool(noodle_monitor *mon, noodle_pool *pool, const char *name,
                              noodle_error *err) {
    if (mon == NULL || pool == NULL)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT, "watch_pool needs a monitor and a pool");
    pthread_mutex_lock(&mon->eval_lock); /* one watch at a time: the entry is not yet counted */
    pthread_mutex_lock(&mon->lock);
    int rc = 0;
    mon_source *s = add_source(mon, SOURCE_POOL, pool, &rc, err);
    if (s != NULL) {
        if (name != NULL) noodle__strlcpy(s->name, name, sizeof s->name);
        else snprintf(s->name, sizeof s->name, "pool%zu", mon->nsources);
        for (char *c = s->name; *c; c++) /* a label value needing no escapes */
            if (*c == '"' || *c == '\\' || *c == '\n') *c = '_';
    }
    pthread_mutex_unlock(&mon->lock);
    if (s != NULL) rc = observe_source(mon, s, err);
    pthread_mutex_unlock(&mon->eval_lock);
    return rc;
}

int noodle_monitor_watch_cluster(noodle_monitor *mon, noodle_cluster *cluster, noodle_error *err) {
    if (mon == NULL || cluster == NULL)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT,
                          "watch_cluster needs a monitor and a cluster");
    noodle_cluster_node_info *nodes = calloc(MON_MAX_NODES, sizeof *nodes);
    if (nodes == NULL)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_NO_MEMORY, "no memory for the cluster's nodes");
    pthread_mutex_lock(&mon->eval_lock);
    pthread_mutex_lock(&mon->lock);
    int rc = 0;
    mon_source *s = add_source(mon, SOURCE_CLUSTER, cluster, &rc, err);
    if (s != NULL) {
        snprintf(s->name, sizeof s->name, "cluster%zu", mon->nsources);
        s->nodes = nodes;
        mon->fixed_bytes += MON_MAX_NODES * sizeof *nodes;
        nodes = NULL;
    }
    pthread_mutex_unlock(&mon->lock);
    if (s != NULL) rc = observe_source(mon, s, err);
    if (rc != 0 && s != NULL) { /* not counted: the next watch reuses the entry */
        pthread_mutex_lock(&mon->lock);
        mon->fixed_bytes -= MON_MAX_NODES * sizeof *s->nodes;
        free(s->nodes);
        s->nodes = NULL;
        pthread_mutex_unlock(&mon->lock);
    }
    pthread_mutex_unlock(&mon->eval_lock);
    free(nodes);
    return rc;
}

void noodle_monitor_unwatch(noodle_monitor *mon, const void *source) {
    if (mon == NULL) return;
    pthread_mutex_lock(&mon->lock);
    for (size_t i = 0; i < mon->nsources; i++)
        if (mon->sources[i].ptr == source) mon->sources[i].detached = true;
    pthread_mutex_unlock(&mon->lock);
}

int noodle_monitor_watch_db(noodle_monitor *mon, noodle_db *db, noodle_error *err) {
    if (mon == NULL || db == NULL)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT, "watch_db needs a monitor and a db");
    noodle_error inner;
    if (noodle_db_observe_sampled(db, on_db_event, mon, mon->time_every, &inner) != 0)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_TOO_MANY_SOURCES,
                          "could not observe the db: [NOODLE-%d] %s", inner.code, inner.message);
    return 0;
}

/* ---- alerts ----------------------------------------------------------------------------------------- */

/* acc += cur - prev bucket by bucket; prev = cur. */
static void add_window(noodle_histogram *acc, const noodle_histogram *cur, noodle_histogram *prev) {
    for (size_t i = 0; i < NOODLE_HISTOGRAM_BUCKETS; i++) {
        uint64_t d = cur->buckets[i] > prev->buckets[i] ? cur->buckets[i] - prev->buckets[i] : 0;
        acc->buckets[i] += d;
        acc->count += d;
    }
    if (cur->max_us > acc->max_us) acc->max_us = cur->max_us;
    *prev = *cur;
}

static void pool_figures(const noodle_pool_metrics *m, noodle_histogram *prev, double *util,
                         noodle_histogram *wait) {
    if (m->max_connections > 0) {
        double u = (double)m->active / (double)m->max_connections;
        if (*util < 0 || u > *util) *util = u;
    }
    add_window(wait, &m->acquire_wait, prev);
}

/* Pool utilisation (max over pools) and the p99 acquire wait (ms) since the
 * last evaluation; negative: unknown. */
static void pools_now(noodle_monitor *mon, double *util, double *wait_ms) {
    noodle_histogram wait;
    memset(&wait, 0, sizeof wait);
    *util = -1;
    for (size_t i = 0; i < mon->nsources; i++) {
        mon_source *s = &mon->sources[i];
        if (s->detached || !s->have_snapshot) continue;
        if (s->kind == SOURCE_POOL) pool_figures(&s->pool, &s->wait_prev[0], util, &wait);
        for (size_t n = 0; s->kind == SOURCE_CLUSTER && n < s->nnodes; n++)
            pool_figures(&s->nodes[n].pool, &s->wait_prev[1 + n], util, &wait);
    }
    *wait_ms = wait.count > 0 ? (double)noodle_histogram_quantile(&wait, 0.99) / 1000.0 : -1;
}

/* The value of every alert now; NAN: unknown. Starts a new window. */
static void alert_values(noodle_monitor *mon, double v[NOODLE_ALERTS]) {
    noodle_histogram window, latency;
    memset(&window, 0, sizeof window);
    noodle__monitor_latency(mon, &latency);
    add_window(&window, &latency, &mon->window_start);
    uint64_t errors = mon->query_errors - mon->window_start_errors;
    uint64_t calls = mon->queries - mon->window_start_queries;
    mon->window_start_errors = mon->query_errors;
    mon->window_start_queries = mon->queries;
    v[NOODLE_ALERT_P99_LATENCY] =
        window.count > 0 ? (double)noodle_histogram_quantile(&window, 0.99) / 1e6 : NAN;
    v[NOODLE_ALERT_ERROR_RATE] = calls > 0 ? (double)errors / (double)calls : NAN;
    double util, wait;
    pools_now(mon, &util, &wait);
    v[NOODLE_ALERT_POOL_UTILISATION] = util >= 0 ? util : NAN;
    v[NOODLE_ALERT_ACQUIRE_WAIT] = wait >= 0 ? wait : NAN;
    v[NOODLE_ALERT_REPLICATION_LAG] = mon->replication_lag_ms >= 0 ? mon->replication_lag_ms : NAN;
}

/* Invariant 5: the transitions, into out; returns how many. */
static size_t evaluate_locked(noodle_monitor *mon, noodle_alert_event out[NOODLE_ALERTS]) {
    noodle__monitor_catch_up(mon);
    double v[NOODLE_ALERTS];
    alert_values(mon, v);
    int64_t now = noodle_clock_now(mon->clock);
    size_t n = 0;
    for (int k = 0; k < NOODLE_ALERTS; k++) {
        mon->alert_value[k] = v[k];
        double thr = mon->threshold[k], clear = thr * mon->clear_ratio;
        if (thr <= 0 || isnan(v[k])) continue;
        bool raise = !mon->alert_active[k] && v[k] >= thr;
        bool fall = mon->alert_active[k] && v[k] < clear;
        if (!raise && !fall) continue;
        mon->alert_active[k] = raise;
        out[n++] = (noodle_alert_event){.kind = (noodle_alert_kind)k, .name = alert_names[k],
                                        .raised = raise, .value = v[k], .threshold = thr,
                                        .clear_level = clear, .time = now};
    }
    return n;
}

static void deliver(noodle_monitor *mon, const noodle_alert_event *ev) {
    static const char *const units[NOODLE_ALERTS] = {" ms", "", "", " ms", " ms"};
    const char *u = units[ev->kind];
    if (!mon->no_log) {
        if (ev->raised)
            fprintf(mon->log, "noodle monitor: alert %s raised: %.6g%s >= threshold %.6g%s\n",
                    ev->name, ev->value, u, ev->threshold, u);
        else
            fprintf(mon->log,
                    "noodle monitor: alert %s cleared: %.6g%s < clear level %.6g%s (threshold "
                    "%.6g%s)\n",
                    ev->name, ev->value, u, ev->clear_level, u, ev->threshold, u);
        fflush(mon->log);
    }
    if (mon->on_alert != NULL) mon->on_alert(ev, mon->alert_arg);
}

void noodle_monitor_evaluate(noodle_monitor *mon) {
    if (mon == NULL) return;
    noodle_alert_event evs[NOODLE_ALERTS];
    pthread_mutex_lock(&mon->eval_lock);
    pthread_mutex_lock(&mon->lock);
    size_t n = evaluate_locked(mon, evs);
    pthread_mutex_unlock(&mon->lock);
    for (size_t i = 0; i < n; i++) deliver(mon, &evs[i]);
    pthread_mutex_unlock(&mon->eval_lock);
}

bool noodle_monitor_alert_active(noodle_monitor *mon, noodle_alert_kind k) {
    if (mon == NULL || (unsigned)k >= NOODLE_ALERTS) return false;
    pthread_mutex_lock(&mon->lock);
    bool a = mon->alert_active[k];
    pthread_mutex_unlock(&mon->lock);
    return a;
}

/* ---- system sampler ------------------------------------------------------------------------------------ */

/* The sampler's cost is CPU time spent by the sampling thread: a cost, not a
 * point on the monitor's time line, so it is read from the thread's CPU
 * clock rather than the (possibly virtual) noodle_clock. */
static int64_t thread_cpu_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return -1;
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int noodle_monitor_sample_now(noodle_monitor *mon, noodle_error *err) {
    if (mon == NULL) return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT, "sample_now needs a monitor");
    noodle_sys_sample s;
    noodle_error inner;
    noodle_error_clear(&inner);
    int64_t c0 = thread_cpu_ns();
    int rc = noodle__sys_sample(mon->disk_path, &s, &inner);
    int64_t c1 = thread_cpu_ns();
    pthread_mutex_lock(&mon->lock);
    mon->sys = s;
    mon->have_sys = true;
    mon->samples++;
    if (rc != 0) mon->sample_failures++;
    mon->sample_cost_ns = c0 >= 0 && c1 >= c0 ? c1 - c0 : -1;
    pthread_mutex_unlock(&mon->lock);
    if (rc != 0)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_SAMPLE_FAILED, "system sample incomplete: %s",
                          inner.message);
    return 0;
}

static void *sampler_main(void *arg) {
    noodle_monitor *mon = arg;
    pthread_mutex_lock(&mon->lock);
    int64_t next = noodle_clock_now(mon->clock); /* the first sample at once */
    while (!mon->stopping) {
        if (noodle_clock_now(mon->clock) < next) {
            noodle_clock_cond_wait_until(mon->clock, &mon->cond, &mon->lock, next);
            continue;
        }
        pthread_mutex_unlock(&mon->lock);
        int rc = noodle_monitor_sample_now(mon, NULL); /* failures are counted and shown */
        (void)rc;
        noodle_monitor_evaluate(mon);
        pthread_mutex_lock(&mon->lock);
        next = noodle_deadline_after(mon->clock, mon->sample_interval_ns);
    }
    pthread_mutex_unlock(&mon->lock);
    return NULL;
}

/* ---- open and close --------------------------------------------------------------------------------------- */

static size_t pow2_at_least(size_t n) {
    size_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

static int take_options(noodle_monitor *mon, const noodle_monitor_options *o, noodle_error *err) {
    if (o->clear_ratio < 0 || o->clear_ratio > 1 || o->p99_latency_ms < 0 || o->error_rate < 0 ||
        o->pool_utilisation < 0 || o->acquire_wait_ms < 0 || o->replication_lag_ms < 0)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT,
                          "monitor thresholds must be >= 0 and clear_ratio in [0, 1]");
    if (o->max_fingerprints > (1u << 24) || o->thread_cache_entries > (1u << 20) ||
        o->thread_cache_text_max > (1u << 24) ||
        o->thread_ring_events > (1u << 24) || o->slow_log_size > (1u << 20) ||
        (o->fingerprint_text_max != 0 && o->fingerprint_text_max < 16))
        return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT,
                          "monitor sizes out of range (max_fingerprints <= 2^24, "
                          "fingerprint_text_max >= 16, ...)");
    mon->clock = o->clock;
    mon->max_fp = o->max_fingerprints ? o->max_fingerprints : 1000;
    mon->text_max = o->fingerprint_text_max ? o->fingerprint_text_max : 512;
    mon->cache_entries = pow2_at_least(o->thread_cache_entries ? o->thread_cache_entries : 128);
    mon->cache_text_max = o->thread_cache_text_max ? o->thread_cache_text_max : 2048;
    mon->ring_events = pow2_at_least(o->thread_ring_events ? o->thread_ring_events : 512);
    mon->max_threads = o->max_threads ? o->max_threads : 256;
    mon->slow_ns = o->slow_query_ms < 0 ? INT64_MAX : NOODLE_MS(o->slow_query_ms ? o->slow_query_ms : 1000);
    mon->slow_log_size = o->slow_log_size ? o->slow_log_size : 64;
    mon->sample_interval_ns = o->sample_interval_ms > 0 ? NOODLE_MS(o->sample_interval_ms) : 0;
    mon->time_every = o->timing_sample_every     ? o->timing_sample_every
                      : noodle__ticks_cheap() ? 1
                                              : NOODLE_MONITOR_TIME_EVERY_SLOW_CLOCK;
    double thr[NOODLE_ALERTS] = {o->p99_latency_ms, o->error_rate, o->pool_utilisation,
                                 o->acquire_wait_ms, o->replication_lag_ms};
    memcpy(mon->threshold, thr, sizeof thr);
    mon->clear_ratio = o->clear_ratio > 0 ? o->clear_ratio : 0.8;
    mon->on_alert = o->on_alert;
    mon->alert_arg = o->alert_arg;
    mon->log = o->log ? o->log : stderr;
    mon->no_log = o->no_log;
    mon->replication_lag_ms = -1;
    mon->sample_cost_ns = -1;
    for (int k = 0; k < NOODLE_ALERTS; k++) mon->alert_value[k] = NAN;
    return 0;
}

/* The fixed tables (invariant 1). */
static int allocate(noodle_monitor *mon, const char *disk_path, noodle_error *err) {
    size_t nb = pow2_at_least(mon->max_fp * 2);
    mon->slots = calloc(mon->max_fp, sizeof *mon->slots);
    mon->gens = calloc(mon->max_fp, sizeof *mon->gens);
    mon->texts = malloc((mon->max_fp + 1) * mon->text_max); /* + a scratch row */
    mon->buckets = malloc(nb * sizeof *mon->buckets);
    mon->free_stack = malloc(mon->max_fp * sizeof *mon->free_stack);
    mon->order = malloc(mon->max_fp * sizeof *mon->order);
    mon->slow = calloc(mon->slow_log_size, sizeof *mon->slow);
    mon->disk_path = disk_path ? strdup(disk_path) : NULL;
    if (!mon->slots || !mon->gens || !mon->texts || !mon->buckets || !mon->free_stack ||
        !mon->order || !mon->slow || (disk_path && !mon->disk_path))
        return NOODLE_ERR(err, NOODLE_E_MONITOR_NO_MEMORY,
                          "no memory for a monitor of %zu fingerprints", mon->max_fp);
    mon->bucket_mask = nb - 1;
    for (size_t i = 0; i < nb; i++) mon->buckets[i] = MON_SLOT_NONE;
    for (size_t i = 0; i < mon->max_fp; i++) mon->free_stack[i] = (uint32_t)(mon->max_fp - 1 - i);
    mon->nfree = mon->max_fp;
    mon->fixed_bytes = sizeof *mon +
                       mon->max_fp * (sizeof *mon->slots + sizeof *mon->gens +
                                      sizeof *mon->free_stack + sizeof *mon->order) +
                       (mon->max_fp + 1) * mon->text_max + nb * sizeof *mon->buckets +
                       mon->slow_log_size * sizeof *mon->slow +
                       (disk_path ? strlen(disk_path) + 1 : 0);
    return 0;
}

static void free_monitor(noodle_monitor *mon) {
    for (mon_thread *t = mon->threads, *next; t != NULL; t = next) {
        next = t->next;
        for (size_t i = 0; i <= t->cache_mask; i++)
            if (t->cache[i].cap > 0) free(t->cache[i].u.text);
        free(t->cache);
        free(t->ring);
        free(t);
    }
    for (size_t i = 0; i < mon->nsources; i++) free(mon->sources[i].nodes);
    free(mon->slots);
    free(mon->gens);
    free(mon->texts);
    free(mon->buckets);
    free(mon->free_stack);
    free(mon->order);
    free(mon->slow);
    free(mon->disk_path);
    pthread_mutex_destroy(&mon->lock);
    pthread_mutex_destroy(&mon->eval_lock);
    pthread_cond_destroy(&mon->cond);
    free(mon);
}

int noodle_monitor_open(const noodle_monitor_options *opts, noodle_monitor **out,
                        noodle_error *err) {
    if (out == NULL)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT, "monitor_open needs out");
    *out = NULL;
    noodle_monitor_options o = NOODLE_MONITOR_OPTIONS_INIT;
    if (opts != NULL && opts->struct_size < sizeof *opts)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT,
                          "monitor options need struct_size = sizeof(noodle_monitor_options)");
    if (opts != NULL) o = *opts;
    noodle_monitor *mon = calloc(1, sizeof *mon);
    if (mon == NULL) return NOODLE_ERR(err, NOODLE_E_MONITOR_NO_MEMORY, "no memory for a monitor");
    mon->id = atomic_fetch_add(&next_monitor_id, 1);
    pthread_mutex_init(&mon->lock, NULL);
    pthread_mutex_init(&mon->eval_lock, NULL);
    noodle_cond_init(&mon->cond);
    int rc = take_options(mon, &o, err);
    if (rc == 0) rc = allocate(mon, o.disk_path, err);
    if (rc == 0 && mon->sample_interval_ns > 0) {
        int e = noodle_clock_thread_start(mon->clock, &mon->sampler, sampler_main, mon);
        if (e != 0)
            rc = NOODLE_ERR(err, NOODLE_E_MONITOR_THREAD_START,
                            "could not start the monitor's sampler thread: %s", strerror(e));
        mon->sampler_running = e == 0;
    }
    if (rc != 0) {
        free_monitor(mon);
        return rc;
    }
    *out = mon;
    return 0;
}

void noodle_monitor_close(noodle_monitor *mon) {
    if (mon == NULL) return;
    if (mon->sampler_running) {
        pthread_mutex_lock(&mon->lock);
        mon->stopping = true;
        noodle_clock_cond_broadcast(mon->clock, &mon->cond);
        pthread_mutex_unlock(&mon->lock);
        noodle_clock_thread_join(mon->clock, mon->sampler);
    }
    free_monitor(mon);
}

/* ---- reading ------------------------------------------------------------------------------------------------ */

size_t noodle__monitor_bytes_locked(noodle_monitor *mon) {
    size_t n = mon->fixed_bytes;
    for (mon_thread *t = mon->threads; t != NULL; t = t->next)
        n += sizeof *t + (t->cache_mask + 1) * sizeof *t->cache +
             (t->ring_mask + 1) * sizeof *t->ring +
             atomic_load_explicit(&t->text_bytes, memory_order_relaxed);
    return n;
}

size_t noodle_monitor_memory_bytes(noodle_monitor *mon) {
    if (mon == NULL) return 0;
    pthread_mutex_lock(&mon->lock);
    size_t n = noodle__monitor_bytes_locked(mon);
    pthread_mutex_unlock(&mon->lock);
    return n;
}

void noodle_monitor_get_metrics(noodle_monitor *mon, noodle_monitor_metrics *out) {
    if (mon == NULL || out == NULL) return;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&mon->lock);
    noodle__monitor_catch_up(mon);
    out->queries = mon->queries;
    out->query_errors = mon->query_errors;
    out->dropped = mon->dropped;
    out->evictions = mon->evictions;
    out->fingerprints = mon->nused;
    out->transactions = mon->txns;
    out->txn_failures = mon->txn_failures;
    out->txn_retries = mon->txn_retries;
    out->txn_outcome_unknown = mon->txn_unknown;
    for (size_t i = 0; i < mon->nsources; i++) {
        out->failovers += mon->sources[i].failovers;
        if (mon->sources[i].last_failover_at > out->last_failover_at)
            out->last_failover_at = mon->sources[i].last_failover_at;
    }
    out->slow_queries = mon->slow_total;
    out->samples = mon->samples;
    out->sample_cost_ns = mon->sample_cost_ns;
    out->memory_bytes = noodle__monitor_bytes_locked(mon);
    memcpy(out->alert_active, mon->alert_active, sizeof out->alert_active);
    pthread_mutex_unlock(&mon->lock);
}

void noodle_monitor_slow_queries(noodle_monitor *mon, noodle_monitor_slow_query *out, size_t cap,
                                 size_t *count) {
    size_t n = 0;
    if (mon != NULL && (out != NULL || cap == 0)) {
        pthread_mutex_lock(&mon->lock);
        size_t have = mon->slow_count, skip = have > cap ? have - cap : 0;
        size_t first = (mon->slow_next + mon->slow_log_size - have) % (mon->slow_log_size ? mon->slow_log_size : 1);
        for (size_t i = skip; i < have; i++)
            out[n++] = mon->slow[(first + i) % mon->slow_log_size];
        pthread_mutex_unlock(&mon->lock);
    }
    if (count != NULL) *count = n;
}

int noodle_monitor_query_stats(noodle_monitor *mon, const char *sql, size_t sql_len,
                               noodle_monitor_query_stat *out, noodle_error *err) {
    if (mon == NULL || sql == NULL || out == NULL)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT,
                          "query_stats needs a monitor, a text and out");
    pthread_mutex_lock(&mon->lock);
    drain_all(mon);
    char *fp = mon->texts + (size_t)mon->max_fp * mon->text_max;
    uint64_t hash;
    size_t full = noodle__fingerprint(sql, sql_len, fp, mon->text_max, &hash);
    uint32_t i = lookup(mon, hash, fp, full < mon->text_max ? full : mon->text_max - 1);
    if (i != MON_SLOT_NONE) {
        const mon_slot *s = &mon->slots[i];
        size_t n = s->text_len < sizeof out->fingerprint ? s->text_len : sizeof out->fingerprint - 1;
        memcpy(out->fingerprint, noodle__monitor_slot_text(mon, i), n);
        out->fingerprint[n] = '\0';
        out->id = s->hash;
        out->calls = s->calls;
        out->timed_calls = s->latency.count;
        out->errors = s->errors;
        out->rows = s->rows;
        out->total_ns = noodle__monitor_total_ns(s);
        out->max_ns = s->max_ns;
        out->latency = s->latency;
    }
    pthread_mutex_unlock(&mon->lock);
    if (i == MON_SLOT_NONE)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT,
                          "no statistics kept for that fingerprint (never seen, or evicted)");
    return 0;
}
