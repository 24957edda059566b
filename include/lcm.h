// lcm.c — public C API.
//
// Ownership rules, stated once and repeated on each function:
//  - A handle returned by lcm_*_open/new is owned by the caller and released with the matching
//    lcm_*_close/free. Passing NULL to a release function is allowed and does nothing.
//  - Strings and arrays passed in are borrowed for the duration of the call only.
//  - Strings returned as `const char *` are owned by the library and stay valid as documented.
//
// Every function declared here is defined in src/api/ (a file per topic: pipeline.c, generate.c,
// images.c, infotext.c, hub.c, ...), as a thin layer over the library's internal functions.
#ifndef LCM_H
#define LCM_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lcm_status {
    LCM_OK = 0,
    LCM_ERR_INVALID_ARGUMENT = 1, // the caller asked for something impossible (bad size, steps, ...)
    LCM_ERR_IO = 2,               // a file could not be opened, read, mapped or written
    LCM_ERR_FORMAT = 3,           // a file's content is malformed (safetensors, JSON, PNG, ...)
    LCM_ERR_UNSUPPORTED = 4,      // well-formed, but a feature/config value this build cannot run
    LCM_ERR_OUT_OF_MEMORY = 5,
    LCM_ERR_CANCELLED = 6, // the progress callback asked to stop
    LCM_ERR_INTERNAL = 7,
} lcm_status;

// The message of the last failure on the calling thread ("" if none). Owned by the library; valid
// until the next lcm_* call on the same thread.
const char *lcm_last_error(void);

// Clears the calling thread's error message.
void lcm_clear_error(void);

// A short constant name for a status ("malformed input"). Static storage; never freed.
const char *lcm_status_name(lcm_status status);

// ---- pipelines ---------------------------------------------------------------------------------

// A loaded text-to-image pipeline: tokenizer, text encoder, UNet, VAE and LCM scheduler of one
// model folder. Not safe for concurrent lcm_generate calls on the same handle (use one per thread).
typedef struct lcm_pipeline lcm_pipeline;

// Arithmetic of the UNet/VAE/text-encoder kernels. fp32 reproduces the reference library; bf16
// holds weights in bfloat16 and accumulates in fp32 (half the memory, about twice the speed on
// CPUs with AVX512-BF16). A quantized (int8) model folder runs int8 whatever is chosen here; its
// attention (between the int8 projections) computes in bf16 where the CPU has AVX512-BF16 and in
// fp32 elsewhere, so an int8 model's images differ between CPUs with and without AVX512-BF16.
typedef enum lcm_precision {
    LCM_PRECISION_FP32 = 0,
    LCM_PRECISION_BF16 = 1,
} lcm_precision;

// How the VAE decodes: AUTO tiles only when the untiled decode would not fit the memory budget.
typedef enum lcm_vae_tiling {
    LCM_VAE_TILING_AUTO = 0,
    LCM_VAE_TILING_OFF = 1,
    LCM_VAE_TILING_ON = 2,
} lcm_vae_tiling;

// One LoRA adapter to fuse into the weights at load: W += scale * (alpha / rank) * up * down.
typedef struct lcm_lora {
    const char *path; // .safetensors in the kohya, diffusers or PEFT key format; borrowed
    float scale;      // 1.0 = as trained
} lcm_lora;

// Splits a command-line adapter spec "FILE[:SCALE]" (`lcm generate --lora`): *path_length receives
// the length of FILE at the start of `spec`, *scale SCALE (1.0 when absent). Paths may contain
// ':', so only a suffix after the LAST ':' that is a complete finite number counts as the scale
// ("a:b.safetensors" is all path). LCM_ERR_INVALID_ARGUMENT for an empty FILE. `spec` is borrowed.
lcm_status lcm_lora_spec_parse(const char *spec, size_t *path_length, float *scale);

typedef struct lcm_pipeline_options {
    // Weight variant: "fp16" loads *.fp16.safetensors where present, falling back to the plain
    // file (as diffusers' `variant=`). NULL or "" for the plain files.
    const char *variant;
    // Worker threads for the compute kernels; 0 = one per physical core (OMP_NUM_THREADS if set).
    int threads;
    lcm_precision precision; // default LCM_PRECISION_FP32
    // LoRA adapters (lora_count entries, may be 0); a key that matches no module is an error
    // unless lora_lenient is non-zero (then a warning on stderr).
    const lcm_lora *loras;
    int lora_count;
    int lora_lenient;
    // A ControlNetModel folder (diffusers layout: config.json + diffusion_pytorch_model
    // .safetensors) to steer the UNet, or NULL. Its block widths must match the UNet's
    // (LCM_ERR_UNSUPPORTED naming both folders otherwise); requests then need a control image.
    const char *controlnet;
    // An AutoencoderTiny (TAESD) folder (config.json + diffusion_pytorch_model.safetensors, like
    // madebyollin/taesd) used instead of the VAE decoder and for previews, or NULL. Borrowed.
    const char *taesd;
    lcm_vae_tiling vae_tiling; // default AUTO; ON = diffusers' enable_vae_tiling()
    // Memory the process may use for one generation (weights included), in bytes; 0 = three
    // quarters of the physical memory. AUTO tiling decodes in tiles when the resident memory plus
    // the untiled decode's estimated working memory would exceed it (src/pipeline/decode.h).
    uint64_t memory_budget;
    // A CLIP tokenizer folder (vocab.json + merges.txt) used instead of the model's own, or NULL.
    // Single-file checkpoints from other tools carry none: without this, $LCM_TOKENIZER, then the
    // Hugging Face cache of openai/clip-vit-large-patch14 (downloaded when online) are tried.
    const char *tokenizer;
    // Non-zero: neither read nor write the packed-weight cache. By default the packed form of the
    // UNet's, VAE's and ControlNet's layers (for this CPU's kernels) is written to the user's cache
    // folder ($XDG_CACHE_HOME/lcm/packed, default ~/.cache/lcm/packed; at most LCM_CACHE_LIMIT
    // bytes, default 20G, least recently used dropped) after the first load and mapped by later
    // ones, which then skip packing; LCM_CACHE=off in the environment disables it too. Models with
    // LoRA adapters and 8-bit models are not cached.
    int no_cache;
} lcm_pipeline_options;

