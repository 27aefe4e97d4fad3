/* Query fingerprints: SQL text normalised so that calls differing only in
 * their values share one set of statistics (like pg_stat_statements).
 *
 * A lexer splits the text into tokens; an emitter writes them back with one
 * spacing rule, folding as it goes. Lookahead is a copy of the lexer (its
 * whole state is a position and the previous token's type), so nothing is
 * allocated whatever the text's length.
 *
 * Invariants
 *  1. The result depends only on the token sequence: whitespace, comments
 *     and the case of unquoted words never change it.
 *  2. Every literal (number, string, dollar-quoted, bit/hex string) and
 *     every placeholder ($n, ?, ?n, :name, @name) becomes "?"; a sign
 *     directly before a number where an operand is expected belongs to it.
 *  3. IN followed by a parenthesised list of only ? becomes IN (?); VALUES
 *     keeps its first parenthesised row and drops the following ones.
 *  4. Quoted identifiers are kept verbatim (their case is significant).
 *  5. The hash covers the whole normalised text, even past cap.
 */
#include "fingerprint.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "noodle/monitor.h"

typedef enum tok_type {
    T_END = 0,
    T_WORD,     /* unquoted identifier or function name (lower-cased) */
    T_KEYWORD,  /* SQL keyword (upper-cased) */
    T_QIDENT,   /* "quoted" or `quoted` identifier (verbatim) */
    T_PARAM,    /* literal or placeholder: "?" */
    T_LPAREN,
    T_RPAREN,
    T_COMMA,
    T_DOT,
    T_SEMI,
    T_CAST,     /* :: */
    T_OP,       /* any other operator */
} tok_type;

typedef struct token {
    tok_type type;
    size_t start, len;
} token;

typedef struct lexer {
    const char *s;
    size_t pos, len;
    tok_type prev;
} lexer;

/* Sorted (C locale) for bsearch. */
static const char *const keywords[] = {
    "ALL", "ALTER", "ANALYZE", "AND", "AS", "ASC", "BEGIN", "BETWEEN", "BY", "CASE", "CAST",
    "COMMIT", "CONFLICT", "CREATE", "CROSS", "DEFAULT", "DELETE", "DESC", "DISTINCT", "DO", "DROP",
    "ELSE", "END", "EXCEPT", "EXISTS", "EXPLAIN", "FALSE", "FOR", "FOREIGN", "FROM", "FULL",
    "GROUP", "HAVING", "IF", "ILIKE", "IN", "INDEX", "INNER", "INSERT", "INTERSECT", "INTO", "IS",
    "ISOLATION", "JOIN", "KEY", "LEFT", "LEVEL", "LIKE", "LIMIT", "LOCKED", "NOT", "NOTHING",
    "NOWAIT", "NULL", "OFFSET", "ON", "ONLY", "OR", "ORDER", "OUTER", "PRAGMA", "PRIMARY", "READ",
    "REFERENCES", "RELEASE", "REPLACE", "RETURNING", "RIGHT", "ROLLBACK", "SAVEPOINT", "SELECT",
    "SET", "SHARE", "SKIP", "TABLE", "THEN", "TO", "TRANSACTION", "TRUE", "UNION", "UNIQUE",
    "UPDATE", "USING", "VALUES", "WHEN", "WHERE", "WITH", "WRITE",
};

