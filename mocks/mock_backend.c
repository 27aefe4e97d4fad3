/* The mock backend: simulated database nodes for fault injection and speed
 * (contract: mocks/noodle_mock.h; user guide: docs/mock-backend.md).
 *
 * Design notes.
 *
 * A process-wide registry holds NODES by name. A node holds tables (rows kept
 * sorted by key), a role, fault settings, counters and the list of its open
 * SESSIONS (one per mock connection). Statements are parsed from a small SQL
 * subset into a `stmt` without any lock, then executed under the node mutex.
 *
 * Writes never touch the tables directly: a statement turns into row-level
 * operations (insert / update / delete of one key) appended to a WRITE SET.
 * Inside a transaction that is the session's write set, which the session's
 * own reads see through a VIEW (committed rows with the write set applied on
 * top) and other sessions do not see at all. In autocommit a statement gets a
 * write set of its own that is committed before the node mutex is released,
 * so every autocommit statement is atomic. A commit applies a write set under
 * the node mutex with an undo log: all of it, or (on a conflict) none of it.
 * Every commit takes the next commit sequence number; rows carry the number of
 * the commit that wrote them (their version). REPEATABLE READ and SERIALIZABLE
 * transactions remember the version of every row they read or wrote (0 for a
 * key they saw absent) and fail their commit with 40001 when one of those
 * changed, or was already newer than the transaction's start.
 *
 * Invariants.
 *  1. Lock order: registry_mu, then the mutex of ONE node; never two nodes.
 *     registry_mu guards the node list and every node's refs; a node's mu
 *     guards everything else in the node, including the state of its sessions.
 *  2. Nothing sleeps while holding a node mutex, except the hang wait, which
 *     releases it in the condition wait. Latency sleeps hold no lock.
 *  3. The committed rows of a table are sorted by key; keys are unique and
 *     never NULL (the key is the single-column primary key or a hidden
 *     rowid); no two committed rows agree on every column of a UNIQUE / other
 *     PRIMARY KEY constraint unless one of those cells is NULL; every committed
 *     row has a version > 0, every row pending in a write set has version 0.
 *  4. A session's write set, savepoints and read set are touched only by the
 *     thread using the connection; its state only under the node mutex (other
 *     threads kill sessions).
 *  5. A node is freed only when it is out of the registry (NODE_DROPPED) and
 *     refs is 0: every session and every connect in progress holds a ref.
 *  6. A statement adds all of its operations to the write set or none of them
 *     (the write set is truncated back on failure).
 *
 * Session states (set_session_state asserts the transitions):
 *
 *     connect --> IDLE --begin--> TXN --commit / rollback / failed commit--> IDLE
 *                  |               |
 *                  +-------+-------+
 *                          | kill, crash, reset, fatal fault, deadline cut, ack lost
 *                          v
 *                         DEAD  (every call fails with 4003; only close is useful)
 *
 * Node states: UP <--> CRASHED (crash / restart); UP or CRASHED --> DROPPED
 * (reset: out of the registry, freed when the last reference goes).
 */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "noodle_mock.h"

#define MAX_NAME 64    /* identifiers and node names: 63 bytes + NUL */
#define MAX_COLS 64    /* columns of a table, items of a SELECT, assignments */
#define MAX_CONDS 32   /* terms of a WHERE */
#define MAX_KEY_COLS 8 /* columns of a composite PRIMARY KEY / UNIQUE constraint */
#define MAX_UNIQUES 16 /* PRIMARY KEY / UNIQUE constraints of a table */
#define DEFAULT_SEED UINT64_C(0x6e6f6f646c65) /* "noodle" */

/* ---- stored values ------------------------------------------------------------------- */

/* A stored cell is a noodle_value whose TEXT / BLOB bytes are owned (malloc'd)
 * by the row, write-set operation or read-set entry that holds it. */
static void cell_free(noodle_value *c) {
    if (c->type == NOODLE_TYPE_TEXT || c->type == NOODLE_TYPE_BLOB) free((void *)c->v.bytes.ptr);
    c->type = NOODLE_TYPE_NULL;
}

/* Deep copy of src into dst (dst owns the bytes). Returns 0 or -1 (no memory). */
static int cell_dup(noodle_value *dst, const noodle_value *src) {
    *dst = *src;
    if (src->type != NOODLE_TYPE_TEXT && src->type != NOODLE_TYPE_BLOB) return 0;
    size_t len = src->v.bytes.len;
    void *p = malloc(len ? len : 1);
    if (p == NULL) {
        dst->type = NOODLE_TYPE_NULL;
        return -1;
    }
    if (len > 0) memcpy(p, src->v.bytes.ptr, len);
    dst->v.bytes.ptr = p;
    return 0;
}

static int cmp_double(double a, double b) {
    if (isnan(a) || isnan(b)) return isnan(a) - isnan(b); /* NaN sorts last, as in PostgreSQL */
    return a < b ? -1 : a > b;
}

/* Order of two values: NULL after everything, then by type (values of one
 * column share a type; int64 and double compare numerically). */
static int value_cmp(const noodle_value *a, const noodle_value *b) {
    if (a->type == NOODLE_TYPE_NULL || b->type == NOODLE_TYPE_NULL)
        return (a->type == NOODLE_TYPE_NULL) - (b->type == NOODLE_TYPE_NULL);
    if (a->type == NOODLE_TYPE_INT64 && b->type == NOODLE_TYPE_INT64)
        return a->v.i < b->v.i ? -1 : a->v.i > b->v.i;
    if ((a->type == NOODLE_TYPE_INT64 || a->type == NOODLE_TYPE_DOUBLE) &&
        (b->type == NOODLE_TYPE_INT64 || b->type == NOODLE_TYPE_DOUBLE))
        return cmp_double(a->type == NOODLE_TYPE_INT64 ? (double)a->v.i : a->v.d,
                          b->type == NOODLE_TYPE_INT64 ? (double)b->v.i : b->v.d);
    if (a->type != b->type) return a->type < b->type ? -1 : 1;
    size_t la = a->v.bytes.len, lb = b->v.bytes.len;
    int c = memcmp(a->v.bytes.ptr, b->v.bytes.ptr, la < lb ? la : lb);
    if (c != 0) return c < 0 ? -1 : 1;
    return la < lb ? -1 : la > lb;
}

/* Bytes a value takes in storage: a type byte plus the payload. */
static int64_t value_size(const noodle_value *v) {
    switch (v->type) {
    case NOODLE_TYPE_INT64:
    case NOODLE_TYPE_DOUBLE: return 9;
    case NOODLE_TYPE_TEXT:
    case NOODLE_TYPE_BLOB: return 1 + (int64_t)v->v.bytes.len;
    case NOODLE_TYPE_NULL: break;
    }
    return 1;
}

/* ---- rows ---------------------------------------------------------------------------- */

typedef struct row {
    uint64_t version; /* the commit that wrote it; 0 while pending in a write set */
    size_t ncells;
    noodle_value cells[]; /* owned */
} row;

/* A row of ncells NULLs, or NULL (no memory). Free with row_free. */
static row *row_new(size_t ncells) {
    row *r = calloc(1, sizeof *r + ncells * sizeof r->cells[0]);
    if (r != NULL) r->ncells = ncells; /* calloc: every cell is NOODLE_TYPE_NULL (0) */
    return r;
}

static void row_free(row *r) {
    if (r == NULL) return;
    for (size_t i = 0; i < r->ncells; i++) cell_free(&r->cells[i]);
    free(r);
}

/* Deep copy (version 0: pending), or NULL (no memory). */
static row *row_dup(const row *src) {
    row *r = row_new(src->ncells);
    if (r == NULL) return NULL;
    for (size_t i = 0; i < src->ncells; i++) {
        if (cell_dup(&r->cells[i], &src->cells[i]) != 0) {
            row_free(r);
            return NULL;
        }
    }
    return r;
}

/* Binary search of rows[0..n) (sorted by column keycol) for key: true when
 * found; *idx is its index or where it would be inserted. */
static bool rows_find(row *const *rows, size_t n, size_t keycol, const noodle_value *key,
                      size_t *idx) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = value_cmp(&rows[mid]->cells[keycol], key);
        if (c == 0) {
            *idx = mid;
            return true;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    *idx = lo;
    return false;
}

/* Insert r at idx of a growable array. Returns 0 or -1 (no memory). */
static int rows_insert_at(row ***rows, size_t *n, size_t *cap, size_t idx, row *r) {
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        row **grown = realloc(*rows, ncap * sizeof *grown);
        if (grown == NULL) return -1;
        *rows = grown;
        *cap = ncap;
    }
    memmove(*rows + idx + 1, *rows + idx, (*n - idx) * sizeof **rows);
    (*rows)[idx] = r;
    (*n)++;
    return 0;
}

static row *rows_remove_at(row **rows, size_t *n, size_t idx) {
    row *r = rows[idx];
    memmove(rows + idx, rows + idx + 1, (*n - idx - 1) * sizeof *rows);
    (*n)--;
    return r;
}

/* ---- tables -------------------------------------------------------------------------- */

typedef struct column {
    char name[MAX_NAME];
    noodle_type type;
    bool not_null;
} column;

/* A PRIMARY KEY or UNIQUE constraint checked by comparing rows (every one
 * except a single-column primary key, which is the table's key). */
typedef struct uniq {
    size_t ncols;
    size_t cols[MAX_KEY_COLS];
    bool primary;
    char name[MAX_NAME]; /* t_pkey, t_col_key (as PostgreSQL names them) */
} uniq;

typedef struct table {
    struct table *next; /* the node's list */
    uint64_t id;        /* unique within the node: a re-created table is a new table */
    char name[MAX_NAME];
    /* key: the cell rows are sorted and addressed by: the column of a
     * single-column PRIMARY KEY or, without one (rowid), a hidden int64 cell
     * at index ncols numbered from next_rowid, as SQLite's rowid */
    size_t ncols, key;
    bool rowid;
    int64_t next_rowid;
    column *cols; /* owned */
    uniq *uniqs;  /* owned: the other constraints */
    size_t nuniqs;
    row **rows; /* owned rows, sorted by key (invariant 3) */
    size_t nrows, cap;
} table;

static void table_free(table *t) {
    if (t == NULL) return;
    for (size_t i = 0; i < t->nrows; i++) row_free(t->rows[i]);
    free(t->rows);
    free(t->cols);
    free(t->uniqs);
    free(t);
}

/* Cells of a row of t: its columns and the hidden rowid. */
static size_t table_width(const table *t) { return t->ncols + (t->rowid ? 1 : 0); }

static long table_col(const table *t, const char *name) {
    for (size_t i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, name) == 0) return (long)i;
    return -1;
}

/* The committed row with this key, or NULL. */
static row *table_get(const table *t, const noodle_value *key) {
    size_t idx;
    return rows_find(t->rows, t->nrows, t->key, key, &idx) ? t->rows[idx] : NULL;
}

/* ---- write sets, read sets, savepoints ----------------------------------------------- */

typedef enum wop_kind { WOP_INSERT, WOP_UPDATE, WOP_DELETE } wop_kind;

/* One row-level change. INSERT fails at commit when the key exists; UPDATE
 * replaces the row with that key (skipped when another commit deleted it);
 * DELETE removes it (skipped when already gone). */
typedef struct wop {
    wop_kind kind;
    uint64_t table_id;
    noodle_value key; /* owned */
    row *row;         /* owned; the new row (NULL for DELETE); moved into the table by commit */
} wop;

typedef struct wset {
    wop *ops; /* owned, in statement order */
    size_t n, cap;
} wset;

static void wop_free(wop *op) {
    cell_free(&op->key);
    row_free(op->row);
    op->row = NULL;
}

/* Drop the operations from position n on. */
static void wset_truncate(wset *w, size_t n) {
    while (w->n > n) wop_free(&w->ops[--w->n]);
}

static void wset_free(wset *w) {
    wset_truncate(w, 0);
    free(w->ops);
    w->ops = NULL;
    w->cap = 0;
}

/* Append an operation on table tid: takes r (may be NULL for DELETE) in every
 * case, copies key. Returns 0 or -1 (no memory; r is freed). */
static int wset_push(wset *w, wop_kind kind, uint64_t tid, const noodle_value *key, row *r) {
    if (w->n == w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 8;
        wop *grown = realloc(w->ops, ncap * sizeof *grown);
        if (grown == NULL) goto fail;
        w->ops = grown;
        w->cap = ncap;
    }
    wop *op = &w->ops[w->n];
    if (cell_dup(&op->key, key) != 0) goto fail;
    op->kind = kind;
    op->table_id = tid;
    op->row = r;
    w->n++;
    return 0;
fail:
    row_free(r);
    return -1;
}

/* What a REPEATABLE READ / SERIALIZABLE transaction saw of one key: the
 * version of the committed row, 0 when absent. The first sighting counts. */
typedef struct seen {
    uint64_t table_id;
    noodle_value key; /* owned */
    uint64_t version;
} seen;

typedef struct seenset {
    seen *v; /* owned */
    size_t n, cap;
} seenset;

static void seenset_clear(seenset *s) {
    for (size_t i = 0; i < s->n; i++) cell_free(&s->v[i].key);
    s->n = 0;
}

static void seenset_free(seenset *s) {
    seenset_clear(s);
    free(s->v);
    s->v = NULL;
    s->cap = 0;
}

/* Remember (tid, key) at version unless already seen. Returns 0 or -1. */
static int seenset_note(seenset *s, uint64_t tid, const noodle_value *key, uint64_t version) {
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].table_id == tid && value_cmp(&s->v[i].key, key) == 0) return 0;
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 16;
        seen *grown = realloc(s->v, ncap * sizeof *grown);
        if (grown == NULL) return -1;
        s->v = grown;
        s->cap = ncap;
    }
    if (cell_dup(&s->v[s->n].key, key) != 0) return -1;
    s->v[s->n].table_id = tid;
    s->v[s->n].version = version;
    s->n++;
    return 0;
}

typedef struct savepoint {
    char name[MAX_NAME];
    size_t pos; /* write-set length when it was taken */
} savepoint;

/* ---- sessions and nodes -------------------------------------------------------------- */

typedef enum session_state { SESSION_IDLE, SESSION_TXN, SESSION_DEAD } session_state;
typedef enum node_state { NODE_UP, NODE_CRASHED, NODE_DROPPED } node_state;

typedef struct node node;

/* One mock connection (the backend handle). */
typedef struct session {
    struct session *prev, *next; /* the node's list (node mu) */
    node *node;                  /* holds a reference (invariant 5); immutable */
    const noodle_clock *clock;   /* the connection's clock; immutable */
    session_state state;         /* node mu (invariant 4) */
    /* owned by the thread using the connection: */
    noodle_isolation iso;
    uint64_t snapshot; /* commit sequence number at begin */
    wset ws;
    savepoint *sps; /* owned */
    size_t nsps, capsps;
    seenset seen;
} session;

/* Fault settings of one operation kind (index NOODLE_MOCK_OP_ANY: the fallback). */
typedef struct fault {
    int64_t latency_ns;
    bool hang;
    int64_t fail_next;
    int fail_next_code;
    double fail_p;
    int fail_p_code;
    uint64_t hang_epoch; /* bumped whenever this hang is cleared (kept by clear_faults) */
} fault;

struct node {
    node *next;   /* registry list (registry_mu) */
    int64_t refs; /* sessions + connects in progress (registry_mu) */
    char name[MAX_NAME]; /* immutable */
    pthread_mutex_t mu;  /* guards everything below */
    pthread_cond_t hang_cond; /* hang waiters; broadcast when a hang is cleared or sessions die */
    node_state state;
    noodle_role role;
    table *tables; /* owned list */
    uint64_t next_table_id;
    uint64_t commit_seq; /* number of the last commit */
    fault faults[NOODLE_MOCK_OP_COUNT + 1];
    int64_t ack_lost; /* commits still to lose their acknowledgement */
    uint64_t rng;     /* splitmix64 state */
    session *sessions;   /* open sessions, dead ones included until closed */
    noodle_mock_stats stats; /* role and crashed are filled in when read */
    /* simulated health state (noodle_mock_set_corruption / _standbys / _archiver) */
    int64_t corruption;         /* problems every integrity check reports */
    char corruption_text[256];  /* the first one's text */
    int64_t checksum_failures;  /* -1: checksums off (the default) */
    noodle_standby_status standbys[NOODLE_MOCK_MAX_STANDBYS];
    size_t nstandbys;
    int64_t archive[4]; /* archived, failed, last archived age, last failed age; -1 unknown */
};

/* Guards `nodes` and every node's refs (invariant 1). */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static node *nodes;

static void set_session_state(node *n, session *s, session_state to) {
    assert(to != s->state);
    assert(s->state != SESSION_DEAD); /* a dead session stays dead */
    assert(to == SESSION_DEAD || (s->state == SESSION_IDLE) == (to == SESSION_TXN));
    if (to == SESSION_DEAD) n->stats.open_connections--;
    s->state = to;
}

static void set_node_state(node *n, node_state to) {
    assert(n->state != NODE_DROPPED);
    assert(to != NODE_UP || n->state == NODE_CRASHED);
    n->state = to;
}

/* Wake every hang waiter of the node: through the real clock, and through
 * every other clock its sessions use (a virtual clock may track waits). */
static void wake_waiters(node *n) {
    noodle_clock_cond_broadcast(NULL, &n->hang_cond);
    for (session *s = n->sessions; s != NULL; s = s->next)
        if (s->clock != noodle_clock_real()) noodle_clock_cond_broadcast(s->clock, &n->hang_cond);
}

/* Kill one session (node mu held); its next call fails with 4003. */
static void kill_session(node *n, session *s) {
    if (s->state == SESSION_DEAD) return;
    set_session_state(n, s, SESSION_DEAD);
    wake_waiters(n);
}

static void kill_all_sessions(node *n) {
    for (session *s = n->sessions; s != NULL; s = s->next)
        if (s->state != SESSION_DEAD) set_session_state(n, s, SESSION_DEAD);
    wake_waiters(n);
}

/* End the session's transaction (commit done or rollback): forget the write
 * set, the savepoints and the read set. */
