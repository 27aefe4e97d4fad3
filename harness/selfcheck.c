/* The backend conformance self-check behind `noodle-harness selfcheck`.
 *
 * Each check is a function returning 0 (pass) or a catalogue code and an
 * error explaining what differed. Checks run in order on two connections to
 * the same database; a check that needs an earlier one's table creates it
 * itself, so a failure does not cascade into a wall of red.
 */
#include "selfcheck.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct ctx {
    const noodle_backend_ops *ops;
    const char *url;
    noodle_conn *a, *b; /* two connections to the same database */
} ctx;

#define DEADLINE() noodle_deadline_after(NULL, NOODLE_SEC(10))
#define TABLE "noodle_selfcheck"

/* Fail the check: record the error and return its code. */
#define CHECK_FAIL(err, ...) NOODLE_ERR((err), NOODLE_E_HARNESS_SELFCHECK_FAILED, __VA_ARGS__)

static int exec(noodle_conn *c, const char *sql, const noodle_value *p, size_t n, noodle_rows **out,
                noodle_error *err) {
    noodle_rows *r = NULL;
    int rc = noodle_conn_execute(c, sql, p, n, DEADLINE(), &r, err);
    if (out != NULL) *out = r;
    else noodle_rows_free(r);
    return rc;
}

/* A failing statement must fail with want; anything else fails the check. */
static int expect_code(noodle_conn *c, const char *sql, const noodle_value *p, size_t n, int want,
                       noodle_error *err) {
    noodle_error got;
    int rc = exec(c, sql, p, n, NULL, &got);
    if (rc == want) return 0;
    char text[600];
    noodle_error_format(&got, text, sizeof text);
    return CHECK_FAIL(err, "expected NOODLE-%04d for \"%s\", got %d: %s", want, sql, rc,
                      rc ? text : "success");
}

static int count_rows(noodle_conn *c, int64_t *n, noodle_error *err) {
    noodle_rows *r = NULL;
    int rc = exec(c, "SELECT count(*) FROM " TABLE, NULL, 0, &r, err);
    if (rc == 0) {
        const noodle_value *v = noodle_rows_get(r, 0, 0);
        if (v->type != NOODLE_TYPE_INT64) rc = CHECK_FAIL(err, "count(*) is not an int64");
        else *n = v->v.i;
    }
    noodle_rows_free(r);
    return rc;
}

static int reset_table(noodle_conn *c, noodle_error *err) {
    int rc = exec(c, "DROP TABLE IF EXISTS " TABLE, NULL, 0, NULL, err);
    if (rc == 0)
        rc = exec(c, "CREATE TABLE " TABLE " (id BIGINT PRIMARY KEY, i BIGINT, d DOUBLE PRECISION, "
                     "t TEXT, b BYTEA)",
                  NULL, 0, NULL, err);
    return rc;
}

static int check_connect(ctx *x, noodle_error *err) {
    noodle_connect_params p = {.url = x->url, .deadline = DEADLINE(), .application_name = "noodle-selfcheck"};
    int rc = noodle_conn_open(x->ops, &p, &x->a, err);
    if (rc == 0) rc = noodle_conn_open(x->ops, &p, &x->b, err);
    return rc;
}

static int check_validate(ctx *x, noodle_error *err) {
    return noodle_conn_validate(x->a, DEADLINE(), err);
}

static int check_role(ctx *x, noodle_error *err) {
    noodle_role role;
    int rc = noodle_conn_role(x->a, DEADLINE(), &role, err);
    if (rc == 0 && role != NOODLE_ROLE_PRIMARY)
        rc = CHECK_FAIL(err, "role is %s, expected primary", noodle_role_name(role));
    return rc;
}

