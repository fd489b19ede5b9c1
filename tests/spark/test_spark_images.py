"""What can be checked of the SGX executor deployment without SGX or Kubernetes.

The templates parse, ask for EPC on SGX nodes, run the entrypoint; the entrypoint builds
the executor command Spark expects inside ``occlum run``; the executor's Occlum.json
measures the driver policy and does not let the host override it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml  # pyyaml comes with jupyterlab (the test extra)

IMAGES = Path(__file__).parents[2] / "images" / "spark"


def test_pod_template_requests_epc_on_sgx_nodes():
    docs = list(yaml.safe_load_all((IMAGES / "executor-pod-template.yaml").read_text()))
    pod = next(d for d in docs if d["kind"] == "Pod")
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"intel.feature.node.kubernetes.io/sgx": "true"}
    assert pod["metadata"]["annotations"]["sgx.intel.com/quote-provider"] == "aesmd"
    (container,) = spec["containers"]
    assert container["name"] == "spark-executor"
    assert container["command"] == ["/opt/ppml/bin/ppml-executor-entrypoint"]
    resources = container["resources"]
    assert resources["requests"]["sgx.intel.com/epc"] == resources["limits"]["sgx.intel.com/epc"]
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert mounts <= {v["name"] for v in spec["volumes"]}
    qcnl = json.loads(config["data"]["sgx_default_qcnl.conf"])
    assert qcnl["use_secure_cert"] is True and qcnl["pccs_url"].startswith("https://")
    names = {e["name"] for e in container.get("env", [])}
    assert not names & {"PPML_DRIVER_POLICY", "PPML_TEE"}  # measured, not from the host


def test_entrypoint_builds_the_executor_command():
    script = IMAGES / "ppml-executor-entrypoint"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = {
        "PATH": os.environ["PATH"],
        "PPML_ENTRYPOINT_DRY_RUN": "1",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@driver-svc:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_APPLICATION_ID": "spark-0123",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_EXECUTOR_MEMORY": "2048m",
        "SPARK_EXECUTOR_POD_IP": "10.1.2.3",
        "SPARK_EXECUTOR_POD_NAME": "exec-3",
        "SPARK_JAVA_OPT_1": "-Dspark.driver.port=7078",
        "SPARK_JAVA_OPT_0": "-Dspark.authenticate=true",
    }
    out = subprocess.run(
        [str(script), "executor"], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[:3] == ["occlum", "run", "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"]
    for flag in (
        "-XX:-UseCompressedOops",
        "-XX:ActiveProcessorCount=2",
        "-Dio.netty.availableProcessors=2",
        "-Djdk.lang.Process.launchMechanism=vfork",
        "-Xmx2048m",
    ):
        assert flag in out
    assert out.index("-Dspark.authenticate=true") < out.index("-Dspark.driver.port=7078")
    main = out.index("org.apache.spark.executor.CoarseGrainedExecutorBackend")
    assert out[main + 1 :] == [
        "--driver-url",
        "spark://CoarseGrainedScheduler@driver-svc:7078",
        "--executor-id",
        "3",
        "--cores",
        "2",
        "--app-id",
        "spark-0123",
        "--hostname",
        "10.1.2.3",
        "--resourceProfileId",
        "0",
        "--podName",
        "exec-3",
    ]
    missing = subprocess.run(
        [str(script), "executor"], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True
    )
    assert missing.returncode != 0 and "SPARK_DRIVER_URL" in missing.stderr


def test_executor_occlum_json_measures_the_driver_policy():
    conf = json.loads((IMAGES / "executor-occlum.json").read_text())
    default = dict(item.split("=", 1) for item in conf["env"]["default"])
    untrusted = set(conf["env"]["untrusted"])
    assert default["PPML_TEE"] == "occlum"
    assert default["PPML_DRIVER_POLICY"].startswith("/etc/ppml/")
    assert not untrusted & {
        "PPML_DRIVER_POLICY",
        "PPML_TEE",
        "PYSPARK_PYTHON",
        "LD_LIBRARY_PATH",
        "PYTHONHOME",
        "PATH",
        "JAVA_HOME",
    }
    assert {"PPML_CLUSTER_BROKER", "SPARK_EXECUTOR_ID"} <= untrusted
    assert conf["metadata"]["debuggable"] is False
    limits = conf["resource_limits"]
    assert limits["user_space_size"] == limits["user_space_max_size"]  # no EDMM by default
