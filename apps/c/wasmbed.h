/*
 * wasmbed host ABI, version 1 (docs/abi.md): the functions a WebAssembly app may import from the
 * "wasmbed" module, for C apps built with clang --target=wasm32 (see docs/abi.md, "Building C apps").
 * Every call returns at once (nothing blocks); negative results are the WB_E* codes below.
 */
#ifndef WASMBED_H
#define WASMBED_H

#include <stdint.h>

#define WB_IMPORT(name) __attribute__((import_module("wasmbed"), import_name(name)))
#define WB_EXPORT(name) __attribute__((export_name(name)))

enum {
    WB_EINVAL = -1,  /* bad argument: pointer outside memory, index out of range, bad length */
    WB_ENOTSUP = -2, /* this board lacks the hardware (LEDs, I2C bus, temperature sensor) */
    WB_ENOENT = -3,  /* no such timer / config key */
    WB_EIO = -4,     /* bus error: NACK, no device */
    WB_ENOSPC = -5,  /* buffer too small, or too many timers (8 per app) */
    WB_EBUSY = -6,   /* resource busy, e.g. publish while the link's queue is full */
};

enum { WB_LOG_DEBUG = 0, WB_LOG_INFO = 1, WB_LOG_WARNING = 2, WB_LOG_ERROR = 3 };

WB_IMPORT("log") void wb_log(int32_t level, const char *text, int32_t len);
WB_IMPORT("uptime_ms") int64_t wb_uptime_ms(void);
WB_IMPORT("timer_set") int32_t wb_timer_set(int32_t id, int32_t period_ms, int32_t repeat);
WB_IMPORT("timer_cancel") int32_t wb_timer_cancel(int32_t id);
WB_IMPORT("led_count") int32_t wb_led_count(void);
WB_IMPORT("led_set") int32_t wb_led_set(int32_t index, int32_t on);
WB_IMPORT("led_get") int32_t wb_led_get(int32_t index);
WB_IMPORT("i2c_transfer")
int32_t wb_i2c_transfer(int32_t bus, int32_t addr, const void *wdata, int32_t wlen, void *rdata, int32_t rlen);
WB_IMPORT("temperature_mdeg") int32_t wb_temperature_mdeg(int32_t *out);
WB_IMPORT("random_fill") int32_t wb_random_fill(void *buf, int32_t len);
WB_IMPORT("publish") int32_t wb_publish(const char *topic, int32_t topic_len, const void *data, int32_t data_len);
WB_IMPORT("config_get") int32_t wb_config_get(const char *key, int32_t key_len, char *out, int32_t out_cap);

/* Length of a NUL-terminated string (no libc in a -nostdlib app). */
static inline int32_t wb_strlen(const char *s)
{
    int32_t n = 0;
    while (s[n])
        n++;
    return n;
}

static inline void wb_log_str(int32_t level, const char *s) { wb_log(level, s, wb_strlen(s)); }

#endif
