# nexus facts: everything nexus needs to know about a host, in one round trip.
# POSIX sh (dash, busybox ash, bash); prints key=value lines parsed by src/facts/mod.rs. Every
# probe tolerates a missing file or tool (minimal containers, busybox, non-Linux), leaving its
# value empty rather than failing.
#
# It runs on every host for every command that needs facts, and each program started costs about
# a millisecond of CPU, so on Linux the values come from /proc, /sys and /etc through the shell's
# own `read` and parameter expansion. Usually the only program started is `ip` (the address of
# the default route's interface), and `timeout 2 hostname -f` when /etc/hosts does not qualify a
# host name without a dot.
# The tools the values used to come from (uname, id, getconf...) remain the fallback where a file
# is missing (non-Linux, no /proc, kernels before 6.1 for the architecture), and `id` names a
# user that /etc/passwd does not have (LDAP, sssd). Values are what those tools print, except that
# a host name with a dot is taken as the FQDN. docs/benchmarks.md has the numbers.
# No arithmetic or expansion below may fail on odd input: dash exits on a bad $((...)). And the
# script must not `exit` or `cd`: planning runs it in the shell that then runs the probe
# (src/transport/wrap.rs, `chained`); its status is that of its last command.
LC_ALL=C
export LC_ALL
out=
kv() { out="$out$1=$2
"; }
have() { command -v "$1" >/dev/null 2>&1; }
# The first line of file $1 in $v (empty if unreadable); true if it is not empty.
first() { v=; [ -r "$1" ] && IFS= read -r v 2>/dev/null <"$1"; [ -n "$v" ]; }
num() { case $1 in '' | *[!0-9]*) return 1 ;; esac; }

kv format 1
# The uname(2) fields, from the same kernel strings (kernel.arch exists since Linux 6.1).
first /proc/sys/kernel/ostype || v=$(uname -s 2>/dev/null)
kv kernel_name "$v"
first /proc/sys/kernel/osrelease || v=$(uname -r 2>/dev/null)
kv kernel "$v"
first /proc/sys/kernel/arch || v=$(uname -m 2>/dev/null)
kv arch "$v"
first /proc/sys/kernel/hostname || v=$(uname -n 2>/dev/null)
host=$v
kv hostname "$host"

# A host name with a dot is already qualified (hostname -f could only return an alias from the
# resolver, at the price of a lookup). Otherwise, when nsswitch.conf has the resolver read
# /etc/hosts first (the usual setup), the canonical name is the first name on the first line
# naming the host, which is what hostname -f prints, without starting two programs. Failing
# that, ask the resolver, but a broken one can stall hostname -f for many seconds, and facts must
# stay fast.
fqdn=
case $host in
*.*) fqdn=$host ;;
*)
    files_first=
    if [ -r /etc/nsswitch.conf ]; then
        while read -r k s rest; do
            case $k in hosts:) [ "$s" = files ] && files_first=1 && break ;; esac
        done 2>/dev/null </etc/nsswitch.conf
    fi
    if [ -n "$files_first" ] && [ -n "$host" ] && [ -r /etc/hosts ]; then
        set -f
        while read -r l; do
            set -- ${l%%#*}
            [ $# -ge 2 ] || continue
            shift
            canon=$1
            for n in "$@"; do
                if [ "$n" = "$host" ]; then fqdn=$canon && break 2; fi
            done
        done 2>/dev/null </etc/hosts
        set +f
    fi
    if [ -z "$fqdn" ] && have hostname; then
        if have timeout; then fqdn=$(timeout 2 hostname -f 2>/dev/null); else fqdn=$(hostname -f 2>/dev/null); fi
    fi
    ;;
esac
kv fqdn "$fqdn"

# Online CPUs, as glibc's sysconf(_SC_NPROCESSORS_ONLN) counts them: the ranges in
# /sys/devices/system/cpu/online, e.g. "0-3,6,8-11".
cpus=
if first /sys/devices/system/cpu/online; then
    n=0 rest=$v
    while [ -n "$rest" ]; do
        r=${rest%%,*}
        case $rest in *,*) rest=${rest#*,} ;; *) rest= ;; esac
        lo=${r%-*} hi=${r#*-}
        if num "$lo" && num "$hi" && [ "$hi" -ge "$lo" ]; then
            n=$((n + hi - lo + 1))
        else
            n=0 && break
        fi
    done
    [ "$n" -gt 0 ] && cpus=$n
fi
[ -n "$cpus" ] || cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null) || cpus=
[ -n "$cpus" ] || cpus=$(nproc 2>/dev/null) || cpus=
[ -n "$cpus" ] || cpus=$(grep -c '^processor' /proc/cpuinfo 2>/dev/null) || cpus=
kv cpus "$cpus"

# MemTotal is the first line of /proc/meminfo.
mem=
if [ -r /proc/meminfo ]; then
    while read -r k n u; do
        case $k in MemTotal:) [ "$u" = kB ] && num "$n" && mem=$n && break ;; esac
    done 2>/dev/null </proc/meminfo
fi
kv mem_kb "$mem"

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
first /proc/1/comm
kv pid1 "$v"

# Effective uid and gid (what id -u and id -g print) from the shell's own /proc/self/status, the
# name and shell from the first /etc/passwd entry with that uid. `id` only where that falls short:
# no /proc, or a user known only to NSS (LDAP, sssd...).
uid= gid= user= shell= ran_id=
if [ -r /proc/self/status ]; then
    while read -r k a b rest; do
        case $k in
        Uid:) uid=$b ;;
        Gid:) gid=$b && break ;;
        esac
    done 2>/dev/null </proc/self/status
