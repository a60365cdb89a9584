//! The charts nextdet writes: the loss and metric curves of a run (`work_dir/curves.png`), and
//! horizontal bar charts (the roadmap's accuracy per step, as the ConvNeXt paper's Figure 2).
//!
//! Drawn with plotters' bitmap backend. A self-contained binary cannot count on system fonts, so
//! the labels are drawn with DejaVu Sans (reduced to ASCII, 36 KB, `engine/assets/`) embedded in
//! the binary and rasterised by plotters' `ab_glyph` feature.

use plotters::chart::MeshStyle;
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
    let width = if metrics.is_empty() { 800 } else { 1600 };
    render_png(path, "the curves", (width, 560), |root| {
        if metrics.is_empty() {
            panel(root, "Losses", "iteration", losses)?;
        } else {
            let (left, right) = root.split_horizontally(800);
            panel(&left, "Losses", "iteration", losses)?;
            panel(&right, "Validation metrics", "epoch", metrics)?;
        }
        Ok(())
    })
}

/// The drawing area a chart draws on.
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// A chart's drawing error.
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws with `draw` on a white canvas of `size` pixels with the embedded font and writes it as
/// a PNG at `path`, through a temporary file renamed into place; errors name the file and
/// `what` was drawn.
fn render_png(path: &Path, what: &str, size: (u32, u32), draw: impl FnOnce(&Area) -> DrawResult) -> Result<(), String> {
    let tmp = PathBuf::from(format!("{}.tmp.png", path.display()));
    write_png(&tmp, size, draw).map_err(|e| format!("{}: cannot draw {what}: {e}", path.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: cannot rename the temporary file: {e}", path.display()))
}

/// The canvas, `draw` and the PNG file of [`render_png`] (the bitmap backend writes only the
/// formats of its own image crate version; ours writes the file).
fn write_png(path: &Path, (width, height): (u32, u32), draw: impl FnOnce(&Area) -> DrawResult) -> DrawResult {
    font()?;
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        draw(&root)?;
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

/// The colour of bar group `g` (black is left to the text).
fn group_color(g: usize) -> RGBColor {
    COLORS[(g + 1) % COLORS.len()]
}

/// The look every chart's axes share: tick labels and axis description in the embedded font,
/// a light grid with one minor line between major ones.
fn grid_style<'m, 'a, 'b, X: Ranged, Y: Ranged, DB: DrawingBackend>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB> {
    mesh.label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .max_light_lines(1)
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(240, 240, 240))
}

/// The style of series `i`: its colour, and a width that narrows with the index so that a curve
/// drawn over an equal one (`loss` and a single `loss_cls`) leaves the first one's edges showing.
fn style(i: usize, count: usize) -> ShapeStyle {
    let width = if count > 1 && i == 0 { 5 } else { 2 };
    COLORS[i % COLORS.len()].stroke_width(width)
}

/// One panel: a title, axes with tick labels and a grid, the curves and a legend.
fn panel(area: &Area, title: &str, x_desc: &str, series: &[Series]) -> DrawResult {
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
    grid_style(
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v)),
    )
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

/// One bar of [`plot_bars`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bar {
    /// The label left of the bar.
    pub label: String,
    /// The bar's length.
    pub value: f64,
    /// Text drawn after the bar's end (e.g. its value and cost).
    pub note: String,
    /// Index into the chart's groups: the bar's colour and legend entry.
    pub group: usize,
}

