/* The list of fail points (see include/noodle/failpoint.h and
 * docs/fail-points.md). Backend operation points are generated from
 * NOODLE_BACKEND_OP_MAP x NOODLE_FAIL_POINT_BACKENDS, so a backend operation
 * cannot carry a point that is not listed. */
#include "noodle/failpoint.h"

#include <stdlib.h>
#include <string.h>

#include "failpoint_internal.h"

/* Backends in the order noodle__backend_fail_point indexes them, each with
 * its operations in NOODLE_BACKEND_OP_MAP order. */
static noodle_fail_point_info points[] = {
#define NOODLE_X_OP(OP, opname, code)                                                  \
    {"backend/" BACKEND_NAME "/" opname,                                                \
     "the " opname " call of the " BACKEND_NAME " backend fails (default: code " #code ")", code},
#define BACKEND_NAME "mock"
    NOODLE_BACKEND_OP_MAP(NOODLE_X_OP)
#undef BACKEND_NAME
#define BACKEND_NAME "postgres"
    NOODLE_BACKEND_OP_MAP(NOODLE_X_OP)
#undef BACKEND_NAME
#define BACKEND_NAME "sqlite"
    NOODLE_BACKEND_OP_MAP(NOODLE_X_OP)
#undef BACKEND_NAME
#undef NOODLE_X_OP
#define NOODLE_X_POINT(ID, name, code, what) {name, what, code},
    NOODLE_FAIL_POINT_MAP(NOODLE_X_POINT)
#undef NOODLE_X_POINT
};

#define NPOINTS (sizeof points / sizeof points[0])

const noodle_fail_point_info *noodle_fail_points(size_t *count) {
    if (count) *count = NPOINTS;
    return points;
}

const noodle_fail_point_info *noodle_fail_point_find(const char *name) {
    if (name == NULL) return NULL;
    for (size_t i = 0; i < NPOINTS; i++)
        if (strcmp(points[i].name, name) == 0) return &points[i];
    return NULL;
}

bool noodle_fail_points_compiled_in(void) {
#ifdef FIU_ENABLE
    return true;
#else
    return false;
#endif
}

const char *noodle__backend_fail_point(const char *backend, noodle__backend_op op) {
    static const char *const backends[] = {"mock", "postgres", "sqlite"};
    for (size_t b = 0; b < sizeof backends / sizeof backends[0]; b++)
        if (strcmp(backends[b], backend) == 0)
            return points[b * NOODLE__BACKEND_OP_COUNT + (size_t)op].name;
    return NULL;
}

const noodle_fail_point_info *noodle__fail_point_info(noodle__fail_point id) {
    return &points[3 * NOODLE__BACKEND_OP_COUNT + (size_t)id];
}

#ifdef FIU_ENABLE
#include <fiu.h>
#include <pthread.h>
#include <stdint.h>

static pthread_once_t fiu_once = PTHREAD_ONCE_INIT;
static void fiu_start(void) { fiu_init(0); }

int noodle__fail_point_fired(const char *name, int default_code) {
    if (name == NULL) return 0;
    pthread_once(&fiu_once, fiu_start);
    if (!fiu_fail(name)) return 0;
    intptr_t info = (intptr_t)fiu_failinfo();
    return info > 0 ? (int)info : default_code;
}
#endif
