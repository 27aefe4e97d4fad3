/* The PostgreSQL backend: noodle_backend_ops over libpq.
 *
 * Design notes. Every operation must return by its deadline even when the
 * server is frozen (SIGSTOPped, or the network drops packets): the kernel
 * still completes TCP handshakes and acknowledges data, so neither
 * statement_timeout nor TCP keepalives nor tcp_user_timeout notice anything.
 * Only a client-side deadline on the socket works, hence:
 *
 *   1. libpq is used in non-blocking mode only: PQconnectStartParams +
 *      PQconnectPoll, PQsendQueryParams / PQsendPrepare / PQsendQueryPrepared
 *      + PQflush, PQconsumeInput + PQisBusy,
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
 *   5. One statement per call: execute uses the extended protocol, in which
 *      the server refuses several statements in one string.
 *   6. Notices (WARNING: there is no transaction in progress, ...) are
 *      dropped instead of being printed on stderr by libpq.
 *   7. A connection libpq cannot go on with is dropped at once and the error
 *      is connection-fatal (4003): reading failed (PQconsumeInput), the
 *      socket is gone, COPY BOTH (replication streaming), or libpq is left
 *      mid-command after a call (a failed COPY drain...), where every later
 *      send would fail with "another command is already in progress".
 *   8. Connect walks a multi-host conninfo with a time budget per host:
 *      PQconnectPoll ignores connect_timeout, so a frozen host (TCP accepted,
 *      no answer) would otherwise take the whole deadline. The budget is
 *      connect_timeout when set (libpq's rules: below 2 s counts as 2 s),
 *      else an even share of the time left across the hosts not yet tried.
 *      libpq gets the host list from the current host on and moves from host
 *      to host by itself (refused, standby for target_session_attrs, all its
 *      rules); when the host it is on runs out of budget, the attempt is
 *      dropped and a fresh one starts with the hosts after it. The overall
 *      deadline bounds everything; the final error names every host's
 *      failure.
 *   9. Host names are resolved here, on detached threads, and libpq gets the
 *      numeric address as hostaddr next to the name in host (which SSL
 *      verification, Kerberos and .pgpass keep using): libpq's own
 *      getaddrinfo would block inside PQconnectPoll past any deadline. Not
 *      covered: hosts that only a service file names (a service= in the
 *      URL), and lists libpq refuses (counts that do not match); libpq
 *      resolves those itself, and a slow resolver can then hold connect. If
 *      no thread can be started, libpq resolves too. While the name of a
 *      later host is still being resolved, libpq gets the hosts before it;
 *      when it has tried them all and failed (other than on authentication,
 *      where libpq itself would stop), connect goes on with the rest.
 *  10. Messages from libpq at connect time can quote the conninfo (parse
 *      errors quote the offending token, which may be the password): they
 *      all go through noodle__scrub_secrets before they reach an error.
 *  11. Prepared-statement cache: execute prepares each statement once per
 *      connection as a named statement "noodle_<n>" (PQsendPrepare, then
 *      PQsendQueryPrepared; both through run(), so non-blocking and bounded
 *      by the deadline like everything else), keyed by the text as prepared
 *      plus the parameter types, LRU-bounded (NOODLE_PG_STMT_CACHE_SIZE; the
 *      keyed LRU of backends/stmt_lru.c, shared with the SQLite backend,
 *      whose eviction callback queues the DEALLOCATE here).
 *      Invariants:
 *        a. An entry exists only for a statement the server prepared: a
 *           failed prepare (syntax error, aborted transaction 25P02, ...)
 *           leaves nothing behind.
 *        b. The server holds at most NOODLE_PG_STMT_CACHE_SIZE +
 *           PG_PENDING_MAX statements for us (128 by default): those in the
 *           cache, and the pending list of evicted (or out-of-date) ones,
 *           which are DEALLOCATEd NOODLE_PG_DEALLOCATE_BATCH at a time in one
 *           round trip before the prepare of a miss, only outside a
 *           transaction (a failure then cannot abort the caller's). While the
 *           list is full, misses run unnamed. A statement that cannot be
 *           queued (full list) or whose DEALLOCATE failed is left to the
 *           session's end; it never counts twice.
 *        c. An entry that went out of date (0A000 "cached plan must not
 *           change result type" after DDL, or 26000 when it was deallocated
 *           behind our back) is dropped. The error is raised in Bind, before
 *           anything runs, so outside a transaction block the statement is
 *           prepared again and run once more; inside one the transaction is
 *           aborted and the error is reported.
 *        d. DISCARD ALL and DEALLOCATE ALL sent through execute empty the
 *           cache (the server forgot everything).
 *        e. The cache lives and dies with the handle; the session's end
 *           frees the server's side, so close sends nothing.
 *      noodle__pg_set_stmt_cache(false) turns it off for new connections
 *      (transaction-pooling proxies).
 *
 * A handle is used by one thread at a time (the connection contract); libpq
 * itself is thread-safe across connections.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "backends/postgres_sql.h"
#include "backends/stmt_lru.h"
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

/* Why a statement failed, as far as the statement cache cares (stale_kind). */
typedef enum pg_stale {
    PG_STALE_NO = 0,
    PG_STALE_RESULT_TYPE, /* 0A000 on revalidation: still allocated on the server */
    PG_STALE_GONE,        /* 26000: the server no longer has it */
} pg_stale;

/* One cached named statement ("noodle_<id>" on the server); its node threads
 * it on the cache's bucket chain and LRU list (backends/stmt_lru.h). One
 * allocation holds the entry, its parameter types and its text. */
typedef struct pg_stmt {
    noodle__lru_node node; /* first: stmt_of() casts back */
    uint64_t id;
    size_t len; /* of sql */
    int nparams;
    Oid *types; /* nparams; the key's second half */
    char *sql;  /* the text prepared (placeholders translated), NUL-terminated */
} pg_stmt;

/* Evicted or out-of-date statements still allocated on the server, waiting
 * for DEALLOCATE: at most this many (misses stop caching while it is full),
 * the cache size but never fewer than one batch. */
#define PG_PENDING_MAX                                                                             \
    (NOODLE_PG_STMT_CACHE_SIZE > NOODLE_PG_DEALLOCATE_BATCH ? NOODLE_PG_STMT_CACHE_SIZE            \
                                                            : NOODLE_PG_DEALLOCATE_BATCH)

typedef struct pg_stmt_cache {
    bool on;         /* read from the backend switch at connect */
    noodle__lru lru; /* cap: NOODLE_PG_STMT_CACHE_SIZE; off (no buckets) when !on */
    uint64_t next_id; /* of the last statement prepared */
    uint64_t hits, misses;
    uint64_t pending[PG_PENDING_MAX]; /* ids to DEALLOCATE */
    size_t npending;
} pg_stmt_cache;

