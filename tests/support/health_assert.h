/* Helpers shared by the health checker's tests (header only; cmocka must be
 * included first). */
#ifndef NOODLE_TEST_HEALTH_ASSERT_H
#define NOODLE_TEST_HEALTH_ASSERT_H

#include <stdlib.h>
#include <string.h>

#include "noodle/noodle.h"
#include "test_util.h"

/* |a - b| <= eps (this cmocka has no assert_double_equal). */
#define assert_near(a, b, eps)                                                          \
    do {                                                                                \
        double near_a_ = (a), near_b_ = (b);                                            \
        if (near_a_ - near_b_ > (eps) || near_b_ - near_a_ > (eps))                                            \
            fail_msg("%s = %.17g, expected %.17g (within %g)", #a, near_a_, near_b_,    \
                     (double)(eps));                                                    \
    } while (0)

/* A pool on url through backend, configured as an application would (no
 * environment), opening nothing before the first acquire. */
static inline noodle_pool *health_open_pool(const char *backend, const char *url) {
    char *const envp[] = {NULL};
    noodle_config_options co = NOODLE_CONFIG_OPTIONS_INIT;
    noodle_config cfg;
    noodle_error err;
    co.backend = backend;
    co.url = url;
    co.min_idle = 0;
    co.connect_timeout_ms = 2000;
    assert_ok(noodle_config_load(&cfg, envp, &co, &err), &err);
    noodle_pool_options po = NOODLE_POOL_OPTIONS_INIT;
    po.config = &cfg;
    po.application_name = "noodle-health-test";
    noodle_pool *pool = NULL;
    int rc = noodle_pool_open(&po, &pool, &err);
    noodle_config_free(&cfg);
    assert_ok(rc, &err);
    return pool;
}

/* Run the checks of mask (set into *o) on a fresh pool on url. */
static inline noodle_health_report *health_run(const char *backend, const char *url,
                                               noodle_health_options *o, unsigned mask) {
    noodle_pool *pool = health_open_pool(backend, url);
    noodle_health_report *r = NULL;
    noodle_error err;
    o->checks = mask;
    assert_ok(noodle_health_check_pool(pool, o, &r, &err), &err);
    noodle_pool_close(pool);
    assert_non_null(r);
    return r;
}

static inline const noodle_health_check_result *only(const noodle_health_report *r,
                                                     noodle_health_check_kind k) {
    const noodle_health_check_result *c = noodle_health_report_find(r, k);
    assert_non_null(c);
    return c;
}

/* Fail with the report's text unless check k is in state want; a check that
 * is not healthy must say what to do. */
static inline void expect_status(const noodle_health_report *r, noodle_health_check_kind k,
                                 noodle_health_status want) {
    const noodle_health_check_result *c = only(r, k);
    if (c->status != want) {
        char *text = NULL;
        noodle_error err;
        assert_ok(noodle_health_report_text(r, &text, &err), &err);
        fail_msg("%s: expected %s, got %s\n%s", noodle_health_check_name(k),
                 noodle_health_status_name(want), noodle_health_status_name(c->status), text);
    }
    if (want == NOODLE_HEALTH_HEALTHY) assert_string_equal(c->recommendation, "");
    else if (want != NOODLE_HEALTH_UNKNOWN) assert_true(strlen(c->recommendation) > 20);
}

/* The measure called name of c (fails when there is none). */
static inline const noodle_health_measure *measure(const noodle_health_check_result *c,
                                                   const char *name) {
    for (size_t i = 0; i < c->nmeasures; i++)
        if (strcmp(c->measures[i].name, name) == 0) return &c->measures[i];
    fail_msg("%s has no measure '%s' (%s)", noodle_health_check_name(c->kind), name,
             c->measurement);
    return NULL;
}

#endif
