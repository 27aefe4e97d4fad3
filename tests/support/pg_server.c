/* Throwaway PostgreSQL servers for tests (see pg_server.h for the contract).
 *
 * Layout of one server, under a fresh temporary directory (the "root",
 * owned by postgres when we run as root):
 *   root/data    the cluster, a copy of the per-process initdb template
 *   root/s       its private unix socket directory (short: sun_path < 108)
 *   root/log     the server log (pg_ctl -l)
 *
 * Invariants:
 *   1. A server's registry slot is claimed before anything of it exists on
 *      disk or runs, and released only after noodle_pg_server_stop() (or the
 *      failed start) has killed its processes and removed its root: at exit
 *      and on fatal signals nothing is left behind, even mid-start.
 *   2. Every command we run (initdb, cp, pg_ctl) runs in its own process
 *      group, listed while it runs, so that a fatal signal can kill it.
 *   3. The signal handler only uses async-signal-safe calls (open, read,
 *      getdents64, kill, _Fork, execve, waitpid, sigaction, raise, str*) on
 *      data prepared in advance (slot paths, pids).
 *   4. Killing or freezing a server stops the postmaster first, so that it
 *      cannot fork new children while they are enumerated from /proc.
 */
#include "pg_server.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "test_util.h"

#ifndef NOODLE_PG_BINDIR
#define NOODLE_PG_BINDIR ""
#endif

#define MAX_SERVERS 64
#define START_TIMEOUT_MS 20000
#define STOP_TIMEOUT_MS 15000
#define INITDB_TIMEOUT_MS 120000
#define COPY_TIMEOUT_MS 60000
#define PORT_ATTEMPTS 5

struct noodle_pg_server {
    char root[PATH_MAX];    /* owned temp dir, removed by stop */
    char datadir[PATH_MAX]; /* root/data */
    char sockdir[PATH_MAX]; /* root/s */
    char logfile[PATH_MAX]; /* root/log */
    char conninfo[160];
    int port;
    pid_t postmaster;
    int frozen;
    int slot; /* index in the registry, -1 when not registered */
};

/* ---- process-wide state ----------------------------------------------------- */

/* The registry (invariant 1). Slots are claimed and released under
 * registry_lock; the signal handler reads them without it: the paths are
 * written before live is set, and live is cleared before they change. */
typedef struct registry_slot {
    volatile sig_atomic_t live; /* something of this server may exist */
    noodle_pg_server *server;   /* set once started (for the exit hook) */
    char root[PATH_MAX];        /* removed by the handler */
    char datadir[PATH_MAX];     /* matched against /proc/<pid>/cmdline */
} registry_slot;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static registry_slot registry[MAX_SERVERS];

/* Process groups of the commands running now (invariant 2); 0 = free.
 * Changed under registry_lock. */
#define MAX_RUNNING 32
static volatile pid_t running_groups[MAX_RUNNING];

/* The initdb template, made once per process under template_lock. The
 * handler removes template_root when template_live is set.
 * Lock order: template_lock before registry_lock (initdb runs through
 * run_cmd, which lists its process group under registry_lock). */
static pthread_mutex_t template_lock = PTHREAD_MUTEX_INITIALIZER;
static char template_root[PATH_MAX];
static char template_data[PATH_MAX];
static volatile sig_atomic_t template_live;
static int template_made;
static int exit_hook_installed;

/* Signals we clean up on, and what was installed before us. */
static const int fatal_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGSEGV, SIGABRT, SIGBUS, SIGFPE};
#define NFATAL (sizeof fatal_signals / sizeof fatal_signals[0])
static struct sigaction previous_actions[NFATAL];
static int handler_installed[NFATAL];

/* ---- small helpers ------------------------------------------------------------ */

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...) {
    va_list ap;
    if (errbuf == NULL || errlen == 0) return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

/* Append the last bytes of a log file to errbuf. */
static void append_log_tail(char *errbuf, size_t errlen, const char *path) {
    char tail[1200];
    size_t used = errbuf != NULL ? strlen(errbuf) : 0;
    FILE *f = fopen(path, "r");
    if (f == NULL || errbuf == NULL || used + 1 >= errlen) {
        if (f != NULL) fclose(f);
        return;
    }
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        long from = size > (long)sizeof tail - 1 ? size - (long)sizeof tail + 1 : 0;
        if (fseek(f, from, SEEK_SET) != 0) rewind(f);
    }
    size_t n = fread(tail, 1, sizeof tail - 1, f);
    tail[n] = '\0';
    fclose(f);
    snprintf(errbuf + used, errlen - used, "\n--- %s (tail) ---\n%s", path, tail);
}

