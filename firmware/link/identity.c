#include "identity.h"

#include <string.h>

#include "cbor.h"
#include "mbedtls/sha256.h"
#include "semihost.h"
#include "wb_console.h"

#define ID_MAGIC "WBID"
#define ID_FILE "wasmbed-storage.bin"
#define ID_FILE_MAX (8 + 32 + WB_KEY_DER_MAX + WB_CERT_DER_MAX + WB_NAME_MAX + 32)

static uint8_t file_buf[ID_FILE_MAX];

int wb_identity_load(wb_identity_t *id)
{
    memset(id, 0, sizeof *id);
    long n = wb_semihost_read_file(ID_FILE, file_buf, sizeof file_buf);
    if (n < 0) {
        return -1;
    }
    uint32_t len;
    memcpy(&len, file_buf + 4, 4);
    if (n < 8 + 32 || memcmp(file_buf, ID_MAGIC, 4) != 0 || len != (uint32_t)n - 8u - 32u) {
        wb_printf("storage: %s is not a wasmbed identity file; starting a new identity\n", ID_FILE);
        return -2;
    }
    uint8_t digest[32];
    mbedtls_sha256(file_buf, 8u + len, digest, 0);
    if (memcmp(digest, file_buf + 8 + len, 32) != 0) {
        wb_printf("storage: %s fails its checksum; starting a new identity\n", ID_FILE);
        return -2;
    }
    cbor_dec d;
    cbor_dec_init(&d, file_buf + 8, len);
    size_t pairs;
    if (cbor_read_map(&d, &pairs) != CBOR_OK) {
        return -2;
    }
    for (size_t i = 0; i < pairs; i++) {
        uint64_t key, v;
        const uint8_t *p;
        const char *t;
        size_t l;
        if (cbor_read_uint(&d, &key) != CBOR_OK) {
            return -2;
        }
        if (key == 1 && cbor_read_uint(&d, &v) == CBOR_OK) {
            id->boots = (uint32_t)v;
        } else if (key == 2 && cbor_read_bytes(&d, &p, &l) == CBOR_OK && l <= WB_KEY_DER_MAX) {
            memcpy(id->key_der, p, l);
            id->key_len = l;
        } else if (key == 3 && cbor_read_bytes(&d, &p, &l) == CBOR_OK && l <= WB_CERT_DER_MAX) {
            memcpy(id->cert_der, p, l);
            id->cert_len = l;
        } else if (key == 4 && cbor_read_text(&d, &t, &l) == CBOR_OK && l < WB_NAME_MAX) {
            memcpy(id->name, t, l);
            id->name[l] = '\0';
        } else {
            memset(id, 0, sizeof *id);
            return -2;
        }
    }
    return 0;
}

int wb_identity_save(const wb_identity_t *id)
{
    cbor_enc e;
    cbor_enc_init(&e, file_buf + 8, sizeof file_buf - 8 - 32);
    cbor_put_map(&e, 4);
    cbor_put_uint(&e, 1);
    cbor_put_uint(&e, id->boots);
    cbor_put_uint(&e, 2);
    cbor_put_bytes(&e, id->key_der, id->key_len);
    cbor_put_uint(&e, 3);
    cbor_put_bytes(&e, id->cert_der, id->cert_len);
    cbor_put_uint(&e, 4);
    cbor_put_text(&e, id->name, strlen(id->name));
    if (e.err != CBOR_OK) {
        return -1;
    }
    uint32_t len = (uint32_t)e.len;
    memcpy(file_buf, ID_MAGIC, 4);
    memcpy(file_buf + 4, &len, 4);
    mbedtls_sha256(file_buf, 8u + len, file_buf + 8 + len, 0);
    if (wb_semihost_write_file(ID_FILE, file_buf, 8u + len + 32u) != 0) {
        wb_printf("storage: writing %s failed\n", ID_FILE);
        return -1;
    }
    return 0;
}
