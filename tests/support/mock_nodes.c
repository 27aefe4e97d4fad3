#include "mock_nodes.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <fiu.h>
#include <stdio.h>

#include "test_util.h"

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
