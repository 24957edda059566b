// NormalBae against the controlnet_aux golden: every intermediate the reference recorded (encoder
// features, decoder stages, MLP inputs/outputs, the four predictions) from the golden's own network
// input, with the weights loaded from BOTH the safetensors file and the torch.save checkpoint. The
// architecture reader is also run over the REAL B5 state_dict's shapes (real_model_keys.json) and
// must reproduce the channel/repeat numbers that config.json's real multipliers give.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "io/json_config.h"
#include "models/normalbae.h"
#include "preprocess/cv_resize.h"
#include "preprocess/normal_detector.h"
#include "testutil.h"

typedef struct trace_ctx {
    const st_file *golden;
    int compared;
} trace_ctx;

// Tolerances: the README's fp32-vs-fp64 table puts the reference's own fp32 noise at ~1e-4 of each
// stage's scale, so intermediates get 1e-4 + 2e-4 * max|ref| (BatchNorm is folded here, not in the
// reference). The normalised predictions divide by |(x, y, z)|, which amplifies that noise where
// the norm is small (fp32 vs fp64 differ by up to 5.5e-4 on out_res4): they get the README's upper
// suggestion, abs 1e-3.
static void compare_trace(void *ctx, const char *name, const tensor *t) {
    trace_ctx *c = ctx;
    if (!strncmp(name, "out.", 4)) golden_compare(c->golden, name, t, 1e-3, 0, true);
    else golden_compare(c->golden, name, t, 1e-4, 2e-4, true);
    c->compared++;
}

static void run_network(const char *weights_path, const st_file *golden) {
    weight_set *ws = NULL;
    CHECK_OK(weight_set_open_file(weights_path, &ws));
    normalbae *net = NULL;
    if (ws) CHECK_OK(normalbae_load(test_backend_for(LCM_PRECISION_FP32), ws, &net));
    weight_set_close(ws);
    if (!net) return;
    const st_tensor *in = st_find(golden, "pre.normalized");
    CHECK(in && in->ndim == 4, "golden has pre.normalized [1,3,H,W]");
    if (in) {
        int64_t n = 0;
        float *data = golden_f32(golden, "pre.normalized", &n);
        tensor *x = tensor_from(4, in->shape, data);
        free(data);
        trace_ctx ctx = {golden, 0};
        fprintf(stderr, "-- weights from %s\n", weights_path);
        tensor *out = normalbae_forward(net, x, compare_trace, &ctx);
        CHECK(out != NULL, "normalbae_forward: %s", lcm_last_error());
        CHECK(ctx.compared >= 20, "%d traced stages compared with the golden", ctx.compared);
        if (out) {
            // out.normal_xyz = channels 0..2 of the full-resolution prediction.
            int64_t shape[4] = {out->shape[0], 3, out->shape[2], out->shape[3]};
            tensor *xyz = tensor_new(4, shape);
            if (xyz) {
                memcpy(xyz->data, out->data, sizeof(float) * (size_t)tensor_numel(xyz));
                golden_compare(golden, "out.normal_xyz", xyz, 1e-3, 0, true); // normalised: see compare_trace
            }
            tensor_free(xyz);
        }
        tensor_free(out);
        tensor_free(x);
    }
    normalbae_free(net);
}

// ---- pre- and post-processing ------------------------------------------------------------------

// A stored uint8 HWC image: data pointer and its size. Exits the check (false) when absent.
static const uint8_t *golden_u8(const st_file *g, const char *name, int *h, int *w) {
    const st_tensor *t = st_find(g, name);
    CHECK(t && t->dtype == ST_U8 && t->ndim == 3 && t->shape[2] == 3, "golden %s is u8 [H, W, 3]",
          name);
    if (!t || t->dtype != ST_U8 || t->ndim != 3) return NULL;
    *h = (int)t->shape[0];
    *w = (int)t->shape[1];
    return t->data;
}

// uint8 images within `tol` levels everywhere; prints the max difference and how many differ.
static void compare_u8(const char *what, const uint8_t *got, int gh, int gw, const st_file *g,
                       const char *name, int tol) {
    int h = 0, w = 0;
    const uint8_t *want = golden_u8(g, name, &h, &w);
    if (!want || !got) {
        CHECK(false, "%s: nothing to compare", what);
        return;
    }
    if (gh != h || gw != w) {
        CHECK(false, "%s: %dx%d, golden %s is %dx%d", what, gw, gh, name, w, h);
        return;
    }
    size_t n = (size_t)h * w * 3, differ = 0;
    int max = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got[i] - (int)want[i]);
        differ += d != 0;
        if (d > max) max = d;
    }
    fprintf(stderr, "%s vs %s: max |diff| %d, %zu of %zu values differ\n", what, name, max, differ, n);
    CHECK(max <= tol, "%s: max |diff| %d > %d", what, max, tol);
}

