/* Pure helpers of the PostgreSQL backend: placeholder translation, SQLSTATE
 * mapping, float8 text. No server needed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/postgres_sql.h"
#include "noodle/backend.h"
#include "noodle/clock.h"
#include "noodle/error.h"

/* Translate sql with standard_conforming_strings on or off and check the
 * text and the count. */
static void check_translation_mode(bool standard_strings, const char *sql, const char *want,
                                   size_t want_count) {
    char *out = NULL;
    size_t count = 99;
    assert_int_equal(noodle__pg_translate_placeholders(sql, standard_strings, &out, &count), 0);
    assert_non_null(out);
    assert_string_equal(out, want);
    assert_int_equal(count, want_count);
    free(out);
}

/* The server default: standard_conforming_strings on. */
static void check_translation(const char *sql, const char *want, size_t want_count) {
    check_translation_mode(true, sql, want, want_count);
}

/* The same result whatever standard_conforming_strings says. */
static void check_translation_both(const char *sql, const char *want, size_t want_count) {
    check_translation_mode(true, sql, want, want_count);
    check_translation_mode(false, sql, want, want_count);
}

/* ---- placeholders ------------------------------------------------------------ */

static void plain_question_marks_become_numbered_parameters(void **state) {
    (void)state;
    check_translation("SELECT ?", "SELECT $1", 1);
    check_translation("INSERT INTO t (a, b, c) VALUES (?, ?, ?)",
                      "INSERT INTO t (a, b, c) VALUES ($1, $2, $3)", 3);
    check_translation("UPDATE t SET a=? WHERE id=?", "UPDATE t SET a=$1 WHERE id=$2", 2);
}

static void statement_without_placeholders_is_unchanged(void **state) {
    (void)state;
    check_translation("", "", 0);
    check_translation("SELECT 1", "SELECT 1", 0);
    check_translation("SELECT $1, $2", "SELECT $1, $2", 0);
}

static void ten_or_more_placeholders_get_two_digit_numbers(void **state) {
    (void)state;
    check_translation("VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                      "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)", 12);
}

static void question_mark_in_string_literal_is_not_a_placeholder(void **state) {
    (void)state;
    check_translation("SELECT '?', ?", "SELECT '?', $1", 1);
    check_translation("SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1", 1);
    /* Standard strings: a backslash is an ordinary character. */
    check_translation("SELECT 'a\\', ?", "SELECT 'a\\', $1", 1);
    check_translation("SELECT U&'d\\0061t?', ?", "SELECT U&'d\\0061t?', $1", 1);
    check_translation("SELECT X'0F', B'1?', ?", "SELECT X'0F', B'1?', $1", 1);
}

static void question_mark_in_escape_string_is_not_a_placeholder(void **state) {
    (void)state;
    check_translation("SELECT E'\\'?', ?", "SELECT E'\\'?', $1", 1);
    check_translation("SELECT e'a\\\\', ?", "SELECT e'a\\\\', $1", 1);
    check_translation("SELECT E'x''?', ?", "SELECT E'x''?', $1", 1);
    /* An identifier ending in E is not an escape-string prefix. */
    check_translation("SELECT namE'a\\', ?", "SELECT namE'a\\', $1", 1);
}

static void question_mark_in_dollar_quotes_is_not_a_placeholder(void **state) {
    (void)state;
    check_translation("SELECT $$?$$, ?", "SELECT $$?$$, $1", 1);
    check_translation("SELECT $tag$ ? $$ ? $tag$, ?", "SELECT $tag$ ? $$ ? $tag$, $1", 1);
    check_translation("DO $body$BEGIN PERFORM '?'; END$body$",
                      "DO $body$BEGIN PERFORM '?'; END$body$", 0);
    /* $1 is a positional parameter, a$b$ part of an identifier. */
    check_translation("SELECT a$b$, ?, $1", "SELECT a$b$, $1, $1", 1);
    /* Unterminated: copied to the end. */
    check_translation("SELECT $x$ ?", "SELECT $x$ ?", 0);
}

static void question_mark_in_comments_is_not_a_placeholder(void **state) {
    (void)state;
    check_translation("SELECT ? -- why?\n, ?", "SELECT $1 -- why?\n, $2", 2);
    check_translation("SELECT /* ? */ ?", "SELECT /* ? */ $1", 1);
    check_translation("SELECT /* a /* nested ? */ still ? */ ?",
                      "SELECT /* a /* nested ? */ still ? */ $1", 1);
    check_translation("SELECT ? /* unterminated ?", "SELECT $1 /* unterminated ?", 1);
}

