"""The data layer: sources, checksums and splits on real MNIST bytes (slow: they need the MNIST
fixture), safe unpickling, batches, the cubic and ECG data."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from conftest import SMALL, single_error_line, synthetic_split
from noderun.data import sources
from noderun.data.batches import epoch_generator, random_crop, training_batches
from noderun.data.cubic import cubic_target, make_cubic_data
from noderun.data.ecg import load_ecg_csv
from noderun.data.idx import md5_of_file, read_idx
from noderun.data.image_data import load_image_data
from noderun.data.safe_pickle import UnsafePickleError, load_arrays_pickle
from noderun.data.sources import MNIST, ensure_dataset
from noderun.errors import UserError

TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.slow
def test_mnist_is_the_official_dataset(mnist_root):
    files, _ = ensure_dataset("mnist", mnist_root)
    assert {part: md5_of_file(path) for part, path in files.items()} == MNIST.md5
    assert read_idx(files["train_images"]).shape == (60000, 28, 28)
    assert read_idx(files["test_images"]).shape == (10000, 28, 28)
    assert np.bincount(read_idx(files["test_labels"])).tolist() == TEST_CLASS_COUNTS


@pytest.mark.slow
def test_second_use_reads_the_cache_and_fetches_nothing(mnist_root):
    _, source = ensure_dataset("mnist", mnist_root)
    assert source == "cache"


@pytest.mark.slow
def test_torchvision_gz_layout_is_reused(mnist_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (mnist_root / "MNIST" / "raw").iterdir():  # level 1: the layout is tested, not the ratio
        (raw / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    files, source = ensure_dataset("mnist", tmp_path, sources=("cache",))
    assert source == "cache"
    assert md5_of_file(files["test_labels"]) == MNIST.md5["test_labels"]


def _flip_one_byte(path):
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.slow
@pytest.mark.parametrize("edit", [_flip_one_byte, _truncate])
def test_damaged_cache_file_stops_the_run_with_one_line(corrupt_copy, noderun_main, edit):
    root = corrupt_copy("t10k-images-idx3-ubyte", edit)
    line = single_error_line(noderun_main(["model=mlp", *SMALL], root))
    actual = md5_of_file(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")
    assert "t10k-images-idx3-ubyte" in line
    assert MNIST.md5["test_images"] in line and actual in line
    assert "delete" in line


def test_no_source_gives_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="could not obtain mnist"):
        ensure_dataset("mnist", tmp_path, sources=("cache",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_of_arrays_loads(protocol):
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2])), [np.zeros(2)])
    loaded = load_arrays_pickle(pickle.dumps(arrays, protocol=protocol))
    assert np.array_equal(loaded[0][0], arrays[0][0]) and np.array_equal(loaded[0][1], arrays[0][1])


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


@pytest.mark.parametrize("payload", [_RunsCode(), {"a": 1}, np.array([object()], dtype=object), torch.zeros(2)])
def test_pickle_with_other_objects_is_refused(payload, capsys):
    with pytest.raises(UnsafePickleError):
        load_arrays_pickle(pickle.dumps((np.zeros(2), payload)))
    assert "this pickle ran code" not in capsys.readouterr().out


@pytest.mark.slow
def test_validation_split_is_fixed_and_disjoint(mnist_root):
    full = load_image_data("mnist", mnist_root, val_size=0)
    split = load_image_data("mnist", mnist_root, val_size=5000, train_size=1000, test_size=300)
    assert len(split.val) == 5000 and len(split.train) == 1000 and len(split.test) == 300
    assert torch.equal(split.val.images, full.train.images[-5000:])
    assert torch.equal(split.train.images, full.train.images[:1000])
    assert full.val is None and len(full.train) == 60000


def test_random_crop_equals_per_sample_crop_of_padded_image():
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    cropped = random_crop(images, 4, torch.Generator().manual_seed(3))
    offsets = torch.randint(0, 9, (2, 6), generator=torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(6):
        dy, dx = offsets[:, i].tolist()
        assert torch.equal(cropped[i], padded[i, :, dy : dy + 28, dx : dx + 28])


def test_training_batches_cover_the_split_once_and_repeat_per_seed():
    split = synthetic_split(300, seed=0)
    first = list(training_batches(split, 128, epoch_generator(0, 0), crop_padding=4))
    again = list(training_batches(split, 128, epoch_generator(0, 0), crop_padding=4))
    other_epoch = list(training_batches(split, 128, epoch_generator(0, 1), crop_padding=4))
    assert [len(y) for _, y in first] == [128, 128, 44]
    assert sorted(torch.cat([y for _, y in first]).tolist()) == sorted(split.labels.tolist())
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][1], other_epoch[0][1])
    assert first[0][0].dtype == torch.float32 and float(first[0][0].max()) <= 1.0


@pytest.mark.slow
def test_fashion_mnist_from_debian_package(tmp_path):
    if not sources.DEBIAN_FASHION_DIR.exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
    arrays, source = sources.load_image_dataset("fashion_mnist", tmp_path, sources=("cache", "registry"))
    assert source == "registry"
    assert arrays["train_images"].shape == (60000, 28, 28) and arrays["test_labels"].shape == (10000,)
    assert np.bincount(arrays["test_labels"]).tolist() == [1000] * 10
    assert ensure_dataset("fashion_mnist", tmp_path)[1] == "cache"


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", tmp_path / "absent")
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        ensure_dataset("fashion_mnist", tmp_path / "cache", sources=("cache", "registry"))


def test_cubic_data_follows_the_seed_and_the_tutorial_ranges():
    a, b, c = make_cubic_data(0), make_cubic_data(0), make_cubic_data(1)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == (10, 1) and a.x_test.shape == (100, 1)
    assert float(a.x_train.min()) >= -2.5 and float(a.x_train.max()) <= 2.5
    assert torch.equal(a.y_test, cubic_target(a.x_test))
    noise = a.y_train - cubic_target(a.x_train)
    assert 0 < float(noise.abs().max()) < 5


def _write_ecg(path, rows):
    path.write_text("\n".join(",".join(str(v) for v in row) for row in rows) + "\n")


def _ecg_row(label, value=0.5):
    return [value] * 187 + [label]


def test_ecg_file_in_the_mit_bih_format_loads(tmp_path):
    path = tmp_path / "ecg.csv"
    _write_ecg(path, [_ecg_row(k % 5, k / 10) for k in range(12)])
    signals, labels = load_ecg_csv(path)
    assert signals.shape == (12, 1, 187) and labels.tolist() == [k % 5 for k in range(12)]


@pytest.mark.parametrize("bad_row, message", [
    (_ecg_row(1)[:-2] + [1], "has 187 columns"),
    (_ecg_row(7), "label '7'"),
    (_ecg_row(1)[:5] + ["abc"] + _ecg_row(1)[6:], "not a number: 'abc'"),
])
def test_malformed_ecg_file_names_file_and_first_bad_row(tmp_path, bad_row, message):
    path = tmp_path / "ecg.csv"
    _write_ecg(path, [_ecg_row(0), _ecg_row(1), bad_row, _ecg_row(7)])
    with pytest.raises(UserError, match=message) as err:
        load_ecg_csv(path)
    assert str(path) in str(err.value) and "row 3" in str(err.value)


def test_missing_ecg_file_is_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_ecg_csv(tmp_path / "nope.csv")
