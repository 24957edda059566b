// POST /sdapi/v1/png-info, A1111's "PNG Info" call: the image's generation parameters, read back.
//   request   {"image": "<base64 image, or a data: URL>"}
//   response  {"info": the PNG's `parameters` text ("" when it has none, or is a JPEG/WebP),
//              "items": {}, "parameters": {"Prompt": ..., "Negative prompt": ..., "Steps": "4", ...}}
// `parameters` is A1111's parse_generation_parameters shape: every value a string as written,
// "WxH" values also split into "KEY-1" / "KEY-2". (A1111 also lists a PNG's other text chunks in
// `items` and reads EXIF comments of JPEG/WebP; we write neither, so both stay empty.)
#ifndef LCM_APP_PNG_INFO_H
#define LCM_APP_PNG_INFO_H

#include <stddef.h>

#include <cjson/cJSON.h>

// Answers the request `body` (size bytes, borrowed). Returns the HTTP status: 200 with *response
// set (owned by the caller: cJSON_Delete), or 400 with *field naming the request field at fault
// (static) and `message` (cap bytes) saying what is wrong. Images larger than max_image_bytes once
// decoded from base64 are refused.
int png_info_answer(const char *body, size_t size, size_t max_image_bytes, cJSON **response, const char **field,
                    char *message, size_t cap);

#endif
