/* The cluster layer (include/noodle/cluster.h, STD-FAILOVER, STD-FAILOVER-ROLE),
 * over the mock backend: one test per behaviour a user relies on, named
 * after it.
 *
 * Every test builds its own nodes ("mock://a<n>", "mock://b<n>", n: the test's
 * number, so that nothing a failed test left running can touch them) after a
 * noodle_mock_reset() and its own cluster, from an explicit configuration (no
 * process environment), with short probe intervals (50 ms, 20 ms fast) so that
 * failovers happen within a few hundred milliseconds.
 *
 * Evidence comes from three places that cannot agree by accident: the
 * cluster's metrics and node info, the events its observers see, and the mock
 * nodes' own counters and committed rows (the server-side view: which node a
 * write really landed on, how many times a statement really ran).
 *
 * The mock does not replicate: a table exists only on the node it was created
 * on. Tests that fail over create the table on every node directly (while the
 * node is still a primary) before giving the nodes their roles.
 *
 * Timing bounds are generous: the machines running this have two shared
 * cores and may run the sanitizer builds. Worker threads never call cmocka
 * asserts (they would longjmp across threads): they record what went wrong
 * and the test thread fails with it.
 */
#include <fiu-control.h>
#include <fiu.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "noodle/backend.h"
#include "noodle/cluster.h"
#include "noodle/config.h"
#include "noodle/failpoint.h"
#include "noodle/pool.h"
#include "mock_nodes.h"
#include "noodle_mock.h"
#include "test_util.h"

/* The nodes of the current test: "a<n>" and "b<n>" (cluster nodes 0 and 1),
 * and their urls; set by setup(). */
static int test_no;
static char A[16], B[16], URL_A[32], URL_B[32];

/* ---- the mock nodes ------------------------------------------------------------------------ */

static int64_t deadline_ms(int64_t ms) { return noodle_deadline_after(NULL, NOODLE_MS(ms)); }

/* The name of cluster node i of the current test. */
static const char *node_name(int i) { return i == 0 ? A : B; }

static int64_t execute_calls(const char *node) {
    return noodle_test_node_stats(node).calls[NOODLE_MOCK_OP_EXECUTE];
}

static void set_role(const char *node, noodle_role role) {
    noodle_error err;
    assert_ok(noodle_mock_node_set_role(node, role, &err), &err);
}

static void crash(const char *node) {
    noodle_error err;
    assert_ok(noodle_mock_node_crash(node, &err), &err);
}

static void restart(const char *node) {
    noodle_error err;
    assert_ok(noodle_mock_node_restart(node, &err), &err);
}

static void set_hang(const char *node, noodle_mock_op op, bool hang) {
    noodle_error err;
    assert_ok(noodle_mock_set_hang(node, op, hang, &err), &err);
}

/* The next n statements on node fail with code. */
static void fail_next_executes(const char *node, int64_t n, int code) {
    noodle_error err;
    assert_ok(noodle_mock_fail_next(node, NOODLE_MOCK_OP_EXECUTE, n, code, &err), &err);
}

/* The next commit on node is applied, then its connection dies before the answer. */
static void lose_next_commit_ack(const char *node) {
    noodle_error err;
    assert_ok(noodle_mock_commit_ack_lost(node, 1, &err), &err);
}

/* Connects to node take ms from now on. */
static void slow_connects(const char *node, int64_t ms) {
    noodle_error err;
    assert_ok(noodle_mock_set_latency(node, NOODLE_MOCK_OP_CONNECT, NOODLE_MS(ms), &err), &err);
}

/* True when code is a catalogue code in the list (0-terminated). */
static bool code_in(int code, const int *allowed) {
    if (noodle_code_name(code) == NULL) return false;
    for (const int *p = allowed; *p != 0; p++)
        if (*p == code) return true;
    return false;
}

/* ---- nodes with a table ------------------------------------------------------------------- */

static noodle_conn *direct_connect(const char *node) {
    char url[96];
    snprintf(url, sizeof url, "mock://%s", node);
    noodle_connect_params p = {.url = url, .deadline = deadline_ms(5000)};
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_conn_open(noodle_mock_backend(), &p, &c, &err), &err);
    return c;
}

/* Create the node with the table kv, as a primary (the role is set after). */
static void node_with_table(const char *node) {
    noodle_conn *c = direct_connect(node);
    noodle_test_exec_ok(c, "CREATE TABLE kv (id BIGINT PRIMARY KEY, v TEXT)");
    noodle_conn_close(c);
}

/* Mark in present[] (size n, zeroed by the caller) every id of kv on node;
 * the node must accept connections. Returns how many rows there are. */
static int64_t ids_on(const char *node, bool *present, size_t n) {
    noodle_conn *c = direct_connect(node);
    noodle_rows *rows = NULL;
    noodle_error err;
    assert_ok(noodle_conn_execute(c, "SELECT id FROM kv", NULL, 0, deadline_ms(5000), &rows, &err),
              &err);
    size_t count = noodle_rows_count(rows);
    for (size_t i = 0; i < count; i++) {
        const noodle_value *v = noodle_rows_get(rows, i, 0);
        assert_int_equal(v->type, NOODLE_TYPE_INT64);
        assert_true(v->v.i >= 0 && (size_t)v->v.i < n);
        present[v->v.i] = true;
    }
    noodle_rows_free(rows);
    noodle_conn_close(c);
    return (int64_t)count;
}

static int64_t rows_of(const char *node) { return noodle_mock_node_rows(node, "kv"); }

/* ---- clusters over the mock ---------------------------------------------------------------- */

/* What a test asks of its cluster: its nodes, every node's pool settings
 * (the url is set at open) and the cluster's options (config, endpoints and
 * backend are set at open); cspec2() gives the defaults of this file. */
typedef struct cluster_spec {
    const char *nodes[4];
    size_t n;
    noodle_config_options pool;
    noodle_cluster_options cluster;
} cluster_spec;

static cluster_spec cspec2(const char *a, const char *b) {
    cluster_spec s = {.nodes = {a, b},
                      .n = b != NULL ? 2 : 1,
                      .pool = NOODLE_CONFIG_OPTIONS_INIT,
                      .cluster = NOODLE_CLUSTER_OPTIONS_INIT};
    s.pool.backend = "mock";
    s.pool.max_connections = 4;
    s.pool.min_idle = 0;
    s.pool.timeout_ms = 2000;
    s.pool.idle_timeout_ms = 0;
    s.pool.max_lifetime_ms = 0;
    s.pool.validation_bypass_ms = 1000;
    s.pool.validation_timeout_ms = 300;
    s.pool.connect_timeout_ms = 500;
    s.pool.leak_threshold_ms = 0;
    s.cluster.application_name = "test_cluster";
    s.cluster.seed = 20240601;
    s.cluster.probe_interval_ms = 50;
    s.cluster.fast_probe_interval_ms = 20;
    s.cluster.probe_timeout_ms = 200;
    s.cluster.breaker_threshold = 2;
    s.cluster.breaker_backoff_ms = 50;
    s.cluster.breaker_backoff_max_ms = 200;
    s.cluster.slow_start_ms = -1; /* off unless a test is about it */
    s.cluster.retry_reads = false;
    s.cluster.wait_for_primary = true;
    return s;
}

static int try_open_cluster(const cluster_spec *s, noodle_cluster **out, noodle_error *err) {
    char urls[4][96];
    const char *endpoints[4];
    for (size_t i = 0; i < s->n; i++) {
        snprintf(urls[i], sizeof urls[i], "mock://%s", s->nodes[i]);
        endpoints[i] = urls[i];
    }
    noodle_config_options o = s->pool;
    o.url = endpoints[0];
    noodle_config cfg;
    noodle_test_config_load(&cfg, &o);
    noodle_cluster_options co = s->cluster;
    co.config = &cfg;
    co.endpoints = endpoints;
    co.nendpoints = s->n;
    co.backend = noodle_mock_backend();
    int rc = noodle_cluster_open(&co, out, err);
    noodle_config_free(&cfg); /* borrowed during noodle_cluster_open only */
    return rc;
}

static noodle_cluster *open_cluster(const cluster_spec *s) {
    noodle_cluster *cl = NULL;
    noodle_error err;
    assert_ok(try_open_cluster(s, &cl, &err), &err);
    assert_non_null(cl);
    return cl;
}

/* A primary "a<n>" and a standby "b<n>", both with the table kv; returns
 * the spec of a cluster over them. */
static cluster_spec primary_and_standby(void) {
    node_with_table(A);
    node_with_table(B);
    set_role(B, NOODLE_ROLE_STANDBY);
    return cspec2(A, B);
}

static noodle_cluster_metrics cmetrics(noodle_cluster *cl) {
    noodle_cluster_metrics m;
    noodle_cluster_get_metrics(cl, &m);
    return m;
}

static noodle_cluster_node_info node_info(noodle_cluster *cl, size_t i) {
    noodle_cluster_node_info info;
    noodle_error err;
    assert_ok(noodle_cluster_node(cl, i, &info, &err), &err);
    return info;
}

/* Thread-safe versions for WAIT_FOR conditions (no cmocka asserts). */
static int primary_of(noodle_cluster *cl) { return cmetrics(cl).primary; }

static noodle_cluster_node_info info_nocheck(noodle_cluster *cl, size_t i) {
    noodle_cluster_node_info info;
    memset(&info, 0, sizeof info);
    noodle_error err;
    if (noodle_cluster_node(cl, i, &info, &err) != 0) info.role = NOODLE_ROLE_UNKNOWN;
    return info;
}

/* ---- waiting for the cluster ---------------------------------------------------------------- */

/* Wait until the prober has completed at least `rounds` more probes. */
static void wait_probes(noodle_cluster *cl, uint64_t rounds) {
    uint64_t start = cmetrics(cl).probes;
    WAIT_FOR(cmetrics(cl).probes >= start + rounds, 5000);
    assert_true(cmetrics(cl).probes >= start + rounds);
}

/* Wait (up to ms) until the cluster's primary is node (-1: none); assert it is. */
static void await_primary(noodle_cluster *cl, int node, int64_t ms) {
    WAIT_FOR(primary_of(cl) == node, ms);
    assert_int_equal(primary_of(cl), node);
}

/* Wait (up to ms) until node i's breaker is in state; assert it is. */
static void await_breaker(noodle_cluster *cl, size_t i, noodle_breaker_state state, int64_t ms) {
    WAIT_FOR(info_nocheck(cl, i).breaker == state, ms);
    assert_int_equal(node_info(cl, i).breaker, state);
}

/* What a test waits for node i to become, as the cluster sees it. */
typedef bool (*node_pred)(const noodle_cluster_node_info *info);

static bool up_standby(const noodle_cluster_node_info *i) {
    return i->up && i->role == NOODLE_ROLE_STANDBY;
}

/* Up, a standby, and its breaker closed: answering its probes again. */
static bool usable_standby(const noodle_cluster_node_info *i) {
    return up_standby(i) && i->breaker == NOODLE_BREAKER_CLOSED;
}

static bool node_is(noodle_cluster *cl, size_t i, node_pred pred) {
    noodle_cluster_node_info info = info_nocheck(cl, i);
    return pred(&info);
}

/* Wait (up to ms) until pred holds for node i; returns whether it does. */
static bool node_becomes(noodle_cluster *cl, size_t i, node_pred pred, int64_t ms) {
    WAIT_FOR(node_is(cl, i, pred), ms);
    return node_is(cl, i, pred);
}

/* The primary (node `from`) crashes; once the cluster has no primary,
 * node `to` is promoted, and the cluster takes it as the primary. */
static void crash_and_promote(noodle_cluster *cl, int from, int to) {
    crash(node_name(from));
    await_primary(cl, -1, 3000);
    set_role(node_name(to), NOODLE_ROLE_PRIMARY);
    await_primary(cl, to, 3000);
}

/* Node i comes back as a standby (restarted); wait (up to ms) until the
 * cluster can use it, and assert that it does. */
static void rejoin_as_standby(noodle_cluster *cl, int i, int64_t ms) {
    set_role(node_name(i), NOODLE_ROLE_STANDBY);
    restart(node_name(i));
    assert_true(node_becomes(cl, (size_t)i, usable_standby, ms));
}

/* ---- statements through the cluster ---------------------------------------------------------- */

/* One statement through the cluster; the result is freed. */
static int cl_exec(noodle_cluster *cl, noodle_route route, unsigned flags, const char *sql,
                   const noodle_value *p, size_t n, int64_t deadline, noodle_error *err) {
    noodle_rows *r = NULL;
    int rc = noodle_cluster_execute(cl, route, flags, sql, p, n, deadline, &r, err);
    if (rc != 0 && r != NULL)
        noodle_test_thread_fail("execute failed with %d but left a result", rc);
    if (rc == 0 && r == NULL) noodle_test_thread_fail("execute succeeded without a result");
    noodle_rows_free(r);
    return rc;
}

static int insert_id(noodle_cluster *cl, int64_t id, int64_t deadline, noodle_error *err) {
    noodle_value p[2] = {noodle_int64(id), noodle_text("x")};
    return cl_exec(cl, NOODLE_ROUTE_PRIMARY, 0, "INSERT INTO kv (id, v) VALUES (?, ?)", p, 2,
                   deadline, err);
}

