"""Settings for the whole test session."""

import os

import torch

if not torch.cuda.is_available():
    # Without a GPU the Triton tests run under Triton's CPU interpreter.  Triton builds its language helpers
    # (tl.zeros, ...) for the interpreter only if TRITON_INTERPRET=1 is set when triton is first imported, and
    # torch.compile's inductor imports triton too: so the flag is set here, before any test runs.
    os.environ.setdefault("TRITON_INTERPRET", "1")
