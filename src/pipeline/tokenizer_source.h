// Where a pipeline's CLIP tokenizer comes from, first match wins:
//   1. the folder the caller names (lcm_pipeline_options.tokenizer, `lcm generate --tokenizer`);
//   2. a diffusers folder's own tokenizer/;
//   3. a single-file checkpoint's own files (lcm.tokenizer/* in __metadata__, from `lcm convert`);
//   4. the folder $LCM_TOKENIZER names;
//   5. the Hugging Face cache of openai/clip-vit-large-patch14 (every SD1.x model uses its
//      tokenizer); online and not HF_HUB_OFFLINE, its four small tokenizer files are downloaded;
//   6. otherwise an error telling the user these ways.
// Single files from other tools (A1111, Civitai) carry no tokenizer, hence 4-6.
#ifndef LCM_PIPELINE_TOKENIZER_SOURCE_H
#define LCM_PIPELINE_TOKENIZER_SOURCE_H

#include "io/model_folder.h"
#include "text/clip_tokenizer.h"

// `folder_option` may be NULL. The caller owns *out (clip_tokenizer_close).
lcm_status pipeline_open_tokenizer(const model_folder *model, const char *folder_option,
                                   clip_tokenizer **out);

#endif
