/* The receive ring shared by every UART driver: the consumer side (see wb_uart.h). */
#include "wb_cortexm.h"
#include "wb_uart.h"

size_t wb_uart_read(wb_uart_t *u, void *buf, size_t max)
{
    uint8_t *out = buf;
    size_t n = 0;
    while (n < max && u->rx_tail != u->rx_head) {
        out[n++] = u->rx_buf[u->rx_tail];
        u->rx_tail = (uint16_t)((u->rx_tail + 1u) & (u->rx_size - 1u));
    }
    if ((u->rx_paused && n > 0) || n == 0) {
        /* Resume a paused receiver, and (when the ring ran dry) take any byte waiting in the UART
         * directly, so a lost interrupt can never stall reception. */
        wb_irq_lock();
        if (u->rx_paused) {
            /* Re-enable before draining: a byte QEMU delivers after our last read then raises the
             * interrupt (taken once we unlock). Enabling after the drain would miss it. */
            u->rx_paused = 0;
            wb_uart_rx_irq(u, 1);
        }
        wb_uart_rx_drain(u); /* may pause again if the ring fills */
        wb_irq_unlock();
        while (n < max && u->rx_tail != u->rx_head) {
            out[n++] = u->rx_buf[u->rx_tail];
            u->rx_tail = (uint16_t)((u->rx_tail + 1u) & (u->rx_size - 1u));
        }
    }
    return n;
}
