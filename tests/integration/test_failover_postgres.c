/* Automatic failover (src/cluster.c) against real PostgreSQL servers (label pg).
 *
 * Each scenario runs tests/support/failover_driver.h over a primary and a
 * streaming standby: 16 writers insert unique ids through
 * noodle_cluster_execute(ROUTE_PRIMARY) while a fault hits the primary, the
 * standby is promoted, and every id is then read back on the servers. The
 * standby is synchronous wherever acknowledged writes must survive (so a
 * lost acknowledged write is the cluster's fault, never PostgreSQL's
 * documented asynchronous loss window). The result block of every run is
 * printed: it is the evidence.
 *
 * Scenarios: kill -9 of the primary; the primary frozen with SIGSTOP (then
 * thawed: it must be fenced); the primary partitioned in its own network
 * namespace (skipped, with the reason, only where namespaces are not
 * available); the primary turned read-only while its connections stay
 * pooled; a standby serving reads killed and restarted, and one whose replay
 * is paused (stale reads, never writes); and the failback policy: an old
 * primary that comes back as a primary is fenced, and once it rejoins as a
 * standby it serves reads only -- also one failover later (the node promoted
 * in the first failover, killed in the second, comes back as a primary), and
 * for a read-only old primary made writable again.
 *
 * NOODLE_TEST_FILTER=<cmocka pattern> runs only the matching tests.
 *
 * Never skipped otherwise: a server that cannot start fails the test.
 * cmocka assertions run on the test's thread only (the driver's threads
 * record, the test checks after joining them).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "noodle/cluster.h"
#include "noodle/error.h"
#include "failover_driver.h"
#include "pg_server.h"
#include "test_util.h"

/* A driver left open by the running test; closed by the teardown. */
static noodle_fo *open_fo;

static int close_fo(void **state) {
    (void)state;
    noodle_fo_close(open_fo);
    open_fo = NULL;
    return 0;
}

static double ms(int64_t from, int64_t to) { return (double)(to - from) / 1e6; }

/* The driver's default options (a synchronous standby, 16 writers), with fault. */
static noodle_fo_options options_with(noodle_fo_fault fault) {
    noodle_fo_options o;
    noodle_fo_options_init(&o);
    o.fault = fault;
    return o;
}

/* Options for a standby under reads: asynchronous (the primary must not wait
 * for the standby the test kills or stalls), 4 writers and `readers` readers. */
static noodle_fo_options reads_options(int readers) {
    noodle_fo_options o = options_with(NOODLE_FO_KILL);
    o.synchronous = false;
    o.writers = 4;
    o.readers = readers;
    return o;
}

static noodle_fo *open_driver(const noodle_fo_options *o) {
    char msg[2048];
    if (noodle_fo_open(o, &open_fo, msg, sizeof msg) != 0) fail_msg("%s", msg);
    return open_fo;
}

/* Start the load (the sampler counting on node sample_node); fails the test on error. */
static void load_start(noodle_fo *fo, int sample_node) {
    char msg[1024];
    if (noodle_fo_load_start(fo, sample_node, msg, sizeof msg) != 0) fail_msg("%s", msg);
}

/* Run the load for ms milliseconds from now, then stop it. */
static void load_for(noodle_fo *fo, int sample_node, int ms) {
    load_start(fo, sample_node);
    noodle_fo_sleep_until(noodle_fo_now() + NOODLE_MS(ms));
    noodle_fo_load_stop(fo);
}

static void print_block(const noodle_fo_result *r) {
    noodle_fo_result_print(stdout, r);
    fflush(stdout);
}

/* Apply the scenario pass criteria; fail the test with the reasons. */
static void assert_passed(const noodle_fo_result *r, const noodle_fo_options *o) {
    char why[2048];
    if (!noodle_fo_result_check(r, o, why, sizeof why)) fail_msg("%s: %s", r->scenario, why);
    printf("  verdict: PASS\n");
    fflush(stdout);
}

static void run_scenario(noodle_fo_fault fault) {
    noodle_fo_options o = options_with(fault);
    noodle_fo_result r;
    int rc = noodle_fo_run(&o, &r);
    print_block(&r);
    if (r.skipped) {
        printf("skipped: %s\n", r.skip_reason);
        fflush(stdout);
        skip();
    }
    if (rc != 0) fail_msg("%s: %s", r.scenario, r.error);
    assert_passed(&r, &o);
}

