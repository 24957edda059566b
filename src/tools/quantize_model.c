#include "tools/quantize_model.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "io/image_format.h"
#include "io/json_config.h"
#include "io/safetensors_write.h"
#include "io/weights.h"
#include "tools/output_folder.h"
#include "ops/cpu.h"
#include "ops/backend.h"
#include "ops/int8_gemm.h"
#include "ops/int8_layer.h"
#include "ops/layer_quant.h"
#include "ops/ops.h"
#include "pipeline/pipeline.h"

const char *const quantize_default_keep_fp32[] = {
    "conv_in", "conv_out", NULL};

// The VAE layers kept in float32 by default. Measured on tiny-lcm (percentile 99.99, 4 calibration
// samples of 2 steps, int8 kernels; worst PSNR of the three golden cases vs the float32 golden
// images; UNet conv_in/conv_out kept; BENCHMARKS.md "int8 VAE decoder"):
//   decoder all int8                                   38.08 dB
//   kept: post_quant_conv 38.75, decoder.conv_in 39.33, decoder.conv_out 38.21 dB
//   kept: the three (the default below)                40.44 dB
//   kept: the three + decoder.mid_block 40.47, + decoder.up_blocks.3 40.46,
//         + decoder.up_blocks.0 41.39 dB
//   decoder in float32 (UNet int8 only)                44.86 dB
// post_quant_conv and decoder.conv_in see the raw latent (as the UNet's conv_in does) and
// decoder.conv_out writes the pixels; the three are a tiny share of the decoder's work (4 or 3
// channels on one side). decoder.up_blocks.0 pays 1 dB but is about a tenth of a full-size
// decoder's work: quantized.
const char *const quantize_vae_default_keep_fp32[] = {
    "post_quant_conv", "decoder.conv_in", "decoder.conv_out", NULL};

void quantize_model_options_init(quantize_model_options *o) {
    *o = (quantize_model_options){.steps = 4, .guidance = -1, .method = ACTIVATION_RANGE_PERCENTILE, .percentile = 99.99};
}

const char *quantize_model_int8_kernel(const ops_backend *b) {
    if (b->kernels == KERNELS_FAST && b->int8_kernels)
        return int8_kernel_for_cpu(b->int8_kernel) == INT8_KERNEL_ONEDNN ? "oneDNN int8 kernels, VNNI"
               : int8_amx_usable() ? "int8 kernels, AMX where a layer fits, else VNNI"
               : cpu_has_vnni()    ? "int8 kernels, VNNI"
                                   : "int8 kernels, AVX2";
    return "reference kernels: dequantized weights, fake-quantized inputs";
}

bool quantize_model_is_int8(const char *model_dir) {
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/unet/quantization.json", model_dir);
    return stat(path, &sb) == 0;
}

// ---- calibration prompts ----------------------------------------------------------------------

typedef struct prompt_list {
    char **items;
    int count;
} prompt_list;

static void prompt_list_free(prompt_list *p) {
    for (int i = 0; i < p->count; i++) free(p->items[i]);
    free(p->items);
    *p = (prompt_list){0};
}

static lcm_status read_prompts(const char *path, prompt_list *out) {
    *out = (prompt_list){0};
    FILE *fp = fopen(path, "r");
    if (!fp) return lcm_fail(LCM_ERR_IO, "%s: cannot read the calibration prompts: %s", path, strerror(errno));
    char line[4096];
    lcm_status st = LCM_OK;
    while (st == LCM_OK && fgets(line, sizeof line, fp)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ')) line[--n] = 0;
        char *start = line;
        while (*start == ' ' || *start == '\t') start++;
        if (!*start) continue;
        char **grown = realloc(out->items, sizeof *grown * (size_t)(out->count + 1));
        char *copy = strdup(start);
        if (!grown || !copy) {
            free(copy);
            if (grown) out->items = grown;
            st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
            break;
        }
        out->items = grown;
        out->items[out->count++] = copy;
    }
    if (st == LCM_OK && ferror(fp))
        st = lcm_fail(LCM_ERR_IO, "%s: cannot read the calibration prompts: %s", path, strerror(errno));
    fclose(fp);
    if (st == LCM_OK && out->count == 0)
        st = lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: no calibration prompts (the file is empty)", path);
    if (st != LCM_OK) prompt_list_free(out);
    return st;
}