static void sleep_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* dir + suffix into out; -1 when it does not fit. */
static int path_join(char *out, size_t size, const char *dir, const char *suffix) {
    size_t a = strlen(dir), b = strlen(suffix);
    if (a + b >= size) return -1;
    memcpy(out, dir, a);
    memcpy(out + a, suffix, b + 1);
    return 0;
}

static int running_as_root(void) {
    return geteuid() == 0;
}

static int postgres_ids(uid_t *uid, gid_t *gid) {
    struct passwd pw, *res = NULL;
    char buf[1024];
    if (getpwnam_r("postgres", &pw, buf, sizeof buf, &res) != 0 || res == NULL) return -1;
    *uid = pw.pw_uid;
    *gid = pw.pw_gid;
    return 0;
}

/* When root: make path belong to postgres (the server refuses to run as root). */
static int give_to_postgres(const char *path) {
    uid_t uid;
    gid_t gid;
    if (!running_as_root()) return 0;
    if (postgres_ids(&uid, &gid) != 0) return -1;
    return chown(path, uid, gid);
}

/* The directory of the PostgreSQL binaries: NOODLE_TEST_PG_BINDIR, else the
 * one CMake found, else the newest /usr/lib/postgresql/N/bin. */
static int find_bindir(char *out, size_t size) {
    const char *env = getenv("NOODLE_TEST_PG_BINDIR");
    if (env != NULL && env[0] != '\0') {
        snprintf(out, size, "%s", env);
        return 0;
    }
    if (NOODLE_PG_BINDIR[0] != '\0') {
        snprintf(out, size, "%s", NOODLE_PG_BINDIR);
        return 0;
    }
    DIR *d = opendir("/usr/lib/postgresql");
    long best = -1;
    if (d == NULL) return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char *end;
        long v = strtol(e->d_name, &end, 10);
        char probe[PATH_MAX];
        if (end == e->d_name || *end != '\0' || v <= best) continue;
        snprintf(probe, sizeof probe, "/usr/lib/postgresql/%ld/bin/pg_ctl", v);
        if (access(probe, X_OK) == 0) best = v;
    }
    closedir(d);
    if (best < 0) return -1;
    snprintf(out, size, "/usr/lib/postgresql/%ld/bin", best);
    return 0;
}

