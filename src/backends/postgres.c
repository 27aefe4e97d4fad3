/* The PostgreSQL backend: noodle_backend_ops over libpq.
 *
 * Design notes. Every operation must return by its deadline even when the
 * server is frozen (SIGSTOPped, or the network drops packets): the kernel
 * still completes TCP handshakes and acknowledges data, so neither
 * statement_timeout nor TCP keepalives nor tcp_user_timeout notice anything.
 * Only a client-side deadline on the socket works, hence:
 *
 *   1. libpq is used in non-blocking mode only: PQconnectStartParams +
 *      PQconnectPoll, PQsendQueryParams + PQflush, PQconsumeInput + PQisBusy,
 *      each wait being a poll(2) on PQsocket bounded by the deadline.
 *      PQgetResult is only called when PQisBusy says it will not block.
 *   2. When a deadline passes mid-call, the PGconn is PQfinish'ed at once
 *      (never PQcancel: it blocks against a frozen server) and the handle
 *      remembers it is dead (conn == NULL): every later call fails with
 *      NOODLE_E_CONNECTION_LOST; close() only frees.
 *   3. PQfinish never blocks here: the connection is non-blocking, so the
 *      Terminate message is queued or dropped, never waited for.
 *   4. Every failure carries a catalogue code; a server error keeps its
 *      SQLSTATE in err->detail ("SQLSTATE 23505").
 *   5. One statement per call: PQsendQueryParams uses the extended protocol,
 *      in which the server refuses several statements in one string.
 *   6. Notices (WARNING: there is no transaction in progress, ...) are
 *      dropped instead of being printed on stderr by libpq.
 *
 * A handle is used by one thread at a time (the connection contract); libpq
 * itself is thread-safe across connections.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "backends/postgres_sql.h"
#include "internal.h"
#include "noodle/backend.h"
#include "noodle/clock.h"
#include "noodle/error.h"

/* Type OIDs (catalog/pg_type_d.h is a server header). */
enum {
    PG_BOOLOID = 16,
    PG_BYTEAOID = 17,
    PG_INT8OID = 20,
    PG_INT2OID = 21,
    PG_INT4OID = 23,
    PG_OIDOID = 26,
    PG_FLOAT4OID = 700,
    PG_FLOAT8OID = 701,
};

/* The protocol carries the parameter count in 16 bits. */
#define PG_MAX_PARAMS 65535

/* The backend's private state behind a void *handle. */
typedef struct pg_handle {
    PGconn *conn;              /* owned; NULL once finished after a timeout */
    const noodle_clock *clock; /* borrowed from the connect params (NULL: real) */
} pg_handle;

/* ======================================================================== */
/* Pure helpers (postgres_sql.h)                                             */
/* ======================================================================== */

static bool is_ident_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || c >= 0x80;
}

