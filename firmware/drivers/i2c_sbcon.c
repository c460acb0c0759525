/*
 * ARM SBCon two-wire interface (MPS2, "arm,versatile-i2c"): the controller only exposes the SCL and
 * SDA lines (read at +0, set at +0, clear at +4), so the master protocol is bit-banged here.
 * QEMU's model (versatile_i2c + bitbang_i2c) reacts to line changes at once; no delays are needed,
 * and none would change what the emulated sensor sees.
 */
#include "wb_cortexm.h"
#include "wb_i2c.h"

#define SB_READ(b)  WB_REG32((b) + 0x0u)
#define SB_SET(b)   WB_REG32((b) + 0x0u)
#define SB_CLEAR(b) WB_REG32((b) + 0x4u)
#define SCL (1u << 0)
#define SDA (1u << 1)

static void scl(uintptr_t b, int high) { if (high) SB_SET(b) = SCL; else SB_CLEAR(b) = SCL; }
static void sda(uintptr_t b, int high) { if (high) SB_SET(b) = SDA; else SB_CLEAR(b) = SDA; }
static int sda_in(uintptr_t b) { return (SB_READ(b) & SDA) != 0; }

static void start(uintptr_t b)
{
    sda(b, 1);
    scl(b, 1);
    sda(b, 0);
    scl(b, 0);
}

static void stop(uintptr_t b)
{
    sda(b, 0);
    scl(b, 1);
    sda(b, 1);
}

/* Returns 1 if the byte was acknowledged. */
static int write_byte(uintptr_t b, uint8_t v)
{
    for (int i = 7; i >= 0; i--) {
        sda(b, (v >> i) & 1u);
        scl(b, 1);
        scl(b, 0);
    }
    sda(b, 1); /* release SDA for the slave's ACK */
    scl(b, 1);
    int ack = !sda_in(b);
    scl(b, 0);
    return ack;
}

static uint8_t read_byte(uintptr_t b, int ack)
{
    uint8_t v = 0;
    sda(b, 1);
    for (int i = 0; i < 8; i++) {
        scl(b, 1);
        v = (uint8_t)((v << 1) | (uint8_t)sda_in(b));
        scl(b, 0);
    }
    sda(b, !ack); /* ACK all but the last byte */
    scl(b, 1);
    scl(b, 0);
    sda(b, 1);
    return v;
}

int wb_i2c_transfer(uintptr_t bus, uint8_t addr, const uint8_t *w, size_t wlen, uint8_t *r, size_t rlen)
{
    int rc = 0;
    if (wlen > 0 || rlen == 0) {
        start(bus);
        if (!write_byte(bus, (uint8_t)(addr << 1))) {
            rc = -1;
            goto out;
        }
        for (size_t i = 0; i < wlen; i++) {
            if (!write_byte(bus, w[i])) {
                rc = -1;
                goto out;
            }
        }
    }
    if (rlen > 0) {
        start(bus); /* repeated start */
        if (!write_byte(bus, (uint8_t)((addr << 1) | 1u))) {
            rc = -1;
            goto out;
        }
        for (size_t i = 0; i < rlen; i++) {
            r[i] = read_byte(bus, i + 1 < rlen);
        }
    }
out:
    stop(bus);
    return rc;
}
