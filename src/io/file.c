#include "io/file.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
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

// A registered mapping. The handler reads `start` and `size` without the lock (it cannot take
// one): io_map_file stores `size` before `start`, io_unmap_file clears `start` first, so a slot
// being filled or freed is never matched on a half-written range. (A fault in a mapping that is
// being unmapped at that very moment is a use after unmap by the caller, not ours to mend.)
typedef struct mapping_slot {
    _Atomic(uintptr_t) start; // 0: free
    _Atomic(size_t) size;
    atomic_int faulted;
    _Atomic(io_mapping_owner *) owner; // whose work a fault spoils, or NULL
    char path[512];
} mapping_slot;

static mapping_slot slots[IO_MAX_MAPPINGS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_ulong fault_count;
static struct sigaction previous_sigbus;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static uintptr_t page_size; // read once, outside the handler (sysconf is not async-signal-safe)
// The owner of the mappings this thread makes (io_mapping_owner_enter).
static _Thread_local io_mapping_owner *thread_owner;

static void on_sigbus(int sig, siginfo_t *info, void *context) {
    int saved_errno = errno;
    // The faulting address says which mapping, whichever thread touched it.
    uintptr_t addr = (uintptr_t)info->si_addr;
    for (size_t i = 0; i < IO_MAX_MAPPINGS; i++) {
        uintptr_t start = atomic_load(&slots[i].start);
        if (!start || addr < start || addr - start >= atomic_load(&slots[i].size)) continue;
        // A zero page in place of the one past the end of the file: the access that faulted is
        // retried and reads zeros. mmap is a plain system call on Linux, safe in a handler. Two
        // threads faulting on the same page both map one; either zero page serves.
        uintptr_t page = addr & ~(page_size - 1);
        void *patch = mmap((void *)page, (size_t)page_size, PROT_READ,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (patch == MAP_FAILED) break;
        atomic_store(&slots[i].faulted, 1);
        io_mapping_owner *owner = atomic_load(&slots[i].owner);
        if (owner) atomic_fetch_add(&owner->faults, 1);
        atomic_fetch_add(&fault_count, 1);
        errno = saved_errno;
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

// ---- the stack the handler runs on --------------------------------------------------------------
// Why an alternate signal stack: a SIGBUS was seen taken in oneDNN's JIT code (its sgemm reads
// weights straight from the mappings: the text encoder's in-place weights, the packed-weight
// cache's sgemm layers) with the stack pointer inside a heap buffer. The kernel pushes a signal's
// frame (several KB with AVX-512 state) below the stack pointer, so the handler's frame wrote over
// the heap: random glibc heap corruption after a cache file was cut during a generation, and
// AddressSanitizer reporting the handler's own reads of its frame as a heap overflow. With SA_ONSTACK the frame goes
// to a stack of the thread's own, mapped here for every thread that may touch a mapping.
static pthread_key_t signal_stack_key; // the stack this file mapped for a thread, freed at its exit
static size_t signal_stack_size;
static _Thread_local bool thread_prepared;

static void free_signal_stack(void *stack) {
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
    munmap(stack, signal_stack_size);
}

static void install_handler(void) {
    page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
    signal_stack_size = 64 * 1024;
#ifdef _SC_SIGSTKSZ
    long suggested = sysconf(_SC_SIGSTKSZ); // what this CPU's signal frames need (AMX state: more)
    if (suggested > 0 && 4 * (size_t)suggested > signal_stack_size) signal_stack_size = 4 * (size_t)suggested;
#endif
    pthread_key_create(&signal_stack_key, free_signal_stack);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &previous_sigbus);
}

void io_prepare_thread_for_faults(void) {
    if (thread_prepared) return;
    pthread_once(&handler_once, install_handler);
    thread_prepared = true;
    // A stack set up by someone else (AddressSanitizer gives every thread one) is kept: replacing it
    // would leave its owner freeing ours.
    stack_t current;
    if (sigaltstack(NULL, &current) == 0 && !(current.ss_flags & SS_DISABLE)) return;
    void *stack = mmap(NULL, signal_stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return; // the handler then runs on the thread's stack, as before
    stack_t ss = {.ss_sp = stack, .ss_size = signal_stack_size};
    if (sigaltstack(&ss, NULL) != 0 || pthread_setspecific(signal_stack_key, stack) != 0) {
        stack_t off = {.ss_flags = SS_DISABLE};
        sigaltstack(&off, NULL);
        munmap(stack, signal_stack_size);
    }
}

void io_prepare_threads_for_faults(void) {
    io_prepare_thread_for_faults();
    #pragma omp parallel
    io_prepare_thread_for_faults();
}

io_mapping_owner *io_mapping_owner_enter(io_mapping_owner *owner) {
    io_mapping_owner *previous = thread_owner;
    thread_owner = owner;
    return previous;
}

lcm_status io_map_file(int fd, size_t size, const char *path, void **out) {
    *out = NULL;
    io_prepare_thread_for_faults();
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) return lcm_fail(LCM_ERR_IO, "%s: cannot map %zu bytes: %s", path, size, strerror(errno));
    pthread_mutex_lock(&slots_lock);
    for (size_t i = 0; i < IO_MAX_MAPPINGS; i++) {
        if (atomic_load(&slots[i].start)) continue;
        snprintf(slots[i].path, sizeof slots[i].path, "%s", path);
        atomic_store(&slots[i].faulted, 0);
        atomic_store(&slots[i].owner, thread_owner);
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
            // The owner's faults outlive the mapping (a load closes its files before the check
            // at its end): keep the name of the first file that faulted.
            io_mapping_owner *owner = atomic_load(&slots[i].owner);
            if (owner && atomic_load(&slots[i].faulted) && !owner->path[0])
                snprintf(owner->path, sizeof owner->path, "%s", slots[i].path);
            atomic_store(&slots[i].owner, NULL);
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

lcm_status io_mapping_owner_check(const io_mapping_owner *owner, const char *what) {
    if (!owner || atomic_load(&owner->faults) == 0) return LCM_OK;
    char path[512] = "a model file";
    pthread_mutex_lock(&slots_lock);
    if (owner->path[0]) snprintf(path, sizeof path, "%s", owner->path);
    else
        for (size_t i = 0; i < IO_MAX_MAPPINGS; i++)
            if (atomic_load(&slots[i].start) && atomic_load(&slots[i].owner) == owner &&
                atomic_load(&slots[i].faulted)) {
                snprintf(path, sizeof path, "%s", slots[i].path);
                break;
            }
    pthread_mutex_unlock(&slots_lock);
    return shrunk_error(path, what);
}

void io_mapping_owner_release(io_mapping_owner *owner) {
    if (!owner) return;
    pthread_mutex_lock(&slots_lock);
    for (size_t i = 0; i < IO_MAX_MAPPINGS; i++)
        if (atomic_load(&slots[i].owner) == owner) atomic_store(&slots[i].owner, NULL);
    pthread_mutex_unlock(&slots_lock);
    if (thread_owner == owner) thread_owner = NULL;
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
