"""A stand-in for generated code (NOT a network): output[i] = input[i % n] + 1 in a static arena
that holds the input and output, with the same entry points and model.h defines as the real C
code generator's output."""

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
        scratch[i] = (int8_t)i;
    for (int i = 0; input != in && i < TVMGEN_INPUT_BYTES; i++)
        in[i] = input[i];
    for (int i = 0; i < TVMGEN_OUTPUT_BYTES; i++)
        out[i] = (int8_t)(in[i % TVMGEN_INPUT_BYTES] + 1 + scratch[0]);
    for (int i = 0; output != out && i < TVMGEN_OUTPUT_BYTES; i++)
        output[i] = out[i];
    /* touch the whole arena so it is as real as a model's */
    for (int i = TVMGEN_INPUT_BYTES + TVMGEN_OUTPUT_BYTES; i < TVMGEN_ARENA_BYTES; i += 64)
        arena[i] = 0;
    return 0;
}}
"""


def write_standin(folder: str, input_bytes: int = 48, output_bytes: int = 100, arena_bytes: int = 256,
                  stack_bytes: int = 1) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model.h"), "w") as f:
        f.write(MODEL_H.format(inp=input_bytes, out=output_bytes, arena=max(arena_bytes, input_bytes + output_bytes)))
    with open(os.path.join(folder, "model.c"), "w") as f:
        f.write(MODEL_C.format(stack=max(stack_bytes, 1)))
    return folder


def expected_output(x: np.ndarray, output_bytes: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.int8).reshape(-1)
    idx = np.arange(output_bytes) % x.size
    return (x[idx].astype(np.int16) + 1).astype(np.int8)  # int8 wrap-around, as in C
