/* The backend layer itself: results, values, secrets masking, identifiers,
 * the registry, and the connection wrapper's invariants (every failure
 * coded, broken stays broken) checked against a deliberately sloppy backend. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"
#include "noodle/backend.h"
#include "test_util.h"

/* ---- results and values ---------------------------------------------------- */

static void results_copy_the_bytes_they_are_given(void **state) {
    (void)state;
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_rows_new(2, &r, &err), &err);
    assert_ok(noodle_rows_set_column_name(r, 0, "name", &err), &err);
    assert_ok(noodle_rows_set_column_name(r, 1, "data", &err), &err);
    char text[] = "mutable";
    unsigned char bytes[3] = {1, 0, 2};
    for (int i = 0; i < 1000; i++) { /* forces the cell array to grow */
        noodle_value row[2] = {noodle_text(text), noodle_blob(bytes, sizeof bytes)};
        assert_ok(noodle_rows_append(r, row, &err), &err);
    }
    strcpy(text, "changed");
    bytes[0] = 9;
    assert_int_equal(noodle_rows_count(r), 1000);
    const noodle_value *v = noodle_rows_get(r, 999, 0);
    assert_string_equal((const char *)v->v.bytes.ptr, "mutable"); /* NUL-terminated copy */
    v = noodle_rows_get(r, 0, 1);
    assert_int_equal(v->v.bytes.len, 3);
    assert_memory_equal(v->v.bytes.ptr, "\1\0\2", 3);
    assert_int_equal(noodle_rows_column_index(r, "data"), 1);
    noodle_rows_free(r);
    noodle_rows_free(NULL);
}

static void large_values_keep_small_values_packed(void **state) {
    (void)state;
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_rows_new(1, &r, &err), &err);
    size_t big = 100000;
    char *payload = malloc(big);
    memset(payload, 'z', big);
    noodle_value cells[3] = {noodle_text("small"), noodle_text_n(payload, big), noodle_text("tiny")};
    for (int i = 0; i < 3; i++) assert_ok(noodle_rows_append(r, &cells[i], &err), &err);
    assert_string_equal((const char *)noodle_rows_get(r, 0, 0)->v.bytes.ptr, "small");
    assert_int_equal(noodle_rows_get(r, 1, 0)->v.bytes.len, big);
    assert_memory_equal(noodle_rows_get(r, 1, 0)->v.bytes.ptr, payload, big);
    assert_string_equal((const char *)noodle_rows_get(r, 2, 0)->v.bytes.ptr, "tiny");
    free(payload);
    noodle_rows_free(r);
}

static void invalid_cells_and_columns_are_refused_with_codes(void **state) {
    (void)state;
    noodle_rows *r = NULL;
    noodle_error err;
    assert_ok(noodle_rows_new(1, &r, &err), &err);
    assert_code(noodle_rows_set_column_name(r, 1, "x", &err), &err, NOODLE_E_BACKEND_INVALID_ARGUMENT);
    noodle_value bad = {.type = (noodle_type)42};
    assert_code(noodle_rows_append(r, &bad, &err), &err, NOODLE_E_BACKEND_INVALID_ARGUMENT);
    noodle_rows_free(r);
}

static void value_constructors_map_null_pointers_to_sql_null(void **state) {
    (void)state;
    assert_int_equal(noodle_text(NULL).type, NOODLE_TYPE_NULL);
    assert_int_equal(noodle_text_n(NULL, 3).type, NOODLE_TYPE_NULL);
    assert_int_equal(noodle_blob(NULL, 3).type, NOODLE_TYPE_NULL);
    assert_int_equal(noodle_blob(NULL, 0).type, NOODLE_TYPE_BLOB); /* an empty blob */
    assert_int_equal(noodle_text("abc").v.bytes.len, 3);
    assert_string_equal(noodle_type_name(NOODLE_TYPE_DOUBLE), "double");
}

/* ---- secrets ------------------------------------------------------------------ */

