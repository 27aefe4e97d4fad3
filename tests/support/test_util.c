#include "test_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int64_t noodle_test_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void noodle_test_sleep_ms(int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The first failure a worker thread recorded ("" when none). */
static pthread_mutex_t thread_failure_mu = PTHREAD_MUTEX_INITIALIZER;
static char thread_failure[1024];

void noodle_test_thread_fail(const char *fmt, ...) {
    pthread_mutex_lock(&thread_failure_mu);
    if (thread_failure[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(thread_failure, sizeof thread_failure, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&thread_failure_mu);
}

void noodle_test_assert_no_thread_failure(void) {
    pthread_mutex_lock(&thread_failure_mu);
    char copy[sizeof thread_failure];
    memcpy(copy, thread_failure, sizeof copy);
    pthread_mutex_unlock(&thread_failure_mu);
    if (copy[0] != '\0') fail_msg("on a worker thread: %s", copy);
}

void noodle_test_reset_thread_failure(void) {
    pthread_mutex_lock(&thread_failure_mu);
    thread_failure[0] = '\0';
    pthread_mutex_unlock(&thread_failure_mu);
}

int noodle_test_thread_count(void) {
    DIR *d = opendir("/proc/self/task");
    if (d == NULL) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

void noodle_test_config_load(noodle_config *cfg, const noodle_config_options *o) {
    char *envp[] = {NULL};
    noodle_error err;
    assert_ok(noodle_config_load(cfg, envp, o, &err), &err);
}

int noodle_test_tempdir(char *buf, size_t size) {
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0') tmp = "/tmp";
    int n = snprintf(buf, size, "%s/noodle-test-XXXXXX", tmp);
    if (n < 0 || (size_t)n >= size) return -1;
    return mkdtemp(buf) == NULL ? -1 : 0;
}

int noodle_test_rm_rf(const char *path) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execlp("rm", "rm", "-rf", "--", path, (char *)NULL);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* The rows of sql (no parameters) on c, run with a 10 s deadline; fails the
 * test on error. */
static noodle_rows *query_ok(noodle_conn *c, const char *sql) {
    noodle_rows *rows = NULL;
    noodle_error err;
    assert_ok(noodle_conn_execute(c, sql, NULL, 0, noodle_deadline_after(NULL, NOODLE_SEC(10)),
                                  &rows, &err),
              &err);
    return rows;
}

void noodle_test_exec_ok(noodle_conn *c, const char *sql) { noodle_rows_free(query_ok(c, sql)); }

void noodle_test_assert_cache(noodle_conn *c, noodle_test_cache_stats stats, uint64_t hits,
                              uint64_t misses, size_t size) {
    uint64_t h, m;
    size_t n;
    stats(noodle_conn_handle(c), &h, &m, &n);
    if (h != hits || m != misses || n != size)
        fail_msg("statement cache: %llu hits, %llu misses, %zu held; want %llu, %llu, %zu",
                 (unsigned long long)h, (unsigned long long)m, n, (unsigned long long)hits,
                 (unsigned long long)misses, size);
}

void noodle_test_cache_evicts_the_least_recently_used(noodle_conn *c, int cap,
                                                      noodle_test_cache_stats stats) {
    const uint64_t n = (uint64_t)cap;
    char sql[32];
    for (int i = 0; i < cap; i++) {
        snprintf(sql, sizeof sql, "SELECT %d", i);
        assert_int_equal(noodle_test_query_int(c, sql), i);
    }
    noodle_test_assert_cache(c, stats, 0, n, n);
    noodle_test_exec_ok(c, "SELECT 0"); /* now the most recent: "SELECT 1" is the oldest */
    snprintf(sql, sizeof sql, "SELECT %d", cap);
    noodle_test_exec_ok(c, sql); /* evicts "SELECT 1" */
    noodle_test_assert_cache(c, stats, 1, n + 1, n);
    noodle_test_exec_ok(c, "SELECT 0"); /* kept */
    noodle_test_assert_cache(c, stats, 2, n + 1, n);
    assert_int_equal(noodle_test_query_int(c, "SELECT 1"), 1); /* gone: prepared again */
    noodle_test_assert_cache(c, stats, 2, n + 2, n);
}

int64_t noodle_test_query_int(noodle_conn *c, const char *sql) {
    noodle_rows *rows = query_ok(c, sql);
    assert_int_equal(noodle_rows_count(rows), 1);
    const noodle_value *v = noodle_rows_get(rows, 0, 0);
    assert_int_equal(v->type, NOODLE_TYPE_INT64);
    int64_t i = v->v.i;
    noodle_rows_free(rows);
    return i;
}
