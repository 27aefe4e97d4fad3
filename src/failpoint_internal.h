/* Fail point checks inside the library. In the noodle_fiu build (FIU_ENABLE)
 * NOODLE_FAIL_POINT(name, code) asks libfiu and yields the code to fail with
 * (0: do not fail); in the release build it is the constant 0 and the whole
 * branch compiles away. */
#ifndef NOODLE_FAILPOINT_INTERNAL_H
#define NOODLE_FAILPOINT_INTERNAL_H

#include "noodle/failpoint.h"

typedef enum noodle__backend_op {
#define NOODLE_X_OP(OP, opname, code) NOODLE__OP_##OP,
    NOODLE_BACKEND_OP_MAP(NOODLE_X_OP)
#undef NOODLE_X_OP
        NOODLE__BACKEND_OP_COUNT
} noodle__backend_op;

/* The listed point name of backend/<backend>/<op>, or NULL for a backend
 * that carries no fail points (e.g. a third-party one). */
const char *noodle__backend_fail_point(const char *backend, noodle__backend_op op);

typedef enum noodle__fail_point {
#define NOODLE_X_POINT(ID, name, code, what) NOODLE__FP_##ID,
    NOODLE_FAIL_POINT_MAP(NOODLE_X_POINT)
#undef NOODLE_X_POINT
} noodle__fail_point;

/* The entry of a point of NOODLE_FAIL_POINT_MAP. */
const noodle_fail_point_info *noodle__fail_point_info(noodle__fail_point id);

/* NOODLE_FAIL_AT(POOL_THREAD_START): the code to fail with, or 0. */
#define NOODLE_FAIL_AT(ID)                                                  \
    NOODLE_FAIL_POINT(noodle__fail_point_info(NOODLE__FP_##ID)->name,       \
                      noodle__fail_point_info(NOODLE__FP_##ID)->default_code)

#ifdef FIU_ENABLE
int noodle__fail_point_fired(const char *name, int default_code);
#define NOODLE_FAIL_POINT(name, code) noodle__fail_point_fired((name), (code))
#else
#define NOODLE_FAIL_POINT(name, code) ((void)(name), (void)(code), 0)
#endif

#endif
