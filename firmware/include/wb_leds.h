/* User LEDs, as the device tree's gpio-leds node lists them (WB_LEDS in board_gen.h). */
#ifndef WB_LEDS_H
#define WB_LEDS_H

#include <stdint.h>

typedef struct {
    uintptr_t reg; /* LED register of the controller */
    uint32_t bit;
} wb_led_t;

void wb_led_write(const wb_led_t *led, int on);
int wb_led_read(const wb_led_t *led);

#endif
