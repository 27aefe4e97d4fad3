/* The cluster layer: role discovery, circuit breakers, failover.
 *
 * Structure
 *   One noodle_pool per node. One prober thread per node, so that a frozen
 *   node only ever holds its own prober (each probe has a deadline). The
 *   prober keeps one connection of its own per node (not counted by the
 *   node's pool) and asks the backend's role operation.
 *
 * Invariants
 *  1. cl->lock guards the topology (roles, breakers, primary, generation,
 *     fencing). It is never held across backend I/O or a call into a pool:
 *     decisions are taken under the lock into an `actions` record, carried
 *     out after unlocking (retire a node's pool, emit events).
 *  2. The primary is the one node that reports PRIMARY, is not fenced and
 *     whose breaker is not open. When a second node reports PRIMARY, the one
 *     seen moving from STANDBY (in recovery) to PRIMARY -- a promotion --
 *     wins and the other is fenced; any other node reporting PRIMARY while
 *     one is primary (an old primary back after a crash or a freeze, a
 *     read-only one made writable again) is fenced. The promotion claim is
 *     used once: it is dropped when the node wins, fails a probe or has its
 *     breaker opened (what happened while it was unreachable is unknown), so
 *     a node promoted in an earlier failover never wins on that account
 *     again. A fenced node gets no traffic until it reports a non-primary
 *     role (it rejoined as a standby: reads only).
 *  3. Losing or changing the primary bumps the topology generation and the
 *     old primary's pool generation (idle connections closed, those in use
 *     closed on release), and redirects its waiters (2009) so they re-route.
 *     The same redirect happens to the pool of any node that goes down or
 *     whose breaker opens. Callers that entered a pool just after its
 *     redirect (writers of a node that is no longer primary, readers of a
 *     node that no longer serves reads) are redirected again by the node's
 *     prober on its next (fast) round.
 *  4. A read-only refusal (25006) or a connection-fatal error on a handed-out
 *     connection only asks for an immediate probe: the probe's answer
 *     decides, so a user's own READ ONLY transaction or one terminated
 *     session never causes a failover.
 *  5. The breaker counts connect and probe failures only (the attempts to
 *     reach the node), never query errors.
 */
#include "noodle/cluster.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/postgres_sql.h"
#include "failpoint_internal.h"
#include "internal.h"

#define MAX_OBSERVERS 8
#define MAX_EVENTS 24 /* per decision; more than any one decision makes */

typedef struct node {
    struct noodle_cluster *cl;
    int index;
    char *url;
    char endpoint[512]; /* masked */
    noodle_pool *pool;
    pthread_t thread;
    bool thread_started;
    noodle_conn *probe_conn; /* the prober's own; only its thread touches it */

    /* under cl->lock */
    noodle_role role;
    bool promotion_seen; /* seen going STANDBY -> PRIMARY; not yet used (invariant 2) */
    bool up, ever_answered, fenced, probe_requested;
    int64_t last_probe_at;
    noodle_breaker_state breaker;
    int64_t failures;    /* consecutive connect / probe failures */
    int64_t opens;       /* consecutive times opened (backoff exponent) */
    int64_t open_until;  /* OPEN: when a trial may go */
    bool trial_in_flight;
    int64_t slow_start_from; /* 0: not ramping */
    int64_t applied_max, applied_min; /* the pool's size as slow start last set it */
    int64_t connect_failures; /* consecutive, of the pool's connects */
    int last_code;
    char last_error[256];
    _Atomic int writers_inside; /* acquirers for the primary inside this pool */
    _Atomic int readers_inside; /* acquirers for reads on a standby inside this pool */
} node;

typedef struct observer {
    noodle_cluster_observer fn;
    void *arg;
} observer;

struct noodle_cluster {
    const noodle_clock *clock;
    const noodle_backend_ops *ops;
    char *app_name;
    node *nodes;
    size_t n;

    int64_t probe_interval, fast_probe_interval, probe_timeout, acquire_timeout,
        connect_timeout, backoff_base, backoff_max, slow_start, pool_max, pool_min_idle;
    int64_t threshold;
    bool retry_reads;

    pthread_mutex_t lock;
    pthread_cond_t topo_cond;  /* the topology changed (acquirers waiting for a primary) */
    pthread_cond_t probe_cond; /* probe now, or stop */
    int primary;               /* -1: none */
    int last_primary;          /* the primary before it was lost (-1: never had one) */
    uint64_t generation;
    int64_t fast_until; /* probe at the fast period until then */
    bool stopping;
    int inside;               /* callers inside noodle_cluster_acquire_at */
    pthread_cond_t idle_cond; /* inside dropped to 0 while stopping */
    uint64_t rng;
    uint64_t failovers, demotions;
    int64_t last_failover_at;

    _Atomic uint64_t probes, probe_failures, reads_retried;
    _Atomic unsigned read_cursor;
    observer observers[MAX_OBSERVERS];
    _Atomic int nobservers;
};

/* What a decision taken under the lock leaves to do after unlocking. */
typedef struct actions {
    int restore; /* node whose pool returns to full size and retries at once, -1 */
    size_t nredirect;
    int redirect[MAX_EVENTS]; /* nodes whose sessions are closed and waiters sent elsewhere */
    size_t nevents;
    noodle_cluster_event events[MAX_EVENTS];
    char messages[MAX_EVENTS][256];
} actions;

static void actions_init(actions *a) {
    a->restore = -1;
    a->nredirect = 0;
    a->nevents = 0;
}

/* nd's pool must close its sessions and send its waiters elsewhere (it lost
 * the primary role, went down, or its breaker opened). */
static void redirect_later(actions *a, const node *nd) {
    for (size_t i = 0; i < a->nredirect; i++)
        if (a->redirect[i] == nd->index) return;
    if (a->nredirect < MAX_EVENTS) a->redirect[a->nredirect++] = nd->index;
}

static int64_t ms_to_ns(int64_t ms) { return ms > INT64_MAX / 1000000 ? INT64_MAX : ms * 1000000; }

/* ---- names ----------------------------------------------------------------------- */

const char *noodle_route_name(noodle_route r) {
    switch (r) {
    case NOODLE_ROUTE_PRIMARY: return "primary";
    case NOODLE_ROUTE_PREFER_STANDBY: return "prefer-standby";
    case NOODLE_ROUTE_STANDBY: return "standby";
    }
    return "unknown";
}

