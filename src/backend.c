/* The backend layer: registry of operations tables and the noodle_conn
 * wrapper every caller goes through (see include/noodle/backend.h).
 *
 * Invariants the wrapper keeps:
 *  1. Every failure returned carries a catalogue code: a backend that returns
 *     a code outside the catalogue, or forgets to fill the error, is reported
 *     as NOODLE_E_BACKEND_INTERNAL with what it did return.
 *  2. A broken connection stays broken: after a connection-fatal code
 *     (noodle_code_is_connection_fatal) every operation but close fails with
 *     NOODLE_E_CONNECTION_BROKEN, naming the error that broke it.
 *  3. In the noodle_fiu build each operation first checks its fail point
 *     backend/<name>/<op>; a fired point fails the operation without calling
 *     the backend, exactly as a backend failure would (fatal codes break the
 *     connection).
 *  4. Times (created, last used, last validated) are read from the
 *     connection's clock and only updated on success.
 *  5. Operations added at the end of the table after ABI 1 (integrity) are
 *     read only from a table whose struct_size covers them: an older
 *     backend is still accepted, and calling such an operation on it fails
 *     with NOODLE_E_BACKEND_UNSUPPORTED without touching the backend.
 */
#include <ctype.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_internal.h"
#include "failpoint_internal.h"
#include "internal.h"
#include "noodle/backend.h"

/* ---- registry ----------------------------------------------------------- */

#define MAX_REGISTERED 16

/* Guards registered[] and nregistered. Lookups take it too: registration is
 * rare and lookups happen once per pool, not per connection. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static const noodle_backend_ops *registered[MAX_REGISTERED];
static size_t nregistered;

/* The size of an ABI 1 table built before the first operation added at the
 * end (integrity): the least a backend may declare. */
#define OPS_SIZE_ABI1 offsetof(noodle_backend_ops, integrity)

/* True when the backend's table (struct_size bytes as it was compiled)
 * reaches past the operation field: only then may the field be read. */
#define OPS_HAS(ops, field)                                                                  \
    ((ops)->struct_size >= offsetof(noodle_backend_ops, field) + sizeof((ops)->field))

static int check_ops(const noodle_backend_ops *ops, noodle_error *err) {
    if (ops == NULL) return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT, "backend ops is NULL");
    if (ops->abi_version != NOODLE_BACKEND_ABI_VERSION || ops->struct_size < OPS_SIZE_ABI1)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_ABI_MISMATCH,
                          "backend '%s' has ABI version %u (size %u); this library needs version %u "
                          "(size %zu to %zu)",
                          ops->name ? ops->name : "?", ops->abi_version, ops->struct_size,
                          NOODLE_BACKEND_ABI_VERSION, OPS_SIZE_ABI1, sizeof *ops);
    /* operations added after ABI 1's first table are required only from a
     * backend whose table is large enough to hold them */
    if (ops->name == NULL || ops->connect == NULL || ops->close == NULL || ops->validate == NULL ||
        ops->execute == NULL || ops->begin == NULL || ops->commit == NULL ||
        ops->rollback == NULL || ops->savepoint == NULL || ops->release == NULL ||
        ops->rollback_to == NULL || ops->role == NULL || ops->metrics == NULL ||
        ops->in_transaction == NULL || (OPS_HAS(ops, integrity) && ops->integrity == NULL))
        return NOODLE_ERR(err, NOODLE_E_BACKEND_ABI_MISMATCH,
                          "backend '%s' leaves an operation unimplemented; every operation of the "
                          "interface is required",
                          ops->name ? ops->name : "?");
    return 0;
}

