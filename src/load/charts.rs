//! The charts of a load run, as SVG (plotters' SVG backend: no fonts or image libraries
//! needed to draw them; the viewer renders the text):
//!
//! - `peak-shaving.svg` — offered load, orders accepted/s, SMS sent/s and the SMS backlog
//!   on one time axis: the API takes the burst as it comes, the SMS gateway keeps to its
//!   limit, and the queue holds the difference until it drains;
//! - `latency.svg` — the API's latency percentiles per second (from each request's intended
//!   send time), on a log scale so the median and the tail both stay readable.
//!
//! - `logging-down.svg` (`--logging-down` runs) — see [`super::outage_chart`].
//!
//! Each has a title, axis labels with units, a legend, the burst shaded, and the run's set-up
//! (target, backend, rates, machine and its load average) along the bottom.

use std::path::{Path, PathBuf};

use plotters::{
    coord::{types::RangedCoordf64, Shift},
    prelude::*,
};

use super::{report::LoadReport, series::SecondRow, stages::Stage};

pub(super) const SIZE: (u32, u32) = (1200, 700);
/// Height kept free at the bottom for the set-up line.
pub(super) const FOOTER: u32 = 40;
pub(super) const FONT: &str = "sans-serif";
/// The y axes reach this much above the highest value, leaving room for the legend.
pub(super) const HEADROOM: f64 = 1.5;

pub(super) const OFFERED: RGBColor = RGBColor(90, 90, 90);
pub(super) const ACCEPTED: RGBColor = RGBColor(31, 119, 180);
const SMS_SENT: RGBColor = RGBColor(44, 160, 44);
pub(super) const BACKLOG: RGBColor = RGBColor(214, 39, 40);
const BURST: RGBColor = RGBColor(255, 190, 60);
pub(super) const FAILED: RGBColor = RGBColor(148, 103, 189);
const PERCENTILES: [(&str, RGBColor); 5] = [
    ("p50", RGBColor(31, 119, 180)),
    ("p90", RGBColor(44, 160, 44)),
    ("p99", RGBColor(255, 127, 14)),
    ("p99.9", RGBColor(214, 39, 40)),
    ("max", RGBColor(120, 120, 120)),
];

/// Draws both charts into `dir` (and `logging-down.svg` after a `--logging-down` run);
/// returns their paths.
pub fn write(dir: &Path, report: &LoadReport) -> anyhow::Result<Vec<PathBuf>> {
    let peak_shaving = dir.join("peak-shaving.svg");
    draw_peak_shaving(&peak_shaving, report)?;
    let latency = dir.join("latency.svg");
    draw_latency(&latency, report)?;
    let mut written = vec![peak_shaving, latency];
    if report.logging_outage.is_some() {
        let outage = dir.join("logging-down.svg");
        super::outage_chart::write(&outage, report)?;
        written.push(outage);
    }
    Ok(written)
}

/// The set-up line along the bottom of a chart.
pub(super) fn footer(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    report: &LoadReport,
) -> anyhow::Result<()> {
    let mut text = format!("Set-up: {}", report.setup.caption());
    if let Some(limit) = report.setup.sms_limit_per_s {
        text.push_str(&format!("; SMS gateway limit {limit} texts/s"));
    }
    draw_caption(area, &text, SIZE.0)
}

/// Draws a set-up caption into the footer `area` of a chart `width` pixels wide: on one
/// line when it fits, else on two, broken after a `; `. The SVG backend cannot measure
/// text (the viewer picks the font), so what fits is estimated from the font size.
pub(super) fn draw_caption(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    text: &str,
    width: u32,
) -> anyhow::Result<()> {
    // About 6 px a character at 15 px sans-serif, with the 20 px margin on both sides.
    let fits = (width.saturating_sub(40) / 6) as usize;
    let font = (FONT, 15).into_font().color(&BLACK.mix(0.8));
    let lines = caption_lines(text, fits);
    let (first_y, step) = if lines.len() > 1 { (3, 18) } else { (12, 0) };
    for (i, line) in lines.iter().enumerate() {
        area.draw_text(line, &font, (20, first_y + step * i as i32))?;
    }
    Ok(())
}

/// `text` as at most two lines of about `fits` characters, broken after the last `; `
/// that keeps the first line within it (a text with no such break stays on one line).
fn caption_lines(text: &str, fits: usize) -> Vec<&str> {
    if text.chars().count() <= fits {
        return vec![text];
    }
    let within = text
        .char_indices()
        .nth(fits)
        .map_or(text.len(), |(index, _)| index);
    match text[..within].rfind("; ") {
        Some(at) => vec![&text[..at + 1], &text[at + 2..]],
        None => vec![text],
    }
}