/* Run the failover scenario of fo's options on the open driver (nodes set
 * with noodle_fo_set_nodes), print its block and apply the pass criteria. */
static noodle_fo_result failover_passes(noodle_fo *fo) {
    noodle_fo_result r;
    int rc = noodle_fo_failover(fo, &r);
    print_block(&r);
    if (rc != 0) fail_msg("%s: %s", r.scenario, r.error);
    assert_passed(&r, noodle_fo_opts(fo));
    return r;
}

/* Poll the cluster's view of node until pred holds or timeout_ms passes. */
typedef bool (*node_pred)(const noodle_cluster_node_info *info);
static bool wait_node(noodle_fo *fo, int node, node_pred pred, int timeout_ms,
                      noodle_cluster_node_info *info) {
    int64_t until = noodle_test_now_ms() + timeout_ms;
    for (;;) {
        noodle_error err;
        assert_ok(noodle_cluster_node(noodle_fo_cluster(fo), (size_t)node, info, &err), &err);
        if (pred(info)) return true;
        if (noodle_test_now_ms() >= until) return false;
        usleep(5000);
    }
}

static bool is_up(const noodle_cluster_node_info *i) { return i->up; }
static bool is_fenced(const noodle_cluster_node_info *i) { return i->fenced; }
static bool is_usable_standby(const noodle_cluster_node_info *i) {
    return i->role == NOODLE_ROLE_STANDBY && i->up && !i->fenced &&
           i->breaker == NOODLE_BREAKER_CLOSED;
}

static void print_node(const char *what, const noodle_cluster_node_info *i) {
    printf("  %s: role %s, up %s, fenced %s, breaker %s, pool opened %llu\n", what,
           noodle_role_name(i->role), i->up ? "yes" : "no", i->fenced ? "yes" : "no",
           noodle_breaker_state_name(i->breaker), (unsigned long long)i->pool.opened);
    fflush(stdout);
}

static void admin_ok(noodle_pg_server *s, const char *sql, char *out, size_t outlen) {
    char local[512];
    if (out == NULL) {
        out = local;
        outlen = sizeof local;
    }
    if (noodle_pg_server_query(s, sql, out, outlen) != 0) fail_msg("%s: %s", sql, out);
}

/* The cluster's state: its metrics, node `node`, and the events from t0 on. */
static noodle_fo_result cluster_state(noodle_fo *fo, int node, int64_t t0) {
    noodle_fo_result cs;
    memset(&cs, 0, sizeof cs);
    cs.t0 = t0;
    noodle_fo_cluster_state(fo, node, &cs);
    return cs;
}

/* Print the events of cs (from its t0 on) as `what`, times relative to t0. */
static void print_events(const noodle_fo_result *cs, const char *what) {
    printf("  events %s:", what);
    for (size_t i = 0; i < cs->nevents; i++)
        printf("%s+%.1f %s n%d", i % 4 == 0 ? "\n    " : "  |  ", ms(cs->t0, cs->timeline[i].time),
               noodle_cluster_event_name(cs->timeline[i].type), cs->timeline[i].node);
    printf("\n");
    fflush(stdout);
}

/* The writes invoked at or after `since`, read back on node `primary` and,
 * when other >= 0, on node `other` through its socket (rows there written
 * at or after `after`, when non-zero, count as old_rows_after_fault). The
 * counts are printed as `phase`; fails the test when the writes cannot be
 * read back. */
static noodle_fo_result verify_writes(noodle_fo *fo, int primary, int other, int64_t since,
                                      int64_t after, const char *phase) {
    noodle_fo_result w;
    memset(&w, 0, sizeof w);
    w.fault_effective = after;
    int rc = noodle_fo_verify(fo, primary, other, since, &w);
    printf("  writes %s: %ld ops, %ld acknowledged, %ld failed, %ld unknown, %ld lost; %ld rows on "
           "node %d",
           phase, w.ops, w.acked, w.failed, w.unknown, w.lost_acked, w.rows_new, primary);
    if (w.old_checked) printf("; %ld rows on node %d", w.rows_old, other);
    printf("\n");
    for (size_t i = 0; i < w.ncodes; i++)
        printf("    NOODLE-%d x%ld: %.160s\n", w.codes[i].code, w.codes[i].count,
               w.codes[i].first_message);
    fflush(stdout);
    if (rc != 0) fail_msg("verify: %s", w.error);
    return w;
}

