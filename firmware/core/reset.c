/* Reset-cause bookkeeping in .noinit RAM (see wb_reset.h for why the firmware keeps it). */
#include "wb_reset.h"

#include "wb_cortexm.h"

#define RESET_MAGIC 0x57424D52u /* "WBMR" */

struct reset_record {
    uint32_t magic;
    uint32_t reason;
    uint32_t boots;
    uint32_t check; /* ~(magic ^ reason ^ boots): random power-on RAM is not a valid record */
};

__attribute__((section(".noinit"))) static struct reset_record record;

static uint32_t record_check(const struct reset_record *r)
{
    return ~(r->magic ^ r->reason ^ r->boots);
}

static int record_valid(void)
{
    return record.magic == RESET_MAGIC && record.check == record_check(&record);
}

wb_reset_reason_t wb_reset_reason_take(uint32_t *boot_count)
{
    wb_reset_reason_t why = WB_RESET_POWER_ON;
    uint32_t boots = 0;
    if (record_valid()) {
        boots = record.boots;
        why = record.reason < WB_RESET_UNKNOWN ? (wb_reset_reason_t)record.reason : WB_RESET_UNKNOWN;
        if (why == WB_RESET_POWER_ON) {
            why = WB_RESET_UNKNOWN; /* a valid record that names no cause: reset by something else */
        }
    }
    boots++;
    /* Leave a record that says "running": a reset nobody records shows up as unknown. */
    record.magic = RESET_MAGIC;
    record.reason = WB_RESET_POWER_ON;
    record.boots = boots;
    record.check = record_check(&record);
    if (boot_count != 0) {
        *boot_count = boots;
    }
    return why;
}

const char *wb_reset_reason_name(wb_reset_reason_t r)
{
    switch (r) {
    case WB_RESET_POWER_ON: return "power-on";
    case WB_RESET_SOFTWARE: return "software";
    case WB_RESET_FAULT: return "fault";
    case WB_RESET_WATCHDOG: return "watchdog";
    default: return "unknown";
    }
}

void wb_reset_record(wb_reset_reason_t why)
{
    record.magic = RESET_MAGIC;
    record.reason = (uint32_t)why;
    record.check = record_check(&record);
}

void wb_reset(wb_reset_reason_t why)
{
    wb_reset_record(why);
    __asm volatile("dsb" ::: "memory");
    SCB_AIRCR = SCB_AIRCR_RESET;
    __asm volatile("dsb" ::: "memory");
    for (;;) {
    }
}
