/* The database manager (see include/noodle/db.h and docs/db.md).
 *
 * Design notes.
 *
 * A noodle_db is an immutable record (a pool or a cluster, and a timeout)
 * plus an append-only list of observers: it holds no connection between
 * calls, and its only lock serialises adding observers, so every function
 * may be called from any thread. A call either runs on the caller's transaction
 * (noodle_txn_execute) or acquires a connection for itself, runs one
 * statement and gives the connection back before it returns.
 *
 * SQL text of the CRUD helpers is assembled by one small builder (sqlbuf)
 * that only appends fixed keywords and identifiers that passed validation,
 * each part double-quoted. It has no formatting function: there is no code
 * path by which a value or an unchecked name can become SQL text.
 *
 * Invariants:
 *  1. Values reach the database only as bound parameters (`?`); LIMIT too.
 *     IS NULL / IS NOT NULL bind nothing.
 *  2. Every identifier is validated ([A-Za-z_][A-Za-z0-9_]{0,62}; a table may
 *     be qualified once) before any SQL is built, any memory is allocated
 *     or any connection is acquired; a refusal (3001) names the argument and
 *     shows the offending name escaped and truncated.
 *  3. Argument checks (3002), unbounded writes (3005), identifiers (3001)
 *     and operators (3004) are all decided before anything runs, in that
 *     order; nothing is executed when one fails.
 *  4. A failure keeps the code and the backend detail of whoever raised it;
 *     the database manager only prefixes the message with what it was doing
 *     (`insert into "t": ...`).
 *  5. Autocommit writes and the CRUD helpers' reads go to the primary (a
 *     select reads the caller's own writes); only noodle_db_query_read may be
 *     served by a standby. Autocommit calls on a cluster go through
 *     noodle_cluster_execute, which reports a write whose connection died
 *     after it was sent as 4015 (outcome unknown).
 *  6. Every allocation is checked (3003) and released on every path.
 */
#include "noodle/db.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "rows_internal.h"
#include "text.h"

#define IDENT_MAX 63 /* bytes of one identifier part */

struct noodle_db {
    noodle_pool *pool; /* exactly one of pool and cluster */
    noodle_cluster *cluster;
    int64_t call_timeout;      /* ns; 0: the pool's / cluster's acquire timeout */
    const noodle_clock *clock; /* of call_timeout (NULL: the real clock) */
    const noodle_clock *timing_clock; /* statements are timed on: clock, else the pool's */
    /* What an observed statement reads, next to the above (one cache line). */
    _Atomic size_t nobservers;
    _Atomic unsigned time_every; /* precise timing of one statement in this many */
    double ns_per_tick;          /* > 0: timing_clock is the real one, and durations read
                                    the TSC (inline); 0: through the clock */
    /* observers: entries below nobservers are written once, before the
     * count that publishes them */
    struct {
        noodle_db_observer fn;
        void *arg;
    } observers[8];
    pthread_mutex_t observe_lock;
};

/* Statements left on this thread until the next precisely timed one. */
static _Thread_local unsigned untimed_left __attribute__((tls_model("initial-exec")));

/* ---- the SQL builder ------------------------------------------------------------------------- */

/* The text being built: appended to only with noodle__text_put, never
 * noodle__text_printf. An append after a failed allocation does nothing;
 * the failure is reported once, by run_built (3003). */
typedef noodle__text sqlbuf;

static void sb_append(sqlbuf *b, const char *s, size_t n) { noodle__text_put(b, s, n); }

/* A fixed piece of SQL (keywords, punctuation). */
static void sb_kw(sqlbuf *b, const char *kw) { sb_append(b, kw, strlen(kw)); }

/* A validated identifier, each part quoted: t -> "t", s.t -> "s"."t". */
static void sb_ident(sqlbuf *b, const char *name) {
    const char *dot = strchr(name, '.');
    size_t first = dot ? (size_t)(dot - name) : strlen(name);
    sb_append(b, "\"", 1);
    sb_append(b, name, first);
    sb_append(b, "\"", 1);
    if (dot != NULL) {
        sb_append(b, ".\"", 2);
        sb_append(b, dot + 1, strlen(dot + 1));
        sb_append(b, "\"", 1);
    }
}

static void sb_free(sqlbuf *b) {
    free(b->p);
    *b = (sqlbuf){0};
}

/* ---- identifiers ----------------------------------------------------------------------------- */

static bool ident_start(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}
static bool ident_char(unsigned char c) { return ident_start(c) || (c >= '0' && c <= '9'); }

/* Why the part s[0..len) is not an identifier ("the name <why>"), or NULL
 * when it is one.
 * *at receives the offending byte's offset (for messages). */