static void secrets_are_masked_in_every_url_form(void **state) {
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"host=db password=hunter2 dbname=app", "host=db password=**** dbname=app"},
        {"password = 'hunter 2\\' x' host=db", "password = '****' host=db"},
        {"host=db password=ab\\ cd dbname=x", "host=db password=**** dbname=x"},
        {"postgresql://user:pa?ss@db.example/app", "postgresql://user:****@db.example/app"},
        {"postgresql://user:p@ss@db.example/app", "postgresql://user:****@db.example/app"},
        {"postgresql://app@db/app?passw%6Frd=topsecret", "postgresql://app@db/app?passw%6Frd=****"},
        {"host=a,b port=1,2 sslpassword=s3cret", "host=a,b port=1,2 sslpassword=****"},
        {"postgresql://app:hunter2@db1:5432,db2/app", "postgresql://app:****@db1:5432,db2/app"},
        {"postgres://app@db/app?password=hunter2&sslmode=require",
         "postgres://app@db/app?password=****&sslmode=require"},
        {"postgresql://a:p%40ss@h/d", "postgresql://a:****@h/d"},
        {"/var/lib/app/noodle.db", "/var/lib/app/noodle.db"},
        {"mock://node-1", "mock://node-1"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[256];
        size_t n = noodle_mask_secrets(cases[i].in, buf, sizeof buf);
        assert_string_equal(buf, cases[i].out);
        assert_int_equal(n, strlen(cases[i].out));
    }
}

static void messages_quoting_a_url_are_scrubbed_of_its_secrets(void **state) {
    (void)state;
    const char *url = "postgresql://user:pa%zzword@127.0.0.1/app";
    char buf[256];
    noodle__scrub_secrets("invalid percent-encoded token: \"pa%zzword\"", url, buf, sizeof buf);
    assert_string_equal(buf, "invalid percent-encoded token: \"****\"");
    /* libpq decodes the password: the decoded value is scrubbed as well */
    url = "postgresql://u:s%65cret@h/d";
    noodle__scrub_secrets("password \"secret\" rejected", url, buf, sizeof buf);
    assert_string_equal(buf, "password \"****\" rejected");
    noodle_mask_secrets("host=h password='s3cret' dbname=s3cret", buf, sizeof buf);
    assert_null(strstr(buf, "s3cret"));
}

static void masking_into_a_short_buffer_truncates_and_reports_the_length(void **state) {
    (void)state;
    char buf[8];
    size_t n = noodle_mask_secrets("host=db password=hunter2", buf, sizeof buf);
    assert_int_equal(n, strlen("host=db password=****"));
    assert_string_equal(buf, "host=db");
    assert_int_equal(noodle_mask_secrets("password=x", NULL, 0), strlen("password=****"));
}

/* ---- identifiers and names ------------------------------------------------------ */

static void identifiers_are_validated_by_pattern_and_length(void **state) {
    (void)state;
    assert_true(noodle_identifier_valid("sp_1"));
    assert_true(noodle_identifier_valid("_x"));
    assert_true(noodle_identifier_valid("a12345678901234567890123456789012345678901234567890123456789012"));
    assert_false(noodle_identifier_valid("a123456789012345678901234567890123456789012345678901234567890123"));
    assert_false(noodle_identifier_valid(""));
    assert_false(noodle_identifier_valid(NULL));
    assert_false(noodle_identifier_valid("1a"));
    assert_false(noodle_identifier_valid("a-b"));
    assert_false(noodle_identifier_valid("a\"b"));
    assert_false(noodle_identifier_valid("caf\xc3\xa9"));
    assert_string_equal(noodle_role_name(NOODLE_ROLE_READ_ONLY), "read-only");
    assert_string_equal(noodle_isolation_name(NOODLE_ISOLATION_SERIALIZABLE), "serializable");
}

/* ---- registry ---------------------------------------------------------------------- */

static int sloppy_rc; /* what the sloppy backend's execute returns */
static int sloppy_fill; /* whether it fills the error */

static int sloppy_connect(const noodle_connect_params *p, void **h, noodle_error *err) {
    (void)p;
    (void)err;
    *h = malloc(1);
    return 0;
}
static void sloppy_close(void *h) { free(h); }
static int sloppy_ok(void *h, int64_t d, noodle_error *err) {
    (void)h, (void)d, (void)err;
    return 0;
}
static int sloppy_execute(void *h, const char *sql, const noodle_value *p, size_t n, int64_t d,
                          noodle_rows **out, noodle_error *err) {
    (void)h, (void)sql, (void)p, (void)n, (void)d;
    if (sloppy_rc == 0 && sloppy_fill) return noodle_rows_new(0, out, err);
    if (sloppy_fill) NOODLE_ERR(err, sloppy_rc, "filled");
    return sloppy_rc; /* may leave *out NULL on "success" or return junk */
}
static int sloppy_begin(void *h, noodle_isolation i, int64_t d, noodle_error *err) {
    (void)i;
    return sloppy_ok(h, d, err);
}
static int sloppy_sp(void *h, const char *name, int64_t d, noodle_error *err) {
    (void)name;
    return sloppy_ok(h, d, err);
}
static int sloppy_role(void *h, int64_t d, noodle_role *out, noodle_error *err) {
    (void)h, (void)d, (void)err;
    *out = NOODLE_ROLE_PRIMARY;
    return 0;
}
static int sloppy_metrics(void *h, int64_t d, noodle_server_metrics *m, noodle_error *err) {
    (void)h, (void)d, (void)m, (void)err;
    return 0;
}

