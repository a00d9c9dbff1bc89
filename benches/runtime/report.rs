//! The table, the PASS/MISS verdicts and the JSON file.

use super::*;
/// What the run was measured on.
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) cpu: String,
    pub(crate) kernel: String,
    pub(crate) rustc: String,
    pub(crate) nofile: u64,
}

impl Machine {
    pub(crate) fn probe(nofile: u64) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
            rustc,
            nofile,
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "machine: nproc {}, {}, Linux {}, {}, RLIMIT_NOFILE {}",
            self.nproc, self.cpu, self.kernel, self.rustc, self.nofile
        )
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Op {
    AtLeast,
    AtMost,
}

impl Op {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Op::AtLeast => ">=",
            Op::AtMost => "<=",
        }
    }

    pub(crate) fn holds(self, value: f64, target: f64) -> bool {
        match self {
            Op::AtLeast => value >= target,
            Op::AtMost => value <= target,
        }
    }
}

/// One line of the table.
pub(crate) struct Row {
    pub(crate) key: &'static str,
    pub(crate) label: &'static str,
    pub(crate) value: f64,
    /// A second figure shown after a slash (p99 beside p50).
    pub(crate) second: Option<f64>,
    pub(crate) unit: &'static str,
    pub(crate) decimals: usize,
    pub(crate) baseline: String,
    pub(crate) target: Option<(Op, f64)>,
}

impl Row {
    pub(crate) fn new(key: &'static str, label: &'static str) -> Self {
        Self {
            key,
            label,
            value: f64::NAN,
            second: None,
            unit: "",
            decimals: 1,
            baseline: String::new(),
            target: None,
        }
    }

    pub(crate) fn value(mut self, value: f64, unit: &'static str, decimals: usize) -> Self {
        (self.value, self.unit, self.decimals) = (value, unit, decimals);
        self
    }

    pub(crate) fn second(mut self, v: f64) -> Self {
        self.second = Some(v);
        self
    }

    pub(crate) fn baseline(mut self, b: String) -> Self {
        self.baseline = b;
        self
    }

    pub(crate) fn target(mut self, op: Op, t: f64) -> Self {
        self.target = Some((op, t));
        self
    }

    pub(crate) fn measured(&self) -> String {
        let d = self.decimals;
        match self.second {
            Some(s) => format!("{:.d$} / {s:.d$} {}", self.value, self.unit),
            None => format!("{:.d$} {}", self.value, self.unit),
        }
    }

    pub(crate) fn verdict(&self) -> Option<bool> {
        self.target.map(|(op, t)| op.holds(self.value, t))
    }
}

/// Rows of the table, extra figures for the JSON, notes, and errors.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) rows: Vec<Row>,
    pub(crate) extra: Vec<(&'static str, f64)>,
    pub(crate) notes: Vec<String>,
    pub(crate) errors: Vec<String>,
}

/// The targets of the brief, for reporting those a failed phase never got
/// to measure.
pub(crate) const TARGETS: [(&str, &str); 5] = [
    ("tput_plain_ratio", "ratio plain dialer / direct >= 0.8"),
    ("tput_pair_ratio", "ratio pair / direct >= 0.6"),
    (
        "setup_excl_dial_p50_us",
        "instance setup excl. dial p50 <= 100 µs",
    ),
    (
        "rss_per_idle_conn_kib",
        "RSS per idle connection <= 150 KiB",
    ),
    ("short_conns_per_s", "short connections/s >= 3000"),
];

impl Report {
    pub(crate) fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub(crate) fn figure(&mut self, key: &'static str, v: f64) {
        self.extra.push((key, v));
    }

    pub(crate) fn note(&mut self, n: String) {
        self.notes.push(n);
    }

    pub(crate) fn misses(&self) -> usize {
        TARGETS
            .iter()
            .filter(|(key, _)| {
                self.rows
                    .iter()
                    .find(|r| r.key == *key)
                    .and_then(Row::verdict)
                    != Some(true)
            })
            .count()
    }

    pub(crate) fn print(&self) {
        let target = |r: &Row| {
            r.target
                .map(|(op, t)| format!("{} {t}", op.symbol()))
                .unwrap_or_default()
        };
        let verdict = |r: &Row| match r.verdict() {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "",
        };
        println!();
        println!(
            "{:<44} {:>22}  {:<36} {:<9} result",
            "figure", "measured", "baseline", "target"
        );
        println!("{}", "-".repeat(122));
        for r in &self.rows {
            println!(
                "{:<44} {:>22}  {:<36} {:<9} {}",
                r.label,
                r.measured(),
                r.baseline,
                target(r),
                verdict(r)
            );
        }
        println!();
        for n in &self.notes {
            println!("note: {n}");
        }
        for e in &self.errors {
            println!("error: {e}");
        }
        println!();
        for (key, what) in TARGETS {
            match self.rows.iter().find(|r| r.key == key) {
                Some(r) => println!(
                    "{} {what}: {}",
                    if r.verdict() == Some(true) {
                        "PASS"
                    } else {
                        "MISS"
                    },
                    r.measured().trim()
                ),
                None => println!("MISS {what}: not measured"),
            }
        }
    }

    pub(crate) fn to_json(&self, m: &Machine, plan: &Plan, quick: bool, took: Duration) -> String {
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v:.3}")
            } else {
                "null".into()
            }
        };
        let mut s = String::from("{\n");
        let _ = writeln!(
            s,
            "  \"machine\": {{\"nproc\": {}, \"cpu\": {}, \"kernel\": {}, \"rustc\": {}, \
             \"nofile\": {}}},",
            m.nproc,
            json_str(&m.cpu),
            json_str(&m.kernel),
            json_str(&m.rustc),
            m.nofile
        );
        let _ = writeln!(
            s,
            "  \"quick\": {quick},\n  \"plan\": {},\n  \"seconds\": {},",
            json_str(&format!("{plan:?}")),
            num(took.as_secs_f64())
        );
        s.push_str("  \"figures\": {\n");
        let mut figures: Vec<String> = Vec::new();
        for r in &self.rows {
            figures.push(format!("    \"{}\": {}", r.key, num(r.value)));
        }
        for (k, v) in &self.extra {
            figures.push(format!("    \"{k}\": {}", num(*v)));
        }
        s.push_str(&figures.join(",\n"));
        s.push_str("\n  },\n  \"targets\": [\n");
        let targets: Vec<String> = TARGETS
            .iter()
            .map(|(key, what)| {
                let row = self.rows.iter().find(|r| r.key == *key);
                let (value, target, pass) = match row {
                    Some(r) => (
                        num(r.value),
                        r.target.map_or("null".into(), |(_, t)| num(t)),
                        r.verdict() == Some(true),
                    ),
                    None => ("null".into(), "null".into(), false),
                };
                format!(
                    "    {{\"key\": \"{key}\", \"what\": {}, \"value\": {value}, \"target\": \
                     {target}, \"pass\": {pass}}}",
                    json_str(what)
                )
            })
            .collect();
        s.push_str(&targets.join(",\n"));
        s.push_str("\n  ],\n  \"notes\": [");
        let notes: Vec<String> = self
            .notes
            .iter()
            .chain(&self.errors)
            .map(|n| format!("\n    {}", json_str(n)))
            .collect();
        s.push_str(&notes.join(","));
        s.push_str("\n  ]\n}\n");
        s
    }
}

pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
