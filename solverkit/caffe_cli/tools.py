"""Caffe's data and upgrade tools under Caffe's names and arguments (gflags syntax).

- ``convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME`` — images to an LMDB of Datum
  records, keys ``%08d_<path>``;
- ``compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]`` — the mean image as a BlobProto;
- ``convert_mnist_data [FLAGS] IMAGES LABELS DB`` — MNIST's IDX files to an LMDB, keys
  ``%08d``, Datum 1 x rows x cols;
- ``convert_cifar_data INPUT_FOLDER OUTPUT_FOLDER DB_TYPE`` — CIFAR-10's binary batches to
  ``cifar10_train_<DB_TYPE>`` and ``cifar10_test_<DB_TYPE>``, keys ``%05d``, Datum
  3 x 32 x 32 in the file's R, G, B plane order;
- ``extract_features WEIGHTS MODEL BLOBS DBS NUM_BATCHES [DB_TYPE] [CPU|GPU] [DEVICE]`` —
  blobs of a TEST-phase forward, one Datum of ``float_data`` per sample, keys ``%010d``;
- ``upgrade_net_proto_text IN OUT``, ``upgrade_net_proto_binary IN OUT``,
  ``upgrade_solver_proto_text IN OUT`` — old Caffe files in today's form.

Databases are LMDB (``--backend=leveldb`` is refused, naming LMDB), written to a temporary
folder and renamed when complete; no tool replaces an existing database or file.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..caffe.export import net_to_prototxt
from ..caffe.messages import DATUM, decode_datum
from ..caffe.prototxt import solver_text_source
from ..caffe.weights import NET, encode_caffemodel, natural_shape, read_caffemodel
from ..data.lmdb_source import open_environment
from ..data.sources import load_source, read_idx_file
from ..errors import ConfigError, DataError
from ..files import write_atomic
from ..net import Net
from ..protobuf import decode, encode
from ..spec.net import load_net_spec
from ..caffe.imageset import compute_image_mean, convert_imageset, write_lmdb
from . import run_tool
from .flags import Flag, FlagError, parse_flags, usage_text
from .log import install_glog

logger = logging.getLogger("solverkit.caffe")

CIFAR_TRAIN_BATCHES = 5


def _backend(value: str, field: str = "--backend") -> None:
    if value == "leveldb":
        raise DataError("LevelDB is not available in this build: use LMDB (--backend=lmdb); "
                        "solverkit's Data layer reads LMDB with backend: LMDB", field=field)
    if value != "lmdb":
        raise DataError(f"unknown database backend '{value}' (use lmdb)", field=field)


def _parse(argv, flags, message, source, count: tuple[int, int]):
    """Flags and positional arguments; a wrong count prints the usage and exits 1."""
    text = usage_text(Path(sys.argv[0]).name if sys.argv else source, message, flags, source)
    values, positional = parse_flags(argv, flags, usage=text, version="solverkit caffe tools")
    if not count[0] <= len(positional) <= count[1]:
        raise FlagError(text)
    install_glog()
    return values, positional


def _refuse_existing(path: Path, field: str) -> None:
    if path.exists():
        raise DataError(f"'{path}' already exists; remove it or choose another name",
                        field=field)


# ---------------------------------------------------------------- convert_imageset
IMAGESET_FLAGS = [
    Flag("gray", "bool", False, "When this option is on, treat images as grayscale ones"),
    Flag("shuffle", "bool", False, "Randomly shuffle the order of images and their labels"),
    Flag("backend", "string", "lmdb", "The backend {lmdb, leveldb} for storing the result"),
    Flag("resize_width", "int32", 0, "Width images are resized to"),
    Flag("resize_height", "int32", 0, "Height images are resized to"),
    Flag("check_size", "bool", False, "When this option is on, check that all the datum "
         "have the same size"),
    Flag("encoded", "bool", False, "When this option is on, the encoded image will be save "
         "in datum"),
    Flag("encode_type", "string", "", "Optional: What type should we encode the image as "
         "('png','jpg',...)."),
]
IMAGESET_MESSAGE = ("Convert a set of images to the leveldb/lmdb\nformat used as input for "
                    "Caffe.\nUsage:\n    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE "
                    "DB_NAME\nThe ImageNet dataset for the training demo is at\n"
                    "    http://www.image-net.org/download-images\n")


def _check_sizes(db: Path) -> None:
    """``--check_size``: every raw record has the first one's channels, height and width."""
    env = open_environment(db)
    try:
        first = None
        with env.begin() as txn:
            for key, value in txn.cursor():
                datum = decode_datum(value, file=str(db))
                size = (datum.channels, datum.height, datum.width)
                first = first or size
                if size != first:
                    raise DataError(f"record {key.decode(errors='replace')} is "
                                    f"{'x'.join(map(str, size))}, the first is "
                                    f"{'x'.join(map(str, first))} (--check_size)",
                                    field="LISTFILE")
    finally:
        env.close()


