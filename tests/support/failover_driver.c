/* A failover scenario driver over real PostgreSQL servers: see failover_driver.h.
 *
 * Invariants
 *  1. Operation i of the write log writes id i + 1; its slot is claimed with
 *     an atomic counter before the statement is sent, filled by the writer
 *     alone, and its status is stored last (release): a reader of the log
 *     after noodle_fo_load_stop sees complete records.
 *  2. Nothing here calls back into the cluster from its observer: the
 *     observer only appends to the event log under fo->lock.
 *  3. Evidence comes from the servers: ids are read back on each node with
 *     fresh connections, connection counts from pg_stat_activity.
 */
#include "failover_driver.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "noodle/clock.h"
#include "noodle/config.h"
#include "noodle/error.h"

#define MAX_SERVERS 3
#define MAX_THREADS 128
#define MAX_SAMPLES 20000
#define MAX_EVENTS 8192
#define READ_CAPACITY 400000

typedef struct sample {
    int64_t t;
    int n;
} sample;

typedef struct worker {
    struct noodle_fo *fo;
    int index;
    bool reader;
} worker;

struct noodle_fo {
    noodle_fo_options o;
    noodle_pg_server *servers[MAX_SERVERS];
    int nservers;
    noodle_cluster *cl;
    char app[64];

    pthread_mutex_t lock; /* events, first messages, samples */
    noodle_fo_event *events;
    size_t nevents, events_dropped;
    noodle_fo_code_count messages[NOODLE_FO_MAX_CODES]; /* the first message of each code */
    size_t nmessages;

    noodle_fo_op *ops;
    size_t op_cap;
    _Atomic size_t next_op;
    _Atomic long acked_count;
    noodle_fo_read *reads;
    _Atomic size_t next_read;
    _Atomic bool log_full;

