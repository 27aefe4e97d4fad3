/* Database manager benchmarks (release build, no fail points).
 *
 * sqlite   point select (SELECT v FROM kv WHERE id = ?, a random id among
 *          10,000 rows) and single-row insert (INSERT INTO kv2 (id, v)
 *          VALUES (?, ?)) in autocommit through noodle_db on a pool, against
 *          sqlite3 called directly with each statement prepared once and
 *          reused (the fair peer: what a careful program does by hand). Both
 *          on a private SQLite :memory: database (the pool has exactly one
 *          connection: each in-memory connection is its own database).
 *          Context: sqlite3 preparing each statement every time.
 * pg       the same two statements on a local PostgreSQL started by the
 *          benchmark (tests/support/pg_server.h; TCP on 127.0.0.1), against
 *          libpq with PQprepare once and PQexecPrepared on one persistent
 *          connection. Context: libpq with PQexecParams (the server parses
 *          each time) and noodle_db with the backend's statement cache off.
 *          For both backends: interleaved rounds (noodle first in even
 *          rounds, last in odd ones), best and median ns per operation, and
 *          the overhead of noodle over the peer: best vs best (the summary),
 *          and the median of the per-round ratios beside it.
 * clients  16 client threads doing point selects on PostgreSQL for
 *          CLIENT_RUN_MS each: (a) noodle_db over a pool of 20 connections;
 *          (b) a new libpq connection per request (connect, query, finish);
 *          (c) a new connection per request through pgbouncer in
 *          transaction pooling mode (started here: /usr/sbin/pgbouncer,
 *          127.0.0.1, a generated ini, run as postgres when we are root);
 *          for context (d) one persistent connection per thread through
 *          pgbouncer and (e) one persistent direct connection per thread
 *          with a prepared statement (the floor). Each runs in two halves,
 *          order a..e then e..a. Throughput of each and noodle / it.
 *
 * Targets (informative, printed PASS / MISS; the exit status is 0 unless the
 * benchmark could not run): overhead <= 5 % on PostgreSQL and <= 15 % on
 * SQLite in memory (point select); noodle above pgbouncer per request.
 * The machine's load average is printed at the start and at the end.
 *
 * Usage: bench_db [sqlite] [pg] [clients] [all]   (default: all, ~35 s)
 * Ends with one line: summary key=value ... (only the keys of the parts run):
 *   pg:      overhead_pg_pct overhead_pg_insert_pct
 *   sqlite:  overhead_sqlite_pct overhead_sqlite_insert_pct
 *   clients: ratio_vs_pgbouncer ratio_vs_direct noodle_qps_16 pgbouncer_qps_16
 *            (ratio_vs_pgbouncer=nan when pgbouncer could not be started)
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <libpq-fe.h>

#define BENCH_NAME "bench_db"
#include "bench_util.h"

#include "backends/postgres_sql.h" /* noodle__pg_set_stmt_cache: context rows only */
#include "noodle/db.h"
#include "noodle/noodle.h"
#include "pg_server.h"

#define KV_ROWS 10000
#define MAX_ROUNDS 15
#define SQLITE_ROUNDS 7
#define SQLITE_SELECTS 100000 /* per measurement (one implementation, one round) */
#define SQLITE_INSERTS 50000
#define PG_ROUNDS 15
#define PG_SELECTS 1500
#define PG_INSERTS 1000
#define CLIENTS 16
#define CLIENT_POOL 20
#define CLIENT_RUN_MS 3000
#define CLIENT_WARMUP_MS 200
#define PGBOUNCER "/usr/sbin/pgbouncer"

/* Targets (informative). */
#define TARGET_OVERHEAD_PG_PCT 5.0
#define TARGET_OVERHEAD_SQLITE_PCT 15.0

static const char *const select_sql = "SELECT v FROM kv WHERE id = ?";
static const char *const insert_sql = "INSERT INTO kv2 (id, v) VALUES (?, ?)";
static const char *const pg_select_sql = "SELECT v FROM kv WHERE id = $1";
static const char *const pg_insert_sql = "INSERT INTO kv2 (id, v) VALUES ($1, $2)";
static const char *const insert_value = "an inserted value";

/* ---- helpers ----------------------------------------------------------------- */

static void die_pq(const char *what, const PGconn *c) {
    fprintf(stderr, "bench_db: %s: %s\n", what, c ? PQerrorMessage(c) : "out of memory");
    exit(1);
}

static void print_load(const char *when) {
    double l[3];
    if (getloadavg(l, 3) == 3)
        printf("load average %s: %.2f %.2f %.2f (%ld cores online)\n", when, l[0], l[1], l[2],
               sysconf(_SC_NPROCESSORS_ONLN));
    else
        printf("load average %s: unavailable\n", when);
    fflush(stdout);
}

/* xorshift64*: the same key sequence for every implementation of a round. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int64_t random_key(uint64_t *s) { return (int64_t)(rng_next(s) % KV_ROWS); }

static double median(const double *v, int n) {
    double s[MAX_ROUNDS];
    memcpy(s, v, sizeof *v * (size_t)n);
    sort_doubles(s, n);
    return median_sorted(s, n);
}

static double best(const double *v, int n) {
    double b = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] < b) b = v[i];
    return b;
}

static long checksum;       /* keeps reads from being optimised away (single-threaded parts) */
static int64_t next_id = 1; /* ids of inserted rows; shared by the implementations */

/* A pool of max_connections (min_idle of them warm) over backend/url. */
static noodle_pool *open_pool(const char *backend, const char *url, int64_t max_connections,
                              int64_t min_idle) {
    char *const envp[] = {NULL};
    noodle_config_options co = NOODLE_CONFIG_OPTIONS_INIT;
    co.max_connections = max_connections;
    co.min_idle = min_idle;
    co.timeout_ms = 30000;
    co.backend = backend;
    co.url = url;
    noodle_config cfg;
    noodle_error err;
    if (noodle_config_load(&cfg, envp, &co, &err) != 0) die_err("config", &err);
    noodle_pool_options po = {.struct_size = sizeof po,
                              .config = &cfg,
                              .application_name = "bench_db",
                              .warm_up_blocking = true};
    noodle_pool *pool;
    if (noodle_pool_open(&po, &pool, &err) != 0) die_err("noodle_pool_open", &err);
    noodle_config_free(&cfg);
    return pool;
}