/* Writes of `phase` (invoked at or after from) checked on node `primary`:
 * none may fail or be lost. */
static void assert_writes_unaffected(noodle_fo *fo, int primary, int64_t from, const char *phase) {
    noodle_fo_result w = verify_writes(fo, primary, -1, from, 0, phase);
    assert_true(w.acked > 0);
    assert_int_equal(w.lost_acked, 0);
    assert_int_equal(w.failed, 0);
    assert_int_equal(w.unknown, 0);
    assert_int_equal(w.uncoded, 0);
}

/* ---- scenarios 1-4: the primary fails, a synchronous standby is promoted --------------------- */

static void killed_primary_fails_over_with_no_acknowledged_write_lost(void **state) {
    (void)state;
    run_scenario(NOODLE_FO_KILL);
}

static void frozen_primary_fails_over_and_is_fenced_after_thaw(void **state) {
    (void)state;
    run_scenario(NOODLE_FO_FREEZE);
}

static void partitioned_primary_fails_over_and_is_fenced_when_the_link_returns(void **state) {
    (void)state;
    run_scenario(NOODLE_FO_PARTITION);
}

static void read_only_primary_is_demoted_and_takes_no_write_after_the_switch(void **state) {
    (void)state;
    run_scenario(NOODLE_FO_READ_ONLY);
}

/* ---- scenario 5: a standby serving reads is restarted, or lags ------------------------------- */

/* Reads of [from, to) into r (counts only). */
static noodle_fo_result reads_between(noodle_fo *fo, int64_t from, int64_t to) {
    noodle_fo_result r;
    memset(&r, 0, sizeof r);
    noodle_fo_read_counts(fo, from, to, &r);
    return r;
}

static void print_reads(const char *phase, const noodle_fo_result *r) {
    printf("  reads %s: %ld, %ld ok (%ld by the standby, %ld by the primary), %ld failed (%ld "
           "uncoded)\n",
           phase, r->reads, r->reads_ok, r->reads_standby, r->reads_primary, r->reads_failed,
           r->reads_uncoded);
    fflush(stdout);
}

/* Failed reads by code (times relative to t0), with the first message of each code. */
static void print_read_failures(noodle_fo *fo, int64_t t0) {
    size_t n;
    const noodle_fo_read *rd = noodle_fo_reads(fo, &n);
    for (size_t i = 0; i < n; i++) {
        if (rd[i].code == 0) continue;
        const char *name = noodle_code_name(rd[i].code);
        printf("    failed read: NOODLE-%d %s, invoked %+.1f ms, took %.1f ms\n", rd[i].code,
               name ? name : "(NOT IN CATALOGUE)", ms(t0, rd[i].invoke),
               ms(rd[i].invoke, rd[i].complete));
    }
    int seen[16], nseen = 0;
    for (size_t i = 0; i < n; i++) {
        int c = rd[i].code;
        bool dup = c == 0;
        for (int k = 0; k < nseen && !dup; k++)
            dup = seen[k] == c;
        if (dup || nseen == 16) continue;
        seen[nseen++] = c;
        printf("    NOODLE-%d first message: %.300s\n", c, noodle_fo_first_message(fo, c));
    }
    fflush(stdout);
}

/* Longest interval in [from, to) during which no read completed (any outcome). */
static double longest_read_gap(noodle_fo *fo, int64_t from, int64_t to) {
    size_t n;
    const noodle_fo_read *rd = noodle_fo_reads(fo, &n);
    double gap = 0;
    int64_t last = from;
    for (;;) { /* the reads complete out of order: find the next completion each time */
        int64_t next = to;
        for (size_t i = 0; i < n; i++)
            if (rd[i].complete > last && rd[i].complete < next) next = rd[i].complete;
        if (ms(last, next) > gap) gap = ms(last, next);
        if (next >= to) return gap;
        last = next;
    }
}

/* The slowest read invoked in [from, to), printed with its outcome (times
 * relative to t0); returns its duration in ms. */
