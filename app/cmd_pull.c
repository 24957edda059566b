// lcm pull: download a model from the Hugging Face hub into the shared cache (what `lcm generate
// --model ID` does on first use), printing the snapshot folder on stdout.
#include <stdio.h>
#include <stdlib.h>

#include "app/args.h"
#include "app/commands.h"
#include "app/download_progress.h"
#include "lcm.h"

int cmd_pull(int argc, char **argv) {
    const char *revision = NULL, *variant = NULL;
    bool quiet = false;
    const arg_spec specs[] = {
        {"revision", ARG_STRING, &revision, "branch, tag or commit (default: main, or ID@REVISION)", false},
        {"variant", ARG_STRING, &variant, "weight variant, e.g. fp16 (falls back to the plain files)", false},
        {"quiet", ARG_FLAG, &quiet, "no notice or progress bar", false},
    };
    const char *positional[1];
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], positional, 1, &npositional,
                        "lcm pull ORG/NAME[@REVISION] [--revision R] [--variant fp16]\n"
                        "Environment: HF_TOKEN (gated/private models), HF_ENDPOINT, HF_HUB_CACHE or "
                        "HF_HOME, HF_HUB_OFFLINE=1");
    if (rc) return rc == 1 ? 0 : 2;
    if (npositional != 1) {
        fprintf(stderr, "lcm pull: give one model id, e.g. lcm pull SimianLuo/LCM_Dreamshaper_v7\n");
        return 2;
    }
    lcm_hub_options options;
    lcm_hub_options_init(&options);
    options.revision = revision;
    options.variant = variant;
    download_progress progress;
    download_progress_attach(&progress, quiet, &options);
    char *snapshot = NULL;
    lcm_status st = lcm_hub_pull(positional[0], &options, &snapshot);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm pull: %s\n", lcm_last_error());
        return st == LCM_ERR_INVALID_ARGUMENT || st == LCM_ERR_UNSUPPORTED ? 2 : 1;
    }
    printf("%s\n", snapshot);
    free(snapshot);
    return 0;
}
