/* Fail points (DESIGN §5): the named places where the outside world can fail.
 *
 * Each name is stable, unique and listed here once; scenario files refer to
 * them. In the noodle_fiu build every point is a libfiu check (enable it with
 * fiu_enable*() from <fiu-control.h>, or noodle_fail_point_enable below); in
 * the release build (noodle) they compile to nothing.
 *
 * failinfo: when the point is enabled with a non-NULL failinfo, its value
 * (cast from intptr_t) is the catalogue code the operation fails with;
 * otherwise the operation fails with the point's default code below.
 */
#ifndef NOODLE_FAILPOINT_H
#define NOODLE_FAILPOINT_H

#include <stdbool.h>
#include <stddef.h>

#include "noodle/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The operations of the backend interface that carry a fail point each, as
 * backend/<backend>/<op>, with the code they fail with by default. */
#define NOODLE_BACKEND_OP_MAP(X)                                                   \
    X(CONNECT, "connect", 4001)                                                    \
    X(VALIDATE, "validate", 4003)                                                  \
    X(EXECUTE, "execute", 4003)                                                    \
    X(BEGIN, "begin", 4003)                                                        \
    X(COMMIT, "commit", 4003)                                                      \
    X(ROLLBACK, "rollback", 4003)                                                  \
    X(SAVEPOINT, "savepoint", 4003)                                                \
    X(RELEASE, "release", 4003)                                                    \
    X(ROLLBACK_TO, "rollback_to", 4003)                                            \
    X(ROLE, "role", 4003)                                                          \
    X(METRICS, "metrics", 4003)                                                    \
    X(INTEGRITY, "integrity", 4003)

/* Backends that carry fail points. */
#define NOODLE_FAIL_POINT_BACKENDS(X) X(SQLITE, "sqlite") X(POSTGRES, "postgres") X(MOCK, "mock")

/* Fail points outside the backend operations:
 * X(ID, "name", default code, "what failing it simulates") */
#define NOODLE_FAIL_POINT_MAP(X)                                                          \
    X(POOL_THREAD_START, "pool/thread_start", 2006,                                       \
      "starting a pool thread (connection opener, housekeeper) fails")                    \
    X(CLUSTER_THREAD_START, "cluster/thread_start", 6088,                                 \
      "starting the cluster's prober thread fails")                                       \
    X(CLUSTER_ROLE_DETECT, "cluster/role_detect", 6089,                                   \
      "a role probe of a node fails (the node counts as down for that probe)")            \
    X(CLUSTER_BREAKER_OPEN, "cluster/breaker/open", 6082,                                 \
      "a breaker that should open stays closed (failures keep counting)")                 \
    X(CLUSTER_BREAKER_HALF_OPEN, "cluster/breaker/half_open", 6082,                       \
      "an open breaker whose backoff passed stays open for another backoff period")       \
    X(CLUSTER_BREAKER_CLOSE, "cluster/breaker/close", 6082,                               \
      "a half-open breaker's successful trial is counted as a failure: it opens again")

typedef struct noodle_fail_point_info {
    const char *name;        /* "backend/postgres/connect" */
    const char *description; /* what failing it simulates */
    int default_code;        /* the code an operation fails with when it fires */
} noodle_fail_point_info;

/* Every fail point: the backend operations grouped by backend (mock,
 * postgres, sqlite) in operation order, then NOODLE_FAIL_POINT_MAP; *count
 * receives the number. */
NOODLE_API const noodle_fail_point_info *noodle_fail_points(size_t *count);
/* The entry for name, or NULL. */
NOODLE_API const noodle_fail_point_info *noodle_fail_point_find(const char *name);
/* True in the noodle_fiu build. */
NOODLE_API bool noodle_fail_points_compiled_in(void);

#ifdef __cplusplus
}
#endif
#endif