static void question_mark_in_quoted_identifier_is_not_a_placeholder(void **state) {
    (void)state;
    check_translation("SELECT \"what?\" FROM t WHERE a = ?", "SELECT \"what?\" FROM t WHERE a = $1",
                      1);
    check_translation("SELECT \"a\"\"?\" , ?", "SELECT \"a\"\"?\" , $1", 1);
}

static void casts_and_operators_are_left_alone(void **state) {
    (void)state;
    check_translation("SELECT ?::int8, ?::text", "SELECT $1::int8, $2::text", 2);
    check_translation("SELECT '{}'::jsonb ?| array['a'], ?", "SELECT '{}'::jsonb ?| array['a'], $1",
                      1);
    check_translation("SELECT j ?& array['a'] FROM t WHERE id = ?",
                      "SELECT j ?& array['a'] FROM t WHERE id = $1", 1);
    /* ?|| is a placeholder followed by the concatenation operator. */
    check_translation("SELECT ?||'x'", "SELECT $1||'x'", 1);
    /* ?? is a literal ?, the jsonb key-exists operator. */
    check_translation("SELECT j ?? 'k' FROM t WHERE id = ?", "SELECT j ? 'k' FROM t WHERE id = $1",
                      1);
}

static void backslash_quote_ends_a_plain_string_when_standard_strings_are_on(void **state) {
    (void)state;
    /* 'it\' is the whole string; "s ?" follows it; the last ' opens an
     * unterminated string, copied as is. */
    check_translation_mode(true, "SELECT 'it\\'s ?' || ?", "SELECT 'it\\'s $1' || ?", 1);
    check_translation_mode(true, "SELECT N'a\\', ?", "SELECT N'a\\', $1", 1);
}

static void backslash_escapes_in_plain_strings_when_standard_strings_are_off(void **state) {
    (void)state;
    check_translation_mode(false, "SELECT 'it\\'s ?' || ?", "SELECT 'it\\'s ?' || $1", 1);
    check_translation_mode(false, "SELECT N'it\\'s ?', ?", "SELECT N'it\\'s ?', $1", 1);
    check_translation_mode(false, "SELECT 'a\\\\', ?", "SELECT 'a\\\\', $1", 1);
    check_translation_mode(false, "SELECT 'x''?', ?", "SELECT 'x''?', $1", 1);
    /* An identifier ending in E, B or X is no prefix: a plain string. */
    check_translation_mode(false, "SELECT namE'\\'?', ?", "SELECT namE'\\'?', $1", 1);
    check_translation_mode(false, "SELECT tab'\\'?', ?", "SELECT tab'\\'?', $1", 1);
}

static void escape_strings_and_bit_strings_ignore_standard_strings(void **state) {
    (void)state;
    /* E'' always escapes. */
    check_translation_both("SELECT E'\\'?', ?", "SELECT E'\\'?', $1", 1);
    /* B'', X'' and U&'' never do. */
    check_translation_both("SELECT B'\\', ?", "SELECT B'\\', $1", 1);
    check_translation_both("SELECT x'\\', ?", "SELECT x'\\', $1", 1);
    check_translation_both("SELECT U&'\\', ?", "SELECT U&'\\', $1", 1);
    /* Nothing else depends on the setting. */
    check_translation_both("SELECT \"a\\\" , ?", "SELECT \"a\\\" , $1", 1);
    check_translation_both("SELECT $$\\$$, ?", "SELECT $$\\$$, $1", 1);
}

/* ---- SQLSTATE mapping ------------------------------------------------------------ */

static void sqlstates_map_to_catalogue_codes(void **state) {
    (void)state;
    static const struct {
        const char *sqlstate;
        int code;
    } table[] = {
        {"08000", NOODLE_E_CONNECTION_LOST},
        {"08006", NOODLE_E_CONNECTION_LOST},
        {"08P01", NOODLE_E_CONNECTION_LOST},
        {"57P01", NOODLE_E_SERVER_SHUTDOWN},
        {"57P02", NOODLE_E_SERVER_SHUTDOWN},
        {"57P03", NOODLE_E_SERVER_SHUTDOWN},
        {"28000", NOODLE_E_AUTH_FAILED},
        {"28P01", NOODLE_E_AUTH_FAILED},
        {"42601", NOODLE_E_QUERY_SYNTAX},
        {"42P01", NOODLE_E_QUERY_SYNTAX},
        {"42703", NOODLE_E_QUERY_SYNTAX},
        {"23505", NOODLE_E_QUERY_CONSTRAINT},
        {"23503", NOODLE_E_QUERY_CONSTRAINT},
        {"23502", NOODLE_E_QUERY_CONSTRAINT},
        {"40001", NOODLE_E_QUERY_SERIALIZATION},
        {"40P01", NOODLE_E_QUERY_DEADLOCK},
        {"40002", NOODLE_E_QUERY_FAILED},
        {"55P03", NOODLE_E_QUERY_BUSY},
        {"55000", NOODLE_E_QUERY_FAILED},
        {"25006", NOODLE_E_QUERY_READ_ONLY},
        {"25P02", NOODLE_E_QUERY_TXN_STATE},
        {"25001", NOODLE_E_QUERY_TXN_STATE},
        {"22012", NOODLE_E_QUERY_DATA},
        {"22P02", NOODLE_E_QUERY_DATA},
        {"57014", NOODLE_E_QUERY_CANCELED},
        {"57000", NOODLE_E_QUERY_FAILED},
        {"53300", NOODLE_E_QUERY_FAILED},
        {"XX000", NOODLE_E_QUERY_FAILED},
        {"P0001", NOODLE_E_QUERY_FAILED},
        {"3B001", NOODLE_E_QUERY_INVALID_SAVEPOINT},
        {"3B000", NOODLE_E_QUERY_INVALID_SAVEPOINT},
        {"25P01", NOODLE_E_QUERY_TXN_STATE},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        int got = noodle__pg_code_for_sqlstate(table[i].sqlstate);
        if (got != table[i].code)
            fail_msg("SQLSTATE %s: want %d, got %d", table[i].sqlstate, table[i].code, got);
    }
}

