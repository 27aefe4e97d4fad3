/* Configuration (STD-ENV): defaults < NOODLE_DB_ variables < options; every
 * malformed value is rejected with a 1xxx code naming the variable.
 *
 * The core is one table of {variable, value, expected code, expected value};
 * the tests per setting walk their rows. Everything uses envp arrays except
 * null_envp_reads_the_process_environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "noodle/backend.h"
#include "noodle/config.h"
#include "test_util.h"

#define MAXC "NOODLE_DB_MAX_CONNECTIONS"
#define TIMEOUT "NOODLE_DB_TIMEOUT"
#define MIN_IDLE "NOODLE_DB_MIN_IDLE"
#define IDLE_TIMEOUT "NOODLE_DB_IDLE_TIMEOUT"
#define MAX_LIFETIME "NOODLE_DB_MAX_LIFETIME"
#define BYPASS "NOODLE_DB_VALIDATION_BYPASS"
#define VTIMEOUT "NOODLE_DB_VALIDATION_TIMEOUT"
#define CTIMEOUT "NOODLE_DB_CONNECT_TIMEOUT"
#define LEAK "NOODLE_DB_LEAK_THRESHOLD"
#define BACKEND "NOODLE_DB_BACKEND"
#define URL "NOODLE_DB_URL"

#define PG "NOODLE_DB_BACKEND=postgres"
#define MOCK "NOODLE_DB_BACKEND=mock"

#define OUT_OF_RANGE NOODLE_E_CONFIG_OUT_OF_RANGE
#define NOT_INT NOODLE_E_CONFIG_INVALID_INTEGER
#define NOT_DURATION NOODLE_E_CONFIG_INVALID_DURATION
#define NOT_CHOICE NOODLE_E_CONFIG_INVALID_CHOICE
#define BAD_URL NOODLE_E_CONFIG_INVALID_URL
#define EMPTY NOODLE_E_CONFIG_EMPTY_VALUE

#define SECRET "hunter2"

/* ---- the table ------------------------------------------------------------ */

typedef struct env_row {
    const char *var;
    const char *value;
    int code;              /* 0: accepted */
    int64_t want;          /* accepted integer or duration (ms) */
    const char *want_text; /* accepted backend or URL */
    const char *also;      /* another "NAME=value" entry for the row (the backend), or NULL */
} env_row;