/* The backend's private state behind a void *handle. */
typedef struct pg_handle {
    PGconn *conn;              /* owned; NULL once finished after a timeout */
    const noodle_clock *clock; /* borrowed from the connect params (NULL: real) */
    pg_stale stale;            /* of the last failed run() */
    pg_stmt_cache cache;
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

/* How a backslash behaves in the string constant whose opening quote is at
 * sql[i] (PostgreSQL's lexer, scan.l). */
typedef enum string_kind {
    STRING_PLAIN,   /* '...' and N'...': escapes only when standard strings are off */
    STRING_ESCAPE,  /* E'...': always escapes */
    STRING_VERBATIM /* B'...', X'...', U&'...': never escapes */
} string_kind;

/* True when sql[i] is a letter that stands alone, not the end of an identifier. */
static bool lone_char_at(const char *sql, size_t i) {
    return i == 0 || !is_ident_char((unsigned char)sql[i - 1]);
}

static string_kind string_kind_at(const char *sql, size_t i) {
    if (i == 0) return STRING_PLAIN;
    char p = sql[i - 1];
    if ((p == 'E' || p == 'e') && lone_char_at(sql, i - 1)) return STRING_ESCAPE;
    if ((p == 'B' || p == 'b' || p == 'X' || p == 'x') && lone_char_at(sql, i - 1))
        return STRING_VERBATIM;
    if (p == '&' && i >= 2 && (sql[i - 2] == 'U' || sql[i - 2] == 'u') && lone_char_at(sql, i - 2))
        return STRING_VERBATIM;
    return STRING_PLAIN;
}

/* One pass of the placeholder scanner: counts placeholders and, when out is
 * non-NULL, writes the translated text (out must be large enough: the first
 * pass measures it). Returns the output length (without the terminator). */
static size_t scan_placeholders(const char *sql, bool standard_strings, char *out,
                                size_t *count) {
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
            /* A backslash escapes the next character in E'...', and in plain
             * '...' too when standard_conforming_strings is off. */
            string_kind kind = string_kind_at(sql, i);
            bool escapes =
                kind == STRING_ESCAPE || (kind == STRING_PLAIN && !standard_strings);
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

int noodle__pg_translate_placeholders(const char *sql, bool standard_strings, char **out,
                                      size_t *count) {
    size_t n = 0;
    size_t len = scan_placeholders(sql, standard_strings, NULL, &n);
    char *buf = malloc(len + 1);
    *out = NULL;
    *count = 0;
    if (buf == NULL) return -1;
    scan_placeholders(sql, standard_strings, buf, &n);
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
 * trailing white space removed ("...unexpectedly\n\tThis probably..."). With
 * entries, a line break that starts a new line of its own (not a "\t"
 * continuation) becomes "; ": libpq writes one such line per host tried. */
static void tidy_lines(const char *msg, bool entries, char *buf, size_t size) {
    size_t o = 0;
    bool space = false, entry = false;
    if (msg == NULL) msg = "";
    for (const char *p = msg; *p != '\0' && o + 1 < size; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r') {
            if (*p == '\n' && entries && p[1] != '\t' && p[1] != ' ') entry = true;
            if (*p == '\t') entry = false;
            space = true;
            continue;
        }
        if (space && o > 0) {
            if (entry && o > 0 && buf[o - 1] != ';') buf[o++] = ';';
            if (o + 1 >= size) break;
            buf[o++] = ' ';
            if (o + 1 >= size) break;
        }
        space = entry = false;
        buf[o++] = *p;
    }
    while (o > 0 && (buf[o - 1] == ' ' || buf[o - 1] == ';')) o--;
    buf[o] = '\0';
}

static void tidy_message(const char *msg, char *buf, size_t size) {
    tidy_lines(msg, false, buf, size);
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

/* Drop the connection for good (never PQcancel); later calls fail with 4003. */
static void finish_conn(pg_handle *h) {
    if (h->conn != NULL) {
        PQfinish(h->conn);
        h->conn = NULL;
    }
}

/* The deadline passed mid-call: drop the connection. */
static int fail_timeout(pg_handle *h, const char *what, noodle_error *err) {
    finish_conn(h);
    return NOODLE_ERR(err, NOODLE_E_BACKEND_TIMEOUT,
                      "%s did not complete before its deadline; connection closed", what);
}

/* Make the error in err connection-fatal: a code that is not becomes 4003,
 * keeping the message (with note appended) and the detail. Returns the code. */
static int make_fatal(int rc, const char *note, noodle_error *err) {
    char msg[sizeof err->message];
    char detail[sizeof err->detail];
    if (noodle_code_is_connection_fatal(rc)) return rc;
    if (err == NULL) return NOODLE_E_CONNECTION_LOST;
    noodle__strlcpy(msg, err->message, sizeof msg);
    noodle__strlcpy(detail, err->detail, sizeof detail);
    rc = NOODLE_ERR(err, NOODLE_E_CONNECTION_LOST, "%s; %s", msg, note);
    if (detail[0] != '\0') noodle_error_detail(err, "%s", detail);
    return rc;
}

/* The connection cannot go on mid-call (reading failed, the socket is gone):
 * report failure (the server's last error, when one came) or libpq's message
 * as connection-fatal, and drop the connection. Never waits: PQgetResult is
 * not called on a connection in this state, as it could block in pqWait. */
static int fail_lost(pg_handle *h, const PGresult *failure, const char *what,
                     noodle_error *err) {
    int rc = fail_result(h, failure, what, err);
    rc = make_fatal(rc, "the connection was lost and is closed", err);
    finish_conn(h);
    return rc;
}

/* poll(2) itself failed (errno): the wait cannot be trusted, drop the
 * connection. */
static int fail_poll(pg_handle *h, const char *what, noodle_error *err) {
    int e = errno;
    finish_conn(h);
    return NOODLE_ERR(err, NOODLE_E_CONNECTION_LOST, "%s failed: poll: %s; connection closed",
                      what, strerror(e));
}

static int check_alive(const pg_handle *h, const char *what, noodle_error *err) {
    if (h == NULL) return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT, "%s: no handle", what);
    if (h->conn == NULL)
        return NOODLE_ERR(err, NOODLE_E_CONNECTION_LOST,
                          "%s: the connection was closed after an earlier failure", what);
    return 0;
}

/* True when libpq can take a new command on the connection: connected, and
 * no earlier command left half-done (mid-COPY, results not all read). */
static bool can_take_command(PGconn *conn) {
    PGTransactionStatusType ts = PQtransactionStatus(conn);
    return PQstatus(conn) == CONNECTION_OK && ts != PQTRANS_ACTIVE && ts != PQTRANS_UNKNOWN;
}

/* After a call: when libpq is left unable to take another command, the
 * connection is useless (every later send would fail with "another command
 * is already in progress"), so drop it and make the error connection-fatal.
 * rc is the call's result so far (0 on success: then *res is dropped). */
static int settle(pg_handle *h, const char *what, int rc, PGresult **res, noodle_error *err) {
    if (h->conn == NULL || can_take_command(h->conn)) return rc;
    if (rc == 0) {
        PQclear(*res);
        *res = NULL;
        rc = NOODLE_ERR(err, NOODLE_E_CONNECTION_LOST,
                        "%s: libpq was left in the middle of a command; connection closed",
                        what);
    } else {
        rc = make_fatal(rc, "libpq was left in the middle of a command; connection closed", err);
    }
    finish_conn(h);
    return rc;
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
        int fd = PQsocket(h->conn);
        if (fd < 0) return fail_lost(h, NULL, what, err);
        int ready = wait_fd(h->clock, fd, POLLIN | POLLOUT, deadline);
        if (ready == 0) return fail_timeout(h, what, err);
        if (ready < 0) return fail_poll(h, what, err);
        /* libpq's advice: while waiting to write, read what the server says
         * so that it cannot deadlock on its own full output buffer. */
        if ((ready & (POLLIN | POLLHUP | POLLERR)) != 0 && !PQconsumeInput(h->conn))
            return fail_lost(h, NULL, what, err);
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
        if (n == -2) return fail_result(h, NULL, what, err); /* settle() judges the state */
        int fd = PQsocket(h->conn);
        if (fd < 0) return fail_lost(h, NULL, what, err);
        int ready = wait_fd(h->clock, fd, POLLIN, deadline);
        if (ready == 0) return fail_timeout(h, what, err);
        if (ready < 0) return fail_poll(h, what, err);
        if (!PQconsumeInput(h->conn)) return fail_lost(h, NULL, what, err);
    }
}

/* Refuse COPY FROM STDIN: end the copy with an error (the server then
 * reports 57014 for the statement). Returns 0, or fails. */
static int end_copy_in(pg_handle *h, const char *what, int64_t deadline, noodle_error *err) {
    for (;;) {
        int r = PQputCopyEnd(h->conn, "COPY FROM STDIN is not supported by noodle");
        if (r > 0) return flush_all(h, what, deadline, err);
        if (r < 0) return fail_result(h, NULL, what, err); /* settle() judges the state */
        /* 0: the output buffer is full (non-blocking); wait and retry. */
        int fd = PQsocket(h->conn);
        if (fd < 0) return fail_lost(h, NULL, what, err);
        int ready = wait_fd(h->clock, fd, POLLOUT, deadline);
        if (ready == 0) return fail_timeout(h, what, err);
        if (ready < 0) return fail_poll(h, what, err);
        if (PQflush(h->conn) < 0) return fail_lost(h, NULL, what, err);
    }
}

/* What run() sends: one libpq PQsend* call. Everything is borrowed for the
 * call. */
typedef enum pg_send {
    PG_SEND_PARAMS,   /* PQsendQueryParams: an unnamed statement, parsed and run at once */
    PG_SEND_PREPARE,  /* PQsendPrepare: parse sql as the named statement `name` */
    PG_SEND_PREPARED, /* PQsendQueryPrepared: run the named statement `name` */
    PG_SEND_SIMPLE,   /* PQsendQuery: simple protocol, several statements allowed */
} pg_send;

typedef struct pg_command {
    pg_send send;
    const char *name;          /* PREPARE, PREPARED */
    const char *sql;           /* all but PREPARED */
    int nparams;               /* all but SIMPLE */
    const Oid *types;          /* PARAMS, PREPARE */
    const char *const *values; /* PARAMS, PREPARED */
    const int *lengths;        /* PARAMS, PREPARED */
    const int *formats;        /* PARAMS, PREPARED */
} pg_command;

static int send_command(PGconn *conn, const pg_command *cmd) {
    switch (cmd->send) {
    case PG_SEND_PARAMS:
        return PQsendQueryParams(conn, cmd->sql, cmd->nparams, cmd->types, cmd->values,
                                 cmd->lengths, cmd->formats, 0);
    case PG_SEND_PREPARE:
        return PQsendPrepare(conn, cmd->name, cmd->sql, cmd->nparams, cmd->types);
    case PG_SEND_PREPARED:
        return PQsendQueryPrepared(conn, cmd->name, cmd->nparams, cmd->values, cmd->lengths,
                                   cmd->formats, 0);
    case PG_SEND_SIMPLE:
        return PQsendQuery(conn, cmd->sql);
    }
    return 0;
}

/* Whether a failed statement failed because the named statement it ran is
 * out of date, in its own Bind step -- before anything was executed. Both
 * errors are raised by the server's code for the statement itself: nested
 * ones (a PL/pgSQL function's cached plans) carry a CONTEXT and do not
 * count. Routine names are not translated, unlike messages. */
static pg_stale stale_kind(const PGresult *failure) {
    const char *state = PQresultErrorField(failure, PG_DIAG_SQLSTATE);
    const char *routine = PQresultErrorField(failure, PG_DIAG_SOURCE_FUNCTION);
    if (state == NULL || routine == NULL || PQresultErrorField(failure, PG_DIAG_CONTEXT) != NULL)
        return PG_STALE_NO;
    /* "cached plan must not change result type": a table changed under it */
    if (strcmp(state, "0A000") == 0 && strcmp(routine, "RevalidateCachedQuery") == 0)
        return PG_STALE_RESULT_TYPE;
    /* "prepared statement ... does not exist": deallocated behind our back */
    if (strcmp(state, "26000") == 0 && strcmp(routine, "FetchPreparedStatement") == 0)
        return PG_STALE_GONE;
    return PG_STALE_NO;
}

/* Send one command and collect its result by the deadline (run() does the
 * bookkeeping around it).
 *
 * On success *out receives the (first) successful result, owned by the
 * caller (PQclear). On failure *out is NULL and err says why (h->stale
 * whether a named statement was out of date); after a timeout or a lost
 * connection the connection is finished (h->conn == NULL). */
static int run_once(pg_handle *h, const char *what, const pg_command *cmd, int64_t deadline,
                    PGresult **out, noodle_error *err) {
    PGresult *keep = NULL;    /* first successful result */
    PGresult *failure = NULL; /* the error to report */
    bool unsupported = false;
    int rc;

    *out = NULL;
    if (!send_command(h->conn, cmd)) return fail_result(h, NULL, what, err);
    if ((rc = flush_all(h, what, deadline, err)) != 0) return rc;

    for (;;) {
        while (PQisBusy(h->conn)) {
            int fd = PQsocket(h->conn);
            if (fd < 0) {
                rc = fail_lost(h, failure, what, err);
                goto fail;
            }
            int ready = wait_fd(h->clock, fd, POLLIN, deadline);
            if (ready == 0) {
                rc = fail_timeout(h, what, err);
                goto fail;
            }
            if (ready < 0) {
                rc = fail_poll(h, what, err);
                goto fail;
            }
            if (!PQconsumeInput(h->conn)) {
                /* libpq keeps what it read before the failure: when that
                 * completes a result (the server's last words, FATAL
                 * 57P01...), PQisBusy is false and PQgetResult returns it
                 * without waiting; the next turn then reports the loss.
                 * Otherwise PQgetResult could block in pqWait: give up. */
                if (!PQisBusy(h->conn)) break;
                rc = fail_lost(h, failure, what, err);
                goto fail;
            }
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
            /* Only replication connections get here (START_REPLICATION); the
             * stream only ends when the server agrees, so drop the
             * connection: connection-fatal, the handle is dead. */
            PQclear(res);
            finish_conn(h);
            rc = NOODLE_ERR(err, NOODLE_E_CONNECTION_LOST,
                            "%s: COPY BOTH (replication streaming) is not supported; the "
                            "connection was closed",
                            what);
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
        h->stale = stale_kind(failure);
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

/* run_once(), refusing to start when the deadline has passed or libpq cannot
 * take a command, and dropping the connection (connection-fatal error) when
 * the call leaves libpq unable to take the next one. */
static int run(pg_handle *h, const char *what, const pg_command *cmd, int64_t deadline,
               PGresult **out, noodle_error *err) {
    int rc;
    *out = NULL;
    h->stale = PG_STALE_NO;
    if ((rc = check_alive(h, what, err)) != 0) return rc;
    if (!can_take_command(h->conn)) {
        bool bad = PQstatus(h->conn) != CONNECTION_OK;
        finish_conn(h);
        return NOODLE_ERR(err, NOODLE_E_CONNECTION_LOST,
                          "%s: the connection cannot take a command (%s); connection closed",
                          what, bad ? "it is broken" : "an earlier command was left unfinished");
    }
    if (noodle__poll_timeout_ms(h->clock, deadline) == 0)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_TIMEOUT,
                          "%s: the deadline had passed before the call", what);
    rc = run_once(h, what, cmd, deadline, out, err);
    return settle(h, what, rc, out, err);
}

/* Run a fixed statement without parameters; *out as for run(). */
static int run_command(pg_handle *h, const char *what, const char *sql, int64_t deadline,
                       PGresult **out, noodle_error *err) {
    const pg_command cmd = {.send = PG_SEND_PARAMS, .sql = sql};
    return run(h, what, &cmd, deadline, out, err);
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
/* The prepared-statement cache                                              */
/* ======================================================================== */

static atomic_bool stmt_cache_default = true;

void noodle__pg_set_stmt_cache(bool on) {
    atomic_store(&stmt_cache_default, on);
}

void noodle__pg_stmt_cache_stats(void *handle, uint64_t *hits, uint64_t *misses, size_t *size) {
    const pg_handle *h = handle;
    if (hits) *hits = h->cache.hits;
    if (misses) *misses = h->cache.misses;
    if (size) *size = h->cache.lru.size;
}

/* The key: the text as prepared and the parameter types sent with it (the
 * server infers untyped parameters at prepare time, so the same text with
 * other types is another statement). */
static uint64_t stmt_hash(const char *sql, size_t len, int nparams, const Oid *types) {
    uint64_t h = noodle__lru_hash(NOODLE__LRU_SEED(len), sql, len);
    return nparams > 0
               ? noodle__lru_hash(h ^ (uint64_t)nparams, types, (size_t)nparams * sizeof *types)
               : h;
}

static void stmt_name(uint64_t id, char *buf, size_t size) {
    snprintf(buf, size, "noodle_%" PRIu64, id);
}

static pg_stmt *stmt_of(noodle__lru_node *n) {
    return (pg_stmt *)(void *)n;
}

static int cache_open(pg_stmt_cache *c) {
    memset(c, 0, sizeof *c);
    c->on = NOODLE_PG_STMT_CACHE_SIZE > 0 && atomic_load(&stmt_cache_default);
    if (!c->on) return 0;
    return noodle__lru_open(&c->lru, (size_t)NOODLE_PG_STMT_CACHE_SIZE);
}

/* The key stmt_find looks for. */
typedef struct pg_stmt_key {
    const char *sql;
    size_t len;
    int nparams;
    const Oid *types;
} pg_stmt_key;

static bool stmt_matches(const noodle__lru_node *n, const void *key) {
    const pg_stmt *s = (const pg_stmt *)(const void *)n;
    const pg_stmt_key *k = key;
    return s->len == k->len && s->nparams == k->nparams && memcmp(s->sql, k->sql, k->len) == 0 &&
           (k->nparams == 0 ||
            memcmp(s->types, k->types, (size_t)k->nparams * sizeof *k->types) == 0);
}

/* The entry for the key, made the most recent; NULL when not cached. */
static pg_stmt *stmt_find(pg_stmt_cache *c, const char *sql, size_t len, uint64_t hash, int nparams,
                          const Oid *types) {
    const pg_stmt_key key = {sql, len, nparams, types};
    noodle__lru_node *n = noodle__lru_find(&c->lru, hash, stmt_matches, &key);
    return n != NULL ? stmt_of(n) : NULL;
}

/* Free s, taken off the cache. allocated: the server still has the
 * statement, so it waits for DEALLOCATE (or, when that list is full, for the
 * end of the session). */
static void stmt_release(pg_stmt_cache *c, pg_stmt *s, bool allocated) {
    if (allocated && c->npending < PG_PENDING_MAX) c->pending[c->npending++] = s->id;
    free(s);
}

/* Take s off the cache and free it (allocated: as for stmt_release). */
static void stmt_drop(pg_stmt_cache *c, pg_stmt *s, bool allocated) {
    noodle__lru_remove(&c->lru, &s->node);
    stmt_release(c, s, allocated);
}

/* noodle__lru callbacks (ctx: the pg_stmt_cache): an evicted statement is
 * still allocated on the server; a forgotten one is not. */
static void stmt_evicted(void *ctx, noodle__lru_node *n) {
    stmt_release(ctx, stmt_of(n), true);
}

static void stmt_forgotten(void *ctx, noodle__lru_node *n) {
    stmt_release(ctx, stmt_of(n), false);
}

/* A new entry for the key (not yet in the cache); NULL when out of memory. */
static pg_stmt *stmt_new(const char *sql, size_t len, uint64_t hash, int nparams,
                         const Oid *types) {
    size_t tbytes = (size_t)nparams * sizeof *types;
    pg_stmt *s = malloc(sizeof *s + tbytes + len + 1);
    if (s == NULL) return NULL;
    memset(s, 0, sizeof *s);
    s->node.hash = hash;
    s->len = len;
    s->nparams = nparams;
    s->types = (Oid *)(void *)(s + 1);
    s->sql = (char *)(s->types + nparams);
    if (tbytes > 0) memcpy(s->types, types, tbytes);
    memcpy(s->sql, sql, len + 1);
    return s;
}

/* Make s (prepared on the server) the most recent entry, evicting the least
 * recently used one when the cache is full. */
static void stmt_add(pg_stmt_cache *c, pg_stmt *s) {
    noodle__lru_insert(&c->lru, &s->node, stmt_evicted, c);
}

/* Forget every statement: the server dropped them all (DISCARD ALL,
 * DEALLOCATE ALL), or the handle is closing. */
static void stmt_forget_all(pg_stmt_cache *c) {
    noodle__lru_clear(&c->lru, stmt_forgotten, c);
    c->npending = 0;
}

static void cache_close(pg_stmt_cache *c) {
    noodle__lru_close(&c->lru, stmt_forgotten, c);
    c->npending = 0;
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

/* ---- per-host time budgets ------------------------------------------------ */

/* connect_timeout in seconds as libpq reads it (an int, surrounding white
 * space allowed); 0 when unset, invalid or <= 0 ("wait for ever"). */
static long connect_timeout_seconds(const char *s) {
    char *end = NULL;
    long v;
    if (s == NULL || s[0] == '\0') return 0;
    errno = 0;
    v = strtol(s, &end, 10);
    if (end == s || errno != 0 || v != (long)(int)v) return 0;
    while (*end != '\0' && isspace((unsigned char)*end)) end++;
    if (*end != '\0' || v <= 0) return 0;
    return v < 2 ? 2 : v; /* libpq: "insist on at least two seconds" */
}

int64_t noodle__pg_host_budget_end(int64_t now, int64_t deadline, const char *connect_timeout,
                                   size_t hosts_left) {
    long seconds = connect_timeout_seconds(connect_timeout);
    int64_t budget;
    if (seconds > 0) {
        budget = NOODLE_SEC(seconds); /* seconds fits an int: no overflow */
    } else {
        if (deadline == NOODLE_NO_DEADLINE) return NOODLE_NO_DEADLINE;
        budget = deadline > now ? (deadline - now) / (int64_t)(hosts_left > 0 ? hosts_left : 1) : 0;
    }
    int64_t end = now > 0 && budget > INT64_MAX - now ? INT64_MAX : now + budget;
    return end < deadline ? end : deadline;
}

/* ---- name resolution off the caller's thread --------------------------------
 *
 * libpq resolves host names with a blocking getaddrinfo inside
 * PQconnectStartParams / PQconnectPoll, which no deadline can interrupt. So
 * connect resolves every host name itself, each on a detached thread, and
 * waits for the answer with poll on a pipe, bounded by the host's budget;
 * libpq then gets the numeric address as hostaddr next to the name in host
 * (which SSL verification, Kerberos and .pgpass keep using). A resolver
 * still running when connect gives up finishes on its own and frees its
 * share: the batch is reference-counted. */

static _Atomic(noodle__pg_resolver_fn) resolver_hook = NULL;

void noodle__pg_set_resolver(noodle__pg_resolver_fn fn) {
    atomic_store(&resolver_hook, fn);
}

typedef struct resolve_batch resolve_batch;

typedef struct resolve_job {
    resolve_batch *batch;
    char *name;           /* owned; read-only once the thread runs */
    bool done;            /* under batch->mu, like rc and res */
    int rc;               /* getaddrinfo's result */
    struct addrinfo *res; /* owned by the batch */
} resolve_job;

struct resolve_batch {
    pthread_mutex_t mu;
    int refs;                  /* the connecting thread + each running resolver */
    int wake[2];               /* pipe, both ends non-blocking: a byte per finished job */
    noodle__pg_resolver_fn fn; /* read-only */
    size_t njobs;
    resolve_job *jobs;
};

static void batch_free(resolve_batch *b) {
    for (size_t i = 0; i < b->njobs; i++) {
        free(b->jobs[i].name);
        if (b->jobs[i].res != NULL) freeaddrinfo(b->jobs[i].res);
    }
    close(b->wake[0]);
    close(b->wake[1]);
    pthread_mutex_destroy(&b->mu);
    free(b->jobs);
    free(b);
}

static void batch_release(resolve_batch *b) {
    bool last;
    if (b == NULL) return;
    pthread_mutex_lock(&b->mu);
    last = --b->refs == 0;
    pthread_mutex_unlock(&b->mu);
    if (last) batch_free(b);
}

/* A batch for up to n jobs, or NULL (then libpq resolves, blocking). */
static resolve_batch *batch_new(size_t n) {
    resolve_batch *b = calloc(1, sizeof *b);
    if (b == NULL) return NULL;
    b->jobs = calloc(n, sizeof *b->jobs);
    if (b->jobs == NULL || pipe2(b->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        free(b->jobs);
        free(b);
        return NULL;
    }
    if (pthread_mutex_init(&b->mu, NULL) != 0) {
        close(b->wake[0]);
        close(b->wake[1]);
        free(b->jobs);
        free(b);
        return NULL;
    }
    b->refs = 1;
    b->fn = atomic_load(&resolver_hook);
    if (b->fn == NULL) b->fn = getaddrinfo;
    return b;
}

static void *resolve_main(void *arg) {
    resolve_job *j = arg;
    resolve_batch *b = j->batch;
    struct addrinfo hints, *res = NULL;
    bool last;
    /* libpq's hints for a host name. */
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = b->fn(j->name, NULL, &hints, &res);
    pthread_mutex_lock(&b->mu);
    j->rc = rc;
    j->res = rc == 0 ? res : NULL;
    j->done = true;
    ssize_t w = write(b->wake[1], "", 1); /* full pipe: the waiter is awake anyway */
    (void)w;
    last = --b->refs == 0;
    pthread_mutex_unlock(&b->mu);
    if (last) batch_free(b);
    return NULL;
}

/* Start resolving name on a detached thread. NULL when no thread could be
 * started (then libpq resolves it, blocking). */
static resolve_job *batch_start(resolve_batch *b, const char *name) {
    resolve_job *j = &b->jobs[b->njobs];
    pthread_attr_t attr;
    pthread_t t;
    sigset_t all, old;
    int rc;

    j->batch = b;
    j->name = strdup(name);
    if (j->name == NULL) return NULL;
    b->njobs++;
    if (pthread_attr_init(&attr) != 0) return NULL;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&b->mu);
    b->refs++;
    pthread_mutex_unlock(&b->mu);
    /* The resolver takes no signals: they belong to the application. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&t, &attr, resolve_main, j);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_lock(&b->mu);
        b->refs--; /* the connecting thread still holds one */
        pthread_mutex_unlock(&b->mu);
        return NULL;
    }
    return j;
}

/* True when name is a literal IPv4 or IPv6 address (no lookup involved). */
static bool is_numeric_host(const char *name) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(name, NULL, &hints, &res) != 0) return false;
    freeaddrinfo(res);
    return true;
}

/* ---- connect targets ---------------------------------------------------------- */

typedef enum target_state {
    TARGET_READY,     /* nothing to resolve: numeric, socket, hostaddr given or left to libpq */
    TARGET_RESOLVING, /* a resolver runs (job) */
    TARGET_RESOLVED,  /* addrs holds its numeric addresses */
    TARGET_FAILED,    /* the name did not resolve (gai_rc) */
} target_state;

/* One host of the conninfo's host list. */
typedef struct pg_target {
    const char *host; /* "" when not given; into the plan's split copies */
    const char *hostaddr;
    const char *port;
    target_state state;
    resolve_job *job;
    int gai_rc;
    char **addrs; /* owned */
    size_t naddrs;
} pg_target;

/* One host entry handed to libpq (a target, or one address of it). */
typedef struct pg_slot {
    size_t target;
    const char *host, *hostaddr, *port;
} pg_slot;

/* Everything connect derives from the URL. */
typedef struct connect_plan {
    const char *url;
    const char **keys; /* base options, with room for host, hostaddr, port, NULL */
    const char **vals;
    size_t nbase;
    PQconninfoOption *opts;     /* the parsed url, or NULL */
    PQconninfoOption *defaults; /* PQconndefaults(), or NULL */
    char *lists[3];             /* split copies of host, hostaddr, port */
    const char *connect_timeout;
    pg_target *targets;
    size_t ntargets;
    resolve_batch *batch; /* NULL when nothing is resolved here */
} connect_plan;

static const char *option_value(const PQconninfoOption *opts, const char *key) {
    if (opts == NULL) return NULL;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, key) == 0) return o->val;
    return NULL;
}

