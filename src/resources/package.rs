//! `package`: system packages through the host's package manager (apt, dnf, yum, apk, pacman):
//! installed (optionally at a pinned version), at the newest available version, or absent.
//! One resource may name several packages; they are probed together and installed or removed
//! with one command, so a plan shows exactly which of them change.
//!
//! The probe prints, for every name, `installed.NAME=VERSION` (empty when not installed) and,
//! where the plan needs it, `candidate.NAME=VERSION`: the version the manager would install
//! (empty when none is known). It never refreshes package lists: probing does not change the
//! host, so `latest` compares with the lists the host already has, and `update-cache=#true`
//! refreshes them just before installing. A package to install that has no candidate is in none
//! of the host's repositories (as its lists know them): a plan error, unless `update-cache=#true`
//! may still bring it.
//!
//! Apply installs exactly the version the plan shows: the configured `version`, else the
//! candidate, written into the install command (`name=VERSION`, `name-VERSION`). The candidates
//! are part of the observed state, so a plan whose candidates moved before apply is refused as
//! stale. With `update-cache=#true` the refresh runs inside apply, after that check: a step
//! between the refresh and the install compares the candidates again and stops, naming both
//! versions, when one is no longer what the plan showed.

use super::*;
use crate::facts::PackageManager as HostManager;
use crate::plan::PlannedResource;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageState {
    Present,
    Absent,
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Auto,
    Apt,
    Dnf,
    Yum,
    Apk,
    Pacman,
}

/// What the configuration asks for, as read from its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// Package names, in the order written.
    pub names: Vec<String>,
    pub state: PackageState,
    /// Pinned version (only with one name and state present).
    pub version: Option<String>,
    pub manager: PackageManager,
    /// Refresh the package lists before installing.
    pub update_cache: bool,
}

pub fn parse(cx: &mut Cx, r: &mut NodeR<'_>) -> Option<Spec> {
    let usage = "package NAME... [state=\"present\"|\"absent\"|\"latest\"] [version=\"1.2.3\"]";
    r.expect_args(cx, 1, usize::MAX, usage);
    let mut names = Vec::new();
    for i in 0..r.args().len() {
        let Some(n) = r.arg_str(cx, i) else { continue };
        let ok = !n.is_empty()
            && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && n.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_' | ':' | '@')
            });
        if ok {
            names.push(n.value);
        } else {
            cx.push(
                Diag::new("config::invalid-name", format!("invalid package name {:?}", n.value))
                    .at(n.span, "invalid package name")
                    .help("package names use letters, digits and . + - _ : @; give several packages as separate arguments"),
            );
        }
    }
    let state = r.choice(cx, "state", &["present", "absent", "latest"]);
    let version = r.str(cx, "version");
    let manager = match r
        .choice(
            cx,
            "manager",
            &["auto", "apt", "dnf", "yum", "apk", "pacman"],
        )
        .map(|s| *s)
    {
        Some("apt") => PackageManager::Apt,
        Some("dnf") => PackageManager::Dnf,
        Some("yum") => PackageManager::Yum,
        Some("apk") => PackageManager::Apk,
        Some("pacman") => PackageManager::Pacman,
        _ => PackageManager::Auto,
    };
    let update_cache = r.bool(cx, "update-cache").unwrap_or(false);
    let state = match state.as_ref().map(|s| **s) {
        Some("absent") => PackageState::Absent,
        Some("latest") => PackageState::Latest,
        _ => PackageState::Present,
    };
    if let Some(v) = &version {
        if names.len() > 1 {
            cx.push(
                Diag::new(
                    "config::version-with-many",
                    "`version` needs exactly one package",
                )
                .at(v.span, "which package?")
                .help("write one `package` node per pinned version"),
            );
        }
        if state != PackageState::Present {
            cx.push(
                Diag::new(
                    "config::version-state",
                    "`version` only goes with state \"present\"",
                )
                .at(v.span, "version with another state")
                .help("remove `version`, or the state"),
            );
        }
        if v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            cx.push(
                Diag::new(
                    "config::invalid-version",
                    format!("invalid version {:?}", v.value),
                )
                .at(v.span, "invalid version"),
            );
        }
    }
    if names.is_empty() {
        return None;
    }
    Some(Spec {
        names,
        state,
        version: version.map(|v| v.value),
        manager,
        update_cache,
    })
}

/// The package managers nexus drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    Apt,
    Dnf,
    Yum,
    Apk,
    Pacman,
}

impl Manager {
    pub fn name(self) -> &'static str {
        match self {
            Manager::Apt => "apt",
            Manager::Dnf => "dnf",
            Manager::Yum => "yum",
            Manager::Apk => "apk",
            Manager::Pacman => "pacman",
        }
    }

    /// The command the probe needs; its absence means the manager is not installed.
    fn query_tool(self) -> &'static str {
        match self {
            Manager::Apt => "dpkg-query",
            Manager::Dnf | Manager::Yum => "rpm",
            Manager::Apk => "apk",
            Manager::Pacman => "pacman",
        }
    }

    /// Variables the probe functions of dnf and yum read.
    fn shell_vars(self) -> &'static str {
        match self {
            Manager::Dnf => "nx_pm=dnf nx_avail=--available\n",
            Manager::Yum => "nx_pm=yum nx_avail=available\n",
            Manager::Apt | Manager::Apk | Manager::Pacman => "",
        }
    }

    /// How a pinned version is written in an install command.
    fn target(self, name: &str, version: Option<&str>) -> String {
        match (self, version) {
            (_, None) => q(name),
            (Manager::Dnf | Manager::Yum, Some(v)) => q(&format!("{name}-{v}")),
            (Manager::Apt | Manager::Apk | Manager::Pacman, Some(v)) => q(&format!("{name}={v}")),
        }
    }
}

/// Where apply keeps, on an apt host, the package files of the versions it replaces or removes,
/// so that a rollback (or any install) can put back a version the repositories dropped since
/// (docs/rollback.md, "Package versions the repositories dropped"). Written by root alone;
/// readable by all, as apt's download sandbox user must read a file apt installs.
pub const KEPT_PACKAGES: &str = "/var/cache/nexus/packages";

/// Where apt keeps the package files it downloaded (until `apt-get clean`).
const APT_ARCHIVES: &str = "/var/cache/apt/archives";

/// `nx_deb NAME VERSION` prints the start of the file name apt gives that version of the package
/// (`NAME_VERSION_`, an epoch's `:` written `%3a`; a `:ARCH` qualifier is not part of it).
const DEB_NAME_FN: &str = "nx_deb() { case $2 in *:*) printf '%s_%s%%3a%s_' \"${1%%:*}\" \"${2%%:*}\" \"${2#*:}\";; *) printf '%s_%s_' \"${1%%:*}\" \"$2\";; esac; }\n";

/// How an install command is written: with the versions pinned (a configured `version`, or a
/// rollback's previous version: apt may then downgrade), and as an upgrade (apk's `-u`).
#[derive(Debug, Clone, Copy)]
struct Install {
    pinned: bool,
    upgrade: bool,
}

/// A name to install or upgrade, with the version apply installs: the configured `version`, else
/// the candidate (none only for a name without one, planned because update-cache may bring it).
#[derive(Debug, Clone, Copy)]
struct Target<'a> {
    name: &'a str,
    version: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The configured package with each name listed once, in the order written.
    pub spec: Spec,
    /// The host's name, for error messages.
    pub host: String,
    /// The manager that installs it: the configured one, else the host's.
    pub manager: Manager,
    pub sudo: bool,
}

/// `package nginx, curl`: how plans name the packages, also when skipped before resolving.
pub fn label(p: &Spec) -> String {
    format!("package {}", p.names.join(", "))
}

pub fn resolve(p: &Spec, ctx: &ResolveCtx<'_>) -> Result<Package, ResourceError> {
    let spec = Spec {
        names: once_each(&p.names),
        ..p.clone()
    };
    let manager = match p.manager {
        PackageManager::Apt => Manager::Apt,
        PackageManager::Dnf => Manager::Dnf,
        PackageManager::Yum => Manager::Yum,
        PackageManager::Apk => Manager::Apk,
        PackageManager::Pacman => Manager::Pacman,
        PackageManager::Auto => match ctx.facts.package_manager {
            Some(HostManager::Apt) => Manager::Apt,
            Some(HostManager::Dnf) => Manager::Dnf,
            Some(HostManager::Yum) => Manager::Yum,
            Some(HostManager::Apk) => Manager::Apk,
            Some(HostManager::Pacman) => Manager::Pacman,
            Some(HostManager::Zypper) => {
                return Err(ResourceError::Unsupported(format!(
                    "package {}: {} uses zypper, which nexus does not drive; supported are apt, dnf, yum, apk and pacman",
                    spec.names.join(", "),
                    ctx.host
                )));
            }
            None => {
                return Err(ResourceError::Unsupported(format!(
                    "package {}: no supported package manager (apt, dnf, yum, apk, pacman) found on {}",
                    spec.names.join(", "),
                    ctx.host
                )));
            }
        },
    };
    Ok(Package {
        spec,
        host: ctx.host.to_string(),
        manager,
        sudo: ctx.sudo,
    })
}

