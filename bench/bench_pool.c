/* Connection pool benchmarks (release build, no fail points).
 *
 * cycle    acquire + release against a backend whose operations do nothing
 *          (HikariCP's JMH stub-driver benchmark): the pool's own cost. Peers
 *          in the same run: apr_reslist (apr-util), a naive pool (one mutex,
 *          one condition variable, a stack), and the floor (one lock/unlock
 *          pair of a shared pthread mutex per cycle). Pool of 20, warm;
 *          1, 2, 8 and 32 threads; best of 3 runs of CYCLE_RUN_MS each.
 * spike    HikariCP's spike test on the mock backend: connects take 150 ms,
 *          a query 2 ms; pool max 20, min_idle 5, warm; 50 threads arrive at
 *          once, each acquires, queries, releases. The pool should serve the
 *          burst from its idle connections instead of opening 15 more
 *          (HikariCP: peak 5-6). Three rounds, each on a fresh pool.
 * scaling  mock backend, 1 ms query, pool of 20, 1..256 client threads in a
 *          loop for SCALING_RUN_MS each: throughput, acquire-wait quantiles,
 *          and max wait / mean wait (FIFO hand-off keeps it small).
 *
 * Targets are printed PASS / MISS next to the numbers; they are informative
 * and never change the exit status.
 *
 * Usage: bench_pool [cycle] [spike] [scaling] [all]   (default: all)
 * Ends with one line: summary key=value ... (only the keys of the modes run):
 *   cycle:   ratio_vs_apr_min cycles_per_ms_8t ratio_vs_floor_1t
 *   spike:   spike_peak_connections spike_p99_wait_ms
 *   scaling: fairness_max_over_mean_256
 */
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_reslist.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_NAME "bench_pool"
#include "bench_util.h"

#include "noodle/noodle.h"
#include "noodle/pool.h"
#include "noodle_mock.h"

#define CYCLE_POOL_SIZE 20
#define CYCLE_RUN_MS 500
#define CYCLE_ROUNDS 3
#define SCALING_RUN_MS 1500
#define SPIKE_CLIENTS 50
#define SPIKE_ROUNDS 3

/* Targets (informative). */
#define TARGET_RATIO_VS_APR 3.0
#define TARGET_RATIO_VS_FLOOR_1T 3.0
#define TARGET_CYCLES_PER_MS_8T 30000.0
#define TARGET_SPIKE_PEAK 7

