/* libnoodle: the NoodleCore database stack. Umbrella header. */
#ifndef NOODLE_NOODLE_H
#define NOODLE_NOODLE_H

#include "noodle/backend.h"
#include "noodle/clock.h"
#include "noodle/cluster.h"
#include "noodle/config.h"
#include "noodle/db.h"
#include "noodle/error.h"
#include "noodle/export.h"
#include "noodle/failpoint.h"
#include "noodle/monitor.h"
#include "noodle/health.h"
#include "noodle/pool.h"
#include "noodle/txn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "0.1.0" */
NOODLE_API const char *noodle_version(void);
/* The versions of the client libraries in use, e.g. "SQLite 3.40.1, libpq
 * 15.18" (static string). */
NOODLE_API const char *noodle_dependency_versions(void);

#ifdef __cplusplus
}
#endif
#endif
