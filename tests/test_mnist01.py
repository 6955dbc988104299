"""mnist01: the shipped data, seed 004's and seed 001's own figures, variant and loader agreement,
batching, the --data-dir path, errors.

The sources' figures pinned here: seed 004 section F prints `tensor(0.9953)` after 700 epochs of
gradient descent and `tensor(0.9931)` after 100 epochs of batch 2048 (a DataLoader without
shuffle=True); seed 001 section 5.7.4 prints 17 lines `train accuracy: ..., test accuracy: ...`,
the last `train accuracy: 0.9804, test accuracy: 0.9715`.
"""

import gzip
import json

import numpy as np
import pytest
import torch
from conftest import Cli

from bpbench import api
from bpbench.data import mnist
from bpbench.measure import run as runner

# Seed 001 section 5.7.4, its printed table (one line per 600 updates, printed after update 1, 601, ...).
SEED_001 = [(0.1587, 0.1568), (0.9048, 0.9098), (0.9254, 0.9277), (0.9386, 0.9376), (0.9449, 0.9437),
            (0.9533, 0.9524), (0.9590, 0.9578), (0.9644, 0.9608), (0.9680, 0.9646), (0.9698, 0.9641),
            (0.9728, 0.9679), (0.9745, 0.9673), (0.9756, 0.9693), (0.9764, 0.9694), (0.9787, 0.9715),
            (0.9791, 0.9719), (0.9804, 0.9715)]


def train(**flags):
    info, cfg = runner.resolve("mnist01", None, flags)
    return api.execute(info, cfg)


# ---------------------------------------------------------------- the shipped data

def test_shipped_data_is_every_0_and_1_of_both_splits():
    splits = mnist.load_npz(mnist.offline_path())
    (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
    assert xtr.shape == (12665, 28, 28) and xtr.dtype == torch.uint8
    assert int((ytr == 0).sum()) == 5923 and int((ytr == 1).sum()) == 6742
    assert xte.shape == (2115, 28, 28)
    assert int((yte == 0).sum()) == 980 and int((yte == 1).sum()) == 1135


def test_shipped_data_equals_the_original_files(mnist_dir):
    shipped = mnist.load_npz(mnist.offline_path())
    for split in ("train", "test"):
        images, labels = mnist.load_torchvision(mnist_dir, split)
        keep = labels <= 1
        assert torch.equal(shipped[split][0], images[keep]) and torch.equal(shipped[split][1], labels[keep])


def test_data_is_zeros_then_ones_scaled_like_to_tensor():
    from bpbench.experiments.mnist01 import load
    _, cfg = runner.resolve("mnist01", None, {})
    xtr, ytr, xte, yte, desc = load(cfg)
    assert ytr[:5923].eq(0).all() and ytr[5923:].eq(1).all()       # seed 004: torch.concat([X0, X1])
    images, labels = mnist.load_npz(mnist.offline_path())["train"]
    torch.testing.assert_close(xtr[0], images[labels == 0][0].reshape(784).float().div(255), rtol=0, atol=0)
    assert (desc["n_train"], desc["n_test"]) == (12665, 2115)
    assert desc["train_counts"] == {"0": 5923, "1": 6742} and desc["test_counts"] == {"0": 980, "1": 1135}


# ---------------------------------------------------------------- seed 004's figures, reproduced

@pytest.fixture(scope="module")
def gd_default():
    """`bpbench run mnist01`: seed 004's 700 epochs of gradient descent (the longest test here)."""
    r = Cli()("run", "mnist01", "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_default_run_reports_seed_004s_09953(gd_default):
    m = gd_default["final"]["metrics"]
    # The source's figure: ((yhat > 0.5) == y).mean() with yhat from the loop's last forward pass,
    # i.e. the parameters before the 700th update.
    assert round(m["source_train_accuracy"], 4) == 0.9953 and m["source_updates"] == 699
    assert round(m["train_accuracy"], 4) == 0.9953            # after the final update
    assert m["test_accuracy"] >= 0.99                          # MNIST's test split, held out
    d = gd_default["data"]
    assert (d["n_train"], d["n_test"], d["name"]) == (12665, 2115, "offline")
    conf = gd_default["confusion"]["test"]
    assert sum(map(sum, conf)) == 2115 and conf[0][0] + conf[1][1] == round(m["test_accuracy"] * 2115)
    assert gd_default["timing"]["steps"] == 700


def test_unshuffled_batches_of_2048_report_seed_004s_09931():
    d = Cli().json("run", "mnist01", "--batch-size", "2048", "--epochs", "100", "--no-shuffle")
    m = d["final"]["metrics"]
    # The source evaluates net(X) after the loop: the accuracy after the final update.
    assert round(m["train_accuracy"], 4) == 0.9931 == round(m["source_train_accuracy"], 4)
    assert d["timing"]["steps"] == 700 and d["config"]["shuffle"] is False


def test_seeded_like_seed_004():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1), torch.nn.Sigmoid())
    info, cfg = runner.resolve("mnist01", None, {})
    from bpbench.experiments.mnist01 import build_module
    torch.testing.assert_close(build_module(cfg)[0].weight, net[0].weight)


