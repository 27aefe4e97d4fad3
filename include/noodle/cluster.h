/* The cluster layer: automatic failover across a primary and standbys
 * (STD-FAILOVER, STD-FAILOVER-ROLE).
 *
 * A cluster is a list of endpoints whose roles are discovered, never
 * configured: a background prober asks every node its role (PostgreSQL:
 * pg_is_in_recovery() and transaction_read_only) every probe_interval, and
 * every fast_probe_interval while the primary is missing or suspected. Each
 * node has its own noodle_pool; writes go to the node that is the primary
 * now, reads may prefer a standby.
 *
 * Failure is detected from three sources:
 *   - connection-fatal errors on connections the cluster handed out (lost
 *     connection, server shutdown, deadline passed on a frozen host) and
 *     failed connects;
 *   - a write refused as read-only (NOODLE_E_QUERY_READ_ONLY, SQLSTATE 25006)
 *     on a connection acquired for writing: the node is demoted at once,
 *     even though it still answers pings;
 *   - the prober.
 *
 * On a failover the topology generation is bumped: idle connections to the
 * old primary are closed, those in use are closed when released (never
 * reused), and callers waiting for a connection to the old primary are
 * redirected to the new one. A node that claims to be primary while another
 * one is the primary (an old primary thawed after a promotion) is fenced: no
 * traffic goes to it until it rejoins as a standby, and then only reads.
 *
 * Every node has a circuit breaker: closed -> (breaker_threshold consecutive
 * failures) -> open -> (jittered exponential backoff) -> half-open, where a
 * single trial (a probe) decides between closed and open again. A node
 * re-admitted after its breaker was open gets a slow start: its pool's size
 * ramps up over slow_start instead of receiving a storm of connects.
 *
 * One acquire deadline covers everything (waiting for a primary, connects
 * to every host, the pool's queue); every backend call has its own deadline,
 * enforced client-side, so a frozen or partitioned host cannot hold a caller
 * past it. See docs/cluster.md.
 *
 * Thread-safe: every function may be called from any thread.
 */
#ifndef NOODLE_CLUSTER_H
#define NOODLE_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "noodle/backend.h"
#include "noodle/clock.h"
#include "noodle/config.h"
#include "noodle/error.h"
#include "noodle/export.h"
#include "noodle/pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct noodle_cluster noodle_cluster;

/* Where an acquire may be served. */
typedef enum noodle_route {
    NOODLE_ROUTE_PRIMARY = 0,     /* writes: the current primary only */
    NOODLE_ROUTE_PREFER_STANDBY,  /* reads: a healthy standby, else the primary */
    NOODLE_ROUTE_STANDBY,         /* reads that must not load the primary */
} noodle_route;
NOODLE_API const char *noodle_route_name(noodle_route r); /* "primary", "prefer-standby", ... */

typedef enum noodle_breaker_state {
    NOODLE_BREAKER_CLOSED = 0, /* traffic flows */
    NOODLE_BREAKER_OPEN,       /* refused until the backoff passes */
    NOODLE_BREAKER_HALF_OPEN,  /* one trial decides */
} noodle_breaker_state;
NOODLE_API const char *noodle_breaker_state_name(noodle_breaker_state s);

/* ---- events ------------------------------------------------------------------------ */

typedef enum noodle_cluster_event_type {
    NOODLE_CLUSTER_EV_ROLE_CHANGED = 1, /* a node's discovered role changed (old_role, role) */
    NOODLE_CLUSTER_EV_NODE_DOWN,        /* a node stopped answering (code, message) */
    NOODLE_CLUSTER_EV_NODE_UP,          /* a node that was down answers again */
    NOODLE_CLUSTER_EV_PRIMARY_LOST,     /* the cluster has no usable primary */
    NOODLE_CLUSTER_EV_FAILOVER,         /* a new primary is in use (node; generation) */
    NOODLE_CLUSTER_EV_DEMOTED,          /* a write was refused as read-only on the primary */
    NOODLE_CLUSTER_EV_FENCED,           /* a node claims primary while another one is */
    NOODLE_CLUSTER_EV_BREAKER,          /* a breaker changed state (breaker) */
    NOODLE_CLUSTER_EV_CLOSING,          /* noodle_cluster_close: the last event; the cluster
                                           is freed when the observers return */
} noodle_cluster_event_type;
NOODLE_API const char *noodle_cluster_event_name(noodle_cluster_event_type t);

