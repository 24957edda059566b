// FLOP counts from configs; see flops.h for the formulas.
#include "tools/flops.h"

double flop_total(const flop_count *f) { return f->conv3x3 + f->conv1x1 + f->linear + f->attention; }

// A convolution producing an out_h x out_w map.
static void conv(flop_count *f, int batch, int in, int out, int kernel, int out_h, int out_w) {
    double n = 2.0 * batch * in * out * (double)kernel * kernel * out_h * out_w;
    if (kernel == 1) f->conv1x1 += n;
    else f->conv3x3 += n;
}

static void linear(flop_count *f, double tokens, int in, int out) {
    f->linear += 2.0 * tokens * in * out;
}

// Scaled dot-product attention of nq queries over nk keys, `channels` = heads * head size.
static void attention(flop_count *f, int batch, double nq, double nk, int channels) {
    f->attention += 4.0 * batch * nq * nk * channels;
}

// ResNet block (GroupNorm, SiLU, conv 3x3, + time embedding projection, GroupNorm, SiLU, conv 3x3,
// 1x1 shortcut when the width changes) at h x w.
static void resnet(flop_count *f, int batch, int in, int out, int h, int w, int temb_dim) {
    conv(f, batch, in, out, 3, h, w);
    if (temb_dim > 0) linear(f, batch, temb_dim, out);
    conv(f, batch, out, out, 3, h, w);
    if (in != out) conv(f, batch, in, out, 1, h, w);
}

// Transformer2DModel with `depth` BasicTransformerBlocks: proj_in, [self-attention, cross-attention,
// GEGLU feed-forward (inner 4C)] x depth, proj_out.
static void transformer(flop_count *f, const unet_config *cfg, int batch, int channels, int depth,
                        int h, int w, int context_tokens) {
    double tokens = (double)batch * h * w, n = (double)h * w;
    if (cfg->use_linear_projection) linear(f, tokens, channels, channels);
    else conv(f, batch, channels, channels, 1, h, w);
    for (int i = 0; i < depth; i++) {
        linear(f, tokens, channels, channels * 3); // attn1 q, k, v
        attention(f, batch, n, n, channels);
        linear(f, tokens, channels, channels); // attn1 out
        linear(f, tokens, channels, channels); // attn2 q
        linear(f, (double)batch * context_tokens, cfg->cross_attention_dim, channels * 2); // k, v
        attention(f, batch, n, context_tokens, channels);
        linear(f, tokens, channels, channels);         // attn2 out
        linear(f, tokens, channels, channels * 8);     // GEGLU projection to 2 x 4C
        linear(f, tokens, channels * 4, channels);     // ff out
    }
    if (cfg->use_linear_projection) linear(f, tokens, channels, channels);
    else conv(f, batch, channels, channels, 1, h, w);
}

// Spatial size of each UNet level: stride-2 convs with padding 1 give ceil(size / 2).
static void level_sizes(const unet_config *cfg, int latent_h, int latent_w, int *hs, int *ws) {
    hs[0] = latent_h;
    ws[0] = latent_w;
    for (int i = 1; i < cfg->num_blocks; i++) {
        hs[i] = (hs[i - 1] + 1) / 2;
        ws[i] = (ws[i - 1] + 1) / 2;
    }
}

// The encoder half the UNet and the ControlNet share: time embedding, conv_in, down blocks, mid block.
static void encoder_half(flop_count *f, const unet_config *cfg, int batch, const int *hs, const int *ws,
                         int context_tokens) {
    int n = cfg->num_blocks, temb = cfg->time_embed_dim, c0 = cfg->block_out_channels[0];
    if (cfg->time_cond_proj_dim > 0) linear(f, batch, cfg->time_cond_proj_dim, c0);
    linear(f, batch, c0, temb);
    linear(f, batch, temb, temb);
    conv(f, batch, cfg->in_channels, c0, 3, hs[0], ws[0]);

    for (int i = 0; i < n; i++) {
        int in = i == 0 ? c0 : cfg->block_out_channels[i - 1], out = cfg->block_out_channels[i];
        for (int l = 0; l < cfg->layers_per_block[i]; l++) {
            resnet(f, batch, l == 0 ? in : out, out, hs[i], ws[i], temb);
            if (cfg->down_block_has_attention[i])
                transformer(f, cfg, batch, out, cfg->transformer_layers_per_block[i], hs[i], ws[i],
                            context_tokens);
        }
        if (i < n - 1) conv(f, batch, out, out, 3, hs[i + 1], ws[i + 1]);
    }

    int last = cfg->block_out_channels[n - 1];
    resnet(f, batch, last, last, hs[n - 1], ws[n - 1], temb);
    transformer(f, cfg, batch, last, cfg->transformer_layers_per_block[n - 1], hs[n - 1], ws[n - 1],
                context_tokens);
    resnet(f, batch, last, last, hs[n - 1], ws[n - 1], temb);
}

flop_count unet_flops(const unet_config *cfg, int batch, int latent_h, int latent_w,
                      int context_tokens) {
    flop_count f = {0};
    int n = cfg->num_blocks, temb = cfg->time_embed_dim, c0 = cfg->block_out_channels[0];
    int hs[UNET_MAX_BLOCKS], ws[UNET_MAX_BLOCKS];
    level_sizes(cfg, latent_h, latent_w, hs, ws);
    encoder_half(&f, cfg, batch, hs, ws, context_tokens);

    for (int index = 0; index < n; index++) {
        int mirror = n - 1 - index, out = cfg->block_out_channels[mirror];
        int prev_out = cfg->block_out_channels[index == 0 ? n - 1 : mirror + 1];
        int skip_in = cfg->block_out_channels[mirror > 0 ? mirror - 1 : 0];
        int layers = cfg->layers_per_block[mirror] + 1;
        for (int l = 0; l < layers; l++) {
            int from_below = l == 0 ? prev_out : out, from_skip = l == layers - 1 ? skip_in : out;
            resnet(&f, batch, from_below + from_skip, out, hs[mirror], ws[mirror], temb);
            if (cfg->up_block_has_attention[index])
                transformer(&f, cfg, batch, out, cfg->transformer_layers_per_block[mirror], hs[mirror],
                            ws[mirror], context_tokens);
        }
        if (index < n - 1) conv(&f, batch, out, out, 3, hs[mirror - 1], ws[mirror - 1]);
    }
    conv(&f, batch, c0, cfg->out_channels, 3, hs[0], ws[0]);
    return f;
}