int noodle_backend_register(const noodle_backend_ops *ops, noodle_error *err) {
    int rc = check_ops(ops, err);
    if (rc != 0) return rc;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < nregistered; i++) {
        if (strcmp(registered[i]->name, ops->name) == 0) {
            const bool same = registered[i] == ops;
            pthread_mutex_unlock(&registry_lock);
            return same ? 0
                        : NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                                     "a different backend named '%s' is already registered",
                                     ops->name);
        }
    }
    if (strcmp(ops->name, "sqlite") == 0 || strcmp(ops->name, "postgres") == 0 ||
        nregistered == MAX_REGISTERED) {
        pthread_mutex_unlock(&registry_lock);
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                          "cannot register backend '%s': built-in name or registry full (%d)",
                          ops->name, MAX_REGISTERED);
    }
    registered[nregistered++] = ops;
    pthread_mutex_unlock(&registry_lock);
    return 0;
}

int noodle_backend_find(const char *name, const noodle_backend_ops **out, noodle_error *err) {
    *out = NULL;
    if (name == NULL) name = "";
    if (strcmp(name, "sqlite") == 0) *out = noodle_backend_sqlite();
    else if (strcmp(name, "postgres") == 0) *out = noodle_backend_postgres();
    if (*out != NULL) return 0;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < nregistered; i++)
        if (strcmp(registered[i]->name, name) == 0) *out = registered[i];
    pthread_mutex_unlock(&registry_lock);
    if (*out != NULL) return 0;
    return NOODLE_ERR(err, NOODLE_E_BACKEND_UNKNOWN,
                      "no backend named '%s' (built in: sqlite, postgres; the mock must be "
                      "registered with noodle_mock_register)",
                      name);
}

/* ---- names ---------------------------------------------------------------- */

const char *noodle_role_name(noodle_role r) {
    switch (r) {
    case NOODLE_ROLE_PRIMARY: return "primary";
    case NOODLE_ROLE_STANDBY: return "standby";
    case NOODLE_ROLE_READ_ONLY: return "read-only";
    case NOODLE_ROLE_UNKNOWN: break;
    }
    return "unknown";
}

const char *noodle_isolation_name(noodle_isolation i) {
    switch (i) {
    case NOODLE_ISOLATION_DEFAULT: return "default";
    case NOODLE_ISOLATION_READ_UNCOMMITTED: return "read uncommitted";
    case NOODLE_ISOLATION_READ_COMMITTED: return "read committed";
    case NOODLE_ISOLATION_REPEATABLE_READ: return "repeatable read";
    case NOODLE_ISOLATION_SERIALIZABLE: return "serializable";
    }
    return "invalid";
}

bool noodle_identifier_valid(const char *name) {
    if (name == NULL || !(isalpha((unsigned char)name[0]) || name[0] == '_')) return false;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        unsigned char ch = (unsigned char)*p;
        if (ch >= 0x80 || !(isalnum(ch) || ch == '_') || n >= 63) return false;
    }
    return true;
}

/* ---- connections ------------------------------------------------------------- */

/* Check state and fail point before an operation. */
static int before_op(noodle_conn *c, noodle__backend_op op, noodle_error *err) {
    if (c->state == NOODLE_CONN_BROKEN)
        return NOODLE_ERR(err, NOODLE_E_CONNECTION_BROKEN,
                          "connection to %s is broken by an earlier error (%s); close it",
                          c->endpoint, c->broken_by);
#ifdef FIU_ENABLE
    static const int default_codes[] = {
#define NOODLE_X_OP(OP, opname, code) code,
        NOODLE_BACKEND_OP_MAP(NOODLE_X_OP)
#undef NOODLE_X_OP
    };
    int code = NOODLE_FAIL_POINT(c->fail_points[op], default_codes[op]);
    if (code != 0) {
        NOODLE_ERR(err, code, "fail point %s fired", c->fail_points[op]);
        noodle_error_detail(err, "fail point %s", c->fail_points[op]);
        return code;
    }
#else
    (void)op;
#endif
    return 0;
}

/* Make sure a failure is coded (invariant 1). */
static int ensure_coded(const noodle_backend_ops *ops, const char *what, int rc, noodle_error *err) {
    if (rc == 0) return 0;
    if (noodle_code_name(rc) == NULL)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INTERNAL,
                          "%s backend's %s returned %d, which is not a catalogue code", ops->name,
                          what, rc);
    if (err->code != rc) return NOODLE_ERR(err, rc, "%s failed in the %s backend", what, ops->name);
    return rc;
}