static double slowest_read(noodle_fo *fo, int64_t from, int64_t to, int64_t t0, const char *what) {
    size_t n;
    const noodle_fo_read *rd = noodle_fo_reads(fo, &n);
    const noodle_fo_read *worst = NULL;
    for (size_t i = 0; i < n; i++)
        if (rd[i].invoke >= from && rd[i].invoke < to &&
            (worst == NULL || rd[i].complete - rd[i].invoke > worst->complete - worst->invoke))
            worst = &rd[i];
    if (worst == NULL) return 0;
    printf("  slowest read invoked %s: %.1f ms, invoked %+.1f ms after the kill, %s\n", what,
           ms(worst->invoke, worst->complete), ms(t0, worst->invoke),
           worst->code != 0        ? "failed"
           : worst->served_by == 1 ? "served by the standby"
                                   : "served by the primary");
    return ms(worst->invoke, worst->complete);
}

static void standby_killed_and_restarted_under_reads_loses_no_read_silently(void **state) {
    char msg[1024];
    (void)state;
    noodle_fo_options o = reads_options(8);
    noodle_fo *fo = open_driver(&o);
    noodle_pg_server *standby = noodle_fo_server(fo, 1);
    printf("==== standby restart under reads (async standby, %d readers, %d writers) ====\n",
           o.readers, o.writers);
    load_start(fo, 0);
    int64_t start = noodle_fo_now();
    noodle_fo_sleep_until(start + NOODLE_MS(1000));
    int64_t kill_at = noodle_fo_now();
    if (noodle_pg_server_kill(standby, SIGKILL) != 0) fail_msg("kill -9 of the standby failed");
    int64_t killed = noodle_fo_now();
    noodle_fo_sleep_until(killed + NOODLE_MS(1500));
    int64_t restart_at = noodle_fo_now();
    if (noodle_pg_server_restart(standby, msg, sizeof msg) != 0) fail_msg("restart: %s", msg);
    int64_t back = noodle_fo_now();
    noodle_cluster_node_info info;
    bool usable = wait_node(fo, 1, is_usable_standby, 5000, &info);
    int64_t usable_at = noodle_fo_now();
    noodle_fo_sleep_until(usable_at + NOODLE_MS(1500));
    noodle_fo_load_stop(fo);
    int64_t end = noodle_fo_now();

    printf("  timings: kill -9 %.1f ms; down %.1f ms; restart %.1f ms; restarted -> the cluster "
           "routes to it again %.1f ms%s\n",
           ms(kill_at, killed), ms(killed, restart_at), ms(restart_at, back), ms(back, usable_at),
           usable ? "" : " (NOT SEEN)");
    print_node("standby (node 1) at the end", &info);
    noodle_fo_result before = reads_between(fo, 0, kill_at);
    noodle_fo_result down = reads_between(fo, killed, restart_at);
    noodle_fo_result after = reads_between(fo, usable_at, end);
    noodle_fo_result all = reads_between(fo, 0, end);
    print_reads("before the kill", &before);
    print_reads("while the standby was down", &down);
    print_reads("after it was routable again", &after);
    print_reads("in all", &all);
    /* the first read served by the standby again, after it restarted */
    size_t nreads;
    const noodle_fo_read *rd = noodle_fo_reads(fo, &nreads);
    double first_back = -1;
    for (size_t i = 0; i < nreads; i++)
        if (rd[i].code == 0 && rd[i].served_by == 1 && rd[i].invoke >= back &&
            (first_back < 0 || ms(back, rd[i].complete) < first_back))
            first_back = ms(back, rd[i].complete);
    printf("  restart complete -> first read served by the standby: %.1f ms\n", first_back);
    print_read_failures(fo, kill_at);
    printf("  longest time without a completed read from the kill to the end: %.1f ms\n",
           longest_read_gap(fo, kill_at, end));
    double slowest = slowest_read(fo, kill_at, restart_at, kill_at, "while the standby was down");
    (void)slowest_read(fo, restart_at, end, kill_at, "from its restart on");
    noodle_fo_result cs = cluster_state(fo, 1, 0);
    printf("  cluster: primary node %d, failovers %llu, reads retried %llu, probe failures %llu\n",
           cs.final_primary, cs.failovers, cs.reads_retried, cs.probe_failures);
    fflush(stdout);

    /* Reads never fail silently, and with retry_reads nearly all succeed. */
    assert_int_equal(all.reads_uncoded, 0);
    assert_true(all.reads > 0);
    assert_true(all.reads_ok * 100 >= all.reads * 95);
    /* Served by the standby before, by the primary while it was down, by the
     * standby again after it came back. */
    assert_true(before.reads_standby > 0);
    assert_true(down.reads_ok > 0);
    assert_int_equal(down.reads_ok, down.reads_primary);
    assert_true(usable);
    assert_true(first_back >= 0);
    assert_true(after.reads_standby > 0);
    assert_true(after.reads_standby * 100 >= after.reads_ok * 90);
    /* Writes to the primary are unaffected; the primary never changed. */
    assert_writes_unaffected(fo, 0, 0, "during the restart");
    assert_int_equal(cs.final_primary, 0);
    assert_int_equal(cs.failovers, 0);
    /* A read that may be served by the primary must not wait out its whole
     * deadline in the pool of a standby the cluster knows is down: the
     * cluster notices a dead node within a probe interval plus a probe
     * timeout, and should then send the read elsewhere. */
    double bound = o.probe_interval_ms + o.probe_timeout_ms;
    if (slowest > bound)
        fail_msg("a PREFER_STANDBY read invoked while the standby was down took %.0f ms (> %.0f "
                 "ms = probe interval + probe timeout) although the primary was available: "
                 "readers waiting in the dead standby's pool were not re-routed",
                 slowest, bound);
}

