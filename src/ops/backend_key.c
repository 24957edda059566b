// Who the kernel choices are for: the tuning table's header and file name, and the setup key the
// packed-weight cache (ops/packed_cache.c) keys its files by. Below the rest of the backend, so
// that the cache and the backend's measurements do not depend on each other.
#include <dnnl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "core/user_cache.h"
#include "ops/backend.h"
#include "ops/conv_direct.h"
#include "ops/cpu.h"

// Bumped whenever a kernel changes enough that old measurements no longer describe it.
#define KERNELS_VERSION 6

static pthread_mutex_t tuning_file_lock = PTHREAD_MUTEX_INITIALIZER;
static char tuning_file[1024];

// The header says for whom the measurements are; a file with another header is someone else's.
void backend_table_header(char *buf, size_t size) {
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, size, "lcm kernel choices %d | %s | %s | oneDNN %d.%d.%d\n", KERNELS_VERSION,
             cpu_features_get()->name, cpu_feature_list(), v->major, v->minor, v->patch);
}

// FNV-1a of the header: the file name, so that machines sharing a home folder keep their own.
static uint64_t header_hash(const char *text) {
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) h = (h ^ *p) * 1099511628211ull;
    return h;
}

void backend_setup_key(const ops_backend *b, char *buf, size_t size) {
    char head[512];
    backend_table_header(head, sizeof head);
    snprintf(buf, size, "%sconv %s linear %s tune %s winograd %d\n", head,
             conv_kernel_name(b->forced_conv), linear_kernel_name(b->forced_linear),
             b->tune ? "on" : "off", conv_direct_winograd_enabled());
}

const char *backend_tuning_file(void) {
    pthread_mutex_lock(&tuning_file_lock);
    if (!tuning_file[0]) {
        char folder[900], head[512];
        backend_table_header(head, sizeof head);
        if (user_cache_folder(folder, sizeof folder))
            snprintf(tuning_file, sizeof tuning_file, "%s/kernels-%016llx.txt", folder,
                     (unsigned long long)header_hash(head));
    }
    pthread_mutex_unlock(&tuning_file_lock);
    return tuning_file;
}
