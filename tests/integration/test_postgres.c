/* The PostgreSQL backend against a real server (label pg).
 *
 * One throwaway server is started in the group setup (a failure to start
 * fails the group: these tests are never skipped). Everything goes through
 * the public noodle_conn_* API with noodle_backend_postgres(), except the
 * socket-option checks, which look at the libpq connection inside the handle,
 * and the statement-cache checks, which read its counters
 * (noodle__pg_stmt_cache_stats).
 */
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "backends/postgres_sql.h"
#include "noodle/backend.h"
#include "noodle/clock.h"
#include "noodle/error.h"
#include "pg_server.h"
#include "test_util.h"

static noodle_pg_server *server;
static char url[256];

/* ---- helpers --------------------------------------------------------------------- */

static int64_t deadline_ms(int ms) {
    return noodle_deadline_after(NULL, NOODLE_MS(ms));
}

static noodle_conn *open_url(const char *u) {
    noodle_connect_params p = {
        .url = u, .deadline = deadline_ms(10000), .clock = NULL, .application_name = NULL};
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_conn_open(noodle_backend_postgres(), &p, &c, &err), &err);
    assert_non_null(c);
    return c;
}

static noodle_conn *open_default(void) {
    return open_url(url);
}

/* Superuser SQL through a fresh connection; fails the test on error. */
static void admin(const char *sql, char *out, size_t outlen) {
    char local[512];
    if (out == NULL) {
        out = local;
        outlen = sizeof local;
    }
    if (noodle_pg_server_query(server, sql, out, outlen) != 0) fail_msg("%s: %s", sql, out);
}

/* A TCP port on 127.0.0.1 with no listener (bound, read, closed). */
static int dead_port(void) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int sockopt(noodle_conn *c, int level, int name) {
    PGconn *pg = noodle__pg_conn(noodle_conn_handle(c));
    int value = -1;
    socklen_t len = sizeof value;
    assert_non_null(pg);
    assert_int_equal(getsockopt(PQsocket(pg), level, name, &value, &len), 0);
    return value;
}

/* ---- a fake server: a TCP listener on 127.0.0.1 speaking just enough protocol ------------ */

typedef enum fake_mode {
    FAKE_FROZEN,         /* accepts connections and never answers (a frozen host) */
    FAKE_COPY_BOTH,      /* logs in, answers the first query with CopyBothResponse */
    FAKE_CLOSE_ON_QUERY, /* logs in, closes the connection when the first query arrives */
} fake_mode;

typedef struct fake_server {
    fake_mode mode;
    int listen_fd;
    int stop[2]; /* pipe: a byte stops the thread */
    int port;
    int conns[32]; /* held open until the server stops */
    size_t nconns;
    pthread_t thread;
} fake_server;

/* Wait up to 5 s for fd to be readable and read exactly n bytes. */
static bool fake_read(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN, .revents = 0};
        if (poll(&p, 1, 5000) <= 0) return false;
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0) return false;
        got += (size_t)r;
    }
    return true;
}

static bool fake_write(int fd, const void *buf, size_t n) {
    return send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n; /* a gone client: no SIGPIPE */
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Append a message (type, length, body) to out at *len. */
static void fake_msg(unsigned char *out, size_t *len, char type, const void *body, size_t n) {
    uint32_t l = (uint32_t)n + 4;
    out[(*len)++] = (unsigned char)type;
    out[(*len)++] = (unsigned char)(l >> 24);
    out[(*len)++] = (unsigned char)(l >> 16);
    out[(*len)++] = (unsigned char)(l >> 8);
    out[(*len)++] = (unsigned char)l;
    if (n > 0) memcpy(out + *len, body, n);
    *len += n;
}

static void fake_param(unsigned char *out, size_t *len, const char *name, const char *value) {
    char body[128];
    size_t a = strlen(name) + 1, b = strlen(value) + 1;
    memcpy(body, name, a);
    memcpy(body + a, value, b);
    fake_msg(out, len, 'S', body, a + b);
}

/* Answer SSL / GSS requests with 'N', take the startup packet, log in. */
static bool fake_login(int fd) {
    unsigned char head[8], body[1024], out[512];
    size_t len = 0;
    for (;;) {
        if (!fake_read(fd, head, 8)) return false;
        uint32_t n = be32(head), code = be32(head + 4);
        if (n < 8 || n - 8 > sizeof body || !fake_read(fd, body, n - 8)) return false;
        if (code == 80877103 || code == 80877104) { /* SSLRequest, GSSENCRequest */
            if (!fake_write(fd, "N", 1)) return false;
            continue;
        }
        break; /* StartupMessage */
    }
    static const unsigned char auth_ok[4] = {0, 0, 0, 0};
    static const unsigned char key[8] = {0, 0, 0, 1, 0, 0, 0, 2};
    fake_msg(out, &len, 'R', auth_ok, 4);
    fake_param(out, &len, "server_version", "15.0");
    fake_param(out, &len, "server_encoding", "UTF8");
    fake_param(out, &len, "client_encoding", "UTF8");
    fake_param(out, &len, "standard_conforming_strings", "on");
    fake_param(out, &len, "integer_datetimes", "on");
    fake_msg(out, &len, 'K', key, 8);
    fake_msg(out, &len, 'Z', "I", 1);
    return fake_write(fd, out, len);
}

/* Read client messages up to and including Sync. */
static bool fake_read_query(int fd) {
    unsigned char head[5], body[4096];
    for (;;) {
        if (!fake_read(fd, head, 5)) return false;
        uint32_t n = be32(head + 1);
        if (n < 4 || n - 4 > sizeof body || !fake_read(fd, body, n - 4)) return false;
        if (head[0] == 'S') return true;
    }
}

static void fake_serve(fake_server *s, int fd) {
    if (s->mode == FAKE_FROZEN || !fake_login(fd) || !fake_read_query(fd)) return;
    if (s->mode == FAKE_COPY_BOTH) {
        static const unsigned char copy_both[3] = {0, 0, 0}; /* text, no columns */
        unsigned char out[64];
        size_t len = 0;
        fake_msg(out, &len, '1', NULL, 0); /* ParseComplete */
        fake_msg(out, &len, '2', NULL, 0); /* BindComplete */
        fake_msg(out, &len, 'W', copy_both, 3);
        fake_write(fd, out, len);
    } else { /* FAKE_CLOSE_ON_QUERY */
        close(fd);
        s->nconns--; /* fd was the last one held */
    }
}

static void *fake_main(void *arg) {
    fake_server *s = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->listen_fd, .events = POLLIN, .revents = 0},
                              {.fd = s->stop[0], .events = POLLIN, .revents = 0}};
        if (poll(p, 2, -1) < 0) continue;
        if (p[1].revents != 0) break;
        if (p[0].revents == 0) continue;
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0) continue;
        if (s->nconns == sizeof s->conns / sizeof s->conns[0]) {
            close(fd);
            continue;
        }
        s->conns[s->nconns++] = fd;
        fake_serve(s, fd);
    }
    return NULL;
}

static fake_server *fake_start(fake_mode mode) {
    fake_server *s = calloc(1, sizeof *s);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    assert_non_null(s);
    s->mode = mode;
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->listen_fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->listen_fd, 16), 0);
    assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&a, &len), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pipe(s->stop), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, fake_main, s), 0);
    return s;
}

static void fake_stop(fake_server *s) {
    if (s == NULL) return;
    assert_int_equal(write(s->stop[1], "x", 1), 1);
    pthread_join(s->thread, NULL);
    for (size_t i = 0; i < s->nconns; i++)
        if (s->conns[i] >= 0) close(s->conns[i]);
    close(s->listen_fd);
    close(s->stop[0]);
    close(s->stop[1]);
    free(s);
}

/* A connection string for the fake server (no SSL or GSS negotiation). */
static void fake_url(const fake_server *s, char *buf, size_t size) {
    snprintf(buf, size,
             "host=127.0.0.1 port=%d dbname=fake user=fake sslmode=disable gssencmode=disable",
             s->port);
}

/* ---- a resolver that can be slow, for connect's name resolution -------------------------- */

#define SLOW_HOST "slow.noodle.invalid"

static atomic_int resolver_calls;
static atomic_bool resolver_release;

static int test_resolver(const char *node, const char *service, const struct addrinfo *hints,
                         struct addrinfo **res) {
    atomic_fetch_add(&resolver_calls, 1);
    if (strcmp(node, SLOW_HOST) == 0) {
        /* A resolver that does not answer (up to 30 s, or until released). */
        for (int i = 0; i < 3000 && !atomic_load(&resolver_release); i++) usleep(10000);
        return EAI_AGAIN;
    }
    return getaddrinfo(node, service, hints, res);
}

static int use_test_resolver(void **state) {
    (void)state;
    atomic_store(&resolver_calls, 0);
    atomic_store(&resolver_release, false);
    noodle__pg_set_resolver(test_resolver);
    return 0;
}

static int restore_resolver(void **state) {
    (void)state;
    atomic_store(&resolver_release, true);
    noodle__pg_set_resolver(NULL);
    usleep(50000); /* let abandoned resolvers finish and free their share */
    return 0;
}

/* ---- fixtures ---------------------------------------------------------------------- */

static int group_setup(void **state) {
    char msg[4096];
    (void)state;
    if (noodle_pg_server_start(NULL, &server, msg, sizeof msg) != 0) {
        fprintf(stderr, "cannot start a PostgreSQL server: %s\n", msg);
        return -1;
    }
    snprintf(url, sizeof url, "%s", noodle_pg_server_conninfo(server));
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    noodle_pg_server_stop(server);
    server = NULL;
    return 0;
}

/* After a test that froze the server, whatever happened. */
static int thaw_server(void **state) {
    (void)state;
    noodle_pg_server_thaw(server);
    return 0;
}

static int reset_read_only(void **state) {
    char out[64] = "";
    (void)state;
    noodle_pg_server_query(server, "ALTER SYSTEM RESET default_transaction_read_only", out,
                           sizeof out);
    noodle_pg_server_query(server, "SELECT pg_reload_conf()", out, sizeof out);
    for (int i = 0; i < 500; i++) {
        if (noodle_pg_server_query(server, "SHOW default_transaction_read_only", out, sizeof out) ==
                0 &&
            strcmp(out, "off") == 0)
            return 0;
        usleep(10000);
    }
    return -1;
}

/* ---- deadlines against a frozen server ------------------------------------------------ */

