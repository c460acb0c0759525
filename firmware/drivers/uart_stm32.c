/* STM32 USART (F1/F2/F4 register layout, as on STM32F100 and STM32F405). */
#include <stdint.h>

#include "wb_cortexm.h"
#include "wb_irq.h"
#include "wb_uart.h"

#define USART_SR(u)  WB_REG32((u)->base + 0x00u)
#define USART_DR(u)  WB_REG32((u)->base + 0x04u)
#define USART_BRR(u) WB_REG32((u)->base + 0x08u)
#define USART_CR1(u) WB_REG32((u)->base + 0x0Cu)

#define SR_ORE  (1u << 3)
#define SR_RXNE (1u << 5)
#define SR_TXE  (1u << 7)
#define CR1_RE     (1u << 2)
#define CR1_TE     (1u << 3)
#define CR1_RXNEIE (1u << 5)
#define CR1_UE     (1u << 13)

void wb_uart_init(wb_uart_t *u)
{
    USART_BRR(u) = (u->clock_hz + u->baud / 2u) / u->baud; /* mantissa.fraction in 1/16ths, oversampling 16 */
    uint32_t cr1 = CR1_UE | CR1_TE | CR1_RE;
    if (u->rx_buf != 0 && u->irq_rx >= 0) {
        cr1 |= CR1_RXNEIE;
        wb_irq_connect(u->irq_rx, wb_uart_isr, u);
    }
    USART_CR1(u) = cr1;
}

void wb_uart_write(wb_uart_t *u, const void *data, size_t len)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        while (!(USART_SR(u) & SR_TXE)) {
        }
        USART_DR(u) = p[i];
    }
}

void wb_uart_rx_irq(wb_uart_t *u, int on)
{
    USART_CR1(u) = on ? (USART_CR1(u) | CR1_RXNEIE) : (USART_CR1(u) & ~CR1_RXNEIE);
}

/* Move bytes from the USART into the ring until either is empty; pause when the ring is full
 * (RXNE stays set, so QEMU's USART model holds further input back). */
void wb_uart_rx_drain(wb_uart_t *u)
{
    uint32_t sr;
    while ((sr = USART_SR(u)) & (SR_RXNE | SR_ORE)) {
        uint16_t next = (uint16_t)((u->rx_head + 1u) & (u->rx_size - 1u));
        if (next == u->rx_tail) {
            wb_uart_rx_irq(u, 0);
            u->rx_paused = 1;
            break;
        }
        uint8_t b = (uint8_t)USART_DR(u); /* reading DR after SR clears RXNE and ORE */
        if (sr & SR_ORE) {
            u->rx_dropped++;
        }
        u->rx_buf[u->rx_head] = b;
        u->rx_head = next;
    }
}

void wb_uart_isr(void *arg)
{
    wb_uart_rx_drain(arg);
}