static noodle_db *open_db(noodle_pool *pool) {
    noodle_db_options o = NOODLE_DB_OPTIONS_INIT;
    o.pool = pool;
    noodle_db *db;
    noodle_error err;
    if (noodle_db_open(&o, &db, &err) != 0) die_err("noodle_db_open", &err);
    return db;
}

static void db_exec(noodle_db *db, const char *sql) {
    noodle_error err;
    if (noodle_db_exec(db, NULL, sql, NULL, 0, NULL, &err) != 0) die_err(sql, &err);
}

/* The noodle side of a point select / an insert, the same on every backend. */
static void noodle_select(noodle_db *db, int64_t key) {
    noodle_value k = noodle_int64(key);
    noodle_rows *r;
    noodle_error err;
    const char *s;
    size_t len;
    if (noodle_db_query(db, NULL, select_sql, &k, 1, &r, &err) != 0) die_err("select", &err);
    if (noodle_rows_text(r, 0, 0, &s, &len, &err) != 0) die_err("select: read v", &err);
    checksum += s[0] + (long)len;
    noodle_rows_free(r);
}

static void noodle_insert(noodle_db *db, int64_t id) {
    noodle_value p[2] = {noodle_int64(id), noodle_text(insert_value)};
    noodle_error err;
    int64_t affected = 0;
    if (noodle_db_exec(db, NULL, insert_sql, p, 2, &affected, &err) != 0) die_err("insert", &err);
    if (affected != 1) die("insert: affected != 1");
}

/* ---- pgbouncer --------------------------------------------------------------------- */

/* One pgbouncer started by the benchmark, in a private temporary directory
 * (ini, auth file, log, pid file, its stderr). It is stopped and the
 * directory removed by pgb_stop, at exit, and on fatal signals (our handler
 * runs first, then the one it replaced: pg_server's, which removes the
 * PostgreSQL servers). The handler only uses kill, unlink and rmdir on paths
 * prepared in advance. */
enum { PGB_INI, PGB_AUTH, PGB_LOG, PGB_PID, PGB_ERR, PGB_FILES };
static const char *const pgb_names[PGB_FILES] = {"pgbouncer.ini", "users.txt", "pgbouncer.log",
                                                 "pgbouncer.pid", "stderr.log"};
static struct {
    char dir[200];
    char path[PGB_FILES][256];
    int port;
    volatile sig_atomic_t live; /* the directory exists */
    volatile pid_t child;       /* what we forked (runuser, or pgbouncer itself) */
    volatile pid_t pgbouncer;   /* from the pid file */
} pgb;

static const int fatal_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGSEGV, SIGABRT, SIGBUS, SIGFPE};
#define NFATAL (sizeof fatal_signals / sizeof fatal_signals[0])
static struct sigaction previous_actions[NFATAL];

static void pgb_kill_all(int sig) {
    if (pgb.child > 0) {
        kill(-pgb.child, sig); /* its process group: runuser and pgbouncer */
        kill(pgb.child, sig);
    }
    if (pgb.pgbouncer > 0) kill(pgb.pgbouncer, sig);
}

static void pgb_remove_dir(void) {
    if (!pgb.live) return;
    for (int i = 0; i < PGB_FILES; i++)
        unlink(pgb.path[i]);
    rmdir(pgb.dir);
    pgb.live = 0;
}

static void on_fatal_signal(int sig) {
    int saved = errno;
    pgb_kill_all(SIGKILL);
    pgb_remove_dir();
    for (size_t i = 0; i < NFATAL; i++)
        if (fatal_signals[i] == sig) sigaction(sig, &previous_actions[i], NULL);
    errno = saved;
    raise(sig); /* delivered to the previous handler when we return */
}

static void install_signal_handlers(void) {
    for (size_t i = 0; i < NFATAL; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fatal_signal;
        sigemptyset(&sa.sa_mask);
        if (sigaction(fatal_signals[i], NULL, &previous_actions[i]) != 0) continue;
        if (previous_actions[i].sa_handler == SIG_IGN) continue;
        sigaction(fatal_signals[i], &sa, NULL);
    }
}

/* Wait up to ms for pid to end; true when it did (or was not ours). */
static bool wait_child(pid_t pid, int ms) {
    for (int waited = 0;; waited += 10) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) return true;
        if (waited >= ms) return false;
        sleep_ms(10);
    }
}

/* pid is running (not gone, not a zombie waiting to be reaped). */
static bool process_alive(pid_t pid) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the state follows the command name */
    return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static void pgb_stop(void) {
    if (pgb.child > 0) {
        /* pgbouncer first (SIGTERM: immediate shutdown); runuser then reaps
         * it and exits by itself. The whole group when that does not work. */
        if (pgb.pgbouncer > 0)
            kill(pgb.pgbouncer, SIGTERM);
        else
            pgb_kill_all(SIGTERM);
        if (!wait_child(pgb.child, 3000)) {
            pgb_kill_all(SIGKILL);
            wait_child(pgb.child, 2000);
        }
        for (int i = 0; i < 200 && pgb.pgbouncer > 0 && process_alive(pgb.pgbouncer); i++)
            sleep_ms(10);
        if (pgb.pgbouncer > 0 && process_alive(pgb.pgbouncer)) kill(pgb.pgbouncer, SIGKILL);
        pgb.child = 0;
        pgb.pgbouncer = 0;
    }
    pgb_remove_dir();
}

static void pgb_print_log(void) {
    for (int f = PGB_LOG; f <= PGB_ERR; f += PGB_ERR - PGB_LOG) {
        FILE *fp = fopen(pgb.path[f], "r");
        if (fp == NULL) continue;
        char line[512];
        fprintf(stderr, "  --- %s ---\n", pgb_names[f]);
        while (fgets(line, sizeof line, fp) != NULL)
            fprintf(stderr, "  %s", line);
        fclose(fp);
    }
}