static void insert_ok(noodle_cluster *cl, int64_t id) {
    noodle_error err;
    assert_ok(insert_id(cl, id, deadline_ms(5000), &err), &err);
}

static int read_count(noodle_cluster *cl, noodle_route route, int64_t deadline, noodle_error *err) {
    return cl_exec(cl, route, NOODLE_EXEC_READ, "SELECT count(*) FROM kv", NULL, 0, deadline, err);
}

/* n reads through route, each of which must succeed. */
static void reads_ok(noodle_cluster *cl, noodle_route route, int n) {
    for (int i = 0; i < n; i++) {
        noodle_error err;
        assert_ok(read_count(cl, route, deadline_ms(5000), &err), &err);
    }
}

/* An acquire through route with a deadline ms from now, which must fail
 * with want (the error in *err); returns how long it took, in ms. */
static int64_t acquire_fails(noodle_cluster *cl, noodle_route route, int64_t ms, int want,
                             noodle_error *err) {
    noodle_conn *c = NULL;
    int64_t start = noodle_test_now_ms();
    assert_code(noodle_cluster_acquire_until(cl, route, deadline_ms(ms), &c, err), err, want);
    int64_t took = noodle_test_now_ms() - start;
    assert_null(c);
    return took;
}

/* A connection through the primary route; it must come. */
static noodle_conn *acquire_primary(noodle_cluster *cl) {
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_cluster_acquire_until(cl, NOODLE_ROUTE_PRIMARY, deadline_ms(5000), &c, &err),
              &err);
    return c;
}

/* The row count a read through route sees; it must succeed. */
static int64_t count_result(noodle_cluster *cl, noodle_route route) {
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_cluster_execute(cl, route, NOODLE_EXEC_READ, "SELECT count(*) FROM kv", NULL,
                                     0, deadline_ms(5000), &r, &err),
              &err);
    int64_t n = noodle_rows_get(r, 0, 0)->v.i;
    noodle_rows_free(r);
    return n;
}

/* ---- an observer that records every cluster event ---------------------------------------------- */

typedef struct rec_event {
    noodle_cluster_event_type type;
    int64_t time;
    int node;
    noodle_role old_role, role;
    noodle_breaker_state breaker;
    uint64_t generation;
    int code;
    char message[256];
} rec_event;

typedef struct recorder {
    pthread_mutex_t mu;
    rec_event ev[4096];
    size_t n, dropped;
} recorder;

static void record_event(const noodle_cluster_event *ev, void *arg) {
    rec_event e = {.type = ev->type,
                   .time = ev->time,
                   .node = ev->node,
                   .old_role = ev->old_role,
                   .role = ev->role,
                   .breaker = ev->breaker,
                   .generation = ev->generation,
                   .code = ev->code};
    if (ev->message != NULL) snprintf(e.message, sizeof e.message, "%s", ev->message);
    recorder *r = arg;
    pthread_mutex_lock(&r->mu);
    if (r->n < sizeof r->ev / sizeof r->ev[0])
        r->ev[r->n++] = e;
    else
        r->dropped++;
    pthread_mutex_unlock(&r->mu);
}

static recorder *observe(noodle_cluster *cl) {
    recorder *r = calloc(1, sizeof *r);
    assert_non_null(r);
    pthread_mutex_init(&r->mu, NULL);
    noodle_error err;
    assert_ok(noodle_cluster_observe(cl, record_event, r, &err), &err);
    return r;
}

static void recorder_free(recorder *r) {
    if (r == NULL) return;
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Whether e is of a type and about a node (-1: any node); r->mu held. */
static bool event_is(const rec_event *e, noodle_cluster_event_type type, int node) {
    return e->type == type && (node < 0 || e->node == node);
}

/* Events of a type about a node (-1: any) that moved the topology past
 * generation `past` (-1: any generation). The primary's discovery at open
 * may reach an observer registered just after open returned: its generation
 * is not past the one open left. */
static size_t count_events_past(recorder *r, noodle_cluster_event_type type, int node,
                                int64_t past) {
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++)
        if (event_is(&r->ev[i], type, node) && (past < 0 || r->ev[i].generation > (uint64_t)past))
            n++;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Events of a type about a node (-1: any node). */
static size_t count_events(recorder *r, noodle_cluster_event_type type, int node) {
    return count_events_past(r, type, node, -1);
}

/* Index of the first event of a type about a node at or after index `from`,
 * or -1. */
static long find_event(recorder *r, noodle_cluster_event_type type, int node, size_t from) {
    long found = -1;
    pthread_mutex_lock(&r->mu);
    for (size_t i = from; i < r->n && found < 0; i++)
        if (event_is(&r->ev[i], type, node)) found = (long)i;
    pthread_mutex_unlock(&r->mu);
    return found;
}

/* The first event of type for node (-1 after ms): events are delivered
 * after the cluster's state has changed, so a test that saw the change
 * waits for the event. */
static long await_event(recorder *r, noodle_cluster_event_type type, int node, int64_t ms) {
    WAIT_FOR(find_event(r, type, node, 0) >= 0, ms);
    return find_event(r, type, node, 0);
}

static rec_event event_at(recorder *r, long i) {
    pthread_mutex_lock(&r->mu);
    rec_event e = r->ev[i];
    pthread_mutex_unlock(&r->mu);
    return e;
}

static size_t events_recorded(recorder *r) {
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* The breaker states node went through, in order (BREAKER events). */
static size_t breaker_states(recorder *r, int node, noodle_breaker_state *out, size_t max) {
    size_t k = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n && k < max; i++)
        if (event_is(&r->ev[i], NOODLE_CLUSTER_EV_BREAKER, node)) out[k++] = r->ev[i].breaker;
    pthread_mutex_unlock(&r->mu);
    return k;
}

/* The last breaker state recorded for node, or -1. Observers hear of a
 * change just after the cluster shows it (events go out after the lock is
 * released), so a test that saw the state waits for the event too. */
static int last_breaker(recorder *r, int node) {
    noodle_breaker_state seq[256];
    size_t n = breaker_states(r, node, seq, 256);
    return n > 0 ? (int)seq[n - 1] : -1;
}

/* Every step of the breaker sequence is an edge of the documented machine:
 * closed -> open -> half-open -> (closed | open). Returns false otherwise. */
static bool breaker_sequence_valid(const noodle_breaker_state *s, size_t n) {
    noodle_breaker_state prev = NOODLE_BREAKER_CLOSED;
    for (size_t i = 0; i < n; i++) {
        bool ok = (prev == NOODLE_BREAKER_CLOSED && s[i] == NOODLE_BREAKER_OPEN) ||
                  (prev == NOODLE_BREAKER_OPEN && s[i] == NOODLE_BREAKER_HALF_OPEN) ||
                  (prev == NOODLE_BREAKER_HALF_OPEN &&
                   (s[i] == NOODLE_BREAKER_OPEN || s[i] == NOODLE_BREAKER_CLOSED));
        if (!ok) return false;
        prev = s[i];
    }
    return true;
}

static void dump_events(recorder *r) {
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++)
        fprintf(stderr,
                "  event %zu: %s node %d role %s->%s breaker %s gen %" PRIu64 " code %d %s\n", i,
                noodle_cluster_event_name(r->ev[i].type), r->ev[i].node,
                noodle_role_name(r->ev[i].old_role), noodle_role_name(r->ev[i].role),
                noodle_breaker_state_name(r->ev[i].breaker), r->ev[i].generation, r->ev[i].code,
                r->ev[i].message);
    pthread_mutex_unlock(&r->mu);
}

static void close_observed(noodle_cluster *cl, recorder *rec) {
    noodle_cluster_close(cl);
    recorder_free(rec);
}

/* ---- fixture ---------------------------------------------------------------------------- */

static const char *const cluster_points[] = {"cluster/thread_start", "cluster/role_detect",
                                             "cluster/breaker/open", "cluster/breaker/half_open",
                                             "cluster/breaker/close"};

#define NPOINTS (sizeof cluster_points / sizeof cluster_points[0])
static bool point_enabled[NPOINTS];

static size_t point_index(const char *name) {
    for (size_t i = 0; i < NPOINTS; i++)
        if (strcmp(cluster_points[i], name) == 0) return i;
    fail_msg("not a cluster fail point: %s", name);
    return 0;
}

/* Enable / disable a cluster fail point, remembering which are on (libfiu
 * crashes when a point that was never enabled is disabled). */
static int fp_enable(const char *name) {
    point_enabled[point_index(name)] = true;
    return fiu_enable(name, 1, NULL, 0);
}

static int fp_enable_external(const char *name, external_cb_t *cb) {
    point_enabled[point_index(name)] = true;
    return fiu_enable_external(name, 1, NULL, 0, cb);
}

static int fp_disable(const char *name) {
    point_enabled[point_index(name)] = false;
    return fiu_disable(name);
}

static int setup(void **state) {
    (void)state;
    test_no++;
    snprintf(A, sizeof A, "a%d", test_no);
    snprintf(B, sizeof B, "b%d", test_no);
    snprintf(URL_A, sizeof URL_A, "mock://%s", A);
    snprintf(URL_B, sizeof URL_B, "mock://%s", B);
    /* a test that failed half-way may have left a point enabled */
    for (size_t i = 0; i < NPOINTS; i++)
        if (point_enabled[i]) (void)fp_disable(cluster_points[i]);
    noodle_mock_reset();
    noodle_test_reset_thread_failure();
    return 0;
}

/* Whatever a helper or a worker recorded fails the test that ran it. */
static int teardown(void **state) {
    (void)state;
    noodle_test_assert_no_thread_failure();
    return 0;
}

/* ---- discovery and endpoints ------------------------------------------------------------------ */

static void roles_are_discovered_and_writes_land_only_on_the_primary(void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    noodle_cluster *cl = open_cluster(&s);
    /* wait_for_primary: the primary is known when open returns */
    noodle_cluster_metrics m = cmetrics(cl);
    assert_int_equal(m.nodes, 2);
    assert_int_equal(m.primary, 0);
    assert_int_equal(m.failovers, 0);
    WAIT_FOR(info_nocheck(cl, 1).role == NOODLE_ROLE_STANDBY, 3000);
    noodle_cluster_node_info a = node_info(cl, 0), b = node_info(cl, 1);
    assert_int_equal(a.role, NOODLE_ROLE_PRIMARY);
    assert_int_equal(b.role, NOODLE_ROLE_STANDBY);
    assert_true(a.up);
    assert_true(b.up);
    assert_false(a.fenced);
    assert_false(b.fenced);
    assert_int_equal(a.breaker, NOODLE_BREAKER_CLOSED);
    assert_int_equal(b.breaker, NOODLE_BREAKER_CLOSED);
    assert_true(a.last_probe_at > 0);
    assert_string_equal(a.endpoint, URL_A);
    assert_string_equal(b.endpoint, URL_B);

    int64_t b_commits = noodle_test_node_stats(B).commits;
    for (int64_t id = 0; id < 25; id++) insert_ok(cl, id);
    assert_int_equal(rows_of(A), 25);
    assert_int_equal(rows_of(B), 0);
    assert_int_equal(noodle_test_node_stats(B).commits, b_commits);
    /* a primary-routed read sees them too */
    assert_int_equal(count_result(cl, NOODLE_ROUTE_PRIMARY), 25);
    /* a connection for a transaction goes to the primary as well */
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_cluster_acquire(cl, NOODLE_ROUTE_PRIMARY, &c, &err), &err);
    assert_non_null(c);
    assert_string_equal(noodle_conn_endpoint(c), URL_A);
    noodle_cluster_release(cl, &c);
    assert_null(c);
    noodle_cluster_release(cl, &c); /* a NULL *conn is ignored */
    assert_int_equal(cmetrics(cl).failovers, 0);
    noodle_cluster_close(cl);
    /* every session the cluster had is closed */
    assert_int_equal(noodle_test_node_sessions(A), 0);
    assert_int_equal(noodle_test_node_sessions(B), 0);
}

/* The option `value` of keyword key in a conninfo written as key='value'. */
static bool conninfo_has(const char *conninfo, const char *key, const char *value) {
    char want[256];
    snprintf(want, sizeof want, "%s='%s'", key, value);
    const char *p = strstr(conninfo, want);
    while (p != NULL) {
        bool starts = p == conninfo || p[-1] == ' ';
        char after = p[strlen(want)];
        if (starts && (after == '\0' || after == ' ')) return true;
        p = strstr(p + 1, want);
    }
    return false;
}

/* A url that splits: into n endpoints, endpoint i with host hosts[i] (and
 * port ports[i] when there are ports) and every keyword of `all`. */
typedef struct split_case {
    const char *url;
    size_t n;
    const char *hosts[3], *ports[3];
    const char *all[3][2];
} split_case;

