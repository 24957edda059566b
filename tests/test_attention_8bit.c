// The precision of an attention layer whose projections `lcm quantize` made 8-bit (models/blocks.c):
// bf16 (the flash kernel's AVX512-BF16 path) on the fast kernels where this CPU has it, fp32 where
// it does not and on the reference kernels, whatever precision the backend was made for; a layer
// with float projections keeps the backend's own choice (fp32 for an fp32 backend). Also: the
// layer computes, and on a CPU with AVX512-BF16 its output equals attention_ex in bf16 on the
// projections' outputs, bit for bit.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/safetensors_write.h"
#include "io/weights.h"
#include "models/blocks.h"
#include "ops/attention.h"
#include "ops/backend.h"
#include "testutil.h"

enum { DIM = 64, HEADS = 2, TOKENS = 70 };

static const char *const projections[] = {"attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"};

// Entry values: a weight as s8 integers, its per-row scales, the output bias, or an input
// parameter (scale 0.05, zero point 128).
static lcm_status fill(void *user, size_t index, float *out, int64_t numel) {
    const st_write_entry *e = &((const st_write_entry *)user)[index];
    const char *name = e->name;
    size_t n = strlen(name);
    for (int64_t i = 0; i < numel; i++) {
        if (e->dtype == ST_I8) out[i] = (float)((i * 37 + (int64_t)n * 11) % 255 - 127);
        else if (n > 13 && !strcmp(name + n - 13, ".weight_scale")) out[i] = 0.002f;
        else if (n > 12 && !strcmp(name + n - 12, ".input_scale")) out[i] = 0.05f;
        else if (n > 17 && !strcmp(name + n - 17, ".input_zero_point")) out[i] = 128.0f;
        else out[i] = (float)((i * 13) % 29) / 29.0f - 0.5f; // float weights and the bias
    }
    return LCM_OK;
}

// Writes the four projections of a self-attention layer: 8-bit with their input parameters, or
// float32.
static void write_layer(const char *path, bool quantized) {
    st_write_entry entries[32];
    char names[32][64];
    size_t count = 0;
    for (int p = 0; p < 4; p++) {
        snprintf(names[count], sizeof names[count], "%s.weight", projections[p]);
        entries[count] = (st_write_entry){names[count], quantized ? ST_I8 : ST_F32, 2, {DIM, DIM}};
        count++;
        if (quantized) {
            snprintf(names[count], sizeof names[count], "%s.weight_scale", projections[p]);
            entries[count] = (st_write_entry){names[count], ST_F32, 1, {DIM}};
            count++;
            snprintf(names[count], sizeof names[count], "%s.input_scale", projections[p]);
            entries[count] = (st_write_entry){names[count], ST_F32, 1, {1}};
            count++;
            snprintf(names[count], sizeof names[count], "%s.input_zero_point", projections[p]);
            entries[count] = (st_write_entry){names[count], ST_F32, 1, {1}};
            count++;
        }
    }
    snprintf(names[count], sizeof names[count], "attn.to_out.0.bias");
    entries[count] = (st_write_entry){names[count], ST_F32, 1, {DIM}};
    count++;
    CHECK_OK(st_write(path, entries, count, fill, entries, "pt"));
}

static void check_layer(const char *path, const ops_backend *backend, lcm_precision want,
                        const char *what) {
    weight_set *ws = NULL;
    CHECK_OK(weight_set_open_file(path, &ws));
    attention_layer a;
    lcm_status st = ws ? attention_layer_load(&a, backend, ws, "attn", DIM, DIM, HEADS, DIM / HEADS,
                                              false, 0)
                       : LCM_ERR_IO;
    CHECK(st == LCM_OK, "%s: attention_layer_load: %s", what, lcm_last_error());
    if (st == LCM_OK) {
        fprintf(stderr, "%s: attention in %s\n", what, a.precision == LCM_PRECISION_BF16 ? "bf16" : "fp32");
        CHECK(a.precision == want, "%s: attention precision %d, expected %d", what, (int)a.precision,
              (int)want);
        tensor *x = tensor_new3(1, TOKENS, DIM);
        for (int64_t i = 0; x && i < tensor_numel(x); i++) x->data[i] = sinf((float)i * 0.37f);
        tensor *out = attention_layer_forward(&a, x, NULL);
        CHECK(out && out->shape[1] == TOKENS && out->shape[2] == DIM, "%s: forward failed: %s", what,
              lcm_last_error());
        // The same steps by hand: the projections, then attention_ex in the expected precision.
        tensor *q = linear_forward(&a.to_q, x), *k = linear_forward(&a.to_k, x),
               *v = linear_forward(&a.to_v, x);
        tensor *o = attention_ex(q, k, v, HEADS, false, want);
        tensor_replace(&o, linear_forward(&a.to_out, o));
        bool finite = out != NULL;
        for (int64_t i = 0; out && i < tensor_numel(out); i++) finite = finite && isfinite(out->data[i]);
        CHECK(finite, "%s: non-finite output", what);
        CHECK(out && o && !memcmp(out->data, o->data, sizeof(float) * (size_t)tensor_numel(o)),
              "%s: the layer differs from its projections and attention_ex in the expected precision",
              what);
        tensor_free(q);
        tensor_free(k);
        tensor_free(v);
        tensor_free(o);
        tensor_free(out);
        tensor_free(x);
        attention_layer_free(&a);
    }
    weight_set_close(ws);
}

int main(void) {
    char dir[] = "/tmp/lcm-attention8-XXXXXX", q8[256], f32[256];
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    test_path(q8, sizeof q8, "%s/q8.safetensors", dir);
    test_path(f32, sizeof f32, "%s/f32.safetensors", dir);
    write_layer(q8, true);
    write_layer(f32, false);
    bool bf16 = attention_flash_available(LCM_PRECISION_BF16);
    fprintf(stderr, "this CPU %s the AVX512-BF16 flash kernel\n", bf16 ? "has" : "lacks");
    lcm_precision int8_want = bf16 ? LCM_PRECISION_BF16 : LCM_PRECISION_FP32;
    check_layer(q8, test_backend_for(LCM_PRECISION_FP32), int8_want, "8-bit projections, fp32 backend");
    check_layer(q8, test_backend_for(LCM_PRECISION_BF16), int8_want, "8-bit projections, bf16 backend");
    ops_backend reference = *test_backend_for(LCM_PRECISION_FP32);
    reference.kernels = KERNELS_REFERENCE;
    check_layer(q8, &reference, LCM_PRECISION_FP32, "8-bit projections, reference kernels");
    check_layer(f32, test_backend_for(LCM_PRECISION_FP32), LCM_PRECISION_FP32,
                "float projections, fp32 backend");
    unlink(q8);
    unlink(f32);
    rmdir(dir);
    return test_finish();
}
