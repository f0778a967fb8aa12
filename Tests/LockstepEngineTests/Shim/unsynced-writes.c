// LD_PRELOAD shim for the durability test: writes to a SQLite WAL file ("*-wal") are held in memory
// until the file is fsynced, so killing the process loses exactly what was never synced, as a power
// cut would. Reads see the held writes (the process's own view stays consistent).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <unistd.h>

#define FDS_MAX 1024
typedef struct { off_t offset; size_t length; char *bytes; } Segment;
static Segment *segments; static size_t segment_count, segment_capacity;
static int tracked[FDS_MAX];             // 1 when the fd is the WAL file
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_pread64)(int, void *, size_t, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_open64)(const char *, int, ...);
static int (*real_open)(const char *, int, ...);
static int (*real_close)(int);

static void init(void) {
    if (real_pwrite64) return;
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_pread64 = dlsym(RTLD_NEXT, "pread64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_open = dlsym(RTLD_NEXT, "open");
    real_close = dlsym(RTLD_NEXT, "close");
}

static int is_wal(const char *path) {
    size_t n = strlen(path);
    return n > 4 && strcmp(path + n - 4, "-wal") == 0;
}

static void track(int fd, const char *path) {
    if (fd >= 0 && fd < FDS_MAX) tracked[fd] = is_wal(path);
}

static int is_tracked(int fd) { return fd >= 0 && fd < FDS_MAX && tracked[fd]; }

int open64(const char *path, int flags, ...) {
    init();
    mode_t mode = 0;
    if (flags & O_CREAT) { va_list ap; va_start(ap, flags); mode = va_arg(ap, int); va_end(ap); }
    int fd = real_open64(path, flags, mode);
    track(fd, path);
    return fd;
}

int open(const char *path, int flags, ...) {
    init();
    mode_t mode = 0;
    if (flags & O_CREAT) { va_list ap; va_start(ap, flags); mode = va_arg(ap, int); va_end(ap); }
    int fd = real_open(path, flags, mode);
    track(fd, path);
    return fd;
}

int close(int fd) {
    init();
    if (fd >= 0 && fd < FDS_MAX) tracked[fd] = 0;
    return real_close(fd);
}

static ssize_t hold(int fd, const void *buffer, size_t count, off64_t offset) {
    pthread_mutex_lock(&lock);
    if (segment_count == segment_capacity) {
        segment_capacity = segment_capacity ? segment_capacity * 2 : 256;
        segments = realloc(segments, segment_capacity * sizeof(Segment));
    }
    Segment s = { offset, count, malloc(count) };
    memcpy(s.bytes, buffer, count);
    segments[segment_count++] = s;
    pthread_mutex_unlock(&lock);
    return (ssize_t)count;
}

ssize_t pwrite64(int fd, const void *buffer, size_t count, off64_t offset) {
    init();
    return is_tracked(fd) ? hold(fd, buffer, count, offset) : real_pwrite64(fd, buffer, count, offset);
}

ssize_t pwrite(int fd, const void *buffer, size_t count, off_t offset) { return pwrite64(fd, buffer, count, offset); }

ssize_t pread64(int fd, void *buffer, size_t count, off64_t offset) {
    init();
    ssize_t got = real_pread64(fd, buffer, count, offset);
    if (!is_tracked(fd)) return got;
    if (got < 0) got = 0;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < segment_count; i++) {
        Segment *s = &segments[i];
        off_t start = s->offset > offset ? s->offset : offset;
        off_t end = (s->offset + (off_t)s->length) < (offset + (off_t)count) ? s->offset + (off_t)s->length : offset + (off_t)count;
        if (start >= end) continue;
        memcpy((char *)buffer + (start - offset), s->bytes + (start - s->offset), (size_t)(end - start));
        if (end - offset > got) got = end - offset;
    }
    pthread_mutex_unlock(&lock);
    return got;
}

ssize_t pread(int fd, void *buffer, size_t count, off_t offset) { return pread64(fd, buffer, count, offset); }

static void flush_held(int fd) {
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < segment_count; i++) {
        real_pwrite64(fd, segments[i].bytes, segments[i].length, segments[i].offset);
        free(segments[i].bytes);
    }
    segment_count = 0;
    pthread_mutex_unlock(&lock);
}

int fsync(int fd) { init(); if (is_tracked(fd)) flush_held(fd); return real_fsync(fd); }
int fdatasync(int fd) { init(); if (is_tracked(fd)) flush_held(fd); return real_fdatasync(fd); }

int ftruncate64(int fd, off64_t length) {
    init();
    if (is_tracked(fd)) {
        // Held writes past the new end are gone; those before it stay held.
        pthread_mutex_lock(&lock);
        size_t kept = 0;
        for (size_t i = 0; i < segment_count; i++) {
            if (segments[i].offset >= length) { free(segments[i].bytes); continue; }
            if (segments[i].offset + (off_t)segments[i].length > length) segments[i].length = (size_t)(length - segments[i].offset);
            segments[kept++] = segments[i];
        }
        segment_count = kept;
        pthread_mutex_unlock(&lock);
    }
    return real_ftruncate64(fd, length);
}

int ftruncate(int fd, off_t length) { return ftruncate64(fd, length); }
