"""A stand-in for generated code (NOT a network): byte k of the outputs (all of them, one after the
other) = byte k % n of the inputs (likewise) + 1, in a static arena that holds the inputs and
outputs, with the same entry points and model.h defines as the real C code generator's output.
Several inputs or outputs sit apart in the arena (4 bytes between tensors), so the RPC's offsets,
which address them one after the other, are tested across gaps. Variants for the RPC tests: a run
that consumes its inputs in place (as a real model may: a second run on the same arena gives
input + 2), a slow run, and a run that faults on a chosen first input byte."""

from __future__ import annotations

import os

import numpy as np

MODEL_H = """/* Stand-in for generated code: not a network. */
#ifndef MODEL_H
#define MODEL_H
#include <stdint.h>
#define TVMGEN_NUM_INPUTS {n_in}
#define TVMGEN_NUM_OUTPUTS {n_out}
#define TVMGEN_INPUT_SIZES {{{in_sizes}}}
#define TVMGEN_OUTPUT_SIZES {{{out_sizes}}}
#define TVMGEN_INPUT_BYTES {inp}
#define TVMGEN_OUTPUT_BYTES {out}
#define TVMGEN_ARENA_BYTES {arena}
void *tvmgen_default_input(int i);
void *tvmgen_default_output(int i);
int tvmgen_default_run(const void *const *inputs, void *const *outputs);
#endif
"""

MODEL_C = """#include <string.h>
#include "model.h"

static int8_t arena[TVMGEN_ARENA_BYTES]; /* inputs, then outputs, then the rest */
static const uint32_t in_off[TVMGEN_NUM_INPUTS] = {{{in_offsets}}}, in_size[TVMGEN_NUM_INPUTS] = TVMGEN_INPUT_SIZES;
static const uint32_t out_off[TVMGEN_NUM_OUTPUTS] = {{{out_offsets}}}, out_size[TVMGEN_NUM_OUTPUTS] = TVMGEN_OUTPUT_SIZES;

void *tvmgen_default_input(int i) {{ return i >= 0 && i < TVMGEN_NUM_INPUTS ? arena + in_off[i] : 0; }}
void *tvmgen_default_output(int i) {{ return i >= 0 && i < TVMGEN_NUM_OUTPUTS ? arena + out_off[i] : 0; }}

/* byte k of the inputs (outputs) one after the other */
static int8_t *in_at(uint32_t k)
{{
    int i = 0;
    while (k >= in_size[i])
        k -= in_size[i++];
    return arena + in_off[i] + k;
}}

static int8_t *out_at(uint32_t k)
{{
    int i = 0;
    while (k >= out_size[i])
        k -= out_size[i++];
    return arena + out_off[i] + k;
}}

int tvmgen_default_run(const void *const *inputs, void *const *outputs)
{{
    volatile int8_t scratch[{stack}]; /* stack use on demand, to test the stack measurement */
    for (int i = 0; i < (int)sizeof scratch; i++)
        scratch[i] = (int8_t)i;{extra_before}
    for (int i = 0; inputs && i < TVMGEN_NUM_INPUTS; i++)
        if (inputs[i] && inputs[i] != tvmgen_default_input(i))
            memcpy(tvmgen_default_input(i), inputs[i], in_size[i]);
    for (uint32_t k = 0; k < TVMGEN_OUTPUT_BYTES; k++)
        *out_at(k) = (int8_t)(*in_at(k % TVMGEN_INPUT_BYTES) + 1 + scratch[0]);
    for (int i = 0; outputs && i < TVMGEN_NUM_OUTPUTS; i++)
        if (outputs[i] && outputs[i] != tvmgen_default_output(i))
            memcpy(outputs[i], tvmgen_default_output(i), out_size[i]);{extra_after}
    /* touch the whole arena so it is as real as a model's */
    for (int i = {free}; i < TVMGEN_ARENA_BYTES; i += 64)
        arena[i] = 0;
    return 0;
}}
"""


SPIN = """
    for (volatile uint32_t k = 0; k < {spin}u; k++) /* a slow run */
        ;"""
TRAP = """
    if (*in_at(0) == {trap_on}) /* a run that faults (UsageFault): the board reports it and resets */
        __builtin_trap();"""
CONSUME = """
    for (uint32_t k = 0; k < TVMGEN_INPUT_BYTES; k++) /* consume the inputs in place */
        *in_at(k) = (int8_t)(*in_at(k) + 1);"""
GAP = 4  #: bytes between two tensors in the stand-in's arena


def write_standin(folder: str, input_bytes: int | list[int] = 48, output_bytes: int | list[int] = 100,
                  arena_bytes: int = 256, stack_bytes: int = 1, consume: bool = False, spin: int = 0,
                  trap_on: int | None = None) -> str:
    """input_bytes / output_bytes: a list for several inputs / outputs (bytes of each); consume:
    the run adds 1 to its inputs in place after computing the outputs (a second run on the same
    arena then gives input + 2); spin: busy-loop iterations per run (about 10 ns each under
    QEMU); trap_on: the run faults when the first input byte equals this int8 value."""
    ins, outs = np.atleast_1d(input_bytes).tolist(), np.atleast_1d(output_bytes).tolist()
    offsets, top = [], 0
    for size in ins + outs:
        top += GAP if offsets else 0
        offsets.append(top)
        top += size
    before = (SPIN.format(spin=spin) if spin else "") + (TRAP.format(trap_on=trap_on) if trap_on is not None else "")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model.h"), "w") as f:
        f.write(MODEL_H.format(n_in=len(ins), n_out=len(outs), in_sizes=_list(ins), out_sizes=_list(outs),
                               inp=sum(ins), out=sum(outs), arena=max(arena_bytes, top)))
    with open(os.path.join(folder, "model.c"), "w") as f:
        f.write(MODEL_C.format(stack=max(stack_bytes, 1), extra_before=before, extra_after=CONSUME if consume else "",
                               in_offsets=_list(offsets[:len(ins)]), out_offsets=_list(offsets[len(ins):]), free=top))
    return folder


def _list(values) -> str:
    return ", ".join(str(v) for v in values)


def expected_output(x, output_bytes: int) -> np.ndarray:
    """The outputs (one after the other, ``output_bytes`` in all) for inputs ``x`` (an int8 array,
    or a list of them: the inputs in order)."""
    x = np.concatenate([np.asarray(a, dtype=np.int8).reshape(-1) for a in (x if isinstance(x, list) else [x])])
    idx = np.arange(output_bytes) % x.size
    return (x[idx].astype(np.int16) + 1).astype(np.int8)  # int8 wrap-around, as in C
