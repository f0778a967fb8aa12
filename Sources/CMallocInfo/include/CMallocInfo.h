#ifndef LOCKSTEP_CMALLOCINFO_H
#define LOCKSTEP_CMALLOCINFO_H

#include <stddef.h>

/// Heap bytes the process has allocated and not freed (glibc's mallinfo2: chunks in use in the arenas
/// plus mmapped chunks), or 0 where glibc (2.33 or later, for mallinfo2) is not the allocator. Not the RSS, which keeps what a burst
/// of work once needed.
size_t lockstep_heap_bytes_in_use(void);

#endif
