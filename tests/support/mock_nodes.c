#include "mock_nodes.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <fiu.h>
#include <stdio.h>

#include "test_util.h"

noodle_cluster *noodle_test_mock_cluster(const char *const *nodes, size_t n, bool wait_for_primary) {
    char urls[8][96];
    const char *endpoints[8];
    assert_true(n >= 1 && n <= 8);
    for (size_t i = 0; i < n; i++) {
        snprintf(urls[i], sizeof urls[i], "mock://%s", nodes[i]);
        endpoints[i] = urls[i];
    }
    noodle_config_options o = NOODLE_CONFIG_OPTIONS_INIT;
    o.backend = "mock";
    o.url = endpoints[0];
    o.max_connections = 2;
    o.min_idle = 0;
    o.timeout_ms = 5000;
    noodle_config cfg;
    noodle_test_config_load(&cfg, &o);
    noodle_cluster_options co = NOODLE_CLUSTER_OPTIONS_INIT;
    co.config = &cfg;
    co.endpoints = endpoints;
    co.nendpoints = n;
    co.backend = noodle_mock_backend();
    co.probe_interval_ms = 50;
    co.slow_start_ms = -1;
    co.wait_for_primary = wait_for_primary;
    noodle_cluster *cl = NULL;
    noodle_error err;
    int rc = noodle_cluster_open(&co, &cl, &err);
    noodle_config_free(&cfg); /* borrowed during noodle_cluster_open only */
    assert_ok(rc, &err);
    return cl;
}

int noodle_test_mock_init(void) {
    noodle_error err;
    fiu_init(0);
    if (noodle_mock_register(&err) != 0) {
        fprintf(stderr, "cannot register the mock backend: %s\n", err.message);
        return -1;
    }
    return 0;
}

noodle_mock_stats noodle_test_node_stats(const char *node) {
    noodle_mock_stats st;
    noodle_error err;
    assert_ok(noodle_mock_node_stats(node, &st, &err), &err);
    return st;
}

int64_t noodle_test_node_sessions(const char *node) {
    noodle_mock_stats st;
    noodle_error err;
    if (noodle_mock_node_stats(node, &st, &err) != 0) return 0;
    return st.open_connections;
}