/// Shell functions `nx_inst NAME` (installed version or nothing) and `nx_cand NAME INSTALLED`
/// (the version an install or upgrade would leave, or nothing) for one manager.
fn probe_functions(m: Manager) -> &'static str {
    match m {
        // `dpkg-query` exits 1 for unknown names but still prints the known ones; a removed
        // package may linger as `deinstall ok config-files`, which is not installed.
        Manager::Apt => concat!(
            "nx_inst() { dpkg-query -W -f='${Status} ${Version}\\n' -- \"$1\" 2>/dev/null | while read -r _w _e s v; do if [ \"$s\" = installed ]; then printf '%s\\n' \"$v\"; break; fi; done; }\n",
            "nx_cand() { apt-cache policy \"$1\" 2>/dev/null | sed -n 's/^  Candidate: //p' | sed 's/^(none)$//' | head -n 1; }\n",
        ),
        // check-update exits 100 when an update is listed, 0 when there is none; it lists only
        // installed packages, so a missing one is looked up among the available ones
        // (`$nx_avail`: `--available` for dnf, `available` for yum). Both print
        // `NAME.ARCH VERSION REPO`, wrapped after the name when it is long.
        Manager::Dnf | Manager::Yum => concat!(
            "nx_inst() { if o=$(rpm -q --qf '%{VERSION}-%{RELEASE}\\n' \"$1\" 2>/dev/null); then printf '%s\\n' \"$o\" | tail -n 1; fi; }\n",
            "nx_nevr() { awk -v p=\"$1.\" 'f { print $1; exit } index($1, p) == 1 { if (NF >= 2) { print $2; exit } f = 1 }'; }\n",
            "nx_cand() { if [ -z \"$2\" ]; then \"$nx_pm\" -q list $nx_avail \"$1\" 2>/dev/null | nx_nevr \"$1\"; return; fi; o=$(\"$nx_pm\" -q check-update \"$1\" 2>/dev/null); case $? in 0) printf '%s\\n' \"$2\";; 100) printf '%s\\n' \"$o\" | nx_nevr \"$1\";; esac; }\n",
        ),
        // `apk list` prints `NAME-VERSION ARCH {ORIGIN} (LICENSE) [STATUS]`; `-u` lists the
        // upgrades of an installed package, `-a` what the repositories hold of a missing one
        // (the first listed: a branch's repositories carry one version of a package).
        Manager::Apk => concat!(
            "nx_ver() { awk -v p=\"$1-\" 'index($1, p) == 1 { v = substr($1, length(p) + 1); if (v ~ /^[0-9]/) { print v; exit } }'; }\n",
            "nx_inst() { apk list -I \"$1\" 2>/dev/null | nx_ver \"$1\"; }\n",
            "nx_cand() { if [ -z \"$2\" ]; then apk list -a \"$1\" 2>/dev/null | nx_ver \"$1\"; return; fi; u=$(apk list -u \"$1\" 2>/dev/null | nx_ver \"$1\"); printf '%s\\n' \"${u:-$2}\"; }\n",
        ),
        Manager::Pacman => concat!(
            "nx_inst() { pacman -Q -- \"$1\" 2>/dev/null | awk '{ print $2; exit }'; }\n",
            "nx_cand() { pacman -Sp --print-format '%v' -- \"$1\" 2>/dev/null | tail -n 1; }\n",
        ),
    }
}

