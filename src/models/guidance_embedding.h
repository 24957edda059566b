// The LCM guidance-scale embedding ("w-embedding"): how a Latent Consistency Model is told the
// classifier-free guidance strength it was distilled for, instead of running the unet twice.
//
// Same numbers as diffusers' LatentConsistencyModelPipeline.get_guidance_scale_embedding (v0.26.3),
// evaluated in float32 like torch:
//   w *= 1000; half = dim/2; f[i] = exp(i * -(log(10000)/(half-1))); e[i] = w*f[i];
//   out = [sin(e[0..half)), cos(e[0..half))] (+ one trailing zero when dim is odd).
// The pipeline passes w = guidance_scale - 1 and feeds `out` to the unet as timestep_cond.
//
// Precision note: the sine arguments reach ~1.4e4 for typical guidance scales, where one float32
// ulp is ~1e-3, so any float32 evaluation (torch's included) differs from the exact value by up to
// ~1e-3; see the fixtures README, sections 6 and 8.
#ifndef LCM_MODELS_GUIDANCE_EMBEDDING_H
#define LCM_MODELS_GUIDANCE_EMBEDDING_H

// Writes `dim` floats to out. `w` is guidance_scale - 1, rounded to float32 the way torch.tensor()
// rounds the Python float: compute it as (float)((double)guidance_scale - 1.0). dim should be at
// least 4 (with half = 1 the reference divides by zero and produces NaN, and so does this).
// dim <= 0 writes nothing.
void lcm_guidance_embedding(float w, int dim, float *out);

#endif