static void end_txn(node *n, session *s) {
    wset_truncate(&s->ws, 0);
    s->nsps = 0;
    seenset_clear(&s->seen);
    if (s->state == SESSION_TXN) set_session_state(n, s, SESSION_IDLE);
}

static table *find_table(const node *n, const char *name) {
    for (table *t = n->tables; t != NULL; t = t->next)
        if (strcmp(t->name, name) == 0) return t;
    return NULL;
}

static table *find_table_id(const node *n, uint64_t id) {
    for (table *t = n->tables; t != NULL; t = t->next)
        if (t->id == id) return t;
    return NULL;
}

static void node_free(node *n) {
    if (n == NULL) return;
    for (table *t = n->tables, *next; t != NULL; t = next) {
        next = t->next;
        table_free(t);
    }
    pthread_cond_destroy(&n->hang_cond);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

/* True for [A-Za-z0-9_-]{1,63}. */
static bool node_name_valid(const char *name, size_t len) {
    if (len == 0 || len >= MAX_NAME) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!(isalnum(ch) || ch == '_' || ch == '-') || ch >= 0x80) return false;
    }
    return true;
}

/* The node called name, created when absent and create is set; registry_mu
 * held. NULL when absent (create false) or out of memory (create true). */
static node *registry_get(const char *name, bool create) {
    for (node *n = nodes; n != NULL; n = n->next)
        if (strcmp(n->name, name) == 0) return n;
    if (!create) return NULL;
    node *n = calloc(1, sizeof *n);
    if (n == NULL) goto fail;
    if (pthread_mutex_init(&n->mu, NULL) != 0) goto fail_node;
    if (noodle_cond_init(&n->hang_cond) != 0) goto fail_mutex;
    snprintf(n->name, sizeof n->name, "%s", name);
    n->state = NODE_UP;
    n->role = NOODLE_ROLE_PRIMARY;
    n->rng = DEFAULT_SEED;
    n->stats.role = NOODLE_ROLE_PRIMARY;
    n->checksum_failures = -1;
    for (size_t i = 0; i < 4; i++) n->archive[i] = -1; /* no archiver */
    n->next = nodes;
    nodes = n;
    return n;
fail_mutex:
    pthread_mutex_destroy(&n->mu);
fail_node:
    free(n);
fail:
    return NULL;
}

/* Drop a reference (no lock held); frees a dropped node with the last one. */
static void node_unref(node *n) {
    pthread_mutex_lock(&registry_mu);
    bool free_it = --n->refs == 0;
    if (free_it) {
        /* state is read under mu: a control call may still hold it briefly */
        pthread_mutex_lock(&n->mu);
        free_it = n->state == NODE_DROPPED;
        pthread_mutex_unlock(&n->mu);
    }
    pthread_mutex_unlock(&registry_mu);
    if (free_it) node_free(n);
}

/* ---- SQL: tokens --------------------------------------------------------------------- */

typedef enum tok_kind {
    TK_END,
    TK_WORD,
    TK_QIDENT,
    TK_INT,
    TK_FLOAT,
    TK_STRING,
    TK_PARAM,
    TK_PUNCT
} tok_kind;

typedef struct token {
    tok_kind kind;
    size_t pos, len; /* span in the SQL text */
    uint64_t mag;    /* TK_INT: magnitude (overflow gives TK_FLOAT) */
    double d;        /* TK_FLOAT */
    size_t str_off, str_len; /* TK_STRING, TK_QIDENT: unescaped bytes in the statement's strbuf */
    size_t param;    /* TK_PARAM: 0-based position */
} token;

static const char *const punct_ops[] = {"<=", ">=", "<>", "!=", "||", "::", "(", ")", ",", ";",
                                        "*",  "=",  "+",  "-",  ".",  "<",  ">", "/", "%"};

/* ---- SQL: statements ----------------------------------------------------------------- */

typedef enum opd_kind { OPD_LIT, OPD_PARAM, OPD_COLUMN, OPD_EXCLUDED } opd_kind;

/* A value in a statement: a literal, a `?`, (UPDATE / SELECT) a column, or
 * (ON CONFLICT DO UPDATE SET) a column of the row proposed for insertion
 * (excluded.col). */
typedef struct operand {
    opd_kind kind;
    noodle_value lit;   /* OPD_LIT; TEXT bytes borrowed from the statement's strbuf */
    size_t param;       /* OPD_PARAM */
    char col[MAX_NAME]; /* OPD_COLUMN, OPD_EXCLUDED */
} operand;

typedef enum stmt_kind { ST_CREATE, ST_DROP, ST_INSERT, ST_SELECT, ST_UPDATE, ST_DELETE } stmt_kind;

typedef enum item_kind {
    ITEM_STAR, ITEM_VALUE, /* a column or a bare value */
    ITEM_COUNT_STAR, ITEM_COUNT, ITEM_SUM, ITEM_MAX, ITEM_MIN,
} item_kind;

typedef struct item {
    item_kind kind;
    operand v; /* ITEM_VALUE; the column of an aggregate is v.col */
    char alias[MAX_NAME]; /* "" when none */
} item;

typedef struct coldef {
    char name[MAX_NAME];
    noodle_type type;
    bool primary, unique, not_null;
} coldef;

/* A table constraint of CREATE: PRIMARY KEY (cols) or UNIQUE (cols). */
typedef struct keydef {
    bool primary;
    size_t ncols;
    char cols[MAX_KEY_COLS][MAX_NAME];
} keydef;

typedef enum cond_op {
    OP_EQ,
    OP_NE,
    OP_LT,
    OP_LE,
    OP_GT,
    OP_GE,
    OP_LIKE,
    OP_NOT_LIKE,
    OP_IS_NULL,
    OP_IS_NOT_NULL,
} cond_op;

/* col op v (v unused for IS [NOT] NULL) */
typedef struct cond {
    char col[MAX_NAME];
    cond_op op;
    operand v;
} cond;

typedef enum conflict_kind { CONFLICT_NONE, CONFLICT_NOTHING, CONFLICT_UPDATE } conflict_kind;

/* col = a [op b] */
typedef struct assign {
    char col[MAX_NAME];
    operand a, b;
    char op; /* 0, '+' or '-' */
} assign;

typedef struct stmt {
    stmt_kind kind;
    char table[MAX_NAME];  /* "" for SELECT without FROM */
    char schema[MAX_NAME]; /* "schema"."table": the schema; "" when unqualified */
    bool if_flag;          /* IF NOT EXISTS / IF EXISTS */
    size_t nparams;        /* `?` placeholders */
    coldef cols[MAX_COLS]; /* CREATE */
    size_t ncols;
    keydef keys[MAX_UNIQUES]; /* CREATE: table constraints */
    size_t nkeys;
    conflict_kind conflict; /* INSERT ... ON CONFLICT [(cols)] DO NOTHING | DO UPDATE SET assigns */
    char conflict_cols[MAX_KEY_COLS][MAX_NAME];
    size_t nconflict_cols;
    char inscols[MAX_COLS][MAX_NAME]; /* INSERT column list */
    size_t ninscols;
    operand *vals; /* INSERT: ntuples tuples of width values, row-major; owned */
    size_t nvals, capvals, width;
    item items[MAX_COLS]; /* SELECT */
    size_t nitems;
    cond conds[MAX_CONDS];
    size_t nconds;
    assign assigns[MAX_COLS]; /* UPDATE; INSERT ... DO UPDATE SET */
    size_t nassigns;
    bool has_order, desc;
    char order_col[MAX_NAME];
    bool has_limit, has_offset;
    operand limit, offset;
    char *strbuf; /* owned: bytes of the string literals */
    token *toks;  /* owned */
    size_t ntoks;
} stmt;

static void stmt_free(stmt *st) {
    if (st == NULL) return;
    free(st->vals);
    free(st->strbuf);
    free(st->toks);
    free(st);
}

/* ---- SQL: lexer ---------------------------------------------------------------------- */

static int syntax_at(noodle_error *err, const char *sql, const token *t) {
    if (t->kind == TK_END)
        NOODLE_ERR(err, NOODLE_E_QUERY_SYNTAX, "syntax error at end of input (position %zu)",
                   t->pos + 1);
    else
        NOODLE_ERR(err, NOODLE_E_QUERY_SYNTAX, "syntax error at or near \"%.*s\" (position %zu)",
                   (int)(t->len > 40 ? 40 : t->len), sql + t->pos, t->pos + 1);
    return noodle_error_detail(err, "SQLSTATE 42601");
}

static int push_token(stmt *st, size_t *cap, const token *t) {
    if (st->ntoks == *cap) {
        size_t ncap = *cap ? *cap * 2 : 32;
        token *grown = realloc(st->toks, ncap * sizeof *grown);
        if (grown == NULL) return -1;
        st->toks = grown;
        *cap = ncap;
    }
    st->toks[st->ntoks++] = *t;
    return 0;
}

/* Split sql into st->toks (ending with TK_END) and count the placeholders. */
static int lex(stmt *st, const char *sql, noodle_error *err) {
    size_t len = strlen(sql), cap = 0, strlen_used = 0;
    st->strbuf = malloc(len + 1);
    if (st->strbuf == NULL) goto oom;
    size_t i = 0;
    for (;;) {
        while (i < len && isspace((unsigned char)sql[i])) i++;
        if (i + 1 < len && sql[i] == '-' && sql[i + 1] == '-') {
            while (i < len && sql[i] != '\n') i++;
            continue;
        }
        if (i + 1 < len && sql[i] == '/' && sql[i + 1] == '*') {
            const char *end = strstr(sql + i + 2, "*/");
            if (end == NULL) {
                NOODLE_ERR(err, NOODLE_E_QUERY_SYNTAX,
                           "unterminated /* comment at position %zu", i + 1);
                return noodle_error_detail(err, "SQLSTATE 42601");
            }
            i = (size_t)(end - sql) + 2;
            continue;
        }
        token t = {.kind = TK_END, .pos = i};
        if (i >= len) {
            if (push_token(st, &cap, &t) != 0) goto oom;
            return 0;
        }
        unsigned char ch = (unsigned char)sql[i];
        if (isalpha(ch) || ch == '_') {
            t.kind = TK_WORD;
            while (i < len && (isalnum((unsigned char)sql[i]) || sql[i] == '_')) i++;
        } else if (isdigit(ch) ||
                   (ch == '.' && i + 1 < len && isdigit((unsigned char)sql[i + 1]))) {
            bool is_float = false;
            while (i < len && isdigit((unsigned char)sql[i])) i++;
            if (i < len && sql[i] == '.') {
                is_float = true;
                i++;
                while (i < len && isdigit((unsigned char)sql[i])) i++;
            }
            if (i < len && (sql[i] == 'e' || sql[i] == 'E')) {
                size_t j = i + 1;
                if (j < len && (sql[j] == '+' || sql[j] == '-')) j++;
                if (j < len && isdigit((unsigned char)sql[j])) {
                    is_float = true;
                    i = j;
                    while (i < len && isdigit((unsigned char)sql[i])) i++;
                }
            }
            t.len = i - t.pos;
            if (i < len && (isalpha((unsigned char)sql[i]) || sql[i] == '_')) {
                t.len = i + 1 - t.pos;
                return syntax_at(err, sql, &t);
            }
            t.kind = TK_INT;
            for (size_t k = t.pos; !is_float && k < i; k++) {
                unsigned d = (unsigned)(sql[k] - '0');
                if (t.mag > (UINT64_MAX - d) / 10) is_float = true; /* too big: numeric */
                else t.mag = t.mag * 10 + d;
            }
            if (is_float) {
                t.kind = TK_FLOAT;
                t.d = strtod(sql + t.pos, NULL);
            }
        } else if (ch == '\'') {
            t.kind = TK_STRING;
            t.str_off = strlen_used;
            for (i++;; i++) {
                if (i >= len) {
                    NOODLE_ERR(err, NOODLE_E_QUERY_SYNTAX,
                               "unterminated quoted string at position %zu", t.pos + 1);
                    return noodle_error_detail(err, "SQLSTATE 42601");
                }
                if (sql[i] == '\'') {
                    if (i + 1 < len && sql[i + 1] == '\'') i++;
                    else break;
                }
                st->strbuf[strlen_used++] = sql[i];
            }
            i++;
            t.str_len = strlen_used - t.str_off;
        } else if (ch == '"') { /* a quoted identifier: case kept, "" for a quote */
            t.kind = TK_QIDENT;
            t.str_off = strlen_used;
            for (i++;; i++) {
                if (i >= len) {
                    NOODLE_ERR(err, NOODLE_E_QUERY_SYNTAX,
                               "unterminated quoted identifier at position %zu", t.pos + 1);
                    return noodle_error_detail(err, "SQLSTATE 42601");
                }
                if (sql[i] == '"') {
                    if (i + 1 < len && sql[i + 1] == '"')
                        i++;
                    else
                        break;
                }
                st->strbuf[strlen_used++] = sql[i];
            }
            i++;
            t.str_len = strlen_used - t.str_off;
            if (t.str_len == 0) {
                NOODLE_ERR(err, NOODLE_E_QUERY_SYNTAX,
                           "zero-length delimited identifier at position %zu", t.pos + 1);
                return noodle_error_detail(err, "SQLSTATE 42601");
            }
        } else if (ch == '?') {
            t.kind = TK_PARAM;
            t.param = st->nparams++;
            i++;
        } else {
            t.kind = TK_PUNCT;
            for (size_t k = 0; k < sizeof punct_ops / sizeof punct_ops[0]; k++) {
                size_t n = strlen(punct_ops[k]);
                if (strncmp(sql + i, punct_ops[k], n) == 0) {
                    i += n;
                    break;
                }
            }
            if (i == t.pos) {
                t.len = 1;
                return syntax_at(err, sql, &t);
            }
        }
        t.len = i - t.pos;
        if (push_token(st, &cap, &t) != 0) goto oom;
    }
oom:
    return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "out of memory parsing a statement");
}

/* ---- SQL: parser --------------------------------------------------------------------- */

typedef struct parser {
    const char *sql;
    stmt *st;
    size_t i; /* current token */
    noodle_error *err;
    bool conflict_set; /* parsing ON CONFLICT DO UPDATE SET: excluded.col and t.col allowed */
} parser;

/* SQL words the subset does not handle but that make a statement well formed:
 * meeting one where the subset expects something else is 5015, not 5001. */
static const char *const unsupported_words[] = {
    "JOIN",  "INNER",   "LEFT",     "RIGHT",     "FULL",   "CROSS",    "NATURAL", "ON",
    "USING", "GROUP",   "HAVING",   "UNION",     "INTERSECT", "EXCEPT", "OR",     "NOT",
    "IN",    "LIKE",    "ILIKE",    "IS",        "BETWEEN", "EXISTS",  "DISTINCT", "RETURNING",
    "CONFLICT", "WITH", "FOR",      "CASE",      "ALTER",  "TRUNCATE", "BEGIN",   "START",
    "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "EXPLAIN", "GRANT",   "REVOKE",  "SHOW",
    "VACUUM", "ANALYZE", "COPY",    "MERGE",     "REPLACE", "PRAGMA",  "LOCK",    "INDEX",
    "VIEW",  "SEQUENCE", "SCHEMA",  "DATABASE",  "UNIQUE", "REFERENCES", "DEFAULT", "CHECK",
    "FOREIGN", "CONSTRAINT", "GENERATED", "COLLATE", "NULLS", "FETCH", "WINDOW", "OVER",
    "AVG",   "TEMP",    "TEMPORARY", "CAST",     "ESCAPE", "LATERAL", "SELECT",  "ALL",
    "ANY",   "SOME",    "DO",        "SET",      "WHEN",   "THEN",    "ELSE",    "END",
};

/* Words that cannot be a table or column name here. */
static const char *const reserved_words[] = {
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "ORDER", "BY", "LIMIT", "OFFSET",
    "INSERT", "INTO", "VALUES", "UPDATE", "SET", "DELETE", "CREATE", "TABLE", "DROP",
    "NULL", "TRUE", "FALSE", "PRIMARY", "KEY", "IF", "EXISTS", "AS", "ASC", "DESC", "JOIN", "GROUP",
    "HAVING", "UNION", "ON", "IN", "IS", "LIKE", "DISTINCT", "RETURNING", "WITH", "CASE",
};

static bool word_in(const parser *p, const token *t, const char *const *list, size_t n) {
    if (t->kind != TK_WORD) return false;
    for (size_t k = 0; k < n; k++)
        if (strlen(list[k]) == t->len && strncasecmp(p->sql + t->pos, list[k], t->len) == 0)
            return true;
    return false;
}

static const token *cur(const parser *p) { return &p->st->toks[p->i]; }
static const token *peek(const parser *p, size_t ahead) {
    size_t k = p->i + ahead;
    return &p->st->toks[k < p->st->ntoks ? k : p->st->ntoks - 1];
}

static bool is_kw(const parser *p, const token *t, const char *kw) {
    return t->kind == TK_WORD && strlen(kw) == t->len &&
           strncasecmp(p->sql + t->pos, kw, t->len) == 0;
}

static bool is_punct(const parser *p, const token *t, const char *op) {
    return t->kind == TK_PUNCT && strlen(op) == t->len && strncmp(p->sql + t->pos, op, t->len) == 0;
}

/* Consume keyword kw when it is next. */
static bool accept_kw(parser *p, const char *kw) {
    if (!is_kw(p, cur(p), kw)) return false;
    p->i++;
    return true;
}

static bool accept_punct(parser *p, const char *op) {
    if (!is_punct(p, cur(p), op)) return false;
    p->i++;
    return true;
}

/* The current token is not what the grammar wants: 5015 when it starts
 * something well formed that the subset lacks, else 5001. */
static int unsupported(parser *p) {
    const token *t = cur(p);
    NOODLE_ERR(p->err, NOODLE_E_QUERY_UNSUPPORTED,
               "\"%.*s\" at position %zu is not supported by the mock backend's SQL subset "
               "(see docs/mock-backend.md)",
               (int)(t->len > 40 ? 40 : t->len), p->sql + t->pos, t->pos + 1);
    return noodle_error_detail(p->err, "mock: unsupported SQL");
}

