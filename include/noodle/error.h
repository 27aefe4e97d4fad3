/* noodle error catalogue and the error object.
 *
 * Every error surfaced by libnoodle and noodle-harness has a 4-digit code from
 * the one table below (STD-ERRCODE). Each code lives inside the range of its
 * category (see docs/error-codes.md, generated from this table):
 *
 *   1001-1099 configuration        2001-2099 connection pool
 *   3001-3099 database manager     4001-4999 connection / backend
 *   5001-5999 query                6030-6049 transaction manager
 *   6060-6069 performance monitor  6070-6079 health checker
 *   6080-6099 failover / cluster   7001-7999 harness
 *   8001-8099 reports
 *
 * Codes are stable: never renumber, never reuse a retired code. New codes are
 * added in their range; the unit test test_error walks the table and fails on
 * a duplicate, an out-of-range or an undocumented code.
 */
#ifndef NOODLE_ERROR_H
#define NOODLE_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#include "noodle/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(code, NAME, "what it means") -- the message is the catalogue text; an
 * error object carries its own, more specific message. */
#define NOODLE_ERROR_MAP(X)                                                                        \
    /* 1xxx configuration */                                                                       \
    X(1001, CONFIG_INVALID_INTEGER, "configuration value is not a whole number")                 \
    X(1002, CONFIG_OUT_OF_RANGE, "configuration value is outside its accepted range")             \
    X(1003, CONFIG_INVALID_DURATION, "configuration value is not a duration")                     \
    X(1004, CONFIG_INVALID_CHOICE, "configuration value is not one of the accepted choices")      \
    X(1005, CONFIG_INVALID_URL, "connection URL or conninfo cannot be parsed")                   \
    X(1006, CONFIG_EMPTY_VALUE, "configuration variable is set but empty")                       \
    X(1007, CONFIG_INCONSISTENT, "configuration values contradict each other")                    \
    X(1008, CONFIG_UNKNOWN_VARIABLE, "unknown NOODLE_DB_ environment variable (typo?)")           \
    X(1009, CONFIG_UNKNOWN_OPTION, "unknown configuration option name")                           \
    X(1010, CONFIG_NO_MEMORY, "out of memory while loading configuration")                        \
    X(1011, CONFIG_INVALID_ARGUMENT, "invalid argument to a configuration function")             \
    /* 2xxx connection pool */                                                                     \
    X(2001, POOL_CLOSED, "the pool is shut down and accepts no acquires")                         \
    X(2002, POOL_TIMEOUT, "pool acquire timed out")                                                \
    X(2003, POOL_INVALID_ARGUMENT, "invalid argument to a pool function")                          \
    X(2004, POOL_INVALID_SIZE, "pool size outside 0 <= min_idle <= max_connections <= capacity")   \
    X(2005, POOL_NO_MEMORY, "out of memory in the pool")                                           \
    X(2006, POOL_THREAD_START, "could not start a pool thread")                                    \
    X(2007, POOL_BUSY_AT_SHUTDOWN, "connections still in use when the shutdown deadline passed")   \
    X(2008, POOL_WARMUP_FAILED, "warm-up did not open min_idle connections before its deadline")  \
    X(2009, POOL_REDIRECTED, "the pool's endpoint stopped serving this route; acquire again")     \
    /* 3xxx database manager */                                                                    \
    X(3001, DB_INVALID_IDENTIFIER, "table or column name is not a valid identifier")              \
    X(3002, DB_INVALID_ARGUMENT, "invalid argument to a database manager function")               \
    X(3003, DB_NO_MEMORY, "out of memory in the database manager")                                \
    X(3004, DB_INVALID_CONDITION, "condition operator is not one of the documented ones")         \
    X(3005, DB_UNBOUNDED_WRITE, "UPDATE or DELETE without a condition (use the _all variant)")    \
    /* 4xxx connection / backend */                                                                \
    X(4001, CONNECT_FAILED, "could not connect to the database")                                  \
    X(4002, CONNECT_TIMEOUT, "connecting did not complete before the deadline")                   \
    X(4003, CONNECTION_LOST, "the connection to the server was lost")                             \
    X(4004, BACKEND_TIMEOUT, "backend call did not complete before its deadline")                 \
    X(4005, CONNECTION_BROKEN, "connection is broken by an earlier error and must be closed")     \
    X(4006, BACKEND_UNKNOWN, "no backend with that name")                                          \
    X(4007, BACKEND_ABI_MISMATCH, "backend operations table has an unsupported version")          \
    X(4008, BACKEND_NO_MEMORY, "out of memory in a backend call")                                 \
    X(4009, AUTH_FAILED, "the server rejected the credentials")                                   \
    X(4010, SERVER_SHUTDOWN, "the server is shutting down or terminated the session")             \
    X(4011, BACKEND_INVALID_ARGUMENT, "invalid argument to a backend call")                       \
    X(4012, BACKEND_INTERNAL, "backend reported a failure without a specific cause")              \
    X(4013, FAIL_POINT, "an injected fault (fail point) fired")                                    \
    X(4014, INVALID_DATABASE, "the file is not a database or the database does not exist")       \
    X(4015, OUTCOME_UNKNOWN,                                                                       \
      "the connection failed after a commit or write was sent: it may or may not be applied")    \
    X(4016, BACKEND_UNSUPPORTED, "the backend does not implement this operation (built for an older ABI)") \
    /* 5xxx query */                                                                               \
    X(5001, QUERY_SYNTAX, "SQL syntax error or undefined object")                                 \
    X(5002, QUERY_CONSTRAINT, "constraint violation (unique, foreign key, not null, check)")      \
    X(5003, QUERY_SERIALIZATION, "serialization failure: retry the transaction")                  \
    X(5004, QUERY_DEADLOCK, "deadlock detected: retry the transaction")                           \
    X(5005, QUERY_BUSY, "database is busy or locked")                                              \
    X(5006, QUERY_PARAM_COUNT, "number of bound parameters does not match the placeholders")      \
    X(5007, QUERY_PARAM_INVALID, "bound parameter cannot be sent as given")                       \
    X(5008, QUERY_FAILED, "query failed")                                                          \
    X(5009, QUERY_READ_ONLY, "write refused: the node or transaction is read-only")               \
    X(5010, QUERY_DATA, "invalid data for the column or operation")                               \
    X(5011, QUERY_TXN_STATE, "statement not valid in the current transaction state")              \
    X(5012, QUERY_CANCELED, "statement canceled by the server (statement timeout)")               \
    X(5013, QUERY_ISOLATION_UNSUPPORTED, "isolation level not available on this backend")        \
    X(5014, QUERY_INVALID_SAVEPOINT, "invalid or unknown savepoint name")                          \
    X(5015, QUERY_UNSUPPORTED, "statement not supported by this backend")                          \
    X(5016, QUERY_RESULT_ACCESS, "result accessed out of range or as the wrong type")             \
    /* 6030-6049 transaction manager */                                                           \
    X(6031, TXN_INVALID_ARGUMENT, "invalid argument to a transaction function")                   \
    X(6032, TXN_ENDED, "the transaction level has already ended (committed or rolled back)")      \
    X(6033, TXN_INNER_OPEN, "a level nested in this transaction level is still open")             \
    X(6034, TXN_WRONG_THREAD, "the transaction is used from a thread other than the one that began it") \
    X(6035, TXN_RETRIES_EXHAUSTED, "the transaction kept conflicting until its attempts ran out") \
    X(6036, TXN_NOT_INNERMOST, "only the innermost open level of a transaction can run statements") \
    X(6037, TXN_ENDED_BY_SERVER, "the database ended the transaction on its own (rolled back)")    \
    /* 6060-6069 performance monitor */                                                          \
    X(6061, MONITOR_INVALID_ARGUMENT, "invalid argument to a monitor function")                   \
    X(6062, MONITOR_NO_MEMORY, "out of memory in the performance monitor")                        \
    X(6063, MONITOR_THREAD_START, "could not start the monitor's sampler thread")                  \
    X(6064, MONITOR_SAMPLE_FAILED, "a system resource could not be measured (/proc or statvfs)")   \
    X(6065, MONITOR_TOO_MANY_SOURCES, "the monitor already watches as many sources as it can")     \
    /* 6070-6079 health checker */                                                                 \
    X(6071, HEALTH_INVALID_ARGUMENT, "invalid argument to a health check function")               \
    X(6072, HEALTH_NO_MEMORY, "out of memory in the health checker")                               \
    X(6073, HEALTH_CHECK_FAILED, "a health check could not measure what it checks: status unknown") \
    X(6074, HEALTH_UNHEALTHY, "a health check found the database unhealthy")                       \
    X(6075, HEALTH_DEGRADED, "a health check found the database degraded")                         \
    /* 608x-609x failover / cluster */                                                            \
    X(6081, CLUSTER_NO_PRIMARY, "no node of the cluster is a usable primary")                     \
    X(6082, CLUSTER_BREAKER_OPEN, "the node's circuit breaker is open: it is not being tried")     \
    X(6083, CLUSTER_CONNECT_TIMEOUT, "connects to the node kept failing until the deadline")       \
    X(6084, CLUSTER_NO_STANDBY, "no standby is available for a standby-only read")                \
    X(6085, CLUSTER_INVALID_ARGUMENT, "invalid argument to a cluster function")                   \
    X(6086, CLUSTER_NO_MEMORY, "out of memory in the cluster")                                     \
    X(6087, CLUSTER_CLOSED, "the cluster is closed")                                               \
    X(6088, CLUSTER_THREAD_START, "could not start the cluster's prober thread")                  \
    X(6089, CLUSTER_ROLE_DETECT, "the node's role could not be determined")                       \
    /* 7xxx harness */                                                                             \
    X(7001, HARNESS_USAGE, "invalid command line")                                                 \
    X(7002, HARNESS_SELFCHECK_FAILED, "backend conformance self-check failed")

