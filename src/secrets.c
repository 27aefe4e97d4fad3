/* Secrets in connection strings: the one place that finds them.
 *
 * A connection string reaches users in many ways -- endpoints, configuration
 * listings, error messages (libpq quotes whole URIs in its parse errors) --
 * and a password must never be among them. Every path goes through here:
 *
 *   noodle_mask_secrets(url)            url with its secrets masked
 *   noodle__scrub_secrets(text, url)    any text with url's secrets masked
 *
 * Secrets are found two ways, and both are masked:
 *  1. By reading the text with libpq's own rules, generously, so that it works
 *     on strings libpq would reject: values of any keyword ending in
 *     "password" (password, sslpassword, ...), quoted with backslash escapes
 *     or unquoted with backslash-escaped spaces; the password of a URI's
 *     userinfo (which ends at the first '@' or '/', so '?' and '#' may be
 *     inside it -- and, generously, at the last '@' before the path too); and
 *     URI query parameters whose percent-decoded name ends in "password".
 *  2. By asking libpq (PQconninfoParse) for the password values it would use,
 *     after decoding; every occurrence of those in the text is masked too.
 *
 * Occurrence masking (everything in 2, and the texts found in 1 when masking
 * text other than the URL itself) skips secrets shorter than 3 bytes: masking
 * every "a" would destroy the message while protecting nothing a guess would
 * not find.
 */
#include <ctype.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "noodle/backend.h"

enum { MAX_SECRETS = 16, MIN_SCRUB_LEN = 3 };

typedef struct span {
    const char *p; /* into the URL, or into a parsed value */
    size_t n;
} span;

typedef struct secrets {
    span at[MAX_SECRETS]; /* positions in the URL (way 1) */
    size_t nat;
    char *values[MAX_SECRETS]; /* libpq's parsed values (way 2), owned */
    size_t nvalues;
} secrets;

static void add_span(secrets *s, const char *p, size_t n) {
    if (n == 0 || s->nat == MAX_SECRETS) return;
    s->at[s->nat++] = (span){p, n};
}

static bool ends_with_password(const char *key, size_t n) {
    static const char word[] = "password";
    const size_t wl = sizeof word - 1;
    return n >= wl && strncasecmp(key + n - wl, word, wl) == 0;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decode key[0..n) into buf (size > 0); undecodable bytes are kept. */
static size_t decode_key(const char *key, size_t n, char *buf, size_t size) {
    size_t len = 0;
    for (size_t i = 0; i < n && len + 1 < size; i++) {
        if (key[i] == '%' && i + 2 < n && hex_value(key[i + 1]) >= 0 &&
            hex_value(key[i + 2]) >= 0) {
            buf[len++] = (char)(hex_value(key[i + 1]) * 16 + hex_value(key[i + 2]));
            i += 2;
        } else {
            buf[len++] = key[i];
        }
    }
    buf[len] = '\0';
    return len;
}

/* Way 1a: keyword=value pairs (not in URIs: their query is way 1b). */
static void find_keyword_values(const char *url, secrets *s) {
    for (const char *p = url; *p;) {
        if (!(isalnum((unsigned char)*p) || *p == '_')) {
            p++;
            continue;
        }
        const char *key = p;
        while (isalnum((unsigned char)*p) || *p == '_') p++;
        size_t keylen = (size_t)(p - key);
        const char *q = p;
        while (*q == ' ' || *q == '\t') q++;
        if (*q != '=' || !ends_with_password(key, keylen)) continue;
        q++;
        while (*q == ' ' || *q == '\t') q++;
        const char *start = q;
        if (*q == '\'') {
            start = ++q;
            while (*q && *q != '\'') q += (q[0] == '\\' && q[1]) ? 2 : 1;
            add_span(s, start, (size_t)(q - start));
            if (*q) q++;
        } else {
            while (*q && !isspace((unsigned char)*q)) q += (q[0] == '\\' && q[1]) ? 2 : 1;
            add_span(s, start, (size_t)(q - start));
        }
        p = q;
    }
}

/* Way 1b: URI userinfo and query parameters. */
static void find_uri_secrets(const char *url, secrets *s) {
    const char *scheme_end = strstr(url, "://");
    if (scheme_end == NULL) return;
    const char *auth = scheme_end + 3;
    /* libpq: the userinfo ends at the first '@', unless a '/' comes first */
    const char *first = auth + strcspn(auth, "@/");
    if (*first == '@') {
        const char *colon = memchr(auth, ':', (size_t)(first - auth));
        if (colon != NULL) add_span(s, colon + 1, (size_t)(first - colon - 1));
    }
    /* generously: a password holding an unencoded '@' runs to the last '@'
     * before the path */
    const char *path = auth + strcspn(auth, "/");
    const char *last = NULL;
    for (const char *q = auth; q < path; q++)
        if (*q == '@') last = q;
    if (last != NULL && last != first) {
        const char *colon = memchr(auth, ':', (size_t)(last - auth));
        if (colon != NULL) add_span(s, colon + 1, (size_t)(last - colon - 1));
    }
    /* the query starts at the first '?' after the userinfo */
    const char *hostpart = last != NULL ? last + 1 : (*first == '@' ? first + 1 : auth);
    const char *query = strchr(hostpart, '?');
    if (query == NULL) return;
    for (const char *p = query + 1; *p;) {
        const char *key = p;
        size_t keylen = strcspn(p, "=&#");
        p += keylen;
        if (*p != '=') {
            p += (*p == '&');
            if (*p == '#') break;
            continue;
        }
        const char *value = ++p;
        p += strcspn(p, "&#");
        char decoded[64];
        size_t dl = decode_key(key, keylen, decoded, sizeof decoded);
        if (ends_with_password(decoded, dl)) add_span(s, value, (size_t)(p - value));
        if (*p == '&') p++;
        else break;
    }
}

/* Way 2: what libpq itself would use as passwords. */
static void find_parsed_values(const char *url, secrets *s) {
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    if (opts == NULL) return;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || strlen(o->val) < MIN_SCRUB_LEN) continue;
        if (!ends_with_password(o->keyword, strlen(o->keyword))) continue;
        if (s->nvalues < MAX_SECRETS) s->values[s->nvalues] = strdup(o->val);
        if (s->values[s->nvalues] != NULL) s->nvalues++;
    }
    PQconninfoFree(opts);
}