static bool is_ident_start(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

/* Length of the dollar-quote tag starting at s ("$$" or "$tag$"), 0 when s
 * does not start one. */
static size_t dollar_tag_len(const char *s) {
    size_t i = 1;
    if (s[0] != '$') return 0;
    if (s[1] == '$') return 2;
    if (!is_ident_start((unsigned char)s[1])) return 0;
    while (s[i] != '\0' && s[i] != '$' && is_ident_char((unsigned char)s[i])) i++;
    return s[i] == '$' ? i + 1 : 0;
}

/* One pass of the placeholder scanner: counts placeholders and, when out is
 * non-NULL, writes the translated text (out must be large enough: the first
 * pass measures it). Returns the output length (without the terminator). */
static size_t scan_placeholders(const char *sql, char *out, size_t *count) {
    size_t n = 0, o = 0, i = 0;
#define EMIT(c)                        \
    do {                               \
        if (out != NULL) out[o] = (c); \
        o++;                           \
    } while (0)
    while (sql[i] != '\0') {
        unsigned char c = (unsigned char)sql[i];
        unsigned char prev = i > 0 ? (unsigned char)sql[i - 1] : 0;

        if (c == '\'') {
            /* E'...' (backslash escapes) when preceded by a lone E/e. */
            bool escapes = i > 0 && (prev == 'E' || prev == 'e') &&
                           (i < 2 || !is_ident_char((unsigned char)sql[i - 2]));
            EMIT(sql[i]);
            i++;
            while (sql[i] != '\0') {
                if (escapes && sql[i] == '\\' && sql[i + 1] != '\0') {
                    EMIT(sql[i]);
                    EMIT(sql[i + 1]);
                    i += 2;
                    continue;
                }
                if (sql[i] == '\'') {
                    if (sql[i + 1] == '\'') { /* '' inside the string */
                        EMIT(sql[i]);
                        EMIT(sql[i + 1]);
                        i += 2;
                        continue;
                    }
                    break;
                }
                EMIT(sql[i]);
                i++;
            }
            if (sql[i] == '\'') {
                EMIT(sql[i]);
                i++;
            }
        } else if (c == '"') {
            EMIT(sql[i]);
            i++;
            while (sql[i] != '\0') {
                if (sql[i] == '"') {
                    if (sql[i + 1] == '"') {
                        EMIT(sql[i]);
                        EMIT(sql[i + 1]);
                        i += 2;
                        continue;
                    }
                    break;
                }
                EMIT(sql[i]);
                i++;
            }
            if (sql[i] == '"') {
                EMIT(sql[i]);
                i++;
            }
        } else if (c == '-' && sql[i + 1] == '-') {
            while (sql[i] != '\0' && sql[i] != '\n') {
                EMIT(sql[i]);
                i++;
            }
        } else if (c == '/' && sql[i + 1] == '*') {
            int depth = 0;
            while (sql[i] != '\0') {
                if (sql[i] == '/' && sql[i + 1] == '*') {
                    depth++;
                    EMIT(sql[i]);
                    EMIT(sql[i + 1]);
                    i += 2;
                } else if (sql[i] == '*' && sql[i + 1] == '/') {
                    depth--;
                    EMIT(sql[i]);
                    EMIT(sql[i + 1]);
                    i += 2;
                    if (depth == 0) break;
                } else {
                    EMIT(sql[i]);
                    i++;
                }
            }
        } else if (c == '$' && !(i > 0 && is_ident_char(prev)) && dollar_tag_len(sql + i) > 0) {
            size_t tag = dollar_tag_len(sql + i);
            const char *body = sql + i + tag;
            const char *end = body;
            /* Find the closing tag; copy to the end when there is none. */
            for (;;) {
                end = strchr(end, '$');
                if (end == NULL || strncmp(end, sql + i, tag) == 0) break;
                end++;
            }
            size_t stop = end == NULL ? strlen(sql) : (size_t)(end - sql) + tag;
            while (i < stop) {
                EMIT(sql[i]);
                i++;
            }
        } else if (c == '?') {
            char next = sql[i + 1];
            if (next == '?') { /* ?? is a literal ? */
                EMIT('?');
                i += 2;
            } else if ((next == '|' && sql[i + 2] != '|') || (next == '&' && sql[i + 2] != '&')) {
                EMIT(sql[i]); /* the jsonb operators ?| and ?& */
                i++;
            } else {
                char num[24];
                int len = snprintf(num, sizeof num, "$%zu", ++n);
                for (int k = 0; k < len; k++) EMIT(num[k]);
                i++;
            }
        } else {
            EMIT(sql[i]);
            i++;
        }
    }
#undef EMIT
    if (out != NULL) out[o] = '\0';
    *count = n;
    return o;
}

int noodle__pg_translate_placeholders(const char *sql, char **out, size_t *count) {
    size_t n = 0;
    size_t len = scan_placeholders(sql, NULL, &n);
    char *buf = malloc(len + 1);
    *out = NULL;
    *count = 0;
    if (buf == NULL) return -1;
    scan_placeholders(sql, buf, &n);
    *out = buf;
    *count = n;
    return 0;
}

int noodle__pg_code_for_sqlstate(const char *s) {
    if (s == NULL || strlen(s) != 5) return NOODLE_E_QUERY_FAILED;
    if (strncmp(s, "08", 2) == 0) return NOODLE_E_CONNECTION_LOST;
    if (strcmp(s, "57P01") == 0 || strcmp(s, "57P02") == 0 || strcmp(s, "57P03") == 0)
        return NOODLE_E_SERVER_SHUTDOWN;
    if (strncmp(s, "28", 2) == 0) return NOODLE_E_AUTH_FAILED;
    if (strncmp(s, "42", 2) == 0) return NOODLE_E_QUERY_SYNTAX;
    if (strncmp(s, "23", 2) == 0) return NOODLE_E_QUERY_CONSTRAINT;
    if (strcmp(s, "40001") == 0) return NOODLE_E_QUERY_SERIALIZATION;
    if (strcmp(s, "40P01") == 0) return NOODLE_E_QUERY_DEADLOCK;
    if (strcmp(s, "55P03") == 0) return NOODLE_E_QUERY_BUSY;
    if (strcmp(s, "25006") == 0) return NOODLE_E_QUERY_READ_ONLY;
    if (strncmp(s, "25", 2) == 0) return NOODLE_E_QUERY_TXN_STATE;
    if (strncmp(s, "22", 2) == 0) return NOODLE_E_QUERY_DATA;
    if (strcmp(s, "57014") == 0) return NOODLE_E_QUERY_CANCELED;
    if (strncmp(s, "3B", 2) == 0) return NOODLE_E_QUERY_INVALID_SAVEPOINT;
    return NOODLE_E_QUERY_FAILED;
}

/* The "C" locale for number conversions, made once. */
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static locale_t c_locale = (locale_t)0;

static void make_c_locale(void) {
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

static locale_t numeric_c_locale(void) {
    pthread_once(&c_locale_once, make_c_locale);
    return c_locale;
}

size_t noodle__pg_format_double(double d, char *buf, size_t size) {
    int n;
    if (isnan(d)) {
        n = snprintf(buf, size, "NaN");
    } else if (isinf(d)) {
        n = snprintf(buf, size, d > 0 ? "Infinity" : "-Infinity");
    } else {
        n = snprintf(buf, size, "%.17g", d);
        /* The locale may have made the decimal point a comma; %g never
         * groups digits, so any comma is the decimal point. */
        for (char *p = buf; *p != '\0'; p++)
            if (*p == ',') *p = '.';
    }
    return n < 0 ? 0 : (size_t)n;
}

bool noodle__pg_parse_double(const char *s, double *out) {
    char *end = NULL;
    locale_t loc = numeric_c_locale();
    if (s == NULL || s[0] == '\0') return false;
    errno = 0;
    double d = loc != (locale_t)0 ? strtod_l(s, &end, loc) : strtod(s, &end);
    if (end == s || *end != '\0') return false;
    /* ERANGE on underflow still yields the nearest value; PostgreSQL printed
     * a finite number, so an overflow cannot come from it. */
    *out = d;
    return true;
}

bool noodle__pg_is_auth_failure(const char *m) {
    static const char *const needles[] = {
        "authentication failed", /* password, peer, ident, SCRAM, cert */
        "no pg_hba.conf entry",  /* rejected by the host-based rules */
        "no password supplied",  /* fe_sendauth: the server wants one */
        "password authentication", "pg_hba.conf rejects",
    };
    if (m == NULL) return false;
    for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
        if (strstr(m, needles[i]) != NULL) return true;
    /* FATAL: role "x" does not exist (SQLSTATE 28000). */
    const char *role = strstr(m, "role \"");
    return role != NULL && strstr(role, "\" does not exist") != NULL;
}

PGconn *noodle__pg_conn(void *handle) {
    return handle == NULL ? NULL : ((pg_handle *)handle)->conn;
}

/* ======================================================================== */
/* Error reporting                                                           */
/* ======================================================================== */

/* Copy a libpq message into buf with its line breaks folded into spaces and
 * trailing white space removed ("...unexpectedly\n\tThis probably..."). */
static void tidy_message(const char *msg, char *buf, size_t size) {
    size_t o = 0;
    bool space = false;
    if (msg == NULL) msg = "";
    for (const char *p = msg; *p != '\0' && o + 1 < size; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r') {
            space = true;
            continue;
        }
        if (space && o > 0) {
            buf[o++] = ' ';
            if (o + 1 >= size) break;
        }
        space = false;
        buf[o++] = *p;
    }
    while (o > 0 && buf[o - 1] == ' ') o--;
    buf[o] = '\0';
}

/* True when the code already says the connection is gone. */
static bool code_is_connection_level(int code) {
    return code == NOODLE_E_CONNECTION_LOST || code == NOODLE_E_SERVER_SHUTDOWN ||
           code == NOODLE_E_AUTH_FAILED;
}

/* Fail with the error of res (may be NULL: then the connection's message),
 * prefixed by what was being done. */
static int fail_result(pg_handle *h, const PGresult *res, const char *what, noodle_error *err) {
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char msg[400];
    bool bad = h->conn == NULL || PQstatus(h->conn) == CONNECTION_BAD;
    int code;

    if (primary == NULL || primary[0] == '\0')
        primary = res != NULL ? PQresultErrorMessage(res) : NULL;
    if ((primary == NULL || primary[0] == '\0') && h->conn != NULL)
        primary = PQerrorMessage(h->conn);
    tidy_message(primary, msg, sizeof msg);
    if (msg[0] == '\0') noodle__strlcpy(msg, "no message from libpq", sizeof msg);

    if (state != NULL && state[0] != '\0') {
        code = noodle__pg_code_for_sqlstate(state);
        if (bad && !code_is_connection_level(code)) code = NOODLE_E_CONNECTION_LOST;
    } else {
        code = bad || PQsocket(h->conn) < 0 ? NOODLE_E_CONNECTION_LOST : NOODLE_E_QUERY_FAILED;
    }
    NOODLE_ERR(err, code, "%s failed: %s", what, msg);
    if (state != NULL && state[0] != '\0') noodle_error_detail(err, "SQLSTATE %s", state);
    return code;
}

/* The deadline passed mid-call: drop the connection (never PQcancel). */
static int fail_timeout(pg_handle *h, const char *what, noodle_error *err) {
    if (h->conn != NULL) {
        PQfinish(h->conn);
        h->conn = NULL;
    }
    return NOODLE_ERR(err, NOODLE_E_BACKEND_TIMEOUT,
                      "%s did not complete before its deadline; connection closed", what);
}

static int check_alive(const pg_handle *h, const char *what, noodle_error *err) {
    if (h == NULL) return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT, "%s: no handle", what);
    if (h->conn == NULL)
        return NOODLE_ERR(err, NOODLE_E_CONNECTION_LOST,
                          "%s: the connection was closed after an earlier timeout", what);
    return 0;
}