const char *noodle_breaker_state_name(noodle_breaker_state s) {
    switch (s) {
    case NOODLE_BREAKER_CLOSED: return "closed";
    case NOODLE_BREAKER_OPEN: return "open";
    case NOODLE_BREAKER_HALF_OPEN: return "half-open";
    }
    return "unknown";
}

const char *noodle_cluster_event_name(noodle_cluster_event_type t) {
    switch (t) {
    case NOODLE_CLUSTER_EV_ROLE_CHANGED: return "role_changed";
    case NOODLE_CLUSTER_EV_NODE_DOWN: return "node_down";
    case NOODLE_CLUSTER_EV_NODE_UP: return "node_up";
    case NOODLE_CLUSTER_EV_PRIMARY_LOST: return "primary_lost";
    case NOODLE_CLUSTER_EV_FAILOVER: return "failover";
    case NOODLE_CLUSTER_EV_DEMOTED: return "demoted";
    case NOODLE_CLUSTER_EV_FENCED: return "fenced";
    case NOODLE_CLUSTER_EV_BREAKER: return "breaker";
    case NOODLE_CLUSTER_EV_CLOSING: return "closing";
    }
    return "unknown";
}

/* ---- events ------------------------------------------------------------------------ */

static noodle_cluster_event *add_event(noodle_cluster *cl, actions *a,
                                       noodle_cluster_event_type type, const node *nd) {
    if (a->nevents == MAX_EVENTS) return NULL;
    noodle_cluster_event *ev = &a->events[a->nevents];
    memset(ev, 0, sizeof *ev);
    ev->type = type;
    ev->time = noodle_clock_now(cl->clock);
    ev->node = nd ? nd->index : -1;
    ev->endpoint = nd ? nd->endpoint : NULL;
    ev->role = ev->old_role = nd ? nd->role : NOODLE_ROLE_UNKNOWN;
    ev->breaker = nd ? nd->breaker : NOODLE_BREAKER_CLOSED;
    ev->generation = cl->generation;
    a->messages[a->nevents][0] = '\0';
    a->nevents++;
    return ev;
}

static void event_message(actions *a, noodle_cluster_event *ev, const char *text) {
    if (ev == NULL) return;
    char *buf = a->messages[ev - a->events];
    noodle__strlcpy(buf, text, sizeof a->messages[0]);
    ev->message = buf;
}

/* Carry out a decision: with no cluster lock held. */
static void act(noodle_cluster *cl, actions *a) {
    for (size_t i = 0; i < a->nredirect; i++) {
        noodle_pool *p = cl->nodes[a->redirect[i]].pool;
        noodle_pool_bump_generation(p);
        noodle_pool_redirect_waiters(p);
    }
    if (a->restore >= 0) noodle_pool_reset_backoff(cl->nodes[a->restore].pool);
    int n = atomic_load_explicit(&cl->nobservers, memory_order_acquire);
    for (size_t i = 0; i < a->nevents; i++) {
        for (int k = 0; k < n; k++) cl->observers[k].fn(&a->events[i], cl->observers[k].arg);
    }
}

/* ---- the topology (cl->lock held) ------------------------------------------------------- */

static bool routable(const node *nd) {
    return nd->ever_answered && !nd->fenced && nd->breaker != NOODLE_BREAKER_OPEN;
}

/* A standby (or read-only node) that reads may go to now (cl->lock held). */
static bool standby_for_reads(const noodle_cluster *cl, const node *nd) {
    return nd->index != cl->primary && routable(nd) && nd->up &&
           (nd->role == NOODLE_ROLE_STANDBY || nd->role == NOODLE_ROLE_READ_ONLY);
}

/* Re-decide which node is the primary after a node's state changed
 * (invariant 2). Fences and failovers are recorded in a. */
static void decide_primary(noodle_cluster *cl, actions *a) {
    int cur = cl->primary;
    /* a node that was seen moving from standby to primary beats the
     * current primary (a promotion happened); otherwise the current one
     * keeps its place and a newcomer claiming primary is fenced */
    for (size_t i = 0; i < cl->n; i++) {
        node *nd = &cl->nodes[i];
        /* a newcomer must have answered its last probe with its breaker
         * closed: a half-open node's role is from before its outage */
        if ((int)i == cur || nd->role != NOODLE_ROLE_PRIMARY || !routable(nd) || !nd->up ||
            nd->breaker != NOODLE_BREAKER_CLOSED)
            continue;
        bool promoted = nd->promotion_seen;
        int loser = -1;
        if (cur >= 0 && promoted) {
            loser = cur;
            cur = (int)i;
        } else if (cur >= 0) {
            loser = (int)i;
        } else {
            cur = (int)i;
        }
        if (loser >= 0) {
            cl->nodes[loser].fenced = true;
            noodle_cluster_event *ev = add_event(cl, a, NOODLE_CLUSTER_EV_FENCED, &cl->nodes[loser]);
            event_message(a, ev,
                          "claims to be primary while another node is: fenced until it rejoins "
                          "as a standby");
        }
    }
    if (cur >= 0) {
        node *c = &cl->nodes[cur];
        if (c->role != NOODLE_ROLE_PRIMARY || !routable(c)) cur = -1;
    }
    if (cur == cl->primary) return;
    int old = cl->primary;
    cl->primary = cur;
    cl->generation++;
    if (old >= 0) {
        cl->last_primary = old;
        redirect_later(a, &cl->nodes[old]);
        if (cur < 0) {
            noodle_cluster_event *ev = add_event(cl, a, NOODLE_CLUSTER_EV_PRIMARY_LOST, &cl->nodes[old]);
            event_message(a, ev, cl->nodes[old].last_error[0] ? cl->nodes[old].last_error
                                                              : "the primary is no longer usable");
        }
    }
    if (cur >= 0) {
        cl->nodes[cur].promotion_seen = false; /* used: it won */
        if (cl->last_primary >= 0 && cl->last_primary != cur) {
            cl->failovers++;
            cl->last_failover_at = noodle_clock_now(cl->clock);
        }
        cl->last_primary = cur;
        add_event(cl, a, NOODLE_CLUSTER_EV_FAILOVER, &cl->nodes[cur]);
    }
    noodle_clock_cond_broadcast(cl->clock, &cl->topo_cond);
}

/* ---- the breaker (cl->lock held) ------------------------------------------------------------ */