static const int cycle_threads[] = {1, 2, 8, 32};
#define CYCLE_POINTS ((int)(sizeof cycle_threads / sizeof cycle_threads[0]))
static const int scaling_threads[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
#define SCALING_POINTS ((int)(sizeof scaling_threads / sizeof scaling_threads[0]))

/* ---- helpers ----------------------------------------------------------------- */

/* Wait samples in ns, grown as needed; one per thread, merged at the end. */
typedef struct samples {
    int64_t *v;
    size_t n, cap;
} samples;

static void samples_add(samples *s, int64_t x) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        int64_t *v = realloc(s->v, cap * sizeof *v);
        if (v == NULL) die("out of memory");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

static void samples_append(samples *dst, const samples *src) {
    for (size_t i = 0; i < src->n; i++)
        samples_add(dst, src->v[i]);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct wait_stats {
    size_t n;
    double p50_ms, p99_ms, max_ms, mean_ms;
} wait_stats;

/* Nearest-rank quantiles; sorts s. */
static wait_stats samples_stats(samples *s) {
    wait_stats w = {0};
    if (s->n == 0) return w;
    qsort(s->v, s->n, sizeof *s->v, cmp_i64);
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += (double)s->v[i];
    size_t i50 = (s->n + 1) / 2 - 1, i99 = (99 * s->n + 99) / 100 - 1; /* ceil(q n) - 1 */
    w.n = s->n;
    w.p50_ms = (double)s->v[i50] / 1e6;
    w.p99_ms = (double)s->v[i99] / 1e6;
    w.max_ms = (double)s->v[s->n - 1] / 1e6;
    w.mean_ms = sum / (double)s->n / 1e6;
    return w;
}

/* ---- pools under test ----------------------------------------------------------- */

/* Open a warm noodle pool (blocking warm-up). backend NULL: found by name. */
static noodle_pool *open_pool(const char *backend_name, const char *url,
                              const noodle_backend_ops *backend, int64_t max_connections,
                              int64_t min_idle) {
    char *const envp[] = {NULL};
    noodle_config_options co = NOODLE_CONFIG_OPTIONS_INIT;
    co.max_connections = max_connections;
    co.min_idle = min_idle;
    co.timeout_ms = 30000;
    co.validation_bypass_ms = 500; /* the default, as in HikariCP */
    co.backend = backend_name;
    co.url = url;
    noodle_config cfg;
    noodle_error err;
    if (noodle_config_load(&cfg, envp, &co, &err) != 0) die_err("config", &err);
    /* designated: NOODLE_POOL_OPTIONS_INIT trips -Wmissing-field-initializers */
    noodle_pool_options po = {.struct_size = sizeof po,
                              .config = &cfg,
                              .backend = backend,
                              .application_name = "bench_pool",
                              .warm_up_blocking = true};
    noodle_pool *pool;
    if (noodle_pool_open(&po, &pool, &err) != 0) die_err("noodle_pool_open", &err);
    noodle_config_free(&cfg);
    return pool;
}

/* The stub backend: every operation succeeds at once. Each connection gets
 * its own small allocation as handle, so that handles stay distinct. */
static int stub_connect(const noodle_connect_params *p, void **handle, noodle_error *err) {
    (void)p;
    *handle = malloc(16);
    if (*handle == NULL) return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "stub connect");
    return 0;
}
static void stub_close(void *handle) { free(handle); }
static int stub_validate(void *handle, int64_t deadline, noodle_error *err) {
    (void)handle, (void)deadline, (void)err;
    return 0;
}
static int stub_execute(void *handle, const char *sql, const noodle_value *params, size_t nparams,
                        int64_t deadline, noodle_rows **out, noodle_error *err) {
    (void)handle, (void)sql, (void)params, (void)nparams, (void)deadline;
    return noodle_rows_new(0, out, err); /* the contract wants a result on success */
}
static int stub_begin(void *handle, noodle_isolation iso, int64_t deadline, noodle_error *err) {
    (void)handle, (void)iso, (void)deadline, (void)err;
    return 0;
}
static int stub_end(void *handle, int64_t deadline, noodle_error *err) {
    (void)handle, (void)deadline, (void)err;
    return 0;
}
static int stub_named(void *handle, const char *name, int64_t deadline, noodle_error *err) {
    (void)handle, (void)name, (void)deadline, (void)err;
    return 0;
}
static int stub_role(void *handle, int64_t deadline, noodle_role *out, noodle_error *err) {
    (void)handle, (void)deadline, (void)err;
    *out = NOODLE_ROLE_PRIMARY;
    return 0;
}
static int stub_metrics(void *handle, int64_t deadline, noodle_server_metrics *out,
                        noodle_error *err) {
    (void)handle, (void)deadline, (void)err;
    *out = (noodle_server_metrics){.database_size_bytes = -1,
                                   .role = NOODLE_ROLE_PRIMARY,
                                   .standby_count = -1,
                                   .replication_lag_bytes = -1,
                                   .replication_delay_ms = -1};
    snprintf(out->server_version, sizeof out->server_version, "stub 1");
    return 0;
}

static bool stub_in_transaction(void *handle) {
    (void)handle;
    return false;
}

static const noodle_backend_ops stub_ops = {
    .abi_version = NOODLE_BACKEND_ABI_VERSION,
    .struct_size = sizeof(noodle_backend_ops),
    .name = "stub",
    .connect = stub_connect,
    .close = stub_close,
    .validate = stub_validate,
    .execute = stub_execute,
    .begin = stub_begin,
    .commit = stub_end,
    .rollback = stub_end,
    .savepoint = stub_named,
    .release = stub_named,
    .rollback_to = stub_named,
    .role = stub_role,
    .metrics = stub_metrics,
    .in_transaction = stub_in_transaction,
};

/* apr. bench/CMakeLists.txt links apr-util only, and apr-util-1.pc lists
 * apr-1 under Requires.private, so libapr-1 is loaded (libaprutil needs it)
 * but not on our link line: the four libapr entry points used here are
 * looked up at run time. The reslist itself is called directly. */
typedef apr_status_t (*apr_initialize_fn)(void);
typedef void (*apr_terminate_fn)(void);
typedef apr_status_t (*apr_pool_create_ex_fn)(apr_pool_t **, apr_pool_t *, apr_abortfunc_t,
                                              apr_allocator_t *);
typedef void (*apr_pool_destroy_fn)(apr_pool_t *);
static struct {
    apr_initialize_fn initialize;
    apr_terminate_fn terminate;
    apr_pool_create_ex_fn pool_create_ex;
    apr_pool_destroy_fn pool_destroy;
} apr;

static void apr_resolve_one(void *fnptr, size_t size, const char *name) {
    void *sym = dlsym(RTLD_DEFAULT, name);
    if (sym == NULL) {
        void *lib = dlopen("libapr-1.so.0", RTLD_NOW | RTLD_GLOBAL);
        if (lib != NULL) sym = dlsym(lib, name);
    }
    if (sym == NULL) {
        fprintf(stderr, "bench_pool: cannot find %s in libapr-1\n", name);
        exit(1);
    }
    memcpy(fnptr, &sym, size);
}

static void apr_resolve(void) {
    apr_resolve_one(&apr.initialize, sizeof apr.initialize, "apr_initialize");
    apr_resolve_one(&apr.terminate, sizeof apr.terminate, "apr_terminate");
    apr_resolve_one(&apr.pool_create_ex, sizeof apr.pool_create_ex, "apr_pool_create_ex");
    apr_resolve_one(&apr.pool_destroy, sizeof apr.pool_destroy, "apr_pool_destroy");
}

static apr_status_t apr_res_construct(void **resource, void *params, apr_pool_t *pool) {
    (void)params, (void)pool;
    *resource = malloc(16);
    return *resource != NULL ? APR_SUCCESS : APR_ENOMEM;
}
static apr_status_t apr_res_destruct(void *resource, void *params, apr_pool_t *pool) {
    (void)params, (void)pool;
    free(resource);
    return APR_SUCCESS;
}

/* The naive pool: one mutex, one condition variable, a stack of resources. */
typedef struct naive_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n;
    void *free[CYCLE_POOL_SIZE];
    char storage[CYCLE_POOL_SIZE][16];
} naive_pool;

