/* Backend conformance self-check: a short run of the backend interface
 * through the public API, printing one line per check. */
#ifndef NOODLE_HARNESS_SELFCHECK_H
#define NOODLE_HARNESS_SELFCHECK_H

#include <stdio.h>

#include "noodle/backend.h"

typedef struct selfcheck_result {
    int passed, failed;
} selfcheck_result;

/* Run every check against url on ops; print to out. */
void selfcheck_run(const noodle_backend_ops *ops, const char *url, FILE *out,
                   selfcheck_result *result);

#endif
