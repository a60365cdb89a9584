//! The loss and metric curves PNG of a run (`work_dir/curves.png`).
//!
//! Drawn with plotters' bitmap backend. plotters needs a system font or a TTF file to draw text,
//! which a self-contained binary cannot count on, so the few labels (panel titles, axis ranges,
//! legend) are drawn with a small built-in 3x5 pixel font instead.

use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

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
    let (width, height) = (if metrics.is_empty() { 700 } else { 1400 }, 500u32);
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        if metrics.is_empty() {
            panel(&root, "loss / iteration", losses)?;
        } else {
            let (left, right) = root.split_horizontally(700);
            panel(&left, "loss / iteration", losses)?;
            panel(&right, "metrics / epoch", metrics)?;
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

/// One panel: a frame, the curves, the axis ranges and a legend.
fn panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    title: &str,
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
        .margin_top(40)
        .margin_bottom(30)
        .margin_left(70)
        .margin_right(20)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    area.draw(&Rectangle::new(
        [(xr.start - area_x(area), yr.start - area_y(area)), (xr.end - area_x(area), yr.end - area_y(area))],
        BLACK,
    ))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite());
        chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
    }
    let (ox, oy) = (area_x(area), area_y(area));
    text(area, (xr.start - ox, 12), title, &BLACK, 2)?;
    text(area, (4, yr.start - oy), &short(y1), &BLACK, 2)?;
    text(area, (4, yr.end - oy - 10), &short(y0), &BLACK, 2)?;
    text(area, (xr.start - ox, yr.end - oy + 6), &short(x0), &BLACK, 2)?;
    let right = short(x1);
    text(area, (xr.end - ox - 8 * right.len() as i32, yr.end - oy + 6), &right, &BLACK, 2)?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let y = yr.start - oy + 8 + 14 * i as i32;
        let x = xr.end - ox - 8 * (s.name.len() as i32 + 3);
        area.draw(&Rectangle::new([(x, y + 3), (x + 12, y + 6)], color.filled()))?;
        text(area, (x + 18, y), &s.name, &BLACK, 2)?;
    }
    Ok(())
}

fn area_x(area: &DrawingArea<BitMapBackend, Shift>) -> i32 {
    area.get_base_pixel().0
}

fn area_y(area: &DrawingArea<BitMapBackend, Shift>) -> i32 {
    area.get_base_pixel().1
}

/// A number in at most about 8 characters.
fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.fract() == 0.0 && v.abs() < 1e7 {
        format!("{v:.0}")
    } else if v.abs() >= 1e5 || v.abs() < 1e-3 {
        format!("{v:.2e}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// Draws `s` with the built-in font, each font pixel a `scale` x `scale` square.
fn text(
    area: &DrawingArea<BitMapBackend, Shift>,
    (x, y): (i32, i32),
    s: &str,
    color: &RGBColor,
    scale: i32,
) -> Result<(), Box<dyn std::error::Error>> {
    for (i, c) in s.chars().enumerate() {
        let rows = glyph(c);
        for (r, row) in rows.iter().enumerate() {
            for col in 0..3 {
                if row & (0b100 >> col) != 0 {
                    let px = x + (i as i32 * 4 + col) * scale;
                    let py = y + r as i32 * scale;
                    area.draw(&Rectangle::new([(px, py), (px + scale - 1, py + scale - 1)], color.filled()))?;
                }
            }
        }
    }
    Ok(())
}

/// A 3x5 glyph as five rows of three bits (letters drawn as capitals; unknown characters blank).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_lowercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'a' => [2, 5, 7, 5, 5],
        'b' => [6, 5, 6, 5, 6],
        'c' => [3, 4, 4, 4, 3],
        'd' => [6, 5, 5, 5, 6],
        'e' => [7, 4, 6, 4, 7],
        'f' => [7, 4, 6, 4, 4],
        'g' => [3, 4, 5, 5, 3],
        'h' => [5, 5, 7, 5, 5],
        'i' => [7, 2, 2, 2, 7],
        'j' => [1, 1, 1, 5, 2],
        'k' => [5, 5, 6, 5, 5],
        'l' => [4, 4, 4, 4, 7],
        'm' => [5, 7, 7, 5, 5],
        'n' => [6, 5, 5, 5, 5],
        'o' => [2, 5, 5, 5, 2],
        'p' => [6, 5, 6, 4, 4],
        'q' => [2, 5, 5, 6, 3],
        'r' => [6, 5, 6, 5, 5],
        's' => [3, 4, 2, 1, 6],
        't' => [7, 2, 2, 2, 2],
        'u' => [5, 5, 5, 5, 7],
        'v' => [5, 5, 5, 5, 2],
        'w' => [5, 5, 7, 7, 5],
        'x' => [5, 5, 2, 5, 5],
        'y' => [5, 5, 2, 2, 2],
        'z' => [7, 1, 2, 4, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        '_' => [0, 0, 0, 0, 7],
        ':' => [0, 2, 0, 2, 0],
        '/' => [1, 1, 2, 4, 4],
        '@' => [2, 5, 7, 4, 3],
        _ => [0; 5],
    }
}
