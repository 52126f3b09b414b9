#!/bin/sh
# Installs what tests/keystores.rs needs to exercise the real key stores:
#   - dbus-run-session / dbus-daemon  (a private D-Bus session bus)
#   - gnome-keyring-daemon            (a real Secret Service)
#   - secret-tool, keyctl             (optional: for poking at the stores by hand)
#
# Idempotent and non-interactive: on Debian/Ubuntu it installs only the apt packages whose
# commands are missing; on any other OS it prints what to install and exits 0 without touching
# anything. Kernel keyutils needs no package (the kernel provides it).
set -eu

have() { command -v "$1" >/dev/null 2>&1; }

# tests/mcp_inspector.rs: the MCP Inspector CLI and a Node 22 to run it, pinned in
# tools/inspector/package-lock.json and installed into tools/inspector/node_modules (no global
# install; npm registry only). Runs on every OS, before the apt step below (which may exit early).
# Reinstalls only when node_modules is missing, was installed from another package.json or lock,
# or its Node no longer runs.
install_inspector() {
    inspector_dir="$(cd "$(dirname "$0")" && pwd)/inspector"
    modules="$inspector_dir/node_modules"
    stamp="$modules/.agentseal-install-stamp"
    if [ -f "$stamp" ] &&
        cat "$inspector_dir/package.json" "$inspector_dir/package-lock.json" | cmp -s - "$stamp" &&
        [ -f "$modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js" ] &&
        "$modules/.bin/node" --version 2>/dev/null | grep -q '^v22\.'; then
        echo "install-test-deps: MCP Inspector already installed in tools/inspector."
        return 0
    fi
    if ! have npm; then
        echo "install-test-deps: npm not found; tests/mcp_inspector.rs needs npm (any Node.js) to install tools/inspector." >&2
        return 0
    fi
    echo "install-test-deps: installing the MCP Inspector and Node 22 into tools/inspector (npm ci)"
    rm -rf "$modules"
    # Node 22 comes from the `node` package, whose preinstall script fetches the platform binary
    # (allowed for it alone in package.json `allowScripts`). npm itself may run on an older Node:
    # engine checks are for the Node 22 the tests run the Inspector with.
    if [ -f "$inspector_dir/package-lock.json" ]; then
        npm_command=ci
    else
        npm_command=install
    fi
    env npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false \
        npm "$npm_command" --prefix "$inspector_dir" --no-audit --no-fund --engine-strict=false \
        --loglevel=error </dev/null
    version=$("$modules/.bin/node" --version 2>/dev/null || true)
    case "$version" in
    v22.*) ;;
    *)
        echo "install-test-deps: tools/inspector/node_modules/.bin/node does not run Node 22 (got '${version:-nothing}')" >&2
        exit 1
        ;;
    esac
    cat "$inspector_dir/package.json" "$inspector_dir/package-lock.json" >"$stamp"
    echo "install-test-deps: MCP Inspector installed (Node $version)."
}
install_inspector

os_id=""
os_like=""
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    os_id=$(. /etc/os-release && printf '%s' "${ID:-}")
    os_like=$(. /etc/os-release && printf '%s' "${ID_LIKE:-}")
fi

case " $os_id $os_like " in
*" debian "* | *" ubuntu "*) ;;
*)
    echo "install-test-deps: not Debian/Ubuntu (${os_id:-$(uname -s)}); nothing installed."
    echo "install-test-deps: the key store tests need dbus-run-session (dbus) and gnome-keyring-daemon (gnome-keyring)."
    exit 0
    ;;
esac

if ! have apt-get; then
    echo "install-test-deps: apt-get not found; nothing installed." >&2
    exit 0
fi

# command -> package. Required first, then optional helpers.
missing=""
have dbus-run-session || missing="$missing dbus"
have dbus-daemon || missing="$missing dbus"
have gnome-keyring-daemon || missing="$missing gnome-keyring"
optional=""
have secret-tool || optional="$optional libsecret-tools"
have keyctl || optional="$optional keyutils"

# Deduplicate.
missing=$(printf '%s\n' $missing | sort -u | tr '\n' ' ')
optional=$(printf '%s\n' $optional | sort -u | tr '\n' ' ')

if [ -z "$(printf '%s' "$missing$optional" | tr -d ' ')" ]; then
    echo "install-test-deps: everything is already installed."
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if have sudo; then
        SUDO="sudo -n"
    else
        echo "install-test-deps: need root (or sudo) to install:$missing$optional" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

echo "install-test-deps: installing:$missing$optional"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
if [ -n "$(printf '%s' "$missing" | tr -d ' ')" ]; then
    # shellcheck disable=SC2086
    apt_install $missing
fi
for package in $optional; do
    apt_install "$package" || echo "install-test-deps: optional package $package not installed" >&2
done

for command in dbus-run-session gnome-keyring-daemon; do
    if ! have "$command"; then
        echo "install-test-deps: $command is still missing after the install" >&2
        exit 1
    fi
done
echo "install-test-deps: done."