static const split_case splits[] = {
    /* keyword form */
    {"host=h1,h2 port=5432,5433 dbname=d user=u password=secret", 2, {"h1", "h2"},
     {"5432", "5433"}, {{"dbname", "d"}, {"user", "u"}, {"password", "secret"}}},
    /* URI form */
    {"postgresql://u@h1:1,h2:2/db?connect_timeout=3", 2, {"h1", "h2"}, {"1", "2"},
     {{"dbname", "db"}, {"user", "u"}, {"connect_timeout", "3"}}},
    /* target_session_attrs is the cluster's business: dropped */
    {"host=h1,h2 dbname=d target_session_attrs=read-write", 2, {"h1", "h2"}, {NULL},
     {{"dbname", "d"}}},
    /* one port for every host */
    {"host=h1,h2,h3 port=6000 dbname=d", 3, {"h1", "h2", "h3"}, {"6000", "6000", "6000"},
     {{"dbname", "d"}}},
    /* a single host gives one */
    {"host=only port=5432 dbname=d", 1, {"only"}, {"5432"}, {{"dbname", "d"}}},
    {"postgresql://u@only/db", 1, {"only"}, {NULL}, {{"dbname", "db"}, {"user", "u"}}},
};

/* Mismatched host and port lists, and urls libpq cannot parse. */
static const char *const bad_urls[] = {
    "host=h1,h2,h3 port=1,2 dbname=d", "host='unterminated", "host=h1,h2 no_such_option=1",
    "postgresql://h1,h2/db?no_such_option=1"};

static void a_multi_host_url_is_split_into_one_endpoint_per_host(void **state) {
    (void)state;
    noodle_error err;
    for (size_t k = 0; k < sizeof splits / sizeof splits[0]; k++) {
        const split_case *sc = &splits[k];
        char **eps = NULL;
        size_t n = 0;
        assert_ok(noodle_cluster_split_url(sc->url, &eps, &n, &err), &err);
        assert_int_equal(n, sc->n);
        for (size_t i = 0; i < n; i++) {
            for (size_t j = 0; j < n; j++) /* its own host, no other */
                assert_int_equal(conninfo_has(eps[i], "host", sc->hosts[j]), i == j);
            if (sc->ports[0] != NULL) assert_true(conninfo_has(eps[i], "port", sc->ports[i]));
            for (size_t a = 0; a < 3 && sc->all[a][0] != NULL; a++)
                assert_true(conninfo_has(eps[i], sc->all[a][0], sc->all[a][1]));
            assert_null(strchr(eps[i], ',')); /* one host each */
            assert_null(strstr(eps[i], "target_session_attrs"));
        }
        noodle_cluster_free_endpoints(eps, n);
    }
    noodle_cluster_free_endpoints(NULL, 0); /* accepted */

    for (size_t k = 0; k < sizeof bad_urls / sizeof bad_urls[0]; k++) {
        size_t n = 99;
        char **eps = (char **)&n;
        assert_code(noodle_cluster_split_url(bad_urls[k], &eps, &n, &err), &err,
                    NOODLE_E_CONFIG_INVALID_URL);
        assert_null(eps);
        assert_int_equal(n, 0);
    }

    /* explicit endpoints win over the url: the mock's are used as given */
    node_with_table(A);
    cluster_spec s = cspec2(A, NULL);
    noodle_cluster *cl = open_cluster(&s);
    assert_int_equal(cmetrics(cl).nodes, 1);
    assert_string_equal(node_info(cl, 0).endpoint, URL_A);
    noodle_cluster_close(cl);
}

/* ---- writers keeping a ledger ------------------------------------------------------------------ */

typedef struct write_rec {
    int64_t id;
    int rc;
    int64_t start_ms, end_ms;
} write_rec;

typedef struct writer {
    pthread_t thread;
    noodle_cluster *cl;
    int t, nthreads;
    atomic_bool *stop;
    int64_t deadline_ms; /* per call */
    write_rec *recs;
    size_t n, cap;                     /* the thread's own until joined */
    _Atomic int64_t last_ack_start_ms; /* start of its latest acked write, -1: none */
} writer;

#define WRITES_PER_THREAD 6000

/* Insert unique ids (seq * nthreads + t) until told to stop, recording each
 * outcome; a failure without a catalogue code is a thread failure. */
static void *writer_main(void *arg) {
    writer *w = arg;
    while (!atomic_load(w->stop) && w->n < w->cap) {
        int64_t id = (int64_t)w->n * w->nthreads + w->t;
        noodle_error err;
        noodle_error_clear(&err);
        int64_t start = noodle_test_now_ms();
        int rc = insert_id(w->cl, id, deadline_ms(w->deadline_ms), &err);
        int64_t end = noodle_test_now_ms();
        if (rc != 0 && (noodle_code_name(rc) == NULL || err.code != rc))
            noodle_test_thread_fail("write %" PRId64 ": uncoded failure rc %d (err.code %d)", id,
                                    rc, err.code);
        w->recs[w->n++] = (write_rec){id, rc, start, end};
        if (rc == 0) atomic_store(&w->last_ack_start_ms, start);
        noodle_test_sleep_ms(1); /* pace: a few hundred writes a second per thread */
    }
    return NULL;
}

typedef struct writer_group {
    writer *w;
    int n;
    atomic_bool stop;
} writer_group;

/* True when some writer has had a write acked that started at or after t
 * (while they run). */
static bool any_ack_after(writer_group *g, int64_t t) {
    for (int i = 0; i < g->n; i++)
        if (atomic_load(&g->w[i].last_ack_start_ms) >= t) return true;
    return false;
}

/* Start n writers on cl; returns once one of them had a write acked (or
 * after 3 s). */
static writer_group *start_writers(noodle_cluster *cl, int n, int64_t deadline_ms_per_call) {
    writer_group *g = calloc(1, sizeof *g);
    assert_non_null(g);
    g->w = calloc((size_t)n, sizeof *g->w);
    assert_non_null(g->w);
    g->n = n;
    atomic_store(&g->stop, false);
    for (int i = 0; i < n; i++) {
        writer *w = &g->w[i];
        w->cl = cl;
        w->t = i;
        w->nthreads = n;
        w->stop = &g->stop;
        w->deadline_ms = deadline_ms_per_call;
        w->cap = WRITES_PER_THREAD;
        atomic_store(&w->last_ack_start_ms, -1);
        w->recs = calloc(w->cap, sizeof *w->recs);
        assert_non_null(w->recs);
        assert_int_equal(pthread_create(&w->thread, NULL, writer_main, w), 0);
    }
    WAIT_FOR(any_ack_after(g, 0), 3000);
    return g;
}

static void stop_writers(writer_group *g) {
    atomic_store(&g->stop, true);
    for (int i = 0; i < g->n; i++) pthread_join(g->w[i].thread, NULL);
}

/* After a promotion at t_promote: wait (up to 5 s) until a write started
 * after it is acked, let the writers run settle_ms more, stop them, and fail
 * with what went wrong on their threads. */
static void stop_writers_after_resume(writer_group *g, int64_t t_promote, int64_t settle_ms) {
    WAIT_FOR(any_ack_after(g, t_promote), 5000);
    noodle_test_sleep_ms(settle_ms);
    stop_writers(g);
    noodle_test_assert_no_thread_failure();
}

static void free_writers(writer_group *g) {
    for (int i = 0; i < g->n; i++) free(g->w[i].recs);
    free(g->w);
    free(g);
}

/* The end of the first successful write that started at or after t, or -1
 * (after the writers were joined). */
static int64_t first_ack_after(writer_group *g, int64_t t) {
    int64_t best = -1;
    for (int i = 0; i < g->n; i++) {
        writer *w = &g->w[i];
        for (size_t k = 0; k < w->n; k++)
            if (w->recs[k].rc == 0 && w->recs[k].start_ms >= t &&
                (best < 0 || w->recs[k].end_ms < best))
                best = w->recs[k].end_ms;
    }
    return best;
}

/* Writes resumed within bound_ms of the promotion at t_promote (after the
 * writers were joined). */
static void assert_resumed_within(writer_group *g, int64_t t_promote, int64_t bound_ms) {
    int64_t resumed = first_ack_after(g, t_promote);
    assert_true(resumed >= 0);
    print_message("writes resumed %" PRId64 " ms after the promotion\n", resumed - t_promote);
    assert_true(resumed - t_promote <= bound_ms);
}

/* The longest write of the group, in ms. */
static int64_t longest_write(writer_group *g) {
    int64_t max = 0;
    for (int i = 0; i < g->n; i++)
        for (size_t k = 0; k < g->w[i].n; k++) {
            int64_t d = g->w[i].recs[k].end_ms - g->w[i].recs[k].start_ms;
            if (d > max) max = d;
        }
    return max;
}

#define MAX_ID ((size_t)WRITES_PER_THREAD * 16)
/* ids of single writes in tests that also run 8 writers (which stay below half of MAX_ID) */
#define EXTRA_ID ((int64_t)MAX_ID - 1000)

/* What a write may fail with while its primary crashes or freezes and a
 * standby is promoted: the outcome is unknown (a connection died under it:
 * 4015), or no node was the primary before its deadline (6081; 6082 when the
 * last primary is excluded by its open breaker), or the primary's connects
 * kept failing (6083), or every connection of the primary was busy (2002). */
static const int failover_codes[] = {NOODLE_E_OUTCOME_UNKNOWN, NOODLE_E_CLUSTER_NO_PRIMARY,
                                     NOODLE_E_CLUSTER_BREAKER_OPEN,
                                     NOODLE_E_CLUSTER_CONNECT_TIMEOUT, NOODLE_E_POOL_TIMEOUT, 0};

/* Check the ledger against the nodes' committed rows (both must accept
 * connections): every acked write is on exactly one node, and on `after_node`
 * when it started after `after_ms` (strictly: times are whole ms); every
 * definite failure (not 0, not 4015) is on neither; every failure is in
 * allowed. Returns the number of acked writes. */
static size_t check_ledger(writer_group *g, const int *allowed, int64_t after_ms,
                           const char *after_node, const char *other_node) {
    bool *on_after = calloc(MAX_ID, 1), *on_other = calloc(MAX_ID, 1);
    assert_non_null(on_after);
    assert_non_null(on_other);
    ids_on(after_node, on_after, MAX_ID);
    ids_on(other_node, on_other, MAX_ID);
    size_t acked = 0, failed = 0;
    for (int i = 0; i < g->n; i++) {
        writer *w = &g->w[i];
        for (size_t k = 0; k < w->n; k++) {
            const write_rec *r = &w->recs[k];
            size_t id = (size_t)r->id;
            if (r->rc == 0) {
                acked++;
                if (on_after[id] == on_other[id])
                    fail_msg("acked id %zu is on %s: %d, on %s: %d (want exactly one)", id,
                             after_node, on_after[id], other_node, on_other[id]);
                if (r->start_ms > after_ms && !on_after[id])
                    fail_msg("id %zu acked by a write started %" PRId64 " ms after the switch is "
                             "not on %s",
                             id, r->start_ms - after_ms, after_node);
            } else {
                failed++;
                if (!code_in(r->rc, allowed))
                    fail_msg("write of id %zu failed with %d (%s), which is not an expected code",
                             id, r->rc, noodle_code_name(r->rc) ? noodle_code_name(r->rc) : "?");
                if (r->rc != NOODLE_E_OUTCOME_UNKNOWN && (on_after[id] || on_other[id]))
                    fail_msg("id %zu failed definitely (%d) but was applied", id, r->rc);
            }
        }
    }
    free(on_after);
    free(on_other);
    print_message("ledger: %zu acked, %zu failed\n", acked, failed);
    return acked;
}

/* ---- failover ------------------------------------------------------------------------------------ */

static void after_a_primary_crash_and_a_promotion_acked_writes_are_kept_and_writes_resume(
    void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    uint64_t gen0 = cmetrics(cl).generation;
    writer_group *g = start_writers(cl, 16, 500);

    noodle_test_sleep_ms(200); /* writes flow to a */
    crash(A);
    int64_t t_crash = noodle_test_now_ms();
    /* the cluster sees the primary go (its breaker opens after 2 failed probes) */
    WAIT_FOR(primary_of(cl) == -1, 3000);
    int primary_while_down = primary_of(cl);
    noodle_test_sleep_ms(100);
    set_role(B, NOODLE_ROLE_PRIMARY);
    int64_t t_promote = noodle_test_now_ms();
    stop_writers_after_resume(g, t_promote, 300); /* writes flow to b */
    assert_int_equal(primary_while_down, -1);

    /* writes resumed on b within a generous bound of the promotion */
    assert_resumed_within(g, t_promote, 3000);

    noodle_cluster_metrics m = cmetrics(cl);
    assert_int_equal(m.primary, 1);
    assert_int_equal(m.failovers, 1);
    assert_true(m.last_failover_at > 0);
    assert_true(m.generation > gen0);
    assert_true(m.probe_failures > 0);

    /* the observer saw the primary lost, then the failover to b, never one to a */
    long lost = find_event(rec, NOODLE_CLUSTER_EV_PRIMARY_LOST, 0, 0);
    long fo = find_event(rec, NOODLE_CLUSTER_EV_FAILOVER, 1, 0);
    if (lost < 0 || fo < 0 || lost > fo) dump_events(rec);
    assert_true(lost >= 0);
    assert_true(fo > lost);
    assert_true(event_at(rec, fo).generation > event_at(rec, lost).generation);
    assert_int_equal(event_at(rec, fo).generation, m.generation);
    assert_int_equal(count_events_past(rec, NOODLE_CLUSTER_EV_FAILOVER, 0, (int64_t)gen0), 0);
    long down = find_event(rec, NOODLE_CLUSTER_EV_NODE_DOWN, 0, 0);
    assert_true(down >= 0); /* may follow PRIMARY_LOST: failed connects count too */
    assert_int_not_equal(event_at(rec, down).code, 0);
    long role = find_event(rec, NOODLE_CLUSTER_EV_ROLE_CHANGED, 1, 0);
    while (role >= 0 && event_at(rec, role).role != NOODLE_ROLE_PRIMARY)
        role = find_event(rec, NOODLE_CLUSTER_EV_ROLE_CHANGED, 1, (size_t)role + 1);
    assert_true(role >= 0 && role < fo); /* b seen moving from standby to primary */
    assert_int_equal(event_at(rec, role).old_role, NOODLE_ROLE_STANDBY);

    close_observed(cl, rec);
    /* a's committed data survives its crash: bring it back to read it */
    restart(A);
    size_t acked = check_ledger(g, failover_codes, t_crash, B, A);
    assert_true(acked > 0);
    assert_true(rows_of(A) > 0); /* writes before the crash landed on a */
    free_writers(g);
}

