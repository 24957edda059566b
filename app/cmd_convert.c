// lcm convert: a diffusers pipeline folder -> one .safetensors checkpoint in the original Stable
// Diffusion layout (what A1111/ComfyUI load), configs included so lcm.c loads it back exactly.
#include <stdio.h>

#include "app/args.h"
#include "app/commands.h"
#include "lcm.h"

int cmd_convert(int argc, char **argv) {
    const char *model = NULL, *output = NULL;
    const arg_spec specs[] = {
        {"model", ARG_STRING, &model, "diffusers pipeline folder to convert", false},
        {"output", ARG_STRING, &output, "the .safetensors file to write", false},
    };
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], NULL, 0, &npositional,
                        "lcm convert --model DIR --output FILE.safetensors");
    if (rc) return rc == 1 ? 0 : 2;
    if (!model || !output) {
        fprintf(stderr, "lcm convert: --model and --output are required\n");
        return 2;
    }
    lcm_status st = lcm_convert_to_single_file(model, output);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm convert: %s\n", lcm_last_error());
        return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2;
    }
    fprintf(stderr, "wrote %s\n", output);
    return 0;
}
