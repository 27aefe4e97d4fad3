/* Throwaway PostgreSQL servers for tests.
 *
 * noodle_pg_server_start() makes a data directory under a fresh temporary
 * directory (initdb once per process into a template, then a copy), picks a
 * free TCP port on 127.0.0.1, uses a private unix socket directory, and starts
 * the server -- as the `postgres` user via runuser when running as root. The
 * server is torn down by noodle_pg_server_stop(), and also at exit and on
 * fatal signals (SIGINT, SIGTERM, SIGSEGV, SIGABRT, ...) so that a failing test
 * never leaves a server behind.
 *
 * Binaries come from NOODLE_TEST_PG_BINDIR, else the directory CMake found
 * (NOODLE_PG_BINDIR), else the newest /usr/lib/postgresql/N/bin.
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
} noodle_pg_server_options;

/* Start a server. Returns 0, or -1 with a message in errbuf. */
int noodle_pg_server_start(const noodle_pg_server_options *opts, noodle_pg_server **out,
                           char *errbuf, size_t errlen);
/* Stop it (immediate shutdown), remove its directory, free it. Accepts NULL. */
void noodle_pg_server_stop(noodle_pg_server *s);

/* "host=127.0.0.1 port=N dbname=postgres user=postgres" (TCP). */
const char *noodle_pg_server_conninfo(const noodle_pg_server *s);
int noodle_pg_server_port(const noodle_pg_server *s);
pid_t noodle_pg_server_postmaster_pid(const noodle_pg_server *s);
const char *noodle_pg_server_datadir(const noodle_pg_server *s);

/* Run sql as superuser through a fresh libpq connection and copy the first
 * column of the first row (or "" when no rows) into out. Returns 0 or -1 with
 * the server's message in out. */
int noodle_pg_server_query(const noodle_pg_server *s, const char *sql, char *out, size_t outlen);

/* SIGSTOP / SIGCONT the postmaster and every child process (each backend is
 * its own process group, so stopping the postmaster alone is not enough). */
int noodle_pg_server_freeze(noodle_pg_server *s);
int noodle_pg_server_thaw(noodle_pg_server *s);

#endif