/* ======================================================================== */
/* Waiting                                                                   */
/* ======================================================================== */

/* Wait until fd reports one of events or the deadline passes. Returns the
 * revents (> 0), 0 at the deadline, or -1 with errno on failure. */
static int wait_fd(const noodle_clock *clock, int fd, short events, int64_t deadline) {
    if (fd < 0) {
        errno = EBADF;
        return -1;
    }
    for (;;) {
        int ms = noodle__poll_timeout_ms(clock, deadline);
        struct pollfd pfd = {.fd = fd, .events = events, .revents = 0};
        int n = poll(&pfd, 1, ms);
        if (n > 0) return pfd.revents != 0 ? pfd.revents : events;
        if (n == 0) {
            if (ms == 0 || noodle__poll_timeout_ms(clock, deadline) == 0) return 0;
            continue; /* woke early (coarse clock): wait the rest */
        }
        if (errno != EINTR) return -1;
    }
}

/* ======================================================================== */
/* Running one statement                                                     */
/* ======================================================================== */

/* Flush the output queue by the deadline. Returns 0, or fails. */
static int flush_all(pg_handle *h, const char *what, int64_t deadline, noodle_error *err) {
    for (;;) {
        int f = PQflush(h->conn);
        if (f == 0) return 0;
        if (f < 0) return fail_result(h, NULL, what, err);
        int ready = wait_fd(h->clock, PQsocket(h->conn), POLLIN | POLLOUT, deadline);
        if (ready == 0) return fail_timeout(h, what, err);
        if (ready < 0) return fail_result(h, NULL, what, err);
        /* libpq's advice: while waiting to write, read what the server says
         * so that it cannot deadlock on its own full output buffer. */
        if ((ready & (POLLIN | POLLHUP | POLLERR)) != 0 && !PQconsumeInput(h->conn))
            return fail_result(h, NULL, what, err);
    }
}

/* Read COPY OUT data to its end and drop it. Returns 0, or fails. */
static int drain_copy_out(pg_handle *h, const char *what, int64_t deadline, noodle_error *err) {
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(h->conn, &buf, 1);
        if (buf != NULL) PQfreemem(buf);
        if (n > 0) continue;
        if (n == -1) return 0; /* done: the final result follows */
        if (n == -2) return fail_result(h, NULL, what, err);
        int ready = wait_fd(h->clock, PQsocket(h->conn), POLLIN, deadline);
        if (ready == 0) return fail_timeout(h, what, err);
        if (ready < 0 || !PQconsumeInput(h->conn)) return fail_result(h, NULL, what, err);
    }
}

/* Refuse COPY FROM STDIN: end the copy with an error (the server then
 * reports 57014 for the statement). Returns 0, or fails. */
static int end_copy_in(pg_handle *h, const char *what, int64_t deadline, noodle_error *err) {
    for (;;) {
        int r = PQputCopyEnd(h->conn, "COPY FROM STDIN is not supported by noodle");
        if (r > 0) return flush_all(h, what, deadline, err);
        if (r < 0) return fail_result(h, NULL, what, err);
        /* 0: the output buffer is full (non-blocking); wait and retry. */
        int ready = wait_fd(h->clock, PQsocket(h->conn), POLLOUT, deadline);
        if (ready == 0) return fail_timeout(h, what, err);
        if (ready < 0 || PQflush(h->conn) < 0) return fail_result(h, NULL, what, err);
    }
}