static int free_tcp_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f == NULL) return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

/* Start pgbouncer in transaction pooling mode in front of the server at
 * 127.0.0.1:pg_port, database "bench" -> postgres. Returns true when it
 * accepts connections; false with the reason in why (then it is gone). */
static bool pgb_start(int pg_port, char *why, size_t whylen) {
    if (access(PGBOUNCER, X_OK) != 0) {
        snprintf(why, whylen, "%s not found (scripts/setup.sh installs Debian's pgbouncer)",
                 PGBOUNCER);
        return false;
    }
    bool root = geteuid() == 0;
    struct passwd *pw = root ? getpwnam("postgres") : NULL;
    if (root && pw == NULL) {
        snprintf(why, whylen, "running as root and there is no postgres user to run it as");
        return false;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(pgb.dir, sizeof pgb.dir, "%s/noodle-bench-pgb-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(pgb.dir) == NULL) {
        snprintf(why, whylen, "mkdtemp %s: %s", pgb.dir, strerror(errno));
        return false;
    }
    for (int i = 0; i < PGB_FILES; i++)
        snprintf(pgb.path[i], sizeof pgb.path[i], "%s/%s", pgb.dir, pgb_names[i]);
    pgb.live = 1;
    if (root && (chown(pgb.dir, pw->pw_uid, pw->pw_gid) != 0 || chmod(pgb.dir, 0700) != 0)) {
        snprintf(why, whylen, "chown %s to postgres: %s", pgb.dir, strerror(errno));
        pgb_stop();
        return false;
    }
    pgb.port = free_tcp_port();
    char ini[2048];
    snprintf(ini, sizeof ini,
             "[databases]\n"
             "bench = host=127.0.0.1 port=%d dbname=postgres user=postgres\n"
             "[pgbouncer]\n"
             "listen_addr = 127.0.0.1\n"
             "listen_port = %d\n"
             "unix_socket_dir =\n"
             "auth_type = trust\n"
             "auth_file = %s\n"
             "pool_mode = transaction\n"
             "default_pool_size = %d\n"
             "max_client_conn = 200\n"
             "logfile = %s\n"
             "pidfile = %s\n"
             /* like the server (log_connections off): one log line per
              * connection would cost pgbouncer's single thread */
             "log_connections = 0\n"
             "log_disconnections = 0\n",
             pg_port, pgb.port, pgb.path[PGB_AUTH], CLIENT_POOL, pgb.path[PGB_LOG],
             pgb.path[PGB_PID]);
    if (!write_file(pgb.path[PGB_INI], ini) ||
        !write_file(pgb.path[PGB_AUTH], "\"postgres\" \"\"\n")) {
        snprintf(why, whylen, "cannot write the pgbouncer configuration in %s", pgb.dir);
        pgb_stop();
        return false;
    }
    int errfd = open(pgb.path[PGB_ERR], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (errfd < 0) {
        snprintf(why, whylen, "open %s: %s", pgb.path[PGB_ERR], strerror(errno));
        pgb_stop();
        return false;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, whylen, "fork: %s", strerror(errno));
        close(errfd);
        pgb_stop();
        return false;
    }
    if (pid == 0) {
        setpgid(0, 0);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        dup2(errfd, 1);
        dup2(errfd, 2);
        if (chdir(pgb.dir) != 0) _exit(126); /* a directory postgres may enter */
        if (root) {
            execl("/usr/sbin/runuser", "runuser", "-u", "postgres", "--", PGBOUNCER,
                  pgb.path[PGB_INI], (char *)NULL);
            execl("/sbin/runuser", "runuser", "-u", "postgres", "--", PGBOUNCER, pgb.path[PGB_INI],
                  (char *)NULL);
        } else {
            execl(PGBOUNCER, "pgbouncer", pgb.path[PGB_INI], (char *)NULL);
        }
        _exit(127);
    }
    close(errfd);
    setpgid(pid, pid); /* also here: no window in which a signal finds it elsewhere */
    pgb.child = pid;

    /* ready when a connection through it gets an answer from the server */
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d dbname=bench user=postgres connect_timeout=2 "
             "sslmode=disable gssencmode=disable",
             pgb.port);
    for (int64_t end = now_ns() + 10 * 1000000000LL; now_ns() < end; sleep_ms(20)) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            pgb.child = 0;
            snprintf(why, whylen, "pgbouncer exited at start (%s %d; its log is above)",
                     WIFEXITED(st) ? "exit status" : "signal",
                     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            pgb_print_log();
            pgb_stop();
            return false;
        }
        if (pgb.pgbouncer <= 0) {
            FILE *f = fopen(pgb.path[PGB_PID], "r");
            long p = 0;
            if (f != NULL) {
                if (fscanf(f, "%ld", &p) == 1 && p > 0) pgb.pgbouncer = (pid_t)p;
                fclose(f);
            }
        }
        PGconn *c = PQconnectdb(conninfo);
        bool ok = PQstatus(c) == CONNECTION_OK;
        if (ok) {
            PGresult *r = PQexec(c, "SELECT 1");
            ok = PQresultStatus(r) == PGRES_TUPLES_OK;
            PQclear(r);
        }
        PQfinish(c);
        if (ok) {
            FILE *f = pgb.pgbouncer <= 0 ? fopen(pgb.path[PGB_PID], "r") : NULL;
            long p = 0;
            if (f != NULL) {
                if (fscanf(f, "%ld", &p) == 1 && p > 0) pgb.pgbouncer = (pid_t)p;
                fclose(f);
            }
            return true;
        }
    }
    snprintf(why, whylen, "pgbouncer did not accept connections within 10 s (its log is above)");
    pgb_print_log();
    pgb_stop();
    return false;
}

/* ---- 1. single-threaded overhead: noodle_db vs the raw API ------------------------------ */

/* One measurement: n operations, ns per operation. seed: the key sequence. */
typedef double (*measure_fn)(void *ctx, long n, uint64_t seed);

