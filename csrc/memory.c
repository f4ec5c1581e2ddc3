/* Aligned, zeroed allocation and overflow-checked sizes. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int lf_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

void *lf_aligned_alloc(size_t bytes)
{
    size_t rounded = (bytes + LF_ALIGN - 1) & ~(size_t)(LF_ALIGN - 1);
    if (bytes == 0 || rounded < bytes)
        return NULL;
    void *p = aligned_alloc(LF_ALIGN, rounded);
    if (p)
        memset(p, 0, rounded);
    return p;
}

void *lf_alloc_counted(size_t bytes, size_t *total)
{
    void *p = lf_aligned_alloc(bytes);
    if (p)
        *total += (bytes + LF_ALIGN - 1) & ~(size_t)(LF_ALIGN - 1);
    return p;
}

void lf_aligned_free(void *p) { free(p); }