static bool sloppy_in_txn(void *h) {
    (void)h;
    return false;
}

/* Built as an ABI 1 table from before the integrity op (struct_size ends
 * before it): such a table is still accepted. */
static noodle_backend_ops sloppy_ops = {
    NOODLE_BACKEND_ABI_VERSION, offsetof(noodle_backend_ops, integrity), "sloppy", sloppy_connect, sloppy_close,
    sloppy_ok, sloppy_execute, sloppy_begin, sloppy_ok, sloppy_ok, sloppy_sp, sloppy_sp, sloppy_sp,
    sloppy_role, sloppy_metrics, sloppy_in_txn, NULL,
};

static void backends_are_found_by_name_and_unknown_names_fail_with_4006(void **state) {
    (void)state;
    const noodle_backend_ops *ops;
    noodle_error err;
    assert_ok(noodle_backend_find("sqlite", &ops, &err), &err);
    assert_ptr_equal(ops, noodle_backend_sqlite());
    assert_ok(noodle_backend_find("postgres", &ops, &err), &err);
    assert_string_equal(ops->name, "postgres");
    assert_code(noodle_backend_find("oracle", &ops, &err), &err, NOODLE_E_BACKEND_UNKNOWN);
    assert_null(ops);
    assert_ok(noodle_backend_register(&sloppy_ops, &err), &err);
    assert_ok(noodle_backend_register(&sloppy_ops, &err), &err); /* idempotent */
    assert_ok(noodle_backend_find("sloppy", &ops, &err), &err);
    assert_ptr_equal(ops, &sloppy_ops);
}

static void incomplete_or_mismatched_operations_tables_are_refused_with_4007(void **state) {
    (void)state;
    noodle_error err;
    noodle_backend_ops missing = sloppy_ops;
    missing.name = "missing";
    missing.metrics = NULL;
    assert_code(noodle_backend_register(&missing, &err), &err, NOODLE_E_BACKEND_ABI_MISMATCH);
    noodle_backend_ops future = sloppy_ops;
    future.name = "future";
    future.abi_version = NOODLE_BACKEND_ABI_VERSION + 1;
    assert_code(noodle_backend_register(&future, &err), &err, NOODLE_E_BACKEND_ABI_MISMATCH);
    noodle_backend_ops impostor = sloppy_ops;
    assert_code(noodle_backend_register(&impostor, &err), &err, NOODLE_E_BACKEND_INVALID_ARGUMENT);
    impostor.name = "sqlite";
    assert_code(noodle_backend_register(&impostor, &err), &err, NOODLE_E_BACKEND_INVALID_ARGUMENT);
    noodle_connect_params p = {.url = "x", .deadline = NOODLE_NO_DEADLINE};
    noodle_conn *c = NULL;
    assert_code(noodle_conn_open(&missing, &p, &c, &err), &err, NOODLE_E_BACKEND_ABI_MISMATCH);
    assert_null(c);
}

/* ---- the connection wrapper's invariants ------------------------------------------ */

static noodle_conn *open_sloppy(void) {
    noodle_connect_params p = {.url = "sloppy://x?password=secret", .deadline = NOODLE_NO_DEADLINE};
    noodle_conn *c = NULL;
    noodle_error err;
    assert_ok(noodle_conn_open(&sloppy_ops, &p, &c, &err), &err);
    assert_null(strstr(noodle_conn_endpoint(c), "secret"));
    return c;
}

static void a_failure_outside_the_catalogue_is_reported_as_4012(void **state) {
    (void)state;
    noodle_conn *c = open_sloppy();
    noodle_rows *r = NULL;
    noodle_error err;
    sloppy_rc = -1; /* not a code */
    sloppy_fill = 0;
    assert_code(noodle_conn_execute(c, "x", NULL, 0, NOODLE_NO_DEADLINE, &r, &err), &err,
                NOODLE_E_BACKEND_INTERNAL);
    assert_non_null(strstr(err.message, "sloppy"));
    noodle_conn_close(c);
}