static int unexpected(parser *p) {
    const token *t = cur(p);
    static const char *const ops[] = {"<",  ">", "<=", ">=", "<>", "!=", "||",
                                      "::", "/", "%",  ".",  "*",  "+",  "-"};
    bool well_formed =
        word_in(p, t, unsupported_words, sizeof unsupported_words / sizeof *unsupported_words);
    for (size_t k = 0; !well_formed && k < sizeof ops / sizeof *ops; k++)
        well_formed = is_punct(p, t, ops[k]);
    if (is_punct(p, t, "(") && is_kw(p, peek(p, 1), "SELECT")) well_formed = true; /* subquery */
    return well_formed ? unsupported(p) : syntax_at(p->err, p->sql, t);
}

static int expect_kw(parser *p, const char *kw) { return accept_kw(p, kw) ? 0 : unexpected(p); }
static int expect_punct(parser *p, const char *op) {
    return accept_punct(p, op) ? 0 : unexpected(p);
}

/* An identifier: unquoted, folded to lower case as PostgreSQL does, or
 * "quoted", kept as it is (a reserved word is then a plain name). */
static int parse_ident(parser *p, char out[MAX_NAME]) {
    const token *t = cur(p);
    bool quoted = t->kind == TK_QIDENT;
    if (!quoted && (t->kind != TK_WORD ||
                    word_in(p, t, reserved_words, sizeof reserved_words / sizeof *reserved_words)))
        return unexpected(p);
    size_t len = quoted ? t->str_len : t->len;
    if (len >= MAX_NAME) {
        NOODLE_ERR(p->err, NOODLE_E_QUERY_SYNTAX,
                   "identifier at position %zu is longer than %d bytes", t->pos + 1, MAX_NAME - 1);
        return noodle_error_detail(p->err, "SQLSTATE 42622");
    }
    if (quoted)
        memcpy(out, p->st->strbuf + t->str_off, len);
    else
        for (size_t k = 0; k < len; k++)
            out[k] = (char)tolower((unsigned char)p->sql[t->pos + k]);
    out[len] = '\0';
    p->i++;
    return 0;
}

static bool is_ident(const token *t) { return t->kind == TK_WORD || t->kind == TK_QIDENT; }

/* A table name, optionally schema-qualified (schema.table); the schema is
 * checked when the statement runs. */
static int parse_table_name(parser *p) {
    stmt *st = p->st;
    if (parse_ident(p, st->table) != 0) return p->err->code;
    if (!accept_punct(p, ".")) return 0;
    memcpy(st->schema, st->table, MAX_NAME);
    if (parse_ident(p, st->table) != 0) return p->err->code;
    if (is_punct(p, cur(p), ".")) return unsupported(p); /* database.schema.table */
    return 0;
}

/* A column reference: col or, in ON CONFLICT DO UPDATE SET, excluded.col
 * (the row proposed for insertion) or table.col (the existing row). */
static int parse_colref(parser *p, operand *o) {
    char first[MAX_NAME];
    o->kind = OPD_COLUMN;
    if (!is_punct(p, peek(p, 1), ".")) return parse_ident(p, o->col);
    if (!p->conflict_set) { /* qualified column names elsewhere */
        p->i++;
        return unsupported(p);
    }
    const token *qual = cur(p);
    if (parse_ident(p, first) != 0) return p->err->code;
    p->i++; /* the dot */
    if (parse_ident(p, o->col) != 0) return p->err->code;
    if (strcmp(first, "excluded") == 0)
        o->kind = OPD_EXCLUDED;
    else if (strcmp(first, p->st->table) != 0) {
        NOODLE_ERR(p->err, NOODLE_E_QUERY_SYNTAX,
                   "missing FROM-clause entry for table \"%s\" (position %zu)", first,
                   qual->pos + 1);
        return noodle_error_detail(p->err, "SQLSTATE 42P01");
    }
    return 0;
}

/* A literal, a `?`, or (allow_column) a column name. */
static int parse_operand(parser *p, operand *o, bool allow_column) {
    memset(o, 0, sizeof *o);
    const token *t = cur(p);
    bool neg = false;
    if ((is_punct(p, t, "-") || is_punct(p, t, "+")) &&
        (peek(p, 1)->kind == TK_INT || peek(p, 1)->kind == TK_FLOAT)) {
        neg = is_punct(p, t, "-");
        t = peek(p, 1);
        p->i++;
    }
    switch (t->kind) {
    case TK_INT:
        o->kind = OPD_LIT;
        if (t->mag <= (uint64_t)INT64_MAX)
            o->lit = noodle_int64(neg ? -(int64_t)t->mag : (int64_t)t->mag);
        else if (neg && t->mag == (uint64_t)INT64_MAX + 1) o->lit = noodle_int64(INT64_MIN);
        else o->lit = noodle_double(neg ? -(double)t->mag : (double)t->mag);
        break;
    case TK_FLOAT:
        o->kind = OPD_LIT;
        o->lit = noodle_double(neg ? -t->d : t->d);
        break;
    case TK_STRING:
        o->kind = OPD_LIT;
        o->lit = noodle_text_n(p->st->strbuf + t->str_off, t->str_len);
        break;
    case TK_PARAM:
        o->kind = OPD_PARAM;
        o->param = t->param;
        break;
    case TK_WORD:
        if (is_kw(p, t, "NULL")) {
            o->kind = OPD_LIT;
            o->lit = noodle_null();
            break;
        }
        if (is_kw(p, t, "TRUE") || is_kw(p, t, "FALSE")) { /* booleans are int64 0 / 1 */
            o->kind = OPD_LIT;
            o->lit = noodle_int64(is_kw(p, t, "TRUE"));
            break;
        }
        if (is_punct(p, peek(p, 1), "(")) return unsupported(p); /* a function call */
        if (!allow_column) return unexpected(p);
        return parse_colref(p, o);
    case TK_QIDENT:
        if (!allow_column) return unexpected(p);
        return parse_colref(p, o);
    default: return unexpected(p);
    }
    p->i++;
    return 0;
}

/* col TYPE: the words of the type name, then an optional (n[, m]). */
static int parse_type(parser *p, coldef *c) {
    char text[MAX_NAME * 2] = "";
    size_t tl = 0, nwords = 0;
    const token *first = cur(p);
    while (cur(p)->kind == TK_WORD && !is_kw(p, cur(p), "PRIMARY") && !is_kw(p, cur(p), "NOT") &&
           !is_kw(p, cur(p), "NULL") &&
           !word_in(p, cur(p), unsupported_words,
                    sizeof unsupported_words / sizeof *unsupported_words)) {
        const token *t = cur(p);
        /* keep room for a separating space and the NUL; a longer name is cut */
        for (size_t k = 0; k < t->len && tl + 2 < sizeof text; k++)
            text[tl++] = (char)toupper((unsigned char)p->sql[t->pos + k]);
        if (tl + 1 < sizeof text) text[tl++] = ' ';
        text[tl] = '\0';
        nwords++;
        p->i++;
    }
    if (nwords == 0) return unexpected(p);
    if (accept_punct(p, "(")) {
        if (cur(p)->kind != TK_INT) return unexpected(p);
        p->i++;
        if (accept_punct(p, ",")) {
            if (cur(p)->kind != TK_INT) return unexpected(p);
            p->i++;
        }
        if (expect_punct(p, ")") != 0) return p->err->code;
    }
    if ((strstr(text, "INT") != NULL && strstr(text, "INTERVAL") == NULL &&
         strstr(text, "POINT") == NULL) ||
        strncmp(text, "BOOL", 4) == 0)
        c->type = NOODLE_TYPE_INT64;
    else if (strstr(text, "REAL") || strstr(text, "DOUBLE") || strstr(text, "FLOAT") ||
             strstr(text, "NUMERIC") || strstr(text, "DECIMAL"))
        c->type = NOODLE_TYPE_DOUBLE;
    else if (strstr(text, "TEXT") || strstr(text, "CHAR")) c->type = NOODLE_TYPE_TEXT;
    else if (strstr(text, "BLOB") || strstr(text, "BYTEA")) c->type = NOODLE_TYPE_BLOB;
    else {
        text[tl - 1] = '\0'; /* the trailing space */
        NOODLE_ERR(p->err, NOODLE_E_QUERY_UNSUPPORTED,
                   "column type %s (position %zu) is not supported by the mock backend (integer, "
                   "floating point, text and blob types are)",
                   text, first->pos + 1);
        return noodle_error_detail(p->err, "mock: unsupported type");
    }
    return 0;
}

/* (col, ...) of a table constraint or a conflict target: at most MAX_KEY_COLS. */
static int parse_name_list(parser *p, char cols[MAX_KEY_COLS][MAX_NAME], size_t *n) {
    *n = 0;
    if (expect_punct(p, "(") != 0) return p->err->code;
    do {
        if (*n == MAX_KEY_COLS) return unsupported(p);
        if (parse_ident(p, cols[(*n)++]) != 0) return p->err->code;
    } while (accept_punct(p, ","));
    return expect_punct(p, ")");
}

/* CREATE TABLE [IF NOT EXISTS] t (col TYPE [PRIMARY KEY | UNIQUE | NOT NULL | NULL ...], ...
 * [, PRIMARY KEY (col, ...)] [, UNIQUE (col, ...)]) */
static int parse_create(parser *p) {
    stmt *st = p->st;
    st->kind = ST_CREATE;
    if (expect_kw(p, "TABLE") != 0) return p->err->code;
    if (accept_kw(p, "IF")) {
        if (expect_kw(p, "NOT") != 0 || expect_kw(p, "EXISTS") != 0) return p->err->code;
        st->if_flag = true;
    }
    if (parse_table_name(p) != 0 || expect_punct(p, "(") != 0) return p->err->code;
    do {
        bool primary = is_kw(p, cur(p), "PRIMARY") && is_kw(p, peek(p, 1), "KEY");
        if (primary || (is_kw(p, cur(p), "UNIQUE") && is_punct(p, peek(p, 1), "("))) {
            p->i += primary ? 2 : 1;
            if (st->nkeys == MAX_UNIQUES) return unsupported(p);
            keydef *k = &st->keys[st->nkeys++];
            k->primary = primary;
            if (parse_name_list(p, k->cols, &k->ncols) != 0) return p->err->code;
            continue;
        }
        if (st->ncols == MAX_COLS) return unsupported(p);
        coldef *c = &st->cols[st->ncols++];
        if (parse_ident(p, c->name) != 0 || parse_type(p, c) != 0) return p->err->code;
        for (;;) {
            if (accept_kw(p, "PRIMARY")) {
                if (expect_kw(p, "KEY") != 0) return p->err->code;
                c->primary = true;
            } else if (accept_kw(p, "UNIQUE")) {
                c->unique = true;
            } else if (accept_kw(p, "NOT")) {
                if (expect_kw(p, "NULL") != 0) return p->err->code;
                c->not_null = true;
            } else if (!accept_kw(p, "NULL")) {
                break;
            }
        }
    } while (accept_punct(p, ","));
    return expect_punct(p, ")");
}

/* DROP TABLE [IF EXISTS] t */
static int parse_drop(parser *p) {
    p->st->kind = ST_DROP;
    if (expect_kw(p, "TABLE") != 0) return p->err->code;
    if (accept_kw(p, "IF")) {
        if (expect_kw(p, "EXISTS") != 0) return p->err->code;
        p->st->if_flag = true;
    }
    return parse_table_name(p);
}

static int push_val(parser *p, const operand *o) {
    stmt *st = p->st;
    if (st->nvals == st->capvals) {
        size_t ncap = st->capvals ? st->capvals * 2 : 16;
        operand *grown = realloc(st->vals, ncap * sizeof *grown);
        if (grown == NULL)
            return NOODLE_ERR(p->err, NOODLE_E_BACKEND_NO_MEMORY, "out of memory parsing VALUES");
        st->vals = grown;
        st->capvals = ncap;
    }
    st->vals[st->nvals++] = *o;
    return 0;
}

/* SET col = a [(+|-) b], ... (UPDATE; ON CONFLICT DO UPDATE) */
static int parse_assigns(parser *p) {
    stmt *st = p->st;
    if (expect_kw(p, "SET") != 0) return p->err->code;
    do {
        if (st->nassigns == MAX_COLS) return unsupported(p);
        assign *a = &st->assigns[st->nassigns++];
        if (parse_ident(p, a->col) != 0 || expect_punct(p, "=") != 0 ||
            parse_operand(p, &a->a, true) != 0)
            return p->err->code;
        if (is_punct(p, cur(p), "+") || is_punct(p, cur(p), "-")) {
            a->op = p->sql[cur(p)->pos];
            p->i++;
            if (parse_operand(p, &a->b, true) != 0) return p->err->code;
        }
    } while (accept_punct(p, ","));
    return 0;
}

/* ON CONFLICT [(col, ...)] DO NOTHING | ON CONFLICT (col, ...) DO UPDATE SET ... */
static int parse_on_conflict(parser *p) {
    stmt *st = p->st;
    if (expect_kw(p, "CONFLICT") != 0) return p->err->code;
    size_t target = cur(p)->pos;
    if (is_punct(p, cur(p), "(") && parse_name_list(p, st->conflict_cols, &st->nconflict_cols) != 0)
        return p->err->code;
    if (is_kw(p, cur(p), "ON") || is_kw(p, cur(p), "WHERE"))
        return unsupported(p); /* ON CONSTRAINT name; a partial index's predicate */
    if (expect_kw(p, "DO") != 0) return p->err->code;
    if (accept_kw(p, "NOTHING")) {
        st->conflict = CONFLICT_NOTHING;
        return 0;
    }
    if (expect_kw(p, "UPDATE") != 0) return p->err->code;
    if (st->nconflict_cols == 0) {
        NOODLE_ERR(p->err, NOODLE_E_QUERY_SYNTAX,
                   "ON CONFLICT DO UPDATE requires a conflict target, (col, ...) (position %zu)",
                   target + 1);
        return noodle_error_detail(p->err, "SQLSTATE 42601");
    }
    st->conflict = CONFLICT_UPDATE;
    p->conflict_set = true;
    int rc = parse_assigns(p);
    p->conflict_set = false;
    if (rc != 0) return rc;
    if (is_kw(p, cur(p), "WHERE")) return unsupported(p); /* DO UPDATE SET ... WHERE */
    return 0;
}

/* INSERT INTO t [(col, ...)] VALUES (v, ...)[, (v, ...)] [ON CONFLICT ...] */
static int parse_insert(parser *p) {
    stmt *st = p->st;
    st->kind = ST_INSERT;
    if (expect_kw(p, "INTO") != 0 || parse_table_name(p) != 0) return p->err->code;
    if (accept_punct(p, "(")) {
        do {
            if (st->ninscols == MAX_COLS) return unsupported(p);
            if (parse_ident(p, st->inscols[st->ninscols++]) != 0) return p->err->code;
        } while (accept_punct(p, ","));
        if (expect_punct(p, ")") != 0) return p->err->code;
    }
    if (expect_kw(p, "VALUES") != 0) return p->err->code;
    do {
        size_t open = cur(p)->pos, before = st->nvals;
        if (expect_punct(p, "(") != 0) return p->err->code;
        do {
            operand o;
            if (parse_operand(p, &o, false) != 0 || push_val(p, &o) != 0) return p->err->code;
        } while (accept_punct(p, ","));
        if (expect_punct(p, ")") != 0) return p->err->code;
        size_t width = st->nvals - before;
        if (before == 0) st->width = width;
        const char *why = NULL;
        if (width != st->width) why = "VALUES lists must all be the same length";
        else if (st->ninscols > 0 && width > st->ninscols)
            why = "INSERT has more expressions than target columns";
        else if (st->ninscols > 0 && width < st->ninscols)
            why = "INSERT has more target columns than expressions";
        if (why != NULL) {
            NOODLE_ERR(p->err, NOODLE_E_QUERY_SYNTAX, "%s (position %zu)", why, open + 1);
            return noodle_error_detail(p->err, "SQLSTATE 42601");
        }
    } while (accept_punct(p, ","));
    if (accept_kw(p, "ON")) return parse_on_conflict(p);
    return 0;
}

/* WHERE term [AND term ...], a term being col op v (op: = <> != < <= > >=),
 * col [NOT] LIKE v, or col IS [NOT] NULL. */
static int parse_where(parser *p) {
    static const struct {
        const char *punct;
        cond_op op;
    } cmps[] = {{"=", OP_EQ},  {"<>", OP_NE}, {"!=", OP_NE}, {"<", OP_LT},
                {"<=", OP_LE}, {">", OP_GT},  {">=", OP_GE}};
    stmt *st = p->st;
    if (!accept_kw(p, "WHERE")) return 0;
    do {
        if (st->nconds == MAX_CONDS) return unsupported(p);
        cond *c = &st->conds[st->nconds++];
        if (is_punct(p, cur(p), "(")) return unsupported(p); /* grouping, row values */
        if (parse_ident(p, c->col) != 0) return p->err->code;
        if (accept_kw(p, "IS")) {
            c->op = accept_kw(p, "NOT") ? OP_IS_NOT_NULL : OP_IS_NULL;
            if (!accept_kw(p, "NULL")) return unsupported(p); /* IS TRUE, IS DISTINCT FROM */
            continue;
        }
        size_t k = 0;
        while (k < sizeof cmps / sizeof cmps[0] && !is_punct(p, cur(p), cmps[k].punct))
            k++;
        if (k < sizeof cmps / sizeof cmps[0]) {
            c->op = cmps[k].op;
            p->i++;
        } else if (accept_kw(p, "LIKE")) {
            c->op = OP_LIKE;
        } else if (is_kw(p, cur(p), "NOT") && is_kw(p, peek(p, 1), "LIKE")) {
            c->op = OP_NOT_LIKE;
            p->i += 2;
        } else {
            return unexpected(p);
        }
        if (is_ident(cur(p)) && !is_kw(p, cur(p), "NULL") && !is_kw(p, cur(p), "TRUE") &&
            !is_kw(p, cur(p), "FALSE"))
            return unsupported(p); /* col op col, functions */
        if (parse_operand(p, &c->v, false) != 0) return p->err->code;
        if ((c->op == OP_LIKE || c->op == OP_NOT_LIKE) && is_kw(p, cur(p), "ESCAPE"))
            return unsupported(p);
    } while (accept_kw(p, "AND"));
    return 0;
}

