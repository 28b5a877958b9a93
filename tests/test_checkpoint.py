import pickle

import pytest
import torch

from qg_lightning.checkpoint import UnsafeCheckpointError, atomic_save, load_checkpoint


class _Payload:
    """Unpickling this would create a file: the loader must refuse it without running it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_roundtrip(tmp_path):
    path = tmp_path / "a.ckpt"
    atomic_save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"k": 1}}, path)
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2))
    assert not list(tmp_path.glob(".*tmp*"))


def test_refuses_code(tmp_path):
    evil = tmp_path / "evil.ckpt"
    marker = tmp_path / "pwned"
    with open(evil, "wb") as fh:
        pickle.dump({"state_dict": _Payload(str(marker))}, fh)
    with pytest.raises(UnsafeCheckpointError, match="evil.ckpt"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_missing_and_garbage(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")
    bad = tmp_path / "trunc.ckpt"
    torch.save({"w": torch.ones(100)}, bad)
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises((ValueError, UnsafeCheckpointError), match="trunc.ckpt"):
        load_checkpoint(bad)
    lst = tmp_path / "list.ckpt"
    torch.save([1, 2], lst)
    with pytest.raises(ValueError, match="expected a checkpoint dict"):
        load_checkpoint(lst)


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"v": torch.tensor(1)}, path)

    def boom(obj, f, *a, **k):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"v": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(load_checkpoint(path)["v"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