typedef struct impl {
    const char *name;
    measure_fn fn; /* NULL: none */
    void *ctx;
} impl;

typedef struct pair_stats {
    double noodle_best, raw_best, noodle_median, raw_median;
    double overhead_pct;       /* best vs best */
    double overhead_ratio_pct; /* median of the per-round noodle/peer ratios */
} pair_stats;

/* noodle against its peer, plus up to two implementations shown for context:
 * one untimed warm-up of each, then `rounds` interleaved rounds (in even
 * rounds noodle runs first, in odd ones last), n operations each. */
#define MAX_CONTEXT 2
static pair_stats run_pair(const char *what, impl noodle, impl peer, const impl *context,
                           int ncontext, long n, int rounds, double target_pct) {
    enum { N, P };
    impl im[2 + MAX_CONTEXT] = {noodle, peer};
    int nimpl = 2;
    for (int i = 0; i < ncontext && i < MAX_CONTEXT; i++)
        im[nimpl++] = context[i];
    double v[2 + MAX_CONTEXT][MAX_ROUNDS], ratio[MAX_ROUNDS];
    for (int k = 0; k < nimpl; k++)
        im[k].fn(im[k].ctx, n / 10, 1);
    for (int r = 0; r < rounds; r++) {
        uint64_t seed = 0x9E3779B97F4A7C15ULL * (uint64_t)(r + 1);
        for (int i = 0; i < nimpl; i++) {
            int k = r % 2 == 0 ? i : nimpl - 1 - i;
            v[k][r] = im[k].fn(im[k].ctx, n, seed);
        }
        ratio[r] = v[N][r] / v[P][r];
    }
    pair_stats s = {.noodle_best = best(v[N], rounds),
                    .raw_best = best(v[P], rounds),
                    .noodle_median = median(v[N], rounds),
                    .raw_median = median(v[P], rounds)};
    s.overhead_pct = (s.noodle_best - s.raw_best) / s.raw_best * 100.0;
    s.overhead_ratio_pct = (median(ratio, rounds) - 1.0) * 100.0;
    char title[128];
    snprintf(title, sizeof title, "%s, %ld operations x %d rounds", what, n, rounds);
    printf("  %-52s %10s %10s ns/op\n", title, "best", "median");
    for (int k = 1; k < nimpl; k++)
        printf("    %-50s %10.0f %10.0f%s\n", im[k].name, best(v[k], rounds), median(v[k], rounds),
               k == P ? "" : "   (context)");
    printf("    %-50s %10.0f %10.0f\n", noodle.name, s.noodle_best, s.noodle_median);
    printf("    overhead %+.1f %% (best vs best), %+.1f %% (median of the per-round ratios)",
           s.overhead_pct, s.overhead_ratio_pct);
    if (target_pct > 0)
        printf("   target <= %.0f %%: %s", target_pct, verdict(s.overhead_pct <= target_pct));
    printf("\n");
    fflush(stdout);
    return s;
}

static double noodle_select_run(void *ctx, long n, uint64_t seed) {
    noodle_db *db = ctx;
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        noodle_select(db, random_key(&seed));
    return (double)(now_ns() - t0) / (double)n;
}

static double noodle_insert_run(void *ctx, long n, uint64_t seed) {
    (void)seed;
    noodle_db *db = ctx;
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        noodle_insert(db, next_id++);
    return (double)(now_ns() - t0) / (double)n;
}

/* -- SQLite -- */

typedef struct raw_sqlite {
    sqlite3 *db;
    sqlite3_stmt *sel, *ins;
} raw_sqlite;

static const char *const sqlite_schema[] = {
    "CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE kv2 (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
    "WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < 9999) "
    "INSERT INTO kv (id, v) SELECT x, 'value of row ' || x FROM c",
};

static double raw_sqlite_select_run(void *ctx, long n, uint64_t seed) {
    raw_sqlite *r = ctx;
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        if (sqlite3_bind_int64(r->sel, 1, random_key(&seed)) != SQLITE_OK) die("sqlite3 bind");
        int rows = 0, rc;
        while ((rc = sqlite3_step(r->sel)) == SQLITE_ROW) {
            checksum += sqlite3_column_text(r->sel, 0)[0] + sqlite3_column_bytes(r->sel, 0);
            rows++;
        }
        if (rc != SQLITE_DONE || rows != 1) die("sqlite3 select");
        sqlite3_reset(r->sel);
    }
    return (double)(now_ns() - t0) / (double)n;
}

static double raw_sqlite_insert_run(void *ctx, long n, uint64_t seed) {
    (void)seed;
    raw_sqlite *r = ctx;
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        if (sqlite3_bind_int64(r->ins, 1, next_id++) != SQLITE_OK ||
            sqlite3_bind_text(r->ins, 2, insert_value, -1, SQLITE_STATIC) != SQLITE_OK)
            die("sqlite3 bind");
        if (sqlite3_step(r->ins) != SQLITE_DONE || sqlite3_changes(r->db) != 1)
            die("sqlite3 insert");
        sqlite3_reset(r->ins);
    }
    return (double)(now_ns() - t0) / (double)n;
}

/* Context: what the peer costs when it prepares every statement again. */
static double raw_sqlite_select_each_run(void *ctx, long n, uint64_t seed) {
    raw_sqlite *r = ctx;
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(r->db, select_sql, -1, &st, NULL) != SQLITE_OK ||
            sqlite3_bind_int64(st, 1, random_key(&seed)) != SQLITE_OK)
            die("sqlite3 prepare");
        int rows = 0, rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            checksum += sqlite3_column_text(st, 0)[0] + sqlite3_column_bytes(st, 0);
            rows++;
        }
        if (rc != SQLITE_DONE || rows != 1) die("sqlite3 select");
        sqlite3_finalize(st);
    }
    return (double)(now_ns() - t0) / (double)n;
}

