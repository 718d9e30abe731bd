"""Checkpoints that survive damage: checksums verified on restore, fallback, safe pruning.

Each damage is one a disk or a user can do to the newest checkpoint: garbage metadata, an
array file zeroed in the middle, truncated or deleted. A restore must pass over it to the
previous checkpoint, say why, and never delete anything.
"""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from relujax import data as rdata
from relujax._src.training import checkpoint as ck
from relujax.training import Checkpointer, CheckpointError, TrainConfig, train

# A restore that fails leaves orbax's pending read coroutines to be collected unawaited.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _tree(i):
    # Random values do not compress: the array file is large and its middle is data.
    w = jax.random.normal(jax.random.key(i), (16384,), jnp.float32)
    return {"w": w, "b": jnp.full((3,), float(i)), "key": jax.random.key(i)}


def _largest_array_file(step_dir):
    # The largest of orbax's data files (OCDBT `d/` folders). Not the largest file of any kind:
    # a small model's values can be spread over data files smaller than the `_sharding` JSON,
    # which a restore does not need (damaging it damages nothing).
    files = [p for p in (step_dir / "arrays").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _zero_middle(path, n=32):
    b = bytearray(path.read_bytes())
    m = len(b) // 2
    b[m : m + n] = bytes(n)
    path.write_bytes(bytes(b))


DAMAGE = {
    "metadata garbage": lambda d: (d / "meta" / "metadata").write_text("}{ not json"),
    "array zeroed": lambda d: _zero_middle(_largest_array_file(d)),
    "array truncated": lambda d: _largest_array_file(d).write_bytes(
        _largest_array_file(d).read_bytes()[:100]
    ),
    "array deleted": lambda d: _largest_array_file(d).unlink(),
}


@pytest.fixture
def two(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=3)
    ckpt.save(1, _tree(1), {"epoch": 1})
    ckpt.save(2, _tree(2), {"epoch": 2})
    return tmp_path


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_restore_passes_over_a_damaged_newest_checkpoint(two, damage):
    DAMAGE[damage](two / "2")
    ckpt = Checkpointer(two, keep=3)
    assert ckpt.verify(2) is not None and ckpt.verify(1) is None
    tree, meta = ckpt.restore(_tree(0))
    assert meta["epoch"] == 1
    np.testing.assert_array_equal(tree["w"], _tree(1)["w"])
    assert (
        jax.random.key_data(tree["key"]).tolist() == jax.random.key_data(_tree(1)["key"]).tolist()
    )
    assert [s for s, _ in ckpt.skipped] == [2]
    assert ckpt.steps() == [1, 2]  # nothing deleted


def test_arrays_that_read_but_differ_are_caught_by_the_checksum(two):
    """The silent case: valid array files, other numbers (here: checkpoint 1's files)."""
    shutil.rmtree(two / "2" / "arrays")
    shutil.copytree(two / "1" / "arrays", two / "2" / "arrays")
    assert Checkpointer(two).verify(2) == "array ['b'] does not match its checksum"


def test_edited_metadata_is_caught_by_its_checksum(two):
    path = two / "2" / "meta" / "metadata"
    meta = json.loads(path.read_text())
    meta["epoch"] = 7  # valid JSON, wrong content
    path.write_text(json.dumps(meta))
    assert Checkpointer(two).verify(2) == "its metadata does not match its checksum"
    with pytest.raises(CheckpointError, match="checkpoint 2 is damaged"):
        Checkpointer(two).read_meta(2)


def test_no_checkpoint_verifies_raises_and_deletes_nothing(two):
    DAMAGE["metadata garbage"](two / "2")
    DAMAGE["array deleted"](two / "1")
    before = sorted(str(p) for p in two.rglob("*"))
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* verifies \(step 2: .*step 1: "):
        Checkpointer(two).restore(_tree(0))
    assert sorted(str(p) for p in two.rglob("*")) == before


def test_pruning_waits_for_the_new_checkpoint_to_verify(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path, keep=2)
    for s in (1, 2, 3):
        ckpt.save(s, _tree(s), {"epoch": s})
    assert ckpt.steps() == [2, 3]

    def unreadable(self, step, **kw):
        raise ck._Damaged("simulated read-back failure")

    monkeypatch.setattr(Checkpointer, "_load", unreadable)
    with pytest.raises(CheckpointError, match="checkpoint 4 .* does not read back as written"):
        ckpt.save(4, _tree(4), {"epoch": 4})
    assert ckpt.steps() == [2, 3, 4]  # the older ones stay until a newer one verifies


def test_set_aside_keeps_the_bytes_and_frees_the_step(two):
    ckpt = Checkpointer(two)
    moved = ckpt.set_aside(2)
    assert (moved / "meta" / "metadata").exists() and moved.parent.name == f"{two.name}.damaged"
    assert ckpt.steps() == [1]
    ckpt.save(2, _tree(2), {"epoch": 2})
    assert ckpt.verify(2) is None


# The run itself: damage the newest checkpoint, resume, end bit-identical.

TIMING = ("seconds", "images_per_s", "eval_seconds")


def _config(workdir, epochs):
    return TrainConfig(
        dataset="synthetic",
        model_kwargs={"n_chans1": 4},
        epochs=epochs,
        batch_size=32,
        workdir=str(workdir),
        progress=False,
        log_every=0,
    )


@pytest.fixture(scope="module")
def tiny():
    return rdata.load_dataset("synthetic", n_train=96, n_test=32)


def _metrics(workdir):
    rows = pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(r).items() if k not in TIMING} for r in rows]


