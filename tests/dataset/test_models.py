"""Confidential ML: train on encrypted data, keep fitted models encrypted and tamper-evident.

Spark MLlib pipelines and xgboost.spark train on ``sparkio.read`` DataFrames exactly as on
plaintext ones; ``save_model``/``load_model`` round-trip MLlib and scikit-learn models,
and every way of tampering with a saved model fails naming the file.
"""

from __future__ import annotations

import os
import shutil

import pyarrow as pa
import pytest
from support.conftest_spark import KEY_ID, data_key, spark  # noqa: F401

from ppml_kernel.data import format as F
from ppml_kernel.data import sparkio
from ppml_kernel.data.errors import DatasetError
from ppml_kernel.data.models import MANIFEST, load_model, save_model
from ppml_kernel.data.parquet import write_parquet
from ppml_kernel.data.sample import DDL, FEATURES, LABEL, loans
from ppml_kernel.data.sniff import PME_MAGIC
from ppml_kernel.keys.store import default_provider

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def loan_files(tmp_path_factory, data_key):  # noqa: F811
    """The same 3000 loans as plaintext CSV, ppml-aead CSV and PME Parquet."""
    d = tmp_path_factory.mktemp("loans")
    pdf = loans(3000)
    plain = d / "loans.csv"
    pdf.to_csv(plain, index=False)
    enc_csv = d / "loans.csv.ppml"
    with open(plain, "rb") as src, open(enc_csv, "wb") as dst:
        F.encrypt_stream(src, dst, default_provider(), KEY_ID)
    enc_pq = d / "pq"
    enc_pq.mkdir()
    write_parquet(pa.Table.from_pandas(pdf, preserve_index=False), str(enc_pq / "p.parquet"),
                  default_provider(), KEY_ID)
    return {"plain": plain, "csv": enc_csv, "parquet": enc_pq, "pdf": pdf}


@pytest.fixture(scope="module")
def frames(spark, loan_files):  # noqa: F811
    plain = spark.read.schema(DDL).option("header", "true").csv(str(loan_files["plain"]))
    enc = sparkio.read(spark, loan_files["csv"], "csv", DDL, header=True)
    return plain, enc


def _pipeline(estimator):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler

    return Pipeline(stages=[VectorAssembler(inputCols=FEATURES, outputCol="features"),
                            estimator])


@pytest.fixture(scope="module")
def lr_model(frames):
    from pyspark.ml.classification import LogisticRegression

    return _pipeline(LogisticRegression(labelCol=LABEL, maxIter=30)).fit(frames[1])


def _predictions(model, df) -> list[float]:
    return [r[0] for r in model.transform(df).select("prediction").collect()]


def test_logistic_regression_on_encrypted_data_matches_plaintext(frames, lr_model):
    from pyspark.ml.classification import LogisticRegression

    plain, _ = frames
    on_plain = _pipeline(LogisticRegression(labelCol=LABEL, maxIter=30)).fit(plain)
    a = on_plain.stages[-1].coefficients.toArray()
    b = lr_model.stages[-1].coefficients.toArray()
    assert max(abs(a - b)) < 1e-6, (a, b)
    # The model found the signal (the label depends on debt ratio and late payments).
    assert b[FEATURES.index("debt_ratio")] > 1 and b[FEATURES.index("late_payments")] > 0.3


def test_gbt_on_encrypted_parquet_matches_plaintext(spark, frames, loan_files):  # noqa: F811
    from pyspark.ml.classification import GBTClassifier

    plain, _ = frames
    enc_pq = sparkio.read(spark, loan_files["parquet"], "parquet")
    est = GBTClassifier(labelCol=LABEL, maxIter=5, maxDepth=3, seed=11)
    m_plain = _pipeline(est).fit(plain)
    m_enc = _pipeline(est.copy()).fit(enc_pq)
    assert _predictions(m_plain, plain) == _predictions(m_enc, plain)
    assert m_enc.stages[-1].getNumTrees == 5


