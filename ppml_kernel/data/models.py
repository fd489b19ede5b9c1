"""Fitted models at rest, encrypted: Spark MLlib (and xgboost.spark) and scikit-learn.

A model trained on confidential data is confidential too, so it is stored like a
dataset: every file encrypted under a dataset key id, loadable only with that key.

Layout of a saved model directory::

    _ppml_model.ppml        manifest (ppml-aead/1): kind, class, and the SHA-256 of
                            every other file in the directory
    ...                     MLlib's own layout (``model.write().save``): metadata JSON
                            and other text as ``<name>.ppml`` (ppml-aead/1), Parquet data
                            as Parquet Modular Encryption files written by Spark itself
                            (``format="pme"``) or as ``<name>.ppml`` (``format="aead"``)
    model.skops.ppml        scikit-learn: the model in skops format, never pickle

Tamper evidence covers the directory as a whole, not only each file: the manifest is
authenticated (it is ppml-aead), and on load every file must be listed in it with the
same hash, and every listed file must be present. A wrong key, a modified, removed,
added or swapped file fails with a :class:`DatasetError` that names the file.

Spark reads and writes models only through a file system, so MLlib's plaintext files
exist for a moment in a private staging directory (mode 0700) in memory-backed
``/dev/shm`` when there is one (inside an Occlum enclave, the enclave's own encrypted
file system); Parquet data in the ``pme`` format is encrypted by Spark as it is written
and never staged in plaintext. Staging is removed before :func:`save_model` or
:func:`load_model` returns, also on errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ppml_kernel.data.errors import DatasetError
from ppml_kernel.data.format import MAGIC, EncryptedFile, check_key_id, encrypt_stream
from ppml_kernel.data.sniff import PME_MAGIC
from ppml_kernel.keys.provider import KeyProvider
from ppml_kernel.keys.store import default_provider

MANIFEST = "_ppml_model.ppml"
SKOPS_FILE = "model.skops.ppml"
SUFFIX = ".ppml"
FORMATS = ("pme", "aead")
# Classes a manifest may name: the manifest is authenticated, and this list also keeps
# load_model from importing anything but model classes.
_ALLOWED_MODULES = ("pyspark.ml.", "xgboost.spark")
_conf_lock = threading.Lock()


def is_model_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory written by :func:`save_model`."""
    return os.path.isfile(os.path.join(os.fspath(path), MANIFEST))


def _kind(model: Any) -> str:
    if hasattr(model, "write") and hasattr(model, "uid"):
        return "spark"
    if type(model).__module__.split(".")[0] == "sklearn":
        from sklearn.base import BaseEstimator

        if isinstance(model, BaseEstimator):
            return "sklearn"
    raise DatasetError(f"cannot save a {type(model).__name__}: save_model takes a fitted "
                       "Spark ML model or pipeline (MLWritable) or a scikit-learn estimator")


