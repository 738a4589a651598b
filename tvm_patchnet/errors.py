"""One exception family for user errors; ``patchnet`` turns it into one line and exit code 2."""


class PatchnetError(Exception):
    """A user-facing error: bad input, unsupported model, a limit that cannot be met."""


class StageError(PatchnetError):
    """Blocks ``0..n-1`` cannot form a patch stage whatever the patch count (an op that needs
    the whole map, a second input, ...): a larger split contains the same obstacle."""


class UnsupportedOpsError(PatchnetError):
    """A model uses ops tvm-patchnet cannot convert; ``ops`` lists (index, type) pairs."""

    def __init__(self, source: str, ops: list[tuple[int, str]]):
        self.ops = ops
        listed = ", ".join(f"op {i} {t}" for i, t in ops)
        super().__init__(f"{source}: {len(ops)} unsupported op(s): {listed}")
