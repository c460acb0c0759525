/*
 * ARM CMSDK APB watchdog. First expiry raises its interrupt (routed to NMI on MPS2), where the
 * firmware records "watchdog" as the reset cause; the second expiry resets the system.
 */
#include <stdint.h>

#include "wb_board.h"
#include "wb_cortexm.h"
#include "wb_watchdog.h"

#define WDOG_LOAD   WB_REG32(WB_WATCHDOG_BASE + 0x000u)
#define WDOG_CTRL   WB_REG32(WB_WATCHDOG_BASE + 0x008u)
#define WDOG_INTCLR WB_REG32(WB_WATCHDOG_BASE + 0x00Cu)
#define WDOG_MIS    WB_REG32(WB_WATCHDOG_BASE + 0x014u)
#define WDOG_LOCK   WB_REG32(WB_WATCHDOG_BASE + 0xC00u)

#define CTRL_INTEN (1u << 0)
#define CTRL_RESEN (1u << 1)
#define UNLOCK_KEY 0x1ACCE551u

void wb_watchdog_start(uint32_t timeout_ms)
{
    WDOG_LOCK = UNLOCK_KEY;
    WDOG_LOAD = (uint32_t)((uint64_t)WB_WATCHDOG_CLOCK_HZ * timeout_ms / 1000u);
    WDOG_CTRL = CTRL_INTEN | CTRL_RESEN;
    WDOG_LOCK = 0;
}

void wb_watchdog_kick(void)
{
    WDOG_LOCK = UNLOCK_KEY;
    WDOG_INTCLR = 1; /* clears the interrupt and reloads the counter */
    WDOG_LOCK = 0;
}

int wb_watchdog_fired(void)
{
    return (WDOG_MIS & 1u) != 0;
}
