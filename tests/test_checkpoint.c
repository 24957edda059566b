// Single-file checkpoints: `lcm convert` writes each LCM/SD fixture folder as one .safetensors in
// the original Stable Diffusion layout, and loading that file gives the identical image; configs
// derived from a file's tensor shapes match the folder's config.json files; the tokenizer of a file
// comes from its metadata, --tokenizer, $LCM_TOKENIZER or the Hugging Face cache, else a clear
// error; the diffusers -> original name mapping matches the published SD1.5 layout; bad files get
// clear errors.
//
// Every run sets HF_HUB_OFFLINE=1, an empty HF_HUB_CACHE and a LCM_TOKENIZER that does not exist,
// so a route can only pass by the way under test (and nothing touches the network).
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "io/checkpoint.h"
#include "io/safetensors_write.h"
#include "io/torch_write.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-checkpoint-XXXXXX";

static char empty_cache[PATH_MAX];

static lcm_result *generate_with(const char *model, const char *tokenizer) {
    lcm_pipeline *p = NULL;
    lcm_result *result = NULL;
    lcm_pipeline_options options;
    lcm_pipeline_options_init(&options);
    options.tokenizer = tokenizer;
    options.threads = 1; // the machine is shared; one thread gives the same image
    lcm_status st = lcm_pipeline_open(model, &options, &p);
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

static lcm_result *generate(const char *model) { return generate_with(model, NULL); }

// The image of each fixture folder, made once (borrowed; freed at the end of main).
#define MAX_FOLDERS 16
static lcm_result *folder_images[MAX_FOLDERS];

static const lcm_result *folder_image(int index, const char *folder) {
    if (!folder_images[index]) folder_images[index] = generate(folder);
    return folder_images[index];
}

// Whether both images exist and are byte for byte the same (prints the count of differing bytes).
static bool same_image(const char *what, const lcm_result *a, lcm_result *b) {
    bool same = false;
    if (a && b && a->images[0].width == b->images[0].width && a->images[0].height == b->images[0].height) {
        size_t bytes = (size_t)a->images[0].width * a->images[0].height * 3, differ = 0;
        for (size_t i = 0; i < bytes; i++) differ += a->images[0].rgb[i] != b->images[0].rgb[i];
        fprintf(stderr, "%s: %zu of %zu bytes differ from the folder's image\n", what, differ, bytes);
        same = differ == 0;
    }
    lcm_result_free(b);
    return same;
}

// The pipeline folders of the fixture set (a model_index.json at the root); returns the count.
static int pipeline_folders(char folders[][PATH_MAX], char names[][256], int max) {
    const char *root = test_fixtures();
    DIR *d = opendir(root);
    CHECK(d != NULL, "%s", root);
    if (!d) return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) && count < max) {
        char index[PATH_MAX];
        test_path(index, sizeof index, "%s/%s/model_index.json", root, e->d_name);
        if (e->d_name[0] == '.' || access(index, F_OK) != 0) continue;
        test_path(folders[count], PATH_MAX, "%s/%s", root, e->d_name);
        snprintf(names[count], 256, "%s", e->d_name);
        count++;
    }
    closedir(d);
    CHECK(count >= 1, "no pipeline folder under %s", root);
    return count;
}

