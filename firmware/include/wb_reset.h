/*
 * Why the board last started. QEMU models no reset-cause register on these boards (the STM32
 * RCC is unimplemented, MPS2 has none), so the firmware records the cause itself in RAM that a
 * warm reset leaves alone (.noinit); a cold power-on finds no valid record.
 */
#ifndef WB_RESET_H
#define WB_RESET_H

#include <stdint.h>

typedef enum {
    WB_RESET_POWER_ON = 0,
    WB_RESET_SOFTWARE,
    WB_RESET_FAULT,
    WB_RESET_WATCHDOG,
    WB_RESET_UNKNOWN,
} wb_reset_reason_t;

/* Read and consume the record left by the previous run (call once, early in boot). */
wb_reset_reason_t wb_reset_reason_take(uint32_t *boot_count);
const char *wb_reset_reason_name(wb_reset_reason_t r);
/* Record why we are about to reset, then reset the system. */
__attribute__((noreturn)) void wb_reset(wb_reset_reason_t why);
/* Only record (used where the reset is done by hardware, e.g. the watchdog's second expiry). */
void wb_reset_record(wb_reset_reason_t why);

#endif
