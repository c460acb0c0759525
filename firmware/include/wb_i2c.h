/* I2C master transfers: write wlen bytes then (repeated start) read rlen bytes. */
#ifndef WB_I2C_H
#define WB_I2C_H

#include <stddef.h>
#include <stdint.h>

/* 0 on success, -1 if the address or a written byte was not acknowledged (no device). */
int wb_i2c_transfer(uintptr_t bus_base, uint8_t addr, const uint8_t *w, size_t wlen, uint8_t *r, size_t rlen);

#endif
