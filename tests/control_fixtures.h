// The fixtures of the reference ControlNet workflow (photo -> NormalBae normal map -> ControlNet ->
// image), discovered under $LCM_FIXTURES for the CLI and server tests: an SD1.5 folder
// (StableDiffusionPipeline) with a ControlNetModel folder that fits its UNet, the LCM-LoRA its own
// golden cases fuse (from their `note`), the NormalBae weights (every .safetensors / .pt in
// normalbae/) and the NormalBae golden's input photo.
#ifndef LCM_TESTS_CONTROL_FIXTURES_H
#define LCM_TESTS_CONTROL_FIXTURES_H

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "io/json_config.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "models/controlnet.h"
#include "testutil.h"

typedef struct control_fixtures {
    char model[1024];      // SD1.5 folder
    char controlnet[1024]; // ControlNetModel folder fitting the model's UNet
    char lora[1600];       // "FILE:SCALE", "" when the goldens fuse none
    char weights[4][1200]; // NormalBae weights files
    int weights_count;
    char photo[1200]; // an ordinary RGB photo
} control_fixtures;

// The LoRA of the model's goldens: "... load_lora_weights(DIR) ... fuse_lora(lora_scale=S)".
static void control_lora(const char *model_dir, char *spec, size_t size) {
    spec[0] = '\0';
    char golden_dir[1100];
    test_path(golden_dir, sizeof golden_dir, "%s/golden", model_dir);
    char **names;
    int n = test_list_files(golden_dir, "pipeline_", ".safetensors", &names);
    for (int i = 0; i < n && !spec[0]; i++) {
        char path[1400];
        test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
        st_file *f;
        if (st_open(path, &f) != LCM_OK) continue;
        cJSON *info = golden_info(f);
        const cJSON *note = cJSON_GetObjectItemCaseSensitive(info, "note");
        const char *a = cJSON_IsString(note) ? strstr(note->valuestring, "load_lora_weights(") : NULL;
        const char *b = a ? strchr(a, ')') : NULL;
        if (a && b) {
            a += strlen("load_lora_weights(");
            char dir[1200];
            test_path(dir, sizeof dir, "%s/%.*s", model_dir, (int)(b - a), a);
            const char *s = strstr(note->valuestring, "fuse_lora(lora_scale=");
            double scale = s ? strtod(s + strlen("fuse_lora(lora_scale="), NULL) : 1.0;
            char **files;
            int m = test_list_files(dir, "", ".safetensors", &files);
            if (m >= 1) test_path(spec, size, "%s/%s:%.9g", dir, files[0], scale);
            test_free_list(files, m);
        }
        cJSON_Delete(info);
        st_close(f);
    }
    test_free_list(names, n);
}

// Fills *c; false (after saying what is missing) when the fixtures lack a piece.
static bool control_fixtures_find(const char *root, control_fixtures *c) {
    memset(c, 0, sizeof *c);
    static char sd[8][1024], cn[8][1024];
    int sd_count = 0, cn_count = 0;
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char cls[128];
        char *dir = sd_count < 8 ? sd[sd_count] : cn[cn_count < 8 ? cn_count : 7];
        test_path(dir, 1024, "%s/%s", root, e->d_name);
        golden_folder_class(dir, cls, sizeof cls);
        if (!strcmp(cls, "StableDiffusionPipeline") && sd_count < 8) sd_count++;
        if (!strcmp(cls, "ControlNetModel") && cn_count < 8) test_path(cn[cn_count++], 1024, "%s", dir);
    }
    if (d) closedir(d);
    for (int i = 0; i < cn_count && !c->model[0]; i++)
        for (int j = 0; j < sd_count && !c->model[0]; j++)
            if (golden_controlnet_fits(cn[i], sd[j])) {
                test_path(c->model, sizeof c->model, "%s", sd[j]);
                test_path(c->controlnet, sizeof c->controlnet, "%s", cn[i]);
                control_lora(sd[j], c->lora, sizeof c->lora);
            }
    char nb[1100];
    test_path(nb, sizeof nb, "%s/normalbae", root);
    const char *suffixes[2] = {".safetensors", ".pt"};
    for (int s = 0; s < 2; s++) {
        char **names;
        int n = test_list_files(nb, "", suffixes[s], &names);
        for (int i = 0; i < n && c->weights_count < 4; i++)
            test_path(c->weights[c->weights_count++], sizeof c->weights[0], "%s/%s", nb, names[i]);
        test_free_list(names, n);
    }
    test_path(c->photo, sizeof c->photo, "%s/normalbae/golden/input.png", root);
    FILE *f = fopen(c->photo, "rb");
    if (f) fclose(f);
    CHECK(c->model[0], "no SD1.5 folder with a fitting ControlNet under %s", root);
    CHECK(c->weights_count > 0, "no NormalBae weights in %s", nb);
    CHECK(f != NULL, "no NormalBae photo %s", c->photo);
    return c->model[0] && c->weights_count > 0 && f;
}

#endif
