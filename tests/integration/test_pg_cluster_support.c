/* The test-support code for replication clusters (tests/support/pg_server.h)
 * against real PostgreSQL servers (label pg): streaming and synchronous
 * standbys, kill -9 and promotion, read-only mode, rejoining a former
 * primary with pg_rewind, freezing, restarts, and network partitions of a
 * server in its own network namespace.
 *
 * Evidence comes from the servers themselves: pg_stat_replication,
 * pg_is_in_recovery(), rows read back, SQLSTATEs, and /proc for processes.
 * Clients connect with libpq directly over TCP (the conninfo the module
 * hands out); the module's own administrative connections use unix sockets.
 *
 * Every test starts its own servers and lists them in `servers`; the
 * teardown stops whatever a failing test left. Timings are printed as
 * "timing: ..." lines.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "pg_server.h"
#include "test_util.h"

#define MAX_TEST_SERVERS 4

static noodle_pg_server *servers[MAX_TEST_SERVERS];

/* ---- helpers ------------------------------------------------------------------------ */

/* Start a server and list it for the teardown; fails the test on error. */
static noodle_pg_server *start(const noodle_pg_server_options *opts, const char *what) {
    char msg[4096];
    noodle_pg_server *s = NULL;
    int64_t t0 = noodle_test_now_ms();
    if (noodle_pg_server_start(opts, &s, msg, sizeof msg) != 0)
        fail_msg("cannot start %s: %s", what, msg);
    printf("timing: start %s: %lld ms\n", what, (long long)(noodle_test_now_ms() - t0));
    for (int i = 0; i < MAX_TEST_SERVERS; i++) {
        if (servers[i] == NULL) {
            servers[i] = s;
            return s;
        }
    }
    noodle_pg_server_stop(s);
    fail_msg("more than %d servers in one test", MAX_TEST_SERVERS);
    return NULL;
}

static int stop_all(void **state) {
    (void)state;
    for (int i = 0; i < MAX_TEST_SERVERS; i++) {
        noodle_pg_server_stop(servers[i]);
        servers[i] = NULL;
    }
    return 0;
}

static void exec_ok(const noodle_pg_server *s, const char *sql) {
    char out[1024];
    noodle_pg_server_query_ok(s, sql, out, sizeof out);
}

static void assert_query(const noodle_pg_server *s, const char *sql, const char *want) {
    char out[1024];
    noodle_pg_server_query_ok(s, sql, out, sizeof out);
    if (strcmp(out, want) != 0)
        fail_msg("on port %d: %s: got '%s', want '%s'", noodle_pg_server_port(s), sql, out, want);
}

/* A client connection over TCP with the module's conninfo plus extra. */
static PGconn *client_connect(const noodle_pg_server *s, const char *extra) {
    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "%s %s", noodle_pg_server_conninfo(s),
             extra != NULL ? extra : "");
    PGconn *conn = PQconnectdb(conninfo);
    assert_non_null(conn);
    return conn;
}

/* The SQLSTATE that sql gets on a new client session ("00000" on success). */
static void client_sqlstate(const noodle_pg_server *s, const char *sql, char *out, size_t outlen) {
    PGconn *conn = client_connect(s, "connect_timeout=10");
    if (PQstatus(conn) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(conn));
        PQfinish(conn);
        fail_msg("cannot connect: %s", msg);
    }
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(out, outlen, "%s",
             st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? "00000"
             : state != NULL                                 ? state
                                                             : "?????");
    PQclear(res);
    PQfinish(conn);
}

/* Process state from /proc/<pid>/stat: 0 when the process is gone. */
static char proc_state(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p != NULL && p[1] == ' ' ? p[2] : 0;
}

static bool proc_gone(pid_t pid) {
    char st = proc_state(pid);
    return st == 0 || st == 'Z' || st == 'X';
}

/* A primary with one standby streaming from it, both listed. */
static void start_pair(bool synchronous, noodle_pg_server **primary, noodle_pg_server **standby) {
    char msg[1024];
    *primary = start(NULL, "primary");
    noodle_pg_server_options so = {
        .standby_of = *primary, .name = "standby1", .synchronous = synchronous};
    *standby = start(&so, synchronous ? "synchronous standby" : "standby");
    if (noodle_pg_server_wait_streaming(*primary, 1, 10000, msg, sizeof msg) != 0)
        fail_msg("%s", msg);
}

