/* The connection pool (STD-POOL-*).
 *
 * A bounded set of connections to one endpoint: at most max_connections open
 * or opening, ever. Acquire hands out an idle connection (validated first
 * when it has been idle longer than the bypass window), or waits FIFO for one
 * until its deadline and then fails with NOODLE-2002 saying how many were in
 * use and waiting. Connections are opened by a background opener, one at a
 * time and only as far as waiting demand (or min_idle) requires, never while
 * holding the pool lock, with jittered exponential backoff after failures; a
 * housekeeper closes idle connections above min_idle after idle_timeout,
 * retires connections past max_lifetime (with up to 2.5 % jitter) and reports
 * suspected leaks. See docs/pool.md.
 *
 * Thread-safe: every function may be called from any thread. A connection
 * handed out is used by one thread at a time until released.
 */
#ifndef NOODLE_POOL_H
#define NOODLE_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "noodle/backend.h"
#include "noodle/clock.h"
#include "noodle/config.h"
#include "noodle/error.h"
#include "noodle/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct noodle_pool noodle_pool;

/* ---- histograms ------------------------------------------------------------ */

/* Log-linear histogram in fixed memory. Values are microseconds. Buckets 0-3
 * hold exactly 0, 1, 2 and 3 us; each power of two from 4 us to 2^39 us (~6
 * days) is split into 4 linear sub-buckets; larger values land in the last. */
#define NOODLE_HISTOGRAM_BUCKETS 156

typedef struct noodle_histogram {
    uint64_t count;
    uint64_t sum_us;
    uint64_t max_us;
    uint64_t buckets[NOODLE_HISTOGRAM_BUCKETS];
} noodle_histogram;

/* Lower bound (us) of bucket i. */
NOODLE_API uint64_t noodle_histogram_bucket_floor(size_t i);
/* The bucket a value falls in. */
NOODLE_API size_t noodle_histogram_bucket_of(uint64_t us);
/* The value at quantile q in [0, 1] (upper bound of its bucket, at most max). */
NOODLE_API uint64_t noodle_histogram_quantile(const noodle_histogram *h, double q);

/* ---- events ------------------------------------------------------------------ */

typedef enum noodle_pool_event_type {
    NOODLE_POOL_EV_OPENED = 1,         /* a connection was opened */
    NOODLE_POOL_EV_CLOSED,             /* a connection was closed (see close_reason) */
    NOODLE_POOL_EV_ACQUIRED,           /* handed out (wait_us: how long the caller waited) */
    NOODLE_POOL_EV_RELEASED,           /* given back (held_us: how long it was held) */
    NOODLE_POOL_EV_TIMED_OUT,          /* an acquire failed with 2002 */
    NOODLE_POOL_EV_VALIDATION_FAILED,  /* a connection failed validation before reuse */
    NOODLE_POOL_EV_CONNECT_FAILED,     /* opening a connection failed (code, message) */
    NOODLE_POOL_EV_LEAK_SUSPECTED,     /* held longer than the leak threshold (file, line) */
    NOODLE_POOL_EV_RESIZED,            /* min_idle / max_connections changed */
    NOODLE_POOL_EV_SHUTDOWN,           /* the pool stopped accepting acquires */
} noodle_pool_event_type;

typedef enum noodle_close_reason {
    NOODLE_CLOSE_IDLE = 0,     /* idle longer than idle_timeout, above min_idle */
    NOODLE_CLOSE_LIFETIME,     /* past max_lifetime */
    NOODLE_CLOSE_BROKEN,       /* released broken (connection-fatal error) */
    NOODLE_CLOSE_VALIDATION,   /* failed validation before reuse */
    NOODLE_CLOSE_ROLLBACK,     /* released inside a transaction and the rollback failed */
    NOODLE_CLOSE_GENERATION,   /* from an older topology generation (failover) */
    NOODLE_CLOSE_RESIZE,       /* above max_connections after a resize */
    NOODLE_CLOSE_SHUTDOWN,     /* the pool was closed */
    NOODLE_CLOSE_REASONS       /* the number of reasons */
} noodle_close_reason;
NOODLE_API const char *noodle_close_reason_name(noodle_close_reason r); /* "idle", ... */
NOODLE_API const char *noodle_pool_event_name(noodle_pool_event_type t); /* "opened", ... */

typedef struct noodle_pool_event {
    noodle_pool_event_type type;
    int64_t time;          /* on the pool's clock; ACQUIRED and RELEASED (the hot
                              path): the coarse reading the pool took anyway */
    int slot;              /* -1 when not about one connection */
    uint64_t generation;   /* of the connection */
    noodle_close_reason close_reason; /* CLOSED */
    int code;              /* TIMED_OUT, VALIDATION_FAILED, CONNECT_FAILED: the error */
    const char *message;   /* the error's text, or NULL; valid during the callback */
    const char *file;      /* LEAK_SUSPECTED, ACQUIRED: where it was acquired */
    int line;
    int64_t wait_us;       /* ACQUIRED, TIMED_OUT */
    int64_t held_us;       /* RELEASED, LEAK_SUSPECTED */
} noodle_pool_event;

