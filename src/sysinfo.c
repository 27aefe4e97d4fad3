/* System resource sampler: what the performance monitor measures of the
 * process and the machine (CPU time, resident memory, system memory, storage
 * I/O, disk space).
 *
 * Invariants
 *  1. Every value is a reading of the kernel (/proc or statvfs) taken during
 *     this call, or -1 when it could not be read: never a default, never a
 *     value left over from an earlier sample.
 *  2. Each source is read into one bounded stack buffer; a file longer than
 *     the buffer is cut, and a key or field not found in what was read counts
 *     as a failure of that source (-1), never as a read past the buffer.
 *  3. /proc/self/stat is parsed after the last ')': the command name before it
 *     may hold spaces and parentheses.
 *  4. Byte counts that would overflow int64_t are -1, not wrapped.
 */
#include "sysinfo.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "noodle/clock.h"

#define FORMAT_ERROR (-1) /* a reader's result: the file did not have the expected form */

/* ---- reading and parsing --------------------------------------------------------------------- */

/* Read at most size-1 bytes of path into buf and terminate it; when the file
 * is longer, keep only its whole lines (no number cut in two). 0 or an errno. */
static int read_text(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    size_t len = 0;
    int rc = 0;
    while (len < size - 1) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) rc = errno;
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    if (len == size - 1) {
        char *last = strrchr(buf, '\n');
        *(last != NULL ? last + 1 : buf) = '\0';
    }
    return rc;
}

/* The unsigned decimal number at *p (leading blanks skipped), or -1; *p moves past it. */
static int64_t parse_count(const char **p) {
    const char *s = *p;
    while (*s == ' ' || *s == '\t') s++;
    if (*s < '0' || *s > '9') return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0) return -1;
    *p = end;
    return (int64_t)v;
}

/* The number after key at the start of a line of text ("MemTotal:  123 kB"), or -1. */
static int64_t keyed_count(const char *text, const char *key) {
    size_t klen = strlen(key);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, key, klen) == 0) {
            const char *p = line + klen;
            return parse_count(&p);
        }
        line = strchr(line, '\n');
        if (line != NULL) line++;
    }
    return -1;
}

/* n * unit, or -1 when n is unknown or the product overflows int64_t. */
static int64_t bytes_of(int64_t n, int64_t unit) {
    int64_t r;
    if (n < 0 || unit <= 0 || __builtin_mul_overflow(n, unit, &r)) return -1;
    return r;
}

/* ---- the sources ----------------------------------------------------------------------------- */

/* utime and stime: the 12th and 13th fields after the ')' closing the name. */
static int read_cpu(noodle_sys_sample *out) {
    char buf[2048];
    int rc = read_text("/proc/self/stat", buf, sizeof buf);
    if (rc != 0) return rc;
    const char *p = strrchr(buf, ')');
    long tck = sysconf(_SC_CLK_TCK);
    if (p == NULL || tck <= 0) return FORMAT_ERROR;
    p++;
    for (int field = 3; field < 14; field++) { /* skip state .. cmajflt */
        while (*p == ' ') p++;
        while (*p != ' ' && *p != '\0') p++;
    }
    int64_t user = parse_count(&p), sys = parse_count(&p);
    if (user < 0 || sys < 0) return FORMAT_ERROR;
    out->cpu_user_s = (double)user / (double)tck;
    out->cpu_system_s = (double)sys / (double)tck;
    return 0;
}

static int read_rss(noodle_sys_sample *out) {
    char buf[256];
    int rc = read_text("/proc/self/statm", buf, sizeof buf);
    if (rc != 0) return rc;
    const char *p = buf;
    int64_t size = parse_count(&p), resident = parse_count(&p);
    out->rss_bytes = size < 0 ? -1 : bytes_of(resident, sysconf(_SC_PAGESIZE));
    return out->rss_bytes < 0 ? FORMAT_ERROR : 0;
}

/* MemTotal and MemAvailable are among the first lines (kB). */
static int read_memory(noodle_sys_sample *out) {
    char buf[1024];
    int rc = read_text("/proc/meminfo", buf, sizeof buf);
    if (rc != 0) return rc;
    out->mem_total_bytes = bytes_of(keyed_count(buf, "MemTotal:"), 1024);
    out->mem_available_bytes = bytes_of(keyed_count(buf, "MemAvailable:"), 1024);
    return out->mem_total_bytes < 0 || out->mem_available_bytes < 0 ? FORMAT_ERROR : 0;
}

static int read_io(noodle_sys_sample *out) {
    char buf[512];
    int rc = read_text("/proc/self/io", buf, sizeof buf);
    if (rc != 0) return rc;
    out->io_read_bytes = keyed_count(buf, "read_bytes:");
    out->io_write_bytes = keyed_count(buf, "write_bytes:");
    return out->io_read_bytes < 0 || out->io_write_bytes < 0 ? FORMAT_ERROR : 0;
}

static int read_disk(const char *path, noodle_sys_sample *out) {
    struct statvfs v;
    if (statvfs(path, &v) != 0) return errno;
    int64_t unit = v.f_frsize > 0 ? (int64_t)v.f_frsize : (int64_t)v.f_bsize;
    out->disk_total_bytes = bytes_of((int64_t)v.f_blocks, unit);
    out->disk_free_bytes = bytes_of((int64_t)v.f_bfree, unit);
    out->disk_available_bytes = bytes_of((int64_t)v.f_bavail, unit);
    return out->disk_total_bytes < 0 || out->disk_free_bytes < 0 || out->disk_available_bytes < 0
               ? FORMAT_ERROR
               : 0;
}

/* ---- the sample ------------------------------------------------------------------------------ */

/* Record the first failed source (rc: a reader's result) in err; later ones are ignored. */
static void note(int *status, noodle_error *err, int rc, const char *source, const char *path) {
    if (rc == 0 || *status != 0) return;
    *status = NOODLE_ERR(err, NOODLE_E_MONITOR_SAMPLE_FAILED, "cannot measure %s \"%s\": %s",
                         source, path, rc == FORMAT_ERROR ? "unexpected contents" : strerror(rc));
}

int noodle__sys_sample(const char *disk_path, noodle_sys_sample *out, noodle_error *err) {
    if (out == NULL)
        return NOODLE_ERR(err, NOODLE_E_MONITOR_INVALID_ARGUMENT, "sys sample: out is NULL");
    int64_t start = noodle_clock_now(noodle_clock_real());
    *out = (noodle_sys_sample){-1.0, -1.0, -1, -1, -1, -1, -1, -1, -1, -1, -1};
    int status = 0;
    note(&status, err, read_cpu(out), "CPU time from", "/proc/self/stat");
    note(&status, err, read_rss(out), "resident memory from", "/proc/self/statm");
    note(&status, err, read_memory(out), "system memory from", "/proc/meminfo");
    note(&status, err, read_io(out), "storage I/O from", "/proc/self/io");
    if (disk_path != NULL && disk_path[0] != '\0')
        note(&status, err, read_disk(disk_path, out), "disk space (statvfs) of", disk_path);
    out->sample_ns = noodle_clock_now(noodle_clock_real()) - start;
    return status;
}
