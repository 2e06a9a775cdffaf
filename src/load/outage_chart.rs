//! `logging-down.svg`, drawn after a `--logging-down` run: the load offered, the orders
//! the API accepted, the requests that failed and the events logged per second, with the
//! logging group's backlog on the right axis and the outage shaded. Through the queue the
//! accepted line does not dip while the backlog climbs, then the backlog drains once
//! logging is back; synchronously wired, the accepted line drops to zero for the outage
//! and the failed line takes its place.

use std::path::Path;

use plotters::prelude::*;

use super::{
    charts::{
        draw_offered_and_accepted, footer, middle, time_axis, whole, BACKLOG, FAILED, FONT, FOOTER,
        HEADROOM, SIZE,
    },
    report::LoadReport,
    series::SecondRow,
    stages::Stage,
};

const OUTAGE: RGBColor = RGBColor(120, 120, 120);
const LOGGED: RGBColor = RGBColor(44, 160, 44);

/// Draws the chart into `path`; a report without an outage draws nothing.
pub fn write(path: &Path, report: &LoadReport) -> anyhow::Result<()> {
    let Some(outage) = &report.logging_outage else {
        return Ok(());
    };
    let rows = &report.series;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (main, bottom) = root.split_vertically(SIZE.1 - FOOTER);
    footer(&bottom, report)?;

    let x_max = time_axis(rows, report);
    let watched = !report.stages.is_empty();
    let logged_per_s = |row: &SecondRow| row.stages.get(&Stage::Logged).copied().unwrap_or(0);
    let logging_backlog = |row: &SecondRow| row.backlog.get("logging").copied().flatten();
    let failed_per_s = |row: &SecondRow| row.errors + row.timeouts + row.dropped;
    let rate_max = rows
        .iter()
        .flat_map(|row| {
            [
                row.offered,
                row.accepted,
                logged_per_s(row),
                failed_per_s(row),
            ]
        })
        .max()
        .unwrap_or(0) as f64;
    let rate_max = (rate_max * HEADROOM).max(10.0);
    let backlog_max =
        (rows.iter().filter_map(logging_backlog).max().unwrap_or(0) as f64 * HEADROOM).max(10.0);

    let title = if watched {
        "Logging service stopped, wired through the queue: orders accepted, events logged, log backlog"
    } else {
        "Logging service stopped, wired synchronously: what the order API answered"
    };
    let mut chart = ChartBuilder::on(&main)
        .caption(title, (FONT, 24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .right_y_label_area_size(if watched { 90 } else { 20 })
        .build_cartesian_2d(0f64..x_max, 0f64..rate_max)?
        .set_secondary_coord(0f64..x_max, 0f64..backlog_max);
    chart
        .configure_mesh()
        .x_desc("time since the start of the run (s)")
        .y_desc(if watched {
            "requests/s and orders logged/s (left axis)"
        } else {
            "requests/s"
        })
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .light_line_style(BLACK.mix(0.05))
        .draw()?;
    if watched {
        chart
            .configure_secondary_axes()
            .y_desc("logging backlog, messages waiting (right axis)")
            .axis_desc_style((FONT, 18))
            .label_style((FONT, 15))
            .y_label_formatter(&whole)
            .draw()?;
    }

    let (stopped, back) = (outage.times.stopped_at_s, outage.times.ready_again_at_s);
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(stopped, 0.0), (back.min(x_max), rate_max)],
            OUTAGE.mix(0.15).filled(),
        )))?
        .label(format!("logging service down ({stopped:.0}–{back:.0} s)"))
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 22, y + 6)], OUTAGE.mix(0.35).filled()));
    if watched {
        chart
            .draw_secondary_series(
                AreaSeries::new(
                    rows.iter().filter_map(|row| {
                        logging_backlog(row).map(|b| (row.second as f64, b as f64))
                    }),
                    0.0,
                    BACKLOG.mix(0.15),
                )
                .border_style(BACKLOG.stroke_width(2)),
            )?
            .label("logging backlog (messages waiting, right axis)")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 6), (x + 22, y + 6)], BACKLOG.mix(0.35).filled())
            });
    }
    let line =
        |values: Vec<(f64, f64)>, color: RGBColor| LineSeries::new(values, color.stroke_width(2));
    draw_offered_and_accepted(&mut chart, rows)?;
    if watched {
        chart
            .draw_series(line(
                rows.iter()
                    .map(|row| (middle(row), logged_per_s(row) as f64))
                    .collect(),
                LOGGED,
            ))?
            .label("orders fully logged (orders/s)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 22, y)], LOGGED.stroke_width(2)));
    }
    chart
        .draw_series(DashedLineSeries::new(
            rows.iter()
                .map(|row| (middle(row), failed_per_s(row) as f64)),
            6,
            4,
            FAILED.stroke_width(2),
        ))?
        .label("errors, timeouts and drops (requests/s)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 22, y)], FAILED.stroke_width(2)));
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
