/* The SQLite backend: the embedded default.
 *
 * Design notes.
 * - One sqlite3 handle per connection, opened NOMUTEX (a connection is used by
 *   one thread at a time), extended result codes on, URI file names allowed.
 *   File databases run in WAL mode with synchronous=NORMAL and foreign keys on.
 * - Deadlines: every call stores its deadline in the handle. A busy handler
 *   waits for locks until the deadline (then the call fails with
 *   NOODLE_E_QUERY_BUSY, the connection stays usable), and a progress handler
 *   interrupts a statement that runs past it (NOODLE_E_BACKEND_TIMEOUT; like
 *   any deadline cut, that breaks the connection).
 * - Isolation: SQLite transactions are serializable whatever is asked, which
 *   is never weaker than the level requested. SERIALIZABLE begins IMMEDIATE
 *   (takes the write lock up front) so that two writers conflict at BEGIN
 *   (busy, retryable) rather than at their first write; the other levels
 *   begin DEFERRED. In WAL mode a deferred reader that later writes after
 *   another commit gets SQLITE_BUSY_SNAPSHOT, reported as a serialization
 *   failure (NOODLE_E_QUERY_SERIALIZATION), like PostgreSQL's 40001.
 * - One statement per execute: trailing statements are refused, as
 *   PostgreSQL's extended protocol does.
 * - Prepared-statement cache: each connection keeps up to
 *   NOODLE_SQLITE_STMT_CACHE_SIZE (64) statements, keyed by their exact SQL
 *   text, in a hash table threaded on a least-recently-used list (the keyed
 *   LRU of backends/stmt_lru.c, shared with the PostgreSQL backend; eviction
 *   and close finalize here). Invariants:
 *     1. A cached statement is reset after every call, and its bindings
 *        cleared when they hold copies of text or blobs, so it keeps no read
 *        snapshot, no lock and no parameter bytes once run() returns (every
 *        call binds every placeholder again).
 *     2. Only statements that prepared and passed the one-statement check
 *        are cached: a failed prepare, an empty text and refused stacked
 *        statements never enter it.
 *     3. The cache lives and dies with the handle: close finalizes every
 *        statement, so a replaced connection starts empty.
 *   Statements are prepared with SQLITE_PREPARE_PERSISTENT; schema changes
 *   need nothing from us, as sqlite3_step re-prepares an expired statement
 *   itself (SQLITE_SCHEMA is handled inside SQLite), which is why the result
 *   header (column count and names) is read after the first step. execute,
 *   begin, commit, rollback and validate use the cache; savepoint commands
 *   (their names would churn it), the connect pragmas and metrics do not.
 * - Errors keep SQLite's extended code in the detail: "SQLite 1555
 *   (SQLITE_CONSTRAINT_PRIMARYKEY)".
 * - Integrity: QUICK runs PRAGMA quick_check, FULL PRAGMA integrity_check;
 *   every line they report (but "ok" and the "*** in database main ***"
 *   heading) is a problem, and so is SQLITE_CORRUPT
 *   stopping the check part way (the file is too damaged to walk). A file
 *   that is not a database at all (SQLITE_NOTADB) is not checked: connect,
 *   or the check on an open connection, fails with 4014.
 */
#include <sqlite3.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/sqlite_internal.h"
#include "backends/stmt_lru.h"
#include "internal.h"
#include "noodle/backend.h"

/* One cached statement: its node threads it on the cache's bucket chain and
 * LRU list (backends/stmt_lru.h). */
typedef struct stmt_entry {
    noodle__lru_node node; /* first: entry_of() casts back */
    sqlite3_stmt *st;      /* owned */
    size_t len;
    char sql[]; /* the key, NUL-terminated */
} stmt_entry;

typedef struct stmt_cache {
    noodle__lru lru; /* cap: NOODLE_SQLITE_STMT_CACHE_SIZE; off (no buckets) at 0 */
    uint64_t hits, misses;
} stmt_cache;

typedef struct sqlite_conn {
    sqlite3 *db;
    const noodle_clock *clock;
    int64_t deadline; /* of the call in progress */
    int timed_out;    /* the progress handler interrupted the call */
    int in_txn;       /* begin succeeded and neither commit nor rollback has ended it */
    stmt_cache cache;
} sqlite_conn;

/* ---- error mapping ------------------------------------------------------- */