static size_t count_elements(const char *s) {
    size_t n = 1;
    for (; *s != '\0'; s++)
        if (*s == ',') n++;
    return n;
}

/* Split a copy of s at its commas (libpq's rule: no quoting) into out[0..n). */
static char *split_elements(const char *s, const char **out, size_t n) {
    char *copy = strdup(s);
    size_t i = 0;
    if (copy == NULL) return NULL;
    out[i++] = copy;
    for (char *p = copy; *p != '\0' && i < n; p++) {
        if (*p == ',') {
            *p = '\0';
            out[i++] = p + 1;
        }
    }
    return copy;
}

static void plan_free(connect_plan *pl) {
    for (size_t i = 0; i < pl->ntargets; i++) {
        for (size_t a = 0; a < pl->targets[i].naddrs; a++) free(pl->targets[i].addrs[a]);
        free(pl->targets[i].addrs);
    }
    free(pl->targets);
    batch_release(pl->batch);
    for (size_t i = 0; i < 3; i++) free(pl->lists[i]);
    if (pl->opts != NULL) PQconninfoFree(pl->opts);
    if (pl->defaults != NULL) PQconninfoFree(pl->defaults);
    free(pl->keys);
    free(pl->vals);
    memset(pl, 0, sizeof *pl);
}

/* Copy a libpq message that may quote the URL into buf: secrets masked,
 * then line breaks folded. */
