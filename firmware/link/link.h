/*
 * The gateway link: mutual TLS (mbedTLS) over the DTS's /chosen wasmbed,link UART, carrying the
 * wasmbed protocol (docs/protocol.md). Runs from the main loop and never blocks it: each call to
 * wb_link_poll() advances the handshake or the session by whatever bytes have arrived.
 */
#ifndef WB_LINK_H
#define WB_LINK_H

#include <stdint.h>

/* Read boot parameters and the stored identity, seed the DRBG, generate a key on first boot.
 * Returns 0 when the link can run; otherwise it stays off (reason printed). */
int wb_link_init(void);
void wb_link_poll(uint64_t now_ms);

#endif
