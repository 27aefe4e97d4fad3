/* The health checker: six checks that measure, a report, two renderers.
 *
 * Written against the public connection layer only (pool / cluster acquire,
 * noodle_conn_validate, _metrics, _integrity) plus statvfs and readdir; no
 * SQL is built here and no other module's internals are touched.
 *
 * Invariants
 *  1. Every number in a result was measured while the check ran, or is -1
 *     with the check's status UNKNOWN and an error (6073) saying why. No
 *     default, constant or cached value stands in for a measurement.
 *  2. Each check has its own deadline (check_timeout after it starts), on
 *     the clock of the pool / cluster (or options.clock); no check can hold
 *     the caller past it. Backup ages are the one exception to "every time
 *     read goes through the noodle_clock": file modification times are
 *     wall-clock times, so they are compared with CLOCK_REALTIME.
 *  3. One connection is held across the checks of a run and given back
 *     before noodle_health_check_* returns; a connection broken by a check
 *     is released (the pool closes it) and another one acquired.
 *  4. A check's status is the worst status of its measures that have
 *     thresholds; the report's overall status is the worst known status of
 *     the applicable checks, and UNKNOWN when that would be HEALTHY while an
 *     applicable check is unknown.
 */
#include "noodle/health.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "internal.h"
#include "text.h"

/* ---- names --------------------------------------------------------------------------------- */

static const char *const status_names[] = {"healthy", "degraded", "unhealthy", "unknown"};
static const char *const check_names[NOODLE_HEALTH_CHECKS] = {
    "connection", "performance", "integrity", "space", "backup", "replication"};

const char *noodle_health_status_name(noodle_health_status s) {
    return (unsigned)s <= NOODLE_HEALTH_UNKNOWN ? status_names[s] : "?";
}

const char *noodle_health_check_name(noodle_health_check_kind k) {
    return (unsigned)k < NOODLE_HEALTH_CHECKS ? check_names[k] : "?";
}

int noodle_health_parse_checks(const char *list, unsigned *out, noodle_error *err) {
    *out = 0;
    if (list == NULL || *list == '\0')
        return NOODLE_ERR(err, NOODLE_E_HEALTH_INVALID_ARGUMENT, "empty list of health checks");
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        unsigned bit = 0;
        if (n == 3 && strncmp(p, "all", 3) == 0) bit = NOODLE_HEALTH_ALL;
        for (int k = 0; k < NOODLE_HEALTH_CHECKS && bit == 0; k++)
            if (strlen(check_names[k]) == n && strncmp(p, check_names[k], n) == 0)
                bit = NOODLE_HEALTH_BIT(k);
        if (bit == 0)
            return NOODLE_ERR(err, NOODLE_E_HEALTH_INVALID_ARGUMENT,
                              "unknown health check '%.*s' (known: connection, performance, "
                              "integrity, space, backup, replication, all)",
                              (int)n, p);
        *out |= bit;
        p += n + (p[n] == ',');
    }
    return 0;
}

/* ---- results ------------------------------------------------------------------------------- */

/* No libm: the library does not link it. */
static double abs_d(double v) { return v < 0 ? -v : v; }
static bool whole(double v) { return abs_d(v) < 1e15 && (double)(int64_t)v == v; }
static double ceil_d(double v) {
    int64_t i = (int64_t)v;
    return (double)i < v ? (double)(i + 1) : (double)i;
}

static void fmt_bytes(char *buf, size_t size, double b) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (abs_d(b) >= 1024 && u < 4) b /= 1024, u++;
    if (u == 0) snprintf(buf, size, "%.0f B", b);
    else snprintf(buf, size, "%.1f %s", b, units[u]);
}

static noodle_health_status judge(double v, bool lower_is_worse, double degraded,
                                  double unhealthy) {
    if (lower_is_worse) {
        if (unhealthy >= 0 && v < unhealthy) return NOODLE_HEALTH_UNHEALTHY;
        if (degraded >= 0 && v < degraded) return NOODLE_HEALTH_DEGRADED;
    } else {
        if (unhealthy >= 0 && v >= unhealthy) return NOODLE_HEALTH_UNHEALTHY;
        if (degraded >= 0 && v >= degraded) return NOODLE_HEALTH_DEGRADED;
    }
    return NOODLE_HEALTH_HEALTHY;
}

/* Add a measure. With thresholds (either >= 0) and a measured value (>= 0),
 * it is judged and the check's status becomes the worse of the two. */
static noodle_health_measure *add_measure(noodle_health_check_result *res, const char *name,
                                          double value, const char *unit, bool lower_is_worse,
                                          double degraded, double unhealthy) {
    if (res->nmeasures == NOODLE_HEALTH_MEASURES) return NULL;
    noodle_health_measure *m = &res->measures[res->nmeasures++];
    noodle__strlcpy(m->name, name, sizeof m->name);
    noodle__strlcpy(m->unit, unit, sizeof m->unit);
    m->value = value;
    m->lower_is_worse = lower_is_worse;
    m->degraded_at = degraded < 0 ? -1 : degraded;
    m->unhealthy_at = unhealthy < 0 ? -1 : unhealthy;
    m->has_thresholds = degraded >= 0 || unhealthy >= 0;
    m->status = value < 0 ? NOODLE_HEALTH_UNKNOWN : NOODLE_HEALTH_HEALTHY;
    if (m->has_thresholds && value >= 0) {
        m->status = judge(value, lower_is_worse, m->degraded_at, m->unhealthy_at);
        if (m->status > res->status) res->status = m->status;
    }
    return m;
}

