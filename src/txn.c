/* The transaction manager: levels, savepoints, automatic rollback, retries.
 *
 * Written once against the connection layer (backend.h): BEGIN with an
 * isolation level, COMMIT, ROLLBACK and the savepoint operations are the
 * backend's; no SQL is built here.
 *
 * Invariants
 *  1. The open levels form one chain: root->innermost, then parent by
 *     parent, up to the root. A level is open exactly when it is on that
 *     chain; a level ended (by its own commit / rollback, or because an
 *     enclosing level rolled back) is off it, whatever its own state field
 *     says -- so a stale nested handle is recognised without the manager
 *     ever writing to a struct that may have gone out of scope.
 *  2. Only the innermost open level runs statements, begins a nested level
 *     or commits; any open level may roll back (ending those inside it).
 *  3. A failure of a step rolls back the innermost level (a nested level
 *     to its savepoint, the root with ROLLBACK): no partial work of a level
 *     survives a failed step. When a nested level cannot be rolled back to
 *     its savepoint, the whole transaction is rolled back instead.
 *  4. The connection's own transaction flag is the truth about the server:
 *     when it says the transaction is gone while the root is open, the
 *     server (or a statement sent as SQL) ended it, and every level is
 *     ended (6037).
 */
#include "noodle/txn.h"

#include <stdio.h>
#include <string.h>

#include "internal.h"

/* ---- checks ---------------------------------------------------------------------------------- */

static bool on_chain(const noodle_txn *t) {
    const noodle_txn *root = t->root;
    for (const noodle_txn *l = root->innermost; l != NULL; l = l->parent)
        if (l == t) return true;
    return false;
}

/* The rules every operation on an existing level checks first. */
static int check_level(const noodle_txn *t, const char *what, noodle_error *err) {
    if (t == NULL || t->root == NULL || t->conn == NULL)
        return NOODLE_ERR(err, NOODLE_E_TXN_INVALID_ARGUMENT,
                          "%s: not a transaction (never begun, or NULL)", what);
    if (!pthread_equal(t->root->owner, pthread_self()))
        return NOODLE_ERR(err, NOODLE_E_TXN_WRONG_THREAD,
                          "%s: the transaction belongs to the thread that began it", what);
    if (t->root->state != NOODLE_TXN_ACTIVE || !on_chain(t))
        return NOODLE_ERR(err, NOODLE_E_TXN_ENDED,
                          "%s: the transaction level (depth %d) has already ended", what,
                          t->depth);
    return 0;
}

/* Invariant 4: the server still has the transaction. */
static int check_server(noodle_txn *t, const char *what, noodle_error *err) {
    if (noodle_conn_in_transaction(t->conn)) return 0;
    noodle_txn *root = t->root;
    root->state = NOODLE_TXN_ROLLED_BACK;
    root->innermost = NULL;
    return NOODLE_ERR(err, NOODLE_E_TXN_ENDED_BY_SERVER,
                      "%s: the connection is no longer inside the transaction (the database "
                      "rolled it back, the connection broke, or COMMIT / ROLLBACK was sent as "
                      "SQL); every level has ended",
                      what);
}

/* ---- begin ------------------------------------------------------------------------------------ */

static int begin_root(noodle_conn *conn, noodle_isolation iso, int64_t deadline, noodle_txn *t,
                      noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    if (t == NULL || conn == NULL)
        return NOODLE_ERR(err, NOODLE_E_TXN_INVALID_ARGUMENT,
                          "begin needs a connection and a transaction struct");
    memset(t, 0, sizeof *t);
    if (noodle_conn_in_transaction(conn))
        return NOODLE_ERR(err, NOODLE_E_TXN_INVALID_ARGUMENT,
                          "begin: the connection is already inside a transaction (nest with "
                          "noodle_txn_begin_nested)");
    int rc = noodle_conn_begin(conn, iso, deadline, err);
    if (rc != 0) return rc;
    t->conn = conn;
    t->root = t;
    t->owner = pthread_self();
    t->deadline = deadline;
    t->state = NOODLE_TXN_ACTIVE;
    t->innermost = t;
    return 0;
}

int noodle_txn_begin(noodle_conn *conn, noodle_isolation iso, noodle_txn *t, noodle_error *err) {
    return begin_root(conn, iso, NOODLE_NO_DEADLINE, t, err);
}

