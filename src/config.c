/* Configuration: defaults < NOODLE_DB_ environment variables < explicit options.
 *
 * Design notes
 *
 * One table drives everything. NOODLE_CONFIG_MAP (config.h) is expanded once
 * into setting_defs[]: field name, variable name, kind, default, range and
 * the offsets of the field in noodle_config and noodle_config_options.
 * Parsing, defaults, listings, value_text and every error message read that
 * table; there is no per-setting code apart from the two cross-setting rules
 * in noodle_config_check().
 *
 * Invariants:
 *  1. Nothing malformed silently becomes a default (STD-ENV). A set-but-empty
 *     variable, a unit typo, a negative count, a value outside its range, an
 *     unknown NOODLE_DB_ variable (any case) and a URL the backend cannot
 *     use are all errors with a 1xxx code.
 *  2. Every error message names where the value came from (the variable,
 *     "option <field>", or "default"), quotes the bad value, and states the
 *     accepted form; the form text is the same one noodle_config_settings()
 *     lists.
 *  3. A secret never leaves this file: URLs are shown through
 *     noodle_mask_secrets(), and libpq's own messages (which quote whole
 *     URIs) through noodle__scrub_secrets (both in src/secrets.c). Values of
 *     unknown variables are never shown at all.
 *  4. noodle_config_load either fills *cfg completely or leaves it zeroed.
 *     noodle_config_set either applies the new value or leaves cfg unchanged.
 *  5. Durations are whole milliseconds. Parsing is exact decimal arithmetic
 *     (no floating point); a value finer than 1 ms is an error, never rounded
 *     to 0 (which would mean "off" for several settings).
 *
 * The only static storage is the listing returned by noodle_config_settings():
 * its texts (ranges in human units) are computed once under pthread_once and
 * read-only afterwards.
 */
#include "noodle/config.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h> /* environ (_GNU_SOURCE) */

#include "internal.h"
#include "noodle/backend.h"

#define ENV_PREFIX "NOODLE_DB_"
#define ENV_PREFIX_LEN (sizeof ENV_PREFIX - 1)

/* ---- the table ------------------------------------------------------------- */

typedef enum setting_kind { KIND_INT, KIND_DURATION, KIND_CHOICE, KIND_URL } setting_kind;

typedef struct setting_def {
    const char *field;
    const char *env;
    setting_kind kind;
    int64_t def; /* INT, DURATION: the value; CHOICE: index into backend_rules */
    int64_t min;
    int64_t max;
    const char *description;
    size_t cfg_offset; /* of the field in noodle_config */
    size_t opt_offset; /* of the field in noodle_config_options */
    size_t opt_end;    /* offset just past it: read only when <= opts->struct_size */
} setting_def;

#define OPT_FIELD_END(field)                                                                   \
    (offsetof(noodle_config_options, field) + sizeof(((noodle_config_options *)0)->field))

#define X_DEF(field, suffix, kind, def, min, max, desc)                                        \
    {#field,                                                                                   \
     ENV_PREFIX suffix,                                                                        \
     KIND_##kind,                                                                              \
     (def),                                                                                    \
     (min),                                                                                    \
     (max),                                                                                    \
     desc,                                                                                     \
     offsetof(noodle_config, field),                                                           \
     offsetof(noodle_config_options, field),                                                   \
     OPT_FIELD_END(field)},
static const setting_def setting_defs[] = {NOODLE_CONFIG_MAP(X_DEF)};
#undef X_DEF

/* IDX_<field>: the index of each setting, for the cross-setting rules. */
enum {
#define X_INDEX(field, ...) IDX_##field,
    NOODLE_CONFIG_MAP(X_INDEX)
#undef X_INDEX
        SETTING_COUNT
};

_Static_assert(SETTING_COUNT <= sizeof(((noodle_config *)0)->source) /
                                    sizeof(((noodle_config *)0)->source[0]),
               "noodle_config.source[] is too small for NOODLE_CONFIG_MAP");

