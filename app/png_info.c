// POST /sdapi/v1/png-info; see png_info.h.
#include "png_info.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lcm.h"
#include "server_request.h"

// "512x768" -> true with the two numbers' spans (A1111's re_imagesize: ^(\d+)x(\d+)$).
static bool image_size_value(const char *v, size_t *first_len) {
    size_t a = strspn(v, "0123456789");
    if (a == 0 || v[a] != 'x') return false;
    size_t b = strspn(v + a + 1, "0123456789");
    if (b == 0 || v[a + 1 + b] != '\0') return false;
    *first_len = a;
    return true;
}

// A1111's parameters dict from the parsed infotext.
static cJSON *parameters_json(const lcm_infotext *info) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "Prompt", info->prompt);
    cJSON_AddStringToObject(o, "Negative prompt", info->negative_prompt);
    for (int i = 0; i < info->field_count; i++) {
        const char *key = info->fields[i].key, *value = info->fields[i].value;
        size_t first = 0;
        if (!image_size_value(value, &first)) {
            cJSON_DeleteItemFromObjectCaseSensitive(o, key); // a repeated key keeps its last value
            cJSON_AddStringToObject(o, key, value);
            continue;
        }
        char name[300], part[32];
        snprintf(name, sizeof name, "%s-1", key);
        snprintf(part, sizeof part, "%.*s", (int)first, value);
        cJSON_DeleteItemFromObjectCaseSensitive(o, name);
        cJSON_AddStringToObject(o, name, part);
        snprintf(name, sizeof name, "%s-2", key);
        cJSON_DeleteItemFromObjectCaseSensitive(o, name);
        cJSON_AddStringToObject(o, name, value + first + 1);
    }
    return o;
}

int png_info_answer(const char *body, size_t size, size_t max_image_bytes, cJSON **response, const char **field,
                    char *message, size_t cap) {
    *response = NULL;
    *field = "image";
    cJSON *request = cJSON_ParseWithLength(body ? body : "", size);
    const cJSON *image = cJSON_GetObjectItemCaseSensitive(request, "image");
    if (!cJSON_IsObject(request)) {
        *field = "";
        snprintf(message, cap, "the request body must be a JSON object with field 'image'");
    } else if (!cJSON_IsString(image)) {
        snprintf(message, cap, "field 'image' must be a base64 string (a PNG written by lcm.c or A1111)");
    }
    if (!cJSON_IsString(image)) {
        cJSON_Delete(request);
        return 400;
    }
    uint8_t *bytes = NULL;
    size_t len = 0;
    int status = 400;
    char *text = NULL;
    lcm_infotext *info = NULL;
    int width = 0, height = 0;
    if (!serve_base64_decode(image->valuestring, strlen(image->valuestring), max_image_bytes, &bytes, &len)) {
        snprintf(message, cap, "field 'image' is not valid base64 of at most %zu bytes", max_image_bytes);
    } else if (lcm_image_probe(bytes, len, "image", &width, &height) != LCM_OK) {
        snprintf(message, cap, "field %s", lcm_last_error());
    } else if (len >= 8 && !memcmp(bytes, "\x89PNG", 4) &&
               lcm_png_read_parameters(bytes, len, "image", &text) != LCM_OK) {
        snprintf(message, cap, "field %s", lcm_last_error());
    } else if (lcm_infotext_parse(text ? text : "", &info) != LCM_OK) {
        snprintf(message, cap, "field 'image': %s", lcm_last_error());
    } else {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "info", text ? text : "");
        cJSON_AddItemToObject(root, "items", cJSON_CreateObject());
        cJSON_AddItemToObject(root, "parameters", parameters_json(info));
        *response = root;
        status = 200;
    }
    lcm_infotext_free(info);
    free(text);
    free(bytes);
    cJSON_Delete(request);
    return status;
}