static void check_preprocessing(const st_file *g, const cJSON *info, const normalbae *net) {
    int detect = (int)golden_number(info, "detect_resolution");
    int image_res = (int)golden_number(info, "image_resolution");
    int h, w, rh, rw;
    const uint8_t *input = golden_u8(g, "input.rgb_u8", &h, &w);
    if (!input) return;
    uint8_t *rgb = NULL, *resized = NULL;
    CHECK_OK(hwc3_u8(input, h, w, 3, &rgb));
    compare_u8("hwc3", rgb, h, w, g, "pre.hwc3", 0);
    // Step 2 from the golden's own HWC3 output, so each step is checked on its own.
    int hh, hw;
    const uint8_t *hwc3 = golden_u8(g, "pre.hwc3", &hh, &hw);
    CHECK_OK(detector_resize_image(hwc3, hh, hw, detect, &resized, &rh, &rw));
    compare_u8("resize_image (detect)", resized, rh, rw, g, "pre.resized_u8", 1);
    free(resized);
    resized = NULL;
    // The other interpolation branch, on the second image.
    int eh, ew;
    const uint8_t *extra = golden_u8(g, "extra.pre.input_u8", &eh, &ew);
    if (extra) {
        CHECK_OK(detector_resize_image(extra, eh, ew, detect, &resized, &rh, &rw));
        compare_u8("resize_image (extra)", resized, rh, rw, g, "extra.pre.resized_u8", 1);
        free(resized);
        resized = NULL;
    }
    // Step 3 from the golden resized image.
    const uint8_t *gr = golden_u8(g, "pre.resized_u8", &rh, &rw);
    tensor *scaled = NULL, *x = gr ? normal_detector_input(gr, rh, rw, &scaled) : NULL;
    golden_compare(g, "pre.scaled_chw", scaled, 1e-7, 0, true);
    golden_compare(g, "pre.normalized", x, 1e-6, 0, true);
    tensor_free(scaled);
    tensor_free(x);
    // Step 5 from the golden network output: exact, then from ours: within one level.
    const st_tensor *xyz = st_find(g, "out.normal_xyz");
    if (xyz && xyz->ndim == 4) {
        int64_t n;
        float *d = golden_f32(g, "out.normal_xyz", &n);
        tensor *t = tensor_from(4, xyz->shape, d);
        free(d);
        uint8_t *u8 = NULL;
        tensor *n01 = NULL;
        CHECK_OK(normal_detector_to_u8(t, &u8, &n01));
        golden_compare(g, "post.normal01", n01, 0, 0, true);
        compare_u8("normal_u8 from golden xyz", u8, (int)xyz->shape[2], (int)xyz->shape[3], g,
                   "post.normal_u8", 0);
        free(u8);
        tensor_free(n01);
        tensor_free(t);
    }
    // Step 6 on the golden map at the extra image_resolution: a real INTER_LINEAR upscale.
    int nh, nw;
    const uint8_t *normal = golden_u8(g, "post.normal_u8", &nh, &nw);
    const cJSON *extra_res = cJSON_GetObjectItem(info, "extra_image_resolution");
    if (normal && cJSON_IsNumber(extra_res)) {
        char name[128];
        snprintf(name, sizeof name, "extra.image_resolution_%d.detected_map_u8", extra_res->valueint);
        int oh, ow;
        uint8_t *map = NULL;
        CHECK_OK(detector_resize_size(nh, nw, extra_res->valueint, &oh, &ow));
        CHECK_OK(cv_resize_u8(normal, nh, nw, 3, oh, ow, CV_INTER_LINEAR, &map));
        compare_u8("INTER_LINEAR map", map, oh, ow, g, name, 1);
        free(map);
    }
    // The whole detector from the input image.
    uint8_t *map = NULL;
    int mh = 0, mw = 0;
    CHECK_OK(normal_detector_run(net, input, h, w, 3, detect, image_res, &map, &mh, &mw));
    compare_u8("normal_detector_run", map, mh, mw, g, "output.detected_map_u8", 1);
    free(map);
    free(rgb);

    // HWC3's other branches (not in the golden): grey replicates, RGBA composites over white with
    // numpy's float32 arithmetic and truncation.
    const uint8_t grey[2] = {7, 200}, rgba[8] = {100, 50, 0, 255, 100, 50, 0, 128};
    uint8_t *o = NULL;
    CHECK_OK(hwc3_u8(grey, 1, 2, 1, &o));
    CHECK(o && o[0] == 7 && o[2] == 7 && o[3] == 200 && o[5] == 200, "HWC3 grey");
    free(o);
    CHECK_OK(hwc3_u8(rgba, 1, 2, 4, &o));
    // alpha 128/255: 100*a + 255*(1-a) = 177.2 -> 177; 50 -> 152.1 -> 152; 0 -> 126.9 -> 126.
    CHECK(o && o[0] == 100 && o[1] == 50 && o[2] == 0 && o[3] == 177 && o[4] == 152 && o[5] == 126,
          "HWC3 RGBA over white: %d %d %d", o ? o[3] : -1, o ? o[4] : -1, o ? o[5] : -1);
    free(o);
}

// ---- architecture over the real model's shapes ------------------------------------------------

