//! Turning measurements into the table on stdout, `results.json` and `chart.svg`.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde_json::{json, Value};

use crate::idle::Idle;
use crate::measure::{Bulk, Cps, Direction, Latency};
use crate::stalled::{Stalled, MAX_CORE_PCT_PER_CONN};

/// Everything measured for one subject. A test that could not run is `None`/empty; `error`
/// says why the subject stopped early.
#[derive(Debug, Clone)]
pub struct SubjectResult {
    pub name: String,
    pub label: String,
    pub notes: Vec<String>,
    pub error: Option<String>,
    pub latency: Option<Latency>,
    pub cps: Option<Cps>,
    pub bulk: Vec<Bulk>,
    pub idle: Option<Idle>,
    pub stalled: Option<Stalled>,
    pub client_args: Vec<(String, String)>,
}

impl SubjectResult {
    pub fn bulk(&self, dir: Direction, streams: usize) -> Option<&Bulk> {
        self.bulk
            .iter()
            .find(|b| b.direction == dir && b.streams == streams && b.error.is_none())
    }

    fn mib_per_s(&self, dir: Direction, streams: usize) -> Option<f64> {
        self.bulk(dir, streams).map(|b| b.mib_per_s)
    }

    /// Transport CPU seconds per GiB over all bulk tests together.
    pub fn cpu_s_per_gib(&self) -> Option<f64> {
        let (mut cpu, mut bytes) = (0.0, 0u64);
        for b in self.bulk.iter().filter(|b| b.error.is_none()) {
            cpu += b.cpu_secs?;
            bytes += b.bytes;
        }
        (bytes > 0).then(|| cpu / (bytes as f64 / (1u64 << 30) as f64))
    }

    fn idle_kib(&self, side: &str) -> Option<f64> {
        let idle = self.idle.as_ref()?;
        Some(idle.side(side)?.kib_per_conn(idle.opened))
    }

    fn p50(&self) -> Option<f64> {
        self.latency
            .as_ref()
            .map(|l| l.p50_ms)
            .filter(|v| v.is_finite())
    }

    fn p99(&self) -> Option<f64> {
        self.latency
            .as_ref()
            .map(|l| l.p99_ms)
            .filter(|v| v.is_finite())
    }

    fn cps(&self) -> Option<f64> {
        self.cps.as_ref().map(|c| c.per_sec)
    }

    fn cpu_ms_per_conn(&self) -> Option<f64> {
        self.cps.as_ref().and_then(Cps::cpu_ms_per_conn)
    }

    /// The figures of the summary table, in column order.
    fn row(&self) -> Vec<Option<f64>> {
        vec![
            self.mib_per_s(Direction::Up, 1),
            self.mib_per_s(Direction::Down, 1),
            self.mib_per_s(Direction::Up, STREAMS_N),
            self.mib_per_s(Direction::Down, STREAMS_N),
            self.p50(),
            self.p99(),
            self.cps(),
            self.cpu_ms_per_conn(),
            self.idle_kib("client"),
            self.idle_kib("server"),
            self.cpu_s_per_gib(),
            self.stalled.as_ref().and_then(Stalled::core_pct_per_conn),
        ]
    }

    pub fn json(&self) -> Value {
        json!({
            "subject": self.name,
            "what": self.label,
            "notes": self.notes,
            "error": self.error,
            "client_socks_args": self.client_args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "setup_latency": self.latency.as_ref().map(Latency::json),
            "short_connections": self.cps.as_ref().map(Cps::json),
            "bulk": self.bulk.iter().map(Bulk::json).collect::<Vec<_>>(),
            "bulk_pt_cpu_secs_per_gib": self.cpu_s_per_gib(),
            "idle": self.idle.as_ref().map(Idle::json),
            "stalled_readers": self.stalled.as_ref().map(Stalled::json),
        })
    }
}

/// The parallel stream count of the "many streams" bulk tests.
pub const STREAMS_N: usize = 8;

const HEADERS: [&str; 12] = [
    "up×1 MiB/s",
    "down×1 MiB/s",
    "up×8 MiB/s",
    "down×8 MiB/s",
    "setup p50 ms",
    "setup p99 ms",
    "conn/s",
    "PT CPU ms/conn",
    "idle KiB/conn client",
    "idle KiB/conn server",
    "PT CPU s/GiB",
    "stalled %core/conn",
];

fn fmt_abs(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn fmt_ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 && v.is_finite() => format!("{:.2}x", v / b),
        _ => "n/a".into(),
    }
}

