/* Throwaway PostgreSQL servers for tests.
 *
 * noodle_pg_server_start() makes a data directory under a fresh temporary
 * directory (initdb once per process into a template, then a copy), picks a
 * free TCP port on 127.0.0.1, uses a private unix socket directory, and starts
 * the server -- as the `postgres` user via runuser when running as root. The
 * server is torn down by noodle_pg_server_stop(), and also at exit and on
 * fatal signals (SIGINT, SIGTERM, SIGSEGV, SIGABRT, ...) so that a failing test
 * never leaves a server behind (nor a network namespace, see own_netns).
 *
 * Binaries come from NOODLE_TEST_PG_BINDIR, else the directory CMake found
 * (NOODLE_PG_BINDIR), else the newest /usr/lib/postgresql/N/bin. Data lives
 * under NOODLE_TEST_PG_TMPDIR, else TMPDIR, else /dev/shm (a tmpfs: copies
 * are 15 times faster than on the test machines' ext4), else /tmp.
 *
 * Configuration of every server: fsync=off, synchronous_commit=on (with
 * fsync off it costs a write() per commit, and an acknowledged commit
 * survives a kill -9 of the server), full_page_writes=on and
 * wal_log_hints=on (pg_rewind needs both), wal_level=replica,
 * max_wal_senders=10, wal_keep_size=64MB, hot_standby=on,
 * wal_retrieve_retry_interval=100ms. pg_hba.conf trusts local sockets,
 * 127.0.0.1 and 10.200.0.0/16, for replication too.
 *
 * Replication clusters: start a primary, then standbys with standby_of set.
 * Failover: noodle_pg_server_kill (or _partition), _promote a standby,
 * then _rejoin_as_standby the old primary. A killed or shut down server keeps
 * its directory and can be _restart-ed; _stop removes everything.
 *
 * Administrative connections of this module (noodle_pg_server_query,
 * _wait_streaming, _promote, _set_read_only, readiness checks) go through
 * the server's unix socket, so they work while the server is partitioned.
 *
 * The functions taking a server are not meant to be called concurrently on
 * the same server; different servers may be used from different threads.
 */
#ifndef NOODLE_TEST_PG_SERVER_H
#define NOODLE_TEST_PG_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct noodle_pg_server noodle_pg_server;

typedef struct noodle_pg_server_options {
    /* Extra postgresql.conf lines (may be NULL). */
    const char *extra_conf;
    /* When set: start as a streaming standby of this server (pg_basebackup
     * -R -X stream -c fast, primary_conninfo with application_name = name).
     * The standby inherits the primary's postgresql.conf (its extra_conf
     * too) but not its ALTER SYSTEM settings synchronous_standby_names and
     * default_transaction_read_only. The primary may be stopped afterwards:
     * the standby keeps no pointer to it. */
    const noodle_pg_server *standby_of;
    /* The standby's application_name: letters, digits, '_' (at most 63).
     * NULL: "standby<N>" ("primary<N>" without standby_of), N counting the
     * servers of this process. */
    const char *name;
    /* A standby that the primary waits for: the primary gets
     * synchronous_standby_names = 'ANY 1 (<every synchronous standby>)' and
     * synchronous_commit = on (ALTER SYSTEM, reload), and start returns once
     * pg_stat_replication shows this standby as 'sync' or 'quorum'. Writes on
     * the primary then hang while no synchronous standby is connected. Only
     * for a standby of a primary (not of another standby). */
    bool synchronous;
    /* Run the server in a network namespace of its own (needs root and
     * iproute2; see noodle_pg_server_netns_available). It listens on
     * 10.200.X.Y+2 inside; the host side of its veth pair is 10.200.X.Y+1;
     * the conninfo uses the inside address. See noodle_pg_server_partition.
     * A server in a namespace streams from an upstream in another namespace
     * through the upstream's unix socket (a path, reachable from every
     * network namespace), which a partition does NOT cut; replication from
     * a namespaced server to a standby outside goes over TCP and is cut. */
    bool own_netns;
} noodle_pg_server_options;

/* Start a server. Returns 0, or -1 with a message in errbuf. */
int noodle_pg_server_start(const noodle_pg_server_options *opts, noodle_pg_server **out,
                           char *errbuf, size_t errlen);
/* Stop it (immediate shutdown), remove its directory and network namespace,
 * free it. Accepts NULL and servers that were killed or shut down. */
void noodle_pg_server_stop(noodle_pg_server *s);

/* "host=127.0.0.1 port=N dbname=postgres user=postgres" (TCP; the host is
 * the inside address for a server in its own network namespace). */
const char *noodle_pg_server_conninfo(const noodle_pg_server *s);
/* The TCP address clients use: "127.0.0.1" or the namespace's address. */
const char *noodle_pg_server_host(const noodle_pg_server *s);
int noodle_pg_server_port(const noodle_pg_server *s);
/* The running postmaster, 0 after noodle_pg_server_kill / _shutdown. */
pid_t noodle_pg_server_postmaster_pid(const noodle_pg_server *s);
const char *noodle_pg_server_datadir(const noodle_pg_server *s);
/* Its application_name as a standby: options.name, else "standby<N>", or
 * "primary<N>" for a server started as a primary (used when it rejoins). */
