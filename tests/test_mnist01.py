"""mnist01: the shipped offline data, variant agreement, batching, the --data-dir path, errors."""

import numpy as np
import pytest
import torch

from bpbench import run as runner
from bpbench.data import mnist


def train(**flags):
    info, cfg = runner.resolve("mnist01", None, flags)
    return runner.execute(info, cfg)


def test_offline_data_is_every_0_and_1_of_the_test_split():
    images, labels = mnist.load_npz(mnist.offline_path())
    assert images.shape == (2115, 28, 28) and images.dtype == torch.uint8
    assert int((labels == 0).sum()) == 980 and int((labels == 1).sum()) == 1135


def test_split_is_stratified_and_fixed():
    _, labels = mnist.load_npz(mnist.offline_path())
    tr, te = mnist.stratified_split(labels, 0.2)
    assert len(tr) == 1692 and len(te) == 423
    assert int((labels[te] == 0).sum()) == 196 and int((labels[te] == 1).sum()) == 227
    assert not set(tr.tolist()) & set(te.tolist())
    tr2, te2 = mnist.stratified_split(labels, 0.2)
    assert torch.equal(te, te2)


def test_gd_700_epochs_reaches_099_held_out():
    r = train(epochs=700)
    m = r["final"]["metrics"]
    assert m["test_accuracy"] >= 0.99
    assert r["data"]["n_train"] == 1692 and r["data"]["n_test"] == 423
    assert r["data"]["train_counts"] == {"0": 784, "1": 908}
    assert r["timing"]["steps"] == 700
    conf = r["confusion"]["test"]
    assert sum(map(sum, conf)) == 423 and conf[0][0] + conf[1][1] == round(m["test_accuracy"] * 423)


def test_manual_and_autograd_agree_per_epoch():
    kw = dict(epochs=40, eval_every=1)
    a, m = train(variant="autograd", **kw), train(variant="manual", **kw)
    for ha, hm in zip(a["history"], m["history"]):
        assert hm["loss"] == pytest.approx(ha["loss"], abs=1e-5)
        assert hm["test_loss"] == pytest.approx(ha["test_loss"], abs=1e-5)


def test_manual_and_autograd_agree_with_minibatches():
    kw = dict(epochs=3, batch_size=64, lr=0.05)
    a, m = train(variant="autograd", **kw), train(variant="manual", **kw)
    assert [h["loss"] for h in m["history"]] == pytest.approx([h["loss"] for h in a["history"]], abs=1e-5)


def test_seeded_like_seed_004():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1), torch.nn.Sigmoid())
    info, cfg = runner.resolve("mnist01", None, {})
    from bpbench.experiments.mnist01 import build_module
    torch.testing.assert_close(build_module(cfg)[0].weight, net[0].weight)


def test_dataloader_path_matches_resident_for_gd():
    a = train(epochs=5, loader="resident")
    b = train(epochs=5, loader="dataloader")
    assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], abs=1e-6)


def test_updates_count_minibatch_steps():
    r = train(batch_size=256, updates=20, warmup_steps=0)
    assert r["timing"]["steps"] == 20
    assert r["history"][-1]["updates"] == 20
    assert r["history"][-1]["epoch"] == 3      # 7 updates per epoch for 1692 samples


def test_data_dir_trains_on_train_split(mnist_dir):
    r = train(data_dir=str(mnist_dir), epochs=30, lr=0.1)
    d = r["data"]
    assert d["name"] == "mnist" and d["n_train"] == d["train_counts"]["0"] + d["train_counts"]["1"]
    assert d["n_test"] == d["test_counts"]["0"] + d["test_counts"]["1"]
    assert r["final"]["metrics"]["test_accuracy"] > 0.95


def test_ten_digits_with_data_dir(mnist_dir):
    r = train(data_dir=str(mnist_dir), digits="0-9", batch_size=100, lr=0.1, epochs=2, variant="manual")
    assert len(r["confusion"]["test"]) == 10
    assert r["final"]["metrics"]["test_accuracy"] > 0.8


def test_ten_digits_offline_is_bad_input(cli):
    r = cli("run", "mnist01", "--digits", "0-9")
    assert r.exit_code == 2 and "--data-dir" in r.stderr


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage"])
def test_broken_mnist_file_names_the_file(cli, broken_mnist_dir, damage):
    f = broken_mnist_dir / "MNIST" / "raw" / "train-images-idx3-ubyte"
    if damage == "missing":
        f.unlink()
    elif damage == "truncated":
        f.write_bytes(f.read_bytes()[:5000])
    else:
        f.write_bytes(b"\x00" * 64)
    r = cli("run", "mnist01", "--data-dir", broken_mnist_dir, "--epochs", "1")
    assert r.exit_code == 2, r.stderr
    assert "train-images-idx3-ubyte" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_gzipped_raw_files_are_read(broken_mnist_dir):
    import gzip
    raw = broken_mnist_dir / "MNIST" / "raw"
    for f in list(raw.iterdir()):
        (raw / (f.name + ".gz")).write_bytes(gzip.compress(f.read_bytes()))
        f.unlink()
    r = train(data_dir=str(broken_mnist_dir), epochs=2)
    assert r["data"]["n_train"] > 1000


def test_corrupt_gz_names_the_file(cli, broken_mnist_dir):
    raw = broken_mnist_dir / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not gzip")
    r = cli("run", "mnist01", "--data-dir", broken_mnist_dir, "--epochs", "1")
    assert r.exit_code == 2 and "t10k-labels-idx1-ubyte.gz" in r.stderr


def test_corrupt_npz_is_bad_input(cli, tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    r = cli("run", "mnist01", "--data", bad)
    assert r.exit_code == 2 and str(bad) in r.stderr


def test_custom_npz(cli, tmp_path):
    images, labels = mnist.load_npz(mnist.offline_path())
    f = tmp_path / "small.npz"
    np.savez(f, images=images[::10].numpy(), labels=labels[::10].numpy())
    d = cli.json("run", "mnist01", "--data", f, "--epochs", "2")
    assert d["data"]["n_train"] + d["data"]["n_test"] == 212


def test_download_without_network_says_so(cli, tmp_path, monkeypatch):
    import torchvision

    def no_network(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got:\n<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    r = cli("run", "mnist01", "--data-dir", tmp_path, "--download")
    assert r.exit_code == 2 and "could not download MNIST" in r.stderr and "no network" in r.stderr


def test_log_lines_show_accuracy(cli):
    r = cli("run", "mnist01", "--epochs", "4", "--log-every", "2")
    assert r.exit_code == 0, r.stderr
    assert "Epoch [2/4]" in r.stdout and "held-out loss" in r.stdout
