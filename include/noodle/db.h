/* The database manager (STD-PARAM): parameterized statements only, typed
 * results, and CRUD helpers whose table and column names are validated
 * identifiers.
 *
 * Values reach the database only as bound parameters (`?` placeholders on
 * every backend). There is no function that takes a value and splices it
 * into SQL text. Identifiers given to the CRUD helpers must match
 * [A-Za-z_][A-Za-z0-9_]{0,62}, optionally qualified once ("schema.table");
 * they are double-quoted in the SQL (so a name with capitals is
 * case-sensitive on PostgreSQL). Anything else is refused with
 * NOODLE_E_DB_INVALID_IDENTIFIER before any SQL is built.
 *
 * Every call takes a transaction, or NULL: with NULL the statement runs in
 * autocommit on a connection acquired for it (writes on the primary; reads
 * from noodle_db_query_read may go to a standby of a cluster); with a
 * transaction it runs on the transaction's connection through
 * noodle_txn_execute (a failure rolls back the innermost level).
 *
 * Results are noodle_rows (backend.h), owned by the caller, freed with
 * noodle_rows_free; typed access below.
 */
#ifndef NOODLE_DB_H
#define NOODLE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "noodle/backend.h"
#include "noodle/clock.h"
#include "noodle/cluster.h"
#include "noodle/error.h"
#include "noodle/export.h"
#include "noodle/pool.h"
#include "noodle/txn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct noodle_db noodle_db;

typedef struct noodle_db_options {
    size_t struct_size;       /* sizeof(noodle_db_options) */
    noodle_pool *pool;        /* exactly one of pool and cluster; borrowed, */
    noodle_cluster *cluster;  /* must outlive the db */
    /* Deadline of each autocommit call (acquire + statement); 0: the
     * pool's acquire timeout. */
    int64_t call_timeout_ms;
    /* The clock call_timeout_ms is measured on: the pool's or cluster's
     * (NULL: the real clock). */
    const noodle_clock *clock;
} noodle_db_options;

#define NOODLE_DB_OPTIONS_INIT {.struct_size = sizeof(noodle_db_options)}

NOODLE_API NOODLE_MUSTCHECK int noodle_db_open(const noodle_db_options *opts, noodle_db **out,
                                               noodle_error *err);
/* Free the db (not its pool or cluster). Accepts NULL. */
NOODLE_API void noodle_db_close(noodle_db *db);

/* ---- events (the performance monitor's feed) --------------------------------------------- */

/* One statement run by the db: an exec, query, query_read or CRUD helper. */
typedef struct noodle_db_event {
    const char *sql;      /* the statement's text (CRUD helpers: the SQL they built);
                             valid only during the callback */
    size_t sql_len;       /* strlen(sql) */
    int code;             /* 0, or the failure's catalogue code */
    int64_t duration_ns;  /* the call: acquire + statement in autocommit, the
                             statement alone in a transaction. Measured
                             precisely when duration_precise; otherwise with
                             the coarse clock (a few ms of resolution): good
                             for spotting slow calls, not for latencies;
                             -1 when a call that failed before it got a
                             connection was not timed precisely */
    bool duration_precise;
    int64_t rows;         /* rows returned, or rows changed by a statement without
                             a result set; -1 on failure */
    bool in_transaction;  /* run on the caller's transaction */
} noodle_db_event;

/* Called synchronously on the calling thread after each statement; must be
 * quick and must not call back into the db. */
typedef void (*noodle_db_observer)(const noodle_db_event *ev, void *arg);

/* Observe every statement of db (at most 8 observers; append only; safe
 * while other threads use db). Statements are timed only while at least
 * one observer is registered; with this function, each precisely. */
NOODLE_API NOODLE_MUSTCHECK int noodle_db_observe(noodle_db *db, noodle_db_observer fn, void *arg,
                                                  noodle_error *err);
/* The same, asking for precise timing of only one statement in
 * time_every on each thread (0 or 1: every one); the others carry a coarse
 * duration (see noodle_db_event). Two precise clock reads cost about 3 % of
 * a SQLite point select. The db times precisely as often as its most
 * demanding observer asks. */
NOODLE_API NOODLE_MUSTCHECK int noodle_db_observe_sampled(noodle_db *db, noodle_db_observer fn,
                                                          void *arg, unsigned time_every,
                                                          noodle_error *err);

/* ---- SQL with bound parameters ----------------------------------------------------------- */

/* A statement without a result set (or whose rows are not wanted).
 * *affected (may be NULL) receives the rows changed. */
NOODLE_API NOODLE_MUSTCHECK int noodle_db_exec(noodle_db *db, noodle_txn *txn, const char *sql,
                                               const noodle_value *params, size_t nparams,
                                               int64_t *affected, noodle_error *err);
/* A statement with rows; *out is the caller's. */
NOODLE_API NOODLE_MUSTCHECK int noodle_db_query(noodle_db *db, noodle_txn *txn, const char *sql,
                                                const noodle_value *params, size_t nparams,
                                                noodle_rows **out, noodle_error *err);
/* A read that may be served by a standby of a cluster (prefer-standby) and
 * is retried once after a lost connection when the cluster allows it. With
 * a pool, or with txn, the same as noodle_db_query. */
NOODLE_API NOODLE_MUSTCHECK int noodle_db_query_read(noodle_db *db, noodle_txn *txn,
                                                     const char *sql, const noodle_value *params,
                                                     size_t nparams, noodle_rows **out,
                                                     noodle_error *err);