static void query_on_frozen_server_returns_4004_by_deadline(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    assert_int_equal(noodle_pg_server_freeze(server), 0);

    int64_t t0 = noodle_test_now_ms();
    int rc = noodle_conn_execute(c, "SELECT 1", NULL, 0, deadline_ms(500), &rows, &err);
    int64_t elapsed = noodle_test_now_ms() - t0;
    assert_code(rc, &err, NOODLE_E_BACKEND_TIMEOUT);
    assert_null(rows);
    assert_true(elapsed >= 450);
    assert_true(elapsed < 2500);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    rc = noodle_conn_execute(c, "SELECT 1", NULL, 0, deadline_ms(500), &rows, &err);
    assert_code(rc, &err, NOODLE_E_CONNECTION_BROKEN);

    t0 = noodle_test_now_ms();
    noodle_conn_close(c);
    assert_true(noodle_test_now_ms() - t0 < 1000);
    assert_int_equal(noodle_pg_server_thaw(server), 0);
}

static void connect_to_frozen_server_returns_4002_by_deadline(void **state) {
    (void)state;
    noodle_connect_params p = {.url = url, .deadline = 0, .clock = NULL, .application_name = NULL};
    noodle_conn *c = NULL;
    noodle_error err;
    assert_int_equal(noodle_pg_server_freeze(server), 0);

    int64_t t0 = noodle_test_now_ms();
    p.deadline = deadline_ms(500);
    int rc = noodle_conn_open(noodle_backend_postgres(), &p, &c, &err);
    int64_t elapsed = noodle_test_now_ms() - t0;
    assert_code(rc, &err, NOODLE_E_CONNECT_TIMEOUT);
    assert_null(c);
    assert_true(elapsed < 2500);
    assert_int_equal(noodle_pg_server_thaw(server), 0);
}

static void close_on_frozen_server_returns_at_once(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_test_exec_ok(c, "SELECT 1");
    assert_int_equal(noodle_pg_server_freeze(server), 0);
    int64_t t0 = noodle_test_now_ms();
    noodle_conn_close(c);
    assert_true(noodle_test_now_ms() - t0 < 1000);
    assert_int_equal(noodle_pg_server_thaw(server), 0);
}

static void slow_query_returns_4004_by_deadline_and_handle_reports_4003(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    void *handle = noodle_conn_handle(c);
    const noodle_backend_ops *ops = noodle_backend_postgres();
    noodle_rows *rows = NULL;
    noodle_error err;

    int64_t t0 = noodle_test_now_ms();
    int rc = noodle_conn_execute(c, "SELECT pg_sleep(5)", NULL, 0, deadline_ms(300), &rows, &err);
    int64_t elapsed = noodle_test_now_ms() - t0;
    assert_code(rc, &err, NOODLE_E_BACKEND_TIMEOUT);
    assert_true(elapsed < 2000);
    assert_null(noodle__pg_conn(handle));
    /* The backend itself (below the broken-connection layer) says "lost". */
    rc = ops->execute(handle, "SELECT 1", NULL, 0, deadline_ms(1000), &rows, &err);
    assert_code(rc, &err, NOODLE_E_CONNECTION_LOST);
    rc = ops->validate(handle, deadline_ms(1000), &err);
    assert_code(rc, &err, NOODLE_E_CONNECTION_LOST);
    noodle_conn_close(c);
}

/* ---- the server going away --------------------------------------------------------------- */

static void terminated_backend_fails_next_execute_with_4003_or_4010(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    char sql[128], out[64];
    int64_t pid = noodle_test_query_int(c, "SELECT pg_backend_pid()");

    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%lld, 5000)", (long long)pid);
    admin(sql, out, sizeof out);
    assert_string_equal(out, "t");

    int rc = noodle_conn_execute(c, "SELECT 1", NULL, 0, deadline_ms(5000), &rows, &err);
    if (rc != NOODLE_E_CONNECTION_LOST && rc != NOODLE_E_SERVER_SHUTDOWN) {
        char buf[1024];
        noodle_error_format(&err, buf, sizeof buf);
        fail_msg("want 4003 or 4010, got %d: %s", rc, buf);
    }
    assert_int_equal(err.code, rc);
    /* The server said why (FATAL 57P01) before closing. */
    if (rc == NOODLE_E_SERVER_SHUTDOWN) assert_string_equal(err.detail, "SQLSTATE 57P01");
    if (err.detail[0] != '\0') assert_memory_equal(err.detail, "SQLSTATE ", 9);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    rc = noodle_conn_validate(c, deadline_ms(1000), &err);
    assert_code(rc, &err, NOODLE_E_CONNECTION_BROKEN);
    noodle_conn_close(c);
}

/* ---- connect options ------------------------------------------------------------------------ */

static void socket_has_keepalive_and_tcp_user_timeout_10000_by_default(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    assert_int_equal(sockopt(c, SOL_SOCKET, SO_KEEPALIVE), 1);
    assert_int_equal(sockopt(c, IPPROTO_TCP, TCP_USER_TIMEOUT), 10000);
    assert_int_equal(sockopt(c, IPPROTO_TCP, TCP_KEEPIDLE), 10);
    assert_int_equal(sockopt(c, IPPROTO_TCP, TCP_KEEPINTVL), 3);
    assert_int_equal(sockopt(c, IPPROTO_TCP, TCP_KEEPCNT), 3);
    noodle_conn_close(c);
}

static void conninfo_tcp_user_timeout_overrides_the_default(void **state) {
    char u[300];
    (void)state;
    snprintf(u, sizeof u, "%s tcp_user_timeout=1234 keepalives_idle=7", url);
    noodle_conn *c = open_url(u);
    assert_int_equal(sockopt(c, IPPROTO_TCP, TCP_USER_TIMEOUT), 1234);
    assert_int_equal(sockopt(c, IPPROTO_TCP, TCP_KEEPIDLE), 7);
    assert_int_equal(sockopt(c, SOL_SOCKET, SO_KEEPALIVE), 1);
    noodle_conn_close(c);
}

static void uri_query_parameters_override_the_defaults_too(void **state) {
    char u[300];
    (void)state;
    snprintf(u, sizeof u, "postgresql://postgres@127.0.0.1:%d/postgres?tcp_user_timeout=4321",
             noodle_pg_server_port(server));
    noodle_conn *c = open_url(u);
    assert_int_equal(sockopt(c, IPPROTO_TCP, TCP_USER_TIMEOUT), 4321);
    noodle_conn_close(c);
}

static void multi_host_conninfo_skips_a_dead_first_host(void **state) {
    char u[300];
    (void)state;
    snprintf(u, sizeof u, "host=127.0.0.1,127.0.0.1 port=%d,%d dbname=postgres user=postgres",
             dead_port(), noodle_pg_server_port(server));
    noodle_conn *c = open_url(u);
    assert_int_equal(noodle_test_query_int(c, "SELECT 7"), 7);
    noodle_conn_close(c);
}

static void application_name_is_set_and_conninfo_overrides_it(void **state) {
    noodle_connect_params p = {
        .url = url, .deadline = 0, .clock = NULL, .application_name = "noodle-test"};
    noodle_conn *c = NULL;
    noodle_rows *rows = NULL;
    noodle_error err;
    char u[300];
    (void)state;

    p.deadline = deadline_ms(10000);
    assert_ok(noodle_conn_open(noodle_backend_postgres(), &p, &c, &err), &err);
    assert_ok(noodle_conn_execute(c, "SELECT current_setting('application_name')", NULL, 0,
                                  deadline_ms(5000), &rows, &err),
              &err);
    assert_string_equal(noodle_rows_get(rows, 0, 0)->v.bytes.ptr, "noodle-test");
    noodle_rows_free(rows);
    noodle_conn_close(c);

    snprintf(u, sizeof u, "%s application_name=mine", url);
    p.url = u;
    assert_ok(noodle_conn_open(noodle_backend_postgres(), &p, &c, &err), &err);
    assert_ok(noodle_conn_execute(c, "SELECT current_setting('application_name')", NULL, 0,
                                  deadline_ms(5000), &rows, &err),
              &err);
    assert_string_equal(noodle_rows_get(rows, 0, 0)->v.bytes.ptr, "mine");
    noodle_rows_free(rows);
    noodle_conn_close(c);
}

static void refused_connection_fails_with_4001(void **state) {
    char u[300];
    noodle_connect_params p = {.url = u, .deadline = 0, .clock = NULL, .application_name = NULL};
    noodle_conn *c = NULL;
    noodle_error err;
    (void)state;
    snprintf(u, sizeof u, "host=127.0.0.1 port=%d dbname=postgres user=postgres", dead_port());
    p.deadline = deadline_ms(5000);
    assert_code(noodle_conn_open(noodle_backend_postgres(), &p, &c, &err), &err,
                NOODLE_E_CONNECT_FAILED);
    assert_null(c);
    assert_non_null(strstr(err.message, "refused"));
    assert_null(strchr(err.message, '\n'));
}

static void unknown_role_fails_connect_with_4009(void **state) {
    char u[300];
    noodle_connect_params p = {.url = u, .deadline = 0, .clock = NULL, .application_name = NULL};
    noodle_conn *c = NULL;
    noodle_error err;
    (void)state;
    snprintf(u, sizeof u, "host=127.0.0.1 port=%d dbname=postgres user=nobody_here",
             noodle_pg_server_port(server));
    p.deadline = deadline_ms(5000);
    assert_code(noodle_conn_open(noodle_backend_postgres(), &p, &c, &err), &err,
                NOODLE_E_AUTH_FAILED);
    assert_null(c);
}

static void unparseable_conninfo_fails_with_4001(void **state) {
    noodle_connect_params p = {.url = "host=127.0.0.1 bogus_option=1",
                               .deadline = 0,
                               .clock = NULL,
                               .application_name = NULL};
    noodle_conn *c = NULL;
    noodle_error err;
    (void)state;
    p.deadline = deadline_ms(5000);
    assert_code(noodle_conn_open(noodle_backend_postgres(), &p, &c, &err), &err,
                NOODLE_E_CONNECT_FAILED);
    assert_non_null(strstr(err.message, "bogus_option"));
}

/* ---- roles ------------------------------------------------------------------------------------
 */

static void normal_node_reports_primary_role(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_role role;
    noodle_error err;
    assert_ok(noodle_conn_role(c, deadline_ms(5000), &role, &err), &err);
    assert_int_equal(role, NOODLE_ROLE_PRIMARY);
    noodle_conn_close(c);
}

