/*
 * A qemu-user TCG plugin that counts the guest instructions executed between two markers.
 *
 * The program under test marks a region with system calls that fail harmlessly and that no
 * real program makes: lseek(-1, PI_COST_START, label) before it and lseek(-1, PI_COST_STOP,
 * label) after it. At each stop the plugin appends "label instructions" to the file named by
 * its `out` argument. Counting adds each translated block's instruction count inline as the
 * block starts, which costs far less than a callback per block and is exact for straight-line
 * blocks; a block is cut at every system call, so the markers fall on block boundaries.
 * One counter for all threads: the caller runs the interpreter with one thread.
 *
 * build: gcc -shared -fPIC -O2 -I<qemu>/include/qemu -o pi_cost_plugin.so pi_cost_plugin.c
 * run:   qemu-aarch64 -plugin ./pi_cost_plugin.so,out=counts.txt ...
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* aarch64's lseek; the offsets are arbitrary constants that scripts/pi_cost_driver.py repeats. */
#define AARCH64_NR_LSEEK 62
#define PI_COST_START 0x5049434fULL
#define PI_COST_STOP 0x50494350ULL

static uint64_t executed;
static uint64_t at_start;
static FILE *out;

static void on_block_translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed,
                                             qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    if (num != AARCH64_NR_LSEEK || a1 != UINT64_MAX) {
        return;
    }
    if (a2 == PI_COST_START) {
        at_start = executed;
    } else if (a2 == PI_COST_STOP) {
        fprintf(out, "%" PRIu64 " %" PRIu64 "\n", a3, executed - at_start);
        fflush(out);
    }
}

static void on_guest_exit(qemu_plugin_id_t id, void *unused)
{
    fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        }
    }
    if (path == NULL || (out = fopen(path, "a")) == NULL) {
        fprintf(stderr, "pi_cost_plugin: needs out=FILE, a file it can append to\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_block_translated);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_guest_exit, NULL);
    return 0;
}