static const char *part_problem(const char *s, size_t len, size_t *at) {
    *at = 0;
    if (len == 0) return "is empty";
    if (len > IDENT_MAX) {
        *at = IDENT_MAX;
        return "is longer than 63 bytes";
    }
    if (!ident_start((unsigned char)s[0]))
        return s[0] >= '0' && s[0] <= '9' ? "starts with a digit"
                                          : "starts with a character other than a letter or '_'";
    for (size_t i = 1; i < len; i++) {
        if (!ident_char((unsigned char)s[i])) {
            *at = i;
            return "contains a character other than letters, digits and '_'";
        }
    }
    return NULL;
}

/* Why name is not a valid identifier (qualified allows "schema.name"), or
 * NULL. *at: offset of the offending byte in name. */
static const char *name_problem(const char *name, bool qualified, size_t *at) {
    *at = 0;
    if (name == NULL) return "NULL";
    const char *dot = qualified ? strchr(name, '.') : NULL;
    if (dot == NULL) return part_problem(name, strlen(name), at);
    size_t first = (size_t)(dot - name);
    const char *why = part_problem(name, first, at);
    if (why != NULL) return first == 0 ? "is empty before the '.'" : why;
    why = part_problem(dot + 1, strlen(dot + 1), at);
    *at += first + 1;
    if (why != NULL && dot[1] == '\0') return "is empty after the '.'";
    return why;
}

bool noodle_db_identifier_valid(const char *name) {
    size_t at;
    return name_problem(name, true, &at) == NULL;
}

/* Write name into out (size bytes) so that it can be shown safely: printable
 * ASCII as is (with \" and \\), anything else as \xNN, at most 48 source
 * bytes then "...". */
static void show_name(const char *name, char *out, size_t size) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;
    for (; name[i] != '\0' && i < 48; i++) {
        unsigned char c = (unsigned char)name[i];
        char piece[4];
        size_t n = 0;
        if (c == '"' || c == '\\') {
            piece[n++] = '\\';
            piece[n++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            piece[n++] = (char)c;
        } else {
            piece[n++] = '\\';
            piece[n++] = 'x';
            piece[n++] = hex[c >> 4];
            piece[n++] = hex[c & 15];
        }
        if (o + n + 4 > size) break; /* room for "..." and the NUL */
        memcpy(out + o, piece, n);
        o += n;
    }
    if (name[i] != '\0') {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Check one name argument. what and index name it in the message: "table",
 * "column" 2, "key column" 0, "order_by", "condition" 1 (index -1: none). */
static int check_name(const char *name, bool qualified, const char *what, long index,
                      noodle_error *err) {
    size_t at;
    const char *why = name_problem(name, qualified, &at);
    if (why == NULL) return 0;
    char arg[48];
    if (index >= 0)
        snprintf(arg, sizeof arg, "%s %ld", what, index);
    else
        noodle__strlcpy(arg, what, sizeof arg);
    if (name == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_IDENTIFIER, "invalid identifier for %s: NULL",
                          arg);
    char shown[256];
    show_name(name, shown, sizeof shown);
    return NOODLE_ERR(err, NOODLE_E_DB_INVALID_IDENTIFIER,
                      "invalid identifier for %s: \"%s\" %s (byte %zu); names must match "
                      "[A-Za-z_][A-Za-z0-9_]{0,62}%s",
                      arg, shown, why, at,
                      qualified ? ", optionally qualified once (schema.name)" : "");
}

/* ---- open and close -------------------------------------------------------------------------- */

int noodle_db_open(const noodle_db_options *opts, noodle_db **out, noodle_error *err) {
    if (out == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT,
                          "db open needs somewhere to put the db");
    *out = NULL;
    if (opts == NULL || opts->struct_size < offsetof(noodle_db_options, clock))
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT,
                          "db options need struct_size = sizeof(noodle_db_options) "
                          "(use NOODLE_DB_OPTIONS_INIT)");
    if ((opts->pool == NULL) == (opts->cluster == NULL))
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT,
                          "db options need exactly one of pool and cluster (got %s)",
                          opts->pool == NULL ? "neither" : "both");
    if (opts->call_timeout_ms < 0 || opts->call_timeout_ms > INT64_MAX / NOODLE_MS(1))
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT,
                          "call_timeout_ms %" PRId64 " is out of range (0: the acquire timeout)",
                          opts->call_timeout_ms);
    noodle_db *db = calloc(1, sizeof *db);
    if (db == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_NO_MEMORY, "out of memory allocating the db");
    db->pool = opts->pool;
    db->cluster = opts->cluster;
    db->call_timeout = NOODLE_MS(opts->call_timeout_ms);
    /* fields added after call_timeout_ms are read only when the caller's
     * struct has them */
    if (opts->struct_size >= offsetof(noodle_db_options, clock) + sizeof opts->clock)
        db->clock = opts->clock;
    db->timing_clock =
        db->clock != NULL || db->pool == NULL ? db->clock : noodle_pool_clock(db->pool);
    pthread_mutex_init(&db->observe_lock, NULL);
    *out = db;
    return 0;
}

