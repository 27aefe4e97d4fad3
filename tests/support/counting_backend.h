/* A backend that wraps another and counts its connections: the client-side
 * view of STD-POOL-MAX, set beside the server's own count. One per process. */
#ifndef NOODLE_TEST_COUNTING_BACKEND_H
#define NOODLE_TEST_COUNTING_BACKEND_H

#include "noodle/backend.h"

/* Wrap real (its connect and close are counted) and reset the counters. */
const noodle_backend_ops *noodle_counting_backend(const noodle_backend_ops *real);

typedef struct noodle_counting_stats {
    long live;     /* connections open (or connecting) now */
    long peak;     /* most at once since the wrap */
    long connects; /* successful connects */
    long closes;
} noodle_counting_stats;

noodle_counting_stats noodle_counting_get(void);

#endif