static void vappend(char *buf, size_t size, const char *fmt, va_list ap) {
    size_t len = strlen(buf);
    if (len + 1 < size) vsnprintf(buf + len, size - len, fmt, ap);
}

static void say(noodle_health_check_result *res, const char *fmt, ...) NOODLE_PRINTF(2, 3);
static void say(noodle_health_check_result *res, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vappend(res->measurement, sizeof res->measurement, fmt, ap);
    va_end(ap);
}

/* The recommendation, set only when the check is not healthy. */
static void advise(noodle_health_check_result *res, const char *fmt, ...) NOODLE_PRINTF(2, 3);
static void advise(noodle_health_check_result *res, const char *fmt, ...) {
    if (res->status == NOODLE_HEALTH_HEALTHY) return;
    va_list ap;
    va_start(ap, fmt);
    res->recommendation[0] = '\0';
    vappend(res->recommendation, sizeof res->recommendation, fmt, ap);
    va_end(ap);
}

/* Status unknown: 6073 wrapping cause (may be NULL), with what could not be
 * measured. Measures already taken stay, but no longer decide the status. */
static void unknown(noodle_health_check_result *res, const noodle_error *cause, const char *fmt,
                    ...) NOODLE_PRINTF(3, 4);
static void unknown(noodle_health_check_result *res, const noodle_error *cause, const char *fmt,
                    ...) {
    char what[384] = "", why[640] = "";
    va_list ap;
    va_start(ap, fmt);
    vappend(what, sizeof what, fmt, ap);
    va_end(ap);
    if (cause != NULL && cause->code != 0) {
        why[0] = ':';
        why[1] = ' ';
        noodle_error_format(cause, why + 2, sizeof why - 2);
    }
    res->status = NOODLE_HEALTH_UNKNOWN;
    NOODLE_ERR(&res->error, NOODLE_E_HEALTH_CHECK_FAILED, "%s check: %s%s",
               check_names[res->kind], what, why);
    if (res->measurement[0] == '\0') say(res, "not measured: %s", what);
}

/* ---- where connections come from ------------------------------------------------------------ */

typedef struct run_ctx {
    noodle_pool *pool;
    noodle_cluster *cluster;
    noodle_route route;
    const noodle_clock *clock;
    const noodle_health_options *o;
    int64_t timeout_ns;
    noodle_conn *conn;         /* held across the checks (invariant 3) */
    noodle_error conn_err;     /* why conn is NULL */
    bool conn_failed;          /* an acquire failed: later checks do not wait again */
    int64_t conn_ns;           /* what the last acquire + validate took */
    bool have_metrics;
    noodle_server_metrics m;
    noodle_error metrics_err;  /* why the metrics are missing */
    noodle_health_report *r;
} run_ctx;

static int acquire(run_ctx *x, int64_t deadline, noodle_conn **c, noodle_error *err) {
    if (x->pool != NULL) return noodle_pool_acquire_until(x->pool, deadline, c, err);
    return noodle_cluster_acquire_until(x->cluster, x->route, deadline, c, err);
}

static void release(run_ctx *x, noodle_conn **c) {
    if (x->pool != NULL) noodle_pool_release(x->pool, c);
    else noodle_cluster_release(x->cluster, c);
}

/* Acquire and validate before deadline; remember the failure. */
static int connect_once(run_ctx *x, int64_t deadline) {
    noodle_error_clear(&x->conn_err);
    int64_t t0 = noodle_clock_now(x->clock);
    int rc = acquire(x, deadline, &x->conn, &x->conn_err);
    if (rc == 0) rc = noodle_conn_validate(x->conn, deadline, &x->conn_err);
    x->conn_ns = noodle_clock_now(x->clock) - t0;
    if (rc != 0) release(x, &x->conn);
    x->conn_failed = rc != 0;
    return rc;
}

/* A usable connection for a check, or unknown. */
static bool need_conn(run_ctx *x, int64_t deadline, noodle_health_check_result *res) {
    if (x->conn != NULL && noodle_conn_get_state(x->conn) == NOODLE_CONN_BROKEN)
        release(x, &x->conn);
    if (x->conn == NULL && (x->conn_failed || connect_once(x, deadline) != 0)) {
        unknown(res, &x->conn_err, "no connection to the database");
        return false;
    }
    return true;
}

static void record_server(run_ctx *x) {
    noodle__strlcpy(x->r->server_version, x->m.server_version, sizeof x->r->server_version);
    x->r->role = x->m.role;
}

/* The server's metrics, read once per run and shared by space, backup and
 * replication. False (with res unknown) when they cannot be read. */
static bool need_metrics(run_ctx *x, int64_t deadline, noodle_health_check_result *res) {
    if (x->have_metrics) return true;
    if (!need_conn(x, deadline, res)) return false;
    if (noodle_conn_metrics(x->conn, deadline, &x->m, &x->metrics_err) != 0) {
        unknown(res, &x->metrics_err, "the server's metrics could not be read");
        return false;
    }
    x->have_metrics = true;
    record_server(x);
    return true;
}

