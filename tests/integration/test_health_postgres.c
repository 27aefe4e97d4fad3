/* The health checker on real PostgreSQL servers (label pg).
 *
 * The group starts a primary with one streaming standby. Checks are driven
 * into their states by real causes: the standby stopped (the primary's
 * replication check with expected_standbys = 1 turns unhealthy), a port no
 * server listens on (connection unhealthy with the code), WAL archiving that
 * works and then fails (backup from pg_stat_archiver), and thresholds that
 * the measured values cross. The standby is stopped by the last test.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cmocka.h>

#include "noodle/noodle.h"
#include "pg_server.h"
#include "health_assert.h"
#include "test_util.h"

static noodle_pg_server *primary, *standby;

/* ---- helpers ------------------------------------------------------------------------ */

static void exec_ok(const noodle_pg_server *s, const char *sql) {
    char out[1024];
    noodle_pg_server_query_ok(s, sql, out, sizeof out);
}

/* A TCP port on 127.0.0.1 that nothing listens on (bound, then closed). */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- fixtures --------------------------------------------------------------------------- */

static int group_setup(void **state) {
    char msg[4096];
    (void)state;
    noodle_pg_server_options so = {.standby_of = NULL, .name = "health_standby"};
    if (noodle_pg_server_start(NULL, &primary, msg, sizeof msg) != 0) {
        fprintf(stderr, "cannot start a PostgreSQL primary: %s\n", msg);
        return -1;
    }
    so.standby_of = primary;
    if (noodle_pg_server_start(&so, &standby, msg, sizeof msg) != 0 ||
        noodle_pg_server_wait_streaming(primary, 1, 30000, msg, sizeof msg) != 0) {
        fprintf(stderr, "cannot start a streaming standby: %s\n", msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    noodle_pg_server_stop(standby);
    noodle_pg_server_stop(primary);
    return 0;
}

/* ---- connection, performance, integrity, space -------------------------------------------- */

static void connection_to_an_unreachable_port_is_unhealthy_with_the_code(void **state) {
    (void)state;
    char url[256];
    snprintf(url, sizeof url, "host=127.0.0.1 port=%d dbname=postgres user=postgres", free_port());
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.check_timeout_ms = 1000;
    int64_t t0 = noodle_test_now_ms();
    noodle_health_report *r = health_run("postgres", url, &o,
                                        NOODLE_HEALTH_BIT(NOODLE_HEALTH_CONNECTION) |
                                            NOODLE_HEALTH_BIT(NOODLE_HEALTH_REPLICATION));
    assert_true(noodle_test_now_ms() - t0 < 10000); /* bounded by the check deadlines */
    expect_status(r, NOODLE_HEALTH_CONNECTION, NOODLE_HEALTH_UNHEALTHY);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_CONNECTION);
    assert_int_equal(c->error.code, NOODLE_E_POOL_TIMEOUT);
    assert_non_null(strstr(c->measurement, "NOODLE-4001")); /* the connect error itself */
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_UNKNOWN);
    assert_int_equal(only(r, NOODLE_HEALTH_REPLICATION)->error.code, NOODLE_E_HEALTH_CHECK_FAILED);
    assert_int_equal(r->overall, NOODLE_HEALTH_UNHEALTHY);
    noodle_health_report_free(r);
}

static void connection_and_performance_are_measured_and_judged(void **state) {
    (void)state;
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.thresholds.connection_degraded_ms = 5000; /* generous: a shared machine */
    o.thresholds.connection_unhealthy_ms = 10000;
    o.thresholds.latency_p99_degraded_ms = 1000;
    o.thresholds.latency_p99_unhealthy_ms = 5000;
    unsigned mask = NOODLE_HEALTH_BIT(NOODLE_HEALTH_CONNECTION) |
                    NOODLE_HEALTH_BIT(NOODLE_HEALTH_PERFORMANCE);
    const char *url = noodle_pg_server_conninfo(primary);
    noodle_health_report *r = health_run("postgres", url, &o, mask);
    expect_status(r, NOODLE_HEALTH_CONNECTION, NOODLE_HEALTH_HEALTHY);
    expect_status(r, NOODLE_HEALTH_PERFORMANCE, NOODLE_HEALTH_HEALTHY);
    double conn_ms = only(r, NOODLE_HEALTH_CONNECTION)->measures[0].value;
    assert_true(conn_ms > 0 && conn_ms < 5000);
    assert_int_equal(r->overall, NOODLE_HEALTH_HEALTHY);
    assert_string_equal(r->backend, "postgres");
    assert_string_equal(r->server_version, ""); /* no check here reads the metrics */
    noodle_health_report_free(r);

    o.thresholds.connection_degraded_ms = 0;     /* any real connect takes >= 0 ms */
    o.thresholds.latency_p99_unhealthy_ms = 0;   /* any real round trip too */
    r = health_run("postgres", url, &o, mask);
    expect_status(r, NOODLE_HEALTH_CONNECTION, NOODLE_HEALTH_DEGRADED);
    expect_status(r, NOODLE_HEALTH_PERFORMANCE, NOODLE_HEALTH_UNHEALTHY);
    assert_int_equal(r->overall, NOODLE_HEALTH_UNHEALTHY);
    noodle_health_report_free(r);
}