typedef struct noodle_cluster_event {
    noodle_cluster_event_type type;
    int64_t time;             /* on the cluster's clock */
    int node;                 /* index, -1 when not about one node */
    const char *endpoint;     /* the node's endpoint, secrets masked; valid during the callback */
    noodle_role old_role, role;
    noodle_breaker_state breaker;
    uint64_t generation;      /* topology generation after the event */
    int code;                 /* NODE_DOWN, DEMOTED, BREAKER (open): the error */
    const char *message;      /* its text, or NULL; valid during the callback */
} noodle_cluster_event;

/* Called on the thread where the event happened (a prober or a caller), with
 * no cluster lock held; must be quick and must not call back into the cluster. */
typedef void (*noodle_cluster_observer)(const noodle_cluster_event *ev, void *arg);

/* ---- creation ------------------------------------------------------------------------ */

typedef struct noodle_cluster_options {
    size_t struct_size; /* sizeof(noodle_cluster_options) */
    /* Required: pool settings for every node's pool, the backend, and -- when
     * endpoints is NULL -- the url: a libpq multi-host conninfo or URI
     * ("host=a,b port=1,2 ..." / "postgresql://a:1,b:2/db"), split into one
     * endpoint per host. Borrowed during noodle_cluster_open only. */
    const noodle_config *config;
    /* Explicit endpoints (one url each); overrides config->url. */
    const char *const *endpoints;
    size_t nendpoints;
    const noodle_backend_ops *backend; /* NULL: by config->backend */
    const noodle_clock *clock;         /* NULL: the real clock */
    const char *application_name;      /* may be NULL */
    uint64_t seed;                     /* jitter generator; 0: from the clock */
    /* Prober: period while all is well (0: config probe_interval_ms, 1 s),
     * period while the primary is missing or suspected (0: 50 ms), and the
     * deadline of one probe (0: config probe_timeout_ms, 1 s). */
    int64_t probe_interval_ms, fast_probe_interval_ms, probe_timeout_ms;
    /* Breaker: consecutive failures that open it (0: config, 3); backoff
     * base and cap (0: config, 200 ms and 10 s), jittered down by up to 50 %. */
    int64_t breaker_threshold, breaker_backoff_ms, breaker_backoff_max_ms;
    /* Ramp a re-admitted node's pool from 1 to max_connections over this
     * long (0: config slow_start_ms, 5 s; negative: off). */
    int64_t slow_start_ms;
    /* noodle_cluster_execute retries an idempotent read once on another
     * connection after a connection-fatal error. Writes are never retried. */
    bool retry_reads;
    /* Block noodle_cluster_open until a primary is known (or connect_timeout
     * passes: NOODLE_E_CLUSTER_NO_PRIMARY). */
    bool wait_for_primary;
} noodle_cluster_options;

#define NOODLE_CLUSTER_OPTIONS_INIT {.struct_size = sizeof(noodle_cluster_options)}

/* Split a libpq multi-host conninfo or URI into one conninfo per host (same
 * database, user and options; host, hostaddr and port taken per host). The
 * strings and the array are allocated: free with noodle_cluster_free_endpoints.
 * A single-host url gives one endpoint. NOODLE_E_CONFIG_INVALID_URL on a url
 * libpq cannot parse or whose host and port lists do not match. */
NOODLE_API NOODLE_MUSTCHECK int noodle_cluster_split_url(const char *url, char ***out,
                                                         size_t *count, noodle_error *err);
NOODLE_API void noodle_cluster_free_endpoints(char **endpoints, size_t count);

/* Create the cluster: one pool per node (warming up to min_idle), and the
 * prober. *out is NULL on failure. */
NOODLE_API NOODLE_MUSTCHECK int noodle_cluster_open(const noodle_cluster_options *opts,
                                                    noodle_cluster **out, noodle_error *err);
/* Stop the prober, shut every pool down (waiting for connections in use)
 * and free. Accepts NULL. */
NOODLE_API void noodle_cluster_close(noodle_cluster *cluster);

