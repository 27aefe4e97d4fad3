/* The health checker (STD-HEALTH).
 *
 * Six checks, each a real measurement taken when it runs:
 *   connection   acquire + validate within the check's deadline (ms taken)
 *   performance  N validate round trips: p99 latency (ms) and error rate
 *   integrity    the backend's integrity check (SQLite quick_check or
 *                integrity_check; PostgreSQL catalog, checksum failures,
 *                amcheck where installed)
 *   space        statvfs of the filesystem holding the database (SQLite
 *                file; PostgreSQL data directory when it is local), else
 *                the PostgreSQL database size against a size limit
 *   backup       age and size of the newest file in a backup directory, or
 *                (PostgreSQL, no directory) pg_stat_archiver
 *   replication  primary: standbys connected and their lag; standby: replay
 *                delay; SQLite: not applicable
 *
 * Each check gives a status, its measured values with units, the thresholds
 * that applied, where the values came from (`measurement`), a recommendation
 * when it is not healthy, and -- when it could not measure -- status unknown
 * with error code 6073 (HEALTH_CHECK_FAILED) wrapping the cause. Nothing is
 * guessed: a value that could not be measured is unknown. See docs/health.md.
 *
 * Thread-safe in the sense of the pool and cluster it uses: several checks
 * may run at once on the same pool, each takes its own connection.
 */
#ifndef NOODLE_HEALTH_H
#define NOODLE_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "noodle/backend.h"
#include "noodle/clock.h"
#include "noodle/cluster.h"
#include "noodle/error.h"
#include "noodle/export.h"
#include "noodle/pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Ordered from best to worst; UNKNOWN is apart (see overall below). */
typedef enum noodle_health_status {
    NOODLE_HEALTH_HEALTHY = 0,
    NOODLE_HEALTH_DEGRADED,
    NOODLE_HEALTH_UNHEALTHY,
    NOODLE_HEALTH_UNKNOWN,
} noodle_health_status;
NOODLE_API const char *noodle_health_status_name(noodle_health_status s); /* "healthy", ... */

typedef enum noodle_health_check_kind {
    NOODLE_HEALTH_CONNECTION = 0,
    NOODLE_HEALTH_PERFORMANCE,
    NOODLE_HEALTH_INTEGRITY,
    NOODLE_HEALTH_SPACE,
    NOODLE_HEALTH_BACKUP,
    NOODLE_HEALTH_REPLICATION,
    NOODLE_HEALTH_CHECKS /* the number of kinds */
} noodle_health_check_kind;
NOODLE_API const char *noodle_health_check_name(noodle_health_check_kind k); /* "space", ... */

/* Bits of noodle_health_options.checks. */
#define NOODLE_HEALTH_BIT(kind) (1u << (kind))
#define NOODLE_HEALTH_ALL ((1u << NOODLE_HEALTH_CHECKS) - 1u)

/* Parse "connection,space,..." (or "all") into a mask; NOODLE_E_HEALTH_INVALID_ARGUMENT
 * naming the unknown word. */
NOODLE_API NOODLE_MUSTCHECK int noodle_health_parse_checks(const char *list, unsigned *out,
                                                           noodle_error *err);

/* Thresholds. A negative value disables a threshold. "Higher is worse"
 * values (latency, error rate, lag, age, database size) are degraded /
 * unhealthy when they reach the threshold (>=); "lower is worse" values
 * (free space, backup size, standbys connected) when they fall below it (<).
 * Defaults (NOODLE_HEALTH_OPTIONS_INIT) are listed in docs/health.md. */
typedef struct noodle_health_thresholds {
    int64_t connection_degraded_ms, connection_unhealthy_ms;         /* 500, 2000 */
    int64_t performance_samples;                                      /* 20 round trips */
    double latency_p99_degraded_ms, latency_p99_unhealthy_ms;         /* 50, 500 */
    double error_rate_degraded, error_rate_unhealthy;                 /* 0.01, 0.25 */
    /* Free space: the effective threshold is the larger of the percentage
     * of the filesystem's size and the absolute amount. */
    double space_free_percent_degraded, space_free_percent_unhealthy; /* 15, 5 */
    int64_t space_free_bytes_degraded, space_free_bytes_unhealthy;    /* 1 GiB, 100 MiB */
    /* PostgreSQL whose filesystem is not visible from here: database size. */
    int64_t database_size_degraded_bytes, database_size_unhealthy_bytes; /* off, off */
    int64_t backup_age_degraded_s, backup_age_unhealthy_s;           /* 26 h, 50 h */
    int64_t backup_min_bytes;                                         /* 1 */
    int64_t replication_lag_degraded_bytes, replication_lag_unhealthy_bytes; /* 16, 256 MiB */
    int64_t replication_lag_degraded_ms, replication_lag_unhealthy_ms;       /* 10 s, 60 s */
} noodle_health_thresholds;

#define NOODLE_HEALTH_THRESHOLDS_DEFAULT                                                   \
    {                                                                                      \
        .connection_degraded_ms = 500, .connection_unhealthy_ms = 2000,                    \
        .performance_samples = 20, .latency_p99_degraded_ms = 50,                          \
        .latency_p99_unhealthy_ms = 500, .error_rate_degraded = 0.01,                      \
        .error_rate_unhealthy = 0.25, .space_free_percent_degraded = 15,                   \
        .space_free_percent_unhealthy = 5, .space_free_bytes_degraded = 1073741824LL,      \
        .space_free_bytes_unhealthy = 104857600LL, .database_size_degraded_bytes = -1,     \
        .database_size_unhealthy_bytes = -1, .backup_age_degraded_s = 26 * 3600,           \
        .backup_age_unhealthy_s = 50 * 3600, .backup_min_bytes = 1,                        \
        .replication_lag_degraded_bytes = 16777216LL,                                      \
        .replication_lag_unhealthy_bytes = 268435456LL,                                    \
        .replication_lag_degraded_ms = 10000, .replication_lag_unhealthy_ms = 60000        \
    }