int noodle_db_observe(noodle_db *db, noodle_db_observer fn, void *arg, noodle_error *err) {
    return noodle_db_observe_sampled(db, fn, arg, 1, err);
}

int noodle_db_observe_sampled(noodle_db *db, noodle_db_observer fn, void *arg, unsigned time_every,
                              noodle_error *err) {
    if (db == NULL || fn == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT, "observe needs a db and a function");
    const size_t cap = sizeof db->observers / sizeof db->observers[0];
    noodle__ticks_init(); /* before any statement is timed */
    pthread_mutex_lock(&db->observe_lock);
    size_t n = atomic_load_explicit(&db->nobservers, memory_order_relaxed);
    if (n == 0) /* published with the first observer; read only once there is one */
        db->ns_per_tick = noodle__tsc_ns_per_tick(db->timing_clock);
    if (n < cap) {
        db->observers[n].fn = fn;
        db->observers[n].arg = arg;
        unsigned every = time_every > 1 ? time_every : 1;
        if (n == 0 || every < atomic_load_explicit(&db->time_every, memory_order_relaxed))
            atomic_store_explicit(&db->time_every, every, memory_order_relaxed);
        atomic_store_explicit(&db->nobservers, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&db->observe_lock);
    if (n == cap)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT, "the db already has %zu observers",
                          cap);
    return 0;
}

void noodle_db_close(noodle_db *db) {
    if (db == NULL) return;
    pthread_mutex_destroy(&db->observe_lock);
    free(db);
}

/* ---- running one statement ------------------------------------------------------------------- */

/* What a statement is, for routing on a cluster. */
typedef enum stmt_kind {
    K_WRITE,        /* primary; a connection lost after sending it: 4015 */
    K_READ,         /* primary (reads the caller's own writes); idempotent */
    K_STANDBY_READ, /* a standby when one is healthy; idempotent */
} stmt_kind;

/* A write whose connection failed after it was sent may have been applied:
 * say so (4015), as noodle_cluster_execute does for a cluster. A broken
 * connection (4005) failed before sending anything. */
static int write_outcome(int rc, noodle_error *err) {
    if (!noodle_code_is_connection_fatal(rc) || rc == NOODLE_E_CONNECTION_BROKEN ||
        rc == NOODLE_E_OUTCOME_UNKNOWN)
        return rc;
    char cause[sizeof err->message];
    noodle_error_format(err, cause, sizeof cause);
    char detail[sizeof err->detail];
    memcpy(detail, err->detail, sizeof detail);
    NOODLE_ERR(err, NOODLE_E_OUTCOME_UNKNOWN,
               "the connection failed after the write was sent, so it may or may not have "
               "been applied (%s)",
               cause);
    memcpy(err->detail, detail, sizeof detail);
    return NOODLE_E_OUTCOME_UNKNOWN;
}

/* Run sql: on txn when given, else in autocommit on a connection acquired
 * for it (invariant 5). *out is NULL on failure. err is never NULL here. */
static int run_untimed(noodle_db *db, noodle_txn *txn, stmt_kind kind, const char *sql,
                       const noodle_value *params, size_t n, noodle_rows **out, int64_t *held,
                       noodle_error *err) {
    *out = NULL;
    if (txn != NULL) return noodle_txn_execute(txn, sql, params, n, out, err);
    /* one deadline for the acquire and the statement: call_timeout, else
     * the pool's acquire timeout on the pool's clock (a cluster applies its
     * own when given 0) */
    int64_t deadline =
        db->call_timeout > 0 ? noodle__deadline_after_coarse(db->clock, db->call_timeout)
        : db->pool != NULL ? noodle__deadline_after_coarse(noodle_pool_clock(db->pool),
                                                           noodle_pool_acquire_timeout(db->pool))
                           : 0;
    if (db->cluster != NULL) {
        noodle_route route =
            kind == K_STANDBY_READ ? NOODLE_ROUTE_PREFER_STANDBY : NOODLE_ROUTE_PRIMARY;
        unsigned flags = kind == K_WRITE ? 0u : NOODLE_EXEC_READ;
        return noodle_cluster_execute(db->cluster, route, flags, sql, params, n, deadline, out,
                                      err);
    }
    noodle_conn *c = NULL;
    int rc = noodle_pool_acquire_at(db->pool, deadline, &c, err, __FILE__, __LINE__);
    if (rc != 0) return rc;
    rc = noodle_conn_execute(c, sql, params, n, deadline, out,
                             err);
    int64_t h = noodle__pool_release_held(db->pool, &c);
    if (held != NULL) *held = h;
    if (rc != 0 && kind == K_WRITE) rc = write_outcome(rc, err);
    return rc;
}

