/* The health checker over the mock backend (label unit): the judgements the
 * real backends are too slow or too hard to drive through -- a lagging
 * standby among several, archiver failures, checksum failures, a slow
 * server -- and the report's overall status. The mock reports what a test
 * set on its node; the checker's reading and judging of it is what is tested.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "noodle/noodle.h"
#include "mock_nodes.h"
#include "noodle_mock.h"
#include "health_assert.h"
#include "test_util.h"

#define URL "mock://h"
#define MIB 1048576

static int setup(void **state) {
    (void)state;
    noodle_error err;
    noodle_mock_reset();
    return noodle_mock_register(&err);
}

static noodle_health_report *run1(noodle_health_options *o, noodle_health_check_kind k) {
    return health_run("mock", URL, o, NOODLE_HEALTH_BIT(k));
}

static void set_standbys(const noodle_standby_status *s, size_t n) {
    noodle_error err;
    assert_ok(noodle_mock_set_standbys("h", s, n, &err), &err);
}

/* ---- replication ---------------------------------------------------------------------------- */

static void the_worst_standby_decides_replication(void **state) {
    (void)state;
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    noodle_standby_status s[2] = {{"s1", "streaming", 1 * MIB, 100},
                                  {"s2", "streaming", 2 * MIB, 200}};
    set_standbys(s, 2);
    noodle_health_report *r = run1(&o, NOODLE_HEALTH_REPLICATION);
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_HEALTHY);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_REPLICATION);
    assert_near(measure(c, "max_lag_bytes")->value, 2 * MIB, 0);
    assert_near(measure(c, "max_replay_lag")->value, 200, 0);
    assert_non_null(strstr(c->measurement, "s1 (streaming)"));
    assert_non_null(strstr(c->measurement, "s2 (streaming)"));
    noodle_health_report_free(r);

    s[1].lag_bytes = 20 * MIB; /* past 16 MiB */
    set_standbys(s, 2);
    r = run1(&o, NOODLE_HEALTH_REPLICATION);
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_DEGRADED);
    noodle_health_report_free(r);

    s[0].replay_lag_ms = 61000; /* past 60 s */
    set_standbys(s, 2);
    r = run1(&o, NOODLE_HEALTH_REPLICATION);
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_UNHEALTHY);
    noodle_health_report_free(r);
}

static void fewer_standbys_than_expected_is_unhealthy(void **state) {
    (void)state;
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    noodle_standby_status s[1] = {{"s1", "streaming", 0, -1}};
    set_standbys(s, 1);
    o.expected_standbys = 2;
    noodle_health_report *r = run1(&o, NOODLE_HEALTH_REPLICATION);
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_UNHEALTHY);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_REPLICATION);
    /* a replay lag the server did not report is shown as such, not as 0 */
    assert_near(measure(c, "max_replay_lag")->value, -1, 0);
    assert_int_equal(measure(c, "max_replay_lag")->status, NOODLE_HEALTH_UNKNOWN);
    noodle_health_report_free(r);
    o.expected_standbys = 1;
    r = run1(&o, NOODLE_HEALTH_REPLICATION);
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_HEALTHY);
    noodle_health_report_free(r);
}

static void a_standby_without_a_replay_delay_is_unknown(void **state) {
    (void)state;
    noodle_error err;
    assert_ok(noodle_mock_node_set_role("h", NOODLE_ROLE_STANDBY, &err), &err);
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    noodle_health_report *r = run1(&o, NOODLE_HEALTH_REPLICATION);
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_UNKNOWN);
    assert_int_equal(only(r, NOODLE_HEALTH_REPLICATION)->error.code, NOODLE_E_HEALTH_CHECK_FAILED);
    assert_int_equal(r->role, NOODLE_ROLE_STANDBY);
    noodle_health_report_free(r);
}

/* ---- backup through the archiver -------------------------------------------------------------- */

