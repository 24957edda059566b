// LoRA adapters, fused into the model weights as they are read.
//
// An adapter holds, for some linear and conv layers of the UNet and the text encoder, a low-rank
// update: `down` [rank, in (, kh, kw)], `up` [out, rank (, 1, 1)] and optionally a scalar `alpha`.
// Fusing it at scale s changes the layer's weight W [out, in (, kh, kw)] to
//
//     W' = W + s * ((alpha / rank) * up) @ down.flatten(1)        (alpha absent: alpha / rank = 1)
//
// exactly as diffusers' `pipe.fuse_lora(lora_scale=s)`; biases are untouched. Several adapters add.
//
// Key formats accepted (one file may mix them):
//   kohya      lora_unet_{module, '.' -> '_'}.lora_down.weight / .lora_up.weight / .alpha
//              lora_te_{module, '.' -> '_'}...  for the text encoder (latent-consistency/lcm-lora-*)
//   diffusers  unet.{module}.lora.down.weight / .lora.up.weight
//              text_encoder.{module}.lora_linear_layer.down.weight / .up.weight
//   PEFT       [base_model.model.][unet.|text_encoder.]{module}.lora_A.weight / .lora_B.weight
//   diffusers' attention-processor format (before 0.21):
//              unet.{attention}.processor.to_{q,k,v,out}_lora.down.weight / .up.weight
//              text_encoder.{attention}.to_{q,k,v,out}_lora.down.weight  (-> q/k/v/out_proj)
// and a `{stem}.alpha` beside any of them. Dotted keys without a component prefix belong to the
// UNet, or to the text encoder when the module starts with "text_model.".
//
// Matching is driven by the weights the models actually read: when a loader reads `NAME.weight`,
// a dotted adapter module matches when it equals NAME, a kohya module when it equals NAME with
// every '.' turned into '_'. A kohya module that would match two different weights is an error
// (ambiguous), as is a module that matches no weight at all once every component is loaded
// (unless lenient: then a warning on stderr) — a silently ignored adapter is the failure users
// complain about most.
#ifndef LCM_ADAPT_LORA_H
#define LCM_ADAPT_LORA_H

#include <stdbool.h>

#include "io/weights.h"
#include "lcm.h"

typedef struct lora_set lora_set;

// Opens and validates every adapter file (keys, shapes, ranks, alphas; no model needed yet).
// `loras` is borrowed for the call only. The caller owns *out (lora_set_free).
lcm_status lora_set_open(const lcm_lora *loras, int count, bool lenient, lora_set **out);

void lora_set_free(lora_set *set);

// Attaches the set's updates for `component` ("unet" or "text_encoder"; anything else gets none)
// to weights just opened, before anything is read from them. `set` must outlive every load from
// `weights`.
lcm_status lora_set_attach(lora_set *set, const char *component, weight_set *weights);

// Called once every component has been loaded: fails (LCM_ERR_FORMAT, naming the file and some of
// the keys) when an adapter module matched no weight, or warns on stderr when lenient; then
// writes the report and releases the adapter files. Attaching afterwards is an error.
lcm_status lora_set_finish(lora_set *set);

// What was applied, per adapter. Valid after lora_set_finish.
typedef struct lora_stats {
    int modules;              // modules of the file (down/up pairs)
    int applied_modules;      // of those, how many matched a model weight
    int applied_tensors;      // down + up (+ alpha) tensors of the applied modules
    int unet_modules;         // applied modules in the UNet
    int text_encoder_modules; // applied modules in the text encoder
    int unmatched_keys;       // keys that matched nothing (lenient mode) or were not LoRA keys
} lora_stats;

int lora_set_count(const lora_set *set);
void lora_set_stats(const lora_set *set, int index, lora_stats *out);

// One line per adapter: "FILE (scale S): N tensors applied to M modules (unet U, text_encoder T)".
// Owned by the set; "" before lora_set_finish.
const char *lora_set_report(const lora_set *set);

#endif