static void read_only_node_reports_read_only_and_refuses_writes_with_5009(void **state) {
    char out[64] = "";
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_role role;
    (void)state;

    admin("ALTER SYSTEM SET default_transaction_read_only = on", NULL, 0);
    admin("SELECT pg_reload_conf()", NULL, 0);
    for (int i = 0; i < 500 && strcmp(out, "on") != 0; i++) {
        admin("SHOW default_transaction_read_only", out, sizeof out);
        if (strcmp(out, "on") != 0) usleep(10000);
    }
    assert_string_equal(out, "on");

    noodle_conn *c = open_default();
    assert_ok(noodle_conn_role(c, deadline_ms(5000), &role, &err), &err);
    assert_int_equal(role, NOODLE_ROLE_READ_ONLY);
    int rc = noodle_conn_execute(c, "CREATE TABLE ro_probe (x int)", NULL, 0, deadline_ms(5000),
                                 &rows, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_READ_ONLY);
    assert_string_equal(err.detail, "SQLSTATE 25006");
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    noodle_conn_close(c);
}

/* ---- parameters and values ------------------------------------------------------------------- */

static void text_parameter_with_nul_is_refused_with_5007_and_nothing_written(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_test_exec_ok(c, "CREATE TEMP TABLE nul_probe (t text)");
    noodle_value v = noodle_text_n("a\0b", 3);
    int rc = noodle_conn_execute(c, "INSERT INTO nul_probe VALUES (?)", &v, 1, deadline_ms(5000),
                                 &rows, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_PARAM_INVALID);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM nul_probe"), 0);
    noodle_conn_close(c);
}

static void placeholder_count_mismatch_fails_5006_and_sends_nothing(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_test_exec_ok(c, "CREATE TEMP TABLE count_probe (a int8, b int8)");
    noodle_value one = noodle_int64(1);
    int rc = noodle_conn_execute(c, "INSERT INTO count_probe VALUES (?, ?)", &one, 1,
                                 deadline_ms(5000), &rows, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_PARAM_COUNT);
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM count_probe"), 0);
    noodle_conn_close(c);
}

static void bytea_round_trips_all_256_byte_values(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    unsigned char bytes[256];
    for (int i = 0; i < 256; i++) bytes[i] = (unsigned char)i;
    noodle_test_exec_ok(c, "CREATE TEMP TABLE blob_probe (b bytea)");
    noodle_value v = noodle_blob(bytes, sizeof bytes);
    assert_ok(noodle_conn_execute(c, "INSERT INTO blob_probe VALUES (?)", &v, 1, deadline_ms(5000),
                                  &rows, &err),
              &err);
    assert_int_equal(noodle_rows_affected(rows), 1);
    noodle_rows_free(rows);
    assert_int_equal(noodle_test_query_int(c, "SELECT length(b) FROM blob_probe"), 256);

    assert_ok(noodle_conn_execute(c, "SELECT b, ?::bytea FROM blob_probe", &v, 1, deadline_ms(5000),
                                  &rows, &err),
              &err);
    for (size_t col = 0; col < 2; col++) {
        const noodle_value *got = noodle_rows_get(rows, 0, col);
        assert_int_equal(got->type, NOODLE_TYPE_BLOB);
        assert_int_equal(got->v.bytes.len, 256);
        assert_memory_equal(got->v.bytes.ptr, bytes, 256);
    }
    noodle_rows_free(rows);

    /* The empty blob is not NULL. */
    v = noodle_blob(NULL, 0);
    assert_ok(noodle_conn_execute(c, "SELECT ?::bytea IS NULL, length(?::bytea)",
                                  (noodle_value[]){v, v}, 2, deadline_ms(5000), &rows, &err),
              &err);
    assert_int_equal(noodle_rows_get(rows, 0, 0)->v.i, 0);
    assert_int_equal(noodle_rows_get(rows, 0, 1)->v.i, 0);
    noodle_rows_free(rows);
    noodle_conn_close(c);
}

static void int64_min_and_max_round_trip(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_value in[3] = {noodle_int64(INT64_MIN), noodle_int64(INT64_MAX), noodle_int64(0)};
    assert_ok(noodle_conn_execute(c, "SELECT ?, ?, ?, pg_typeof(?)::text",
                                  (noodle_value[]){in[0], in[1], in[2], in[0]}, 4,
                                  deadline_ms(5000), &rows, &err),
              &err);
    for (size_t i = 0; i < 3; i++) {
        const noodle_value *v = noodle_rows_get(rows, 0, i);
        assert_int_equal(v->type, NOODLE_TYPE_INT64);
        assert_true(v->v.i == in[i].v.i);
    }
    assert_string_equal(noodle_rows_get(rows, 0, 3)->v.bytes.ptr, "bigint");
    noodle_rows_free(rows);
    noodle_conn_close(c);
}

static void double_infinities_nan_and_extremes_round_trip(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    const double values[] = {INFINITY, -INFINITY, NAN, -0.0, 1e308, 0.1, 4.9406564584124654e-324};
    const size_t n = sizeof values / sizeof values[0];
    noodle_value in[sizeof values / sizeof values[0]];
    for (size_t i = 0; i < n; i++) in[i] = noodle_double(values[i]);
    assert_ok(
        noodle_conn_execute(c, "SELECT ?, ?, ?, ?, ?, ?, ?", in, n, deadline_ms(5000), &rows, &err),
        &err);
    for (size_t i = 0; i < n; i++) {
        const noodle_value *v = noodle_rows_get(rows, 0, i);
        assert_int_equal(v->type, NOODLE_TYPE_DOUBLE);
        if (isnan(values[i]))
            assert_true(isnan(v->v.d));
        else
            assert_memory_equal(&v->v.d, &values[i], sizeof(double));
    }
    noodle_rows_free(rows);
    noodle_conn_close(c);
}

static void results_are_typed_by_column_type(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    assert_ok(
        noodle_conn_execute(c,
                            "SELECT 1::int2 AS a, 2::int4 AS b, 3::int8 AS c, 26::oid AS d,"
                            " 1.5::float4 AS e, 2.25::float8 AS f, true AS g, false AS h,"
                            " 12345678901234567890.123456789::numeric AS i, 'x?'::text AS j,"
                            " NULL::int4 AS k, '\\x00ff'::bytea AS l, '2024-01-02'::date AS m",
                            NULL, 0, deadline_ms(5000), &rows, &err),
        &err);
    assert_int_equal(noodle_rows_columns(rows), 13);
    assert_string_equal(noodle_rows_column_name(rows, 0), "a");
    assert_int_equal(noodle_rows_column_index(rows, "m"), 12);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(noodle_rows_get(rows, 0, i)->type, NOODLE_TYPE_INT64);
        assert_int_equal(noodle_rows_get(rows, 0, i)->v.i, i == 3 ? 26 : (int64_t)i + 1);
    }
    assert_int_equal(noodle_rows_get(rows, 0, 4)->type, NOODLE_TYPE_DOUBLE);
    assert_true(noodle_rows_get(rows, 0, 4)->v.d == 1.5);
    assert_true(noodle_rows_get(rows, 0, 5)->v.d == 2.25);
    assert_int_equal(noodle_rows_get(rows, 0, 6)->type, NOODLE_TYPE_INT64);
    assert_int_equal(noodle_rows_get(rows, 0, 6)->v.i, 1);
    assert_int_equal(noodle_rows_get(rows, 0, 7)->v.i, 0);
    assert_int_equal(noodle_rows_get(rows, 0, 8)->type, NOODLE_TYPE_TEXT);
    assert_string_equal(noodle_rows_get(rows, 0, 8)->v.bytes.ptr, "12345678901234567890.123456789");
    assert_string_equal(noodle_rows_get(rows, 0, 9)->v.bytes.ptr, "x?");
    assert_int_equal(noodle_rows_get(rows, 0, 10)->type, NOODLE_TYPE_NULL);
    assert_int_equal(noodle_rows_get(rows, 0, 11)->type, NOODLE_TYPE_BLOB);
    assert_int_equal(noodle_rows_get(rows, 0, 11)->v.bytes.len, 2);
    assert_memory_equal(noodle_rows_get(rows, 0, 11)->v.bytes.ptr, "\x00\xff", 2);
    assert_string_equal(noodle_rows_get(rows, 0, 12)->v.bytes.ptr, "2024-01-02");
    assert_int_equal(noodle_rows_affected(rows), 0);
    noodle_rows_free(rows);
    noodle_conn_close(c);
}

static void text_and_null_parameters_bind(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_value in[3] = {noodle_text("héllo 'quoted' ?"), noodle_null(), noodle_text_n("", 0)};
    assert_ok(noodle_conn_execute(c, "SELECT ?::text, ?::text IS NULL, length(?::text)", in, 3,
                                  deadline_ms(5000), &rows, &err),
              &err);
    assert_string_equal(noodle_rows_get(rows, 0, 0)->v.bytes.ptr, "héllo 'quoted' ?");
    assert_int_equal(noodle_rows_get(rows, 0, 1)->v.i, 1);
    assert_int_equal(noodle_rows_get(rows, 0, 2)->v.i, 0);
    noodle_rows_free(rows);
    noodle_conn_close(c);
}

static void affected_rows_count_inserts_updates_and_deletes(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_test_exec_ok(c, "CREATE TEMP TABLE aff (x int)");
    assert_ok(noodle_conn_execute(c, "INSERT INTO aff SELECT generate_series(1, 5)", NULL, 0,
                                  deadline_ms(5000), &rows, &err),
              &err);
    assert_int_equal(noodle_rows_columns(rows), 0);
    assert_int_equal(noodle_rows_affected(rows), 5);
    noodle_rows_free(rows);
    assert_ok(noodle_conn_execute(c, "UPDATE aff SET x = x + 1 WHERE x > 2 RETURNING x", NULL, 0,
                                  deadline_ms(5000), &rows, &err),
              &err);
    assert_int_equal(noodle_rows_count(rows), 3);
    assert_int_equal(noodle_rows_affected(rows), 3);
    noodle_rows_free(rows);
    assert_ok(noodle_conn_execute(c, "DELETE FROM aff", NULL, 0, deadline_ms(5000), &rows, &err),
              &err);
    assert_int_equal(noodle_rows_affected(rows), 5);
    noodle_rows_free(rows);
    assert_ok(noodle_conn_execute(c, "SELECT 1 FROM generate_series(1, 4)", NULL, 0,
                                  deadline_ms(5000), &rows, &err),
              &err);
    assert_int_equal(noodle_rows_count(rows), 4);
    assert_int_equal(noodle_rows_affected(rows), 0);
    noodle_rows_free(rows);
    noodle_conn_close(c);
}