fi
num "$uid" || uid=
num "$gid" || gid=
# One `id` call: "uid=1000(app) gid=1000(app) [euid=0(root)] [egid=...] groups=...", where id -un
# would print the number for a uid without a name.
from_id() {
    ran_id=1
    idout=$(id 2>/dev/null) || idout=
    set -f
    for w in $idout; do
        case $w in
        uid=* | euid=*) r=${w#*=} && uid=${r%%\(*} && user=$uid && case $r in *\(*\)) r=${r#*\(} && user=${r%\)} ;; esac ;;
        gid=* | egid=*) r=${w#*=} && gid=${r%%\(*} ;;
        esac
    done
    set +f
    num "$uid" || uid=
    num "$gid" || gid=
}
[ -n "$uid" ] && [ -n "$gid" ] || from_id
if [ -n "$uid" ] && [ -r /etc/passwd ]; then
    while IFS=: read -r name pw u g gecos dir login; do
        if [ "$u" = "$uid" ]; then
            [ -n "$ran_id" ] || user=$name
            shell=$login
            break
        fi
    done 2>/dev/null </etc/passwd
fi
[ -n "$user" ] || [ -n "$ran_id" ] || from_id
kv user "$user"
kv uid "$uid"
kv gid "$gid"
kv home "${HOME:-}"
[ -n "$shell" ] || shell=${SHELL:-}
kv shell "$shell"

# The address of the interface holding the default route: the first default route in the main
# table (the first lines of /proc/net/route, which lists routes in address order) whose
# interface is real, then that interface's first IPv4 address.
dev=
if [ -r /proc/net/route ]; then
    {
        read -r header
        while read -r i d g f rc use m mask rest; do
            [ "$d" = 00000000 ] || break
            if [ "$mask" = 00000000 ] && [ "$i" != '*' ]; then dev=$i && break; fi
        done
    } 2>/dev/null </proc/net/route
elif have ip; then
    r=$(ip -4 route show default 2>/dev/null) || r=
    case $r in *" dev "*) r=${r#* dev } && dev=${r%%[ 	
]*} ;; esac
fi
ipv4=
if [ -n "$dev" ] && have ip; then
    # "2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\ ..."
    a=$(ip -4 -o addr show dev "$dev" 2>/dev/null) || a=
    case $a in *" inet "*) a=${a#* inet } && ipv4=${a%%[!0-9.]*} ;; esac
fi
kv ipv4 "$ipv4"

first /etc/machine-id || first /var/lib/dbus/machine-id
kv machine_id "$v"

for f in /etc/os-release /usr/lib/os-release; do
    if [ -r "$f" ]; then
        while IFS= read -r l || [ -n "$l" ]; do
            out="${out}os_release.$l
"
        done 2>/dev/null <"$f"
        break
    fi
done
printf '%s' "$out"
