#!/bin/sh
# Container entrypoint: calipers predict --model $CALIPERS_MODEL --in $CALIPERS_IN --out $CALIPERS_OUT
# Extra arguments (e.g. --mc 30 --device cpu) are passed through. Exit status: 0 all files done,
# 1 some file failed (the rest are written), 2 bad arguments, missing folders or an output
# folder this user cannot write (run with --user "$(id -u):$(id -g)").
set -eu

model="${CALIPERS_MODEL:-/model}"
in_dir="${CALIPERS_IN:-/in}"
out_dir="${CALIPERS_OUT:-/out}"

if [ ! -d "$in_dir" ]; then
    echo "calipers: input folder $in_dir not found; mount it with -v /path/in:$in_dir" >&2
    exit 2
fi
if [ ! -e "$model" ]; then
    echo "calipers: model $model not found; mount a run folder or checkpoint with -v /path:$model" >&2
    exit 2
fi
if ! mkdir -p "$out_dir" 2> /dev/null || [ ! -w "$out_dir" ]; then
    echo "calipers: output folder $out_dir is not writable by this container's user" \
         "(uid $(id -u)); nothing was written. Run the container as the owner of the host" \
         "folder: docker/podman run --user \"\$(id -u):\$(id -g)\" ... (Apptainer runs as" \
         "the caller already), or make the folder writable for uid $(id -u)." >&2
    exit 2
fi
exec calipers predict --model "$model" --in "$in_dir" --out "$out_dir" "$@"
