"""Checkpoints: a model and its training state in ONE ``.npz`` file, saved atomically and read
defensively.

Format. An ``.npz`` is a zip archive of ``.npy`` arrays. ``model/<key>`` holds each entry of
the model's state dict; ``train/<n>`` each array of the training state (optimiser moments,
...); ``meta.json`` (stored as bytes) is a JSON document with the format name and version, the
model's registry name and config, and the training state, in which every array is replaced by
a reference ``{"__array__": "train/<n>"}``. JSON has no tuples, no arrays and only string keys,
so those are tagged (``__tuple__``, ``__dict__``) and restored exactly. No pickle anywhere.

Saving is atomic: the file is written under a temporary name next to its destination and moved
over it with ``os.replace``, so a reader sees the old checkpoint or the new one, never a torn
file. A save killed half-way (power cut, ``kill -9``) leaves its temporary file behind; the next
save in that folder removes such leftovers of processes that no longer run.

Reading is defensive, because a checkpoint may come from anywhere: everything is checked
BEFORE the model is built or any array is decompressed. The zip directory and ``meta.json`` are
read first; the document's structure is checked (model name and config, nesting depth, every
array reference pointing to a member, no member that nothing refers to); each member's ``.npy``
header gives its shape and dtype without reading its data, and a member must not inflate more
than :data:`MAX_COMPRESSION_RATIO` times (``np.savez`` does not compress at all). The model is
then built under a parameter budget: its config may ask for no more parameter values than the
file holds (a crafted 100 KB file cannot make the loader allocate gigabytes), and its state
dict's shapes are compared with the headers. Only then are the arrays read. Every failure is a
:class:`CheckpointError` that names the file and what is wrong.

Pretrained backbones (:mod:`edu_seg.pretrain`) are stored in the same layout under their own
format tag, ``edu_seg-backbone``: ``model/<key>`` is then the backbone's state dict, and the
same writer and checked reader serve both, each refusing the other's files by their tag.
"""
import dataclasses
import json
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from . import models as _models
from .backend import is_array, to_host
from .autograd import Tensor
from .nn.module import ParameterBudgetError, parameter_budget

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointError", "Checkpoint",
           "save_checkpoint", "load_checkpoint", "write_atomically", "write_state_file",
           "CheckedArchive"]

CHECKPOINT_FORMAT = "edu_seg-checkpoint"
CHECKPOINT_VERSION = 1
#: The largest ``meta.json`` accepted (a real one: the history of a run, a few hundred KB).
MAX_META_BYTES = 64 << 20
#: The deepest nesting accepted in the training state (a real one: under 10 levels).
MAX_NESTING = 64
#: The most a member may inflate: ``np.savez`` stores arrays uncompressed (ratio 1), and even
#: ``zip -9`` gains little on float weights; a "zip bomb" member inflates a thousandfold.
MAX_COMPRESSION_RATIO = 100
#: The tags of :func:`_split_arrays`: a dict holding exactly one of them is a tagged value.
_TAGS = ("__array__", "__tuple__", "__dict__")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, or does not fit the model it is loaded into."""


@dataclasses.dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    Attributes
    ----------
    model : SegmentationModel
        With the saved weights loaded.
    model_name : str
    model_config : dict
    train_state : dict or None
        The saved training state (epoch, history, optimiser, ...), with its arrays restored.
    """

    model: object
    model_name: str
    model_config: dict
    train_state: dict


# ----------------------------------------------------------------------------------- saving
def _split_arrays(tree, arrays):
    """Replace every ndarray in a nested dict/list/tuple by a reference; collect the arrays.

    Arrays are named ``train/0``, ``train/1``, ... in the order met: names never collide,
    whatever the keys of the state (a key may contain ``/``). A dict whose keys are not all
    strings, or that looks like a tag (one key among ``__array__``, ``__tuple__``,
    ``__dict__``), is stored as a ``__dict__`` list of pairs, so loading cannot mistake it.
    """
    if isinstance(tree, Tensor):
        tree = tree.data
    if is_array(tree):
        name = f"train/{len(arrays)}"
        arrays[name] = to_host(tree)                     # a GPU array is saved from the host
        return {"__array__": name}
    if isinstance(tree, np.generic):
        return tree.item()
    if isinstance(tree, dict):
        plain = all(isinstance(k, str) for k in tree) and not (len(tree) == 1
                                                                and next(iter(tree)) in _TAGS)
        if plain:
            return {k: _split_arrays(v, arrays) for k, v in tree.items()}
        return {"__dict__": [[_split_arrays(k, arrays), _split_arrays(v, arrays)]
                             for k, v in tree.items()]}
    if isinstance(tree, tuple):
        return {"__tuple__": [_split_arrays(v, arrays) for v in tree]}
    if isinstance(tree, list):
        return [_split_arrays(v, arrays) for v in tree]
    return tree


