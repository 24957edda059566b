// `lcm info --model DIR [--variant fp16] [--json]`: what a model folder holds, without loading any
// network (lcm_model_describe; src/tools/model_info.c builds the description).
//
// The description is a JSON document; the human-readable text is a rendering of it, so `--json`
// and the text can never disagree.
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "app/args.h"
#include "app/commands.h"
#include "lcm.h"

// ---- rendering as text -------------------------------------------------------------------------

static void print_value(const cJSON *v) {
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == (double)(int64_t)d && d > -1e15 && d < 1e15)
            printf("%lld", (long long)d);
        else
            printf("%.9g", d);
    } else if (cJSON_IsString(v)) {
        printf("%s", v->valuestring);
    } else if (cJSON_IsBool(v)) {
        printf("%s", cJSON_IsTrue(v) ? "true" : "false");
    } else if (cJSON_IsArray(v)) {
        printf("[");
        const cJSON *item;
        bool first = true;
        cJSON_ArrayForEach(item, v) {
            printf(first ? "" : ", ");
            print_value(item);
            first = false;
        }
        printf("]");
    } else {
        printf("none");
    }
}

// 1234567 -> "1.23M"
static void print_short_count(double n) {
    static const char *const units[] = {"", "K", "M", "B"};
    int u = 0;
    while (n >= 1000 && u < 3) {
        n /= 1000;
        u++;
    }
    printf(u ? "%.2f%s" : "%.0f%s", n, units[u]);
}

static void print_text(const cJSON *doc) {
    const cJSON *pipeline = cJSON_GetObjectItem(doc, "pipeline");
    printf("folder: %s\n", cJSON_GetObjectItem(doc, "folder")->valuestring);
    printf("cpu: %s (%s)\n", cJSON_GetObjectItem(doc, "cpu")->valuestring,
           cJSON_GetObjectItem(doc, "cpu_features")->valuestring);
    printf("kernels: %s, cached in %s\n", cJSON_GetObjectItem(doc, "kernel_choice")->valuestring,
           cJSON_GetObjectItem(doc, "kernel_cache")->valuestring);
    if (cJSON_IsString(pipeline)) {
        const cJSON *version = cJSON_GetObjectItem(doc, "diffusers_version");
        printf("pipeline: %s", pipeline->valuestring);
        if (cJSON_IsString(version)) printf(" (diffusers %s)", version->valuestring);
        printf("\n");
    } else {
        printf("pipeline: none (single-model folder)\n");
    }
    const cJSON *variant = cJSON_GetObjectItem(doc, "variant");
    if (cJSON_IsString(variant))
        printf("variant: %s (components without a .%s file use the plain one)\n",
               variant->valuestring, variant->valuestring);

    const cJSON *component;
    cJSON_ArrayForEach(component, cJSON_GetObjectItem(doc, "components")) {
        const cJSON *cls = cJSON_GetObjectItem(component, "class");
        const cJSON *library = cJSON_GetObjectItem(component, "library");
        printf("\n%s: %s", cJSON_GetObjectItem(component, "name")->valuestring,
               cJSON_IsString(cls) ? cls->valuestring : "(no _class_name)");
        if (cJSON_IsString(library)) printf(" (%s)", library->valuestring);
        printf("\n");
        const cJSON *field;
        cJSON_ArrayForEach(field, cJSON_GetObjectItem(component, "config")) {
            printf("  %s: ", field->string);
            print_value(field);
            printf("\n");
        }
        const cJSON *weights = cJSON_GetObjectItem(component, "weights");
        if (!weights) continue;
        printf("  weights: %s\n", cJSON_GetObjectItem(weights, "file")->valuestring);
        const cJSON *dtypes = cJSON_GetObjectItem(weights, "dtypes");
        printf("  dtype%s: ", cJSON_GetArraySize(dtypes) > 1 ? "s" : "");
        const cJSON *d;
        bool first = true;
        cJSON_ArrayForEach(d, dtypes) {
            printf("%s%s", first ? "" : ", ", d->string);
            if (cJSON_GetArraySize(dtypes) > 1) printf(" (%.0f tensors)", d->valuedouble);
            first = false;
        }
        printf("\n  tensors: %.0f\n", cJSON_GetObjectItem(weights, "tensors")->valuedouble);
        double parameters = cJSON_GetObjectItem(weights, "parameters")->valuedouble;
        printf("  parameters: %.0f (", parameters);
        print_short_count(parameters);
        printf(")\n");
    }
    const cJSON *unused = cJSON_GetObjectItem(doc, "absent_components");
    if (cJSON_GetArraySize(unused) > 0) {
        printf("\nnot included: ");
        const cJSON *name;
        bool first = true;
        cJSON_ArrayForEach(name, unused) {
            printf("%s%s", first ? "" : ", ", name->valuestring);
            first = false;
        }
        printf("\n");
    }
}

// ---- command -----------------------------------------------------------------------------------

int cmd_info(int argc, char **argv) {
    const char *model = NULL, *variant = NULL;
    bool json = false;
    const arg_spec specs[] = {
        {"model", ARG_STRING, &model, "model folder (diffusers layout, or config.json + weights)",
         false},
        {"variant", ARG_STRING, &variant,
         "weights variant, e.g. fp16 (falls back to the plain file)", false},
        {"json", ARG_FLAG, &json, "print the description as JSON", false},
    };
    const char *positional[1];
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], positional, 1,
                        &npositional, "lcm info --model DIR [--variant fp16] [--json]");
    if (rc) return rc == 1 ? 0 : 2;
    if (!model && npositional == 1) model = positional[0];
    if (!model) {
        fprintf(stderr, "lcm info: --model DIR is required (see 'lcm info --help')\n");
        return 2;
    }

    // A hub id is looked up in the Hugging Face cache only: info never downloads (lcm pull does).
    char *resolved = NULL;
    lcm_hub_options hub;
    lcm_hub_options_init(&hub);
    hub.offline = 1;
    lcm_status st = lcm_is_hub_id(model) ? lcm_model_resolve(model, &hub, &resolved) : LCM_OK;
    char *description = NULL;
    if (st == LCM_OK) st = lcm_model_describe(resolved ? resolved : model, variant, &description);
    free(resolved);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm info: %s\n", lcm_last_error());
        // A broken or unsupported model folder is bad input; running out of memory is not.
        return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2;
    }
    if (json) {
        printf("%s\n", description);
        free(description);
        return 0;
    }
    cJSON *doc = cJSON_Parse(description);
    free(description);
    if (!doc) {
        fprintf(stderr, "lcm info: out of memory reading the description\n");
        return 1;
    }
    print_text(doc);
    cJSON_Delete(doc);
    return rc;
}
