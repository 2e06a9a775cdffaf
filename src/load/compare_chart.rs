//! `compare.svg`: the two wirings side by side, as grouped bars (plotters' SVG backend,
//! like the other charts of `orderflow load`).
//!
//! Left, the API latency percentiles (ms from the intended send time, log scale, so a
//! 5 ms bar and a 5 s bar are both readable) at the base rate, during the burst and while
//! the logging service was down; right, the orders accepted per second in the same three
//! cases, and the failed requests (errors and timeouts) per second over the run and while
//! logging was down. One colour per wiring, the value
//! written on each bar, the set-up along the bottom.

use std::path::Path;

use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{
    charts::draw_caption,
    compare::{CompareReport, WiringFigures},
    latency::Percentiles,
};

const SIZE: (u32, u32) = (1700, 760);
const FOOTER: u32 = 40;
const FONT: &str = "sans-serif";
const ASYNC: RGBColor = RGBColor(31, 119, 180);
const SYNC: RGBColor = RGBColor(255, 127, 14);

/// One group of two bars: a label (two lines) and each wiring's value.
struct Group {
    label: (String, String),
    values: [f64; 2],
}

/// Draws the chart into `path`.
pub fn write(path: &Path, report: &CompareReport) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (main, bottom) = root.split_vertically(SIZE.1 - FOOTER);
    let mut caption = format!(
        "Set-up: {}; then at the base rate with {}",
        report.setup.caption(),
        report.logging_down.outage
    );
    if let Some(limit) = report.setup.sms_limit_per_s {
        caption.push_str(&format!("; SMS gateway limit {limit} texts/s"));
    }
    draw_caption(&bottom, &caption, SIZE.0)?;
    let main = main.titled(
        "Through the queue (async) or calling payment, points, SMS and logging in the request (sync): steady, burst, logging down",
        (FONT, 24),
    )?;
    let (left, right) = main.split_horizontally(SIZE.0 * 57 / 100);
    let columns = report.columns();
    draw_groups(
        &root,
        &left,
        "API latency, ms from the intended send (log scale), refusals included",
        "latency (ms, log scale)",
        &latency_groups(report, columns),
        true,
    )?;
    draw_groups(
        &root,
        &right,
        "Orders accepted (2xx) and requests failed (errors, timeouts), per second",
        "per second",
        &throughput_groups(report, columns),
        false,
    )?;
    root.present()?;
    Ok(())
}

/// Which of a wiring's latencies a group of bars shows.
type Phase = fn(&WiringFigures) -> Option<Percentiles>;

fn latency_groups(report: &CompareReport, columns: [&WiringFigures; 2]) -> Vec<Group> {
    let mut groups = Vec::new();
    let phases: [(&str, Phase); 2] = [
        ("base rate", |f| Some(f.latency_base_ms)),
        ("burst", |f| f.latency_burst_ms),
    ];
    type Pick = fn(&Percentiles) -> f64;
    let picks: [(&str, Pick); 3] = [
        ("p50", |p| p.p50_ms),
        ("p99", |p| p.p99_ms),
        ("p99.9", |p| p.p99_9_ms),
    ];
    let down = &report.logging_down;
    let mut cases: Vec<(&str, [Percentiles; 2])> = phases
        .iter()
        .filter_map(|(phase, of)| Some((*phase, [of(columns[0])?, of(columns[1])?])))
        .collect();
    cases.push((
        "logging down",
        [
            down.asynchronous.outage.latency_ms,
            down.synchronous.outage.latency_ms,
        ],
    ));
    for (phase, [a, s]) in cases {
        for (name, pick) in picks {
            groups.push(Group {
                label: (name.to_owned(), phase.to_owned()),
                values: [pick(&a), pick(&s)],
            });
        }
    }
    groups
}

