/* System resource sampler for the performance monitor (Linux: /proc and
 * statvfs). Internal: not installed, not part of the API. See src/sysinfo.c.
 */
#ifndef NOODLE_SYSINFO_H
#define NOODLE_SYSINFO_H

#include <stdint.h>

#include "noodle/error.h"

typedef struct noodle_sys_sample {
    double cpu_user_s, cpu_system_s;      /* process CPU time (from /proc/self/stat, clock ticks / sysconf(_SC_CLK_TCK)) */
    int64_t rss_bytes;                     /* resident set (/proc/self/statm field 2 * page size) */
    int64_t mem_total_bytes, mem_available_bytes; /* system (/proc/meminfo MemTotal, MemAvailable) */
    int64_t io_read_bytes, io_write_bytes; /* process storage I/O (/proc/self/io read_bytes / write_bytes; often unreadable in containers: -1 then) */
    int64_t disk_total_bytes, disk_free_bytes, disk_available_bytes; /* statvfs(disk_path): f_blocks/f_bfree/f_bavail * f_frsize */
    int64_t sample_ns;                     /* how long this sample took (CLOCK_MONOTONIC) */
} noodle_sys_sample;

/* Fill *out; every field that could not be read is -1 (-1.0 for the doubles).
 * disk_path NULL or "": the disk fields are -1. Returns 0 when every
 * requested source was read, else NOODLE_E_MONITOR_SAMPLE_FAILED (6064) naming
 * the first source that failed (the other fields are still filled).
 * out NULL: 6061. Borrows disk_path for the call only; allocates nothing;
 * safe to call from any thread. */
int noodle__sys_sample(const char *disk_path, noodle_sys_sample *out, noodle_error *err);

#endif
