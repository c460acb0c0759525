/* ARM CMSDK APB UART (MPS2 family): polled transmit, interrupt-driven receive. */
#include <stdint.h>

#include "wb_cortexm.h"
#include "wb_irq.h"
#include "wb_uart.h"

#define UART_DATA(u)     WB_REG32((u)->base + 0x000u)
#define UART_STATE(u)    WB_REG32((u)->base + 0x004u)
#define UART_CTRL(u)     WB_REG32((u)->base + 0x008u)
#define UART_INTSTAT(u)  WB_REG32((u)->base + 0x00Cu)
#define UART_BAUDDIV(u)  WB_REG32((u)->base + 0x010u)

#define STATE_TX_FULL (1u << 0)
#define STATE_RX_FULL (1u << 1)
#define STATE_RX_OVERRUN (1u << 3)
#define CTRL_TX_EN (1u << 0)
#define CTRL_RX_EN (1u << 1)
#define CTRL_RX_INT_EN (1u << 3)
#define INT_RX (1u << 1)
#define INT_RX_OVERRUN (1u << 3)

void wb_uart_init(wb_uart_t *u)
{
    uint32_t div = u->clock_hz / u->baud;
    UART_BAUDDIV(u) = div < 16u ? 16u : div; /* the CMSDK UART requires a divider of at least 16 */
    uint32_t ctrl = CTRL_TX_EN | CTRL_RX_EN;
    if (u->rx_buf != 0 && u->irq_rx >= 0) {
        ctrl |= CTRL_RX_INT_EN;
        wb_irq_connect(u->irq_rx, wb_uart_isr, u);
    }
    UART_CTRL(u) = ctrl;
}

void wb_uart_write(wb_uart_t *u, const void *data, size_t len)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        while (UART_STATE(u) & STATE_TX_FULL) {
        }
        UART_DATA(u) = p[i];
    }
}

void wb_uart_rx_irq(wb_uart_t *u, int on)
{
    UART_CTRL(u) = on ? (UART_CTRL(u) | CTRL_RX_INT_EN) : (UART_CTRL(u) & ~CTRL_RX_INT_EN);
}

/* Move bytes from the UART into the ring until either is empty; pause when the ring is full. */
void wb_uart_rx_drain(wb_uart_t *u)
{
    while (UART_STATE(u) & STATE_RX_FULL) {
        uint16_t next = (uint16_t)((u->rx_head + 1u) & (u->rx_size - 1u));
        if (next == u->rx_tail) {
            wb_uart_rx_irq(u, 0);
            u->rx_paused = 1;
            break;
        }
        u->rx_buf[u->rx_head] = (uint8_t)UART_DATA(u);
        u->rx_head = next;
    }
    if (UART_STATE(u) & STATE_RX_OVERRUN) {
        u->rx_dropped++;
        UART_STATE(u) = STATE_RX_OVERRUN; /* write-one-to-clear */
    }
}

void wb_uart_isr(void *arg)
{
    wb_uart_t *u = arg;
    /* Acknowledge first, then drain: a byte that lands after the acknowledge raises the interrupt
     * again. (Acknowledging after the drain loses the interrupt of a byte QEMU delivers between
     * our last DATA read and the acknowledge, and reception stalls with RXFULL set.) */
    UART_INTSTAT(u) = INT_RX | INT_RX_OVERRUN;
    wb_uart_rx_drain(u);
}