static const struct {
    int code;
    const char *name;
} ext_names[] = {
    {SQLITE_ERROR, "SQLITE_ERROR"},
    {SQLITE_BUSY, "SQLITE_BUSY"},
    {SQLITE_BUSY_SNAPSHOT, "SQLITE_BUSY_SNAPSHOT"},
    {SQLITE_BUSY_RECOVERY, "SQLITE_BUSY_RECOVERY"},
    {SQLITE_LOCKED, "SQLITE_LOCKED"},
    {SQLITE_LOCKED_SHAREDCACHE, "SQLITE_LOCKED_SHAREDCACHE"},
    {SQLITE_NOMEM, "SQLITE_NOMEM"},
    {SQLITE_READONLY, "SQLITE_READONLY"},
    {SQLITE_INTERRUPT, "SQLITE_INTERRUPT"},
    {SQLITE_IOERR, "SQLITE_IOERR"},
    {SQLITE_CORRUPT, "SQLITE_CORRUPT"},
    {SQLITE_FULL, "SQLITE_FULL"},
    {SQLITE_CANTOPEN, "SQLITE_CANTOPEN"},
    {SQLITE_CONSTRAINT, "SQLITE_CONSTRAINT"},
    {SQLITE_CONSTRAINT_CHECK, "SQLITE_CONSTRAINT_CHECK"},
    {SQLITE_CONSTRAINT_FOREIGNKEY, "SQLITE_CONSTRAINT_FOREIGNKEY"},
    {SQLITE_CONSTRAINT_NOTNULL, "SQLITE_CONSTRAINT_NOTNULL"},
    {SQLITE_CONSTRAINT_PRIMARYKEY, "SQLITE_CONSTRAINT_PRIMARYKEY"},
    {SQLITE_CONSTRAINT_UNIQUE, "SQLITE_CONSTRAINT_UNIQUE"},
    {SQLITE_MISMATCH, "SQLITE_MISMATCH"},
    {SQLITE_MISUSE, "SQLITE_MISUSE"},
    {SQLITE_RANGE, "SQLITE_RANGE"},
    {SQLITE_NOTADB, "SQLITE_NOTADB"},
    {SQLITE_TOOBIG, "SQLITE_TOOBIG"},
};

static const char *ext_name(int ext) {
    for (size_t i = 0; i < sizeof ext_names / sizeof ext_names[0]; i++)
        if (ext_names[i].code == ext) return ext_names[i].name;
    for (size_t i = 0; i < sizeof ext_names / sizeof ext_names[0]; i++)
        if (ext_names[i].code == (ext & 0xff)) return ext_names[i].name;
    return "SQLITE_?";
}

/* SQLITE_ERROR covers many causes; its message tells them apart. */
static int code_for_generic_error(const char *msg) {
    static const struct {
        const char *text;
        int code;
    } by_message[] = {
        {"syntax error", NOODLE_E_QUERY_SYNTAX},
        {"no such table", NOODLE_E_QUERY_SYNTAX},
        {"no such column", NOODLE_E_QUERY_SYNTAX},
        {"no such function", NOODLE_E_QUERY_SYNTAX},
        {"incomplete input", NOODLE_E_QUERY_SYNTAX},
        {"unrecognized token", NOODLE_E_QUERY_SYNTAX},
        {"already exists", NOODLE_E_QUERY_SYNTAX},
        {"ambiguous column", NOODLE_E_QUERY_SYNTAX},
        {"has no column named", NOODLE_E_QUERY_SYNTAX},
        {"no such savepoint", NOODLE_E_QUERY_INVALID_SAVEPOINT},
        {"within a transaction", NOODLE_E_QUERY_TXN_STATE},
        {"no transaction is active", NOODLE_E_QUERY_TXN_STATE},
        {"integer overflow", NOODLE_E_QUERY_DATA},
        {"too big", NOODLE_E_QUERY_DATA},
    };
    for (size_t i = 0; msg != NULL && i < sizeof by_message / sizeof by_message[0]; i++)
        if (strstr(msg, by_message[i].text) != NULL) return by_message[i].code;
    return NOODLE_E_QUERY_FAILED;
}

static int code_for(const sqlite_conn *h, int ext, const char *msg) {
    if (ext == SQLITE_BUSY_SNAPSHOT) return NOODLE_E_QUERY_SERIALIZATION;
    switch (ext & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return NOODLE_E_QUERY_BUSY;
    case SQLITE_CONSTRAINT: return NOODLE_E_QUERY_CONSTRAINT;
    case SQLITE_ERROR: return code_for_generic_error(msg);
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG: return NOODLE_E_QUERY_DATA;
    case SQLITE_READONLY: return NOODLE_E_QUERY_READ_ONLY;
    case SQLITE_NOMEM: return NOODLE_E_BACKEND_NO_MEMORY;
    case SQLITE_INTERRUPT: return h->timed_out ? NOODLE_E_BACKEND_TIMEOUT : NOODLE_E_QUERY_CANCELED;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT: return NOODLE_E_INVALID_DATABASE;
    case SQLITE_CANTOPEN: return NOODLE_E_CONNECT_FAILED;
    default: return NOODLE_E_QUERY_FAILED;
    }
}