static void find_secrets(const char *url, secrets *s) {
    memset(s, 0, sizeof *s);
    if (url == NULL) return;
    if (strstr(url, "://") == NULL) find_keyword_values(url, s);
    else find_uri_secrets(url, s);
    find_parsed_values(url, s);
}

static void free_secrets(secrets *s) {
    for (size_t i = 0; i < s->nvalues; i++) free(s->values[i]);
}

/* Output that may be too small, counting what it needs. */
typedef struct outbuf {
    char *buf;
    size_t size, len;
} outbuf;

static void out_put(outbuf *o, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++, o->len++)
        if (o->len + 1 < o->size) o->buf[o->len] = p[i];
}

static void out_end(outbuf *o) {
    if (o->size > 0) o->buf[o->len < o->size ? o->len : o->size - 1] = '\0';
}

/* Length of the longest secret that text starts with (0: none). Spans of the
 * URL count only when at least MIN_SCRUB_LEN long, like parsed values. */
static size_t secret_at(const secrets *s, const char *text) {
    size_t best = 0;
    for (size_t i = 0; i < s->nat; i++)
        if (s->at[i].n >= MIN_SCRUB_LEN && s->at[i].n > best &&
            strncmp(text, s->at[i].p, s->at[i].n) == 0)
            best = s->at[i].n;
    for (size_t i = 0; i < s->nvalues; i++) {
        size_t n = strlen(s->values[i]);
        if (n > best && strncmp(text, s->values[i], n) == 0) best = n;
    }
    return best;
}

/* Copy text, replacing every occurrence of a secret with "****". */
static void scrub(const secrets *s, const char *text, outbuf *o) {
    for (const char *p = text; *p;) {
        size_t n = secret_at(s, p);
        if (n > 0) {
            out_put(o, "****", 4);
            p += n;
        } else {
            out_put(o, p, 1);
            p++;
        }
    }
}

size_t noodle__scrub_secrets(const char *text, const char *url, char *buf, size_t size) {
    secrets s;
    find_secrets(url, &s);
    outbuf o = {buf, size, 0};
    scrub(&s, text ? text : "", &o);
    out_end(&o);
    free_secrets(&s);
    return o.len;
}

size_t noodle_mask_secrets(const char *url, char *buf, size_t size) {
    if (url == NULL) url = "";
    secrets s;
    find_secrets(url, &s);
    /* first the positions (any length), into a temporary copy ... */
    size_t len = strlen(url);
    char *masked = malloc(len * 2 + 5 * MAX_SECRETS + 1);
    outbuf o = {buf, size, 0};
    if (masked == NULL) { /* cannot mask safely: show nothing of it */
        out_put(&o, "(masked)", 8);
        out_end(&o);
        free_secrets(&s);
        return o.len;
    }
    size_t m = 0;
    for (const char *p = url; *p;) {
        const span *hit = NULL;
        for (size_t i = 0; i < s.nat; i++)
            if (s.at[i].p == p && (hit == NULL || s.at[i].n > hit->n)) hit = &s.at[i];
        if (hit != NULL) {
            memcpy(masked + m, "****", 4);
            m += 4;
            p += hit->n;
        } else {
            masked[m++] = *p++;
        }
    }
    masked[m] = '\0';
    /* ... then every remaining occurrence of a parsed value */
    secrets values_only = s;
    values_only.nat = 0;
    scrub(&values_only, masked, &o);
    out_end(&o);
    free(masked);
    free_secrets(&s);
    return o.len;
}
