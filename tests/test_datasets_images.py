"""Bad and unusual input images: each gets a documented conversion or one clear error."""

import json
import os
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import datasets.prepare as prepare
from datasets import DatasetError, open_dataset, open_unpaired
from datasets.images import load_image, probe_image
from datasets.prepare import create_from_images


def quiet(*_):
    pass


def create(tmp_path, source="images", **kwargs):
    """create_from_images into tmp_path/out (sorted order) and the stored uint8 NHWC images."""
    result = create_from_images(tmp_path / "out", tmp_path / source, shuffle=False, log=quiet,
                                **kwargs)
    return result, open_dataset(tmp_path / "out").images()


def rgb(seed=0, size=(8, 8)):
    return np.random.RandomState(seed).randint(0, 256, size + (3,)).astype(np.uint8)


def save(tmp_path, name, array=None, image=None, folder="images", **save_kwargs):
    os.makedirs(tmp_path / folder, exist_ok=True)
    path = tmp_path / folder / name
    (image or Image.fromarray(array)).save(path, **save_kwargs)
    return path


def write_png16(path, array):
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB)."""
    h, w, c = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2}[c], 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))


def assert_no_output(tmp_path):
    assert not os.path.exists(tmp_path / "out")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out")], "temp folder left"


#----------------------------------------------------------------------------
# Files that cannot be used: one error line naming the file and the fix; --skip-bad.

def make_bad_files(tmp_path):
    good = save(tmp_path, "good.png", rgb())
    jpeg = save(tmp_path, "tmp.jpg", rgb(1), quality=95).read_bytes()
    png = good.read_bytes()
    bad = {
        "truncated.jpg": (jpeg[:len(jpeg) // 2], "truncated or corrupt"),
        "truncated.png": (png[:len(png) // 2], "truncated or corrupt"),
        "corrupt.jpg": (jpeg[:20] + b"\x00" * 50 + jpeg[70:], "truncated or corrupt"),
        "corrupt.png": (png[:60] + bytes(range(200)) + png[260:], "truncated or corrupt"),
        "empty.png": (b"", "empty file (0 bytes)"),
        "notes.png": (b"these are my notes, not a picture\n", "not an image"),
    }
    os.remove(tmp_path / "images" / "tmp.jpg")
    for name, (data, _) in bad.items():
        (tmp_path / "images" / name).write_bytes(data)
    return {name: reason for name, (_, reason) in bad.items()}


def test_each_bad_file_gives_one_clear_error_and_no_output(tmp_path):
    bad = make_bad_files(tmp_path)
    for name, reason in bad.items():
        others = [n for n in bad if n != name]
        for other in others:
            os.rename(tmp_path / "images" / other, tmp_path / other)
        with pytest.raises(DatasetError) as error:
            create(tmp_path)
        message = str(error.value)
        assert "\n" not in message
        assert name in message and reason in message and "--skip-bad" in message
        assert_no_output(tmp_path)
        for other in others:
            os.rename(tmp_path / other, tmp_path / "images" / other)


def test_skip_bad_skips_and_reports_counts(tmp_path):
    bad = make_bad_files(tmp_path)
    lines = []
    result = create_from_images(tmp_path / "out", tmp_path / "images", skip_bad=True,
                                log=lines.append)
    assert result["num_images"] == 1 and len(result["skipped"]) == len(bad)
    assert sorted(s.split(":")[0].rsplit("/", 1)[1] for s in result["skipped"]) == sorted(bad)
    assert any(f"skipped {len(bad)} bad files" in line for line in lines)
    # One line per skipped file, naming it and why, without the fix (--skip-bad was given).
    skipped = [line for line in lines if line.startswith("  skipped ")]
    assert len(skipped) == len(bad) and not any("--skip-bad" in line for line in skipped)
    np.testing.assert_array_equal(open_dataset(tmp_path / "out").images()[0], rgb())


def test_failure_late_in_a_run_leaves_no_partial_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "_BATCH", 2)   # several batches written before the failure
    for i in range(6):
        save(tmp_path, f"a{i}.png", rgb(i))
    data = (tmp_path / "images" / "a0.png").read_bytes()
    (tmp_path / "images" / "z_truncated.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(DatasetError, match="z_truncated.png"):
        create(tmp_path)
    assert_no_output(tmp_path)


def test_interrupted_run_leaves_no_partial_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "_BATCH", 2)
    for i in range(6):
        save(tmp_path, f"a{i}.png", rgb(i))
    calls = []

    def interrupt(self, images, original=prepare.MultiLodWriter.add_images):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(self, images)

    monkeypatch.setattr(prepare.MultiLodWriter, "add_images", interrupt)
    with pytest.raises(KeyboardInterrupt):
        create(tmp_path)
    assert_no_output(tmp_path)


def test_output_folder_that_exists_is_never_touched(tmp_path):
    save(tmp_path, "a.png", rgb())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="already exists; choose a new folder"):
        create(tmp_path)
    assert os.listdir(tmp_path / "out") == ["keep.txt"]


@pytest.mark.parametrize("command", ["images", "cifar10", "synthetic"])
def test_an_output_whose_parent_is_missing_fails_before_any_input_is_read(tmp_path, command):
    """One line naming the missing parent, before the inputs are even looked at (here they do
    not exist either: the output's error comes first, so a long scan never ends in it)."""
    out, lines = str(tmp_path / "missing" / "out"), []
    run = {"images": lambda: create_from_images(out, tmp_path / "nowhere", log=lines.append),
           "cifar10": lambda: prepare.create_cifar10(out, tmp_path / "nowhere", log=lines.append),
           "synthetic": lambda: prepare.create_synthetic(out, num_images=8, log=lines.append)}
    expected = (f"{tmp_path / 'missing'}: parent folder of the output does not exist; create "
                "it first")
    with pytest.raises(DatasetError, match=f"^{re.escape(expected)}$"):
        run[command]()
    assert lines == [] and os.listdir(tmp_path) == []


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="no image files found"):
        create(tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        create(tmp_path, source="missing")
    assert_no_output(tmp_path)


#----------------------------------------------------------------------------
# Documented conversions.

def test_grayscale_becomes_rgb(tmp_path):
    gray = rgb()[..., 0]
    save(tmp_path, "g.png", gray)
    save(tmp_path, "h.png", image=Image.fromarray(gray > 127))   # 1-bit
    _, images = create(tmp_path)
    np.testing.assert_array_equal(images[0], np.repeat(gray[..., None], 3, -1))
    np.testing.assert_array_equal(images[1], np.repeat((gray[..., None] > 127) * 255, 3, -1))


def test_channels_1_writes_a_grayscale_dataset(tmp_path):
    color = rgb()
    save(tmp_path, "c.png", color)
    create_from_images(tmp_path / "out", tmp_path / "images", channels=1, log=quiet)
    dataset = open_dataset(tmp_path / "out")
    assert dataset.info.channels == 1
    expected = np.asarray(Image.fromarray(color).convert("L"))   # ITU-R 601-2 luma
    np.testing.assert_array_equal(dataset.images()[0, ..., 0], expected)


def test_palette_becomes_rgb_through_the_palette(tmp_path):
    palette = np.random.RandomState(0).randint(0, 256, (256, 3)).astype(np.uint8)
    indices = np.random.RandomState(1).randint(0, 256, (8, 8)).astype(np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.ravel().tolist())
    save(tmp_path, "p.png", image=image)
    _, images = create(tmp_path)
    np.testing.assert_array_equal(images[0], palette[indices])


def test_alpha_is_composited_over_white(tmp_path):
    color = rgb()
    alpha = np.random.RandomState(2).randint(0, 256, (8, 8)).astype(np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    save(tmp_path, "a.png", np.dstack([color, alpha]))
    save(tmp_path, "b.png", np.dstack([color[..., 0], alpha]))          # LA
    _, images = create(tmp_path)
    a = alpha[..., None].astype(np.float32) / 255
    expected = np.rint(color * a + 255 * (1 - a)).astype(np.uint8)
    np.testing.assert_array_equal(images[0], expected)
    assert (images[0][0, 0] == 255).all() and (images[0][0, 1] == color[0, 1]).all()
    np.testing.assert_array_equal(images[1][..., 0], expected[..., 0])


def test_16_bit_png_keeps_the_high_byte(tmp_path):
    values = np.random.RandomState(3).randint(0, 65536, (8, 8, 3)).astype(np.uint16)
    os.makedirs(tmp_path / "images")
    write_png16(tmp_path / "images" / "a_rgb16.png", values)
    write_png16(tmp_path / "images" / "b_gray16.png", values[..., :1])
    _, images = create(tmp_path)
    np.testing.assert_array_equal(images[0], values >> 8)
    np.testing.assert_array_equal(images[1], np.repeat(values[..., :1] >> 8, 3, -1))


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    # Pure cyan-free red in CMYK: C=0, M=255, Y=255, K=0 -> RGB (255, 0, 0).
    save(tmp_path, "c.jpg", image=Image.new("CMYK", (8, 8), (0, 255, 255, 0)), quality=100)
    assert Image.open(tmp_path / "images" / "c.jpg").mode == "CMYK"
    _, images = create(tmp_path)
    # JPEG (quality 100) quantisation of a flat colour via YCCK: a few of 255 levels, not floats.
    np.testing.assert_allclose(images[0].reshape(-1, 3).mean(0), [255, 0, 0], atol=3)


def test_exif_rotated_photo_is_made_upright(tmp_path):
    pixels = rgb(size=(8, 16))    # stored 16 wide, 8 high; orientation 6 = rotate 90 cw
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(tmp_path, "r.png", pixels, exif=exif)
    assert probe_image(path) == (8, 16)
    np.testing.assert_array_equal(load_image(path), np.rot90(pixels, -1))
    create_from_images(tmp_path / "out", tmp_path / "images", resolution=8, crop="center",
                       log=quiet)   # upright 8x16 -> centre 8x8 = rows 4..12
    np.testing.assert_array_equal(open_dataset(tmp_path / "out").images()[0],
                                  np.rot90(pixels, -1)[4:12])


#----------------------------------------------------------------------------
# Sizes.

def test_mixed_sizes_need_resolution(tmp_path):
    save(tmp_path, "a.png", rgb(size=(16, 16)))
    save(tmp_path, "b.png", rgb(size=(8, 8)))
    with pytest.raises(DatasetError, match=r"b\.png: image is 8x8 but .*a\.png is 16x16.*"
                                           r"--resolution"):
        create(tmp_path)
    result, images = create(tmp_path, resolution=8)
    assert images.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(images[1], rgb(size=(8, 8)))            # no resize needed
    expected = np.asarray(Image.fromarray(rgb(size=(16, 16))).resize((8, 8), Image.LANCZOS))
    np.testing.assert_array_equal(images[0], expected)


def test_non_square_images_need_crop(tmp_path):
    wide = rgb(size=(8, 12))
    save(tmp_path, "w.png", wide)
    with pytest.raises(DatasetError, match=r"w\.png: image is 12x8, not a square power of two; "
                                           r"pass --resolution"):
        create(tmp_path)
    with pytest.raises(DatasetError, match=r"w\.png: image is 12x8, not square; pass "
                                           r"--crop=center"):
        create(tmp_path, resolution=8)
    _, images = create(tmp_path, resolution=8, crop="center")
    np.testing.assert_array_equal(images[0], wide[:, 2:10])
    os.rename(tmp_path / "out", tmp_path / "out_center")
    _, images = create(tmp_path, resolution=8, crop="stretch")
    expected = np.asarray(Image.fromarray(wide).resize((8, 8), Image.LANCZOS))
    np.testing.assert_array_equal(images[0], expected)


def test_images_smaller_than_the_resolution(tmp_path):
    save(tmp_path, "small.png", rgb(size=(8, 8)))
    with pytest.raises(DatasetError, match=r"small\.png: image is 8x8, smaller than "
                                           r"--resolution 16.*--allow-upscale"):
        create(tmp_path, resolution=16)
    assert_no_output(tmp_path)
    _, images = create(tmp_path, resolution=16, allow_upscale=True)
    assert images.shape == (1, 16, 16, 3)


def test_non_power_of_two_resolution_and_images(tmp_path):
    save(tmp_path, "a.png", rgb(size=(12, 12)))
    with pytest.raises(DatasetError, match="--resolution must be a power of two between 4 and "
                                           "8192, got 100; use e.g. 64"):
        create(tmp_path, resolution=100)
    with pytest.raises(DatasetError, match=r"a\.png: image is 12x12, not a square power of two"):
        create(tmp_path)
    _, images = create(tmp_path, resolution=8)
    assert images.shape == (1, 8, 8, 3)


#----------------------------------------------------------------------------
# Labels files.

def test_labels_by_relative_path_or_name_with_class_names(tmp_path):
    save(tmp_path, "cat1.png", rgb(0), folder="images/cats")
    save(tmp_path, "dog1.png", rgb(1), folder="images/dogs")
    save(tmp_path, "dog2.png", rgb(2), folder="images/dogs")
    (tmp_path / "labels.csv").write_text("file,label\ncats/cat1.png,cat\ndog1.png, dog\n"
                                         "# comment\ndogs/dog2.png\tdog\n")
    create_from_images(tmp_path / "out", tmp_path / "images", labels=tmp_path / "labels.csv",
                       log=quiet)
    dataset = open_dataset(tmp_path / "out")
    assert dataset.info.label_size == 2 and dataset.info.label_names == ("cat", "dog")
    images, labels = next(iter(dataset.pipeline(3, dtype="uint8", shuffle=False)))
    by_pixels = {rgb(i).tobytes(): c for i, c in enumerate([0, 1, 1])}
    for image, label in zip(images.numpy(), labels.numpy()):
        np.testing.assert_array_equal(label, np.eye(2)[by_pixels[image.tobytes()]])


def test_integer_labels_from_json_and_missing_label(tmp_path):
    save(tmp_path, "a.png", rgb(0))
    save(tmp_path, "b.png", rgb(1))
    (tmp_path / "labels.json").write_text(json.dumps({"a.png": 3, "b.png": 0}))
    create_from_images(tmp_path / "out", tmp_path / "images", labels=tmp_path / "labels.json",
                       shuffle=False, log=quiet)
    np.testing.assert_array_equal(open_dataset(tmp_path / "out").labels, np.eye(4)[[3, 0]])
    (tmp_path / "short.csv").write_text("a.png,1\n")
    with pytest.raises(DatasetError, match=r"b\.png: no label in .*short\.csv; add a line "
                                           r"'b\.png,<class>'"):
        create_from_images(tmp_path / "out2", tmp_path / "images", labels=tmp_path / "short.csv",
                           log=quiet)
    (tmp_path / "broken.csv").write_text("a.png,1,extra\n")
    with pytest.raises(DatasetError, match=r"broken\.csv:1: expected 'name,class'"):
        create_from_images(tmp_path / "out2", tmp_path / "images",
                           labels=tmp_path / "broken.csv", log=quiet)


#----------------------------------------------------------------------------
# U-GAT-IT roots.

def test_ugatit_root_missing_trainb(tmp_path):
    save(tmp_path, "a.png", rgb(), folder="root/trainA")
    with pytest.raises(DatasetError, match=r"root/trainB is missing: a U-GAT-IT dataset root "
                                           r"needs trainA/ and trainB/"):
        open_unpaired(tmp_path / "root")


def test_ugatit_root_with_bad_file(tmp_path):
    save(tmp_path, "a.png", rgb(), folder="root/trainA")
    save(tmp_path, "b.png", rgb(1), folder="root/trainB/sub")     # walked recursively
    (tmp_path / "root" / "trainB" / "zero.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"trainB/zero\.jpg: empty file"):
        open_unpaired(tmp_path / "root")
    pair = open_unpaired(tmp_path / "root", skip_bad=True)
    assert pair.info.counts == {"trainA": 1, "trainB": 1, "testA": 0, "testB": 0}
    assert len(pair.info.skipped) == 1 and "zero.jpg: empty file" in pair.info.skipped[0]
    with pytest.raises(DatasetError, match="testA/ is missing or empty"):
        pair.test_pipeline("A", 8)


@pytest.mark.parametrize("stage", ["header", "decode"])
def test_decoder_safety_limits_and_unexpected_decoder_errors_are_one_line(tmp_path, monkeypatch,
                                                                          stage):
    """Pillow's decompression-bomb limit (an image of more than twice MAX_IMAGE_PIXELS) and
    any other exception a decoder plugin raises become the dataset tools' one-line error."""
    path = str(tmp_path / "big.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)   # 4096 pixels > 2 x 1000
    for loader in (load_image, probe_image):
        with pytest.raises(DatasetError) as error:
            loader(path)
        message = str(error.value)
        assert "\n" not in message and "decompression-bomb limit" in message
        assert "big.png" in message and "--skip-bad" in message
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    def broken(self, *args):
        raise struct.error("unpack requires a buffer of 4 bytes")

    if stage == "header":
        monkeypatch.setattr(Image, "open", lambda *args, **kwargs: broken(None))
    else:
        monkeypatch.setattr(Image.Image, "load", broken)
    with pytest.raises(DatasetError) as error:
        load_image(path)
    assert "\n" not in str(error.value) and "unpack requires" in str(error.value)