// Every pipeline folder of the fixture set round-trips, its tokenizer from the file's metadata.
static void test_round_trips(void) {
    char folders[MAX_FOLDERS][PATH_MAX], names[MAX_FOLDERS][256];
    int count = pipeline_folders(folders, names, MAX_FOLDERS);
    for (int i = 0; i < count; i++) {
        char file[PATH_MAX];
        test_path(file, sizeof file, "%s/%s.safetensors", tmpdir, names[i]);
        CHECK_OK(lcm_convert_to_single_file(folders[i], file));
        CHECK(same_image(names[i], folder_image(i, folders[i]), generate(file)),
              "%s: the image from the single file differs", names[i]);

        // The same tensors as a PyTorch `.ckpt` ({"state_dict": ...} as Lightning saves it, the
        // configs riding along in "__metadata__"), read by the whitelist unpickler.
        char ckpt[PATH_MAX];
        test_path(ckpt, sizeof ckpt, "%s/%s.ckpt", tmpdir, names[i]);
        st_file *src = NULL;
        CHECK_OK(st_open(file, &src));
        if (src) CHECK_OK(torch_write_checkpoint(ckpt, "archive", src, true));
        st_close(src);
        CHECK(same_image(names[i], folder_image(i, folders[i]), generate(ckpt)),
              "%s: the image from the .ckpt differs", names[i]);
    }

    // The same through the CLI: convert, then generate from the file.
    char cmd[3 * PATH_MAX], out[4096], file[PATH_MAX], png[PATH_MAX];
    test_path(file, sizeof file, "%s/cli.safetensors", tmpdir);
    test_path(png, sizeof png, "%s/cli.png", tmpdir);
    test_path(cmd, sizeof cmd, "%s convert --model %s --output %s 2>&1 && %s generate --model %s "
              "--prompt cube --steps 1 --width 64 --height 64 --quiet --output %s 2>&1",
              test_lcm_bin(), folders[0], file, test_lcm_bin(), file, png);
    int rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0 && access(png, F_OK) == 0, "lcm convert + generate: exit %d: %s", rc, out);
    // `lcm info` describes the file (no component folders), tokenizer included.
    test_path(cmd, sizeof cmd, "%s info --model %s 2>&1", test_lcm_bin(), file);
    rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "UNet2DConditionModel") && strstr(out, "CLIPTokenizer") && strstr(out, "vocab_size"),
          "lcm info of a single file: exit %d: %s", rc, out);
}

// cJSON values equal as diffusers reads them (a missing field is diffusers' default null).
static bool same_value(const cJSON *a, const cJSON *b) {
    if (!b) return cJSON_IsNull(a);
    if (cJSON_IsNumber(a) && cJSON_IsNumber(b)) return a->valuedouble == b->valuedouble;
    return cJSON_Compare(a, b, true);
}

// The SD1.5 constants of the derived configs (the fields no shape gives) against the real configs
// of the fixture set (configs/*/) whose pipeline class is the derived one: LCM_Dreamshaper_v7's for
// an LCM UNet, stable-diffusion-v1-5's otherwise. sample_size is printed, not checked: the real
// models differ there (LCM_Dreamshaper_v7 is a 768-pixel model) and it only sets the default size.
static void test_constants_against_real_configs(const checkpoint *ck, const char *name) {
    static const struct { const char *component, *file, *fields; } constants[] = {
        {NULL, "model_index.json", "_class_name scheduler text_encoder tokenizer unet vae"},
        {"scheduler", "scheduler_config.json", "*"},
        {"unet", "config.json", "act_fn attention_head_dim mid_block_type norm_num_groups sample_size"},
        {"vae", "config.json", "act_fn norm_num_groups sample_size scaling_factor"},
        {"text_encoder", "config.json",
         "architectures bos_token_id eos_token_id pad_token_id hidden_act layer_norm_eps model_type"},
    };
    json_config index = {0};
    const char *pipeline = "";
    CHECK_OK(checkpoint_derive_config(ck, NULL, "model_index.json", &index));
    if (index.root) CHECK_OK(json_config_string(&index, "_class_name", &pipeline));
    char configs[PATH_MAX];
    test_path(configs, sizeof configs, "%s/configs", test_fixtures());
    DIR *d = opendir(configs);
    struct dirent *e;
    int matched = 0;
    while (d && (e = readdir(d))) {
        char path[PATH_MAX];
        json_config real_index = {0};
        const char *real_pipeline = NULL;
        test_path(path, sizeof path, "%s/%s/model_index.json", configs, e->d_name);
        if (e->d_name[0] == '.' || access(path, F_OK) != 0) continue;
        CHECK_OK(json_config_load(path, NULL, &real_index));
        if (real_index.root) json_config_string_or(&real_index, "_class_name", "", &real_pipeline);
        bool same_pipeline = real_pipeline && !strcmp(real_pipeline, pipeline);
        json_config_free(&real_index);
        if (!same_pipeline) continue;
        matched++;
        for (size_t i = 0; i < sizeof constants / sizeof *constants; i++) {
            json_config derived = {0}, real = {0};
            test_path(path, sizeof path, "%s/%s/%s%s%s", configs, e->d_name, constants[i].component ? constants[i].component : "",
                      constants[i].component ? "/" : "", constants[i].file);
            CHECK_OK(checkpoint_derive_config(ck, constants[i].component, constants[i].file, &derived));
            CHECK_OK(json_config_load(path, NULL, &real));
            int compared = 0;
            for (const cJSON *item = derived.root ? derived.root->child : NULL; item && real.root; item = item->next) {
                char padded[128];
                snprintf(padded, sizeof padded, " %s ", item->string);
                char fields[256];
                snprintf(fields, sizeof fields, " %s ", constants[i].fields);
                if (strcmp(constants[i].fields, "*") && !strstr(fields, padded)) continue;
                const cJSON *expected = cJSON_GetObjectItemCaseSensitive(real.root, item->string);
                // A field the real config leaves out takes diffusers' default: nothing to compare.
                if (!expected) continue;
                compared++;
                if (same_value(item, expected)) continue;
                char *got_text = cJSON_PrintUnformatted(item), *want_text = cJSON_PrintUnformatted(expected);
                fprintf(stderr, "%s vs %s: %s = %s derived, %s in the real config\n", name, path, item->string,
                        got_text, want_text);
                CHECK(!strcmp(item->string, "sample_size"), "%s: %s derived as %s, the real config has %s", path,
                      item->string, got_text, want_text);
                free(got_text);
                free(want_text);
            }
            fprintf(stderr, "%s vs %s: %d SD1.5 constants compared\n", name, path, compared);
            CHECK(compared >= 1, "%s: no constant compared", path);
            json_config_free(&derived);
            json_config_free(&real);
        }
    }
    if (d) closedir(d);
    json_config_free(&index);
    CHECK(matched >= 1, "no real config folder under %s has pipeline class %s", configs, pipeline);
}

