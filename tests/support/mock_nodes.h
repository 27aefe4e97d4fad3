/* The server-side view of mock backend nodes (mocks/noodle_mock.h), shared by
 * the tests that run pools and clusters over the mock. */
#ifndef NOODLE_TEST_MOCK_NODES_H
#define NOODLE_TEST_MOCK_NODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "noodle/cluster.h"
#include "noodle_mock.h"

/* What the main() of a test over the mock does first: initialise libfiu
 * and register the mock backend. 0, or -1 with the reason on stderr. */
int noodle_test_mock_init(void);

/* The node's counters; fails the test when the node does not exist. */
noodle_mock_stats noodle_test_node_stats(const char *node);
/* Sessions the node has open now (0 when the node does not exist). */
int64_t noodle_test_node_sessions(const char *node);

/* A cluster over mock://<node> for each of nodes[0..n) (pools of 2, acquire
 * timeout 5 s, probes every 50 ms, no slow start); with wait_for_primary,
 * open returns once the primary is known. Fails the test when it cannot
 * open. */
noodle_cluster *noodle_test_mock_cluster(const char *const *nodes, size_t n, bool wait_for_primary);

#endif
