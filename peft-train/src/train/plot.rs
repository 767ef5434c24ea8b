//! `loss.png`: the training loss of every batch and the validation loss of every epoch, read
//! back from the metric logs Burn's `Learner` wrote.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use burn::train::logger::{FileMetricLogger, MetricLogger};
use burn::train::metric::NumericEntry;
use burn::train::metric::store::Split;
use plotters::prelude::*;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 500;
const TRAIN_COLOR: RGBColor = RGBColor(70, 130, 200);
const VALID_COLOR: RGBColor = RGBColor(220, 90, 30);

/// Loss against the number of training batches seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LossCurves {
    /// One point per training batch.
    pub train: Vec<(f64, f64)>,
    /// One point per epoch (its mean validation loss), at the batch that ended the epoch.
    pub valid: Vec<(f64, f64)>,
}

impl LossCurves {
    /// Reads epochs `1..=epochs` of the logs under `train_dir` (the `Learner`'s directory).
    pub fn read(train_dir: &Path, epochs: usize) -> Self {
        let mut logs = FileMetricLogger::new(train_dir);
        let mut curves = Self::default();
        let mut batches = 0usize;
        for epoch in 1..=epochs {
            for loss in per_batch(&mut logs, epoch, Split::Train) {
                batches += 1;
                curves.train.push((batches as f64, loss));
            }
            let valid = per_batch(&mut logs, epoch, Split::Valid);
            if !valid.is_empty() {
                let mean = valid.iter().sum::<f64>() / valid.len() as f64;
                curves.valid.push((batches as f64, mean));
            }
        }
        curves
    }

    /// Draws the curves into an RGB buffer of [`WIDTH`] × [`HEIGHT`].
    fn draw(&self, rgb: &mut [u8]) -> Result<()> {
        register_font();
        let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
        let plotting = |e| anyhow!("drawing the loss plot: {e}");
        root.fill(&WHITE).map_err(plotting)?;
        let points = || self.train.iter().chain(&self.valid);
        let last_batch = points().map(|p| p.0).fold(1.0, f64::max);
        let (low, high) = points().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
        let margin = ((high - low) * 0.05).max(1e-3);
        let mut chart = ChartBuilder::on(&root)
            .caption("loss", ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..last_batch, (low - margin)..(high + margin))
            .map_err(plotting)?;
        chart
            .configure_mesh()
            .x_desc("training batches")
            .y_desc("loss (mean next-token NLL)")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plotting)?;
        chart
            .draw_series(LineSeries::new(self.train.iter().copied(), &TRAIN_COLOR))
            .map_err(plotting)?
            .label("train (each batch)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], TRAIN_COLOR));
        chart
            .draw_series(LineSeries::new(
                self.valid.iter().copied(),
                VALID_COLOR.stroke_width(2),
            ))
            .map_err(plotting)?
            .label("validation (each epoch)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], VALID_COLOR));
        chart
            .draw_series(
                self.valid
                    .iter()
                    .map(|&point| Circle::new(point, 4, VALID_COLOR.filled())),
            )
            .map_err(plotting)?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(plotting)?;
        root.present().map_err(plotting)
    }

    /// Writes the plot as a PNG at `path` (atomically: a reader never sees half a file).
    /// Nothing is written when there is nothing to plot.
    pub fn write_png(&self, path: &Path) -> Result<()> {
        if self.train.is_empty() && self.valid.is_empty() {
            return Ok(());
        }
        write_rgb_png(path, WIDTH, HEIGHT, |rgb| self.draw(rgb))
    }
}

/// Draws into an RGB buffer of `width` × `height` and saves it as a PNG at `path`
/// (atomically: a reader never sees half a file).
pub(crate) fn write_rgb_png(
    path: &Path,
    width: u32,
    height: u32,
    draw: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<()> {
    let mut rgb = vec![0u8; (width * height * 3) as usize];
    draw(&mut rgb)?;
    let image = image::RgbImage::from_raw(width, height, rgb)
        .context("the drawing buffer has the image's size")?;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .with_context(|| format!("encoding {}", path.display()))?;
    peft_runtime::write_atomically(path, png.get_ref())?;
    Ok(())
}

/// One epoch's per-batch losses of a split (the epoch's summary entry left out).
fn per_batch(logs: &mut FileMetricLogger, epoch: usize, split: Split) -> Vec<f64> {
    logs.read_numeric("Loss", epoch, &split)
        .unwrap_or_default()
        .into_iter()
        .filter(|entry| !matches!(entry, NumericEntry::Final(_)))
        .map(|entry| entry.current())
        .collect()
}

/// Text is drawn with a font compiled into the binary, so plots look the same on every
/// machine and need no system fonts.
pub(crate) fn register_font() {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        if plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        )
        .is_err()
        {
            tracing::warn!("the plot font did not load; the loss plot will have no text");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pixels of about this colour (lines are anti-aliased).
    fn count(rgb: &[u8], color: RGBColor) -> usize {
        rgb.chunks(3)
            .filter(|p| {
                p.iter()
                    .zip([color.0, color.1, color.2])
                    .all(|(&a, b)| a.abs_diff(b) < 40)
            })
            .count()
    }

    #[test]
    fn draws_both_curves_and_their_labels() {
        let curves = LossCurves {
            train: (1..=30)
                .map(|b| (b as f64, 3.0 - 0.05 * b as f64))
                .collect(),
            valid: vec![(10.0, 2.6), (20.0, 2.2), (30.0, 1.9)],
        };
        let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
        curves.draw(&mut rgb).unwrap();
        assert!(count(&rgb, TRAIN_COLOR) > 300, "train curve missing");
        assert!(count(&rgb, VALID_COLOR) > 300, "validation curve missing");
        // Text (caption, axis labels, legend) is black-ish anti-aliased glyphs.
        let dark = rgb.chunks(3).filter(|p| p.iter().all(|&c| c < 60)).count();
        assert!(dark > 1000, "no text drawn ({dark} dark pixels)");
    }

    #[test]
    fn reads_burns_metric_logs() {
        let dir = tempfile::tempdir().unwrap();
        for (split, epoch, lines) in [
            ("train", 1, "2.5,1\n2.3,1\n"),
            ("valid", 1, "2.0,1\n2.2,1\n2.1,final\n"),
            ("train", 2, "2.1,1\n"),
            ("valid", 2, "1.8,1\n"),
        ] {
            let at = dir.path().join(split).join(format!("epoch-{epoch}"));
            std::fs::create_dir_all(&at).unwrap();
            std::fs::write(at.join("Loss.log"), lines).unwrap();
        }
        let curves = LossCurves::read(dir.path(), 2);
        assert_eq!(curves.train, [(1.0, 2.5), (2.0, 2.3), (3.0, 2.1)]);
        assert_eq!(curves.valid.len(), 2);
        assert_eq!(curves.valid[0].0, 2.0);
        assert!((curves.valid[0].1 - 2.1).abs() < 1e-12);
        assert_eq!(curves.valid[1], (3.0, 1.8));
    }
}