static const env_row rows[] = {
    /* max_connections: an integer from 1 to 10000 */
    {MAXC, "20", 0, 20, NULL, NULL},
    {MAXC, "+20", 0, 20, NULL, NULL},
    {MAXC, "1", 0, 1, NULL, NULL},
    {MAXC, "10000", 0, 10000, NULL, NULL},
    {MAXC, "007", 0, 7, NULL, NULL},
    {MAXC, "abc", NOT_INT, 0, NULL, NULL},
    {MAXC, "30x", NOT_INT, 0, NULL, NULL},
    {MAXC, "1.5", NOT_INT, 0, NULL, NULL},
    {MAXC, " 20", NOT_INT, 0, NULL, NULL},
    {MAXC, "20 ", NOT_INT, 0, NULL, NULL},
    {MAXC, "1e3", NOT_INT, 0, NULL, NULL},
    {MAXC, "0x10", NOT_INT, 0, NULL, NULL},
    {MAXC, "+", NOT_INT, 0, NULL, NULL},
    {MAXC, "--3", NOT_INT, 0, NULL, NULL},
    {MAXC, "-3", OUT_OF_RANGE, 0, NULL, NULL},
    {MAXC, "0", OUT_OF_RANGE, 0, NULL, NULL},
    {MAXC, "10001", OUT_OF_RANGE, 0, NULL, NULL},
    {MAXC, "99999999999", OUT_OF_RANGE, 0, NULL, NULL},
    {MAXC, "99999999999999999999999", OUT_OF_RANGE, 0, NULL, NULL},
    {MAXC, "-99999999999999999999999", OUT_OF_RANGE, 0, NULL, NULL},
    {MAXC, "", EMPTY, 0, NULL, NULL},

    /* timeout: a duration from 1ms to 24h; a bare number is seconds */
    {TIMEOUT, "30", 0, 30000, NULL, NULL},
    {TIMEOUT, "30s", 0, 30000, NULL, NULL},
    {TIMEOUT, "250ms", 0, 250, NULL, NULL},
    {TIMEOUT, "1.5s", 0, 1500, NULL, NULL},
    {TIMEOUT, "1.50s", 0, 1500, NULL, NULL},
    {TIMEOUT, "0.25", 0, 250, NULL, NULL},
    {TIMEOUT, "0.001s", 0, 1, NULL, NULL},
    {TIMEOUT, "2m", 0, 120000, NULL, NULL},
    {TIMEOUT, "1h", 0, 3600000, NULL, NULL},
    {TIMEOUT, "24h", 0, 86400000, NULL, NULL},
    {TIMEOUT, "1ms", 0, 1, NULL, NULL},
    {TIMEOUT, "+5s", 0, 5000, NULL, NULL},
    {TIMEOUT, "30x", NOT_DURATION, 0, NULL, NULL},
    {TIMEOUT, "5 s", NOT_DURATION, 0, NULL, NULL},
    {TIMEOUT, " 5s", NOT_DURATION, 0, NULL, NULL},
    {TIMEOUT, "0.5ms", NOT_DURATION, 0, NULL, NULL},
    {TIMEOUT, "1.0005s", NOT_DURATION, 0, NULL, NULL},
    {TIMEOUT, "s", NOT_DURATION, 0, NULL, NULL},
    {TIMEOUT, "30S", NOT_DURATION, 0, NULL, NULL},
    {TIMEOUT, "1d", NOT_DURATION, 0, NULL, NULL},
    {TIMEOUT, "1h30m", NOT_DURATION, 0, NULL, NULL},
    {TIMEOUT, "1.s", NOT_DURATION, 0, NULL, NULL},
    {TIMEOUT, ".5s", NOT_DURATION, 0, NULL, NULL},
    {TIMEOUT, "abc", NOT_DURATION, 0, NULL, NULL},
    {TIMEOUT, "0", OUT_OF_RANGE, 0, NULL, NULL},
    {TIMEOUT, "0ms", OUT_OF_RANGE, 0, NULL, NULL},
    {TIMEOUT, "-1", OUT_OF_RANGE, 0, NULL, NULL},
    {TIMEOUT, "-1s", OUT_OF_RANGE, 0, NULL, NULL},
    {TIMEOUT, "25h", OUT_OF_RANGE, 0, NULL, NULL},
    {TIMEOUT, "99999999999999999999h", OUT_OF_RANGE, 0, NULL, NULL},
    {TIMEOUT, "", EMPTY, 0, NULL, NULL},

    /* min_idle: an integer from 0 to 10000 (and at most max_connections) */
    {MIN_IDLE, "0", 0, 0, NULL, NULL},
    {MIN_IDLE, "5", 0, 5, NULL, NULL},
    {MIN_IDLE, "20", 0, 20, NULL, NULL},
    {MIN_IDLE, "-1", OUT_OF_RANGE, 0, NULL, NULL},
    {MIN_IDLE, "10001", OUT_OF_RANGE, 0, NULL, NULL},
    {MIN_IDLE, "two", NOT_INT, 0, NULL, NULL},
    {MIN_IDLE, "", EMPTY, 0, NULL, NULL},

    /* idle_timeout: 0 (never) to 24h */
    {IDLE_TIMEOUT, "0", 0, 0, NULL, NULL},
    {IDLE_TIMEOUT, "0s", 0, 0, NULL, NULL},
    {IDLE_TIMEOUT, "10m", 0, 600000, NULL, NULL},
    {IDLE_TIMEOUT, "90s", 0, 90000, NULL, NULL},
    {IDLE_TIMEOUT, "-5m", OUT_OF_RANGE, 0, NULL, NULL},
    {IDLE_TIMEOUT, "25h", OUT_OF_RANGE, 0, NULL, NULL},
    {IDLE_TIMEOUT, "10 minutes", NOT_DURATION, 0, NULL, NULL},
    {IDLE_TIMEOUT, "", EMPTY, 0, NULL, NULL},

    /* max_lifetime: 0 (never) to 168h */
    {MAX_LIFETIME, "30m", 0, 1800000, NULL, NULL},
    {MAX_LIFETIME, "168h", 0, 604800000, NULL, NULL},
    {MAX_LIFETIME, "0", 0, 0, NULL, NULL},
    {MAX_LIFETIME, "169h", OUT_OF_RANGE, 0, NULL, NULL},
    {MAX_LIFETIME, "30min", NOT_DURATION, 0, NULL, NULL},
    {MAX_LIFETIME, "", EMPTY, 0, NULL, NULL},

    /* validation_bypass: 0 to 1h */
    {BYPASS, "500ms", 0, 500, NULL, NULL},
    {BYPASS, "0", 0, 0, NULL, NULL},
    {BYPASS, "2h", OUT_OF_RANGE, 0, NULL, NULL},
    {BYPASS, "1.5ms", NOT_DURATION, 0, NULL, NULL},
    {BYPASS, "", EMPTY, 0, NULL, NULL},

    /* validation_timeout: 1ms to 10m */
    {VTIMEOUT, "2s", 0, 2000, NULL, NULL},
    {VTIMEOUT, "10m", 0, 600000, NULL, NULL},
    {VTIMEOUT, "0", OUT_OF_RANGE, 0, NULL, NULL},
    {VTIMEOUT, "11m", OUT_OF_RANGE, 0, NULL, NULL},
    {VTIMEOUT, "2sec", NOT_DURATION, 0, NULL, NULL},
    {VTIMEOUT, "", EMPTY, 0, NULL, NULL},

    /* connect_timeout: 1ms to 1h */
    {CTIMEOUT, "10s", 0, 10000, NULL, NULL},
    {CTIMEOUT, "1h", 0, 3600000, NULL, NULL},
    {CTIMEOUT, "0", OUT_OF_RANGE, 0, NULL, NULL},
    {CTIMEOUT, "61m", OUT_OF_RANGE, 0, NULL, NULL},
    {CTIMEOUT, "ten", NOT_DURATION, 0, NULL, NULL},
    {CTIMEOUT, "", EMPTY, 0, NULL, NULL},

    /* leak_threshold: 0 (off) to 24h */
    {LEAK, "0", 0, 0, NULL, NULL},
    {LEAK, "5m", 0, 300000, NULL, NULL},
    {LEAK, "1ms", 0, 1, NULL, NULL},
    {LEAK, "0.4ms", NOT_DURATION, 0, NULL, NULL},
    {LEAK, "1ms ", NOT_DURATION, 0, NULL, NULL},
    {LEAK, "2d", NOT_DURATION, 0, NULL, NULL},
    {LEAK, "", EMPTY, 0, NULL, NULL},

    /* the cluster's prober, breaker, slow start and read retries */
    {"NOODLE_DB_PROBE_INTERVAL", "250ms", 0, 250, NULL, NULL},
    {"NOODLE_DB_PROBE_INTERVAL", "5ms", OUT_OF_RANGE, 0, NULL, NULL},
    {"NOODLE_DB_PROBE_INTERVAL", "often", NOT_DURATION, 0, NULL, NULL},
    {"NOODLE_DB_PROBE_TIMEOUT", "2s", 0, 2000, NULL, NULL},
    {"NOODLE_DB_PROBE_TIMEOUT", "0", OUT_OF_RANGE, 0, NULL, NULL},
    {"NOODLE_DB_BREAKER_THRESHOLD", "5", 0, 5, NULL, NULL},
    {"NOODLE_DB_BREAKER_THRESHOLD", "0", OUT_OF_RANGE, 0, NULL, NULL},
    {"NOODLE_DB_BREAKER_THRESHOLD", "3x", NOT_INT, 0, NULL, NULL},
    {"NOODLE_DB_BREAKER_BACKOFF", "100ms", 0, 100, NULL, NULL},
    {"NOODLE_DB_BREAKER_BACKOFF", "", EMPTY, 0, NULL, NULL},
    {"NOODLE_DB_BREAKER_BACKOFF_MAX", "1m", 0, 60000, NULL, NULL},
    {"NOODLE_DB_BREAKER_BACKOFF_MAX", "-1s", NOT_DURATION, 0, NULL, NULL},
    {"NOODLE_DB_SLOW_START", "0", 0, 0, NULL, NULL},
    {"NOODLE_DB_SLOW_START", "2h", OUT_OF_RANGE, 0, NULL, NULL},
    {"NOODLE_DB_RETRY_READS", "1", 0, 1, NULL, NULL},
    {"NOODLE_DB_RETRY_READS", "2", OUT_OF_RANGE, 0, NULL, NULL},
    {"NOODLE_DB_RETRY_READS", "yes", NOT_INT, 0, NULL, NULL},

    /* backend: sqlite, postgres or mock, exactly */
    {BACKEND, "sqlite", 0, 0, "sqlite", NULL},
    {BACKEND, "postgres", 0, 0, "postgres", NULL},
    {BACKEND, "mock", 0, 0, "mock", NULL},
    {BACKEND, "SQLite", NOT_CHOICE, 0, NULL, NULL},
    {BACKEND, "oracle", NOT_CHOICE, 0, NULL, NULL},
    {BACKEND, "postgresql", NOT_CHOICE, 0, NULL, NULL},
    {BACKEND, " mock", NOT_CHOICE, 0, NULL, NULL},
    {BACKEND, "", EMPTY, 0, NULL, NULL},

    /* url, sqlite (the default backend) */
    {URL, "/tmp/noodle-test.db", 0, 0, "/tmp/noodle-test.db", NULL},
    {URL, ":memory:", 0, 0, ":memory:", NULL},
    {URL, "file:app.db?mode=memory&cache=shared", 0, 0, "file:app.db?mode=memory&cache=shared",
     NULL},
    {URL, "", EMPTY, 0, NULL, NULL},
    {URL, "postgresql://db.example/app", BAD_URL, 0, NULL, NULL},
    {URL, "host=db.example dbname=app", BAD_URL, 0, NULL, NULL},
    {URL, "mock://node1", BAD_URL, 0, NULL, NULL},
    {URL, "a\nb.db", BAD_URL, 0, NULL, NULL},
    /* url, postgres: libpq must parse it */
    {URL, "host=a,b port=5432,5433 dbname=app", 0, 0, "host=a,b port=5432,5433 dbname=app", PG},
    {URL, "postgresql://h1:5432,h2:5433/app?target_session_attrs=read-write", 0, 0,
     "postgresql://h1:5432,h2:5433/app?target_session_attrs=read-write", PG},
    {URL, "dbname=app", 0, 0, "dbname=app", PG},
    {URL, "host=a,b port=5432", 0, 0, "host=a,b port=5432", PG},
    {URL, "host='unterminated", BAD_URL, 0, NULL, PG},
    {URL, "postgresql://[::1", BAD_URL, 0, NULL, PG},
    {URL, "foo=bar", BAD_URL, 0, NULL, PG},
    {URL, "postgresql://h/app?foo=bar", BAD_URL, 0, NULL, PG},
    {URL, "mock://node1", BAD_URL, 0, NULL, PG},
    /* libpq only checks ports when connecting; we check them at load */
    {URL, "host=a port=notaport", BAD_URL, 0, NULL, PG},
    {URL, "postgresql://h:notaport/app", BAD_URL, 0, NULL, PG},
    {URL, "host=a port=70000", BAD_URL, 0, NULL, PG},
    {URL, "host=a,b,c port=1,2", BAD_URL, 0, NULL, PG},
    {URL, "", EMPTY, 0, NULL, PG},
    /* url, mock */
    {URL, "mock://node1", 0, 0, "mock://node1", MOCK},
    {URL, "node1", BAD_URL, 0, NULL, MOCK},
    {URL, "postgresql://h/app", BAD_URL, 0, NULL, MOCK},
    {URL, "", EMPTY, 0, NULL, MOCK},
};
#define ROW_COUNT (sizeof rows / sizeof rows[0])

