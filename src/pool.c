/* The connection pool (see include/noodle/pool.h and docs/pool.md).
 *
 * Design notes.
 *
 * A pool owns a fixed array of slots (capacity); each slot holds at most one
 * connection and is in exactly one state:
 *
 *            opener                acquire (CAS)
 *   EMPTY ----------> OPENING ----------------------> IN_USE <---+
 *     ^                  |  \        (handed to a waiter)  |  |  | release with
 *     |   connect failed |   \-----------> IDLE <----------+  |  | a waiter: handed
 *     +------------------+                 |   release        |  | over, stays IN_USE
 *     |                                    | reap / retire /  |  |
 *     |                                    v resize / shutdown|  |
 *     +------------------------------- CLOSING <--------------+--+
 *                  closed (no lock)          destroy (broken, lifetime,
 *                                            validation, generation, ...)
 *
 * A slot IN_USE belongs to one thread (the acquirer, then the releaser); it
 * validates, rolls back or destroys the connection without any lock held.
 *
 * Invariants:
 *  1. total + opening <= max_connections <= capacity at every moment a slot
 *     becomes OPENING (checked under the lock); shrinking below total only
 *     closes connections, it never opens any.
 *  2. No backend I/O and no observer call happens with the pool lock held:
 *     connects run on the opener thread outside the lock, closes, validations
 *     and rollbacks run on the thread that owns the slot.
 *  3. Waiters are served FIFO: a waiter is enqueued under the lock, and a
 *     released or newly opened connection is handed directly to the head of
 *     the queue. The lock-free fast path (a thread's last slot, then a scan
 *     for an IDLE slot) is only taken while nobody waits.
 *  4. No lost wake-up: an acquirer publishes itself in `waiting` (seq_cst)
 *     before it scans for IDLE slots under the lock; a releaser publishes
 *     IDLE (seq_cst exchange) before it reads `waiting`. One of them sees the
 *     other: either the scan finds the slot, or the releaser takes the lock,
 *     reclaims the slot by CAS and hands it to the head waiter.
 *  5. Connections are opened only on the opener thread, one at a time, and
 *     only while waiters outnumber opens in progress or the pool is below
 *     min_idle: a burst of waiters against slow connects opens what demand
 *     needs, not one connection per waiter. Failed connects back off
 *     exponentially with jitter.
 *  6. The acquire / release fast path reads only the coarse clock and touches
 *     only the slot's own cache line and the shared read-mostly fields: its
 *     statistics (hold time, wait, count) live in the slot and are written
 *     by the owning thread alone (relaxed atomics, so that metrics may read
 *     them concurrently).
 *
 * Lock order: pool->lock only (the backend and mock keep their own locks and
 * are never called with pool->lock held).
 */
#include <errno.h>
#include <linux/membarrier.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "conn_internal.h"
#include "failpoint_internal.h"
#include "internal.h"
#include "noodle/pool.h"

enum slot_state { S_EMPTY = 0, S_OPENING, S_IDLE, S_IN_USE, S_CLOSING };

#define MAX_OBSERVERS 8

/* A histogram written by one thread at a time and read by metrics. */
typedef struct hist {
    _Atomic uint64_t count, sum_us, max_us;
    _Atomic uint64_t buckets[NOODLE_HISTOGRAM_BUCKETS];
} hist;

typedef struct slot {
    _Atomic int state;
    int index;
    /* written by the opener before the slot is published IDLE / IN_USE;
     * read by the owner */
    noodle_conn *conn;
    uint64_t generation;
    int64_t created_at, expires_at;
    /* written by the owner, read by the housekeeper */
    _Atomic int64_t last_used;   /* coarse clock */
    _Atomic int64_t acquired_at; /* coarse (or precise) clock; 0 when not in use */
    _Atomic(const char *) owner_file;
    _Atomic int owner_line;
    _Atomic int leak_reported;
    hist wait, hold; /* written by the owner only */
} __attribute__((aligned(64))) slot;

typedef struct waiter {
    struct waiter *next;
    pthread_cond_t cond;
    slot *handed; /* set by whoever serves it */
    int done;     /* 1: served or cancelled */
    int closed;   /* cancelled by shutdown */
    int redirected; /* cancelled by noodle_pool_redirect_waiters */
} waiter;

typedef struct observer {
    noodle_pool_observer fn;
    void *arg;
    unsigned mask; /* the event types it wants: bit 1 << type */
} observer;

#define HOT_EVENTS ((1u << NOODLE_POOL_EV_ACQUIRED) | (1u << NOODLE_POOL_EV_RELEASED))

struct noodle_pool {
    uint64_t id; /* unique per pool instance (thread caches key on it) */
    const noodle_clock *clock;
    const noodle_backend_ops *ops;
    char *url, *app_name;
    int64_t capacity;
    slot *slots;

    /* settings (ns); max/min may change by resize */
    _Atomic int64_t max_connections, min_idle;
    int64_t acquire_timeout, idle_timeout, max_lifetime, bypass, validation_timeout,
        connect_timeout, leak_threshold, housekeeping_interval, backoff_base, backoff_max;
    bool precise_hold;
    bool real_clock; /* read CLOCK_MONOTONIC_COARSE directly on the fast path */
    int64_t coarse_resolution;

    /* pool->lock guards everything below that is not atomic, the waiter
     * queue, and slot transitions out of EMPTY / OPENING / CLOSING */
    pthread_mutex_t lock;
    pthread_cond_t opener_cond; /* demand for a connection, or stop */
    pthread_cond_t house_cond;  /* stop */
    pthread_cond_t change_cond; /* a connection opened or closed (warm-up, drain) */
    waiter *head, *tail;
    _Atomic int64_t waiting; /* queue length; read without the lock (fast path) */
    _Atomic int64_t total;   /* open connections */
    int64_t opening;
    int64_t peak_total;
    _Atomic uint64_t generation;
    _Atomic int shutting_down;
    int stop_threads;
    uint64_t rng;
    int consecutive_failures;
    int64_t backoff_until;
    char last_connect_error[256];
    int (*connect_gate)(void *arg, noodle_error *err);
    void (*connect_done)(void *arg, noodle_conn *conn, int code, const noodle_error *err);
    void *connect_hook_arg;
    hist timed_out_wait; /* waits of acquires that timed out (under the lock) */

    _Atomic uint64_t opened, closed[NOODLE_CLOSE_REASONS], timeouts, validation_failures,
        connect_failures, leaks;

    observer observers[MAX_OBSERVERS];
    _Atomic int nobservers;
    _Atomic int nhot_observers; /* of them, those wanting ACQUIRED or RELEASED */

    pthread_t opener, housekeeper;
    int threads_started; /* 0, 1 (opener) or 2 */
    int *hk_idx;                   /* housekeeper scratch: 3 x capacity slot indexes */
    struct leak_report *hk_leaks;  /* housekeeper scratch: capacity reports */
};

static _Atomic uint64_t next_pool_id = 1;

/* The slot a thread used last, per pool (a few pools per thread). */
typedef struct tl_entry {
    uint64_t pool_id;
    int slot;
} tl_entry;
/* initial-exec: the fast path must not call __tls_get_addr in the shared
 * library (68 bytes of static TLS) */
