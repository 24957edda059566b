// The machine, its kernels and process-wide kernel settings (lcm_system_info_get, ...).
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "lcm.h"
#include "ops/attention.h"
#include "ops/backend.h"
#include "ops/cpu.h"

void lcm_system_info_get(lcm_system_info *info) {
    *info = (lcm_system_info){
        .cpu_name = cpu_features_get()->name,
        .cpu_features = cpu_feature_list(),
        .kernels_measured = ops_backend_from_environment(LCM_PRECISION_FP32).tune,
        .kernel_tuning_file = backend_tuning_file(),
    };
}

char *lcm_kernel_decisions(void) {
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    if (!out) {
        lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory listing the kernel decisions");
        return NULL;
    }
    backend_print_decisions(out);
    if (fclose(out) != 0) {
        free(text);
        lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory listing the kernel decisions");
        return NULL;
    }
    return text;
}

int lcm_compute_threads(int threads) {
    if (threads > 0) omp_set_num_threads(threads);
    return omp_get_max_threads();
}

void lcm_set_attention_kernel(lcm_attention_kernel kernel) {
    attention_set_default_kernel(kernel == LCM_ATTENTION_FLASH  ? ATTENTION_FLASH
                                 : kernel == LCM_ATTENTION_GEMM ? ATTENTION_GEMM_TILES
                                                                : ATTENTION_AUTO);
}
