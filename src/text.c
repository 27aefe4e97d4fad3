/* The renderers' growable text buffer (see text.h). */
#include "text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void noodle__text_put(noodle__text *t, const char *s, size_t n) {
    if (t->failed) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 1024;
        while (cap < t->len + n + 1) cap *= 2;
        char *p = realloc(t->p, cap);
        if (p == NULL) {
            t->failed = true;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

void noodle__text_printf(noodle__text *t, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        t->failed = true;
    } else if ((size_t)n < sizeof tmp) {
        noodle__text_put(t, tmp, (size_t)n);
    } else {
        char *big = malloc((size_t)n + 1);
        if (big == NULL) {
            t->failed = true;
            return;
        }
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        noodle__text_put(t, big, (size_t)n);
        free(big);
    }
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    size_t need = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3
                                  : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (need == 0 || need > n || (need == 2 && s[0] < 0xC2)) return 0;
    for (size_t i = 1; i < need; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return need;
}

void noodle__text_json(noodle__text *t, const char *s, size_t n) {
    noodle__text_put(t, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t u = utf8_len((const unsigned char *)s + i, n - i);
        if (c == '"' || c == '\\') noodle__text_printf(t, "\\%c", c);
        else if (c == '\n') noodle__text_put(t, "\\n", 2);
        else if (c == '\t') noodle__text_put(t, "\\t", 2);
        else if (c < 0x20 || c == 0x7f) noodle__text_printf(t, "\\u%04x", c);
        else if (u == 0) noodle__text_put(t, "\\ufffd", 6);
        else noodle__text_put(t, s + i, u);
        i += u ? u : 1;
    }
    noodle__text_put(t, "\"", 1);
}

int noodle__text_finish(noodle__text *t, char **out, size_t *len, int code, const char *what,
                        noodle_error *err) {
    if (t->failed || t->p == NULL) {
        free(t->p);
        *t = (noodle__text){0};
        return NOODLE_ERR(err, code, "no memory for %s", what);
    }
    *out = t->p;
    if (len != NULL) *len = t->len;
    return 0;
}
