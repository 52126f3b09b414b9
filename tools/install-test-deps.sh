#!/bin/sh
# Installs what tests/it/keystores.rs needs to exercise the real key stores:
#   - dbus-run-session / dbus-daemon  (a private D-Bus session bus)
#   - gnome-keyring-daemon            (a real Secret Service)
#   - secret-tool, keyctl             (optional: for poking at the stores by hand)
# and what the PostgreSQL tests need: the server (Debian package postgresql), run by the tests
# themselves as a throwaway cluster (tests/it/common/postgres.rs); and the console's browser
# tests: Debian's chromium and chromium-driver (tests/it/console.rs).
#
# Idempotent and non-interactive: on Debian/Ubuntu it installs only the apt packages whose
# commands are missing; on any other OS it prints what to install and exits 0 without touching
# anything. Kernel keyutils needs no package (the kernel provides it).
set -eu

have() { command -v "$1" >/dev/null 2>&1; }

# The Node tools of the MCP tests, each with a Node 22 to run it (the machine's Node may be older),
# pinned in tools/<dir>/package-lock.json and installed into tools/<dir>/node_modules (no global
# install; npm registry only). Runs on every OS, before the apt step below (which may exit early).
# Reinstalls only when node_modules is missing, was installed from another package.json or lock,
# lacks one of the given files, or its Node no longer runs.
#   install_node_tool DIR LABEL TEST FILE...
install_node_tool() {
    dir=$1
    tool_dir="$(cd "$(dirname "$0")" && pwd)/$dir"
    label=$2
    test_file=$3
    shift 3
    modules="$tool_dir/node_modules"
    stamp="$modules/.agentseal-install-stamp"
    installed=true
    [ -f "$stamp" ] && cat "$tool_dir/package.json" "$tool_dir/package-lock.json" | cmp -s - "$stamp" || installed=false
    for file in "$@"; do
        [ -f "$modules/$file" ] || installed=false
    done
    "$modules/.bin/node" --version 2>/dev/null | grep -q '^v22\.' || installed=false
    if $installed; then
        echo "install-test-deps: $label already installed in tools/$dir."
        return 0
    fi
    if ! have npm; then
        echo "install-test-deps: npm not found; $test_file needs npm (any Node.js) to install tools/$dir." >&2
        return 0
    fi
    echo "install-test-deps: installing $label and Node 22 into tools/$dir (npm ci)"
    rm -rf "$modules"
    # Node 22 comes from the `node` package, whose preinstall script fetches the platform binary
    # (allowed for it alone in package.json `allowScripts`). npm itself may run on an older Node:
    # engine checks are for the Node 22 the tests run the tool with.
    env npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false \
        npm ci --prefix "$tool_dir" --no-audit --no-fund --engine-strict=false \
        --loglevel=error </dev/null
    version=$("$modules/.bin/node" --version 2>/dev/null || true)
    case "$version" in
    v22.*) ;;
    *)
        echo "install-test-deps: tools/$dir/node_modules/.bin/node does not run Node 22 (got '${version:-nothing}')" >&2
        exit 1
        ;;
    esac
    cat "$tool_dir/package.json" "$tool_dir/package-lock.json" >"$stamp"
    echo "install-test-deps: $label installed (Node $version)."
}
# tests/it/mcp_inspector.rs: the MCP Inspector CLI.
install_node_tool inspector "the MCP Inspector" tests/it/mcp_inspector.rs \
    @modelcontextprotocol/inspector/clients/launcher/build/index.js
# tests/it/mcp_conformance.rs: the MCP conformance suite, two release lines under the aliases
# conformance-stable and conformance-next.
install_node_tool conformance "the MCP conformance suite" tests/it/mcp_conformance.rs \
    conformance-stable/dist/index.js conformance-next/dist/index.js

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
# tests/it/common/postgres.rs: a throwaway PostgreSQL cluster (initdb, pg_ctl, psql).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
# tests/it/console.rs: a real browser (headless Chromium, driven by Selenium from the venv).
have chromium || missing="$missing chromium"
have chromedriver || missing="$missing chromium-driver"
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
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "install-test-deps: PostgreSQL's initdb is still missing after the install" >&2
    exit 1
fi
echo "install-test-deps: done."
