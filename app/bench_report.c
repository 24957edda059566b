// `lcm bench`'s output: the stage table, its JSON form, the kernel decisions and the attention
// kernels' table (app/bench_report.h).
#include "app/bench_report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

bench_spread bench_spread_of(const double *times, int n) {
    double sorted[BENCH_MAX_RUNS];
    memcpy(sorted, times, sizeof(double) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(double), compare_doubles);
    bench_spread s = {n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]), sorted[0], sorted[n - 1]};
    return s;
}

static double flop_total(const lcm_flops *f) { return f->conv3x3 + f->conv1x1 + f->linear + f->attention; }

void bench_print_text(const bench_report *r) {
    const lcm_bench_plan *plan = &r->plan;
    printf("lcm bench: %s, %dx%d, %d steps, %s, %d threads, attention kernel %s, %d runs after a "
           "warm-up\n",
           r->model, r->width, r->height, r->steps, r->precision, r->threads, r->attention_kernel, r->runs);
    printf("guidance %g%s, %d LoRA adapter(s) fused%s\n", r->guidance,
           plan->classifier_free ? " (classifier-free: each UNet step runs a batch of 2)" : "", r->lora_count,
           r->controlnet ? ", ControlNet in every UNet step" : "");
    printf("peak %s: %.1f GFLOP/s (%s)\n", r->precision, r->peak_gflops, r->peak_method);
    printf("%-16s %10s %10s %10s %10s %10s %8s\n", "stage", "GFLOP", "median s", "min s", "max s",
           "GFLOP/s", "of peak");
    for (int i = 0; i < LCM_BENCH_STAGE_COUNT; i++) {
        if (!plan->timed[i]) continue;
        double flops = flop_total(&plan->flops[i]);
        double rate = flops / r->times[i].median * 1e-9;
        printf("%-16s %10.3f %10.3f %10.3f %10.3f %10.1f", lcm_bench_stage_name(i), flops * 1e-9,
               r->times[i].median, r->times[i].min, r->times[i].max, rate);
        if (r->peak_gflops > 0) printf(" %7.1f%%\n", 100.0 * rate / r->peak_gflops);
        else printf(" %8s\n", "n/a");
    }
    if (plan->timed[LCM_BENCH_TAESD_DECODE])
        printf("decoders: TAESD %.1fx faster than the VAE, tiled VAE (%s) %.2fx its time\n",
               r->times[LCM_BENCH_VAE_DECODE].median / r->times[LCM_BENCH_TAESD_DECODE].median, plan->tiles,
               r->times[LCM_BENCH_VAE_DECODE_TILED].median / r->times[LCM_BENCH_VAE_DECODE].median);
    printf("load: %.2f s (%.2f s of CPU), packed-weight cache %s\n", r->load_seconds,
           r->load_cpu_seconds, r->no_cache ? "off" : "on");
    printf("peak RSS: %.2f GB\n", r->peak_rss_bytes * 1e-9);
    printf("GFLOP by kind (conv 3x3 / conv 1x1 / linear / attention):\n");
    for (int i = 0; i < LCM_BENCH_STAGE_COUNT; i++) {
        const lcm_flops *f = &plan->flops[i];
        if (plan->timed[i])
            printf("  %-16s %.1f / %.1f / %.1f / %.1f\n", lcm_bench_stage_name(i), f->conv3x3 * 1e-9,
                   f->conv1x1 * 1e-9, f->linear * 1e-9, f->attention * 1e-9);
    }
}

// A JSON string: the model path may hold quotes or backslashes.
static void print_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