/* Whether this thread's next statement is timed precisely (one in every). */
static bool time_precisely(unsigned every) {
    if (every <= 1) return true;
    if (untimed_left == 0 || untimed_left > every) untimed_left = every;
    return --untimed_left == 0;
}

/* Tell the observers about one statement (inline: a call here cost more
 * than its share of the observed path; the unobserved path skips it). */
static inline __attribute__((always_inline)) void report(noodle_db *db, size_t nobs,
                                                         const char *sql, int rc,
                                                         const noodle_rows *out, bool in_txn,
                                                         int64_t duration, bool precise) {
    noodle_db_event ev = {
        .sql = sql,
        .sql_len = strlen(sql),
        .code = rc,
        .duration_ns = duration >= 0 || precise ? (duration > 0 ? duration : 0) : -1,
        .duration_precise = precise,
        .rows = __builtin_expect(rc == 0, 1) ? noodle__rows_reported(out) : -1,
        .in_transaction = in_txn,
    };
    for (size_t i = 0; i < nobs; i++) db->observers[i].fn(&ev, db->observers[i].arg);
}

/* run_untimed, timed and reported to the observers when there are any. A
 * statement that is not timed precisely gets the pool's coarse hold time
 * of its connection (read anyway), or two coarse readings. */
static int run_stmt(noodle_db *db, noodle_txn *txn, stmt_kind kind, const char *sql,
                    const noodle_value *params, size_t n, noodle_rows **out, noodle_error *err) {
    size_t nobs = atomic_load_explicit(&db->nobservers, memory_order_acquire);
    const noodle_clock *clock = db->timing_clock;
    bool precise = false, pool_measures = txn == NULL && db->pool != NULL;
    int64_t start = 0, held = -1;
    /* Within the observed path the expected case is marked (a precise TSC
     * reading, a statement that succeeded) so that it is laid out in one
     * straight piece; the unobserved path is unaffected. */
    if (nobs > 0) {
        precise = time_precisely(atomic_load_explicit(&db->time_every, memory_order_relaxed));
        if (__builtin_expect(precise && db->ns_per_tick > 0, 1)) start = noodle__tsc();
        else if (precise) start = noodle__duration_start(clock);
        else if (!pool_measures) start = noodle_clock_now_coarse(clock);
    }
    int rc = run_untimed(db, txn, kind, sql, params, n, out, &held, err);
    if (nobs > 0) {
        int64_t duration;
        if (__builtin_expect(precise && db->ns_per_tick > 0, 1))
            duration = (int64_t)((double)(noodle__tsc() - start) * db->ns_per_tick);
        else if (precise) duration = noodle__duration_ns(clock, start);
        else duration = pool_measures ? held : noodle_clock_now_coarse(clock) - start;
        report(db, nobs, sql, rc, *out, txn != NULL, duration, precise);
    }
    return rc;
}

/* Append s (n bytes) to buf (size bytes, NUL-terminated) at *used,
 * truncating. */
static void put(char *buf, size_t size, size_t *used, const char *s, size_t n) {
    if (*used + 1 >= size) return;
    if (n > size - 1 - *used) n = size - 1 - *used;
    memcpy(buf + *used, s, n);
    *used += n;
    buf[*used] = '\0';
}

/* Prefix err's message with `verb "table": ` (invariant 4): the code, the
 * detail and where it was raised stay as they were. */
static int with_context(noodle_error *err, int rc, const char *verb, const char *table) {
    char old[sizeof err->message];
    memcpy(old, err->message, sizeof old);
    old[sizeof old - 1] = '\0';
    size_t used = 0;
    err->message[0] = '\0';
    put(err->message, sizeof err->message, &used, verb, strlen(verb));
    put(err->message, sizeof err->message, &used, " \"", 2);
    put(err->message, sizeof err->message, &used, table, strlen(table));
    put(err->message, sizeof err->message, &used, "\": ", 3);
    put(err->message, sizeof err->message, &used, old, strlen(old));
    if (err->code == 0) err->code = rc; /* every failure carries a code */
    return rc;
}

/* ---- SQL with bound parameters --------------------------------------------------------------- */

static int check_call(const noodle_db *db, const char *sql, const noodle_value *params,
                      size_t nparams, noodle_error *err) {
    if (db == NULL || sql == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT, "the call needs a db and SQL text");
    if (nparams > 0 && params == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT,
                          "%zu parameters announced but params is NULL", nparams);
    return 0;
}