static void missing_or_malformed_sqlstate_maps_to_query_failed(void **state) {
    (void)state;
    assert_int_equal(noodle__pg_code_for_sqlstate(NULL), NOODLE_E_QUERY_FAILED);
    assert_int_equal(noodle__pg_code_for_sqlstate(""), NOODLE_E_QUERY_FAILED);
    assert_int_equal(noodle__pg_code_for_sqlstate("08"), NOODLE_E_QUERY_FAILED);
    assert_int_equal(noodle__pg_code_for_sqlstate("230050"), NOODLE_E_QUERY_FAILED);
}

/* ---- float8 text ------------------------------------------------------------------ */

static void doubles_format_as_postgres_float8_input(void **state) {
    char buf[64];
    (void)state;
    noodle__pg_format_double(INFINITY, buf, sizeof buf);
    assert_string_equal(buf, "Infinity");
    noodle__pg_format_double(-INFINITY, buf, sizeof buf);
    assert_string_equal(buf, "-Infinity");
    noodle__pg_format_double(NAN, buf, sizeof buf);
    assert_string_equal(buf, "NaN");
    noodle__pg_format_double(-0.0, buf, sizeof buf);
    assert_string_equal(buf, "-0");
    noodle__pg_format_double(0.0, buf, sizeof buf);
    assert_string_equal(buf, "0");
    noodle__pg_format_double(1.5, buf, sizeof buf);
    assert_string_equal(buf, "1.5");
    noodle__pg_format_double(1e308, buf, sizeof buf);
    assert_string_equal(buf, "1e+308");
    /* 17 significant digits: enough to read back the same double. */
    noodle__pg_format_double(0.1, buf, sizeof buf);
    assert_string_equal(buf, "0.10000000000000001");
}

static void formatted_doubles_read_back_exactly(void **state) {
    static const double values[] = {0.1,
                                    -0.0,
                                    1e308,
                                    -1e-308,
                                    4.9406564584124654e-324,
                                    1.7976931348623157e308,
                                    3.141592653589793,
                                    123456789.125};
    char buf[64];
    (void)state;
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        double back = 0;
        noodle__pg_format_double(values[i], buf, sizeof buf);
        assert_true(noodle__pg_parse_double(buf, &back));
        assert_memory_equal(&back, &values[i], sizeof back);
    }
}

static void float8_output_parses_special_values(void **state) {
    double d = 0;
    (void)state;
    assert_true(noodle__pg_parse_double("Infinity", &d));
    assert_true(isinf(d) && d > 0);
    assert_true(noodle__pg_parse_double("-Infinity", &d));
    assert_true(isinf(d) && d < 0);
    assert_true(noodle__pg_parse_double("NaN", &d));
    assert_true(isnan(d));
    assert_false(noodle__pg_parse_double("", &d));
    assert_false(noodle__pg_parse_double("1.5x", &d));
}

/* ---- connection failure messages ---------------------------------------------------- */

static void auth_failure_messages_are_recognised(void **state) {
    (void)state;
    assert_true(noodle__pg_is_auth_failure(
        "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password "
        "authentication failed for user \"bob\""));
    assert_true(noodle__pg_is_auth_failure(
        "FATAL:  no pg_hba.conf entry for host \"10.0.0.1\", user \"x\", database \"y\""));
    assert_true(noodle__pg_is_auth_failure("fe_sendauth: no password supplied"));
    assert_true(noodle__pg_is_auth_failure("FATAL:  role \"nobody\" does not exist"));
    assert_false(noodle__pg_is_auth_failure("FATAL:  database \"nodb\" does not exist"));
    assert_false(noodle__pg_is_auth_failure(
        "connection to server at \"127.0.0.1\", port 1 failed: Connection refused"));
    assert_false(noodle__pg_is_auth_failure(NULL));
}