/* Send one statement and collect its result by the deadline.
 *
 * On success *out receives the (first) successful result, owned by the
 * caller (PQclear). On failure *out is NULL and err says why; after a timeout
 * the connection is finished (h->conn == NULL). */
static int run(pg_handle *h, const char *what, const char *sql, int nparams, const Oid *types,
               const char *const *values, const int *lengths, const int *formats, int64_t deadline,
               PGresult **out, noodle_error *err) {
    PGresult *keep = NULL;    /* first successful result */
    PGresult *failure = NULL; /* the error to report */
    bool unsupported = false;
    int rc;

    *out = NULL;
    if ((rc = check_alive(h, what, err)) != 0) return rc;
    if (noodle__poll_timeout_ms(h->clock, deadline) == 0)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_TIMEOUT,
                          "%s: the deadline had passed before the call", what);
    if (!PQsendQueryParams(h->conn, sql, nparams, types, values, lengths, formats, 0))
        return fail_result(h, NULL, what, err);
    if ((rc = flush_all(h, what, deadline, err)) != 0) return rc;

    for (;;) {
        while (PQisBusy(h->conn)) {
            int fd = PQsocket(h->conn);
            if (fd < 0) break; /* lost: PQgetResult reports it without waiting */
            int ready = wait_fd(h->clock, fd, POLLIN, deadline);
            if (ready == 0) {
                rc = fail_timeout(h, what, err);
                goto fail;
            }
            if (ready < 0) {
                rc = fail_result(h, NULL, what, err);
                goto fail;
            }
            if (!PQconsumeInput(h->conn)) break;
        }
        PGresult *res = PQgetResult(h->conn);
        if (res == NULL) break;
        switch (PQresultStatus(res)) {
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
            if (keep == NULL) {
                keep = res;
                res = NULL;
            }
            break;
        case PGRES_COPY_IN:
            unsupported = true;
            PQclear(res);
            res = NULL;
            if ((rc = end_copy_in(h, what, deadline, err)) != 0) goto fail;
            break;
        case PGRES_COPY_OUT:
            unsupported = true;
            if ((rc = drain_copy_out(h, what, deadline, err)) != 0) {
                PQclear(res);
                goto fail;
            }
            break;
        case PGRES_COPY_BOTH:
            /* Only replication connections get here; nothing sane to do
             * but drop the connection. */
            PQclear(res);
            PQfinish(h->conn);
            h->conn = NULL;
            rc =
                NOODLE_ERR(err, NOODLE_E_QUERY_UNSUPPORTED,
                           "%s: COPY BOTH (replication) is not supported; connection closed", what);
            goto fail;
        default: {
            /* Keep the first error, unless a later one carries a SQLSTATE
             * and the first did not (libpq's own "server closed the
             * connection" comes after the server's FATAL message). */
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            if (failure == NULL ||
                (PQresultErrorField(failure, PG_DIAG_SQLSTATE) == NULL && state != NULL)) {
                PQclear(failure);
                failure = res;
                res = NULL;
            }
            break;
        }
        }
        PQclear(res);
    }

    if (unsupported && PQstatus(h->conn) == CONNECTION_OK) {
        /* Whatever the server said after our CopyFail is about that. */
        rc = NOODLE_ERR(err, NOODLE_E_QUERY_UNSUPPORTED,
                        "%s: COPY to or from the client is not supported", what);
        goto fail;
    }
    if (failure != NULL) {
        rc = fail_result(h, failure, what, err);
        goto fail;
    }
    if (keep == NULL) {
        /* No result at all: the connection went away between results. */
        rc = fail_result(h, NULL, what, err);
        goto fail;
    }
    *out = keep;
    return 0;

fail:
    PQclear(failure);
    PQclear(keep);
    return rc;
}

/* Run a fixed statement without parameters; *out as for run(). */
static int run_command(pg_handle *h, const char *what, const char *sql, int64_t deadline,
                       PGresult **out, noodle_error *err) {
    return run(h, what, sql, 0, NULL, NULL, NULL, NULL, deadline, out, err);
}

/* Run a fixed statement without parameters and drop its result. */
static int run_simple(pg_handle *h, const char *what, const char *sql, int64_t deadline,
                      noodle_error *err) {
    PGresult *res = NULL;
    int rc = run_command(h, what, sql, deadline, &res, err);
    PQclear(res);
    return rc;
}

/* ======================================================================== */
/* connect / close                                                           */
/* ======================================================================== */

/* libpq's test for "this dbname is a connection string". */
static bool is_connection_string(const char *s) {
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0 ||
           strchr(s, '=') != NULL;
}

static void quiet_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

