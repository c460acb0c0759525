/*
 * The newlib hooks the firmware needs: a heap bounded by the linker script (between .bss/.noinit
 * and the stack), and stdout/stderr onto the console for library code that prints.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "wb_console.h"
#include "wb_reset.h"

extern char __heap_start, __heap_end;
static char *heap_top = &__heap_start;

void *_sbrk(ptrdiff_t incr)
{
    if (incr > 0 && (size_t)incr > (size_t)(&__heap_end - heap_top)) {
        errno = ENOMEM;
        return (void *)-1;
    }
    char *prev = heap_top;
    heap_top += incr;
    return prev;
}

size_t wb_heap_size(void)
{
    return (size_t)(&__heap_end - &__heap_start);
}

size_t wb_heap_unclaimed(void)
{
    return (size_t)(&__heap_end - heap_top);
}

int _write(int fd, const char *buf, int len)
{
    if (fd != 1 && fd != 2) {
        errno = EBADF;
        return -1;
    }
    wb_console_write(buf, (size_t)len);
    return len;
}

int _read(int fd, char *buf, int len)
{
    (void)fd;
    (void)buf;
    (void)len;
    errno = ENOSYS;
    return -1;
}

int _close(int fd)
{
    (void)fd;
    return -1;
}

int _lseek(int fd, int off, int whence)
{
    (void)fd;
    (void)off;
    (void)whence;
    return -1;
}

int _fstat(int fd, struct stat *st)
{
    (void)fd;
    st->st_mode = S_IFCHR;
    return 0;
}

int _isatty(int fd)
{
    return fd <= 2;
}

int _getpid(void)
{
    return 1;
}

int _kill(int pid, int sig)
{
    (void)pid;
    (void)sig;
    errno = EINVAL;
    return -1;
}

__attribute__((noreturn)) void _exit(int status)
{
    wb_printf("*** exit(%d)\n", status);
    wb_reset(WB_RESET_SOFTWARE);
}