/* *, col, value, count(*), count(col), sum(col), max(col), min(col) [AS alias] */
static int parse_item(parser *p, item *it) {
    memset(it, 0, sizeof *it);
    static const struct {
        const char *name;
        item_kind kind;
    } aggs[] = {{"COUNT", ITEM_COUNT}, {"SUM", ITEM_SUM}, {"MAX", ITEM_MAX}, {"MIN", ITEM_MIN}};
    if (accept_punct(p, "*")) {
        it->kind = ITEM_STAR;
        return 0;
    }
    for (size_t k = 0; k < sizeof aggs / sizeof aggs[0]; k++) {
        if (!is_kw(p, cur(p), aggs[k].name) || !is_punct(p, peek(p, 1), "(")) continue;
        p->i += 2;
        it->kind = aggs[k].kind;
        if (it->kind == ITEM_COUNT && accept_punct(p, "*")) it->kind = ITEM_COUNT_STAR;
        else if (parse_ident(p, it->v.col) != 0) return p->err->code;
        it->v.kind = OPD_COLUMN;
        if (expect_punct(p, ")") != 0) return p->err->code;
        goto alias;
    }
    if (parse_operand(p, &it->v, true) != 0) return p->err->code;
    it->kind = ITEM_VALUE;
alias:
    if (accept_kw(p, "AS")) return parse_ident(p, it->alias);
    return 0;
}

/* SELECT items [FROM t [WHERE ...] [ORDER BY col [ASC | DESC]] [LIMIT v] [OFFSET v]] */
static int parse_select(parser *p) {
    stmt *st = p->st;
    st->kind = ST_SELECT;
    do {
        if (st->nitems == MAX_COLS) return unsupported(p);
        if (parse_item(p, &st->items[st->nitems++]) != 0) return p->err->code;
    } while (accept_punct(p, ","));
    if (!accept_kw(p, "FROM")) return 0;
    if (parse_table_name(p) != 0) return p->err->code;
    if (is_punct(p, cur(p), ",")) return unsupported(p); /* FROM a, b */
    if (parse_where(p) != 0) return p->err->code;
    if (accept_kw(p, "ORDER")) {
        if (expect_kw(p, "BY") != 0 || parse_ident(p, st->order_col) != 0) return p->err->code;
        st->has_order = true;
        if (accept_kw(p, "DESC")) st->desc = true;
        else accept_kw(p, "ASC");
        if (is_punct(p, cur(p), ",")) return unsupported(p); /* several sort keys */
    }
    if (accept_kw(p, "LIMIT")) {
        st->has_limit = true;
        if (parse_operand(p, &st->limit, false) != 0) return p->err->code;
    }
    if (accept_kw(p, "OFFSET")) {
        st->has_offset = true;
        if (parse_operand(p, &st->offset, false) != 0) return p->err->code;
    }
    return 0;
}

/* UPDATE t SET col = a [(+|-) b], ... [WHERE ...] */
static int parse_update(parser *p) {
    p->st->kind = ST_UPDATE;
    if (parse_table_name(p) != 0 || parse_assigns(p) != 0) return p->err->code;
    return parse_where(p);
}

/* DELETE FROM t [WHERE ...] */
static int parse_delete(parser *p) {
    p->st->kind = ST_DELETE;
    if (expect_kw(p, "FROM") != 0 || parse_table_name(p) != 0) return p->err->code;
    return parse_where(p);
}

/* Parse one statement. *out: the statement (caller frees with stmt_free), or
 * NULL on failure (5001, 5015, 4008). */
static int parse_sql(const char *sql, stmt **out, noodle_error *err) {
    *out = NULL;
    stmt *st = calloc(1, sizeof *st);
    if (st == NULL)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "out of memory parsing a statement");
    int rc = lex(st, sql, err);
    if (rc != 0) goto fail;
    parser p = {.sql = sql, .st = st, .err = err};
    if (accept_kw(&p, "SELECT")) rc = parse_select(&p);
    else if (accept_kw(&p, "INSERT")) rc = parse_insert(&p);
    else if (accept_kw(&p, "UPDATE")) rc = parse_update(&p);
    else if (accept_kw(&p, "DELETE")) rc = parse_delete(&p);
    else if (accept_kw(&p, "CREATE")) rc = parse_create(&p);
    else if (accept_kw(&p, "DROP")) rc = parse_drop(&p);
    else rc = unexpected(&p);
    if (rc != 0) goto fail;
    bool semicolon = accept_punct(&p, ";");
    if (cur(&p)->kind != TK_END) {
        if (!semicolon) {
            rc = unexpected(&p);
            goto fail;
        }
        NOODLE_ERR(err, NOODLE_E_QUERY_UNSUPPORTED,
                   "more than one statement (the next starts at position %zu): execute runs "
                   "exactly one",
                   cur(&p)->pos + 1);
        rc = noodle_error_detail(err, "mock: one statement per call");
        goto fail;
    }
    *out = st;
    return 0;
fail:
    stmt_free(st);
    return rc;
}

/* ---- execution: values, views, matching ---------------------------------------------- */

/* One statement being executed under the node mutex. */
typedef struct exec_ctx {
    node *n;
    session *s;
    const stmt *st;
    const noodle_value *params; /* borrowed for the call */
    wset *ws;   /* where the statement's operations go (and what its reads see) */
    bool track; /* remember what is read and written (REPEATABLE READ / SERIALIZABLE) */
    noodle_error *err;
} exec_ctx;

static const noodle_value *bind(const exec_ctx *x, const operand *o) {
    return o->kind == OPD_PARAM ? &x->params[o->param] : &o->lit;
}

static int fail_sqlstate(noodle_error *err, int code, const char *sqlstate, const char *fmt, ...)
    NOODLE_PRINTF(4, 5);
static int fail_sqlstate(noodle_error *err, int code, const char *sqlstate, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    noodle_error_setv(err, code, __FILE__, __LINE__, __func__, fmt, ap);
    va_end(ap);
    return noodle_error_detail(err, "SQLSTATE %s", sqlstate);
}

static int no_memory(noodle_error *err) {
    return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "out of memory in the mock backend");
}

/* The statement's table: NULL when it does not exist, or when it is
 * qualified by a schema other than main (SQLite) or public (PostgreSQL). */
static table *stmt_table(const exec_ctx *x) {
    const char *schema = x->st->schema;
    if (schema[0] != '\0' && strcmp(schema, "main") != 0 && strcmp(schema, "public") != 0)
        return NULL;
    return find_table(x->n, x->st->table);
}

/* The statement's table does not exist (5001, 42P01). */
static int no_stmt_table(exec_ctx *x) {
    const stmt *st = x->st;
    return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42P01",
                         "relation \"%s%s%s\" does not exist", st->schema, st->schema[0] ? "." : "",
                         st->table);
}

static int no_column(exec_ctx *x, const char *name) {
    return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42703", "column \"%s\" does not exist",
                         name);
}

/* Shortest text that reads back as d, PostgreSQL style. */
static void format_double(double d, char buf[64]) {
    if (isnan(d)) {
        snprintf(buf, 64, "NaN");
        return;
    }
    if (isinf(d)) {
        snprintf(buf, 64, "%sInfinity", d < 0 ? "-" : "");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, 64, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) return;
    }
}

/* Round to the nearest integer, ties to even (PostgreSQL's float8 -> int8),
 * when d fits an int64. */
static bool double_to_int64(double d, int64_t *out) {
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return false; /* NaN too */
    int64_t i = (int64_t)d; /* toward zero */
    double frac = d - (double)i;
    if (frac > 0.5 || (frac == 0.5 && (i & 1))) {
        if (i == INT64_MAX) return false;
        i++;
    } else if (frac < -0.5 || (frac == -0.5 && (i & 1))) {
        i--;
    }
    *out = i;
    return true;
}

/* v as a value of type `to` (for column col). *out borrows v's bytes or buf.
 * Fails with 5010 when the value cannot be converted. */
static int convert(const noodle_value *v, noodle_type to, const char *col, char buf[64],
                   noodle_value *out, noodle_error *err) {
    *out = *v;
    if (v->type == NOODLE_TYPE_NULL || v->type == to) return 0;
    if (to == NOODLE_TYPE_INT64 && v->type == NOODLE_TYPE_DOUBLE) {
        if (double_to_int64(v->v.d, &out->v.i)) {
            out->type = NOODLE_TYPE_INT64;
            return 0;
        }
        format_double(v->v.d, buf);
        return fail_sqlstate(err, NOODLE_E_QUERY_DATA, "22003",
                             "value %s is out of range for the integer column \"%s\"", buf, col);
    }
    if (to == NOODLE_TYPE_DOUBLE && v->type == NOODLE_TYPE_INT64) {
        *out = noodle_double((double)v->v.i);
        return 0;
    }
    if (to == NOODLE_TYPE_TEXT && (v->type == NOODLE_TYPE_INT64 || v->type == NOODLE_TYPE_DOUBLE)) {
        if (v->type == NOODLE_TYPE_INT64) snprintf(buf, 64, "%" PRId64, v->v.i);
        else format_double(v->v.d, buf);
        *out = noodle_text(buf);
        return 0;
    }
    return fail_sqlstate(err, NOODLE_E_QUERY_DATA, "22P02",
                         "a %s value cannot be stored in or compared with column \"%s\" of type %s",
                         noodle_type_name(v->type), col, noodle_type_name(to));
}

/* The rows of a table as one statement sees them: committed rows with the
 * write set applied on top, in key order. The rows are borrowed (from the
 * table or the write set) until the write set or the table changes. */
typedef struct view {
    row **rows;
    size_t n;
    bool owned; /* the array (never the rows) is ours */
} view;

static void view_free(view *v) {
    if (v->owned) free(v->rows);
    v->rows = NULL;
    v->n = 0;
}

static int view_build(const exec_ctx *x, const table *t, view *v) {
    size_t nops = 0;
    for (size_t i = 0; i < x->ws->n; i++) nops += x->ws->ops[i].table_id == t->id;
    if (nops == 0) {
        *v = (view){t->rows, t->nrows, false};
        return 0;
    }
    size_t cap = t->nrows + nops;
    *v = (view){malloc(cap * sizeof *v->rows), t->nrows, true};
    if (v->rows == NULL) return -1;
    if (t->nrows > 0) memcpy(v->rows, t->rows, t->nrows * sizeof *v->rows);
    for (size_t i = 0; i < x->ws->n; i++) {
        const wop *op = &x->ws->ops[i];
        size_t idx;
        if (op->table_id != t->id) continue;
        bool found = rows_find(v->rows, v->n, t->key, &op->key, &idx);
        if (op->kind == WOP_DELETE) {
            if (found) rows_remove_at(v->rows, &v->n, idx);
        } else if (found) {
            v->rows[idx] = op->row;
        } else {
            size_t vcap = cap; /* never grows: cap counts every operation */
            rows_insert_at(&v->rows, &v->n, &vcap, idx, op->row);
        }
    }
    return 0;
}

/* The row with this key as the statement sees it, or NULL. *from_ws: the
 * write set decided (else the committed table did). */
static row *view_lookup(const exec_ctx *x, const table *t, const noodle_value *key, bool *from_ws) {
    for (size_t i = x->ws->n; i-- > 0;) {
        const wop *op = &x->ws->ops[i];
        if (op->table_id == t->id && value_cmp(&op->key, key) == 0) {
            *from_ws = true;
            return op->kind == WOP_DELETE ? NULL : op->row;
        }
    }
    *from_ws = false;
    return table_get(t, key);
}

/* Remember the committed version of a key (0: absent) when tracking reads. */
static int note_seen(exec_ctx *x, const table *t, const noodle_value *key, const row *r) {
    if (!x->track) return 0;
    if (seenset_note(&x->s->seen, t->id, key, r ? r->version : 0) != 0) return no_memory(x->err);
    return 0;
}

/* Bytes of the UTF-8 character starting at s (1 for an invalid lead byte). */
static size_t utf8_len(const unsigned char *s, size_t n) {
    size_t len = s[0] < 0x80         ? 1
                 : (s[0] >> 5) == 6  ? 2
                 : (s[0] >> 4) == 14 ? 3
                 : (s[0] >> 3) == 30 ? 4
                                     : 1;
    return len <= n ? len : n;
}

/* s LIKE p, PostgreSQL style: case-sensitive, % any run, _ one character
 * (a UTF-8 character of text, a byte of a blob), \ makes the next pattern
 * character literal (the pattern was checked not to end with it). */
static bool like_match(const unsigned char *s, size_t sn, const unsigned char *p, size_t pn,
                       bool text) {
    size_t si = 0, pi = 0, star_p = 0, star_s = 0;
    bool star = false;
    while (si < sn) {
        if (pi < pn && p[pi] == '%') { /* remember where to resume: match nothing first */
            star = true;
            star_p = ++pi;
            star_s = si;
            continue;
        }
        if (pi < pn && p[pi] == '_') {
            si += text ? utf8_len(s + si, sn - si) : 1;
            pi++;
            continue;
        }
        if (pi < pn) {
            size_t lit = p[pi] == '\\' ? pi + 1 : pi;
            if (s[si] == p[lit]) {
                si++;
                pi = lit + 1;
                continue;
            }
        }
        if (!star) return false;
        star_s += text ? utf8_len(s + star_s, sn - star_s) : 1; /* let the % take one more */
        si = star_s;
        pi = star_p;
    }
    while (pi < pn && p[pi] == '%')
        pi++;
    return pi == pn;
}

/* A WHERE term bound to a column of the table. */
typedef struct bound_cond {
    size_t col;
    cond_op op;
    noodle_value v; /* borrows the parameter, the literal or buf */
    char buf[64];
} bound_cond;

/* Bind the WHERE terms of the statement to t. *never: a term is true for no
 * row (a comparison with NULL, int_col = 1.5). *keycond: the index of a
 * key = v term (a point lookup), or -1. Fails with 5001 (unknown column,
 * LIKE on a number), 5010 (a value the column cannot hold, a pattern ending
 * with \). */
static int bind_conds(exec_ctx *x, const table *t, bound_cond *bc, bool *never, long *keycond) {
    *never = false;
    *keycond = -1;
    for (size_t i = 0; i < x->st->nconds; i++) {
        const cond *c = &x->st->conds[i];
        long col = table_col(t, c->col);
        if (col < 0) return no_column(x, c->col);
        const noodle_type ty = t->cols[col].type;
        bc[i].col = (size_t)col;
        bc[i].op = c->op;
        bc[i].v = noodle_null();
        if (c->op == OP_IS_NULL || c->op == OP_IS_NOT_NULL) continue;
        const noodle_value *v = bind(x, &c->v);
        bool like = c->op == OP_LIKE || c->op == OP_NOT_LIKE;
        if (like && ty != NOODLE_TYPE_TEXT && ty != NOODLE_TYPE_BLOB)
            return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42883",
                                 "operator does not exist: %s LIKE (column \"%s\" is not text)",
                                 noodle_type_name(ty), c->col);
        int64_t whole;
        if (!like && ty == NOODLE_TYPE_INT64 && v->type == NOODLE_TYPE_DOUBLE &&
            (!double_to_int64(v->v.d, &whole) || (double)whole != v->v.d)) {
            /* comparisons are numeric: int_col = 1.5 matches nothing, int_col < 1.5
             * compares with 1.5 (an assignment would round) */
            bc[i].v = *v;
            *never |= c->op == OP_EQ;
            continue;
        }
        int rc = convert(v, ty, c->col, bc[i].buf, &bc[i].v, x->err);
        if (rc != 0) return rc;
        if (bc[i].v.type == NOODLE_TYPE_NULL) { /* NULL compares as unknown: never true */
            *never = true;
            continue;
        }
        if (like) {
            const char *pat = bc[i].v.v.bytes.ptr;
            size_t n = bc[i].v.v.bytes.len, k = 0;
            while (k < n)
                k += pat[k] == '\\' ? 2 : 1;
            if (k > n)
                return fail_sqlstate(x->err, NOODLE_E_QUERY_DATA, "22025",
                                     "LIKE pattern must not end with escape character");
        }
        if (c->op == OP_EQ && (size_t)col == t->key && *keycond < 0) *keycond = (long)i;
    }
    return 0;
}

/* Whether a bound term holds for a cell (three-valued logic: a comparison
 * with a NULL cell is unknown, so not true). */
static bool cond_holds(const bound_cond *c, const noodle_value *cell) {
    if (c->op == OP_IS_NULL) return cell->type == NOODLE_TYPE_NULL;
    if (c->op == OP_IS_NOT_NULL) return cell->type != NOODLE_TYPE_NULL;
    if (cell->type == NOODLE_TYPE_NULL) return false;
    if (c->op == OP_LIKE || c->op == OP_NOT_LIKE) {
        bool m = like_match(cell->v.bytes.ptr, cell->v.bytes.len, c->v.v.bytes.ptr,
                            c->v.v.bytes.len, cell->type == NOODLE_TYPE_TEXT);
        return m == (c->op == OP_LIKE);
    }
    int cmp = value_cmp(cell, &c->v);
    switch (c->op) {
    case OP_EQ: return cmp == 0;
    case OP_NE: return cmp != 0;
    case OP_LT: return cmp < 0;
    case OP_LE: return cmp <= 0;
    case OP_GT: return cmp > 0;
    case OP_GE: return cmp >= 0;
    default: return false;
    }
}

static bool row_matches(const bound_cond *bc, size_t n, const row *r) {
    for (size_t i = 0; i < n; i++)
        if (!cond_holds(&bc[i], &r->cells[bc[i].col])) return false;
    return true;
}

/* The rows matching the WHERE, in key order: *out is a malloc'd array of
 * borrowed rows (caller frees; NULL when empty). Notes what was read. */