int noodle_txn_begin_until(noodle_conn *conn, noodle_isolation iso, int64_t deadline,
                           noodle_txn *t, noodle_error *err) {
    return begin_root(conn, iso, deadline, t, err);
}

static int rollback_level(noodle_txn *t, noodle_error *err);

/* Roll back the innermost level after its step failed (invariant 3); the
 * step's error stays in err, with what was rolled back appended. */
static int fail_step(noodle_txn *t, int rc, noodle_error *err) {
    noodle_error rb;
    noodle_error_clear(&rb);
    int rrc = rollback_level(t, &rb);
    if (err != NULL) {
        size_t used = strlen(err->message);
        const char *tail = rrc == 0 ? (t->depth == 0 ? "; the transaction was rolled back"
                                                     : "; its level was rolled back to the "
                                                       "savepoint")
                                    : "; rolling back its level failed, so the whole "
                                      "transaction was rolled back";
        noodle__strlcpy(err->message + used, tail, sizeof err->message - used);
    }
    return rc;
}

int noodle_txn_begin_nested(noodle_txn *parent, noodle_txn *t, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    if (t == NULL)
        return NOODLE_ERR(err, NOODLE_E_TXN_INVALID_ARGUMENT, "begin_nested: no struct for the level");
    int rc = check_level(parent, "begin_nested", err);
    if (rc != 0) return rc;
    if (parent->root->innermost != parent)
        return NOODLE_ERR(err, NOODLE_E_TXN_NOT_INNERMOST,
                          "begin_nested: a level is already open inside depth %d", parent->depth);
    if ((rc = check_server(parent, "begin_nested", err)) != 0) return rc;
    memset(t, 0, sizeof *t);
    t->conn = parent->conn;
    t->parent = parent;
    t->root = parent->root;
    t->depth = parent->depth + 1;
    snprintf(t->savepoint, sizeof t->savepoint, "noodle_sp_%d", t->depth);
    rc = noodle_conn_savepoint(t->conn, t->savepoint, t->root->deadline, err);
    if (rc != 0) {
        memset(t, 0, sizeof *t);
        return fail_step(parent, rc, err); /* a failed SAVEPOINT is a failed step of the parent */
    }
    t->state = NOODLE_TXN_ACTIVE;
    t->root->innermost = t;
    return 0;
}

/* ---- commit and rollback ------------------------------------------------------------------ */

/* Roll back t (open, checked) and end every level inside it. */
static int rollback_level(noodle_txn *t, noodle_error *err) {
    noodle_txn *root = t->root;
    int rc;
    if (t == root) {
        root->innermost = NULL;
        root->state = NOODLE_TXN_ROLLED_BACK;
        /* a transaction the server already ended needs no ROLLBACK */
        if (!noodle_conn_in_transaction(t->conn)) return 0;
        return noodle_conn_rollback(t->conn, root->deadline, err);
    }
    root->innermost = t->parent;
    t->state = NOODLE_TXN_ROLLED_BACK;
    rc = noodle_conn_rollback_to(t->conn, t->savepoint, root->deadline, err);
    if (rc == 0) rc = noodle_conn_release(t->conn, t->savepoint, root->deadline, err);
    if (rc != 0) {
        /* the level's work may still be in the transaction: nothing of it
         * may ever be committed, so the whole transaction goes */
        root->innermost = NULL;
        root->state = NOODLE_TXN_ROLLED_BACK;
        if (noodle_conn_in_transaction(t->conn)) {
            noodle_error ignored;
            (void)!noodle_conn_rollback(t->conn, root->deadline, &ignored);
        }
    }
    return rc;
}

int noodle_txn_rollback(noodle_txn *t, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    int rc = check_level(t, "rollback", err);
    if (rc != 0) return rc;
    return rollback_level(t, err);
}

