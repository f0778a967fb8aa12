#include "CMallocInfo.h"

#if defined(__linux__)
#include <features.h>
#endif

#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 33)
#include <malloc.h>

size_t lockstep_heap_bytes_in_use(void) {
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}
#else
size_t lockstep_heap_bytes_in_use(void) { return 0; }
#endif