static void copy_to_or_from_the_client_fails_5015_and_connection_stays_usable(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_test_exec_ok(c, "CREATE TEMP TABLE cp (x int)");
    int rc = noodle_conn_execute(c, "COPY (SELECT generate_series(1, 1000)) TO STDOUT", NULL, 0,
                                 deadline_ms(5000), &rows, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_UNSUPPORTED);
    rc = noodle_conn_execute(c, "COPY cp FROM STDIN", NULL, 0, deadline_ms(5000), &rows, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_UNSUPPORTED);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM cp"), 0);
    noodle_conn_close(c);
}

static void placeholders_skip_literals_and_jsonb_operators_on_the_server(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_value in[2] = {noodle_int64(5), noodle_text("k")};
    assert_ok(noodle_conn_execute(c,
                                  "SELECT '?' AS a, E'\\'?' AS b, $$?$$ AS c, ?::int8 + 1 AS d, "
                                  "'{\"k\": 1}'::jsonb ?? ? AS e, '{\"k\": 1}'::jsonb ?| "
                                  "array['k'] AS f /* ? */ -- ?",
                                  in, 2, deadline_ms(5000), &rows, &err),
              &err);
    assert_string_equal(noodle_rows_get(rows, 0, 0)->v.bytes.ptr, "?");
    assert_string_equal(noodle_rows_get(rows, 0, 1)->v.bytes.ptr, "'?");
    assert_string_equal(noodle_rows_get(rows, 0, 2)->v.bytes.ptr, "?");
    assert_int_equal(noodle_rows_get(rows, 0, 3)->v.i, 6);
    assert_int_equal(noodle_rows_get(rows, 0, 4)->v.i, 1);
    assert_int_equal(noodle_rows_get(rows, 0, 5)->v.i, 1);
    noodle_rows_free(rows);
    noodle_conn_close(c);
}

static void rows_without_columns_are_counted(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    assert_ok(noodle_conn_execute(c, "SELECT FROM generate_series(1, 3)", NULL, 0,
                                  deadline_ms(5000), &rows, &err),
              &err);
    assert_int_equal(noodle_rows_columns(rows), 0);
    assert_int_equal(noodle_rows_count(rows), 3);
    noodle_rows_free(rows);
    noodle_conn_close(c);
}

/* ---- server errors
 * -------------------------------------------------------------------------------- */

static void unique_violation_fails_5002_with_sqlstate_and_server_message(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_test_exec_ok(c, "CREATE TEMP TABLE uq (id int PRIMARY KEY)");
    noodle_test_exec_ok(c, "INSERT INTO uq VALUES (1)");
    int rc = noodle_conn_execute(c, "INSERT INTO uq VALUES (1)", NULL, 0, deadline_ms(5000), &rows,
                                 &err);
    assert_code(rc, &err, NOODLE_E_QUERY_CONSTRAINT);
    assert_string_equal(err.detail, "SQLSTATE 23505");
    assert_string_equal(
        err.message, "execute failed: duplicate key value violates unique constraint \"uq_pkey\"");
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    noodle_conn_close(c);
}

static void syntax_error_and_several_statements_fail_5001(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    int rc = noodle_conn_execute(c, "SELEC 1", NULL, 0, deadline_ms(5000), &rows, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42601");
    rc = noodle_conn_execute(c, "SELECT 1; SELECT 2", NULL, 0, deadline_ms(5000), &rows, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_SYNTAX);
    rc = noodle_conn_execute(c, "SELECT * FROM no_such_table", NULL, 0, deadline_ms(5000), &rows,
                             &err);
    assert_code(rc, &err, NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42P01");
    noodle_conn_close(c);
}

static void division_by_zero_fails_5010_and_statement_timeout_5012(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    int rc = noodle_conn_execute(c, "SELECT 1 / 0", NULL, 0, deadline_ms(5000), &rows, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_DATA);
    noodle_test_exec_ok(c, "SET statement_timeout = 50");
    rc = noodle_conn_execute(c, "SELECT pg_sleep(2)", NULL, 0, deadline_ms(5000), &rows, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_CANCELED);
    assert_string_equal(err.detail, "SQLSTATE 57014");
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    noodle_conn_close(c);
}

/* ---- transactions
 * ------------------------------------------------------------------------------------ */

static void commit_of_failed_transaction_fails_5011_rolled_back(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_test_exec_ok(c, "CREATE TEMP TABLE cf (x int)");
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, deadline_ms(5000), &err), &err);
    noodle_test_exec_ok(c, "INSERT INTO cf VALUES (1)");
    int rc = noodle_conn_execute(c, "SELECT 1 / 0", NULL, 0, deadline_ms(5000), &rows, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_DATA);
    rc = noodle_conn_execute(c, "SELECT 1", NULL, 0, deadline_ms(5000), &rows, &err);
    assert_code(rc, &err, NOODLE_E_QUERY_TXN_STATE); /* 25P02: transaction aborted */
    rc = noodle_conn_commit(c, deadline_ms(5000), &err);
    assert_code(rc, &err, NOODLE_E_QUERY_TXN_STATE);
    assert_string_equal(err.message, "commit rolled back: the transaction had failed");
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM cf"), 0);
    noodle_conn_close(c);
}

static void savepoints_roll_back_part_of_a_transaction(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_error err;
    noodle_test_exec_ok(c, "CREATE TEMP TABLE sp (x int)");
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, deadline_ms(5000), &err), &err);
    noodle_test_exec_ok(c, "INSERT INTO sp VALUES (1)");
    assert_ok(noodle_conn_savepoint(c, "Sp_1", deadline_ms(5000), &err), &err);
    noodle_test_exec_ok(c, "INSERT INTO sp VALUES (2)");
    assert_ok(noodle_conn_rollback_to(c, "Sp_1", deadline_ms(5000), &err), &err);
    assert_ok(noodle_conn_release(c, "Sp_1", deadline_ms(5000), &err), &err);
    assert_ok(noodle_conn_commit(c, deadline_ms(5000), &err), &err);
    assert_int_equal(noodle_test_query_int(c, "SELECT count(*) FROM sp"), 1);

    assert_code(noodle_conn_savepoint(c, "bad name", deadline_ms(5000), &err), &err,
                NOODLE_E_QUERY_INVALID_SAVEPOINT);
    /* Unknown savepoint: the server's 3B001. */
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, deadline_ms(5000), &err), &err);
    int rc = noodle_conn_rollback_to(c, "nope", deadline_ms(5000), &err);
    assert_code(rc, &err, NOODLE_E_QUERY_INVALID_SAVEPOINT);
    assert_string_equal(err.detail, "SQLSTATE 3B001");
    assert_ok(noodle_conn_rollback(c, deadline_ms(5000), &err), &err);
    noodle_conn_close(c);
}

static void transaction_misuse_fails_5011_without_a_server_warning(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_error err;
    assert_code(noodle_conn_commit(c, deadline_ms(5000), &err), &err, NOODLE_E_QUERY_TXN_STATE);
    assert_code(noodle_conn_rollback(c, deadline_ms(5000), &err), &err, NOODLE_E_QUERY_TXN_STATE);
    assert_code(noodle_conn_savepoint(c, "sp", deadline_ms(5000), &err), &err,
                NOODLE_E_QUERY_TXN_STATE);
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, deadline_ms(5000), &err), &err);
    assert_code(noodle_conn_begin(c, NOODLE_ISOLATION_SERIALIZABLE, deadline_ms(5000), &err), &err,
                NOODLE_E_QUERY_TXN_STATE);
    /* A transaction begun with plain SQL counts too. */
    assert_ok(noodle_conn_rollback(c, deadline_ms(5000), &err), &err);
    noodle_test_exec_ok(c, "BEGIN");
    assert_code(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, deadline_ms(5000), &err), &err,
                NOODLE_E_QUERY_TXN_STATE);
    assert_ok(noodle_conn_commit(c, deadline_ms(5000), &err), &err);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    noodle_conn_close(c);
}

static void begin_sets_each_isolation_level(void **state) {
    (void)state;
    static const struct {
        noodle_isolation iso;
        const char *name;
    } levels[] = {
        {NOODLE_ISOLATION_DEFAULT, "read committed"},
        {NOODLE_ISOLATION_READ_UNCOMMITTED, "read uncommitted"},
        {NOODLE_ISOLATION_READ_COMMITTED, "read committed"},
        {NOODLE_ISOLATION_REPEATABLE_READ, "repeatable read"},
        {NOODLE_ISOLATION_SERIALIZABLE, "serializable"},
    };
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        assert_ok(noodle_conn_begin(c, levels[i].iso, deadline_ms(5000), &err), &err);
        assert_ok(noodle_conn_execute(c, "SHOW transaction_isolation", NULL, 0, deadline_ms(5000),
                                      &rows, &err),
                  &err);
        assert_string_equal(noodle_rows_get(rows, 0, 0)->v.bytes.ptr, levels[i].name);
        noodle_rows_free(rows);
        assert_ok(noodle_conn_rollback(c, deadline_ms(5000), &err), &err);
    }
    noodle_conn_close(c);
}

/* ---- validate and metrics
 * ------------------------------------------------------------------------------ */

static void validate_succeeds_on_a_live_connection(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_error err;
    assert_ok(noodle_conn_validate(c, deadline_ms(5000), &err), &err);
    assert_ok(noodle_conn_validate(c, deadline_ms(5000), &err), &err);
    noodle_test_exec_ok(c, "SELECT 1");
    noodle_conn_close(c);
}

static void metrics_report_database_size_version_and_data_path(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_server_metrics m;
    noodle_error err;
    assert_ok(noodle_conn_metrics(c, deadline_ms(5000), &m, &err), &err);
    assert_true(m.database_size_bytes > 0);
    assert_int_equal(m.role, NOODLE_ROLE_PRIMARY);
    assert_int_equal(m.standby_count, 0);
    assert_int_equal(m.replication_lag_bytes, -1); /* no standby to measure */
    assert_int_equal(m.replication_delay_ms, -1);
    assert_memory_equal(m.server_version, "PostgreSQL ", 11);
    assert_true(strlen(m.server_version) > 11);
    /* The superuser may read data_directory. */
    assert_string_equal(m.data_path, noodle_pg_server_datadir(server));
    noodle_conn_close(c);
}