/* ---- helpers ------------------------------------------------------------------ */

static const void *field_of(const noodle_config *cfg, const char *env) {
#define X_FIELD(field, suffix, ...)                                                            \
    if (strcmp(env, "NOODLE_DB_" suffix) == 0) return &cfg->field;
    NOODLE_CONFIG_MAP(X_FIELD)
#undef X_FIELD
    return NULL;
}

static size_t index_of(const char *env) {
    size_t n = 0;
    const noodle_config_setting *s = noodle_config_settings(&n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s[i].env, env) == 0) return i;
    }
    fail_msg("no setting %s", env);
    return 0;
}

static bool is_text_setting(const char *env) {
    return strcmp(env, BACKEND) == 0 || strcmp(env, URL) == 0;
}

static void format_error(const noodle_error *err, char *buf, size_t size) {
    noodle_error_format(err, buf, size);
}

static void assert_zeroed(const noodle_config *cfg) {
    noodle_config zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(cfg, &zero, sizeof zero);
}

/* Load with the row's variables and check code, value, source and message. */
static void run_row(const env_row *r) {
    char entry[600];
    snprintf(entry, sizeof entry, "%s=%s", r->var, r->value);
    char *envp[] = {entry, (char *)r->also, NULL};
    noodle_config cfg;
    noodle_error err;
    memset(&err, 0, sizeof err);
    int rc = noodle_config_load(&cfg, envp, NULL, &err);
    char msg[1024];
    format_error(&err, msg, sizeof msg);
    if (rc != r->code || (rc != 0 && err.code != rc)) {
        fail_msg("%s=\"%s\"%s%s: expected code %d, got %d: %s", r->var, r->value,
                 r->also ? " with " : "", r->also ? r->also : "", r->code, rc, msg);
    }
    if (rc == 0) {
        const void *field = field_of(&cfg, r->var);
        if (is_text_setting(r->var)) {
            assert_string_equal(*(char *const *)field, r->want_text);
        } else if (*(const int64_t *)field != r->want) {
            fail_msg("%s=\"%s\": expected %lld, got %lld", r->var, r->value, (long long)r->want,
                     (long long)*(const int64_t *)field);
        }
        assert_int_equal(cfg.source[index_of(r->var)], NOODLE_SOURCE_ENV);
        noodle_config_free(&cfg);
        return;
    }
    assert_zeroed(&cfg);
    /* The message names the variable, says what is accepted, and quotes the
     * value (when it has one and it can be shown as given). */
    if (strstr(msg, r->var) == NULL) fail_msg("message does not name %s: %s", r->var, msg);
    char code_text[16];
    snprintf(code_text, sizeof code_text, "[NOODLE-%d]", r->code);
    if (strstr(msg, code_text) == NULL) fail_msg("message lacks %s: %s", code_text, msg);
    if (r->code != EMPTY && strstr(msg, "expected") == NULL) {
        fail_msg("message does not state the accepted form: %s", msg);
    }
    if (r->code != EMPTY && strpbrk(r->value, "\n\"\\") == NULL) {
        char quoted[600];
        snprintf(quoted, sizeof quoted, "\"%s\"", r->value);
        if (strstr(msg, quoted) == NULL) fail_msg("message does not quote %s: %s", quoted, msg);
    }
}

static void run_rows_for(const char *var) {
    size_t good = 0, bad = 0;
    for (size_t i = 0; i < ROW_COUNT; i++) {
        if (strcmp(rows[i].var, var) != 0) continue;
        run_row(&rows[i]);
        if (rows[i].code == 0) {
            good++;
        } else {
            bad++;
        }
    }
    assert_true(good > 0);
    assert_true(bad > 0);
}

static int load(noodle_config *cfg, char **envp, const noodle_config_options *opts,
                noodle_error *err) {
    memset(err, 0, sizeof *err);
    return noodle_config_load(cfg, envp, opts, err);
}

static void assert_message_contains(const noodle_error *err, const char *needle) {
    char msg[1024];
    format_error(err, msg, sizeof msg);
    if (strstr(msg, needle) == NULL) fail_msg("expected \"%s\" in: %s", needle, msg);
}

static void assert_message_lacks(const noodle_error *err, const char *needle) {
    char msg[1024];
    format_error(err, msg, sizeof msg);
    if (strstr(msg, needle) != NULL) fail_msg("did not expect \"%s\" in: %s", needle, msg);
    if (strstr(err->detail, needle) != NULL) {
        fail_msg("did not expect \"%s\" in the detail", needle);
    }
}

/* ---- one test per setting, from the table ---------------------------------------- */

