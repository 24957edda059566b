// Guidance-scale embedding; see guidance_embedding.h. Each step is rounded to float32 in the same
// order as the torch expression, so the only differences from the reference come from libm's
// expf/sinf/cosf versus torch's vectorised ones.
#include "models/guidance_embedding.h"

#include <math.h>

void lcm_guidance_embedding(float w, int dim, float *out) {
    if (dim <= 0 || !out) return;
    int half = dim / 2;
    float scaled_w = w * 1000.0f;
    // torch.log(torch.tensor(10000.0)) / (half_dim - 1), all float32.
    float step = logf(10000.0f) / (float)(half - 1);
    for (int i = 0; i < half; i++) {
        float frequency = expf((float)i * -step);
        float angle = scaled_w * frequency;
        out[i] = sinf(angle);
        out[half + i] = cosf(angle);
    }
    if (dim % 2) out[dim - 1] = 0.0f;
}