int noodle_txn_commit(noodle_txn *t, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    int rc = check_level(t, "commit", err);
    if (rc != 0) return rc;
    noodle_txn *root = t->root;
    if (root->innermost != t)
        return NOODLE_ERR(err, NOODLE_E_TXN_INNER_OPEN,
                          "commit: a level nested in depth %d is still open; commit or roll it "
                          "back first",
                          t->depth);
    if ((rc = check_server(t, "commit", err)) != 0) return rc;
    if (t != root) {
        rc = noodle_conn_release(t->conn, t->savepoint, root->deadline, err);
        if (rc != 0) return fail_step(t, rc, err);
        t->state = NOODLE_TXN_COMMITTED;
        root->innermost = t->parent;
        return 0;
    }
    rc = noodle_conn_commit(t->conn, root->deadline, err);
    root->innermost = NULL;
    root->state = rc == 0                           ? NOODLE_TXN_COMMITTED
                  : rc == NOODLE_E_OUTCOME_UNKNOWN ? NOODLE_TXN_OUTCOME_UNKNOWN
                                                    : NOODLE_TXN_ROLLED_BACK;
    /* a COMMIT the server refused (e.g. a serialization failure) rolled
     * the transaction back; make sure nothing is left open on the session */
    if (rc != 0 && rc != NOODLE_E_OUTCOME_UNKNOWN && noodle_conn_in_transaction(t->conn)) {
        noodle_error ignored;
        (void)!noodle_conn_rollback(t->conn, root->deadline, &ignored);
    }
    return rc;
}

void noodle_txn_end(noodle_txn *t) {
    if (t == NULL || t->root == NULL || t->conn == NULL) return;
    noodle_error ignored;
    if (check_level(t, "end", &ignored) == 0) (void)!rollback_level(t, &ignored);
}

/* ---- statements --------------------------------------------------------------------------- */

int noodle_txn_execute(noodle_txn *t, const char *sql, const noodle_value *params, size_t nparams,
                       noodle_rows **out, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    if (out == NULL)
        return NOODLE_ERR(err, NOODLE_E_TXN_INVALID_ARGUMENT, "execute: nowhere to put the result");
    *out = NULL;
    int rc = check_level(t, "execute", err);
    if (rc != 0) return rc;
    if (t->root->innermost != t)
        return NOODLE_ERR(err, NOODLE_E_TXN_NOT_INNERMOST,
                          "execute: a level nested in depth %d is open; run statements there",
                          t->depth);
    if ((rc = check_server(t, "execute", err)) != 0) return rc;
    rc = noodle_conn_execute(t->conn, sql, params, nparams, t->root->deadline, out, err);
    if (rc != 0) return fail_step(t, rc, err);
    if (!noodle_conn_in_transaction(t->conn)) { /* the statement ended the transaction */
        noodle_rows_free(*out);
        *out = NULL;
        return check_server(t, "execute", err);
    }
    return 0;
}

noodle_conn *noodle_txn_conn(const noodle_txn *t) { return t != NULL ? t->conn : NULL; }

bool noodle_txn_is_active(const noodle_txn *t) {
    return t != NULL && t->root != NULL && t->root->state == NOODLE_TXN_ACTIVE && on_chain(t);
}

bool noodle_code_is_retryable(int code) {
    return code == NOODLE_E_QUERY_SERIALIZATION || code == NOODLE_E_QUERY_DEADLOCK ||
           code == NOODLE_E_QUERY_BUSY;
}

/* ---- the whole cycle ------------------------------------------------------------------------- */

/* Where connections come from: a pool or a cluster. */
typedef struct source {
    noodle_pool *pool;
    noodle_cluster *cluster;
    noodle_route route;
} source;

static int source_acquire(const source *src, int64_t deadline, noodle_conn **c, noodle_error *err) {
    if (src->pool != NULL)
        return noodle_pool_acquire_at(src->pool, deadline, c, err, __FILE__, __LINE__);
    return noodle_cluster_acquire_at(src->cluster, src->route, deadline, c, err, __FILE__,
                                     __LINE__);
}

static void source_release(const source *src, noodle_conn **c) {
    if (src->pool != NULL)
        noodle_pool_release(src->pool, c);
    else
        noodle_cluster_release(src->cluster, c);
}

/* One attempt: acquire, begin, fn, commit, release. */
static int attempt_once(const source *src, const noodle_txn_options *o, noodle_txn_fn fn,
                        void *arg, noodle_error *err) {
    noodle_conn *c = NULL;
    int rc = source_acquire(src, o->deadline, &c, err);
    if (rc != 0) return rc;
    noodle_txn t;
    rc = noodle_txn_begin_until(c, o->isolation, o->deadline ? o->deadline : NOODLE_NO_DEADLINE,
                                &t, err);
    if (rc == 0) {
        rc = fn(&t, arg, err);
        if (rc != 0 && err != NULL && err->code == 0)
            NOODLE_ERR(err, rc, "the transaction's function returned %d", rc);
        if (rc == 0) rc = noodle_txn_commit(&t, err);
        noodle_txn_end(&t); /* rolls back whatever fn or a failed commit left open */
    }
    source_release(src, &c);
    return rc;
}

