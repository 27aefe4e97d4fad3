/* The system resource sampler: every value is a real measurement of this
 * process or machine, checked against the kernel's other interfaces
 * (getrusage, sysinfo, statvfs) and against work the test does itself. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <cmocka.h>

#include "noodle/clock.h"
#include "sysinfo.h"
#include "test_util.h"

#define MIB (1024LL * 1024LL)

/* Resident bytes per byte the program touches: ThreadSanitizer's shadow
 * memory measured +5 per byte (one for the data, four of shadow). */
#if defined(__SANITIZE_THREAD__)
#define RSS_PER_BYTE 6
#else
#define RSS_PER_BYTE 2
#endif

static noodle_sys_sample sample_ok(const char *disk_path) {
    noodle_sys_sample s;
    noodle_error err = {0};
    int rc = noodle__sys_sample(disk_path, &s, &err);
    if (rc != 0) fail_msg("sample failed: %d %s", rc, err.message);
    return s;
}

static double rusage_user_s(void) {
    struct rusage ru;
    assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
}

/* Spin until this process has used `seconds` more user CPU time (5 s wall at most). */
static void burn_user_cpu(double seconds) {
    double until = rusage_user_s() + seconds;
    int64_t deadline = noodle_deadline_after(NULL, NOODLE_SEC(5));
    volatile uint64_t x = 1;
    while (rusage_user_s() < until && noodle_clock_now(NULL) < deadline)
        for (int i = 0; i < 1000000; i++) x = x * 6364136223846793005ULL + 1;
}

/* Write size bytes to path and fsync them. */
static void write_file(const char *path, int64_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    static char block[64 * 1024];
    memset(block, 'n', sizeof block);
    for (int64_t done = 0; done < size; done += (int64_t)sizeof block)
        assert_int_equal(write(fd, block, sizeof block), (ssize_t)sizeof block);
    assert_int_equal(fsync(fd), 0);
    close(fd);
}

static void cpu_user_time_grows_with_work_and_agrees_with_getrusage(void **state) {
    (void)state;
    noodle_sys_sample before = sample_ok(NULL);
    burn_user_cpu(0.1);
    noodle_sys_sample after = sample_ok(NULL);
    double ru = rusage_user_s();
    assert_true(after.cpu_user_s - before.cpu_user_s >= 0.06);
    assert_true(after.cpu_user_s <= ru + 0.05 && after.cpu_user_s >= ru - 0.05);
    assert_true(after.cpu_system_s >= 0.0);
}

static void cpu_time_is_read_when_the_process_name_holds_spaces_and_parentheses(void **state) {
    (void)state;
    char old[17] = {0};
    assert_int_equal(prctl(PR_GET_NAME, old), 0);
    assert_int_equal(prctl(PR_SET_NAME, "x) (y z) 1 2 3"), 0);
    noodle_sys_sample s;
    noodle_error err = {0};
    int rc = noodle__sys_sample(NULL, &s, &err);
    double ru = rusage_user_s();
    assert_int_equal(prctl(PR_SET_NAME, old), 0);
    assert_int_equal(rc, 0);
    assert_true(s.cpu_user_s >= ru - 0.05 && s.cpu_user_s <= ru + 0.05);
}

static void rss_grows_by_the_memory_the_process_touches(void **state) {
    (void)state;
    const int64_t n = 32 * MIB;
    noodle_sys_sample before = sample_ok(NULL);
    char *block = malloc((size_t)n);
    assert_non_null(block);
    memset(block, 1, (size_t)n);
    noodle_sys_sample after = sample_ok(NULL);
    free(block);
    int64_t grown = after.rss_bytes - before.rss_bytes;
    print_message("rss %lld -> %lld bytes (+%lld for %lld touched)\n", (long long)before.rss_bytes,
                  (long long)after.rss_bytes, (long long)grown, (long long)n);
    assert_true(grown >= n * 9 / 10 && grown <= RSS_PER_BYTE * n + 16 * MIB);
}

static void memory_total_agrees_with_sysinfo(void **state) {
    (void)state;
    struct sysinfo si;
    assert_int_equal(sysinfo(&si), 0);
    int64_t total = (int64_t)si.totalram * (int64_t)si.mem_unit;
    noodle_sys_sample s = sample_ok(NULL);
    assert_true(s.mem_total_bytes > total - MIB && s.mem_total_bytes < total + MIB);
    assert_true(s.mem_available_bytes > 0 && s.mem_available_bytes <= s.mem_total_bytes);
}

static void disk_space_agrees_with_statvfs_of_the_same_path(void **state) {
    (void)state;
    noodle_sys_sample s = sample_ok(".");
    struct statvfs v;
    assert_int_equal(statvfs(".", &v), 0);
    int64_t unit = (int64_t)v.f_frsize;
    assert_int_equal(s.disk_total_bytes, (int64_t)v.f_blocks * unit);
    /* others write on this disk meanwhile: agree within 64 MiB */
    assert_true(llabs(s.disk_free_bytes - (int64_t)v.f_bfree * unit) < 64 * MIB);
    assert_true(llabs(s.disk_available_bytes - (int64_t)v.f_bavail * unit) < 64 * MIB);
    assert_true(s.disk_available_bytes <= s.disk_free_bytes && s.disk_free_bytes <= s.disk_total_bytes);
}