// ---- activation statistics per layer ------------------------------------------------------------

typedef struct layer_stats {
    char *name;
    activation_stats stats;
} layer_stats;

typedef struct calibration {
    const char *scope; // the observer scope whose layers are recorded (NULL: the pipeline's own)
    layer_stats *layers;
    size_t count, capacity;
    size_t last; // the previous hit: consecutive calls often repeat a layer (batch items)
    bool failed;
} calibration;

static layer_stats *calibration_find(const calibration *c, const char *name) {
    if (c->last < c->count && !strcmp(c->layers[c->last].name, name)) return &c->layers[c->last];
    for (size_t i = 0; i < c->count; i++)
        if (!strcmp(c->layers[i].name, name)) return &c->layers[i];
    return NULL;
}

static bool same_scope(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

static void observe(void *user, const char *name, const tensor *input) {
    calibration *c = user;
    if (!same_scope(ops_observer_scope(), c->scope)) return;
    layer_stats *l = calibration_find(c, name);
    if (!l) {
        if (c->count == c->capacity) {
            size_t capacity = c->capacity ? 2 * c->capacity : 256;
            layer_stats *grown = realloc(c->layers, sizeof *grown * capacity);
            if (!grown) {
                c->failed = true;
                return;
            }
            c->layers = grown;
            c->capacity = capacity;
        }
        l = &c->layers[c->count];
        if (!(l->name = strdup(name))) {
            c->failed = true;
            return;
        }
        activation_stats_init(&l->stats);
        c->count++;
    }
    c->last = (size_t)(l - c->layers);
    activation_stats_add(&l->stats, input->data, tensor_numel(input));
}

static void calibration_free(calibration *c) {
    for (size_t i = 0; i < c->count; i++) free(c->layers[i].name);
    free(c->layers);
    *c = (calibration){0};
}

typedef struct progress_state {
    int sample, samples;
    time_t start;
    const quantize_model_options *options;
} progress_state;

static bool interrupted(const quantize_model_options *o) { return o->interrupted && *o->interrupted; }

static int show_progress(void *user, int steps_done, int total_steps, double elapsed) {
    (void)elapsed;
    progress_state *p = user;
    if (interrupted(p->options)) return 1; // the generation stops with LCM_ERR_CANCELLED
    if (p->options->quiet) return 0;
    double done = (p->sample + (double)steps_done / total_steps) / p->samples;
    int width = 30, filled = (int)(done * width + 0.5);
    fprintf(stderr, "\rcalibrating [");
    for (int i = 0; i < width; i++) fputc(i < filled ? '#' : '.', stderr);
    fprintf(stderr, "] %3d%%  sample %d/%d  %lds", (int)(done * 100 + 0.5), p->sample + 1, p->samples,
            (long)(time(NULL) - p->start));
    fflush(stderr);
    return 0;
}

// The control images of a ControlNet calibration, read before the (slow) model load.
typedef struct control_images {
    lcm_image *items;
    int count;
} control_images;

static void control_images_free(control_images *c) {
    for (int i = 0; i < c->count; i++) free(c->items[i].rgb);
    free(c->items);
    *c = (control_images){0};
}

static lcm_status read_control_images(const quantize_model_options *o, control_images *out) {
    *out = (control_images){0};
    if (o->control_image_count < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "%s: calibrating a ControlNet needs at least one control image (--control-image "
                        "FILE: an edge map, normal map... like those it will be used with)",
                        o->controlnet_dir);
    out->items = calloc((size_t)o->control_image_count, sizeof *out->items);
    if (!out->items) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    for (int i = 0; i < o->control_image_count; i++) {
        lcm_image *image = &out->items[out->count];
        lcm_status st = image_read_file(o->control_images[i], &image->rgb, &image->width, &image->height);
        if (st != LCM_OK) {
            control_images_free(out);
            return lcm_fail_context(st, "control image: ");
        }
        out->count++;
    }
    return LCM_OK;
}

// Runs the generations of the calibration with the observer on. `controls` is NULL for the UNet.
static lcm_status calibrate(const quantize_model_options *o, const prompt_list *prompts,
                            const control_images *controls, calibration *c) {
    lcm_pipeline_options popts;
    pipeline_options_init(&popts);
    popts.controlnet = o->controlnet_dir;
    popts.loras = o->loras;
    popts.lora_count = o->lora_count;
    lcm_pipeline *pipeline = NULL;
    LCM_TRY(pipeline_open(o->model_dir, &popts, &pipeline));
    int samples = o->samples ? o->samples : prompts->count;
    progress_state progress = {.samples = samples, .start = time(NULL), .options = o};
    lcm_status st = LCM_OK;
    ops_set_input_observer(observe, c);
    for (int i = 0; i < samples && st == LCM_OK; i++) {
        lcm_request r;
        generate_request_init(&r);
        r.prompt = prompts->items[i % prompts->count];
        r.seed = o->seed + (uint64_t)i;
        r.steps = o->steps;
        if (o->guidance >= 0) r.guidance_scale = o->guidance;
        // the size follows the control image, as in lcm generate without --width/--height
        if (controls) r.control_image = &controls->items[i % controls->count];
        r.progress = show_progress;
        r.progress_user_data = &progress;
        progress.sample = i;
        lcm_result *result = NULL;
        st = generate_images(pipeline, &r, &result);
        generate_result_free(result);
        if (st == LCM_OK && c->failed)
            st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory for the activation statistics");
    }
    ops_set_input_observer(NULL, NULL);
    if (!o->quiet) fprintf(stderr, "\n");
    pipeline_close(pipeline);
    if (st != LCM_OK) lcm_fail_context(st, "calibration: ");
    return st;
}

// ---- writing the quantized weights --------------------------------------------------------------

typedef enum entry_kind {
    ENTRY_FLOAT,        // the stored tensor as float
    ENTRY_WEIGHT_I8,    // q of the tensor
    ENTRY_WEIGHT_SCALE, // per-output-channel scales of the tensor
    ENTRY_INPUT_SCALE,
    ENTRY_INPUT_ZERO_POINT,
} entry_kind;

typedef struct entry_source {
    const char *tensor; // the source tensor (borrowed from the weight set)
    entry_kind kind;
    float value;        // for the input parameters
} entry_source;

typedef struct writer {
    const weight_set *ws;
    entry_source *sources;
    // The last tensor quantized: its I8 values and its scales are written as two entries.
    const char *cached_name;
    int8_t *cached_q;
    float *cached_scales;
    int64_t cached_channels;
    const quantize_model_options *options;
} writer;

static lcm_status quantize_cached(writer *w, const char *name, int64_t numel) {
    if (w->cached_name == name) return LCM_OK;
    const st_tensor *t = weight_set_find(w->ws, name, NULL);
    float *values = NULL;
    LCM_TRY(weight_set_load_f32(w->ws, name, -1, NULL, &values));
    free(w->cached_q);
    free(w->cached_scales);
    w->cached_name = NULL;
    w->cached_channels = t->shape[0];
    w->cached_q = malloc((size_t)(numel ? numel : 1));
    w->cached_scales = malloc(sizeof(float) * (size_t)w->cached_channels);
    if (!w->cached_q || !w->cached_scales) {
        free(values);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory quantizing '%s'", name);
    }
    quantize_weights_s8(values, w->cached_channels, t->numel / w->cached_channels, w->cached_q,
                        w->cached_scales);
    free(values);
    w->cached_name = name;
    return LCM_OK;
}

static lcm_status fill_entry(void *user, size_t index, float *out, int64_t numel) {
    writer *w = user;
    const entry_source *s = &w->sources[index];
    if (interrupted(w->options)) return lcm_fail(LCM_ERR_CANCELLED, "interrupted");
    switch (s->kind) {
    case ENTRY_FLOAT: {
        float *values = NULL;
        LCM_TRY(weight_set_load_f32(w->ws, s->tensor, -1, NULL, &values));
        memcpy(out, values, sizeof(float) * (size_t)numel);
        free(values);
        return LCM_OK;
    }
    case ENTRY_WEIGHT_I8:
        LCM_TRY(quantize_cached(w, s->tensor, numel));
        for (int64_t i = 0; i < numel; i++) out[i] = w->cached_q[i];
        return LCM_OK;
    case ENTRY_WEIGHT_SCALE: {
        const st_tensor *t = weight_set_find(w->ws, s->tensor, NULL);
        LCM_TRY(quantize_cached(w, s->tensor, t->numel));
        memcpy(out, w->cached_scales, sizeof(float) * (size_t)numel);
        return LCM_OK;
    }
    case ENTRY_INPUT_SCALE:
    case ENTRY_INPUT_ZERO_POINT: out[0] = s->value; return LCM_OK;
    }
    return lcm_fail(LCM_ERR_INTERNAL, "bad entry kind");
}

// Whether a layer is kept in float32: named in the list, or below a name in it
// ("controlnet_down_blocks" keeps "controlnet_down_blocks.3").
static bool layer_kept(const char *layer, const char *const *keep) {
    for (; keep && *keep; keep++) {
        size_t n = strlen(*keep);
        if (!strncmp(layer, *keep, n) && (layer[n] == 0 || layer[n] == '.')) return true;
    }
    return false;
}

// "NAME.weight" of a conv/linear (2 or 4 dims) -> "NAME" in prefix; false otherwise.
static bool layer_weight_prefix(const st_tensor *t, char *prefix, size_t size) {
    size_t n = strlen(t->name);
    if ((t->ndim != 2 && t->ndim != 4) || n < 8 || strcmp(t->name + n - 7, ".weight") || n - 7 >= size)
        return false;
    memcpy(prefix, t->name, n - 7);
    prefix[n - 7] = 0;
    return true;
}

typedef struct write_plan {
    st_write_entry *entries;
    entry_source *sources;
    char **names; // owned entry names
    size_t count;
} write_plan;

static void plan_free(write_plan *p) {
    for (size_t i = 0; i < p->count; i++) free(p->names[i]);
    free(p->entries);
    free(p->sources);
    free(p->names);
    *p = (write_plan){0};
}

static lcm_status plan_add(write_plan *p, const char *name, const char *suffix, st_dtype dtype,
                           int ndim, const int64_t *shape, const char *tensor, entry_kind kind,
                           float value) {
    size_t n = p->count + 1;
    st_write_entry *e = realloc(p->entries, sizeof *e * n);
    if (e) p->entries = e;
    entry_source *s = realloc(p->sources, sizeof *s * n);
    if (s) p->sources = s;
    char **names = realloc(p->names, sizeof *names * n);
    if (names) p->names = names;
    char *full = malloc(strlen(name) + strlen(suffix) + 1);
    if (!e || !s || !names || !full) {
        free(full);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    strcpy(full, name);
    strcat(full, suffix);
    p->names[p->count] = full;
    p->entries[p->count] = (st_write_entry){.name = full, .dtype = dtype, .ndim = ndim};
    memcpy(p->entries[p->count].shape, shape, sizeof(int64_t) * (size_t)ndim);
    p->sources[p->count] = (entry_source){.tensor = tensor, .kind = kind, .value = value};
    p->count++;
    return LCM_OK;
}

typedef struct component_report {
    int quantized, kept;
} component_report;

// Writes `out_path` from the weights in `dir` (basename): the layers observed in calibration `c`
// with 8-bit weights and activations, those kept in float32 (`keep`) and those never observed as
// float32, or with `weights_only_rest` the latter in 8-bit weights only. Weight-only compression of
// every conv/linear: `c` NULL.
static lcm_status write_component(const char *dir, const char *basename, const char *out_path,
                                  const calibration *c, bool weights_only_rest, const quantize_model_options *o,
                                  const char *const *keep, component_report *report) {
    weight_set *ws = NULL;
    LCM_TRY(weight_set_open(dir, basename, NULL, &ws));
    write_plan plan = {0};
    lcm_status st = LCM_OK;
    for (size_t i = 0; st == LCM_OK && i < weight_set_count(ws); i++) {
        const st_tensor *t = weight_set_at(ws, i);
        char prefix[512];
        const layer_stats *l = NULL;
        bool quantize = layer_weight_prefix(t, prefix, sizeof prefix) && t->shape[0] > 0;
        if (quantize && c) {
            l = calibration_find(c, prefix);
            if (l && l->stats.count == 0) l = NULL;
            bool kept = layer_kept(prefix, keep);
            if (l && kept) report->kept++;
            quantize = l ? !kept : weights_only_rest && !kept;
            if (!quantize) l = NULL;
        }
        if (!quantize) {
            st = plan_add(&plan, t->name, "", ST_F32, t->ndim, t->shape, t->name, ENTRY_FLOAT, 0);
            continue;
        }
        report->quantized++;
        st = plan_add(&plan, t->name, "", ST_I8, t->ndim, t->shape, t->name, ENTRY_WEIGHT_I8, 0);
        if (st == LCM_OK)
            st = plan_add(&plan, t->name, "_scale", ST_F32, 1, t->shape, t->name, ENTRY_WEIGHT_SCALE, 0);
        if (st == LCM_OK && l) {
            float lo, hi, scale;
            int32_t zero_point;
            activation_stats_range(&l->stats, o->method, o->percentile, &lo, &hi);
            if (o->symmetric_activations) {
                // zero point 128, [-m, m] onto q in [1, 255] (the range is never empty)
                scale = fmaxf(-lo, hi) / 127.0f;
                zero_point = 128;
            } else {
                activation_quant_params_u8(lo, hi, &scale, &zero_point);
            }
            st = plan_add(&plan, prefix, ".input_scale", ST_F32, 1, (int64_t[]){1}, NULL,
                          ENTRY_INPUT_SCALE, scale);
            if (st == LCM_OK)
                st = plan_add(&plan, prefix, ".input_zero_point", ST_F32, 1, (int64_t[]){1}, NULL,
                              ENTRY_INPUT_ZERO_POINT, (float)zero_point);
        }
    }
    writer w = {.ws = ws, .sources = plan.sources, .options = o};
    if (st == LCM_OK) st = st_write(out_path, plan.entries, plan.count, fill_entry, &w, "pt");
    free(w.cached_q);
    free(w.cached_scales);
    plan_free(&plan);
    weight_set_close(ws);
    return st;
}

// What quantization.json says about a quantization run. `c` is NULL for weight-only compression.
typedef struct scheme_facts {
    const char *model;        // the class quantized
    const char *const *keep;  // layers kept in float32
    const calibration *c;
    int samples, prompt_count, control_image_count;
} scheme_facts;

static lcm_status write_scheme(const char *path, const quantize_model_options *o, const scheme_facts *f) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddStringToObject(root, "format", "lcm.c int8");
    cJSON_AddStringToObject(root, "model", f->model);
    cJSON *weights = cJSON_AddObjectToObject(root, "weights");
    cJSON_AddStringToObject(weights, "dtype", "s8");
    cJSON_AddStringToObject(weights, "granularity", "per_output_channel");
    cJSON_AddStringToObject(weights, "scheme", "symmetric");
    cJSON_AddStringToObject(weights, "scale_tensor", "NAME.weight_scale");
    if (f->c) {
        cJSON *acts = cJSON_AddObjectToObject(root, "activations");
        cJSON_AddStringToObject(acts, "dtype", "u8");
        cJSON_AddStringToObject(acts, "granularity", "per_tensor");
        cJSON_AddStringToObject(acts, "scheme", o->symmetric_activations ? "symmetric" : "asymmetric");
        cJSON_AddStringToObject(acts, "scale_tensor", "NAME.input_scale");
        cJSON_AddStringToObject(acts, "zero_point_tensor", "NAME.input_zero_point");
        cJSON_AddStringToObject(acts, "method", o->method == ACTIVATION_RANGE_MINMAX ? "minmax" : "percentile");
        if (o->method == ACTIVATION_RANGE_PERCENTILE) cJSON_AddNumberToObject(acts, "percentile", o->percentile);
        cJSON *cal = cJSON_AddObjectToObject(root, "calibration");
        cJSON_AddNumberToObject(cal, "prompts", f->prompt_count);
        cJSON_AddNumberToObject(cal, "samples", f->samples);
        cJSON_AddNumberToObject(cal, "steps", o->steps);
        cJSON_AddNumberToObject(cal, "seed", (double)o->seed);
        if (o->guidance >= 0) cJSON_AddNumberToObject(cal, "guidance", o->guidance);
        cJSON_AddNumberToObject(cal, "layers_observed", (double)f->c->count);
        if (f->control_image_count) cJSON_AddNumberToObject(cal, "control_images", f->control_image_count);
        if (o->lora_count) cJSON_AddNumberToObject(cal, "loras", o->lora_count);
        cJSON *keep = cJSON_AddArrayToObject(root, "fp32_layers");
        for (const char *const *k = f->keep; *k; k++) cJSON_AddItemToArray(keep, cJSON_CreateString(*k));
    }
    cJSON_AddBoolToObject(root, "weights_only", f->c == NULL);
    cJSON_AddBoolToObject(root, "compressed_weights", o->compress_weights);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    FILE *fp = fopen(path, "w");
    lcm_status st = LCM_OK;
    if (!fp || fputs(text, fp) < 0 || fputc('\n', fp) == EOF)
        st = lcm_fail(LCM_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    if (fp && fclose(fp) != 0 && st == LCM_OK) st = lcm_fail(LCM_ERR_IO, "%s: write failed", path);
    free(text);
    return st;
}

// The checks both modes share, before anything slow runs.
static lcm_status check_common_options(const quantize_model_options *o) {
    if (o->samples < 0)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "--samples %d: expected at least 1", o->samples);
    if (o->steps < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "--steps %d: expected at least 1", o->steps);
    if (o->method == ACTIVATION_RANGE_PERCENTILE && !(o->percentile > 50 && o->percentile <= 100))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "--percentile %g: expected a value in (50, 100]", o->percentile);
    struct stat sb;
    if (stat(o->output_dir, &sb) == 0)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: the output folder already exists", o->output_dir);
    return LCM_OK;
}