static bool is_standby(const noodle_cluster_node_info *i) { return i->role == NOODLE_ROLE_STANDBY; }

static void lagging_standby_serves_stale_reads_and_never_writes(void **state) {
    char lag[256];
    (void)state;
    noodle_fo_options o = reads_options(4);
    noodle_fo *fo = open_driver(&o);
    noodle_pg_server *standby = noodle_fo_server(fo, 1);
    printf("==== lagging standby (replay paused) under reads and writes ====\n");
    load_start(fo, 0);
    noodle_fo_sleep_until(noodle_fo_now() + NOODLE_MS(800));
    admin_ok(standby, "SELECT pg_wal_replay_pause()", NULL, 0);
    int64_t paused = noodle_fo_now();
    noodle_fo_sleep_until(paused + NOODLE_MS(1500));
    admin_ok(standby,
             "SELECT round(extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)",
             lag, sizeof lag);
    admin_ok(standby, "SELECT pg_wal_replay_resume()", NULL, 0);
    int64_t resumed = noodle_fo_now();
    noodle_fo_sleep_until(resumed + NOODLE_MS(1000));
    noodle_fo_load_stop(fo);
    int64_t end = noodle_fo_now();

    /* Staleness of the reads the standby served, by phase. */
    size_t nreads;
    const noodle_fo_read *rd = noodle_fo_reads(fo, &nreads);
    double max_paused = 0, max_after = 0;
    long standby_paused = 0, stale_paused = 0, standby_late = 0, fresh_late = 0;
    for (size_t i = 0; i < nreads; i++) {
        if (rd[i].code != 0 || rd[i].served_by != 1) continue;
        double s = noodle_fo_read_staleness_ms(fo, &rd[i]);
        if (rd[i].invoke >= paused + NOODLE_MS(100) && rd[i].invoke < resumed) {
            standby_paused++;
            stale_paused += s > 0;
            if (s > max_paused) max_paused = s;
        } else if (rd[i].invoke >= resumed + NOODLE_MS(500)) {
            standby_late++;
            fresh_late += s < 100;
            if (s > max_after) max_after = s;
        }
    }
    noodle_fo_result all = reads_between(fo, 0, end);
    print_reads("in all", &all);
    printf("  while replay was paused (%.0f ms): %ld reads served by the standby, %ld stale; "
           "max staleness %.0f ms; the standby's own replay delay %s ms\n",
           ms(paused, resumed), standby_paused, stale_paused, max_paused, lag);
    printf("  from 500 ms after resume: %ld reads served by the standby, %ld within 100 ms of "
           "the primary; max staleness %.0f ms\n",
           standby_late, fresh_late, max_after);
    printf("  (the cluster does not look at replication lag when routing reads: a lagging "
           "standby keeps serving them)\n");
    noodle_cluster_node_info info;
    bool still_standby = wait_node(fo, 1, is_standby, 0, &info);
    print_node("standby (node 1) at the end", &info);
    noodle_fo_result cs = cluster_state(fo, 1, 0);

    assert_int_equal(all.reads_uncoded, 0);
    assert_true(standby_paused > 0);
    assert_true(stale_paused > 0); /* the scenario did make the standby lag */
    assert_true(standby_late > 0);
    assert_true(still_standby);
    /* Writes never went to the standby (it would refuse them with 5009):
     * none failed, all are on the primary. */
    assert_writes_unaffected(fo, 0, 0, "while the standby lagged");
    assert_int_equal(cs.final_primary, 0);
    assert_int_equal(cs.failovers, 0);
}