static void promote_ok(noodle_pg_server *standby) {
    char msg[1024];
    if (noodle_pg_server_promote(standby, 10000, msg, sizeof msg) != 0) fail_msg("%s", msg);
}

static void restart_ok(noodle_pg_server *s) {
    char msg[1024];
    if (noodle_pg_server_restart(s, msg, sizeof msg) != 0) fail_msg("%s", msg);
}

/* The table t (v text) with one row, v = value, on primary, replicated to
 * standby. */
static void one_row_replicated(noodle_pg_server *primary, noodle_pg_server *standby,
                               const char *value) {
    char sql[128];
    exec_ok(primary, "CREATE TABLE t (v text)");
    snprintf(sql, sizeof sql, "INSERT INTO t VALUES ('%s')", value);
    exec_ok(primary, sql);
    noodle_pg_server_wait_for(standby, "SELECT count(*) FROM t", "1", 5000);
}

/* Rejoin old_primary as a standby of new_primary (timed, as `what`): it must
 * use `method`, be in recovery, and come to hold the rows 'common' and 'new'. */
static void rejoin_ok(noodle_pg_server *old_primary, noodle_pg_server *new_primary,
                      const char *what, const char *method) {
    char msg[1024];
    int64_t t0 = noodle_test_now_ms();
    if (noodle_pg_server_rejoin_as_standby(old_primary, new_primary, msg, sizeof msg) != 0)
        fail_msg("%s", msg);
    printf("timing: rejoin (%s) %s: %lld ms\n", noodle_pg_server_rejoin_method(old_primary), what,
           (long long)(noodle_test_now_ms() - t0));
    assert_string_equal(noodle_pg_server_rejoin_method(old_primary), method);
    assert_query(old_primary, "SELECT pg_is_in_recovery()", "t");
    noodle_pg_server_wait_for(old_primary, "SELECT string_agg(v, ',' ORDER BY v) FROM t", "common,new", 5000);
}

/* ---- streaming and synchronous standbys --------------------------------------------------- */

static void synchronous_standbys_stream_and_show_the_primary_rows(void **state) {
    char msg[1024];
    (void)state;
    noodle_pg_server *primary, *s1;
    start_pair(true, &primary, &s1);
    noodle_pg_server_options o2 = {.standby_of = primary, .name = "standby2", .synchronous = true};
    noodle_pg_server *s2 = start(&o2, "second synchronous standby");
    assert_int_equal(noodle_pg_server_wait_streaming(primary, 2, 10000, msg, sizeof msg), 0);

    /* Both are listed, the primary waits for any one of them. */
    assert_query(primary, "SHOW synchronous_standby_names", "ANY 1 (\"standby1\", \"standby2\")");
    assert_query(primary, "SHOW synchronous_commit", "on");
    assert_query(primary,
                 "SELECT string_agg(application_name || ':' || sync_state, ',' ORDER BY "
                 "application_name) FROM pg_stat_replication WHERE state = 'streaming'",
                 "standby1:quorum,standby2:quorum");
    /* A standby does not inherit the primary's list (the second one was
     * copied after the first was added). */
    assert_query(s2, "SHOW synchronous_standby_names", "");
    assert_query(s1, "SELECT pg_is_in_recovery()", "t");
    assert_query(s2, "SELECT pg_is_in_recovery()", "t");

    exec_ok(primary, "CREATE TABLE t (v text)");
    exec_ok(primary, "INSERT INTO t VALUES ('on the primary')");
    noodle_pg_server_wait_for(s1, "SELECT string_agg(v, ',') FROM t", "on the primary", 5000);
    noodle_pg_server_wait_for(s2, "SELECT string_agg(v, ',') FROM t", "on the primary", 5000);
}

static void wait_streaming_times_out_when_there_are_too_few_standbys(void **state) {
    char msg[1024];
    (void)state;
    noodle_pg_server *primary, *standby;
    start_pair(false, &primary, &standby);
    int64_t t0 = noodle_test_now_ms();
    assert_int_equal(noodle_pg_server_wait_streaming(primary, 2, 200, msg, sizeof msg), -1);
    assert_true(noodle_test_now_ms() - t0 >= 200);
    assert_non_null(strstr(msg, "1 of 2"));
}

