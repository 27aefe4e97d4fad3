/* The connection wrapper's state, shared with the pool so that its hot path
 * can read it without a call (see src/backend.c for the invariants). */
#ifndef NOODLE_CONN_INTERNAL_H
#define NOODLE_CONN_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "failpoint_internal.h"
#include "noodle/backend.h"

struct noodle_conn {
    const noodle_backend_ops *ops;
    void *handle;
    const noodle_clock *clock;
    char *endpoint; /* masked */
    uint64_t generation;
    int64_t created_at, last_used_at, last_validated_at;
    noodle_conn_state state;
    bool in_txn;      /* see noodle_conn_in_transaction */
    void *owner_data; /* the pool's slot */
    noodle_conn_error_hook error_hook; /* see noodle_conn_set_error_hook */
    void *error_hook_arg;
    char broken_by[160]; /* "[NOODLE-4003] ..." of the error that broke it */
#ifdef FIU_ENABLE
    const char *fail_points[NOODLE__BACKEND_OP_COUNT];
#endif
};

/* Inline forms of noodle_conn_get_state / _in_transaction / _owner_data. */
static inline bool noodle__conn_ok(const noodle_conn *c) { return c->state == NOODLE_CONN_OK; }
static inline bool noodle__conn_in_txn(const noodle_conn *c) {
    return c->in_txn && c->state == NOODLE_CONN_OK;
}
static inline void *noodle__conn_owner(const noodle_conn *c) { return c->owner_data; }

#endif
