#include "boot_params.h"

#include <string.h>

#include "cbor.h"
#include "wb_board.h"
#include "wb_console.h"

#define BP_MAGIC 0x50424257u /* "WBBP" little-endian */

static int copy_bytes(cbor_dec *d, uint8_t *dst, size_t cap, size_t *len, const char *what)
{
    const uint8_t *p;
    size_t n;
    if (cbor_read_bytes(d, &p, &n) != CBOR_OK || n > cap) {
        wb_printf("boot-params: %s is not a byte string of at most %u bytes\n", what, (unsigned)cap);
        return -1;
    }
    memcpy(dst, p, n);
    *len = n;
    return 0;
}

int wb_boot_params_take(wb_boot_params_t *out)
{
    memset(out, 0, sizeof *out);
    volatile uint8_t *region = (volatile uint8_t *)(uintptr_t)WB_BOOT_PARAMS_BASE;
    uint32_t magic, len;
    memcpy(&magic, (const void *)region, 4);
    memcpy(&len, (const void *)(region + 4), 4);
    if (magic != BP_MAGIC) {
        return -1;
    }
    if (len > WB_BOOT_PARAMS_SIZE - 8u) {
        wb_printf("boot-params: length %lu exceeds the %u-byte region\n", (unsigned long)len,
                  (unsigned)WB_BOOT_PARAMS_SIZE);
        return -2;
    }
    const uint8_t *body = (const uint8_t *)(uintptr_t)(WB_BOOT_PARAMS_BASE + 8u);
    cbor_dec d;
    cbor_dec_init(&d, body, len);
    size_t n;
    if (cbor_read_map(&d, &n) != CBOR_OK) {
        wb_printf("boot-params: not a CBOR map\n");
        return -2;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint64_t key;
        if (cbor_read_uint(&d, &key) != CBOR_OK) {
            wb_printf("boot-params: map keys must be unsigned integers\n");
            return -2;
        }
        switch (key) {
        case 1: rc = copy_bytes(&d, out->seed, sizeof out->seed, &out->seed_len, "seed"); break;
        case 2: rc = copy_bytes(&d, out->token, sizeof out->token, &out->token_len, "token"); break;
        case 3: rc = copy_bytes(&d, out->ca_der, sizeof out->ca_der, &out->ca_len, "CA"); break;
        default: rc = cbor_skip(&d, 4) == CBOR_OK ? 0 : -1; break; /* newer supervisor: ignore */
        }
    }
    if (rc != 0) {
        return -2;
    }
    /* The seed is secret: keep only our copy. (QEMU re-copies the blob on a warm reset, which is
     * why the DRBG also mixes in the persistent boot counter; see rng.c.) */
    memset((void *)(uintptr_t)WB_BOOT_PARAMS_BASE, 0, 8u + len);
    return 0;
}