static void max_connections_accepts_1_to_10000_and_rejects_anything_else(void **state) {
    (void)state;
    run_rows_for(MAXC);
}

static void timeout_accepts_durations_from_1ms_to_24h_and_rejects_anything_else(void **state) {
    (void)state;
    run_rows_for(TIMEOUT);
}

static void min_idle_accepts_0_to_max_connections(void **state) {
    (void)state;
    run_rows_for(MIN_IDLE);
}

static void idle_timeout_accepts_zero_meaning_never(void **state) {
    (void)state;
    run_rows_for(IDLE_TIMEOUT);
}

static void max_lifetime_accepts_zero_to_168h(void **state) {
    (void)state;
    run_rows_for(MAX_LIFETIME);
}

static void validation_bypass_accepts_zero_to_1h_in_whole_ms(void **state) {
    (void)state;
    run_rows_for(BYPASS);
}

static void validation_timeout_accepts_1ms_to_10m(void **state) {
    (void)state;
    run_rows_for(VTIMEOUT);
}

static void connect_timeout_accepts_1ms_to_1h(void **state) {
    (void)state;
    run_rows_for(CTIMEOUT);
}

static void leak_threshold_accepts_zero_meaning_off(void **state) {
    (void)state;
    run_rows_for(LEAK);
}

static void backend_accepts_only_the_lowercase_backend_names(void **state) {
    (void)state;
    run_rows_for(BACKEND);
}

static void url_must_suit_the_chosen_backend(void **state) {
    (void)state;
    run_rows_for(URL);
}

static void every_setting_has_good_and_bad_rows_in_the_table(void **state) {
    (void)state;
    size_t n = 0;
    const noodle_config_setting *s = noodle_config_settings(&n);
    for (size_t i = 0; i < n; i++) {
        size_t good = 0, bad = 0;
        for (size_t r = 0; r < ROW_COUNT; r++) {
            if (strcmp(rows[r].var, s[i].env) != 0) continue;
            if (rows[r].code == 0) {
                good++;
            } else {
                bad++;
            }
        }
        if (good == 0 || bad == 0) fail_msg("%s lacks good or bad rows", s[i].env);
    }
}

/* ---- messages ------------------------------------------------------------------------ */

static void malformed_max_connections_is_rejected_naming_the_variable(void **state) {
    (void)state;
    char *envp[] = {MAXC "=abc", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_INVALID_INTEGER);
    char msg[1024];
    format_error(&err, msg, sizeof msg);
    assert_string_equal(msg, "[NOODLE-1001] NOODLE_DB_MAX_CONNECTIONS=\"abc\" is not a whole "
                             "number; expected an integer from 1 to 10000 (default 20)");
}

static void out_of_range_duration_states_the_range_in_human_units(void **state) {
    (void)state;
    char *envp[] = {TIMEOUT "=25h", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_OUT_OF_RANGE);
    assert_message_contains(&err, "NOODLE_DB_TIMEOUT=\"25h\" is out of range (above 24h)");
    assert_message_contains(&err, "from 1ms to 24h");
    assert_message_contains(&err, "a bare number means seconds");
    assert_message_contains(&err, "(default 30s)");
}

static void unit_typo_is_rejected_naming_the_unit(void **state) {
    (void)state;
    char *envp[] = {TIMEOUT "=30x", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_INVALID_DURATION);
    assert_message_contains(&err, "unknown unit \"x\"");
}

static void sub_millisecond_duration_is_rejected_not_rounded_to_zero(void **state) {
    (void)state;
    char *envp[] = {LEAK "=0.5ms", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_INVALID_DURATION);
    assert_message_contains(&err, "finer than 1 ms");
}

static void set_but_empty_variable_is_rejected_naming_the_default(void **state) {
    (void)state;
    char *envp[] = {MAXC "=", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_EMPTY_VALUE);
    char msg[1024];
    format_error(&err, msg, sizeof msg);
    assert_string_equal(msg, "[NOODLE-1006] NOODLE_DB_MAX_CONNECTIONS is set but empty; unset "
                             "it to use the default (20)");
}

static void wrong_case_backend_suggests_the_lowercase_name(void **state) {
    (void)state;
    char *envp[] = {BACKEND "=SQLite", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_INVALID_CHOICE);
    assert_message_contains(&err, "did you mean \"sqlite\"");
    assert_message_contains(&err, "one of sqlite, postgres, mock");
}

static void unparsable_postgres_url_carries_libpq_message(void **state) {
    (void)state;
    char *envp[] = {PG, URL "=host='unterminated", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_INVALID_URL);
    assert_message_contains(&err, "unterminated quoted string");
    assert_message_contains(&err, "backend postgres (from NOODLE_DB_BACKEND)");
}

/* ---- unknown variables ------------------------------------------------------------------- */

static void misspelt_variable_is_rejected_suggesting_the_known_name(void **state) {
    (void)state;
    char *envp[] = {"NOODLE_DB_MAX_CONECTIONS=50", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_UNKNOWN_VARIABLE);
    assert_message_contains(&err, "NOODLE_DB_MAX_CONECTIONS");
    assert_message_contains(&err, "did you mean NOODLE_DB_MAX_CONNECTIONS?");
    assert_zeroed(&cfg);
}

static void lowercase_variable_is_rejected_as_unknown(void **state) {
    (void)state;
    char *envp[] = {"noodle_db_timeout=5s", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_UNKNOWN_VARIABLE);
    assert_message_contains(&err, "did you mean NOODLE_DB_TIMEOUT?");
}

static void unknown_variable_far_from_any_setting_lists_the_settings(void **state) {
    (void)state;
    char *envp[] = {"NOODLE_DB_POOL_SIZE_LIMIT=5", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_UNKNOWN_VARIABLE);
    assert_message_contains(&err, "NOODLE_DB_POOL_SIZE_LIMIT");
    assert_message_contains(&err, "MAX_CONNECTIONS");
    assert_message_contains(&err, "LEAK_THRESHOLD");
}

static void unknown_variable_value_is_never_shown(void **state) {
    (void)state;
    char *envp[] = {"NOODLE_DB_PASWORD=" SECRET, NULL};
    noodle_config cfg;
    noodle_error err;
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_UNKNOWN_VARIABLE);
    assert_message_lacks(&err, SECRET);
}

