"""Using a trained model: ``aecore eval``, ``reconstruct``, ``encode``; and ``aecore info``.

CKPT is a run directory (its model.safetensors, else checkpoint.safetensors) or a
.safetensors file with the four PyTorch-named tensors.
"""

from __future__ import annotations

import io
import os
import platform
from importlib import metadata
from pathlib import Path

import click
import numpy as np

from aecore import IMAGE_SIZE, __version__, atomic, blas_info, runs
from aecore.checkpoint import activation_of, load_weights, loss_of, slope_of
from aecore.config import TrainConfig, auto_gemm_summary
from aecore.devices import make_engine
from aecore.errors import CheckpointError, RunWriteError
from aecore.trainer import recon_images

from .options import data_dir_option, device_option, load_data, resolve_device

SPLITS = ("test", "val", "train")

ckpt_argument = click.argument("ckpt", metavar="CKPT", type=click.Path(path_type=Path))
split_option = click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True,
                            help="Which split of Fashion-MNIST to use.")


class _Model:
    """Weights + engine + the data split, as the commands need them."""

    def __init__(self, ckpt, device, data_dir, split):
        self.weights = load_weights(ckpt, IMAGE_SIZE)  # the commands' data: Fashion-MNIST
        self.path = self.weights.path
        _note_if_incomplete(self.path.parent)
        self.slope = slope_of(self.weights)
        self.hidden = self.weights.hidden
        self.device = resolve_device(device)
        self.val_size = _run_val_size(self.path.parent)
        self.data = load_data(data_dir, self.val_size)
        part = getattr(self.data, split)
        self.images, self.labels = part.images, part.labels
        self.activation, self.loss = activation_of(self.weights), loss_of(self.weights)
        self.engine = make_engine(self.device, self.weights.params, slope=self.slope,
                                  activation=self.activation, loss=self.loss)


def _note_if_incomplete(run_dir: Path) -> None:
    """Say so when the weights are those of a run that has not finished."""
    try:
        s = runs.RunDir(run_dir).summary()
        status, done, epochs = s["status"], s.get("epochs_done"), s.get("epochs")
    except (CheckpointError, KeyError, TypeError):  # no summary.json (None), or not aecore's
        return
    if status != "complete":
        click.echo(f"note: {run_dir} is an incomplete run ({status}, {done} of {epochs} epochs "
                   "done): these are its last saved weights", err=True)


