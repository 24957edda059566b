#!/usr/bin/env bash
# Installs the Debian 12 packages lcm.c builds and tests with (run as root, or with sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    build-essential cmake pkg-config \
    libdnnl-dev libcjson-dev libutf8proc-dev libspng-dev zlib1g-dev \
    libjpeg62-turbo-dev libwebp-dev libssl-dev libcurl4-openssl-dev libmicrohttpd-dev \
    clang libclang-rt-14-dev libomp-14-dev valgrind chromium python3 python3-venv python3-pip >/dev/null
# python3-venv + pip: the A1111 client test installs the pinned PyPI `webuiapi` into a venv.
# node + npm for the browser and OpenAI SDK tests of `lcm serve`, unless a node (with its npm) is already installed.
command -v npm >/dev/null || $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