int noodle_db_exec(noodle_db *db, noodle_txn *txn, const char *sql, const noodle_value *params,
                   size_t nparams, int64_t *affected, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (affected != NULL) *affected = 0;
    int rc = check_call(db, sql, params, nparams, err);
    if (rc != 0) return rc;
    noodle_rows *r = NULL;
    rc = run_stmt(db, txn, K_WRITE, sql, params, nparams, &r, err);
    if (rc != 0) return rc;
    if (affected != NULL) *affected = noodle_rows_affected(r);
    noodle_rows_free(r);
    return 0;
}

static int query(noodle_db *db, noodle_txn *txn, stmt_kind kind, const char *sql,
                 const noodle_value *params, size_t nparams, noodle_rows **out, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (out == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT, "a query needs somewhere to put rows");
    *out = NULL;
    int rc = check_call(db, sql, params, nparams, err);
    if (rc != 0) return rc;
    return run_stmt(db, txn, kind, sql, params, nparams, out, err);
}

int noodle_db_query(noodle_db *db, noodle_txn *txn, const char *sql, const noodle_value *params,
                    size_t nparams, noodle_rows **out, noodle_error *err) {
    /* any statement may come here (INSERT ... RETURNING): treated as a write */
    return query(db, txn, K_WRITE, sql, params, nparams, out, err);
}

int noodle_db_query_read(noodle_db *db, noodle_txn *txn, const char *sql,
                         const noodle_value *params, size_t nparams, noodle_rows **out,
                         noodle_error *err) {
    return query(db, txn, K_STANDBY_READ, sql, params, nparams, out, err);
}

/* ---- CRUD: checks ---------------------------------------------------------------------------- */

/* A value is one of the five types, and its bytes exist; what and i name
 * it in the message. */
static int check_value(const noodle_value *v, const char *what, size_t i, noodle_error *err) {
    if ((unsigned)v->type > (unsigned)NOODLE_TYPE_BLOB)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT, "%s %zu has invalid type %d", what, i,
                          (int)v->type);
    if ((v->type == NOODLE_TYPE_TEXT || v->type == NOODLE_TYPE_BLOB) && v->v.bytes.ptr == NULL &&
        v->v.bytes.len > 0)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT, "%s %zu: %zu bytes at NULL", what, i,
                          v->v.bytes.len);
    return 0;
}

static int check_values(const noodle_value *v, size_t n, const char *what, noodle_error *err) {
    for (size_t i = 0; i < n; i++) {
        int rc = check_value(&v[i], what, i, err);
        if (rc != 0) return rc;
    }
    return 0;
}

/* The columns and values of an INSERT / UPDATE / upsert: shape (3002). */
static int check_assignments(const noodle_db *db, const char *const *columns,
                             const noodle_value *values, size_t n, noodle_error *err) {
    if (db == NULL) return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT, "the call needs a db");
    if (n == 0 || columns == NULL || values == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT,
                          "at least one column and its value are needed (n = %zu, columns %s, "
                          "values %s)",
                          n, columns ? "given" : "NULL", values ? "given" : "NULL");
    return 0;
}

static int check_column_names(const char *const *columns, size_t n, const char *what,
                              noodle_error *err) {
    for (size_t i = 0; i < n; i++) {
        int rc = check_name(columns[i], false, what, (long)i, err);
        if (rc != 0) return rc;
    }
    return 0;
}

/* SQL of each operator, and whether it binds a value. */
static const struct {
    const char *sql;
    bool binds;
} op_sql[] = {
    [NOODLE_DB_EQ] = {" = ?", true},
    [NOODLE_DB_NE] = {" <> ?", true},
    [NOODLE_DB_LT] = {" < ?", true},
    [NOODLE_DB_LE] = {" <= ?", true},
    [NOODLE_DB_GT] = {" > ?", true},
    [NOODLE_DB_GE] = {" >= ?", true},
    [NOODLE_DB_LIKE] = {" LIKE ?", true},
    [NOODLE_DB_IS_NULL] = {" IS NULL", false},
    [NOODLE_DB_IS_NOT_NULL] = {" IS NOT NULL", false},
};
#define N_OPS (sizeof op_sql / sizeof op_sql[0])

/* Conditions: names (3001), then operators (3004), then values (3002).
 * *nbind receives the values they bind. */
static int check_conds(const noodle_db_cond *conds, size_t n, size_t *nbind, noodle_error *err) {
    *nbind = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = check_name(conds[i].column, false, "condition", (long)i, err);
        if (rc != 0) return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)conds[i].op >= N_OPS)
            return NOODLE_ERR(err, NOODLE_E_DB_INVALID_CONDITION,
                              "condition %zu (column \"%s\") has operator %d, which is not one "
                              "of NOODLE_DB_EQ ... NOODLE_DB_IS_NOT_NULL",
                              i, conds[i].column, (int)conds[i].op);
    }
    for (size_t i = 0; i < n; i++) {
        if (!op_sql[conds[i].op].binds) continue;
        int rc = check_value(&conds[i].value, "value of condition", i, err);
        if (rc != 0) return rc;
        (*nbind)++;
    }
    return 0;
}

