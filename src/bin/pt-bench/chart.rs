//! `chart.svg`: the bulk throughput, CPU per GiB and setup latency of every subject as grouped
//! bars.

use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordi32;
use plotters::prelude::*;

use crate::measure::Direction;
use crate::report::{SubjectResult, STREAMS_N};

/// How a panel's value axis is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scale {
    Linear,
    /// Logarithmic, so subjects an order of magnitude apart (the encrypted transports beside
    /// plain copying) can all be read.
    Log,
}

/// The smallest and largest positive finite values, for an axis range.
fn positive_range(values: impl Iterator<Item = Option<f64>>) -> Option<(f64, f64)> {
    values
        .flatten()
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        })
}

type ChartResult = Result<(), Box<dyn std::error::Error>>;

/// One panel's bars: per subject, one bar per series.
type Series<'a> = Vec<(&'a str, Vec<Option<f64>>)>;

/// Three panels: bulk throughput per subject (4 bulk tests, log scale) across the top; below it
/// the transports' CPU seconds per GiB moved (log scale) and the setup latency (p50, p99).
pub fn write_chart(path: &Path, results: &[SubjectResult]) -> ChartResult {
    let root = SVGBackend::new(path, (1280, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(520);
    let (left, right) = bottom.split_horizontally(640);
    let throughput: Series = [
        ("upload, 1 stream", Direction::Up, 1),
        ("download, 1 stream", Direction::Down, 1),
        ("upload, 8 streams", Direction::Up, STREAMS_N),
        ("download, 8 streams", Direction::Down, STREAMS_N),
    ]
    .iter()
    .map(|&(label, dir, n)| (label, results.iter().map(|r| r.mib_per_s(dir, n)).collect()))
    .collect();
    grouped_bars(
        &top,
        "Bulk throughput (MiB/s, log scale)",
        results,
        &throughput,
        Scale::Log,
    )?;
    let cpu: Series = vec![(
        "all bulk tests",
        results.iter().map(SubjectResult::cpu_s_per_gib).collect(),
    )];
    grouped_bars(
        &left,
        "Transport CPU per GiB moved (s, log scale)",
        results,
        &cpu,
        Scale::Log,
    )?;
    let latency: Series = vec![
        ("p50", results.iter().map(SubjectResult::p50).collect()),
        ("p99", results.iter().map(SubjectResult::p99).collect()),
    ];
    grouped_bars(
        &right,
        "Setup latency, CONNECT -> first echo (ms)",
        results,
        &latency,
        Scale::Linear,
    )?;
    root.present()?;
    Ok(())
}

fn grouped_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    results: &[SubjectResult],
    series: &[(&str, Vec<Option<f64>>)],
    scale: Scale,
) -> ChartResult
where
    DB::ErrorType: 'static,
{
    let k = series.len() as i32;
    let group = k + 1;
    let n = results.len() as i32;
    let range = positive_range(series.iter().flat_map(|(_, v)| v.iter().copied()));
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64);
    let names: Vec<String> = results.iter().map(|r| r.name.clone()).collect();
    let bars = Bars {
        k,
        group,
        names: &names,
        series,
    };
    match scale {
        Scale::Linear => {
            let ymax = range.map_or(1.0, |(_, hi)| hi) * 1.15;
            let chart = builder.build_cartesian_2d(0..n * group, 0f64..ymax)?;
            bars.draw(chart, 0.0, ymax)
        }
        Scale::Log => {
            // Bars grow from the bottom of the axis, a little below the smallest value.
            let (lo, hi) = range.map_or((0.1, 1.0), |(lo, hi)| (lo / 2.0, hi * 2.0));
            let chart = builder.build_cartesian_2d(0..n * group, (lo..hi).log_scale())?;
            bars.draw(chart, lo, hi)
        }
    }
}

/// What one panel draws, whatever its value axis.
struct Bars<'a> {
    /// Series, i.e. bars per subject.
    k: i32,
    /// Slots per subject: its bars and a gap.
    group: i32,
    names: &'a [String],
    series: &'a [(&'a str, Vec<Option<f64>>)],
}

impl Bars<'_> {
    fn draw<'c, DB, Y>(
        &self,
        mut chart: ChartContext<'c, DB, Cartesian2d<RangedCoordi32, Y>>,
        floor: f64,
        ymax: f64,
    ) -> ChartResult
    where
        DB: DrawingBackend + 'c,
        DB::ErrorType: 'static,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let (k, group) = (self.k, self.group);
        // Every integer gets a tick; only the one in the middle of a group is labelled.
        let label = |x: &i32| {
            if x.rem_euclid(group) == k / 2 {
                self.names
                    .get((x / group) as usize)
                    .cloned()
                    .unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels((self.names.len() as i32 * group) as usize + 1)
            .x_label_formatter(&label)
            .y_label_formatter(&|y| {
                if ymax >= 100.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.2}")
                }
            })
            .draw()?;
        for (s, (name, values)) in self.series.iter().enumerate() {
            let color = Palette99::pick(s).to_rgba();
            let bars = values.iter().enumerate().filter_map(move |(i, v)| {
                let x = i as i32 * group + s as i32;
                v.filter(|v| v.is_finite() && *v > floor)
                    .map(|v| Rectangle::new([(x, floor), (x + 1, v)], color.filled()))
            });
            chart.draw_series(bars)?.label(*name).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
            });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::subject;

    #[test]
    fn positive_range_skips_missing_zero_and_non_finite_values() {
        let values = [
            Some(3.0),
            None,
            Some(0.0),
            Some(f64::NAN),
            Some(250.0),
            Some(0.5),
        ];
        assert_eq!(positive_range(values.into_iter()), Some((0.5, 250.0)));
        assert_eq!(positive_range([None, Some(0.0)].into_iter()), None);
    }

    #[test]
    fn chart_has_the_three_panels_and_draws_every_measured_bar() {
        let dir = std::env::temp_dir().join(format!("pt-bench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.svg");
        let mut unmeasured = subject("obfs4", 0.0, 0.0, None);
        unmeasured.bulk.clear();
        let results = [
            subject("plain", 650.0, 400.0, Some(0.8)),
            subject("shadowsocks", 60.0, 70.0, Some(13.9)),
            unmeasured,
        ];
        write_chart(&path, &results).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for title in [
            "Bulk throughput (MiB/s, log scale)",
            "Transport CPU per GiB moved (s, log scale)",
            "Setup latency, CONNECT -&gt; first echo (ms)",
        ] {
            assert!(svg.contains(title), "no {title:?}");
        }
        for name in ["plain", "shadowsocks", "obfs4"] {
            assert!(svg.contains(&format!("\n{name}\n")), "no label {name}");
        }
        let filled = |color: RGBAColor| {
            let (r, g, b) = color.rgb();
            svg.matches(&format!("fill=\"#{r:02X}{g:02X}{b:02X}\""))
                .count()
        };
        let first = Palette99::pick(0).to_rgba();
        // The first colour is "upload, 1 stream" on the top panel (a bar for each of the two
        // measured subjects), the only CPU series (two bars again) and "p50" (no latency was
        // measured, so no bar): four bars and three legend swatches.
        assert_eq!(filled(first), 7);
    }
}