/* ---- kill -9, promotion, restart ----------------------------------------------------------- */

static void
killed_primary_is_gone_and_the_promoted_standby_accepts_writes_with_its_rows(void **state) {
    char msg[1024], path[4200];
    (void)state;
    noodle_pg_server *primary, *standby;
    start_pair(true, &primary, &standby);
    exec_ok(primary, "CREATE TABLE t (v text)");
    /* Acknowledged by the synchronous standby before the commit returns. */
    exec_ok(primary, "INSERT INTO t VALUES ('acknowledged')");

    pid_t pm = noodle_pg_server_postmaster_pid(primary);
    assert_true(pm > 0);
    int64_t t0 = noodle_test_now_ms();
    assert_int_equal(noodle_pg_server_kill(primary, SIGKILL), 0);
    int64_t killed = noodle_test_now_ms();
    assert_true(proc_gone(pm));
    assert_false(noodle_pg_server_is_running(primary));
    assert_int_equal(noodle_pg_server_postmaster_pid(primary), 0);
    snprintf(path, sizeof path, "%s/postmaster.pid", noodle_pg_server_datadir(primary));
    assert_int_equal(access(path, F_OK), -1);
    /* Nothing listens on its port any more. */
    PGconn *c = client_connect(primary, "connect_timeout=2");
    assert_int_not_equal(PQstatus(c), CONNECTION_OK);
    PQfinish(c);

    int64_t t1 = noodle_test_now_ms();
    promote_ok(standby);
    int64_t promoted = noodle_test_now_ms();
    char sqlstate[8];
    client_sqlstate(standby, "INSERT INTO t VALUES ('after failover')", sqlstate, sizeof sqlstate);
    int64_t written = noodle_test_now_ms();
    assert_string_equal(sqlstate, "00000");
    printf("timing: kill -9: %lld ms, promote: %lld ms, first write: %lld ms after promote\n",
           (long long)(killed - t0), (long long)(promoted - t1), (long long)(written - promoted));
    assert_query(standby, "SELECT pg_is_in_recovery()", "f");
    assert_query(standby, "SELECT string_agg(v, ',' ORDER BY v) FROM t",
                 "acknowledged,after failover");
    /* Promoting a primary is refused. */
    assert_int_equal(noodle_pg_server_promote(standby, 1000, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "not a standby"));
}

static void killed_server_restarts_on_its_port_with_its_rows(void **state) {
    char msg[1024];
    (void)state;
    noodle_pg_server *s = start(NULL, "primary");
    int port = noodle_pg_server_port(s);
    exec_ok(s, "CREATE TABLE t (v int)");
    exec_ok(s, "INSERT INTO t VALUES (42)");
    exec_ok(s, "CHECKPOINT");
    exec_ok(s, "INSERT INTO t VALUES (43)"); /* only in the WAL: crash recovery */
    assert_int_equal(noodle_pg_server_kill(s, SIGKILL), 0);
    assert_int_equal(noodle_pg_server_freeze(s), -1); /* nothing to freeze */
    int64_t t0 = noodle_test_now_ms();
    restart_ok(s);
    printf("timing: restart after kill -9: %lld ms\n", (long long)(noodle_test_now_ms() - t0));
    assert_int_equal(noodle_pg_server_port(s), port);
    assert_true(noodle_pg_server_is_running(s));
    assert_int_equal(noodle_pg_server_restart(s, msg, sizeof msg), -1); /* it runs */
    char sqlstate[8];
    client_sqlstate(s, "INSERT INTO t VALUES (44)", sqlstate, sizeof sqlstate);
    assert_string_equal(sqlstate, "00000");
    assert_query(s, "SELECT string_agg(v::text, ',' ORDER BY v) FROM t", "42,43,44");

    /* A fast shutdown keeps the directory: it restarts the same way. */
    t0 = noodle_test_now_ms();
    assert_int_equal(noodle_pg_server_shutdown(s, msg, sizeof msg), 0);
    printf("timing: fast shutdown: %lld ms\n", (long long)(noodle_test_now_ms() - t0));
    assert_false(noodle_pg_server_is_running(s));
    assert_int_equal(noodle_pg_server_shutdown(s, msg, sizeof msg), 0); /* already down */
    restart_ok(s);
    assert_query(s, "SELECT count(*) FROM t", "3");
}

/* ---- read-only mode ----------------------------------------------------------------------------
 */