static void a_commit_whose_acknowledgement_is_lost_reports_outcome_unknown(void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    noodle_cluster *cl = open_cluster(&s);
    noodle_error err;
    insert_ok(cl, 1);
    int64_t commits = noodle_test_node_stats(A).commits;

    /* one statement: applied, then the connection died before the answer */
    lose_next_commit_ack(A);
    assert_code(insert_id(cl, 2, deadline_ms(5000), &err), &err, NOODLE_E_OUTCOME_UNKNOWN);
    assert_int_equal(rows_of(A), 2); /* it IS there */
    assert_int_equal(noodle_test_node_stats(A).commits, commits + 1);

    /* a transaction: COMMIT applied, acknowledgement lost */
    lose_next_commit_ack(A);
    noodle_conn *c = NULL;
    assert_ok(noodle_cluster_acquire(cl, NOODLE_ROUTE_PRIMARY, &c, &err), &err);
    assert_ok(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, deadline_ms(5000), &err), &err);
    noodle_value p[2] = {noodle_int64(3), noodle_text("t")};
    noodle_rows *r = NULL;
    assert_ok(noodle_conn_execute(c, "INSERT INTO kv (id, v) VALUES (?, ?)", p, 2,
                                  deadline_ms(5000), &r, &err),
              &err);
    noodle_rows_free(r);
    assert_int_equal(rows_of(A), 2); /* not yet committed */
    assert_code(noodle_conn_commit(c, deadline_ms(5000), &err), &err, NOODLE_E_OUTCOME_UNKNOWN);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    noodle_cluster_release(cl, &c);
    assert_int_equal(rows_of(A), 3);

    /* nothing landed on the standby, and one lost session is not a failover */
    assert_int_equal(rows_of(B), 0);
    wait_probes(cl, 4);
    noodle_cluster_metrics m = cmetrics(cl);
    assert_int_equal(m.primary, 0);
    assert_int_equal(m.failovers, 0);
    insert_ok(cl, 4);
    assert_int_equal(rows_of(A), 4);
    noodle_cluster_close(cl);
}

/* The next `fails` statements on node a fail with `code`: a count read
 * through the primary then fails with `want`, after `runs` statements on a. */
static void read_fails(noodle_cluster *cl, int64_t fails, int code, int want, int64_t runs) {
    noodle_error err;
    int64_t calls = execute_calls(A);
    fail_next_executes(A, fails, code);
    assert_code(read_count(cl, NOODLE_ROUTE_PRIMARY, deadline_ms(5000), &err), &err, want);
    assert_int_equal(execute_calls(A) - calls, runs);
}

/* Ways a write loses its connection: it dies under the statement (not
 * applied), the acknowledgement of an applied commit is lost, or the server
 * goes away under it (not applied). */
static const struct {
    int fault; /* 0: the acknowledgement is lost */
    bool applied;
} lost_writes[] = {{NOODLE_E_CONNECTION_LOST, false}, {0, true}, {NOODLE_E_SERVER_SHUTDOWN, false}};

static void a_write_is_never_retried_but_an_idempotent_read_is_retried_once(void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    s.cluster.retry_reads = true;
    noodle_cluster *cl = open_cluster(&s);
    noodle_error err;
    insert_ok(cl, 1);

    /* a write whose connection is lost: 4015, and it ran exactly once */
    for (size_t i = 0; i < sizeof lost_writes / sizeof lost_writes[0]; i++) {
        noodle_mock_stats before = noodle_test_node_stats(A);
        int64_t rows = rows_of(A);
        if (lost_writes[i].fault != 0)
            fail_next_executes(A, 1, lost_writes[i].fault);
        else
            lose_next_commit_ack(A);
        assert_code(insert_id(cl, 2 + (int64_t)i, deadline_ms(5000), &err), &err,
                    NOODLE_E_OUTCOME_UNKNOWN);
        noodle_mock_stats after = noodle_test_node_stats(A);
        assert_int_equal(after.calls[NOODLE_MOCK_OP_EXECUTE] - before.calls[NOODLE_MOCK_OP_EXECUTE],
                         1);
        assert_int_equal(after.commits - before.commits, lost_writes[i].applied);
        assert_int_equal(rows_of(A), rows + lost_writes[i].applied); /* applied once at most */
    }
    assert_int_equal(cmetrics(cl).reads_retried, 0);

    /* an idempotent read whose connection dies is retried once, on another one */
    int64_t calls = execute_calls(A);
    fail_next_executes(A, 1, NOODLE_E_CONNECTION_LOST);
    assert_int_equal(count_result(cl, NOODLE_ROUTE_PRIMARY), 2);
    assert_int_equal(execute_calls(A) - calls, 2);
    assert_int_equal(cmetrics(cl).reads_retried, 1);
    /* once only: two deaths in a row give the second's code */
    read_fails(cl, 2, NOODLE_E_CONNECTION_LOST, NOODLE_E_CONNECTION_LOST, 2);
    assert_int_equal(cmetrics(cl).reads_retried, 2);
    /* a query error is not a lost connection: no retry */
    read_fails(cl, 1, NOODLE_E_QUERY_FAILED, NOODLE_E_QUERY_FAILED, 1);
    assert_int_equal(cmetrics(cl).reads_retried, 2);
    /* none of this was a failover */
    assert_int_equal(cmetrics(cl).failovers, 0);
    assert_int_equal(cmetrics(cl).primary, 0);
    noodle_cluster_close(cl);

    /* without retry_reads the read fails with the coded error */
    s.cluster.retry_reads = false;
    cl = open_cluster(&s);
    read_fails(cl, 1, NOODLE_E_CONNECTION_LOST, NOODLE_E_CONNECTION_LOST, 1);
    assert_int_equal(cmetrics(cl).reads_retried, 0);
    assert_ok(read_count(cl, NOODLE_ROUTE_PRIMARY, deadline_ms(5000), &err), &err);
    noodle_cluster_close(cl);
}

static void a_primary_turned_read_only_is_demoted_and_writes_move_to_the_promoted_standby(
    void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    s.cluster.probe_interval_ms = 2000; /* the refusal itself must trigger the probe that demotes */
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    noodle_error err;
    for (int64_t id = 0; id < 5; id++) insert_ok(cl, id); /* connections stay pooled */
    assert_true(node_info(cl, 0).pool.idle >= 1);
    uint64_t gen0 = cmetrics(cl).generation;

    set_role(A, NOODLE_ROLE_READ_ONLY);
    int64_t t0 = noodle_test_now_ms();
    assert_code(insert_id(cl, 100, deadline_ms(5000), &err), &err, NOODLE_E_QUERY_READ_ONLY);
    assert_int_equal(rows_of(A), 5); /* never landed */
    /* detected at once (well before the 2 s probe period) */
    await_primary(cl, -1, 1500);
    print_message("demotion detected after %" PRId64 " ms\n", noodle_test_now_ms() - t0);
    noodle_cluster_metrics m = cmetrics(cl);
    assert_int_equal(m.demotions, 1);
    assert_true(m.generation > gen0);
    assert_int_equal(node_info(cl, 0).role, NOODLE_ROLE_READ_ONLY);
    long lost = await_event(rec, NOODLE_CLUSTER_EV_PRIMARY_LOST, 0, 3000);
    long demoted = find_event(rec, NOODLE_CLUSTER_EV_DEMOTED, 0, 0); /* delivered before it */
    if (demoted < 0 || lost < 0) dump_events(rec);
    assert_true(demoted >= 0);
    assert_true(lost > demoted);
    assert_int_equal(event_at(rec, demoted).old_role, NOODLE_ROLE_PRIMARY);
    assert_int_equal(event_at(rec, demoted).role, NOODLE_ROLE_READ_ONLY);

    /* no primary: writers wait for one until their deadline, then 6081 */
    int64_t took = acquire_fails(cl, NOODLE_ROUTE_PRIMARY, 200, NOODLE_E_CLUSTER_NO_PRIMARY, &err);
    assert_true(took >= 150 && took <= 200 + 1000);
    assert_code(insert_id(cl, 101, deadline_ms(200), &err), &err, NOODLE_E_CLUSTER_NO_PRIMARY);
    assert_int_equal(rows_of(A), 5);
    assert_int_equal(rows_of(B), 0);

    /* promote b: writes land on b */
    set_role(B, NOODLE_ROLE_PRIMARY);
    await_primary(cl, 1, 3000);
    for (int64_t id = 200; id < 210; id++) insert_ok(cl, id);
    assert_int_equal(rows_of(B), 10);
    assert_int_equal(rows_of(A), 5);
    assert_int_equal(cmetrics(cl).failovers, 1);
    assert_int_equal(cmetrics(cl).demotions, 1);
    assert_true(find_event(rec, NOODLE_CLUSTER_EV_FAILOVER, 1, (size_t)lost) > lost);
    close_observed(cl, rec);
}

static void a_users_own_read_only_refusal_on_a_writable_primary_causes_no_failover(void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    noodle_error err;
    insert_ok(cl, 1);
    noodle_cluster_metrics m0 = cmetrics(cl);

    fail_next_executes(A, 1, NOODLE_E_QUERY_READ_ONLY);
    assert_code(insert_id(cl, 2, deadline_ms(5000), &err), &err, NOODLE_E_QUERY_READ_ONLY);
    assert_int_equal(rows_of(A), 1);
    wait_probes(cl, 8); /* the probe it asked for, and a few more rounds */

    noodle_cluster_metrics m = cmetrics(cl);
    assert_int_equal(m.primary, 0);
    assert_int_equal(m.failovers, 0);
    assert_int_equal(m.demotions, 0);
    assert_int_equal(m.generation, m0.generation);
    assert_int_equal(count_events(rec, NOODLE_CLUSTER_EV_DEMOTED, -1), 0);
    assert_int_equal(count_events(rec, NOODLE_CLUSTER_EV_PRIMARY_LOST, -1), 0);
    assert_int_equal(
        count_events_past(rec, NOODLE_CLUSTER_EV_FAILOVER, -1, (int64_t)m0.generation), 0);
    insert_ok(cl, 3);
    assert_int_equal(rows_of(A), 2);
    close_observed(cl, rec);
}

static void a_frozen_primary_holds_no_writer_past_its_deadline_and_is_fenced_when_it_thaws(
    void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    writer_group *g = start_writers(cl, 8, 300);
    noodle_test_sleep_ms(200);

    set_hang(A, NOODLE_MOCK_OP_ANY, true);
    int64_t t_freeze = noodle_test_now_ms();
    noodle_test_sleep_ms(500);
    set_role(B, NOODLE_ROLE_PRIMARY);
    int64_t t_promote = noodle_test_now_ms();
    stop_writers_after_resume(g, t_promote, 300);

    int64_t longest = longest_write(g);
    print_message("longest write: %" PRId64 " ms (deadline 300 ms)\n", longest);
    assert_true(longest <= 300 + 700);
    assert_resumed_within(g, t_promote, 3000);
    assert_int_equal(primary_of(cl), 1);
    assert_int_equal(cmetrics(cl).failovers, 1);

    /* thawed, still claiming to be primary: fenced, never written to again */
    set_hang(A, NOODLE_MOCK_OP_ANY, false);
    WAIT_FOR(info_nocheck(cl, 0).fenced && info_nocheck(cl, 0).up, 3000);
    noodle_cluster_node_info a = node_info(cl, 0);
    if (!a.fenced) dump_events(rec);
    assert_true(a.fenced);
    assert_true(a.up);
    assert_int_equal(a.role, NOODLE_ROLE_PRIMARY);
    assert_true(count_events(rec, NOODLE_CLUSTER_EV_FENCED, 0) >= 1);
    assert_int_equal(primary_of(cl), 1);
    int64_t a_rows = rows_of(A), b_rows = rows_of(B);
    int64_t a_commits = noodle_test_node_stats(A).commits;
    for (int64_t id = 0; id < 20; id++) insert_ok(cl, EXTRA_ID + id);
    assert_int_equal(rows_of(A), a_rows);
    assert_int_equal(noodle_test_node_stats(A).commits, a_commits);
    assert_int_equal(rows_of(B), b_rows + 20);
    /* no reads either while fenced */
    int64_t a_calls = execute_calls(A);
    reads_ok(cl, NOODLE_ROUTE_PREFER_STANDBY, 10);
    assert_int_equal(execute_calls(A), a_calls);
    assert_int_equal(cmetrics(cl).failovers, 1);

    /* rejoined as a standby: unfenced, used for reads only */
    set_role(A, NOODLE_ROLE_STANDBY);
    WAIT_FOR(!info_nocheck(cl, 0).fenced && info_nocheck(cl, 0).role == NOODLE_ROLE_STANDBY,
             3000);
    a = node_info(cl, 0);
    assert_false(a.fenced);
    assert_int_equal(a.role, NOODLE_ROLE_STANDBY);
    assert_int_equal(primary_of(cl), 1);
    a_calls = execute_calls(A);
    int64_t b_calls = execute_calls(B);
    reads_ok(cl, NOODLE_ROUTE_PREFER_STANDBY, 10);
    assert_int_equal(execute_calls(A) - a_calls, 10);
    assert_int_equal(execute_calls(B), b_calls);
    insert_ok(cl, EXTRA_ID + 100);
    assert_int_equal(rows_of(A), a_rows);
    assert_int_equal(cmetrics(cl).failovers, 1);
    noodle_cluster_close(cl);

    /* the ledger: every write started after the freeze and acked is on b */
    assert_true(check_ledger(g, failover_codes, t_freeze, B, A) > 0);
    free_writers(g);
    recorder_free(rec);
}