static double raw_sqlite_insert_each_run(void *ctx, long n, uint64_t seed) {
    (void)seed;
    raw_sqlite *r = ctx;
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(r->db, insert_sql, -1, &st, NULL) != SQLITE_OK ||
            sqlite3_bind_int64(st, 1, next_id++) != SQLITE_OK ||
            sqlite3_bind_text(st, 2, insert_value, -1, SQLITE_STATIC) != SQLITE_OK)
            die("sqlite3 prepare");
        if (sqlite3_step(st) != SQLITE_DONE || sqlite3_changes(r->db) != 1) die("sqlite3 insert");
        sqlite3_finalize(st);
    }
    return (double)(now_ns() - t0) / (double)n;
}

typedef struct overheads {
    double select_pct, insert_pct;
} overheads;

static overheads bench_sqlite(void) {
    printf("== sqlite: SQLite :memory:, %d rows; noodle_db on a pool of one connection (each "
           "in-memory connection is its own database) vs sqlite3 with statements prepared once\n",
           KV_ROWS);
    /* the peer: the same open flags as the backend (src/backends/sqlite.c) */
    raw_sqlite raw = {0};
    if (sqlite3_open_v2(":memory:", &raw.db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI |
                            SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        die("sqlite3_open_v2");
    for (size_t i = 0; i < sizeof sqlite_schema / sizeof *sqlite_schema; i++)
        if (sqlite3_exec(raw.db, sqlite_schema[i], NULL, NULL, NULL) != SQLITE_OK)
            die(sqlite3_errmsg(raw.db));
    if (sqlite3_prepare_v2(raw.db, select_sql, -1, &raw.sel, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(raw.db, insert_sql, -1, &raw.ins, NULL) != SQLITE_OK)
        die(sqlite3_errmsg(raw.db));

    noodle_pool *pool = open_pool("sqlite", ":memory:", 1, 1);
    noodle_db *db = open_db(pool);
    for (size_t i = 0; i < sizeof sqlite_schema / sizeof *sqlite_schema; i++)
        db_exec(db, sqlite_schema[i]);

    const char *nname = "noodle_db (pool of 1, autocommit)";
    overheads o;
    o.select_pct =
        run_pair("point select", (impl){nname, noodle_select_run, db},
                 (impl){"sqlite3 direct, prepared once (peer)", raw_sqlite_select_run, &raw},
                 &(impl){"sqlite3 direct, prepared each time", raw_sqlite_select_each_run, &raw}, 1,
                 SQLITE_SELECTS, SQLITE_ROUNDS, TARGET_OVERHEAD_SQLITE_PCT)
            .overhead_pct;
    o.insert_pct =
        run_pair("insert (autocommit)", (impl){nname, noodle_insert_run, db},
                 (impl){"sqlite3 direct, prepared once (peer)", raw_sqlite_insert_run, &raw},
                 &(impl){"sqlite3 direct, prepared each time", raw_sqlite_insert_each_run, &raw}, 1,
                 SQLITE_INSERTS, SQLITE_ROUNDS, 0)
            .overhead_pct;
    printf("\n");
    noodle_db_close(db);
    noodle_pool_close(pool);
    sqlite3_finalize(raw.sel);
    sqlite3_finalize(raw.ins);
    sqlite3_close(raw.db);
    return o;
}

/* -- PostgreSQL -- */

/* n selects of random keys on c: the statement prepared as "sel" (prepared)
 * or the unnamed one, parsed and planned by the server each time (one round
 * trip: Parse, Bind, Execute, Sync in one packet). ns per select. */
static double raw_pg_selects(PGconn *c, long n, uint64_t seed, bool prepared) {
    char key[24];
    const char *vals[1] = {key};
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        snprintf(key, sizeof key, "%lld", (long long)random_key(&seed));
        PGresult *r = prepared ? PQexecPrepared(c, "sel", 1, vals, NULL, NULL, 0)
                               : PQexecParams(c, pg_select_sql, 1, NULL, vals, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) die_pq("select", c);
        checksum += PQgetvalue(r, 0, 0)[0] + PQgetlength(r, 0, 0);
        PQclear(r);
    }
    return (double)(now_ns() - t0) / (double)n;
}

/* n inserts of new ids on c, as raw_pg_selects ("ins"). ns per insert. */
static double raw_pg_inserts(PGconn *c, long n, bool prepared) {
    char id[24];
    const char *vals[2] = {id, insert_value};
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++) {
        snprintf(id, sizeof id, "%lld", (long long)next_id++);
        PGresult *r = prepared ? PQexecPrepared(c, "ins", 2, vals, NULL, NULL, 0)
                               : PQexecParams(c, pg_insert_sql, 2, NULL, vals, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK || strcmp(PQcmdTuples(r), "1") != 0)
            die_pq("insert", c);
        PQclear(r);
    }
    return (double)(now_ns() - t0) / (double)n;
}

static double raw_pg_select_run(void *ctx, long n, uint64_t seed) {
    return raw_pg_selects(ctx, n, seed, true);
}

static double raw_pg_insert_run(void *ctx, long n, uint64_t seed) {
    (void)seed;
    return raw_pg_inserts(ctx, n, true);
}

/* Context: the unnamed statement (see raw_pg_selects). */
static double raw_pg_select_params_run(void *ctx, long n, uint64_t seed) {
    return raw_pg_selects(ctx, n, seed, false);
}

static double raw_pg_insert_params_run(void *ctx, long n, uint64_t seed) {
    (void)seed;
    return raw_pg_inserts(ctx, n, false);
}

static void pg_exec(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) die_pq(sql, c);
    PQclear(r);
}

static void pg_prepare(PGconn *c, const char *name, const char *sql, int nparams) {
    PGresult *r = PQprepare(c, name, sql, nparams, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) die_pq("PQprepare", c);
    PQclear(r);
}

/* The tables of every PostgreSQL part, made once. */
static void pg_setup(const char *conninfo) {
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) die_pq("connect", c);
    pg_exec(c, "CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL)");
    pg_exec(c, "CREATE TABLE kv2 (id bigint PRIMARY KEY, v text NOT NULL)");
    pg_exec(c, "INSERT INTO kv (id, v) SELECT g, 'value of row ' || g "
               "FROM generate_series(0, 9999) AS g");
    pg_exec(c, "VACUUM ANALYZE kv");
    PQfinish(c);
}

