/* Typed results (noodle_rows) and value constructors.
 *
 * A result owns its column names and the bytes of every TEXT / BLOB cell.
 * Names and cell bytes live in a chain of chunks that never move, so pointers handed out
 * by noodle_rows_get stay valid until noodle_rows_free; the cell array itself
 * may grow (realloc) while rows are appended, which is fine because cells are
 * only handed out after the result is complete.
 *
 * One allocation serves the common result: the struct, the column-name
 * array, room for ROWS_INLINE_ROWS rows of cells and a first byte chunk of
 * ROWS_INLINE_BYTES live in one block (a point select costs one malloc, not
 * four); more rows move the cells to an array of their own, more bytes add
 * chunks.
 *
 * TEXT cells are stored with a terminating NUL (not counted in len), so a
 * caller may use them as C strings when the text holds no NUL.
 *
 * Typed access (noodle_rows_int64 ... declared in noodle/db.h) is strict: a
 * cell is read only as the type it has; NULL is a type of its own. Every
 * refusal is NOODLE_E_QUERY_RESULT_ACCESS with the row, the column (index
 * and name) and both types in the message.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "rows_internal.h"
#include "noodle/backend.h"
#include "noodle/db.h"

static const noodle_value null_value = {.type = NOODLE_TYPE_NULL};

noodle_value noodle_null(void) { return null_value; }
noodle_value noodle_int64(int64_t i) { return (noodle_value){.type = NOODLE_TYPE_INT64, .v.i = i}; }
noodle_value noodle_double(double d) { return (noodle_value){.type = NOODLE_TYPE_DOUBLE, .v.d = d}; }
noodle_value noodle_text(const char *s) {
    return s == NULL ? null_value : noodle_text_n(s, strlen(s));
}
noodle_value noodle_text_n(const char *s, size_t len) {
    if (s == NULL) return null_value;
    return (noodle_value){.type = NOODLE_TYPE_TEXT, .v.bytes = {s, len}};
}
noodle_value noodle_blob(const void *p, size_t len) {
    if (p == NULL && len > 0) return null_value;
    return (noodle_value){.type = NOODLE_TYPE_BLOB, .v.bytes = {p ? p : "", len}};
}

const char *noodle_type_name(noodle_type t) {
    switch (t) {
    case NOODLE_TYPE_NULL: return "null";
    case NOODLE_TYPE_INT64: return "int64";
    case NOODLE_TYPE_DOUBLE: return "double";
    case NOODLE_TYPE_TEXT: return "text";
    case NOODLE_TYPE_BLOB: return "blob";
    }
    return "invalid";
}

/* Round n up to the alignment of anything stored after it in the block. */
static size_t aligned(size_t n) {
    size_t a = _Alignof(max_align_t);
    return (n + a - 1) / a * a;
}

int noodle_rows_new(size_t ncols, noodle_rows **out, noodle_error *err) {
    *out = NULL;
    if (ncols > (SIZE_MAX / 4) / (sizeof(const char *) + ROWS_INLINE_ROWS * sizeof(noodle_value)))
        goto fail;
    size_t names_at = aligned(sizeof(noodle_rows));
    size_t cells_at = aligned(names_at + ncols * sizeof(const char *));
    size_t chunk_at = aligned(cells_at + ROWS_INLINE_ROWS * ncols * sizeof(noodle_value));
    size_t size = chunk_at + sizeof(rows_chunk) + ROWS_INLINE_BYTES;
    unsigned char *block = malloc(size);
    if (block == NULL) goto fail;
    noodle_rows *r = (noodle_rows *)block;
    memset(r, 0, sizeof *r);
    r->ncols = ncols;
    r->names = (const char **)(block + names_at);
    for (size_t i = 0; i < ncols; i++) r->names[i] = NULL;
    r->cells = r->inline_cells = (noodle_value *)(block + cells_at);
    r->cap_rows = ROWS_INLINE_ROWS;
    r->bytes = r->inline_chunk = (rows_chunk *)(block + chunk_at);
    r->bytes->next = NULL;
    r->bytes->used = 0;
    r->bytes->cap = ROWS_INLINE_BYTES;
    *out = r;
    return 0;
fail:
    return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "out of memory allocating a result");
}

