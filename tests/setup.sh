#!/usr/bin/env bash
# Prepares this machine for the SSH integration tests (tests/transport.rs):
# installs openssh-server and sudo when missing, and creates the dedicated
# test users. Idempotent; needs root. The tests start their own sshd
# processes on 127.0.0.x: no system ssh service is enabled or started here.
# For the shared-state tests it installs postgresql (the tests run their own
# servers; the package's own cluster is not used).
# For the tier-2 tests (tests/resources_tier2.rs) it also installs debootstrap
# and systemd-container (systemd-nspawn); the tests build and cache their
# Debian root filesystem themselves, under /var/cache/nexus-tests.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/setup.sh: must run as root (it installs packages and creates test users)" >&2
    exit 1
fi

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v sudo >/dev/null 2>&1 || missing+=(sudo)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
# The shared-state tests start their own PostgreSQL servers (tests/harness/postgres.rs) from
# Debian's programs, as the postgres user; openssl makes their throwaway TLS certificates.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The NSS test (tests/remote_cli.rs) makes a user only the user database knows, through a
# systemd-userdb drop-in that nss-systemd reads; its postinst adds `systemd` to nsswitch.conf.
compgen -G '/lib/*/libnss_systemd.so.2' >/dev/null || compgen -G '/usr/lib/*/libnss_systemd.so.2' >/dev/null || missing+=(libnss-systemd)
# debootstrap only recommends the keyring it verifies the archive with.
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The package's "could not start service" note is expected: nothing here needs the system sshd.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# /run/sshd: sshd's privilege separation directory; /srv: where hosts get private mounts.
mkdir -p /run/sshd /srv
if ! grep -Eq '^passwd:.*\bsystemd\b' /etc/nsswitch.conf; then
    sed -i -E 's/^(passwd:.*)$/\1 systemd/' /etc/nsswitch.conf
fi

# nexus-test: logs in with the harness's keys; a light /bin/sh keeps channel start-up fast.
# '*' unlocks the account for key logins without giving it a usable password.
if ! getent passwd nexus-test >/dev/null; then
    useradd --create-home --shell /bin/sh nexus-test
fi
usermod -p '*' nexus-test

# nexus-test-pw: exercises sudo with a password. It may only become nexus-test, never root.
if ! getent passwd nexus-test-pw >/dev/null; then
    useradd --create-home --shell /bin/sh nexus-test-pw
fi
echo 'nexus-test-pw:nexus-test-sudo-pw' | chpasswd

install -d -m 0755 /etc/sudoers.d
cat >/etc/sudoers.d/nexus-test <<'SUDOERS'
# Written by nexus tests/setup.sh for the SSH integration tests.
nexus-test ALL=(ALL) NOPASSWD: ALL
nexus-test-pw ALL=(nexus-test) ALL
SUDOERS
chmod 0440 /etc/sudoers.d/nexus-test
echo "tests/setup.sh: openssh-server, sudo and the test users are ready"
