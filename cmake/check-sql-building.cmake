# STD-PARAM guard: fail when a source file under src/ builds SQL text with a
# printf-style function. Values must reach the database as bound parameters,
# and identifiers through the database manager's validated, quoted builder.
#
# A call is flagged when it is a printf-family call (printf, fprintf, sprintf,
# snprintf, vsnprintf, asprintf, ...) and either
#   - its destination is named like SQL (sql, query, stmt, command), or
#   - one of its string literals holds an SQL keyword in capitals next to a
#     conversion (e.g. "SAVEPOINT %s", "WHERE id = %d").
# Usage: cmake -DSRC=<dir> -P check-sql-building.cmake
if(NOT SRC)
  message(FATAL_ERROR "pass -DSRC=<source directory>")
endif()
file(GLOB_RECURSE files "${SRC}/*.c" "${SRC}/*.h")
set(keywords "SELECT|INSERT|UPDATE|DELETE|FROM|WHERE|VALUES|INTO|SAVEPOINT|RELEASE|BEGIN|COMMIT|ROLLBACK|CREATE|DROP|ALTER|TRUNCATE|GRANT|SET|ORDER BY|LIMIT|ISOLATION")
set(bad 0)
set(checked 0)
foreach(f IN LISTS files)
  file(READ "${f}" text)
  # one line per statement is enough: calls end at the first ';'
  string(REPLACE "\n" " " flat "${text}")
  string(REGEX MATCHALL "[a-z_]*printf[ \t]*\\([^;]*;" calls "${flat}")
  foreach(call IN LISTS calls)
    math(EXPR checked "${checked} + 1")
    set(hit "")
    if(call MATCHES "^[a-z_]*printf[ \t]*\\([ \t]*[A-Za-z_>.-]*(sql|query|stmt|command)[A-Za-z_]*[ \t]*[,+]")
      set(hit "the destination is SQL text")
    endif()
    string(REGEX MATCHALL "\"([^\"\\\\]|\\\\.)*\"" literals "${call}")
    foreach(lit IN LISTS literals)
      if(lit MATCHES "(^|[^A-Za-z_])(${keywords})([^A-Za-z_]|$)" AND lit MATCHES "%[-+ #0-9.*]*[lhzjt]*[sdiuxXfgcp]")
        set(hit "an SQL keyword next to a conversion in ${lit}")
      endif()
    endforeach()
    if(hit)
      string(SUBSTRING "${call}" 0 160 shown)
      message(SEVERE_WARNING "${f}: printf-style SQL building (${hit}): ${shown}")
      math(EXPR bad "${bad} + 1")
    endif()
  endforeach()
endforeach()
if(bad GREATER 0)
  message(FATAL_ERROR "${bad} printf-style SQL building call(s) in ${SRC}: build SQL from fixed text, "
                      "bound parameters and validated identifiers instead")
endif()
message(STATUS "no printf-style SQL building in ${checked} printf-family calls under ${SRC}")