def test_xgboost_spark_trains_on_encrypted_data(frames):
    from xgboost.spark import SparkXGBClassifier

    plain, enc = frames
    est = SparkXGBClassifier(features_col=FEATURES, label_col=LABEL, num_workers=1,
                             n_estimators=10, max_depth=3, random_state=3)
    m_plain, m_enc = est.fit(plain), est.copy().fit(enc)
    assert _predictions(m_plain, plain) == _predictions(m_enc, plain)
    acc = sum(p == y for p, y in zip(_predictions(m_enc, plain),
                                     [r[0] for r in plain.select(LABEL).collect()],
                                     strict=True)) / 3000
    assert acc > 0.75  # a third are positive: better than always guessing "no"


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("fmt", ["pme", "aead"])
def test_spark_model_round_trip_all_files_encrypted(fmt, lr_model, frames, tmp_path, data_key):  # noqa: F811
    target = tmp_path / "lr"
    save_model(lr_model, target, KEY_ID, format=fmt)
    session = frames[0].sparkSession
    # The PME write settings were for the model only: later Parquet writes are unchanged.
    assert session.conf.get("parquet.encryption.uniform.key", None) is None
    for f in _files(target):
        head = f.read_bytes()[:16]
        assert head == F.MAGIC or head[:4] == PME_MAGIC, f"{f} is not encrypted"
        assert b"LogisticRegression" not in f.read_bytes(), f"{f} leaks the metadata"
    kinds = {f.read_bytes()[:4] == PME_MAGIC for f in _files(target)}
    assert kinds == ({True, False} if fmt == "pme" else {False})
    back = load_model(target, KEY_ID)
    assert type(back).__name__ == "PipelineModel"
    assert _predictions(back, frames[0]) == _predictions(lr_model, frames[0])
    with pytest.raises(DatasetError, match="already exists"):
        save_model(lr_model, target, KEY_ID, format=fmt)
    save_model(lr_model, target, KEY_ID, format=fmt, overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dirs left"


@pytest.fixture(scope="module")
def saved(lr_model, tmp_path_factory, data_key):  # noqa: F811
    """A pristine saved model (PME) that each tamper test copies."""
    root = tmp_path_factory.mktemp("saved") / "lr"
    save_model(lr_model, root, KEY_ID)
    return root


@pytest.fixture
def copy(saved, tmp_path):
    dst = tmp_path / "lr"
    shutil.copytree(saved, dst)
    return dst


def _flip(path, offset=-20):
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


def _metadata_file(root):
    return next(f for f in _files(root) if f.name.startswith("part-") and
                f.name.endswith(".txt.ppml") and "stages" in str(f))


def _pme_file(root):
    return next(f for f in _files(root) if f.read_bytes()[:4] == PME_MAGIC)


def test_modified_metadata_names_the_file(copy, spark):  # noqa: F811
    f = _metadata_file(copy)
    _flip(f)
    with pytest.raises(DatasetError, match=f"{f}: modified or replaced"):
        load_model(copy, KEY_ID)


def test_modified_pme_data_names_the_file(copy, spark):  # noqa: F811
    f = _pme_file(copy)
    _flip(f, 100)
    with pytest.raises(DatasetError, match=f"{f}: modified or replaced"):
        load_model(copy, KEY_ID)


def test_removed_added_and_swapped_files_name_the_file(copy, saved, lr_model, tmp_path,
                                                       spark):  # noqa: F811
    f = _metadata_file(copy)
    f.unlink()
    with pytest.raises(DatasetError, match=f"{f}: missing"):
        load_model(copy, KEY_ID)
    shutil.copyfile(_metadata_file(saved), f)
    extra = copy / "stages" / "extra.ppml"
    extra.write_bytes(b"x")
    with pytest.raises(DatasetError, match=f"{extra}: this file is not part of the saved"):
        load_model(copy, KEY_ID)
    extra.unlink()
    load_model(copy, KEY_ID)  # restored: loads again
    # A file of another save of the same model (same names, authentic ciphertext, same key):
    other = tmp_path / "other"
    save_model(lr_model, other, KEY_ID, format="aead")
    mine = sorted(str(p.relative_to(copy)) for p in _files(copy))
    theirs = {str(p.relative_to(other)): p for p in _files(other)}
    for rel in mine:  # _SUCCESS markers have the same name in both saves
        if rel in theirs and rel != MANIFEST:
            shutil.copyfile(theirs[rel], copy / rel)
            with pytest.raises(DatasetError, match=f"{copy / rel}: modified or replaced"):
                load_model(copy, KEY_ID)
            break
    else:
        pytest.fail("no file name in common between two saves")


def test_manifest_tamper_wrong_key_and_missing_key(copy, spark, monkeypatch):  # noqa: F811
    from ppml_kernel.keys.files import generate_kek
    from ppml_kernel.keys.store import default_store

    manifest = copy / MANIFEST
    with pytest.raises(DatasetError, match=f"{manifest} is encrypted for key id 'test-key', "
                                           "not 'other'"):
        load_model(copy, "other")
    store = default_store()
    good = store.get(KEY_ID)
    try:
        store.put(KEY_ID, generate_kek())
        with pytest.raises(DatasetError, match=f"{manifest}.*wrong key"):
            load_model(copy, KEY_ID)
    finally:
        store.put(KEY_ID, good)
    _flip(manifest)
    with pytest.raises(DatasetError, match=f"{manifest}.*chunk 0 failed authentication"):
        load_model(copy)
    with pytest.raises(DatasetError, match="not an encrypted model"):
        load_model(copy / "stages")


def test_sklearn_model_round_trip_and_tamper(loan_files, tmp_path, data_key):  # noqa: F811
    from sklearn.ensemble import HistGradientBoostingClassifier

    pdf = sparkio_free_pandas(loan_files)
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(
        pdf[FEATURES], pdf[LABEL])
    target = tmp_path / "hgb"
    save_model(model, target, KEY_ID)
    assert [p.name for p in _files(target)] == [MANIFEST, "model.skops.ppml"]
    back = load_model(target, KEY_ID)
    assert (back.predict(pdf[FEATURES]) == model.predict(pdf[FEATURES])).all()
    _flip(target / "model.skops.ppml")
    with pytest.raises(DatasetError, match=r"model\.skops\.ppml: modified or replaced"):
        load_model(target, KEY_ID)


def sparkio_free_pandas(loan_files):
    """The small-data path: decrypt straight into pandas, no Spark."""
    from ppml_kernel.data import read_pandas

    pdf = read_pandas(loan_files["csv"], header=True)
    assert len(pdf) == 3000
    return pdf


def test_sklearn_untrusted_types_are_refused(tmp_path, data_key):  # noqa: F811
    from sklearn.preprocessing import FunctionTransformer

    target = tmp_path / "ft"
    save_model(FunctionTransformer(func=os.getcwd), target, KEY_ID)
    with pytest.raises(DatasetError, match=r"not trusted: .*getcwd"):
        load_model(target, KEY_ID)


def test_magics_save_and_load_models(lr_model, frames, tmp_path, monkeypatch, spark):  # noqa: F811
    from ppml_kernel.magics import ppml as dispatcher
    from ppml_kernel.magics.registry import MagicError

    monkeypatch.setattr(dispatcher, "SUBCOMMAND_MODULES",
                        (*dispatcher.SUBCOMMAND_MODULES, "ppml_kernel.magics.data"))

    class Shell:
        def __init__(self) -> None:
            self.user_ns: dict = {"model": lr_model}

    shell = Shell()
    out = tmp_path / "m"
    summary = dispatcher.run(f"save model {out} --key {KEY_ID}", None, shell)
    assert "Saved model model" in repr(summary) and "PipelineModel" in repr(summary)
    with pytest.raises(MagicError, match="already exists"):
        dispatcher.run(f"save model {out} --key {KEY_ID}", None, shell)
    summary = dispatcher.run(f"load {out} --as reloaded", None, shell)
    assert "LogisticRegressionModel" in repr(summary)
    assert _predictions(shell.user_ns["reloaded"], frames[0]) == _predictions(lr_model,
                                                                              frames[0])
    _flip(_metadata_file(out))
    with pytest.raises(MagicError, match="modified or replaced"):
        dispatcher.run(f"load {out} --as broken", None, shell)


def test_no_staging_left_behind():
    leftovers = [n for n in os.listdir("/dev/shm") if n.startswith("ppml-model-")] \
        if os.path.isdir("/dev/shm") else []
    assert not leftovers
