/* The keyed LRU table behind the backends' prepared-statement caches (see
 * stmt_lru.h). */
#include "backends/stmt_lru.h"

#include <stdlib.h>
#include <string.h>

uint64_t noodle__lru_hash(uint64_t h, const void *p, size_t len) {
    const uint64_t k = 0xff51afd7ed558ccdu;
    const unsigned char *b = p;
    uint64_t w;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, b + i, 8);
        h = (h ^ w) * k;
        h ^= h >> 32;
    }
    w = 0;
    if (len > i) memcpy(&w, b + i, len - i);
    h = (h ^ w) * k;
    return h ^ (h >> 29);
}

int noodle__lru_open(noodle__lru *l, size_t cap) {
    memset(l, 0, sizeof *l);
    if (cap == 0) return 0; /* off: buckets stays NULL */
    size_t n = 1;
    while (n < 2 * cap)
        n <<= 1;
    l->buckets = calloc(n, sizeof *l->buckets);
    if (l->buckets == NULL) return -1;
    l->nbuckets = n;
    l->cap = cap;
    return 0;
}

static void lru_unlink(noodle__lru *l, noodle__lru_node *e) {
    if (e->newer != NULL)
        e->newer->older = e->older;
    else
        l->newest = e->older;
    if (e->older != NULL)
        e->older->newer = e->newer;
    else
        l->oldest = e->newer;
}

static void lru_push(noodle__lru *l, noodle__lru_node *e) {
    e->newer = NULL;
    e->older = l->newest;
    if (l->newest != NULL)
        l->newest->newer = e;
    else
        l->oldest = e;
    l->newest = e;
}

noodle__lru_node *noodle__lru_find(noodle__lru *l, uint64_t hash, noodle__lru_match_fn match,
                                   const void *key) {
    for (noodle__lru_node *e = l->buckets[hash & (l->nbuckets - 1)]; e != NULL; e = e->chain) {
        if (e->hash != hash || !match(e, key)) continue;
        if (l->newest != e) {
            lru_unlink(l, e);
            lru_push(l, e);
        }
        return e;
    }
    return NULL;
}

void noodle__lru_remove(noodle__lru *l, noodle__lru_node *e) {
    noodle__lru_node **link = &l->buckets[e->hash & (l->nbuckets - 1)];
    while (*link != e)
        link = &(*link)->chain;
    *link = e->chain;
    lru_unlink(l, e);
    l->size--;
}

void noodle__lru_insert(noodle__lru *l, noodle__lru_node *e, noodle__lru_release_fn evict,
                        void *ctx) {
    if (l->size >= l->cap) {
        noodle__lru_node *old = l->oldest;
        noodle__lru_remove(l, old);
        evict(ctx, old);
    }
    noodle__lru_node **bucket = &l->buckets[e->hash & (l->nbuckets - 1)];
    e->chain = *bucket;
    *bucket = e;
    lru_push(l, e);
    l->size++;
}

void noodle__lru_clear(noodle__lru *l, noodle__lru_release_fn release, void *ctx) {
    while (l->oldest != NULL) {
        noodle__lru_node *old = l->oldest;
        noodle__lru_remove(l, old);
        release(ctx, old);
    }
}

void noodle__lru_close(noodle__lru *l, noodle__lru_release_fn release, void *ctx) {
    if (l->buckets != NULL) noodle__lru_clear(l, release, ctx);
    free(l->buckets);
    l->buckets = NULL;
}
