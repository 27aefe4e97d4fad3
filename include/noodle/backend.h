/* The backend interface (STD-BACKEND).
 *
 * A backend is a versioned table of operations (noodle_backend_ops), like
 * SQLite's sqlite3_vfs: new operations are only ever added at the end and the
 * table carries its ABI version and size. Built in: "sqlite" and "postgres";
 * the mock backend (mocks/) implements the same table.
 *
 * Callers do not use the table directly: they open a noodle_conn through
 * noodle_conn_open() and call noodle_conn_*(). That layer
 *   - keeps the connection's endpoint, topology generation, creation /
 *     last-use / last-validation times and its state (ok or broken),
 *   - makes a broken connection stay broken: after a connection-fatal error
 *     (noodle_code_is_connection_fatal) every call fails with
 *     NOODLE_E_CONNECTION_BROKEN until the connection is closed,
 *   - checks the fail point backend/<name>/<op> before each operation (in the
 *     noodle_fiu build),
 *   - guarantees every failure carries a catalogue code.
 *
 * Deadlines are absolute times on the connection's clock (NOODLE_NO_DEADLINE
 * for none). Every operation returns by its deadline, even against a frozen
 * server; when a deadline cuts an operation short the connection is broken.
 *
 * Placeholders are `?` on every backend (PostgreSQL's are translated to $n).
 *
 * A connection is used by one thread at a time; distinct connections may be
 * used from distinct threads concurrently.
 */
#ifndef NOODLE_BACKEND_H
#define NOODLE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "noodle/clock.h"
#include "noodle/error.h"
#include "noodle/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- typed values ------------------------------------------------------ */

typedef enum noodle_type {
    NOODLE_TYPE_NULL = 0,
    NOODLE_TYPE_INT64,
    NOODLE_TYPE_DOUBLE,
    NOODLE_TYPE_TEXT, /* bytes + length; UTF-8 expected; no terminator needed */
    NOODLE_TYPE_BLOB,
} noodle_type;

/* A bound parameter or a result cell. For TEXT and BLOB, ptr/len borrow the
 * bytes: a parameter borrows the caller's memory for the call; a cell borrows
 * the result's memory until noodle_rows_free. */
typedef struct noodle_value {
    noodle_type type;
    union {
        int64_t i;
        double d;
        struct {
            const void *ptr;
            size_t len;
        } bytes;
    } v;
} noodle_value;

NOODLE_API noodle_value noodle_null(void);
NOODLE_API noodle_value noodle_int64(int64_t i);
NOODLE_API noodle_value noodle_double(double d);
NOODLE_API noodle_value noodle_text(const char *s); /* NUL-terminated; NULL gives SQL NULL */
NOODLE_API noodle_value noodle_text_n(const char *s, size_t len);
NOODLE_API noodle_value noodle_blob(const void *p, size_t len);
NOODLE_API const char *noodle_type_name(noodle_type t); /* "null", "int64", ... */

/* ---- results ------------------------------------------------------------ */

/* A result: column names, rows of typed cells, and the affected-row count.
 * Owned by the caller; free with noodle_rows_free (accepts NULL). */
typedef struct noodle_rows noodle_rows;

NOODLE_API size_t noodle_rows_count(const noodle_rows *r);
NOODLE_API size_t noodle_rows_columns(const noodle_rows *r);
NOODLE_API const char *noodle_rows_column_name(const noodle_rows *r, size_t col);
/* Index of the column with this name, or -1. */
NOODLE_API long noodle_rows_column_index(const noodle_rows *r, const char *name);
/* Rows changed by INSERT / UPDATE / DELETE (0 for other statements). */
NOODLE_API int64_t noodle_rows_affected(const noodle_rows *r);
/* The cell; a NULL-typed value when out of range. Borrowed from r. */
NOODLE_API const noodle_value *noodle_rows_get(const noodle_rows *r, size_t row, size_t col);
NOODLE_API void noodle_rows_free(noodle_rows *r);

/* Building results (for backends, including the mock). The builder copies
 * every name and every byte it is given. */