static void disk_space_of_an_8_mib_tmpfs_drops_by_a_2_mib_file(void **state) {
    (void)state;
    char dir[256], file[300];
    assert_int_equal(noodle_test_tempdir(dir, sizeof dir), 0);
    if (mount("tmpfs", dir, "tmpfs", 0, "size=8m") != 0) {
        print_message("SKIPPED: mounting a tmpfs was refused (%s); needs root\n", strerror(errno));
        noodle_test_rm_rf(dir);
        skip();
    }
    snprintf(file, sizeof file, "%s/two-mib", dir);
    noodle_sys_sample empty = sample_ok(dir);
    write_file(file, 2 * MIB);
    noodle_sys_sample written = sample_ok(dir);
    assert_int_equal(umount(dir), 0);
    noodle_test_rm_rf(dir);
    assert_int_equal(empty.disk_total_bytes, 8 * MIB);
    assert_true(empty.disk_free_bytes > 7 * MIB && empty.disk_available_bytes > 7 * MIB);
    int64_t dropped = empty.disk_free_bytes - written.disk_free_bytes;
    assert_true(dropped >= 2 * MIB && dropped <= 2 * MIB + 256 * 1024);
}

static void a_missing_disk_path_fails_with_6064_naming_it_and_fills_the_rest(void **state) {
    (void)state;
    const char *path = "/nonexistent-noodle-dir/sysinfo";
    noodle_sys_sample s;
    noodle_error err = {0};
    assert_int_equal(noodle__sys_sample(path, &s, &err), NOODLE_E_MONITOR_SAMPLE_FAILED);
    assert_int_equal(err.code, 6064);
    assert_non_null(strstr(err.message, path));
    assert_non_null(strstr(err.message, "No such file"));
    assert_true(s.cpu_user_s >= 0.0 && s.rss_bytes > 0 && s.mem_total_bytes > 0);
    assert_int_equal(s.disk_total_bytes, -1);
    assert_int_equal(s.disk_free_bytes, -1);
    assert_int_equal(s.disk_available_bytes, -1);
    assert_true(s.sample_ns > 0);
}

static void without_a_disk_path_the_disk_is_unknown_and_the_sample_succeeds(void **state) {
    (void)state;
    noodle_sys_sample s = sample_ok("");
    assert_int_equal(s.disk_total_bytes, -1);
    assert_int_equal(s.disk_available_bytes, -1);
    noodle_error err = {0};
    assert_int_equal(noodle__sys_sample(NULL, NULL, &err), NOODLE_E_MONITOR_INVALID_ARGUMENT);
}

/* On a real disk (the build tree, not a tmpfs /tmp): when /proc/self/io is
 * readable, fsync'ed writes must show; when it is not, both samples say -1. */
static void storage_writes_show_in_io_write_bytes_when_readable(void **state) {
    (void)state;
    char dir[] = "sysinfo-io-XXXXXX", file[64];
    assert_non_null(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/data", dir);
    noodle_sys_sample before = sample_ok(NULL);
    write_file(file, 4 * MIB);
    noodle_sys_sample after = sample_ok(NULL);
    noodle_test_rm_rf(dir);
    print_message("io_write_bytes %lld -> %lld\n", (long long)before.io_write_bytes,
                  (long long)after.io_write_bytes);
    if (before.io_write_bytes < 0) {
        assert_int_equal(after.io_write_bytes, -1);
        assert_int_equal(after.io_read_bytes, -1);
        return;
    }
    assert_true(after.io_write_bytes >= before.io_write_bytes + 4 * MIB);
    assert_true(after.io_read_bytes >= before.io_read_bytes);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void one_sample_measures_its_own_cost_and_takes_under_20_ms(void **state) {
    (void)state;
    enum { N = 1000 };
    static int64_t ns[N];
    int64_t start = noodle_clock_now(NULL);
    for (int i = 0; i < N; i++) ns[i] = sample_ok("/").sample_ns;
    int64_t wall = (noodle_clock_now(NULL) - start) / N;
    qsort(ns, N, sizeof ns[0], cmp_i64);
    print_message("one sample (with disk): median %lld ns, p99 %lld ns, mean wall %lld ns\n",
                  (long long)ns[N / 2], (long long)ns[N * 99 / 100], (long long)wall);
    assert_true(ns[0] > 0);
    assert_true(ns[N / 2] < NOODLE_MS(20)); /* generous: shared machine, sanitizers */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cpu_user_time_grows_with_work_and_agrees_with_getrusage),
        cmocka_unit_test(cpu_time_is_read_when_the_process_name_holds_spaces_and_parentheses),
        cmocka_unit_test(rss_grows_by_the_memory_the_process_touches),
        cmocka_unit_test(memory_total_agrees_with_sysinfo),
        cmocka_unit_test(disk_space_agrees_with_statvfs_of_the_same_path),
        cmocka_unit_test(disk_space_of_an_8_mib_tmpfs_drops_by_a_2_mib_file),
        cmocka_unit_test(a_missing_disk_path_fails_with_6064_naming_it_and_fills_the_rest),
        cmocka_unit_test(without_a_disk_path_the_disk_is_unknown_and_the_sample_succeeds),
        cmocka_unit_test(storage_writes_show_in_io_write_bytes_when_readable),
        cmocka_unit_test(one_sample_measures_its_own_cost_and_takes_under_20_ms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