/* ---- CRUD: statements ------------------------------------------------------------------------ */

/* A statement being built: its SQL text and the values it binds, in order. */
typedef struct stmt {
    sqlbuf sql;
    noodle_value *params;
    size_t nparams, cap;
} stmt;

static int stmt_init(stmt *st, size_t a, size_t b, noodle_error *err) {
    *st = (stmt){0};
    size_t cap = a + b;
    if (cap < a || cap > SIZE_MAX / sizeof *st->params)
        return NOODLE_ERR(err, NOODLE_E_DB_NO_MEMORY, "too many parameters (%zu + %zu)", a, b);
    if (cap > 0) {
        st->params = malloc(cap * sizeof *st->params);
        if (st->params == NULL)
            return NOODLE_ERR(err, NOODLE_E_DB_NO_MEMORY, "out of memory for %zu parameters", cap);
    }
    st->cap = cap;
    return 0;
}

static void stmt_free(stmt *st) {
    sb_free(&st->sql);
    free(st->params);
    st->params = NULL;
}

/* Append a `?` to the text and v to the parameters (room was counted by
 * stmt_init). */
static void bind(stmt *st, noodle_value v) {
    if (st->nparams < st->cap) st->params[st->nparams++] = v;
}

/* "a", "b", "c" */
static void put_columns(sqlbuf *b, const char *const *columns, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (i > 0) sb_kw(b, ", ");
        sb_ident(b, columns[i]);
    }
}

/* WHERE "a" = ? AND "b" IS NULL ... (nothing when n is 0) */
static void put_where(stmt *st, const noodle_db_cond *conds, size_t n) {
    for (size_t i = 0; i < n; i++) {
        sb_kw(&st->sql, i == 0 ? " WHERE " : " AND ");
        sb_ident(&st->sql, conds[i].column);
        sb_kw(&st->sql, op_sql[conds[i].op].sql);
        if (op_sql[conds[i].op].binds) bind(st, conds[i].value);
    }
}

/* INSERT INTO "t" ("a", "b") VALUES (?, ?) */
static void put_insert(stmt *st, const char *table, const char *const *columns,
                       const noodle_value *values, size_t n) {
    sb_kw(&st->sql, "INSERT INTO ");
    sb_ident(&st->sql, table);
    sb_kw(&st->sql, " (");
    put_columns(&st->sql, columns, n);
    sb_kw(&st->sql, ") VALUES (");
    for (size_t i = 0; i < n; i++) {
        sb_kw(&st->sql, i == 0 ? "?" : ", ?");
        bind(st, values[i]);
    }
    sb_kw(&st->sql, ")");
}

/* Run the built statement and free it; a failure's message is prefixed
 * with `verb "table": `. */
static int run_built(noodle_db *db, noodle_txn *txn, stmt_kind kind, stmt *st, const char *verb,
                     const char *table, noodle_rows **out, noodle_error *err) {
    int rc;
    *out = NULL;
    if (st->sql.failed)
        rc = NOODLE_ERR(err, NOODLE_E_DB_NO_MEMORY, "out of memory building the statement");
    else
        rc = run_stmt(db, txn, kind, st->sql.p, st->params, st->nparams, out, err);
    stmt_free(st);
    return rc != 0 ? with_context(err, rc, verb, table) : 0;
}

/* Run a write and report the rows it changed. */
static int run_write(noodle_db *db, noodle_txn *txn, stmt *st, const char *verb, const char *table,
                     int64_t *affected, noodle_error *err) {
    noodle_rows *r = NULL;
    int rc = run_built(db, txn, K_WRITE, st, verb, table, &r, err);
    if (rc == 0 && affected != NULL) *affected = noodle_rows_affected(r);
    noodle_rows_free(r);
    return rc;
}

/* ---- CRUD ------------------------------------------------------------------------------------ */

int noodle_db_insert(noodle_db *db, noodle_txn *txn, const char *table, const char *const *columns,
                     const noodle_value *values, size_t n, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    int rc = check_assignments(db, columns, values, n, err);
    if (rc == 0) rc = check_name(table, true, "table", -1, err);
    if (rc == 0) rc = check_column_names(columns, n, "column", err);
    if (rc == 0) rc = check_values(values, n, "value", err);
    if (rc != 0) return rc;
    stmt st;
    if ((rc = stmt_init(&st, n, 0, err)) != 0) return rc;
    put_insert(&st, table, columns, values, n);
    return run_write(db, txn, &st, "insert into", table, NULL, err);
}