static void other_variables_are_ignored(void **state) {
    (void)state;
    char *envp[] = {"NOODLE_PG_BINDIR=/usr/lib/postgresql/15/bin", "NOODLE_DBX=1", "PATH=/bin",
                    "MAX_CONNECTIONS=abc", "NOODLE_DB", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_ok(load(&cfg, envp, NULL, &err), &err);
    assert_int_equal(cfg.max_connections, 20);
    noodle_config_free(&cfg);
}

/* ---- defaults, precedence, sources --------------------------------------------------------- */

static void defaults_apply_when_nothing_is_set(void **state) {
    (void)state;
    char *envp[] = {NULL};
    noodle_config cfg;
    noodle_error err;
    assert_ok(load(&cfg, envp, NULL, &err), &err);
    assert_int_equal(cfg.max_connections, 20);
    assert_int_equal(cfg.timeout_ms, 30000);
    assert_int_equal(cfg.min_idle, 2);
    assert_int_equal(cfg.idle_timeout_ms, 600000);
    assert_int_equal(cfg.max_lifetime_ms, 1800000);
    assert_int_equal(cfg.validation_bypass_ms, 500);
    assert_int_equal(cfg.validation_timeout_ms, 2000);
    assert_int_equal(cfg.connect_timeout_ms, 10000);
    assert_int_equal(cfg.leak_threshold_ms, 0);
    assert_string_equal(cfg.backend, "sqlite");
    assert_string_equal(cfg.url, "noodle.db");
    size_t n = 0;
    noodle_config_settings(&n);
    for (size_t i = 0; i < n; i++) assert_int_equal(cfg.source[i], NOODLE_SOURCE_DEFAULT);
    noodle_config_free(&cfg);
}

static void url_default_follows_the_backend(void **state) {
    (void)state;
    static const struct {
        const char *backend;
        const char *url;
    } cases[] = {{"sqlite", "noodle.db"}, {"postgres", ""}, {"mock", "mock://default"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char entry[64];
        snprintf(entry, sizeof entry, BACKEND "=%s", cases[i].backend);
        char *envp[] = {entry, NULL};
        noodle_config cfg;
        noodle_error err;
        assert_ok(load(&cfg, envp, NULL, &err), &err);
        assert_string_equal(cfg.url, cases[i].url);
        assert_int_equal(cfg.source[index_of(URL)], NOODLE_SOURCE_DEFAULT);
        assert_int_equal(cfg.source[index_of(BACKEND)], NOODLE_SOURCE_ENV);
        noodle_config_free(&cfg);
    }
}

static void options_override_environment_which_overrides_defaults(void **state) {
    (void)state;
    char *envp[] = {MAXC "=50", TIMEOUT "=5s", BACKEND "=mock", URL "=mock://env", NULL};
    noodle_config_options opts = NOODLE_CONFIG_OPTIONS_INIT;
    opts.timeout_ms = 200;
    opts.url = "mock://option";
    noodle_config cfg;
    noodle_error err;
    assert_ok(load(&cfg, envp, &opts, &err), &err);
    assert_int_equal(cfg.max_connections, 50);
    assert_int_equal(cfg.source[index_of(MAXC)], NOODLE_SOURCE_ENV);
    assert_int_equal(cfg.timeout_ms, 200);
    assert_int_equal(cfg.source[index_of(TIMEOUT)], NOODLE_SOURCE_OPTION);
    assert_int_equal(cfg.min_idle, 2);
    assert_int_equal(cfg.source[index_of(MIN_IDLE)], NOODLE_SOURCE_DEFAULT);
    assert_string_equal(cfg.backend, "mock");
    assert_int_equal(cfg.source[index_of(BACKEND)], NOODLE_SOURCE_ENV);
    assert_string_equal(cfg.url, "mock://option");
    assert_int_equal(cfg.source[index_of(URL)], NOODLE_SOURCE_OPTION);
    noodle_config_free(&cfg);
}

static void option_overrides_a_malformed_variable_never(void **state) {
    (void)state;
    /* A malformed variable is an error even when an option would override it. */
    char *envp[] = {MAXC "=abc", NULL};
    noodle_config_options opts = NOODLE_CONFIG_OPTIONS_INIT;
    opts.max_connections = 10;
    noodle_config cfg;
    noodle_error err;
    assert_code(load(&cfg, envp, &opts, &err), &err, NOODLE_E_CONFIG_INVALID_INTEGER);
}

static void options_out_of_range_are_rejected_naming_the_option(void **state) {
    (void)state;
    char *envp[] = {NULL};
    noodle_config cfg;
    noodle_error err;

    noodle_config_options opts = NOODLE_CONFIG_OPTIONS_INIT;
    opts.max_connections = 0;
    assert_code(load(&cfg, envp, &opts, &err), &err, NOODLE_E_CONFIG_OUT_OF_RANGE);
    assert_message_contains(&err, "option max_connections=0 is out of range (below 1)");
    assert_message_contains(&err, "expected an integer from 1 to 10000 (default 20)");
    assert_zeroed(&cfg);

    noodle_config_options opts2 = NOODLE_CONFIG_OPTIONS_INIT;
    opts2.idle_timeout_ms = -1;
    assert_code(load(&cfg, envp, &opts2, &err), &err, NOODLE_E_CONFIG_OUT_OF_RANGE);
    assert_message_contains(&err, "option idle_timeout_ms=-1");
    assert_message_contains(&err, "0 to 86400000 (0 to 24h)");

    noodle_config_options opts3 = NOODLE_CONFIG_OPTIONS_INIT;
    opts3.backend = "Postgres";
    assert_code(load(&cfg, envp, &opts3, &err), &err, NOODLE_E_CONFIG_INVALID_CHOICE);
    assert_message_contains(&err, "option backend=\"Postgres\"");

    noodle_config_options opts4 = NOODLE_CONFIG_OPTIONS_INIT;
    opts4.url = "";
    assert_code(load(&cfg, envp, &opts4, &err), &err, NOODLE_E_CONFIG_EMPTY_VALUE);
    assert_message_contains(&err, "option url is empty");
}

static void options_struct_size_limits_the_fields_read(void **state) {
    (void)state;
    char *envp[] = {NULL};
    noodle_config cfg;
    noodle_error err;
    /* An older caller whose struct ends before url: url is not read even
     * though the memory past its struct_size holds garbage. */
    noodle_config_options opts = NOODLE_CONFIG_OPTIONS_INIT;
    opts.struct_size = offsetof(noodle_config_options, url);
    opts.max_connections = 7;
    opts.min_idle = 1;
    opts.url = "this would be refused if read: \x01";
    assert_ok(load(&cfg, envp, &opts, &err), &err);
    assert_int_equal(cfg.max_connections, 7);
    assert_string_equal(cfg.url, "noodle.db");
    assert_int_equal(cfg.source[index_of(URL)], NOODLE_SOURCE_DEFAULT);
    noodle_config_free(&cfg);

    /* Only the first field fits. */
    noodle_config_options opts2 = NOODLE_CONFIG_OPTIONS_INIT;
    opts2.struct_size = offsetof(noodle_config_options, timeout_ms);
    opts2.max_connections = 9;
    opts2.timeout_ms = -5;
    assert_ok(load(&cfg, envp, &opts2, &err), &err);
    assert_int_equal(cfg.max_connections, 9);
    assert_int_equal(cfg.timeout_ms, 30000);
    noodle_config_free(&cfg);

    /* Uninitialised options are refused rather than read. */
    noodle_config_options opts3;
    memset(&opts3, 0, sizeof opts3);
    assert_code(load(&cfg, envp, &opts3, &err), &err, NOODLE_E_CONFIG_INVALID_ARGUMENT);
    assert_message_contains(&err, "NOODLE_CONFIG_OPTIONS_INIT");
}

static void min_idle_above_max_connections_is_inconsistent_naming_both_sources(void **state) {
    (void)state;
    noodle_config cfg;
    noodle_error err;
    char *envp[] = {MIN_IDLE "=30", NULL};
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_INCONSISTENT);
    assert_message_contains(&err, "min_idle 30 (from NOODLE_DB_MIN_IDLE)");
    assert_message_contains(&err, "max_connections 20 (from default)");
    assert_zeroed(&cfg);

    char *envp2[] = {MIN_IDLE "=10", NULL};
    noodle_config_options opts = NOODLE_CONFIG_OPTIONS_INIT;
    opts.max_connections = 5;
    assert_code(load(&cfg, envp2, &opts, &err), &err, NOODLE_E_CONFIG_INCONSISTENT);
    assert_message_contains(&err, "max_connections 5 (from option max_connections)");

    char *envp3[] = {MIN_IDLE "=5", MAXC "=5", NULL};
    assert_ok(load(&cfg, envp3, NULL, &err), &err);
    noodle_config_free(&cfg);
}

static void default_min_idle_follows_a_smaller_max_connections(void **state) {
    (void)state;
    char *envp[] = {MAXC "=1", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_ok(load(&cfg, envp, NULL, &err), &err);
    assert_int_equal(cfg.min_idle, 1);
    assert_int_equal(cfg.source[index_of(MIN_IDLE)], NOODLE_SOURCE_DEFAULT);
    /* and back to 2 when max_connections grows again */
    assert_ok(noodle_config_set(&cfg, "max_connections", "10", &err), &err);
    assert_int_equal(cfg.min_idle, 2);
    noodle_config_free(&cfg);
}

static void a_registered_backend_is_a_valid_choice(void **state) {
    (void)state;
    noodle_config cfg;
    noodle_error err;
    char *envp[] = {BACKEND "=noodle_test_other", NULL};
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_INVALID_CHOICE);
    const noodle_backend_ops *mock = NULL;
    noodle_error find_err;
    memset(&find_err, 0, sizeof find_err);
    /* Register a copy of a built-in table under another name. */
    assert_ok(noodle_backend_find("sqlite", &mock, &find_err), &find_err);
    static noodle_backend_ops other;
    other = *mock;
    other.name = "noodle_test_other";
    assert_ok(noodle_backend_register(&other, &find_err), &find_err);
    assert_ok(load(&cfg, envp, NULL, &err), &err);
    assert_string_equal(cfg.backend, "noodle_test_other");
    assert_string_equal(cfg.url, "");
    noodle_config_free(&cfg);
}

/* ---- secrets --------------------------------------------------------------------------------- */

static void secrets_never_appear_in_error_messages(void **state) {
    (void)state;
    static const struct {
        const char *backend;
        const char *url;
        int code;
    } cases[] = {
        {"postgres", "postgresql://u:" SECRET "@[::1", BAD_URL},
        {"postgres", "postgresql://u:" SECRET "@h:notaport/app", BAD_URL},
        {"postgres", "host='unterminated password=" SECRET, BAD_URL},
        {"postgres", "host=h password=" SECRET " port=x", BAD_URL},
        {"postgres", "host=h password='" SECRET "' garbage", BAD_URL},
        {"postgres", "postgresql://h/app?password=" SECRET "&foo=bar", BAD_URL},
        {"postgres", "postgresql://h/app?password=" SECRET "%zz", BAD_URL},
        {"postgres", "postgresql://u:" SECRET "%zz@h/app", BAD_URL},
        {"postgres", "host=h sslpassword=" SECRET " foo=bar", BAD_URL},
        {"mock", "postgresql://u:" SECRET "@h/app", BAD_URL},
        {"mock", "host=h password=" SECRET, BAD_URL},
        {"sqlite", "host=h password=" SECRET, BAD_URL},
        {"sqlite", "host=h\npassword=" SECRET, BAD_URL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char b[64], u[256];
        snprintf(b, sizeof b, BACKEND "=%s", cases[i].backend);
        snprintf(u, sizeof u, URL "=%s", cases[i].url);
        char *envp[] = {b, u, NULL};
        noodle_config cfg;
        noodle_error err;
        assert_code(load(&cfg, envp, NULL, &err), &err, cases[i].code);
        assert_message_lacks(&err, SECRET);
        assert_message_contains(&err, URL);

        /* The same through options and noodle_config_set. */
        noodle_config_options opts = NOODLE_CONFIG_OPTIONS_INIT;
        opts.backend = cases[i].backend;
        opts.url = cases[i].url;
        char *none[] = {NULL};
        assert_code(load(&cfg, none, &opts, &err), &err, cases[i].code);
        assert_message_lacks(&err, SECRET);
        assert_message_contains(&err, "option url");
    }
    /* A control character is refused by noodle_config_set too, masked. */
    char *none[] = {NULL};
    noodle_config cfg;
    noodle_error err;
    assert_ok(load(&cfg, none, NULL, &err), &err);
    assert_code(noodle_config_set(&cfg, "url", "host=h\tpassword=" SECRET "\n", &err), &err,
                BAD_URL);
    assert_message_lacks(&err, SECRET);
    assert_message_contains(&err, "option url");
    noodle_config_free(&cfg);
}

static void secrets_are_masked_in_value_text(void **state) {
    (void)state;
    static const char *const urls[] = {
        "host=db password=" SECRET " dbname=app",
        "host=db password = '" SECRET "' dbname=app",
        "postgresql://app:" SECRET "@h1:5432,h2:5433/app",
        "postgresql://app@h1/app?password=" SECRET "&sslmode=disable",
        ("host=db sslpassword=" SECRET),
    };
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        char u[256];
        snprintf(u, sizeof u, URL "=%s", urls[i]);
        char *envp[] = {PG, u, NULL};
        noodle_config cfg;
        noodle_error err;
        assert_ok(load(&cfg, envp, NULL, &err), &err);
        assert_string_equal(cfg.url, urls[i]); /* the struct keeps the real value */
        char text[512];
        size_t n = noodle_config_value_text(&cfg, index_of(URL), text, sizeof text);
        assert_int_equal(n, strlen(text));
        if (strstr(text, SECRET) != NULL) fail_msg("secret shown: %s", text);
        assert_non_null(strstr(text, "****"));
        noodle_config_free(&cfg);
    }
}

/* ---- listing and value text ------------------------------------------------------------------ */

static void settings_list_every_variable_with_form_and_default(void **state) {
    (void)state;
    size_t n = 0;
    const noodle_config_setting *s = noodle_config_settings(&n);
    assert_int_equal(n, 18);
    static const char *const fields[] = {"max_connections",       "timeout_ms",
                                         "min_idle",              "idle_timeout_ms",
                                         "max_lifetime_ms",       "validation_bypass_ms",
                                         "validation_timeout_ms", "connect_timeout_ms",
                                         "leak_threshold_ms",     "backend",
                                         "url",                   "probe_interval_ms",
                                         "probe_timeout_ms",      "breaker_threshold",
                                         "breaker_backoff_ms",    "breaker_backoff_max_ms",
                                         "slow_start_ms",         "retry_reads"};
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(s[i].field, fields[i]);
        assert_true(strncmp(s[i].env, "NOODLE_DB_", 10) == 0);
        assert_true(strlen(s[i].form) > 10);
        assert_true(strlen(s[i].description) > 10);
        assert_non_null(s[i].defaults);
        for (size_t j = 0; j < i; j++) assert_string_not_equal(s[i].env, s[j].env);
    }
    assert_string_equal(s[0].kind, "integer");
    assert_string_equal(s[0].form, "an integer from 1 to 10000");
    assert_string_equal(s[0].defaults, "20");
    assert_string_equal(s[1].kind, "duration");
    assert_string_equal(s[1].defaults, "30s");
    assert_non_null(strstr(s[1].form, "from 1ms to 24h"));
    assert_string_equal(s[4].defaults, "30m");
    assert_string_equal(s[8].defaults, "0");
    assert_string_equal(s[9].kind, "choice");
    assert_string_equal(s[9].form, "one of sqlite, postgres, mock");
    assert_string_equal(s[9].defaults, "sqlite");
    assert_string_equal(s[10].kind, "url");
}