static void naive_init(naive_pool *p) {
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->n = CYCLE_POOL_SIZE;
    for (int i = 0; i < CYCLE_POOL_SIZE; i++)
        p->free[i] = p->storage[i];
}

static void naive_destroy(naive_pool *p) {
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
}

static void *naive_acquire(naive_pool *p) {
    pthread_mutex_lock(&p->mu);
    while (p->n == 0)
        pthread_cond_wait(&p->cv, &p->mu);
    void *r = p->free[--p->n];
    pthread_mutex_unlock(&p->mu);
    return r;
}

static void naive_release(naive_pool *p, void *r) {
    pthread_mutex_lock(&p->mu);
    p->free[p->n++] = r;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* ---- 1. connection cycle ------------------------------------------------------------ */

typedef enum impl { IMPL_FLOOR, IMPL_NAIVE, IMPL_APR, IMPL_NOODLE, IMPLS } impl;
static const char *const impl_names[IMPLS] = {"floor (mutex lock+unlock)", "naive (mutex+cond)",
                                              "apr_reslist", "noodle_pool"};

typedef struct cycle_ctx {
    impl kind;
    noodle_pool *pool;
    apr_reslist_t *reslist;
    naive_pool *naive;
    pthread_mutex_t *floor_mu;
    pthread_barrier_t start;
    alignas(64) atomic_bool stop;
} cycle_ctx;

typedef struct cycle_worker {
    alignas(64) cycle_ctx *ctx;
    uint64_t cycles;
    uint64_t failures;
} cycle_worker;

static void *cycle_thread(void *arg) {
    cycle_worker *w = arg;
    cycle_ctx *ctx = w->ctx;
    uint64_t n = 0, failed = 0;
    noodle_error err;
    pthread_barrier_wait(&ctx->start);
    switch (ctx->kind) {
    case IMPL_FLOOR:
        while (!atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
            pthread_mutex_lock(ctx->floor_mu);
            pthread_mutex_unlock(ctx->floor_mu);
            n++;
        }
        break;
    case IMPL_NAIVE:
        while (!atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
            void *r = naive_acquire(ctx->naive);
            naive_release(ctx->naive, r);
            n++;
        }
        break;
    case IMPL_APR:
        while (!atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
            void *r;
            if (apr_reslist_acquire(ctx->reslist, &r) != APR_SUCCESS) {
                failed++;
                continue;
            }
            apr_reslist_release(ctx->reslist, r);
            n++;
        }
        break;
    case IMPL_NOODLE:
        while (!atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
            noodle_conn *c;
            if (noodle_pool_acquire(ctx->pool, &c, &err) != 0) {
                failed++;
                continue;
            }
            noodle_pool_release(ctx->pool, &c);
            n++;
        }
        break;
    case IMPLS: break;
    }
    w->cycles = n;
    w->failures = failed;
    return NULL;
}

typedef struct cycle_result {
    double ns_per_cycle; /* wall x threads / cycles */
    double cycles_per_ms;
    uint64_t failures;
} cycle_result;

static cycle_result cycle_run(cycle_ctx *ctx, impl kind, int threads) {
    ctx->kind = kind;
    atomic_store(&ctx->stop, false);
    if (pthread_barrier_init(&ctx->start, NULL, (unsigned)threads + 1) != 0) die("barrier");
    cycle_worker *w = aligned_alloc(64, sizeof *w * (size_t)threads);
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    if (w == NULL || t == NULL) die("out of memory");
    for (int i = 0; i < threads; i++) {
        w[i] = (cycle_worker){.ctx = ctx};
        start_thread(&t[i], cycle_thread, &w[i]);
    }
    pthread_barrier_wait(&ctx->start);
    int64_t t0 = now_ns();
    sleep_ms(CYCLE_RUN_MS);
    atomic_store(&ctx->stop, true);
    int64_t wall = now_ns() - t0;
    uint64_t cycles = 0, failures = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        cycles += w[i].cycles;
        failures += w[i].failures;
    }
    pthread_barrier_destroy(&ctx->start);
    free(w);
    free(t);
    cycle_result r = {0};
    r.failures = failures;
    if (cycles > 0) {
        r.ns_per_cycle = (double)wall * threads / (double)cycles;
        r.cycles_per_ms = (double)cycles / ((double)wall / 1e6);
    }
    return r;
}