/* Record the outcome of an operation; returns rc. */
static int after_op(noodle_conn *c, const char *what, int rc, noodle_error *err) {
    rc = ensure_coded(c->ops, what, rc, err);
    c->in_txn = c->ops->in_transaction(c->handle);
    if (rc != 0 && c->error_hook != NULL) c->error_hook(c, what, rc, err, c->error_hook_arg);
    if (rc == 0) {
        c->last_used_at = noodle_clock_now_coarse(c->clock);
    } else if (noodle_code_is_connection_fatal(rc) && c->state == NOODLE_CONN_OK) {
        /* remember the error that broke it, not the 4005s that follow */
        c->state = NOODLE_CONN_BROKEN;
        noodle_error_format(err, c->broken_by, sizeof c->broken_by);
    }
    return rc;
}

int noodle_conn_open(const noodle_backend_ops *ops, const noodle_connect_params *p,
                     noodle_conn **out, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    *out = NULL;
    int rc = check_ops(ops, err);
    if (rc != 0) return rc;
    if (p == NULL || p->url == NULL)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT, "connect parameters lack a url");

    noodle_conn *c = calloc(1, sizeof *c);
    if (c == NULL) goto fail_oom;
    c->ops = ops;
    c->clock = p->clock ? p->clock : noodle_clock_real();
    size_t need = noodle_mask_secrets(p->url, NULL, 0);
    c->endpoint = malloc(need + 1);
    if (c->endpoint == NULL) goto fail_conn;
    noodle_mask_secrets(p->url, c->endpoint, need + 1);
#ifdef FIU_ENABLE
    for (int op = 0; op < NOODLE__BACKEND_OP_COUNT; op++)
        c->fail_points[op] = noodle__backend_fail_point(ops->name, (noodle__backend_op)op);
#endif
    rc = before_op(c, NOODLE__OP_CONNECT, err);
    if (rc == 0) rc = ops->connect(p, &c->handle, err);
    rc = ensure_coded(ops, "connect", rc, err);
    if (rc != 0) goto fail_endpoint;
    c->created_at = c->last_used_at = c->last_validated_at = noodle_clock_now_coarse(c->clock);
    *out = c;
    return 0;

fail_endpoint:
    free(c->endpoint);
    free(c);
    return rc;
fail_conn:
    free(c);
fail_oom:
    return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "out of memory opening a connection");
}

void noodle_conn_close(noodle_conn *c) {
    if (c == NULL) return;
    c->ops->close(c->handle);
    free(c->endpoint);
    free(c);
}

/* Run one operation through the wrapper. CALL is the backend call. */
#define CONN_OP(c, op, what, err, CALL)                          \
    do {                                                         \
        noodle_error local_;                                     \
        if ((err) == NULL) (err) = &local_;                      \
        noodle_error_clear(err);                                 \
        int rc_ = before_op((c), (op), (err));                   \
        if (rc_ == 0) rc_ = (CALL);                              \
        return after_op((c), (what), rc_, (err));                \
    } while (0)

int noodle_conn_validate(noodle_conn *c, int64_t deadline, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    int rc = before_op(c, NOODLE__OP_VALIDATE, err);
    if (rc == 0) rc = c->ops->validate(c->handle, deadline, err);
    rc = after_op(c, "validate", rc, err);
    if (rc == 0) c->last_validated_at = c->last_used_at;
    return rc;
}

int noodle_conn_execute(noodle_conn *c, const char *sql, const noodle_value *params, size_t nparams,
                        int64_t deadline, noodle_rows **out, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    *out = NULL;
    if (sql == NULL || (nparams > 0 && params == NULL))
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                          "execute needs SQL text and %zu parameters", nparams);
    int rc = before_op(c, NOODLE__OP_EXECUTE, err);
    if (rc == 0) rc = c->ops->execute(c->handle, sql, params, nparams, deadline, out, err);
    if (rc == 0 && *out == NULL)
        rc = NOODLE_ERR(err, NOODLE_E_BACKEND_INTERNAL,
                        "%s backend's execute succeeded without a result", c->ops->name);
    if (rc != 0) {
        noodle_rows_free(*out); /* a backend must not leave a result on failure */
        *out = NULL;
    }
    return after_op(c, "execute", rc, err);
}