static void breaker_event(noodle_cluster *cl, actions *a, node *nd, const char *why) {
    noodle_cluster_event *ev = add_event(cl, a, NOODLE_CLUSTER_EV_BREAKER, nd);
    if (ev != NULL) ev->code = nd->breaker == NOODLE_BREAKER_OPEN ? nd->last_code : 0;
    event_message(a, ev, why);
}

static int64_t breaker_delay(noodle_cluster *cl, int64_t opens) {
    return noodle__backoff_delay(&cl->rng, cl->backoff_base, cl->backoff_max, opens);
}

static void breaker_open(noodle_cluster *cl, actions *a, node *nd, int64_t now) {
    nd->breaker = NOODLE_BREAKER_OPEN;
    nd->promotion_seen = false;
    redirect_later(a, nd); /* its waiters go elsewhere */
    nd->opens++;
    nd->open_until = now + breaker_delay(cl, nd->opens);
    nd->trial_in_flight = false;
    nd->slow_start_from = 0;
    breaker_event(cl, a, nd, nd->last_error);
}

/* A connect or probe of nd failed with code. */
static void breaker_failure(noodle_cluster *cl, actions *a, node *nd, int code, const char *text) {
    int64_t now = noodle_clock_now(cl->clock);
    nd->failures++;
    nd->last_code = code;
    noodle__strlcpy(nd->last_error, text, sizeof nd->last_error);
    if (nd->breaker == NOODLE_BREAKER_HALF_OPEN) {
        breaker_open(cl, a, nd, now); /* the trial failed */
    } else if (nd->breaker == NOODLE_BREAKER_CLOSED && nd->failures >= cl->threshold) {
        if (NOODLE_FAIL_AT(CLUSTER_BREAKER_OPEN) == 0) breaker_open(cl, a, nd, now);
    }
    decide_primary(cl, a);
}

/* A connect or probe of nd succeeded. */
static void breaker_success(noodle_cluster *cl, actions *a, node *nd) {
    nd->failures = 0;
    if (nd->breaker == NOODLE_BREAKER_CLOSED) return;
    if (nd->breaker == NOODLE_BREAKER_OPEN) return; /* a late answer from before it opened */
    if (NOODLE_FAIL_AT(CLUSTER_BREAKER_CLOSE) != 0) {
        noodle__strlcpy(nd->last_error, "fail point cluster/breaker/close fired",
                        sizeof nd->last_error);
        breaker_open(cl, a, nd, noodle_clock_now(cl->clock));
        return;
    }
    nd->breaker = NOODLE_BREAKER_CLOSED;
    nd->opens = 0;
    nd->trial_in_flight = false;
    nd->slow_start_from = cl->slow_start > 0 ? noodle_clock_now(cl->clock) : 0;
    a->restore = nd->index;
    breaker_event(cl, a, nd, "the trial succeeded: the node is admitted again");
    decide_primary(cl, a);
}

/* May an attempt (connect or probe) to nd go now? Moves OPEN to HALF_OPEN
 * when the backoff has passed; the caller's attempt is then the one trial. */
static bool breaker_admit(noodle_cluster *cl, actions *a, node *nd, int64_t now) {
    switch (nd->breaker) {
    case NOODLE_BREAKER_CLOSED:
        return true;
    case NOODLE_BREAKER_OPEN:
        if (now < nd->open_until) return false;
        if (NOODLE_FAIL_AT(CLUSTER_BREAKER_HALF_OPEN) != 0) {
            nd->open_until = now + breaker_delay(cl, nd->opens);
            return false;
        }
        nd->breaker = NOODLE_BREAKER_HALF_OPEN;
        nd->trial_in_flight = true;
        breaker_event(cl, a, nd, "backoff passed: one trial goes through");
        return true;
    case NOODLE_BREAKER_HALF_OPEN:
        if (nd->trial_in_flight) return false;
        nd->trial_in_flight = true;
        return true;
    }
    return false;
}

/* ---- hooks from the pools and the connections ---------------------------------------------- */

static void on_conn_error(noodle_conn *c, const char *what, int code, const noodle_error *err,
                          void *arg);

/* Before each connect of nd's pool: the breaker decides. */
static int connect_gate(void *arg, noodle_error *err) {
    node *nd = arg;
    noodle_cluster *cl = nd->cl;
    actions a;
    actions_init(&a);
    pthread_mutex_lock(&cl->lock);
    bool ok = breaker_admit(cl, &a, nd, noodle_clock_now(cl->clock));
    int64_t left = nd->open_until - noodle_clock_now(cl->clock);
    pthread_mutex_unlock(&cl->lock);
    act(cl, &a);
    if (ok) return 0;
    return NOODLE_ERR(err, NOODLE_E_CLUSTER_BREAKER_OPEN,
                      "not connecting to %s: its circuit breaker is open (%lld ms left)",
                      nd->endpoint, (long long)(left > 0 ? left / 1000000 : 0));
}

/* After each connect of nd's pool. */
static void connect_done(void *arg, noodle_conn *conn, int code, const noodle_error *err) {
    node *nd = arg;
    noodle_cluster *cl = nd->cl;
    actions a;
    actions_init(&a);
    if (conn != NULL) noodle_conn_set_error_hook(conn, on_conn_error, nd);
    pthread_mutex_lock(&cl->lock);
    if (code == 0) {
        nd->connect_failures = 0;
        breaker_success(cl, &a, nd);
    } else {
        char text[256];
        noodle_error_format(err, text, sizeof text);
        nd->connect_failures++;
        breaker_failure(cl, &a, nd, code, text);
        nd->probe_requested = true; /* see what the node says */
        noodle_clock_cond_broadcast(cl->clock, &cl->probe_cond);
    }
    pthread_mutex_unlock(&cl->lock);
    act(cl, &a);
}

/* A handed-out connection failed: ask for a probe now (invariant 4). */
static void on_conn_error(noodle_conn *c, const char *what, int code, const noodle_error *err,
                          void *arg) {
    (void)c;
    (void)what;
    (void)err;
    node *nd = arg;
    noodle_cluster *cl = nd->cl;
    bool read_only = code == NOODLE_E_QUERY_READ_ONLY;
    if (!read_only && (!noodle_code_is_connection_fatal(code) || code == NOODLE_E_CONNECTION_BROKEN))
        return;
    pthread_mutex_lock(&cl->lock);
    int64_t now = noodle_clock_now(cl->clock);
    if (!read_only || cl->primary == nd->index) {
        nd->probe_requested = true;
        cl->fast_until = now + 10 * cl->probe_interval;
        noodle_clock_cond_broadcast(cl->clock, &cl->probe_cond);
    }
    pthread_mutex_unlock(&cl->lock);
}