// The packed-weight cache (see no_cache above). lcm_cache_describe returns a listing of the cache
// folder, one line per file (size, last use, name) and the total, as a malloc'd string the caller
// frees (NULL with lcm_last_error set on failure). lcm_cache_clear deletes every cache file and the
// table of measured kernel choices (measured again by the next load); *freed_bytes (may be NULL)
// receives the bytes freed. Clearing while another process has a file mapped is safe: the file
// stays readable by it until it exits.
char *lcm_cache_describe(void);
lcm_status lcm_cache_clear(uint64_t *freed_bytes);

// Fills *options with the defaults (no variant, one thread per core, fp32, no adapters).
void lcm_pipeline_options_init(lcm_pipeline_options *options);

// Loads the diffusers pipeline folder `model_dir` (model_index.json, text_encoder/, tokenizer/,
// unet/, vae/, scheduler/), or a single-file .safetensors checkpoint (see lcm_model_resolve for
// hub ids). `options` may be NULL for the defaults; it is only read during the
// call. On success *out is owned by the caller and must be released with lcm_pipeline_close.
// On failure *out is NULL and lcm_last_error() says what is wrong with which file.
// Memory: the library does not tune the host's allocator. With glibc, a long-lived process that
// generates repeatedly holds less when it fixes the mmap threshold, as the lcm program does:
// mallopt(M_MMAP_THRESHOLD, 4 << 20) (glibc otherwise raises it as large blocks are freed and keeps
// multi-megabyte buffers in the heap: measured +450 MB resident after a 512x512 generation).
lcm_status lcm_pipeline_open(const char *model_dir, const lcm_pipeline_options *options,
                             lcm_pipeline **out);

// Releases everything the pipeline owns. NULL is allowed.
void lcm_pipeline_close(lcm_pipeline *pipeline);

// What the LoRA adapters did when the pipeline was opened, one line per adapter:
// "FILE (scale S): N tensors applied to M modules (unet U, text_encoder T)"; "" without adapters.
// Owned by the pipeline; valid until lcm_pipeline_close.
const char *lcm_pipeline_lora_report(const lcm_pipeline *pipeline);

// The UNet's native image size (sample_size * 8), the default width and height. Never fails.
int lcm_pipeline_default_size(const lcm_pipeline *pipeline);

// The scheduler's original_inference_steps: the largest valid `steps`.
int lcm_pipeline_max_steps(const lcm_pipeline *pipeline);

// Called after each denoising step with the number of steps done (1..total). Return non-zero to
// cancel: lcm_generate then returns LCM_ERR_CANCELLED and produces no image (but see
// lcm_request.keep_partial and LCM_STOP_KEEP_PARTIAL).
#define LCM_STOP_KEEP_PARTIAL 2
typedef int (*lcm_progress_fn)(void *user_data, int steps_done, int total_steps,
                               double elapsed_seconds);

typedef struct lcm_image lcm_image;

// Called after each denoising step with a preview of the current denoised estimate (image
// `index` of the batch; once per image per step, before the progress callback): the TAESD decode
// at the image size when TAESD is loaded (after the last step it equals the final image), else a
// cheap latent->RGB projection at 1/8 of the image size. `preview` is borrowed for the duration
// of the call only.
typedef void (*lcm_preview_fn)(void *user_data, int steps_done, int total_steps, int index,
                               const lcm_image *preview);