/* Each kind has one C type, in the config and in the options. */
#define KIND_CTYPE_INT int64_t
#define KIND_CTYPE_DURATION int64_t
#define KIND_CTYPE_CHOICE char *
#define KIND_CTYPE_URL char *
#define KIND_OPTTYPE_INT int64_t
#define KIND_OPTTYPE_DURATION int64_t
#define KIND_OPTTYPE_CHOICE const char *
#define KIND_OPTTYPE_URL const char *
#define X_TYPECHECK(field, suffix, kind, ...)                                                  \
    _Static_assert(_Generic(((noodle_config *)0)->field, KIND_CTYPE_##kind: 1, default: 0),    \
                   "noodle_config." #field " does not have the C type of a " #kind);           \
    _Static_assert(_Generic(((noodle_config_options *)0)->field, KIND_OPTTYPE_##kind: 1,      \
                            default: 0),                                                       \
                   "noodle_config_options." #field " does not have the C type of a " #kind);
NOODLE_CONFIG_MAP(X_TYPECHECK)
#undef X_TYPECHECK

/* ---- backends: the CHOICE values and their URL rules ------------------------- */

typedef int (*url_check_fn)(const char *url, char *why, size_t why_size);

static int check_sqlite_url(const char *url, char *why, size_t why_size);
static int check_postgres_url(const char *url, char *why, size_t why_size);
static int check_mock_url(const char *url, char *why, size_t why_size);

typedef struct backend_rule {
    const char *name;
    const char *default_url;
    const char *url_form; /* what the URL must look like for this backend */
    url_check_fn check;
} backend_rule;

/* The CHOICE default (0 in NOODLE_CONFIG_MAP) indexes this table. */
static const backend_rule backend_rules[] = {
    {"sqlite", "noodle.db", "a file path, :memory: or a file: URI", check_sqlite_url},
    {"postgres", "",
     "a libpq conninfo (host=a,b port=5432,5433 dbname=app ...) or a postgresql:// URI",
     check_postgres_url},
    {"mock", "mock://default", "mock://<node>", check_mock_url},
};
#define BACKEND_RULE_COUNT (sizeof backend_rules / sizeof backend_rules[0])

#define URL_DEFAULT_TEXT                                                                       \
    "noodle.db for sqlite, libpq defaults for postgres, mock://default for mock"

static const backend_rule *find_backend_rule(const char *name) {
    for (size_t i = 0; i < BACKEND_RULE_COUNT; i++) {
        if (strcmp(backend_rules[i].name, name) == 0) return &backend_rules[i];
    }
    return NULL;
}

/* ---- small text helpers ------------------------------------------------------ */

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static char to_upper(char c) { return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c; }

static bool has_space(const char *s) {
    for (; *s; s++) {
        if (is_space(*s)) return true;
    }
    return false;
}

static bool starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool starts_with_nocase(const char *s, const char *prefix) {
    for (; *prefix; s++, prefix++) {
        if (to_upper(*s) != to_upper(*prefix)) return false;
    }
    return true;
}

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p != NULL) memcpy(p, s, n);
    return p;
}

/* Append to a bounded buffer, always terminated; *len counts what the whole
 * text would need (snprintf-style). */
typedef struct textbuf {
    char *buf;
    size_t size;
    size_t len;
} textbuf;

static void tb_putn(textbuf *tb, const char *s, size_t n) {
    if (tb->size > 0 && tb->len < tb->size - 1) {
        size_t room = tb->size - 1 - tb->len;
        memcpy(tb->buf + tb->len, s, n < room ? n : room);
        tb->buf[tb->len + (n < room ? n : room)] = '\0';
    }
    tb->len += n;
}

/* Copy s into buf for quoting inside "...": backslash and quote escaped,
 * control bytes as \xNN, and cut after max_chars with "...". */
static void escape_value(const char *s, char *buf, size_t size, size_t max_chars) {
    textbuf tb = {buf, size, 0};
    if (size > 0) buf[0] = '\0';
    size_t shown = 0;
    for (; *s; s++) {
        if (shown == max_chars) {
            tb_putn(&tb, "...", 3);
            break;
        }
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            tb_putn(&tb, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            tb_putn(&tb, esc, 4);
        } else {
            tb_putn(&tb, s, 1);
        }
        shown++;
    }
}

/* Levenshtein distance, case-insensitive; large for long strings. */
static size_t edit_distance(const char *a, const char *b) {
    enum { MAXLEN = 64 };
    size_t la = strlen(a), lb = strlen(b);
    if (la > MAXLEN || lb > MAXLEN) return SIZE_MAX;
    size_t row[MAXLEN + 1];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = to_upper(a[i - 1]) == to_upper(b[j - 1]) ? 0 : 1;
            size_t best = diag + cost;
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The candidate closest to word, or NULL when none is close enough to be a
 * plausible typo. */
static const char *closest(const char *word, const char *const *candidates, size_t n) {
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(word, candidates[i]);
        if (d < best_d) {
            best_d = d;
            best = candidates[i];
        }
    }
    if (best == NULL) return NULL;
    size_t limit = strlen(best) / 3;
    if (limit < 2) limit = 2;
    return best_d <= limit ? best : NULL;
}

/* ---- durations in human units ------------------------------------------------ */

typedef struct duration_unit {
    const char *name;
    int64_t ms;
} duration_unit;

/* Largest first: value_text uses the largest unit that divides exactly. */
static const duration_unit duration_units[] = {
    {"h", 3600000},
    {"m", 60000},
    {"s", 1000},
    {"ms", 1},
};
#define DURATION_UNIT_COUNT (sizeof duration_units / sizeof duration_units[0])

#define DURATION_SYNTAX                                                                        \
    "a number with a unit ms, s, m or h (250ms, 1.5s, 2m, 1h); a bare number means "

static size_t format_duration(int64_t ms, char *buf, size_t size) {
    if (ms == 0) return (size_t)snprintf(buf, size, "0");
    for (size_t i = 0; i < DURATION_UNIT_COUNT; i++) {
        if (ms % duration_units[i].ms == 0) {
            return (size_t)snprintf(buf, size, "%lld%s", (long long)(ms / duration_units[i].ms),
                                    duration_units[i].name);
        }
    }
    return 0; /* not reached: every value is a whole number of ms */
}

static const char *bare_unit_name(int64_t bare_unit_ms) {
    switch (bare_unit_ms) {
    case 1: return "milliseconds";
    case 1000: return "seconds";
    case 60000: return "minutes";
    case 3600000: return "hours";
    default: return NULL;
    }
}

/* ---- parsing ------------------------------------------------------------------- */

/* Parse an integer: optional sign, decimal digits, nothing else (leading
 * zeros are fine). Returns 0, NOODLE_E_CONFIG_INVALID_INTEGER, or
 * NOODLE_E_CONFIG_OUT_OF_RANGE when it does not fit in int64 (*overflow_sign
 * then says which end: -1 or 1). */
static int parse_int(const char *s, int64_t *out, int *overflow_sign) {
    const char *p = s;
    bool neg = false;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    if (!is_digit(*p)) return NOODLE_E_CONFIG_INVALID_INTEGER;
    for (const char *q = p; *q; q++) {
        if (!is_digit(*q)) return NOODLE_E_CONFIG_INVALID_INTEGER;
    }
    /* Accumulate negatively so that INT64_MIN fits. */
    int64_t v = 0;
    for (; *p; p++) {
        int digit = *p - '0';
        if (v < (INT64_MIN + digit) / 10) {
            *overflow_sign = neg ? -1 : 1;
            return NOODLE_E_CONFIG_OUT_OF_RANGE;
        }
        v = v * 10 - digit;
    }
    if (!neg) {
        if (v == INT64_MIN) {
            *overflow_sign = 1;
            return NOODLE_E_CONFIG_OUT_OF_RANGE;
        }
        v = -v;
    }
    *out = v;
    return 0;
}

/* The outcome of parsing a duration: code 0 with ms, or a code and why. */
typedef struct duration_result {
    int code;
    bool negative;  /* code OUT_OF_RANGE: the value is below zero */
    int64_t ms;
    char why[96];
} duration_result;

static void parse_duration(const char *s, int64_t bare_unit_ms, duration_result *r) {
    static const int64_t powers[] = {1,      10,      100,      1000,      10000,
                                    100000, 1000000, 10000000, 100000000, 1000000000};
    memset(r, 0, sizeof *r);
    r->code = NOODLE_E_CONFIG_INVALID_DURATION;
    if (has_space(s)) {
        snprintf(r->why, sizeof r->why, "it contains whitespace");
        return;
    }
    const char *p = s;
    bool neg = false;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    if (!is_digit(*p)) {
        snprintf(r->why, sizeof r->why, "it does not start with a number");
        return;
    }
    const char *int_start = p;
    while (is_digit(*p)) p++;
    const char *int_end = p;
    const char *frac_start = p, *frac_end = p;
    if (*p == '.') {
        p++;
        frac_start = p;
        while (is_digit(*p)) p++;
        frac_end = p;
        if (frac_start == frac_end) {
            snprintf(r->why, sizeof r->why, "expected digits after the decimal point");
            return;
        }
    }
    int64_t unit = bare_unit_ms;
    if (*p != '\0') {
        unit = 0;
        for (size_t i = 0; i < DURATION_UNIT_COUNT; i++) {
            if (strcmp(p, duration_units[i].name) == 0) unit = duration_units[i].ms;
        }
        if (unit == 0) {
            char shown[24];
            escape_value(p, shown, sizeof shown, 8);
            snprintf(r->why, sizeof r->why, "unknown unit \"%s\"; units are ms, s, m and h", shown);
            return;
        }
    }
    /* Trailing zeros of the fraction carry nothing. */
    while (frac_end > frac_start && frac_end[-1] == '0') frac_end--;
    size_t frac_digits = (size_t)(frac_end - frac_start);

    /* Magnitude: whole part * unit + fraction * unit, exactly. */
    bool too_big = false;
    int64_t whole = 0;
    for (const char *q = int_start; q < int_end; q++) {
        if (whole > (INT64_MAX - (*q - '0')) / 10) {
            too_big = true;
            break;
        }
        whole = whole * 10 + (*q - '0');
    }
    int64_t ms = 0;
    if (!too_big && whole > INT64_MAX / unit) too_big = true;
    if (!too_big) ms = whole * unit;
    if (frac_digits > 0) {
        int64_t frac = 0;
        bool exact = frac_digits < sizeof powers / sizeof powers[0];
        if (exact) {
            for (const char *q = frac_start; q < frac_end; q++) frac = frac * 10 + (*q - '0');
            /* frac < 10^9; unit may be any bare unit, so check the product. */
            if (unit > INT64_MAX / powers[frac_digits]) exact = false;
        }
        if (exact && (frac * unit) % powers[frac_digits] != 0) exact = false;
        if (!exact) {
            snprintf(r->why, sizeof r->why,
                     "it is finer than 1 ms; durations are whole milliseconds");
            return;
        }
        int64_t part = frac * unit / powers[frac_digits];
        if (!too_big && ms > INT64_MAX - part) too_big = true;
        if (!too_big) ms += part;
    }
    if (neg && (too_big || ms != 0)) {
        r->code = NOODLE_E_CONFIG_OUT_OF_RANGE;
        r->negative = true;
        snprintf(r->why, sizeof r->why, "negative");
        return;
    }
    if (too_big) {
        r->code = NOODLE_E_CONFIG_OUT_OF_RANGE;
        snprintf(r->why, sizeof r->why, "too large");
        return;
    }
    r->code = 0;
    r->ms = ms;
}

/* ---- secrets ------------------------------------------------------------------- */

/* url with secrets masked, in a new string; NULL when out of memory. */
static char *masked_url(const char *url) {
    size_t n = noodle_mask_secrets(url, NULL, 0);
    char *out = malloc(n + 1);
    if (out != NULL) noodle_mask_secrets(url, out, n + 1);
    return out;
}

/* The URL as it may appear in a message: masked, escaped, cut. */
static void url_for_message(const char *url, char *buf, size_t size) {
    char *masked = masked_url(url);
    escape_value(masked != NULL ? masked : "(not shown)", buf, size, 120);
    free(masked);
}

/* ---- setting texts (listing and error messages) ------------------------------- */

typedef struct setting_texts {
    noodle_config_setting entries[SETTING_COUNT];
    char form[SETTING_COUNT][256];
    char defaults[SETTING_COUNT][96];
} setting_texts;

static setting_texts texts;                      /* written once, then read-only */
static pthread_once_t texts_once = PTHREAD_ONCE_INIT;

static const char *kind_name(setting_kind k) {
    switch (k) {
    case KIND_INT: return "integer";
    case KIND_DURATION: return "duration";
    case KIND_CHOICE: return "choice";
    case KIND_URL: return "url";
    }
    return "?";
}

static void build_texts(void) {
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const setting_def *d = &setting_defs[i];
        char *form = texts.form[i], *defaults = texts.defaults[i];
        size_t fsize = sizeof texts.form[i], dsize = sizeof texts.defaults[i];
        switch (d->kind) {
        case KIND_INT:
            snprintf(form, fsize, "an integer from %lld to %lld", (long long)d->min,
                     (long long)d->max);
            snprintf(defaults, dsize, "%lld", (long long)d->def);
            break;
        case KIND_DURATION: {
            char lo[32], hi[32];
            format_duration(d->min, lo, sizeof lo);
            format_duration(d->max, hi, sizeof hi);
            snprintf(form, fsize, "a duration from %s to %s: " DURATION_SYNTAX "seconds", lo, hi);
            format_duration(d->def, defaults, dsize);
            break;
        }
        case KIND_CHOICE: {
            textbuf tb = {form, fsize, 0};
            tb_putn(&tb, "one of ", 7);
            for (size_t b = 0; b < BACKEND_RULE_COUNT; b++) {
                if (b > 0) tb_putn(&tb, ", ", 2);
                tb_putn(&tb, backend_rules[b].name, strlen(backend_rules[b].name));
            }
            snprintf(defaults, dsize, "%s", backend_rules[d->def].name);
            break;
        }
        case KIND_URL:
            snprintf(form, fsize,
                     "a connection string for the backend: a SQLite path (or :memory: / file: "
                     "URI), a libpq conninfo or postgresql:// URI (multi-host allowed), or "
                     "mock://<node>");
            snprintf(defaults, dsize, URL_DEFAULT_TEXT);
            break;
        }
        texts.entries[i] = (noodle_config_setting){d->field, d->env, kind_name(d->kind), form,
                                                    defaults, d->description};
    }
}

