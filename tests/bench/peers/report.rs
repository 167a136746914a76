//! Results of the peers benchmark: storage (merged JSON), the markdown tables with the targets,
//! and the SVG plot (grouped bars on log scales, written by hand).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub const TOOLS: [&str; 3] = ["nexus", "pyinfra", "ansible"];
const COLORS: [&str; 3] = ["#1f6fb4", "#e8790c", "#2f9e44"];

/// Which measurement: a tool, a host count and a phase (`cold`, `noop`, `dry`, `plan-1x`,
/// `plan-2x`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub tool: String,
    pub n: usize,
    pub phase: String,
}

/// Every sample of one measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Series {
    /// Wall-clock seconds of the whole process.
    pub secs: Vec<f64>,
    /// Peak resident set of the largest process, KiB.
    pub rss_kib: Vec<u64>,
    /// User + system CPU seconds of the process and everything it waited for.
    #[serde(default)]
    pub cpu_secs: Vec<f64>,
    /// How busy the CPUs were (%) in the second before the process started.
    #[serde(default)]
    pub busy: Vec<f64>,
    /// CPU seconds the whole machine spent during the process (tool, sshd, remote shells).
    #[serde(default)]
    pub machine_cpu_secs: Vec<f64>,
}

impl Series {
    pub fn push(&mut self, s: &crate::Sample) {
        self.secs.push(s.secs);
        self.rss_kib.push(s.rss_kib);
        self.cpu_secs.push(s.cpu);
        self.busy.push(s.busy);
        self.machine_cpu_secs.push(s.machine_cpu);
    }
    pub fn median_machine_cpu(&self) -> Option<f64> {
        (!self.machine_cpu_secs.is_empty()).then(|| median(&self.machine_cpu_secs))
    }
    pub fn median_cpu(&self) -> Option<f64> {
        (!self.cpu_secs.is_empty()).then(|| median(&self.cpu_secs))
    }
    pub fn median(&self) -> f64 {
        median(&self.secs)
    }
    pub fn peak_mib(&self) -> f64 {
        self.rss_kib.iter().copied().max().unwrap_or(0) as f64 / 1024.0
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    tool: String,
    n: usize,
    phase: String,
    #[serde(flatten)]
    series: Series,
    /// When it was measured, with what (from `meta`).
    measured: BTreeMap<String, String>,
}

/// All measurements, merged across invocations.
#[derive(Debug, Default)]
pub struct Results {
    /// The current invocation's date, versions and machine.
    pub meta: BTreeMap<String, String>,
    /// Measurements that could not be made, and why.
    pub notes: BTreeMap<String, String>,
    entries: BTreeMap<Key, (Series, BTreeMap<String, String>)>,
}

#[derive(Serialize, Deserialize)]
struct File {
    entries: Vec<Entry>,
    #[serde(default)]
    notes: BTreeMap<String, String>,
}

impl Results {
    pub fn load(path: &Path) -> Results {
        let mut r = Results::default();
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(f) = serde_json::from_str::<File>(&text)
        {
            r.notes = f.notes;
            for e in f.entries {
                r.entries.insert(
                    Key {
                        tool: e.tool,
                        n: e.n,
                        phase: e.phase,
                    },
                    (e.series, e.measured),
                );
            }
        }
        r
    }

    pub fn save(&self, path: &Path) {
        let entries = self
            .entries
            .iter()
            .map(|(k, (s, m))| Entry {
                tool: k.tool.clone(),
                n: k.n,
                phase: k.phase.clone(),
                series: s.clone(),
                measured: m.clone(),
            })
            .collect();
        let text = serde_json::to_string_pretty(&File {
            entries,
            notes: self.notes.clone(),
        })
        .expect("results to JSON");
        std::fs::write(path, text).expect("write results.json");
    }

    pub fn insert(&mut self, key: Key, series: Series) {
        self.entries.insert(key, (series, self.meta.clone()));
    }

    fn get(&self, tool: &str, n: usize, phase: &str) -> Option<&Series> {
        self.entries
            .get(&Key {
                tool: tool.into(),
                n,
                phase: phase.into(),
            })
            .map(|(s, _)| s)
    }

    fn med(&self, tool: &str, n: usize, phase: &str) -> Option<f64> {
        self.get(tool, n, phase).map(Series::median)
    }