typedef struct lcm_request {
    const char *prompt;   // UTF-8; borrowed for the duration of lcm_generate
    uint64_t seed;        // torch.manual_seed(seed) semantics: same seed -> same image as diffusers
    int steps;            // 1..lcm_pipeline_max_steps(); default 4
    // LCM-distilled UNets embed w = guidance_scale - 1. Other UNets (SD1.5 + LCM-LoRA) run
    // classifier-free guidance when guidance_scale > 1 (UNet batch [negative; positive]), as
    // diffusers' StableDiffusionPipeline. Default 8.5.
    float guidance_scale;
    // Multiples of 8; 0 = the init or control image's size rounded down to a multiple of 8 (as
    // diffusers), else lcm_pipeline_default_size().
    int width, height;
    int batch;            // images per prompt, drawn from one generator as diffusers does; default 1
    lcm_progress_fn progress; // optional
    void *progress_user_data;
    // Classifier-free guidance (UNets without an LCM guidance embedding, e.g. SD1.5 + LCM-LoRA):
    // the negative prompt (NULL = "") is used when guidance is active. With a non-empty negative
    // prompt a guidance_scale in [0, 1) means 1 + guidance_scale (the LCM-LoRA recipe's rule), so
    // the negative prompt is not silently ignored. A non-empty negative prompt on an LCM-distilled
    // UNet is LCM_ERR_INVALID_ARGUMENT (LatentConsistencyModelPipeline has none).
    const char *negative_prompt;
    // img2img: start from this image (borrowed; resized to width x height with Pillow's Lanczos if
    // needed), keeping (1 - strength) of it, exactly as LatentConsistencyModelImg2ImgPipeline
    // (the same steps are used for every UNet). NULL = text-to-image.
    const lcm_image *init_image;
    float strength; // 0 < strength <= 1; default 0.8 (diffusers' LCM img2img default)
    // ControlNet conditioning image (borrowed; already preprocessed: edges, normals, ...; resized
    // to width x height with Pillow's Lanczos if needed), required exactly when the pipeline was
    // opened with a ControlNet; control_scale default 1.0.
    const lcm_image *control_image;
    float control_scale;
    lcm_preview_fn preview; // optional; costs one small decode per step when set
    void *preview_user_data;
    // More ControlNet conditions for the same ControlNet (control_unit_count entries, borrowed; may
    // be 0), as diffusers' MultiControlNet: the residuals of every unit active at a step are summed.
    // control_image, when set, counts as one more unit {control_image, control_scale, 0, 1}. At most
    // LCM_MAX_CONTROL_UNITS units in all.
    const struct lcm_control_unit *control_units;
    int control_unit_count;
    // Non-zero: a progress callback that returns LCM_STOP_KEEP_PARTIAL stops early and keeps the
    // image: it is decoded from the denoised estimate of the last step done and lcm_generate
    // returns LCM_OK with it (A1111's interrupt); the caller knows from its callback that it
    // stopped. Any other non-zero return cancels as usual. Zero (default): every non-zero return
    // cancels.
    int keep_partial;
} lcm_request;

#define LCM_MAX_CONTROL_UNITS 8

// One ControlNet condition. The unit steers the steps whose fraction of the schedule lies within
// [guidance_start, guidance_end], as diffusers' control_guidance_start/end: step i of n runs the
// unit unless i/n < guidance_start or (i+1)/n > guidance_end.
typedef struct lcm_control_unit {
    const lcm_image *image; // preprocessed control map, resized to the output size; borrowed
    float scale;            // control_scale of this unit (usually 0..2)
    float guidance_start, guidance_end; // 0 <= start <= end <= 1 (0 and 1: every step)
} lcm_control_unit;

// Fills *request with the defaults of diffusers' LatentConsistencyModelPipeline: 4 steps,
// guidance 8.5, the model's native size, batch 1, seed 0, empty prompt, no callback.
void lcm_request_init(lcm_request *request);

struct lcm_image {
    int width, height;
    uint8_t *rgb; // width * height * 3 bytes, row-major RGB
};

typedef struct lcm_result {
    int count;          // = request batch
    lcm_image *images;  // count images
    uint64_t seed;      // the seed they were made with
} lcm_result;

// Generates request->batch images. On success *out is owned by the caller (lcm_result_free).
// Bad requests (size not a multiple of 8, steps out of range, ...) return
// LCM_ERR_INVALID_ARGUMENT with a message; nothing is allocated then.
lcm_status lcm_generate(lcm_pipeline *pipeline, const lcm_request *request, lcm_result **out);

// Releases a result and its images. NULL is allowed.
void lcm_result_free(lcm_result *result);

// Reads a PNG, JPEG or WebP file (told apart by its first bytes, not its name) as 8-bit RGB
// (alpha dropped, grayscale expanded), e.g. for lcm_request.init_image / control_image. Animated
// WebP and other formats (GIF, BMP, ...) are refused with a message naming the formats accepted.
// On success image->rgb is malloc'd and owned by the caller (lcm_image_release); on failure
// *image is zeroed and the message names the file. `path` is borrowed.
lcm_status lcm_image_read(const char *path, lcm_image *image);

// lcm_image_read for data in memory (an upload, a base64-decoded request field): `bytes` (borrowed)
// hold a PNG, JPEG or WebP image; `label` (borrowed) names the source in error messages. Same
// ownership as lcm_image_read.
lcm_status lcm_image_decode(const void *bytes, size_t size, const char *label, lcm_image *image);

// The width and height an image in memory declares, from its headers only (nothing is decoded):
// lets a server refuse an oversized upload cheaply. Fails like lcm_image_decode for data that is
// not a PNG, JPEG or WebP image (or whose header is damaged). All arguments borrowed.
lcm_status lcm_image_probe(const void *bytes, size_t size, const char *label, int *width, int *height);

// Frees image->rgb and zeroes *image. NULL is allowed.
void lcm_image_release(lcm_image *image);

// Canny edge map of `image` as a ControlNet control image, as controlnet_aux's CannyDetector
// (cv2.Canny(image, low, high): 3x3 Sobel, L1 magnitude, no blur; edges 255 on all three
// channels, 0 elsewhere; defaults 100 / 200). *edges gets a new image of the same size, owned by
// the caller (lcm_image_release). `image` is borrowed.
lcm_status lcm_canny(const lcm_image *image, double low_threshold, double high_threshold,
                     lcm_image *edges);