typedef struct cycle_summary {
    double ratio_vs_apr_min, cycles_per_ms_8t, ratio_vs_floor_1t;
} cycle_summary;

static cycle_summary bench_cycle(void) {
    cycle_summary sum = {1e18, 0, 0};
    printf("== cycle: acquire + release, stub backend (no I/O), pool of %d, warm; "
           "best of %d runs of %d ms per point\n",
           CYCLE_POOL_SIZE, CYCLE_ROUNDS, CYCLE_RUN_MS);

    cycle_ctx *ctx = aligned_alloc(64, sizeof *ctx);
    if (ctx == NULL) die("out of memory");
    memset(ctx, 0, sizeof *ctx);
    atomic_init(&ctx->stop, false);

    ctx->pool = open_pool(NULL, NULL, &stub_ops, CYCLE_POOL_SIZE, CYCLE_POOL_SIZE);

    apr_pool_t *apool;
    if (apr.pool_create_ex(&apool, NULL, NULL, NULL) != APR_SUCCESS) die("apr_pool_create");
    if (apr_reslist_create(&ctx->reslist, CYCLE_POOL_SIZE, CYCLE_POOL_SIZE, CYCLE_POOL_SIZE, 0,
                           apr_res_construct, apr_res_destruct, NULL, apool) != APR_SUCCESS)
        die("apr_reslist_create");

    naive_pool naive;
    naive_init(&naive);
    ctx->naive = &naive;
    pthread_mutex_t floor_mu = PTHREAD_MUTEX_INITIALIZER;
    ctx->floor_mu = &floor_mu;

    cycle_result best[CYCLE_POINTS][IMPLS];
    memset(best, 0, sizeof best);
    for (int p = 0; p < CYCLE_POINTS; p++) {
        /* rounds interleave the implementations so drift hits them all alike */
        for (int round = 0; round < CYCLE_ROUNDS; round++) {
            for (int k = 0; k < IMPLS; k++) {
                cycle_result r = cycle_run(ctx, (impl)k, cycle_threads[p]);
                best[p][k].failures += r.failures;
                if (r.cycles_per_ms > best[p][k].cycles_per_ms) {
                    best[p][k].cycles_per_ms = r.cycles_per_ms;
                    best[p][k].ns_per_cycle = r.ns_per_cycle;
                }
            }
        }
        const cycle_result *b = best[p];
        printf("\nthreads %d\n  %-28s %12s %14s\n", cycle_threads[p], "implementation", "ns/cycle",
               "cycles/ms");
        for (int k = 0; k < IMPLS; k++)
            printf("  %-28s %12.1f %14.0f%s\n", impl_names[k], b[k].ns_per_cycle,
                   b[k].cycles_per_ms, b[k].failures ? "  (acquire failures!)" : "");
        double vs_apr = b[IMPL_NOODLE].cycles_per_ms / b[IMPL_APR].cycles_per_ms;
        double vs_naive = b[IMPL_NOODLE].cycles_per_ms / b[IMPL_NAIVE].cycles_per_ms;
        double vs_floor = b[IMPL_NOODLE].ns_per_cycle / b[IMPL_FLOOR].ns_per_cycle;
        printf("  noodle/apr throughput   %6.2fx   target >= %.0fx: %s\n", vs_apr,
               TARGET_RATIO_VS_APR, verdict(vs_apr >= TARGET_RATIO_VS_APR));
        printf("  noodle/naive throughput %6.2fx\n", vs_naive);
        printf("  noodle/floor ns/cycle   %6.2fx", vs_floor);
        if (cycle_threads[p] == 1) {
            printf("   target <= %.0fx: %s", TARGET_RATIO_VS_FLOOR_1T,
                   verdict(vs_floor <= TARGET_RATIO_VS_FLOOR_1T));
            sum.ratio_vs_floor_1t = vs_floor;
        }
        printf("\n");
        if (cycle_threads[p] == 8) {
            printf("  noodle cycles/ms        %6.0f   target >= %.0f: %s\n",
                   b[IMPL_NOODLE].cycles_per_ms, TARGET_CYCLES_PER_MS_8T,
                   verdict(b[IMPL_NOODLE].cycles_per_ms >= TARGET_CYCLES_PER_MS_8T));
            sum.cycles_per_ms_8t = b[IMPL_NOODLE].cycles_per_ms;
        }
        if (vs_apr < sum.ratio_vs_apr_min) sum.ratio_vs_apr_min = vs_apr;
        fflush(stdout);
    }

    noodle_pool_metrics m;
    noodle_pool_get_metrics(ctx->pool, &m);
    printf("\nnoodle pool after the cycle runs: total %lld, peak %lld, opened %llu, acquired %llu, "
           "timeouts %llu, validation failures %llu\n",
           (long long)m.total, (long long)m.peak_total, (unsigned long long)m.opened,
           (unsigned long long)m.acquired, (unsigned long long)m.timeouts,
           (unsigned long long)m.validation_failures);
    printf("cycle targets: noodle/apr >= %.0fx at every thread count (min %.2fx): %s; "
           "1 thread within %.0fx of the floor (%.2fx): %s; >= %.0f cycles/ms at 8 threads "
           "(%.0f): %s\n\n",
           TARGET_RATIO_VS_APR, sum.ratio_vs_apr_min,
           verdict(sum.ratio_vs_apr_min >= TARGET_RATIO_VS_APR), TARGET_RATIO_VS_FLOOR_1T,
           sum.ratio_vs_floor_1t, verdict(sum.ratio_vs_floor_1t <= TARGET_RATIO_VS_FLOOR_1T),
           TARGET_CYCLES_PER_MS_8T, sum.cycles_per_ms_8t,
           verdict(sum.cycles_per_ms_8t >= TARGET_CYCLES_PER_MS_8T));

    noodle_pool_close(ctx->pool);
    apr_reslist_destroy(ctx->reslist);
    apr.pool_destroy(apool);
    naive_destroy(&naive);
    pthread_mutex_destroy(&floor_mu);
    free(ctx);
    return sum;
}