static int pg_connect(const noodle_connect_params *p, void **handle, noodle_error *err) {
    /* Our defaults come first: libpq processes the keywords in order and the
     * last value of a keyword wins, so the settings expanded from the user's
     * conninfo (the dbname entry, last) override them. */
    const char *keys[8];
    const char *vals[8];
    size_t k = 0;
    const char *url;
    pg_handle *h = NULL;
    PGconn *conn = NULL;
    char msg[400];
    int rc;

    *handle = NULL;
    if (p == NULL)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT, "connect: no parameters");
    url = p->url != NULL ? p->url : "";

    if (is_connection_string(url)) {
        char *perr = NULL;
        PQconninfoOption *opts = PQconninfoParse(url, &perr);
        if (opts == NULL) {
            tidy_message(perr != NULL ? perr : "out of memory", msg, sizeof msg);
            PQfreemem(perr);
            return NOODLE_ERR(err, NOODLE_E_CONNECT_FAILED, "connect failed: %s", msg);
        }
        PQconninfoFree(opts);
    }

    keys[k] = "keepalives", vals[k++] = "1";
    keys[k] = "keepalives_idle", vals[k++] = "10";
    keys[k] = "keepalives_interval", vals[k++] = "3";
    keys[k] = "keepalives_count", vals[k++] = "3";
    keys[k] = "tcp_user_timeout", vals[k++] = "10000";
    if (p->application_name != NULL && p->application_name[0] != '\0')
        keys[k] = "application_name", vals[k++] = p->application_name;
    keys[k] = "dbname", vals[k++] = url;
    keys[k] = NULL, vals[k] = NULL;

    h = calloc(1, sizeof *h);
    if (h == NULL) return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "connect: out of memory");
    h->clock = p->clock;

    conn = PQconnectStartParams(keys, vals, 1);
    if (conn == NULL) {
        rc = NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "connect: out of memory");
        goto fail_handle;
    }
    PQsetNoticeProcessor(conn, quiet_notice, NULL);

    /* Drive the state machine. After PQconnectStart, act as if PQconnectPoll
     * had answered WRITING. The socket changes as libpq moves from host to
     * host, so read it again on every turn. */
    PostgresPollingStatusType st =
        PQstatus(conn) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED) {
            tidy_message(PQerrorMessage(conn), msg, sizeof msg);
            rc = noodle__pg_is_auth_failure(msg) ? NOODLE_E_AUTH_FAILED : NOODLE_E_CONNECT_FAILED;
            NOODLE_ERR(err, rc, "connect failed: %s", msg);
            goto fail_conn;
        }
        int ready = wait_fd(h->clock, PQsocket(conn),
                            st == PGRES_POLLING_READING ? POLLIN : POLLOUT, p->deadline);
        if (ready == 0) {
            rc = NOODLE_ERR(err, NOODLE_E_CONNECT_TIMEOUT,
                            "connect did not complete before the deadline");
            goto fail_conn;
        }
        if (ready < 0) {
            rc = NOODLE_ERR(err, NOODLE_E_CONNECT_FAILED, "connect failed: poll: %s",
                            strerror(errno));
            goto fail_conn;
        }
        st = PQconnectPoll(conn);
    }

    if (PQsetnonblocking(conn, 1) != 0) {
        tidy_message(PQerrorMessage(conn), msg, sizeof msg);
        rc = NOODLE_ERR(err, NOODLE_E_CONNECT_FAILED, "connect failed: non-blocking mode: %s", msg);
        goto fail_conn;
    }
    h->conn = conn;
    *handle = h;
    return 0;

fail_conn:
    PQfinish(conn);
fail_handle:
    free(h);
    return rc;
}

static void pg_close(void *handle) {
    pg_handle *h = handle;
    if (h == NULL) return;
    if (h->conn != NULL) PQfinish(h->conn); /* non-blocking: never waits */
    free(h);
}

static int pg_validate(void *handle, int64_t deadline, noodle_error *err) {
    pg_handle *h = handle;
    PGresult *res = NULL;
    int rc = run_command(h, "validate", "", deadline, &res, err);
    if (rc != 0) return rc;
    if (PQresultStatus(res) != PGRES_EMPTY_QUERY)
        rc = NOODLE_ERR(err, NOODLE_E_BACKEND_INTERNAL, "validate: unexpected reply %s",
                        PQresStatus(PQresultStatus(res)));
    PQclear(res);
    return rc;
}

/* ======================================================================== */
/* execute                                                                   */
/* ======================================================================== */

/* The libpq form of the bound parameters. One allocation holds the arrays
 * and the text of every converted value; values[] may also point into the
 * caller's BLOB memory (borrowed for the call). */
typedef struct pg_params {
    void *block; /* owned: everything below lives in it */
    Oid *types;
    const char **values;
    int *lengths;
    int *formats;
} pg_params;