/* ---- per-host connect budgets -------------------------------------------------------- */

static void host_budget_is_an_even_share_of_the_time_left(void **state) {
    (void)state;
    int64_t now = NOODLE_SEC(100);
    int64_t deadline = now + NOODLE_SEC(10);
    assert_int_equal(noodle__pg_host_budget_end(now, deadline, NULL, 2), now + NOODLE_SEC(5));
    assert_int_equal(noodle__pg_host_budget_end(now, deadline, "", 4), now + NOODLE_MS(2500));
    /* The last host gets all that is left. */
    assert_int_equal(noodle__pg_host_budget_end(now, deadline, NULL, 1), deadline);
    /* Past the deadline: nothing. */
    assert_int_equal(noodle__pg_host_budget_end(deadline + 1, deadline, NULL, 2), deadline);
    /* No deadline and no connect_timeout: no bound. */
    assert_int_equal(noodle__pg_host_budget_end(now, NOODLE_NO_DEADLINE, NULL, 3),
                     NOODLE_NO_DEADLINE);
}

static void host_budget_follows_connect_timeout_like_libpq(void **state) {
    (void)state;
    int64_t now = NOODLE_SEC(100);
    int64_t deadline = now + NOODLE_SEC(10);
    assert_int_equal(noodle__pg_host_budget_end(now, deadline, "3", 2), now + NOODLE_SEC(3));
    assert_int_equal(noodle__pg_host_budget_end(now, deadline, " 4 ", 2), now + NOODLE_SEC(4));
    /* Below 2 s counts as 2 s. */
    assert_int_equal(noodle__pg_host_budget_end(now, deadline, "1", 2), now + NOODLE_SEC(2));
    /* The deadline still bounds it, also for the last host. */
    assert_int_equal(noodle__pg_host_budget_end(now, deadline, "30", 1), deadline);
    assert_int_equal(noodle__pg_host_budget_end(now, NOODLE_NO_DEADLINE, "2", 1),
                     now + NOODLE_SEC(2));
    /* 0, negative and invalid values mean "none": the even share applies. */
    assert_int_equal(noodle__pg_host_budget_end(now, deadline, "0", 2), now + NOODLE_SEC(5));
    assert_int_equal(noodle__pg_host_budget_end(now, deadline, "-3", 2), now + NOODLE_SEC(5));
    assert_int_equal(noodle__pg_host_budget_end(now, deadline, "2s", 2), now + NOODLE_SEC(5));
    assert_int_equal(noodle__pg_host_budget_end(now, deadline, "99999999999", 2),
                     now + NOODLE_SEC(5));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_question_marks_become_numbered_parameters),
        cmocka_unit_test(statement_without_placeholders_is_unchanged),
        cmocka_unit_test(ten_or_more_placeholders_get_two_digit_numbers),
        cmocka_unit_test(question_mark_in_string_literal_is_not_a_placeholder),
        cmocka_unit_test(question_mark_in_escape_string_is_not_a_placeholder),
        cmocka_unit_test(question_mark_in_dollar_quotes_is_not_a_placeholder),
        cmocka_unit_test(question_mark_in_comments_is_not_a_placeholder),
        cmocka_unit_test(question_mark_in_quoted_identifier_is_not_a_placeholder),
        cmocka_unit_test(casts_and_operators_are_left_alone),
        cmocka_unit_test(backslash_quote_ends_a_plain_string_when_standard_strings_are_on),
        cmocka_unit_test(backslash_escapes_in_plain_strings_when_standard_strings_are_off),
        cmocka_unit_test(escape_strings_and_bit_strings_ignore_standard_strings),
        cmocka_unit_test(sqlstates_map_to_catalogue_codes),
        cmocka_unit_test(missing_or_malformed_sqlstate_maps_to_query_failed),
        cmocka_unit_test(doubles_format_as_postgres_float8_input),
        cmocka_unit_test(formatted_doubles_read_back_exactly),
        cmocka_unit_test(float8_output_parses_special_values),
        cmocka_unit_test(auth_failure_messages_are_recognised),
        cmocka_unit_test(host_budget_is_an_even_share_of_the_time_left),
        cmocka_unit_test(host_budget_follows_connect_timeout_like_libpq),
    };
    return cmocka_run_group_tests_name("postgres_sql", tests, NULL, NULL);
}
