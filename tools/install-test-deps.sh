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