def _convert_imageset(argv) -> int:
    flags, (root, list_file, db) = _parse(argv, IMAGESET_FLAGS, IMAGESET_MESSAGE,
                                          "tools/convert_imageset.cpp", (3, 3))
    _backend(flags.backend)
    count = convert_imageset(root, list_file, db, resize_height=flags.resize_height,
                             resize_width=flags.resize_width, gray=flags.gray,
                             shuffle=flags.shuffle, encoded=flags.encoded,
                             encode_type=flags.encode_type, progress=False)
    if flags.check_size and not flags.encoded:
        try:
            _check_sizes(Path(db))
        except DataError:
            shutil.rmtree(db, ignore_errors=True)
            raise
    logger.info("Processed %d files.", count)
    return 0


# ---------------------------------------------------------------- compute_image_mean
MEAN_FLAGS = [Flag("backend", "string", "lmdb", "The backend {leveldb, lmdb} containing the "
                   "images")]
MEAN_MESSAGE = ("Compute the mean_image of a set of images given by a leveldb/lmdb\nUsage:\n"
                "    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]\n")


def _compute_image_mean(argv) -> int:
    flags, positional = _parse(argv, MEAN_FLAGS, MEAN_MESSAGE, "tools/compute_image_mean.cpp",
                               (1, 2))
    _backend(flags.backend)
    source = Path(positional[0])
    if not (source / "data.mdb").is_file():
        raise DataError(f"'{source}' is not an LMDB database (it has no data.mdb)",
                        field="INPUT_DB")
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(positional[1]) if len(positional) == 2 else Path(scratch) / "mean"
        if output.is_file():        # Caffe's scripts write the mean again on every run
            logger.warning("%s exists: replacing it with the new mean", output)
        mean = compute_image_mean(source, output, force=True, progress=False)
    if len(positional) == 2:
        logger.info("Write to %s", positional[1])
    for channel, value in enumerate(mean.mean(axis=(1, 2))):
        logger.info("mean_value channel [%d]: %g", channel, value)
    return 0


# ---------------------------------------------------------------- convert_mnist_data
MNIST_FLAGS = [Flag("backend", "string", "lmdb", "The backend {lmdb, leveldb} for storing "
                    "the result")]
MNIST_MESSAGE = ("This script converts the MNIST dataset to\nthe lmdb/leveldb format used by "
                 "Caffe to load data.\nUsage:\n    convert_mnist_data [FLAGS] input_image_file "
                 "input_label_file output_db_file\n")


def datum_prefix(channels: int, height: int, width: int, size: int) -> bytes:
    """A Datum's bytes up to its pixels: channels, height, width and the ``data`` key and
    length (each record of one shape shares them; the label follows the pixels)."""
    head = encode({"channels": channels, "height": height, "width": width}, DATUM)
    key_and_length = encode({"data": b"\0" * size}, DATUM)[:-size]
    return head + key_and_length


def pixel_records(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """Caffe's Datum of each uint8 ``(C, H, W)`` image with its label, as protobuf
    serialises one with every field set (channels, height, width, data, label)."""
    channels, height, width = images.shape[1:]
    prefix = datum_prefix(channels, height, width, channels * height * width)
    label_fields = {int(label): encode({"label": int(label)}, DATUM)
                    for label in np.unique(labels)}
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return [prefix + row.tobytes() + label_fields[int(label)]
            for row, label in zip(flat, labels)]


def _convert_mnist_data(argv) -> int:
    flags, (images_path, labels_path, db) = _parse(argv, MNIST_FLAGS, MNIST_MESSAGE,
                                                   "examples/mnist/convert_mnist_data.cpp",
                                                   (3, 3))
    _backend(flags.backend)
    _refuse_existing(Path(db), "output_db_file")
    images = read_idx_file(Path(images_path), "input_image_file")
    labels = read_idx_file(Path(labels_path), "input_label_file")
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"'{images_path}' is not an IDX images file (uint8 N x rows x cols)",
                        field="input_image_file")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"'{labels_path}' is not an IDX labels file (uint8 N)",
                        field="input_label_file")
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels",
                        field="input_label_file")
    logger.info("A total of %d items.", len(images))
    logger.info("Rows: %d Cols: %d", images.shape[1], images.shape[2])
    records = pixel_records(images[:, None], labels)
    write_lmdb(Path(db), ((f"{i:08d}".encode(), value) for i, value in enumerate(records)))
    logger.info("Processed %d files.", len(records))
    return 0