/* Called synchronously on the thread where the event happened, with no pool
 * lock held; must be quick and must not call back into the pool. */
typedef void (*noodle_pool_observer)(const noodle_pool_event *ev, void *arg);

/* ---- creation ----------------------------------------------------------------- */

typedef struct noodle_pool_options {
    size_t struct_size; /* sizeof(noodle_pool_options) */
    /* Required: the effective configuration (max_connections, timeout, min_idle,
     * idle_timeout, max_lifetime, validation bypass/timeout, connect_timeout,
     * leak threshold, backend, url). Borrowed during noodle_pool_open only. */
    const noodle_config *config;
    /* Backend to use; NULL: found by config->backend (once, at creation). */
    const noodle_backend_ops *backend;
    const noodle_clock *clock;       /* NULL: the real clock */
    const char *application_name;    /* passed to connect; may be NULL */
    uint64_t seed;                   /* jitter generator seed; 0: from the clock */
    /* Slots allocated; max_connections may grow up to this by resize.
     * 0: config->max_connections. */
    int64_t capacity;
    /* Block noodle_pool_open until min_idle connections are open (or the
     * connect timeout passes: then NOODLE_E_POOL_WARMUP_FAILED). */
    bool warm_up_blocking;
    /* Housekeeper period (idle reaping, lifetime, leaks, min_idle). 0: 1 s. */
    int64_t housekeeping_interval_ms;
    /* Backoff after failed connects: base (0: 50 ms) doubling up to max
     * (0: 2 s), each delay jittered down by up to 50 %. */
    int64_t backoff_base_ms, backoff_max_ms;
    /* Measure hold times with the precise clock (two extra clock reads per
     * acquire/release cycle). Default: the coarse clock (a few ms). */
    bool precise_hold_times;
    /* Connect hooks (the cluster's circuit breaker), called by the opener
     * with no pool lock held. connect_gate runs before each attempt: a
     * non-zero catalogue code (with err filled) fails the attempt without
     * connecting, as a failed connect would. connect_done runs after each
     * attempt that passed the gate: conn is the new connection (not yet
     * handed out) or NULL, code 0 or the failure. Either may be NULL. */
    int (*connect_gate)(void *arg, noodle_error *err);
    void (*connect_done)(void *arg, noodle_conn *conn, int code, const noodle_error *err);
    void *connect_hook_arg;
} noodle_pool_options;

#define NOODLE_POOL_OPTIONS_INIT {.struct_size = sizeof(noodle_pool_options)}

/* Create a pool, start its opener and housekeeper, and begin warming up to
 * min_idle. *out is NULL on failure. */
NOODLE_API NOODLE_MUSTCHECK int noodle_pool_open(const noodle_pool_options *opts,
                                                 noodle_pool **out, noodle_error *err);

/* Stop accepting acquires (they fail with NOODLE_E_POOL_CLOSED), fail every
 * waiter with NOODLE_E_POOL_CLOSED, and wait until every connection in use is
 * released or the deadline passes; then close every connection. Returns 0,
 * or NOODLE_E_POOL_BUSY_AT_SHUTDOWN (how many are still in use) -- call again
 * later, or noodle_pool_close. Idempotent. */
NOODLE_API NOODLE_MUSTCHECK int noodle_pool_shutdown(noodle_pool *pool, int64_t deadline,
                                                     noodle_error *err);
/* Shut down with no deadline (waits for every connection in use to come
 * back), stop the threads and free the pool. Accepts NULL. */
NOODLE_API void noodle_pool_close(noodle_pool *pool);

/* Observe every event of the pool (at most 8 observers; append only). */
NOODLE_API NOODLE_MUSTCHECK int noodle_pool_observe(noodle_pool *pool, noodle_pool_observer fn,
                                                    void *arg, noodle_error *err);
/* Observe only the event types in mask (bits NOODLE_POOL_EVENT_BIT(type)).
 * An observer that leaves out ACQUIRED and RELEASED costs the acquire /
 * release fast path nothing. */
#define NOODLE_POOL_EVENT_BIT(type) (1u << (type))
#define NOODLE_POOL_EVENTS_ALL (~0u)
NOODLE_API NOODLE_MUSTCHECK int noodle_pool_observe_events(noodle_pool *pool,
                                                           noodle_pool_observer fn, void *arg,
                                                           unsigned mask, noodle_error *err);

/* ---- acquire and release --------------------------------------------------------- */