// ---- ControlNet control-image preprocessing ------------------------------------------------------
//
// What `lcm generate --control-preprocess`, `lcm preprocess` and `lcm serve` share: a photo in, the
// control map a ControlNet was trained on out. Canny is lcm_canny above; the surface-normal map of
// control_v11p_sd15_normalbae is controlnet_aux's NormalBaeDetector, below.

// controlnet_aux's defaults for NormalBaeDetector(detect_resolution, image_resolution).
#define LCM_NORMAL_DETECT_RESOLUTION 512
#define LCM_NORMAL_IMAGE_RESOLUTION 512

// Like lcm_image_read, but an RGBA PNG or a WebP with alpha is composited over white as controlnet_aux's HWC3 does
// (colour * alpha + 255 * (1 - alpha), truncated) instead of having its alpha dropped: the photo
// an annotator sees. Same ownership as lcm_image_read.
lcm_status lcm_image_read_composited(const char *path, lcm_image *image);

// The NormalBae network, loaded once and run on any number of images (one at a time: a detector
// must not be run from two threads at once).
typedef struct lcm_normal_detector lcm_normal_detector;

// Loads NormalBae weights (`scannet.pt` from lllyasviel/Annotators, read without executing its
// pickle, or a .safetensors conversion; keys with or without "module."). On success *out is owned
// by the caller (lcm_normal_detector_close); on failure it is NULL and the message names the file.
lcm_status lcm_normal_detector_open(const char *weights_path, lcm_normal_detector **out);

// Frees the detector. NULL is allowed.
void lcm_normal_detector_close(lcm_normal_detector *detector);

// NormalBaeDetector(image, detect_resolution, image_resolution): the short side of the image is
// scaled to detect_resolution (sides rounded to multiples of 64) for the network, the map is
// resized to image_resolution likewise. Resolutions 1..8192. `image` is borrowed; *map gets a new
// RGB image owned by the caller (lcm_image_release); on failure *map is zeroed.
lcm_status lcm_normal_detector_run(const lcm_normal_detector *detector, const lcm_image *image,
                                   int detect_resolution, int image_resolution, lcm_image *map);

// One-shot convenience: open `weights_path`, run on `image`, close. Same ownership as above.
lcm_status lcm_preprocess_normal(const char *weights_path, const lcm_image *image,
                                 int detect_resolution, int image_resolution, lcm_image *map);

// Writes one RGB image as a PNG, atomically (a temporary file in the same folder renamed into
// place: `path` never holds a partial file). `parameters` (may be NULL) is stored as the A1111
// `parameters` tEXt chunk. All arguments are borrowed.
lcm_status lcm_write_png(const char *path, const lcm_image *image, const char *parameters);

// ---- infotext: the A1111 `parameters` text of the images we write ------------------------------
//
// A1111's layout, which model sites and tools read back:
//   PROMPT (one or more lines)
//   Negative prompt: NEGATIVE (only when there is one; may continue on more lines)
//   Key: value, Key: value, Key: "quoted, value", ...
// A value containing ',', ':' or a newline is written as a JSON string ("..." with escapes), as
// A1111's infotext_utils.quote does; the last line is read back with A1111's own rule
//   \s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)
// (quoted values JSON-decoded), and only counts as the settings line when that rule matches at least
// three times there; otherwise it belongs to the prompt, as in A1111's parse_generation_parameters.

// One `Key: value` of the settings line. Both strings are owned by the lcm_infotext.
typedef struct lcm_infotext_field {
    char *key;
    char *value; // unquoted
} lcm_infotext_field;

typedef struct lcm_infotext {
    char *prompt;          // never NULL ("" when empty)
    char *negative_prompt; // never NULL ("" when none: no "Negative prompt:" line is written)
    lcm_infotext_field *fields; // in the order of the settings line
    int field_count;
} lcm_infotext;

// A new, empty infotext (prompt and negative prompt may be NULL for ""). On success *out is owned
// by the caller (lcm_infotext_free). The strings are copied.
lcm_status lcm_infotext_new(const char *prompt, const char *negative_prompt, lcm_infotext **out);

// Sets `key` to `value` (both copied): replaces the value of an existing field with that key,
// else appends a field. Keys must match A1111's key rule: a word character, then at least one of
// word characters, ' ', '-', '/' (LCM_ERR_INVALID_ARGUMENT naming the key otherwise).
lcm_status lcm_infotext_set(lcm_infotext *info, const char *key, const char *value);

// The value of `key` (exact match), or NULL. Owned by `info`; valid until it changes or is freed.
const char *lcm_infotext_get(const lcm_infotext *info, const char *key);

// Writes the text (layout above). On success *text is malloc'd and owned by the caller (free()).
lcm_status lcm_infotext_format(const lcm_infotext *info, char **text);

// Reads an infotext written by us or by A1111 (and tools that follow its format), as A1111's
// parse_generation_parameters splits it: prompt lines, optional "Negative prompt:" lines, the
// settings line; leading/trailing whitespace of the whole text and of each prompt line is
// dropped. Values are returned as written (strings), quoted ones JSON-decoded; a key that repeats
// keeps its last value. Any text parses (at worst all of it is the prompt); `text` is borrowed and
// at most 1 MiB (LCM_ERR_INVALID_ARGUMENT beyond). On success *out is owned by the caller.
lcm_status lcm_infotext_parse(const char *text, lcm_infotext **out);

// Frees the infotext and its strings. NULL is allowed.
void lcm_infotext_free(lcm_infotext *info);

