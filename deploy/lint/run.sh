#!/usr/bin/env bash
# Lints what deploy/ ships: the Dockerfile (hadolint), the Kubernetes manifests (kubernetes-validate
# --strict against a pinned Kubernetes version, then checkov: every failed check is fixed or
# skipped in the manifest with a one-line reason). Installs the pinned tools on first use
# (deploy/lint/venv.sh). Exit 0 when all is clean. .ci/run runs it; tests/deploy.rs too.
set -euo pipefail
cd "$(dirname "$0")/../.."
KUBERNETES_VERSION=1.30.0
bin=$(bash deploy/lint/venv.sh)
echo "hadolint Dockerfile"
"$bin/hadolint" Dockerfile
# Kustomizations are not Kubernetes resources: kubernetes-validate reads every other file.
mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)
echo "kubernetes-validate --strict -k $KUBERNETES_VERSION: ${#manifests[@]} files"
"$bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "${manifests[@]}"
echo "checkov -d deploy/kubernetes"
# No download of external checks or guidelines: the pinned release's own checks only.
BC_SKIP_MAPPING=TRUE "$bin/checkov" -d deploy/kubernetes --framework kubernetes --compact --quiet \
    --skip-download