// Configs derived from the shapes of a file written WITHOUT metadata equal the folder's, field by
// field. Only two kinds of field may differ, and they are printed: SD1.5 constants no shape records
// that the fixture configs set otherwise (sample_size), and the text encoder's head count, which
// is left out when its width is not a multiple of 64 (it cannot be derived; loading then needs the
// config in the metadata).
static void test_derived_configs(void) {
    static const char *const files[][2] = {{NULL, "model_index.json"},
                                           {"unet", "config.json"},
                                           {"vae", "config.json"},
                                           {"text_encoder", "config.json"},
                                           {"scheduler", "scheduler_config.json"}};
    char folders[MAX_FOLDERS][PATH_MAX], names[MAX_FOLDERS][256];
    int count = pipeline_folders(folders, names, MAX_FOLDERS);
    for (int i = 0; i < count; i++) {
        char file[PATH_MAX];
        test_path(file, sizeof file, "%s/%s-bare.safetensors", tmpdir, names[i]);
        CHECK_OK(checkpoint_write(folders[i], file, 0));
        checkpoint *ck = NULL;
        CHECK_OK(checkpoint_open(file, &ck));
        if (!ck) continue;
        CHECK(checkpoint_metadata(ck, "lcm.config.unet/config.json") == NULL &&
                  checkpoint_metadata(ck, CHECKPOINT_TOKENIZER_KEY "vocab.json") == NULL,
              "%s: written with metadata", file);
        bool heads_derived = true;
        for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
            const char *component = files[f][0], *name = files[f][1];
            char path[PATH_MAX];
            test_path(path, sizeof path, "%s/%s%s%s", folders[i], component ? component : "", component ? "/" : "",
                      name);
            json_config derived = {0}, want = {0};
            CHECK_OK(checkpoint_derive_config(ck, component, name, &derived));
            CHECK_OK(json_config_load(path, NULL, &want));
            int compared = 0;
            for (const cJSON *item = derived.root ? derived.root->child : NULL; item && want.root; item = item->next) {
                const cJSON *expected = cJSON_GetObjectItemCaseSensitive(want.root, item->string);
                compared++;
                if (same_value(item, expected)) continue;
                char *got_text = cJSON_PrintUnformatted(item), *want_text = expected ? cJSON_PrintUnformatted(expected) : NULL;
                bool constant = !strcmp(item->string, "sample_size");
                fprintf(stderr, "%s %s: %s = %s derived, %s in the folder%s\n", names[i], path + strlen(folders[i]) + 1,
                        item->string, got_text, want_text ? want_text : "(absent)",
                        constant ? " (an SD1.5 constant no shape records)" : "");
                CHECK(constant, "%s: %s derived as %s, the folder has %s", path, item->string, got_text,
                      want_text ? want_text : "(absent)");
                free(got_text);
                free(want_text);
            }
            if (component && !strcmp(component, "text_encoder") && derived.root) {
                int64_t hidden = 0;
                CHECK_OK(json_config_int(&want, "hidden_size", 1, 1 << 20, &hidden));
                heads_derived = json_config_has(&derived, "num_attention_heads");
                CHECK(heads_derived == (hidden % 64 == 0), "%s: num_attention_heads %s for hidden_size %lld", path,
                      heads_derived ? "derived" : "not derived", (long long)hidden);
                if (!heads_derived)
                    fprintf(stderr, "%s text_encoder/config.json: num_attention_heads not derived (hidden_size %lld "
                            "is not a multiple of 64)\n", names[i], (long long)hidden);
            }
            fprintf(stderr, "%s %s%s%s: %d derived fields compared\n", names[i], component ? component : "",
                    component ? "/" : "", name, compared);
            CHECK(compared >= 2, "%s: nothing derived", path);
            json_config_free(&derived);
            json_config_free(&want);
        }
        test_constants_against_real_configs(ck, names[i]);
        checkpoint_close(ck);

        // Loading without metadata: metadata first, then derivation, per config file. With no text
        // config a text encoder whose head count cannot be derived is a clear error naming the file.
        char tokenizer[PATH_MAX];
        test_path(tokenizer, sizeof tokenizer, "%s/tokenizer", folders[i]);
        lcm_pipeline *p = NULL;
        lcm_pipeline_options options;
        lcm_pipeline_options_init(&options);
        options.tokenizer = tokenizer;
        lcm_status st = lcm_pipeline_open(file, &options, &p);
        if (heads_derived) {
            CHECK(st == LCM_OK, "%s: %s", file, lcm_last_error());
        } else {
            CHECK(st == LCM_ERR_UNSUPPORTED && strstr(lcm_last_error(), file) &&
                      strstr(lcm_last_error(), "num_attention_heads"),
                  "%s: %s %s", file, lcm_status_name(st), lcm_last_error());
            fprintf(stderr, "without a text config: %s\n", lcm_last_error());
        }
        lcm_pipeline_close(p);
        // The text config alone in the metadata: UNet, VAE, scheduler and model_index derived, and
        // the image is the folder's.
        test_path(file, sizeof file, "%s/%s-text-config.safetensors", tmpdir, names[i]);
        CHECK_OK(checkpoint_write(folders[i], file, CHECKPOINT_STORE_TEXT_CONFIG));
        char what[PATH_MAX + 32];
        snprintf(what, sizeof what, "%s (derived configs)", names[i]);
        CHECK(same_image(what, folder_image(i, folders[i]), generate_with(file, tokenizer)),
              "%s: the image from derived configs differs", names[i]);
    }
}

