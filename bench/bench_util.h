/* Helpers the benchmarks share: time, fatal errors, threads and the
 * statistics of repeated measurements. Header only (static inline): define
 * BENCH_NAME (the program's name, for messages) before including it.
 */
#ifndef NOODLE_BENCH_UTIL_H
#define NOODLE_BENCH_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "noodle/error.h"

#ifndef BENCH_NAME
#error "define BENCH_NAME before including bench_util.h"
#endif

/* The stack of the benchmarks' worker threads. */
#define BENCH_THREAD_STACK (256 * 1024)

/* The monotonic clock, in ns. */
static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void sleep_ms(int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static inline void die(const char *what) {
    fprintf(stderr, BENCH_NAME ": %s\n", what);
    exit(1);
}

static inline void die_err(const char *what, const noodle_error *err) {
    char buf[768];
    noodle_error_format(err, buf, sizeof buf);
    fprintf(stderr, BENCH_NAME ": %s: %s\n", what, buf);
    exit(1);
}

/* How a result compares with its (informative) target. */
static inline const char *verdict(bool ok) { return ok ? "PASS" : "MISS"; }

/* Start fn(arg) on a thread with a BENCH_THREAD_STACK stack, or die. */
static inline void start_thread(pthread_t *t, void *(*fn)(void *), void *arg) {
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) die("pthread_attr_init");
    pthread_attr_setstacksize(&attr, BENCH_THREAD_STACK);
    if (pthread_create(t, &attr, fn, arg) != 0) die("pthread_create");
    pthread_attr_destroy(&attr);
}

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sort v[0..n) in place, ascending. */
static inline void sort_doubles(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
}

/* The median of the sorted s[0..n), n > 0. */
static inline double median_sorted(const double *s, int n) {
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

#endif
