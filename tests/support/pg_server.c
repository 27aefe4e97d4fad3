/* Throwaway PostgreSQL servers for tests (see pg_server.h for the contract).
 *
 * Layout of one server, under a fresh temporary directory (the "root",
 * owned by postgres when we run as root):
 *   root/data    the cluster, a copy of the per-process initdb template
 *   root/s       its private unix socket directory (short: sun_path < 108)
 *   root/log     the server log (pg_ctl -l)
 *   root/<x>.log output of setup commands (cp, pg_basebackup, pg_rewind, ip)
 *
 * A server in its own network namespace (own_netns) also owns the namespace
 * "noodle<pid>_<n>" and a veth pair "nh<pid>x<n>" (host end, root namespace)
 * / "ni<pid>x<n>" (inside end); both are listed in its registry slot and
 * deleted with it.
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
 *   5. A server whose postmaster is not running has postmaster == 0: pids
 *      of dead servers are never signalled (they may be someone else's).
 */
#include "pg_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
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
#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

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
#define BASEBACKUP_TIMEOUT_MS 120000
#define REWIND_TIMEOUT_MS 120000
#define IP_TIMEOUT_MS 10000
#define SYNC_TIMEOUT_MS 20000
#define NAME_MAX_LEN 63

struct noodle_pg_server {
    char root[PATH_MAX];    /* owned temp dir, removed by stop */
    char datadir[PATH_MAX]; /* root/data */
    char sockdir[PATH_MAX]; /* root/s */
    char logfile[PATH_MAX]; /* root/log */
    char conninfo[160];
    char admin_conninfo[PATH_MAX + 96]; /* through the unix socket */
    char host[INET_ADDRSTRLEN];         /* what clients connect to */
    char name[NAME_MAX_LEN + 1];        /* application_name of a standby */
    char *extra_conf;                   /* copy of the option (may be NULL) */
    int port;
    pid_t postmaster; /* 0 when not running (invariant 5) */
    int frozen;
    int slot; /* index in the registry, -1 when not registered */
    /* own_netns */
    int in_netns;
    char netns[32];
    char veth_host[16], veth_inside[16];
    char host_side_addr[INET_ADDRSTRLEN]; /* host end of the veth pair */
    char mac_host[18], mac_inside[18];    /* the pair's link addresses */
    const char *rejoin_method;
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
    volatile sig_atomic_t has_netns; /* netns and veth below exist (maybe) */
    char netns[32];                  /* deleted by the handler */
    char veth[16];                   /* the host end, deleted by the handler */
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

/* The iproute2 binary, found once (ip_path_once); "" when there is none.
 * The signal handler execs it to delete namespaces and veth pairs. */
static pthread_once_t ip_path_once = PTHREAD_ONCE_INIT;
static char ip_path[64];

static void find_ip_path(void) {
    static const char *const candidates[] = {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"};
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        if (access(candidates[i], X_OK) == 0) {
            snprintf(ip_path, sizeof ip_path, "%s", candidates[i]);
            return;
        }
    }
}

static const char *ip_binary(void) {
    pthread_once(&ip_path_once, find_ip_path);
    return ip_path;
}

/* Run argv with fork/exec in its own process group (as postgres through
 * runuser when we are root; inside network namespace netns through
 * `ip netns exec` when netns is not NULL), from "/", output appended to
 * logpath (or discarded), waiting at most timeout_ms. Returns the exit
 * status, or -1 when it could not run, died from a signal or was killed at
 * the timeout. */
static int run_cmd_in(char *const argv[], const char *netns, int as_postgres, const char *logpath,
                      int timeout_ms) {
    char *full[48];
    size_t n = 0;
    int via_runuser = as_postgres && running_as_root();
    if (netns != NULL) {
        full[n++] = (char *)ip_binary();
        full[n++] = "netns";
        full[n++] = "exec";
        full[n++] = (char *)netns;
        if (via_runuser) full[n++] = "/usr/sbin/runuser";
    } else if (via_runuser) {
        full[n++] = "runuser";
    }
    if (via_runuser) {
        full[n++] = "-u";
        full[n++] = "postgres";
        full[n++] = "--";
    }
    for (size_t i = 0; argv[i] != NULL && n < 47; i++) full[n++] = argv[i];
    full[n] = NULL;
    if (via_runuser && netns != NULL && access(full[4], X_OK) != 0) full[4] = "/sbin/runuser";

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
        if (via_runuser && netns == NULL) {
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

static int run_cmd(char *const argv[], int as_postgres, const char *logpath, int timeout_ms) {
    return run_cmd_in(argv, NULL, as_postgres, logpath, timeout_ms);
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

typedef struct child_list {
    pid_t parent;
    pid_t *pids;
    int n, max;
} child_list;

static void add_if_child(pid_t pid, void *arg) {
    child_list *cl = arg;
    char state;
    pid_t ppid;
    if (cl->n < cl->max && proc_stat(pid, &state, &ppid) == 0 && ppid == cl->parent)
        cl->pids[cl->n++] = pid;
}

/* The children of parent (at most max) into pids; returns how many. */
static int list_children(pid_t parent, pid_t *pids, int max) {
    child_list cl = {parent, pids, 0, max};
    for_each_process(add_if_child, &cl);
    return cl.n;
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

/* Run a program to its end from a signal handler: _Fork is
 * async-signal-safe (fork is not); without it nothing runs. */
static void exec_from_handler(const char *prog, char *const argv[]) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    char *envp[] = {NULL};
    pid_t pid = _Fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, STDERR_FILENO);
        }
        execve(prog, argv, envp);
        _exit(127);
    }
    if (pid > 0) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
#else
    (void)prog;
    (void)argv;
#endif
}

static void rm_rf_from_handler(char *path) {
    char *argv[] = {"rm", "-rf", "--", path, NULL};
    exec_from_handler("/bin/rm", argv);
}

/* Delete a slot's veth pair (the host end takes the inside end with it) and
 * namespace; async-signal-safe when ip_path is known (it is, once a
 * namespace exists). */
static void delete_netns_from_handler(registry_slot *slot) {
    if (!slot->has_netns || ip_path[0] == '\0') return;
    char *del_link[] = {ip_path, "link", "del", slot->veth, NULL};
    char *del_ns[] = {ip_path, "netns", "del", slot->netns, NULL};
    exec_from_handler(ip_path, del_link);
    exec_from_handler(ip_path, del_ns);
    slot->has_netns = 0;
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
        delete_netns_from_handler(&registry[i]);
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
        slot->has_netns = 0;
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

/* A fresh directory for a server or the template: under
 * NOODLE_TEST_PG_TMPDIR, else TMPDIR, else /dev/shm when it is a writable
 * directory (a tmpfs: copying the 39 MB template there took 0.06 s against
 * 0.9 s on the ext4 /tmp of the test machines), else /tmp. */
static int make_root(char *buf, size_t size) {
    const char *base = getenv("NOODLE_TEST_PG_TMPDIR");
    struct stat st;
    if (base == NULL || base[0] == '\0') base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
                       access("/dev/shm", W_OK | X_OK) == 0
                   ? "/dev/shm"
                   : "/tmp";
    int n = snprintf(buf, size, "%s/noodle-test-XXXXXX", base);
    if (n < 0 || (size_t)n >= size) return -1;
    return mkdtemp(buf) == NULL ? -1 : 0;
}

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
    if (make_root(template_root, sizeof template_root) != 0) {
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
    /* Servers in network namespaces are reached from 10.200.0.0/16. */
    char hba[PATH_MAX];
    FILE *f = NULL;
    if (path_join(hba, sizeof hba, data, "/pg_hba.conf") != 0 || (f = fopen(hba, "a")) == NULL ||
        fputs("\n# noodle: servers in network namespaces\n"
              "host    all             all             10.200.0.0/16           trust\n"
              "host    replication     all             10.200.0.0/16           trust\n",
              f) < 0 ||
        fclose(f) != 0) {
        set_err(errbuf, errlen, "cannot extend %s: %s", hba, strerror(errno));
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

/* Append to postgresql.conf: the shared settings when base (a fresh copy of
 * the template), then this server's own identity (port, addresses, socket
 * directory) and its extra_conf. Later lines win, so this also gives a copy
 * of another server's configuration (pg_basebackup, pg_rewind) back its
 * own identity. synchronous_commit=on: with fsync=off it costs a write()
 * per commit, and a commit acknowledged before a kill -9 is then in the
 * WAL (with off, the last ~30 ms of acknowledged commits vanish on a kill,
 * even without failover). full_page_writes and wal_log_hints are on
 * because pg_rewind requires them. */
static int append_conf(const noodle_pg_server *s, int base) {
    char path[PATH_MAX];
    path_join(path, sizeof path, s->datadir, "/postgresql.conf");
    FILE *f = fopen(path, "a");
    if (f == NULL) return -1;
    if (base)
        fputs("\n# noodle test server\n"
              "max_connections = 100\n"
              "fsync = off\n"
              "synchronous_commit = on\n"
              "full_page_writes = on\n"
              "wal_log_hints = on\n"
              "wal_level = replica\n"
              "max_wal_senders = 10\n"
              "hot_standby = on\n"
              "wal_keep_size = 64MB\n"
              "wal_writer_delay = 10ms\n"
              "wal_retrieve_retry_interval = 100ms\n"
              /* dynamic shared memory in the data directory (pg_dynshmem),
               * removed with it: POSIX segments in /dev/shm outlive a
               * server killed with SIGKILL, and tests kill many */
              "dynamic_shared_memory_type = mmap\n",
              f);
    fprintf(f,
            "\n# noodle: this server\n"
            "port = %d\n"
            "listen_addresses = '%s'\n"
            "unix_socket_directories = '%s'\n",
            s->port, s->host, s->sockdir);
    if (s->extra_conf != NULL && s->extra_conf[0] != '\0') fprintf(f, "%s\n", s->extra_conf);
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
 * refusal of our readiness probe while it starts, nor a standby's
 * walreceiver failing to reach its primary (it retries; the standby still
 * starts from its own WAL). */
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
                 strstr(line, "not yet accepting connections") == NULL &&
                 strstr(line, "the primary server") == NULL &&
                 strstr(line, "WAL stream") == NULL && strstr(line, "walreceiver") == NULL)
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
    char pg_ctl[PATH_MAX], ping[PATH_MAX + 128];
    long offset = file_size(s->logfile);
    if (path_join(pg_ctl, sizeof pg_ctl, bindir, "/pg_ctl") != 0) {
        set_err(errbuf, errlen, "path too long: %s", bindir);
        return -1;
    }
    char *argv[] = {pg_ctl, "-W", "-D", s->datadir, "-l", s->logfile, "start", NULL};
    int status = run_cmd_in(argv, s->in_netns ? s->netns : NULL, 1, NULL, START_TIMEOUT_MS);
    if (status != 0) {
        set_err(errbuf, errlen, "pg_ctl start failed (status %d)", status);
        append_log_tail(errbuf, errlen, s->logfile);
        return -1;
    }
    /* Through the unix socket: works while the server is partitioned. */
    snprintf(ping, sizeof ping, "%s connect_timeout=2", s->admin_conninfo);
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

/* ---- connection strings and administrative connections -------------------------------- */

static void set_conninfo(noodle_pg_server *s) {
    snprintf(s->conninfo, sizeof s->conninfo, "host=%s port=%d dbname=postgres user=postgres",
             s->host, s->port);
    snprintf(s->admin_conninfo, sizeof s->admin_conninfo,
             "host=%s port=%d dbname=postgres user=postgres", s->sockdir, s->port);
}

/* What a standby's walreceiver uses to reach upstream: TCP when it can
 * (the standby is in the root namespace, which reaches 127.0.0.1 and every
 * namespace's inside address), else the upstream's unix socket. */
static void upstream_conninfo(const noodle_pg_server *standby, const noodle_pg_server *upstream,
                              char *buf, size_t size) {
    snprintf(buf, size, "host=%s port=%d user=postgres application_name=%s",
             standby->in_netns ? upstream->sockdir : upstream->host, upstream->port,
             standby->name);
}

static void quiet_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

/* A superuser connection through the unix socket, or NULL with errbuf set.
 * options (may be NULL) is libpq's options keyword, e.g. "-c x=y". */
static PGconn *admin_connect(const noodle_pg_server *s, const char *options, char *errbuf,
                             size_t errlen) {
    char conninfo[PATH_MAX + 256];
    snprintf(conninfo, sizeof conninfo, "%s connect_timeout=10%s%s%s", s->admin_conninfo,
             options != NULL ? " options='" : "", options != NULL ? options : "",
             options != NULL ? "'" : "");
    PGconn *conn = PQconnectdb(conninfo);
    if (conn == NULL) {
        set_err(errbuf, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        set_err(errbuf, errlen, "cannot connect to the server on port %d: %s", s->port,
                PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, quiet_notice, NULL);
    return conn;
}

/* Run sql on conn; the first cell of the first row (or "") into out.
 * Returns 0, or -1 with the server's message in errbuf. */
static int conn_value(PGconn *conn, const char *sql, char *out, size_t outlen, char *errbuf,
                      size_t errlen) {
    int rc = -1;
    if (outlen > 0) out[0] = '\0';
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
        set_err(errbuf, errlen, "%s: %s", sql,
                res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        break;
    }
    PQclear(res);
    return rc;
}

/* Poll sql on one connection every 2 ms until its value equals want. */
static int poll_value(const noodle_pg_server *s, const char *sql, const char *want,
                      int timeout_ms, char *errbuf, size_t errlen) {
    char value[256] = "";
    int64_t until = noodle_test_now_ms() + timeout_ms;
    PGconn *conn = admin_connect(s, NULL, errbuf, errlen);
    if (conn == NULL) return -1;
    for (;;) {
        if (conn_value(conn, sql, value, sizeof value, errbuf, errlen) != 0) break;
        if (strcmp(value, want) == 0) {
            PQfinish(conn);
            return 0;
        }
        if (noodle_test_now_ms() >= until) {
            set_err(errbuf, errlen, "%s: still '%s' after %d ms, waited for '%s'", sql, value,
                    timeout_ms, want);
            break;
        }
        sleep_ms(2);
    }
    PQfinish(conn);
    return -1;
}

/* ---- configuration files of standbys ------------------------------------------------- */

/* The name a postgresql.auto.conf line sets ("" for comments). */
static void conf_key(const char *line, char *key, size_t size) {
    size_t n = 0;
    while (*line == ' ' || *line == '\t') line++;
    while (n + 1 < size && (line[n] == '_' || (line[n] >= 'a' && line[n] <= 'z') ||
                            (line[n] >= 'A' && line[n] <= 'Z') ||
                            (line[n] >= '0' && line[n] <= '9')))
        n++;
    memcpy(key, line, n);
    key[n] = '\0';
}

/* Rewrite datadir/postgresql.auto.conf (the server must be down) without
 * the settings named in drop (NULL-terminated), then add `add` (may be NULL).
 * ALTER SYSTEM settings come with copies of a data directory: a standby or
 * rejoined server must not inherit its source's synchronous standbys, read
 * only mode or primary_conninfo. */
static int edit_auto_conf(const char *datadir, const char *const drop[], const char *add) {
    char path[PATH_MAX], line[4096], key[128];
    char *kept = NULL;
    size_t kept_len = 0;
    if (path_join(path, sizeof path, datadir, "/postgresql.auto.conf") != 0) return -1;
    FILE *in = fopen(path, "r");
    FILE *mem = open_memstream(&kept, &kept_len);
    if (mem == NULL) {
        if (in != NULL) fclose(in);
        return -1;
    }
    while (in != NULL && fgets(line, sizeof line, in) != NULL) {
        int dropped = 0;
        conf_key(line, key, sizeof key);
        for (size_t i = 0; drop[i] != NULL && !dropped; i++) dropped = strcmp(key, drop[i]) == 0;
        if (!dropped) fputs(line, mem);
    }
    if (in != NULL) fclose(in);
    if (add != NULL) fprintf(mem, "%s\n", add);
    if (fclose(mem) != 0) {
        free(kept);
        return -1;
    }
    FILE *out = fopen(path, "w");
    int rc = out != NULL && fwrite(kept, 1, kept_len, out) == kept_len ? 0 : -1;
    if (out != NULL && fclose(out) != 0) rc = -1;
    free(kept);
    if (rc == 0 && give_to_postgres(path) != 0) rc = -1;
    return rc;
}

/* Make s (down, data in place) a standby of upstream: standby.signal, its
 * own primary_conninfo, none of the source's ALTER SYSTEM settings that
 * would make it wait for standbys or refuse writes once promoted, and its
 * own identity in postgresql.conf. */
static int configure_standby(noodle_pg_server *s, const noodle_pg_server *upstream) {
    static const char *const drop[] = {"primary_conninfo", "primary_slot_name",
                                       "synchronous_standby_names",
                                       "default_transaction_read_only", NULL};
    char conninfo[PATH_MAX + 128], line[PATH_MAX + 160], signal_file[PATH_MAX];
    upstream_conninfo(s, upstream, conninfo, sizeof conninfo);
    snprintf(line, sizeof line, "primary_conninfo = '%s'", conninfo);
    if (edit_auto_conf(s->datadir, drop, line) != 0) return -1;
    if (path_join(signal_file, sizeof signal_file, s->datadir, "/standby.signal") != 0) return -1;
    int fd = open(signal_file, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    close(fd);
    if (give_to_postgres(signal_file) != 0) return -1;
    return append_conf(s, 0);
}

/* pg_basebackup of upstream into s->datadir (which must not exist). */
static int base_backup(noodle_pg_server *s, const noodle_pg_server *upstream, const char *bindir,
                       char *errbuf, size_t errlen) {
    char prog[PATH_MAX], port[16], log[PATH_MAX];
    if (path_join(prog, sizeof prog, bindir, "/pg_basebackup") != 0 ||
        path_join(log, sizeof log, s->root, "/basebackup.log") != 0) {
        set_err(errbuf, errlen, "path too long: %s", bindir);
        return -1;
    }
    snprintf(port, sizeof port, "%d", upstream->port);
    char *argv[] = {prog, "-R", "-X", "stream", "-c", "fast", "--no-sync", "-h",
                    (char *)upstream->host, "-p", port, "-U", "postgres", "-D", s->datadir,
                    NULL};
    int status = run_cmd(argv, 1, log, BASEBACKUP_TIMEOUT_MS);
    if (status != 0) {
        set_err(errbuf, errlen, "pg_basebackup from port %d failed (status %d)", upstream->port,
                status);
        append_log_tail(errbuf, errlen, log);
        return -1;
    }
    return 0;
}

/* ---- synchronous standbys ------------------------------------------------------------- */

/* Serializes the read-modify-write of synchronous_standby_names. */
static pthread_mutex_t sync_lock = PTHREAD_MUTEX_INITIALIZER;

/* Add name to primary's synchronous_standby_names ('ANY 1 ("a", "b")'),
 * turn synchronous_commit on, reload, and wait until pg_stat_replication
 * shows name as sync or quorum. */
static int make_synchronous(const noodle_pg_server *primary, const char *name, char *errbuf,
                            size_t errlen) {
    char cur[1024], names[1200], sql[1400], state[64];
    int rc = -1;
    pthread_mutex_lock(&sync_lock);
    PGconn *conn = admin_connect(primary, NULL, errbuf, errlen);
    if (conn == NULL) goto unlock;
    if (conn_value(conn, "SHOW synchronous_standby_names", cur, sizeof cur, errbuf, errlen) != 0)
        goto done;
    size_t len = strlen(cur);
    char quoted[NAME_MAX_LEN + 3];
    snprintf(quoted, sizeof quoted, "\"%s\"", name);
    if (len == 0) {
        snprintf(names, sizeof names, "ANY 1 (%s)", quoted);
    } else if (strncmp(cur, "ANY 1 (", 7) == 0 && cur[len - 1] == ')') {
        if (strstr(cur, quoted) != NULL)
            snprintf(names, sizeof names, "%s", cur);
        else
            snprintf(names, sizeof names, "%.*s, %s)", (int)(len - 1), cur, quoted);
    } else {
        set_err(errbuf, errlen,
                "the primary's synchronous_standby_names is '%s', not a list this module made",
                cur);
        goto done;
    }
    snprintf(sql, sizeof sql, "ALTER SYSTEM SET synchronous_standby_names = '%s'", names);
    if (conn_value(conn, sql, state, sizeof state, errbuf, errlen) != 0 ||
        conn_value(conn, "ALTER SYSTEM SET synchronous_commit = on", state, sizeof state, errbuf,
                   errlen) != 0 ||
        conn_value(conn, "SELECT pg_reload_conf()", state, sizeof state, errbuf, errlen) != 0)
        goto done;
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_replication WHERE application_name = '%s' "
             "AND sync_state IN ('sync', 'quorum')",
             name);
    int64_t until = noodle_test_now_ms() + SYNC_TIMEOUT_MS;
    for (;;) {
        if (conn_value(conn, sql, state, sizeof state, errbuf, errlen) != 0) goto done;
        if (strcmp(state, "0") != 0) break;
        if (noodle_test_now_ms() >= until) {
            set_err(errbuf, errlen,
                    "standby %s did not become synchronous within %d ms (names: %s)", name,
                    SYNC_TIMEOUT_MS, names);
            goto done;
        }
        sleep_ms(2);
    }
    rc = 0;
done:
    PQfinish(conn);
unlock:
    pthread_mutex_unlock(&sync_lock);
    return rc;
}

/* ---- network namespaces --------------------------------------------------------------- */

static pthread_mutex_t netns_lock = PTHREAD_MUTEX_INITIALIZER;
static int netns_seq;     /* names and subnets of this process, under netns_lock */
static int netns_gc_done; /* stale namespaces of dead processes removed */

/* Run `ip args...` (as root, in the root namespace); output to log. */
static int run_ip(const char *log, char *const args[]) {
    char *argv[24];
    size_t n = 0;
    argv[n++] = (char *)ip_binary();
    for (size_t i = 0; args[i] != NULL && n < 23; i++) argv[n++] = args[i];
    argv[n] = NULL;
    return run_cmd(argv, 0, log, IP_TIMEOUT_MS);
}

/* Whether an address of 10.200.0.0/16 block b (a /30) is in use in the root
 * namespace (another test process's host end). */
static int block_in_use(int b) {
    struct ifaddrs *list = NULL;
    int used = 0;
    uint32_t base = (10u << 24) | (200u << 16) | ((uint32_t)b << 2);
    if (getifaddrs(&list) != 0) return 0;
    for (struct ifaddrs *a = list; a != NULL && !used; a = a->ifa_next) {
        if (a->ifa_addr == NULL || a->ifa_addr->sa_family != AF_INET) continue;
        uint32_t v = ntohl(((struct sockaddr_in *)(void *)a->ifa_addr)->sin_addr.s_addr);
        used = (v & ~3u) == base;
    }
    freeifaddrs(list);
    return used;
}

/* Delete namespaces "noodle<pid>_<n>" (and their host veth) left by
 * processes that no longer exist (killed before they could clean up). */
static void remove_stale_netns(const char *log) {
    DIR *d = opendir("/run/netns");
    if (d == NULL) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        int pid = 0, n = 0;
        char veth[16], ns[sizeof e->d_name];
        if (sscanf(e->d_name, "noodle%d_%d", &pid, &n) != 2 || pid <= 0 || pid == getpid())
            continue;
        if (kill(pid, 0) == 0 || errno != ESRCH) continue;
        snprintf(ns, sizeof ns, "%s", e->d_name);
        snprintf(veth, sizeof veth, "nh%dx%d", pid, n);
        char *del_link[] = {"link", "del", veth, NULL};
        char *del_ns[] = {"netns", "del", ns, NULL};
        run_ip(log, del_link);
        run_ip(log, del_ns);
    }
    closedir(d);
}

static void teardown_netns(noodle_pg_server *s) {
    char log[PATH_MAX];
    if (!s->in_netns) return;
    path_join(log, sizeof log, s->root, "/ip.log");
    char *del_link[] = {"link", "del", s->veth_host, NULL};
    char *del_ns[] = {"netns", "del", s->netns, NULL};
    run_ip(log, del_link);
    run_ip(log, del_ns);
    pthread_mutex_lock(&registry_lock);
    if (s->slot >= 0) registry[s->slot].has_netns = 0;
    pthread_mutex_unlock(&registry_lock);
    s->in_netns = 0;
}

/* Make a namespace with a veth pair for s (slot claimed, root exists):
 * host end 10.200.X.(4k+1)/30 up in the root namespace, inside end
 * 10.200.X.(4k+2)/30 and lo up in the namespace. Sets s->host to the
 * inside address. Returns 0, or -1 with errbuf set. */
static int setup_netns(noodle_pg_server *s, char *errbuf, size_t errlen) {
    char log[PATH_MAX], host_cidr[32], inside_cidr[32];
    if (ip_binary()[0] == '\0') {
        set_err(errbuf, errlen, "no ip command (install iproute2)");
        return -1;
    }
    if (path_join(log, sizeof log, s->root, "/ip.log") != 0) {
        set_err(errbuf, errlen, "path too long: %s", s->root);
        return -1;
    }
    pthread_mutex_lock(&netns_lock);
    if (!netns_gc_done) {
        remove_stale_netns(log);
        netns_gc_done = 1;
    }
    for (int attempt = 0; attempt < 8; attempt++) {
        int n = netns_seq++;
        int pid = (int)getpid();
        /* A block per (pid, n); on a clash, the next free one. */
        int b = ((pid & 0xff) << 6 | (n & 63)) % 16384, tries = 0;
        while (block_in_use(b) && tries++ < 16384) b = (b + 1) % 16384;
        snprintf(s->netns, sizeof s->netns, "noodle%d_%d", pid, n);
        snprintf(s->veth_host, sizeof s->veth_host, "nh%dx%d", pid, n);
        snprintf(s->veth_inside, sizeof s->veth_inside, "ni%dx%d", pid, n);
        snprintf(s->host_side_addr, sizeof s->host_side_addr, "10.200.%d.%d", b >> 6,
                 (b & 63) * 4 + 1);
        snprintf(s->host, sizeof s->host, "10.200.%d.%d", b >> 6, (b & 63) * 4 + 2);
        snprintf(s->mac_host, sizeof s->mac_host, "02:00:0a:c8:%02x:%02x", b >> 6,
                 (b & 63) * 4 + 1);
        snprintf(s->mac_inside, sizeof s->mac_inside, "02:00:0a:c8:%02x:%02x", b >> 6,
                 (b & 63) * 4 + 2);
        snprintf(host_cidr, sizeof host_cidr, "%s/30", s->host_side_addr);
        snprintf(inside_cidr, sizeof inside_cidr, "%s/30", s->host);

        /* Listed before it exists (invariant 1): the handler may delete a
         * namespace that was never made, which is harmless. */
        pthread_mutex_lock(&registry_lock);
        registry_slot *slot = &registry[s->slot];
        snprintf(slot->netns, sizeof slot->netns, "%s", s->netns);
        snprintf(slot->veth, sizeof slot->veth, "%s", s->veth_host);
        slot->has_netns = 1;
        pthread_mutex_unlock(&registry_lock);
        char *add_ns[] = {"netns", "add", s->netns, NULL};
        if (run_ip(log, add_ns) != 0) { /* a name taken: the next n */
            pthread_mutex_lock(&registry_lock);
            slot->has_netns = 0;
            pthread_mutex_unlock(&registry_lock);
            continue;
        }
        s->in_netns = 1;

        char *add_veth[] = {"link", "add", s->veth_host, "address", s->mac_host,
                            "type", "veth", "peer", "name", s->veth_inside,
                            "address", s->mac_inside, "netns", s->netns, NULL};
        char *addr_host[] = {"addr", "add", host_cidr, "dev", s->veth_host, NULL};
        char *up_host[] = {"link", "set", s->veth_host, "up", NULL};
        char *addr_inside[] = {"-n", s->netns, "addr", "add", inside_cidr, "dev", s->veth_inside,
                               NULL};
        char *up_inside[] = {"-n", s->netns, "link", "set", s->veth_inside, "up", NULL};
        char *up_lo[] = {"-n", s->netns, "link", "set", "lo", "up", NULL};
        /* Static neighbours: no ARP, so a partition never turns into "no
         * route to host" (an ARP failure), and healing is immediate. */
        char *neigh_host[] = {"neigh", "replace", s->host, "lladdr", s->mac_inside,
                              "dev", s->veth_host, "nud", "permanent", NULL};
        char *neigh_inside[] = {"-n", s->netns, "neigh", "replace", s->host_side_addr,
                                "lladdr", s->mac_host, "dev", s->veth_inside,
                                "nud", "permanent", NULL};
        if (run_ip(log, add_veth) != 0) {
            teardown_netns(s); /* the host name was taken: the next n */
            continue;
        }
        if (run_ip(log, addr_host) != 0 || run_ip(log, up_host) != 0 ||
            run_ip(log, addr_inside) != 0 || run_ip(log, up_inside) != 0 ||
            run_ip(log, up_lo) != 0 || run_ip(log, neigh_host) != 0 ||
            run_ip(log, neigh_inside) != 0) {
            set_err(errbuf, errlen, "cannot set up network namespace %s", s->netns);
            append_log_tail(errbuf, errlen, log);
            teardown_netns(s);
            pthread_mutex_unlock(&netns_lock);
            return -1;
        }
        pthread_mutex_unlock(&netns_lock);
        return 0;
    }
    pthread_mutex_unlock(&netns_lock);
    set_err(errbuf, errlen, "cannot create a network namespace");
    append_log_tail(errbuf, errlen, log);
    return -1;
}

/* ---- the API ----------------------------------------------------------------------- */

/* Sequence numbers for default names ("primary1", "standby2", ...). */
static pthread_mutex_t name_lock = PTHREAD_MUTEX_INITIALIZER;
static int name_seq;

static int valid_name(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > NAME_MAX_LEN) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

static void free_server(noodle_pg_server *s) {
    free(s->extra_conf);
    free(s);
}

int noodle_pg_server_start(const noodle_pg_server_options *opts, noodle_pg_server **out,
                           char *errbuf, size_t errlen) {
    char bindir[PATH_MAX], log[PATH_MAX];
    noodle_pg_server *s = NULL;
    const noodle_pg_server *primary = opts != NULL ? opts->standby_of : NULL;
    int own_netns = opts != NULL && opts->own_netns;

    *out = NULL;
    if (errbuf != NULL && errlen > 0) errbuf[0] = '\0';
    if (opts != NULL && opts->name != NULL && !valid_name(opts->name)) {
        set_err(errbuf, errlen, "invalid server name '%s' (letters, digits, '_', at most %d)",
                opts->name, NAME_MAX_LEN);
        return -1;
    }
    if (opts != NULL && opts->synchronous && primary == NULL) {
        set_err(errbuf, errlen, "synchronous needs standby_of");
        return -1;
    }
    if (primary != NULL && primary->postmaster <= 0) {
        set_err(errbuf, errlen, "standby_of: that server is not running");
        return -1;
    }
    if (own_netns && !running_as_root()) {
        set_err(errbuf, errlen, "own_netns needs root");
        return -1;
    }
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
    /* Also for standbys: it installs the exit hook. */
    if (ensure_template(bindir, errbuf, errlen) != 0) return -1;

    s = calloc(1, sizeof *s);
    if (s == NULL) {
        set_err(errbuf, errlen, "out of memory");
        return -1;
    }
    s->slot = -1;
    s->rejoin_method = "";
    snprintf(s->host, sizeof s->host, "127.0.0.1");
    if (opts != NULL && opts->extra_conf != NULL &&
        (s->extra_conf = strdup(opts->extra_conf)) == NULL) {
        set_err(errbuf, errlen, "out of memory");
        goto fail_free;
    }
    pthread_mutex_lock(&name_lock);
    int seq = ++name_seq;
    pthread_mutex_unlock(&name_lock);
    if (opts != NULL && opts->name != NULL)
        snprintf(s->name, sizeof s->name, "%s", opts->name);
    else
        snprintf(s->name, sizeof s->name, "%s%d", primary != NULL ? "standby" : "primary", seq);

    if (make_root(s->root, sizeof s->root) != 0) {
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
    if (mkdir(s->sockdir, 0700) != 0 || give_to_postgres(s->sockdir) != 0) {
        set_err(errbuf, errlen, "cannot make %s: %s", s->sockdir, strerror(errno));
        goto fail_slot;
    }
    if (own_netns && setup_netns(s, errbuf, errlen) != 0) goto fail_slot;
    if (primary != NULL) {
        if (base_backup(s, primary, bindir, errbuf, errlen) != 0) goto fail_slot;
    } else {
        char *cp[] = {"cp", "-a", template_data, s->datadir, NULL};
        int status = run_cmd(cp, 0, log, COPY_TIMEOUT_MS);
        if (status != 0) {
            set_err(errbuf, errlen, "copying the template failed (status %d)", status);
            append_log_tail(errbuf, errlen, log);
            goto fail_slot;
        }
    }

    for (int attempt = 0;; attempt++) {
        s->port = free_port();
        if (s->port <= 0) {
            set_err(errbuf, errlen, "no free TCP port: %s", strerror(errno));
            goto fail_slot;
        }
        set_conninfo(s);
        int wrote;
        if (attempt > 0)
            wrote = append_port(s);
        else if (primary != NULL)
            wrote = configure_standby(s, primary);
        else
            wrote = append_conf(s, 1);
        if (wrote != 0) {
            set_err(errbuf, errlen, "cannot write the configuration: %s", strerror(errno));
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
    if (opts != NULL && opts->synchronous &&
        make_synchronous(primary, s->name, errbuf, errlen) != 0)
        goto fail_slot;
    publish_slot(s);
    *out = s;
    return 0;

fail_slot:
    kill_slot_processes(&registry[s->slot]);
    teardown_netns(s);
    noodle_test_rm_rf(s->root);
    release_slot(s);
    free_server(s);
    return -1;
fail_rm:
    noodle_test_rm_rf(s->root);
fail_free:
    free_server(s);
    return -1;
}

void noodle_pg_server_stop(noodle_pg_server *s) {
    char bindir[PATH_MAX], pg_ctl[PATH_MAX];
    int stopped = -1;
    if (s == NULL) return;
    if (s->frozen) noodle_pg_server_thaw(s);
    if (s->postmaster > 0 && find_bindir(bindir, sizeof bindir) == 0 &&
        path_join(pg_ctl, sizeof pg_ctl, bindir, "/pg_ctl") == 0) {
        /* -W and our own wait: pg_ctl's polls every 100 ms. */
        char *argv[] = {pg_ctl, "-D", s->datadir, "-m", "immediate", "-W", "stop", NULL};
        stopped = run_cmd(argv, 1, NULL, STOP_TIMEOUT_MS);
        int64_t until = noodle_test_now_ms() + STOP_TIMEOUT_MS;
        while (stopped == 0 && proc_alive(s->postmaster) && noodle_test_now_ms() < until)
            sleep_ms(2);
    }
    /* Also when it is not running: whatever still names its directory. */
    if (stopped != 0 || proc_alive(s->postmaster)) {
        kill_slot_processes(&registry[s->slot]);
        for (int waited = 0; waited < 3000 && proc_alive(s->postmaster); waited += 10) sleep_ms(10);
    }
    teardown_netns(s);
    noodle_test_rm_rf(s->root);
    release_slot(s);
    free_server(s);
}

const char *noodle_pg_server_conninfo(const noodle_pg_server *s) {
    return s->conninfo;
}

const char *noodle_pg_server_host(const noodle_pg_server *s) {
    return s->host;
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

const char *noodle_pg_server_name(const noodle_pg_server *s) {
    return s->name;
}

bool noodle_pg_server_is_running(const noodle_pg_server *s) {
    return s->postmaster > 0 && proc_alive(s->postmaster);
}

int noodle_pg_server_query(const noodle_pg_server *s, const char *sql, char *out, size_t outlen) {
    char err[1024] = "";
    if (outlen > 0) out[0] = '\0';
    PGconn *conn = admin_connect(s, NULL, err, sizeof err);
    if (conn == NULL) {
        snprintf(out, outlen, "%s", err);
        return -1;
    }
    int rc = conn_value(conn, sql, out, outlen, err, sizeof err);
    if (rc != 0) {
        /* The server's own message, as before: without the "sql: " prefix. */
        const char *msg = err;
        size_t sql_len = strlen(sql);
        if (strncmp(err, sql, sql_len) == 0 && strncmp(err + sql_len, ": ", 2) == 0)
            msg = err + sql_len + 2;
        snprintf(out, outlen, "%s", msg);
    }
    PQfinish(conn);
    return rc;
}

void noodle_pg_server_query_ok(const noodle_pg_server *s, const char *sql, char *out,
                               size_t outlen) {
    if (noodle_pg_server_query(s, sql, out, outlen) != 0)
        fail_msg("on port %d: %s: %s", noodle_pg_server_port(s), sql, out);
}

void noodle_pg_server_wait_for(const noodle_pg_server *s, const char *sql, const char *want,
                               int timeout_ms) {
    char out[1024] = "";
    int64_t until = noodle_test_now_ms() + timeout_ms;
    for (;;) {
        if (noodle_pg_server_query(s, sql, out, sizeof out) == 0 && strcmp(out, want) == 0) return;
        if (noodle_test_now_ms() >= until)
            fail_msg("on port %d: %s: still '%s' after %d ms, want '%s'", noodle_pg_server_port(s),
                     sql, out, timeout_ms, want);
        noodle_test_sleep_ms(2);
    }
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

/* ---- replication and failover --------------------------------------------------- */

int noodle_pg_server_wait_streaming(const noodle_pg_server *primary, int n, int timeout_ms,
                                    char *errbuf, size_t errlen) {
    char value[32] = "", want[32];
    int64_t until = noodle_test_now_ms() + timeout_ms;
    if (errbuf != NULL && errlen > 0) errbuf[0] = '\0';
    PGconn *conn = admin_connect(primary, NULL, errbuf, errlen);
    if (conn == NULL) return -1;
    snprintf(want, sizeof want, "%d", n);
    for (;;) {
        if (conn_value(conn,
                       "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                       value, sizeof value, errbuf, errlen) != 0)
            break;
        if (atoi(value) >= n) {
            PQfinish(conn);
            return 0;
        }
        if (noodle_test_now_ms() >= until) {
            set_err(errbuf, errlen, "%s of %d standbys streaming after %d ms", value, n,
                    timeout_ms);
            break;
        }
        sleep_ms(2);
    }
    PQfinish(conn);
    return -1;
}

/* Remove what a killed postmaster leaves: its pid file and the socket's
 * lock file (a reused pid in either would make a restart refuse). */
static void remove_stale_files(const noodle_pg_server *s) {
    char path[PATH_MAX + 32];
    if (path_join(path, sizeof path, s->datadir, "/postmaster.pid") == 0) unlink(path);
    snprintf(path, sizeof path, "%s/.s.PGSQL.%d.lock", s->sockdir, s->port);
    unlink(path);
    snprintf(path, sizeof path, "%s/.s.PGSQL.%d", s->sockdir, s->port);
    unlink(path);
}

#define MAX_CHILDREN 512

int noodle_pg_server_kill(noodle_pg_server *s, int sig) {
    pid_t pid = s->postmaster;
    if (pid <= 0) return -1;
    if (!proc_alive(pid)) {
        /* It died on its own: for SIGKILL that is the wanted state. */
        if (sig != SIGKILL) return -1;
    } else if (sig == SIGKILL) {
        pid_t kids[MAX_CHILDREN];
        char state;
        pid_t ppid;
        /* Stop it first (invariant 4), then list its children twice: a
         * fork in progress completes after the stop. */
        kill(pid, SIGSTOP);
        for (int waited = 0; waited < 2000; waited++) {
            if (proc_stat(pid, &state, &ppid) != 0 || state == 'T') break;
            sleep_ms(1);
        }
        int n = list_children(pid, kids, MAX_CHILDREN);
        sleep_ms(2);
        n += list_children(pid, kids + n, MAX_CHILDREN - n);
        for (int i = 0; i < n; i++) kill(kids[i], SIGKILL);
        kill(pid, SIGKILL);
        int64_t until = noodle_test_now_ms() + STOP_TIMEOUT_MS;
        for (;;) {
            int alive = proc_alive(pid);
            for (int i = 0; i < n && !alive; i++) alive = proc_alive(kids[i]);
            if (!alive) break;
            if (noodle_test_now_ms() >= until) return -1;
            sleep_ms(1);
        }
    } else {
        if (kill(pid, sig) != 0) return -1;
        if (sig != SIGTERM && sig != SIGINT && sig != SIGQUIT) return 0;
        if (s->frozen) noodle_pg_server_thaw(s);
        int64_t until = noodle_test_now_ms() + STOP_TIMEOUT_MS;
        while (proc_alive(pid)) {
            if (noodle_test_now_ms() >= until) return -1;
            sleep_ms(1);
        }
    }
    s->postmaster = 0;
    s->frozen = 0;
    remove_stale_files(s);
    return 0;
}

int noodle_pg_server_promote(noodle_pg_server *s, int timeout_ms, char *errbuf, size_t errlen) {
    char value[32];
    if (errbuf != NULL && errlen > 0) errbuf[0] = '\0';
    PGconn *conn = admin_connect(s, NULL, errbuf, errlen);
    if (conn == NULL) return -1;
    if (conn_value(conn, "SELECT pg_is_in_recovery()", value, sizeof value, errbuf, errlen) != 0)
        goto fail;
    if (strcmp(value, "t") != 0) {
        set_err(errbuf, errlen, "the server on port %d is not a standby", s->port);
        goto fail;
    }
    /* pg_promote(true) and pg_ctl promote -w poll every 100 ms: ask
     * without waiting and poll faster. */
    if (conn_value(conn, "SELECT pg_promote(false)", value, sizeof value, errbuf, errlen) != 0)
        goto fail;
    PQfinish(conn);
    return poll_value(s, "SELECT pg_is_in_recovery()", "f", timeout_ms, errbuf, errlen);
fail:
    PQfinish(conn);
    return -1;
}

int noodle_pg_server_shutdown(noodle_pg_server *s, char *errbuf, size_t errlen) {
    if (errbuf != NULL && errlen > 0) errbuf[0] = '\0';
    if (s->postmaster <= 0) return 0;
    if (s->frozen) noodle_pg_server_thaw(s);
    /* SIGINT is what pg_ctl stop -m fast sends; waiting here is faster. */
    if (noodle_pg_server_kill(s, SIGINT) != 0) {
        set_err(errbuf, errlen, "the server on port %d did not shut down within %d ms", s->port,
                STOP_TIMEOUT_MS);
        append_log_tail(errbuf, errlen, s->logfile);
        return -1;
    }
    return 0;
}

int noodle_pg_server_restart(noodle_pg_server *s, char *errbuf, size_t errlen) {
    char bindir[PATH_MAX];
    if (errbuf != NULL && errlen > 0) errbuf[0] = '\0';
    if (s->postmaster > 0 && proc_alive(s->postmaster)) {
        set_err(errbuf, errlen, "the server on port %d is running", s->port);
        return -1;
    }
    if (s->postmaster > 0) { /* it died on its own */
        s->postmaster = 0;
        s->frozen = 0;
        remove_stale_files(s);
    }
    if (find_bindir(bindir, sizeof bindir) != 0) {
        set_err(errbuf, errlen, "no PostgreSQL binaries");
        return -1;
    }
    int r = start_once(s, bindir, errbuf, errlen);
    if (r == 1) set_err(errbuf, errlen, "port %d is taken by someone else now", s->port);
    return r == 0 ? 0 : -1;
}

int noodle_pg_server_set_read_only(noodle_pg_server *s, bool on, char *errbuf, size_t errlen) {
    char value[32], sql[128];
    if (errbuf != NULL && errlen > 0) errbuf[0] = '\0';
    /* Our own session is not read-only, whatever the server's mode. */
    PGconn *conn = admin_connect(s, "-c default_transaction_read_only=off", errbuf, errlen);
    if (conn == NULL) return -1;
    snprintf(sql, sizeof sql, "ALTER SYSTEM SET default_transaction_read_only = %s",
             on ? "on" : "off");
    int rc = conn_value(conn, sql, value, sizeof value, errbuf, errlen);
    if (rc == 0)
        rc = conn_value(conn, "SELECT pg_reload_conf()", value, sizeof value, errbuf, errlen);
    PQfinish(conn);
    if (rc != 0) return -1;
    /* Every backend rereads the file on its own time: a new session each
     * round, as a client would see it. */
    int64_t until = noodle_test_now_ms() + 10000;
    for (;;) {
        if (noodle_pg_server_query(s, "SHOW default_transaction_read_only", value, sizeof value) !=
            0) {
            set_err(errbuf, errlen, "SHOW default_transaction_read_only: %s", value);
            return -1;
        }
        if (strcmp(value, on ? "on" : "off") == 0) return 0;
        if (noodle_test_now_ms() >= until) {
            set_err(errbuf, errlen, "default_transaction_read_only is still %s after 10 s", value);
            return -1;
        }
        sleep_ms(2);
    }
}

int noodle_pg_server_rejoin_as_standby(noodle_pg_server *old_primary,
                                       const noodle_pg_server *new_primary, char *errbuf,
                                       size_t errlen) {
    noodle_pg_server *s = old_primary;
    char bindir[PATH_MAX], prog[PATH_MAX], log[PATH_MAX], target[PATH_MAX + 32];
    char source[PATH_MAX + 64], value[32];
    if (errbuf != NULL && errlen > 0) errbuf[0] = '\0';
    if (s == new_primary) {
        set_err(errbuf, errlen, "a server cannot follow itself");
        return -1;
    }
    if (find_bindir(bindir, sizeof bindir) != 0 ||
        path_join(prog, sizeof prog, bindir, "/pg_rewind") != 0 ||
        path_join(log, sizeof log, s->root, "/rewind.log") != 0) {
        set_err(errbuf, errlen, "no PostgreSQL binaries");
        return -1;
    }
    if (s->postmaster > 0 && noodle_pg_server_shutdown(s, errbuf, errlen) != 0 &&
        noodle_pg_server_kill(s, SIGKILL) != 0)
        return -1;

    /* pg_rewind finishes the crash recovery of a killed server itself
     * (single-user mode), then copies what differs from the source. It
     * replaces the configuration files with the source's: configure_standby
     * puts this server's own back. */
    /* A promoted server writes its new timeline into pg_control only at
     * the next checkpoint; before it, pg_rewind sees both on the same
     * timeline and does nothing ("no rewind required"). */
    if (noodle_pg_server_query(new_primary, "CHECKPOINT", value, sizeof value) != 0) {
        set_err(errbuf, errlen, "CHECKPOINT on the new primary: %s", value);
        return -1;
    }
    snprintf(target, sizeof target, "--target-pgdata=%s", s->datadir);
    snprintf(source, sizeof source, "--source-server=%s", new_primary->conninfo);
    char *argv[] = {prog, target, source, "--no-sync", NULL};
    int status = run_cmd(argv, 1, log, REWIND_TIMEOUT_MS);
    if (status == 0) {
        s->rejoin_method = "pg_rewind";
    } else {
        /* A fresh copy instead (e.g. the WAL needed to rewind is gone). */
        s->rejoin_method = "pg_basebackup";
        if (noodle_test_rm_rf(s->datadir) != 0 ||
            base_backup(s, new_primary, bindir, errbuf, errlen) != 0) {
            set_err(errbuf, errlen, "pg_rewind failed (status %d), and so did pg_basebackup",
                    status);
            append_log_tail(errbuf, errlen, log);
            s->rejoin_method = "";
            return -1;
        }
    }
    if (configure_standby(s, new_primary) != 0) {
        set_err(errbuf, errlen, "cannot write the standby configuration: %s", strerror(errno));
        return -1;
    }
    int r = start_once(s, bindir, errbuf, errlen);
    if (r != 0) {
        if (r == 1) set_err(errbuf, errlen, "port %d is taken by someone else now", s->port);
        return -1;
    }
    if (noodle_pg_server_query(s, "SELECT pg_is_in_recovery()", value, sizeof value) != 0 ||
        strcmp(value, "t") != 0) {
        set_err(errbuf, errlen, "the rejoined server is not in recovery: %s", value);
        return -1;
    }
    return 0;
}

const char *noodle_pg_server_rejoin_method(const noodle_pg_server *s) {
    return s->rejoin_method;
}

/* ---- network partitions ---------------------------------------------------------------- */

static pthread_mutex_t netns_probe_lock = PTHREAD_MUTEX_INITIALIZER;
static int netns_probe_result; /* 0 unknown, 1 available */

bool noodle_pg_server_netns_available(char *why, size_t len) {
    char log[PATH_MAX], dir[PATH_MAX], ns[32], vh[16], vi[16];
    bool ok = false;
    if (why != NULL && len > 0) why[0] = '\0';
    if (!running_as_root()) {
        set_err(why, len, "network namespaces need root (euid %d)", (int)geteuid());
        return false;
    }
    if (ip_binary()[0] == '\0') {
        set_err(why, len, "no ip command (install iproute2)");
        return false;
    }
    pthread_mutex_lock(&netns_probe_lock);
    if (netns_probe_result == 1) {
        pthread_mutex_unlock(&netns_probe_lock);
        return true;
    }
    if (noodle_test_tempdir(dir, sizeof dir) != 0 ||
        path_join(log, sizeof log, dir, "/ip.log") != 0) {
        set_err(why, len, "cannot make a temporary directory: %s", strerror(errno));
        pthread_mutex_unlock(&netns_probe_lock);
        return false;
    }
    /* Outside the registry (no server): a signal in between may leave the
     * probe's namespace, which remove_stale_netns deletes next time. */
    snprintf(ns, sizeof ns, "noodle%d_9999", (int)getpid());
    snprintf(vh, sizeof vh, "nh%dx9999", (int)getpid());
    snprintf(vi, sizeof vi, "ni%dx9999", (int)getpid());
    char *add_ns[] = {"netns", "add", ns, NULL};
    char *add_veth[] = {"link", "add", vh, "type", "veth", "peer", "name", vi, "netns", ns, NULL};
    char *up_lo[] = {"-n", ns, "link", "set", "lo", "up", NULL};
    char *del_link[] = {"link", "del", vh, NULL};
    char *del_ns[] = {"netns", "del", ns, NULL};
    if (run_ip(log, add_ns) != 0) {
        set_err(why, len, "ip netns add failed");
    } else {
        if (run_ip(log, add_veth) != 0)
            set_err(why, len, "ip link add (veth) failed");
        else if (run_ip(log, up_lo) != 0)
            set_err(why, len, "ip -n <ns> link set lo up failed");
        else
            ok = true;
        run_ip(log, del_link);
        if (run_ip(log, del_ns) != 0 && ok) {
            set_err(why, len, "ip netns del failed");
            ok = false;
        }
    }
    if (!ok) append_log_tail(why, len, log);
    noodle_test_rm_rf(dir);
    if (ok) netns_probe_result = 1;
    pthread_mutex_unlock(&netns_probe_lock);
    return ok;
}

int noodle_pg_server_partition(noodle_pg_server *s, bool cut) {
    char log[PATH_MAX];
    if (!s->in_netns || path_join(log, sizeof log, s->root, "/ip.log") != 0) return -1;
    /* The inside end: the host end keeps its route, so packets to the
     * server are dropped at the veth instead of leaving through the
     * default route (where a proxy may even accept them). */
    char *argv[] = {"-n", s->netns, "link", "set", s->veth_inside, cut ? "down" : "up", NULL};
    if (run_ip(log, argv) != 0) return -1;
    if (cut) return 0;
    /* Setting a link down drops its permanent neighbours too: back. */
    char *neigh[] = {"-n", s->netns, "neigh", "replace", s->host_side_addr, "lladdr",
                     s->mac_host, "dev", s->veth_inside, "nud", "permanent", NULL};
    return run_ip(log, neigh) == 0 ? 0 : -1;
}
