/* A failover scenario driver over real PostgreSQL servers (tests and benchmarks).
 *
 * noodle_fo_open() starts a primary and one or two streaming standbys
 * (tests/support/pg_server.h), creates `ledger(id bigint primary key, client
 * int)` on the primary, and opens a noodle_cluster over the servers' conninfos
 * (node i of the cluster is server i: 0 the first primary, 1.. the standbys)
 * with small probe intervals, and an observer that records every cluster
 * event with its time.
 *
 * The load: `writers` threads each loop `INSERT INTO ledger(id, client)
 * VALUES (?, ?)` with unique ids through noodle_cluster_execute(ROUTE_PRIMARY,
 * deadline = now + op_timeout_ms), and record every operation: acknowledged,
 * failed (a definite code), or unknown (4015 or any connection-fatal code),
 * with its invoke and complete times. Operation i writes id i + 1. Optional
 * `readers` loop `SELECT pg_is_in_recovery(), count(*) FROM ledger` through
 * ROUTE_PREFER_STANDBY with NOODLE_EXEC_READ, recording which kind of node
 * answered and the row count it saw. A sampler thread counts the cluster's
 * backends (pg_stat_activity rows with its application_name) on one node
 * every ~20 ms.
 *
 * noodle_fo_failover() runs one scenario: load, the fault at fault_at_ms,
 * promotion of standby 1 promote_after_ms later, for FREEZE / PARTITION a
 * thaw / heal thaw_after_promote_ms after the promotion, the load stopped
 * run_after_promote_ms after the promotion; then every id is read back on
 * the promoted node (fresh libpq connection) and on the old primary when it
 * is reachable, and the result is filled in. noodle_fo_result_check() applies
 * the pass criteria.
 *
 * Times are CLOCK_MONOTONIC nanoseconds (noodle_clock_now(NULL)), the same
 * clock as the cluster's events.
 *
 * Not thread-safe: one thread drives a noodle_fo (the load runs on its own
 * threads).
 */
#ifndef NOODLE_TEST_FAILOVER_DRIVER_H
#define NOODLE_TEST_FAILOVER_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "noodle/backend.h"
#include "noodle/cluster.h"
#include "pg_server.h"

typedef enum noodle_fo_fault {
    NOODLE_FO_KILL = 0,  /* SIGKILL the primary (noodle_pg_server_kill) */
    NOODLE_FO_FREEZE,    /* SIGSTOP the primary and its children; thawed later */
    NOODLE_FO_PARTITION, /* cut the link of the primary's network namespace; healed later */
    NOODLE_FO_READ_ONLY, /* default_transaction_read_only = on on the primary */
} noodle_fo_fault;
const char *noodle_fo_fault_name(noodle_fo_fault f); /* "kill", "freeze", ... */

typedef struct noodle_fo_options {
    /* servers */
    int standbys;           /* 1 or 2 (default 1) */
    bool synchronous;       /* standby 1 is synchronous (default true) */
    bool primary_own_netns; /* the primary runs in its own network namespace */
    /* the cluster */
    int max_connections;        /* per node (default 20) */
    int acquire_timeout_ms;     /* the pools' timeout (default 3000) */
    int probe_interval_ms;      /* default 200 */
    int fast_probe_interval_ms; /* default 25 */
    int probe_timeout_ms;       /* default 400 */
    int breaker_threshold;      /* default 2 */
    int breaker_backoff_max_ms; /* default 1000 */
    bool retry_reads;           /* default true */
    /* the load */
    int writers;        /* default 16 */
    int readers;        /* default 0 */
    int op_timeout_ms;  /* deadline of one execute (default 1000) */
    int think_us;       /* pause of a writer or reader between operations (default 0) */
    size_t op_capacity; /* most writes recorded (default 400000) */
    /* the failover run */
    noodle_fo_fault fault;
    int old_primary;           /* the node the fault hits (default 0) */
    int promote;               /* the standby promoted (default 1) */
    int fault_at_ms;           /* after the load started (default 1000) */
    int promote_after_ms;      /* after the fault took effect (default 500) */
    int thaw_after_promote_ms; /* FREEZE / PARTITION: thaw / heal then (1000; < 0: never) */
    int run_after_promote_ms;  /* the load stops this long after promotion (default 3000) */
    bool verbose;              /* progress lines on stderr */
} noodle_fo_options;

/* Fill in the defaults above. */
void noodle_fo_options_init(noodle_fo_options *o);

