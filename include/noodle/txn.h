/* The transaction manager (STD-TXN).
 *
 * A transaction is a caller-owned struct (usually on the stack), begun on a
 * connection; nested levels are savepoints, to any depth. Written once
 * against the backend interface: isolation levels are mapped by each backend
 * (SQLite: deferred / immediate / exclusive transactions and
 * read_uncommitted; PostgreSQL: BEGIN ISOLATION LEVEL ...), and a level a
 * backend cannot give is refused with NOODLE_E_QUERY_ISOLATION_UNSUPPORTED,
 * never weakened.
 *
 *     noodle_txn t, inner;
 *     if (noodle_txn_begin(conn, NOODLE_ISOLATION_SERIALIZABLE, &t, &err) != 0) ...
 *     noodle_txn_begin_nested(&t, &inner, &err);   // SAVEPOINT
 *     ...                                           // statements on conn
 *     noodle_txn_rollback(&inner, &err);            // back to the savepoint; t intact
 *     noodle_txn_commit(&t, &err);
 *     noodle_txn_end(&t);                           // always: rolls back what is still open
 *
 * Rules (each broken rule returns a 603x code and changes nothing):
 *   - a level is used only from the thread that began the outermost level;
 *   - a level that ended (committed or rolled back) cannot be used again;
 *   - a level cannot commit while a level nested in it is open;
 *   - rolling back a level also ends every level nested in it.
 * Automatic rollback, so that no partial work of a level is ever committed:
 *   - a statement run with noodle_txn_execute that fails rolls back the
 *     innermost open level at once (a nested level back to its savepoint:
 *     the parent continues as it was when that level began; the outermost
 *     level: ROLLBACK), and the level is then ended;
 *   - noodle_txn_end rolls back whatever is still open (end of scope);
 *   - a connection released to its pool inside a transaction is rolled back
 *     by the pool.
 * The same semantics on every backend: a failed statement never leaves the
 * level half-done, on SQLite (which would go on) as on PostgreSQL (which
 * aborts the transaction).
 *
 * noodle_txn_run() does the whole cycle on a pool or a cluster, retrying
 * conflicts (serialization failure, deadlock, busy / locked) with jittered
 * backoff, and never retrying a COMMIT whose outcome is unknown (4015).
 */
#ifndef NOODLE_TXN_H
#define NOODLE_TXN_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "noodle/backend.h"
#include "noodle/cluster.h"
#include "noodle/error.h"
#include "noodle/export.h"
#include "noodle/pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum noodle_txn_state {
    NOODLE_TXN_IDLE = 0,     /* never begun (zeroed struct) */
    NOODLE_TXN_ACTIVE,
    NOODLE_TXN_COMMITTED,
    NOODLE_TXN_ROLLED_BACK,
    NOODLE_TXN_OUTCOME_UNKNOWN, /* COMMIT lost its connection (4015) */
} noodle_txn_state;

/* One level. Treat the fields as private; they are public only so that a
 * level can live on the caller's stack. */
typedef struct noodle_txn {
    noodle_conn *conn;
    struct noodle_txn *parent; /* NULL for the outermost level */
    struct noodle_txn *root;   /* the outermost level (itself for the root) */
    int depth;                 /* 0 outermost, 1 first savepoint, ... */
    noodle_txn_state state;
    /* root only: */
    struct noodle_txn *innermost; /* the innermost open level (NULL once ended) */
    pthread_t owner;           /* the thread that began it */
    int64_t deadline;          /* of every statement (NOODLE_NO_DEADLINE: none) */
    /* nested only: */
    char savepoint[24];        /* "noodle_sp_<depth>" */
} noodle_txn;

/* Begin the outermost level on conn (BEGIN with isolation). *txn is
 * overwritten. Every level's struct must stay alive until the level ends:
 * end each level you begin (noodle_txn_end is always safe). */
NOODLE_API NOODLE_MUSTCHECK int noodle_txn_begin(noodle_conn *conn, noodle_isolation isolation,
                                                 noodle_txn *txn, noodle_error *err);
/* Begin a level nested in parent, which must be the innermost open level
 * (SAVEPOINT). */
NOODLE_API NOODLE_MUSTCHECK int noodle_txn_begin_nested(noodle_txn *parent, noodle_txn *txn,
                                                        noodle_error *err);
/* Outermost: COMMIT (4015 when the connection failed after it was sent).
 * Nested: RELEASE SAVEPOINT (its work becomes part of the parent's). */
