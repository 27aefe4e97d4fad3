/* A growable text buffer for the renderers (monitor exposition, health
 * reports). Internal, not installed. Appends after a failed allocation do
 * nothing; the failure is reported once, by noodle__text_finish. Not for
 * SQL: the db's builder deliberately has no formatting function. */
#ifndef NOODLE_TEXT_H
#define NOODLE_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "noodle/error.h"
#include "noodle/export.h"

typedef struct noodle__text {
    char *p;       /* NUL-terminated once anything was appended; NULL before */
    size_t len, cap;
    bool failed;   /* an allocation failed: the text is incomplete */
} noodle__text;

void noodle__text_put(noodle__text *t, const char *s, size_t n);
void noodle__text_printf(noodle__text *t, const char *fmt, ...) NOODLE_PRINTF(2, 3);
/* s[0..n) as a JSON string: quoted, escaped, and bytes that are not valid
 * UTF-8 replaced by U+FFFD, so that the output is always valid JSON. */
void noodle__text_json(noodle__text *t, const char *s, size_t n);
/* Hand the text to *out (the caller frees it) and *len (may be NULL), or
 * free it and fail with code ("no memory for <what>") when an allocation
 * failed. */
int noodle__text_finish(noodle__text *t, char **out, size_t *len, int code, const char *what,
                        noodle_error *err);

#endif