static void archiver_counts_and_ages_decide_backup(void **state) {
    (void)state;
    noodle_error err;
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    noodle_health_report *r = run1(&o, NOODLE_HEALTH_BACKUP); /* no archiver */
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_UNKNOWN);
    noodle_health_report_free(r);

    assert_ok(noodle_mock_set_archiver("h", 10, 0, 60000, -1, &err), &err);
    r = run1(&o, NOODLE_HEALTH_BACKUP);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_HEALTHY);
    assert_near(measure(only(r, NOODLE_HEALTH_BACKUP), "last_archived_age")->value, 60, 0);
    noodle_health_report_free(r);

    assert_ok(noodle_mock_set_archiver("h", 10, 0, 30LL * 3600 * 1000, -1, &err), &err);
    r = run1(&o, NOODLE_HEALTH_BACKUP);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_DEGRADED);
    noodle_health_report_free(r);

    /* an old failure followed by a success is history; a failure after the
     * last success means archiving fails now */
    assert_ok(noodle_mock_set_archiver("h", 10, 1, 60000, 120000, &err), &err);
    r = run1(&o, NOODLE_HEALTH_BACKUP);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_HEALTHY);
    noodle_health_report_free(r);
    assert_ok(noodle_mock_set_archiver("h", 10, 2, 60000, 5000, &err), &err);
    r = run1(&o, NOODLE_HEALTH_BACKUP);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_UNHEALTHY);
    noodle_health_report_free(r);

    assert_ok(noodle_mock_set_archiver("h", 0, 0, -1, -1, &err), &err); /* never ran */
    r = run1(&o, NOODLE_HEALTH_BACKUP);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_UNKNOWN);
    noodle_health_report_free(r);
}

/* ---- integrity, performance, overall -------------------------------------------------------- */

static void corruption_and_checksum_failures_are_unhealthy(void **state) {
    (void)state;
    noodle_error err;
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    noodle_health_report *r = run1(&o, NOODLE_HEALTH_INTEGRITY);
    expect_status(r, NOODLE_HEALTH_INTEGRITY, NOODLE_HEALTH_HEALTHY);
    noodle_health_report_free(r);

    assert_ok(noodle_mock_set_checksum_failures("h", 3, &err), &err);
    r = run1(&o, NOODLE_HEALTH_INTEGRITY);
    expect_status(r, NOODLE_HEALTH_INTEGRITY, NOODLE_HEALTH_UNHEALTHY);
    assert_near(measure(only(r, NOODLE_HEALTH_INTEGRITY), "checksum_failures")->value, 3, 0);
    noodle_health_report_free(r);

    assert_ok(noodle_mock_set_checksum_failures("h", 0, &err), &err);
    assert_ok(noodle_mock_set_corruption("h", 2, "page 7: bad key order", &err), &err);
    r = run1(&o, NOODLE_HEALTH_INTEGRITY);
    expect_status(r, NOODLE_HEALTH_INTEGRITY, NOODLE_HEALTH_UNHEALTHY);
    assert_non_null(strstr(only(r, NOODLE_HEALTH_INTEGRITY)->measurement, "page 7: bad key order"));
    noodle_health_report_free(r);
}

static void a_slow_server_degrades_performance(void **state) {
    (void)state;
    noodle_error err;
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.thresholds.performance_samples = 5;
    o.thresholds.latency_p99_degraded_ms = 2;
    o.thresholds.latency_p99_unhealthy_ms = 1000; /* generous: a shared machine */
    assert_ok(noodle_mock_set_latency("h", NOODLE_MOCK_OP_VALIDATE, NOODLE_MS(5), &err), &err);
    noodle_health_report *r = run1(&o, NOODLE_HEALTH_PERFORMANCE);
    expect_status(r, NOODLE_HEALTH_PERFORMANCE, NOODLE_HEALTH_DEGRADED);
    assert_true(only(r, NOODLE_HEALTH_PERFORMANCE)->measures[0].value >= 5);
    noodle_health_report_free(r);
}

