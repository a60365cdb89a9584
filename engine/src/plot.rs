//! The loss and metric curves PNG of a run (`work_dir/curves.png`).
//!
//! Drawn with plotters' bitmap backend. A self-contained binary cannot count on system fonts, so
//! the labels are drawn with DejaVu Sans (reduced to ASCII, 36 KB, `engine/assets/`) embedded in
//! the binary and rasterised by plotters' `ab_glyph` feature.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The family name the embedded font is registered under.
const FONT: &str = "sans-serif";

/// Registers the embedded font once; an error says the chart cannot have text.
fn font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");
            plotters::style::register_font(FONT, FontStyle::Normal, bytes)
                .map_err(|_| "the embedded chart font is not a valid TTF".to_string())
        })
        .clone()
}

/// One curve: a name and its `(x, y)` points.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// Draws the loss curves (left, x = iteration) and the metric curves (right, x = epoch; the
/// panel is left out when there are none) into a PNG at `path`, written to a temporary file and
/// renamed. Errors name the file.
pub fn plot_curves(path: &Path, losses: &[Series], metrics: &[Series]) -> Result<(), String> {
    let tmp = PathBuf::from(format!("{}.tmp.png", path.display()));
    draw(&tmp, losses, metrics).map_err(|e| format!("{}: cannot draw the curves: {e}", path.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: cannot rename the temporary file: {e}", path.display()))
}

fn draw(path: &Path, losses: &[Series], metrics: &[Series]) -> Result<(), Box<dyn std::error::Error>> {
    font()?;
    let (width, height) = (if metrics.is_empty() { 800 } else { 1600 }, 560u32);
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        if metrics.is_empty() {
            panel(&root, "Losses", "iteration", losses)?;
        } else {
            let (left, right) = root.split_horizontally(800);
            panel(&left, "Losses", "iteration", losses)?;
            panel(&right, "Validation metrics", "epoch", metrics)?;
        }
        root.present()?;
    }
    image::save_buffer_with_format(
        path,
        &pixels,
        width,
        height,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )?;
    Ok(())
}

/// Colours that stay apart on white and from each other (Okabe and Ito's palette, then greys).
const COLORS: [RGBColor; 8] = [
    RGBColor(0, 0, 0),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(204, 121, 167),
    RGBColor(140, 140, 140),
];

/// The style of series `i`: its colour, and a width that narrows with the index so that a curve
/// drawn over an equal one (`loss` and a single `loss_cls`) leaves the first one's edges showing.
fn style(i: usize, count: usize) -> ShapeStyle {
    let width = if count > 1 && i == 0 { 5 } else { 2 };
    COLORS[i % COLORS.len()].stroke_width(width)
}

/// One panel: a title, axes with tick labels and a grid, the curves and a legend.
fn panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
    x_desc: &str,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let pts = series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let pad = 0.05 * (y1 - y0);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .max_light_lines(1)
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let st = style(i, series.len());
        let points = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite());
        chart
            .draw_series(LineSeries::new(points, st))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], st));
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()?;
    }
    Ok(())
}

/// A tick or range label in at most about 8 characters.
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.fract() == 0.0 && v.abs() < 1e7 {
        format!("{v:.0}")
    } else if v.abs() >= 1e5 || v.abs() < 1e-3 {
        format!("{v:.1e}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dark_pixels(img: &image::RgbImage, x: std::ops::Range<u32>, y: std::ops::Range<u32>) -> usize {
        let mut n = 0;
        for yy in y {
            for xx in x.clone() {
                if img.get_pixel(xx, yy).0.iter().all(|&c| c < 160) {
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn curves_have_tick_labels_a_grid_and_every_series() {
        let dir = std::env::temp_dir().join(format!("nextdet_plot_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("curves.png");
        let line = |name: &str, k: f64| Series {
            name: name.into(),
            points: (0..50).map(|i| (i as f64 * 10.0, k / (1.0 + i as f64))).collect(),
        };
        // `loss` equals `loss_cls`: both must stay visible.
        let losses = [line("loss", 2.0), line("loss_cls", 2.0)];
        let metrics = [Series { name: "bbox_mAP".into(), points: vec![(1.0, 0.2), (2.0, 0.4)] }];
        plot_curves(&path, &losses, &metrics).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (1600, 560));
        // Tick labels: dark text left of the plot (y axis) and below it (x axis) in the left panel.
        assert!(dark_pixels(&img, 0..80, 60..480) > 100, "no y tick labels");
        assert!(dark_pixels(&img, 100..780, 500..548) > 100, "no x tick labels");
        // A grid: light grey pixels inside the plotting area.
        let grey = img.pixels().filter(|p| p.0 == [215, 215, 215] || p.0 == [240, 240, 240]).count();
        assert!(grey > 1000, "no grid ({grey} grey pixels)");
        // Both equal loss curves show: the second series' colour and the first's black edges.
        let orange = img.pixels().filter(|p| p.0 == [230, 159, 0]).count();
        assert!(orange > 200, "loss_cls hidden ({orange} pixels)");
        assert!(dark_pixels(&img, 100..780, 60..480) > 500, "loss hidden");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_labels() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(1200.0), "1200");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(2.5e-5), "2.5e-5");
    }
}