static void a_node_claiming_primary_without_being_seen_as_standby_is_fenced(void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    set_role(B, NOODLE_ROLE_PRIMARY); /* b will claim primary ... */
    crash(B);                         /* ... but is not reachable at first */
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    assert_int_equal(primary_of(cl), 0);
    uint64_t gen = cmetrics(cl).generation;
    insert_ok(cl, 1);

    restart(B); /* answers: "I am the primary" while a is */
    WAIT_FOR(info_nocheck(cl, 1).fenced, 3000);
    noodle_cluster_node_info b = node_info(cl, 1);
    if (!b.fenced) dump_events(rec);
    assert_true(b.fenced);
    assert_int_equal(b.role, NOODLE_ROLE_PRIMARY);
    assert_int_equal(primary_of(cl), 0);
    assert_int_equal(cmetrics(cl).generation, gen);
    assert_int_equal(cmetrics(cl).failovers, 0);
    assert_true(count_events(rec, NOODLE_CLUSTER_EV_FENCED, 1) >= 1);
    assert_int_equal(count_events_past(rec, NOODLE_CLUSTER_EV_FAILOVER, -1, (int64_t)gen), 0);
    /* no traffic to b: writes to a, reads on the primary (no standby) */
    int64_t b_calls = execute_calls(B);
    noodle_error err;
    for (int64_t id = 2; id < 12; id++) insert_ok(cl, id);
    reads_ok(cl, NOODLE_ROUTE_PREFER_STANDBY, 5);
    assert_int_equal(execute_calls(B), b_calls);
    assert_int_equal(rows_of(A), 11);
    assert_int_equal(rows_of(B), 0);
    (void)acquire_fails(cl, NOODLE_ROUTE_STANDBY, 100, NOODLE_E_CLUSTER_NO_STANDBY, &err);

    /* it rejoins as a standby: unfenced, reads only */
    set_role(B, NOODLE_ROLE_STANDBY);
    WAIT_FOR(!info_nocheck(cl, 1).fenced, 3000);
    assert_false(node_info(cl, 1).fenced);
    noodle_conn *c = NULL;
    assert_ok(noodle_cluster_acquire_until(cl, NOODLE_ROUTE_STANDBY, deadline_ms(3000), &c, &err),
              &err);
    assert_string_equal(noodle_conn_endpoint(c), URL_B);
    noodle_cluster_release(cl, &c);
    assert_int_equal(primary_of(cl), 0);
    assert_int_equal(cmetrics(cl).failovers, 0);
    close_observed(cl, rec);
}

/* Invariant 2: "a node that reports PRIMARY without having been seen as a
 * standby while another is primary (an old primary back after a crash) is
 * fenced". Here b was once promoted (seen standby -> primary), then crashed,
 * and a was promoted in its place. When b comes back still claiming to be
 * primary, it is an old primary back after a crash: it must be fenced, and a
 * must stay the primary. */
static void an_old_primary_back_after_a_crash_is_fenced_even_if_it_was_promoted_once(
    void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    insert_ok(cl, 1);
    crash_and_promote(cl, 0, 1); /* a crashes, b is promoted */
    insert_ok(cl, 2);
    rejoin_as_standby(cl, 0, 3000); /* a comes back as a standby */
    crash_and_promote(cl, 1, 0);    /* b crashes, a is promoted */
    assert_int_equal(cmetrics(cl).failovers, 2);
    for (int64_t id = 10; id < 20; id++) insert_ok(cl, id); /* acked on a */
    int64_t a_rows = rows_of(A);

    /* b is back, still claiming to be primary: an old primary after a crash */
    restart(B);
    WAIT_FOR(info_nocheck(cl, 1).up && info_nocheck(cl, 1).breaker == NOODLE_BREAKER_CLOSED, 3000);
    wait_probes(cl, 6);
    noodle_cluster_metrics m = cmetrics(cl);
    if (m.primary != 0) dump_events(rec);
    assert_int_equal(m.primary, 0);
    assert_true(node_info(cl, 1).fenced);
    assert_false(node_info(cl, 0).fenced);
    assert_int_equal(m.failovers, 2);
    int64_t b_rows = rows_of(B);
    for (int64_t id = 20; id < 30; id++) insert_ok(cl, id);
    assert_int_equal(rows_of(A), a_rows + 10);
    assert_int_equal(rows_of(B), b_rows);
    close_observed(cl, rec);
}

/* A node whose breaker is half-open has not answered yet: its role is the
 * one it had before it went down. Here b was promoted once, crashed, and a
 * was promoted in its place; b then comes back as a standby, as an operator
 * would bring it back, but its connects are slow (400 ms), so its half-open
 * trial takes a while. During that trial the cluster must not take b (role
 * PRIMARY as last seen, "promoted" as once seen) over from a, fence a, and
 * then -- when b answers "standby" -- be left with no primary at all. */
static void a_restarted_node_in_its_half_open_trial_never_takes_over_from_the_primary(
    void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    s.cluster.probe_timeout_ms = 1000;
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    crash_and_promote(cl, 0, 1);    /* a crashes, b is promoted; */
    rejoin_as_standby(cl, 0, 3000); /* a comes back as a standby */
    crash_and_promote(cl, 1, 0);    /* b crashes, a is promoted */
    insert_ok(cl, 1);

    /* b comes back as a standby, slowly */
    slow_connects(B, 400);
    rejoin_as_standby(cl, 1, 4000);
    wait_probes(cl, 6);
    noodle_cluster_metrics m = cmetrics(cl);
    if (m.primary != 0) dump_events(rec);
    assert_int_equal(count_events(rec, NOODLE_CLUSTER_EV_FENCED, 0), 0);
    assert_false(node_info(cl, 0).fenced);
    assert_int_equal(m.primary, 0);
    assert_int_equal(m.failovers, 2);
    insert_ok(cl, 2);
    assert_int_equal(rows_of(A), 2);
    close_observed(cl, rec);
}

/* The same, with no primary at all: a crashed primary whose breaker is
 * half-open has not answered yet; it must not be taken as the primary on the
 * strength of the role it had before it went down (here it comes back as a
 * standby, slowly). */
static void a_node_is_not_made_the_primary_before_it_answers_its_half_open_trial(void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    s.cluster.probe_timeout_ms = 1000;
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    crash(A);
    await_primary(cl, -1, 3000);
    uint64_t gen = cmetrics(cl).generation;
    slow_connects(A, 400);          /* it answers its first probe only after 400 ms ... */
    rejoin_as_standby(cl, 0, 4000); /* ... as a standby */
    if (count_events_past(rec, NOODLE_CLUSTER_EV_FAILOVER, -1, (int64_t)gen) != 0)
        dump_events(rec);
    assert_int_equal(count_events_past(rec, NOODLE_CLUSTER_EV_FAILOVER, -1, (int64_t)gen), 0);
    assert_int_equal(cmetrics(cl).generation, gen);
    assert_int_equal(primary_of(cl), -1);
    close_observed(cl, rec);
}

/* ---- circuit breaker ----------------------------------------------------------------------------- */

static void a_crashed_nodes_breaker_opens_refuses_then_half_opens_closes_and_slow_starts(
    void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    s.cluster.breaker_threshold = 2;
    s.cluster.breaker_backoff_ms = 300; /* open most of the time while a is down */
    s.cluster.breaker_backoff_max_ms = 600;
    s.cluster.slow_start_ms = 1500;
    s.pool.max_connections = 8;
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    noodle_error err;
    insert_ok(cl, 1);

    /* query errors are not attempts to reach the node: they never open the
     * breaker (invariant 5) */
    fail_next_executes(A, 5, NOODLE_E_QUERY_FAILED);
    for (int i = 0; i < 5; i++)
        assert_code(read_count(cl, NOODLE_ROUTE_PRIMARY, deadline_ms(5000), &err), &err,
                    NOODLE_E_QUERY_FAILED);
    wait_probes(cl, 4);
    assert_int_equal(node_info(cl, 0).breaker, NOODLE_BREAKER_CLOSED);
    assert_int_equal(count_events(rec, NOODLE_CLUSTER_EV_BREAKER, 0), 0);
    assert_int_equal(primary_of(cl), 0);

    crash(A);
    await_breaker(cl, 0, NOODLE_BREAKER_OPEN, 3000);
    noodle_cluster_node_info a = node_info(cl, 0);
    assert_true(a.consecutive_failures >= 2);
    assert_false(a.up);
    await_primary(cl, -1, 1000);
    /* only a could serve a write, and its breaker is open: 6082 (6081 when the
     * deadline happens to fall in one of the short half-open trials) */
    int rc = 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        noodle_conn *c = NULL;
        rc = noodle_cluster_acquire_until(cl, NOODLE_ROUTE_PRIMARY, deadline_ms(150), &c, &err);
        assert_null(c);
        assert_true(rc == NOODLE_E_CLUSTER_BREAKER_OPEN || rc == NOODLE_E_CLUSTER_NO_PRIMARY);
        assert_int_equal(err.code, rc);
        if (rc == NOODLE_E_CLUSTER_BREAKER_OPEN) break;
    }
    assert_code(rc, &err, NOODLE_E_CLUSTER_BREAKER_OPEN);
    assert_non_null(strstr(err.message, URL_A));
    /* reads still have the standby */
    assert_ok(read_count(cl, NOODLE_ROUTE_PREFER_STANDBY, deadline_ms(3000), &err), &err);

    restart(A);
    int64_t t_restart = noodle_test_now_ms();
    await_breaker(cl, 0, NOODLE_BREAKER_CLOSED, 4000);
    print_message("breaker closed %" PRId64 " ms after the restart\n",
                  noodle_test_now_ms() - t_restart);
    /* slow start: its pool starts small ... */
    WAIT_FOR(info_nocheck(cl, 0).pool.max_connections < 8, 1000);
    int64_t early_max = node_info(cl, 0).pool.max_connections;
    print_message("pool max right after re-admission: %" PRId64 "\n", early_max);
    assert_true(early_max >= 1 && early_max < 8);
    await_primary(cl, 0, 2000);
    insert_ok(cl, 2); /* and serves */
    /* ... and is back to full size after slow_start */
    WAIT_FOR(info_nocheck(cl, 0).pool.max_connections == 8, 1500 + 2000);
    assert_int_equal(node_info(cl, 0).pool.max_connections, 8);
    assert_int_equal(cmetrics(cl).failovers, 0); /* the same primary came back */
    assert_int_equal(node_info(cl, 0).consecutive_failures, 0);

    /* the breaker went open -> half-open (-> open -> half-open)* -> closed */
    WAIT_FOR(last_breaker(rec, 0) == NOODLE_BREAKER_CLOSED, 3000);
    noodle_breaker_state seq[64];
    size_t n = breaker_states(rec, 0, seq, 64);
    if (n < 3 || !breaker_sequence_valid(seq, n)) dump_events(rec);
    assert_true(n >= 3);
    assert_true(breaker_sequence_valid(seq, n));
    assert_int_equal(seq[0], NOODLE_BREAKER_OPEN);
    assert_int_equal(seq[n - 2], NOODLE_BREAKER_HALF_OPEN);
    assert_int_equal(seq[n - 1], NOODLE_BREAKER_CLOSED);
    long open = find_event(rec, NOODLE_CLUSTER_EV_BREAKER, 0, 0);
    assert_int_not_equal(event_at(rec, open).code, 0); /* what opened it */
    assert_int_equal(count_events(rec, NOODLE_CLUSTER_EV_BREAKER, 1), 0);
    close_observed(cl, rec);
}

