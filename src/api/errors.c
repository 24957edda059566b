// The error functions of the public API (include/lcm.h): the thread's message and status live in
// core/error.c, where every layer sets them.
#include "core/error.h"
#include "lcm.h"

const char *lcm_last_error(void) { return error_last_message(); }

void lcm_clear_error(void) { error_clear(); }

const char *lcm_status_name(lcm_status status) { return error_status_name(status); }