/* ---- 2. spike ------------------------------------------------------------------------ */

#define SPIKE_NODE "spike"

typedef struct spike_ctx {
    noodle_pool *pool;
    pthread_barrier_t start;
} spike_ctx;

typedef struct spike_client {
    spike_ctx *ctx;
    int64_t wait_ns;
    int rc;
    noodle_error err;
} spike_client;

static void *spike_thread(void *arg) {
    spike_client *c = arg;
    noodle_conn *conn;
    noodle_rows *rows;
    pthread_barrier_wait(&c->ctx->start);
    int64_t t0 = now_ns();
    c->rc = noodle_pool_acquire(c->ctx->pool, &conn, &c->err);
    c->wait_ns = now_ns() - t0;
    if (c->rc != 0) return NULL;
    c->rc = noodle_conn_execute(conn, "SELECT 1", NULL, 0, NOODLE_NO_DEADLINE, &rows, &c->err);
    if (c->rc == 0) noodle_rows_free(rows);
    noodle_pool_release(c->ctx->pool, &conn);
    return NULL;
}

typedef struct spike_summary {
    int64_t peak;
    double p99_ms;
} spike_summary;

static spike_summary bench_spike(void) {
    noodle_error err;
    printf("== spike: mock backend, connect 150 ms, query 2 ms; pool max 20, min_idle 5, warm; "
           "%d threads at once; %d rounds, each on a fresh pool\n",
           SPIKE_CLIENTS, SPIKE_ROUNDS);
    if (noodle_mock_set_latency(SPIKE_NODE, NOODLE_MOCK_OP_CONNECT, NOODLE_MS(150), &err) != 0 ||
        noodle_mock_set_latency(SPIKE_NODE, NOODLE_MOCK_OP_EXECUTE, NOODLE_MS(2), &err) != 0)
        die_err("mock latency", &err);

    spike_summary sum = {0, 0};
    samples all = {0};
    printf("  %-5s %9s %11s %7s %10s %10s %10s %10s %7s\n", "round", "pool peak", "server peak",
           "opened", "p50 ms", "p99 ms", "max ms", "burst ms", "errors");
    for (int round = 1; round <= SPIKE_ROUNDS; round++) {
        if (noodle_mock_node_reset_stats(SPIKE_NODE, &err) != 0) die_err("mock stats", &err);
        spike_ctx ctx;
        ctx.pool = open_pool("mock", "mock://" SPIKE_NODE, NULL, 20, 5);
        noodle_pool_metrics before;
        noodle_pool_get_metrics(ctx.pool, &before);

        spike_client *cl = calloc(SPIKE_CLIENTS, sizeof *cl);
        pthread_t *t = calloc(SPIKE_CLIENTS, sizeof *t);
        if (cl == NULL || t == NULL) die("out of memory");
        if (pthread_barrier_init(&ctx.start, NULL, SPIKE_CLIENTS + 1) != 0) die("barrier");
        for (int i = 0; i < SPIKE_CLIENTS; i++) {
            cl[i].ctx = &ctx;
            start_thread(&t[i], spike_thread, &cl[i]);
        }
        pthread_barrier_wait(&ctx.start);
        int64_t t0 = now_ns();
        for (int i = 0; i < SPIKE_CLIENTS; i++)
            pthread_join(t[i], NULL);
        int64_t burst = now_ns() - t0;
        pthread_barrier_destroy(&ctx.start);

        /* let a connect the burst started finish, so that the server sees it too */
        noodle_pool_metrics m;
        int64_t settle = now_ns() + NOODLE_SEC(2);
        do {
            sleep_ms(20);
            noodle_pool_get_metrics(ctx.pool, &m);
        } while (m.opening > 0 && now_ns() < settle);
        sleep_ms(20);
        noodle_pool_get_metrics(ctx.pool, &m);
        noodle_mock_stats ms;
        if (noodle_mock_node_stats(SPIKE_NODE, &ms, &err) != 0) die_err("mock stats", &err);

        samples s = {0};
        int errors = 0;
        for (int i = 0; i < SPIKE_CLIENTS; i++) {
            if (cl[i].rc != 0) {
                char buf[768];
                noodle_error_format(&cl[i].err, buf, sizeof buf);
                if (errors++ == 0) fprintf(stderr, "bench_pool: spike client: %s\n", buf);
                continue;
            }
            samples_add(&s, cl[i].wait_ns);
        }
        samples_append(&all, &s);
        wait_stats w = samples_stats(&s);
        printf("  %-5d %9lld %11lld %7llu %10.2f %10.2f %10.2f %10.1f %7d\n", round,
               (long long)m.peak_total, (long long)ms.peak_connections,
               (unsigned long long)(m.opened - before.opened), w.p50_ms, w.p99_ms, w.max_ms,
               (double)burst / 1e6, errors);
        if (m.peak_total > sum.peak) sum.peak = m.peak_total;
        free(s.v);
        free(cl);
        free(t);
        noodle_pool_close(ctx.pool);
    }
    wait_stats w = samples_stats(&all);
    sum.p99_ms = w.p99_ms;
    printf("  all rounds: %zu acquires, wait p50 %.2f ms, p99 %.2f ms, max %.2f ms, mean %.2f ms\n",
           w.n, w.p50_ms, w.p99_ms, w.max_ms, w.mean_ms);
    printf("spike target: peak connections <= %d (HikariCP: 5-6): worst %lld: %s\n\n",
           TARGET_SPIKE_PEAK, (long long)sum.peak, verdict(sum.peak <= TARGET_SPIKE_PEAK));
    free(all.v);
    if (noodle_mock_clear_faults(SPIKE_NODE, &err) != 0) die_err("mock faults", &err);
    return sum;
}

