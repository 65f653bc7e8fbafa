"""The ``aecore`` command group. Each verb lives in its own module and is registered below.

Errors the user can fix (``aecore.errors.AecoreError``) are printed as one line, without a
traceback, with the error's exit code; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import sys

import click

from aecore import __version__
from aecore.errors import AecoreError


class AecoreGroup(click.Group):
    """A click group that turns AecoreError into a clean one-line message and exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AecoreError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)


@click.group(cls=AecoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aecore")
def main():
    """aecore: train the 784 -> h -> 784 Fashion-MNIST autoencoder with fused kernels,
    on the CPU (@njit + BLAS) or a CUDA GPU (Numba CUDA).

    \b
    Quick start:
      aecore train --device cpu --hidden 256        one model
      aecore train --hidden 64,128,256,512          the paper's four sizes
      aecore study --device cuda                    the whole study + report
    """


# --- commands: one module per verb; add one import + add_command line per module ---------------
from .train import train  # noqa: E402

main.add_command(train)
from .use import encode, eval_, info, reconstruct  # noqa: E402

for _cmd in (eval_, reconstruct, encode, info):
    main.add_command(_cmd)
from .bench import bench  # noqa: E402

main.add_command(bench)
from .report import report  # noqa: E402

main.add_command(report)
from .study import study  # noqa: E402

main.add_command(study)
from .sweep import sweep  # noqa: E402

main.add_command(sweep)
