/*
 * The device's persistent identity: its P-256 private key (generated on the device, never sent
 * anywhere), the client certificate the gateway issued at enrollment, the name it was given, and
 * a boot counter. Kept in the board's non-volatile storage file (semihosting, see semihost.h) as
 * "WBID", uint32 LE length, a CBOR map {1: boots, 2: key DER, 3: cert DER, 4: name}, and a
 * SHA-256 of all that, so a torn or corrupted file is detected rather than half-trusted.
 */
#ifndef WB_IDENTITY_H
#define WB_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#define WB_KEY_DER_MAX 160
#define WB_CERT_DER_MAX 1024
#define WB_NAME_MAX 64

typedef struct {
    uint32_t boots;
    uint8_t key_der[WB_KEY_DER_MAX];
    size_t key_len;
    uint8_t cert_der[WB_CERT_DER_MAX];
    size_t cert_len;
    char name[WB_NAME_MAX]; /* NUL-terminated; empty until enrolled */
} wb_identity_t;

/* 0: loaded; -1: no storage file yet; -2: present but corrupt (treated as absent, logged). */
int wb_identity_load(wb_identity_t *id);
int wb_identity_save(const wb_identity_t *id);

#endif