static int match_rows(exec_ctx *x, const table *t, row ***out, size_t *nout) {
    bound_cond bc[MAX_CONDS];
    long keycond;
    bool never;
    const size_t nconds = x->st->nconds;
    *out = NULL;
    *nout = 0;
    int rc = bind_conds(x, t, bc, &never, &keycond);
    if (rc != 0 || never) return rc;
    if (keycond >= 0) { /* a point lookup */
        bool from_ws;
        row *r = view_lookup(x, t, &bc[keycond].v, &from_ws);
        if (!from_ws && note_seen(x, t, &bc[keycond].v, r) != 0) return x->err->code;
        if (r == NULL || !row_matches(bc, nconds, r)) return 0;
        if ((*out = malloc(sizeof **out)) == NULL) return no_memory(x->err);
        (*out)[0] = r;
        *nout = 1;
        return 0;
    }
    view v;
    if (view_build(x, t, &v) != 0) return no_memory(x->err);
    if (v.n > 0 && (*out = malloc(v.n * sizeof **out)) == NULL) {
        view_free(&v);
        return no_memory(x->err);
    }
    for (size_t k = 0; k < v.n; k++) {
        row *r = v.rows[k];
        if (!row_matches(bc, nconds, r)) continue;
        if (r->version != 0 && note_seen(x, t, &r->cells[t->key], r) != 0) {
            view_free(&v);
            free(*out);
            *out = NULL;
            *nout = 0;
            return x->err->code;
        }
        (*out)[(*nout)++] = r;
    }
    view_free(&v);
    return 0;
}

/* Stable merge sort of rows by column col (NULLs last ascending, first
 * descending, as in PostgreSQL); tmp has room for n rows. */
static void sort_rows(row **a, row **tmp, size_t n, size_t col, bool desc) {
    if (n < 2) return;
    size_t mid = n / 2;
    sort_rows(a, tmp, mid, col, desc);
    sort_rows(a + mid, tmp, n - mid, col, desc);
    size_t i = 0, j = mid, k = 0;
    while (i < mid && j < n) {
        int c = value_cmp(&a[i]->cells[col], &a[j]->cells[col]);
        if (desc) c = -c;
        tmp[k++] = c <= 0 ? a[i++] : a[j++];
    }
    while (i < mid) tmp[k++] = a[i++];
    while (j < n) tmp[k++] = a[j++];
    memcpy(a, tmp, n * sizeof *a);
}

/* LIMIT / OFFSET value: a non-negative integer, or NULL (no limit). */
static int bind_count(exec_ctx *x, const operand *o, const char *what, int64_t *out) {
    const noodle_value *v = bind(x, o);
    if (v->type == NOODLE_TYPE_NULL) return 0;
    if (v->type == NOODLE_TYPE_INT64 && v->v.i >= 0) {
        *out = v->v.i;
        return 0;
    }
    return fail_sqlstate(x->err, NOODLE_E_QUERY_DATA, "2201W",
                         "%s must be a non-negative integer (got a %s value)", what,
                         noodle_type_name(v->type));
}

/* One column of a SELECT result. */
typedef struct outcol {
    item_kind kind;
    long col;              /* table column, or -1 for a bare value */
    const noodle_value *v; /* bare value */
    char name[MAX_NAME];
} outcol;

/* The value of an aggregate over rows, into *out (may borrow a row's cell). */
static int aggregate(exec_ctx *x, const outcol *c, row *const *rows, size_t n, noodle_value *out) {
    *out = noodle_null();
    if (c->kind == ITEM_COUNT_STAR) {
        *out = noodle_int64((int64_t)n);
        return 0;
    }
    int64_t count = 0;
    for (size_t i = 0; i < n; i++) {
        const noodle_value *v = &rows[i]->cells[c->col];
        if (v->type == NOODLE_TYPE_NULL) continue;
        count++;
        if (c->kind == ITEM_SUM && v->type == NOODLE_TYPE_INT64) {
            int64_t sum = out->type == NOODLE_TYPE_NULL ? 0 : out->v.i;
            if (__builtin_add_overflow(sum, v->v.i, &sum))
                return fail_sqlstate(x->err, NOODLE_E_QUERY_DATA, "22003",
                                     "sum(%s) is out of the int64 range", c->name);
            *out = noodle_int64(sum);
        } else if (c->kind == ITEM_SUM) {
            *out = noodle_double((out->type == NOODLE_TYPE_NULL ? 0.0 : out->v.d) + v->v.d);
        } else if (c->kind == ITEM_MAX || c->kind == ITEM_MIN) {
            int cmp = out->type == NOODLE_TYPE_NULL ? 0 : value_cmp(v, out);
            if (out->type == NOODLE_TYPE_NULL || (c->kind == ITEM_MAX ? cmp > 0 : cmp < 0))
                *out = *v;
        }
    }
    if (c->kind == ITEM_COUNT) *out = noodle_int64(count);
    return 0;
}

/* Resolve the SELECT list into columns (*out: malloc'd, caller frees). */
static int select_columns(exec_ctx *x, const table *t, outcol **out, size_t *nout) {
    static const char *const agg_names[] = {
        [ITEM_COUNT_STAR] = "count", [ITEM_COUNT] = "count", [ITEM_SUM] = "sum",
        [ITEM_MAX] = "max",          [ITEM_MIN] = "min",
    };
    const stmt *st = x->st;
    outcol *oc = calloc(st->nitems * (t && t->ncols > 1 ? t->ncols : 1), sizeof *oc);
    size_t n = 0;
    if (oc == NULL) return no_memory(x->err);
    for (size_t i = 0; i < st->nitems; i++) {
        const item *it = &st->items[i];
        if (it->kind == ITEM_STAR) {
            if (t == NULL) goto fail_star;
            for (size_t c = 0; c < t->ncols; c++, n++) {
                oc[n] = (outcol){.kind = ITEM_VALUE, .col = (long)c};
                snprintf(oc[n].name, MAX_NAME, "%s", t->cols[c].name);
            }
            continue;
        }
        outcol *c = &oc[n++];
        c->kind = it->kind;
        c->col = -1;
        if (it->v.kind == OPD_COLUMN && it->kind != ITEM_COUNT_STAR) {
            if (t == NULL || (c->col = table_col(t, it->v.col)) < 0) {
                free(oc);
                return no_column(x, it->v.col);
            }
        } else if (it->kind == ITEM_VALUE) {
            c->v = bind(x, &it->v);
        } else if (t == NULL) {
            free(oc);
            NOODLE_ERR(x->err, NOODLE_E_QUERY_UNSUPPORTED,
                       "aggregates need a FROM clause in the mock");
            return noodle_error_detail(x->err, "mock: unsupported SQL");
        }
        noodle_type ty = c->col >= 0 ? t->cols[c->col].type : NOODLE_TYPE_NULL;
        if (it->kind == ITEM_SUM && (ty == NOODLE_TYPE_TEXT || ty == NOODLE_TYPE_BLOB)) {
            free(oc);
            return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42883",
                                 "function sum(%s) does not exist", noodle_type_name(ty));
        }
        if (it->alias[0] != '\0') snprintf(c->name, MAX_NAME, "%s", it->alias);
        else if (it->kind != ITEM_VALUE) snprintf(c->name, MAX_NAME, "%s", agg_names[it->kind]);
        else if (c->col >= 0) snprintf(c->name, MAX_NAME, "%s", t->cols[c->col].name);
        else snprintf(c->name, MAX_NAME, "?column?");
    }
    *out = oc;
    *nout = n;
    return 0;
fail_star:
    free(oc);
    return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42601",
                         "SELECT * with no tables specified");
}

static int exec_select(exec_ctx *x, noodle_rows **out) {
    const stmt *st = x->st;
    const table *t = NULL;
    outcol *oc = NULL;
    row **rows = NULL, **tmp = NULL;
    noodle_value *cells = NULL;
    noodle_rows *res = NULL;
    size_t noc = 0, nrows = 1; /* without FROM: one row of bare values */
    int64_t limit = INT64_MAX, offset = 0;
    long order_col = -1;
    int rc;
    if (st->table[0] != '\0' && (t = stmt_table(x)) == NULL) return no_stmt_table(x);
    if ((rc = select_columns(x, t, &oc, &noc)) != 0) return rc;
    bool agg = false, plain_col = false;
    for (size_t i = 0; i < noc; i++) {
        agg |= oc[i].kind != ITEM_VALUE;
        plain_col |= oc[i].kind == ITEM_VALUE && oc[i].col >= 0;
    }
    if (agg && (plain_col || st->has_order)) {
        rc = fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42803",
                           "columns must appear in a GROUP BY clause or be used in an aggregate "
                           "function (the mock has no GROUP BY)");
        goto done;
    }
    if (st->has_order && (order_col = table_col(t, st->order_col)) < 0) {
        rc = no_column(x, st->order_col);
        goto done;
    }
    if ((st->has_limit && (rc = bind_count(x, &st->limit, "LIMIT", &limit)) != 0) ||
        (st->has_offset && (rc = bind_count(x, &st->offset, "OFFSET", &offset)) != 0))
        goto done;
    if (t != NULL && (rc = match_rows(x, t, &rows, &nrows)) != 0) goto done;
    if (order_col >= 0 && nrows > 1) {
        if ((tmp = malloc(nrows * sizeof *tmp)) == NULL) goto oom;
        sort_rows(rows, tmp, nrows, (size_t)order_col, st->desc);
    }
    if ((rc = noodle_rows_new(noc, &res, x->err)) != 0) goto done;
    for (size_t c = 0; c < noc; c++)
        if ((rc = noodle_rows_set_column_name(res, c, oc[c].name, x->err)) != 0) goto done;
    if ((cells = calloc(noc ? noc : 1, sizeof *cells)) == NULL) goto oom;
    size_t nout = agg ? 1 : nrows;
    for (size_t r = 0; r < nout; r++) {
        if ((int64_t)r < offset) continue;
        if ((int64_t)r - offset >= limit) break;
        for (size_t c = 0; c < noc; c++) {
            if (oc[c].kind != ITEM_VALUE) rc = aggregate(x, &oc[c], rows, t ? nrows : 0, &cells[c]);
            else cells[c] = oc[c].col >= 0 ? rows[r]->cells[oc[c].col] : *oc[c].v;
            if (rc != 0) goto done;
        }
        if ((rc = noodle_rows_append(res, cells, x->err)) != 0) goto done;
    }
    *out = res;
    res = NULL;
    goto done;
oom:
    rc = no_memory(x->err);
done:
    noodle_rows_free(res);
    free(cells);
    free(tmp);
    free(rows);
    free(oc);
    return rc;
}

/* Check the NOT NULL rules of a new row (the key is never NULL). */
static int check_not_null(exec_ctx *x, const table *t, const row *r) {
    for (size_t c = 0; c < t->ncols; c++)
        if ((c == t->key || t->cols[c].not_null) && r->cells[c].type == NOODLE_TYPE_NULL)
            return fail_sqlstate(x->err, NOODLE_E_QUERY_CONSTRAINT, "23502",
                                 "null value in column \"%s\" of relation \"%s\" violates not-null "
                                 "constraint",
                                 t->cols[c].name, t->name);
    return 0;
}

/* Fail with 23505 when key is taken in the statement's view. */
static int check_unique(exec_ctx *x, const table *t, const noodle_value *key) {
    bool from_ws;
    row *r = view_lookup(x, t, key, &from_ws);
    if (!from_ws && note_seen(x, t, key, r) != 0) return x->err->code;
    if (r == NULL) return 0;
    return fail_sqlstate(x->err, NOODLE_E_QUERY_CONSTRAINT, "23505",
                         "duplicate key value violates unique constraint \"%s_pkey\": key (%s) "
                         "already exists",
                         t->name, t->cols[t->key].name);
}

/* True when a and b agree on every column of u and none of them is NULL (a
 * NULL is distinct from everything, as in SQLite and PostgreSQL). */
static bool uniq_equal(const uniq *u, const row *a, const row *b) {
    for (size_t i = 0; i < u->ncols; i++) {
        const noodle_value *va = &a->cells[u->cols[i]], *vb = &b->cells[u->cols[i]];
        if (va->type == NOODLE_TYPE_NULL || vb->type == NOODLE_TYPE_NULL || value_cmp(va, vb) != 0)
            return false;
    }
    return true;
}

/* *found: the row of the statement's view, other than the one whose key is
 * self (NULL: none), that agrees with r on constraint u; NULL when none. */
static int uniq_find(exec_ctx *x, const table *t, const uniq *u, const row *r,
                     const noodle_value *self, row **found) {
    *found = NULL;
    for (size_t i = 0; i < u->ncols; i++)
        if (r->cells[u->cols[i]].type == NOODLE_TYPE_NULL) return 0;
    view v;
    if (view_build(x, t, &v) != 0) return no_memory(x->err);
    for (size_t k = 0; k < v.n && *found == NULL; k++) {
        if (self != NULL && value_cmp(&v.rows[k]->cells[t->key], self) == 0) continue;
        if (uniq_equal(u, v.rows[k], r)) *found = v.rows[k];
    }
    view_free(&v);
    return 0;
}

static int uniq_violated(noodle_error *err, const table *t, const uniq *u, const char *when) {
    char cols[MAX_KEY_COLS * MAX_NAME] = "";
    for (size_t i = 0; i < u->ncols; i++) {
        size_t used = strlen(cols);
        snprintf(cols + used, sizeof cols - used, "%s%s", i ? ", " : "", t->cols[u->cols[i]].name);
    }
    return fail_sqlstate(err, NOODLE_E_QUERY_CONSTRAINT, "23505",
                         "duplicate key value violates unique constraint \"%s\": key (%s) %s",
                         u->name, cols, when);
}

/* Fail with 23505 when r, a new row (old NULL) or the new version of old,
 * duplicates another row of the view on a UNIQUE or composite PRIMARY KEY
 * constraint. Constraints whose cells an update left alone are not checked. */
static int check_uniqs(exec_ctx *x, const table *t, const row *r, const row *old) {
    for (size_t i = 0; i < t->nuniqs; i++) {
        const uniq *u = &t->uniqs[i];
        if (old != NULL) {
            size_t k = 0;
            while (k < u->ncols && value_cmp(&old->cells[u->cols[k]], &r->cells[u->cols[k]]) == 0)
                k++;
            if (k == u->ncols) continue;
        }
        row *dup;
        int rc = uniq_find(x, t, u, r, old ? &old->cells[t->key] : NULL, &dup);
        if (rc != 0) return rc;
        if (dup != NULL) return uniq_violated(x->err, t, u, "already exists");
    }
    return 0;
}

/* Store v (converted to the column's type) into cell c of r (replacing it). */
static int store(exec_ctx *x, const table *t, row *r, size_t c, const noodle_value *v) {
    char buf[64];
    noodle_value conv;
    int rc = convert(v, t->cols[c].type, t->cols[c].name, buf, &conv, x->err);
    if (rc != 0) return rc;
    cell_free(&r->cells[c]);
    if (cell_dup(&r->cells[c], &conv) != 0) return no_memory(x->err);
    return 0;
}

/* A term of an assignment: a value, a column of the old row, or a column of
 * the row an upsert proposed (excluded). */
static const noodle_value *term(exec_ctx *x, const table *t, const row *old, const row *excluded,
                                const operand *o) {
    if (o->kind == OPD_COLUMN) return &old->cells[table_col(t, o->col)];
    if (o->kind == OPD_EXCLUDED) return &excluded->cells[table_col(t, o->col)];
    return bind(x, o);
}

/* a op b for numbers; NULL when either is NULL. buf: text of a number. */
static int arith(exec_ctx *x, const noodle_value *a, char op, const noodle_value *b,
                 noodle_value *out) {
    if (a->type == NOODLE_TYPE_NULL || b->type == NOODLE_TYPE_NULL) {
        *out = noodle_null();
        return 0;
    }
    bool num_a = a->type == NOODLE_TYPE_INT64 || a->type == NOODLE_TYPE_DOUBLE;
    bool num_b = b->type == NOODLE_TYPE_INT64 || b->type == NOODLE_TYPE_DOUBLE;
    if (!num_a || !num_b)
        return fail_sqlstate(x->err, NOODLE_E_QUERY_DATA, "22P02",
                             "cannot compute %s %c %s: both sides must be numbers",
                             noodle_type_name(a->type), op, noodle_type_name(b->type));
    if (a->type == NOODLE_TYPE_INT64 && b->type == NOODLE_TYPE_INT64) {
        int64_t r;
        bool ovf = op == '+' ? __builtin_add_overflow(a->v.i, b->v.i, &r)
                             : __builtin_sub_overflow(a->v.i, b->v.i, &r);
        if (ovf) return fail_sqlstate(x->err, NOODLE_E_QUERY_DATA, "22003", "int64 out of range");
        *out = noodle_int64(r);
        return 0;
    }
    double da = a->type == NOODLE_TYPE_INT64 ? (double)a->v.i : a->v.d;
    double db = b->type == NOODLE_TYPE_INT64 ? (double)b->v.i : b->v.d;
    *out = noodle_double(op == '+' ? da + db : da - db);
    return 0;
}

/* Resolve the SET list: target columns and column terms must exist, no
 * column twice, arithmetic only on numeric columns. */
static int check_assigns(exec_ctx *x, const table *t, size_t target[MAX_COLS]) {
    const stmt *st = x->st;
    for (size_t i = 0; i < st->nassigns; i++) {
        const assign *a = &st->assigns[i];
        long c = table_col(t, a->col);
        if (c < 0) return no_column(x, a->col);
        for (size_t j = 0; j < i; j++)
            if (target[j] == (size_t)c)
                return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42601",
                                     "multiple assignments to the same column \"%s\"", a->col);
        target[i] = (size_t)c;
        const operand *terms[2] = {&a->a, a->op ? &a->b : NULL};
        for (size_t k = 0; k < 2; k++) {
            if (terms[k] == NULL ||
                (terms[k]->kind != OPD_COLUMN && terms[k]->kind != OPD_EXCLUDED))
                continue;
            long tc = table_col(t, terms[k]->col);
            if (tc < 0) return no_column(x, terms[k]->col);
            noodle_type ty = t->cols[tc].type;
            if (a->op && ty != NOODLE_TYPE_INT64 && ty != NOODLE_TYPE_DOUBLE)
                return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42883",
                                     "operator does not exist: %s %c ...", noodle_type_name(ty),
                                     a->op);
        }
    }
    return 0;
}

