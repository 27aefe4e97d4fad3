/* The health checker on SQLite (label unit): each check driven into each of
 * its states by a real cause.
 *
 *   space        a 4 MiB tmpfs holding the database, filled with a file until
 *                the free space crosses the degraded, then the unhealthy
 *                threshold (needs root for mount; skipped with a message
 *                when the mount is refused)
 *   integrity    a database file whose table page is overwritten with garbage
 *   backup       files with old modification times (utimensat), an empty
 *                directory, a missing one
 *   performance  thresholds that the measured latency crosses; validate
 *                failing through its fail point for the error rate
 *   connection   a database in a directory that does not exist
 *
 * Each test has a fresh temporary directory holding db.sqlite.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <fiu-control.h>
#include <fiu.h>
#ifdef NOODLE_HAVE_JANSSON
#include <jansson.h>
#endif

#include "noodle/noodle.h"
#include "health_assert.h"
#include "test_util.h"

static char dir[256];
static char path[320];
static bool mounted;

/* ---- helpers ------------------------------------------------------------------------ */

static void exec_direct(const char *sql) {
    noodle_connect_params p = {.url = path, .deadline = noodle_deadline_after(NULL, NOODLE_SEC(10))};
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_conn_open(noodle_backend_sqlite(), &p, &c, &err), &err);
    noodle_test_exec_ok(c, sql);
    noodle_conn_close(c);
}

/* ---- fixtures --------------------------------------------------------------------------- */

static int setup(void **state) {
    (void)state;
    mounted = false;
    if (noodle_test_tempdir(dir, sizeof dir) != 0) return -1;
    snprintf(path, sizeof path, "%s/db.sqlite", dir);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (mounted && umount2(dir, MNT_DETACH) != 0) return -1;
    return noodle_test_rm_rf(dir);
}

/* ---- space ------------------------------------------------------------------------------ */

/* Grow the file fill until the filesystem holding it has about target bytes free. */
static void fill_until_free(const char *fill, double target) {
    struct statvfs v;
    assert_int_equal(statvfs(dir, &v), 0);
    double avail = (double)v.f_bavail * (double)v.f_frsize;
    assert_true(avail > target);
    int fd = open(fill, O_WRONLY | O_CREAT | O_APPEND, 0600);
    assert_true(fd >= 0);
    static char block[4096];
    memset(block, 0x5a, sizeof block);
    for (double left = avail - target; left > 0; left -= sizeof block)
        assert_int_equal(write(fd, block, sizeof block), (ssize_t)sizeof block);
    assert_int_equal(fsync(fd), 0);
    close(fd);
}

static void space_check_follows_a_filling_filesystem(void **state) {
    (void)state;
    if (mount("tmpfs", dir, "tmpfs", 0, "size=4m") != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "mount -t tmpfs -o size=4m refused (%s): needs root",
                 strerror(errno));
        print_message("SKIP space_check_follows_a_filling_filesystem: %s\n", msg);
        skip();
    }
    mounted = true;
    exec_direct("CREATE TABLE t (x)");
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.thresholds.space_free_percent_degraded = 50;
    o.thresholds.space_free_percent_unhealthy = 20;
    o.thresholds.space_free_bytes_degraded = -1;
    o.thresholds.space_free_bytes_unhealthy = -1;
    unsigned mask = NOODLE_HEALTH_BIT(NOODLE_HEALTH_SPACE);

    noodle_health_report *r = health_run("sqlite", path, &o, mask);
    expect_status(r, NOODLE_HEALTH_SPACE, NOODLE_HEALTH_HEALTHY);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_SPACE);
    /* the value is the tmpfs's, measured: 4 MiB in size, less than that free */
    assert_string_equal(c->measures[0].name, "free");
    assert_true(c->measures[0].value > 2.0 * 1048576 && c->measures[0].value <= 4.0 * 1048576);
    assert_near(c->measures[0].degraded_at, 2.0 * 1048576, 1);
    assert_non_null(strstr(c->measurement, "statvfs("));
    assert_non_null(strstr(c->measurement, path));
    noodle_health_report_free(r);

    char fill[400];
    snprintf(fill, sizeof fill, "%s/fill", dir);
    fill_until_free(fill, 0.35 * 4 * 1048576);
    r = health_run("sqlite", path, &o, mask);
    expect_status(r, NOODLE_HEALTH_SPACE, NOODLE_HEALTH_DEGRADED);
    assert_true(only(r, NOODLE_HEALTH_SPACE)->measures[0].value < 0.4 * 4 * 1048576);
    assert_int_equal(r->overall, NOODLE_HEALTH_DEGRADED);
    noodle_health_report_free(r);

    fill_until_free(fill, 0.10 * 4 * 1048576);
    r = health_run("sqlite", path, &o, mask);
    expect_status(r, NOODLE_HEALTH_SPACE, NOODLE_HEALTH_UNHEALTHY);
    assert_int_equal(r->overall, NOODLE_HEALTH_UNHEALTHY);
    noodle_health_report_free(r);

    /* freeing space makes it healthy again: nothing is cached */
    assert_int_equal(unlink(fill), 0);
    r = health_run("sqlite", path, &o, mask);
    expect_status(r, NOODLE_HEALTH_SPACE, NOODLE_HEALTH_HEALTHY);
    noodle_health_report_free(r);
}