/// Draws `bars` as horizontal bars, the first at the top (the ConvNeXt paper's Figure 2
/// layout), labelled on the left, each with its note after its end, coloured by group with a
/// legend of `groups` on the right, under `title` with `caption` below the axis, into a PNG at
/// `path` (written to a temporary file and renamed). The axis starts a little below the
/// shortest bar, so that close values stay apart. Errors name the file.
pub fn plot_bars(path: &Path, title: &str, caption: &str, groups: &[&str], bars: &[Bar]) -> Result<(), String> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let legend_width = if groups.is_empty() { 0 } else { 200 };
    let (width, height) = (1000 + legend_width, 120 + 34 * bars.len().max(1) as u32);
    let values = bars.iter().map(|b| b.value).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    let span = (hi - lo).max(1.0);
    // room left of the shortest bar, and right of the longest for its note
    let x0 = (lo - 0.5 * span).floor();
    let x0 = if lo >= 0.0 { x0.max(0.0) } else { x0 };
    let x1 = hi + 0.35 * (hi - x0).max(1e-9);
    let n = bars.len().max(1) as f64;
    // bar i (from the top) spans rows n - i - 0.85 .. n - i - 0.15 of the y axis
    let centre = |i: usize| n - i as f64 - 0.5;
    render_png(path, "the chart", (width, height), |root| {
        let (plot, legend) = root.split_horizontally(width - legend_width);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FONT, 22))
            .margin(14)
            .x_label_area_size(55)
            .y_label_area_size(190)
            .build_cartesian_2d(x0..x1, 0.0..n)?;
        grid_style(
            chart
                .configure_mesh()
                .x_desc(caption)
                .x_labels(8)
                .x_label_formatter(&|v| short(*v))
                .y_labels(0)
                .disable_y_mesh(),
        )
        .draw()?;
        let shown = || bars.iter().enumerate().filter(|(_, b)| b.value.is_finite());
        chart.draw_series(shown().map(|(i, b)| {
            Rectangle::new([(x0, centre(i) + 0.35), (b.value, centre(i) - 0.35)], group_color(b.group).filled())
        }))?;
        let note_style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        chart.draw_series(
            shown().map(|(i, b)| Text::new(format!(" {}", b.note), (b.value, centre(i)), note_style.clone())),
        )?;
        // the labels, right-aligned left of the axis, each at its bar's centre
        let label_style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, b) in bars.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(x0, centre(i)));
            root.draw(&Text::new(b.label.as_str(), (x - 10, y), label_style.clone()))?;
        }
        let legend_style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (g, name) in groups.iter().enumerate() {
            let y = 60 + 28 * g as i32;
            legend.draw(&Rectangle::new([(4, y - 8), (24, y + 8)], group_color(g).filled()))?;
            legend.draw(&Text::new(*name, (32, y), legend_style.clone()))?;
        }
        Ok(())
    })
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
    fn bars_run_top_down_with_labels_notes_and_group_colours() {
        let dir = std::env::temp_dir().join(format!("nextdet_bars_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bars.png");
        let bar = |label: &str, value: f64, group: usize| Bar {
            label: label.into(),
            value,
            note: format!("{value}  (4.1G)"),
            group,
        };
        // the first bar (top) is the longest; two groups
        let bars = [bar("first", 90.0, 0), bar("second", 60.0, 1), bar("third", 75.0, 1)];
        plot_bars(&path, "Roadmap", "top-1 (%)", &["a", "b"], &bars).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        assert_eq!((w, h), (1200, 120 + 34 * 3));
        // per colour: its longest bar (the rows with the most pixels of the colour: a bar's, not
        // the legend's), where it ends, its middle row, and how many pixels have the colour
        let longest_row = |c: [u8; 3]| {
            let mut rows = vec![(0u32, 0u32); h as usize];
            // the plot's part of the image, left of the legend
            for (x, y, p) in img.enumerate_pixels().filter(|(x, _, _)| *x < 1000) {
                if p.0 == c {
                    rows[y as usize].0 += 1;
                    rows[y as usize].1 = rows[y as usize].1.max(x);
                }
            }
            let most = rows.iter().map(|r| r.0).max().unwrap();
            let longest: Vec<usize> = (0..rows.len()).filter(|&y| rows[y].0 == most).collect();
            let middle = (longest[0] + longest[longest.len() - 1]) / 2;
            (rows[middle].1, middle, rows.iter().map(|r| r.0).sum::<u32>())
        };
        let band_of = |y: usize| y as u32 - 12..y as u32 + 12;
        let (a_end, a_y, a_n) = longest_row([230, 159, 0]);
        let (b_end, b_y, b_n) = longest_row([86, 180, 233]);
        assert!(a_n > 1000 && b_n > 1000, "both groups drawn ({a_n}, {b_n} pixels)");
        assert!(a_y < b_y, "the first bar is above the others");
        assert!(a_end > b_end, "the longer bar reaches further ({a_end} vs {b_end})");
        // labels left of the bars, notes right of them
        assert!(dark_pixels(&img, 0..200, band_of(a_y)) > 30, "no label left of the first bar");
        assert!(dark_pixels(&img, a_end + 1..1000, band_of(a_y)) > 20, "no note after the first bar");
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
