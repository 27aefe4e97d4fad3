/* Pure helpers of the PostgreSQL backend, exposed (noodle__pg_ names, hidden
 * in the shared library) so that unit tests can reach them without a server.
 * Not installed; not part of the API.
 */
#ifndef NOODLE_BACKENDS_POSTGRES_SQL_H
#define NOODLE_BACKENDS_POSTGRES_SQL_H

#include <netdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "noodle/error.h"


/* Rewrite the `?` placeholders of sql as $1, $2, ... in order.
 *
 * A `?` is a placeholder unless it sits inside
 *   - a string constant '...' or N'...' ('' is a quote; a backslash is plain
 *     when standard_strings is true -- the session's
 *     standard_conforming_strings is on, the server default -- and escapes
 *     the next character when it is false), or a B'', X'' or U&'' constant
 *     (backslashes always plain),
 *   - an escape string E'...' (backslash escapes a character, '' a quote),
 *   - a quoted identifier "..." ("" is a quote),
 *   - a comment: -- to the end of the line, or slash-star (nesting) comments,
 *   - a dollar-quoted string $$...$$ or $tag$...$tag$,
 * or it is the first character of the jsonb operators ?| and ?& (but `?||`
 * is a placeholder followed by the concatenation operator). `??` stands for
 * one literal `?` (to write the jsonb `?` operator) and is not counted.
 * Everything else, including `::` casts and existing $n, is copied as is.
 * An unterminated quote or comment is copied to the end (the server reports
 * the syntax error).
 *
 * On success *out receives a malloc'd, NUL-terminated string the caller
 * frees, and *count the number of placeholders. Returns 0, or -1 when out of
 * memory (then *out is NULL). */
int noodle__pg_translate_placeholders(const char *sql, bool standard_strings, char **out,
                                      size_t *count);

/* The catalogue code for a five-character SQLSTATE:
 *   08xxx -> 4003 CONNECTION_LOST      57P01/57P02/57P03 -> 4010 SERVER_SHUTDOWN
 *   28xxx -> 4009 AUTH_FAILED          42xxx -> 5001 QUERY_SYNTAX
 *   23xxx -> 5002 QUERY_CONSTRAINT     40001 -> 5003 QUERY_SERIALIZATION
 *   40P01 -> 5004 QUERY_DEADLOCK       55P03 -> 5005 QUERY_BUSY
 *   25006 -> 5009 QUERY_READ_ONLY      other 25xxx -> 5011 QUERY_TXN_STATE
 *   22xxx -> 5010 QUERY_DATA           57014 -> 5012 QUERY_CANCELED
 *   3Bxxx -> 5014 QUERY_INVALID_SAVEPOINT (no such savepoint)
 *   anything else (and NULL or malformed) -> 5008 QUERY_FAILED */
int noodle__pg_code_for_sqlstate(const char *sqlstate);

/* Format d as PostgreSQL float8 input text that reads back to the same
 * double: "%.17g" (always with a '.' decimal point, whatever the locale),
 * "Infinity", "-Infinity" or "NaN". buf should hold at least 32 bytes.
 * Returns the length written (snprintf's convention). */
size_t noodle__pg_format_double(double d, char *buf, size_t size);

/* Parse PostgreSQL float8 output text ("1.5", "Infinity", "-Infinity",
 * "NaN", "1e+308") independently of the locale. Returns true when the whole
 * string was a number. */
bool noodle__pg_parse_double(const char *s, double *out);

/* True when a libpq connection failure message says the server rejected the
 * credentials (password, pg_hba.conf, unknown role, missing password). */
bool noodle__pg_is_auth_failure(const char *message);

/* The libpq connection inside a handle returned by the backend's connect
 * (NULL once it was closed after a timeout or a connection-fatal failure).
 * For tests: socket options. */
PGconn *noodle__pg_conn(void *handle);

/* The per-host time budget of a multi-host connect, in ns: connect_timeout
 * (libpq's rules: a value below 2 s counts as 2 s; 0, negative or not a
 * number means none) when set, else an even share of the time left until
 * deadline across the hosts_left hosts not yet tried (this one included).
 * Returns the absolute end of the budget (now + budget), never after
 * deadline; NOODLE_NO_DEADLINE when neither bounds it. */
int64_t noodle__pg_host_budget_end(int64_t now, int64_t deadline, const char *connect_timeout,
                                   size_t hosts_left);

/* Test seam: the function that resolves host names for connect (getaddrinfo
 * when NULL, the default). It runs on a resolver thread and must return
 * results that freeaddrinfo can free. Each connect reads it once, when it
 * starts. */
typedef int (*noodle__pg_resolver_fn)(const char *node, const char *service,
                                      const struct addrinfo *hints, struct addrinfo **res);
void noodle__pg_set_resolver(noodle__pg_resolver_fn fn);

/* Split a libpq conninfo or URI naming several hosts into one keyword/value
 * conninfo per host, each with every other option of the original (values
 * quoted). *out (n strings) is allocated: free each and the array. Returns 0,
 * NOODLE_E_CONFIG_INVALID_URL (libpq cannot parse it, or its host, hostaddr
 * and port lists do not line up) or NOODLE_E_CLUSTER_NO_MEMORY. */
int noodle__pg_split_hosts(const char *url, char ***out, size_t *n, noodle_error *err);

/* ---- the prepared-statement cache --------------------------------------- */

/* Named statements each connection keeps, keyed by the text as prepared and
 * the parameter types (least recently used evicted first). A compile-time
 * default: build with -DNOODLE_PG_STMT_CACHE_SIZE=N to change it (0: off). */
#ifndef NOODLE_PG_STMT_CACHE_SIZE
#define NOODLE_PG_STMT_CACHE_SIZE 64
#endif

/* Evicted statements are deallocated on the server this many at a time, in
 * one round trip, outside transactions. */
#define NOODLE_PG_DEALLOCATE_BATCH 8

/* Turn the cache on (the default) or off for connections opened from now on
 * (each reads the switch once, at connect; open ones keep their cache). Off
 * means every execute sends an unnamed statement, as it must through a
 * transaction-pooling proxy (pgbouncer pool_mode=transaction before 1.21),
 * where the next transaction may run on another server session that never
 * saw the statement. Thread-safe. */
void noodle__pg_set_stmt_cache(bool on);

/* The statement cache of a handle returned by the backend's connect: lookups
 * that found a statement (*hits), lookups that had to prepare one (*misses,
 * failed prepares included) and statements held now (*size). All 0 when the
 * cache is off; any pointer may be NULL. */
void noodle__pg_stmt_cache_stats(void *handle, uint64_t *hits, uint64_t *misses, size_t *size);

#endif