# ---------------------------------------------------------------- convert_cifar_data
CIFAR_MESSAGE = ("This script converts the CIFAR dataset to the leveldb format used\n"
                 "by caffe to perform classification.\nUsage:\n"
                 "    convert_cifar_data input_folder output_folder db_type\n"
                 "Where the input folder should contain the binary batch files.\n")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"'{path}' not found (the input folder holds data_batch_1.bin … "
                        f"data_batch_{CIFAR_TRAIN_BATCHES}.bin and test_batch.bin)",
                        field="input_folder")
    batch = load_source(path, format="cifar10", stream=False)
    return batch.data, batch.labels


def _convert_cifar_data(argv) -> int:
    _, (folder, output, db_type) = _parse(argv, [], CIFAR_MESSAGE,
                                          "examples/cifar10/convert_cifar_data.cpp", (3, 3))
    _backend(db_type, "db_type")
    folder, output = Path(folder), Path(output)
    train_db = output / f"cifar10_train_{db_type}"
    test_db = output / f"cifar10_test_{db_type}"
    for db in (train_db, test_db):
        _refuse_existing(db, "output_folder")
    logger.info("Writing Training data")
    parts = []
    for batch in range(1, CIFAR_TRAIN_BATCHES + 1):
        logger.info("Training Batch %d", batch)
        parts.append(_cifar_batch(folder / f"data_batch_{batch}.bin"))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    write_lmdb(train_db, ((f"{i:05d}".encode(), value)
                          for i, value in enumerate(pixel_records(images, labels))))
    logger.info("Writing Testing data")
    images, labels = _cifar_batch(folder / "test_batch.bin")
    write_lmdb(test_db, ((f"{i:05d}".encode(), value)
                         for i, value in enumerate(pixel_records(images, labels))))
    return 0


# ---------------------------------------------------------------- extract_features
EXTRACT_MESSAGE = (
    "This program takes in a trained network and an input data layer, and then extract "
    "features of the input data produced by the net.\nUsage: extract_features  "
    "pretrained_net_param  feature_extraction_proto_file  extract_feature_blob_name1[,name2,"
    "...]  save_feature_dataset_name1[,name2,...]  num_mini_batches  db_type  [CPU/GPU] "
    "[DEVICE_ID=0]\nNote: you can extract multiple features in one pass by specifying "
    "multiple feature blob names and dataset names separated by ','. The names cannot "
    "contain white space characters and the number of blobs and datasets must be equal.")


def feature_records(blob: np.ndarray) -> list[bytes]:
    """One Datum per sample of ``blob`` (N, ...): channels, height and width as Caffe's
    legacy axes 1–3 (1 where the blob has fewer), the values as ``float_data``."""
    shape = blob.shape + (1,) * max(0, 4 - blob.ndim)
    head = encode({"channels": shape[1], "height": shape[2], "width": shape[3]}, DATUM)
    flat = np.ascontiguousarray(blob, dtype=np.float32).reshape(len(blob), -1)
    return [head + encode({"float_data": row}, DATUM) for row in flat]


def _extract_features(argv) -> int:
    _, positional = _parse(argv, [], EXTRACT_MESSAGE, "tools/extract_features.cpp", (5, 8))
    weights, model, blob_names, db_names, batches = positional[:5]
    db_type = positional[5] if len(positional) > 5 else "lmdb"
    _backend(db_type, "db_type")
    if len(positional) > 6 and positional[6] == "GPU":
        logger.warning("GPU asked for: this build has no GPU code; running on the CPU")
    logger.info("Using CPU")
    blobs, dbs = blob_names.split(","), [Path(name) for name in db_names.split(",")]
    if len(blobs) != len(dbs):
        raise DataError(f"{len(blobs)} blob names but {len(dbs)} dataset names: the number "
                        f"of blob names and dataset names must be equal",
                        field="save_feature_dataset_name")
    try:
        count = int(batches)
    except ValueError:
        raise DataError(f"num_mini_batches must be a whole number, got '{batches}'",
                        field="num_mini_batches") from None
    if count < 1:
        raise DataError(f"num_mini_batches must be at least 1, got {count}",
                        field="num_mini_batches")
    for db in dbs:
        _refuse_existing(db, "save_feature_dataset_name")
    net = Net(model, phase="TEST", seed=0)
    try:
        net.load(weights, allow_missing=True)
        for name in blobs:
            if name not in net.blobs:
                raise ConfigError(f"Unknown feature blob name {name} in the network {model}",
                                  file=model, field="extract_feature_blob_name")
        records: dict[str, list[bytes]] = {name: [] for name in blobs}
        logger.info("Extracting Features")
        for _ in range(count):
            net.forward()
            for name in blobs:
                records[name] += feature_records(net.blobs[name].data)
    finally:
        net.close()
    for name, db in zip(blobs, dbs):
        logger.info("Opening dataset %s", db)
        write_lmdb(db, ((f"{i:010d}".encode(), value)
                        for i, value in enumerate(records[name])))
        logger.info("Extracted features of %d query images for feature blob %s",
                    len(records[name]), name)
    logger.info("Successfully extracted the features!")
    return 0