static void metrics_hide_data_path_from_unprivileged_users(void **state) {
    char u[300];
    (void)state;
    admin("DROP ROLE IF EXISTS noodle_plain", NULL, 0);
    admin("CREATE ROLE noodle_plain LOGIN", NULL, 0);
    snprintf(u, sizeof u, "host=127.0.0.1 port=%d dbname=postgres user=noodle_plain",
             noodle_pg_server_port(server));
    noodle_conn *c = open_url(u);
    noodle_server_metrics m;
    noodle_error err;
    assert_ok(noodle_conn_metrics(c, deadline_ms(5000), &m, &err), &err);
    assert_true(m.database_size_bytes > 0);
    assert_string_equal(m.data_path, "");
    noodle_conn_close(c);
    admin("DROP ROLE noodle_plain", NULL, 0);
}

/* ---- integrity, standbys, archiver ------------------------------------------------------------ */

static noodle_integrity_result integrity_ok(noodle_conn *c, noodle_integrity_level level) {
    noodle_integrity_result r;
    noodle_error err;
    assert_ok(noodle_conn_integrity(c, level, deadline_ms(30000), &r, &err), &err);
    return r;
}

static void quick_integrity_reads_the_catalog_and_reports_checksums_off_as_unknown(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_integrity_result r = integrity_ok(c, NOODLE_INTEGRITY_QUICK);
    assert_int_equal(r.problems, 0);
    assert_string_equal(r.first_problem, "");
    assert_non_null(strstr(r.method, "pg_class"));
    assert_null(strstr(r.method, "amcheck")); /* QUICK never runs it */
    char checksums[16];
    admin("SHOW data_checksums", checksums, sizeof checksums);
    if (strcmp(checksums, "off") == 0) assert_int_equal(r.checksum_failures, -1);
    else assert_int_equal(r.checksum_failures, 0);
    noodle_conn_close(c);
}

static void full_integrity_runs_amcheck_on_the_catalog_indexes_only_once_installed(void **state) {
    (void)state;
    char path_before[256], path_after[256];
    admin("DROP EXTENSION IF EXISTS amcheck", NULL, 0);
    noodle_conn *c = open_default();
    noodle_integrity_result r = integrity_ok(c, NOODLE_INTEGRITY_FULL);
    assert_int_equal(r.problems, 0);
    assert_non_null(strstr(r.method, "amcheck not installed"));
    admin("CREATE EXTENSION amcheck", NULL, 0);
    admin("SHOW search_path", path_before, sizeof path_before);
    r = integrity_ok(c, NOODLE_INTEGRITY_FULL);
    assert_int_equal(r.problems, 0);
    assert_string_equal(r.first_problem, "");
    const char *ran = strstr(r.method, "amcheck bt_index_check on ");
    assert_non_null(ran);
    assert_true(atoi(ran + strlen("amcheck bt_index_check on ")) > 50); /* PG 15: ~120 */
    /* the session's search_path is put back */
    noodle_rows *rows = NULL;
    noodle_error err;
    assert_ok(noodle_conn_execute(c, "SHOW search_path", NULL, 0, deadline_ms(5000), &rows, &err),
              &err);
    const noodle_value *v = noodle_rows_get(rows, 0, 0);
    snprintf(path_after, sizeof path_after, "%.*s", (int)v->v.bytes.len,
             (const char *)v->v.bytes.ptr);
    noodle_rows_free(rows);
    assert_string_equal(path_after, path_before);
    noodle_conn_close(c);
    admin("DROP EXTENSION amcheck", NULL, 0);
}

static void full_integrity_without_amcheck_privilege_says_it_did_not_run(void **state) {
    char u[300];
    (void)state;
    admin("CREATE EXTENSION IF NOT EXISTS amcheck", NULL, 0);
    admin("DROP ROLE IF EXISTS noodle_checker", NULL, 0);
    admin("CREATE ROLE noodle_checker LOGIN", NULL, 0);
    snprintf(u, sizeof u, "host=127.0.0.1 port=%d dbname=postgres user=noodle_checker",
             noodle_pg_server_port(server));
    noodle_conn *c = open_url(u);
    noodle_integrity_result r = integrity_ok(c, NOODLE_INTEGRITY_FULL);
    assert_int_equal(r.problems, 0);
    assert_non_null(strstr(r.method, "amcheck not run: permission denied"));
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    noodle_test_exec_ok(c, "SELECT 1");
    noodle_conn_close(c);
    admin("DROP ROLE noodle_checker", NULL, 0);
    admin("DROP EXTENSION amcheck", NULL, 0);
}

static void integrity_inside_a_transaction_is_refused_with_5011(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_error err;
    noodle_integrity_result r;
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, deadline_ms(5000), &err), &err);
    assert_code(noodle_conn_integrity(c, NOODLE_INTEGRITY_QUICK, deadline_ms(5000), &r, &err), &err,
                NOODLE_E_QUERY_TXN_STATE);
    assert_int_equal(r.problems, -1);
    assert_ok(noodle_conn_commit(c, deadline_ms(5000), &err), &err); /* the transaction is intact */
    noodle_conn_close(c);
}

static noodle_server_metrics metrics_of(noodle_conn *c) {
    noodle_server_metrics m;
    noodle_error err;
    assert_ok(noodle_conn_metrics(c, deadline_ms(5000), &m, &err), &err);
    return m;
}

/* The server reports zeros in pg_stat_archiver even with archive_mode off;
 * with no archiver running, the backend reports every field unknown. */
static void archive_fields_are_unknown_when_no_archiver_runs(void **state) {
    (void)state;
    char mode[16];
    admin("SHOW archive_mode", mode, sizeof mode);
    assert_string_equal(mode, "off");
    noodle_conn *c = open_default();
    noodle_server_metrics m = metrics_of(c);
    assert_int_equal(m.archive_archived_count, -1);
    assert_int_equal(m.archive_failed_count, -1);
    assert_int_equal(m.archive_last_archived_age_ms, -1);
    assert_int_equal(m.archive_last_failed_age_ms, -1);
    noodle_conn_close(c);
}

static void archive_fields_count_successes_and_failures_with_their_ages(void **state) {
    (void)state;
    char msg[4096], out[64];
    noodle_pg_server *arch = NULL;
    noodle_pg_server_options o = {.extra_conf = "archive_mode = on\narchive_command = 'true'\n"};
    if (noodle_pg_server_start(&o, &arch, msg, sizeof msg) != 0) fail_msg("start: %s", msg);
    noodle_conn *c = open_url(noodle_pg_server_conninfo(arch));
    noodle_test_exec_ok(c, "CREATE TABLE arch_t (x int)");
    noodle_test_exec_ok(c, "SELECT pg_switch_wal()");
    noodle_server_metrics m = metrics_of(c);
    int64_t until = noodle_test_now_ms() + 20000;
    while (m.archive_archived_count < 1 && noodle_test_now_ms() < until) {
        noodle_test_sleep_ms(50);
        m = metrics_of(c);
    }
    assert_true(m.archive_archived_count >= 1);
    assert_true(m.archive_last_archived_age_ms >= 0 && m.archive_last_archived_age_ms < 60000);
    assert_int_equal(m.archive_failed_count, 0);
    assert_int_equal(m.archive_last_failed_age_ms, -1); /* never failed */
    /* now every archive attempt fails */
    if (noodle_pg_server_query(arch, "ALTER SYSTEM SET archive_command = 'false'", out, sizeof out) ||
        noodle_pg_server_query(arch, "SELECT pg_reload_conf()", out, sizeof out))
        fail_msg("reconfigure: %s", out);
    noodle_test_sleep_ms(200); /* the archiver reads the new setting */
    noodle_test_exec_ok(c, "INSERT INTO arch_t VALUES (1)");
    noodle_test_exec_ok(c, "SELECT pg_switch_wal()");
    until = noodle_test_now_ms() + 20000;
    while (m.archive_failed_count < 1 && noodle_test_now_ms() < until) {
        noodle_test_sleep_ms(50);
        m = metrics_of(c);
    }
    assert_true(m.archive_failed_count >= 1);
    assert_true(m.archive_last_failed_age_ms >= 0 && m.archive_last_failed_age_ms < 60000);
    noodle_conn_close(c);
    noodle_pg_server_stop(arch);
}

static void a_primary_lists_its_standby_with_its_lag_and_the_standby_lists_none(void **state) {
    (void)state;
    char msg[4096];
    noodle_pg_server *standby = NULL;
    noodle_pg_server_options o = {.standby_of = server, .name = "noodle_sb1"};
    if (noodle_pg_server_start(&o, &standby, msg, sizeof msg) != 0) fail_msg("standby: %s", msg);
    if (noodle_pg_server_wait_streaming(server, 1, 20000, msg, sizeof msg) != 0)
        fail_msg("streaming: %s", msg);
    noodle_conn *p = open_default();
    noodle_server_metrics m = metrics_of(p);
    /* replay_lsn is NULL (lag unknown) until the standby's first reply */
    int64_t until = noodle_test_now_ms() + 10000;
    while (m.standbys[0].lag_bytes < 0 && noodle_test_now_ms() < until) {
        noodle_test_sleep_ms(20);
        m = metrics_of(p);
    }
    assert_int_equal(m.standby_count, 1);
    assert_string_equal(m.standbys[0].name, "noodle_sb1");
    assert_string_equal(m.standbys[0].state, "streaming");
    assert_true(m.standbys[0].lag_bytes >= 0);
    assert_true(m.standbys[0].replay_lag_ms >= -1); /* NULL once idle and caught up */
    assert_int_equal(m.replication_lag_bytes, m.standbys[0].lag_bytes);
    assert_string_equal(m.standbys[1].name, "");
    assert_int_equal(m.standbys[1].lag_bytes, -1);
    noodle_conn *s = open_url(noodle_pg_server_conninfo(standby));
    m = metrics_of(s);
    assert_int_equal(m.role, NOODLE_ROLE_STANDBY);
    assert_int_equal(m.standby_count, -1); /* a standby does not list standbys */
    assert_string_equal(m.standbys[0].name, "");
    assert_int_equal(m.archive_archived_count, -1);
    /* QUICK integrity works on a standby too (read only) */
    assert_int_equal(integrity_ok(s, NOODLE_INTEGRITY_QUICK).problems, 0);
    noodle_conn_close(s);
    noodle_conn_close(p);
    noodle_pg_server_stop(standby);
}

/* ---- multi-host connect: a time budget per host ---------------------------------------------- */

/* Open url with a deadline; returns rc and the elapsed milliseconds. */
static int open_timed(const char *u, int deadline, noodle_conn **c, noodle_error *err,
                      int64_t *elapsed) {
    noodle_connect_params p = {.url = u, .deadline = 0, .clock = NULL, .application_name = NULL};
    int64_t t0 = noodle_test_now_ms();
    p.deadline = deadline_ms(deadline);
    int rc = noodle_conn_open(noodle_backend_postgres(), &p, c, err);
    *elapsed = noodle_test_now_ms() - t0;
    return rc;
}

