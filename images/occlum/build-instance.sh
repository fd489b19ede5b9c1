#!/bin/bash
# Build the Occlum instance of the PPML kernel inside the image build (see Dockerfile).
#
#   build-instance.sh INSTANCE_DIR OUTPUT_DIR
#
# Writes OUTPUT_DIR/ppml-instance.tar.gz (`occlum package`), OUTPUT_DIR/reference-values.json
# and OUTPUT_DIR/measurements.txt, and prints MRENCLAVE and MRSIGNER.
# Settings come from the environment: DRIVER_MEMORY, CORES, PRODUCT_ID, ISV_SVN, EDMM,
# PYTHON_VERSION, JAVA_HOME, ENCLAVE_SIGN_KEY (default: the BuildKit secret
# /run/secrets/enclave_key), ALLOW_TEMPLATE_KEY=1 for a development build.
set -euo pipefail

instance=${1:?usage: build-instance.sh INSTANCE_DIR OUTPUT_DIR}
output=${2:?usage: build-instance.sh INSTANCE_DIR OUTPUT_DIR}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ppml=/opt/python-occlum/bin/ppml-kernel
key=${ENCLAVE_SIGN_KEY:-/run/secrets/enclave_key}

if [[ ! -s "$key" ]]; then
    if [[ "${ALLOW_TEMPLATE_KEY:-0}" == 1 ]]; then
        echo "WARNING: signing with Occlum's PUBLIC template key. Anyone can sign an enclave" \
             "with this MRSIGNER: development only, never pin it in production." >&2
        key=/opt/occlum/etc/template/Enclave.pem
    else
        echo "error: no enclave signing key: pass --secret id=enclave_key,src=KEY.pem to" \
             "docker build (3072-bit RSA, exponent 3), or ALLOW_TEMPLATE_KEY=1 for a" \
             "development build" >&2
        exit 2
    fi
fi

edmm_config=() edmm_build=()
if [[ "${EDMM:-0}" == 1 ]]; then
    edmm_config=(--edmm) edmm_build=(--enable-edmm Y)
fi

rm -rf "$instance"
occlum new "$instance"
cd "$instance"

# Occlum.json and spark-defaults.conf from typed settings (replaces occlum's template).
"$ppml" occlum config -o Occlum.json --explain \
    --driver-memory "${DRIVER_MEMORY:-2GB}" --cores "${CORES:-2}" "${edmm_config[@]}" \
    --product-id "${PRODUCT_ID:-1}" --version "${ISV_SVN:-1}" \
    --python-home /opt/python-occlum --python-version "${PYTHON_VERSION:-3.11}" \
    --java-home "${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}" \
    --spark-defaults spark-defaults.conf
rm -f Occlum.json.bak

# The measured file system: Python, JRE, shell, the launcher, Spark settings.
rm -rf image
copy_bom -f "$here/ppml-kernel.yaml" --root image --include-dir /opt/occlum/etc/template
install -D -m 0755 "$here/ppml-kernel-enclave" image/bin/ppml-kernel-enclave
install -D -m 0644 spark-defaults.conf image/etc/ppml/spark/spark-defaults.conf
mkdir -p image/ppml/conn image/root image/tmp

occlum build --sign-key "$key" "${edmm_build[@]}"

mrenclave=$(occlum print mrenclave)
mrsigner=$(occlum print mrsigner)
echo "MRENCLAVE=$mrenclave"
echo "MRSIGNER=$mrsigner"

mkdir -p "$output"
printf 'MRENCLAVE=%s\nMRSIGNER=%s\n' "$mrenclave" "$mrsigner" > "$output/measurements.txt"
"$ppml" occlum reference-values --mrenclave "$mrenclave" --mrsigner "$mrsigner" \
    --occlum-json Occlum.json -o "$output/reference-values.json"
# `occlum package` wants a bare name: it writes NAME.tar.gz into the instance directory.
occlum package ppml-instance
mv ppml-instance.tar.gz "$output/ppml-instance.tar.gz"
