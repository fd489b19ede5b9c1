/*
 * Test stand-in for Occlum's /dev/sgx DCAP ioctls, loaded with LD_PRELOAD.
 *
 * NOT an enclave and NOT Occlum: it interposes libc's ioctl() for one file (the path
 * in FAKE_SGX_DEVICE) so that ppml_kernel.tee.occlum's real fcntl.ioctl calls, with
 * their real ctypes struct of pointers, reach code that dereferences those pointers the
 * way Occlum's LibOS does (src/libos/src/fs/dev_fs/dev_sgx/mod.rs):
 *   SGXIOC_GET_DCAP_QUOTE_SIZE: writes the quote size to the u32 argument.
 *   SGXIOC_GEN_DCAP_QUOTE: reads 64 B at report_data, requires *quote_size >= size,
 *     copies a template quote (FAKE_SGX_QUOTE) with REPORT_DATA (offset 368) replaced.
 * FAKE_SGX_MODE: "ok", "eio" (size query fails with EIO), "busy:N" / "einval:N" (the
 * first N generation calls fail with EBUSY / EINVAL), "wrongdata" (quote carries other
 * report data). Every call is appended to FAKE_SGX_LOG as one line.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SGXIOC_GET_DCAP_QUOTE_SIZE 0x80047307UL
#define SGXIOC_GEN_DCAP_QUOTE 0xc0187308UL
#define REPORT_DATA_OFFSET 368
#define REPORT_DATA_SIZE 64

struct gen_dcap_quote_arg {
    const uint8_t *report_data;
    uint32_t *quote_size;
    uint8_t *quote_buf;
};

static int gen_calls = 0;

static void log_line(const char *what, int rc) {
    const char *path = getenv("FAKE_SGX_LOG");
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "%s %d\n", what, rc);
    fclose(f);
}

static int is_fake_fd(int fd) {
    const char *dev = getenv("FAKE_SGX_DEVICE");
    char link[64], target[PATH_MAX], want[PATH_MAX];
    if (!dev || !realpath(dev, want)) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n < 0) return 0;
    target[n] = '\0';
    return strcmp(target, want) == 0;
}

static long load_template(uint8_t **out) {
    const char *path = getenv("FAKE_SGX_QUOTE");
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc(size);
    if (!*out || fread(*out, 1, size, f) != (size_t)size) { fclose(f); return -1; }
    fclose(f);
    return size;
}

static int fail_first(const char *mode, const char *prefix) {
    size_t n = strlen(prefix);
    if (strncmp(mode, prefix, n) != 0) return 0;
    return gen_calls <= atoi(mode + n);
}

static int fake_ioctl(unsigned long req, void *arg) {
    const char *mode = getenv("FAKE_SGX_MODE");
    uint8_t *tpl = NULL;
    long size;
    if (!mode) mode = "ok";
    if (req == SGXIOC_GET_DCAP_QUOTE_SIZE) {
        if (strcmp(mode, "eio") == 0) { log_line("SIZE", -EIO); errno = EIO; return -1; }
        size = load_template(&tpl);
        free(tpl);
        if (size < 0 || !arg) { log_line("SIZE", -EINVAL); errno = EINVAL; return -1; }
        *(uint32_t *)arg = (uint32_t)size;
        log_line("SIZE", 0);
        return 0;
    }
    /* SGXIOC_GEN_DCAP_QUOTE */
    struct gen_dcap_quote_arg *a = arg;
    gen_calls++;
    if (fail_first(mode, "busy:")) { log_line("GEN", -EBUSY); errno = EBUSY; return -1; }
    if (fail_first(mode, "einval:")) { log_line("GEN", -EINVAL); errno = EINVAL; return -1; }
    size = load_template(&tpl);
    if (size < 0 || !a || !a->report_data || !a->quote_size || !a->quote_buf
        || *a->quote_size < (uint32_t)size || size < REPORT_DATA_OFFSET + REPORT_DATA_SIZE) {
        free(tpl);
        log_line("GEN", -EINVAL);
        errno = EINVAL;
        return -1;
    }
    memcpy(a->quote_buf, tpl, size);
    memcpy(a->quote_buf + REPORT_DATA_OFFSET, a->report_data, REPORT_DATA_SIZE);
    if (strcmp(mode, "wrongdata") == 0) a->quote_buf[REPORT_DATA_OFFSET] ^= 0xff;
    free(tpl);
    log_line("GEN", 0);
    return 0;
}

int ioctl(int fd, unsigned long req, ...) {
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if ((req == SGXIOC_GET_DCAP_QUOTE_SIZE || req == SGXIOC_GEN_DCAP_QUOTE) && is_fake_fd(fd))
        return fake_ioctl(req, arg);
    static int (*real_ioctl)(int, unsigned long, ...) = NULL;
    if (!real_ioctl) real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
    return real_ioctl(fd, req, arg);
}