static int convert_params(const noodle_value *params, size_t n, pg_params *pp, noodle_error *err) {
    size_t text = 0;
    memset(pp, 0, sizeof *pp);
    if (n == 0) return 0;
    if (params == NULL)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                          "execute: %zu parameters announced but none given", n);
    if (n > PG_MAX_PARAMS)
        return NOODLE_ERR(err, NOODLE_E_QUERY_PARAM_INVALID,
                          "execute: %zu parameters; PostgreSQL accepts at most %d", n,
                          PG_MAX_PARAMS);
    for (size_t i = 0; i < n; i++) {
        const noodle_value *v = &params[i];
        switch (v->type) {
        case NOODLE_TYPE_INT64:
        case NOODLE_TYPE_DOUBLE:
            text += 32;
            break;
        case NOODLE_TYPE_TEXT:
            if (v->v.bytes.len > 0 && v->v.bytes.ptr == NULL)
                return NOODLE_ERR(err, NOODLE_E_QUERY_PARAM_INVALID,
                                  "execute: parameter %zu: text of %zu bytes at NULL", i + 1,
                                  v->v.bytes.len);
            if (v->v.bytes.len > 0 && memchr(v->v.bytes.ptr, '\0', v->v.bytes.len) != NULL)
                return NOODLE_ERR(err, NOODLE_E_QUERY_PARAM_INVALID,
                                  "execute: parameter %zu: text contains a NUL byte, which "
                                  "PostgreSQL text cannot hold (bind it as a blob)",
                                  i + 1);
            if (v->v.bytes.len > (size_t)INT_MAX - 1)
                return NOODLE_ERR(err, NOODLE_E_QUERY_PARAM_INVALID,
                                  "execute: parameter %zu: text too long", i + 1);
            text += v->v.bytes.len + 1;
            break;
        case NOODLE_TYPE_BLOB:
            if (v->v.bytes.len > (size_t)INT_MAX)
                return NOODLE_ERR(err, NOODLE_E_QUERY_PARAM_INVALID,
                                  "execute: parameter %zu: blob too long", i + 1);
            if (v->v.bytes.len > 0 && v->v.bytes.ptr == NULL)
                return NOODLE_ERR(err, NOODLE_E_QUERY_PARAM_INVALID,
                                  "execute: parameter %zu: blob of %zu bytes at NULL", i + 1,
                                  v->v.bytes.len);
            break;
        case NOODLE_TYPE_NULL:
            break;
        default:
            return NOODLE_ERR(err, NOODLE_E_QUERY_PARAM_INVALID,
                              "execute: parameter %zu has unknown type %d", i + 1, (int)v->type);
        }
    }

    size_t arrays = n * (sizeof(Oid) + sizeof(char *) + 2 * sizeof(int));
    char *block = malloc(arrays + text + 1);
    if (block == NULL)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "execute: out of memory for parameters");
    /* Pointers first (largest alignment), then ints, then Oids, then text. */
    pp->block = block;
    pp->values = (const char **)(void *)block;
    pp->lengths = (int *)(void *)(block + n * sizeof(char *));
    pp->formats = pp->lengths + n;
    pp->types = (Oid *)(void *)(pp->formats + n);
    char *t = block + arrays;

    for (size_t i = 0; i < n; i++) {
        const noodle_value *v = &params[i];
        pp->types[i] = 0;
        pp->lengths[i] = 0;
        pp->formats[i] = 0;
        pp->values[i] = NULL;
        switch (v->type) {
        case NOODLE_TYPE_INT64: {
            int len = snprintf(t, 32, "%" PRId64, v->v.i);
            pp->types[i] = PG_INT8OID;
            pp->values[i] = t;
            t += len + 1;
            break;
        }
        case NOODLE_TYPE_DOUBLE: {
            size_t len = noodle__pg_format_double(v->v.d, t, 32);
            pp->types[i] = PG_FLOAT8OID;
            pp->values[i] = t;
            t += len + 1;
            break;
        }
        case NOODLE_TYPE_TEXT:
            if (v->v.bytes.len > 0) memcpy(t, v->v.bytes.ptr, v->v.bytes.len);
            t[v->v.bytes.len] = '\0';
            pp->values[i] = t;
            t += v->v.bytes.len + 1;
            break;
        case NOODLE_TYPE_BLOB:
            pp->types[i] = PG_BYTEAOID;
            pp->formats[i] = 1;
            pp->lengths[i] = (int)v->v.bytes.len;
            /* An empty blob needs a non-NULL pointer: NULL means SQL NULL. */
            pp->values[i] = v->v.bytes.len > 0 ? (const char *)v->v.bytes.ptr : "";
            break;
        default: /* NULL */
            break;
        }
    }
    return 0;
}

/* Parse a decimal integer of a result cell. */
static bool parse_int64(const char *s, int64_t *out) {
    char *end = NULL;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0) return false;
    *out = (int64_t)x;
    return true;
}

/* Rows affected, from the command tag ("INSERT 0 3", "UPDATE 2"); 0 when the
 * tag carries no count. */
static int64_t tag_count(PGresult *res) {
    int64_t n = 0;
    const char *s = PQcmdTuples(res);
    if (s == NULL || s[0] == '\0' || !parse_int64(s, &n)) return 0;
    return n;
}

static bool tag_is_dml(PGresult *res) {
    const char *tag = PQcmdStatus(res);
    if (tag == NULL) return false;
    return strncmp(tag, "INSERT ", 7) == 0 || strncmp(tag, "UPDATE ", 7) == 0 ||
           strncmp(tag, "DELETE ", 7) == 0 || strncmp(tag, "MERGE ", 6) == 0;
}

/* Build a noodle_rows from a libpq result. *out owned by the caller. */
static int build_rows(PGresult *res, noodle_rows **out, noodle_error *err) {
    int ncols = PQnfields(res);
    int nrows = PQntuples(res);
    noodle_rows *rows = NULL;
    noodle_value *cells = NULL;
    unsigned char **unescaped = NULL; /* per row: bytea buffers to PQfreemem */
    int rc;

    *out = NULL;
    if ((rc = noodle_rows_new((size_t)ncols, &rows, err)) != 0) return rc;
    for (int c = 0; c < ncols; c++) {
        if ((rc = noodle_rows_set_column_name(rows, (size_t)c, PQfname(res, c), err)) != 0)
            goto fail;
    }
    if (ncols > 0 && nrows > 0) {
        cells = calloc((size_t)ncols, sizeof *cells);
        unescaped = calloc((size_t)ncols, sizeof *unescaped);
        if (cells == NULL || unescaped == NULL) {
            rc = NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "execute: out of memory for a row");
            goto fail;
        }
    }
    /* Rows of zero columns ("SELECT FROM t") are rows too: cells stays NULL. */
    for (int r = 0; r < nrows; r++) {
        for (int c = 0; c < ncols; c++) {
            noodle_value *v = &cells[c];
            const char *s = PQgetvalue(res, r, c);
            size_t len = (size_t)PQgetlength(res, r, c);
            if (PQgetisnull(res, r, c)) {
                *v = noodle_null();
                continue;
            }
            switch (PQftype(res, c)) {
            case PG_INT2OID:
            case PG_INT4OID:
            case PG_INT8OID:
            case PG_OIDOID: {
                int64_t i;
                *v = parse_int64(s, &i) ? noodle_int64(i) : noodle_text_n(s, len);
                break;
            }
            case PG_FLOAT4OID:
            case PG_FLOAT8OID: {
                double d;
                *v = noodle__pg_parse_double(s, &d) ? noodle_double(d) : noodle_text_n(s, len);
                break;
            }
            case PG_BOOLOID:
                *v = noodle_int64(s[0] == 't' ? 1 : 0);
                break;
            case PG_BYTEAOID: {
                size_t blen = 0;
                unescaped[c] = PQunescapeBytea((const unsigned char *)s, &blen);
                if (unescaped[c] == NULL) {
                    rc = NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY,
                                    "execute: out of memory decoding bytea");
                    goto fail;
                }
                *v = noodle_blob(unescaped[c], blen);
                break;
            }
            default: /* numeric and everything else: the exact text */
                *v = noodle_text_n(s, len);
                break;
            }
        }
        rc = noodle_rows_append(rows, cells, err);
        for (int c = 0; c < ncols; c++) {
            if (unescaped[c] != NULL) PQfreemem(unescaped[c]);
            unescaped[c] = NULL;
        }
        if (rc != 0) goto fail;
    }
    if (PQresultStatus(res) == PGRES_COMMAND_OK || tag_is_dml(res))
        noodle_rows_set_affected(rows, tag_count(res));
    free(unescaped);
    free(cells);
    *out = rows;
    return 0;