static const char *backend_name(const run_ctx *x) {
    return x->conn != NULL ? noodle_conn_backend(x->conn)->name : x->r->backend;
}

/* ---- connection ----------------------------------------------------------------------------- */

static void check_connection(run_ctx *x, int64_t deadline, noodle_health_check_result *res) {
    const noodle_health_thresholds *t = &x->o->thresholds;
    (void)deadline; /* the run's first acquire already used it */
    if (x->conn == NULL) {
        res->status = NOODLE_HEALTH_UNHEALTHY;
        res->error = x->conn_err;
        add_measure(res, "acquire_validate", -1, "ms", false, (double)t->connection_degraded_ms,
                    (double)t->connection_unhealthy_ms);
        char text[640];
        noodle_error_format(&x->conn_err, text, sizeof text);
        say(res, "acquire + validate failed after %.1f ms: %s", (double)x->conn_ns / 1e6, text);
        advise(res, "The database cannot be reached: check that the server runs, that the URL, "
                    "credentials and network are right, and the pool's connect errors.");
        return;
    }
    add_measure(res, "acquire_validate", (double)x->conn_ns / 1e6, "ms", false,
                (double)t->connection_degraded_ms, (double)t->connection_unhealthy_ms);
    say(res, "acquire + validate round trip took %.3f ms", (double)x->conn_ns / 1e6);
    advise(res, "Connecting is slow: look at the pool's acquire wait (is it exhausted?), the "
                "network latency and the server's load.");
}

/* ---- performance ---------------------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void check_performance(run_ctx *x, int64_t deadline, noodle_health_check_result *res) {
    const noodle_health_thresholds *t = &x->o->thresholds;
    int64_t n = t->performance_samples > 0 ? t->performance_samples : 20;
    if (n > 10000) n = 10000;
    int64_t *lat = malloc((size_t)n * sizeof *lat);
    if (lat == NULL) {
        noodle_error oom;
        NOODLE_ERR(&oom, NOODLE_E_HEALTH_NO_MEMORY, "no memory for %lld samples", (long long)n);
        unknown(res, &oom, "latency samples could not be kept");
        return;
    }
    int64_t ok = 0, errors = 0;
    noodle_error last;
    noodle_error_clear(&last);
    for (int64_t i = 0; i < n; i++) {
        if (noodle_clock_now(x->clock) >= deadline) break;
        if (x->conn != NULL && noodle_conn_get_state(x->conn) == NOODLE_CONN_BROKEN)
            release(x, &x->conn);
        int64_t t0 = noodle_clock_now(x->clock);
        int rc = x->conn == NULL ? acquire(x, deadline, &x->conn, &last) : 0;
        if (rc == 0) rc = noodle_conn_validate(x->conn, deadline, &last);
        if (rc == 0) lat[ok++] = noodle_clock_now(x->clock) - t0;
        else errors++;
    }
    int64_t taken = ok + errors;
    if (taken == 0) {
        free(lat);
        noodle_error late;
        NOODLE_ERR(&late, NOODLE_E_BACKEND_TIMEOUT, "the check's deadline passed before a sample");
        unknown(res, &late, "no round trip could be timed");
        return;
    }
    qsort(lat, (size_t)ok, sizeof *lat, cmp_i64);
    double p99 = ok > 0 ? (double)lat[(99 * ok + 99) / 100 - 1] / 1e6 : -1; /* nearest rank */
    double rate = (double)errors / (double)taken;
    add_measure(res, "p99_latency", p99, "ms", false, t->latency_p99_degraded_ms,
                t->latency_p99_unhealthy_ms);
    add_measure(res, "error_rate", rate, "ratio", false, t->error_rate_degraded,
                t->error_rate_unhealthy);
    say(res, "%lld validate round trips: %lld failed", (long long)taken, (long long)errors);
    if (ok > 0)
        say(res, ", latency median %.3f ms, p99 %.3f ms, max %.3f ms",
            (double)lat[(ok - 1) / 2] / 1e6, p99, (double)lat[ok - 1] / 1e6);
    if (errors > 0) {
        char text[640];
        noodle_error_format(&last, text, sizeof text);
        say(res, "; last failure: %s", text);
    }
    free(lat);
    advise(res, "Round trips are slow or failing: look at the server's load and slow queries, "
                "the network, and the monitor's error counts by code.");
}

/* ---- integrity ------------------------------------------------------------------------------ */

static void check_integrity(run_ctx *x, int64_t deadline, noodle_health_check_result *res) {
    if (!need_conn(x, deadline, res)) return;
    noodle_integrity_result ir;
    noodle_error e;
    if (noodle_conn_integrity(x->conn, x->o->integrity_level, deadline, &ir, &e) != 0) {
        unknown(res, &e, "the integrity check could not run");
        return;
    }
    if (ir.problems < 0) {
        unknown(res, NULL, "%s could not check anything", ir.method);
        return;
    }
    add_measure(res, "problems", (double)ir.problems, "count", false, -1, 1);
    if (ir.checksum_failures >= 0)
        add_measure(res, "checksum_failures", (double)ir.checksum_failures, "count", false, -1, 1);
    say(res, "%s: %lld problem(s)", ir.method, (long long)ir.problems);
    if (ir.first_problem[0]) say(res, ", first: %s", ir.first_problem);
    if (ir.checksum_failures >= 0)
        say(res, "; %lld data checksum failure(s)", (long long)ir.checksum_failures);
    else say(res, "; data checksums not reported (off, or not this backend)");
    advise(res, "The database is damaged: stop writing to it, restore from the last good backup "
                "(or fail over to a healthy standby), and find the cause (disk, memory, "
                "copying a live file).");
}