static const noodle_config_setting *setting_info(size_t i) {
    pthread_once(&texts_once, build_texts);
    return &texts.entries[i];
}

NOODLE_API const noodle_config_setting *noodle_config_settings(size_t *count) {
    pthread_once(&texts_once, build_texts);
    if (count != NULL) *count = SETTING_COUNT;
    return texts.entries;
}

NOODLE_API const char *noodle_config_source_name(noodle_config_source s) {
    switch (s) {
    case NOODLE_SOURCE_DEFAULT: return "default";
    case NOODLE_SOURCE_ENV: return "env";
    case NOODLE_SOURCE_OPTION: return "option";
    }
    return "unknown";
}

/* ---- errors ---------------------------------------------------------------------- */

#define CFG_ERR(err, code, ...)                                                                 \
    noodle_error_set((err), (code), __FILE__, __LINE__, __func__, __VA_ARGS__)

/* Who set setting i: "NOODLE_DB_X", "option x" or "default". */
static void source_label(size_t i, noodle_config_source src, char *buf, size_t size) {
    switch (src) {
    case NOODLE_SOURCE_ENV: snprintf(buf, size, "%s", setting_defs[i].env); break;
    case NOODLE_SOURCE_OPTION: snprintf(buf, size, "option %s", setting_defs[i].field); break;
    default: snprintf(buf, size, "default"); break;
    }
}