# ---------------------------------------------------------------- upgrades
def _write_new(path: Path, data: bytes | str, field: str) -> None:
    _refuse_existing(path, field)
    write_atomic(path, data, operation="write the upgraded file")


def _upgrade_net_text(argv) -> int:
    _, (source, target) = _parse(argv, [], "Usage: upgrade_net_proto_text "
                                 "v0_net_proto_file_in net_proto_file_out",
                                 "tools/upgrade_net_proto_text.cpp", (2, 2))
    spec = load_net_spec(source)
    _write_new(Path(target), net_to_prototxt(spec), "net_proto_file_out")
    logger.info("Wrote upgraded NetParameter text proto to %s", target)
    return 0


def _upgrade_net_binary(argv) -> int:
    _, (source, target) = _parse(argv, [], "Usage: upgrade_net_proto_binary "
                                 "v0_net_proto_file_in net_proto_file_out",
                                 "tools/upgrade_net_proto_binary.cpp", (2, 2))
    layers = read_caffemodel(source)
    message = decode(Path(source).read_bytes(), NET, file=source)
    wiring = {entry.get("name", ""): (entry.get("bottom", []), entry.get("top", []))
              for entry in [*message.get("layer", []), *message.get("layers", [])]}
    upgraded = [(layer.name, layer.type, *wiring.get(layer.name, ([], [])),
                 [blob.reshape(natural_shape(layer, j)) for j, blob in enumerate(layer.blobs)])
                for layer in layers]
    _write_new(Path(target), encode_caffemodel(message.get("name", ""), upgraded),
               "net_proto_file_out")
    logger.info("Wrote upgraded NetParameter binary proto to %s", target)
    return 0


def solver_text(raw: dict) -> str:
    """A solver mapping (Caffe's field names) as Caffe's text format."""
    lines = []

    def scalar(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if value in ("BINARYPROTO", "HDF5", "CPU", "GPU"):
            return value
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    for key, value in raw.items():
        if key in ("net_param", "train_net_param", "test_net_param"):
            nets = value if isinstance(value, list) else [value]
            for net in nets:
                body = net_to_prototxt(load_net_spec(net)).rstrip("\n")
                lines.append(f"{key} {{")
                lines += [f"  {line}" for line in body.split("\n")]
                lines.append("}")
        elif key in ("train_state", "test_state"):
            for state in value if isinstance(value, list) else [value]:
                lines.append(f"{key} {{")
                for name, item in state.items():
                    for one in item if isinstance(item, list) else [item]:
                        lines.append(f"  {name}: {scalar(one)}")
                lines.append("}")
        else:
            for one in value if isinstance(value, list) else [value]:
                lines.append(f"{key}: {scalar(one)}")
    return "\n".join(lines) + "\n"


def _upgrade_solver_text(argv) -> int:
    _, (source, target) = _parse(argv, [], "Usage: upgrade_solver_proto_text "
                                 "solver_proto_file_in solver_proto_file_out",
                                 "tools/upgrade_solver_proto_text.cpp", (2, 2))
    raw = dict(solver_text_source(source).raw)
    _write_new(Path(target), solver_text(raw), "solver_proto_file_out")
    logger.info("Wrote upgraded SolverParameter text proto to %s", target)
    return 0


# ---------------------------------------------------------------- entry points
def _entry(program: str, body):
    def main(argv: list[str] | None = None) -> int:
        return run_tool(program, body, argv)
    main.__name__ = f"{program}_main"
    return main


convert_imageset_main = _entry("convert_imageset", _convert_imageset)
compute_image_mean_main = _entry("compute_image_mean", _compute_image_mean)
convert_mnist_data_main = _entry("convert_mnist_data", _convert_mnist_data)
convert_cifar_data_main = _entry("convert_cifar_data", _convert_cifar_data)
extract_features_main = _entry("extract_features", _extract_features)
upgrade_net_proto_text_main = _entry("upgrade_net_proto_text", _upgrade_net_text)
upgrade_net_proto_binary_main = _entry("upgrade_net_proto_binary", _upgrade_net_binary)
upgrade_solver_proto_text_main = _entry("upgrade_solver_proto_text", _upgrade_solver_text)
