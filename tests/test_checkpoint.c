// Single-file checkpoints: `lcm convert` writes each LCM/SD fixture folder as one .safetensors in
// the original Stable Diffusion layout, and loading that file gives the identical image; the
// diffusers -> original name mapping matches the published SD1.5 layout; bad files get clear errors.
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/checkpoint.h"
#include "io/safetensors_write.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-checkpoint-XXXXXX";

static lcm_result *generate(const char *model) {
    lcm_pipeline *p = NULL;
    lcm_result *result = NULL;
    lcm_status st = lcm_pipeline_open(model, NULL, &p);
    CHECK(st == LCM_OK, "open %s: %s", model, lcm_last_error());
    if (st != LCM_OK) return NULL;
    lcm_request r;
    lcm_request_init(&r);
    r.prompt = "a photo of a red cube on a table";
    r.seed = 11;
    r.steps = 2;
    r.width = 64;
    r.height = 64;
    st = lcm_generate(p, &r, &result);
    CHECK(st == LCM_OK, "generate %s: %s", model, lcm_last_error());
    lcm_pipeline_close(p);
    return result;
}

// Every pipeline folder of the fixture set (a model_index.json at its root) round-trips.
static void test_round_trips(void) {
    const char *root = test_fixtures();
    DIR *d = opendir(root);
    CHECK(d != NULL, "%s", root);
    if (!d) return;
    int tried = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char folder[PATH_MAX], index[PATH_MAX], file[PATH_MAX];
        test_path(folder, sizeof folder, "%s/%s", root, e->d_name);
        test_path(index, sizeof index, "%s/model_index.json", folder);
        if (e->d_name[0] == '.' || access(index, F_OK) != 0) continue;
        test_path(file, sizeof file, "%s/%s.safetensors", tmpdir, e->d_name);
        CHECK_OK(lcm_convert_to_single_file(folder, file));
        lcm_result *a = generate(folder), *b = generate(file);
        if (a && b) {
            size_t bytes = (size_t)a->images[0].width * a->images[0].height * 3, differ = 0;
            CHECK(a->images[0].width == b->images[0].width && a->images[0].height == b->images[0].height,
                  "%s: sizes differ", e->d_name);
            for (size_t i = 0; i < bytes; i++) differ += a->images[0].rgb[i] != b->images[0].rgb[i];
            fprintf(stderr, "%s: single file vs folder: %zu of %zu bytes differ\n", e->d_name, differ, bytes);
            CHECK(differ == 0, "%s: the image from the single file differs from the folder's", e->d_name);
        }
        lcm_result_free(a);
        lcm_result_free(b);
        tried++;
    }
    closedir(d);
    CHECK(tried >= 1, "no pipeline folder under %s", root);

    // The same through the CLI: convert, then generate from the file.
    char cmd[3 * PATH_MAX], out[4096], file[PATH_MAX], png[PATH_MAX];
    test_path(file, sizeof file, "%s/cli.safetensors", tmpdir);
    test_path(png, sizeof png, "%s/cli.png", tmpdir);
    test_path(cmd, sizeof cmd, "%s convert --model %s/tiny-lcm --output %s 2>&1 && %s generate --model %s "
              "--prompt cube --steps 1 --width 64 --height 64 --quiet --output %s 2>&1",
              test_lcm_bin(), root, file, test_lcm_bin(), file, png);
    int rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0 && access(png, F_OK) == 0, "lcm convert + generate: exit %d: %s", rc, out);
}

static json_config shipped_config(const char *component) {
    char path[PATH_MAX];
    json_config c = {0};
    test_path(path, sizeof path, "%s/models/stable-diffusion-v1-5/%s/config.json", checkpoint_data_dir(),
              component);
    CHECK_OK(json_config_load(path, NULL, &c));
    return c;
}

