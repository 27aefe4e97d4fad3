/* bench_monitor: what the performance monitor costs (STD-MONITOR).
 *
 *   1. Throughput of SQLite :memory: point selects through noodle_db with
 *      the monitor on (watching the pool and the db, sampler running)
 *      against the same stack with no monitor, in interleaved rounds of the
 *      same run; six trials on fresh stacks, alternating which is opened
 *      first. The peer is the stack without the monitor. Target: on >= 97 %
 *      of off, with the default options (every statement counted and,
 *      where the TSC is the clock, timed); shown also with one statement in
 *      8 timed.
 *   2. The monitor's memory while it is fed 1 M distinct query texts (each
 *      its own fingerprint), read at 10 k, 100 k and 1 M: it must stay
 *      bounded by its cap on fingerprints, not grow with the texts. The
 *      process's resident set is shown beside it as a cross-check.
 *
 * Usage: bench_monitor [throughput] [memory]   (default: both, ~25 s)
 * Ends with: summary monitor_on_off_ratio=... monitor_bytes_after_1m=...
 */
#define BENCH_NAME "bench_monitor"
#include "bench_util.h"

#include <string.h>
#include <unistd.h>

#include "noodle/monitor.h"
#include "noodle/noodle.h"

#define ROWS 10000
#define SELECTS 200000
#define ROUNDS 5
#define TRIALS 6
#define TARGET_RATIO 0.97
#define DISTINCT_TEXTS 1000000

static long checksum;
static double sampled_ratio; /* throughput on / off with one statement in 8 timed */

/* ---- one stack: a pool of one :memory: connection and a db over it ------------------------- */

typedef struct stack {
    noodle_pool *pool;
    noodle_db *db;
} stack;

static void exec_ok(noodle_db *db, const char *sql) {
    noodle_error err;
    if (noodle_db_exec(db, NULL, sql, NULL, 0, NULL, &err) != 0) die_err(sql, &err);
}

static stack open_stack(void) {
    char *const envp[] = {NULL};
    noodle_config_options co = NOODLE_CONFIG_OPTIONS_INIT;
    co.max_connections = 1;
    co.min_idle = 1;
    co.timeout_ms = 30000;
    co.backend = "sqlite";
    co.url = ":memory:";
    noodle_config cfg;
    noodle_error err;
    if (noodle_config_load(&cfg, envp, &co, &err) != 0) die_err("config", &err);
    noodle_pool_options po = NOODLE_POOL_OPTIONS_INIT;
    po.config = &cfg;
    po.warm_up_blocking = true;
    stack s;
    if (noodle_pool_open(&po, &s.pool, &err) != 0) die_err("noodle_pool_open", &err);
    noodle_config_free(&cfg);
    noodle_db_options o = NOODLE_DB_OPTIONS_INIT;
    o.pool = s.pool;
    if (noodle_db_open(&o, &s.db, &err) != 0) die_err("noodle_db_open", &err);
    exec_ok(s.db, "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL)");
    exec_ok(s.db, "WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < 9999) "
                  "INSERT INTO kv (id, v) SELECT x, 'value of row ' || x FROM c");
    return s;
}

static void close_stack(stack *s) {
    noodle_db_close(s->db);
    noodle_pool_close(s->pool);
}

static int64_t random_key(uint64_t *seed) {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    return (int64_t)(*seed % ROWS);
}

/* ns per point select over n selects with keys from seed. */
static double select_run(noodle_db *db, long n, uint64_t seed) {
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        noodle_value k = noodle_int64(random_key(&seed));
        noodle_rows *r;
        noodle_error err;
        const char *s;
        size_t len;
        if (noodle_db_query(db, NULL, "SELECT v FROM kv WHERE id = ?", &k, 1, &r, &err) != 0)
            die_err("select", &err);
        if (noodle_rows_text(r, 0, 0, &s, &len, &err) != 0) die_err("select: read v", &err);
        checksum += s[0] + (long)len;
        noodle_rows_free(r);
    }
    return (double)(now_ns() - t0) / (double)n;
}