static bool is_keyword(const char *w, size_t n) {
    if (n > 15) return false;
    char up[16];
    for (size_t i = 0; i < n; i++) up[i] = (char)toupper((unsigned char)w[i]);
    up[n] = '\0';
    size_t lo = 0, hi = sizeof keywords / sizeof keywords[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(up, keywords[mid]);
        if (c == 0) return true;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return false;
}

static bool word_is(const lexer *lx, const token *t, const char *kw) {
    return t->type == T_KEYWORD && t->len == strlen(kw) &&
           strncasecmp(lx->s + t->start, kw, t->len) == 0;
}

/* ---- lexer ------------------------------------------------------------------------------------ */

static bool is_word_char(char c) {
    return isalnum((unsigned char)c) || c == '_' || c == '$' || (unsigned char)c >= 0x80;
}

static char at(const lexer *lx, size_t i) { return i < lx->len ? lx->s[i] : '\0'; }

/* Skip whitespace and comments (-- to end of line, nested slash-star). */
static void skip_space(lexer *lx) {
    while (lx->pos < lx->len) {
        char c = lx->s[lx->pos];
        if (isspace((unsigned char)c)) {
            lx->pos++;
        } else if (c == '-' && at(lx, lx->pos + 1) == '-') {
            while (lx->pos < lx->len && lx->s[lx->pos] != '\n') lx->pos++;
        } else if (c == '/' && at(lx, lx->pos + 1) == '*') {
            int depth = 0;
            do {
                if (at(lx, lx->pos) == '/' && at(lx, lx->pos + 1) == '*') depth++, lx->pos += 2;
                else if (at(lx, lx->pos) == '*' && at(lx, lx->pos + 1) == '/') depth--, lx->pos += 2;
                else lx->pos++;
            } while (depth > 0 && lx->pos < lx->len);
        } else {
            return;
        }
    }
}

/* From the opening quote at pos: past the closing one (doubled quotes are
 * escapes; backslash escapes too when backslash is set). */
static size_t skip_quoted(const lexer *lx, size_t pos, char q, bool backslash) {
    pos++;
    while (pos < lx->len) {
        char c = lx->s[pos];
        if (backslash && c == '\\') pos += 2;
        else if (c == q && at(lx, pos + 1) == q) pos += 2;
        else if (c == q) return pos + 1;
        else pos++;
    }
    return lx->len;
}

/* $tag$ ... $tag$ from pos; 0 when pos does not open a dollar quote. */
static size_t skip_dollar_quote(const lexer *lx, size_t pos) {
    size_t t = pos + 1;
    while (t < lx->len && (isalnum((unsigned char)lx->s[t]) || lx->s[t] == '_')) t++;
    if (at(lx, t) != '$' || isdigit((unsigned char)at(lx, pos + 1))) return 0;
    size_t taglen = t + 1 - pos;
    for (size_t i = t + 1; i + taglen <= lx->len; i++)
        if (memcmp(lx->s + i, lx->s + pos, taglen) == 0) return i + taglen;
    return lx->len;
}

static size_t skip_number(const lexer *lx, size_t p) {
    if (at(lx, p) == '0' && (at(lx, p + 1) == 'x' || at(lx, p + 1) == 'X')) {
        p += 2;
        while (isxdigit((unsigned char)at(lx, p))) p++;
        return p;
    }
    while (isdigit((unsigned char)at(lx, p)) || at(lx, p) == '.' || at(lx, p) == '_') p++;
    if (at(lx, p) == 'e' || at(lx, p) == 'E') {
        size_t q = p + 1;
        if (at(lx, q) == '+' || at(lx, q) == '-') q++;
        if (isdigit((unsigned char)at(lx, q))) {
            p = q;
            while (isdigit((unsigned char)at(lx, p))) p++;
        }
    }
    return p;
}

/* An operand ends here: a following sign is an operator, not part of a number. */
static bool after_operand(tok_type t) {
    return t == T_WORD || t == T_QIDENT || t == T_PARAM || t == T_RPAREN;
}

static const char *const two_char_ops[] = {"<=", ">=", "<>", "!=", "||", "->", "=>", "<<", ">>",
                                           "~~", "@>", "<@", "&&"};

static size_t op_len(const lexer *lx, size_t p) {
    if (at(lx, p) == '-' && at(lx, p + 1) == '>' && at(lx, p + 2) == '>') return 3;
    for (size_t i = 0; i < sizeof two_char_ops / sizeof two_char_ops[0]; i++)
        if (at(lx, p) == two_char_ops[i][0] && at(lx, p + 1) == two_char_ops[i][1]) return 2;
    return 1;
}

/* A literal or placeholder starting at p: its end, or 0. */
static size_t param_end(const lexer *lx, size_t p) {
    char c = at(lx, p), n = at(lx, p + 1);
    if (c == '\'') return skip_quoted(lx, p, '\'', false);
    if (strchr("eExXbBnN", c) != NULL && c != '\0' && n == '\'')
        return skip_quoted(lx, p + 1, '\'', c == 'e' || c == 'E');
    if (isdigit((unsigned char)c) || (c == '.' && isdigit((unsigned char)n))) return skip_number(lx, p);
    if ((c == '-' || c == '+') && !after_operand(lx->prev) &&
        (isdigit((unsigned char)n) || (n == '.' && isdigit((unsigned char)at(lx, p + 2)))))
        return skip_number(lx, p + 1);
    if (c == '$' && isdigit((unsigned char)n)) {
        p++;
        while (isdigit((unsigned char)at(lx, p))) p++;
        return p;
    }
    if (c == '$') return skip_dollar_quote(lx, p);
    if (c == '?') {
        p++;
        while (isdigit((unsigned char)at(lx, p))) p++;
        return p;
    }
    if ((c == ':' || c == '@') && (isalpha((unsigned char)n) || n == '_') && lx->prev != T_CAST) {
        p++;
        while (p < lx->len && is_word_char(lx->s[p])) p++;
        return p;
    }
    return 0;
}

static tok_type punct_type(char c) {
    switch (c) {
    case '(': return T_LPAREN;
    case ')': return T_RPAREN;
    case ',': return T_COMMA;
    case '.': return T_DOT;
    case ';': return T_SEMI;
    default: return T_OP;
    }
}

static void lex_next(lexer *lx, token *t) {
    skip_space(lx);
    size_t p = lx->pos, end;
    t->start = p;
    if (p >= lx->len) {
        t->type = T_END;
        t->len = 0;
        return;
    }
    char c = lx->s[p];
    if ((end = param_end(lx, p)) != 0) {
        t->type = T_PARAM;
    } else if (c == '"' || c == '`') {
        end = skip_quoted(lx, p, c, false);
        t->type = T_QIDENT;
    } else if (is_word_char(c)) {
        end = p;
        while (end < lx->len && is_word_char(lx->s[end])) end++;
        t->type = is_keyword(lx->s + p, end - p) ? T_KEYWORD : T_WORD;
    } else if (c == ':' && at(lx, p + 1) == ':') {
        end = p + 2;
        t->type = T_CAST;
    } else {
        t->type = punct_type(c);
        end = p + (t->type == T_OP ? op_len(lx, p) : 1);
    }
    t->len = end - p;
    lx->pos = end;
    lx->prev = t->type;
}

/* ---- emitter ---------------------------------------------------------------------------------- */

typedef struct sink {
    char *buf;
    size_t cap, n;
    uint64_t hash;
} sink;

enum { FOLD_NONE, FOLD_UPPER, FOLD_LOWER };

static void put(sink *k, const char *s, size_t n, int fold) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (fold == FOLD_UPPER) c = (unsigned char)toupper(c);
        else if (fold == FOLD_LOWER) c = (unsigned char)tolower(c);
        k->hash = (k->hash ^ c) * 0x100000001b3ULL;
        if (k->n + 1 < k->cap) k->buf[k->n] = (char)c;
        k->n++;
    }
}