static void read_only_server_refuses_create_table_with_25006_and_answers_select(void **state) {
    char msg[1024], sqlstate[8];
    (void)state;
    noodle_pg_server *s = start(NULL, "primary");
    int64_t t0 = noodle_test_now_ms();
    if (noodle_pg_server_set_read_only(s, true, msg, sizeof msg) != 0) fail_msg("%s", msg);
    printf("timing: set_read_only(on): %lld ms\n", (long long)(noodle_test_now_ms() - t0));
    client_sqlstate(s, "CREATE TABLE t (v int)", sqlstate, sizeof sqlstate);
    assert_string_equal(sqlstate, "25006");
    client_sqlstate(s, "SELECT 1", sqlstate, sizeof sqlstate);
    assert_string_equal(sqlstate, "00000");

    if (noodle_pg_server_set_read_only(s, false, msg, sizeof msg) != 0) fail_msg("%s", msg);
    client_sqlstate(s, "CREATE TABLE t (v int)", sqlstate, sizeof sqlstate);
    assert_string_equal(sqlstate, "00000");
}

/* ---- rejoining a former primary ----------------------------------------------------------------
 */

/* The old primary writes a row the standby never receives (the standby is
 * down), dies, the standby takes over and writes on; pg_rewind must throw
 * the old primary's divergent row away. Also: shutdown and restart of a
 * standby, promotion of a standby whose primary is gone. */
static void
rejoined_old_primary_is_in_recovery_with_the_new_rows_and_not_its_divergent_one(void **state) {
    char msg[1024];
    (void)state;
    noodle_pg_server *old_primary, *standby;
    start_pair(false, &old_primary, &standby);
    one_row_replicated(old_primary, standby, "common");

    assert_int_equal(noodle_pg_server_shutdown(standby, msg, sizeof msg), 0);
    exec_ok(old_primary, "INSERT INTO t VALUES ('divergent')");
    assert_int_equal(noodle_pg_server_kill(old_primary, SIGKILL), 0);
    restart_ok(standby);
    assert_query(standby, "SELECT pg_is_in_recovery()", "t");
    promote_ok(standby);
    noodle_pg_server *new_primary = standby;
    exec_ok(new_primary, "INSERT INTO t VALUES ('new')");

    rejoin_ok(old_primary, new_primary, "of a killed primary", "pg_rewind");
    assert_int_equal(noodle_pg_server_wait_streaming(new_primary, 1, 10000, msg, sizeof msg), 0);
    assert_query(new_primary, "SELECT string_agg(application_name, ',') FROM pg_stat_replication",
                 noodle_pg_server_name(old_primary));
    exec_ok(new_primary, "INSERT INTO t VALUES ('newer')");
    noodle_pg_server_wait_for(old_primary, "SELECT count(*) FROM t WHERE v = 'newer'", "1", 5000);
}

/* A running former primary (e.g. after a partition healed) is shut down
 * and rewound as well. */
static void running_old_primary_rejoins_after_a_clean_shutdown(void **state) {
    (void)state;
    noodle_pg_server *old_primary, *standby;
    start_pair(false, &old_primary, &standby);
    one_row_replicated(old_primary, standby, "common");
    promote_ok(standby);
    exec_ok(standby, "INSERT INTO t VALUES ('new')");
    exec_ok(old_primary, "INSERT INTO t VALUES ('split brain')");
    rejoin_ok(old_primary, standby, "of a running primary", "pg_rewind");
}

/* pg_rewind refuses a target without wal_log_hints (and without data
 * checksums): the rejoin falls back to a fresh base backup. */
static void old_primary_without_wal_log_hints_rejoins_through_a_fresh_base_backup(void **state) {
    (void)state;
    noodle_pg_server_options po = {.extra_conf = "wal_log_hints = off"};
    noodle_pg_server *old_primary = start(&po, "primary without wal_log_hints");
    noodle_pg_server_options so = {.standby_of = old_primary};
    noodle_pg_server *standby = start(&so, "standby");
    one_row_replicated(old_primary, standby, "common");
    assert_int_equal(noodle_pg_server_kill(old_primary, SIGKILL), 0);
    promote_ok(standby);
    exec_ok(standby, "INSERT INTO t VALUES ('new')");
    rejoin_ok(old_primary, standby, "without wal_log_hints", "pg_basebackup");
}