@contextlib.contextmanager
def _staging() -> Iterator[Path]:
    """A private directory for MLlib's plaintext files, in memory where possible."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="ppml-model-", dir=base))  # mode 0700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _encrypt_file(src: Path, dst: Path, provider: KeyProvider, key: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        encrypt_stream(fin, fout, provider, key, source=str(dst))


def _decrypt_bytes(path: Path, provider: KeyProvider) -> bytes:
    with EncryptedFile(path, provider) as ef:
        return b"".join(bytes(v) for v in ef.chunks())


def _encrypt_bytes(data: bytes, dst: Path, provider: KeyProvider, key: str) -> None:
    with open(dst, "wb") as fout:
        encrypt_stream(io.BytesIO(data), fout, provider, key, source=str(dst))


@contextlib.contextmanager
def _pme_writes(spark: Any, key: str) -> Iterator[None]:
    """Every Parquet file Spark writes meanwhile is PME-encrypted under ``key``.

    MLlib's writers take no Parquet options, but Spark copies session settings into the
    Hadoop configuration of every write, where the PME crypto factory reads them.
    """
    from ppml_kernel.keys.pme.names import write_options

    with _conf_lock:
        opts = write_options(key)
        saved = {k: spark.conf.get(k, None) for k in opts}
        try:
            for k, v in opts.items():
                spark.conf.set(k, v)
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    spark.conf.unset(k)
                else:
                    spark.conf.set(k, v)


def _prepare_target(target: Path, overwrite: bool) -> Path:
    if target.exists() and any(target.iterdir()):
        if not overwrite:
            raise DatasetError(f"{target} already exists and is not empty; pass "
                               "overwrite=True (%ppml save --mode overwrite) to replace it")
        if not is_model_dir(target):
            raise DatasetError(f"{target} is not a saved model; refusing to overwrite it")
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _commit(tmp: Path, target: Path) -> None:
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def save_model(model: Any, path: str | os.PathLike[str], key: str, *, format: str = "pme",
               overwrite: bool = False, provider: KeyProvider | None = None) -> None:
    """Save a fitted model encrypted under key id ``key`` (see the module docstring).

    ``format``: ``pme`` (default: MLlib's Parquet data as Parquet Modular Encryption,
    written by Spark) or ``aead`` (every file ppml-aead/1). scikit-learn estimators are
    always one skops file in ppml-aead/1.
    """
    check_key_id(key)
    if format not in FORMATS:
        raise DatasetError(f"unknown model format {format!r}; one of {', '.join(FORMATS)}")
    provider = provider or default_provider()
    if key not in provider.key_ids():
        raise DatasetError(f"no key with key id {key!r} is loaded: send it with %ppml secret "
                           f"{key} (or %ppml keys import KEYFILE in simulation)")
    kind = _kind(model)
    target = Path(os.fspath(path))
    tmp = _prepare_target(target, overwrite)
    try:
        if kind == "sklearn":
            files = {SKOPS_FILE: _save_sklearn(model, tmp / SKOPS_FILE, provider, key)}
            used = "aead"
        else:
            files, used = _save_spark(model, tmp, provider, key, format)
        cls = type(model)
        manifest = {"v": 1, "kind": kind, "class": f"{cls.__module__}.{cls.__qualname__}",
                    "format": used, "files": files}
        _encrypt_bytes(json.dumps(manifest, sort_keys=True).encode(), tmp / MANIFEST,
                       provider, key)
        _commit(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_sklearn(model: Any, dst: Path, provider: KeyProvider, key: str) -> str:
    import skops.io as sio

    _encrypt_bytes(sio.dumps(model), dst, provider, key)
    return _sha256(dst)


def _save_spark(model: Any, out: Path, provider: KeyProvider, key: str, fmt: str
                ) -> tuple[dict[str, str], str]:
    from pyspark.sql import SparkSession

    from ppml_kernel.keys.pme.names import native_pme_enabled

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise DatasetError("no active Spark session to save the model with")
    if fmt == "pme" and not native_pme_enabled(spark):
        fmt = "aead"  # no KMS client jar: encrypt the Parquet files whole instead
    files: dict[str, str] = {}
    with _staging() as stage:
        plain = stage / "model"
        ctx = _pme_writes(spark, key) if fmt == "pme" else contextlib.nullcontext()
        with ctx:
            model.write().save(f"file://{plain}")
        for src in sorted(p for p in plain.rglob("*") if p.is_file()):
            rel = src.relative_to(plain)
            if src.name.endswith(".crc"):
                continue  # Hadoop checksums of the plaintext: not needed, not kept
            with open(src, "rb") as f:
                head = f.read(len(PME_MAGIC))
            if head == PME_MAGIC:
                dst = out / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            else:
                if src.suffix == ".parquet" and fmt == "pme":
                    raise DatasetError(f"{rel}: Spark wrote this Parquet file without "
                                       "encryption; refusing to save the model")
                dst = out / (str(rel) + SUFFIX)
                _encrypt_file(src, dst, provider, key)
            files[str(dst.relative_to(out))] = _sha256(dst)
    return files, fmt


def _read_manifest(root: Path, provider: KeyProvider, key: str | None) -> dict[str, Any]:
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise DatasetError(f"{root} is not an encrypted model (no {MANIFEST}); models are "
                           "saved with save_model or %ppml save")
    from ppml_kernel.data.format import read_header

    kid = read_header(mpath).key_id
    if key is not None and kid != key:
        raise DatasetError(f"{mpath} is encrypted for key id {kid!r}, not {key!r}")
    try:
        manifest = json.loads(_decrypt_bytes(mpath, provider))
    except (ValueError, UnicodeDecodeError):
        raise DatasetError(f"{mpath}: not a model manifest") from None
    if manifest.get("v") != 1 or not isinstance(manifest.get("files"), dict):
        raise DatasetError(f"{mpath}: unsupported model manifest")
    return manifest


def _verify_files(root: Path, manifest: dict[str, Any]) -> None:
    listed: dict[str, str] = manifest["files"]
    present = {str(p.relative_to(root)) for p in root.rglob("*")
               if p.is_file() and p.name != MANIFEST}
    for rel in sorted(present - set(listed)):
        raise DatasetError(f"{root / rel}: this file is not part of the saved model "
                           "(added after it was saved)")
    for rel in sorted(set(listed) - present):
        raise DatasetError(f"{root / rel}: missing (the saved model lists it)")
    for rel, digest in sorted(listed.items()):
        if _sha256(root / rel) != digest:
            raise DatasetError(f"{root / rel}: modified or replaced since the model was "
                               "saved (its hash differs from the model's manifest)")


def _model_class(name: str, source: Path) -> Any:
    module, _, attr = name.rpartition(".")
    if not module.startswith(_ALLOWED_MODULES):
        raise DatasetError(f"{source}: model class {name!r} is not a Spark ML or "
                           "xgboost.spark model")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise DatasetError(f"{source}: model class {name!r} is not available here (is the "
                           "package that defines it installed?)") from None


def load_model(path: str | os.PathLike[str], key: str | None = None, *,
               provider: KeyProvider | None = None,
               trusted: Sequence[str] | None = None) -> Any:
    """Load a model saved by :func:`save_model` after checking every file.

    ``key``: require the model to be encrypted for this key id. ``trusted``: for
    scikit-learn models, type names skops may construct beyond its defaults and
    scikit-learn's own classes (other types are refused; nothing is unpickled).
    """
    root = Path(os.fspath(path))
    provider = provider or default_provider()
    manifest = _read_manifest(root, provider, key)
    _verify_files(root, manifest)
    if manifest["kind"] == "sklearn":
        return _load_sklearn(root / SKOPS_FILE, provider, trusted)
    cls = _model_class(str(manifest["class"]), root / MANIFEST)
    return _load_spark(root, manifest, cls, provider)


def _load_sklearn(path: Path, provider: KeyProvider, trusted: Sequence[str] | None) -> Any:
    import skops.io as sio

    data = _decrypt_bytes(path, provider)
    # skops constructs objects only from types it is told to trust (never unpickles);
    # scikit-learn's own classes are trusted, anything else (functions, other
    # packages) must be named by the caller.
    untrusted = [t for t in sio.get_untrusted_types(data=data)
                 if t not in (trusted or ()) and not t.startswith("sklearn.")]
    if untrusted:
        raise DatasetError(f"{path}: the model needs types that are not trusted: "
                           f"{', '.join(untrusted)} (pass trusted=[...] if you expect them)")
    return sio.loads(data, trusted=sio.get_untrusted_types(data=data))


def _load_spark(root: Path, manifest: dict[str, Any], cls: Any, provider: KeyProvider) -> Any:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    from ppml_kernel.data.parquet import EncryptedParquet
    from ppml_kernel.keys.pme.names import native_pme_enabled

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise DatasetError("no active Spark session to load the model with")
    native = native_pme_enabled(spark)
    with _staging() as stage:
        plain = stage / "model"
        for rel in manifest["files"]:
            src = root / rel
            with open(src, "rb") as f:
                head = f.read(len(MAGIC))
            if head.startswith(PME_MAGIC):
                dst = plain / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if native:
                    shutil.copyfile(src, dst)  # Spark decrypts it through the key broker
                else:
                    import pyarrow.parquet as pq

                    with EncryptedParquet(str(src), provider) as ep:
                        pq.write_table(ep.file.read(), dst)
            else:
                dst = plain / rel.removesuffix(SUFFIX)
                dst.parent.mkdir(parents=True, exist_ok=True)
                with EncryptedFile(src, provider) as ef, open(dst, "wb") as out:
                    for view in ef.chunks():
                        out.write(view)
        try:
            return cls.load(f"file://{plain}")
        # Spark's own errors (the JVM's via py4j, pyspark's) and a bad staged file; they
        # carry a JVM stack: keep the first line
        except (Py4JError, PySparkException, OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise DatasetError(f"{root}: cannot load the model: {first}") from None