static void space_is_unknown_for_an_in_memory_database(void **state) {
    (void)state;
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    noodle_health_report *r = health_run("sqlite", ":memory:", &o, NOODLE_HEALTH_BIT(NOODLE_HEALTH_SPACE));
    expect_status(r, NOODLE_HEALTH_SPACE, NOODLE_HEALTH_UNKNOWN);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_SPACE);
    assert_int_equal(c->error.code, NOODLE_E_HEALTH_CHECK_FAILED);
    assert_non_null(strstr(c->error.message, "in-memory"));
    assert_int_equal(r->overall, NOODLE_HEALTH_UNKNOWN); /* unknown never counts as healthy */
    noodle_health_report_free(r);
}

/* ---- integrity -------------------------------------------------------------------------- */

static void integrity_finds_a_corrupted_file_unhealthy(void **state) {
    (void)state;
    exec_direct("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
    exec_direct("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)"
                " INSERT INTO t SELECT i, randomblob(200) FROM n");
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    unsigned mask = NOODLE_HEALTH_BIT(NOODLE_HEALTH_INTEGRITY);
    noodle_health_report *r = health_run("sqlite", path, &o, mask);
    expect_status(r, NOODLE_HEALTH_INTEGRITY, NOODLE_HEALTH_HEALTHY);
    assert_non_null(strstr(only(r, NOODLE_HEALTH_INTEGRITY)->measurement, "quick_check"));
    noodle_health_report_free(r);

    /* every connection is closed: overwrite page 2 (t's root) with garbage */
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(i * 7 + 13);
    assert_int_equal(pwrite(fd, junk, sizeof junk, 4096), (ssize_t)sizeof junk);
    close(fd);

    for (int level = 0; level < 2; level++) {
        o.integrity_level = level ? NOODLE_INTEGRITY_FULL : NOODLE_INTEGRITY_QUICK;
        r = health_run("sqlite", path, &o, mask);
        expect_status(r, NOODLE_HEALTH_INTEGRITY, NOODLE_HEALTH_UNHEALTHY);
        const noodle_health_check_result *c = only(r, NOODLE_HEALTH_INTEGRITY);
        assert_true(c->measures[0].value >= 1);
        assert_non_null(strstr(c->measurement, level ? "integrity_check" : "quick_check"));
        assert_non_null(strstr(c->measurement, "first:"));
        noodle_health_report_free(r);
    }
}

/* ---- backup ----------------------------------------------------------------------------- */

static void make_file(const char *d, const char *name, size_t size, int64_t age_s) {
    char f[512];
    snprintf(f, sizeof f, "%s/%s", d, name);
    FILE *fp = fopen(f, "w");
    assert_non_null(fp);
    for (size_t i = 0; i < size; i++) fputc('b', fp);
    fclose(fp);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct timespec t[2] = {{now.tv_sec - age_s, 0}, {now.tv_sec - age_s, 0}};
    assert_int_equal(utimensat(AT_FDCWD, f, t, 0), 0);
}

static noodle_health_report *check_backup(const char *bdir) {
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.backup_dir = bdir;
    return health_run("sqlite", path, &o, NOODLE_HEALTH_BIT(NOODLE_HEALTH_BACKUP));
}

static void backup_age_and_size_decide_its_state(void **state) {
    (void)state;
    char bdir[400];
    snprintf(bdir, sizeof bdir, "%s/backups", dir);
    assert_int_equal(mkdir(bdir, 0700), 0);

    noodle_health_report *r = check_backup(bdir); /* empty: no backup at all */
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_UNHEALTHY);
    assert_non_null(strstr(only(r, NOODLE_HEALTH_BACKUP)->measurement, "no regular file"));
    noodle_health_report_free(r);

    make_file(bdir, "old.tar", 1000, 60 * 3600); /* past 50 h */
    r = check_backup(bdir);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_UNHEALTHY);
    assert_near(only(r, NOODLE_HEALTH_BACKUP)->measures[0].value, 60 * 3600, 60);
    noodle_health_report_free(r);

    make_file(bdir, "older-name-newer.tar", 1000, 30 * 3600); /* 26 h < age < 50 h */
    r = check_backup(bdir);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_DEGRADED);
    assert_non_null(strstr(only(r, NOODLE_HEALTH_BACKUP)->measurement, "older-name-newer.tar"));
    noodle_health_report_free(r);

    make_file(bdir, "fresh.tar", 1000, 0);
    r = check_backup(bdir);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_HEALTHY);
    assert_near(only(r, NOODLE_HEALTH_BACKUP)->measures[1].value, 1000, 0);
    noodle_health_report_free(r);

    make_file(bdir, "empty.tar", 0, 0); /* the newest backup is empty */
    struct timespec later[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
    char f[512];
    snprintf(f, sizeof f, "%s/empty.tar", bdir);
    assert_int_equal(utimensat(AT_FDCWD, f, later, 0), 0);
    r = check_backup(bdir);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_UNHEALTHY);
    noodle_health_report_free(r);
}

