/* Failover benchmark (release build, no fail points): scenarios 1-3 of
 * tests/support/failover_driver.h on real PostgreSQL servers.
 *
 * kill       SIGKILL of the primary, then its synchronous standby promoted
 * freeze     the primary and its children SIGSTOPped (no RST: sockets hang),
 *            the standby promoted, the old primary thawed a second later
 * partition  the primary in its own network namespace, its link cut, the
 *            standby (outside, synchronous, streaming over the link)
 *            promoted, the link healed a second later; skipped with the
 *            reason where network namespaces are not available
 *
 * Each run: 16 writers insert unique ids through noodle_cluster_execute
 * (ROUTE_PRIMARY, 1 s deadline per statement); the fault 1 s into the run;
 * promotion 500 ms after it; the load stops 3 s after the promotion; every
 * id is read back. Per run and per scenario (min / median / max): fault ->
 * detection (the cluster's first primary_lost / node_down / demoted /
 * failover event), promotion complete -> first acknowledged write, the whole
 * outage (fault -> first acknowledged write), connections on the new
 * primary (peak of its pg_stat_activity rows with the cluster's
 * application_name, sampled every 20 ms, and its pool's `opened` during
 * recovery), lost acknowledged writes, and errors by code.
 *
 * Targets (informative, printed PASS / MISS; the exit status is 0 unless a
 * run could not be carried out): promotion -> first acknowledged write <=
 * 1000 ms; no acknowledged write lost; connections <= max_connections + 2
 * (the prober holds one per node).
 *
 * Usage: bench_failover [repetitions] [kill] [freeze] [partition] [writers=N]
 *        (default: 3 repetitions of all three, 16 writers). With 16 writers
 *        and max_connections 20 the connection bound cannot be exceeded by
 *        the writers alone; writers=40 (more clients than connections)
 *        checks that recovery does not open a connection per waiting client.
 * Ends with one line:
 *   summary promote_to_first_write_ms_max=... lost_acknowledged_writes=...
 *           recovery_connections_max=...
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_NAME "bench_failover"
#include "bench_util.h"

#include "failover_driver.h"
#include "noodle/error.h"
#include "pg_server.h"

#define MAX_REPS 50
#define TARGET_PROMOTE_TO_WRITE_MS 1000.0
#define CONNECTION_SLACK 2

/* min / median / max of v[0..n) (sorted in place). */
static void print_stat(const char *name, double *v, int n) {
    if (n == 0) {
        printf("    %-44s n/a\n", name);
        return;
    }
    sort_doubles(v, n);
    double med = median_sorted(v, n);
    printf("    %-44s min %8.1f  median %8.1f  max %8.1f\n", name, v[0], med, v[n - 1]);
}

typedef struct totals {
    double promote_to_write_max;
    long lost;
    int conns_max;
    int runs, errors;
} totals;

/* Errors by code over the runs of one scenario. */
typedef struct code_total {
    int code;
    long count;
} code_total;

static void add_codes(code_total *ct, size_t *n, const noodle_fo_result *r) {
    for (size_t i = 0; i < r->ncodes; i++) {
        size_t k = 0;
        while (k < *n && ct[k].code != r->codes[i].code)
            k++;
        if (k == *n) {
            if (*n == NOODLE_FO_MAX_CODES * 2) continue;
            ct[(*n)++] = (code_total){r->codes[i].code, 0};
        }
        ct[k].count += r->codes[i].count;
    }
}

static int writers = 16;

