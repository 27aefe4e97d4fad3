/* Library and dependency versions. */
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>

#include "noodle/noodle.h"

#ifndef NOODLE_VERSION
#define NOODLE_VERSION "0.0.0"
#endif

const char *noodle_version(void) { return NOODLE_VERSION; }

static char versions[96];
static pthread_once_t versions_once = PTHREAD_ONCE_INIT;

static void make_versions(void) {
    int pq = PQlibVersion(); /* e.g. 150018 */
    snprintf(versions, sizeof versions, "SQLite %s, libpq %d.%d", sqlite3_libversion(), pq / 10000,
             pq % 10000);
}

const char *noodle_dependency_versions(void) {
    pthread_once(&versions_once, make_versions);
    return versions;
}
