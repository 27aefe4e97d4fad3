/* Small helpers shared by the cmocka tests. */
#ifndef NOODLE_TEST_UTIL_H
#define NOODLE_TEST_UTIL_H

#include <stdint.h>

#include "noodle/backend.h"
#include "noodle/config.h"
#include "noodle/error.h"

/* Monotonic milliseconds, for generous elapsed-time bounds in tests. */
int64_t noodle_test_now_ms(void);
/* Sleep ms milliseconds. */
void noodle_test_sleep_ms(int64_t ms);

/* Poll cond every millisecond until it holds or ms pass; the caller asserts
 * cond afterwards (so a failure prints what was expected). */
#define WAIT_FOR(cond, ms)                                                                  \
    do {                                                                                    \
        int64_t wait_for_end_ = noodle_test_now_ms() + (ms);                                \
        while (!(cond) && noodle_test_now_ms() < wait_for_end_) noodle_test_sleep_ms(1);    \
    } while (0)

/* Failures seen on worker threads, which must not call cmocka asserts (they
 * would longjmp across threads): a worker records one with thread_fail, the
 * test thread fails with the first recorded. reset forgets it (a test's setup). */
void noodle_test_thread_fail(const char *fmt, ...) NOODLE_PRINTF(1, 2);
void noodle_test_assert_no_thread_failure(void);
void noodle_test_reset_thread_failure(void);

/* The number of threads of this process (entries of /proc/self/task), or -1. */
int noodle_test_thread_count(void);

/* Load cfg from the options o alone (no process environment); fails the
 * test on error. Free it with noodle_config_free. */
void noodle_test_config_load(noodle_config *cfg, const noodle_config_options *o);

/* Fail the current cmocka test with the formatted error when rc != 0. */
#define assert_ok(rc, err)                                                              \
    do {                                                                                \
        int assert_ok_rc_ = (rc);                                                       \
        if (assert_ok_rc_ != 0) {                                                       \
            char assert_ok_buf_[1024];                                                  \
            noodle_error_format((err), assert_ok_buf_, sizeof assert_ok_buf_);          \
            fail_msg("expected success, got %d: %s", assert_ok_rc_, assert_ok_buf_);    \
        }                                                                               \
    } while (0)

/* Assert rc == code and err->code == code, printing the error otherwise. */
#define assert_code(rc, err, want)                                                      \
    do {                                                                                \
        int assert_code_rc_ = (rc);                                                     \
        if (assert_code_rc_ != (want) || (err)->code != (want)) {                       \
            char assert_code_buf_[1024];                                                \
            noodle_error_format((err), assert_code_buf_, sizeof assert_code_buf_);      \
            fail_msg("expected code %d, got rc %d: %s", (int)(want), assert_code_rc_,   \
                     assert_code_buf_);                                                 \
        }                                                                               \
    } while (0)

/* Run sql (no parameters) on c with a 10 s deadline; fail the test on error. */
void noodle_test_exec_ok(noodle_conn *c, const char *sql);
/* The single int64 that sql (no parameters) returns on c; fails the test
 * unless it returns exactly one row whose first cell is an int64. */
int64_t noodle_test_query_int(noodle_conn *c, const char *sql);

/* A backend's statement-cache counters (noodle__sqlite_stmt_cache_stats,
 * noodle__pg_stmt_cache_stats). */
typedef void (*noodle_test_cache_stats)(void *handle, uint64_t *hits, uint64_t *misses,
                                        size_t *size);
/* Fail unless c's statement cache counted hits and misses and holds size. */
void noodle_test_assert_cache(noodle_conn *c, noodle_test_cache_stats stats, uint64_t hits,
                              uint64_t misses, size_t size);
/* On c, whose cache (capacity cap) is empty: cap statements are all kept,
 * one more evicts the least recently used, which is then prepared again. */
void noodle_test_cache_evicts_the_least_recently_used(noodle_conn *c, int cap,
                                                      noodle_test_cache_stats stats);

/* Make a fresh temporary directory (mkdtemp under $TMPDIR or /tmp); the path
 * is written to buf. Returns 0 or -1. rm_rf removes a tree; returns 0 or -1. */
int noodle_test_tempdir(char *buf, size_t size);
int noodle_test_rm_rf(const char *path);

#endif