static void a_coded_failure_the_backend_did_not_describe_still_carries_its_code(void **state) {
    (void)state;
    noodle_conn *c = open_sloppy();
    noodle_rows *r = NULL;
    noodle_error err;
    sloppy_rc = NOODLE_E_QUERY_BUSY;
    sloppy_fill = 0;
    assert_code(noodle_conn_execute(c, "x", NULL, 0, NOODLE_NO_DEADLINE, &r, &err), &err,
                NOODLE_E_QUERY_BUSY);
    assert_true(err.message[0] != '\0');
    noodle_conn_close(c);
}

static void success_without_a_result_is_reported_as_4012(void **state) {
    (void)state;
    noodle_conn *c = open_sloppy();
    noodle_rows *r = NULL;
    noodle_error err;
    sloppy_rc = 0;
    sloppy_fill = 0;
    assert_code(noodle_conn_execute(c, "x", NULL, 0, NOODLE_NO_DEADLINE, &r, &err), &err,
                NOODLE_E_BACKEND_INTERNAL);
    assert_null(r);
    noodle_conn_close(c);
}

static void a_connection_fatal_error_breaks_the_connection_for_good(void **state) {
    (void)state;
    noodle_conn *c = open_sloppy();
    noodle_rows *r = NULL;
    noodle_error err;
    sloppy_rc = NOODLE_E_CONNECTION_LOST;
    sloppy_fill = 1;
    assert_code(noodle_conn_execute(c, "x", NULL, 0, NOODLE_NO_DEADLINE, &r, &err), &err,
                NOODLE_E_CONNECTION_LOST);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_BROKEN);
    sloppy_rc = 0; /* even though the backend would now succeed */
    sloppy_fill = 1;
    for (int i = 0; i < 3; i++) { /* keeps naming the original error, however often asked */
        assert_code(noodle_conn_execute(c, "x", NULL, 0, NOODLE_NO_DEADLINE, &r, &err), &err,
                    NOODLE_E_CONNECTION_BROKEN);
        assert_non_null(strstr(err.message, "[NOODLE-4003] filled"));
        assert_null(strstr(err.message, "NOODLE-4005"));
    }
    noodle_role role;
    assert_code(noodle_conn_role(c, NOODLE_NO_DEADLINE, &role, &err), &err, NOODLE_E_CONNECTION_BROKEN);
    assert_code(noodle_conn_begin(c, NOODLE_ISOLATION_DEFAULT, NOODLE_NO_DEADLINE, &err), &err,
                NOODLE_E_CONNECTION_BROKEN);
    noodle_conn_close(c);
}

static void a_non_fatal_error_leaves_the_connection_usable(void **state) {
    (void)state;
    noodle_conn *c = open_sloppy();
    noodle_rows *r = NULL;
    noodle_error err;
    sloppy_rc = NOODLE_E_QUERY_CONSTRAINT;
    sloppy_fill = 1;
    assert_code(noodle_conn_execute(c, "x", NULL, 0, NOODLE_NO_DEADLINE, &r, &err), &err,
                NOODLE_E_QUERY_CONSTRAINT);
    assert_int_equal(noodle_conn_get_state(c), NOODLE_CONN_OK);
    sloppy_rc = 0;
    assert_ok(noodle_conn_execute(c, "x", NULL, 0, NOODLE_NO_DEADLINE, &r, &err), &err);
    noodle_rows_free(r);
    noodle_conn_set_generation(c, 7);
    assert_int_equal(noodle_conn_generation(c), 7);
    noodle_conn_close(c);
    noodle_conn_close(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(results_copy_the_bytes_they_are_given),
        cmocka_unit_test(large_values_keep_small_values_packed),
        cmocka_unit_test(invalid_cells_and_columns_are_refused_with_codes),
        cmocka_unit_test(value_constructors_map_null_pointers_to_sql_null),
        cmocka_unit_test(secrets_are_masked_in_every_url_form),
        cmocka_unit_test(messages_quoting_a_url_are_scrubbed_of_its_secrets),
        cmocka_unit_test(masking_into_a_short_buffer_truncates_and_reports_the_length),
        cmocka_unit_test(identifiers_are_validated_by_pattern_and_length),
        cmocka_unit_test(backends_are_found_by_name_and_unknown_names_fail_with_4006),
        cmocka_unit_test(incomplete_or_mismatched_operations_tables_are_refused_with_4007),
        cmocka_unit_test(a_failure_outside_the_catalogue_is_reported_as_4012),
        cmocka_unit_test(a_coded_failure_the_backend_did_not_describe_still_carries_its_code),
        cmocka_unit_test(success_without_a_result_is_reported_as_4012),
        cmocka_unit_test(a_connection_fatal_error_breaks_the_connection_for_good),
        cmocka_unit_test(a_non_fatal_error_leaves_the_connection_usable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