def test_source_figure_is_the_last_forward_pass():
    r = train(epochs=3, eval_every=1, warmup_steps=0)
    m = r["final"]["metrics"]
    assert m["source_updates"] == 2 and m["source_train_accuracy"] == r["history"][1]["train_accuracy"]
    assert m["train_accuracy"] == r["history"][2]["train_accuracy"]


# ---------------------------------------------------------------- agreement and batching

def test_manual_and_autograd_agree_per_epoch():
    kw = dict(epochs=10, eval_every=1)
    a, m = train(variant="autograd", **kw), train(variant="manual", **kw)
    for ha, hm in zip(a["history"], m["history"]):
        assert hm["loss"] == pytest.approx(ha["loss"], abs=1e-5)
        assert hm["test_loss"] == pytest.approx(ha["test_loss"], abs=1e-5)


def test_manual_and_autograd_agree_with_minibatches():
    kw = dict(updates=60, batch_size=64, lr=0.05)
    a, m = train(variant="autograd", **kw), train(variant="manual", **kw)
    assert [h["loss"] for h in m["history"]] == pytest.approx([h["loss"] for h in a["history"]], abs=1e-5)


def test_dataloader_path_matches_resident_for_gd():
    a = train(epochs=5, loader="resident")
    b = train(epochs=5, loader="dataloader")
    assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], abs=1e-6)


def test_unshuffled_dataloader_matches_resident():
    kw = dict(batch_size=2048, epochs=2, shuffle=False)
    a, b = train(loader="resident", **kw), train(loader="dataloader", **kw)
    assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], abs=1e-6)