static void multi_host_connect_moves_past_a_frozen_first_host_within_its_share(void **state) {
    fake_server *frozen = fake_start(FAKE_FROZEN);
    noodle_conn *c = NULL;
    noodle_error err;
    int64_t elapsed;
    char u[300];
    (void)state;
    snprintf(u, sizeof u, "host=127.0.0.1,127.0.0.1 port=%d,%d dbname=postgres user=postgres",
             frozen->port, noodle_pg_server_port(server));
    /* Two hosts, 10 s: the frozen one gets half, then the real one answers. */
    assert_ok(open_timed(u, 10000, &c, &err, &elapsed), &err);
    assert_true(elapsed >= 4500);
    assert_true(elapsed < 8000);
    assert_int_equal(noodle_test_query_int(c, "SELECT 7"), 7);
    noodle_conn_close(c);
    fake_stop(frozen);
}

static void multi_host_connect_gives_each_host_connect_timeout(void **state) {
    /* connect_timeout=1 counts as 2 s, as in libpq. */
    static const char *const timeouts[] = {"2", "1"};
    fake_server *frozen = fake_start(FAKE_FROZEN);
    (void)state;
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        noodle_conn *c = NULL;
        noodle_error err;
        int64_t elapsed;
        char u[300];
        snprintf(u, sizeof u,
                 "host=127.0.0.1,127.0.0.1 port=%d,%d dbname=postgres user=postgres "
                 "connect_timeout=%s",
                 frozen->port, noodle_pg_server_port(server), timeouts[i]);
        assert_ok(open_timed(u, 10000, &c, &err, &elapsed), &err);
        assert_true(elapsed >= 1900);
        assert_true(elapsed < 4000);
        assert_int_equal(noodle_test_query_int(c, "SELECT 8"), 8);
        noodle_conn_close(c);
    }
    fake_stop(frozen);
}

static void multi_host_connect_failure_names_every_host(void **state) {
    fake_server *frozen = fake_start(FAKE_FROZEN);
    noodle_conn *c = NULL;
    noodle_error err;
    int64_t elapsed;
    char u[300], want[64];
    int dead = dead_port();
    (void)state;
    snprintf(u, sizeof u,
             "host=127.0.0.1,127.0.0.1 port=%d,%d dbname=postgres user=postgres password=hunter22 "
             "connect_timeout=2",
             frozen->port, dead);
    int rc = open_timed(u, 10000, &c, &err, &elapsed);
    assert_code(rc, &err, NOODLE_E_CONNECT_FAILED);
    assert_null(c);
    assert_true(elapsed >= 1900);
    assert_true(elapsed < 4000);
    snprintf(want, sizeof want, "port %d failed: timeout expired", frozen->port);
    assert_non_null(strstr(err.message, want));
    snprintf(want, sizeof want, "port %d failed: Connection refused", dead);
    assert_non_null(strstr(err.message, want));
    assert_null(strstr(err.message, "hunter22"));
    assert_null(strchr(err.message, '\n'));
    fake_stop(frozen);
}

static void single_frozen_host_fails_4002_after_connect_timeout(void **state) {
    fake_server *frozen = fake_start(FAKE_FROZEN);
    noodle_conn *c = NULL;
    noodle_error err;
    int64_t elapsed;
    char u[300];
    (void)state;
    snprintf(u, sizeof u, "host=127.0.0.1 port=%d dbname=postgres user=postgres connect_timeout=2",
             frozen->port);
    int rc = open_timed(u, 10000, &c, &err, &elapsed);
    assert_code(rc, &err, NOODLE_E_CONNECT_TIMEOUT);
    assert_true(elapsed >= 1900);
    assert_true(elapsed < 4000);
    assert_non_null(strstr(err.message, "timeout expired after 2000 ms"));
    fake_stop(frozen);
}

static void fresh_attempt_after_a_frozen_host_keeps_target_session_attrs(void **state) {
    fake_server *frozen = fake_start(FAKE_FROZEN);
    noodle_conn *c = NULL;
    noodle_error err;
    int64_t elapsed;
    char u[400];
    (void)state;
    /* The real server, for this role, is read-only: with read-write asked
     * for, the attempt started after the frozen host must refuse it too. */
    admin("DROP ROLE IF EXISTS noodle_ro", NULL, 0);
    admin("CREATE ROLE noodle_ro LOGIN", NULL, 0);
    admin("ALTER ROLE noodle_ro SET default_transaction_read_only = on", NULL, 0);
    snprintf(u, sizeof u,
             "host=127.0.0.1,127.0.0.1 port=%d,%d dbname=postgres user=noodle_ro "
             "target_session_attrs=read-write connect_timeout=2",
             frozen->port, noodle_pg_server_port(server));
    int rc = open_timed(u, 10000, &c, &err, &elapsed);
    assert_code(rc, &err, NOODLE_E_CONNECT_FAILED);
    assert_null(c);
    assert_non_null(strstr(err.message, "timeout expired"));
    assert_non_null(strstr(err.message, "read-only"));
    assert_true(elapsed < 4000);
    /* Without target_session_attrs the same hosts do connect. */
    snprintf(u, sizeof u,
             "host=127.0.0.1,127.0.0.1 port=%d,%d dbname=postgres user=noodle_ro connect_timeout=2",
             frozen->port, noodle_pg_server_port(server));
    assert_ok(open_timed(u, 10000, &c, &err, &elapsed), &err);
    noodle_conn_close(c);
    admin("DROP ROLE noodle_ro", NULL, 0);
    fake_stop(frozen);
}

/* ---- secrets in connect errors --------------------------------------------------------------- */

static void malformed_uri_password_never_appears_in_the_connect_error(void **state) {
    static const char *const urls[] = {
        "postgresql://user:pa%zzword@127.0.0.1/app",
        "postgresql://user@127.0.0.1/app?password=pa%zzword",
    };
    (void)state;
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        noodle_connect_params p = {
            .url = urls[i], .deadline = 0, .clock = NULL, .application_name = NULL};
        noodle_conn *c = NULL;
        noodle_error err;
        char text[1024];
        p.deadline = deadline_ms(5000);
        assert_code(noodle_conn_open(noodle_backend_postgres(), &p, &c, &err), &err,
                    NOODLE_E_CONNECT_FAILED);
        noodle_error_format(&err, text, sizeof text);
        if (strstr(text, "pa%zzword") != NULL || strstr(text, "zzword") != NULL)
            fail_msg("password in the error: %s", text);
        assert_non_null(strstr(text, "percent-encoded"));
    }
}

/* ---- standard_conforming_strings ------------------------------------------------------------- */

static void placeholders_follow_standard_conforming_strings_off_and_on(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_value bang = noodle_text("!");

    noodle_test_exec_ok(c, "SET standard_conforming_strings = off");
    /* A backslash escapes the quote: 'it\'s ?' is one string. */
    assert_ok(noodle_conn_execute(c, "SELECT 'it\\'s ?' || ?", &bang, 1, deadline_ms(5000), &rows,
                                  &err),
              &err);
    assert_string_equal(noodle_rows_get(rows, 0, 0)->v.bytes.ptr, "it's ?!");
    noodle_rows_free(rows);

    noodle_test_exec_ok(c, "SET standard_conforming_strings = on");
    /* Now the backslash is a plain character and 'a\' a whole string. */
    assert_ok(
        noodle_conn_execute(c, "SELECT 'a\\' || ?", &bang, 1, deadline_ms(5000), &rows, &err),
        &err);
    assert_string_equal(noodle_rows_get(rows, 0, 0)->v.bytes.ptr, "a\\!");
    noodle_rows_free(rows);
    noodle_conn_close(c);
}

/* ---- connection states libpq cannot go on from ----------------------------------------------- */

static void copy_both_response_fails_4003_and_closes_the_connection(void **state) {
    fake_server *fake = fake_start(FAKE_COPY_BOTH);
    noodle_rows *rows = NULL;
    noodle_error err;
    char u[300];
    (void)state;
    fake_url(fake, u, sizeof u);
    noodle_conn *c = open_url(u);
    void *handle = noodle_conn_handle(c);
    int rc = noodle_conn_execute(c, "START_REPLICATION 0/0", NULL, 0, deadline_ms(5000), &rows,
                                 &err);
    assert_code(rc, &err, NOODLE_E_CONNECTION_LOST);
    assert_non_null(strstr(err.message, "COPY BOTH"));
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    assert_null(noodle__pg_conn(handle));
    noodle_conn_close(c);
    fake_stop(fake);
}

static void server_closing_mid_query_fails_4003_and_closes_the_connection(void **state) {
    fake_server *fake = fake_start(FAKE_CLOSE_ON_QUERY);
    noodle_rows *rows = NULL;
    noodle_error err;
    char u[300];
    (void)state;
    fake_url(fake, u, sizeof u);
    noodle_conn *c = open_url(u);
    void *handle = noodle_conn_handle(c);
    int64_t t0 = noodle_test_now_ms();
    int rc = noodle_conn_execute(c, "SELECT 1", NULL, 0, deadline_ms(5000), &rows, &err);
    assert_code(rc, &err, NOODLE_E_CONNECTION_LOST);
    assert_true(noodle_test_now_ms() - t0 < 2000);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    assert_null(noodle__pg_conn(handle));
    /* The backend itself says "lost" from now on. */
    rc = noodle_backend_postgres()->validate(handle, deadline_ms(1000), &err);
    assert_code(rc, &err, NOODLE_E_CONNECTION_LOST);
    noodle_conn_close(c);
    fake_stop(fake);
}

static void connection_left_mid_command_fails_4003_and_is_broken(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    void *handle = noodle_conn_handle(c);
    noodle_rows *rows = NULL;
    noodle_error err;
    /* libpq left mid-command (as after a failed COPY drain): it would refuse
     * every later command with "another command is already in progress". */
    assert_int_equal(PQsendQuery(noodle__pg_conn(handle), "SELECT 1"), 1);
    int rc = noodle_conn_execute(c, "SELECT 2", NULL, 0, deadline_ms(5000), &rows, &err);
    assert_code(rc, &err, NOODLE_E_CONNECTION_LOST);
    assert_non_null(strstr(err.message, "left unfinished"));
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    assert_null(noodle__pg_conn(handle));
    noodle_conn_close(c);
}