static void an_outage_of_connects_is_reported_as_6083_and_a_busy_pool_as_2002(void **state) {
    (void)state;
    node_with_table(A);
    cluster_spec s = cspec2(A, NULL);
    s.pool.max_connections = 3;
    s.pool.connect_timeout_ms = 100;
    s.cluster.breaker_threshold = 1000; /* keep the breaker out of it */
    noodle_cluster *cl = open_cluster(&s);
    noodle_error err;
    noodle_conn *c[3] = {acquire_primary(cl), acquire_primary(cl), NULL};

    /* both open connections busy, and the connects for a third hang */
    set_hang(A, NOODLE_MOCK_OP_CONNECT, true);
    int64_t took =
        acquire_fails(cl, NOODLE_ROUTE_PRIMARY, 600, NOODLE_E_CLUSTER_CONNECT_TIMEOUT, &err);
    assert_true(took >= 500 && took <= 600 + 1000);
    assert_non_null(strstr(err.message, URL_A));
    assert_int_equal(primary_of(cl), 0); /* the node itself is fine */

    /* connects work again: the third opens; with all three held it is 2002 */
    set_hang(A, NOODLE_MOCK_OP_CONNECT, false);
    c[2] = acquire_primary(cl);
    took = acquire_fails(cl, NOODLE_ROUTE_PRIMARY, 300, NOODLE_E_POOL_TIMEOUT, &err);
    assert_true(took >= 250 && took <= 300 + 1000);
    for (int i = 0; i < 3; i++) noodle_cluster_release(cl, &c[i]);
    c[0] = acquire_primary(cl);
    noodle_cluster_release(cl, &c[0]);
    noodle_cluster_close(cl);
}

/* ---- routing ----------------------------------------------------------------------------------- */

static void reads_prefer_the_standby_and_fall_back_to_the_primary(void **state) {
    (void)state;
    /* no replication: b's kv stays empty, a's gets 3 rows */
    cluster_spec s = primary_and_standby();
    noodle_cluster *cl = open_cluster(&s);
    noodle_error err;
    for (int64_t id = 0; id < 3; id++) insert_ok(cl, id);
    (void)node_becomes(cl, 1, up_standby, 3000);

    int64_t a0 = execute_calls(A), b0 = execute_calls(B);
    for (int i = 0; i < 20; i++) assert_int_equal(count_result(cl, NOODLE_ROUTE_PREFER_STANDBY), 0);
    for (int i = 0; i < 5; i++) assert_int_equal(count_result(cl, NOODLE_ROUTE_STANDBY), 0);
    assert_int_equal(execute_calls(B) - b0, 25);
    assert_int_equal(execute_calls(A), a0);
    assert_int_equal(count_result(cl, NOODLE_ROUTE_PRIMARY), 3);

    /* the standby goes: reads fall back to the primary, standby-only reads fail */
    crash(B);
    WAIT_FOR(!info_nocheck(cl, 1).up, 3000);
    assert_false(node_info(cl, 1).up);
    a0 = execute_calls(A);
    for (int i = 0; i < 10; i++) assert_int_equal(count_result(cl, NOODLE_ROUTE_PREFER_STANDBY), 3);
    assert_int_equal(execute_calls(A) - a0, 10);
    int64_t start = noodle_test_now_ms();
    assert_code(read_count(cl, NOODLE_ROUTE_STANDBY, deadline_ms(200), &err), &err,
                NOODLE_E_CLUSTER_NO_STANDBY);
    int64_t took = noodle_test_now_ms() - start;
    assert_true(took >= 150 && took <= 200 + 1000);
    (void)acquire_fails(cl, NOODLE_ROUTE_STANDBY, 100, NOODLE_E_CLUSTER_NO_STANDBY, &err);
    assert_int_equal(execute_calls(A) - a0, 10); /* never sent to the primary */
    assert_int_equal(primary_of(cl), 0);
    assert_int_equal(cmetrics(cl).failovers, 0);
    noodle_cluster_close(cl);
}

/* The cluster saw the standby go down (NODE_DOWN, breaker open); when it is
 * back, reads routed to it must get sessions opened after the outage, not
 * the pooled ones from before it (which died with the node). */
static void a_standby_back_from_an_outage_is_not_served_with_sessions_from_before_it(
    void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    s.pool.max_connections = 2;
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    noodle_error err;
    (void)node_becomes(cl, 1, up_standby, 3000);
    for (int i = 0; i < 3; i++) assert_int_equal(count_result(cl, NOODLE_ROUTE_STANDBY), 0);
    assert_true(node_info(cl, 1).pool.idle >= 1); /* a session to b is pooled */

    crash(B);
    await_breaker(cl, 1, NOODLE_BREAKER_OPEN, 3000);
    assert_true(count_events(rec, NOODLE_CLUSTER_EV_NODE_DOWN, 1) >= 1);
    restart(B);
    WAIT_FOR(info_nocheck(cl, 1).up && info_nocheck(cl, 1).breaker == NOODLE_BREAKER_CLOSED, 4000);
    assert_true(node_info(cl, 1).up);
    /* every standby read works (no retry_reads: a dead session would show) */
    for (int i = 0; i < 3; i++) {
        int rc = read_count(cl, NOODLE_ROUTE_STANDBY, deadline_ms(3000), &err);
        if (rc != 0)
            fail_msg("standby read %d after the outage: %d %s (pool: %" PRId64 " idle, "
                     "generation %" PRIu64 ")",
                     i, rc, err.message, node_info(cl, 1).pool.idle,
                     node_info(cl, 1).pool.generation);
    }
    close_observed(cl, rec);
}

/* Invariant 4 / docs/cluster.md: "one session killed with pg_terminate_backend
 * never causes a failover" and "a mass pg_terminate_backend cannot open [the
 * breaker]". A mass kill also kills the prober's own session; that must not
 * count as the node being unreachable. */
static void a_mass_session_kill_neither_opens_the_breaker_nor_loses_the_primary(void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    s.cluster.breaker_threshold = 1; /* the smallest accepted threshold */
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    noodle_error err;
    insert_ok(cl, 1);
    noodle_cluster_metrics m0 = cmetrics(cl);

    assert_ok(noodle_mock_node_kill_connections(A, &err), &err);
    int rc = insert_id(cl, 2, deadline_ms(2000), &err); /* a pooled session died: 4015 */
    assert_true(rc == 0 || rc == NOODLE_E_OUTCOME_UNKNOWN);
    wait_probes(cl, 8);

    noodle_cluster_metrics m = cmetrics(cl);
    if (m.generation != m0.generation) dump_events(rec);
    assert_int_equal(count_events(rec, NOODLE_CLUSTER_EV_BREAKER, 0), 0);
    assert_int_equal(count_events(rec, NOODLE_CLUSTER_EV_PRIMARY_LOST, -1), 0);
    assert_int_equal(m.primary, 0);
    assert_int_equal(m.generation, m0.generation);
    assert_int_equal(m.failovers, 0);
    insert_ok(cl, 3);
    close_observed(cl, rec);
}

/* ---- fail points --------------------------------------------------------------------------------- */

static void fail_point_role_detect_fails_probes_and_past_the_threshold_loses_the_primary(
    void **state) {
    (void)state;
    assert_true(noodle_fail_points_compiled_in());
    for (size_t i = 0; i < NPOINTS; i++) assert_non_null(noodle_fail_point_find(cluster_points[i]));
    cluster_spec s = primary_and_standby();
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    uint64_t failures0 = cmetrics(cl).probe_failures;

    assert_int_equal(fp_enable("cluster/role_detect"), 0);
    await_primary(cl, -1, 3000);
    assert_true(cmetrics(cl).probe_failures >= failures0 + 2);
    long down = await_event(rec, NOODLE_CLUSTER_EV_NODE_DOWN, 0, 3000);
    assert_true(down >= 0);
    assert_int_equal(event_at(rec, down).code, NOODLE_E_CLUSTER_ROLE_DETECT);
    assert_true(await_event(rec, NOODLE_CLUSTER_EV_PRIMARY_LOST, 0, 3000) >= 0);
    noodle_error err;
    noodle_conn *c = NULL;
    int rc = noodle_cluster_acquire_until(cl, NOODLE_ROUTE_PRIMARY, deadline_ms(100), &c, &err);
    assert_true(rc == NOODLE_E_CLUSTER_BREAKER_OPEN || rc == NOODLE_E_CLUSTER_NO_PRIMARY);
    assert_int_equal(fp_disable("cluster/role_detect"), 0);
    await_primary(cl, 0, 3000);
    insert_ok(cl, 1);
    assert_int_equal(cmetrics(cl).failovers, 0);
    close_observed(cl, rec);
}

/* A cluster (spec *s) over the test's primary and standby, with an observer,
 * and the fail point `name` enabled; then the standby crashes. */
static noodle_cluster *crash_standby_with_point(const char *name, cluster_spec *s,
                                                recorder **rec) {
    *s = primary_and_standby();
    noodle_cluster *cl = open_cluster(s);
    *rec = observe(cl);
    assert_int_equal(fp_enable(name), 0);
    crash(B);
    return cl;
}

static void fail_point_breaker_open_keeps_the_breaker_closed(void **state) {
    (void)state;
    cluster_spec s;
    recorder *rec;
    noodle_cluster *cl = crash_standby_with_point("cluster/breaker/open", &s, &rec);
    const int64_t threshold = s.cluster.breaker_threshold;
    WAIT_FOR(info_nocheck(cl, 1).consecutive_failures >= 2 * threshold + 1, 3000);
    noodle_cluster_node_info b = node_info(cl, 1);
    assert_true(b.consecutive_failures > threshold);
    assert_int_equal(b.breaker, NOODLE_BREAKER_CLOSED);
    assert_false(b.up);
    assert_int_equal(count_events(rec, NOODLE_CLUSTER_EV_BREAKER, 1), 0);
    /* without the point, the next failure opens it */
    assert_int_equal(fp_disable("cluster/breaker/open"), 0);
    await_breaker(cl, 1, NOODLE_BREAKER_OPEN, 3000);
    assert_int_equal(primary_of(cl), 0);
    close_observed(cl, rec);
}

static void fail_point_breaker_half_open_keeps_the_breaker_open(void **state) {
    (void)state;
    cluster_spec s;
    recorder *rec;
    noodle_cluster *cl = crash_standby_with_point("cluster/breaker/half_open", &s, &rec);
    await_breaker(cl, 1, NOODLE_BREAKER_OPEN, 3000);
    restart(B);
    noodle_test_sleep_ms(800); /* several backoffs (50-200 ms) */
    assert_int_equal(node_info(cl, 1).breaker, NOODLE_BREAKER_OPEN);
    noodle_breaker_state seq[64];
    size_t n = breaker_states(rec, 1, seq, 64);
    assert_int_equal(n, 1); /* opened, and nothing since */
    assert_int_equal(seq[0], NOODLE_BREAKER_OPEN);
    assert_false(node_info(cl, 1).up); /* no trial went to it */
    assert_int_equal(fp_disable("cluster/breaker/half_open"), 0);
    await_breaker(cl, 1, NOODLE_BREAKER_CLOSED, 3000);
    WAIT_FOR(last_breaker(rec, 1) == NOODLE_BREAKER_CLOSED, 3000);
    n = breaker_states(rec, 1, seq, 64);
    assert_true(breaker_sequence_valid(seq, n));
    assert_int_equal(seq[n - 1], NOODLE_BREAKER_CLOSED);
    close_observed(cl, rec);
}

static void fail_point_breaker_close_reopens_the_breaker_after_a_good_trial(void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    noodle_cluster *cl = open_cluster(&s);
    recorder *rec = observe(cl);
    crash(B);
    await_breaker(cl, 1, NOODLE_BREAKER_OPEN, 3000);
    assert_int_equal(fp_enable("cluster/breaker/close"), 0);
    size_t before = events_recorded(rec);
    restart(B);
    noodle_test_sleep_ms(800);
    /* trials went through and succeeded, yet the breaker re-opened each time */
    size_t half_opens = 0, closes = 0;
    for (long i = find_event(rec, NOODLE_CLUSTER_EV_BREAKER, 1, before); i >= 0;
         i = find_event(rec, NOODLE_CLUSTER_EV_BREAKER, 1, (size_t)i + 1)) {
        noodle_breaker_state st = event_at(rec, i).breaker;
        half_opens += st == NOODLE_BREAKER_HALF_OPEN;
        closes += st == NOODLE_BREAKER_CLOSED;
    }
    assert_true(half_opens >= 1);
    assert_int_equal(closes, 0);
    assert_int_not_equal(node_info(cl, 1).breaker, NOODLE_BREAKER_CLOSED);
    assert_int_equal(fp_disable("cluster/breaker/close"), 0);
    await_breaker(cl, 1, NOODLE_BREAKER_CLOSED, 3000);
    noodle_breaker_state seq[256];
    size_t n = breaker_states(rec, 1, seq, 256);
    assert_true(breaker_sequence_valid(seq, n));
    close_observed(cl, rec);
}

static atomic_int prober_starts, prober_fail_at;

static int fail_nth_prober_start(const char *name, int *failnum, void **failinfo,
                                 unsigned int *flags) {
    (void)name;
    (void)failnum;
    (void)failinfo;
    (void)flags;
    return atomic_fetch_add(&prober_starts, 1) + 1 == atomic_load(&prober_fail_at);
}