int noodle_conn_begin(noodle_conn *c, noodle_isolation iso, int64_t deadline, noodle_error *err) {
    CONN_OP(c, NOODLE__OP_BEGIN, "begin", err, c->ops->begin(c->handle, iso, deadline, err));
}

/* A COMMIT that was sent and then lost its connection (or its deadline) may
 * have been applied: the caller gets OUTCOME_UNKNOWN, with the cause kept in
 * the message, never a plain failure it could mistake for "not committed".
 * A fail point fires before anything is sent, so its failure is definite. */
int noodle_conn_commit(noodle_conn *c, int64_t deadline, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    int rc = before_op(c, NOODLE__OP_COMMIT, err);
    if (rc != 0) return after_op(c, "commit", rc, err);
    rc = ensure_coded(c->ops, "commit", c->ops->commit(c->handle, deadline, err), err);
    if (rc != 0 && rc != NOODLE_E_CONNECTION_BROKEN && noodle_code_is_connection_fatal(rc)) {
        char cause[sizeof err->message];
        noodle_error_format(err, cause, sizeof cause);
        rc = NOODLE_ERR(err, NOODLE_E_OUTCOME_UNKNOWN,
                        "commit on %s: the connection failed after COMMIT was sent, so the "
                        "transaction may or may not be committed (%s)",
                        c->endpoint, cause);
    }
    return after_op(c, "commit", rc, err);
}

int noodle_conn_rollback(noodle_conn *c, int64_t deadline, noodle_error *err) {
    CONN_OP(c, NOODLE__OP_ROLLBACK, "rollback", err, c->ops->rollback(c->handle, deadline, err));
}

/* Savepoint names are checked here too, so no backend can be handed an
 * unvalidated identifier. */
static int check_savepoint_name(const char *name, noodle_error *err) {
    if (noodle_identifier_valid(name)) return 0;
    return NOODLE_ERR(err, NOODLE_E_QUERY_INVALID_SAVEPOINT,
                      "savepoint name is not a valid identifier (expected [A-Za-z_][A-Za-z0-9_]*, "
                      "at most 63 bytes)");
}

int noodle_conn_savepoint(noodle_conn *c, const char *name, int64_t deadline, noodle_error *err) {
    if (check_savepoint_name(name, err) != 0) return NOODLE_E_QUERY_INVALID_SAVEPOINT;
    CONN_OP(c, NOODLE__OP_SAVEPOINT, "savepoint", err,
            c->ops->savepoint(c->handle, name, deadline, err));
}

int noodle_conn_release(noodle_conn *c, const char *name, int64_t deadline, noodle_error *err) {
    if (check_savepoint_name(name, err) != 0) return NOODLE_E_QUERY_INVALID_SAVEPOINT;
    CONN_OP(c, NOODLE__OP_RELEASE, "release", err, c->ops->release(c->handle, name, deadline, err));
}

int noodle_conn_rollback_to(noodle_conn *c, const char *name, int64_t deadline, noodle_error *err) {
    if (check_savepoint_name(name, err) != 0) return NOODLE_E_QUERY_INVALID_SAVEPOINT;
    CONN_OP(c, NOODLE__OP_ROLLBACK_TO, "rollback to savepoint", err,
            c->ops->rollback_to(c->handle, name, deadline, err));
}

int noodle_conn_role(noodle_conn *c, int64_t deadline, noodle_role *out, noodle_error *err) {
    *out = NOODLE_ROLE_UNKNOWN;
    CONN_OP(c, NOODLE__OP_ROLE, "role", err, c->ops->role(c->handle, deadline, out, err));
}

