"""A stand-in for generated code (NOT a network): output[i] = input[i % n] + 1 in a static arena
that holds the input and output, with the same entry points and model.h defines as the real C
code generator's output. Variants for the RPC tests: a run that consumes its input in place (as a
real model may: a second run on the same arena gives input + 2), a slow run, and a run that
faults on a chosen first input byte."""

from __future__ import annotations

import os

import numpy as np

MODEL_H = """/* Stand-in for generated code: not a network. */
#ifndef MODEL_H
#define MODEL_H
#include <stdint.h>
#define TVMGEN_INPUT_BYTES {inp}
#define TVMGEN_OUTPUT_BYTES {out}
#define TVMGEN_ARENA_BYTES {arena}
int8_t *tvmgen_default_input(void);
int8_t *tvmgen_default_output(void);
int tvmgen_default_run(const int8_t *input, int8_t *output);
#endif
"""

MODEL_C = """#include "model.h"

static int8_t arena[TVMGEN_ARENA_BYTES]; /* input, then output, then the rest */

int8_t *tvmgen_default_input(void) {{ return arena; }}
int8_t *tvmgen_default_output(void) {{ return arena + TVMGEN_INPUT_BYTES; }}

int tvmgen_default_run(const int8_t *input, int8_t *output)
{{
    volatile int8_t scratch[{stack}]; /* stack use on demand, to test the stack measurement */
    int8_t *in = tvmgen_default_input(), *out = tvmgen_default_output();
    for (int i = 0; i < (int)sizeof scratch; i++)
        scratch[i] = (int8_t)i;{extra_before}
    for (int i = 0; input != in && i < TVMGEN_INPUT_BYTES; i++)
        in[i] = input[i];
    for (int i = 0; i < TVMGEN_OUTPUT_BYTES; i++)
        out[i] = (int8_t)(in[i % TVMGEN_INPUT_BYTES] + 1 + scratch[0]);
    for (int i = 0; output != out && i < TVMGEN_OUTPUT_BYTES; i++)
        output[i] = out[i];{extra_after}
    /* touch the whole arena so it is as real as a model's */
    for (int i = TVMGEN_INPUT_BYTES + TVMGEN_OUTPUT_BYTES; i < TVMGEN_ARENA_BYTES; i += 64)
        arena[i] = 0;
    return 0;
}}
"""


SPIN = """
    for (volatile uint32_t k = 0; k < {spin}u; k++) /* a slow run */
        ;"""
TRAP = """
    if (in[0] == {trap_on}) /* a run that faults (UsageFault): the board reports it and resets */
        __builtin_trap();"""
CONSUME = """
    for (int i = 0; i < TVMGEN_INPUT_BYTES; i++) /* consume the input in place */
        in[i] = (int8_t)(in[i] + 1);"""


def write_standin(folder: str, input_bytes: int = 48, output_bytes: int = 100, arena_bytes: int = 256,
                  stack_bytes: int = 1, consume: bool = False, spin: int = 0, trap_on: int | None = None) -> str:
    """consume: the run adds 1 to its input in place after computing the output (a second run
    on the same arena then gives input + 2); spin: busy-loop iterations per run (about 10 ns
    each under QEMU); trap_on: the run faults when input[0] equals this int8 value."""
    before = (SPIN.format(spin=spin) if spin else "") + (TRAP.format(trap_on=trap_on) if trap_on is not None else "")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model.h"), "w") as f:
        f.write(MODEL_H.format(inp=input_bytes, out=output_bytes, arena=max(arena_bytes, input_bytes + output_bytes)))
    with open(os.path.join(folder, "model.c"), "w") as f:
        f.write(MODEL_C.format(stack=max(stack_bytes, 1), extra_before=before, extra_after=CONSUME if consume else ""))
    return folder


def expected_output(x: np.ndarray, output_bytes: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.int8).reshape(-1)
    idx = np.arange(output_bytes) % x.size
    return (x[idx].astype(np.int16) + 1).astype(np.int8)  # int8 wrap-around, as in C
