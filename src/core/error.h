// Errors inside the library.
//
// Every fallible function returns an lcm_status. The human-readable message lives in a thread-local
// buffer so that it can say what failed, where, and what was expected without every caller having to
// thread a message buffer through. A function that fails calls lcm_fail() once, at the place that knows
// the details; callers above it just return the status (or add context with lcm_fail_context()).
#ifndef LCM_CORE_ERROR_H
#define LCM_CORE_ERROR_H

#include "lcm.h"

#if defined(__GNUC__)
#define LCM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LCM_PRINTF(a, b)
#endif

// Sets the thread's error message (printf-style) and returns `code`, so a failure reads
// `return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' ...", path, name);`.
lcm_status lcm_fail(lcm_status code, const char *fmt, ...) LCM_PRINTF(2, 3);

// Prefixes the current message with more context ("loading unet: " + old message); returns `code`.
lcm_status lcm_fail_context(lcm_status code, const char *fmt, ...) LCM_PRINTF(2, 3);

// The code of the thread's last lcm_fail/lcm_fail_context (LCM_OK after error_clear or when
// none failed): for callers of functions that report failure by returning NULL.
lcm_status lcm_last_status(void);

// The thread's last message ("" if none), cleared by error_clear(); lcm_last_error() and
// lcm_clear_error() of the public API are these. The message is owned by this thread's buffer and
// valid until the next failure on the thread.
const char *error_last_message(void);
void error_clear(void);

// A short constant name for a status ("malformed input"): lcm_status_name(). Static storage.
const char *error_status_name(lcm_status status);

// Propagate a failure: `LCM_TRY(st_open(...));`
#define LCM_TRY(expr)                                                                              \
    do {                                                                                           \
        lcm_status lcm_try_status_ = (expr);                                                       \
        if (lcm_try_status_ != LCM_OK) return lcm_try_status_;                                     \
    } while (0)

#endif
