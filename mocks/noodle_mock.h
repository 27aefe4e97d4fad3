/* The mock backend: simulated database nodes for fault injection and speed.
 *
 * The mock implements the whole backend operations table (backend.h) over a
 * process-wide registry of simulated NODES, addressed by url "mock://<node>"
 * (node name [A-Za-z0-9_-]{1,63}; "mock://" alone or "" means the node
 * "default"). A node is created on first connect, or by any control call below
 * that names it, and keeps its committed data for the life of the process or
 * until noodle_mock_reset(). Each node has tables (a small SQL subset, see
 * docs/mock-backend.md), a role, counters, and programmable faults.
 *
 * Use it through the ordinary connection layer:
 *
 *     noodle_mock_register(&err);              // makes "mock" findable by name
 *     noodle_connect_params p = {.url = "mock://a", .deadline = NOODLE_NO_DEADLINE};
 *     noodle_conn_open(noodle_mock_backend(), &p, &conn, &err);
 *     noodle_mock_set_latency("a", NOODLE_MOCK_OP_EXECUTE, NOODLE_MS(5), &err);
 *
 * Every function here is thread-safe and may be called while other threads use
 * connections to the same node (that is what fault injection is for). Node
 * names are borrowed for the duration of the call only. Functions returning
 * int return 0 or a catalogue code, and fill err (which may be NULL) on
 * failure: NOODLE_E_BACKEND_INVALID_ARGUMENT (4011) for a malformed node name,
 * an unknown op or an out-of-range value, NOODLE_E_BACKEND_NO_MEMORY (4008).
 *
 * Faults are set per node and per operation kind. A setting for a concrete
 * operation takes precedence over the NOODLE_MOCK_OP_ANY setting; ANY applies
 * to every operation that has no setting of its own. Faults only affect calls
 * that start after they are set (except clearing a hang, which releases the
 * calls already blocked in it). Closing a connection is never faulted.
 */
#ifndef NOODLE_MOCK_H
#define NOODLE_MOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "noodle/backend.h"
#include "noodle/error.h"
#include "noodle/failpoint.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Operation kinds, in the order of NOODLE_BACKEND_OP_MAP (failpoint.h):
 * NOODLE_MOCK_OP_CONNECT, _VALIDATE, _EXECUTE, _BEGIN, _COMMIT, _ROLLBACK,
 * _SAVEPOINT, _RELEASE, _ROLLBACK_TO, _ROLE, _METRICS, _INTEGRITY; then NOODLE_MOCK_OP_ANY
 * (faults only: every operation without its own setting). */
typedef enum noodle_mock_op {
#define NOODLE_MOCK_X_OP(NAME, str, code) NOODLE_MOCK_OP_##NAME,
    NOODLE_BACKEND_OP_MAP(NOODLE_MOCK_X_OP)
#undef NOODLE_MOCK_X_OP
    NOODLE_MOCK_OP_ANY,
} noodle_mock_op;

/* Number of concrete operation kinds (the size of the per-op arrays below). */
#define NOODLE_MOCK_OP_COUNT ((int)NOODLE_MOCK_OP_ANY)

/* "connect", "execute", ..., "any"; NULL for a value out of range. Static. */
const char *noodle_mock_op_name(noodle_mock_op op);

/* The mock's operations table (static; never freed). Its name is "mock". */
const noodle_backend_ops *noodle_mock_backend(void);

/* Register the mock with noodle_backend_register so that
 * noodle_backend_find("mock") returns it. Idempotent. */
NOODLE_MUSTCHECK int noodle_mock_register(noodle_error *err);

/* ---- nodes ------------------------------------------------------------------ */

/* Drop every node: committed data, faults, counters. Connections still open
 * to a dropped node stay valid as handles, but every call on them fails with
 * NOODLE_E_CONNECTION_LOST (calls blocked in a hang are released with it);
 * close them as usual. A later connect to the same name creates a new, empty
 * node. Tests call this in their setup. */
void noodle_mock_reset(void);

/* Create the node if it does not exist yet (an existing node is left alone).
 * Every control call below that names a node also creates it, so that faults
 * and roles can be set before the first connect. */