/* Report the handle's current error for the step `what`. */
static int fail(sqlite_conn *h, int rc, const char *what, noodle_error *err) {
    int ext = h->db ? sqlite3_extended_errcode(h->db) : rc;
    if ((ext & 0xff) != (rc & 0xff)) ext = rc; /* the handle's code is stale */
    const char *msg = h->db ? sqlite3_errmsg(h->db) : sqlite3_errstr(rc);
    int code = code_for(h, ext, msg);
    if (code == NOODLE_E_BACKEND_TIMEOUT)
        NOODLE_ERR(err, code, "%s: interrupted at its deadline", what);
    else if (code == NOODLE_E_QUERY_BUSY)
        NOODLE_ERR(err, code, "%s: %s (gave up waiting at the deadline)", what, msg);
    else
        NOODLE_ERR(err, code, "%s: %s", what, msg);
    noodle_error_detail(err, "SQLite %d (%s)", ext, ext_name(ext));
    return code;
}

/* ---- deadlines ------------------------------------------------------------ */

static int busy_handler(void *arg, int count) {
    sqlite_conn *h = arg;
    int64_t left = noodle_deadline_remaining(h->clock, h->deadline);
    if (left <= 0) return 0;
    /* 1, 2, 4 .. 32 ms, never past the deadline */
    int64_t step = NOODLE_MS(count < 5 ? 1 << count : 32);
    if (step > left) step = left;
    noodle_clock_sleep_until(h->clock, noodle_clock_now(h->clock) + step);
    return 1;
}

static int progress_handler(void *arg) {
    sqlite_conn *h = arg;
    if (!noodle__deadline_passed(h->clock, h->deadline)) return 0;
    h->timed_out = 1;
    return 1;
}

/* Start a call: record its deadline; fail at once when it has passed. */
static int start_call(sqlite_conn *h, int64_t deadline, const char *what, noodle_error *err) {
    h->deadline = deadline;
    h->timed_out = 0;
    if (noodle__deadline_passed(h->clock, deadline))
        return NOODLE_ERR(err, NOODLE_E_BACKEND_TIMEOUT, "%s: deadline passed before the call",
                          what);
    return 0;
}

/* ---- the prepared-statement cache ------------------------------------------ */

static stmt_entry *entry_of(noodle__lru_node *n) {
    return (stmt_entry *)(void *)n;
}

/* A hash of the len bytes at sql (a cache hit must cost little next to the
 * statement it saves preparing). */
static uint64_t sql_hash(const char *sql, size_t len) {
    return noodle__lru_hash(NOODLE__LRU_SEED(len), sql, len);
}

static int cache_open(stmt_cache *c) {
    memset(c, 0, sizeof *c);
    size_t cap = NOODLE_SQLITE_STMT_CACHE_SIZE > 0 ? (size_t)NOODLE_SQLITE_STMT_CACHE_SIZE : 0;
    return noodle__lru_open(&c->lru, cap);
}

/* The key cache_find looks for. */
typedef struct sql_key {
    const char *sql;
    size_t len;
} sql_key;

static bool entry_matches(const noodle__lru_node *n, const void *key) {
    const stmt_entry *e = (const stmt_entry *)(const void *)n;
    const sql_key *k = key;
    return e->len == k->len && memcmp(e->sql, k->sql, k->len) == 0;
}

/* The entry for sql (len bytes, hashed to hash), made the most recent; NULL
 * when the cache does not hold it. */
static stmt_entry *cache_find(stmt_cache *c, const char *sql, size_t len, uint64_t hash) {
    const sql_key key = {sql, len};
    noodle__lru_node *n = noodle__lru_find(&c->lru, hash, entry_matches, &key);
    return n != NULL ? entry_of(n) : NULL;
}

/* Free an entry taken off the cache (evicted or cleared), finalizing its
 * statement. */
static void entry_free(void *ctx, noodle__lru_node *n) {
    (void)ctx;
    stmt_entry *e = entry_of(n);
    sqlite3_finalize(e->st);
    free(e);
}

/* Add st (prepared from sql) as the most recent entry, evicting the least
 * recently used one when the cache is full. Takes st on success; returns
 * NULL (st stays the caller's) when out of memory. */