/* One recorded write. id = index + 1. */
typedef enum noodle_fo_status {
    NOODLE_FO_PENDING = 0,
    NOODLE_FO_OK,
    NOODLE_FO_FAIL,
    NOODLE_FO_UNKNOWN
} noodle_fo_status;
typedef struct noodle_fo_op {
    int64_t invoke, complete; /* ns */
    int code;                 /* 0 when acknowledged */
    int client;
    _Atomic int status; /* noodle_fo_status; set last (release) */
} noodle_fo_op;

/* One recorded read. */
typedef struct noodle_fo_read {
    int64_t invoke, complete;
    int code;             /* 0: answered */
    int served_by;        /* 1 a standby (in recovery), 0 the primary, -1 no answer */
    int64_t rows;         /* count(*) FROM ledger it saw, -1 no answer */
    int64_t acked_before; /* acknowledged writes completed before it was invoked */
} noodle_fo_read;

typedef struct noodle_fo_event {
    noodle_cluster_event_type type;
    int64_t time;
    int node, code;
    noodle_role old_role, role;
    noodle_breaker_state breaker;
    uint64_t generation;
} noodle_fo_event;

#define NOODLE_FO_MAX_CODES 24
#define NOODLE_FO_MAX_TIMELINE 40

typedef struct noodle_fo_code_count {
    int code;
    long count;
    char first_message[200];
} noodle_fo_code_count;

typedef struct noodle_fo_result {
    char scenario[64];
    int old_node, new_node; /* the failed primary and the promoted standby */
    char replication[256];  /* pg_stat_replication on the primary at the start */
    char primary_host[64];  /* the old primary's TCP address (10.200.* inside a namespace) */
    bool skipped;
    char skip_reason[256];
    char error[512]; /* the run could not be carried out: why ("" when it ran) */
    /* writes */
    long ops, acked, failed, unknown;
    bool log_full;
    noodle_fo_code_count codes[NOODLE_FO_MAX_CODES]; /* failed and unknown, by code */
    size_t ncodes;
    long uncoded;              /* failures whose code is not in the catalogue */
    long lost_acked;           /* acknowledged, missing on the new primary */
    long acked_on_old_only;    /* acknowledged, on the old primary and not on the new */
    long old_rows_after_fault; /* rows on the old primary written after the fault took effect */
    long old_rows_after_fault_known; /* ... of which the writer was not told "unknown" */
    long old_rows_after_thaw;  /* rows on the old primary written after it was thawed / healed */
    long old_only_rows;        /* rows on the old primary missing on the new one */
    long old_only_not_unknown; /* ... of which the writer was not told "unknown" */
    long definite_applied;     /* failed with a definite code, yet on a node */
    long unknown_applied, unknown_not_applied;
    long rows_new, rows_old;
    bool old_checked;
    char old_note[160];
    /* timings (ms; -1 when not observed) */
    double fault_call_ms; /* how long the fault function took */
    double detect_ms;     /* fault -> first primary_lost / node_down / demoted / failover */
    char detect_event[32];
    double promote_call_ms;           /* noodle_pg_server_promote */
    double promote_to_first_write_ms; /* promotion complete -> first acknowledged write */
    double outage_ms;                 /* fault -> first acknowledged write after it */
    double failover_event_ms;         /* fault -> the cluster's failover event to the new primary */
    /* connections on the new primary */
    int conns_baseline; /* the cluster's backends there before the fault (peak) */
    int conns_peak;     /* peak after the fault */
    long samples, sample_errors;
    long long pool_opened; /* its pool's `opened` during recovery (fault -> end) */
    long long pool_peak_total;
    int max_connections;
    /* the cluster at the end */
    int final_primary;
    unsigned long long failovers, demotions, generation, probes, probe_failures, reads_retried;
    noodle_role old_role;
    bool old_up, old_fenced;
    noodle_breaker_state old_breaker;
    bool demoted_event, fenced_event;
    /* reads (when readers ran) */
    long reads, reads_ok, reads_failed, reads_uncoded, reads_standby, reads_primary;
    /* the event timeline, relative to the fault */
    size_t nevents;
    noodle_fo_event timeline[NOODLE_FO_MAX_TIMELINE];
    int64_t t0;              /* the fault's time, for the timeline */
    int64_t fault_effective; /* when the fault function returned */
    int64_t promoted_at;     /* when the promotion completed (0: none) */
    int64_t thawed_at;       /* when the old primary was thawed / healed (0: never) */
    double
        back_to_up_ms; /* thaw / heal -> the cluster sees the old primary answer (-1: not seen) */
    double fenced_ms;  /* fault -> the old primary fenced (-1: not fenced) */
} noodle_fo_result;

typedef struct noodle_fo noodle_fo;

/* Start the servers, create the ledger, open the cluster (waiting for a
 * primary). 0, or -1 with the reason in errbuf (nothing left running). */