/* "<label>=\"<value>\" <problem>; expected <form> (default <default>)" */
static int value_error(noodle_error *err, int code, const char *func, int line, size_t i,
                       noodle_config_source src, const char *value, const char *problem) {
    const setting_def *d = &setting_defs[i];
    const noodle_config_setting *info = setting_info(i);
    char label[64], shown[160];
    source_label(i, src, label, sizeof label);
    if (d->kind == KIND_URL) {
        url_for_message(value, shown, sizeof shown);
    } else {
        escape_value(value, shown, sizeof shown, 40);
    }
    return noodle_error_set(err, code, __FILE__, line, func,
                            "%s=\"%s\" %s; expected %s (default %s)", label, shown, problem,
                            info->form, info->defaults);
}

/* ---- setting values ---------------------------------------------------------------- */

static int64_t *int_slot(noodle_config *cfg, size_t i) {
    return (int64_t *)(void *)((char *)cfg + setting_defs[i].cfg_offset);
}

static const int64_t *int_slot_const(const noodle_config *cfg, size_t i) {
    return (const int64_t *)(const void *)((const char *)cfg + setting_defs[i].cfg_offset);
}

static char **str_slot(noodle_config *cfg, size_t i) {
    return (char **)(void *)((char *)cfg + setting_defs[i].cfg_offset);
}

static char *const *str_slot_const(const noodle_config *cfg, size_t i) {
    return (char *const *)(const void *)((const char *)cfg + setting_defs[i].cfg_offset);
}

static void range_problem(size_t i, int64_t v, int overflow_sign, char *buf, size_t size) {
    const setting_def *d = &setting_defs[i];
    bool low = overflow_sign < 0 || (overflow_sign == 0 && v < d->min);
    int64_t bound = low ? d->min : d->max;
    if (d->kind == KIND_DURATION) {
        char b[32];
        format_duration(bound, b, sizeof b);
        snprintf(buf, size, "is out of range (%s %s)", low ? "below" : "above", b);
    } else {
        snprintf(buf, size, "is out of range (%s %lld)", low ? "below" : "above",
                 (long long)bound);
    }
}

static bool has_control(const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f) return true;
    }
    return false;
}

/* Replace *slot by a copy of value; for the backend, a URL still at its
 * default follows it. All or nothing. */
static int store_string(noodle_config *cfg, size_t i, const char *value, noodle_error *err) {
    char *copy = dup_string(value);
    char *url_copy = NULL;
    if (copy == NULL) goto fail_copy;
    if (setting_defs[i].kind == KIND_CHOICE && cfg->url != NULL &&
        cfg->source[IDX_url] == NOODLE_SOURCE_DEFAULT) {
        const backend_rule *rule = find_backend_rule(value);
        url_copy = dup_string(rule != NULL ? rule->default_url : "");
        if (url_copy == NULL) goto fail_url;
        free(cfg->url);
        cfg->url = url_copy;
    }
    char **slot = str_slot(cfg, i);
    free(*slot);
    *slot = copy;
    return 0;

fail_url:
    free(copy);
fail_copy:
    return CFG_ERR(err, NOODLE_E_CONFIG_NO_MEMORY, "out of memory while storing %s",
                   setting_defs[i].field);
}

