/*
 * ARM semihosting file I/O (QEMU: -semihosting-config enable=on,target=native). The supervisor
 * runs each board's QEMU in that board's private state folder, so relative paths name files
 * there: this is the board's non-volatile storage. Only used when the supervisor started us
 * (boot parameters present): without semihosting enabled the BKPT would fault.
 */
#ifndef WB_SEMIHOST_H
#define WB_SEMIHOST_H

#include <stddef.h>

/* Whole-file helpers. Return bytes read / 0 on success, or -1. */
long wb_semihost_read_file(const char *path, void *buf, size_t cap);
int wb_semihost_write_file(const char *path, const void *data, size_t len);

#endif