static void clean_message(const char *msg, const char *url, char *buf, size_t size) {
    char scrubbed[2048];
    noodle__scrub_secrets(msg != NULL ? msg : "", url, scrubbed, sizeof scrubbed);
    tidy_lines(scrubbed, true, buf, size);
}

/* Split the host, hostaddr and port lists into targets. Lists that do not
 * line up (libpq will say so) or hosts that come from a service file stay
 * whole: one target, libpq walks them itself. */
static int plan_targets(connect_plan *pl, const char *host, const char *hostaddr,
                        const char *port) {
    size_t n = 1, nport = port != NULL && port[0] != '\0' ? count_elements(port) : 0;
    bool has_host = host != NULL && host[0] != '\0';
    bool has_addr = hostaddr != NULL && hostaddr[0] != '\0';
    const char **hosts = NULL, **addrs = NULL, **ports = NULL;

    if (has_addr)
        n = count_elements(hostaddr);
    else if (has_host)
        n = count_elements(host);
    bool whole = (has_host && has_addr && count_elements(host) != n) ||
                 (nport > 1 && nport != n);
    if (whole) n = 1;

    pl->targets = calloc(n, sizeof *pl->targets);
    hosts = calloc(n, sizeof *hosts);
    addrs = calloc(n, sizeof *addrs);
    ports = calloc(n, sizeof *ports);
    if (pl->targets == NULL || hosts == NULL || addrs == NULL || ports == NULL) goto oom;
    pl->ntargets = n;
    for (size_t i = 0; i < n; i++) hosts[i] = addrs[i] = ports[i] = "";
    if (whole) {
        hosts[0] = has_host ? host : "";
        addrs[0] = has_addr ? hostaddr : "";
        ports[0] = port != NULL ? port : "";
    } else {
        if (has_host && (pl->lists[0] = split_elements(host, hosts, n)) == NULL) goto oom;
        if (has_addr && (pl->lists[1] = split_elements(hostaddr, addrs, n)) == NULL) goto oom;
        if (nport > 0 && (pl->lists[2] = split_elements(port, ports, nport)) == NULL) goto oom;
        if (nport == 1)
            for (size_t i = 1; i < n; i++) ports[i] = ports[0];
    }

    for (size_t i = 0; i < n; i++) {
        pg_target *t = &pl->targets[i];
        t->host = hosts[i];
        t->hostaddr = addrs[i];
        t->port = ports[i];
        t->state = TARGET_READY;
        /* A name to look up: not a socket directory (/path or @abstract),
         * not a literal address, and no hostaddr to use instead. */
        if (whole || t->hostaddr[0] != '\0' || t->host[0] == '\0' || t->host[0] == '/' ||
            t->host[0] == '@' || is_numeric_host(t->host))
            continue;
        if (pl->batch == NULL && (pl->batch = batch_new(n)) == NULL) continue;
        t->job = batch_start(pl->batch, t->host);
        if (t->job != NULL) t->state = TARGET_RESOLVING;
    }
    free(hosts);
    free(addrs);
    free(ports);
    return 0;

oom:
    free(hosts);
    free(addrs);
    free(ports);
    return -1;
}

/* Build the plan: the options to pass to libpq and the targets. Our defaults
 * come first and the URL's options after them (libpq: the last value of a
 * keyword wins). */
static int plan_build(connect_plan *pl, const char *url, const char *application_name,
                      noodle_error *err) {
    size_t nopts = 0, k = 0;
    const char *host, *hostaddr, *port, *service;
    char msg[400];

    memset(pl, 0, sizeof *pl);
    pl->url = url;
    if (is_connection_string(url)) {
        char *perr = NULL;
        pl->opts = PQconninfoParse(url, &perr);
        if (pl->opts == NULL) {
            /* libpq quotes the offending part, which may be the password. */
            clean_message(perr != NULL ? perr : "out of memory", url, msg, sizeof msg);
            PQfreemem(perr);
            return NOODLE_ERR(err, NOODLE_E_CONNECT_FAILED, "connect failed: %s", msg);
        }
        for (const PQconninfoOption *o = pl->opts; o->keyword != NULL; o++) nopts++;
    }

    pl->keys = calloc(nopts + 12, sizeof *pl->keys);
    pl->vals = calloc(nopts + 12, sizeof *pl->vals);
    if (pl->keys == NULL || pl->vals == NULL) goto oom;
#define ADD(key, val) (pl->keys[k] = (key), pl->vals[k++] = (val))
    ADD("keepalives", "1");
    ADD("keepalives_idle", "10");
    ADD("keepalives_interval", "3");
    ADD("keepalives_count", "3");
    ADD("tcp_user_timeout", "10000");
    if (application_name != NULL && application_name[0] != '\0')
        ADD("application_name", application_name);
    if (pl->opts != NULL) {
        for (const PQconninfoOption *o = pl->opts; o->keyword != NULL; o++) {
            if (o->val == NULL || o->val[0] == '\0' || strcmp(o->keyword, "host") == 0 ||
                strcmp(o->keyword, "hostaddr") == 0 || strcmp(o->keyword, "port") == 0)
                continue;
            ADD(o->keyword, o->val);
        }
    } else if (url[0] != '\0') {
        ADD("dbname", url); /* a bare database name */
    }
#undef ADD
    pl->nbase = k;

    /* What the URL leaves out comes from the environment (PGHOST, ...) or
     * PGSERVICE's service file, as libpq would take it; a service named in
     * the URL itself is left to libpq. */
    host = option_value(pl->opts, "host");
    hostaddr = option_value(pl->opts, "hostaddr");
    port = option_value(pl->opts, "port");
    pl->connect_timeout = option_value(pl->opts, "connect_timeout");
    service = option_value(pl->opts, "service");
    if (service == NULL &&
        (host == NULL || hostaddr == NULL || port == NULL || pl->connect_timeout == NULL)) {
        pl->defaults = PQconndefaults();
        if (host == NULL) host = option_value(pl->defaults, "host");
        if (hostaddr == NULL) hostaddr = option_value(pl->defaults, "hostaddr");
        if (port == NULL) port = option_value(pl->defaults, "port");
        if (pl->connect_timeout == NULL)
            pl->connect_timeout = option_value(pl->defaults, "connect_timeout");
    }
    if (plan_targets(pl, host, hostaddr, port) != 0) goto oom;
    return 0;

oom:
    plan_free(pl);
    return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "connect: out of memory");
}

/* Take t's finished resolution (state RESOLVED or FAILED); false while it
 * still runs. */
