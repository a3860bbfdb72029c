#!/usr/bin/env bash
# Installs what building and testing wsinspect needs on Debian 12, or, when not
# run as root, says exactly which packages are missing.
#   scripts/install-dependencies.sh          # build + run (libpcap-dev, zlib1g-dev, libmimalloc-dev)
#   scripts/install-dependencies.sh --test   # also the test peers and oracles
set -euo pipefail

packages=(libpcap-dev zlib1g-dev libmimalloc-dev pkg-config)
python_packages=()
if [[ "${1:-}" == "--test" ]]; then
    packages+=(tshark tcpdump python3-pip openssl node-ws)
    python_packages+=(websockets pytest)
fi

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if ((${#missing[@]} > 0)); then
    if [[ $(id -u) -eq 0 ]]; then
        echo "installing: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # node-ws is optional: a machine whose Node cannot take it still tests the rest.
        apt-get install -y -qq --no-install-recommends "${missing[@]/node-ws/}" >/dev/null
        if [[ " ${missing[*]} " == *" node-ws "* ]]; then
            apt-get install -y -qq --no-install-recommends node-ws >/dev/null 2>&1 || echo "node-ws not installable: Node ws tests will be skipped" >&2
        fi
    else
        echo "wsinspect: missing Debian packages: ${missing[*]}" >&2
        echo "install them with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

if ((${#python_packages[@]} > 0)); then
    for module in "${python_packages[@]}"; do
        if ! python3 -c "import $module" 2>/dev/null; then
            echo "installing Python package: $module" >&2
            python3 -m pip install -q "$module" 2>/dev/null || python3 -m pip install -q --break-system-packages "$module"
        fi
    done
fi

if ! command -v swift >/dev/null; then
    echo "wsinspect: no Swift toolchain on PATH (Swift 6.0 or newer is needed; see swift.org/install)" >&2
    exit 1
fi
