"""Checkpoints read defensively: crafted configs, zip bombs, extra and dangling members,
malformed or deeply nested metadata, awkward state keys, leftovers of killed saves."""
import io
import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

from edu_seg import models
from edu_seg.checkpoint import (MAX_NESTING, CheckpointError, load_checkpoint,
                                save_checkpoint)
from edu_seg.data import Shapes
from edu_seg.train import TrainConfig, Trainer


def tiny():
    return models.create("unet", num_classes=4, depth=1, base_width=4)


def members(path):
    """{member name: bytes} of an .npz."""
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def write_zip(path, entries, deflate=()):
    """An .npz from {name: bytes}; the members named in ``deflate`` are compressed."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data, zipfile.ZIP_DEFLATED if name in deflate
                       else zipfile.ZIP_STORED)


def npy(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def meta_of(entries):
    return json.loads(np.lib.format.read_array(io.BytesIO(entries["meta.json.npy"])).tobytes())


def with_meta(entries, meta):
    raw = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return {**entries, "meta.json.npy": npy(raw)}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, tiny(), {"epoch": 1, "moments": np.ones(5, np.float32)})
    return path, members(path)


def test_a_config_larger_than_the_weights_is_refused_before_it_is_built(saved, tmp_path):
    _, entries = saved
    meta = meta_of(entries)
    meta["model"]["config"].update(depth=5, base_width=512)    # about 500 M parameters
    write_zip(tmp_path / "big.npz", with_meta(entries, meta))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="more parameters than the .* values the "
                                                  "file holds"):
            load_checkpoint(tmp_path / "big.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB traced while refusing"


def test_a_config_the_model_refuses_is_a_checkpoint_error(saved, tmp_path):
    _, entries = saved
    meta = meta_of(entries)
    meta["model"]["config"]["depth"] = "deep"
    write_zip(tmp_path / "bad.npz", with_meta(entries, meta))
    with pytest.raises(CheckpointError, match="cannot build its 'unet' model"):
        load_checkpoint(tmp_path / "bad.npz")
    meta["model"]["name"] = "nosuchnet"
    write_zip(tmp_path / "bad.npz", with_meta(entries, meta))
    with pytest.raises(CheckpointError, match="'nosuchnet' model, which this edu_seg does not"):
        load_checkpoint(tmp_path / "bad.npz")


def test_members_nothing_refers_to_are_refused_unread(saved, tmp_path):
    _, entries = saved
    bomb = npy(np.zeros(16 << 20, np.uint8))                   # 16 MB of zeros, ~16 KB zipped
    write_zip(tmp_path / "extra.npz", {**entries, "junk.npy": bomb}, deflate={"junk.npy"})
    with pytest.raises(CheckpointError, match="members that nothing refers to .junk.npy"):
        load_checkpoint(tmp_path / "extra.npz")


def test_a_referenced_member_that_inflates_a_thousandfold_is_refused(saved, tmp_path):
    _, entries = saved
    name = next(n for n in entries if n.startswith("train/"))
    meta = meta_of(entries)
    bomb = {**entries, name: npy(np.zeros(4 << 20, np.float32))}
    write_zip(tmp_path / "bomb.npz", with_meta(bomb, meta), deflate={name})
    with pytest.raises(CheckpointError, match=r"inflates \d+-fold .*zip bomb"):
        load_checkpoint(tmp_path / "bomb.npz")


def test_headers_that_lie_about_their_size_are_refused(saved, tmp_path):
    _, entries = saved
    name = next(n for n in entries if n.startswith("model/"))
    header = npy(np.zeros((1000, 1000), np.float32))[:128]      # the header of a 4 MB array
    write_zip(tmp_path / "lie.npz", {**entries, name: header})
    with pytest.raises(CheckpointError, match=r"declares shape \(1000, 1000\)"):
        load_checkpoint(tmp_path / "lie.npz")


@pytest.mark.parametrize("change, match", [
    (lambda m: m.pop("model"), "lacks the model's name and config"),
    (lambda m: m["model"].update(config=[1, 2]), "lacks the model's name and config"),
    (lambda m: m.pop("train"), "lacks the model's name and config"),
    (lambda m: m.update(version="1"), "format version '1'"),
    (lambda m: m["train"].update(extra={"__array__": "train/99"}),
     "refers to arrays that are not in the file: train/99"),
    (lambda m: m["train"].update(extra={"__array__": 3}), "an array reference must be"),
    (lambda m: m["train"].update(extra={"__dict__": [[1]]}), "__dict__ entry is malformed"),
    (lambda m: m["train"].update(extra={"__dict__": [[[1], 2]]}), "unhashable key"),
])
def test_malformed_metadata_is_a_checkpoint_error(saved, tmp_path, change, match):
    _, entries = saved
    meta = meta_of(entries)
    change(meta)
    write_zip(tmp_path / "meta.npz", with_meta(entries, meta))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "meta.npz")


@pytest.mark.parametrize("depth, match", [(MAX_NESTING + 5, "nests deeper than"),
                                          (100_000, "meta.json is corrupted")])
def test_deep_nesting_is_refused(saved, tmp_path, depth, match):
    _, entries = saved
    text = json.dumps(meta_of(entries))
    nested = "[" * depth + "]" * depth
    text = text.replace('"epoch": 1', f'"epoch": 1, "deep": {nested}')
    raw = np.frombuffer(text.encode(), dtype=np.uint8)
    write_zip(tmp_path / "deep.npz", {**entries, "meta.json.npy": npy(raw)})
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "deep.npz")


def test_object_arrays_are_refused(saved, tmp_path):
    _, entries = saved
    name = next(n for n in entries if n.startswith("train/"))
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([None, 1], dtype=object), allow_pickle=True)
    write_zip(tmp_path / "obj.npz", {**entries, name: buf.getvalue()})
    with pytest.raises(CheckpointError, match="holds Python objects"):
        load_checkpoint(tmp_path / "obj.npz")


def test_awkward_state_keys_round_trip(tmp_path):
    state = {"a/b": np.arange(3), "a": {"b": np.arange(4)},            # would collide by path
             "__array__": "not a reference", "t": {"__tuple__": [1]},  # look like tags
             "nested": ({"x": np.zeros(2)}, [np.ones(1)]), 5: "int key"}
    save_checkpoint(tmp_path / "k.npz", tiny(), state)
    loaded = load_checkpoint(tmp_path / "k.npz").train_state
    assert set(loaded) == set(state)
    np.testing.assert_array_equal(loaded["a/b"], np.arange(3))
    np.testing.assert_array_equal(loaded["a"]["b"], np.arange(4))
    assert loaded["__array__"] == "not a reference" and loaded["t"] == {"__tuple__": [1]}
    assert isinstance(loaded["nested"], tuple) and loaded[5] == "int key"
    np.testing.assert_array_equal(loaded["nested"][0]["x"], np.zeros(2))


def _dead_pid():
    pid = 2 ** 22 - 1                              # above the default pid_max: never running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def test_a_save_removes_leftovers_of_killed_saves_only(tmp_path):
    dead = tmp_path / f".m.npz.{_dead_pid()}.tmp"
    alive = tmp_path / f".m.npz.{os.getppid()}.tmp"      # a running process's save in progress
    other = tmp_path / f".other.npz.{_dead_pid()}.tmp"   # another file's: not ours to judge
    for p in (dead, alive, other):
        p.write_bytes(b"x" * 1000)
    save_checkpoint(tmp_path / "m.npz", tiny())
    assert not dead.exists() and alive.exists() and other.exists()
    load_checkpoint(tmp_path / "m.npz")


def test_resume_refuses_a_damaged_training_state(tmp_path):
    data = Shapes(8, size=16, seed=0)
    config = TrainConfig(epochs=1, batch_size=4, progress=False, verbose=False)
    trainer = Trainer(tiny(), data, None, config)
    trainer.fit()
    trainer.save(tmp_path / "last.npz")
    entries = members(tmp_path / "last.npz")
    meta = meta_of(entries)
    meta["train"]["epoch"] = "one"
    write_zip(tmp_path / "bad.npz", with_meta(entries, meta))
    with pytest.raises(CheckpointError, match="lacks or mistypes epoch"):
        Trainer(tiny(), data, None, config).resume(tmp_path / "bad.npz")
    meta["train"]["epoch"] = 1
    meta["train"]["optimizer"]["param_groups"] = "all of them"
    write_zip(tmp_path / "bad.npz", with_meta(entries, meta))
    with pytest.raises(CheckpointError, match="optimiser, scheduler or generator state is "
                                              "damaged"):
        Trainer(tiny(), data, None, config).resume(tmp_path / "bad.npz")