/* ---- name resolution ------------------------------------------------------------------------- */

static void host_name_is_resolved_by_noodle_and_kept_for_libpq(void **state) {
    char u[300];
    (void)state;
    snprintf(u, sizeof u, "host=localhost port=%d dbname=postgres user=postgres",
             noodle_pg_server_port(server));
    noodle_conn *c = open_url(u);
    PGconn *pg = noodle__pg_conn(noodle_conn_handle(c));
    assert_true(atomic_load(&resolver_calls) >= 1);
    /* libpq got the address as hostaddr and still knows the name. */
    assert_string_equal(PQhost(pg), "localhost");
    assert_string_equal(PQhostaddr(pg), "127.0.0.1");
    assert_int_equal(noodle_test_query_int(c, "SELECT 9"), 9);
    noodle_conn_close(c);
}

static void slow_resolver_cannot_hold_connect_past_its_deadline(void **state) {
    noodle_conn *c = NULL;
    noodle_error err;
    int64_t elapsed;
    char u[300];
    (void)state;
    snprintf(u, sizeof u, "host=" SLOW_HOST " port=%d dbname=postgres user=postgres",
             noodle_pg_server_port(server));
    int rc = open_timed(u, 500, &c, &err, &elapsed);
    assert_code(rc, &err, NOODLE_E_CONNECT_TIMEOUT);
    assert_null(c);
    assert_true(elapsed >= 450);
    assert_true(elapsed < 1500);
    assert_non_null(strstr(err.message, SLOW_HOST));
}

static void slow_resolver_for_the_first_host_moves_on_to_the_next(void **state) {
    noodle_conn *c = NULL;
    noodle_error err;
    int64_t elapsed;
    char u[300];
    (void)state;
    snprintf(u, sizeof u,
             "host=" SLOW_HOST ",127.0.0.1 port=%d dbname=postgres user=postgres connect_timeout=2",
             noodle_pg_server_port(server));
    assert_ok(open_timed(u, 10000, &c, &err, &elapsed), &err);
    assert_true(elapsed >= 1900);
    assert_true(elapsed < 4000);
    assert_int_equal(noodle_test_query_int(c, "SELECT 10"), 10);
    noodle_conn_close(c);
}

/* ---- the prepared-statement cache ------------------------------------------------------------- */

/* Fail unless c's statement cache counted hits and misses and holds size. */
#define assert_cache(c, hits, misses, size) \
    noodle_test_assert_cache((c), noodle__pg_stmt_cache_stats, (hits), (misses), (size))

/* The named statements of noodle's caches that c's server session holds now
 * (this query, itself cached, counts too). */
static int64_t server_statements(noodle_conn *c) {
    return noodle_test_query_int(
        c, "SELECT count(*) FROM pg_prepared_statements WHERE starts_with(name, 'noodle_')");
}

static int64_t query_int_param(noodle_conn *c, const char *sql, noodle_value v) {
    noodle_rows *rows = NULL;
    noodle_error err;
    assert_ok(noodle_conn_execute(c, sql, &v, 1, deadline_ms(5000), &rows, &err), &err);
    assert_int_equal(noodle_rows_get(rows, 0, 0)->type, NOODLE_TYPE_INT64);
    int64_t got = noodle_rows_get(rows, 0, 0)->v.i;
    noodle_rows_free(rows);
    return got;
}

static void repeated_execution_prepares_once_then_hits_the_cache(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    assert_cache(c, 0, 0, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(query_int_param(c, "SELECT ? + 1", noodle_int64(41)), 42);
    assert_cache(c, 2, 1, 1);
    assert_int_equal(server_statements(c), 2); /* SELECT ? + 1 and the count */
    noodle_conn_close(c);
}

static void the_cache_keeps_64_statements_and_evicts_the_least_recently_used(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_test_cache_evicts_the_least_recently_used(c, NOODLE_PG_STMT_CACHE_SIZE, noodle__pg_stmt_cache_stats);
    noodle_conn_close(c);
}

static void evicted_statements_are_deallocated_on_the_server_in_batches(void **state) {
    (void)state;
    enum { CAP = NOODLE_PG_STMT_CACHE_SIZE };
    noodle_conn *c = open_default();
    char sql[32];
    for (int i = 0; i < 3 * CAP; i++) {
        snprintf(sql, sizeof sql, "SELECT %d", i);
        assert_int_equal(noodle_test_query_int(c, sql), i);
    }
    int64_t held = server_statements(c);
    assert_true(held >= CAP);
    assert_true(held <= CAP + NOODLE_PG_DEALLOCATE_BATCH);
    noodle_conn_close(c);
}

static void inside_a_long_transaction_the_server_holds_at_most_twice_the_cache(void **state) {
    (void)state;
    enum { CAP = NOODLE_PG_STMT_CACHE_SIZE };
    noodle_conn *c = open_default();
    noodle_error err;
    char sql[32];
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, deadline_ms(5000), &err), &err);
    for (int i = 0; i < 4 * CAP; i++) { /* nothing can be deallocated until the end */
        snprintf(sql, sizeof sql, "SELECT %d", i);
        assert_int_equal(noodle_test_query_int(c, sql), i); /* unnamed once the list is full */
    }
    assert_true(server_statements(c) <= 2 * CAP);
    assert_ok(noodle_conn_commit(c, deadline_ms(5000), &err), &err);
    noodle_test_exec_ok(c, "SELECT 'a miss flushes the list'");
    assert_true(server_statements(c) <= CAP + NOODLE_PG_DEALLOCATE_BATCH);
    noodle_conn_close(c);
}

static void a_column_type_change_re_prepares_the_statement_and_returns_the_new_type(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_test_exec_ok(c, "CREATE TEMP TABLE ddl_probe (x int4)");
    noodle_test_exec_ok(c, "INSERT INTO ddl_probe VALUES (1)");
    for (int i = 0; i < 2; i++)
        assert_int_equal(noodle_test_query_int(c, "SELECT * FROM ddl_probe"), 1);
    noodle_test_exec_ok(c, "ALTER TABLE ddl_probe ALTER COLUMN x TYPE text");
    /* the server refuses the old plan ("cached plan must not change result
     * type", 0A000) before running it; outside a transaction it is prepared
     * again and run once more */
    for (int i = 0; i < 2; i++) {
        noodle_rows *rows = NULL;
        noodle_error err;
        assert_ok(noodle_conn_execute(c, "SELECT * FROM ddl_probe", NULL, 0, deadline_ms(5000),
                                      &rows, &err),
                  &err);
        assert_int_equal(noodle_rows_get(rows, 0, 0)->type, NOODLE_TYPE_TEXT);
        assert_string_equal(noodle_rows_get(rows, 0, 0)->v.bytes.ptr, "1");
        noodle_rows_free(rows);
    }
    /* CREATE, INSERT, SELECT (then a hit), ALTER, the stale hit prepared
     * again, then a hit on the new statement */
    assert_cache(c, 3, 5, 4);
    noodle_conn_close(c);
}

static void a_column_type_change_inside_a_transaction_fails_and_rollback_recovers(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_test_exec_ok(c, "CREATE TEMP TABLE ddl_txn (x int4)");
    noodle_test_exec_ok(c, "INSERT INTO ddl_txn VALUES (1)");
    assert_int_equal(noodle_test_query_int(c, "SELECT * FROM ddl_txn"), 1);
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, deadline_ms(5000), &err), &err);
    noodle_test_exec_ok(c, "ALTER TABLE ddl_txn ALTER COLUMN x TYPE text");
    /* the error aborted the transaction: no retry inside it */
    int rc = noodle_conn_execute(c, "SELECT * FROM ddl_txn", NULL, 0, deadline_ms(5000), &rows,
                                 &err);
    assert_code(rc, &err, NOODLE_E_QUERY_FAILED);
    assert_string_equal(err.detail, "SQLSTATE 0A000");
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    assert_ok(noodle_conn_rollback(c, deadline_ms(5000), &err), &err);
    assert_int_equal(noodle_test_query_int(c, "SELECT * FROM ddl_txn"), 1); /* prepared anew */
    noodle_conn_close(c);
}

static void parameter_types_are_part_of_the_key(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    const char *sql = "SELECT pg_typeof(?)::text";
    const noodle_value in[] = {noodle_int64(1), noodle_double(1.5), noodle_blob("b", 1),
                               noodle_int64(2)};
    const char *const want[] = {"bigint", "double precision", "bytea", "bigint"};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        assert_ok(noodle_conn_execute(c, sql, &in[i], 1, deadline_ms(5000), &rows, &err), &err);
        assert_string_equal(noodle_rows_get(rows, 0, 0)->v.bytes.ptr, want[i]);
        noodle_rows_free(rows);
    }
    assert_cache(c, 1, 3, 3); /* one statement per type; the second bigint is a hit */
    /* an untyped NULL leaves the type to the server, which cannot tell */
    noodle_value null = noodle_null();
    assert_code(noodle_conn_execute(c, sql, &null, 1, deadline_ms(5000), &rows, &err), &err,
                NOODLE_E_QUERY_SYNTAX);
    assert_string_equal(err.detail, "SQLSTATE 42P18");
    assert_cache(c, 1, 4, 3);
    noodle_conn_close(c);
}

static void a_failed_prepare_is_not_cached_and_fails_5001(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    for (int i = 0; i < 2; i++) {
        int rc = noodle_conn_execute(c, "SELEC 1", NULL, 0, deadline_ms(5000), &rows, &err);
        assert_code(rc, &err, NOODLE_E_QUERY_SYNTAX);
        assert_string_equal(err.detail, "SQLSTATE 42601");
    }
    assert_code(noodle_conn_execute(c, "SELECT 1; SELECT 2", NULL, 0, deadline_ms(5000), &rows,
                                    &err),
                &err, NOODLE_E_QUERY_SYNTAX);
    assert_cache(c, 0, 3, 0);
    assert_int_equal(server_statements(c), 1); /* only the count */
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    noodle_conn_close(c);
}