static _Thread_local tl_entry tl_cache[4] __attribute__((tls_model("initial-exec")));
static _Thread_local unsigned tl_next __attribute__((tls_model("initial-exec")));

/* ---- small helpers ------------------------------------------------------- */

static int64_t ms_to_ns(int64_t ms) { return ms > INT64_MAX / 1000000 ? INT64_MAX : ms * 1000000; }

static uint64_t next_random(noodle_pool *p) { return noodle__random_next(&p->rng); } /* under the lock */

static inline void hist_add(hist *h, uint64_t us) {
    /* one writer at a time: plain read-modify-write through relaxed atomics */
    atomic_store_explicit(&h->count, atomic_load_explicit(&h->count, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    if (us > 0) {
        atomic_store_explicit(&h->sum_us,
                              atomic_load_explicit(&h->sum_us, memory_order_relaxed) + us,
                              memory_order_relaxed);
        if (us > atomic_load_explicit(&h->max_us, memory_order_relaxed))
            atomic_store_explicit(&h->max_us, us, memory_order_relaxed);
    }
    _Atomic uint64_t *b = &h->buckets[noodle__bucket_of(us)];
    atomic_store_explicit(b, atomic_load_explicit(b, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* Add h to out. Bucket 0 is not stored for acquire waits recorded on the
 * fast path (count only): whatever the count has beyond the other buckets is
 * a zero. */
static void hist_merge(noodle_histogram *out, const hist *h) {
    uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed), counted = 0;
    out->count += count;
    out->sum_us += atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&h->max_us, memory_order_relaxed);
    if (m > out->max_us) out->max_us = m;
    for (size_t i = 1; i < NOODLE_HISTOGRAM_BUCKETS; i++) {
        uint64_t b = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        out->buckets[i] += b;
        counted += b;
    }
    /* read concurrently, count may lag the buckets by an update in flight */
    out->buckets[0] += count > counted ? count - counted : 0;
}

static uint64_t ns_to_us(int64_t ns) { return ns <= 0 ? 0 : (uint64_t)ns / 1000; }

static int slot_state(const slot *s) { return atomic_load_explicit(&s->state, memory_order_acquire); }

/* The one place slot states change (see the diagram). */
static bool slot_cas(slot *s, int from, int to) {
    int expected = from;
    return atomic_compare_exchange_strong(&s->state, &expected, to);
}

static void slot_set(slot *s, int from, int to) {
    int prev = atomic_exchange(&s->state, to);
    (void)prev;
    (void)from;
#ifndef NDEBUG
    if (prev != from) abort(); /* an illegal transition is a bug in this file */
#endif
}

static void emit(noodle_pool *p, noodle_pool_event *ev) {
    int n = atomic_load_explicit(&p->nobservers, memory_order_acquire);
    if (n == 0) return;
    if (ev->time == 0) ev->time = noodle_clock_now(p->clock);
    for (int i = 0; i < n; i++)
        if (p->observers[i].mask & (1u << ev->type)) p->observers[i].fn(ev, p->observers[i].arg);
}

static bool has_observers(noodle_pool *p) {
    return atomic_load_explicit(&p->nobservers, memory_order_relaxed) > 0;
}

/* Someone wants ACQUIRED / RELEASED (the fast path's events). */
static bool has_hot_observers(noodle_pool *p) {
    return atomic_load_explicit(&p->nhot_observers, memory_order_relaxed) > 0;
}

static inline int64_t coarse_now(const noodle_pool *p) {
    /* the same reading as the real clock's now_coarse, without the indirection */
    return p->real_clock ? noodle__coarse_now_real() : noodle_clock_now_coarse(p->clock);
}

static inline int64_t hold_clock(noodle_pool *p) {
    return p->precise_hold ? noodle_clock_now(p->clock) : coarse_now(p);
}

/* ---- the asymmetric fence of invariant 4 ------------------------------------
 * The releaser must not miss a waiter that enqueued while it published IDLE
 * (a StoreLoad race). Rather than a full fence on every release (the hot
 * path), a waiter -- already on the slow path -- asks the kernel to run a
 * full barrier on every CPU running this process (membarrier), which orders
 * the releaser's store before its load as a fence would. Where membarrier is
 * not available, the releaser uses a seq_cst exchange instead. */
static pthread_once_t membarrier_once = PTHREAD_ONCE_INIT;
static bool membarrier_ok;

static void membarrier_register(void) {
#if defined(__SANITIZE_THREAD__)
    return; /* ThreadSanitizer cannot see membarrier's ordering: use the exchange */
#endif
    long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    membarrier_ok = cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
                    syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

static _Atomic int fence_word;

static void heavy_fence(void) {
    if (membarrier_ok) syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    else atomic_fetch_add(&fence_word, 0); /* a full barrier, as a seq_cst RMW */
}

/* Publish IDLE, ordered before the following load of `waiting`. */
static void publish_idle(slot *s) {
    if (membarrier_ok) {
        atomic_store_explicit(&s->state, S_IDLE, memory_order_release);
        atomic_signal_fence(memory_order_seq_cst); /* the compiler keeps the order */
    } else {
        atomic_exchange(&s->state, S_IDLE);
    }
}

/* ---- the waiter queue (pool->lock held) ------------------------------------ */

static void enqueue(noodle_pool *p, waiter *w) {
    w->next = NULL;
    if (p->tail) p->tail->next = w;
    else p->head = w;
    p->tail = w;
}

static void unlink_waiter(noodle_pool *p, waiter *w) {
    waiter **pp = &p->head, *prev = NULL;
    while (*pp != NULL && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL) return;
    *pp = w->next;
    if (p->tail == w) p->tail = prev;
}

/* Hand slot s (IN_USE, owned by the caller) to the head waiter. */
static bool hand_to_waiter(noodle_pool *p, slot *s) {
    waiter *w = p->head;
    if (w == NULL) return false;
    p->head = w->next;
    if (p->head == NULL) p->tail = NULL;
    atomic_fetch_sub(&p->waiting, 1);
    w->handed = s;
    w->done = 1;
    noodle_clock_cond_signal(p->clock, &w->cond);
    return true;
}

/* True when the opener should open a connection now (demand, room, not
 * shutting down). */
static bool open_needed(noodle_pool *p) {
    if (atomic_load(&p->shutting_down)) return false;
    int64_t total = atomic_load(&p->total);
    int64_t max = atomic_load(&p->max_connections);
    if (total + p->opening >= max) return false;
    if (atomic_load(&p->waiting) > p->opening) return true;
    return total + p->opening < atomic_load(&p->min_idle);
}

static void wake_opener(noodle_pool *p) { noodle_clock_cond_signal(p->clock, &p->opener_cond); }

/* ---- closing ------------------------------------------------------------------- */

/* Close the connection of slot s, which the caller moved to CLOSING; takes
 * and releases the lock. Never called with the lock held. */
static void finish_close(noodle_pool *p, slot *s, noodle_close_reason reason) {
    noodle_conn *c = s->conn;
    uint64_t gen = s->generation;
    noodle_conn_close(c);
    /* the event goes out before the slot is free, so that whoever waits for
     * the pool to empty (shutdown) has seen it */
    if (has_observers(p)) {
        noodle_pool_event ev = {.type = NOODLE_POOL_EV_CLOSED, .slot = s->index,
                                .generation = gen, .close_reason = reason};
        emit(p, &ev);
    }
    pthread_mutex_lock(&p->lock);
    s->conn = NULL;
    slot_set(s, S_CLOSING, S_EMPTY);
    atomic_fetch_sub(&p->total, 1);
    atomic_fetch_add(&p->closed[reason], 1);
    if (open_needed(p)) wake_opener(p);
    noodle_clock_cond_broadcast(p->clock, &p->change_cond);
    pthread_mutex_unlock(&p->lock);
}

/* Destroy the connection of a slot the caller owns (IN_USE). */
__attribute__((noinline, cold)) static void destroy_owned(noodle_pool *p, slot *s,
                                                         noodle_close_reason reason) {
    atomic_store_explicit(&s->acquired_at, 0, memory_order_relaxed);
    slot_set(s, S_IN_USE, S_CLOSING);
    finish_close(p, s, reason);
}

/* Under the lock: move IDLE slots matching `pick` to CLOSING, at most limit
 * of them; their indexes go to out. Returns how many. */
typedef bool (*pick_fn)(noodle_pool *p, slot *s, int64_t now, void *arg);
static size_t claim_idle(noodle_pool *p, pick_fn pick, void *arg, int64_t now, size_t limit,
                         int *out) {
    size_t n = 0;
    for (int64_t i = 0; i < p->capacity && n < limit; i++) {
        slot *s = &p->slots[i];
        if (slot_state(s) != S_IDLE || !pick(p, s, now, arg)) continue;
        if (slot_cas(s, S_IDLE, S_CLOSING)) out[n++] = (int)i;
    }
    return n;
}

static void close_claimed(noodle_pool *p, const int *idx, size_t n, noodle_close_reason reason) {
    for (size_t i = 0; i < n; i++) finish_close(p, &p->slots[idx[i]], reason);
}

static bool pick_any(noodle_pool *p, slot *s, int64_t now, void *arg) {
    (void)p, (void)s, (void)now, (void)arg;
    return true;
}

static bool pick_old_generation(noodle_pool *p, slot *s, int64_t now, void *arg) {
    (void)now, (void)arg;
    return s->generation != atomic_load(&p->generation);
}

static bool pick_expired(noodle_pool *p, slot *s, int64_t now, void *arg) {
    (void)p, (void)arg;
    return s->expires_at <= now;
}

static bool pick_idle_too_long(noodle_pool *p, slot *s, int64_t now, void *arg) {
    (void)arg;
    return p->idle_timeout > 0 &&
           now - atomic_load_explicit(&s->last_used, memory_order_relaxed) >= p->idle_timeout;
}

/* ---- the opener ------------------------------------------------------------------ */

/* Delay before the next connect after `failures` consecutive failures:
 * base * 2^(failures-1), capped, jittered down by up to 50 % (lock held). */
static int64_t backoff_delay(noodle_pool *p, int failures) {
    return noodle__backoff_delay(&p->rng, p->backoff_base, p->backoff_max, failures);
}

/* Open one connection into an EMPTY slot reserved under the lock; called
 * with the lock held, returns with it held (unlocked while connecting). */
static void open_one(noodle_pool *p) {
    slot *s = NULL;
    for (int64_t i = 0; i < p->capacity && s == NULL; i++)
        if (slot_state(&p->slots[i]) == S_EMPTY) s = &p->slots[i];
    if (s == NULL) return; /* cannot happen while total + opening < max <= capacity */
    slot_set(s, S_EMPTY, S_OPENING);
    p->opening++;
    int64_t open_now = atomic_load(&p->total) + p->opening;
    if (open_now > p->peak_total) p->peak_total = open_now;
    uint64_t gen = atomic_load(&p->generation);
    int64_t jitter = p->max_lifetime > 0
                         ? (int64_t)(next_random(p) % (uint64_t)(p->max_lifetime / 40 + 1))
                         : 0; /* up to 2.5 % */
    pthread_mutex_unlock(&p->lock);

    noodle_connect_params params = {
        .url = p->url,
        .deadline = noodle_deadline_after(p->clock, p->connect_timeout),
        .clock = p->clock,
        .application_name = p->app_name,
    };
    noodle_conn *c = NULL;
    noodle_error err;
    noodle_error_clear(&err);
    int rc = p->connect_gate ? p->connect_gate(p->connect_hook_arg, &err) : 0;
    if (rc != 0 && err.code != rc) NOODLE_ERR(&err, rc, "the connect gate refused the attempt");
    if (rc == 0) {
        rc = noodle_conn_open(p->ops, &params, &c, &err);
        if (p->connect_done) p->connect_done(p->connect_hook_arg, c, rc, &err);
    }
    int64_t now = noodle_clock_now(p->clock);

    noodle_pool_event ev = {.slot = s->index, .generation = gen, .time = now};
    char text[512] = "";
    bool close_now = false;
    pthread_mutex_lock(&p->lock);
    p->opening--;
    if (rc != 0) {
        slot_set(s, S_OPENING, S_EMPTY);
        atomic_fetch_add(&p->connect_failures, 1);
        p->consecutive_failures++;
        p->backoff_until = now + backoff_delay(p, p->consecutive_failures);
        noodle_error_format(&err, text, sizeof text);
        noodle__strlcpy(p->last_connect_error, text, sizeof p->last_connect_error);
        ev.type = NOODLE_POOL_EV_CONNECT_FAILED;
        ev.code = rc;
        ev.message = text;
        noodle_clock_cond_broadcast(p->clock, &p->change_cond);
    } else {
        p->consecutive_failures = 0;
        p->backoff_until = 0;
        s->conn = c;
        s->generation = gen;
        s->created_at = now;
        s->expires_at = p->max_lifetime > 0 ? now + p->max_lifetime - jitter : INT64_MAX;
        atomic_store_explicit(&s->last_used, noodle_clock_now_coarse(p->clock),
                              memory_order_relaxed);
        noodle_conn_set_generation(c, gen);
        noodle_conn_set_owner_data(c, s);
        atomic_fetch_add(&p->total, 1);
        atomic_fetch_add(&p->opened, 1);
        ev.type = NOODLE_POOL_EV_OPENED;
        /* announce it while the slot is still reserved (OPENING): observers
         * see "opened" before anyone can acquire the connection */
        if (has_observers(p)) {
            pthread_mutex_unlock(&p->lock);
            emit(p, &ev);
            pthread_mutex_lock(&p->lock);
        }
        if (atomic_load(&p->shutting_down)) {
            slot_set(s, S_OPENING, S_CLOSING);
            close_now = true;
        } else if (p->head != NULL) {
            slot_set(s, S_OPENING, S_IN_USE);
            hand_to_waiter(p, s);
        } else {
            slot_set(s, S_OPENING, S_IDLE);
        }
        noodle_clock_cond_broadcast(p->clock, &p->change_cond);
    }
    pthread_mutex_unlock(&p->lock);
    if (rc != 0) emit(p, &ev); /* connect failed */
    if (close_now) finish_close(p, s, NOODLE_CLOSE_SHUTDOWN);
    pthread_mutex_lock(&p->lock);
}

static void *opener_main(void *arg) {
    noodle_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    while (!p->stop_threads) {
        if (!open_needed(p)) {
            noodle_clock_cond_wait_until(p->clock, &p->opener_cond, &p->lock, NOODLE_NO_DEADLINE);
            continue;
        }
        int64_t now = noodle_clock_now(p->clock);
        if (now < p->backoff_until) {
            noodle_clock_cond_wait_until(p->clock, &p->opener_cond, &p->lock, p->backoff_until);
            continue;
        }
        open_one(p);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* ---- the housekeeper ------------------------------------------------------------------ */

typedef struct leak_report {
    int slot;
    const char *file;
    int line;
    int64_t held;
    uint64_t generation;
} leak_report;

static void housekeep(noodle_pool *p) {
    int64_t now = noodle_clock_now_coarse(p->clock);
    int64_t hold_now = hold_clock(p);
    int *idx = p->hk_idx;               /* scratch, allocated at open: */
    leak_report *leaks = p->hk_leaks;   /* the housekeeper never allocates */
    size_t ngen, nlife, nidle, nleaks = 0;
    pthread_mutex_lock(&p->lock);
    /* retire: old generations and expired lifetimes (in-use ones go at release) */
    ngen = claim_idle(p, pick_old_generation, NULL, now, (size_t)p->capacity, idx);
    nlife = claim_idle(p, pick_expired, NULL, noodle_clock_now(p->clock), (size_t)p->capacity,
                       idx + ngen);
    /* reap idle connections above min_idle */
    int64_t above = atomic_load(&p->total) - (int64_t)(ngen + nlife) - atomic_load(&p->min_idle);
    nidle = above > 0 ? claim_idle(p, pick_idle_too_long, NULL, now, (size_t)above,
                                   idx + ngen + nlife)
                      : 0;
    /* suspected leaks */
    if (p->leak_threshold > 0) {
        for (int64_t i = 0; i < p->capacity; i++) {
            slot *s = &p->slots[i];
            if (slot_state(s) != S_IN_USE) continue;
            int64_t at = atomic_load_explicit(&s->acquired_at, memory_order_relaxed);
            if (at == 0 || hold_now - at < p->leak_threshold) continue;
            if (atomic_exchange(&s->leak_reported, 1)) continue;
            leaks[nleaks++] = (leak_report){(int)i, atomic_load(&s->owner_file),
                                            atomic_load(&s->owner_line), hold_now - at,
                                            s->generation};
            atomic_fetch_add(&p->leaks, 1);
        }
    }
    if (open_needed(p)) wake_opener(p); /* top up to min_idle */
    pthread_mutex_unlock(&p->lock);

    close_claimed(p, idx, ngen, NOODLE_CLOSE_GENERATION);
    close_claimed(p, idx + ngen, nlife, NOODLE_CLOSE_LIFETIME);
    close_claimed(p, idx + ngen + nlife, nidle, NOODLE_CLOSE_IDLE);
    for (size_t i = 0; i < nleaks; i++) {
        noodle_pool_event ev = {.type = NOODLE_POOL_EV_LEAK_SUSPECTED, .slot = leaks[i].slot,
                                .generation = leaks[i].generation, .file = leaks[i].file,
                                .line = leaks[i].line, .held_us = (int64_t)ns_to_us(leaks[i].held)};
        emit(p, &ev);
    }
}

static void *housekeeper_main(void *arg) {
    noodle_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    while (!p->stop_threads) {
        int64_t next = noodle_deadline_after(p->clock, p->housekeeping_interval);
        while (!p->stop_threads &&
               noodle_clock_cond_wait_until(p->clock, &p->house_cond, &p->lock, next) == 0 &&
               noodle_clock_now(p->clock) < next) {
        }
        if (p->stop_threads) break;
        pthread_mutex_unlock(&p->lock);
        housekeep(p);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* ---- acquire ------------------------------------------------------------------------------ */

/* Lock-free: the thread's last slot of this pool, then any IDLE slot. */
static slot *claim_fast(noodle_pool *p) {
    for (unsigned i = 0; i < 4; i++) {
        if (tl_cache[i].pool_id != p->id) continue;
        slot *s = &p->slots[tl_cache[i].slot];
        if (slot_state(s) == S_IDLE && slot_cas(s, S_IDLE, S_IN_USE)) return s;
        break;
    }
    for (int64_t i = 0; i < p->capacity; i++) {
        slot *s = &p->slots[i];
        if (slot_state(s) == S_IDLE && slot_cas(s, S_IDLE, S_IN_USE)) return s;
    }
    return NULL;
}

static void remember_slot(noodle_pool *p, slot *s) {
    for (unsigned i = 0; i < 4; i++) {
        if (tl_cache[i].pool_id == p->id) {
            tl_cache[i].slot = s->index;
            return;
        }
    }
    tl_entry *e = &tl_cache[tl_next++ % 4];
    e->pool_id = p->id;
    e->slot = s->index;
}

static int closed_error(noodle_error *err) {
    return NOODLE_ERR(err, NOODLE_E_POOL_CLOSED, "the pool is shut down; no more acquires");
}

__attribute__((noinline, cold))
/* Slow path: wait FIFO for a slot until deadline. Returns the slot (IN_USE,
 * owned) or NULL with err filled. *waited_ns receives the time waited. */
static slot *wait_for_slot(noodle_pool *p, int64_t deadline, int64_t *waited_ns,
                           noodle_error *err) {
    *waited_ns = 0;
    pthread_mutex_lock(&p->lock);
    if (atomic_load(&p->shutting_down)) {
        pthread_mutex_unlock(&p->lock);
        closed_error(err);
        return NULL;
    }
    atomic_fetch_add(&p->waiting, 1); /* before the scan: invariant 4 */
    heavy_fence();
    /* an idle slot goes to a newcomer only when nobody queued before it */
    for (int64_t i = 0; p->head == NULL && i < p->capacity; i++) {
        slot *s = &p->slots[i];
        if (slot_state(s) == S_IDLE && slot_cas(s, S_IDLE, S_IN_USE)) {
            atomic_fetch_sub(&p->waiting, 1);
            pthread_mutex_unlock(&p->lock);
            return s;
        }
    }
    waiter w = {.handed = NULL, .done = 0, .closed = 0};
    noodle_cond_init(&w.cond);
    enqueue(p, &w);
    if (open_needed(p)) wake_opener(p);
    int64_t start = noodle_clock_now(p->clock);
    int rc = 0;
    while (!w.done && rc != ETIMEDOUT)
        rc = noodle_clock_cond_wait_until(p->clock, &w.cond, &p->lock, deadline);
    int64_t now = noodle_clock_now(p->clock);
    *waited_ns = now - start;
    slot *s = w.handed;
    if (!w.done) { /* timed out */
        unlink_waiter(p, &w);
        atomic_fetch_sub(&p->waiting, 1);
        atomic_fetch_add(&p->timeouts, 1);
        hist_add(&p->timed_out_wait, ns_to_us(*waited_ns));
        int64_t in_use = atomic_load(&p->total);
        for (int64_t i = 0; i < p->capacity; i++)
            if (slot_state(&p->slots[i]) == S_IDLE) in_use--;
        NOODLE_ERR(err, NOODLE_E_POOL_TIMEOUT,
                   "pool acquire timed out after %lld ms (max %lld, %lld in use, %lld waiting)%s%s",
                   (long long)(*waited_ns / 1000000), (long long)atomic_load(&p->max_connections),
                   (long long)in_use, (long long)atomic_load(&p->waiting) + 1,
                   p->last_connect_error[0] && p->consecutive_failures > 0
                       ? "; last connect error: "
                       : "",
                   p->consecutive_failures > 0 ? p->last_connect_error : "");
    } else if (w.redirected) {
        NOODLE_ERR(err, NOODLE_E_POOL_REDIRECTED,
                   "the pool's endpoint stopped serving this route after %lld ms of waiting; "
                   "acquire again",
                   (long long)(*waited_ns / 1000000));
    } else if (w.closed) {
        closed_error(err);
    }
    pthread_mutex_unlock(&p->lock);
    pthread_cond_destroy(&w.cond);
    return w.done && !w.closed ? s : NULL;
}

static int validate_owned(noodle_pool *p, slot *s, int64_t deadline, noodle_close_reason *reason);

/* Decide whether the slot the caller now owns can be handed out; validates
 * it when it has been idle longer than the bypass window. Returns 0, or the
 * reason to close it. */
static int check_owned(noodle_pool *p, slot *s, int64_t now_coarse, int64_t deadline,
                       noodle_close_reason *reason) {
    noodle_conn *c = s->conn;
    if (s->generation != atomic_load_explicit(&p->generation, memory_order_relaxed)) {
        *reason = NOODLE_CLOSE_GENERATION;
        return -1;
    }
    if (!noodle__conn_ok(c)) {
        *reason = NOODLE_CLOSE_BROKEN;
        return -1;
    }
    if (s->expires_at != INT64_MAX && s->expires_at <= now_coarse) {
        *reason = NOODLE_CLOSE_LIFETIME;
        return -1;
    }
    /* skip validation only inside the bypass window after the connection's
     * last successful operation; the coarse clock may lag by up to its
     * resolution, which is added so that the window is never exceeded */
    if (p->bypass > 0 && now_coarse + p->coarse_resolution - c->last_used_at <= p->bypass)
        return 0;
    return validate_owned(p, s, deadline, reason);
}

/* Idle longer than the bypass window: validate, with a short deadline of its
 * own that never outlives the acquire's. */
__attribute__((noinline, cold)) static int validate_owned(noodle_pool *p, slot *s,
                                                         int64_t deadline,
                                                         noodle_close_reason *reason) {
    noodle_conn *c = s->conn;
    int64_t vdeadline = noodle_deadline_after(p->clock, p->validation_timeout);
    if (deadline < vdeadline) vdeadline = deadline;
    noodle_error err;
    int rc = noodle_conn_validate(c, vdeadline, &err);
    if (rc == 0) return 0;
    atomic_fetch_add(&p->validation_failures, 1);
    if (has_observers(p)) {
        char text[512];
        noodle_error_format(&err, text, sizeof text);
        noodle_pool_event ev = {.type = NOODLE_POOL_EV_VALIDATION_FAILED, .slot = s->index,
                                .generation = s->generation, .code = rc, .message = text};
        emit(p, &ev);
    }
    *reason = NOODLE_CLOSE_VALIDATION;
    return -1;
}

int noodle_pool_acquire_at(noodle_pool *p, int64_t deadline, noodle_conn **out, noodle_error *err,
                           const char *file, int line) {
    *out = NULL;
    if (p == NULL)
        return NOODLE_ERR(err, NOODLE_E_POOL_INVALID_ARGUMENT, "acquire from a NULL pool");
    if (atomic_load_explicit(&p->shutting_down, memory_order_relaxed)) return closed_error(err);
    int64_t waited = 0;
    for (;;) {
        slot *s = NULL;
        if (atomic_load_explicit(&p->waiting, memory_order_relaxed) == 0) s = claim_fast(p);
        if (s == NULL) {
            if (deadline == 0) deadline = noodle_deadline_after(p->clock, p->acquire_timeout);
            int64_t w;
            s = wait_for_slot(p, deadline, &w, err);
            waited += w;
            if (s == NULL) {
                if (err != NULL && err->code == NOODLE_E_POOL_TIMEOUT && has_observers(p)) {
                    noodle_pool_event ev = {.type = NOODLE_POOL_EV_TIMED_OUT, .slot = -1,
                                            .code = err->code, .message = err->message,
                                            .wait_us = (int64_t)ns_to_us(waited)};
                    emit(p, &ev);
                }
                return err != NULL ? err->code : NOODLE_E_POOL_TIMEOUT;
            }
        }
        int64_t now = coarse_now(p);
        noodle_close_reason reason;
        if (check_owned(p, s, now, deadline ? deadline : NOODLE_NO_DEADLINE, &reason) != 0) {
            destroy_owned(p, s, reason);
            continue; /* never hand out a connection that failed its checks */
        }
        atomic_store_explicit(&s->acquired_at, p->precise_hold ? hold_clock(p) : now,
                              memory_order_relaxed);
        if (p->leak_threshold > 0) { /* the owner is only ever read for leak reports */
            atomic_store_explicit(&s->owner_file, file, memory_order_relaxed);
            atomic_store_explicit(&s->owner_line, line, memory_order_relaxed);
            atomic_store_explicit(&s->leak_reported, 0, memory_order_relaxed);
        }
        if (waited == 0) /* the common case: only the count (bucket 0 is derived) */
            atomic_store_explicit(&s->wait.count,
                                  atomic_load_explicit(&s->wait.count, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
        else
            hist_add(&s->wait, ns_to_us(waited));
        if (has_hot_observers(p)) {
            noodle_pool_event ev = {.type = NOODLE_POOL_EV_ACQUIRED, .time = now,
                                    .slot = s->index, .generation = s->generation,
                                    .file = file, .line = line,
                                    .wait_us = (int64_t)ns_to_us(waited)};
            emit(p, &ev);
        }
        *out = s->conn;
        return 0;
    }
}

/* ---- release -------------------------------------------------------------------------------- */

/* c's slot when c is a connection of this pool, else NULL. */
static inline slot *slot_of(const noodle_pool *p, const noodle_conn *c) {
    slot *s = noodle__conn_owner(c);
    return s != NULL && s >= p->slots && s < p->slots + p->capacity && s->conn == c ? s : NULL;
}

bool noodle_pool_owns(const noodle_pool *p, const noodle_conn *c) {
    return p != NULL && c != NULL && slot_of(p, c) != NULL;
}

void noodle_pool_release(noodle_pool *p, noodle_conn **conn) { noodle__pool_release_held(p, conn); }

int64_t noodle__pool_release_held(noodle_pool *p, noodle_conn **conn) {
    if (p == NULL || conn == NULL || *conn == NULL) return -1;
    noodle_conn *c = *conn;
    *conn = NULL;
    slot *s = slot_of(p, c);
    if (s == NULL || slot_state(s) != S_IN_USE)
        return -1; /* not a connection this pool handed out (or released already) */

    int64_t now = hold_clock(p);
    int64_t held = now - atomic_load_explicit(&s->acquired_at, memory_order_relaxed);
    hist_add(&s->hold, ns_to_us(held));
    if (has_hot_observers(p)) {
        noodle_pool_event ev = {.type = NOODLE_POOL_EV_RELEASED, .time = now, .slot = s->index,
                                .generation = s->generation, .held_us = (int64_t)ns_to_us(held)};
        emit(p, &ev);
    }
    if (p->precise_hold) now = coarse_now(p);

    /* roll back a transaction left open, with the validation deadline */
    if (noodle__conn_in_txn(c) &&
        noodle_conn_rollback(c, noodle_deadline_after(p->clock, p->validation_timeout), NULL) != 0) {
        destroy_owned(p, s, NOODLE_CLOSE_ROLLBACK);
        return held;
    }
    noodle_close_reason reason;
    bool destroy = true;
    if (!noodle__conn_ok(c)) reason = NOODLE_CLOSE_BROKEN;
    else if (atomic_load_explicit(&p->shutting_down, memory_order_relaxed))
        reason = NOODLE_CLOSE_SHUTDOWN;
    else if (s->generation != atomic_load_explicit(&p->generation, memory_order_relaxed))
        reason = NOODLE_CLOSE_GENERATION;
    else if (s->expires_at != INT64_MAX && s->expires_at <= now) reason = NOODLE_CLOSE_LIFETIME;
    else if (atomic_load_explicit(&p->total, memory_order_relaxed) >
             atomic_load_explicit(&p->max_connections, memory_order_relaxed))
        reason = NOODLE_CLOSE_RESIZE;
    else destroy = false;
    if (destroy) {
        destroy_owned(p, s, reason);
        return held;
    }

    atomic_store_explicit(&s->last_used, now, memory_order_relaxed);
    atomic_store_explicit(&s->acquired_at, 0, memory_order_relaxed);
    if (atomic_load_explicit(&p->waiting, memory_order_relaxed) > 0) {
        /* someone waits: hand the slot straight over, never through IDLE,
         * so that no newcomer can take it first (invariant 3) */
        pthread_mutex_lock(&p->lock);
        bool handed = hand_to_waiter(p, s);
        pthread_mutex_unlock(&p->lock);
        if (handed) return held;
    }
    publish_idle(s); /* invariant 4 */
    if (atomic_load_explicit(&p->shutting_down, memory_order_relaxed)) {
        /* shutdown began meanwhile and may have missed this slot: close it
         * here (the same Dekker pairing as with waiters) */
        if (slot_cas(s, S_IDLE, S_CLOSING)) finish_close(p, s, NOODLE_CLOSE_SHUTDOWN);
        return held;
    }
    if (atomic_load_explicit(&p->waiting, memory_order_relaxed) > 0) {
        pthread_mutex_lock(&p->lock);
        if (p->head != NULL && slot_cas(s, S_IDLE, S_IN_USE)) hand_to_waiter(p, s);
        pthread_mutex_unlock(&p->lock);
    } else {
        remember_slot(p, s);
    }
    return held;
}

int noodle_pool_with_at(noodle_pool *p, noodle_pool_fn fn, void *arg, noodle_error *err,
                        const char *file, int line) {
    noodle_conn *c = NULL;
    int rc = noodle_pool_acquire_at(p, 0, &c, err, file, line);
    if (rc != 0) return rc;
    rc = fn(c, arg, err);
    noodle_pool_release(p, &c);
    return rc;
}

/* ---- lifecycle ----------------------------------------------------------------------------------- */

static int start_thread(noodle_pool *p, pthread_t *t, noodle_thread_fn fn, noodle_error *err) {
    int rc = NOODLE_FAIL_AT(POOL_THREAD_START);
    if (rc != 0)
        return NOODLE_ERR(err, rc, "could not start a pool thread: fail point %s fired",
                          noodle__fail_point_info(NOODLE__FP_POOL_THREAD_START)->name);
    rc = noodle_clock_thread_start(p->clock, t, fn, p);
    if (rc != 0)
        return NOODLE_ERR(err, NOODLE_E_POOL_THREAD_START, "could not start a pool thread: %s",
                          strerror(rc));
    return 0;
}

static void stop_threads(noodle_pool *p) {
    pthread_mutex_lock(&p->lock);
    p->stop_threads = 1;
    noodle_clock_cond_broadcast(p->clock, &p->opener_cond);
    noodle_clock_cond_broadcast(p->clock, &p->house_cond);
    pthread_mutex_unlock(&p->lock);
    if (p->threads_started >= 1) noodle_clock_thread_join(p->clock, p->opener);
    if (p->threads_started >= 2) noodle_clock_thread_join(p->clock, p->housekeeper);
    p->threads_started = 0;
}

static void free_pool(noodle_pool *p) {
    for (int64_t i = 0; i < p->capacity; i++)
        if (p->slots[i].conn != NULL) noodle_conn_close(p->slots[i].conn);
    pthread_cond_destroy(&p->opener_cond);
    pthread_cond_destroy(&p->house_cond);
    pthread_cond_destroy(&p->change_cond);
    pthread_mutex_destroy(&p->lock);
    free(p->slots);
    free(p->url);
    free(p->app_name);
    free(p->hk_idx);
    free(p->hk_leaks);
    free(p);
}

/* Wait until min_idle connections are open. Each connection has the connect
 * timeout to open (so the whole warm-up gets connect_timeout x min_idle), but
 * when not a single connection has opened within one connect timeout the
 * database is taken to be unavailable and warm-up fails at once. */
static int warm_up(noodle_pool *p, noodle_error *err) {
    int64_t want = atomic_load(&p->min_idle);
    int64_t first_deadline = noodle_deadline_after(p->clock, p->connect_timeout);
    int64_t deadline = p->connect_timeout > INT64_MAX / (want > 0 ? want : 1)
                           ? NOODLE_NO_DEADLINE
                           : noodle_deadline_after(p->clock, p->connect_timeout * want);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        int64_t total = atomic_load(&p->total);
        if (total >= want) break;
        int64_t now = noodle_clock_now(p->clock);
        if (now >= deadline || (total == 0 && now >= first_deadline)) break;
        noodle_clock_cond_wait_until(p->clock, &p->change_cond, &p->lock,
                                     total == 0 && first_deadline < deadline ? first_deadline
                                                                             : deadline);
    }
    int64_t total = atomic_load(&p->total);
    char last[256];
    noodle__strlcpy(last, p->last_connect_error, sizeof last);
    pthread_mutex_unlock(&p->lock);
    if (total >= want) return 0;
    return NOODLE_ERR(err, NOODLE_E_POOL_WARMUP_FAILED,
                      "warm-up opened %lld of %lld connections before its deadline%s%s",
                      (long long)total, (long long)want, last[0] ? "; last connect error: " : "",
                      last);
}

int noodle_pool_open(const noodle_pool_options *opts, noodle_pool **out, noodle_error *err) {
    *out = NULL;
    if (opts == NULL || opts->struct_size < sizeof *opts || opts->config == NULL)
        return NOODLE_ERR(err, NOODLE_E_POOL_INVALID_ARGUMENT,
                          "pool options need struct_size = sizeof(noodle_pool_options) and a "
                          "configuration");
    const noodle_config *cfg = opts->config;
    const noodle_backend_ops *ops = opts->backend;
    if (ops == NULL) {
        int rc = noodle_backend_find(cfg->backend, &ops, err);
        if (rc != 0) return rc;
    }
    int64_t capacity = opts->capacity > 0 ? opts->capacity : cfg->max_connections;
    if (cfg->max_connections < 1 || cfg->min_idle < 0 || cfg->min_idle > cfg->max_connections ||
        capacity < cfg->max_connections || capacity > 100000)
        return NOODLE_ERR(err, NOODLE_E_POOL_INVALID_SIZE,
                          "pool sizes min_idle %lld, max_connections %lld, capacity %lld are not "
                          "0 <= min_idle <= max_connections <= capacity <= 100000",
                          (long long)cfg->min_idle, (long long)cfg->max_connections,
                          (long long)capacity);

    noodle_pool *p = calloc(1, sizeof *p);
    if (p == NULL) goto fail_oom;
    p->slots = aligned_alloc(64, sizeof(slot) * (size_t)capacity);
    if (p->slots == NULL) goto fail_pool;
    memset(p->slots, 0, sizeof(slot) * (size_t)capacity);
    for (int64_t i = 0; i < capacity; i++) p->slots[i].index = (int)i;
    p->hk_idx = malloc(sizeof *p->hk_idx * (size_t)capacity * 3);
    p->hk_leaks = malloc(sizeof *p->hk_leaks * (size_t)capacity);
    if (p->hk_idx == NULL || p->hk_leaks == NULL) goto fail_strings;
    p->url = strdup(cfg->url ? cfg->url : "");
    p->app_name = opts->application_name ? strdup(opts->application_name) : NULL;
    if (p->url == NULL || (opts->application_name && p->app_name == NULL)) goto fail_strings;

    p->id = atomic_fetch_add(&next_pool_id, 1);
    p->clock = opts->clock ? opts->clock : noodle_clock_real();
    p->real_clock = p->clock == noodle_clock_real();
    pthread_once(&membarrier_once, membarrier_register);
    p->ops = ops;
    p->capacity = capacity;
    atomic_init(&p->max_connections, cfg->max_connections);
    atomic_init(&p->min_idle, cfg->min_idle);
    p->acquire_timeout = ms_to_ns(cfg->timeout_ms);
    p->idle_timeout = ms_to_ns(cfg->idle_timeout_ms);
    p->max_lifetime = ms_to_ns(cfg->max_lifetime_ms);
    p->bypass = ms_to_ns(cfg->validation_bypass_ms);
    p->validation_timeout = ms_to_ns(cfg->validation_timeout_ms);
    p->connect_timeout = ms_to_ns(cfg->connect_timeout_ms);
    p->leak_threshold = ms_to_ns(cfg->leak_threshold_ms);
    p->housekeeping_interval = ms_to_ns(opts->housekeeping_interval_ms > 0 ? opts->housekeeping_interval_ms : 1000);
    p->backoff_base = ms_to_ns(opts->backoff_base_ms > 0 ? opts->backoff_base_ms : 50);
    p->backoff_max = ms_to_ns(opts->backoff_max_ms > 0 ? opts->backoff_max_ms : 2000);
    if (p->backoff_max < p->backoff_base) p->backoff_max = p->backoff_base;
    p->precise_hold = opts->precise_hold_times;
    p->connect_gate = opts->connect_gate;
    p->connect_done = opts->connect_done;
    p->connect_hook_arg = opts->connect_hook_arg;
    p->coarse_resolution = p->precise_hold ? 1 : noodle_clock_coarse_resolution(p->clock);
    p->rng = opts->seed ? opts->seed : (uint64_t)noodle_clock_now(p->clock) | 1;
    atomic_init(&p->generation, 1);
    pthread_mutex_init(&p->lock, NULL);
    noodle_cond_init(&p->opener_cond);
    noodle_cond_init(&p->house_cond);
    noodle_cond_init(&p->change_cond);

    int rc = start_thread(p, &p->opener, opener_main, err);
    if (rc != 0) goto fail_threads;
    p->threads_started = 1;
    rc = start_thread(p, &p->housekeeper, housekeeper_main, err);
    if (rc != 0) goto fail_threads;
    p->threads_started = 2;

    pthread_mutex_lock(&p->lock);
    wake_opener(p); /* warm up to min_idle */
    pthread_mutex_unlock(&p->lock);
    if (opts->warm_up_blocking) {
        rc = warm_up(p, err);
        if (rc != 0) {
            noodle_pool_close(p);
            return rc;
        }
    }
    *out = p;
    return 0;

fail_threads:
    stop_threads(p);
    free_pool(p);
    return rc;
fail_strings:
    free(p->url);
    free(p->app_name);
    free(p->hk_idx);
    free(p->hk_leaks);
    free(p->slots);
fail_pool:
    free(p);
fail_oom:
    return NOODLE_ERR(err, NOODLE_E_POOL_NO_MEMORY, "out of memory creating a pool");
}

int noodle_pool_shutdown(noodle_pool *p, int64_t deadline, noodle_error *err) {
    if (p == NULL) return 0;
    pthread_mutex_lock(&p->lock);
    bool first = !atomic_exchange(&p->shutting_down, 1);
    for (waiter *w = p->head; w != NULL; w = w->next) { /* fail every waiter with 2001 */
        w->done = 1;
        w->closed = 1;
        noodle_clock_cond_signal(p->clock, &w->cond);
    }
    p->head = p->tail = NULL;
    atomic_store(&p->waiting, 0);
    pthread_mutex_unlock(&p->lock);
    heavy_fence(); /* pairs with the release fast path's check of shutting_down */
    if (first && has_observers(p)) {
        noodle_pool_event ev = {.type = NOODLE_POOL_EV_SHUTDOWN, .slot = -1};
        emit(p, &ev);
    }
    /* Close idle connections (one at a time: no allocation, so shutdown
     * cannot fail for want of memory) and wait for the others to come back,
     * until nothing is open or opening. A release that raced with the flag
     * closes its own connection; the periodic re-scan is a safety net. */
    int64_t busy;
    for (;;) {
        int one;
        pthread_mutex_lock(&p->lock);
        size_t n = claim_idle(p, pick_any, NULL, 0, 1, &one);
        if (n == 1) {
            pthread_mutex_unlock(&p->lock);
            finish_close(p, &p->slots[one], NOODLE_CLOSE_SHUTDOWN);
            continue;
        }
        busy = atomic_load(&p->total) + p->opening;
        int64_t now = noodle_clock_now(p->clock);
        if (busy == 0 || now >= deadline) {
            pthread_mutex_unlock(&p->lock);
            break;
        }
        int64_t next = now + NOODLE_MS(50);
        noodle_clock_cond_wait_until(p->clock, &p->change_cond, &p->lock,
                                     next < deadline ? next : deadline);
        pthread_mutex_unlock(&p->lock);
    }
    if (busy > 0)
        return NOODLE_ERR(err, NOODLE_E_POOL_BUSY_AT_SHUTDOWN,
                          "%lld connections still open or opening when the shutdown deadline "
                          "passed",
                          (long long)busy);
    return 0;
}

void noodle_pool_close(noodle_pool *p) {
    if (p == NULL) return;
    int rc = noodle_pool_shutdown(p, NOODLE_NO_DEADLINE, NULL);
    (void)rc; /* without a deadline it returns only when everything is back */
    stop_threads(p);
    free_pool(p);
}

int noodle_pool_observe(noodle_pool *p, noodle_pool_observer fn, void *arg, noodle_error *err) {
    return noodle_pool_observe_events(p, fn, arg, NOODLE_POOL_EVENTS_ALL, err);
}

int noodle_pool_observe_events(noodle_pool *p, noodle_pool_observer fn, void *arg, unsigned mask,
                               noodle_error *err) {
    if (p == NULL || fn == NULL)
        return NOODLE_ERR(err, NOODLE_E_POOL_INVALID_ARGUMENT, "observe needs a pool and a function");
    pthread_mutex_lock(&p->lock);
    int n = atomic_load(&p->nobservers);
    if (n == MAX_OBSERVERS) {
        pthread_mutex_unlock(&p->lock);
        return NOODLE_ERR(err, NOODLE_E_POOL_INVALID_ARGUMENT, "at most %d observers",
                          MAX_OBSERVERS);
    }
    p->observers[n] = (observer){fn, arg, mask};
    atomic_store_explicit(&p->nobservers, n + 1, memory_order_release); /* publish */
    if (mask & HOT_EVENTS) atomic_fetch_add_explicit(&p->nhot_observers, 1, memory_order_release);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

/* ---- run-time control ------------------------------------------------------------------------------ */

int noodle_pool_resize(noodle_pool *p, int64_t min_idle, int64_t max_connections,
                       noodle_error *err) {
    if (p == NULL) return NOODLE_ERR(err, NOODLE_E_POOL_INVALID_ARGUMENT, "resize of a NULL pool");
    if (min_idle < 0 || min_idle > max_connections || max_connections < 1 ||
        max_connections > p->capacity)
        return NOODLE_ERR(err, NOODLE_E_POOL_INVALID_SIZE,
                          "resize to min_idle %lld, max_connections %lld: need 0 <= min_idle <= "
                          "max_connections <= capacity %lld (and max_connections >= 1)",
                          (long long)min_idle, (long long)max_connections,
                          (long long)p->capacity);
    int *idx = malloc(sizeof *idx * (size_t)p->capacity);
    if (idx == NULL) return NOODLE_ERR(err, NOODLE_E_POOL_NO_MEMORY, "out of memory");
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->min_idle, min_idle);
    atomic_store(&p->max_connections, max_connections);
    int64_t excess = atomic_load(&p->total) - max_connections;
    size_t n = excess > 0 ? claim_idle(p, pick_any, NULL, 0, (size_t)excess, idx) : 0;
    if (open_needed(p)) wake_opener(p);
    pthread_mutex_unlock(&p->lock);
    close_claimed(p, idx, n, NOODLE_CLOSE_RESIZE);
    free(idx);
    if (has_observers(p)) {
        noodle_pool_event ev = {.type = NOODLE_POOL_EV_RESIZED, .slot = -1};
        emit(p, &ev);
    }
    return 0;
}

const noodle_clock *noodle_pool_clock(const noodle_pool *p) { return p->clock; }
int64_t noodle_pool_acquire_timeout(const noodle_pool *p) { return p->acquire_timeout; }

int64_t noodle_pool_redirect_waiters(noodle_pool *p) {
    int64_t n = 0;
    pthread_mutex_lock(&p->lock);
    for (waiter *w = p->head; w != NULL; w = w->next, n++) {
        w->done = 1;
        w->closed = 1;
        w->redirected = 1;
        noodle_clock_cond_signal(p->clock, &w->cond);
    }
    p->head = p->tail = NULL;
    atomic_store(&p->waiting, 0);
    pthread_mutex_unlock(&p->lock);
    return n;
}

void noodle_pool_reset_backoff(noodle_pool *p) {
    pthread_mutex_lock(&p->lock);
    p->consecutive_failures = 0;
    p->backoff_until = 0;
    if (open_needed(p)) wake_opener(p);
    pthread_mutex_unlock(&p->lock);
}

uint64_t noodle_pool_bump_generation(noodle_pool *p) {
    int *idx = malloc(sizeof *idx * (size_t)p->capacity);
    pthread_mutex_lock(&p->lock);
    uint64_t gen = atomic_fetch_add(&p->generation, 1) + 1;
    size_t n = idx ? claim_idle(p, pick_old_generation, NULL, 0, (size_t)p->capacity, idx) : 0;
    if (open_needed(p)) wake_opener(p);
    pthread_mutex_unlock(&p->lock);
    if (idx) close_claimed(p, idx, n, NOODLE_CLOSE_GENERATION);
    free(idx); /* without memory the housekeeper retires them on its next round */
    return gen;
}

/* ---- metrics ----------------------------------------------------------------------------------------- */

void noodle_pool_get_metrics(noodle_pool *p, noodle_pool_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_lock(&p->lock);
    for (int64_t i = 0; i < p->capacity; i++) {
        slot *s = &p->slots[i];
        int st = slot_state(s);
        m->active += st == S_IN_USE;
        m->idle += st == S_IDLE;
        hist_merge(&m->acquire_wait, &s->wait);
        hist_merge(&m->hold_time, &s->hold);
    }
    m->acquired = m->acquire_wait.count; /* one wait recorded per successful acquire */
    hist_merge(&m->acquire_wait, &p->timed_out_wait);
    m->total = atomic_load(&p->total);
    m->opening = p->opening;
    m->waiting = atomic_load(&p->waiting);
    m->max_connections = atomic_load(&p->max_connections);
    m->min_idle = atomic_load(&p->min_idle);
    m->capacity = p->capacity;
    m->generation = atomic_load(&p->generation);
    m->peak_total = p->peak_total;
    pthread_mutex_unlock(&p->lock);
    m->opened = atomic_load(&p->opened);
    for (int r = 0; r < NOODLE_CLOSE_REASONS; r++) {
        m->closed[r] = atomic_load(&p->closed[r]);
        m->closed_total += m->closed[r];
    }
    m->timeouts = atomic_load(&p->timeouts);
    m->validation_failures = atomic_load(&p->validation_failures);
    m->connect_failures = atomic_load(&p->connect_failures);
    m->leaks_suspected = atomic_load(&p->leaks);
    m->coarse_resolution_ns = p->coarse_resolution;
}

const char *noodle_close_reason_name(noodle_close_reason r) {
    static const char *const names[] = {"idle",       "lifetime", "broken", "validation",
                                        "rollback",   "generation", "resize", "shutdown"};
    return (unsigned)r < NOODLE_CLOSE_REASONS ? names[r] : "unknown";
}

const char *noodle_pool_event_name(noodle_pool_event_type t) {
    static const char *const names[] = {"",          "opened",         "closed",
                                        "acquired",  "released",       "timed_out",
                                        "validation_failed", "connect_failed", "leak_suspected",
                                        "resized",   "shutdown"};
    return t >= NOODLE_POOL_EV_OPENED && t <= NOODLE_POOL_EV_SHUTDOWN ? names[t] : "unknown";
}