// Links DIR/NAME to TARGET.
static void link_file(const char *dir, const char *name, const char *target) {
    char path[PATH_MAX];
    test_path(path, sizeof path, "%s/%s", dir, name);
    CHECK(symlink(target, path) == 0, "symlink %s", path);
}

// Where the tokenizer of a file without one comes from.
static void test_tokenizer_sources(void) {
    char folders[MAX_FOLDERS][PATH_MAX], names[MAX_FOLDERS][256];
    if (pipeline_folders(folders, names, MAX_FOLDERS) < 1) return;
    const char *folder = folders[0];
    char file[PATH_MAX], tokenizer[PATH_MAX];
    test_path(file, sizeof file, "%s/no-tokenizer.safetensors", tmpdir);
    test_path(tokenizer, sizeof tokenizer, "%s/tokenizer", folder);
    CHECK_OK(checkpoint_write(folder, file, CHECKPOINT_STORE_CONFIGS));
    const lcm_result *want = folder_image(0, folder);

    // None anywhere: the error names the file and the three ways.
    lcm_pipeline *p = NULL;
    lcm_status st = lcm_pipeline_open(file, NULL, &p);
    const char *message = lcm_last_error();
    CHECK(st == LCM_ERR_IO && strstr(message, file) && strstr(message, "--tokenizer") &&
              strstr(message, "LCM_TOKENIZER") && strstr(message, "openai/clip-vit-large-patch14"),
          "no tokenizer: %s %s", lcm_status_name(st), message);
    fprintf(stderr, "no tokenizer: %s\n", message);

    // (a) the option (it wins over a broken $LCM_TOKENIZER).
    CHECK(same_image("tokenizer option", want, generate_with(file, tokenizer)), "--tokenizer route");
    st = lcm_pipeline_open(file, &(lcm_pipeline_options){.tokenizer = "/nonexistent-tokenizer"}, &p);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), "/nonexistent-tokenizer"), "bad option: %s",
          lcm_last_error());

    // (b) $LCM_TOKENIZER.
    setenv("LCM_TOKENIZER", tokenizer, 1);
    CHECK(same_image("LCM_TOKENIZER", want, generate(file)), "$LCM_TOKENIZER route");
    setenv("LCM_TOKENIZER", "/nonexistent-tokenizer", 1);
    st = lcm_pipeline_open(file, NULL, &p);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), "LCM_TOKENIZER") &&
              strstr(lcm_last_error(), "/nonexistent-tokenizer"),
          "bad $LCM_TOKENIZER: %s", lcm_last_error());
    unsetenv("LCM_TOKENIZER");

    // (c) the Hugging Face cache, laid out as huggingface_hub writes it (offline: never fetched).
    static const char commit[] = "0123456789abcdef0123456789abcdef01234567";
    char cache[PATH_MAX], repo[PATH_MAX], snapshot[PATH_MAX], target[PATH_MAX];
    test_path(cache, sizeof cache, "%s/hub-cache", tmpdir);
    test_path(repo, sizeof repo, "%s/models--openai--clip-vit-large-patch14", cache);
    test_path(snapshot, sizeof snapshot, "%s/snapshots/%s", repo, commit);
    char cmd[PATH_MAX * 3], out[4096];
    test_path(cmd, sizeof cmd, "mkdir -p %s/refs %s && printf %s > %s/refs/main", repo, snapshot, commit, repo);
    CHECK(test_run(cmd, out, sizeof out) == 0, "%s: %s", cmd, out);
    static const char *const files[] = {"vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        test_path(target, sizeof target, "%s/%s", tokenizer, files[i]);
        if (access(target, F_OK) == 0) link_file(snapshot, files[i], target);
    }
    setenv("HF_HUB_CACHE", cache, 1);
    CHECK(same_image("hub cache", want, generate(file)), "cache route: %s", lcm_last_error());
    setenv("HF_HUB_CACHE", empty_cache, 1);

    // The CLI flag.
    char png[PATH_MAX];
    test_path(png, sizeof png, "%s/tokenizer-flag.png", tmpdir);
    test_path(cmd, sizeof cmd, "%s generate --model %s --tokenizer %s --prompt cube --steps 1 --width 64 "
              "--height 64 --quiet --output %s 2>&1", test_lcm_bin(), file, tokenizer, png);
    int rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0 && access(png, F_OK) == 0, "lcm generate --tokenizer: exit %d: %s", rc, out);
    test_path(cmd, sizeof cmd, "%s generate --model %s --prompt cube --steps 1 --width 64 --height 64 --quiet "
              "--output %s 2>&1", test_lcm_bin(), file, png);
    rc = test_run(cmd, out, sizeof out);
    CHECK(rc != 0 && strstr(out, "--tokenizer") && strstr(out, "LCM_TOKENIZER"), "lcm generate without a tokenizer: exit %d: %s",
          rc, out);
}