static void bench_scenario(noodle_fo_fault fault, int reps, totals *t) {
    static double detect[MAX_REPS], p2w[MAX_REPS], outage[MAX_REPS], peak[MAX_REPS],
        opened[MAX_REPS];
    code_total codes[NOODLE_FO_MAX_CODES * 2];
    size_t ncodes = 0;
    int n = 0, nd = 0, np = 0, no = 0;
    long lost = 0, acked = 0, unknown = 0, failed = 0;
    printf("\n== %s: %d runs ==\n", noodle_fo_fault_name(fault), reps);
    for (int rep = 0; rep < reps; rep++) {
        noodle_fo_options o;
        noodle_fo_options_init(&o);
        o.fault = fault;
        o.writers = writers;
        noodle_fo_result r;
        int rc = noodle_fo_run(&o, &r);
        if (r.skipped) {
            printf("  SKIPPED: %s\n", r.skip_reason);
            return;
        }
        noodle_fo_result_print(stdout, &r);
        char why[2048];
        bool ok = noodle_fo_result_check(&r, &o, why, sizeof why);
        printf("  run %d: %s%s%s\n", rep + 1,
               ok ? "all checks passed" : "CHECKS FAILED: ", ok ? "" : why,
               rc != 0 ? " (the run could not be carried out)" : "");
        fflush(stdout);
        t->runs++;
        if (rc != 0) {
            t->errors++;
            continue;
        }
        n++;
        if (r.detect_ms >= 0) detect[nd++] = r.detect_ms;
        if (r.promote_to_first_write_ms != -1) {
            p2w[np++] = r.promote_to_first_write_ms;
            if (r.promote_to_first_write_ms > t->promote_to_write_max)
                t->promote_to_write_max = r.promote_to_first_write_ms;
        } else {
            t->promote_to_write_max = 1e9; /* no write after the fault at all */
        }
        if (r.outage_ms >= 0) outage[no++] = r.outage_ms;
        peak[n - 1] = r.conns_peak;
        opened[n - 1] = (double)r.pool_opened;
        if (r.conns_peak > t->conns_max) t->conns_max = r.conns_peak;
        lost += r.lost_acked;
        acked += r.acked;
        unknown += r.unknown;
        failed += r.failed;
        add_codes(codes, &ncodes, &r);
    }
    t->lost += lost;
    printf("  -- %s over %d runs --\n", noodle_fo_fault_name(fault), n);
    print_stat("fault -> detection (ms)", detect, nd);
    print_stat("promotion -> first acknowledged write (ms)", p2w, np);
    print_stat("whole outage: fault -> first ack (ms)", outage, no);
    print_stat("connections at the new primary (peak)", peak, n);
    print_stat("connections its pool opened in recovery", opened, n);
    printf("    writes: %ld acknowledged, %ld failed, %ld unknown outcome; lost acknowledged %ld\n",
           acked, failed, unknown, lost);
    printf("    errors by code:");
    if (ncodes == 0) printf(" none");
    for (size_t i = 0; i < ncodes; i++) {
        const char *name = noodle_code_name(codes[i].code);
        printf(" %d %s x%ld;", codes[i].code, name ? name : "(NOT IN CATALOGUE)", codes[i].count);
    }
    printf("\n");
    fflush(stdout);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_failover [repetitions (1-%d, default 3)] [kill] [freeze] [partition] "
            "[writers=N (1-100, default 16)]\n",
            MAX_REPS);
}

int main(int argc, char **argv) {
    int reps = 3;
    bool want[3] = {false, false, false};
    static const noodle_fo_fault faults[3] = {NOODLE_FO_KILL, NOODLE_FO_FREEZE,
                                              NOODLE_FO_PARTITION};
    for (int i = 1; i < argc; i++) {
        char *end;
        long v = strtol(argv[i], &end, 10);
        if (*end == '\0' && end != argv[i]) {
            if (v < 1 || v > MAX_REPS) {
                usage(stderr);
                return 2;
            }
            reps = (int)v;
        } else if (strncmp(argv[i], "writers=", 8) == 0) {
            writers = atoi(argv[i] + 8);
            if (writers < 1 || writers > 100) {
                usage(stderr);
                return 2;
            }
        } else if (strcmp(argv[i], "kill") == 0) {
            want[0] = true;
        } else if (strcmp(argv[i], "freeze") == 0) {
            want[1] = true;
        } else if (strcmp(argv[i], "partition") == 0) {
            want[2] = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!want[0] && !want[1] && !want[2]) want[0] = want[1] = want[2] = true;

    noodle_fo_options defaults;
    noodle_fo_options_init(&defaults);
    defaults.writers = writers;
    printf("failover benchmark: %d writers, statement deadline %d ms, fault at %d ms, promotion "
           "%d ms after it, load until %d ms after the promotion; max_connections %d, probe "
           "interval %d ms (fast %d ms), probe timeout %d ms, breaker threshold %d\n",
           defaults.writers, defaults.op_timeout_ms, defaults.fault_at_ms,
           defaults.promote_after_ms, defaults.run_after_promote_ms, defaults.max_connections,
           defaults.probe_interval_ms, defaults.fast_probe_interval_ms, defaults.probe_timeout_ms,
           defaults.breaker_threshold);

    totals t = {0, 0, 0, 0, 0};
    for (int i = 0; i < 3; i++)
        if (want[i]) bench_scenario(faults[i], reps, &t);

    int conn_limit = defaults.max_connections + CONNECTION_SLACK;
    printf("\n== targets ==\n");
    printf("  promotion -> first acknowledged write <= %.0f ms: max %.1f ms  %s\n",
           TARGET_PROMOTE_TO_WRITE_MS, t.promote_to_write_max,
           verdict(t.runs > 0 && t.promote_to_write_max <= TARGET_PROMOTE_TO_WRITE_MS));
    printf("  lost acknowledged writes = 0: %ld  %s\n", t.lost, verdict(t.lost == 0));
    printf("  connections at the new primary <= max_connections + %d (%d): max %d  %s\n",
           CONNECTION_SLACK, conn_limit, t.conns_max, verdict(t.conns_max <= conn_limit));
    if (t.errors > 0) printf("  %d of %d runs could not be carried out\n", t.errors, t.runs);
    printf("summary promote_to_first_write_ms_max=%.1f lost_acknowledged_writes=%ld "
           "recovery_connections_max=%d\n",
           t.promote_to_write_max, t.lost, t.conns_max);
    return t.errors > 0 ? 1 : 0;
}
