/* MPS2 FPGA IO user LEDs ("arm,mps2-fpgaio-gpio"): one register, one bit per LED. */
#include "wb_cortexm.h"
#include "wb_leds.h"

void wb_led_write(const wb_led_t *led, int on)
{
    uint32_t v = WB_REG32(led->reg);
    WB_REG32(led->reg) = on ? (v | (1u << led->bit)) : (v & ~(1u << led->bit));
}

int wb_led_read(const wb_led_t *led)
{
    return (WB_REG32(led->reg) >> led->bit) & 1u;
}