/* ---- 1. throughput with the monitor on vs off ------------------------------------------------- */

/* One trial: two fresh stacks (opened in the order `on_first` says: which
 * of two identical stacks is faster depends by about 1 % on where their
 * memory landed, so trials alternate), the monitor attached to one, ROUNDS
 * interleaved rounds. Returns throughput on / off, best vs best. */
static double throughput_trial(int trial, bool on_first, unsigned sample_every) {
    stack on, off;
    if (on_first) {
        on = open_stack();
        off = open_stack();
    } else {
        off = open_stack();
        on = open_stack();
    }
    noodle_monitor_options mo = NOODLE_MONITOR_OPTIONS_INIT;
    mo.no_log = true;
    mo.timing_sample_every = sample_every;
    noodle_monitor *mon;
    noodle_error err;
    if (noodle_monitor_open(&mo, &mon, &err) != 0) die_err("noodle_monitor_open", &err);
    if (noodle_monitor_watch_pool(mon, on.pool, "bench", &err) != 0) die_err("watch_pool", &err);
    if (noodle_monitor_watch_db(mon, on.db, &err) != 0) die_err("watch_db", &err);

    select_run(off.db, SELECTS / 10, 1); /* warm-up */
    select_run(on.db, SELECTS / 10, 1);
    double v_off[ROUNDS], v_on[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t seed = 0x9E3779B97F4A7C15ULL * (uint64_t)(trial * ROUNDS + r + 1);
        if (r % 2 == 0) { /* alternate which goes first */
            v_off[r] = select_run(off.db, SELECTS, seed);
            v_on[r] = select_run(on.db, SELECTS, seed);
        } else {
            v_on[r] = select_run(on.db, SELECTS, seed);
            v_off[r] = select_run(off.db, SELECTS, seed);
        }
    }
    sort_doubles(v_off, ROUNDS);
    sort_doubles(v_on, ROUNDS);
    double ratio = v_off[0] / v_on[0];
    /* the monitor saw every select: its count is the proof it was on */
    noodle_monitor_query_stat st;
    const char *sql = "SELECT v FROM kv WHERE id = ?";
    if (noodle_monitor_query_stats(mon, sql, strlen(sql), &st, &err) != 0)
        die_err("query_stats", &err);
    if (st.calls != (uint64_t)SELECTS / 10 + (uint64_t)SELECTS * ROUNDS)
        die("the monitor did not count every select");
    printf("    trial %d (%s opened first)  %8.0f %8.0f %14.3f %12llu %12llu\n", trial,
           on_first ? "on " : "off", v_off[0], v_on[0], ratio, (unsigned long long)st.calls,
           (unsigned long long)st.timed_calls);
    close_stack(&on);
    noodle_monitor_close(mon);
    close_stack(&off);
    return ratio;
}

/* The median over TRIALS trials of throughput on / off. */
static double throughput_with(unsigned sample_every, const char *what) {
    printf("  %s\n", what);
    printf("    %-28s %8s %8s %14s %12s %12s\n", "", "off ns", "on ns", "on/off", "calls seen",
           "timed");
    double r[TRIALS];
    for (int t = 0; t < TRIALS; t++) r[t] = throughput_trial(t, t % 2 == 1, sample_every);
    sort_doubles(r, TRIALS);
    double m = median_sorted(r, TRIALS);
    printf("    median throughput on/off %.3f\n", m);
    return m;
}

static double bench_throughput(void) {
    printf("== throughput: SQLite :memory: point selects through noodle_db (pool of 1), the monitor "
           "on (watching the pool and the db, sampler every 10 s) vs off; %d trials of %d rounds "
           "of %d selects, best round of each\n",
           TRIALS, ROUNDS, SELECTS);
    double dflt = throughput_with(0, "default options (every statement counted; timed precisely "
                                     "where the TSC is the clock, else one in 8)");
    sampled_ratio = throughput_with(8, "timing_sample_every = 8 (one statement in 8 timed "
                                       "precisely, every one counted)");
    printf("    target on/off >= %.2f with the default options: %s (one in 8 timed: %.3f)\n\n",
           TARGET_RATIO, verdict(dflt >= TARGET_RATIO), sampled_ratio);
    return dflt;
}