/* ---- space ---------------------------------------------------------------------------------- */

/* The larger of a percentage of total and an absolute amount; -1 when both off. */
static double space_threshold(double percent, int64_t bytes, double total) {
    double a = percent >= 0 ? ceil_d(percent * total / 100.0) : -1;
    double b = bytes >= 0 ? (double)bytes : -1;
    return a > b ? a : b;
}

static bool space_from_statvfs(run_ctx *x, const char *path, noodle_health_check_result *res,
                               int *why) {
    const noodle_health_thresholds *t = &x->o->thresholds;
    struct statvfs vfs;
    if (statvfs(path, &vfs) != 0) {
        *why = errno;
        return false;
    }
    double total = (double)vfs.f_blocks * (double)vfs.f_frsize;
    double avail = (double)vfs.f_bavail * (double)vfs.f_frsize;
    add_measure(res, "free", avail, "bytes", true,
                space_threshold(t->space_free_percent_degraded, t->space_free_bytes_degraded, total),
                space_threshold(t->space_free_percent_unhealthy, t->space_free_bytes_unhealthy,
                                total));
    add_measure(res, "free_percent", total > 0 ? 100.0 * avail / total : -1, "%", true, -1, -1);
    add_measure(res, "filesystem_size", total, "bytes", true, -1, -1);
    char a[32], s[32];
    fmt_bytes(a, sizeof a, avail);
    fmt_bytes(s, sizeof s, total);
    say(res, "statvfs(%s): %s available of %s (%.1f %%)", path, a, s,
        total > 0 ? 100.0 * avail / total : 0.0);
    return true;
}

static void check_space(run_ctx *x, int64_t deadline, noodle_health_check_result *res) {
    if (!need_metrics(x, deadline, res)) return;
    const noodle_health_thresholds *t = &x->o->thresholds;
    const char *path = x->m.data_path;
    bool is_sqlite = strcmp(backend_name(x), "sqlite") == 0;
    int why = 0;
    if (path[0] != '\0' && space_from_statvfs(x, path, res, &why)) {
        if (x->m.database_size_bytes >= 0) {
            char d[32];
            fmt_bytes(d, sizeof d, (double)x->m.database_size_bytes);
            add_measure(res, "database_size", (double)x->m.database_size_bytes, "bytes", false,
                        (double)t->database_size_degraded_bytes,
                        (double)t->database_size_unhealthy_bytes);
            say(res, "; database size %s", d);
        }
        advise(res, "Free space is low: remove or move old files (logs, backups, WAL archives) "
                    "from this filesystem, grow it, or move the database; a full filesystem "
                    "stops every write.");
        return;
    }
    if (is_sqlite) {
        if (path[0] == '\0') unknown(res, NULL, "an in-memory SQLite database has no filesystem");
        else unknown(res, NULL, "statvfs(%s) failed: %s", path, strerror(why));
        return;
    }
    /* A server whose data directory is not visible from this host. */
    if (x->m.database_size_bytes < 0) {
        unknown(res, NULL, "neither the data directory's filesystem nor the database size "
                           "could be read");
        return;
    }
    char d[32];
    fmt_bytes(d, sizeof d, (double)x->m.database_size_bytes);
    add_measure(res, "database_size", (double)x->m.database_size_bytes, "bytes", false,
                (double)t->database_size_degraded_bytes, (double)t->database_size_unhealthy_bytes);
    say(res, "database size %s (pg_database_size); data directory '%s' not visible from this "
             "host, so its free space is not measured",
        d, path);
    if (!res->measures[0].has_thresholds)
        unknown(res, NULL, "the server's free space cannot be measured from this host; set "
                           "database size thresholds to judge the size alone");
    advise(res, "The database is large for its configured limit: archive or delete old data, "
                "VACUUM, or raise the limit if the disk allows it.");
}

/* ---- backup --------------------------------------------------------------------------------- */

typedef struct newest_file {
    char name[256];
    struct timespec mtime;
    int64_t size;
    int64_t files;
} newest_file;

/* The newest regular file of dir (by mtime). -1 with errno when dir cannot be read. */
static int find_newest(const char *dir, newest_file *out) {
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (d == NULL) return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, 0) != 0 || !S_ISREG(st.st_mode)) continue;
        out->files++;
        if (out->files == 1 || st.st_mtim.tv_sec > out->mtime.tv_sec ||
            (st.st_mtim.tv_sec == out->mtime.tv_sec && st.st_mtim.tv_nsec > out->mtime.tv_nsec)) {
            noodle__strlcpy(out->name, e->d_name, sizeof out->name);
            out->mtime = st.st_mtim;
            out->size = (int64_t)st.st_size;
        }
    }
    closedir(d);
    return 0;
}