static void an_aborted_transaction_fails_5011_and_the_cache_works_after_rollback(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    assert_int_equal(noodle_test_query_int(c, "SELECT 1"), 1); /* cached */
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, deadline_ms(5000), &err), &err);
    noodle_value zero = noodle_int64(0);
    assert_code(noodle_conn_execute(c, "SELECT 1 / ?", &zero, 1, deadline_ms(5000), &rows, &err),
                &err, NOODLE_E_QUERY_DATA);
    /* a cached statement: Bind refused (25P02) */
    assert_code(noodle_conn_execute(c, "SELECT 1", NULL, 0, deadline_ms(5000), &rows, &err), &err,
                NOODLE_E_QUERY_TXN_STATE);
    assert_string_equal(err.detail, "SQLSTATE 25P02");
    /* a new statement: Parse refused (25P02), nothing cached */
    assert_code(noodle_conn_execute(c, "SELECT 2", NULL, 0, deadline_ms(5000), &rows, &err), &err,
                NOODLE_E_QUERY_TXN_STATE);
    assert_string_equal(err.detail, "SQLSTATE 25P02");
    assert_cache(c, 1, 3, 2); /* SELECT 1 and SELECT 1 / ? */
    assert_ok(noodle_conn_rollback(c, deadline_ms(5000), &err), &err);
    assert_int_equal(noodle_test_query_int(c, "SELECT 1"), 1);
    assert_int_equal(noodle_test_query_int(c, "SELECT 2"), 2);
    assert_cache(c, 2, 4, 3);
    noodle_conn_close(c);
}

static void a_statement_deallocated_behind_the_cache_is_prepared_again(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    noodle_rows *rows = NULL;
    noodle_error err;
    char sql[96];
    assert_int_equal(noodle_test_query_int(c, "SELECT 42"), 42);
    assert_ok(noodle_conn_execute(c,
                                  "SELECT name FROM pg_prepared_statements "
                                  "WHERE statement = 'SELECT 42'",
                                  NULL, 0, deadline_ms(5000), &rows, &err),
              &err);
    assert_int_equal(noodle_rows_count(rows), 1);
    snprintf(sql, sizeof sql, "DEALLOCATE %s",
             (const char *)noodle_rows_get(rows, 0, 0)->v.bytes.ptr);
    noodle_rows_free(rows);
    noodle_test_exec_ok(c, sql);
    /* the hit fails in Bind (26000): dropped, prepared again, run */
    assert_int_equal(noodle_test_query_int(c, "SELECT 42"), 42);
    assert_cache(c, 1, 4, 3);
    noodle_conn_close(c);
}

static void discard_all_empties_the_cache(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    assert_int_equal(noodle_test_query_int(c, "SELECT 7"), 7);
    assert_int_equal(noodle_test_query_int(c, "SELECT 7"), 7);
    noodle_test_exec_ok(c, "DISCARD ALL");
    assert_cache(c, 1, 2, 0);
    assert_int_equal(noodle_test_query_int(c, "SELECT 7"), 7); /* prepared again, no 26000 */
    assert_cache(c, 1, 3, 1);
    noodle_test_exec_ok(c, "DEALLOCATE ALL");
    assert_cache(c, 1, 4, 0);
    noodle_conn_close(c);
}

static void a_reopened_connection_starts_with_an_empty_cache(void **state) {
    (void)state;
    noodle_conn *c = open_default();
    assert_int_equal(noodle_test_query_int(c, "SELECT 3"), 3);
    assert_int_equal(noodle_test_query_int(c, "SELECT 3"), 3);
    assert_cache(c, 1, 1, 1);
    noodle_conn_close(c);
    c = open_default();
    assert_cache(c, 0, 0, 0);
    assert_int_equal(server_statements(c), 1); /* the new session holds only the count */
    assert_int_equal(noodle_test_query_int(c, "SELECT 3"), 3); /* prepared again */
    assert_cache(c, 0, 2, 2);
    noodle_conn_close(c);
}

static int cache_back_on(void **state) {
    (void)state;
    noodle__pg_set_stmt_cache(true);
    return 0;
}

static void with_the_cache_off_statements_run_unnamed(void **state) {
    (void)state;
    noodle_conn *before = open_default();
    noodle__pg_set_stmt_cache(false); /* read at connect: before keeps its cache */
    noodle_conn *c = open_default();
    noodle__pg_set_stmt_cache(true);
    for (int i = 0; i < 2; i++)
        assert_int_equal(noodle_test_query_int(c, "SELECT 5"), 5);
    assert_int_equal(server_statements(c), 0);
    assert_cache(c, 0, 0, 0);
    assert_int_equal(noodle_test_query_int(before, "SELECT 5"), 5);
    assert_cache(before, 0, 1, 1);
    noodle_conn_close(c);
    noodle_conn_close(before);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(query_on_frozen_server_returns_4004_by_deadline, thaw_server),
        cmocka_unit_test_teardown(connect_to_frozen_server_returns_4002_by_deadline, thaw_server),
        cmocka_unit_test_teardown(close_on_frozen_server_returns_at_once, thaw_server),
        cmocka_unit_test(slow_query_returns_4004_by_deadline_and_handle_reports_4003),
        cmocka_unit_test(terminated_backend_fails_next_execute_with_4003_or_4010),
        cmocka_unit_test(socket_has_keepalive_and_tcp_user_timeout_10000_by_default),
        cmocka_unit_test(conninfo_tcp_user_timeout_overrides_the_default),
        cmocka_unit_test(uri_query_parameters_override_the_defaults_too),
        cmocka_unit_test(multi_host_conninfo_skips_a_dead_first_host),
        cmocka_unit_test(application_name_is_set_and_conninfo_overrides_it),
        cmocka_unit_test(refused_connection_fails_with_4001),
        cmocka_unit_test(unknown_role_fails_connect_with_4009),
        cmocka_unit_test(unparseable_conninfo_fails_with_4001),
        cmocka_unit_test(normal_node_reports_primary_role),
        cmocka_unit_test_teardown(read_only_node_reports_read_only_and_refuses_writes_with_5009,
                                  reset_read_only),
        cmocka_unit_test(text_parameter_with_nul_is_refused_with_5007_and_nothing_written),
        cmocka_unit_test(placeholder_count_mismatch_fails_5006_and_sends_nothing),
        cmocka_unit_test(bytea_round_trips_all_256_byte_values),
        cmocka_unit_test(int64_min_and_max_round_trip),
        cmocka_unit_test(double_infinities_nan_and_extremes_round_trip),
        cmocka_unit_test(results_are_typed_by_column_type),
        cmocka_unit_test(text_and_null_parameters_bind),
        cmocka_unit_test(affected_rows_count_inserts_updates_and_deletes),
        cmocka_unit_test(copy_to_or_from_the_client_fails_5015_and_connection_stays_usable),
        cmocka_unit_test(placeholders_skip_literals_and_jsonb_operators_on_the_server),
        cmocka_unit_test(rows_without_columns_are_counted),
        cmocka_unit_test(unique_violation_fails_5002_with_sqlstate_and_server_message),
        cmocka_unit_test(syntax_error_and_several_statements_fail_5001),
        cmocka_unit_test(division_by_zero_fails_5010_and_statement_timeout_5012),
        cmocka_unit_test(commit_of_failed_transaction_fails_5011_rolled_back),
        cmocka_unit_test(savepoints_roll_back_part_of_a_transaction),
        cmocka_unit_test(transaction_misuse_fails_5011_without_a_server_warning),
        cmocka_unit_test(begin_sets_each_isolation_level),
        cmocka_unit_test(validate_succeeds_on_a_live_connection),
        cmocka_unit_test(metrics_report_database_size_version_and_data_path),
        cmocka_unit_test(metrics_hide_data_path_from_unprivileged_users),
        cmocka_unit_test(quick_integrity_reads_the_catalog_and_reports_checksums_off_as_unknown),
        cmocka_unit_test(full_integrity_runs_amcheck_on_the_catalog_indexes_only_once_installed),
        cmocka_unit_test(full_integrity_without_amcheck_privilege_says_it_did_not_run),
        cmocka_unit_test(integrity_inside_a_transaction_is_refused_with_5011),
        cmocka_unit_test(archive_fields_are_unknown_when_no_archiver_runs),
        cmocka_unit_test(archive_fields_count_successes_and_failures_with_their_ages),
        cmocka_unit_test(a_primary_lists_its_standby_with_its_lag_and_the_standby_lists_none),
        cmocka_unit_test(multi_host_connect_moves_past_a_frozen_first_host_within_its_share),
        cmocka_unit_test(multi_host_connect_gives_each_host_connect_timeout),
        cmocka_unit_test(multi_host_connect_failure_names_every_host),
        cmocka_unit_test(single_frozen_host_fails_4002_after_connect_timeout),
        cmocka_unit_test(fresh_attempt_after_a_frozen_host_keeps_target_session_attrs),
        cmocka_unit_test(malformed_uri_password_never_appears_in_the_connect_error),
        cmocka_unit_test(placeholders_follow_standard_conforming_strings_off_and_on),
        cmocka_unit_test(copy_both_response_fails_4003_and_closes_the_connection),
        cmocka_unit_test(server_closing_mid_query_fails_4003_and_closes_the_connection),
        cmocka_unit_test(connection_left_mid_command_fails_4003_and_is_broken),
        cmocka_unit_test(repeated_execution_prepares_once_then_hits_the_cache),
        cmocka_unit_test(the_cache_keeps_64_statements_and_evicts_the_least_recently_used),
        cmocka_unit_test(evicted_statements_are_deallocated_on_the_server_in_batches),
        cmocka_unit_test(inside_a_long_transaction_the_server_holds_at_most_twice_the_cache),
        cmocka_unit_test(a_column_type_change_re_prepares_the_statement_and_returns_the_new_type),
        cmocka_unit_test(a_column_type_change_inside_a_transaction_fails_and_rollback_recovers),
        cmocka_unit_test(parameter_types_are_part_of_the_key),
        cmocka_unit_test(a_failed_prepare_is_not_cached_and_fails_5001),
        cmocka_unit_test(an_aborted_transaction_fails_5011_and_the_cache_works_after_rollback),
        cmocka_unit_test(a_statement_deallocated_behind_the_cache_is_prepared_again),
        cmocka_unit_test(discard_all_empties_the_cache),
        cmocka_unit_test(a_reopened_connection_starts_with_an_empty_cache),
        cmocka_unit_test_teardown(with_the_cache_off_statements_run_unnamed, cache_back_on),
        cmocka_unit_test_setup_teardown(host_name_is_resolved_by_noodle_and_kept_for_libpq,
                                        use_test_resolver, restore_resolver),
        cmocka_unit_test_setup_teardown(slow_resolver_cannot_hold_connect_past_its_deadline,
                                        use_test_resolver, restore_resolver),
        cmocka_unit_test_setup_teardown(slow_resolver_for_the_first_host_moves_on_to_the_next,
                                        use_test_resolver, restore_resolver),
    };
    return cmocka_run_group_tests_name("postgres", tests, group_setup, group_teardown);
}