/* ---- failback: the old primary comes back fenced, then rejoins as a standby ------------------ */

/* Restart the killed server of node `node`: crash recovery brings it back
 * as a primary. Then wait (up to 5 s) until pred holds for the cluster's
 * view of it (what: pred in words); *seen says whether it did. Returns when
 * the restart completed. */
static int64_t restart_as_primary(noodle_fo *fo, int node, node_pred pred, const char *what,
                                  bool *seen) {
    char msg[1024], out[256], label[64];
    noodle_pg_server *s = noodle_fo_server(fo, node);
    int64_t t = noodle_fo_now();
    if (noodle_pg_server_restart(s, msg, sizeof msg) != 0) fail_msg("restart: %s", msg);
    int64_t restarted = noodle_fo_now();
    admin_ok(s, "SELECT pg_is_in_recovery()", out, sizeof out);
    assert_string_equal(out, "f");
    noodle_cluster_node_info info;
    *seen = wait_node(fo, node, pred, 5000, &info);
    printf("  restart %.1f ms; restarted -> %s %.1f ms%s\n", ms(t, restarted), what,
           ms(restarted, noodle_fo_now()), *seen ? "" : " (NOT SEEN)");
    snprintf(label, sizeof label, "node %d restarted", node);
    print_node(label, &info);
    return restarted;
}

/* Rejoin the server of node `node` as a standby of node `primary`'s; the
 * cluster must take it as a usable standby within 8 s. Returns when it did. */
static int64_t rejoin_as_usable_standby(noodle_fo *fo, int node, int primary) {
    char msg[1024], what[64];
    noodle_pg_server *s = noodle_fo_server(fo, node);
    int64_t t = noodle_fo_now();
    if (noodle_pg_server_rejoin_as_standby(s, noodle_fo_server(fo, primary), msg, sizeof msg) != 0)
        fail_msg("rejoin: %s", msg);
    int64_t rejoined = noodle_fo_now();
    noodle_cluster_node_info info;
    bool usable = wait_node(fo, node, is_usable_standby, 8000, &info);
    int64_t usable_at = noodle_fo_now();
    printf("  rejoin (%s) %.1f ms; rejoined -> a usable standby for the cluster %.1f ms%s\n",
           noodle_pg_server_rejoin_method(s), ms(t, rejoined), ms(rejoined, usable_at),
           usable ? "" : " (NOT SEEN)");
    snprintf(what, sizeof what, "node %d rejoined", node);
    print_node(what, &info);
    assert_true(usable);
    assert_false(info.fenced);
    return usable_at;
}

/* Since `since`, node `old` has claimed to be the primary while node
 * `primary` is, and writes ran: the cluster must have fenced `old` and kept
 * `primary`, and no write of that time may be lost or have landed on `old`.
 * why: what it means when the cluster took `old` as the primary. */
static void assert_fenced_and_primary_kept(noodle_fo *fo, int primary, int old, int64_t since,
                                           const char *why) {
    noodle_cluster_node_info n[2];
    noodle_error err;
    for (size_t i = 0; i < 2; i++)
        assert_ok(noodle_cluster_node(noodle_fo_cluster(fo), i, &n[i], &err), &err);
    noodle_fo_result cs = cluster_state(fo, old, since);
    print_node(primary == 0 ? "node 0 (the primary)" : "node 1 (the primary)", &n[primary]);
    print_node(old == 0 ? "node 0 (back, claiming primary)" : "node 1 (back, claiming primary)",
               &n[old]);
    printf("  cluster: primary node %d, failovers %llu\n", cs.final_primary, cs.failovers);
    print_events(&cs, "since it came back");
    noodle_fo_result w = verify_writes(fo, primary, old, since, since, "since it came back");
    printf("  %ld of them landed on node %d\n", w.old_rows_after_fault, old);
    if (!n[old].fenced || n[primary].fenced || cs.final_primary != primary)
        fail_msg("node %d, back as a primary while node %d is, was taken as the primary (primary "
                 "now node %d; node 0 fenced %s, node 1 fenced %s): %s",
                 old, primary, cs.final_primary, n[0].fenced ? "yes" : "no",
                 n[1].fenced ? "yes" : "no", why);
    assert_int_equal(w.old_rows_after_fault, 0);
    assert_int_equal(w.lost_acked, 0);
}