/* ---- freezing ----------------------------------------------------------------------------------
 */

/* Whether a new client session reaches CONNECTION_OK within ms (libpq's
 * non-blocking API: connect_timeout cannot go below 2 s). */
static bool connects_within(const noodle_pg_server *s, int ms) {
    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "%s connect_timeout=10", noodle_pg_server_conninfo(s));
    PGconn *conn = PQconnectStart(conninfo);
    assert_non_null(conn);
    int64_t until = noodle_test_now_ms() + ms;
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int64_t left = until - noodle_test_now_ms();
        if (left <= 0) break;
        struct pollfd pfd = {.fd = PQsocket(conn),
                             .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        if (poll(&pfd, 1, (int)left) <= 0) continue;
        st = PQconnectPoll(conn);
    }
    bool ok = st == PGRES_POLLING_OK && PQstatus(conn) == CONNECTION_OK;
    PQfinish(conn);
    return ok;
}

typedef struct children_state {
    int total, stopped;
} children_state;

static void count_children(pid_t parent, children_state *cs) {
    cs->total = cs->stopped = 0;
    DIR *d = opendir("/proc");
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char path[300], stat[512];
        int pid = atoi(e->d_name);
        if (pid <= 0) continue;
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        if (f == NULL) continue;
        size_t n = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[n] = '\0';
        char *close_paren = strrchr(stat, ')');
        if (close_paren == NULL || close_paren[1] != ' ') continue;
        char st = close_paren[2];
        int ppid = atoi(close_paren + 4);
        if (ppid != (int)parent || st == 'Z') continue;
        cs->total++;
        if (st == 'T' || st == 't') cs->stopped++;
    }
    closedir(d);
}

static void frozen_server_stops_every_process_and_answers_again_after_thaw(void **state) {
    (void)state;
    noodle_pg_server *s = start(NULL, "primary");
    pid_t pm = noodle_pg_server_postmaster_pid(s);
    assert_true(connects_within(s, 2000));

    assert_int_equal(noodle_pg_server_freeze(s), 0);
    children_state cs;
    count_children(pm, &cs);
    assert_int_equal(proc_state(pm), 'T');
    assert_true(cs.total >= 4); /* checkpointer, bgwriter, walwriter, ... */
    assert_int_equal(cs.stopped, cs.total);
    assert_false(connects_within(s, 300));

    assert_int_equal(noodle_pg_server_thaw(s), 0);
    assert_true(connects_within(s, 5000));
    assert_query(s, "SELECT 1", "1");
}

/* ---- network partitions ------------------------------------------------------------------------
 */

/* Namespaces of this process that still exist. */
static int own_namespaces(void) {
    char prefix[32];
    int n = 0;
    snprintf(prefix, sizeof prefix, "noodle%d_", (int)getpid());
    DIR *d = opendir("/run/netns");
    if (d == NULL) return 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
    closedir(d);
    return n;
}

/* Milliseconds a new client connection with connect_timeout=2 takes; *ok
 * says whether it succeeded. */
static int64_t connect_ms(const noodle_pg_server *s, bool *ok) {
    int64_t t0 = noodle_test_now_ms();
    PGconn *c = client_connect(s, "connect_timeout=2");
    *ok = PQstatus(c) == CONNECTION_OK;
    PQfinish(c);
    return noodle_test_now_ms() - t0;
}