fail:
    if (unescaped != NULL) {
        for (int c = 0; c < ncols; c++)
            if (unescaped[c] != NULL) PQfreemem(unescaped[c]);
    }
    free(unescaped);
    free(cells);
    noodle_rows_free(rows);
    return rc;
}

static int pg_execute(void *handle, const char *sql, const noodle_value *params, size_t nparams,
                      int64_t deadline, noodle_rows **out, noodle_error *err) {
    pg_handle *h = handle;
    char *translated = NULL;
    size_t nplaceholders = 0;
    pg_params pp;
    PGresult *res = NULL;
    int rc;

    *out = NULL;
    if (sql == NULL) return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT, "execute: no SQL");
    if ((rc = check_alive(h, "execute", err)) != 0) return rc;
    if (noodle__pg_translate_placeholders(sql, &translated, &nplaceholders) != 0)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "execute: out of memory");
    if (nplaceholders != nparams) {
        rc = NOODLE_ERR(err, NOODLE_E_QUERY_PARAM_COUNT,
                        "execute: the statement has %zu placeholders but %zu parameters were "
                        "bound",
                        nplaceholders, nparams);
        goto fail_translated;
    }
    if ((rc = convert_params(params, nparams, &pp, err)) != 0) goto fail_translated;
    rc = run(h, "execute", translated, (int)nparams, pp.types, pp.values, pp.lengths, pp.formats,
             deadline, &res, err);
    free(pp.block);
    if (rc != 0) goto fail_translated;
    rc = build_rows(res, out, err);
    PQclear(res);

fail_translated:
    free(translated);
    return rc;
}

/* ======================================================================== */
/* transactions                                                              */
/* ======================================================================== */

/* Transaction state as of the last ReadyForQuery: PostgreSQL only warns
 * about BEGIN inside a transaction and COMMIT / ROLLBACK outside one, so
 * these are refused here (as on every backend) with 5011. */
static int need_txn_state(pg_handle *h, const char *what, bool want_open, noodle_error *err) {
    int rc = check_alive(h, what, err);
    if (rc != 0) return rc;
    PGTransactionStatusType ts = PQtransactionStatus(h->conn);
    if (want_open && ts == PQTRANS_IDLE)
        return NOODLE_ERR(err, NOODLE_E_QUERY_TXN_STATE, "%s: no transaction is open", what);
    if (!want_open && (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR))
        return NOODLE_ERR(err, NOODLE_E_QUERY_TXN_STATE, "%s: a transaction is already open", what);
    return 0;
}

static int pg_begin(void *handle, noodle_isolation iso, int64_t deadline, noodle_error *err) {
    const char *sql;
    int rc;
    switch (iso) {
    case NOODLE_ISOLATION_DEFAULT:
        sql = "BEGIN";
        break;
    case NOODLE_ISOLATION_READ_UNCOMMITTED:
        sql = "BEGIN ISOLATION LEVEL READ UNCOMMITTED";
        break;
    case NOODLE_ISOLATION_READ_COMMITTED:
        sql = "BEGIN ISOLATION LEVEL READ COMMITTED";
        break;
    case NOODLE_ISOLATION_REPEATABLE_READ:
        sql = "BEGIN ISOLATION LEVEL REPEATABLE READ";
        break;
    case NOODLE_ISOLATION_SERIALIZABLE:
        sql = "BEGIN ISOLATION LEVEL SERIALIZABLE";
        break;
    default:
        return NOODLE_ERR(err, NOODLE_E_QUERY_ISOLATION_UNSUPPORTED,
                          "begin: unknown isolation level %d", (int)iso);
    }
    if ((rc = need_txn_state(handle, "begin", false, err)) != 0) return rc;
    return run_simple(handle, "begin", sql, deadline, err);
}

static int pg_commit(void *handle, int64_t deadline, noodle_error *err) {
    PGresult *res = NULL;
    int rc = need_txn_state(handle, "commit", true, err);
    if (rc != 0) return rc;
    if ((rc = run_command(handle, "commit", "COMMIT", deadline, &res, err)) != 0) return rc;
    /* COMMIT of a failed transaction succeeds with the tag ROLLBACK. */
    if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0)
        rc = NOODLE_ERR(err, NOODLE_E_QUERY_TXN_STATE,
                        "commit rolled back: the transaction had failed");
    PQclear(res);
    return rc;
}

static int pg_rollback(void *handle, int64_t deadline, noodle_error *err) {
    int rc = need_txn_state(handle, "rollback", true, err);
    return rc != 0 ? rc : run_simple(handle, "rollback", "ROLLBACK", deadline, err);
}

/* SAVEPOINT "name" and friends; name is checked, then double-quoted. */
static int savepoint_command(void *handle, const char *what, const char *verb, const char *name,
                             int64_t deadline, noodle_error *err) {
    char sql[128];
    int rc;
    if (name == NULL || !noodle_identifier_valid(name))
        return NOODLE_ERR(err, NOODLE_E_QUERY_INVALID_SAVEPOINT,
                          "%s: invalid savepoint name \"%s\"", what,
                          name != NULL ? name : "(null)");
    if ((rc = need_txn_state(handle, what, true, err)) != 0) return rc;
    snprintf(sql, sizeof sql, "%s \"%s\"", verb, name);
    return run_simple(handle, what, sql, deadline, err);
}

static int pg_savepoint(void *handle, const char *name, int64_t deadline, noodle_error *err) {
    return savepoint_command(handle, "savepoint", "SAVEPOINT", name, deadline, err);
}