/// The burst as `(start, end)` seconds, if the run had one.
fn burst_window(report: &LoadReport) -> Option<(f64, f64)> {
    let profile = &report.setup.profile;
    let burst = profile.burst?;
    let start = burst.start.as_secs_f64();
    let end = (start + burst.length.as_secs_f64()).min(profile.duration.as_secs_f64());
    (start < end).then_some((start, end))
}

/// The time axis: every second of the series, at least the load's duration.
pub(super) fn time_axis(rows: &[SecondRow], report: &LoadReport) -> f64 {
    let last = rows.last().map_or(0.0, |row| row.second as f64 + 1.0);
    last.max(report.setup.profile.duration.as_secs_f64())
        .max(1.0)
}

/// Axis labels without decimals: seconds, orders and messages are counted whole.
pub(super) fn whole(value: &f64) -> String {
    format!("{value:.0}")
}

/// A rate counted over second `s` is drawn at the middle of that second.
/// Draws the offered load and the orders accepted per second, with their legend entries:
/// the two lines every per-second chart of a run starts from.
pub(super) fn draw_offered_and_accepted(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    rows: &[SecondRow],
) -> anyhow::Result<()> {
    for (value, color, label) in [
        (
            (|row: &SecondRow| row.offered as f64) as fn(&SecondRow) -> f64,
            OFFERED,
            "offered load (orders/s scheduled)",
        ),
        (
            |row: &SecondRow| row.accepted as f64,
            ACCEPTED,
            "orders accepted by the API (orders/s)",
        ),
    ] {
        let points: Vec<(f64, f64)> = rows.iter().map(|row| (middle(row), value(row))).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 22, y)], color.stroke_width(2)));
    }
    Ok(())
}

pub(super) fn middle(row: &SecondRow) -> f64 {
    row.second as f64 + 0.5
}