fn table(rows: &[(String, Vec<String>)]) -> String {
    let mut widths: Vec<usize> = std::iter::once("subject".len())
        .chain(HEADERS.iter().map(|h| h.chars().count()))
        .collect();
    for (name, cells) in rows {
        widths[0] = widths[0].max(name.len());
        for (i, c) in cells.iter().enumerate() {
            widths[i + 1] = widths[i + 1].max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                if i == 0 {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect();
        let _ = writeln!(out, "| {} |", parts.join(" | "));
    };
    let head = std::iter::once("subject".to_string())
        .chain(HEADERS.iter().map(|h| h.to_string()))
        .collect();
    line(&mut out, head);
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                "-".repeat(*w)
            } else {
                format!("{}:", "-".repeat(w.saturating_sub(1)))
            }
        })
        .collect();
    line(&mut out, rule);
    for (name, cells) in rows {
        line(
            &mut out,
            std::iter::once(name.clone()).chain(cells.clone()).collect(),
        );
    }
    out
}

/// The summary: absolute figures, then ratios to direct TCP and to obfs4proxy.
pub fn render_tables(results: &[SubjectResult]) -> String {
    let mut out = String::new();
    let abs: Vec<_> = results
        .iter()
        .map(|r| (r.name.clone(), r.row().into_iter().map(fmt_abs).collect()))
        .collect();
    out.push_str("Absolute figures\n");
    out.push_str(&table(&abs));
    for base_name in ["direct", "obfs4"] {
        let Some(base) = results.iter().find(|r| r.name == base_name) else {
            continue;
        };
        let base_row = base.row();
        let rows: Vec<_> = results
            .iter()
            .map(|r| {
                let cells = r
                    .row()
                    .into_iter()
                    .zip(&base_row)
                    .map(|(v, b)| fmt_ratio(v, *b))
                    .collect();
                (r.name.clone(), cells)
            })
            .collect();
        let _ = writeln!(
            out,
            "\nRatio to {base_name} (subject / {base_name}; higher is better for MiB/s and conn/s, lower for the rest)"
        );
        out.push_str(&table(&rows));
    }
    out
}

/// One target of the issue, judged.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    pub pass: Option<bool>,
}

/// Judges the targets: the stalled-reader cost of every subject measured, the rest
/// for water-pt with `plain`.
pub fn verdicts(results: &[SubjectResult], idle_requested: usize) -> Vec<Verdict> {
    let find = |n: &str| results.iter().find(|r| r.name == n);
    let (plain, direct, obfs4) = (find("plain"), find("direct"), find("obfs4"));
    let mut out = Vec::new();
    for r in results {
        if let Some(s) = &r.stalled {
            let pct = s.core_pct_per_conn();
            out.push(Verdict {
                target: format!(
                    "{}: a stalled connection (far end not reading) costs <= {MAX_CORE_PCT_PER_CONN} % of a core",
                    r.name
                ),
                measured: format!("{} % per connection, {} stalled", fmt_abs(pct), s.opened),
                pass: pct.map(|v| v <= MAX_CORE_PCT_PER_CONN),
            });
        }
    }
    let Some(plain) = plain else {
        return out;
    };
    for dir in [Direction::Up, Direction::Down] {
        let p = plain.mib_per_s(dir, 1);
        let d = direct.and_then(|d| d.mib_per_s(dir, 1));
        let o = obfs4.and_then(|o| o.mib_per_s(dir, 1));
        let vs_d = p.zip(d).map(|(p, d)| p / d);
        let vs_o = p.zip(o).map(|(p, o)| p / o);
        out.push(Verdict {
            target: format!(
                "plain single-stream {} >= 0.5x direct and >= 2x obfs4proxy",
                dir.name()
            ),
            measured: format!(
                "{} MiB/s = {} of direct, {} of obfs4",
                fmt_abs(p),
                vs_d.map_or("n/a".into(), |v| format!("{v:.2}x")),
                vs_o.map_or("n/a".into(), |v| format!("{v:.2}x")),
            ),
            pass: match (vs_d, vs_o) {
                (Some(a), Some(b)) => Some(a >= 0.5 && b >= 2.0),
                _ => None,
            },
        });
    }
    out.push(Verdict {
        target: "setup latency p50 <= 1 ms through both PTs (plain)".into(),
        measured: format!(
            "p50 {} ms, p99 {} ms",
            fmt_abs(plain.p50()),
            fmt_abs(plain.p99())
        ),
        pass: plain.p50().map(|v| v <= 1.0),
    });
    let idle_target =
        "10,000 idle connections through one pair, <= 150 KiB RSS per connection per side";
    match &plain.idle {
        Some(idle) => {
            let c = plain.idle_kib("client");
            let s = plain.idle_kib("server");
            let full = idle_requested >= 10_000 && idle.opened >= 10_000;
            out.push(Verdict {
                target: idle_target.into(),
                measured: format!(
                    "{} of {} opened; client {} KiB/conn, server {} KiB/conn{}",
                    idle.opened,
                    idle.requested,
                    fmt_abs(c),
                    fmt_abs(s),
                    if idle_requested < 10_000 {
                        " (run with --idle 10000 to judge)"
                    } else {
                        ""
                    }
                ),
                pass: if idle_requested < 10_000 {
                    None
                } else {
                    Some(full && c.zip(s).is_some_and(|(c, s)| c <= 150.0 && s <= 150.0))
                },
            });
        }
        None => out.push(Verdict {
            target: idle_target.into(),
            measured: "not measured".into(),
            pass: None,
        }),
    }
    out.push(Verdict {
        target: ">= 2,000 short connections/s end to end (plain)".into(),
        measured: format!("{} conn/s", fmt_abs(plain.cps())),
        pass: plain.cps().map(|v| v >= 2000.0),
    });
    out
}