static void
old_primary_back_as_primary_is_fenced_and_after_rejoining_serves_reads_only(void **state) {
    (void)state;
    noodle_fo_options o = options_with(NOODLE_FO_KILL);
    noodle_fo *fo = open_driver(&o);
    noodle_fo_result r = failover_passes(fo);

    printf("==== failback: the killed old primary restarts, then rejoins as a standby ====\n");
    /* 1. It restarts as a primary (crash recovery): it claims primary while
     *    node 1 is, so the cluster fences it and sends it nothing. */
    bool fenced;
    int64_t restarted = restart_as_primary(fo, 0, is_fenced, "fenced", &fenced);
    assert_true(fenced);
    noodle_fo_set_load(fo, 16, 4);
    load_for(fo, 1, 1000);
    /* nothing written in this phase may be on the fenced node */
    noodle_fo_result fenced_phase = verify_writes(fo, 1, 0, restarted, restarted, "while fenced");
    noodle_fo_result fr = reads_between(fo, restarted, noodle_fo_now());
    printf("  while fenced: %ld writes on the fenced node; %ld reads, %ld by the primary, %ld by a "
           "standby\n",
           fenced_phase.old_rows_after_fault, fr.reads, fr.reads_primary, fr.reads_standby);
    fflush(stdout);
    assert_true(fenced_phase.old_checked);
    assert_int_equal(fenced_phase.old_rows_after_fault, 0);
    assert_int_equal(fenced_phase.lost_acked, 0);
    assert_int_equal(fenced_phase.failed + fenced_phase.unknown, 0);
    /* Everything the old primary holds: only writes reported unknown may be
     * missing from node 1, and nothing written after the kill is there. */
    noodle_fo_result whole = verify_writes(fo, 1, 0, 0, r.fault_effective, "in all");
    printf(
        "  the restarted old primary holds %ld rows: %ld not on node 1 (%ld of them not reported "
        "unknown to the writer), %ld written after the kill\n",
        whole.rows_old, whole.old_only_rows, whole.old_only_not_unknown,
        whole.old_rows_after_fault);
    fflush(stdout);
    assert_true(whole.old_checked);
    assert_int_equal(whole.old_only_not_unknown, 0);
    assert_int_equal(whole.acked_on_old_only, 0);
    assert_int_equal(whole.old_rows_after_fault, 0);
    assert_int_equal(whole.lost_acked, 0);
    /* nor read from it: it was the only other node, so the primary served all */
    assert_int_equal(fr.reads_uncoded, 0);
    assert_int_equal(fr.reads_failed, 0);
    assert_int_equal(fr.reads_standby, 0);
    assert_true(fr.reads_primary > 0);

    /* 2. It rejoins as a standby of node 1: unfenced, used for reads only. */
    int64_t usable_at = rejoin_as_usable_standby(fo, 0, 1);
    load_for(fo, 1, 1500);
    noodle_fo_result rr = reads_between(fo, usable_at, noodle_fo_now());
    print_reads("after the rejoin (PREFER_STANDBY)", &rr);
    noodle_fo_result cs = cluster_state(fo, 0, 0);
    printf("  cluster: primary node %d, failovers %llu\n", cs.final_primary, cs.failovers);
    fflush(stdout);
    assert_int_equal(rr.reads_uncoded, 0);
    assert_int_equal(rr.reads_failed, 0);
    assert_true(rr.reads_standby > 0);
    /* only one standby, and it is healthy: every read is served in recovery */
    assert_int_equal(rr.reads_standby, rr.reads_ok);
    /* writes: all on node 1, none failed (a write routed to the standby
     * would have been refused with 5009) */
    assert_writes_unaffected(fo, 1, usable_at, "after the rejoin");
    assert_int_equal(cs.final_primary, 1);
}

/* The failback policy again, one cycle later: node 1, promoted in the first
 * failover, is the primary that fails in the second (node 0, rejoined as its
 * synchronous standby, is promoted). When node 1 comes back as a primary
 * (restart after kill -9: crash recovery), it claims primary while node 0 is:
 * it must be fenced, exactly as node 0 was after the first failover. */
