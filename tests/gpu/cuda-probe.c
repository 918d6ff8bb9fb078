/* cuda-probe: dlopen libcuda.so.1 as a CUDA program does and say which
 * file it got (tests/gpu.rs, tests/gpu/check.sh). Prints
 *   libcuda: NAME -> REALPATH
 *   driver version: N
 *   fake: TEXT            (only the test driver has rfake_fake_driver)
 * and exits 1 with dlerror()'s text when there is no libcuda. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    if (!h) {
        printf("no libcuda: %s\n", dlerror());
        return 1;
    }
    struct link_map *map = NULL;
    if (dlinfo(h, RTLD_DI_LINKMAP, &map) != 0 || !map) {
        printf("dlinfo: %s\n", dlerror());
        return 1;
    }
    char real[PATH_MAX];
    if (!realpath(map->l_name, real))
        snprintf(real, sizeof real, "?");
    printf("libcuda: %s -> %s\n", map->l_name, real);
    int (*get_version)(int *) = (int (*)(int *))dlsym(h, "cuDriverGetVersion");
    int v = 0;
    if (get_version && get_version(&v) == 0)
        printf("driver version: %d\n", v);
    const char *(*fake)(void) = (const char *(*)(void))dlsym(h, "rfake_fake_driver");
    if (fake)
        printf("fake: %s\n", fake());
    return 0;
}