/* ---- the prober ---------------------------------------------------------------------------------- */

/* Connect the prober's own connection to nd and ask the role. */
static int probe_fresh(noodle_cluster *cl, node *nd, int64_t deadline, noodle_role *role,
                       noodle_error *err) {
    noodle_connect_params p = {.url = nd->url, .deadline = deadline, .clock = cl->clock,
                               .application_name = cl->app_name};
    int rc = noodle_conn_open(cl->ops, &p, &nd->probe_conn, err);
    if (rc != 0) return rc;
    rc = noodle_conn_role(nd->probe_conn, deadline, role, err);
    if (rc != 0) {
        noodle_conn_close(nd->probe_conn);
        nd->probe_conn = NULL;
    }
    return rc;
}

/* Ask nd its role, on the prober's own connection (opened as needed), within
 * one probe deadline. No lock held. */
static int probe(noodle_cluster *cl, node *nd, noodle_role *role, bool *sessions_lost,
                 noodle_error *err) {
    *role = NOODLE_ROLE_UNKNOWN;
    *sessions_lost = false;
    int rc = NOODLE_FAIL_AT(CLUSTER_ROLE_DETECT);
    if (rc != 0)
        return NOODLE_ERR(err, rc, "role probe of %s: fail point cluster/role_detect fired",
                          nd->endpoint);
    int64_t deadline = noodle_deadline_after(cl->clock, cl->probe_timeout);
    if (nd->probe_conn != NULL && noodle_conn_get_state(nd->probe_conn) != NOODLE_CONN_OK) {
        noodle_conn_close(nd->probe_conn);
        nd->probe_conn = NULL;
    }
    if (nd->probe_conn == NULL) return probe_fresh(cl, nd, deadline, role, err);
    rc = noodle_conn_role(nd->probe_conn, deadline, role, err);
    if (rc != 0) {
        noodle_conn_close(nd->probe_conn);
        nd->probe_conn = NULL;
        /* the session of an earlier round may have been terminated on its
         * own (pg_terminate_backend): only a fresh connection's answer says
         * whether the node is reachable (a frozen node's deadline has
         * passed by now, so this costs it nothing more) */
        if (noodle_code_is_connection_fatal(rc)) {
            rc = probe_fresh(cl, nd, deadline, role, err);
            /* the node answers, but its sessions of before were cut (a
             * restart, a mass pg_terminate_backend): so are the pool's */
            *sessions_lost = rc == 0;
        }
    }
    return rc;
}

/* Record a probe's answer (cl->lock held). */
static void apply_probe(noodle_cluster *cl, actions *a, node *nd, int rc, noodle_role role,
                        const noodle_error *err) {
    int64_t now = noodle_clock_now(cl->clock);
    atomic_fetch_add(&cl->probes, 1);
    if (rc != 0) {
        char text[256];
        noodle_error_format(err, text, sizeof text);
        atomic_fetch_add(&cl->probe_failures, 1);
        cl->fast_until = now + 10 * cl->probe_interval; /* look closely until it settles */
        nd->promotion_seen = false;
        if (nd->up) {
            nd->up = false;
            redirect_later(a, nd);
            noodle_cluster_event *ev = add_event(cl, a, NOODLE_CLUSTER_EV_NODE_DOWN, nd);
            if (ev != NULL) ev->code = rc;
            event_message(a, ev, text);
        }
        breaker_failure(cl, a, nd, rc, text);
        return;
    }
    nd->last_probe_at = now;
    nd->last_error[0] = '\0';
    if (!nd->up) {
        nd->up = true;
        if (nd->ever_answered) add_event(cl, a, NOODLE_CLUSTER_EV_NODE_UP, nd);
    }
    nd->ever_answered = true;
    noodle_role old = nd->role;
    if (role != old) {
        nd->promotion_seen = role == NOODLE_ROLE_PRIMARY && old == NOODLE_ROLE_STANDBY;
        nd->role = role;
        noodle_cluster_event *ev = add_event(cl, a, NOODLE_CLUSTER_EV_ROLE_CHANGED, nd);
        if (ev != NULL) ev->old_role = old;
        if (old == NOODLE_ROLE_PRIMARY && cl->primary == nd->index) {
            cl->demotions++;
            noodle_cluster_event *d = add_event(cl, a, NOODLE_CLUSTER_EV_DEMOTED, nd);
            if (d != NULL) d->old_role = old;
            event_message(a, d, "the primary answers but is no longer writable");
        }
    }
    if (nd->fenced && role != NOODLE_ROLE_PRIMARY) nd->fenced = false; /* rejoined: reads only */
    breaker_success(cl, a, nd);
    decide_primary(cl, a);
}

static bool fast_mode(noodle_cluster *cl, int64_t now) {
    return cl->primary < 0 || now < cl->fast_until;
}

/* Slow start: the pool of a node re-admitted after its breaker opened grows
 * from 1 connection to the configured maximum over slow_start. */
static void slow_start_step(noodle_cluster *cl, node *nd, int64_t now) {
    int64_t max = cl->pool_max, min = cl->pool_min_idle;
    if (nd->slow_start_from != 0) {
        int64_t elapsed = now - nd->slow_start_from;
        if (elapsed >= cl->slow_start) {
            nd->slow_start_from = 0;
        } else {
            max = cl->pool_max * elapsed / cl->slow_start;
            if (max < 1) max = 1;
            if (min > max) min = max;
        }
    }
    if (nd->applied_max == max && nd->applied_min == min) return;
    nd->applied_max = max;
    nd->applied_min = min;
    pthread_mutex_unlock(&cl->lock);
    noodle_error ignored;
    if (noodle_pool_resize(nd->pool, min, max, &ignored) != 0) /* cannot happen: 1 <= max <= capacity */
        nd->applied_max = -1;                                      /* try again next round */
    pthread_mutex_lock(&cl->lock);
}

