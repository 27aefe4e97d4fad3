/* Configuration (STD-ENV).
 *
 * Precedence: built-in defaults < NOODLE_-prefixed environment variables <
 * explicit options. Every setting has an environment variable; a malformed
 * value is rejected with a 1xxx code whose message names the variable and the
 * accepted form. Nothing malformed silently becomes a default: an empty
 * variable, a unit typo, a negative count and an unknown NOODLE_DB_ variable
 * are all errors. See docs/configuration.md.
 */
#ifndef NOODLE_CONFIG_H
#define NOODLE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "noodle/error.h"
#include "noodle/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(field, ENV_SUFFIX, kind, default, min, max, "description")
 * kind: INT (whole number), DURATION (stored in ms; "30", "30s", "250ms", "2m",
 * "1h"; a bare number means seconds), CHOICE (backend name), URL (string,
 * secrets masked when shown). min/max bound INT and DURATION (ms). */
#define NOODLE_CONFIG_MAP(X)                                                                       \
    X(max_connections, "MAX_CONNECTIONS", INT, 20, 1, 10000,                                       \
      "most connections the pool holds, open or opening")                                         \
    X(timeout_ms, "TIMEOUT", DURATION, 30000, 1, 86400000,                                         \
      "longest a pool acquire waits before failing with NOODLE-2002")                             \
    X(min_idle, "MIN_IDLE", INT, 2, 0, 10000, "idle connections the pool opens at start and keeps") \
    X(idle_timeout_ms, "IDLE_TIMEOUT", DURATION, 600000, 0, 86400000,                              \
      "idle connections above min_idle are closed after this long (0: never)")                    \
    X(max_lifetime_ms, "MAX_LIFETIME", DURATION, 1800000, 0, 604800000,                            \
      "connections are retired after this long, with up to 2.5% jitter (0: never)")               \
    X(validation_bypass_ms, "VALIDATION_BYPASS", DURATION, 500, 0, 3600000,                        \
      "a connection used successfully within this window is reused without validation")           \
    X(validation_timeout_ms, "VALIDATION_TIMEOUT", DURATION, 2000, 1, 600000,                      \
      "deadline of the ping that validates a connection before reuse")                           \
    X(connect_timeout_ms, "CONNECT_TIMEOUT", DURATION, 10000, 1, 3600000,                          \
      "deadline of one connection attempt across all hosts")                                     \
    X(leak_threshold_ms, "LEAK_THRESHOLD", DURATION, 0, 0, 86400000,                               \
      "a connection held longer than this is reported as a suspected leak (0: off)")              \
    X(backend, "BACKEND", CHOICE, 0, 0, 0, "sqlite, postgres or mock")                              \
    X(url, "URL", URL, 0, 0, 0,                                                                    \
      "SQLite path (or :memory: / file: URI), libpq conninfo or URI (multi-host), or mock://node") \
    X(probe_interval_ms, "PROBE_INTERVAL", DURATION, 1000, 10, 3600000,                            \
      "how often the cluster's prober asks every node its role while all is well")               \
    X(probe_timeout_ms, "PROBE_TIMEOUT", DURATION, 1000, 10, 600000,                               \
      "deadline of one role probe; a node that misses it counts as down")                        \
    X(breaker_threshold, "BREAKER_THRESHOLD", INT, 3, 1, 1000,                                     \
      "consecutive failures of a node that open its circuit breaker")                            \
    X(breaker_backoff_ms, "BREAKER_BACKOFF", DURATION, 200, 1, 3600000,                            \
      "first delay before an open breaker lets one trial through (doubles, jittered)")           \
    X(breaker_backoff_max_ms, "BREAKER_BACKOFF_MAX", DURATION, 10000, 1, 86400000,                 \
      "longest delay of an open breaker")                                                         \
    X(slow_start_ms, "SLOW_START", DURATION, 5000, 0, 3600000,                                     \
      "a node re-admitted after its breaker opened ramps its pool up over this long (0: off)")   \
    X(retry_reads, "RETRY_READS", INT, 0, 0, 1,                                                    \
      "1: retry an idempotent read once on another connection after a connection failure")

/* Index of each setting in NOODLE_CONFIG_MAP order: NOODLE_SETTING_url, ... */
typedef enum noodle_setting_id {
#define NOODLE_X_SETTING_ID(field, ...) NOODLE_SETTING_##field,
    NOODLE_CONFIG_MAP(NOODLE_X_SETTING_ID)
#undef NOODLE_X_SETTING_ID
        NOODLE_SETTING_COUNT
} noodle_setting_id;

typedef enum noodle_config_source {
    NOODLE_SOURCE_DEFAULT = 0,
    NOODLE_SOURCE_ENV,
    NOODLE_SOURCE_OPTION,
} noodle_config_source;
NOODLE_API const char *noodle_config_source_name(noodle_config_source s); /* "default", ... */

/* The effective configuration. Strings are owned by the struct: release with
 * noodle_config_free. */
