# nexus facts: everything nexus needs to know about a host, in one round trip.
# POSIX sh; prints key=value lines parsed by src/facts/mod.rs. Every probe tolerates a
# missing tool (minimal containers, busybox), leaving its value empty rather than failing.
LC_ALL=C
export LC_ALL
kv() { printf '%s=%s\n' "$1" "$2"; }
have() { command -v "$1" >/dev/null 2>&1; }

kv format 1
kv kernel_name "$(uname -s 2>/dev/null)"
kv kernel "$(uname -r 2>/dev/null)"
kv arch "$(uname -m 2>/dev/null)"
kv hostname "$(uname -n 2>/dev/null)"

# A broken resolver can stall hostname -f for many seconds; facts must stay fast.
fqdn=
if have hostname; then
    if have timeout; then fqdn=$(timeout 2 hostname -f 2>/dev/null); else fqdn=$(hostname -f 2>/dev/null); fi
fi
kv fqdn "$fqdn"

cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null) || cpus=
[ -n "$cpus" ] || cpus=$(nproc 2>/dev/null) || cpus=
[ -n "$cpus" ] || cpus=$(grep -c '^processor' /proc/cpuinfo 2>/dev/null) || cpus=
kv cpus "$cpus"
kv mem_kb "$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\) kB$/\1/p' /proc/meminfo 2>/dev/null)"

# dnf before yum: Fedora and RHEL 8+ ship yum as an alias of dnf.
pkg=
for p in apt-get dnf yum zypper pacman apk; do
    if have "$p"; then pkg=$p; break; fi
done
kv pkg "$pkg"

if [ -d /run/systemd/system ]; then init=systemd
elif have openrc || [ -d /run/openrc ]; then init=openrc
else init=other
fi
kv init "$init"
kv pid1 "$(cat /proc/1/comm 2>/dev/null)"

uid=$(id -u 2>/dev/null)
kv user "$(id -un 2>/dev/null)"
kv uid "$uid"
kv gid "$(id -g 2>/dev/null)"
kv home "${HOME:-}"
shell=$(sed -n "s/^[^:]*:[^:]*:$uid:[^:]*:[^:]*:[^:]*:\(.*\)\$/\1/p" /etc/passwd 2>/dev/null | head -n 1)
[ -n "$shell" ] || shell=${SHELL:-}
kv shell "$shell"

# The address of the interface holding the default route.
ipv4=
if have ip; then
    dev=$(ip -4 route show default 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -n 1)
    if [ -n "$dev" ]; then
        ipv4=$(ip -4 -o addr show dev "$dev" 2>/dev/null | sed -n 's/.* inet \([0-9.]*\).*/\1/p' | head -n 1)
    fi
fi
kv ipv4 "$ipv4"

mid=$(cat /etc/machine-id 2>/dev/null) || mid=
[ -n "$mid" ] || mid=$(cat /var/lib/dbus/machine-id 2>/dev/null) || mid=
kv machine_id "$mid"

for f in /etc/os-release /usr/lib/os-release; do
    if [ -r "$f" ]; then sed 's/^/os_release./' "$f"; break; fi
done
exit 0