impl Package {
    fn names_words(&self) -> String {
        self.spec
            .names
            .iter()
            .map(|n| q(n))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Versions match exactly, or without the installed epoch when the pin has none; rpm pins
    /// may also leave out the release (`1.2.3` matches `1.2.3-4.el9`), as `dnf install N-V` does.
    fn version_matches(&self, installed: &str, want: &str) -> bool {
        if installed == want {
            return true;
        }
        let bare = match installed.split_once(':') {
            Some((epoch, rest))
                if !want.contains(':') && epoch.chars().all(|c| c.is_ascii_digit()) =>
            {
                rest
            }
            _ => installed,
        };
        bare == want
            || (matches!(self.manager, Manager::Dnf | Manager::Yum)
                && bare.strip_prefix(want).is_some_and(|r| r.starts_with('-')))
    }

    fn update_cache_step(&self) -> Step {
        let script = match self.manager {
            Manager::Apt => "apt-get update -q",
            Manager::Dnf => "dnf -y makecache",
            Manager::Yum => "yum -y makecache",
            Manager::Apk => "apk update",
            Manager::Pacman => "pacman -Sy --noconfirm",
        };
        Step::new(script, self.sudo)
    }

    /// After update-cache's refresh: fails, naming both versions, unless every `(name, installed,
    /// planned)` still has the planned version as its candidate. Installing the planned version
    /// anyway could mean an outdated one the refresh was asked to get past, or one gone from the
    /// repositories; installing the new candidate would not be what the plan showed.
    fn candidate_check_step(&self, checks: &[(&str, &str, &str)]) -> Step {
        let mut s = format!("LC_ALL=C; export LC_ALL\n{}", self.manager.shell_vars());
        for l in probe_functions(self.manager).lines() {
            if !l.starts_with("nx_inst()") {
                s.push_str(l);
                s.push('\n');
            }
        }
        s.push_str("nx_ok=0\nnx_want() { c=$(nx_cand \"$1\" \"$2\"); [ \"$c\" = \"$3\" ] || { printf 'nexus: %s: the plan installs %s, but after refreshing the package lists the candidate is %s; plan again\\n' \"$1\" \"$3\" \"${c:-(none)}\" >&2; nx_ok=1; }; }\n");
        for (name, installed, planned) in checks {
            s.push_str(&format!(
                "nx_want {} {} {}\n",
                q(name),
                q(installed),
                q(planned)
            ));
        }
        s.push_str("exit $nx_ok");
        Step::new(s, self.sudo)
    }

    /// Steps that install `missing` and bring `outdated` to their targets' versions.
    fn install_steps(&self, missing: &[Target<'_>], outdated: &[Target<'_>]) -> Vec<Step> {
        let how = Install {
            pinned: self.spec.version.is_some(),
            upgrade: self.spec.state == PackageState::Latest,
        };
        self.install_steps_as(missing, outdated, how)
    }

    /// What a rollback runs to undo this change (docs/rollback.md): the versions installed before
    /// are installed again, pinned (downgrading where needed), and names the change installed are
    /// removed. Empty (irreversible) with pacman, whose databases hold one version of a package.
    /// The plan's re-probe at apply guarantees the host still has what `before` says. `removed`: the
    /// change removed the names of `before`.
    fn undo_steps(&self, before: &[Target<'_>], installed: &[&str], removed: bool) -> Vec<Step> {
        if self.manager == Manager::Pacman && !before.is_empty() {
            return Vec::new();
        }
        let how = Install {
            pinned: true,
            upgrade: false,
        };
        // What the undo replaces is on the host at its time: the names the change installed,
        // and those it upgraded or downgraded (not those it removed, which `before` also lists).
        let replaced: Vec<&str> = match removed {
            true => installed.to_vec(),
            false => installed
                .iter()
                .copied()
                .chain(before.iter().map(|t| t.name))
                .collect(),
        };
        let mut steps: Vec<Step> = self.keep_step(&replaced, before).into_iter().collect();
        if !installed.is_empty() {
            steps.push(self.remove_step(installed));
        }
        if !before.is_empty() {
            steps.extend(self.install_steps_as(&[], before, how));
        }
        steps
    }

    fn install_steps_as(
        &self,
        missing: &[Target<'_>],
        outdated: &[Target<'_>],
        how: Install,
    ) -> Vec<Step> {
        let words = |targets: &[Target<'_>]| {
            targets
                .iter()
                .map(|t| {
                    // pacman's sync databases hold one version of a package, which `-S` installs:
                    // there is no older or newer one to pin to, so a candidate is not written
                    // into the command. The candidate is in the probe's fingerprint (a plan whose
                    // sync databases moved is stale) and update-cache's check step compares it.
                    let pin = match self.manager {
                        Manager::Pacman if !how.pinned => None,
                        _ => t.version,
                    };
                    self.manager.target(t.name, pin)
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let all: Vec<Target<'_>> = missing.iter().chain(outdated).copied().collect();
        let mut steps = Vec::new();
        match self.manager {
            Manager::Apt => {
                let downgrade = if how.pinned && !outdated.is_empty() {
                    " --allow-downgrades"
                } else {
                    ""
                };
                let install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";
                // A version the package lists no longer have is installed from the copy apply
                // kept when it replaced it ([`Package::keep_step`]): a kept file is passed in
                // place of its `NAME=VERSION` (apt still prefers the repositories' copy where the
                // lists have it).
                steps.push(format!(
                    "# a version the package lists no longer have comes from the copy nexus kept\n{DEB_NAME_FN}nx_arch=$(dpkg --print-architecture)\nset --\nfor t in {}; do\n  case $t in *=*)\n    n=${{t%%=*}} v=${{t#*=}} a=${{t%%=*}}; a=${{a#*:}}; [ \"$a\" != \"$n\" ] || a=$nx_arch\n    for f in {KEPT_PACKAGES}/\"$(nx_deb \"$n\" \"$v\")\"\"$a\".deb {KEPT_PACKAGES}/\"$(nx_deb \"$n\" \"$v\")\"all.deb; do [ -f \"$f\" ] && {{ t=$f; break; }}; done ;;\n  esac\n  set -- \"$@\" \"$t\"\ndone\n{install}{downgrade} -- \"$@\"",
                    words(&all)
                ));
            }
            Manager::Dnf | Manager::Yum => {
                let pm = self.manager.name();
                if !missing.is_empty() {
                    steps.push(format!("{pm} -y install -- {}", words(missing)));
                }
                if !outdated.is_empty() {
                    steps.push(match (self.manager, how.pinned) {
                        (_, false) => format!("{pm} -y upgrade -- {}", words(outdated)),
                        // dnf installs a given version whichever way it lies from the current one.
                        (Manager::Dnf, true) => format!("dnf -y install -- {}", words(outdated)),
                        // yum only goes down with `downgrade`, which refuses to go up.
                        _ => {
                            let w = words(outdated);
                            format!("yum -y downgrade -- {w} || yum -y install -- {w}")
                        }
                    });
                }
            }
            Manager::Apk => {
                let upgrade = if how.upgrade { " -u" } else { "" };
                steps.push(format!("apk add{upgrade} -- {}", words(&all)));
            }
            Manager::Pacman => {
                steps.push(format!("pacman -S --noconfirm --needed -- {}", words(&all)))
            }
        }
        steps.into_iter().map(|s| Step::new(s, self.sudo)).collect()
    }

    /// Before apt replaces or removes the installed versions of `names`: a copy of each one's
    /// package file goes to [`KEPT_PACKAGES`], from apt's cache where it still is (a hard link),
    /// else downloaded from the repositories. Best effort: a version found in neither is named
    /// on stderr and the change goes on (the rollback would then need it in the repositories,
    /// as before). None for the other managers, which do not keep versions (docs/rollback.md).
    fn keep_step(&self, names: &[&str], installs: &[Target<'_>]) -> Option<Step> {
        if self.manager != Manager::Apt || names.is_empty() {
            return None;
        }
        let words = |w: Vec<String>| w.join(" ");
        let names = words(names.iter().map(|n| q(n)).collect());
        // The files of the versions this resource installs next are never pruned here: a
        // rollback's keep step runs right before the install that may need one.
        let installs = words(
            installs
                .iter()
                .filter_map(|t| Some(q(&format!("{}={}", t.name, t.version?))))
                .collect(),
        );
        let mut s = format!(
            "# nexus keeps the versions this replaces, for a rollback (docs/rollback.md)\n{DEB_NAME_FN}nx_d={KEPT_PACKAGES}\numask 022\nmkdir -p \"$nx_d\" && chmod 755 \"${{nx_d%/*}}\" \"$nx_d\" || exit 0\n\
             nx_p=\nfor t in {installs}; do nx_p=\"$nx_p $(nx_deb \"${{t%%=*}}\" \"${{t#*=}}\")\"; done\n\
             dpkg-query -W -f='${{db:Status-Abbrev}} ${{Package}} ${{Version}} ${{Architecture}}\\n' -- {names} 2>/dev/null | while read -r st n v a; do\n"
        );
        s.push_str(concat!(
            "  case $st in ?i) ;; *) continue ;; esac\n",
            "  f=$(nx_deb \"$n\" \"$v\")$a.deb\n",
            "  [ -f \"$nx_d/$f\" ] && continue\n",
            "  t=$(mktemp -d \"$nx_d/.keep.XXXXXX\") || continue\n",
        ));
        s.push_str(&format!(
            "  if [ -f \"{APT_ARCHIVES}/$f\" ]; then ln \"{APT_ARCHIVES}/$f\" \"$t/$f\" 2>/dev/null || cp \"{APT_ARCHIVES}/$f\" \"$t/$f\" || rm -f \"$t/$f\"\n"
        ));
        s.push_str(concat!(
            // Best effort, so a mirror that does not answer costs one try of 20 s at most.
            "  else case $a in all) w=$n ;; *) w=$n:$a ;; esac\n",
            "    (cd \"$t\" && apt-get download -q -o APT::Sandbox::User=root -o Acquire::Retries=0 -o Acquire::http::Timeout=20 -o Acquire::https::Timeout=20 -- \"$w=$v\" </dev/null >/dev/null 2>&1); fi\n",
            "  for x in \"$t\"/*.deb; do [ -f \"$x\" ] && mv \"$x\" \"$nx_d/$f\" && touch \"$nx_d/$f\"; done\n",
            "  rm -rf \"$t\"\n",
            "  [ -f \"$nx_d/$f\" ] || printf 'nexus: %s %s is neither in apt'\\''s cache nor in the repositories: a rollback to it needs it in the repositories again\\n' \"$n\" \"$v\" >&2\n",
        ));
        s.push_str(&format!(
            "  ls -t \"$nx_d/${{n}}_\"*.deb 2>/dev/null | tail -n +{} | while read -r o; do\n    for p in $nx_p; do case ${{o##*/}} in \"$p\"*) continue 2 ;; esac; done\n    rm -f \"$o\"\n  done\ndone\nexit 0",
            crate::state::KEEP_GENERATIONS + 1
        ));
        Some(Step::new(s, self.sudo))
    }

    fn remove_step(&self, names: &[&str]) -> Step {
        let w = names.iter().map(|n| q(n)).collect::<Vec<_>>().join(" ");
        let script = match self.manager {
            Manager::Apt => format!("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q -- {w}"),
            Manager::Dnf => format!("dnf -y remove -- {w}"),
            Manager::Yum => format!("yum -y remove -- {w}"),
            Manager::Apk => format!("apk del -- {w}"),
            Manager::Pacman => format!("pacman -R --noconfirm -- {w}"),
        };
        Step::new(script, self.sudo)
    }
}

/// What every probe under manager `m` starts with (its names follow): the tool check and the
/// manager's probe functions.
fn probe_prelude(m: Manager) -> String {
    format!(
        "LC_ALL=C; export LC_ALL\n\
         command -v {tool} >/dev/null 2>&1 || {{ echo tool=false; exit 0; }}\n\
         echo tool=true\n{vars}{functions}",
        tool = m.query_tool(),
        vars = m.shell_vars(),
        functions = probe_functions(m)
    )
}

/// Whether one package resource's changes by consecutive runs (`changes`, oldest first), each
/// undone by its undo steps, are all undone by the oldest one's undo alone (docs/rollback.md).
///
/// A package's undo is absolute: it installs the versions the names it changed had before its
/// run, pinned, and removes the names its run installed, whatever versions the host has by then.
/// So undoing each change newest first leaves every name as the oldest run that changed it found
/// it, and so does the oldest one's undo alone, without installing the versions in between (which
/// may have left the repositories), provided that:
/// - one manager probed every change (one package database; the probe starts with its prelude);
/// - every name a later run changed, the oldest changed too: a name a run left alone is not in
///   its undo. The fields of a change name the packages it changes (a rollback's change lists
///   none, so whose names it changed is not known here);
/// - no name ends as the oldest run found it (installed, then removed again; or put back at its
///   version): its undo would then run against the state it restores, where `dnf remove` of a
///   package that is not installed fails.
pub fn oldest_undo_suffices(changes: &[&PlannedResource]) -> bool {
    let manager = |r: &PlannedResource| {
        [
            Manager::Apt,
            Manager::Dnf,
            Manager::Yum,
            Manager::Apk,
            Manager::Pacman,
        ]
        .into_iter()
        .find(|m| r.probe.starts_with(&probe_prelude(*m)))
    };
    let Some((oldest, later)) = changes.split_first() else {
        return false;
    };
    let known = |r: &PlannedResource| {
        r.kind == ResourceType::Package
            && !r.undo.is_empty()
            && !r.fields.is_empty()
            && manager(r).is_some()
            && manager(r) == manager(oldest)
    };
    if !changes.iter().all(|r| known(r)) {
        return false;
    }
    // Per name: the version the oldest run found, and the one the newest change of it left.
    let mut names: BTreeMap<&str, (Option<&str>, Option<&str>)> = oldest
        .fields
        .iter()
        .map(|f| (f.field.as_str(), (f.from.as_deref(), f.to.as_deref())))
        .collect();
    for f in later.iter().flat_map(|r| &r.fields) {
        match names.get_mut(f.field.as_str()) {
            Some((_, now)) => *now = f.to.as_deref(),
            None => return false,
        }
    }
    names.values().all(|(before, now)| before != now)
}

impl Resource for Package {
    fn id(&self) -> String {
        ResourceType::Package.id(&self.spec.names.join(","))
    }

    fn label(&self) -> String {
        label(&self.spec)
    }

    fn probe(&self) -> String {
        let mut s = probe_prelude(self.manager);
        // Candidates cost a query each: only `latest` needs them for installed packages; every
        // missing package needs one (none means no repository the host knows has it).
        let cand = match self.spec.state {
            PackageState::Latest => {
                "printf 'candidate.%s=%s\\n' \"$n\" \"$(nx_cand \"$n\" \"$v\")\""
            }
            PackageState::Present => {
                "[ -n \"$v\" ] || printf 'candidate.%s=%s\\n' \"$n\" \"$(nx_cand \"$n\" \"$v\")\""
            }
            PackageState::Absent => ":",
        };
        s.push_str(&format!(
            "for n in {names}; do\n  v=$(nx_inst \"$n\")\n  printf 'installed.%s=%s\\n' \"$n\" \"$v\"\n  {cand}\ndone",
            names = self.names_words()
        ));
        s
    }

    fn plan(&self, o: &Observed) -> Result<Change, ResourceError> {
        if o.require("tool")? != "true" {
            return Err(ResourceError::Unsupported(format!(
                "{}: {} is not installed on {} ({} not found)",
                self.label(),
                self.manager.name(),
                self.host,
                self.manager.query_tool()
            )));
        }
        let mut missing: Vec<Target<'_>> = Vec::new();
        let mut outdated: Vec<Target<'_>> = Vec::new();
        let mut removed: Vec<&str> = Vec::new();
        let mut fields = Vec::new();
        // Missing names no repository has, as far as the host's current lists know.
        let mut unknown: Vec<&str> = Vec::new();
        // (name, installed, candidate) to compare again after update-cache's refresh.
        let mut checks: Vec<(&str, &str, &str)> = Vec::new();
        for name in &self.spec.names {
            let installed = o.require(&format!("installed.{name}"))?;
            let candidate = o
                .get(&format!("candidate.{name}"))
                .filter(|c| !c.is_empty());
            match self.spec.state {
                PackageState::Absent => {
                    if !installed.is_empty() {
                        removed.push(name);
                        fields.push(FieldChange::new(name, Some(installed), None));
                    }
                }
                PackageState::Present | PackageState::Latest if installed.is_empty() => {
                    if candidate.is_none() {
                        unknown.push(name);
                    }
                    let version = self.spec.version.as_deref().or(candidate);
                    if let (None, Some(c)) = (&self.spec.version, candidate) {
                        checks.push((name, installed, c));
                    }
                    missing.push(Target { name, version });
                    let to = version.unwrap_or("candidate after refresh");
                    fields.push(FieldChange::new(name, None, Some(to)));
                }
                PackageState::Present => {
                    if let Some(want) = &self.spec.version
                        && !self.version_matches(installed, want)
                    {
                        outdated.push(Target {
                            name,
                            version: Some(want),
                        });
                        fields.push(FieldChange::new(name, Some(installed), Some(want)));
                    }
                }
                PackageState::Latest => {
                    // No candidate: the package is not in the configured repositories (installed
                    // from a file, or the lists are gone); nothing newer is known.
                    if let Some(c) = candidate
                        && c != installed
                    {
                        checks.push((name, installed, c));
                        outdated.push(Target {
                            name,
                            version: Some(c),
                        });
                        fields.push(FieldChange::new(name, Some(installed), Some(c)));
                    }
                }
            }
        }
        if !removed.is_empty() {
            let before: Vec<Target<'_>> = removed
                .iter()
                .map(|n| Target {
                    name: n,
                    version: o.get(&format!("installed.{n}")),
                })
                .collect();
            let mut steps: Vec<Step> = self.keep_step(&removed, &[]).into_iter().collect();
            steps.push(self.remove_step(&removed));
            let mut c = Change::new(
                Action::Delete,
                format!("installed: {}", removed.join(", ")),
                steps,
            );
            c.fields = fields;
            c.undo = self.undo_steps(&before, &[], true);
            return Ok(c);
        }
        if missing.is_empty() && outdated.is_empty() {
            return Ok(Change::no_op(match self.spec.state {
                PackageState::Absent => "not installed",
                PackageState::Present => "installed",
                PackageState::Latest => "up to date",
            }));
        }
        // Installing what no repository has fails at apply ("Unable to locate package"): say so
        // now, unless the refresh that apply runs first may bring it.
        if !unknown.is_empty() && !self.spec.update_cache {
            return Err(ResourceError::Invalid(format!(
                "{}: no installation candidate for {} in the package lists on {} (not in the configured repositories, or the lists are out of date: update-cache=#true refreshes them before installing)",
                self.label(),
                unknown.join(", "),
                self.host
            )));
        }
        let names = |targets: &[Target<'_>]| {
            targets
                .iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut reasons = Vec::new();
        if !missing.is_empty() {
            reasons.push(format!("not installed: {}", names(&missing)));
        }
        if !outdated.is_empty() {
            let what = if self.spec.version.is_some() {
                "other version"
            } else {
                "newer version available"
            };
            reasons.push(format!("{what}: {}", names(&outdated)));
        }
        if !unknown.is_empty() {
            reasons.push(format!(
                "note: no candidate for {} in the host's current package lists, apply refreshes them first",
                unknown.join(", ")
            ));
        }
        // Kept before the refresh, which may drop the replaced version from the lists (and so
        // from what `apt-get download` can fetch).
        let replaced: Vec<&str> = outdated.iter().map(|t| t.name).collect();
        let installs: Vec<Target<'_>> = missing.iter().chain(&outdated).copied().collect();
        let mut steps: Vec<Step> = self.keep_step(&replaced, &installs).into_iter().collect();
        if self.spec.update_cache {
            steps.push(self.update_cache_step());
            if !checks.is_empty() {
                steps.push(self.candidate_check_step(&checks));
            }
        }
        steps.extend(self.install_steps(&missing, &outdated));
        let action = if missing.is_empty() {
            Action::Update
        } else {
            Action::Create
        };
        let before: Vec<Target<'_>> = outdated
            .iter()
            .map(|t| Target {
                name: t.name,
                version: o.get(&format!("installed.{}", t.name)),
            })
            .collect();
        let installed: Vec<&str> = missing.iter().map(|t| t.name).collect();
        let mut c = Change::new(action, reasons.join("; "), steps);
        c.fields = fields;
        c.undo = self.undo_steps(&before, &installed, false);
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(
        manager: Manager,
        names: &[&str],
        state: PackageState,
        version: Option<&str>,
    ) -> Package {
        Package {
            spec: Spec {
                names: names.iter().map(|s| s.to_string()).collect(),
                state,
                version: version.map(str::to_string),
                manager: PackageManager::Auto,
                update_cache: false,
            },
            host: "web1".into(),
            manager,
            sudo: true,
        }
    }

    fn obs(s: &str) -> Observed {
        Observed::parse(s).unwrap()
    }

    fn scripts(c: &Change) -> Vec<String> {
        scripts_of(&c.steps)
    }

    /// A step as these tests compare it: apt's keep step as `keep NAMES`, an apt install as
    /// the command with its words in place of the loop that may swap kept files in for them
    /// (what those two scripts do on a host is tested by running them, below).
    fn shape(script: &str) -> String {
        let between = |from: &str, to: &str| {
            let start = script.find(from).expect(from) + from.len();
            script[start..][..script[start..].find(to).expect(to)].to_string()
        };
        if script.contains(DEB_NAME_FN) && script.contains("dpkg-query -W") {
            return format!("keep {}", between("\\n' -- ", " 2>/dev/null | while"));
        }
        if script.contains(DEB_NAME_FN) && script.contains("set --\nfor t in ") {
            let words = between("for t in ", "; do");
            let last = script.lines().last().unwrap();
            return last.replace("\"$@\"", &words);
        }
        script.to_string()
    }

    const APT_INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";

    /// The change `p` plans from `observed`, as a plan file holds it.
    fn planned(p: &Package, observed: &str) -> PlannedResource {
        let c = p.plan(&obs(observed)).unwrap();
        PlannedResource {
            id: p.id(),
            label: p.label(),
            action: c.action,
            reason: c.reason,
            fields: c.fields,
            steps: c.steps,
            probe: p.probe(),
            undo: c.undo,
            ..PlannedResource::example(ResourceType::Package, "")
        }
    }

    /// Which runs of one package resource the oldest one's undo undoes alone (rollback).
    #[test]
    fn the_oldest_undo_suffices_where_it_provably_leaves_the_same_state() {
        let at = |v: &str| pkg(Manager::Apt, &["a"], PackageState::Present, Some(v));
        let absent = pkg(Manager::Apt, &["a"], PackageState::Absent, None);
        let latest = pkg(Manager::Apt, &["a"], PackageState::Latest, None);
        let none = "tool=true\ninstalled.a=\ncandidate.a=3.0";
        let (v1, v2) = ("tool=true\ninstalled.a=1.0", "tool=true\ninstalled.a=2.0");
        let suffices = |runs: &[&PlannedResource]| oldest_undo_suffices(runs);
        // Installed by run 1, upgraded by runs 2 and 3: run 1's undo removes it.
        let installed = planned(&at("1.0"), none);
        let up2 = planned(&at("2.0"), v1);
        let up3 = planned(&latest, "tool=true\ninstalled.a=2.0\ncandidate.a=3.0");
        assert!(suffices(&[&installed, &up2, &up3]));
        // At 1.0 before run 1, which upgrades it; run 2 upgrades it again.
        assert!(suffices(&[&up2, &up3]));
        // Removed by run 1, installed again by run 2 at another version: run 1's undo puts 1.0
        // back (apt downgrades).
        let removed = planned(&absent, v1);
        assert_eq!(
            scripts_of(&removed.undo),
            [format!("{APT_INSTALL} --allow-downgrades -- 'a=1.0'")]
        );
        assert!(suffices(&[&removed, &planned(&latest, none)]));
        // ... or at the version it had: nothing left to undo, which run 1's undo alone would
        // install again (a no-op some managers fail).
        assert!(!suffices(&[&removed, &planned(&at("1.0"), none)]));
        // Installed by run 1 and removed by run 2: run 1's undo would remove what is not there.
        assert!(!suffices(&[&installed, &planned(&absent, v1)]));
        // Downgraded and upgraded back.
        assert!(!suffices(&[
            &planned(&at("1.0"), v2),
            &planned(&at("2.0"), v1)
        ]));

        // Several names: run 1 installs a, b being there already; run 2 upgrades b, which run
        // 1's undo leaves alone.
        let ab = |state, version| pkg(Manager::Apt, &["a", "b"], state, version);
        let a_only = planned(
            &ab(PackageState::Present, None),
            "tool=true\ninstalled.a=\ncandidate.a=1.0\ninstalled.b=5.0",
        );
        let b_up = planned(
            &ab(PackageState::Latest, None),
            "tool=true\ninstalled.a=1.0\ncandidate.a=1.0\ninstalled.b=5.0\ncandidate.b=6.0",
        );
        assert_eq!(a_only.fields.len(), 1);
        assert!(!suffices(&[&a_only, &b_up]));
        // Run 1 installs both, run 2 upgrades b: run 1's undo removes both.
        let both = planned(
            &ab(PackageState::Present, None),
            "tool=true\ninstalled.a=\ncandidate.a=1.0\ninstalled.b=\ncandidate.b=5.0",
        );
        assert!(suffices(&[&both, &b_up]));

        // Another manager's package database.
        let dnf = pkg(Manager::Dnf, &["a"], PackageState::Present, Some("2.0"));
        assert!(!suffices(&[&installed, &planned(&dnf, v1)]));
        // A rollback's change lists no fields: which names it changed is not known.
        let rollback = PlannedResource {
            fields: Vec::new(),
            ..up2.clone()
        };
        assert!(!suffices(&[&installed, &rollback]));
        // Other types' undo knows only the state its own run found.
        let command = PlannedResource {
            kind: ResourceType::Command,
            ..installed.clone()
        };
        assert!(!super::super::preimage::oldest_undo_suffices(&[
            &command, &command
        ]));
        assert!(super::super::preimage::oldest_undo_suffices(&[
            &installed, &up2
        ]));
    }

    fn scripts_of(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| shape(&s.script)).collect()
    }

    #[test]
    fn apt_present_installs_only_missing_names() {
        let p = pkg(
            Manager::Apt,
            &["nginx", "curl"],
            PackageState::Present,
            None,
        );
        let c = p
            .plan(&obs(
                "tool=true\ninstalled.nginx=\ncandidate.nginx=1.22.1-9\ninstalled.curl=7.88.1-10",
            ))
            .unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(c.reason, "not installed: nginx");
        // The version the plan shows is the one apply installs.
        assert_eq!(scripts(&c), [format!("{APT_INSTALL} -- 'nginx=1.22.1-9'")]);
        assert!(c.steps.iter().all(|s| s.sudo));
        assert_eq!(
            c.fields,
            vec![FieldChange::new("nginx", None, Some("1.22.1-9"))]
        );
        let up = p
            .plan(&obs(
                "tool=true\ninstalled.nginx=1.22.1-9\ninstalled.curl=7.88.1-10",
            ))
            .unwrap();
        assert_eq!(up, Change::no_op("installed"));
    }

    #[test]
    fn a_missing_candidate_is_a_plan_error_unless_the_lists_are_refreshed() {
        let mut p = pkg(Manager::Apt, &["hello"], PackageState::Present, None);
        let none = obs("tool=true\ninstalled.hello=\ncandidate.hello=");
        assert_eq!(
            p.plan(&none),
            Err(ResourceError::Invalid(
                "package hello: no installation candidate for hello in the package lists on web1 (not in the configured repositories, or the lists are out of date: update-cache=#true refreshes them before installing)".into()
            ))
        );
        // Every manager, every state that installs, a pinned version too; only the names
        // without a candidate are named.
        for m in [Manager::Dnf, Manager::Yum, Manager::Apk, Manager::Pacman] {
            for (state, version) in [
                (PackageState::Present, None),
                (PackageState::Present, Some("1.0")),
                (PackageState::Latest, None),
            ] {
                let p = pkg(m, &["a", "b", "c"], state, version);
                let e = p
                    .plan(&obs("tool=true\ninstalled.a=\ncandidate.a=\ninstalled.b=\ncandidate.b=1\ninstalled.c=\ncandidate.c="))
                    .unwrap_err();
                assert!(
                    e.to_string()
                        .starts_with("package a, b, c: no installation candidate for a, c in "),
                    "{e}"
                );
            }
        }
        // An installed package without a candidate (installed from a file) is left alone.
        let l = pkg(Manager::Apt, &["x"], PackageState::Latest, None);
        assert_eq!(
            l.plan(&obs("tool=true\ninstalled.x=1.0\ncandidate.x="))
                .unwrap()
                .action,
            Action::NoOp
        );

        // The refresh apply runs first may bring it: planned, with a note.
        p.spec.update_cache = true;
        let c = p.plan(&none).unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(
            c.reason,
            "not installed: hello; note: no candidate for hello in the host's current package lists, apply refreshes them first"
        );
        assert_eq!(
            c.fields,
            vec![FieldChange::new(
                "hello",
                None,
                Some("candidate after refresh")
            )]
        );
        assert_eq!(
            scripts(&c),
            [
                "apt-get update -q".to_string(),
                format!("{APT_INSTALL} -- hello")
            ]
        );
        let c = p
            .plan(&obs("tool=true\ninstalled.hello=\ncandidate.hello=2.10-3"))
            .unwrap();
        assert_eq!(scripts(&c)[0], "apt-get update -q");
        // Nothing to install: no refresh either, the plan stays empty.
        assert_eq!(
            p.plan(&obs("tool=true\ninstalled.hello=2.10-3"))
                .unwrap()
                .action,
            Action::NoOp
        );
    }

    /// A rollback reinstalls the versions the probe saw, pinned, and removes what was installed.
    #[test]
    fn every_change_carries_its_undo() {
        let undo = |c: &Change| scripts_of(&c.undo);
        let apt = |state, version| pkg(Manager::Apt, &["hello", "curl"], state, version);
        // Newer candidate installed by `latest`: back to the old version, downgrading.
        let c = apt(PackageState::Latest, None)
            .plan(&obs(
                "tool=true\ninstalled.hello=2.10-2\ncandidate.hello=2.10-3\n\
                 installed.curl=\ncandidate.curl=7.88",
            ))
            .unwrap();
        assert_eq!(
            undo(&c),
            [
                "keep curl hello".to_string(),
                "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q -- curl".to_string(),
                format!("{APT_INSTALL} --allow-downgrades -- 'hello=2.10-2'")
            ]
        );
        // Removed by `absent`: installed again at the version it had.
        let c = apt(PackageState::Absent, None)
            .plan(&obs("tool=true\ninstalled.hello=2.10-2\ninstalled.curl="))
            .unwrap();
        assert_eq!(
            undo(&c),
            [format!(
                "{APT_INSTALL} --allow-downgrades -- 'hello=2.10-2'"
            )]
        );
        let dnf = pkg(Manager::Dnf, &["hello"], PackageState::Present, Some("2.0"));
        let c = dnf.plan(&obs("tool=true\ninstalled.hello=1.0-1")).unwrap();
        assert_eq!(undo(&c), ["dnf -y install -- hello-1.0-1"]);
        // pacman cannot install an older version: irreversible.
        let pacman = pkg(Manager::Pacman, &["hello"], PackageState::Latest, None);
        let c = pacman
            .plan(&obs("tool=true\ninstalled.hello=1\ncandidate.hello=2"))
            .unwrap();
        assert_eq!(c.action, Action::Update);
        assert!(c.undo.is_empty());
        // A no-op has nothing to undo.
        let c = apt(PackageState::Present, None)
            .plan(&obs("tool=true\ninstalled.hello=1\ninstalled.curl=2"))
            .unwrap();
        assert!(c.undo.is_empty());
    }

    #[test]
    fn pinned_versions() {
        let p = pkg(
            Manager::Apt,
            &["hello"],
            PackageState::Present,
            Some("2.10-2"),
        );
        let c = p.plan(&obs("tool=true\ninstalled.hello=2.10-3")).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "other version: hello");
        assert_eq!(
            c.fields,
            vec![FieldChange::new("hello", Some("2.10-3"), Some("2.10-2"))]
        );
        assert_eq!(
            scripts(&c),
            [
                "keep hello".to_string(),
                format!("{APT_INSTALL} --allow-downgrades -- 'hello=2.10-2'")
            ]
        );
        assert_eq!(
            p.plan(&obs("tool=true\ninstalled.hello=2.10-2"))
                .unwrap()
                .action,
            Action::NoOp
        );
        // An epoch the pin leaves out does not count.
        assert_eq!(
            p.plan(&obs("tool=true\ninstalled.hello=1:2.10-2"))
                .unwrap()
                .action,
            Action::NoOp
        );
        let c = p
            .plan(&obs("tool=true\ninstalled.hello=\ncandidate.hello=2.10-3"))
            .unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(scripts(&c), [format!("{APT_INSTALL} -- 'hello=2.10-2'")]);

        // rpm pins may leave out the release.
        let d = pkg(
            Manager::Dnf,
            &["nginx"],
            PackageState::Present,
            Some("1.24.0"),
        );
        assert_eq!(
            d.plan(&obs("tool=true\ninstalled.nginx=1.24.0-1.fc39"))
                .unwrap()
                .action,
            Action::NoOp
        );
        let c = d
            .plan(&obs("tool=true\ninstalled.nginx=1.22.1-1.fc39"))
            .unwrap();
        assert_eq!(scripts(&c), ["dnf -y install -- nginx-1.24.0"]);
        let y = pkg(
            Manager::Yum,
            &["nginx"],
            PackageState::Present,
            Some("1.20.1"),
        );
        let c = y
            .plan(&obs("tool=true\ninstalled.nginx=1.22.1-1.el7"))
            .unwrap();
        assert_eq!(
            scripts(&c),
            ["yum -y downgrade -- nginx-1.20.1 || yum -y install -- nginx-1.20.1"]
        );
        let a = pkg(
            Manager::Apk,
            &["curl"],
            PackageState::Present,
            Some("8.5.0-r0"),
        );
        assert_eq!(
            scripts(&a.plan(&obs("tool=true\ninstalled.curl=8.4.0-r0")).unwrap()),
            ["apk add -- 'curl=8.5.0-r0'"]
        );
        let pm = pkg(
            Manager::Pacman,
            &["curl"],
            PackageState::Present,
            Some("8.5.0-1"),
        );
        let c = pm
            .plan(&obs("tool=true\ninstalled.curl=\ncandidate.curl=8.5.0-1"))
            .unwrap();
        assert_eq!(
            scripts(&c),
            ["pacman -S --noconfirm --needed -- 'curl=8.5.0-1'"]
        );
    }

    #[test]
    fn latest_compares_with_the_candidate() {
        let p = pkg(Manager::Apt, &["a", "b", "c"], PackageState::Latest, None);
        let o = obs(
            "tool=true\ninstalled.a=1\ncandidate.a=2\ninstalled.b=5\ncandidate.b=5\ninstalled.c=3\ncandidate.c=",
        );
        let c = p.plan(&o).unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "newer version available: a");
        assert_eq!(c.fields, vec![FieldChange::new("a", Some("1"), Some("2"))]);
        assert_eq!(
            scripts(&c),
            ["keep a".to_string(), format!("{APT_INSTALL} -- 'a=2'")]
        );
        let o = obs(
            "tool=true\ninstalled.a=2\ncandidate.a=2\ninstalled.b=5\ncandidate.b=5\ninstalled.c=\ncandidate.c=9",
        );
        let c = p.plan(&o).unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(c.fields, vec![FieldChange::new("c", None, Some("9"))]);
        let up = obs(
            "tool=true\ninstalled.a=2\ncandidate.a=2\ninstalled.b=5\ncandidate.b=5\ninstalled.c=3\ncandidate.c=3",
        );
        assert_eq!(p.plan(&up).unwrap(), Change::no_op("up to date"));

        let o = obs("tool=true\ninstalled.x=1-1\ncandidate.x=2-1\ninstalled.y=\ncandidate.y=3-1");
        let d = pkg(Manager::Dnf, &["x", "y"], PackageState::Latest, None);
        assert_eq!(
            scripts(&d.plan(&o).unwrap()),
            ["dnf -y install -- y-3-1", "dnf -y upgrade -- x-2-1"]
        );
        let y = pkg(Manager::Yum, &["x", "y"], PackageState::Latest, None);
        assert_eq!(
            scripts(&y.plan(&o).unwrap()),
            ["yum -y install -- y-3-1", "yum -y upgrade -- x-2-1"]
        );
        let a = pkg(Manager::Apk, &["x", "y"], PackageState::Latest, None);
        assert_eq!(
            scripts(&a.plan(&o).unwrap()),
            ["apk add -u -- 'y=3-1' 'x=2-1'"]
        );
        // pacman cannot pin: its sync databases hold the one version it installs.
        let m = pkg(Manager::Pacman, &["x", "y"], PackageState::Latest, None);
        assert_eq!(
            scripts(&m.plan(&o).unwrap()),
            ["pacman -S --noconfirm --needed -- y x"]
        );
    }

    #[test]
    fn absent_removes_installed_names() {
        let o = obs("tool=true\ninstalled.a=1.0\ninstalled.b=");
        let cases = [
            (
                Manager::Apt,
                "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q -- a",
            ),
            (Manager::Dnf, "dnf -y remove -- a"),
            (Manager::Yum, "yum -y remove -- a"),
            (Manager::Apk, "apk del -- a"),
            (Manager::Pacman, "pacman -R --noconfirm -- a"),
        ];
        for (m, want) in cases {
            let p = pkg(m, &["a", "b"], PackageState::Absent, None);
            let c = p.plan(&o).unwrap();
            assert_eq!(c.action, Action::Delete);
            assert_eq!(c.reason, "installed: a");
            // apt keeps the version it removes first (rollback's copy).
            let keep = (m == Manager::Apt).then(|| "keep a".to_string());
            let steps: Vec<String> = keep.into_iter().chain([want.to_string()]).collect();
            assert_eq!(scripts(&c), steps);
            assert_eq!(c.fields, vec![FieldChange::new("a", Some("1.0"), None)]);
            let gone = p
                .plan(&obs("tool=true\ninstalled.a=\ninstalled.b="))
                .unwrap();
            assert_eq!(gone, Change::no_op("not installed"));
        }
    }

    #[test]
    fn install_and_refresh_commands_per_manager() {
        let o = obs("tool=true\ninstalled.a=\ncandidate.a=1.0\ninstalled.b=\ncandidate.b=2.0");
        let cases = [
            (
                Manager::Dnf,
                ["dnf -y makecache", "dnf -y install -- a-1.0 b-2.0"],
            ),
            (
                Manager::Yum,
                ["yum -y makecache", "yum -y install -- a-1.0 b-2.0"],
            ),
            (Manager::Apk, ["apk update", "apk add -- 'a=1.0' 'b=2.0'"]),
            (
                Manager::Pacman,
                [
                    "pacman -Sy --noconfirm",
                    "pacman -S --noconfirm --needed -- a b",
                ],
            ),
        ];
        for (m, [refresh, install]) in cases {
            let mut p = pkg(m, &["a", "b"], PackageState::Present, None);
            let c = p.plan(&o).unwrap();
            assert_eq!(c.action, Action::Create);
            assert_eq!(scripts(&c), [install]);
            assert_eq!(c.fields[0], FieldChange::new("a", None, Some("1.0")));
            // The refresh, the check that it left the planned candidates, the install.
            p.spec.update_cache = true;
            let c = p.plan(&o).unwrap();
            let s = scripts(&c);
            assert_eq!(
                (s.len(), s[0].as_str(), s[2].as_str()),
                (3, refresh, install),
                "{m:?}"
            );
            assert!(
                s[1].ends_with("\nnx_want a '' 1.0\nnx_want b '' 2.0\nexit $nx_ok"),
                "{}",
                s[1]
            );
            assert!(s[1].starts_with("LC_ALL=C; export LC_ALL\n") && !s[1].contains("nx_inst"));
            assert!(c.steps.iter().all(|s| s.sudo));
        }
    }

    /// With update-cache, the step between refresh and install compares the candidates with
    /// the planned versions: here run by the local sh against a stand-in apt-cache.
    #[test]
    fn update_cache_stops_when_the_refresh_moved_a_candidate() {
        let mut p = pkg(Manager::Apt, &["a", "b"], PackageState::Latest, None);
        p.spec.update_cache = true;
        let c = p
            .plan(&obs(
                "tool=true\ninstalled.a=1.0\ncandidate.a=1.1\ninstalled.b=\ncandidate.b=2.0~rc1",
            ))
            .unwrap();
        let check = "LC_ALL=C; export LC_ALL
nx_cand() { apt-cache policy \"$1\" 2>/dev/null | sed -n 's/^  Candidate: //p' | sed 's/^(none)$//' | head -n 1; }
nx_ok=0
nx_want() { c=$(nx_cand \"$1\" \"$2\"); [ \"$c\" = \"$3\" ] || { printf 'nexus: %s: the plan installs %s, but after refreshing the package lists the candidate is %s; plan again\\n' \"$1\" \"$3\" \"${c:-(none)}\" >&2; nx_ok=1; }; }
nx_want a 1.0 1.1
nx_want b '' '2.0~rc1'
exit $nx_ok";
        assert_eq!(
            scripts(&c),
            [
                "keep a".to_string(),
                "apt-get update -q".to_string(),
                check.to_string(),
                format!("{APT_INSTALL} -- 'b=2.0~rc1' 'a=1.1'")
            ]
        );
        let apt = |a: &str, b: &str| {
            format!(
                "#!/bin/sh\necho \"$2:\"\ncase $2 in a) echo '  Candidate: {a}';; b) echo '  Candidate: {b}';; esac\n"
            )
        };
        let out = run_with_tools(check, &[("apt-cache", &apt("1.1", "2.0~rc1"))]);
        assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
        let out = run_with_tools(check, &[("apt-cache", &apt("1.2", "(none)"))]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "nexus: a: the plan installs 1.1, but after refreshing the package lists the candidate is 1.2; plan again\n\
             nexus: b: the plan installs 2.0~rc1, but after refreshing the package lists the candidate is (none); plan again\n"
        );

        // A configured version is installed as asked: nothing to compare.
        let mut v = pkg(Manager::Apt, &["a"], PackageState::Present, Some("1.0"));
        v.spec.update_cache = true;
        let c = v
            .plan(&obs("tool=true\ninstalled.a=\ncandidate.a=1.1"))
            .unwrap();
        assert_eq!(
            scripts(&c),
            [
                "apt-get update -q".to_string(),
                format!("{APT_INSTALL} -- 'a=1.0'")
            ]
        );
    }

    /// The candidates the plan pins are part of the observed state's fingerprint, so apply's
    /// re-probe refuses a plan whose candidates moved as stale.
    #[test]
    fn candidates_are_part_of_the_fingerprint() {
        let planned = obs("tool=true\ninstalled.a=\ncandidate.a=1.0");
        let moved = obs("tool=true\ninstalled.a=\ncandidate.a=1.1");
        assert_ne!(planned.fingerprint(), moved.fingerprint());
        // The probe prints them under that key, not as a diagnostic `_` one.
        for state in [PackageState::Present, PackageState::Latest] {
            assert!(
                pkg(Manager::Apt, &["a"], state, None)
                    .probe()
                    .contains("printf 'candidate.%s=%s\\n'")
            );
        }
    }

    #[test]
    fn probe_errors() {
        let p = pkg(Manager::Dnf, &["a"], PackageState::Present, None);
        let e = p.plan(&obs("tool=false")).unwrap_err();
        assert_eq!(
            e,
            ResourceError::Unsupported(
                "package a: dnf is not installed on web1 (rpm not found)".into()
            )
        );
        assert!(matches!(
            p.plan(&obs("tool=true")),
            Err(ResourceError::Probe(_))
        ));
    }

    #[test]
    fn probe_scripts() {
        let p = pkg(Manager::Apt, &["hello", "g++"], PackageState::Present, None);
        let s = p.probe();
        assert!(s.starts_with("LC_ALL=C; export LC_ALL\ncommand -v dpkg-query >/dev/null 2>&1 || { echo tool=false; exit 0; }\necho tool=true\n"));
        assert!(s.ends_with(
            "for n in hello g++; do\n  v=$(nx_inst \"$n\")\n  printf 'installed.%s=%s\\n' \"$n\" \"$v\"\n  [ -n \"$v\" ] || printf 'candidate.%s=%s\\n' \"$n\" \"$(nx_cand \"$n\" \"$v\")\"\ndone"
        ));
        let d = pkg(Manager::Dnf, &["x"], PackageState::Latest, None).probe();
        assert!(
            d.contains("command -v rpm ")
                && d.contains("nx_pm=dnf nx_avail=--available\n")
                && d.contains("\"$nx_pm\" -q check-update")
        );
        assert!(
            d.contains("  printf 'candidate.%s=%s\\n' \"$n\" \"$(nx_cand \"$n\" \"$v\")\"\ndone")
        );
        // Absent needs no candidates.
        assert!(
            pkg(Manager::Pacman, &["x"], PackageState::Absent, None)
                .probe()
                .ends_with("  :\ndone")
        );
    }

    /// Runs `script` with the local sh, with stand-in tools (name, sh script) first on PATH.
    fn run_with_tools(script: &str, tools: &[(&str, &str)]) -> std::process::Output {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        for (name, text) in tools {
            std::fs::write(bin.join(name), text).unwrap();
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(bin.join(name))
                .status()
                .unwrap();
        }
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .unwrap()
    }

    fn probe_with_tools(p: &Package, tools: &[(&str, &str)]) -> Observed {
        let out = run_with_tools(&format!("( {} )", p.probe()), tools);
        Observed::parse(&String::from_utf8_lossy(&out.stdout)).unwrap()
    }

    /// The apt probe's parsing, run by the local sh against stand-in dpkg-query and apt-cache.
    #[test]
    fn apt_probe_parses_tool_output() {
        let dpkg = "#!/bin/sh\nfor a; do case $a in hello) echo 'install ok installed 2.10-3';; old) echo 'deinstall ok config-files 1.0';; -*|*'$'*) ;; *) echo \"dpkg-query: no packages found matching $a\" >&2; exit 1;; esac; done\n";
        let apt = "#!/bin/sh\necho \"$2:\"\necho '  Installed: (none)'\ncase $2 in new) echo '  Candidate: 3.1-1';; *) echo '  Candidate: (none)';; esac\n";
        let p = pkg(
            Manager::Apt,
            &["hello", "old", "new", "gone"],
            PackageState::Present,
            None,
        );
        let o = probe_with_tools(&p, &[("dpkg-query", dpkg), ("apt-cache", apt)]);
        let want = "tool=true\ninstalled.hello=2.10-3\ninstalled.old=\ncandidate.old=\ninstalled.new=\ncandidate.new=3.1-1\ninstalled.gone=\ncandidate.gone=";
        assert_eq!(o, obs(want));
    }

    /// Candidates of missing packages on dnf and yum (`list available`, whose lines wrap after a
    /// long name) and apk (`list -a`), next to those of installed ones.
    #[test]
    fn rpm_and_apk_probes_find_candidates_of_missing_packages() {
        let rpm = "#!/bin/sh\ncase $4 in curl) echo 7.76.1-26.el9;; zlib) echo 1.2.11-40.el9;; *) echo \"package $4 is not installed\"; exit 1;; esac\n";
        let dnf = "#!/bin/sh\ncase $2 in\n  list) case $4 in\n    nginx) printf 'Available Packages\\nnginx.x86_64   1:1.20.1-14.el9   appstream\\n';;\n    a-very-long-package-name) printf 'Available Packages\\na-very-long-package-name.noarch\\n      2.0-1.el9    appstream\\n';;\n    *) echo 'Error: No matching Packages to list' >&2; exit 1;;\n  esac;;\n  check-update) case $3 in curl) printf '\\ncurl.x86_64  7.76.1-29.el9  baseos\\n'; exit 100;; *) exit 0;; esac;;\nesac\n";
        for (m, flag) in [(Manager::Dnf, "--available"), (Manager::Yum, "available")] {
            // The stand-in answers only the form of `list` its manager takes.
            let pm = dnf.replace(
                "  list)",
                &format!("  list) [ \"$3\" = {flag} ] || exit 1;"),
            );
            let p = pkg(
                m,
                &["nginx", "a-very-long-package-name", "curl", "zlib", "gone"],
                PackageState::Latest,
                None,
            );
            let o = probe_with_tools(&p, &[("rpm", rpm), (m.name(), &pm)]);
            let want = "tool=true\ninstalled.nginx=\ncandidate.nginx=1:1.20.1-14.el9\ninstalled.a-very-long-package-name=\ncandidate.a-very-long-package-name=2.0-1.el9\ninstalled.curl=7.76.1-26.el9\ncandidate.curl=7.76.1-29.el9\ninstalled.zlib=1.2.11-40.el9\ncandidate.zlib=1.2.11-40.el9\ninstalled.gone=\ncandidate.gone=";
            assert_eq!(o, obs(want), "{m:?}");
        }
        let apk = "#!/bin/sh\ncase \"$2 $3\" in\n  '-I curl') echo 'curl-8.4.0-r0 x86_64 {curl} (curl) [installed]';;\n  '-u curl') echo 'curl-8.5.0-r0 x86_64 {curl} (curl) [upgradable from: curl-8.4.0-r0]';;\n  '-a haproxy') echo 'haproxy-2.8.9-r0 x86_64 {haproxy} (GPL-2.0-or-later)';;\nesac\n";
        let p = pkg(
            Manager::Apk,
            &["curl", "haproxy", "gone"],
            PackageState::Present,
            None,
        );
        let o = probe_with_tools(&p, &[("apk", apk)]);
        let want = "tool=true\ninstalled.curl=8.4.0-r0\ninstalled.haproxy=\ncandidate.haproxy=2.8.9-r0\ninstalled.gone=\ncandidate.gone=";
        assert_eq!(o, obs(want));
        let latest = pkg(Manager::Apk, &["curl"], PackageState::Latest, None);
        assert_eq!(
            probe_with_tools(&latest, &[("apk", apk)]),
            obs("tool=true\ninstalled.curl=8.4.0-r0\ncandidate.curl=8.5.0-r0")
        );
    }

    #[test]
    fn resolve_picks_the_manager() {
        let facts = |pm: &str| {
            crate::facts::Facts::parse(&format!("format=1\nkernel_name=Linux\npkg={pm}\n")).unwrap()
        };
        let inputs = crate::inputs::Inputs::default();
        let vars = BTreeMap::new();
        let cfg = Spec {
            names: vec!["curl".into(), "curl".into(), "jq".into()],
            state: PackageState::Present,
            version: None,
            manager: PackageManager::Auto,
            update_cache: false,
        };
        let resolve_on = |pm: &str, cfg: &Spec| {
            let f = facts(pm);
            let ctx = ResolveCtx {
                host: "web1",
                facts: &f,
                sudo: false,
                inputs: &inputs,
                vars: &vars,
                host_tags: &[],
            };
            resolve(cfg, &ctx)
        };
        let p = resolve_on("dnf", &cfg).unwrap();
        assert_eq!(p.manager, Manager::Dnf);
        assert_eq!(p.spec.names, ["curl", "jq"]);
        assert_eq!(p.id(), "package:curl,jq");
        assert_eq!(p.label(), "package curl, jq");
        assert_eq!(resolve_on("apk", &cfg).unwrap().manager, Manager::Apk);
        assert_eq!(
            resolve_on("zypper", &cfg).unwrap_err(),
            ResourceError::Unsupported(
                "package curl, jq: web1 uses zypper, which nexus does not drive; supported are apt, dnf, yum, apk and pacman".into()
            )
        );
        assert!(
            matches!(resolve_on("", &cfg), Err(ResourceError::Unsupported(m)) if m.contains("no supported package manager"))
        );
        let explicit = Spec {
            manager: PackageManager::Pacman,
            ..cfg
        };
        assert_eq!(
            resolve_on("zypper", &explicit).unwrap().manager,
            Manager::Pacman
        );
    }

    /// apt's keep step and an install, run by sh against stand-ins for dpkg-query, dpkg and
    /// apt-get: what is kept from apt's cache or downloaded (with its architecture), what is
    /// skipped, how many are kept and which never pruned, and which words the install gets.
    #[test]
    fn kept_package_files_are_found_again_by_an_install() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (bin, cache, archives) = (
            dir.path().join("bin"),
            dir.path().join("cache"),
            dir.path().join("archives"),
        );
        let kept = cache.join("packages");
        for d in [&bin, &archives, &kept] {
            std::fs::create_dir_all(d).unwrap();
        }
        let stub = |name: &str, body: &str| crate::shell::stand_in(&bin.join(name), body);
        let log = dir.path().join("log");
        // Installed: a (epoch 1:1.0, in apt's cache), b (2.0, downloadable as b:amd64), c (3.0,
        // held, gone from everywhere); d is only remembered (its config files are left).
        stub(
            "dpkg-query",
            "printf 'ii  a 1:1.0 all\\nii  b 2.0 amd64\\nhi  c 3.0 all\\nrc  d 4.0 all\\n'",
        );
        stub("dpkg", "[ \"$1\" = --print-architecture ] && echo amd64");
        let log_s = log.display().to_string();
        stub(
            "apt-get",
            &format!(
                "case $1 in\n download) while [ \"$1\" != -- ]; do shift; done; shift\n  \
                 [ \"$1\" = b:amd64=2.0 ] && echo deb > b_2.0_amd64.deb; exit 0;;\n \
                 install) echo \"$@\" > {log_s};;\nesac"
            ),
        );
        std::fs::write(archives.join("a_1%3a1.0_all.deb"), "deb a").unwrap();
        // Ten older files of a: the oldest one goes once one more is kept, unless it is what
        // the resource installs next.
        let oldest = |i: u64| {
            let f = kept.join(format!("a_0.{i}_all.deb"));
            std::fs::write(&f, "old").unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i);
            let file = std::fs::File::options().write(true).open(&f).unwrap();
            file.set_modified(t).unwrap();
        };
        (0..10).for_each(oldest);
        let p = pkg(Manager::Apt, &["a"], PackageState::Present, Some("0"));
        let run = |script: &str| {
            let script = script
                .replace(KEPT_PACKAGES, &kept.display().to_string())
                .replace(APT_ARCHIVES, &archives.display().to_string());
            let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("PATH", path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stderr).unwrap()
        };
        let listed = || {
            let mut files: Vec<String> = std::fs::read_dir(&kept)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            files
        };
        let said = "nexus: c 3.0 is neither in apt's cache nor in the repositories: a rollback to it needs it in the repositories again\n";
        let a0 = [Target {
            name: "a",
            version: Some("0.0"),
        }];
        let keep = p.keep_step(&["a", "b", "c", "d"], &a0).unwrap();
        assert_eq!(run(&keep.script), said);
        let mut want: Vec<String> = (0..10).map(|i| format!("a_0.{i}_all.deb")).collect();
        want.extend(["a_1%3a1.0_all.deb".into(), "b_2.0_amd64.deb".into()]);
        assert_eq!(
            listed(),
            want,
            "a from apt's cache, b downloaded; a 0.0 installed next"
        );
        for d in [&cache, &kept] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755, "{}", d.display());
        }
        // Kept again: nothing new. Once a's 1:1.0 is kept anew, installing nothing next, at
        // most 10 of a are left.
        let again = p.keep_step(&["a", "c"], &[]).unwrap();
        assert_eq!(run(&again.script), said);
        assert_eq!(listed(), want);
        std::fs::remove_file(kept.join("a_1%3a1.0_all.deb")).unwrap();
        assert_eq!(run(&again.script), said);
        want.remove(0);
        assert_eq!(listed(), want);

        // An install takes the kept file of a version where there is one (of the word's
        // architecture, else the host's, else `all`), else the word.
        for (f, text) in [("m_1.0_i386.deb", "i386"), ("m_1.0_amd64.deb", "amd64")] {
            std::fs::write(kept.join(f), text).unwrap();
        }
        let words = [
            ("a", "1:1.0"),
            ("b", "2.0"),
            ("m:i386", "1.0"),
            ("m", "1.0"),
            ("y", "1.0"),
        ];
        let targets = words.map(|(n, v)| Target {
            name: n,
            version: Some(v),
        });
        let how = Install {
            pinned: true,
            upgrade: false,
        };
        run(&p.install_steps_as(&[], &targets, how)[0].script);
        let k = kept.display();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!(
                "install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --allow-downgrades -- {k}/a_1%3a1.0_all.deb {k}/b_2.0_amd64.deb {k}/m_1.0_i386.deb {k}/m_1.0_amd64.deb y=1.0\n"
            )
        );
    }
}