typedef struct noodle_config {
    int64_t max_connections;
    int64_t timeout_ms;
    int64_t min_idle;
    int64_t idle_timeout_ms;
    int64_t max_lifetime_ms;
    int64_t validation_bypass_ms;
    int64_t validation_timeout_ms;
    int64_t connect_timeout_ms;
    int64_t leak_threshold_ms;
    char *backend; /* "sqlite" (default), "postgres", "mock" */
    char *url;     /* default: "noodle.db" for sqlite, "" (libpq defaults) for postgres,
                      "mock://default" for mock */
    /* the cluster (cluster.h) */
    int64_t probe_interval_ms;
    int64_t probe_timeout_ms;
    int64_t breaker_threshold;
    int64_t breaker_backoff_ms;
    int64_t breaker_backoff_max_ms;
    int64_t slow_start_ms;
    int64_t retry_reads;
    /* Where each value came from, indexed by noodle_setting_id. */
    noodle_config_source source[NOODLE_SETTING_COUNT];
} noodle_config;

/* Explicit options: the highest precedence. Initialise with
 * NOODLE_CONFIG_OPTIONS_INIT; a field left at NOODLE_UNSET (or NULL) is not
 * set. struct_size lets the library accept options from older callers. */
#define NOODLE_UNSET INT64_MIN
typedef struct noodle_config_options {
    size_t struct_size;
    int64_t max_connections;
    int64_t timeout_ms;
    int64_t min_idle;
    int64_t idle_timeout_ms;
    int64_t max_lifetime_ms;
    int64_t validation_bypass_ms;
    int64_t validation_timeout_ms;
    int64_t connect_timeout_ms;
    int64_t leak_threshold_ms;
    const char *backend;
    const char *url;
    int64_t probe_interval_ms;
    int64_t probe_timeout_ms;
    int64_t breaker_threshold;
    int64_t breaker_backoff_ms;
    int64_t breaker_backoff_max_ms;
    int64_t slow_start_ms;
    int64_t retry_reads;
} noodle_config_options;

#define NOODLE_CONFIG_OPTIONS_INIT                                                          \
    {                                                                                       \
        sizeof(noodle_config_options), NOODLE_UNSET, NOODLE_UNSET, NOODLE_UNSET,           \
            NOODLE_UNSET, NOODLE_UNSET, NOODLE_UNSET, NOODLE_UNSET, NOODLE_UNSET,           \
            NOODLE_UNSET, NULL, NULL, NOODLE_UNSET, NOODLE_UNSET, NOODLE_UNSET,             \
            NOODLE_UNSET, NOODLE_UNSET, NOODLE_UNSET, NOODLE_UNSET                          \
    }

/* Description of one setting, for listings and docs. */
typedef struct noodle_config_setting {
    const char *field;    /* "max_connections" */
    const char *env;      /* "NOODLE_DB_MAX_CONNECTIONS" */
    const char *kind;     /* "integer", "duration", "choice", "url" */
    const char *form;     /* the accepted form, as error messages state it */
    const char *defaults; /* the default, as text */
    const char *description;
} noodle_config_setting;

NOODLE_API const noodle_config_setting *noodle_config_settings(size_t *count);

/* Load defaults, then the environment (envp: NULL-terminated "NAME=value"
 * array, or NULL for the process environment), then opts (may be NULL).
 * Then checks consistency (min_idle <= max_connections, the URL parses for
 * the chosen backend). On failure *cfg is left empty (freeing it is safe). */
NOODLE_API NOODLE_MUSTCHECK int noodle_config_load(noodle_config *cfg, char *const *envp,
                                                   const noodle_config_options *opts,
                                                   noodle_error *err);
NOODLE_API void noodle_config_free(noodle_config *cfg);

/* Set one setting by field name from text, as the environment would, but
 * with source "option" (used by command lines and scenario files). Errors
 * name `name` rather than the variable. */
NOODLE_API NOODLE_MUSTCHECK int noodle_config_set(noodle_config *cfg, const char *field,
                                                  const char *value, noodle_error *err);

/* Check the settings against each other (min_idle <= max_connections, the
 * URL parses for the chosen backend). noodle_config_load does this itself;
 * call it after a series of noodle_config_set. */
NOODLE_API NOODLE_MUSTCHECK int noodle_config_check(const noodle_config *cfg, noodle_error *err);

/* The value of setting i (noodle_config_settings order) as text, secrets
 * masked. Returns the length needed, like snprintf. */
NOODLE_API size_t noodle_config_value_text(const noodle_config *cfg, size_t i, char *buf,
                                           size_t size);

/* Parse a duration ("30", "30s", "250ms", "1.5s", "2m", "1h") into ms.
 * bare_unit_ms is the unit of a bare number (1000: seconds). Returns 0, or
 * NOODLE_E_CONFIG_INVALID_DURATION / _OUT_OF_RANGE. what names the source in
 * the message. */
NOODLE_API NOODLE_MUSTCHECK int noodle_parse_duration_ms(const char *text, int64_t bare_unit_ms,
                                                         const char *what, int64_t *out,
                                                         noodle_error *err);

#ifdef __cplusplus
}
#endif
#endif