// The real SD1.5 config of the fixture set.
static json_config sd15_config(const char *component) {
    char path[PATH_MAX];
    json_config c = {0};
    test_path(path, sizeof path, "%s/configs/stable-diffusion-v1-5/%s/config.json", test_fixtures(), component);
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
    json_config unet = sd15_config("unet"), vae = sd15_config("vae"), none = {0};
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
    char path[PATH_MAX], folders[MAX_FOLDERS][PATH_MAX], folder_names[MAX_FOLDERS][256], tokenizer[PATH_MAX] = "";
    if (pipeline_folders(folders, folder_names, MAX_FOLDERS) >= 1)
        test_path(tokenizer, sizeof tokenizer, "%s/tokenizer", folders[0]);
    lcm_pipeline *p = NULL;
    test_path(path, sizeof path, "%s/model.ckpt", tmpdir);
    FILE *fp = fopen(path, "wb");
    fputs("PK pickle", fp);
    fclose(fp);
    lcm_status st = lcm_pipeline_open(path, NULL, &p);
    CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), path),
          "a .ckpt that is no torch zip: %s %s", lcm_status_name(st), lcm_last_error());

    // A lone UNet file is not a pipeline.
    test_path(path, sizeof path, "%s/unet-only.safetensors", tmpdir);
    const char *unet_only[] = {"model.diffusion_model.input_blocks.0.0.weight"};
    write_file(path, unet_only, 1);
    st = lcm_pipeline_open(path, NULL, &p);
    CHECK(st == LCM_ERR_UNSUPPORTED && strstr(lcm_last_error(), path) && strstr(lcm_last_error(), "VAE"),
          "unet only: %s %s", lcm_status_name(st), lcm_last_error());

    // Without lcm metadata the configs are derived: SD1.5's scheduler, or LCM_Dreamshaper_v7's when
    // the UNet has the guidance embedding; tensors the derivation needs are named when missing.
    const char *names[] = {"model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.quant_conv.bias",
                           "cond_stage_model.transformer.text_model.final_layer_norm.bias",
                           "model.diffusion_model.time_embed.cond_proj.weight"};
    for (int lcm = 0; lcm <= 1; lcm++) {
        test_path(path, sizeof path, "%s/partial-%d.safetensors", tmpdir, lcm);
        write_file(path, names, lcm ? 4 : 3);
        checkpoint *ck = NULL;
        CHECK_OK(checkpoint_open(path, &ck));
        json_config scheduler = {0};
        const char *class_name = "";
        if (ck) CHECK_OK(checkpoint_load_config(ck, "scheduler", "scheduler_config.json", &scheduler));
        if (scheduler.root) CHECK_OK(json_config_string(&scheduler, "_class_name", &class_name));
        CHECK(!strcmp(class_name, lcm ? "LCMScheduler" : "PNDMScheduler"), "scheduler of %s: %s", path, class_name);
        json_config_free(&scheduler);
        // Shapes that do not fit the layout are named.
        json_config unet = {0};
        st = ck ? checkpoint_derive_config(ck, "unet", "config.json", &unet) : LCM_ERR_INTERNAL;
        CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), path) &&
                  strstr(lcm_last_error(), "input_blocks.0.0.weight") && strstr(lcm_last_error(), "shape"),
              "unet config from a 1-D conv_in: %s %s", lcm_status_name(st), lcm_last_error());
        checkpoint_close(ck);
        st = lcm_pipeline_open(path, &(lcm_pipeline_options){.tokenizer = tokenizer}, &p);
        CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), path) && strstr(lcm_last_error(), "missing"),
              "partial file: %s %s", lcm_status_name(st), lcm_last_error());
        fprintf(stderr, "partial checkpoint message: %s\n", lcm_last_error());
    }
    // A broken tokenizer in the metadata is named by file and key.
    test_path(path, sizeof path, "%s/bad-tokenizer.safetensors", tmpdir);
    st_write_entry entries[3];
    for (size_t i = 0; i < 3; i++) entries[i] = (st_write_entry){.name = names[i], .dtype = ST_F32, .ndim = 1, .shape = {2}};
    const char *keys[] = {CHECKPOINT_TOKENIZER_KEY "vocab.json", CHECKPOINT_TOKENIZER_KEY "merges.txt"};
    const char *values[] = {"{\"a\": 1,", "#version: 0.2\n"};
    CHECK_OK(st_write_metadata(path, entries, 3, fill_zero, NULL, keys, values, 2));
    st = lcm_pipeline_open(path, NULL, &p);
    CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), path) &&
              strstr(lcm_last_error(), CHECKPOINT_TOKENIZER_KEY "vocab.json"),
          "bad tokenizer metadata: %s %s", lcm_status_name(st), lcm_last_error());
    fprintf(stderr, "bad tokenizer metadata: %s\n", lcm_last_error());

    // Only a pipeline folder becomes a single file.
    test_path(path, sizeof path, "%s/none.safetensors", tmpdir);
    st = lcm_convert_to_single_file(tmpdir, path);
    CHECK(st != LCM_OK && access(path, F_OK) != 0, "converting a non-model folder: %s", lcm_last_error());
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    // Each route must pass on its own: no network, no cache, no usable $LCM_TOKENIZER.
    test_path(empty_cache, sizeof empty_cache, "%s/empty-cache", tmpdir);
    setenv("HF_HUB_OFFLINE", "1", 1);
    setenv("HF_HUB_CACHE", empty_cache, 1);
    setenv("LCM_TOKENIZER", "/nonexistent-tokenizer", 1);
    test_names();
    test_round_trips();
    unsetenv("LCM_TOKENIZER");
    test_derived_configs();
    test_tokenizer_sources();
    test_bad_files();
    for (int i = 0; i < MAX_FOLDERS; i++) lcm_result_free(folder_images[i]);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