NOODLE_MUSTCHECK int noodle_mock_node_create(const char *node, noodle_error *err);

/* True when a node of that name exists (no node is created). */
bool noodle_mock_node_exists(const char *node);

/* Crash the node: every open connection is dead at once (its next call fails
 * with NOODLE_E_CONNECTION_LOST, including calls blocked in a hang), new
 * connects fail with NOODLE_E_CONNECT_FAILED until noodle_mock_node_restart.
 * Committed data survives; uncommitted transactions are lost. */
NOODLE_MUSTCHECK int noodle_mock_node_crash(const char *node, noodle_error *err);
/* Accept connections again after a crash (no-op on a running node). */
NOODLE_MUSTCHECK int noodle_mock_node_restart(const char *node, noodle_error *err);

/* Terminate every open session server-side (like pg_terminate_backend on all
 * of them): their next call fails with NOODLE_E_CONNECTION_LOST; the node
 * keeps accepting new connections. */
NOODLE_MUSTCHECK int noodle_mock_node_kill_connections(const char *node, noodle_error *err);

/* Terminate one session. handle: the backend handle of a mock connection
 * (noodle_conn_handle() of a connection opened with noodle_mock_backend()),
 * borrowed for the call. */
void noodle_mock_conn_kill(void *handle);

/* Role reported by the role and metrics operations. On a node that is not
 * NOODLE_ROLE_PRIMARY, CREATE / DROP / INSERT (INSERT ... ON CONFLICT
 * included) / UPDATE / DELETE and the COMMIT of a transaction with pending
 * writes fail with NOODLE_E_QUERY_READ_ONLY (detail "SQLSTATE 25006"), even
 * when they would change no row. New nodes are primaries. NOODLE_ROLE_UNKNOWN
 * is refused (4011). */
NOODLE_MUSTCHECK int noodle_mock_node_set_role(const char *node, noodle_role role,
                                               noodle_error *err);

/* ---- simulated health state ------------------------------------------------------ */

/* What the health checks read from a node (noodle_conn_integrity,
 * noodle_conn_metrics). Kept by noodle_mock_clear_faults, like the role; a
 * node starts intact, with no standby and no archiver. */

/* Every integrity check of the node (QUICK and FULL) reports problems (>= 0;
 * 0: intact again) with first_problem (may be NULL) as the first one's text.
 * FULL adds what its own walk of the node's tables finds (normally nothing). */
NOODLE_MUSTCHECK int noodle_mock_set_corruption(const char *node, int64_t problems,
                                                const char *first_problem, noodle_error *err);

/* The checksum_failures integrity reports: >= 0, or -1 for "checksums off"
 * (the default). */
NOODLE_MUSTCHECK int noodle_mock_set_checksum_failures(const char *node, int64_t failures,
                                                       noodle_error *err);

/* The standbys metrics reports for the node: standby_count = count, the
 * first NOODLE_STANDBYS_REPORTED of them in standbys[] (copied), and
 * replication_lag_bytes the largest lag_bytes over all (-1 when none is
 * known). count 0 (the default) clears; at most NOODLE_MOCK_MAX_STANDBYS;
 * lags must be >= -1. Reported whatever the node's role. */
#define NOODLE_MOCK_MAX_STANDBYS 32
NOODLE_MUSTCHECK int noodle_mock_set_standbys(const char *node,
                                              const noodle_standby_status *standbys, size_t count,
                                              noodle_error *err);

/* The archive_* fields metrics reports, each >= 0 or -1 (unknown; all -1 by
 * default: no archiver). Ages are reported as given: they do not grow. */
NOODLE_MUSTCHECK int noodle_mock_set_archiver(const char *node, int64_t archived, int64_t failed,
                                              int64_t last_archived_age_ms,
                                              int64_t last_failed_age_ms, noodle_error *err);

/* ---- faults ------------------------------------------------------------------- */