static stmt_entry *cache_add(stmt_cache *c, const char *sql, size_t len, uint64_t hash,
                             sqlite3_stmt *st) {
    stmt_entry *e = malloc(sizeof *e + len + 1);
    if (e == NULL) return NULL;
    e->st = st;
    e->node.hash = hash;
    e->len = len;
    memcpy(e->sql, sql, len + 1);
    noodle__lru_insert(&c->lru, &e->node, entry_free, NULL);
    return e;
}

static void cache_close(stmt_cache *c) {
    noodle__lru_close(&c->lru, entry_free, NULL);
}

void noodle__sqlite_stmt_cache_stats(void *handle, uint64_t *hits, uint64_t *misses, size_t *size) {
    const sqlite_conn *h = handle;
    if (hits) *hits = h->cache.hits;
    if (misses) *misses = h->cache.misses;
    if (size) *size = h->cache.lru.size;
}

/* ---- statements ------------------------------------------------------------ */

/* True when s holds only white space, semicolons and comments. */
static int only_trivia(const char *s) {
    while (*s) {
        if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == ';') {
            s++;
        } else if (s[0] == '-' && s[1] == '-') {
            s += strcspn(s, "\n");
        } else if (s[0] == '/' && s[1] == '*') {
            const char *e = strstr(s + 2, "*/");
            if (e == NULL) return 1; /* an unterminated comment is trivia to SQLite too */
            s = e + 2;
        } else {
            return 0;
        }
    }
    return 1;
}

static int bind_params(sqlite_conn *h, sqlite3_stmt *st, const noodle_value *params, size_t n,
                       noodle_error *err) {
    int want = sqlite3_bind_parameter_count(st);
    if ((size_t)want != n)
        return NOODLE_ERR(err, NOODLE_E_QUERY_PARAM_COUNT,
                          "statement has %d placeholders but %zu parameters were given", want, n);
    for (size_t i = 0; i < n; i++) {
        const noodle_value *v = &params[i];
        int idx = (int)i + 1, rc;
        switch (v->type) {
        case NOODLE_TYPE_NULL: rc = sqlite3_bind_null(st, idx); break;
        case NOODLE_TYPE_INT64: rc = sqlite3_bind_int64(st, idx, v->v.i); break;
        case NOODLE_TYPE_DOUBLE: rc = sqlite3_bind_double(st, idx, v->v.d); break;
        case NOODLE_TYPE_TEXT:
            rc = sqlite3_bind_text64(st, idx, v->v.bytes.ptr, v->v.bytes.len, SQLITE_TRANSIENT,
                                     SQLITE_UTF8);
            break;
        case NOODLE_TYPE_BLOB:
            rc = sqlite3_bind_blob64(st, idx, v->v.bytes.ptr, v->v.bytes.len, SQLITE_TRANSIENT);
            break;
        default:
            return NOODLE_ERR(err, NOODLE_E_QUERY_PARAM_INVALID, "parameter %zu has invalid type %d",
                              i + 1, (int)v->type);
        }
        if (rc != SQLITE_OK) return fail(h, rc, "bind", err);
    }
    return 0;
}

static int read_row(sqlite3_stmt *st, noodle_rows *r, noodle_value *cells, int ncols,
                    noodle_error *err) {
    for (int i = 0; i < ncols; i++) {
        switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER: cells[i] = noodle_int64(sqlite3_column_int64(st, i)); break;
        case SQLITE_FLOAT: cells[i] = noodle_double(sqlite3_column_double(st, i)); break;
        case SQLITE_TEXT: {
            const unsigned char *t = sqlite3_column_text(st, i);
            cells[i] = noodle_text_n(t ? (const char *)t : "", (size_t)sqlite3_column_bytes(st, i));
            break;
        }
        case SQLITE_BLOB: {
            const void *b = sqlite3_column_blob(st, i);
            cells[i] = noodle_blob(b, (size_t)sqlite3_column_bytes(st, i));
            break;
        }
        default: cells[i] = noodle_null(); break;
        }
    }
    return noodle_rows_append(r, cells, err);
}

/* True when binding params made SQLite copy bytes (text or blob) that
 * clearing the bindings releases; numbers and NULLs hold nothing. */
static bool holds_copies(const noodle_value *params, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (params[i].type == NOODLE_TYPE_TEXT || params[i].type == NOODLE_TYPE_BLOB) return true;
    return false;
}

/* The result header of st: *out gets a result with st's columns, *cells room
 * for one row (small when it is large enough, else allocated). */