/* Observe every event (at most 8 observers; append only). */
NOODLE_API NOODLE_MUSTCHECK int noodle_cluster_observe(noodle_cluster *cluster,
                                                       noodle_cluster_observer fn, void *arg,
                                                       noodle_error *err);

/* ---- acquire and release ------------------------------------------------------------ */

/* Acquire a connection for route, waiting at most until deadline (0: now +
 * the pool acquire timeout) in all. On failure *out is NULL and the code says
 * why: NOODLE_E_CLUSTER_NO_PRIMARY (no node is primary), _NO_STANDBY
 * (ROUTE_STANDBY and none), _BREAKER_OPEN (the node that would serve it is
 * refused by its breaker), _CONNECT_TIMEOUT (its connects keep failing or
 * timing out), NOODLE_E_POOL_TIMEOUT (every connection busy), _CLUSTER_CLOSED. */
NOODLE_API NOODLE_MUSTCHECK int noodle_cluster_acquire_at(noodle_cluster *cluster,
                                                          noodle_route route, int64_t deadline,
                                                          noodle_conn **out, noodle_error *err,
                                                          const char *file, int line);
#define noodle_cluster_acquire(cluster, route, out, err) \
    noodle_cluster_acquire_at((cluster), (route), 0, (out), (err), __FILE__, __LINE__)
#define noodle_cluster_acquire_until(cluster, route, deadline, out, err) \
    noodle_cluster_acquire_at((cluster), (route), (deadline), (out), (err), __FILE__, __LINE__)

/* Give a connection back to its node's pool; sets *conn to NULL (a NULL
 * *conn is ignored). */
NOODLE_API void noodle_cluster_release(noodle_cluster *cluster, noodle_conn **conn);

/* Flags of noodle_cluster_execute. */
#define NOODLE_EXEC_READ 0x1u /* an idempotent read: may be retried once (retry_reads) */

/* Acquire for route, run one statement, release. A write (no
 * NOODLE_EXEC_READ) whose connection fails after the statement was sent
 * returns NOODLE_E_OUTCOME_UNKNOWN: it may or may not have been applied. */
NOODLE_API NOODLE_MUSTCHECK int noodle_cluster_execute(noodle_cluster *cluster, noodle_route route,
                                                       unsigned flags, const char *sql,
                                                       const noodle_value *params, size_t nparams,
                                                       int64_t deadline, noodle_rows **out,
                                                       noodle_error *err);

/* ---- state ------------------------------------------------------------------------------ */

typedef struct noodle_cluster_node_info {
    char endpoint[512];          /* secrets masked */
    noodle_role role;            /* last discovered */
    bool up;                     /* answered its last probe */
    bool fenced;                 /* claims primary while another node is */
    noodle_breaker_state breaker;
    int64_t consecutive_failures;
    int64_t last_probe_at;       /* clock time of the last answered probe, 0: never */
    noodle_pool_metrics pool;
} noodle_cluster_node_info;

typedef struct noodle_cluster_metrics {
    size_t nodes;
    int primary;                 /* node index, -1: none */
    uint64_t generation;         /* topology generation */
    uint64_t failovers;          /* times a different primary was taken into use */
    int64_t last_failover_at;    /* clock time, 0: never */
    uint64_t demotions;          /* times the primary answered as no longer writable */
    uint64_t probes, probe_failures;
    uint64_t reads_retried;
} noodle_cluster_metrics;

NOODLE_API void noodle_cluster_get_metrics(noodle_cluster *cluster, noodle_cluster_metrics *out);
/* Fill *out for node i; NOODLE_E_CLUSTER_INVALID_ARGUMENT when out of range. */
NOODLE_API NOODLE_MUSTCHECK int noodle_cluster_node(noodle_cluster *cluster, size_t i,
                                                    noodle_cluster_node_info *out,
                                                    noodle_error *err);
/* The cluster's clock and its acquire timeout (ns), for layers that derive
 * their own deadlines from the cluster's. */
NOODLE_API const noodle_clock *noodle_cluster_clock(const noodle_cluster *cluster);
NOODLE_API int64_t noodle_cluster_acquire_timeout(const noodle_cluster *cluster);

/* Ask the prober to probe every node now (e.g. after an external promote). */
NOODLE_API void noodle_cluster_probe_now(noodle_cluster *cluster);

#ifdef __cplusplus
}
#endif
#endif
