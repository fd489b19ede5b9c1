"""Occlum.json generation, sizing, reference values, the enclave launcher, and the CLI.

Occlum.json is checked against what Occlum itself parses: the ``OcclumConfiguration``
structs and ``parse_memory_size`` of ``tools/gen_internal_conf/src/main.rs`` (what
``occlum build`` runs) and the field list of ``etc/template/Occlum.json``, both at
occlum/occlum commit 690d5dbf34f3b08e4b5e48e16ce16231550e78c4 (v0.31.0 + fixes). The
rules are restated here, not copied.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ppml_kernel.cli import occlum as cli
from ppml_kernel.occlum import reference, spark_conf
from ppml_kernel.occlum.config import (
    ENTRY_POINT,
    HostMount,
    OcclumConfig,
    OcclumConfigError,
    connection_mount_of,
    write_occlum_json,
)
from ppml_kernel.occlum.launcher import LaunchError, connection_file
from ppml_kernel.occlum.sizes import GiB, MiB, format_size, parse_size
from ppml_kernel.occlum.sizing import plan

ROOT = Path(__file__).resolve().parents[2]
MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"

# -- Occlum's own rules, restated ------------------------------------------------------


def occlum_parse_memory_size(text: str) -> int:
    """gen_internal_conf's parse_memory_size: trim; the first of KB, MB, GB, TB, B that
    the string ends with is the unit; the rest, trimmed, must parse as an unsigned int."""
    units = [("KB", 1024), ("MB", 1024**2), ("GB", 1024**3), ("TB", 1024**4), ("B", 1)]
    text = text.strip()
    for unit, factor in units:
        if text.endswith(unit):
            number = text[: -len(unit)].strip()
            if not number.isdigit():
                raise ValueError(f"No number in {text!r}")
            return int(number) * factor
    raise ValueError(f"No unit in {text!r}")


SIZE = "size"
# OcclumConfiguration: (type, required) per field; nested dicts are sub-structs.
OCCLUM_SCHEMA: dict[str, object] = {
    "resource_limits": {
        "init_num_of_threads": (int, False),
        "max_num_of_threads": (int, True),
        "kernel_space_heap_size": (SIZE, True),
        "kernel_space_heap_max_size": (SIZE, False),
        "kernel_space_stack_size": (SIZE, True),
        "user_space_size": (SIZE, True),
        "user_space_max_size": (SIZE, False),
    },
    "process": {
        "default_stack_size": (SIZE, True),
        "default_heap_size": (SIZE, True),
        "default_mmap_size": (SIZE, True),
    },
    "entry_points": (list, True),
    "env": (dict, True),
    "metadata": {
        "product_id": (int, True),
        "version_number": (int, True),
        "debuggable": (bool, True),
        "disable_log": (bool, False),
        "enable_kss": (bool, True),
        "family_id": ({"high": (str, True), "low": (str, True)}, True),
        "ext_prod_id": ({"high": (str, True), "low": (str, True)}, True),
    },
    "feature": {
        "amx": (int, False),
        "pkru": (int, False),
        "io_uring": (int, False),
        "enable_edmm": (bool, False),
        "enable_posix_shm": (bool, False),
    },
    "mount": (list, True),
}
# Every field of etc/template/Occlum.json (Occlum's documented template).
TEMPLATE_FIELDS = {
    "resource_limits": {
        "kernel_space_heap_size",
        "kernel_space_stack_size",
        "user_space_size",
        "max_num_of_threads",
    },
    "process": {"default_stack_size", "default_heap_size", "default_mmap_size"},
    "metadata": {
        "product_id",
        "version_number",
        "debuggable",
        "enable_kss",
        "family_id",
        "ext_prod_id",
    },
    "feature": {"amx", "pkru", "io_uring", "enable_edmm", "enable_posix_shm"},
}
OCCLUM_MOUNT_TYPES = {"sefs", "hostfs", "ramfs", "unionfs", "devfs", "procfs"}


def check_against_schema(doc: dict, schema: dict, where: str = "") -> None:
    for key, spec in schema.items():
        path = f"{where}.{key}" if where else key
        if isinstance(spec, dict):
            assert isinstance(doc.get(key), dict), f"{path} must be an object"
            check_against_schema(doc[key], spec, path)
            continue
        kind, required = spec
        if key not in doc:
            assert not required, f"{path} is required by gen_internal_conf"
            continue
        value = doc[key]
        if isinstance(kind, dict):
            check_against_schema(value, kind, path)
        elif kind == SIZE:
            assert isinstance(value, str), f"{path} must be a size string"
            occlum_parse_memory_size(value)
        elif kind is int:
            assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, path
        else:
            assert isinstance(value, kind), f"{path} must be {kind.__name__}"


def check_occlum_json(doc: dict) -> None:
    """Everything ``occlum build`` and the LibOS check before an enclave starts."""
    check_against_schema(doc, OCCLUM_SCHEMA)
    r = doc["resource_limits"]
    if "init_num_of_threads" in r:
        assert r["init_num_of_threads"] <= r["max_num_of_threads"]
    for init, top in (
        ("user_space_size", "user_space_max_size"),
        ("kernel_space_heap_size", "kernel_space_heap_max_size"),
    ):
        if top in r:
            assert occlum_parse_memory_size(r[init]) <= occlum_parse_memory_size(r[top])
    for entry in doc["env"]["default"]:
        assert "=" in entry
    for mount in doc["mount"]:
        assert mount["type"] in OCCLUM_MOUNT_TYPES
        assert mount["target"].startswith("/")  # LibOS: "Target must be an absolute path"
    # gen_app_config: a root unionfs whose layers include an image SEFS with a MAC.
    root = [m for m in doc["mount"] if m["target"] == "/" and m["type"] == "unionfs"]
    assert len(root) == 1, "the root UnionFS is not valid"
    layers = root[0]["options"]["layers"]
    assert any(layer["type"] == "sefs" and "MAC" in layer.get("options", {}) for layer in layers), (
        "the image SEFS in layers is not valid"
    )


# -- sizes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4GB", 4 * GiB),
        ("512MB", 512 * MiB),
        ("4g", 4 * GiB),
        ("1536MiB", 1536 * MiB),
        ("64KB", 65536),
        ("100", 100),
        (" 2 GB ", 2 * GiB),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["4.5GB", "4XB", "GB", "-1GB", ""])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|unit"):
        parse_size(text)


@pytest.mark.parametrize("size", [1, 1023, 1024, 1536 * MiB, 4 * GiB, 3 * 1024**4, 5888 * MiB])
def test_format_size_is_what_occlum_parses(size: int) -> None:
    text = format_size(size)
    assert occlum_parse_memory_size(text) == size
    assert parse_size(text) == size


# -- Occlum.json -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        OcclumConfig(),
        OcclumConfig(resources=plan(8 * GiB, 8, edmm=True), enable_edmm=True),
        OcclumConfig(
            product_id=7,
            version_number=3,
            disable_log=False,
            extra_hostfs=(HostMount("/data", "/srv/ciphertext"),),
            env_untrusted=("OMP_NUM_THREADS",),
        ),
    ],
    ids=["default", "edmm", "extras"],
)
def test_generated_occlum_json_passes_occlums_checks(config: OcclumConfig) -> None:
    doc = json.loads(config.render())
    check_occlum_json(doc)
    for section, fields in TEMPLATE_FIELDS.items():
        assert fields <= set(doc[section]), f"{section} lacks a field of Occlum's template"


def test_occlum_json_security_defaults() -> None:
    doc = OcclumConfig().to_json()
    assert doc["metadata"]["debuggable"] is False  # type: ignore[index]
    assert doc["entry_points"] == [ENTRY_POINT]
    assert doc["env"]["untrusted"] == []  # type: ignore[index]
    hostfs = [m for m in doc["mount"] if m["type"] == "hostfs"]  # type: ignore[union-attr]
    assert hostfs == [{"target": "/ppml/conn", "type": "hostfs", "source": "./ppml-conn"}]
    env = dict(e.partition("=")[::2] for e in doc["env"]["default"])  # type: ignore[index]
    assert env["MALLOC_ARENA_MAX"] == "1"
    assert env["PPML_TEE"] == "occlum"
    assert env["PPML_CONNECTION_DIR"] == "/ppml/conn"
    assert env["PYSPARK_PYTHON"] == "/opt/python-occlum/bin/python3"
    assert connection_mount_of(doc) == ("/ppml/conn", "./ppml-conn")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"env_untrusted": ("PYTHONPATH",)}, "PYTHONPATH may not come from the host"),
        ({"env_untrusted": ("LD_PRELOAD",)}, "LD_PRELOAD may not come from the host"),
        ({"env_untrusted": ("JAVA_TOOL_OPTIONS",)}, "may not come from the host"),
        ({"env_untrusted": ("PPML_KERNEL_MODULE",)}, "may not come from the host"),
        ({"env_untrusted": ("path",)}, "may not come from the host"),
        ({"env_untrusted": ("OMP_NUM_THREADS", "OMP_NUM_THREADS")}, "listed twice"),
        ({"env_default": ("A=1", "A=2")}, "set twice"),
        ({"env_default": ("NOVALUE",)}, "NAME=VALUE"),
        ({"product_id": 70000}, "product id must be 0..65535"),
        ({"version_number": -1}, "version number must be 0..65535"),
        ({"amx": 3}, "feature.amx"),
        ({"entry_points": ("/bin/../usr/bin/python3",)}, "normalised absolute path"),
        ({"entry_points": ()}, "at least one entry point"),
        ({"extra_hostfs": (HostMount("/ppml/conn/x", "/tmp"),)}, "overlaps"),
        ({"extra_hostfs": (HostMount("/bin", "/tmp"),)}, "entry point on the host"),
        ({"extra_hostfs": (HostMount("data", "/tmp"),)}, "normalised absolute path"),
    ],
)
def test_unsafe_or_broken_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(OcclumConfigError, match=message):
        OcclumConfig(**kwargs).validate()


def test_untrusted_name_may_not_shadow_a_measured_one() -> None:
    config = OcclumConfig(env_default=("OMP_NUM_THREADS=2",), env_untrusted=("OMP_NUM_THREADS",))
    with pytest.raises(OcclumConfigError, match=r"measured in env\.default"):
        config.validate()


def test_write_keeps_a_different_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "Occlum.json"
    target.write_text('{"hand": "edited"}')
    backup = write_occlum_json(OcclumConfig(), target)
    assert backup == tmp_path / "Occlum.json.bak"
    assert backup.read_text() == '{"hand": "edited"}'
    assert write_occlum_json(OcclumConfig(), target) is None  # same content: no backup
    check_occlum_json(json.loads(target.read_text()))


# -- sizing ------------------------------------------------------------------------------


def test_sizing_default_budget() -> None:
    p = plan()
    # 2 GB heap + 1 GB JVM non-heap + 1 GB kernel Python + 2 x 512 MB workers
    # + 5 processes x 136 MB = 5800 MB -> 5888 MB (256 MB steps)
    assert p.user_space_size == 5888 * MiB
    assert p.kernel_space_heap_size == 512 * MiB
    assert p.max_num_of_threads == 256
    assert "Spark driver JVM heap" in p.explain()


def test_sizing_grows_with_the_workload_and_edmm_starts_small() -> None:
    small, big = plan(2 * GiB, 2), plan(16 * GiB, 16)
    assert big.user_space_size > small.user_space_size + 14 * GiB
    assert big.max_num_of_threads == 128 + 32 * 16
    edmm = plan(16 * GiB, 16, edmm=True)
    assert edmm.user_space_max_size == big.user_space_size
    assert edmm.user_space_size < edmm.user_space_max_size
    assert edmm.init_num_of_threads is not None
    assert edmm.init_num_of_threads <= edmm.max_num_of_threads
    with pytest.raises(ValueError, match="cores"):
        plan(GiB, 0)


def test_spark_defaults_are_occlum_safe() -> None:
    conf = spark_conf.spark_defaults(driver_memory=2 * GiB, cores=3, python="/p/bin/python3")
    assert conf["spark.python.use.daemon"] == "false"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.driver.memory"] == "2048m"
    for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
        assert "-Djdk.lang.Process.launchMechanism=vfork" in conf[key]
        assert "-XX:ActiveProcessorCount=3" in conf[key]
        assert "-Dio.netty.availableProcessors=3" in conf[key]
        assert "-XX:-UseCompressedOops" in conf[key]
    assert conf["spark.executorEnv.MALLOC_ARENA_MAX"] == "1"
    assert "spark.pyspark.python /p/bin/python3\n" in spark_conf.render(conf)


# -- launcher ----------------------------------------------------------------------------


def test_launcher_accepts_only_a_connection_file() -> None:
    assert connection_file(["-f", "/ppml/conn/kernel-abc-1.json"], "/ppml/conn") == (
        "/ppml/conn/kernel-abc-1.json"
    )
    for argv in (
        [],
        ["-c", "print(1)"],
        ["-f", "/ppml/conn/kernel-a.json", "--IPKernelApp.exec_lines=['x']"],
        ["-f", "/tmp/kernel-a.json"],
        ["-f", "/ppml/conn/../conn/kernel-a.json"],
        ["-f", "/ppml/conn/sub/kernel-a.json"],
        ["-f", "/ppml/conn/evil.py"],
    ):
        with pytest.raises(LaunchError, match="usage: ppml-kernel-enclave"):
            connection_file(argv, "/ppml/conn")


def test_launcher_runs_the_kernel_module_with_spawn(tmp_path: Path) -> None:
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    record = tmp_path / "record.json"
    (module_dir / "recording_kernel.py").write_text(
        "import json, multiprocessing, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'start': multiprocessing.get_start_method()}}, "
        f"open({str(record)!r}, 'w'))\n"
    )
    env = {
        **os.environ,
        "PPML_KERNEL_MODULE": "recording_kernel",
        "PPML_CONNECTION_DIR": "/ppml/conn",
        "PYTHONPATH": os.pathsep.join([str(module_dir), str(ROOT)]),
    }

    def launch(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ppml_kernel.occlum.launcher", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = launch("-f", "/ppml/conn/kernel-1.json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(record.read_text()) == {
        "argv": ["-f", "/ppml/conn/kernel-1.json"],
        "start": "spawn",
    }
    record.unlink()
    refused = launch("-c", "print(1)")
    assert refused.returncode == 2
    assert refused.stderr.startswith("ppml-kernel-enclave: usage:")
    assert "Traceback" not in refused.stderr
    assert not record.exists()


# -- reference values --------------------------------------------------------------------


def test_reference_values_shape() -> None:
    doc = reference.reference_values(
        mrenclave=[MRENCLAVE.upper()], mrsigner=["0x" + MRSIGNER], isv_prod_id=7, min_isv_svn=3
    )
    assert doc == {
        "schema": "ppml-reference-values/1",
        "tee": "sgx",
        "mrenclave": [MRENCLAVE],
        "mrsigner": [MRSIGNER],
        "isv_prod_id": 7,
        "min_isv_svn": 3,
        "allowed_tcb_statuses": ["UpToDate", "SWHardeningNeeded"],
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mrenclave": ["abcd"]}, "MRENCLAVE must be 32 bytes"),
        ({"mrenclave": ["0" * 64]}, "all zeros"),
        ({"mrsigner": []}, "at least one"),
        ({"isv_prod_id": 65536}, "isv_prod_id must be 0..65535"),
        ({"allowed_tcb_statuses": ["Revoked"]}, "unknown TCB status 'Revoked'"),
        ({"allowed_tcb_statuses": []}, "at least one TCB status"),
    ],
)
def test_reference_values_refuse_bad_input(kwargs: dict, message: str) -> None:
    args = {
        "mrenclave": [MRENCLAVE],
        "mrsigner": [MRSIGNER],
        "isv_prod_id": 0,
        "min_isv_svn": 0,
        **kwargs,
    }
    with pytest.raises(reference.ReferenceValuesError, match=message):
        reference.reference_values(**args)


# -- CLI ---------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="ppml-kernel")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["occlum", *argv])
    return args.func(args)


def test_cli_config_writes_occlum_json_and_spark_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, spark = tmp_path / "Occlum.json", tmp_path / "spark-defaults.conf"
    code = run_cli(
        "config",
        "-o",
        str(out),
        "--driver-memory",
        "4GB",
        "--cores",
        "4",
        "--product-id",
        "7",
        "--version",
        "3",
        "--env",
        "OMP_NUM_THREADS=4",
        "--untrusted-env",
        "TZ",
        "--hostfs",
        "/data=/srv/ciphertext",
        "--spark-defaults",
        str(spark),
        "--explain",
    )
    assert code == 0
    doc = json.loads(out.read_text())
    check_occlum_json(doc)
    assert doc["metadata"]["product_id"] == 7 and doc["metadata"]["version_number"] == 3
    assert "OMP_NUM_THREADS=4" in doc["env"]["default"]
    assert doc["env"]["untrusted"] == ["TZ"]
    assert {"target": "/data", "type": "hostfs", "source": "/srv/ciphertext"} in doc["mount"]
    assert doc["resource_limits"]["user_space_size"] == format_size(
        plan(4 * GiB, 4).user_space_size
    )
    assert "spark.driver.memory 4096m" in spark.read_text()
    err = capsys.readouterr().err
    assert "Enclave budget:" in err and f"wrote {out}" in err


def test_cli_config_overrides_and_edmm(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run_cli("config", "--print", "--edmm", "--user-space-size", "20GB", "--max-threads", "1024")
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    check_occlum_json(doc)
    assert doc["resource_limits"]["user_space_max_size"] == "20GB"
    assert doc["resource_limits"]["max_num_of_threads"] == 1024
    assert doc["feature"]["enable_edmm"] is True


def test_cli_config_user_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("config", "--print", "--untrusted-env", "PYTHONPATH") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PYTHONPATH may not come from the host" in err
    with pytest.raises(SystemExit) as exit_info:
        run_cli("config", "--driver-memory", "4XB")
    assert exit_info.value.code == 2
    assert "unknown size unit" in capsys.readouterr().err


def test_cli_config_warns_about_debuggable(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("config", "--print", "--debuggable") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["metadata"]["debuggable"] is True
    assert "NOT confidential" in captured.err


def run_reference_values(mrenclave: str, out: Path, *more: str) -> int:
    """``ppml-kernel occlum reference-values`` for ``mrenclave`` and MRSIGNER into ``out``."""
    return run_cli(
        "reference-values", "--mrenclave", mrenclave, "--mrsigner", MRSIGNER, "-o", str(out), *more
    )


def test_cli_reference_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    occlum_json, out = tmp_path / "Occlum.json", tmp_path / "ref.json"
    from_occlum_json = ("--occlum-json", str(occlum_json))
    write_occlum_json(OcclumConfig(product_id=7, version_number=3), occlum_json)
    assert run_reference_values(MRENCLAVE, out, *from_occlum_json) == 0
    first = reference.load(out)
    assert (first["isv_prod_id"], first["min_isv_svn"]) == (7, 3)
    newer = "11" * 32
    write_occlum_json(OcclumConfig(product_id=7, version_number=4), occlum_json)
    assert run_reference_values(newer, out, *from_occlum_json, "--append") == 0
    merged = reference.load(out)
    assert merged["mrenclave"] == [MRENCLAVE, newer]
    assert merged["min_isv_svn"] == 3  # the old build stays acceptable until retired
    capsys.readouterr()

    write_occlum_json(OcclumConfig(debuggable=True), occlum_json)
    assert run_reference_values(MRENCLAVE, tmp_path / "d.json", *from_occlum_json) == 2
    assert "debuggable enclave" in capsys.readouterr().err
    assert run_reference_values("xyz", out, "--isv-prod-id", "1", "--min-isv-svn", "0") == 2
    assert "MRENCLAVE must be 32 bytes" in capsys.readouterr().err
    assert reference.load(out) == merged  # a failed run changes nothing
