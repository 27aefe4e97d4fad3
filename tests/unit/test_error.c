/* The error catalogue (STD-ERRCODE): unique, in range, documented, one format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "noodle/error.h"
#include "test_util.h"

static void catalogue_codes_are_unique(void **state) {
    (void)state;
    size_t n;
    const noodle_code_info *t = noodle_code_table(&n);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) {
            if (t[i].code == t[j].code) fail_msg("code %d listed twice", t[i].code);
            if (strcmp(t[i].name, t[j].name) == 0) fail_msg("name %s listed twice", t[i].name);
        }
}

static void every_code_is_four_digits_inside_its_category_range(void **state) {
    (void)state;
    size_t n;
    const noodle_code_info *t = noodle_code_table(&n);
    for (size_t i = 0; i < n; i++) {
        if (t[i].code < 1000 || t[i].code > 9999) fail_msg("code %d is not 4 digits", t[i].code);
        if (noodle_code_category(t[i].code) == NULL)
            fail_msg("code %d (%s) is outside every category range", t[i].code, t[i].name);
    }
    /* the ranges themselves, from STANDARDS.md */
    assert_string_equal(noodle_code_category(1001), "configuration");
    assert_string_equal(noodle_code_category(2099), "connection pool");
    assert_string_equal(noodle_code_category(6049), "transaction manager");
    assert_null(noodle_code_category(6050));
    assert_null(noodle_code_category(6029));
    assert_null(noodle_code_category(1100));
}

static void every_code_has_a_name_and_a_message(void **state) {
    (void)state;
    size_t n;
    const noodle_code_info *t = noodle_code_table(&n);
    for (size_t i = 0; i < n; i++) {
        if (t[i].name == NULL || t[i].name[0] == '\0') fail_msg("code %d has no name", t[i].code);
        if (t[i].message == NULL || strlen(t[i].message) < 8)
            fail_msg("code %d has no real message", t[i].code);
        assert_string_equal(noodle_code_name(t[i].code), t[i].name);
        assert_string_equal(noodle_code_message(t[i].code), t[i].message);
    }
    assert_null(noodle_code_name(1234));
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    size_t got = buf ? fread(buf, 1, (size_t)len, f) : 0;
    fclose(f);
    if (buf) buf[got] = '\0';
    return buf;
}

static void every_code_is_documented_in_docs_error_codes_md(void **state) {
    (void)state;
    char *doc = read_file(NOODLE_SOURCE_DIR "/docs/error-codes.md");
    if (doc == NULL) fail_msg("cannot read docs/error-codes.md");
    size_t n;
    const noodle_code_info *t = noodle_code_table(&n);
    for (size_t i = 0; i < n; i++) {
        char row[128];
        snprintf(row, sizeof row, "| %04d | `NOODLE_E_%s` |", t[i].code, t[i].name);
        if (strstr(doc, row) == NULL) {
            free(doc);
            fail_msg("code %d (%s) is not documented in docs/error-codes.md", t[i].code, t[i].name);
        }
    }
    free(doc);
}

static void format_is_the_one_message_format(void **state) {
    (void)state;
    noodle_error err;
    int rc = NOODLE_ERR(&err, NOODLE_E_POOL_TIMEOUT,
                        "pool acquire timed out after %d ms (max %d in use, %d waiting)", 30000, 20, 7);
    assert_int_equal(rc, 2002);
    char buf[256];
    size_t len = noodle_error_format(&err, buf, sizeof buf);
    assert_string_equal(buf, "[NOODLE-2002] pool acquire timed out after 30000 ms (max 20 in use, 7 waiting)");
    assert_int_equal(len, strlen(buf));
    assert_string_equal(err.file, __FILE__);
    assert_true(err.line > 0);
    assert_string_equal(err.func, "format_is_the_one_message_format");
}

static void format_appends_the_backend_detail(void **state) {
    (void)state;
    noodle_error err;
    NOODLE_ERR(&err, NOODLE_E_QUERY_CONSTRAINT, "execute failed: duplicate key");
    assert_int_equal(noodle_error_detail(&err, "SQLSTATE %s", "23505"), 5002);
    char buf[256];
    noodle_error_format(&err, buf, sizeof buf);
    assert_string_equal(buf, "[NOODLE-5002] execute failed: duplicate key [SQLSTATE 23505]");
}

static void format_truncates_safely_and_reports_the_needed_length(void **state) {
    (void)state;
    noodle_error err;
    NOODLE_ERR(&err, NOODLE_E_CONNECT_FAILED, "could not connect to %s", "db.example:5432");
    char small[16];
    size_t need = noodle_error_format(&err, small, sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, "[NOODLE-4001] c", 15);
    assert_int_equal(need, strlen("[NOODLE-4001] could not connect to db.example:5432"));
}

static void empty_format_uses_the_catalogue_message(void **state) {
    (void)state;
    noodle_error err;
    NOODLE_ERR(&err, NOODLE_E_CONNECTION_LOST, "%s", "");
    assert_string_equal(err.message, noodle_code_message(NOODLE_E_CONNECTION_LOST));
}

static void null_error_objects_are_accepted(void **state) {
    (void)state;
    assert_int_equal(NOODLE_ERR(NULL, NOODLE_E_POOL_TIMEOUT, "x"), 2002);
    noodle_error_clear(NULL);
    assert_int_equal(noodle_error_detail(NULL, "x"), 0);
    char buf[32];
    noodle_error_format(NULL, buf, sizeof buf);
    assert_string_equal(buf, "no error");
}

static void connection_fatal_codes_are_exactly_the_loss_codes(void **state) {
    (void)state;
    assert_true(noodle_code_is_connection_fatal(NOODLE_E_CONNECTION_LOST));
    assert_true(noodle_code_is_connection_fatal(NOODLE_E_BACKEND_TIMEOUT));
    assert_true(noodle_code_is_connection_fatal(NOODLE_E_SERVER_SHUTDOWN));
    assert_true(noodle_code_is_connection_fatal(NOODLE_E_CONNECTION_BROKEN));
    assert_false(noodle_code_is_connection_fatal(NOODLE_E_QUERY_CONSTRAINT));
    assert_false(noodle_code_is_connection_fatal(NOODLE_E_QUERY_BUSY));
    assert_false(noodle_code_is_connection_fatal(NOODLE_E_QUERY_SERIALIZATION));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(catalogue_codes_are_unique),
        cmocka_unit_test(every_code_is_four_digits_inside_its_category_range),
        cmocka_unit_test(every_code_has_a_name_and_a_message),
        cmocka_unit_test(every_code_is_documented_in_docs_error_codes_md),
        cmocka_unit_test(format_is_the_one_message_format),
        cmocka_unit_test(format_appends_the_backend_detail),
        cmocka_unit_test(format_truncates_safely_and_reports_the_needed_length),
        cmocka_unit_test(empty_format_uses_the_catalogue_message),
        cmocka_unit_test(null_error_objects_are_accepted),
        cmocka_unit_test(connection_fatal_codes_are_exactly_the_loss_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
