// lcm.c — public C API.
//
// Ownership rules, stated once and repeated on each function:
//  - A handle returned by lcm_*_open/new is owned by the caller and released with the matching
//    lcm_*_close/free. Passing NULL to a release function is allowed and does nothing.
//  - Strings and arrays passed in are borrowed for the duration of the call only.
//  - Strings returned as `const char *` are owned by the library and stay valid as documented.
#ifndef LCM_H
#define LCM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lcm_status {
    LCM_OK = 0,
    LCM_ERR_INVALID_ARGUMENT = 1, // the caller asked for something impossible (bad size, steps, ...)
    LCM_ERR_IO = 2,               // a file could not be opened, read, mapped or written
    LCM_ERR_FORMAT = 3,           // a file's content is malformed (safetensors, JSON, PNG, ...)
    LCM_ERR_UNSUPPORTED = 4,      // well-formed, but a feature/config value this build cannot run
    LCM_ERR_OUT_OF_MEMORY = 5,
    LCM_ERR_CANCELLED = 6, // the progress callback asked to stop
    LCM_ERR_INTERNAL = 7,
} lcm_status;

// The message of the last failure on the calling thread ("" if none). Owned by the library; valid
// until the next lcm_* call on the same thread.
const char *lcm_last_error(void);

// Clears the calling thread's error message.
void lcm_clear_error(void);

// A short constant name for a status ("malformed input"). Static storage; never freed.
const char *lcm_status_name(lcm_status status);

#ifdef __cplusplus
}
#endif
#endif