/* Acquire a connection, waiting at most until deadline (0: now + the pool's
 * acquire timeout). file/line name the caller for leak reports; use the
 * macros. On failure *out is NULL and the code is one of: POOL_TIMEOUT (2002),
 * POOL_CLOSED (2001), POOL_REDIRECTED (2009, see noodle_pool_redirect_waiters). */
NOODLE_API NOODLE_MUSTCHECK int noodle_pool_acquire_at(noodle_pool *pool, int64_t deadline,
                                                       noodle_conn **out, noodle_error *err,
                                                       const char *file, int line);
#define noodle_pool_acquire(pool, out, err) \
    noodle_pool_acquire_at((pool), 0, (out), (err), __FILE__, __LINE__)
#define noodle_pool_acquire_until(pool, deadline, out, err) \
    noodle_pool_acquire_at((pool), (deadline), (out), (err), __FILE__, __LINE__)

/* Give a connection back and set *conn to NULL, so that releasing twice
 * through the same variable is harmless (a NULL *conn is ignored). A
 * connection inside a transaction is rolled back first; a broken one, one
 * whose rollback fails, one past its lifetime or of an old generation is
 * closed instead of being reused. */
NOODLE_API void noodle_pool_release(noodle_pool *pool, noodle_conn **conn);

/* True when conn is a connection of this pool (open now, in use or idle). */
NOODLE_API bool noodle_pool_owns(const noodle_pool *pool, const noodle_conn *conn);

/* Scoped use: acquire, run fn, release (rolling back an open transaction).
 * Returns the acquire's failure code, or fn's return value. */
typedef int (*noodle_pool_fn)(noodle_conn *conn, void *arg, noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_pool_with_at(noodle_pool *pool, noodle_pool_fn fn,
                                                    void *arg, noodle_error *err,
                                                    const char *file, int line);
#define noodle_pool_with(pool, fn, arg, err) \
    noodle_pool_with_at((pool), (fn), (arg), (err), __FILE__, __LINE__)

/* ---- run-time control ---------------------------------------------------------------- */

/* Change min_idle and max_connections (0 <= min_idle <= max_connections <=
 * capacity). Shrinking closes idle connections above the new maximum at once
 * and retires connections in use when they are released; no acquire fails
 * because of a resize. NOODLE_E_POOL_INVALID_SIZE otherwise. */
NOODLE_API NOODLE_MUSTCHECK int noodle_pool_resize(noodle_pool *pool, int64_t min_idle,
                                                   int64_t max_connections, noodle_error *err);

/* Start a new topology generation (failover): idle connections of older
 * generations are closed, those in use are closed when released. Returns the
 * new generation. */
NOODLE_API uint64_t noodle_pool_bump_generation(noodle_pool *pool);

/* Fail every acquire waiting now with NOODLE_E_POOL_REDIRECTED (2009): the
 * endpoint stopped serving them (a failover), so they should go elsewhere.
 * Returns how many were waiting. */
NOODLE_API int64_t noodle_pool_redirect_waiters(noodle_pool *pool);

/* Forget the connect backoff: the next connect that demand needs starts at
 * once (the endpoint is known to be back). */
NOODLE_API void noodle_pool_reset_backoff(noodle_pool *pool);

/* The pool's clock (the one its deadlines are on) and its acquire timeout
 * (ns), for layers that derive their own deadlines from the pool's. */
NOODLE_API const noodle_clock *noodle_pool_clock(const noodle_pool *pool);
NOODLE_API int64_t noodle_pool_acquire_timeout(const noodle_pool *pool);

/* ---- metrics (STD-POOL-METRICS) -------------------------------------------------------- */

typedef struct noodle_pool_metrics {
    int64_t total;    /* open connections (idle + active) */
    int64_t active;   /* in use */
    int64_t idle;
    int64_t opening;  /* connects in progress */
    int64_t waiting;  /* acquires waiting */
    int64_t max_connections, min_idle, capacity;
    uint64_t generation;
    uint64_t acquired;            /* successful acquires */
    uint64_t opened;              /* connections opened */
    uint64_t closed[NOODLE_CLOSE_REASONS]; /* by reason */
    uint64_t closed_total;
    uint64_t timeouts;            /* acquires that failed with 2002 */
    uint64_t validation_failures;
    uint64_t connect_failures;
    uint64_t leaks_suspected;
    int64_t peak_total;           /* most connections open or opening at once */
    int64_t coarse_resolution_ns; /* resolution of hold-time measurements */
    noodle_histogram acquire_wait; /* us; acquires served without waiting count as 0 */
    noodle_histogram hold_time;    /* us */
} noodle_pool_metrics;

/* A consistent-enough snapshot (counts are read without stopping the pool). */
NOODLE_API void noodle_pool_get_metrics(noodle_pool *pool, noodle_pool_metrics *out);

#ifdef __cplusplus
}
#endif
#endif