static int start_rows(sqlite3_stmt *st, int ncols, noodle_value *small, size_t nsmall,
                      noodle_rows **out, noodle_value **cells, noodle_error *err) {
    int rc = noodle_rows_new((size_t)ncols, out, err);
    for (int i = 0; i < ncols && rc == 0; i++)
        rc = noodle_rows_set_column_name(*out, (size_t)i, sqlite3_column_name(st, i), err);
    if (rc != 0) return rc;
    if ((size_t)ncols <= nsmall)
        *cells = small;
    else if ((*cells = calloc((size_t)ncols, sizeof **cells)) == NULL)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "out of memory");
    return 0;
}

/* Run sql with params bound; collect rows into *out when out is not NULL.
 * With cache, the statement comes from (or goes into) the connection's
 * statement cache; otherwise it is prepared for this call only. */
static int run(sqlite_conn *h, const char *what, const char *sql, bool cache,
               const noodle_value *params, size_t nparams, int64_t deadline, noodle_rows **out,
               noodle_error *err) {
    int rc = start_call(h, deadline, what, err);
    if (rc != 0) return rc;
    stmt_cache *c = &h->cache;
    stmt_entry *e = NULL;
    sqlite3_stmt *st = NULL;
    size_t len = 0;
    uint64_t hash = 0;
    cache = cache && c->lru.buckets != NULL;
    if (cache) {
        len = strlen(sql);
        hash = sql_hash(sql, len);
        if ((e = cache_find(c, sql, len, hash)) != NULL) {
            c->hits++;
            st = e->st;
        } else {
            c->misses++;
        }
    }
    if (st == NULL) {
        const char *tail = NULL;
        /* the length with the terminator spares SQLite a copy of the text */
        int nbyte = cache && len < (size_t)INT_MAX ? (int)len + 1 : -1;
        unsigned flags = cache ? SQLITE_PREPARE_PERSISTENT : 0;
        int src = sqlite3_prepare_v3(h->db, sql, nbyte, flags, &st, &tail);
        if (src != SQLITE_OK) return fail(h, src, what, err);
        if (st == NULL) { /* empty statement */
            if (out == NULL) return 0;
            return noodle_rows_new(0, out, err);
        }
        if (tail != NULL && !only_trivia(tail)) {
            sqlite3_finalize(st);
            return NOODLE_ERR(err, NOODLE_E_QUERY_UNSUPPORTED,
                              "%s: more than one statement in one call (send them one at a time)",
                              what);
        }
        if (cache) e = cache_add(c, sql, len, hash, st); /* NULL (no memory): run it uncached */
    }
    noodle_rows *r = NULL;
    noodle_value small_row[16], *cells = NULL;
    int ncols = 0, src;
    rc = bind_params(h, st, params, nparams, err);
    if (rc != 0) goto done;
    sqlite3_int64 changes_before = sqlite3_total_changes64(h->db);
    for (;;) {
        src = sqlite3_step(st);
        if (src != SQLITE_ROW && src != SQLITE_DONE) {
            rc = fail(h, src, what, err);
            goto done;
        }
        /* the header is read after the first step: a statement that SQLite
         * re-prepared after a schema change may have other columns now */
        if (out != NULL && r == NULL) {
            ncols = sqlite3_column_count(st);
            rc = start_rows(st, ncols, small_row, sizeof small_row / sizeof small_row[0], &r,
                            &cells, err);
            if (rc != 0) goto done;
        }
        if (src == SQLITE_DONE) break;
        if (r != NULL && (rc = read_row(st, r, cells, ncols, err)) != 0) goto done;
    }
    /* rows this statement changed: sqlite3_changes64 excludes trigger and
     * foreign-key actions but keeps the last DML's count across DDL, so it
     * is only read when the statement changed something */
    if (r != NULL && !sqlite3_stmt_readonly(st) &&
        sqlite3_total_changes64(h->db) != changes_before)
        noodle_rows_set_affected(r, sqlite3_changes64(h->db));
done:
    if (cells != small_row) free(cells);
    if (e != NULL) { /* invariant 1: nothing held between calls */
        sqlite3_reset(st);
        if (holds_copies(params, nparams)) sqlite3_clear_bindings(st);
    } else {
        sqlite3_finalize(st);
    }
    if (rc != 0) {
        noodle_rows_free(r);
        return rc;
    }
    if (out != NULL) *out = r;
    return 0;
}

/* ---- operations -------------------------------------------------------------- */