static void a_failing_prober_thread_start_fails_open_with_6088_and_leaks_nothing(void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    int threads = noodle_test_thread_count();
    assert_true(threads > 0);
    s.pool.min_idle = 1; /* the pools have started opening connections too */
    /* the first or the second prober start fails; then the plain point, with
     * its default code, fails the first */
    static const int fail_at[] = {1, 2, 0};
    for (size_t k = 0; k < sizeof fail_at / sizeof fail_at[0]; k++) {
        if (fail_at[k] > 0) {
            atomic_store(&prober_starts, 0);
            atomic_store(&prober_fail_at, fail_at[k]);
            assert_int_equal(fp_enable_external("cluster/thread_start", fail_nth_prober_start), 0);
        } else {
            assert_int_equal(fp_enable("cluster/thread_start"), 0);
        }
        noodle_cluster *cl = (noodle_cluster *)&s; /* must be replaced: NULL on failure */
        noodle_error err;
        int rc = try_open_cluster(&s, &cl, &err);
        assert_int_equal(fp_disable("cluster/thread_start"), 0);
        assert_code(rc, &err, NOODLE_E_CLUSTER_THREAD_START);
        assert_null(cl);
        /* no thread and no session left behind (ASan checks the memory) */
        WAIT_FOR(noodle_test_thread_count() == threads && noodle_test_node_sessions(A) == 0 &&
                     noodle_test_node_sessions(B) == 0,
                 2000);
        assert_int_equal(noodle_test_thread_count(), threads);
        assert_int_equal(noodle_test_node_sessions(A), 0);
        assert_int_equal(noodle_test_node_sessions(B), 0);
    }
    /* and without the fault it opens */
    noodle_cluster *cl = open_cluster(&s);
    insert_ok(cl, 1);
    noodle_cluster_close(cl);
    WAIT_FOR(noodle_test_thread_count() == threads, 2000);
    assert_int_equal(noodle_test_thread_count(), threads);
}
/* ---- deadlines, shutdown, connection bounds ------------------------------------------------------ */

typedef struct storm_worker {
    pthread_t thread;
    noodle_cluster *cl;
    int t;
    atomic_bool *stop;
    int64_t max_over_ms; /* the most an acquire overran its deadline */
    int64_t ok, failed;
} storm_worker;

static void *storm_main(void *arg) {
    storm_worker *w = arg;
    static const int allowed[] = {NOODLE_E_CLUSTER_NO_PRIMARY, NOODLE_E_CLUSTER_BREAKER_OPEN,
                                  NOODLE_E_CLUSTER_CONNECT_TIMEOUT, NOODLE_E_POOL_TIMEOUT, 0};
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(w->t + 1);
    noodle_route route = w->t % 2 == 0 ? NOODLE_ROUTE_PRIMARY : NOODLE_ROUTE_PREFER_STANDBY;
    while (!atomic_load(w->stop)) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t span = 100 + (int64_t)(x % 201); /* 100-300 ms */
        int64_t start = noodle_test_now_ms();
        noodle_conn *c = NULL;
        noodle_error err;
        noodle_error_clear(&err);
        int rc = noodle_cluster_acquire_until(w->cl, route, deadline_ms(span), &c, &err);
        int64_t over = noodle_test_now_ms() - start - span;
        if (over > w->max_over_ms) w->max_over_ms = over;
        if (rc == 0) {
            w->ok++;
            if (c == NULL) noodle_test_thread_fail("acquire succeeded without a connection");
            noodle_rows *r = NULL;
            noodle_error qerr;
            int q = noodle_conn_execute(c, "SELECT 1", NULL, 0, deadline_ms(span), &r, &qerr);
            if (q != 0 && noodle_code_name(q) == NULL)
                noodle_test_thread_fail("uncoded query failure %d", q);
            noodle_rows_free(r);
            noodle_cluster_release(w->cl, &c);
            noodle_test_sleep_ms(1);
        } else {
            w->failed++;
            if (c != NULL)
                noodle_test_thread_fail("acquire failed with %d but left a connection", rc);
            if (!code_in(rc, allowed) || err.code != rc)
                noodle_test_thread_fail(
                    "acquire (%s) failed with %d (%s): %s", noodle_route_name(route), rc,
                    noodle_code_name(rc) ? noodle_code_name(rc) : "uncoded", err.message);
        }
    }
    return NULL;
}


static void every_acquire_during_a_failover_storm_keeps_its_deadline_and_fails_coded(
    void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    noodle_cluster *cl = open_cluster(&s);
    enum { W = 8 };
    storm_worker w[W];
    atomic_bool stop;
    atomic_store(&stop, false);
    for (int i = 0; i < W; i++) {
        w[i] = (storm_worker){.cl = cl, .t = i, .stop = &stop};
        assert_int_equal(pthread_create(&w[i].thread, NULL, storm_main, &w[i]), 0);
    }
    noodle_test_sleep_ms(200);
    /* two cycles: a fails over to b, then b back to a */
    for (int step = 0; step < 4; step++) {
        const char *primary = node_name(step % 2), *standby = node_name(1 - step % 2);
        crash(primary); /* the primary dies; for a while there is no primary */
        noodle_test_sleep_ms(300);
        set_role(standby, NOODLE_ROLE_PRIMARY); /* the standby is promoted */
        noodle_test_sleep_ms(250);
        set_role(primary, NOODLE_ROLE_STANDBY); /* the old primary comes back as a standby */
        restart(primary);
        noodle_test_sleep_ms(250);
    }
    atomic_store(&stop, true);
    int64_t max_over = 0, ok = 0, failed = 0;
    for (int i = 0; i < W; i++) {
        pthread_join(w[i].thread, NULL);
        if (w[i].max_over_ms > max_over) max_over = w[i].max_over_ms;
        ok += w[i].ok;
        failed += w[i].failed;
    }
    print_message("storm: %" PRId64 " acquired, %" PRId64 " failed, worst overrun %" PRId64
                  " ms, %" PRIu64 " failovers\n",
                  ok, failed, max_over, cmetrics(cl).failovers);
    noodle_test_assert_no_thread_failure();
    assert_true(max_over <= 500);
    assert_true(ok > 0);
    assert_true(failed > 0); /* the windows without a primary were felt */
    assert_true(cmetrics(cl).failovers >= 2);
    /* Whether it settles with a primary is not asserted here: the timing of the
     * storm can hit the half-open takeover bug that
     * a_restarted_node_in_its_half_open_trial_never_takes_over_from_the_primary
     * reproduces deterministically. */
    noodle_cluster_close(cl);
}

/* A caller inside the cluster on a thread of its own: a write of id, or an
 * acquire through route (released at once); rc and err say how it ended. */
typedef struct inflight {
    pthread_t thread;
    noodle_cluster *cl;
    noodle_route route;
    bool write;
    int64_t id;
    int rc;
    noodle_error err;
} inflight;

static void inflight_run(inflight *f) {
    if (f->write) {
        f->rc = insert_id(f->cl, f->id, deadline_ms(5000), &f->err);
    } else {
        noodle_conn *c = NULL;
        f->rc = noodle_cluster_acquire_until(f->cl, f->route, deadline_ms(5000), &c, &f->err);
        if (f->rc == 0) noodle_cluster_release(f->cl, &c);
    }
}

static void *inflight_main(void *arg) {
    inflight_run(arg);
    return NULL;
}

static inflight inflight_of(noodle_cluster *cl, bool write, noodle_route route, int64_t id) {
    return (inflight){.cl = cl, .write = write, .route = route, .id = id, .rc = -1};
}

/* Start n callers: writes of ids first_id.. or acquires through route. */
static void start_inflights(inflight *f, int n, noodle_cluster *cl, bool write,
                            noodle_route route, int64_t first_id) {
    for (int i = 0; i < n; i++) {
        f[i] = inflight_of(cl, write, route, first_id + i);
        assert_int_equal(pthread_create(&f[i].thread, NULL, inflight_main, &f[i]), 0);
    }
}

static void join_inflights(inflight *f, int n) {
    for (int i = 0; i < n; i++) pthread_join(f[i].thread, NULL);
}

/* Let the statements hung on a node go, 300 ms from now. */
static void *thaw_after_300ms(void *node) {
    noodle_test_sleep_ms(300);
    noodle_error err;
    if (noodle_mock_set_hang(node, NOODLE_MOCK_OP_EXECUTE, false, &err) != 0)
        noodle_test_thread_fail("unhang: %s", err.message);
    return NULL;
}

static void closing_the_cluster_under_callers_in_flight_is_clean_and_coded(void **state) {
    (void)state;
    node_with_table(A);
    cluster_spec s = cspec2(A, NULL);
    s.pool.max_connections = 2;
    noodle_cluster *cl = open_cluster(&s);
    /* statements hang until the test lets them go (after close has begun) */
    set_hang(A, NOODLE_MOCK_OP_EXECUTE, true);
    enum { RUNNING = 2, QUEUED = 3, NO_NODE = 6 };
    inflight running[RUNNING], queued[QUEUED], no_node[NO_NODE];
    /* two writes executing (each holds a connection) */
    start_inflights(running, RUNNING, cl, true, NOODLE_ROUTE_PRIMARY, 10);
    WAIT_FOR(info_nocheck(cl, 0).pool.active == RUNNING, 3000);
    assert_int_equal(node_info(cl, 0).pool.active, RUNNING);
    /* three writes queued in the primary's pool */
    start_inflights(queued, QUEUED, cl, true, NOODLE_ROUTE_PRIMARY, 20);
    WAIT_FOR(info_nocheck(cl, 0).pool.waiting == QUEUED, 3000);
    assert_int_equal(node_info(cl, 0).pool.waiting, QUEUED);
    /* six standby-only acquires waiting for a standby that never comes */
    start_inflights(no_node, NO_NODE, cl, false, NOODLE_ROUTE_STANDBY, 0);
    noodle_test_sleep_ms(100);

    pthread_t thaw;
    assert_int_equal(pthread_create(&thaw, NULL, thaw_after_300ms, A), 0);
    int64_t start = noodle_test_now_ms();
    noodle_cluster_close(cl);
    int64_t took = noodle_test_now_ms() - start;
    pthread_join(thaw, NULL);
    join_inflights(running, RUNNING);
    join_inflights(queued, QUEUED);
    join_inflights(no_node, NO_NODE);
    print_message("close took %" PRId64 " ms\n", took);
    noodle_test_assert_no_thread_failure();
    assert_true(took >= 250); /* it waited for the statements in flight */
    assert_true(took <= 3000);
    /* the statements already running finished; everyone else was told it closed */
    for (int i = 0; i < RUNNING; i++) assert_ok(running[i].rc, &running[i].err);
    for (int i = 0; i < QUEUED; i++)
        assert_code(queued[i].rc, &queued[i].err, NOODLE_E_CLUSTER_CLOSED);
    for (int i = 0; i < NO_NODE; i++)
        assert_code(no_node[i].rc, &no_node[i].err, NOODLE_E_CLUSTER_CLOSED);
    assert_int_equal(rows_of(A), RUNNING);
    assert_int_equal(noodle_test_node_sessions(A), 0);
}

/* A clock that behaves like the real one, except that a marked caller woken
 * from a wait while the test is closing the cluster takes 300 ms to get the
 * mutex back (as a thread the scheduler does not run for a while would). If
 * noodle_cluster_close has returned by then, the caller is still inside the
 * library with the cluster freed under it: it parks for ever instead of
 * touching the freed memory, and the test reports it. */
static atomic_bool slow_closing, slow_close_returned;
static _Thread_local struct slow_caller *slow_self;

typedef struct slow_caller {
    inflight f;
    atomic_bool done, parked;
} slow_caller;

static int64_t slow_now(const noodle_clock *c) {
    (void)c;
    return noodle_clock_now(NULL);
}
static int64_t slow_now_coarse(const noodle_clock *c) {
    (void)c;
    return noodle_clock_now_coarse(NULL);
}
static void slow_sleep_until(const noodle_clock *c, int64_t deadline) {
    (void)c;
    noodle_clock_sleep_until(NULL, deadline);
}
static int slow_cond_wait_until(const noodle_clock *c, pthread_cond_t *cond,
                                pthread_mutex_t *mutex, int64_t deadline) {
    (void)c;
    int rc = noodle_clock_cond_wait_until(NULL, cond, mutex, deadline);
    if (slow_self != NULL && atomic_load(&slow_closing) && rc == 0) {
        pthread_mutex_unlock(mutex);
        noodle_test_sleep_ms(300);
        if (atomic_load(&slow_close_returned)) {
            atomic_store(&slow_self->parked, true);
            for (;;) noodle_test_sleep_ms(1000); /* the mutex may be freed memory now */
        }
        pthread_mutex_lock(mutex);
    }
    return rc;
}
static void slow_cond_signal(const noodle_clock *c, pthread_cond_t *cond) {
    (void)c;
    noodle_clock_cond_signal(NULL, cond);
}
static void slow_cond_broadcast(const noodle_clock *c, pthread_cond_t *cond) {
    (void)c;
    noodle_clock_cond_broadcast(NULL, cond);
}
static int slow_thread_start(const noodle_clock *c, pthread_t *t, noodle_thread_fn fn, void *arg) {
    (void)c;
    return noodle_clock_thread_start(NULL, t, fn, arg);
}
static int slow_thread_join(const noodle_clock *c, pthread_t t) {
    (void)c;
    return noodle_clock_thread_join(NULL, t);
}
static const noodle_clock_ops slow_ops = {slow_now,          slow_now_coarse,    slow_sleep_until,
                                          slow_cond_wait_until, slow_cond_signal, slow_cond_broadcast,
                                          slow_thread_start, slow_thread_join};
static const noodle_clock slow_clock = {&slow_ops, NULL};

static void *slow_caller_main(void *arg) {
    slow_caller *sc = arg;
    slow_self = sc;
    inflight_run(&sc->f);
    atomic_store(&sc->done, true);
    return NULL;
}