static void integrity_of_a_sound_database_is_healthy(void **state) {
    (void)state;
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    for (int level = 0; level < 2; level++) {
        o.integrity_level = level ? NOODLE_INTEGRITY_FULL : NOODLE_INTEGRITY_QUICK;
        noodle_health_report *r = health_run("postgres", noodle_pg_server_conninfo(primary), &o,
                                            NOODLE_HEALTH_BIT(NOODLE_HEALTH_INTEGRITY));
        expect_status(r, NOODLE_HEALTH_INTEGRITY, NOODLE_HEALTH_HEALTHY);
        const noodle_health_check_result *c = only(r, NOODLE_HEALTH_INTEGRITY);
        assert_near(c->measures[0].value, 0, 0);
        assert_true(strlen(c->measurement) > 10);
        noodle_health_report_free(r);
    }
}

static void space_of_a_local_server_is_its_data_directory_filesystem(void **state) {
    (void)state;
    const char *datadir = noodle_pg_server_datadir(primary);
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.thresholds.space_free_bytes_degraded = -1;
    o.thresholds.space_free_bytes_unhealthy = -1;
    o.thresholds.space_free_percent_degraded = -1;
    o.thresholds.space_free_percent_unhealthy = -1;
    o.thresholds.space_free_percent_degraded = 100; /* less than all of it is free */
    noodle_health_report *r = health_run("postgres", noodle_pg_server_conninfo(primary), &o,
                                        NOODLE_HEALTH_BIT(NOODLE_HEALTH_SPACE));
    expect_status(r, NOODLE_HEALTH_SPACE, NOODLE_HEALTH_DEGRADED);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_SPACE);
    assert_non_null(strstr(c->measurement, "statvfs("));
    assert_non_null(strstr(c->measurement, datadir));
    struct statvfs v;
    assert_int_equal(statvfs(datadir, &v), 0);
    double avail = (double)v.f_bavail * (double)v.f_frsize;
    /* the same filesystem, measured a moment apart (other tests write to it) */
    assert_near(measure(c, "free")->value, avail, 64.0 * 1048576);
    assert_true(measure(c, "database_size")->value > 1048576); /* a fresh database is ~7 MiB */
    noodle_health_report_free(r);

    o.thresholds.space_free_percent_degraded = -1;
    r = health_run("postgres", noodle_pg_server_conninfo(primary), &o, NOODLE_HEALTH_BIT(NOODLE_HEALTH_SPACE));
    expect_status(r, NOODLE_HEALTH_SPACE, NOODLE_HEALTH_HEALTHY);
    noodle_health_report_free(r);
}

/* ---- backup from pg_stat_archiver ---------------------------------------------------------- */

static void backup_without_archiving_or_directory_is_unknown(void **state) {
    (void)state;
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    noodle_health_report *r = health_run("postgres", noodle_pg_server_conninfo(primary), &o,
                                        NOODLE_HEALTH_BIT(NOODLE_HEALTH_BACKUP));
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_UNKNOWN);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_BACKUP);
    assert_int_equal(c->error.code, NOODLE_E_HEALTH_CHECK_FAILED);
    assert_non_null(strstr(c->error.message, "archive"));
    assert_int_equal(r->overall, NOODLE_HEALTH_UNKNOWN);
    noodle_health_report_free(r);
}

