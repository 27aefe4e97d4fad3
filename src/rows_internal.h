/* The layout of a result (noodle_rows), shared by src/rows.c, which builds
 * and reads it, and the db, which reads its row count on every observed
 * statement (inline: a call there costs more than the read). Internal. */
#ifndef NOODLE_ROWS_INTERNAL_H
#define NOODLE_ROWS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "noodle/backend.h"

typedef struct rows_chunk {
    struct rows_chunk *next;
    size_t used, cap;
    unsigned char data[];
} rows_chunk;

#define ROWS_INLINE_ROWS 1  /* rows of cells in the result's own block */
#define ROWS_INLINE_BYTES 256 /* bytes of its first chunk */

struct noodle_rows {
    size_t ncols;
    const char **names; /* in the byte chunks */
    noodle_value *cells; /* nrows * ncols, row-major */
    size_t nrows, cap_rows;
    int64_t affected;
    rows_chunk *bytes;
    noodle_value *inline_cells; /* in this block: not freed on their own */
    rows_chunk *inline_chunk;        /* in this block: not freed on its own */
};

/* What a statement's result reports: the rows it returned, or for a
 * statement without columns the rows it changed. */
static inline int64_t noodle__rows_reported(const noodle_rows *r) {
    return r->ncols > 0 ? (int64_t)r->nrows : r->affected;
}

#endif