static void *prober_main(void *arg) {
    node *nd = arg;
    noodle_cluster *cl = nd->cl;
    bool probed = false;
    int64_t last = 0; /* when the last round ended */
    pthread_mutex_lock(&cl->lock);
    while (!cl->stopping) {
        int64_t now = noodle_clock_now(cl->clock);
        int64_t due = last + (fast_mode(cl, now) ? cl->fast_probe_interval : cl->probe_interval);
        if (nd->breaker == NOODLE_BREAKER_OPEN && nd->open_until > now && nd->open_until < due)
            due = nd->open_until;
        if (probed && !nd->probe_requested && now < due) {
            /* woken early by a request, a topology change or stop: re-decide */
            noodle_clock_cond_wait_until(cl->clock, &cl->probe_cond, &cl->lock, due);
            continue;
        }
        probed = true;
        nd->probe_requested = false;
        actions a;
        actions_init(&a);
        bool go = breaker_admit(cl, &a, nd, now);
        /* callers that slipped into this pool after it stopped serving them */
        bool redirect = (cl->primary != nd->index && atomic_load(&nd->writers_inside) > 0) ||
                        (cl->primary != nd->index && !standby_for_reads(cl, nd) &&
                         atomic_load(&nd->readers_inside) > 0);
        pthread_mutex_unlock(&cl->lock);
        act(cl, &a);
        if (redirect) noodle_pool_redirect_waiters(nd->pool);
        noodle_role role = NOODLE_ROLE_UNKNOWN;
        noodle_error err;
        noodle_error_clear(&err);
        bool sessions_lost = false;
        int rc = go ? probe(cl, nd, &role, &sessions_lost, &err) : 0;
        if (sessions_lost) noodle_pool_bump_generation(nd->pool); /* idle ones closed now */
        pthread_mutex_lock(&cl->lock);
        actions_init(&a);
        if (go) apply_probe(cl, &a, nd, rc, role, &err);
        last = noodle_clock_now(cl->clock);
        pthread_mutex_unlock(&cl->lock);
        act(cl, &a);
        pthread_mutex_lock(&cl->lock);
        slow_start_step(cl, nd, last);
    }
    pthread_mutex_unlock(&cl->lock);
    noodle_conn_close(nd->probe_conn);
    nd->probe_conn = NULL;
    return NULL;
}

/* ---- acquire ------------------------------------------------------------------------------------ */

/* The node to serve route now, or -1; reads avoid node `avoid` (where a
 * read just failed) when another node can serve them (cl->lock held). */
static int pick_node(noodle_cluster *cl, noodle_route route, int avoid) {
    if (route != NOODLE_ROUTE_PRIMARY) {
        size_t n = cl->n;
        unsigned start = atomic_fetch_add_explicit(&cl->read_cursor, 1, memory_order_relaxed);
        int fallback = -1;
        for (size_t k = 0; k < n; k++) {
            node *nd = &cl->nodes[(start + k) % n];
            if (!standby_for_reads(cl, nd)) continue;
            if (nd->index != avoid) return nd->index;
            fallback = nd->index;
        }
        if (route == NOODLE_ROUTE_STANDBY) return fallback;
        if (cl->primary >= 0 && (cl->primary != avoid || fallback < 0)) return cl->primary;
        return fallback;
    }
    return cl->primary;
}

/* Why nothing could serve route by the deadline (cl->lock held). */
static int no_node_error(noodle_cluster *cl, noodle_route route, int64_t waited_ms,
                         noodle_error *err) {
    if (route == NOODLE_ROUTE_STANDBY)
        return NOODLE_ERR(err, NOODLE_E_CLUSTER_NO_STANDBY,
                          "no standby of the %zu nodes is available for a standby-only read "
                          "(waited %lld ms)",
                          cl->n, (long long)waited_ms);
    int last = cl->last_primary;
    if (last >= 0 && cl->nodes[last].breaker == NOODLE_BREAKER_OPEN &&
        cl->nodes[last].role == NOODLE_ROLE_PRIMARY && !cl->nodes[last].fenced)
        return NOODLE_ERR(err, NOODLE_E_CLUSTER_BREAKER_OPEN,
                          "no primary after %lld ms: %s, the last primary, has its circuit breaker "
                          "open (last error: %s)",
                          (long long)waited_ms, cl->nodes[last].endpoint,
                          cl->nodes[last].last_error[0] ? cl->nodes[last].last_error : "none");
    return NOODLE_ERR(err, NOODLE_E_CLUSTER_NO_PRIMARY,
                      "no primary among the %zu nodes after %lld ms%s%s", cl->n,
                      (long long)waited_ms, last >= 0 ? "; the last primary, " : "",
                      last >= 0 ? cl->nodes[last].endpoint : "");
}

/* Acquire with cl->lock held and the caller counted in cl->inside. */
static int acquire_locked(noodle_cluster *cl, noodle_route route, int avoid, int64_t start,
                          int64_t deadline, noodle_conn **out, noodle_error *err, const char *file,
                          int line) {
    for (;;) {
        if (cl->stopping) return NOODLE_ERR(err, NOODLE_E_CLUSTER_CLOSED, "the cluster is closed");
        int i = pick_node(cl, route, avoid);
        if (i < 0) {
            cl->fast_until = noodle_clock_now(cl->clock) + 10 * cl->probe_interval;
            noodle_clock_cond_broadcast(cl->clock, &cl->probe_cond);
            if (noodle_clock_cond_wait_until(cl->clock, &cl->topo_cond, &cl->lock, deadline) ==
                    ETIMEDOUT &&
                pick_node(cl, route, avoid) < 0 && !cl->stopping)
                return no_node_error(cl, route, (noodle_clock_now(cl->clock) - start) / 1000000,
                                     err);
            continue;
        }
        node *nd = &cl->nodes[i];
        _Atomic int *inside = i == cl->primary ? &nd->writers_inside : &nd->readers_inside;
        atomic_fetch_add(inside, 1);
        pthread_mutex_unlock(&cl->lock);
        int rc = noodle_pool_acquire_at(nd->pool, deadline, out, err, file, line);
        pthread_mutex_lock(&cl->lock);
        atomic_fetch_sub(inside, 1);
        if (rc == 0) {
            /* the topology may have moved while we waited in the pool */
            bool still = route == NOODLE_ROUTE_PRIMARY
                             ? cl->primary == i
                             : cl->primary == i || standby_for_reads(cl, nd);
            if (still) return 0;
            pthread_mutex_unlock(&cl->lock);
            noodle_pool_release(nd->pool, out);
            pthread_mutex_lock(&cl->lock);
            continue;
        }
        if (rc == NOODLE_E_POOL_REDIRECTED) continue;
        if (rc == NOODLE_E_POOL_TIMEOUT && nd->connect_failures > 0)
            return NOODLE_ERR(err, NOODLE_E_CLUSTER_CONNECT_TIMEOUT,
                              "no connection to %s before the deadline: %lld connects in a row "
                              "failed, the last with: %s",
                              nd->endpoint, (long long)nd->connect_failures, nd->last_error);
        if (rc == NOODLE_E_POOL_CLOSED)
            return NOODLE_ERR(err, NOODLE_E_CLUSTER_CLOSED, "the cluster is closed");
        return rc;
    }
}

