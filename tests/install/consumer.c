/* Opens an in-memory SQLite database through the installed library. */
#include <stdio.h>

#include <noodle/noodle.h>

int main(void) {
    noodle_connect_params p = {.url = ":memory:", .deadline = NOODLE_NO_DEADLINE};
    noodle_conn *c = NULL;
    noodle_error err;
    if (noodle_conn_open(noodle_backend_sqlite(), &p, &c, &err) != 0) {
        char text[512];
        noodle_error_format(&err, text, sizeof text);
        fprintf(stderr, "%s\n", text);
        return 1;
    }
    noodle_rows *r = NULL;
    int rc = noodle_conn_execute(c, "SELECT 41 + 1", NULL, 0, NOODLE_NO_DEADLINE, &r, &err);
    long long v = rc == 0 ? (long long)noodle_rows_get(r, 0, 0)->v.i : -1;
    noodle_rows_free(r);
    noodle_conn_close(c);
    printf("noodle %s: %lld\n", noodle_version(), v);
    return v == 42 ? 0 : 1;
}