static void
partitioned_primary_in_a_namespace_times_out_new_connections_until_restored(void **state) {
    char why[1024], msg[1024];
    (void)state;
    if (!noodle_pg_server_netns_available(why, sizeof why)) {
        printf("skipped: network namespaces are not available: %s\n", why);
        skip();
    }
    noodle_pg_server_options po = {.own_netns = true};
    noodle_pg_server *primary = start(&po, "primary in a network namespace");
    assert_int_equal(strncmp(noodle_pg_server_host(primary), "10.200.", 7), 0);
    assert_non_null(strstr(noodle_pg_server_conninfo(primary), noodle_pg_server_host(primary)));
    assert_int_equal(own_namespaces(), 1);

    /* A standby outside streams from it over the veth pair. */
    noodle_pg_server_options so = {.standby_of = primary};
    noodle_pg_server *standby = start(&so, "standby of a namespaced primary");
    if (noodle_pg_server_wait_streaming(primary, 1, 10000, msg, sizeof msg) != 0)
        fail_msg("%s", msg);
    assert_query(primary, "SELECT client_addr::text LIKE '10.200.%' FROM pg_stat_replication", "t");
    one_row_replicated(primary, standby, "before");

    bool ok;
    int64_t ms = connect_ms(primary, &ok);
    assert_true(ok);

    assert_int_equal(noodle_pg_server_partition(primary, true), 0);
    exec_ok(primary, "INSERT INTO t VALUES ('during')"); /* unix socket: still works */
    ms = connect_ms(primary, &ok);
    printf("timing: connect to a partitioned server failed after %lld ms\n", (long long)ms);
    assert_false(ok);
    assert_true(ms >= 1500); /* a timeout: no refusal, no reset */
    /* Nor did the row reach the standby in those 2 s. */
    assert_query(standby, "SELECT count(*) FROM t", "1");

    assert_int_equal(noodle_pg_server_partition(primary, false), 0);
    ms = connect_ms(primary, &ok);
    printf("timing: connect after the partition healed: %lld ms\n", (long long)ms);
    assert_true(ok);
    noodle_pg_server_wait_for(standby, "SELECT count(*) FROM t", "2", 15000);

    /* Failover out of the namespace and back: the old primary rejoins from
     * inside its namespace (streaming through the new primary's socket). */
    assert_int_equal(noodle_pg_server_kill(primary, SIGKILL), 0);
    promote_ok(standby);
    exec_ok(standby, "INSERT INTO t VALUES ('after failover')");
    if (noodle_pg_server_rejoin_as_standby(primary, standby, msg, sizeof msg) != 0)
        fail_msg("%s", msg);
    assert_query(primary, "SELECT pg_is_in_recovery()", "t");
    noodle_pg_server_wait_for(primary, "SELECT count(*) FROM t", "3", 5000);
    ms = connect_ms(primary, &ok); /* still at its address in the namespace */
    assert_true(ok);

    stop_all(NULL);
    assert_int_equal(own_namespaces(), 0);
}

static void partition_is_refused_for_a_server_outside_a_namespace(void **state) {
    (void)state;
    noodle_pg_server *s = start(NULL, "primary");
    assert_int_equal(noodle_pg_server_partition(s, true), -1);
    assert_string_equal(noodle_pg_server_host(s), "127.0.0.1");
}

static void bad_options_are_refused_before_anything_starts(void **state) {
    char msg[1024];
    noodle_pg_server *s = NULL;
    (void)state;
    noodle_pg_server_options bad_name = {.name = "x'; DROP"};
    assert_int_equal(noodle_pg_server_start(&bad_name, &s, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "invalid server name"));
    noodle_pg_server_options sync_alone = {.synchronous = true};
    assert_int_equal(noodle_pg_server_start(&sync_alone, &s, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, "standby_of"));
    assert_null(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(synchronous_standbys_stream_and_show_the_primary_rows, stop_all),
        cmocka_unit_test_teardown(wait_streaming_times_out_when_there_are_too_few_standbys,
                                  stop_all),
        cmocka_unit_test_teardown(
            killed_primary_is_gone_and_the_promoted_standby_accepts_writes_with_its_rows, stop_all),
        cmocka_unit_test_teardown(killed_server_restarts_on_its_port_with_its_rows, stop_all),
        cmocka_unit_test_teardown(
            read_only_server_refuses_create_table_with_25006_and_answers_select, stop_all),
        cmocka_unit_test_teardown(
            rejoined_old_primary_is_in_recovery_with_the_new_rows_and_not_its_divergent_one,
            stop_all),
        cmocka_unit_test_teardown(running_old_primary_rejoins_after_a_clean_shutdown, stop_all),
        cmocka_unit_test_teardown(
            old_primary_without_wal_log_hints_rejoins_through_a_fresh_base_backup, stop_all),
        cmocka_unit_test_teardown(frozen_server_stops_every_process_and_answers_again_after_thaw,
                                  stop_all),
        cmocka_unit_test_teardown(
            partitioned_primary_in_a_namespace_times_out_new_connections_until_restored, stop_all),
        cmocka_unit_test_teardown(partition_is_refused_for_a_server_outside_a_namespace, stop_all),
        cmocka_unit_test(bad_options_are_refused_before_anything_starts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
