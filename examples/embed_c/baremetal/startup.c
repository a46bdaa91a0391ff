// SPDX-License-Identifier: Apache-2.0
/* Start-up of examples/embed_c on QEMU's mps2-an500 (Cortex-M7) with semihosting: the vector
 * table, and a reset handler that enables the FPU and enters newlib's semihosting start-up
 * (rdimon's _start: clears .bss, sets up stdio and the stack, passes QEMU's
 * -semihosting-config arg=... as argv to main, and reports exit()'s status to QEMU). */
#include <stdint.h>

extern void _start(void);
extern uint32_t __stack_top;

void reset_handler(void);
static void fault_handler(void) {
  for (;;) {
  }
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void)) & __stack_top,
    reset_handler,
    fault_handler,
    fault_handler,
    fault_handler,
    fault_handler,
    fault_handler};

void reset_handler(void) {
  /* CPACR: full access to CP10 and CP11 (the FPU) before any floating-point instruction. */
  *(volatile uint32_t*)0xE000ED88 |= 0xFu << 20;
  __asm__ volatile("dsb\n isb");
  _start();
}
