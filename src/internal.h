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

/* Copy text into buf replacing every secret of url (passwords in keyword,
 * URI userinfo and query forms, and the values libpq parses out of url) with
 * "****"; returns the length needed, like snprintf. For messages that may
 * quote a connection string (libpq's parse errors do). See src/secrets.c. */
size_t noodle__scrub_secrets(const char *text, const char *url, char *buf, size_t size);

/* CLOCK_MONOTONIC_COARSE in ns, as the real clock's now_coarse, without the
 * indirection (the pool's fast path). */
int64_t noodle__coarse_now_real(void);

/* Copy at most size-1 bytes of src into dst and terminate (size > 0). */
void noodle__strlcpy(char *dst, const char *src, size_t size);

/* One xorshift64* step of the generator *state (seeded non-zero). */
uint64_t noodle__random_next(uint64_t *state);

/* Backoff after the n-th consecutive failure (n >= 1): base * 2^(n-1),
 * capped at max, jittered down by up to 50 % from *rng. */
int64_t noodle__backoff_delay(uint64_t *rng, int64_t base, int64_t max, int64_t n);

#endif