    /// Peak RSS of a tool at N over the three main phases, MiB.
    fn peak(&self, tool: &str, n: usize) -> Option<f64> {
        ["cold", "noop", "dry"]
            .iter()
            .filter_map(|p| self.get(tool, n, p))
            .map(Series::peak_mib)
            .reduce(f64::max)
    }

    fn ns(&self) -> Vec<usize> {
        let mut ns: Vec<usize> = self.entries.keys().map(|k| k.n).collect();
        ns.sort();
        ns.dedup();
        ns
    }

    fn runs(&self, tool: &str, n: usize) -> Option<usize> {
        self.get(tool, n, "noop").map(|s| s.secs.len())
    }

    /// Dates and versions the entries were measured with: each distinct set, with what it covers.
    fn provenance(&self) -> Vec<String> {
        let mut sets: Vec<(String, Vec<String>)> = Vec::new();
        for (k, (_, m)) in &self.entries {
            let get = |key: &str| m.get(key).map(String::as_str).unwrap_or("-").to_string();
            let line = format!(
                "{}: {}, commit {}; {}; {}",
                get("date"),
                get("nexus"),
                get("commit"),
                get("pyinfra"),
                get("ansible")
            );
            let what = format!("{} N={} {}", k.tool, k.n, k.phase);
            match sets.iter_mut().find(|(l, _)| *l == line) {
                Some((_, w)) => w.push(what),
                None => sets.push((line, vec![what])),
            }
        }
        sets.into_iter()
            .map(|(l, w)| format!("{l} (for {})", w.join(", ")))
            .collect()
    }

    /// Least-squares slope of nexus's no-op plan time against N, seconds per host, and the
    /// difference quotient between the two largest N.
    fn marginal(&self) -> Option<(f64, f64, usize, usize)> {
        fit(self
            .ns()
            .into_iter()
            .filter_map(|n| self.med("nexus", n, "dry").map(|t| (n as f64, t)))
            .collect())
    }

    /// The least-squares slope of nexus's own CPU seconds in `nexus plan` against N.
    fn marginal_cpu(&self) -> Option<f64> {
        self.slope_of("dry", Series::median_cpu)
    }

    /// The least-squares slope of the whole machine's CPU seconds during `nexus plan` against N:
    /// what one more host costs the sshd processes and shells on the hosts plus nexus.
    fn marginal_machine_cpu(&self) -> Option<f64> {
        self.slope_of("dry", Series::median_machine_cpu)
    }

    fn slope_of(&self, phase: &str, of: fn(&Series) -> Option<f64>) -> Option<f64> {
        fit(self
            .ns()
            .into_iter()
            .filter_map(|n| {
                self.get("nexus", n, phase)
                    .and_then(of)
                    .map(|t| (n as f64, t))
            })
            .collect())
        .map(|f| f.0)
    }
}

/// CPUs of this machine.
fn cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// Least-squares slope of the points, and the difference quotient between the last two.
fn fit(pts: Vec<(f64, f64)>) -> Option<(f64, f64, usize, usize)> {
    if pts.len() < 2 {
        return None;
    }
    let k = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / k;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / k;
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let (a, b) = (pts[pts.len() - 2], pts[pts.len() - 1]);
    Some((
        sxy / sxx,
        (b.1 - a.1) / (b.0 - a.0),
        a.0 as usize,
        b.0 as usize,
    ))
}

fn fmt_s(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v < 10.0 => format!("{v:.3}"),
        Some(v) if v < 100.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.1}"),
    }
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.1}x", a / b),
        _ => "–".into(),
    }
}