static overheads bench_pg(const char *conninfo) {
    printf("== pg: PostgreSQL (TCP 127.0.0.1), %d rows; noodle_db on a pool (max 4, one in use) "
           "vs libpq with PQprepare once + PQexecPrepared on one persistent connection\n",
           KV_ROWS);
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) die_pq("connect", c);
    pg_prepare(c, "sel", pg_select_sql, 1);
    pg_prepare(c, "ins", pg_insert_sql, 2);
    noodle_pool *pool = open_pool("postgres", conninfo, 4, 1);
    noodle_db *db = open_db(pool);
    /* context: the same with the backend's statement cache off (as behind a
     * transaction-pooling proxy): the switch applies to new connections */
    noodle__pg_set_stmt_cache(false);
    noodle_pool *pool_nc = open_pool("postgres", conninfo, 4, 1);
    noodle__pg_set_stmt_cache(true);
    noodle_db *db_nc = open_db(pool_nc);

    const char *nname = "noodle_db (pool, autocommit)";
    const char *ncname = "noodle_db, statement cache off";
    const char *pname = "libpq direct, PQexecParams (parsed each time)";
    overheads o;
    o.select_pct =
        run_pair("point select", (impl){nname, noodle_select_run, db},
                 (impl){"libpq direct, prepared once (peer)", raw_pg_select_run, c},
                 (impl[]){{pname, raw_pg_select_params_run, c}, {ncname, noodle_select_run, db_nc}},
                 2, PG_SELECTS, PG_ROUNDS, TARGET_OVERHEAD_PG_PCT)
            .overhead_pct;
    o.insert_pct =
        run_pair("insert (autocommit)", (impl){nname, noodle_insert_run, db},
                 (impl){"libpq direct, prepared once (peer)", raw_pg_insert_run, c},
                 (impl[]){{pname, raw_pg_insert_params_run, c}, {ncname, noodle_insert_run, db_nc}},
                 2, PG_INSERTS, PG_ROUNDS, 0)
            .overhead_pct;
    /* is the cache in use? (the pool holds one connection) */
    noodle_conn *conn;
    noodle_error err;
    if (noodle_pool_acquire(pool, &conn, &err) != 0) die_err("acquire", &err);
    uint64_t hits = 0, misses = 0;
    size_t size = 0;
    noodle__pg_stmt_cache_stats(noodle_conn_handle(conn), &hits, &misses, &size);
    noodle_pool_release(pool, &conn);
    printf("  noodle's connection: statement cache hits %llu, misses %llu, %zu statements held\n",
           (unsigned long long)hits, (unsigned long long)misses, size);
    noodle_db_close(db_nc);
    noodle_pool_close(pool_nc);
    printf("\n");
    noodle_db_close(db);
    noodle_pool_close(pool);
    PQfinish(c);
    return o;
}

/* ---- 2. 16 clients: noodle's pool vs a connection per request ------------------------------ */

typedef enum client_kind {
    CK_NOODLE,            /* noodle_db over a pool of CLIENT_POOL */
    CK_DIRECT_PER_REQ,    /* PQconnectdb, PQexecParams, PQfinish: to the server */
    CK_PGB_PER_REQ,       /* the same through pgbouncer (transaction pooling) */
    CK_PGB_PERSISTENT,    /* one connection per thread through pgbouncer, PQexecParams */
    CK_DIRECT_PERSISTENT, /* one direct connection per thread, PQexecPrepared (floor) */
    CK_KINDS
} client_kind;

static const char *const client_names[CK_KINDS] = {
    "(a) noodle_db, pool of 20",
    "(b) libpq, new connection per request",
    "(c) pgbouncer, new connection per request",
    "(d) pgbouncer, persistent conn per thread",
    "(e) libpq, persistent conn per thread",
};

typedef struct client_ctx {
    client_kind kind;
    noodle_db *db;
    const char *conninfo; /* of the server or of pgbouncer, per kind */
    pthread_barrier_t start;
    alignas(64) atomic_bool stop;
} client_ctx;

typedef struct client {
    alignas(64) client_ctx *ctx;
    uint64_t seed;
    uint64_t ops, failures;
    long sum;
    char first_error[640];
} client;

static void client_failed(client *cl, const char *what, const char *msg) {
    cl->failures++;
    if (cl->first_error[0] == '\0') {
        snprintf(cl->first_error, sizeof cl->first_error, "%s: %s", what, msg ? msg : "?");
        char *nl = strchr(cl->first_error, '\n');
        if (nl != NULL) *nl = '\0';
    }
}

/* One point select on c: by the prepared statement "sel" or unnamed. */
static bool pq_select(client *cl, PGconn *c, bool prepared) {
    char key[24];
    const char *vals[1] = {key};
    snprintf(key, sizeof key, "%lld", (long long)random_key(&cl->seed));
    PGresult *r = prepared ? PQexecPrepared(c, "sel", 1, vals, NULL, NULL, 0)
                           : PQexecParams(c, pg_select_sql, 1, NULL, vals, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok)
        cl->sum += PQgetvalue(r, 0, 0)[0] + PQgetlength(r, 0, 0);
    else
        client_failed(cl, "select", PQerrorMessage(c));
    PQclear(r);
    return ok;
}

