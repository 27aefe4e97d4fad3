/* Internal helpers shared across libnoodle's source files (noodle__ names).
 * Not installed; not part of the API. */
#ifndef NOODLE_INTERNAL_H
#define NOODLE_INTERNAL_H

#include <stdint.h>

#include "noodle/backend.h"
#include "noodle/clock.h"
#include "noodle/error.h"

/* Milliseconds until deadline for poll(2): 0 when passed, -1 for no
 * deadline, else rounded up and capped at INT32_MAX. */
int noodle__poll_timeout_ms(const noodle_clock *c, int64_t deadline);

/* Copy at most size-1 bytes of src into dst and terminate (size > 0). */
void noodle__strlcpy(char *dst, const char *src, size_t size);

#endif
