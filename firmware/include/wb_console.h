/*
 * Console output on the device tree's /chosen wasmbed,console UART. A small formatter of our own
 * (no newlib printf: it costs kilobytes of flash and a heap, which the 8 KiB boards cannot spare).
 */
#ifndef WB_CONSOLE_H
#define WB_CONSOLE_H

#include <stdarg.h>
#include <stddef.h>

#include "wb_uart.h"

void wb_console_init(void);
wb_uart_t *wb_console_uart(void);
void wb_console_write(const char *s, size_t len);

/* Supports %s %c %d %i %u %x %X %p %% with optional '0' flag, width, 'l'/'ll' length, and a
 * precision (.N or .*) for %s. */
__attribute__((format(printf, 1, 2))) void wb_printf(const char *fmt, ...);
void wb_vprintf(const char *fmt, va_list ap);

typedef void (*wb_emit_fn)(void *ctx, char c);
void wb_vformat(wb_emit_fn emit, void *ctx, const char *fmt, va_list ap);
/* snprintf-like into a buffer; always NUL-terminates, returns the length the output would have. */
__attribute__((format(printf, 3, 4))) int wb_snprintf(char *buf, size_t size, const char *fmt, ...);

#endif