/// The tables, with the targets met or missed.
pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Whole process, median seconds (runs per measurement in brackets); peak RSS is the largest \
         single process's maximum resident set over all runs and phases (`/usr/bin/time -f %M`).\n"
    );
    let _ = writeln!(
        s,
        "| N | tool | cold converge (s) | no-op re-run (s) | dry run (s) | peak RSS (MiB) |"
    );
    let _ = writeln!(s, "| ---: | --- | ---: | ---: | ---: | ---: |");
    for n in r.ns() {
        for tool in TOOLS {
            let Some(runs) = r.runs(tool, n) else {
                continue;
            };
            let _ = writeln!(
                s,
                "| {n} | {tool} [{runs}] | {} | {} | {} | {} |",
                fmt_s(r.med(tool, n, "cold")),
                fmt_s(r.med(tool, n, "noop")),
                fmt_s(r.med(tool, n, "dry")),
                r.peak(tool, n)
                    .map(|m| format!("{m:.1}"))
                    .unwrap_or_else(|| "–".into()),
            );
        }
    }
    let _ = writeln!(
        s,
        "\nHow many times slower than nexus (median over median):\n"
    );
    let _ = writeln!(
        s,
        "| N | pyinfra cold | pyinfra no-op | pyinfra dry | Ansible cold | Ansible no-op | Ansible check |"
    );
    let _ = writeln!(s, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for n in r.ns() {
        let row: Vec<String> = ["pyinfra", "ansible"]
            .iter()
            .flat_map(|t| {
                ["cold", "noop", "dry"].map(|p| fmt_ratio(r.med(t, n, p), r.med("nexus", n, p)))
            })
            .collect();
        let _ = writeln!(s, "| {n} | {} |", row.join(" | "));
    }
    let _ = writeln!(
        s,
        "\nCPU seconds, median: user + system of the tool's own processes, and in brackets of the \
         whole machine while it ran (the tool plus the hosts' sshd processes and shells, which \
         share this machine's CPUs):\n"
    );
    let _ = writeln!(s, "| N | tool | cold converge | no-op re-run | dry run |");
    let _ = writeln!(s, "| ---: | --- | ---: | ---: | ---: |");
    for n in r.ns() {
        for tool in TOOLS {
            if r.runs(tool, n).is_none() {
                continue;
            }
            let cpu = |p: &str| {
                let series = r.get(tool, n, p);
                let own = fmt_s(series.and_then(Series::median_cpu));
                match series.and_then(Series::median_machine_cpu) {
                    Some(m) => format!("{own} [{}]", fmt_s(Some(m))),
                    None => own,
                }
            };
            let _ = writeln!(
                s,
                "| {n} | {tool} | {} | {} | {} |",
                cpu("cold"),
                cpu("noop"),
                cpu("dry")
            );
        }
    }
    let _ = writeln!(
        s,
        "\nnexus no-op plan (`nexus plan`) with half, the same and twice the resources per host \
         (measured alternately, on hosts converged at the largest size):\n"
    );
    let _ = writeln!(
        s,
        "| N | 45 resources/host (s) | 90 resources/host (s) | 180 resources/host (s) | 45 → 90 | 90 → 180 |"
    );
    let _ = writeln!(s, "| ---: | ---: | ---: | ---: | ---: | ---: |");
    let change = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:+.1}%", (b / a - 1.0) * 100.0),
        _ => "–".into(),
    };
    for n in r.ns() {
        let (h, o, t) = (
            r.med("nexus", n, "plan-half"),
            r.med("nexus", n, "plan-1x"),
            r.med("nexus", n, "plan-2x"),
        );
        if h.is_none() && o.is_none() {
            continue;
        }
        let two = match (t, r.notes.get(&format!("nexus N={n} -2x"))) {
            (Some(t), _) => fmt_s(Some(t)),
            (None, Some(_)) => "fails".into(),
            (None, None) => "–".into(),
        };
        let _ = writeln!(
            s,
            "| {n} | {} | {} | {two} | {} | {} |",
            fmt_s(h),
            fmt_s(o),
            change(h, o),
            change(o, t)
        );
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "\nNot measured:\n");
        for (k, v) in &r.notes {
            let _ = writeln!(s, "- {k}: {v}");
        }
    }
    let _ = writeln!(s, "\nTargets:\n");
    let _ = writeln!(s, "| target | measured | met |");
    let _ = writeln!(s, "| --- | --- | --- |");
    let yes = |ok: bool| if ok { "yes" } else { "**no**" };
    let ratio = |tool: &str, p: &str| match (r.med(tool, 10, p), r.med("nexus", 10, p)) {
        (Some(a), Some(b)) => Some(a / b),
        _ => None,
    };
    if let Some(x) = ratio("pyinfra", "dry") {
        let _ = writeln!(
            s,
            "| `nexus plan` at N=10 at least 15x faster than `pyinfra --dry` | {x:.1}x ({} s vs {} s) | {} |",
            fmt_s(r.med("nexus", 10, "dry")),
            fmt_s(r.med("pyinfra", 10, "dry")),
            yes(x >= 15.0)
        );
    }
    if let Some(x) = ratio("pyinfra", "noop") {
        let _ = writeln!(
            s,
            "| no-op `nexus run` at N=10 at least 30x faster than pyinfra's no-op deploy | {x:.1}x ({} s vs {} s) | {} |",
            fmt_s(r.med("nexus", 10, "noop")),
            fmt_s(r.med("pyinfra", 10, "noop")),
            yes(x >= 30.0)
        );
    }
    let growth = |from: &str, to: &str| -> Vec<(usize, f64)> {
        r.ns()
            .into_iter()
            .filter_map(|n| Some((n, r.med("nexus", n, to)? / r.med("nexus", n, from)? - 1.0)))
            .collect()
    };
    let show = |g: &[(usize, f64)]| {
        g.iter()
            .map(|(n, d)| format!("N={n}: {:+.1}%", d * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let worst = |g: &[(usize, f64)]| g.iter().map(|d| d.1.abs()).fold(0.0_f64, f64::max);
    let doubling = growth("plan-1x", "plan-2x");
    let failed: Vec<&String> = r
        .notes
        .iter()
        .filter(|(k, _)| k.starts_with("nexus N=") && k.ends_with("-2x"))
        .map(|(_, v)| v)
        .collect();
    if !doubling.is_empty() || !failed.is_empty() {
        let mut text = show(&doubling);
        if let Some(why) = failed.first() {
            let half = growth("plan-half", "plan-1x");
            text = format!(
                "{}planning 180 resources per host fails (`{why}`); from 45 to 90 resources: {}",
                if text.is_empty() {
                    String::new()
                } else {
                    format!("{text}; ")
                },
                show(&half)
            );
        }
        let _ = writeln!(
            s,
            "| doubling the resources per host changes plan time by under 10% | {text} | {} |",
            yes(failed.is_empty() && worst(&doubling) < 0.10)
        );
    }
    if let Some((slope, last, a, b)) = r.marginal() {
        let cpu = r
            .marginal_cpu()
            .map(|c| format!("; nexus's own CPU: {:.1} ms/host", c * 1e3))
            .unwrap_or_default();
        let machine = r
            .marginal_machine_cpu()
            .map(|c| {
                format!(
                    "; the whole machine's CPU (sshd, shells, nexus): {:.1} ms/host, so {:.1} ms/host of wall time on {} CPUs at best",
                    c * 1e3,
                    c * 1e3 / cpus(),
                    cpus()
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "| marginal cost per extra host under 5 ms (`nexus plan`) | {:.1} ms/host (least squares over N = {}); {:.1} ms/host from N={a} to N={b}{cpu}{machine} | {} |",
            slope * 1e3,
            r.ns()
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            last * 1e3,
            yes(slope < 0.005 && last < 0.005)
        );
    }
    if let Some(m) = r.peak("nexus", 50) {
        let _ = writeln!(
            s,
            "| nexus peak RSS under 64 MiB at N=50 | {m:.1} MiB | {} |",
            yes(m < 64.0)
        );
    }
    let _ = writeln!(s, "\nMeasured with:\n");
    for p in r.provenance() {
        let _ = writeln!(s, "- {p}");
    }
    s
}

/// One panel's value for a tool at N.
type Getter<'a> = Box<dyn Fn(&str, usize) -> Option<f64> + 'a>;

/// Four panels of grouped bars (cold, no-op, dry: seconds; peak RSS: MiB), log scales.
pub fn svg(r: &Results) -> String {
    let ns = r.ns();
    let panels: [(&str, &str, Getter); 4] = [
        ("Cold converge", "s", Box::new(|t, n| r.med(t, n, "cold"))),
        ("No-op re-run", "s", Box::new(|t, n| r.med(t, n, "noop"))),
        ("Dry run", "s", Box::new(|t, n| r.med(t, n, "dry"))),
        ("Peak RSS", "MiB", Box::new(|t, n| r.peak(t, n))),
    ];
    let (pw, ph) = (430.0, 330.0);
    let (left, top, bottom) = (58.0, 46.0, 48.0);
    let width = pw * 2.0 + 20.0;
    let height = ph * 2.0 + 90.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">\
         nexus vs pyinfra vs Ansible: same hosts, same work (whole process, median; log scales)</text>",
        width / 2.0
    );
    let date = r.meta.get("date").cloned().unwrap_or_default();
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"42\" text-anchor=\"middle\" fill=\"#555\">per host: 20 directories, 50 files \
         (content, owner, mode), 20 guarded commands; N loopback sshd hosts; {} CPUs; {date}</text>",
        width / 2.0,
        r.meta.get("cpus").cloned().unwrap_or_default()
    );
    // Legend.
    for (i, t) in TOOLS.iter().enumerate() {
        let x = width / 2.0 - 150.0 + i as f64 * 110.0;
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"52\" width=\"14\" height=\"14\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"64\">{t}</text>",
            COLORS[i],
            x + 20.0
        );
    }
    for (pi, (title, unit, get)) in panels.iter().enumerate() {
        let ox = 10.0 + (pi % 2) as f64 * (pw + 0.0);
        let oy = 70.0 + (pi / 2) as f64 * ph;
        let vals: Vec<f64> = ns
            .iter()
            .flat_map(|&n| TOOLS.iter().filter_map(move |t| get(t, n)))
            .filter(|v| *v > 0.0)
            .collect();
        let (lo, hi) = if vals.is_empty() {
            (0.0, 1.0)
        } else {
            let mn = vals.iter().copied().fold(f64::MAX, f64::min);
            let mx = vals.iter().copied().fold(f64::MIN, f64::max);
            // Room below the smallest bar so that it stays visible.
            let lo = (mn / 2.0).log10().floor();
            (lo, mx.log10().ceil().max(lo + 1.0))
        };
        let plot_h = ph - top - bottom;
        let plot_w = pw - left - 20.0;
        let (x0, y0) = (ox + left, oy + top);
        let y_of = |v: f64| y0 + plot_h - (v.log10() - lo) / (hi - lo) * plot_h;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{title} ({unit})</text>",
            x0 + plot_w / 2.0,
            oy + 28.0
        );
        // Decade grid lines and labels.
        let mut d = lo;
        while d <= hi + 1e-9 {
            let v = 10f64.powf(d);
            let y = y_of(v);
            let label = if v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            };
            let _ = writeln!(
                s,
                "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#444\">{label}</text>",
                x0 + plot_w,
                x0 - 6.0,
                y + 4.0
            );
            d += 1.0;
        }
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{:.1}\" stroke=\"#333\"/>\
             <line x1=\"{x0}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>",
            y0 + plot_h,
            y0 + plot_h,
            x0 + plot_w,
            y0 + plot_h
        );
        let group_w = plot_w / ns.len().max(1) as f64;
        let bar_w = (group_w - 24.0) / 3.0;
        for (gi, &n) in ns.iter().enumerate() {
            let gx = x0 + gi as f64 * group_w + 12.0;
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">N = {n}</text>",
                gx + 1.5 * bar_w,
                y0 + plot_h + 18.0
            );
            for (ti, t) in TOOLS.iter().enumerate() {
                let bx = gx + ti as f64 * bar_w;
                match get(t, n) {
                    Some(v) if v > 0.0 => {
                        let y = y_of(v);
                        let label = if *unit == "MiB" {
                            format!("{v:.0}")
                        } else if v < 1.0 {
                            format!("{v:.2}")
                        } else if v < 10.0 {
                            format!("{v:.1}")
                        } else {
                            format!("{v:.0}")
                        };
                        let _ = writeln!(
                            s,
                            "<rect x=\"{bx:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{t}, N={n}: {v:.3} {unit}</title></rect>\
                             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{label}</text>",
                            bar_w - 2.0,
                            y0 + plot_h - y,
                            COLORS[ti],
                            bx + bar_w / 2.0 - 1.0,
                            y - 3.0
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            s,
                            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\" fill=\"#888\">n/a</text>",
                            bx + bar_w / 2.0 - 1.0,
                            y0 + plot_h - 4.0
                        );
                    }
                }
            }
        }
    }
    s.push_str("</svg>\n");
    s
}