typedef enum noodle_code {
    NOODLE_OK = 0,
#define NOODLE_X_ENUM(code, name, text) NOODLE_E_##name = code,
    NOODLE_ERROR_MAP(NOODLE_X_ENUM)
#undef NOODLE_X_ENUM
} noodle_code;

/* Error object. The caller owns it (usually on the stack) and passes it to
 * functions that can fail; on failure they fill it in. Never a global. */
typedef struct noodle_error {
    int code;          /* catalogue code, 0 when no error */
    char message[512]; /* specific message, e.g. "pool acquire timed out after ..." */
    char detail[128];  /* backend's own code: "SQLSTATE 23505", "SQLITE_BUSY (5)"; may be "" */
    const char *file;  /* where it was raised (static strings) */
    int line;
    const char *func;
} noodle_error;

/* Catalogue lookups. Unknown codes give NULL. Strings are static. */
NOODLE_API const char *noodle_code_name(int code);    /* "POOL_TIMEOUT" */
NOODLE_API const char *noodle_code_message(int code); /* catalogue text */
/* The category of a code ("connection pool"), or NULL when outside every range. */
NOODLE_API const char *noodle_code_category(int code);

typedef struct noodle_code_info {
    int code;
    const char *name;
    const char *message;
} noodle_code_info;
/* The whole catalogue, in table order; *count receives its length. */
NOODLE_API const noodle_code_info *noodle_code_table(size_t *count);