void bench_print_json(const bench_report *r) {
    const lcm_bench_plan *plan = &r->plan;
    printf("{\"model\": ");
    print_json_string(r->model);
    printf(", \"width\": %d, \"height\": %d, \"steps\": %d, \"precision\": \"%s\", \"threads\": %d, "
           "\"attention_kernel\": \"%s\", \"runs\": %d,\n \"guidance\": %.9g, \"classifier_free_guidance\": %s, "
           "\"loras\": %d, \"controlnet\": %s,\n \"peak_gflops\": %.9g, \"peak_method\": ",
           r->width, r->height, r->steps, r->precision, r->threads, r->attention_kernel, r->runs, r->guidance,
           plan->classifier_free ? "true" : "false", r->lora_count, r->controlnet ? "true" : "false",
           r->peak_gflops);
    print_json_string(r->peak_method);
    printf(",\n \"stages\": {\n");
    int last = 0;
    for (int i = 0; i < LCM_BENCH_STAGE_COUNT; i++)
        if (plan->timed[i]) last = i;
    for (int i = 0; i < LCM_BENCH_STAGE_COUNT; i++) {
        if (!plan->timed[i]) continue;
        const lcm_flops *f = &plan->flops[i];
        double flops = flop_total(f);
        double rate = flops / r->times[i].median * 1e-9;
        printf("  \"%s\": {\"gflop\": %.9g, \"median_s\": %.9g, \"min_s\": %.9g, \"max_s\": %.9g, "
               "\"median_cpu_s\": %.9g, \"gflops\": %.9g, \"ratio_to_peak\": %.9g,\n    \"gflop_conv3x3\": %.9g, "
               "\"gflop_conv1x1\": %.9g, \"gflop_linear\": %.9g, \"gflop_attention\": %.9g}%s\n",
               lcm_bench_stage_name(i), flops * 1e-9, r->times[i].median, r->times[i].min, r->times[i].max,
               r->cpu_median[i], rate, r->peak_gflops > 0 ? rate / r->peak_gflops : 0.0, f->conv3x3 * 1e-9,
               f->conv1x1 * 1e-9, f->linear * 1e-9, f->attention * 1e-9, i < last ? "," : "");
    }
    printf(" },\n \"load_s\": %.9g, \"load_cpu_s\": %.9g, \"packed_cache\": %s,\n \"peak_rss_bytes\": %.0f}\n",
           r->load_seconds, r->load_cpu_seconds, r->no_cache ? "false" : "true", r->peak_rss_bytes);
}

void bench_print_kernels(void) {
    lcm_system_info info;
    lcm_system_info_get(&info);
    printf("\nkernels (CPU: %s; %s)\n", info.cpu_name, info.cpu_features);
    if (!info.kernels_measured) printf("built-in rules (LCM_TUNE=off)\n");
    else printf("chosen by measurement on this CPU, kept in %s; GFLOP/s as measured at tuning time\n",
                info.kernel_tuning_file[0] ? info.kernel_tuning_file : "(no cache folder)");
    char *decisions = lcm_kernel_decisions();
    if (decisions) fputs(decisions, stdout);
    free(decisions);
}

static void print_attention_row(const lcm_attention_timing *t, bool json, bool last) {
    if (json) {
        printf("  {\"shape\": \"%s\", \"nq\": %lld, \"nk\": %lld, \"heads\": %d, \"head_dim\": %d, "
               "\"gflop\": %.4f",
               t->shape, (long long)t->nq, (long long)t->nk, t->heads, t->head_dim, t->gflop);
        for (int k = 0; k < LCM_BENCH_ATTENTION_KERNELS; k++) {
            const char *name = lcm_bench_attention_kernel_name(k);
            if (t->wall_ms[k] < 0) printf(", \"%s_ms\": null", name);
            else printf(", \"%s_ms\": %.4f, \"%s_cpu_ms\": %.4f", name, t->wall_ms[k], name, t->cpu_ms[k]);
        }
        printf("}%s\n", last ? "" : ",");
        return;
    }
    printf("%-18s %6lld %5lld %5d %4d %8.3f", t->shape, (long long)t->nq, (long long)t->nk, t->heads,
           t->head_dim, t->gflop);
    for (int k = 0; k < LCM_BENCH_ATTENTION_KERNELS; k++) {
        char cell[32];
        if (t->wall_ms[k] < 0) snprintf(cell, sizeof cell, "n/a");
        else snprintf(cell, sizeof cell, "%.1f/%.1f (%.0f)", t->wall_ms[k], t->cpu_ms[k], t->gflop / t->cpu_ms[k] * 1e3);
        printf(" %24s", cell);
    }
    printf("\n");
}

int bench_attention_report(int runs, bool json) {
    int threads = lcm_compute_threads(0);
    if (json) printf("{\"threads\": %d, \"runs\": %d, \"shapes\": [\n", threads, runs);
    else {
        printf("attention kernels, %d threads, best of %d runs: wall ms / CPU ms (all threads; "
               "GFLOP per CPU-second in brackets)\n",
               threads, runs);
        printf("%-18s %6s %5s %5s %4s %8s", "shape", "Nq", "Nk", "heads", "d", "GFLOP");
        for (int k = 0; k < LCM_BENCH_ATTENTION_KERNELS; k++) printf(" %24s", lcm_bench_attention_kernel_name(k));
        printf("\n");
    }
    int count = lcm_bench_attention_shape_count();
    for (int s = 0; s < count; s++) {
        lcm_attention_timing timing;
        if (lcm_bench_attention(s, runs, &timing) != LCM_OK) {
            fprintf(stderr, "lcm bench: %s\n", lcm_last_error());
            return 1;
        }
        print_attention_row(&timing, json, s + 1 == count);
    }
    if (json) printf("]}\n");
    return 0;
}
