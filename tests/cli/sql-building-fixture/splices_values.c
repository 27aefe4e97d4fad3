/* A fixture for the STD-PARAM source check: each function here builds SQL
 * the way src/ must never do. The check must flag all three. */
#include <stdio.h>

void by_destination(char *sql, size_t n, const char *name) { snprintf(sql, n, "%s", name); }

void by_keyword(char *buf, size_t n, long id) {
    snprintf(buf, n, "DELETE FROM accounts WHERE id = %ld", id);
}

void by_keyword_across_lines(char *buf, size_t n, const char *v) {
    snprintf(buf, n,
             "INSERT INTO t VALUES ('%s')", v);
}