/* ---- typed result access (NOODLE_E_QUERY_RESULT_ACCESS when out of range or of
 *      another type; a NULL cell is its own type: check it first) ------------------------- */

NOODLE_API bool noodle_rows_is_null(const noodle_rows *r, size_t row, size_t col);
NOODLE_API NOODLE_MUSTCHECK int noodle_rows_int64(const noodle_rows *r, size_t row, size_t col,
                                                  int64_t *out, noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_rows_double(const noodle_rows *r, size_t row, size_t col,
                                                   double *out, noodle_error *err);
/* Text: *s points into r (NUL-terminated), *len its length (may be NULL). */
NOODLE_API NOODLE_MUSTCHECK int noodle_rows_text(const noodle_rows *r, size_t row, size_t col,
                                                 const char **s, size_t *len, noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_rows_blob(const noodle_rows *r, size_t row, size_t col,
                                                 const void **p, size_t *len, noodle_error *err);
/* The column named name (exact match); NOODLE_E_QUERY_RESULT_ACCESS when none. */
NOODLE_API NOODLE_MUSTCHECK int noodle_rows_column(const noodle_rows *r, const char *name,
                                                   size_t *col, noodle_error *err);

/* ---- CRUD with validated identifiers ------------------------------------------------------ */

/* True when name is a valid CRUD identifier (see above). */
NOODLE_API bool noodle_db_identifier_valid(const char *name);

typedef enum noodle_db_op {
    NOODLE_DB_EQ = 0, /* = ?  (a NULL value matches nothing: use IS_NULL) */
    NOODLE_DB_NE,     /* <> ? */
    NOODLE_DB_LT,
    NOODLE_DB_LE,
    NOODLE_DB_GT,
    NOODLE_DB_GE,
    NOODLE_DB_LIKE,   /* LIKE ? (the pattern is a bound value) */
    NOODLE_DB_IS_NULL,     /* value ignored */
    NOODLE_DB_IS_NOT_NULL, /* value ignored */
} noodle_db_op;

/* column op value; conditions are joined with AND. */
typedef struct noodle_db_cond {
    const char *column;
    noodle_db_op op;
    noodle_value value;
} noodle_db_cond;

/* Selection of a select: columns (NULL / 0: every column), conditions,
 * order (a column or NULL), and a limit (0: none). */
typedef struct noodle_db_select_spec {
    const char *const *columns;
    size_t ncolumns;
    const noodle_db_cond *conds;
    size_t nconds;
    const char *order_by;
    bool descending;
    int64_t limit;
} noodle_db_select_spec;

/* INSERT INTO table (columns...) VALUES (?...). n >= 1. */
NOODLE_API NOODLE_MUSTCHECK int noodle_db_insert(noodle_db *db, noodle_txn *txn, const char *table,
                                                 const char *const *columns,
                                                 const noodle_value *values, size_t n,
                                                 noodle_error *err);
/* SELECT ... FROM table WHERE ... [ORDER BY ...] [LIMIT ?]. */
NOODLE_API NOODLE_MUSTCHECK int noodle_db_select(noodle_db *db, noodle_txn *txn, const char *table,
                                                 const noodle_db_select_spec *spec,
                                                 noodle_rows **out, noodle_error *err);
/* SELECT every column of the rows whose key_column = key. */
NOODLE_API NOODLE_MUSTCHECK int noodle_db_select_by_key(noodle_db *db, noodle_txn *txn,
                                                        const char *table, const char *key_column,
                                                        noodle_value key, noodle_rows **out,
                                                        noodle_error *err);
/* UPDATE table SET columns = values WHERE conds. At least one condition:
 * an UPDATE of every row must say so with noodle_db_update_all. */
NOODLE_API NOODLE_MUSTCHECK int noodle_db_update(noodle_db *db, noodle_txn *txn, const char *table,
                                                 const char *const *columns,
                                                 const noodle_value *values, size_t n,
                                                 const noodle_db_cond *conds, size_t nconds,
                                                 int64_t *affected, noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_db_update_all(noodle_db *db, noodle_txn *txn,
                                                     const char *table,
                                                     const char *const *columns,
                                                     const noodle_value *values, size_t n,
                                                     int64_t *affected, noodle_error *err);
/* DELETE FROM table WHERE conds (at least one; noodle_db_delete_all for all). */
NOODLE_API NOODLE_MUSTCHECK int noodle_db_delete(noodle_db *db, noodle_txn *txn, const char *table,
                                                 const noodle_db_cond *conds, size_t nconds,
                                                 int64_t *affected, noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_db_delete_all(noodle_db *db, noodle_txn *txn,
                                                     const char *table, int64_t *affected,
                                                     noodle_error *err);
/* INSERT ... ON CONFLICT (key_columns) DO UPDATE SET the other columns =
 * excluded values (DO NOTHING when every column is a key). The key columns
 * must carry a unique constraint. */
NOODLE_API NOODLE_MUSTCHECK int noodle_db_upsert(noodle_db *db, noodle_txn *txn, const char *table,
                                                 const char *const *columns,
                                                 const noodle_value *values, size_t n,
                                                 const char *const *key_columns, size_t nkeys,
                                                 noodle_error *err);

#ifdef __cplusplus
}
#endif
#endif