static void backup_in_a_missing_directory_is_unknown_with_6073(void **state) {
    (void)state;
    char bdir[400];
    snprintf(bdir, sizeof bdir, "%s/no-such-dir", dir);
    noodle_health_report *r = check_backup(bdir);
    expect_status(r, NOODLE_HEALTH_BACKUP, NOODLE_HEALTH_UNKNOWN);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_BACKUP);
    assert_int_equal(c->error.code, NOODLE_E_HEALTH_CHECK_FAILED);
    assert_non_null(strstr(c->error.message, "No such file or directory"));
    assert_int_equal(r->overall, NOODLE_HEALTH_UNKNOWN);
    noodle_health_report_free(r);
}

/* ---- performance, connection, replication ----------------------------------------------------- */

static void performance_crosses_latency_thresholds(void **state) {
    (void)state;
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    unsigned mask = NOODLE_HEALTH_BIT(NOODLE_HEALTH_PERFORMANCE);
    o.thresholds.latency_p99_degraded_ms = 1000; /* generous: a shared machine */
    o.thresholds.latency_p99_unhealthy_ms = 5000;
    noodle_health_report *r = health_run("sqlite", path, &o, mask);
    expect_status(r, NOODLE_HEALTH_PERFORMANCE, NOODLE_HEALTH_HEALTHY);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_PERFORMANCE);
    assert_true(c->measures[0].value > 0); /* a real round trip takes time */
    assert_non_null(strstr(c->measurement, "20 validate round trips: 0 failed"));
    noodle_health_report_free(r);

    o.thresholds.latency_p99_degraded_ms = 0;
    r = health_run("sqlite", path, &o, mask);
    expect_status(r, NOODLE_HEALTH_PERFORMANCE, NOODLE_HEALTH_DEGRADED);
    noodle_health_report_free(r);

    o.thresholds.latency_p99_unhealthy_ms = 0;
    o.thresholds.performance_samples = 5;
    r = health_run("sqlite", path, &o, mask);
    expect_status(r, NOODLE_HEALTH_PERFORMANCE, NOODLE_HEALTH_UNHEALTHY);
    assert_non_null(strstr(only(r, NOODLE_HEALTH_PERFORMANCE)->measurement, "5 validate"));
    noodle_health_report_free(r);
}