static void *client_thread(void *arg) {
    client *cl = arg;
    client_ctx *ctx = cl->ctx;
    PGconn *c = NULL;
    bool persistent = ctx->kind == CK_PGB_PERSISTENT || ctx->kind == CK_DIRECT_PERSISTENT;
    if (persistent) { /* connected before the clock starts */
        c = PQconnectdb(ctx->conninfo);
        if (PQstatus(c) != CONNECTION_OK) {
            client_failed(cl, "connect", PQerrorMessage(c));
        } else if (ctx->kind == CK_DIRECT_PERSISTENT) {
            PGresult *r = PQprepare(c, "sel", pg_select_sql, 1, NULL);
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                client_failed(cl, "prepare", PQerrorMessage(c));
            PQclear(r);
        }
    }
    pthread_barrier_wait(&ctx->start);
    if (cl->failures > 0) goto out;
    while (!atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
        bool ok = false;
        switch (ctx->kind) {
        case CK_NOODLE: {
            noodle_value k = noodle_int64(random_key(&cl->seed));
            noodle_rows *r;
            noodle_error err;
            const char *s;
            size_t len;
            if (noodle_db_query(ctx->db, NULL, select_sql, &k, 1, &r, &err) != 0) {
                client_failed(cl, "noodle_db_query", err.message);
                break;
            }
            if (noodle_rows_text(r, 0, 0, &s, &len, &err) == 0) {
                cl->sum += s[0] + (long)len;
                ok = true;
            } else {
                client_failed(cl, "noodle_rows_text", err.message);
            }
            noodle_rows_free(r);
            break;
        }
        case CK_DIRECT_PER_REQ:
        case CK_PGB_PER_REQ: {
            PGconn *pc = PQconnectdb(ctx->conninfo);
            if (PQstatus(pc) == CONNECTION_OK)
                ok = pq_select(cl, pc, false);
            else
                client_failed(cl, "connect", PQerrorMessage(pc));
            PQfinish(pc);
            break;
        }
        case CK_PGB_PERSISTENT: ok = pq_select(cl, c, false); break;
        case CK_DIRECT_PERSISTENT: ok = pq_select(cl, c, true); break;
        case CK_KINDS: break;
        }
        /* count what completed inside the measured window */
        if (ok && !atomic_load_explicit(&ctx->stop, memory_order_relaxed)) cl->ops++;
    }
out:
    if (c != NULL) PQfinish(c);
    return NULL;
}

typedef struct client_result {
    uint64_t ops, failures;
    int64_t wall_ns;
    char first_error[640];
} client_result;

/* CLIENTS threads of one kind for ms; adds to *res. */
static void run_clients(client_ctx *ctx, client_kind kind, int64_t ms, client_result *res) {
    ctx->kind = kind;
    atomic_store(&ctx->stop, false);
    if (pthread_barrier_init(&ctx->start, NULL, CLIENTS + 1) != 0) die("barrier");
    client *cl = aligned_alloc(64, sizeof *cl * CLIENTS);
    pthread_t t[CLIENTS];
    if (cl == NULL) die("out of memory");
    for (int i = 0; i < CLIENTS; i++) {
        cl[i] = (client){.ctx = ctx, .seed = 0x2545F4914F6CDD1DULL * (uint64_t)(i + 7)};
        start_thread(&t[i], client_thread, &cl[i]);
    }
    pthread_barrier_wait(&ctx->start);
    int64_t t0 = now_ns();
    sleep_ms(ms);
    atomic_store(&ctx->stop, true);
    res->wall_ns += now_ns() - t0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(t[i], NULL);
        res->ops += cl[i].ops;
        res->failures += cl[i].failures;
        checksum += cl[i].sum;
        if (res->first_error[0] == '\0' && cl[i].first_error[0] != '\0')
            memcpy(res->first_error, cl[i].first_error, sizeof res->first_error);
    }
    pthread_barrier_destroy(&ctx->start);
    free(cl);
}

static double qps(const client_result *r) {
    return r->wall_ns > 0 ? (double)r->ops / ((double)r->wall_ns / 1e9) : NAN;
}

typedef struct clients_summary {
    double noodle_qps, pgb_qps, direct_qps;
    double ratio_vs_pgbouncer, ratio_vs_direct;
} clients_summary;

static void pgb_at_exit(void) { pgb_stop(); }

/* Each kind runs CLIENT_RUN_MS in two halves, in the order a b c d e, then
 * e d c b a, each half after CLIENT_WARMUP_MS of the same load (not
 * counted): a drift of the machine's load weighs on every kind alike. */