/* A registered backend other than the built-in names (exact name only). */
static bool is_registered_backend(const char *name) {
    for (size_t b = 0; b < BACKEND_RULE_COUNT; b++) {
        if (starts_with_nocase(name, backend_rules[b].name) &&
            strlen(name) == strlen(backend_rules[b].name)) {
            return false; /* a built-in name in the wrong case: never a custom one */
        }
    }
    const noodle_backend_ops *ops = NULL;
    noodle_error ignored;
    memset(&ignored, 0, sizeof ignored);
    if (noodle_backend_find(name, &ops, &ignored) != 0 || ops == NULL) return false;
    return ops->name != NULL && strcmp(ops->name, name) == 0;
}

/* Parse text for setting i and store it with source src. cfg is unchanged on
 * failure. */
static int set_from_text(noodle_config *cfg, size_t i, const char *text, noodle_config_source src,
                         noodle_error *err) {
    const setting_def *d = &setting_defs[i];
    char problem[160];
    if (text[0] == '\0') {
        const noodle_config_setting *info = setting_info(i);
        if (src == NOODLE_SOURCE_ENV) {
            return CFG_ERR(err, NOODLE_E_CONFIG_EMPTY_VALUE,
                           "%s is set but empty; unset it to use the default (%s)", d->env,
                           info->defaults);
        }
        return CFG_ERR(err, NOODLE_E_CONFIG_EMPTY_VALUE,
                       "option %s is empty; expected %s (leave it unset for the default, %s)",
                       d->field, info->form, info->defaults);
    }
    switch (d->kind) {
    case KIND_INT: {
        int64_t v = 0;
        int overflow_sign = 0;
        int rc = parse_int(text, &v, &overflow_sign);
        if (rc == NOODLE_E_CONFIG_INVALID_INTEGER) {
            return value_error(err, rc, __func__, __LINE__, i, src, text,
                               has_space(text) ? "is not a whole number (it contains whitespace)"
                                               : "is not a whole number");
        }
        if (rc == 0 && (v < d->min || v > d->max)) rc = NOODLE_E_CONFIG_OUT_OF_RANGE;
        if (rc != 0) {
            range_problem(i, v, overflow_sign, problem, sizeof problem);
            return value_error(err, rc, __func__, __LINE__, i, src, text, problem);
        }
        *int_slot(cfg, i) = v;
        break;
    }
    case KIND_DURATION: {
        duration_result r;
        parse_duration(text, 1000, &r);
        if (r.code == NOODLE_E_CONFIG_INVALID_DURATION) {
            snprintf(problem, sizeof problem, "is not a duration (%s)", r.why);
            return value_error(err, r.code, __func__, __LINE__, i, src, text, problem);
        }
        if (r.code == 0 && (r.ms < d->min || r.ms > d->max)) r.code = NOODLE_E_CONFIG_OUT_OF_RANGE;
        if (r.code != 0) {
            if (r.negative) {
                snprintf(problem, sizeof problem, "is out of range (negative)");
            } else {
                /* why is only set here for a value too large for 64 bits */
                range_problem(i, r.ms, r.why[0] != '\0' ? 1 : 0, problem, sizeof problem);
            }
            return value_error(err, r.code, __func__, __LINE__, i, src, text, problem);
        }
        *int_slot(cfg, i) = r.ms;
        break;
    }
    case KIND_CHOICE: {
        if (find_backend_rule(text) == NULL && !is_registered_backend(text)) {
            const char *names[BACKEND_RULE_COUNT];
            for (size_t b = 0; b < BACKEND_RULE_COUNT; b++) names[b] = backend_rules[b].name;
            const char *near = closest(text, names, BACKEND_RULE_COUNT);
            if (near != NULL && strlen(near) == strlen(text) && starts_with_nocase(text, near)) {
                snprintf(problem, sizeof problem,
                         "is not a backend name (names are lowercase: did you mean \"%s\"?)",
                         near);
            } else if (near != NULL) {
                snprintf(problem, sizeof problem, "is not a backend name (did you mean \"%s\"?)",
                         near);
            } else {
                snprintf(problem, sizeof problem, "is not a backend name");
            }
            return value_error(err, NOODLE_E_CONFIG_INVALID_CHOICE, __func__, __LINE__, i, src,
                               text, problem);
        }
        int rc = store_string(cfg, i, text, err);
        if (rc != 0) return rc;
        break;
    }
    case KIND_URL: {
        if (has_control(text)) {
            return value_error(err, NOODLE_E_CONFIG_INVALID_URL, __func__, __LINE__, i, src, text,
                               "contains a control character");
        }
        int rc = store_string(cfg, i, text, err);
        if (rc != 0) return rc;
        break;
    }
    }
    cfg->source[i] = src;
    return 0;
}

/* ---- URL checks per backend ------------------------------------------------------- */

/* libpq keywords that mark a conninfo string given to the sqlite backend. */
static bool looks_like_conninfo(const char *url) {
    static const char *const keywords[] = {"host",    "hostaddr", "port",  "dbname",
                                           "user",    "password", "service", "sslmode"};
    const char *p = url;
    while (is_space(*p)) p++;
    for (size_t k = 0; k < sizeof keywords / sizeof keywords[0]; k++) {
        size_t n = strlen(keywords[k]);
        if (strncmp(p, keywords[k], n) != 0) continue;
        const char *q = p + n;
        while (is_space(*q)) q++;
        if (*q == '=') return true;
    }
    return false;
}

static int check_sqlite_url(const char *url, char *why, size_t why_size) {
    if (url[0] == '\0') {
        snprintf(why, why_size, "the path is empty");
        return NOODLE_E_CONFIG_INVALID_URL;
    }
    if (starts_with(url, "postgresql://") || starts_with(url, "postgres://") ||
        looks_like_conninfo(url)) {
        snprintf(why, why_size,
                 "this is a PostgreSQL connection string, not a SQLite path "
                 "(set NOODLE_DB_BACKEND=postgres)");
        return NOODLE_E_CONFIG_INVALID_URL;
    }
    if (starts_with(url, "mock://")) {
        snprintf(why, why_size,
                 "this is a mock URL, not a SQLite path (set NOODLE_DB_BACKEND=mock)");
        return NOODLE_E_CONFIG_INVALID_URL;
    }
    return 0;
}

