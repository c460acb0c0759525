/* fib: a compute benchmark. app_start logs fib(25) and how long it took (uptime_ms before/after). */
#include "wasmbed.h"

WB_EXPORT("fib") int32_t fib(int32_t n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

/* Appends the decimal form of v at p; returns the new end. */
static char *put_int(char *p, int64_t v)
{
    char tmp[24];
    int n = 0;
    if (v < 0) {
        *p++ = '-';
        v = -v;
    }
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_str(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

WB_EXPORT("app_start") int32_t app_start(void)
{
    char line[64];
    int64_t t0 = wb_uptime_ms();
    int32_t r = fib(25);
    int64_t dt = wb_uptime_ms() - t0;
    char *p = put_str(line, "fib(25) = ");
    p = put_int(p, r);
    p = put_str(p, " in ");
    p = put_int(p, dt);
    p = put_str(p, " ms");
    wb_log(WB_LOG_INFO, line, (int32_t)(p - line));
    return 0;
}