void noodle_rows_free(noodle_rows *r) {
    if (r == NULL) return;
    if (r->cells != r->inline_cells) free(r->cells);
    for (rows_chunk *c = r->bytes, *next; c != NULL; c = next) {
        next = c->next;
        if (c != r->inline_chunk) free(c);
    }
    free(r);
}

/* Copy len bytes plus a NUL into the result's byte chunks; NULL on OOM. */
static const void *copy_bytes(noodle_rows *r, const void *p, size_t len) {
    rows_chunk *c = r->bytes;
    if (c == NULL || c->cap - c->used < len + 1) {
        /* chunks start small (most results are a row or two) and double up
         * to 64 KiB; a larger value gets a chunk of its own */
        size_t step = c == NULL ? 256 : (c->cap < 65536 ? c->cap * 2 : 65536);
        size_t cap = len + 1 > step ? len + 1 : step;
        rows_chunk *n = malloc(sizeof *n + cap);
        if (n == NULL) return NULL;
        n->used = 0;
        n->cap = cap;
        /* keep the partly used chunk at the head when the new one is a
         * one-off for a large value, so small values keep filling it */
        if (c != NULL && cap > step) {
            n->next = c->next;
            c->next = n;
        } else {
            n->next = c;
            r->bytes = n;
        }
        c = n;
    }
    unsigned char *dst = c->data + c->used;
    if (len > 0) memcpy(dst, p, len);
    dst[len] = '\0';
    c->used += len + 1;
    return dst;
}

int noodle_rows_set_column_name(noodle_rows *r, size_t col, const char *name, noodle_error *err) {
    if (col >= r->ncols || name == NULL)
        return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                          "column %zu out of range (result has %zu columns)", col, r->ncols);
    const char *copy = copy_bytes(r, name, strlen(name));
    if (copy == NULL) return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "out of memory");
    r->names[col] = copy;
    return 0;
}

int noodle_rows_append(noodle_rows *r, const noodle_value *cells, noodle_error *err) {
    if (r->nrows == r->cap_rows) {
        size_t cap = r->cap_rows < 8 ? 16 : r->cap_rows * 2;
        if (r->ncols > 0 && cap > SIZE_MAX / sizeof(noodle_value) / r->ncols) goto oom;
        size_t width = r->ncols ? r->ncols : 1;
        noodle_value *n;
        if (r->cells == r->inline_cells) { /* leave the block: copy the inline rows out */
            n = malloc(cap * width * sizeof *n);
            if (n != NULL && r->nrows > 0) memcpy(n, r->cells, r->nrows * r->ncols * sizeof *n);
        } else {
            n = realloc(r->cells, cap * width * sizeof *n);
        }
        if (n == NULL) goto oom;
        r->cells = n;
        r->cap_rows = cap;
    }
    noodle_value *row = r->cells + r->nrows * r->ncols;
    for (size_t i = 0; i < r->ncols; i++) {
        row[i] = cells[i];
        if (cells[i].type == NOODLE_TYPE_TEXT || cells[i].type == NOODLE_TYPE_BLOB) {
            const void *p = copy_bytes(r, cells[i].v.bytes.ptr, cells[i].v.bytes.len);
            if (p == NULL) goto oom;
            row[i].v.bytes.ptr = p;
        } else if (cells[i].type > NOODLE_TYPE_BLOB) {
            return NOODLE_ERR(err, NOODLE_E_BACKEND_INVALID_ARGUMENT,
                              "cell %zu has invalid type %d", i, (int)cells[i].type);
        }
    }
    r->nrows++;
    return 0;
oom:
    return NOODLE_ERR(err, NOODLE_E_BACKEND_NO_MEMORY, "out of memory appending row %zu", r->nrows);
}

void noodle_rows_set_affected(noodle_rows *r, int64_t n) { r->affected = n; }

size_t noodle_rows_count(const noodle_rows *r) { return r ? r->nrows : 0; }
size_t noodle_rows_columns(const noodle_rows *r) { return r ? r->ncols : 0; }
int64_t noodle_rows_affected(const noodle_rows *r) { return r ? r->affected : 0; }

const char *noodle_rows_column_name(const noodle_rows *r, size_t col) {
    if (r == NULL || col >= r->ncols) return NULL;
    return r->names[col] ? r->names[col] : "";
}

long noodle_rows_column_index(const noodle_rows *r, const char *name) {
    if (r == NULL || name == NULL) return -1;
    for (size_t i = 0; i < r->ncols; i++)
        if (r->names[i] != NULL && strcmp(r->names[i], name) == 0) return (long)i;
    return -1;
}

