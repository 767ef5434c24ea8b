# Sourced by scripts/gpu/bench.sh and parity.sh on the device machine: unpacks the binaries
# carried in gpu/ (built here, see bench.sh's header) and points them at the machine's torch.

# unpack NAME [PATH]: echoes the path of the runnable binary NAME (PATH, default /tmp/NAME,
# unpacked from gpu/NAME.gz unless already there); exits the script if it is not carried.
unpack() {
    local binary="${2:-/tmp/$1}"
    if [ ! -x "$binary" ]; then
        gunzip -c "gpu/$1.gz" > "$binary" && chmod +x "$binary" || {
            echo "no $1: carry gpu/$1.gz (see scripts/gpu/bench.sh's header)" >&2
            exit 1
        }
    fi
    echo "$binary"
}

# The binaries link torch 2.11's libraries; the machine's own are in its python3's torch.
torch_lib="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || exit 1
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