/* ---- 3. scaling / fairness ----------------------------------------------------------------- */

#define SCALING_NODE "scaling"

typedef struct scaling_ctx {
    noodle_pool *pool;
    pthread_barrier_t start;
    alignas(64) atomic_bool stop;
} scaling_ctx;

typedef struct scaling_client {
    alignas(64) scaling_ctx *ctx;
    uint64_t ops, failures;
    samples waits;
} scaling_client;

static void *scaling_thread(void *arg) {
    scaling_client *c = arg;
    scaling_ctx *ctx = c->ctx;
    noodle_error err;
    pthread_barrier_wait(&ctx->start);
    while (!atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
        noodle_conn *conn;
        noodle_rows *rows;
        int64_t t0 = now_ns();
        int rc = noodle_pool_acquire(ctx->pool, &conn, &err);
        samples_add(&c->waits, now_ns() - t0);
        if (rc != 0) {
            c->failures++;
            continue;
        }
        rc = noodle_conn_execute(conn, "SELECT 1", NULL, 0, NOODLE_NO_DEADLINE, &rows, &err);
        if (rc == 0)
            noodle_rows_free(rows);
        else
            c->failures++;
        noodle_pool_release(ctx->pool, &conn);
        /* count the operations that completed inside the measured window */
        if (rc == 0 && !atomic_load_explicit(&ctx->stop, memory_order_relaxed)) c->ops++;
    }
    return NULL;
}