void noodle__metrics_unknown(noodle_server_metrics *m) {
    memset(m, 0, sizeof *m);
    m->role = NOODLE_ROLE_UNKNOWN;
    m->database_size_bytes = m->standby_count = -1;
    m->replication_lag_bytes = m->replication_delay_ms = -1;
    for (size_t i = 0; i < NOODLE_STANDBYS_REPORTED; i++)
        m->standbys[i].lag_bytes = m->standbys[i].replay_lag_ms = -1;
    m->archive_archived_count = m->archive_failed_count = -1;
    m->archive_last_archived_age_ms = m->archive_last_failed_age_ms = -1;
}

int noodle_conn_metrics(noodle_conn *c, int64_t deadline, noodle_server_metrics *out,
                        noodle_error *err) {
    noodle__metrics_unknown(out);
    CONN_OP(c, NOODLE__OP_METRICS, "metrics", err, c->ops->metrics(c->handle, deadline, out, err));
}

void noodle__integrity_problem(noodle_integrity_result *r, const char *text, size_t len) {
    if (r->problems++ > 0) return;
    if (len >= sizeof r->first_problem) len = sizeof r->first_problem - 1;
    memcpy(r->first_problem, text, len);
    r->first_problem[len] = '\0';
}

static void integrity_unknown(noodle_integrity_result *r) {
    memset(r, 0, sizeof *r);
    r->problems = r->checksum_failures = -1;
}

/* Checked here, before the fail point and the backend: an old backend
 * (invariant 5) or an unknown level never reaches the table. */
static int integrity_supported(const noodle_conn *c, noodle_integrity_level level,
                               noodle_error *err) {
    if (!OPS_HAS(c->ops, integrity) || c->ops->integrity == NULL)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_UNSUPPORTED,
                          "the %s backend has no integrity operation (its table of %u bytes was "
                          "built for an older ABI)",
                          c->ops->name, c->ops->struct_size);
    if (level != NOODLE_INTEGRITY_QUICK && level != NOODLE_INTEGRITY_FULL)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                          "integrity level %d is neither QUICK nor FULL", (int)level);
    return 0;
}

int noodle_conn_integrity(noodle_conn *c, noodle_integrity_level level, int64_t deadline,
                          noodle_integrity_result *out, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    integrity_unknown(out);
    int rc = integrity_supported(c, level, err);
    if (rc != 0) return rc;
    rc = before_op(c, NOODLE__OP_INTEGRITY, err);
    if (rc == 0) rc = c->ops->integrity(c->handle, level, deadline, out, err);
    if (rc != 0) integrity_unknown(out); /* nothing half-filled on failure */
    out->method[sizeof out->method - 1] = '\0';
    out->first_problem[sizeof out->first_problem - 1] = '\0';
    return after_op(c, "integrity", rc, err);
}

noodle_conn_state noodle_conn_get_state(const noodle_conn *c) { return c->state; }
const noodle_backend_ops *noodle_conn_backend(const noodle_conn *c) { return c->ops; }
const char *noodle_conn_endpoint(const noodle_conn *c) { return c->endpoint; }
uint64_t noodle_conn_generation(const noodle_conn *c) { return c->generation; }
void noodle_conn_set_generation(noodle_conn *c, uint64_t gen) { c->generation = gen; }
int64_t noodle_conn_created_at(const noodle_conn *c) { return c->created_at; }
int64_t noodle_conn_last_used_at(const noodle_conn *c) { return c->last_used_at; }
int64_t noodle_conn_last_validated_at(const noodle_conn *c) { return c->last_validated_at; }
void *noodle_conn_handle(const noodle_conn *c) { return c->handle; }
bool noodle_conn_in_transaction(const noodle_conn *c) {
    return c->in_txn && c->state == NOODLE_CONN_OK;
}
void noodle_conn_set_owner_data(noodle_conn *c, void *data) { c->owner_data = data; }
void *noodle_conn_owner_data(const noodle_conn *c) { return c->owner_data; }
void noodle_conn_set_error_hook(noodle_conn *c, noodle_conn_error_hook fn, void *arg) {
    c->error_hook = fn;
    c->error_hook_arg = arg;
}
