#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

// 4 KiB is enough for a path, a tensor name and a sentence; longer messages are truncated, never
// overflowed.
static _Thread_local char error_message[4096];
static _Thread_local lcm_status error_status;

lcm_status lcm_fail(lcm_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    error_status = code;
    return code;
}

lcm_status lcm_fail_context(lcm_status code, const char *fmt, ...) {
    char old[sizeof error_message];
    memcpy(old, error_message, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof error_message)
        snprintf(error_message + n, sizeof error_message - (size_t)n, "%s", old);
    error_status = code;
    return code;
}

const char *error_last_message(void) { return error_message; }

lcm_status lcm_last_status(void) { return error_status; }

void error_clear(void) {
    error_message[0] = '\0';
    error_status = LCM_OK;
}

const char *error_status_name(lcm_status status) {
    switch (status) {
    case LCM_OK: return "ok";
    case LCM_ERR_INVALID_ARGUMENT: return "invalid argument";
    case LCM_ERR_IO: return "i/o error";
    case LCM_ERR_FORMAT: return "malformed input";
    case LCM_ERR_UNSUPPORTED: return "unsupported";
    case LCM_ERR_OUT_OF_MEMORY: return "out of memory";
    case LCM_ERR_CANCELLED: return "cancelled";
    case LCM_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}