int noodle_db_select(noodle_db *db, noodle_txn *txn, const char *table,
                     const noodle_db_select_spec *spec, noodle_rows **out, noodle_error *err) {
    static const noodle_db_select_spec everything = {0};
    noodle_error local;
    if (err == NULL) err = &local;
    if (out == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT, "select needs somewhere to put rows");
    *out = NULL;
    if (spec == NULL) spec = &everything;
    if (db == NULL) return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT, "select needs a db");
    if ((spec->ncolumns > 0 && spec->columns == NULL) || (spec->nconds > 0 && spec->conds == NULL))
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT,
                          "select spec announces %zu columns and %zu conditions but the array "
                          "is NULL",
                          spec->ncolumns, spec->nconds);
    if (spec->limit < 0)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT,
                          "select limit %" PRId64 " is negative (0: no limit)", spec->limit);
    if (spec->descending && spec->order_by == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT,
                          "select spec asks for descending order but names no order_by column");
    size_t ncols = spec->columns != NULL ? spec->ncolumns : 0, nbind = 0;
    int rc = check_name(table, true, "table", -1, err);
    if (rc == 0) rc = check_column_names(spec->columns, ncols, "column", err);
    if (rc == 0 && spec->order_by != NULL)
        rc = check_name(spec->order_by, false, "order_by", -1, err);
    if (rc == 0) rc = check_conds(spec->conds, spec->nconds, &nbind, err);
    if (rc != 0) return rc;
    stmt st;
    if ((rc = stmt_init(&st, nbind, spec->limit > 0 ? 1 : 0, err)) != 0) return rc;
    sb_kw(&st.sql, "SELECT ");
    if (ncols == 0)
        sb_kw(&st.sql, "*");
    else
        put_columns(&st.sql, spec->columns, ncols);
    sb_kw(&st.sql, " FROM ");
    sb_ident(&st.sql, table);
    put_where(&st, spec->conds, spec->nconds);
    if (spec->order_by != NULL) {
        sb_kw(&st.sql, " ORDER BY ");
        sb_ident(&st.sql, spec->order_by);
        sb_kw(&st.sql, spec->descending ? " DESC" : " ASC");
    }
    if (spec->limit > 0) {
        sb_kw(&st.sql, " LIMIT ?");
        bind(&st, noodle_int64(spec->limit));
    }
    return run_built(db, txn, K_READ, &st, "select from", table, out, err);
}

int noodle_db_select_by_key(noodle_db *db, noodle_txn *txn, const char *table,
                            const char *key_column, noodle_value key, noodle_rows **out,
                            noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (out == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT, "select needs somewhere to put rows");
    *out = NULL;
    if (db == NULL) return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT, "select needs a db");
    noodle_db_cond cond = {.column = key_column, .op = NOODLE_DB_EQ, .value = key};
    size_t nbind = 0;
    int rc = check_name(table, true, "table", -1, err);
    if (rc == 0) rc = check_name(key_column, false, "key column", -1, err);
    if (rc == 0) rc = check_conds(&cond, 1, &nbind, err);
    if (rc != 0) return rc;
    stmt st;
    if ((rc = stmt_init(&st, nbind, 0, err)) != 0) return rc;
    sb_kw(&st.sql, "SELECT * FROM ");
    sb_ident(&st.sql, table);
    put_where(&st, &cond, 1);
    return run_built(db, txn, K_READ, &st, "select from", table, out, err);
}

/* The conditions of an UPDATE / DELETE: an array when announced (3002), at
 * least one unless every row is meant (3005). */
static int check_bounded(const noodle_db_cond *conds, size_t nconds, bool all, const char *what,
                         noodle_error *err) {
    if (nconds > 0 && conds == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT,
                          "%zu conditions announced but conds is NULL", nconds);
    if (nconds == 0 && !all)
        return NOODLE_ERR(err, NOODLE_E_DB_UNBOUNDED_WRITE,
                          "%s without a condition would change every row; use %s_all to mean "
                          "that",
                          what, what);
    return 0;
}

static int update(noodle_db *db, noodle_txn *txn, const char *table, const char *const *columns,
                  const noodle_value *values, size_t n, const noodle_db_cond *conds, size_t nconds,
                  bool all, int64_t *affected, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (affected != NULL) *affected = 0;
    size_t nbind = 0;
    int rc = check_assignments(db, columns, values, n, err);
    if (rc == 0) rc = check_bounded(conds, nconds, all, "noodle_db_update", err);
    if (rc == 0) rc = check_name(table, true, "table", -1, err);
    if (rc == 0) rc = check_column_names(columns, n, "column", err);
    if (rc == 0) rc = check_conds(conds, nconds, &nbind, err);
    if (rc == 0) rc = check_values(values, n, "value", err);
    if (rc != 0) return rc;
    stmt st;
    if ((rc = stmt_init(&st, n, nbind, err)) != 0) return rc;
    sb_kw(&st.sql, "UPDATE ");
    sb_ident(&st.sql, table);
    for (size_t i = 0; i < n; i++) {
        sb_kw(&st.sql, i == 0 ? " SET " : ", ");
        sb_ident(&st.sql, columns[i]);
        sb_kw(&st.sql, " = ?");
        bind(&st, values[i]);
    }
    put_where(&st, conds, nconds);
    return run_write(db, txn, &st, "update", table, affected, err);
}