NOODLE_API NOODLE_MUSTCHECK int noodle_txn_commit(noodle_txn *txn, noodle_error *err);
/* Outermost: ROLLBACK. Nested: ROLLBACK TO SAVEPOINT, then RELEASE it; the
 * parent continues as it was when this level began. Ends every level
 * nested in txn. */
NOODLE_API NOODLE_MUSTCHECK int noodle_txn_rollback(noodle_txn *txn, noodle_error *err);
/* End of scope: roll back txn if it is still open (errors are dropped: a
 * connection whose rollback failed is broken, and its pool closes it).
 * Safe on a zeroed, committed or rolled back level. */
NOODLE_API void noodle_txn_end(noodle_txn *txn);

/* Run one statement in txn, which must be the innermost open level. On
 * failure the level is rolled back (see above) and the statement's code is
 * returned; the message says what was rolled back. */
NOODLE_API NOODLE_MUSTCHECK int noodle_txn_execute(noodle_txn *txn, const char *sql,
                                                   const noodle_value *params, size_t nparams,
                                                   noodle_rows **out, noodle_error *err);

/* noodle_txn_begin with a deadline (absolute, on the connection's clock)
 * for every backend call of the transaction, BEGIN included, at every
 * level. noodle_txn_begin has none (NOODLE_NO_DEADLINE). */
NOODLE_API NOODLE_MUSTCHECK int noodle_txn_begin_until(noodle_conn *conn,
                                                       noodle_isolation isolation,
                                                       int64_t deadline, noodle_txn *txn,
                                                       noodle_error *err);

NOODLE_API noodle_conn *noodle_txn_conn(const noodle_txn *txn);
NOODLE_API bool noodle_txn_is_active(const noodle_txn *txn);

/* True for the codes a retry of the whole transaction may cure. */
NOODLE_API bool noodle_code_is_retryable(int code);

/* ---- the whole cycle ----------------------------------------------------------------------- */

/* The work of one attempt. Return 0 to commit, or a code to roll back (a
 * retryable code is retried). */
typedef int (*noodle_txn_fn)(noodle_txn *txn, void *arg, noodle_error *err);

/* The end of one noodle_txn_run / _run_cluster. */
typedef struct noodle_txn_event {
    int code;            /* 0 committed, else the run's code (4015: outcome unknown) */
    int attempts;        /* attempts made; attempts - 1 were retried conflicts */
    int64_t duration_ns; /* the whole run, backoff included */
} noodle_txn_event;

typedef struct noodle_txn_options {
    size_t struct_size;           /* sizeof(noodle_txn_options) */
    noodle_isolation isolation;
    int max_attempts;             /* 0: 5 */
    int64_t backoff_base_ms;      /* 0: 5 ms, doubling, jittered down by up to 50 % */
    int64_t backoff_max_ms;       /* 0: 500 ms */
    int64_t deadline;             /* of the whole run: acquires, statements, backoff; 0: now + the pool / cluster acquire timeout */
    uint64_t seed;                /* jitter; 0: from the clock */
    noodle_route route;           /* noodle_txn_run_cluster only; default: the primary */
    /* out: attempts made (>= 1 once the first acquire succeeded) */
    int attempts;
    /* Told once when the run ends (the performance monitor's feed); may be
     * NULL. Called on the caller's thread; must be quick. */
    void (*observer)(const noodle_txn_event *ev, void *arg);
    void *observer_arg;
} noodle_txn_options;


#define NOODLE_TXN_OPTIONS_INIT {.struct_size = sizeof(noodle_txn_options)}

/* Acquire, begin, fn, commit, release; retry retryable failures of fn or
 * COMMIT up to max_attempts (then NOODLE_E_TXN_RETRIES_EXHAUSTED with the
 * last conflict in the message). COMMIT whose outcome is unknown returns
 * NOODLE_E_OUTCOME_UNKNOWN at once, never retried. opts may be NULL. */
NOODLE_API NOODLE_MUSTCHECK int noodle_txn_run(noodle_pool *pool, noodle_txn_options *opts,
                                               noodle_txn_fn fn, void *arg, noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_txn_run_cluster(noodle_cluster *cluster,
                                                       noodle_txn_options *opts,
                                                       noodle_txn_fn fn, void *arg,
                                                       noodle_error *err);

#ifdef __cplusplus
}
#endif
#endif