static bool json_shape(void *ctx, const char *name, int *ndim, int64_t *shape) {
    const cJSON *keys = ctx, *entry;
    cJSON_ArrayForEach(entry, keys) {
        const cJSON *n = cJSON_GetArrayItem(entry, 0), *s = cJSON_GetArrayItem(entry, 1);
        if (!cJSON_IsString(n) || strcmp(n->valuestring, name)) continue;
        *ndim = cJSON_GetArraySize(s);
        for (int i = 0; i < *ndim && i < 8; i++) shape[i] = (int64_t)cJSON_GetArrayItem(s, i)->valuedouble;
        return true;
    }
    return false;
}

// geffnet's round_channels / make_divisible(v, 8).
static int make_divisible(double v) {
    int r = (int)(v + 4) / 8 * 8;
    if (r < 8) r = 8;
    if (r < 0.9 * v) r += 8;
    return r;
}

static void check_real_arch(const char *dir) {
    char path[1024];
    test_path(path, sizeof path, "%s/real_model_keys.json", dir);
    json_config keys_file, config;
    CHECK_OK(json_config_load(path, NULL, &keys_file));
    test_path(path, sizeof path, "%s/config.json", dir);
    CHECK_OK(json_config_load(path, NULL, &config));
    const cJSON *keys = cJSON_GetObjectItem(keys_file.root, "keys");
    const cJSON *enc = cJSON_GetObjectItem(config.root, "encoder");
    const cJSON *dec_real = cJSON_GetObjectItem(cJSON_GetObjectItem(config.root, "decoder"), "real");
    normalbae_arch a;
    CHECK_OK(normalbae_arch_from_shapes(json_shape, (void *)keys, "real_model_keys.json", &a));
    double cm = cJSON_GetObjectItem(enc, "real_channel_multiplier")->valuedouble;
    double dm = cJSON_GetObjectItem(enc, "real_depth_multiplier")->valuedouble;
    CHECK(a.stem_chs == make_divisible(32 * cm), "real stem %d", a.stem_chs);
    CHECK(a.head_chs == make_divisible(1280 * cm), "real head %d", a.head_chs);
    const cJSON *arch_def = cJSON_GetObjectItem(enc, "arch_def");
    for (int s = 0; s < NORMALBAE_STAGES; s++) {
        int r, k, st, e, c;
        const char *def = cJSON_GetArrayItem(arch_def, s)->valuestring;
        CHECK(sscanf(def + 3, "r%d_k%d_s%d_e%d_c%d", &r, &k, &st, &e, &c) == 5, "arch_def %s", def);
        int first = s ? a.stage_end[s - 1] : 0;
        int repeats = a.stage_end[s] - first;
        CHECK(repeats == (int)ceil(r * dm), "stage %d: %d blocks, arch_def says %d", s, repeats,
              (int)ceil(r * dm));
        const normalbae_block_arch *b = &a.blocks[first];
        CHECK(b->kernel == k && b->stride == st && b->out == make_divisible(c * cm),
              "stage %d first block: k%d s%d c%d", s, b->kernel, b->stride, b->out);
        CHECK(b->se_chs == (int)(b->in * 0.25), "stage %d SE width %d = int(in * 0.25)", s, b->se_chs);
    }
    CHECK(!a.blocks[0].residual && a.blocks[1].residual, "real B5: first DS block 48->24 without "
          "residual, the next with one");
    CHECK(a.conv2_out == cJSON_GetObjectItem(dec_real, "conv2_out")->valueint, "real conv2 %d",
          a.conv2_out);
    for (int k = 0; k < 4; k++)
        CHECK(a.up_out[k] == cJSON_GetArrayItem(cJSON_GetObjectItem(dec_real, "up_out"), k)->valueint,
              "real up%d %d", k + 1, a.up_out[k]);
    CHECK(a.mlp_hidden == cJSON_GetObjectItem(dec_real, "mlp_hidden")->valueint, "real mlp %d",
          a.mlp_hidden);
    CHECK(!strcmp(a.prefix, ""), "real keys have no module. prefix");
    json_config_free(&keys_file);
    json_config_free(&config);
}

int main(void) {
    char dir[1024], path[1024];
    test_path(dir, sizeof dir, "%s/normalbae", test_fixtures());
    test_path(path, sizeof path, "%s/golden/normalbae.safetensors", dir);
    st_file *golden = NULL;
    CHECK_OK(st_open(path, &golden));
    if (golden) {
        char weights[1024];
        test_path(weights, sizeof weights, "%s/normalbae.safetensors", dir);
        run_network(weights, golden);
        test_path(weights, sizeof weights, "%s/scannet_tiny.pt", dir);
        run_network(weights, golden);
        weight_set *ws = NULL;
        normalbae *net = NULL;
        CHECK_OK(weight_set_open_file(weights, &ws));
        if (ws) CHECK_OK(normalbae_load(test_backend_for(LCM_PRECISION_FP32), ws, &net));
        weight_set_close(ws);
        cJSON *info = golden_info(golden);
        if (net) check_preprocessing(golden, info, net);
        cJSON_Delete(info);
        normalbae_free(net);
        st_close(golden);
    }
    check_real_arch(dir);
    return test_finish();
}
