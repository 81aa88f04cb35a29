//! SVG plots of a storm report (plotters' SVG backend; no fonts needed).

use std::path::Path;

use hdrhistogram::Histogram as Hdr;
use plotters::prelude::*;

use super::report::StormReport;

pub type PlotResult = Result<(), Box<dyn std::error::Error>>;

const SIZE: (u32, u32) = (800, 480);

/// Points another system published for the same scenario, drawn beside
/// our curve: (milliseconds, fraction at or below).
pub struct Published<'a> {
    pub label: &'a str,
    pub points: &'a [(f64, f64)],
}

/// Writes latency-cdf.svg, hops.svg, throughput.svg and memory.svg.
pub fn write_all(directory: &Path, report: &StormReport, latency: &Hdr<u64>) -> PlotResult {
    latency_cdf(
        &directory.join("latency-cdf.svg"),
        "Delivery latency (CDF)",
        "fraction delivered",
        latency,
        report.competitor_latency().as_ref(),
    )?;
    hops(&directory.join("hops.svg"), report)?;
    over_time(
        &directory.join("throughput.svg"),
        "Delivered messages per second",
        "msgs/s",
        &report
            .over_time
            .iter()
            .map(|sample| (sample.t_s, sample.delivered_per_s))
            .collect::<Vec<_>>(),
    )?;
    let nodes = report.setup.nodes.max(1) as f64;
    over_time(
        &directory.join("memory.svg"),
        "Resident memory per node",
        "MB",
        &report
            .over_time
            .iter()
            .map(|sample| (sample.t_s, sample.rss_bytes as f64 / nodes / 1e6))
            .collect::<Vec<_>>(),
    )
}

/// A chart on `root` with `title` and room for axis labels.
fn titled<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70);
    builder
}

/// The CDF of `latency` (microseconds) as (milliseconds, fraction at or
/// below): a point for every value the histogram recorded, each after a
/// point at the fraction below it, so the line climbs only where samples
/// are. (A handful of quantiles joined by straight lines would claim
/// samples where there are none: between 0.15 ms and 130 ms, say, when
/// half are at each.)
pub fn cdf_points(latency: &Hdr<u64>) -> Vec<(f64, f64)> {
    let total = latency.len().max(1) as f64;
    let mut below = 0u64;
    let mut points = Vec::new();
    for step in latency.iter_recorded() {
        let millis =
            (latency.highest_equivalent(step.value_iterated_to()) as f64 / 1_000.0).max(0.001);
        points.push((millis, below as f64 / total));
        below += step.count_at_value();
        points.push((millis, below as f64 / total));
    }
    points
}

/// The fraction of samples (microseconds) at or below each latency, on a
/// log axis, with `published` points (only those a system published: no
/// line is drawn between them, since nothing is known there).
pub fn latency_cdf(
    path: &Path,
    title: &str,
    fraction: &str,
    latency: &Hdr<u64>,
    published: Option<&Published<'_>>,
) -> PlotResult {
    let points = cdf_points(latency);
    let published_high = published.map_or(0.0, |published| {
        published
            .points
            .iter()
            .map(|point| point.0)
            .fold(0.0, f64::max)
    });
    let high = points
        .iter()
        .map(|point| point.0)
        .fold(published_high.max(1.0), f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart =
        titled(&root, title).build_cartesian_2d((0.01f64..high * 1.2).log_scale(), 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log)")
        .y_desc(fraction)
        .draw()?;
    chart
        .draw_series(LineSeries::new(points, &BLUE))?
        .label("agentmesh")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    if let Some(published) = published {
        let marks = published
            .points
            .iter()
            .map(|&(millis, share)| Circle::new((millis, share), 5, RED.filled()));
        chart
            .draw_series(marks)?
            .label(published.label)
            .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn hops(path: &Path, report: &StormReport) -> PlotResult {
    let bars: Vec<(u32, u64)> = report
        .hops
        .iter()
        .filter_map(|(hops, &count)| Some((hops.parse().ok()?, count)))
        .collect();
    let most = bars.iter().map(|bar| bar.1).max().unwrap_or(1).max(1);
    let longest = bars.iter().map(|bar| bar.0).max().unwrap_or(1);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = titled(&root, "Deliveries by hops travelled")
        .build_cartesian_2d((0u32..longest + 1).into_segmented(), 0u64..most + most / 10)?;
    chart
        .configure_mesh()
        .x_desc("hops")
        .y_desc("deliveries")
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(BLUE.filled())
            .data(bars.iter().copied()),
    )?;
    root.present()?;
    Ok(())
}

/// A value over the seconds of the measured window.
pub fn over_time(path: &Path, title: &str, unit: &str, points: &[(f64, f64)]) -> PlotResult {
    let end = points.iter().map(|point| point.0).fold(1.0, f64::max);
    let high = points.iter().map(|point| point.1).fold(1.0, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = titled(&root, title).build_cartesian_2d(0f64..end, 0f64..high * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measured window")
        .y_desc(unit)
        .draw()?;
    chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cdf_climbs_only_where_samples_are() {
        let mut latency = Hdr::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        latency.record_n(150, 1_000).unwrap();
        latency.record_n(130_000, 1_000).unwrap();
        let points = cdf_points(&latency);
        for &(millis, fraction) in &points {
            if millis > 0.2 && millis < 129.0 {
                panic!("a point at {millis} ms: {points:?}");
            }
            assert!((0.0..=1.0).contains(&fraction));
        }
        let at = |millis: f64| {
            points
                .iter()
                .filter(|point| point.0 <= millis)
                .map(|point| point.1)
                .fold(0.0, f64::max)
        };
        assert_eq!(at(1.0), 0.5, "half at 0.15 ms");
        assert_eq!(at(200.0), 1.0, "all by 130 ms");
        assert!(points.windows(2).all(|pair| pair[0] <= pair[1]), "rising");
        // The line drawn through the points is flat at 0.5 across the gap.
        let span = points
            .windows(2)
            .find(|pair| pair[0].0 < 10.0 && pair[1].0 > 10.0)
            .expect("a segment across 10 ms");
        assert_eq!((span[0].1, span[1].1), (0.5, 0.5), "{points:?}");
    }
}
