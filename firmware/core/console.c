/* Console UART and a small printf-style formatter (see wb_console.h for why it is ours). */
#include "wb_console.h"

#include <stdint.h>

#include "wb_board.h"

static wb_uart_t console_uart = {
    .base = WB_CONSOLE_UART_BASE,
    .irq_rx = -1, /* the console is output-only for now: no RX ring, no interrupt */
    .irq_tx = -1,
    .baud = WB_CONSOLE_UART_BAUD,
    .clock_hz = WB_CONSOLE_UART_CLOCK_HZ,
};

void wb_console_init(void)
{
    wb_uart_init(&console_uart);
}

wb_uart_t *wb_console_uart(void)
{
    return &console_uart;
}

void wb_console_write(const char *s, size_t len)
{
    wb_uart_write(&console_uart, s, len);
}

static void emit_digits(wb_emit_fn emit, void *ctx, unsigned long long v, unsigned base, int upper,
                        int width, char pad, int negative)
{
    char tmp[24];
    int n = 0;
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v != 0 && n < (int)sizeof tmp);
    int len = n + (negative ? 1 : 0);
    if (negative && pad == '0') {
        emit(ctx, '-');
    }
    for (; len < width; len++) {
        emit(ctx, pad);
    }
    if (negative && pad != '0') {
        emit(ctx, '-');
    }
    while (n > 0) {
        emit(ctx, tmp[--n]);
    }
}

void wb_vformat(wb_emit_fn emit, void *ctx, const char *fmt, va_list ap)
{
    for (; *fmt != '\0'; fmt++) {
        if (*fmt != '%') {
            emit(ctx, *fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0;
        int longs = 0;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9') {
            width = width * 10 + (*fmt++ - '0');
        }
        int precision = -1; /* only meaningful for %s: at most this many bytes */
        if (*fmt == '.') {
            fmt++;
            if (*fmt == '*') {
                precision = va_arg(ap, int);
                fmt++;
            } else {
                precision = 0;
                while (*fmt >= '0' && *fmt <= '9') {
                    precision = precision * 10 + (*fmt++ - '0');
                }
            }
        }
        while (*fmt == 'l') {
            longs++;
            fmt++;
        }
        switch (*fmt) {
        case 'd':
        case 'i': {
            long long v = longs >= 2 ? va_arg(ap, long long) : longs == 1 ? va_arg(ap, long) : va_arg(ap, int);
            unsigned long long mag = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
            emit_digits(emit, ctx, mag, 10, 0, width, pad, v < 0);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            unsigned long long v = longs >= 2 ? va_arg(ap, unsigned long long)
                                   : longs == 1 ? va_arg(ap, unsigned long)
                                                : va_arg(ap, unsigned int);
            emit_digits(emit, ctx, v, *fmt == 'u' ? 10u : 16u, *fmt == 'X', width, pad, 0);
            break;
        }
        case 'p':
            emit(ctx, '0');
            emit(ctx, 'x');
            emit_digits(emit, ctx, (uintptr_t)va_arg(ap, void *), 16, 0, 8, '0', 0);
            break;
        case 'c':
            emit(ctx, (char)va_arg(ap, int));
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (s == 0) {
                s = "(null)";
            }
            int n = 0;
            for (const char *p = s; *p != '\0' && (precision < 0 || n < precision); p++) {
                n++;
            }
            for (int pad_n = n; pad_n < width; pad_n++) {
                emit(ctx, ' ');
            }
            for (int i = 0; i < n; i++) {
                emit(ctx, s[i]);
            }
            break;
        }
        case '%':
            emit(ctx, '%');
            break;
        case '\0':
            return;
        default: /* unknown conversion: show it rather than guess an argument type */
            emit(ctx, '%');
            emit(ctx, *fmt);
            break;
        }
    }
}

/* Console output is buffered per call so a line leaves as one UART burst. */
struct line_buf {
    char buf[96];
    size_t len;
};

static void line_emit(void *ctx, char c)
{
    struct line_buf *lb = ctx;
    if (c == '\n') {
        lb->buf[lb->len++] = '\r';
    }
    lb->buf[lb->len++] = c;
    if (lb->len >= sizeof lb->buf - 2) {
        wb_console_write(lb->buf, lb->len);
        lb->len = 0;
    }
}

void wb_vprintf(const char *fmt, va_list ap)
{
    struct line_buf lb = {.len = 0};
    wb_vformat(line_emit, &lb, fmt, ap);
    if (lb.len > 0) {
        wb_console_write(lb.buf, lb.len);
    }
}

void wb_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    wb_vprintf(fmt, ap);
    va_end(ap);
}

struct str_buf {
    char *buf;
    size_t size;
    size_t len;
};

static void str_emit(void *ctx, char c)
{
    struct str_buf *sb = ctx;
    if (sb->len + 1 < sb->size) {
        sb->buf[sb->len] = c;
    }
    sb->len++;
}

int wb_snprintf(char *buf, size_t size, const char *fmt, ...)
{
    struct str_buf sb = {.buf = buf, .size = size, .len = 0};
    va_list ap;
    va_start(ap, fmt);
    wb_vformat(str_emit, &sb, fmt, ap);
    va_end(ap);
    if (size > 0) {
        buf[sb.len < size ? sb.len : size - 1] = '\0';
    }
    return (int)sb.len;
}