/* The attempts of one run, retrying conflicts; opts->attempts counts them. */
static int run_attempts(const source *src, const noodle_clock *clock, noodle_txn_options o,
                        noodle_txn_options *opts, noodle_txn_fn fn, void *arg,
                        noodle_error *err) {
    /* one deadline for the whole run: the pool's (cluster's) acquire
     * timeout on its clock unless the caller gave one */
    if (o.deadline == 0)
        o.deadline = noodle_deadline_after(clock, src->pool != NULL
                                                      ? noodle_pool_acquire_timeout(src->pool)
                                                      : noodle_cluster_acquire_timeout(src->cluster));
    int max = o.max_attempts > 0 ? o.max_attempts : 5;
    int64_t base = NOODLE_MS(o.backoff_base_ms > 0 ? o.backoff_base_ms : 5);
    int64_t cap = NOODLE_MS(o.backoff_max_ms > 0 ? o.backoff_max_ms : 500);
    if (cap < base) cap = base;
    uint64_t rng = o.seed ? o.seed : (uint64_t)noodle_clock_now(clock) | 1;
    for (int attempt = 1;; attempt++) {
        opts->attempts = attempt;
        int rc = attempt_once(src, &o, fn, arg, err);
        if (rc == 0 || !noodle_code_is_retryable(rc)) return rc; /* 4015 included: never retried */
        int64_t wake = noodle_clock_now(clock) + noodle__backoff_delay(&rng, base, cap, attempt);
        if (attempt == max || (o.deadline != 0 && wake >= o.deadline)) {
            char last[sizeof err->message];
            noodle_error_format(err, last, sizeof last);
            return NOODLE_ERR(err, NOODLE_E_TXN_RETRIES_EXHAUSTED,
                              "the transaction conflicted on each of its %d attempts%s; the last: "
                              "%s",
                              attempt, attempt < max ? " before its deadline" : "", last);
        }
        noodle_clock_sleep_until(clock, wake);
    }
}

static int run(const source *src, noodle_txn_options *opts, noodle_txn_fn fn, void *arg,
               noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    noodle_txn_options o = NOODLE_TXN_OPTIONS_INIT;
    if (opts != NULL) {
        if (opts->struct_size < sizeof *opts)
            return NOODLE_ERR(err, NOODLE_E_TXN_INVALID_ARGUMENT,
                              "transaction options need struct_size = sizeof(noodle_txn_options)");
        o = *opts;
    }
    if (fn == NULL)
        return NOODLE_ERR(err, NOODLE_E_TXN_INVALID_ARGUMENT, "run needs a function");
    const noodle_clock *clock =
        src->pool != NULL ? noodle_pool_clock(src->pool) : noodle_cluster_clock(src->cluster);
    noodle_txn_options *out = opts != NULL ? opts : &o;
    out->attempts = 0;
    if (o.observer == NULL) return run_attempts(src, clock, o, out, fn, arg, err);
    noodle__ticks_init();
    int64_t start = noodle__duration_start(clock);
    int rc = run_attempts(src, clock, o, out, fn, arg, err);
    noodle_txn_event ev = {.code = rc,
                           .attempts = out->attempts,
                           .duration_ns = noodle__duration_ns(clock, start)};
    o.observer(&ev, o.observer_arg);
    return rc;
}

int noodle_txn_run(noodle_pool *pool, noodle_txn_options *opts, noodle_txn_fn fn, void *arg,
                   noodle_error *err) {
    if (pool == NULL)
        return NOODLE_ERR(err, NOODLE_E_TXN_INVALID_ARGUMENT, "run needs a pool");
    source src = {.pool = pool};
    return run(&src, opts, fn, arg, err);
}

int noodle_txn_run_cluster(noodle_cluster *cluster, noodle_txn_options *opts, noodle_txn_fn fn,
                           void *arg, noodle_error *err) {
    if (cluster == NULL)
        return NOODLE_ERR(err, NOODLE_E_TXN_INVALID_ARGUMENT, "run needs a cluster");
    source src = {.cluster = cluster,
                  .route = opts != NULL && opts->struct_size >= sizeof *opts ? opts->route
                                                                              : NOODLE_ROUTE_PRIMARY};
    return run(&src, opts, fn, arg, err);
}
