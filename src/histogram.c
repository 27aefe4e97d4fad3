/* Log-linear histograms (see include/noodle/pool.h). */
#include <stdint.h>

#include "internal.h"
#include "noodle/pool.h"

uint64_t noodle_histogram_bucket_floor(size_t i) {
    if (i < 4) return i;
    if (i >= NOODLE_HISTOGRAM_BUCKETS) i = NOODLE_HISTOGRAM_BUCKETS - 1;
    unsigned p = (unsigned)((i - 4) / 4 + 2); /* the power of two */
    uint64_t sub = (i - 4) % 4;
    return ((uint64_t)1 << p) + sub * ((uint64_t)1 << (p - 2));
}

size_t noodle_histogram_bucket_of(uint64_t us) { return noodle__bucket_of(us); }

uint64_t noodle_histogram_quantile(const noodle_histogram *h, double q) {
    if (h == NULL || h->count == 0) return 0;
    if (q < 0) q = 0;
    if (q > 1) q = 1;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999999);
    if (rank == 0) rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < NOODLE_HISTOGRAM_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t upper = i + 1 < NOODLE_HISTOGRAM_BUCKETS ? noodle_histogram_bucket_floor(i + 1) - 1
                                                              : h->max_us;
            return upper < h->max_us ? upper : h->max_us;
        }
    }
    return h->max_us;
}
