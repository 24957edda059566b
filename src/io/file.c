#include "io/file.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

lcm_status io_open_regular(const char *path, int *fd, long long *size) {
    *fd = -1;
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f < 0) return lcm_fail(LCM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(f, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(f);
        return lcm_fail(LCM_ERR_IO, "%s: not a regular file", path);
    }
    int flags = fcntl(f, F_GETFL);
    if (flags >= 0) fcntl(f, F_SETFL, flags & ~O_NONBLOCK);
    *fd = f;
    if (size) *size = (long long)sb.st_size;
    return LCM_OK;
}

lcm_status io_fopen_regular(const char *path, FILE **out, long long *size) {
    *out = NULL;
    int fd;
    LCM_TRY(io_open_regular(path, &fd, size));
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return lcm_fail(LCM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    *out = f;
    return LCM_OK;
}

// ---- mapped model files (see file.h for why a SIGBUS handler) -----------------------------------

typedef struct mapping_slot {
    _Atomic(uintptr_t) start; // 0: free
    _Atomic(size_t) size;
    atomic_int faulted;
    char path[512];
} mapping_slot;

static mapping_slot slots[IO_MAX_MAPPINGS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_ulong fault_count;
static _Atomic(mapping_slot *) last_faulted;
static struct sigaction previous_sigbus;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static uintptr_t page_size; // read once, outside the handler (sysconf is not async-signal-safe)

static void on_sigbus(int sig, siginfo_t *info, void *context) {
    uintptr_t addr = (uintptr_t)info->si_addr;
    for (size_t i = 0; i < IO_MAX_MAPPINGS; i++) {
        uintptr_t start = atomic_load(&slots[i].start);
        if (!start || addr < start || addr - start >= atomic_load(&slots[i].size)) continue;
        // A zero page in place of the one past the end of the file: the access that faulted is
        // retried and reads zeros. mmap is a plain system call on Linux, safe in a handler.
        uintptr_t page = addr & ~(page_size - 1);
        void *patch = mmap((void *)page, (size_t)page_size, PROT_READ,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (patch == MAP_FAILED) break;
        atomic_store(&slots[i].faulted, 1);
        atomic_store(&last_faulted, &slots[i]);
        atomic_fetch_add(&fault_count, 1);
        return;
    }
    // Not ours: whatever was there before us decides (by default the process dies of SIGBUS).
    if (previous_sigbus.sa_flags & SA_SIGINFO) {
        previous_sigbus.sa_sigaction(sig, info, context);
    } else if (previous_sigbus.sa_handler != SIG_IGN && previous_sigbus.sa_handler != SIG_DFL) {
        previous_sigbus.sa_handler(sig);
    } else {
        signal(SIGBUS, SIG_DFL); // the faulting access runs again and gets the default action
    }
}

static void install_handler(void) {
    page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &previous_sigbus);
}

lcm_status io_map_file(int fd, size_t size, const char *path, void **out) {
    *out = NULL;
    pthread_once(&handler_once, install_handler);
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) return lcm_fail(LCM_ERR_IO, "%s: cannot map %zu bytes: %s", path, size, strerror(errno));
    pthread_mutex_lock(&slots_lock);
    for (size_t i = 0; i < IO_MAX_MAPPINGS; i++) {
        if (atomic_load(&slots[i].start)) continue;
        snprintf(slots[i].path, sizeof slots[i].path, "%s", path);
        atomic_store(&slots[i].faulted, 0);
        atomic_store(&slots[i].size, size);
        atomic_store(&slots[i].start, (uintptr_t)map); // last: the handler may look from now on
        break;
    }
    pthread_mutex_unlock(&slots_lock);
    *out = map;
    return LCM_OK;
}

void io_unmap_file(void *mapping, size_t size) {
    if (!mapping) return;
    pthread_mutex_lock(&slots_lock);
    for (size_t i = 0; i < IO_MAX_MAPPINGS; i++)
        if (atomic_load(&slots[i].start) == (uintptr_t)mapping) {
            atomic_store(&slots[i].start, 0);
            mapping_slot *expected = &slots[i];
            atomic_compare_exchange_strong(&last_faulted, &expected, NULL);
            break;
        }
    pthread_mutex_unlock(&slots_lock);
    munmap(mapping, size);
}

static lcm_status shrunk_error(const char *path, const char *what) {
    return lcm_fail(LCM_ERR_IO,
                    "%s%s%s: the file got shorter while it was in use (truncated, or rewritten in place "
                    "by a copy or a download into the same name): its weights cannot be read; let "
                    "whatever writes it finish, then load the model again",
                    what ? what : "", what ? ": " : "", path);
}

lcm_status io_mapping_check(const void *mapping) {
    if (!mapping || atomic_load(&fault_count) == 0) return LCM_OK;
    lcm_status st = LCM_OK;
    pthread_mutex_lock(&slots_lock);
    for (size_t i = 0; i < IO_MAX_MAPPINGS; i++)
        if (atomic_load(&slots[i].start) == (uintptr_t)mapping) {
            if (atomic_load(&slots[i].faulted)) st = shrunk_error(slots[i].path, NULL);
            break;
        }
    pthread_mutex_unlock(&slots_lock);
    return st;
}

unsigned long io_mapping_faults(void) { return atomic_load(&fault_count); }

lcm_status io_mapping_faults_since(unsigned long before, const char *what) {
    if (atomic_load(&fault_count) == before) return LCM_OK;
    char path[512] = "a model file (since closed)";
    pthread_mutex_lock(&slots_lock);
    mapping_slot *slot = atomic_load(&last_faulted);
    if (slot && atomic_load(&slot->start)) snprintf(path, sizeof path, "%s", slot->path);
    pthread_mutex_unlock(&slots_lock);
    return shrunk_error(path, what);
}