// The A1111 `parameters` text chunk of a PNG in memory: *text is malloc'd (caller frees), or NULL
// when the PNG has no such chunk (still LCM_OK). tEXt, zTXt and iTXt chunks are read. A PNG the
// reader refuses is LCM_ERR_FORMAT naming `label`. `png` and `label` are borrowed.
lcm_status lcm_png_read_parameters(const void *png, size_t size, const char *label, char **text);

// This library's version, "x.y.z" (written into infotexts as "Version: lcm.c x.y.z"). Static.
const char *lcm_version(void);

// A1111's hashes of a checkpoint file (hex digits, lowercase, NUL-terminated):
//   sha256       SHA-256 of the whole file (A1111's `sha256`; its first 10 digits are the
//                "Model hash" of the infotext and the [hash] of checkpoint titles, which model
//                sites look models up by);
//   legacy_hash  SHA-256 of the 64 KiB at offset 1 MiB, first 8 digits (A1111's old model_hash,
//                still among a checkpoint's ids).
typedef struct lcm_model_hashes {
    char sha256[65];
    char short_hash[11];
    char legacy_hash[9];
} lcm_model_hashes;

// Hashes the file at `path` (borrowed); errors name it.
lcm_status lcm_model_hashes_of_file(const char *path, lcm_model_hashes *out);

// A1111's hash of a LoRA file, of which "Lora hashes" writes the first 12 digits: for a
// .safetensors file the `sshs_model_hash` of its metadata when present, else SHA-256 of the bytes
// after the header (the kohya/"addnet" hash: the metadata may change, the weights' hash not); for
// other files SHA-256 of the whole file. `hex` gets 64 hex digits + NUL.
lcm_status lcm_lora_hash(const char *path, char hex[65]);

// The file whose hash is the pipeline's "Model hash": a single-file checkpoint is itself; for a
// diffusers folder, which A1111 cannot load and so has no hash for, it is the UNet weights file
// that was loaded (unet/diffusion_pytorch_model[.VARIANT].safetensors, or the shard index of
// sharded weights): the file that sets one fine-tune apart from another (text encoder and VAE are
// mostly shared). Owned by the pipeline; valid until lcm_pipeline_close.
const char *lcm_pipeline_model_file(const lcm_pipeline *pipeline);

// The infotext of image `index` of a generation: prompt (with A1111's "<lora:NAME:SCALE>" for each
// adapter the pipeline fused, NAME the file name without extension), negative prompt, Steps,
// Sampler (LCM), CFG scale, Seed, Size (width x height), Model hash, Model (`model_name`, borrowed;
// a .safetensors/.ckpt/.pt/.pth/.bin extension dropped, as A1111 names checkpoints),
// Denoising strength (img2img), Batch size / Batch pos (batches), Lora hashes ("NAME: HASH12, ..."),
// Version. `request` is the one generated with (borrowed). The model and LoRA hashes are computed on
// the first call and kept (reading the files once: ~1 s per GB); like lcm_generate, not to be called
// on one pipeline from two threads at once. On success *out is owned by the caller
// (lcm_infotext_free); callers may add fields (e.g. "ControlNet") before lcm_infotext_format.
lcm_status lcm_pipeline_infotext(lcm_pipeline *pipeline, const lcm_request *request, int index,
                                 int width, int height, const char *model_name, lcm_infotext **out);

// How far image b is from image a (same size): PSNR in dB over all RGB values (peak 255; +inf
// when identical) and mean SSIM (Gaussian 11x11 window, sigma 1.5, per channel, averaged).
// Images are borrowed; fails only for NULL/mismatched arguments or out of memory.
lcm_status lcm_image_compare(const lcm_image *a, const lcm_image *b, double *psnr, double *ssim);
// ---- models by name: folders, single files, Hugging Face hub ids --------------------------------
//
// `--model` may be a diffusers folder, a single-file checkpoint (.safetensors in the original
// Stable Diffusion layout, or one written by `lcm convert`), or a hub id "ORG/NAME[@REVISION]".
// lcm_pipeline_open takes folders and single files; hub ids are turned into a folder first by
// lcm_model_resolve (it may download, so it is a separate, explicit step). The one download
// lcm_pipeline_open itself may make: a single file that carries no tokenizer (A1111/Civitai
// files), given no lcm_pipeline_options.tokenizer and no $LCM_TOKENIZER, gets the tokenizer files
// of openai/clip-vit-large-patch14 (~2 MB) through the cache; never with HF_HUB_OFFLINE=1.
//
// Hub ids use the Hugging Face cache exactly as huggingface_hub lays it out, so models fetched by
// diffusers are used without downloading again and vice versa:
//   CACHE/models--ORG--NAME/refs/REVISION           the commit hash REVISION points to
//   CACHE/models--ORG--NAME/blobs/ETAG              file contents, named by the hub's ETag
//   CACHE/models--ORG--NAME/snapshots/COMMIT/PATH   relative symlinks to ../../blobs/ETAG
// CACHE is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.

// Progress of a download: the bytes of the current file and of the whole pull (bytes already in
// the cache are not counted). Return non-zero to cancel (LCM_ERR_CANCELLED; the partial file is
// kept and the next pull resumes it).
typedef int (*lcm_download_progress_fn)(void *user_data, const char *file, uint64_t file_done,
                                        uint64_t file_total, uint64_t all_done, uint64_t all_total);

