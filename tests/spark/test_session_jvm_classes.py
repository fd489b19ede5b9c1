"""A driver JVM started without the kernel's jar: the session must not name its classes.

Hadoop fails every CSV/text read (plaintext too) when ``io.compression.codecs`` lists a
class it cannot load, and a JVM keeps the class path it started with (a cluster
``connect`` starts one without the jar). Runs in a fresh interpreter: this process's JVM
has the jar.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.spark

SCRIPT = textwrap.dedent("""
    import io, json, sys
    from pathlib import Path
    from ppml_kernel.data import format as F
    from ppml_kernel.data import sparkio
    from ppml_kernel.data.codec import native_csv_enabled
    from ppml_kernel.keys.files import generate_kek
    from ppml_kernel.keys.store import default_provider, default_store
    from ppml_kernel.spark.session import ensure_jvm, get_or_create_session

    root = Path(sys.argv[1])
    default_store().put("k", generate_kek())
    (root / "plain.csv").write_text("a,b\\n1,2\\n3,4\\n")
    with open(root / "t.csv.ppml", "wb") as out:
        F.encrypt_stream(io.BytesIO(b"a,b\\n5,6\\n"), out, default_provider(), "k")
    ensure_jvm()  # as connect() does: no jar on the class path
    spark = get_or_create_session("local[1]", {"spark.ui.enabled": "false"})
    conf = dict(spark.sparkContext.getConf().getAll())
    plain = spark.read.option("header", "true").csv(str(root / "plain.csv")).count()
    enc = sparkio.read(spark, root / "t.csv.ppml", "csv", "a int, b int", header=True)
    print(json.dumps({
        "codecs": conf.get("spark.hadoop.io.compression.codecs"),
        "kms": conf.get("spark.hadoop.parquet.encryption.kms.client.class"),
        "native": native_csv_enabled(spark),
        "plain_rows": plain,
        "enc_rows": [list(r) for r in enc.collect()],
    }))
""")


def test_session_on_a_jvm_without_the_jar_keeps_every_reader_working(tmp_path):
    # its own key broker, not this process's (whose socket the environment names)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPML_KEY_BROKER")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["codecs"] is None and got["kms"] is None
    assert got["native"] is False
    assert got["plain_rows"] == 2
    assert got["enc_rows"] == [[5, 6]]  # the Python path


WARM_UP = textwrap.dedent("""
    import json, time
    from ppml_kernel.spark.session import get_or_create_session

    spark = get_or_create_session("local[1]", {"spark.ui.enabled": "false"})
    warm = spark.sparkContext._jvm.ppml.GcmWarmUp
    deadline = time.monotonic() + 120
    while not warm.done() and time.monotonic() < deadline:
        time.sleep(0.2)
    jvm = spark.sparkContext._jvm
    threads = [t.getName() for t in jvm.java.lang.Thread.getAllStackTraces().keySet()]
    print(json.dumps({"done": warm.done(), "threads": threads}))
""")


def test_a_new_session_warms_aes_gcm_before_any_read(tmp_path):
    """Cold HotSpot decrypts Parquet's byte-array pages at ~60 MB/s for thousands of calls:
    the session starts the JVM's one warm-up (GcmWarmUp.java) itself, before any read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPML_KEY_BROKER")}
    proc = subprocess.run([sys.executable, "-c", WARM_UP], env=env, capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["done"] is True
    assert "ppml-gcm-warm-up" not in got["threads"]  # finished, not left running