fn draw_peak_shaving(path: &Path, report: &LoadReport) -> anyhow::Result<()> {
    let rows = &report.series;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (main, bottom) = root.split_vertically(SIZE.1 - FOOTER);
    footer(&bottom, report)?;

    let x_max = time_axis(rows, report);
    let sms_per_s = |row: &SecondRow| row.stages.get(&Stage::Sms).copied().unwrap_or(0);
    let sms_backlog = |row: &SecondRow| row.backlog.get("sms").copied().flatten();
    let rate_max = rows
        .iter()
        .flat_map(|row| {
            let failed = row.errors + row.timeouts + row.dropped;
            [row.offered, row.accepted, sms_per_s(row), failed]
        })
        .max()
        .unwrap_or(0) as f64;
    // Head room above the highest value: the legend sits there, clear of the lines.
    let rate_max = (rate_max.max(report.setup.sms_limit_per_s.unwrap_or(0.0)) * HEADROOM).max(10.0);
    let backlog_max =
        (rows.iter().filter_map(sms_backlog).max().unwrap_or(0) as f64 * HEADROOM).max(10.0);

    let mut chart = ChartBuilder::on(&main)
        .caption(
            if report.stages.is_empty() {
                // No broker watched: there is no SMS line to show, only the API.
                "Offered load and orders accepted by the order API"
            } else {
                // A title that states no verdict: an overloaded run must not claim success.
                "Peak shaving: offered load, orders accepted, SMS sent and the SMS backlog"
            },
            (FONT, 26),
        )
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .right_y_label_area_size(90)
        .build_cartesian_2d(0f64..x_max, 0f64..rate_max)?
        .set_secondary_coord(0f64..x_max, 0f64..backlog_max);
    chart
        .configure_mesh()
        .x_desc("time since the start of the run (s)")
        .y_desc("orders/s and texts/s (left axis)")
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .light_line_style(BLACK.mix(0.05))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("SMS backlog, messages waiting (right axis)")
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .y_label_formatter(&whole)
        .draw()?;

    if let Some((start, end)) = burst_window(report) {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(start, 0.0), (end, rate_max)],
                BURST.mix(0.18).filled(),
            )))?
            .label(format!("burst ({start:.0}–{end:.0} s)"))
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 6), (x + 22, y + 6)], BURST.mix(0.4).filled())
            });
    }
    chart
        .draw_secondary_series(
            AreaSeries::new(
                rows.iter()
                    .filter_map(|row| sms_backlog(row).map(|b| (row.second as f64, b as f64))),
                0.0,
                BACKLOG.mix(0.15),
            )
            .border_style(BACKLOG.stroke_width(2)),
        )?
        .label("SMS backlog (messages waiting, right axis)")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 22, y + 6)], BACKLOG.mix(0.35).filled()));
    if let Some(limit) = report.setup.sms_limit_per_s {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, limit), (x_max, limit)],
                8,
                6,
                SMS_SENT.mix(0.7).stroke_width(1),
            ))?
            .label(format!("SMS gateway limit ({limit} texts/s)"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 22, y)], SMS_SENT.mix(0.7)));
    }
    let line =
        |values: Vec<(f64, f64)>, color: RGBColor| LineSeries::new(values, color.stroke_width(2));
    draw_offered_and_accepted(&mut chart, rows)?;
    if !report.stages.is_empty() {
        chart
            .draw_series(line(
                rows.iter()
                    .map(|row| (middle(row), sms_per_s(row) as f64))
                    .collect(),
                SMS_SENT,
            ))?
            .label("SMS sent (texts/s)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 22, y)], SMS_SENT.stroke_width(2)));
    }
    // Requests that got no 2xx: without this line an overloaded run's missing orders
    // would simply vanish between the offered and the accepted line.
    let failed_per_s = |row: &SecondRow| (row.errors + row.timeouts + row.dropped) as f64;
    if rows.iter().any(|row| failed_per_s(row) > 0.0) {
        chart
            .draw_series(DashedLineSeries::new(
                rows.iter().map(|row| (middle(row), failed_per_s(row))),
                6,
                4,
                FAILED.stroke_width(2),
            ))?
            .label("errors, timeouts and drops (requests/s)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 22, y)], FAILED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

fn draw_latency(path: &Path, report: &LoadReport) -> anyhow::Result<()> {
    let rows: Vec<&SecondRow> = report
        .series
        .iter()
        .filter(|row| row.latency_ms.count > 0)
        .collect();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (main, bottom) = root.split_vertically(SIZE.1 - FOOTER);
    footer(&bottom, report)?;

    let x_max = report.setup.profile.duration.as_secs_f64().max(1.0);
    let value = |row: &SecondRow, index: usize| {
        let latency = &row.latency_ms;
        [
            latency.p50_ms,
            latency.p90_ms,
            latency.p99_ms,
            latency.p99_9_ms,
            latency.max_ms,
        ][index]
    };
    let highest = rows
        .iter()
        .map(|row| row.latency_ms.max_ms)
        .fold(1.0, f64::max);
    let lowest = rows
        .iter()
        .map(|row| row.latency_ms.p50_ms)
        .fold(highest, f64::min);
    // Whole decades, so the log axis is labelled 0.1, 1, 10, 100 …
    let y_min = 10f64.powf(lowest.max(0.01).log10().floor());
    let y_max = 10f64.powf((highest * HEADROOM * HEADROOM).log10().ceil());

    let mut chart = ChartBuilder::on(&main)
        .caption(
            "Order API latency per second, from each request's intended send time",
            (FONT, 26),
        )
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("intended send time, seconds since the start of the run")
        .y_desc("latency (ms, log scale)")
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .x_label_formatter(&whole)
        .y_label_formatter(&|ms| {
            if *ms >= 1.0 {
                format!("{ms:.0}")
            } else {
                format!("{ms}")
            }
        })
        .light_line_style(BLACK.mix(0.05))
        .draw()?;
    if let Some((start, end)) = burst_window(report) {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(start, y_min), (end, y_max)],
                BURST.mix(0.18).filled(),
            )))?
            .label(format!("burst ({start:.0}–{end:.0} s)"))
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 6), (x + 22, y + 6)], BURST.mix(0.4).filled())
            });
    }
    for (index, (name, color)) in PERCENTILES.iter().enumerate() {
        let points = rows
            .iter()
            .map(|row| (middle(row), value(row, index).max(y_min)));
        // The maximum is dashed: with few requests a second it is often the p99.9 too,
        // and a solid line would hide one under the other.
        let drawn = if *name == "max" {
            chart.draw_series(DashedLineSeries::new(points, 6, 4, color.stroke_width(2)))?
        } else {
            chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?
        };
        drawn
            .label(if *name == "max" {
                "max (dashed)".to_owned()
            } else {
                (*name).to_owned()
            })
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 22, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::caption_lines;

    #[test]
    fn a_long_caption_breaks_after_the_last_semicolon_that_fits() {
        assert_eq!(caption_lines("a; b; c", 20), ["a; b; c"]);
        assert_eq!(
            caption_lines("aaaa; bbbb; cccc", 12),
            ["aaaa; bbbb;", "cccc"]
        );
        assert_eq!(caption_lines("aaaa bbbb cccc", 5), ["aaaa bbbb cccc"]);
    }
}