static int check_types_round_trip(ctx *x, noodle_error *err) {
    static const unsigned char blob[] = {0, 1, 2, 0xff, 0, 'x'};
    const char *text = "it's \"quoted\" -- and UTF-8: caf\xc3\xa9 \xe2\x82\xac";
    const struct {
        noodle_value in[5];
    } rows[] = {
        {{noodle_int64(1), noodle_int64(INT64_MIN), noodle_double(-0.5), noodle_text(text),
          noodle_blob(blob, sizeof blob)}},
        {{noodle_int64(2), noodle_int64(INT64_MAX), noodle_double(1e300), noodle_text(""),
          noodle_blob(blob, 0)}},
        {{noodle_int64(3), noodle_null(), noodle_null(), noodle_null(), noodle_null()}},
    };
    int rc = reset_table(x->a, err);
    for (size_t i = 0; rc == 0 && i < 3; i++)
        rc = exec(x->a, "INSERT INTO " TABLE " (id, i, d, t, b) VALUES (?, ?, ?, ?, ?)", rows[i].in,
                  5, NULL, err);
    for (size_t i = 0; rc == 0 && i < 3; i++) {
        noodle_rows *r = NULL;
        rc = exec(x->a, "SELECT id, i, d, t, b FROM " TABLE " WHERE id = ?", rows[i].in, 1, &r, err);
        if (rc == 0 && noodle_rows_count(r) != 1)
            rc = CHECK_FAIL(err, "row %zu: expected 1 row, got %zu", i, noodle_rows_count(r));
        for (size_t col = 1; rc == 0 && col < 5; col++) {
            const noodle_value *want = &rows[i].in[col], *got = noodle_rows_get(r, 0, col);
            int same = want->type == got->type;
            if (same && want->type == NOODLE_TYPE_INT64) same = want->v.i == got->v.i;
            if (same && want->type == NOODLE_TYPE_DOUBLE) same = want->v.d == got->v.d;
            if (same && (want->type == NOODLE_TYPE_TEXT || want->type == NOODLE_TYPE_BLOB))
                same = want->v.bytes.len == got->v.bytes.len &&
                       memcmp(want->v.bytes.ptr, got->v.bytes.ptr, want->v.bytes.len) == 0;
            if (!same)
                rc = CHECK_FAIL(err, "row %zu column %s: sent %s, read back %s differing", i,
                                noodle_rows_column_name(r, col), noodle_type_name(want->type),
                                noodle_type_name(got->type));
        }
        noodle_rows_free(r);
    }
    return rc;
}

static int check_injection_is_data(ctx *x, noodle_error *err) {
    const char *payload = "x'); DROP TABLE " TABLE "; --";
    noodle_value p[2] = {noodle_int64(100), noodle_text(payload)};
    int rc = reset_table(x->a, err);
    if (rc == 0) rc = exec(x->a, "INSERT INTO " TABLE " (id, t) VALUES (?, ?)", p, 2, NULL, err);
    noodle_rows *r = NULL;
    if (rc == 0) rc = exec(x->a, "SELECT t FROM " TABLE " WHERE id = ?", p, 1, &r, err);
    if (rc == 0) {
        const noodle_value *v = noodle_rows_get(r, 0, 0);
        if (v->type != NOODLE_TYPE_TEXT || v->v.bytes.len != strlen(payload) ||
            memcmp(v->v.bytes.ptr, payload, v->v.bytes.len) != 0)
            rc = CHECK_FAIL(err, "the payload did not come back verbatim");
    }
    noodle_rows_free(r);
    return rc;
}

static int check_errors_are_coded(ctx *x, noodle_error *err) {
    noodle_value p[2] = {noodle_int64(7), noodle_text("dup")};
    int rc = reset_table(x->a, err);
    if (rc == 0) rc = expect_code(x->a, "SELEC nonsense", NULL, 0, NOODLE_E_QUERY_SYNTAX, err);
    if (rc == 0)
        rc = expect_code(x->a, "INSERT INTO " TABLE " (id, t) VALUES (?, ?)", p, 1,
                         NOODLE_E_QUERY_PARAM_COUNT, err);
    if (rc == 0) rc = exec(x->a, "INSERT INTO " TABLE " (id, t) VALUES (?, ?)", p, 2, NULL, err);
    if (rc == 0)
        rc = expect_code(x->a, "INSERT INTO " TABLE " (id, t) VALUES (?, ?)", p, 2,
                         NOODLE_E_QUERY_CONSTRAINT, err);
    return rc;
}

static int check_commit_and_rollback(ctx *x, noodle_error *err) {
    noodle_value p[1];
    int64_t n = -1;
    int rc = reset_table(x->a, err);
    if (rc == 0) rc = noodle_conn_begin(x->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), err);
    p[0] = noodle_int64(1);
    if (rc == 0) rc = exec(x->a, "INSERT INTO " TABLE " (id) VALUES (?)", p, 1, NULL, err);
    if (rc == 0) rc = noodle_conn_commit(x->a, DEADLINE(), err);
    if (rc == 0) rc = count_rows(x->b, &n, err);
    if (rc == 0 && n != 1) return CHECK_FAIL(err, "committed row not visible to another connection");
    if (rc == 0) rc = noodle_conn_begin(x->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), err);
    p[0] = noodle_int64(2);
    if (rc == 0) rc = exec(x->a, "INSERT INTO " TABLE " (id) VALUES (?)", p, 1, NULL, err);
    if (rc == 0) rc = noodle_conn_rollback(x->a, DEADLINE(), err);
    if (rc == 0) rc = count_rows(x->b, &n, err);
    if (rc == 0 && n != 1) return CHECK_FAIL(err, "rolled-back row is visible (%lld rows)", (long long)n);
    return rc;
}