static lcm_status check_unet_folder(const char *model_dir) {
    char unet_dir[4096];
    struct stat sb;
    snprintf(unet_dir, sizeof unet_dir, "%s/unet", model_dir);
    if (stat(unet_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: no unet/ folder: not a diffusers pipeline folder", model_dir);
    return LCM_OK;
}

// ---- ControlNet mode ----------------------------------------------------------------------------

// The ControlNet layers kept in float32 by default. Measured on tiny-controlnet with tiny-sd15 +
// LCM-LoRA (percentile 99.99, 3 calibration samples, the two golden cases; worst PSNR of the
// reference and oneDNN int8 paths vs the float32 golden images; BENCHMARKS.md "int8 ControlNet"):
//   everything quantized                                          47.6 dB
//   only one group quantized: conv_in 49.1, controlnet_down_blocks 51.5, down_blocks 55.3,
//     controlnet_mid_block 71.9, mid_block 69.6, controlnet_cond_embedding 70.1,
//     time_embedding 77.3 dB
//   kept: conv_in                                                  50.5 dB
//   kept: conv_in, controlnet_down_blocks, controlnet_mid_block    55.1 dB
//   kept: the default below                                        55.0 dB (54.9-57.5)
// So conv_in (the raw latent, as in the UNet) and the zero convs (controlnet_down_blocks: their
// outputs go straight into the UNet's skip connections, nothing after them absorbs the error) are
// the costly ones; controlnet_mid_block plays the zero convs' role for the mid block and is kept
// with them (cheap here, one 1x1 conv). controlnet_cond_embedding.conv_in was neutral but is kept
// for safety: its input is the control image itself, and a percentile range over a sparse edge map
// (few white pixels) could clip the edges away. All of them are a small share of the work (1x1
// convs, or 3/4 input channels).
const char *const quantize_controlnet_default_keep_fp32[] = {
    "conv_in", "controlnet_cond_embedding.conv_in", "controlnet_down_blocks", "controlnet_mid_block", NULL};

quantized_kind quantize_controlnet_kind(const char *controlnet_dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/quantization.json", controlnet_dir);
    json_config c;
    if (json_config_load(path, NULL, &c) != LCM_OK) {
        error_clear();
        return QUANTIZED_NONE;
    }
    bool weights_only = false;
    if (json_config_bool_or(&c, "weights_only", false, &weights_only) != LCM_OK) error_clear();
    json_config_free(&c);
    return weights_only ? QUANTIZED_WEIGHTS_ONLY : QUANTIZED_INT8;
}

// A ControlNetModel folder (config.json with that _class_name) not quantized yet.
static lcm_status check_controlnet_folder(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: no config.json: not a ControlNet folder", dir);
    json_config c;
    lcm_status st = json_config_load(path, NULL, &c);
    if (st != LCM_OK) return lcm_fail_context(st, "not a ControlNet folder: ");
    const char *cls = NULL;
    st = json_config_string(&c, "_class_name", &cls);
    if (st == LCM_OK && strcmp(cls, "ControlNetModel"))
        st = lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: _class_name is \"%s\": not a ControlNet folder (expected "
                      "ControlNetModel)", path, cls);
    else if (st != LCM_OK)
        st = lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: no _class_name: not a ControlNet folder", path);
    json_config_free(&c);
    LCM_TRY(st);
    snprintf(path, sizeof path, "%s/quantization.json", dir);
    if (stat(path, &sb) == 0)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: the ControlNet is already quantized", path);
    return LCM_OK;
}

static lcm_status quantize_controlnet(const quantize_model_options *o) {
    if (!o->controlnet_dir || !o->output_dir)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "quantize: the ControlNet folder and the output are required");
    if (!o->weights_only && (!o->model_dir || !o->calibration_path))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "quantize --controlnet: the base model (--model) and calibration prompts "
                        "(--calibration) are required, unless --weights-only");
    if (o->compress_weights)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "quantize --controlnet: compress_weights is for a model's text "
                        "encoder and VAE; a ControlNet's weight-only mode is weights_only");
    LCM_TRY(check_controlnet_folder(o->controlnet_dir));
    LCM_TRY(check_common_options(o));
    char staging[3072]; // room for the file names below it in 4096
    LCM_TRY(output_folder_staging_create(o->output_dir, staging, sizeof staging));
    prompt_list prompts = {0};
    control_images controls = {0};
    calibration c = {.scope = "controlnet"};
    lcm_status st = LCM_OK;
    if (!o->weights_only) {
        st = check_unet_folder(o->model_dir);
        if (st == LCM_OK) st = read_prompts(o->calibration_path, &prompts);
        if (st == LCM_OK) st = read_control_images(o, &controls);
        if (st == LCM_OK) st = calibrate(o, &prompts, &controls, &c);
        if (st == LCM_OK && c.count == 0)
            st = lcm_fail(LCM_ERR_INTERNAL, "calibration: no ControlNet layer ran");
    }
    const char *const *keep = o->keep_fp32 ? o->keep_fp32 : quantize_controlnet_default_keep_fp32;
    component_report report = {0};
    char out[4096];
    if (st == LCM_OK) st = output_folder_copy_component(o->controlnet_dir, staging);
    if (st == LCM_OK) {
        snprintf(out, sizeof out, "%s/diffusion_pytorch_model.safetensors", staging);
        st = write_component(o->controlnet_dir, "diffusion_pytorch_model", out, o->weights_only ? NULL : &c, false,
                             o, keep, &report);
    }
    if (st == LCM_OK) {
        snprintf(out, sizeof out, "%s/quantization.json", staging);
        scheme_facts facts = {.model = "ControlNetModel", .keep = keep, .c = o->weights_only ? NULL : &c,
                              .samples = o->samples ? o->samples : prompts.count,
                              .prompt_count = prompts.count, .control_image_count = controls.count};
        st = write_scheme(out, o, &facts);
    }
    st = output_folder_finish(o->output_dir, staging, interrupted(o), st);
    if (st == LCM_OK && !o->quiet) {
        if (o->weights_only)
            fprintf(stderr, "stored %d ControlNet weights in 8 bits (float32 compute)\n", report.quantized);
        else
            fprintf(stderr, "quantized %d ControlNet layers to int8 (%d kept in float32)\n", report.quantized,
                    report.kept);
    }
    control_images_free(&controls);
    calibration_free(&c);
    prompt_list_free(&prompts);
    return st;
}