/* Apply the SET list to old (excluded: the row an upsert proposed, or NULL),
 * check the new row and add it to the write set. */
static int update_row(exec_ctx *x, const table *t, const size_t target[MAX_COLS], const row *old,
                      const row *excluded) {
    const stmt *st = x->st;
    row *r = row_dup(old);
    if (r == NULL) return no_memory(x->err);
    int rc = 0;
    for (size_t k = 0; k < st->nassigns && rc == 0; k++) {
        const assign *a = &st->assigns[k];
        noodle_value v = *term(x, t, old, excluded, &a->a);
        if (a->op) rc = arith(x, &v, a->op, term(x, t, old, excluded, &a->b), &v);
        if (rc == 0) rc = store(x, t, r, target[k], &v);
    }
    if (rc == 0) rc = check_not_null(x, t, r);
    bool key_changed = rc == 0 && value_cmp(&old->cells[t->key], &r->cells[t->key]) != 0;
    if (key_changed) rc = check_unique(x, t, &r->cells[t->key]);
    if (rc == 0) rc = check_uniqs(x, t, r, old);
    if (rc != 0) {
        row_free(r);
        return rc;
    }
    if (!key_changed) {
        if (wset_push(x->ws, WOP_UPDATE, t->id, &r->cells[t->key], r) != 0)
            return no_memory(x->err);
        return 0;
    }
    /* the old key goes, the new one must be free at commit too */
    if (wset_push(x->ws, WOP_DELETE, t->id, &old->cells[t->key], NULL) != 0) {
        row_free(r);
        return no_memory(x->err);
    }
    if (wset_push(x->ws, WOP_INSERT, t->id, &r->cells[t->key], r) != 0) return no_memory(x->err);
    return 0;
}

static int exec_update(exec_ctx *x, int64_t *affected) {
    table *t = stmt_table(x);
    size_t target[MAX_COLS], before = x->ws->n, nrows = 0;
    row **rows = NULL;
    if (t == NULL) return no_stmt_table(x);
    int rc = check_assigns(x, t, target);
    if (rc == 0) rc = match_rows(x, t, &rows, &nrows);
    for (size_t i = 0; i < nrows && rc == 0; i++)
        rc = update_row(x, t, target, rows[i], NULL);
    free(rows);
    if (rc != 0)
        wset_truncate(x->ws, before); /* invariant 6 */
    else
        *affected = (int64_t)nrows;
    return rc;
}

/* The arbiter of ON CONFLICT (cols): ARBITER_KEY, or the index of the
 * constraint in t->uniqs whose columns are exactly these (in any order).
 * Fails with 5001 (42703 unknown column, 42P10 no such constraint). */
#define ARBITER_KEY (-1L)
#define ARBITER_ANY (-2L) /* ON CONFLICT DO NOTHING without a target: every constraint */
static int conflict_arbiter(exec_ctx *x, const table *t, long *which) {
    const stmt *st = x->st;
    bool in_target[MAX_COLS] = {false};
    size_t distinct = 0, first = 0;
    *which = ARBITER_ANY;
    if (st->nconflict_cols == 0) return 0;
    for (size_t i = 0; i < st->nconflict_cols; i++) {
        long c = table_col(t, st->conflict_cols[i]);
        if (c < 0) return no_column(x, st->conflict_cols[i]);
        if (!in_target[c]) distinct++;
        in_target[c] = true;
        first = (size_t)c;
    }
    if (!t->rowid && distinct == 1 && first == t->key) {
        *which = ARBITER_KEY;
        return 0;
    }
    for (size_t i = 0; i < t->nuniqs; i++) {
        const uniq *u = &t->uniqs[i];
        size_t k = 0;
        while (k < u->ncols && in_target[u->cols[k]])
            k++;
        if (k == u->ncols && u->ncols == distinct) {
            *which = (long)i;
            return 0;
        }
    }
    return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42P10",
                         "there is no unique or exclusion constraint matching the ON CONFLICT "
                         "specification");
}

/* *found: the row of the view the proposed row r conflicts with on the
 * arbiter, or NULL. */
static int find_conflict(exec_ctx *x, const table *t, long which, const row *r, row **found) {
    *found = NULL;
    if ((which == ARBITER_KEY || which == ARBITER_ANY) && !t->rowid) {
        bool from_ws;
        *found = view_lookup(x, t, &r->cells[t->key], &from_ws);
        if (!from_ws && note_seen(x, t, &r->cells[t->key], *found) != 0) return x->err->code;
        if (*found != NULL || which == ARBITER_KEY) return 0;
    }
    for (size_t i = 0; i < t->nuniqs && *found == NULL; i++) {
        if (which != ARBITER_ANY && which != (long)i) continue;
        int rc = uniq_find(x, t, &t->uniqs[i], r, NULL, found);
        if (rc != 0) return rc;
    }
    return 0;
}

/* True when the row was written by this statement (write-set operations from
 * position before on). */
static bool written_since(const exec_ctx *x, size_t before, const row *r) {
    for (size_t i = before; i < x->ws->n; i++)
        if (x->ws->ops[i].row == r) return true;
    return false;
}

/* INSERT, and INSERT ... ON CONFLICT: a proposed row that conflicts with an
 * existing one on the arbiter is skipped (DO NOTHING) or turns into an update
 * of that row (DO UPDATE); affected counts the rows inserted or updated. */
static int exec_insert(exec_ctx *x, int64_t *affected) {
    const stmt *st = x->st;
    table *t = stmt_table(x);
    size_t map[MAX_COLS], target[MAX_COLS];
    long arbiter = ARBITER_ANY;
    if (t == NULL) return no_stmt_table(x);
    if (st->ninscols == 0 && st->width > t->ncols)
        return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42601",
                             "INSERT has more expressions than target columns");
    for (size_t k = 0; k < st->width; k++) {
        long c = st->ninscols ? table_col(t, st->inscols[k]) : (long)k;
        if (c < 0) return no_column(x, st->inscols[k]);
        for (size_t j = 0; j < k; j++)
            if (map[j] == (size_t)c)
                return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42701",
                                     "column \"%s\" specified more than once", t->cols[c].name);
        map[k] = (size_t)c;
    }
    int rc = 0;
    if (st->conflict != CONFLICT_NONE && (rc = conflict_arbiter(x, t, &arbiter)) != 0) return rc;
    if (st->conflict == CONFLICT_UPDATE && (rc = check_assigns(x, t, target)) != 0) return rc;
    size_t before = x->ws->n, ntuples = st->nvals / st->width;
    int64_t changed = 0;
    for (size_t tu = 0; tu < ntuples && rc == 0; tu++) {
        row *r = row_new(table_width(t)), *old = NULL;
        if (r == NULL) {
            rc = no_memory(x->err);
            break;
        }
        for (size_t k = 0; k < st->width && rc == 0; k++)
            rc = store(x, t, r, map[k], bind(x, &st->vals[tu * st->width + k]));
        if (rc == 0) rc = check_not_null(x, t, r);
        if (rc == 0 && st->conflict != CONFLICT_NONE) rc = find_conflict(x, t, arbiter, r, &old);
        if (rc == 0 && old != NULL) {
            if (st->conflict == CONFLICT_UPDATE && written_since(x, before, old))
                rc = fail_sqlstate(x->err, NOODLE_E_QUERY_FAILED, "21000",
                                   "ON CONFLICT DO UPDATE command cannot affect row a second "
                                   "time (two proposed rows have the same key)");
            else if (st->conflict == CONFLICT_UPDATE &&
                     (rc = update_row(x, t, target, old, r)) == 0)
                changed++;
            row_free(r);
            continue;
        }
        if (rc == 0 && !t->rowid) rc = check_unique(x, t, &r->cells[t->key]);
        if (rc == 0) rc = check_uniqs(x, t, r, NULL);
        if (rc != 0) {
            row_free(r);
            break;
        }
        if (t->rowid) r->cells[t->key] = noodle_int64(++t->next_rowid);
        if (wset_push(x->ws, WOP_INSERT, t->id, &r->cells[t->key], r) != 0) rc = no_memory(x->err);
        changed++;
    }
    if (rc != 0) wset_truncate(x->ws, before); /* invariant 6 */
    else
        *affected = changed;
    return rc;
}

static int exec_delete(exec_ctx *x, int64_t *affected) {
    table *t = stmt_table(x);
    size_t before = x->ws->n, nrows = 0;
    row **rows = NULL;
    if (t == NULL) return no_stmt_table(x);
    int rc = match_rows(x, t, &rows, &nrows);
    for (size_t i = 0; i < nrows && rc == 0; i++)
        if (wset_push(x->ws, WOP_DELETE, t->id, &rows[i]->cells[t->key], NULL) != 0)
            rc = no_memory(x->err);
    free(rows);
    if (rc != 0) wset_truncate(x->ws, before); /* invariant 6 */
    else *affected = (int64_t)nrows;
    return rc;
}

/* Add constraint (primary or UNIQUE) on cols[0..n) to u[*nu], named as
 * PostgreSQL would name it. */
static void add_uniq(uniq *u, size_t *nu, const table *t, bool primary, const size_t *cols,
                     size_t n) {
    uniq *k = &u[(*nu)++];
    k->primary = primary;
    k->ncols = n;
    memcpy(k->cols, cols, n * sizeof *cols);
    char name[(MAX_KEY_COLS + 2) * MAX_NAME];
    size_t used = (size_t)snprintf(name, sizeof name, "%s", t->name);
    for (size_t i = 0; !primary && i < n; i++)
        used += (size_t)snprintf(name + used, sizeof name - used, "_%s", t->cols[cols[i]].name);
    snprintf(name + used, sizeof name - used, primary ? "_pkey" : "_key");
    used = strlen(name) < MAX_NAME ? strlen(name) : MAX_NAME - 1; /* PostgreSQL shortens too */
    memcpy(k->name, name, used);
    k->name[used] = '\0';
}

/* Resolve the column and table constraints of CREATE into t: the key (a
 * single-column primary key, else the hidden rowid) and t->uniqs. */
static int create_constraints(exec_ctx *x, table *t) {
    const stmt *st = x->st;
    size_t nu = 0, npk = 0, cols[MAX_KEY_COLS];
    long pk = -1; /* index in u of the primary key */
    uniq *u = calloc(2 * st->ncols + st->nkeys + 1, sizeof *u);
    if (u == NULL) return no_memory(x->err);
    for (size_t c = 0; c < st->ncols; c++) {
        if (st->cols[c].primary) {
            pk = (long)nu;
            npk++;
            add_uniq(u, &nu, t, true, &c, 1);
        }
        if (st->cols[c].unique) add_uniq(u, &nu, t, false, &c, 1);
    }
    for (size_t i = 0; i < st->nkeys; i++) {
        const keydef *k = &st->keys[i];
        for (size_t j = 0; j < k->ncols; j++) {
            long c = table_col(t, k->cols[j]);
            if (c < 0) {
                free(u);
                return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42703",
                                     "column \"%s\" named in key does not exist", k->cols[j]);
            }
            for (size_t m = 0; m < j; m++)
                if (cols[m] == (size_t)c) {
                    free(u);
                    return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42701",
                                         "column \"%s\" appears twice in a key", k->cols[j]);
                }
            cols[j] = (size_t)c;
        }
        if (k->primary) {
            pk = (long)nu;
            npk++;
        }
        add_uniq(u, &nu, t, k->primary, cols, k->ncols);
    }
    if (npk > 1) {
        free(u);
        return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42P16",
                             "multiple primary keys for table \"%s\" are not allowed", t->name);
    }
    t->rowid = pk < 0 || u[pk].ncols > 1;
    t->key = t->rowid ? t->ncols : u[pk].cols[0];
    if (pk >= 0)
        for (size_t j = 0; j < u[pk].ncols; j++)
            t->cols[u[pk].cols[j]].not_null = true;
    /* the key needs no constraint of its own: it is unique by construction */
    size_t kept = 0;
    for (size_t i = 0; i < nu; i++)
        if (t->rowid || u[i].ncols != 1 || u[i].cols[0] != t->key) u[kept++] = u[i];
    t->uniqs = u;
    t->nuniqs = kept;
    return 0;
}

static int exec_create(exec_ctx *x) {
    const stmt *st = x->st;
    node *n = x->n;
    const char *schema = st->schema;
    if (schema[0] != '\0' && strcmp(schema, "main") != 0 && strcmp(schema, "public") != 0)
        return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "3F000",
                             "schema \"%s\" does not exist (the mock has main / public only)",
                             schema);
    if (find_table(n, st->table) != NULL) {
        if (st->if_flag) return 0;
        return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42P07",
                             "relation \"%s\" already exists", st->table);
    }
    for (size_t c = 0; c < st->ncols; c++)
        for (size_t j = 0; j < c; j++)
            if (strcmp(st->cols[j].name, st->cols[c].name) == 0)
                return fail_sqlstate(x->err, NOODLE_E_QUERY_SYNTAX, "42701",
                                     "column \"%s\" specified more than once", st->cols[c].name);
    table *t = calloc(1, sizeof *t);
    if (t == NULL) return no_memory(x->err);
    t->cols = calloc(st->ncols, sizeof *t->cols);
    if (t->cols == NULL) {
        table_free(t);
        return no_memory(x->err);
    }
    for (size_t c = 0; c < st->ncols; c++) {
        snprintf(t->cols[c].name, MAX_NAME, "%s", st->cols[c].name);
        t->cols[c].type = st->cols[c].type;
        t->cols[c].not_null = st->cols[c].not_null;
    }
    snprintf(t->name, MAX_NAME, "%s", st->table);
    t->ncols = st->ncols;
    int rc = create_constraints(x, t);
    if (rc != 0) {
        table_free(t);
        return rc;
    }
    t->id = ++n->next_table_id;
    t->next = n->tables;
    n->tables = t;
    return 0;
}

static int exec_drop(exec_ctx *x) {
    table *t = stmt_table(x);
    if (t == NULL) return x->st->if_flag ? 0 : no_stmt_table(x);
    for (table **pt = &x->n->tables; *pt != NULL; pt = &(*pt)->next) {
        if (*pt != t) continue;
        *pt = t->next;
        table_free(t);
        break;
    }
    return 0;
}

/* ---- commits ------------------------------------------------------------------------- */

typedef struct undo {
    table *t;
    wop *op;
    row *old; /* the row replaced or removed; NULL for an insert */
} undo;

/* Put the table back as it was before u was applied. */
static void undo_one(const undo *u) {
    table *t = u->t;
    size_t idx;
    bool found = rows_find(t->rows, t->nrows, t->key, &u->op->key, &idx);
    (void)found; /* only asserted: undo follows a successful apply */
    if (u->op->kind == WOP_INSERT) {
        assert(found);
        rows_remove_at(t->rows, &t->nrows, idx);
        u->op->row->version = 0;
    } else if (u->op->kind == WOP_UPDATE) {
        assert(found);
        t->rows[idx] = u->old;
        u->op->row->version = 0;
    } else {
        assert(!found);
        /* cannot fail: the removal left room in the array */
        rows_insert_at(&t->rows, &t->nrows, &t->cap, idx, u->old);
    }
}

/* Fail with 23505 when committed row r duplicates another committed row of t
 * on a UNIQUE or composite PRIMARY KEY constraint. */
static int committed_uniq_conflict(const table *t, const row *r, noodle_error *err) {
    for (size_t i = 0; i < t->nuniqs; i++)
        for (size_t k = 0; k < t->nrows; k++)
            if (t->rows[k] != r && uniq_equal(&t->uniqs[i], t->rows[k], r))
                return uniq_violated(err, t, &t->uniqs[i],
                                     "was committed first by another session");
    return 0;
}

/* Apply a write set as one commit (node mu held): all of it or, on a failure,
 * none of it. On success the new rows are moved from the write set into the
 * tables (their ops keep row == NULL) and commit_seq advances. Fails with
 * 5002 (the key of an insert was taken by another commit; with recheck, a
 * UNIQUE value too: a transaction's statements checked them against what
 * they saw, an autocommit statement against what is committed now), 5001 (a
 * table was dropped meanwhile) or 4008. */
static int apply_wset(node *n, wset *ws, bool recheck, noodle_error *err) {
    if (ws->n == 0) return 0;
    undo *u = malloc(ws->n * sizeof *u);
    if (u == NULL) return no_memory(err);
    const uint64_t seq = n->commit_seq + 1;
    size_t nu = 0;
    int rc = 0;
    for (size_t i = 0; i < ws->n && rc == 0; i++) {
        wop *op = &ws->ops[i];
        table *t = find_table_id(n, op->table_id);
        size_t idx;
        if (t == NULL) {
            rc = fail_sqlstate(err, NOODLE_E_QUERY_SYNTAX, "42P01",
                               "a table this transaction wrote was dropped by another session");
            break;
        }
        bool found = rows_find(t->rows, t->nrows, t->key, &op->key, &idx);
        if (op->kind == WOP_INSERT) {
            if (found) {
                rc = fail_sqlstate(err, NOODLE_E_QUERY_CONSTRAINT, "23505",
                                   "duplicate key value violates unique constraint \"%s_pkey\": "
                                   "another session committed the same key (%s) first",
                                   t->name, t->rowid ? "rowid" : t->cols[t->key].name);
                break;
            }
            if (rows_insert_at(&t->rows, &t->nrows, &t->cap, idx, op->row) != 0) {
                rc = no_memory(err);
                break;
            }
            op->row->version = seq;
            u[nu++] = (undo){t, op, NULL};
        } else if (found && op->kind == WOP_UPDATE) {
            u[nu++] = (undo){t, op, t->rows[idx]};
            t->rows[idx] = op->row;
            op->row->version = seq;
        } else if (found) { /* WOP_DELETE */
            u[nu++] = (undo){t, op, rows_remove_at(t->rows, &t->nrows, idx)};
            continue;
        } else {
            continue; /* an update or delete of a row another commit deleted does nothing */
        }
        if (recheck && t->nuniqs > 0) rc = committed_uniq_conflict(t, op->row, err);
    }
    if (rc != 0) {
        while (nu > 0) undo_one(&u[--nu]);
        free(u);
        return rc;
    }
    for (size_t k = 0; k < nu; k++) {
        row_free(u[k].old);
        if (u[k].op->kind != WOP_DELETE) u[k].op->row = NULL; /* moved into the table */
    }
    free(u);
    n->commit_seq = seq;
    return 0;
}

