#include "counting_backend.h"

#include <stdatomic.h>

static const noodle_backend_ops *real_ops;
static noodle_backend_ops counting_ops;
static atomic_long live_conns, peak_conns, connects_ok, closes;

static void note_peak(long n) {
    long p = atomic_load(&peak_conns);
    while (n > p && !atomic_compare_exchange_weak(&peak_conns, &p, n)) {
    }
}

/* A connection counts from the start of its connect until close returns. */
static int counting_connect(const noodle_connect_params *p, void **handle, noodle_error *err) {
    note_peak(atomic_fetch_add(&live_conns, 1) + 1);
    int rc = real_ops->connect(p, handle, err);
    if (rc != 0)
        atomic_fetch_sub(&live_conns, 1);
    else
        atomic_fetch_add(&connects_ok, 1);
    return rc;
}

static void counting_close(void *handle) {
    real_ops->close(handle);
    atomic_fetch_sub(&live_conns, 1);
    atomic_fetch_add(&closes, 1);
}

const noodle_backend_ops *noodle_counting_backend(const noodle_backend_ops *real) {
    real_ops = real;
    counting_ops = *real;
    counting_ops.connect = counting_connect;
    counting_ops.close = counting_close;
    atomic_store(&live_conns, 0);
    atomic_store(&peak_conns, 0);
    atomic_store(&connects_ok, 0);
    atomic_store(&closes, 0);
    return &counting_ops;
}

noodle_counting_stats noodle_counting_get(void) {
    return (noodle_counting_stats){atomic_load(&live_conns), atomic_load(&peak_conns),
                                   atomic_load(&connects_ok), atomic_load(&closes)};
}
