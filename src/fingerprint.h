/* Query fingerprints for the performance monitor (src/fingerprint.c).
 * Internal: not installed. */
#ifndef NOODLE_FINGERPRINT_H
#define NOODLE_FINGERPRINT_H

#include <stddef.h>
#include <stdint.h>

/* noodle_monitor_fingerprint, also giving the 64-bit FNV-1a hash of the
 * whole normalised text (not only what fits in buf) in *hash. */
size_t noodle__fingerprint(const char *sql, size_t len, char *buf, size_t cap, uint64_t *hash);

#endif