// Called once before anything is downloaded, with the number of files and bytes to fetch.
typedef void (*lcm_download_start_fn)(void *user_data, const char *id, int files, uint64_t bytes);

typedef struct lcm_hub_options {
    const char *revision;  // branch, tag or commit; NULL = the id's @REVISION, else "main"
    const char *variant;   // weights variant to fetch ("fp16"), with the fallback of
                           // lcm_pipeline_options.variant; NULL for the plain files
    const char *endpoint;  // NULL = $HF_ENDPOINT, else https://huggingface.co
    const char *token;     // NULL = $HF_TOKEN (sent as "Authorization: Bearer")
    const char *cache_dir; // NULL = $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub
    int offline;           // non-zero (or HF_HUB_OFFLINE=1): never use the network
    lcm_download_start_fn start;       // optional
    lcm_download_progress_fn progress; // optional
    void *user_data;                   // passed to both callbacks
} lcm_hub_options;

// Fills *options with the defaults (everything NULL/0: environment variables decide).
void lcm_hub_options_init(lcm_hub_options *options);

// Non-zero when `model` is not an existing path and has the form ORG/NAME[@REVISION].
int lcm_is_hub_id(const char *model);

// Makes sure the files a pipeline needs (configs, tokenizer, the chosen variant's .safetensors
// weights) of hub model `id` are in the cache, downloading what is missing (resumable, verified,
// atomic), and returns the snapshot folder in *snapshot_dir (malloc'd: the caller frees it with
// free()). A second call finds everything in the cache and downloads nothing. Offline, the cache
// alone answers. `options` may be NULL.
lcm_status lcm_hub_pull(const char *id, const lcm_hub_options *options, char **snapshot_dir);

// What lcm_pipeline_open can load for `model`: an existing path is returned as is, a hub id is
// pulled (lcm_hub_pull). *path is malloc'd; the caller frees it with free().
lcm_status lcm_model_resolve(const char *model, const lcm_hub_options *options, char **path);

// lcm_model_resolve for a repository that holds ONE diffusers model at its root (config.json +
// diffusion_pytorch_model[.VARIANT].safetensors or its .index.json shards): a TAESD such as
// madebyollin/taesd, or a ControlNet such as lllyasviel/control_v11p_sd15_normalbae (for
// lcm_pipeline_options.taesd / .controlnet). An existing path is returned as is; a hub id
// "ORG/NAME[@REVISION]" gets just those files into the cache (options->variant with the fallback to
// the plain file; never .bin/.ckpt/ONNX/Flax files) and its snapshot folder is returned. Offline,
// the cache alone answers. *path is malloc'd; the caller frees it with free().
lcm_status lcm_single_model_resolve(const char *model, const lcm_hub_options *options, char **path);

// Writes the diffusers pipeline folder `model_dir` as one .safetensors checkpoint at `path` in the
// original Stable Diffusion layout (model.diffusion_model.*, first_stage_model.*,
// cond_stage_model.transformer.*), dtypes kept, with the folder's configs stored in __metadata__ so
// lcm_pipeline_open(path) gives exactly the pipeline of the folder; its tokenizer files are stored
// there too, so the file alone is enough. The file appears only when complete.
lcm_status lcm_convert_to_single_file(const char *model_dir, const char *path);

// ---- tools: what the lcm program's commands need beyond generation ----------------------------
//
// `lcm tokenize`, `info`, `synth`, `quantize` and `bench` are built on these, so embedders can do
// what the commands do. The logic lives in src/tools/; these are its public face.

// The token ids a prompt becomes: CLIP's context length, and the most bytes of text taken.
#define LCM_TOKEN_COUNT 77
#define LCM_MAX_PROMPT_BYTES (16 << 20)

// Tokenizes `length` bytes of `text` (UTF-8, checked; need not be NUL-terminated) with the CLIP
// tokenizer in `tokenizer_dir` (vocab.json + merges.txt): ids gets the LCM_TOKEN_COUNT ids the text
// encoder reads (start, tokens, end, padding), *untruncated_count (may be NULL) the number of ids
// before truncation, start and end included. All arguments are borrowed; nothing is kept.
lcm_status lcm_tokenize(const char *tokenizer_dir, const char *text, size_t length,
                        int32_t ids[LCM_TOKEN_COUNT], int *untruncated_count);

// Describes the model folder or single-file checkpoint at `path` (not a hub id: see
// lcm_model_resolve) without loading any network, as the JSON document `lcm info --json` prints:
// folder, cpu, cpu_features, kernel_choice, kernel_cache, variant, pipeline, diffusers_version,
// components (name, library, class, config summary, weights file, dtypes, tensors, parameters) and
// absent_components. `variant` (may be NULL) picks the weights files as lcm_pipeline_options.variant
// does. On success *json is malloc'd, indented JSON text owned by the caller (free()).
lcm_status lcm_model_describe(const char *path, const char *variant, char **json);

// Weight dtypes a synthesized model can be written in.
typedef enum lcm_weight_dtype {
    LCM_WEIGHT_FP32 = 0,
    LCM_WEIGHT_FP16 = 1,
    LCM_WEIGHT_BF16 = 2,
} lcm_weight_dtype;

// Called by lcm_synth_model before each network is synthesized (weights_file NULL, tensor_count 0)
// and after its weights file is written. `component` is NULL for a single-model folder. The
// strings are borrowed for the duration of the call only.
typedef void (*lcm_synth_progress_fn)(void *user_data, const char *component, const char *class_name,
                                      const char *weights_file, size_t tensor_count);

