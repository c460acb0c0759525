#include "rng.h"

#include <string.h>

#include "mbedtls/ctr_drbg.h"
#include "psa/crypto.h"

static mbedtls_ctr_drbg_context drbg;
static int ready;
static const uint8_t *pool;
static size_t pool_len;

/* The DRBG's entropy source: the injected seed, each byte used once. */
static int seed_source(void *ctx, unsigned char *out, size_t len)
{
    (void)ctx;
    if (len > pool_len) {
        return MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
    }
    memcpy(out, pool, len);
    pool += len;
    pool_len -= len;
    return 0;
}

int wb_rng_init(const uint8_t *seed, size_t seed_len, uint32_t boot_counter)
{
    static const char label[] = "wasmbed-drbg";
    uint8_t pers[sizeof label + sizeof boot_counter];
    memcpy(pers, label, sizeof label);
    memcpy(pers + sizeof label, &boot_counter, sizeof boot_counter);
    pool = seed;
    pool_len = seed_len;
    mbedtls_ctr_drbg_init(&drbg);
    int rc = mbedtls_ctr_drbg_seed(&drbg, seed_source, 0, pers, sizeof pers);
    /* No further entropy exists until the next boot: never ask for a reseed. A power cycle
     * brings a fresh seed. */
    mbedtls_ctr_drbg_set_reseed_interval(&drbg, 0x7FFFFFFF);
    pool = 0;
    pool_len = 0;
    ready = rc == 0;
    return rc;
}

int wb_rng(void *ctx, unsigned char *out, size_t len)
{
    (void)ctx;
    if (!ready) {
        return MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
    }
    return mbedtls_ctr_drbg_random(&drbg, out, len);
}

/* PSA Crypto's random source (MBEDTLS_PSA_CRYPTO_EXTERNAL_RNG): the same DRBG. */
psa_status_t mbedtls_psa_external_get_random(mbedtls_psa_external_random_context_t *context, uint8_t *output,
                                             size_t output_size, size_t *output_length)
{
    (void)context;
    if (wb_rng(0, output, output_size) != 0) {
        return PSA_ERROR_INSUFFICIENT_ENTROPY;
    }
    *output_length = output_size;
    return PSA_SUCCESS;
}