static bool take_resolution(connect_plan *pl, pg_target *t) {
    resolve_job *j = t->job;
    bool done;
    if (t->state != TARGET_RESOLVING) return true;
    pthread_mutex_lock(&pl->batch->mu);
    done = j->done;
    if (done) {
        t->gai_rc = j->rc;
        t->state = TARGET_FAILED;
        if (j->rc == 0) {
            size_t n = 0;
            for (struct addrinfo *a = j->res; a != NULL; a = a->ai_next) n++;
            t->addrs = calloc(n > 0 ? n : 1, sizeof *t->addrs);
            for (struct addrinfo *a = j->res; a != NULL && t->addrs != NULL; a = a->ai_next) {
                char buf[NI_MAXHOST];
                bool seen = false;
                if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
                if (getnameinfo(a->ai_addr, a->ai_addrlen, buf, sizeof buf, NULL, 0,
                                NI_NUMERICHOST) != 0)
                    continue;
                for (size_t i = 0; i < t->naddrs && !seen; i++)
                    seen = strcmp(t->addrs[i], buf) == 0;
                if (!seen && (t->addrs[t->naddrs] = strdup(buf)) != NULL) t->naddrs++;
            }
            if (t->naddrs > 0)
                t->state = TARGET_RESOLVED;
            else
                t->gai_rc = t->addrs == NULL ? EAI_MEMORY : EAI_NONAME;
        }
    }
    pthread_mutex_unlock(&pl->batch->mu);
    return done;
}

/* Wait until t's name is resolved or until passes: 1 resolved (or failed),
 * 0 at until, -1 when poll fails. */
static int wait_resolution(connect_plan *pl, const noodle_clock *clock, pg_target *t,
                           int64_t until) {
    for (;;) {
        char drain[64];
        while (read(pl->batch->wake[0], drain, sizeof drain) > 0) {
        }
        if (take_resolution(pl, t)) return 1;
        int ready = wait_fd(clock, pl->batch->wake[0], POLLIN, until);
        if (ready <= 0) return ready;
    }
}

/* ---- the connect loop ----------------------------------------------------------- */

/* The failures met so far, one per line, as libpq writes them. */
typedef struct connect_log {
    char text[2048];
    size_t len;
    bool any;
    bool timeouts_only; /* every failure was a time budget running out */
} connect_log;

static void log_add(connect_log *log, bool timeout, const char *fmt, ...) NOODLE_PRINTF(3, 4);

static void log_add(connect_log *log, bool timeout, const char *fmt, ...) {
    va_list ap;
    if (!log->any) log->timeouts_only = true;
    log->any = true;
    if (!timeout) log->timeouts_only = false;
    if (log->len + 2 >= sizeof log->text) return;
    if (log->len > 0) log->text[log->len++] = '\n';
    va_start(ap, fmt);
    int n = vsnprintf(log->text + log->len, sizeof log->text - log->len, fmt, ap);
    va_end(ap);
    if (n > 0) log->len += (size_t)n;
    if (log->len >= sizeof log->text) log->len = sizeof log->text - 1;
}

static size_t trim_end(const char *m, size_t len) {
    while (len > 0 && (m[len - 1] == '\n' || m[len - 1] == ' ' || m[len - 1] == '\t')) len--;
    return len;
}

/* libpq's own messages so far (the hosts it gave up in this attempt). The
 * host it is still working on may have left a bare "connection to server at
 * ... failed:" line, without a reason yet: that line is dropped. */
static void log_libpq(connect_log *log, PGconn *conn) {
    static const char bare[] = "failed:";
    char buf[1024];
    const char *m = PQerrorMessage(conn);
    size_t len = trim_end(m, m != NULL ? strlen(m) : 0);
    if (len >= sizeof bare - 1 && memcmp(m + len - (sizeof bare - 1), bare, sizeof bare - 1) == 0) {
        while (len > 0 && m[len - 1] != '\n') len--;
        len = trim_end(m, len);
    }
    if (len == 0) return;
    if (len >= sizeof buf) len = sizeof buf - 1;
    memcpy(buf, m, len);
    buf[len] = '\0';
    log_add(log, false, "%s", buf);
}

/* "connection to server at "db1" (10.0.0.1), port 5432" for a slot. */
static void describe_slot(const pg_slot *s, char *buf, size_t size) {
    const char *name = s->host[0] != '\0' ? s->host : s->hostaddr;
    int n = snprintf(buf, size, "connection to server at \"%s\"",
                     name[0] != '\0' ? name : "(default)");
    if (n > 0 && (size_t)n < size && s->host[0] != '\0' && s->hostaddr[0] != '\0')
        n += snprintf(buf + n, size - (size_t)n, " (%s)", s->hostaddr);
    if (n > 0 && (size_t)n < size && s->port[0] != '\0')
        snprintf(buf + n, size - (size_t)n, ", port %s", s->port);
}

static bool slot_matches(const pg_slot *s, const char *host, const char *port) {
    const char *want = s->host[0] != '\0' ? s->host : s->hostaddr;
    if (want[0] != '\0' && (host == NULL || strcmp(want, host) != 0)) return false;
    if (s->port[0] != '\0' && (port == NULL || strcmp(s->port, port) != 0)) return false;
    return true;
}

/* Which slot libpq is on. PQhost / PQport return each host entry's own
 * string, so a change of pointer means libpq moved on (even between equal
 * entries); the values say where to, searching forwards first. */
typedef struct slot_tracker {
    const char *host, *port;
    size_t slot;
    bool known;
} slot_tracker;

static size_t locate_slot(slot_tracker *tr, const pg_slot *slots, size_t n, PGconn *conn) {
    const char *host = PQhost(conn), *port = PQport(conn);
    size_t from, found = n;
    if (tr->known && host == tr->host && port == tr->port) return tr->slot;
    from = tr->known ? tr->slot + 1 : 0;
    for (size_t s = from; s < n && found == n; s++)
        if (slot_matches(&slots[s], host, port)) found = s;
    for (size_t s = 0; s < from && s < n && found == n; s++)
        if (slot_matches(&slots[s], host, port)) found = s;
    if (found < n) tr->slot = found;
    tr->host = host;
    tr->port = port;
    tr->known = true;
    return tr->slot;
}

/* Comma-joined field of the slots (0 host, 1 hostaddr, 2 port), or NULL when
 * out of memory; *any tells whether some element is not empty. */
static char *join_slots(const pg_slot *slots, size_t n, int field, bool *any) {
    size_t len = 0;
    char *out, *p;
    *any = false;
    for (size_t i = 0; i < n; i++) {
        const char *v = field == 0 ? slots[i].host : field == 1 ? slots[i].hostaddr : slots[i].port;
        len += strlen(v) + 1;
        if (v[0] != '\0') *any = true;
    }
    p = out = malloc(len + 1);
    if (out == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *v = field == 0 ? slots[i].host : field == 1 ? slots[i].hostaddr : slots[i].port;
        size_t l = strlen(v);
        if (i > 0) *p++ = ',';
        memcpy(p, v, l);
        p += l;
    }
    *p = '\0';
    return out;
}

typedef enum attempt_result {
    ATTEMPT_CONNECTED,
    ATTEMPT_NEXT,  /* go on with target *next */
    ATTEMPT_STOP,  /* libpq gave up for good (or the deadline passed) */
    ATTEMPT_ERROR, /* err is set */
} attempt_result;

typedef struct connect_state {
    connect_plan *pl;
    const noodle_clock *clock;
    int64_t deadline;
    connect_log log;
    bool auth_failed;
    bool deadline_passed;
    int error; /* the code of an ATTEMPT_ERROR */
} connect_state;

/* One PQconnectStartParams + PQconnectPoll run over targets [first, end),
 * libpq moving from host to host by itself as it would (refused, standby
 * for target_session_attrs, ...). The host libpq is on gets until host_end;
 * when that passes first, the attempt is dropped and *next names the host
 * after it. */
static attempt_result connect_attempt(connect_state *cs, size_t first, size_t end,
                                      int64_t host_start, int64_t host_end, PGconn **out,
                                      size_t *next, noodle_error *err) {
    connect_plan *pl = cs->pl;
    pg_slot *slots = NULL;
    char *lists[3] = {NULL, NULL, NULL};
    size_t nslots = 0, k = pl->nbase, target = first;
    slot_tracker tr = {NULL, NULL, 0, false};
    PGconn *conn = NULL;
    attempt_result result = ATTEMPT_STOP;
    char where[600];

    for (size_t i = first; i < end; i++)
        nslots += pl->targets[i].state == TARGET_RESOLVED ? pl->targets[i].naddrs : 1;
    slots = calloc(nslots, sizeof *slots);
    if (slots == NULL) goto oom;
    nslots = 0;
    for (size_t i = first; i < end; i++) {
        const pg_target *t = &pl->targets[i];
        size_t n = t->state == TARGET_RESOLVED ? t->naddrs : 1;
        for (size_t a = 0; a < n; a++)
            slots[nslots++] = (pg_slot){i, t->host,
                                        t->state == TARGET_RESOLVED ? t->addrs[a] : t->hostaddr,
                                        t->port};
    }
    static const char *const names[3] = {"host", "hostaddr", "port"};
    for (int f = 0; f < 3; f++) {
        bool any;
        if ((lists[f] = join_slots(slots, nslots, f, &any)) == NULL) goto oom;
        if (any) pl->keys[k] = names[f], pl->vals[k++] = lists[f];
    }
    pl->keys[k] = NULL;
    pl->vals[k] = NULL;

    conn = PQconnectStartParams(pl->keys, pl->vals, 0);
    if (conn == NULL) goto oom;
    PQsetNoticeProcessor(conn, quiet_notice, NULL);
    bool started = PQstatus(conn) != CONNECTION_BAD;
    PostgresPollingStatusType st = started ? PGRES_POLLING_WRITING : PGRES_POLLING_FAILED;

    /* Drive the state machine. After PQconnectStart, act as if PQconnectPoll
     * had answered WRITING. The socket changes as libpq moves from host to
     * host, so read it again on every turn. */
    for (;;) {
        if (st == PGRES_POLLING_OK) {
            *out = conn;
            conn = NULL;
            result = ATTEMPT_CONNECTED;
            break;
        }
        size_t s = started ? locate_slot(&tr, slots, nslots, conn) : 0;
        if (slots[s].target != target) { /* libpq moved on: a new budget */
            target = slots[s].target;
            host_start = noodle_clock_now(cs->clock);
            host_end = noodle__pg_host_budget_end(host_start, cs->deadline, pl->connect_timeout,
                                                  pl->ntargets - target);
        }
        if (st == PGRES_POLLING_FAILED) {
            log_libpq(&cs->log, conn);
            /* libpq stops at an authentication failure, as it stops when a
             * server answers with an error; it goes on when it ran out of
             * hosts to try -- then so do we, with the hosts still being
             * resolved when the attempt began. */
            if (noodle__pg_is_auth_failure(PQerrorMessage(conn))) {
                cs->auth_failed = true;
            } else if (started && s + 1 == nslots && end < pl->ntargets) {
                *next = end;
                result = ATTEMPT_NEXT;
            }
            break;
        }
        int64_t until = host_end < cs->deadline ? host_end : cs->deadline;
        int ready = wait_fd(cs->clock, PQsocket(conn),
                            st == PGRES_POLLING_READING ? POLLIN : POLLOUT, until);
        if (ready == 0) {
            log_libpq(&cs->log, conn);
            describe_slot(&slots[s], where, sizeof where);
            if (noodle__poll_timeout_ms(cs->clock, cs->deadline) == 0) {
                log_add(&cs->log, true, "%s failed: no answer before the deadline", where);
                cs->deadline_passed = true;
            } else {
                log_add(&cs->log, true, "%s failed: timeout expired after %lld ms", where,
                        (long long)((until - host_start) / 1000000));
                *next = target + 1;
                result = target + 1 < pl->ntargets ? ATTEMPT_NEXT : ATTEMPT_STOP;
            }
            break;
        }
        if (ready < 0) {
            int e = errno;
            cs->error =
                NOODLE_ERR(err, NOODLE_E_CONNECT_FAILED, "connect failed: poll: %s", strerror(e));
            result = ATTEMPT_ERROR;
            break;
        }
        st = PQconnectPoll(conn);
    }
    if (conn != NULL) PQfinish(conn);
    for (int f = 0; f < 3; f++) free(lists[f]);
    free(slots);
    return result;

oom:
    for (int f = 0; f < 3; f++) free(lists[f]);
    free(slots);
    cs->error = NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "connect: out of memory");
    return ATTEMPT_ERROR;
}