def test_resume_skips_a_damaged_checkpoint_and_ends_bit_identical(tmp_path, tiny):
    """A copy of a finished run, cut back to epoch 2 with that checkpoint damaged, resumes from
    epoch 1 and ends where the run did."""
    ref, hit = tmp_path / "ref", tmp_path / "hit"
    train(_config(ref, 3), dataset=tiny, log=lambda s: None)
    shutil.copytree(ref, hit)
    steps = Checkpointer(hit / "checkpoints").steps()
    assert len(steps) == 3
    shutil.rmtree(hit / "checkpoints" / str(steps[2]))  # as if stopped after epoch 2
    _zero_middle(_largest_array_file(hit / "checkpoints" / str(steps[1])))
    lines = []
    train(_config(hit, 3), resume=True, dataset=tiny, log=lines.append)
    skipped = [line for line in lines if "skipped damaged" in line]
    assert len(skipped) == 1 and f"(step {steps[1]}: " in skipped[0], lines
    assert f"checkpoint step {steps[0]}" in "\n".join(lines)
    assert _metrics(hit) == _metrics(ref)
    a, b = Checkpointer(ref / "checkpoints").arrays(), Checkpointer(hit / "checkpoints").arrays()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    assert len(list((hit.parent / "hit" / "checkpoints.damaged").iterdir())) == 1


def test_resume_exits_2_when_no_checkpoint_verifies(tmp_path, capsys):
    from relujax._src.app import cli

    w = tmp_path / "w"
    ckpt = Checkpointer(w / "checkpoints")
    for s in (3, 6):
        ckpt.save(s, _tree(s), {"epoch": s})
        DAMAGE["metadata garbage"](w / "checkpoints" / str(s))
    before = sorted(str(p) for p in w.rglob("*"))
    argv = ["--dataset", "synthetic", "--dataset-kw", "n_train=64", "--dataset-kw", "n_test=32"]
    code = cli.main([*argv, "--workdir", str(w), "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"train: error: no checkpoint in {w / 'checkpoints'} verifies (step 6: ")
    assert "step 3: its metadata does not read" in line and "Nothing was deleted" in line
    assert sorted(str(p) for p in w.rglob("*") if p.name != ".lock") == before