def _remove_stale_temporaries(path):
    """Delete ``.NAME.PID.tmp`` files next to ``path`` left by saves whose process is gone."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.tmp$")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return                                    # an unreadable folder: the save will say so
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)       # signal 0: "does this process exist?"
        except ProcessLookupError:
            entry.unlink(missing_ok=True)          # its writer is dead: a leftover
        except (PermissionError, OverflowError):
            pass                                   # alive under another user (or no pid)


def write_atomically(path, write):
    """Call ``write(file)`` on a temporary file next to ``path``, then move it over ``path``.

    ``write`` gets a binary file object. On any exception (Ctrl-C included) the temporary file
    is removed and ``path`` is untouched; leftovers of killed processes are removed first.
    """
    path = Path(path)
    _remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path, model, train_state=None):
    """Save ``model`` (and optionally the training state) to one ``.npz`` file, atomically.

    Parameters
    ----------
    path : str or Path
        Usually ``something.npz``.
    model : SegmentationModel
        Its ``name`` and ``config`` are saved so :func:`load_checkpoint` can rebuild it.
    train_state : dict, optional
        Anything JSON-able plus NumPy arrays (see :meth:`edu_seg.train.Trainer.state`).
    """
    write_state_file(path, model, train_state, CHECKPOINT_FORMAT, CHECKPOINT_VERSION)


def write_state_file(path, model, train_state, format, version, **extra):
    """Write ``model``'s state dict and ``train_state`` in the checkpoint layout, atomically.

    ``format`` and ``version`` tag the file; ``extra`` adds JSON-able entries to
    ``meta.json``. :func:`save_checkpoint` writes segmentation models with it, and
    :func:`edu_seg.pretrain.save_backbone` pretrained backbones (a backbone has a ``name``, a
    ``config`` and a state dict too), so both are read by the same checked reader.
    """
    arrays = {f"model/{k}": to_host(v.data if isinstance(v, Tensor) else v)   # host copies
              for k, v in model.state_dict().items()}
    train = {}
    meta = {
        "format": format,
        "version": version,
        "model": {"name": model.name, "config": dataclasses.asdict(model.config)},
        "train": _split_arrays(train_state, train),
        **extra,
    }
    arrays.update(train)
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    write_atomically(path, lambda f: np.savez(f, **arrays))


# ---------------------------------------------------------------------------------- reading
def _walk(tree, path, depth=0):
    """Check the nesting depth and the tags of the training state; returns its references."""
    if depth > MAX_NESTING:
        raise CheckpointError(f"checkpoint {path}: the training state nests deeper than "
                              f"{MAX_NESTING} levels: damaged or not written by edu_seg")
    refs = []
    if isinstance(tree, dict):
        if len(tree) == 1 and next(iter(tree)) in _TAGS:
            tag, value = next(iter(tree.items()))
            if tag == "__array__":
                if not isinstance(value, str):
                    raise CheckpointError(f"checkpoint {path}: an array reference must be a "
                                          f"member name, got {value!r}")
                return [value]
            pairs_ok = isinstance(value, list) and (
                tag == "__tuple__"
                or all(isinstance(p, list) and len(p) == 2 for p in value))
            if not pairs_ok:
                raise CheckpointError(f"checkpoint {path}: a {tag} entry is malformed")
            items = [x for p in value for x in p] if tag == "__dict__" else value
        else:
            items = list(tree.values())
    elif isinstance(tree, list):
        items = tree
    else:
        return refs
    for item in items:
        refs += _walk(item, path, depth + 1)
    return refs


def _join_arrays(tree, arrays):
    """The inverse of :func:`_split_arrays` (on a tree :func:`_walk` has checked)."""
    if isinstance(tree, dict):
        if len(tree) == 1 and next(iter(tree)) in _TAGS:
            tag, value = next(iter(tree.items()))
            if tag == "__array__":
                return arrays[value]
            if tag == "__tuple__":
                return tuple(_join_arrays(v, arrays) for v in value)
            try:
                return {_join_arrays(k, arrays): _join_arrays(v, arrays) for k, v in value}
            except TypeError:                      # a list or dict as a key: unhashable
                raise CheckpointError("a __dict__ entry has an unhashable key") from None
        return {k: _join_arrays(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join_arrays(v, arrays) for v in tree]
    return tree


def _npy_header(archive, info, path):
    """``(shape, dtype)`` of one ``.npy`` member from its header alone (its data is not read)."""
    if info.compress_size and info.file_size > MAX_COMPRESSION_RATIO * info.compress_size \
            + (1 << 16):
        raise CheckpointError(f"checkpoint {path}: member {info.filename} inflates "
                              f"{info.file_size / info.compress_size:.0f}-fold "
                              f"({info.file_size:,} bytes): refused as a zip bomb")
    try:
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f"unknown .npy version {version}")
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"checkpoint {path}: member {info.filename} is not a readable "
                              f".npy array ({exc})") from None
    if dtype.hasobject:
        raise CheckpointError(f"checkpoint {path}: member {info.filename} holds Python "
                              f"objects ({dtype}); checkpoints hold numbers only")
    if offset + math.prod(shape) * dtype.itemsize != info.file_size:
        raise CheckpointError(f"checkpoint {path}: member {info.filename} declares shape "
                              f"{shape} of {dtype} but holds {info.file_size:,} bytes")
    return shape, dtype


class CheckedArchive:
    """A checkpoint whose directory, ``meta.json`` and array headers have been checked.

    ``format`` and ``version`` are what ``meta.json`` must declare, and ``what`` names that
    kind of file in the error for another one (``"an edu_seg checkpoint"``).
    """

    def __init__(self, path, format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION,
                 what="an edu_seg checkpoint"):
        self.path = path
        self.format, self.version, self.what = format, version, what
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        if not zipfile.is_zipfile(path):      # an .npz is a zip archive; a truncated one is not
            raise CheckpointError(f"checkpoint {path} is corrupted or not an .npz file (no zip "
                                  f"archive found: truncated or overwritten?)")
        try:
            self.zip = zipfile.ZipFile(path)
            members = {info.filename: info for info in self.zip.infolist()}
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} is corrupted or not an .npz file "
                                  f"({type(exc).__name__}: {exc})") from None
        self.meta = self._read_meta(members.pop("meta.json.npy", None))
        self.headers = {}
        model_keys = [n for n in members if n.startswith("model/") and n.endswith(".npy")]
        refs = _walk(self.meta["train"], path)
        wanted = set(model_keys) | {f"{r}.npy" for r in refs}
        dangling = sorted(r for r in refs if f"{r}.npy" not in members)
        if dangling:
            raise CheckpointError(f"checkpoint {path}: the training state refers to arrays "
                                  f"that are not in the file: {', '.join(dangling[:5])}")
        extra = sorted(set(members) - wanted)
        if extra:
            raise CheckpointError(f"checkpoint {path} holds members that nothing refers to "
                                  f"({', '.join(extra[:5])}): not written by edu_seg, or "
                                  f"tampered with")
        for name in sorted(wanted):
            self.headers[name[:-len(".npy")]] = _npy_header(self.zip, members[name], path)

    def _read_meta(self, info):
        path = self.path
        if info is None:
            raise CheckpointError(f"checkpoint {path} has no meta.json entry: not an edu_seg "
                                  f"checkpoint")
        if info.file_size > MAX_META_BYTES:
            raise CheckpointError(f"checkpoint {path}: meta.json is {info.file_size:,} bytes, "
                                  f"more than the {MAX_META_BYTES:,} a checkpoint may hold")
        shape, dtype = _npy_header(self.zip, info, path)
        try:
            with self.zip.open(info) as f:
                raw = np.lib.format.read_array(f, allow_pickle=False)
            meta = json.loads(raw.tobytes().decode())
        except (UnicodeDecodeError, ValueError, RecursionError, OSError,
                zipfile.BadZipFile) as exc:
            raise CheckpointError(f"checkpoint {path}: meta.json is corrupted "
                                  f"({type(exc).__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != self.format:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise CheckpointError(f"checkpoint {path} is not {self.what} (format "
                                  f"{found!r})")
        if meta.get("version") != self.version:
            raise CheckpointError(f"checkpoint {path} has format version "
                                  f"{meta.get('version')!r}; this edu_seg reads version "
                                  f"{self.version}")
        model = meta.get("model")
        if not (isinstance(model, dict) and isinstance(model.get("name"), str)
                and isinstance(model.get("config"), dict)) or "train" not in meta:
            raise CheckpointError(f"checkpoint {path}: meta.json lacks the model's name and "
                                  f"config or the training state: damaged or not written by "
                                  f"edu_seg")
        return meta

    def misfit(self, model):
        """What keeps the stored ``model/`` arrays from loading into ``model``, from their
        headers alone: missing, unexpected and mis-shaped keys (at most 5 named); ``""`` when
        they fit."""
        stored = {k[len("model/"):]: shape for k, (shape, _) in self.headers.items()
                  if k.startswith("model/")}
        expected = model.state_dict()
        missing = sorted(set(expected) - set(stored))
        unexpected = sorted(set(stored) - set(expected))
        wrong = [f"{k}: {tuple(stored[k])} in the checkpoint, {tuple(np.shape(expected[k]))} "
                 f"in the model" for k in expected
                 if k in stored and tuple(stored[k]) != tuple(np.shape(expected[k]))]
        problems = ([f"missing {', '.join(missing)}"] if missing else []) \
            + ([f"unexpected {', '.join(unexpected)}"] if unexpected else []) + wrong
        return "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                          if len(problems) > 5 else "")

    def load_into(self, model):
        """Read the ``model/`` arrays into ``model`` (call after :meth:`misfit` found none)."""
        model.load_state_dict({k[len("model/"):]: self.read(k) for k in self.headers
                               if k.startswith("model/")})

    def train_state(self):
        """The saved training state, its arrays read and restored in place."""
        arrays = {k: self.read(k) for k in self.headers if not k.startswith("model/")}
        try:
            return _join_arrays(self.meta["train"], arrays)
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {self.path}: {exc}") from None

    def read(self, name):
        """The array of member ``name`` (its CRC is checked as it is read)."""
        try:
            with self.zip.open(f"{name}.npy") as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"checkpoint {self.path} is corrupted: member {name} "
                                  f"({type(exc).__name__}: {exc})") from None

    def close(self):
        self.zip.close()


def _build(archive, name, config):
    """The model of the checkpoint, built with no more parameter values than the file holds."""
    path = archive.path
    if name not in _models.available():
        raise CheckpointError(f"checkpoint {path} holds a {name!r} model, which this edu_seg "
                              f"does not register; registered: {', '.join(_models.available())}")
    stored = sum(math.prod(shape) for key, (shape, _) in archive.headers.items()
                 if key.startswith("model/"))
    try:
        with parameter_budget(stored):
            return _models.create(name, **config)
    except ParameterBudgetError:
        raise CheckpointError(f"checkpoint {path}: its config {config} builds a {name} with "
                              f"more parameters than the {stored:,} values the file holds: "
                              f"damaged or crafted; refused before allocating it") from None
    except (TypeError, ValueError, MemoryError) as exc:
        raise CheckpointError(f"checkpoint {path}: cannot build its {name!r} model from config "
                              f"{config} ({type(exc).__name__}: {exc})") from None


def load_checkpoint(path, model=None):
    """Read a checkpoint written by :func:`save_checkpoint` and load its weights.

    Parameters
    ----------
    path : str or Path
    model : SegmentationModel, optional
        Load into this model (it must have the saved name and parameter shapes). Without it
        the model is rebuilt from the saved name and config through the registry.

    Returns
    -------
    Checkpoint

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError
        (a ``ValueError``) The file is truncated, corrupted or crafted, is not an edu_seg
        checkpoint, or holds a different model (name, or any parameter's shape; the message
        names it). Nothing large is allocated before the file has been checked.
    """
    path = Path(path)
    archive = CheckedArchive(path)
    try:
        name, config = archive.meta["model"]["name"], archive.meta["model"]["config"]
        if model is None:
            model = _build(archive, name, config)
        elif model.name != name:
            raise CheckpointError(f"checkpoint {path} holds a {name!r} model, but the model to "
                                  f"load it into is a {model.name!r}")
        misfit = archive.misfit(model)
        if misfit:
            raise CheckpointError(
                f"checkpoint {path} does not fit this {model.name} (checkpoint config {config}, "
                f"model config {dataclasses.asdict(model.config)}): {misfit}")
        archive.load_into(model)
        train = archive.train_state()
    finally:
        archive.close()
    return Checkpoint(model=model, model_name=name, model_config=config, train_state=train)