/* Connect to the first host that takes us, each host with its own time
 * budget (see noodle__pg_host_budget_end), everything by the deadline. */
static int connect_hosts(connect_plan *pl, const noodle_clock *clock, int64_t deadline,
                         PGconn **out, noodle_error *err) {
    connect_state cs;
    size_t cur = 0;
    char msg[2048];

    memset(&cs, 0, sizeof cs);
    cs.pl = pl;
    cs.clock = clock;
    cs.deadline = deadline;
    *out = NULL;
    while (cur < pl->ntargets) {
        pg_target *t = &pl->targets[cur];
        if (noodle__poll_timeout_ms(clock, deadline) == 0) {
            cs.deadline_passed = true;
            break;
        }
        int64_t start = noodle_clock_now(clock);
        int64_t host_end =
            noodle__pg_host_budget_end(start, deadline, pl->connect_timeout, pl->ntargets - cur);
        if (t->state == TARGET_RESOLVING) {
            int w = wait_resolution(pl, clock, t, host_end);
            if (w < 0) {
                int e = errno;
                return NOODLE_ERR(err, NOODLE_E_CONNECT_FAILED, "connect failed: poll: %s",
                                  strerror(e));
            }
            if (w == 0) {
                if (noodle__poll_timeout_ms(clock, deadline) == 0) {
                    log_add(&cs.log, true,
                            "could not translate host name \"%s\" to address: no answer before "
                            "the deadline",
                            t->host);
                    cs.deadline_passed = true;
                    break;
                }
                log_add(&cs.log, true,
                        "could not translate host name \"%s\" to address: no answer within %lld "
                        "ms",
                        t->host, (long long)((host_end - start) / 1000000));
                cur++;
                continue;
            }
        }
        if (t->state == TARGET_FAILED) {
            log_add(&cs.log, false, "could not translate host name \"%s\" to address: %s", t->host,
                    gai_strerror(t->gai_rc));
            cur++;
            continue;
        }
        /* This host and the following ones that need no waiting go to libpq
         * together, so that it walks them as it would on its own. */
        size_t end = cur + 1;
        while (end < pl->ntargets && take_resolution(pl, &pl->targets[end]) &&
               pl->targets[end].state != TARGET_FAILED)
            end++;
        size_t next = pl->ntargets;
        attempt_result r = connect_attempt(&cs, cur, end, start, host_end, out, &next, err);
        if (r == ATTEMPT_CONNECTED) return 0;
        if (r == ATTEMPT_ERROR) return cs.error;
        if (r == ATTEMPT_STOP) break;
        cur = next;
    }

    clean_message(cs.log.any ? cs.log.text : "", pl->url, msg, sizeof msg);
    if (cs.deadline_passed)
        return NOODLE_ERR(err, NOODLE_E_CONNECT_TIMEOUT,
                          "connect did not complete before the deadline%s%s",
                          msg[0] != '\0' ? ": " : "", msg);
    if (msg[0] == '\0') noodle__strlcpy(msg, "no message from libpq", sizeof msg);
    int code = cs.auth_failed      ? NOODLE_E_AUTH_FAILED
               : cs.log.timeouts_only && cs.log.any ? NOODLE_E_CONNECT_TIMEOUT
                                                     : NOODLE_E_CONNECT_FAILED;
    return NOODLE_ERR(err, code, "connect failed: %s", msg);
}

static int pg_connect(const noodle_connect_params *p, void **handle, noodle_error *err) {
    connect_plan plan;
    pg_handle *h = NULL;
    PGconn *conn = NULL;
    char msg[400];
    int rc;

    *handle = NULL;
    if (p == NULL)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT, "connect: no parameters");
    const char *url = p->url != NULL ? p->url : "";
    if ((rc = plan_build(&plan, url, p->application_name, err)) != 0) return rc;
    rc = connect_hosts(&plan, p->clock, p->deadline, &conn, err);
    plan_free(&plan);
    if (rc != 0) return rc;

    if (PQsetnonblocking(conn, 1) != 0) {
        clean_message(PQerrorMessage(conn), url, msg, sizeof msg);
        PQfinish(conn);
        return NOODLE_ERR(err, NOODLE_E_CONNECT_FAILED, "connect failed: non-blocking mode: %s",
                          msg);
    }
    h = calloc(1, sizeof *h);
    if (h == NULL) {
        PQfinish(conn);
        return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "connect: out of memory");
    }
    if (cache_open(&h->cache) != 0) {
        free(h);
        PQfinish(conn);
        return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "connect: out of memory");
    }
    h->clock = p->clock;
    h->conn = conn;
    *handle = h;
    return 0;
}

