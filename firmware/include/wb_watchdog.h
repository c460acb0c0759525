/* Watchdog, present only where the device tree declares one (WB_HAS_WATCHDOG). */
#ifndef WB_WATCHDOG_H
#define WB_WATCHDOG_H

#include <stdint.h>

void wb_watchdog_start(uint32_t timeout_ms);
void wb_watchdog_kick(void);
/* True if the watchdog raised its (pre-reset) interrupt; clears it. */
int wb_watchdog_fired(void);

#endif
