/* Semihosting calls (ARM "Semihosting for AArch32 and AArch64", operations 0x01-0x0F). */
#include "semihost.h"

#include <stdint.h>
#include <string.h>

enum {
    SYS_OPEN = 0x01,
    SYS_CLOSE = 0x02,
    SYS_WRITE = 0x05,
    SYS_READ = 0x06,
    SYS_FLEN = 0x0C,
    SYS_RENAME = 0x0F,
};
enum { MODE_RB = 1, MODE_WB = 5 };

static int call(int op, void *args)
{
    register int r0 __asm("r0") = op;
    register void *r1 __asm("r1") = args;
    __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static int sh_open(const char *path, int mode)
{
    uintptr_t args[3] = {(uintptr_t)path, (uintptr_t)mode, strlen(path)};
    return call(SYS_OPEN, args);
}

static void sh_close(int fd)
{
    uintptr_t args[1] = {(uintptr_t)fd};
    call(SYS_CLOSE, args);
}

long wb_semihost_read_file(const char *path, void *buf, size_t cap)
{
    int fd = sh_open(path, MODE_RB);
    if (fd < 0) {
        return -1;
    }
    uintptr_t flen_args[1] = {(uintptr_t)fd};
    int len = call(SYS_FLEN, flen_args);
    if (len < 0 || (size_t)len > cap) {
        sh_close(fd);
        return -1;
    }
    uintptr_t args[3] = {(uintptr_t)fd, (uintptr_t)buf, (uintptr_t)len};
    int not_read = call(SYS_READ, args); /* returns the number of bytes NOT read */
    sh_close(fd);
    return not_read == 0 ? len : -1;
}

int wb_semihost_write_file(const char *path, const void *data, size_t len)
{
    /* Write a temporary file, then rename over the old one: a crash mid-write leaves the old
     * contents intact. */
    char tmp[64];
    size_t n = strlen(path);
    if (n + 5 > sizeof tmp) {
        return -1;
    }
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    int fd = sh_open(tmp, MODE_WB);
    if (fd < 0) {
        return -1;
    }
    uintptr_t args[3] = {(uintptr_t)fd, (uintptr_t)data, (uintptr_t)len};
    int not_written = call(SYS_WRITE, args);
    sh_close(fd);
    if (not_written != 0) {
        return -1;
    }
    uintptr_t ren[4] = {(uintptr_t)tmp, n + 4, (uintptr_t)path, n};
    return call(SYS_RENAME, ren) == 0 ? 0 : -1;
}
