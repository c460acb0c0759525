/*
 * The device's random number generator: one CTR_DRBG (AES-256) for everything — TLS, key
 * generation, PSA — seeded once per boot from the supervisor's fresh seed, personalised with the
 * persistent boot counter so that a warm reset (which re-copies the same seed) never replays a
 * DRBG stream. QEMU boards have no TRNG; see docs/firmware.md for the threat model.
 */
#ifndef WB_RNG_H
#define WB_RNG_H

#include <stddef.h>
#include <stdint.h>

int wb_rng_init(const uint8_t *seed, size_t seed_len, uint32_t boot_counter);
/* mbedTLS f_rng signature; ctx is ignored. */
int wb_rng(void *ctx, unsigned char *out, size_t len);

#endif