def _check_out(out: Path, formats=None) -> None:
    """--out must go into an existing directory and (``formats``) have a known extension."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise click.BadParameter(f"{out}: the directory {parent} does not exist (create it "
                                 "first)", param_hint="'--out'")
    if formats is not None:
        ext = out.suffix.lstrip(".").lower() or "png"
        if ext not in formats:
            raise click.BadParameter(f"{out}: cannot write .{ext} images; use one of "
                                     + ", ".join(f".{f}" for f in sorted(formats)),
                                     param_hint="'--out'")


def image_formats() -> set:
    """The image file extensions matplotlib can write."""
    from matplotlib.backend_bases import FigureCanvasBase

    return set(FigureCanvasBase.get_supported_filetypes())


def _run_val_size(run_dir: Path) -> int:
    """The validation split size the run was trained with (so --split val/train match it)."""
    try:
        return int(runs.RunDir(run_dir).config().val_size)
    except (CheckpointError, TypeError, ValueError):
        return TrainConfig().val_size


@click.command("eval")
@ckpt_argument
@split_option
@device_option
@data_dir_option
def eval_(ckpt, split, device, data_dir):
    """Mean squared reconstruction error (per pixel, pixels in [0, 1]) of CKPT on a split."""
    m = _Model(ckpt, device, data_dir, split)
    mse = m.engine.evaluate(m.engine.put(m.images))
    click.echo(f"{split} MSE {mse:.6f}  ({len(m.images)} images, hidden {m.hidden}, {m.path}, "
               f"{m.device})")


@click.command()
@ckpt_argument
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("reconstructions.png"), show_default=True,
              help="Image file to write (PNG, PDF, SVG... by extension).")
@device_option
@data_dir_option
def reconstruct(ckpt, out, device, data_dir):
    """Grid of originals (top) and CKPT's reconstructions (bottom): the first test image of
    each class, labelled with the class names."""
    _check_out(out, image_formats())
    m = _Model(ckpt, device, data_dir, "test")
    idx, orig, labels = recon_images(m.images, m.labels)
    recon = m.engine.reconstruct(orig)
    names = getattr(m.data, "class_names", None) or [str(i) for i in range(10)]
    png = grid_image(orig, recon, [names[c] for c in labels], out.suffix.lstrip(".").lower() or "png",
                     title=f"hidden {m.hidden}: originals (top) vs reconstructions (bottom)")
    _write(out, png)
    click.echo(f"wrote {out} ({len(idx)} test images, hidden {m.hidden})")


def grid_image(orig, recon, titles, fmt="png", title=None) -> bytes:
    from aecore.figures import image_shape, pyplot

    plt = pyplot()

    n = len(orig)
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3.1), squeeze=False)
    for j in range(n):
        for i, img in enumerate((orig[j] / 255.0, recon[j])):
            ax = axes[i][j]
            img = np.asarray(img, np.float32).reshape(-1)
            ax.imshow(img.reshape(image_shape(img.size)), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][j].set_title(titles[j], fontsize=8)
    axes[0][0].set_ylabel("original", fontsize=8)
    axes[1][0].set_ylabel("reconstruction", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=120)
    plt.close(fig)
    return buf.getvalue()


def _write(out: Path, data: bytes):
    try:
        atomic.check_writable(out.parent if str(out.parent) else Path("."))
        atomic.atomic_write_bytes(out, data)
    except (OSError, CheckpointError, RunWriteError) as e:
        raise click.BadParameter(f"cannot write {out}: {e}", param_hint="'--out'") from None


@click.command()
@ckpt_argument
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("latents.npz"), show_default=True, help="Output .npz or .npy file.")
@split_option
@device_option
@data_dir_option
def encode(ckpt, out, split, device, data_dir):
    """Latent vectors (the LeakyReLU hidden activations) of every image of a split.

    \b
    OUT.npz: latents float32 (n, h), labels uint8 (n,), indices int64 (n,) (positions in
             the split), class_names (10,) str.
    OUT.npy: one structured array of n records, dtype [('label', u1), ('latent', f4, (h,))];
             read with a = np.load(OUT); a['latent'], a['label'].
    """
    if out.suffix not in (".npz", ".npy"):
        raise click.BadParameter(f"{out}: use a .npz or .npy file name", param_hint="'--out'")
    _check_out(out)
    m = _Model(ckpt, device, data_dir, split)
    z = np.asarray(m.engine.encode(m.images), np.float32)
    labels = np.asarray(m.labels, np.uint8)
    buf = io.BytesIO()
    if out.suffix == ".npz":
        names = np.array(getattr(m.data, "class_names", [str(i) for i in range(10)]))
        np.savez(buf, latents=z, labels=labels, indices=np.arange(len(z), dtype=np.int64),
                 class_names=names)
    else:
        rec = np.empty(len(z), dtype=[("label", "u1"), ("latent", "<f4", (m.hidden,))])
        rec["label"], rec["latent"] = labels, z
        np.save(buf, rec)
    _write(out, buf.getvalue())
    click.echo(f"wrote {out}: {z.shape[0]} x {z.shape[1]} latents of the {split} split")


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@click.command()
@device_option
@data_dir_option
def info(device, data_dir):
    """Versions, BLAS, CPU, CUDA devices (or why none), and where the data is."""
    import numba

    from aecore import devices

    rows = [("aecore", __version__), ("python", platform.python_version()),
            ("numpy", np.__version__), ("numba", numba.__version__),
            ("numba-cuda", _version("numba-cuda")), ("torch", _version("torch")),
            *blas_info.summary_rows(),
            ("CPU", f"{_cpu_name()}, {os.cpu_count()} logical cores, "
                    f"numba threads {numba.config.NUMBA_NUM_THREADS}"),
            ("CPU GEMM (auto)", auto_gemm_summary())]
    ok, reason = devices.cuda_usable()
    rows.append(("GPU (driver)", "a CUDA GPU is present" if devices.real_gpu_present()
                 else "no CUDA GPU reported by the NVIDIA driver"))
    rows.append(("CUDA engine", ("usable: " if ok else "not usable: ") + reason))
    rows.append(("--device " + device, resolve_device(device, quiet=True)))
    try:
        from aecore.data import default_cache_dir, find_data

        found = find_data(data_dir)
        rows.append(("data", str(found) if found else
                     f"not found; `aecore train` would download it to {default_cache_dir()}"))
    except Exception as e:  # a bad --data-dir / $AECORE_DATA: say so, keep going
        rows.append(("data", f"problem: {str(e).splitlines()[0]}"))
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k.ljust(w)}  {v}")


__all__ = ["eval_", "reconstruct", "encode", "info", "grid_image"]