/* Reset to "no error". Accepts NULL. */
NOODLE_API void noodle_error_clear(noodle_error *err);

/* Fill err (may be NULL: then nothing is recorded) and return code, so that
 * `return NOODLE_ERR(err, NOODLE_E_X, "fmt", ...);` reads naturally. A message
 * that formats to "" is replaced by the catalogue message. */
NOODLE_API int noodle_error_set(noodle_error *err, int code, const char *file, int line,
                                const char *func, const char *fmt, ...) NOODLE_PRINTF(6, 7);
NOODLE_API int noodle_error_setv(noodle_error *err, int code, const char *file, int line,
                                 const char *func, const char *fmt, va_list ap)
    NOODLE_PRINTF(6, 0);
/* Set the backend detail (printf-style). Returns err->code. */
NOODLE_API int noodle_error_detail(noodle_error *err, const char *fmt, ...) NOODLE_PRINTF(2, 3);

#define NOODLE_ERR(err, code, ...) \
    noodle_error_set((err), (code), __FILE__, __LINE__, __func__, __VA_ARGS__)

/* The one message format:
 *   [NOODLE-2002] pool acquire timed out after 30000 ms (max 20 in use, 7 waiting)
 * followed by " [SQLSTATE 23505]" when there is backend detail.
 * Writes at most size bytes (always NUL-terminated when size > 0) and returns
 * the length the full text needs, like snprintf. */
NOODLE_API size_t noodle_error_format(const noodle_error *err, char *buf, size_t size);

/* True when an error of this code means the connection can no longer be used
 * (lost, timed out mid-call, server shutdown, broken): it must be destroyed. */
NOODLE_API int noodle_code_is_connection_fatal(int code);

#ifdef __cplusplus
}
#endif
#endif
