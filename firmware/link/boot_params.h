/*
 * Boot parameters the supervisor loads into the DTS region /chosen wasmbed,boot-params before
 * the CPU starts: "WBBP", uint32 LE length, then one CBOR map
 *   {1: entropy seed (bytes), 2: one-time enrollment token (bytes), 3: gateway CA (DER)}.
 * A board booted by hand has none, and its TLS link stays off.
 */
#ifndef WB_BOOT_PARAMS_H
#define WB_BOOT_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#define WB_SEED_MAX 64
#define WB_TOKEN_MAX 32
#define WB_CA_MAX 1024

typedef struct {
    uint8_t seed[WB_SEED_MAX];
    size_t seed_len;
    uint8_t token[WB_TOKEN_MAX];
    size_t token_len;
    uint8_t ca_der[WB_CA_MAX];
    size_t ca_len;
} wb_boot_params_t;

/* Parse and copy out the parameters, then wipe the seed from the shared region. Returns 0 when
 * present and well-formed, -1 when absent, -2 when malformed (a message says why). */
int wb_boot_params_take(wb_boot_params_t *out);

#endif