/* Every call of op first waits latency_ns (on the connection's clock; 0
 * clears). A call whose latency would pass its deadline waits until the
 * deadline and fails with NOODLE_E_BACKEND_TIMEOUT (connect:
 * NOODLE_E_CONNECT_TIMEOUT); the connection is then dead. */
NOODLE_MUSTCHECK int noodle_mock_set_latency(const char *node, noodle_mock_op op,
                                             int64_t latency_ns, noodle_error *err);

/* Freeze (hang = true) or unfreeze op: calls block until their deadline and
 * then fail with NOODLE_E_BACKEND_TIMEOUT (connect: NOODLE_E_CONNECT_TIMEOUT;
 * the connection is then dead); with NOODLE_NO_DEADLINE they block until the
 * hang is cleared and then proceed normally. */
NOODLE_MUSTCHECK int noodle_mock_set_hang(const char *node, noodle_mock_op op, bool hang,
                                          noodle_error *err);

/* The next n calls of op fail with code (a catalogue code) before doing
 * anything (n = 0 clears). When code is connection-fatal
 * (noodle_code_is_connection_fatal) the connection is dead afterwards. A
 * failed COMMIT ends the transaction (rolled back), as in PostgreSQL. */
NOODLE_MUSTCHECK int noodle_mock_fail_next(const char *node, noodle_mock_op op, int64_t n,
                                           int code, noodle_error *err);

/* Each call of op fails with code with probability p in [0, 1] (0 clears),
 * decided by the node's seeded generator: the same seed and the same order of
 * calls give the same decisions. fail_next, when set, is consumed first and
 * draws nothing. */
NOODLE_MUSTCHECK int noodle_mock_fail_probability(const char *node, noodle_mock_op op, double p,
                                                  int code, noodle_error *err);

/* Seed the node's generator (nodes start with a fixed seed). */
NOODLE_MUSTCHECK int noodle_mock_node_seed(const char *node, uint64_t seed, noodle_error *err);

/* The next n successful COMMITs (of a transaction, or of an autocommit write)
 * apply their writes, then the connection dies and the call fails with
 * NOODLE_E_CONNECTION_LOST: the client cannot tell whether it committed
 * (noodle_conn_commit reports it as NOODLE_E_OUTCOME_UNKNOWN).
 * n = 0 clears. */
NOODLE_MUSTCHECK int noodle_mock_commit_ack_lost(const char *node, int64_t n, noodle_error *err);

/* Clear every fault of the node (latency, hang, fail_next, probability, ack
 * lost). Releases calls blocked in a hang. Role, crash state, seed, data and
 * counters are kept. */
NOODLE_MUSTCHECK int noodle_mock_clear_faults(const char *node, noodle_error *err);

/* ---- observation ------------------------------------------------------------------- */

typedef struct noodle_mock_stats {
    int64_t open_connections; /* server-side sessions alive now (dead ones excluded) */
    int64_t peak_connections; /* max of open_connections since creation / stats reset */
    int64_t connects_total;   /* successful connects */
    int64_t calls[NOODLE_MOCK_OP_COUNT];    /* calls per op, including failed ones */
    int64_t failures[NOODLE_MOCK_OP_COUNT]; /* failures caused by a fault, per op */
    int64_t failures_injected;              /* sum of failures[] */
    int64_t commits;                        /* write sets applied (incl. autocommit) */
    noodle_role role;
    bool crashed;
} noodle_mock_stats;

/* Fill *out with the node's counters (no node is created). Returns 4011 when
 * the node does not exist. */
NOODLE_MUSTCHECK int noodle_mock_node_stats(const char *node, noodle_mock_stats *out,
                                            noodle_error *err);
/* Zero the counters; peak_connections restarts from open_connections. */
NOODLE_MUSTCHECK int noodle_mock_node_reset_stats(const char *node, noodle_error *err);

/* Committed rows of table on node (what a new connection would see), or -1
 * when the node or the table does not exist. table is the name as created
 * (a quoted "Name" keeps its case) or, when no table has that name, folded to
 * lower case as an unquoted name would be. No node is created. */
int64_t noodle_mock_node_rows(const char *node, const char *table);

#ifdef __cplusplus
}
#endif
#endif
