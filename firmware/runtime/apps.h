/*
 * The app manager: WASM apps deployed by the gateway, each in its own wasm3 runtime (own linear
 * memory, own stack), driven by events from the main loop — start/stop, timers, messages — since the
 * MCU is single-threaded and host calls never block. A trap, a blown time budget or an allocation
 * failure fails that app only; its runtime is freed and its memory returns to the heap.
 */
#ifndef WB_APPS_H
#define WB_APPS_H

#include <stddef.h>
#include <stdint.h>

#define WB_APPS_MAX 4
#define WB_APP_NAME_MAX 32
#define WB_APP_ERROR_MAX 128
#define WB_APP_TIMERS_MAX 8
#define WB_APP_CONFIG_MAX 512

/* Same numbers as proto_app_state_code (docs/protocol.md). */
typedef enum { WB_APP_DEPLOYING = 1, WB_APP_STOPPED = 2, WB_APP_RUNNING = 3, WB_APP_FAILED = 4 } wb_app_state;

/* deploy_result codes (docs/protocol.md, "App error codes"). */
typedef enum {
    WB_APP_OK = 0,
    WB_APP_TOO_LARGE = 1,
    WB_APP_NO_MEMORY = 2,
    WB_APP_BAD_OFFSET = 3,
    WB_APP_HASH_MISMATCH = 4,
    WB_APP_LOAD_FAILED = 5,
    WB_APP_START_FAILED = 6,
    WB_APP_UNKNOWN_APP = 7,
    WB_APP_BUSY = 8,
} wb_app_code;

typedef struct {
    uint32_t app_id;
    const char *name;
    size_t name_len;
    uint32_t size;
    const uint8_t *sha256; /* 32 bytes */
    const uint8_t *config; /* CBOR map text -> text */
    size_t config_len;
    uint32_t mem_pages;
    uint32_t time_budget_ms;
    uint32_t restart; /* 0 never, 1 on-failure, 2 always: recorded; the gateway enforces it */
} wb_deploy_spec;

typedef struct {
    uint32_t app_id;
    uint32_t state;
    const char *error;
    uint32_t restarts;
    uint32_t calls;
    uint32_t traps;
    uint32_t mem_pages;
    uint32_t max_call_ms;
} wb_app_report;

/* What the app manager tells the link (implemented by link.c). */
typedef struct {
    void (*status)(const wb_app_report *r);
    void (*log)(uint32_t app_id, uint32_t level, const char *text, size_t len);
    int (*publish)(uint32_t app_id, const char *topic, size_t topic_len, const uint8_t *data, size_t len);
} wb_app_sink;

int wb_apps_init(const wb_app_sink *sink);
/* Largest module the device accepts (announced in hello). */
uint32_t wb_apps_max_module_size(void);

/* Transfer. Each returns a wb_app_code; *next_offset is how many bytes the device holds. A text for
 * the gateway goes into err (NUL-terminated, may be empty). */
wb_app_code wb_apps_deploy_begin(const wb_deploy_spec *spec, uint32_t *next_offset, char *err, size_t errlen);
wb_app_code wb_apps_deploy_chunk(uint32_t app_id, uint32_t offset, const uint8_t *data, size_t len,
                                 uint32_t *next_offset, char *err, size_t errlen);
wb_app_code wb_apps_deploy_commit(uint32_t app_id, uint32_t *next_offset, char *err, size_t errlen);
/* The link dropped: partial transfers are discarded (the gateway starts them again). */
void wb_apps_link_lost(void);

wb_app_code wb_apps_start(uint32_t app_id);
wb_app_code wb_apps_stop(uint32_t app_id, int remove);
void wb_apps_message(uint32_t app_id, const char *topic, size_t topic_len, const uint8_t *data, size_t len);
/* Current report of one app (for replies); 0 if unknown. */
int wb_apps_report(uint32_t app_id, wb_app_report *out);

/* Run due timers; called from the main loop. */
void wb_apps_poll(uint64_t now_ms);
/* Up to max (app_id, state) pairs for the heartbeat; returns how many. */
size_t wb_apps_states(uint32_t *ids, uint32_t *states, size_t max);

#endif
