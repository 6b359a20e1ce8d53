//! Plots for the benchmark suites: SVG line charts, one line per series.

use anyhow::{anyhow, bail};
use plotters::prelude::*;
use std::path::Path;

/// A named line: (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (0.0, 1.0)
    } else {
        (lo, hi)
    }
}

/// Draws `series` as lines with markers into the SVG file `path`.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    if path.extension().and_then(|e| e.to_str()) != Some("svg") {
        bail!(
            "--plot {}: plots are SVG; name the file *.svg",
            path.display()
        );
    }
    let points = || series.iter().flat_map(|(_, p)| p.iter().copied());
    let (x_lo, x_hi) = range(points().map(|p| p.0));
    let (_, y_hi) = range(points().map(|p| p.1));
    let x_pad = ((x_hi - x_lo) * 0.05).max(0.5);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(75)
            .build_cartesian_2d((x_lo - x_pad)..(x_hi + x_pad), 0f64..(y_hi * 1.1).max(1e-9))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()?;
        for (i, (name, line)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("drawing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg_with_every_series_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let series = vec![
            (
                "ours".to_string(),
                vec![(1.0, 10.0), (8.0, 70.0), (64.0, 300.0)],
            ),
            (
                "baseline".to_string(),
                vec![(1.0, 20.0), (8.0, 90.0), (64.0, 400.0)],
            ),
        ];
        lines(&path, "t", "x", "y", &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("ours") && svg.contains("baseline"));
        let err = lines(&dir.path().join("p.png"), "t", "x", "y", &series).unwrap_err();
        assert!(err.to_string().contains("SVG"), "{err}");
    }
}