static void performance_reports_failing_round_trips_as_an_error_rate(void **state) {
    (void)state;
    noodle_pool *pool = health_open_pool("sqlite", path);
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.checks = NOODLE_HEALTH_BIT(NOODLE_HEALTH_PERFORMANCE);
    o.check_timeout_ms = 2000;
    /* every validate answers "busy" (5005): the connection stays usable */
    assert_int_equal(fiu_enable("backend/sqlite/validate", 1, (void *)(intptr_t)5005, 0), 0);
    noodle_health_report *r = NULL;
    noodle_error err;
    int rc = noodle_health_check_pool(pool, &o, &r, &err);
    fiu_disable("backend/sqlite/validate");
    noodle_pool_close(pool);
    assert_ok(rc, &err);
    expect_status(r, NOODLE_HEALTH_PERFORMANCE, NOODLE_HEALTH_UNHEALTHY);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_PERFORMANCE);
    assert_string_equal(c->measures[1].name, "error_rate");
    assert_near(c->measures[1].value, 1.0, 0);
    assert_near(c->measures[0].value, -1, 0); /* no latency without a success */
    assert_non_null(strstr(c->measurement, "NOODLE-5005"));
    noodle_health_report_free(r);
}

static void connection_to_a_missing_directory_is_unhealthy_with_the_code(void **state) {
    (void)state;
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.check_timeout_ms = 300;
    char url[400];
    snprintf(url, sizeof url, "%s/missing/db.sqlite", dir);
    unsigned mask = NOODLE_HEALTH_BIT(NOODLE_HEALTH_CONNECTION) |
                    NOODLE_HEALTH_BIT(NOODLE_HEALTH_INTEGRITY);
    noodle_health_report *r = health_run("sqlite", url, &o, mask);
    expect_status(r, NOODLE_HEALTH_CONNECTION, NOODLE_HEALTH_UNHEALTHY);
    const noodle_health_check_result *c = only(r, NOODLE_HEALTH_CONNECTION);
    assert_int_equal(c->error.code, NOODLE_E_POOL_TIMEOUT);
    assert_non_null(strstr(c->measurement, "NOODLE-4001"));
    /* what needs a connection is unknown, wrapping the cause */
    expect_status(r, NOODLE_HEALTH_INTEGRITY, NOODLE_HEALTH_UNKNOWN);
    assert_int_equal(only(r, NOODLE_HEALTH_INTEGRITY)->error.code, NOODLE_E_HEALTH_CHECK_FAILED);
    assert_non_null(strstr(only(r, NOODLE_HEALTH_INTEGRITY)->error.message, "NOODLE-2002"));
    assert_int_equal(r->overall, NOODLE_HEALTH_UNHEALTHY);
    noodle_health_report_free(r);
}

/* A healthy database with a fresh backup is healthy overall; replication does
 * not apply to SQLite and says so without counting. */
static void all_checks_on_a_healthy_database(void **state) {
    (void)state;
    exec_direct("CREATE TABLE t (x)");
    char bdir[400];
    snprintf(bdir, sizeof bdir, "%s/backups", dir);
    assert_int_equal(mkdir(bdir, 0700), 0);
    make_file(bdir, "today.db", 4096, 60);
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.backup_dir = bdir;
    o.thresholds.latency_p99_degraded_ms = 1000;
    o.thresholds.latency_p99_unhealthy_ms = 5000;
    o.thresholds.connection_degraded_ms = 5000;
    o.thresholds.connection_unhealthy_ms = 10000;
    o.thresholds.space_free_bytes_degraded = -1; /* whatever disk the test runs on */
    o.thresholds.space_free_bytes_unhealthy = -1;
    o.thresholds.space_free_percent_degraded = -1;
    o.thresholds.space_free_percent_unhealthy = 0.001;
    noodle_health_report *r = health_run("sqlite", path, &o, NOODLE_HEALTH_ALL);
    assert_int_equal(r->count, NOODLE_HEALTH_CHECKS);
    for (int k = 0; k < NOODLE_HEALTH_REPLICATION; k++)
        expect_status(r, (noodle_health_check_kind)k, NOODLE_HEALTH_HEALTHY);
    const noodle_health_check_result *rep = only(r, NOODLE_HEALTH_REPLICATION);
    assert_int_equal(rep->status, NOODLE_HEALTH_UNKNOWN);
    assert_false(rep->applicable);
    assert_non_null(strstr(rep->error.message, "SQLite has no replication"));
    assert_int_equal(r->overall, NOODLE_HEALTH_HEALTHY);
    assert_string_equal(r->backend, "sqlite");
    assert_non_null(strstr(r->server_version, "SQLite"));
    noodle_health_report_free(r);
}

/* ---- rendering ------------------------------------------------------------------------------ */