static void sqlite_close(void *handle) {
    sqlite_conn *h = handle;
    if (h == NULL) return;
    cache_close(&h->cache); /* the only statements left open are the cached ones */
    sqlite3_close_v2(h->db);
    free(h);
}

static int sqlite_connect(const noodle_connect_params *p, void **handle, noodle_error *err) {
    *handle = NULL;
    sqlite_conn *h = calloc(1, sizeof *h);
    if (h == NULL) return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "out of memory");
    h->clock = p->clock ? p->clock : noodle_clock_real();
    if (cache_open(&h->cache) != 0) {
        free(h);
        return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "out of memory");
    }
    const char *path = p->url[0] ? p->url : "noodle.db";
    int rc = sqlite3_open_v2(path, &h->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI |
                                 SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        fail(h, rc, "connect", err);
        if (err) err->code = NOODLE_E_CONNECT_FAILED;
        rc = NOODLE_E_CONNECT_FAILED;
        goto fail_open;
    }
    sqlite3_extended_result_codes(h->db, 1);
    sqlite3_busy_handler(h->db, busy_handler, h);
    sqlite3_progress_handler(h->db, 1000, progress_handler, h);
    const char *file = sqlite3_db_filename(h->db, "main");
    const int in_memory = file == NULL || file[0] == '\0';
    if (!in_memory) {
        noodle_rows *mode = NULL;
        rc = run(h, "connect: PRAGMA journal_mode=WAL", "PRAGMA journal_mode=WAL", false, NULL, 0,
                 p->deadline, &mode, err);
        noodle_rows_free(mode);
        if (rc == 0)
            rc = run(h, "connect: PRAGMA synchronous", "PRAGMA synchronous=NORMAL", false, NULL, 0,
                     p->deadline, NULL, err);
    } else {
        rc = start_call(h, p->deadline, "connect", err);
    }
    if (rc == 0)
        rc = run(h, "connect: PRAGMA foreign_keys", "PRAGMA foreign_keys=ON", false, NULL, 0,
                 p->deadline, NULL, err);
    if (rc != 0) {
        if (rc == NOODLE_E_BACKEND_TIMEOUT && err) err->code = rc = NOODLE_E_CONNECT_TIMEOUT;
        goto fail_open;
    }
    *handle = h;
    return 0;
fail_open:
    cache_close(&h->cache);
    sqlite3_close_v2(h->db);
    free(h);
    return rc;
}

static int sqlite_validate(void *handle, int64_t deadline, noodle_error *err) {
    /* reads the database header: a file that stopped being a database fails */
    noodle_rows *r = NULL;
    int rc = run(handle, "validate", "PRAGMA schema_version", true, NULL, 0, deadline, &r, err);
    noodle_rows_free(r);
    return rc;
}

/* SQLite rolls a whole transaction back by itself after some errors
 * (SQLITE_FULL, IOERR, NOMEM, ON CONFLICT ROLLBACK, RAISE(ROLLBACK)). From
 * then on the handle is in autocommit mode; statements must not silently
 * commit one by one as if the transaction were still open. */
static bool engine_rolled_back(const sqlite_conn *h) {
    return h->in_txn && sqlite3_get_autocommit(h->db);
}

static int rolled_back_error(const char *what, noodle_error *err) {
    return NOODLE_ERR(err, NOODLE_E_QUERY_TXN_STATE,
                      "%s: the transaction was rolled back by SQLite after an earlier error; "
                      "roll back and start again",
                      what);
}

/* A transaction opened with begin must be open (and not rolled back). */
static int need_txn(sqlite_conn *h, const char *what, noodle_error *err) {
    if (engine_rolled_back(h)) return rolled_back_error(what, err);
    if (!sqlite3_get_autocommit(h->db)) return 0;
    return NOODLE_ERR(err, NOODLE_E_QUERY_TXN_STATE, "%s: no transaction is open", what);
}

static int sqlite_execute(void *handle, const char *sql, const noodle_value *params, size_t nparams,
                          int64_t deadline, noodle_rows **out, noodle_error *err) {
    sqlite_conn *h = handle;
    if (engine_rolled_back(h)) return rolled_back_error("execute", err);
    int rc = run(h, "execute", sql, true, params, nparams, deadline, out, err);
    /* A statement that succeeded and left autocommit on was a COMMIT, END or
     * ROLLBACK sent as SQL: the transaction begin opened is over, and not
     * by an engine rollback (those come with an error). */
    if (rc == 0 && sqlite3_get_autocommit(h->db)) h->in_txn = 0;
    return rc;
}