static void backup_follows_wal_archiving_success_and_failure(void **state) {
    (void)state;
    char msg[4096];
    noodle_pg_server *s = NULL;
    /* archive_command runs in the data directory */
    noodle_pg_server_options so = {
        .extra_conf = "archive_mode = on\narchive_command = 'mkdir -p arch && cp %p arch/%f'"};
    if (noodle_pg_server_start(&so, &s, msg, sizeof msg) != 0)
        fail_msg("cannot start an archiving server: %s", msg);
    exec_ok(s, "CREATE TABLE IF NOT EXISTS w AS SELECT 1 AS x");
    exec_ok(s, "SELECT pg_switch_wal()");
    noodle_pg_server_wait_for(s, "SELECT archived_count > 0 FROM pg_stat_archiver", "t", 20000);

    const char *url = noodle_pg_server_conninfo(s);
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    unsigned mask = NOODLE_HEALTH_BIT(NOODLE_HEALTH_BACKUP);
    noodle_health_report *r = health_run("postgres", url, &o, mask);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_HEALTHY);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_BACKUP);
    assert_true(c->measures[0].value >= 0 && c->measures[0].value < 600);
    assert_non_null(strstr(c->measurement, "pg_stat_archiver"));
    noodle_health_report_free(r);

    o.thresholds.backup_age_degraded_s = 0; /* the measured age crosses it */
    r = health_run("postgres", url, &o, mask);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_DEGRADED);
    noodle_health_report_free(r);
    o.thresholds.backup_age_degraded_s = 26 * 3600;

    exec_ok(s, "ALTER SYSTEM SET archive_command = 'false'");
    exec_ok(s, "SELECT pg_reload_conf()");
    noodle_test_sleep_ms(200); /* the archiver rereads its configuration */
    exec_ok(s, "INSERT INTO w VALUES (2)");
    exec_ok(s, "SELECT pg_switch_wal()");
    noodle_pg_server_wait_for(s, "SELECT failed_count > 0 FROM pg_stat_archiver", "t", 20000);
    r = health_run("postgres", url, &o, mask);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_UNHEALTHY);
    assert_non_null(strstr(only(r, NOODLE_HEALTH_BACKUP)->measurement, "last attempt failed"));
    noodle_health_report_free(r);
    noodle_pg_server_stop(s);
}

/* ---- replication ------------------------------------------------------------------------------ */

static void standby_reports_its_replay_delay(void **state) {
    (void)state;
    exec_ok(primary, "CREATE TABLE IF NOT EXISTS h (x int)");
    exec_ok(primary, "INSERT INTO h VALUES (1)");
    noodle_pg_server_wait_for(standby, "SELECT count(*) > 0 FROM h", "t", 20000);
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.thresholds.replication_lag_degraded_ms = 60000; /* generous */
    o.thresholds.replication_lag_unhealthy_ms = 120000;
    unsigned mask = NOODLE_HEALTH_BIT(NOODLE_HEALTH_REPLICATION);
    const char *url = noodle_pg_server_conninfo(standby);
    noodle_health_report *r = health_run("postgres", url, &o, mask);
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_HEALTHY);
    assert_int_equal(r->role, NOODLE_ROLE_STANDBY);
    assert_true(measure(only(r, NOODLE_HEALTH_REPLICATION), "replay_delay")->value >= 0);
    noodle_health_report_free(r);

    o.thresholds.replication_lag_degraded_ms = 0;
    r = health_run("postgres", url, &o, mask);
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_DEGRADED);
    noodle_health_report_free(r);
}

/* Last: stops the standby. */
static void primary_turns_unhealthy_when_its_expected_standby_stops(void **state) {
    (void)state;
    char msg[4096];
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.expected_standbys = 1;
    unsigned mask = NOODLE_HEALTH_BIT(NOODLE_HEALTH_REPLICATION);
    const char *url = noodle_pg_server_conninfo(primary);
    noodle_health_report *r = health_run("postgres", url, &o, mask);
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_HEALTHY);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_REPLICATION);
    assert_near(measure(c, "standbys")->value, 1, 0);
    assert_true(measure(c, "max_lag_bytes")->value >= 0);
    assert_non_null(strstr(c->measurement, "health_standby"));
    assert_int_equal(r->role, NOODLE_ROLE_PRIMARY);
    noodle_health_report_free(r);

    if (noodle_pg_server_shutdown(standby, msg, sizeof msg) != 0)
        fail_msg("cannot stop the standby: %s", msg);
    noodle_pg_server_wait_for(primary, "SELECT count(*) FROM pg_stat_replication", "0", 20000);
    r = health_run("postgres", url, &o, mask);
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_UNHEALTHY);
    c = only(r, NOODLE_HEALTH_REPLICATION);
    assert_near(measure(c, "standbys")->value, 0, 0);
    assert_near(measure(c, "standbys")->unhealthy_at, 1, 0);
    assert_int_equal(r->overall, NOODLE_HEALTH_UNHEALTHY);
    noodle_health_report_free(r);

    o.expected_standbys = 0; /* none expected: a lone primary is fine */
    r = health_run("postgres", url, &o, mask);
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_HEALTHY);
    noodle_health_report_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connection_to_an_unreachable_port_is_unhealthy_with_the_code),
        cmocka_unit_test(connection_and_performance_are_measured_and_judged),
        cmocka_unit_test(integrity_of_a_sound_database_is_healthy),
        cmocka_unit_test(space_of_a_local_server_is_its_data_directory_filesystem),
        cmocka_unit_test(backup_without_archiving_or_directory_is_unknown),
        cmocka_unit_test(backup_follows_wal_archiving_success_and_failure),
        cmocka_unit_test(standby_reports_its_replay_delay),
        cmocka_unit_test(primary_turns_unhealthy_when_its_expected_standby_stops),
    };
    return cmocka_run_group_tests_name("health_postgres", tests, group_setup, group_teardown);
}