flop_count controlnet_flops(const controlnet_config *cfg, int batch, int latent_h, int latent_w,
                            int context_tokens) {
    flop_count f = {0};
    const unet_config *u = &cfg->unet;
    int n = u->num_blocks, c0 = u->block_out_channels[0];
    int hs[UNET_MAX_BLOCKS], ws[UNET_MAX_BLOCKS];
    level_sizes(u, latent_h, latent_w, hs, ws);
    // Conditioning embedding at image resolution: conv_in, then per width a conv and a stride-2
    // conv to the next width, conv_out at latent resolution (models/controlnet.c).
    int h = latent_h * 8, w = latent_w * 8;
    const int *emb = cfg->embedding_channels;
    conv(&f, batch, cfg->conditioning_channels, emb[0], 3, h, w);
    for (int i = 0; i + 1 < cfg->embedding_count; i++) {
        conv(&f, batch, emb[i], emb[i], 3, h, w);
        h = (h + 1) / 2;
        w = (w + 1) / 2;
        conv(&f, batch, emb[i], emb[i + 1], 3, h, w);
    }
    conv(&f, batch, emb[cfg->embedding_count - 1], c0, 3, h, w);
    encoder_half(&f, u, batch, hs, ws, context_tokens);
    // The 1x1 "zero convs" on every skip connection (conv_in, each down-block layer, each
    // downsampler) and on the mid block.
    conv(&f, batch, c0, c0, 1, hs[0], ws[0]);
    for (int i = 0; i < n; i++) {
        int out = u->block_out_channels[i];
        for (int l = 0; l < u->layers_per_block[i]; l++) conv(&f, batch, out, out, 1, hs[i], ws[i]);
        if (i < n - 1) conv(&f, batch, out, out, 1, hs[i + 1], ws[i + 1]);
    }
    conv(&f, batch, u->block_out_channels[n - 1], u->block_out_channels[n - 1], 1, hs[n - 1], ws[n - 1]);
    return f;
}

flop_count vae_decode_flops(const vae_config *cfg, int batch, int latent_h, int latent_w) {
    flop_count f = {0};
    int last = cfg->block_count - 1, h = latent_h, w = latent_w;
    const int *ch = cfg->block_out_channels;
    if (cfg->use_post_quant_conv)
        conv(&f, batch, cfg->latent_channels, cfg->latent_channels, 1, h, w);
    conv(&f, batch, cfg->latent_channels, ch[last], 3, h, w);
    // Mid block: ResNet, single-head self-attention over h*w positions, ResNet.
    resnet(&f, batch, ch[last], ch[last], h, w, 0);
    if (cfg->mid_block_add_attention) {
        double tokens = (double)batch * h * w;
        linear(&f, tokens, ch[last], ch[last] * 3);
        attention(&f, batch, (double)h * w, (double)h * w, ch[last]);
        linear(&f, tokens, ch[last], ch[last]);
    }
    resnet(&f, batch, ch[last], ch[last], h, w, 0);
    for (int i = 0; i <= last; i++) {
        int in = ch[i == 0 ? last : last - i + 1], out = ch[last - i];
        for (int l = 0; l < cfg->layers_per_block + 1; l++) resnet(&f, batch, l == 0 ? in : out, out, h, w, 0);
        if (i != last) {
            h *= 2;
            w *= 2;
            conv(&f, batch, out, out, 3, h, w);
        }
    }
    conv(&f, batch, ch[0], cfg->out_channels, 3, h, w);
    return f;
}

// DecoderTiny (models/taesd.c): conv(L->C), then per stage its blocks of three C->C convs and,
// but for the last stage, a 2x upsample and a C->C conv; a C->out conv at the end.
flop_count taesd_decode_flops(const taesd_config *cfg, int batch, int latent_h, int latent_w) {
    flop_count f = {0};
    int c = cfg->channels, h = latent_h, w = latent_w;
    conv(&f, batch, cfg->latent_channels, c, 3, h, w);
    for (int i = 0; i < cfg->stage_count; i++) {
        for (int b = 0; b < cfg->decoder_blocks[i]; b++)
            for (int k = 0; k < 3; k++) conv(&f, batch, c, c, 3, h, w);
        if (i == cfg->stage_count - 1) break;
        h *= 2;
        w *= 2;
        conv(&f, batch, c, c, 3, h, w);
    }
    conv(&f, batch, c, cfg->out_channels, 3, h, w);
    return f;
}

flop_count clip_text_flops(const clip_text_config *cfg, int batch, int tokens) {
    flop_count f = {0};
    double rows = (double)batch * tokens;
    int c = cfg->hidden_size;
    for (int i = 0; i < cfg->num_hidden_layers; i++) {
        linear(&f, rows, c, 3 * c); // q, k, v
        attention(&f, batch, tokens, tokens, c);
        linear(&f, rows, c, c); // out_proj
        linear(&f, rows, c, cfg->intermediate_size);
        linear(&f, rows, cfg->intermediate_size, c);
    }
    return f;
}