static void backup_from_dir(run_ctx *x, const char *dir, noodle_health_check_result *res) {
    const noodle_health_thresholds *t = &x->o->thresholds;
    newest_file f;
    if (find_newest(dir, &f) != 0) {
        unknown(res, NULL, "backup directory '%s' cannot be read: %s", dir, strerror(errno));
        return;
    }
    if (f.files == 0) {
        res->status = NOODLE_HEALTH_UNHEALTHY;
        add_measure(res, "age", -1, "s", false, (double)t->backup_age_degraded_s,
                    (double)t->backup_age_unhealthy_s);
        say(res, "backup directory '%s' holds no regular file", dir);
        advise(res, "No backup exists: run a backup now and schedule one (e.g. daily) that "
                    "writes into '%s'.", dir);
        return;
    }
    struct timespec now; /* wall clock: mtimes are wall-clock times (invariant 2) */
    clock_gettime(CLOCK_REALTIME, &now);
    double age = (double)(now.tv_sec - f.mtime.tv_sec) +
                 (double)(now.tv_nsec - f.mtime.tv_nsec) / 1e9;
    if (age < 0) age = 0; /* a file from the future: as new as can be */
    add_measure(res, "age", age, "s", false, (double)t->backup_age_degraded_s,
                (double)t->backup_age_unhealthy_s);
    add_measure(res, "size", (double)f.size, "bytes", true, -1, (double)t->backup_min_bytes);
    char s[32];
    fmt_bytes(s, sizeof s, (double)f.size);
    say(res, "newest of %lld file(s) in '%s': '%s', %s, modified %.1f h ago", (long long)f.files,
        dir, f.name, s, age / 3600.0);
    advise(res, "The newest backup is too old or too small: check that the backup job runs and "
                "succeeds, and that it writes into '%s'.", dir);
}

static void backup_from_archiver(run_ctx *x, noodle_health_check_result *res) {
    const noodle_health_thresholds *t = &x->o->thresholds;
    const noodle_server_metrics *m = &x->m;
    if (m->archive_archived_count < 0 || m->archive_failed_count < 0) {
        unknown(res, NULL, "no backup directory configured, and no WAL archiver statistics "
                           "(pg_stat_archiver): SQLite, archive_mode off, or not readable");
        return;
    }
    if (m->archive_archived_count == 0 && m->archive_failed_count == 0) {
        unknown(res, NULL, "no backup directory configured and the WAL archiver has never run "
                           "(archive_mode off?)");
        return;
    }
    double age = m->archive_last_archived_age_ms >= 0 ? m->archive_last_archived_age_ms / 1e3 : -1;
    add_measure(res, "last_archived_age", age, "s", false, (double)t->backup_age_degraded_s,
                (double)t->backup_age_unhealthy_s);
    add_measure(res, "failed_count", (double)m->archive_failed_count, "count", false, -1, -1);
    say(res, "pg_stat_archiver: %lld WAL file(s) archived, %lld failed", 
        (long long)m->archive_archived_count, (long long)m->archive_failed_count);
    if (age >= 0) say(res, ", last archived %.1f h ago", age / 3600.0);
    if (m->archive_last_failed_age_ms >= 0)
        say(res, ", last failure %.1f h ago", m->archive_last_failed_age_ms / 3.6e6);
    bool failing = m->archive_last_failed_age_ms >= 0 &&
                   (m->archive_last_archived_age_ms < 0 ||
                    m->archive_last_failed_age_ms < m->archive_last_archived_age_ms);
    if (failing) {
        res->status = NOODLE_HEALTH_UNHEALTHY;
        say(res, "; the last attempt failed");
    } else if (age < 0) {
        res->status = NOODLE_HEALTH_UNHEALTHY;
        say(res, "; nothing archived successfully yet");
    }
    advise(res, "WAL archiving is failing or stale: read the server log for archive_command's "
                "errors and check the archive's destination (space, permissions).");
}

static void check_backup(run_ctx *x, int64_t deadline, noodle_health_check_result *res) {
    if (x->o->backup_dir != NULL && x->o->backup_dir[0] != '\0') {
        backup_from_dir(x, x->o->backup_dir, res);
        return;
    }
    if (!need_metrics(x, deadline, res)) return;
    backup_from_archiver(x, res);
}

/* ---- replication ---------------------------------------------------------------------------- */

static void replication_primary(run_ctx *x, noodle_health_check_result *res) {
    const noodle_health_thresholds *t = &x->o->thresholds;
    const noodle_server_metrics *m = &x->m;
    int64_t expected = x->o->expected_standbys;
    if (m->standby_count < 0) {
        unknown(res, NULL, "the primary's standbys (pg_stat_replication) could not be read");
        return;
    }
    int64_t max_bytes = -1, max_ms = -1;
    int64_t shown = m->standby_count < NOODLE_STANDBYS_REPORTED ? m->standby_count
                                                                 : NOODLE_STANDBYS_REPORTED;
    add_measure(res, "standbys", (double)m->standby_count, "count", true, -1,
                expected > 0 ? (double)expected : -1);
    say(res, "pg_stat_replication: %lld standby(s) connected", (long long)m->standby_count);
    if (expected > 0) say(res, ", %lld expected", (long long)expected);
    for (int64_t i = 0; i < shown; i++) {
        const noodle_standby_status *s = &m->standbys[i];
        if (s->lag_bytes > max_bytes) max_bytes = s->lag_bytes;
        if (s->replay_lag_ms > max_ms) max_ms = s->replay_lag_ms;
        say(res, "%s %s (%s): lag %lld bytes, replay lag %lld ms", i == 0 ? ";" : ",", s->name,
            s->state, (long long)s->lag_bytes, (long long)s->replay_lag_ms);
    }
    if (max_bytes < 0 && m->replication_lag_bytes >= 0) max_bytes = m->replication_lag_bytes;
    if (m->standby_count > 0) {
        add_measure(res, "max_lag_bytes", (double)max_bytes, "bytes", false,
                    (double)t->replication_lag_degraded_bytes,
                    (double)t->replication_lag_unhealthy_bytes);
        add_measure(res, "max_replay_lag", (double)max_ms, "ms", false,
                    (double)t->replication_lag_degraded_ms, (double)t->replication_lag_unhealthy_ms);
        if (max_ms < 0) say(res, " (-1: not reported, e.g. no recent WAL activity)");
    }
    advise(res, "Replication is behind or a standby is missing: check that every standby runs "
                "and streams (its log, the network), and its load; a standby that cannot keep "
                "up is no safe failover target.");
}