static clients_summary bench_clients(const noodle_pg_server *srv, const char *conninfo) {
    printf("== clients: %d threads, point selects on PostgreSQL, %d ms each (two halves, order "
           "a..e then e..a, each after %d ms of warm-up)\n",
           CLIENTS, CLIENT_RUN_MS, CLIENT_WARMUP_MS);
    clients_summary sum = {.ratio_vs_pgbouncer = NAN, .ratio_vs_direct = NAN, .pgb_qps = NAN};
    char direct[512], bouncer[256], why[512];
    /* libpq's defaults would first ask for SSL (one more round trip, refused)
     * and look for Kerberos credentials: the per-request peers skip both */
    snprintf(direct, sizeof direct, "%s sslmode=disable gssencmode=disable", conninfo);
    bool have_pgb = pgb_start(noodle_pg_server_port(srv), why, sizeof why);
    if (have_pgb) {
        atexit(pgb_at_exit); /* runs before pg_server's hook, registered earlier */
        snprintf(bouncer, sizeof bouncer,
                 "host=127.0.0.1 port=%d dbname=bench user=postgres sslmode=disable "
                 "gssencmode=disable",
                 pgb.port);
        printf("  pgbouncer %s (pid %ld) on 127.0.0.1:%d: pool_mode transaction, "
               "default_pool_size %d, max_client_conn 200, auth trust%s\n",
               PGBOUNCER, (long)pgb.pgbouncer, pgb.port, CLIENT_POOL,
               geteuid() == 0 ? ", run as postgres" : "");
    } else {
        printf("  pgbouncer: not started: %s -- (c) and (d) skipped\n", why);
    }
    printf("  per-request and pgbouncer conninfo: sslmode=disable gssencmode=disable; every "
           "query is PQexecParams (unnamed: transaction pooling allows no named statements) "
           "except (e), PQexecPrepared\n");
    fflush(stdout);

    noodle_pool *pool = open_pool("postgres", conninfo, CLIENT_POOL, CLIENT_POOL);
    client_ctx *ctx = aligned_alloc(64, sizeof *ctx);
    if (ctx == NULL) die("out of memory");
    memset(ctx, 0, sizeof *ctx);
    ctx->db = open_db(pool);
    client_result res[CK_KINDS];
    memset(res, 0, sizeof res);
    bool on[CK_KINDS];
    for (int k = 0; k < CK_KINDS; k++)
        on[k] = have_pgb || (k != CK_PGB_PER_REQ && k != CK_PGB_PERSISTENT);
    for (int half = 0; half < 2; half++) {
        for (int i = 0; i < CK_KINDS; i++) {
            int k = half == 0 ? i : CK_KINDS - 1 - i;
            if (!on[k]) continue;
            ctx->conninfo = k == CK_PGB_PER_REQ || k == CK_PGB_PERSISTENT ? bouncer : direct;
            client_result warm = {0};
            run_clients(ctx, (client_kind)k, CLIENT_WARMUP_MS, &warm);
            run_clients(ctx, (client_kind)k, CLIENT_RUN_MS / 2, &res[k]);
        }
    }
    noodle_pool_metrics m;
    noodle_pool_get_metrics(pool, &m);
    noodle_db_close(ctx->db);
    noodle_pool_close(pool);
    free(ctx);
    if (have_pgb) pgb_stop();

    double nq = qps(&res[CK_NOODLE]);
    printf("  %-44s %10s %14s %8s\n", "implementation", "ops/s", "noodle / this", "errors");
    for (int k = 0; k < CK_KINDS; k++) {
        if (!on[k]) {
            printf("  %-44s %10s\n", client_names[k], "skipped");
            continue;
        }
        printf("  %-44s %10.0f %13.2fx %8llu\n", client_names[k], qps(&res[k]), nq / qps(&res[k]),
               (unsigned long long)res[k].failures);
        if (res[k].failures > 0) printf("      first error: %s\n", res[k].first_error);
        if (k == CK_NOODLE)
            printf("      pool: peak %lld connections, opened %llu, acquire wait p99 %.3f ms, "
                   "timeouts %llu\n",
                   (long long)m.peak_total, (unsigned long long)m.opened,
                   (double)noodle_histogram_quantile(&m.acquire_wait, 0.99) / 1e3,
                   (unsigned long long)m.timeouts);
    }

    sum.noodle_qps = nq;
    sum.direct_qps = qps(&res[CK_DIRECT_PER_REQ]);
    sum.ratio_vs_direct = nq / sum.direct_qps;
    if (on[CK_PGB_PER_REQ]) {
        sum.pgb_qps = qps(&res[CK_PGB_PER_REQ]);
        sum.ratio_vs_pgbouncer = nq / sum.pgb_qps;
        printf("  noodle / pgbouncer per request: %.2fx   target > 1: %s\n", sum.ratio_vs_pgbouncer,
               verdict(sum.ratio_vs_pgbouncer > 1.0));
        printf("  noodle / pgbouncer persistent: %.2fx\n", nq / qps(&res[CK_PGB_PERSISTENT]));
    }
    printf("  noodle / direct connection per request: %.2fx\n", sum.ratio_vs_direct);
    printf("  noodle / persistent direct connections with a prepared statement (floor): %.2fx\n",
           nq / qps(&res[CK_DIRECT_PERSISTENT]));
    printf("\n");
    return sum;
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(FILE *f) {
    fprintf(f, "usage: bench_db [sqlite] [pg] [clients] [all]   (default: all)\n");
}

int main(int argc, char **argv) {
    bool run_sqlite = false, run_pg = false, run_clients_part = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "sqlite") == 0)
            run_sqlite = true;
        else if (strcmp(argv[i], "pg") == 0)
            run_pg = true;
        else if (strcmp(argv[i], "clients") == 0)
            run_clients_part = true;
        else if (strcmp(argv[i], "all") == 0)
            run_sqlite = run_pg = run_clients_part = true;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!run_sqlite && !run_pg && !run_clients_part) run_sqlite = run_pg = run_clients_part = true;
    install_signal_handlers(); /* after pg_server's (a constructor): ours runs first */
    int64_t t0 = now_ns();
    print_load("at start");

    overheads sq = {0}, pg = {0};
    clients_summary cs = {0};
    if (run_sqlite) sq = bench_sqlite();
    if (run_pg || run_clients_part) {
        /* the pool, pgbouncer's pool and 16 clients at once, with room for
         * backends of per-request connections that are still exiting */
        noodle_pg_server_options o = {.extra_conf = "max_connections = 200\n"};
        noodle_pg_server *srv;
        char errbuf[1024];
        int64_t s0 = now_ns();
        if (noodle_pg_server_start(&o, &srv, errbuf, sizeof errbuf) != 0) {
            fprintf(stderr, "bench_db: cannot start PostgreSQL: %s\n", errbuf);
            return 1;
        }
        const char *conninfo = noodle_pg_server_conninfo(srv);
        pg_setup(conninfo);
        char version[128];
        if (noodle_pg_server_query(srv, "SHOW server_version", version, sizeof version) != 0)
            snprintf(version, sizeof version, "?");
        printf("PostgreSQL %s started in %.1f s: %s\n\n", version, (double)(now_ns() - s0) / 1e9,
               conninfo);
        if (run_pg) pg = bench_pg(conninfo);
        if (run_clients_part) cs = bench_clients(srv, conninfo);
        noodle_pg_server_stop(srv);
    }

    print_load("at end");
    printf("total %.1f s (checksum %ld)\n", (double)(now_ns() - t0) / 1e9, checksum);
    printf("summary");
    if (run_pg)
        printf(" overhead_pg_pct=%.1f overhead_pg_insert_pct=%.1f", pg.select_pct, pg.insert_pct);
    if (run_sqlite)
        printf(" overhead_sqlite_pct=%.1f overhead_sqlite_insert_pct=%.1f", sq.select_pct,
               sq.insert_pct);
    if (run_clients_part)
        printf(" ratio_vs_pgbouncer=%.2f ratio_vs_direct=%.2f noodle_qps_16=%.0f "
               "pgbouncer_qps_16=%.0f",
               cs.ratio_vs_pgbouncer, cs.ratio_vs_direct, cs.noodle_qps, cs.pgb_qps);
    printf("\n");
    return 0;
}