static void second_failover_fences_the_node_promoted_in_the_first_when_it_comes_back(void **state) {
    char out[256];
    (void)state;
    noodle_fo_options o = options_with(NOODLE_FO_KILL);
    noodle_fo *fo = open_driver(&o);
    noodle_pg_server *s1 = noodle_fo_server(fo, 1);
    (void)failover_passes(fo);

    printf("==== second cycle: node 0 rejoins as node 1's synchronous standby ====\n");
    (void)rejoin_as_usable_standby(fo, 0, 1);
    /* node 0 synchronous for node 1, so that the no-loss check of the second
     * failover is about the cluster and not PostgreSQL's async window */
    admin_ok(s1, "ALTER SYSTEM SET synchronous_standby_names = '*'", NULL, 0);
    admin_ok(s1, "ALTER SYSTEM SET synchronous_commit = on", NULL, 0);
    admin_ok(s1, "SELECT pg_reload_conf()", NULL, 0);
    int64_t until = noodle_test_now_ms() + 10000;
    do {
        admin_ok(s1, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'", out,
                 sizeof out);
        if (strcmp(out, "1") == 0) break;
        usleep(10000);
    } while (noodle_test_now_ms() < until);
    assert_string_equal(out, "1");

    noodle_fo_set_nodes(fo, 1, 0);
    (void)failover_passes(fo);

    printf("==== node 1 (killed primary of the second cycle) restarts as a primary ====\n");
    bool heard;
    int64_t restarted = restart_as_primary(fo, 1, is_up, "the cluster hears from it", &heard);
    usleep(300000); /* a few probe rounds to settle */
    noodle_fo_set_load(fo, 16, 0);
    load_for(fo, 0, 1000);
    assert_true(heard);
    assert_fenced_and_primary_kept(fo, 0, 1, restarted,
                                   "its promotion in the first cycle still counts as 'seen moving "
                                   "from standby to primary'");
}

/* After the read-only scenario's failover, the old primary is made writable
 * again (default_transaction_read_only = off): two writable primaries. The
 * promoted node 1 holds every write since the failover; node 0 must be
 * fenced, as any old primary that claims primary while another node is. */
static void read_only_old_primary_made_writable_again_is_fenced(void **state) {
    char msg[1024];
    (void)state;
    noodle_fo_options o = options_with(NOODLE_FO_READ_ONLY);
    noodle_fo *fo = open_driver(&o);
    (void)failover_passes(fo);

    printf("==== the read-only old primary (node 0) is made writable again ====\n");
    if (noodle_pg_server_set_read_only(noodle_fo_server(fo, 0), false, msg, sizeof msg) != 0)
        fail_msg("set_read_only(false): %s", msg);
    int64_t writable = noodle_fo_now();
    noodle_fo_set_load(fo, 16, 0);
    load_for(fo, 1, 1500);
    assert_fenced_and_primary_kept(fo, 1, 0, writable,
                                   "a read-only -> primary change counts as a promotion");
}

int main(void) {
    /* NOODLE_TEST_FILTER=pattern runs only the matching tests (cmocka's filter) */
    const char *filter = getenv("NOODLE_TEST_FILTER");
    if (filter != NULL && filter[0] != '\0') cmocka_set_test_filter(filter);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(killed_primary_fails_over_with_no_acknowledged_write_lost),
        cmocka_unit_test(frozen_primary_fails_over_and_is_fenced_after_thaw),
        cmocka_unit_test(partitioned_primary_fails_over_and_is_fenced_when_the_link_returns),
        cmocka_unit_test(read_only_primary_is_demoted_and_takes_no_write_after_the_switch),
        cmocka_unit_test_teardown(standby_killed_and_restarted_under_reads_loses_no_read_silently,
                                  close_fo),
        cmocka_unit_test_teardown(lagging_standby_serves_stale_reads_and_never_writes, close_fo),
        cmocka_unit_test_teardown(
            old_primary_back_as_primary_is_fenced_and_after_rejoining_serves_reads_only, close_fo),
        cmocka_unit_test_teardown(read_only_old_primary_made_writable_again_is_fenced, close_fo),
        cmocka_unit_test_teardown(
            second_failover_fences_the_node_promoted_in_the_first_when_it_comes_back, close_fo),
    };
    return cmocka_run_group_tests_name("failover_postgres", tests, NULL, NULL);
}