static void unknown_never_makes_the_overall_status_healthy(void **state) {
    (void)state;
    noodle_error err;
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    unsigned mask = NOODLE_HEALTH_BIT(NOODLE_HEALTH_INTEGRITY) |
                    NOODLE_HEALTH_BIT(NOODLE_HEALTH_BACKUP); /* no archiver: unknown */
    noodle_health_report *r = health_run("mock", URL, &o, mask);
    assert_int_equal(r->overall, NOODLE_HEALTH_UNKNOWN);
    noodle_health_report_free(r);
    assert_ok(noodle_mock_set_corruption("h", 1, NULL, &err), &err);
    r = health_run("mock", URL, &o, mask);
    assert_int_equal(r->overall, NOODLE_HEALTH_UNHEALTHY); /* a known bad status wins */
    noodle_health_report_free(r);
}

/* ---- clusters ---------------------------------------------------------------------------------- */

/* On a cluster the checks run on the node that serves the route: the
 * primary reports its standbys, a standby read route lands on the standby. */
static void a_clusters_checks_run_on_the_node_of_the_route(void **state) {
    (void)state;
    noodle_error err;
    assert_ok(noodle_mock_node_create("hp", &err), &err);
    assert_ok(noodle_mock_node_create("hs", &err), &err);
    assert_ok(noodle_mock_node_set_role("hs", NOODLE_ROLE_STANDBY, &err), &err);
    noodle_standby_status s[1] = {{"hs", "streaming", 20 * MIB, 300}};
    assert_ok(noodle_mock_set_standbys("hp", s, 1, &err), &err);
    const char *const nodes[] = {"hp", "hs"};
    noodle_cluster *cl = noodle_test_mock_cluster(nodes, 2, true);
    noodle_cluster_node_info info;
    WAIT_FOR(noodle_cluster_node(cl, 1, &info, &err) == 0 && info.up &&
                 info.role == NOODLE_ROLE_STANDBY,
             5000);

    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.checks = NOODLE_HEALTH_BIT(NOODLE_HEALTH_CONNECTION) | NOODLE_HEALTH_BIT(NOODLE_HEALTH_REPLICATION);
    o.expected_standbys = 1;
    noodle_health_report *r = NULL;
    assert_ok(noodle_health_check_cluster(cl, NOODLE_ROUTE_PRIMARY, &o, &r, &err), &err);
    assert_int_equal(r->role, NOODLE_ROLE_PRIMARY);
    expect_status(r, NOODLE_HEALTH_CONNECTION, NOODLE_HEALTH_HEALTHY);
    /* the primary's one standby lags 20 MiB: past the 16 MiB degraded level */
    expect_status(r, NOODLE_HEALTH_REPLICATION, NOODLE_HEALTH_DEGRADED);
    assert_near(measure(only(r, NOODLE_HEALTH_REPLICATION), "max_lag_bytes")->value, 20 * MIB, 0);
    noodle_health_report_free(r);

    r = NULL;
    assert_ok(noodle_health_check_cluster(cl, NOODLE_ROUTE_STANDBY, &o, &r, &err), &err);
    assert_int_equal(r->role, NOODLE_ROLE_STANDBY);
    expect_status(r, NOODLE_HEALTH_CONNECTION, NOODLE_HEALTH_HEALTHY);
    noodle_health_report_free(r);
    noodle_cluster_close(cl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(the_worst_standby_decides_replication, setup),
        cmocka_unit_test_setup(fewer_standbys_than_expected_is_unhealthy, setup),
        cmocka_unit_test_setup(a_standby_without_a_replay_delay_is_unknown, setup),
        cmocka_unit_test_setup(archiver_counts_and_ages_decide_backup, setup),
        cmocka_unit_test_setup(corruption_and_checksum_failures_are_unhealthy, setup),
        cmocka_unit_test_setup(a_slow_server_degrades_performance, setup),
        cmocka_unit_test_setup(unknown_never_makes_the_overall_status_healthy, setup),
        cmocka_unit_test_setup(a_clusters_checks_run_on_the_node_of_the_route, setup),
    };
    return cmocka_run_group_tests_name("health", tests, NULL, NULL);
}
