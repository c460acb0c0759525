/*
 * UART driver interface. Exactly one UART family exists per board, so the build links the one
 * driver the device tree's compatible strings select (drivers/uart_*.c); the core sees only this.
 */
#ifndef WB_UART_H
#define WB_UART_H

#include <stddef.h>
#include <stdint.h>

typedef struct wb_uart {
    uintptr_t base;
    int irq_rx;            /* NVIC line raising "receive data available"; -1 if the UART has none */
    int irq_tx;            /* separate TX line (CMSDK); -1 when shared or absent */
    uint32_t baud;
    uint32_t clock_hz;     /* peripheral clock feeding the baud-rate generator */
    /* Receive ring, filled from the RX interrupt so bytes keep flowing while the CPU computes. */
    uint8_t *rx_buf;
    uint16_t rx_size;      /* power of two */
    volatile uint16_t rx_head;
    volatile uint16_t rx_tail;
    volatile uint32_t rx_dropped;
    volatile uint8_t rx_paused; /* ring full: RX interrupt off, the byte waits in the UART */
} wb_uart_t;

/* Enable TX and RX; if rx_buf is set, RX is interrupt driven into the ring. */
void wb_uart_init(wb_uart_t *u);
/* Blocking, polled transmit: used by the crash reporter too, so it must not depend on interrupts. */
void wb_uart_write(wb_uart_t *u, const void *data, size_t len);
/* Non-blocking: copies up to max buffered bytes, returns how many. When the ring was full the
 * receiver was paused (the byte stays in the UART, so QEMU holds the rest back: flow control,
 * no loss); reading makes room and resumes it. */
size_t wb_uart_read(wb_uart_t *u, void *buf, size_t max);
/* Interrupt service routine: drains the RX data register into the ring. */
void wb_uart_isr(void *uart);

/* Driver hooks for the shared receive ring (core/uart_ring.c): move bytes from the UART into the
 * ring until either is empty, pausing the receiver when the ring is full; switch the RX interrupt. */
void wb_uart_rx_drain(wb_uart_t *u);
void wb_uart_rx_irq(wb_uart_t *u, int on);

#endif