static int sqlite_begin(void *handle, noodle_isolation iso, int64_t deadline, noodle_error *err) {
    sqlite_conn *h = handle;
    if (engine_rolled_back(h)) return rolled_back_error("begin", err);
    if (!sqlite3_get_autocommit(h->db))
        return NOODLE_ERR(err, NOODLE_E_QUERY_TXN_STATE, "begin: a transaction is already open");
    if (iso < NOODLE_ISOLATION_DEFAULT || iso > NOODLE_ISOLATION_SERIALIZABLE)
        return NOODLE_ERR(err, NOODLE_E_QUERY_ISOLATION_UNSUPPORTED, "begin: unknown isolation %d",
                          (int)iso);
    const char *sql = iso == NOODLE_ISOLATION_SERIALIZABLE ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED";
    int rc = run(h, "begin", sql, true, NULL, 0, deadline, NULL, err);
    if (rc == 0) h->in_txn = 1;
    return rc;
}

static int sqlite_commit(void *handle, int64_t deadline, noodle_error *err) {
    sqlite_conn *h = handle;
    int rc = need_txn(h, "commit", err);
    if (rc == 0) rc = run(h, "commit", "COMMIT", true, NULL, 0, deadline, NULL, err);
    /* the transaction is over unless COMMIT failed with it still open
     * (busy: the caller may retry or roll back) */
    if (sqlite3_get_autocommit(h->db)) h->in_txn = 0;
    return rc;
}

static int sqlite_rollback(void *handle, int64_t deadline, noodle_error *err) {
    sqlite_conn *h = handle;
    if (engine_rolled_back(h)) { /* already rolled back by the engine: done */
        h->in_txn = 0;
        return 0;
    }
    int rc = need_txn(h, "rollback", err);
    if (rc == 0) rc = run(h, "rollback", "ROLLBACK", true, NULL, 0, deadline, NULL, err);
    if (sqlite3_get_autocommit(h->db)) h->in_txn = 0;
    return rc;
}

/* verb + quoted name, assembled from the fixed verb and the validated name
 * (no formatting: STD-PARAM); the name was validated by the connection
 * layer and is checked again here (this backend may be called directly). */
static int savepoint_stmt(void *handle, const char *verb, const char *name, int64_t deadline,
                          noodle_error *err) {
    if (!noodle_identifier_valid(name))
        return NOODLE_ERR(err, NOODLE_E_QUERY_INVALID_SAVEPOINT, "%s: invalid savepoint name", verb);
    int rc = need_txn(handle, verb, err);
    if (rc != 0) return rc;
    char sql[96]; /* the longest verb (21) + the longest name (63) + 4 */
    size_t v = strlen(verb), n = strlen(name);
    memcpy(sql, verb, v);
    memcpy(sql + v, " \"", 2);
    memcpy(sql + v + 2, name, n);
    memcpy(sql + v + 2 + n, "\"", 2);
    return run(handle, verb, sql, false, NULL, 0, deadline, NULL, err);
}

static int sqlite_savepoint(void *h, const char *name, int64_t deadline, noodle_error *err) {
    return savepoint_stmt(h, "SAVEPOINT", name, deadline, err);
}
static int sqlite_release(void *h, const char *name, int64_t deadline, noodle_error *err) {
    return savepoint_stmt(h, "RELEASE SAVEPOINT", name, deadline, err);
}
static int sqlite_rollback_to(void *h, const char *name, int64_t deadline, noodle_error *err) {
    return savepoint_stmt(h, "ROLLBACK TO SAVEPOINT", name, deadline, err);
}

static int sqlite_role(void *handle, int64_t deadline, noodle_role *out, noodle_error *err) {
    sqlite_conn *h = handle;
    int rc = start_call(h, deadline, "role", err);
    if (rc != 0) return rc;
    *out = sqlite3_db_readonly(h->db, "main") == 1 ? NOODLE_ROLE_READ_ONLY : NOODLE_ROLE_PRIMARY;
    return 0;
}

static int pragma_int(sqlite_conn *h, const char *sql, int64_t deadline, int64_t *out,
                      noodle_error *err) {
    noodle_rows *r = NULL;
    int rc = run(h, "metrics", sql, false, NULL, 0, deadline, &r, err);
    if (rc == 0) {
        const noodle_value *v = noodle_rows_get(r, 0, 0);
        *out = v->type == NOODLE_TYPE_INT64 ? v->v.i : -1;
    }
    noodle_rows_free(r);
    return rc;
}