static int check_savepoints(ctx *x, noodle_error *err) {
    noodle_value p[1];
    int64_t n = -1;
    int rc = reset_table(x->a, err);
    if (rc == 0) rc = noodle_conn_begin(x->a, NOODLE_ISOLATION_DEFAULT, DEADLINE(), err);
    p[0] = noodle_int64(1);
    if (rc == 0) rc = exec(x->a, "INSERT INTO " TABLE " (id) VALUES (?)", p, 1, NULL, err);
    if (rc == 0) rc = noodle_conn_savepoint(x->a, "inner_1", DEADLINE(), err);
    p[0] = noodle_int64(2);
    if (rc == 0) rc = exec(x->a, "INSERT INTO " TABLE " (id) VALUES (?)", p, 1, NULL, err);
    if (rc == 0) rc = noodle_conn_rollback_to(x->a, "inner_1", DEADLINE(), err);
    if (rc == 0) rc = noodle_conn_release(x->a, "inner_1", DEADLINE(), err);
    if (rc == 0) rc = noodle_conn_commit(x->a, DEADLINE(), err);
    if (rc == 0) rc = count_rows(x->b, &n, err);
    if (rc == 0 && n != 1)
        return CHECK_FAIL(err, "after rollback to the savepoint expected 1 row, found %lld",
                          (long long)n);
    return rc;
}

static int check_metrics(ctx *x, noodle_error *err) {
    noodle_server_metrics m;
    int rc = noodle_conn_metrics(x->a, DEADLINE(), &m, err);
    if (rc == 0 && m.server_version[0] == '\0') rc = CHECK_FAIL(err, "no server version reported");
    if (rc == 0 && m.database_size_bytes < 0 && strcmp(x->ops->name, "mock") != 0)
        rc = CHECK_FAIL(err, "database size unknown");
    return rc;
}

static int check_integrity(ctx *x, noodle_error *err) {
    noodle_integrity_result r;
    int rc = noodle_conn_integrity(x->a, NOODLE_INTEGRITY_QUICK, DEADLINE(), &r, err);
    if (rc == 0 && r.method[0] == '\0') rc = CHECK_FAIL(err, "the integrity check names no method");
    if (rc == 0 && r.problems != 0)
        rc = CHECK_FAIL(err, "%s found %lld problem(s): %s", r.method, (long long)r.problems,
                        r.first_problem);
    return rc;
}

static int check_deadline_breaks_connection(ctx *x, noodle_error *err) {
    noodle_rows *r = NULL;
    int64_t passed = noodle_clock_now(NULL) - 1;
    int rc = noodle_conn_execute(x->b, "SELECT 1", NULL, 0, passed, &r, err);
    noodle_rows_free(r);
    if (rc != NOODLE_E_BACKEND_TIMEOUT)
        return CHECK_FAIL(err, "expected NOODLE-4004 for a passed deadline, got %d", rc);
    rc = noodle_conn_validate(x->b, DEADLINE(), err);
    if (rc != NOODLE_E_CONNECTION_BROKEN)
        return CHECK_FAIL(err, "a connection cut by its deadline must stay broken, got %d", rc);
    noodle_error_clear(err);
    return 0;
}

static int check_cleanup(ctx *x, noodle_error *err) {
    return exec(x->a, "DROP TABLE IF EXISTS " TABLE, NULL, 0, NULL, err);
}

void selfcheck_run(const noodle_backend_ops *ops, const char *url, FILE *out,
                   selfcheck_result *result) {
    static const struct {
        const char *name;
        int (*fn)(ctx *, noodle_error *);
    } checks[] = {
        {"connect opens two connections", check_connect},
        {"validate pings the server", check_validate},
        {"role reports primary", check_role},
        {"every type round-trips exactly", check_types_round_trip},
        {"an injection payload is stored as data", check_injection_is_data},
        {"failures carry catalogue codes", check_errors_are_coded},
        {"commit is visible, rollback is not", check_commit_and_rollback},
        {"rollback to a savepoint keeps the outer work", check_savepoints},
        {"server metrics are measured", check_metrics},
        {"the integrity check finds the database intact", check_integrity},
        {"a passed deadline fails and breaks the connection", check_deadline_breaks_connection},
        {"cleanup", check_cleanup},
    };
    ctx x = {.ops = ops, .url = url};
    char masked[512];
    noodle_mask_secrets(url, masked, sizeof masked);
    fprintf(out, "selfcheck: backend %s, url %s\n", ops->name, masked);
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        noodle_error err;
        noodle_error_clear(&err);
        int rc = (i == 0 || (x.a != NULL && x.b != NULL))
                     ? checks[i].fn(&x, &err)
                     : CHECK_FAIL(&err, "skipped: no connection");
        if (rc == 0) {
            result->passed++;
            fprintf(out, "  PASS  %s\n", checks[i].name);
        } else {
            char text[1024];
            noodle_error_format(&err, text, sizeof text);
            result->failed++;
            fprintf(out, "  FAIL  %s: %s\n", checks[i].name, text);
        }
    }
    noodle_conn_close(x.a);
    noodle_conn_close(x.b);
}
