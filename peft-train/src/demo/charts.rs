//! The study report's charts: loss curves of several runs on one chart, and a metric as bars.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::train::plot::{register_font, write_rgb_png};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 480;
/// Colour-blind-safe (Okabe–Ito) colours, one per run.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Training loss against training batches, one line per named run, each smoothed by a moving
/// average of `smoothing` batches so that the runs can be told apart.
pub fn loss_curves(
    path: &Path,
    title: &str,
    runs: &[(String, Vec<(f64, f64)>)],
    smoothing: usize,
) -> Result<()> {
    let smoothed: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .filter(|(_, points)| !points.is_empty())
        .map(|(name, points)| (name.clone(), moving_average(points, smoothing.max(1))))
        .collect();
    if smoothed.is_empty() {
        return Ok(());
    }
    let all = || smoothed.iter().flat_map(|(_, points)| points.iter());
    let last = all().map(|p| p.0).fold(1.0, f64::max);
    let (low, high) = all().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let margin = ((high - low) * 0.05).max(1e-3);
    write_rgb_png(path, WIDTH, HEIGHT, |rgb| {
        register_font();
        let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
        let plotting = |e| anyhow!("drawing {}: {e}", path.display());
        root.fill(&WHITE).map_err(plotting)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..last, (low - margin).max(0.0)..(high + margin))
            .map_err(plotting)?;
        chart
            .configure_mesh()
            .x_desc("training batches")
            .y_desc("training loss (moving average)")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plotting)?;
        for (i, (name, points)) in smoothed.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(plotting)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(plotting)?;
        root.present().map_err(plotting)
    })
}

/// One bar per named value, values in `[0, 1]` drawn as percentages.
pub fn bars(path: &Path, title: &str, y_desc: &str, values: &[(String, f64)]) -> Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    write_rgb_png(path, WIDTH, HEIGHT, |rgb| {
        register_font();
        let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
        let plotting = |e| anyhow!("drawing {}: {e}", path.display());
        root.fill(&WHITE).map_err(plotting)?;
        let names: Vec<&str> = values.iter().map(|(name, _)| name.as_str()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(names.as_slice().into_segmented(), 0.0..105.0)
            .map_err(plotting)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|segment| match segment {
                SegmentValue::Exact(name) | SegmentValue::CenterOf(name) => name.to_string(),
                SegmentValue::Last => String::new(),
            })
            .y_desc(y_desc)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plotting)?;
        for (i, (name, (_, value))) in names.iter().zip(values).enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(
                    Histogram::vertical(&chart)
                        .style(color.filled())
                        .margin(24)
                        .data([(name, 100.0 * value)]),
                )
                .map_err(plotting)?;
        }
        root.present().map_err(plotting)
    })
}

fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, _))| {
            let from = (i + 1).saturating_sub(window);
            let slice = &points[from..=i];
            (
                x,
                slice.iter().map(|p| p.1).sum::<f64>() / slice.len() as f64,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moving_average_of_a_ramp_lags_by_half_a_window() {
        let ramp: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, i as f64)).collect();
        let smooth = moving_average(&ramp, 4);
        assert_eq!(smooth[0], (0.0, 0.0));
        assert_eq!(smooth[9], (9.0, 7.5));
    }

    #[test]
    fn both_charts_write_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let curves = dir.path().join("curves.png");
        let runs = vec![
            (
                "a".to_string(),
                (1..50).map(|b| (b as f64, 3.0 / b as f64)).collect(),
            ),
            (
                "b".to_string(),
                (1..50).map(|b| (b as f64, 2.0 / b as f64)).collect(),
            ),
        ];
        loss_curves(&curves, "loss", &runs, 5).unwrap();
        let bars_png = dir.path().join("bars.png");
        bars(
            &bars_png,
            "metric",
            "%",
            &[("x".into(), 0.5), ("y".into(), 0.9)],
        )
        .unwrap();
        for png in [curves, bars_png] {
            let image = image::open(&png).unwrap().to_rgb8();
            assert_eq!(image.dimensions(), (WIDTH, HEIGHT));
            let coloured = image.pixels().filter(|p| p.0 == [0, 114, 178]).count();
            assert!(
                coloured > 100,
                "{}: the first series is missing",
                png.display()
            );
        }
    }
}
