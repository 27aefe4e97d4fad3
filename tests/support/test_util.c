#include "test_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

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

void noodle_test_exec_ok(noodle_conn *c, const char *sql) {
    noodle_rows *rows = NULL;
    noodle_error err;
    assert_ok(noodle_conn_execute(c, sql, NULL, 0, noodle_deadline_after(NULL, NOODLE_SEC(10)),
                                  &rows, &err),
              &err);
    noodle_rows_free(rows);
}

int64_t noodle_test_query_int(noodle_conn *c, const char *sql) {
    noodle_rows *rows = NULL;
    noodle_error err;
    assert_ok(noodle_conn_execute(c, sql, NULL, 0, noodle_deadline_after(NULL, NOODLE_SEC(10)),
                                  &rows, &err),
              &err);
    assert_int_equal(noodle_rows_count(rows), 1);
    const noodle_value *v = noodle_rows_get(rows, 0, 0);
    assert_int_equal(v->type, NOODLE_TYPE_INT64);
    int64_t i = v->v.i;
    noodle_rows_free(rows);
    return i;
}