static int sqlite_metrics(void *handle, int64_t deadline, noodle_server_metrics *out,
                          noodle_error *err) {
    sqlite_conn *h = handle;
    int64_t pages = -1, page_size = -1;
    /* no replication and no archiver: standbys[] stays empty, their counts
     * and every archive_* field -1 */
    noodle__metrics_unknown(out);
    int rc = pragma_int(h, "PRAGMA page_count", deadline, &pages, err);
    if (rc == 0) rc = pragma_int(h, "PRAGMA page_size", deadline, &page_size, err);
    if (rc == 0) rc = sqlite_role(h, deadline, &out->role, err);
    if (rc != 0) return rc;
    out->database_size_bytes = pages >= 0 && page_size > 0 ? pages * page_size : -1;
    snprintf(out->server_version, sizeof out->server_version, "SQLite %s", sqlite3_libversion());
    const char *file = sqlite3_db_filename(h->db, "main");
    noodle__strlcpy(out->data_path, file ? file : "", sizeof out->data_path);
    return 0;
}

/* ---- integrity ------------------------------------------------------------------ */

/* A row of a check pragma: "ok", or one problem per line, the first row's
 * lines headed by "*** in database main ***" (not a problem itself). */
static void note_row(noodle_integrity_result *out, const char *text) {
    if (strcmp(text, "ok") == 0) return;
    for (const char *line = text; *line != '\0';) {
        size_t len = strcspn(line, "\n");
        if (len > 0 && strncmp(line, "*** in database ", 16) != 0)
            noodle__integrity_problem(out, line, len);
        line += len + (line[len] == '\n');
    }
}

/* SQLITE_CORRUPT while the check reads the file: damage bad enough to stop
 * the check itself (a malformed schema, a page that cannot be parsed) is a
 * finding, not a failure to check. Anything else (SQLITE_NOTADB: the file is
 * not a database at all, 4014; I/O errors, the deadline) is a failure. */
static bool check_stopped_by_damage(int src) { return (src & 0xff) == SQLITE_CORRUPT; }

/* Run the check pragma and count the problems it reports (SQLite stops at
 * 100). Not through run(): rows are read one at a time, and a corrupt page
 * that stops the check counts as one more problem. */
static int run_check(sqlite_conn *h, const char *pragma, noodle_integrity_result *out,
                     noodle_error *err) {
    sqlite3_stmt *st = NULL;
    out->problems = 0;
    int src = sqlite3_prepare_v2(h->db, pragma, -1, &st, NULL);
    while (src == SQLITE_OK || src == SQLITE_ROW) {
        if ((src = sqlite3_step(st)) != SQLITE_ROW) break;
        const unsigned char *t = sqlite3_column_text(st, 0);
        note_row(out, t ? (const char *)t : "(a problem without text)");
    }
    int rc = 0;
    if (src != SQLITE_DONE) {
        const char *msg = sqlite3_errmsg(h->db);
        if (check_stopped_by_damage(src)) noodle__integrity_problem(out, msg, strlen(msg));
        else rc = fail(h, src, "integrity", err);
    }
    sqlite3_finalize(st);
    return rc;
}

static int sqlite_integrity(void *handle, noodle_integrity_level level, int64_t deadline,
                            noodle_integrity_result *out, noodle_error *err) {
    sqlite_conn *h = handle;
    const char *pragma =
        level == NOODLE_INTEGRITY_FULL ? "PRAGMA integrity_check" : "PRAGMA quick_check";
    int rc = start_call(h, deadline, "integrity", err);
    if (rc != 0) return rc;
    out->checksum_failures = -1; /* SQLite pages carry no checksums */
    out->first_problem[0] = '\0';
    noodle__strlcpy(out->method, pragma, sizeof out->method);
    return run_check(h, pragma, out, err);
}

static bool sqlite_in_transaction(void *handle) {
    sqlite_conn *h = handle;
    return !sqlite3_get_autocommit(h->db);
}

static const noodle_backend_ops sqlite_ops = {
    .abi_version = NOODLE_BACKEND_ABI_VERSION,
    .struct_size = sizeof(noodle_backend_ops),
    .name = "sqlite",
    .connect = sqlite_connect,
    .close = sqlite_close,
    .validate = sqlite_validate,
    .execute = sqlite_execute,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .savepoint = sqlite_savepoint,
    .release = sqlite_release,
    .rollback_to = sqlite_rollback_to,
    .role = sqlite_role,
    .metrics = sqlite_metrics,
    .in_transaction = sqlite_in_transaction,
    .integrity = sqlite_integrity,
};

const noodle_backend_ops *noodle_backend_sqlite(void) { return &sqlite_ops; }
