/*
 * The host ABI (docs/abi.md, import module "wasmbed") and the per-app state it works on. Host calls
 * never block: anything that takes time (timers, messages) comes back later as an event.
 */
#ifndef WB_HOST_H
#define WB_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "apps.h"
#include "wasm3.h"

/* Host-call error codes (docs/abi.md). */
#define WB_EINVAL (-1)
#define WB_ENOTSUP (-2)
#define WB_ENOENT (-3)
#define WB_EIO (-4)
#define WB_ENOSPC (-5)
#define WB_EBUSY (-6)

#define WB_MESSAGE_TOPIC_MAX 64
#define WB_MESSAGE_DATA_MAX 1024

typedef struct {
    int32_t id;
    uint32_t period_ms;
    uint8_t repeat;
    uint8_t active;
    uint64_t due;
} wb_app_timer;

typedef struct wb_app {
    uint8_t used;
    uint32_t id;
    char name[WB_APP_NAME_MAX + 1];
    uint8_t sha256[32];
    uint8_t *module; /* wasm3 keeps pointers into it while loaded */
    uint32_t size;
    uint32_t received;
    uint8_t *config; /* CBOR map text -> text, as deployed */
    size_t config_len;
    uint32_t mem_pages;
    uint32_t budget_ms;
    uint32_t restart;
    uint32_t state;
    char error[WB_APP_ERROR_MAX + 1];
    uint32_t restarts;
    uint32_t calls;
    uint32_t traps;
    uint32_t max_call_ms;
    IM3Environment env;
    IM3Runtime rt;
    IM3Module mod;
    IM3Function f_start, f_stop, f_timer, f_message, f_msgbuf;
    wb_app_timer timers[WB_APP_TIMERS_MAX];
} wb_app;

/* The app whose code is running (set around every call into WASM). */
extern wb_app *wb_current_app;

/* Link every host function the module imports; imports we do not provide fail the load. */
M3Result wb_host_link(IM3Module mod);
/* Copy a message into the app's memory at buf (what its msg_buffer() export returned): the topic
 * at buf, the payload at buf + WB_MESSAGE_TOPIC_MAX. 0, or -1 if that area is out of bounds. */
int wb_host_copy_message(wb_app *a, int32_t buf, const char *topic, size_t topic_len, const uint8_t *data,
                         size_t len);

#endif