static void replication_standby(run_ctx *x, noodle_health_check_result *res) {
    const noodle_health_thresholds *t = &x->o->thresholds;
    const noodle_server_metrics *m = &x->m;
    if (m->replication_delay_ms < 0) {
        unknown(res, NULL, "the standby's replay delay could not be read (nothing replayed yet?)");
        return;
    }
    add_measure(res, "replay_delay", (double)m->replication_delay_ms, "ms", false,
                (double)t->replication_lag_degraded_ms, (double)t->replication_lag_unhealthy_ms);
    add_measure(res, "receive_replay_gap", (double)m->replication_lag_bytes, "bytes", false,
                (double)t->replication_lag_degraded_bytes,
                (double)t->replication_lag_unhealthy_bytes);
    say(res, "standby: last replayed transaction %lld ms ago, %lld bytes received but not "
             "replayed (an idle primary also makes the delay grow)",
        (long long)m->replication_delay_ms, (long long)m->replication_lag_bytes);
    advise(res, "This standby is behind its primary: check its connection to the primary, its "
                "replay (long queries on it can pause replay), and its load.");
}

static void check_replication(run_ctx *x, int64_t deadline, noodle_health_check_result *res) {
    if (!need_metrics(x, deadline, res)) return;
    if (strcmp(backend_name(x), "sqlite") == 0) {
        res->applicable = false;
        unknown(res, NULL, "SQLite has no replication (not applicable)");
        return;
    }
    switch (x->m.role) {
    case NOODLE_ROLE_PRIMARY: replication_primary(x, res); break;
    case NOODLE_ROLE_STANDBY: replication_standby(x, res); break;
    default:
        unknown(res, NULL, "the server's role is %s: neither primary nor standby",
                noodle_role_name(x->m.role));
    }
}

/* ---- the run -------------------------------------------------------------------------------- */

typedef void (*check_fn)(run_ctx *x, int64_t deadline, noodle_health_check_result *res);
static const check_fn check_fns[NOODLE_HEALTH_CHECKS] = {
    check_connection, check_performance, check_integrity,
    check_space,      check_backup,      check_replication};

static noodle_health_status overall_of(const noodle_health_report *r) {
    noodle_health_status worst = NOODLE_HEALTH_HEALTHY;
    bool any_unknown = false;
    for (size_t i = 0; i < r->count; i++) {
        const noodle_health_check_result *c = &r->checks[i];
        if (!c->applicable) continue;
        if (c->status == NOODLE_HEALTH_UNKNOWN) any_unknown = true;
        else if (c->status > worst) worst = c->status;
    }
    return worst == NOODLE_HEALTH_HEALTHY && any_unknown ? NOODLE_HEALTH_UNKNOWN : worst;
}

static void run_checks(run_ctx *x) {
    noodle_health_report *r = x->r;
    unsigned mask = x->o->checks ? x->o->checks : NOODLE_HEALTH_ALL;
    int64_t start = noodle_clock_now(x->clock);
    /* The first acquire is the connection check's measurement. */
    connect_once(x, noodle_deadline_after(x->clock, x->timeout_ns));
    if (x->conn != NULL) {
        noodle__strlcpy(r->backend, noodle_conn_backend(x->conn)->name, sizeof r->backend);
        noodle_mask_secrets(noodle_conn_endpoint(x->conn), r->endpoint, sizeof r->endpoint);
    }
    for (int k = 0; k < NOODLE_HEALTH_CHECKS; k++) {
        if (!(mask & NOODLE_HEALTH_BIT(k))) continue;
        noodle_health_check_result *res = &r->checks[r->count++];
        res->kind = (noodle_health_check_kind)k;
        res->applicable = true;
        int64_t t0 = noodle_clock_now(x->clock);
        check_fns[k](x, noodle_deadline_after(x->clock, x->timeout_ns), res);
        res->elapsed_ns = noodle_clock_now(x->clock) - t0;
    }
    if (x->conn != NULL) release(x, &x->conn);
    r->overall = overall_of(r);
    r->elapsed_ns = noodle_clock_now(x->clock) - start;
}