static bool space_between(tok_type prev, tok_type cur) {
    if (prev == T_END) return false;
    if (cur == T_COMMA || cur == T_RPAREN || cur == T_DOT || cur == T_SEMI || cur == T_CAST)
        return false;
    if (prev == T_LPAREN || prev == T_DOT || prev == T_CAST) return false;
    if (cur == T_LPAREN && (prev == T_WORD || prev == T_QIDENT)) return false;
    return true;
}

static void emit(sink *k, const lexer *lx, const token *t, tok_type *prev) {
    if (space_between(*prev, t->type)) put(k, " ", 1, FOLD_NONE);
    switch (t->type) {
    case T_PARAM: put(k, "?", 1, FOLD_NONE); break;
    case T_KEYWORD: put(k, lx->s + t->start, t->len, FOLD_UPPER); break;
    case T_WORD: put(k, lx->s + t->start, t->len, FOLD_LOWER); break;
    default: put(k, lx->s + t->start, t->len, FOLD_NONE); break;
    }
    *prev = t->type;
}

/* After IN: "( ? [, ?]* )" ahead? Then *lx moves past it. */
static bool take_param_list(lexer *lx) {
    lexer la = *lx;
    token t;
    lex_next(&la, &t);
    if (t.type != T_LPAREN) return false;
    lex_next(&la, &t);
    if (t.type != T_PARAM) return false;
    for (;;) {
        lex_next(&la, &t);
        if (t.type == T_RPAREN) break;
        if (t.type != T_COMMA) return false;
        lex_next(&la, &t);
        if (t.type != T_PARAM) return false;
    }
    *lx = la;
    return true;
}

/* Past a balanced parenthesised group whose "(" was just read. */
static void skip_group(lexer *lx) {
    int depth = 1;
    token t;
    while (depth > 0) {
        lex_next(lx, &t);
        if (t.type == T_END) return;
        if (t.type == T_LPAREN) depth++;
        if (t.type == T_RPAREN) depth--;
    }
}

/* After the first row of VALUES: drop every following ", ( ... )". */
static void skip_more_rows(lexer *lx) {
    for (;;) {
        lexer la = *lx;
        token t;
        lex_next(&la, &t);
        if (t.type != T_COMMA) return;
        lex_next(&la, &t);
        if (t.type != T_LPAREN) return;
        skip_group(&la);
        *lx = la;
    }
}

size_t noodle__fingerprint(const char *sql, size_t len, char *buf, size_t cap, uint64_t *hash) {
    sink k = {.buf = buf, .cap = cap, .hash = 0xcbf29ce484222325ULL};
    lexer lx = {.s = sql ? sql : "", .len = sql ? len : 0, .prev = T_END};
    tok_type prev = T_END;
    int depth = 0, values_row_depth = -1; /* depth inside VALUES' first row */
    bool after_values = false;
    token t;
    for (lex_next(&lx, &t); t.type != T_END; lex_next(&lx, &t)) {
        if (t.type == T_LPAREN && after_values) values_row_depth = depth;
        after_values = word_is(&lx, &t, "VALUES");
        if (t.type == T_LPAREN) depth++;
        if (t.type == T_RPAREN && depth > 0) depth--;
        emit(&k, &lx, &t, &prev);
        if (word_is(&lx, &t, "IN") && take_param_list(&lx)) {
            static const token open = {T_LPAREN, 0, 1}, q = {T_PARAM, 0, 1}, close = {T_RPAREN, 1, 1};
            static const lexer parens = {.s = "()", .len = 2};
            emit(&k, &parens, &open, &prev);
            emit(&k, &parens, &q, &prev);
            emit(&k, &parens, &close, &prev);
        }
        if (t.type == T_RPAREN && depth == values_row_depth) {
            values_row_depth = -1;
            skip_more_rows(&lx);
        }
    }
    if (cap > 0) buf[k.n < cap ? k.n : cap - 1] = '\0';
    if (hash) *hash = k.hash;
    return k.n;
}

size_t noodle_monitor_fingerprint(const char *sql, size_t len, char *buf, size_t cap) {
    return noodle__fingerprint(sql, len, buf, cap, NULL);
}