typedef struct noodle_health_options {
    size_t struct_size;           /* sizeof(noodle_health_options) */
    unsigned checks;              /* NOODLE_HEALTH_BIT mask; 0: all */
    const noodle_clock *clock;    /* NULL: the pool's / cluster's clock */
    int64_t check_timeout_ms;     /* deadline of each check; <= 0: 5000 */
    noodle_integrity_level integrity_level; /* QUICK by default */
    const char *backup_dir;       /* NULL: none (PostgreSQL then uses pg_stat_archiver) */
    int64_t expected_standbys;    /* a primary with fewer connected is unhealthy; 0: none */
    noodle_health_thresholds thresholds;
} noodle_health_options;

#define NOODLE_HEALTH_OPTIONS_INIT                                                         \
    {                                                                                      \
        .struct_size = sizeof(noodle_health_options), .checks = NOODLE_HEALTH_ALL,        \
        .check_timeout_ms = 5000, .integrity_level = NOODLE_INTEGRITY_QUICK,               \
        .thresholds = NOODLE_HEALTH_THRESHOLDS_DEFAULT                                     \
    }

/* One measured value. For a value that could not be measured, value is -1
 * and the check says why. degraded_at / unhealthy_at are the thresholds that
 * applied, in unit; has_thresholds is false when none did. */
typedef struct noodle_health_measure {
    char name[32];            /* "p99_latency", "free", "lag_bytes", ... */
    double value;
    char unit[16];            /* "ms", "bytes", "s", "ratio", "count" */
    bool has_thresholds;
    bool lower_is_worse;
    double degraded_at, unhealthy_at; /* negative: that threshold is off */
    /* This value against its thresholds; meaningful only with thresholds
     * (informational values are HEALTHY), UNKNOWN when value is -1. */
    noodle_health_status status;
} noodle_health_measure;

#define NOODLE_HEALTH_MEASURES 4

typedef struct noodle_health_check_result {
    noodle_health_check_kind kind;
    noodle_health_status status;
    /* false: the check does not apply to this database (replication on
     * SQLite); it is reported unknown with the reason, and does not count
     * in the overall status. */
    bool applicable;
    size_t nmeasures;                 /* the first one is the check's main value */
    noodle_health_measure measures[NOODLE_HEALTH_MEASURES];
    char measurement[768];            /* where the values came from, in plain words */
    char recommendation[512];         /* what to do when not healthy; "" when healthy */
    /* UNKNOWN: 6073 wrapping the cause. The connection check when it failed
     * (UNHEALTHY): the acquire's or validation's own error. Else code 0. */
    noodle_error error;
    int64_t elapsed_ns;               /* what the check cost */
} noodle_health_check_result;

/* Results of the selected checks, in kind order. overall is the worst status
 * among the applicable checks that could measure; when that is healthy (or
 * none could measure) and an applicable check is unknown, overall is
 * unknown: an unmeasured check never counts as healthy. */
typedef struct noodle_health_report {
    noodle_health_status overall;
    char backend[16];                 /* "sqlite", "postgres", ... ("" if never connected) */
    char endpoint[256];               /* secrets masked */
    char server_version[64];          /* "" when not measured */
    noodle_role role;
    int64_t elapsed_ns;
    size_t count;
    noodle_health_check_result checks[NOODLE_HEALTH_CHECKS];
} noodle_health_report;

/* Run the selected checks on connections of pool (opts NULL: defaults).
 * Returns 0 with *out set whenever a report was made, whatever it says;
 * otherwise *out is NULL and the code is HEALTH_INVALID_ARGUMENT or
 * HEALTH_NO_MEMORY. Free with noodle_health_report_free. */
NOODLE_API NOODLE_MUSTCHECK int noodle_health_check_pool(noodle_pool *pool,
                                                         const noodle_health_options *opts,
                                                         noodle_health_report **out,
                                                         noodle_error *err);
/* The same on the node of cluster that serves route. */
NOODLE_API NOODLE_MUSTCHECK int noodle_health_check_cluster(noodle_cluster *cluster,
                                                            noodle_route route,
                                                            const noodle_health_options *opts,
                                                            noodle_health_report **out,
                                                            noodle_error *err);
/* Accepts NULL. */
NOODLE_API void noodle_health_report_free(noodle_health_report *report);

/* The result of kind in report, or NULL when it was not run. Borrowed. */
NOODLE_API const noodle_health_check_result *
noodle_health_report_find(const noodle_health_report *report, noodle_health_check_kind kind);

/* Render as text (one line per check, then its measurement and advice) or
 * as JSON. *out receives a malloc'd NUL-terminated string the caller frees
 * with free(); NULL on failure (HEALTH_NO_MEMORY, HEALTH_INVALID_ARGUMENT). */
NOODLE_API NOODLE_MUSTCHECK int noodle_health_report_text(const noodle_health_report *report,
                                                          char **out, noodle_error *err);
NOODLE_API NOODLE_MUSTCHECK int noodle_health_report_json(const noodle_health_report *report,
                                                          char **out, noodle_error *err);

#ifdef __cplusplus
}
#endif
#endif