NOODLE_API NOODLE_MUSTCHECK int noodle_rows_new(size_t ncols, noodle_rows **out,
                                                noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_rows_set_column_name(noodle_rows *r, size_t col,
                                                            const char *name, noodle_error *err);
/* Append one row of ncols values. */
NOODLE_API NOODLE_MUSTCHECK int noodle_rows_append(noodle_rows *r, const noodle_value *cells,
                                                   noodle_error *err);
NOODLE_API void noodle_rows_set_affected(noodle_rows *r, int64_t n);

/* ---- roles, isolation, metrics ------------------------------------------ */

typedef enum noodle_role {
    NOODLE_ROLE_UNKNOWN = 0,
    NOODLE_ROLE_PRIMARY,   /* accepts writes */
    NOODLE_ROLE_STANDBY,   /* replica in recovery: reads only */
    NOODLE_ROLE_READ_ONLY, /* not in recovery but refuses writes (default_transaction_read_only) */
} noodle_role;
NOODLE_API const char *noodle_role_name(noodle_role r);

typedef enum noodle_isolation {
    NOODLE_ISOLATION_DEFAULT = 0, /* the backend's default */
    NOODLE_ISOLATION_READ_UNCOMMITTED,
    NOODLE_ISOLATION_READ_COMMITTED,
    NOODLE_ISOLATION_REPEATABLE_READ,
    NOODLE_ISOLATION_SERIALIZABLE,
} noodle_isolation;
NOODLE_API const char *noodle_isolation_name(noodle_isolation i);

/* One standby as its primary sees it. */
typedef struct noodle_standby_status {
    char name[64];          /* application_name, else the client address */
    char state[32];         /* "streaming", "catchup", ... */
    int64_t lag_bytes;      /* WAL sent but not yet replayed; -1 unknown */
    int64_t replay_lag_ms;  /* the primary's replay_lag for it; -1 unknown */
} noodle_standby_status;
#define NOODLE_STANDBYS_REPORTED 8

/* Server-side measurements for health checks. -1 (or "") means unknown: a
 * backend reports unknown rather than guess. */
typedef struct noodle_server_metrics {
    int64_t database_size_bytes;
    noodle_role role;
    int64_t standby_count;          /* primaries: connected standbys */
    int64_t replication_lag_bytes;  /* primaries: max over standbys; standbys: receive-replay gap */
    int64_t replication_delay_ms;   /* standbys: now - last replayed transaction */
    char server_version[64];        /* "PostgreSQL 15.18", "SQLite 3.40.1", "mock 1" */
    char data_path[512];            /* SQLite file, PostgreSQL data_directory when readable */
    /* Primaries: the first min(standby_count, NOODLE_STANDBYS_REPORTED)
     * standbys (pg_stat_replication), each with its own lag. */
    noodle_standby_status standbys[NOODLE_STANDBYS_REPORTED];
    /* WAL archiving (PostgreSQL pg_stat_archiver): counts, and the age of
     * the last success / failure (-1: never, or unknown). All -1 where
     * there is no archiver (SQLite) or it cannot be read. */
    int64_t archive_archived_count;
    int64_t archive_failed_count;
    int64_t archive_last_archived_age_ms;
    int64_t archive_last_failed_age_ms;
} noodle_server_metrics;

/* What an integrity check runs: QUICK is cheap enough for a periodic health
 * check (SQLite PRAGMA quick_check; PostgreSQL catalog reachable and
 * checksum failures), FULL may read every page (SQLite integrity_check;
 * PostgreSQL adds amcheck's bt_index_check on the catalog's indexes where
 * the extension is installed). */
typedef enum noodle_integrity_level {
    NOODLE_INTEGRITY_QUICK = 0,
    NOODLE_INTEGRITY_FULL,
} noodle_integrity_level;

typedef struct noodle_integrity_result {
    int64_t problems;            /* problems found: 0 intact; -1 nothing could be checked */
    int64_t checksum_failures;   /* PostgreSQL pg_stat_database.checksum_failures of this
                                    database; -1 when unknown or checksums are off */
    char method[128];            /* what ran, e.g. "PRAGMA quick_check" */
    char first_problem[256];     /* the first problem's text; "" when none */
} noodle_integrity_result;

/* ---- the operations table ------------------------------------------------- */

#define NOODLE_BACKEND_ABI_VERSION 1

/* Parameters of a connect. url: SQLite path (or file: URI, or ":memory:"),
 * libpq conninfo or URI (multi-host allowed), or "mock://node". */
typedef struct noodle_connect_params {
    const char *url;
    int64_t deadline;            /* absolute, on clock */
    const noodle_clock *clock;   /* NULL: the real clock */
    const char *application_name; /* may be NULL */
} noodle_connect_params;

typedef struct noodle_backend_ops {
    uint32_t abi_version; /* NOODLE_BACKEND_ABI_VERSION */
    uint32_t struct_size; /* sizeof(noodle_backend_ops) as compiled by the backend */
    const char *name;     /* "sqlite", "postgres", "mock" */

    /* Open a connection; *handle receives the backend's private state. */
    int (*connect)(const noodle_connect_params *p, void **handle, noodle_error *err);
    /* Close and free; never fails; must not block past a short bound even
     * against a frozen server. */
    void (*close)(void *handle);
    /* Ping with a deadline. */
    int (*validate)(void *handle, int64_t deadline, noodle_error *err);
    /* Run one statement with bound parameters; *out receives the result
     * (always non-NULL on success, even for statements without rows). */
    int (*execute)(void *handle, const char *sql, const noodle_value *params, size_t nparams,
                   int64_t deadline, noodle_rows **out, noodle_error *err);
    int (*begin)(void *handle, noodle_isolation iso, int64_t deadline, noodle_error *err);
    int (*commit)(void *handle, int64_t deadline, noodle_error *err);
    int (*rollback)(void *handle, int64_t deadline, noodle_error *err);
    /* Savepoint names are validated identifiers ([A-Za-z_][A-Za-z0-9_]{0,62}). */
    int (*savepoint)(void *handle, const char *name, int64_t deadline, noodle_error *err);
    int (*release)(void *handle, const char *name, int64_t deadline, noodle_error *err);
    int (*rollback_to)(void *handle, const char *name, int64_t deadline, noodle_error *err);
    int (*role)(void *handle, int64_t deadline, noodle_role *out, noodle_error *err);
    int (*metrics)(void *handle, int64_t deadline, noodle_server_metrics *out, noodle_error *err);
    /* True while the session is inside a transaction, however it was begun
     * (BEGIN sent as SQL included). Local state only: no I/O, never fails. */
    bool (*in_transaction)(void *handle);
    /* ABI 1 ends here; add new operations below, never reorder. */
    /* Check the database's integrity at level (see noodle_integrity_level);
     * fills *out. A check that ran and found problems returns 0 with
     * out->problems > 0; a failure to run it returns a code. */
    int (*integrity)(void *handle, noodle_integrity_level level, int64_t deadline,
                     noodle_integrity_result *out, noodle_error *err);
} noodle_backend_ops;

/* The built-in backends, and lookup by name ("sqlite", "postgres", plus any
 * registered with noodle_backend_register, e.g. the mock). */
NOODLE_API const noodle_backend_ops *noodle_backend_sqlite(void);
NOODLE_API const noodle_backend_ops *noodle_backend_postgres(void);
NOODLE_API NOODLE_MUSTCHECK int noodle_backend_find(const char *name,
                                                    const noodle_backend_ops **out,
                                                    noodle_error *err);
/* Make ops findable by name (thread-safe; up to 16 extra backends). Checks the
 * ABI version and that every operation is present (operations added after
 * the table's struct_size -- a backend built before them -- excepted: those
 * fail with NOODLE_E_BACKEND_UNSUPPORTED when called). */
NOODLE_API NOODLE_MUSTCHECK int noodle_backend_register(const noodle_backend_ops *ops,
                                                        noodle_error *err);

/* True when name is a valid SQL identifier for savepoints and (later) CRUD:
 * [A-Za-z_][A-Za-z0-9_]* of at most 63 bytes. */
NOODLE_API bool noodle_identifier_valid(const char *name);

/* ---- connections ---------------------------------------------------------- */

typedef struct noodle_conn noodle_conn;

typedef enum noodle_conn_state {
    NOODLE_CONN_OK = 0,
    NOODLE_CONN_BROKEN, /* a connection-fatal error happened; only close is useful */
} noodle_conn_state;

/* Open a connection through ops. *out is NULL on failure. */
NOODLE_API NOODLE_MUSTCHECK int noodle_conn_open(const noodle_backend_ops *ops,
                                                 const noodle_connect_params *p,
                                                 noodle_conn **out, noodle_error *err);
/* Close; accepts NULL. */
NOODLE_API void noodle_conn_close(noodle_conn *c);

NOODLE_API NOODLE_MUSTCHECK int noodle_conn_validate(noodle_conn *c, int64_t deadline,
                                                     noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_conn_execute(noodle_conn *c, const char *sql,
                                                    const noodle_value *params, size_t nparams,
                                                    int64_t deadline, noodle_rows **out,
                                                    noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_conn_begin(noodle_conn *c, noodle_isolation iso,
                                                  int64_t deadline, noodle_error *err);
/* A COMMIT whose connection fails after it was sent returns
 * NOODLE_E_OUTCOME_UNKNOWN (4015): it may or may not have been applied. */
NOODLE_API NOODLE_MUSTCHECK int noodle_conn_commit(noodle_conn *c, int64_t deadline,
                                                   noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_conn_rollback(noodle_conn *c, int64_t deadline,
                                                     noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_conn_savepoint(noodle_conn *c, const char *name,
                                                      int64_t deadline, noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_conn_release(noodle_conn *c, const char *name,
                                                    int64_t deadline, noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_conn_rollback_to(noodle_conn *c, const char *name,
                                                        int64_t deadline, noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_conn_role(noodle_conn *c, int64_t deadline,
                                                 noodle_role *out, noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_conn_metrics(noodle_conn *c, int64_t deadline,
                                                    noodle_server_metrics *out,
                                                    noodle_error *err);

/* The backend's integrity op (out is reset to unknown first). A backend
 * built before the op existed (smaller struct_size) gives
 * NOODLE_E_BACKEND_UNSUPPORTED. */
NOODLE_API NOODLE_MUSTCHECK int noodle_conn_integrity(noodle_conn *c, noodle_integrity_level level,
                                                      int64_t deadline,
                                                      noodle_integrity_result *out,
                                                      noodle_error *err);

NOODLE_API noodle_conn_state noodle_conn_get_state(const noodle_conn *c);
NOODLE_API const noodle_backend_ops *noodle_conn_backend(const noodle_conn *c);
/* The endpoint it was opened with, secrets masked. Borrowed from c. */
NOODLE_API const char *noodle_conn_endpoint(const noodle_conn *c);
NOODLE_API uint64_t noodle_conn_generation(const noodle_conn *c);
NOODLE_API void noodle_conn_set_generation(noodle_conn *c, uint64_t gen);
/* Clock times (ns) of creation, last successful use, last successful
 * validation: coarse readings (noodle_clock_now_coarse), which may lag the
 * precise clock by its coarse resolution. */
NOODLE_API int64_t noodle_conn_created_at(const noodle_conn *c);
NOODLE_API int64_t noodle_conn_last_used_at(const noodle_conn *c);
NOODLE_API int64_t noodle_conn_last_validated_at(const noodle_conn *c);
/* True while the connection is inside a transaction, begun with
 * noodle_conn_begin or by SQL sent through execute (the backend's own view,
 * read after every operation); false once it is broken. */
NOODLE_API bool noodle_conn_in_transaction(const noodle_conn *c);
/* One pointer of the owner's (the pool keeps its slot here); NULL at open. */
NOODLE_API void noodle_conn_set_owner_data(noodle_conn *c, void *data);
NOODLE_API void *noodle_conn_owner_data(const noodle_conn *c);
/* Called after every failed operation on c (on the calling thread, after the
 * error is coded, before the connection is marked broken): what is the
 * operation ("execute", "commit", ...), code and err the failure. The
 * cluster layer uses it to notice failures and read-only refusals at once.
 * One hook per connection; NULL removes it. */
typedef void (*noodle_conn_error_hook)(noodle_conn *c, const char *what, int code,
                                       const noodle_error *err, void *arg);
NOODLE_API void noodle_conn_set_error_hook(noodle_conn *c, noodle_conn_error_hook fn, void *arg);
/* Backend-private handle (tests and the mock control API only). */
NOODLE_API void *noodle_conn_handle(const noodle_conn *c);

/* ---- secrets --------------------------------------------------------------- */

/* Copy url into buf (size bytes) with passwords masked as "****": libpq
 * keyword form (password=...), URI form (scheme://user:secret@host) and
 * query parameters (?password=...). Returns the length needed. */
NOODLE_API size_t noodle_mask_secrets(const char *url, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