static int run(run_ctx *x, const noodle_health_options *opts, noodle_health_report **out,
               noodle_error *err) {
    static const noodle_health_options defaults = NOODLE_HEALTH_OPTIONS_INIT;
    noodle_error local;
    if (err == NULL) err = &local;
    noodle_error_clear(err);
    if (out == NULL)
        return NOODLE_ERR(err, NOODLE_E_HEALTH_INVALID_ARGUMENT, "health check: out is NULL");
    *out = NULL;
    if (opts == NULL) opts = &defaults;
    if (opts->struct_size != sizeof(noodle_health_options))
        return NOODLE_ERR(err, NOODLE_E_HEALTH_INVALID_ARGUMENT,
                          "health options: struct_size %zu, expected %zu (use "
                          "NOODLE_HEALTH_OPTIONS_INIT)",
                          opts->struct_size, sizeof(noodle_health_options));
    if (opts->checks & ~NOODLE_HEALTH_ALL)
        return NOODLE_ERR(err, NOODLE_E_HEALTH_INVALID_ARGUMENT,
                          "health options: unknown check bits 0x%x", opts->checks & ~NOODLE_HEALTH_ALL);
    x->r = calloc(1, sizeof *x->r);
    if (x->r == NULL)
        return NOODLE_ERR(err, NOODLE_E_HEALTH_NO_MEMORY, "no memory for a health report");
    x->o = opts;
    if (opts->clock != NULL) x->clock = opts->clock;
    x->timeout_ns = NOODLE_MS(opts->check_timeout_ms > 0 ? opts->check_timeout_ms : 5000);
    run_checks(x);
    *out = x->r;
    return 0;
}

int noodle_health_check_pool(noodle_pool *pool, const noodle_health_options *opts,
                             noodle_health_report **out, noodle_error *err) {
    if (pool == NULL) {
        if (out != NULL) *out = NULL;
        return NOODLE_ERR(err, NOODLE_E_HEALTH_INVALID_ARGUMENT, "health check: pool is NULL");
    }
    run_ctx x = {.pool = pool, .clock = noodle_pool_clock(pool)};
    return run(&x, opts, out, err);
}

int noodle_health_check_cluster(noodle_cluster *cluster, noodle_route route,
                                const noodle_health_options *opts, noodle_health_report **out,
                                noodle_error *err) {
    if (cluster == NULL) {
        if (out != NULL) *out = NULL;
        return NOODLE_ERR(err, NOODLE_E_HEALTH_INVALID_ARGUMENT, "health check: cluster is NULL");
    }
    run_ctx x = {.cluster = cluster, .route = route, .clock = noodle_cluster_clock(cluster)};
    return run(&x, opts, out, err);
}

void noodle_health_report_free(noodle_health_report *report) { free(report); }

const noodle_health_check_result *noodle_health_report_find(const noodle_health_report *report,
                                                            noodle_health_check_kind kind) {
    for (size_t i = 0; report != NULL && i < report->count; i++)
        if (report->checks[i].kind == kind) return &report->checks[i];
    return NULL;
}

/* ---- rendering ------------------------------------------------------------------------------ */

typedef noodle__text sbuf;

/* A number as text: whole numbers without a fraction, others with 6
 * significant digits. */
static void fmt_num(char *buf, size_t size, double v) {
    if (whole(v) || (abs_d(v) >= 1e6 && abs_d(v) < 1e15)) snprintf(buf, size, "%.0f", v);
    else snprintf(buf, size, "%.6g", v);
}

/* For people: whole numbers as they are, others to 3 significant digits
 * (2.61 ms, 0.013 ms, 30.7 %), never in exponent form above 1. */
static void fmt_short(char *buf, size_t size, double v) {
    if (whole(v) || abs_d(v) >= 100) snprintf(buf, size, "%.0f", v);
    else snprintf(buf, size, "%.3g", v);
}

static void text_measure(sbuf *b, const noodle_health_measure *m) {
    char v[48], d[48], u[48];
    bool bytes = strcmp(m->unit, "bytes") == 0, count = strcmp(m->unit, "count") == 0;
    if (m->value < 0) snprintf(v, sizeof v, "unknown");
    else if (bytes) fmt_bytes(v, sizeof v, m->value);
    else {
        char n[32];
        fmt_short(n, sizeof n, m->value);
        snprintf(v, sizeof v, "%s%s%s", n, count ? "" : " ", count ? "" : m->unit);
    }
    noodle__text_printf(b, "%s %s", m->name, v);
    if (!m->has_thresholds) return;
    const char *op = m->lower_is_worse ? "<" : ">=";
    const char *unit = bytes || count ? "" : m->unit;
    if (bytes) {
        fmt_bytes(d, sizeof d, m->degraded_at);
        fmt_bytes(u, sizeof u, m->unhealthy_at);
    } else {
        fmt_short(d, sizeof d, m->degraded_at);
        fmt_short(u, sizeof u, m->unhealthy_at);
    }
    noodle__text_printf(b, " (");
    if (m->degraded_at >= 0)
        noodle__text_printf(b, "degraded %s %s%s%s%s", op, d, *unit ? " " : "", unit,
               m->unhealthy_at >= 0 ? ", " : "");
    if (m->unhealthy_at >= 0) noodle__text_printf(b, "unhealthy %s %s%s%s", op, u, *unit ? " " : "", unit);
    noodle__text_printf(b, ")");
}