    _Atomic bool stop;
    worker workers[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    int nthreads;
    bool loaded;

    pthread_t sampler;
    bool sampler_running;
    int sample_node;
    sample *samples;
    size_t nsamples;
    long sample_errors;

    bool frozen[MAX_SERVERS], cut[MAX_SERVERS];
    char replication[256]; /* pg_stat_replication of the first primary at the start */

    int64_t *acked_sorted; /* completion times of acknowledged writes, sorted (staleness) */
    size_t nacked_sorted, acked_sorted_ops;
};

/* ---- small helpers --------------------------------------------------------------------------- */

int64_t noodle_fo_now(void) { return noodle_clock_now(NULL); }

void noodle_fo_sleep_until(int64_t t) { noodle_clock_sleep_until(NULL, t); }

static double ms_between(int64_t from, int64_t to) { return (double)(to - from) / 1e6; }

static void set_msg(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_msg(char *buf, size_t len, const char *fmt, ...) {
    if (buf == NULL || len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

static void progress(const noodle_fo *fo, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void progress(const noodle_fo *fo, const char *fmt, ...) {
    if (!fo->o.verbose) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "failover: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

const char *noodle_fo_fault_name(noodle_fo_fault f) {
    switch (f) {
    case NOODLE_FO_KILL: return "kill";
    case NOODLE_FO_FREEZE: return "freeze";
    case NOODLE_FO_PARTITION: return "partition";
    case NOODLE_FO_READ_ONLY: return "read-only";
    }
    return "unknown";
}

void noodle_fo_options_init(noodle_fo_options *o) {
    memset(o, 0, sizeof *o);
    o->standbys = 1;
    o->synchronous = true;
    o->max_connections = 20;
    o->acquire_timeout_ms = 3000;
    o->probe_interval_ms = 200;
    o->fast_probe_interval_ms = 25;
    o->probe_timeout_ms = 400;
    o->breaker_threshold = 2;
    o->breaker_backoff_max_ms = 1000;
    o->retry_reads = true;
    o->writers = 16;
    o->op_timeout_ms = 1000;
    o->op_capacity = 400000;
    o->fault = NOODLE_FO_KILL;
    o->old_primary = 0;
    o->promote = 1;
    o->fault_at_ms = 1000;
    o->promote_after_ms = 500;
    o->thaw_after_promote_ms = 1000;
    o->run_after_promote_ms = 3000;
}

noodle_cluster *noodle_fo_cluster(noodle_fo *fo) { return fo->cl; }
noodle_pg_server *noodle_fo_server(noodle_fo *fo, int i) {
    return i >= 0 && i < fo->nservers ? fo->servers[i] : NULL;
}
int noodle_fo_nservers(const noodle_fo *fo) { return fo->nservers; }
const char *noodle_fo_app(const noodle_fo *fo) { return fo->app; }
const noodle_fo_options *noodle_fo_opts(const noodle_fo *fo) { return &fo->o; }

/* Remember the first message of each failure code (and count nothing). */
static void note_message(noodle_fo *fo, int code, const noodle_error *err) {
    pthread_mutex_lock(&fo->lock);
    for (size_t i = 0; i < fo->nmessages; i++) {
        if (fo->messages[i].code == code) {
            pthread_mutex_unlock(&fo->lock);
            return;
        }
    }
    if (fo->nmessages < NOODLE_FO_MAX_CODES) {
        noodle_fo_code_count *m = &fo->messages[fo->nmessages++];
        m->code = code;
        m->count = 0;
        noodle_error_format(err, m->first_message, sizeof m->first_message);
    }
    pthread_mutex_unlock(&fo->lock);
}

/* ---- the observer (invariant 2) -------------------------------------------------------------- */

static void observer(const noodle_cluster_event *ev, void *arg) {
    noodle_fo *fo = arg;
    pthread_mutex_lock(&fo->lock);
    if (fo->nevents < MAX_EVENTS)
        fo->events[fo->nevents++] = (noodle_fo_event){.type = ev->type,
                                                      .time = ev->time,
                                                      .node = ev->node,
                                                      .code = ev->code,
                                                      .old_role = ev->old_role,
                                                      .role = ev->role,
                                                      .breaker = ev->breaker,
                                                      .generation = ev->generation};
    else
        fo->events_dropped++;
    pthread_mutex_unlock(&fo->lock);
}

const char *noodle_fo_first_message(noodle_fo *fo, int code) {
    const char *m = "";
    pthread_mutex_lock(&fo->lock);
    for (size_t i = 0; i < fo->nmessages; i++)
        if (fo->messages[i].code == code) m = fo->messages[i].first_message;
    pthread_mutex_unlock(&fo->lock);
    return m; /* entries are never changed once written */
}

size_t noodle_fo_events(noodle_fo *fo, noodle_fo_event *out, size_t max) {
    pthread_mutex_lock(&fo->lock);
    size_t n = fo->nevents;
    if (out != NULL) memcpy(out, fo->events, (n < max ? n : max) * sizeof *out);
    pthread_mutex_unlock(&fo->lock);
    return n;
}

/* ---- servers and the cluster ----------------------------------------------------------------- */

/* Run sql on s through its unix socket; -1 with the message in errbuf. */
static int admin(noodle_pg_server *s, const char *sql, char *errbuf, size_t errlen) {
    char out[1024];
    if (noodle_pg_server_query(s, sql, out, sizeof out) != 0) {
        set_msg(errbuf, errlen, "%s: %s", sql, out);
        return -1;
    }
    return 0;
}

static int start_servers(noodle_fo *fo, char *errbuf, size_t errlen) {
    char msg[4096];
    noodle_pg_server_options po = {.own_netns = fo->o.primary_own_netns};
    if (noodle_pg_server_start(&po, &fo->servers[0], msg, sizeof msg) != 0) {
        set_msg(errbuf, errlen, "cannot start the primary: %s", msg);
        return -1;
    }
    fo->nservers = 1;
    for (int i = 1; i <= fo->o.standbys; i++) {
        char name[32];
        snprintf(name, sizeof name, "fo_standby%d", i);
        noodle_pg_server_options so = {
            .standby_of = fo->servers[0], .name = name, .synchronous = i == 1 && fo->o.synchronous};
        if (noodle_pg_server_start(&so, &fo->servers[i], msg, sizeof msg) != 0) {
            set_msg(errbuf, errlen, "cannot start standby %d: %s", i, msg);
            return -1;
        }
        fo->nservers = i + 1;
    }
    if (noodle_pg_server_wait_streaming(fo->servers[0], fo->o.standbys, 10000, msg, sizeof msg) !=
        0) {
        set_msg(errbuf, errlen, "standbys not streaming: %s", msg);
        return -1;
    }
    if (noodle_pg_server_query(
            fo->servers[0],
            "SELECT string_agg(application_name || ' ' || sync_state || ' over ' "
            "|| coalesce(host(client_addr), 'a unix socket'), ', ' ORDER BY "
            "application_name) FROM pg_stat_replication",
            fo->replication, sizeof fo->replication) != 0)
        fo->replication[0] = '\0';
    if (admin(fo->servers[0], "CREATE TABLE ledger (id bigint PRIMARY KEY, client int NOT NULL)",
              errbuf, errlen) != 0)
        return -1;
    /* The table must be on every standby before reads or a promotion. */
    for (int i = 1; i < fo->nservers; i++) {
        char out[256] = "";
        int64_t until = noodle_fo_now() + NOODLE_SEC(10);
        while (noodle_pg_server_query(fo->servers[i], "SELECT to_regclass('ledger') IS NOT NULL",
                                      out, sizeof out) == 0 &&
               strcmp(out, "t") != 0 && noodle_fo_now() < until)
            usleep(5000);
        if (strcmp(out, "t") != 0) {
            set_msg(errbuf, errlen, "the ledger table did not reach standby %d: %s", i, out);
            return -1;
        }
    }
    return 0;
}

static int open_cluster(noodle_fo *fo, char *errbuf, size_t errlen) {
    char *const envp[] = {NULL};
    noodle_config_options co = NOODLE_CONFIG_OPTIONS_INIT;
    noodle_config cfg;
    noodle_error err;
    co.backend = "postgres";
    co.url = noodle_pg_server_conninfo(fo->servers[0]);
    co.max_connections = fo->o.max_connections;
    co.timeout_ms = fo->o.acquire_timeout_ms;
    co.connect_timeout_ms = 2000;
    co.validation_timeout_ms = 500;
    if (noodle_config_load(&cfg, envp, &co, &err) != 0) {
        char text[600];
        noodle_error_format(&err, text, sizeof text);
        set_msg(errbuf, errlen, "configuration: %s", text);
        return -1;
    }
    const char *endpoints[MAX_SERVERS];
    for (int i = 0; i < fo->nservers; i++)
        endpoints[i] = noodle_pg_server_conninfo(fo->servers[i]);
    noodle_cluster_options o = NOODLE_CLUSTER_OPTIONS_INIT;
    o.config = &cfg;
    o.endpoints = endpoints;
    o.nendpoints = (size_t)fo->nservers;
    o.backend = noodle_backend_postgres();
    o.application_name = fo->app;
    o.seed = 20240601;
    o.probe_interval_ms = fo->o.probe_interval_ms;
    o.fast_probe_interval_ms = fo->o.fast_probe_interval_ms;
    o.probe_timeout_ms = fo->o.probe_timeout_ms;
    o.breaker_threshold = fo->o.breaker_threshold;
    o.breaker_backoff_max_ms = fo->o.breaker_backoff_max_ms;
    o.retry_reads = fo->o.retry_reads;
    o.wait_for_primary = true;
    int rc = noodle_cluster_open(&o, &fo->cl, &err);
    noodle_config_free(&cfg);
    if (rc == 0) rc = noodle_cluster_observe(fo->cl, observer, fo, &err);
    if (rc != 0) {
        char text[600];
        noodle_error_format(&err, text, sizeof text);
        set_msg(errbuf, errlen, "cluster: %s", text);
        return -1;
    }
    return 0;
}

int noodle_fo_open(const noodle_fo_options *o, noodle_fo **out, char *errbuf, size_t errlen) {
    static _Atomic int counter;
    *out = NULL;
    if (o->standbys < 1 || o->standbys > MAX_SERVERS - 1 || o->writers + o->readers > MAX_THREADS ||
        o->op_capacity == 0) {
        set_msg(errbuf, errlen, "bad options: 1-%d standbys, at most %d threads, a log",
                MAX_SERVERS - 1, MAX_THREADS);
        return -1;
    }
    noodle_fo *fo = calloc(1, sizeof *fo);
    if (fo == NULL) {
        set_msg(errbuf, errlen, "out of memory");
        return -1;
    }
    fo->o = *o;
    pthread_mutex_init(&fo->lock, NULL);
    snprintf(fo->app, sizeof fo->app, "noodle_fo_%d_%d", (int)getpid(),
             atomic_fetch_add(&counter, 1));
    fo->op_cap = o->op_capacity;
    fo->ops = calloc(fo->op_cap, sizeof *fo->ops);
    fo->reads = calloc(READ_CAPACITY, sizeof *fo->reads);
    fo->events = calloc(MAX_EVENTS, sizeof *fo->events);
    fo->samples = calloc(MAX_SAMPLES, sizeof *fo->samples);
    if (fo->ops == NULL || fo->reads == NULL || fo->events == NULL || fo->samples == NULL) {
        set_msg(errbuf, errlen, "out of memory for the logs");
        noodle_fo_close(fo);
        return -1;
    }
    int64_t t0 = noodle_fo_now();
    if (start_servers(fo, errbuf, errlen) != 0 || open_cluster(fo, errbuf, errlen) != 0) {
        noodle_fo_close(fo);
        return -1;
    }
    progress(fo, "%d servers and the cluster (%s) ready in %.0f ms", fo->nservers, fo->app,
             ms_between(t0, noodle_fo_now()));
    *out = fo;
    return 0;
}

void noodle_fo_close(noodle_fo *fo) {
    if (fo == NULL) return;
    noodle_fo_load_stop(fo);
    /* a frozen or cut server would hold the cluster's shutdown */
    for (int i = 0; i < fo->nservers; i++) {
        if (fo->frozen[i]) (void)noodle_pg_server_thaw(fo->servers[i]);
        if (fo->cut[i]) (void)noodle_pg_server_partition(fo->servers[i], false);
        fo->frozen[i] = fo->cut[i] = false;
    }
    noodle_cluster_close(fo->cl);
    for (int i = 0; i < fo->nservers; i++)
        noodle_pg_server_stop(fo->servers[i]);
    pthread_mutex_destroy(&fo->lock);
    free(fo->ops);
    free(fo->reads);
    free(fo->events);
    free(fo->samples);
    free(fo->acked_sorted);
    free(fo);
}

/* ---- the load -------------------------------------------------------------------------------- */

static void pause_us(int us) {
    if (us > 0) usleep((useconds_t)us);
}

static void write_one(noodle_fo *fo, int client) {
    size_t i = atomic_fetch_add(&fo->next_op, 1);
    if (i >= fo->op_cap) {
        atomic_store(&fo->log_full, true);
        atomic_store(&fo->stop, true);
        return;
    }
    noodle_fo_op *op = &fo->ops[i];
    noodle_value params[2] = {noodle_int64((int64_t)i + 1), noodle_int64(client)};
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_error_clear(&err);
    op->client = client;
    op->invoke = noodle_fo_now();
    int rc = noodle_cluster_execute(fo->cl, NOODLE_ROUTE_PRIMARY, 0,
                                    "INSERT INTO ledger(id, client) VALUES (?, ?)", params, 2,
                                    op->invoke + NOODLE_MS(fo->o.op_timeout_ms), &rows, &err);
    op->complete = noodle_fo_now();
    noodle_rows_free(rows);
    op->code = rc;
    noodle_fo_status st = NOODLE_FO_OK;
    if (rc != 0) {
        st = rc == NOODLE_E_OUTCOME_UNKNOWN || noodle_code_is_connection_fatal(rc)
                 ? NOODLE_FO_UNKNOWN
                 : NOODLE_FO_FAIL;
        note_message(fo, rc, &err);
    } else {
        atomic_fetch_add(&fo->acked_count, 1);
    }
    atomic_store_explicit(&op->status, (int)st, memory_order_release);
    /* a refusal comes back at once: do not spin on it */
    if (rc != 0) usleep(2000);
}

static void read_one(noodle_fo *fo) {
    size_t i = atomic_fetch_add(&fo->next_read, 1);
    if (i >= READ_CAPACITY) {
        atomic_store(&fo->log_full, true);
        atomic_store(&fo->stop, true);
        return;
    }
    noodle_fo_read *r = &fo->reads[i];
    noodle_rows *rows = NULL;
    noodle_error err;
    noodle_error_clear(&err);
    r->served_by = -1;
    r->rows = -1;
    r->acked_before = atomic_load(&fo->acked_count);
    r->invoke = noodle_fo_now();
    int rc = noodle_cluster_execute(fo->cl, NOODLE_ROUTE_PREFER_STANDBY, NOODLE_EXEC_READ,
                                    "SELECT pg_is_in_recovery(), count(*) FROM ledger", NULL, 0,
                                    r->invoke + NOODLE_MS(fo->o.op_timeout_ms), &rows, &err);
    r->complete = noodle_fo_now();
    if (rc == 0) {
        const noodle_value *a = noodle_rows_count(rows) == 1 ? noodle_rows_get(rows, 0, 0) : NULL;
        const noodle_value *b = noodle_rows_count(rows) == 1 ? noodle_rows_get(rows, 0, 1) : NULL;
        if (a != NULL && b != NULL && a->type == NOODLE_TYPE_INT64 &&
            b->type == NOODLE_TYPE_INT64) {
            r->served_by = a->v.i != 0;
            r->rows = b->v.i;
        } else {
            rc = -1; /* an answer we cannot read: counted as uncoded */
        }
    } else {
        note_message(fo, rc, &err);
    }
    noodle_rows_free(rows);
    r->code = rc;
    if (rc != 0) usleep(2000);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    noodle_fo *fo = w->fo;
    while (!atomic_load(&fo->stop)) {
        if (w->reader)
            read_one(fo);
        else
            write_one(fo, w->index);
        pause_us(fo->o.think_us);
    }
    return NULL;
}

/* The cluster's backends on one node, every ~20 ms, on a connection of its own. */
static void *sampler_main(void *arg) {
    noodle_fo *fo = arg;
    noodle_pg_server *s = fo->servers[fo->sample_node];
    char conninfo[600], sql[256];
    snprintf(conninfo, sizeof conninfo, "%s application_name=noodle_fo_sampler connect_timeout=2",
             noodle_pg_server_conninfo(s));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'",
             fo->app);
    PGconn *c = NULL;
    while (!atomic_load(&fo->stop)) {
        if (c == NULL || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = PQconnectdb(conninfo);
        }
        PGresult *res = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
        int64_t t = noodle_fo_now();
        pthread_mutex_lock(&fo->lock);
        if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            if (fo->nsamples < MAX_SAMPLES)
                fo->samples[fo->nsamples++] = (sample){t, atoi(PQgetvalue(res, 0, 0))};
        } else {
            fo->sample_errors++;
        }
        pthread_mutex_unlock(&fo->lock);
        PQclear(res);
        usleep(20000);
    }
    PQfinish(c);
    return NULL;
}

int noodle_fo_load_start(noodle_fo *fo, int sample_node, char *errbuf, size_t errlen) {
    if (fo->loaded) {
        set_msg(errbuf, errlen, "the load is already running");
        return -1;
    }
    atomic_store(&fo->stop, false);
    fo->nthreads = 0;
    fo->loaded = true;
    fo->sample_node = sample_node >= 0 && sample_node < fo->nservers ? sample_node : 0;
    pthread_mutex_lock(&fo->lock);
    fo->nsamples = 0; /* the samples are of one load and one node */
    fo->sample_errors = 0;
    pthread_mutex_unlock(&fo->lock);
    if (pthread_create(&fo->sampler, NULL, sampler_main, fo) != 0) {
        set_msg(errbuf, errlen, "cannot start the sampler");
        fo->loaded = false;
        return -1;
    }
    fo->sampler_running = true;
    for (int i = 0; i < fo->o.writers + fo->o.readers; i++) {
        worker *w = &fo->workers[i];
        *w = (worker){.fo = fo, .index = i, .reader = i >= fo->o.writers};
        if (pthread_create(&fo->threads[i], NULL, worker_main, w) != 0) {
            set_msg(errbuf, errlen, "cannot start thread %d: %s", i, strerror(errno));
            noodle_fo_load_stop(fo);
            return -1;
        }
        fo->nthreads++;
    }
    return 0;
}

void noodle_fo_set_nodes(noodle_fo *fo, int old_primary, int promote) {
    fo->o.old_primary = old_primary;
    fo->o.promote = promote;
}

void noodle_fo_set_load(noodle_fo *fo, int writers, int readers) {
    if (writers >= 0 && readers >= 0 && writers + readers <= MAX_THREADS) {
        fo->o.writers = writers;
        fo->o.readers = readers;
    }
}

void noodle_fo_load_stop(noodle_fo *fo) {
    if (fo == NULL || !fo->loaded) return;
    atomic_store(&fo->stop, true);
    for (int i = 0; i < fo->nthreads; i++)
        pthread_join(fo->threads[i], NULL);
    fo->nthreads = 0;
    if (fo->sampler_running) pthread_join(fo->sampler, NULL);
    fo->sampler_running = false;
    fo->loaded = false;
}

const noodle_fo_op *noodle_fo_ops(noodle_fo *fo, size_t *n) {
    size_t k = atomic_load(&fo->next_op);
    *n = k < fo->op_cap ? k : fo->op_cap;
    return fo->ops;
}

const noodle_fo_read *noodle_fo_reads(noodle_fo *fo, size_t *n) {
    size_t k = atomic_load(&fo->next_read);
    *n = k < READ_CAPACITY ? k : READ_CAPACITY;
    return fo->reads;
}

/* ---- reading back ---------------------------------------------------------------------------- */

/* Mark present[id - 1] for an id read back; count it in *outside when it is
 * not in 1..n. */
static void mark_id(long long id, unsigned char *present, size_t n, long *outside) {
    if (id >= 1 && (size_t)id <= n)
        present[id - 1] = 1;
    else
        (*outside)++;
}

/* Mark present[id - 1] for every id of ledger on s, through a fresh TCP
 * connection. rows: all rows; outside: ids not in 1..n. */
static int ids_over_tcp(noodle_pg_server *s, unsigned char *present, size_t n, long *rows,
                        long *outside, char *errbuf, size_t errlen) {
    char conninfo[600];
    snprintf(conninfo, sizeof conninfo, "%s application_name=noodle_fo_verify connect_timeout=5",
             noodle_pg_server_conninfo(s));
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        set_msg(errbuf, errlen, "reading back: cannot connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    PGresult *res = PQexec(c, "SELECT id FROM ledger");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        set_msg(errbuf, errlen, "reading back: %s", PQresultErrorMessage(res));
        PQclear(res);
        PQfinish(c);
        return -1;
    }
    *rows = PQntuples(res);
    *outside = 0;
    for (int r = 0; r < PQntuples(res); r++)
        mark_id(strtoll(PQgetvalue(res, r, 0), NULL, 10), present, n, outside);
    PQclear(res);
    PQfinish(c);
    return 0;
}

/* The same through the server's unix socket (noodle_pg_server_query): one
 * string_agg, its length checked against count(*). */
static int ids_over_socket(noodle_pg_server *s, unsigned char *present, size_t n, long *rows,
                           long *outside, char *errbuf, size_t errlen) {
    char count[256];
    if (noodle_pg_server_query(s, "SELECT count(*) FROM ledger", count, sizeof count) != 0) {
        set_msg(errbuf, errlen, "reading back the old primary: %s", count);
        return -1;
    }
    long want = atol(count);
    size_t cap = (size_t)want * 21 + 64;
    char *buf = malloc(cap);
    if (buf == NULL) {
        set_msg(errbuf, errlen, "out of memory reading back");
        return -1;
    }
    if (noodle_pg_server_query(s, "SELECT coalesce(string_agg(id::text, ','), '') FROM ledger", buf,
                               cap) != 0) {
        set_msg(errbuf, errlen, "reading back the old primary: %.300s", buf);
        free(buf);
        return -1;
    }
    *rows = 0;
    *outside = 0;
    for (char *p = buf; *p != '\0';) {
        char *end;
        long long id = strtoll(p, &end, 10);
        if (end == p) break;
        (*rows)++;
        mark_id(id, present, n, outside);
        p = *end == ',' ? end + 1 : end;
    }
    free(buf);
    if (*rows != want) {
        set_msg(errbuf, errlen, "reading back the old primary: %ld ids parsed, count(*) said %ld",
                *rows, want);
        return -1;
    }
    return 0;
}

static void count_code(noodle_fo *fo, noodle_fo_result *res, int code) {
    for (size_t i = 0; i < res->ncodes; i++) {
        if (res->codes[i].code == code) {
            res->codes[i].count++;
            return;
        }
    }
    if (res->ncodes == NOODLE_FO_MAX_CODES) return;
    noodle_fo_code_count *c = &res->codes[res->ncodes++];
    memset(c, 0, sizeof *c);
    c->code = code;
    c->count = 1;
    pthread_mutex_lock(&fo->lock);
    for (size_t i = 0; i < fo->nmessages; i++)
        if (fo->messages[i].code == code)
            memcpy(c->first_message, fo->messages[i].first_message, sizeof c->first_message);
    pthread_mutex_unlock(&fo->lock);
}

int noodle_fo_verify(noodle_fo *fo, int new_primary, int old_primary, int64_t since,
                     noodle_fo_result *res) {
    size_t n;
    const noodle_fo_op *ops = noodle_fo_ops(fo, &n);
    res->log_full = atomic_load(&fo->log_full);
    unsigned char *on_new = calloc(n + 1, 1), *on_old = calloc(n + 1, 1);
    if (on_new == NULL || on_old == NULL) {
        free(on_new);
        free(on_old);
        set_msg(res->error, sizeof res->error, "out of memory verifying");
        return -1;
    }
    long outside = 0, outside_old = 0;
    int rc = ids_over_tcp(fo->servers[new_primary], on_new, n, &res->rows_new, &outside, res->error,
                          sizeof res->error);
    res->old_checked = false;
    if (rc == 0 && old_primary >= 0) {
        char why[512] = "";
        if (ids_over_socket(fo->servers[old_primary], on_old, n, &res->rows_old, &outside_old, why,
                            sizeof why) == 0) {
            res->old_checked = true;
            set_msg(res->old_note, sizeof res->old_note, "read back through its unix socket");
        } else {
            set_msg(res->old_note, sizeof res->old_note, "not readable: %.140s", why);
        }
    } else if (old_primary < 0) {
        set_msg(res->old_note, sizeof res->old_note, "not checked (unreachable in this scenario)");
    }
    if (rc == 0 && (outside != 0 || outside_old != 0)) {
        set_msg(res->error, sizeof res->error,
                "ids nobody wrote: %ld on the new primary, %ld on the old one", outside,
                outside_old);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const noodle_fo_op *op = &ops[i];
        int st = atomic_load_explicit(&op->status, memory_order_acquire);
        if (op->invoke < since) continue;
        bool nw = on_new[i] != 0, old = on_old[i] != 0;
        res->ops++;
        if (st != NOODLE_FO_OK) {
            count_code(fo, res, op->code);
            if (noodle_code_name(op->code) == NULL) res->uncoded++;
        }
        switch (st) {
        case NOODLE_FO_OK:
            res->acked++;
            if (!nw) res->lost_acked++;
            if (!nw && old) res->acked_on_old_only++;
            break;
        case NOODLE_FO_FAIL:
            res->failed++;
            if (nw || old) res->definite_applied++;
            break;
        case NOODLE_FO_UNKNOWN:
            res->unknown++;
            if (nw || old)
                res->unknown_applied++;
            else
                res->unknown_not_applied++;
            break;
        default: /* never completed: cannot happen after load_stop */ res->uncoded++; break;
        }
        if (old) {
            if (!nw) {
                res->old_only_rows++;
                if (st != NOODLE_FO_UNKNOWN) res->old_only_not_unknown++;
            }
            if (res->fault_effective != 0 && op->invoke >= res->fault_effective) {
                res->old_rows_after_fault++;
                if (st != NOODLE_FO_UNKNOWN) res->old_rows_after_fault_known++;
            }
            if (res->thawed_at != 0 && op->invoke >= res->thawed_at) res->old_rows_after_thaw++;
        }
    }
    free(on_new);
    free(on_old);
    return rc;
}

/* ---- the cluster's view, reads, staleness ---------------------------------------------------- */

void noodle_fo_cluster_state(noodle_fo *fo, int old_node, noodle_fo_result *res) {
    noodle_cluster_metrics m;
    noodle_cluster_get_metrics(fo->cl, &m);
    res->final_primary = m.primary;
    res->failovers = m.failovers;
    res->demotions = m.demotions;
    res->generation = m.generation;
    res->probes = m.probes;
    res->probe_failures = m.probe_failures;
    res->reads_retried = m.reads_retried;
    noodle_cluster_node_info info;
    noodle_error err;
    if (old_node >= 0 && noodle_cluster_node(fo->cl, (size_t)old_node, &info, &err) == 0) {
        res->old_role = info.role;
        res->old_up = info.up;
        res->old_fenced = info.fenced;
        res->old_breaker = info.breaker;
    }
    /* events since the fault: the timeline, demotions and fences */
    pthread_mutex_lock(&fo->lock);
    res->nevents = 0;
    for (size_t i = 0; i < fo->nevents; i++) {
        const noodle_fo_event *e = &fo->events[i];
        if (e->time < res->t0) continue;
        if (e->type == NOODLE_CLUSTER_EV_DEMOTED) res->demoted_event = true;
        if (e->type == NOODLE_CLUSTER_EV_FENCED && e->node == old_node) res->fenced_event = true;
        if (res->nevents < NOODLE_FO_MAX_TIMELINE) res->timeline[res->nevents++] = *e;
    }
    pthread_mutex_unlock(&fo->lock);
}

void noodle_fo_read_counts(noodle_fo *fo, int64_t from, int64_t to, noodle_fo_result *res) {
    size_t n;
    const noodle_fo_read *r = noodle_fo_reads(fo, &n);
    for (size_t i = 0; i < n; i++) {
        if (r[i].invoke < from || r[i].invoke >= to) continue;
        res->reads++;
        if (r[i].code == 0) {
            res->reads_ok++;
            if (r[i].served_by == 1) res->reads_standby++;
            if (r[i].served_by == 0) res->reads_primary++;
        } else {
            res->reads_failed++;
            if (noodle_code_name(r[i].code) == NULL) res->reads_uncoded++;
        }
    }
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

double noodle_fo_read_staleness_ms(noodle_fo *fo, const noodle_fo_read *r) {
    size_t n;
    const noodle_fo_op *ops = noodle_fo_ops(fo, &n);
    if (fo->acked_sorted == NULL || fo->acked_sorted_ops != n) {
        free(fo->acked_sorted);
        fo->acked_sorted = malloc((n + 1) * sizeof *fo->acked_sorted);
        fo->nacked_sorted = 0;
        if (fo->acked_sorted == NULL) return -1;
        for (size_t i = 0; i < n; i++)
            if (atomic_load(&ops[i].status) == NOODLE_FO_OK)
                fo->acked_sorted[fo->nacked_sorted++] = ops[i].complete;
        qsort(fo->acked_sorted, fo->nacked_sorted, sizeof *fo->acked_sorted, cmp_i64);
        fo->acked_sorted_ops = n;
    }
    if (r->rows < 0 || r->rows >= r->acked_before || (size_t)r->rows >= fo->nacked_sorted) return 0;
    double ms = ms_between(fo->acked_sorted[r->rows], r->invoke);
    return ms > 0 ? ms : 0;
}

/* ---- one failover scenario ------------------------------------------------------------------- */

static int apply_fault(noodle_fo *fo, int node, char *errbuf, size_t errlen) {
    noodle_pg_server *s = fo->servers[node];
    switch (fo->o.fault) {
    case NOODLE_FO_KILL:
        if (noodle_pg_server_kill(s, SIGKILL) != 0) {
            set_msg(errbuf, errlen, "kill -9 of the primary failed");
            return -1;
        }
        return 0;
    case NOODLE_FO_FREEZE:
        fo->frozen[node] = true;
        if (noodle_pg_server_freeze(s) != 0) {
            set_msg(errbuf, errlen, "freezing the primary failed");
            return -1;
        }
        return 0;
    case NOODLE_FO_PARTITION:
        fo->cut[node] = true;
        if (noodle_pg_server_partition(s, true) != 0) {
            set_msg(errbuf, errlen, "cutting the primary's link failed");
            return -1;
        }
        return 0;
    case NOODLE_FO_READ_ONLY: return noodle_pg_server_set_read_only(s, true, errbuf, errlen);
    }
    set_msg(errbuf, errlen, "unknown fault %d", (int)fo->o.fault);
    return -1;
}

static int undo_fault(noodle_fo *fo, int node, char *errbuf, size_t errlen) {
    noodle_pg_server *s = fo->servers[node];
    if (fo->frozen[node]) {
        fo->frozen[node] = false;
        if (noodle_pg_server_thaw(s) != 0) {
            set_msg(errbuf, errlen, "thawing the old primary failed");
            return -1;
        }
    }
    if (fo->cut[node]) {
        fo->cut[node] = false;
        if (noodle_pg_server_partition(s, false) != 0) {
            set_msg(errbuf, errlen, "healing the old primary's link failed");
            return -1;
        }
    }
    return 0;
}

static void fill_timings(noodle_fo *fo, int target, noodle_fo_result *res) {
    size_t n;
    const noodle_fo_op *ops = noodle_fo_ops(fo, &n);
    int64_t first_ack = 0;
    for (size_t i = 0; i < n; i++) {
        if (atomic_load(&ops[i].status) != NOODLE_FO_OK || ops[i].invoke < res->fault_effective)
            continue;
        if (first_ack == 0 || ops[i].complete < first_ack) first_ack = ops[i].complete;
    }
    res->outage_ms = first_ack ? ms_between(res->t0, first_ack) : -1;
    res->promote_to_first_write_ms =
        first_ack && res->promoted_at ? ms_between(res->promoted_at, first_ack) : -1;
    /* promoted_at is when our poll saw pg_is_in_recovery() false; the
     * cluster's prober can see it first, and a write acknowledged by the
     * new primary proves the promotion was complete then: 0 ms, not "none" */
    if (first_ack && res->promoted_at && res->promote_to_first_write_ms < 0)
        res->promote_to_first_write_ms = 0;
    res->detect_ms = res->failover_event_ms = -1;
    pthread_mutex_lock(&fo->lock);
    for (size_t i = 0; i < fo->nevents; i++) {
        const noodle_fo_event *e = &fo->events[i];
        if (e->time < res->t0) continue;
        bool detect = e->type == NOODLE_CLUSTER_EV_PRIMARY_LOST ||
                      e->type == NOODLE_CLUSTER_EV_NODE_DOWN ||
                      e->type == NOODLE_CLUSTER_EV_DEMOTED || e->type == NOODLE_CLUSTER_EV_FAILOVER;
        if (detect && res->detect_ms < 0) {
            res->detect_ms = ms_between(res->t0, e->time);
            snprintf(res->detect_event, sizeof res->detect_event, "%s",
                     noodle_cluster_event_name(e->type));
        }
        if (e->type == NOODLE_CLUSTER_EV_FAILOVER && e->node == target &&
            res->failover_event_ms < 0)
            res->failover_event_ms = ms_between(res->t0, e->time);
        if (e->type == NOODLE_CLUSTER_EV_FENCED && e->node == res->old_node && res->fenced_ms < 0)
            res->fenced_ms = ms_between(res->t0, e->time);
        if (e->type == NOODLE_CLUSTER_EV_NODE_UP && e->node == res->old_node &&
            res->thawed_at != 0 && e->time >= res->thawed_at && res->back_to_up_ms < 0)
            res->back_to_up_ms = ms_between(res->thawed_at, e->time);
    }
    /* connections the cluster holds on the new primary: before and after the fault */
    res->conns_baseline = res->conns_peak = -1;
    for (size_t i = 0; i < fo->nsamples; i++) {
        const sample *s = &fo->samples[i];
        if (s->t < res->t0 && s->n > res->conns_baseline) res->conns_baseline = s->n;
        if (s->t >= res->t0 && s->n > res->conns_peak) res->conns_peak = s->n;
    }
    res->samples = (long)fo->nsamples;
    res->sample_errors = fo->sample_errors;
    pthread_mutex_unlock(&fo->lock);
}

/* Poll the cluster's view of node until it answers again (up); false after timeout_ms. */
static bool wait_up(noodle_fo *fo, int node, int timeout_ms) {
    int64_t until = noodle_fo_now() + NOODLE_MS(timeout_ms);
    for (;;) {
        noodle_cluster_node_info info;
        noodle_error err;
        if (noodle_cluster_node(fo->cl, (size_t)node, &info, &err) == 0 && info.up) return true;
        if (noodle_fo_now() >= until) return false;
        usleep(5000);
    }
}

static void result_init(noodle_fo_result *res, const noodle_fo_options *o) {
    memset(res, 0, sizeof *res);
    snprintf(res->scenario, sizeof res->scenario, "%s", noodle_fo_fault_name(o->fault));
    res->max_connections = o->max_connections;
    res->old_node = o->old_primary;
    res->new_node = o->promote;
    res->fault_call_ms = res->detect_ms = res->promote_call_ms = -1;
    res->promote_to_first_write_ms = res->outage_ms = res->failover_event_ms = -1;
    res->back_to_up_ms = res->fenced_ms = -1;
    res->conns_baseline = res->conns_peak = -1;
    res->final_primary = -1;
}

int noodle_fo_failover(noodle_fo *fo, noodle_fo_result *res) {
    const int old = fo->o.old_primary, target = fo->o.promote;
    char msg[1024];
    result_init(res, &fo->o);
    snprintf(res->replication, sizeof res->replication, "%s", fo->replication);
    if (old >= 0 && old < fo->nservers)
        snprintf(res->primary_host, sizeof res->primary_host, "%s",
                 noodle_pg_server_host(fo->servers[old]));
    if (old < 0 || old >= fo->nservers || target < 0 || target >= fo->nservers || old == target) {
        set_msg(res->error, sizeof res->error, "bad nodes: old primary %d, promote %d", old,
                target);
        return -1;
    }
    if (noodle_fo_load_start(fo, target, res->error, sizeof res->error) != 0) return -1;
    int64_t start = noodle_fo_now();
    noodle_fo_sleep_until(start + NOODLE_MS(fo->o.fault_at_ms));

    noodle_cluster_node_info before;
    noodle_error err;
    memset(&before, 0, sizeof before);
    if (noodle_cluster_node(fo->cl, (size_t)target, &before, &err) != 0) before.pool.opened = 0;
    res->t0 = noodle_fo_now();
    int rc = apply_fault(fo, old, msg, sizeof msg);
    res->fault_effective = noodle_fo_now();
    res->fault_call_ms = ms_between(res->t0, res->fault_effective);
    if (rc != 0) {
        set_msg(res->error, sizeof res->error, "fault: %s", msg);
        noodle_fo_load_stop(fo);
        return -1;
    }
    progress(fo, "%s applied in %.1f ms", noodle_fo_fault_name(fo->o.fault), res->fault_call_ms);

    noodle_fo_sleep_until(res->fault_effective + NOODLE_MS(fo->o.promote_after_ms));
    int64_t p0 = noodle_fo_now();
    rc = noodle_pg_server_promote(fo->servers[target], 10000, msg, sizeof msg);
    res->promoted_at = noodle_fo_now();
    res->promote_call_ms = ms_between(p0, res->promoted_at);
    if (rc != 0) {
        set_msg(res->error, sizeof res->error, "promote: %s", msg);
        res->promoted_at = 0;
        noodle_fo_load_stop(fo);
        return -1;
    }
    progress(fo, "standby promoted in %.1f ms", res->promote_call_ms);

    bool comes_back = (fo->o.fault == NOODLE_FO_FREEZE || fo->o.fault == NOODLE_FO_PARTITION) &&
                      fo->o.thaw_after_promote_ms >= 0;
    if (comes_back) {
        noodle_fo_sleep_until(res->promoted_at + NOODLE_MS(fo->o.thaw_after_promote_ms));
        rc = undo_fault(fo, old, msg, sizeof msg);
        res->thawed_at = noodle_fo_now();
        if (rc != 0) {
            set_msg(res->error, sizeof res->error, "%s", msg);
            noodle_fo_load_stop(fo);
            return -1;
        }
        progress(fo, "old primary back (%s)",
                 fo->o.fault == NOODLE_FO_FREEZE ? "thawed" : "healed");
    }
    noodle_fo_sleep_until(res->promoted_at + NOODLE_MS(fo->o.run_after_promote_ms));
    noodle_fo_load_stop(fo);
    /* the fence is only exercised once the cluster hears from the old primary again */
    if (comes_back) (void)wait_up(fo, old, 3000);
    progress(fo, "load stopped; verifying");

    noodle_cluster_node_info after;
    memset(&after, 0, sizeof after);
    if (noodle_cluster_node(fo->cl, (size_t)target, &after, &err) != 0) after.pool.opened = 0;
    res->pool_opened = (long long)(after.pool.opened - before.pool.opened);
    res->pool_peak_total = after.pool.peak_total;

    /* The old primary is readable unless it was killed (or is still frozen). */
    int old_check = fo->o.fault == NOODLE_FO_KILL || fo->frozen[old] ? -1 : old;
    rc = noodle_fo_verify(fo, target, old_check, 0, res);
    if (rc == 0 && old_check < 0 && fo->o.fault == NOODLE_FO_KILL)
        set_msg(res->old_note, sizeof res->old_note, "not checked: killed (kill -9)");
    fill_timings(fo, target, res);
    noodle_fo_cluster_state(fo, old, res);
    noodle_fo_read_counts(fo, 0, INT64_MAX, res);
    return rc;
}

int noodle_fo_run(const noodle_fo_options *o, noodle_fo_result *res) {
    noodle_fo_options opts = *o;
    result_init(res, o);
    if (opts.fault == NOODLE_FO_PARTITION) {
        char why[512];
        if (!noodle_pg_server_netns_available(why, sizeof why)) {
            res->skipped = true;
            set_msg(res->skip_reason, sizeof res->skip_reason,
                    "network namespaces are not available: %s", why);
            return 0;
        }
        opts.primary_own_netns = true;
    }
    noodle_fo *fo = NULL;
    char errbuf[1024];
    if (noodle_fo_open(&opts, &fo, errbuf, sizeof errbuf) != 0) {
        set_msg(res->error, sizeof res->error, "setup: %s", errbuf);
        return -1;
    }
    int rc = noodle_fo_failover(fo, res);
    noodle_fo_close(fo);
    return rc;
}

/* ---- pass criteria and the report ------------------------------------------------------------ */

static void add_why(char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_why(char *why, size_t len, const char *fmt, ...) {
    size_t used = strlen(why);
    if (used + 3 >= len) return;
    if (used > 0) {
        strcat(why, "; ");
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + used, len - used, fmt, ap);
    va_end(ap);
}

bool noodle_fo_result_check(const noodle_fo_result *r, const noodle_fo_options *o, char *why,
                            size_t len) {
    if (len > 0) why[0] = '\0';
    if (r->skipped) return true;
    if (r->error[0] != '\0') add_why(why, len, "the run failed: %s", r->error);
    if (r->acked == 0) add_why(why, len, "no write was acknowledged at all");
    if (r->lost_acked != 0) add_why(why, len, "%ld acknowledged writes lost", r->lost_acked);
    if (r->acked_on_old_only != 0 || r->old_only_not_unknown != 0)
        add_why(why, len, "%ld rows only on the old primary were not reported unknown",
                r->old_only_not_unknown);
    if (r->uncoded != 0) add_why(why, len, "%ld failures without a catalogue code", r->uncoded);
    if (r->reads_uncoded != 0)
        add_why(why, len, "%ld reads failed without a catalogue code", r->reads_uncoded);
    if (r->definite_applied != 0)
        add_why(why, len, "%ld writes reported failed (definite code) were applied",
                r->definite_applied);
    if (r->promote_to_first_write_ms < 0 && r->error[0] == '\0')
        add_why(why, len, "no write was acknowledged after the fault");
    if (r->promote_to_first_write_ms > 1000)
        add_why(why, len, "promotion -> first acknowledged write took %.0f ms (> 1000)",
                r->promote_to_first_write_ms);
    if (r->conns_peak > r->max_connections + 2)
        add_why(why, len,
                "%d of the cluster's connections on the new primary (> max_connections "
                "%d + 2)",
                r->conns_peak, r->max_connections);
    if (r->final_primary != r->new_node)
        add_why(why, len, "the cluster's primary at the end is node %d, not the promoted node %d",
                r->final_primary, r->new_node);
    switch (o->fault) {
    case NOODLE_FO_KILL: break;
    case NOODLE_FO_FREEZE:
    case NOODLE_FO_PARTITION:
        if (o->thaw_after_promote_ms >= 0) {
            if (!r->old_checked)
                add_why(why, len, "the old primary was not read back (%s)", r->old_note);
            if (!r->old_up)
                add_why(why, len,
                        "the cluster never heard from the old primary after it came back: "
                        "the fence was not exercised");
            if (!r->old_fenced)
                add_why(why, len, "the old primary is not fenced after it came back (role %s)",
                        noodle_role_name(r->old_role));
            if (r->old_rows_after_thaw != 0)
                add_why(why, len, "%ld writes landed on the old primary after it came back",
                        r->old_rows_after_thaw);
        }
        if (r->old_rows_after_fault_known != 0)
            add_why(why, len,
                    "%ld writes with a definite outcome landed on the old primary after "
                    "the fault",
                    r->old_rows_after_fault_known);
        break;
    case NOODLE_FO_READ_ONLY:
        if (!r->old_checked)
            add_why(why, len, "the old primary was not read back (%s)", r->old_note);
        if (r->old_rows_after_fault != 0)
            add_why(why, len, "%ld writes landed on the old primary after it became read-only",
                    r->old_rows_after_fault);
        if (r->demotions == 0 && !r->demoted_event)
            add_why(why, len, "no demotion reported (metrics.demotions 0, no demoted event)");
        break;
    }
    return why[0] == '\0';
}

static const char *ms_text(double ms, char *buf, size_t len) {
    if (ms < 0 && ms > -0.5) ms = 0;
    if (ms == -1)
        snprintf(buf, len, "n/a");
    else
        snprintf(buf, len, "%.1f ms", ms);
    return buf;
}

void noodle_fo_result_print(FILE *f, const noodle_fo_result *r) {
    char a[32], b[32], c[32], d[32], e[32], g[32];
    fprintf(f, "==== failover scenario: %s (node %d fails, node %d promoted) ====\n", r->scenario,
            r->old_node, r->new_node);
    if (r->skipped) {
        fprintf(f, "  SKIPPED: %s\n", r->skip_reason);
        return;
    }
    if (r->error[0] != '\0') fprintf(f, "  ERROR: %s\n", r->error);
    fprintf(f, "  old primary at %s; replication at the start: %s\n", r->primary_host,
            r->replication[0] ? r->replication : "(unknown)");
    fprintf(
        f, "  writes: %ld ops, %ld acknowledged, %ld failed (definite), %ld unknown outcome%s\n",
        r->ops, r->acked, r->failed, r->unknown, r->log_full ? " (LOG FULL: load stopped)" : "");
    for (size_t i = 0; i < r->ncodes; i++) {
        const char *name = noodle_code_name(r->codes[i].code);
        fprintf(f, "    NOODLE-%d %s x%ld: %.160s\n", r->codes[i].code,
                name ? name : "(NOT IN CATALOGUE)", r->codes[i].count, r->codes[i].first_message);
    }
    fprintf(f,
            "  lost acknowledged writes: %ld; failures without a code: %ld; definite failures "
            "applied: %ld\n",
            r->lost_acked, r->uncoded, r->definite_applied);
    fprintf(f, "  unknown outcomes: %ld applied, %ld not applied\n", r->unknown_applied,
            r->unknown_not_applied);
    fprintf(f, "  rows: %ld on the new primary; old primary %s", r->rows_new, r->old_note);
    if (r->old_checked)
        fprintf(f,
                ": %ld rows, %ld only there (%ld not reported unknown), %ld written after the "
                "fault (%ld with a definite outcome), %ld after it came back",
                r->rows_old, r->old_only_rows, r->old_only_not_unknown, r->old_rows_after_fault,
                r->old_rows_after_fault_known, r->old_rows_after_thaw);
    fprintf(f, "\n");
    fprintf(f, "  timings: fault call %s; fault -> detection %s (%s); fault -> failover event %s\n",
            ms_text(r->fault_call_ms, a, sizeof a), ms_text(r->detect_ms, b, sizeof b),
            r->detect_event[0] ? r->detect_event : "none",
            ms_text(r->failover_event_ms, c, sizeof c));
    fprintf(f,
            "           promote call %s; promotion -> first acknowledged write %s; whole outage "
            "(fault -> first acknowledged write) %s\n",
            ms_text(r->promote_call_ms, d, sizeof d),
            ms_text(r->promote_to_first_write_ms, e, sizeof e), ms_text(r->outage_ms, g, sizeof g));
    fprintf(f, "           fault -> old primary fenced %s", ms_text(r->fenced_ms, a, sizeof a));
    if (r->thawed_at != 0)
        fprintf(f, "; old primary back (%s) -> the cluster hears from it again %s",
                strcmp(r->scenario, "freeze") == 0 ? "thawed" : "link healed",
                ms_text(r->back_to_up_ms, b, sizeof b));
    fprintf(f, "\n");
    fprintf(f,
            "  connections on the new primary (application_name): before the fault %d, peak after "
            "%d (max_connections %d; %ld samples, %ld failed); its pool opened %lld during "
            "recovery, peak_total %lld\n",
            r->conns_baseline, r->conns_peak, r->max_connections, r->samples, r->sample_errors,
            r->pool_opened, r->pool_peak_total);
    fprintf(f,
            "  cluster: primary node %d, failovers %llu, demotions %llu, generation %llu, probes "
            "%llu (%llu failed), reads retried %llu\n",
            r->final_primary, r->failovers, r->demotions, r->generation, r->probes,
            r->probe_failures, r->reads_retried);
    fprintf(
        f,
        "  old primary (node %d) as the cluster sees it: role %s, up %s, fenced %s, breaker %s\n",
        r->old_node, noodle_role_name(r->old_role), r->old_up ? "yes" : "no",
        r->old_fenced ? "yes" : "no", noodle_breaker_state_name(r->old_breaker));
    if (r->reads > 0)
        fprintf(f,
                "  reads: %ld, %ld ok (%ld by a standby, %ld by the primary), %ld failed (%ld "
                "uncoded)\n",
                r->reads, r->reads_ok, r->reads_standby, r->reads_primary, r->reads_failed,
                r->reads_uncoded);
    fprintf(f, "  events after the fault:");
    for (size_t i = 0; i < r->nevents; i++) {
        const noodle_fo_event *ev = &r->timeline[i];
        fprintf(f, "%s+%.1f %s n%d", i % 4 == 0 ? "\n    " : "  |  ", ms_between(r->t0, ev->time),
                noodle_cluster_event_name(ev->type), ev->node);
        if (ev->type == NOODLE_CLUSTER_EV_ROLE_CHANGED)
            fprintf(f, " %s->%s", noodle_role_name(ev->old_role), noodle_role_name(ev->role));
        if (ev->type == NOODLE_CLUSTER_EV_BREAKER)
            fprintf(f, " %s", noodle_breaker_state_name(ev->breaker));
        if (ev->code != 0) fprintf(f, " code %d", ev->code);
    }
    fprintf(f, "\n");
}