static int pg_release(void *handle, const char *name, int64_t deadline, noodle_error *err) {
    return savepoint_command(handle, "release savepoint", "RELEASE SAVEPOINT", name, deadline, err);
}

static int pg_rollback_to(void *handle, const char *name, int64_t deadline, noodle_error *err) {
    return savepoint_command(handle, "rollback to savepoint", "ROLLBACK TO SAVEPOINT", name,
                             deadline, err);
}

/* ======================================================================== */
/* role and metrics                                                          */
/* ======================================================================== */

/* Cell as int64, or -1 when NULL or not a number. */
static int64_t cell_int64(PGresult *res, int row, int col) {
    int64_t v;
    if (row >= PQntuples(res) || col >= PQnfields(res) || PQgetisnull(res, row, col)) return -1;
    return parse_int64(PQgetvalue(res, row, col), &v) ? v : -1;
}

static bool cell_true(PGresult *res, int row, int col) {
    if (row >= PQntuples(res) || col >= PQnfields(res) || PQgetisnull(res, row, col)) return false;
    const char *s = PQgetvalue(res, row, col);
    return strcmp(s, "t") == 0 || strcmp(s, "on") == 0 || strcmp(s, "true") == 0;
}

static int expect_row(PGresult *res, const char *what, int ncols, noodle_error *err) {
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1 || PQnfields(res) < ncols)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INTERNAL, "%s: unexpected reply (%d rows)", what,
                          PQntuples(res));
    return 0;
}

static noodle_role role_of(bool in_recovery, bool read_only) {
    if (in_recovery) return NOODLE_ROLE_STANDBY;
    return read_only ? NOODLE_ROLE_READ_ONLY : NOODLE_ROLE_PRIMARY;
}

static int pg_role(void *handle, int64_t deadline, noodle_role *out, noodle_error *err) {
    PGresult *res = NULL;
    int rc;
    *out = NOODLE_ROLE_UNKNOWN;
    rc = run_command(handle, "role query",
                     "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')",
                     deadline, &res, err);
    if (rc != 0) return rc;
    if ((rc = expect_row(res, "role query", 2, err)) == 0)
        *out = role_of(cell_true(res, 0, 0), cell_true(res, 0, 1));
    PQclear(res);
    return rc;
}

static int pg_metrics(void *handle, int64_t deadline, noodle_server_metrics *out,
                      noodle_error *err) {
    static const char general[] =
        "SELECT CASE WHEN has_database_privilege(current_database(), 'CONNECT')"
        " THEN pg_database_size(current_database()) END,"
        " pg_is_in_recovery(), current_setting('transaction_read_only'),"
        " current_setting('server_version'),"
        /* pg_settings hides data_directory from the unprivileged. */
        " coalesce((SELECT setting FROM pg_settings WHERE name = 'data_directory'), '')";
    static const char primary[] = "SELECT count(*)::int8,"
                                  " max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn))::int8"
                                  " FROM pg_stat_replication";
    static const char standby[] =
        "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::int8,"
        " (extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::int8";
    PGresult *res = NULL;
    bool in_recovery;
    int rc;

    memset(out, 0, sizeof *out);
    out->database_size_bytes = -1;
    out->role = NOODLE_ROLE_UNKNOWN;
    out->standby_count = -1;
    out->replication_lag_bytes = -1;
    out->replication_delay_ms = -1;

    if ((rc = run_command(handle, "metrics query", general, deadline, &res, err)) != 0) return rc;
    if ((rc = expect_row(res, "metrics query", 5, err)) != 0) goto done;
    out->database_size_bytes = cell_int64(res, 0, 0);
    in_recovery = cell_true(res, 0, 1);
    out->role = role_of(in_recovery, cell_true(res, 0, 2));
    {
        /* "15.18 (Debian 15.18-0+deb12u1)" -> "PostgreSQL 15.18" */
        const char *v = PQgetvalue(res, 0, 3);
        int vlen = (int)strcspn(v, " ");
        snprintf(out->server_version, sizeof out->server_version, "PostgreSQL %.*s", vlen, v);
    }
    noodle__strlcpy(out->data_path, PQgetvalue(res, 0, 4), sizeof out->data_path);
    PQclear(res);
    res = NULL;

    rc = run_command(handle, "metrics query", in_recovery ? standby : primary, deadline, &res, err);
    if (rc != 0) goto done;
    if ((rc = expect_row(res, "metrics query", 2, err)) != 0) goto done;
    if (in_recovery) {
        int64_t lag = cell_int64(res, 0, 0);
        int64_t delay = cell_int64(res, 0, 1);
        /* Negative values (replay ahead of receive after archive recovery,
         * clock skew) mean "caught up"; NULL stays unknown. */
        out->replication_lag_bytes = PQgetisnull(res, 0, 0) ? -1 : (lag < 0 ? 0 : lag);
        out->replication_delay_ms = PQgetisnull(res, 0, 1) ? -1 : (delay < 0 ? 0 : delay);
    } else {
        out->standby_count = cell_int64(res, 0, 0);
        out->replication_lag_bytes = cell_int64(res, 0, 1); /* -1 with no standby */
        if (out->replication_lag_bytes < -1) out->replication_lag_bytes = 0;
    }

done:
    PQclear(res);
    return rc;
}

/* ======================================================================== */
/* The table                                                                 */
/* ======================================================================== */

static const noodle_backend_ops postgres_ops = {
    .abi_version = NOODLE_BACKEND_ABI_VERSION,
    .struct_size = sizeof(noodle_backend_ops),
    .name = "postgres",
    .connect = pg_connect,
    .close = pg_close,
    .validate = pg_validate,
    .execute = pg_execute,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .savepoint = pg_savepoint,
    .release = pg_release,
    .rollback_to = pg_rollback_to,
    .role = pg_role,
    .metrics = pg_metrics,
};

const noodle_backend_ops *noodle_backend_postgres(void) {
    return &postgres_ops;
}