static int check_mock_url(const char *url, char *why, size_t why_size) {
    if (!starts_with(url, "mock://")) {
        snprintf(why, why_size, "a mock URL starts with mock://");
        return NOODLE_E_CONFIG_INVALID_URL;
    }
    return 0;
}

static size_t count_list(const char *s) {
    size_t n = 1;
    for (; *s; s++) n += *s == ',';
    return n;
}

/* Each entry of a libpq port list: empty (the default) or 1..65535,
 * surrounding blanks allowed as libpq allows them. */
static int check_ports(const char *ports, char *why, size_t why_size) {
    const char *p = ports;
    for (;;) {
        const char *end = strchr(p, ',');
        if (end == NULL) end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && is_space(*a)) a++;
        while (b > a && is_space(b[-1])) b--;
        long v = 0;
        bool ok = true;
        for (const char *q = a; q < b && ok; q++) {
            ok = is_digit(*q) && v <= 65535;
            v = v * 10 + (*q - '0');
        }
        if (!ok || (a < b && (v < 1 || v > 65535))) {
            char shown[24];
            char entry[16];
            size_t n = (size_t)(b - a) < sizeof entry - 1 ? (size_t)(b - a) : sizeof entry - 1;
            memcpy(entry, a, n);
            entry[n] = '\0';
            escape_value(entry, shown, sizeof shown, 12);
            snprintf(why, why_size, "port \"%s\" is not a port number (1 to 65535)", shown);
            return NOODLE_E_CONFIG_INVALID_URL;
        }
        if (*end == '\0') return 0;
        p = end + 1;
    }
}

static int check_postgres_url(const char *url, char *why, size_t why_size) {
    char *pq_err = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &pq_err);
    if (opts == NULL) {
        if (pq_err == NULL) {
            snprintf(why, why_size, "out of memory");
            return NOODLE_E_CONFIG_NO_MEMORY;
        }
        size_t n = strlen(pq_err);
        while (n > 0 && is_space(pq_err[n - 1])) pq_err[--n] = '\0';
        /* libpq quotes whole URIs in its messages: scrub them. */
        noodle__scrub_secrets(pq_err, url, why, why_size);
        PQfreemem(pq_err);
        return NOODLE_E_CONFIG_INVALID_URL;
    }
    const char *host = NULL, *hostaddr = NULL, *port = NULL;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0') continue;
        if (strcmp(o->keyword, "host") == 0) host = o->val;
        if (strcmp(o->keyword, "hostaddr") == 0) hostaddr = o->val;
        if (strcmp(o->keyword, "port") == 0) port = o->val;
    }
    int rc = 0;
    if (port != NULL) {
        rc = check_ports(port, why, why_size);
        size_t nports = count_list(port);
        size_t nhosts = hostaddr != NULL ? count_list(hostaddr)
                        : host != NULL   ? count_list(host)
                                         : 1;
        if (rc == 0 && nports > 1 && nports != nhosts) {
            snprintf(why, why_size, "%zu ports for %zu hosts; give one port, or one per host",
                     nports, nhosts);
            rc = NOODLE_E_CONFIG_INVALID_URL;
        }
    }
    PQconninfoFree(opts);
    return rc;
}

/* Defaults that depend on another setting: min_idle's default is
 * min(2, max_connections), so that NOODLE_DB_MAX_CONNECTIONS=1 alone is
 * valid. A min_idle that was set explicitly is never changed. */
static void settle_derived_defaults(noodle_config *cfg) {
    if (cfg->source[IDX_min_idle] == NOODLE_SOURCE_DEFAULT) {
        int64_t def = setting_defs[IDX_min_idle].def;
        cfg->min_idle = def < cfg->max_connections ? def : cfg->max_connections;
    }
}

/* ---- consistency across settings ---------------------------------------------------- */

/* The rules that involve more than one setting (public: callers of
 * noodle_config_set run it after their last set). */
int noodle_config_check(const noodle_config *cfg, noodle_error *err) {
    char a[64], b[64];
    if (cfg->min_idle > cfg->max_connections) {
        source_label(IDX_min_idle, cfg->source[IDX_min_idle], a, sizeof a);
        source_label(IDX_max_connections, cfg->source[IDX_max_connections], b, sizeof b);
        return CFG_ERR(err, NOODLE_E_CONFIG_INCONSISTENT,
                       "min_idle %lld (from %s) is greater than max_connections %lld (from %s); "
                       "min_idle must not exceed max_connections",
                       (long long)cfg->min_idle, a, (long long)cfg->max_connections, b);
    }
    const backend_rule *rule = find_backend_rule(cfg->backend);
    if (rule == NULL) return 0; /* a registered backend: its URL is its own business */
    char why[256];
    int rc = rule->check(cfg->url, why, sizeof why);
    if (rc == NOODLE_E_CONFIG_NO_MEMORY) {
        return CFG_ERR(err, rc, "out of memory while checking the URL");
    }
    if (rc != 0) {
        char shown[160];
        source_label(IDX_url, cfg->source[IDX_url], a, sizeof a);
        source_label(IDX_backend, cfg->source[IDX_backend], b, sizeof b);
        url_for_message(cfg->url, shown, sizeof shown);
        return CFG_ERR(err, rc,
                       "%s=\"%s\" is not a valid URL for backend %s (from %s): %s; expected %s",
                       cfg->source[IDX_url] == NOODLE_SOURCE_DEFAULT ? "url" : a, shown,
                       cfg->backend, b, why, rule->url_form);
    }
    return 0;
}

