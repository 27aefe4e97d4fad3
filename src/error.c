/* The error catalogue and the error object (see include/noodle/error.h). */
#include "noodle/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static const noodle_code_info code_table[] = {
#define NOODLE_X_INFO(code, name, text) {code, #name, text},
    NOODLE_ERROR_MAP(NOODLE_X_INFO)
#undef NOODLE_X_INFO
};

static const struct {
    int lo, hi;
    const char *name;
} categories[] = {
    {1001, 1099, "configuration"},      {2001, 2099, "connection pool"},
    {3001, 3099, "database manager"},   {4001, 4999, "connection / backend"},
    {5001, 5999, "query"},              {6030, 6049, "transaction manager"},
    {6060, 6069, "performance monitor"}, {6070, 6079, "health checker"},
    {6080, 6099, "failover / cluster"}, {7001, 7999, "harness"},
    {8001, 8099, "reports"},
};

const noodle_code_info *noodle_code_table(size_t *count) {
    if (count) *count = sizeof code_table / sizeof code_table[0];
    return code_table;
}

static const noodle_code_info *find_code(int code) {
    for (size_t i = 0; i < sizeof code_table / sizeof code_table[0]; i++)
        if (code_table[i].code == code) return &code_table[i];
    return NULL;
}

const char *noodle_code_name(int code) {
    const noodle_code_info *c = find_code(code);
    return c ? c->name : NULL;
}

const char *noodle_code_message(int code) {
    const noodle_code_info *c = find_code(code);
    return c ? c->message : NULL;
}

const char *noodle_code_category(int code) {
    for (size_t i = 0; i < sizeof categories / sizeof categories[0]; i++)
        if (code >= categories[i].lo && code <= categories[i].hi) return categories[i].name;
    return NULL;
}

void noodle_error_clear(noodle_error *err) {
    if (err == NULL) return;
    /* every reader stops at the terminators: clearing the buffers whole
     * would cost more than most calls that clear them */
    err->code = 0;
    err->message[0] = '\0';
    err->detail[0] = '\0';
    err->file = NULL;
    err->line = 0;
    err->func = NULL;
}

void noodle__strlcpy(char *dst, const char *src, size_t size) {
    if (size == 0) return;
    size_t n = strlen(src);
    if (n >= size) n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

int noodle_error_setv(noodle_error *err, int code, const char *file, int line, const char *func,
                      const char *fmt, va_list ap) {
    if (err == NULL) return code;
    err->code = code;
    err->file = file;
    err->line = line;
    err->func = func;
    err->detail[0] = '\0';
    err->message[0] = '\0';
    if (fmt != NULL) vsnprintf(err->message, sizeof err->message, fmt, ap);
    if (err->message[0] == '\0') {
        const char *m = noodle_code_message(code);
        noodle__strlcpy(err->message, m ? m : "unknown error", sizeof err->message);
    }
    return code;
}

int noodle_error_set(noodle_error *err, int code, const char *file, int line, const char *func,
                     const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = noodle_error_setv(err, code, file, line, func, fmt, ap);
    va_end(ap);
    return rc;
}

int noodle_error_detail(noodle_error *err, const char *fmt, ...) {
    if (err == NULL) return 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof err->detail, fmt, ap);
    va_end(ap);
    return err->code;
}

size_t noodle_error_format(const noodle_error *err, char *buf, size_t size) {
    int n;
    if (err == NULL || err->code == 0)
        n = snprintf(buf, size, "no error");
    else if (err->detail[0] != '\0')
        n = snprintf(buf, size, "[NOODLE-%04d] %s [%s]", err->code, err->message, err->detail);
    else
        n = snprintf(buf, size, "[NOODLE-%04d] %s", err->code, err->message);
    return n < 0 ? 0 : (size_t)n;
}

int noodle_code_is_connection_fatal(int code) {
    switch (code) {
    case NOODLE_E_CONNECTION_LOST:
    case NOODLE_E_BACKEND_TIMEOUT:
    case NOODLE_E_CONNECTION_BROKEN:
    case NOODLE_E_SERVER_SHUTDOWN:
    case NOODLE_E_OUTCOME_UNKNOWN:
        return 1;
    default:
        return 0;
    }
}