// ---- UNet mode ----------------------------------------------------------------------------------

lcm_status quantize_model(const quantize_model_options *o) {
    if (o->controlnet_dir) return quantize_controlnet(o);
    if (o->weights_only)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "quantize: weight-only mode is for a ControlNet (--controlnet); "
                        "a model's UNet is quantized with activations (--compress-weights adds the text "
                        "encoder and VAE in 8-bit weights)");
    if (!o->model_dir || !o->calibration_path || !o->output_dir)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "quantize: model, calibration file and output are required");
    LCM_TRY(check_unet_folder(o->model_dir));
    if (quantize_model_is_int8(o->model_dir))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s/unet/quantization.json: the model is already quantized",
                        o->model_dir);
    LCM_TRY(check_common_options(o));
    char unet_dir[4096];
    snprintf(unet_dir, sizeof unet_dir, "%s/unet", o->model_dir);
    prompt_list prompts;
    LCM_TRY(read_prompts(o->calibration_path, &prompts));
    char staging[3072]; // room for the file names below it in 4096
    lcm_status st = output_folder_staging_create(o->output_dir, staging, sizeof staging);
    if (st != LCM_OK) {
        prompt_list_free(&prompts);
        return st;
    }

    calibration c = {0};
    st = calibrate(o, &prompts, NULL, &c);
    bool vae_rewritten = o->vae || o->compress_weights;
    const char *rewritten[] = {"unet", vae_rewritten ? "vae" : NULL, o->compress_weights ? "text_encoder" : NULL, NULL};
    if (st == LCM_OK) st = output_folder_copy(o->model_dir, staging, rewritten);
    component_report unet = {0}, text = {0}, vae = {0};
    const char *const *keep = o->keep_fp32 ? o->keep_fp32 : quantize_default_keep_fp32;
    const char *const *vae_keep = o->keep_fp32 ? o->keep_fp32 : quantize_vae_default_keep_fp32;
    char dir[4096], out[4096];
    if (st == LCM_OK) {
        snprintf(out, sizeof out, "%s/unet/diffusion_pytorch_model.safetensors", staging);
        st = write_component(unet_dir, "diffusion_pytorch_model", out, &c, false, o, keep, &unet);
    }
    if (st == LCM_OK && o->compress_weights) {
        snprintf(dir, sizeof dir, "%s/text_encoder", o->model_dir);
        snprintf(out, sizeof out, "%s/text_encoder/model.safetensors", staging);
        st = write_component(dir, "model", out, NULL, false, o, keep, &text);
    }
    if (st == LCM_OK && vae_rewritten) {
        // --vae: the decoder's layers were observed (their names are the VAE's own); the encoder,
        // never run, stays float32 or (--compress-weights) 8-bit weights only.
        snprintf(dir, sizeof dir, "%s/vae", o->model_dir);
        snprintf(out, sizeof out, "%s/vae/diffusion_pytorch_model.safetensors", staging);
        st = write_component(dir, "diffusion_pytorch_model", out, o->vae ? &c : NULL, o->compress_weights, o,
                             vae_keep, &vae);
        if (st == LCM_OK && o->vae && vae.quantized + vae.kept == 0)
            st = lcm_fail(LCM_ERR_INTERNAL, "--vae: calibration observed no VAE decoder layer");
    }
    int samples = o->samples ? o->samples : prompts.count;
    if (st == LCM_OK) {
        snprintf(out, sizeof out, "%s/unet/quantization.json", staging);
        scheme_facts facts = {.model = "UNet2DConditionModel", .keep = keep, .c = &c, .samples = samples,
                              .prompt_count = prompts.count};
        st = write_scheme(out, o, &facts);
    }
    if (st == LCM_OK && o->vae) {
        snprintf(out, sizeof out, "%s/vae/quantization.json", staging);
        scheme_facts facts = {.model = "AutoencoderKL", .keep = vae_keep, .c = &c, .samples = samples,
                              .prompt_count = prompts.count};
        st = write_scheme(out, o, &facts);
    }
    st = output_folder_finish(o->output_dir, staging, interrupted(o), st);
    if (st == LCM_OK && !o->quiet) {
        fprintf(stderr, "quantized %d UNet layers to int8 (%d kept in float32)", unet.quantized, unet.kept);
        if (o->vae) fprintf(stderr, "; %d VAE decoder layers (%d kept in float32)", vae.quantized, vae.kept);
        if (o->compress_weights)
            fprintf(stderr, "; 8-bit weights: %d text encoder tensors%s", text.quantized,
                    o->vae ? ", the VAE encoder's" : "");
        if (o->compress_weights && !o->vae) fprintf(stderr, ", %d VAE tensors", vae.quantized);
        fprintf(stderr, "\n");
    }
    calibration_free(&c);
    prompt_list_free(&prompts);
    return st;
}