static double bench_scaling(void) {
    noodle_error err;
    double fairness_256 = 0;
    printf("== scaling: mock backend, query 1 ms, pool of 20 (min_idle 20, warm); "
           "%d ms per point\n",
           SCALING_RUN_MS);
    if (noodle_mock_set_latency(SCALING_NODE, NOODLE_MOCK_OP_EXECUTE, NOODLE_MS(1), &err) != 0)
        die_err("mock latency", &err);
    scaling_ctx *ctx = aligned_alloc(64, sizeof *ctx);
    if (ctx == NULL) die("out of memory");
    memset(ctx, 0, sizeof *ctx);
    ctx->pool = open_pool("mock", "mock://" SCALING_NODE, NULL, 20, 20);

    printf("  %7s %9s %8s %10s %10s %10s %10s %9s %13s %6s\n", "clients", "ops/s", "ceiling",
           "p50 us", "p99 us", "max us", "mean us", "max/mean", "ops/client", "errors");
    double single_rate = 0; /* ops/s of one client: one connection's ceiling */
    for (int p = 0; p < SCALING_POINTS; p++) {
        int n = scaling_threads[p];
        atomic_store(&ctx->stop, false);
        if (pthread_barrier_init(&ctx->start, NULL, (unsigned)n + 1) != 0) die("barrier");
        scaling_client *cl = aligned_alloc(64, sizeof *cl * (size_t)n);
        pthread_t *t = calloc((size_t)n, sizeof *t);
        if (cl == NULL || t == NULL) die("out of memory");
        for (int i = 0; i < n; i++) {
            cl[i] = (scaling_client){.ctx = ctx};
            start_thread(&t[i], scaling_thread, &cl[i]);
        }
        pthread_barrier_wait(&ctx->start);
        int64_t t0 = now_ns();
        sleep_ms(SCALING_RUN_MS);
        atomic_store(&ctx->stop, true);
        int64_t wall = now_ns() - t0;
        samples all = {0};
        uint64_t ops = 0, failures = 0, min_ops = UINT64_MAX, max_ops = 0;
        for (int i = 0; i < n; i++) {
            pthread_join(t[i], NULL);
            ops += cl[i].ops;
            failures += cl[i].failures;
            if (cl[i].ops < min_ops) min_ops = cl[i].ops;
            if (cl[i].ops > max_ops) max_ops = cl[i].ops;
            samples_append(&all, &cl[i].waits);
            free(cl[i].waits.v);
        }
        pthread_barrier_destroy(&ctx->start);
        wait_stats w = samples_stats(&all);
        double fairness = w.mean_ms > 0 ? w.max_ms / w.mean_ms : 0;
        if (n == 256) fairness_256 = fairness;
        char spread[32];
        snprintf(spread, sizeof spread, "%llu..%llu", (unsigned long long)min_ops,
                 (unsigned long long)max_ops);
        double rate = (double)ops / ((double)wall / 1e9);
        if (n == 1) single_rate = rate;
        double ceiling = single_rate * (n < 20 ? n : 20);
        printf("  %7d %9.0f %7.0f%% %10.1f %10.1f %10.1f %10.1f %9.1f %13s %6llu\n", n, rate,
               ceiling > 0 ? rate / ceiling * 100 : 0, w.p50_ms * 1e3, w.p99_ms * 1e3,
               w.max_ms * 1e3, w.mean_ms * 1e3, fairness, spread, (unsigned long long)failures);
        fflush(stdout);
        free(all.v);
        free(cl);
        free(t);
    }
    noodle_pool_metrics m;
    noodle_pool_get_metrics(ctx->pool, &m);
    printf("  pool after the runs: total %lld, peak %lld, opened %llu, timeouts %llu, "
           "validation failures %llu; its own acquire-wait histogram: p99 %.3f ms, max %.3f ms\n",
           (long long)m.total, (long long)m.peak_total, (unsigned long long)m.opened,
           (unsigned long long)m.timeouts, (unsigned long long)m.validation_failures,
           (double)noodle_histogram_quantile(&m.acquire_wait, 0.99) / 1e3,
           (double)m.acquire_wait.max_us / 1e3);
    printf("  ceiling: min(clients, 20) x the single-client rate (one connection's 1 ms query "
           "plus the mock's sleep overshoot);\n  max/mean means something once clients > 20 "
           "(below, waits are ~0 and max is scheduler noise); near 1-3: first come, first "
           "served\n\n");
    noodle_pool_close(ctx->pool);
    free(ctx);
    if (noodle_mock_clear_faults(SCALING_NODE, &err) != 0) die_err("mock faults", &err);
    return fairness_256;
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(FILE *f) {
    fprintf(f, "usage: bench_pool [cycle] [spike] [scaling] [all]   (default: all)\n");
}

int main(int argc, char **argv) {
    bool run_cycle = false, run_spike = false, run_scaling = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "cycle") == 0)
            run_cycle = true;
        else if (strcmp(argv[i], "spike") == 0)
            run_spike = true;
        else if (strcmp(argv[i], "scaling") == 0 || strcmp(argv[i], "fairness") == 0)
            run_scaling = true;
        else if (strcmp(argv[i], "all") == 0)
            run_cycle = run_spike = run_scaling = true;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!run_cycle && !run_spike && !run_scaling) run_cycle = run_spike = run_scaling = true;

    noodle_error err;
    if (noodle_mock_register(&err) != 0) die_err("noodle_mock_register", &err);
    apr_resolve();
    if (apr.initialize() != APR_SUCCESS) die("apr_initialize");

    cycle_summary cs = {0};
    spike_summary ss = {0};
    double fairness = 0;
    if (run_cycle) cs = bench_cycle();
    if (run_spike) ss = bench_spike();
    if (run_scaling) fairness = bench_scaling();
    apr.terminate();

    printf("summary");
    if (run_cycle)
        printf(" ratio_vs_apr_min=%.2f cycles_per_ms_8t=%.0f ratio_vs_floor_1t=%.2f",
               cs.ratio_vs_apr_min, cs.cycles_per_ms_8t, cs.ratio_vs_floor_1t);
    if (run_spike)
        printf(" spike_peak_connections=%lld spike_p99_wait_ms=%.2f", (long long)ss.peak,
               ss.p99_ms);
    if (run_scaling) printf(" fairness_max_over_mean_256=%.2f", fairness);
    printf("\n");
    return 0;
}