/* ---- loading --------------------------------------------------------------------------- */

/* The value of the first "name=value" entry for name, or NULL. */
static const char *env_lookup(char *const *envp, const char *name) {
    size_t n = strlen(name);
    for (char *const *e = envp; *e != NULL; e++) {
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
    }
    return NULL;
}

/* Any NOODLE_DB_ variable (prefix in any case) that is not a setting. */
static int check_unknown_variables(char *const *envp, noodle_error *err) {
    for (char *const *e = envp; *e != NULL; e++) {
        if (!starts_with_nocase(*e, ENV_PREFIX)) continue;
        const char *eq = strchr(*e, '=');
        size_t len = eq != NULL ? (size_t)(eq - *e) : strlen(*e);
        char name[128];
        if (len >= sizeof name) len = sizeof name - 1;
        memcpy(name, *e, len);
        name[len] = '\0';
        bool known = false;
        const char *suffixes[SETTING_COUNT];
        for (size_t i = 0; i < SETTING_COUNT; i++) {
            suffixes[i] = setting_defs[i].env + ENV_PREFIX_LEN;
            if (strcmp(name, setting_defs[i].env) == 0) known = true;
        }
        if (known) continue;
        char shown[140];
        escape_value(name, shown, sizeof shown, 64);
        /* Compare the parts after the prefix, so that the prefix does not
         * make every name look close. */
        const char *near_suffix = closest(name + ENV_PREFIX_LEN, suffixes, SETTING_COUNT);
        const char *near = near_suffix != NULL ? near_suffix - ENV_PREFIX_LEN : NULL;
        if (near != NULL) {
            return CFG_ERR(err, NOODLE_E_CONFIG_UNKNOWN_VARIABLE,
                           "%s is not a noodle setting; did you mean %s?%s A misspelt variable "
                           "would leave the default in force: fix or unset it.",
                           shown, near,
                           strlen(near) == len && starts_with_nocase(name, near)
                               ? " Names are upper case."
                               : "");
        }
        char list[400];
        textbuf tb = {list, sizeof list, 0};
        for (size_t i = 0; i < SETTING_COUNT; i++) {
            if (i > 0) tb_putn(&tb, ", ", 2);
            tb_putn(&tb, setting_defs[i].env + ENV_PREFIX_LEN,
                    strlen(setting_defs[i].env + ENV_PREFIX_LEN));
        }
        return CFG_ERR(err, NOODLE_E_CONFIG_UNKNOWN_VARIABLE,
                       "%s is not a noodle setting (fix or unset it); the settings are " ENV_PREFIX
                       "{%s}",
                       shown, list);
    }
    return 0;
}

static int apply_options(noodle_config *cfg, const noodle_config_options *opts,
                         noodle_error *err) {
    if (opts->struct_size < sizeof opts->struct_size) {
        return CFG_ERR(err, NOODLE_E_CONFIG_INVALID_ARGUMENT,
                       "options struct_size is %zu; initialise the options with "
                       "NOODLE_CONFIG_OPTIONS_INIT",
                       opts->struct_size);
    }
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const setting_def *d = &setting_defs[i];
        if (d->opt_end > opts->struct_size) continue; /* an older caller's struct */
        const void *slot = (const char *)opts + d->opt_offset;
        if (d->kind == KIND_INT || d->kind == KIND_DURATION) {
            int64_t v = *(const int64_t *)slot;
            if (v == NOODLE_UNSET) continue;
            if (v < d->min || v > d->max) {
                char problem[160];
                range_problem(i, v, 0, problem, sizeof problem);
                const noodle_config_setting *info = setting_info(i);
                if (d->kind == KIND_INT) {
                    return CFG_ERR(err, NOODLE_E_CONFIG_OUT_OF_RANGE,
                                   "option %s=%lld %s; expected %s (default %s)", d->field,
                                   (long long)v, problem, info->form, info->defaults);
                }
                char lo[32], hi[32];
                format_duration(d->min, lo, sizeof lo);
                format_duration(d->max, hi, sizeof hi);
                return CFG_ERR(err, NOODLE_E_CONFIG_OUT_OF_RANGE,
                               "option %s=%lld (milliseconds) %s; expected milliseconds from "
                               "%lld to %lld (%s to %s) (default %s)",
                               d->field, (long long)v, problem, (long long)d->min,
                               (long long)d->max, lo, hi, info->defaults);
            }
            *int_slot(cfg, i) = v;
            cfg->source[i] = NOODLE_SOURCE_OPTION;
        } else {
            const char *s = *(const char *const *)slot;
            if (s == NULL) continue;
            int rc = set_from_text(cfg, i, s, NOODLE_SOURCE_OPTION, err);
            if (rc != 0) return rc;
        }
    }
    return 0;
}

NOODLE_API int noodle_config_load(noodle_config *cfg, char *const *envp,
                                  const noodle_config_options *opts, noodle_error *err) {
    if (cfg == NULL) {
        return CFG_ERR(err, NOODLE_E_CONFIG_INVALID_ARGUMENT, "noodle_config_load: cfg is NULL");
    }
    memset(cfg, 0, sizeof *cfg);
    if (envp == NULL) envp = environ;

    noodle_config tmp;
    memset(&tmp, 0, sizeof tmp);
    int rc = 0;
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const setting_def *d = &setting_defs[i];
        tmp.source[i] = NOODLE_SOURCE_DEFAULT;
        if (d->kind == KIND_INT || d->kind == KIND_DURATION) *int_slot(&tmp, i) = d->def;
        if (d->kind == KIND_CHOICE) {
            char *copy = dup_string(backend_rules[d->def].name);
            if (copy == NULL) goto fail_no_memory;
            *str_slot(&tmp, i) = copy;
        }
        /* The URL default depends on the backend: filled in after merging. */
    }

    rc = check_unknown_variables(envp, err);
    if (rc != 0) goto fail;
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const char *value = env_lookup(envp, setting_defs[i].env);
        if (value == NULL) continue;
        rc = set_from_text(&tmp, i, value, NOODLE_SOURCE_ENV, err);
        if (rc != 0) goto fail;
    }
    if (opts != NULL) {
        rc = apply_options(&tmp, opts, err);
        if (rc != 0) goto fail;
    }
    if (tmp.url == NULL) {
        const backend_rule *rule = find_backend_rule(tmp.backend);
        tmp.url = dup_string(rule != NULL ? rule->default_url : "");
        if (tmp.url == NULL) goto fail_no_memory;
    }
    settle_derived_defaults(&tmp);
    rc = noodle_config_check(&tmp, err);
    if (rc != 0) goto fail;

    *cfg = tmp;
    return 0;