int noodle_fo_open(const noodle_fo_options *o, noodle_fo **out, char *errbuf, size_t errlen);
/* Stop the load, close the cluster, thaw and stop every server. Accepts NULL. */
void noodle_fo_close(noodle_fo *fo);

noodle_cluster *noodle_fo_cluster(noodle_fo *fo);
noodle_pg_server *noodle_fo_server(noodle_fo *fo, int i); /* = cluster node i; NULL when none */
int noodle_fo_nservers(const noodle_fo *fo);
const char *noodle_fo_app(const noodle_fo *fo); /* the cluster's application_name */
const noodle_fo_options *noodle_fo_opts(const noodle_fo *fo);

/* Start the writers, readers and the sampler (counting on node sample_node).
 * The logs keep what earlier loads recorded. 0 or -1 (threads). */
int noodle_fo_load_start(noodle_fo *fo, int sample_node, char *errbuf, size_t errlen);
/* Change which node the next noodle_fo_failover faults and which it promotes. */
void noodle_fo_set_nodes(noodle_fo *fo, int old_primary, int promote);
/* Change the number of writers and readers of the next load_start. */
void noodle_fo_set_load(noodle_fo *fo, int writers, int readers);
/* Stop and join them. */
void noodle_fo_load_stop(noodle_fo *fo);
/* Sleep until the given time (ns). */
void noodle_fo_sleep_until(int64_t t);
int64_t noodle_fo_now(void);

/* Run the options' fault scenario end to end on an open noodle_fo (see the
 * top), on nodes old_primary and promote of the options (set them with
 * noodle_fo_set_nodes for a second failover on the same servers). Fills res; 0 when it ran
 * (res->error empty), -1 when a step failed (res->error says which). The cluster and servers stay
 * open. */
int noodle_fo_failover(noodle_fo *fo, noodle_fo_result *res);

/* Read back every id on node new_primary (and on old_primary when >= 0,
 * through its unix socket, which works while it is partitioned) and fill in
 * the checks of res: op counts, codes, lost / misplaced writes. Only writes
 * invoked at or after `since` are looked at (0: all); rows on the old primary
 * whose write was invoked at or after res->fault_effective (when non-zero)
 * count as written after the fault, at or after res->thawed_at (when
 * non-zero) as written after the thaw. 0, or -1 with res->error set. */
int noodle_fo_verify(noodle_fo *fo, int new_primary, int old_primary, int64_t since,
                     noodle_fo_result *res);
/* Fill the cluster-state part of res (metrics, node old_node). */
void noodle_fo_cluster_state(noodle_fo *fo, int old_node, noodle_fo_result *res);
/* Fill the read counts of res from reads invoked in [from, to). */
void noodle_fo_read_counts(noodle_fo *fo, int64_t from, int64_t to, noodle_fo_result *res);

/* The logs (valid until the next load_start or close). */
const noodle_fo_op *noodle_fo_ops(noodle_fo *fo, size_t *n);
const noodle_fo_read *noodle_fo_reads(noodle_fo *fo, size_t *n);
/* The first message recorded for a failure code (writes and reads), or "". */
const char *noodle_fo_first_message(noodle_fo *fo, int code);
/* Copy up to max recorded events; returns how many were recorded in all. */
size_t noodle_fo_events(noodle_fo *fo, noodle_fo_event *out, size_t max);
/* Staleness of a read that saw `rows` rows while `acked_before` writes had
 * been acknowledged: how long before its invoke time the oldest acknowledged
 * write it missed completed (0 when it missed none), in ms. */
double noodle_fo_read_staleness_ms(noodle_fo *fo, const noodle_fo_read *r);

/* open + failover + close; a PARTITION run where network namespaces are not
 * available is returned with res->skipped and the reason. 0 or -1. */
int noodle_fo_run(const noodle_fo_options *o, noodle_fo_result *res);

/* The pass criteria of scenarios 1-4: zero acknowledged writes lost, none
 * accepted by a non-primary, every failure coded, no definite failure
 * applied, promotion -> first acknowledged write <= 1000 ms, the cluster's
 * primary is the promoted node; at most max_connections + 2 of the
 * cluster's connections on the new primary; FREEZE / PARTITION: the old primary fenced
 * after it came back; READ_ONLY: a demotion reported. true when all hold;
 * otherwise the failed criteria in why. */
bool noodle_fo_result_check(const noodle_fo_result *r, const noodle_fo_options *o, char *why,
                            size_t len);
/* A human-readable block. */
void noodle_fo_result_print(FILE *f, const noodle_fo_result *r);

#endif