static void json_report_parses_back_with_escaped_strings(void **state) {
    (void)state;
    char bdir[400];
    snprintf(bdir, sizeof bdir, "%s/we\"ird\\dir\ttab", dir); /* missing: quoted in messages */
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.backup_dir = bdir;
    noodle_health_report *r = health_run("sqlite", path, &o,
                                        NOODLE_HEALTH_BIT(NOODLE_HEALTH_CONNECTION) |
                                            NOODLE_HEALTH_BIT(NOODLE_HEALTH_BACKUP));
    char *json = NULL, *text = NULL;
    noodle_error err;
    assert_ok(noodle_health_report_json(r, &json, &err), &err);
    assert_ok(noodle_health_report_text(r, &text, &err), &err);
    assert_non_null(strstr(text, "overall: unknown"));
    assert_non_null(strstr(text, "backup       unknown"));
    assert_non_null(strstr(json, "we\\\"ird\\\\dir\\ttab"));
#ifdef NOODLE_HAVE_JANSSON
    json_error_t je;
    json_t *root = json_loads(json, 0, &je);
    if (root == NULL) fail_msg("JSON does not parse: %s at %d\n%s", je.text, je.position, json);
    assert_string_equal(json_string_value(json_object_get(root, "overall")), "unknown");
    json_t *checks = json_object_get(root, "checks");
    assert_int_equal(json_array_size(checks), 2);
    json_t *conn = json_array_get(checks, 0), *backup = json_array_get(checks, 1);
    assert_string_equal(json_string_value(json_object_get(conn, "check")), "connection");
    json_t *m0 = json_array_get(json_object_get(conn, "measures"), 0);
    assert_string_equal(json_string_value(json_object_get(m0, "unit")), "ms");
    assert_true(json_is_number(json_object_get(m0, "value")));
    assert_true(json_is_null(json_object_get(conn, "error")));
    json_t *e = json_object_get(backup, "error");
    assert_int_equal(json_integer_value(json_object_get(e, "code")), 6073);
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), bdir));
    assert_non_null(strstr(json_string_value(json_object_get(backup, "measurement")), bdir));
    json_decref(root);
#else
    assert_non_null(strstr(json, "\"overall\":\"unknown\""));
    assert_non_null(strstr(json, "\"code\":6073"));
#endif
    free(json);
    free(text);
    noodle_health_report_free(r);
}

static void options_are_checked(void **state) {
    (void)state;
    unsigned mask;
    noodle_error err;
    assert_ok(noodle_health_parse_checks("space,backup", &mask, &err), &err);
    assert_int_equal(mask, NOODLE_HEALTH_BIT(NOODLE_HEALTH_SPACE) | NOODLE_HEALTH_BIT(NOODLE_HEALTH_BACKUP));
    assert_code(noodle_health_parse_checks("space,disk", &mask, &err), &err,
                NOODLE_E_HEALTH_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "'disk'"));
    noodle_pool *pool = health_open_pool("sqlite", path);
    noodle_health_options o = NOODLE_HEALTH_OPTIONS_INIT;
    o.struct_size = 8;
    noodle_health_report *r = (noodle_health_report *)&o;
    assert_code(noodle_health_check_pool(pool, &o, &r, &err), &err,
                NOODLE_E_HEALTH_INVALID_ARGUMENT);
    assert_null(r);
    noodle_pool_close(pool);
}

int main(void) {
    fiu_init(0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(space_check_follows_a_filling_filesystem, setup, teardown),
        cmocka_unit_test_setup_teardown(space_is_unknown_for_an_in_memory_database, setup, teardown),
        cmocka_unit_test_setup_teardown(integrity_finds_a_corrupted_file_unhealthy, setup, teardown),
        cmocka_unit_test_setup_teardown(backup_age_and_size_decide_its_state, setup, teardown),
        cmocka_unit_test_setup_teardown(backup_in_a_missing_directory_is_unknown_with_6073, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(performance_crosses_latency_thresholds, setup, teardown),
        cmocka_unit_test_setup_teardown(performance_reports_failing_round_trips_as_an_error_rate,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            connection_to_a_missing_directory_is_unhealthy_with_the_code, setup, teardown),
        cmocka_unit_test_setup_teardown(all_checks_on_a_healthy_database, setup, teardown),
        cmocka_unit_test_setup_teardown(json_report_parses_back_with_escaped_strings, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(options_are_checked, setup, teardown),
    };
    return cmocka_run_group_tests_name("health_sqlite", tests, NULL, NULL);
}
