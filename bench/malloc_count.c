// libdst_malloc_count.so: counts the allocations of the process it is preloaded into
// (LD_PRELOAD), for bench/profile.sh allocs. Every malloc, calloc, realloc and aligned
// allocation (and so every C++ operator new) adds one; at exit the total is written, as decimal,
// to the file named by DST_MALLOC_COUNT_FILE. The real allocator is glibc's, reached through its
// __libc_* entry points rather than dlsym, which itself allocates.
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

extern void* __libc_malloc(size_t size);
extern void* __libc_calloc(size_t count, size_t size);
extern void* __libc_realloc(void* p, size_t size);
extern void* __libc_memalign(size_t alignment, size_t size);

static unsigned long long allocations;

static void Count(void) { __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED); }

void* malloc(size_t size) {
  Count();
  return __libc_malloc(size);
}

void* calloc(size_t count, size_t size) {
  Count();
  return __libc_calloc(count, size);
}

void* realloc(void* p, size_t size) {
  Count();
  return __libc_realloc(p, size);
}

void* memalign(size_t alignment, size_t size) {
  Count();
  return __libc_memalign(alignment, size);
}

void* aligned_alloc(size_t alignment, size_t size) { return memalign(alignment, size); }

int posix_memalign(void** out, size_t alignment, size_t size) {
  void* p = memalign(alignment, size);
  if (p == NULL) return 12;  // ENOMEM
  *out = p;
  return 0;
}

__attribute__((destructor)) static void WriteCount(void) {
  const char* path = getenv("DST_MALLOC_COUNT_FILE");
  if (path == NULL) return;
  char text[32];
  const int n = snprintf(text, sizeof text, "%llu\n",
                         __atomic_load_n(&allocations, __ATOMIC_RELAXED));
  const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (write(fd, text, (size_t)n) != n) perror("malloc_count: write");
  close(fd);
}