/* REPEATABLE READ / SERIALIZABLE: every key the transaction read or wrote
 * must still be at the version it saw, and that version must not be newer
 * than the transaction's start. */
static int validate_reads(node *n, const session *s, noodle_error *err) {
    for (size_t i = 0; i < s->seen.n; i++) {
        const seen *e = &s->seen.v[i];
        const table *t = find_table_id(n, e->table_id);
        const row *r = t ? table_get(t, &e->key) : NULL;
        uint64_t now = r ? r->version : 0;
        if (now != e->version || e->version > s->snapshot)
            return fail_sqlstate(err, NOODLE_E_QUERY_SERIALIZATION, "40001",
                                 "could not serialize access due to a concurrent update%s%s",
                                 t ? " of table " : "", t ? t->name : "");
    }
    return 0;
}

/* Total bytes of stored values (metrics). */
static int64_t node_size(const node *n) {
    int64_t bytes = 0;
    for (const table *t = n->tables; t != NULL; t = t->next)
        for (size_t r = 0; r < t->nrows; r++)
            for (size_t c = 0; c < t->ncols; c++) bytes += value_size(&t->rows[r]->cells[c]);
    return bytes;
}

/* ---- faults: the prelude of every call ----------------------------------------------- */

/* splitmix64: small, fast, and the same sequence for the same seed everywhere. */
static uint64_t rng_next(uint64_t *state) {
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* One backend call on a node. */
typedef struct call {
    node *n;
    session *s; /* NULL for a connect */
    const noodle_clock *clock;
    noodle_mock_op op;
    int64_t deadline;
} call;

static bool call_alive(const call *c) {
    return c->s != NULL ? c->s->state != SESSION_DEAD : c->n->state == NODE_UP;
}

/* The session is dead, or (connect) the node does not accept connections. */
static int call_lost(const call *c, noodle_error *err) {
    if (c->s != NULL) {
        NOODLE_ERR(err, NOODLE_E_CONNECTION_LOST,
                   "mock node '%s': the connection was lost (node crashed or reset, session "
                   "terminated, or an earlier fault killed it)",
                   c->n->name);
        return noodle_error_detail(err, "mock: session dead");
    }
    NOODLE_ERR(err, NOODLE_E_CONNECT_FAILED, "mock node '%s' does not accept connections: %s",
               c->n->name,
               c->n->state == NODE_CRASHED ? "it crashed (noodle_mock_node_restart brings it back)"
                                           : "it was dropped by noodle_mock_reset");
    return noodle_error_detail(err, "mock: node down");
}

/* A deadline cut the call short: the connection dies (4004; connect 4002). */
static int call_timeout(const call *c, bool injected, const char *why, noodle_error *err) {
    if (injected) c->n->stats.failures[c->op]++;
    if (c->s != NULL) kill_session(c->n, c->s);
    NOODLE_ERR(err, c->s ? NOODLE_E_BACKEND_TIMEOUT : NOODLE_E_CONNECT_TIMEOUT,
               "mock node '%s': %s did not complete before its deadline (%s)", c->n->name,
               noodle_mock_op_name(c->op), why);
    return noodle_error_detail(err, "mock: deadline");
}

/* An injected failure; a connection-fatal code kills the session. */
static int call_inject(const call *c, int code, const char *fault_name, noodle_error *err) {
    c->n->stats.failures[c->op]++;
    if (c->s != NULL && noodle_code_is_connection_fatal(code)) kill_session(c->n, c->s);
    NOODLE_ERR(err, code, "mock node '%s': injected failure of %s (%s)", c->n->name,
               noodle_mock_op_name(c->op), fault_name);
    return noodle_error_detail(err, "mock fault %s", fault_name);
}

/* Enter a call: lock the node, count the call, then in order: a dead session
 * (4003) or a node that refuses connects (4001), a deadline already passed,
 * fail_next, fail_probability, latency, hang. Returns with the node mutex
 * held whatever the outcome (call_leave releases it); 0 when the call may go
 * on. The mutex is released while sleeping and while waiting in a hang
 * (invariant 2), so anything may have changed when a wait ends. */
static int call_enter(call *c, noodle_error *err) {
    node *n = c->n;
    pthread_mutex_lock(&n->mu);
    n->stats.calls[c->op]++;
    if (!call_alive(c)) return call_lost(c, err);
    int64_t now = noodle_clock_now(c->clock);
    if (c->deadline <= now)
        return call_timeout(c, false, "it had passed when the call started", err);

    fault *own = &n->faults[c->op], *any = &n->faults[NOODLE_MOCK_OP_ANY];
    fault *f = own->fail_next > 0 ? own : any->fail_next > 0 ? any : NULL;
    if (f != NULL) {
        f->fail_next--;
        return call_inject(c, f->fail_next_code, "fail_next", err);
    }
    f = own->fail_p > 0 ? own : any->fail_p > 0 ? any : NULL;
    if (f != NULL && (double)(rng_next(&n->rng) >> 11) * 0x1.0p-53 < f->fail_p)
        return call_inject(c, f->fail_p_code, "fail_probability", err);

    /* what the call starts with; later changes do not affect it (but a clear
     * of the hang that blocks it releases it) */
    int64_t latency = own->latency_ns > 0 ? own->latency_ns : any->latency_ns;
    fault *hang = own->hang ? own : any->hang ? any : NULL;
    uint64_t epoch = hang ? hang->hang_epoch : 0;

    if (latency > 0) {
        bool cut = latency > c->deadline - now; /* deadline > now: no overflow */
        pthread_mutex_unlock(&n->mu);
        noodle_clock_sleep_until(c->clock, cut ? c->deadline : now + latency);
        pthread_mutex_lock(&n->mu);
        if (!call_alive(c)) return call_lost(c, err);
        if (cut) {
            char why[96];
            snprintf(why, sizeof why, "injected latency of %" PRId64 " ms", latency / 1000000);
            return call_timeout(c, true, why, err);
        }
    }
    while (hang != NULL && hang->hang && hang->hang_epoch == epoch && call_alive(c)) {
        if (noodle_clock_now(c->clock) >= c->deadline)
            return call_timeout(c, true, "the operation is hung by a fault", err);
        noodle_clock_cond_wait_until(c->clock, &n->hang_cond, &n->mu, c->deadline);
    }
    if (!call_alive(c)) return call_lost(c, err);
    return 0;
}

static void call_leave(call *c) { pthread_mutex_unlock(&c->n->mu); }

/* Start a call on an open session. */
static call session_call(session *s, noodle_mock_op op, int64_t deadline) {
    return (call){s->node, s, s->clock, op, deadline};
}

/* A successful commit whose acknowledgement is to be lost (node mu held):
 * the writes stay, the session dies, the call fails with 4003. */
static int maybe_lose_ack(call *c, noodle_error *err) {
    node *n = c->n;
    n->stats.commits++;
    if (n->ack_lost <= 0) return 0;
    n->ack_lost--;
    n->stats.failures[c->op]++;
    kill_session(n, c->s);
    NOODLE_ERR(err, NOODLE_E_CONNECTION_LOST,
               "mock node '%s': the connection was lost while committing (the commit was applied; "
               "its acknowledgement was lost)",
               n->name);
    return noodle_error_detail(err, "mock fault commit_ack_lost");
}

/* ---- the operations table ------------------------------------------------------------ */

/* The connection layer always passes an error object; a direct caller may
 * not, and noodle_error_detail(NULL, ...) returns 0, so give every operation
 * one of its own. */
#define ENSURE_ERR(err)             \
    noodle_error local_err_;        \
    if ((err) == NULL) (err) = &local_err_

/* "mock://<node>", "mock://" or "" (the node "default"): the node name into
 * name. 4001 for anything else, as for any unreachable database. */
static int parse_url(const char *url, char name[MAX_NAME], noodle_error *err) {
    static const char scheme[] = "mock://";
    const char *p = url;
    if (strncmp(url, scheme, sizeof scheme - 1) == 0) p = url + sizeof scheme - 1;
    else if (url[0] != '\0') p = NULL;
    if (p != NULL && *p == '\0') p = "default";
    if (p == NULL || !node_name_valid(p, strlen(p))) {
        NOODLE_ERR(err, NOODLE_E_CONNECT_FAILED,
                   "\"%.200s\" is not a mock URL: expected mock://<node> with a node name of 1 to "
                   "63 letters, digits, '_' or '-'",
                   url);
        return noodle_error_detail(err, "mock: bad url");
    }
    snprintf(name, MAX_NAME, "%s", p);
    return 0;
}

static int mock_connect(const noodle_connect_params *p, void **handle, noodle_error *err) {
    ENSURE_ERR(err);
    char name[MAX_NAME];
    *handle = NULL;
    int rc = parse_url(p->url, name, err);
    if (rc != 0) return rc;
    session *s = calloc(1, sizeof *s);
    if (s == NULL) goto fail;
    pthread_mutex_lock(&registry_mu);
    node *n = registry_get(name, true);
    if (n != NULL) n->refs++; /* the session's (or, on failure, this attempt's) reference */
    pthread_mutex_unlock(&registry_mu);
    if (n == NULL) goto fail_session;

    call c = {n, NULL, p->clock ? p->clock : noodle_clock_real(), NOODLE_MOCK_OP_CONNECT,
              p->deadline};
    rc = call_enter(&c, err);
    if (rc == 0) {
        *s = (session){.node = n, .clock = c.clock, .state = SESSION_IDLE, .next = n->sessions};
        if (n->sessions != NULL) n->sessions->prev = s;
        n->sessions = s;
        n->stats.connects_total++;
        if (++n->stats.open_connections > n->stats.peak_connections)
            n->stats.peak_connections = n->stats.open_connections;
    }
    call_leave(&c);
    if (rc != 0) {
        free(s);
        node_unref(n);
        return rc;
    }
    *handle = s;
    return 0;
fail_session:
    free(s);
fail:
    return no_memory(err);
}

static void mock_close(void *handle) {
    session *s = handle;
    if (s == NULL) return;
    node *n = s->node;
    pthread_mutex_lock(&n->mu);
    if (s->state != SESSION_DEAD) n->stats.open_connections--;
    if (s->prev != NULL) s->prev->next = s->next;
    else n->sessions = s->next;
    if (s->next != NULL) s->next->prev = s->prev;
    pthread_mutex_unlock(&n->mu);
    wset_free(&s->ws);
    seenset_free(&s->seen);
    free(s->sps);
    free(s);
    node_unref(n);
}

static int mock_validate(void *handle, int64_t deadline, noodle_error *err) {
    ENSURE_ERR(err);
    call c = session_call(handle, NOODLE_MOCK_OP_VALIDATE, deadline);
    int rc = call_enter(&c, err);
    call_leave(&c);
    return rc;
}

/* Run a parsed statement (node mu held). */
static int run_stmt(call *c, const stmt *st, const noodle_value *params, noodle_rows **out,
                    noodle_error *err) {
    node *n = c->n;
    session *s = c->s;
    const bool write = st->kind != ST_SELECT;
    const bool in_txn = s->state == SESSION_TXN;
    if (write && n->role != NOODLE_ROLE_PRIMARY)
        return fail_sqlstate(err, NOODLE_E_QUERY_READ_ONLY, "25006",
                             "cannot write on mock node '%s': it is %s", n->name,
                             n->role == NOODLE_ROLE_STANDBY ? "a standby" : "read-only");
    if (in_txn && (st->kind == ST_CREATE || st->kind == ST_DROP)) {
        NOODLE_ERR(err, NOODLE_E_QUERY_UNSUPPORTED,
                   "CREATE / DROP TABLE inside a transaction is not supported by the mock");
        return noodle_error_detail(err, "mock: unsupported SQL");
    }
    wset local = {0};
    exec_ctx x = {n, s, st, params, in_txn ? &s->ws : &local,
                  in_txn && s->iso >= NOODLE_ISOLATION_REPEATABLE_READ, err};
    noodle_rows *res = NULL;
    int64_t affected = 0;
    int rc;
    switch (st->kind) {
    case ST_SELECT: rc = exec_select(&x, &res); break;
    case ST_INSERT: rc = exec_insert(&x, &affected); break;
    case ST_UPDATE: rc = exec_update(&x, &affected); break;
    case ST_DELETE: rc = exec_delete(&x, &affected); break;
    case ST_CREATE: rc = exec_create(&x); break;
    case ST_DROP: rc = exec_drop(&x); break;
    default: rc = NOODLE_ERR(err, NOODLE_E_BACKEND_INTERNAL, "unknown statement kind"); break;
    }
    if (rc == 0 && write) {
        rc = noodle_rows_new(0, &res, err);
        if (rc == 0) noodle_rows_set_affected(res, affected);
        if (rc == 0 && !in_txn) { /* autocommit: apply now, under the same lock hold */
            rc = apply_wset(n, &local, false, err);
            if (rc == 0) rc = maybe_lose_ack(c, err);
        }
    }
    wset_free(&local);
    if (rc != 0) noodle_rows_free(res);
    else *out = res;
    return rc;
}

static int mock_execute(void *handle, const char *sql, const noodle_value *params, size_t nparams,
                        int64_t deadline, noodle_rows **out, noodle_error *err) {
    ENSURE_ERR(err);
    *out = NULL;
    /* parse without the node lock; report parse errors only after the faults */
    noodle_error perr;
    noodle_error_clear(&perr);
    stmt *st = NULL;
    int prc = parse_sql(sql, &st, &perr);
    if (prc == 0 && st->nparams != nparams) {
        prc = NOODLE_ERR(&perr, NOODLE_E_QUERY_PARAM_COUNT,
                         "the statement has %zu placeholders but %zu parameters were bound",
                         st->nparams, nparams);
        noodle_error_detail(&perr, "mock: bind");
    }
    call c = session_call(handle, NOODLE_MOCK_OP_EXECUTE, deadline);
    int rc = call_enter(&c, err);
    if (rc == 0 && prc != 0) {
        if (err != NULL) *err = perr;
        rc = prc;
    }
    if (rc == 0) rc = run_stmt(&c, st, params, out, err);
    call_leave(&c);
    stmt_free(st);
    return rc;
}

static int not_in_txn(noodle_error *err, const char *what) {
    return fail_sqlstate(err, NOODLE_E_QUERY_TXN_STATE, "25P01",
                         "%s needs a transaction and none is in progress", what);
}

static int mock_begin(void *handle, noodle_isolation iso, int64_t deadline, noodle_error *err) {
    ENSURE_ERR(err);
    session *s = handle;
    call c = session_call(s, NOODLE_MOCK_OP_BEGIN, deadline);
    int rc = call_enter(&c, err);
    if (rc == 0 && (iso < NOODLE_ISOLATION_DEFAULT || iso > NOODLE_ISOLATION_SERIALIZABLE))
        rc = NOODLE_ERR(err, NOODLE_E_QUERY_ISOLATION_UNSUPPORTED, "unknown isolation level %d",
                        (int)iso);
    if (rc == 0 && s->state == SESSION_TXN)
        rc = fail_sqlstate(err, NOODLE_E_QUERY_TXN_STATE, "25001",
                           "a transaction is already in progress");
    if (rc == 0) {
        set_session_state(c.n, s, SESSION_TXN);
        s->iso = iso;
        s->snapshot = c.n->commit_seq;
    }
    call_leave(&c);
    return rc;
}

static int mock_commit(void *handle, int64_t deadline, noodle_error *err) {
    ENSURE_ERR(err);
    session *s = handle;
    call c = session_call(s, NOODLE_MOCK_OP_COMMIT, deadline);
    node *n = c.n;
    int rc = call_enter(&c, err);
    if (rc == 0 && s->state != SESSION_TXN) {
        rc = not_in_txn(err, "COMMIT");
        call_leave(&c);
        return rc;
    }
    if (rc == 0 && s->ws.n > 0 && n->role != NOODLE_ROLE_PRIMARY)
        rc = fail_sqlstate(err, NOODLE_E_QUERY_READ_ONLY, "25006",
                           "cannot commit writes on mock node '%s': it is no longer a primary",
                           n->name);
    if (rc == 0 && s->iso >= NOODLE_ISOLATION_REPEATABLE_READ) rc = validate_reads(n, s, err);
    if (rc == 0) rc = apply_wset(n, &s->ws, true, err);
    end_txn(n, s); /* a failed COMMIT ends the transaction too, as in PostgreSQL */
    if (rc == 0) rc = maybe_lose_ack(&c, err);
    call_leave(&c);
    return rc;
}

static int mock_rollback(void *handle, int64_t deadline, noodle_error *err) {
    ENSURE_ERR(err);
    session *s = handle;
    call c = session_call(s, NOODLE_MOCK_OP_ROLLBACK, deadline);
    int rc = call_enter(&c, err);
    if (rc == 0 && s->state != SESSION_TXN) rc = not_in_txn(err, "ROLLBACK");
    if (rc == 0) end_txn(c.n, s);
    call_leave(&c);
    return rc;
}

static int mock_savepoint(void *handle, const char *name, int64_t deadline, noodle_error *err) {
    ENSURE_ERR(err);
    session *s = handle;
    call c = session_call(s, NOODLE_MOCK_OP_SAVEPOINT, deadline);
    int rc = call_enter(&c, err);
    if (rc == 0 && s->state != SESSION_TXN) rc = not_in_txn(err, "SAVEPOINT");
    if (rc == 0 && s->nsps == s->capsps) {
        size_t ncap = s->capsps ? s->capsps * 2 : 4;
        savepoint *grown = realloc(s->sps, ncap * sizeof *grown);
        if (grown == NULL) rc = no_memory(err);
        else {
            s->sps = grown;
            s->capsps = ncap;
        }
    }
    if (rc == 0) {
        snprintf(s->sps[s->nsps].name, MAX_NAME, "%s", name);
        s->sps[s->nsps++].pos = s->ws.n;
    }
    call_leave(&c);
    return rc;
}

/* The newest savepoint called name (index into sps), or 5014. */
static int find_savepoint(const session *s, const char *name, size_t *idx, noodle_error *err) {
    for (size_t i = s->nsps; i-- > 0;) {
        if (strcmp(s->sps[i].name, name) == 0) {
            *idx = i;
            return 0;
        }
    }
    return fail_sqlstate(err, NOODLE_E_QUERY_INVALID_SAVEPOINT, "3B001",
                         "savepoint \"%s\" does not exist", name);
}

/* RELEASE: forget the savepoint and every one taken after it (keep the work). */
static int mock_release(void *handle, const char *name, int64_t deadline, noodle_error *err) {
    ENSURE_ERR(err);
    session *s = handle;
    size_t idx = 0;
    call c = session_call(s, NOODLE_MOCK_OP_RELEASE, deadline);
    int rc = call_enter(&c, err);
    if (rc == 0 && s->state != SESSION_TXN) rc = not_in_txn(err, "RELEASE SAVEPOINT");
    if (rc == 0) rc = find_savepoint(s, name, &idx, err);
    if (rc == 0) s->nsps = idx;
    call_leave(&c);
    return rc;
}

/* ROLLBACK TO: undo the work done since the savepoint, which stays. */
static int mock_rollback_to(void *handle, const char *name, int64_t deadline, noodle_error *err) {
    ENSURE_ERR(err);
    session *s = handle;
    size_t idx = 0;
    call c = session_call(s, NOODLE_MOCK_OP_ROLLBACK_TO, deadline);
    int rc = call_enter(&c, err);
    if (rc == 0 && s->state != SESSION_TXN) rc = not_in_txn(err, "ROLLBACK TO SAVEPOINT");
    if (rc == 0) rc = find_savepoint(s, name, &idx, err);
    if (rc == 0) {
        wset_truncate(&s->ws, s->sps[idx].pos);
        s->nsps = idx + 1;
    }
    call_leave(&c);
    return rc;
}

static int mock_role(void *handle, int64_t deadline, noodle_role *out, noodle_error *err) {
    ENSURE_ERR(err);
    call c = session_call(handle, NOODLE_MOCK_OP_ROLE, deadline);
    int rc = call_enter(&c, err);
    if (rc == 0) *out = c.n->role;
    call_leave(&c);
    return rc;
}

/* The simulated standbys and archiver into *out (node mu held): the first
 * NOODLE_STANDBYS_REPORTED standbys, the largest known lag over all of them. */
static void report_replication(const node *n, noodle_server_metrics *out) {
    out->standby_count = (int64_t)n->nstandbys;
    out->replication_lag_bytes = -1;
    for (size_t i = 0; i < n->nstandbys; i++) {
        if (i < NOODLE_STANDBYS_REPORTED) out->standbys[i] = n->standbys[i];
        if (n->standbys[i].lag_bytes > out->replication_lag_bytes)
            out->replication_lag_bytes = n->standbys[i].lag_bytes;
    }
    for (size_t i = n->nstandbys; i < NOODLE_STANDBYS_REPORTED; i++)
        out->standbys[i] = (noodle_standby_status){.lag_bytes = -1, .replay_lag_ms = -1};
    out->archive_archived_count = n->archive[0];
    out->archive_failed_count = n->archive[1];
    out->archive_last_archived_age_ms = n->archive[2];
    out->archive_last_failed_age_ms = n->archive[3];
}

static int mock_metrics(void *handle, int64_t deadline, noodle_server_metrics *out,
                        noodle_error *err) {
    ENSURE_ERR(err);
    call c = session_call(handle, NOODLE_MOCK_OP_METRICS, deadline);
    int rc = call_enter(&c, err);
    if (rc == 0) {
        memset(out, 0, sizeof *out);
        out->database_size_bytes = node_size(c.n);
        out->role = c.n->role;
        out->replication_delay_ms = -1;
        report_replication(c.n, out);
        snprintf(out->server_version, sizeof out->server_version, "mock 1");
    }
    call_leave(&c);
    return rc;
}

/* FULL's real part (node mu held): every committed table keeps invariant 3
 * (keys sorted, unique and never NULL; versions > 0). Each broken table is
 * one problem. */
static int64_t check_tables(const node *n, noodle_integrity_result *out) {
    int64_t problems = 0;
    for (const table *t = n->tables; t != NULL; t = t->next) {
        for (size_t i = 0; i < t->nrows; i++) {
            const row *r = t->rows[i];
            bool bad = r->version == 0 || r->cells[t->key].type == NOODLE_TYPE_NULL ||
                       (i > 0 && value_cmp(&t->rows[i - 1]->cells[t->key], &r->cells[t->key]) >= 0);
            if (!bad) continue;
            if (problems++ == 0 && out->first_problem[0] == '\0')
                snprintf(out->first_problem, sizeof out->first_problem,
                         "table %s: row %zu breaks the key order or has no version", t->name, i);
            break;
        }
    }
    return problems;
}

/* QUICK reports the simulated corruption; FULL also walks every table. */
static int mock_integrity(void *handle, noodle_integrity_level level, int64_t deadline,
                          noodle_integrity_result *out, noodle_error *err) {
    ENSURE_ERR(err);
    call c = session_call(handle, NOODLE_MOCK_OP_INTEGRITY, deadline);
    int rc = call_enter(&c, err);
    if (rc == 0) {
        const node *n = c.n;
        const bool full = level == NOODLE_INTEGRITY_FULL;
        snprintf(out->first_problem, sizeof out->first_problem, "%s",
                 n->corruption > 0 ? n->corruption_text : "");
        out->problems = n->corruption + (full ? check_tables(n, out) : 0);
        out->checksum_failures = n->checksum_failures;
        snprintf(out->method, sizeof out->method, "%s",
                 full ? "mock full check (simulated corruption, table order walked)"
                      : "mock quick check (simulated corruption)");
    }
    call_leave(&c);
    return rc;
}

static bool mock_in_transaction(void *handle) {
    session *s = handle;
    pthread_mutex_lock(&s->node->mu);
    bool in_txn = s->state == SESSION_TXN;
    pthread_mutex_unlock(&s->node->mu);
    return in_txn;
}

static const noodle_backend_ops mock_ops = {
    .abi_version = NOODLE_BACKEND_ABI_VERSION,
    .struct_size = sizeof(noodle_backend_ops),
    .name = "mock",
    .connect = mock_connect,
    .close = mock_close,
    .validate = mock_validate,
    .execute = mock_execute,
    .begin = mock_begin,
    .commit = mock_commit,
    .rollback = mock_rollback,
    .savepoint = mock_savepoint,
    .release = mock_release,
    .rollback_to = mock_rollback_to,
    .role = mock_role,
    .metrics = mock_metrics,
    .in_transaction = mock_in_transaction,
    .integrity = mock_integrity,
};

const noodle_backend_ops *noodle_mock_backend(void) { return &mock_ops; }

int noodle_mock_register(noodle_error *err) { return noodle_backend_register(&mock_ops, err); }

const char *noodle_mock_op_name(noodle_mock_op op) {
    static const char *const names[] = {
#define NOODLE_MOCK_X_NAME(NAME, str, code) str,
        NOODLE_BACKEND_OP_MAP(NOODLE_MOCK_X_NAME)
#undef NOODLE_MOCK_X_NAME
        "any",
    };
    if ((int)op < 0 || (int)op > NOODLE_MOCK_OP_COUNT) return NULL;
    return names[op];
}

/* ---- the control API ----------------------------------------------------------------- */

/* Lock the registry and the named node (created when create), in that order
 * (invariant 1). Returns the node with both locks held, or NULL with err
 * filled (4011: bad name or no such node; 4008) and no lock held. Control
 * calls are rare and short, so holding the registry lock throughout keeps
 * them simple: the node cannot be dropped under them. */
static node *control_lock(const char *name, bool create, noodle_error *err) {
    if (name == NULL || !node_name_valid(name, strlen(name))) {
        NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                   "invalid mock node name \"%.80s\": expected 1 to 63 letters, digits, '_' or '-'",
                   name ? name : "(null)");
        return NULL;
    }
    pthread_mutex_lock(&registry_mu);
    node *n = registry_get(name, create);
    if (n == NULL) {
        pthread_mutex_unlock(&registry_mu);
        if (create) NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "out of memory creating mock node");
        else NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT, "no mock node named '%s'", name);
        return NULL;
    }
    pthread_mutex_lock(&n->mu);
    return n;
}