static void pg_close(void *handle) {
    pg_handle *h = handle;
    if (h == NULL) return;
    /* the session's end deallocates its statements: nothing to send */
    if (h->conn != NULL) PQfinish(h->conn); /* non-blocking: never waits */
    cache_close(&h->cache);
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

/* ======================================================================== */
/* execute through the statement cache                                       */
/* ======================================================================== */

/* DEALLOCATE the pending statements, all in one round trip (the simple
 * protocol takes several statements). Called outside a transaction only, so
 * that a failure cannot abort the caller's transaction; a failure that
 * leaves the connection up is ignored (at worst a statement lives on until
 * the session ends). Fails only when the connection is lost. */
static int flush_pending(pg_handle *h, int64_t deadline, noodle_error *err) {
    pg_stmt_cache *c = &h->cache;
    static const char verb[] = "DEALLOCATE ";
    char sql[PG_PENDING_MAX * (sizeof verb + 32)], name[32];
    size_t o = 0;
    for (size_t i = 0; i < c->npending; i++) { /* "DEALLOCATE noodle_<id>;" each */
        stmt_name(c->pending[i], name, sizeof name);
        size_t n = strlen(name);
        memcpy(sql + o, verb, sizeof verb - 1);
        memcpy(sql + o + sizeof verb - 1, name, n);
        o += sizeof verb - 1 + n;
        sql[o++] = ';';
    }
    sql[o] = '\0';
    c->npending = 0;
    const pg_command cmd = {.send = PG_SEND_SIMPLE, .sql = sql};
    PGresult *res = NULL;
    noodle_error local;
    int rc = run(h, "execute: deallocating evicted statements", &cmd, deadline, &res, &local);
    PQclear(res);
    if (rc == 0 || h->conn != NULL) return 0;
    if (err != NULL) *err = local;
    return rc;
}

/* Run sql (translated) with the converted parameters as a cached named
 * statement: prepared on the first use (a miss), then run by name (a hit).
 * *res as for run(). */
static int execute_cached(pg_handle *h, const char *sql, int nparams, const pg_params *pp,
                          int64_t deadline, PGresult **res, noodle_error *err) {
    pg_stmt_cache *c = &h->cache;
    const size_t len = strlen(sql);
    const uint64_t hash = stmt_hash(sql, len, nparams, pp->types);
    char name[32];
    const pg_command exec = {.send = PG_SEND_PREPARED,
                             .name = name,
                             .nparams = nparams,
                             .values = pp->values,
                             .lengths = pp->lengths,
                             .formats = pp->formats};
    int rc;

    pg_stmt *s = stmt_find(c, sql, len, hash, nparams, pp->types);
    if (s != NULL) {
        c->hits++;
        stmt_name(s->id, name, sizeof name);
        rc = run(h, "execute", &exec, deadline, res, err);
        if (rc == 0 || h->stale == PG_STALE_NO) return rc;
        /* Out of date (a table it reads changed type, or it was deallocated
         * behind our back): forget it. The error came from Bind, before
         * anything ran; outside a transaction block nothing is left open
         * either, so preparing it again and running it once more is safe.
         * Inside one, the transaction is aborted now: report the error. */
        stmt_drop(c, s, h->stale == PG_STALE_RESULT_TYPE);
        if (h->conn == NULL || PQtransactionStatus(h->conn) != PQTRANS_IDLE) return rc;
    }

    c->misses++;
    if (c->npending >= NOODLE_PG_DEALLOCATE_BATCH && PQtransactionStatus(h->conn) == PQTRANS_IDLE &&
        noodle__poll_timeout_ms(h->clock, deadline) != 0 &&
        (rc = flush_pending(h, deadline, err)) != 0)
        return rc;
    /* Nowhere to put what a new entry would evict (a long transaction
     * kept the list from being flushed), or no memory: run it unnamed. */
    if ((c->lru.size >= c->lru.cap && c->npending == PG_PENDING_MAX) ||
        (s = stmt_new(sql, len, hash, nparams, pp->types)) == NULL) {
        const pg_command once = {.send = PG_SEND_PARAMS,
                                 .sql = sql,
                                 .nparams = nparams,
                                 .types = pp->types,
                                 .values = pp->values,
                                 .lengths = pp->lengths,
                                 .formats = pp->formats};
        return run(h, "execute", &once, deadline, res, err);
    }
    s->id = ++c->next_id;
    stmt_name(s->id, name, sizeof name);
    const pg_command prepare = {.send = PG_SEND_PREPARE,
                                .name = name,
                                .sql = sql,
                                .nparams = nparams,
                                .types = pp->types};
    PGresult *prepared = NULL;
    rc = run(h, "execute", &prepare, deadline, &prepared, err);
    PQclear(prepared);
    if (rc != 0) { /* a statement that failed to prepare is not cached */
        free(s);
        return rc;
    }
    stmt_add(c, s);
    return run(h, "execute", &exec, deadline, res, err);
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
    /* The server reports the setting (GUC_REPORT) whenever it changes, SET
     * included; a server that never did is taken as the default, on. */
    const char *scs = PQparameterStatus(h->conn, "standard_conforming_strings");
    bool standard_strings = scs == NULL || strcmp(scs, "off") != 0;
    if (noodle__pg_translate_placeholders(sql, standard_strings, &translated, &nplaceholders) != 0)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "execute: out of memory");
    if (nplaceholders != nparams) {
        rc = NOODLE_ERR(err, NOODLE_E_QUERY_PARAM_COUNT,
                        "execute: the statement has %zu placeholders but %zu parameters were "
                        "bound",
                        nplaceholders, nparams);
        goto fail_translated;
    }
    if ((rc = convert_params(params, nparams, &pp, err)) != 0) goto fail_translated;
    if (h->cache.on) {
        rc = execute_cached(h, translated, (int)nparams, &pp, deadline, &res, err);
    } else {
        const pg_command cmd = {.send = PG_SEND_PARAMS,
                                .sql = translated,
                                .nparams = (int)nparams,
                                .types = pp.types,
                                .values = pp.values,
                                .lengths = pp.lengths,
                                .formats = pp.formats};
        rc = run(h, "execute", &cmd, deadline, &res, err);
    }
    free(pp.block);
    if (rc != 0) goto fail_translated;
    /* The session dropped every prepared statement, ours included. */
    const char *tag = PQcmdStatus(res);
    if (h->cache.on && (strcmp(tag, "DISCARD ALL") == 0 || strcmp(tag, "DEALLOCATE ALL") == 0))
        stmt_forget_all(&h->cache);
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

/* SAVEPOINT "name" and friends; name is checked, then double-quoted (put
 * together from the fixed verb and the validated name, no formatting:
 * STD-PARAM). */
static int savepoint_command(void *handle, const char *what, const char *verb, const char *name,
                             int64_t deadline, noodle_error *err) {
    char sql[128];
    int rc;
    if (name == NULL || !noodle_identifier_valid(name))
        return NOODLE_ERR(err, NOODLE_E_QUERY_INVALID_SAVEPOINT,
                          "%s: invalid savepoint name \"%s\"", what,
                          name != NULL ? name : "(null)");
    if ((rc = need_txn_state(handle, what, true, err)) != 0) return rc;
    size_t v = strlen(verb), n = strlen(name); /* at most 21 and 63 */
    memcpy(sql, verb, v);
    memcpy(sql + v, " \"", 2);
    memcpy(sql + v + 2, name, n);
    memcpy(sql + v + 2 + n, "\"", 2);
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

/* A measured amount: -1 when NULL (unknown), 0 for a negative reading (two
 * clocks or LSNs read a moment apart: caught up). */
static int64_t cell_amount(PGresult *res, int row, int col) {
    if (row >= PQntuples(res) || col >= PQnfields(res) || PQgetisnull(res, row, col)) return -1;
    int64_t v = cell_int64(res, row, col);
    return v < 0 ? 0 : v;
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

static bool param_on(PGconn *conn, const char *name) {
    const char *v = PQparameterStatus(conn, name);
    return v != NULL && strcmp(v, "on") == 0;
}

/* The role. PostgreSQL 14 and later report in_hot_standby and
 * default_transaction_read_only to the client whenever they change
 * (promotion, a reload after ALTER SYSTEM); the values are current once the
 * server has answered a statement, so a trivial round trip -- which a probe
 * needs anyway to prove the server answers -- refreshes them. Older servers
 * are asked with a query. */
static int pg_role(void *handle, int64_t deadline, noodle_role *out, noodle_error *err) {
    PGresult *res = NULL;
    int rc;
    *out = NOODLE_ROLE_UNKNOWN;
    PGconn *conn = noodle__pg_conn(handle);
    if (conn != NULL && PQparameterStatus(conn, "in_hot_standby") != NULL) {
        rc = run_command(handle, "role probe", "SELECT 1", deadline, &res, err);
        if (rc != 0) return rc;
        PQclear(res);
        conn = noodle__pg_conn(handle);
        if (conn == NULL) /* cannot happen after a successful command; be safe */
            return NOODLE_ERR(err, NOODLE_E_CONNECTION_BROKEN, "role probe: connection closed");
        *out = role_of(param_on(conn, "in_hot_standby"),
                       param_on(conn, "default_transaction_read_only"));
        return 0;
    }
    rc = run_command(handle, "role query",
                     "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')",
                     deadline, &res, err);
    if (rc != 0) return rc;
    if ((rc = expect_row(res, "role query", 2, err)) == 0)
        *out = role_of(cell_true(res, 0, 0), cell_true(res, 0, 1));
    PQclear(res);
    return rc;
}

/* Run a fixed statement with one text parameter; *out as for run(). */
static int run_with_text(pg_handle *h, const char *what, const char *sql, const char *value,
                         int64_t deadline, PGresult **out, noodle_error *err) {
    const char *values[1] = {value};
    const pg_command cmd = {.send = PG_SEND_PARAMS, .sql = sql, .nparams = 1, .values = values};
    return run(h, what, &cmd, deadline, out, err);
}

static void cell_text(PGresult *res, int row, int col, char *dst, size_t size) {
    noodle__strlcpy(dst, PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col), size);
}

/* A primary's standbys (pg_stat_replication): the count, the first
 * NOODLE_STANDBYS_REPORTED of them, and the largest lag over all of them.
 * NULL stays unknown (replay_lag is NULL for a standby that has been idle
 * and caught up for a while). */
static int read_standbys(pg_handle *h, int64_t deadline, noodle_server_metrics *out,
                         noodle_error *err) {
    static const char sql[] =
        "SELECT coalesce(nullif(application_name, ''), host(client_addr), '[local]'), state,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8,"
        " (extract(epoch FROM replay_lag) * 1000)::int8"
        " FROM pg_catalog.pg_stat_replication ORDER BY pid";
    PGresult *res = NULL;
    int rc = run_command(h, "metrics: standbys", sql, deadline, &res, err);
    if (rc == 0 && (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) < 4))
        rc = NOODLE_ERR(err, NOODLE_E_BACKEND_INTERNAL, "metrics: standbys: unexpected reply");
    for (int i = 0; rc == 0 && i < PQntuples(res); i++) {
        int64_t lag = cell_amount(res, i, 2);
        if (lag > out->replication_lag_bytes) out->replication_lag_bytes = lag;
        if (i >= NOODLE_STANDBYS_REPORTED) continue;
        noodle_standby_status *sb = &out->standbys[i];
        cell_text(res, i, 0, sb->name, sizeof sb->name);
        cell_text(res, i, 1, sb->state, sizeof sb->state);
        sb->lag_bytes = lag;
        sb->replay_lag_ms = cell_amount(res, i, 3);
    }
    if (rc == 0) out->standby_count = PQntuples(res);
    PQclear(res);
    return rc;
}

/* WAL archiving (pg_stat_archiver), ages measured on the server's clock.
 * Only where an archiver runs -- archive_mode 'always', or 'on' outside
 * recovery -- are the counts read; elsewhere every field stays -1 (no
 * archiver), as the server's zeros would read as "nothing archived yet". */
static int read_archiver(pg_handle *h, int64_t deadline, noodle_server_metrics *out,
                         noodle_error *err) {
    static const char sql[] =
        "SELECT current_setting('archive_mode') = 'always'"
        " OR (current_setting('archive_mode') = 'on' AND NOT pg_is_in_recovery()),"
        " archived_count, failed_count,"
        " (extract(epoch FROM clock_timestamp() - last_archived_time) * 1000)::int8,"
        " (extract(epoch FROM clock_timestamp() - last_failed_time) * 1000)::int8"
        " FROM pg_catalog.pg_stat_archiver";
    PGresult *res = NULL;
    int rc = run_command(h, "metrics: archiver", sql, deadline, &res, err);
    if (rc == 0) rc = expect_row(res, "metrics: archiver", 5, err);
    if (rc == 0 && cell_true(res, 0, 0)) {
        out->archive_archived_count = cell_amount(res, 0, 1);
        out->archive_failed_count = cell_amount(res, 0, 2);
        out->archive_last_archived_age_ms = cell_amount(res, 0, 3); /* -1: never */
        out->archive_last_failed_age_ms = cell_amount(res, 0, 4);
    }
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
    static const char standby[] =
        "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::int8,"
        " (extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::int8";
    PGresult *res = NULL;
    bool in_recovery;
    int rc;

    noodle__metrics_unknown(out);
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

    if (!in_recovery) {
        rc = read_standbys(handle, deadline, out, err);
    } else if ((rc = run_command(handle, "metrics query", standby, deadline, &res, err)) == 0 &&
               (rc = expect_row(res, "metrics query", 2, err)) == 0) {
        /* Negative values (replay ahead of receive after archive recovery,
         * clock skew) mean "caught up"; NULL stays unknown. */
        out->replication_lag_bytes = cell_amount(res, 0, 0);
        out->replication_delay_ms = cell_amount(res, 0, 1);
    }
    if (rc == 0) rc = read_archiver(handle, deadline, out, err);

done:
    PQclear(res);
    return rc;
}

/* ======================================================================== */
/* integrity                                                                 */
/* ======================================================================== */

static bool err_has_sqlstate(const noodle_error *err, const char *state) {
    char want[16];
    snprintf(want, sizeof want, "SQLSTATE %s", state);
    return strcmp(err->detail, want) == 0;
}

/* A statement that failed because it read damaged data (data_corrupted,
 * index_corrupted) found a problem: count it and clear the error. Any other
 * failure stays a failure. */
static int corruption_is_a_finding(int rc, noodle_integrity_result *out, const char *what,
                                   noodle_error *err) {
    if (rc == 0 || !(err_has_sqlstate(err, "XX001") || err_has_sqlstate(err, "XX002"))) return rc;
    char text[sizeof out->first_problem + sizeof err->message];
    snprintf(text, sizeof text, "%s: %s", what, err->message);
    noodle__integrity_problem(out, text, strlen(text));
    noodle_error_clear(err);
    return 0;
}

/* QUICK: read the whole of pg_class (the catalog is reachable and
 * readable) and this database's checksum failures as the server counted
 * them (NULL, so -1, when data checksums are off). Each recorded checksum
 * failure is a problem. */
static int check_catalog(pg_handle *h, int64_t deadline, noodle_integrity_result *out,
                         noodle_error *err) {
    static const char sql[] = "SELECT (SELECT count(*) FROM pg_catalog.pg_class)::int8,"
                              " (SELECT checksum_failures FROM pg_catalog.pg_stat_database"
                              " WHERE datname = current_database())::int8";
    PGresult *res = NULL;
    int rc = run_command(h, "integrity: catalog", sql, deadline, &res, err);
    if (rc == 0 && (rc = expect_row(res, "integrity: catalog", 2, err)) == 0) {
        static const char empty[] = "pg_class reads as empty";
        if (cell_int64(res, 0, 0) <= 0) noodle__integrity_problem(out, empty, sizeof empty - 1);
        out->checksum_failures = cell_int64(res, 0, 1);
        if (out->checksum_failures > 0) {
            char text[96];
            int n = snprintf(text, sizeof text, "%" PRId64 " data checksum failures in this database",
                             out->checksum_failures);
            noodle__integrity_problem(out, text, (size_t)n);
            out->problems += out->checksum_failures - 1;
        }
    }
    PQclear(res);
    return corruption_is_a_finding(rc, out, "reading pg_class", err);
}

/* bt_index_check on one index (its oid as text); a corrupt index is a
 * problem. *stop is set when amcheck cannot be used at all (no privilege,
 * the function not found), with the reason in why. */
static int check_index(pg_handle *h, const char *oid, const char *name, int64_t deadline,
                       noodle_integrity_result *out, const char **why, noodle_error *err) {
    PGresult *res = NULL;
    int rc = run_with_text(h, "integrity: bt_index_check",
                           "SELECT bt_index_check($1::pg_catalog.oid::pg_catalog.regclass)", oid,
                           deadline, &res, err);
    PQclear(res);
    if (rc != 0 && err_has_sqlstate(err, "42501")) *why = "amcheck not run: permission denied";
    else if (rc != 0 && err_has_sqlstate(err, "42883")) *why = "amcheck not run: not callable";
    if (*why != NULL) {
        noodle_error_clear(err);
        return 0;
    }
    return corruption_is_a_finding(rc, out, name, err);
}

/* Every btree index of pg_catalog, with amcheck's schema as search_path
 * (bt_index_check is called unqualified: the SQL stays constant). *checked
 * counts the indexes checked; *why says why amcheck stopped, if it did. */
static int check_catalog_indexes(pg_handle *h, int64_t deadline, noodle_integrity_result *out,
                                 int *checked, const char **why, noodle_error *err) {
    static const char indexes[] =
        "SELECT c.oid::pg_catalog.text, c.relname FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_am a ON a.oid = c.relam"
        " WHERE c.relkind = 'i' AND a.amname = 'btree'"
        " AND c.relnamespace = 'pg_catalog'::pg_catalog.regnamespace ORDER BY c.oid";
    PGresult *res = NULL;
    int rc = run_command(h, "integrity: catalog indexes", indexes, deadline, &res, err);
    for (int i = 0; rc == 0 && *why == NULL && i < PQntuples(res); i++) {
        rc = check_index(h, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), deadline, out, why, err);
        if (rc == 0 && *why == NULL) (*checked)++;
    }
    PQclear(res);
    return rc;
}