int noodle_db_update(noodle_db *db, noodle_txn *txn, const char *table, const char *const *columns,
                     const noodle_value *values, size_t n, const noodle_db_cond *conds,
                     size_t nconds, int64_t *affected, noodle_error *err) {
    return update(db, txn, table, columns, values, n, conds, nconds, false, affected, err);
}

int noodle_db_update_all(noodle_db *db, noodle_txn *txn, const char *table,
                         const char *const *columns, const noodle_value *values, size_t n,
                         int64_t *affected, noodle_error *err) {
    return update(db, txn, table, columns, values, n, NULL, 0, true, affected, err);
}

static int delete_rows(noodle_db *db, noodle_txn *txn, const char *table,
                       const noodle_db_cond *conds, size_t nconds, bool all, int64_t *affected,
                       noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (affected != NULL) *affected = 0;
    if (db == NULL) return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT, "delete needs a db");
    size_t nbind = 0;
    int rc = check_bounded(conds, nconds, all, "noodle_db_delete", err);
    if (rc == 0) rc = check_name(table, true, "table", -1, err);
    if (rc == 0) rc = check_conds(conds, nconds, &nbind, err);
    if (rc != 0) return rc;
    stmt st;
    if ((rc = stmt_init(&st, nbind, 0, err)) != 0) return rc;
    sb_kw(&st.sql, "DELETE FROM ");
    sb_ident(&st.sql, table);
    put_where(&st, conds, nconds);
    return run_write(db, txn, &st, "delete from", table, affected, err);
}

int noodle_db_delete(noodle_db *db, noodle_txn *txn, const char *table, const noodle_db_cond *conds,
                     size_t nconds, int64_t *affected, noodle_error *err) {
    return delete_rows(db, txn, table, conds, nconds, false, affected, err);
}

int noodle_db_delete_all(noodle_db *db, noodle_txn *txn, const char *table, int64_t *affected,
                         noodle_error *err) {
    return delete_rows(db, txn, table, NULL, 0, true, affected, err);
}

static bool listed(const char *name, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, list[i]) == 0) return true;
    return false;
}

int noodle_db_upsert(noodle_db *db, noodle_txn *txn, const char *table, const char *const *columns,
                     const noodle_value *values, size_t n, const char *const *key_columns,
                     size_t nkeys, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    int rc = check_assignments(db, columns, values, n, err);
    if (rc != 0) return rc;
    if (nkeys == 0 || key_columns == NULL)
        return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT,
                          "upsert needs at least one key column (nkeys = %zu, key_columns %s)",
                          nkeys, key_columns ? "given" : "NULL");
    rc = check_name(table, true, "table", -1, err);
    if (rc == 0) rc = check_column_names(columns, n, "column", err);
    if (rc == 0) rc = check_column_names(key_columns, nkeys, "key column", err);
    if (rc != 0) return rc;
    bool every_column_a_key = true;
    for (size_t i = 0; i < nkeys; i++)
        if (!listed(key_columns[i], columns, n))
            return NOODLE_ERR(err, NOODLE_E_DB_INVALID_ARGUMENT,
                              "key column %zu (\"%s\") is not one of the upserted columns", i,
                              key_columns[i]);
    for (size_t i = 0; i < n; i++)
        if (!listed(columns[i], key_columns, nkeys)) every_column_a_key = false;
    if ((rc = check_values(values, n, "value", err)) != 0) return rc;
    stmt st;
    if ((rc = stmt_init(&st, n, 0, err)) != 0) return rc;
    put_insert(&st, table, columns, values, n);
    sb_kw(&st.sql, " ON CONFLICT (");
    put_columns(&st.sql, key_columns, nkeys);
    if (every_column_a_key) {
        sb_kw(&st.sql, ") DO NOTHING");
    } else {
        sb_kw(&st.sql, ") DO UPDATE SET ");
        bool first = true;
        for (size_t i = 0; i < n; i++) {
            if (listed(columns[i], key_columns, nkeys)) continue;
            if (!first) sb_kw(&st.sql, ", ");
            first = false;
            sb_ident(&st.sql, columns[i]);
            sb_kw(&st.sql, " = excluded.");
            sb_ident(&st.sql, columns[i]);
        }
    }
    return run_write(db, txn, &st, "upsert into", table, NULL, err);
}