static void control_unlock(node *n) {
    pthread_mutex_unlock(&n->mu);
    pthread_mutex_unlock(&registry_mu);
}

static int check_op(noodle_mock_op op, noodle_error *err) {
    if ((int)op >= 0 && (int)op <= NOODLE_MOCK_OP_ANY) return 0;
    return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT, "unknown mock operation %d", (int)op);
}

static int check_code(int code, noodle_error *err) {
    if (code != 0 && noodle_code_name(code) != NULL) return 0;
    return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                      "%d is not a catalogue code to fail with", code);
}

/* Lose every node. Each is dropped from the registry at once; one that still
 * has sessions (or a connect in progress) is freed by the last of them. */
void noodle_mock_reset(void) {
    pthread_mutex_lock(&registry_mu);
    node *list = nodes;
    nodes = NULL;
    while (list != NULL) {
        node *n = list;
        list = n->next;
        n->next = NULL;
        pthread_mutex_lock(&n->mu);
        kill_all_sessions(n);
        set_node_state(n, NODE_DROPPED);
        pthread_mutex_unlock(&n->mu);
        if (n->refs == 0) node_free(n);
    }
    pthread_mutex_unlock(&registry_mu);
}

int noodle_mock_node_create(const char *node_name, noodle_error *err) {
    node *n = control_lock(node_name, true, err);
    if (n == NULL) return err ? err->code : NOODLE_E_BACKEND_INVALID_ARGUMENT;
    control_unlock(n);
    return 0;
}

bool noodle_mock_node_exists(const char *node_name) {
    if (node_name == NULL || !node_name_valid(node_name, strlen(node_name))) return false;
    pthread_mutex_lock(&registry_mu);
    bool found = registry_get(node_name, false) != NULL;
    pthread_mutex_unlock(&registry_mu);
    return found;
}

/* Run BODY on the named node (created when needed) with both locks held.
 * BODY may set rc. */
#define WITH_NODE(node_name, err, BODY)                                         \
    do {                                                                        \
        noodle_error local_err_;                                                \
        if ((err) == NULL) (err) = &local_err_;                                 \
        node *n = control_lock((node_name), true, (err));                       \
        if (n == NULL) return (err)->code;                                      \
        int rc = 0;                                                             \
        BODY;                                                                   \
        control_unlock(n);                                                      \
        return rc;                                                              \
    } while (0)

int noodle_mock_node_crash(const char *node_name, noodle_error *err) {
    WITH_NODE(node_name, err, {
        if (n->state == NODE_UP) set_node_state(n, NODE_CRASHED);
        kill_all_sessions(n);
    });
}

int noodle_mock_node_restart(const char *node_name, noodle_error *err) {
    WITH_NODE(node_name, err, {
        if (n->state == NODE_CRASHED) set_node_state(n, NODE_UP);
    });
}

int noodle_mock_node_kill_connections(const char *node_name, noodle_error *err) {
    WITH_NODE(node_name, err, kill_all_sessions(n));
}

void noodle_mock_conn_kill(void *handle) {
    session *s = handle;
    if (s == NULL) return;
    pthread_mutex_lock(&s->node->mu);
    kill_session(s->node, s);
    pthread_mutex_unlock(&s->node->mu);
}

int noodle_mock_node_set_role(const char *node_name, noodle_role role, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (role != NOODLE_ROLE_PRIMARY && role != NOODLE_ROLE_STANDBY && role != NOODLE_ROLE_READ_ONLY)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                          "a mock node's role must be primary, standby or read-only (got %d)",
                          (int)role);
    WITH_NODE(node_name, err, n->role = role);
}

int noodle_mock_set_latency(const char *node_name, noodle_mock_op op, int64_t latency_ns,
                            noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (check_op(op, err) != 0) return err->code;
    if (latency_ns < 0)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                          "latency must be >= 0 (got %" PRId64 ")", latency_ns);
    WITH_NODE(node_name, err, n->faults[op].latency_ns = latency_ns);
}

int noodle_mock_set_hang(const char *node_name, noodle_mock_op op, bool hang, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (check_op(op, err) != 0) return err->code;
    WITH_NODE(node_name, err, {
        fault *f = &n->faults[op];
        if (f->hang && !hang) {
            f->hang_epoch++; /* releases the calls blocked in this hang */
            wake_waiters(n);
        }
        f->hang = hang;
    });
}

int noodle_mock_fail_next(const char *node_name, noodle_mock_op op, int64_t count, int code,
                          noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (check_op(op, err) != 0) return err->code;
    if (count < 0)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT, "fail_next count must be >= 0");
    if (count > 0 && check_code(code, err) != 0) return err->code;
    WITH_NODE(node_name, err, {
        n->faults[op].fail_next = count;
        n->faults[op].fail_next_code = code;
    });
}

int noodle_mock_fail_probability(const char *node_name, noodle_mock_op op, double p, int code,
                                 noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (check_op(op, err) != 0) return err->code;
    if (!(p >= 0.0 && p <= 1.0))
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                          "fail probability must be within [0, 1] (got %g)", p);
    if (p > 0 && check_code(code, err) != 0) return err->code;
    WITH_NODE(node_name, err, {
        n->faults[op].fail_p = p;
        n->faults[op].fail_p_code = code;
    });
}

int noodle_mock_node_seed(const char *node_name, uint64_t seed, noodle_error *err) {
    WITH_NODE(node_name, err, n->rng = seed);
}

int noodle_mock_commit_ack_lost(const char *node_name, int64_t count, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (count < 0)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                          "commit_ack_lost count must be >= 0");
    WITH_NODE(node_name, err, n->ack_lost = count);
}

int noodle_mock_clear_faults(const char *node_name, noodle_error *err) {
    WITH_NODE(node_name, err, {
        for (int op = 0; op <= NOODLE_MOCK_OP_ANY; op++) {
            uint64_t epoch = n->faults[op].hang_epoch;
            n->faults[op] = (fault){.hang_epoch = epoch + 1}; /* releases hung calls */
        }
        n->ack_lost = 0;
        wake_waiters(n);
    });
}

int noodle_mock_set_corruption(const char *node_name, int64_t problems, const char *first_problem,
                               noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (problems < 0)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                          "simulated corruption must be >= 0 problems (got %" PRId64 ")", problems);
    WITH_NODE(node_name, err, {
        n->corruption = problems;
        snprintf(n->corruption_text, sizeof n->corruption_text, "%s",
                 problems > 0 && first_problem != NULL ? first_problem : "");
    });
}

int noodle_mock_set_checksum_failures(const char *node_name, int64_t failures, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (failures < -1)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                          "checksum failures must be >= -1 (got %" PRId64 ")", failures);
    WITH_NODE(node_name, err, n->checksum_failures = failures);
}

int noodle_mock_set_standbys(const char *node_name, const noodle_standby_status *standbys,
                             size_t count, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (count > NOODLE_MOCK_MAX_STANDBYS || (count > 0 && standbys == NULL))
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                          "a mock node has 0 to %d standbys, given as an array (got %zu)",
                          NOODLE_MOCK_MAX_STANDBYS, count);
    for (size_t i = 0; i < count; i++)
        if (standbys[i].lag_bytes < -1 || standbys[i].replay_lag_ms < -1)
            return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                              "standby %zu: lags must be >= -1 (unknown)", i);
    WITH_NODE(node_name, err, {
        for (size_t i = 0; i < count; i++) {
            n->standbys[i] = standbys[i];
            n->standbys[i].name[sizeof n->standbys[i].name - 1] = '\0';
            n->standbys[i].state[sizeof n->standbys[i].state - 1] = '\0';
        }
        n->nstandbys = count;
    });
}

int noodle_mock_set_archiver(const char *node_name, int64_t archived, int64_t failed,
                             int64_t last_archived_age_ms, int64_t last_failed_age_ms,
                             noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    const int64_t v[4] = {archived, failed, last_archived_age_ms, last_failed_age_ms};
    for (size_t i = 0; i < 4; i++)
        if (v[i] < -1)
            return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                              "archiver values must be >= -1 (unknown); got %" PRId64, v[i]);
    WITH_NODE(node_name, err, memcpy(n->archive, v, sizeof v));
}

int noodle_mock_node_stats(const char *node_name, noodle_mock_stats *out, noodle_error *err) {
    noodle_error local;
    if (err == NULL) err = &local;
    if (out == NULL)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT, "stats output is NULL");
    node *n = control_lock(node_name, false, err);
    if (n == NULL) return err->code;
    *out = n->stats;
    out->failures_injected = 0;
    for (int op = 0; op < NOODLE_MOCK_OP_COUNT; op++) out->failures_injected += out->failures[op];
    out->role = n->role;
    out->crashed = n->state == NODE_CRASHED;
    control_unlock(n);
    return 0;
}

int noodle_mock_node_reset_stats(const char *node_name, noodle_error *err) {
    WITH_NODE(node_name, err, {
        int64_t open = n->stats.open_connections;
        memset(&n->stats, 0, sizeof n->stats);
        n->stats.open_connections = n->stats.peak_connections = open;
    });
}

int64_t noodle_mock_node_rows(const char *node_name, const char *table_name) {
    char folded[MAX_NAME];
    if (table_name == NULL || strlen(table_name) >= MAX_NAME) return -1;
    for (size_t i = 0; i <= strlen(table_name); i++)
        folded[i] = (char)tolower((unsigned char)table_name[i]);
    node *n = control_lock(node_name, false, NULL);
    if (n == NULL) return -1;
    const table *t = find_table(n, table_name); /* as created: a quoted name keeps its case */
    if (t == NULL) t = find_table(n, folded);
    int64_t rows = t ? (int64_t)t->nrows : -1;
    control_unlock(n);
    return rows;
}