static int acquire_avoiding(noodle_cluster *cl, noodle_route route, int avoid, int64_t deadline,
                            noodle_conn **out, noodle_error *err, const char *file, int line) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    if (out != NULL) *out = NULL;
    if (cl == NULL || out == NULL ||
        (route != NOODLE_ROUTE_PRIMARY && route != NOODLE_ROUTE_PREFER_STANDBY &&
         route != NOODLE_ROUTE_STANDBY))
        return NOODLE_ERR(err, NOODLE_E_CLUSTER_INVALID_ARGUMENT,
                          "acquire needs a cluster, a route and somewhere to put the connection");
    int64_t start = noodle_clock_now(cl->clock);
    if (deadline == 0) deadline = noodle_deadline_after(cl->clock, cl->acquire_timeout);
    pthread_mutex_lock(&cl->lock);
    cl->inside++;
    int rc = acquire_locked(cl, route, avoid, start, deadline, out, err, file, line);
    if (--cl->inside == 0 && cl->stopping) noodle_clock_cond_broadcast(cl->clock, &cl->idle_cond);
    pthread_mutex_unlock(&cl->lock);
    return rc;
}

int noodle_cluster_acquire_at(noodle_cluster *cl, noodle_route route, int64_t deadline,
                              noodle_conn **out, noodle_error *err, const char *file, int line) {
    return acquire_avoiding(cl, route, -1, deadline, out, err, file, line);
}

/* The node a connection came from, or NULL. */
static node *node_of(noodle_cluster *cl, const noodle_conn *c) {
    for (size_t i = 0; i < cl->n; i++)
        if (noodle_pool_owns(cl->nodes[i].pool, c)) return &cl->nodes[i];
    return NULL;
}

void noodle_cluster_release(noodle_cluster *cl, noodle_conn **conn) {
    if (cl == NULL || conn == NULL || *conn == NULL) return;
    node *nd = node_of(cl, *conn);
    if (nd == NULL) return; /* not one of ours: leave it to its owner */
    noodle_pool_release(nd->pool, conn);
}

int noodle_cluster_execute(noodle_cluster *cl, noodle_route route, unsigned flags, const char *sql,
                           const noodle_value *params, size_t nparams, int64_t deadline,
                           noodle_rows **out, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (out != NULL) *out = NULL;
    if (cl == NULL || out == NULL || sql == NULL)
        return NOODLE_ERR(err, NOODLE_E_CLUSTER_INVALID_ARGUMENT,
                          "execute needs a cluster, SQL and somewhere to put the result");
    if (deadline == 0) deadline = noodle_deadline_after(cl->clock, cl->acquire_timeout);
    bool read = (flags & NOODLE_EXEC_READ) != 0;
    int attempts = read && cl->retry_reads ? 2 : 1;
    int avoid = -1; /* a retried read goes to another node when there is one */
    for (int attempt = 1;; attempt++) {
        noodle_conn *c = NULL;
        int rc = acquire_avoiding(cl, route, avoid, deadline, &c, err, __FILE__, __LINE__);
        if (rc != 0) return rc;
        rc = noodle_conn_execute(c, sql, params, nparams, deadline, out, err);
        node *nd = node_of(cl, c);
        avoid = nd != NULL ? nd->index : -1;
        noodle_cluster_release(cl, &c);
        if (rc == 0) return 0;
        bool lost = noodle_code_is_connection_fatal(rc) && rc != NOODLE_E_CONNECTION_BROKEN;
        if (read && lost && attempt < attempts) {
            atomic_fetch_add(&cl->reads_retried, 1);
            continue;
        }
        if (!read && lost && rc != NOODLE_E_OUTCOME_UNKNOWN) {
            char cause[sizeof err->message];
            noodle_error_format(err, cause, sizeof cause);
            return NOODLE_ERR(err, NOODLE_E_OUTCOME_UNKNOWN,
                              "the connection failed after the write was sent, so it may or may "
                              "not have been applied (%s)",
                              cause);
        }
        return rc;
    }
}

/* ---- creation and teardown -------------------------------------------------------------------- */

int noodle_cluster_split_url(const char *url, char ***out, size_t *count, noodle_error *err) {
    if (out == NULL || count == NULL)
        return NOODLE_ERR(err, NOODLE_E_CLUSTER_INVALID_ARGUMENT, "split_url needs out and count");
    return noodle__pg_split_hosts(url, out, count, err);
}

void noodle_cluster_free_endpoints(char **endpoints, size_t count) {
    if (endpoints == NULL) return;
    for (size_t i = 0; i < count; i++) free(endpoints[i]);
    free(endpoints);
}

static int64_t pick_ms(int64_t option, int64_t configured) {
    return ms_to_ns(option > 0 ? option : configured);
}

/* Every pool is shut down (connections in use come back first) before any
 * is freed: a release looks through all of them. */
static void free_cluster(noodle_cluster *cl) {
    for (size_t i = 0; i < cl->n; i++) {
        noodle_error ignored;
        if (cl->nodes[i].pool != NULL)
            (void)!noodle_pool_shutdown(cl->nodes[i].pool, NOODLE_NO_DEADLINE, &ignored);
    }
    pthread_mutex_lock(&cl->lock);
    while (cl->inside > 0) noodle_clock_cond_wait_until(cl->clock, &cl->idle_cond, &cl->lock,
                                                        NOODLE_NO_DEADLINE);
    pthread_mutex_unlock(&cl->lock);
    for (size_t i = 0; i < cl->n; i++) {
        noodle_pool_close(cl->nodes[i].pool);
        free(cl->nodes[i].url);
    }
    free(cl->nodes);
    free(cl->app_name);
    pthread_mutex_destroy(&cl->lock);
    pthread_cond_destroy(&cl->topo_cond);
    pthread_cond_destroy(&cl->probe_cond);
    pthread_cond_destroy(&cl->idle_cond);
    free(cl);
}