/* Join a caller that came back from the library; leave one parked in it for
 * ever. Returns whether it was parked. */
static bool finish_slow_caller(slow_caller *sc) {
    bool parked = atomic_load(&sc->parked);
    if (parked)
        pthread_detach(sc->f.thread);
    else
        pthread_join(sc->f.thread, NULL);
    return parked;
}

static void closing_the_cluster_waits_for_every_caller_still_inside_it(void **state) {
    (void)state;
    node_with_table(A);
    cluster_spec s = cspec2(A, NULL);
    s.pool.max_connections = 1;
    s.cluster.clock = &slow_clock;
    s.cluster.breaker_threshold = 1000000; /* failing connects keep it closed */
    noodle_cluster *cl = open_cluster(&s);
    atomic_store(&slow_closing, false);
    atomic_store(&slow_close_returned, false);

    /* a write waits in the pool's queue (its connects keep failing), and a
     * standby-only acquire waits for a standby that never comes */
    noodle_error err;
    assert_ok(noodle_mock_fail_next(A, NOODLE_MOCK_OP_CONNECT, 1000000, NOODLE_E_CONNECT_FAILED,
                                    &err),
              &err);
    static slow_caller queued, no_node; /* static: a parked one outlives the test */
    memset(&queued, 0, sizeof queued);
    memset(&no_node, 0, sizeof no_node);
    queued.f = inflight_of(cl, true, NOODLE_ROUTE_PRIMARY, 99);
    no_node.f = inflight_of(cl, false, NOODLE_ROUTE_STANDBY, 0);
    assert_int_equal(pthread_create(&queued.f.thread, NULL, slow_caller_main, &queued), 0);
    assert_int_equal(pthread_create(&no_node.f.thread, NULL, slow_caller_main, &no_node), 0);
    WAIT_FOR(info_nocheck(cl, 0).pool.waiting == 1, 3000);
    assert_int_equal(node_info(cl, 0).pool.waiting, 1);
    noodle_test_sleep_ms(50);

    atomic_store(&slow_closing, true);
    noodle_cluster_close(cl);
    atomic_store(&slow_close_returned, true);
    WAIT_FOR((atomic_load(&queued.done) || atomic_load(&queued.parked)) &&
                 (atomic_load(&no_node.done) || atomic_load(&no_node.parked)),
             3000);
    bool queued_parked = finish_slow_caller(&queued), no_node_parked = finish_slow_caller(&no_node);
    atomic_store(&slow_closing, false);
    if (no_node_parked || queued_parked)
        fail_msg("noodle_cluster_close returned while callers were still inside the library "
                 "(woken, not yet back from their wait): %s%s; they would now lock the freed "
                 "cluster/pool mutex",
                 no_node_parked ? "an acquire waiting for a node (cluster topo_cond) " : "",
                 queued_parked ? "an acquire queued in the node's pool" : "");
    assert_code(no_node.f.rc, &no_node.f.err, NOODLE_E_CLUSTER_CLOSED);
    assert_code(queued.f.rc, &queued.f.err, NOODLE_E_CLUSTER_CLOSED);
}

static void connections_opened_during_recovery_stay_within_the_pool_bound(void **state) {
    (void)state;
    cluster_spec s = primary_and_standby();
    s.pool.max_connections = 4;
    noodle_cluster *cl = open_cluster(&s);
    noodle_error err;
    writer_group *g = start_writers(cl, 16, 500);
    assert_ok(noodle_mock_node_reset_stats(B, &err), &err); /* b: just the prober's session */
    assert_int_equal(noodle_test_node_stats(B).open_connections, 1);
    crash(A);
    WAIT_FOR(primary_of(cl) == -1, 3000);
    set_role(B, NOODLE_ROLE_PRIMARY);
    int64_t t_promote = noodle_test_now_ms();
    stop_writers_after_resume(g, t_promote, 500); /* 16 writers on 4 connections */
    assert_true(first_ack_after(g, t_promote) >= 0);
    noodle_mock_stats b = noodle_test_node_stats(B);
    noodle_cluster_node_info info = node_info(cl, 1);
    print_message("b: peak %" PRId64 " sessions, %" PRId64 " connects; pool peak %" PRId64 "\n",
                  b.peak_connections, b.connects_total, info.pool.peak_total);
    assert_true(b.peak_connections <= s.pool.max_connections + 1); /* + the prober's */
    assert_true(info.pool.peak_total <= s.pool.max_connections);
    assert_true(b.connects_total <= s.pool.max_connections + 1); /* no storm of connects */
    noodle_cluster_close(cl);
    free_writers(g);
}

/* ---- arguments and names ----------------------------------------------------------------------- */

static void invalid_arguments_are_refused_with_6085(void **state) {
    (void)state;
    node_with_table(A);
    noodle_error err;
    noodle_cluster *cl = (noodle_cluster *)&err;
    /* open */
    assert_code(noodle_cluster_open(NULL, &cl, &err), &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_null(cl);
    noodle_config_options o = NOODLE_CONFIG_OPTIONS_INIT;
    o.backend = "mock";
    o.url = URL_A;
    o.min_idle = 0;
    noodle_config cfg;
    noodle_test_config_load(&cfg, &o);
    noodle_cluster_options co = NOODLE_CLUSTER_OPTIONS_INIT;
    co.config = &cfg;
    co.backend = noodle_mock_backend();
    co.struct_size = 0;
    cl = (noodle_cluster *)&err;
    assert_code(noodle_cluster_open(&co, &cl, &err), &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_null(cl);
    co.struct_size = sizeof co;
    co.config = NULL;
    assert_code(noodle_cluster_open(&co, &cl, &err), &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    co.config = &cfg;
    const char *none[] = {NULL};
    co.endpoints = none;
    co.nendpoints = 0; /* an empty list */
    assert_code(noodle_cluster_open(&co, &cl, &err), &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_null(cl);
    const char *with_null[] = {URL_A, NULL};
    co.endpoints = with_null;
    co.nendpoints = 2;
    assert_code(noodle_cluster_open(&co, &cl, &err), &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_null(cl);
    assert_code(noodle_cluster_open(&co, NULL, &err), &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);

    /* without endpoints, a non-PostgreSQL url is the one endpoint */
    co.endpoints = NULL;
    co.nendpoints = 0;
    co.wait_for_primary = true;
    co.probe_interval_ms = 50;
    assert_ok(noodle_cluster_open(&co, &cl, &err), &err);
    noodle_config_free(&cfg);
    assert_int_equal(cmetrics(cl).nodes, 1);
    assert_int_equal(cmetrics(cl).primary, 0);

    /* acquire / execute */
    noodle_conn *c = (noodle_conn *)&err;
    assert_code(noodle_cluster_acquire(cl, (noodle_route)42, &c, &err), &err,
                NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_null(c);
    assert_code(noodle_cluster_acquire(cl, (noodle_route)-1, &c, &err), &err,
                NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_code(noodle_cluster_acquire(NULL, NOODLE_ROUTE_PRIMARY, &c, &err), &err,
                NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_code(noodle_cluster_acquire(cl, NOODLE_ROUTE_PRIMARY, NULL, &err), &err,
                NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    noodle_rows *r = (noodle_rows *)&err;
    assert_code(noodle_cluster_execute(cl, NOODLE_ROUTE_PRIMARY, 0, NULL, NULL, 0, 0, &r, &err),
                &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_null(r);
    assert_code(noodle_cluster_execute(NULL, NOODLE_ROUTE_PRIMARY, 0, "SELECT 1", NULL, 0, 0, &r,
                                       &err),
                &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_code(noodle_cluster_execute(cl, NOODLE_ROUTE_PRIMARY, 0, "SELECT 1", NULL, 0, 0, NULL,
                                       &err),
                &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_code(noodle_cluster_execute(cl, (noodle_route)7, 0, "SELECT 1", NULL, 0, 0, &r, &err),
                &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_null(r);

    /* state, observers, split */
    noodle_cluster_node_info info;
    assert_code(noodle_cluster_node(cl, 1, &info, &err), &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_code(noodle_cluster_node(cl, 0, NULL, &err), &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_code(noodle_cluster_node(NULL, 0, &info, &err), &err, NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_code(noodle_cluster_observe(cl, NULL, NULL, &err), &err,
                NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    recorder *recs[8];
    for (int i = 0; i < 8; i++) recs[i] = observe(cl);
    assert_code(noodle_cluster_observe(cl, record_event, recs[0], &err), &err,
                NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    char **eps = NULL;
    size_t n = 0;
    assert_code(noodle_cluster_split_url("host=a", NULL, &n, &err), &err,
                NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    assert_code(noodle_cluster_split_url("host=a", &eps, NULL, &err), &err,
                NOODLE_E_CLUSTER_INVALID_ARGUMENT);
    noodle_cluster_metrics m;
    noodle_cluster_get_metrics(NULL, &m);
    assert_int_equal(m.primary, -1);
    assert_int_equal(m.nodes, 0);
    noodle_cluster_probe_now(NULL);
    noodle_cluster_release(NULL, &c);
    noodle_cluster_close(NULL);

    /* names */
    assert_string_equal(noodle_route_name(NOODLE_ROUTE_PRIMARY), "primary");
    assert_string_equal(noodle_route_name(NOODLE_ROUTE_PREFER_STANDBY), "prefer-standby");
    assert_string_equal(noodle_route_name(NOODLE_ROUTE_STANDBY), "standby");
    assert_string_equal(noodle_route_name((noodle_route)42), "unknown");
    assert_string_equal(noodle_breaker_state_name(NOODLE_BREAKER_CLOSED), "closed");
    assert_string_equal(noodle_breaker_state_name(NOODLE_BREAKER_OPEN), "open");
    assert_string_equal(noodle_breaker_state_name(NOODLE_BREAKER_HALF_OPEN), "half-open");
    assert_string_equal(noodle_cluster_event_name(NOODLE_CLUSTER_EV_FAILOVER), "failover");
    assert_string_equal(noodle_cluster_event_name(NOODLE_CLUSTER_EV_PRIMARY_LOST), "primary_lost");
    assert_string_equal(noodle_cluster_event_name((noodle_cluster_event_type)99), "unknown");
    for (int code = NOODLE_E_CLUSTER_NO_PRIMARY; code <= NOODLE_E_CLUSTER_ROLE_DETECT; code++)
        assert_non_null(noodle_code_name(code));

    /* probe_now asks for a round at once */
    uint64_t probes = cmetrics(cl).probes;
    noodle_cluster_probe_now(cl);
    WAIT_FOR(cmetrics(cl).probes > probes, 2000);
    assert_true(cmetrics(cl).probes > probes);
    noodle_cluster_close(cl);
    for (int i = 0; i < 8; i++) recorder_free(recs[i]);
}

/* ---- the runner ------------------------------------------------------------------------------------ */

int main(void) {
    if (noodle_test_mock_init() != 0) return 2;
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(roles_are_discovered_and_writes_land_only_on_the_primary),
        T(a_multi_host_url_is_split_into_one_endpoint_per_host),
        T(after_a_primary_crash_and_a_promotion_acked_writes_are_kept_and_writes_resume),
        T(a_commit_whose_acknowledgement_is_lost_reports_outcome_unknown),
        T(a_write_is_never_retried_but_an_idempotent_read_is_retried_once),
        T(a_primary_turned_read_only_is_demoted_and_writes_move_to_the_promoted_standby),
        T(a_users_own_read_only_refusal_on_a_writable_primary_causes_no_failover),
        T(a_frozen_primary_holds_no_writer_past_its_deadline_and_is_fenced_when_it_thaws),
        T(a_node_claiming_primary_without_being_seen_as_standby_is_fenced),
        T(an_old_primary_back_after_a_crash_is_fenced_even_if_it_was_promoted_once),
        T(a_restarted_node_in_its_half_open_trial_never_takes_over_from_the_primary),
        T(a_node_is_not_made_the_primary_before_it_answers_its_half_open_trial),
        T(a_crashed_nodes_breaker_opens_refuses_then_half_opens_closes_and_slow_starts),
        T(a_mass_session_kill_neither_opens_the_breaker_nor_loses_the_primary),
        T(an_outage_of_connects_is_reported_as_6083_and_a_busy_pool_as_2002),
        T(reads_prefer_the_standby_and_fall_back_to_the_primary),
        T(a_standby_back_from_an_outage_is_not_served_with_sessions_from_before_it),
        T(fail_point_role_detect_fails_probes_and_past_the_threshold_loses_the_primary),
        T(fail_point_breaker_open_keeps_the_breaker_closed),
        T(fail_point_breaker_half_open_keeps_the_breaker_open),
        T(fail_point_breaker_close_reopens_the_breaker_after_a_good_trial),
        T(a_failing_prober_thread_start_fails_open_with_6088_and_leaks_nothing),
        T(every_acquire_during_a_failover_storm_keeps_its_deadline_and_fails_coded),
        T(closing_the_cluster_under_callers_in_flight_is_clean_and_coded),
        T(closing_the_cluster_waits_for_every_caller_still_inside_it),
        T(connections_opened_during_recovery_stay_within_the_pool_bound),
        T(invalid_arguments_are_refused_with_6085),
    };
#undef T
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    noodle_mock_reset(); /* free every node, for the leak checker */
    return failed;
}
