/* A keyed least-recently-used table shared by the backends' prepared-
 * statement caches (internal: noodle__ names, hidden in the shared library;
 * not installed, not part of the API).
 *
 * Intrusive: each entry embeds a noodle__lru_node and owns its key; the
 * table only threads nodes on their hash bucket's chain and on the LRU list
 * and never allocates or frees an entry. What an entry holds, how its key is
 * compared and what leaving the table means (finalize a statement, queue a
 * DEALLOCATE) stay with the backend, through the callbacks below.
 *
 * Invariants:
 *   - buckets is NULL exactly when the table is off (opened with cap 0);
 *     then it holds nothing and must not be searched or added to.
 *   - every node in the table is on exactly one bucket chain (hash &
 *     (nbuckets - 1)) and on the LRU list; size counts them, never above cap.
 *   - newest is the node last found or inserted, oldest the next to evict.
 */
#ifndef NOODLE_BACKENDS_STMT_LRU_H
#define NOODLE_BACKENDS_STMT_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct noodle__lru_node {
    struct noodle__lru_node *newer, *older; /* LRU list */
    struct noodle__lru_node *chain;         /* next in the bucket */
    uint64_t hash;                          /* of the entry's key */
} noodle__lru_node;

typedef struct noodle__lru {
    noodle__lru_node **buckets; /* nbuckets (a power of two) chains; NULL when off */
    size_t nbuckets;
    noodle__lru_node *newest, *oldest;
    size_t size, cap;
} noodle__lru;

/* True when the entry of node has the key the caller passed along. */
typedef bool (*noodle__lru_match_fn)(const noodle__lru_node *node, const void *key);
/* Called with a node already taken off the table (evicted or cleared): the
 * backend releases what the entry holds and frees it. */
typedef void (*noodle__lru_release_fn)(void *ctx, noodle__lru_node *node);

/* A hash of len bytes at p, eight at a time, continuing from h. */
uint64_t noodle__lru_hash(uint64_t h, const void *p, size_t len);

/* The seed to start a key's hash with: mixes in the key's length. */
#define NOODLE__LRU_SEED(len) (0x9e3779b97f4a7c15u ^ (uint64_t)(len))

/* Start an empty table for up to cap nodes (twice as many buckets, rounded up
 * to a power of two). cap 0: off, nothing allocated. Returns 0, or -1 when out
 * of memory (the table is then off). */
int noodle__lru_open(noodle__lru *l, size_t cap);

/* The node with hash whose entry match()es key, made the most recent; NULL
 * when the table does not hold it. */
noodle__lru_node *noodle__lru_find(noodle__lru *l, uint64_t hash, noodle__lru_match_fn match,
                                   const void *key);

/* Add node (its hash set, not in the table) as the most recent one. When the
 * table is full, its least recently used node is taken off first and handed
 * to evict(ctx, node). */
void noodle__lru_insert(noodle__lru *l, noodle__lru_node *node, noodle__lru_release_fn evict,
                        void *ctx);

/* Take node off the table (the caller then owns it). */
void noodle__lru_remove(noodle__lru *l, noodle__lru_node *node);

/* Take every node off, oldest first, handing each to release(ctx, node). */
void noodle__lru_clear(noodle__lru *l, noodle__lru_release_fn release, void *ctx);

/* Clear (as noodle__lru_clear) and free the buckets: the table is off. */
void noodle__lru_close(noodle__lru *l, noodle__lru_release_fn release, void *ctx);

#endif
