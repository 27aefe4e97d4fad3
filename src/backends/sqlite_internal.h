/* Internals of the SQLite backend exposed (noodle__sqlite_ names, hidden in
 * the shared library) so that tests can observe them. Not installed; not part
 * of the API.
 */
#ifndef NOODLE_BACKENDS_SQLITE_INTERNAL_H
#define NOODLE_BACKENDS_SQLITE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Prepared statements each connection keeps, keyed by SQL text (least
 * recently used evicted first). 0 turns the cache off. A compile-time
 * default: build with -DNOODLE_SQLITE_STMT_CACHE_SIZE=N to change it. */
#ifndef NOODLE_SQLITE_STMT_CACHE_SIZE
#define NOODLE_SQLITE_STMT_CACHE_SIZE 64
#endif

/* The statement cache of a handle returned by the SQLite backend's connect:
 * lookups that found a statement (*hits), lookups that had to prepare one
 * (*misses, failed prepares included) and statements held now (*size). The
 * counters start at 0 with the connection; any pointer may be NULL. */
void noodle__sqlite_stmt_cache_stats(void *handle, uint64_t *hits, uint64_t *misses,
                                     size_t *size);

#endif