static void durations_print_in_the_most_natural_unit(void **state) {
    (void)state;
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {{"30", "30s"},   {"500ms", "500ms"}, {"600s", "10m"}, {"1.5s", "1500ms"},
                 {"90s", "90s"},  {"24h", "24h"},     {"2h", "2h"},    {"0.25", "250ms"}};
    size_t t = index_of(TIMEOUT);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char entry[64];
        snprintf(entry, sizeof entry, TIMEOUT "=%s", cases[i].in);
        char *envp[] = {entry, NULL};
        noodle_config cfg;
        noodle_error err;
        assert_ok(load(&cfg, envp, NULL, &err), &err);
        char text[32];
        noodle_config_value_text(&cfg, t, text, sizeof text);
        assert_string_equal(text, cases[i].out);
        /* What value_text prints parses back to the same value. */
        int64_t back = 0;
        assert_ok(noodle_parse_duration_ms(text, 1000, "round trip", &back, &err), &err);
        assert_int_equal(back, cfg.timeout_ms);
        noodle_config_free(&cfg);
    }
}

static void value_text_reports_the_length_needed_like_snprintf(void **state) {
    (void)state;
    char *envp[] = {MAXC "=1234", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_ok(load(&cfg, envp, NULL, &err), &err);
    char small[3];
    assert_int_equal(noodle_config_value_text(&cfg, 0, small, sizeof small), 4);
    assert_string_equal(small, "12");
    assert_int_equal(noodle_config_value_text(&cfg, 0, NULL, 0), 4);
    char text[64];
    assert_int_equal(noodle_config_value_text(&cfg, index_of(URL), text, sizeof text), 9);
    assert_string_equal(text, "noodle.db");
    assert_int_equal(noodle_config_value_text(&cfg, index_of(BACKEND), text, sizeof text), 6);
    assert_string_equal(text, "sqlite");
    assert_int_equal(noodle_config_value_text(&cfg, 99, text, sizeof text), 0);
    assert_string_equal(text, "");
    assert_int_equal(noodle_config_value_text(NULL, 0, text, sizeof text), 0);
    noodle_config_free(&cfg);
}

/* ---- noodle_config_set ----------------------------------------------------------------------- */

static void config_set_parses_like_the_environment_with_option_source(void **state) {
    (void)state;
    char *envp[] = {TIMEOUT "=5s", NULL};
    noodle_config cfg;
    noodle_error err;
    assert_ok(load(&cfg, envp, NULL, &err), &err);
    assert_ok(noodle_config_set(&cfg, "timeout_ms", "250ms", &err), &err);
    assert_int_equal(cfg.timeout_ms, 250);
    assert_int_equal(cfg.source[index_of(TIMEOUT)], NOODLE_SOURCE_OPTION);

    /* A bad value names the option and leaves the setting unchanged. */
    assert_code(noodle_config_set(&cfg, "timeout_ms", "30x", &err), &err,
                NOODLE_E_CONFIG_INVALID_DURATION);
    assert_message_contains(&err, "option timeout_ms=\"30x\"");
    assert_int_equal(cfg.timeout_ms, 250);
    assert_code(noodle_config_set(&cfg, "max_connections", "", &err), &err,
                NOODLE_E_CONFIG_EMPTY_VALUE);
    assert_message_contains(&err, "option max_connections");
    assert_int_equal(cfg.max_connections, 20);

    /* Changing the backend moves a URL still at its default along. */
    assert_ok(noodle_config_set(&cfg, "backend", "mock", &err), &err);
    assert_string_equal(cfg.url, "mock://default");
    assert_ok(noodle_config_set(&cfg, "url", "mock://n2", &err), &err);
    assert_ok(noodle_config_set(&cfg, "backend", "postgres", &err), &err);
    assert_string_equal(cfg.url, "mock://n2"); /* set explicitly: kept */
    noodle_config_free(&cfg);
}

static void config_set_unknown_field_suggests_the_closest(void **state) {
    (void)state;
    char *envp[] = {NULL};
    noodle_config cfg;
    noodle_error err;
    assert_ok(load(&cfg, envp, NULL, &err), &err);
    assert_code(noodle_config_set(&cfg, "max_conections", "5", &err), &err,
                NOODLE_E_CONFIG_UNKNOWN_OPTION);
    assert_message_contains(&err, "did you mean max_connections?");
    assert_code(noodle_config_set(&cfg, "colour", "5", &err), &err,
                NOODLE_E_CONFIG_UNKNOWN_OPTION);
    assert_message_contains(&err, "\"colour\"");
    noodle_config_free(&cfg);

    /* On an unloaded configuration it refuses rather than guess. */
    noodle_config zero;
    memset(&zero, 0, sizeof zero);
    assert_code(noodle_config_set(&zero, "max_connections", "5", &err), &err,
                NOODLE_E_CONFIG_INVALID_ARGUMENT);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void failed_load_leaves_config_zeroed_and_free_is_safe(void **state) {
    (void)state;
    noodle_config cfg;
    memset(&cfg, 0xab, sizeof cfg); /* garbage from the caller */
    noodle_error err;
    char *envp[] = {BACKEND "=mock", URL "=mock://a", TIMEOUT "=never", NULL};
    assert_code(load(&cfg, envp, NULL, &err), &err, NOODLE_E_CONFIG_INVALID_DURATION);
    assert_zeroed(&cfg);
    noodle_config_free(&cfg);
    noodle_config_free(&cfg);
    noodle_config_free(NULL);
    assert_code(noodle_config_load(NULL, envp, NULL, &err), &err,
                NOODLE_E_CONFIG_INVALID_ARGUMENT);
}

static void null_envp_reads_the_process_environment(void **state) {
    (void)state;
    assert_int_equal(setenv(MAXC, "42", 1), 0);
    noodle_config cfg;
    noodle_error err;
    int rc = load(&cfg, NULL, NULL, &err);
    unsetenv(MAXC);
    assert_ok(rc, &err);
    assert_int_equal(cfg.max_connections, 42);
    assert_int_equal(cfg.source[index_of(MAXC)], NOODLE_SOURCE_ENV);
    noodle_config_free(&cfg);

    assert_int_equal(setenv("NOODLE_DB_TIMEOUTT", "5s", 1), 0);
    rc = load(&cfg, NULL, NULL, &err);
    unsetenv("NOODLE_DB_TIMEOUTT");
    assert_code(rc, &err, NOODLE_E_CONFIG_UNKNOWN_VARIABLE);
}

static void source_names_are_stable(void **state) {
    (void)state;
    assert_string_equal(noodle_config_source_name(NOODLE_SOURCE_DEFAULT), "default");
    assert_string_equal(noodle_config_source_name(NOODLE_SOURCE_ENV), "env");
    assert_string_equal(noodle_config_source_name(NOODLE_SOURCE_OPTION), "option");
}

/* ---- noodle_parse_duration_ms ---------------------------------------------------------------- */

static void parse_duration_uses_the_bare_unit_and_names_what(void **state) {
    (void)state;
    noodle_error err;
    memset(&err, 0, sizeof err);
    int64_t ms = 0;
    assert_ok(noodle_parse_duration_ms("250", 1, "--interval", &ms, &err), &err);
    assert_int_equal(ms, 250);
    assert_ok(noodle_parse_duration_ms("2", 60000, "--interval", &ms, &err), &err);
    assert_int_equal(ms, 120000);
    assert_ok(noodle_parse_duration_ms("1.5h", 1000, "--interval", &ms, &err), &err);
    assert_int_equal(ms, 5400000);
    assert_ok(noodle_parse_duration_ms("0", 1000, "--interval", &ms, &err), &err);
    assert_int_equal(ms, 0);

    ms = 77;
    assert_code(noodle_parse_duration_ms("1.5", 1, "--interval", &ms, &err), &err,
                NOODLE_E_CONFIG_INVALID_DURATION);
    assert_int_equal(ms, 77); /* untouched on failure */
    assert_message_contains(&err, "--interval=\"1.5\"");
    assert_message_contains(&err, "a bare number means milliseconds");
    assert_code(noodle_parse_duration_ms("-2s", 1000, "--interval", &ms, &err), &err,
                NOODLE_E_CONFIG_OUT_OF_RANGE);
    assert_message_contains(&err, "negative");
    assert_code(noodle_parse_duration_ms("9223372036854775807s", 1000, "x", &ms, &err), &err,
                NOODLE_E_CONFIG_OUT_OF_RANGE);
    assert_code(noodle_parse_duration_ms("", 1000, "x", &ms, &err), &err,
                NOODLE_E_CONFIG_INVALID_DURATION);
    assert_code(noodle_parse_duration_ms("1s", 0, "x", &ms, &err), &err,
                NOODLE_E_CONFIG_INVALID_ARGUMENT);
    assert_code(noodle_parse_duration_ms(NULL, 1000, "x", &ms, &err), &err,
                NOODLE_E_CONFIG_INVALID_ARGUMENT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(max_connections_accepts_1_to_10000_and_rejects_anything_else),
        cmocka_unit_test(timeout_accepts_durations_from_1ms_to_24h_and_rejects_anything_else),
        cmocka_unit_test(min_idle_accepts_0_to_max_connections),
        cmocka_unit_test(idle_timeout_accepts_zero_meaning_never),
        cmocka_unit_test(max_lifetime_accepts_zero_to_168h),
        cmocka_unit_test(validation_bypass_accepts_zero_to_1h_in_whole_ms),
        cmocka_unit_test(validation_timeout_accepts_1ms_to_10m),
        cmocka_unit_test(connect_timeout_accepts_1ms_to_1h),
        cmocka_unit_test(leak_threshold_accepts_zero_meaning_off),
        cmocka_unit_test(backend_accepts_only_the_lowercase_backend_names),
        cmocka_unit_test(url_must_suit_the_chosen_backend),
        cmocka_unit_test(every_setting_has_good_and_bad_rows_in_the_table),
        cmocka_unit_test(malformed_max_connections_is_rejected_naming_the_variable),
        cmocka_unit_test(out_of_range_duration_states_the_range_in_human_units),
        cmocka_unit_test(unit_typo_is_rejected_naming_the_unit),
        cmocka_unit_test(sub_millisecond_duration_is_rejected_not_rounded_to_zero),
        cmocka_unit_test(set_but_empty_variable_is_rejected_naming_the_default),
        cmocka_unit_test(wrong_case_backend_suggests_the_lowercase_name),
        cmocka_unit_test(unparsable_postgres_url_carries_libpq_message),
        cmocka_unit_test(misspelt_variable_is_rejected_suggesting_the_known_name),
        cmocka_unit_test(lowercase_variable_is_rejected_as_unknown),
        cmocka_unit_test(unknown_variable_far_from_any_setting_lists_the_settings),
        cmocka_unit_test(unknown_variable_value_is_never_shown),
        cmocka_unit_test(other_variables_are_ignored),
        cmocka_unit_test(defaults_apply_when_nothing_is_set),
        cmocka_unit_test(url_default_follows_the_backend),
        cmocka_unit_test(options_override_environment_which_overrides_defaults),
        cmocka_unit_test(option_overrides_a_malformed_variable_never),
        cmocka_unit_test(options_out_of_range_are_rejected_naming_the_option),
        cmocka_unit_test(options_struct_size_limits_the_fields_read),
        cmocka_unit_test(min_idle_above_max_connections_is_inconsistent_naming_both_sources),
        cmocka_unit_test(default_min_idle_follows_a_smaller_max_connections),
        cmocka_unit_test(a_registered_backend_is_a_valid_choice),
        cmocka_unit_test(secrets_never_appear_in_error_messages),
        cmocka_unit_test(secrets_are_masked_in_value_text),
        cmocka_unit_test(settings_list_every_variable_with_form_and_default),
        cmocka_unit_test(durations_print_in_the_most_natural_unit),
        cmocka_unit_test(value_text_reports_the_length_needed_like_snprintf),
        cmocka_unit_test(config_set_parses_like_the_environment_with_option_source),
        cmocka_unit_test(config_set_unknown_field_suggests_the_closest),
        cmocka_unit_test(failed_load_leaves_config_zeroed_and_free_is_safe),
        cmocka_unit_test(null_envp_reads_the_process_environment),
        cmocka_unit_test(source_names_are_stable),
        cmocka_unit_test(parse_duration_uses_the_bare_unit_and_names_what),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
