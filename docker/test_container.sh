#!/usr/bin/env bash
# make test-container: build docker/Dockerfile with podman on a local Debian base (no registry)
# and run it for real on a few NIfTI volumes. Takes minutes (the first run also debootstraps the
# base). Needs root, podman, runc and debootstrap (Debian: apt-get install podman runc
# debootstrap). Settings: docker/containers.conf (runc, cgroupfs, fixed ulimits).
#
#   PY=.venv/bin/python bash docker/test_container.sh
#
# Environment: PY (python with calipers' dependencies; the model is trained with ./src),
# CALIPERS_BASE (default calipers-base:bookworm, made here if absent), CALIPERS_IMAGE
# (calipers:test), DEBIAN_MIRROR (default: the Debian mirror apt uses here), CALIPERS_WHEELS
# (a folder holding a torch CPU wheel; default: pip's find-links), CALIPERS_CA_BUNDLE (the CA
# bundle given to the build as a secret; default /etc/ssl/certs/ca-certificates.crt).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
BASE=${CALIPERS_BASE:-calipers-base:bookworm}
IMAGE=${CALIPERS_IMAGE:-calipers:test}
CA=${CALIPERS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/docker/containers.conf}
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
WORK=$(mktemp -d /var/tmp/calipers-container.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
t0=$(date +%s)
say() { printf '[test-container %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }
fail() { say "FAIL: $*"; exit 1; }

for tool in podman runc; do
    command -v "$tool" > /dev/null || fail "$tool not found; apt-get install podman runc debootstrap"
done

# 1. The base, made without any registry: debootstrap from the mirror apt uses, podman import.
if ! podman image exists "$BASE"; then
    command -v debootstrap > /dev/null || fail "debootstrap not found"
    mirror=${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        /etc/apt/sources.list.d/*.sources 2> /dev/null \
        | awk '/^URIs:/ {print $2} /^deb / {print ($2 ~ /^\[/ ? $3 : $2)}' \
        | grep -m1 -E '/debian/?$' || true)}
    [ -n "$mirror" ] || fail "no Debian mirror in /etc/apt/sources.list*; set DEBIAN_MIRROR"
    say "debootstrap --variant=minbase bookworm from $mirror"
    nice -n 10 debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" \
        > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; fail debootstrap; }
    tar -C "$WORK/rootfs" -c . | podman import -q - "$BASE" > /dev/null
    rm -rf "$WORK/rootfs"
fi
say "base $BASE: $(podman image inspect --format '{{.Id}}' "$BASE" | cut -c1-12)"

# 2. Build context: the package, docker/, and a torch CPU wheel (bind-mounted, not copied in).
ctx=$WORK/ctx
mkdir -p "$ctx/docker/wheels"
cp -r "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/src" "$ctx/"
cp "$ROOT/docker/Dockerfile" "$ROOT/docker/entrypoint.sh" "$ctx/docker/"
find "$ctx/src" -name __pycache__ -prune -exec rm -rf {} +
wheels=${CALIPERS_WHEELS:-$("$PY" -m pip config get global.find-links 2> /dev/null || true)}
for w in "$wheels"/torch-*.whl; do
    if [ -f "$w" ]; then ln "$w" "$ctx/docker/wheels/" 2> /dev/null || cp "$w" "$ctx/docker/wheels/"; fi
done
say "torch wheel(s): $(ls "$ctx/docker/wheels" | tr '\n' ' ')"

# 3. Build. The proxy's CA goes in as a build secret (mounted for one RUN, never in a layer).
say "podman build --build-arg BASE=$BASE -t $IMAGE"
nice -n 10 podman build --pull=never --network host -f "$ctx/docker/Dockerfile" \
    --build-arg BASE="$BASE" --secret id=cacert,src="$CA" -t "$IMAGE" "$ctx" \
    > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "podman build"; }
versions=$(podman run --rm --network none --entrypoint python "$IMAGE" -c \
    "import torch, monai, calipers; print(torch.__version__, monai.__version__, calipers.__version__)")
echo "    torch, monai, calipers in the image: $versions"
say "image $IMAGE: $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

# The CA secret must not be in the image: no /run/secrets/cacert, and no proxy CA certificate
# (the ones only this host adds, in /usr/local/share/ca-certificates) in any file under /etc.
podman run --rm --network none --entrypoint sh "$IMAGE" -c 'test ! -e /run/secrets/cacert' \
    || fail "/run/secrets/cacert is in the image"
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] || continue
    key=$(grep -v -- '-----' "$crt" | head -2 | tail -1)
    if podman run --rm --network none --user 0 --entrypoint sh "$IMAGE" \
        -c "grep -rqsF -- '$key' /etc /opt/calipers" ; then
        fail "the host's proxy CA $(basename "$crt") was baked into the image"
    fi
done
say "no CA secret or proxy certificate in the image"

# 4. A small trained model (seconds): 3-D U-Net on tiny generated NIfTI volumes, one checkpoint.
mkdir -p "$WORK/data" "$WORK/in"
"$PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from calipers.config import parse_config
from calipers.experiment.runner import run_experiment
from calipers.segmentation import export_checkpoint

torch.set_num_threads(1)
work = Path(sys.argv[1])
rng = np.random.default_rng(0)
affine = np.array([[-1.5, 0, 0, 10.0], [0, 2.0, 0, -4.0], [0, 0, 1.0, 7.0], [0, 0, 0, 1]])
for d in ("images", "labels"):
    (work / "data" / d).mkdir(parents=True)
for i in range(9):
    shape = tuple(int(s) for s in rng.integers(14, 19, size=3))
    grid = np.indices(shape).astype(float)
    centre = np.array(shape).reshape(3, 1, 1, 1) / 2 + rng.uniform(-1.5, 1.5, (3, 1, 1, 1))
    ball = ((grid - centre) ** 2).sum(0) < (min(shape) / 4) ** 2
    x = (100 + 30 * rng.normal(size=shape) + 300 * ball).astype(np.float32)
    img = nib.Nifti1Image(x, affine)
    if i < 6:
        img.to_filename(work / "data" / "images" / f"case_{i}.nii.gz")
        nib.Nifti1Image(ball.astype(np.uint8), affine).to_filename(
            work / "data" / "labels" / f"case_{i}.nii.gz")
    else:  # unseen volumes for the container
        img.to_filename(work / "in" / f"new_{i}.nii.gz")
cfg = parse_config({
    "data": {"kind": "nifti", "path": str(work / "data"), "task": "segmentation"},
    "cv": {"folds": 2, "seed": 0},
    "train": {"epochs": 4, "batch_size": 2, "lr": 1e-2, "device": "cpu"},
    "mc": {"samples": 2},
    "networks": {"unet": {"model": "calipers.models:UNet",
                          "args": {"channels": [4, 8], "dropout": 0.1}}},
})
res = run_experiment(cfg, work / "run", report=False)
export_checkpoint(work / "run", 0, work / "model.pt")
print(f"    trained: mean Dice {res.summary.networks['unet']['mean_dice']['mean']:.3f} "
      f"(2 folds, 4 epochs), checkpoint {(work / 'model.pt').stat().st_size // 1024} kB")
EOF
chmod a+r "$WORK/model.pt"  # calipers writes files 0600 (mkstemp); let other uids read it
say "model trained"

run() {  # podman run with no network, the model and inputs read-only
    podman run --rm --network none -v "$WORK/model.pt:/model:ro" -v "$WORK/in:/in:ro" "$@"
}

# 5. A root-owned /out: the image's non-root user cannot write; a clear message, exit 2, nothing.
mkdir -p "$WORK/out_root" && chmod 0755 "$WORK/out_root"
set +e
msg=$(run -v "$WORK/out_root:/out" "$IMAGE" --mc 3 --device cpu 2>&1)
rc=$?
set -e
echo "    $msg" | head -3
[ "$rc" -ne 0 ] || fail "a non-writable /out exited 0"
echo "$msg" | grep -q -- '--user' || fail "the message does not name --user"
[ -z "$(ls -A "$WORK/out_root")" ] || fail "files were written into the non-writable /out"
say "non-writable /out: exit $rc, message names --user, nothing written"

# 6. The documented way: --user "$(id -u):$(id -g)".
mkdir -p "$WORK/out"
run -v "$WORK/out:/out" --user "$(id -u):$(id -g)" "$IMAGE" --mc 3 --device cpu -q \
    || fail "podman run --user exited non-zero"
say "podman run --network none --user $(id -u):$(id -g): done"

# A non-root caller's own folder: with --user it writes there, and the files are the caller's.
mkdir -p "$WORK/out_user" && chown 4321:4321 "$WORK/out_user"
run -v "$WORK/out_user:/out" --user 4321:4321 "$IMAGE" --mc 2 --device cpu -q \
    || fail "podman run --user 4321:4321 exited non-zero"
owners=$(find "$WORK/out_user" -type f -printf '%u:%g\n' | sort -u | tr '\n' ' ')
[ "$owners" = "4321:4321 " ] || fail "outputs owned by $owners, not 4321:4321"
say "a non-root caller (uid 4321) with --user 4321:4321: $(ls "$WORK/out_user" | wc -l) files, owned by 4321:4321"

# 7. Outputs and their geometry against the inputs.
"$PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

work = Path(sys.argv[1])
inputs = sorted((work / "in").glob("*.nii.gz"))
assert inputs, "no inputs"
for p in inputs:
    src = nib.load(p)
    stem = p.name[: -len(".nii.gz")]
    for kind in ("seg", "entropy", "mi", "std"):
        out = nib.load(work / "out" / f"{stem}_{kind}.nii.gz")
        assert out.shape == src.shape, (p.name, kind, out.shape, src.shape)
        assert np.allclose(out.affine, src.affine), (p.name, kind)
    seg = np.asarray(nib.load(work / "out" / f"{stem}_seg.nii.gz").dataobj)
    ent = np.asarray(nib.load(work / "out" / f"{stem}_entropy.nii.gz").dataobj)
    assert set(np.unique(seg)) <= {0, 1} and np.isfinite(ent).all() and ent.min() >= 0
    print(f"    {p.name}: shape {src.shape}, affine kept, {int((seg > 0).sum())} foreground voxels")
assert (work / "out" / "summary.csv").is_file()
rows = (work / "out" / "summary.csv").read_text().strip().splitlines()
assert len(rows) == len(inputs) + 1, rows
EOF
say "outputs checked: shapes and affines equal the inputs'"
say "PASS ($IMAGE on $BASE)"