static void stop_probers(noodle_cluster *cl) {
    pthread_mutex_lock(&cl->lock);
    cl->stopping = true;
    noodle_clock_cond_broadcast(cl->clock, &cl->probe_cond);
    noodle_clock_cond_broadcast(cl->clock, &cl->topo_cond);
    pthread_mutex_unlock(&cl->lock);
    for (size_t i = 0; i < cl->n; i++)
        if (cl->nodes[i].thread_started) noodle_clock_thread_join(cl->clock, cl->nodes[i].thread);
}

/* The endpoints: explicit, or split from config->url (PostgreSQL), or the
 * url itself. */
static int endpoints_of(const noodle_cluster_options *o, const noodle_backend_ops *ops,
                        char ***list, size_t *n, noodle_error *err) {
    if (o->endpoints != NULL) {
        if (o->nendpoints == 0)
            return NOODLE_ERR(err, NOODLE_E_CLUSTER_INVALID_ARGUMENT, "an empty endpoint list");
        *list = calloc(o->nendpoints, sizeof **list);
        if (*list == NULL) goto oom;
        for (size_t i = 0; i < o->nendpoints; i++) {
            if (o->endpoints[i] == NULL) {
                noodle_cluster_free_endpoints(*list, i);
                return NOODLE_ERR(err, NOODLE_E_CLUSTER_INVALID_ARGUMENT, "endpoint %zu is NULL",
                                  i);
            }
            if (((*list)[i] = strdup(o->endpoints[i])) == NULL) {
                noodle_cluster_free_endpoints(*list, i);
                goto oom;
            }
        }
        *n = o->nendpoints;
        return 0;
    }
    const char *url = o->config->url != NULL ? o->config->url : "";
    if (strcmp(ops->name, "postgres") == 0) return noodle__pg_split_hosts(url, list, n, err);
    *list = calloc(1, sizeof **list);
    if (*list == NULL || ((*list)[0] = strdup(url)) == NULL) {
        free(*list);
        goto oom;
    }
    *n = 1;
    return 0;
oom:
    return NOODLE_ERR(err, NOODLE_E_CLUSTER_NO_MEMORY, "out of memory listing the endpoints");
}

static void read_settings(noodle_cluster *cl, const noodle_cluster_options *o) {
    const noodle_config *cfg = o->config;
    cl->probe_interval = pick_ms(o->probe_interval_ms, cfg->probe_interval_ms);
    cl->fast_probe_interval = pick_ms(o->fast_probe_interval_ms, 50);
    if (cl->fast_probe_interval > cl->probe_interval) cl->fast_probe_interval = cl->probe_interval;
    cl->probe_timeout = pick_ms(o->probe_timeout_ms, cfg->probe_timeout_ms);
    cl->threshold = o->breaker_threshold > 0 ? o->breaker_threshold : cfg->breaker_threshold;
    cl->backoff_base = pick_ms(o->breaker_backoff_ms, cfg->breaker_backoff_ms);
    cl->backoff_max = pick_ms(o->breaker_backoff_max_ms, cfg->breaker_backoff_max_ms);
    if (cl->backoff_max < cl->backoff_base) cl->backoff_max = cl->backoff_base;
    cl->slow_start = o->slow_start_ms < 0 ? 0 : pick_ms(o->slow_start_ms, cfg->slow_start_ms);
    cl->retry_reads = o->retry_reads || cfg->retry_reads != 0;
    cl->acquire_timeout = ms_to_ns(cfg->timeout_ms);
    cl->connect_timeout = ms_to_ns(cfg->connect_timeout_ms);
    cl->pool_max = cfg->max_connections;
    cl->pool_min_idle = cfg->min_idle;
    cl->rng = o->seed ? o->seed : (uint64_t)noodle_clock_now(cl->clock) | 1;
}

static int open_pools(noodle_cluster *cl, const noodle_cluster_options *o, noodle_error *err) {
    noodle_config cfg = *o->config; /* the pools borrow it during open only */
    for (size_t i = 0; i < cl->n; i++) {
        node *nd = &cl->nodes[i];
        cfg.url = nd->url;
        noodle_pool_options po = NOODLE_POOL_OPTIONS_INIT;
        po.config = &cfg;
        po.backend = cl->ops;
        po.clock = cl->clock;
        po.application_name = cl->app_name;
        po.seed = o->seed ? o->seed + i : 0;
        po.connect_gate = connect_gate;
        po.connect_done = connect_done;
        po.connect_hook_arg = nd;
        int rc = noodle_pool_open(&po, &nd->pool, err);
        if (rc != 0) return rc;
    }
    return 0;
}

static int start_probers(noodle_cluster *cl, noodle_error *err) {
    for (size_t i = 0; i < cl->n; i++) {
        node *nd = &cl->nodes[i];
        int rc = NOODLE_FAIL_AT(CLUSTER_THREAD_START);
        if (rc != 0)
            return NOODLE_ERR(err, rc, "could not start a prober: fail point %s fired",
                              noodle__fail_point_info(NOODLE__FP_CLUSTER_THREAD_START)->name);
        rc = noodle_clock_thread_start(cl->clock, &nd->thread, prober_main, nd);
        if (rc != 0)
            return NOODLE_ERR(err, NOODLE_E_CLUSTER_THREAD_START, "could not start a prober: %s",
                              strerror(rc));
        nd->thread_started = true;
    }
    return 0;
}

static int wait_for_primary(noodle_cluster *cl, noodle_error *err) {
    int64_t deadline = noodle_deadline_after(cl->clock, cl->connect_timeout);
    int rc = 0;
    pthread_mutex_lock(&cl->lock);
    while (cl->primary < 0 && rc != ETIMEDOUT)
        rc = noodle_clock_cond_wait_until(cl->clock, &cl->topo_cond, &cl->lock, deadline);
    if (cl->primary < 0)
        rc = no_node_error(cl, NOODLE_ROUTE_PRIMARY, cl->connect_timeout / 1000000, err);
    else
        rc = 0;
    pthread_mutex_unlock(&cl->lock);
    return rc;
}