const char *noodle_pg_server_name(const noodle_pg_server *s);
/* The postmaster is running (not killed or shut down; frozen counts). */
bool noodle_pg_server_is_running(const noodle_pg_server *s);

/* Run sql as superuser through a fresh libpq connection and copy the first
 * column of the first row (or "" when no rows) into out. Returns 0 or -1 with
 * the server's message in out. */
int noodle_pg_server_query(const noodle_pg_server *s, const char *sql, char *out, size_t outlen);

/* Test assertions (cmocka): noodle_pg_server_query that fails the test on
 * an error; and polling sql until its first cell is want (a standby
 * applying WAL), failing the test after timeout_ms. */
void noodle_pg_server_query_ok(const noodle_pg_server *s, const char *sql, char *out,
                               size_t outlen);
void noodle_pg_server_wait_for(const noodle_pg_server *s, const char *sql, const char *want,
                               int timeout_ms);

/* SIGSTOP / SIGCONT the postmaster and every child process (each backend is
 * its own process group, so stopping the postmaster alone is not enough). */
int noodle_pg_server_freeze(noodle_pg_server *s);
int noodle_pg_server_thaw(noodle_pg_server *s);

/* ---- replication and failover --------------------------------------------------- */

/* Wait until pg_stat_replication on primary shows at least n walsenders in
 * state 'streaming'. Returns 0, or -1 with errbuf set (timeout, error). */
int noodle_pg_server_wait_streaming(const noodle_pg_server *primary, int n, int timeout_ms,
                                    char *errbuf, size_t errlen);

/* Send sig to the postmaster. SIGKILL: the postmaster is stopped, then it
 * and every child are killed; returns once they are all gone (zombies count
 * as gone) and postmaster.pid and the socket lock file are removed, so that
 * noodle_pg_server_restart works. SIGTERM, SIGINT, SIGQUIT (the shutdown
 * modes): returns once the postmaster is gone. Other signals: just sent.
 * Returns 0, or -1 when the server is not running (SIGKILL of a postmaster
 * that died on its own: 0, and the pid files are cleaned up) or did not go
 * away. */
int noodle_pg_server_kill(noodle_pg_server *s, int sig);

/* Promote a standby (pg_promote without waiting, then a 2 ms poll) and
 * return once pg_is_in_recovery() is false: it accepts writes then. */
int noodle_pg_server_promote(noodle_pg_server *s, int timeout_ms, char *errbuf, size_t errlen);

/* Fast shutdown (pg_ctl stop -m fast) that keeps the directory and the
 * registration: restart works afterwards and _stop still cleans up. A server
 * that is not running is left as it is (returns 0). */
int noodle_pg_server_shutdown(noodle_pg_server *s, char *errbuf, size_t errlen);

/* Start a killed or shut down server again, same port and data directory
 * (and namespace). A killed primary comes back as a primary with its data
 * after crash recovery. Returns once it accepts connections (a standby once
 * it is consistent). -1 when it is running, or did not start. */
int noodle_pg_server_restart(noodle_pg_server *s, char *errbuf, size_t errlen);

/* ALTER SYSTEM SET default_transaction_read_only = on|off and reload;
 * returns once a new session sees the new value. */
int noodle_pg_server_set_read_only(noodle_pg_server *s, bool on, char *errbuf, size_t errlen);

/* Turn a former primary into a streaming standby of new_primary: shut it
 * down if it runs, pg_rewind it from new_primary (pg_rewind first finishes
 * crash recovery of a killed server in single-user mode), write
 * standby.signal and primary_conninfo, start it, and return once it is in
 * recovery. When pg_rewind fails, a fresh pg_basebackup into the same
 * directory is used instead (see noodle_pg_server_rejoin_method), e.g. for
 * a server that ran without wal_log_hints. Caution: every server of a
 * process is a copy of one initdb template and so has the same system
 * identifier; pg_rewind (and a walreceiver) cannot tell servers of
 * different clusters apart -- only rejoin a server to its own cluster. */
int noodle_pg_server_rejoin_as_standby(noodle_pg_server *old_primary,
                                       const noodle_pg_server *new_primary, char *errbuf,
                                       size_t errlen);
/* How the last rejoin got its data: "pg_rewind", "pg_basebackup", or "". */
const char *noodle_pg_server_rejoin_method(const noodle_pg_server *s);

/* ---- network partitions (own_netns) ---------------------------------------------- */

/* Whether servers can run in their own network namespace here: creates and
 * deletes a namespace with a veth pair. false with the reason in why. */
bool noodle_pg_server_netns_available(char *why, size_t len);

/* cut: set the namespace's end of the veth pair down. Packets to and from
 * the server then vanish (no RST, no ICMP, no ARP failure: the pair has
 * static neighbour entries): a new connection times out, an existing one
 * stalls. The host end stays up on purpose: setting it down removes the
 * route, packets then leave through the default route, and on the test
 * machines a proxy there even accepted the TCP connection.
 * !cut: set it up again; a connect in progress completes at its next SYN
 * retransmission. Returns 0, or -1 (not in a namespace, ip failed). */
int noodle_pg_server_partition(noodle_pg_server *s, bool cut);

#endif