static void track_group(pid_t pgid, int add) {
    pthread_mutex_lock(&registry_lock);
    for (int i = 0; i < MAX_RUNNING; i++) {
        if (add ? running_groups[i] == 0 : running_groups[i] == pgid) {
            running_groups[i] = add ? pgid : 0;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

/* Run argv with fork/exec in its own process group (as postgres through
 * runuser when we are root), from "/", output appended to logpath (or
 * discarded), waiting at most timeout_ms. Returns the exit status, or -1
 * when it could not run, died from a signal or was killed at the timeout. */
static int run_cmd(char *const argv[], int as_postgres, const char *logpath, int timeout_ms) {
    char *full[32];
    size_t n = 0;
    int via_runuser = as_postgres && running_as_root();
    if (via_runuser) {
        full[n++] = "runuser";
        full[n++] = "-u";
        full[n++] = "postgres";
        full[n++] = "--";
    }
    for (size_t i = 0; argv[i] != NULL && n < 31; i++) full[n++] = argv[i];
    full[n] = NULL;

    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(logpath != NULL ? logpath : "/dev/null",
                      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        setpgid(0, 0);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        if (devnull >= 0) dup2(devnull, STDIN_FILENO);
        if (chdir("/") != 0) _exit(126);
        if (via_runuser) {
            execv("/usr/sbin/runuser", full);
            execv("/sbin/runuser", full);
        }
        execvp(full[0], full);
        _exit(127);
    }
    setpgid(pid, pid); /* also here: whichever runs first */
    track_group(pid, 1);
    int status = 0, failed = 0;
    int64_t until = noodle_test_now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) {
            failed = 1;
            break;
        }
        if (noodle_test_now_ms() >= until) {
            kill(-pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            failed = 1;
            break;
        }
        sleep_ms(2);
    }
    track_group(pid, 0);
    if (failed) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- /proc, async-signal-safe (invariants 3 and 4) ----------------------------------- */

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Parse a non-negative decimal number; -1 when s is not one. */
static long parse_num(const char *s) {
    long v = 0;
    if (*s == '\0') return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

/* "/proc/<pid>/<leaf>" into buf (>= 48 bytes) without snprintf. */
static void proc_path(pid_t pid, const char *leaf, char *buf) {
    char digits[24];
    int nd = 0, o = 6;
    unsigned long v = (unsigned long)pid;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    memcpy(buf, "/proc/", 6);
    while (nd > 0) buf[o++] = digits[--nd];
    buf[o++] = '/';
    size_t len = strlen(leaf);
    memcpy(buf + o, leaf, len + 1);
}

/* Read up to size-1 bytes of a file; returns the length or -1. */
static ssize_t read_small_file(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = '\0';
    return n;
}

/* Read state and parent of pid from /proc/<pid>/stat. Returns 0, or -1 when
 * the process does not exist. */
static int proc_stat(pid_t pid, char *state, pid_t *ppid) {
    char path[48], buf[512];
    proc_path(pid, "stat", path);
    if (read_small_file(path, buf, sizeof buf) <= 0) return -1;
    /* "pid (comm) S ppid ...": comm may hold spaces and parentheses. */
    char *close_paren = strrchr(buf, ')');
    if (close_paren == NULL || close_paren[1] != ' ' || close_paren[2] == '\0') return -1;
    *state = close_paren[2];
    long pp = 0;
    char *p = close_paren + 4;
    while (*p >= '0' && *p <= '9') pp = pp * 10 + (*p++ - '0');
    *ppid = (pid_t)pp;
    return 0;
}

/* True when pid exists and is neither a zombie nor dead. */
static int proc_alive(pid_t pid) {
    char state;
    pid_t ppid;
    if (pid <= 0 || proc_stat(pid, &state, &ppid) != 0) return 0;
    return state != 'Z' && state != 'X' && state != 'x';
}

/* Call fn(pid, arg) for every process in /proc. */
static void for_each_process(void (*fn)(pid_t pid, void *arg), void *arg) {
    char buf[4096];
    int fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    for (;;) {
        long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (n <= 0) break;
        for (long off = 0; off < n;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(void *)(buf + off);
            long pid = parse_num(d->d_name);
            off += d->d_reclen;
            if (pid > 0) fn((pid_t)pid, arg);
        }
    }
    close(fd);
}

typedef struct child_signal {
    pid_t parent;
    int sig;
    int stopped_all; /* for wait_stopped: every child is stopped */
} child_signal;

static void signal_if_child(pid_t pid, void *arg) {
    child_signal *cs = arg;
    char state;
    pid_t ppid;
    if (proc_stat(pid, &state, &ppid) != 0 || ppid != cs->parent) return;
    if (cs->sig != 0)
        kill(pid, cs->sig);
    else if (state != 'T' && state != 't' && state != 'Z' && state != 'X')
        cs->stopped_all = 0;
}

/* Send sig to every child of parent. */
static void signal_children(pid_t parent, int sig) {
    child_signal cs = {parent, sig, 1};
    for_each_process(signal_if_child, &cs);
}

/* SIGKILL a process and its children, stopping it first (invariant 4). */
static void kill_tree(pid_t pid) {
    if (pid <= 0) return;
    kill(pid, SIGSTOP);
    signal_children(pid, SIGKILL);
    kill(pid, SIGKILL);
}

/* pid of datadir's postmaster from its postmaster.pid, 0 when none. */
static pid_t pid_from_file(const char *pidfile) {
    char buf[32];
    if (read_small_file(pidfile, buf, sizeof buf) <= 0) return 0;
    buf[strcspn(buf, "\n")] = '\0';
    long v = parse_num(buf);
    return v > 0 ? (pid_t)v : 0;
}

/* Kill every process whose command line names datadir (a postmaster whose
 * pid file is not written yet, pg_ctl, its shell), with its children. */
static void kill_if_cmdline_names(pid_t pid, void *arg) {
    const char *datadir = arg;
    char path[48], buf[4096];
    if (pid == getpid()) return;
    proc_path(pid, "cmdline", path);
    ssize_t n = read_small_file(path, buf, sizeof buf);
    for (ssize_t off = 0; off < n; off += (ssize_t)strlen(buf + off) + 1) {
        if (strcmp(buf + off, datadir) == 0) {
            kill_tree(pid);
            return;
        }
    }
}

/* Kill everything of a registry slot: whatever runs with its data directory
 * on the command line -- the postmaster (with its children), pg_ctl, cp.
 * Pids are never taken on trust from postmaster.pid or memory: the pid of a
 * dead server may belong to someone else by now. */
static void kill_slot_processes(registry_slot *slot) {
    for_each_process(kill_if_cmdline_names, slot->datadir);
}

/* Wait until pid and all its children are stopped ('T'). */
static int wait_stopped(pid_t pid, int timeout_ms) {
    for (int waited = 0; waited <= timeout_ms; waited += 2) {
        char state;
        pid_t ppid;
        child_signal cs = {pid, 0, 1};
        int me = proc_stat(pid, &state, &ppid) != 0 || state == 'T' || state == 'Z';
        for_each_process(signal_if_child, &cs);
        if (me && cs.stopped_all) return 0;
        sleep_ms(2);
    }
    return -1;
}

/* rm -rf path from a signal handler: _Fork is async-signal-safe (fork is
 * not); without it the directory stays. */
static void rm_rf_from_handler(char *path) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    char *argv[] = {"rm", "-rf", "--", path, NULL};
    char *envp[] = {NULL};
    pid_t pid = _Fork();
    if (pid == 0) {
        execve("/bin/rm", argv, envp);
        _exit(127);
    }
    if (pid > 0) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
#else
    (void)path;
#endif
}

/* ---- cleanup at exit and on signals -------------------------------------------------- */

/* Kill and remove whatever the registry lists; no locks (invariant 3). */
static void emergency_cleanup(void) {
    for (int i = 0; i < MAX_RUNNING; i++)
        if (running_groups[i] > 0) kill(-running_groups[i], SIGKILL);
    for (int i = 0; i < MAX_SERVERS; i++)
        if (registry[i].live) kill_slot_processes(&registry[i]);
    for (int i = 0; i < MAX_SERVERS; i++) {
        if (!registry[i].live) continue;
        rm_rf_from_handler(registry[i].root);
        registry[i].live = 0;
    }
    if (template_live) {
        rm_rf_from_handler(template_root);
        template_live = 0;
    }
}

static void on_fatal_signal(int sig) {
    int saved_errno = errno;
    emergency_cleanup();
    for (size_t i = 0; i < NFATAL; i++) {
        if (fatal_signals[i] == sig && handler_installed[i]) {
            sigaction(sig, &previous_actions[i], NULL);
            break;
        }
    }
    errno = saved_errno;
    raise(sig); /* delivered with the previous disposition when we return */
}

/* Installed before main, so that cmocka, which saves and restores the
 * handlers around each test and fixture, restores ours. Signals ignored by
 * our parent stay ignored. */
__attribute__((constructor)) static void install_signal_handlers(void) {
    for (size_t i = 0; i < NFATAL; i++) {
        struct sigaction sa, old;
        if (sigaction(fatal_signals[i], NULL, &old) != 0) continue;
        if (old.sa_handler == SIG_IGN) continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fatal_signal;
        sigemptyset(&sa.sa_mask);
        previous_actions[i] = old;
        if (sigaction(fatal_signals[i], &sa, NULL) == 0) handler_installed[i] = 1;
    }
}

static void remove_template(void);

static void cleanup_at_exit(void) {
    for (int i = 0; i < MAX_SERVERS; i++) {
        noodle_pg_server *s = NULL;
        pthread_mutex_lock(&registry_lock);
        if (registry[i].live) s = registry[i].server;
        pthread_mutex_unlock(&registry_lock);
        if (s != NULL) noodle_pg_server_stop(s);
    }
    remove_template();
    /* Whatever is left was mid-start in another thread. */
    emergency_cleanup();
}

/* Call with template_lock held. */
static void ensure_exit_hook(void) {
    if (!exit_hook_installed) {
        atexit(cleanup_at_exit);
        exit_hook_installed = 1;
    }
}

/* Claim a slot for s (root and datadir known); -1 when full. */
static int claim_slot(noodle_pg_server *s) {
    pthread_mutex_lock(&registry_lock);
    for (int i = 0; i < MAX_SERVERS; i++) {
        registry_slot *slot = &registry[i];
        if (slot->live) continue;
        slot->server = NULL;
        if (path_join(slot->root, sizeof slot->root, s->root, "") != 0 ||
            path_join(slot->datadir, sizeof slot->datadir, s->datadir, "") != 0)
            break;
        slot->live = 1;
        s->slot = i;
        pthread_mutex_unlock(&registry_lock);
        return 0;
    }
    pthread_mutex_unlock(&registry_lock);
    return -1;
}

/* The server is up: make it stoppable at exit. */
static void publish_slot(noodle_pg_server *s) {
    pthread_mutex_lock(&registry_lock);
    registry[s->slot].server = s;
    pthread_mutex_unlock(&registry_lock);
}

static void release_slot(noodle_pg_server *s) {
    if (s->slot < 0) return;
    pthread_mutex_lock(&registry_lock);
    registry[s->slot].live = 0;
    registry[s->slot].server = NULL;
    pthread_mutex_unlock(&registry_lock);
    s->slot = -1;
}

/* ---- template, port, configuration ---------------------------------------------------- */

/* initdb once per process. Returns 0, or -1 with errbuf set. */
static int ensure_template(const char *bindir, char *errbuf, size_t errlen) {
    char data[PATH_MAX], log[PATH_MAX], initdb[PATH_MAX];
    int rc = -1;
    pthread_mutex_lock(&template_lock);
    ensure_exit_hook();
    if (template_made) {
        rc = 0;
        goto done;
    }
    if (noodle_test_tempdir(template_root, sizeof template_root) != 0) {
        set_err(errbuf, errlen, "cannot make a temporary directory: %s", strerror(errno));
        goto done;
    }
    template_live = 1; /* the handler removes it from now on */
    if (give_to_postgres(template_root) != 0) {
        set_err(errbuf, errlen, "cannot give %s to the postgres user: %s", template_root,
                strerror(errno));
        goto fail_rm;
    }
    if (path_join(data, sizeof data, template_root, "/data") != 0 ||
        path_join(log, sizeof log, template_root, "/initdb.log") != 0 ||
        path_join(initdb, sizeof initdb, bindir, "/initdb") != 0) {
        set_err(errbuf, errlen, "path too long under %s", template_root);
        goto fail_rm;
    }
    char *argv[] = {initdb,      "-A", "trust",    "--locale=C", "-E", "UTF8",
                    "--no-sync", "-U", "postgres", "-D",         data, NULL};
    int status = run_cmd(argv, 1, log, INITDB_TIMEOUT_MS);
    if (status != 0) {
        set_err(errbuf, errlen, "initdb failed (status %d)", status);
        append_log_tail(errbuf, errlen, log);
        goto fail_rm;
    }
    snprintf(template_data, sizeof template_data, "%s", data);
    template_made = 1;
    rc = 0;
    goto done;

fail_rm:
    noodle_test_rm_rf(template_root);
    template_live = 0;
done:
    pthread_mutex_unlock(&template_lock);
    return rc;
}

static void remove_template(void) {
    pthread_mutex_lock(&template_lock);
    if (template_live) {
        noodle_test_rm_rf(template_root);
        template_live = 0;
        template_made = 0;
    }
    pthread_mutex_unlock(&template_lock);
}

/* A TCP port on 127.0.0.1 nobody listens on right now. */
static int free_port(void) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port = -1;
    if (fd < 0) return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int append_conf(const noodle_pg_server *s, const char *extra) {
    char path[PATH_MAX];
    path_join(path, sizeof path, s->datadir, "/postgresql.conf");
    FILE *f = fopen(path, "a");
    if (f == NULL) return -1;
    fprintf(f,
            "\n# noodle test server\n"
            "port = %d\n"
            "listen_addresses = '127.0.0.1'\n"
            "unix_socket_directories = '%s'\n"
            "max_connections = 100\n"
            "fsync = off\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
            "wal_level = replica\n"
            "max_wal_senders = 5\n"
            "hot_standby = on\n"
            "wal_keep_size = 64MB\n"
            "wal_writer_delay = 10ms\n",
            s->port, s->sockdir);
    if (extra != NULL && extra[0] != '\0') fprintf(f, "%s\n", extra);
    return fclose(f) == 0 ? 0 : -1;
}

/* Later lines win in postgresql.conf: a new port just goes at the end. */
static int append_port(const noodle_pg_server *s) {
    char path[PATH_MAX];
    path_join(path, sizeof path, s->datadir, "/postgresql.conf");
    FILE *f = fopen(path, "a");
    if (f == NULL) return -1;
    fprintf(f, "port = %d\n", s->port);
    return fclose(f) == 0 ? 0 : -1;
}

/* The log from offset on contains needle. */
static int log_contains(const char *path, long offset, const char *needle) {
    FILE *f = fopen(path, "r");
    char line[1024];
    int found = 0;
    if (f == NULL) return 0;
    if (fseek(f, offset, SEEK_SET) != 0) rewind(f);
    while (!found && fgets(line, sizeof line, f) != NULL) found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* The server gave up starting: a FATAL or PANIC that is not just the
 * refusal of our readiness probe while it starts. */
static int log_shows_startup_failure(const char *path, long offset) {
    FILE *f = fopen(path, "r");
    char line[1024];
    int failed = 0;
    if (f == NULL) return 0;
    if (fseek(f, offset, SEEK_SET) != 0) rewind(f);
    while (!failed && fgets(line, sizeof line, f) != NULL) {
        if (strstr(line, "PANIC:") != NULL || strstr(line, "database system is shut down"))
            failed = 1;
        else if (strstr(line, "FATAL:") != NULL && strstr(line, "starting up") == NULL &&
                 strstr(line, "not yet accepting connections") == NULL)
            failed = 1;
    }
    fclose(f);
    return failed;
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

static pid_t read_postmaster_pid(const noodle_pg_server *s) {
    char path[PATH_MAX];
    if (path_join(path, sizeof path, s->datadir, "/postmaster.pid") != 0) return 0;
    return pid_from_file(path);
}

/* pg_ctl -W start, then poll until the server answers. Returns 0, 1 when the
 * port was taken (retry with another), or -1 with errbuf set. */
static int start_once(noodle_pg_server *s, const char *bindir, char *errbuf, size_t errlen) {
    char pg_ctl[PATH_MAX], ping[256];
    long offset = file_size(s->logfile);
    if (path_join(pg_ctl, sizeof pg_ctl, bindir, "/pg_ctl") != 0) {
        set_err(errbuf, errlen, "path too long: %s", bindir);
        return -1;
    }
    char *argv[] = {pg_ctl, "-W", "-D", s->datadir, "-l", s->logfile, "start", NULL};
    int status = run_cmd(argv, 1, NULL, START_TIMEOUT_MS);
    if (status != 0) {
        set_err(errbuf, errlen, "pg_ctl start failed (status %d)", status);
        append_log_tail(errbuf, errlen, s->logfile);
        return -1;
    }
    snprintf(ping, sizeof ping, "%s connect_timeout=2", s->conninfo);
    int64_t until = noodle_test_now_ms() + START_TIMEOUT_MS;
    while (noodle_test_now_ms() < until) {
        pid_t pid = read_postmaster_pid(s);
        if (PQping(ping) == PQPING_OK && pid > 0) {
            s->postmaster = pid;
            return 0;
        }
        if ((pid > 0 && !proc_alive(pid)) || log_shows_startup_failure(s->logfile, offset)) {
            /* Let a dying postmaster finish (and say why) before looking. */
            for (int i = 0; i < 200 && pid > 0 && proc_alive(pid); i++) sleep_ms(10);
            if (log_contains(s->logfile, offset, "Address already in use")) return 1;
            set_err(errbuf, errlen, "the server did not start on port %d", s->port);
            append_log_tail(errbuf, errlen, s->logfile);
            return -1;
        }
        sleep_ms(5);
    }
    set_err(errbuf, errlen, "the server did not accept connections within %d ms on port %d",
            START_TIMEOUT_MS, s->port);
    append_log_tail(errbuf, errlen, s->logfile);
    return -1;
}

/* ---- the API ----------------------------------------------------------------------- */

int noodle_pg_server_start(const noodle_pg_server_options *opts, noodle_pg_server **out,
                           char *errbuf, size_t errlen) {
    char bindir[PATH_MAX], log[PATH_MAX];
    noodle_pg_server *s = NULL;

    *out = NULL;
    if (errbuf != NULL && errlen > 0) errbuf[0] = '\0';
    if (find_bindir(bindir, sizeof bindir) != 0) {
        set_err(errbuf, errlen,
                "no PostgreSQL binaries: set NOODLE_TEST_PG_BINDIR or install postgresql");
        return -1;
    }
    if (running_as_root()) {
        uid_t uid;
        gid_t gid;
        if (postgres_ids(&uid, &gid) != 0) {
            set_err(errbuf, errlen, "running as root but there is no postgres user");
            return -1;
        }
    }
    if (ensure_template(bindir, errbuf, errlen) != 0) return -1;

    s = calloc(1, sizeof *s);
    if (s == NULL) {
        set_err(errbuf, errlen, "out of memory");
        return -1;
    }
    s->slot = -1;
    if (noodle_test_tempdir(s->root, sizeof s->root) != 0) {
        set_err(errbuf, errlen, "cannot make a temporary directory: %s", strerror(errno));
        goto fail_free;
    }
    if (path_join(s->datadir, sizeof s->datadir, s->root, "/data") != 0 ||
        path_join(s->sockdir, sizeof s->sockdir, s->root, "/s") != 0 ||
        path_join(s->logfile, sizeof s->logfile, s->root, "/log") != 0 ||
        path_join(log, sizeof log, s->root, "/setup.log") != 0 ||
        strlen(s->sockdir) + sizeof "/.s.PGSQL.65535.lock" > 100) {
        set_err(errbuf, errlen, "socket directory path too long for a unix socket: %s (set TMPDIR)",
                s->sockdir);
        goto fail_rm;
    }
    if (claim_slot(s) != 0) {
        set_err(errbuf, errlen, "too many servers at once (max %d)", MAX_SERVERS);
        goto fail_rm;
    }
    if (give_to_postgres(s->root) != 0) {
        set_err(errbuf, errlen, "cannot give %s to postgres: %s", s->root, strerror(errno));
        goto fail_slot;
    }
    char *cp[] = {"cp", "-a", template_data, s->datadir, NULL};
    int status = run_cmd(cp, 0, log, COPY_TIMEOUT_MS);
    if (status != 0) {
        set_err(errbuf, errlen, "copying the template failed (status %d)", status);
        append_log_tail(errbuf, errlen, log);
        goto fail_slot;
    }
    if (mkdir(s->sockdir, 0700) != 0 || give_to_postgres(s->sockdir) != 0) {
        set_err(errbuf, errlen, "cannot make %s: %s", s->sockdir, strerror(errno));
        goto fail_slot;
    }

    for (int attempt = 0;; attempt++) {
        s->port = free_port();
        if (s->port <= 0) {
            set_err(errbuf, errlen, "no free TCP port: %s", strerror(errno));
            goto fail_slot;
        }
        snprintf(s->conninfo, sizeof s->conninfo,
                 "host=127.0.0.1 port=%d dbname=postgres user=postgres", s->port);
        int wrote =
            attempt == 0 ? append_conf(s, opts != NULL ? opts->extra_conf : NULL) : append_port(s);
        if (wrote != 0) {
            set_err(errbuf, errlen, "cannot write postgresql.conf: %s", strerror(errno));
            goto fail_slot;
        }
        int r = start_once(s, bindir, errbuf, errlen);
        if (r == 0) break;
        if (r < 0) goto fail_slot;
        if (attempt + 1 >= PORT_ATTEMPTS) {
            set_err(errbuf, errlen, "every port tried (%d) was taken", PORT_ATTEMPTS);
            append_log_tail(errbuf, errlen, s->logfile);
            goto fail_slot;
        }
    }
    publish_slot(s);
    *out = s;
    return 0;

fail_slot:
    kill_slot_processes(&registry[s->slot]);
    noodle_test_rm_rf(s->root);
    release_slot(s);
    free(s);
    return -1;
fail_rm:
    noodle_test_rm_rf(s->root);
fail_free:
    free(s);
    return -1;
}

void noodle_pg_server_stop(noodle_pg_server *s) {
    char bindir[PATH_MAX], pg_ctl[PATH_MAX];
    int stopped = -1;
    if (s == NULL) return;
    if (s->frozen) noodle_pg_server_thaw(s);
    if (find_bindir(bindir, sizeof bindir) == 0 &&
        path_join(pg_ctl, sizeof pg_ctl, bindir, "/pg_ctl") == 0) {
        /* -W and our own wait: pg_ctl's polls every 100 ms. */
        char *argv[] = {pg_ctl, "-D", s->datadir, "-m", "immediate", "-W", "stop", NULL};
        stopped = run_cmd(argv, 1, NULL, STOP_TIMEOUT_MS);
        int64_t until = noodle_test_now_ms() + STOP_TIMEOUT_MS;
        while (stopped == 0 && proc_alive(s->postmaster) && noodle_test_now_ms() < until)
            sleep_ms(2);
    }
    if (stopped != 0 || proc_alive(s->postmaster)) {
        kill_slot_processes(&registry[s->slot]);
        for (int waited = 0; waited < 3000 && proc_alive(s->postmaster); waited += 10) sleep_ms(10);
    }
    noodle_test_rm_rf(s->root);
    release_slot(s);
    free(s);
}

const char *noodle_pg_server_conninfo(const noodle_pg_server *s) {
    return s->conninfo;
}

int noodle_pg_server_port(const noodle_pg_server *s) {
    return s->port;
}

pid_t noodle_pg_server_postmaster_pid(const noodle_pg_server *s) {
    return s->postmaster;
}

const char *noodle_pg_server_datadir(const noodle_pg_server *s) {
    return s->datadir;
}

static void quiet_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

int noodle_pg_server_query(const noodle_pg_server *s, const char *sql, char *out, size_t outlen) {
    char conninfo[256];
    int rc = -1;
    snprintf(conninfo, sizeof conninfo, "%s connect_timeout=10", s->conninfo);
    if (outlen > 0) out[0] = '\0';
    PGconn *conn = PQconnectdb(conninfo);
    if (conn == NULL) {
        snprintf(out, outlen, "out of memory");
        return -1;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(out, outlen, "%s", PQerrorMessage(conn));
        goto done_conn;
    }
    PQsetNoticeProcessor(conn, quiet_notice, NULL);
    PGresult *res = PQexec(conn, sql);
    switch (PQresultStatus(res)) {
    case PGRES_TUPLES_OK:
        snprintf(out, outlen, "%s",
                 PQntuples(res) > 0 && PQnfields(res) > 0 ? PQgetvalue(res, 0, 0) : "");
        rc = 0;
        break;
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY:
        rc = 0;
        break;
    default:
        snprintf(out, outlen, "%s", PQresultErrorMessage(res));
        break;
    }
    PQclear(res);
done_conn:
    PQfinish(conn);
    return rc;
}

int noodle_pg_server_freeze(noodle_pg_server *s) {
    char state;
    pid_t ppid;
    if (s->postmaster <= 0 || kill(s->postmaster, SIGSTOP) != 0) return -1;
    s->frozen = 1;
    /* The postmaster stops first (invariant 4); a fork it was in the middle
     * of completes, so look for children twice. */
    for (int waited = 0; waited < 2000; waited++) {
        if (proc_stat(s->postmaster, &state, &ppid) != 0 || state == 'T') break;
        sleep_ms(1);
    }
    signal_children(s->postmaster, SIGSTOP);
    sleep_ms(5);
    signal_children(s->postmaster, SIGSTOP);
    return wait_stopped(s->postmaster, 2000);
}

int noodle_pg_server_thaw(noodle_pg_server *s) {
    if (s->postmaster <= 0) return -1;
    signal_children(s->postmaster, SIGCONT);
    int rc = kill(s->postmaster, SIGCONT);
    s->frozen = 0;
    return rc == 0 ? 0 : -1;
}