/* ---- 2. memory after 1 M distinct texts --------------------------------------------------------- */

static int64_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f == NULL) return -1;
    int n = fscanf(f, "%ld %ld", &pages, &rss);
    fclose(f);
    return n == 2 ? (int64_t)rss * sysconf(_SC_PAGESIZE) : -1;
}

static size_t bench_memory(void) {
    printf("== memory: 1 M distinct query texts (each its own fingerprint) recorded into a monitor "
           "with the default cap (1000 fingerprints)\n");
    noodle_monitor_options mo = NOODLE_MONITOR_OPTIONS_INIT;
    mo.no_log = true;
    mo.sample_interval_ms = 0;
    noodle_monitor *mon;
    noodle_error err;
    if (noodle_monitor_open(&mo, &mon, &err) != 0) die_err("noodle_monitor_open", &err);
    size_t at_open = noodle_monitor_memory_bytes(mon);
    int64_t rss0 = rss_bytes();
    printf("  %-12s %14s %14s %12s %14s\n", "texts", "monitor bytes", "fingerprints", "evictions",
           "process RSS +");
    printf("  %-12d %14zu %14d %12d %14s\n", 0, at_open, 0, 0, "-");
    size_t bytes = at_open;
    long checkpoints[] = {10000, 100000, DISTINCT_TEXTS};
    char sql[160];
    int64_t t0 = now_ns();
    long done = 0;
    for (size_t c = 0; c < sizeof checkpoints / sizeof checkpoints[0]; c++) {
        for (; done < checkpoints[c]; done++) {
            int len = snprintf(sql, sizeof sql,
                               "SELECT col_%ld, note FROM table_%ld WHERE id = %ld AND kind = 'k'",
                               done, done % 977, done * 7);
            noodle_monitor_record_query(mon, sql, (size_t)len, 1000 + done % 5000, 0, 1);
        }
        noodle_monitor_metrics m;
        noodle_monitor_get_metrics(mon, &m);
        bytes = noodle_monitor_memory_bytes(mon);
        printf("  %-12ld %14zu %14zu %12llu %12.1f MiB\n", done, bytes, m.fingerprints,
               (unsigned long long)m.evictions, (double)(rss_bytes() - rss0) / 1048576.0);
    }
    double ns_per_new = (double)(now_ns() - t0) / (double)done;
    printf("  recording a text never seen before: %.0f ns each (normalise, evict, insert)\n",
           ns_per_new);
    printf("  memory after 1 M texts: %zu bytes (%.1f KiB per kept fingerprint)\n\n", bytes,
           (double)bytes / 1000.0 / 1024.0);
    noodle_monitor_close(mon);
    return bytes;
}

int main(int argc, char **argv) {
    bool throughput = argc == 1, memory = argc == 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "throughput") == 0)
            throughput = true;
        else if (strcmp(argv[i], "memory") == 0)
            memory = true;
        else {
            fprintf(stderr, "usage: bench_monitor [throughput] [memory]   (default: both)\n");
            return 2;
        }
    }
    double load[3] = {0};
    if (getloadavg(load, 3) == 3)
        printf("load average at start: %.2f %.2f %.2f (%ld cores online)\n", load[0], load[1],
               load[2], sysconf(_SC_NPROCESSORS_ONLN));
    int64_t t0 = now_ns();
    double ratio = throughput ? bench_throughput() : 0;
    size_t bytes = memory ? bench_memory() : 0;
    printf("total %.1f s (checksum %ld)\n", (double)(now_ns() - t0) / 1e9, checksum);
    printf("summary");
    if (throughput) printf(" monitor_on_off_ratio=%.3f monitor_on_off_ratio_one_in_8_timed=%.3f",
                           ratio, sampled_ratio);
    if (memory) printf(" monitor_bytes_after_1m=%zu", bytes);
    printf("\n");
    return 0;
}