pub fn render_verdicts(v: &[Verdict]) -> String {
    let mut out = String::from("Targets (water-pt with plain)\n");
    for v in v {
        let mark = match v.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a ",
        };
        let _ = writeln!(out, "  {mark}  {}: {}", v.target, v.measured);
    }
    out
}

pub fn verdicts_json(v: &[Verdict]) -> Value {
    Value::Array(
        v.iter()
            .map(|v| json!({"target": v.target, "measured": v.measured, "pass": v.pass}))
            .collect(),
    )
}

/// The largest finite value, for the chart's axis range.
fn max_of(values: impl Iterator<Item = Option<f64>>) -> f64 {
    values
        .flatten()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
}

type ChartResult = Result<(), Box<dyn std::error::Error>>;

/// Grouped bars: per subject, throughput (4 bulk tests) on the left and setup latency
/// (p50, p99) on the right.
pub fn write_chart(path: &Path, results: &[SubjectResult]) -> ChartResult {
    let root = SVGBackend::new(path, (1280, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(760);
    let throughput: Vec<(&str, Vec<Option<f64>>)> = [
        ("upload, 1 stream", Direction::Up, 1),
        ("download, 1 stream", Direction::Down, 1),
        ("upload, 8 streams", Direction::Up, STREAMS_N),
        ("download, 8 streams", Direction::Down, STREAMS_N),
    ]
    .iter()
    .map(|&(label, dir, n)| (label, results.iter().map(|r| r.mib_per_s(dir, n)).collect()))
    .collect();
    grouped_bars(&left, "Bulk throughput (MiB/s)", results, &throughput)?;
    let latency: Vec<(&str, Vec<Option<f64>>)> = vec![
        ("p50", results.iter().map(SubjectResult::p50).collect()),
        ("p99", results.iter().map(SubjectResult::p99).collect()),
    ];
    grouped_bars(
        &right,
        "Setup latency, CONNECT -> first echo (ms)",
        results,
        &latency,
    )?;
    root.present()?;
    Ok(())
}

fn grouped_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    results: &[SubjectResult],
    series: &[(&str, Vec<Option<f64>>)],
) -> ChartResult
where
    DB::ErrorType: 'static,
{
    let k = series.len() as i32;
    let group = k + 1;
    let n = results.len() as i32;
    let ymax = max_of(series.iter().flat_map(|(_, v)| v.iter().copied())).max(1e-3) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0..n * group, 0f64..ymax)?;
    let names: Vec<String> = results.iter().map(|r| r.name.clone()).collect();
    // Every integer gets a tick; only the one in the middle of a group is labelled.
    let label = |x: &i32| {
        if x.rem_euclid(group) == k / 2 {
            names.get((x / group) as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels((n * group) as usize + 1)
        .x_label_formatter(&label)
        .y_label_formatter(&|y| {
            if ymax >= 100.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .draw()?;
    for (s, (name, values)) in series.iter().enumerate() {
        let color = Palette99::pick(s).to_rgba();
        let bars = values.iter().enumerate().filter_map(move |(i, v)| {
            let x = i as i32 * group + s as i32;
            v.filter(|v| v.is_finite())
                .map(|v| Rectangle::new([(x, 0.0), (x + 1, v)], color.filled()))
        });
        chart
            .draw_series(bars)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The JSON document: settings, environment, per-subject figures, verdicts.
pub fn results_json(
    settings: Value,
    environment: Value,
    results: &[SubjectResult],
    verdicts: &[Verdict],
    notes: &[String],
) -> Value {
    json!({
        "tool": "pt-bench",
        "settings": settings,
        "environment": environment,
        "notes": notes,
        "subjects": results.iter().map(SubjectResult::json).collect::<Vec<_>>(),
        "targets": verdicts_json(verdicts),
    })
}
