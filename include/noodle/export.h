/* Symbol visibility for libnoodle. The library is built with
 * -fvisibility=hidden; only declarations marked NOODLE_API are exported. */
#ifndef NOODLE_EXPORT_H
#define NOODLE_EXPORT_H

#if defined(NOODLE_STATIC_DEFINE)
#define NOODLE_API
#elif defined(__GNUC__)
#define NOODLE_API __attribute__((visibility("default")))
#else
#define NOODLE_API
#endif

/* Status-returning functions: ignoring the result is a bug. */
#if defined(__GNUC__)
#define NOODLE_MUSTCHECK __attribute__((warn_unused_result))
#define NOODLE_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define NOODLE_MUSTCHECK
#define NOODLE_PRINTF(fmt, args)
#endif

#endif