// Writes a full-size model with random weights from config files alone (for benchmarks): the
// diffusers folder `config_dir` (model_index.json, */config.json, the scheduler's and tokenizer's
// files) or a single-model folder (config.json at its root, e.g. a TAESD) becomes `out_dir`, the
// same layout with every network's weights in `dtype`, the tensors and shapes the loaders read.
// `tokenizer_dir` (may be NULL) supplies vocab.json + merges.txt when the config folder's
// tokenizer/ lacks them. `progress` may be NULL. All arguments are borrowed.
lcm_status lcm_synth_model(const char *config_dir, const char *out_dir, const char *tokenizer_dir,
                           lcm_weight_dtype dtype, lcm_synth_progress_fn progress, void *user_data);

// ---- 8-bit quantization (`lcm quantize`) ----

// How the calibration turns observed activations into a range.
typedef enum lcm_activation_range {
    LCM_ACTIVATION_RANGE_MINMAX = 0,     // [min, max] as observed
    LCM_ACTIVATION_RANGE_PERCENTILE = 1, // [p-th lowest, p-th highest] from a histogram
} lcm_activation_range;

typedef struct lcm_quantize_options {
    const char *model_dir;        // a diffusers folder with unet/ (ControlNet mode: the base model)
    const char *calibration_path; // prompts, one per line (blank lines skipped)
    const char *output_dir;       // created whole or not at all; must not be the model folder
    int samples;                  // calibration generations (prompts cycled); 0 = one per prompt
    int steps;                    // per generation; default 4
    uint64_t seed;                // sample i uses seed + i
    float guidance;               // guidance scale; negative (default) = lcm_request_init's
    lcm_activation_range method;  // default PERCENTILE
    int symmetric_activations;    // non-zero: ranges symmetric about 0 (zero point 128)
    double percentile;            // for PERCENTILE; default 99.99
    int compress_weights;         // also the text encoder's and VAE's weights in 8 bits
    int vae;                      // also the VAE decoder in int8
    // Layer names kept in float32 (NULL-terminated; a name covers the layers below it); NULL = the
    // defaults of what is quantized (UNet: conv_in, conv_out).
    const char *const *keep_fp32;
    int quiet;                    // no progress bar on stderr
    // ControlNet mode: quantize this ControlNet folder instead of the model's UNet, calibrating
    // with the base model, these control images (cycled over the samples) and adapters.
    const char *controlnet_dir;
    const char *const *control_images;
    int control_image_count;
    const lcm_lora *loras;
    int lora_count;
    int weights_only;             // ControlNet mode: 8-bit weights only, no calibration
    // Optional: once *interrupted is non-zero (e.g. set by a signal handler) the work stops, the
    // partial output is removed and LCM_ERR_CANCELLED is returned.
    const volatile sig_atomic_t *interrupted;
} lcm_quantize_options;

// Fills *options with the defaults above (everything else NULL/0).
void lcm_quantize_options_init(lcm_quantize_options *options);

// Writes the 8-bit model (or ControlNet) of `options` (borrowed, with everything it points to,
// for the duration of the call). Nothing is returned to own; output_dir appears only when complete.
lcm_status lcm_quantize(const lcm_quantize_options *options);

// What a folder written by lcm_quantize holds.
typedef enum lcm_quantization {
    LCM_QUANTIZED_NONE = 0,         // not quantized
    LCM_QUANTIZED_INT8 = 1,         // 8-bit weights and activations
    LCM_QUANTIZED_WEIGHTS_ONLY = 2, // 8-bit weights, float32 compute
} lcm_quantization;

// NONE or INT8 for a model folder (whether its unet/ holds a quantization.json); never fails.
lcm_quantization lcm_model_quantization(const char *model_dir);

// The quantization of a ControlNet folder (its quantization.json); NONE when absent or unreadable.
lcm_quantization lcm_controlnet_quantization(const char *controlnet_dir);

// Which int8 kernels 8-bit models run on here, in words ("int8 kernels, VNNI", or the reference
// path). Static storage.
const char *lcm_int8_kernels(void);

// ---- the machine and its kernels ----

typedef struct lcm_system_info {
    const char *cpu_name;           // static
    const char *cpu_features;       // the features the kernels use, e.g. "avx2 fma"; static
    int kernels_measured;           // non-zero: kernels chosen by measurement (LCM_TUNE not off)
    const char *kernel_tuning_file; // where measured choices are kept; "" when no cache folder
} lcm_system_info;

// Fills *info (pointers to static storage). Never fails.
void lcm_system_info_get(lcm_system_info *info);

// The kernel decisions this process has made or read so far, one line per layer shape
// ("conv fp32 320->320 k3 s1 p1 @64: direct 182.0 GFLOP/s (onednn 173.0)"), as a malloc'd string the
// caller frees ("" when none; NULL with lcm_last_error set when out of memory).
char *lcm_kernel_decisions(void);

// Worker threads of the compute kernels, process-wide: threads > 0 sets them, 0 leaves them.
// Returns the count in effect. (lcm_pipeline_open sets them from lcm_pipeline_options.threads.)
int lcm_compute_threads(int threads);

typedef enum lcm_attention_kernel {
    LCM_ATTENTION_AUTO = 0,  // chosen by CPU
    LCM_ATTENTION_FLASH = 1, // fused, blockwise softmax
    LCM_ATTENTION_GEMM = 2,  // matrix products over tiles
} lcm_attention_kernel;