// Names of the published SD1.5 checkpoint (v1-5-pruned-emaonly.safetensors) for the real config.
static void test_names(void) {
    static const struct { const char *component, *diffusers, *original; } cases[] = {
        {"unet", "conv_in.weight", "model.diffusion_model.input_blocks.0.0.weight"},
        {"unet", "time_embedding.linear_2.bias", "model.diffusion_model.time_embed.2.bias"},
        {"unet", "down_blocks.0.resnets.1.conv1.weight", "model.diffusion_model.input_blocks.2.0.in_layers.2.weight"},
        {"unet", "down_blocks.1.attentions.0.proj_in.weight", "model.diffusion_model.input_blocks.4.1.proj_in.weight"},
        {"unet", "down_blocks.1.resnets.0.conv_shortcut.weight", "model.diffusion_model.input_blocks.4.0.skip_connection.weight"},
        {"unet", "down_blocks.2.downsamplers.0.conv.weight", "model.diffusion_model.input_blocks.9.0.op.weight"},
        {"unet", "down_blocks.3.resnets.1.time_emb_proj.bias", "model.diffusion_model.input_blocks.11.0.emb_layers.1.bias"},
        {"unet", "mid_block.resnets.1.norm2.weight", "model.diffusion_model.middle_block.2.out_layers.0.weight"},
        {"unet", "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
         "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight"},
        {"unet", "up_blocks.0.upsamplers.0.conv.weight", "model.diffusion_model.output_blocks.2.1.conv.weight"},
        {"unet", "up_blocks.1.upsamplers.0.conv.bias", "model.diffusion_model.output_blocks.5.2.conv.bias"},
        {"unet", "up_blocks.3.attentions.2.proj_out.weight", "model.diffusion_model.output_blocks.11.1.proj_out.weight"},
        {"unet", "up_blocks.2.resnets.2.conv2.weight", "model.diffusion_model.output_blocks.8.0.out_layers.3.weight"},
        {"unet", "conv_norm_out.weight", "model.diffusion_model.out.0.weight"},
        {"unet", "conv_out.bias", "model.diffusion_model.out.2.bias"},
        {"vae", "encoder.down_blocks.1.resnets.0.conv_shortcut.weight", "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight"},
        {"vae", "encoder.down_blocks.0.downsamplers.0.conv.weight", "first_stage_model.encoder.down.0.downsample.conv.weight"},
        {"vae", "decoder.up_blocks.0.resnets.2.norm1.weight", "first_stage_model.decoder.up.3.block.2.norm1.weight"},
        {"vae", "decoder.up_blocks.2.upsamplers.0.conv.bias", "first_stage_model.decoder.up.1.upsample.conv.bias"},
        {"vae", "decoder.mid_block.attentions.0.to_out.0.weight", "first_stage_model.decoder.mid.attn_1.proj_out.weight"},
        {"vae", "encoder.mid_block.attentions.0.group_norm.bias", "first_stage_model.encoder.mid.attn_1.norm.bias"},
        {"vae", "encoder.mid_block.resnets.1.conv2.weight", "first_stage_model.encoder.mid.block_2.conv2.weight"},
        {"vae", "encoder.conv_norm_out.weight", "first_stage_model.encoder.norm_out.weight"},
        {"vae", "post_quant_conv.weight", "first_stage_model.post_quant_conv.weight"},
        {"text_encoder", "text_model.final_layer_norm.weight", "cond_stage_model.transformer.text_model.final_layer_norm.weight"},
    };
    json_config unet = shipped_config("unet"), vae = shipped_config("vae"), none = {0};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const json_config *c = !strcmp(cases[i].component, "unet") ? &unet
                               : !strcmp(cases[i].component, "vae") ? &vae : &none;
        char got[512] = "";
        lcm_status st = checkpoint_original_name(cases[i].component, c, cases[i].diffusers, got, sizeof got);
        CHECK(st == LCM_OK && !strcmp(got, cases[i].original), "%s '%s' -> '%s', want '%s' (%s)",
              cases[i].component, cases[i].diffusers, got, cases[i].original, lcm_last_error());
    }
    char got[512];
    lcm_status st = checkpoint_original_name("unet", &unet, "add_embedding.linear_1.weight", got, sizeof got);
    CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), "add_embedding.linear_1.weight"), "unknown name: %s",
          lcm_last_error());
    json_config_free(&unet);
    json_config_free(&vae);
}

static lcm_status fill_zero(void *user, size_t index, float *out, int64_t numel) {
    (void)user, (void)index;
    memset(out, 0, sizeof(float) * (size_t)numel);
    return LCM_OK;
}

static void write_file(const char *path, const char *const *names, size_t count) {
    st_write_entry entries[8];
    for (size_t i = 0; i < count; i++)
        entries[i] = (st_write_entry){.name = names[i], .dtype = ST_F32, .ndim = 1, .shape = {2}};
    CHECK_OK(st_write(path, entries, count, fill_zero, NULL, "pt"));
}

static void test_bad_files(void) {
    char path[PATH_MAX];
    lcm_pipeline *p = NULL;
    test_path(path, sizeof path, "%s/model.ckpt", tmpdir);
    FILE *fp = fopen(path, "wb");
    fputs("PK pickle", fp);
    fclose(fp);
    lcm_status st = lcm_pipeline_open(path, NULL, &p);
    CHECK(st == LCM_ERR_UNSUPPORTED && strstr(lcm_last_error(), path) && strstr(lcm_last_error(), "pickle"),
          ".ckpt: %s %s", lcm_status_name(st), lcm_last_error());

    // A lone UNet file is not a pipeline.
    test_path(path, sizeof path, "%s/unet-only.safetensors", tmpdir);
    const char *unet_only[] = {"model.diffusion_model.input_blocks.0.0.weight"};
    write_file(path, unet_only, 1);
    st = lcm_pipeline_open(path, NULL, &p);
    CHECK(st == LCM_ERR_UNSUPPORTED && strstr(lcm_last_error(), path) && strstr(lcm_last_error(), "VAE"),
          "unet only: %s %s", lcm_status_name(st), lcm_last_error());

    // Without lcm metadata the shipped configs apply: SD1.5's, or LCM_Dreamshaper_v7's when the
    // UNet has the guidance embedding; missing tensors are named.
    const char *names[] = {"model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.quant_conv.bias",
                           "cond_stage_model.transformer.text_model.final_layer_norm.bias",
                           "model.diffusion_model.time_embed.cond_proj.weight"};
    for (int lcm = 0; lcm <= 1; lcm++) {
        test_path(path, sizeof path, "%s/partial-%d.safetensors", tmpdir, lcm);
        write_file(path, names, lcm ? 4 : 3);
        checkpoint *ck = NULL;
        CHECK_OK(checkpoint_open(path, &ck));
        if (ck) {
            const char *dir = checkpoint_config_dir(ck);
            CHECK(strstr(dir, lcm ? "LCM_Dreamshaper_v7" : "stable-diffusion-v1-5"), "configs of %s: %s", path, dir);
        }
        checkpoint_close(ck);
        st = lcm_pipeline_open(path, NULL, &p);
        CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), path) && strstr(lcm_last_error(), "missing"),
              "partial file: %s %s", lcm_status_name(st), lcm_last_error());
        fprintf(stderr, "partial checkpoint message: %s\n", lcm_last_error());
    }
    // A folder with a different tokenizer cannot become a single file.
    test_path(path, sizeof path, "%s/none.safetensors", tmpdir);
    st = lcm_convert_to_single_file(tmpdir, path);
    CHECK(st != LCM_OK && access(path, F_OK) != 0, "converting a non-model folder: %s", lcm_last_error());
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_names();
    test_round_trips();
    test_bad_files();
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