int noodle_cluster_open(const noodle_cluster_options *o, noodle_cluster **out, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    if (out == NULL)
        return NOODLE_ERR(err, NOODLE_E_CLUSTER_INVALID_ARGUMENT, "open needs somewhere to put it");
    *out = NULL;
    if (o == NULL || o->struct_size < sizeof *o || o->config == NULL)
        return NOODLE_ERR(err, NOODLE_E_CLUSTER_INVALID_ARGUMENT,
                          "cluster options need struct_size = sizeof(noodle_cluster_options) and "
                          "a configuration");
    const noodle_backend_ops *ops = o->backend;
    if (ops == NULL) {
        int rc = noodle_backend_find(o->config->backend, &ops, err);
        if (rc != 0) return rc;
    }
    char **urls = NULL;
    size_t n = 0;
    int rc = endpoints_of(o, ops, &urls, &n, err);
    if (rc != 0) return rc;

    noodle_cluster *cl = calloc(1, sizeof *cl);
    if (cl == NULL || (cl->nodes = calloc(n, sizeof *cl->nodes)) == NULL ||
        (o->application_name != NULL && (cl->app_name = strdup(o->application_name)) == NULL)) {
        if (cl != NULL) free(cl->nodes);
        free(cl);
        noodle_cluster_free_endpoints(urls, n);
        return NOODLE_ERR(err, NOODLE_E_CLUSTER_NO_MEMORY, "out of memory creating a cluster");
    }
    cl->clock = o->clock ? o->clock : noodle_clock_real();
    cl->ops = ops;
    cl->n = n;
    cl->primary = cl->last_primary = -1;
    cl->generation = 1;
    pthread_mutex_init(&cl->lock, NULL);
    noodle_cond_init(&cl->topo_cond);
    noodle_cond_init(&cl->probe_cond);
    noodle_cond_init(&cl->idle_cond);
    read_settings(cl, o);
    for (size_t i = 0; i < n; i++) {
        node *nd = &cl->nodes[i];
        nd->cl = cl;
        nd->index = (int)i;
        nd->url = urls[i];
        noodle_mask_secrets(nd->url, nd->endpoint, sizeof nd->endpoint);
        nd->applied_max = cl->pool_max;
        nd->applied_min = cl->pool_min_idle;
    }
    free(urls); /* the strings now belong to the nodes */

    rc = open_pools(cl, o, err);
    if (rc == 0) rc = start_probers(cl, err);
    if (rc == 0 && o->wait_for_primary) rc = wait_for_primary(cl, err);
    if (rc != 0) {
        stop_probers(cl);
        free_cluster(cl);
        return rc;
    }
    *out = cl;
    return 0;
}

void noodle_cluster_close(noodle_cluster *cl) {
    if (cl == NULL) return;
    stop_probers(cl);
    /* the last event, after the probers (no other event can follow), so
     * that observers stop reading the cluster before it is freed */
    noodle_cluster_event ev = {.type = NOODLE_CLUSTER_EV_CLOSING,
                               .time = noodle_clock_now(cl->clock),
                               .node = -1,
                               .generation = cl->generation};
    int n = atomic_load_explicit(&cl->nobservers, memory_order_acquire);
    for (int i = 0; i < n; i++) cl->observers[i].fn(&ev, cl->observers[i].arg);
    free_cluster(cl);
}

int noodle_cluster_observe(noodle_cluster *cl, noodle_cluster_observer fn, void *arg,
                           noodle_error *err) {
    if (cl == NULL || fn == NULL)
        return NOODLE_ERR(err, NOODLE_E_CLUSTER_INVALID_ARGUMENT,
                          "observe needs a cluster and a function");
    pthread_mutex_lock(&cl->lock);
    int n = atomic_load(&cl->nobservers);
    if (n == MAX_OBSERVERS) {
        pthread_mutex_unlock(&cl->lock);
        return NOODLE_ERR(err, NOODLE_E_CLUSTER_INVALID_ARGUMENT, "at most %d observers",
                          MAX_OBSERVERS);
    }
    cl->observers[n] = (observer){fn, arg};
    atomic_store_explicit(&cl->nobservers, n + 1, memory_order_release);
    pthread_mutex_unlock(&cl->lock);
    return 0;
}

/* ---- state --------------------------------------------------------------------------------------- */

void noodle_cluster_get_metrics(noodle_cluster *cl, noodle_cluster_metrics *m) {
    memset(m, 0, sizeof *m);
    if (cl == NULL) {
        m->primary = -1;
        return;
    }
    pthread_mutex_lock(&cl->lock);
    m->nodes = cl->n;
    m->primary = cl->primary;
    m->generation = cl->generation;
    m->failovers = cl->failovers;
    m->last_failover_at = cl->last_failover_at;
    m->demotions = cl->demotions;
    pthread_mutex_unlock(&cl->lock);
    m->probes = atomic_load(&cl->probes);
    m->probe_failures = atomic_load(&cl->probe_failures);
    m->reads_retried = atomic_load(&cl->reads_retried);
}

int noodle_cluster_node(noodle_cluster *cl, size_t i, noodle_cluster_node_info *out,
                        noodle_error *err) {
    if (cl == NULL || out == NULL || i >= cl->n)
        return NOODLE_ERR(err, NOODLE_E_CLUSTER_INVALID_ARGUMENT, "no node %zu (the cluster has %zu)",
                          i, cl != NULL ? cl->n : 0);
    memset(out, 0, sizeof *out);
    node *nd = &cl->nodes[i];
    pthread_mutex_lock(&cl->lock);
    noodle__strlcpy(out->endpoint, nd->endpoint, sizeof out->endpoint);
    out->role = nd->role;
    out->up = nd->up;
    out->fenced = nd->fenced;
    out->breaker = nd->breaker;
    out->consecutive_failures = nd->failures;
    out->last_probe_at = nd->last_probe_at;
    pthread_mutex_unlock(&cl->lock);
    noodle_pool_get_metrics(nd->pool, &out->pool);
    return 0;
}

const noodle_clock *noodle_cluster_clock(const noodle_cluster *cl) { return cl->clock; }
int64_t noodle_cluster_acquire_timeout(const noodle_cluster *cl) { return cl->acquire_timeout; }

void noodle_cluster_probe_now(noodle_cluster *cl) {
    if (cl == NULL) return;
    pthread_mutex_lock(&cl->lock);
    for (size_t i = 0; i < cl->n; i++) cl->nodes[i].probe_requested = true;
    cl->fast_until = noodle_clock_now(cl->clock) + 10 * cl->probe_interval;
    noodle_clock_cond_broadcast(cl->clock, &cl->probe_cond);
    pthread_mutex_unlock(&cl->lock);
}
