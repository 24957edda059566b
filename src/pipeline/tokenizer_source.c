#include "pipeline/tokenizer_source.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/hub.h"

// The tokenizer files a single file carries; false when it has no vocab.json/merges.txt.
static bool open_embedded(const checkpoint *ck, clip_tokenizer **out, lcm_status *status) {
    static const char *const names[] = {"vocab.json", "merges.txt", "special_tokens_map.json",
                                        "tokenizer_config.json"};
    char labels[4][PATH_MAX + 64];
    clip_tokenizer_text files[4];
    for (int i = 0; i < 4; i++) {
        char key[128];
        snprintf(key, sizeof key, CHECKPOINT_TOKENIZER_KEY "%s", names[i]);
        snprintf(labels[i], sizeof labels[i], "%s: __metadata__[\"%s\"]", checkpoint_path(ck), key);
        const char *text = checkpoint_metadata(ck, key);
        files[i] = (clip_tokenizer_text){labels[i], text, text ? strlen(text) : 0};
    }
    if (!files[0].text || !files[1].text) return false;
    clip_tokenizer_texts texts = {
        .vocab = &files[0],
        .merges = &files[1],
        .special_tokens_map = files[2].text ? &files[2] : NULL,
        .tokenizer_config = files[3].text ? &files[3] : NULL,
    };
    *status = clip_tokenizer_open_texts(&texts, out);
    return true;
}

static lcm_status open_folder(const char *dir, const char *what, clip_tokenizer **out) {
    lcm_status st = clip_tokenizer_open(dir, out);
    return st == LCM_OK ? LCM_OK : lcm_fail_context(st, "%s: ", what);
}

lcm_status pipeline_open_tokenizer(const model_folder *model, const char *folder_option,
                                   clip_tokenizer **out) {
    *out = NULL;
    if (folder_option && *folder_option) return open_folder(folder_option, "tokenizer folder", out);
    if (!model->checkpoint) {
        char dir[PATH_MAX];
        LCM_TRY(model_folder_component_dir(model, "tokenizer", dir, sizeof dir));
        return clip_tokenizer_open(dir, out);
    }
    lcm_status st = LCM_OK;
    if (open_embedded(model->checkpoint, out, &st)) return st;
    const char *env = getenv("LCM_TOKENIZER");
    if (env && *env) return open_folder(env, "$LCM_TOKENIZER", out);

    char *snapshot = NULL;
    st = hub_pull_selection(HUB_CLIP_TOKENIZER_REPO, NULL, HUB_SELECT_TOKENIZER, &snapshot);
    if (st == LCM_OK) {
        st = open_folder(snapshot, HUB_CLIP_TOKENIZER_REPO, out);
        free(snapshot);
        return st;
    }
    char why[1024];
    snprintf(why, sizeof why, "%s", error_last_message());
    return lcm_fail(LCM_ERR_IO,
                    "%s: this checkpoint carries no tokenizer and none was found. Give one of: "
                    "`--tokenizer DIR` (lcm_pipeline_options.tokenizer), a folder with vocab.json and "
                    "merges.txt; the environment variable LCM_TOKENIZER=DIR; or the Hugging Face "
                    "cache of %s (`lcm generate` downloads its tokenizer files when online). The "
                    "cache route failed: %s",
                    checkpoint_path(model->checkpoint), HUB_CLIP_TOKENIZER_REPO, why);
}