// The attention kernel every later attention uses, process-wide (AUTO restores the choice by CPU).
void lcm_set_attention_kernel(lcm_attention_kernel kernel);

// The largest width or height the image readers accept (lcm_image_read, lcm_image_decode).
#define LCM_IMAGE_MAX_SIDE 16384

// Encodes `image` (borrowed) as a PNG in memory with `parameters` (may be NULL) as its A1111
// `parameters` tEXt chunk. On success *png is malloc'd and owned by the caller (free()).
lcm_status lcm_png_encode(const lcm_image *image, const char *parameters, void **png, size_t *size);

// ---- benchmarks (`lcm bench`) ----

// Arithmetic work in FLOPs (a multiply-accumulate is 2), by kind of layer.
typedef struct lcm_flops {
    double conv3x3;   // convolutions with a kernel larger than 1
    double conv1x1;   // 1x1 convolutions
    double linear;    // linear layers
    double attention; // Q·Kᵀ and P·V
} lcm_flops;

// The machine's peak in `precision`, measured now with oneDNN products of side `size` (best of a
// few): fp32 the better of dnnl_sgemm and an f32 matmul, bf16 a bf16 matmul (or the fp32 peak where
// the CPU has no AVX512-BF16). `method` (method_size bytes) gets how it was measured. Returns GFLOP/s,
// 0 when it cannot be measured.
double lcm_bench_peak(lcm_precision precision, int size, char *method, size_t method_size);

// The stages of a generation a benchmark times.
typedef enum lcm_bench_stage {
    LCM_BENCH_TEXT_ENCODING = 0,
    LCM_BENCH_UNET_STEP,        // one denoising step: the ControlNet (when loaded) and the UNet
    LCM_BENCH_VAE_DECODE,
    LCM_BENCH_VAE_DECODE_TILED, // with a TAESD only: the tiled VAE decode of the same latents
    LCM_BENCH_TAESD_DECODE,     // with a TAESD only
    LCM_BENCH_END_TO_END,       // a whole lcm_generate
    LCM_BENCH_STAGE_COUNT,
} lcm_bench_stage;

// "text_encoding", "unet_step", ...: static.
const char *lcm_bench_stage_name(lcm_bench_stage stage);

typedef struct lcm_bench_options {
    const char *prompt;             // of the text encoding and end-to-end runs; borrowed until lcm_bench_close
    int width, height, steps;       // as lcm_request (checked the same way)
    float guidance;
    const lcm_image *control_image; // with a ControlNet pipeline; borrowed until lcm_bench_close
    float control_scale;
    // A TAESD folder (not a hub id): its decode and the tiled VAE decode (tiles as diffusers'
    // enable_tiling, halved until this size tiles) are timed beside the VAE's; NULL for none.
    const char *taesd;
} lcm_bench_options;

// What lcm_bench_open worked out.
typedef struct lcm_bench_plan {
    int timed[LCM_BENCH_STAGE_COUNT];       // non-zero for the stages lcm_bench_run can time
    lcm_flops flops[LCM_BENCH_STAGE_COUNT]; // each stage's work, from the model configs
    int classifier_free;                    // each UNet step runs a batch of 2 (guidance > 1)
    char tiles[64];                         // the tiled decode's tiles in words, "" without one
} lcm_bench_plan;

typedef struct lcm_bench lcm_bench;

// Prepares timing the stages of `pipeline` (borrowed; it must outlive the bench): checks the
// request as lcm_generate would, loads the TAESD, makes the inputs the stages share (prompt
// embeddings, latents) and fills *plan. On success *out is owned by the caller (lcm_bench_close).
lcm_status lcm_bench_open(lcm_pipeline *pipeline, const lcm_bench_options *options, lcm_bench **out,
                          lcm_bench_plan *plan);

// Runs `stage` once: *wall_seconds and *cpu_seconds (this process's CPU time, all threads) receive
// its duration. The first run of a stage includes its warm-up.
lcm_status lcm_bench_run(lcm_bench *bench, lcm_bench_stage stage, double *wall_seconds,
                         double *cpu_seconds);

// Frees the bench (not the pipeline). NULL is allowed.
void lcm_bench_close(lcm_bench *bench);

// The attention kernels on Stable Diffusion 1.5's shapes at 512x512 (`lcm bench --attention`).
#define LCM_BENCH_ATTENTION_KERNELS 3

typedef struct lcm_attention_timing {
    const char *shape;  // "unet self 64x64", ...; static
    int64_t nq, nk;     // queries and keys
    int heads, head_dim;
    double gflop;       // of one call
    // Best of the runs for each kernel (lcm_bench_attention_kernel_name), in milliseconds; -1 where
    // the kernel cannot run on this CPU.
    double wall_ms[LCM_BENCH_ATTENTION_KERNELS], cpu_ms[LCM_BENCH_ATTENTION_KERNELS];
} lcm_attention_timing;

// The number of shapes, and the name of kernel `index` ("gemm_tiles_fp32", ...; static).
int lcm_bench_attention_shape_count(void);
const char *lcm_bench_attention_kernel_name(int index);

// Times every kernel on shape `index` (best of `runs` after a warm-up) into *out.
lcm_status lcm_bench_attention(int index, int runs, lcm_attention_timing *out);

#ifdef __cplusplus
}
#endif
#endif