int noodle_health_report_text(const noodle_health_report *r, char **out, noodle_error *err) {
    if (out != NULL) *out = NULL;
    if (r == NULL || out == NULL)
        return NOODLE_ERR(err, NOODLE_E_HEALTH_INVALID_ARGUMENT, "report_text: NULL argument");
    sbuf b = {0};
    noodle__text_printf(&b, "overall: %s", noodle_health_status_name(r->overall));
    if (r->backend[0])
        noodle__text_printf(&b, " (%s%s%s, %s)", r->server_version[0] ? r->server_version : r->backend,
               r->role ? ", " : "", r->role ? noodle_role_name(r->role) : "", r->endpoint);
    noodle__text_printf(&b, ", %.1f ms\n", (double)r->elapsed_ns / 1e6);
    for (size_t i = 0; i < r->count; i++) {
        const noodle_health_check_result *c = &r->checks[i];
        noodle__text_printf(&b, "%-12s %-10s", noodle_health_check_name(c->kind),
               c->applicable ? noodle_health_status_name(c->status) : "n/a");
        for (size_t j = 0; j < c->nmeasures; j++) {
            noodle__text_printf(&b, j ? "; " : " ");
            text_measure(&b, &c->measures[j]);
        }
        noodle__text_printf(&b, "\n  measured: %s\n", c->measurement);
        if (c->recommendation[0]) noodle__text_printf(&b, "  advice: %s\n", c->recommendation);
        if (c->error.code != 0) {
            char e[1024];
            noodle_error_format(&c->error, e, sizeof e);
            noodle__text_printf(&b, "  error: %s\n", e);
        }
    }
    return noodle__text_finish(&b, out, NULL, NOODLE_E_HEALTH_NO_MEMORY, "the health report", err);
}

static void json_str(sbuf *b, const char *s) { noodle__text_json(b, s, strlen(s)); }

static void json_num(sbuf *b, double v, bool null_when_negative) {
    char t[48];
    if (v != v || abs_d(v) > 1e300 || (null_when_negative && v < 0)) { /* NaN, inf */
        noodle__text_printf(b, "null");
        return;
    }
    fmt_num(t, sizeof t, v);
    noodle__text_printf(b, "%s", t);
}

static void json_measure(sbuf *b, const noodle_health_measure *m) {
    noodle__text_printf(b, "{\"name\":");
    json_str(b, m->name);
    noodle__text_printf(b, ",\"value\":");
    json_num(b, m->value, true);
    noodle__text_printf(b, ",\"unit\":");
    json_str(b, m->unit);
    noodle__text_printf(b, ",\"lower_is_worse\":%s,\"degraded_at\":", m->lower_is_worse ? "true" : "false");
    json_num(b, m->degraded_at, true);
    noodle__text_printf(b, ",\"unhealthy_at\":");
    json_num(b, m->unhealthy_at, true);
    if (m->has_thresholds) noodle__text_printf(b, ",\"status\":\"%s\"}", noodle_health_status_name(m->status));
    else noodle__text_printf(b, ",\"status\":null}");
}

static void json_check(sbuf *b, const noodle_health_check_result *c) {
    noodle__text_printf(b, "{\"check\":\"%s\",\"status\":\"%s\",\"applicable\":%s,\"measures\":[",
           noodle_health_check_name(c->kind), noodle_health_status_name(c->status),
           c->applicable ? "true" : "false");
    for (size_t j = 0; j < c->nmeasures; j++) {
        if (j) noodle__text_printf(b, ",");
        json_measure(b, &c->measures[j]);
    }
    noodle__text_printf(b, "],\"measurement\":");
    json_str(b, c->measurement);
    noodle__text_printf(b, ",\"recommendation\":");
    json_str(b, c->recommendation);
    if (c->error.code != 0) {
        noodle__text_printf(b, ",\"error\":{\"code\":%d,\"name\":", c->error.code);
        json_str(b, noodle_code_name(c->error.code) ? noodle_code_name(c->error.code) : "");
        noodle__text_printf(b, ",\"message\":");
        json_str(b, c->error.message);
        noodle__text_printf(b, ",\"detail\":");
        json_str(b, c->error.detail);
        noodle__text_printf(b, "}");
    } else {
        noodle__text_printf(b, ",\"error\":null");
    }
    noodle__text_printf(b, ",\"elapsed_ms\":%.3f}", (double)c->elapsed_ns / 1e6);
}

int noodle_health_report_json(const noodle_health_report *r, char **out, noodle_error *err) {
    if (out != NULL) *out = NULL;
    if (r == NULL || out == NULL)
        return NOODLE_ERR(err, NOODLE_E_HEALTH_INVALID_ARGUMENT, "report_json: NULL argument");
    sbuf b = {0};
    noodle__text_printf(&b, "{\"overall\":\"%s\",\"backend\":", noodle_health_status_name(r->overall));
    json_str(&b, r->backend);
    noodle__text_printf(&b, ",\"endpoint\":");
    json_str(&b, r->endpoint);
    noodle__text_printf(&b, ",\"server_version\":");
    json_str(&b, r->server_version);
    noodle__text_printf(&b, ",\"role\":\"%s\",\"elapsed_ms\":%.3f,\"checks\":[", noodle_role_name(r->role),
           (double)r->elapsed_ns / 1e6);
    for (size_t i = 0; i < r->count; i++) {
        if (i) noodle__text_printf(&b, ",");
        json_check(&b, &r->checks[i]);
    }
    noodle__text_printf(&b, "]}\n");
    return noodle__text_finish(&b, out, NULL, NOODLE_E_HEALTH_NO_MEMORY, "the health report", err);
}