/* FULL's amcheck part: only where the extension is installed (it is never
 * created here). The session's search_path is set to amcheck's schema for
 * the checks and put back afterwards. */
static int check_with_amcheck(pg_handle *h, int64_t deadline, noodle_integrity_result *out,
                              char *note, size_t note_size, noodle_error *err) {
    static const char find[] =
        "SELECT n.nspname, current_setting('search_path') FROM pg_catalog.pg_extension e"
        " JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'";
    static const char set_path[] = "SELECT pg_catalog.set_config('search_path', $1, false)";
    PGresult *res = NULL, *ignored = NULL;
    int rc = run_command(h, "integrity: amcheck", find, deadline, &res, err);
    if (rc != 0 || PQntuples(res) < 1 || PQnfields(res) < 2) {
        if (rc == 0) noodle__strlcpy(note, "amcheck not installed: indexes not checked", note_size);
        PQclear(res);
        return rc;
    }
    int checked = 0;
    const char *why = NULL;
    rc = run_with_text(h, "integrity: search_path",
                       "SELECT pg_catalog.set_config('search_path',"
                       " pg_catalog.quote_ident($1), false)",
                       PQgetvalue(res, 0, 0), deadline, &ignored, err);
    PQclear(ignored);
    if (rc == 0) {
        rc = check_catalog_indexes(h, deadline, out, &checked, &why, err);
        noodle_error restore_err;
        int rrc = run_with_text(h, "integrity: search_path", set_path, PQgetvalue(res, 0, 1),
                                deadline, &ignored, rc == 0 ? err : &restore_err);
        PQclear(ignored);
        if (rc == 0) rc = rrc;
    }
    PQclear(res);
    if (why != NULL) noodle__strlcpy(note, why, note_size);
    else snprintf(note, note_size, "amcheck bt_index_check on %d pg_catalog indexes", checked);
    return rc;
}

/* Its statements can fail when they meet damage, which would abort an open
 * transaction of the caller's: the check wants an idle session. */
static int pg_integrity(void *handle, noodle_integrity_level level, int64_t deadline,
                        noodle_integrity_result *out, noodle_error *err) {
    pg_handle *h = handle;
    int rc = check_alive(h, "integrity", err);
    if (rc != 0) return rc;
    if (PQtransactionStatus(h->conn) != PQTRANS_IDLE)
        return NOODLE_ERR(err, NOODLE_E_QUERY_TXN_STATE,
                          "integrity: run it outside a transaction (a check that meets damage "
                          "fails a statement, which would abort the transaction)");
    out->problems = 0;
    out->checksum_failures = -1;
    out->first_problem[0] = '\0';
    char note[72] = ""; /* fits method after the 52-byte prefix */
    rc = check_catalog(h, deadline, out, err);
    if (rc == 0 && level == NOODLE_INTEGRITY_FULL)
        rc = check_with_amcheck(h, deadline, out, note, sizeof note, err);
    snprintf(out->method, sizeof out->method, "pg_class read, pg_stat_database.checksum_failures%s%s",
             note[0] ? "; " : "", note);
    return rc;
}

/* ======================================================================== */
/* The table                                                                 */
/* ======================================================================== */

static bool pg_in_transaction(void *handle) {
    pg_handle *h = handle;
    if (h->conn == NULL) return false;
    PGTransactionStatusType ts = PQtransactionStatus(h->conn);
    return ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
}

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
    .in_transaction = pg_in_transaction,
    .integrity = pg_integrity,
};

const noodle_backend_ops *noodle_backend_postgres(void) {
    return &postgres_ops;
}

/* ======================================================================== */
/* splitting a multi-host conninfo (the cluster layer)                        */
/* ======================================================================== */

/* Append key='value' (libpq quoting: backslash before ' and \) to buf. */
static bool append_option(char **buf, size_t *len, size_t *cap, const char *key, const char *val) {
    size_t need = strlen(key) + 2 * strlen(val) + 5;
    if (*len + need >= *cap) {
        size_t ncap = (*cap + need) * 2;
        char *nb = realloc(*buf, ncap);
        if (nb == NULL) return false;
        *buf = nb;
        *cap = ncap;
    }
    char *p = *buf + *len;
    if (*len > 0) *p++ = ' ';
    size_t klen = strlen(key);
    memcpy(p, key, klen);
    p += klen;
    *p++ = '=';
    *p++ = '\'';
    for (const char *v = val; *v; v++) {
        if (*v == '\'' || *v == '\\') *p++ = '\\';
        *p++ = *v;
    }
    *p++ = '\'';
    *p = '\0';
    *len = (size_t)(p - *buf);
    return true;
}

static const char *nth_element(const char *list, size_t i, size_t *len) {
    const char *s = list;
    for (size_t k = 0; k < i; k++) s = strchr(s, ',') + 1;
    const char *e = strchr(s, ',');
    *len = e != NULL ? (size_t)(e - s) : strlen(s);
    return s;
}

int noodle__pg_split_hosts(const char *url, char ***out, size_t *n, noodle_error *err) {
    *out = NULL;
    *n = 0;
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url != NULL ? url : "", &perr);
    if (opts == NULL) {
        char msg[400];
        clean_message(perr != NULL ? perr : "out of memory", url, msg, sizeof msg);
        PQfreemem(perr);
        return NOODLE_ERR(err, NOODLE_E_CONFIG_INVALID_URL, "cannot split the hosts of the url: %s",
                          msg);
    }
    const char *host = option_value(opts, "host"), *addr = option_value(opts, "hostaddr");
    const char *port = option_value(opts, "port");
    host = host != NULL && host[0] ? host : NULL;
    addr = addr != NULL && addr[0] ? addr : NULL;
    port = port != NULL && port[0] ? port : NULL;
    size_t count = addr ? count_elements(addr) : host ? count_elements(host) : 1;
    size_t nport = port ? count_elements(port) : 0;
    if ((host && addr && count_elements(host) != count) || (nport > 1 && nport != count)) {
        PQconninfoFree(opts);
        return NOODLE_ERR(err, NOODLE_E_CONFIG_INVALID_URL,
                          "the url's host, hostaddr and port lists do not line up (%zu hosts, "
                          "%zu ports)",
                          count, nport);
    }
    char **list = calloc(count, sizeof *list);
    if (list == NULL) goto oom;
    for (size_t i = 0; i < count; i++) {
        char *buf = NULL, one[1024];
        size_t len = 0, cap = 0, el;
        const char *s;
        bool ok = true;
        for (const PQconninfoOption *o = opts; ok && o->keyword != NULL; o++) {
            if (o->val == NULL || o->val[0] == '\0' || strcmp(o->keyword, "host") == 0 ||
                strcmp(o->keyword, "hostaddr") == 0 || strcmp(o->keyword, "port") == 0 ||
                strcmp(o->keyword, "target_session_attrs") == 0)
                continue;
            ok = append_option(&buf, &len, &cap, o->keyword, o->val);
        }
        const char *lists[3] = {host, addr, port};
        const char *keys[3] = {"host", "hostaddr", "port"};
        for (int k = 0; ok && k < 3; k++) {
            if (lists[k] == NULL) continue;
            s = nth_element(lists[k], k == 2 && nport == 1 ? 0 : i, &el);
            if (el == 0) continue; /* an empty element: libpq's default */
            if (el >= sizeof one) el = sizeof one - 1;
            memcpy(one, s, el);
            one[el] = '\0';
            ok = append_option(&buf, &len, &cap, keys[k], one);
        }
        if (ok && buf == NULL) ok = (buf = strdup("")) != NULL;
        if (!ok) {
            free(buf);
            for (size_t k = 0; k < i; k++) free(list[k]);
            free(list);
            goto oom;
        }
        list[i] = buf;
    }
    PQconninfoFree(opts);
    *out = list;
    *n = count;
    return 0;
oom:
    PQconninfoFree(opts);
    return NOODLE_ERR(err, NOODLE_E_CLUSTER_NO_MEMORY, "out of memory splitting the url's hosts");
}