def test_batch_orders():
    from bpbench.training import make_batches
    x = torch.arange(10.0).view(-1, 1)
    y = torch.arange(10)
    ordered = make_batches("resident", x, y, 3, 0, shuffle=False)
    assert [b[1].tolist() for b in ordered.epoch()] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    loader = make_batches("dataloader", x, y, 3, 0, shuffle=False)
    assert [b[1].tolist() for b in loader.epoch()] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    shuffled = [b[1].tolist() for b in make_batches("resident", x, y, 3, 0).epoch()]
    assert sorted(sum(shuffled, [])) == list(range(10)) and shuffled != [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    for kind in ("resident", "dataloader"):   # seed 001: np.random.choice(n, batch), seeded
        drawn = make_batches(kind, x, y, 4, 0, replacement=True)
        epoch = [b[1].tolist() for b in drawn.epoch()]
        assert drawn.steps_per_epoch == 3 and [len(b) for b in epoch] == [4, 4, 4]
        assert epoch == [b[1].tolist() for b in make_batches(kind, x, y, 4, 0, replacement=True).epoch()]
        assert epoch != [b[1].tolist() for b in drawn.epoch()]   # fresh draws every epoch
    big = make_batches("resident", torch.zeros(1000, 1), torch.arange(1000), 500, 0, replacement=True)
    assert any(len(set(b[1].tolist())) < 500 for b in big.epoch())   # with replacement: repeats


def test_updates_count_minibatch_steps():
    r = train(batch_size=2048, updates=10, warmup_steps=0)
    assert r["timing"]["steps"] == 10
    assert r["history"][-1]["updates"] == 10
    assert r["history"][-1]["epoch"] == 2      # 7 updates per epoch for 12,665 samples


# ---------------------------------------------------------------- seed 001: ten digits

@pytest.fixture(scope="module")
def seed_001(mnist_dir):
    r = Cli()("run", "mnist01", "--digits", "0-9", "--data-dir", mnist_dir, "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout), r.stderr.splitlines()


def test_ten_digits_defaults_are_seed_001s():
    _, cfg = runner.resolve("mnist01", None, {"digits": "0-9"})
    assert (cfg["variant"], cfg["data"], cfg["batch_size"], cfg["lr"], cfg["updates"], cfg["replacement"],
            cfg["log_every"]) == ("manual", "mnist", 100, 0.1, 10000, True, 1)
    _, cfg = runner.resolve("mnist01", None, {"digits": "0-9", "epochs": 2, "lr": 0.05})
    assert "updates" not in cfg and cfg["epochs"] == 2 and cfg["lr"] == 0.05   # --epochs wins over built-in updates
    _, cfg = runner.resolve("mnist01", None, {})
    assert cfg["lr"] == 0.001 and "updates" not in cfg and cfg["replacement"] is False
    assert cfg["variant"] == "autograd" and cfg["batch_size"] == "full"


def test_seed_001_init():
    from bpbench.experiments.mnist01 import build_module
    _, cfg = runner.resolve("mnist01", None, {"digits": "0-9"})
    net = build_module(cfg)
    torch.manual_seed(cfg["seed"])
    torch.testing.assert_close(net[0].weight, 0.01 * torch.randn(784, 50).t())
    assert net[0].bias.eq(0).all() and net[2].bias.eq(0).all()
    assert net[2].weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_seed_001_reproduced(seed_001):
    d, lines = seed_001
    printed = [tuple(float(p.split(": ")[1]) for p in line.split(", ")) for line in lines
               if line.startswith("train accuracy: ")]
    assert len(printed) == len(SEED_001) == 17
    assert [h["source_updates"] for h in d["history"]] == list(range(1, 10000, 600))
    # After a single update from N(0, 0.01^2) weights the accuracy is noise: the source's own code
    # prints 0.08 to 0.18 for numpy seeds 0-15 (measured on these files), 0.1587 in its run.
    assert printed[0][0] == pytest.approx(SEED_001[0][0], abs=0.1)
    for ours, source in zip(printed[1:], SEED_001[1:]):
        assert ours == pytest.approx(source, abs=0.02)
    m = d["final"]["metrics"]
    assert m["train_accuracy"] == pytest.approx(0.9804, abs=0.01)
    assert m["test_accuracy"] == pytest.approx(0.9715, abs=0.01)
    assert d["timing"]["steps"] == 10000 and d["data"]["n_train"] == 60000 and d["data"]["n_test"] == 10000
    assert len(d["confusion"]["test"]) == 10


def test_ten_digits_manual_and_autograd_agree(mnist_dir):
    kw = dict(digits="0-9", data_dir=str(mnist_dir), updates=30, log_every=0, eval_every=1)
    a, m = train(variant="autograd", **kw), train(variant="manual", **kw)
    assert [h["loss"] for h in m["history"]] == pytest.approx([h["loss"] for h in a["history"]], abs=1e-5)
    assert m["final"]["metrics"]["test_accuracy"] == pytest.approx(a["final"]["metrics"]["test_accuracy"], abs=1e-3)


def test_ten_digits_without_data_says_how_to_get_it(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("BPBENCH_DATA", str(tmp_path))
    r = cli("run", "mnist01", "--digits", "0-9")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "bpbench run mnist01 --digits 0-9 --download" in r.stderr and str(tmp_path) in r.stderr
    r = cli("run", "mnist01", "--digits", "0-9", "--data-dir", tmp_path / "x")
    assert r.exit_code == 2 and f"--data-dir {tmp_path / 'x'} --download" in r.stderr


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BPBENCH_DATA", str(tmp_path))
    assert mnist.default_data_dir() == tmp_path
    monkeypatch.delenv("BPBENCH_DATA")
    import platformdirs
    assert mnist.default_data_dir() == mnist.Path(platformdirs.user_cache_dir("bpbench"))


def test_download_fills_the_default_dir_once(cli, tmp_path, monkeypatch, mnist_dir):
    import shutil

    import torchvision
    calls = []

    def fake_mnist(root, train, download):   # what torchvision leaves behind: root/MNIST/raw/*
        calls.append(root)
        shutil.copytree(mnist_dir / "MNIST", f"{root}/MNIST")

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    monkeypatch.setenv("BPBENCH_DATA", str(tmp_path))
    for _ in range(2):
        r = cli("run", "mnist01", "--data", "mnist", "--download", "--epochs", "1", "--json")
        assert r.exit_code == 0, r.stderr
    assert calls == [str(tmp_path)]
    r = cli("run", "mnist01", "--data", "mnist", "--epochs", "1", "--json")   # offline afterwards
    assert r.exit_code == 0 and json.loads(r.stdout)["data"]["n_train"] == 12665


def test_download_into_a_place_that_cannot_be_written_says_so_not_no_network(cli, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    r = cli("run", "mnist01", "--digits", "0-9", "--data-dir", blocked, "--download", "--updates", "1")
    assert r.exit_code == 2 and "cannot download MNIST into" in r.stderr and "Not a directory" in r.stderr
    assert "no network" not in r.stderr


def test_download_without_network_says_so(cli, tmp_path, monkeypatch):
    import torchvision

    def no_network(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got:\n<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    r = cli("run", "mnist01", "--data-dir", tmp_path, "--download")
    assert r.exit_code == 2 and "could not download MNIST" in r.stderr and "no network" in r.stderr


def test_ten_digits_offline_is_bad_input(cli):
    r = cli("run", "mnist01", "--digits", "0-9", "--data", "offline")
    assert r.exit_code == 2 and "--data-dir" in r.stderr


# ---------------------------------------------------------------- full MNIST from --data-dir

def test_data_dir_trains_on_train_split(mnist_dir):
    r = train(data_dir=str(mnist_dir), epochs=3)
    d = r["data"]
    assert d["name"] == "mnist" and d["train_counts"] == {"0": 5923, "1": 6742}
    assert d["test_counts"] == {"0": 980, "1": 1135}
    shipped = train(epochs=3)
    assert [h["loss"] for h in r["history"]] == [h["loss"] for h in shipped["history"]]   # the same images


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "type code", "too long", "magic",
                                    "label 200"])
def test_broken_mnist_file_names_the_file(cli, broken_mnist_dir, damage):
    f = broken_mnist_dir / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    data = f.read_bytes()
    if damage == "missing":
        f.unlink()
    elif damage == "truncated":
        f.write_bytes(data[:5000])
    elif damage == "garbage":
        f.write_bytes(b"\x00" * 64)
    elif damage == "type code":        # 0x0d: float32 data under MNIST's file name
        f.write_bytes(data[:2] + b"\x0d" + data[3:])
    elif damage == "too long":
        f.write_bytes(data + b"\x00")
    elif damage == "label 200":        # a valid file whose one label is no digit: never dropped unseen
        f.write_bytes(data[:8] + b"\xc8" + data[9:])
    else:
        f.write_bytes(b"\x00\x00\x08\x03" + data[4:])
    r = cli("run", "mnist01", "--data-dir", broken_mnist_dir, "--epochs", "1")
    assert r.exit_code == 2, r.stderr
    assert "train-labels-idx1-ubyte" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_gzipped_raw_files_are_read(broken_mnist_dir):
    raw = broken_mnist_dir / "MNIST" / "raw"
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte"):
        (raw / (name + ".gz")).write_bytes(gzip.compress((raw / name).read_bytes(), compresslevel=1))
        (raw / name).unlink()
    r = train(data_dir=str(broken_mnist_dir), epochs=1)
    assert r["data"]["n_train"] == 12665 and r["data"]["n_test"] == 2115
    # the .gz files were unpacked elsewhere: the user's directory is unchanged
    assert sorted(p.name for p in raw.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                                                     "train-images-idx3-ubyte", "train-labels-idx1-ubyte.gz"]


@pytest.mark.parametrize("damage", ["not gzip", "corrupt stream", "truncated stream"])
def test_corrupt_gz_names_the_file(cli, broken_mnist_dir, damage):
    raw = broken_mnist_dir / "MNIST" / "raw"
    plain = (raw / "t10k-labels-idx1-ubyte").read_bytes()
    (raw / "t10k-labels-idx1-ubyte").unlink()
    packed = bytearray(gzip.compress(plain))
    if damage == "not gzip":
        packed = b"\x1f\x8b not gzip"
    elif damage == "corrupt stream":   # a valid gzip header, then damaged deflate data
        packed[20:60] = bytes(b ^ 0x55 for b in packed[20:60])
    else:
        packed = packed[: len(packed) // 2]
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(packed))
    r = cli("run", "mnist01", "--data-dir", broken_mnist_dir, "--epochs", "1")
    assert r.exit_code == 2 and "t10k-labels-idx1-ubyte.gz" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


# ---------------------------------------------------------------- .npz files

def test_custom_npz_of_one_set_is_split(cli, tmp_path):
    images, labels = mnist.load_npz(mnist.offline_path())["test"]
    f = tmp_path / "small.npz"
    np.savez(f, images=images[::10].numpy(), labels=labels[::10].numpy())
    d = cli.json("run", "mnist01", "--data", f, "--epochs", "2", "--set", "holdout=0.25")
    assert d["data"]["n_train"] + d["data"]["n_test"] == 212 and 52 <= d["data"]["n_test"] <= 54   # 25 % per class


def test_custom_npz_with_both_splits(cli, tmp_path):
    s = mnist.load_npz(mnist.offline_path())
    f = tmp_path / "two.npz"
    np.savez(f, train_images=s["train"][0][:300].numpy(), train_labels=s["train"][1][:300].numpy(),
             test_images=s["test"][0][:100].numpy(), test_labels=s["test"][1][:100].numpy())
    d = cli.json("run", "mnist01", "--data", f, "--epochs", "2")
    assert (d["data"]["n_train"], d["data"]["n_test"]) == (300, 100)


def _npz(tmp_path, **arrays):
    f = tmp_path / "bad.npz"
    np.savez(f, **arrays)
    return f


@pytest.mark.parametrize("case", ["2-D labels", "string labels", "float labels", "label 12", "count",
                                  "npy named npz", "not a zip", "no labels", "float images"])
def test_bad_npz_is_one_line(cli, tmp_path, case):
    images = np.zeros((4, 28, 28), np.uint8)
    labels = np.array([0, 1, 0, 1])
    f = {
        "2-D labels": lambda: _npz(tmp_path, images=images, labels=labels.reshape(2, 2)),
        "string labels": lambda: _npz(tmp_path, images=images, labels=np.array(["0", "1", "0", "1"])),
        "float labels": lambda: _npz(tmp_path, images=images, labels=np.array([0.0, 1.0, 0.5, 1.0])),
        "label 12": lambda: _npz(tmp_path, images=images, labels=np.array([0, 1, 12, 1])),
        "count": lambda: _npz(tmp_path, images=images, labels=labels[:3]),
        "no labels": lambda: _npz(tmp_path, images=images),
        "float images": lambda: _npz(tmp_path, images=images.astype(np.float32), labels=labels),
    }.get(case, lambda: None)()
    if case == "npy named npz":
        f = tmp_path / "x.npz"
        with f.open("wb") as fh:
            np.save(fh, images)
    elif case == "not a zip":
        f = tmp_path / "x.npz"
        f.write_bytes(b"PK\x03\x04 not really a zip")
    r = cli("run", "mnist01", "--data", f, "--epochs", "1")
    assert r.exit_code == 2 and str(f) in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, words", [
    (["--set", "holdout=0.2"], "holdout applies only"),
    (["--set", "holdout=1.5", "--data", "{npz}"], "between 0 and 1"),
    (["--batch-size", "100", "--replacement", "--no-shuffle"], "does not apply"),
    (["--data", "{npz}", "--data-dir", "x"], "do not apply"),
])
def test_options_that_do_not_apply(cli, tmp_path, args, words):
    npz = _npz(tmp_path, images=np.zeros((10, 28, 28), np.uint8), labels=np.arange(10) % 2)
    r = cli("run", "mnist01", "--epochs", "1", *[a.format(npz=npz) for a in args])
    assert r.exit_code == 2 and words in r.stderr, r.stderr


def test_log_lines_show_accuracy(cli):
    r = cli("run", "mnist01", "--epochs", "2", "--log-every", "1")
    assert r.exit_code == 0, r.stderr
    assert "Epoch [2/2]" in r.stdout and "held-out loss" in r.stdout


def test_gradcheck_ten_digits_from_the_command_line(cli, mnist_dir):
    r = cli("gradcheck", "mnist01", "--digits", "0-9", "--data-dir", mnist_dir, "--max-elements", "16", "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["note"].startswith("3 samples of mnist")     # seed 001: x_train[:3]
    assert [c["param"] for c in rep["checks"]] == ["layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"]


def test_unenterable_data_dir_is_one_line(cli, tmp_path, monkeypatch):
    import os
    real = os.stat

    def no_entry(path, *a, **k):   # what a chmod 000 directory does to a non-root user
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied")
        return real(path, *a, **k)

    monkeypatch.setattr(os, "stat", no_entry)
    for args in (["--data-dir", tmp_path], ["--data", tmp_path / "x.npz"]):
        r = cli("run", "mnist01", "--epochs", "1", *args)
        assert r.exit_code == 2 and "Permission denied" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