fail_no_memory:
    rc = CFG_ERR(err, NOODLE_E_CONFIG_NO_MEMORY, "out of memory while loading configuration");
fail:
    noodle_config_free(&tmp);
    return rc;
}

NOODLE_API void noodle_config_free(noodle_config *cfg) {
    if (cfg == NULL) return;
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        if (setting_defs[i].kind == KIND_CHOICE || setting_defs[i].kind == KIND_URL) {
            free(*str_slot(cfg, i));
        }
    }
    memset(cfg, 0, sizeof *cfg);
}

NOODLE_API int noodle_config_set(noodle_config *cfg, const char *field, const char *value,
                                 noodle_error *err) {
    if (cfg == NULL || field == NULL || value == NULL) {
        return CFG_ERR(err, NOODLE_E_CONFIG_INVALID_ARGUMENT,
                       "noodle_config_set: cfg, field and value must not be NULL");
    }
    if (cfg->backend == NULL || cfg->url == NULL) {
        return CFG_ERR(err, NOODLE_E_CONFIG_INVALID_ARGUMENT,
                       "noodle_config_set: the configuration is not loaded "
                       "(call noodle_config_load first)");
    }
    const char *names[SETTING_COUNT];
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        if (strcmp(field, setting_defs[i].field) == 0) {
            int rc = set_from_text(cfg, i, value, NOODLE_SOURCE_OPTION, err);
            if (rc == 0) settle_derived_defaults(cfg);
            return rc;
        }
        names[i] = setting_defs[i].field;
    }
    char shown[80];
    escape_value(field, shown, sizeof shown, 40);
    const char *near = closest(field, names, SETTING_COUNT);
    if (near != NULL) {
        return CFG_ERR(err, NOODLE_E_CONFIG_UNKNOWN_OPTION,
                       "option \"%s\" is not a noodle setting; did you mean %s?", shown, near);
    }
    return CFG_ERR(err, NOODLE_E_CONFIG_UNKNOWN_OPTION,
                   "option \"%s\" is not a noodle setting (the settings are listed in "
                   "docs/configuration.md and by noodle_config_settings)",
                   shown);
}

NOODLE_API size_t noodle_config_value_text(const noodle_config *cfg, size_t i, char *buf,
                                           size_t size) {
    if (size > 0 && buf != NULL) buf[0] = '\0';
    if (cfg == NULL || i >= SETTING_COUNT) return 0;
    if (buf == NULL) size = 0;
    char tmp[32];
    switch (setting_defs[i].kind) {
    case KIND_INT:
        return (size_t)snprintf(buf, size, "%lld", (long long)*int_slot_const(cfg, i));
    case KIND_DURATION:
        format_duration(*int_slot_const(cfg, i), tmp, sizeof tmp);
        return (size_t)snprintf(buf, size, "%s", tmp);
    case KIND_CHOICE: {
        const char *s = *str_slot_const(cfg, i);
        return (size_t)snprintf(buf, size, "%s", s != NULL ? s : "");
    }
    case KIND_URL: {
        const char *s = *str_slot_const(cfg, i);
        if (s == NULL) return 0;
        char *masked = masked_url(s);
        if (masked == NULL) return 0;
        size_t n = (size_t)snprintf(buf, size, "%s", masked);
        free(masked);
        return n;
    }
    }
    return 0;
}

NOODLE_API int noodle_parse_duration_ms(const char *text, int64_t bare_unit_ms, const char *what,
                                        int64_t *out, noodle_error *err) {
    if (what == NULL) what = "duration";
    if (text == NULL || out == NULL || bare_unit_ms < 1) {
        return CFG_ERR(err, NOODLE_E_CONFIG_INVALID_ARGUMENT,
                       "noodle_parse_duration_ms(%s): text and out must not be NULL and the bare "
                       "unit must be at least 1 ms",
                       what);
    }
    char bare[48];
    const char *bare_name = bare_unit_name(bare_unit_ms);
    if (bare_name != NULL) {
        snprintf(bare, sizeof bare, "%s", bare_name);
    } else {
        snprintf(bare, sizeof bare, "units of %lld ms", (long long)bare_unit_ms);
    }
    char shown[80];
    escape_value(text, shown, sizeof shown, 40);
    if (text[0] == '\0') {
        return CFG_ERR(err, NOODLE_E_CONFIG_INVALID_DURATION,
                       "%s is empty; expected " DURATION_SYNTAX "%s", what, bare);
    }
    duration_result r;
    parse_duration(text, bare_unit_ms, &r);
    if (r.code == NOODLE_E_CONFIG_INVALID_DURATION) {
        return CFG_ERR(err, r.code,
                       "%s=\"%s\" is not a duration (%s); expected " DURATION_SYNTAX "%s", what,
                       shown, r.why, bare);
    }
    if (r.code != 0) {
        return CFG_ERR(err, r.code,
                       "%s=\"%s\" is out of range (%s); expected a duration of 0 or more that "
                       "fits in 64-bit milliseconds",
                       what, shown, r.why);
    }
    *out = r.ms;
    return 0;
}