fn throughput_groups(report: &CompareReport, columns: [&WiringFigures; 2]) -> Vec<Group> {
    let seconds = report.setup.profile.duration.as_secs_f64().max(1.0);
    let mut groups = vec![Group {
        label: ("accepted/s".into(), "base rate".into()),
        values: columns.map(|f| f.accepted_per_s_base),
    }];
    if let (Some(a), Some(s)) = (
        columns[0].accepted_per_s_burst,
        columns[1].accepted_per_s_burst,
    ) {
        groups.push(Group {
            label: ("accepted/s".into(), "burst".into()),
            values: [a, s],
        });
    }
    groups.push(Group {
        label: ("failed/s".into(), "whole run".into()),
        values: columns.map(|f| (f.errors + f.timeouts) as f64 / seconds),
    });
    let down = &report.logging_down;
    let pair = [&down.asynchronous.outage, &down.synchronous.outage];
    let down_seconds = down.outage.length.as_secs_f64().max(1.0);
    groups.push(Group {
        label: ("accepted/s".into(), "logging down".into()),
        values: pair.map(|outage| outage.accepted_per_s),
    });
    groups.push(Group {
        label: ("failed/s".into(), "logging down".into()),
        values: pair.map(|outage| outage.failed as f64 / down_seconds),
    });
    groups
}

fn draw_groups(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    groups: &[Group],
    log: bool,
) -> anyhow::Result<()> {
    let n = groups.len().max(1) as f64;
    let values = groups.iter().flat_map(|group| group.values);
    let max = values.clone().fold(0.0_f64, f64::max);
    let label_style = TextStyle::from((FONT, 15).into_font());
    let value_style =
        TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    let under = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, (FONT, 19))
        .margin(20)
        .margin_bottom(10)
        .x_label_area_size(55)
        .y_label_area_size(75);
    // Bars stand on the axis floor; on a log axis that floor is below the smallest value.
    let (bottom, top) = if log {
        let min = values
            .filter(|value| *value > 0.0)
            .fold(f64::INFINITY, f64::min);
        let bottom = if min.is_finite() {
            (min / 3.0).max(0.01)
        } else {
            0.1
        };
        (bottom, (max * 4.0).max(bottom * 10.0))
    } else {
        (0.0, (max * 1.35).max(1.0))
    };
    let bars = |index: usize, color: RGBColor| {
        groups.iter().enumerate().map(move |(group_index, group)| {
            let x0 = group_index as f64 + 0.12 + index as f64 * 0.38;
            Rectangle::new(
                [(x0, bottom), (x0 + 0.38, group.values[index].max(bottom))],
                color.filled(),
            )
        })
    };
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .y_desc(y_desc)
                .y_label_formatter(&axis_value)
                .axis_desc_style((FONT, 16))
                .label_style((FONT, 14))
                .light_line_style(BLACK.mix(0.05))
                .draw()?;
            chart
                .draw_series(bars(0, ASYNC))?
                .label("async: through the queue")
                .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], ASYNC.filled()));
            chart
                .draw_series(bars(1, SYNC))?
                .label("sync: every service called in the request")
                .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], SYNC.filled()));
            for (group_index, group) in groups.iter().enumerate() {
                for (index, value) in group.values.iter().enumerate() {
                    let x = group_index as f64 + 0.31 + index as f64 * 0.38;
                    chart.draw_series(std::iter::once(Text::new(
                        format_value(*value),
                        (x, value.max(bottom)),
                        value_style.clone(),
                    )))?;
                }
                let (px, py) = chart.backend_coord(&(group_index as f64 + 0.5, bottom));
                root.draw(&Text::new(
                    group.label.0.clone(),
                    (px, py + 8),
                    under.clone(),
                ))?;
                root.draw(&Text::new(
                    group.label.1.clone(),
                    (px, py + 27),
                    under.clone(),
                ))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(label_style.clone())
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.4))
                .draw()?;
        }};
    }
    if log {
        draw!(builder.build_cartesian_2d(0f64..n, (bottom..top).log_scale())?);
    } else {
        draw!(builder.build_cartesian_2d(0f64..n, bottom..top)?);
    }
    Ok(())
}

/// An axis label: whole numbers from 1 up, two decimals below (a log axis of fast runs
/// reaches below 1 ms).
fn axis_value(value: &f64) -> String {
    if *value >= 1.0 || *value == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// A bar's value as written on it: whole numbers from 100 up, one decimal below.
fn format_value(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}