const noodle_value *noodle_rows_get(const noodle_rows *r, size_t row, size_t col) {
    if (r == NULL || row >= r->nrows || col >= r->ncols) return &null_value;
    return &r->cells[row * r->ncols + col];
}

/* ---- typed access (noodle/db.h) --------------------------------------------------------- */

bool noodle_rows_is_null(const noodle_rows *r, size_t row, size_t col) {
    /* out of range is not NULL: the typed getter then reports the range */
    if (r == NULL || row >= r->nrows || col >= r->ncols) return false;
    return r->cells[row * r->ncols + col].type == NOODLE_TYPE_NULL;
}

/* The cell at (row, col) when it exists and has type want; else 5016 with
 * what was asked and what is there. */
static int typed_cell(const noodle_rows *r, size_t row, size_t col, noodle_type want,
                      const void *out, const noodle_value **cell, noodle_error *err) {
    *cell = NULL;
    if (r == NULL || out == NULL)
        return NOODLE_ERR(err, NOODLE_E_QUERY_RESULT_ACCESS, "%s access needs a result and an out "
                          "pointer", noodle_type_name(want));
    if (row >= r->nrows)
        return NOODLE_ERR(err, NOODLE_E_QUERY_RESULT_ACCESS,
                          "row %zu out of range (the result has %zu rows)", row, r->nrows);
    if (col >= r->ncols)
        return NOODLE_ERR(err, NOODLE_E_QUERY_RESULT_ACCESS,
                          "column %zu out of range (the result has %zu columns)", col, r->ncols);
    const noodle_value *v = &r->cells[row * r->ncols + col];
    if (v->type != want)
        return NOODLE_ERR(err, NOODLE_E_QUERY_RESULT_ACCESS,
                          "row %zu column %zu (\"%s\") is %s, not %s%s", row, col,
                          r->names[col] ? r->names[col] : "", noodle_type_name(v->type),
                          noodle_type_name(want),
                          v->type == NOODLE_TYPE_NULL ? " (check noodle_rows_is_null first)" : "");
    *cell = v;
    return 0;
}

int noodle_rows_int64(const noodle_rows *r, size_t row, size_t col, int64_t *out,
                      noodle_error *err) {
    const noodle_value *v;
    int rc = typed_cell(r, row, col, NOODLE_TYPE_INT64, out, &v, err);
    if (rc != 0) return rc;
    *out = v->v.i;
    return 0;
}

int noodle_rows_double(const noodle_rows *r, size_t row, size_t col, double *out,
                       noodle_error *err) {
    const noodle_value *v;
    int rc = typed_cell(r, row, col, NOODLE_TYPE_DOUBLE, out, &v, err);
    if (rc != 0) return rc;
    *out = v->v.d;
    return 0;
}

int noodle_rows_text(const noodle_rows *r, size_t row, size_t col, const char **s, size_t *len,
                     noodle_error *err) {
    const noodle_value *v;
    int rc = typed_cell(r, row, col, NOODLE_TYPE_TEXT, s, &v, err);
    if (rc != 0) return rc;
    *s = v->v.bytes.ptr; /* copy_bytes terminated it */
    if (len != NULL) *len = v->v.bytes.len;
    return 0;
}

int noodle_rows_blob(const noodle_rows *r, size_t row, size_t col, const void **p, size_t *len,
                     noodle_error *err) {
    const noodle_value *v;
    int rc = typed_cell(r, row, col, NOODLE_TYPE_BLOB, p, &v, err);
    if (rc != 0) return rc;
    *p = v->v.bytes.ptr;
    if (len != NULL) *len = v->v.bytes.len;
    return 0;
}

int noodle_rows_column(const noodle_rows *r, const char *name, size_t *col, noodle_error *err) {
    if (r == NULL || name == NULL || col == NULL)
        return NOODLE_ERR(err, NOODLE_E_QUERY_RESULT_ACCESS,
                          "column lookup needs a result, a name and an out pointer");
    long i = noodle_rows_column_index(r, name);
    if (i < 0)
        return NOODLE_ERR(err, NOODLE_E_QUERY_RESULT_ACCESS,
                          "no column named \"%.64s\" in the result (%zu columns)", name, r->ncols);
    *col = (size_t)i;
    return 0;
}
